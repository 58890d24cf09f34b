//! Compaction: many small files of one partition of one dataset become one, with the same rows
//! in the same order, so readers see the same store before and after.
//!
//! A fresh file takes its rows' ingest time and commit sequence from the manifest; the merged
//! file carries them per row ([`INGEST_MS`], [`SEQ`]), because its rows come from many batches.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::columns::{file_schema, INGEST_MS, KEY, ORD, SEQ};
use crate::ingest::encode_parquet;
use crate::read::read_file;
use crate::schema::UnionSchema;
use crate::{RecordKind, Result, Storage, StoreError};

/// A file as a reader needs it: where it is and, for a fresh file, the ingest time and commit
/// sequence of all its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    /// `None` for a compacted file, whose rows carry their own.
    pub ingest_ms: Option<i64>,
    pub seq: i64,
}

/// The schema of fragments as readers see them: the file schema of today's union, plus the
/// per-row ingest time and commit sequence.
pub fn fragment_schema(kind: RecordKind, attributes: &UnionSchema) -> SchemaRef {
    let base = file_schema(kind, attributes);
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.insert(2, Field::new(INGEST_MS, DataType::Int64, false));
    fields.insert(3, Field::new(SEQ, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// Every row of `files`, aligned to `schema` (from [`fragment_schema`]), ordered by key and then
/// by recency: ingest time, commit sequence, position in the batch. This is the order every
/// merge rule of the export reads "most recent" from.
pub async fn read_fragments(
    storage: &Storage,
    files: &[FileRef],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    for file in files {
        for batch in read_file(storage, &file.path, None).await? {
            batches.push(with_recency(&batch, file, schema)?);
        }
    }
    let all = concat_batches(schema, &batches).map_err(StoreError::arrow("concatenating"))?;
    sort_fragments(&all)
}

/// `batch` aligned to `schema`, with ingest time and sequence filled from `file` when it is a
/// fresh file.
pub fn with_recency(
    batch: &RecordBatch,
    file: &FileRef,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    let mut fields: Vec<Field> =
        batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    if batch.column_by_name(INGEST_MS).is_none() {
        let ingest = file.ingest_ms.ok_or_else(|| {
            StoreError::Schema(format!(
                "{} has no ingest time in its rows or the manifest",
                file.path
            ))
        })?;
        columns.push(Arc::new(Int64Array::from(vec![ingest; rows])));
        fields.push(Field::new(INGEST_MS, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(vec![file.seq; rows])));
        fields.push(Field::new(SEQ, DataType::Int64, false));
    }
    let extended = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(StoreError::arrow("adding recency columns"))?;
    crate::align::align_batch(&extended, schema)
}

fn sort_fragments(batch: &RecordBatch) -> Result<RecordBatch> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| StoreError::Schema(format!("no {name} column")))
    };
    let columns = [KEY, INGEST_MS, SEQ, ORD]
        .into_iter()
        .map(|name| Ok(SortColumn { values: column(name)?, options: None }))
        .collect::<Result<Vec<_>>>()?;
    let indices =
        lexsort_to_indices(&columns, None).map_err(StoreError::arrow("sorting fragments"))?;
    take_record_batch(batch, &indices).map_err(StoreError::arrow("sorting fragments"))
}

/// What a compaction wrote.
#[derive(Debug, Clone)]
pub struct Compacted {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_key: String,
    pub max_key: String,
}

/// Merges `files` (one dataset, one partition) into one file at `out`.
pub async fn compact(
    storage: &Storage,
    files: &[FileRef],
    kind: RecordKind,
    attributes: &UnionSchema,
    row_group_rows: usize,
    out: &object_store::path::Path,
) -> Result<Compacted> {
    let schema = fragment_schema(kind, attributes);
    let merged = read_fragments(storage, files, &schema).await?;
    if merged.num_rows() == 0 {
        return Err(StoreError::Schema("nothing to compact".into()));
    }
    let bytes = encode_parquet(&merged, row_group_rows, out)?;
    let size = bytes.len() as u64;
    if let (Some(index), Some(at)) =
        (crate::index::encode(&merged, out)?, crate::index::index_path(out.as_ref()))
    {
        storage.put(&at.as_str().into(), index).await?;
    }
    storage.put(out, bytes).await?;
    let keys = merged
        .column_by_name(KEY)
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>().cloned())
        .ok_or_else(|| StoreError::Schema("the key column is missing".into()))?;
    Ok(Compacted {
        path: out.to_string(),
        rows: merged.num_rows() as u64,
        bytes: size,
        min_key: keys.value(0).to_owned(),
        max_key: keys.value(arrow::array::Array::len(&keys) - 1).to_owned(),
    })
}
