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
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::ProjectionMask;
use parquet::bloom_filter::Sbbf;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use segport_store::columns::{INGEST_MS, KEY, ORD, SEGMENTS, SEQ};

use crate::plan::SegmentMatch;
use crate::run::{EngineError, OpenFile};

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
    /// The fragment's row in its file.
    row: usize,
}

/// What the first pass learnt of one profile file.
struct Scanned {
    seen: Vec<Seen>,
    /// The file's keys in file order, when the file itself was scanned (it has no index).
    keys: Option<Vec<StringArray>>,
    /// Whether no key occurs twice in the file (its index says so).
    unique: bool,
}

/// The wanted segments' memberships of a profile file: from its membership index
/// ([`segport_store::index`]) when it has one, else by scanning the file.
fn memberships(open: &OpenFile, wanted: &HashSet<&str>) -> Result<Scanned, EngineError> {
    let file = open.source;
    let index = segport_store::index::index_path(&file.file.path)
        .and_then(|_| segport_store::index::index_path(&file.local_path.to_string_lossy()))
        .map(std::path::PathBuf::from);
    let handle = match index.as_ref().map(File::open) {
        Some(Ok(handle)) => handle,
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(file.error(&e));
        }
        _ => {
            let (keys, seen) = scan(open, Some(wanted))?;
            return Ok(Scanned { seen, keys: Some(keys), unique: false });
        }
    };
    let error = |e: &dyn std::fmt::Display| file.error(e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| error(&e))?;
    let metadata = builder.metadata().file_metadata();
    let unique = segport_store::index::has_unique_keys(metadata);
    let groups = segport_store::index::row_groups_of(metadata, wanted)
        .ok_or_else(|| error(&"the membership index names no segments"))?;
    let mut seen = Vec::new();
    if groups.is_empty() {
        return Ok(Scanned { seen, keys: None, unique });
    }
    let reader = builder
        .with_row_groups(groups)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| error(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| error(&e))?;
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| error(&format!("the membership index has no {name}")))
        };
        let (key, ns, segment, status) =
            (text(KEY)?, text("ns")?, text("segmentId")?, text("status")?);
        let int =
            |name: &str| batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>());
        let (ingest, seq) = (int(INGEST_MS), int(SEQ));
        let ord = batch.column_by_name(ORD).and_then(|c| c.as_primitive_opt::<UInt64Type>());
        let row = batch
            .column_by_name(segport_store::index::ROW)
            .and_then(|c| c.as_primitive_opt::<UInt32Type>())
            .ok_or_else(|| error(&"the membership index has no rows"))?;
        let lqt = batch
            .column_by_name("lastQualificationTime")
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
        for i in 0..batch.num_rows() {
            seen.push(Seen {
                key: key.value(i).to_owned(),
                ns: ns.value(i).to_owned(),
                segment: segment.value(i).to_owned(),
                status: status.value(i).to_owned(),
                lqt: lqt.filter(|c| c.is_valid(i)).map(|c| c.value(i)),
                recency: (
                    ingest.map_or(file.file.ingest_ms.unwrap_or(0), |c| c.value(i)),
                    seq.map_or(file.file.seq, |c| c.value(i)),
                    ord.map_or(0, |c| c.value(i)),
                ),
                row: row.value(i) as usize,
            });
        }
    }
    Ok(Scanned { seen, keys: None, unique })
}

/// The keys of `file` (in file order) and, when `wanted` is given, its memberships of those
/// segment ids.
fn scan(
    open: &OpenFile,
    wanted: Option<&HashSet<&str>>,
) -> Result<(Vec<StringArray>, Vec<Seen>), EngineError> {
    let file = open.source;
    let store_error = |e: &dyn std::fmt::Display| file.error(e);
    let builder = open.builder()?;
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
    let mut base = 0;
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
                        row: base + row,
                    });
                }
            }
        }
        base += key.len();
        keys.push(key);
    }
    Ok((keys, seen))
}

/// The rows (of `rows`, each with its key) whose key is one of `wanted` (sorted). Store
/// files are sorted by key, so one walk over both compares strings instead of hashing every
/// key; from the first key out of order (files are never written so) it falls back to a
/// binary search per key.
fn matching_rows<'a>(rows: impl Iterator<Item = (usize, &'a str)>, wanted: &[&str]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut next = 0;
    let mut previous: Option<&str> = None;
    let mut sorted = true;
    for (row, key) in rows {
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
            found.push(row);
        }
    }
    found
}

/// The rows of a scanned file's `keys` whose key is one of `wanted` (sorted).
fn select(keys: &[StringArray], wanted: &[&str]) -> RowSelection {
    let total = keys.iter().map(Array::len).sum();
    let all = keys.iter().flat_map(|a| (0..a.len()).map(move |i| a.value(i))).enumerate();
    rows_selection(matching_rows(all, wanted), total)
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
    profiles: &[&OpenFile],
    events: &[&OpenFile],
) -> Result<Prefiltered, EngineError> {
    let ids: HashSet<&str> = entries.iter().map(|e| e.segment_id.as_str()).collect();
    let scanned: Vec<Scanned> =
        profiles.iter().map(|f| memberships(f, &ids)).collect::<Result<_, _>>()?;
    // Per key and (ns, segment id): the entry with the latest qualification, ties to the most
    // recent fragment — the rule of `merge::memberships`.
    let mut resolved: HashMap<&str, HashMap<(&str, &str), &Seen>> = HashMap::new();
    for seen in scanned.iter().flat_map(|s| &s.seen) {
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
    let profile_rows = profiles
        .iter()
        .zip(&scanned)
        .map(|(file, scanned)| {
            let selection = match &scanned.keys {
                Some(keys) => select(keys, &wanted),
                None if scanned.unique => {
                    // A matching profile's only row here is the one its index rows name; the
                    // others are looked up by key (they matched through another file).
                    let mut rows: Vec<usize> = scanned
                        .seen
                        .iter()
                        .filter(|s| matches.contains_key(&s.key))
                        .map(|s| s.row)
                        .collect();
                    let here: HashSet<&str> = scanned.seen.iter().map(|s| s.key.as_str()).collect();
                    let elsewhere: Vec<&str> =
                        wanted.iter().copied().filter(|k| !here.contains(k)).collect();
                    rows.extend(lookup(file, &elsewhere)?);
                    rows_selection(rows, file.rows())
                }
                None => rows_selection(lookup(file, &wanted)?, file.rows()),
            };
            Ok(Some(selection))
        })
        .collect::<Result<_, EngineError>>()?;
    let event_rows = events
        .iter()
        .map(|f| Ok(Some(rows_selection(lookup(f, &wanted)?, f.rows()))))
        .collect::<Result<_, EngineError>>()?;
    Ok(Prefiltered { profile_rows, event_rows, matches })
}

/// `rows` (in any order, repeats allowed) of a file of `total` rows as a selection.
fn rows_selection(mut rows: Vec<usize>, total: usize) -> RowSelection {
    rows.sort_unstable();
    rows.dedup();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for row in rows {
        match ranges.last_mut() {
            Some(r) if r.end == row => r.end += 1,
            _ => ranges.push(row..row + 1),
        }
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

/// The rows of `file` whose key is one of `wanted` (sorted). Store files are sorted by key and
/// carry a bloom filter and page statistics of the key column, so only the pages whose key
/// range holds a wanted key the filter lets through are read; a file without them is read
/// whole.
fn lookup(open: &OpenFile, wanted: &[&str]) -> Result<Vec<usize>, EngineError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let file = open.source;
    let error = |e: &dyn std::fmt::Display| file.error(e);
    let builder = open.builder()?;
    // The key is the first column of every store file.
    if builder.parquet_schema().columns().first().is_none_or(|c| c.path().parts() != [KEY]) {
        return Err(error(&"the first column is not the profile key"));
    }
    let metadata = builder.metadata().clone();
    // A second handle for the bloom filters: the builder owns the first.
    let filters = File::open(&file.local_path).map_err(|e| error(&e))?;
    let mut pages: Vec<Range<usize>> = Vec::new();
    let mut start = 0usize;
    let mut present: Vec<&str> = Vec::new();
    for (g, group) in metadata.row_groups().iter().enumerate() {
        let rows = usize::try_from(group.num_rows()).unwrap_or(0);
        // The key's bloom filter rules out most keys the row group does not hold.
        let wanted =
            match Sbbf::read_from_column_chunk(group.column(0), &filters).map_err(|e| error(&e))? {
                Some(bloom) => {
                    present.clear();
                    present.extend(wanted.iter().copied().filter(|k| bloom.check(*k)));
                    if present.is_empty() {
                        start += rows;
                        continue;
                    }
                    &present[..]
                }
                None => wanted,
            };
        let index = metadata.page_index_for_row_group(g);
        match (index.column_index(0), index.page_locations(0)) {
            (Some(ColumnIndexMetaData::BYTE_ARRAY(keys)), Some(locations)) => {
                for (p, location) in locations.iter().enumerate() {
                    let first = usize::try_from(location.first_row_index).unwrap_or(0);
                    let end = locations
                        .get(p + 1)
                        .map_or(rows, |l| usize::try_from(l.first_row_index).unwrap_or(rows));
                    let (Some(min), Some(max)) = (keys.min_value(p), keys.max_value(p)) else {
                        continue;
                    };
                    let from = wanted.partition_point(|k| k.as_bytes() < min);
                    if wanted.get(from).is_some_and(|k| k.as_bytes() <= max) {
                        push_range(&mut pages, start + first..start + end);
                    }
                }
            }
            _ => push_range(&mut pages, start..start + rows),
        }
        start += rows;
    }
    if pages.is_empty() {
        return Ok(Vec::new());
    }
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [0]);
    let reader = builder
        .with_projection(mask)
        .with_row_selection(RowSelection::from_consecutive_ranges(pages.iter().cloned(), start))
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| error(&e))?;
    // Selected rows come back in order: map them to file rows through the page ranges.
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|e| error(&e))?.column(0).as_string::<i32>().clone());
    }
    let keys = batches.iter().flat_map(|a| (0..a.len()).map(move |i| a.value(i)));
    Ok(matching_rows(pages.into_iter().flatten().zip(keys), wanted))
}

fn push_range(ranges: &mut Vec<Range<usize>>, range: Range<usize>) {
    match ranges.last_mut() {
        Some(r) if r.end == range.start => r.end = range.end,
        _ => ranges.push(range),
    }
}
