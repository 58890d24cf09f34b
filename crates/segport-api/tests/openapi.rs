//! `/openapi.json` describes exactly what the router serves: every (path, method) the router
//! answers is documented, and every documented one is answered. The router's side is found
//! without the description: its paths from the router itself, its methods by asking.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use common::*;
use segport_api::Surface;
use segport_catalog::Backend;
use serde_json::Value;
use tower::ServiceExt;

both_backends!(the_description_matches_the_router);

const METHODS: [Method; 5] =
    [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// Every path template the router holds, read from its debug form (axum has no route listing).
fn router_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let mut paths = BTreeSet::new();
    for piece in debug.split('"').skip(1).step_by(2) {
        // The console's pages are not API routes (they are left out of the description).
        if piece.starts_with('/') && !piece.starts_with(segport_api::CONSOLE_PREFIX) {
            paths.insert(piece.to_owned());
        }
    }
    paths
}

/// A concrete path for a template: every parameter gets a plausible value.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|part| if part.starts_with('{') { "0123456789abcdef01234567" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

/// The (template, method) pairs `surface`'s router answers.
async fn served(t: &TestApp, surface: Surface) -> BTreeSet<(String, String)> {
    let router = segport_api::router(t.state.clone(), surface);
    let paths = router_paths(&router);
    assert!(paths.len() >= 4, "no paths found in the router's debug form: {router:?}");
    let mut served = BTreeSet::new();
    for template in paths {
        for method in METHODS {
            let request = Request::builder()
                .method(method.clone())
                .uri(concrete(&template))
                .header("authorization", "Bearer t")
                .header("x-api-key", "k")
                .header("x-gw-ims-org-id", ORG)
                .header("x-sandbox-name", SANDBOX)
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            // 405 is a path without this method; the fallback's 404 a path not routed at all.
            if status == 405 || (status == 404 && text.contains("no route for")) {
                continue;
            }
            served.insert((template.replace("{*", "{"), method.as_str().to_owned()));
        }
    }
    served
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.as_str().to_lowercase()).is_some() {
                documented.insert((path.clone(), method.as_str().to_owned()));
            }
        }
    }
    documented
}

async fn the_description_matches_the_router(backend: Backend) {
    let t = TestApp::new(backend).await;
    let answer = t.get("/openapi.json").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let doc = answer.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let served_full = served(&t, Surface::Full).await;
    assert_eq!(served_full, documented(&doc), "router (left) and /openapi.json (right) differ");
    // The job routes are served at AEP's path and at the alias, with distinct operation ids.
    for path in ["/data/core/ups/export/jobs", "/export/jobs", "/data/foundation/catalog/dataSets"]
    {
        assert!(served_full.contains(&(path.to_owned(), "POST".to_owned())), "{path}");
    }
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            if let Some(id) = operation.get("operationId").and_then(Value::as_str) {
                assert!(ids.insert(id.to_owned()), "operationId {id} appears twice");
            }
        }
    }
    // Every path parameter of a template is declared.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for part in path.split('/').filter(|p| p.starts_with('{')) {
                let name = part.trim_matches(|c| c == '{' || c == '}');
                assert!(declared.contains(name), "{path}: parameter {name} is not declared");
            }
        }
    }
    // A worker serves the operational endpoints only, and describes just those.
    let ops = segport_api::openapi_document(Surface::OpsOnly);
    let ops = serde_json::to_value(&ops).unwrap();
    assert_eq!(served(&t, Surface::OpsOnly).await, documented(&ops));
    assert!(documented(&ops).iter().all(|(p, _)| !p.starts_with("/data")));
}

/// The schema at `schema`, its `$ref` followed and an `Option`'s `oneOf [null, T]` unwrapped.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    loop {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.trim_start_matches("#/components/schemas/");
            schema = &doc["components"]["schemas"][name];
        } else if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let not_null: Vec<_> = options.iter().filter(|o| o["type"] != "null").collect();
            assert_eq!(not_null.len(), 1, "an unexpected oneOf: {schema}");
            schema = not_null[0];
        } else {
            return schema;
        }
    }
}

/// Asserts that the object schema at `path` has exactly the keys of `table`, no others allowed,
/// and recurses into the keys segport reads.
fn same_keys(doc: &Value, schema: &Value, table: &[segport_model::Key], path: &str) {
    use segport_model::KeyRole;
    let schema = resolve(doc, schema);
    assert_eq!(schema["additionalProperties"], false, "{path} allows other keys: {schema}");
    let documented: BTreeSet<&str> =
        schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let accepted: BTreeSet<&str> = table.iter().map(|k| k.name).collect();
    assert_eq!(documented, accepted, "the keys of {path}");
    for key in table {
        let property = &schema["properties"][key.name];
        let here = format!("{path}.{}", key.name);
        match &key.role {
            KeyRole::Read(children) if !children.is_empty() => {
                same_keys(doc, property, children, &here)
            }
            KeyRole::ReadEach(children) => {
                let array = resolve(doc, property);
                same_keys(doc, &array["items"], children, &format!("{here}[]"))
            }
            _ => {}
        }
    }
}

/// The export job body's schema and the validator's table of keys name the same keys at every
/// level, and the schema allows no others: a fuzzer that follows the description sends no body
/// the validator refuses for an unknown key.
#[test]
fn the_job_body_schema_lists_exactly_the_accepted_keys() {
    let doc = serde_json::to_value(segport_api::openapi_document(Surface::Full)).unwrap();
    let body = &doc["paths"]["/data/core/ups/export/jobs"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    same_keys(&doc, body, segport_model::job::EXPORT_JOB_KEYS, "body");
}

/// Every `$ref` of the description names a schema it holds (a fuzzer cannot test an operation
/// whose parameters point nowhere).
#[test]
fn every_reference_resolves() {
    fn walk(v: &Value, doc: &Value, missing: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    let name = r.trim_start_matches("#/components/schemas/");
                    if doc["components"]["schemas"].get(name).is_none() {
                        missing.push(r.to_owned());
                    }
                }
                o.values().for_each(|c| walk(c, doc, missing));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, doc, missing)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(segport_api::openapi_document(Surface::Full)).unwrap();
    let mut missing = Vec::new();
    walk(&doc, &doc, &mut missing);
    assert!(missing.is_empty(), "unresolved: {missing:?}");
}
