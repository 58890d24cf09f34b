//! The local cache of a remote storage root: store files read through it hold the same bytes
//! and companions (row file, membership index) as ingest writes beside them on a local root;
//! it fetches once, evicts least recently used entries but never a held one, and at start
//! deletes what fails its check. On the S3-compatible test server and on an in-memory root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use segport_store::cache::Cache;
use segport_store::ingest::{Ingest, IngestLimits, IngestTarget};
use segport_store::input::InputFormat;
use segport_store::schema::UnionSchema;
use segport_store::snapshot::FileRef;
use segport_store::snapshot::SourceFile;
use segport_store::{RecordKind, Storage};

/// A local store of generated profiles or events (four partitions), ingested with its
/// companions beside its files; the data files' references.
struct LocalStore {
    _dir: tempfile::TempDir,
    storage: Storage,
    files: Vec<FileRef>,
}

fn local_store(runtime: &tokio::runtime::Runtime, profiles: u64) -> LocalStore {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let segments = segport_datagen::segments(3);
    let mut files = Vec::new();
    for (kind, name) in [(RecordKind::Profile, "profiles"), (RecordKind::Event, "events")] {
        let mut ndjson = String::new();
        for i in 0..profiles {
            let g = segport_datagen::profile(3, i, &segments);
            let records = match kind {
                RecordKind::Profile => g.profile.into_iter().collect(),
                RecordKind::Event => g.events,
            };
            for r in records {
                ndjson.push_str(&format!("{r}\n"));
            }
        }
        let target = IngestTarget {
            org: "org".into(),
            sandbox: "prod".into(),
            dataset: name.into(),
            kind,
            partitions: 4,
            file_prefix: format!("{name}-1"),
            write: true,
        };
        let mut ingest = Ingest::new(
            storage.clone(),
            runtime.handle().clone(),
            target,
            IngestLimits::default(),
            UnionSchema::default(),
        );
        ingest.add_file("in.ndjson", ndjson.into(), InputFormat::NdJson).unwrap();
        let outcome = ingest.finish().unwrap();
        assert_eq!(outcome.failed_record_count, 0, "{:?}", outcome.errors);
        files.extend(outcome.files.iter().map(|f| FileRef {
            path: f.path.clone(),
            ingest_ms: Some(1_800_000_000_000),
            seq: 1,
        }));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    LocalStore { _dir: dir, storage, files }
}

/// Copies the data files (not their companions) of `local` to `remote`.
async fn copy_data(local: &LocalStore, remote: &Storage) {
    for file in &local.files {
        let path = file.path.as_str().into();
        remote.put(&path, local.storage.get(&path).await.unwrap()).await.unwrap();
    }
}

fn in_memory_root() -> Storage {
    Storage::from_object_store(Arc::new(object_store::memory::InMemory::new()), "memory://")
}

fn open_cache(dir: &Path, capacity: u64) -> Arc<Cache> {
    Arc::new(Cache::open(dir, capacity).unwrap())
}

/// Every row of a source's row file, all columns, as one batch.
fn all_rows(source: &SourceFile) -> Option<RecordBatch> {
    let rows = source.open_rows().unwrap()?;
    let columns: Vec<String> = rows.schema().fields().iter().map(|f| f.name().clone()).collect();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let all: Vec<usize> = (0..rows.rows()).collect();
    let batches: Vec<RecordBatch> =
        rows.take(&all, &columns, 4096).unwrap().map(|b| b.unwrap()).collect();
    Some(concat_batches(rows.schema(), &batches).unwrap())
}

/// A source's membership index: its segments, whether its keys are unique, and its rows.
fn index_of(source: &SourceFile) -> Option<(Vec<String>, bool, Vec<RecordBatch>)> {
    let index = source.open_index().unwrap()?;
    let wanted: HashSet<&str> = index.segments().iter().map(String::as_str).collect();
    let batches = index.batches_of(&wanted).unwrap();
    Some((index.segments().to_vec(), index.unique_keys(), batches))
}

fn parquet_bytes(source: &SourceFile) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut source.open_parquet().unwrap(), &mut bytes).unwrap();
    bytes
}

/// The bytes of the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { disk_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

/// The entry folder of the store file at `path`, found by the path its `entry.json` names.
fn entry_folder(cache: &Cache, path: &str) -> Option<PathBuf> {
    std::fs::read_dir(cache.root()).unwrap().map(|e| e.unwrap().path()).find(|folder| {
        std::fs::read(folder.join("entry.json"))
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .is_some_and(|meta| meta["path"] == path)
    })
}

#[test]
fn a_cold_cache_builds_what_ingest_writes_beside_the_data() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let local = local_store(&runtime, 1_500);
    assert!(local.files.len() >= 8, "profiles and events in four partitions");
    for remote in [common::s3_root(), in_memory_root()] {
        let dir = tempfile::tempdir().unwrap();
        let cache = open_cache(dir.path(), u64::MAX);
        let remote = remote.with_cache(cache.clone());
        runtime.block_on(async {
            copy_data(&local, &remote).await;
            for file in &local.files {
                let beside = local.storage.source(file.clone(), "d".into()).await.unwrap();
                let cached = remote.source(file.clone(), "d".into()).await.unwrap();
                assert_eq!(parquet_bytes(&cached), parquet_bytes(&beside), "{}", file.path);
                let rows = all_rows(&cached).expect("a row file for every data file");
                assert_eq!(Some(rows), all_rows(&beside), "{}", file.path);
                assert_eq!(index_of(&cached), index_of(&beside), "{}", file.path);
            }
            let profile_files = local.files.iter().filter(|f| f.path.contains("/profiles/"));
            let indexed =
                profile_files.map(|f| remote.source(f.clone(), "d".into())).collect::<Vec<_>>();
            for source in futures::future::join_all(indexed).await {
                assert!(source.unwrap().open_index().unwrap().is_some(), "profile files index");
            }
        });
        let n = local.files.len() as u64;
        let (hits, misses, evictions, bytes) = cache.metrics().snapshot();
        let profiles = local.files.iter().filter(|f| f.path.contains("/profiles/")).count();
        assert_eq!((hits, misses, evictions), (profiles as u64, n, 0), "{}", remote.url());
        // The cache counts what is on disk: the entries, each with its description.
        let described: u64 = std::fs::read_dir(cache.root())
            .unwrap()
            .map(|e| std::fs::metadata(e.unwrap().path().join("entry.json")).unwrap().len())
            .sum();
        assert_eq!(bytes as u64 + described, disk_bytes(cache.root()), "{}", remote.url());
        assert_eq!(cache.used(), bytes as u64);
    }
}

#[test]
fn eviction_takes_the_least_recently_used_entry_never_a_held_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let local = local_store(&runtime, 400);
    let remote = in_memory_root();
    runtime.block_on(copy_data(&local, &remote));
    // Each entry's size, from a cache large enough for all.
    let mut sized: Vec<(u64, &FileRef)> = {
        let dir = tempfile::tempdir().unwrap();
        let cache = open_cache(dir.path(), u64::MAX);
        let remote = remote.clone().with_cache(cache.clone());
        local.files[..4]
            .iter()
            .map(|file| {
                let before = cache.used();
                drop(runtime.block_on(remote.source(file.clone(), "d".into())).unwrap());
                (cache.used() - before, file)
            })
            .collect()
    };
    // C the smallest and D the largest: D does not fit where C did.
    sized.sort_by_key(|(size, _)| *size);
    let [(sc, c), (sa, a), (sb, b), (sd, d)] = sized[..] else { unreachable!() };
    let sizes = [sa, sb, sc, sd];
    let dir = tempfile::tempdir().unwrap();
    // Room for A and C, or A and B, but not for all three.
    let cache = open_cache(dir.path(), sizes[0] + sizes[1] + sizes[2] - 1);
    let remote = remote.with_cache(cache.clone());
    let source =
        |file: &FileRef| runtime.block_on(remote.source(file.clone(), "d".into())).unwrap();
    let present = |file: &FileRef| entry_folder(&cache, &file.path).is_some();

    let held_a = source(a);
    let rows_of_a = held_a.open_rows().unwrap().expect("mapped");
    drop(source(b));
    drop(source(c));
    // B was used after A, but A is held: B goes.
    assert!(present(a) && !present(b) && present(c));
    assert_eq!(cache.metrics().snapshot().2, 1);
    // A's mapped row file still reads.
    assert_eq!(rows_of_a.rows(), all_rows(&held_a).unwrap().num_rows());

    // B comes back (a miss) and C, now the least recently used, goes.
    let held_b = source(b);
    assert!(present(a) && present(b) && !present(c));
    assert_eq!(cache.metrics().snapshot().1, 4, "A, B, C, B again");

    // Everything held: the capacity is exceeded rather than a held entry removed…
    let held_d = source(d);
    assert!(present(a) && present(b) && present(d));
    assert!(cache.used() > sizes[0] + sizes[1] + sizes[2] - 1);
    // …and the excess goes once they are let go, the least recently used (A) first.
    drop((held_a, rows_of_a, held_b));
    drop(source(c));
    assert!(!present(a) && present(c) && present(d));
    let capacity = sizes[0] + sizes[1] + sizes[2] - 1;
    assert!(cache.used() <= capacity, "{} > {capacity}", cache.used());
    let expected: u64 = [(a, sa), (b, sb), (c, sc), (d, sd)]
        .iter()
        .filter(|(f, _)| present(f))
        .map(|(_, s)| s)
        .sum();
    assert_eq!(cache.used(), expected);
    drop(held_d);
}

#[test]
fn at_start_the_cache_deletes_what_fails_its_check() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let local = local_store(&runtime, 400);
    let remote = in_memory_root();
    runtime.block_on(copy_data(&local, &remote));
    let dir = tempfile::tempdir().unwrap();
    let profiles: Vec<&FileRef> =
        local.files.iter().filter(|f| f.path.contains("/profiles/")).collect();
    let (x, y, z) = (profiles[0], profiles[1], profiles[2]);
    let expected_x = {
        let cache = open_cache(dir.path(), u64::MAX);
        let remote = remote.clone().with_cache(cache.clone());
        for file in [x, y, z] {
            drop(runtime.block_on(remote.source(file.clone(), "d".into())).unwrap());
        }
        // X's row file gets one byte flipped (same size), Y's data file is cut short, and an
        // interrupted fill and a stray folder are left behind.
        let rows = entry_folder(&cache, &x.path).unwrap().join("rows.arrow");
        let mut bytes = std::fs::read(&rows).unwrap();
        let expected = {
            let beside = runtime.block_on(local.storage.source(x.clone(), "d".into())).unwrap();
            all_rows(&beside).unwrap()
        };
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&rows, &bytes).unwrap();
        let data = entry_folder(&cache, &y.path).unwrap().join("data.parquet");
        let len = std::fs::metadata(&data).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&data).unwrap().set_len(len - 10).unwrap();
        std::fs::create_dir(cache.root().join("tmp-interrupted")).unwrap();
        std::fs::write(cache.root().join("tmp-interrupted/data.parquet"), b"PAR1").unwrap();
        std::fs::create_dir(cache.root().join("stray")).unwrap();
        expected
    };

    let cache = open_cache(dir.path(), u64::MAX);
    let mut left: Vec<String> = std::fs::read_dir(cache.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 1, "only Z's entry stays: {left:?}");
    assert!(entry_folder(&cache, &z.path).is_some());
    let remote = remote.with_cache(cache.clone());
    let source =
        |file: &FileRef| runtime.block_on(remote.source(file.clone(), "d".into())).unwrap();
    drop(source(z));
    assert_eq!(cache.metrics().snapshot().0, 1, "Z is a hit after the restart");
    let rebuilt = source(x);
    assert_eq!(cache.metrics().snapshot().1, 1, "X is fetched again");
    assert_eq!(all_rows(&rebuilt).unwrap(), expected_x);
}

#[test]
fn concurrent_readers_of_a_file_fetch_it_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let local = local_store(&runtime, 400);
    let remote = in_memory_root();
    runtime.block_on(copy_data(&local, &remote));
    let dir = tempfile::tempdir().unwrap();
    let cache = open_cache(dir.path(), u64::MAX);
    let remote = remote.with_cache(cache.clone());
    let file = &local.files[0];
    let sources = runtime.block_on(futures::future::join_all(
        (0..8).map(|_| remote.source(file.clone(), "d".into())),
    ));
    assert!(sources.iter().all(Result::is_ok));
    let (hits, misses, _, _) = cache.metrics().snapshot();
    assert_eq!((hits, misses), (7, 1));
    // The partitions it holds, as claims prefer them: the one of that file, then of another.
    assert_eq!(cache.held_partitions(), [0]);
    let other = local.files.iter().find(|f| f.path.contains("/p=3/")).unwrap();
    runtime.block_on(remote.source(other.clone(), "d".into())).unwrap();
    assert_eq!(cache.held_partitions(), [0, 3]);
}

#[test]
fn a_failed_fill_leaves_nothing_behind() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let remote = in_memory_root();
    let dir = tempfile::tempdir().unwrap();
    let cache = open_cache(dir.path(), u64::MAX);
    let remote = remote.with_cache(cache.clone());
    // A data file that is not there, and one that is not Parquet.
    let missing =
        FileRef { path: "org/prod/store/d/p=0/gone.parquet".into(), ingest_ms: None, seq: 1 };
    let bad = FileRef { path: "org/prod/store/d/p=0/bad.parquet".into(), ingest_ms: None, seq: 1 };
    runtime.block_on(remote.put(&bad.path.as_str().into(), "not parquet".into())).unwrap();
    for file in [missing, bad] {
        let error = runtime.block_on(remote.source(file.clone(), "d".into())).unwrap_err();
        assert!(segport_model::error::chain(&error).contains(&file.path), "{error}");
    }
    assert_eq!(std::fs::read_dir(cache.root()).unwrap().count(), 0, "no folder stays");
    assert_eq!(cache.used(), 0);

    // Without a cache a remote root cannot be read, and says so.
    let uncached = in_memory_root();
    let file = FileRef { path: "org/prod/store/d/p=0/x.parquet".into(), ingest_ms: None, seq: 1 };
    let error = runtime.block_on(uncached.source(file, "d".into())).unwrap_err().to_string();
    assert!(error.contains("needs a local cache"), "{error}");
}
