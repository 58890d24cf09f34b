//! The first pass over a partition when a job filters by segment: only the profile key, the
//! recency columns and the memberships' namespace, segment id, status and qualification time
//! are read (strings as dictionary keys). Memberships of the wanted segments are resolved per
//! profile exactly as the merge does (latest qualification, ties to the most recent fragment),
//! so the pass yields the profiles that match and the entries each matches; every file is then
//! read in full only at the rows of those profiles, and without the membership column unless
//! the output needs it. Work in the second pass grows with the matches, not with the store.
//!
//! Resolving only the wanted segments is exact: a membership's resolution depends on the
//! entries of its own `(ns, segmentId)` and nothing else.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Range;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt64Type};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::ProjectionMask;
use segport_store::columns::{INGEST_MS, KEY, ORD, SEGMENTS, SEQ};

use crate::plan::SegmentMatch;
use crate::run::{EngineError, SourceFile};

/// Rows to read of one file: `None` reads them all; an empty selection skips the file.
pub(crate) type Selected = Option<RowSelection>;

/// A membership of a wanted segment, as one fragment holds it.
struct Seen {
    key: String,
    ns: String,
    segment: String,
    status: String,
    lqt: Option<i64>,
    /// Ingest time, commit sequence, position in the batch: "most recent" (DESIGN §5).
    recency: (i64, i64, u64),
}

/// The keys of `file` (in file order) and, when `wanted` is given, its memberships of those
/// segment ids.
fn scan(
    file: &SourceFile,
    wanted: Option<&HashSet<&str>>,
) -> Result<(Vec<StringArray>, Vec<Seen>), EngineError> {
    let path = &file.file.path;
    let store_error = |e: &dyn std::fmt::Display| EngineError::Store(format!("{path}: {e}"));
    let handle = File::open(&file.local_path).map_err(|e| store_error(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| store_error(&e))?;
    const MEMBERSHIP: [&str; 4] = ["ns", "segmentId", "status", "lastQualificationTime"];
    let leaves: Vec<usize> = builder
        .parquet_schema()
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let parts = c.path().parts();
            parts == [KEY]
                || (wanted.is_some()
                    && (parts == [ORD]
                        || parts == [INGEST_MS]
                        || parts == [SEQ]
                        || (parts.first().is_some_and(|p| p == SEGMENTS)
                            && parts.last().is_some_and(|p| MEMBERSHIP.contains(&p.as_str())))))
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
    let mut seen = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| store_error(&e))?;
        let key = batch
            .column_by_name(KEY)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| store_error(&"no key column"))?
            .clone();
        if let (Some(wanted), Some(segments)) = (wanted, batch.column_by_name(SEGMENTS)) {
            let int = |name: &str| {
                batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>())
            };
            let (ingest, seq) = (int(INGEST_MS), int(SEQ));
            let ord = batch.column_by_name(ORD).and_then(|c| c.as_primitive_opt::<UInt64Type>());
            let list = segments.as_list::<i32>();
            let items = list.values().as_struct();
            let dict = |name: &str| {
                items
                    .column_by_name(name)
                    .and_then(|c| c.as_dictionary_opt::<Int32Type>())
                    .ok_or_else(|| store_error(&format!("membership {name} is not a dictionary")))
            };
            let (ns, ids, status) = (dict("ns")?, dict("segmentId")?, dict("status")?);
            let lqt = items
                .column_by_name("lastQualificationTime")
                .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
            let text = |d: &arrow::array::DictionaryArray<Int32Type>, i: usize| -> Option<String> {
                let k = usize::try_from(d.keys().value(i)).ok()?;
                (d.keys().is_valid(i)).then(|| d.values().as_string::<i32>().value(k).to_owned())
            };
            let id_values = ids.values().as_string::<i32>();
            let wanted_ids: Vec<bool> =
                (0..id_values.len()).map(|i| wanted.contains(id_values.value(i))).collect();
            for row in 0..batch.num_rows() {
                let range =
                    list.value_offsets()[row] as usize..list.value_offsets()[row + 1] as usize;
                for i in range {
                    let is_wanted = ids.keys().is_valid(i)
                        && usize::try_from(ids.keys().value(i))
                            .is_ok_and(|k| wanted_ids.get(k).copied().unwrap_or(false));
                    if !is_wanted {
                        continue;
                    }
                    let (Some(ns), Some(segment), Some(status)) =
                        (text(ns, i), text(ids, i), text(status, i))
                    else {
                        continue;
                    };
                    let recency = (
                        ingest.map_or(file.file.ingest_ms.unwrap_or(0), |c| c.value(row)),
                        seq.map_or(file.file.seq, |c| c.value(row)),
                        ord.map_or(0, |c| c.value(row)),
                    );
                    seen.push(Seen {
                        key: key.value(row).to_owned(),
                        ns,
                        segment,
                        status,
                        lqt: lqt.filter(|c| c.is_valid(i)).map(|c| c.value(i)),
                        recency,
                    });
                }
            }
        }
        keys.push(key);
    }
    Ok((keys, seen))
}

/// The rows of `keys` whose key is one of `wanted` (sorted), as a selection of consecutive
/// ranges. Store files are sorted by key, so one walk over both compares strings instead of
/// hashing every key of the file; from the first key out of order (files are never written
/// so) it falls back to a binary search per key.
fn select(keys: &[StringArray], wanted: &[&str]) -> RowSelection {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut row = 0;
    let mut next = 0;
    let mut previous: Option<&str> = None;
    let mut sorted = true;
    for array in keys {
        for i in 0..array.len() {
            let key = array.value(i);
            sorted &= previous.is_none_or(|p| p <= key);
            let hit = if !sorted {
                wanted.binary_search(&key).is_ok()
            } else {
                while next < wanted.len() && wanted[next] < key {
                    next += 1;
                }
                wanted.get(next) == Some(&key)
            };
            previous = Some(key);
            if hit {
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

/// What the first pass found: per file of profiles and of events the rows to read, and per
/// matching profile key the segment entries (indices into the plan's) it matches.
pub(crate) struct Prefiltered {
    pub profile_rows: Vec<Selected>,
    pub event_rows: Vec<Selected>,
    pub matches: HashMap<String, Vec<usize>>,
}

/// Resolves the memberships of `entries`' segments over `profiles` and selects the rows of
/// the profiles that match at least one entry.
pub(crate) fn by_segment(
    entries: &[SegmentMatch],
    profiles: &[&SourceFile],
    events: &[&SourceFile],
) -> Result<Prefiltered, EngineError> {
    let ids: HashSet<&str> = entries.iter().map(|e| e.segment_id.as_str()).collect();
    let scanned: Vec<(Vec<StringArray>, Vec<Seen>)> =
        profiles.iter().map(|f| scan(f, Some(&ids))).collect::<Result<_, _>>()?;
    // Per key and (ns, segment id): the entry with the latest qualification, ties to the most
    // recent fragment — the rule of `merge::memberships`.
    let mut resolved: HashMap<&str, HashMap<(&str, &str), &Seen>> = HashMap::new();
    for seen in scanned.iter().flat_map(|(_, s)| s) {
        let order = |s: &Seen| (s.lqt.unwrap_or(i64::MIN), s.recency);
        let slot = resolved.entry(&seen.key).or_default();
        match slot.get(&(seen.ns.as_str(), seen.segment.as_str())) {
            Some(existing) if order(existing) >= order(seen) => {}
            _ => {
                slot.insert((&seen.ns, &seen.segment), seen);
            }
        }
    }
    let mut matches: HashMap<String, Vec<usize>> = HashMap::new();
    for (key, memberships) in resolved {
        let matched: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                memberships.values().any(|m| {
                    m.segment == e.segment_id
                        && m.ns.to_lowercase() == e.ns
                        && e.statuses.contains(&m.status)
                        && e.from_ms.is_none_or(|f| m.lqt.is_some_and(|t| t >= f))
                        && e.to_ms.is_none_or(|to| m.lqt.is_some_and(|t| t <= to))
                })
            })
            .map(|(i, _)| i)
            .collect();
        if !matched.is_empty() {
            matches.insert(key.to_owned(), matched);
        }
    }
    let mut wanted: Vec<&str> = matches.keys().map(String::as_str).collect();
    wanted.sort_unstable();
    let profile_rows = scanned.iter().map(|(keys, _)| Some(select(keys, &wanted))).collect();
    let event_rows = events
        .iter()
        .map(|f| Ok(Some(select(&scan(f, None)?.0, &wanted))))
        .collect::<Result<_, EngineError>>()?;
    Ok(Prefiltered { profile_rows, event_rows, matches })
}
