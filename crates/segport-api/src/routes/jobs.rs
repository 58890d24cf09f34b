//! `/export/jobs` (and AEP's `/data/core/ups/export/jobs`): create, list, get and cancel.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use segport_catalog::{JobListQuery, NewExportJob};
use segport_model::dataset::DatasetClass;
use segport_model::job::{
    ExportJob, ExportJobRecord, ExportJobRequest, JobStatus, DEFAULT_PROFILE_INSTANCE,
};
use segport_model::merge_policy::{parse_policy_id, IdentityGraphType, MergePolicy};
use segport_model::time::now_ms;
use segport_model::{BatchId, Tenant, ValidationErrors};
use serde_json::{json, Value};

use crate::auth::Authenticated;
use crate::error::current_request_id;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

const AEP_PREFIX: &str = "/data/core/ups/export/jobs";
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1000;

pub(crate) fn routes() -> Router<AppState> {
    [AEP_PREFIX, "/export/jobs"].into_iter().fold(Router::new(), |router, prefix| {
        router
            .route(prefix, get(list).post(create))
            .route(&format!("{prefix}/{{id}}"), get(get_one).delete(cancel))
    })
}

async fn create(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let profile_instance_id = profile_instance(&headers)?;
    let request = ExportJobRequest::parse(&body)?;
    let now = now_ms();
    state.catalog.ensure_sandbox(&tenant, now).await?;

    let dataset = state.catalog.get_dataset(&tenant, &request.dataset_id).await?;
    match dataset {
        None => {
            return Err(ApiError::invalid(
                "destination.datasetId",
                format!(
                    "no dataset {} in sandbox {}; create one with POST /data/foundation/catalog/dataSets",
                    request.dataset_id, tenant.sandbox
                ),
            ))
        }
        Some(d) if d.class != DatasetClass::Export => {
            return Err(ApiError::invalid(
                "destination.datasetId",
                format!(
                    "dataset {} holds {} records; exports go to a dataset of schema \
                     https://ns.adobe.com/xdm/context/profile__union",
                    d.id,
                    d.class.as_str()
                ),
            ))
        }
        Some(_) => {}
    }

    let policy = resolve_merge_policy(&state, &tenant, request.merge_policy.as_ref()).await?;
    let batches = (0..request.batch_count()).map(|_| BatchId::generate()).collect();
    let spec = request.into_spec(policy.to_ref(), batches, profile_instance_id);
    let job =
        NewExportJob { spec, merge_policy: policy, request_id: current_request_id(), now_ms: now };
    let record = state.catalog.create_export_job(&tenant, job).await?;
    tracing::info!(job_id = record.id, org = %tenant.org, sandbox = %tenant.sandbox, "export job created");

    let mut response = Json(record.to_wire()).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{AEP_PREFIX}/{}", record.id)) {
        response.headers_mut().insert("x-location", location);
    }
    Ok(response)
}

fn profile_instance(headers: &HeaderMap) -> Result<String, ApiError> {
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
            .ok_or_else(|| {
                ApiError::invalid(
                    "x-profile-instance-id",
                    "must be 1 to 64 characters of A-Z, a-z, 0-9, ., _ and -",
                )
            }),
    }
}

/// The policy a new job uses: the one named (at its latest version) or the sandbox's default.
async fn resolve_merge_policy(
    state: &AppState,
    tenant: &Tenant,
    requested: Option<&(String, Option<i64>)>,
) -> Result<MergePolicy, ApiError> {
    let policy = match requested {
        None => state.catalog.default_merge_policy(tenant).await?.ok_or_else(|| {
            ApiError::invalid("mergePolicy", "the sandbox has no default merge policy; name one")
        })?,
        Some((id, version)) => {
            let unknown = || {
                ApiError::invalid(
                    "mergePolicy.id",
                    format!("no merge policy {id:?} in sandbox {}", tenant.sandbox),
                )
            };
            parse_policy_id(id).map_err(|_| unknown())?;
            let policy = state.catalog.get_merge_policy(tenant, id).await?.ok_or_else(unknown)?;
            if let Some(v) = version {
                if *v != policy.version {
                    return Err(ApiError::invalid(
                        "mergePolicy.version",
                        format!(
                            "version {v} of merge policy {id:?} is not its latest ({}); \
                             leave version out to use the latest",
                            policy.version
                        ),
                    ));
                }
            }
            policy
        }
    };
    if policy.identity_graph.kind != IdentityGraphType::None {
        return Err(ApiError::invalid(
            "mergePolicy.id",
            format!(
                "merge policy {:?} stitches identities (identityGraph pdg), which segport does not \
                 support yet; use a policy with identityGraph none",
                policy.id
            ),
        ));
    }
    Ok(policy)
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
    let q = JobListQuery { status, after, skip, limit: limit + 1 };
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
    Ok(Json(record.to_wire()))
}

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
