//! Merge policies: defaults, versions, deletion rules.

use super::*;

suite!(merge_policy_lifecycle);

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
                schedule_id: None,
                delta_key: None,
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
