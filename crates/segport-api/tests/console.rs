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
    actions_need_the_form_token
);

/// A GET of a console page with the sandbox cookie (`None`: without); status, headers, body.
async fn page(
    t: &TestApp,
    path: &str,
    tenant: Option<(&str, &str)>,
) -> (StatusCode, header::HeaderMap, String) {
    let mut request = Request::builder().uri(path);
    if let Some((org, sandbox)) = tenant {
        let org = org.replace('@', "%40");
        request = request.header(header::COOKIE, format!("segport_ui_tenant={org}~{sandbox}"));
    }
    let response = segport_api::app(t.state.clone(), segport_api::Surface::Full)
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
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
    assert!(none.contains("No jobs with status SUCCEEDED"), "{none}");

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
