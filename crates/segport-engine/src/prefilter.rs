//! The first pass over a partition when a job filters by segment: only the profile key and the
//! memberships' segment ids are read (as dictionary keys, so a row's test is integer compares),
//! giving the keys that can match at all; every file is then read in full only at the rows of
//! those keys. Work in the second pass grows with the matching profiles, not with the store.
//!
//! The candidate test is deliberately loose (a membership in a wanted segment id, whatever its
//! namespace, status or time, in any fragment): it must never drop a profile the exact rules in
//! `run` would export, since a newer fragment can overrule an older one.

use std::collections::HashSet;
use std::fs::File;
use std::ops::Range;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::ProjectionMask;
use segport_store::columns::{KEY, SEGMENTS};

use crate::run::{EngineError, SourceFile};

/// Rows to read of one file: `None` reads them all; an empty selection skips the file.
pub(crate) type Selected = Option<RowSelection>;

/// The keys of `file` (in file order), and per row whether it holds a membership in one of
/// `wanted` segment ids; the latter only when `wanted` is given.
fn scan(
    file: &SourceFile,
    wanted: Option<&HashSet<&str>>,
) -> Result<(Vec<StringArray>, Vec<bool>), EngineError> {
    let store_error =
        |e: &dyn std::fmt::Display| EngineError::Store(format!("{}: {e}", file.file.path));
    let handle = File::open(&file.local_path).map_err(|e| store_error(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| store_error(&e))?;
    let leaves: Vec<usize> = builder
        .parquet_schema()
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let parts = c.path().parts();
            parts == [KEY]
                || (wanted.is_some()
                    && parts.first().is_some_and(|p| p == SEGMENTS)
                    && parts.last().is_some_and(|p| p == "segmentId"))
        })
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| store_error(&e))?;
    let mut keys = Vec::new();
    let mut hits = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| store_error(&e))?;
        let key = batch
            .column_by_name(KEY)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| EngineError::Store(format!("{}: no key column", file.file.path)))?;
        if let (Some(wanted), Some(segments)) = (wanted, batch.column_by_name(SEGMENTS)) {
            let list = segments.as_list::<i32>();
            let ids = list
                .values()
                .as_struct()
                .column_by_name("segmentId")
                .and_then(|c| c.as_dictionary_opt::<Int32Type>())
                .ok_or_else(|| {
                    EngineError::Store(format!(
                        "{}: segment ids are not a dictionary",
                        file.file.path
                    ))
                })?;
            let values = ids.values().as_string::<i32>();
            let wanted_keys: Vec<bool> =
                (0..values.len()).map(|i| wanted.contains(values.value(i))).collect();
            let id_keys = ids.keys();
            for row in 0..batch.num_rows() {
                let range =
                    list.value_offsets()[row] as usize..list.value_offsets()[row + 1] as usize;
                hits.push(
                    range
                        .into_iter()
                        .any(|i| id_keys.is_valid(i) && wanted_keys[id_keys.value(i) as usize]),
                );
            }
        } else if wanted.is_some() {
            // A file without memberships (events, or a dataset that never had any).
            hits.extend(std::iter::repeat_n(false, batch.num_rows()));
        }
        keys.push(key.clone());
    }
    Ok((keys, hits))
}

/// The rows of `keys` whose key is in `candidates`, as a selection of consecutive ranges.
fn select(keys: &[StringArray], candidates: &HashSet<String>) -> RowSelection {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut row = 0;
    for array in keys {
        for i in 0..array.len() {
            if candidates.contains(array.value(i)) {
                match ranges.last_mut() {
                    Some(r) if r.end == row => r.end += 1,
                    _ => ranges.push(row..row + 1),
                }
            }
            row += 1;
        }
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), row)
}

/// Per file of `profiles` and of `events`, the rows that can belong to a profile holding a
/// membership in one of `segment_ids`.
pub(crate) fn by_segment(
    segment_ids: &HashSet<&str>,
    profiles: &[&SourceFile],
    events: &[&SourceFile],
) -> Result<(Vec<Selected>, Vec<Selected>), EngineError> {
    let scanned: Vec<(Vec<StringArray>, Vec<bool>)> =
        profiles.iter().map(|f| scan(f, Some(segment_ids))).collect::<Result<_, _>>()?;
    let mut candidates: HashSet<String> = HashSet::new();
    for (keys, hits) in &scanned {
        let mut row = 0;
        for array in keys {
            for i in 0..array.len() {
                if hits[row] {
                    candidates.insert(array.value(i).to_owned());
                }
                row += 1;
            }
        }
    }
    let profile_rows = scanned.iter().map(|(keys, _)| Some(select(keys, &candidates))).collect();
    let event_rows = events
        .iter()
        .map(|f| Ok(Some(select(&scan(f, None)?.0, &candidates))))
        .collect::<Result<_, EngineError>>()?;
    Ok((profile_rows, event_rows))
}
