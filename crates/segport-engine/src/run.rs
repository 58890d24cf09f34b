//! Evaluating one partition: a k-way merge by profile key over the partition's store files,
//! read a row group at a time, then filters, merge, projection and Parquet encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;
use parquet::schema::types::SchemaDescriptor;
use segport_store::columns::{IDENTITIES, SEGMENTS};
use segport_store::compact::{fragment_schema, with_recency, FileRef};
use segport_store::ingest::output_writer_properties_for;
use segport_store::layout::rows_path;
use segport_store::rowfile::{RowFile, TakeRows};
use segport_store::schema::UnionSchema;
use segport_store::RecordKind;
use serde_json::{json, Map, Value};

use crate::columnar::{self, FastRow};
use crate::merge::{self, Loaded, RowRef};
use crate::plan::{ExportPlan, Precedence};
use crate::prefilter::{self, Selected};
use crate::project::{self, Projection};

/// Why an evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading the store failed (`STORE_READ_ERROR`).
    #[error("cannot read the store: {0}")]
    Store(String),
    /// Encoding the output failed (`OUTPUT_WRITE_ERROR`).
    #[error("cannot encode the output: {0}")]
    Output(String),
    #[error("the export was cancelled")]
    Cancelled,
}

/// A store file to read: where it is on disk, its recency, and its dataset.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub file: FileRef,
    pub local_path: std::path::PathBuf,
    pub dataset: String,
}

/// The files of one partition.
#[derive(Debug, Clone)]
pub struct PartitionInput {
    pub partition: u32,
    pub profiles: Vec<SourceFile>,
    pub events: Vec<SourceFile>,
}

/// A store file opened for one job: its Parquet footer (parsed once, when first needed, and
/// shared by the first pass and the reader) and its row file.
pub(crate) struct OpenFile<'a> {
    pub source: &'a SourceFile,
    metadata: OnceLock<ArrowReaderMetadata>,
    /// Whether rows will be picked from the file (then the page index is loaded with the
    /// footer, for a file without a row file).
    picked: bool,
    /// The file's row file, mapped, when rows will be picked from it and it has one.
    pub rows: Option<RowFile>,
}

impl<'a> OpenFile<'a> {
    /// Opens `source`. When rows will be picked from it (`picked`), maps its row file
    /// ([`segport_store::rowfile`]), from which picked rows are gathered without decompressing
    /// pages and keys are found by binary search; the Parquet footer is then never parsed.
    pub(crate) fn open(source: &'a SourceFile, picked: bool) -> Result<Self, EngineError> {
        let rows = match rows_path(&source.local_path.to_string_lossy()) {
            Some(path) if picked => RowFile::open(std::path::Path::new(&path))
                .map_err(|e| EngineError::Store(segport_model::error::chain(&e)))?,
            _ => None,
        };
        Ok(Self { source, metadata: OnceLock::new(), picked, rows })
    }

    /// The Parquet footer, with the page index when rows are picked from a file without a
    /// row file (pages holding no picked row are then skipped, not decompressed; a whole file
    /// is read faster without it).
    pub(crate) fn metadata(&self) -> Result<&ArrowReaderMetadata, EngineError> {
        if let Some(metadata) = self.metadata.get() {
            return Ok(metadata);
        }
        let source = self.source;
        let file = std::fs::File::open(&source.local_path).map_err(|e| source.error(&e))?;
        let policy = if self.picked && self.rows.is_none() {
            PageIndexPolicy::Optional
        } else {
            PageIndexPolicy::Skip
        };
        let options = ArrowReaderOptions::new().with_page_index_policy(policy);
        let metadata = ArrowReaderMetadata::load(&file, options).map_err(|e| source.error(&e))?;
        Ok(self.metadata.get_or_init(|| metadata))
    }

    /// A reader of the file.
    pub(crate) fn builder(
        &self,
    ) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>, EngineError> {
        let metadata = self.metadata()?.clone();
        let file =
            std::fs::File::open(&self.source.local_path).map_err(|e| self.source.error(&e))?;
        Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata))
    }

    /// The file's row count.
    pub(crate) fn rows(&self) -> Result<usize, EngineError> {
        match &self.rows {
            Some(rows) => Ok(rows.rows()),
            None => Ok(usize::try_from(self.metadata()?.metadata().file_metadata().num_rows())
                .unwrap_or(0)),
        }
    }
}

impl SourceFile {
    /// A store read error about this file.
    pub(crate) fn error(&self, e: &dyn std::fmt::Display) -> EngineError {
        EngineError::Store(format!("{}: {e}", self.file.path))
    }
}

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

/// Where a cursor's batches come from: the Parquet file, or rows gathered from its row file.
enum Batches<'f> {
    Parquet(ParquetRecordBatchReader),
    Rows(TakeRows<'f>),
}

impl Iterator for Batches<'_> {
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Batches::Parquet(reader) => reader.next().map(|b| b.map_err(|e| e.to_string())),
            Batches::Rows(rows) => {
                rows.next().map(|b| b.map_err(|e| segport_model::error::chain(&e)))
            }
        }
    }
}

/// Rows read from one file at a time.
const BATCH_ROWS: usize = 8192;

/// Reads one store file a batch at a time.
struct Cursor<'f> {
    reader: Batches<'f>,
    current: Option<Arc<Loaded>>,
    row: usize,
    file: FileRef,
    schema: SchemaRef,
    rank: usize,
}

impl<'f> Cursor<'f> {
    /// Opens `file` to read the columns of `read` at the `selected` rows: from its row file
    /// when rows are picked and it has one, else from the Parquet file.
    fn open(
        file: &'f OpenFile,
        read: &ReadColumns,
        selected: Selected,
        rank: usize,
    ) -> Result<Self, EngineError> {
        let source = file.source;
        let store_error = |e: &dyn std::fmt::Display| source.error(e);
        let reader = match (selected, &file.rows) {
            (Some(picked), Some(rows)) => {
                let columns: Vec<&str> = rows
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .filter(|name| read.wants(name))
                    .collect();
                let taken = rows
                    .take(&picked, &columns, BATCH_ROWS)
                    .map_err(|e| EngineError::Store(segport_model::error::chain(&e)))?;
                // Only the struct members the projection reaches are gathered, as only those
                // leaves are read from Parquet.
                let selection = read.selection.clone();
                let narrow = move |batch: RecordBatch| match &selection {
                    Some(selection) => narrow_batch(&batch, selection),
                    None => Ok(batch),
                };
                Batches::Rows(taken.narrowed(Box::new(narrow)))
            }
            (selected, _) => {
                let builder = file.builder()?;
                let mask = read.mask(builder.parquet_schema(), builder.schema());
                let mut builder = builder.with_projection(mask).with_batch_size(BATCH_ROWS);
                if let Some(picked) = selected {
                    builder = builder.with_row_selection(row_selection(&picked, file.rows()?));
                }
                Batches::Parquet(builder.build().map_err(|e| store_error(&e))?)
            }
        };
        let schema = &read.schema;
        let mut cursor = Self {
            reader,
            current: None,
            row: 0,
            file: source.file.clone(),
            schema: schema.clone(),
            rank,
        };
        cursor.load()?;
        Ok(cursor)
    }

    fn load(&mut self) -> Result<(), EngineError> {
        self.row = 0;
        // Empty batches are passed over: a loaded batch always has a row at the cursor.
        let next = self.reader.find(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0));
        self.current = match next {
            None => None,
            Some(batch) => {
                let batch =
                    batch.map_err(|e| EngineError::Store(format!("{}: {e}", self.file.path)))?;
                let aligned = with_recency(&batch, &self.file, &self.schema)
                    // With its cause: a job's error message is all an operator sees of it.
                    .map_err(|e| EngineError::Store(segport_model::error::chain(&e)))?;
                Some(Arc::new(Loaded::new(aligned, self.rank)?))
            }
        };
        Ok(())
    }

    fn key(&self) -> Option<&str> {
        self.current.as_ref().map(|l| l.keys.value(self.row))
    }

    /// Takes every row of `key` at the cursor, loading further row groups as needed.
    fn take(
        &mut self,
        key: &str,
        out: &mut Vec<RowRef>,
        cancel: &AtomicBool,
    ) -> Result<(), EngineError> {
        while let Some(loaded) = self.current.clone() {
            if loaded.keys.value(self.row) != key {
                return Ok(());
            }
            out.push(RowRef { loaded: loaded.clone(), row: self.row });
            self.row += 1;
            if self.row == loaded.batch.num_rows() {
                if cancel.load(Ordering::Relaxed) {
                    return Err(EngineError::Cancelled);
                }
                self.load()?;
            }
        }
        Ok(())
    }
}

/// The files the plan reads, with their merge rank: datasets outside a precedence order are
/// ignored for everything.
fn included<'a>(
    files: &'a [SourceFile],
    kind: RecordKind,
    plan: &ExportPlan,
) -> Vec<(&'a SourceFile, usize)> {
    files
        .iter()
        .filter_map(|f| match (&plan.precedence, kind) {
            (Precedence::DatasetOrder(order), RecordKind::Profile) => {
                order.iter().position(|d| *d == f.dataset).map(|rank| (f, rank))
            }
            _ => Some((f, 0)),
        })
        .collect()
}

/// `rows` (ascending) of a file of `total` rows as a Parquet row selection.
fn row_selection(rows: &[usize], total: usize) -> RowSelection {
    let mut ranges = Vec::new();
    for &row in rows {
        prefilter::push_range(&mut ranges, row..row + 1);
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

fn open_all<'f>(
    files: &'f [(OpenFile, usize)],
    selected: Vec<Selected>,
    read: &ReadColumns,
) -> Result<Vec<Cursor<'f>>, EngineError> {
    let mut cursors = Vec::new();
    for ((f, rank), selected) in files.iter().zip(selected) {
        if selected.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let cursor = Cursor::open(f, read, selected, *rank)?;
        if cursor.current.is_some() {
            cursors.push(cursor);
        }
    }
    Ok(cursors)
}

/// Buffers output rows of one batch and encodes them as Parquet.
struct Sink {
    schema: SchemaRef,
    rows: Vec<Value>,
    /// Rows of profiles with fragments, built column by column without JSON.
    fast: Vec<FastRow>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    count: u64,
    by_namespace: BTreeMap<String, u64>,
}

const SINK_ROWS: usize = 4096;

impl Sink {
    fn push(&mut self, row: Value) -> Result<(), EngineError> {
        self.rows.push(row);
        self.count += 1;
        if self.rows.len() >= SINK_ROWS {
            let batch = encode_rows(&self.schema, &self.rows)?;
            self.rows.clear();
            self.write(&batch)?;
        }
        Ok(())
    }

    fn push_fast(&mut self, row: FastRow, projections: &Projections) -> Result<(), EngineError> {
        self.fast.push(row);
        self.count += 1;
        if self.fast.len() >= SINK_ROWS {
            self.flush_fast(projections)?;
        }
        Ok(())
    }

    fn flush_fast(&mut self, projections: &Projections) -> Result<(), EngineError> {
        if self.fast.is_empty() {
            return Ok(());
        }
        // Identities are merged here, once per batch, for the output and the namespace counts.
        let identities = columnar::RowIdentities::of_profiles(&self.fast);
        identities.count_namespaces(&mut self.by_namespace);
        let batch = columnar::encode(
            &self.schema,
            &projections.profile.selection,
            projections.events.as_ref().map(|e| &e.selection),
            &self.fast,
            &identities,
        )?;
        self.fast.clear();
        self.write(&batch)
    }

    fn flush(&mut self, projections: &Projections) -> Result<(), EngineError> {
        self.flush_fast(projections)?;
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = encode_rows(&self.schema, &self.rows)?;
        self.rows.clear();
        self.write(&batch)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        if self.writer.is_none() {
            self.writer = Some(
                ArrowWriter::try_new(
                    Vec::new(),
                    self.schema.clone(),
                    Some(output_writer_properties_for(64 * 1024, batch)),
                )
                .map_err(|e| EngineError::Output(e.to_string()))?,
            );
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(batch).map_err(|e| EngineError::Output(e.to_string()))?;
        }
        Ok(())
    }

    fn finish(mut self, projections: &Projections) -> Result<Finished, EngineError> {
        self.flush(projections)?;
        let file = match self.writer {
            None => None,
            Some(w) => Some((
                Bytes::from(w.into_inner().map_err(|e| EngineError::Output(e.to_string()))?),
                self.count,
            )),
        };
        Ok((file, self.by_namespace))
    }
}

/// A sink's encoded file (with its row count) and its rows by namespace.
type Finished = (Option<(Bytes, u64)>, BTreeMap<String, u64>);

/// JSON rows as a record batch of `schema`.
pub fn encode_rows(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, EngineError> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(|e| EngineError::Output(e.to_string()))?;
    decoder.serialize(rows).map_err(|e| EngineError::Output(e.to_string()))?;
    match decoder.flush().map_err(|e| EngineError::Output(e.to_string()))? {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema.clone())),
    }
}

/// The columns a read needs: the fixed ones always, attributes as the projection needs them,
/// and the schema read batches are aligned to.
#[derive(Debug, Clone)]
pub struct ReadColumns {
    /// Top-level attribute fields to read; `None` reads all.
    attributes: Option<BTreeSet<String>>,
    /// Whether the memberships column is read: only when the output holds them (the segment
    /// filter was decided by the first pass).
    memberships: bool,
    /// Whether the identities column is read: always for profiles; for events only when their
    /// identities reach the output.
    identities: bool,
    /// The attribute leaves to read: `None` reads every leaf of the wanted fields.
    selection: Option<project::Selection>,
    schema: SchemaRef,
}

impl ReadColumns {
    fn new(
        kind: RecordKind,
        schema: &UnionSchema,
        selection: Option<&project::Selection>,
        identities: bool,
    ) -> Self {
        let attributes = selection.filter(|s| !s.all).map(|s| {
            let mut names: BTreeSet<String> =
                s.children.keys().filter(|k| schema.fields.contains_key(*k)).cloned().collect();
            if kind == RecordKind::Event {
                // Events are deduplicated by `_id` and ordered by `timestamp`.
                names.extend(["_id".to_owned(), "timestamp".to_owned()]);
            }
            names
        });
        let narrowed = match &attributes {
            None => schema.clone(),
            Some(names) => UnionSchema {
                fields: schema
                    .fields
                    .iter()
                    .filter(|(k, _)| names.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
        };
        let memberships =
            selection.is_none_or(|s| s.all || s.children.contains_key("segmentMembership"));
        let mut schema = fragment_schema(kind, &narrowed);
        // Columns not read are left out of the aligned batches rather than filled with nulls
        // (the store declares them non-nullable).
        let unread =
            |name: &str| (name == SEGMENTS && !memberships) || (name == IDENTITIES && !identities);
        if schema.fields().iter().any(|f| unread(f.name())) {
            let fields: Vec<_> =
                schema.fields().iter().filter(|f| !unread(f.name())).cloned().collect();
            schema = Arc::new(arrow::datatypes::Schema::new(fields));
        }
        let selection = selection.filter(|s| !s.all).map(|s| {
            let mut s = s.clone();
            if kind == RecordKind::Event {
                for name in ["_id", "timestamp"] {
                    s.children.entry(name.to_owned()).or_default().all = true;
                }
            }
            s
        });
        Self { attributes, memberships, identities, selection, schema }
    }

    fn wants(&self, column: &str) -> bool {
        match column {
            SEGMENTS => self.memberships,
            IDENTITIES => self.identities,
            _ => {
                column.starts_with("__")
                    || self.attributes.as_ref().is_none_or(|a| a.contains(column))
            }
        }
    }

    /// The file's leaf columns to read: internal columns whole, attributes only at the leaves
    /// the selection reaches (a struct read in part comes back with its other members null
    /// once aligned, which the merge and the projection treat as absent).
    fn mask(&self, parquet: &SchemaDescriptor, arrow: &arrow::datatypes::Schema) -> ProjectionMask {
        let mut leaves = Vec::new();
        let mut next = 0;
        for (root, field) in parquet.root_schema().get_fields().iter().enumerate() {
            let count = (next..parquet.num_columns())
                .take_while(|i| parquet.get_column_root_idx(*i) == root)
                .count();
            let range = next..next + count;
            next += count;
            let name = field.name();
            if !self.wants(name) {
                continue;
            }
            // The Arrow schema of a Parquet file lists its root fields in the same order; the
            // search by name is a fallback (a wide file has thousands of roots).
            let field = match arrow.fields().get(root) {
                Some(f) if f.name() == name => Some(f.as_ref()),
                _ => arrow.field_with_name(name).ok(),
            };
            let picked = match (&self.selection, field) {
                (Some(selection), Some(f)) if !name.starts_with("__") => {
                    let mut picked = Vec::with_capacity(count);
                    leaf_picks(f.data_type(), selection.children.get(name), &mut picked);
                    // A type whose leaves the walk does not line up with is read whole.
                    (picked.len() == count).then_some(picked)
                }
                _ => None,
            };
            match picked {
                Some(picked) => {
                    leaves.extend(range.zip(picked).filter(|(_, p)| *p).map(|(i, _)| i))
                }
                None => leaves.extend(range),
            }
        }
        ProjectionMask::leaves(parquet, leaves)
    }
}

/// `batch` with its attribute columns narrowed to what `selection` reaches ([`narrow`]);
/// internal columns stay whole.
fn narrow_batch(
    batch: &RecordBatch,
    selection: &project::Selection,
) -> segport_store::Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let column = match selection.children.get(field.name()) {
            Some(s) if !field.name().starts_with("__") => narrow(column, s)?,
            _ => column.clone(),
        };
        fields.push(field.as_ref().clone().with_data_type(column.data_type().clone()));
        columns.push(column);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
        &options,
    )
    .map_err(segport_store::StoreError::arrow("narrowing a batch"))
}

/// `array` without the struct members `selection` does not reach, without copying (the same
/// rule as [`leaf_picks`]: lists are transparent, maps and leaves are kept whole). A struct
/// left without members keeps its length and validity; alignment fills its members back in
/// as nulls.
fn narrow(array: &ArrayRef, selection: &project::Selection) -> segport_store::Result<ArrayRef> {
    if selection.all {
        return Ok(array.clone());
    }
    let error = segport_store::StoreError::arrow("narrowing a column");
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut kept_fields = Vec::new();
            let mut kept = Vec::new();
            for (f, child) in fields.iter().zip(s.columns()) {
                if let Some(sel) = selection.children.get(f.name()) {
                    let child = narrow(child, sel)?;
                    kept_fields.push(f.as_ref().clone().with_data_type(child.data_type().clone()));
                    kept.push(child);
                }
            }
            if kept.is_empty() {
                return Ok(Arc::new(StructArray::new_empty_fields(s.len(), s.nulls().cloned())));
            }
            let narrowed = StructArray::try_new(kept_fields.into(), kept, s.nulls().cloned())
                .map_err(error)?;
            Ok(Arc::new(narrowed))
        }
        DataType::List(item) => {
            let l = array.as_list::<i32>();
            let values = narrow(l.values(), selection)?;
            let item = Arc::new(item.as_ref().clone().with_data_type(values.data_type().clone()));
            let narrowed =
                ListArray::try_new(item, l.offsets().clone(), values, l.nulls().cloned())
                    .map_err(error)?;
            Ok(Arc::new(narrowed))
        }
        _ => Ok(array.clone()),
    }
}

/// Whether each leaf of a value of type `data_type` is reached by `selection`, in the order of
/// the Parquet leaves. Lists are transparent to selections; a map is read whole when anything
/// of it is selected.
fn leaf_picks(data_type: &DataType, selection: Option<&project::Selection>, out: &mut Vec<bool>) {
    match data_type {
        DataType::Struct(fields) => {
            for f in fields {
                let child =
                    selection.and_then(|s| if s.all { Some(s) } else { s.children.get(f.name()) });
                leaf_picks(f.data_type(), child, out);
            }
        }
        DataType::List(item) | DataType::LargeList(item) => {
            leaf_picks(item.data_type(), selection, out)
        }
        DataType::Map(entries, _) => {
            let whole = project::Selection { all: true, children: BTreeMap::new() };
            leaf_picks(entries.data_type(), selection.map(|_| &whole), out)
        }
        _ => out.push(selection.is_some()),
    }
}

/// The projections of a plan: profile rows, and the event rows inside them.
pub struct Projections {
    pub profile: Projection,
    pub events: Option<Projection>,
    pub schema: SchemaRef,
    profile_read: ReadColumns,
    event_read: ReadColumns,
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
            .map(|(f, rank)| Ok((OpenFile::open(f, page_index)?, rank)))
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
        .map(|_| Sink {
            schema: projections.schema.clone(),
            rows: Vec::new(),
            fast: Vec::new(),
            writer: None,
            count: 0,
            by_namespace: BTreeMap::new(),
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
        let (file, by_namespace) = sink.finish(projections)?;
        output.files.push(file);
        output.by_namespace.push(by_namespace);
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
        let mut fast = Some(FastRow {
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
                sink.push_fast(row, projections)?;
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
