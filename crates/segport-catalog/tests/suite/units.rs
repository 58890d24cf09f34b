//! Export jobs split into units: the split ends the planning attempt, units keep the plan's
//! snapshot, are retried alone, and the last unit's commit commits the job; a failed unit or a
//! cancel ends the job and every unit.

use segport_catalog::{
    BatchFile, ExportedBatch, Locality, NewUnit, TaskLease, UnitCommit, UnitCommitted, UnitResult,
};
use segport_model::job::ExportCounters;

use super::*;

suite!(
    a_split_job_commits_with_its_last_unit,
    a_failed_unit_or_a_cancel_ends_every_unit,
    claims_prefer_units_of_partitions_a_worker_holds,
    a_unit_is_left_to_the_live_worker_that_holds_its_partition,
);

/// A sandbox with one committed store file, and an export job of one batch: (job, batch,
/// the store file's id).
async fn store_and_job(db: &TestCatalog, t: &Tenant) -> (i64, BatchId, i64) {
    let batch = queued_batch(db, t, 1_000).await;
    let task = db.catalog.claim_task("ingest", 60_000, 1_100).await.unwrap().unwrap();
    db.catalog.commit_ingest(commit(&task.lease, t, &batch, 1_200)).await.unwrap();
    let file = db.catalog.store_snapshot(t, None).await.unwrap().files[0].id;
    let d = dataset(db, t).await;
    let id = job(db, t, &d, 2_000, false).await;
    let record = db.catalog.get_export_job(t, id).await.unwrap().unwrap();
    (id, record.spec.destination.batch_ids()[0].clone(), file)
}

/// [`store_and_job`], its job planned at 3,000 and split into [`units`] at 3,100.
async fn split_job(db: &TestCatalog, t: &Tenant) -> (i64, BatchId) {
    let (id, batch, _) = store_and_job(db, t).await;
    let c = &db.catalog;
    let plan = c.claim_task("planner", 60_000, 3_000).await.unwrap().unwrap();
    c.store_snapshot(t, Some(&plan.lease)).await.unwrap();
    c.split_export(&plan.lease, id, &units(), "{}", 3_100).await.unwrap();
    (id, batch)
}

fn units() -> Vec<NewUnit> {
    vec![
        NewUnit { partitions: 0..=0, key_from: None, key_to: Some("m".into()) },
        NewUnit { partitions: 0..=0, key_from: Some("m".into()), key_to: None },
        // Several whole partitions.
        NewUnit { partitions: 1..=3, key_from: None, key_to: None },
    ]
}

fn result(batch: &BatchId, unit: u32, rows: i64) -> UnitResult {
    let file = BatchFile {
        name: format!("part-{unit:05}.parquet"),
        path: format!("b/u{unit}/part-{unit:05}.parquet"),
        rows,
        bytes: 10,
    };
    UnitResult {
        batches: vec![ExportedBatch { batch_id: batch.clone(), files: vec![file], rows }],
        counters: ExportCounters {
            total: u64::try_from(rows).unwrap(),
            by_namespace: [("ECID".to_owned(), u64::try_from(rows).unwrap())].into(),
        },
        warnings: Vec::new(),
        profiles_scanned: 100,
    }
}

async fn a_split_job_commits_with_its_last_unit(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let c = &db.catalog;
    let (id, batch, file) = store_and_job(&db, &t).await;
    let plan = c.claim_task("planner", 60_000, 3_000).await.unwrap().unwrap();
    assert_eq!((plan.job_id, plan.unit.as_ref()), (Some(id), None));
    let snapshot = c.store_snapshot(&t, Some(&plan.lease)).await.unwrap();
    c.split_export(&plan.lease, id, &units(), "{\"plan\":1}", 3_100).await.unwrap();
    // The planning attempt is over: a second split is fenced out.
    let again = c.split_export(&plan.lease, id, &units(), "{}", 3_200).await;
    assert!(matches!(again, Err(E::LeaseLost)), "{again:?}");
    let record = c.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!((record.status, record.units_total), (JobStatus::Processing, Some(3)));
    assert_eq!(c.unit_schemas(id).await.unwrap().as_deref(), Some("{\"plan\":1}"));
    let listed = c.export_job_units(&t, id).await.unwrap();
    assert_eq!(
        listed.iter().map(|u| (u.no, u.partitions.clone())).collect::<Vec<_>>(),
        [(0, 0..=0), (1, 0..=0), (2, 1..=3)]
    );
    assert!(listed.iter().all(|u| u.state == "queued" && u.attempt == 0));

    // A compaction replaces the plan's file: queued units keep it from collection.
    let merged = NewStoreFile {
        dataset_id: "d".into(),
        kind: StoreKind::Profile,
        partition: 0,
        path: "x/merged.parquet".into(),
        rows: 1,
        bytes: 1,
        min_key: "a".into(),
        max_key: "a".into(),
        key_fences: vec!["a".into()],
    };
    c.commit_compaction(&t, &[file], &merged, 3_300).await.unwrap();
    let collectable = |c: &std::sync::Arc<dyn segport_catalog::Catalog>| {
        let c = c.clone();
        async move { c.collectable_store_files(i64::MAX).await.unwrap() }
    };
    assert!(collectable(c).await.is_empty(), "queued units hold the plan's snapshot");

    // Units are claimed with the plan's snapshot and their key ranges; the job's attempt
    // stays the plan's.
    let mut claimed = Vec::new();
    for (owner, lease_ms) in [("w0", 60_000), ("w1", 60_000), ("w2", 500)] {
        claimed.push(c.claim_task(owner, lease_ms, 4_000).await.unwrap().unwrap());
    }
    let unit = |i: usize| claimed[i].unit.clone().unwrap();
    assert_eq!((unit(0).no, unit(0).key_to.as_deref()), (0, Some("m")));
    assert_eq!((unit(1).key_from.as_deref(), unit(2).partitions), (Some("m"), 1..=3));
    assert!(claimed.iter().all(|u| u.unit.as_ref().unwrap().snapshot_seq == snapshot.seq));
    let record = c.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(record.attempt_id, plan.lease.attempt_id);
    let workers: Vec<_> =
        c.export_job_units(&t, id).await.unwrap().into_iter().map(|u| u.worker).collect();
    assert_eq!(workers, [Some("w0".into()), Some("w1".into()), Some("w2".into())]);

    let unit_commit = |lease: &segport_catalog::TaskLease, unit: u32, rows: i64, now_ms: i64| {
        UnitCommit { lease: lease.clone(), job_id: id, result: result(&batch, unit, rows), now_ms }
    };
    assert_eq!(
        c.commit_unit(unit_commit(&claimed[1].lease, 1, 5, 4_100)).await.unwrap(),
        UnitCommitted::Unit
    );
    // A committed unit's output is kept from the sweep while its job runs.
    assert!(c.running_attempts().await.unwrap().contains(&claimed[1].lease.attempt_id));
    assert!(c.list_batch_files(&t, &batch).await.unwrap().is_empty(), "nothing visible yet");

    // Unit 2's worker is lost: the unit alone goes back to the queue; the job runs on.
    let reaped = c.reap_expired_tasks(5_000).await.unwrap();
    assert_eq!((reaped.len(), reaped[0].requeued), (1, true));
    let record = c.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Processing);
    let retry = c.claim_task("w3", 60_000, 5_100).await.unwrap().unwrap();
    assert_eq!((retry.unit.as_ref().unwrap().no, retry.attempt), (2, 2));
    assert_eq!(retry.unit.as_ref().unwrap().snapshot_seq, snapshot.seq, "the snapshot stays");
    let late = c.commit_unit(unit_commit(&claimed[2].lease, 2, 9, 5_200)).await;
    assert!(matches!(late, Err(E::LeaseLost)), "{late:?}");

    // Unit 0 found no rows (its schema-only file); the last unit commits the job.
    assert_eq!(
        c.commit_unit(unit_commit(&claimed[0].lease, 0, 0, 5_300)).await.unwrap(),
        UnitCommitted::Unit
    );
    assert_eq!(
        c.commit_unit(unit_commit(&retry.lease, 2, 3, 5_400)).await.unwrap(),
        UnitCommitted::Job
    );
    let record = c.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    let counters = record.counters.unwrap();
    assert_eq!((counters.total, counters.by_namespace["ECID"]), (8, 8));
    let files: Vec<String> =
        c.list_batch_files(&t, &batch).await.unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(files, ["part-00001.parquet", "part-00002.parquet"], "the empty file is dropped");
    let done = c.get_batch(&t, &batch).await.unwrap().unwrap();
    assert_eq!((done.status, done.record_count), (BatchStatus::Success, Some(8)));
    assert!(c.running_attempts().await.unwrap().is_empty());
    let units_now = c.export_job_units(&t, id).await.unwrap();
    assert!(units_now.iter().all(|u| u.state == "done"));
    assert_eq!(units_now.iter().map(|u| u.exported.unwrap()).sum::<u64>(), 8);
    // The plan's file can go now.
    assert_eq!(collectable(c).await.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [file]);
}

async fn a_failed_unit_or_a_cancel_ends_every_unit(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let c = &db.catalog;
    let (id, batch) = split_job(&db, &t).await;
    let first = c.claim_task("w0", 60_000, 4_000).await.unwrap().unwrap();
    let second = c.claim_task("w1", 60_000, 4_000).await.unwrap().unwrap();
    let error = segport_model::batch::BatchError {
        code: "STORE_READ_ERROR".into(),
        description: "a file is gone".into(),
        rows: Vec::new(),
    };
    assert!(c.fail_task(&first.lease, &[error], 4_100).await.unwrap());
    let record = c.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.errors[0].code.as_str()),
        (JobStatus::Failed, "STORE_READ_ERROR")
    );
    assert_eq!(c.get_batch(&t, &batch).await.unwrap().unwrap().status, BatchStatus::Failed);
    // The running unit learns it must stop, and cannot commit; the queued one never runs.
    assert!(c.heartbeat(&second.lease, 60_000, 4_200).await.unwrap().cancel_requested);
    let commit = UnitCommit {
        lease: second.lease.clone(),
        job_id: id,
        result: result(&batch, 1, 2),
        now_ms: 4_300,
    };
    assert!(matches!(c.commit_unit(commit).await, Err(E::Cancelled)));
    assert!(c.claim_task("w2", 60_000, 4_400).await.unwrap().is_none());
    let states: Vec<String> =
        c.export_job_units(&t, id).await.unwrap().into_iter().map(|u| u.state).collect();
    assert_eq!(states, ["failed", "running", "failed"]);

    // A cancel of a split job: every unit sees it, queued units are not claimed once it fails.
    let d = dataset(&db, &t).await;
    let other = job(&db, &t, &d, 5_000, false).await;
    let plan = c.claim_task("planner", 60_000, 5_100).await.unwrap().unwrap();
    c.store_snapshot(&t, Some(&plan.lease)).await.unwrap();
    c.split_export(&plan.lease, other, &units(), "{}", 5_200).await.unwrap();
    let running = c.claim_task("w0", 60_000, 5_300).await.unwrap().unwrap();
    assert_eq!(
        c.cancel_export_job(&t, other, 5_400).await.unwrap(),
        Some(CancelOutcome::FlaggedRunning)
    );
    assert!(c.heartbeat(&running.lease, 60_000, 5_500).await.unwrap().cancel_requested);
    assert!(c.fail_task(&running.lease, &[], 5_600).await.unwrap());
    assert_eq!(c.get_export_job(&t, other).await.unwrap().unwrap().status, JobStatus::Failed);
    assert!(c.claim_task("w1", 60_000, 5_700).await.unwrap().is_none(), "queued units dropped");
}

/// A worker whose cache holds partition 1 takes that partition's unit before older ones; one
/// that holds none of the queued partitions takes the oldest.
async fn claims_prefer_units_of_partitions_a_worker_holds(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let c = &db.catalog;
    split_job(&db, &t).await;
    let unit_of = |task: Option<segport_catalog::ClaimedTask>| task.unwrap().unit.unwrap().no;
    let holding = |held: &'static [u32]| Locality { held, ..Locality::default() };
    let holding_1 = c.claim_task_preferring("w1", 60_000, 4_000, None, &holding(&[1, 5])).await;
    assert_eq!(unit_of(holding_1.unwrap()), 2, "the unit of partitions 1 to 3");
    let holding_none = c.claim_task_preferring("w2", 60_000, 4_000, None, &holding(&[7])).await;
    assert_eq!(unit_of(holding_none.unwrap()), 0, "the oldest");
    let capped = c.claim_task_preferring("w3", 60_000, 4_000, Some(5), &holding(&[0])).await;
    assert_eq!(unit_of(capped.unwrap()), 1);
}

/// A unit of a partition that another live worker's cache holds is left to that worker by
/// claims that leave units to their holders; a worker holding it too, a holder gone quiet, a
/// forgotten cache or a claim that no longer leaves them takes it.
async fn a_unit_is_left_to_the_live_worker_that_holds_its_partition(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let c = &db.catalog;
    // Units 0 and 1 of partition 0, unit 2 of partitions 1 to 3.
    split_job(&db, &t).await;
    c.announce_cache("holder", &[0, 9], 3_500).await.unwrap();
    let claim = |owner: &'static str, now: i64, held: &'static [u32], leave: bool| {
        let c = c.clone();
        async move {
            let locality = Locality { held, leave_to_holders: leave, live_ms: 1_000 };
            let task = c.claim_task_preferring(owner, 60_000, now, None, &locality).await;
            // Handed back below: each claim sees the same queue.
            task.unwrap().map(|t| (t.unit.unwrap().no, t.lease))
        }
    };
    let release = |lease: TaskLease| {
        let c = c.clone();
        async move { assert!(c.release_task(&lease, 3_100).await.unwrap()) }
    };
    // The holder is live (seen at 3,500, within 1,000 of 4,000): another worker takes only the
    // unit nobody holds, then nothing.
    let (no, lease) = claim("idle", 4_000, &[], true).await.unwrap();
    assert_eq!(no, 2);
    assert!(claim("idle", 4_000, &[7], true).await.is_none(), "partition 0 is left to its holder");
    // Unless it no longer leaves units to their holders.
    let (no, stolen) = claim("idle", 4_000, &[], false).await.unwrap();
    assert_eq!(no, 0);
    release(stolen).await;
    release(lease).await;
    // The holder itself, and a worker that holds the partition too, take it first.
    for owner in ["holder", "twin"] {
        let (no, lease) = claim(owner, 4_000, &[0], true).await.unwrap();
        assert_eq!(no, 0, "{owner}");
        release(lease).await;
    }
    // A holder gone quiet (not seen within 1,000 of 4,600) holds nothing back.
    let (no, lease) = claim("idle", 4_600, &[], true).await.unwrap();
    assert_eq!(no, 0);
    release(lease).await;
    // A stopped worker's cache is forgotten.
    c.announce_cache("holder", &[0], 5_000).await.unwrap();
    let (no, lease) = claim("idle", 5_100, &[], true).await.unwrap();
    assert_eq!(no, 2, "left while announced");
    release(lease).await;
    c.forget_cache("holder").await.unwrap();
    let (no, _) = claim("idle", 5_100, &[], true).await.unwrap();
    assert_eq!(no, 0);
}
