//! The source stage: a partition's store files, opened once per job, and a cursor over each
//! that reads it a batch at a time, from its row file when rows are picked and it has one, else
//! from Parquet, aligned to the fragment schema with each row's recency.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::AsArray;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::PageIndexPolicy;
use segport_store::columns::KEY;
use segport_store::compact::with_recency;
use segport_store::rowfile::{RowFile, TakeRows};
use segport_store::snapshot::FileRef;
pub use segport_store::snapshot::SourceFile;
use segport_store::RecordKind;

use crate::columns::{narrow_batch, ReadColumns};
use crate::error::EngineError;
use crate::merge::{ReadBatch, RowRef};
use crate::plan::{ExportPlan, Precedence};

/// The rows of a file a read takes: `None` for every row, else their positions, ascending.
pub(crate) type Selected = Option<Vec<usize>>;

/// The files of one partition, and the profile keys of it a run covers.
#[derive(Debug, Clone)]
pub struct PartitionInput {
    pub partition: u32,
    pub profiles: Vec<SourceFile>,
    pub events: Vec<SourceFile>,
    pub keys: KeyRange,
}

impl PartitionInput {
    /// `files` (each with its partition and kind) grouped into the inputs of their partitions,
    /// in partition order, each covering `keys`.
    pub fn group(
        files: impl IntoIterator<Item = (u32, RecordKind, SourceFile)>,
        keys: &KeyRange,
    ) -> Vec<PartitionInput> {
        let mut inputs: std::collections::BTreeMap<u32, PartitionInput> = Default::default();
        for (partition, kind, source) in files {
            let input = inputs.entry(partition).or_insert_with(|| PartitionInput {
                partition,
                profiles: Vec::new(),
                events: Vec::new(),
                keys: keys.clone(),
            });
            match kind {
                RecordKind::Profile => input.profiles.push(source),
                RecordKind::Event => input.events.push(source),
            }
        }
        inputs.into_values().collect()
    }
}

/// A range of profile keys: from `from` (included) to `to` (excluded); `None` leaves that end
/// open. Store files are sorted by key, so a range is a run of consecutive rows in each file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.from.as_deref().is_none_or(|from| from <= key)
            && self.to.as_deref().is_none_or(|to| key < to)
    }
}

/// A store file opened for one job: its Parquet footer (parsed once, when first needed, and
/// shared by the first pass and the reader) and its row file.
pub(crate) struct OpenFile<'a> {
    pub source: &'a SourceFile,
    metadata: OnceLock<ArrowReaderMetadata>,
    /// Whether rows will be picked from the file (then the page index is loaded with the
    /// footer, for a file without a row file).
    picked: bool,
    /// The file's row file, mapped, when rows will be picked from it or a key range bounds
    /// it, and it has one.
    pub rows: Option<std::sync::Arc<RowFile>>,
    /// The rows of the file inside the run's key range; `None` when the range is all keys.
    pub(crate) bounds: Option<Range<usize>>,
}

impl<'a> OpenFile<'a> {
    /// Opens `source`. When rows will be picked from it (`picked`), maps its row file
    /// ([`segport_store::rowfile`]), from which picked rows are gathered without decompressing
    /// pages and keys are found by binary search; the Parquet footer is then never parsed.
    /// Only the rows with keys in `keys` are read.
    pub(crate) fn open(
        source: &'a SourceFile,
        picked: bool,
        keys: &KeyRange,
    ) -> Result<Self, EngineError> {
        let wanted = picked || !keys.is_all();
        let rows = if wanted { source.open_rows().map_err(EngineError::store)? } else { None };
        let mut file = Self { source, metadata: OnceLock::new(), picked, rows, bounds: None };
        if !keys.is_all() {
            file.bounds = Some(file.rows_in(keys)?);
        }
        Ok(file)
    }

    /// The rows whose keys are in `keys`: found by binary search in the row file, else by
    /// reading the file's key column.
    fn rows_in(&self, keys: &KeyRange) -> Result<Range<usize>, EngineError> {
        if let Some(rows) = &self.rows {
            let before = |key: &Option<String>, none: usize| match key {
                Some(k) => rows.rows_before(k).map_err(EngineError::store),
                None => Ok(none),
            };
            return Ok(before(&keys.from, 0)?..before(&keys.to, rows.rows())?);
        }
        let builder = self.builder()?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), [KEY]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| self.source.error(&e))?;
        let (mut start, mut end, mut row) = (0, 0, 0);
        for batch in reader {
            let batch = batch.map_err(|e| self.source.error(&e))?;
            let column = batch.column_by_name(KEY).and_then(|c| c.as_string_opt::<i32>());
            let column = column.ok_or_else(|| self.source.error(&"no key column"))?;
            for key in column.iter().flatten() {
                row += 1;
                if keys.from.as_deref().is_some_and(|from| key < from) {
                    start = row;
                }
                if keys.to.as_deref().is_none_or(|to| key < to) {
                    end = row;
                }
            }
        }
        Ok(start..end.max(start))
    }

    /// The Parquet footer, with the page index when rows are picked from a file without a
    /// row file (pages holding no picked row are then skipped, not decompressed; a whole file
    /// is read faster without it).
    pub(crate) fn metadata(&self) -> Result<&ArrowReaderMetadata, EngineError> {
        if let Some(metadata) = self.metadata.get() {
            return Ok(metadata);
        }
        let source = self.source;
        let file = source.open_parquet().map_err(|e| source.error(&e))?;
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
        let file = self.source.open_parquet().map_err(|e| self.source.error(&e))?;
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

/// Errors about a source file.
pub(crate) trait SourceError {
    /// A store read error about this file.
    fn error(&self, e: &dyn std::fmt::Display) -> EngineError;
}

impl SourceError for SourceFile {
    fn error(&self, e: &dyn std::fmt::Display) -> EngineError {
        EngineError::store(format!("{}: {e}", self.file.path))
    }
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
pub(crate) struct Cursor<'f> {
    reader: Batches<'f>,
    pub(crate) current: Option<Arc<ReadBatch>>,
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
                let taken = rows.take(&picked, &columns, BATCH_ROWS).map_err(EngineError::store)?;
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
                } else if let Some(bounds) = &file.bounds {
                    let ranges = std::iter::once(bounds.clone());
                    let selection = RowSelection::from_consecutive_ranges(ranges, file.rows()?);
                    builder = builder.with_row_selection(selection);
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
                    batch.map_err(|e| EngineError::store(format!("{}: {e}", self.file.path)))?;
                let aligned = with_recency(&batch, &self.file, &self.schema)
                    // With its cause: a job's error message is all an operator sees of it.
                    .map_err(EngineError::store)?;
                Some(Arc::new(ReadBatch::new(aligned, self.rank)?))
            }
        };
        Ok(())
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.current.as_ref().map(|l| l.keys.value(self.row))
    }

    /// Takes every row of `key` at the cursor, loading further row groups as needed.
    pub(crate) fn take(
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
pub(crate) fn included<'a>(
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
        push_range(&mut ranges, row..row + 1);
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

pub(crate) fn open_all<'f>(
    files: &'f [(OpenFile, usize)],
    selected: Vec<Selected>,
    read: &ReadColumns,
) -> Result<Vec<Cursor<'f>>, EngineError> {
    let mut cursors = Vec::new();
    for ((f, rank), selected) in files.iter().zip(selected) {
        // Only the rows inside the run's key range.
        let selected = match (&f.bounds, selected) {
            (Some(bounds), Some(picked)) => {
                Some(picked.into_iter().filter(|row| bounds.contains(row)).collect())
            }
            (_, selected) => selected,
        };
        if selected.as_ref().is_some_and(Vec::is_empty)
            || f.bounds.as_ref().is_some_and(Range::is_empty)
        {
            continue;
        }
        let cursor = Cursor::open(f, read, selected, *rank)?;
        if cursor.current.is_some() {
            cursors.push(cursor);
        }
    }
    Ok(cursors)
}

/// Adds `range` to `ranges`, joining it to the last one when they touch.
pub(crate) fn push_range(ranges: &mut Vec<Range<usize>>, range: Range<usize>) {
    match ranges.last_mut() {
        Some(r) if r.end == range.start => r.end = range.end,
        _ => ranges.push(range),
    }
}
