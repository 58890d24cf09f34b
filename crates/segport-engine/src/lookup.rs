//! One profile read by its key: the merged profile exactly as an export of it would write it,
//! the datasets its fragments come from, when it last changed, and its events.
//!
//! The caller hands in the files of the key's partition with the key range of that one key, so
//! each file is read only where its row file (or its page statistics and key bloom filter)
//! places the key: a binary search per file, never a scan.

use serde_json::{json, Map, Value};

use crate::merge::{self, RowRef};
use crate::project;
use crate::run::{projections, Projections};
use crate::source::{included, open_all, OpenFile};
use crate::{EngineError, ExportPlan, PartitionInput};
use segport_store::RecordKind;

/// A profile as a look-up answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The merged profile, projected to the plan's fields.
    pub entity: Value,
    /// The datasets its fragments (or, without fragments, its events) come from, sorted.
    pub sources: Vec<String>,
    /// The latest ingest time of its fragments (of its events, without fragments).
    pub last_modified_ms: i64,
}

/// One event of a profile, its latest version.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its `_id`.
    pub id: String,
    /// Its `timestamp` (ms), when it has one.
    pub timestamp_ms: Option<i64>,
    /// When it was ingested.
    pub ingest_ms: i64,
    /// Its fields, with its `identityMap`.
    pub entity: Value,
}

/// The profile of `key` in `input` (whose key range must hold only that key) under the plan's
/// merge policy and fields, or `None` when it has neither fragments nor events. With
/// `with_events`, its events too (every version's latest, ordered by timestamp then `_id`).
pub fn look_up(
    plan: &ExportPlan,
    input: &PartitionInput,
    key: &str,
    with_events: bool,
) -> Result<Option<(Profile, Vec<Event>)>, EngineError> {
    let projections = projections(plan);
    let (mut profile_rows, profile_sources) =
        rows_of(&projections, plan, input, RecordKind::Profile, key)?;
    let (event_rows, event_sources) = rows_of(&projections, plan, input, RecordKind::Event, key)?;
    if profile_rows.is_empty() && event_rows.is_empty() {
        return Ok(None);
    }
    // Weakest first, so that the strongest fragment is written last (as an export merges).
    match plan.precedence {
        crate::Precedence::TimestampOrdered => profile_rows.sort_by_key(RowRef::recency),
        crate::Precedence::DatasetOrder(_) => {
            profile_rows.sort_by_key(|r| (std::cmp::Reverse(r.loaded.rank), r.recency()))
        }
    }
    let (from, sources) = if profile_rows.is_empty() {
        (&event_rows, event_sources)
    } else {
        (&profile_rows, profile_sources)
    };
    let last_modified_ms = from.iter().map(RowRef::ingest_ms).max().unwrap_or(0);
    let identities = merge::identities(from);
    let mut row: Map<String, Value> = merge::attributes(&profile_rows)?;
    row.insert("identityMap".into(), merge::identity_map(&identities));
    row.insert("identities".into(), merge::legacy_identities(&identities));
    let memberships = merge::memberships(&profile_rows);
    if !memberships.is_empty() {
        row.insert("segmentMembership".into(), merge::membership_map(&memberships));
    }
    let entity = project::project(&Value::Object(row), &projections.profile.selection)
        .unwrap_or_else(|| json!({}));
    let events = if with_events { events(&event_rows)? } else { Vec::new() };
    Ok(Some((Profile { entity, sources, last_modified_ms }, events)))
}

/// The rows of `key` in the files of `kind`, and the datasets of the files that hold some.
fn rows_of(
    projections: &Projections,
    plan: &ExportPlan,
    input: &PartitionInput,
    kind: RecordKind,
    key: &str,
) -> Result<(Vec<RowRef>, Vec<String>), EngineError> {
    let files = match kind {
        RecordKind::Profile => &input.profiles,
        RecordKind::Event => &input.events,
    };
    let read = match kind {
        RecordKind::Profile => &projections.profile_read,
        RecordKind::Event => &projections.event_read,
    };
    let mut rows = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let never = std::sync::atomic::AtomicBool::new(false);
    for (file, rank) in included(files, kind, plan) {
        // The key's rows are picked: gathered from the row file, where there is one, without
        // parsing the Parquet footer or decompressing a page.
        let opened = OpenFile::open(file, true, &input.keys)?;
        let picked: Vec<usize> = opened.bounds.clone().map(Iterator::collect).unwrap_or_default();
        if picked.is_empty() {
            continue;
        }
        let open = [(opened, rank)];
        for mut cursor in open_all(&open, vec![Some(picked)], read)? {
            let before = rows.len();
            cursor.take(key, &mut rows, &never)?;
            if rows.len() > before && !sources.contains(&file.dataset) {
                sources.push(file.dataset.clone());
            }
        }
    }
    sources.sort();
    Ok((rows, sources))
}

/// The latest version of each event, as JSON with its identities.
fn events(rows: &[RowRef]) -> Result<Vec<Event>, EngineError> {
    merge::latest_events(rows, None, None)
        .into_iter()
        .map(|r| {
            let mut entity = Value::Object(r.attributes()?);
            entity["identityMap"] =
                merge::identity_map(&merge::identities(std::slice::from_ref(r)));
            Ok(Event {
                id: r.event_id().unwrap_or_default().to_owned(),
                timestamp_ms: r.event_time(),
                ingest_ms: r.ingest_ms(),
                entity,
            })
        })
        .collect()
}
