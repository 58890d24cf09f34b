//! The catalog behaviour suite, run against PostgreSQL and SQLite alike.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use segport_catalog::testing::TestCatalog;
use segport_catalog::{
    Backend, BatchFilter, CancelOutcome, CatalogError, JobListQuery, ListQuery, NewExportJob,
    TokenRecord,
};
use segport_catalog::{CatalogError as E, IngestCommit, NewStoreFile, StoreKind};
use segport_catalog::{Upload, UploadRecorded};
use segport_model::batch::{Batch, BatchStatus, IngestFormat, NewIngestBatch};
use segport_model::dataset::{Dataset, DatasetClass, SchemaRef, PROFILE_UNION_SCHEMA};
use segport_model::job::{ExportJobRequest, JobStatus};
use segport_model::merge_policy::{MergePolicyInput, DEFAULT_POLICY_ID};
use segport_model::{BatchId, DatasetId, Tenant};
use serde_json::json;

fn tenant(org: &str, sandbox: &str) -> Tenant {
    Tenant::parse(org, sandbox).unwrap()
}

async fn dataset(db: &TestCatalog, t: &Tenant) -> Dataset {
    let d = Dataset {
        id: DatasetId::generate(),
        org: t.org.to_string(),
        sandbox: t.sandbox.to_string(),
        name: "dest".into(),
        description: None,
        schema_ref: SchemaRef { id: PROFILE_UNION_SCHEMA.into(), content_type: None },
        tags: BTreeMap::new(),
        class: DatasetClass::Export,
        created_ms: 1,
        updated_ms: 1,
    };
    db.catalog.create_dataset(&d).await.unwrap();
    d
}

async fn new_job(
    db: &TestCatalog,
    t: &Tenant,
    d: &Dataset,
    now_ms: i64,
    per_batch: bool,
) -> NewExportJob {
    db.catalog.ensure_sandbox(t, now_ms).await.unwrap();
    let req = ExportJobRequest::parse(&json!({
        "destination": {"datasetId": d.id.as_str(), "segmentPerBatch": per_batch},
        "schema": {"name": "_xdm.context.profile"},
        "filter": {"segments": [{"segmentId": "a"}, {"segmentId": "b"}]}
    }))
    .unwrap();
    let policy = db.catalog.default_merge_policy(t).await.unwrap().unwrap();
    let batches = (0..req.batch_count()).map(|_| BatchId::generate()).collect();
    let spec = req.into_spec(policy.to_ref(), batches, "ups".into());
    NewExportJob {
        spec,
        merge_policy: policy,
        warnings: Vec::new(),
        request_id: "r".into(),
        now_ms,
    }
}

async fn job(db: &TestCatalog, t: &Tenant, d: &Dataset, now_ms: i64, per_batch: bool) -> i64 {
    let job = new_job(db, t, d, now_ms, per_batch).await;
    db.catalog.create_export_job(t, job).await.unwrap().id
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
    };
}

suite!(
    task_leases_fence_and_reap,
    ingest_commits_are_fenced_and_ordered,
    sandbox_gets_default_policy_once,
    jobs_and_batches_round_trip,
    keyset_listing_orders_and_filters,
    cancel_by_status,
    tenants_are_isolated,
    merge_policy_lifecycle,
    tokens,
    grouped_creates_share_a_transaction_and_fail_alone,
    the_job_writer_answers_every_concurrent_create,
    claims_take_turns_between_tenants,
    job_counts_are_maintained,
);

/// Issue 7, point 15: tenant A queues 1,000 jobs, then tenant B one; with one worker slot, B's
/// job is claimed within the next two claims, and A's jobs go oldest first.
async fn claims_take_turns_between_tenants(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (a, b) = (tenant("org-a", "prod"), tenant("org-b", "prod"));
    let (da, db_) = (dataset(&db, &a).await, dataset(&db, &b).await);
    let mut queued_a = Vec::new();
    for i in 0..1000 {
        queued_a.push(job(&db, &a, &da, 1000 + i, false).await);
    }
    let job_b = job(&db, &b, &db_, 5000, false).await;
    let claim = || async { db.catalog.claim_task("w", 60_000, 6000).await.unwrap().unwrap() };
    let (first, second) = (claim().await, claim().await);
    let claimed = [first.job_id.unwrap(), second.job_id.unwrap()];
    assert!(claimed.contains(&job_b), "B's job waited behind A's backlog: {claimed:?}");
    assert!(claimed.contains(&queued_a[0]), "A's oldest goes first: {claimed:?}");
    // Then A's jobs, oldest first, the only tenant left.
    for expected in &queued_a[1..4] {
        assert_eq!(claim().await.job_id, Some(*expected));
    }
}

async fn grouped_creates_share_a_transaction_and_fail_alone(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let mut stale = new_job(&db, &t, &d, 10, false).await;
    stale.merge_policy.version -= 1;
    let jobs = vec![
        (t.clone(), new_job(&db, &t, &d, 10, true).await),
        (t.clone(), stale),
        (t.clone(), new_job(&db, &t, &d, 11, false).await),
    ];
    let answers = db.catalog.create_export_jobs(jobs).await;
    assert_eq!(answers.len(), 3);
    assert!(matches!(answers[1], Err(E::Conflict(_))), "{:?}", answers[1]);
    let ids: Vec<i64> = [&answers[0], &answers[2]].iter().map(|a| a.as_ref().unwrap().id).collect();
    assert_ne!(ids[0], ids[1]);
    for (id, batches) in ids.iter().zip([2, 1]) {
        let rec = db.catalog.get_export_job(&t, *id).await.unwrap().unwrap();
        assert_eq!(rec.status, JobStatus::New);
        assert_eq!(rec.spec.destination.batch_ids().len(), batches);
        for b in rec.spec.destination.batch_ids() {
            assert_eq!(db.catalog.get_batch(&t, b).await.unwrap().unwrap().job_id, Some(*id));
        }
    }
    // Exactly the two created jobs have tasks.
    let mut claimed = Vec::new();
    while let Some(task) = db.catalog.claim_task("w", 60_000, 20).await.unwrap() {
        claimed.push(task.job_id.unwrap());
    }
    claimed.sort_unstable();
    assert_eq!(claimed, ids);
}

async fn the_job_writer_answers_every_concurrent_create(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let writer = std::sync::Arc::new(segport_catalog::group::JobWriter::new(db.catalog.clone()));
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..60 {
        let job = new_job(&db, &t, &d, 100 + i, i % 2 == 0).await;
        let (writer, t) = (writer.clone(), t.clone());
        creates.spawn(async move { writer.create(t, job).await.map(|r| (r.id, r.creation_ms)) });
    }
    let mut ids = Vec::new();
    while let Some(answer) = creates.join_next().await {
        let (id, creation_ms) = answer.unwrap().unwrap();
        let stored = db.catalog.get_export_job(&t, id).await.unwrap().unwrap();
        assert_eq!(stored.creation_ms, creation_ms, "each create is answered with its own job");
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 60);
}

async fn sandbox_gets_default_policy_once(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    db.catalog.ensure_sandbox(&t, 1000).await.unwrap();
    db.catalog.ensure_sandbox(&t, 2000).await.unwrap();
    let policies =
        db.catalog.list_merge_policies(&t, &ListQuery { limit: 10, start: 0 }).await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].id, DEFAULT_POLICY_ID);
    assert!(policies[0].default);
    assert_eq!(policies[0].version, 1);
}

async fn jobs_and_batches_round_trip(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let id = job(&db, &t, &d, 5000, true).await;
    let rec = db.catalog.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::New);
    assert_eq!(rec.creation_ms, 5000);
    let batch_ids = rec.spec.destination.batch_ids();
    assert_eq!(batch_ids.len(), 2);
    for b in batch_ids {
        let batch = db.catalog.get_batch(&t, b).await.unwrap().unwrap();
        assert_eq!(batch.status, BatchStatus::Loading);
        assert_eq!(batch.job_id, Some(id));
        assert_eq!(batch.dataset_id, d.id);
    }
    let listed = db
        .catalog
        .list_batches(
            &t,
            &BatchFilter { dataset_id: Some(d.id.clone()), status: None },
            &ListQuery { limit: 10, start: 0 },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    let none = db
        .catalog
        .list_batches(
            &t,
            &BatchFilter { dataset_id: None, status: Some(BatchStatus::Success) },
            &ListQuery { limit: 10, start: 0 },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn keyset_listing_orders_and_filters(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    // Several jobs share a creation time so that ties are broken by id.
    let mut expected = Vec::new();
    for i in 0..9 {
        let id = job(&db, &t, &d, 1000 + (i / 3), false).await;
        expected.push((1000 + (i / 3), id));
    }
    expected.sort_by(|a, b| b.cmp(a));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .catalog
            .list_export_jobs(&t, &JobListQuery { status: None, after, skip: 0, limit: 4 })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|j| (j.creation_ms, j.id)));
        // Lists leave the policy's body in the table; one job has it whole.
        assert!(page.iter().all(|j| j.merge_policy.is_none()));
        let one = db.catalog.get_export_job(&t, page[0].id).await.unwrap().unwrap();
        assert_eq!(
            one.merge_policy.as_ref().map(|p| p.to_ref()),
            Some(one.spec.merge_policy.clone())
        );
        let last = page.last().unwrap();
        after = Some((last.creation_ms, last.id));
    }
    assert_eq!(seen, expected);

    let skipped = db
        .catalog
        .list_export_jobs(&t, &JobListQuery { status: None, after: None, skip: 7, limit: 10 })
        .await
        .unwrap();
    assert_eq!(skipped.iter().map(|j| (j.creation_ms, j.id)).collect::<Vec<_>>(), expected[7..]);

    db.catalog.cancel_export_job(&t, expected[0].1, 9).await.unwrap();
    let failed = db
        .catalog
        .list_export_jobs(
            &t,
            &JobListQuery { status: Some(JobStatus::Failed), after: None, skip: 0, limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, expected[0].1);
    let counts = db.catalog.count_jobs().await.unwrap();
    let new = counts.iter().find(|c| c.status == JobStatus::New).map(|c| c.n);
    assert_eq!(new, Some(8));
}

/// The oracle of the maintained counts: every job of the tenants listed and counted.
async fn counted(db: &TestCatalog, tenants: &[&Tenant]) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for t in tenants {
        let all = db
            .catalog
            .list_export_jobs(t, &JobListQuery { status: None, after: None, skip: 0, limit: 1000 })
            .await
            .unwrap();
        for j in all {
            *out.entry((j.org.clone(), j.status.to_string())).or_default() += 1;
        }
    }
    out
}

/// Issue 7, point 16: job counts by tenant and status are maintained as jobs are created,
/// claimed, cancelled, requeued and deleted, folded or not, and equal a count of the jobs.
async fn job_counts_are_maintained(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (a, b) = (tenant("org-a", "prod"), tenant("org-b", "dev"));
    let (da, db_) = (dataset(&db, &a).await, dataset(&db, &b).await);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(job(&db, &a, &da, 100 + i, false).await);
    }
    for i in 0..5 {
        job(&db, &b, &db_, 200 + i, false).await;
    }
    let maintained = || async {
        db.catalog
            .count_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|c| ((c.org, c.status.to_string()), c.n))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
    // Claims (NEW → PROCESSING), cancels (NEW → FAILED), a finished job deleted, a fold in
    // the middle, leases expiring (PROCESSING → NEW).
    for _ in 0..6 {
        db.catalog.claim_task("w", 1, 300).await.unwrap().unwrap();
    }
    assert!(db.catalog.fold_job_counts().await.unwrap() > 0);
    for id in &ids[8..11] {
        db.catalog.cancel_export_job(&a, *id, 400).await.unwrap();
    }
    db.catalog.cancel_export_job(&a, ids[8], 401).await.unwrap();
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
    db.catalog.reap_expired_tasks(10_000).await.unwrap();
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
    db.catalog.fold_job_counts().await.unwrap();
    assert_eq!(db.catalog.fold_job_counts().await.unwrap(), 0, "nothing left to fold");
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
}

async fn cancel_by_status(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let id = job(&db, &t, &d, 1000, false).await;
    assert_eq!(
        db.catalog.cancel_export_job(&t, id, 2000).await.unwrap(),
        Some(CancelOutcome::CancelledNew)
    );
    let rec = db.catalog.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert_eq!(rec.errors[0].code, "EXPORT_CANCELLED");
    assert_eq!(rec.finished_ms, Some(2000));
    let batch =
        db.catalog.get_batch(&t, rec.spec.destination.batch_ids()[0]).await.unwrap().unwrap();
    assert_eq!(batch.status, BatchStatus::Failed);
    // A finished job is deleted; its batch stays.
    assert_eq!(
        db.catalog.cancel_export_job(&t, id, 3000).await.unwrap(),
        Some(CancelOutcome::DeletedFinished)
    );
    assert!(db.catalog.get_export_job(&t, id).await.unwrap().is_none());
    assert!(db.catalog.get_batch(&t, &batch.id).await.unwrap().is_some());
    assert_eq!(db.catalog.cancel_export_job(&t, id, 4000).await.unwrap(), None);
}

async fn tenants_are_isolated(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let a = tenant("org-a", "prod");
    let b = tenant("org-b", "prod");
    let c = tenant("org-a", "dev");
    let d = dataset(&db, &a).await;
    let id = job(&db, &a, &d, 1000, false).await;
    for other in [&b, &c] {
        assert!(db.catalog.get_export_job(other, id).await.unwrap().is_none());
        assert!(db.catalog.get_dataset(other, &d.id).await.unwrap().is_none());
        assert_eq!(db.catalog.cancel_export_job(other, id, 1).await.unwrap(), None);
        let jobs = db
            .catalog
            .list_export_jobs(
                other,
                &JobListQuery { status: None, after: None, skip: 0, limit: 10 },
            )
            .await
            .unwrap();
        assert!(jobs.is_empty());
        let sets =
            db.catalog.list_datasets(other, &ListQuery { limit: 10, start: 0 }).await.unwrap();
        assert!(sets.is_empty());
    }
    assert!(db.catalog.get_dataset(&a, &d.id).await.unwrap().is_some());
}

async fn merge_policy_lifecycle(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    db.catalog.ensure_sandbox(&t, 1000).await.unwrap();
    let input = |default: bool| {
        MergePolicyInput::parse(&json!({
            "name": "p", "schema": {"name": "_xdm.context.profile"},
            "identityGraph": {"type": "none"}, "attributeMerge": {"type": "timestampOrdered"},
            "default": default
        }))
        .unwrap()
    };
    let p = input(false).into_policy("custom".into(), "org", 1, 1000);
    db.catalog.create_merge_policy(&t, &p).await.unwrap();
    // Updating bumps the version; making it default un-defaults the built-in one.
    let updated =
        db.catalog.update_merge_policy(&t, "custom", input(true), 2000).await.unwrap().unwrap();
    assert_eq!(updated.version, 2);
    assert!(updated.default);
    assert_eq!(db.catalog.default_merge_policy(&t).await.unwrap().unwrap().id, "custom");
    let builtin = db.catalog.get_merge_policy(&t, DEFAULT_POLICY_ID).await.unwrap().unwrap();
    assert!(!builtin.default);
    // The default cannot be deleted; a policy a queued job uses cannot either.
    assert!(matches!(
        db.catalog.delete_merge_policy(&t, "custom").await,
        Err(CatalogError::Conflict(_))
    ));
    db.catalog
        .update_merge_policy(&t, DEFAULT_POLICY_ID, input(true), 3000)
        .await
        .unwrap()
        .unwrap();
    db.catalog.update_merge_policy(&t, "custom", input(false), 3000).await.unwrap().unwrap();
    let custom = db.catalog.get_merge_policy(&t, "custom").await.unwrap().unwrap();
    let req = ExportJobRequest::parse(&json!({
        "destination": {"datasetId": d.id.as_str()}, "schema": {"name": "_xdm.context.profile"}
    }))
    .unwrap();
    let spec = req.into_spec(custom.to_ref(), vec![BatchId::generate()], "ups".into());
    let id = db
        .catalog
        .create_export_job(
            &t,
            NewExportJob {
                spec,
                merge_policy: custom,
                warnings: Vec::new(),
                request_id: "r".into(),
                now_ms: 4000,
            },
        )
        .await
        .unwrap()
        .id;
    assert!(matches!(
        db.catalog.delete_merge_policy(&t, "custom").await,
        Err(CatalogError::Conflict(_))
    ));
    db.catalog.cancel_export_job(&t, id, 5000).await.unwrap();
    assert!(db.catalog.delete_merge_policy(&t, "custom").await.unwrap());
    assert!(!db.catalog.delete_merge_policy(&t, "custom").await.unwrap());
    assert!(db
        .catalog
        .update_merge_policy(&t, "custom", input(false), 6000)
        .await
        .unwrap()
        .is_none());
}

async fn tokens(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let rec = TokenRecord {
        id: "tok1".into(),
        org: "org".into(),
        token_sha256: "ab".repeat(32),
        created_ms: 1,
        expires_ms: Some(99),
        revoked_ms: None,
    };
    db.catalog.insert_token(&rec).await.unwrap();
    assert_eq!(db.catalog.find_token(&rec.token_sha256).await.unwrap(), Some(rec.clone()));
    assert_eq!(db.catalog.list_tokens().await.unwrap(), vec![rec.clone()]);
    assert!(db.catalog.revoke_token("tok1", 50).await.unwrap());
    assert!(!db.catalog.revoke_token("tok1", 60).await.unwrap());
    assert_eq!(
        db.catalog.find_token(&rec.token_sha256).await.unwrap().unwrap().revoked_ms,
        Some(50)
    );
    assert!(db.catalog.find_token(&"cd".repeat(32)).await.unwrap().is_none());
}

async fn queued_batch(db: &TestCatalog, t: &Tenant, now: i64) -> Batch {
    db.catalog.ensure_sandbox(t, now).await.unwrap();
    let mut d = dataset(db, t).await;
    d.id = DatasetId::generate();
    d.class = DatasetClass::Profile;
    db.catalog.create_dataset(&d).await.unwrap();
    let new = NewIngestBatch {
        dataset_id: d.id.clone(),
        format: IngestFormat::Json,
        multiline_json: false,
    };
    let batch = Batch::new_ingest(t.org.as_str(), t.sandbox.as_str(), &new, now);
    db.catalog.create_ingest_batch(&batch).await.unwrap();
    let upload = |object: &str| Upload {
        name: "f.json".into(),
        object: Some(object.into()),
        bytes: 10,
        uploaded_ms: now,
    };
    let first = db.catalog.record_upload(t, &batch.id, &upload("a")).await.unwrap();
    assert_eq!(first, UploadRecorded::Recorded { replaced: None });
    // A second upload of the name replaces the first, which is answered for removal.
    let second = db.catalog.record_upload(t, &batch.id, &upload("b")).await.unwrap();
    assert_eq!(second, UploadRecorded::Recorded { replaced: Some(upload("a")) });
    let moved = db.catalog.complete_batch(t, &batch.id, now).await.unwrap().unwrap();
    assert!(moved.changed);
    assert_eq!(moved.status, BatchStatus::Staging);
    // Once the batch left loading, an upload is refused and the recorded one stays.
    let late = db.catalog.record_upload(t, &batch.id, &upload("c")).await.unwrap();
    assert_eq!(late, UploadRecorded::Refused);
    assert_eq!(db.catalog.list_uploads(&batch.id).await.unwrap(), [upload("b")]);
    batch
}

fn commit(
    lease: &segport_catalog::TaskLease,
    t: &Tenant,
    batch: &Batch,
    now_ms: i64,
) -> IngestCommit {
    IngestCommit {
        lease: lease.clone(),
        tenant: t.clone(),
        batch_id: batch.id.clone(),
        kind: StoreKind::Profile,
        held: r#"{"fields":{}}"#.into(),
        files: vec![NewStoreFile {
            dataset_id: batch.dataset_id.to_string(),
            kind: StoreKind::Profile,
            partition: 0,
            path: format!("x/{}.parquet", batch.id),
            rows: 1,
            bytes: 1,
            min_key: "a".into(),
            max_key: "a".into(),
        }],
        record_count: 1,
        failed_record_count: 0,
        errors: Vec::new(),
        schema: None,
        schema_version: 0,
        now_ms,
    }
}

async fn task_leases_fence_and_reap(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let batch = queued_batch(&db, &t, 1_000).await;
    let c = &db.catalog;
    let first = c.claim_task("w1", 1_000, 10_000).await.unwrap().unwrap();
    assert_eq!((first.attempt, first.batch_id.as_ref()), (1, Some(&batch.id)));
    assert!(c.claim_task("w2", 1_000, 10_000).await.unwrap().is_none(), "one attempt at a time");
    assert!(c.heartbeat(&first.lease, 1_000, 10_500).await.unwrap().alive);
    assert!(
        c.reap_expired_tasks(11_000).await.unwrap().is_empty(),
        "the heartbeat extended the lease"
    );
    let reaped = c.reap_expired_tasks(12_000).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert!(reaped[0].requeued);
    assert!(!c.heartbeat(&first.lease, 1_000, 12_001).await.unwrap().alive);
    assert!(c.running_attempts().await.unwrap().is_empty());

    let second = c.claim_task("w2", 1_000, 13_000).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease.attempt_id, first.lease.attempt_id);
    assert_eq!(c.running_attempts().await.unwrap(), vec![second.lease.attempt_id.clone()]);
    // The first attempt's late commit is fenced out and leaves nothing behind.
    assert!(matches!(
        c.commit_ingest(commit(&first.lease, &t, &batch, 13_100)).await,
        Err(E::LeaseLost)
    ));
    assert!(c.store_snapshot(&t, None).await.unwrap().files.is_empty());
    assert_eq!(c.get_batch(&t, &batch.id).await.unwrap().unwrap().status, BatchStatus::Staging);

    // A hand-back does not use up an attempt.
    assert!(c.release_task(&second.lease, 13_200).await.unwrap());
    let third = c.claim_task("w3", 1_000, 14_000).await.unwrap().unwrap();
    assert_eq!(third.attempt, 2);
    assert!(c.reap_expired_tasks(20_000).await.unwrap()[0].requeued);
    let last = c.claim_task("w3", 1_000, 21_000).await.unwrap().unwrap();
    assert_eq!(last.attempt, 3);
    let reaped = c.reap_expired_tasks(30_000).await.unwrap();
    assert!(!reaped[0].requeued, "no attempts left");
    let failed = c.get_batch(&t, &batch.id).await.unwrap().unwrap();
    assert_eq!(failed.status, BatchStatus::Failed);
    assert_eq!(failed.errors[0].code, "WORKER_LOST");
    assert!(c.claim_task("w4", 1_000, 31_000).await.unwrap().is_none());
}

async fn ingest_commits_are_fenced_and_ordered(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let c = &db.catalog;
    let a = queued_batch(&db, &t, 1_000).await;
    let b = queued_batch(&db, &t, 1_000).await;
    let ta = c.claim_task("w", 60_000, 5_000).await.unwrap().unwrap();
    let tb = c.claim_task("w", 60_000, 5_000).await.unwrap().unwrap();
    let snapshot = c.store_snapshot(&t, Some(&ta.lease)).await.unwrap();
    assert_eq!(snapshot.seq, 0);
    // The second commit's clock is behind the first's: ingest times still increase.
    let first = c.commit_ingest(commit(&tb.lease, &t, &b, 9_000)).await.unwrap();
    let second = c.commit_ingest(commit(&ta.lease, &t, &a, 8_000)).await.unwrap();
    assert_eq!(first.completed_ms, 9_000);
    assert_eq!(second.completed_ms, 9_001);
    assert!(second.seq > first.seq);
    assert_eq!(c.get_batch(&t, &a.id).await.unwrap().unwrap().completed_ms, Some(9_001));
    let mut files = c.store_snapshot(&t, None).await.unwrap().files;
    files.sort_by_key(|f| f.seq);
    assert_eq!(files.len(), 2);
    assert_eq!(files.iter().map(|f| f.ingest_ms).collect::<Vec<_>>(), [Some(9_000), Some(9_001)]);
    // A committed task cannot commit again.
    assert!(matches!(c.commit_ingest(commit(&ta.lease, &t, &a, 10_000)).await, Err(E::LeaseLost)));
    // A schema change races: the commit naming an older version is refused.
    let d = queued_batch(&db, &t, 1_000).await;
    let td = c.claim_task("w", 60_000, 11_000).await.unwrap().unwrap();
    let mut with_schema = commit(&td.lease, &t, &d, 11_000);
    with_schema.schema = Some("{\"fields\":{}}".into());
    with_schema.schema_version = 7;
    assert!(matches!(c.commit_ingest(with_schema.clone()).await, Err(E::SchemaChanged)));
    with_schema.schema_version = c.store_state(&t).await.unwrap().schema_version;
    c.commit_ingest(with_schema.clone()).await.unwrap();
    assert_eq!(c.store_state(&t).await.unwrap().schema_version, 1);
    // The same commit sent again (its answer lost to a reset connection) is told the lease is
    // gone, not that the schema changed: the worker must not delete the files it committed.
    assert!(matches!(c.commit_ingest(with_schema).await, Err(E::LeaseLost)));

    // What the batches hold is recorded with them, per class of their dataset.
    let held = c.held_schemas(&t, StoreKind::Profile).await.unwrap();
    assert_eq!(held.schema_version, 1);
    assert_eq!(held.held.len(), 3, "{held:?}");
    assert!(c.held_schemas(&t, StoreKind::Event).await.unwrap().held.is_empty());
    // A release is a commit of its own, refused when the version moved on.
    assert!(!c.release_schema(&t, StoreKind::Profile, 0, "{\"fields\":{}}").await.unwrap());
    let before = c.store_snapshot(&t, None).await.unwrap().seq;
    let released = r#"{"fields":{"x":{"type":"string"}}}"#;
    assert!(c.release_schema(&t, StoreKind::Profile, 1, released).await.unwrap());
    let snapshot = c.store_snapshot(&t, None).await.unwrap();
    assert!(snapshot.seq > before);
    assert_eq!(snapshot.profile_schema, released);
    assert_eq!(c.store_state(&t).await.unwrap().schema_version, 2);
    // An attempt that typed before the release types again, even when it widens nothing: the
    // release may have dropped a field it holds.
    let e = queued_batch(&db, &t, 12_000).await;
    let te = c.claim_task("w", 60_000, 12_000).await.unwrap().unwrap();
    let mut typed_before = commit(&te.lease, &t, &e, 12_000);
    typed_before.schema_version = 1;
    assert!(matches!(c.commit_ingest(typed_before.clone()).await, Err(E::SchemaChanged)));
    typed_before.schema_version = 2;
    c.commit_ingest(typed_before).await.unwrap();
}

/// A task queued through one PostgreSQL catalog wakes a worker waiting on another (another
/// process in production) at once, through LISTEN/NOTIFY rather than the polling fallback.
#[tokio::test]
async fn postgres_notifies_other_processes_of_new_tasks() {
    let db = TestCatalog::postgres().await;
    let other = segport_catalog::connect(&segport_catalog::ConnectOptions::new(db.url.clone()))
        .await
        .unwrap();
    let t = tenant("org", "prod");
    // Start listening, and drain the wake-up that every new listener gets.
    other.wait_for_tasks(std::time::Duration::from_secs(5)).await;
    let waiter = tokio::spawn(async move {
        let start = std::time::Instant::now();
        other.wait_for_tasks(std::time::Duration::from_secs(20)).await;
        start.elapsed()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    queued_batch(&db, &t, 1_000).await;
    let waited = waiter.await.unwrap();
    assert!(waited < std::time::Duration::from_secs(5), "woken after {waited:?}");
}
