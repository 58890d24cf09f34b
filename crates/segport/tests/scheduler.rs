//! Schedules with real processes on one PostgreSQL catalog: two api processes run the scheduler
//! and a worker runs the jobs; one api process is killed (SIGKILL) midway. Every due time is
//! still accounted for exactly once (a job, or a missed record while the previous run was in
//! flight), and each job belongs to exactly one due time. The time from a due time to its job
//! is printed, with two schedulers and with one, for the notes.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use segport_catalog::testing::TestCatalog;
use segport_catalog::JobListQuery;
use segport_model::schedule::RunOutcome;
use serde_json::json;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_and_a_crash_make_one_job_per_due_time() {
    let db = TestCatalog::postgres().await;
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let data_str = data.to_str().unwrap().to_owned();
    let env = [("DATABASE_URL", db.url.as_str()), ("SEGPORT_DATA_DIR", data_str.as_str())];
    let _worker = Server::start(&dir.0, &["--role", "worker", "--poll-interval", "100ms"], &env);
    let api = ["--role", "api", "--scheduler-tick", "100ms"];
    let first = Server::start(&dir.0, &api, &env);
    let second = Server::start(&dir.0, &api, &env);

    let (status, body) = first.tenant_call(
        "POST",
        "/data/foundation/catalog/dataSets",
        "t",
        ORG,
        Some(&json!({"name": "out", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}})),
    );
    assert_eq!(status, 201, "{body}");
    let dataset = body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    // Every second: faster than a run takes at times, so some due times are missed too.
    let (status, schedule) = first.tenant_call(
        "POST",
        "/data/core/ups/config/schedules",
        "t",
        ORG,
        Some(&json!({"name": "every second", "type": "export", "schedule": "* * * * * ?",
            "state": "active", "properties": {"exportJob": {"destination": {"datasetId": dataset},
            "schema": {"name": "_xdm.context.profile"}}}})),
    );
    assert_eq!(status, 200, "{schedule}");
    let id = schedule["id"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_secs(6)).await;
    let crash_ms = segport_model::time::now_ms();
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = second.tenant_call(
        "PATCH",
        &format!("/data/core/ups/config/schedules/{id}"),
        "t",
        ORG,
        Some(&json!([{"op": "replace", "path": "/state", "value": "inactive"}])),
    );
    assert_eq!(status, 204, "{body}");

    let tenant = segport_model::Tenant::parse(ORG, "prod").unwrap();
    let mut runs = db.catalog.schedule_runs(&tenant, &id, 1000).await.unwrap();
    runs.reverse();
    assert!(runs.len() >= 8, "{runs:?}");
    // Every due time from the first to the last, once: consecutive seconds, each either a run
    // or one a run caught up.
    let (from, to) = (runs[0].due_ms, runs[runs.len() - 1].due_ms);
    let accounted: i64 = runs.iter().map(|r| 1 + r.caught_up).sum();
    assert_eq!(accounted, (to - from) / 1000 + 1, "{runs:?}");
    for pair in runs.windows(2) {
        assert_eq!(pair[1].due_ms - pair[0].due_ms, 1000 * (1 + pair[1].caught_up), "{runs:?}");
    }
    // The jobs: one per created run, each pointing back at the schedule.
    let query = JobListQuery { limit: 1000, ..Default::default() };
    let jobs: Vec<_> = db
        .catalog
        .list_export_jobs(&tenant, &query)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.schedule_id.as_deref() == Some(id.as_str()))
        .collect();
    let created: Vec<_> = runs.iter().filter(|r| r.outcome == RunOutcome::Created).collect();
    let run_jobs: BTreeSet<i64> = created.iter().map(|r| r.job_id.unwrap()).collect();
    let job_ids: BTreeSet<i64> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(run_jobs.len(), created.len(), "a job made by two due times");
    assert_eq!(run_jobs, job_ids);
    assert!(runs.iter().filter(|r| r.outcome == RunOutcome::Missed).all(|r| r.job_id.is_none()));
    assert!(created.len() >= 3, "{runs:?}");

    // Due time to job creation, with both schedulers and after the crash with one.
    let latency = |two: bool| {
        let mut l: Vec<i64> = created
            .iter()
            .filter(|r| (r.due_ms < crash_ms) == two)
            .map(|r| jobs.iter().find(|j| Some(j.id) == r.job_id).unwrap().creation_ms - r.due_ms)
            .collect();
        l.sort_unstable();
        l
    };
    for (label, l) in [("two schedulers", latency(true)), ("one scheduler", latency(false))] {
        eprintln!(
            "due time to job creation, {label}: n={} p50={} ms p99={} ms max={} ms",
            l.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(-1)
        );
        assert!(!l.is_empty(), "{label}: no run");
    }
}
