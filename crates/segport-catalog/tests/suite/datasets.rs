//! Datasets: pages, updates, and deletion, which waits for the tasks that write to a dataset
//! and answers its batches.

use super::*;

suite!(datasets_page_and_update, a_dataset_is_deleted_once_its_tasks_end);

async fn datasets_page_and_update(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (t, other) = (tenant("org", "prod"), tenant("org", "dev"));
    // Two created at the same time: the page orders by creation time, then id.
    let mut made = Vec::new();
    for created_ms in [30, 10, 20, 20, 40] {
        let d = unsaved_dataset(&t, created_ms);
        db.catalog.create_dataset(&d).await.unwrap();
        made.push(d);
    }
    db.catalog.create_dataset(&unsaved_dataset(&other, 5)).await.unwrap();
    let all = db.catalog.list_datasets(&t, &ListQuery { limit: 100, start: 0 }).await.unwrap();
    // The oracle: this tenant's datasets by (creation time, id).
    let mut expected: Vec<_> = all.iter().map(|d| (d.created_ms, d.id.clone())).collect();
    expected.sort();
    assert_eq!(all.iter().map(|d| (d.created_ms, d.id.clone())).collect::<Vec<_>>(), expected);
    assert_eq!(all.len(), made.len(), "none of the other tenant");
    let page = db.catalog.list_datasets(&t, &ListQuery { limit: 2, start: 3 }).await.unwrap();
    assert_eq!(page, all[3..5]);

    let mut renamed = made[1].clone();
    renamed.name = "renamed".into();
    renamed.tags.insert("k".into(), vec!["v".into()]);
    renamed.updated_ms = 99;
    assert!(db.catalog.update_dataset(&renamed).await.unwrap());
    assert_eq!(db.catalog.get_dataset(&t, &renamed.id).await.unwrap(), Some(renamed.clone()));
    assert_eq!(db.catalog.get_dataset(&other, &renamed.id).await.unwrap(), None);
}

async fn a_dataset_is_deleted_once_its_tasks_end(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let c = &db.catalog;
    let t = tenant("org", "prod");
    // A completed ingest batch: its task is queued.
    let batch = queued_batch(&db, &t, 1_000).await;
    let dataset_id = batch.dataset_id.clone();
    let busy = c.delete_dataset(&t, &dataset_id, 2_000).await;
    assert!(matches!(busy, Err(CatalogError::Conflict(_))), "{busy:?}");
    assert!(c.get_dataset(&t, &dataset_id).await.unwrap().is_some());

    let task = c.claim_task("w", 60_000, 2_000).await.unwrap().unwrap();
    let running = c.delete_dataset(&t, &dataset_id, 2_001).await;
    assert!(matches!(running, Err(CatalogError::Conflict(_))), "{running:?}");
    assert!(c.fail_task(&task.lease, &[], 2_002).await.unwrap());

    let deleted = c.delete_dataset(&t, &dataset_id, 3_000).await.unwrap();
    assert_eq!(deleted, Some(vec![batch.id.clone()]));
    assert_eq!(c.get_dataset(&t, &dataset_id).await.unwrap(), None);
    assert_eq!(c.get_batch(&t, &batch.id).await.unwrap(), None);
    assert_eq!(c.delete_dataset(&t, &dataset_id, 3_001).await.unwrap(), None);
    let mut gone = unsaved_dataset(&t, 1);
    gone.id = dataset_id;
    assert!(!c.update_dataset(&gone).await.unwrap(), "an update after the delete finds nothing");
}

/// A profile dataset of `t`, not in the catalog yet.
fn unsaved_dataset(t: &Tenant, created_ms: i64) -> Dataset {
    Dataset {
        id: DatasetId::generate(),
        org: t.org.to_string(),
        sandbox: t.sandbox.to_string(),
        name: "d".into(),
        description: None,
        schema_ref: SchemaRef { id: PROFILE_UNION_SCHEMA.into(), content_type: None },
        tags: BTreeMap::new(),
        class: DatasetClass::Profile,
        created_ms,
        updated_ms: created_ms,
    }
}
