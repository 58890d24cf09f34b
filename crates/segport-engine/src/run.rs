//! The evaluate stage, and the partition run that drives the stages: a k-way merge by profile
//! key over the partition's cursors ([`crate::source`]), then filters, merge and projection,
//! each exported row handed to its batch's sink ([`crate::sink`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use segport_store::RecordKind;
use serde_json::{json, Map, Value};

use crate::columnar::ColumnarRow;
use crate::columns::ReadColumns;
use crate::error::EngineError;
use crate::merge::{self, RowRef};
use crate::plan::{ExportPlan, Precedence};
use crate::prefilter;
use crate::project::{self, Projection};
use crate::sink::Sink;
use crate::source::{included, open_all, Cursor, OpenFile, PartitionInput, SourceFile};

#[cfg(test)]
mod builders_agree;
#[cfg(test)]
mod key_ranges;

/// What one partition produced, per output batch.
#[derive(Debug, Default)]
pub struct PartitionOutput {
    /// Encoded Parquet and its row count, per batch; `None` where the batch got no rows here.
    pub files: Vec<Option<(Bytes, u64)>>,
    /// Per batch: rows by identity namespace.
    pub by_namespace: Vec<BTreeMap<String, u64>>,
}

/// Counters a running export reports.
#[derive(Debug, Default)]
pub struct Progress {
    pub partitions_done: AtomicU64,
    pub profiles_scanned: AtomicU64,
    pub profiles_exported: AtomicU64,
}

/// The projections of a plan: profile rows, and the event rows inside them.
pub struct Projections {
    pub profile: Projection,
    pub events: Option<Projection>,
    pub schema: SchemaRef,
    pub(crate) profile_read: ReadColumns,
    pub(crate) event_read: ReadColumns,
    /// Whether profiles with fragments may take the columnar path: no events, and map
    /// selections that only pick keys (so the map's value type is not cut).
    columnar: bool,
}

/// Resolves the plan's fields against the store's schemas.
pub fn projections(plan: &ExportPlan) -> Projections {
    let events = plan
        .events
        .as_ref()
        .map(|e| project::resolve(&project::event_tree(&plan.event_schema), &e.fields, &[]));
    let events = events.map(|mut p| {
        if p.selection.children.is_empty() && !p.selection.all && p.unknown.is_empty() {
            // No event fields named: every field of the event.
            let tree = project::event_tree(&plan.event_schema);
            p.selection.all = true;
            p.output = tree;
        }
        p
    });
    let mut profile = project::resolve(
        &project::profile_tree(&plan.profile_schema),
        &plan.fields,
        &default_profile_fields(&plan.profile_schema),
    );
    // Events whose fields all match nothing add no column.
    if let Some(e) = events.as_ref().filter(|e| !e.output.is_empty()) {
        profile.output.insert(
            "timeSeriesEvents".into(),
            project::OType::List(Box::new(project::OType::Struct(e.output.clone()))),
        );
        profile.selection.children.entry("timeSeriesEvents".into()).or_default().all = true;
    }
    // Rows need at least one column: when no field matched, they carry their identities.
    if profile.output.is_empty() {
        let tree = project::profile_tree(&plan.profile_schema);
        if let Some(t) = tree.get("identityMap") {
            profile.output.insert("identityMap".into(), t.clone());
            profile.selection.children.entry("identityMap".into()).or_default().all = true;
        }
    }
    let schema = project::output_schema(&profile.output);
    let profile_read =
        ReadColumns::new(RecordKind::Profile, &plan.profile_schema, Some(&profile.selection), true);
    let event_read = ReadColumns::new(
        RecordKind::Event,
        &plan.event_schema,
        events.as_ref().map(|e| &e.selection),
        // Event identities go out in the events' own `identityMap`, and make the identities
        // of a profile without fragments.
        plan.empty_profiles
            || events.as_ref().is_none_or(|e| {
                e.selection.all || e.selection.children.contains_key("identityMap")
            }),
    );
    let columnar = {
        let keys_only = |s: &project::Selection| s.all || s.children.values().all(|c| c.all);
        let sel = &profile.selection.children;
        let event_maps_ok = events.as_ref().is_none_or(|e| {
            e.selection.all || e.selection.children.get("identityMap").is_none_or(keys_only)
        });
        event_maps_ok
            && sel.get("identityMap").is_none_or(keys_only)
            && sel
                .get("segmentMembership")
                .is_none_or(|s| s.all || s.children.values().all(keys_only))
    };
    Projections { profile, events, schema, profile_read, event_read, columnar }
}

fn default_profile_fields(schema: &segport_store::schema::UnionSchema) -> Vec<&str> {
    let mut fields: Vec<&str> = schema.fields.keys().map(String::as_str).collect();
    fields.push("identityMap");
    fields.push("segmentMembership");
    fields
}

/// Evaluates one partition.
pub fn run_partition<'a>(
    plan: &ExportPlan,
    projections: &Projections,
    input: &'a PartitionInput,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<PartitionOutput, EngineError> {
    let open = |files: Vec<(&'a SourceFile, usize)>| {
        let page_index = plan.segments.is_some();
        files
            .into_iter()
            .map(|(f, rank)| Ok((OpenFile::open(f, page_index, &input.keys)?, rank)))
            .collect::<Result<Vec<_>, EngineError>>()
    };
    let profile_files = open(included(&input.profiles, RecordKind::Profile, plan))?;
    let event_files = if plan.needs_events() {
        open(included(&input.events, RecordKind::Event, plan))?
    } else {
        Vec::new()
    };
    let (profile_rows, event_rows, matches) = match &plan.segments {
        // Only profiles with a matching membership are exported: find them and their rows first.
        Some(entries) => {
            let profiles: Vec<&OpenFile> = profile_files.iter().map(|(f, _)| f).collect();
            let events: Vec<&OpenFile> = event_files.iter().map(|(f, _)| f).collect();
            let found = prefilter::by_segment(entries, &profiles, &events)?;
            (found.profile_rows, found.event_rows, Some(found.matches))
        }
        None => (vec![None; profile_files.len()], vec![None; event_files.len()], None),
    };
    if cancel.load(Ordering::Relaxed) {
        return Err(EngineError::Cancelled);
    }
    let mut profiles = open_all(&profile_files, profile_rows, &projections.profile_read)?;
    let mut events = open_all(&event_files, event_rows, &projections.event_read)?;
    let mut sinks: Vec<Sink> = (0..plan.batch_count())
        .map(|_| {
            Sink::new(
                projections.schema.clone(),
                projections.profile.selection.clone(),
                projections.events.as_ref().map(|e| e.selection.clone()),
            )
        })
        .collect();

    let mut profile_rows = Vec::new();
    let mut event_rows = Vec::new();
    let mut scanned = 0u64;
    let mut next_match = 0;
    // The key being merged, copied out of the cursors into one reused buffer.
    let mut key = String::new();
    while next_key(&profiles, &events, &mut key) {
        let key = key.as_str();
        profile_rows.clear();
        event_rows.clear();
        for c in &mut profiles {
            c.take(key, &mut profile_rows, cancel)?;
        }
        for c in &mut events {
            c.take(key, &mut event_rows, cancel)?;
        }
        scanned += 1;
        if scanned.is_multiple_of(1024) {
            progress.profiles_scanned.fetch_add(1024, Ordering::Relaxed);
            if cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
        }
        let matched = matches.as_ref().map(|m| m.seek(&mut next_match, key));
        evaluate(plan, projections, matched, &mut profile_rows, &event_rows, &mut sinks, progress)?;
    }
    progress.profiles_scanned.fetch_add(scanned % 1024, Ordering::Relaxed);
    let mut output = PartitionOutput::default();
    for sink in sinks {
        let done = sink.finish()?;
        output.files.push(done.file);
        output.by_namespace.push(done.by_namespace);
    }
    progress.partitions_done.fetch_add(1, Ordering::Relaxed);
    Ok(output)
}

/// Copies the smallest key at the cursors into `key`; false when every cursor is done.
fn next_key(profiles: &[Cursor], events: &[Cursor], key: &mut String) -> bool {
    match profiles.iter().chain(events).filter_map(Cursor::key).min() {
        Some(next) => {
            next.clone_into(key);
            true
        }
        None => false,
    }
}

/// One profile: filters, then (only when it is exported) merge, projection and output.
fn evaluate(
    plan: &ExportPlan,
    projections: &Projections,
    // With a segment filter: the entries the profile matches.
    matched: Option<&[usize]>,
    profile_rows: &mut [RowRef],
    event_rows: &[RowRef],
    sinks: &mut [Sink],
    progress: &Progress,
) -> Result<(), EngineError> {
    if profile_rows.is_empty() && !plan.empty_profiles {
        return Ok(());
    }
    if profile_rows.is_empty() && event_rows.is_empty() {
        return Ok(());
    }
    let update_ms = if profile_rows.is_empty() {
        event_rows.iter().map(RowRef::ingest_ms).max()
    } else {
        profile_rows.iter().map(RowRef::ingest_ms).max()
    };
    if let (Some(from), Some(update)) = (plan.from_ingest_ms, update_ms) {
        if update <= from {
            return Ok(());
        }
    }
    // The first pass decided the segment entries each profile matches (docs/api.md rules, in
    // `prefilter`); without a segment filter every profile goes to the one batch.
    let targets: &[usize] = match matched {
        None => &[0],
        Some(m) if plan.per_segment => m,
        Some([]) => &[],
        Some(_) => &[0],
    };
    if targets.is_empty() {
        return Ok(());
    }
    // Weakest first, so that the strongest fragment is written last.
    match plan.precedence {
        Precedence::TimestampOrdered => profile_rows.sort_by_key(RowRef::recency),
        Precedence::DatasetOrder(_) => {
            profile_rows.sort_by_key(|r| (std::cmp::Reverse(r.loaded.rank), r.recency()))
        }
    }
    if projections.columnar && !profile_rows.is_empty() {
        let last = targets.len() - 1;
        let events = match &plan.events {
            Some(window) => merge::latest_events(event_rows, window.from_ms, window.to_ms)
                .into_iter()
                .map(|r| (r.loaded.clone(), r.row))
                .collect(),
            None => Vec::new(),
        };
        let mut fast = Some(ColumnarRow {
            events,
            fragments: profile_rows.iter().map(|r| (r.loaded.clone(), r.row)).collect(),
        });
        for (i, &t) in targets.iter().enumerate() {
            let sink = &mut sinks[t];
            let row = match (i == last, fast.as_ref()) {
                (true, _) => fast.take(),
                (false, Some(f)) => Some(f.clone()),
                (false, None) => None,
            };
            if let Some(row) = row {
                sink.push_columnar(row)?;
                progress.profiles_exported.fetch_add(1, Ordering::Relaxed);
            }
        }
        return Ok(());
    }

    let identities = if profile_rows.is_empty() {
        merge::identities(event_rows)
    } else {
        merge::identities(profile_rows)
    };
    let mut row: Map<String, Value> = merge::attributes(profile_rows)?;
    row.insert("identityMap".into(), merge::identity_map(&identities));
    row.insert("identities".into(), merge::legacy_identities(&identities));
    let memberships = merge::memberships(profile_rows);
    if !memberships.is_empty() {
        row.insert("segmentMembership".into(), merge::membership_map(&memberships));
    }
    if let (Some(window), Some(event_projection)) = (&plan.events, &projections.events) {
        let events = merge::events(event_rows, window.from_ms, window.to_ms)?;
        let projected: Vec<Value> = events
            .iter()
            .map(|e| project::project(e, &event_projection.selection).unwrap_or_else(|| json!({})))
            .collect();
        row.insert("timeSeriesEvents".into(), Value::Array(projected));
    }
    let out = project::project(&Value::Object(row), &projections.profile.selection)
        .unwrap_or_else(|| json!({}));
    for &t in targets {
        let sink = &mut sinks[t];
        merge::count_namespaces(&identities, &mut sink.by_namespace);
        sink.push(out.clone())?;
        progress.profiles_exported.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
