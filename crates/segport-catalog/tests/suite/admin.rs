//! Sandboxes and tenants: a sandbox is made once, and no tenant sees another's rows.

use super::*;

suite!(sandbox_gets_default_policy_once, tenants_are_isolated);

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
                &JobListQuery {
                    status: None,
                    after: None,
                    skip: 0,
                    limit: 10,
                    ..Default::default()
                },
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
