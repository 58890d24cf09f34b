//! The profile store's NDJSON ingest (`segport_store::ingest::Ingest`) fed the fuzz input as the
//! content of one uploaded file, once as profile records and once as event records.
//!
//! This is the real pipeline of an ingest task: `Ingest::add_file(.., InputFormat::NdJson)` splits
//! lines (`input::ndjson_lines`), parses and normalises each record (`xdm::parse`,
//! `xdm::normalize`), types it against the union schema (`schema`), builds Arrow batches
//! (`columns::build_batch`) and, at a flush, aligns, sorts and encodes Parquet files that go to a
//! local storage root in a temporary directory. Limits are tiny so that one input makes several
//! chunks, flushes, partitions and row groups.
//!
//! Never panics (an `Err` is fine), and:
//! - every non-blank line is counted once, as written or as failed; error groups add up;
//! - the rows of the written files add up to the records written;
//! - validating only (`write: false`) and writing agree: a batch the validation accepts does not
//!   fail when written;
//! - every written file reads back (aligned to the union schema, as the export reads it) with
//!   all its rows, sorted by key within its key range, and converts back to XDM rows;
//! - feeding the file in two parts at a line boundary (`add_ndjson_part`, as the worker does for
//!   large files) gives the same counts, errors (with the same line numbers) and schema.

#![no_main]

use std::sync::OnceLock;

use arrow::array::AsArray;
use libfuzzer_sys::fuzz_target;
use segport_store::columns::{file_schema, KEY};
use segport_store::ingest::{
    Ingest, IngestLimits, IngestOutcome, IngestTarget, WrittenFile, MAX_ROWS_PER_ERROR,
};
use segport_store::input::{ndjson_lines, InputFormat};
use segport_store::read::{read_file, rows_as_xdm};
use segport_store::schema::UnionSchema;
use segport_store::{RecordKind, Storage};

const FILE: &str = "in.ndjson";
const PARTITIONS: u32 = 2;

struct Env {
    root: std::path::PathBuf,
    storage: Storage,
    runtime: tokio::runtime::Runtime,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // One worker thread: the fuzzer stays on one core and runs are reproducible.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(1).build_global();
        let root = std::env::temp_dir().join(format!("segport-fuzz-ingest-{}", std::process::id()));
        let storage = Storage::local(&root).expect("a local storage root");
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Env { root, storage, runtime }
    })
}

fn limits() -> IngestLimits {
    IngestLimits { chunk_records: 3, flush_bytes: 16 * 1024, row_group_rows: 2 }
}

fn ingest(kind: RecordKind, write: bool) -> Ingest {
    let env = env();
    let target = IngestTarget {
        org: "org".into(),
        sandbox: "prod".into(),
        dataset: format!("ds-{}", kind.as_str()),
        kind,
        partitions: PARTITIONS,
        file_prefix: "fuzz-0".into(),
        write,
    };
    Ingest::new(
        env.storage.clone(),
        env.runtime.handle().clone(),
        target,
        limits(),
        UnionSchema::default(),
    )
}

fn whole(data: &[u8], kind: RecordKind, write: bool) -> segport_store::Result<IngestOutcome> {
    let mut ingest = ingest(kind, write);
    ingest.add_file(FILE, bytes::Bytes::copy_from_slice(data), InputFormat::NdJson)?;
    ingest.finish()
}

/// The worker's way: parts that end at a line boundary, numbered on from the previous part.
fn in_parts(data: &[u8], kind: RecordKind) -> segport_store::Result<IngestOutcome> {
    let mut ingest = ingest(kind, false);
    let cut = match data[..data.len() / 2].iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    let (first, second) = data.split_at(cut);
    ingest.add_ndjson_part(FILE, first, 1)?;
    let next_line = 1 + first.iter().filter(|b| **b == b'\n').count() as u64;
    ingest.add_ndjson_part(FILE, second, next_line)?;
    ingest.finish()
}

fn check(outcome: &IngestOutcome, lines: u64, last_line: u64) {
    assert_eq!(
        outcome.record_count + outcome.failed_record_count,
        lines,
        "every line counted once"
    );
    let mut failed = 0;
    for group in &outcome.errors {
        assert!(group.count >= 1);
        assert_eq!(group.rows.len() as u64, group.count.min(MAX_ROWS_PER_ERROR as u64));
        assert!(group.rows.iter().all(|r| (1..=last_line).contains(r)), "{group:?}");
        failed += group.count;
    }
    assert_eq!(failed, outcome.failed_record_count, "error groups add up");
}

fn run(data: &[u8], kind: RecordKind) {
    let lines = ndjson_lines(data).count() as u64;
    let last_line = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;

    let validated = whole(data, kind, false);
    let written = whole(data, kind, true);
    let parts = in_parts(data, kind);

    let validated = match validated {
        Ok(outcome) => outcome,
        Err(e) => panic!("validating an NDJSON file failed as a whole: {e}: {e:?}"),
    };
    check(&validated, lines, last_line);

    let parts = parts.expect("an NDJSON file fed in parts");
    assert_eq!(parts.record_count, validated.record_count);
    assert_eq!(parts.failed_record_count, validated.failed_record_count);
    assert_eq!(parts.errors, validated.errors);
    assert_eq!(parts.schema, validated.schema);

    let written = match written {
        Ok(outcome) => outcome,
        Err(e) => panic!(
            "the validation accepted {} record(s) but writing them failed: {e}: {e:?}",
            validated.record_count
        ),
    };
    check(&written, lines, last_line);
    assert_eq!(written.record_count, validated.record_count);
    assert_eq!(written.errors, validated.errors);
    assert_eq!(written.schema, validated.schema);
    let rows: u64 = written.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, written.record_count, "written files hold every record");
    for f in &written.files {
        assert!(f.partition < PARTITIONS && f.rows >= 1 && f.min_key <= f.max_key, "{f:?}");
        read_back(f, kind, &written.schema);
    }
}

/// A written file reads back as the export reads it: aligned to the union schema's file schema,
/// every row, sorted by key within the file's key range, convertible back to XDM rows.
fn read_back(file: &WrittenFile, kind: RecordKind, schema: &UnionSchema) {
    let env = env();
    let target = file_schema(kind, schema);
    let batches = env
        .runtime
        .block_on(read_file(&env.storage, &file.path, Some(&target)))
        .unwrap_or_else(|e| panic!("a file just written cannot be read back: {e}: {e:?}"));
    let mut rows = 0;
    let mut last: Option<String> = None;
    for batch in &batches {
        assert_eq!(batch.schema(), target);
        rows += batch.num_rows() as u64;
        let keys = batch.column_by_name(KEY).expect("a key column").as_string::<i32>();
        for key in keys.iter() {
            let key = key.expect("keys are never null").to_owned();
            assert!(file.min_key <= key && key <= file.max_key, "{key:?} outside {file:?}");
            assert!(last.as_ref().is_none_or(|l| *l <= key), "keys out of order");
            last = Some(key);
        }
        let xdm = rows_as_xdm(batch)
            .unwrap_or_else(|e| panic!("rows read back do not convert to XDM: {e}: {e:?}"));
        assert_eq!(xdm.len(), batch.num_rows());
    }
    assert_eq!(rows, file.rows, "a file reads back with every row");
}

fuzz_target!(|data: &[u8]| {
    run(data, RecordKind::Profile);
    run(data, RecordKind::Event);
    // Files are overwritten by the next input anyway; removing them keeps the directory small.
    let _ = std::fs::remove_dir_all(env().root.join("org"));
});
