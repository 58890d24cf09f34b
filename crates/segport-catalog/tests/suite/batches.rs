//! Batches: the ingest lifecycle's moves (each once, queueing one task), and export batches,
//! which can be deleted only once their job finished and which expire by completion time.

use super::*;
use segport_catalog::{BatchFile, ExportCommit, ExportedBatch};
use segport_model::job::ExportCounters;

suite!(ingest_batches_move_once, export_batches_go_only_when_finished);

async fn ingest_batches_move_once(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let c = &db.catalog;
    let (t, other) = (tenant("org", "prod"), tenant("org", "dev"));
    c.ensure_sandbox(&other, 1).await.unwrap();

    // ABORT: once; a COMPLETE after it changes nothing and queues nothing.
    let aborted = loading_batch(&db, &t, 1_000).await;
    assert_eq!(c.get_batch(&other, &aborted.id).await.unwrap(), None);
    assert_eq!(c.abort_batch(&other, &aborted.id, 1_001).await.unwrap(), None);
    let first = c.abort_batch(&t, &aborted.id, 1_001).await.unwrap().unwrap();
    assert!(first.changed);
    assert_eq!(first.status, BatchStatus::Aborted);
    let again = c.abort_batch(&t, &aborted.id, 1_002).await.unwrap().unwrap();
    assert!(!again.changed);
    let late = c.complete_batch(&t, &aborted.id, 1_003).await.unwrap().unwrap();
    assert!(!late.changed);
    assert_eq!(late.status, BatchStatus::Aborted);

    // FAIL: loading → failed.
    let failed = loading_batch(&db, &t, 2_000).await;
    let moved = c.fail_batch(&t, &failed.id, 2_001).await.unwrap().unwrap();
    assert!(moved.changed);
    assert_eq!(moved.status, BatchStatus::Failed);
    assert_eq!(c.get_batch(&t, &failed.id).await.unwrap().unwrap().status, BatchStatus::Failed);

    // COMPLETE twice: one move to staging, one ingest task, for this batch.
    let completed = loading_batch(&db, &t, 3_000).await;
    assert!(c.complete_batch(&t, &completed.id, 3_001).await.unwrap().unwrap().changed);
    assert!(!c.complete_batch(&t, &completed.id, 3_002).await.unwrap().unwrap().changed);
    let task = c.claim_task("w", 60_000, 4_000).await.unwrap().unwrap();
    assert_eq!(task.batch_id.as_ref(), Some(&completed.id));
    assert_eq!(c.claim_task("w", 60_000, 4_001).await.unwrap(), None);

    let unknown = BatchId::generate();
    assert_eq!(c.complete_batch(&t, &unknown, 5_000).await.unwrap(), None);
    let staging = BatchFilter { dataset_id: None, status: Some(BatchStatus::Staging) };
    let page = ListQuery { limit: 10, start: 0 };
    let listed = c.list_batches(&t, &staging, &page).await.unwrap();
    assert_eq!(listed.iter().map(|b| &b.id).collect::<Vec<_>>(), [&completed.id]);
}

async fn export_batches_go_only_when_finished(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let c = &db.catalog;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let id = job(&db, &t, &d, 1_000, false).await;
    let record = c.get_export_job(&t, id).await.unwrap().unwrap();
    let batch_id = record.spec.destination.batch_ids()[0].clone();

    // Not while the job runs; never an ingest batch; nothing for an unknown id.
    let running = c.delete_export_batch(&t, &batch_id).await;
    assert!(matches!(running, Err(CatalogError::Conflict(_))), "{running:?}");
    let ingest = loading_batch(&db, &t, 1_500).await;
    let refused = c.delete_export_batch(&t, &ingest.id).await;
    assert!(matches!(refused, Err(CatalogError::Conflict(_))), "{refused:?}");
    assert!(!c.delete_export_batch(&t, &BatchId::generate()).await.unwrap());

    let task = c.claim_task("w", 60_000, 2_000).await.unwrap().unwrap();
    let file = BatchFile { name: "part-0.parquet".into(), path: "p/0".into(), rows: 3, bytes: 99 };
    c.commit_export(ExportCommit {
        lease: task.lease,
        job_id: id,
        batches: vec![ExportedBatch {
            batch_id: batch_id.clone(),
            files: vec![file.clone()],
            rows: 3,
        }],
        counters: ExportCounters::default(),
        warnings: Vec::new(),
        now_ms: 3_000,
    })
    .await
    .unwrap();
    assert_eq!(c.list_batch_files(&t, &batch_id).await.unwrap(), [file]);
    let finished = c.get_batch(&t, &batch_id).await.unwrap().unwrap();
    assert_eq!((finished.status, finished.record_count), (BatchStatus::Success, Some(3)));

    // Retention sees it once it completed before the cut, and only then.
    assert!(c.expired_export_batches(3_000, 10).await.unwrap().is_empty());
    assert_eq!(c.expired_export_batches(3_001, 10).await.unwrap(), [(t.clone(), batch_id.clone())]);

    assert!(c.delete_export_batch(&t, &batch_id).await.unwrap());
    assert_eq!(c.get_batch(&t, &batch_id).await.unwrap(), None);
    assert!(c.list_batch_files(&t, &batch_id).await.unwrap().is_empty());
    assert!(c.expired_export_batches(i64::MAX, 10).await.unwrap().is_empty());
}
