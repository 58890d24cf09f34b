//! One profile's rows merged into one XDM value (DESIGN §5): field by field under the merge
//! policy, identities united, memberships resolved per segment, events windowed and deduplicated.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt64Type};
use segport_store::columns::{IDENTITIES, INGEST_MS, KEY, ORD, SEGMENTS, SEQ};
use serde_json::{json, Map, Value};

use crate::run::EngineError;

/// A batch of fragments or events read from one store file, aligned to today's schema.
pub(crate) struct Loaded {
    pub batch: RecordBatch,
    /// The attribute columns only, for turning a row into JSON.
    attributes: RecordBatch,
    pub keys: StringArray,
    /// Merge precedence of the file's dataset (0 is highest).
    pub rank: usize,
    /// The attributes of every row as JSON, made on first use: one conversion per batch costs
    /// far less than one per row.
    json: OnceLock<Result<Vec<Map<String, Value>>, String>>,
}

impl Loaded {
    pub fn new(batch: RecordBatch, rank: usize) -> Result<Self, EngineError> {
        let keys = batch
            .column_by_name(KEY)
            .map(|c| c.as_string::<i32>().clone())
            .ok_or_else(|| EngineError::Store("a store file without keys".into()))?;
        let schema = batch.schema();
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !schema.field(*i).name().starts_with("__"))
            .collect();
        let attributes = batch
            .project(&keep)
            .map_err(|e| EngineError::Store(format!("projecting attributes: {e}")))?;
        Ok(Self { batch, attributes, keys, rank, json: OnceLock::new() })
    }

    fn json_rows(&self) -> Result<&[Map<String, Value>], EngineError> {
        let rows = self.json.get_or_init(|| {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            writer.write(&self.attributes).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
            serde_json::from_slice(&writer.into_inner()).map_err(|e| e.to_string())
        });
        rows.as_deref().map_err(|e| EngineError::Store(format!("rows to JSON: {e}")))
    }

    fn int(&self, name: &str, row: usize) -> i64 {
        self.batch.column_by_name(name).map_or(0, |c| c.as_primitive::<Int64Type>().value(row))
    }

    fn ord(&self, row: usize) -> u64 {
        self.batch.column_by_name(ORD).map_or(0, |c| c.as_primitive::<UInt64Type>().value(row))
    }

    fn list(&self, name: &str, row: usize) -> Option<StructArray> {
        let column = self.batch.column_by_name(name)?;
        let list = column.as_list::<i32>();
        Some(list.value(row).as_struct().clone())
    }
}

/// One row of one loaded batch.
#[derive(Clone)]
pub(crate) struct RowRef {
    pub loaded: Arc<Loaded>,
    pub row: usize,
}

impl RowRef {
    pub fn ingest_ms(&self) -> i64 {
        self.loaded.int(INGEST_MS, self.row)
    }

    /// The total order of "most recent": ingest time, commit, position in the batch.
    pub fn recency(&self) -> (i64, i64, u64) {
        (self.ingest_ms(), self.loaded.int(SEQ, self.row), self.loaded.ord(self.row))
    }

    /// The row's attributes as JSON (null members left out).
    pub fn attributes(&self) -> Result<Map<String, Value>, EngineError> {
        Ok(self.loaded.json_rows()?.get(self.row).cloned().unwrap_or_default())
    }
}

fn dict_value(array: &StructArray, name: &str, i: usize) -> Option<String> {
    let column = array.column_by_name(name)?;
    if column.is_null(i) {
        return None;
    }
    let dict = column.as_dictionary::<Int32Type>();
    let values = dict.values().as_string::<i32>();
    let key = dict.keys().value(i);
    Some(values.value(usize::try_from(key).ok()?).to_owned())
}

fn string_value(array: &StructArray, name: &str, i: usize) -> Option<String> {
    let column = array.column_by_name(name)?;
    (!column.is_null(i)).then(|| column.as_string::<i32>().value(i).to_owned())
}

fn time_value(array: &StructArray, name: &str, i: usize) -> Option<i64> {
    let column = array.column_by_name(name)?;
    (!column.is_null(i)).then(|| column.as_primitive::<TimestampMillisecondType>().value(i))
}

/// One identity of the merged profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub namespace: String,
    pub id: String,
    pub primary: bool,
    pub authenticated_state: Option<String>,
}

/// The union of the rows' identities, in first-seen order.
pub(crate) fn identities(rows: &[RowRef]) -> Vec<Identity> {
    let mut out: Vec<Identity> = Vec::new();
    for r in rows {
        let Some(list) = r.loaded.list(IDENTITIES, r.row) else { continue };
        let primary = list.column_by_name("primary").map(|c| c.as_boolean().clone());
        for i in 0..list.len() {
            let (Some(namespace), Some(id)) =
                (dict_value(&list, "namespace", i), string_value(&list, "id", i))
            else {
                continue;
            };
            let is_primary = primary.as_ref().is_some_and(|p| p.value(i));
            match out.iter_mut().find(|x| x.namespace == namespace && x.id == id) {
                Some(existing) => existing.primary |= is_primary,
                None => out.push(Identity {
                    namespace,
                    id,
                    primary: is_primary,
                    authenticated_state: dict_value(&list, "authenticatedState", i),
                }),
            }
        }
    }
    out
}

/// A resolved segment membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub status: String,
    pub last_qualification_ms: Option<i64>,
    pub version: Option<String>,
    pub valid_until_ms: Option<i64>,
    recency: (i64, i64, u64),
}

/// Per `(ns, segmentId)`, the entry with the latest qualification time; ties go to the most
/// recent fragment.
pub(crate) fn memberships(rows: &[RowRef]) -> BTreeMap<(String, String), Membership> {
    let mut out: BTreeMap<(String, String), Membership> = BTreeMap::new();
    for r in rows {
        let Some(list) = r.loaded.list(SEGMENTS, r.row) else { continue };
        let recency = r.recency();
        for i in 0..list.len() {
            let (Some(ns), Some(segment), Some(status)) = (
                dict_value(&list, "ns", i),
                dict_value(&list, "segmentId", i),
                dict_value(&list, "status", i),
            ) else {
                continue;
            };
            let candidate = Membership {
                status,
                last_qualification_ms: time_value(&list, "lastQualificationTime", i),
                version: string_value(&list, "version", i),
                valid_until_ms: time_value(&list, "validUntil", i),
                recency,
            };
            let order = |m: &Membership| (m.last_qualification_ms.unwrap_or(i64::MIN), m.recency);
            match out.get(&(ns.clone(), segment.clone())) {
                Some(existing) if order(existing) >= order(&candidate) => {}
                _ => {
                    out.insert((ns, segment), candidate);
                }
            }
        }
    }
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
        if let Some(state) = &i.authenticated_state {
            entry["authenticatedState"] = json!(state);
        }
        if let Value::Array(list) = map.entry(i.namespace.clone()).or_insert_with(|| json!([])) {
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
                if let Some(state) = &i.authenticated_state {
                    entry["authenticatedState"] = json!(state);
                }
                entry
            })
            .collect(),
    )
}

pub(crate) fn membership_map(m: &BTreeMap<(String, String), Membership>) -> Value {
    let mut by_ns: Map<String, Value> = Map::new();
    for ((ns, segment), entry) in m {
        let mut value = json!({"status": entry.status});
        if let Some(ms) = entry.last_qualification_ms {
            value["lastQualificationTime"] = rfc3339(ms);
        }
        if let Some(v) = &entry.version {
            value["version"] = json!(v);
        }
        if let Some(ms) = entry.valid_until_ms {
            value["validUntil"] = rfc3339(ms);
        }
        if let Value::Object(segments) = by_ns.entry(ns.clone()).or_insert_with(|| json!({})) {
            segments.insert(segment.clone(), value);
        }
    }
    Value::Object(by_ns)
}

/// The profile's events inside the ingest window, latest version of each `_id`, ordered by
/// `timestamp` then `_id`, as JSON with their identities.
pub(crate) fn events(
    rows: &[RowRef],
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<Vec<Value>, EngineError> {
    let mut latest: HashMap<String, (&RowRef, (i64, i64, u64))> = HashMap::new();
    for r in rows {
        let ingest = r.ingest_ms();
        if from_ms.is_some_and(|f| ingest <= f) || to_ms.is_some_and(|t| ingest >= t) {
            continue;
        }
        let Some(id) = r
            .loaded
            .batch
            .column_by_name("_id")
            .filter(|c| !c.is_null(r.row))
            .map(|c| c.as_string::<i32>().value(r.row).to_owned())
        else {
            continue;
        };
        let recency = r.recency();
        match latest.get(&id) {
            Some((_, existing)) if *existing >= recency => {}
            _ => {
                latest.insert(id, (r, recency));
            }
        }
    }
    let mut out: Vec<(i64, String, Value)> = Vec::with_capacity(latest.len());
    for (id, (r, _)) in latest {
        let time = r
            .loaded
            .batch
            .column_by_name("timestamp")
            .filter(|c| !c.is_null(r.row))
            .map_or(i64::MIN, |c| c.as_primitive::<TimestampMillisecondType>().value(r.row));
        let mut value = Value::Object(r.attributes()?);
        value["identityMap"] = identity_map(&identities(std::slice::from_ref(r)));
        out.push((time, id, value));
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(out.into_iter().map(|(_, _, v)| v).collect())
}
