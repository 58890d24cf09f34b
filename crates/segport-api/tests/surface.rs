//! Everything around the job operations: headers and tokens, error shapes, tenancy, the Catalog
//! and merge-policy endpoints, and the operational endpoints. Both catalog backends.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use segport_api::auth::issue_token;
use segport_api::AuthMode;
use segport_catalog::Backend;
use serde_json::{json, Value};

both_backends!(
    concurrent_default_policies_stay_consistent,
    header_errors_use_the_gateway_shape,
    content_types_and_body_limits,
    unknown_routes_and_methods_answer_json,
    client_compatibility,
    request_ids,
    tenants_see_only_their_own_objects,
    token_mode,
    datasets_follow_their_class_rules,
    datasets_are_patched_as_aep_clients_send_it,
    batch_views_validate_and_filter,
    merge_policy_endpoints,
    health_readiness_and_metrics,
);

fn request(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

fn with_headers(
    b: axum::http::request::Builder,
    skip: &[&str],
    extra: &[(&str, &str)],
) -> Request<Body> {
    let mut b = b;
    for (k, v) in [
        ("authorization", "Bearer t"),
        ("x-api-key", "k"),
        ("x-gw-ims-org-id", ORG),
        ("x-sandbox-name", SANDBOX),
    ] {
        if !skip.contains(&k) && !extra.iter().any(|(ek, _)| *ek == k) {
            b = b.header(k, v);
        }
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

async fn header_errors_use_the_gateway_shape(backend: Backend) {
    let t = TestApp::new(backend).await;
    let get = || request(Method::GET, "/export/jobs");
    t.send(with_headers(get(), &["authorization"], &[])).await.assert_gateway_error(401, "403010");
    for bad in ["Bearer ", "Basic abc", "token", "Bearer"] {
        t.send(with_headers(get(), &[], &[("authorization", bad)]))
            .await
            .assert_gateway_error(401, "401013");
    }
    t.send(with_headers(get(), &["x-api-key"], &[])).await.assert_gateway_error(403, "403000");
    t.send(with_headers(get(), &[], &[("x-api-key", "")]))
        .await
        .assert_gateway_error(403, "403000");
    t.send(with_headers(get(), &["x-gw-ims-org-id"], &[]))
        .await
        .assert_gateway_error(400, "400003");
    t.send(with_headers(get(), &["x-sandbox-name"], &[])).await.assert_gateway_error(400, "400003");
    for org in ["..", ".", "a/b", "a b", ""] {
        t.send(with_headers(get(), &[], &[("x-gw-ims-org-id", org)]))
            .await
            .assert_gateway_error(400, "400003");
    }
    for sandbox in ["Prod", "a_b", "", &"x".repeat(65)] {
        t.send(with_headers(get(), &[], &[("x-sandbox-name", sandbox)]))
            .await
            .assert_gateway_error(400, "400003");
    }
    // Non-ASCII header bytes are refused, not mangled.
    let req = Request::get("/export/jobs")
        .header("authorization", "Bearer t")
        .header("x-api-key", "k")
        .header("x-gw-ims-org-id", axum::http::HeaderValue::from_bytes(b"org\xff").unwrap())
        .header("x-sandbox-name", SANDBOX)
        .body(Body::empty())
        .unwrap();
    t.send(req).await.assert_gateway_error(400, "400003");
    // Every tenant route checks headers, not only the job routes.
    for path in [
        "/data/foundation/catalog/dataSets",
        "/data/foundation/catalog/batches",
        "/data/core/ups/config/mergePolicies",
    ] {
        t.send(with_headers(request(Method::GET, path), &["authorization"], &[]))
            .await
            .assert_gateway_error(401, "403010");
    }
}

async fn content_types_and_body_limits(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let body = minimal_job(&ds).to_string();
    let post = |ct: Option<&str>, body: String| {
        let mut b = Request::post("/export/jobs")
            .header("authorization", "Bearer t")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", ORG)
            .header("x-sandbox-name", SANDBOX);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    t.send(post(None, body.clone())).await.assert_service_error(415);
    t.send(post(Some("text/plain"), body.clone())).await.assert_service_error(415);
    t.send(post(Some("application/x-www-form-urlencoded"), body.clone()))
        .await
        .assert_service_error(415);
    assert_eq!(t.send(post(Some("application/json"), body.clone())).await.status, StatusCode::OK);
    assert_eq!(
        t.send(post(Some("Application/JSON; charset=UTF-8"), body.clone())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.send(post(Some("application/vnd.adobe.xdm+json"), body.clone())).await.status,
        StatusCode::OK
    );
    // Over 1 MiB: 413, in the service shape; just under is parsed (and validated).
    let mut big = minimal_job(&ds);
    big["padding"] = json!("x".repeat(1024 * 1024));
    t.send(post(Some("application/json"), big.to_string())).await.assert_service_error(413);
    let mut fits = minimal_job(&ds);
    fits["padding"] = json!("x".repeat(1024 * 1024 - 200));
    // Read whole and validated: the unknown key is named.
    let a = t.send(post(Some("application/json"), fits.to_string())).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["padding"]);
    // Wrong types deep inside are 400s, not 422s.
    let a = t.post("/export/jobs", json!({"destination": {"datasetId": ds}, "schema": {"name": "_xdm.context.profile"}, "filter": {"segments": [{"segmentId": 7}]}})).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["filter.segments[0].segmentId"]);
}

async fn unknown_routes_and_methods_answer_json(backend: Backend) {
    let t = TestApp::new(backend).await;
    for (method, path, status) in [
        (Method::GET, "/nope", 404),
        (Method::GET, "/export", 404),
        (Method::GET, "/export/jobs/1/extra", 404),
        (Method::PUT, "/export/jobs", 405),
        (Method::PATCH, "/export/jobs/1", 405),
        (Method::POST, "/export/jobs/1", 405),
        (Method::DELETE, "/data/foundation/catalog/batches", 405),
        (Method::POST, "/healthz", 405),
    ] {
        let a = t.send(with_headers(request(method.clone(), path), &[], &[])).await;
        a.assert_service_error(status);
        assert_eq!(a.headers["content-type"], "application/json", "{method} {path}");
    }
    // A path segment that is not valid UTF-8 once decoded is a JSON 404 too.
    let a = t.send(with_headers(request(Method::GET, "/export/jobs/%FF"), &[], &[])).await;
    a.assert_service_error(404);
}

async fn client_compatibility(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let id = t.create_job(minimal_job(&ds)).await["id"].as_i64().unwrap();
    // Content-Type on a GET or DELETE without a body, and either Accept, are served JSON.
    for accept in ["application/json", "application/vnd.adobe.xdm+json", "*/*"] {
        let a = t
            .send(with_headers(
                request(Method::GET, &format!("/export/jobs/{id}")),
                &[],
                &[("content-type", "application/json"), ("accept", accept)],
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{accept}: {}", a.text);
        assert_eq!(a.headers["content-type"], "application/json");
    }
    let a = t
        .send(with_headers(
            request(Method::DELETE, &format!("/export/jobs/{id}")),
            &[],
            &[("content-type", "application/json")],
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // link.next is a string containing offset= whenever it is not empty.
    for _ in 0..3 {
        t.create_job(minimal_job(&ds)).await;
    }
    let page = t.get("/export/jobs?limit=2").await;
    let next = page.body["link"]["next"].as_str().expect("string");
    assert!(next.contains("offset=") && next.contains("limit=2"), "{next}");
}

async fn request_ids(backend: Backend) {
    let t = TestApp::new(backend).await;
    let a = t
        .send(with_headers(
            request(Method::GET, "/export/jobs/77"),
            &[],
            &[("x-request-id", "abc-1")],
        ))
        .await;
    a.assert_service_error(404);
    assert_eq!(a.body["requestId"], "abc-1");
    assert_eq!(a.headers["x-request-id"], "abc-1");
    // Without one, a UUID is made and reported.
    let a = t.get("/export/jobs/77").await;
    let rid = a.body["requestId"].as_str().unwrap();
    assert_eq!(a.headers["x-request-id"], rid);
    assert_eq!(rid.len(), 36);
    // An unusable one (too long, spaces) is replaced by a fresh UUID, never an error.
    for bad in ["x".repeat(129), "a b".to_owned()] {
        let a = t
            .send(with_headers(
                request(Method::GET, "/export/jobs/77"),
                &[],
                &[("x-request-id", &bad)],
            ))
            .await;
        a.assert_service_error(404);
        assert_eq!(a.body["requestId"].as_str().unwrap().len(), 36);
    }
}

async fn tenants_are_isolated_for(t: &TestApp, org: &str, sandbox: &str, job: &Value, ds: &str) {
    let id = job["id"].as_i64().unwrap();
    let batch = job["destination"]["batchId"].as_str().unwrap();
    let as_other = |m: Method, p: String| async move { t.call_as(org, sandbox, m, &p, None).await };
    as_other(Method::GET, format!("/export/jobs/{id}")).await.assert_service_error(404);
    as_other(Method::DELETE, format!("/export/jobs/{id}")).await.assert_service_error(404);
    as_other(Method::GET, format!("/data/foundation/catalog/dataSets/{ds}"))
        .await
        .assert_service_error(404);
    as_other(Method::GET, format!("/data/foundation/catalog/batches/{batch}"))
        .await
        .assert_service_error(404);
    let list = as_other(Method::GET, "/export/jobs".into()).await;
    assert_eq!(list.body["records"], json!([]));
    let sets = as_other(Method::GET, "/data/foundation/catalog/dataSets".into()).await;
    assert_eq!(sets.body, json!({}));
    let batches = as_other(Method::GET, "/data/foundation/catalog/batches".into()).await;
    assert_eq!(batches.body, json!({}));
    // Another tenant cannot export into this tenant's dataset either.
    let a = t.call_as(org, sandbox, Method::POST, "/export/jobs", Some(minimal_job(ds))).await;
    a.assert_service_error(400);
}

async fn tenants_see_only_their_own_objects(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.export_dataset().await;
    let job = t.create_job(minimal_job(&ds)).await;
    tenants_are_isolated_for(&t, "OtherOrg@AdobeOrg", SANDBOX, &job, &ds).await;
    tenants_are_isolated_for(&t, ORG, "dev", &job, &ds).await;
    // The owner still sees everything, and the cancel attempts above changed nothing.
    let own = t.get(&format!("/export/jobs/{}", job["id"])).await;
    assert_eq!(own.body["status"], "NEW");
    // Merge policies are per sandbox too.
    let p = t
        .post(
            "/data/core/ups/config/mergePolicies",
            json!({"name": "p", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"}, "attributeMerge": {"type": "timestampOrdered"}}),
        )
        .await;
    let pid = p.body["id"].as_str().unwrap();
    t.call_as(ORG, "dev", Method::GET, &format!("/data/core/ups/config/mergePolicies/{pid}"), None)
        .await
        .assert_service_error(404);
}

async fn token_mode(backend: Backend) {
    let t = TestApp::with_auth(backend, AuthMode::Token).await;
    let good = issue_token(ORG, None);
    t.db.catalog.insert_token(&good.record).await.unwrap();
    let expired = issue_token(ORG, Some(std::time::Duration::from_millis(1)));
    t.db.catalog.insert_token(&expired.record).await.unwrap();
    let revoked = issue_token(ORG, None);
    t.db.catalog.insert_token(&revoked.record).await.unwrap();
    t.db.catalog.revoke_token(&revoked.record.id, 1).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let call = |token: &str, org: &str| {
        Request::get("/export/jobs")
            .header("authorization", format!("Bearer {token}"))
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", org)
            .header("x-sandbox-name", SANDBOX)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(t.send(call(&good.secret, ORG)).await.status, StatusCode::OK);
    t.send(call(&good.secret, "OtherOrg")).await.assert_gateway_error(403, "403025");
    t.send(call("spt_not-a-token", ORG)).await.assert_gateway_error(401, "401013");
    t.send(call(&expired.secret, ORG)).await.assert_gateway_error(401, "401013");
    t.send(call(&revoked.secret, ORG)).await.assert_gateway_error(401, "401013");
    // Without an org header, a token acts for its own org (a segport addition); the token is
    // still checked, and the sandbox header still needed.
    let without_org = |token: &str, sandbox: Option<&str>, body: Option<Value>| {
        let mut request = Request::builder()
            .method(if body.is_some() { Method::POST } else { Method::GET })
            .uri("/data/foundation/catalog/dataSets")
            .header("authorization", format!("Bearer {token}"))
            .header("x-api-key", "k")
            .header("content-type", "application/json");
        if let Some(sandbox) = sandbox {
            request = request.header("x-sandbox-name", sandbox);
        }
        request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap()
    };
    let dataset = json!({"name": "mine", "schemaRef": {"id": UNION}});
    let made = t.send(without_org(&good.secret, Some(SANDBOX), Some(dataset))).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let id = made.body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    let listed = t.send(without_org(&good.secret, Some(SANDBOX), None)).await;
    assert_eq!(listed.body[&id]["imsOrg"], ORG, "{}", listed.text);
    t.send(without_org(&revoked.secret, Some(SANDBOX), None))
        .await
        .assert_gateway_error(401, "401013");
    let no_sandbox = t.send(without_org(&good.secret, None, None)).await;
    assert_eq!(no_sandbox.status, StatusCode::BAD_REQUEST, "{}", no_sandbox.text);
    // The stored record holds only the hash.
    let stored = t.db.catalog.list_tokens().await.unwrap();
    assert!(stored.iter().all(|r| !r.token_sha256.contains(&good.secret)));
    assert!(stored.iter().any(|r| r.token_sha256 == segport_api::auth::token_sha256(&good.secret)));
}

async fn datasets_follow_their_class_rules(backend: Backend) {
    let t = TestApp::new(backend).await;
    let path = "/data/foundation/catalog/dataSets";
    let create = |body: Value| t.post(path, body);
    let union = create(json!({"name": "u", "schemaRef": {"id": UNION}, "description": "d", "tags": {"team": ["a"]}})).await;
    assert_eq!(union.status, StatusCode::CREATED, "{}", union.text);
    let reference = union.body[0].as_str().unwrap();
    let id = reference.strip_prefix("@/dataSets/").unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let one = t.get(&format!("{path}/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    let obj = &one.body[id];
    assert_eq!(obj["name"], "u");
    assert_eq!(obj["description"], "d");
    assert_eq!(obj["schemaRef"]["id"], UNION);
    assert_eq!(obj["tags"]["team"], json!(["a"]));
    assert_eq!(obj["imsOrg"], ORG);

    // A tenant's own schema needs a class tag.
    let custom = "https://ns.adobe.com/acme/schemas/abc";
    let a = create(json!({"name": "c", "schemaRef": {"id": custom}})).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["schemaRef.id"]);
    let a = create(
        json!({"name": "c", "schemaRef": {"id": custom}, "tags": {"segport:class": ["nope"]}}),
    )
    .await;
    assert_eq!(a.error_fields(), ["tags.segport:class"]);
    let tagged = create(json!({"name": "c", "schemaRef": {"id": custom}, "tags": {"segport:class": ["export"], "unifiedProfile": ["enabled:true"]}})).await;
    assert_eq!(tagged.status, StatusCode::CREATED);
    let tagged_id = tagged.body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    // A tagged export dataset is a valid job destination.
    assert_eq!(t.post("/export/jobs", minimal_job(&tagged_id)).await.status, StatusCode::OK);
    for (body, field) in [
        (json!({"schemaRef": {"id": UNION}}), "name"),
        (json!({"name": "x"}), "schemaRef"),
        (json!({"name": "x", "schemaRef": {}}), "schemaRef.id"),
        (json!({"name": "x", "schemaRef": {"id": UNION}, "tags": {"k": "v"}}), "tags.k"),
        (json!({"name": 5, "schemaRef": {"id": UNION}}), "name"),
        (json!({"name": "a\u{0}b", "schemaRef": {"id": UNION}}), "name"),
        (json!({"name": "x", "description": "\u{0}", "schemaRef": {"id": UNION}}), "description"),
    ] {
        let a = create(body).await;
        a.assert_service_error(400);
        assert_eq!(a.error_fields(), [field]);
    }
    let list = t.get(path).await;
    let keys: Vec<_> = list.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&id.to_owned()) && keys.contains(&tagged_id));
    assert_eq!(t.get(&format!("{path}?limit=1")).await.body.as_object().unwrap().len(), 1);
    assert_eq!(t.get(&format!("{path}?limit=1&start=1")).await.body.as_object().unwrap().len(), 1);
    t.get(&format!("{path}?limit=101")).await.assert_service_error(400);
    t.get(&format!("{path}/not-an-id")).await.assert_service_error(400);
    t.get(&format!("{path}/5b7c86968f7b6501e21ba9df")).await.assert_service_error(404);
}

/// `PATCH /dataSets/{id}` as AEP documents it and aepp's `enableDatasetProfile` sends it (JSON
/// Patch), or as a plain object; `POST` answers the new dataset's `Location`.
async fn datasets_are_patched_as_aep_clients_send_it(backend: Backend) {
    let t = TestApp::new(backend).await;
    let path = "/data/foundation/catalog/dataSets";
    let created = t.post(path, json!({"name": "p", "schemaRef": {"id": PROFILE_SCHEMA}})).await;
    let id = created.body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    let location = created.headers["location"].to_str().unwrap();
    assert!(location.ends_with(&format!("{path}/{id}")), "{location}");
    let patch = |body: Value, content_type: &'static str| {
        let request = request(Method::PATCH, &format!("{path}/{id}"))
            .header("authorization", "Bearer x")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", ORG)
            .header("x-sandbox-name", SANDBOX)
            .header("content-type", content_type)
            .body(Body::from(body.to_string()))
            .unwrap();
        t.send(request)
    };
    let tags = || async { t.get(&format!("{path}/{id}")).await.body[&id]["tags"].clone() };

    // Profile off: a batch loads, but feeds nothing into the profile store.
    let record = json!({"identityMap": {"ECID": [{"id": "a"}]}, "loyalty": {"points": 1}});
    let file = || vec![("f.json", format!("{record}\n").into_bytes())];
    let (_, off) = t.ingest(&id, json!({"format": "json"}), file()).await;
    assert_eq!(off["status"], "success");
    assert!(t.stored(&id, segport_store::RecordKind::Profile).await.is_empty());

    let enable = json!([{"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]}]);
    let a = patch(enable, "application/json-patch+json").await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &json!([format!("@/dataSets/{id}")])));
    assert_eq!(tags().await, json!({"unifiedProfile": ["enabled:true"]}));
    // From then on its batches feed the store.
    t.ingest(&id, json!({"format": "json"}), file()).await;
    assert_eq!(t.stored(&id, segport_store::RecordKind::Profile).await.len(), 1);

    // A plain object replaces what it names, tags key by key.
    let a = patch(json!({"name": "renamed", "tags": {"team": ["a"]}}), "application/json").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let now = t.get(&format!("{path}/{id}")).await.body[&id].clone();
    assert_eq!(now["name"], "renamed");
    assert_eq!(now["tags"], json!({"team": ["a"], "unifiedProfile": ["enabled:true"]}));
    let ops = json!([
        {"op": "remove", "path": "/tags/team"},
        {"op": "replace", "path": "/description", "value": "d"},
    ]);
    // `replace` needs the member to exist: no description yet, so nothing changes at all.
    let a = patch(ops, "application/json-patch+json").await;
    assert_eq!(a.error_fields(), ["body[1].path"]);
    assert_eq!(tags().await["team"], json!(["a"]));
    let ops = json!([
        {"op": "remove", "path": "/tags/team"},
        {"op": "add", "path": "/description", "value": "d"},
    ]);
    assert_eq!(patch(ops, "application/json-patch+json").await.status, StatusCode::OK);
    assert_eq!(tags().await, json!({"unifiedProfile": ["enabled:true"]}));

    // Catalog's fields segport does not keep are accepted and change nothing.
    let ignored = json!({"fileDescription": {"format": "parquet"}, "enableErrorDiagnostics": true});
    assert_eq!(patch(ignored, "application/json").await.status, StatusCode::OK);
    assert_eq!(tags().await, json!({"unifiedProfile": ["enabled:true"]}));
    for (body, field) in [
        (json!({"tagz": {}}), "tagz"),
        (json!([{"op": "move", "path": "/name"}]), "body[0].op"),
        (json!([{"op": "add", "path": "/schemaRef", "value": {}}]), "body[0].path"),
        (json!([{"op": "add", "path": "/tags/x"}]), "body[0].value"),
        (json!([{"op": "remove", "path": "/name"}]), "name"),
        (json!({"schemaRef": {"id": UNION}}), "schemaRef"),
        (json!("x"), "body"),
    ] {
        let a = patch(body.clone(), "application/json").await;
        a.assert_service_error(400);
        assert_eq!(a.error_fields(), [field], "{body}");
    }
    let other = format!("{path}/5b7c86968f7b6501e21ba9df");
    let a = t.call(Method::PATCH, &other, Some(json!({"name": "x"}))).await;
    a.assert_service_error(404);
}

async fn batch_views_validate_and_filter(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds1 = t.export_dataset().await;
    let ds2 = t.export_dataset().await;
    let j1 = t.create_job(minimal_job(&ds1)).await;
    let j2 = t.create_job(minimal_job(&ds2)).await;
    let b1 = j1["destination"]["batchId"].as_str().unwrap();
    let b2 = j2["destination"]["batchId"].as_str().unwrap();
    t.call(Method::DELETE, &format!("/export/jobs/{}", j2["id"]), None).await;
    let path = "/data/foundation/catalog/batches";
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&t.get(&format!("{path}?dataSet={ds1}")).await.body), [b1]);
    assert_eq!(keys(&t.get(&format!("{path}?status=failed")).await.body), [b2]);
    assert_eq!(
        keys(&t.get(&format!("{path}?status=loading&dataSet={ds2}")).await.body),
        Vec::<String>::new()
    );
    assert_eq!(t.get(path).await.body.as_object().unwrap().len(), 2);
    let one = t.get(&format!("{path}/{b1}")).await;
    assert_eq!(one.body[b1]["tags"]["segport:exportJobId"], json!([j1["id"].to_string()]));
    let a = t.get(&format!("{path}?status=done&dataSet=x")).await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["dataSet", "status"]);
    t.get(&format!("{path}/XYZ")).await.assert_service_error(400);
    t.get(&format!("{path}/{}", "0".repeat(32))).await.assert_service_error(404);
}

async fn merge_policy_endpoints(backend: Backend) {
    let t = TestApp::new(backend).await;
    let path = "/data/core/ups/config/mergePolicies";
    let list = t.get(path).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let children = list.body["children"].as_array().unwrap();
    assert_eq!(children.len(), 1);
    let builtin = &children[0];
    assert_eq!(builtin["id"], "timestampOrdered-none-mp");
    assert_eq!(builtin["version"], 1);
    assert_eq!(builtin["default"], true);
    assert_eq!(builtin["identityGraph"], json!({"type": "none"}));
    assert_eq!(builtin["attributeMerge"], json!({"type": "timestampOrdered"}));
    assert_eq!(builtin["schema"], json!({"name": "_xdm.context.profile"}));
    assert_eq!(list.body["_page"]["count"], 1);

    let body = json!({"name": "mine", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"}, "attributeMerge": {"type": "timestampOrdered"}});
    let created = t.post(path, body.clone()).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["default"], false);
    assert_eq!(created.body["imsOrgId"], ORG);
    assert_eq!(t.get(&format!("{path}/{id}")).await.body, created.body);

    // PUT replaces and bumps the version; PATCH changes only what it names.
    let mut replaced = body.clone();
    replaced["name"] = json!("renamed");
    let put = t.call(Method::PUT, &format!("{path}/{id}"), Some(replaced)).await;
    assert_eq!(put.body["version"], 2);
    assert_eq!(put.body["name"], "renamed");
    let patch =
        t.call(Method::PATCH, &format!("{path}/{id}"), Some(json!({"default": true}))).await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    assert_eq!(patch.body["version"], 3);
    assert_eq!(patch.body["name"], "renamed");
    assert_eq!(patch.body["default"], true);
    let builtin = t.get(&format!("{path}/timestampOrdered-none-mp")).await;
    assert_eq!(builtin.body["default"], false);
    // JSON Patch as Adobe documents it (dotted paths), all or nothing.
    let ops = json!([
        {"op": "add", "path": "/name", "value": "patched"},
        {"op": "add", "path": "/attributeMerge.type", "value": "timestampOrdered"},
    ]);
    let patched = t.call(Method::PATCH, &format!("{path}/{id}"), Some(ops)).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(
        (patched.body["version"].as_i64(), patched.body["name"].as_str()),
        (Some(4), Some("patched"))
    );
    let ops = json!([{"op": "add", "path": "/name", "value": "x"}, {"op": "add", "path": "/id", "value": "y"}]);
    let a = t.call(Method::PATCH, &format!("{path}/{id}"), Some(ops)).await;
    assert_eq!(a.error_fields(), ["body[1].path"]);
    assert_eq!(t.get(&format!("{path}/{id}")).await.body["name"], "patched");

    // Invalid bodies name their fields; unknown ids are 404; the default cannot be deleted.
    let a = t.post(path, json!({"name": "x", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "x"}, "attributeMerge": {"type": "dataSetPrecedence", "order": ["bad"]}})).await;
    a.assert_service_error(400);
    assert_eq!(
        a.error_fields(),
        ["identityGraph.type", "attributeMerge.order[0]", "attributeMerge.order"]
    );
    let a = t
        .call(
            Method::PATCH,
            &format!("{path}/{id}"),
            Some(json!({"attributeMerge": {"type": "timestampOrdered", "order": []}})),
        )
        .await;
    assert_eq!(a.error_fields(), ["attributeMerge.order"]);
    t.call(Method::PUT, &format!("{path}/nope"), Some(body.clone()))
        .await
        .assert_service_error(404);
    t.get(&format!("{path}/no%20such")).await.assert_service_error(400);
    t.call(Method::DELETE, &format!("{path}/{id}"), None).await.assert_service_error(409);
    t.call(Method::PATCH, &format!("{path}/{id}"), Some(json!({"default": false})))
        .await
        .assert_service_error(409);
    // Make the built-in the default again, then the custom one can go.
    t.call(
        Method::PATCH,
        &format!("{path}/timestampOrdered-none-mp"),
        Some(json!({"default": true})),
    )
    .await;
    let del = t.call(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.text);
    t.get(&format!("{path}/{id}")).await.assert_service_error(404);
    t.call(Method::DELETE, &format!("{path}/{id}"), None).await.assert_service_error(404);
    // Paging.
    for i in 0..3 {
        let mut b = body.clone();
        b["name"] = json!(format!("p{i}"));
        t.post(path, b).await;
    }
    let page = t.get(&format!("{path}?limit=2")).await;
    assert_eq!(page.body["children"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["_page"]["next"], "2");
    let rest = t.get(&format!("{path}?limit=2&start=2")).await;
    assert_eq!(rest.body["children"].as_array().unwrap().len(), 2);
    assert_eq!(rest.body["_page"]["next"], "");
}

async fn health_readiness_and_metrics(backend: Backend) {
    let t = TestApp::new(backend).await;
    let plain = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let h = t.send(plain("/healthz")).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    let r = t.send(plain("/readyz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["catalog"], backend.as_str());

    let ds = t.export_dataset().await;
    t.create_job(minimal_job(&ds)).await;
    t.get("/export/jobs/12345").await;
    let response = {
        use tower::ServiceExt;
        t.app.clone().oneshot(plain("/metrics")).await.unwrap()
    };
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.contains(
            r#"segport_http_requests_total{route="/export/jobs",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"segport_http_requests_total{route="/export/jobs/{id}",method="GET",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"segport_http_request_duration_seconds_count{route="/export/jobs",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    // Tenants' figures are not on the API port, only on the metrics address.
    assert!(!text.contains("segport_export_jobs") && !text.contains(ORG), "{text}");
    let response = {
        use tower::ServiceExt;
        segport_api::metrics_app(t.state.clone()).oneshot(plain("/metrics")).await.unwrap()
    };
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let line = format!(r#"segport_export_jobs{{org="{ORG}",sandbox="{SANDBOX}",status="NEW"}} 1"#);
    assert!(text.contains(&line), "{text}");
    assert!(!text.contains(r#"status="FAILED""#), "no series for a status without jobs: {text}");
    // The one job's task waits for a worker (none runs here).
    let queued = format!(
        r#"segport_tasks{{org="{ORG}",sandbox="{SANDBOX}",kind="export",state="queued"}} 1"#
    );
    let running = format!(
        r#"segport_tasks{{org="{ORG}",sandbox="{SANDBOX}",kind="export",state="running"}} 0"#
    );
    assert!(text.contains(&queued) && text.contains(&running), "{text}");
    assert!(!text.contains(r#"kind="ingest""#), "no series for a kind without tasks: {text}");
    assert!(text.contains("segport_http_requests_total"), "{text}");
}

/// A catalog that cannot be reached answers 503 in the service shape, on /readyz and on API calls.
#[tokio::test]
async fn unreachable_catalog_is_a_503() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
        .unwrap();
    let catalog = std::sync::Arc::new(segport_catalog::PgCatalog::from_pool(pool));
    let (storage, dir) = temp_storage();
    let app = segport_api::app(
        segport_api::AppState::new(catalog, storage, AuthMode::Dev),
        segport_api::Surface::Full,
    );
    let _cleanup = scopeguard(dir);
    use tower::ServiceExt;
    for req in [
        Request::get("/readyz").body(Body::empty()).unwrap(),
        with_headers(request(Method::GET, "/export/jobs"), &[], &[]),
    ] {
        let response = app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes =
            http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["status"], 503);
        assert!(body["type"].as_str().unwrap().ends_with("-503"));
    }
    // Liveness does not depend on the catalog.
    let response =
        app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Policies made default concurrently: every request answers, and exactly one default remains.
async fn concurrent_default_policies_stay_consistent(backend: Backend) {
    let t = std::sync::Arc::new(TestApp::new(backend).await);
    let path = "/data/core/ups/config/mergePolicies";
    t.get(path).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                t.post(path, json!({"name": format!("p{i}"), "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"}, "attributeMerge": {"type": "timestampOrdered"}, "default": true}))
                    .await
                    .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let list = t.get(&format!("{path}?limit=100")).await;
    let defaults =
        list.body["children"].as_array().unwrap().iter().filter(|p| p["default"] == true).count();
    assert_eq!(defaults, 1);
}

/// Removes a directory when dropped.
struct DirGuard(std::path::PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scopeguard(dir: std::path::PathBuf) -> DirGuard {
    DirGuard(dir)
}
