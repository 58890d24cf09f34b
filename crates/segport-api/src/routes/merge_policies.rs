//! Merge policies `/data/core/ups/config/mergePolicies`: list, get, create, update, delete.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use segport_catalog::ListQuery;
use segport_model::merge_policy::{parse_policy_id, MergePolicy, MergePolicyInput};
use segport_model::time::now_ms;
use segport_model::{Tenant, ValidationErrors};
use serde_json::{json, Value};

use crate::auth::Authenticated;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

const PREFIX: &str = "/data/core/ups/config/mergePolicies";
const DEFAULT_LIMIT: u64 = 20;
const MAX_LIMIT: u64 = 100;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(PREFIX, get(list).post(create))
        .route(&format!("{PREFIX}/{{id}}"), get(get_one).put(replace).patch(patch).delete(delete))
}

fn policy_id(raw: &str) -> Result<&str, ApiError> {
    parse_policy_id(raw).map_err(|m| ApiError::invalid("mergePolicyId", m))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("merge policy {id:?} not found"))
}

async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let ListQuery { limit, start } = query.page(DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
    errors.into_result(())?;
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    let mut policies =
        state.catalog.list_merge_policies(&tenant, &ListQuery { limit: limit + 1, start }).await?;
    let next = if policies.len() > limit as usize {
        policies.truncate(limit as usize);
        (start + u64::from(limit)).to_string()
    } else {
        String::new()
    };
    Ok(Json(json!({"_page": {"count": policies.len(), "next": next}, "children": policies})))
}

async fn create(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<MergePolicy>, ApiError> {
    let input = MergePolicyInput::parse(&body)?;
    let now = now_ms();
    state.catalog.ensure_sandbox(&tenant, now).await?;
    let policy =
        input.into_policy(segport_model::ids::new_uuid().to_string(), tenant.org.as_str(), 1, now);
    state.catalog.create_merge_policy(&tenant, &policy).await?;
    Ok(Json(policy))
}

async fn get_one(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<MergePolicy>, ApiError> {
    let id = policy_id(&raw)?;
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    state.catalog.get_merge_policy(&tenant, id).await?.map(Json).ok_or_else(|| not_found(id))
}

async fn replace(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<MergePolicy>, ApiError> {
    let id = policy_id(&raw)?;
    let input = MergePolicyInput::parse(&body)?;
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    update(&state, &tenant, id, input).await
}

async fn update(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    input: MergePolicyInput,
) -> Result<Json<MergePolicy>, ApiError> {
    let updated = state.catalog.update_merge_policy(tenant, id, input, now_ms()).await?;
    updated.map(Json).ok_or_else(|| not_found(id))
}

/// Applies the top-level fields of the body to the current policy, then validates the result as
/// a whole, exactly like a replacement.
async fn patch(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<MergePolicy>, ApiError> {
    let id = policy_id(&raw)?;
    let Value::Object(changes) = body else {
        return Err(ApiError::invalid("body", "must be a JSON object of the fields to change"));
    };
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    let current =
        state.catalog.get_merge_policy(&tenant, id).await?.ok_or_else(|| not_found(id))?;
    let mut merged = serde_json::to_value(&current).map_err(|e| ApiError::Internal(Box::new(e)))?;
    if let Value::Object(fields) = &mut merged {
        fields.extend(changes);
    }
    update(&state, &tenant, id, MergePolicyInput::parse(&merged)?).await
}

async fn delete(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let id = policy_id(&raw)?;
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    if state.catalog.delete_merge_policy(&tenant, id).await? {
        Ok(Json(json!({"id": id, "deleted": true})))
    } else {
        Err(not_found(id))
    }
}
