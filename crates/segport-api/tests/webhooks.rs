//! Webhooks end to end: endpoints through the API, events from real status changes, delivered
//! by the dispatcher to a receiver in this test that checks every signature as the Standard
//! Webhooks specification says (its own HMAC, not segport's), answers 500 to see retries, and
//! sees each event type; rotation signs with both secrets; refused addresses are never called.
//! Both catalog backends.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use segport_webhooks::{AddressPolicy, DispatchConfig, Dispatcher, RetryPolicy};
use serde_json::{json, Value};

both_backends!(
    events_arrive_signed_and_retried,
    refused_addresses_are_never_called,
    failing_endpoints_are_disabled
);

const ENDPOINTS: &str = "/segport/webhooks/endpoints";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signatures: Vec<String>,
    body: String,
}

/// A webhook receiver on loopback: records every request and answers each path's scripted
/// statuses in turn (204 once the script is used up).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Received)>>>,
    script: Arc<Mutex<BTreeMap<String, Vec<u16>>>>,
}

impl Receiver {
    async fn start(&self) -> std::net::SocketAddr {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/{path}",
            axum::routing::post(
                move |axum::extract::Path(path): axum::extract::Path<String>,
                      headers: HeaderMap,
                      body: String| {
                    let me = me.clone();
                    async move {
                        let header = |n: &str| {
                            headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
                        };
                        let received = Received {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp"),
                            signatures: header("webhook-signature")
                                .split(' ')
                                .map(str::to_owned)
                                .collect(),
                            body,
                        };
                        me.got.lock().unwrap().push((path.clone(), received));
                        let status = me
                            .script
                            .lock()
                            .unwrap()
                            .get_mut(&path)
                            .and_then(|s| (!s.is_empty()).then(|| s.remove(0)))
                            .unwrap_or(204);
                        let mut response = axum::response::Response::new(axum::body::Body::empty());
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        if status == 302 {
                            response
                                .headers_mut()
                                .insert("location", "/elsewhere".parse().unwrap());
                        }
                        response
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, r)| r.clone()).collect()
    }
}

/// The specification's check, written here from it: HMAC-SHA256 keyed with the base64 part of
/// the `whsec_` secret over `{id}.{timestamp}.{body}`, base64, as `v1,{signature}`.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(&secret["whsec_".len()..]).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    r.signatures.contains(&expected)
}

fn dispatcher(t: &TestApp, allow_loopback: bool, window: Duration) -> Dispatcher {
    let addresses = if allow_loopback {
        AddressPolicy::parse(&["127.0.0.0/8".into(), "::1".into()]).unwrap()
    } else {
        AddressPolicy::default()
    };
    let config = DispatchConfig {
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            first: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            window,
        },
        addresses,
        ..Default::default()
    };
    Dispatcher::new(t.db.catalog.clone(), config).unwrap()
}

/// Dispatches until `done` holds (or fails after 10 s, saying what `received` shows).
async fn dispatch_until(d: &Dispatcher, receiver: &Receiver, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        d.dispatch_once().await.unwrap();
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got: Vec<(String, String)> = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|(path, r)| (path.clone(), r.body.chars().take(60).collect()))
        .collect();
    panic!("the deliveries did not arrive; received: {got:#?}");
}

async fn create_endpoint(t: &TestApp, url: String, events: Option<Value>) -> Value {
    let mut body = json!({"url": url, "description": "test"});
    if let Some(events) = events {
        body["events"] = events;
    }
    let a = t.post(ENDPOINTS, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.body["secret"].as_str().unwrap().starts_with("whsec_"));
    a.body
}

async fn events_arrive_signed_and_retried(setup: Setup) {
    let t = TestApp::new(setup).await;
    let receiver = Receiver::default();
    let address = receiver.start().await;
    // The first two attempts of the first request are refused with 500.
    receiver.script.lock().unwrap().insert("all".into(), vec![500, 500]);
    let all = create_endpoint(&t, format!("http://{address}/all"), None).await;
    let secret = all["secret"].as_str().unwrap().to_owned();
    let endpoint = all["id"].as_str().unwrap().to_owned();
    // The secret is shown once: never in a read or a list.
    let read = t.get(&format!("{ENDPOINTS}/{endpoint}")).await;
    assert!(!read.text.contains(&secret) && read.body["secret"].is_null());
    assert!(!t.get(ENDPOINTS).await.text.contains(&secret));
    let only_failed = create_endpoint(
        &t,
        format!("http://{address}/failed"),
        Some(json!(["export.failed", "ingest.failed"])),
    )
    .await;

    // Each event, from a real change.
    let input = t.store_dataset(PROFILE_SCHEMA).await;
    let ds = t.export_dataset().await;
    let records = "{\"identityMap\": {\"ECID\": [{\"id\": \"p1\", \"primary\": true}]}}\n";
    t.ingest(&input, json!({"format": "json"}), vec![("a.json", records.as_bytes().to_vec())])
        .await;
    let (_, failed_batch) = t
        .ingest(&input, json!({"format": "json"}), vec![("b.json", b"{\"x\": 1}\n".to_vec())])
        .await;
    assert_eq!(failed_batch["status"], "failed");
    let succeeded = t.create_job(minimal_job(&ds)).await;
    assert_eq!(t.run_tasks().await, 1);
    let cancelled = t.create_job(minimal_job(&ds)).await;
    assert_eq!(
        t.call(Method::DELETE, &format!("/export/jobs/{}", cancelled["id"]), None).await.status,
        200
    );
    let failed = t.create_job(minimal_job(&ds)).await;
    let worker = segport_worker::Worker::new(t.worker_context(small_limits()));
    let task = t.claim(&worker).await;
    let error = segport_model::batch::BatchError {
        code: "INTERNAL".into(),
        description: "boom".into(),
        rows: Vec::new(),
    };
    assert!(t
        .db
        .catalog
        .fail_task(&task.lease, &[error], segport_model::time::now_ms())
        .await
        .unwrap());
    // schedule.missed: a due time with the previous run still NEW (every second, so that the
    // scheduler's clock, which dates the event, stays within a second or two of the
    // dispatcher's).
    let a = t
        .post("/data/core/ups/config/schedules", json!({"name": "s", "type": "export", "schedule": "* * * * * ?", "state": "active", "properties": {"exportJob": minimal_job(&ds)}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let due = a.body["nextDueTime"].as_i64().unwrap();
    assert_eq!(segport_api::scheduler::fire_due(&t.state, due).await.unwrap(), 1);
    assert_eq!(segport_api::scheduler::fire_due(&t.state, due + 1_000).await.unwrap(), 1);

    let d = dispatcher(&t, true, Duration::from_secs(60));
    let wanted = [
        "ingest.succeeded",
        "ingest.failed",
        "export.succeeded",
        "export.cancelled",
        "export.failed",
        "schedule.missed",
    ];
    dispatch_until(&d, &receiver, || {
        let types: BTreeSet<String> = receiver
            .at("all")
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
            .map(|v| v["type"].as_str().unwrap().to_owned())
            .collect();
        wanted.iter().all(|w| types.contains(*w)) && receiver.at("failed").len() >= 2
    })
    .await;
    let got = receiver.at("all");
    // Every request verifies, with a timestamp of now (seconds).
    let now_s = segport_model::time::now_ms() / 1000;
    for r in &got {
        assert!(verifies(&secret, r), "signature of {r:?}");
        assert!((r.timestamp.parse::<i64>().unwrap() - now_s).abs() < 60);
        assert!(r.id.starts_with("msg_"));
    }
    // The two refused attempts were retried with the same webhook-id; every event arrived
    // once it was answered 2xx.
    let mut by_id: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for r in &got {
        by_id.entry(r.id.as_str()).or_default().push(r);
    }
    assert_eq!(by_id.len(), wanted.len(), "one message per event: {:?}", by_id.keys());
    // Deliveries go out concurrently, so the two refusals may hit one message twice or two
    // once: either way each refused attempt was followed by another with its webhook-id.
    let attempts: usize = by_id.values().map(Vec::len).sum();
    assert_eq!(attempts, wanted.len() + 2, "every event once, plus the two refused attempts");
    assert!(by_id.values().any(|rs| rs.len() > 1));
    let payloads: BTreeMap<String, Value> = by_id
        .values()
        .map(|rs| {
            assert!(rs.iter().all(|r| r.body == rs[0].body), "a retry carries the same payload");
            let v: Value = serde_json::from_str(&rs[0].body).unwrap();
            (v["type"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    assert_eq!(payloads["export.succeeded"]["data"]["id"], succeeded["id"]);
    assert_eq!(payloads["export.succeeded"]["data"]["status"], "SUCCEEDED");
    assert_eq!(payloads["export.cancelled"]["data"]["id"], cancelled["id"]);
    assert_eq!(payloads["export.failed"]["data"]["id"], failed["id"]);
    assert_eq!(payloads["ingest.failed"]["data"]["status"], "failed");
    assert_eq!(payloads["schedule.missed"]["data"]["dueTime"], due + 1_000);
    // A cancelled job reports only its cancellation.
    let about_cancelled = payloads.values().filter(|p| p["data"]["id"] == cancelled["id"]).count();
    assert_eq!(about_cancelled, 1);
    // The filtered endpoint got its two kinds only.
    let filtered: BTreeSet<String> = receiver
        .at("failed")
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(filtered, BTreeSet::from(["export.failed".to_owned(), "ingest.failed".to_owned()]));
    let filtered_secret = only_failed["secret"].as_str().unwrap();
    assert!(receiver.at("failed").iter().all(|r| verifies(filtered_secret, r)));
    // The delivery log: every delivery delivered, its attempts counted.
    let log = t.get(&format!("{ENDPOINTS}/{endpoint}/deliveries")).await.body;
    let entries = log["children"].as_array().unwrap();
    assert_eq!(entries.len(), wanted.len());
    assert!(entries.iter().all(|e| e["state"] == "delivered"), "{log}");
    let logged: i64 = entries.iter().map(|e| e["attempts"].as_i64().unwrap()).sum();
    assert_eq!(logged, attempts as i64, "{log}");

    // Rotation: for a day, deliveries carry a signature by each secret.
    let rotated = t.post(&format!("{ENDPOINTS}/{endpoint}/rotate-secret"), json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let before = got.len();
    let test = t.post(&format!("{ENDPOINTS}/{endpoint}/test"), json!({})).await;
    assert_eq!(test.status, 202, "{}", test.text);
    dispatch_until(&d, &receiver, || receiver.at("all").len() > before).await;
    let last = receiver.at("all").pop().unwrap();
    assert_eq!(last.id, test.body["webhookId"].as_str().unwrap());
    assert_eq!(last.signatures.len(), 2, "{last:?}");
    assert!(verifies(&secret, &last) && verifies(&new_secret, &last));
    assert_eq!(serde_json::from_str::<Value>(&last.body).unwrap()["type"], "segport.test");
    // Another sandbox sees no endpoint.
    t.call_as(ORG, "dev", Method::GET, &format!("{ENDPOINTS}/{endpoint}"), None)
        .await
        .assert_service_error(404);
}

async fn refused_addresses_are_never_called(setup: Setup) {
    let t = TestApp::new(setup).await;
    let receiver = Receiver::default();
    let address = receiver.start().await;
    let port = address.port();
    receiver.script.lock().unwrap().insert("redirect".into(), vec![302; 10]);
    let mut ids = Vec::new();
    for url in [
        format!("http://localhost:{port}/name"), // a name that resolves to loopback
        format!("http://127.0.0.1:{port}/literal"),
        format!("http://[::ffff:127.0.0.1]:{port}/mapped"),
        "http://10.0.0.1/private".to_owned(),
        "http://169.254.169.254/metadata".to_owned(),
    ] {
        let e = create_endpoint(&t, url, None).await;
        ids.push(e["id"].as_str().unwrap().to_owned());
        assert_eq!(
            t.post(&format!("{ENDPOINTS}/{}/test", e["id"].as_str().unwrap()), json!({}))
                .await
                .status,
            202
        );
    }
    // Without loopback allowed, every attempt fails before any connection.
    let d = dispatcher(&t, false, Duration::from_secs(60));
    for _ in 0..3 {
        d.dispatch_once().await.unwrap();
    }
    assert!(receiver.got.lock().unwrap().is_empty(), "a refused address was called");
    for (id, kind) in
        ids.iter().zip(["loopback", "loopback", "IPv4-mapped", "private", "link-local"])
    {
        let log = t.get(&format!("{ENDPOINTS}/{id}/deliveries")).await.body;
        let entry = &log["children"][0];
        assert_eq!(entry["state"], "pending", "{log}");
        let error = entry["lastError"].as_str().unwrap();
        assert!(error.contains(kind) && error.contains("--webhook-allow-network"), "{id}: {error}");
    }
    // Redirects are not followed, even to an allowed address.
    let e = create_endpoint(&t, format!("http://127.0.0.1:{port}/redirect"), None).await;
    t.post(&format!("{ENDPOINTS}/{}/test", e["id"].as_str().unwrap()), json!({})).await;
    let d = dispatcher(&t, true, Duration::from_secs(60));
    dispatch_until(&d, &receiver, || !receiver.at("redirect").is_empty()).await;
    let log = t.get(&format!("{ENDPOINTS}/{}/deliveries", e["id"].as_str().unwrap())).await.body;
    assert!(
        log["children"][0]["lastError"].as_str().unwrap().contains("redirects are not followed"),
        "{log}"
    );
    assert_eq!(log["children"][0]["lastStatus"], 302);
    assert!(receiver.at("elsewhere").is_empty(), "the redirect's target was not called");
    // Endpoint URLs are checked in form at the edge.
    for url in ["ftp://x/", "http://user:pw@example.com/", "example.com/hook"] {
        t.post(ENDPOINTS, json!({"url": url})).await.assert_service_error(400);
    }
}

async fn failing_endpoints_are_disabled(setup: Setup) {
    let t = TestApp::new(setup).await;
    let receiver = Receiver::default();
    let address = receiver.start().await;
    receiver.script.lock().unwrap().insert("down".into(), vec![503; 1000]);
    let e = create_endpoint(&t, format!("http://{address}/down"), None).await;
    let id = e["id"].as_str().unwrap().to_owned();
    t.post(&format!("{ENDPOINTS}/{id}/test"), json!({})).await;
    // A retry window of half a second: retried, then given up and disabled, saying why.
    let d = dispatcher(&t, true, Duration::from_millis(500));
    let mut disabled = Value::Null;
    for _ in 0..200 {
        d.dispatch_once().await.unwrap();
        disabled = t.get(&format!("{ENDPOINTS}/{id}")).await.body;
        if disabled["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(disabled["enabled"], false, "{disabled}");
    assert!(disabled["disabledReason"].as_str().unwrap().contains("503"), "{disabled}");
    assert!(receiver.at("down").len() >= 2, "retried before giving up");
    let log = t.get(&format!("{ENDPOINTS}/{id}/deliveries")).await.body;
    assert_eq!(log["children"][0]["state"], "failed");
    // Disabled: a test event is refused; re-enabled, it is sent again.
    t.post(&format!("{ENDPOINTS}/{id}/test"), json!({})).await.assert_service_error(409);
    receiver.script.lock().unwrap().clear();
    let a =
        t.call(Method::PATCH, &format!("{ENDPOINTS}/{id}"), Some(json!({"enabled": true}))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.body["disabledReason"].is_null());
    assert_eq!(t.post(&format!("{ENDPOINTS}/{id}/test"), json!({})).await.status, 202);
    let before = receiver.at("down").len();
    dispatch_until(&d, &receiver, || receiver.at("down").len() > before).await;
}
