//! The catalog behaviour suite, one module per concern, each test run against PostgreSQL and
//! SQLite alike (`suite!` stamps out one test per backend).

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
        schedule_id: None,
        delta_key: None,
    }
}

async fn job(db: &TestCatalog, t: &Tenant, d: &Dataset, now_ms: i64, per_batch: bool) -> i64 {
    let job = new_job(db, t, d, now_ms, per_batch).await;
    db.catalog.create_export_job(t, job).await.unwrap().id
}

/// A loading ingest batch of a new profile dataset, with nothing uploaded.
async fn loading_batch(db: &TestCatalog, t: &Tenant, now: i64) -> Batch {
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
    batch
}

/// An ingest batch completed with one upload (its ingest task queued), checking the upload
/// rules on the way.
async fn queued_batch(db: &TestCatalog, t: &Tenant, now: i64) -> Batch {
    let batch = loading_batch(db, t, now).await;
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
            key_fences: Vec::new(),
        }],
        record_count: 1,
        failed_record_count: 0,
        errors: Vec::new(),
        schema: None,
        schema_version: 0,
        now_ms,
    }
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

mod admin;
mod batches;
mod datasets;
mod jobs;
mod policies;
mod schedules;
mod store;
mod tasks;
mod tokens;
mod units;
mod webhooks;
