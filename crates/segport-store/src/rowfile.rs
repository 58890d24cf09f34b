//! Row files: an uncompressed Arrow IPC copy of a store file, written next to it and read
//! through a memory map, so that a reader wanting a few rows reads those rows and nothing else.
//!
//! A Parquet page must be decompressed and decoded whole to yield any of its rows, and the
//! profiles a segment selects are spread over every page of a file (a 5% segment puts a dozen
//! matches on every 2,048-row page): an export of a sparse selection pays for the whole column.
//! In a row file every value of every row is addressable in place: the key column, sorted as
//! the store file is, is binary-searched for the profiles a job wants, and the projected columns
//! are gathered (Arrow `take`) at exactly the selected rows, touching only the memory pages
//! they sit on. Full scans keep reading the compressed Parquet file.
//!
//! A row file is derived data like the membership index ([`crate::index`]): written before its
//! data file, removed with it, never listed in the manifest; readers fall back to the Parquet
//! file when it is missing (stores written before row files, or a storage root that is not
//! local). Dictionary-encoded columns are stored with their plain values (an IPC file cannot
//! change a dictionary from batch to batch); readers align them back ([`crate::align`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::ipc::reader::FileDecoder;
use arrow::ipc::writer::FileWriter;

use crate::align::align_batch;
use crate::chunked::ChunkedWriter;
use crate::columns::KEY;
pub use crate::mapped::MappedFile;
use crate::{Result, StoreError};

/// `data_type` with every dictionary replaced by its value type.
fn plain(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, value) => plain(value),
        DataType::Struct(fields) => DataType::Struct(plain_fields(fields)),
        DataType::List(item) => DataType::List(Arc::new(plain_field(item))),
        DataType::LargeList(item) => DataType::LargeList(Arc::new(plain_field(item))),
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(plain_field(entries)), *sorted),
        other => other.clone(),
    }
}

fn plain_field(field: &Field) -> Field {
    field.clone().with_data_type(plain(field.data_type()))
}

fn plain_fields(fields: &Fields) -> Fields {
    fields.iter().map(|f| plain_field(f)).collect()
}

/// Writes a row file a batch at a time, in the data file's row order, into a temporary file
/// that [`RowFileWriter::finish`] renames into place: a row file is whole or absent.
pub struct RowFileWriter {
    writer: FileWriter<ChunkedWriter<std::fs::File>>,
    schema: SchemaRef,
    temporary: PathBuf,
    path: PathBuf,
    last_key: Option<String>,
    /// Batches written but not yet in the file, gathered into one of [`BATCH_ROWS`] rows.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    batch_rows: usize,
    /// What readers need to know of each batch without decoding it (see [`Directory`]).
    directory: Directory,
}

/// The fewest rows of a row file's batches (but the last; a batch written whole may make one
/// larger). A reader decodes the header of every batch
/// it gathers rows from, and a header lists every column's buffers (events have dozens): few
/// large batches cost less than many small ones, and nothing reads a batch whole.
const BATCH_ROWS: usize = 65_536;

/// The footer metadata entry holding a row file's [`Directory`].
const DIRECTORY: &str = "segport.directory";

/// Each batch's row count and first and last key, written in the row file's footer: a reader
/// opening the file finds the batches holding the keys it wants from the footer alone, and
/// decodes only those batches' keys. (A unit of a large partition wants a fifth of it; decoding
/// every batch's keys at every opening was a tenth of such an export's time.)
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Directory {
    rows: Vec<usize>,
    first: Vec<String>,
    last: Vec<String>,
}

impl Directory {
    /// The directory in `file`'s footer, when it has one that fits the file (files written
    /// before directories were have none).
    fn of(file: &MappedFile) -> Option<Self> {
        let directory: Self = serde_json::from_str(file.metadata(DIRECTORY)?).ok()?;
        let n = file.len();
        let fits = directory.rows.len() == n
            && directory.first.len() == n
            && directory.last.len() == n
            && directory.rows.iter().all(|r| *r > 0);
        fits.then_some(directory)
    }
}

impl RowFileWriter {
    /// Starts the row file at `path` (a local file) for batches of `schema`.
    pub fn create(path: &Path, schema: &Schema) -> Result<Self> {
        let error = |e: &dyn std::fmt::Display| {
            StoreError::Location(format!("cannot write row file {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| error(&e))?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.tmp", std::process::id()));
        let temporary = path.with_file_name(name);
        let file = std::fs::File::create(&temporary).map_err(|e| error(&e))?;
        let schema = Arc::new(Schema::new(
            schema.fields().iter().map(|f| plain_field(f)).collect::<Fields>(),
        ));
        // Written in large chunks: the file is read through a memory map, page by page, and
        // costs its readers less per page in large folios (see `crate::chunked`).
        let writer = FileWriter::try_new(ChunkedWriter::new(file), &schema)
            .map_err(StoreError::arrow("starting a row file"))?;
        Ok(Self {
            writer,
            schema,
            temporary,
            path: path.to_owned(),
            last_key: None,
            pending: Vec::new(),
            pending_rows: 0,
            batch_rows: BATCH_ROWS,
            directory: Directory::default(),
        })
    }

    /// Gathers the batches written into batches of at least `rows` rows (default
    /// [`BATCH_ROWS`]); 1 keeps them as written.
    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// Appends `batch`, whose rows follow the previous batches' in key order.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = batch
            .column_by_name(KEY)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| StoreError::Schema("the key column is missing".into()))?;
        // Readers binary-search the keys: a row file is sorted or not written.
        let mut previous = self.last_key.as_deref();
        for key in keys.iter().flatten() {
            if previous.is_some_and(|p| p > key) {
                return Err(StoreError::Schema(format!(
                    "row file {}: rows out of key order",
                    self.path.display()
                )));
            }
            previous = Some(key);
        }
        self.last_key = previous.map(str::to_owned);
        self.pending.push(align_batch(batch, &self.schema)?);
        self.pending_rows += batch.num_rows();
        if self.pending_rows >= self.batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending batches as one.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = match self.pending.as_slice() {
            [one] => one.clone(),
            many => arrow::compute::concat_batches(&self.schema, many)
                .map_err(StoreError::arrow("gathering a row file's batch"))?,
        };
        self.pending.clear();
        self.pending_rows = 0;
        self.writer.write(&batch).map_err(StoreError::arrow("writing a row file"))?;
        let keys = batch
            .column_by_name(KEY)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| StoreError::Schema("the key column is missing".into()))?;
        self.directory.rows.push(batch.num_rows());
        self.directory.first.push(keys.value(0).to_owned());
        self.directory.last.push(keys.value(batch.num_rows() - 1).to_owned());
        Ok(())
    }

    /// Completes the file and moves it into place.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        let error = |e: &dyn std::fmt::Display| {
            StoreError::Location(format!("cannot write row file {}: {e}", self.path.display()))
        };
        let directory = serde_json::to_string(&self.directory).map_err(|e| error(&e))?;
        self.writer.write_metadata(DIRECTORY, directory);
        self.writer.finish().map_err(StoreError::arrow("finishing a row file"))?;
        self.writer.get_mut().flush().map_err(|e| error(&e))?;
        // On disk before it takes its name: readers map row files without validating them,
        // so a crash must leave the file whole or absent, not torn under its final name.
        self.writer.get_ref().get_ref().sync_all().map_err(|e| error(&e))?;
        std::fs::rename(&self.temporary, &self.path).map_err(|e| error(&e))
    }
}

impl Drop for RowFileWriter {
    fn drop(&mut self) {
        // Left unfinished (an error elsewhere): no temporary file stays behind. After `finish`
        // the temporary name no longer exists and this does nothing.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Writes `batch` (sorted by key) as the row file at `path`.
pub fn write(path: &Path, batch: &RecordBatch) -> Result<()> {
    let mut writer = RowFileWriter::create(path, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()
}

/// A row file, memory-mapped.
pub struct RowFile {
    /// The mapped file (its path and schema), to give back the pages of batches done with.
    file: MappedFile,
    /// Each batch's key column, decoded when first searched. The rest of a batch is decoded
    /// only when rows are taken from it, and only the columns taken: a wide file (events have
    /// dozens of leaf columns) opened for a few rows pays for the keys it searches, not for
    /// every column of every batch.
    keys: Vec<OnceLock<StringArray>>,
    /// Each batch's first and last key; `None` for an empty batch.
    bounds: Vec<Option<(Box<str>, Box<str>)>>,
    /// The file's row of each batch's first row, and the file's row count after the last.
    starts: Vec<usize>,
}

impl std::fmt::Debug for RowFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowFile")
            .field("path", &self.file.path)
            .field("rows", &self.rows())
            .finish()
    }
}

impl RowFile {
    /// Opens the row file at `path`, a file this store wrote (see [`crate::snapshot`]), mapped
    /// without validation; `None` when there is none. Its footer's directory says where each
    /// batch's keys start and end; a file without one (written before directories were) has
    /// every batch's keys decoded now instead.
    pub(crate) fn open_trusted(path: &Path) -> Result<Option<Self>> {
        let Some(file) = MappedFile::open_trusted(path)? else { return Ok(None) };
        let mut starts = vec![0];
        let (keys, bounds) =
            match Directory::of(&file) {
                Some(directory) => {
                    for rows in &directory.rows {
                        starts.push(starts[starts.len() - 1] + rows);
                    }
                    let bounds = directory
                        .first
                        .into_iter()
                        .zip(directory.last)
                        .map(|(first, last)| Some((first.into(), last.into())))
                        .collect();
                    ((0..file.len()).map(|_| OnceLock::new()).collect(), bounds)
                }
                None => {
                    let decoder = Self::key_decoder(&file)?;
                    let (mut keys, mut bounds) = (Vec::new(), Vec::new());
                    for i in 0..file.len() {
                        let column = Self::decode_keys(&file, &decoder, i)?;
                        starts.push(starts[i] + column.len());
                        bounds.push((!column.is_empty()).then(|| {
                            (column.value(0).into(), column.value(column.len() - 1).into())
                        }));
                        keys.push(OnceLock::from(column));
                        // Decoding touched the batch's header only, which is not read again.
                        // Given back as the decoding goes: the page cache maps a file held in
                        // large folios a whole folio at a time, so every header touched would
                        // keep megabytes of it mapped.
                        file.passed(i);
                    }
                    (keys, bounds)
                }
            };
        Ok(Some(Self { file, keys, bounds, starts }))
    }

    /// A decoder of the key column alone.
    fn key_decoder(file: &MappedFile) -> Result<FileDecoder> {
        let key = file.schema.index_of(KEY).map_err(|_| Self::no_key(file))?;
        Ok(file.projected(vec![key]))
    }

    fn no_key(file: &MappedFile) -> StoreError {
        StoreError::Schema(format!("row file {}: no key column", file.path.display()))
    }

    /// Batch `i`'s key column.
    fn decode_keys(file: &MappedFile, decoder: &FileDecoder, i: usize) -> Result<StringArray> {
        let batch = file.batch_with(decoder, i)?;
        let column = batch.column(0).as_string_opt::<i32>().ok_or_else(|| Self::no_key(file))?;
        Ok(column.clone())
    }

    /// Batch `b`'s key column, decoded on first use.
    fn keys(&self, b: usize) -> Result<&StringArray> {
        if let Some(keys) = self.keys[b].get() {
            return Ok(keys);
        }
        let keys = Self::decode_keys(&self.file, &Self::key_decoder(&self.file)?, b)?;
        self.check_rows(b, keys.len())?;
        // Two readers decoding it at once keep the first one's (both are the same).
        Ok(self.keys[b].get_or_init(|| keys))
    }

    /// How many rows batch `b` holds.
    fn batch_rows(&self, b: usize) -> usize {
        self.starts[b + 1] - self.starts[b]
    }

    /// Checks that batch `b`, decoded, holds the `rows` rows the directory says. The directory
    /// is the file's own, but a batch that disagrees with it is an error, not rows read past
    /// its end.
    fn check_rows(&self, b: usize, rows: usize) -> Result<()> {
        if rows == self.batch_rows(b) {
            return Ok(());
        }
        Err(StoreError::Schema(format!(
            "row file {}: batch {b} holds {rows} rows, its directory says {}",
            self.file.path.display(),
            self.batch_rows(b)
        )))
    }

    /// The first batch whose last key is not before `key` (empty batches count as before it).
    fn first_batch_reaching(&self, key: &str) -> usize {
        self.bounds.partition_point(|b| b.as_ref().is_none_or(|(_, last)| &**last < key))
    }

    pub fn rows(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.file.schema
    }

    /// How many rows have a key before `key` (the file's first row with a key at or after it).
    pub fn rows_before(&self, key: &str) -> Result<usize> {
        // The first batch whose last key is not before `key` holds the answer.
        let batch = self.first_batch_reaching(key);
        if batch == self.bounds.len() {
            return Ok(self.rows());
        }
        let keys = self.keys(batch)?;
        let n = keys.len();
        Ok(self.starts[batch] + partition_point(keys, 0, n, n.max(1), |k| k < key))
    }

    /// The rows whose key is one of `wanted` (sorted), in file order. Keys are sorted in the
    /// file (the writer refuses otherwise), so each wanted key costs a search onward from the
    /// previous one.
    pub fn rows_of(&self, wanted: &[&str]) -> Result<Vec<usize>> {
        let mut found = Vec::new();
        let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
            return Ok(found);
        };
        // Only the batches whose keys reach from the first wanted key to the last: a unit of a
        // large partition wants the keys of its own range, a stretch of the file.
        let from = self.first_batch_reaching(first);
        let to = self
            .bounds
            .partition_point(|b| b.as_ref().is_none_or(|(first, _)| &**first <= *last))
            .max(from);
        let mut held_from = from;
        for b in from..to {
            let Some((low_key, high_key)) = &self.bounds[b] else { continue };
            // Only the wanted keys within this batch's range; a batch holding none of them is
            // not decoded.
            let from = wanted.partition_point(|k| *k < &**low_key);
            let to = wanted.partition_point(|k| *k <= &**high_key);
            if from == to {
                continue;
            }
            let (keys, start) = (self.keys(b)?, self.starts[b]);
            let n = keys.len();
            let mut low = 0;
            for (i, key) in wanted[from..to].iter().enumerate() {
                // Galloped to from the last one found, in first steps of about half the
                // expected distance to it: the probes stay near the key (a segment's profiles
                // are hundreds of rows apart, and a binary search of the whole rest would miss
                // the cache, and touch a new page, at nearly every probe).
                let gap = (n - low) / (to - from - i);
                low += partition_point(keys, low, n, (gap / 2).max(1), |k| k < *key);
                let mut row = low;
                while row < n && keys.value(row) == *key {
                    found.push(start + row);
                    row += 1;
                }
                low = row;
            }
            // The keys probed are not read again by this search.
            held_from = self.file.passed_stretch(held_from..b + 1);
        }
        // What is left, less than a stretch, goes with the mapping (see `TakeRows`).
        Ok(found)
    }

    /// The columns named `columns` (those the file has, in the file's order) at `rows`
    /// (ascending), in batches of at most `batch_rows` rows.
    pub fn take(
        &self,
        rows: &[usize],
        columns: &[&str],
        batch_rows: usize,
    ) -> Result<TakeRows<'_>> {
        let projection: Vec<usize> = self
            .file
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| columns.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|r| *r >= self.rows()) {
            return Err(StoreError::Schema(format!(
                "row file {}: rows to take must be ascending and within its {} rows",
                self.file.path.display(),
                self.rows()
            )));
        }
        Ok(TakeRows {
            file: self,
            rows: rows.to_vec(),
            at: 0,
            decoder: self.file.projected(projection),
            batch_rows,
            narrow: None,
            current: None,
            held_from: 0,
        })
    }
}

/// The first index of `[from, to)` whose key fails `before` (keys failing it come after those
/// passing it), counted from `from`: steps of `step`, `2 × step`, `4 × step`, … from `from`
/// until a key fails, then a binary search in the last step. The number of probes grows with
/// the logarithm of the distance to the answer, not of the range.
fn partition_point(
    keys: &StringArray,
    from: usize,
    to: usize,
    mut step: usize,
    before: impl Fn(&str) -> bool,
) -> usize {
    let mut low = from;
    let mut high = loop {
        let probe = low + step - 1;
        if probe >= to {
            break to;
        }
        if !before(keys.value(probe)) {
            break probe;
        }
        low = probe + 1;
        step *= 2;
    };
    while low < high {
        let mid = low + (high - low) / 2;
        if before(keys.value(mid)) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low - from
}

/// Batches of rows gathered from a row file ([`RowFile::take`]).
pub struct TakeRows<'a> {
    file: &'a RowFile,
    rows: Vec<usize>,
    at: usize,
    /// Decodes the projected columns of a batch.
    decoder: FileDecoder,
    batch_rows: usize,
    narrow: Option<Narrow<'a>>,
    /// The batch rows are being gathered from (its number, and its projected and narrowed
    /// columns). Rows come out as copies, so nothing points into the batches passed.
    current: Option<(usize, RecordBatch)>,
    /// The first batch whose pages have not been given back: those of the batches passed are
    /// given back a stretch at a time (see [`MappedFile::passed_stretch`]).
    held_from: usize,
}

/// Narrows a projected batch before rows are gathered from it (e.g. to the struct members a
/// reader wants); it must not copy.
pub type Narrow<'a> = Box<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + 'a>;

impl<'a> TakeRows<'a> {
    /// Narrows each projected batch with `narrow` before gathering from it, so that only what
    /// is kept is copied (and its memory touched).
    pub fn narrowed(mut self, narrow: Narrow<'a>) -> Self {
        self.narrow = Some(narrow);
        self
    }
}

impl Iterator for TakeRows<'_> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(&first) = self.rows.get(self.at) else {
            // The pages of the last batches passed, less than a stretch, are left to the
            // unmapping when the job's unit closes the file: giving them back now costs the
            // other cores a TLB flush for every file gathered from, where the unmapping flushes
            // once for all of them. A reader holds at most a stretch more per open file.
            self.current = None;
            return None;
        };
        // The batch holding the next row, and the rows of it in this chunk.
        let b = self.file.starts.partition_point(|s| *s <= first).saturating_sub(1);
        if self.current.as_ref().is_none_or(|(at, _)| *at != b) {
            match self.current.take() {
                Some((done, _)) => {
                    self.held_from = self.file.file.passed_stretch(self.held_from..done + 1);
                }
                None => self.held_from = b,
            }
            let decoded = self.file.file.batch_with(&self.decoder, b).and_then(|projected| {
                match &self.narrow {
                    Some(narrow) => narrow(projected),
                    None => Ok(projected),
                }
            });
            let checked = decoded.and_then(|batch| {
                self.file.check_rows(b, batch.num_rows())?;
                Ok(batch)
            });
            match checked {
                Ok(batch) => self.current = Some((b, batch)),
                Err(e) => return Some(Err(e)),
            }
        }
        let (_, batch) = self.current.as_ref()?;
        let start = self.file.starts[b];
        let end = self.file.starts[b + 1];
        let chunk: Vec<u32> = self.rows[self.at..]
            .iter()
            .take(self.batch_rows.max(1))
            .take_while(|r| **r < end)
            .map(|r| (r - start) as u32)
            .collect();
        self.at += chunk.len();
        Some(
            crate::gather::take_rows(batch, &UInt32Array::from(chunk))
                .map_err(StoreError::arrow("gathering rows of a row file")),
        )
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, DictionaryArray, Int64Array};
    use arrow::datatypes::Int32Type;

    use super::*;

    fn batch(keys: &[&str], values: &[i64]) -> RecordBatch {
        let kinds: DictionaryArray<Int32Type> =
            keys.iter().map(|k| if k.ends_with('1') { "one" } else { "other" }).collect();
        RecordBatch::try_from_iter([
            (KEY, Arc::new(StringArray::from(keys.to_vec())) as ArrayRef),
            ("value", Arc::new(Int64Array::from(values.to_vec())) as ArrayRef),
            ("kind", Arc::new(kinds) as ArrayRef),
        ])
        .unwrap()
    }

    /// Writes `batches` as a row file at `path` the way files were written before they had a
    /// directory: plain Arrow IPC, dictionaries stored plain.
    fn write_without_directory(path: &Path, batches: &[RecordBatch], metadata: Option<&str>) {
        let schema = Schema::new(
            batches[0].schema().fields().iter().map(|f| plain_field(f)).collect::<Fields>(),
        );
        let mut writer =
            FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema).unwrap();
        for b in batches {
            writer.write(&align_batch(b, &Arc::new(schema.clone())).unwrap()).unwrap();
        }
        if let Some(directory) = metadata {
            writer.write_metadata(DIRECTORY, directory);
        }
        writer.finish().unwrap();
    }

    /// How many batches of `file` have had their keys decoded.
    fn decoded(file: &RowFile) -> usize {
        file.keys.iter().filter(|k| k.get().is_some()).count()
    }

    #[test]
    fn finds_and_gathers_rows_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p=0/f.rows.arrow");
        let batches =
            [batch(&["a", "b", "b", "d"], &[0, 1, 2, 3]), batch(&["d", "e1", "g"], &[4, 5, 6])];
        let mut writer = RowFileWriter::create(&path, &batches[0].schema()).unwrap();
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
        // Only the finished file is in the folder.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        // A file of an older store, without a directory, is read the same way.
        let old = dir.path().join("old.rows.arrow");
        write_without_directory(&old, &batches, None);
        for path in [path, old] {
            finds_and_gathers(&RowFile::open_trusted(&path).unwrap().unwrap());
        }
    }

    fn finds_and_gathers(file: &RowFile) {
        assert_eq!(file.rows(), 7);
        // A naive oracle: every row whose key is wanted.
        let all = ["a", "b", "b", "d", "d", "e1", "g"];
        for wanted in [vec!["b", "d"], vec!["0", "c", "e1", "z"], vec![], vec!["a", "g"]] {
            let expected: Vec<usize> =
                (0..all.len()).filter(|i| wanted.contains(&all[*i])).collect();
            assert_eq!(file.rows_of(&wanted).unwrap(), expected, "{wanted:?}");
        }
        // Rows before a key, as a naive count finds them, at and between keys and past both ends.
        for key in ["", "a", "a0", "b", "c", "d", "d0", "e1", "f", "g", "h"] {
            let expected = all.iter().filter(|k| **k < key).count();
            assert_eq!(file.rows_before(key).unwrap(), expected, "{key:?}");
        }

        let taken: Vec<RecordBatch> =
            file.take(&[1, 3, 4, 5], &["value", "kind"], 2).unwrap().map(Result::unwrap).collect();
        let values: Vec<i64> = taken
            .iter()
            .flat_map(|b| {
                b.column(0).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec()
            })
            .collect();
        assert_eq!(values, [1, 3, 4, 5]);
        // Batches never span two of the file's batches, nor exceed the size asked for.
        assert_eq!(taken.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(taken[1].column(1).as_string::<i32>().value(1), "one");
        assert!(file.take(&[3, 1], &["value"], 2).is_err());
        assert!(file.take(&[7], &["value"], 2).is_err());
    }

    /// Writes the 1,000 rows of `keys` (values 0 to 999) as ten batches of 100 into a row file
    /// of batches of `batch_rows` rows at `path`, and opens it.
    fn ten_batches(path: &Path, keys: &[&str], batch_rows: usize) -> RowFile {
        let values: Vec<i64> = (0..1000).collect();
        let mut writer = RowFileWriter::create(path, &batch(&keys[..1], &values[..1]).schema())
            .unwrap()
            .with_batch_rows(batch_rows);
        for b in 0..10 {
            writer.write(&batch(&keys[b * 100..][..100], &values[b * 100..][..100])).unwrap();
        }
        writer.finish().unwrap();
        RowFile::open_trusted(path).unwrap().unwrap()
    }

    #[test]
    fn only_the_batches_a_reader_reaches_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<String> = (0..1000).map(|i| format!("k{i:04}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let file = ten_batches(&dir.path().join("f.rows.arrow"), &refs, 1);
        assert_eq!((file.rows(), file.file.len(), decoded(&file)), (1000, 10, 0));
        assert_eq!(file.rows_before("k0450").unwrap(), 450);
        assert_eq!(decoded(&file), 1);
        // Past the last key: no batch is needed.
        assert_eq!(file.rows_before("z").unwrap(), 1000);
        assert_eq!(file.rows_of(&["k0510", "k0520", "k05200"]).unwrap(), [510, 520]);
        assert_eq!(decoded(&file), 2);
        // Rows are gathered by position: no keys are decoded for it.
        let taken: Vec<RecordBatch> =
            file.take(&[701, 702], &["value"], 10).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            taken[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().values(),
            &[701, 702]
        );
        assert_eq!(decoded(&file), 2);
        // A wanted set spread over the file reaches every batch holding one of its keys.
        assert_eq!(file.rows_of(&["k0001", "k0999"]).unwrap(), [1, 999]);
        assert_eq!(decoded(&file), 4);
    }

    #[test]
    fn small_batches_are_written_as_large_ones() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<String> = (0..1000).map(|i| format!("k{:04}", i / 3)).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let values: Vec<i64> = (0..1000).collect();
        let file = ten_batches(&dir.path().join("f.rows.arrow"), &refs, 250);
        let sizes: Vec<usize> = (0..file.file.len()).map(|b| file.batch_rows(b)).collect();
        assert_eq!(sizes, [300, 300, 300, 100]);
        // Read back as written, row for row: keys, values and the kind dictionary's values.
        let taken: Vec<RecordBatch> = file
            .take(&(0..1000).collect::<Vec<_>>(), &[KEY, "value", "kind"], 1000)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let taken = arrow::compute::concat_batches(&taken[0].schema(), &taken).unwrap();
        let keys: Vec<&str> = taken.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, refs);
        let read: Vec<i64> =
            taken.column(1).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec();
        assert_eq!(read, values);
        let kinds: Vec<&str> = taken.column(2).as_string::<i32>().iter().flatten().collect();
        let expected: Vec<&str> =
            refs.iter().map(|k| if k.ends_with('1') { "one" } else { "other" }).collect();
        assert_eq!(kinds, expected);
        // Each key's three rows, whichever batch they fell in.
        for key in ["k0000", "k0099", "k0100", "k0333"] {
            let expected: Vec<usize> = (0..1000).filter(|i| refs[*i] == key).collect();
            assert_eq!(file.rows_of(&[key]).unwrap(), expected, "{key}");
            assert_eq!(file.rows_before(key).unwrap(), expected[0], "{key}");
        }
    }

    #[test]
    fn a_directory_that_does_not_fit_is_an_error_or_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let batches =
            [batch(&["a", "b", "b", "d"], &[0, 1, 2, 3]), batch(&["d", "e1", "g"], &[4, 5, 6])];
        // Row counts that disagree with the batches: reading them is an error, never rows
        // past a batch's end.
        let lying = dir.path().join("lying.rows.arrow");
        let directory = r#"{"rows":[3,4],"first":["a","d"],"last":["d","g"]}"#;
        write_without_directory(&lying, &batches, Some(directory));
        let file = RowFile::open_trusted(&lying).unwrap().unwrap();
        assert!(file.rows_of(&["b"]).is_err());
        assert!(file.rows_before("c").is_err());
        assert!(file.take(&[0, 5], &["value"], 8).unwrap().any(|b| b.is_err()));
        // A directory of another shape, or unreadable, is ignored: the keys are decoded.
        for directory in [
            r#"{"rows":[7],"first":["a"],"last":["g"]}"#,
            "{",
            r#"{"rows":[4,0],"first":["a","d"],"last":["d","g"]}"#,
        ] {
            let path = dir.path().join("ignored.rows.arrow");
            write_without_directory(&path, &batches, Some(directory));
            let file = RowFile::open_trusted(&path).unwrap().unwrap();
            assert_eq!(decoded(&file), 2, "{directory}");
            finds_and_gathers(&file);
        }
    }

    #[test]
    fn finds_every_wanted_key_like_a_naive_scan() {
        // Sorted keys with repeats over three batches, and wanted sets from sparse to dense.
        // Keys of three shapes: short ones, ones that are the start of others, and long ones
        // alike in their first 16 bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let key = |n: u64| match n % 3 {
            0 => format!("k{n:05}"),
            1 => format!("k{:04}", n / 10),
            _ => format!("customer-identity-namespace:{n:05}"),
        };
        let mut all: Vec<String> = (0..3000).map(|_| key(next(2000))).collect();
        all.sort();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.rows.arrow");
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let values: Vec<i64> = (0..all.len() as i64).collect();
        let mut writer = RowFileWriter::create(&path, &batch(&refs[..1], &values[..1]).schema())
            .unwrap()
            .with_batch_rows(1);
        for range in [0..1000, 1000..1001, 1001..3000] {
            writer.write(&batch(&refs[range.clone()], &values[range])).unwrap();
        }
        writer.finish().unwrap();
        let file = RowFile::open_trusted(&path).unwrap().unwrap();
        for density in [1, 10, 200, 1000, 2000] {
            let mut wanted: Vec<String> = (0..density).map(|_| key(next(2100))).collect();
            wanted.sort();
            wanted.dedup();
            let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let expected: Vec<usize> =
                (0..all.len()).filter(|i| wanted.contains(&refs[*i])).collect();
            assert_eq!(file.rows_of(&wanted).unwrap(), expected, "{density} wanted");
            for key in wanted.iter().copied().chain(["", "k", "customer-identity-namespace", "~"]) {
                let before = refs.iter().filter(|k| **k < key).count();
                assert_eq!(file.rows_before(key).unwrap(), before, "rows before {key:?}");
            }
        }
    }

    #[test]
    fn refuses_rows_out_of_order_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.rows.arrow");
        let mut writer = RowFileWriter::create(&path, &batch(&["a"], &[0]).schema()).unwrap();
        writer.write(&batch(&["b", "c"], &[0, 1])).unwrap();
        assert!(writer.write(&batch(&["a"], &[2])).is_err());
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(RowFile::open_trusted(&path).unwrap().is_none());
    }

    #[test]
    fn refuses_a_truncated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.rows.arrow");
        let mut writer = RowFileWriter::create(&path, &batch(&["a"], &[0]).schema()).unwrap();
        writer.write(&batch(&["a", "b"], &[0, 1])).unwrap();
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [1, 9, bytes.len() / 2, bytes.len() - 3] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(RowFile::open_trusted(&path).is_err(), "cut at {cut}");
        }
    }
}
