//! A writer that hands a file its bytes in large chunks ending on chunk boundaries.
//!
//! Files read through a memory map (row files) cost their reader a page-table entry per 4 KiB
//! page on every read, and the cost of mapping and giving back a page depends on how the page
//! cache holds the file: a file written in small `write` calls (a `BufWriter`'s 8 KiB) sits in
//! small folios, one written in multi-MiB calls in large folios, which the kernel maps and
//! unmaps several times cheaper per page. Measured on this project's machines (ext4, Linux
//! 6.18, a 2 GB file touched a page at a time through a mapping and given back with
//! `MADV_DONTNEED`): 600–800 ns per page written in 8 KiB calls, 70–110 ns in 4 MiB calls —
//! and on a 10M-profile store an export of one segment with its events maps over a million
//! pages. A file read back after eviction gets large folios from readahead either way; this
//! is for the files read while still cached from their writing, which is every file a
//! compaction has just written.

use std::io::{self, Write};

/// The size of a chunk (a multiple of the largest folio the page cache makes of a write).
pub const CHUNK: usize = 4 << 20;

/// Buffers writes and passes them on in chunks that each end on a multiple of [`CHUNK`]
/// bytes into the file (the last one shorter, at [`Write::flush`]). Large writes go straight
/// through in whole chunks once the buffer is empty.
pub struct ChunkedWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
    /// Bytes passed on to `inner` so far.
    written: usize,
}

impl<W: Write> ChunkedWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, buffer: Vec::new(), written: 0 }
    }

    /// The writer the chunks go to.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Bytes that fit before the next chunk boundary.
    fn room(&self) -> usize {
        CHUNK - (self.written + self.buffer.len()) % CHUNK
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.inner.write_all(&self.buffer)?;
            self.written += self.buffer.len();
            self.buffer.clear();
        }
        Ok(())
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.room();
        if self.buffer.is_empty() && data.len() >= room {
            // Up to the next boundary and whole chunks after it, without a copy.
            let n = room + (data.len() - room) / CHUNK * CHUNK;
            self.inner.write_all(&data[..n])?;
            self.written += n;
            return Ok(n);
        }
        let n = room.min(data.len());
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(CHUNK);
        }
        self.buffer.extend_from_slice(&data[..n]);
        if n == room {
            self.write_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` it gets.
    #[derive(Default)]
    struct Calls {
        bytes: Vec<u8>,
        calls: Vec<(usize, usize)>,
    }

    impl Write for Calls {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.calls.push((self.bytes.len(), data.len()));
            self.bytes.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn passes_every_byte_on_in_chunks_ending_on_boundaries() {
        // Writes of many sizes, small and larger than a chunk, and a flush in the middle.
        let sizes = [10, CHUNK - 3, 7, 2 * CHUNK + 5, 1, 1, CHUNK, 333_333, 3 * CHUNK / 2];
        let mut expected = Vec::new();
        let mut writer = ChunkedWriter::new(Calls::default());
        for (i, size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*size).map(|b| (b * 31 + i) as u8).collect();
            writer.write_all(&data).unwrap();
            expected.extend_from_slice(&data);
            if i == 4 {
                writer.flush().unwrap();
            }
        }
        writer.flush().unwrap();
        let Calls { bytes, calls } = std::mem::take(&mut writer.inner);
        assert_eq!(bytes, expected);
        // Every write but those made by a flush ends on a chunk boundary; the one flush in
        // the middle (after the fifth write) and the last leave it.
        let unaligned: Vec<usize> =
            calls.iter().map(|(at, len)| at + len).filter(|end| end % CHUNK != 0).collect();
        let middle = sizes[..5].iter().sum::<usize>();
        assert_eq!(unaligned, [middle, expected.len()]);
        assert!(calls.iter().all(|(_, len)| *len > 0));
    }
}
