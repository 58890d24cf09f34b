//! The export-jobs API of docs/api.md, over both catalog backends.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use segport_catalog::Backend;
use serde_json::{json, Value};

both_backends!(
    create_fills_defaults_and_allocates_a_batch,
    seed_example_echoes_exactly,
    segment_per_batch_allocates_one_batch_per_segment,
    every_field_rule_names_its_field,
    several_invalid_fields_are_all_named,
    destination_must_be_an_export_dataset,
    merge_policy_rules,
    merge_policy_is_stored_with_the_job,
    get_one_and_unknown_ids,
    list_validates_its_parameters,
    list_pages_with_keyset_cursor_during_concurrent_inserts,
    list_filters_by_status_and_accepts_row_offsets,
    delete_cancels_new_flags_processing_and_deletes_finished,
    concurrent_creates_get_distinct_ids,
    both_prefixes_and_trailing_slashes_route_alike,
    unknown_keys_are_refused_and_aep_read_only_keys_named,
);

async fn create_fills_defaults_and_allocates_a_batch(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let req = Request::post("/data/core/ups/export/jobs")
        .header("authorization", "Bearer x")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", ORG)
        .header("x-sandbox-name", SANDBOX)
        .header("x-request-id", "req-123")
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(minimal_job(&ds).to_string()))
        .unwrap();
    let a = t.send(req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let job = &a.body;
    let id = job["id"].as_i64().expect("integer id");
    assert_eq!(a.headers["x-location"], format!("/data/core/ups/export/jobs/{id}").as_str());
    assert_eq!(a.headers["x-request-id"], "req-123");
    assert_eq!(job["requestId"], "req-123");
    assert_eq!(job["status"], "NEW");
    assert_eq!(job["jobType"], "BATCH");
    assert_eq!(job["imsOrgId"], ORG);
    assert_eq!(job["profileInstanceId"], "ups");
    assert_eq!(job["schema"], json!({"name": "_xdm.context.profile"}));
    assert_eq!(job["filter"], json!({"emptyProfiles": false}));
    assert_eq!(job["mergePolicy"], json!({"id": "timestampOrdered-none-mp", "version": 1}));
    assert_eq!(job["computeGatewayJobId"], json!({"exportJob": ""}));
    assert!(job.get("errors").is_none());
    assert_eq!(job["fields"], "", "the default (every field) is echoed");
    assert!(job.get("additionalFields").is_none());
    let created = job["creationTime"].as_i64().unwrap();
    assert_eq!(job["updateTime"].as_i64(), Some(created));
    assert_eq!(job["metrics"], json!({"totalTime": {"startTimeInMs": created}}));
    assert_eq!(job["destination"]["datasetId"], ds.as_str());
    assert_eq!(job["destination"]["segmentPerBatch"], false);
    assert!(job["destination"].get("batches").is_none());
    let batch_id = job["destination"]["batchId"].as_str().expect("batchId").to_owned();
    assert_eq!(batch_id.len(), 32);

    let b = t.get(&format!("/data/foundation/catalog/batches/{batch_id}")).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text);
    assert_eq!(b.body[&batch_id]["status"], "loading");
    assert_eq!(b.body[&batch_id]["relatedObjects"][0], json!({"type": "dataSet", "id": ds}));

    // GET answers the same object.
    let g = t.get(&format!("/export/jobs/{id}")).await;
    assert_eq!(g.body, a.body);

    // x-profile-instance-id is taken over; a malformed one is refused.
    let req = |value: &str| {
        Request::post("/export/jobs")
            .header("authorization", "Bearer x")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", ORG)
            .header("x-sandbox-name", SANDBOX)
            .header("x-profile-instance-id", value)
            .header("content-type", "application/json")
            .body(Body::from(minimal_job(&ds).to_string()))
            .unwrap()
    };
    assert_eq!(t.send(req("inst-2")).await.body["profileInstanceId"], "inst-2");
    let bad = t.send(req("a b")).await;
    bad.assert_service_error(400);
    assert_eq!(bad.error_fields(), ["x-profile-instance-id"]);
}

async fn seed_example_echoes_exactly(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let body = seed_job(&ds);
    let job = t.create_job(body.clone()).await;
    for key in ["fields", "mergePolicy", "filter", "additionalFields", "schema"] {
        assert_eq!(job[key], body[key], "{key} is not echoed as given");
    }
    assert_eq!(job["destination"]["datasetId"], ds.as_str());
    // The alias dataSetId is accepted.
    let mut alias = minimal_job(&ds);
    alias["destination"] = json!({"dataSetId": ds});
    assert_eq!(t.create_job(alias).await["destination"]["datasetId"], ds.as_str());
}

async fn segment_per_batch_allocates_one_batch_per_segment(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let job = t
        .create_job(json!({
            "destination": {"datasetId": ds, "segmentPerBatch": true},
            "schema": {"name": "_xdm.context.profile"},
            "filter": {"segments": [
                {"segmentId": "seg-a", "segmentNs": "AAM", "status": ["realized"]},
                {"segmentId": "seg-b"},
                {"segmentId": "seg-a", "status": ["exited"]}
            ]}
        }))
        .await;
    let dest = &job["destination"];
    assert!(dest.get("batchId").is_none(), "{dest}");
    let batches = dest["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0]["segmentId"], "seg-a");
    assert_eq!(batches[0]["segmentNs"], "AAM");
    assert_eq!(batches[0]["status"], json!(["realized"]));
    assert_eq!(batches[1]["segmentNs"], "ups");
    assert_eq!(batches[1]["status"], json!(["realized", "existing"]));
    assert_eq!(batches[2]["status"], json!(["exited"]));
    let ids: HashSet<_> =
        batches.iter().map(|b| b["batchId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 3);
    let listed = t.get(&format!("/data/foundation/catalog/batches?dataSet={ds}")).await;
    let listed: HashSet<_> = listed.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(listed, ids);
}

/// One rule per row: a change to a valid body and the field the 400 must name.
async fn every_field_rule_names_its_field(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing destination", json!({"destination": null}), "destination"),
        ("destination not an object", json!({"destination": "x"}), "destination"),
        ("missing datasetId", json!({"destination": {}}), "destination.datasetId"),
        (
            "malformed datasetId",
            json!({"destination": {"datasetId": "../../etc"}}),
            "destination.datasetId",
        ),
        ("datasetId wrong type", json!({"destination": {"datasetId": 5}}), "destination.datasetId"),
        (
            "conflicting alias",
            json!({"destination": {"datasetId": ds, "dataSetId": "5b7c86968f7b6501e21ba9df"}}),
            "destination.dataSetId",
        ),
        (
            "segmentPerBatch wrong type",
            json!({"destination": {"datasetId": ds, "segmentPerBatch": "true"}}),
            "destination.segmentPerBatch",
        ),
        (
            "segmentPerBatch without segments",
            json!({"destination": {"datasetId": ds, "segmentPerBatch": true}}),
            "destination.segmentPerBatch",
        ),
        ("missing schema", json!({"schema": null}), "schema"),
        ("missing schema name", json!({"schema": {}}), "schema.name"),
        (
            "other schema",
            json!({"schema": {"name": "_xdm.context.experienceevent"}}),
            "schema.name",
        ),
        ("fields wrong type", json!({"fields": ["a"]}), "fields"),
        ("fields empty segment", json!({"fields": "identities..id"}), "fields"),
        ("fields bad character", json!({"fields": "a b"}), "fields"),
        ("filter wrong type", json!({"filter": []}), "filter"),
        ("segments wrong type", json!({"filter": {"segments": {}}}), "filter.segments"),
        ("segments empty", json!({"filter": {"segments": []}}), "filter.segments"),
        (
            "segment without id",
            json!({"filter": {"segments": [{"segmentNs": "ups"}]}}),
            "filter.segments[0].segmentId",
        ),
        (
            "segment id blank",
            json!({"filter": {"segments": [{"segmentId": " "}]}}),
            "filter.segments[0].segmentId",
        ),
        ("segment not an object", json!({"filter": {"segments": ["s"]}}), "filter.segments[0]"),
        (
            "segmentNs empty",
            json!({"filter": {"segments": [{"segmentId": "s", "segmentNs": ""}]}}),
            "filter.segments[0].segmentNs",
        ),
        (
            "status not array",
            json!({"filter": {"segments": [{"segmentId": "s", "status": "realized"}]}}),
            "filter.segments[0].status",
        ),
        (
            "status empty",
            json!({"filter": {"segments": [{"segmentId": "s", "status": []}]}}),
            "filter.segments[0].status",
        ),
        (
            "status unknown",
            json!({"filter": {"segments": [{"segmentId": "s", "status": ["realized", "gone"]}]}}),
            "filter.segments[0].status[1]",
        ),
        (
            "qualification without segments",
            json!({"filter": {"segmentQualificationTime": {"startTime": "2018-01-01T00:00:00Z"}}}),
            "filter.segmentQualificationTime",
        ),
        (
            "qualification start bad",
            json!({"filter": {"segments": [{"segmentId": "s"}], "segmentQualificationTime": {"startTime": "2018-01-01"}}}),
            "filter.segmentQualificationTime.startTime",
        ),
        (
            "qualification end before start",
            json!({"filter": {"segments": [{"segmentId": "s"}], "segmentQualificationTime": {"startTime": "2018-02-01T00:00:00Z", "endTime": "2018-01-01T00:00:00Z"}}}),
            "filter.segmentQualificationTime.endTime",
        ),
        (
            "fromIngestTimestamp bad",
            json!({"filter": {"fromIngestTimestamp": "yesterday"}}),
            "filter.fromIngestTimestamp",
        ),
        (
            "emptyProfiles wrong type",
            json!({"filter": {"emptyProfiles": "true"}}),
            "filter.emptyProfiles",
        ),
        ("additionalFields wrong type", json!({"additionalFields": 1}), "additionalFields"),
        (
            "eventList wrong type",
            json!({"additionalFields": {"eventList": []}}),
            "additionalFields.eventList",
        ),
        (
            "event fields bad",
            json!({"additionalFields": {"eventList": {"fields": "a,,b.", "filter": {}}}}),
            "additionalFields.eventList.fields",
        ),
        (
            "event from bad",
            json!({"additionalFields": {"eventList": {"filter": {"fromIngestTimestamp": "x"}}}}),
            "additionalFields.eventList.filter.fromIngestTimestamp",
        ),
        (
            "event window empty",
            json!({"additionalFields": {"eventList": {"filter": {"fromIngestTimestamp": "2020-01-01T00:00:00Z", "toIngestTimestamp": "2019-01-01T00:00:00Z"}}}}),
            "additionalFields.eventList.filter.toIngestTimestamp",
        ),
        ("mergePolicy wrong type", json!({"mergePolicy": "x"}), "mergePolicy"),
        ("mergePolicy without id", json!({"mergePolicy": {"version": 1}}), "mergePolicy.id"),
        (
            "mergePolicy version not positive",
            json!({"mergePolicy": {"id": "timestampOrdered-none-mp", "version": 0}}),
            "mergePolicy.version",
        ),
        (
            "mergePolicy version fraction",
            json!({"mergePolicy": {"id": "timestampOrdered-none-mp", "version": 1.5}}),
            "mergePolicy.version",
        ),
        (
            "segment evaluation",
            json!({"evaluationInfo": {"segmentation": true}}),
            "evaluationInfo.segmentation",
        ),
        (
            "evaluationInfo wrong type",
            json!({"evaluationInfo": {"segmentation": "no"}}),
            "evaluationInfo.segmentation",
        ),
    ];
    for (name, change, field) in cases {
        let mut body = minimal_job(&ds);
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = t.post("/export/jobs", body).await;
        a.assert_service_error(400);
        assert!(
            a.error_fields().iter().any(|f| f == field),
            "{name}: expected {field}, got {}",
            a.text
        );
        let title = a.body["title"].as_str().unwrap();
        assert!(title.contains(field), "{name}: title {title:?} does not name {field}");
    }
    // An unknown key is a 400 naming it; a body that is not an object or not JSON is a 400.
    let mut extra = minimal_job(&ds);
    extra["somethingNew"] = json!({"x": 1});
    assert_eq!(t.post("/export/jobs", extra).await.error_fields(), ["somethingNew"]);
    for raw in ["[1,2]", "{\"destination\":", "", "null"] {
        let req = Request::post("/export/jobs")
            .header("authorization", "Bearer x")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", ORG)
            .header("x-sandbox-name", SANDBOX)
            .header("content-type", "application/json")
            .body(Body::from(raw))
            .unwrap();
        let a = t.send(req).await;
        a.assert_service_error(400);
        assert_eq!(a.error_fields(), ["body"], "{raw:?}");
    }
}

async fn several_invalid_fields_are_all_named(backend: Backend) {
    let t = TestApp::new(backend).await;
    // Header, body and catalog references are all checked in one go.
    let req = Request::post("/export/jobs")
        .header("authorization", "Bearer x")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", ORG)
        .header("x-sandbox-name", SANDBOX)
        .header("x-profile-instance-id", "bad id")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"destination": {"datasetId": "5b7c86968f7b6501e21ba9df"}, "schema": {"name": "nope"}, "mergePolicy": {"id": "missing"}})
                .to_string(),
        ))
        .unwrap();
    let a = t.send(req).await;
    a.assert_service_error(400);
    assert_eq!(
        a.error_fields(),
        ["x-profile-instance-id", "schema.name", "destination.datasetId", "mergePolicy.id"]
    );
    // An invalid segment entry is not also reported as a missing one.
    let ds = t.export_dataset().await;
    let a = t
        .post(
            "/export/jobs",
            json!({"destination": {"datasetId": ds, "segmentPerBatch": true}, "schema": {"name": "_xdm.context.profile"}, "filter": {"segments": [{"segmentId": 5}]}}),
        )
        .await;
    assert_eq!(a.error_fields(), ["filter.segments[0].segmentId"]);
    let a = t
        .post(
            "/export/jobs",
            json!({"destination": {"datasetId": "nope"}, "schema": {"name": "x"}, "fields": "a..b"}),
        )
        .await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["destination.datasetId", "schema.name", "fields"]);
}

async fn destination_must_be_an_export_dataset(backend: Backend) {
    let t = TestApp::new(backend).await;
    let unknown = t.post("/export/jobs", minimal_job("5b7c86968f7b6501e21ba9df")).await;
    unknown.assert_service_error(400);
    assert_eq!(unknown.error_fields(), ["destination.datasetId"]);
    let profile = t.dataset_as(ORG, SANDBOX, "https://ns.adobe.com/xdm/context/profile").await;
    let a = t.post("/export/jobs", minimal_job(&profile)).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["destination.datasetId"]);
    // A dataset of another sandbox does not exist here.
    let elsewhere = t.dataset_as(ORG, "dev", UNION).await;
    let a = t.post("/export/jobs", minimal_job(&elsewhere)).await;
    assert_eq!(a.error_fields(), ["destination.datasetId"]);
}

async fn merge_policy_rules(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let with_policy = |policy: Value| {
        let mut b = minimal_job(&ds);
        b["mergePolicy"] = policy;
        b
    };
    let a = t.post("/export/jobs", with_policy(json!({"id": "no-such-policy"}))).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["mergePolicy.id"]);
    let a = t
        .post("/export/jobs", with_policy(json!({"id": "timestampOrdered-none-mp", "version": 2})))
        .await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["mergePolicy.version"]);
    // Version absent means the latest.
    let job = t.create_job(with_policy(json!({"id": "timestampOrdered-none-mp"}))).await;
    assert_eq!(job["mergePolicy"], json!({"id": "timestampOrdered-none-mp", "version": 1}));
    // A stitching policy is refused until stitching exists.
    let pdg = t
        .post(
            "/data/core/ups/config/mergePolicies",
            json!({"name": "pdg", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "pdg"}, "attributeMerge": {"type": "timestampOrdered"}}),
        )
        .await;
    assert_eq!(pdg.status, StatusCode::OK, "{}", pdg.text);
    let a = t.post("/export/jobs", with_policy(json!({"id": pdg.body["id"]}))).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["mergePolicy.id"]);
}

async fn merge_policy_is_stored_with_the_job(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let policy = json!({
        "name": "prec", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"},
        "attributeMerge": {"type": "dataSetPrecedence", "order": [ds]}, "default": true
    });
    let created = t.post("/data/core/ups/config/mergePolicies", policy.clone()).await;
    let pid = created.body["id"].as_str().unwrap().to_owned();
    // Without mergePolicy the sandbox's default (now this one) is used.
    let job = t.create_job(minimal_job(&ds)).await;
    assert_eq!(job["mergePolicy"], json!({"id": pid, "version": 1}));
    // A later edit does not change the queued job.
    let mut edited = policy;
    edited["name"] = json!("renamed");
    let put = t
        .call(Method::PUT, &format!("/data/core/ups/config/mergePolicies/{pid}"), Some(edited))
        .await;
    assert_eq!(put.body["version"], 2);
    let again = t.get(&format!("/export/jobs/{}", job["id"])).await;
    assert_eq!(again.body["mergePolicy"], json!({"id": pid, "version": 1}));
    // The policy is in use by a queued job: it cannot be deleted.
    let t2 = t.post("/data/core/ups/config/mergePolicies", json!({
        "name": "other", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"},
        "attributeMerge": {"type": "timestampOrdered"}, "default": true
    })).await;
    assert_eq!(t2.status, StatusCode::OK);
    let del =
        t.call(Method::DELETE, &format!("/data/core/ups/config/mergePolicies/{pid}"), None).await;
    del.assert_service_error(409);
    t.call(Method::DELETE, &format!("/export/jobs/{}", job["id"]), None).await;
    let del =
        t.call(Method::DELETE, &format!("/data/core/ups/config/mergePolicies/{pid}"), None).await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.text);
}

async fn get_one_and_unknown_ids(backend: Backend) {
    let t = TestApp::new(backend).await;
    for path in [
        "/export/jobs/999",
        "/export/jobs/abc",
        "/export/jobs/-1",
        "/export/jobs/0",
        "/export/jobs/99999999999999999999",
    ] {
        let a = t.get(path).await;
        a.assert_service_error(404);
        let d = t.call(Method::DELETE, path, None).await;
        d.assert_service_error(404);
    }
}

async fn list_validates_its_parameters(backend: Backend) {
    let t = TestApp::new(backend).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("status=DONE", "status"),
        ("offset=abc", "offset"),
        ("offset=12_", "offset"),
        ("offset=-5", "offset"),
        ("offset=1_2_3", "offset"),
    ] {
        let a = t.get(&format!("/export/jobs?{query}")).await;
        a.assert_service_error(400);
        assert_eq!(a.error_fields(), [field], "{query}");
    }
    let a = t.get("/export/jobs?limit=0&status=x").await;
    assert_eq!(a.error_fields(), ["limit", "status"]);
    // Empty list: a JSON body with an empty `next`.
    let a = t.get("/export/jobs").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["records"], json!([]));
    assert_eq!(a.body["link"]["next"], "");
    assert_eq!(a.body["page"]["pageSize"], 0);
    assert_eq!(a.body["page"]["sortField"], "createdTime");
    assert_eq!(a.body["page"]["sort"], "desc");
}

fn next_path(page: &Value) -> Option<String> {
    let next = page["link"]["next"].as_str().expect("link.next is a string");
    (!next.is_empty()).then(|| {
        assert!(next.starts_with("/export/jobs/?") && next.contains("offset="), "{next}");
        next.to_owned()
    })
}

fn ids(page: &Value) -> Vec<i64> {
    page["records"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

async fn list_pages_with_keyset_cursor_during_concurrent_inserts(backend: Backend) {
    let t = Arc::new(TestApp::new(backend).await);
    let ds = t.export_dataset().await;
    let mut existing = Vec::new();
    for _ in 0..23 {
        existing.push(t.create_job(minimal_job(&ds)).await["id"].as_i64().unwrap());
    }
    // Keep creating jobs while the client pages through.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inserter = {
        let (t, ds, stop) = (t.clone(), ds.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                t.create_job(minimal_job(&ds)).await;
                n += 1;
            }
            n
        })
    };
    let mut seen = Vec::new();
    let mut path = "/export/jobs?limit=5".to_owned();
    let mut pages = 0;
    loop {
        let page = t.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let records = page.body["records"].as_array().unwrap();
        assert_eq!(page.body["page"]["pageSize"].as_u64(), Some(records.len() as u64));
        if let Some(last) = records.last() {
            let cursor = format!("{}_{}", last["creationTime"], last["id"]);
            assert_eq!(page.body["page"]["pageOffset"], cursor.as_str());
        }
        // Newest first: creation time then id, both descending.
        let keys: Vec<(i64, i64)> = records
            .iter()
            .map(|r| (r["creationTime"].as_i64().unwrap(), r["id"].as_i64().unwrap()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] > w[1]), "{keys:?}");
        seen.extend(ids(&page.body));
        pages += 1;
        tokio::task::yield_now().await;
        match next_path(&page.body) {
            Some(next) => path = next,
            None => break,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let inserted = inserter.await.unwrap();
    let unique: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates across pages: {seen:?}");
    for id in &existing {
        assert!(
            unique.contains(id),
            "job {id} missing from the pages ({inserted} inserted meanwhile)"
        );
    }
    assert!(pages >= 5, "{pages} pages");
}

async fn list_filters_by_status_and_accepts_row_offsets(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let mut all = Vec::new();
    for _ in 0..6 {
        all.push(t.create_job(minimal_job(&ds)).await["id"].as_i64().unwrap());
    }
    all.reverse(); // newest first
    t.call(Method::DELETE, &format!("/export/jobs/{}", all[1]), None).await;
    t.call(Method::DELETE, &format!("/export/jobs/{}", all[4]), None).await;
    let failed = t.get("/export/jobs?status=FAILED&limit=1").await;
    assert_eq!(ids(&failed.body), [all[1]]);
    let next = next_path(&failed.body).unwrap();
    assert!(next.ends_with("&status=FAILED"), "{next}");
    let second = t.get(&next).await;
    assert_eq!(ids(&second.body), [all[4]]);
    assert_eq!(second.body["link"]["next"], "");
    let new = t.get("/export/jobs?status=new").await;
    assert_eq!(ids(&new.body), [all[0], all[2], all[3], all[5]]);
    assert!(t.get("/export/jobs?status=PROCESSING").await.body["records"]
        .as_array()
        .unwrap()
        .is_empty());
    // A plain integer offset skips rows.
    let skipped = t.get("/export/jobs?offset=2&limit=3").await;
    assert_eq!(ids(&skipped.body), all[2..5]);
    let next = next_path(&skipped.body).unwrap();
    assert_eq!(ids(&t.get(&next).await.body), all[5..]);
}

async fn delete_cancels_new_flags_processing_and_deletes_finished(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let expected = json!({"status": true, "message": "Export job has been marked for cancelling"});

    // NEW: fails at once as cancelled; its batch fails too.
    let job = t.create_job(minimal_job(&ds)).await;
    let id = job["id"].as_i64().unwrap();
    let d = t.call(Method::DELETE, &format!("/export/jobs/{id}"), None).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.body, expected);
    let after = t.get(&format!("/export/jobs/{id}")).await.body;
    assert_eq!(after["status"], "FAILED");
    assert_eq!(after["errors"][0]["code"], "EXPORT_CANCELLED");
    let end =
        after["metrics"]["totalTime"]["endTimeInMs"].as_i64().expect("end time once finished");
    let start = after["metrics"]["totalTime"]["startTimeInMs"].as_i64().unwrap();
    assert_eq!(after["metrics"]["totalTime"]["totalTimeInMs"].as_i64(), Some(end - start));
    let batch = job["destination"]["batchId"].as_str().unwrap();
    let b = t.get(&format!("/data/foundation/catalog/batches/{batch}")).await;
    assert_eq!(b.body[batch]["status"], "failed");

    // Finished: deleted; the batch stays.
    let d = t.call(Method::DELETE, &format!("/export/jobs/{id}"), None).await;
    assert_eq!(d.body, expected);
    t.get(&format!("/export/jobs/{id}")).await.assert_service_error(404);
    assert_eq!(
        t.get(&format!("/data/foundation/catalog/batches/{batch}")).await.status,
        StatusCode::OK
    );

    // PROCESSING: flagged for the worker, still PROCESSING.
    let running = t.create_job(minimal_job(&ds)).await["id"].as_i64().unwrap();
    t.force_status(running, "PROCESSING").await;
    let d = t.call(Method::DELETE, &format!("/export/jobs/{running}"), None).await;
    assert_eq!(d.body, expected);
    let after = t.get(&format!("/export/jobs/{running}")).await.body;
    assert_eq!(after["status"], "PROCESSING");
    assert!(after.get("errors").is_none());

    // SUCCEEDED: deleted.
    let done = t.create_job(minimal_job(&ds)).await["id"].as_i64().unwrap();
    t.force_status(done, "SUCCEEDED").await;
    assert_eq!(t.call(Method::DELETE, &format!("/export/jobs/{done}"), None).await.body, expected);
    t.get(&format!("/export/jobs/{done}")).await.assert_service_error(404);
}

async fn concurrent_creates_get_distinct_ids(backend: Backend) {
    let t = Arc::new(TestApp::new(backend).await);
    let ds = t.export_dataset().await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (t, ds) = (t.clone(), ds.clone());
            tokio::spawn(async move { t.create_job(minimal_job(&ds)).await })
        })
        .collect();
    let mut created = BTreeSet::new();
    let mut batches = BTreeSet::new();
    for task in tasks {
        let job = task.await.unwrap();
        created.insert(job["id"].as_i64().unwrap());
        batches.insert(job["destination"]["batchId"].as_str().unwrap().to_owned());
    }
    assert_eq!(created.len(), 100);
    assert_eq!(batches.len(), 100);
    let listed: BTreeSet<_> =
        ids(&t.get("/export/jobs?limit=1000").await.body).into_iter().collect();
    assert_eq!(listed, created);
}

async fn both_prefixes_and_trailing_slashes_route_alike(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let id = t.create_job(minimal_job(&ds)).await["id"].as_i64().unwrap();
    for path in [
        format!("/export/jobs/{id}"),
        format!("/export/jobs/{id}/"),
        format!("/data/core/ups/export/jobs/{id}"),
        format!("/data/core/ups/export/jobs/{id}/"),
    ] {
        let a = t.get(&path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        assert_eq!(a.body["id"], id);
    }
    for path in ["/export/jobs/", "/data/core/ups/export/jobs/", "/export/jobs/?limit=2"] {
        let a = t.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        assert_eq!(ids(&a.body), [id]);
    }
    let a = t.post("/data/core/ups/export/jobs/", minimal_job(&ds)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

/// A misspelled key is a 400 naming the closest valid one (it used to be dropped, and the job
/// exported every profile); AEP's read-only job keys are accepted and named in `warnings`; a
/// merge policy version written `1.0` is a version.
async fn unknown_keys_are_refused_and_aep_read_only_keys_named(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let mut body = minimal_job(&ds);
    body["filters"] = json!({"segments": [{"segmentId": "s"}]});
    let a = t.post("/export/jobs", body).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["filters"]);
    assert!(a.text.contains("unknown field `filters`; did you mean `filter`?"), "{}", a.text);
    assert!(t.get("/export/jobs").await.body["records"].as_array().unwrap().is_empty());

    let mut copied = minimal_job(&ds);
    copied["jobType"] = json!("BATCH");
    copied["status"] = json!("SUCCEEDED");
    copied["mergePolicy"] = json!({"id": "timestampOrdered-none-mp", "version": 1.0});
    let job = t.create_job(copied).await;
    assert_eq!(job["status"], "NEW");
    assert_eq!(job["mergePolicy"]["version"], 1);
    let warned: Vec<&str> = job["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert_eq!(w["code"], "IGNORED_FIELD");
            w["msg"].as_str().unwrap()
        })
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].starts_with("jobType ") && warned[1].starts_with("status "), "{warned:?}");
    // Stored with the job, not only echoed.
    let id = job["id"].as_i64().unwrap();
    assert_eq!(t.get(&format!("/export/jobs/{id}")).await.body["warnings"], job["warnings"]);
}
