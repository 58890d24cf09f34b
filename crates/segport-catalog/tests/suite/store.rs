//! The store manifest: ingest commits, their order and fencing, schema versions and releases.

use super::*;

suite!(ingest_commits_are_fenced_and_ordered);

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
