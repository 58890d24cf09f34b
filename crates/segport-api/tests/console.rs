//! The operator console's pages over HTTP (the browser tests drive it in Chromium): a sandbox
//! is picked, the jobs created through the API are listed with their status counts, a job's
//! page shows its request, units and errors, and errors are HTML pages carrying the request id.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;
use segport_api::auth::AuthMode;
use tower::ServiceExt;

both_backends!(
    pages_show_the_sandbox_jobs,
    token_mode_signs_in_with_a_token,
    actions_need_the_form_token,
    new_export_form_previews_and_creates,
    upload_makes_a_completed_batch,
    segment_picker_lists_at_most_a_thousand,
    workers_page_shows_what_the_viewer_may_see,
    workers_page_shows_operators_everything,
    jobs_list_filters_by_destination_and_time
);

/// A GET of a console page with the sandbox cookie (`None`: without): status, headers, body.
async fn page(
    t: &TestApp,
    path: &str,
    tenant: Option<(&str, &str)>,
) -> (StatusCode, header::HeaderMap, String) {
    let (status, headers, bytes) = download(t, path, tenant, None).await;
    (status, headers, String::from_utf8(bytes).unwrap())
}

async fn pages_show_the_sandbox_jobs(setup: Setup) {
    let t = TestApp::new(setup).await;
    // Without a sandbox picked, every page leads to the picker, which lists the known ones.
    let export = t.export_dataset().await;
    // Jobs made through the API, one of them failed.
    let first = t.create_job(minimal_job(&export)).await["id"].as_i64().unwrap();
    let second = t.create_job(minimal_job(&export)).await["id"].as_i64().unwrap();
    t.force_status(second, "FAILED").await;
    let (status, headers, _) = page(&t, "/ui/jobs", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/tenants");
    let (status, _, html) = page(&t, "/ui/tenants", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("{ORG} / {SANDBOX}")), "{html}");
    let (status, headers, _) =
        page(&t, &format!("/ui/tenant?org={}&sandbox={SANDBOX}", ORG.replace('@', "%40")), None)
            .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");

    let tenant = Some((ORG, SANDBOX));
    let (status, _, html) = page(&t, "/ui/jobs", tenant).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for id in [first, second] {
        assert!(html.contains(&format!("href=\"/ui/jobs/{id}\"")), "job {id} listed: {html}");
    }
    assert!(html.contains("All <b>2</b>"), "{html}");
    // Filtered by status.
    let (_, _, failed) = page(&t, "/ui/jobs?status=FAILED", tenant).await;
    assert!(
        failed.contains(&format!("/ui/jobs/{second}\""))
            && !failed.contains(&format!("/ui/jobs/{first}\""))
    );
    let (_, _, none) = page(&t, "/ui/jobs?status=SUCCEEDED", tenant).await;
    assert!(none.contains("No jobs match these filters"), "{none}");

    // A job's page: its request as sent, and the live refresh while it waits.
    let (status, _, html) = page(&t, &format!("/ui/jobs/{first}"), tenant).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&export) && html.contains("_xdm.context.profile"), "{html}");
    assert!(html.contains(&format!("/ui/jobs/{first}/live")), "a waiting job refreshes");
    let (_, _, live) = page(&t, &format!("/ui/jobs/{first}/live"), tenant).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&live).unwrap()["status"], "NEW");
    assert!(html.contains("No files yet"), "{html}");
    // Once run, the same page shows it succeeded, without the refresh, with its files.
    t.run_tasks().await;
    let (_, _, done) = page(&t, &format!("/ui/jobs/{first}"), tenant).await;
    assert!(done.contains("SUCCEEDED") && !done.contains("/live\""), "{done}");
    for phase in ["<td>Waiting</td>", "<td>Exporting</td>", "<td>Total</td>"] {
        assert!(done.contains(phase), "{phase} in {done}");
    }
    let record = t.get(&format!("/export/jobs/{first}")).await.body;
    let batch = record["destination"]["batchId"].as_str().unwrap();
    let tenant_id = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
    let files =
        t.db.catalog
            .list_batch_files(&tenant_id, &segport_model::BatchId::parse(batch).unwrap())
            .await
            .unwrap();
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            done.contains(&f.name) && done.contains(&format!("<td>{}</td>", f.bytes)),
            "{done}"
        );
    }
    // Each file downloads through the session (a link sends no API headers), Range included,
    // and reads back as Parquet with the job's rows.
    let file = &files[0];
    let link = format!("/ui/files/{batch}?path={}", file.name);
    assert!(done.contains(&format!("href=\"{link}\"")), "{done}");
    let (status, headers, _) = page(&t, &link, None).await;
    assert_eq!(
        (status, &headers[header::LOCATION]),
        (StatusCode::SEE_OTHER, &"/ui/tenants".parse().unwrap())
    );
    let whole = download(&t, &link, tenant, None).await;
    assert_eq!(whole.0, StatusCode::OK);
    assert!(whole.1[header::CONTENT_DISPOSITION].to_str().unwrap().contains(&file.name));
    assert_eq!(whole.2.len() as i64, file.bytes);
    let rows =
        parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(whole.2.clone()))
            .map(|r| parquet::file::reader::FileReader::metadata(&r).file_metadata().num_rows())
            .unwrap();
    assert_eq!(rows, file.rows);
    let part = download(&t, &link, tenant, Some("bytes=4-9")).await;
    assert_eq!(part.0, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.2, whole.2[4..10]);
    assert_eq!(download(&t, &link, Some((ORG, "dev")), None).await.0, StatusCode::NOT_FOUND);
    let missing = format!("/ui/files/{batch}?path=nope.parquet");
    assert_eq!(download(&t, &missing, tenant, None).await.0, StatusCode::NOT_FOUND);

    // Datasets: the list, and a dataset's batches with their status and counts.
    let source = t.store_dataset(PROFILE_SCHEMA).await;
    let records: String = (0..3)
        .map(|i| format!("{{\"identityMap\": {{\"ECID\": [{{\"id\": \"c{i}\"}}]}}}}\n"))
        .collect();
    let (ingested, _) = t
        .ingest(
            &source,
            serde_json::json!({"format": "json"}),
            vec![("p.json", records.into_bytes())],
        )
        .await;
    let (status, _, html) = page(&t, "/ui/datasets", tenant).await;
    assert_eq!(status, StatusCode::OK);
    for id in [&export, &source] {
        assert!(html.contains(&format!("/ui/datasets/{id}\"")), "{html}");
    }
    let (status, _, html) = page(&t, &format!("/ui/datasets/{source}"), tenant).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&ingested) && html.contains("success") && html.contains("<td>3</td>"),
        "{html}"
    );
    let (status, _, _) = page(&t, "/ui/datasets/nope", tenant).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A profile by its identity: the merged profile, its source, its events.
    let events = t.store_dataset(EVENT_SCHEMA).await;
    let event = serde_json::json!({"_id": "ev-1", "timestamp": "2026-01-02T03:04:05Z", "eventType": "web.view", "identityMap": {"ECID": [{"id": "c1", "primary": true}]}});
    t.ingest(
        &events,
        serde_json::json!({"format": "json"}),
        vec![("e.json", format!("{event}\n").into_bytes())],
    )
    .await;
    let (status, _, html) = page(&t, "/ui/profile?ns=ECID&id=c1", tenant).await;
    assert_eq!(status, StatusCode::OK);
    // Its sources are its fragments' datasets.
    assert!(
        html.contains("ECID:c1") && html.contains(&source) && !html.contains(&events),
        "{html}"
    );
    assert!(
        html.contains("ev-1")
            && html.contains("web.view")
            && html.contains("2026-01-02 03:04:05 UTC"),
        "{html}"
    );
    let (_, _, missing) = page(&t, "/ui/profile?ns=ECID&id=nobody", tenant).await;
    assert!(missing.contains("No profile has the primary identity nobody"), "{missing}");
    let (status, _, _) = page(&t, "/ui/profile?ns=ECID&id=c1&policy=nope", tenant).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another sandbox sees none of it.
    let (_, _, other) = page(&t, "/ui/jobs", Some((ORG, "dev"))).await;
    assert!(
        !other.contains(&format!("/ui/jobs/{first}\"")) && other.contains("No jobs"),
        "{other}"
    );
    let (status, _, html) = page(&t, &format!("/ui/jobs/{first}"), Some((ORG, "dev"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Errors are HTML pages with the request id.
    assert!(html.contains("<h1>404") && html.contains("Request id <code>"), "{html}");
    let (status, _, html) = page(&t, "/ui/jobs?status=SOMETIMES", tenant).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.starts_with("<!doctype html>"), "{html}");
    for bad in ["/ui/jobs?after=yesterday", "/ui/datasets?start=-1", "/ui/jobs/abc"] {
        let (status, _, html) = page(&t, bad, tenant).await;
        assert!(status.is_client_error() && html.contains("Request id"), "{bad}: {status}");
    }
    let (status, headers, css) = page(&t, "/ui/assets/console.css", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));
    assert!(css.contains("max-width"));
}

/// A console download with the sandbox cookie and an optional `Range`: status, headers, bytes.
async fn download(
    t: &TestApp,
    path: &str,
    tenant: Option<(&str, &str)>,
    range: Option<&str>,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().uri(path);
    if let Some((org, sandbox)) = tenant {
        let org = org.replace('@', "%40");
        request = request.header(header::COOKIE, format!("segport_ui_tenant={org}~{sandbox}"));
    }
    if let Some(range) = range {
        request = request.header(header::RANGE, range);
    }
    let response = segport_api::app(t.state.clone(), segport_api::Surface::Full)
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

/// A request with `cookies` (and a form body for a POST); status, headers, body.
async fn send(
    t: &TestApp,
    method: &str,
    path: &str,
    cookies: &str,
    form: &str,
) -> (StatusCode, header::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    if !cookies.is_empty() {
        request = request.header(header::COOKIE, cookies);
    }
    if method == "POST" {
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let response = segport_api::app(t.state.clone(), segport_api::Surface::Full)
        .oneshot(request.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The value a `Set-Cookie` of `name` sets, and the whole header.
fn set_cookie(headers: &header::HeaderMap, name: &str) -> (String, String) {
    let set = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set: {headers:?}"));
    let value = set.split(';').next().unwrap().trim_start_matches(&format!("{name}=")).to_owned();
    (value, set)
}

/// Signs in with `secret` through the form; the session cookie.
async fn signed_in(t: &TestApp, secret: &str) -> String {
    let (_, headers, _) = send(t, "GET", "/ui/sign-in", "", "").await;
    let (csrf, _) = set_cookie(&headers, "segport_ui_csrf");
    let form = format!("csrf={csrf}&token={secret}&sandbox={SANDBOX}");
    let (status, headers, html) =
        send(t, "POST", "/ui/sign-in", &format!("segport_ui_csrf={csrf}"), &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (session, set) = set_cookie(&headers, "segport_ui_session");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    format!("segport_ui_session={session}")
}

/// Token mode: pages lead to the sign-in form; a live token signs a browser in (the org is
/// the token's) into a session that shows its sandbox; sign-out needs the page's form token;
/// a revoked token and 12 h unused end a session; a sign-in without the form's own token, or
/// with a bad token, is refused.
async fn token_mode_signs_in_with_a_token(setup: Setup) {
    let t = TestApp::with_auth(setup, AuthMode::Token).await;
    let (status, headers, _) = send(&t, "GET", "/ui/jobs", "", "").await;
    assert_eq!(
        (status, &headers[header::LOCATION]),
        (StatusCode::SEE_OTHER, &"/ui/sign-in".parse().unwrap())
    );
    let good = segport_api::auth::issue_token(ORG, None);
    t.db.catalog.insert_token(&good.record).await.unwrap();

    // Refused: no form token; a token that is not one.
    let form = format!("token={}&sandbox={SANDBOX}", good.secret);
    let (status, _, _) = send(&t, "POST", "/ui/sign-in", "", &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, headers, html) = send(&t, "GET", "/ui/sign-in", "", "").await;
    let (csrf, _) = set_cookie(&headers, "segport_ui_csrf");
    assert!(html.contains(&csrf) && html.contains("type=\"password\""), "{html}");
    let (status, _, html) = send(
        &t,
        "POST",
        "/ui/sign-in",
        &format!("segport_ui_csrf={csrf}"),
        &format!("csrf={csrf}&token=spt_guess&sandbox={SANDBOX}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("not valid"), "{html}");
    // A token past its length limit is not looked up.
    let (status, _, _) = send(
        &t,
        "POST",
        "/ui/sign-in",
        &format!("segport_ui_csrf={csrf}"),
        &format!("csrf={csrf}&token={}&sandbox={SANDBOX}", "s".repeat(8193)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // No sandbox typed: the org's first known sandbox, then the picker of the org's sandboxes.
    t.db.catalog
        .ensure_sandbox(&segport_model::Tenant::parse(ORG, "dev").unwrap(), 1)
        .await
        .unwrap();
    t.db.catalog
        .ensure_sandbox(&segport_model::Tenant::parse("OtherOrg@AdobeOrg", "secret").unwrap(), 1)
        .await
        .unwrap();
    let (_, headers, _) = send(&t, "GET", "/ui/sign-in", "", "").await;
    let (csrf, _) = set_cookie(&headers, "segport_ui_csrf");
    let (status, headers, _) = send(
        &t,
        "POST",
        "/ui/sign-in",
        &format!("segport_ui_csrf={csrf}"),
        &format!("csrf={csrf}&token={}&sandbox=", good.secret),
    )
    .await;
    assert_eq!(
        (status, &headers[header::LOCATION]),
        (StatusCode::SEE_OTHER, &"/ui/tenants".parse().unwrap())
    );
    let (session, _) = set_cookie(&headers, "segport_ui_session");
    let (_, _, html) =
        send(&t, "GET", "/ui/tenants", &format!("segport_ui_session={session}"), "").await;
    assert!(html.contains(&format!("{ORG} / dev")) && !html.contains("OtherOrg"), "{html}");

    // Signed in: the token's org, the sandbox named.
    let session = signed_in(&t, &good.secret).await;
    let (status, _, html) = send(&t, "GET", "/ui/jobs", &session, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&format!("{ORG} / {SANDBOX}")) && html.contains("Sign out"), "{html}");
    let token = html.split("name=\"csrf\" value=\"").nth(1).unwrap()[..64].to_owned();
    let (status, _, _) = send(&t, "POST", "/ui/sign-out", &session, "csrf=0").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(&t, "POST", "/ui/sign-out", &session, &format!("csrf={token}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, headers, _) = send(&t, "GET", "/ui/jobs", &session, "").await;
    assert_eq!(
        (status, &headers[header::LOCATION]),
        (StatusCode::SEE_OTHER, &"/ui/sign-in".parse().unwrap())
    );

    // 12 h unused ends a session.
    let session = signed_in(&t, &good.secret).await;
    let secret = session.trim_start_matches("segport_ui_session=");
    let id = segport_api::auth::token_sha256(secret);
    let long_ago = segport_model::time::now_ms() - 13 * 3600 * 1000;
    t.db.catalog.touch_session(&id, SANDBOX, long_ago).await.unwrap();
    let (status, _, _) = send(&t, "GET", "/ui/jobs", &session, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Revoking the token ends its sessions (once the server's 5 s token cache lets it go).
    let session = signed_in(&t, &good.secret).await;
    assert_eq!(send(&t, "GET", "/ui/jobs", &session, "").await.0, StatusCode::OK);
    assert!(t
        .db
        .catalog
        .revoke_token(&good.record.id, segport_model::time::now_ms())
        .await
        .unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let (status, _, _) = send(&t, "GET", "/ui/jobs", &session, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// A POST of a console form with `cookies` and `body`; status and `Location`.
async fn post(t: &TestApp, path: &str, cookies: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::COOKIE, cookies)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = segport_api::app(t.state.clone(), segport_api::Surface::Full)
        .oneshot(request)
        .await
        .unwrap();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status(), location)
}

/// Cancel, delete and "run again" are forms that carry the page's token: without it, or with
/// another, they are refused and change nothing.
async fn actions_need_the_form_token(setup: Setup) {
    let t = TestApp::new(setup).await;
    let export = t.export_dataset().await;
    let id = t.create_job(minimal_job(&export)).await["id"].as_i64().unwrap();
    let tenant = format!("segport_ui_tenant={}~{SANDBOX}", ORG.replace('@', "%40"));
    let (_, headers, html) = page(&t, &format!("/ui/jobs/{id}"), Some((ORG, SANDBOX))).await;
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let token = set.split(';').next().unwrap().trim_start_matches("segport_ui_csrf=").to_owned();
    assert!(html.contains(&format!("name=\"csrf\" value=\"{token}\"")), "{html}");
    let cookies = format!("{tenant}; segport_ui_csrf={token}");

    for (cookies, body) in [
        (cookies.as_str(), String::new()),
        (cookies.as_str(), "csrf=0000".to_owned()),
        (tenant.as_str(), format!("csrf={token}")),
    ] {
        let (status, _) = post(&t, &format!("/ui/jobs/{id}/cancel"), cookies, &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cookies} {body}");
    }
    assert_eq!(t.get(&format!("/export/jobs/{id}")).await.body["status"], "NEW");

    // Run again: a new job from the same body.
    let (status, location) =
        post(&t, &format!("/ui/jobs/{id}/rerun"), &cookies, &format!("csrf={token}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let again: i64 = location.trim_start_matches("/ui/jobs/").parse().unwrap();
    assert_ne!(again, id);
    let (old, new) = (
        t.get(&format!("/export/jobs/{id}")).await.body,
        t.get(&format!("/export/jobs/{again}")).await.body,
    );
    assert_eq!(new["destination"]["datasetId"], old["destination"]["datasetId"]);
    assert_eq!(new["fields"], old["fields"]);
    assert_eq!(new["status"], "NEW");

    // Cancel a waiting job (it fails as cancelled), then delete it once it ended.
    let (status, location) =
        post(&t, &format!("/ui/jobs/{id}/cancel"), &cookies, &format!("csrf={token}")).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, format!("/ui/jobs/{id}").as_str())
    );
    let cancelled = t.get(&format!("/export/jobs/{id}")).await.body;
    assert_eq!(cancelled["status"], "FAILED", "{cancelled}");
    let (status, location) =
        post(&t, &format!("/ui/jobs/{id}/cancel"), &cookies, &format!("csrf={token}")).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/jobs"));
    assert_eq!(t.get(&format!("/export/jobs/{id}")).await.status, StatusCode::NOT_FOUND);
}

/// A POST of a console script to `path`, with the form token in its header (`None`: without):
/// status, JSON answer.
async fn script_post(
    t: &TestApp,
    path: &str,
    cookies: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method("POST").uri(path).header(header::COOKIE, cookies);
    if let Some(token) = token {
        request = request.header("x-segport-csrf", token);
    }
    let response = segport_api::app(t.state.clone(), segport_api::Surface::Full)
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The console's preview of a job body.
async fn preview(
    t: &TestApp,
    cookies: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    script_post(t, "/ui/preview", cookies, token, body.as_bytes().to_vec()).await
}

/// The new-export form lists the sandbox's export datasets, its segments with their
/// memberships by status (equal to a count over the records ingested) and its fields; its
/// preview needs the form token and counts what the job then exports; a body it refuses comes
/// back with what is wrong.
async fn new_export_form_previews_and_creates(setup: Setup) {
    let t = TestApp::new(setup).await;
    let export = t.export_dataset().await;
    let source = t.store_dataset(PROFILE_SCHEMA).await;
    let statuses = ["realized", "existing", "exited"];
    let mut records = String::new();
    // (segment, status) of each profile, the oracle's input.
    let mut memberships = Vec::new();
    for i in 0..30usize {
        let mut segments = serde_json::Map::new();
        for (s, every) in [("s1", 2usize), ("s2", 3)] {
            if i % every == 0 {
                let status = statuses[(i / every) % 3];
                segments.insert(s.into(), serde_json::json!({"status": status}));
                memberships.push((i, s, status));
            }
        }
        let record = serde_json::json!({
            "identityMap": {"ECID": [{"id": format!("p{i}"), "primary": true}]},
            "loyalty": {"points": i},
            "segmentMembership": {"ups": segments},
        });
        records.push_str(&format!("{record}\n"));
    }
    t.ingest(
        &source,
        serde_json::json!({"format": "json"}),
        vec![("p.json", records.into_bytes())],
    )
    .await;

    let tenant = format!("segport_ui_tenant={}~{SANDBOX}", ORG.replace('@', "%40"));
    let (status, headers, html) = send(&t, "GET", "/ui/new", &tenant, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let (token, _) = set_cookie(&headers, "segport_ui_csrf");
    let cookies = format!("{tenant}; segport_ui_csrf={token}");
    assert!(html.contains(&format!("<option value=\"{export}\"")), "{html}");
    assert!(
        !html.contains(&format!("<option value=\"{source}\"")),
        "a profile dataset is no destination"
    );
    assert!(html.contains("<option value=\"loyalty.points\">"), "{html}");
    for segment in ["s1", "s2"] {
        let counts: Vec<String> = statuses
            .iter()
            .filter_map(|status| {
                let n =
                    memberships.iter().filter(|(_, s, st)| *s == segment && st == status).count();
                (n > 0).then(|| format!("{status} {n}"))
            })
            .collect();
        let mut counts = counts;
        counts.sort();
        let shown =
            format!("<code>{segment}</code> <span class=\"muted\">{}</span>", counts.join(" · "));
        assert!(html.contains(&shown), "{shown} in {html}");
    }

    let body = serde_json::json!({
        "destination": {"datasetId": export},
        "schema": {"name": "_xdm.context.profile"},
        "fields": "loyalty.points",
        "filter": {"segments": [{"segmentId": "s1", "status": ["realized", "exited"]}]},
    });
    let wanted = memberships
        .iter()
        .filter(|(_, s, st)| *s == "s1" && (*st == "realized" || *st == "exited"))
        .count();
    assert_eq!(preview(&t, &cookies, None, &body.to_string()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        preview(&t, &tenant, Some(&token), &body.to_string()).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, previewed) = preview(&t, &cookies, Some(&token), &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{previewed}");
    assert_eq!(previewed["totalExportedProfileCounter"], wanted as u64, "{previewed}");
    assert_eq!(previewed["rows"].as_array().unwrap().len(), wanted.min(5));
    let (status, refused) = preview(&t, &cookies, Some(&token), "{\"schema\": 1}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    // Created from the form: the job page; it exports what the preview counted.
    let form = serde_urlencoded::to_string([("csrf", token.as_str()), ("body", &body.to_string())])
        .unwrap();
    let (status, location) = post(&t, "/ui/new", &cookies, &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let id: i64 = location.trim_start_matches("/ui/jobs/").parse().unwrap();
    t.run_tasks().await;
    let job = t.get(&format!("/export/jobs/{id}")).await.body;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["metrics"]["totalExportedProfileCounter"], wanted as u64, "{job}");
    // Without the token, nothing is created; a body the API refuses comes back with why.
    let jobs_before = t.get("/export/jobs").await.body["records"].as_array().unwrap().len();
    let no_token = serde_urlencoded::to_string([("body", body.to_string())]).unwrap();
    assert_eq!(post(&t, "/ui/new", &cookies, &no_token).await.0, StatusCode::FORBIDDEN);
    let bad = serde_json::json!({"destination": {"datasetId": source}, "schema": {"name": "_xdm.context.profile"}});
    let form = serde_urlencoded::to_string([("csrf", token.as_str()), ("body", &bad.to_string())])
        .unwrap();
    let (status, _, html) = send(&t, "POST", "/ui/new", &cookies, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("<code>destination.datasetId</code>") && html.contains(&source),
        "{html}"
    );
    let form =
        serde_urlencoded::to_string([("csrf", token.as_str()), ("body", "{not json")]).unwrap();
    let (status, _, html) = send(&t, "POST", "/ui/new", &cookies, &form).await;
    assert!(status == StatusCode::BAD_REQUEST && html.contains("not JSON"), "{html}");
    assert_eq!(t.get("/export/jobs").await.body["records"].as_array().unwrap().len(), jobs_before);
}

/// The jobs list filtered by destination dataset and creation time keeps its filters in its
/// links, and its running rows refresh from `/ui/jobs/live`.
async fn jobs_list_filters_by_destination_and_time(setup: Setup) {
    let t = TestApp::new(setup).await;
    let (a, b) = (t.export_dataset().await, t.export_dataset().await);
    let first = t.create_job(minimal_job(&a)).await["id"].as_i64().unwrap();
    let second = t.create_job(minimal_job(&b)).await["id"].as_i64().unwrap();
    let tenant = Some((ORG, SANDBOX));
    let listed = |html: &str, id: i64| html.contains(&format!("href=\"/ui/jobs/{id}\""));
    let (_, _, html) = page(&t, &format!("/ui/jobs?dataset={a}"), tenant).await;
    assert!(listed(&html, first) && !listed(&html, second), "{html}");
    assert!(html.contains(&format!("<option value=\"{a}\" selected>")), "{html}");
    assert!(
        html.contains(&format!("/ui/jobs?status=NEW&#38;dataset={a}")),
        "the counts keep the filter: {html}"
    );
    let (_, _, html) = page(&t, &format!("/ui/jobs?dataset={b}&status=NEW"), tenant).await;
    assert!(!listed(&html, first) && listed(&html, second), "{html}");
    let (_, _, html) = page(&t, "/ui/jobs?since=2999-01-01", tenant).await;
    assert!(!listed(&html, first) && html.contains("No jobs match"), "{html}");
    let (_, _, html) = page(&t, "/ui/jobs?before=2999-01-01T00:00", tenant).await;
    assert!(listed(&html, first) && listed(&html, second), "{html}");
    let (_, _, html) = page(&t, "/ui/jobs?before=2000-01-01", tenant).await;
    assert!(!listed(&html, first), "{html}");
    for bad in ["/ui/jobs?since=yesterday", "/ui/jobs?dataset=..%2Fx", "/ui/jobs/live?ids=1,x"] {
        assert_eq!(page(&t, bad, tenant).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Live rows: the listed jobs of this sandbox only.
    let (_, _, live) =
        page(&t, &format!("/ui/jobs/live?ids={first},{second},999999"), tenant).await;
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    let ids: Vec<i64> =
        live["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [first, second]);
    assert_eq!(live["jobs"][0]["status"], "NEW");
    // At most a page's worth of rows (50) per refresh.
    let many = vec![first.to_string(); 60].join(",");
    let (_, _, live) = page(&t, &format!("/ui/jobs/live?ids={many}"), tenant).await;
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!(live["jobs"].as_array().unwrap().len(), 50);
    let (_, _, other) = page(&t, &format!("/ui/jobs/live?ids={first}"), Some((ORG, "dev"))).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&other).unwrap()["jobs"],
        serde_json::json!([])
    );
}

/// A file uploaded from a dataset's page becomes a completed batch whose records are
/// ingested; without the form token, into an export dataset, or empty, nothing is ingested.
async fn upload_makes_a_completed_batch(setup: Setup) {
    let t = TestApp::new(setup).await;
    let source = t.store_dataset(PROFILE_SCHEMA).await;
    let export = t.export_dataset().await;
    let tenant = format!("segport_ui_tenant={}~{SANDBOX}", ORG.replace('@', "%40"));
    let (status, headers, html) =
        send(&t, "GET", &format!("/ui/datasets/{source}"), &tenant, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"upload\"") && html.contains("<progress"), "{html}");
    let (token, _) = set_cookie(&headers, "segport_ui_csrf");
    let cookies = format!("{tenant}; segport_ui_csrf={token}");
    let (_, _, html) = send(&t, "GET", &format!("/ui/datasets/{export}"), &cookies, "").await;
    assert!(!html.contains("id=\"upload\""), "an export dataset takes no upload: {html}");

    let records: String = (0..4)
        .map(|i| {
            format!(
                "{{\"identityMap\": {{\"ECID\": [{{\"id\": \"u{i}\", \"primary\": true}}]}}}}\n"
            )
        })
        .collect();
    let path = |dataset: &str| format!("/ui/datasets/{dataset}/upload?name=u.json&format=json");
    let batches = format!("/data/foundation/catalog/batches?dataSet={source}");
    let before = t.get(&batches).await.body;
    let refused = [
        (path(&source), &cookies, None, records.clone(), StatusCode::FORBIDDEN),
        (path(&source), &tenant, Some(token.as_str()), records.clone(), StatusCode::FORBIDDEN),
        (path(&export), &cookies, Some(token.as_str()), records.clone(), StatusCode::BAD_REQUEST),
        (
            format!("/ui/datasets/{source}/upload?name=../x.json&format=json"),
            &cookies,
            Some(token.as_str()),
            records.clone(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, cookies, token, body, status) in refused {
        let (got, answer) = script_post(&t, &path, cookies, token, body.into_bytes()).await;
        assert_eq!(got, status, "{path}: {answer}");
    }
    assert_eq!(t.get(&batches).await.body, before, "a refused upload makes no batch");
    // An empty file: refused, and its batch aborted.
    let (status, answer) =
        script_post(&t, &path(&source), &cookies, Some(&token), Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    let (status, answer) =
        script_post(&t, &path(&source), &cookies, Some(&token), records.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let batch = answer["id"].as_str().unwrap().to_owned();
    t.run_tasks().await;
    let got = t.get(&format!("/data/foundation/catalog/batches/{batch}")).await.body;
    assert_eq!(got[&batch]["status"], "success", "{got}");
    assert_eq!(got[&batch]["recordCount"], 4, "{got}");
    let all = t.get(&batches).await.body;
    let aborted = all.as_object().unwrap().values().filter(|b| b["status"] == "aborted").count();
    assert_eq!(aborted, 1, "the empty upload's batch was aborted: {all}");
}

/// The workers page: operators (dev mode) see the live workers, every sandbox's queue and the
/// running tasks with their worker; a signed-in tenant (token mode) sees only its own queue and
/// tasks, and no worker names.
async fn workers_page_shows_what_the_viewer_may_see(setup: Setup) {
    let t = TestApp::with_auth(setup, AuthMode::Token).await.with_api_token().await;
    let c = &t.db.catalog;
    let export = t.export_dataset().await;
    let mine = t.create_job(minimal_job(&export)).await["id"].as_i64().unwrap();
    let now = segport_model::time::now_ms();
    c.register_worker(
        &segport_catalog::WorkerInfo {
            owner: "w-alpha".into(),
            host: "host-a".into(),
            slots: 3,
            started_ms: now - 60_000,
            seen_ms: now,
        },
        now,
    )
    .await
    .unwrap();
    let first = c.claim_task("w-alpha", 60_000, now).await.unwrap().unwrap();
    assert_eq!(first.job_id, Some(mine));

    let good = segport_api::auth::issue_token(ORG, None);
    c.insert_token(&good.record).await.unwrap();
    let session = signed_in(&t, &good.secret).await;
    let (status, _, html) = send(&t, "GET", "/ui/workers", &session, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("1 worker(s) alive") && !html.contains("w-alpha"), "{html}");
    assert!(html.contains(&format!("href=\"/ui/jobs/{mine}\"")), "its running job: {html}");
    assert!(
        html.contains(&format!("{ORG} / {SANDBOX}</td><td>export</td><td>0</td><td>1</td>")),
        "{html}"
    );
    // Another sandbox of the org (signed in there) sees neither the task nor the queue row.
    let form_page = send(&t, "GET", "/ui/tenants", &session, "").await.2;
    let token = form_page.split("csrf=").nth(1).map(|s| s[..64].to_owned()).unwrap();
    let (status, _, _) =
        send(&t, "GET", &format!("/ui/tenant?sandbox=dev&csrf={token}"), &session, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, html) = send(&t, "GET", "/ui/workers", &session, "").await;
    assert!(html.contains(&format!("{ORG} / dev")), "{html}");
    assert!(
        !html.contains(&format!("/ui/jobs/{mine}"))
            && html.contains("No task is running for this sandbox"),
        "{html}"
    );
    assert!(html.contains("Nothing queued or running for this sandbox"), "{html}");
}

/// Dev mode: the operator sees the workers, with their running tasks, and every sandbox.
async fn workers_page_shows_operators_everything(setup: Setup) {
    let t = TestApp::new(setup).await;
    let c = &t.db.catalog;
    let export = t.export_dataset().await;
    let job = t.create_job(minimal_job(&export)).await["id"].as_i64().unwrap();
    let (status, _, html) = page(&t, "/ui/workers", Some((ORG, "dev"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No worker has said it is alive"), "{html}");
    assert!(
        html.contains(&format!("{ORG} / {SANDBOX}</td><td>export</td><td>1</td><td>0</td>")),
        "{html}"
    );
    let now = segport_model::time::now_ms();
    let worker = segport_catalog::WorkerInfo {
        owner: "w-beta".into(),
        host: "host-b".into(),
        slots: 2,
        started_ms: now,
        seen_ms: now,
    };
    c.register_worker(&worker, now).await.unwrap();
    c.claim_task("w-beta", 60_000, now).await.unwrap().unwrap();
    let (_, _, html) = page(&t, "/ui/workers", Some((ORG, "dev"))).await;
    assert!(html.contains("<code>w-beta</code></td><td>host-b</td><td>2</td><td>1</td>"), "{html}");
    // Another sandbox's running job is listed without a link to its page.
    assert!(
        html.contains(&format!("job {job}")) && !html.contains(&format!("/ui/jobs/{job}\"")),
        "{html}"
    );
    c.forget_worker("w-beta").await.unwrap();
    let (_, _, html) = page(&t, "/ui/workers", Some((ORG, "dev"))).await;
    assert!(!html.contains("host-b"), "{html}");
}

/// A store of 1,001 segments: the new-export form lists the first 1,000 and says so.
async fn segment_picker_lists_at_most_a_thousand(setup: Setup) {
    let t = TestApp::new(setup).await;
    let source = t.store_dataset(PROFILE_SCHEMA).await;
    let records: String = (0..1001)
        .map(|i| {
            let record = serde_json::json!({
                "identityMap": {"ECID": [{"id": format!("p{i}"), "primary": true}]},
                "segmentMembership": {"ups": {format!("s{i:04}"): {"status": "realized"}}},
            });
            format!("{record}\n")
        })
        .collect();
    t.ingest(
        &source,
        serde_json::json!({"format": "json"}),
        vec![("p.json", records.into_bytes())],
    )
    .await;
    let (status, _, html) = page(&t, "/ui/new", Some((ORG, SANDBOX))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("name=\"segment\"").count(), 1000);
    assert!(html.contains("value=\"s0999\"") && !html.contains("value=\"s1000\""));
    assert!(html.contains("The first 1000 of 1001 segments are listed"), "{html}");
}
