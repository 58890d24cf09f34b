//! The engine's two row builders must make the same rows: profiles with fragments take the
//! columnar builder when the projection allows it (`Projections::columnar`), the JSON builder
//! (`merge` + `project` + `encode_rows`) otherwise. Each case here runs one partition of a
//! generated store both ways and compares the outputs read back from Parquet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use segport_store::ingest::{Ingest, IngestLimits, IngestTarget};
use segport_store::input::InputFormat;
use segport_store::schema::UnionSchema;
use segport_store::snapshot::FileRef;
use segport_store::{RecordKind, Storage};
use serde_json::{json, Value};

use super::{projections, run_partition, Progress};
use crate::plan::{EventWindow, ExportPlan, Precedence, SegmentMatch};
use crate::source::{PartitionInput, SourceFile};

const PROFILES: u64 = 600;

pub(super) struct Store {
    pub(super) dir: tempfile::TempDir,
    pub(super) input: PartitionInput,
    profile_schema: UnionSchema,
    event_schema: UnionSchema,
    pub(super) segments: Vec<String>,
}

/// Ingests `records` as one batch of `dataset` at commit `seq`, into partition 0 of 1.
fn ingest(
    storage: &Storage,
    runtime: &tokio::runtime::Runtime,
    (kind, dataset, seq): (RecordKind, &str, i64),
    schema: UnionSchema,
    records: &[Value],
) -> (Vec<SourceFile>, UnionSchema) {
    let target = IngestTarget {
        org: "org".into(),
        sandbox: "prod".into(),
        dataset: dataset.into(),
        kind,
        partitions: 1,
        file_prefix: format!("{dataset}-{seq}"),
        write: true,
    };
    let mut ingest = Ingest::new(
        storage.clone(),
        runtime.handle().clone(),
        target,
        IngestLimits::default(),
        schema,
    );
    let ndjson: Vec<u8> = records
        .iter()
        .flat_map(|r| {
            let mut line = serde_json::to_vec(r).unwrap();
            line.push(b'\n');
            line
        })
        .collect();
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            ingest.add_file("in.ndjson", Bytes::from(ndjson), InputFormat::NdJson)?;
            ingest.finish()
        })
        .join()
        .unwrap()
    })
    .unwrap();
    assert_eq!(outcome.failed_record_count, 0, "{:?}", outcome.errors);
    let sources = outcome
        .files
        .iter()
        .map(|f| {
            let file =
                FileRef { path: f.path.clone(), ingest_ms: Some(1_700_000_000_000 + seq), seq };
            runtime.block_on(storage.source(file, dataset.into())).unwrap()
        })
        .collect();
    (sources, outcome.schema)
}

/// Generated profiles and events, and a second profile dataset whose fragments update every
/// fourth profile: new values, a field set to null, a list, other memberships.
pub(super) fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let segments = segport_datagen::segments(7);
    let (mut profiles, mut updates, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..PROFILES {
        let g = segport_datagen::profile(7, n, &segments);
        if let Some(p) = g.profile {
            if n % 4 == 0 {
                let segment = &segments[(n as usize) % segments.len()].id;
                updates.push(json!({
                    "identityMap": p["identityMap"].clone(),
                    "loyalty": {"tier": "platinum", "points": null},
                    "homeAddress": {"city": format!("City {n}")},
                    "interests": ["a", format!("b{n}")],
                    "segmentMembership": {"ups": {segment: {
                        "status": "exited", "lastQualificationTime": "2026-01-02T03:04:05Z"
                    }}}
                }));
            }
            profiles.push(p);
        }
        events.extend(g.events);
    }
    let kind = RecordKind::Profile;
    let (mut files, schema) =
        ingest(&storage, &runtime, (kind, "profiles", 1), UnionSchema::default(), &profiles);
    let (more, profile_schema) = ingest(&storage, &runtime, (kind, "updates", 2), schema, &updates);
    files.extend(more);
    let event_batch = (RecordKind::Event, "events", 3);
    let (event_files, event_schema) =
        ingest(&storage, &runtime, event_batch, UnionSchema::default(), &events);
    Store {
        dir,
        input: PartitionInput {
            partition: 0,
            profiles: files,
            events: event_files,
            keys: crate::KeyRange::all(),
        },
        profile_schema,
        event_schema,
        segments: segments.iter().map(|s| s.id.clone()).collect(),
    }
}

/// Every output file of a run, read back with the Parquet reader as JSON rows, with its schema.
pub(super) fn read_back(files: Vec<Option<(Bytes, u64)>>) -> Vec<Option<(String, Vec<Value>)>> {
    files
        .into_iter()
        .map(|file| {
            let (bytes, rows) = file?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
            let schema = format!("{:?}", reader.schema().fields());
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            for batch in reader.build().unwrap() {
                writer.write(&batch.unwrap()).unwrap();
            }
            writer.finish().unwrap();
            let out: Vec<Value> = serde_json::from_slice(&writer.into_inner()).unwrap();
            assert_eq!(out.len() as u64, rows);
            Some((schema, out))
        })
        .collect()
}

pub(super) fn plan(store: &Store, fields: &[&str]) -> ExportPlan {
    ExportPlan {
        segments: None,
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

#[test]
fn the_columnar_and_json_builders_make_the_same_rows() {
    let store = store();
    let segment = |i: usize| SegmentMatch {
        segment_id: store.segments[i].clone(),
        ns: "ups".into(),
        statuses: vec!["realized".into(), "existing".into(), "exited".into()],
        from_ms: None,
        to_ms: None,
    };
    let mut cases: Vec<(&str, ExportPlan)> = vec![
        ("every field", plan(&store, &[])),
        ("leaves of structs", plan(&store, &["person.name.firstName", "loyalty.tier"])),
        ("whole structs", plan(&store, &["homeAddress", "loyalty", "personalEmail"])),
        ("a list", plan(&store, &["interests", "person.name"])),
        ("maps by key", plan(&store, &["identityMap.Email", "segmentMembership.ups"])),
        ("the maps", plan(&store, &["identityMap", "segmentMembership", "identities"])),
        ("nothing that exists", plan(&store, &["noSuchField"])),
    ];
    let mut ordered = plan(&store, &["loyalty", "homeAddress.city"]);
    ordered.precedence = Precedence::DatasetOrder(vec!["updates".into(), "profiles".into()]);
    cases.push(("dataset order", ordered));
    let mut per_segment = plan(&store, &["loyalty", "segmentMembership"]);
    per_segment.segments = Some(vec![segment(0), segment(1), segment(2)]);
    per_segment.per_segment = true;
    cases.push(("a batch per segment", per_segment));
    let mut with_events = plan(&store, &["personalEmail.address"]);
    with_events.events = Some(EventWindow {
        from_ms: None,
        to_ms: None,
        fields: vec![vec!["eventType".into()], vec!["web".into(), "webPageDetails".into()]],
    });
    cases.push(("events", with_events));

    let cancel = AtomicBool::new(false);
    for (case, plan) in &cases {
        let columnar = projections(plan);
        assert!(columnar.columnar, "{case}: the columnar builder is not taken");
        let mut json = projections(plan);
        json.columnar = false;
        let run = |p| run_partition(plan, p, &store.input, &Progress::default(), &cancel).unwrap();
        let (a, b) = (run(&columnar), run(&json));
        assert_eq!(a.by_namespace, b.by_namespace, "{case}: rows by namespace");
        let (a, b) = (read_back(a.files), read_back(b.files));
        assert!(a.iter().flatten().any(|(_, rows)| !rows.is_empty()), "{case}: no rows");
        assert_eq!(a.len(), b.len(), "{case}: batches");
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let (Some((a_schema, a_rows)), Some((b_schema, b_rows))) = (a, b) else {
                assert_eq!(a.is_none(), b.is_none(), "{case}: batch {i} has rows one way only");
                continue;
            };
            assert_eq!(a_schema, b_schema, "{case}: batch {i}'s schema");
            assert_eq!(a_rows.len(), b_rows.len(), "{case}: batch {i}'s rows");
            // The first row that differs, rather than the whole batch.
            if let Some(r) = (0..a_rows.len()).find(|&r| a_rows[r] != b_rows[r]) {
                panic!(
                    "{case}: batch {i}, row {r} differs between the builders:\ncolumnar: {}\njson: {}",
                    a_rows[r], b_rows[r]
                );
            }
        }
    }
}
