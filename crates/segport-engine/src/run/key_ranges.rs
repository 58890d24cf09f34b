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
use crate::source::KeyRange;

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

    for row_files in [true, false] {
        if !row_files {
            // Stores from before row files: the bounds are found from the Parquet keys.
            let mut stack = vec![store.dir.path().to_path_buf()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.to_string_lossy().ends_with(".rows.arrow") {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
        }
        for (case, plan) in &cases {
            let whole = run(&store, plan, KeyRange::all());
            assert!(whole.0.iter().any(|b| b.len() > 100), "{case}: too few rows");
            let mut parts = Rows::default();
            for range in &ranges {
                add(&mut parts, run(&store, plan, range.clone()));
            }
            assert_eq!(parts.1, whole.1, "{case}, row files {row_files}: rows by namespace");
            for (b, (mut got, mut want)) in parts.0.into_iter().zip(whole.0).enumerate() {
                got.sort();
                want.sort();
                assert_eq!(got.len(), want.len(), "{case}, row files {row_files}: batch {b}");
                assert!(got == want, "{case}, row files {row_files}: batch {b}'s rows differ");
            }
        }
    }
    // An empty range reads nothing.
    let empty = KeyRange { from: Some(keys[10].clone()), to: Some(keys[10].clone()) };
    let (rows, _) = run(&store, &cases[0].1, empty);
    assert!(rows.iter().all(Vec::is_empty));
}
