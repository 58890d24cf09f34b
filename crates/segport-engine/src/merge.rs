//! One profile's rows merged into one XDM value (docs/api.md): field by field under the merge
//! policy, identities united, memberships resolved per segment, events windowed and deduplicated.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt64Type};
use segport_store::columns::{IDENTITIES, INGEST_MS, KEY, ORD, SEGMENTS, SEQ};
use serde_json::{json, Map, Value};

use crate::error::EngineError;

/// A batch of fragments or events read from one store file, aligned to today's schema.
pub(crate) struct ReadBatch {
    pub batch: RecordBatch,
    /// The attribute columns only, for turning a row into JSON.
    attributes: RecordBatch,
    pub keys: StringArray,
    /// Merge precedence of the file's dataset (0 is highest).
    pub rank: usize,
    /// The attributes of every row as JSON, made on first use: one conversion per batch costs
    /// far less than one per row.
    json: OnceLock<Result<Vec<Map<String, Value>>, String>>,
    ingest: Int64Array,
    seq: Int64Array,
    ord: UInt64Array,
    identities: Option<Identities>,
    memberships: Option<Memberships>,
    /// Events' `_id` and `timestamp` columns, when the batch has them: looked up once per
    /// batch, not once per row.
    event_ids: Option<StringArray>,
    event_times: Option<arrow::array::TimestampMillisecondArray>,
}

/// A dictionary-encoded string column.
struct Dict {
    keys: Int32Array,
    values: StringArray,
}

impl Dict {
    fn of(column: Option<&arrow::array::ArrayRef>) -> Option<Self> {
        let d = column?.as_dictionary_opt::<Int32Type>()?;
        Some(Self { keys: d.keys().clone(), values: d.values().as_string_opt::<i32>()?.clone() })
    }

    fn get(&self, i: usize) -> Option<&str> {
        if self.keys.is_null(i) {
            return None;
        }
        let key = usize::try_from(self.keys.value(i)).ok()?;
        (key < self.values.len()).then(|| self.values.value(key))
    }
}

/// The identities column split once per batch, so that rows read it without slicing.
struct Identities {
    offsets: OffsetBuffer<i32>,
    namespace: Dict,
    id: StringArray,
    primary: BooleanArray,
    state: Option<Dict>,
}

/// The memberships column, split the same way.
struct Memberships {
    offsets: OffsetBuffer<i32>,
    ns: Dict,
    segment: Dict,
    status: Dict,
    lqt: Option<TimestampMillisecondArray>,
    version: Option<StringArray>,
    until: Option<TimestampMillisecondArray>,
}

fn range(offsets: &OffsetBuffer<i32>, row: usize) -> std::ops::Range<usize> {
    let (a, b) = (offsets[row], offsets[row + 1]);
    usize::try_from(a).unwrap_or(0)..usize::try_from(b).unwrap_or(0)
}

fn split_identities(batch: &RecordBatch) -> Option<Identities> {
    let list = batch.column_by_name(IDENTITIES)?.as_list_opt::<i32>()?;
    let items = list.values().as_struct_opt()?;
    Some(Identities {
        offsets: list.offsets().clone(),
        namespace: Dict::of(items.column_by_name("namespace"))?,
        id: items.column_by_name("id")?.as_string_opt::<i32>()?.clone(),
        primary: items.column_by_name("primary")?.as_boolean_opt()?.clone(),
        state: Dict::of(items.column_by_name("authenticatedState")),
    })
}

fn split_memberships(batch: &RecordBatch) -> Option<Memberships> {
    let list = batch.column_by_name(SEGMENTS)?.as_list_opt::<i32>()?;
    let items = list.values().as_struct_opt()?;
    let time = |name: &str| {
        items
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
            .cloned()
    };
    Some(Memberships {
        offsets: list.offsets().clone(),
        ns: Dict::of(items.column_by_name("ns"))?,
        segment: Dict::of(items.column_by_name("segmentId"))?,
        status: Dict::of(items.column_by_name("status"))?,
        lqt: time("lastQualificationTime"),
        version: items.column_by_name("version").and_then(|c| c.as_string_opt::<i32>()).cloned(),
        until: time("validUntil"),
    })
}

impl ReadBatch {
    pub fn new(batch: RecordBatch, rank: usize) -> Result<Self, EngineError> {
        let keys = batch
            .column_by_name(KEY)
            .map(|c| c.as_string::<i32>().clone())
            .ok_or_else(|| EngineError::store("a store file without keys"))?;
        let schema = batch.schema();
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !schema.field(*i).name().starts_with("__"))
            .collect();
        let attributes = batch
            .project(&keep)
            .map_err(|e| EngineError::store(format!("projecting attributes: {e}")))?;
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .cloned()
                .ok_or_else(|| EngineError::store(format!("a store batch without {name}")))
        };
        let ord = batch
            .column_by_name(ORD)
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .cloned()
            .ok_or_else(|| EngineError::store("a store batch without ordinals"))?;
        Ok(Self {
            ingest: int(INGEST_MS)?,
            seq: int(SEQ)?,
            ord,
            identities: split_identities(&batch),
            memberships: split_memberships(&batch),
            event_ids: batch.column_by_name("_id").and_then(|c| c.as_string_opt::<i32>()).cloned(),
            event_times: batch
                .column_by_name("timestamp")
                .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
                .cloned(),
            batch,
            attributes,
            keys,
            rank,
            json: OnceLock::new(),
        })
    }

    fn json_rows(&self) -> Result<&[Map<String, Value>], EngineError> {
        let rows = self.json.get_or_init(|| {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            writer.write(&self.attributes).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
            serde_json::from_slice(&writer.into_inner()).map_err(|e| e.to_string())
        });
        rows.as_deref().map_err(|e| EngineError::store(format!("rows to JSON: {e}")))
    }
}

/// One row of one loaded batch.
#[derive(Clone)]
pub(crate) struct RowRef {
    pub loaded: Arc<ReadBatch>,
    pub row: usize,
}

impl RowRef {
    pub fn ingest_ms(&self) -> i64 {
        self.loaded.ingest.value(self.row)
    }

    /// An event's `_id`, when the row is an event that has one.
    pub fn event_id(&self) -> Option<&str> {
        let ids = self.loaded.event_ids.as_ref().filter(|ids| !ids.is_null(self.row))?;
        Some(ids.value(self.row))
    }

    /// An event's `timestamp` (ms), when the row is an event that has one.
    pub fn event_time(&self) -> Option<i64> {
        let times = self.loaded.event_times.as_ref().filter(|t| !t.is_null(self.row))?;
        Some(times.value(self.row))
    }

    /// The total order of "most recent": ingest time, commit, position in the batch.
    pub fn recency(&self) -> (i64, i64, u64) {
        (self.ingest_ms(), self.loaded.seq.value(self.row), self.loaded.ord.value(self.row))
    }

    /// The row's attributes as JSON (null members left out).
    pub fn attributes(&self) -> Result<Map<String, Value>, EngineError> {
        Ok(self.loaded.json_rows()?.get(self.row).cloned().unwrap_or_default())
    }
}

/// One identity of the merged profile; its strings borrow from the loaded batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
    pub primary: bool,
    pub authenticated_state: Option<&'a str>,
}

/// The union of the rows' identities, in first-seen order.
pub(crate) fn identities(rows: &[RowRef]) -> Vec<Identity<'_>> {
    let mut out = Vec::new();
    resolve_identities(rows.iter().map(|r| (r.loaded.as_ref(), r.row)), &mut out);
    out
}

/// The union of the identities of a profile's fragments (each a loaded batch and a row),
/// appended to `out` in first-seen order; an identity held by several fragments is primary
/// when any of them says so. Nothing is copied, as with [`resolve_memberships`].
pub(crate) fn resolve_identities<'a>(
    fragments: impl IntoIterator<Item = (&'a ReadBatch, usize)>,
    out: &mut Vec<Identity<'a>>,
) {
    let first = out.len();
    for (loaded, row) in fragments {
        let Some(view) = loaded.identities.as_ref() else { continue };
        for i in range(&view.offsets, row) {
            let (Some(namespace), false) = (view.namespace.get(i), view.id.is_null(i)) else {
                continue;
            };
            let id = view.id.value(i);
            let is_primary = view.primary.is_valid(i) && view.primary.value(i);
            match out[first..].iter_mut().find(|x| x.namespace == namespace && x.id == id) {
                Some(existing) => existing.primary |= is_primary,
                None => out.push(Identity {
                    namespace,
                    id,
                    primary: is_primary,
                    authenticated_state: view.state.as_ref().and_then(|s| s.get(i)),
                }),
            }
        }
    }
}

/// Counts a profile once under each distinct namespace of its `identities`.
pub(crate) fn count_namespaces(identities: &[Identity], counts: &mut BTreeMap<String, u64>) {
    for (k, i) in identities.iter().enumerate() {
        if identities[..k].iter().any(|j| j.namespace == i.namespace) {
            continue;
        }
        match counts.get_mut(i.namespace) {
            Some(count) => *count += 1,
            None => {
                counts.insert(i.namespace.to_owned(), 1);
            }
        }
    }
}

/// A resolved segment membership; its strings borrow from the loaded batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership<'a> {
    pub ns: &'a str,
    pub segment: &'a str,
    pub status: &'a str,
    pub last_qualification_ms: Option<i64>,
    pub version: Option<&'a str>,
    pub valid_until_ms: Option<i64>,
    recency: (i64, i64, u64),
}

/// The resolved memberships of a profile's fragments (each a loaded batch and a row) into
/// `out`, sorted by `(ns, segmentId)`: per `(ns, segmentId)`, the entry with the latest
/// qualification time; ties go to the most recent fragment. Nothing is copied: a profile
/// holds a handful of memberships and an export may write millions of profiles.
pub(crate) fn resolve_memberships<'a>(
    fragments: impl IntoIterator<Item = (&'a ReadBatch, usize)>,
    out: &mut Vec<Membership<'a>>,
) {
    out.clear();
    for (loaded, row) in fragments {
        let Some(view) = loaded.memberships.as_ref() else { continue };
        let recency = (loaded.ingest.value(row), loaded.seq.value(row), loaded.ord.value(row));
        for i in range(&view.offsets, row) {
            let (Some(ns), Some(segment), Some(status)) =
                (view.ns.get(i), view.segment.get(i), view.status.get(i))
            else {
                continue;
            };
            let time = |a: &Option<TimestampMillisecondArray>| {
                a.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i))
            };
            out.push(Membership {
                ns,
                segment,
                status,
                last_qualification_ms: time(&view.lqt),
                version: view.version.as_ref().filter(|v| v.is_valid(i)).map(|v| v.value(i)),
                valid_until_ms: time(&view.until),
                recency,
            });
        }
    }
    // Per key, the winner first; then the others of its key go.
    let order = |m: &Membership| (m.last_qualification_ms.unwrap_or(i64::MIN), m.recency);
    out.sort_unstable_by(|a, b| {
        (a.ns, a.segment).cmp(&(b.ns, b.segment)).then_with(|| order(b).cmp(&order(a)))
    });
    out.dedup_by(|later, first| (later.ns, later.segment) == (first.ns, first.segment));
}

/// The resolved memberships of `rows` ([`resolve_memberships`]).
pub(crate) fn memberships(rows: &[RowRef]) -> Vec<Membership<'_>> {
    let mut out = Vec::new();
    resolve_memberships(rows.iter().map(|r| (r.loaded.as_ref(), r.row)), &mut out);
    out
}

/// Writes `top` over `base`: every non-null leaf of `top` wins; objects merge member by member;
/// arrays are leaves.
fn overlay(base: &mut Map<String, Value>, top: Map<String, Value>) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (_, Value::Null) => {}
            (Some(Value::Object(b)), Value::Object(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The merged attributes: `rows` must be ordered from the weakest to the strongest fragment
/// (the caller sorts them by the merge policy).
pub(crate) fn attributes(rows: &[RowRef]) -> Result<Map<String, Value>, EngineError> {
    let mut merged = Map::new();
    for r in rows {
        overlay(&mut merged, r.attributes()?);
    }
    Ok(merged)
}

pub(crate) fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(Value::Null, |t| json!(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
}

pub(crate) fn identity_map(ids: &[Identity]) -> Value {
    let mut map: Map<String, Value> = Map::new();
    for i in ids {
        let mut entry = json!({"id": i.id, "primary": i.primary});
        if let Some(state) = i.authenticated_state {
            entry["authenticatedState"] = json!(state);
        }
        if let Value::Array(list) = map.entry(i.namespace).or_insert_with(|| json!([])) {
            list.push(entry);
        }
    }
    Value::Object(map)
}

pub(crate) fn legacy_identities(ids: &[Identity]) -> Value {
    Value::Array(
        ids.iter()
            .map(|i| {
                let mut entry =
                    json!({"id": i.id, "namespace": {"code": i.namespace}, "primary": i.primary});
                if let Some(state) = i.authenticated_state {
                    entry["authenticatedState"] = json!(state);
                }
                entry
            })
            .collect(),
    )
}

pub(crate) fn membership_map(m: &[Membership]) -> Value {
    let mut by_ns: Map<String, Value> = Map::new();
    for entry in m {
        let mut value = json!({"status": entry.status});
        if let Some(ms) = entry.last_qualification_ms {
            value["lastQualificationTime"] = rfc3339(ms);
        }
        if let Some(v) = entry.version {
            value["version"] = json!(v);
        }
        if let Some(ms) = entry.valid_until_ms {
            value["validUntil"] = rfc3339(ms);
        }
        if let Value::Object(segments) =
            by_ns.entry(entry.ns.to_owned()).or_insert_with(|| json!({}))
        {
            segments.insert(entry.segment.to_owned(), value);
        }
    }
    Value::Object(by_ns)
}

/// The profile's events: the latest version of each `_id` (a later event replaces an earlier
/// one, docs/api.md), kept when its ingest time is inside the window, ordered by `timestamp`
/// then `_id`.
pub(crate) fn latest_events(
    rows: &[RowRef],
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Vec<&RowRef> {
    // A profile has a handful of events: sorting them beats a hash map made per profile.
    let mut versions: Vec<(&str, (i64, i64, u64), &RowRef)> = rows
        .iter()
        .filter_map(|r| {
            let ids = r.loaded.event_ids.as_ref().filter(|ids| !ids.is_null(r.row))?;
            Some((ids.value(r.row), r.recency(), r))
        })
        .collect();
    // Each `_id`'s most recent version first (stable: of equally recent ones, the first seen).
    versions.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    versions.dedup_by(|later, first| later.0 == first.0);
    let mut out: Vec<(i64, &str, &RowRef)> = versions
        .into_iter()
        .filter(|(_, _, r)| {
            let ingest = r.ingest_ms();
            !(from_ms.is_some_and(|f| ingest <= f) || to_ms.is_some_and(|t| ingest >= t))
        })
        .map(|(id, _, r)| {
            let time = r
                .loaded
                .event_times
                .as_ref()
                .filter(|t| !t.is_null(r.row))
                .map_or(i64::MIN, |t| t.value(r.row));
            (time, id, r)
        })
        .collect();
    out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    out.into_iter().map(|(_, _, r)| r).collect()
}

/// [`latest_events`] as JSON with their identities.
pub(crate) fn events(
    rows: &[RowRef],
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<Vec<Value>, EngineError> {
    latest_events(rows, from_ms, to_ms)
        .into_iter()
        .map(|r| {
            let mut value = Value::Object(r.attributes()?);
            value["identityMap"] = identity_map(&identities(std::slice::from_ref(r)));
            Ok(value)
        })
        .collect()
}
