//! Schedules through the API, and the scheduler with a test clock: AEP's shapes and rules,
//! one job per due time, catch-up, and delta runs that export every profile update exactly once
//! across runs, compared with a naive oracle over the same ingests. Both catalog backends.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use common::*;
use segport_api::scheduler::fire_due;
use serde_json::{json, Value};

both_backends!(
    schedules_api_rules,
    due_times_fire_once_and_catch_up_once,
    delta_runs_export_each_update_once
);

const SCHEDULES: &str = "/data/core/ups/config/schedules";

fn schedule_body(ds: &str, cron: &str, state: &str) -> Value {
    json!({
        "name": "nightly export",
        "type": "export",
        "properties": {"exportJob": minimal_job(ds)},
        "schedule": cron,
        "state": state,
    })
}

async fn patch(t: &TestApp, id: &str, ops: Value) -> Answer {
    t.call(Method::PATCH, &format!("{SCHEDULES}/{id}"), Some(ops)).await
}

async fn schedules_api_rules(setup: Setup) {
    let t = TestApp::new(setup).await;
    let ds = t.export_dataset().await;
    // Created inactive by default; AEP's epochs in seconds; no due time while inactive.
    let mut body = schedule_body(&ds, "0 30 13 * * ?", "inactive");
    body.as_object_mut().unwrap().remove("state");
    let a = t.post(SCHEDULES, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["state"], "inactive");
    assert_eq!(a.body["type"], "export");
    assert_eq!(a.body["properties"]["delta"], false);
    assert_eq!(a.body["properties"]["exportJob"], minimal_job(&ds));
    let now_s = segport_model::time::now_ms() / 1000;
    assert!((a.body["createEpoch"].as_i64().unwrap() - now_s).abs() <= 5, "{}", a.body);
    assert_eq!(a.body["createEpoch"], a.body["updateEpoch"]);
    assert!(a.body["nextDueTime"].is_null());

    // Activated: daily at 13:30 UTC.
    let a = patch(&t, &id, json!([{"op": "add", "path": "/state", "value": "active"}])).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    let due = got["nextDueTime"].as_i64().unwrap();
    let due_at = chrono::DateTime::from_timestamp_millis(due).unwrap();
    assert_eq!(due_at.format("%H:%M:%S%.3f").to_string(), "13:30:00.000");
    assert!(
        due > segport_model::time::now_ms() && due - segport_model::time::now_ms() <= 86_400_000
    );
    assert_eq!(got["state"], "active");
    assert!(got["recentRuns"].as_array().unwrap().is_empty());

    // JSON Patch: add/replace on the documented paths, applied all or nothing.
    let a = patch(
        &t,
        &id,
        json!([
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "remove", "path": "/state"},
            {"op": "add", "path": "/owner", "value": "x"},
            {"op": "move", "path": "/schedule", "from": "/name"},
        ]),
    )
    .await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["body[1].op", "body[2].path", "body[3].op"], "{}", a.text);
    assert_eq!(t.get(&format!("{SCHEDULES}/{id}")).await.body["name"], "nightly export");
    let a =
        patch(&t, &id, json!([{"op": "replace", "path": "/schedule", "value": "0 61 * * * ?"}]))
            .await;
    a.assert_service_error(400);
    assert!(a.text.contains("minutes field"), "{}", a.text);
    let a = patch(&t, &id, json!({"state": "active"})).await;
    a.assert_service_error(400);
    let a = patch(
        &t,
        &id,
        json!([
            {"op": "replace", "path": "/name", "value": "hourly"},
            {"op": "add", "path": "/schedule", "value": "0 0 * * * ?"},
            {"op": "add", "path": "/properties/delta", "value": true},
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    assert_eq!(
        (got["name"].as_str(), got["schedule"].as_str()),
        (Some("hourly"), Some("0 0 * * * ?"))
    );
    assert_eq!(got["properties"]["delta"], true);
    assert_eq!(got["nextDueTime"].as_i64().unwrap() % 3_600_000, 0);
    // The export body is checked as a job create checks it, at creation and when patched.
    let a = patch(
        &t,
        &id,
        json!([{"op": "add", "path": "/properties/exportJob", "value": minimal_job("5b7c86968f7b6501e21ba9df")}]),
    )
    .await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["properties.exportJob.destination.datasetId"], "{}", a.text);

    // Create-time errors: each named.
    for (body, field, says) in [
        (schedule_body(&ds, "0 0 12 ? * 0", "active"), "schedule", "day-of-week field"),
        (schedule_body(&ds, "0 12 * * ?", "active"), "schedule", "6 or 7"),
        (schedule_body(&ds, "0 0 12 * * ? 2001", "active"), "schedule", "no time after now"),
        (schedule_body(&ds, "0 0 12 * * ?", "paused"), "state", "active or inactive"),
        (
            json!({"name": "x", "type": "batch_segmentation", "schedule": "0 0 1 * * ?",
                   "properties": {"segments": ["*"]}}),
            "type",
            "not supported",
        ),
        (
            json!({"name": "x", "type": "export", "schedule": "0 0 1 * * ?",
                   "properties": {"exportJob": {"destination": {"datasetId": ds}, "fields": "a..b",
                   "schema": {"name": "_xdm.context.profile"}}}}),
            "properties.exportJob.fields",
            "",
        ),
    ] {
        let a = t.post(SCHEDULES, body.clone()).await;
        a.assert_service_error(400);
        assert!(a.error_fields().contains(&field.to_owned()), "{body}: {}", a.text);
        assert!(a.text.contains(says), "{body}: {}", a.text);
    }

    // The list pages with start and limit, in AEP's shape.
    for _ in 0..4 {
        assert_eq!(
            t.post(SCHEDULES, schedule_body(&ds, "0 0 1 * * ?", "inactive")).await.status,
            200
        );
    }
    let page = t.get(&format!("{SCHEDULES}?limit=2")).await.body;
    assert_eq!(page["_page"]["totalCount"], 5);
    assert_eq!(page["_page"]["pageSize"], 2);
    assert_eq!(page["_page"]["next"], "2");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut start = 0;
    loop {
        let page = t.get(&format!("{SCHEDULES}?limit=2&start={start}")).await.body;
        for child in page["children"].as_array().unwrap() {
            assert!(seen.insert(child["id"].as_str().unwrap().to_owned()));
        }
        match page["_page"]["next"].as_str() {
            Some(next) => start = next.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.contains(&id));
    let a = t.get(&format!("{SCHEDULES}?limit=0")).await;
    a.assert_service_error(400);

    // Another sandbox sees nothing of it.
    let other = t.call_as(ORG, "dev", Method::GET, &format!("{SCHEDULES}/{id}"), None).await;
    other.assert_service_error(404);
    let other = t.call_as(ORG, "dev", Method::GET, SCHEDULES, None).await;
    assert_eq!(other.body["_page"]["totalCount"], 0);

    let a = t.call(Method::DELETE, &format!("{SCHEDULES}/{id}"), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    t.get(&format!("{SCHEDULES}/{id}")).await.assert_service_error(404);
    t.call(Method::DELETE, &format!("{SCHEDULES}/{id}"), None).await.assert_service_error(404);
}

/// The jobs a schedule made, oldest first.
async fn jobs_of(t: &TestApp, schedule: &str) -> Vec<Value> {
    let list = t.get("/export/jobs?limit=1000").await.body;
    let mut jobs: Vec<Value> = list["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["scheduleId"] == schedule)
        .cloned()
        .collect();
    jobs.reverse();
    jobs
}

async fn due_times_fire_once_and_catch_up_once(setup: Setup) {
    let t = TestApp::new(setup).await;
    let ds = t.export_dataset().await;
    let a = t.post(SCHEDULES, schedule_body(&ds, "0 0 * * * ?", "active")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let first = a.body["nextDueTime"].as_i64().unwrap();
    const HOUR: i64 = 3_600_000;
    // Before its due time nothing fires; at it, two schedulers fire it once.
    assert_eq!(fire_due(&t.state, first - 1).await.unwrap(), 0);
    let (a, b) = tokio::join!(fire_due(&t.state, first), fire_due(&t.state, first + 5));
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let jobs = jobs_of(&t, &id).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["status"], "NEW");
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    assert_eq!(got["lastJobId"], jobs[0]["id"]);
    assert_eq!(got["lastDueTime"], first);
    assert_eq!(got["nextDueTime"], first + HOUR);

    // The next due time, with the run still NEW: missed, counted, and no job.
    assert_eq!(fire_due(&t.state, first + HOUR).await.unwrap(), 1);
    assert_eq!(jobs_of(&t, &id).await.len(), 1);
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    assert_eq!(got["missedCount"], 1);
    assert_eq!(got["recentRuns"][0]["outcome"], "missed");
    assert_eq!(got["recentRuns"][0]["dueTime"], first + HOUR);

    // The run finishes; the scheduler was away for five due times: one catch-up run, at the
    // latest of them, counting the four before it.
    assert_eq!(t.run_tasks().await, 1);
    assert_eq!(fire_due(&t.state, first + 6 * HOUR + 30_000).await.unwrap(), 1);
    let jobs = jobs_of(&t, &id).await;
    assert_eq!(jobs.len(), 2);
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    assert_eq!(got["recentRuns"][0]["dueTime"], first + 6 * HOUR);
    assert_eq!(got["recentRuns"][0]["caughtUp"], 4);
    assert_eq!(got["recentRuns"][0]["jobId"], jobs[1]["id"]);
    assert_eq!(got["nextDueTime"], first + 7 * HOUR);
    assert_eq!(fire_due(&t.state, first + 6 * HOUR + 60_000).await.unwrap(), 0);

    // A body that no longer resolves (its dataset deleted): the run is a FAILED job saying why.
    assert_eq!(t.run_tasks().await, 1);
    let a = t.call(Method::DELETE, &format!("/data/foundation/catalog/dataSets/{ds}"), None).await;
    assert!(a.status.is_success(), "{}", a.text);
    assert_eq!(fire_due(&t.state, first + 7 * HOUR).await.unwrap(), 1);
    let jobs = jobs_of(&t, &id).await;
    assert_eq!(jobs.len(), 3);
    let failed = t.get(&format!("/export/jobs/{}", jobs[2]["id"])).await.body;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["errors"][0]["code"], "SCHEDULE_UNRESOLVED");
    assert!(
        failed["errors"][0]["msg"].as_str().unwrap().contains("destination.datasetId"),
        "{failed}"
    );
    assert_eq!(failed["scheduleId"], id.as_str());

    // Deactivated, it fires no more.
    let a = patch(&t, &id, json!([{"op": "replace", "path": "/state", "value": "inactive"}])).await;
    assert_eq!(a.status, 204);
    assert_eq!(fire_due(&t.state, first + 100 * HOUR).await.unwrap(), 0);
}

/// The oracle of a delta run: the profiles touched by ingests `from..to` (those after the
/// previous successful run's snapshot, up to this run's), as they stand after ingest `to - 1`.
fn expect(ingests: &[Vec<(String, u32)>], from: usize, to: usize) -> BTreeMap<String, u64> {
    let mut state: BTreeMap<String, u64> = BTreeMap::new();
    for rows in &ingests[..to] {
        for (key, v) in rows {
            state.insert(key.clone(), u64::from(*v));
        }
    }
    let touched: BTreeSet<&String> = ingests[from..to].iter().flatten().map(|(k, _)| k).collect();
    state.into_iter().filter(|(k, _)| touched.contains(k)).collect()
}

fn profile(id: usize, v: u32) -> Value {
    json!({"identityMap": {"ECID": [{"id": format!("p{id}"), "primary": true}]}, "loyalty": {"points": v}})
}

fn ndjson(rows: &[Value]) -> Vec<u8> {
    rows.iter().map(|r| format!("{r}\n")).collect::<String>().into_bytes()
}

/// The (profile, points) pairs of a job's output.
async fn exported(t: &TestApp, job: &Value) -> BTreeMap<String, u64> {
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let batch =
        segport_model::BatchId::parse(job["destination"]["batchId"].as_str().unwrap()).unwrap();
    let files = t.db.catalog.list_batch_files(&tenant, &batch).await.unwrap();
    let mut out = BTreeMap::new();
    for row in output_rows(t, &files).await {
        let key = row["identityMap"]["ECID"][0]["id"].as_str().unwrap().to_owned();
        let points = row["loyalty"]["points"].as_u64().unwrap();
        assert!(out.insert(key, points).is_none(), "a profile twice in one output");
    }
    out
}

async fn delta_runs_export_each_update_once(setup: Setup) {
    let t = TestApp::new(setup).await;
    let input = t.store_dataset(PROFILE_SCHEMA).await;
    let ds = t.export_dataset().await;
    // Units of one profile each: the run's plan fixes its snapshot, then its units run later.
    let mut ctx = t.worker_context(small_limits());
    std::sync::Arc::make_mut(&mut ctx.config).export_unit_profiles = 1;
    let worker = segport_worker::Worker::new(ctx);
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();

    // The oracle: every ingest in order, and which ingests each run's snapshot holds.
    let mut ingests: Vec<Vec<(String, u32)>> = Vec::new();
    let ingest = |rows: Vec<(usize, u32)>| {
        let records: Vec<Value> = rows.iter().map(|(id, v)| profile(*id, *v)).collect();
        (
            rows.into_iter().map(|(id, v)| (format!("p{id}"), v)).collect::<Vec<_>>(),
            ndjson(&records),
        )
    };
    let json_format = json!({"format": "json"});

    let (rows, bytes) = ingest((0..10).map(|i| (i, 1)).collect());
    t.ingest_on(&worker, &input, json_format.clone(), vec![("a.json", bytes)]).await;
    ingests.push(rows);

    let mut body = schedule_body(&ds, "0 0 * * * ?", "active");
    body["properties"]["delta"] = json!(true);
    let a = t.post(SCHEDULES, body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let mut due = a.body["nextDueTime"].as_i64().unwrap();
    const HOUR: i64 = 3_600_000;

    // Run 1, full: its plan takes the snapshot; an ingest commits while its units wait.
    assert_eq!(fire_due(&t.state, due).await.unwrap(), 1);
    let run1 = jobs_of(&t, &id).await.pop().unwrap();
    assert!(run1["filter"]["fromIngestTimestamp"].is_null(), "the first run is full: {run1}");
    let plan = t.claim(&worker).await;
    assert_eq!(plan.job_id, run1["id"].as_i64());
    run_one(&worker, plan).await;
    let planned = t.get(&format!("/export/jobs/{}", run1["id"])).await.body;
    assert!(planned["units"].as_array().is_some_and(|u| u.len() > 1), "{planned}");
    let run1_snapshot = ingests.len();
    let (rows, bytes) = ingest((5..15).map(|i| (i, 2)).collect());
    let during = t.new_batch(&input, json_format.clone()).await;
    assert_eq!(t.upload(&during, &input, "b.json", bytes).await.status, 200);
    assert_eq!(t.batch_action(&during, "COMPLETE").await.status, 200);
    let task =
        t.db.catalog
            .claim_batch_task(
                worker.owner(),
                &segport_model::BatchId::parse(&during).unwrap(),
                30_000,
                segport_model::time::now_ms(),
            )
            .await
            .unwrap()
            .unwrap();
    run_one(&worker, task).await;
    assert_eq!(t.batch(&during).await["status"], "success");
    ingests.push(rows);
    assert!(t.run_tasks_on(&worker).await > 1);
    let run1 = t.get(&format!("/export/jobs/{}", run1["id"])).await.body;
    assert_eq!(run1["status"], "SUCCEEDED", "{run1}");

    // An ingest after run 1; run 2 is a delta from run 1's snapshot.
    let (rows, bytes) = ingest((12..17).map(|i| (i, 3)).collect());
    t.ingest_on(&worker, &input, json_format.clone(), vec![("c.json", bytes)]).await;
    ingests.push(rows);
    due += HOUR;
    assert_eq!(fire_due(&t.state, due).await.unwrap(), 1);
    assert!(t.run_tasks_on(&worker).await >= 1);
    let run2 = jobs_of(&t, &id).await.pop().unwrap();
    assert_eq!(run2["status"], "SUCCEEDED", "{run2}");
    assert!(run2["filter"]["fromIngestTimestamp"].is_string(), "{run2}");
    assert_eq!(run2["warnings"][0]["code"], "DELTA_EXPORT", "{run2}");
    let run2_snapshot = ingests.len();

    // Run 3 is cancelled before it runs: the mark stays at run 2's snapshot.
    due += HOUR;
    assert_eq!(fire_due(&t.state, due).await.unwrap(), 1);
    let run3 = jobs_of(&t, &id).await.pop().unwrap();
    assert_eq!(
        t.call(Method::DELETE, &format!("/export/jobs/{}", run3["id"]), None).await.status,
        200
    );
    let (rows, bytes) = ingest(vec![(20, 4), (0, 4)]);
    t.ingest_on(&worker, &input, json_format.clone(), vec![("d.json", bytes)]).await;
    ingests.push(rows);
    due += HOUR;
    assert_eq!(fire_due(&t.state, due).await.unwrap(), 1);
    assert!(t.run_tasks_on(&worker).await >= 1);
    let run4 = jobs_of(&t, &id).await.pop().unwrap();
    assert_eq!(run4["status"], "SUCCEEDED", "{run4}");
    let run4_snapshot = ingests.len();

    // The oracle: a run exports the profiles touched by the ingests after the previous
    // successful run's snapshot, as they stand at its own snapshot.
    let outputs = [
        (exported(&t, &run1).await, expect(&ingests, 0, run1_snapshot)),
        (exported(&t, &run2).await, expect(&ingests, run1_snapshot, run2_snapshot)),
        (exported(&t, &run4).await, expect(&ingests, run2_snapshot, run4_snapshot)),
    ];
    for (i, (got, want)) in outputs.iter().enumerate() {
        assert_eq!(got, want, "run {i}");
    }
    // Across the runs, every update is exported exactly once: each ingest's rows are in the
    // output of exactly the run whose window holds it, at that run's value or a later one.
    for (n, rows) in ingests.iter().enumerate() {
        let window =
            [run1_snapshot, run2_snapshot, run4_snapshot].iter().position(|s| n < *s).unwrap();
        for (key, _) in rows {
            let holding: Vec<usize> = outputs
                .iter()
                .enumerate()
                .filter(|(i, (got, _))| *i >= window && got.contains_key(key))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(holding.first(), Some(&window), "ingest {n} profile {key}");
        }
    }
    assert_eq!(outputs[0].0.len(), 10, "run 1 saw only the ingest before its snapshot");

    // A change of the export body makes the next run full.
    let mut changed = minimal_job(&ds);
    changed["fields"] = json!("identityMap,loyalty");
    let a = patch(
        &t,
        &id,
        json!([{"op": "replace", "path": "/properties/exportJob", "value": changed}]),
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    due = got["nextDueTime"].as_i64().unwrap();
    assert_eq!(fire_due(&t.state, due).await.unwrap(), 1);
    assert!(t.run_tasks_on(&worker).await >= 1);
    let run5 = jobs_of(&t, &id).await.pop().unwrap();
    assert!(run5["filter"]["fromIngestTimestamp"].is_null(), "{run5}");
    assert_eq!(exported(&t, &run5).await, expect(&ingests, 0, ingests.len()));

    // The next run is a delta again, from run 5's snapshot.
    let run5_snapshot = ingests.len();
    let (rows, bytes) = ingest(vec![(30, 6)]);
    t.ingest_on(&worker, &input, json_format.clone(), vec![("e.json", bytes)]).await;
    ingests.push(rows);
    let next_run = async |due: &mut i64| {
        *due += HOUR;
        assert_eq!(fire_due(&t.state, *due).await.unwrap(), 1);
        assert!(t.run_tasks_on(&worker).await >= 1);
        let run = jobs_of(&t, &id).await.pop().unwrap();
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
        run
    };
    let run6 = next_run(&mut due).await;
    assert_eq!(exported(&t, &run6).await, expect(&ingests, run5_snapshot, ingests.len()));

    // A new version of the merge policy the body resolves to makes the next run full.
    let a = t
        .call(
            Method::PATCH,
            "/data/core/ups/config/mergePolicies/timestampOrdered-none-mp",
            Some(json!([{"op": "replace", "path": "/name", "value": "renamed"}])),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let run7 = next_run(&mut due).await;
    assert!(run7["filter"]["fromIngestTimestamp"].is_null(), "{run7}");
    assert_eq!(exported(&t, &run7).await, expect(&ingests, 0, ingests.len()));

    // The body's own threshold wins when it is later than the mark.
    let mut later = changed.clone();
    later["filter"] = json!({"fromIngestTimestamp": "2100-01-01T00:00:00Z"});
    let a =
        patch(&t, &id, json!([{"op": "replace", "path": "/properties/exportJob", "value": later}]))
            .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let got = t.get(&format!("{SCHEDULES}/{id}")).await.body;
    due = got["nextDueTime"].as_i64().unwrap() - HOUR;
    let run8 = next_run(&mut due).await;
    let (rows, bytes) = ingest(vec![(31, 7)]);
    t.ingest_on(&worker, &input, json_format.clone(), vec![("f.json", bytes)]).await;
    ingests.push(rows);
    let run9 = next_run(&mut due).await;
    assert_eq!(run9["filter"]["fromIngestTimestamp"], "2100-01-01T00:00:00Z", "{run9}");
    assert!(exported(&t, &run8).await.is_empty() && exported(&t, &run9).await.is_empty());
    let _ = tenant;
}
