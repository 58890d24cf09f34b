//! Memory-mapped Arrow IPC files: the store's row files and membership indexes, whose record
//! batches are decoded in place, pointing into the mapping.
//!
//! This module is the crate's unsafe boundary, and the only place that maps files or skips
//! Arrow's validation:
//!
//! - **Mapping** is undefined behaviour if the file changes underneath. The store's files never
//!   do: each is written under a temporary name, fsynced, renamed into place, and afterwards only
//!   deleted (a deleted file stays mapped, and readable, until unmapped). A file *truncated*
//!   underneath would make the next access to a page past its new end raise `SIGBUS` and end the
//!   process; nothing in segport truncates, so it can happen only when something outside it
//!   rewrites files in the storage root, which an operator must not do while segport runs.
//! - **Skipping validation** (Arrow would otherwise read every value of every column: offsets,
//!   UTF-8) is sound only for bytes the store wrote itself with Arrow's IPC writer. Only
//!   [`MappedFile::open_trusted`], crate-private, takes that path, and it is reached only through
//!   [`crate::snapshot::SourceFile`], whose companion paths come from the store's own layout for
//!   a file the catalog's manifest names; every other way in ([`MappedFile::from_buffer`], used
//!   for bytes from anywhere) validates. Footer and block bounds are checked either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::{read_footer_length, FileDecoder};
use arrow::ipc::{root_as_footer, Block, MetadataVersion};

use crate::{Result, StoreError};

/// An Arrow IPC file written by segport (a row file, a membership index), memory-mapped: its
/// record batches, decoded when asked for, point into the mapping; nothing is copied.
pub struct MappedFile {
    pub(crate) path: PathBuf,
    pub(crate) schema: SchemaRef,
    buffer: Buffer,
    /// The mapping behind `buffer`, when the file is mapped (to give pages back).
    mapping: Option<Arc<memmap2::Mmap>>,
    blocks: Vec<Block>,
    version: MetadataVersion,
    decoder: FileDecoder,
    /// Written by the store itself: decoded without Arrow's validation.
    trusted: bool,
    /// The footer's custom metadata (a row file's directory of its batches).
    metadata: std::collections::HashMap<String, String>,
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

/// A decoder of a file's buffers: trusting them for a file the store wrote, validating
/// otherwise.
#[allow(unsafe_code)]
fn decoder_for(decoder: FileDecoder, trusted: bool) -> FileDecoder {
    if !trusted {
        return decoder;
    }
    // SAFETY: `trusted` is set only by `MappedFile::open_trusted`, for files the store wrote
    // itself with arrow's IPC writer and put in place only when complete, so their buffers are
    // valid Arrow data; the footer and every block's bounds are still checked before use.
    // Validating would read every value of every column (UTF-8 and offsets), the very cost
    // mapping avoids.
    unsafe { decoder.with_skip_validation(true) }
}

impl MappedFile {
    /// Maps the file at `path`, a row file or index the store wrote itself (see the module
    /// docs: its buffers are trusted); `None` when there is none.
    pub(crate) fn open_trusted(path: &Path) -> Result<Option<Self>> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::error(path, &e)),
        };
        let mapping = Arc::new(map(&file).map_err(|e| Self::error(path, &e))?);
        let buffer = Buffer::from(bytes::Bytes::from_owner(Mapping(mapping.clone())));
        let mut file = Self::parse(path, buffer, true)?;
        file.mapping = Some(mapping);
        Ok(Some(file))
    }

    fn error(path: &Path, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Schema(format!("{}: {e}", path.display()))
    }

    /// The file held in `buffer` (`path` names it in errors), from anywhere: its batches are
    /// validated as they are decoded.
    pub fn from_buffer(path: &Path, buffer: Buffer) -> Result<Self> {
        Self::parse(path, buffer, false)
    }

    fn parse(path: &Path, buffer: Buffer, trusted: bool) -> Result<Self> {
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
        let decoder = decoder_for(FileDecoder::new(schema.clone(), version), trusted);
        let blocks: Vec<Block> =
            footer.recordBatches().iter().flat_map(|v| v.iter()).copied().collect();
        let metadata = footer
            .custom_metadata()
            .iter()
            .flat_map(|v| v.iter())
            .filter_map(|kv| Some((kv.key()?.to_owned(), kv.value()?.to_owned())))
            .collect();
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
        Ok(Self {
            path: path.to_owned(),
            schema,
            buffer,
            mapping: None,
            blocks,
            version,
            decoder,
            trusted,
            metadata,
        })
    }

    /// The value of `key` in the footer's custom metadata.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Gives back the memory pages of the record batches `batches` that this process has
    /// touched: they stop counting in its resident set, and the page cache keeps them. Nothing
    /// read from them changes (the next access maps the same file bytes again). A reader done
    /// with batches calls this so that a job's resident memory stays near the batches it works
    /// on, not the sum of every page it read.
    pub fn release(&self, batches: std::ops::Range<usize>) {
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

    /// For a reader passing over the file's batches in order, done with batch `i`: gives back
    /// the pages of the batches passed over a stretch of `RELEASE_BATCHES` at a time (each
    /// call costs the other cores a TLB flush), and the rest after the last batch.
    pub fn passed(&self, i: usize) {
        if (i + 1).is_multiple_of(RELEASE_BATCHES) || i + 1 == self.len() {
            self.release(i / RELEASE_BATCHES * RELEASE_BATCHES..i + 1);
        }
    }

    /// For a reader skipping through the file's batches in order, done with the batches
    /// `passed` (those whose pages it has not given back yet): gives their pages back once
    /// they hold at least `RELEASE_BYTES`, and answers the first batch still held. Each call
    /// costs the other cores a TLB flush (an interrupt each, a costly exit in a virtual
    /// machine), so a reader gathering from many small batches must not make one per batch.
    pub fn passed_stretch(&self, passed: std::ops::Range<usize>) -> usize {
        let bytes =
            match (self.blocks.get(passed.start), self.blocks.get(passed.end.wrapping_sub(1))) {
                (Some(first), Some(last)) => {
                    (last.offset() + last.metaDataLength() as i64 + last.bodyLength())
                        .saturating_sub(first.offset())
                }
                _ => 0,
            };
        if usize::try_from(bytes).unwrap_or(usize::MAX) < RELEASE_BYTES {
            return passed.start;
        }
        self.release(passed.clone());
        passed.end
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
        decoder_for(FileDecoder::new(self.schema.clone(), self.version), self.trusted)
            .with_projection(projection)
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

/// How many bytes of batches a reader skipping through a file holds before giving their pages
/// back ([`MappedFile::passed_stretch`]): its resident set grows by at most this much per file
/// it reads, and it makes one call per this many bytes, not one per batch.
const RELEASE_BYTES: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::FileWriter;

    use super::*;

    /// Bytes from anywhere are validated: a string column holding bytes that are not UTF-8 is
    /// an error, not a string array built on them.
    #[test]
    fn buffers_from_elsewhere_are_validated() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["segport-marker"]))],
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer = FileWriter::try_new(&mut bytes, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let good = MappedFile::from_buffer(Path::new("good"), Buffer::from(bytes.clone())).unwrap();
        assert_eq!(good.batch(0).unwrap(), batch);
        let at = bytes.windows(14).position(|w| w == b"segport-marker").unwrap();
        bytes[at] = 0xff;
        let bad = MappedFile::from_buffer(Path::new("bad"), Buffer::from(bytes)).unwrap();
        assert!(bad.batch(0).is_err(), "invalid UTF-8 was accepted");
    }
}
