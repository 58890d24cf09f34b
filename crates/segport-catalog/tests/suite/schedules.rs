//! Schedules: kept per sandbox, and each due time fired exactly once, with a run in flight
//! recorded as missed.

use segport_catalog::{FailedRun, FireOutcome, ScheduleFire};
use segport_model::job::JobError;
use segport_model::schedule::{RunOutcome, Schedule, ScheduleBody};
use segport_model::webhook::{Endpoint, EventType};

use super::*;

suite!(
    schedules_are_kept_per_sandbox,
    a_due_time_fires_once_whoever_fires_it,
    a_run_in_flight_makes_the_due_time_missed,
    an_unresolved_run_is_a_failed_job_saying_why
);

fn schedule(t: &Tenant, d: &Dataset, state: &str, next_due_ms: Option<i64>) -> Schedule {
    let body = ScheduleBody::parse(&json!({
        "name": "nightly", "type": "export", "schedule": "0 30 13 * * ?", "state": state,
        "properties": {"exportJob": {"destination": {"datasetId": d.id.as_str()},
            "schema": {"name": "_xdm.context.profile"}}}
    }))
    .unwrap();
    Schedule {
        id: segport_model::ids::new_uuid().to_string(),
        org: t.org.to_string(),
        sandbox: t.sandbox.to_string(),
        body,
        next_due_ms,
        last_due_ms: None,
        last_job_id: None,
        missed: 0,
        delta_mark_ms: None,
        delta_key: None,
        create_ms: 100,
        update_ms: 100,
    }
}

async fn schedules_are_kept_per_sandbox(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (t, other) = (tenant("org", "prod"), tenant("org", "dev"));
    db.catalog.ensure_sandbox(&t, 1).await.unwrap();
    db.catalog.ensure_sandbox(&other, 1).await.unwrap();
    let d = dataset(&db, &t).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        let s = schedule(&t, &d, "inactive", None);
        db.catalog.create_schedule(&s, 3).await.unwrap();
        made.push(s.id);
    }
    // The sandbox's bound.
    let fourth = db.catalog.create_schedule(&schedule(&t, &d, "inactive", None), 3).await;
    assert!(matches!(fourth, Err(E::Conflict(_))), "{fourth:?}");
    let page = |limit, start| ListQuery { limit, start };
    let (first, total) = db.catalog.list_schedules(&t, &page(2, 0)).await.unwrap();
    assert_eq!(total, 3);
    let (rest, _) = db.catalog.list_schedules(&t, &page(2, 2)).await.unwrap();
    let listed: Vec<String> = first.iter().chain(&rest).map(|s| s.id.clone()).collect();
    let mut sorted = made.clone();
    sorted.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, sorted);
    // Another sandbox sees none of them.
    assert_eq!(db.catalog.list_schedules(&other, &page(10, 0)).await.unwrap().1, 0);
    assert!(db.catalog.get_schedule(&other, &made[0]).await.unwrap().is_none());
    assert!(!db.catalog.delete_schedule(&other, &made[0]).await.unwrap());

    let mut s = db.catalog.get_schedule(&t, &made[0]).await.unwrap().unwrap();
    assert_eq!(s.body.name, "nightly");
    assert_eq!(s.body.cron.as_str(), "0 30 13 * * ?");
    s.body.name = "renamed".into();
    s.next_due_ms = Some(5);
    s.update_ms = 200;
    assert!(db.catalog.update_schedule(&s).await.unwrap());
    let back = db.catalog.get_schedule(&t, &made[0]).await.unwrap().unwrap();
    assert_eq!(
        (back.body.name.as_str(), back.next_due_ms, back.update_ms),
        ("renamed", Some(5), 200)
    );
    assert!(db.catalog.delete_schedule(&t, &made[0]).await.unwrap());
    assert!(db.catalog.get_schedule(&t, &made[0]).await.unwrap().is_none());
    assert_eq!(db.catalog.list_schedules(&t, &page(10, 0)).await.unwrap().1, 2);
}

fn fire(t: &Tenant, s: &Schedule, due: i64, job: NewExportJob) -> ScheduleFire {
    ScheduleFire {
        tenant: t.clone(),
        schedule_id: s.id.clone(),
        due_ms: due,
        seen_next_due_ms: s.next_due_ms.unwrap(),
        seen_update_ms: s.update_ms,
        seen_delta_mark_ms: s.delta_mark_ms,
        caught_up: 0,
        next_due_ms: Some(due + 1000),
        job: Ok(NewExportJob { schedule_id: Some(s.id.clone()), ..job }),
        now_ms: due,
    }
}

async fn a_due_time_fires_once_whoever_fires_it(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let s = schedule(&t, &d, "active", Some(1000));
    db.catalog.create_schedule(&s, 10).await.unwrap();
    assert_eq!(db.catalog.due_schedules(999, 10).await.unwrap().len(), 0);
    assert_eq!(db.catalog.due_schedules(1000, 10).await.unwrap().len(), 1);
    // Four schedulers fire the same due time at once.
    let mut fires = Vec::new();
    for _ in 0..4 {
        fires.push(fire(&t, &s, 1000, new_job(&db, &t, &d, 1000, false).await));
    }
    let outcomes = futures_join_all(&db, fires).await;
    let created: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            FireOutcome::Created { job_id } => Some(*job_id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == FireOutcome::Stale).count(), 3);
    let job = db.catalog.get_export_job(&t, created[0]).await.unwrap().unwrap();
    assert_eq!(job.schedule_id.as_deref(), Some(s.id.as_str()));
    assert_eq!(job.to_wire().schedule_id.as_deref(), Some(s.id.as_str()));
    let after = db.catalog.get_schedule(&t, &s.id).await.unwrap().unwrap();
    assert_eq!(
        (after.next_due_ms, after.last_due_ms, after.last_job_id),
        (Some(2000), Some(1000), Some(created[0]))
    );
    let runs = db.catalog.schedule_runs(&t, &s.id, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].due_ms, runs[0].outcome, runs[0].job_id),
        (1000, RunOutcome::Created, Some(created[0]))
    );
    // Not due any more; a fire built from the old reading is stale.
    assert!(db.catalog.due_schedules(1999, 10).await.unwrap().is_empty());
    let again = fire(&t, &s, 1000, new_job(&db, &t, &d, 1000, false).await);
    assert_eq!(db.catalog.fire_schedule(again).await.unwrap(), FireOutcome::Stale);
    // A change after the reading makes the fire stale too.
    let mut changed = after.clone();
    changed.update_ms += 1;
    db.catalog.update_schedule(&changed).await.unwrap();
    let late = fire(&t, &after, 2000, new_job(&db, &t, &d, 2000, false).await);
    assert_eq!(db.catalog.fire_schedule(late).await.unwrap(), FireOutcome::Stale);
}

/// Fires each concurrently (each on its own connection of the pool).
async fn futures_join_all(db: &TestCatalog, fires: Vec<ScheduleFire>) -> Vec<FireOutcome> {
    let mut handles = Vec::new();
    for f in fires {
        let catalog = db.catalog.clone();
        handles.push(tokio::spawn(async move { catalog.fire_schedule(f).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap().unwrap());
    }
    out
}

async fn a_run_in_flight_makes_the_due_time_missed(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    // An endpoint that takes schedule.missed only.
    let endpoint = Endpoint {
        id: "e1".into(),
        org: t.org.to_string(),
        sandbox: t.sandbox.to_string(),
        url: "https://example.com/hook".into(),
        description: String::new(),
        events: Some(vec![EventType::ScheduleMissed]),
        secret: "whsec_AAAA".into(),
        previous_secret: None,
        previous_until_ms: None,
        enabled: true,
        disabled_reason: None,
        create_ms: 1,
        update_ms: 1,
    };
    db.catalog.create_endpoint(&endpoint, 10).await.unwrap();
    let s = schedule(&t, &d, "active", Some(1000));
    db.catalog.create_schedule(&s, 10).await.unwrap();
    let first = fire(&t, &s, 1000, new_job(&db, &t, &d, 1000, false).await);
    let FireOutcome::Created { job_id } = db.catalog.fire_schedule(first).await.unwrap() else {
        panic!("not created")
    };
    // The job is NEW: the next due time is missed, and says so.
    let s = db.catalog.get_schedule(&t, &s.id).await.unwrap().unwrap();
    let second = fire(&t, &s, 2000, new_job(&db, &t, &d, 2000, false).await);
    assert_eq!(
        db.catalog.fire_schedule(second).await.unwrap(),
        FireOutcome::Missed { in_flight_job_id: job_id }
    );
    let s = db.catalog.get_schedule(&t, &s.id).await.unwrap().unwrap();
    assert_eq!((s.missed, s.last_job_id, s.next_due_ms), (1, Some(job_id), Some(3000)));
    let runs = db.catalog.schedule_runs(&t, &s.id, 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| (r.due_ms, r.outcome)).collect::<Vec<_>>(),
        [(2000, RunOutcome::Missed), (1000, RunOutcome::Created)]
    );
    let log =
        db.catalog.list_deliveries(&t, "e1", &ListQuery { limit: 10, start: 0 }).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event_type, "schedule.missed");
    // Once the run ended (cancelled here), the next due time runs again.
    db.catalog.cancel_export_job(&t, job_id, 2500).await.unwrap();
    let third = fire(&t, &s, 3000, new_job(&db, &t, &d, 3000, false).await);
    assert!(matches!(db.catalog.fire_schedule(third).await.unwrap(), FireOutcome::Created { .. }));
    // The cancel was not reported to this endpoint (it takes schedule.missed only).
    let log =
        db.catalog.list_deliveries(&t, "e1", &ListQuery { limit: 10, start: 0 }).await.unwrap();
    assert_eq!(log.len(), 1);
}

async fn an_unresolved_run_is_a_failed_job_saying_why(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let s = schedule(&t, &d, "active", Some(1000));
    db.catalog.create_schedule(&s, 10).await.unwrap();
    let job = new_job(&db, &t, &d, 1000, false).await;
    let mut f = fire(&t, &s, 1000, job.clone());
    f.job = Err(FailedRun {
        spec: job.spec,
        errors: vec![JobError::new(
            segport_model::codes::FailureCode::ScheduleUnresolved,
            "the dataset is gone",
        )],
        request_id: "schedule".into(),
    });
    let FireOutcome::Created { job_id } = db.catalog.fire_schedule(f).await.unwrap() else {
        panic!("not created")
    };
    let rec = db.catalog.get_export_job(&t, job_id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert_eq!(rec.errors[0].code, "SCHEDULE_UNRESOLVED");
    assert_eq!(rec.errors[0].msg, "the dataset is gone");
    assert_eq!(rec.schedule_id.as_deref(), Some(s.id.as_str()));
    assert!(rec.merge_policy.is_none());
    // It is not in flight: the next due time runs.
    let s = db.catalog.get_schedule(&t, &s.id).await.unwrap().unwrap();
    let next = fire(&t, &s, 2000, new_job(&db, &t, &d, 2000, false).await);
    assert!(matches!(db.catalog.fire_schedule(next).await.unwrap(), FireOutcome::Created { .. }));
    // Nothing of a failed run was queued: the one task is the second run's.
    let lease = db.catalog.claim_task("w", 60_000, 2000).await.unwrap().unwrap();
    assert_ne!(lease.job_id, Some(job_id));
    assert!(db.catalog.claim_task("w", 60_000, 2000).await.unwrap().is_none());
}
