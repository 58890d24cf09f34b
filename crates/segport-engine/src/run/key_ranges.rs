//! A partition run bounded to a range of profile keys reads exactly the profiles of that range:
//! runs over ranges that split the key space, put together, make the rows of one run over the
//! whole partition, whichever way the files are read (full scans, rows picked by a segment
//! filter, events, row files present or not).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use super::builders_agree::{plan, read_back, store, Store};
use super::{projections, run_partition, Progress};
use crate::plan::{EventWindow, ExportPlan, SegmentMatch};
use crate::prefilter::by_segment;
use crate::source::{KeyRange, OpenFile};

/// Every key of the partition's profile files, sorted, without repeats.
fn keys(store: &Store) -> Vec<String> {
    let mut keys = Vec::new();
    for file in &store.input.profiles {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.open_parquet().unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("__key").unwrap().as_string::<i32>();
            keys.extend(column.iter().flatten().map(str::to_owned));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The rows of each output batch of a run of `plan` over `keys`, as JSON text, and the rows by
/// namespace.
type Rows = (Vec<Vec<String>>, Vec<BTreeMap<String, u64>>);

fn run(store: &Store, plan: &ExportPlan, keys: KeyRange) -> Rows {
    let mut input = store.input.clone();
    input.keys = keys;
    let projections = projections(plan);
    let cancel = AtomicBool::new(false);
    let output = run_partition(plan, &projections, &input, &Progress::default(), &cancel).unwrap();
    let rows = read_back(output.files)
        .into_iter()
        .map(|file| {
            file.map(|(_, rows)| rows.iter().map(Value::to_string).collect()).unwrap_or_default()
        })
        .collect();
    (rows, output.by_namespace)
}

/// Adds `part` to `total`, batch by batch.
fn add(total: &mut Rows, part: Rows) {
    if total.0.is_empty() {
        total.0 = vec![Vec::new(); part.0.len()];
        total.1 = vec![BTreeMap::new(); part.1.len()];
    }
    for (all, rows) in total.0.iter_mut().zip(part.0) {
        all.extend(rows);
    }
    for (all, counts) in total.1.iter_mut().zip(part.1) {
        for (ns, n) in counts {
            *all.entry(ns).or_default() += n;
        }
    }
}

#[test]
fn ranges_that_split_the_keys_export_each_profile_once() {
    let store = store();
    let keys = keys(&store);
    assert!(keys.len() > 400, "{} keys", keys.len());
    // Bounds at keys, between keys, and before and after every key.
    let mut bounds = vec![
        keys[0].clone(),
        keys[37].clone(),
        format!("{}~", keys[150]),
        keys[151].clone(),
        keys[keys.len() / 2].clone(),
        keys[keys.len() - 1].clone(),
        format!("{}~", keys[keys.len() - 1]),
    ];
    bounds.sort();
    bounds.dedup();
    let mut ranges = vec![KeyRange { from: None, to: Some(bounds[0].clone()) }];
    for pair in bounds.windows(2) {
        ranges.push(KeyRange { from: Some(pair[0].clone()), to: Some(pair[1].clone()) });
    }
    ranges.push(KeyRange { from: bounds.last().cloned(), to: None });

    let segment = |i: usize| SegmentMatch {
        segment_id: store.segments[i].clone(),
        ns: "ups".into(),
        statuses: vec!["realized".into(), "existing".into(), "exited".into()],
        from_ms: None,
        to_ms: None,
    };
    let mut cases: Vec<(&str, ExportPlan)> = vec![("a full scan", plan(&store, &[]))];
    let mut segments = plan(&store, &["loyalty", "segmentMembership"]);
    segments.segments = Some(vec![segment(0), segment(1)]);
    segments.per_segment = true;
    cases.push(("rows picked by segment", segments));
    let mut with_events = plan(&store, &["personalEmail.address"]);
    with_events.events =
        Some(EventWindow { from_ms: None, to_ms: None, fields: vec![vec!["eventType".into()]] });
    with_events.empty_profiles = true;
    cases.push(("events and profiles without fragments", with_events));
    let mut both = plan(&store, &["personalEmail.address"]);
    both.segments = Some(vec![segment(1)]);
    both.events =
        Some(EventWindow { from_ms: None, to_ms: None, fields: vec![vec!["eventType".into()]] });
    cases.push(("rows picked by segment, with their events", both));

    // With every companion; without row files (the bounds are found from the Parquet keys);
    // without membership indexes either (the first pass scans the files).
    for companions in [Companions::All, Companions::NoRowFiles, Companions::None] {
        companions.remove(&store);
        for (case, plan) in &cases {
            let whole = run(&store, plan, KeyRange::all());
            assert!(whole.0.iter().any(|b| b.len() > 100), "{case}: too few rows");
            let mut parts = Rows::default();
            for range in &ranges {
                add(&mut parts, run(&store, plan, range.clone()));
            }
            assert_eq!(parts.1, whole.1, "{case}, {companions:?}: rows by namespace");
            for (b, (mut got, mut want)) in parts.0.into_iter().zip(whole.0).enumerate() {
                got.sort();
                want.sort();
                assert_eq!(got.len(), want.len(), "{case}, {companions:?}: batch {b}");
                assert!(got == want, "{case}, {companions:?}: batch {b}'s rows differ");
            }
        }
    }
    // An empty range reads nothing.
    let empty = KeyRange { from: Some(keys[10].clone()), to: Some(keys[10].clone()) };
    let (rows, _) = run(&store, &cases[0].1, empty);
    assert!(rows.iter().all(Vec::is_empty));
}

/// Which companions of the store files a test leaves in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Companions {
    All,
    NoRowFiles,
    None,
}

impl Companions {
    /// Deletes the companions this case goes without.
    fn remove(self, store: &Store) {
        let gone: &[&str] = match self {
            Companions::All => &[],
            Companions::NoRowFiles => &[".rows.arrow"],
            Companions::None => &[".rows.arrow", ".members.arrow"],
        };
        let mut stack = vec![store.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.to_string_lossy().into_owned();
                if path.is_dir() {
                    stack.push(path);
                } else if gone.iter().any(|g| name.ends_with(g)) {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
    }
}

/// The first pass of a segment filter, over a key range, picks exactly the rows a pass over
/// the whole partition picks inside that range: it resolves the range's memberships and looks
/// up the range's events, not the whole partition's (a unit of a large partition would
/// otherwise redo the whole partition's first pass).
#[test]
fn the_first_pass_keeps_to_the_range() {
    let store = store();
    let keys = keys(&store);
    let range = KeyRange { from: Some(keys[120].clone()), to: Some(keys[330].clone()) };
    let entries = vec![SegmentMatch {
        segment_id: store.segments[0].clone(),
        ns: "ups".into(),
        statuses: vec!["realized".into(), "existing".into()],
        from_ms: None,
        to_ms: None,
    }];
    for companions in [Companions::All, Companions::NoRowFiles, Companions::None] {
        companions.remove(&store);
        // Per file (profiles, then events): the rows picked and the rows of the range.
        let first_pass = |keys: &KeyRange| {
            let open = |f| OpenFile::open(f, true, keys).unwrap();
            let profiles: Vec<OpenFile> = store.input.profiles.iter().map(open).collect();
            let events: Vec<OpenFile> = store.input.events.iter().map(open).collect();
            let found = by_segment(
                &entries,
                &profiles.iter().collect::<Vec<_>>(),
                &events.iter().collect::<Vec<_>>(),
            )
            .unwrap();
            let picked: Vec<Vec<usize>> = found
                .profile_rows
                .into_iter()
                .chain(found.event_rows)
                .map(|rows| rows.expect("rows are picked"))
                .collect();
            let bounds: Vec<_> = profiles.iter().chain(&events).map(|f| f.bounds.clone()).collect();
            (picked, bounds)
        };
        let (whole, _) = first_pass(&KeyRange::all());
        let (picked, bounds) = first_pass(&range);
        assert_eq!(picked.len(), store.input.profiles.len() + store.input.events.len());
        let mut inside = 0;
        for (f, ((got, all), bounds)) in picked.iter().zip(&whole).zip(&bounds).enumerate() {
            let bounds = bounds.clone().expect("a range bounds every file");
            let want: Vec<usize> = all.iter().copied().filter(|r| bounds.contains(r)).collect();
            assert_eq!(got, &want, "{companions:?}: file {f}");
            inside += want.len();
        }
        let all: usize = whole.iter().map(Vec::len).sum();
        assert!(inside > 20 && all > inside, "{companions:?}: {inside} of {all} rows in the range");
    }
}
