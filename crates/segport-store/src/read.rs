//! Reading store files back: the batches of one file, aligned to a target schema.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::align::align_batch;
use crate::{Result, Storage, StoreError};

/// Every batch of the file at `path`, aligned to `schema` when one is given.
pub async fn read_file(
    storage: &Storage,
    path: &str,
    schema: Option<&SchemaRef>,
) -> Result<Vec<RecordBatch>> {
    let location = Path::from(path);
    let bytes = storage.get(&location).await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(StoreError::parquet(&location))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(StoreError::arrow("reading a store file"))?;
        out.push(match schema {
            Some(s) => align_batch(&batch, s)?,
            None => batch,
        });
    }
    Ok(out)
}

/// The number of row groups of a store file (tests use it to check file shapes).
pub async fn row_groups(storage: &Storage, path: &str) -> Result<usize> {
    let location = Path::from(path);
    let bytes = storage.get(&location).await?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(StoreError::parquet(&location))?;
    Ok(builder.metadata().num_row_groups())
}

/// The latest version of every event: among rows of one key with the same `_id`, the most recent
/// wins (docs/api.md, Events). `batch` must be ordered by key and then recency, as
/// [`crate::compact::read_fragments`] returns it.
pub fn latest_events(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{Array, AsArray, UInt32Array};
    let keys = batch
        .column_by_name(crate::columns::KEY)
        .ok_or_else(|| StoreError::Schema("no key column".into()))?
        .as_string::<i32>();
    let ids = batch
        .column_by_name("_id")
        .ok_or_else(|| StoreError::Schema("events without an _id column".into()))?;
    let ids = ids
        .as_string_opt::<i32>()
        .ok_or_else(|| StoreError::Schema("_id is not a string".into()))?;
    let mut latest: std::collections::HashMap<(&str, &str), u32> = std::collections::HashMap::new();
    for row in 0..batch.num_rows() {
        if ids.is_null(row) {
            continue;
        }
        latest.insert((keys.value(row), ids.value(row)), row as u32);
    }
    let mut rows: Vec<u32> = latest.into_values().collect();
    rows.sort_unstable();
    crate::gather::take_rows(batch, &UInt32Array::from(rows))
        .map_err(StoreError::arrow("keeping the latest events"))
}

/// Rows of a fragment batch as XDM JSON: the attributes, `identityMap` and (for profiles)
/// `segmentMembership` rebuilt from the stored lists, and the bookkeeping columns (`__key`,
/// `__ingest_ms`, `__seq`, `__ord`) as they are.
pub fn rows_as_xdm(batch: &RecordBatch) -> Result<Vec<serde_json::Value>> {
    use serde_json::{json, Map, Value};
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(batch).map_err(StoreError::arrow("writing rows as JSON"))?;
    writer.finish().map_err(StoreError::arrow("writing rows as JSON"))?;
    let rows: Vec<Map<String, Value>> = serde_json::from_slice(&writer.into_inner())
        .map_err(|e| StoreError::Schema(format!("rows as JSON: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|mut row| {
            if let Some(Value::Array(ids)) = row.remove(crate::columns::IDENTITIES) {
                let mut map: Map<String, Value> = Map::new();
                for i in ids {
                    let ns = i["namespace"].as_str().unwrap_or_default().to_owned();
                    let mut entry = json!({"id": i["id"], "primary": i["primary"]});
                    if let Some(state) = i.get("authenticatedState") {
                        entry["authenticatedState"] = state.clone();
                    }
                    if let Value::Array(list) =
                        map.entry(ns).or_insert_with(|| Value::Array(Vec::new()))
                    {
                        list.push(entry);
                    }
                }
                row.insert("identityMap".into(), Value::Object(map));
            }
            if let Some(Value::Array(segments)) = row.remove(crate::columns::SEGMENTS) {
                let mut by_ns: Map<String, Value> = Map::new();
                for m in segments {
                    let ns = m["ns"].as_str().unwrap_or_default().to_owned();
                    let id = m["segmentId"].as_str().unwrap_or_default().to_owned();
                    let mut entry = Map::new();
                    for key in ["status", "lastQualificationTime", "version", "validUntil"] {
                        if let Some(v) = m.get(key) {
                            entry.insert(key.into(), v.clone());
                        }
                    }
                    if let Value::Object(segs) =
                        by_ns.entry(ns).or_insert_with(|| Value::Object(Map::new()))
                    {
                        segs.insert(id, Value::Object(entry));
                    }
                }
                if !by_ns.is_empty() {
                    row.insert("segmentMembership".into(), Value::Object(by_ns));
                }
            }
            Value::Object(row)
        })
        .collect())
}
