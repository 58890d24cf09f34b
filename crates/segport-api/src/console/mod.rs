//! The operator console at `/ui`: server-rendered pages over the catalog the API reads, from
//! askama templates (`templates/console/`) compiled into the binary with their stylesheet, so
//! it works offline and needs no JavaScript build. A page's only script refreshes a running
//! job in place.
//!
//! Every `/ui` route is listed in [`routes`]; none is part of the OpenAPI description, and
//! errors under `/ui` are HTML pages that carry the request id. In dev mode a sandbox is
//! picked without signing in; in token mode a browser signs in with a token into a session
//! (`ui_sessions`): an `HttpOnly`, `SameSite=Strict` cookie (`Secure` behind HTTPS) that ends
//! after 12 h unused, on sign-out, and when its token is revoked or expires. Every form
//! carries a token checked on its way back.

mod schedules;
mod webhooks;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use segport_catalog::JobListQuery;
use segport_model::job::{ExportJobRecord, JobStatus};
use segport_model::Tenant;
use serde_json::{json, Value};

use crate::auth::AuthMode;
use crate::error::current_request_id;
use crate::extract::QueryPairs;
use crate::{ApiError, AppState};

/// Where the console lives; every route below it is the console's.
pub const PREFIX: &str = "/ui";

/// The cookie holding the sandbox a dev-mode console shows.
const TENANT_COOKIE: &str = "segport_ui_tenant";
/// The cookie holding the token every console form must send back (double submit): a page of
/// another site can neither read it nor, the cookie being `SameSite=Strict`, send it.
const CSRF_COOKIE: &str = "segport_ui_csrf";
const PAGE_SIZE: u32 = 50;
const STYLESHEET: &str = include_str!("../../templates/console/console.css");

/// Every route of the console.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/assets/console.css", get(stylesheet))
        .route("/ui/tenants", get(tenants))
        .route("/ui/tenant", get(pick_tenant))
        .route("/ui/sign-in", get(sign_in_form).post(sign_in))
        .route("/ui/sign-out", axum::routing::post(sign_out))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/live", get(jobs_live))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/live", get(job_live))
        .route("/ui/jobs/{id}/cancel", axum::routing::post(cancel_job))
        .route("/ui/jobs/{id}/rerun", axum::routing::post(rerun_job))
        .route("/ui/new", get(new_export).post(create_export))
        .route("/ui/preview", axum::routing::post(preview))
        .route("/ui/datasets", get(datasets))
        .route("/ui/datasets/{id}", get(dataset))
        .route("/ui/datasets/{id}/upload", axum::routing::post(upload))
        .route("/ui/profile", get(profile))
        .route("/ui/workers", get(workers))
        .route("/ui/files/{batch}", get(download))
        .route("/ui/schedules", get(schedules::list).post(schedules::create))
        .route("/ui/schedules/{id}", get(schedules::one))
        .route("/ui/schedules/{id}/state", axum::routing::post(schedules::set_state))
        .route("/ui/schedules/{id}/delete", axum::routing::post(schedules::delete))
        .route("/ui/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/ui/webhooks/{id}", get(webhooks::one))
        .route("/ui/webhooks/{id}/{action}", axum::routing::post(webhooks::act))
}

/// An error under `/ui`: an HTML page with the status, the message and the request id.
pub(crate) struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<segport_catalog::CatalogError> for PageError {
    fn from(e: segport_catalog::CatalogError) -> Self {
        PageError(e.into())
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    nav: Nav,
    status: String,
    message: String,
    request_id: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let api = self.0.into_response();
        let status = api.status();
        let message = match status {
            StatusCode::NOT_FOUND => "There is nothing here.".to_owned(),
            s if s.is_server_error() => {
                "The server could not answer this page; the request id finds it in its log."
                    .to_owned()
            }
            _ => "The request was refused.".to_owned(),
        };
        let page = ErrorPage {
            nav: Nav::default(),
            status: status.to_string(),
            message,
            request_id: current_request_id(),
        };
        (status, render(&page)).into_response()
    }
}

/// A template rendered, or a plain 500 naming the failure (a template bug, not input).
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET)
}

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// The sandbox the console shows, from its cookie.
fn tenant_of(headers: &HeaderMap) -> Option<Tenant> {
    let value = cookie(headers, TENANT_COOKIE)?;
    let (org, sandbox) = value.split_once('~')?;
    Tenant::parse(&decode(org), &decode(sandbox)).ok()
}

fn decode(text: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={text}"))
        .ok()
        .and_then(|mut v| v.pop())
        .map(|(_, v)| v)
        .unwrap_or_default()
}

fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsPage {
    nav: Nav,
    /// Sandboxes to pick: every one the catalog knows in dev mode, the org's in token mode.
    known: Vec<(String, String)>,
    /// The form token the picker's links carry (token mode).
    csrf: String,
}

async fn tenants(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let viewer = viewer(&state, &headers).await?;
    let signed_in = viewer.as_ref().filter(|v| v.session.is_some());
    if state.auth.mode() == AuthMode::Token && signed_in.is_none() {
        return Ok(to_sign_in(&state));
    }
    let org = signed_in.map(|v| v.tenant.org.as_str().to_owned());
    let known = state
        .catalog
        .sandboxes()
        .await?
        .into_iter()
        .filter(|t| org.as_deref().is_none_or(|o| t.org.as_str() == o))
        .map(|t| (t.org.as_str().to_owned(), t.sandbox.as_str().to_owned()))
        .collect();
    let csrf = viewer.as_ref().map(|v| v.csrf.clone()).unwrap_or_default();
    let nav = viewer.as_ref().map(Viewer::nav).unwrap_or_default();
    Ok(render(&TenantsPage { nav, known, csrf }))
}

/// Shows another sandbox: in dev mode any (a cookie), in token mode one of the signed-in
/// org's (the session's, with the form token).
async fn pick_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let field = |name| query.get(name).unwrap_or_default();
    if state.auth.mode() == AuthMode::Token {
        let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
        let sent = query.get("csrf").unwrap_or_default();
        if !same_token(sent, &viewer.csrf) {
            return Err(ApiError::Forbidden(STALE_FORM.to_owned()).into());
        }
        let tenant = Tenant::parse(viewer.tenant.org.as_str(), field("sandbox"))
            .map_err(ApiError::Invalid)?;
        if let Some(session) = &viewer.session {
            let now = segport_model::time::now_ms();
            state.catalog.touch_session(session, tenant.sandbox.as_str(), now).await?;
        }
        return Ok(Redirect::to("/ui/jobs").into_response());
    }
    let tenant = Tenant::parse(field("org"), field("sandbox")).map_err(ApiError::Invalid)?;
    let cookie = format!(
        "{TENANT_COOKIE}={}~{}; Path={PREFIX}; HttpOnly; SameSite=Strict",
        encode(tenant.org.as_str()),
        encode(tenant.sandbox.as_str())
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/jobs")).into_response())
}

/// Where a page goes when nobody is signed in (token mode) or no sandbox is picked (dev mode).
fn to_sign_in(state: &AppState) -> Response {
    match state.auth.mode() {
        AuthMode::Token => Redirect::to("/ui/sign-in").into_response(),
        AuthMode::Dev => Redirect::to("/ui/tenants").into_response(),
    }
}

/// What the header of every page shows.
#[derive(Default)]
struct Nav {
    tenant: Option<String>,
    /// The form token of the sign-out button, when signed in (token mode).
    sign_out: Option<String>,
}

/// Who is looking: the sandbox shown, and the token every form of the page carries.
struct Viewer {
    tenant: Tenant,
    csrf: String,
    /// Token mode: the session (the SHA-256 of its cookie's secret).
    session: Option<String>,
    /// Dev mode: the token was made for this page, and its cookie goes with it.
    fresh_csrf: bool,
}

impl Viewer {
    fn nav(&self) -> Nav {
        Nav {
            tenant: Some(label(&self.tenant)),
            sign_out: self.session.as_ref().map(|_| self.csrf.clone()),
        }
    }
}

/// A session ends after this long unused.
const SESSION_IDLE_MS: i64 = 12 * 3600 * 1000;
/// A session's last use is recorded at most this often.
const SESSION_TOUCH_MS: i64 = 60 * 1000;
/// The cookie holding a token-mode session's secret.
const SESSION_COOKIE: &str = "segport_ui_session";
const STALE_FORM: &str = "the form's token is missing or stale: reload the page and try again";

/// The viewer of a request: in dev mode from the sandbox cookie; in token mode from the
/// session cookie, while the session is used within 12 h and its token is live.
async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Option<Viewer>, ApiError> {
    match state.auth.mode() {
        AuthMode::Dev => {
            let Some(tenant) = tenant_of(headers) else { return Ok(None) };
            let sent = cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 64);
            let fresh_csrf = sent.is_none();
            let csrf = sent.unwrap_or_else(fresh_csrf_token);
            Ok(Some(Viewer { tenant, csrf, session: None, fresh_csrf }))
        }
        AuthMode::Token => {
            let Some(secret) = cookie(headers, SESSION_COOKIE).filter(|c| c.len() == 64) else {
                return Ok(None);
            };
            let id = crate::auth::token_sha256(&secret);
            let Some(session) = state.catalog.find_session(&id).await? else { return Ok(None) };
            let now = segport_model::time::now_ms();
            let live = state.auth.live_token_by_hash(&session.token_sha256).await?;
            let token_ok = live.is_some_and(|t| t.org == session.org);
            if now - session.seen_ms > SESSION_IDLE_MS || !token_ok {
                state.catalog.delete_session(&id).await?;
                return Ok(None);
            }
            if now - session.seen_ms > SESSION_TOUCH_MS {
                state.catalog.touch_session(&id, &session.sandbox, now).await?;
            }
            let Ok(tenant) = Tenant::parse(&session.org, &session.sandbox) else { return Ok(None) };
            Ok(Some(Viewer { tenant, csrf: session.csrf, session: Some(id), fresh_csrf: false }))
        }
    }
}

#[derive(Template)]
#[template(path = "console/sign-in.html")]
struct SignInPage {
    nav: Nav,
    csrf: String,
    sandbox: String,
    problem: Option<String>,
}

/// The sign-in form (token mode): a token and a sandbox. It carries a token of its own (a
/// cookie and a field), so that no other site can sign a browser in.
async fn sign_in_form(State(state): State<AppState>) -> Response {
    if state.auth.mode() == AuthMode::Dev {
        return Redirect::to("/ui/tenants").into_response();
    }
    let csrf = fresh_csrf_token();
    let page = SignInPage {
        nav: Nav::default(),
        csrf: csrf.clone(),
        sandbox: String::new(),
        problem: None,
    };
    ([(header::SET_COOKIE, csrf_cookie(&csrf))], render(&page)).into_response()
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    if state.auth.mode() == AuthMode::Dev {
        return Ok(Redirect::to("/ui/tenants").into_response());
    }
    let expected = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let fields = checked_form(&expected, &body)?;
    let field = |name: &str| {
        fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default()
    };
    let (secret, sandbox) = (field("token"), field("sandbox"));
    let again = |problem: &str, status: StatusCode| {
        let page = SignInPage {
            nav: Nav::default(),
            csrf: expected.clone(),
            sandbox: sandbox.clone(),
            problem: Some(problem.to_owned()),
        };
        (status, render(&page)).into_response()
    };
    let token = if secret.is_empty() || secret.len() > 8192 {
        None
    } else {
        state.auth.live_token(&secret).await?
    };
    let Some(token) = token else {
        return Ok(again(
            "That token is not valid: it is unknown, revoked or expired.",
            StatusCode::UNAUTHORIZED,
        ));
    };
    // No sandbox typed: the first the catalog knows for the token's org, then the picker of
    // all of them.
    let (sandbox, pick) = if sandbox.is_empty() {
        let known = state.catalog.sandboxes().await?;
        match known.into_iter().find(|t| t.org.as_str() == token.org) {
            Some(first) => (first.sandbox.as_str().to_owned(), true),
            None => {
                return Ok(again(
                    "The catalog knows no sandbox of this token's org yet: type one.",
                    StatusCode::BAD_REQUEST,
                ))
            }
        }
    } else {
        (sandbox.clone(), false)
    };
    let Ok(tenant) = Tenant::parse(&token.org, &sandbox) else {
        return Ok(again("Name a sandbox (letters, digits, - and _).", StatusCode::BAD_REQUEST));
    };
    let secret_of_session = fresh_csrf_token();
    let now = segport_model::time::now_ms();
    let session = segport_catalog::SessionRecord {
        id_sha256: crate::auth::token_sha256(&secret_of_session),
        token_sha256: token.token_sha256.clone(),
        org: tenant.org.as_str().to_owned(),
        sandbox: tenant.sandbox.as_str().to_owned(),
        csrf: fresh_csrf_token(),
        created_ms: now,
        seen_ms: now,
    };
    state.catalog.insert_session(&session, now - SESSION_IDLE_MS).await?;
    let secure = if served_over_https(&state, &headers) { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={secret_of_session}; Path={PREFIX}; HttpOnly; SameSite=Strict{secure}"
    );
    tracing::info!(org = %tenant.org, sandbox = %tenant.sandbox, token = %token.id, "console sign-in");
    let to = if pick { "/ui/tenants" } else { "/ui/jobs" };
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response())
}

/// Whether the console is reached over HTTPS (its public URL says so, or the proxy in front).
fn served_over_https(state: &AppState, headers: &HeaderMap) -> bool {
    state.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    checked_form(&viewer.csrf, &body)?;
    if let Some(session) = &viewer.session {
        state.catalog.delete_session(session).await?;
    }
    let cleared = format!("{SESSION_COOKIE}=; Path={PREFIX}; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cleared)], to_sign_in(&state)).into_response())
}

/// One row of the jobs list.
struct JobRow {
    id: i64,
    status: String,
    dataset: String,
    created: String,
    created_ago: String,
    progress: String,
    exported: String,
    /// Waiting or running: the page refreshes its row.
    live: bool,
}

impl JobRow {
    fn of(record: &ExportJobRecord, now: i64) -> Self {
        JobRow {
            id: record.id,
            status: record.status.as_str().to_owned(),
            dataset: record.spec.destination.dataset_id.to_string(),
            created: utc(record.creation_ms),
            created_ago: ago(now, record.creation_ms),
            progress: progress(record),
            exported: record.counters.as_ref().map(|c| c.total.to_string()).unwrap_or_default(),
            live: matches!(record.status, JobStatus::New | JobStatus::Processing),
        }
    }
}

/// The filters of the jobs list, as its form and links carry them.
#[derive(Default)]
struct JobFilters {
    status: Option<JobStatus>,
    dataset: Option<segport_model::DatasetId>,
    /// Created at or after (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM`, UTC), as typed and as ms.
    since: Option<(String, i64)>,
    /// Created before, likewise.
    before: Option<(String, i64)>,
}

impl JobFilters {
    fn parse(query: &QueryPairs) -> Result<Self, ApiError> {
        let given = |name| query.get(name).map(str::trim).filter(|s| !s.is_empty());
        let status =
            match given("status") {
                None => None,
                Some(s) => Some(serde_json::from_value::<JobStatus>(json!(s)).map_err(|_| {
                    ApiError::invalid("status", format!("{s:?} is not a job status"))
                })?),
            };
        let dataset = match given("dataset") {
            None => None,
            Some(raw) => Some(segport_model::DatasetId::parse(raw).map_err(|_| {
                ApiError::invalid("dataset", format!("{raw:?} is not a dataset id"))
            })?),
        };
        let time = |name: &'static str| -> Result<Option<(String, i64)>, ApiError> {
            let Some(raw) = given(name) else { return Ok(None) };
            let parsed = chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                        .map(|d| d.and_time(chrono::NaiveTime::MIN))
                })
                .map_err(|_| {
                    ApiError::invalid(name, format!("{raw:?} is not a UTC time YYYY-MM-DD[THH:MM]"))
                })?;
            Ok(Some((raw.to_owned(), parsed.and_utc().timestamp_millis())))
        };
        Ok(Self { status, dataset, since: time("since")?, before: time("before")? })
    }

    /// The filters as query parameters (each followed by `&`), for links that keep them.
    fn query(&self, status: Option<JobStatus>) -> String {
        let mut pairs = Vec::new();
        if let Some(s) = status {
            pairs.push(("status", s.as_str().to_owned()));
        }
        if let Some(d) = &self.dataset {
            pairs.push(("dataset", d.to_string()));
        }
        if let Some((raw, _)) = &self.since {
            pairs.push(("since", raw.clone()));
        }
        if let Some((raw, _)) = &self.before {
            pairs.push(("before", raw.clone()));
        }
        pairs.iter().map(|(k, v)| format!("{k}={}&", encode(v))).collect()
    }
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    nav: Nav,
    status: Option<String>,
    /// Each status with its count and the link that lists it (other filters kept).
    counts: Vec<(String, i64, String)>,
    total: i64,
    all_link: String,
    dataset: String,
    since: String,
    before: String,
    /// Export datasets to pick a destination from.
    destinations: Vec<(String, String)>,
    filtered: bool,
    jobs: Vec<JobRow>,
    next: Option<String>,
}

async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let tenant = viewer.tenant.clone();
    let filters = JobFilters::parse(&query)?;
    let after = match query.get("after") {
        None => filters.before.as_ref().map(|(_, ms)| (*ms, 0)),
        Some(raw) => {
            let parsed = raw
                .split_once('_')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.parse::<i64>().ok()?)));
            Some(parsed.ok_or_else(|| ApiError::invalid("after", "not a page cursor"))?)
        }
    };
    // Counts by status come from the catalog's maintained counters.
    let mut counts: Vec<(JobStatus, i64)> = state
        .catalog
        .count_jobs()
        .await?
        .into_iter()
        .filter(|c| c.org == tenant.org.as_str() && c.sandbox == tenant.sandbox.as_str())
        .map(|c| (c.status, c.n))
        .collect();
    counts.sort_by_key(|(s, _)| s.as_str());
    let total = counts.iter().map(|(_, n)| n).sum();
    let list = JobListQuery {
        status: filters.status,
        dataset_id: filters.dataset.clone(),
        created_since_ms: filters.since.as_ref().map(|(_, ms)| *ms),
        after,
        skip: 0,
        limit: PAGE_SIZE + 1,
    };
    let mut records = state.catalog.list_export_jobs(&tenant, &list).await?;
    let more = records.len() > PAGE_SIZE as usize;
    records.truncate(PAGE_SIZE as usize);
    let next = more.then(|| {
        let last = &records[records.len() - 1];
        format!("/ui/jobs?{}after={}_{}", filters.query(filters.status), last.creation_ms, last.id)
    });
    let now = segport_model::time::now_ms();
    let jobs = records.iter().map(|r| JobRow::of(r, now)).collect();
    let export_class = segport_model::dataset::DatasetClass::Export;
    let destinations = state
        .catalog
        .list_datasets(&tenant, &segport_catalog::ListQuery { limit: 200, start: 0 })
        .await?
        .into_iter()
        .filter(|d| d.class == export_class)
        .map(|d| (d.id.to_string(), d.name))
        .collect();
    let link = |status: Option<JobStatus>| {
        let query = filters.query(status);
        format!("/ui/jobs?{}", query.trim_end_matches('&'))
    };
    let page = JobsPage {
        nav: viewer.nav(),
        status: filters.status.map(|s| s.as_str().to_owned()),
        counts: counts.iter().map(|(s, n)| (s.as_str().to_owned(), *n, link(Some(*s)))).collect(),
        total,
        all_link: link(None),
        dataset: filters.dataset.as_ref().map(ToString::to_string).unwrap_or_default(),
        since: filters.since.as_ref().map(|(raw, _)| raw.clone()).unwrap_or_default(),
        before: filters.before.as_ref().map(|(raw, _)| raw.clone()).unwrap_or_default(),
        destinations,
        filtered: filters.status.is_some()
            || filters.dataset.is_some()
            || filters.since.is_some()
            || filters.before.is_some(),
        jobs,
        next,
    };
    Ok(render(&page))
}

/// Rows a jobs list refreshes at most at once.
const LIVE_ROWS_MAX: usize = PAGE_SIZE as usize;

/// The status and progress of the listed jobs that wait or run (`?ids=1,2,…`), for the jobs
/// list's refresh: jobs of other sandboxes, or gone, are left out.
async fn jobs_live(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Value>, PageError> {
    let viewer = viewer(&state, &headers)
        .await?
        .ok_or_else(|| ApiError::NotFound("not signed in, or no sandbox picked".into()))?;
    let ids: Vec<i64> = query
        .get("ids")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .take(LIVE_ROWS_MAX)
        .map(|s| s.parse().map_err(|_| ApiError::invalid("ids", format!("{s:?} is not a job id"))))
        .collect::<Result<_, _>>()?;
    let now = segport_model::time::now_ms();
    let mut rows = Vec::new();
    for id in ids {
        if let Some(record) = state.catalog.get_export_job(&viewer.tenant, id).await? {
            let row = JobRow::of(&record, now);
            rows.push(json!({
                "id": row.id,
                "status": row.status,
                "progress": row.progress,
                "exported": row.exported,
            }));
        }
    }
    Ok(Json(json!({ "jobs": rows })))
}

/// A batch file as a job's page lists it: batch, name, rows, bytes, download link.
type FileRow = (String, String, i64, i64, String);

/// Rows a job page shows of its units, and of its files, at once.
const JOB_ROWS: usize = 100;

/// One page of a list shown whole in memory: the rows from `from`, and the links to the pages
/// before and after (`param` set to their offsets, `base` the page's path and other query).
struct Paged<T> {
    rows: Vec<T>,
    previous: Option<String>,
    next: Option<String>,
}

impl<T> Paged<T> {
    fn of(all: Vec<T>, from: usize, base: &str, param: &str) -> Self {
        let total = all.len();
        let rows: Vec<T> = all.into_iter().skip(from).take(JOB_ROWS).collect();
        let link = |at: usize| format!("{base}{param}={at}");
        Paged {
            previous: (from > 0).then(|| link(from.saturating_sub(JOB_ROWS))),
            next: (from + rows.len() < total).then(|| link(from + JOB_ROWS)),
            rows,
        }
    }
}

/// The row offset `name` of a query (0 when absent).
fn offset(query: &QueryPairs, name: &'static str) -> Result<usize, ApiError> {
    match query.get(name) {
        None => Ok(0),
        Some(raw) => {
            raw.parse().map_err(|_| ApiError::invalid(name, format!("{raw:?} is not a row offset")))
        }
    }
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    nav: Nav,
    id: i64,
    status: String,
    created: String,
    created_ago: String,
    updated: String,
    /// Phases with their start and length: waiting, exporting, and the whole.
    phases: Vec<(&'static str, String, String)>,
    /// Profiles exported by identity namespace.
    by_namespace: Vec<(String, u64)>,
    progress: String,
    exported: String,
    errors: Vec<(String, String)>,
    warnings: Vec<(String, String)>,
    /// Unit, partitions, state, worker, attempt, exported.
    units: Paged<(u32, String, String, String, i32, String)>,
    /// The destination batches.
    batches: Vec<String>,
    /// Their files, batch by batch.
    files: Paged<FileRow>,
    request: String,
    live: bool,
    /// Whether the job can be cancelled (it waits or runs) or deleted (it ended).
    cancellable: bool,
    csrf: String,
}

async fn load_job(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
) -> Result<ExportJobRecord, ApiError> {
    let id: i64 = raw.parse().map_err(|_| ApiError::NotFound(format!("no job {raw:?}")))?;
    state
        .catalog
        .get_export_job(tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("export job {id} not found")))
}

async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let tenant = viewer.tenant.clone();
    let record = load_job(&state, &tenant, &raw).await?;
    let csrf = viewer.csrf.clone();
    let (units_from, files_from) = (offset(&query, "units_from")?, offset(&query, "files_from")?);
    let units = if record.units_total.is_some() {
        state
            .catalog
            .export_job_units(&tenant, record.id)
            .await?
            .into_iter()
            .map(|u| {
                let (first, last) = (*u.partitions.start(), *u.partitions.end());
                let partitions =
                    if first == last { first.to_string() } else { format!("{first}–{last}") };
                (
                    u.no,
                    partitions,
                    u.state,
                    u.worker.unwrap_or_default(),
                    u.attempt,
                    u.exported.map(|n| n.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut files = Vec::new();
    let mut batches = Vec::new();
    for batch in record.spec.destination.batch_ids() {
        batches.push(batch.to_string());
        for f in state.catalog.list_batch_files(&tenant, batch).await? {
            let link = format!("/ui/files/{batch}?path={}", encode(&f.name));
            files.push((batch.to_string(), f.name, f.rows, f.bytes, link));
        }
    }
    let base = format!("/ui/jobs/{}?", record.id);
    let units =
        Paged::of(units, units_from, &format!("{base}files_from={files_from}&"), "units_from");
    let files =
        Paged::of(files, files_from, &format!("{base}units_from={units_from}&"), "files_from");
    let request = job_request(&record);
    let now = segport_model::time::now_ms();
    let page = JobPage {
        nav: viewer.nav(),
        id: record.id,
        status: record.status.as_str().to_owned(),
        created: utc(record.creation_ms),
        created_ago: ago(now, record.creation_ms),
        updated: utc(record.update_ms),
        phases: phases(&record, now),
        by_namespace: record
            .counters
            .as_ref()
            .map(|c| c.by_namespace.iter().map(|(ns, n)| (ns.clone(), *n)).collect())
            .unwrap_or_default(),
        progress: progress(&record),
        exported: record.counters.as_ref().map(|c| c.total.to_string()).unwrap_or_default(),
        errors: record.errors.iter().map(|e| (e.code.clone(), e.msg.clone())).collect(),
        warnings: record.warnings.iter().map(|w| (w.code.clone(), w.msg.clone())).collect(),
        units,
        batches,
        files,
        request: serde_json::to_string_pretty(&request).unwrap_or_default(),
        live: matches!(record.status, JobStatus::New | JobStatus::Processing),
        cancellable: matches!(record.status, JobStatus::New | JobStatus::Processing),
        csrf: csrf.clone(),
    };
    Ok(with_csrf_cookie(&viewer, render(&page)))
}

/// A running job's status and progress, for the job page's refresh.
async fn job_live(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, PageError> {
    let viewer = viewer(&state, &headers)
        .await?
        .ok_or_else(|| ApiError::NotFound("not signed in, or no sandbox picked".into()))?;
    let tenant = viewer.tenant.clone();
    let record = load_job(&state, &tenant, &raw).await?;
    Ok(Json(json!({"status": record.status.as_str(), "progress": progress(&record)})))
}

/// A job's phases: waiting in the queue, exporting, and the whole, each with its start and
/// how long it took (or has taken so far).
fn phases(record: &ExportJobRecord, now: i64) -> Vec<(&'static str, String, String)> {
    let end = record.finished_ms.unwrap_or(now);
    let length = |from: i64, to: i64| {
        let ms = (to - from).max(0);
        if ms < 10_000 {
            format!("{ms} ms")
        } else {
            format!("{:.1} s", ms as f64 / 1000.0)
        }
    };
    let started = record.started_ms;
    let mut rows = vec![(
        "Waiting",
        utc(record.creation_ms),
        length(record.creation_ms, started.unwrap_or(end)),
    )];
    if let Some(started) = started {
        rows.push(("Exporting", utc(started), length(started, end)));
    }
    rows.push(("Total", utc(record.creation_ms), length(record.creation_ms, end)));
    rows
}

/// The body a job was created with, as the API takes it.
fn job_request(record: &ExportJobRecord) -> Value {
    let wire = serde_json::to_value(record.to_wire()).unwrap_or(Value::Null);
    let mut destination = json!({
        "datasetId": wire["destination"]["datasetId"],
        "segmentPerBatch": wire["destination"]["segmentPerBatch"],
    });
    if destination["segmentPerBatch"].is_null() {
        destination = json!({"datasetId": wire["destination"]["datasetId"]});
    }
    let mut body = json!({"destination": destination, "schema": wire["schema"]});
    for key in ["fields", "filter", "additionalFields", "mergePolicy"] {
        if !wire[key].is_null() {
            body[key] = wire[key].clone();
        }
    }
    body
}

fn progress(record: &ExportJobRecord) -> String {
    match (&record.progress, record.status) {
        (_, JobStatus::Succeeded) => "done".to_owned(),
        (Some(p), _) if p.units_total.is_some() => format!(
            "{} of {} units",
            p.units_done.unwrap_or_default(),
            p.units_total.unwrap_or_default()
        ),
        (Some(p), _) => format!("{} of {} partitions", p.partitions_done, p.partitions_total),
        (None, _) => String::new(),
    }
}

/// How a sandbox is shown.
fn label(tenant: &Tenant) -> String {
    format!("{} / {}", tenant.org.as_str(), tenant.sandbox.as_str())
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// "5 min ago" and the like.
fn ago(now: i64, then: i64) -> String {
    if then > now + 999 {
        return format!("in {}", span((then - now) / 1000));
    }
    format!("{} ago", span((now - then).max(0) / 1000))
}

/// `s` seconds in the largest unit that fits.
fn span(s: i64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// One row of the datasets list.
struct DatasetRow {
    id: String,
    name: String,
    class: String,
    profile: &'static str,
    created: String,
}

#[derive(Template)]
#[template(path = "console/datasets.html")]
struct DatasetsPage {
    nav: Nav,
    datasets: Vec<DatasetRow>,
    start: u64,
    previous: Option<String>,
    next: Option<String>,
}

/// Links to the previous and next pages of a list at `path` showing `shown` rows from `start`.
fn links(path: &str, start: u64, shown: usize) -> (Option<String>, Option<String>) {
    let page = u64::from(PAGE_SIZE);
    let previous = (start > 0).then(|| format!("{path}?start={}", start.saturating_sub(page)));
    let next = (shown as u64 == page).then(|| format!("{path}?start={}", start + page));
    (previous, next)
}

async fn datasets(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let tenant = viewer.tenant.clone();
    let start = offset(&query, "start")? as u64;
    let list = segport_catalog::ListQuery { limit: PAGE_SIZE, start };
    let found = state.catalog.list_datasets(&tenant, &list).await?;
    let (previous, next) = links("/ui/datasets", start, found.len());
    let datasets = found
        .iter()
        .map(|d| DatasetRow {
            id: d.id.to_string(),
            name: d.name.clone(),
            class: d.class.as_str().to_owned(),
            profile: if d.unified_profile() { "yes" } else { "no" },
            created: utc(d.created_ms),
        })
        .collect();
    let page = DatasetsPage { nav: viewer.nav(), datasets, start, previous, next };
    Ok(render(&page))
}

/// One row of a dataset's batches.
struct BatchRow {
    id: String,
    status: String,
    records: String,
    failed: String,
    completed: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/dataset.html")]
struct DatasetPage {
    nav: Nav,
    id: String,
    name: String,
    class: String,
    profile: &'static str,
    schema: String,
    /// Records can be uploaded into it (it is no export destination).
    uploadable: bool,
    csrf: String,
    batches: Vec<BatchRow>,
    start: u64,
    previous: Option<String>,
    next: Option<String>,
}

async fn dataset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let tenant = viewer.tenant.clone();
    let missing = || ApiError::NotFound(format!("dataset {raw:?} not found"));
    let id = segport_model::DatasetId::parse(&raw).map_err(|_| missing())?;
    let found = state.catalog.get_dataset(&tenant, &id).await?.ok_or_else(missing)?;
    let path = format!("/ui/datasets/{id}");
    let start = offset(&query, "start")? as u64;
    let filter = segport_catalog::BatchFilter { dataset_id: Some(id.clone()), status: None };
    let list = segport_catalog::ListQuery { limit: PAGE_SIZE, start };
    let listed = state.catalog.list_batches(&tenant, &filter, &list).await?;
    let (previous, next) = links(&path, start, listed.len());
    let count = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    let batches = listed
        .iter()
        .map(|b| BatchRow {
            id: b.id.to_string(),
            status: b.status.as_str().to_owned(),
            records: count(b.record_count),
            failed: count(b.failed_record_count),
            completed: b.completed_ms.map(utc).unwrap_or_default(),
            error: b
                .errors
                .first()
                .map(|e| format!("{}: {}", e.code, e.description))
                .unwrap_or_default(),
        })
        .collect();
    let page = DatasetPage {
        nav: viewer.nav(),
        id: found.id.to_string(),
        name: found.name.clone(),
        class: found.class.as_str().to_owned(),
        profile: if found.unified_profile() { "yes" } else { "no" },
        schema: found.schema_ref.id.clone(),
        uploadable: found.class != segport_model::dataset::DatasetClass::Export,
        csrf: viewer.csrf.clone(),
        batches,
        start,
        previous,
        next,
    };
    Ok(with_csrf_cookie(&viewer, render(&page)))
}

/// Uploads the request's body as the file `?name=` (format `?format=`: json or parquet) into a
/// new ingest batch of the dataset and completes it, as a client of the Batch Ingestion API
/// would; an upload that fails aborts its batch. The page's script sends the form token in a
/// header and shows the upload's progress. Answers `{id, status}` of the batch.
async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: QueryPairs,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let viewer = script_viewer(&state, &headers).await?;
    let tenant = &viewer.tenant;
    let name = query.get("name").unwrap_or_default();
    // A name the upload would refuse makes no batch.
    segport_store::storage::valid_upload_name(name).map_err(|m| ApiError::invalid("name", m))?;
    let format = query.get("format").unwrap_or("json");
    let create = json!({"datasetId": raw, "inputFormat": {"format": format}});
    let batch = crate::routes::import::create_batch(&state, tenant, &create).await?;
    let id = batch.id.to_string();
    use crate::routes::import::{act_on_batch, store_upload};
    if let Err(e) = store_upload(&state, tenant, &id, &raw, name, body).await {
        if let Err(abort) = act_on_batch(&state, tenant, &id, "ABORT").await {
            tracing::warn!(batch_id = %id, error = %abort, "cannot abort a failed console upload");
        }
        return Err(e);
    }
    Ok(Json(act_on_batch(&state, tenant, &id, "COMPLETE").await?))
}

/// The viewer of a console script's state-changing call, once the form token it sends in its
/// header checked.
async fn script_viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    let viewer = viewer(state, headers)
        .await?
        .ok_or_else(|| ApiError::Forbidden("not signed in, or no sandbox picked".into()))?;
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if same_token(sent, &form_token(&viewer, headers)) {
        Ok(viewer)
    } else {
        Err(ApiError::Forbidden(STALE_FORM.to_owned()))
    }
}

/// A new form token: 32 random bytes, hex.
fn fresh_csrf_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `response` with the cookie of the viewer's form token when the page made it (dev mode).
fn with_csrf_cookie(viewer: &Viewer, mut response: Response) -> Response {
    if viewer.fresh_csrf {
        if let Ok(value) = csrf_cookie(&viewer.csrf).parse() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

fn csrf_cookie(token: &str) -> String {
    format!("{CSRF_COOKIE}={token}; Path={PREFIX}; HttpOnly; SameSite=Strict")
}

/// Whether a form's token is the one expected (compared in constant time).
fn same_token(sent: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The fields of a posted form, once its token is the one `expected`.
fn checked_form(expected: &str, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::invalid("form", format!("not a form: {e}")))?;
    let sent = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    match sent {
        Some(sent) if same_token(sent, expected) => Ok(fields),
        _ => Err(ApiError::Forbidden(STALE_FORM.to_owned())),
    }
}

/// The token a posted form must carry: the session's (token mode), or the one of the cookie
/// the page set (dev mode).
fn form_token(viewer: &Viewer, headers: &HeaderMap) -> String {
    match &viewer.session {
        Some(_) => viewer.csrf.clone(),
        None => cookie(headers, CSRF_COOKIE).unwrap_or_default(),
    }
}

/// The viewer of a posted form and its fields, once the form's token checked; `None` when
/// nobody is signed in (or no sandbox is picked).
async fn form_of(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<(Viewer, Vec<(String, String)>)>, PageError> {
    let Some(viewer) = viewer(state, headers).await? else { return Ok(None) };
    let fields = checked_form(&form_token(&viewer, headers), body)?;
    Ok(Some((viewer, fields)))
}

/// A posted form's field `name`.
fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// The sandbox and the job a posted form acts on, once the form's token checked; `None` when
/// nobody is signed in (or no sandbox is picked).
async fn job_of_form(
    state: &AppState,
    headers: &HeaderMap,
    raw: &str,
    body: &[u8],
) -> Result<Option<(Tenant, ExportJobRecord)>, PageError> {
    let Some((viewer, _)) = form_of(state, headers, body).await? else { return Ok(None) };
    let record = load_job(state, &viewer.tenant, raw).await?;
    Ok(Some((viewer.tenant, record)))
}

/// Cancels a waiting or running job, or deletes one that ended (as `DELETE /export/jobs/{id}`).
async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((tenant, record)) = job_of_form(&state, &headers, &raw, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let outcome = state
        .catalog
        .cancel_export_job(&tenant, record.id, segport_model::time::now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("export job {} not found", record.id)))?;
    tracing::info!(job_id = record.id, ?outcome, "export job cancel requested from the console");
    let deleted = !matches!(record.status, JobStatus::New | JobStatus::Processing);
    let to = if deleted { "/ui/jobs".to_owned() } else { format!("/ui/jobs/{}", record.id) };
    Ok(Redirect::to(&to).into_response())
}

/// Creates a new job from the same body ("run again"), under the policy's latest version.
async fn rerun_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((tenant, record)) = job_of_form(&state, &headers, &raw, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let mut request = job_request(&record);
    request["mergePolicy"] = json!({"id": record.spec.merge_policy.id});
    let mut profile = HeaderMap::new();
    if let Ok(value) = record.spec.profile_instance_id.parse() {
        profile.insert("x-profile-instance-id", value);
    }
    let created = crate::routes::jobs::create_job(&state, &tenant, &profile, &request).await?;
    Ok(Redirect::to(&format!("/ui/jobs/{}", created.id)).into_response())
}

/// A committed file of a batch of the viewer's sandbox (`?path=` names it), Range supported:
/// a link cannot send the API's headers, so the console's session stands in for them.
async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(batch): Path<String>,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let name = query.get("path").ok_or_else(|| ApiError::invalid("path", "name a file"))?;
    let tenant = &viewer.tenant;
    Ok(crate::routes::data_access::download(&state, tenant, &batch, name, &headers).await?)
}

/// Field paths suggested for `fields`, at most.
const FIELD_SUGGESTIONS: usize = 500;
/// Segments the new-export form lists to pick from, at most (the first in id order).
const SEGMENTS_SHOWN: usize = 1000;

#[derive(Template)]
#[template(path = "console/new.html")]
struct NewExportPage {
    nav: Nav,
    csrf: String,
    /// Export datasets: id, name.
    destinations: Vec<(String, String)>,
    /// Segment ids with their memberships by status, as text.
    segments: Vec<(String, String)>,
    /// How many segments the store has (more than listed past [`SEGMENTS_SHOWN`]).
    segments_total: usize,
    profile_fields: Vec<String>,
    event_fields: Vec<String>,
    /// The body to start from (a refused one, kept).
    body: String,
    /// What was wrong with the body last sent: where, what.
    problems: Vec<(String, String)>,
}

/// The new-export form: its parts, with the body (`body`) and what was wrong with it.
async fn new_export_page(
    state: &AppState,
    viewer: &Viewer,
    body: String,
    problems: Vec<(String, String)>,
) -> Result<Response, PageError> {
    let tenant = &viewer.tenant;
    let destinations = state
        .catalog
        .list_datasets(tenant, &segport_catalog::ListQuery { limit: 200, start: 0 })
        .await?
        .into_iter()
        .filter(|d| d.class == segport_model::dataset::DatasetClass::Export)
        .map(|d| (d.id.to_string(), d.name))
        .collect();
    let store = state.catalog.find_store_state(tenant).await?;
    let counts = match &store {
        Some(store) => crate::segments::segment_counts(state, tenant, store).await?,
        None => crate::segments::SegmentCounts::default(),
    };
    let segments_total = counts.len();
    let segments = counts
        .iter()
        .take(SEGMENTS_SHOWN)
        .map(|(id, counts)| {
            let text: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
            (id.clone(), text.join(" · "))
        })
        .collect();
    let paths = |text: Option<&str>| {
        text.and_then(|t| segport_store::schema::UnionSchema::from_json(t).ok())
            .map(|s| s.field_paths(FIELD_SUGGESTIONS))
            .unwrap_or_default()
    };
    let page = NewExportPage {
        nav: viewer.nav(),
        csrf: viewer.csrf.clone(),
        destinations,
        segments,
        segments_total,
        profile_fields: paths(store.as_ref().map(|s| s.profile_schema.as_str())),
        event_fields: paths(store.as_ref().map(|s| s.event_schema.as_str())),
        body,
        problems,
    };
    let status = if page.problems.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok(with_csrf_cookie(viewer, (status, render(&page)).into_response()))
}

async fn new_export(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    new_export_page(&state, &viewer, String::new(), Vec::new()).await
}

/// Creates the job of the form's `body` (as `POST /export/jobs` would) and shows it; a body
/// refused comes back with what was wrong, kept as typed.
async fn create_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((viewer, fields)) = form_of(&state, &headers, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let text = field(&fields, "body").unwrap_or_default();
    let problems = match serde_json::from_str::<Value>(&text) {
        Err(e) => vec![("body".to_owned(), format!("not JSON: {e}"))],
        Ok(request) => {
            let none = HeaderMap::new();
            match crate::routes::jobs::create_job(&state, &viewer.tenant, &none, &request).await {
                Ok(created) => {
                    return Ok(Redirect::to(&format!("/ui/jobs/{}", created.id)).into_response())
                }
                Err(ApiError::Invalid(errors)) => {
                    errors.0.iter().map(|e| (e.field.clone(), e.message.clone())).collect()
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    new_export_page(&state, &viewer, text, problems).await
}

/// The header a console script sends its form token in.
const CSRF_HEADER: &str = "x-segport-csrf";

/// What the job body posted (JSON) would export now: the preview API's answer, for the
/// new-export form's script, which sends the form token in a header.
async fn preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let viewer = script_viewer(&state, &headers).await?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?;
    let none = HeaderMap::new();
    let answer =
        crate::routes::preview::preview_of(&state, &viewer.tenant, &none, &request, 5).await?;
    Ok(Json(answer))
}

/// A worker is shown as live while it said so this recently.
const WORKER_LIVE_MS: i64 = 10_000;
/// Running tasks the workers page lists, at most.
const RUNNING_SHOWN: u32 = 200;

/// A live worker as its row shows it.
struct WorkerRow {
    owner: String,
    host: String,
    slots: u32,
    running: usize,
    started: String,
    started_ago: String,
    seen_ago: String,
}

/// A running task as its row shows it.
struct RunningRow {
    id: i64,
    kind: &'static str,
    sandbox: String,
    subject: String,
    link: Option<String>,
    unit: String,
    owner: String,
    attempt: i32,
    since_ago: String,
}

#[derive(Template)]
#[template(path = "console/workers.html")]
struct WorkersPage {
    nav: Nav,
    /// Dev mode: every sandbox's queue and the workers; token mode: the viewer's own.
    operator: bool,
    workers: Vec<WorkerRow>,
    workers_count: usize,
    live_seconds: i64,
    /// Sandbox, kind, queued, running.
    queue: Vec<(String, &'static str, i64, i64)>,
    running: Vec<RunningRow>,
    running_max: usize,
    now: String,
}

/// Live workers, queue depth by sandbox and the running tasks. Operators (dev mode) see all of
/// it; a signed-in tenant (token mode) sees its own queue and tasks, and how many workers live.
async fn workers(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let operator = viewer.session.is_none();
    let now = segport_model::time::now_ms();
    let own = (!operator).then_some(&viewer.tenant);
    let running = state.catalog.running_tasks(own, RUNNING_SHOWN).await?;
    let live = state.catalog.live_workers(now - WORKER_LIVE_MS).await?;
    let workers_count = live.len();
    let workers = if operator {
        live.into_iter()
            .map(|w| WorkerRow {
                running: running.iter().filter(|r| r.owner == w.owner).count(),
                started: utc(w.started_ms),
                started_ago: ago(now, w.started_ms),
                seen_ago: ago(now, w.seen_ms),
                owner: w.owner,
                host: w.host,
                slots: w.slots,
            })
            .collect()
    } else {
        Vec::new()
    };
    let queue = state
        .catalog
        .queue_depth()
        .await?
        .into_iter()
        .filter(|q| {
            operator
                || (q.org == viewer.tenant.org.as_str()
                    && q.sandbox == viewer.tenant.sandbox.as_str())
        })
        .map(|q| (format!("{} / {}", q.org, q.sandbox), q.kind.as_str(), q.queued, q.running))
        .collect();
    let running = running
        .into_iter()
        .map(|r| {
            let (subject, link) = match (r.job_id, &r.batch_id) {
                (Some(job), _) => (format!("job {job}"), Some(format!("/ui/jobs/{job}"))),
                (None, Some(batch)) => (format!("batch {batch}"), None),
                (None, None) => (String::new(), None),
            };
            RunningRow {
                id: r.id,
                kind: r.kind.as_str(),
                sandbox: format!("{} / {}", r.org, r.sandbox),
                // Another sandbox's job has no page for this viewer.
                link: link.filter(|_| {
                    r.org == viewer.tenant.org.as_str()
                        && r.sandbox == viewer.tenant.sandbox.as_str()
                }),
                subject,
                unit: r.unit_no.map(|u| u.to_string()).unwrap_or_default(),
                owner: r.owner,
                attempt: r.attempt,
                since_ago: ago(now, r.since_ms),
            }
        })
        .collect();
    let page = WorkersPage {
        nav: viewer.nav(),
        operator,
        workers,
        workers_count,
        live_seconds: WORKER_LIVE_MS / 1000,
        queue,
        running,
        running_max: RUNNING_SHOWN as usize,
        now: utc(now),
    };
    Ok(render(&page))
}

/// A profile found, as its page shows it.
struct FoundProfile {
    key: String,
    policy: String,
    sources: Vec<String>,
    modified: String,
    entity: String,
    /// Its segment memberships: namespace, segment, status, last qualification.
    memberships: Vec<(String, String, String, String)>,
    event_count: usize,
    /// The latest events: timestamp, `_id`, event type (or the event as JSON).
    events: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/profile.html")]
struct ProfilePage {
    nav: Nav,
    ns: String,
    id: String,
    policy: String,
    searched: bool,
    found: Option<FoundProfile>,
}

/// The memberships of a merged profile (`segmentMembership.{ns}.{segment}`), in key order.
fn memberships(entity: &Value) -> Vec<(String, String, String, String)> {
    let Some(namespaces) = entity["segmentMembership"].as_object() else { return Vec::new() };
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut found: Vec<_> = namespaces
        .iter()
        .filter_map(|(ns, segments)| Some((ns, segments.as_object()?)))
        .flat_map(|(ns, segments)| {
            segments.iter().map(move |(id, m)| {
                let when = m.get("lastQualificationTime").map(text).unwrap_or_default();
                (ns.clone(), id.clone(), m.get("status").map(text).unwrap_or_default(), when)
            })
        })
        .collect();
    found.sort();
    found
}

/// Events a profile's page lists, the latest first.
const RECENT_EVENTS: usize = 50;

/// A profile by its primary identity, under a merge policy: the merged profile, its sources
/// and its recent events (the profile access API's read).
async fn profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let tenant = viewer.tenant.clone();
    let field = |name| query.get(name).map(str::trim).unwrap_or_default().to_owned();
    let (ns, id, policy) = (field("ns"), field("id"), field("policy"));
    let searched = !ns.is_empty() && !id.is_empty();
    if ns.len() > 1024 || id.len() > 1024 {
        return Err(ApiError::invalid("id", "longer than 1024 bytes").into());
    }
    let found = if searched {
        let policy_id = Some(policy.as_str()).filter(|p| !p.is_empty());
        crate::routes::access::profile_with_events(&state, &tenant, &ns, &id, policy_id).await?.map(
            |(policy, profile, events)| FoundProfile {
                key: format!("{ns}:{id}"),
                policy: policy.id.to_string(),
                sources: profile.sources,
                modified: utc(profile.last_modified_ms),
                memberships: memberships(&profile.entity),
                entity: serde_json::to_string_pretty(&profile.entity).unwrap_or_default(),
                event_count: events.len(),
                events: events
                    .iter()
                    .rev()
                    .take(RECENT_EVENTS)
                    .map(|e| {
                        let kind = e.entity["eventType"]
                            .as_str()
                            .map_or_else(|| e.entity.to_string(), str::to_owned);
                        (e.timestamp_ms.map(utc).unwrap_or_default(), e.id.clone(), kind)
                    })
                    .collect(),
            },
        )
    } else {
        None
    };
    let page = ProfilePage { nav: viewer.nav(), ns, id, policy, searched, found };
    Ok(render(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_shown_whole_pages_by_offset() {
        let rows = |p: &Paged<usize>| (p.rows.first().copied(), p.rows.len());
        let first = Paged::of((0..250).collect(), 0, "/ui/jobs/1?a=0&", "b");
        assert_eq!(rows(&first), (Some(0), JOB_ROWS));
        assert_eq!((first.previous, first.next.as_deref()), (None, Some("/ui/jobs/1?a=0&b=100")));
        let last = Paged::of((0..250).collect(), 200, "/x?", "b");
        assert_eq!(rows(&last), (Some(200), 50));
        assert_eq!((last.previous.as_deref(), last.next), (Some("/x?b=100"), None));
        let past = Paged::of((0..250).collect::<Vec<usize>>(), 900, "/x?", "b");
        assert_eq!((past.rows.len(), past.next), (0, None));
        let exact = Paged::of((0..100).collect::<Vec<usize>>(), 0, "/x?", "b");
        assert_eq!(exact.next, None, "no empty page after a full one");
    }

    #[test]
    fn memberships_come_from_the_merged_profile() {
        let entity = json!({"segmentMembership": {"ups": {
            "s2": {"status": "exited", "lastQualificationTime": "2026-01-01T00:00:00Z"},
            "s1": {"status": "realized"}
        }}});
        assert_eq!(
            memberships(&entity),
            [
                ("ups".into(), "s1".into(), "realized".into(), String::new()),
                ("ups".into(), "s2".into(), "exited".into(), "2026-01-01T00:00:00Z".into()),
            ]
        );
        assert!(memberships(&json!({"segmentMembership": 3})).is_empty());
    }
}
