//! The real binary: `serve` on the embedded default and on PostgreSQL, roles, auth modes,
//! SIGTERM, JSON logs, `migrate` and `token`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use segport_catalog::testing::TestCatalog;
use serde_json::json;

#[test]
fn serve_on_the_embedded_default_then_stop_on_sigterm() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &["--metrics-listen", "127.0.0.1:0"], &[]);
    let (status, body) = server.http("GET", "/healthz", &[], None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = server.http("GET", "/readyz", &[], None);
    assert_eq!((status, body["catalog"].as_str()), (200, Some("sqlite")));
    // Dev auth: any token works on loopback.
    let (status, ds) = server.tenant_call(
        "POST",
        "/data/foundation/catalog/dataSets",
        "anything",
        ORG,
        Some(&json!({"name": "d", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}})),
    );
    assert_eq!(status, 201, "{ds}");
    let ds = ds[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    let job = json!({"destination": {"datasetId": ds}, "schema": {"name": "_xdm.context.profile"}});
    let (status, created) = server.tenant_call("POST", "/export/jobs", "t", ORG, Some(&job));
    assert_eq!(status, 200, "{created}");
    let (status, listed) = server.tenant_call("GET", "/export/jobs/", "t", ORG, None);
    assert_eq!(status, 200);
    assert_eq!(listed["records"][0]["id"], created["id"]);
    // The embedded worker runs it at once; an empty store exports an empty batch, whose one
    // file still carries the schema.
    let id = created["id"].as_i64().unwrap();
    let done = eventually(30, "the export", || {
        let (_, j) = server.tenant_call("GET", &format!("/export/jobs/{id}"), "t", ORG, None);
        (j["status"] == "SUCCEEDED").then_some(j)
    });
    assert_eq!(done["metrics"]["totalExportedProfileCounter"], 0);
    let out_batch = done["destination"]["batchId"].as_str().unwrap();
    let (_, files) = server.tenant_call(
        "GET",
        &format!("/data/foundation/export/files/{out_batch}"),
        "t",
        ORG,
        None,
    );
    assert_eq!(files["data"].as_array().map(Vec::len), Some(1), "{files}");
    // The API port's metrics carry no tenant's figures; the metrics address has them.
    let (status, metrics) = server.http("GET", "/metrics", &[], None);
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("segport_http_requests_total") && !text.contains("export_jobs"),
        "{text}"
    );
    assert!(!text.contains(ORG), "{text}");
    let metrics = get_text(server.metrics_addr.unwrap(), "/metrics");
    let line =
        format!("segport_export_jobs{{org=\"{ORG}\",sandbox=\"prod\",status=\"SUCCEEDED\"}} 1");
    assert!(metrics.contains(&line), "{metrics}");
    assert!(dir.0.join("segport-data/segport.db").exists());

    let exit = server.terminate();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn refuses_dev_auth_off_loopback() {
    let dir = TempDir::new();
    for args in [
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["serve", "--listen", "0.0.0.0:0", "--auth", "dev"],
    ] {
        let out = run(&dir.0, &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("SEGPORT_AUTH=token"), "{err}");
    }
    let out = run(&dir.0, &["serve", "--role", "nobody"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn worker_role_serves_only_operational_endpoints() {
    let dir = TempDir::new();
    let server = Server::start(&dir.0, &["--role", "worker"], &[]);
    assert_eq!(server.http("GET", "/healthz", &[], None).0, 200);
    assert_eq!(server.http("GET", "/metrics", &[], None).0, 200);
    let (status, body) = server.tenant_call("GET", "/export/jobs", "t", ORG, None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn tokens_and_token_mode_on_postgres() {
    let db = TestCatalog::postgres().await;
    let dir = TempDir::new();
    let env = [("DATABASE_URL", db.url.as_str())];
    let out = run(&dir.0, &["migrate"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let create = |org: &str| {
        let out = run(&dir.0, &["token", "create", "--org", org, "--expires-in", "1h"], &env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let note = String::from_utf8(out.stderr).unwrap();
        let id = note.split_whitespace().find(|w| w.starts_with("tok_")).unwrap().to_owned();
        (secret, id)
    };
    let (secret, id) = create(ORG);
    let (revoked_secret, revoked_id) = create(ORG);
    assert!(secret.starts_with("spt_") && secret.len() > 60);
    let out = run(&dir.0, &["token", "revoke", &revoked_id], &env);
    assert!(out.status.success());
    let out = run(&dir.0, &["token", "revoke", "tok_nope"], &env);
    assert_eq!(out.status.code(), Some(1));
    let listing = String::from_utf8(run(&dir.0, &["token", "list"], &env).stdout).unwrap();
    let line =
        |id: &str| listing.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_owned();
    assert!(line(&id).contains(ORG) && line(&id).ends_with("active"), "{listing}");
    assert!(line(&revoked_id).ends_with("revoked"), "{listing}");
    assert!(!listing.contains(&secret));
    let bad = run(&dir.0, &["token", "create", "--org", "../x"], &env);
    assert_eq!(bad.status.code(), Some(1));

    let server = Server::start(&dir.0, &["--auth", "token"], &env);
    let (status, body) = server.http("GET", "/readyz", &[], None);
    assert_eq!((status, body["catalog"].as_str()), (200, Some("postgres")));
    assert_eq!(server.tenant_call("GET", "/export/jobs", &secret, ORG, None).0, 200);
    let (status, body) = server.tenant_call("GET", "/export/jobs", &secret, "OtherOrg", None);
    assert_eq!((status, body["error_code"].as_str()), (403, Some("403025")));
    let (status, body) = server.tenant_call("GET", "/export/jobs", &revoked_secret, ORG, None);
    assert_eq!((status, body["error_code"].as_str()), (401, Some("401013")));
    let (status, body) = server.tenant_call("GET", "/export/jobs", "dev", ORG, None);
    assert_eq!((status, body["error_code"].as_str()), (401, Some("401013")));
    assert!(server.terminate().success());
}

#[test]
fn unreachable_or_unknown_databases_fail_clearly() {
    let dir = TempDir::new();
    let out = run(&dir.0, &["migrate"], &[("DATABASE_URL", "mysql://x")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));
    let out =
        run(&dir.0, &["migrate"], &[("DATABASE_URL", "postgres://postgres:secret@127.0.0.1:1/x")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the catalog") && !err.contains("secret"), "{err}");
    // The embedded default migrates where SEGPORT_DATA_DIR says, twice without harm.
    for _ in 0..2 {
        let out = run(&dir.0, &["migrate"], &[("SEGPORT_DATA_DIR", "store")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(dir.0.join("store/segport.db").exists());
}

fn store_files_on_disk(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "parquet" || x == "arrow") {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(ORG).join("prod").join("store"), &mut out);
    out
}

/// Short leases and intervals, so that crash tests see a lost lease taken over quickly.
const CRASH_TIMINGS: [&str; 8] = [
    "--lease",
    "2s",
    "--heartbeat",
    "500ms",
    "--reap-interval",
    "300ms",
    "--poll-interval",
    "200ms",
];

/// Creates a dataset of `schema` that feeds the profile store; answers its id.
fn store_dataset(server: &Server, schema: &str) -> String {
    let (status, body) = server.tenant_call(
        "POST",
        "/data/foundation/catalog/dataSets",
        "t",
        ORG,
        Some(&json!({"name": "d", "schemaRef": {"id": schema}, "tags": {"unifiedProfile": ["enabled:true"]}})),
    );
    assert_eq!(status, 201, "{body}");
    body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned()
}

/// A worker killed (SIGKILL at an injected failure point) between writing its files and
/// committing them leaves nothing visible; another worker takes the batch over as attempt 2 once
/// the lease expires, and the first attempt's files are swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_its_commit_leaves_nothing_visible() {
    let db = TestCatalog::postgres().await;
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let data_str = data.to_str().unwrap().to_owned();
    let env = [("DATABASE_URL", db.url.as_str()), ("SEGPORT_DATA_DIR", data_str.as_str())];
    let timings = CRASH_TIMINGS;

    let mut crash_env = env.to_vec();
    crash_env.push(("SEGPORT_FAILPOINTS", "ingest-after-files"));
    let mut crashing = Server::start(&dir.0, &timings, &crash_env);
    let ds = store_dataset(&crashing, "https://ns.adobe.com/xdm/context/profile");
    let (status, batch) = crashing.tenant_call(
        "POST",
        "/data/foundation/import/batches",
        "t",
        ORG,
        Some(&json!({"datasetId": ds, "inputFormat": {"format": "json"}})),
    );
    assert_eq!(status, 201, "{batch}");
    let batch = batch["id"].as_str().unwrap().to_owned();
    let segments = segport_datagen::segments(3);
    let records: String = (0..2_000)
        .filter_map(|n| segport_datagen::profile(3, n, &segments).profile)
        .map(|p| format!("{p}\n"))
        .collect();
    let expected = records.lines().count();
    let (status, body) = crashing.http_bytes(
        "PUT",
        &format!("/data/foundation/import/batches/{batch}/datasets/{ds}/files/p.json"),
        &TENANT_HEADERS,
        records.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = crashing.tenant_call(
        "POST",
        &format!("/data/foundation/import/batches/{batch}?action=COMPLETE"),
        "t",
        ORG,
        None,
    );
    assert_eq!(status, 200, "{body}");

    let exit = eventually(30, "the worker to hit its failure point", || {
        crashing.child.try_wait().unwrap()
    });
    assert!(!exit.success(), "the process was killed: {exit:?}");
    let leftovers = store_files_on_disk(&data);
    assert!(!leftovers.is_empty(), "the first attempt wrote files before dying");
    let first_attempt: std::collections::BTreeSet<String> = leftovers
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap()[33..69].to_owned())
        .collect();
    assert_eq!(first_attempt.len(), 1);

    // Nothing of it is visible.
    let catalog = segport_catalog::connect(&segport_catalog::ConnectOptions::new(db.url.clone()))
        .await
        .unwrap();
    let tenant = segport_model::Tenant::parse(ORG, "prod").unwrap();
    assert!(catalog.store_snapshot(&tenant, None).await.unwrap().files.is_empty());
    let id = segport_model::BatchId::parse(&batch).unwrap();
    assert_eq!(catalog.get_batch(&tenant, &id).await.unwrap().unwrap().status.as_str(), "staging");

    // A healthy worker takes the batch over once the lease has expired.
    let mut healthy_args = timings.to_vec();
    healthy_args.extend(["--maintenance-interval", "300ms", "--file-grace", "0s"]);
    let healthy = Server::start(&dir.0, &healthy_args, &env);
    let done = eventually(60, "the batch to succeed", || {
        let (_, b) = healthy.tenant_call(
            "GET",
            &format!("/data/foundation/catalog/batches/{batch}"),
            "t",
            ORG,
            None,
        );
        (b[&batch]["status"] == "success").then(|| b[&batch].clone())
    });
    assert_eq!(done["recordCount"].as_u64(), Some(expected as u64));
    assert_eq!(done["failedRecordCount"].as_u64(), Some(0));
    let files = catalog.store_snapshot(&tenant, None).await.unwrap().files;
    assert!(!files.is_empty());
    for f in &files {
        let attempt = &f.path.rsplit('/').next().unwrap()[33..69];
        assert!(!first_attempt.contains(attempt), "{} comes from the killed attempt", f.path);
    }
    // Exactly once: one set of files (each with its membership index and row file), all from
    // the second attempt; the first attempt's are swept.
    let name = |p: &str| p.rsplit('/').next().unwrap().to_owned();
    let committed: std::collections::BTreeSet<String> = files
        .iter()
        .flat_map(|f| {
            let companions = segport_store::layout::companions(&f.path);
            assert_eq!(companions.len(), 2, "{} has an index and a row file", f.path);
            std::iter::once(f.path.clone()).chain(companions).map(|p| name(&p))
        })
        .collect();
    eventually(30, "the first attempt's files to be swept", || {
        let remaining: std::collections::BTreeSet<String> =
            store_files_on_disk(&data).iter().map(|p| name(p.to_str().unwrap())).collect();
        (remaining == committed).then_some(())
    });
    assert!(healthy.terminate().success());
}

/// The whole export path through the real binary: ingest over HTTP, an export whose first worker
/// is killed after writing its files (nothing visible), a second worker completing it as attempt
/// 2 exactly once, and the files downloaded through Data Access and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_survive_a_crash_and_are_downloaded_through_data_access() {
    let db = TestCatalog::postgres().await;
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let data_str = data.to_str().unwrap().to_owned();
    let env = [("DATABASE_URL", db.url.as_str()), ("SEGPORT_DATA_DIR", data_str.as_str())];
    let timings = CRASH_TIMINGS;
    let mut crash_env = env.to_vec();
    crash_env.push(("SEGPORT_FAILPOINTS", "export-after-files"));
    let mut crashing = Server::start(&dir.0, &timings, &crash_env);

    let profiles = store_dataset(&crashing, "https://ns.adobe.com/xdm/context/profile");
    let export = store_dataset(&crashing, "https://ns.adobe.com/xdm/context/profile__union");
    let segments = segport_datagen::segments(9);
    let records: String = (0..1_500)
        .filter_map(|n| segport_datagen::profile(9, n, &segments).profile)
        .map(|p| format!("{p}\n"))
        .collect();
    let (_, batch) = crashing.tenant_call(
        "POST",
        "/data/foundation/import/batches",
        "t",
        ORG,
        Some(&json!({"datasetId": profiles, "inputFormat": {"format": "json"}})),
    );
    let batch = batch["id"].as_str().unwrap().to_owned();
    crashing.http_bytes(
        "PUT",
        &format!("/data/foundation/import/batches/{batch}/datasets/{profiles}/files/p.json"),
        &TENANT_HEADERS,
        records.as_bytes(),
    );
    crashing.tenant_call(
        "POST",
        &format!("/data/foundation/import/batches/{batch}?action=COMPLETE"),
        "t",
        ORG,
        None,
    );
    eventually(30, "the ingest", || {
        let (_, b) = crashing.tenant_call(
            "GET",
            &format!("/data/foundation/catalog/batches/{batch}"),
            "t",
            ORG,
            None,
        );
        (b[&batch]["status"] == "success").then_some(())
    });

    let job = json!({
        "destination": {"datasetId": export},
        "schema": {"name": "_xdm.context.profile"},
        "fields": "identities.id,personalEmail.address",
        "filter": {"segments": [{"segmentId": segments[0].id}]}
    });
    let (status, created) = crashing.tenant_call("POST", "/export/jobs", "t", ORG, Some(&job));
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let out_batch = created["destination"]["batchId"].as_str().unwrap().to_owned();
    let exit = eventually(30, "the worker to die after writing its files", || {
        crashing.child.try_wait().unwrap()
    });
    assert!(!exit.success());
    let batch_dir = data.join(ORG).join("prod").join("batches").join(&out_batch);
    let first: Vec<String> = std::fs::read_dir(&batch_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(first.len(), 1, "one attempt folder: {first:?}");

    // Nothing is visible: the job still runs, its batch has no files.
    let healthy = Server::start(&dir.0, &timings, &env);
    let (_, before) = healthy.tenant_call("GET", &format!("/export/jobs/{id}"), "t", ORG, None);
    assert_ne!(before["status"], "SUCCEEDED");
    let (_, listed) = healthy.tenant_call(
        "GET",
        &format!("/data/foundation/export/batches/{out_batch}/files"),
        "t",
        ORG,
        None,
    );
    assert_eq!(listed["data"], json!([]));

    let done = eventually(60, "attempt 2 to finish the export", || {
        let (_, j) = healthy.tenant_call("GET", &format!("/export/jobs/{id}"), "t", ORG, None);
        (j["status"] == "SUCCEEDED").then_some(j)
    });
    let second = done["computeGatewayJobId"]["exportJob"].as_str().unwrap().to_owned();
    assert_ne!(second, first[0]);
    // The committing worker deletes the other attempts' folders right after its commit, so
    // the job can read SUCCEEDED a moment before they are gone.
    let folders = || -> Vec<String> {
        std::fs::read_dir(&batch_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    eventually(10, "only the committed attempt's folder to remain", || {
        (folders() == vec![second.clone()]).then_some(())
    });

    // Data Access lists the committed files; they download whole and by range, and read back.
    let (_, listed) = healthy.tenant_call(
        "GET",
        &format!("/data/foundation/export/batches/{out_batch}/files"),
        "t",
        ORG,
        None,
    );
    let file_id = listed["data"][0]["dataSetFileId"].as_str().unwrap().to_owned();
    let (_, files) = healthy.tenant_call(
        "GET",
        &format!("/data/foundation/export/files/{file_id}"),
        "t",
        ORG,
        None,
    );
    let names: Vec<String> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!names.is_empty());
    let mut rows = 0;
    for name in &names {
        let (status, _, body) =
            healthy.download(&format!("/data/foundation/export/files/{file_id}?path={name}"), &[]);
        assert_eq!(status, 200);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(body.clone()),
        )
        .unwrap();
        let schema = reader.schema().clone();
        assert!(
            schema.field_with_name("identities").is_ok()
                && schema.field_with_name("personalEmail").is_ok(),
            "{schema:?}"
        );
        for b in reader.build().unwrap() {
            rows += b.unwrap().num_rows();
        }
        let (status, head, part) = healthy.download(
            &format!("/data/foundation/export/files/{file_id}?path={name}"),
            &[("Range", "bytes=4-99")],
        );
        assert_eq!(status, 206);
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-range: bytes 4-99/{}", body.len())),
            "{head}"
        );
        assert_eq!(part, body[4..100]);
    }
    assert!(rows > 0);
    assert_eq!(done["metrics"]["totalExportedProfileCounter"].as_u64(), Some(rows as u64));
    assert!(healthy.terminate().success());
}

/// `segport generate` is deterministic for a seed, and `segport ingest` loads its files into a
/// dataset on the embedded default as one batch, without a running server.
#[test]
fn generate_then_ingest_from_the_command_line() {
    let dir = TempDir::new();
    for out in ["a", "b"] {
        let out = run(&dir.0, &["generate", "--profiles", "400", "--seed", "7", "--out", out], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for f in ["profiles.ndjson", "events.ndjson", "segments.json"] {
        let a = std::fs::read(dir.0.join("a").join(f)).unwrap();
        assert_eq!(a, std::fs::read(dir.0.join("b").join(f)).unwrap(), "{f} differs for one seed");
        assert!(!a.is_empty());
    }
    let profiles =
        std::fs::read_to_string(dir.0.join("a/profiles.ndjson")).unwrap().lines().count();

    let server = Server::start(&dir.0, &[], &[]);
    let ds = store_dataset(&server, "https://ns.adobe.com/xdm/context/profile");
    assert!(server.terminate().success());
    let out = run(
        &dir.0,
        &[
            "ingest",
            "--org",
            ORG,
            "--sandbox",
            "prod",
            "--dataset",
            &ds,
            "--quiet",
            "a/profiles.ndjson",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("success — {profiles} records ingested, 0 failed")), "{err}");
    // The batch kept a copy of its input; with --link it shares the input's bytes instead.
    use std::os::unix::fs::MetadataExt;
    let links = |f: &str| std::fs::metadata(dir.0.join(f)).unwrap().nlink();
    assert_eq!(links("a/profiles.ndjson"), 1);
    let args = ["ingest", "--link", "--org", ORG, "--sandbox", "prod", "--dataset", &ds];
    let out = run(&dir.0, &[&args[..], &["--quiet", "b/profiles.ndjson"]].concat(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("success — {profiles} records ingested, 0 failed")), "{err}");
    assert_eq!(links("b/profiles.ndjson"), 2, "the upload is a hard link of the input");
    // An unknown dataset is a clear error, not a crash.
    let out = run(
        &dir.0,
        &[
            "ingest",
            "--org",
            ORG,
            "--sandbox",
            "prod",
            "--dataset",
            "5b7c86968f7b6501e21ba9df",
            "a/profiles.ndjson",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dataset"));
}

/// Issue 8, point 6: `serve` on a busy port fails before it opens the catalog or starts a
/// worker: nothing is created in its data directory.
#[test]
fn a_busy_port_fails_before_anything_starts() {
    let dir = TempDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = dir.0.join("data");
    let out =
        run(&dir.0, &["serve", "--listen", &address, "--data-dir", data.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
    assert!(!data.join("segport.db").exists(), "the catalog was opened: {stderr}");
}

/// Issue 8, point 7: rough edges a new user met. Logs carry no colour codes when stderr is not a
/// terminal; a `--storage-url` that cannot be used is refused naming it (an unknown scheme, or
/// an S3 root that does not answer, without printing its credentials); the release build is
/// stripped, with a `profiling` profile that keeps line tables for perf.
#[test]
fn rough_edges_are_smoothed() {
    let dir = TempDir::new();
    let out = run(&dir.0, &["serve", "--listen", "127.0.0.1:0", "--storage-url", "gs://b/p"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gs://b/p: use file:///absolute/path or s3://bucket/prefix"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "ANSI codes in a piped log: {stderr:?}");
    let secret = "do-not-print-this-secret";
    let unreachable = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "us-east-1"),
    ];
    let args = ["serve", "--listen", "127.0.0.1:0", "--storage-url", "s3://b/p"];
    let out = run(&dir.0, &args, &unreachable);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the storage root s3://b/p does not answer"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    // The server's own text log, piped, is plain text too.
    let mut child = common::segport(&dir.0, &["serve", "--listen", "127.0.0.1:0"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("segport serving") {
        assert!(std::io::BufRead::read_line(&mut stderr, &mut log).unwrap() > 0, "{log}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("INFO") && !log.contains('\u{1b}'), "{log:?}");

    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
    let profile = &manifest["profile"];
    assert_eq!(profile["release"]["strip"].as_bool(), Some(true));
    assert_eq!(profile["release"]["debug"].as_bool(), Some(false));
    assert_eq!(profile["profiling"]["inherits"].as_str(), Some("release"));
    assert_eq!(profile["profiling"]["debug"].as_str(), Some("line-tables-only"));
}

/// A proxy in front of `server` that answers the first upload (PUT) with a 503 and forwards
/// everything else, one request per connection; it records each request's method and path.
fn flaky_proxy(server: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut head = Vec::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if lower.starts_with("connection:") {
                    continue;
                }
                if line == "\r\n" {
                    head.push("connection: close\r\n".to_owned());
                    head.push(line);
                    break;
                }
                head.push(line);
            }
            if head.is_empty() {
                continue;
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request_line = head[0].trim().to_owned();
            let first_put = {
                let mut seen = log.lock().unwrap();
                let first = request_line.starts_with("PUT ")
                    && !seen.iter().any(|r: &String| r.starts_with("PUT "));
                seen.push(request_line);
                first
            };
            if first_put {
                let answer = r#"{"title":"injected failure"}"#;
                let _ = write!(
                    client,
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                continue;
            }
            let mut upstream = std::net::TcpStream::connect(server).unwrap();
            upstream.write_all(head.concat().as_bytes()).unwrap();
            upstream.write_all(&body).unwrap();
            let mut answer = Vec::new();
            let _ = upstream.read_to_end(&mut answer);
            let _ = client.write_all(&answer);
        }
    });
    (address, seen)
}

/// Issue 8, point 3: `segport ingest` never invents a catalog (outside the server's directory
/// it says where it looked and how to point it elsewhere), and with `--server` it loads through
/// a running deployment's Batch Ingestion API with only a token: the org comes from the token,
/// a file over the server's per-file cap goes as several files of one batch, a failed upload
/// is sent again, and the batch is completed once.
#[test]
fn ingest_needs_a_catalog_or_a_server() {
    let dir = TempDir::new();
    let elsewhere = dir.0.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run(&elsewhere, &["generate", "--profiles", "60", "--seed", "3", "--out", "g"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let profiles = std::fs::read_to_string(elsewhere.join("g/profiles.ndjson")).unwrap();
    let records = profiles.lines().count();

    let args =
        ["ingest", "--org", ORG, "--sandbox", "prod", "--dataset", "5b7c86968f7b6501e21ba9df"];
    let out = run(&elsewhere, &[&args[..], &["g/profiles.ndjson"]].concat(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no segport catalog at ./segport-data/segport.db"), "{err}");
    assert!(err.contains("--data-dir") && err.contains("--server"), "{err}");
    assert!(!elsewhere.join("segport-data").exists(), "a catalog was created");

    let out = run(&dir.0, &["migrate"], &[]);
    assert!(out.status.success());
    let out = run(&dir.0, &["token", "create", "--org", ORG], &[]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cap = profiles.len() / 3;
    let server =
        Server::start(&dir.0, &["--auth", "token", "--max-upload-bytes", &cap.to_string()], &[]);
    let (status, body) = server.tenant_call(
        "POST",
        "/data/foundation/catalog/dataSets",
        &token,
        ORG,
        Some(&json!({"name": "d", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile"}, "tags": {"unifiedProfile": ["enabled:true"]}})),
    );
    assert_eq!(status, 201, "{body}");
    let dataset = body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned();
    let (proxy, requests) = flaky_proxy(server.addr);
    let url = format!("http://{proxy}");
    let out = run(
        &elsewhere,
        &[
            "ingest",
            "--server",
            &url,
            "--sandbox",
            "prod",
            "--dataset",
            &dataset,
            "--quiet",
            "g/profiles.ndjson",
        ],
        &[("SEGPORT_TOKEN", &token)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("success — {records} records ingested, 0 failed")), "{err}");
    assert!(err.contains("sending it again"), "{err}");
    assert!(!elsewhere.join("segport-data").exists(), "a catalog was created");

    let requests = requests.lock().unwrap().clone();
    let count = |prefix: &str| requests.iter().filter(|r| r.starts_with(prefix)).count();
    let completes = requests.iter().filter(|r| r.contains("action=COMPLETE")).count();
    assert_eq!(completes, 1, "{requests:?}");
    let names: std::collections::BTreeSet<&str> = requests
        .iter()
        .filter(|r| r.starts_with("PUT "))
        .filter_map(|r| r.split(' ').nth(1)?.rsplit('/').next())
        .collect();
    assert!(names.len() >= 3, "split into files under the cap: {requests:?}");
    assert_eq!(count("PUT "), names.len() + 1, "one upload was sent twice: {requests:?}");
    // Each file the server keeps is under its cap.
    let batch = requests[0].clone();
    assert!(batch.starts_with("POST /data/foundation/import/batches"), "{requests:?}");
    let batch_id = requests
        .iter()
        .find_map(|r| r.split("/import/batches/").nth(1)?.split(['/', '?']).next())
        .unwrap()
        .to_owned();
    let (status, files) = server.tenant_call(
        "GET",
        &format!("/data/foundation/export/files/{batch_id}"),
        &token,
        ORG,
        None,
    );
    assert_eq!(status, 200, "{files}");
    let sizes: Vec<usize> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["length"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), profiles.len());
    assert!(sizes.iter().all(|s| *s <= cap), "{sizes:?}");
    assert!(server.terminate().success());
}

/// Issue 10: one export shared by three worker processes on an S3 root (the test server), one of
/// which is killed with SIGKILL right after it wrote a unit's files. The job still succeeds
/// once; the dead attempt's objects are gone from the batch; what Data Access serves equals a
/// naive evaluation of the job over the ingested records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_an_export_on_s3_and_survive_a_crash() {
    let db = TestCatalog::postgres().await;
    let dir = TempDir::new();
    let endpoint = std::env::var("SEGPORT_TEST_S3_ENDPOINT").expect(
        "SEGPORT_TEST_S3_ENDPOINT: the S3-compatible test server (scripts/test starts one)",
    );
    let root = format!("s3://segport-test/cli-{}", segport_model::ids::new_uuid().simple());
    let aws = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let process_env = |name: &str, failpoints: &str| -> Vec<(String, String)> {
        let data = dir.0.join(name);
        let mut env: Vec<(String, String)> =
            aws.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("DATABASE_URL".into(), db.url.clone()));
        env.push(("SEGPORT_STORAGE_URL".into(), root.clone()));
        // Each process its own data directory: its own cache, nothing shared but S3.
        env.push(("SEGPORT_DATA_DIR".into(), data.to_str().unwrap().to_owned()));
        env.push(("SEGPORT_EXPORT_UNIT_PROFILES".into(), "200".into()));
        env.push(("SEGPORT_FAILPOINTS".into(), failpoints.into()));
        env
    };
    let start = |name: &str, role: &str, failpoints: &str| {
        let env = process_env(name, failpoints);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = CRASH_TIMINGS.to_vec();
        args.extend(["--role", role]);
        if !failpoints.is_empty() {
            // One unit at a time: exactly one is lost with the process.
            args.extend(["--worker-slots", "1"]);
        }
        Server::start(&dir.0, &args, &env)
    };
    let api = start("api", "api", "");
    let mut crashing = start("w1", "worker", "export-after-files");

    let profiles = store_dataset(&api, "https://ns.adobe.com/xdm/context/profile");
    let export = store_dataset(&api, "https://ns.adobe.com/xdm/context/profile__union");
    let segments = segport_datagen::segments(9);
    let records: Vec<serde_json::Value> =
        (0..1_500).filter_map(|n| segport_datagen::profile(9, n, &segments).profile).collect();
    let ndjson: String = records.iter().map(|p| format!("{p}\n")).collect();
    let (_, batch) = api.tenant_call(
        "POST",
        "/data/foundation/import/batches",
        "t",
        ORG,
        Some(&json!({"datasetId": profiles, "inputFormat": {"format": "json"}})),
    );
    let batch = batch["id"].as_str().unwrap().to_owned();
    api.http_bytes(
        "PUT",
        &format!("/data/foundation/import/batches/{batch}/datasets/{profiles}/files/p.json"),
        &TENANT_HEADERS,
        ndjson.as_bytes(),
    );
    let path = format!("/data/foundation/import/batches/{batch}?action=COMPLETE");
    api.tenant_call("POST", &path, "t", ORG, None);
    eventually(60, "the ingest", || {
        let path = format!("/data/foundation/catalog/batches/{batch}");
        let (_, b) = api.tenant_call("GET", &path, "t", ORG, None);
        (b[&batch]["status"] == "success").then_some(())
    });

    let segment = &segments[0].id;
    let job = json!({
        "destination": {"datasetId": export},
        "schema": {"name": "_xdm.context.profile"},
        "fields": "identities.id",
        "filter": {"segments": [{"segmentId": segment}]}
    });
    let (status, created) = api.tenant_call("POST", "/export/jobs", "t", ORG, Some(&job));
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let out_batch = created["destination"]["batchId"].as_str().unwrap().to_owned();
    // The first worker plans the job, then dies after writing its first unit's files.
    let exit = eventually(60, "the worker to die after writing a unit's files", || {
        crashing.child.try_wait().unwrap()
    });
    assert!(!exit.success());
    let storage = segport_store::Storage::from_url_with(
        &root,
        aws.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap();
    let batch_dir = segport_store::storage::batch_dir(ORG, "prod", &out_batch);
    let attempt_of =
        |path: &object_store::path::Path| path.parts().nth(4).unwrap().as_ref().to_owned();
    // The dead unit's files (one per partition of the unit with rows), all of one attempt.
    let dead: std::collections::BTreeSet<String> =
        storage.list(&batch_dir).await.unwrap().iter().map(|(p, _, _)| attempt_of(p)).collect();
    assert_eq!(dead.len(), 1, "the dead unit's attempt: {dead:?}");

    // Two more workers take over: the lost unit is retried, every other unit runs once.
    let w2 = start("w2", "worker", "");
    let w3 = start("w3", "worker", "");
    let done = eventually(120, "the export to succeed", || {
        let (_, j) = api.tenant_call("GET", &format!("/export/jobs/{id}"), "t", ORG, None);
        assert_ne!(j["status"], "FAILED", "{j}");
        (j["status"] == "SUCCEEDED").then_some(j)
    });
    let units = done["units"].as_array().unwrap();
    assert!(units.len() >= 8, "{done}");
    assert!(units.iter().all(|u| u["state"] == "done"), "{done}");
    let retried: Vec<&serde_json::Value> = units.iter().filter(|u| u["attempt"] != 1).collect();
    assert_eq!(retried.len(), 1, "only the lost unit ran twice: {done}");

    // The batch holds exactly the committed files: the dead attempt's are gone.
    let (_, listed) = api.tenant_call(
        "GET",
        &format!("/data/foundation/export/batches/{out_batch}/files"),
        "t",
        ORG,
        None,
    );
    let file_id = listed["data"][0]["dataSetFileId"].as_str().unwrap().to_owned();
    let (_, files) =
        api.tenant_call("GET", &format!("/data/foundation/export/files/{file_id}"), "t", ORG, None);
    let names: Vec<String> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    let mut stored: Vec<String> = Vec::new();
    eventually(30, "only committed files in the batch", || {
        let listed = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(storage.list(&batch_dir))
        });
        stored =
            listed.unwrap().into_iter().map(|(p, _, _)| p.filename().unwrap().to_owned()).collect();
        stored.sort();
        let mut want = names.clone();
        want.sort();
        (stored == want).then_some(())
    });
    assert!(!stored.iter().any(|name| dead.iter().any(|d| name.contains(d.as_str()))));

    // Downloaded rows against a naive evaluation: profiles with a realized or existing
    // membership of the segment, each with its identities' ids.
    let mut got: Vec<Vec<String>> = Vec::new();
    for name in &names {
        let (status, _, body) =
            api.download(&format!("/data/foundation/export/files/{file_id}?path={name}"), &[]);
        assert_eq!(status, 200);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(body),
        )
        .unwrap()
        .build()
        .unwrap();
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        for b in reader {
            writer.write(&b.unwrap()).unwrap();
        }
        writer.finish().unwrap();
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&writer.into_inner()).unwrap_or_default();
        for row in rows {
            let mut ids: Vec<String> = row["identities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            got.push(ids);
        }
    }
    let mut want: Vec<Vec<String>> = records
        .iter()
        .filter(|r| {
            let status = &r["segmentMembership"]["ups"][segment.as_str()]["status"];
            status == "realized" || status == "existing"
        })
        .map(|r| {
            let mut ids: Vec<String> = r["identityMap"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|list| list.as_array().unwrap().iter())
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        })
        .collect();
    got.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got.len(), want.len(), "rows");
    assert!(got == want, "the exported identities differ from the oracle's");
    assert_eq!(done["metrics"]["totalExportedProfileCounter"].as_u64(), Some(want.len() as u64));
    // The workers filled their caches from the bucket, and say so on /metrics.
    let sample = |server: &Server, name: &str| -> f64 {
        let (_, _, body) = server.download("/metrics", &[]);
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} is not on /metrics"))
    };
    let misses =
        sample(&w2, "segport_cache_misses_total") + sample(&w3, "segport_cache_misses_total");
    assert!(misses >= 1.0, "no cache fill");
    assert!(sample(&w2, "segport_cache_bytes") + sample(&w3, "segport_cache_bytes") > 0.0);
    for server in [w2, w3, api] {
        assert!(server.terminate().success());
    }
}
