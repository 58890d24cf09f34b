//! The console in a real browser: headless Chromium (Debian's `chromium`) driven through
//! `chromedriver` over WebDriver, against the real binary in token mode on PostgreSQL, seeded
//! through the API. The test command installs both when they are missing; a run without them
//! fails, naming them, rather than skipping.
//!
//! Screenshots of every page are written under the test's target directory
//! (`console-screenshots/`), so a reviewer can look at what the browser saw.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use segport_catalog::testing::TestCatalog;
use serde_json::{json, Value};

const OTHER_ORG: &str = "OtherOrg@AdobeOrg";
/// WebDriver's codes of the Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// A `chromedriver` process on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let binary = tool("SEGPORT_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        eventually(20, "chromedriver to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a browser tool: `$var` when set, else `default`, which must exist.
fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: the console's browser tests need Debian's chromium and chromium-driver \
         (scripts/test installs them; or set {var})",
        path.display()
    );
    path
}

/// A headless Chromium session at 1280×900 that downloads into `downloads`.
async fn browser(driver: &Driver, downloads: &Path) -> Client {
    let chromium = tool("SEGPORT_CHROMIUM", "/usr/bin/chromium");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            },
        }),
    );
    // chromedriver listens on loopback over plain HTTP: no TLS.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no browser session from chromedriver: {e}"))
}

/// Where screenshots go: a directory of the test target, kept after the run.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The element `css` of the page a click is loading, once it is there (at most 10 s).
async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap()
}

/// Waits until the text of the element `css` is `want` (the page may reload meanwhile).
async fn wait_for_text(client: &Client, css: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if text.trim() == want {
                    return;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{css} never read {want:?} (last {last:?})");
}

/// Fails when a visible control of the page has no label, or when the page is wider than the
/// window (it must read at this width without scrolling sideways).
async fn check_usable(client: &Client, page: &str) {
    let problems = client
        .execute(
            r#"
            var problems = [];
            document.querySelectorAll("input, select, textarea, button").forEach(function (e) {
              if (e.type === "hidden") return;
              var named = (e.labels && e.labels.length > 0) || e.getAttribute("aria-label")
                || (e.tagName === "BUTTON" && e.textContent.trim());
              if (!named) problems.push("unlabelled " + e.outerHTML.slice(0, 80));
              if (e.tabIndex < 0) problems.push("not reachable by keyboard " + e.outerHTML.slice(0, 80));
            });
            var wide = document.documentElement.scrollWidth - window.innerWidth;
            if (wide > 1) problems.push("wider than the window by " + wide + " px");
            return problems;
            "#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(problems, json!([]), "{page}");
}

/// Sends raw bytes (an upload) with a token's headers; the status and JSON answer.
fn upload(server: &Server, token: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("x-api-key", "k"),
        ("x-gw-ims-org-id", ORG),
        ("x-sandbox-name", "prod"),
        ("Content-Type", "application/octet-stream"),
    ];
    server.http_bytes("PUT", path, &headers, body)
}

/// Ingests `ndjson` into dataset `ds` through the Batch Ingestion API and waits for success.
fn ingest(server: &Server, token: &str, ds: &str, ndjson: &str) {
    let create = json!({"datasetId": ds, "inputFormat": {"format": "json"}});
    let (status, batch) =
        server.tenant_call("POST", "/data/foundation/import/batches", token, ORG, Some(&create));
    assert_eq!(status, 201, "{batch}");
    let id = batch["id"].as_str().unwrap().to_owned();
    let path = format!("/data/foundation/import/batches/{id}/datasets/{ds}/files/f.json");
    let (status, body) = upload(server, token, &path, ndjson.as_bytes());
    assert_eq!(status, 200, "{body}");
    let complete = format!("/data/foundation/import/batches/{id}?action=COMPLETE");
    assert_eq!(server.tenant_call("POST", &complete, token, ORG, None).0, 200);
    eventually(60, "the ingest to succeed", || {
        let (_, got) = server.tenant_call(
            "GET",
            &format!("/data/foundation/catalog/batches/{id}"),
            token,
            ORG,
            None,
        );
        (got[&id]["status"] == "success").then_some(())
    });
}

fn create_dataset(server: &Server, token: &str, body: Value) -> String {
    let (status, created) =
        server.tenant_call("POST", "/data/foundation/catalog/dataSets", token, ORG, Some(&body));
    assert_eq!(status, 201, "{created}");
    created[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned()
}

/// `segport token create --org org`: the token's secret.
fn token(dir: &Path, env: &[(&str, &str)], org: &str) -> String {
    let out = run(dir, &["token", "create", "--org", org, "--expires-in", "1h"], env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Signs in through the form with the keyboard only: Tab to the token, type it, Tab to the
/// sandbox, type it, Enter.
async fn sign_in(client: &Client, base: &str, secret: &str) {
    client.goto(&format!("{base}/ui/jobs")).await.unwrap();
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/sign-in", "a page without a session leads to the sign-in");
    client.find(Locator::Css("input[name=token]")).await.unwrap().click().await.unwrap();
    let token = client.active_element().await.unwrap();
    assert_eq!(token.attr("name").await.unwrap().as_deref(), Some("token"));
    token.send_keys(secret).await.unwrap();
    token.send_keys(TAB).await.unwrap();
    let sandbox = client.active_element().await.unwrap();
    assert_eq!(sandbox.attr("name").await.unwrap().as_deref(), Some("sandbox"), "Tab order");
    sandbox.send_keys("prod").await.unwrap();
    sandbox.send_keys(ENTER).await.unwrap();
    // Enter posts the form; the answer is the jobs page once it has loaded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = client.current_url().await.unwrap();
        if url.path() == "/ui/jobs" && client.find(Locator::Css("h1")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "not signed in: still at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole console, as an operator uses it, in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let db = TestCatalog::postgres().await;
    let dir = TempDir::new();
    let data = dir.0.join("data").to_str().unwrap().to_owned();
    let env = [("DATABASE_URL", db.url.as_str()), ("SEGPORT_DATA_DIR", data.as_str())];
    let out = run(&dir.0, &["migrate"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (secret, other) = (token(&dir.0, &env, ORG), token(&dir.0, &env, OTHER_ORG));
    let downloads = dir.0.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();

    // First run: exports pause before writing, so that a running one can be cancelled.
    let mut paused_env = env.to_vec();
    paused_env.push(("SEGPORT_FAILPOINTS", "export-pause"));
    let server = Server::start(&dir.0, &["--auth", "token"], &paused_env);
    let base = format!("http://{}", server.addr);

    // Seed through the API: profiles with memberships of s1, one profile's events.
    let profiles = create_dataset(
        &server,
        &secret,
        json!({"name": "crm", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile"}, "tags": {"unifiedProfile": ["enabled:true"]}}),
    );
    let statuses = ["realized", "existing", "exited"];
    let members: Vec<(usize, &str)> =
        (0..40).filter(|i| i % 2 == 0).map(|i| (i, statuses[(i / 2) % 3])).collect();
    let records: String = (0..40)
        .map(|i| {
            let membership = members
                .iter()
                .find(|(m, _)| *m == i)
                .map(|(_, s)| json!({"ups": {"s1": {"status": s}}}))
                .unwrap_or(json!({}));
            let record = json!({
                "identityMap": {"ECID": [{"id": format!("p{i}"), "primary": true}]},
                "person": {"name": format!("Person {i}")},
                "segmentMembership": membership,
            });
            format!("{record}\n")
        })
        .collect();
    ingest(&server, &secret, &profiles, &records);
    let events = create_dataset(
        &server,
        &secret,
        json!({"name": "web", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/experienceevent"}, "tags": {"unifiedProfile": ["enabled:true"]}}),
    );
    let event = json!({"_id": "ev-42", "timestamp": "2026-11-30T10:00:00Z", "eventType": "web.page", "identityMap": {"ECID": [{"id": "p4", "primary": true}]}});
    ingest(&server, &secret, &events, &format!("{event}\n"));
    let export = create_dataset(
        &server,
        &secret,
        json!({"name": "outbox", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}, "tags": {}}),
    );
    // Creating an export dataset needs no unifiedProfile tag; its class comes from the schema.
    let job_body =
        json!({"destination": {"datasetId": export}, "schema": {"name": "_xdm.context.profile"}});
    let (status, job) =
        server.tenant_call("POST", "/data/core/ups/export/jobs", &secret, ORG, Some(&job_body));
    assert_eq!(status, 200, "{job}");
    let running = job["id"].as_i64().unwrap();

    let driver = Driver::start();
    let client = browser(&driver, &downloads).await;
    sign_in(&client, &base, &secret).await;
    check_usable(&client, "jobs").await;
    // The job made through the API is listed, running (its export paused).
    let row = format!("tr[data-job=\"{running}\"] .status");
    wait_for_text(&client, &row, "PROCESSING", 30).await;
    screenshot(&client, "jobs").await;

    // A state-changing request without the page's form token is refused, and changes nothing.
    let refused = client
        .execute_async(
            &format!(
                r#"var done = arguments[0];
                fetch("/ui/jobs/{running}/cancel", {{method: "POST",
                  headers: {{"content-type": "application/x-www-form-urlencoded"}}, body: "csrf=forged"}})
                  .then(function (r) {{ done(r.status); }});"#
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403));

    // Cancel the running job from its page; it ends FAILED without a reload by the test.
    client.goto(&format!("{base}/ui/jobs/{running}")).await.unwrap();
    check_usable(&client, "job").await;
    client
        .find(Locator::Css("form[action$=\"/cancel\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&client, "#status", "FAILED", 60).await;
    let (_, cancelled) = server.tenant_call(
        "GET",
        &format!("/data/core/ups/export/jobs/{running}"),
        &secret,
        ORG,
        None,
    );
    assert_eq!(cancelled["status"], "FAILED", "{cancelled}");
    assert!(cancelled["errors"].to_string().contains("cancel"), "{cancelled}");
    drop(server);

    // Second run, without the pause: the same catalog, data and browser session.
    // Webhooks may call this test's receiver on loopback.
    let server =
        Server::start(&dir.0, &["--auth", "token", "--webhook-allow-network", "127.0.0.0/8"], &env);
    let base = format!("http://{}", server.addr);

    // New export through the form: segment s1 (realized and existing, the defaults), previewed.
    client.goto(&format!("{base}/ui/new")).await.unwrap();
    check_usable(&client, "new export").await;
    let wanted = members.iter().filter(|(_, s)| *s != "exited").count();
    let shown = client.find(Locator::Css(".segments")).await.unwrap().text().await.unwrap();
    for status in statuses {
        let n = members.iter().filter(|(_, s)| *s == status).count();
        assert!(shown.contains(&format!("{status} {n}")), "{shown}");
    }
    client.find(Locator::Css("#dataset")).await.unwrap().select_by_value(&export).await.unwrap();
    client
        .find(Locator::Css("input[name=segment][value=s1]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let fields = client.find(Locator::Css("#fields")).await.unwrap();
    fields.send_keys("person.name").await.unwrap();
    let body: Value = serde_json::from_str(
        &client.find(Locator::Css("#body")).await.unwrap().prop("value").await.unwrap().unwrap(),
    )
    .unwrap();
    assert_eq!(body["filter"]["segments"][0]["segmentId"], "s1", "{body}");
    assert_eq!(body["fields"], "person.name", "{body}");
    client.find(Locator::Css("#preview")).await.unwrap().click().await.unwrap();
    wait_for_text(&client, "#preview-count", &wanted.to_string(), 30).await;
    screenshot(&client, "new-export").await;
    client.find(Locator::Css("#submit button[type=submit]")).await.unwrap().click().await.unwrap();
    // The job's page follows it to SUCCEEDED by itself.
    wait_for_text(&client, "#status", "SUCCEEDED", 60).await;
    let job_path = client.current_url().await.unwrap().path().to_owned();
    let created: i64 = job_path.trim_start_matches("/ui/jobs/").parse().unwrap();
    screenshot(&client, "job").await;
    let (_, done) = server.tenant_call(
        "GET",
        &format!("/data/core/ups/export/jobs/{created}"),
        &secret,
        ORG,
        None,
    );
    assert_eq!(done["metrics"]["totalExportedProfileCounter"], wanted as u64, "{done}");
    let metrics = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("ECID {wanted}")), "counters by namespace: {metrics}");

    // Download its files and read them back: the profiles the preview counted.
    let links = client.find_all(Locator::Css("a[download]")).await.unwrap();
    assert!(!links.is_empty());
    for link in &links {
        assert!(link.attr("aria-label").await.unwrap().is_some_and(|l| l.starts_with("Download ")));
        link.click().await.unwrap();
    }
    let files = eventually(30, "the downloads", || {
        let done: Vec<PathBuf> = std::fs::read_dir(&downloads)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        (done.len() == links.len()).then_some(done)
    });
    let mut rows = 0;
    for file in files {
        let bytes = eventually(10, "a download to finish", || {
            let bytes = std::fs::read(&file).ok()?;
            bytes.ends_with(b"PAR1").then_some(bytes)
        });
        let reader =
            parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        rows += parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows();
    }
    assert_eq!(rows, wanted as i64);

    // Look up a profile: its merged attributes, its source and its event.
    client.goto(&format!("{base}/ui/profile")).await.unwrap();
    check_usable(&client, "profile").await;
    client.find(Locator::Css("input[name=ns]")).await.unwrap().send_keys("ECID").await.unwrap();
    let id = client.find(Locator::Css("input[name=id]")).await.unwrap();
    id.send_keys("p4").await.unwrap();
    id.send_keys(ENTER).await.unwrap();
    wait_for_text(&client, "main h2", "ECID:p4", 20).await;
    let page = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Person 4") && page.contains("ev-42") && page.contains(&profiles),
        "{page}"
    );
    let membership = members.iter().find(|(m, _)| *m == 4).unwrap().1;
    assert!(page.contains(&format!("ups s1 {membership}")), "its membership: {page}");
    screenshot(&client, "profile").await;

    // Datasets: the list, and an upload into the profile dataset with its progress bar.
    client.goto(&format!("{base}/ui/datasets")).await.unwrap();
    check_usable(&client, "datasets").await;
    screenshot(&client, "datasets").await;
    client.goto(&format!("{base}/ui/datasets/{profiles}")).await.unwrap();
    check_usable(&client, "dataset").await;
    let extra = dir.0.join("more.json");
    std::fs::write(
        &extra,
        "{\"identityMap\": {\"ECID\": [{\"id\": \"late\", \"primary\": true}]}}\n",
    )
    .unwrap();
    client
        .find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(extra.to_str().unwrap())
        .await
        .unwrap();
    client.find(Locator::Css("#send")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client.find(Locator::Css("#upload-result")).await.unwrap().text().await.unwrap();
        if text.starts_with("Batch ") {
            break;
        }
        assert!(Instant::now() < deadline, "no upload result: {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let progress = client
        .execute("return document.getElementById('upload-progress').value;", vec![])
        .await
        .unwrap();
    assert_eq!(progress, json!(100));
    screenshot(&client, "dataset").await;
    eventually(60, "the uploaded profile", || {
        let (status, _) = server.tenant_call(
            "GET",
            "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityIdNS=ECID&entityId=late",
            &secret,
            ORG,
            None,
        );
        (status == 200).then_some(())
    });

    // Workers and queue: the server's own worker is alive.
    client.goto(&format!("{base}/ui/workers")).await.unwrap();
    check_usable(&client, "workers").await;
    let text = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("worker(s) alive") && !text.contains("0 worker(s)"), "{text}");
    screenshot(&client, "workers").await;

    // Schedules: one made from the form (its job body prefilled with the export dataset),
    // then deactivated from its page.
    client.goto(&format!("{base}/ui/schedules")).await.unwrap();
    check_usable(&client, "schedules").await;
    client.find(Locator::Css("#schedule-name")).await.unwrap().send_keys("nightly").await.unwrap();
    let prefilled =
        client.find(Locator::Css("#schedule-job")).await.unwrap().prop("value").await.unwrap();
    assert!(
        prefilled.is_some_and(|body| body.contains(&export)),
        "the job body names the export dataset"
    );
    client.find(Locator::Css("#schedule-create")).await.unwrap().click().await.unwrap();
    wait_for_text(&client, "#schedule-state", "active", 10).await;
    let next = client.find(Locator::Css("#schedule-next")).await.unwrap().text().await.unwrap();
    assert!(next.contains("13:30:00") && next.contains("(in "), "daily at 13:30 UTC: {next}");
    let (status, listed) =
        server.tenant_call("GET", "/data/core/ups/config/schedules", &secret, ORG, None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["_page"]["totalCount"], 1);
    let schedule = &listed["children"][0];
    assert_eq!(
        (schedule["name"].as_str(), schedule["state"].as_str()),
        (Some("nightly"), Some("active"))
    );
    assert_eq!(schedule["nextDueTime"].as_i64().unwrap() % 86_400_000, (13 * 60 + 30) * 60_000);
    check_usable(&client, "schedule").await;
    screenshot(&client, "schedule").await;
    client.find(Locator::Css("#schedule-toggle")).await.unwrap().click().await.unwrap();
    wait_for_text(&client, "#schedule-state", "inactive", 10).await;
    let (_, listed) =
        server.tenant_call("GET", "/data/core/ups/config/schedules", &secret, ORG, None);
    assert_eq!(listed["children"][0]["state"], "inactive");
    client.goto(&format!("{base}/ui/schedules")).await.unwrap();
    screenshot(&client, "schedules").await;

    // Webhooks: an endpoint added from the form shows its secret once; a test event sent from
    // its page reaches a receiver in this test, which checks the signature itself.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    let received =
        std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String, String, String)>::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let h =
                    |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                sink.lock().unwrap().push((
                    h("webhook-id"),
                    h("webhook-timestamp"),
                    h("webhook-signature"),
                    body,
                ));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(receiver, app).await.unwrap() });
    client.goto(&format!("{base}/ui/webhooks")).await.unwrap();
    check_usable(&client, "webhooks").await;
    client.find(Locator::Css("#endpoint-url")).await.unwrap().send_keys(&hook).await.unwrap();
    client.find(Locator::Css("#endpoint-create")).await.unwrap().click().await.unwrap();
    // The form posts and the answer is a new page: wait for it rather than reading the old one.
    let whsec = wait_for(&client, "#new-secret").await.text().await.unwrap();
    assert!(whsec.starts_with("whsec_"), "{whsec}");
    screenshot(&client, "webhooks").await;
    client.find(Locator::Css(".notice a")).await.unwrap().click().await.unwrap();
    wait_for(&client, "#endpoint-test").await;
    check_usable(&client, "webhook").await;
    let page = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(!page.contains(&whsec), "the secret is shown once only");
    client.find(Locator::Css("#endpoint-test")).await.unwrap().click().await.unwrap();
    let (id, timestamp, signature, body) =
        eventually(30, "the test event", || received.lock().unwrap().first().cloned());
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD.decode(&whsec["whsec_".len()..]).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, format!("v1,{expected}"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["type"], "segport.test");
    // The delivery log says so once the page is loaded again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        client.refresh().await.unwrap();
        let log = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        if log.contains("delivered") && log.contains(&id) {
            break;
        }
        assert!(Instant::now() < deadline, "the log never showed the delivery: {log}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    screenshot(&client, "webhook").await;

    // At phone width the jobs list still reads without sideways scrolling.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{base}/ui/jobs")).await.unwrap();
    check_usable(&client, "jobs at phone width").await;
    screenshot(&client, "jobs-phone").await;
    client.set_window_size(1280, 900).await.unwrap();

    // Another org's session sees none of these jobs, and not their pages.
    client
        .find(Locator::Css("form[action=\"/ui/sign-out\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&client, &base, &other).await;
    let rows = client.find_all(Locator::Css("tr[data-job]")).await.unwrap();
    assert!(rows.is_empty(), "another org's session lists no job");
    client.goto(&format!("{base}/ui/jobs/{created}")).await.unwrap();
    let heading = client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert!(heading.starts_with("404"), "{heading}");

    // A session unused for 12 h is over: the next page is the sign-in form.
    let cookie = client.get_named_cookie("segport_ui_session").await.unwrap();
    let id = segport_api::auth::token_sha256(cookie.value());
    let long_ago = segport_model::time::now_ms() - 13 * 3600 * 1000;
    db.catalog.touch_session(&id, "prod", long_ago).await.unwrap();
    client.goto(&format!("{base}/ui/jobs")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/ui/sign-in");
    screenshot(&client, "sign-in").await;

    client.close().await.unwrap();
    assert!(server.terminate().success());
}
