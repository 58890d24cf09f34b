//! Compaction: many small files of one partition of one dataset become one, with the same rows
//! in the same order, so readers see the same store before and after.
//!
//! A fresh file takes its rows' ingest time and commit sequence from the manifest; the merged
//! file carries them per row ([`INGEST_MS`], [`SEQ`]), because its rows come from many batches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, RecordBatchReader, StringArray, UInt64Array};
use arrow::compute::{concat_batches, interleave_record_batch, lexsort_to_indices, SortColumn};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;

use crate::columns::{file_schema, INGEST_MS, KEY, ORD, SEQ};
use crate::index::IndexBuilder;
use crate::ingest::store_writer_properties;
use crate::read::read_file;
use crate::rowfile::RowFileWriter;
use crate::schema::UnionSchema;
use crate::snapshot::FileRef;
use crate::{RecordKind, Result, Storage, StoreError};

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
    crate::gather::take_rows(batch, &indices).map_err(StoreError::arrow("sorting fragments"))
}

/// What a compaction wrote.
#[derive(Debug, Clone)]
pub struct Compacted {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_key: String,
    pub max_key: String,
    /// See [`crate::ingest::WrittenFile::key_fences`].
    pub key_fences: Vec<String>,
}

/// Rows merged into the output at a time.
const MERGE_CHUNK: usize = 8192;

/// Where a row goes in the merged file: key, ingest time, commit sequence, position.
type MergeOrder = (String, i64, i64, u64);

/// One input of the merge: a file read a batch at a time, aligned, with its recency.
struct Head {
    reader: ParquetRecordBatchReader,
    file: FileRef,
    batch: Option<RecordBatch>,
    /// The current batch's merge-order columns, looked up once per batch.
    order: Option<OrderColumns>,
    row: usize,
}

/// Key, ingest time, commit sequence and position columns of a batch.
struct OrderColumns {
    key: StringArray,
    ingest: Int64Array,
    seq: Int64Array,
    ord: UInt64Array,
}

impl OrderColumns {
    fn of(batch: &RecordBatch) -> Result<Self> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| StoreError::Schema(format!("a file to compact without {name}")))
        };
        let int = |name: &str| -> Result<Int64Array> {
            column(name)?
                .as_primitive_opt::<Int64Type>()
                .cloned()
                .ok_or_else(|| StoreError::Schema(format!("{name} is not a 64-bit integer")))
        };
        Ok(Self {
            key: column(KEY)?
                .as_string_opt::<i32>()
                .cloned()
                .ok_or_else(|| StoreError::Schema("the key is not a string".into()))?,
            ingest: int(INGEST_MS)?,
            seq: int(SEQ)?,
            ord: column(ORD)?
                .as_primitive_opt::<UInt64Type>()
                .cloned()
                .ok_or_else(|| StoreError::Schema("the position is not an integer".into()))?,
        })
    }
}

impl Head {
    /// Moves to the next batch (`None` at the end of the file).
    fn next_batch(&mut self, schema: &SchemaRef) -> Result<()> {
        self.row = 0;
        self.batch = match self.reader.next() {
            None => None,
            Some(batch) => {
                let batch = batch.map_err(StoreError::arrow("reading a file to compact"))?;
                Some(with_recency(&batch, &self.file, schema)?)
            }
        };
        self.order = self.batch.as_ref().map(OrderColumns::of).transpose()?;
        Ok(())
    }

    /// The merge order of the current row: key, ingest time, commit sequence, position.
    fn order(&self) -> Option<MergeOrder> {
        let c = self.order.as_ref()?;
        let row = self.row;
        Some((c.key.value(row).to_owned(), c.ingest.value(row), c.seq.value(row), c.ord.value(row)))
    }
}

/// Merges `files` (one dataset, one partition) into one file at `out`, with the same rows in
/// the order [`read_fragments`] gives, less the rows of the commits in `drop_seqs` (a reverted
/// batch's). The files are sorted, so a k-way merge keeps one batch per file in memory (and the
/// encoded output), whatever the size of the partition. Answers `None`, writing nothing, when
/// no row is left.
pub async fn compact(
    storage: &Storage,
    files: &[FileRef],
    kind: RecordKind,
    attributes: &UnionSchema,
    row_group_rows: usize,
    out: &object_store::path::Path,
    drop_seqs: &[i64],
) -> Result<Option<Compacted>> {
    let mut heads = Vec::with_capacity(files.len());
    let mut present = UnionSchema::default();
    // The sources stay open (and, on a remote root, held in the cache) until the merge ends.
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        let location = object_store::path::Path::from(file.path.as_str());
        // The dataset is not needed to merge the files of one dataset.
        let source = storage.source(file.clone(), String::new()).await?;
        let handle =
            source.open_parquet().map_err(|e| StoreError::Schema(format!("{}: {e}", file.path)))?;
        sources.push(source);
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle)
            .map(|b| b.with_batch_size(MERGE_CHUNK).build());
        let reader = builder.and_then(|r| r).map_err(StoreError::parquet(&location))?;
        // The output holds what its inputs hold, not the whole union.
        present
            .merge(&attributes.restricted_to(reader.schema().fields()))
            .map_err(|c| StoreError::Schema(c.message))?;
        heads.push(Head { reader, file: file.clone(), batch: None, order: None, row: 0 });
    }
    let schema = fragment_schema(kind, &present);
    for head in &mut heads {
        head.next_batch(&schema)?;
    }

    let mut writer = ArrowWriter::try_new(
        Vec::new(),
        schema.clone(),
        Some(store_writer_properties(row_group_rows)),
    )
    .map_err(StoreError::parquet(out))?;
    let mut index = IndexBuilder::default();
    let mut row_file =
        storage.row_file_path(out).map(|p| RowFileWriter::create(&p, &schema)).transpose()?;
    let mut queue: BinaryHeap<Reverse<(MergeOrder, usize)>> =
        heads.iter().enumerate().filter_map(|(i, h)| h.order().map(|o| Reverse((o, i)))).collect();
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(MERGE_CHUNK);
    let (mut rows, mut min_key, mut max_key) = (0u64, None, String::new());
    let (mut kept, mut key_fences) = (0usize, Vec::new());
    while let Some(Reverse((order, h))) = queue.pop() {
        if !drop_seqs.contains(&order.2) {
            min_key.get_or_insert_with(|| order.0.clone());
            if kept > 0 && kept % row_group_rows.max(1) == 0 {
                key_fences.push(order.0.clone());
            }
            kept += 1;
            max_key = order.0;
            picks.push((h, heads[h].row));
        }
        heads[h].row += 1;
        let exhausted = heads[h].batch.as_ref().is_some_and(|b| heads[h].row == b.num_rows());
        // A head's batch is replaced only after the rows taken from it are written.
        if picks.len() == MERGE_CHUNK || exhausted {
            rows +=
                write_picks(&heads, &mut picks, &mut writer, &mut index, row_file.as_mut(), out)?;
        }
        if exhausted {
            heads[h].next_batch(&schema)?;
        }
        if let Some(next) = heads[h].order() {
            queue.push(Reverse((next, h)));
        }
    }
    rows += write_picks(&heads, &mut picks, &mut writer, &mut index, row_file.as_mut(), out)?;
    // No row left: nothing is written (the unfinished row file removes itself).
    let Some(min_key) = min_key else { return Ok(None) };
    let bytes = Bytes::from(writer.into_inner().map_err(StoreError::parquet(out))?);
    let size = bytes.len() as u64;
    // The companions first: a data file is never without them.
    // On a remote root the companions are derived in each reader's cache instead.
    let index_at = crate::layout::index_path(out.as_ref()).filter(|_| storage.is_local());
    if let (Some(index), Some(at)) = (index.finish(out)?, index_at) {
        storage.put_synced(&at.as_str().into(), index).await?;
    }
    if let Some(row_file) = row_file {
        row_file.finish()?;
    }
    storage.put(out, bytes).await?;
    drop(sources);
    Ok(Some(Compacted { path: out.to_string(), rows, bytes: size, min_key, max_key, key_fences }))
}

/// Writes the picked rows (head, row) in order, and indexes them.
fn write_picks(
    heads: &[Head],
    picks: &mut Vec<(usize, usize)>,
    writer: &mut ArrowWriter<Vec<u8>>,
    index: &mut IndexBuilder,
    row_file: Option<&mut RowFileWriter>,
    out: &object_store::path::Path,
) -> Result<u64> {
    if picks.is_empty() {
        return Ok(0);
    }
    let batches: Vec<&RecordBatch> = heads.iter().filter_map(|h| h.batch.as_ref()).collect();
    // Heads without a batch are past their end and were never picked from in this chunk.
    let positions: Vec<usize> = {
        let mut at = 0;
        heads
            .iter()
            .map(|h| {
                let p = at;
                at += usize::from(h.batch.is_some());
                p
            })
            .collect()
    };
    let indices: Vec<(usize, usize)> = picks.iter().map(|(h, r)| (positions[*h], *r)).collect();
    let chunk =
        interleave_record_batch(&batches, &indices).map_err(StoreError::arrow("merging files"))?;
    writer.write(&chunk).map_err(StoreError::parquet(out))?;
    index.push(&chunk)?;
    if let Some(row_file) = row_file {
        row_file.write(&chunk)?;
    }
    picks.clear();
    Ok(chunk.num_rows() as u64)
}
