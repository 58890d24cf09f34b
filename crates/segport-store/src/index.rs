//! The membership index: a companion file next to every profile store file, holding each
//! segment membership of the file as one row, grouped by segment (one record batch per segment,
//! named in the file's schema metadata). A segment filter reads the batches of its segments and
//! nothing else, so finding a segment's profiles costs what the segment holds, not what the
//! store holds.
//!
//! Each index row carries what resolving a membership needs without the data file: the profile
//! key, the row's recency (`__ord`, and `__ingest_ms`/`__seq` where the data file has them) and
//! the row's position in the data file (`__row`), so the export reads the data file only at the
//! rows of profiles that match. The index is an Arrow IPC file read through a memory map
//! ([`crate::mapped::MappedFile`]): opening it decodes nothing. It is derived data: written
//! and removed with its data file and never listed in the manifest; readers fall back to
//! scanning the data file when an index is missing (stores written before it existed, or with
//! the earlier Parquet index, `.members.parquet`, which is no longer read but still removed with
//! its data file).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::FileWriter;
use bytes::Bytes;

use crate::columns::{INGEST_MS, KEY, ORD, SEGMENTS, SEQ};
use crate::mapped::MappedFile;
use crate::{Result, StoreError};

/// The row of the membership in its data file.
pub const ROW: &str = "__row";
/// Schema metadata key: the segment id of each record batch, as a JSON list in batch order.
pub const SEGMENTS_KEY: &str = "segport.segments";
/// Schema metadata key: `"true"` when no key occurs twice in the data file, so that a
/// profile's row in it is known from its index rows alone.
pub const UNIQUE_KEYS: &str = "segport.unique_keys";
/// Schema metadata key: per segment, its memberships by status (`{segment: {status: n}}`), so
/// that a sandbox's segments are counted from the indexes' footers without reading their rows.
pub const STATUS_COUNTS_KEY: &str = "segport.status_counts";
/// A segment's memberships by status.
pub type StatusCounts = BTreeMap<String, u64>;
/// The membership fields an index row carries.
pub const FIELDS: [&str; 4] = ["ns", "segmentId", "status", "lastQualificationTime"];

/// The index of `data` (a profile file's rows, sorted by key as written) as Parquet; `None` when
/// the rows hold no memberships.
pub fn encode(data: &RecordBatch, path: &object_store::path::Path) -> Result<Option<Bytes>> {
    let mut builder = IndexBuilder::default();
    builder.push(data)?;
    builder.finish(path)
}

/// Builds the index of a data file written a batch at a time. Data files are written in key
/// order, so each segment's rows arrive sorted by key and row: they are kept per segment as
/// they come, with no sort and no second copy at the end.
#[derive(Default)]
pub struct IndexBuilder {
    /// Index rows per segment id, in data-file order.
    segments: BTreeMap<String, Vec<RecordBatch>>,
    /// Data rows seen so far: the row of the next batch's first row.
    offset: usize,
    last_key: Option<String>,
    repeated_key: bool,
}

impl IndexBuilder {
    /// Takes the next rows of the data file, in file order.
    pub fn push(&mut self, data: &RecordBatch) -> Result<()> {
        let keys = data
            .column_by_name(KEY)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| StoreError::Schema("the key column is missing".into()))?;
        for i in 0..keys.len() {
            let previous = if i == 0 { self.last_key.as_deref() } else { Some(keys.value(i - 1)) };
            self.repeated_key |= previous == Some(keys.value(i));
        }
        if !keys.is_empty() {
            self.last_key = Some(keys.value(keys.len() - 1).to_owned());
        }
        let offset = u32::try_from(self.offset)
            .map_err(|_| StoreError::Schema("a store file of more than 2^32 rows".into()))?;
        if let Some(rows) = flatten(data, offset)? {
            let ids = rows
                .column_by_name("segmentId")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| StoreError::Schema("index without segment ids".into()))?;
            let mut by_segment: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for i in 0..ids.len() {
                by_segment.entry(ids.value(i)).or_default().push(i as u32);
            }
            for (id, picked) in by_segment {
                let part = crate::gather::take_rows(&rows, &UInt32Array::from(picked))
                    .map_err(StoreError::arrow("grouping memberships"))?;
                self.segments.entry(id.to_owned()).or_default().push(part);
            }
        }
        self.offset += data.num_rows();
        Ok(())
    }

    /// The index as an Arrow IPC file, one record batch per segment; `None` when the file
    /// holds no memberships.
    pub fn finish(self, path: &object_store::path::Path) -> Result<Option<Bytes>> {
        let Some(schema) = self.segments.values().flatten().next().map(RecordBatch::schema) else {
            return Ok(None);
        };
        let names: Vec<&str> = self.segments.keys().map(String::as_str).collect();
        let error = |e: arrow::error::ArrowError| {
            StoreError::Schema(format!("cannot write the index of {path}: {e}"))
        };
        let mut grouped = Vec::with_capacity(self.segments.len());
        let mut counts = BTreeMap::new();
        for (segment, batches) in &self.segments {
            let batch = concat_batches(&schema, batches).map_err(error)?;
            counts.insert(segment.as_str(), count_statuses(&batch)?);
            grouped.push(batch);
        }
        let metadata = [
            (SEGMENTS_KEY.to_owned(), serde_json::to_string(&names).unwrap_or_default()),
            (UNIQUE_KEYS.to_owned(), (!self.repeated_key).to_string()),
            (STATUS_COUNTS_KEY.to_owned(), serde_json::to_string(&counts).unwrap_or_default()),
        ];
        let metadata: std::collections::HashMap<String, String> = metadata.into_iter().collect();
        let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
        let mut writer = FileWriter::try_new(Vec::new(), &schema).map_err(error)?;
        for batch in grouped {
            let batch = batch.with_schema(schema.clone()).map_err(error)?;
            writer.write(&batch).map_err(error)?;
        }
        writer.finish().map_err(error)?;
        Ok(Some(Bytes::from(writer.into_inner().map_err(error)?)))
    }
}

/// A membership index, mapped.
pub struct Index {
    file: MappedFile,
    segments: Vec<String>,
    unique: bool,
}

impl Index {
    /// Opens the index at `local`, a file this store wrote (see [`crate::snapshot`]), mapped
    /// without validation; `None` when there is none.
    pub(crate) fn open_trusted(local: &std::path::Path) -> Result<Option<Self>> {
        MappedFile::open_trusted(local)?.map(Self::new).transpose()
    }

    /// The index held in `bytes`, from anywhere: validated as it is decoded.
    pub fn from_bytes(bytes: Bytes) -> Result<Self> {
        Self::new(MappedFile::from_buffer(std::path::Path::new("index"), bytes.into())?)
    }

    fn new(file: MappedFile) -> Result<Self> {
        let metadata = file.schema().metadata();
        let segments: Option<Vec<String>> =
            metadata.get(SEGMENTS_KEY).and_then(|v| serde_json::from_str(v).ok());
        let segments = segments.filter(|s| s.len() == file.len()).ok_or_else(|| {
            StoreError::Schema(format!(
                "{}: the index does not name the segment of each batch",
                file.path().display()
            ))
        })?;
        let unique = metadata.get(UNIQUE_KEYS).is_some_and(|v| v == "true");
        Ok(Self { file, segments, unique })
    }

    /// The segments the index holds, in its batches' order.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether no key occurs twice in the data file.
    pub fn unique_keys(&self) -> bool {
        self.unique
    }

    /// Each segment's memberships by status: from the footer of an index that records them,
    /// else counted from its rows (indexes written before the counts were).
    pub fn status_counts(&self) -> Result<BTreeMap<String, StatusCounts>> {
        let recorded = self.file.schema().metadata().get(STATUS_COUNTS_KEY);
        if let Some(counts) = recorded.and_then(|v| serde_json::from_str(v).ok()) {
            return Ok(counts);
        }
        self.segments
            .iter()
            .enumerate()
            .map(|(i, segment)| Ok((segment.clone(), count_statuses(&self.file.batch(i)?)?)))
            .collect()
    }

    /// The index rows of the `wanted` segments (the batches point into the mapping).
    pub fn batches_of(&self, wanted: &HashSet<&str>) -> Result<Vec<RecordBatch>> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| wanted.contains(s.as_str()))
            .map(|(i, _)| self.file.batch(i))
            .collect()
    }
}

/// The memberships of index rows by status.
fn count_statuses(rows: &RecordBatch) -> Result<StatusCounts> {
    let status = rows
        .column_by_name("status")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| StoreError::Schema("index without statuses".into()))?;
    let mut counts = StatusCounts::new();
    for value in status.iter() {
        *counts.entry(value.unwrap_or("unknown").to_owned()).or_default() += 1;
    }
    Ok(counts)
}

/// The index rows of `data`, whose first row is row `offset` of its file: one per membership.
fn flatten(data: &RecordBatch, offset: u32) -> Result<Option<RecordBatch>> {
    let Some(list) = data.column_by_name(SEGMENTS).and_then(|c| c.as_list_opt::<i32>()) else {
        return Ok(None);
    };
    let entries = list.values().as_struct();
    if entries.is_empty() {
        return Ok(None);
    }
    // The data row of each entry.
    let offsets = list.value_offsets();
    let first = offsets[0] as usize;
    let mut parents = Vec::with_capacity(entries.len());
    for row in 0..list.len() {
        let (start, end) = (offsets[row] as usize - first, offsets[row + 1] as usize - first);
        parents.extend(std::iter::repeat_n(row as u32, end - start));
    }
    if parents.is_empty() {
        return Ok(None);
    }
    let parents = UInt32Array::from(parents);
    let entries = entries.slice(first, parents.len());

    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let error = |what: &'static str| StoreError::arrow(what);
    for name in FIELDS {
        let column = entries
            .column_by_name(name)
            .ok_or_else(|| StoreError::Schema(format!("memberships without {name}")))?;
        // Strings are written plain: the index is read a segment at a time.
        let column = match column.data_type() {
            DataType::Dictionary(_, _) => {
                cast(column, &DataType::Utf8).map_err(error("flattening memberships"))?
            }
            _ => column.clone(),
        };
        // Nullable whatever this batch holds, so that every batch of a file has one schema.
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    for name in [KEY, ORD, INGEST_MS, SEQ] {
        if let Some(column) = data.column_by_name(name) {
            let taken = take(column, &parents, None).map_err(error("flattening memberships"))?;
            fields.push(Field::new(name, taken.data_type().clone(), false));
            columns.push(taken);
        }
    }
    let rows: UInt32Array = parents.iter().map(|p| p.map(|p| p + offset)).collect();
    fields.push(Field::new(ROW, DataType::UInt32, false));
    columns.push(Arc::new(rows));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map(Some)
        .map_err(error("flattening memberships"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    use crate::columns::{build_batch, Prepared};
    use crate::schema::UnionSchema;
    use crate::xdm::normalize;
    use crate::RecordKind;

    /// A sorted profile batch of `records` (XDM JSON).
    fn data(records: &[serde_json::Value]) -> RecordBatch {
        let mut schema = UnionSchema::default();
        let prepared: Vec<Prepared> = records
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let record = normalize(v.clone(), RecordKind::Profile).unwrap();
                schema.absorb(&record.attributes).unwrap();
                Prepared { ord: i as u64, record }
            })
            .collect();
        let batch = build_batch(RecordKind::Profile, &prepared, &schema).unwrap();
        crate::ingest::sort_by_key(&batch).unwrap()
    }

    fn profile(id: &str, segments: &[(&str, &str)]) -> serde_json::Value {
        let memberships: serde_json::Map<String, serde_json::Value> = segments
            .iter()
            .map(|(s, status)| {
                (
                    s.to_string(),
                    json!({"status": status, "lastQualificationTime": "2025-01-01T00:00:00Z"}),
                )
            })
            .collect();
        json!({"identityMap": {"ECID": [{"id": id, "primary": true}]}, "segmentMembership": {"ups": memberships}})
    }

    #[test]
    fn one_batch_per_segment_pointing_at_the_data_rows() {
        let batch = data(&[
            profile("c", &[("s2", "realized"), ("s1", "exited")]),
            profile("a", &[("s1", "existing")]),
            profile("b", &[]),
            profile("d", &[("s2", "existing")]),
        ]);
        let bytes = encode(&batch, &"x.parquet".into()).unwrap().unwrap();
        let index = Index::from_bytes(bytes).unwrap();
        assert!(index.unique_keys());
        let of = |wanted: &[&str]| {
            let wanted: HashSet<&str> = wanted.iter().copied().collect();
            index
                .batches_of(&wanted)
                .unwrap()
                .iter()
                .map(|b| {
                    b.column_by_name("segmentId").unwrap().as_string::<i32>().value(0).to_owned()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&["s2"]), ["s2"]);
        assert_eq!(of(&["s1", "s9"]), ["s1"]);
        let rows: Vec<(String, String, String, u32)> = index
            .batches_of(&HashSet::from(["s1", "s2"]))
            .unwrap()
            .into_iter()
            .flat_map(|b| {
                let text = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
                let (seg, key, status) = (text("segmentId"), text(KEY), text("status"));
                let row = b
                    .column_by_name(ROW)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .clone();
                (0..b.num_rows())
                    .map(|i| {
                        (
                            seg.value(i).into(),
                            key.value(i).into(),
                            status.value(i).into(),
                            row.value(i),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        // The footer counts each segment's memberships by status, as its rows do.
        let counted = index.status_counts().unwrap();
        assert_eq!(
            serde_json::to_value(&counted).unwrap(),
            json!({"s1": {"existing": 1, "exited": 1}, "s2": {"existing": 1, "realized": 1}})
        );
        // Data rows are sorted by key: a, b, c, d.
        assert_eq!(
            rows,
            vec![
                ("s1".into(), "ECID:a".into(), "existing".into(), 0),
                ("s1".into(), "ECID:c".into(), "exited".into(), 2),
                ("s2".into(), "ECID:c".into(), "realized".into(), 2),
                ("s2".into(), "ECID:d".into(), "existing".into(), 3),
            ]
        );
    }

    #[test]
    fn repeated_keys_are_flagged_and_no_memberships_mean_no_index() {
        let batch = data(&[profile("a", &[("s1", "existing")]), profile("a", &[])]);
        let bytes = encode(&batch, &"x.parquet".into()).unwrap().unwrap();
        assert!(!Index::from_bytes(bytes).unwrap().unique_keys());
        assert!(encode(&data(&[profile("a", &[])]), &"x.parquet".into()).unwrap().is_none());
    }
}
