//! Schedules `/data/core/ups/config/schedules`: list, create, get, patch and delete, in AEP's
//! shapes. Type `export` carries an export job body in `properties.exportJob`, checked against
//! the sandbox as a job create checks it; the scheduler (`crate::scheduler`) fires them.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use segport_catalog::ListQuery;
use segport_model::schedule::{Schedule, ScheduleBody, ScheduleState, MAX_SCHEDULES_PER_SANDBOX};
use segport_model::time::now_ms;
use segport_model::{Tenant, ValidationErrors};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::routes::jobs::check_create;
use crate::{ApiError, AppState};

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;
/// Runs a schedule's answer lists, newest first.
pub(crate) const RECENT_RUNS: u32 = 20;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, patch, delete))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("schedule {:?} not found", segport_model::error::clip(id, 80)))
}

/// Checks a schedule's export body as `POST /export/jobs` checks a body, its errors named under
/// `properties.exportJob`.
pub(crate) async fn check_export_body(
    state: &AppState,
    tenant: &Tenant,
    body: &ScheduleBody,
) -> Result<(), ApiError> {
    match check_create(state, tenant, &HeaderMap::new(), &body.export_job, now_ms()).await {
        Ok(_) => Ok(()),
        Err(ApiError::Invalid(errors)) => {
            let mut prefixed = ValidationErrors::default();
            for e in errors.0 {
                prefixed.push(format!("properties.exportJob.{}", e.field), e.message);
            }
            Err(ApiError::Invalid(prefixed))
        }
        Err(other) => Err(other),
    }
}

/// The next due time of `body` from `now`: `None` while inactive; a 400 when active and the
/// expression fires no more.
fn next_due(body: &ScheduleBody, now: i64) -> Result<Option<i64>, ApiError> {
    if body.state != ScheduleState::Active {
        return Ok(None);
    }
    body.cron.next_after(now).map(Some).ok_or_else(|| {
        ApiError::invalid(
            "schedule",
            format!("{:?} fires at no time after now; it could never run", body.cron.as_str()),
        )
    })
}

/// A schedule as answered: AEP's fields and segport's, with its latest runs.
async fn answer(state: &AppState, tenant: &Tenant, schedule: &Schedule) -> Result<Value, ApiError> {
    let runs = state.catalog.schedule_runs(tenant, &schedule.id, RECENT_RUNS).await?;
    let mut wire = schedule.to_wire();
    wire["recentRuns"] = runs.iter().map(|r| r.to_wire()).collect();
    Ok(wire)
}

#[utoipa::path(get, path = "/data/core/ups/config/schedules", operation_id = "listSchedules", tag = "schedules", params(("limit" = Option<u64>, Query, description = "Page size, 1 to 1000 (default 100)."), ("start" = Option<u64>, Query, description = "Schedules to skip.")), responses((status = 200, description = "A page of schedules, oldest first.", body = crate::openapi::ScheduleList)))]
async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let ListQuery { limit, start } = query.page(DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
    errors.into_result(())?;
    let (schedules, total) =
        state.catalog.list_schedules(&tenant, &ListQuery { limit, start }).await?;
    let end = start + schedules.len() as u64;
    let mut page = json!({"totalCount": total, "pageSize": schedules.len()});
    if end < total {
        page["next"] = json!(end.to_string());
    }
    let children: Vec<Value> = schedules.iter().map(Schedule::to_wire).collect();
    Ok(Json(json!({"_page": page, "children": children})))
}

#[utoipa::path(post, path = "/data/core/ups/config/schedules", operation_id = "createSchedule", tag = "schedules", request_body(content = crate::openapi::ScheduleCreate, content_type = "application/json"), responses((status = 200, description = "The schedule.", body = crate::openapi::ScheduleAnswer)))]
async fn create(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let schedule = create_schedule(&state, &tenant, &body).await?;
    Ok(Json(schedule.to_wire()))
}

/// Creates a schedule from a create's body (the API's and the console's).
pub(crate) async fn create_schedule(
    state: &AppState,
    tenant: &Tenant,
    body: &Value,
) -> Result<Schedule, ApiError> {
    let body = ScheduleBody::parse(body)?;
    check_export_body(state, tenant, &body).await?;
    let now = now_ms();
    let schedule = Schedule {
        id: segport_model::ids::new_uuid().to_string(),
        org: tenant.org.as_str().to_owned(),
        sandbox: tenant.sandbox.as_str().to_owned(),
        next_due_ms: next_due(&body, now)?,
        body,
        last_due_ms: None,
        last_job_id: None,
        missed: 0,
        delta_mark_ms: None,
        delta_key: None,
        create_ms: now,
        update_ms: now,
    };
    state.catalog.create_schedule(&schedule, MAX_SCHEDULES_PER_SANDBOX).await?;
    tracing::info!(schedule_id = %schedule.id, org = %tenant.org, sandbox = %tenant.sandbox, "schedule created");
    Ok(schedule)
}

#[utoipa::path(get, path = "/data/core/ups/config/schedules/{id}", operation_id = "getSchedule", tag = "schedules", params(("id" = String, Path, description = "The resource id.")), responses((status = 200, description = "The schedule, with its latest runs.", body = crate::openapi::ScheduleAnswer)))]
async fn get_one(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    let schedule = state.catalog.get_schedule(&tenant, &id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(answer(&state, &tenant, &schedule).await?))
}

/// What a JSON Patch of a schedule may change (`add` and `replace` only).
const SCHEDULE_PATCH: segport_model::patch::Paths<'static> = segport_model::patch::Paths {
    allowed: &[
        &["state"],
        &["schedule"],
        &["name"],
        &["properties", "exportJob"],
        &["properties", "delta"],
    ],
    hint: "/state, /schedule, /name, /properties/exportJob or /properties/delta",
    dotted: false,
    remove: false,
};

/// Applies a JSON Patch to a schedule, all or nothing, checked as a create is.
#[utoipa::path(patch, path = "/data/core/ups/config/schedules/{id}", operation_id = "patchSchedule", tag = "schedules", params(("id" = String, Path, description = "The resource id.")), request_body(content((Vec<crate::openapi::JsonPatchOp> = "application/json-patch+json"), (Vec<crate::openapi::JsonPatchOp> = "application/json"))), responses((status = 204, description = "Updated.")))]
async fn patch(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let Value::Array(ops) = body else {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON Patch array, e.g. [{\"op\": \"add\", \"path\": \"/state\", \"value\": \"active\"}]",
        ));
    };
    patch_schedule(&state, &tenant, &id, &ops).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies JSON Patch `ops` to schedule `id`, all or nothing, checked as a create is (the
/// API's PATCH and the console's buttons).
pub(crate) async fn patch_schedule(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    ops: &[Value],
) -> Result<(), ApiError> {
    let current = state.catalog.get_schedule(tenant, id).await?.ok_or_else(|| not_found(id))?;
    let mut document = current.body.to_document();
    segport_model::patch::apply(&mut document, ops, &SCHEDULE_PATCH)?;
    let body = ScheduleBody::parse(&document)?;
    if body.export_job != current.body.export_job {
        check_export_body(state, tenant, &body).await?;
    }
    let now = now_ms();
    // A change of expression or a (re)activation counts from now; anything else keeps the
    // due time the scheduler is waiting for.
    let next_due_ms = if body.state == ScheduleState::Active
        && current.body.state == ScheduleState::Active
        && body.cron.as_str() == current.body.cron.as_str()
        && current.next_due_ms.is_some()
    {
        current.next_due_ms
    } else {
        next_due(&body, now)?
    };
    let updated =
        Schedule { body, next_due_ms, update_ms: now.max(current.update_ms + 1), ..current };
    if !state.catalog.update_schedule(&updated).await? {
        return Err(not_found(id));
    }
    tracing::info!(schedule_id = %id, "schedule changed");
    Ok(())
}

#[utoipa::path(delete, path = "/data/core/ups/config/schedules/{id}", operation_id = "deleteSchedule", tag = "schedules", params(("id" = String, Path, description = "The resource id.")), responses((status = 204, description = "Deleted; the jobs it made stay.")))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if state.catalog.delete_schedule(&tenant, &id).await? {
        tracing::info!(schedule_id = %id, "schedule deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}
