//! The catalog behaviour suite, run against PostgreSQL and SQLite alike.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use segport_catalog::testing::TestCatalog;
use segport_catalog::{
    Backend, BatchFilter, CancelOutcome, CatalogError, JobListQuery, ListQuery, NewExportJob,
    TokenRecord,
};
use segport_model::batch::BatchStatus;
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

async fn job(db: &TestCatalog, t: &Tenant, d: &Dataset, now_ms: i64, per_batch: bool) -> i64 {
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
    let rec = db
        .catalog
        .create_export_job(
            t,
            NewExportJob { spec, merge_policy: policy, request_id: "r".into(), now_ms },
        )
        .await
        .unwrap();
    rec.id
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
    sandbox_gets_default_policy_once,
    jobs_and_batches_round_trip,
    keyset_listing_orders_and_filters,
    cancel_by_status,
    tenants_are_isolated,
    merge_policy_lifecycle,
    tokens,
);

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
    let counts = db.catalog.count_jobs_by_status().await.unwrap();
    let new = counts.iter().find(|(s, _)| *s == JobStatus::New).map(|(_, n)| *n);
    assert_eq!(new, Some(8));
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
            NewExportJob { spec, merge_policy: custom, request_id: "r".into(), now_ms: 4000 },
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
