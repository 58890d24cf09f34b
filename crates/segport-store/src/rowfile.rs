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
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::buffer::Buffer;
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::ipc::reader::{read_footer_length, FileDecoder};
use arrow::ipc::writer::FileWriter;
use arrow::ipc::{root_as_footer, Block, MetadataVersion};

use crate::align::align_batch;
use crate::chunked::ChunkedWriter;
use crate::columns::KEY;
use crate::{Result, StoreError};

const DATA_SUFFIX: &str = ".parquet";
const ROWS_SUFFIX: &str = ".rows.arrow";

/// The row file path of the data file at `data`, `None` for a path that is not a data file.
pub fn rows_path(data: &str) -> Option<String> {
    if crate::index::data_path(data).is_some() {
        return None;
    }
    data.strip_suffix(DATA_SUFFIX).map(|stem| format!("{stem}{ROWS_SUFFIX}"))
}

/// The data file of the row file at `rows`, `None` for a path that is not a row file.
pub fn data_path(rows: &str) -> Option<String> {
    rows.strip_suffix(ROWS_SUFFIX).map(|stem| format!("{stem}{DATA_SUFFIX}"))
}

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
        Ok(Self { writer, schema, temporary, path: path.to_owned(), last_key: None })
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
        let plain = align_batch(batch, &self.schema)?;
        self.writer.write(&plain).map_err(StoreError::arrow("writing a row file"))
    }

    /// Completes the file and moves it into place.
    pub fn finish(mut self) -> Result<()> {
        let error = |e: &dyn std::fmt::Display| {
            StoreError::Location(format!("cannot write row file {}: {e}", self.path.display()))
        };
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

/// An Arrow IPC file written by segport (a row file, a membership index), memory-mapped: its
/// record batches, decoded when asked for, point into the mapping; nothing is copied.
pub struct MappedFile {
    path: PathBuf,
    schema: SchemaRef,
    buffer: Buffer,
    /// The mapping behind `buffer`, when the file is mapped (to give pages back).
    mapping: Option<Arc<memmap2::Mmap>>,
    blocks: Vec<Block>,
    version: MetadataVersion,
    decoder: FileDecoder,
}

/// A shared mapping as the owner of the bytes a [`Buffer`] points into.
struct Mapping(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0[..]
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile").field("path", &self.path).finish()
    }
}

/// Maps `file` into memory.
#[allow(unsafe_code)]
fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a mapping is undefined behaviour if the file changes under it. Store files and
    // their companions are immutable: written once under a temporary name, renamed into
    // place, and only ever deleted (a deleted file stays mapped until unmapped) — never
    // rewritten or truncated.
    let mapping = unsafe { memmap2::Mmap::map(file) }?;
    // Pages read in through this mapping (after the page cache let the file go) come in large
    // folios, as a file written in large chunks sits there (`crate::chunked`): mapping and
    // giving back a page of a large folio costs a fraction of a small one's, and readers here
    // map over a million pages per export at 10M profiles. Read-around of scattered reads
    // would otherwise bring pages back one small folio at a time. Advice: ignored on failure.
    #[cfg(target_os = "linux")]
    let _ = mapping.advise(memmap2::Advice::HugePage);
    Ok(mapping)
}

/// Drops the page-table entries of `len` bytes of `mapping` from `offset` (page-aligned).
#[allow(unsafe_code)]
fn dont_need(mapping: &memmap2::Mmap, offset: usize, len: usize) {
    // SAFETY: `MADV_DONTNEED` on a read-only shared mapping of a file only unmaps the pages
    // from this process; the next access maps the file's bytes again. Store files are never
    // rewritten or truncated (see `map`), so every slice into the mapping keeps reading the
    // same bytes. It is advice: a failure changes nothing and is ignored.
    let _ =
        unsafe { mapping.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
}

/// A decoder that trusts the file's buffers.
#[allow(unsafe_code)]
fn trusting(decoder: FileDecoder) -> FileDecoder {
    // SAFETY: these files are written by segport itself with arrow's IPC writer and put in
    // place only when complete, so their buffers are valid Arrow data; the footer and every
    // block's bounds are still checked before use. Validating would read every value of
    // every column (UTF-8 and offsets), the very cost mapping avoids.
    unsafe { decoder.with_skip_validation(true) }
}

impl MappedFile {
    /// Maps the file at `path`; `None` when there is none.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::error(path, &e)),
        };
        let mapping = Arc::new(map(&file).map_err(|e| Self::error(path, &e))?);
        let buffer = Buffer::from(bytes::Bytes::from_owner(Mapping(mapping.clone())));
        let mut file = Self::from_buffer(path, buffer)?;
        file.mapping = Some(mapping);
        Ok(Some(file))
    }

    fn error(path: &Path, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Schema(format!("{}: {e}", path.display()))
    }

    /// The file held in `buffer` (`path` names it in errors).
    pub fn from_buffer(path: &Path, buffer: Buffer) -> Result<Self> {
        let error = |e: &dyn std::fmt::Display| Self::error(path, e);
        let len = buffer.len();
        let tail: [u8; 10] = buffer
            .get(len.saturating_sub(10)..)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| error(&"too short for an Arrow file"))?;
        let footer_len = read_footer_length(tail).map_err(|e| error(&e))?;
        let footer_at = len
            .checked_sub(10 + footer_len)
            .ok_or_else(|| error(&"the footer is longer than the file"))?;
        let footer = root_as_footer(&buffer[footer_at..len - 10]).map_err(|e| error(&e))?;
        let schema = arrow::ipc::convert::try_fb_to_schema(
            footer.schema().ok_or_else(|| error(&"no schema in the footer"))?,
        )
        .map_err(|e| error(&e))?;
        let schema = Arc::new(schema);
        if footer.dictionaries().is_some_and(|d| !d.is_empty()) {
            return Err(error(&"dictionaries in a mapped file"));
        }
        let version = footer.version();
        let decoder = trusting(FileDecoder::new(schema.clone(), version));
        let blocks: Vec<Block> =
            footer.recordBatches().iter().flat_map(|v| v.iter()).copied().collect();
        for b in &blocks {
            let start = usize::try_from(b.offset()).ok();
            let size = usize::try_from(b.bodyLength())
                .ok()
                .and_then(|body| body.checked_add(usize::try_from(b.metaDataLength()).ok()?));
            let inside = match (start, size) {
                (Some(start), Some(size)) => start.checked_add(size).is_some_and(|e| e <= len),
                _ => false,
            };
            if !inside {
                return Err(error(&"a block outside the file"));
            }
        }
        Ok(Self { path: path.to_owned(), schema, buffer, mapping: None, blocks, version, decoder })
    }

    /// Gives back the memory pages of record batch `i` that this process has touched: they
    /// stop counting in its resident set, and the page cache keeps them. Nothing read from
    /// them changes (the next access maps the same file bytes again). A reader done with a
    /// batch calls this so that a job's resident memory stays near the batches it works on,
    /// not the sum of every page it read.
    pub fn release(&self, i: usize) {
        self.release_batches(i..i + 1);
    }

    /// For a reader passing over the file's batches in order, done with batch `i`: gives back
    /// the pages of the batches passed over a stretch of `RELEASE_BATCHES` at a time (each
    /// call costs the other cores a TLB flush), and the rest after the last batch.
    pub fn passed(&self, i: usize) {
        if (i + 1).is_multiple_of(RELEASE_BATCHES) || i + 1 == self.len() {
            self.release_batches(i / RELEASE_BATCHES * RELEASE_BATCHES..i + 1);
        }
    }

    /// Gives back the pages of the record batches `batches` (see [`MappedFile::release`]).
    fn release_batches(&self, batches: std::ops::Range<usize>) {
        let Some(mapping) = &self.mapping else { return };
        let (Some(first), Some(last)) =
            (self.blocks.get(batches.start), self.blocks.get(batches.end.wrapping_sub(1)))
        else {
            return;
        };
        let page = 4096;
        // Whole pages inside the batches only: a page shared with a neighbour stays.
        let start = (first.offset() as usize).div_ceil(page) * page;
        let end =
            (last.offset() as usize + last.metaDataLength() as usize + last.bodyLength() as usize)
                .min(mapping.len())
                / page
                * page;
        if start < end {
            dont_need(mapping, start, end - start);
        }
    }

    /// How many record batches the file holds.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Record batch `i`, decoded (its arrays point into the mapping).
    pub fn batch(&self, i: usize) -> Result<RecordBatch> {
        self.batch_with(&self.decoder, i)
    }

    /// A decoder of the columns at `projection` (indexes into [`MappedFile::schema`]) only:
    /// the others are skipped, not decoded.
    pub fn projected(&self, projection: Vec<usize>) -> FileDecoder {
        trusting(FileDecoder::new(self.schema.clone(), self.version)).with_projection(projection)
    }

    /// Record batch `i`, decoded by `decoder` (from [`MappedFile::projected`]).
    pub fn batch_with(&self, decoder: &FileDecoder, i: usize) -> Result<RecordBatch> {
        let error = |e: &dyn std::fmt::Display| Self::error(&self.path, e);
        let b = self.blocks.get(i).ok_or_else(|| error(&format!("no record batch {i}")))?;
        // Bounds were checked when the file was opened.
        let data = self.buffer.slice_with_length(
            b.offset() as usize,
            b.bodyLength() as usize + b.metaDataLength() as usize,
        );
        decoder
            .read_record_batch(b, &data)
            .map_err(|e| error(&e))?
            .ok_or_else(|| error(&format!("record batch {i} is empty")))
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Every record batch, decoded.
    pub fn batches(&self) -> Result<Vec<RecordBatch>> {
        (0..self.len()).map(|i| self.batch(i)).collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How many record batches a reader passing over a file's batches gives back at a time
/// ([`MappedFile::passed`]).
const RELEASE_BATCHES: usize = 16;

/// A row file, memory-mapped.
pub struct RowFile {
    /// The mapped file (its path and schema), to give back the pages of batches done with.
    file: MappedFile,
    /// Each batch's key column, decoded at open. The rest of a batch is decoded only when rows
    /// are taken from it, and only the columns taken: a wide file (events have dozens of leaf
    /// columns) opened for a few rows pays for its keys, not for every column of every batch.
    keys: Vec<StringArray>,
    /// The file's row of each batch's first row.
    starts: Vec<usize>,
    rows: usize,
}

impl std::fmt::Debug for RowFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowFile").field("path", &self.file.path).field("rows", &self.rows).finish()
    }
}

impl RowFile {
    /// Opens the row file at `path`; `None` when there is none.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let Some(file) = MappedFile::open(path)? else { return Ok(None) };
        let no_key =
            || StoreError::Schema(format!("row file {}: no key column", file.path.display()));
        let key = file.schema.index_of(KEY).map_err(|_| no_key())?;
        let decoder = file.projected(vec![key]);
        let (mut keys, mut starts, mut rows) = (Vec::new(), Vec::new(), 0);
        for i in 0..file.len() {
            let batch = file.batch_with(&decoder, i)?;
            let column = batch.column(0).as_string_opt::<i32>().ok_or_else(no_key)?;
            starts.push(rows);
            rows += column.len();
            keys.push(column.clone());
            // Decoding touched the batch's header only, which is not read again. Given back
            // as the decoding goes: the page cache maps a file held in large folios a whole
            // folio at a time, so every header touched would keep megabytes of it mapped.
            file.passed(i);
        }
        Ok(Some(Self { file, keys, starts, rows }))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.file.schema
    }

    /// The rows whose key is one of `wanted` (sorted), in file order. Keys are sorted in the
    /// file (the writer refuses otherwise), so each wanted key costs a search onward from the
    /// previous one.
    pub fn rows_of(&self, wanted: &[&str]) -> Result<Vec<usize>> {
        let mut found = Vec::new();
        for (b, (keys, start)) in self.keys.iter().zip(&self.starts).enumerate() {
            let n = keys.len();
            if n == 0 {
                continue;
            }
            // Only the wanted keys within this batch's range.
            let from = wanted.partition_point(|k| *k < keys.value(0));
            let to = wanted.partition_point(|k| *k <= keys.value(n - 1));
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
            // The keys probed are not read again by this search (see `open`).
            self.file.passed(b);
        }
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
        if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|r| *r >= self.rows) {
            return Err(StoreError::Schema(format!(
                "row file {}: rows to take must be ascending and within its {} rows",
                self.file.path.display(),
                self.rows
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
    /// columns): its pages are given back when the gathering moves past it (rows come out as
    /// copies, so nothing points into them).
    current: Option<(usize, RecordBatch)>,
}

impl Drop for TakeRows<'_> {
    fn drop(&mut self) {
        if let Some((b, _)) = &self.current {
            self.file.file.release(*b);
        }
    }
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
            if let Some((done, _)) = self.current.take() {
                self.file.file.release(done);
            }
            return None;
        };
        // The batch holding the next row, and the rows of it in this chunk.
        let b = self.file.starts.partition_point(|s| *s <= first).saturating_sub(1);
        if self.current.as_ref().is_none_or(|(at, _)| *at != b) {
            if let Some((done, _)) = self.current.take() {
                self.file.file.release(done);
            }
            let decoded = self.file.file.batch_with(&self.decoder, b).and_then(|projected| {
                match &self.narrow {
                    Some(narrow) => narrow(projected),
                    None => Ok(projected),
                }
            });
            match decoded {
                Ok(batch) => self.current = Some((b, batch)),
                Err(e) => return Some(Err(e)),
            }
        }
        let (_, batch) = self.current.as_ref()?;
        let start = self.file.starts[b];
        let end = start + self.file.keys[b].len();
        let chunk: Vec<u32> = self.rows[self.at..]
            .iter()
            .take(self.batch_rows.max(1))
            .take_while(|r| **r < end)
            .map(|r| (r - start) as u32)
            .collect();
        self.at += chunk.len();
        Some(
            take_record_batch(batch, &UInt32Array::from(chunk))
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

    #[test]
    fn finds_and_gathers_rows_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p=0/f.rows.arrow");
        let first = batch(&["a", "b", "b", "d"], &[0, 1, 2, 3]);
        let mut writer = RowFileWriter::create(&path, &first.schema()).unwrap();
        writer.write(&first).unwrap();
        writer.write(&batch(&["d", "e1", "g"], &[4, 5, 6])).unwrap();
        writer.finish().unwrap();
        // Only the finished file is in the folder.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        let file = RowFile::open(&path).unwrap().unwrap();
        assert_eq!(file.rows(), 7);
        // A naive oracle: every row whose key is wanted.
        let all = ["a", "b", "b", "d", "d", "e1", "g"];
        for wanted in [vec!["b", "d"], vec!["0", "c", "e1", "z"], vec![], vec!["a", "g"]] {
            let expected: Vec<usize> =
                (0..all.len()).filter(|i| wanted.contains(&all[*i])).collect();
            assert_eq!(file.rows_of(&wanted).unwrap(), expected, "{wanted:?}");
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

    #[test]
    fn finds_every_wanted_key_like_a_naive_scan() {
        // Sorted keys with repeats over three batches, and wanted sets from sparse to dense.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut all: Vec<String> = (0..3000).map(|_| format!("k{:05}", next(2000))).collect();
        all.sort();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.rows.arrow");
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let values: Vec<i64> = (0..all.len() as i64).collect();
        let mut writer =
            RowFileWriter::create(&path, &batch(&refs[..1], &values[..1]).schema()).unwrap();
        for range in [0..1000, 1000..1001, 1001..3000] {
            writer.write(&batch(&refs[range.clone()], &values[range])).unwrap();
        }
        writer.finish().unwrap();
        let file = RowFile::open(&path).unwrap().unwrap();
        for density in [1, 10, 200, 1000, 2000] {
            let mut wanted: Vec<String> =
                (0..density).map(|_| format!("k{:05}", next(2100))).collect();
            wanted.sort();
            wanted.dedup();
            let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
            let expected: Vec<usize> =
                (0..all.len()).filter(|i| wanted.contains(&refs[*i])).collect();
            assert_eq!(file.rows_of(&wanted).unwrap(), expected, "{density} wanted");
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
        assert!(RowFile::open(&path).unwrap().is_none());
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
            assert!(RowFile::open(&path).is_err(), "cut at {cut}");
        }
        assert_eq!(rows_path("s/d/p=1/x.parquet").as_deref(), Some("s/d/p=1/x.rows.arrow"));
        assert_eq!(rows_path("s/d/p=1/x.members.parquet"), None);
        assert_eq!(data_path("s/d/p=1/x.rows.arrow").as_deref(), Some("s/d/p=1/x.parquet"));
    }
}
