//! Ingestion into the profile store through the Batch Ingestion API, read back from the store and
//! compared with the input by a naive oracle. Both catalog backends.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use common::*;
use segport_catalog::Backend;
use segport_store::RecordKind;
use serde_json::{json, Value};

both_backends!(
    generated_profiles_and_events_round_trip,
    reingesting_makes_newer_fragments_and_events_dedupe_by_id,
    bad_records_are_counted_and_reported_by_row,
    a_type_conflict_fails_exactly_the_conflicting_records,
    concurrent_batches_get_increasing_ingest_times,
    json_arrays_and_parquet_take_the_same_path,
    batch_ingestion_api_rules,
    compaction_keeps_what_readers_see,
    deleting_a_dataset_removes_it_and_its_files,
    objects_without_data_do_not_fail_a_batch,
    values_from_aep_descriptions_are_accepted,
    a_type_is_released_when_no_live_dataset_holds_it,
    a_json_array_sent_as_ndjson_is_refused_with_a_hint,
    fail_and_revert_as_batch_ingestion_documents_them,
);

on_s3!(
    generated_profiles_and_events_round_trip,
    compaction_keeps_what_readers_see,
    deleting_a_dataset_removes_it_and_its_files,
    fail_and_revert_as_batch_ingestion_documents_them,
    json_arrays_and_parquet_take_the_same_path,
);

fn identities(record: &Value) -> BTreeSet<(String, String, bool)> {
    record["identityMap"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(ns, list)| {
            list.as_array().unwrap().iter().map(move |i| {
                (ns.clone(), i["id"].as_str().unwrap().to_owned(), i["primary"] == true)
            })
        })
        .collect()
}

/// The attributes of a record: everything but identities, memberships and bookkeeping.
fn attributes(record: &Value) -> Value {
    let mut o = record.as_object().unwrap().clone();
    o.retain(|k, _| {
        !["identityMap", "identities", "segmentMembership"].contains(&k.as_str())
            && !k.starts_with("__")
    });
    Value::Object(o)
}

fn ndjson(records: &[Value]) -> Vec<u8> {
    records.iter().map(|r| format!("{r}\n")).collect::<String>().into_bytes()
}

fn generated(n: u64, seed: u64) -> (Vec<Value>, Vec<Value>) {
    let segments = segport_datagen::segments(seed);
    let mut profiles = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let g = segport_datagen::profile(seed, i, &segments);
        profiles.extend(g.profile);
        events.extend(g.events);
    }
    (profiles, events)
}

async fn generated_profiles_and_events_round_trip(setup: Setup) {
    let t = TestApp::new(setup).await;
    let (profiles, events) = generated(20_000, 11);
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let eds = t.store_dataset(EVENT_SCHEMA).await;
    // Three files, so the batch spans uploads; row numbers restart in every file.
    let thirds: Vec<_> = profiles.chunks(profiles.len() / 3 + 1).map(ndjson).collect();
    let files = vec![
        ("a.json", thirds[0].clone()),
        ("b.json", thirds[1].clone()),
        ("c.json", thirds[2].clone()),
    ];
    let (_, batch) = t.ingest(&pds, json!({"format": "json"}), files).await;
    assert_eq!(batch["status"], "success", "{batch}");
    assert_eq!(batch["recordCount"], profiles.len());
    assert_eq!(batch["failedRecordCount"], 0);
    assert!(batch["completed"].as_i64().is_some());
    let (_, ebatch) =
        t.ingest(&eds, json!({"format": "json"}), vec![("events.json", ndjson(&events))]).await;
    assert_eq!(ebatch["recordCount"], events.len());

    // The store is spread over partitions, files and row groups.
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let snapshot = t.db.catalog.store_snapshot(&tenant, None).await.unwrap();
    let profile_files: Vec<_> = snapshot.files.iter().filter(|f| f.dataset_id == pds).collect();
    let partitions: BTreeSet<u32> = profile_files.iter().map(|f| f.partition).collect();
    assert_eq!(partitions.len(), 16);
    assert!(profile_files.len() > partitions.len(), "{} files", profile_files.len());
    let groups =
        segport_store::read::row_groups(&t.state.storage, &profile_files[0].path).await.unwrap();
    assert!(groups > 1, "{groups} row groups");
    // Every file is sorted by key and holds only keys of its partition.
    for f in &profile_files {
        let rows = segport_store::read::read_file(&t.state.storage, &f.path, None).await.unwrap();
        let mut last = String::new();
        for b in rows {
            let keys = arrow::array::AsArray::as_string::<i32>(b.column(0));
            for k in keys.iter().flatten() {
                assert!(k >= last.as_str());
                assert_eq!(segport_store::ingest::partition_of(k, 16), f.partition);
                last = k.to_owned();
            }
        }
    }

    // Every profile comes back with the same identities, memberships and attributes.
    let stored = t.stored(&pds, RecordKind::Profile).await;
    assert_eq!(stored.len(), profiles.len());
    let by_key: BTreeMap<String, &Value> =
        stored.iter().map(|r| (r["__key"].as_str().unwrap().to_owned(), r)).collect();
    assert_eq!(by_key.len(), profiles.len());
    for input in &profiles {
        let out = by_key[&naive_key(input)];
        assert_eq!(identities(input), identities(out), "{input}");
        let memberships = |r: &Value| -> BTreeSet<(String, String, String, i64)> {
            r["segmentMembership"].as_object().map_or_else(BTreeSet::new, |m| {
                m.iter()
                    .flat_map(|(ns, segs)| {
                        segs.as_object().unwrap().iter().map(move |(id, s)| {
                            let at = chrono::DateTime::parse_from_rfc3339(
                                s["lastQualificationTime"].as_str().unwrap(),
                            )
                            .unwrap();
                            (
                                ns.clone(),
                                id.clone(),
                                s["status"].as_str().unwrap().to_owned(),
                                at.timestamp_millis(),
                            )
                        })
                    })
                    .collect()
            })
        };
        assert_eq!(memberships(input), memberships(out), "{input}");
        assert!(same_json(&attributes(input), &attributes(out)), "{input}\n{out}");
    }

    // Every event comes back, keyed by its profile.
    let stored = t.stored(&eds, RecordKind::Event).await;
    assert_eq!(stored.len(), events.len());
    let by_id: BTreeMap<&str, &Value> =
        stored.iter().map(|e| (e["_id"].as_str().unwrap(), e)).collect();
    for input in &events {
        let out = by_id[input["_id"].as_str().unwrap()];
        assert_eq!(out["__key"].as_str().unwrap(), naive_key(input));
        assert!(same_json(&attributes(input), &attributes(out)), "{input}\n{out}");
    }
}

fn profile(id: &str, points: Value) -> Value {
    json!({"identityMap": {"ECID": [{"id": id, "primary": true}]}, "loyalty": {"points": points}})
}

fn event(id: &str, profile: &str, page: &str) -> Value {
    json!({"_id": id, "timestamp": "2026-01-01T00:00:00Z", "identityMap": {"ECID": [{"id": profile}]}, "web": {"page": page}})
}

async fn reingesting_makes_newer_fragments_and_events_dedupe_by_id(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let (_, first) = t
        .ingest(
            &pds,
            json!({"format": "json"}),
            vec![("1.json", ndjson(&[profile("x", json!(1)), profile("y", json!(5))]))],
        )
        .await;
    let (_, second) = t
        .ingest(
            &pds,
            json!({"format": "json"}),
            vec![("2.json", ndjson(&[profile("x", json!(2))]))],
        )
        .await;
    let (t1, t2) = (first["completed"].as_i64().unwrap(), second["completed"].as_i64().unwrap());
    assert!(t2 > t1);
    let stored = t.stored(&pds, RecordKind::Profile).await;
    let x: Vec<_> = stored.iter().filter(|r| r["__key"] == "ECID:x").collect();
    assert_eq!(x.len(), 2, "both fragments are kept");
    assert_eq!(
        (x[0]["__ingest_ms"].as_i64(), x[0]["loyalty"]["points"].as_i64()),
        (Some(t1), Some(1))
    );
    assert_eq!(
        (x[1]["__ingest_ms"].as_i64(), x[1]["loyalty"]["points"].as_i64()),
        (Some(t2), Some(2))
    );

    let eds = t.store_dataset(EVENT_SCHEMA).await;
    t.ingest(
        &eds,
        json!({"format": "json"}),
        vec![("e1.json", ndjson(&[event("e1", "x", "home"), event("e2", "x", "cart")]))],
    )
    .await;
    // e1 again (changed) and within one batch e3 twice: the later row wins.
    t.ingest(
        &eds,
        json!({"format": "json"}),
        vec![(
            "e2.json",
            ndjson(&[
                event("e1", "x", "search"),
                event("e3", "y", "first"),
                event("e3", "y", "second"),
            ]),
        )],
    )
    .await;
    let all = t.stored_batch(&eds, RecordKind::Event, None).await;
    assert_eq!(all.num_rows(), 5);
    let latest = segport_store::read::latest_events(&all).unwrap();
    let rows = segport_store::read::rows_as_xdm(&latest).unwrap();
    let pages: BTreeMap<&str, &str> = rows
        .iter()
        .map(|r| (r["_id"].as_str().unwrap(), r["web"]["page"].as_str().unwrap()))
        .collect();
    assert_eq!(pages, BTreeMap::from([("e1", "search"), ("e2", "cart"), ("e3", "second")]));
}

async fn bad_records_are_counted_and_reported_by_row(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let lines = [
        profile("a", json!(1)).to_string(),                                               // 1 ok
        "{\"identityMap\": ".to_owned(),                                                  // 2 not JSON
        "   ".to_owned(),                                                                 // 3 blank, not a record
        json!({"loyalty": {"points": 3}}).to_string(),                                    // 4 no identity
        profile("b", json!(2)).to_string(),                                               // 5 ok
        "[1, 2]".to_owned(),                                                              // 6 not an object
        json!({"identityMap": {"A": [{"id": "1"}], "B": [{"id": "2"}]}}).to_string(),     // 7 no primary
        profile("c", json!("many")).to_string(),                                          // 8 type conflict
        json!({"identityMap": {"ECID": [{"id": "d"}]}, "segmentMembership": {"ups": {"s": {"status": "gone"}}}}).to_string(), // 9
    ];
    let body = lines.join("\n").into_bytes();
    let (_, batch) = t.ingest(&pds, json!({"format": "json"}), vec![("mixed.json", body)]).await;
    assert_eq!(batch["status"], "success", "{batch}");
    assert_eq!(batch["recordCount"], 2);
    assert_eq!(batch["failedRecordCount"], 6);
    let mut reported: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in batch["errors"].as_array().unwrap() {
        let rows: Vec<u64> =
            e["rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        assert!(e["description"].as_str().unwrap().starts_with("mixed.json: "), "{e}");
        reported.entry(e["code"].as_str().unwrap().to_owned()).or_default().extend(rows);
    }
    assert_eq!(
        reported,
        BTreeMap::from([
            ("INVALID_JSON".to_owned(), vec![2]),
            ("NO_IDENTITY".to_owned(), vec![4]),
            ("NOT_AN_OBJECT".to_owned(), vec![6]),
            ("AMBIGUOUS_PRIMARY_IDENTITY".to_owned(), vec![7]),
            ("TYPE_CONFLICT".to_owned(), vec![8]),
            ("INVALID_SEGMENT_MEMBERSHIP".to_owned(), vec![9]),
        ])
    );
    let conflict =
        batch["errors"].as_array().unwrap().iter().find(|e| e["code"] == "TYPE_CONFLICT").unwrap();
    let text = conflict["description"].as_str().unwrap();
    assert!(
        text.contains("loyalty.points") && text.contains("string") && text.contains("number"),
        "{text}"
    );
    let keys: Vec<_> = t
        .stored(&pds, RecordKind::Profile)
        .await
        .iter()
        .map(|r| r["__key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["ECID:a", "ECID:b"]);

    // A batch in which no record lands fails; the uploaded file stays.
    let (bad, batch) =
        t.ingest(&pds, json!({"format": "json"}), vec![("bad.json", b"nope\n{}\n".to_vec())]).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(
        (batch["recordCount"].as_i64(), batch["failedRecordCount"].as_i64()),
        (Some(0), Some(2))
    );
    let upload = t
        .state
        .storage
        .list(&segport_store::storage::uploads_dir(ORG, SANDBOX, &bad))
        .await
        .unwrap();
    assert_eq!(upload.len(), 1);
}

async fn a_type_conflict_fails_exactly_the_conflicting_records(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    t.ingest(&pds, json!({"format": "json"}), vec![("1.json", ndjson(&[json!({"identityMap": {"ECID": [{"id": "a"}]}, "loyalty": {"points": 1, "tier": "gold"}, "tags": ["x"]})]))]).await;
    let records = [
        json!({"identityMap": {"ECID": [{"id": "b"}]}, "loyalty": {"points": 2.5}}), // widens, fine
        json!({"identityMap": {"ECID": [{"id": "c"}]}, "loyalty": {"points": "3"}}), // conflict
        json!({"identityMap": {"ECID": [{"id": "d"}]}, "loyalty": {"tier": 4}}),     // conflict
        json!({"identityMap": {"ECID": [{"id": "e"}]}, "loyalty": {"tier": null}, "new": {"n": true}}), // fine
        json!({"identityMap": {"ECID": [{"id": "f"}]}, "tags": "x"}), // conflict
        json!({"identityMap": {"ECID": [{"id": "g"}]}, "new": {"n": "yes"}}), // conflict with row 4
        json!({"identityMap": {"ECID": [{"id": "h"}]}, "tags": ["y", "z"]}), // fine
    ];
    let (_, batch) =
        t.ingest(&pds, json!({"format": "json"}), vec![("2.json", ndjson(&records))]).await;
    assert_eq!(batch["recordCount"], 3);
    let failed: BTreeSet<u64> = batch["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == "TYPE_CONFLICT")
        .flat_map(|e| e["rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()))
        .collect();
    assert_eq!(failed, BTreeSet::from([2, 3, 5, 6]));
    let stored = t.stored(&pds, RecordKind::Profile).await;
    let points: BTreeMap<&str, Value> = stored
        .iter()
        .map(|r| (r["__key"].as_str().unwrap(), r["loyalty"]["points"].clone()))
        .collect();
    assert_eq!(points["ECID:a"], json!(1.0));
    assert_eq!(points["ECID:b"], json!(2.5));
}

async fn concurrent_batches_get_increasing_ingest_times(backend: Backend) {
    let t = std::sync::Arc::new(TestApp::new(backend).await);
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let mut batches = Vec::new();
    for i in 0..6 {
        let b = t.new_batch(&pds, json!({"format": "json"})).await;
        let records: Vec<Value> =
            (0..50).map(|n| profile(&format!("p{i}-{n}"), json!(n))).collect();
        t.upload(&b, &pds, "f.json", ndjson(&records)).await;
        t.batch_action(&b, "COMPLETE").await;
        batches.push(b);
    }
    // Three workers run the six batches at once; their commits race.
    let runners: Vec<_> = (0..3)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { t.run_tasks().await })
        })
        .collect();
    let mut ran = 0;
    for r in runners {
        ran += r.await.unwrap();
    }
    assert_eq!(ran, 6);
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let snapshot = t.db.catalog.store_snapshot(&tenant, None).await.unwrap();
    let mut by_seq: BTreeMap<i64, i64> = BTreeMap::new();
    for f in &snapshot.files {
        by_seq.insert(f.seq, f.ingest_ms.unwrap());
    }
    assert_eq!(by_seq.len(), 6);
    let times: Vec<i64> = by_seq.values().copied().collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "ingest times follow commit order: {times:?}");
    let mut completed = BTreeSet::new();
    for b in &batches {
        let object = t.batch(b).await;
        assert_eq!(object["status"], "success");
        completed.insert(object["completed"].as_i64().unwrap());
    }
    assert_eq!(completed.into_iter().collect::<Vec<_>>(), times);
}

async fn json_arrays_and_parquet_take_the_same_path(setup: Setup) {
    let t = TestApp::new(setup).await;
    let (profiles, _) = generated(300, 5);
    let as_lines = t.store_dataset(PROFILE_SCHEMA).await;
    let as_array = t.store_dataset(PROFILE_SCHEMA).await;
    let as_parquet = t.store_dataset(PROFILE_SCHEMA).await;
    t.ingest(&as_lines, json!({"format": "json"}), vec![("p.json", ndjson(&profiles))]).await;
    let array = serde_json::to_vec_pretty(&profiles).unwrap();
    let (_, b) = t
        .ingest(
            &as_array,
            json!({"format": "json", "isMultiLineJson": true}),
            vec![("p.json", array)],
        )
        .await;
    assert_eq!(b["recordCount"], profiles.len());
    // The stored rows of the line-delimited batch, written back out as a Parquet input file.
    let stored = t.stored(&as_lines, RecordKind::Profile).await;
    let plain: Vec<Value> = stored
        .iter()
        .map(|r| {
            let mut o = r.as_object().unwrap().clone();
            o.retain(|k, _| !k.starts_with("__"));
            Value::Object(o)
        })
        .collect();
    let parquet = to_parquet(&plain);
    let (_, b) =
        t.ingest(&as_parquet, json!({"format": "parquet"}), vec![("p.parquet", parquet)]).await;
    assert_eq!(b["recordCount"], profiles.len(), "{b}");
    let strip = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .map(|r| {
                let mut o = r.as_object().unwrap().clone();
                // Which batch and which input position a row came from differs by design.
                o.retain(|k, _| !["__ingest_ms", "__seq", "__ord"].contains(&k.as_str()));
                Value::Object(o)
            })
            .collect()
    };
    let lines = strip(t.stored(&as_lines, RecordKind::Profile).await);
    for other in [&as_array, &as_parquet] {
        let rows = strip(t.stored(other, RecordKind::Profile).await);
        assert_eq!(rows.len(), lines.len());
        for (a, b) in lines.iter().zip(&rows) {
            assert!(same_json(a, b), "{a}\n{b}");
        }
    }
}

/// JSON rows as a Parquet file, via arrow's own JSON reader and Parquet writer.
async fn batch_ingestion_api_rules(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let export = t.export_dataset().await;
    let create = |body: Value| t.post("/data/foundation/import/batches", body);
    // Creation rules.
    let a =
        create(json!({"datasetId": "5b7c86968f7b6501e21ba9df", "inputFormat": {"format": "json"}}))
            .await;
    a.assert_service_error(400);
    assert_eq!(a.error_fields(), ["datasetId"]);
    let a = create(json!({"datasetId": export, "inputFormat": {"format": "json"}})).await;
    assert_eq!(a.error_fields(), ["datasetId"]);
    let a = create(json!({"datasetId": pds, "inputFormat": {"format": "csv"}})).await;
    assert_eq!(a.error_fields(), ["inputFormat.format"]);

    // Uploads: empty file, bad names, unknown batch, wrong dataset, too large.
    let batch = t.new_batch(&pds, json!({"format": "json"})).await;
    t.upload(&batch, &pds, "empty.json", Vec::new()).await.assert_service_error(400);
    for bad in ["a%5Cb", "x%00y"] {
        t.upload(&batch, &pds, bad, b"{}".to_vec()).await.assert_service_error(400);
    }
    t.upload(&"0".repeat(32), &pds, "f.json", b"{}".to_vec()).await.assert_service_error(404);
    let other = t.store_dataset(PROFILE_SCHEMA).await;
    t.upload(&batch, &other, "f.json", b"{}".to_vec()).await.assert_service_error(404);
    // Idempotent: the same name twice keeps one file, with the second content.
    assert_eq!(
        t.upload(&batch, &pds, "dir/f.json", ndjson(&[profile("a", json!(1))])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.upload(
            &batch,
            &pds,
            "dir/f.json",
            ndjson(&[profile("a", json!(1)), profile("b", json!(2))])
        )
        .await
        .status,
        StatusCode::OK
    );
    let mut small = TestApp::new(backend).await;
    small.state.max_upload_bytes = 10;
    small.app = segport_api::app(small.state.clone(), segport_api::Surface::Full);
    let sds = small.store_dataset(PROFILE_SCHEMA).await;
    let sb = small.new_batch(&sds, json!({"format": "json"})).await;
    small.upload(&sb, &sds, "big.json", vec![b'x'; 11]).await.assert_service_error(413);
    assert_eq!(small.upload(&sb, &sds, "ok.json", vec![b'x'; 10]).await.status, StatusCode::OK);

    // Actions.
    t.batch_action(&batch, "FOO").await.assert_service_error(400);
    assert_eq!(t.batch_action(&batch, "COMPLETE").await.status, StatusCode::OK);
    assert_eq!(t.batch(&batch).await["status"], "staging");
    assert_eq!(
        t.batch_action(&batch, "COMPLETE").await.status,
        StatusCode::OK,
        "completing twice is harmless"
    );
    t.batch_action(&batch, "ABORT").await.assert_service_error(409);
    t.upload(&batch, &pds, "late.json", b"{}".to_vec()).await.assert_service_error(409);
    assert_eq!(t.run_tasks().await, 1);
    let done = t.batch(&batch).await;
    assert_eq!((done["status"].as_str(), done["recordCount"].as_i64()), (Some("success"), Some(2)));
    t.upload(&batch, &pds, "after.json", b"{}".to_vec()).await.assert_service_error(409);

    // Abort removes the uploaded files; a completed batch without files fails.
    let aborted = t.new_batch(&pds, json!({"format": "json"})).await;
    t.upload(&aborted, &pds, "f.json", b"{}".to_vec()).await;
    assert_eq!(t.batch_action(&aborted, "ABORT").await.body["status"], "aborted");
    assert!(t
        .state
        .storage
        .list(&segport_store::storage::uploads_dir(ORG, SANDBOX, &aborted))
        .await
        .unwrap()
        .is_empty());
    t.batch_action(&aborted, "COMPLETE").await.assert_service_error(409);
    let empty = t.new_batch(&pds, json!({"format": "json"})).await;
    t.batch_action(&empty, "COMPLETE").await;
    t.run_tasks().await;
    let failed = t.batch(&empty).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errors"][0]["code"], "NO_RECORDS");

    // Batches an export allocated are not for import.
    let job = t.create_job(minimal_job(&export)).await;
    let allocated = job["destination"]["batchId"].as_str().unwrap();
    t.upload(allocated, &export, "f.json", b"{}".to_vec()).await.assert_service_error(409);
    t.batch_action(allocated, "COMPLETE").await.assert_service_error(409);
    t.batch_action(allocated, "ABORT").await.assert_service_error(409);
    // Another tenant sees nothing.
    let a = t
        .call_as(
            "Other@AdobeOrg",
            SANDBOX,
            Method::POST,
            &format!("/data/foundation/import/batches/{batch}?action=COMPLETE"),
            None,
        )
        .await;
    a.assert_service_error(404);
}

async fn compaction_keeps_what_readers_see(setup: Setup) {
    let t = TestApp::new(setup).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let (profiles, _) = generated(3_000, 21);
    for chunk in profiles.chunks(1_000) {
        t.ingest(&pds, json!({"format": "json"}), vec![("p.json", ndjson(chunk))]).await;
    }
    // One profile updated, so that a key has fragments in two batches.
    t.ingest(
        &pds,
        json!({"format": "json"}),
        vec![("u.json", ndjson(&[profile("ECID-1", json!(77))]))],
    )
    .await;
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let before = t.db.catalog.store_snapshot(&tenant, None).await.unwrap();
    let rows_before =
        segport_store::read::rows_as_xdm(&t.stored_batch(&pds, RecordKind::Profile, None).await)
            .unwrap();

    // A running task takes its snapshot before the compaction.
    let eds = t.store_dataset(EVENT_SCHEMA).await;
    let b = t.new_batch(&eds, json!({"format": "json"})).await;
    t.upload(&b, &eds, "e.json", ndjson(&[event("e", "x", "p")])).await;
    t.batch_action(&b, "COMPLETE").await;
    let task =
        t.db.catalog
            .claim_task("test", 60_000, segport_model::time::now_ms())
            .await
            .unwrap()
            .unwrap();
    let held = t.db.catalog.store_snapshot(&tenant, Some(&task.lease)).await.unwrap();
    assert_eq!(held.files, before.files);

    let ctx = t.worker_context(small_limits());
    let compacted = segport_worker::compact_sandbox(&ctx, &tenant).await.unwrap();
    assert!(compacted > 0);
    let after = t.db.catalog.store_snapshot(&tenant, None).await.unwrap();
    assert!(after.files.len() < before.files.len());
    let per_partition: BTreeMap<u32, usize> =
        after.files.iter().fold(BTreeMap::new(), |mut m, f| {
            *m.entry(f.partition).or_default() += 1;
            m
        });
    assert!(per_partition.values().all(|n| *n == 1), "{per_partition:?}");
    let rows_after =
        segport_store::read::rows_as_xdm(&t.stored_batch(&pds, RecordKind::Profile, None).await)
            .unwrap();
    assert_eq!(rows_before.len(), rows_after.len());
    assert_eq!(rows_before, rows_after, "readers see exactly the same fragments in the same order");

    // The replaced files outlive the running task's snapshot, then go.
    segport_worker::sweep(&ctx).await.unwrap();
    let old = t.stored_batch(&pds, RecordKind::Profile, Some(&before.files)).await;
    assert_eq!(
        segport_store::read::rows_as_xdm(&old).unwrap(),
        rows_before,
        "the old snapshot is still readable"
    );
    assert!(t.db.catalog.release_task(&task.lease, segport_model::time::now_ms()).await.unwrap());
    let swept = segport_worker::sweep(&ctx).await.unwrap();
    assert_eq!(swept, before.files.len());
    let exists = |path: String| {
        let storage = t.state.storage.clone();
        async move { storage.size(&path.as_str().into()).await.is_ok() }
    };
    let index_of = |path: &str| segport_store::layout::index_path(path).unwrap();
    for f in &before.files {
        assert!(!exists(f.path.clone()).await, "{} still exists", f.path);
        for companion in segport_store::layout::companions(&f.path) {
            assert!(!exists(companion.clone()).await, "{companion} of {} still exists", f.path);
        }
    }
    // Compaction wrote each merged file sorted by key, with its membership index naming the
    // right rows (beside it on a local root, where the sweep left it alone; built in the
    // reader's cache on an S3 root, which holds no companions).
    use arrow::array::{Array, AsArray};
    let local = t.root == Root::Local;
    for f in &after.files {
        assert_eq!(exists(index_of(&f.path)).await, local, "membership index of {}", f.path);
        let rows = segport_store::layout::rows_path(&f.path).unwrap();
        assert_eq!(exists(rows).await, local, "row file of {}", f.path);
        let storage = &t.state.storage;
        let data = segport_store::read::read_file(storage, &f.path, None).await.unwrap();
        let keys: Vec<String> = data
            .iter()
            .flat_map(|b| {
                let k = b.column_by_name("__key").unwrap().as_string::<i32>();
                (0..k.len()).map(|i| k.value(i).to_owned()).collect::<Vec<_>>()
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{} is not sorted by key", f.path);
        let file =
            segport_store::snapshot::FileRef { path: f.path.clone(), ingest_ms: None, seq: f.seq };
        let source = storage.source(file, f.dataset_id.clone()).await.unwrap();
        let index = source.open_index().unwrap().expect("a membership index");
        let all: std::collections::HashSet<&str> =
            index.segments().iter().map(String::as_str).collect();
        let mut entries = 0;
        for b in &index.batches_of(&all).unwrap() {
            let k = b.column_by_name("__key").unwrap().as_string::<i32>();
            let rows =
                b.column_by_name("__row").unwrap().as_primitive::<arrow::datatypes::UInt32Type>();
            for i in 0..b.num_rows() {
                assert_eq!(k.value(i), keys[rows.value(i) as usize], "index row {i} of {}", f.path);
                entries += 1;
            }
        }
        assert!(entries > 0, "{} holds memberships", f.path);
        // The row file holds the data file's rows, in its order.
        let row_file = source.open_rows().unwrap().unwrap();
        assert_eq!(row_file.rows(), keys.len(), "{}", f.path);
        let some: Vec<&str> = keys.iter().step_by(3).map(String::as_str).collect();
        let expected: Vec<usize> =
            (0..keys.len()).filter(|i| some.contains(&keys[*i].as_str())).collect();
        assert_eq!(row_file.rows_of(&some).unwrap(), expected, "{}", f.path);
    }
    // What is left reads the same.
    let rows_now =
        segport_store::read::rows_as_xdm(&t.stored_batch(&pds, RecordKind::Profile, None).await)
            .unwrap();
    assert_eq!(rows_now, rows_before);
}

async fn deleting_a_dataset_removes_it_and_its_files(setup: Setup) {
    let t = TestApp::new(setup).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    t.ingest(&pds, json!({"format": "json"}), vec![("p.json", ndjson(&[profile("a", json!(1))]))])
        .await;
    // A queued ingest makes the dataset busy.
    let queued = t.new_batch(&pds, json!({"format": "json"})).await;
    t.upload(&queued, &pds, "p.json", ndjson(&[profile("b", json!(1))])).await;
    t.batch_action(&queued, "COMPLETE").await;
    let path = format!("/data/foundation/catalog/dataSets/{pds}");
    t.call(Method::DELETE, &path, None).await.assert_service_error(409);
    t.run_tasks().await;
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let files = t.db.catalog.store_snapshot(&tenant, None).await.unwrap().files;
    assert!(!files.is_empty());
    let a = t.call(Method::DELETE, &path, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    t.get(&path).await.assert_service_error(404);
    t.get(&format!("/data/foundation/catalog/batches/{queued}")).await.assert_service_error(404);
    assert!(t.db.catalog.store_snapshot(&tenant, None).await.unwrap().files.is_empty());
    assert!(t
        .state
        .storage
        .list(&segport_store::storage::uploads_dir(ORG, SANDBOX, &queued))
        .await
        .unwrap()
        .is_empty());
    // Store files go once no snapshot needs them.
    segport_worker::sweep(&t.worker_context(small_limits())).await.unwrap();
    for f in files {
        assert!(t.state.storage.size(&f.path.as_str().into()).await.is_err());
    }
    t.call(Method::DELETE, &path, None).await.assert_service_error(404);
}

/// Found by the `ndjson_ingest` fuzz target: an attribute whose object holds no data
/// (`{"": {"p": null}}`) made a struct without members, which Parquet cannot write, so the whole
/// batch failed at write time although every record was valid. Such objects are now absent.
async fn objects_without_data_do_not_fail_a_batch(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ds = t.store_dataset(PROFILE_SCHEMA).await;
    let lines = [
        r#"{"identityMap":{"":[{"id":"1"}]},"":{"p":null}}"#,
        r#"{"identityMap":{"ECID":[{"id":"2"}]},"a":{"b":{},"c":1},"l":[{},{"x":2}]}"#,
        r#"{"identityMap":{"ECID":[{"id":"3"}]},"a":{},"e":{"f":{"g":null}}}"#,
    ];
    let (_, batch) = t
        .ingest(&ds, json!({"format": "json"}), vec![("p.json", lines.join("\n").into_bytes())])
        .await;
    assert_eq!(batch["status"], "success", "{batch}");
    assert_eq!(batch["recordCount"], 3, "{batch}");
    assert_eq!(batch["failedRecordCount"], 0, "{batch}");
    let stored = t.stored(&ds, segport_store::RecordKind::Profile).await;
    assert_eq!(stored.len(), 3);
    let with_a: Vec<&Value> = stored.iter().filter(|r| r.get("a").is_some()).collect();
    assert_eq!(with_a.len(), 1, "{stored:?}");
    assert_eq!(with_a[0]["a"], json!({"c": 1}));
    assert_eq!(with_a[0]["l"], json!([null, {"x": 2}]), "an empty element keeps its place");
    assert!(stored.iter().all(|r| r.get("e").is_none() && r.get("").is_none()), "{stored:?}");
}

/// Values Adobe's own descriptions use: `inputFormat.format` in its enum's letter case, and
/// every documented batch status (with its aliases) as a list filter.
async fn values_from_aep_descriptions_are_accepted(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let create = |format: &str| {
        t.post(
            "/data/foundation/import/batches",
            json!({"datasetId": pds, "inputFormat": {"format": format}}),
        )
    };
    for format in ["JSON", "Parquet", "json", "PARQUET"] {
        let a = create(format).await;
        assert_eq!(a.status, StatusCode::CREATED, "{format}: {}", a.text);
    }
    let csv = create("CSV").await;
    csv.assert_service_error(400);
    assert!(csv.text.contains("CSV is not supported"), "{}", csv.text);

    let (ok, _) = t
        .ingest(
            &pds,
            json!({"format": "JSON"}),
            vec![("f.json", ndjson(&[profile("a", json!(1))]))],
        )
        .await;
    let failed = t.new_batch(&pds, json!({"format": "json"})).await;
    t.batch_action(&failed, "COMPLETE").await;
    t.run_tasks().await;
    let staging = t.new_batch(&pds, json!({"format": "json"})).await;
    t.upload(&staging, &pds, "f.json", ndjson(&[profile("b", json!(2))])).await;
    t.batch_action(&staging, "COMPLETE").await;

    let listed = |status: &'static str| {
        let t = &t;
        async move {
            let a = t.get(&format!("/data/foundation/catalog/batches?status={status}")).await;
            assert_eq!(a.status, StatusCode::OK, "{status}: {}", a.text);
            a.body.as_object().unwrap().keys().cloned().collect::<BTreeSet<String>>()
        }
    };
    let one = |id: &str| BTreeSet::from([id.to_owned()]);
    for (status, expect) in [
        ("success", one(&ok)),
        ("active", one(&ok)),
        ("SUCCESS", one(&ok)),
        ("failed", one(&failed)),
        ("failure", one(&failed)),
        ("staging", one(&staging)),
        ("processing", one(&staging)),
        ("queued", one(&staging)),
        ("stalled", BTreeSet::new()),
        ("abandoned", BTreeSet::new()),
        ("deleted", BTreeSet::new()),
    ] {
        assert_eq!(listed(status).await, expect, "status={status}");
    }
    let bad = t.get("/data/foundation/catalog/batches?status=done").await;
    bad.assert_service_error(400);
    assert_eq!(bad.error_fields(), ["status"]);
}

fn points_of(stored: &[Value]) -> BTreeMap<String, Value> {
    stored
        .iter()
        .map(|r| (r["__key"].as_str().unwrap().to_owned(), r["loyalty"]["points"].clone()))
        .collect()
}

/// A field keeps the type its first values gave it while a live dataset holds it; deleting the
/// datasets that hold it frees it for another type (the README's order: a demo upload with
/// `"points": "many"`, then generated data with numeric points). The conflict says so.
async fn a_type_is_released_when_no_live_dataset_holds_it(backend: Backend) {
    let t = TestApp::new(backend).await;
    let words = t.store_dataset(PROFILE_SCHEMA).await;
    let also_words = t.store_dataset(PROFILE_SCHEMA).await;
    let events = t.store_dataset(EVENT_SCHEMA).await;
    let file = |records: &[Value]| vec![("f.json", ndjson(records))];
    t.ingest(&words, json!({"format": "json"}), file(&[profile("a", json!("many"))])).await;
    t.ingest(&also_words, json!({"format": "json"}), file(&[profile("b", json!("few"))])).await;
    let event = json!({"_id": "e1", "timestamp": "2026-01-01T00:00:00Z",
        "identityMap": {"ECID": [{"id": "a"}]}, "loyalty": {"points": "some"}});
    t.ingest(&events, json!({"format": "json"}), file(&[event])).await;

    let numbers = t.store_dataset(PROFILE_SCHEMA).await;
    let numeric = [profile("c", json!(7)), profile("d", json!(8))];
    let (_, refused) = t.ingest(&numbers, json!({"format": "json"}), file(&numeric)).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    let text = refused["errors"][0]["description"].as_str().unwrap();
    assert!(text.contains("loyalty.points") && text.contains("deleting the datasets"), "{text}");

    // One of the two datasets holding it goes: the other still holds the type.
    let path = format!("/data/foundation/catalog/dataSets/{words}");
    assert_eq!(t.call(Method::DELETE, &path, None).await.status, StatusCode::OK);
    let (_, refused) = t.ingest(&numbers, json!({"format": "json"}), file(&numeric)).await;
    assert_eq!(refused["status"], "failed", "{refused}");

    // The last one goes: the type is free, and numbers load.
    let path = format!("/data/foundation/catalog/dataSets/{also_words}");
    assert_eq!(t.call(Method::DELETE, &path, None).await.status, StatusCode::OK);
    let (_, loaded) = t.ingest(&numbers, json!({"format": "json"}), file(&numeric)).await;
    assert_eq!(
        (loaded["status"].as_str(), loaded["recordCount"].as_i64()),
        (Some("success"), Some(2))
    );
    let points = points_of(&t.stored(&numbers, RecordKind::Profile).await);
    assert_eq!(points["ECID:c"], json!(7));
    assert_eq!(points["ECID:d"], json!(8));

    // Events have their own schema: their dataset still holds the string type there.
    let more_events = t.store_dataset(EVENT_SCHEMA).await;
    let numeric_event = json!({"_id": "e2", "timestamp": "2026-01-01T00:00:00Z",
        "identityMap": {"ECID": [{"id": "c"}]}, "loyalty": {"points": 3}});
    let (_, refused) =
        t.ingest(&more_events, json!({"format": "json"}), file(&[numeric_event])).await;
    assert_eq!(refused["status"], "failed", "{refused}");

    // A field released is gone from job checks too: it is no longer a known path once no
    // dataset holds it.
    let path = format!("/data/foundation/catalog/dataSets/{numbers}");
    assert_eq!(t.call(Method::DELETE, &path, None).await.status, StatusCode::OK);
    let export = t.export_dataset().await;
    let mut job = minimal_job(&export);
    job["fields"] = json!("loyalty.points");
    let a = t.post("/export/jobs", job).await;
    assert_eq!(a.status, StatusCode::OK, "no profile data left: the path cannot be checked");
    assert_eq!(a.body["warnings"][0]["code"], "FIELD_NOT_CHECKED");
}

/// A JSON array uploaded as NDJSON (without `isMultiLineJson`) fails as one record whose
/// message says what to do, not as one unexplained INVALID_JSON per line; the batch's other
/// files load.
async fn a_json_array_sent_as_ndjson_is_refused_with_a_hint(backend: Backend) {
    let t = TestApp::new(backend).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let records: Vec<Value> = (0..300).map(|i| profile(&format!("p{i}"), json!(i))).collect();
    let pretty = serde_json::to_vec_pretty(&records).unwrap();
    let (_, batch) = t
        .ingest(
            &pds,
            json!({"format": "json"}),
            vec![("array.json", pretty), ("lines.json", ndjson(&records[..2]))],
        )
        .await;
    assert_eq!(
        (batch["recordCount"].as_i64(), batch["failedRecordCount"].as_i64()),
        (Some(2), Some(1))
    );
    let errors = batch["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "INVALID_JSON");
    let text = errors[0]["description"].as_str().unwrap();
    assert!(text.contains("isMultiLineJson"), "{text}");
}

/// The stored profiles of `dataset` as (key, loyalty.points), latest fragment last.
async fn stored_points(t: &TestApp, dataset: &str) -> Vec<(String, Value)> {
    t.stored(dataset, RecordKind::Profile)
        .await
        .iter()
        .map(|r| (r["__key"].as_str().unwrap().to_owned(), r["loyalty"]["points"].clone()))
        .collect()
}

/// FAIL ends a loading batch failed with its uploads gone; REVERT withdraws a successful
/// batch's records from the store, whether they still sit in its own files or were compacted
/// with other batches' rows: later exports and compactions no longer see them, and the batch
/// shows as reverted.
async fn fail_and_revert_as_batch_ingestion_documents_them(setup: Setup) {
    let t = TestApp::new(setup).await;
    let pds = t.store_dataset(PROFILE_SCHEMA).await;
    let load = |records: Vec<Value>| {
        let t = &t;
        let pds = pds.clone();
        async move {
            t.ingest(&pds, json!({"format": "json"}), vec![("f.json", ndjson(&records))]).await.0
        }
    };
    // FAIL: a loading batch ends failed, its files discarded; a finished one cannot fail.
    let loading = t.new_batch(&pds, json!({"format": "json"})).await;
    t.upload(&loading, &pds, "f.json", ndjson(&[profile("z", json!(0))])).await;
    let a = t.batch_action(&loading, "FAIL").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{}",
        a.text
    );
    assert!(t
        .state
        .storage
        .list(&segport_store::storage::uploads_dir(ORG, SANDBOX, &loading))
        .await
        .unwrap()
        .is_empty());
    t.batch_action(&loading, "REVERT").await.assert_service_error(409);
    t.batch_action(&loading, "COMPLETE").await.assert_service_error(409);
    // Its files are gone from Data Access too.
    t.get(&format!("/data/foundation/export/files/{loading}")).await.assert_service_error(404);

    let first = load(vec![profile("a", json!(1)), profile("b", json!(2))]).await;
    let second = load(vec![profile("a", json!(10)), profile("c", json!(3))]).await;
    let lone = load(vec![profile("d", json!(4))]).await;
    t.batch_action(&first, "FAIL").await.assert_service_error(409);

    // Its own files, not compacted yet.
    let a = t.batch_action(&lone, "REVERT").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (StatusCode::OK, Some("reverted")),
        "{}",
        a.text
    );
    assert_eq!(t.batch(&lone).await["status"], "reverted");
    for action in ["REVERT", "COMPLETE", "ABORT", "FAIL"] {
        let a = t.batch_action(&lone, action).await;
        a.assert_service_error(409);
        assert!(a.text.contains("reverted"), "{action}: {}", a.text);
    }
    let keys =
        |rows: &[(String, Value)]| rows.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>();
    assert_eq!(
        keys(&stored_points(&t, &pds).await),
        BTreeSet::from(["ECID:a".into(), "ECID:b".into(), "ECID:c".into()])
    );
    let listed = |status: &str| {
        let (t, path) = (&t, format!("/data/foundation/catalog/batches?status={status}"));
        async move {
            t.get(&path).await.body.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(listed("reverted").await, BTreeSet::from([lone.clone()]));
    assert!(!listed("success").await.contains(&lone));

    // Compacted with another batch's rows: the compacted file is rewritten without them.
    let ctx = t.worker_context(small_limits());
    let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    assert!(segport_worker::compact_sandbox(&ctx, &tenant).await.unwrap() > 0);
    let snapshot = t.db.catalog.store_snapshot(&tenant, None).await.unwrap();
    // Profile a has rows of both batches in its partition: they now share a compacted file.
    let holds_a = |f: &&segport_catalog::StoreFile| {
        f.min_key.as_str() <= "ECID:a" && "ECID:a" <= f.max_key.as_str()
    };
    let a_files: Vec<_> = snapshot.files.iter().filter(holds_a).collect();
    assert!(a_files.len() == 1 && a_files[0].batch_id.is_none(), "{a_files:?}");
    let a = t.batch_action(&first, "REVERT").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // The oracle: the store as if only the second batch had been loaded.
    let expect = vec![("ECID:a".to_owned(), json!(10)), ("ECID:c".to_owned(), json!(3))];
    assert_eq!(stored_points(&t, &pds).await, expect);
    // A later compaction does not bring them back.
    load(vec![profile("e", json!(5))]).await;
    segport_worker::compact_sandbox(&ctx, &tenant).await.unwrap();
    let mut expect_now = expect.clone();
    expect_now.push(("ECID:e".to_owned(), json!(5)));
    let mut got = stored_points(&t, &pds).await;
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, expect_now);
    // And a later export exports what is left.
    let export = t.export_dataset().await;
    let mut job = minimal_job(&export);
    job["fields"] = json!("loyalty.points");
    let job = t.create_job(job).await;
    t.run_tasks().await;
    let batch =
        segport_model::BatchId::parse(job["destination"]["batchId"].as_str().unwrap()).unwrap();
    let files = t.db.catalog.list_batch_files(&tenant, &batch).await.unwrap();
    let mut exported: Vec<Value> =
        output_rows(&t, &files).await.iter().map(|r| r["loyalty"]["points"].clone()).collect();
    exported.sort_by_key(|v| v.as_i64());
    assert_eq!(exported, [json!(3), json!(5), json!(10)]);
    let _ = second;
}
