//! Splitting uploaded files into records: NDJSON lines, the elements of a JSON array
//! (`isMultiLineJson`), or the rows of a Parquet file. Every record keeps its row number for
//! error reports: 1-based line numbers for NDJSON, 1-based record indexes otherwise.

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

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

/// The rows of a Parquet file as JSON objects, in order, with 1-based record indexes.
pub fn parquet_rows(name: &str, bytes: Bytes) -> Result<Vec<(u64, RawRecord<'static>)>> {
    let input_error = |message: String| StoreError::Input { name: name.to_owned(), message };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| input_error(format!("not a readable Parquet file: {e}")))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| input_error(e.to_string()))?;
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        writer.write(&batch).map_err(|e| input_error(e.to_string()))?;
        writer.finish().map_err(|e| input_error(e.to_string()))?;
        let rows: Vec<Value> = serde_json::from_slice(&writer.into_inner())
            .map_err(|e| input_error(format!("rows cannot be converted to JSON: {e}")))?;
        for row in rows {
            out.push((out.len() as u64 + 1, RawRecord::Value(row)));
        }
    }
    Ok(out)
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
