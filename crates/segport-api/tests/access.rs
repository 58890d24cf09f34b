//! Reads in the api process. The profile access API (`/data/core/ups/access/entities`) against
//! a naive oracle: profiles with fragments in two datasets ingested one after the other, and
//! events replaced by a later batch, are read back one by one and must equal a plain merge of
//! the records sent. Previews (`/segport/preview/export`) refuse what a create refuses; their
//! counts are checked against the export oracle in tests/export.rs.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

both_backends!(
    profiles_are_read_by_key_as_the_oracle_merges_them,
    look_ups_refuse_what_they_cannot_answer,
    previews_refuse_what_a_create_refuses,
);

on_s3!(profiles_are_read_by_key_as_the_oracle_merges_them);

const ENTITIES: &str = "/data/core/ups/access/entities";

fn ndjson(records: &[Value]) -> Vec<u8> {
    records.iter().map(|r| format!("{r}\n")).collect::<String>().into_bytes()
}

fn profile(id: &str, attributes: Value) -> Value {
    let mut r = json!({"identityMap": {"ECID": [{"id": id, "primary": true}]}});
    r.as_object_mut().unwrap().extend(attributes.as_object().unwrap().clone());
    r
}

/// Leaves of `top` win; objects merge.
fn overlay(base: &mut Map<String, Value>, top: &Map<String, Value>) {
    for (k, v) in top {
        if k == "identityMap" {
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

/// The attributes of an answered entity (identities left out).
fn attributes(entity: &Value) -> Map<String, Value> {
    let mut m = entity.as_object().unwrap().clone();
    for k in ["identityMap", "identities", "segmentMembership"] {
        m.remove(k);
    }
    m
}

fn entities_of(i: usize) -> String {
    format!("{ENTITIES}?schema.name=_xdm.context.profile&entityIdNS=ECID&entityId=p{i}")
}

async fn profiles_are_read_by_key_as_the_oracle_merges_them(setup: Setup) {
    let t = TestApp::new(setup).await;
    let a = t.store_dataset(PROFILE_SCHEMA).await;
    let b = t.store_dataset(PROFILE_SCHEMA).await;
    let e = t.store_dataset(EVENT_SCHEMA).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let n = 60;
    let cities = ["Basel", "Lyon", "Porto"];
    let mut first = Vec::new();
    let mut second: BTreeMap<usize, Value> = BTreeMap::new();
    for i in 0..n {
        let mut attrs = json!({"person": {"name": {"firstName": format!("F{i}a")}}});
        if rng.gen_bool(0.5) {
            attrs["homeAddress"] = json!({"city": cities[rng.gen_range(0..3)]});
        }
        first.push(profile(&format!("p{i}"), attrs));
        if rng.gen_bool(0.5) {
            let mut attrs = json!({"person": {"name": {"lastName": format!("L{i}b")}}});
            if rng.gen_bool(0.5) {
                attrs["person"]["name"]["firstName"] = json!(format!("F{i}b"));
            }
            if rng.gen_bool(0.5) {
                attrs["homeAddress"] = json!({"city": "Oslo"});
            }
            second.insert(i, profile(&format!("p{i}"), attrs));
        }
    }
    let (_, batch_a) =
        t.ingest(&a, json!({"format": "json"}), vec![("a.json", ndjson(&first))]).await;
    let later: Vec<Value> = second.values().cloned().collect();
    let (_, batch_b) =
        t.ingest(&b, json!({"format": "json"}), vec![("b.json", ndjson(&later))]).await;
    let (a_done, b_done) =
        (batch_a["completed"].as_i64().unwrap(), batch_b["completed"].as_i64().unwrap());
    let policy = t
        .post(
            "/data/core/ups/config/mergePolicies",
            json!({"name": "a first", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "none"}, "attributeMerge": {"type": "dataSetPrecedence", "order": [a, b]}}),
        )
        .await;
    let policy_id = policy.body["id"].as_str().unwrap().to_owned();

    for (i, fragment_a) in first.iter().enumerate() {
        let fragment_a = fragment_a.as_object().unwrap();
        let fragment_b = second.get(&i).map(|v| v.as_object().unwrap());
        // The default policy: the later dataset's leaves win.
        let mut newest = Map::new();
        overlay(&mut newest, fragment_a);
        if let Some(f) = fragment_b {
            overlay(&mut newest, f);
        }
        let got = t.get(&entities_of(i)).await;
        assert_eq!(got.status, 200, "p{i}: {}", got.text);
        let answer = &got.body[format!("ECID:p{i}")];
        assert_eq!(answer["entityId"], format!("ECID:p{i}"), "{}", got.text);
        assert_eq!(attributes(&answer["entity"]), newest, "p{i} timestamp-ordered");
        assert_eq!(answer["entity"]["identityMap"]["ECID"][0]["id"], format!("p{i}"));
        let mut sources = vec![a.clone()];
        if fragment_b.is_some() {
            sources.push(b.clone());
        }
        sources.sort();
        assert_eq!(answer["sources"], json!(sources), "p{i}");
        let modified = if fragment_b.is_some() { b_done } else { a_done };
        let at = chrono::DateTime::parse_from_rfc3339(answer["lastModifiedAt"].as_str().unwrap());
        assert_eq!(at.unwrap().timestamp_millis(), modified, "p{i}");
        assert!(answer["mergePolicy"]["id"].is_string());

        // Dataset precedence, a first: a's leaves win over b's.
        let mut a_first = Map::new();
        if let Some(f) = fragment_b {
            overlay(&mut a_first, f);
        }
        overlay(&mut a_first, fragment_a);
        let got = t.get(&format!("{}&mergePolicyId={policy_id}", entities_of(i))).await;
        let answer = &got.body[format!("ECID:p{i}")];
        assert_eq!(attributes(&answer["entity"]), a_first, "p{i} dataset precedence");
        assert_eq!(answer["mergePolicy"]["id"], policy_id);

        // `fields` keeps what it names.
        let got = t.get(&format!("{}&fields=person.name.firstName", entities_of(i))).await;
        let entity = &got.body[format!("ECID:p{i}")]["entity"];
        assert_eq!(
            *entity,
            json!({"person": {"name": {"firstName": newest["person"]["name"]["firstName"]}}}),
            "p{i} fields"
        );
    }
    let unknown = t
        .get(&format!(
            "{ENTITIES}?schema.name=_xdm.context.profile&entityIdNS=ECID&entityId=nobody"
        ))
        .await;
    unknown.assert_service_error(404);
    // A non-primary namespace is not a key.
    let other_ns = t
        .get(&format!("{ENTITIES}?schema.name=_xdm.context.profile&entityIdNS=Email&entityId=p1"))
        .await;
    other_ns.assert_service_error(404);

    // Events: six per profile for p0..p9, then a second batch replacing two of each (same
    // `_id`, new content and timestamp).
    let base = 1_750_000_000_000_i64;
    let mut sent: BTreeMap<(usize, String), (i64, Value)> = BTreeMap::new();
    let event = |i: usize, n: usize, ts: i64, label: &str| {
        json!({
            "_id": format!("e{i}-{n}"),
            "timestamp": chrono::DateTime::from_timestamp_millis(ts).unwrap().to_rfc3339(),
            "eventType": label,
            "identityMap": {"ECID": [{"id": format!("p{i}"), "primary": true}]},
        })
    };
    let mut batch1 = Vec::new();
    let mut batch2 = Vec::new();
    for i in 0..10 {
        for n in 0..6 {
            // Whole seconds, some equal, to exercise ties.
            let ts = base + 1000 * rng.gen_range(0..4_i64);
            let ev = event(i, n, ts, "web.view");
            sent.insert((i, format!("e{i}-{n}")), (ts, ev.clone()));
            batch1.push(ev);
        }
        for n in [1, 4] {
            let ts = base + 1000 * rng.gen_range(0..4_i64);
            let ev = event(i, n, ts, "web.replaced");
            sent.insert((i, format!("e{i}-{n}")), (ts, ev.clone()));
            batch2.push(ev);
        }
    }
    t.ingest(&e, json!({"format": "json"}), vec![("e1.json", ndjson(&batch1))]).await;
    t.ingest(&e, json!({"format": "json"}), vec![("e2.json", ndjson(&batch2))]).await;
    let events_of = |i: usize, rest: &str| {
        format!(
            "{ENTITIES}?schema.name=_xdm.context.experienceevent&relatedSchema.name=\
             _xdm.context.profile&relatedEntityIdNS=ECID&relatedEntityId=p{i}{rest}"
        )
    };
    for i in 0..10 {
        // The oracle: the latest version of each `_id`, ordered by timestamp then `_id`.
        let mut want: Vec<(i64, String, String)> = sent
            .iter()
            .filter(|((p, _), _)| *p == i)
            .map(|((_, id), (ts, ev))| {
                (*ts, id.clone(), ev["eventType"].as_str().unwrap().to_owned())
            })
            .collect();
        want.sort();
        let got = t.get(&events_of(i, "")).await;
        assert_eq!(got.status, 200, "{}", got.text);
        let children = got.body["children"].as_array().unwrap();
        let seen: Vec<(i64, String, String)> = children
            .iter()
            .map(|c| {
                (
                    c["timestamp"].as_i64().unwrap(),
                    c["entityId"].as_str().unwrap().to_owned(),
                    c["entity"]["eventType"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(seen, want, "p{i} events");
        assert!(children.iter().all(|c| c["relatedEntityId"] == format!("ECID:p{i}")));

        // A window [start, end) on the timestamp, newest first.
        let (start, end) = (base + 1000, base + 3000);
        let got = t
            .get(&events_of(i, &format!("&startTime={start}&endTime={end}&orderby=-timestamp")))
            .await;
        let mut inside: Vec<&(i64, String, String)> =
            want.iter().filter(|(ts, _, _)| *ts >= start && *ts < end).collect();
        inside.reverse();
        let times: Vec<i64> = got.body["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["timestamp"].as_i64().unwrap())
            .collect();
        assert_eq!(times, inside.iter().map(|w| w.0).collect::<Vec<_>>(), "p{i} window");

        // Pages of two, followed by their links, give every event once.
        let mut href = events_of(i, "&limit=2");
        let mut paged = Vec::new();
        for _ in 0..20 {
            let got = t.get(&href).await;
            assert_eq!(got.status, 200, "{href}: {}", got.text);
            for c in got.body["children"].as_array().unwrap() {
                paged.push(c["entityId"].as_str().unwrap().to_owned());
            }
            match got.body["_links"]["next"]["href"].as_str() {
                Some(next) if !next.is_empty() => href = next.to_owned(),
                _ => break,
            }
        }
        assert_eq!(paged, want.iter().map(|w| w.1.clone()).collect::<Vec<_>>(), "p{i} pages");
    }
    // A profile with events only has no fragments, but is found by its events' identities.
    let events_only = profile("lonely", json!({}));
    let mut ev = event(99, 0, base, "web.view");
    ev["identityMap"] = events_only["identityMap"].clone();
    t.ingest(&e, json!({"format": "json"}), vec![("e3.json", ndjson(&[ev]))]).await;
    let got = t
        .get(&format!(
            "{ENTITIES}?schema.name=_xdm.context.profile&entityIdNS=ECID&entityId=lonely"
        ))
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["ECID:lonely"]["sources"], json!([e]));
}

async fn look_ups_refuse_what_they_cannot_answer(setup: Setup) {
    let t = TestApp::new(setup).await;
    for (query, field) in [
        ("", "schema.name"),
        ("schema.name=_xdm.context.account&entityId=a&entityIdNS=b", "schema.name"),
        ("schema.name=_xdm.context.profile&entityId=a", "entityIdNS"),
        ("schema.name=_xdm.context.profile&entityIdNS=a", "entityId"),
        ("schema.name=_xdm.context.profile&entityId=a&entityIdNS=b&mergePolicyId=nope", "mergePolicyId"),
        ("schema.name=_xdm.context.profile&entityId=a&entityIdNS=b&fields=a..b", "fields"),
        ("schema.name=_xdm.context.experienceevent&relatedEntityId=a&relatedEntityIdNS=b", "relatedSchema.name"),
        ("schema.name=_xdm.context.experienceevent&relatedSchema.name=_xdm.context.profile&relatedEntityId=a&relatedEntityIdNS=b&limit=0", "limit"),
        ("schema.name=_xdm.context.experienceevent&relatedSchema.name=_xdm.context.profile&relatedEntityId=a&relatedEntityIdNS=b&orderby=name", "orderby"),
        ("schema.name=_xdm.context.experienceevent&relatedSchema.name=_xdm.context.profile&relatedEntityId=a&relatedEntityIdNS=b&startTime=soon", "startTime"),
    ] {
        let got = t.get(&format!("{ENTITIES}?{query}")).await;
        got.assert_service_error(400);
        assert!(got.error_fields().contains(&field.to_owned()), "{query}: {}", got.text);
    }
    // Identities past their length limit.
    let long = "x".repeat(1025);
    for (query, field) in [
        (format!("schema.name=_xdm.context.profile&entityIdNS=ECID&entityId={long}"), "entityId"),
        (format!("schema.name=_xdm.context.profile&entityIdNS={long}&entityId=a"), "entityIdNS"),
    ] {
        let got = t.get(&format!("{ENTITIES}?{query}")).await;
        got.assert_service_error(400);
        assert_eq!(got.error_fields(), [field.to_owned()]);
    }
    // A sandbox that holds nothing: no such profile.
    let got = t
        .get(&format!("{ENTITIES}?schema.name=_xdm.context.profile&entityIdNS=ECID&entityId=x"))
        .await;
    got.assert_service_error(404);
}

/// A preview checks its body as a create does (the same 400, field by field), bounds `rows`,
/// and on a sandbox with no data counts nothing.
async fn previews_refuse_what_a_create_refuses(setup: Setup) {
    let t = TestApp::new(setup).await;
    let export = t.export_dataset().await;
    for body in [
        json!({}),
        json!({"destination": {"datasetId": "nope"}, "schema": {"name": "_xdm.context.profile"}}),
        json!({"destination": {"datasetId": export}, "schema": {"name": "_xdm.context.profile"}, "fields": "a..b"}),
        json!({"destination": {"datasetId": export}, "schema": {"name": "_xdm.context.profile"}, "mergePolicy": {"id": "none"}}),
    ] {
        let created = t.post("/export/jobs", body.clone()).await;
        let previewed = t.post("/segport/preview/export", body.clone()).await;
        created.assert_service_error(400);
        previewed.assert_service_error(400);
        assert_eq!(previewed.error_fields(), created.error_fields(), "{body}");
    }
    let job = minimal_job(&export);
    let too_many = t.post("/segport/preview/export?rows=101", job.clone()).await;
    too_many.assert_service_error(400);
    assert_eq!(too_many.error_fields(), ["rows"]);
    let empty = t.post("/segport/preview/export", job).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.body["totalExportedProfileCounter"], 0);
    assert_eq!(empty.body["batches"], json!([{"count": 0}]));
    assert_eq!(empty.body["rows"], json!([]));
    // No job was made by any of it but the creates that were refused.
    assert_eq!(t.get("/export/jobs").await.body["records"], json!([]));
}
