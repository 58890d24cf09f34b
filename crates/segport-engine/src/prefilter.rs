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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::ops::Range;

use arrow::array::{Array, AsArray, DictionaryArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::RowSelection;
use parquet::arrow::ProjectionMask;
use parquet::bloom_filter::Sbbf;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use segport_store::columns::{INGEST_MS, KEY, ORD, SEGMENTS, SEQ};
use segport_store::snapshot::FileRef;

use crate::error::EngineError;
use crate::plan::SegmentMatch;
use crate::source::{push_range, OpenFile, Selected, SourceError};

/// A membership of a wanted segment, as one fragment holds it; its strings borrow from the
/// batches the first pass read.
#[derive(Clone, Copy)]
struct Seen<'a> {
    key: SortKey<'a>,
    /// Where the key is: the batch (numbered over the pass) and the row in it.
    at: (u32, u32),
    ns: &'a str,
    status: &'a str,
    lqt: Option<i64>,
    /// Ingest time, commit sequence, position in the batch: "most recent" (docs/api.md).
    recency: (i64, i64, u64),
    /// The fragment's row in its file.
    row: usize,
}

/// A profile key that orders and compares as the key itself, but by its first 16 bytes
/// (big-endian, zero-padded) first: most comparisons of the merge are decided there, without
/// a call to `memcmp`.
#[derive(Debug, Clone, Copy)]
struct SortKey<'a> {
    prefix: u128,
    key: &'a str,
}

/// How many leading bytes of a key its prefix holds.
const PREFIX: usize = 16;

impl PartialEq for SortKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
            && self.key.len() == other.key.len()
            && (self.key.len() <= PREFIX
                || self.key.as_bytes()[PREFIX..] == other.key.as_bytes()[PREFIX..])
    }
}

impl Eq for SortKey<'_> {}

impl PartialOrd for SortKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            let (a, b) = (self.key.as_bytes(), other.key.as_bytes());
            if a.len() <= PREFIX || b.len() <= PREFIX {
                // Equal prefixes and one key within them: that key is the start of the other
                // (the padding zeros matched the other's bytes), so the shorter comes first.
                a.len().cmp(&b.len())
            } else {
                a[PREFIX..].cmp(&b[PREFIX..])
            }
        })
    }
}

impl<'a> SortKey<'a> {
    fn new(key: &'a str) -> Self {
        let mut bytes = [0u8; PREFIX];
        let n = key.len().min(PREFIX);
        bytes[..n].copy_from_slice(&key.as_bytes()[..n]);
        Self { prefix: u128::from_be_bytes(bytes), key }
    }
}

/// Whether `name` lowercased is `lower`: namespaces are matched case-insensitively (docs/api.md)
/// and the plan holds them lowercased. ASCII names, the usual case, are compared byte by byte.
fn lowercase_eq(name: &str, lower: &str) -> bool {
    if name.is_ascii() {
        name.len() == lower.len()
            && name.bytes().zip(lower.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        name.chars().flat_map(char::to_lowercase).eq(lower.chars())
    }
}

/// The wanted segment ids, each with its slot.
struct Slots<'e>(Vec<&'e str>);

impl Slots<'_> {
    fn of(&self, segment: &str) -> Option<usize> {
        self.0.iter().position(|s| *s == segment)
    }
}

/// What the first pass read of one profile file.
struct Read {
    /// The index's row groups of the wanted segments, or (a file without an index) the file's
    /// own key, recency and membership columns.
    batches: Vec<RecordBatch>,
    indexed: bool,
    /// Whether no key occurs twice in the file (its index says so).
    unique: bool,
    /// The file's row of the first row scanned (a file without an index, read from the start
    /// of the run's key range).
    first_row: usize,
}

impl Read {
    /// The file's keys in file order, when the file itself was scanned.
    fn keys(&self) -> Option<Vec<&StringArray>> {
        if self.indexed {
            return None;
        }
        self.batches.iter().map(|b| b.column_by_name(KEY).and_then(|c| c.as_string_opt())).collect()
    }

    /// The memberships of the wanted segments it holds, as (slot, list) pairs, each list in
    /// key order (an index lists a segment's rows in data-file order, which is key order; a
    /// scan reads the file in that order). `first` numbers its first batch.
    fn lists<'a>(
        &'a self,
        file: &'a FileRef,
        slots: &Slots,
        first: u32,
    ) -> Result<Vec<(usize, List<'a>)>, EngineError> {
        if self.indexed {
            let mut lists = Vec::new();
            for (b, batch) in self.batches.iter().enumerate() {
                if let Some((slot, list)) = index_list(batch, first + b as u32, file, slots)? {
                    lists.push((slot, List::Index(list)));
                }
            }
            return Ok(lists);
        }
        let mut seen: Vec<Vec<Seen>> = slots.0.iter().map(|_| Vec::new()).collect();
        let mut base = self.first_row;
        for (b, batch) in self.batches.iter().enumerate() {
            scan_entries(batch, first + b as u32, base, file, slots, &mut seen)?;
            base += batch.num_rows();
        }
        Ok(seen.into_iter().enumerate().map(|(slot, l)| (slot, List::Scanned(l))).collect())
    }

    /// The key column of each batch read.
    fn key_arrays(&self) -> Result<Vec<StringArray>, EngineError> {
        self.batches
            .iter()
            .map(|b| {
                b.column_by_name(KEY)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .cloned()
                    .ok_or_else(|| missing("a key column"))
            })
            .collect()
    }
}

fn missing(what: &str) -> EngineError {
    EngineError::store(format!("a store file without {what}"))
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
/// ([`segport_store::index`]) when it has one, else by scanning the file. Only the rows inside
/// the run's key range count: a unit that is one range of a large partition resolves its own
/// profiles, not the whole partition's (and then looks up only their events).
fn read(open: &OpenFile, wanted: &HashSet<&str>) -> Result<Read, EngineError> {
    let file = open.source;
    let error = |e: &dyn std::fmt::Display| file.error(e);
    let index = file.open_index().map_err(|e| error(&segport_model::error::chain(&e)))?;
    match index {
        Some(index) => {
            let batches =
                index.batches_of(wanted).map_err(|e| error(&segport_model::error::chain(&e)))?;
            let batches = match &open.bounds {
                Some(bounds) => {
                    batches.into_iter().map(|b| within(b, bounds)).collect::<Result<_, _>>()?
                }
                None => batches,
            };
            Ok(Read { batches, indexed: true, unique: index.unique_keys(), first_row: 0 })
        }
        None => Ok(Read {
            batches: scan(open)?,
            indexed: false,
            unique: false,
            first_row: open.bounds.as_ref().map_or(0, |b| b.start),
        }),
    }
}

/// The memberships of an index batch whose store-file rows are in `bounds`. An index batch
/// lists its segment's memberships in file order, so they are one slice of it.
fn within(batch: RecordBatch, bounds: &Range<usize>) -> Result<RecordBatch, EngineError> {
    let rows = batch
        .column_by_name(segport_store::index::ROW)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| missing("index rows"))?
        .values();
    let start = rows.partition_point(|r| (*r as usize) < bounds.start);
    let end = rows.partition_point(|r| (*r as usize) < bounds.end);
    Ok(batch.slice(start, end.saturating_sub(start)))
}

/// One wanted segment's memberships in one file, in key order.
enum List<'a> {
    /// An index batch, read in place: entries are made as the merge reaches them.
    Index(IndexList<'a>),
    /// Gathered by scanning a file without an index.
    Scanned(Vec<Seen<'a>>),
}

impl<'a> List<'a> {
    fn len(&self) -> usize {
        match self {
            List::Index(l) => l.key.len(),
            List::Scanned(items) => items.len(),
        }
    }

    fn key(&self, i: usize) -> SortKey<'a> {
        match self {
            List::Index(l) => SortKey::new(l.key.value(i)),
            List::Scanned(items) => items[i].key,
        }
    }

    fn get(&self, i: usize) -> Seen<'a> {
        match self {
            List::Index(l) => l.get(i),
            List::Scanned(items) => items[i],
        }
    }
}

/// The columns of an index batch (the memberships of one segment).
struct IndexList<'a> {
    /// The batch's number over the pass.
    number: u32,
    key: &'a StringArray,
    ns: &'a StringArray,
    status: &'a StringArray,
    lqt: Option<&'a PrimitiveArray<TimestampMillisecondType>>,
    recency: Recency<'a>,
    row: &'a PrimitiveArray<UInt32Type>,
}

impl<'a> IndexList<'a> {
    fn get(&self, i: usize) -> Seen<'a> {
        Seen {
            key: SortKey::new(self.key.value(i)),
            at: (self.number, i as u32),
            ns: self.ns.value(i),
            status: self.status.value(i),
            lqt: self.lqt.filter(|c| c.is_valid(i)).map(|c| c.value(i)),
            recency: self.recency.at(i),
            row: self.row.value(i) as usize,
        }
    }
}

/// The index rows of `batch`, numbered `number`, with their slot: the memberships of one
/// segment (only the wanted segments' batches were read); `None` for an empty batch.
fn index_list<'a>(
    batch: &'a RecordBatch,
    number: u32,
    file: &'a FileRef,
    slots: &Slots,
) -> Result<Option<(usize, IndexList<'a>)>, EngineError> {
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(name))
    };
    let (key, ns, segment, status) = (text(KEY)?, text("ns")?, text("segmentId")?, text("status")?);
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let Some(slot) = slots.of(segment.value(0)) else { return Ok(None) };
    let row = batch
        .column_by_name(segport_store::index::ROW)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| missing("index rows"))?;
    let lqt = batch
        .column_by_name("lastQualificationTime")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let recency = Recency::of(batch, file);
    Ok(Some((slot, IndexList { number, key, ns, status, lqt, recency, row })))
}

/// The key, recency and the memberships' namespace, segment id, status and qualification time
/// of every row of a file without an index (inside the run's key range).
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
    let mut builder = builder.with_projection(mask).with_batch_size(64 * 1024);
    if let Some(bounds) = &open.bounds {
        let ranges = std::iter::once(bounds.clone());
        builder =
            builder.with_row_selection(RowSelection::from_consecutive_ranges(ranges, open.rows()?));
    }
    let reader = builder.build().map_err(|e| store_error(&e))?;
    reader.map(|b| b.map_err(|e| store_error(&e))).collect()
}

/// The memberships of the wanted segments in a scanned batch, numbered `number`, whose first
/// row is row `base` of its file. Segment ids are compared as dictionary keys.
fn scan_entries<'a>(
    batch: &'a RecordBatch,
    number: u32,
    base: usize,
    file: &FileRef,
    slots: &Slots,
    seen: &mut [Vec<Seen<'a>>],
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
    // The slot of each dictionary value, once.
    let slot_of: Vec<Option<usize>> =
        (0..id_values.len()).map(|i| slots.of(id_values.value(i))).collect();
    for row in 0..batch.num_rows() {
        let range = list.value_offsets()[row] as usize..list.value_offsets()[row + 1] as usize;
        for i in range {
            let slot = if ids.keys().is_valid(i) {
                usize::try_from(ids.keys().value(i))
                    .ok()
                    .and_then(|k| slot_of.get(k).copied().flatten())
            } else {
                None
            };
            let Some(slot) = slot else { continue };
            let (Some(ns), Some(status)) = (text(ns, i), text(status, i)) else {
                continue;
            };
            seen[slot].push(Seen {
                key: SortKey::new(key.value(row)),
                at: (number, row as u32),
                ns,
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
fn select(keys: &[&StringArray], first: usize, wanted: &[&str]) -> Vec<usize> {
    let all = keys.iter().flat_map(|a| (0..a.len()).map(move |i| a.value(i)));
    matching_rows((first..).zip(all), wanted)
}

/// The profiles that match, in key order, with the segment entries (indices into the plan's)
/// each matches. Keys point into the batches the first pass read.
pub(crate) struct Matches {
    keys: Vec<StringArray>,
    at: Vec<(u32, u32)>,
    /// Where each profile's entries end in `entries`.
    ends: Vec<usize>,
    entries: Vec<usize>,
}

impl Matches {
    fn key(&self, i: usize) -> &str {
        let (batch, row) = self.at[i];
        self.keys[batch as usize].value(row as usize)
    }

    /// The entries `key` matches; `next` is where the previous call, for a smaller key, left
    /// off (keys are asked for in increasing order).
    pub(crate) fn seek(&self, next: &mut usize, key: &str) -> &[usize] {
        while *next < self.at.len() && self.key(*next) < key {
            *next += 1;
        }
        if *next < self.at.len() && self.key(*next) == key {
            let start = if *next == 0 { 0 } else { self.ends[*next - 1] };
            &self.entries[start..self.ends[*next]]
        } else {
            &[]
        }
    }

    fn push(&mut self, at: (u32, u32), entries: &[usize]) {
        self.at.push(at);
        self.entries.extend_from_slice(entries);
        self.ends.push(self.entries.len());
    }
}

/// What the first pass found: per file of profiles and of events the rows to read, and the
/// profiles that match.
pub(crate) struct Prefiltered {
    pub profile_rows: Vec<Selected>,
    pub event_rows: Vec<Selected>,
    pub matches: Matches,
}

/// Resolves the memberships of `entries`' segments over `profiles` and selects the rows of
/// the profiles that match at least one entry.
///
/// Every file's memberships of a wanted segment come in key order, so one k-way merge by key
/// over all of them meets each profile's memberships together: they are resolved there (per
/// segment and namespace, the latest qualification, ties to the most recent fragment — the
/// rule of `merge::memberships`), and the profile's rows are noted as it goes. No key is
/// hashed or copied.
pub(crate) fn by_segment(
    entries: &[SegmentMatch],
    profiles: &[&OpenFile],
    events: &[&OpenFile],
) -> Result<Prefiltered, EngineError> {
    let mut slots = Slots(Vec::new());
    for e in entries {
        if slots.of(&e.segment_id).is_none() {
            slots.0.push(&e.segment_id);
        }
    }
    let ids: HashSet<&str> = slots.0.iter().copied().collect();
    // The entries of each slot.
    let by_slot: Vec<Vec<usize>> = slots
        .0
        .iter()
        .map(|id| (0..entries.len()).filter(|i| entries[*i].segment_id == *id).collect())
        .collect();
    let reads: Vec<Read> = profiles.iter().map(|f| read(f, &ids)).collect::<Result<_, _>>()?;
    let mut keys = Vec::new();
    // Per file and slot, the memberships in key order.
    let mut seen: Vec<(usize, usize, List)> = Vec::new();
    for (f, (read, open)) in reads.iter().zip(profiles).enumerate() {
        let first = keys.len() as u32;
        keys.extend(read.key_arrays()?);
        let lists = read.lists(&open.source.file, &slots, first)?;
        seen.extend(lists.into_iter().filter(|(_, l)| l.len() > 0).map(|(s, l)| (f, s, l)));
    }

    // Per file: the rows of matching profiles its index names, and (for a file whose index
    // says its keys are unique) the matching keys it did not name, to look up.
    let unique: Vec<bool> = reads.iter().map(|r| r.indexed && r.unique).collect();
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); profiles.len()];
    let mut elsewhere: Vec<Vec<&str>> = vec![Vec::new(); profiles.len()];
    let mut matches =
        Matches { keys: Vec::new(), at: Vec::new(), ends: Vec::new(), entries: Vec::new() };
    let mut wanted: Vec<&str> = Vec::new();

    let mut heads: Vec<usize> = vec![0; seen.len()];
    let mut heap: BinaryHeap<Reverse<(SortKey, usize)>> =
        seen.iter().enumerate().map(|(l, (_, _, list))| Reverse((list.key(0), l))).collect();
    let mut group: Vec<(usize, usize, Seen)> = Vec::new();
    let mut resolved: Vec<(usize, Seen)> = Vec::new();
    let mut hits: Vec<usize> = Vec::new();
    let mut in_group = vec![false; profiles.len()];
    while let Some(Reverse((key, _))) = heap.peek().copied() {
        // Every membership of `key`, from every list.
        group.clear();
        while let Some(Reverse((k, l))) = heap.peek().copied() {
            if k != key {
                break;
            }
            heap.pop();
            let (file, slot, list) = (seen[l].0, seen[l].1, &seen[l].2);
            while heads[l] < list.len() {
                let next = list.key(heads[l]);
                if next != key {
                    heap.push(Reverse((next, l)));
                    break;
                }
                group.push((file, slot, list.get(heads[l])));
                heads[l] += 1;
            }
        }
        // Per slot and namespace: the membership with the latest qualification, ties to the
        // most recent fragment.
        resolved.clear();
        let order = |s: &Seen| (s.lqt.unwrap_or(i64::MIN), s.recency);
        for (_, slot, s) in &group {
            match resolved.iter_mut().find(|(sl, r)| sl == slot && r.ns == s.ns) {
                Some((_, existing)) => {
                    if order(s) > order(existing) {
                        *existing = *s;
                    }
                }
                None => resolved.push((*slot, *s)),
            }
        }
        hits.clear();
        for (slot, m) in &resolved {
            for &i in &by_slot[*slot] {
                let e = &entries[i];
                let hit = lowercase_eq(m.ns, &e.ns)
                    && e.statuses.iter().any(|s| s == m.status)
                    && e.from_ms.is_none_or(|f| m.lqt.is_some_and(|t| t >= f))
                    && e.to_ms.is_none_or(|to| m.lqt.is_some_and(|t| t <= to));
                if hit {
                    hits.push(i);
                }
            }
        }
        if hits.is_empty() {
            continue;
        }
        hits.sort_unstable();
        hits.dedup();
        matches.push(group[0].2.at, &hits);
        wanted.push(key.key);
        in_group.iter_mut().for_each(|g| *g = false);
        for (file, _, s) in &group {
            in_group[*file] = true;
            rows[*file].push(s.row);
        }
        for f in (0..profiles.len()).filter(|f| unique[*f] && !in_group[*f]) {
            elsewhere[f].push(key.key);
        }
    }
    matches.keys = keys;

    let profile_rows = profiles
        .iter()
        .zip(&reads)
        .enumerate()
        .map(|(f, (file, read))| {
            let selection = match read.keys() {
                Some(keys) => select(&keys, read.first_row, &wanted),
                None if unique[f] => {
                    // A matching profile's only row here is the one its index rows name; the
                    // others are looked up by key (they matched through another file).
                    let mut found = std::mem::take(&mut rows[f]);
                    found.extend(lookup(file, &elsewhere[f])?);
                    ascending(found)
                }
                None => ascending(lookup(file, &wanted)?),
            };
            Ok(Some(selection))
        })
        .collect::<Result<_, EngineError>>()?;
    let event_rows = events
        .iter()
        .map(|f| Ok(Some(ascending(lookup(f, &wanted)?))))
        .collect::<Result<_, EngineError>>()?;
    Ok(Prefiltered { profile_rows, event_rows, matches })
}

/// `rows` (in any order, repeats allowed) in ascending order without repeats.
fn ascending(mut rows: Vec<usize>) -> Vec<usize> {
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// The rows of `file` whose key is one of `wanted` (sorted). Store files are sorted by key: in
/// a file's row file each wanted key is a binary search. Without one, the Parquet file's bloom
/// filter and page statistics of the key column leave only the pages whose key range holds a
/// wanted key the filter lets through to read; a file without them is read whole.
fn lookup(open: &OpenFile, wanted: &[&str]) -> Result<Vec<usize>, EngineError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(rows) = &open.rows {
        return rows.rows_of(wanted).map_err(EngineError::store);
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
    let filters = file.open_parquet().map_err(|e| error(&e))?;
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

#[cfg(test)]
mod tests {
    use super::SortKey;

    /// Keys of every length around the prefix's, differing before, at and after it, with NUL
    /// bytes where the prefix pads with zeros.
    fn keys() -> Vec<String> {
        let mut keys = vec![String::new(), "ecid:ECID-1".into(), "email:a.b.7@example.com".into()];
        let base = "ecid:ECID-123456789";
        for len in 12..=base.len() {
            for tail in ["", "\0", "\0\0", "a", "\0a", "b", "a\0"] {
                keys.push(format!("{}{tail}", &base[..len]));
                keys.push(format!("{}x{tail}", &base[..len - 1]));
            }
        }
        keys
    }

    #[test]
    fn sort_keys_order_and_compare_as_their_strings() {
        let keys = keys();
        for a in &keys {
            for b in &keys {
                let (ka, kb) = (SortKey::new(a), SortKey::new(b));
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b, "{a:?} == {b:?}");
            }
        }
    }
}
