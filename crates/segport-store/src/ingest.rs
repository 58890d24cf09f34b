//! The ingest pipeline: records in, partitioned and sorted Parquet files out.
//!
//! Input is processed a chunk at a time: records are parsed and normalised in parallel (rayon),
//! then typed against the union schema in input order (so the first typed value of a field wins
//! and later conflicting records fail), then built into one Arrow batch per partition. Batches
//! are buffered per partition up to a memory budget; a flush sorts each partition's rows by key
//! and writes one Parquet file per partition. Memory is bounded by the budget plus one chunk,
//! whatever the size of the input.
//!
//! The pipeline is synchronous CPU work: run it off the async runtime (`spawn_blocking`); it
//! reaches storage through the runtime handle it is given.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, lexsort_to_indices, SortColumn};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use tokio::runtime::Handle;

use crate::align::{align_batch, prune_nulls};
use crate::columns::{build_batch, file_schema, Prepared, IDENTITIES, KEY, ORD};
use crate::input::{json_array_elements, ndjson_lines, parquet_rows, InputFormat, RawRecord};
use crate::limits::{deeper_than, RecordLimits};
use crate::schema::{infer_record, Conflict, UnionSchema, XType};
use crate::storage::store_file;
use crate::xdm::{normalize, parse, Normalized, RecordError};
use crate::{RecordKind, Result, Storage, StoreError};

/// What is being ingested where.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    pub org: String,
    pub sandbox: String,
    pub dataset: String,
    pub kind: RecordKind,
    /// The sandbox's partition count.
    pub partitions: u32,
    /// Prefix of the files this attempt writes (`{batchId}-{attemptId}`), so that an attempt's
    /// output is private to it and leftovers can be recognised.
    pub file_prefix: String,
    /// Whether records are written to the store (datasets tagged `unifiedProfile`); otherwise
    /// they are only validated and counted.
    pub write: bool,
}

/// Sizes that bound memory and shape the files.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Records parsed and typed together.
    pub chunk_records: usize,
    /// Buffered Arrow bytes across partitions before a flush writes files.
    pub flush_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// What one record may hold.
    pub record: RecordLimits,
    /// Bytes of an NDJSON file read at a time (its whole lines are ingested, the rest carried).
    pub ndjson_part: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            chunk_records: 16_384,
            flush_bytes: 192 * 1024 * 1024,
            row_group_rows: 64 * 1024,
            record: RecordLimits::default(),
            ndjson_part: 32 * 1024 * 1024,
        }
    }
}

/// A Parquet file the ingest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub path: String,
    pub partition: u32,
    pub rows: u64,
    pub bytes: u64,
    pub min_key: String,
    pub max_key: String,
    /// The key of the first row of every row group but the first: where a plan may cut the
    /// file's partition into key ranges.
    pub key_fences: Vec<String>,
}

/// Failed records sharing a code and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    pub code: String,
    pub description: String,
    /// Row numbers (at most [`MAX_ROWS_PER_ERROR`] per code are listed, over all of the
    /// code's groups).
    pub rows: Vec<u64>,
    /// How many records failed this way, listed or not.
    pub count: u64,
}

pub const MAX_ROWS_PER_ERROR: usize = 1000;
const MAX_ERROR_GROUPS: usize = 100;

/// What an ingest produced.
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub files: Vec<WrittenFile>,
    /// The union schema widened by this batch.
    pub schema: UnionSchema,
    /// What the batch's files hold of `schema`: their fields, typed as `schema` types them.
    pub held: UnionSchema,
    pub record_count: u64,
    pub failed_record_count: u64,
    pub errors: Vec<ErrorGroup>,
}

/// Counters a progress display can read while the ingest runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub records: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
}

/// One batch's ingest, fed file by file.
pub struct Ingest {
    target: IngestTarget,
    limits: IngestLimits,
    storage: Storage,
    runtime: Handle,
    schema: UnionSchema,
    /// The part of `schema` the written files hold.
    held: UnionSchema,
    /// [`UnionSchema::field_count`] of `schema`, kept as it grows.
    schema_fields: usize,
    buffers: Vec<Vec<RecordBatch>>,
    buffered_bytes: usize,
    files: Vec<WrittenFile>,
    flushes: u32,
    next_ord: u64,
    ok: u64,
    failed: u64,
    errors: BTreeMap<RecordError, (Vec<u64>, u64)>,
    /// Rows listed so far per error code.
    rows_listed: BTreeMap<&'static str, usize>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    /// An NDJSON file found to be one JSON array: refused whole, its later parts skipped.
    array_file: Option<String>,
}

impl Ingest {
    /// `schema` is the sandbox's union schema for this record kind when the ingest starts.
    pub fn new(
        storage: Storage,
        runtime: Handle,
        target: IngestTarget,
        limits: IngestLimits,
        schema: UnionSchema,
    ) -> Self {
        let partitions = target.partitions.max(1) as usize;
        Self {
            target,
            limits,
            storage,
            runtime,
            schema_fields: schema.field_count(),
            schema,
            held: UnionSchema::default(),
            buffers: vec![Vec::new(); partitions],
            buffered_bytes: 0,
            files: Vec::new(),
            flushes: 0,
            next_ord: 0,
            ok: 0,
            failed: 0,
            errors: BTreeMap::new(),
            rows_listed: BTreeMap::new(),
            progress: Arc::new(Progress::default()),
            stop: Arc::new(AtomicBool::new(false)),
            array_file: None,
        }
    }

    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// A flag that, once set, makes the ingest stop at the next chunk with
    /// [`StoreError::Cancelled`] (a lost lease, a shutdown).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Counts progress into `progress` instead of a counter of its own.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// The limits this ingest applies.
    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Counts a record its reader refused before it could be parsed (a line past the size
    /// limit, skipped unread), reporting it like any failed record.
    pub fn refuse(&mut self, file: &str, row: u64, error: RecordError) {
        self.failed += 1;
        self.report(file, row, error);
        self.progress.failed.store(self.failed, Ordering::Relaxed);
    }

    /// Ingests a part of an NDJSON file that ends at a line boundary; its first line is line
    /// `first_line` of the file. Large files are fed part by part, so memory stays bounded.
    pub fn add_ndjson_part(&mut self, name: &str, part: &[u8], first_line: u64) -> Result<()> {
        if !(first_line == 1 && self.refused_as_array(name, part))
            && self.array_file.as_deref() != Some(name)
        {
            let records = ndjson_lines(part).map(|(line, r)| (line + first_line - 1, r));
            self.add_records(name, records)?;
        }
        self.progress.bytes.fetch_add(part.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// An NDJSON file that starts with `[` is one JSON array sent without `isMultiLineJson`:
    /// read line by line, each of its lines would fail on its own with no word of the cause.
    /// It is refused as one failed record that says what to do.
    fn refused_as_array(&mut self, name: &str, start: &[u8]) -> bool {
        if start.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
            return false;
        }
        self.refuse(
            name,
            1,
            RecordError::new(
                "INVALID_JSON",
                "the file is one JSON array, not one record per line; send it as a JSON array \
                 (inputFormat.isMultiLineJson: true, or segport ingest --multiline-json)",
            ),
        );
        self.array_file = Some(name.to_owned());
        true
    }

    /// Ingests one uploaded file.
    pub fn add_file(&mut self, name: &str, bytes: Bytes, format: InputFormat) -> Result<()> {
        let size = bytes.len() as u64;
        match format {
            InputFormat::NdJson if self.refused_as_array(name, &bytes) => {}
            InputFormat::NdJson => self.add_records(name, ndjson_lines(&bytes))?,
            InputFormat::JsonArray => self.add_records(name, json_array_elements(&bytes))?,
            InputFormat::Parquet => {
                let rows = parquet_rows(name, bytes.clone(), self.limits.record.max_bytes)?;
                self.add_records(name, rows)?
            }
        }
        self.progress.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    fn add_records<'a>(
        &mut self,
        name: &str,
        records: impl IntoIterator<Item = (u64, RawRecord<'a>)>,
    ) -> Result<()> {
        let mut chunk = Vec::with_capacity(self.limits.chunk_records);
        for record in records {
            chunk.push(record);
            if chunk.len() == self.limits.chunk_records {
                self.process_chunk(name, std::mem::take(&mut chunk))?;
            }
        }
        if !chunk.is_empty() {
            self.process_chunk(name, chunk)?;
        }
        Ok(())
    }

    fn process_chunk(&mut self, file: &str, chunk: Vec<(u64, RawRecord<'_>)>) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(StoreError::Cancelled);
        }
        let kind = self.target.kind;
        // Parsing, normalising and typing need no shared state: they run in parallel. Only
        // absorbing the types into the union schema runs in input order, below.
        // Records the schema already holds (nearly all, once an ingest is under way) are not
        // typed: absorbing them would change nothing.
        let (known, known_fields) = (&self.schema, self.schema_fields);
        let limits = self.limits.record;
        let parsed: Vec<(u64, Result<Typed, RecordError>)> = chunk
            .into_par_iter()
            .map(|(row, raw)| {
                let value = match raw {
                    RawRecord::Text(text) if text.len() > limits.max_bytes => {
                        Err(limits.too_large(text.len()))
                    }
                    RawRecord::Text(text) => parse(text),
                    RawRecord::Value(v) => Ok(v),
                    RawRecord::Broken(e) => Err(e),
                };
                let typed = value
                    .and_then(|v| match deeper_than(&v, limits.depth()) {
                        true => Err(limits.too_deep()),
                        false => normalize(v, kind),
                    })
                    .and_then(|r| {
                        // A record the schema holds has no more fields than the schema; only
                        // when that is more than a record may have must it be counted.
                        let held = known.holds(&r.attributes);
                        if held && known_fields <= limits.max_fields {
                            return Ok((r, Vec::new()));
                        }
                        let types = infer_record(&r.attributes).map_err(conflict)?;
                        let fields: usize = types.iter().map(|(_, t)| 1 + t.field_count()).sum();
                        if fields > limits.max_fields {
                            return Err(limits.too_many_fields(fields));
                        }
                        Ok((r, if held { Vec::new() } else { types }))
                    });
                (row, typed)
            })
            .collect();

        let partitions = self.buffers.len();
        let mut by_partition: Vec<Vec<Prepared>> = (0..partitions).map(|_| Vec::new()).collect();
        for (row, result) in parsed {
            let ord = self.next_ord;
            self.next_ord += 1;
            let record = result.and_then(|(r, types)| {
                if types.is_empty() {
                    return Ok(r);
                }
                let widening = self.schema.widen(types).map_err(conflict)?;
                let held = self.schema_fields;
                if held + widening.added_fields > limits.max_schema_fields {
                    return Err(limits.schema_full(held, widening.added_fields));
                }
                self.schema_fields += widening.added_fields;
                self.schema.apply(widening);
                Ok(r)
            });
            match record {
                Ok(record) => {
                    self.ok += 1;
                    let p = partition_of(&record.key, self.target.partitions);
                    by_partition[p as usize].push(Prepared { ord, record });
                }
                Err(e) => {
                    self.failed += 1;
                    self.report(file, row, e);
                }
            }
        }
        self.progress.records.store(self.ok + self.failed, Ordering::Relaxed);
        self.progress.failed.store(self.failed, Ordering::Relaxed);
        if !self.target.write {
            return Ok(());
        }
        let schema = &self.schema;
        let built: Vec<(usize, RecordBatch)> = by_partition
            .into_par_iter()
            .enumerate()
            .filter(|(_, records)| !records.is_empty())
            .map(|(p, records)| build_batch(kind, &records, schema).map(|b| (p, b)))
            .collect::<Result<_>>()?;
        for (p, batch) in built {
            self.buffered_bytes += batch.get_array_memory_size();
            self.buffers[p].push(batch);
        }
        if self.buffered_bytes >= self.limits.flush_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn report(&mut self, file: &str, row: u64, error: RecordError) {
        let mut error = RecordError::new(error.code, format!("{file}: {}", error.description));
        if !self.errors.contains_key(&error) && self.errors.len() >= MAX_ERROR_GROUPS {
            error = RecordError::new("MORE_ERRORS", "further kinds of errors are not listed");
        }
        // Rows are listed up to a budget per code, shared by the code's descriptions.
        let listed = self.rows_listed.entry(error.code).or_default();
        let (rows, count) = self.errors.entry(error).or_default();
        *count += 1;
        if *listed < MAX_ROWS_PER_ERROR {
            *listed += 1;
            rows.push(row);
        }
    }

    /// Writes every buffered partition as one sorted file; partitions are sorted and encoded in
    /// parallel.
    fn flush(&mut self) -> Result<()> {
        let (kind, union) = (self.target.kind, &self.schema);
        let partitions = self.buffers.len();
        let buffers = std::mem::replace(&mut self.buffers, vec![Vec::new(); partitions]);
        self.buffered_bytes = 0;
        let name = format!("{}-{:05}.parquet", self.target.file_prefix, self.flushes);
        let (target, row_group_rows) = (&self.target, self.limits.row_group_rows);
        let storage = &self.storage;
        let encoded: Vec<(WrittenFile, Bytes, Option<Bytes>, UnionSchema)> = buffers
            .into_par_iter()
            .enumerate()
            .filter(|(_, batches)| !batches.is_empty())
            .map(|(p, batches)| {
                // The file holds what its records have: the union cut to the batches' fields,
                // without the members no record set.
                let mut present = UnionSchema::default();
                for b in &batches {
                    present
                        .merge(&union.restricted_to(b.schema_ref().fields()))
                        .map_err(|c| StoreError::Schema(c.message))?;
                }
                let schema = file_schema(kind, &present);
                let aligned =
                    batches.iter().map(|b| align_batch(b, &schema)).collect::<Result<Vec<_>>>()?;
                let all = concat_batches(&schema, &aligned)
                    .map_err(StoreError::arrow("concatenating a partition"))?;
                drop(aligned);
                let sorted = prune_nulls(&sort_by_key(&all)?)?;
                let path =
                    store_file(&target.org, &target.sandbox, &target.dataset, p as u32, &name);
                let bytes = encode_parquet(&sorted, row_group_rows, &path)?;
                let index =
                    if storage.is_local() { crate::index::encode(&sorted, &path)? } else { None };
                // Companions before their data file: a data file is never without them.
                if let Some(local) = storage.row_file_path(&path) {
                    crate::rowfile::write(&local, &sorted)?;
                }
                let keys = sorted
                    .column_by_name(KEY)
                    .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>().cloned())
                    .ok_or_else(|| StoreError::Schema("the key column is missing".into()))?;
                let file = WrittenFile {
                    path: path.to_string(),
                    partition: p as u32,
                    rows: sorted.num_rows() as u64,
                    bytes: bytes.len() as u64,
                    min_key: keys.value(0).to_owned(),
                    max_key: keys.value(arrow::array::Array::len(&keys) - 1).to_owned(),
                    key_fences: (row_group_rows..arrow::array::Array::len(&keys))
                        .step_by(row_group_rows.max(1))
                        .map(|row| keys.value(row).to_owned())
                        .collect(),
                };
                Ok((file, bytes, index, present))
            })
            .collect::<Result<_>>()?;
        for (file, bytes, index, present) in encoded {
            self.held.merge(&present).map_err(|c| StoreError::Schema(c.message))?;
            let path = object_store::path::Path::from(file.path.as_str());
            // The index first: a data file is never without its index.
            // On a remote root there is none: companions are derived in each reader's cache.
            if let (Some(index), Some(at)) = (index, crate::layout::index_path(&file.path)) {
                self.runtime.block_on(self.storage.put_synced(&at.as_str().into(), index))?;
            }
            self.runtime.block_on(self.storage.put(&path, bytes))?;
            self.files.push(file);
        }
        self.flushes += 1;
        Ok(())
    }

    /// Writes what is still buffered and reports the outcome.
    pub fn finish(mut self) -> Result<IngestOutcome> {
        if self.buffers.iter().any(|b| !b.is_empty()) {
            self.flush()?;
        }
        let errors = self
            .errors
            .into_iter()
            .map(|(e, (rows, count))| ErrorGroup {
                code: e.code.to_owned(),
                description: e.description,
                rows,
                count,
            })
            .collect();
        Ok(IngestOutcome {
            files: self.files,
            schema: self.schema,
            held: self.held,
            record_count: self.ok,
            failed_record_count: self.failed,
            errors,
        })
    }
}

/// A normalised record with the types of its attributes.
type Typed = (Normalized, Vec<(String, XType)>);

fn conflict(c: Conflict) -> RecordError {
    RecordError::new("TYPE_CONFLICT", format!("field {} {}", c.field, c.message))
}

/// The partition of a profile key: a stable 64-bit hash (XXH3) modulo the partition count.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// Rows ordered by key, then by their position in the batch.
pub fn sort_by_key(batch: &RecordBatch) -> Result<RecordBatch> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| StoreError::Schema(format!("no {name} column")))
    };
    let indices = lexsort_to_indices(
        &[
            SortColumn { values: column(KEY)?, options: None },
            SortColumn { values: column(ORD)?, options: None },
        ],
        None,
    )
    .map_err(StoreError::arrow("sorting by key"))?;
    crate::gather::take_rows(batch, &indices).map_err(StoreError::arrow("sorting by key"))
}

/// Rows per data page of store files.
const DATA_PAGE_ROWS: usize = 2048;

/// Writer settings of Parquet that segport writes (store files and export output): zstd,
/// column-chunk statistics, no dictionary for the columns whose values are unique anyway.
pub fn writer_properties(row_group_rows: usize) -> WriterProperties {
    builder(row_group_rows).build()
}

/// Writer settings of export output: those of [`writer_properties`] without dictionary
/// encoding. An export's columns are mostly unique per profile (ids, emails, names), where a
/// dictionary is built only to be abandoned; zstd still compresses repeated values.
pub fn output_writer_properties(row_group_rows: usize) -> WriterProperties {
    builder(row_group_rows).set_dictionary_enabled(false).build()
}

/// [`output_writer_properties`] for a file whose first batch is `first`: its leaf columns that
/// hold no value there are left uncompressed. A zstd codec costs a context per column chunk,
/// which dominates writing a wide union schema (thousands of columns, most of them null in a
/// small export); a column of nulls is a few bytes of levels, which zstd would not shrink.
pub fn output_writer_properties_for(
    row_group_rows: usize,
    first: &RecordBatch,
) -> WriterProperties {
    let mut builder = builder(row_group_rows).set_dictionary_enabled(false);
    let mut null_leaves = Vec::new();
    for (field, column) in first.schema().fields().iter().zip(first.columns()) {
        null_leaf_paths(&mut vec![field.name().clone()], column.as_ref(), &mut null_leaves);
    }
    for path in null_leaves {
        builder = builder.set_column_compression(ColumnPath::new(path), Compression::UNCOMPRESSED);
    }
    builder.build()
}

/// The Parquet paths of the leaf columns under `array` (at `path`) that hold no value: all of
/// them when the array is all null, else those of its struct members, recursively. Lists and
/// maps with values are left alone (their leaves are not null as a whole).
fn null_leaf_paths(
    path: &mut Vec<String>,
    array: &dyn arrow::array::Array,
    out: &mut Vec<Vec<String>>,
) {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    if array.null_count() == array.len() {
        leaf_paths(path, array.data_type(), out);
    } else if let DataType::Struct(fields) = array.data_type() {
        for (field, child) in fields.iter().zip(array.as_struct().columns()) {
            path.push(field.name().clone());
            null_leaf_paths(path, child.as_ref(), out);
            path.pop();
        }
    }
}

/// Every leaf column path under a value of `data_type` at `path`, named as the Arrow writer
/// names Parquet groups (`list`/item for lists, `key_value`/key/value for maps).
fn leaf_paths(
    path: &mut Vec<String>,
    data_type: &arrow::datatypes::DataType,
    out: &mut Vec<Vec<String>>,
) {
    use arrow::datatypes::DataType;
    let mut under = |path: &mut Vec<String>, names: &[&str], data_type: &DataType| {
        path.extend(names.iter().map(|n| (*n).to_owned()));
        leaf_paths(path, data_type, out);
        path.truncate(path.len() - names.len());
    };
    match data_type {
        DataType::Struct(fields) => {
            for f in fields {
                under(path, &[f.name()], f.data_type());
            }
        }
        DataType::List(item) | DataType::LargeList(item) => {
            under(path, &["list", item.name()], item.data_type())
        }
        DataType::Map(entries, _) => {
            if let DataType::Struct(kv) = entries.data_type() {
                for f in kv {
                    under(path, &[entries.name(), f.name()], f.data_type());
                }
            }
        }
        _ => out.push(path.clone()),
    }
}

/// Writer settings of store files: those of [`writer_properties`], and small pages with the
/// key's range per page and a bloom filter of the keys per row group, so that a reader wanting
/// a few profiles decompresses only the pages that hold them.
pub fn store_writer_properties(row_group_rows: usize) -> WriterProperties {
    builder(row_group_rows)
        .set_compression(Compression::LZ4_RAW)
        .set_data_page_row_count_limit(DATA_PAGE_ROWS)
        .set_column_statistics_enabled(ColumnPath::from(KEY), EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(ColumnPath::from(KEY), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(KEY), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(KEY), row_group_rows as u64)
        .build()
}

fn builder(row_group_rows: usize) -> parquet::file::properties::WriterPropertiesBuilder {
    let identity_ids = ColumnPath::new(vec![
        IDENTITIES.to_owned(),
        "list".to_owned(),
        "item".to_owned(),
        "id".to_owned(),
    ]);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_column_dictionary_enabled(ColumnPath::from(KEY), false)
        .set_column_dictionary_enabled(ColumnPath::from(ORD), false)
        .set_column_dictionary_enabled(identity_ids, false)
}

/// One record batch as a store file in memory.
pub fn encode_parquet(
    batch: &RecordBatch,
    row_group_rows: usize,
    path: &object_store::path::Path,
) -> Result<Bytes> {
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(
        &mut buffer,
        batch.schema(),
        Some(store_writer_properties(row_group_rows)),
    )
    .map_err(StoreError::parquet(path))?;
    writer.write(batch).map_err(StoreError::parquet(path))?;
    writer.close().map_err(StoreError::parquet(path))?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{new_null_array, Array, ArrayRef, Int64Array, StringArray, StructArray};
    use arrow::datatypes::{DataType, Field, Fields, Schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// Columns with no value in the first batch are written uncompressed, the others with
    /// zstd; the paths named for nulls match the writer's own (checked against the file).
    #[test]
    fn null_columns_of_an_output_are_left_uncompressed() {
        let inner = Fields::from(vec![
            Field::new("set", DataType::Int64, true),
            Field::new("unset", DataType::Utf8, true),
        ]);
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let map = DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Int64, true),
                ])),
                false,
            )),
            false,
        );
        let s = StructArray::try_new(
            inner.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
                new_null_array(&DataType::Utf8, 2),
            ],
            None,
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("gone", DataType::Utf8, true),
            Field::new("s", DataType::Struct(inner.clone()), true),
            Field::new("nulls", DataType::Struct(inner), true),
            Field::new("l", list.clone(), true),
            Field::new("m", map.clone(), true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            new_null_array(&DataType::Utf8, 2),
            Arc::new(s),
            new_null_array(schema.field(3).data_type(), 2),
            new_null_array(&list, 2),
            new_null_array(&map, 2),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(
            &mut out,
            schema,
            Some(output_writer_properties_for(1024, &batch)),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let reader = SerializedFileReader::new(Bytes::from(out)).unwrap();
        let group = reader.metadata().row_group(0);
        let mut seen = Vec::new();
        for c in group.columns() {
            let path = c.column_path().string();
            // The oracle: a leaf is uncompressed exactly when it holds no value.
            let empty = c.statistics().and_then(|s| s.null_count_opt()) == Some(2);
            assert_eq!(c.compression() == Compression::UNCOMPRESSED, empty, "{path}");
            seen.push((path, empty));
        }
        assert_eq!(seen.iter().filter(|(_, empty)| *empty).count(), 7, "{seen:?}");
        assert_eq!(batch.column(0).null_count(), 0);
    }
}
