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

use arrow::array::{Array, AsArray, DictionaryArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::RowSelection;
use parquet::arrow::ProjectionMask;
use parquet::bloom_filter::Sbbf;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use segport_store::columns::{INGEST_MS, KEY, ORD, SEGMENTS, SEQ};
use segport_store::compact::FileRef;

use crate::plan::SegmentMatch;
use crate::run::{EngineError, OpenFile};

/// Rows to read of one file: `None` reads them all; an empty selection skips the file.
pub(crate) type Selected = Option<RowSelection>;

/// A membership of a wanted segment, as one fragment holds it; its strings borrow from the
/// batches the first pass read.
struct Seen<'a> {
    key: &'a str,
    ns: &'a str,
    segment: &'a str,
    status: &'a str,
    lqt: Option<i64>,
    /// Ingest time, commit sequence, position in the batch: "most recent" (DESIGN §5).
    recency: (i64, i64, u64),
    /// The fragment's row in its file.
    row: usize,
}

/// What the first pass read of one profile file.
struct Read {
    /// The index's row groups of the wanted segments, or (a file without an index) the file's
    /// own key, recency and membership columns.
    batches: Vec<RecordBatch>,
    indexed: bool,
    /// Whether no key occurs twice in the file (its index says so).
    unique: bool,
}

impl Read {
    /// The file's keys in file order, when the file itself was scanned.
    fn keys(&self) -> Option<Vec<&StringArray>> {
        if self.indexed {
            return None;
        }
        self.batches.iter().map(|b| b.column_by_name(KEY).and_then(|c| c.as_string_opt())).collect()
    }

    /// The memberships of `wanted` segments it holds.
    fn entries<'a>(
        &'a self,
        file: &FileRef,
        wanted: &HashSet<&str>,
    ) -> Result<Vec<Seen<'a>>, EngineError> {
        let mut seen = Vec::new();
        let mut base = 0;
        for batch in &self.batches {
            if self.indexed {
                index_entries(batch, file, &mut seen)?;
            } else {
                scan_entries(batch, base, file, wanted, &mut seen)?;
                base += batch.num_rows();
            }
        }
        Ok(seen)
    }
}

fn missing(what: &str) -> EngineError {
    EngineError::Store(format!("a store file without {what}"))
}

/// The recency columns of a batch, looked up once: per row in compacted files, else the
/// file's.
struct Recency<'a> {
    ingest: Option<&'a PrimitiveArray<Int64Type>>,
    seq: Option<&'a PrimitiveArray<Int64Type>>,
    ord: Option<&'a PrimitiveArray<UInt64Type>>,
    file: &'a FileRef,
}

impl<'a> Recency<'a> {
    fn of(batch: &'a RecordBatch, file: &'a FileRef) -> Self {
        let int = |name: &str| batch.column_by_name(name).and_then(|c| c.as_primitive_opt());
        let ord = batch.column_by_name(ORD).and_then(|c| c.as_primitive_opt());
        Self { ingest: int(INGEST_MS), seq: int(SEQ), ord, file }
    }

    /// Ingest time, commit sequence, position in the batch of row `row`.
    fn at(&self, row: usize) -> (i64, i64, u64) {
        (
            self.ingest.map_or(self.file.ingest_ms.unwrap_or(0), |c| c.value(row)),
            self.seq.map_or(self.file.seq, |c| c.value(row)),
            self.ord.map_or(0, |c| c.value(row)),
        )
    }
}

/// The wanted segments' memberships of a profile file: from its membership index
/// ([`segport_store::index`]) when it has one, else by scanning the file.
fn read(open: &OpenFile, wanted: &HashSet<&str>) -> Result<Read, EngineError> {
    let file = open.source;
    let error = |e: &dyn std::fmt::Display| file.error(e);
    // The index sits next to the data file: its path is derived from the local path, once
    // the store path says the file is a data file.
    let index = segport_store::index::index_path(&file.file.path)
        .and_then(|_| segport_store::index::index_path(&file.local_path.to_string_lossy()));
    let index = match index {
        Some(path) => segport_store::index::Index::open(std::path::Path::new(&path))
            .map_err(|e| error(&segport_model::error::chain(&e)))?,
        None => None,
    };
    match index {
        Some(index) => Ok(Read {
            batches: index.batches_of(wanted),
            indexed: true,
            unique: index.unique_keys(),
        }),
        None => Ok(Read { batches: scan(open)?, indexed: false, unique: false }),
    }
}

/// The index rows of `batch` (all of wanted segments: only their row groups were read).
fn index_entries<'a>(
    batch: &'a RecordBatch,
    file: &FileRef,
    seen: &mut Vec<Seen<'a>>,
) -> Result<(), EngineError> {
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(name))
    };
    let (key, ns, segment, status) = (text(KEY)?, text("ns")?, text("segmentId")?, text("status")?);
    let row = batch
        .column_by_name(segport_store::index::ROW)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| missing("index rows"))?;
    let lqt = batch
        .column_by_name("lastQualificationTime")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let recency = Recency::of(batch, file);
    for i in 0..batch.num_rows() {
        seen.push(Seen {
            key: key.value(i),
            ns: ns.value(i),
            segment: segment.value(i),
            status: status.value(i),
            lqt: lqt.filter(|c| c.is_valid(i)).map(|c| c.value(i)),
            recency: recency.at(i),
            row: row.value(i) as usize,
        });
    }
    Ok(())
}

/// The key, recency and the memberships' namespace, segment id, status and qualification time
/// of every row of a file without an index.
fn scan(open: &OpenFile) -> Result<Vec<RecordBatch>, EngineError> {
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
                || parts == [ORD]
                || parts == [INGEST_MS]
                || parts == [SEQ]
                || (parts.first().is_some_and(|p| p == SEGMENTS)
                    && parts.last().is_some_and(|p| MEMBERSHIP.contains(&p.as_str())))
        })
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| store_error(&e))?;
    reader.map(|b| b.map_err(|e| store_error(&e))).collect()
}

/// The memberships of `wanted` segments in a scanned batch whose first row is row `base` of
/// its file. Segment ids are compared as dictionary keys.
fn scan_entries<'a>(
    batch: &'a RecordBatch,
    base: usize,
    file: &FileRef,
    wanted: &HashSet<&str>,
    seen: &mut Vec<Seen<'a>>,
) -> Result<(), EngineError> {
    let key = batch.column_by_name(KEY).and_then(|c| c.as_string_opt::<i32>());
    let key = key.ok_or_else(|| missing("a key column"))?;
    let Some(segments) = batch.column_by_name(SEGMENTS) else { return Ok(()) };
    let list = segments.as_list::<i32>();
    let items = list.values().as_struct();
    let dict = |name: &str| {
        items
            .column_by_name(name)
            .and_then(|c| c.as_dictionary_opt::<Int32Type>())
            .ok_or_else(|| missing(&format!("memberships' {name} as a dictionary")))
    };
    let (ns, ids, status) = (dict("ns")?, dict("segmentId")?, dict("status")?);
    let lqt = items
        .column_by_name("lastQualificationTime")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let text = |d: &'a DictionaryArray<Int32Type>, i: usize| -> Option<&'a str> {
        let k = usize::try_from(d.keys().value(i)).ok()?;
        (d.keys().is_valid(i)).then(|| d.values().as_string::<i32>().value(k))
    };
    let recency = Recency::of(batch, file);
    let id_values = ids.values().as_string::<i32>();
    let wanted_ids: Vec<bool> =
        (0..id_values.len()).map(|i| wanted.contains(id_values.value(i))).collect();
    for row in 0..batch.num_rows() {
        let range = list.value_offsets()[row] as usize..list.value_offsets()[row + 1] as usize;
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
            seen.push(Seen {
                key: key.value(row),
                ns,
                segment,
                status,
                lqt: lqt.filter(|c| c.is_valid(i)).map(|c| c.value(i)),
                recency: recency.at(row),
                row: base + row,
            });
        }
    }
    Ok(())
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
fn select(keys: &[&StringArray], wanted: &[&str]) -> RowSelection {
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
    let reads: Vec<Read> = profiles.iter().map(|f| read(f, &ids)).collect::<Result<_, _>>()?;
    let seen: Vec<Vec<Seen>> = reads
        .iter()
        .zip(profiles)
        .map(|(r, f)| r.entries(&f.source.file, &ids))
        .collect::<Result<_, _>>()?;
    // Per key and (ns, segment id): the entry with the latest qualification, ties to the most
    // recent fragment — the rule of `merge::memberships`.
    let order = |s: &Seen| (s.lqt.unwrap_or(i64::MIN), s.recency);
    let mut resolved: foldhash::HashMap<(&str, &str, &str), &Seen> = foldhash::HashMap::default();
    for s in seen.iter().flatten() {
        resolved
            .entry((s.key, s.ns, s.segment))
            .and_modify(|existing| {
                if order(s) > order(existing) {
                    *existing = s;
                }
            })
            .or_insert(s);
    }
    let mut matches: HashMap<String, Vec<usize>> = HashMap::new();
    for ((key, _, _), m) in resolved {
        for (i, e) in entries.iter().enumerate() {
            let hit = m.segment == e.segment_id
                && m.ns.chars().flat_map(char::to_lowercase).eq(e.ns.chars())
                && e.statuses.iter().any(|s| s == m.status)
                && e.from_ms.is_none_or(|f| m.lqt.is_some_and(|t| t >= f))
                && e.to_ms.is_none_or(|to| m.lqt.is_some_and(|t| t <= to));
            if hit {
                matches.entry(key.to_owned()).or_default().push(i);
            }
        }
    }
    for matched in matches.values_mut() {
        matched.sort_unstable();
        matched.dedup();
    }
    let mut wanted: Vec<&str> = matches.keys().map(String::as_str).collect();
    wanted.sort_unstable();
    let profile_rows = profiles
        .iter()
        .zip(reads.iter().zip(&seen))
        .map(|(file, (read, seen))| {
            let selection = match read.keys() {
                Some(keys) => select(&keys, &wanted),
                None if read.unique => {
                    // A matching profile's only row here is the one its index rows name; the
                    // others are looked up by key (they matched through another file).
                    let mut rows: Vec<usize> = seen
                        .iter()
                        .filter(|s| matches.contains_key(s.key))
                        .map(|s| s.row)
                        .collect();
                    let here: HashSet<&str> = seen.iter().map(|s| s.key).collect();
                    let elsewhere: Vec<&str> =
                        wanted.iter().copied().filter(|k| !here.contains(k)).collect();
                    rows.extend(lookup(file, &elsewhere)?);
                    rows_selection(rows, file.rows()?)
                }
                None => rows_selection(lookup(file, &wanted)?, file.rows()?),
            };
            Ok(Some(selection))
        })
        .collect::<Result<_, EngineError>>()?;
    let event_rows = events
        .iter()
        .map(|f| Ok(Some(rows_selection(lookup(f, &wanted)?, f.rows()?))))
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
    if let Some(rows) = &open.rows {
        return rows
            .rows_of(wanted)
            .map_err(|e| EngineError::Store(segport_model::error::chain(&e)));
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
