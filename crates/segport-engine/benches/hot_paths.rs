//! Microbenchmarks of the export engine's hot paths, on a store of generated profiles written
//! by the real ingest pipeline: the segment pre-filter with a selective job, merging every
//! profile with every field, projecting merged rows, and encoding output rows as Parquet.
//!
//! `cargo bench -p segport-engine` (the test suite only compiles them).

use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use segport_engine::{
    encode_rows, projections, run_partition, ExportPlan, PartitionInput, Precedence, Progress,
    SegmentMatch, SourceFile,
};
use segport_store::ingest::{Ingest, IngestLimits, IngestTarget};
use segport_store::input::InputFormat;
use segport_store::schema::UnionSchema;
use segport_store::snapshot::FileRef;
use segport_store::{RecordKind, Storage};

const PROFILES: u64 = 40_000;
const PARTITIONS: u32 = 4;

struct Store {
    _dir: std::path::PathBuf,
    input: PartitionInput,
    profile_schema: UnionSchema,
    event_schema: UnionSchema,
    segment: String,
}

fn ingest(
    storage: &Storage,
    runtime: &tokio::runtime::Runtime,
    kind: RecordKind,
    dataset: &str,
    ndjson: Vec<u8>,
) -> (Vec<SourceFile>, UnionSchema) {
    let target = IngestTarget {
        org: "bench".into(),
        sandbox: "prod".into(),
        dataset: dataset.into(),
        kind,
        partitions: PARTITIONS,
        file_prefix: format!("{dataset}-0"),
        write: true,
    };
    let mut ingest = Ingest::new(
        storage.clone(),
        runtime.handle().clone(),
        target,
        IngestLimits::default(),
        UnionSchema::default(),
    );
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            ingest.add_file("in.ndjson", ndjson.into(), InputFormat::NdJson)?;
            ingest.finish()
        })
        .join()
        .expect("ingest thread")
    })
    .expect("ingest");
    let files = outcome
        .files
        .iter()
        .filter(|f| f.partition == 0)
        .map(|f| {
            let file = FileRef { path: f.path.clone(), ingest_ms: Some(1_800_000_000_000), seq: 1 };
            runtime.block_on(storage.source(file, dataset.into())).expect("local storage")
        })
        .collect();
    (files, outcome.schema)
}

fn store() -> Store {
    let dir = std::env::temp_dir().join(format!("segport-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let storage = Storage::local(&dir).expect("storage");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let segments = segport_datagen::segments(1);
    let (mut profiles, mut events) = (Vec::new(), Vec::new());
    for n in 0..PROFILES {
        let g = segport_datagen::profile(1, n, &segments);
        if let Some(p) = g.profile {
            serde_json::to_writer(&mut profiles, &p).expect("json");
            profiles.push(b'\n');
        }
        for e in g.events {
            serde_json::to_writer(&mut events, &e).expect("json");
            events.push(b'\n');
        }
    }
    let (profile_files, profile_schema) =
        ingest(&storage, &runtime, RecordKind::Profile, "profiles", profiles);
    let (event_files, event_schema) =
        ingest(&storage, &runtime, RecordKind::Event, "events", events);
    Store {
        _dir: dir,
        input: PartitionInput {
            partition: 0,
            profiles: profile_files,
            events: event_files,
            keys: segport_engine::KeyRange::all(),
        },
        profile_schema,
        event_schema,
        segment: segments[31].id.clone(),
    }
}

fn plan(store: &Store, segments: Option<&str>, fields: &[&str]) -> ExportPlan {
    ExportPlan {
        segments: segments.map(|id| {
            vec![SegmentMatch {
                segment_id: id.into(),
                ns: "ups".into(),
                statuses: vec!["realized".into(), "existing".into()],
                from_ms: None,
                to_ms: None,
            }]
        }),
        from_ingest_ms: None,
        empty_profiles: false,
        fields: fields.iter().map(|f| f.split('.').map(str::to_owned).collect()).collect(),
        events: None,
        per_segment: false,
        precedence: Precedence::TimestampOrdered,
        profile_schema: store.profile_schema.clone(),
        event_schema: store.event_schema.clone(),
    }
}

fn hot_paths(c: &mut Criterion) {
    let store = store();
    let rows = store.input.profiles.len() as u64;
    let partition_profiles = PROFILES / u64::from(PARTITIONS);
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(partition_profiles));
    let cancel = AtomicBool::new(false);

    let selective = plan(&store, Some(&store.segment), &["identities.id", "personalEmail.address"]);
    let selective_projections = projections(&selective);
    group.bench_function("membership_filter_5pct_segment", |b| {
        b.iter(|| {
            run_partition(
                &selective,
                &selective_projections,
                &store.input,
                &Progress::default(),
                &cancel,
            )
            .expect("export")
        })
    });

    let everything = plan(&store, None, &[]);
    let everything_projections = projections(&everything);
    group.bench_function("merge_all_profiles_all_fields", |b| {
        b.iter(|| {
            run_partition(
                &everything,
                &everything_projections,
                &store.input,
                &Progress::default(),
                &cancel,
            )
            .expect("export")
        })
    });

    // Projection and encoding on the merged rows of the partition, read back as JSON.
    let output = run_partition(
        &everything,
        &everything_projections,
        &store.input,
        &Progress::default(),
        &cancel,
    )
    .expect("export");
    let (bytes, _) = output.files[0].clone().expect("rows");
    let batches: Vec<_> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .expect("parquet")
            .collect::<Result<_, _>>()
            .expect("batches");
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b).expect("json");
    }
    writer.finish().expect("json");
    let merged: Vec<serde_json::Value> =
        serde_json::from_slice(&writer.into_inner()).expect("json");
    let two = projections(&plan(&store, None, &["identityMap", "personalEmail.address"]));
    group.throughput(Throughput::Elements(merged.len() as u64));
    group.bench_function("project_two_fields", |b| {
        b.iter(|| {
            merged
                .iter()
                .filter_map(|row| {
                    segport_engine::project::project(black_box(row), &two.profile.selection)
                })
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("parquet_encode_all_fields", |b| {
        b.iter(|| {
            let batch =
                encode_rows(&everything_projections.schema, black_box(&merged)).expect("encode");
            let mut w = parquet::arrow::ArrowWriter::try_new(
                Vec::new(),
                batch.schema(),
                Some(segport_store::ingest::output_writer_properties(64 * 1024)),
            )
            .expect("writer");
            w.write(&batch).expect("write");
            w.into_inner().expect("close").len()
        })
    });
    group.finish();
    black_box(rows);
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
