//! `/export/jobs` (and AEP's `/data/core/ups/export/jobs`): create, list, get and cancel.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use segport_catalog::{JobListQuery, NewExportJob};
use segport_model::dataset::DatasetClass;
use segport_model::job::{
    ExportJob, ExportJobRecord, ExportJobRequest, JobProgress, JobStatus, JobUnit, JobWarning,
    DEFAULT_PROFILE_INSTANCE,
};
use segport_model::merge_policy::{parse_policy_id, IdentityGraphType, MergePolicy};
use segport_model::suggest::closest;
use segport_model::time::now_ms;
use segport_model::{BatchId, DatasetId, Tenant, ValidationErrors};
use segport_store::paths::{self, EVENT_FIELDS, PROFILE_FIELDS};
use segport_store::schema::UnionSchema;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::current_request_id;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

const AEP_PREFIX: &str = "/data/core/ups/export/jobs";
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let jobs = OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, cancel));
    // The same routes under AEP's path and at segport's alias `/export/jobs`.
    jobs.clone().nest(crate::openapi::AEP_JOBS_PREFIX, jobs)
}

#[utoipa::path(post, path = "/export/jobs", operation_id = "createExportJob", tag = "export jobs", request_body(content = crate::openapi::ExportJobCreate, content_type = "application/json"), params(("x-profile-instance-id" = Option<String>, Header, description = "Profile instance; default ups.")), responses((status = 200, description = "The job, status NEW; header X-Location names it.", body = segport_model::job::ExportJob)))]
async fn create(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let record = create_job(&state, &tenant, &headers, &body).await?;

    let mut response = Json(record.to_wire()).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{AEP_PREFIX}/{}", record.id)) {
        response.headers_mut().insert("x-location", location);
    }
    Ok(response)
}

/// Creates a job from `body` (checked as [`check_create`] does); the API's create and the
/// console's "run again" both come here.
pub(crate) async fn create_job(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: &Value,
) -> Result<ExportJobRecord, ApiError> {
    let now = now_ms();
    let job =
        check_create(state, tenant, headers, body, now).await?.into_job(current_request_id(), now);
    let record = state.jobs.create(tenant.clone(), job).await?;
    tracing::info!(job_id = record.id, org = %tenant.org, sandbox = %tenant.sandbox, "export job created");
    Ok(record)
}

/// A job body as a create checks it.
pub(crate) struct Checked {
    pub request: ExportJobRequest,
    pub policy: MergePolicy,
    /// The warnings the job starts with.
    pub warnings: Vec<JobWarning>,
    pub profile_instance_id: String,
}

impl Checked {
    /// The job to insert: its destination batches allocated.
    pub(crate) fn into_job(self, request_id: String, now_ms: i64) -> NewExportJob {
        let batches = (0..self.request.batch_count()).map(|_| BatchId::generate()).collect();
        NewExportJob {
            spec: self.request.into_spec(self.policy.to_ref(), batches, self.profile_instance_id),
            merge_policy: self.policy,
            warnings: self.warnings,
            request_id,
            now_ms,
            schedule_id: None,
            delta_key: None,
        }
    }
}

/// Checks a job body (and its `x-profile-instance-id` header) as a create does: every problem,
/// header, body and catalog references alike, collected into one 400.
pub(crate) async fn check_create(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: &Value,
    now: i64,
) -> Result<Checked, ApiError> {
    let mut errors = ValidationErrors::default();
    let profile_instance_id =
        profile_instance(headers).map_err(|m| errors.push("x-profile-instance-id", m)).ok();
    let request = ExportJobRequest::parse(body).map_err(|e| errors.0.extend(e.0)).ok();
    let (dataset_id, policy_ref) = match &request {
        Some(r) => (Some(r.dataset_id.clone()), r.merge_policy.clone()),
        None => ExportJobRequest::references(body),
    };
    state.catalog.ensure_sandbox(tenant, now).await?;
    if let Some(id) = &dataset_id {
        check_destination(state, tenant, id, &mut errors).await?;
    }
    let policy = resolve_merge_policy(state, tenant, policy_ref.as_ref(), &mut errors).await?;
    let field_warnings = match &request {
        Some(r) => check_fields(state, tenant, r, &mut errors).await?,
        None => Vec::new(),
    };
    let (Some(request), Some(policy), Some(profile_instance_id)) =
        (request, policy, profile_instance_id)
    else {
        return Err(ApiError::Invalid(errors));
    };
    errors.into_result(())?;
    let mut warnings = request.warnings();
    warnings.extend(field_warnings);
    Ok(Checked { request, policy, warnings, profile_instance_id })
}

/// The destination must be an export dataset of this sandbox.
async fn check_destination(
    state: &AppState,
    tenant: &Tenant,
    id: &DatasetId,
    errors: &mut ValidationErrors,
) -> Result<(), ApiError> {
    let field = "destination.datasetId";
    match state.catalog.get_dataset(tenant, id).await? {
        None => errors.push(
            field,
            format!(
                "no dataset {id} in sandbox {}; create one with POST /data/foundation/catalog/dataSets",
                tenant.sandbox
            ),
        ),
        Some(d) if d.class != DatasetClass::Export => errors.push(
            field,
            format!(
                "dataset {id} holds {} records; exports go to a dataset of schema \
                 https://ns.adobe.com/xdm/context/profile__union",
                d.class.as_str()
            ),
        ),
        Some(_) => {}
    }
    Ok(())
}

/// Checks the paths of `fields` and `additionalFields.eventList.fields` against the sandbox's
/// union schemas: once the sandbox holds data of a kind, a path that matches nothing is an error
/// with the closest known path (a misspelling found now, not after the export). Without data the
/// paths cannot be checked yet, so the job is accepted and says so in a warning each: a user may
/// create jobs before loading.
async fn check_fields(
    state: &AppState,
    tenant: &Tenant,
    request: &ExportJobRequest,
    errors: &mut ValidationErrors,
) -> Result<Vec<JobWarning>, ApiError> {
    let event_fields = request
        .additional_fields
        .as_ref()
        .and_then(|a| a.event_list.as_ref())
        .and_then(|e| e.fields.as_ref())
        .filter(|f| !f.is_all());
    if request.fields.is_all() && event_fields.is_none() {
        return Ok(Vec::new());
    }
    let store = state.catalog.store_state(tenant).await?;
    let mut warnings = Vec::new();
    let checks = [
        ("fields", Some(&request.fields), &store.profile_schema, PROFILE_FIELDS, "profile"),
        (
            "additionalFields.eventList.fields",
            event_fields,
            &store.event_schema,
            EVENT_FIELDS,
            "event",
        ),
    ];
    for (field, list, schema_text, fixed, kind) in checks {
        let Some(list) = list.filter(|l| !l.is_all()) else { continue };
        let schema = UnionSchema::from_json(schema_text).map_err(|e| {
            ApiError::Internal(
                format!("the {kind} schema of the sandbox is unreadable: {e}").into(),
            )
        })?;
        if schema.fields.is_empty() {
            warnings.extend(list.paths().iter().map(|path| JobWarning {
                code: segport_model::codes::WarningCode::FieldNotChecked.as_str().to_owned(),
                msg: format!(
                    "{field}: {:?} could not be checked, the sandbox holding no {kind} data \
                     yet; if it matches nothing when the job runs, it is left out",
                    path.segments().join(".")
                ),
            }));
            continue;
        }
        let mut known_paths: Option<Vec<String>> = None;
        for path in list.paths() {
            if paths::known(&schema, fixed, path.segments()) {
                continue;
            }
            let path = path.segments().join(".");
            let all = known_paths.get_or_insert_with(|| paths::all_paths(&schema, fixed, 20_000));
            let hint = match closest(&path, all.iter().map(String::as_str)) {
                Some(c) => format!("; did you mean {c:?}?"),
                None => String::new(),
            };
            errors.push(
                field,
                format!("{path:?} matches no field of the sandbox's {kind} data{hint}"),
            );
        }
    }
    Ok(warnings)
}

fn profile_instance(headers: &HeaderMap) -> Result<String, &'static str> {
    match headers.get("x-profile-instance-id") {
        None => Ok(DEFAULT_PROFILE_INSTANCE.to_owned()),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|s| {
                (1..=64).contains(&s.len())
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            })
            .map(str::to_owned)
            .ok_or("must be 1 to 64 characters of A-Z, a-z, 0-9, ., _ and -"),
    }
}

/// The policy a new job uses: the one named (at its latest version) or the sandbox's default.
/// Problems are added to `errors`.
async fn resolve_merge_policy(
    state: &AppState,
    tenant: &Tenant,
    requested: Option<&(String, Option<i64>)>,
    errors: &mut ValidationErrors,
) -> Result<Option<MergePolicy>, ApiError> {
    let policy = match requested {
        None => {
            let policy = state.catalog.default_merge_policy(tenant).await?;
            if policy.is_none() {
                errors.push("mergePolicy", "the sandbox has no default merge policy; name one");
            }
            policy
        }
        Some((id, version)) => {
            let found = match parse_policy_id(id) {
                Ok(id) => state.catalog.get_merge_policy(tenant, id).await?,
                Err(_) => None,
            };
            match (found, version) {
                (None, _) => {
                    errors.push(
                        "mergePolicy.id",
                        format!("no merge policy {id:?} in sandbox {}", tenant.sandbox),
                    );
                    None
                }
                (Some(p), Some(v)) if *v != p.version => {
                    errors.push(
                        "mergePolicy.version",
                        format!(
                            "version {v} of merge policy {id:?} is not its latest ({}); leave \
                             version out to use the latest",
                            p.version
                        ),
                    );
                    None
                }
                (Some(p), _) => Some(p),
            }
        }
    };
    Ok(policy.filter(|p| {
        let stitching = p.identity_graph.kind != IdentityGraphType::None;
        if stitching {
            errors.push(
                "mergePolicy.id",
                format!(
                    "merge policy {:?} stitches identities (identityGraph pdg), which segport \
                     does not support yet; use a policy with identityGraph none",
                    p.id
                ),
            );
        }
        !stitching
    }))
}

/// `{creationTimeMs}_{id}` of a job, the list cursor.
fn cursor(job: &ExportJobRecord) -> String {
    format!("{}_{}", job.creation_ms, job.id)
}

enum Offset {
    Cursor(i64, i64),
    Rows(u64),
}

fn parse_offset(raw: &str) -> Option<Offset> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match raw.split_once('_') {
        Some((ms, id)) if digits(ms) && digits(id) => {
            Some(Offset::Cursor(ms.parse().ok()?, id.parse().ok()?))
        }
        None if digits(raw) => Some(Offset::Rows(raw.parse().ok()?)),
        _ => None,
    }
}

#[utoipa::path(get, path = "/export/jobs", operation_id = "listExportJobs", tag = "export jobs", params(("limit" = Option<u64>, Query, description = "Page size, 1 to 1000 (default 50)."), ("offset" = Option<String>, Query, description = "The cursor of the previous page's last record, or a row offset."), ("status" = Option<segport_model::job::JobStatus>, Query, description = "Only jobs in this status.")), responses((status = 200, description = "A page of jobs, newest first.", body = crate::openapi::ExportJobList)))]
async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let limit = query.int_in("limit", DEFAULT_LIMIT, 1, MAX_LIMIT, &mut errors);
    let offset = match query.get("offset").map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match parse_offset(raw) {
            Some(o) => Some(o),
            None => {
                errors.push(
                    "offset",
                    format!(
                        "{raw:?} is neither a page cursor {{creationTimeMs}}_{{id}} (as in \
                         page.pageOffset) nor a non-negative row count"
                    ),
                );
                None
            }
        },
    };
    let status = match query.get("status") {
        None => None,
        Some(raw) => match raw.parse::<JobStatus>() {
            Ok(s) => Some(s),
            Err(message) => {
                errors.push("status", message);
                None
            }
        },
    };
    errors.into_result(())?;

    let (after, skip) = match offset {
        Some(Offset::Cursor(ms, id)) => (Some((ms, id)), 0),
        Some(Offset::Rows(n)) => (None, n),
        None => (None, 0),
    };
    // `limit` is at most MAX_LIMIT, so it fits a u32 with room for the look-ahead row.
    let limit = u32::try_from(limit).unwrap_or(1000);
    let q = JobListQuery { status, after, skip, limit: limit + 1, ..Default::default() };
    let mut records = state.catalog.list_export_jobs(&tenant, &q).await?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);

    let page_offset = records.last().map(cursor).unwrap_or_default();
    let next = if has_more {
        let status = status.map(|s| format!("&status={s}")).unwrap_or_default();
        format!("/export/jobs/?limit={limit}&offset={page_offset}{status}")
    } else {
        String::new()
    };
    let page_size = records.len();
    let records: Vec<_> = records.iter().map(ExportJobRecord::to_wire).collect();
    Ok(Json(json!({
        "records": records,
        "page": {"sortField": "createdTime", "sort": "desc", "pageOffset": page_offset, "pageSize": page_size},
        "link": {"next": next},
    })))
}

fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("export job {raw:?} not found")))
}

#[utoipa::path(get, path = "/export/jobs/{id}", operation_id = "getExportJob", tag = "export jobs", params(("id" = i64, Path, description = "The resource id.")), responses((status = 200, description = "The job.", body = segport_model::job::ExportJob)))]
async fn get_one(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<ExportJob>, ApiError> {
    let id = job_id(&raw)?;
    let record = state
        .catalog
        .get_export_job(&tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("export job {id} not found")))?;
    let mut job = record.to_wire();
    if record.units_total.is_some() {
        // A job run as units lists them, and its progress is theirs.
        let units: Vec<JobUnit> = state
            .catalog
            .export_job_units(&tenant, id)
            .await?
            .into_iter()
            .map(|u| JobUnit {
                unit: u.no,
                partition: *u.partitions.start(),
                last_partition: (u.partitions.end() > u.partitions.start())
                    .then_some(*u.partitions.end()),
                state: u.state,
                worker: u.worker,
                attempt: u.attempt,
                profiles_exported: u.exported,
                profiles_scanned: u.scanned,
            })
            .collect();
        if record.status == JobStatus::Processing {
            job.progress = Some(JobProgress::of_units(&units));
        }
        job.units = Some(units);
    }
    Ok(Json(job))
}

#[utoipa::path(delete, path = "/export/jobs/{id}", operation_id = "cancelExportJob", tag = "export jobs", params(("id" = i64, Path, description = "The resource id.")), responses((status = 200, description = "Cancel requested, or the finished job deleted.", body = crate::openapi::CancelAnswer)))]
async fn cancel(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&raw)?;
    let outcome = state
        .catalog
        .cancel_export_job(&tenant, id, now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("export job {id} not found")))?;
    tracing::info!(job_id = id, ?outcome, "export job cancel requested");
    Ok(Json(json!({"status": true, "message": "Export job has been marked for cancelling"})))
}
