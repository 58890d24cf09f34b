//! The operator console at `/ui`: server-rendered pages over the catalog the API reads, from
//! askama templates (`templates/console/`) compiled into the binary with their stylesheet, so
//! it works offline and needs no JavaScript build. A page's only script refreshes a running
//! job in place.
//!
//! Every `/ui` route is listed in [`routes`]; none is part of the OpenAPI description, and
//! errors under `/ui` are HTML pages that carry the request id. For now the console is served
//! in dev mode only, where a sandbox is picked without signing in; token mode gets it with its
//! session sign-in.

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
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/live", get(job_live))
        .route("/ui/jobs/{id}/cancel", axum::routing::post(cancel_job))
        .route("/ui/jobs/{id}/rerun", axum::routing::post(rerun_job))
        .route("/ui/datasets", get(datasets))
        .route("/ui/datasets/{id}", get(dataset))
        .route("/ui/profile", get(profile))
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
    tenant: Option<String>,
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
            tenant: None,
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
    tenant: Option<String>,
    known: Vec<(String, String)>,
}

async fn tenants(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let known = state
        .catalog
        .sandboxes()
        .await?
        .into_iter()
        .map(|t| (t.org.as_str().to_owned(), t.sandbox.as_str().to_owned()))
        .collect();
    Ok(render(&TenantsPage { tenant: tenant_of(&headers).as_ref().map(label), known }))
}

/// Remembers the sandbox picked (a view setting, not a change of data).
async fn pick_tenant(query: QueryPairs) -> Result<Response, PageError> {
    let field = |name| query.get(name).unwrap_or_default();
    let tenant = Tenant::parse(field("org"), field("sandbox")).map_err(ApiError::Invalid)?;
    let cookie = format!(
        "{TENANT_COOKIE}={}~{}; Path={PREFIX}; HttpOnly; SameSite=Strict",
        encode(tenant.org.as_str()),
        encode(tenant.sandbox.as_str())
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/jobs")).into_response())
}

/// Where a page goes when no sandbox is picked.
fn to_picker() -> Response {
    Redirect::to("/ui/tenants").into_response()
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
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    tenant: Option<String>,
    status: Option<String>,
    counts: Vec<(String, i64)>,
    total: i64,
    jobs: Vec<JobRow>,
    next: Option<String>,
}

async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<JobStatus>(json!(s))
                .map_err(|_| ApiError::invalid("status", format!("{s:?} is not a job status")))?,
        ),
    };
    let after = match query.get("after") {
        None => None,
        Some(raw) => {
            let parsed = raw
                .split_once('_')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.parse::<i64>().ok()?)));
            Some(parsed.ok_or_else(|| ApiError::invalid("after", "not a page cursor"))?)
        }
    };
    // Counts by status come from the catalog's maintained counters.
    let mut counts: Vec<(String, i64)> = state
        .catalog
        .count_jobs()
        .await?
        .into_iter()
        .filter(|c| c.org == tenant.org.as_str() && c.sandbox == tenant.sandbox.as_str())
        .map(|c| (c.status.as_str().to_owned(), c.n))
        .collect();
    counts.sort();
    let total = counts.iter().map(|(_, n)| n).sum();
    let list = JobListQuery { status, after, skip: 0, limit: PAGE_SIZE + 1 };
    let mut records = state.catalog.list_export_jobs(&tenant, &list).await?;
    let more = records.len() > PAGE_SIZE as usize;
    records.truncate(PAGE_SIZE as usize);
    let next = more.then(|| {
        let last = &records[records.len() - 1];
        let status = status.map(|s| format!("status={}&", s.as_str())).unwrap_or_default();
        format!("/ui/jobs?{status}after={}_{}", last.creation_ms, last.id)
    });
    let now = segport_model::time::now_ms();
    let jobs = records
        .iter()
        .map(|r| JobRow {
            id: r.id,
            status: r.status.as_str().to_owned(),
            dataset: r.spec.destination.dataset_id.to_string(),
            created: utc(r.creation_ms),
            created_ago: ago(now, r.creation_ms),
            progress: progress(r),
            exported: r.counters.as_ref().map(|c| c.total.to_string()).unwrap_or_default(),
        })
        .collect();
    let page = JobsPage {
        tenant: Some(label(&tenant)),
        status: status.map(|s| s.as_str().to_owned()),
        counts,
        total,
        jobs,
        next,
    };
    Ok(render(&page))
}

/// A batch file as a job's page lists it: name, rows, bytes.
type FileRow = (String, i64, i64);

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    tenant: Option<String>,
    id: i64,
    status: String,
    created: String,
    created_ago: String,
    updated: String,
    progress: String,
    exported: String,
    errors: Vec<(String, String)>,
    warnings: Vec<(String, String)>,
    /// Unit, partitions, state, worker, attempt, exported.
    units: Vec<(u32, String, String, String, i32, String)>,
    /// Each destination batch with its files.
    batches: Vec<(String, Vec<FileRow>)>,
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
) -> Result<Response, PageError> {
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
    let record = load_job(&state, &tenant, &raw).await?;
    let csrf = cookie(&headers, CSRF_COOKIE).filter(|c| c.len() == 64).unwrap_or_else(fresh_csrf);
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
    let mut batches = Vec::new();
    for batch in record.spec.destination.batch_ids() {
        let files = state.catalog.list_batch_files(&tenant, batch).await?;
        batches.push((
            batch.to_string(),
            files.into_iter().map(|f| (f.name, f.rows, f.bytes)).collect(),
        ));
    }
    let request = job_request(&record);
    let now = segport_model::time::now_ms();
    let page = JobPage {
        tenant: Some(label(&tenant)),
        id: record.id,
        status: record.status.as_str().to_owned(),
        created: utc(record.creation_ms),
        created_ago: ago(now, record.creation_ms),
        updated: utc(record.update_ms),
        progress: progress(&record),
        exported: record.counters.as_ref().map(|c| c.total.to_string()).unwrap_or_default(),
        errors: record.errors.iter().map(|e| (e.code.clone(), e.msg.clone())).collect(),
        warnings: record.warnings.iter().map(|w| (w.code.clone(), w.msg.clone())).collect(),
        units,
        batches,
        request: serde_json::to_string_pretty(&request).unwrap_or_default(),
        live: matches!(record.status, JobStatus::New | JobStatus::Processing),
        cancellable: matches!(record.status, JobStatus::New | JobStatus::Processing),
        csrf: csrf.clone(),
    };
    Ok(([(header::SET_COOKIE, csrf_cookie(&csrf))], render(&page)).into_response())
}

/// A running job's status and progress, for the job page's refresh.
async fn job_live(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, PageError> {
    let tenant =
        tenant_of(&headers).ok_or_else(|| ApiError::NotFound("no sandbox picked".into()))?;
    let record = load_job(&state, &tenant, &raw).await?;
    Ok(Json(json!({"status": record.status.as_str(), "progress": progress(&record)})))
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
    let s = (now - then).max(0) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
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
    tenant: Option<String>,
    datasets: Vec<DatasetRow>,
    start: u64,
    previous: Option<String>,
    next: Option<String>,
}

/// `start` of a paged list (a row offset).
fn start_of(query: &QueryPairs) -> Result<u64, ApiError> {
    match query.get("start") {
        None => Ok(0),
        Some(raw) => raw
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("start", format!("{raw:?} is not a row offset"))),
    }
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
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
    let start = start_of(&query)?;
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
    let page = DatasetsPage { tenant: Some(label(&tenant)), datasets, start, previous, next };
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
    tenant: Option<String>,
    id: String,
    name: String,
    class: String,
    profile: &'static str,
    schema: String,
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
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
    let missing = || ApiError::NotFound(format!("dataset {raw:?} not found"));
    let id = segport_model::DatasetId::parse(&raw).map_err(|_| missing())?;
    let found = state.catalog.get_dataset(&tenant, &id).await?.ok_or_else(missing)?;
    let path = format!("/ui/datasets/{id}");
    let start = start_of(&query)?;
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
        tenant: Some(label(&tenant)),
        id: found.id.to_string(),
        name: found.name.clone(),
        class: found.class.as_str().to_owned(),
        profile: if found.unified_profile() { "yes" } else { "no" },
        schema: found.schema_ref.id.clone(),
        batches,
        start,
        previous,
        next,
    };
    Ok(render(&page))
}

/// A new form token: 32 random bytes, hex.
fn fresh_csrf() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn csrf_cookie(token: &str) -> String {
    format!("{CSRF_COOKIE}={token}; Path={PREFIX}; HttpOnly; SameSite=Strict")
}

/// The fields of a posted form, once its token matched the cookie's.
fn checked_form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    use subtle::ConstantTimeEq;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::invalid("form", format!("not a form: {e}")))?;
    let sent = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_bytes());
    let expected = cookie(headers, CSRF_COOKIE);
    match (sent, expected) {
        (Some(sent), Some(expected)) if bool::from(sent.ct_eq(expected.as_bytes())) => Ok(fields),
        _ => Err(ApiError::Forbidden(
            "the form's token is missing or stale: reload the page and try again".to_owned(),
        )),
    }
}

/// Cancels a waiting or running job, or deletes one that ended (as `DELETE /export/jobs/{id}`).
async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
    checked_form(&headers, &body)?;
    let record = load_job(&state, &tenant, &raw).await?;
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
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
    checked_form(&headers, &body)?;
    let record = load_job(&state, &tenant, &raw).await?;
    let mut request = job_request(&record);
    request["mergePolicy"] = json!({"id": record.spec.merge_policy.id});
    let mut profile = HeaderMap::new();
    if let Ok(value) = record.spec.profile_instance_id.parse() {
        profile.insert("x-profile-instance-id", value);
    }
    let created = crate::routes::jobs::create_job(&state, &tenant, &profile, &request).await?;
    Ok(Redirect::to(&format!("/ui/jobs/{}", created.id)).into_response())
}

/// A profile found, as its page shows it.
struct FoundProfile {
    key: String,
    policy: String,
    sources: Vec<String>,
    modified: String,
    entity: String,
    event_count: usize,
    /// The latest events: timestamp, `_id`, event type (or the event as JSON).
    events: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/profile.html")]
struct ProfilePage {
    tenant: Option<String>,
    ns: String,
    id: String,
    policy: String,
    searched: bool,
    found: Option<FoundProfile>,
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
    let Some(tenant) = tenant_of(&headers) else { return Ok(to_picker()) };
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
    let page = ProfilePage { tenant: Some(label(&tenant)), ns, id, policy, searched, found };
    Ok(render(&page))
}
