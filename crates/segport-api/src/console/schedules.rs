//! The console's schedules: the sandbox's schedules with their next and last runs and missed
//! times, a form that creates one from an export job body, and a schedule's page (its recent
//! runs and the jobs they made) with activate, deactivate and delete. Every change goes
//! through the functions the API's routes use.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use segport_model::schedule::{RunOutcome, Schedule, ScheduleState};
use serde_json::{json, Value};

use super::{
    ago, field, form_of, links, offset, render, to_sign_in, utc, viewer, with_csrf_cookie, Nav,
    PageError, PAGE_SIZE,
};
use crate::extract::QueryPairs;
use crate::routes::schedules::{create_schedule, patch_schedule, RECENT_RUNS};
use crate::{ApiError, AppState};

/// Runs a schedule's page lists.
const RUNS_SHOWN: u32 = 100;

struct ScheduleRow {
    id: String,
    name: String,
    cron: String,
    state: &'static str,
    delta: bool,
    next: String,
    last: String,
    last_job: Option<i64>,
    missed: i64,
}

impl ScheduleRow {
    fn of(s: &Schedule, now: i64) -> Self {
        Self {
            id: s.id.clone(),
            name: s.body.name.clone(),
            cron: s.body.cron.as_str().to_owned(),
            state: s.body.state.as_str(),
            delta: s.body.delta,
            next: s
                .next_due_ms
                .map(|t| format!("{} ({})", utc(t), ago(now, t)))
                .unwrap_or_default(),
            last: s.last_due_ms.map(utc).unwrap_or_default(),
            last_job: s.last_job_id,
            missed: s.missed,
        }
    }
}

/// What the create form holds, kept across a refused submission.
struct Draft {
    name: String,
    cron: String,
    active: bool,
    delta: bool,
    job: String,
}

#[derive(Template)]
#[template(path = "console/schedules.html")]
struct SchedulesPage {
    nav: Nav,
    csrf: String,
    schedules: Vec<ScheduleRow>,
    total: u64,
    previous: Option<String>,
    next: Option<String>,
    draft: Draft,
    problems: Vec<(String, String)>,
}

async fn first_destination(
    state: &AppState,
    tenant: &segport_model::Tenant,
) -> Result<String, ApiError> {
    let list = segport_catalog::ListQuery { limit: 100, start: 0 };
    let found = state.catalog.list_datasets(tenant, &list).await?;
    Ok(found
        .iter()
        .find(|d| d.class == segport_model::dataset::DatasetClass::Export)
        .map(|d| d.id.to_string())
        .unwrap_or_else(|| "an export dataset's id".to_owned()))
}

async fn list_page(
    state: &AppState,
    headers: &HeaderMap,
    query: &QueryPairs,
    draft: Option<Draft>,
    problems: Vec<(String, String)>,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(state, headers).await? else { return Ok(to_sign_in(state)) };
    let start = offset(query, "start")? as u64;
    let list = segport_catalog::ListQuery { limit: PAGE_SIZE, start };
    let (found, total) = state.catalog.list_schedules(&viewer.tenant, &list).await?;
    let (previous, next) = links("/ui/schedules", start, found.len());
    let now = segport_model::time::now_ms();
    let draft = match draft {
        Some(d) => d,
        None => {
            let dataset = first_destination(state, &viewer.tenant).await?;
            let job = json!({"destination": {"datasetId": dataset}, "schema": {"name": "_xdm.context.profile"}});
            Draft {
                name: String::new(),
                cron: "0 30 13 * * ?".to_owned(),
                active: true,
                delta: false,
                job: serde_json::to_string_pretty(&job).unwrap_or_default(),
            }
        }
    };
    let page = SchedulesPage {
        nav: viewer.nav(),
        csrf: viewer.csrf.clone(),
        schedules: found.iter().map(|s| ScheduleRow::of(s, now)).collect(),
        total,
        previous,
        next,
        draft,
        problems,
    };
    Ok(with_csrf_cookie(&viewer, render(&page)))
}

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, PageError> {
    list_page(&state, &headers, &query, None, Vec::new()).await
}

/// Creates a schedule from the form; a refused one shows the form again with every problem.
pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((viewer, fields)) = form_of(&state, &headers, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let get = |name: &str| field(&fields, name);
    let draft = Draft {
        name: get("name").unwrap_or_default(),
        cron: get("schedule").unwrap_or_default(),
        active: get("active").is_some(),
        delta: get("delta").is_some(),
        job: get("job").unwrap_or_default(),
    };
    let job: Value = match serde_json::from_str(&draft.job) {
        Ok(job) => job,
        Err(e) => {
            let problem = ("properties.exportJob".to_owned(), format!("is not JSON: {e}"));
            return list_page(&state, &headers, &query, Some(draft), vec![problem]).await;
        }
    };
    let request = json!({
        "name": draft.name,
        "type": "export",
        "schedule": draft.cron,
        "state": if draft.active { "active" } else { "inactive" },
        "properties": {"exportJob": job, "delta": draft.delta},
    });
    match create_schedule(&state, &viewer.tenant, &request).await {
        Ok(created) => Ok(Redirect::to(&format!("/ui/schedules/{}", created.id)).into_response()),
        Err(ApiError::Invalid(errors)) => {
            let problems = errors.0.into_iter().map(|e| (e.field, e.message)).collect();
            list_page(&state, &headers, &query, Some(draft), problems).await
        }
        Err(other) => Err(other.into()),
    }
}

struct RunRow {
    due: String,
    outcome: &'static str,
    job: Option<i64>,
    caught_up: i64,
    fired: String,
}

#[derive(Template)]
#[template(path = "console/schedule.html")]
struct SchedulePage {
    nav: Nav,
    csrf: String,
    schedule: ScheduleRow,
    active: bool,
    body: String,
    created: String,
    runs: Vec<RunRow>,
    runs_max: usize,
}

async fn load(
    state: &AppState,
    tenant: &segport_model::Tenant,
    id: &str,
) -> Result<Schedule, ApiError> {
    state
        .catalog
        .get_schedule(tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("schedule {id:?} not found")))
}

pub(super) async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer(&state, &headers).await? else { return Ok(to_sign_in(&state)) };
    let schedule = load(&state, &viewer.tenant, &id).await?;
    let runs =
        state.catalog.schedule_runs(&viewer.tenant, &id, RUNS_SHOWN.max(RECENT_RUNS)).await?;
    let now = segport_model::time::now_ms();
    let page = SchedulePage {
        nav: viewer.nav(),
        csrf: viewer.csrf.clone(),
        active: schedule.body.state == ScheduleState::Active,
        body: serde_json::to_string_pretty(&schedule.body.export_job).unwrap_or_default(),
        created: utc(schedule.create_ms),
        schedule: ScheduleRow::of(&schedule, now),
        runs_max: RUNS_SHOWN as usize,
        runs: runs
            .iter()
            .map(|r| RunRow {
                due: utc(r.due_ms),
                outcome: match r.outcome {
                    RunOutcome::Created => "job created",
                    RunOutcome::Missed => "missed: the previous run was in flight",
                },
                job: r.job_id,
                caught_up: r.caught_up,
                fired: utc(r.fired_ms),
            })
            .collect(),
    };
    Ok(with_csrf_cookie(&viewer, render(&page)))
}

/// Activates or deactivates (`state` of the form), as a PATCH of `/state` does.
pub(super) async fn set_state(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((viewer, fields)) = form_of(&state, &headers, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    let wanted = field(&fields, "state").unwrap_or_default();
    let ops = [json!({"op": "replace", "path": "/state", "value": wanted})];
    patch_schedule(&state, &viewer.tenant, &id, &ops).await?;
    Ok(Redirect::to(&format!("/ui/schedules/{id}")).into_response())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let Some((viewer, _)) = form_of(&state, &headers, &body).await? else {
        return Ok(to_sign_in(&state));
    };
    if !state.catalog.delete_schedule(&viewer.tenant, &id).await? {
        return Err(ApiError::NotFound(format!("schedule {id:?} not found")).into());
    }
    Ok(Redirect::to("/ui/schedules").into_response())
}
