//! Exports against a naive oracle: a store of generated profiles (two profile datasets, fragments
//! updated over time, events, empty profiles) is exported with random job specs, and the Parquet
//! read back must equal a plain evaluation of the docs/api.md rules over the same input records.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use common::*;
use rand::{Rng, SeedableRng};
use segport_catalog::Backend;
use serde_json::{json, Map, Value};

both_backends!(
    fields_that_match_nothing_are_warned_about,
    random_jobs_match_the_oracle,
    cancelling_a_running_export_leaves_nothing,
    an_unwritable_destination_fails_with_output_write_error,
    a_replaced_event_is_gone_from_earlier_windows,
    export_batches_are_deleted_on_request_and_by_retention,
    workers_report_their_metrics,
    data_access_links_are_absolute_and_ids_opaque,
    a_small_job_finishes_while_a_large_export_runs,
);

on_s3!(
    random_jobs_match_the_oracle,
    cancelling_a_running_export_leaves_nothing,
    export_batches_are_deleted_on_request_and_by_retention,
    data_access_links_are_absolute_and_ids_opaque,
    units_another_worker_holds_are_taken_after_the_locality_wait,
);

/// A small store: `n` generated profiles with their events, in one batch each.
async fn small_store(t: &TestApp, n: u64) {
    let segments = segport_datagen::segments(5);
    let (mut p, mut e) = (String::new(), String::new());
    for i in 0..n {
        let g = segport_datagen::profile(5, i, &segments);
        if let Some(r) = g.profile {
            p.push_str(&format!("{r}\n"));
        }
        for ev in g.events {
            e.push_str(&format!("{ev}\n"));
        }
    }
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let eds = t.store_dataset(EVENT_SCHEMA).await;
    t.ingest(&pds, json!({"format": "json"}), vec![("p.json", p.into_bytes())]).await;
    t.ingest(&eds, json!({"format": "json"}), vec![("e.json", e.into_bytes())]).await;
}

async fn cancelling_a_running_export_leaves_nothing(setup: Setup) {
    let t = std::sync::Arc::new(TestApp::new(setup).await);
    small_store(&t, 500).await;
    let export = t.export_dataset().await;
    let job = t.create_job(minimal_job(&export)).await;
    let id = job["id"].as_i64().unwrap();
    let batch = job["destination"]["batchId"].as_str().unwrap().to_owned();
    let mut ctx = t.worker_context(small_limits());
    let config = std::sync::Arc::make_mut(&mut ctx.config);
    config.failpoints = segport_worker::Failpoints::parse("export-pause")
        .expect("run with --features segport/failpoints");
    config.heartbeat = std::time::Duration::from_millis(100);
    let worker = segport_worker::Worker::new(ctx);
    let task = t.claim(&worker).await;
    let running = tokio::spawn(async move {
        worker
            .run_claimed(
                task,
                tokio_util::sync::CancellationToken::new(),
                std::time::Duration::from_secs(30),
            )
            .await
    });
    // While it runs, the job reports its progress (an addition AEP clients ignore).
    // (On an S3 root, after the worker fetched the files into its cache.)
    let mut processing = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        processing = t.get(&format!("/export/jobs/{id}")).await.body;
        if processing["progress"].is_object() {
            break;
        }
    }
    assert_eq!(processing["status"], "PROCESSING");
    assert_eq!(processing["progress"]["partitionsTotal"], 16, "{processing}");
    assert_eq!(processing["progress"]["partitionsDone"], 0);
    let attempt = processing["computeGatewayJobId"]["exportJob"].as_str().unwrap().to_owned();
    assert_eq!(attempt.len(), 36);
    assert_eq!(
        t.call(axum::http::Method::DELETE, &format!("/export/jobs/{id}"), None).await.status,
        axum::http::StatusCode::OK
    );
    let outcome = running.await.unwrap();
    assert_eq!(outcome, segport_worker::TaskOutcome::Failed);
    let done = t.get(&format!("/export/jobs/{id}")).await.body;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["errors"][0]["code"], "EXPORT_CANCELLED");
    assert_eq!(t.batch(&batch).await["status"], "failed");
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    assert!(t
        .db
        .catalog
        .list_batch_files(&tenant, &segport_model::BatchId::parse(&batch).unwrap())
        .await
        .unwrap()
        .is_empty());
    let dir = object_store::path::Path::from_iter([ORG, SANDBOX, "batches", batch.as_str()]);
    assert!(t.state.storage.list(&dir).await.unwrap().is_empty(), "nothing of the attempt stays");
}

async fn an_unwritable_destination_fails_with_output_write_error(backend: Backend) {
    let t = TestApp::new(backend).await;
    small_store(&t, 200).await;
    let export = t.export_dataset().await;
    let job = t.create_job(minimal_job(&export)).await;
    let batch = job["destination"]["batchId"].as_str().unwrap().to_owned();
    // A file where the batch's folder must go: the storage root refuses the output.
    let blocked = t.storage_dir.join(ORG).join(SANDBOX).join("batches");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join(&batch), b"in the way").unwrap();
    assert_eq!(t.run_tasks().await, 1);
    let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["errors"][0]["code"], "OUTPUT_WRITE_ERROR");
    assert!(done["errors"][0]["msg"].as_str().unwrap().contains(&batch));
    assert_eq!(t.batch(&batch).await["status"], "failed");
}

/// One input record with what the oracle needs to order it.
#[derive(Clone)]
struct Fragment {
    dataset: String,
    ingest_ms: i64,
    /// Commit order, then position in the batch.
    order: (i64, usize),
    record: Value,
}

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

/// Non-null leaves of `top` win; objects merge; arrays are leaves.
fn overlay(base: &mut Map<String, Value>, top: &Map<String, Value>) {
    for (k, v) in top {
        if ["identityMap", "identities", "segmentMembership"].contains(&k.as_str()) || v.is_null() {
            continue;
        }
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(t)) => overlay(b, t),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The event window bounds and the event fields.
type EventSpec = (Option<i64>, Option<i64>, Vec<Vec<String>>);
/// Per membership: qualification time, recency of its fragment, the entry.
type Resolved = (i64, (i64, (i64, usize)), Value);

struct Spec {
    body: Value,
    segments: Option<Vec<(String, String, Vec<String>)>>,
    window: (Option<i64>, Option<i64>),
    from_ingest: Option<i64>,
    empty_profiles: bool,
    fields: Vec<Vec<String>>,
    events: Option<EventSpec>,
    per_segment: bool,
    order: Option<Vec<String>>,
}

fn project(value: &Value, paths: &[Vec<String>]) -> Value {
    fn select(v: &Value, path: &[String]) -> Option<Value> {
        match (v, path.split_first()) {
            (v, None) => (!v.is_null()).then(|| v.clone()),
            (Value::Object(m), Some((h, rest))) => {
                m.get(h).and_then(|c| select(c, rest)).map(|c| json!({h.clone(): c}))
            }
            (Value::Array(items), Some(_)) => Some(Value::Array(
                items.iter().map(|i| select(i, path).unwrap_or(json!({}))).collect(),
            )),
            _ => None,
        }
    }
    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in y {
                    match x.get_mut(&k) {
                        Some(e) => merge(e, v),
                        None => {
                            x.insert(k, v);
                        }
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                for (e, v) in x.iter_mut().zip(y) {
                    merge(e, v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let mut out = json!({});
    for p in paths {
        if let Some(v) = select(value, p) {
            merge(&mut out, v);
        }
    }
    out
}

/// The oracle: the export rules of docs/api.md, evaluated record by record.
fn expected(spec: &Spec, profiles: &[Fragment], events: &[Fragment]) -> Vec<Vec<Value>> {
    // Grouped by key once, so the oracle stays linear; everything below is per profile.
    let mut by_key: BTreeMap<String, (Vec<&Fragment>, Vec<&Fragment>)> = BTreeMap::new();
    for f in profiles {
        by_key.entry(naive_key(&f.record)).or_default().0.push(f);
    }
    for e in events {
        by_key.entry(naive_key(&e.record)).or_default().1.push(e);
    }
    let batches = if spec.per_segment { spec.segments.as_ref().unwrap().len() } else { 1 };
    let mut out = vec![Vec::new(); batches];
    for (all_frags, evs) in by_key.values() {
        let mut frags: Vec<&Fragment> = all_frags
            .iter()
            .copied()
            .filter(|f| spec.order.as_ref().is_none_or(|o| o.contains(&f.dataset)))
            .collect();
        if frags.is_empty() && !spec.empty_profiles {
            continue;
        }
        let update = if frags.is_empty() {
            evs.iter().map(|e| e.ingest_ms).max()
        } else {
            frags.iter().map(|f| f.ingest_ms).max()
        };
        if let (Some(from), Some(u)) = (spec.from_ingest, update) {
            if u <= from {
                continue;
            }
        }
        frags.sort_by_key(|f| (f.ingest_ms, f.order));
        // Memberships: latest qualification, ties to the most recent fragment.
        let mut members: BTreeMap<(String, String), Resolved> = BTreeMap::new();
        for f in &frags {
            if let Some(m) = f.record["segmentMembership"].as_object() {
                for (ns, segs) in m {
                    for (id, entry) in segs.as_object().unwrap() {
                        let lqt = entry["lastQualificationTime"].as_str().map_or(i64::MIN, ms);
                        let rank = (lqt, (f.ingest_ms, f.order));
                        let k = (ns.clone(), id.clone());
                        if members.get(&k).is_none_or(|(l, r, _)| (*l, *r) < (rank.0, rank.1)) {
                            members.insert(k, (rank.0, rank.1, entry.clone()));
                        }
                    }
                }
            }
        }
        let targets: Vec<usize> = match &spec.segments {
            None => vec![0],
            Some(entries) => {
                let hits: Vec<usize> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, (id, ns, statuses))| {
                        members.iter().any(|((mns, mid), (lqt, _, e))| {
                            mid == id
                                && mns.to_lowercase() == ns.to_lowercase()
                                && statuses.contains(&e["status"].as_str().unwrap().to_owned())
                                && spec.window.0.is_none_or(|s| *lqt != i64::MIN && *lqt >= s)
                                && spec.window.1.is_none_or(|t| *lqt != i64::MIN && *lqt <= t)
                        })
                    })
                    .map(|(i, _)| i)
                    .collect();
                if spec.per_segment {
                    hits
                } else if hits.is_empty() {
                    vec![]
                } else {
                    vec![0]
                }
            }
        };
        if targets.is_empty() {
            continue;
        }
        let mut merged = Map::new();
        match &spec.order {
            None => frags.iter().for_each(|f| overlay(&mut merged, f.record.as_object().unwrap())),
            Some(order) => {
                let mut ranked = frags.clone();
                ranked.sort_by_key(|f| {
                    (
                        std::cmp::Reverse(order.iter().position(|d| *d == f.dataset).unwrap()),
                        f.ingest_ms,
                        f.order,
                    )
                });
                ranked.iter().for_each(|f| overlay(&mut merged, f.record.as_object().unwrap()));
            }
        }
        let sources: Vec<&Fragment> = if frags.is_empty() { evs.clone() } else { frags.clone() };
        let mut ids: Vec<(String, String, bool, Option<Value>)> = Vec::new();
        for f in &sources {
            for (ns, list) in f.record["identityMap"].as_object().unwrap() {
                for i in list.as_array().unwrap() {
                    let id = i["id"].as_str().unwrap().to_owned();
                    let primary = i["primary"] == true;
                    match ids.iter_mut().find(|x| x.0 == *ns && x.1 == id) {
                        Some(x) => x.2 |= primary,
                        None => ids.push((
                            ns.clone(),
                            id,
                            primary,
                            i.get("authenticatedState").cloned(),
                        )),
                    }
                }
            }
        }
        let mut identity_map = Map::new();
        for (ns, id, primary, auth) in &ids {
            let mut e = json!({"id": id, "primary": primary});
            if let Some(a) = auth {
                e["authenticatedState"] = a.clone();
            }
            identity_map.entry(ns.clone()).or_insert(json!([])).as_array_mut().unwrap().push(e);
        }
        merged.insert("identityMap".into(), Value::Object(identity_map));
        merged.insert(
            "identities".into(),
            Value::Array(
                ids.iter()
                    .map(|(ns, id, p, auth)| {
                        let mut e = json!({"id": id, "namespace": {"code": ns}, "primary": p});
                        if let Some(a) = auth {
                            e["authenticatedState"] = a.clone();
                        }
                        e
                    })
                    .collect(),
            ),
        );
        if !members.is_empty() {
            let mut m = Map::new();
            for ((ns, id), (_, _, e)) in &members {
                m.entry(ns.clone()).or_insert(json!({}))[id] = e.clone();
            }
            merged.insert("segmentMembership".into(), Value::Object(m));
        }
        let mut row = if spec.fields.is_empty() {
            let mut all = merged.clone();
            all.remove("identities");
            Value::Object(all)
        } else {
            project(&Value::Object(merged.clone()), &spec.fields)
        };
        if let Some((from, to, fields)) = &spec.events {
            // The latest version of each `_id` replaces the others; then the window applies.
            let mut latest: BTreeMap<String, &Fragment> = BTreeMap::new();
            for e in evs.iter() {
                let id = e.record["_id"].as_str().unwrap().to_owned();
                if latest.get(&id).is_none_or(|p| (p.ingest_ms, p.order) < (e.ingest_ms, e.order)) {
                    latest.insert(id, e);
                }
            }
            let mut list: Vec<&Fragment> = latest
                .into_values()
                .filter(|e| {
                    !(from.is_some_and(|f| e.ingest_ms <= f)
                        || to.is_some_and(|t| e.ingest_ms >= t))
                })
                .collect();
            list.sort_by(|a, b| {
                (ms(a.record["timestamp"].as_str().unwrap()), a.record["_id"].as_str())
                    .cmp(&(ms(b.record["timestamp"].as_str().unwrap()), b.record["_id"].as_str()))
            });
            let projected: Vec<Value> =
                list.iter()
                    .map(|e| {
                        if fields.is_empty() {
                            e.record.clone()
                        } else {
                            project(&e.record, fields)
                        }
                    })
                    .collect();
            row["timeSeriesEvents"] = Value::Array(projected);
        }
        for t in targets {
            out[t].push(row.clone());
        }
    }
    out
}

/// A canonical text of a row: object keys sorted, date-times as instants, numbers as floats,
/// nulls and empty objects inside structs dropped.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), canonical(v)))
                .collect();
            json!(sorted)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) if s.len() > 10 => json!(t.timestamp_millis()),
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn paths(list: &str) -> Vec<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').map(str::to_owned).collect())
        .collect()
}

async fn random_jobs_match_the_oracle(setup: Setup) {
    let mut t = TestApp::new(setup).await;
    // The caches made for cold starts, removed at the end.
    let mut caches = Vec::new();
    let seed = 17;
    let segments = segport_datagen::segments(seed);
    let n = 20_000;
    let mut base = Vec::new();
    let mut evs = Vec::new();
    for i in 0..n {
        let g = segport_datagen::profile(seed, i, &segments);
        base.extend(g.profile);
        evs.extend(g.events);
    }
    let p1 = t.store_dataset(PROFILE_SCHEMA).await;
    let p2 = t.store_dataset(PROFILE_SCHEMA).await;
    let ed = t.store_dataset(EVENT_SCHEMA).await;
    let mut profiles: Vec<Fragment> = Vec::new();
    let mut events: Vec<Fragment> = Vec::new();
    let mut seq = 0;
    let mut load = |records: Vec<Value>, dataset: &str, ingest_ms: i64, out: &mut Vec<Fragment>| {
        seq += 1;
        for (i, r) in records.into_iter().enumerate() {
            out.push(Fragment {
                dataset: dataset.to_owned(),
                ingest_ms,
                order: (seq, i),
                record: r,
            });
        }
    };
    let ndjson = |records: &[Value]| {
        records.iter().map(|r| format!("{r}\n")).collect::<String>().into_bytes()
    };
    // Dataset 1: everyone, in two batches; then 10% of them updated (points, tier, a membership).
    let half = base.len() / 2;
    let updates: Vec<Value> = base
        .iter()
        .step_by(10)
        .map(|p| {
            let mut u = json!({"identityMap": p["identityMap"].clone(), "loyalty": {"points": 99_999, "tier": "diamond"}});
            u["segmentMembership"] = json!({"ups": {segments[1].id.clone(): {"status": "realized", "lastQualificationTime": "2026-10-30T00:00:00Z"}}});
            u
        })
        .collect();
    // Dataset 2: 10% of the profiles with another email and tier; 2% of them twice in the
    // same batch, the second time with a membership (a file whose keys repeat).
    let mut second: Vec<Value> = base
        .iter()
        .skip(3)
        .step_by(10)
        .map(|p| json!({"identityMap": p["identityMap"].clone(), "personalEmail": {"address": "other@example.org"}, "loyalty": {"tier": "lead"}}))
        .collect();
    second.extend(base.iter().skip(3).step_by(50).map(|p| {
        let mut u = json!({"identityMap": p["identityMap"].clone(), "loyalty": {"tier": "lead2"}});
        u["segmentMembership"] = json!({"ups": {segments[2].id.clone(): {"status": "existing", "lastQualificationTime": "2026-10-29T00:00:00Z"}}});
        u
    }));
    for (records, dataset) in [
        (base[..half].to_vec(), p1.clone()),
        (base[half..].to_vec(), p1.clone()),
        (updates, p1.clone()),
        (second, p2.clone()),
    ] {
        let (_, batch) =
            t.ingest(&dataset, json!({"format": "json"}), vec![("f.json", ndjson(&records))]).await;
        assert_eq!(batch["status"], "success");
        load(records, &dataset, batch["completed"].as_i64().unwrap(), &mut profiles);
    }
    let (_, batch) = t.ingest(&ed, json!({"format": "json"}), vec![("e.json", ndjson(&evs))]).await;
    let events_ingest = batch["completed"].as_i64().unwrap();
    load(evs.clone(), &ed, events_ingest, &mut events);
    let times: Vec<i64> =
        profiles.iter().map(|f| f.ingest_ms).collect::<BTreeSet<_>>().into_iter().collect();

    let export = t.export_dataset().await;
    let policy = t
        .post(
            "/data/core/ups/config/mergePolicies",
            json!({"name": "p2 first", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"}, "attributeMerge": {"type": "dataSetPrecedence", "order": [p2, p1]}}),
        )
        .await;
    let policy_id = policy.body["id"].as_str().unwrap().to_owned();
    let field_choices = [
        "",
        "identities.id,personalEmail.address",
        "identityMap,loyalty",
        "loyalty.tier,segmentMembership.ups,person.name.firstName",
        "homeAddress,identities.namespace.code",
    ];
    let statuses = ["realized", "existing", "exited"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    if t.root == Root::S3 {
        // An S3 root holds data files only: companions are built in each reader's cache.
        let stored = t.files_under(&format!("{ORG}/{SANDBOX}/store")).await;
        assert!(stored.len() > 4 && stored.iter().all(|p| p.ends_with(".parquet")), "{stored:?}");
    }
    for case in 0..8 {
        if t.root == Root::S3 && case % 3 == 2 {
            // A worker with a cold cache: every file is fetched again, its companions rebuilt.
            let (fresh, dir) = s3_storage();
            let cache = fresh.cache().unwrap().clone();
            t.state.storage = t.state.storage.clone().with_cache(cache);
            caches.push(dir);
        }
        if t.root == Root::Local && case == 4 {
            // Stores written before membership indexes existed have none: from here on, every
            // other index is gone and the export scans those files instead.
            let mut indexes = companion_files(&t.storage_dir, ".members.arrow");
            assert!(indexes.len() > 2, "ingest writes membership indexes");
            indexes.sort();
            for path in indexes.iter().step_by(2) {
                std::fs::remove_file(path).unwrap();
            }
        }
        if t.root == Root::Local && case == 2 {
            // Stores written before row files existed have none either: from here on, every
            // other row file is gone and picked rows are read from those files' Parquet pages.
            let mut row_files = companion_files(&t.storage_dir, ".rows.arrow");
            assert!(row_files.len() > 2, "ingest writes row files");
            row_files.sort();
            for path in row_files.iter().skip(1).step_by(2) {
                std::fs::remove_file(path).unwrap();
            }
        }
        let mut segs = Vec::new();
        let with_segments = case % 4 != 3;
        if with_segments {
            for _ in 0..rng.gen_range(1..4) {
                let s = &segments[rng.gen_range(0..12)];
                let mut st: Vec<String> = statuses
                    .iter()
                    .filter(|_| rng.gen_bool(0.6))
                    .map(|s| (*s).to_owned())
                    .collect();
                if st.is_empty() {
                    st.push("realized".into());
                }
                let ns = if rng.gen_bool(0.2) { "UPS" } else { "ups" };
                segs.push((s.id.clone(), ns.to_owned(), st));
            }
            // The segment the repeated keys of dataset 2 qualify for, every third case.
            if case % 3 == 0 && segs.iter().all(|(id, _, _)| *id != segments[2].id) {
                segs.push((segments[2].id.clone(), "ups".into(), vec!["existing".into()]));
            }
        }
        let window = if with_segments && rng.gen_bool(0.5) {
            (
                Some(segport_datagen::TIME_FROM_MS + rng.gen_range(0..20_000_000_000)),
                if rng.gen_bool(0.5) {
                    Some(segport_datagen::TIME_TO_MS - rng.gen_range(0..20_000_000_000))
                } else {
                    None
                },
            )
        } else {
            (None, None)
        };
        let from_ingest = rng.gen_bool(0.3).then(|| times[rng.gen_range(0..times.len())]);
        let empty_profiles = rng.gen_bool(0.3);
        // Every field list is exported at least once without events (the columnar path for
        // single-fragment profiles) and some with them (the JSON path).
        let fields = field_choices[case % field_choices.len()];
        let with_events = case % 4 == 1;
        let event_fields = if rng.gen_bool(0.5) {
            ""
        } else {
            "_id,web.webPageDetails.name,commerce.order.priceTotal"
        };
        let event_window = (rng.gen_bool(0.3).then_some(events_ingest - 1), None::<i64>);
        let per_segment = with_segments && rng.gen_bool(0.4);
        let precedence = rng.gen_bool(0.4);

        let rfc = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
        let mut body = json!({
            "destination": {"datasetId": export, "segmentPerBatch": per_segment},
            "schema": {"name": "_xdm.context.profile"},
            "fields": fields,
            "filter": {"emptyProfiles": empty_profiles},
        });
        if with_segments {
            body["filter"]["segments"] = json!(segs
                .iter()
                .map(|(id, ns, st)| json!({"segmentId": id, "segmentNs": ns, "status": st}))
                .collect::<Vec<_>>());
            if let Some(start) = window.0 {
                let mut w = json!({"startTime": rfc(start)});
                if let Some(e) = window.1 {
                    w["endTime"] = json!(rfc(e));
                }
                body["filter"]["segmentQualificationTime"] = w;
            }
        }
        if let Some(f) = from_ingest {
            body["filter"]["fromIngestTimestamp"] = json!(rfc(f));
        }
        if with_events {
            let mut list = json!({"fields": event_fields});
            if let Some(f) = event_window.0 {
                list["filter"] = json!({"fromIngestTimestamp": rfc(f)});
            }
            body["additionalFields"] = json!({"eventList": list});
        }
        if precedence {
            body["mergePolicy"] = json!({"id": policy_id});
        }
        let spec = Spec {
            body: body.clone(),
            segments: with_segments.then(|| segs.clone()),
            window,
            from_ingest,
            empty_profiles,
            fields: paths(fields),
            events: with_events.then(|| (event_window.0, None, paths(event_fields))),
            per_segment,
            order: precedence.then(|| vec![p2.clone(), p1.clone()]),
        };

        // The preview of the same body, before the job runs: its counts per batch are the
        // oracle's, and its rows are rows of the first batch.
        let preview = t.post("/segport/preview/export?rows=5", spec.body.clone()).await;
        assert_eq!(preview.status, 200, "case {case}: {}", preview.text);
        let previewed = preview.body.clone();

        let job = t.create_job(spec.body.clone()).await;
        if case % 2 == 1 {
            // Split into units: of about 600 profiles, several per partition (the files' row
            // groups of 100 rows give the plan its key fences), or of about 5,000, whole
            // partitions each; the plan, then a task per unit.
            let unit_profiles = if case % 4 == 1 { 600 } else { 5_000 };
            let mut ctx = t.worker_context(small_limits());
            std::sync::Arc::make_mut(&mut ctx.config).export_unit_profiles = unit_profiles;
            let ran = t.run_tasks_on(&segport_worker::Worker::new(ctx)).await;
            let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
            let units = done["units"].as_array().unwrap();
            assert_eq!(ran, 1 + units.len(), "case {case}: {done}");
            let whole = units.iter().filter(|u| u["lastPartition"].is_u64()).count();
            if unit_profiles == 600 {
                assert!(units.len() > 2 * 16 && whole == 0, "case {case}: {done}");
            } else {
                assert!(units.len() == 8 && whole == 8, "case {case}: {done}");
            }
        } else {
            assert_eq!(t.run_tasks().await, 1, "case {case}");
        }
        let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
        assert_eq!(done["status"], "SUCCEEDED", "case {case}: {done}");
        let want = expected(&spec, &profiles, &events);
        let counts: Vec<u64> = previewed["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .collect();
        assert_eq!(
            counts,
            want.iter().map(|w| w.len() as u64).collect::<Vec<_>>(),
            "case {case}: preview counts"
        );
        let first: BTreeSet<String> = want[0].iter().map(|r| canonical(r).to_string()).collect();
        let sample = previewed["rows"].as_array().unwrap();
        assert_eq!(sample.len(), want[0].len().min(5), "case {case}: preview rows");
        for row in sample {
            assert!(first.contains(&canonical(row).to_string()), "case {case}: {row}");
        }
        assert_eq!(
            previewed["totalExportedProfileCounter"],
            done["metrics"]["totalExportedProfileCounter"],
            "case {case}: the preview counts what the job exports"
        );
        let batch_ids: Vec<String> = match done["destination"]["batches"].as_array() {
            Some(list) => list.iter().map(|b| b["batchId"].as_str().unwrap().to_owned()).collect(),
            None => vec![done["destination"]["batchId"].as_str().unwrap().to_owned()],
        };
        let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
        let mut total = 0;
        for (b, batch_id) in batch_ids.iter().enumerate() {
            let files =
                t.db.catalog
                    .list_batch_files(&tenant, &segport_model::BatchId::parse(batch_id).unwrap())
                    .await
                    .unwrap();
            assert!(!files.is_empty(), "every batch has at least one file");
            let got = output_rows(&t, &files).await;
            let mut got: Vec<String> = got.iter().map(|r| canonical(r).to_string()).collect();
            let mut exp: Vec<String> = want[b].iter().map(|r| canonical(r).to_string()).collect();
            got.sort();
            exp.sort();
            assert_eq!(got.len(), exp.len(), "case {case} batch {b}: row count\n{}", spec.body);
            for (g, e) in got.iter().zip(&exp) {
                assert_eq!(g, e, "case {case} batch {b}\n{}", spec.body);
            }
            total += exp.len();
        }
        assert_eq!(
            done["metrics"]["totalExportedProfileCounter"].as_u64(),
            Some(total as u64),
            "case {case}"
        );
    }
    if let Some(cache) = t.state.storage.cache() {
        // The last cache was filled once (case 5) and then read warm (cases 6 and 7).
        let (hits, misses, _, _) = cache.metrics().snapshot();
        assert!(misses > 4 && hits >= 2 * misses, "hits {hits}, misses {misses}");
    }
    for dir in caches {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The companion files under `dir` whose names end in `suffix`.
fn companion_files(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

/// docs/api.md: a later event with the same `_id` replaces the earlier one, so the earlier
/// version is not exported from a window that holds only its batch.
async fn a_replaced_event_is_gone_from_earlier_windows(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let eds = t.store_dataset(EVENT_SCHEMA).await;
    let profile = json!({"identityMap": {"ECID": [{"id": "E1", "primary": true}]}});
    t.ingest(
        &pds,
        json!({"format": "json"}),
        vec![("p.json", format!("{profile}\n").into_bytes())],
    )
    .await;
    let event = |kind: &str| {
        json!({"_id": "x", "timestamp": "2026-01-01T00:00:00Z", "eventType": kind,
               "identityMap": {"ECID": [{"id": "E1", "primary": true}]}})
    };
    let mut completed = Vec::new();
    for kind in ["v1", "v2"] {
        let (_, batch) = t
            .ingest(
                &eds,
                json!({"format": "json"}),
                vec![("e.json", format!("{}\n", event(kind)).into_bytes())],
            )
            .await;
        completed.push(batch["completed"].as_i64().unwrap());
    }
    let export = t.export_dataset().await;
    let rfc = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    for (from, to, want) in [
        (completed[0] - 1, completed[0] + 1, json!([])),
        (completed[1] - 1, completed[1] + 1, json!([{"_id": "x", "eventType": "v2"}])),
        (completed[0] - 1, completed[1] + 1, json!([{"_id": "x", "eventType": "v2"}])),
    ] {
        let mut body = minimal_job(&export);
        body["fields"] = json!("identityMap");
        body["additionalFields"] = json!({"eventList": {"fields": "_id,eventType",
            "filter": {"fromIngestTimestamp": rfc(from), "toIngestTimestamp": rfc(to)}}});
        let job = t.create_job(body).await;
        t.run_tasks().await;
        let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
        let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
        let batch = segport_model::BatchId::parse(done["destination"]["batchId"].as_str().unwrap())
            .unwrap();
        let files = t.db.catalog.list_batch_files(&tenant, &batch).await.unwrap();
        let rows = output_rows(&t, &files).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let events = rows[0].get("timeSeriesEvents").cloned().unwrap_or(json!([]));
        assert_eq!(events, want, "window {from}..{to}");
    }
}

/// Paths that match nothing are left out and named in `warnings`; when nothing at all matches,
/// rows still carry their identities, and events with no matching field add no column.
async fn fields_that_match_nothing_are_warned_about(backend: Backend) {
    let t = TestApp::new(backend).await;
    let export = t.export_dataset().await;
    let mut body = minimal_job(&export);
    body["fields"] = json!("nope,person.nope");
    body["additionalFields"] = json!({"eventList": {"fields": "string"}});
    // Before the sandbox holds data, paths cannot be checked: the job is accepted and says so.
    let job = t.create_job(body.clone()).await;
    let codes = |job: &Value| -> Vec<String> {
        let warnings = job["warnings"].as_array().cloned().unwrap_or_default();
        warnings.iter().map(|w| w["code"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(codes(&job), ["FIELD_NOT_CHECKED"; 3], "{job}");
    // A profile dataset that does not feed the profile store: its data is in no export.
    let a = t
        .post(
            "/data/foundation/catalog/dataSets",
            json!({"name": "off", "schemaRef": {"id": PROFILE_SCHEMA}}),
        )
        .await;
    let off = a.body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    // It runs before any data arrives, leaving out what matched nothing.
    t.run_tasks().await;
    small_store(&t, 100).await;

    // Once it holds data, a path that matches nothing is refused with the closest known one.
    let refused = t.post("/export/jobs", body).await;
    refused.assert_service_error(400);
    assert_eq!(refused.error_fields(), ["fields", "fields", "additionalFields.eventList.fields"]);
    let mut misspelled = minimal_job(&export);
    misspelled["fields"] = json!("personalEmial.address, identities.id");
    let refused = t.post("/export/jobs", misspelled).await;
    assert_eq!(refused.error_fields(), ["fields"]);
    assert!(
        refused.text.contains(
            r#"\"personalEmial.address\" matches no field of the sandbox's profile data; did you mean \"personalEmail.address\"?"#
        ),
        "{}",
        refused.text
    );

    let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let mut expect = vec!["FIELD_NOT_CHECKED"; 3];
    expect.push("DATASET_NOT_IN_PROFILE");
    expect.extend(["UNKNOWN_FIELD"; 3]);
    assert_eq!(codes(&done), expect, "{done}");
    let warned: Vec<&str> =
        done["warnings"].as_array().unwrap().iter().map(|w| w["msg"].as_str().unwrap()).collect();
    assert!(warned[3].contains(&off), "{warned:?}");
    assert!(warned[4..].iter().all(|w| w.contains("matches no field")));
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let batch =
        segport_model::BatchId::parse(done["destination"]["batchId"].as_str().unwrap()).unwrap();
    let files = t.db.catalog.list_batch_files(&tenant, &batch).await.unwrap();
    let bytes = t.state.storage.get(&files[0].path.as_str().into()).await.unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["identityMap"]);
}

/// The files under a batch's folder in the storage root.
async fn batch_files(t: &TestApp, batch: &str) -> Vec<String> {
    t.files_under(&format!("{ORG}/{SANDBOX}/batches/{batch}")).await
}

/// `DELETE /data/foundation/catalog/batches/{id}` removes a finished export batch with its
/// files and nothing else; ingest batches and unfinished exports are refused. Retention removes
/// the finished export batches older than its cutoff, and only those.
async fn export_batches_are_deleted_on_request_and_by_retention(setup: Setup) {
    let t = TestApp::new(setup).await;
    small_store(&t, 40).await;
    let export = t.export_dataset().await;
    let mut batches = Vec::new();
    for _ in 0..3 {
        let job = t.create_job(minimal_job(&export)).await;
        t.run_tasks().await;
        let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
        let batch = done["destination"]["batchId"].as_str().unwrap().to_owned();
        assert!(!batch_files(&t, &batch).await.is_empty(), "the export wrote no files");
        batches.push(batch);
    }
    let path = |b: &str| format!("/data/foundation/catalog/batches/{b}");

    // On request: the batch, its file listing and its files are gone; the others stay.
    let answer = t.call(Method::DELETE, &path(&batches[0]), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body, json!([format!("@/batches/{}", batches[0])]));
    assert_eq!(t.get(&path(&batches[0])).await.status, 404);
    let files = t.get(&format!("/data/foundation/export/batches/{}/files", batches[0])).await;
    assert_eq!(files.status, 404, "{}", files.text);
    assert!(batch_files(&t, &batches[0]).await.is_empty());
    for b in &batches[1..] {
        assert_eq!(t.get(&path(b)).await.status, 200);
        assert!(!batch_files(&t, b).await.is_empty());
    }
    let again = t.call(Method::DELETE, &path(&batches[0]), None).await;
    again.assert_service_error(404);
    t.call(Method::DELETE, &path("not-a-batch"), None).await.assert_service_error(400);

    // Ingest batches are not export batches.
    let listed = t.get("/data/foundation/catalog/batches").await.body;
    let ingest = listed
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, b)| !batches.iter().any(|x| b["id"] == *x) && b["status"] == "success")
        .map(|(id, _)| id.clone())
        .expect("an ingest batch");
    let refused = t.call(Method::DELETE, &path(&ingest), None).await;
    refused.assert_service_error(409);
    assert_eq!(t.get(&path(&ingest)).await.status, 200);

    // An export not finished yet keeps its batch.
    let queued = t.create_job(minimal_job(&export)).await;
    let loading = queued["destination"]["batchId"].as_str().unwrap().to_owned();
    t.call(Method::DELETE, &path(&loading), None).await.assert_service_error(409);
    t.run_tasks().await;

    // Retention: a cutoff before every completion keeps them all; one after the second
    // export's completion removes it (the third and the last stay).
    let ctx = t.worker_context(small_limits());
    let completed = |b: &Value| b["completed"].as_i64().unwrap();
    let second = t.get(&path(&batches[1])).await.body[&batches[1]].clone();
    let third = t.get(&path(&batches[2])).await.body[&batches[2]].clone();
    assert_eq!(segport_worker::expire_export_batches(&ctx, completed(&second)).await.unwrap(), 0);
    assert!(completed(&second) < completed(&third), "{second} {third}");
    let removed =
        segport_worker::expire_export_batches(&ctx, completed(&second) + 1).await.unwrap();
    assert_eq!(removed, 1);
    assert_eq!(t.get(&path(&batches[1])).await.status, 404);
    assert!(batch_files(&t, &batches[1]).await.is_empty());
    for b in [&batches[2], &loading] {
        assert_eq!(t.get(&path(b)).await.status, 200, "{b} was removed too early");
        assert!(!batch_files(&t, b).await.is_empty());
    }
    // Ingest batches are never expired.
    segport_worker::expire_export_batches(&ctx, i64::MAX).await.unwrap();
    assert_eq!(t.get(&path(&ingest)).await.status, 200);
    for b in [&batches[2], &loading] {
        assert_eq!(t.get(&path(b)).await.status, 404);
    }
}

/// The value of the sample `name` (with its labels, as rendered) in a Prometheus exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// What a worker does shows in the metrics it registers: ingest records kept and refused,
/// export durations and profiles, expired leases and the retries they cause.
async fn workers_report_their_metrics(backend: Backend) {
    let t = TestApp::new(backend).await;
    let metrics = segport_worker::WorkerMetrics::default();
    let mut registry = prometheus_client::registry::Registry::with_prefix("segport");
    metrics.register(&mut registry);
    let mut ctx = t.worker_context(small_limits());
    ctx.metrics = metrics.clone();
    let worker = segport_worker::Worker::new(ctx.clone());
    let render = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };

    // 7 good records and 2 bad lines in one batch.
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let mut lines = String::new();
    for i in 0..7 {
        lines.push_str(&format!(
            "{}\n",
            json!({"identityMap": {"ECID": [{"id": format!("E{i}")}]}})
        ));
    }
    lines.push_str("not json\n{\"identityMap\": 5}\n");
    let batch = t.new_batch(&pds, json!({"format": "json"})).await;
    assert_eq!(t.upload(&batch, &pds, "p.json", lines.into_bytes()).await.status, 200);
    assert_eq!(t.batch_action(&batch, "COMPLETE").await.status, 200);
    t.run_tasks_on(&worker).await;
    let text = render();
    assert_eq!(
        sample(&text, "segport_ingest_records_total{outcome=\"kept\"}"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(sample(&text, "segport_ingest_records_total{outcome=\"refused\"}"), Some(2.0));

    let export = t.export_dataset().await;
    let job = t.create_job(minimal_job(&export)).await;
    t.run_tasks_on(&worker).await;
    let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let text = render();
    let count = "segport_export_job_duration_seconds_count{outcome=\"succeeded\"}";
    assert_eq!(sample(&text, count), Some(1.0), "{text}");
    assert_eq!(sample(&text, "segport_export_profiles_exported_sum"), Some(7.0), "{text}");

    // A job claimed by a worker that then vanishes: its lease expires and it is queued again.
    let job = t.create_job(minimal_job(&export)).await;
    let lost = t.db.catalog.claim_task("gone", 1, segport_model::time::now_ms()).await.unwrap();
    assert!(lost.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(segport_worker::reap_expired(&ctx).await.unwrap(), 1);
    let text = render();
    assert_eq!(sample(&text, "segport_lease_expiries_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "segport_task_retries_total{kind=\"export\"}"), Some(1.0), "{text}");
    t.run_tasks_on(&worker).await;
    let done = t.get(&format!("/export/jobs/{}", job["id"])).await.body;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(sample(&render(), count), Some(2.0));
}

/// A GET with the tenant's headers and `headers`.
async fn get_with(t: &TestApp, uri: String, headers: &[(&str, &str)]) -> Answer {
    let mut request = axum::http::Request::get(uri)
        .header("authorization", "Bearer x")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", ORG)
        .header("x-sandbox-name", SANDBOX);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    t.send(request.body(axum::body::Body::empty()).unwrap()).await
}

/// Data Access links are absolute, as AEP's are (a client follows them as they come): from the
/// configured public URL, else from the proxy's forwarding headers, else from `Host`. Ids are
/// opaque to clients: one not shaped like segport's is a 404, like an unknown one.
async fn data_access_links_are_absolute_and_ids_opaque(setup: Setup) {
    let mut t = TestApp::new(setup).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let record = json!({"identityMap": {"ECID": [{"id": "a"}]}});
    let (batch, _) = t
        .ingest(
            &pds,
            json!({"format": "json"}),
            vec![("f.json", format!("{record}\n").into_bytes())],
        )
        .await;
    let listing = format!("/data/foundation/export/batches/{batch}/files");
    let href =
        |a: &Answer| a.body["data"][0]["_links"]["self"]["href"].as_str().unwrap().to_owned();
    let a = get_with(&t, listing.clone(), &[("host", "segport.test:8080")]).await;
    assert_eq!(href(&a), format!("http://segport.test:8080/data/foundation/export/files/{batch}"));
    let proxied = [
        ("host", "10.0.0.7:8080"),
        ("x-forwarded-host", "api.example.com"),
        ("x-forwarded-proto", "https"),
    ];
    let a = get_with(&t, listing.clone(), &proxied).await;
    let file = href(&a);
    assert_eq!(file, format!("https://api.example.com/data/foundation/export/files/{batch}"));
    // Followed as given (less its origin, which a proxy would take off), the listing of the
    // file links each part absolutely, and that link downloads it.
    let path = file.trim_start_matches("https://api.example.com").to_owned();
    let parts = get_with(&t, path, &proxied).await;
    let part = href(&parts);
    assert!(part.starts_with("https://api.example.com/data/foundation/export/files/"), "{part}");
    let bytes =
        get_with(&t, part.trim_start_matches("https://api.example.com").to_owned(), &[]).await;
    assert_eq!(bytes.status, 200);
    assert_eq!(bytes.body, record);

    t.state.public_url = Some("https://segport.example.com/base".into());
    t.app = segport_api::app(t.state.clone(), segport_api::Surface::Full);
    let a = get_with(&t, listing, &proxied).await;
    assert_eq!(
        href(&a),
        format!("https://segport.example.com/base/data/foundation/export/files/{batch}")
    );

    for uri in [
        "/data/foundation/export/batches/not-a-batch/files",
        "/data/foundation/export/files/not-a-batch",
        "/data/foundation/export/files/0123456789abcdef0123456789abcdef",
    ] {
        get_with(&t, uri.to_owned(), &[]).await.assert_service_error(404);
    }
}

/// Fairness (issue 10): a tenant's large export, split into units, does not hold back another
/// tenant's small job. The first tenant's plan runs alone and queues its units; the second
/// tenant's job is created after them (its task is the newest), and two worker slots, each
/// claiming with a cap of one running task per tenant, run the queue. The small job must
/// succeed while the large export still has units to run.
async fn a_small_job_finishes_while_a_large_export_runs(setup: Setup) {
    let t = TestApp::new(setup).await;
    small_store(&t, 2_000).await;
    let large_dataset = t.export_dataset().await;
    let large = t.create_job(minimal_job(&large_dataset)).await["id"].as_i64().unwrap();
    let mut ctx = t.worker_context(small_limits());
    let config = std::sync::Arc::make_mut(&mut ctx.config);
    config.export_unit_profiles = 150;
    config.tenant_max_running = Some(1);
    let worker = std::sync::Arc::new(segport_worker::Worker::new(ctx));
    let now = segport_model::time::now_ms;
    let plan = t.db.catalog.claim_task(worker.owner(), 30_000, now()).await.unwrap().unwrap();
    assert!(plan.unit.is_none());
    let grace = std::time::Duration::from_secs(30);
    worker.run_claimed(plan, tokio_util::sync::CancellationToken::new(), grace).await;
    let units =
        t.get(&format!("/export/jobs/{large}")).await.body["units"].as_array().unwrap().len();
    assert!(units >= 16, "{units} units");

    let other = "dev";
    let small_dataset = t.dataset_as(ORG, other, UNION).await;
    let created = t
        .call_as(ORG, other, Method::POST, "/export/jobs", Some(minimal_job(&small_dataset)))
        .await;
    let small = created.body["id"].as_i64().unwrap();

    // Two slots claim and run until the queue is empty; each notes the large job's committed
    // units whenever it finishes a task of the small job.
    let slot = |worker: std::sync::Arc<segport_worker::Worker>| {
        let catalog = t.db.catalog.clone();
        let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
        async move {
            let mut seen = Vec::new();
            while let Some(task) =
                catalog.claim_task_within(worker.owner(), 30_000, now(), Some(1)).await.unwrap()
            {
                let small_job = task.tenant.sandbox.as_str() == other;
                worker.run_claimed(task, tokio_util::sync::CancellationToken::new(), grace).await;
                if small_job {
                    let units = catalog.export_job_units(&tenant, large).await.unwrap();
                    seen.push(units.iter().filter(|u| u.state == "done").count());
                }
            }
            seen
        }
    };
    let (a, b) = tokio::join!(slot(worker.clone()), slot(worker.clone()));
    let seen: Vec<usize> = a.into_iter().chain(b).collect();
    assert_eq!(seen.len(), 1, "the small job ran once");
    assert!(seen[0] < units / 2, "the small job waited for {} of {units} units", seen[0]);
    let small_done =
        t.call_as(ORG, other, Method::GET, &format!("/export/jobs/{small}"), None).await;
    assert_eq!(small_done.body["status"], "SUCCEEDED", "{}", small_done.text);
    let large_done = t.get(&format!("/export/jobs/{large}")).await.body;
    assert_eq!(large_done["status"], "SUCCEEDED", "{large_done}");
    let listed = large_done["units"].as_array().unwrap();
    assert!(listed.iter().all(|u| u["state"] == "done" && u["attempt"] == 1), "{large_done}");
}

/// Delay scheduling on an S3 root: while another live worker announces that its cache holds
/// every partition, a worker leaves the job's units to it for the locality wait, then takes
/// them all and the job succeeds; it never waits for a holder that does not run them.
async fn units_another_worker_holds_are_taken_after_the_locality_wait(setup: Setup) {
    let t = TestApp::new(setup).await;
    small_store(&t, 2_000).await;
    let catalog = t.db.catalog.clone();
    let now = segport_model::time::now_ms;
    let all: Vec<u32> = (0..16).collect();
    catalog.announce_cache("busy-elsewhere", &all, now()).await.unwrap();
    let mut ctx = t.worker_context(small_limits());
    {
        let config = std::sync::Arc::make_mut(&mut ctx.config);
        config.slots = 1;
        config.export_unit_profiles = 150;
        config.poll = std::time::Duration::from_millis(50);
        config.locality_wait = std::time::Duration::from_secs(2);
    }
    let worker = std::sync::Arc::new(segport_worker::Worker::new(ctx));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone(), std::time::Duration::from_secs(5)));

    let export = t.export_dataset().await;
    let id = t.create_job(minimal_job(&export)).await["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut split_at = None;
    let done = loop {
        // The other worker stays live (it announces every few seconds).
        catalog.announce_cache("busy-elsewhere", &all, now()).await.unwrap();
        let job = t.get(&format!("/export/jobs/{id}")).await.body;
        if job["status"] != "NEW" && job["status"] != "PROCESSING" {
            break job;
        }
        // For the first second after the split, every unit is left to the other worker.
        if let Some(units) = job["units"].as_array() {
            let since = *split_at.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < std::time::Duration::from_secs(1) {
                assert!(units.iter().all(|u| u["state"] == "queued"), "taken at once: {job}");
            }
        }
        assert!(std::time::Instant::now() < deadline, "the job did not end: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    shutdown.cancel();
    running.await.unwrap();
    assert!(split_at.is_some(), "the job was seen split: {done}");
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let units = done["units"].as_array().unwrap();
    assert!(units.len() >= 16, "{done}");
    assert!(units.iter().all(|u| u["state"] == "done" && u["attempt"] == 1), "{done}");
}
