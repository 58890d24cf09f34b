//! Splitting uploaded files into records: NDJSON lines, the elements of a JSON array
//! (`isMultiLineJson`), or the rows of a Parquet file. Every record keeps its row number for
//! error reports: 1-based line numbers for NDJSON, 1-based record indexes otherwise.

use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::limits::RecordLimits;
use crate::xdm::RecordError;
use crate::{Result, StoreError};

/// How an uploaded file is encoded (the batch's `inputFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line.
    NdJson,
    /// One JSON array of objects (`isMultiLineJson: true`).
    JsonArray,
    Parquet,
}

/// One record of input before parsing.
pub enum RawRecord<'a> {
    /// JSON text still to be parsed (in parallel, by the ingest).
    Text(&'a [u8]),
    /// Already a value (Parquet rows).
    Value(Value),
    /// Unreadable: counted and reported as failed.
    Broken(RecordError),
}

/// The non-blank lines of an NDJSON file with their 1-based line numbers.
pub fn ndjson_lines(bytes: &[u8]) -> impl Iterator<Item = (u64, RawRecord<'_>)> {
    // Lines found with memchr (SIMD), not a byte at a time: this runs before the records are
    // parsed in parallel, so it is on every ingest's critical path.
    let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
    let lines = ends.scan(0, move |start, end| {
        let line = &bytes[*start..end];
        *start = end + 1;
        Some(line)
    });
    lines.enumerate().filter_map(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (!line.iter().all(u8::is_ascii_whitespace)).then(|| (i as u64 + 1, RawRecord::Text(line)))
    })
}

/// Where the last whole line of `bytes` ends (just after its `\n`); `None` without one.
pub fn whole_lines_end(bytes: &[u8]) -> Option<usize> {
    memchr::memrchr(b'\n', bytes).map(|i| i + 1)
}

/// How many `\n` `bytes` holds.
pub fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

struct CollectElements<'a, 'de>(&'a mut Vec<&'de RawValue>);

impl<'de> Visitor<'de> for CollectElements<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            self.0.push(element);
        }
        Ok(())
    }
}

/// The elements of a JSON-array file. A syntax error ends the file: the elements before it are
/// records; the rest counts as one failed record at the position where reading stopped.
pub fn json_array_elements(bytes: &[u8]) -> Vec<(u64, RawRecord<'_>)> {
    let mut elements = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = serde::Deserializer::deserialize_seq(&mut de, CollectElements(&mut elements))
        .and_then(|()| de.end());
    let mut out: Vec<_> = elements
        .into_iter()
        .enumerate()
        .map(|(i, raw)| (i as u64 + 1, RawRecord::Text(raw.get().as_bytes())))
        .collect();
    if let Err(e) = result {
        let row = out.len() as u64 + 1;
        out.push((
            row,
            RawRecord::Broken(RecordError::new(
                "INVALID_JSON",
                format!("the JSON array cannot be read past this record: {e}"),
            )),
        ));
    }
    out
}

/// Decoded bytes read from a Parquet file at a time, across the rows of one read.
const PARQUET_READ_BYTES: usize = 16 * 1024 * 1024;
/// Rows read from a Parquet file at a time, at most.
const PARQUET_READ_ROWS: usize = 1024;

/// The rows of a Parquet file as JSON objects, in order, with 1-based record indexes, read a
/// few at a time so that memory follows what is read, not the file: a small file can hold a
/// value that decodes to hundreds of megabytes (a long list, repeated by its encoding).
///
/// Each row group is read in batches sized by its declared decoded size per row. A row whose
/// decoded size is past `max_record_bytes` fails as a record (`RECORD_TOO_LARGE`) before it
/// becomes JSON; a row group past it on average, by its metadata, and larger than one read is
/// not decoded at all (its rows fail). A file that cannot be read on fails from that row on as one broken record.
pub fn parquet_rows(
    name: &str,
    bytes: Bytes,
    max_record_bytes: usize,
) -> Result<impl Iterator<Item = (u64, RawRecord<'static>)>> {
    let input_error = |message: String| StoreError::Input { name: name.to_owned(), message };
    // The footer is read once; each row group's reader reuses it.
    let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::default())
        .map_err(|e| input_error(format!("not a readable Parquet file: {e}")))?;
    let groups: Vec<(usize, u64, u64)> = metadata
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .map(|(i, g)| (i, u64::try_from(g.num_rows()).unwrap_or(0), decoded_size(g)))
        .collect();
    Ok(ParquetRows {
        bytes,
        metadata,
        refusing: None,
        skip_after: 0,
        groups: groups.into_iter(),
        reader: None,
        pending: std::collections::VecDeque::new(),
        next_row: 1,
        max_record_bytes,
        done: false,
    })
}

/// What a row group decodes to at least, by its metadata: per column, its uncompressed pages
/// or its values at their width, whichever is more. Encodings (dictionaries, run lengths)
/// make a few bytes of pages stand for millions of values, so the pages alone say little.
fn decoded_size(group: &parquet::file::metadata::RowGroupMetaData) -> u64 {
    use parquet::basic::Type;
    group
        .columns()
        .iter()
        .map(|c| {
            let width: u64 = match c.column_type() {
                Type::BOOLEAN => 1,
                Type::INT32 | Type::FLOAT | Type::BYTE_ARRAY => 4,
                Type::INT64 | Type::DOUBLE => 8,
                Type::INT96 => 12,
                Type::FIXED_LEN_BYTE_ARRAY => {
                    u64::try_from(c.column_descr().type_length()).unwrap_or(0).max(1)
                }
            };
            let values = u64::try_from(c.num_values()).unwrap_or(0).saturating_mul(width);
            values.max(u64::try_from(c.uncompressed_size()).unwrap_or(0))
        })
        .fold(0u64, u64::saturating_add)
}

/// A row group refused undecoded, reported a read at a time.
struct Refusing {
    /// Rows still to report.
    listed: u64,
    /// Rows of the group still to pass.
    rows: u64,
    /// Each row's decoded size by the metadata.
    bytes: usize,
}

/// Rows of one undecoded row group reported one by one; a group that claims more is numbered
/// past the rest (its metadata is a client's word, and could claim billions).
const MAX_REFUSED_ROWS: u64 = 1_000_000;

struct ParquetRows {
    bytes: Bytes,
    metadata: ArrowReaderMetadata,
    refusing: Option<Refusing>,
    /// Row numbers to pass once the refused rows are reported.
    skip_after: u64,
    /// Row groups still to read: index, rows, declared decoded bytes.
    groups: std::vec::IntoIter<(usize, u64, u64)>,
    reader: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    pending: std::collections::VecDeque<(u64, RawRecord<'static>)>,
    next_row: u64,
    max_record_bytes: usize,
    done: bool,
}

impl ParquetRows {
    fn too_large(&self, bytes: usize) -> RawRecord<'static> {
        let limits = RecordLimits { max_bytes: self.max_record_bytes, ..RecordLimits::default() };
        RawRecord::Broken(limits.too_large(bytes))
    }

    fn broken(&mut self, message: String) {
        let row = self.next_row;
        self.pending.push_back((
            row,
            RawRecord::Broken(RecordError::new(
                "INVALID_PARQUET",
                format!("the file cannot be read from this record on: {message}"),
            )),
        ));
        self.done = true;
    }

    /// Queues the next rows: from the current row group's reader, or the next row group.
    fn fill(&mut self) {
        while self.pending.is_empty() && !self.done {
            if let Some(refusing) = self.refusing.as_mut() {
                let now = refusing.listed.min(PARQUET_READ_ROWS as u64);
                refusing.listed -= now;
                refusing.rows -= now;
                let bytes = refusing.bytes;
                if refusing.listed == 0 {
                    // Rows past the listed ones are numbered past, not reported one by one.
                    let rest = refusing.rows;
                    self.refusing = None;
                    self.skip_after = rest;
                }
                for _ in 0..now {
                    let record = self.too_large(bytes);
                    self.pending.push_back((self.next_row, record));
                    self.next_row += 1;
                }
                self.next_row = self.next_row.saturating_add(std::mem::take(&mut self.skip_after));
                continue;
            }
            if let Some(reader) = self.reader.as_mut() {
                match reader.next() {
                    None => self.reader = None,
                    Some(Err(e)) => self.broken(e.to_string()),
                    Some(Ok(batch)) => self.queue(&batch),
                }
                continue;
            }
            let Some((group, rows, bytes)) = self.groups.next() else { return };
            let per_row = bytes / rows.max(1);
            let budget = PARQUET_READ_BYTES.max(self.max_record_bytes) as u64;
            if per_row > self.max_record_bytes as u64 && bytes > budget {
                // By its own metadata a row of the group is past the limit and the group too
                // large to read a row at a time safely: none of it is decoded. (A smaller group
                // is read a row at a time, and only the rows past the limit fail.)
                // Refused a few at a time (`refusing`): the row count is the file's word.
                self.refusing = Some(Refusing {
                    listed: rows.min(MAX_REFUSED_ROWS),
                    rows,
                    bytes: usize::try_from(per_row).unwrap_or(usize::MAX),
                });
                continue;
            }
            let batch_rows =
                (PARQUET_READ_BYTES as u64 / per_row.max(1)).clamp(1, PARQUET_READ_ROWS as u64);
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
                self.bytes.clone(),
                self.metadata.clone(),
            )
            .with_row_groups(vec![group])
            .with_batch_size(batch_rows as usize)
            .build();
            match reader {
                Ok(r) => self.reader = Some(r),
                Err(e) => self.broken(e.to_string()),
            }
        }
    }

    /// Queues the rows of `batch` as JSON objects, or as failed records where a row is too
    /// large. Rows within the limit are converted a run at a time.
    fn queue(&mut self, batch: &arrow::array::RecordBatch) {
        let size = |start: usize, len: usize| -> usize {
            batch
                .columns()
                .iter()
                .map(|c| span_size(c.as_ref(), start, len))
                .fold(0, usize::saturating_add)
        };
        // When the whole batch fits one record's limit, every row does.
        let sizes: Vec<usize> = if size(0, batch.num_rows()) <= self.max_record_bytes {
            vec![0; batch.num_rows()]
        } else {
            (0..batch.num_rows()).map(|i| size(i, 1)).collect()
        };
        let mut start = 0;
        while start < sizes.len() {
            if sizes[start] > self.max_record_bytes {
                let record = self.too_large(sizes[start]);
                self.pending.push_back((self.next_row, record));
                self.next_row += 1;
                start += 1;
                continue;
            }
            let end = (start..sizes.len())
                .find(|&i| sizes[i] > self.max_record_bytes)
                .unwrap_or(sizes.len());
            match rows_as_json(&batch.slice(start, end - start)) {
                Ok(values) => {
                    for value in values {
                        self.pending.push_back((self.next_row, RawRecord::Value(value)));
                        self.next_row += 1;
                    }
                }
                Err(message) => return self.broken(message),
            }
            start = end;
        }
    }
}

/// The decoded bytes of rows `start..start + len` of `array`: values, offsets and what lists
/// hold for those rows (Arrow's own measure counts a list's values whole, however it is
/// sliced). Saturating: a type it does not know counts as `usize::MAX`.
fn span_size(array: &dyn arrow::array::Array, start: usize, len: usize) -> usize {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    fn list<O: arrow::array::OffsetSizeTrait>(
        list: &arrow::array::GenericListArray<O>,
        start: usize,
        len: usize,
    ) -> usize {
        let offsets = list.value_offsets();
        let (from, to) = (offsets[start].as_usize(), offsets[start + len].as_usize());
        (len * O::get_byte_width()).saturating_add(span_size(
            list.values().as_ref(),
            from,
            to - from,
        ))
    }
    match array.data_type() {
        DataType::List(_) => list(array.as_list::<i32>(), start, len),
        DataType::LargeList(_) => list(array.as_list::<i64>(), start, len),
        DataType::Map(_, _) => {
            let map = array.as_map();
            let offsets = map.value_offsets();
            let (from, to) = (offsets[start] as usize, offsets[start + len] as usize);
            (len * 4).saturating_add(span_size(map.entries(), from, to - from))
        }
        DataType::Struct(_) => array
            .as_struct()
            .columns()
            .iter()
            .map(|c| span_size(c.as_ref(), start, len))
            .fold(0, usize::saturating_add),
        DataType::Utf8 => {
            let offsets = array.as_string::<i32>().value_offsets();
            (len * 4).saturating_add(
                usize::try_from(offsets[start + len] - offsets[start]).unwrap_or(usize::MAX),
            )
        }
        DataType::Binary => {
            let offsets = array.as_binary::<i32>().value_offsets();
            (len * 4).saturating_add(
                usize::try_from(offsets[start + len] - offsets[start]).unwrap_or(usize::MAX),
            )
        }
        DataType::LargeUtf8 => {
            let offsets = array.as_string::<i64>().value_offsets();
            (len * 8).saturating_add(
                usize::try_from(offsets[start + len] - offsets[start]).unwrap_or(usize::MAX),
            )
        }
        DataType::LargeBinary => {
            let offsets = array.as_binary::<i64>().value_offsets();
            (len * 8).saturating_add(
                usize::try_from(offsets[start + len] - offsets[start]).unwrap_or(usize::MAX),
            )
        }
        DataType::Utf8View => {
            let views = array.as_string_view();
            (start..start + len).map(|i| 16 + views.value(i).len()).fold(0, usize::saturating_add)
        }
        DataType::BinaryView => {
            let views = array.as_binary_view();
            (start..start + len).map(|i| 16 + views.value(i).len()).fold(0, usize::saturating_add)
        }
        // Each row costs its key and, as JSON, the value it points to.
        DataType::Dictionary(_, _) => match array.as_any_dictionary_opt() {
            // A null row (or a dictionary without values) costs its key only.
            Some(dict) if dict.values().is_empty() => len * 8,
            Some(dict) => {
                let values = dict.values();
                let last = values.len() - 1;
                let keys = dict.keys();
                let normalized = dict.normalized_keys();
                (start..start + len)
                    .map(|i| match keys.is_null(i) {
                        true => 8,
                        false => 8usize.saturating_add(span_size(
                            values.as_ref(),
                            normalized[i].min(last),
                            1,
                        )),
                    })
                    .fold(0, usize::saturating_add)
            }
            None => usize::MAX,
        },
        DataType::FixedSizeList(_, size) => {
            let size = usize::try_from(*size).unwrap_or(0);
            span_size(array.as_fixed_size_list().values().as_ref(), start * size, len * size)
        }
        DataType::FixedSizeBinary(size) => usize::try_from(*size).unwrap_or(0) * len,
        DataType::Boolean | DataType::Null => len,
        other => match other.primitive_width() {
            Some(width) => width.saturating_mul(len),
            // A type not measured here counts as too large: a limit fails closed.
            None => usize::MAX,
        },
    }
}

/// The rows of a batch as JSON objects.
fn rows_as_json(rows: &arrow::array::RecordBatch) -> Result<Vec<Value>, String> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(rows).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    serde_json::from_slice(&writer.into_inner())
        .map_err(|e| format!("rows cannot be converted to JSON: {e}"))
}

impl Iterator for ParquetRows {
    type Item = (u64, RawRecord<'static>);

    fn next(&mut self) -> Option<Self::Item> {
        self.fill();
        self.pending.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(records: Vec<(u64, RawRecord<'_>)>) -> Vec<(u64, &'static str)> {
        records
            .into_iter()
            .map(|(row, r)| {
                (
                    row,
                    match r {
                        RawRecord::Text(_) => "text",
                        RawRecord::Value(_) => "value",
                        RawRecord::Broken(_) => "broken",
                    },
                )
            })
            .collect()
    }

    #[test]
    fn ndjson_skips_blank_lines_but_keeps_line_numbers() {
        let input = b"{\"a\":1}\r\n\n  \n{\"b\":2}\n{bad\n";
        assert_eq!(rows(ndjson_lines(input).collect()), [(1, "text"), (4, "text"), (5, "text")]);
    }

    #[test]
    fn lines_are_those_of_a_naive_split() {
        for input in [&b""[..], b"\n", b"a", b"a\n", b"a\nb", b"\n\nx\r\n y \n\n", b"{}\n{}"] {
            let naive: Vec<(u64, &[u8])> = input
                .split(|b| *b == b'\n')
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
                .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
                .collect();
            let lines: Vec<(u64, &[u8])> = ndjson_lines(input)
                .map(|(i, r)| match r {
                    RawRecord::Text(t) => (i, t),
                    _ => panic!("not text"),
                })
                .collect();
            assert_eq!(lines, naive, "{input:?}");
            let newlines = input.iter().filter(|b| **b == b'\n').count() as u64;
            assert_eq!(count_newlines(input), newlines);
            assert_eq!(
                whole_lines_end(input),
                input.iter().rposition(|b| *b == b'\n').map(|i| i + 1)
            );
        }
    }

    /// A Parquet file of rows `{"id": i, "list": [..len values..]}`, `group` rows per row
    /// group.
    fn parquet_with_lists(lens: &[usize], group: usize) -> Bytes {
        use std::sync::Arc;

        use arrow::array::{ArrayRef, Int64Array, ListArray, RecordBatch};
        use arrow::buffer::OffsetBuffer;
        use arrow::datatypes::{DataType, Field, Schema};

        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let values = Int64Array::from(vec![7i64; lens.iter().sum()]);
        let list = ListArray::new(
            item.clone(),
            OffsetBuffer::from_lengths(lens.iter().copied()),
            Arc::new(values),
            None,
        );
        let ids = Int64Array::from_iter_values(0..lens.len() as i64);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("list", DataType::List(item), true),
        ]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids) as ArrayRef, Arc::new(list)])
                .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .build();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    fn outcome(records: impl Iterator<Item = (u64, RawRecord<'static>)>) -> Vec<(u64, String)> {
        records
            .map(|(row, r)| {
                let what = match r {
                    RawRecord::Value(v) => format!("id {}", v["id"]),
                    RawRecord::Broken(e) => e.code.to_owned(),
                    RawRecord::Text(_) => "text".to_owned(),
                };
                (row, what)
            })
            .collect()
    }

    /// Rows past the decoded-size limit fail alone, whether the metadata tells (a row group of
    /// its own, not decoded) or the decoded row does (a row group shared with small rows).
    #[test]
    fn parquet_rows_past_the_size_limit_fail_alone() {
        let limit = 1024 * 1024;
        let big = 300_000; // 2.4 MB of int64 values, a few bytes in the file
        let expected = |ids: &[&str]| -> Vec<(u64, String)> {
            ids.iter().enumerate().map(|(i, s)| (i as u64 + 1, (*s).to_owned())).collect()
        };
        let shared = parquet_with_lists(&[3, big, 2, 1], 4);
        assert!(shared.len() < 64 * 1024, "{}", shared.len());
        let rows = parquet_rows("f", shared, limit).unwrap();
        assert_eq!(outcome(rows), expected(&["id 0", "RECORD_TOO_LARGE", "id 2", "id 3"]));
        let own = parquet_with_lists(&[1, big, 2], 1);
        let rows = parquet_rows("f", own, limit).unwrap();
        assert_eq!(outcome(rows), expected(&["id 0", "RECORD_TOO_LARGE", "id 2"]));
        // A group past the limit and larger than one read is refused undecoded.
        let huge = parquet_with_lists(&[3_000_000, 1], 2);
        let rows = parquet_rows("f", huge, limit).unwrap();
        assert_eq!(outcome(rows), expected(&["RECORD_TOO_LARGE", "RECORD_TOO_LARGE"]));
        // Within the limit everything reads, a batch at a time.
        let many: Vec<usize> = (0..5000).map(|i| i % 7).collect();
        let rows = outcome(parquet_rows("f", parquet_with_lists(&many, 1000), limit).unwrap());
        assert_eq!(rows.len(), 5000);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, (row, what))| *row == i as u64 + 1 && *what == format!("id {i}")));
    }

    /// A dictionary column counts, per row, the value its key points to: rows sharing one long
    /// string are each as long as the string when they become JSON.
    #[test]
    fn dictionary_values_count_per_row() {
        use std::sync::Arc;

        use arrow::array::{DictionaryArray, RecordBatch};
        use arrow::datatypes::Int32Type;

        let long = "x".repeat(300_000);
        let dict: DictionaryArray<Int32Type> =
            vec![long.as_str(), long.as_str(), "y"].into_iter().collect();
        let batch =
            RecordBatch::try_from_iter([("s", Arc::new(dict) as arrow::array::ArrayRef)]).unwrap();
        let sizes: Vec<usize> = (0..3).map(|i| span_size(batch.column(0).as_ref(), i, 1)).collect();
        assert!(sizes[0] > 300_000 && sizes[1] > 300_000 && sizes[2] < 100, "{sizes:?}");
        assert!(span_size(batch.column(0).as_ref(), 0, 3) > 600_000);
        // Null rows cost their key, whatever the dictionary holds, and a dictionary without
        // values (a column of nulls) is measured, not a panic.
        let keys = arrow::array::Int32Array::from(vec![None, Some(0), None]);
        let values = Arc::new(arrow::array::StringArray::from(vec![long.as_str()]));
        let nulls = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        assert_eq!(span_size(&nulls, 0, 1), 8);
        assert!(span_size(&nulls, 1, 1) > 300_000);
        let keys = arrow::array::Int32Array::from(vec![None, None]);
        let empty = Arc::new(arrow::array::StringArray::from(Vec::<&str>::new()));
        let none = DictionaryArray::<Int32Type>::try_new(keys, empty).unwrap();
        assert_eq!(span_size(&none, 0, 2), 16);
    }

    /// Issue 8, point 1: Parquet from real tools (pyarrow and Spark default to Snappy; gzip and
    /// brotli are common) reads in every codec the parquet crate has, row for row.
    #[test]
    fn every_parquet_codec_reads() {
        use std::sync::Arc;

        use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};

        let ids = Int64Array::from_iter_values(0..500);
        let names = StringArray::from_iter_values((0..500).map(|i| format!("name-{i}")));
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("name", Arc::new(names) as ArrayRef),
        ])
        .unwrap();
        for codec in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::GZIP(GzipLevel::default()),
            Compression::BROTLI(BrotliLevel::default()),
            Compression::LZ4,
            Compression::LZ4_RAW,
            Compression::ZSTD(ZstdLevel::default()),
        ] {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(codec)
                .build();
            let mut out = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
                .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let rows: Vec<(u64, String)> = parquet_rows("f.parquet", Bytes::from(out), 1 << 20)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"))
                .map(|(row, r)| match r {
                    RawRecord::Value(v) => (row, format!("{}/{}", v["id"], v["name"])),
                    RawRecord::Broken(e) => panic!("{codec:?}: row {row}: {}", e.description),
                    RawRecord::Text(_) => panic!("text"),
                })
                .collect();
            let expected: Vec<(u64, String)> =
                (0..500).map(|i| (i + 1, format!("{i}/\"name-{i}\""))).collect();
            assert_eq!(rows, expected, "{codec:?}");
        }
    }

    #[test]
    fn json_arrays_stop_at_a_syntax_error() {
        assert_eq!(
            rows(json_array_elements(b"[{\"a\":1},\n {\"b\":2}]")),
            [(1, "text"), (2, "text")]
        );
        assert_eq!(rows(json_array_elements(b"[{\"a\":1}, {\"b\":")), [(1, "text"), (2, "broken")]);
        assert_eq!(rows(json_array_elements(b"{\"a\":1}")), [(1, "broken")]);
    }
}
