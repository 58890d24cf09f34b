//! Webhooks: endpoints per sandbox, events written with the status changes they report (and
//! only for endpoints that take them), claims under a lease, retries, giving up and disabling.

use segport_catalog::AttemptResult;
use segport_model::webhook::{DeliveryState, Endpoint, EventType};

use super::*;

suite!(
    endpoints_are_kept_per_sandbox,
    events_go_with_the_change_they_report,
    deliveries_are_claimed_retried_and_given_up
);

fn endpoint(t: &Tenant, id: &str, events: Option<Vec<EventType>>) -> Endpoint {
    Endpoint {
        id: id.into(),
        org: t.org.to_string(),
        sandbox: t.sandbox.to_string(),
        url: format!("https://example.com/{id}"),
        description: String::new(),
        events,
        secret: format!("whsec_{id}"),
        previous_secret: None,
        previous_until_ms: None,
        enabled: true,
        disabled_reason: None,
        create_ms: 1,
        update_ms: 1,
    }
}

const PAGE: ListQuery = ListQuery { limit: 100, start: 0 };

async fn endpoints_are_kept_per_sandbox(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (t, other) = (tenant("org", "prod"), tenant("org", "dev"));
    db.catalog.ensure_sandbox(&t, 1).await.unwrap();
    db.catalog.create_endpoint(&endpoint(&t, "a", None), 2).await.unwrap();
    let filtered = endpoint(&t, "b", Some(vec![EventType::ExportFailed, EventType::IngestFailed]));
    db.catalog.create_endpoint(&filtered, 2).await.unwrap();
    let third = db.catalog.create_endpoint(&endpoint(&t, "c", None), 2).await;
    assert!(matches!(third, Err(E::Conflict(_))), "{third:?}");
    let listed = db.catalog.list_endpoints(&t, &PAGE).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(listed[1].events, filtered.events);
    assert!(db.catalog.list_endpoints(&other, &PAGE).await.unwrap().is_empty());
    assert!(db.catalog.get_endpoint(&other, "a").await.unwrap().is_none());
    let mut b = db.catalog.get_endpoint(&t, "b").await.unwrap().unwrap();
    b.previous_secret = Some(b.secret.clone());
    b.secret = "whsec_new".into();
    b.previous_until_ms = Some(99);
    assert!(db.catalog.update_endpoint(&b).await.unwrap());
    let back = db.catalog.get_endpoint(&t, "b").await.unwrap().unwrap();
    assert_eq!(back.signing_secrets(98), ["whsec_new", "whsec_b"]);
    assert_eq!(back.signing_secrets(99), ["whsec_new"]);
    assert!(!db.catalog.delete_endpoint(&other, "a").await.unwrap());
    assert!(db.catalog.delete_endpoint(&t, "a").await.unwrap());
    assert_eq!(db.catalog.list_endpoints(&t, &PAGE).await.unwrap().len(), 1);
}

async fn events_go_with_the_change_they_report(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (t, other) = (tenant("org", "prod"), tenant("org", "dev"));
    let d = dataset(&db, &t).await;
    // Without endpoints, no event is written at all.
    let quiet = job(&db, &t, &d, 10, false).await;
    db.catalog.cancel_export_job(&t, quiet, 11).await.unwrap();
    db.catalog.ensure_sandbox(&other, 1).await.unwrap();
    db.catalog.create_endpoint(&endpoint(&t, "all", None), 10).await.unwrap();
    db.catalog
        .create_endpoint(&endpoint(&t, "failed", Some(vec![EventType::ExportFailed])), 10)
        .await
        .unwrap();
    db.catalog
        .create_endpoint(&endpoint(&t, "cancelled", Some(vec![EventType::ExportCancelled])), 10)
        .await
        .unwrap();
    db.catalog.create_endpoint(&endpoint(&other, "elsewhere", None), 10).await.unwrap();
    let mut off = endpoint(&t, "off", None);
    off.enabled = false;
    db.catalog.create_endpoint(&off, 10).await.unwrap();

    // A NEW job cancelled: export.cancelled, to the endpoints that take it.
    let cancelled = job(&db, &t, &d, 20, false).await;
    db.catalog.cancel_export_job(&t, cancelled, 21).await.unwrap();
    // A running job failed by its worker: export.failed.
    let failed = job(&db, &t, &d, 30, false).await;
    let lease = db.catalog.claim_task("w", 60_000, 31).await.unwrap().unwrap();
    assert_eq!(lease.job_id, Some(failed));
    let error = segport_model::batch::BatchError {
        code: "INTERNAL".into(),
        description: "boom".into(),
        rows: Vec::new(),
    };
    assert!(db.catalog.fail_task(&lease.lease, &[error], 32).await.unwrap());
    // A second failure of the same task changes nothing and reports nothing.
    assert!(!db.catalog.fail_task(&lease.lease, &[], 33).await.unwrap());

    let types = |log: Vec<segport_model::webhook::Delivery>| {
        let mut t: Vec<String> = log.into_iter().map(|d| d.event_type).collect();
        t.sort();
        t
    };
    let log = |id: &'static str| {
        let db = &db;
        let t = t.clone();
        async move { db.catalog.list_deliveries(&t, id, &PAGE).await.unwrap() }
    };
    assert_eq!(types(log("all").await), ["export.cancelled", "export.failed"]);
    assert_eq!(types(log("failed").await), ["export.failed"]);
    assert_eq!(types(log("cancelled").await), ["export.cancelled"]);
    assert!(log("off").await.is_empty());
    assert!(db.catalog.list_deliveries(&other, "elsewhere", &PAGE).await.unwrap().is_empty());
    // Every delivery of one event has the event's id; the payload carries the job.
    let claimed = db.catalog.claim_deliveries(100, 60_000, 100).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let of = |id: &str| claimed.iter().find(|c| c.endpoint.id == id).unwrap();
    assert_eq!(
        of("all").msg_id == of("cancelled").msg_id,
        of("all").event_type == "export.cancelled"
    );
    let payload: serde_json::Value = serde_json::from_str(&of("cancelled").payload).unwrap();
    assert_eq!(payload["type"], "export.cancelled");
    assert_eq!(payload["data"]["id"], cancelled);
    assert_eq!(payload["data"]["status"], "FAILED");
    let payload: serde_json::Value = serde_json::from_str(&of("failed").payload).unwrap();
    assert_eq!(payload["data"]["id"], failed);
    assert_eq!(payload["data"]["errors"][0]["msg"], "boom");
    assert_eq!(db.catalog.pending_deliveries(&t).await.unwrap(), 4);
}

async fn deliveries_are_claimed_retried_and_given_up(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    db.catalog.ensure_sandbox(&t, 1).await.unwrap();
    db.catalog.create_endpoint(&endpoint(&t, "e", None), 10).await.unwrap();
    for now in [10, 20] {
        db.catalog
            .send_test_event(&t, "e", r#"{"type":"segport.test"}"#, now)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(db.catalog.send_test_event(&t, "missing", "{}", 30).await.unwrap().is_none());
    // A claim takes both; a second one, within the lease, none.
    let claimed = db.catalog.claim_deliveries(100, 1_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.attempts).collect::<Vec<_>>(), [0, 0]);
    assert!(db.catalog.claim_deliveries(500, 1_000, 10).await.unwrap().is_empty());
    // The lease runs out unrecorded (a dispatcher died): due again, with the same id.
    let again = db.catalog.claim_deliveries(1_100, 1_000, 10).await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].msg_id, claimed[0].msg_id);
    assert_eq!(again[0].attempts, 1);
    let (first, second) = (again[0].id, again[1].id);
    db.catalog
        .record_attempt(first, &AttemptResult::Delivered { status: 204 }, None, 1_200)
        .await
        .unwrap();
    let retry = AttemptResult::Failed {
        status: Some(500),
        error: "answered 500".into(),
        retry_at_ms: Some(5_000),
    };
    db.catalog.record_attempt(second, &retry, None, 1_200).await.unwrap();
    assert!(db.catalog.claim_deliveries(4_999, 1_000, 10).await.unwrap().is_empty());
    let log = db.catalog.list_deliveries(&t, "e", &PAGE).await.unwrap();
    let by_id = |id: i64| log.iter().find(|d| d.id == id).unwrap().clone();
    assert_eq!(
        (by_id(first).state, by_id(first).attempts, by_id(first).last_status),
        (DeliveryState::Delivered, 2, Some(204))
    );
    let pending = by_id(second);
    assert_eq!(
        (pending.state, pending.attempts, pending.next_attempt_ms),
        (DeliveryState::Pending, 2, Some(5_000))
    );
    assert_eq!(pending.last_error.as_deref(), Some("answered 500"));
    // Given up: the endpoint delivered something since that event, so it stays enabled.
    let [last] = db.catalog.claim_deliveries(5_000, 1_000, 10).await.unwrap().try_into().unwrap();
    let give_up =
        AttemptResult::Failed { status: None, error: "timed out".into(), retry_at_ms: None };
    db.catalog.record_attempt(last.id, &give_up, Some("disabled: failing"), 5_100).await.unwrap();
    assert!(db.catalog.get_endpoint(&t, "e").await.unwrap().unwrap().enabled);
    // A delivery given up with nothing delivered since its event disables the endpoint, and
    // fails what else was pending for it.
    for now in [6_000, 6_001] {
        db.catalog.send_test_event(&t, "e", "{}", now).await.unwrap();
    }
    let claimed = db.catalog.claim_deliveries(7_000, 1_000, 1).await.unwrap();
    db.catalog
        .record_attempt(claimed[0].id, &give_up, Some("disabled: failing"), 7_100)
        .await
        .unwrap();
    let e = db.catalog.get_endpoint(&t, "e").await.unwrap().unwrap();
    assert!(!e.enabled);
    assert_eq!(e.disabled_reason.as_deref(), Some("disabled: failing"));
    assert_eq!(db.catalog.pending_deliveries(&t).await.unwrap(), 0);
    assert!(matches!(db.catalog.send_test_event(&t, "e", "{}", 8_000).await, Err(E::Conflict(_))));
    // Retention: finished deliveries and their events go; the log is empty after.
    assert!(db.catalog.prune_webhooks(10_000).await.unwrap() >= 4);
    assert!(db.catalog.list_deliveries(&t, "e", &PAGE).await.unwrap().is_empty());
}
