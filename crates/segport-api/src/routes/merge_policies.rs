//! Merge policies `/data/core/ups/config/mergePolicies`: list, get, create, update, delete.

use axum::extract::State;
use axum::Json;
use segport_model::merge_policy::{parse_policy_id, MergePolicy, MergePolicyInput};
use segport_model::time::now_ms;
use segport_model::Tenant;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

const DEFAULT_LIMIT: u64 = 20;
const MAX_LIMIT: u64 = 100;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, replace, patch, delete))
}

fn policy_id(raw: &str) -> Result<&str, ApiError> {
    parse_policy_id(raw).map_err(|m| ApiError::invalid("mergePolicyId", m))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("merge policy {id:?} not found"))
}

#[utoipa::path(get, path = "/data/core/ups/config/mergePolicies", operation_id = "listMergePolicies", tag = "merge policies", params(("limit" = Option<u64>, Query, description = "Page size."), ("start" = Option<u64>, Query, description = "Rows to skip.")), responses((status = 200, description = "A page of policies.", body = Object)))]
async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let page = query.peeked_page(DEFAULT_LIMIT, MAX_LIMIT)?;
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    let mut policies = state.catalog.list_merge_policies(&tenant, &page.fetch()).await?;
    let next = page.cut(&mut policies);
    Ok(Json(json!({"_page": {"count": policies.len(), "next": next}, "children": policies})))
}

#[utoipa::path(post, path = "/data/core/ups/config/mergePolicies", operation_id = "createMergePolicy", tag = "merge policies", request_body(content = crate::openapi::MergePolicyWrite, content_type = "application/json"), responses((status = 200, description = "The policy.", body = segport_model::merge_policy::MergePolicy)))]
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

#[utoipa::path(get, path = "/data/core/ups/config/mergePolicies/{id}", operation_id = "getMergePolicy", tag = "merge policies", params(("id" = String, Path, description = "The resource id.")), responses((status = 200, description = "The policy.", body = segport_model::merge_policy::MergePolicy)))]
async fn get_one(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<MergePolicy>, ApiError> {
    let id = policy_id(&raw)?;
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    state.catalog.get_merge_policy(&tenant, id).await?.map(Json).ok_or_else(|| not_found(id))
}

#[utoipa::path(put, path = "/data/core/ups/config/mergePolicies/{id}", operation_id = "replaceMergePolicy", tag = "merge policies", params(("id" = String, Path, description = "The resource id.")), request_body(content = crate::openapi::MergePolicyWrite, content_type = "application/json"), responses((status = 200, description = "The policy, next version.", body = segport_model::merge_policy::MergePolicy)))]
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

/// What a JSON Patch of a merge policy may change (Adobe's documented paths).
const POLICY_PATCH: segport_model::patch::Paths<'static> = segport_model::patch::Paths {
    allowed: &[
        &["name"],
        &["identityGraph", "type"],
        &["attributeMerge", "type"],
        &["attributeMerge", "order"],
        &["schema", "name"],
        &["version"],
        &["default"],
        &["isActiveOnEdge"],
    ],
    hint: "/name, /identityGraph.type, /attributeMerge.type, /attributeMerge.order, \
           /schema.name, /default or /isActiveOnEdge",
    dotted: true,
    remove: true,
};

/// Applies a JSON Patch, or the top-level fields of an object, to the current policy, then
/// validates the result as a whole, exactly like a replacement.
#[utoipa::path(patch, path = "/data/core/ups/config/mergePolicies/{id}", operation_id = "patchMergePolicy", tag = "merge policies", params(("id" = String, Path, description = "The resource id.")), request_body(content((Vec<crate::openapi::JsonPatchOp> = "application/json-patch+json"), (crate::openapi::MergePolicyWrite = "application/json"))), responses((status = 200, description = "The policy, next version.", body = segport_model::merge_policy::MergePolicy)))]
async fn patch(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<MergePolicy>, ApiError> {
    let id = policy_id(&raw)?;
    if !matches!(body, Value::Object(_) | Value::Array(_)) {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON Patch array or a JSON object of the fields to change",
        ));
    }
    state.catalog.ensure_sandbox(&tenant, now_ms()).await?;
    let current =
        state.catalog.get_merge_policy(&tenant, id).await?.ok_or_else(|| not_found(id))?;
    let mut merged = serde_json::to_value(&current).map_err(|e| ApiError::Internal(Box::new(e)))?;
    match body {
        // As Adobe documents it: `[{"op": "add", "path": "/identityGraph.type", ...}]`.
        Value::Array(ops) => segport_model::patch::apply(&mut merged, &ops, &POLICY_PATCH)?,
        Value::Object(changes) => {
            if let Value::Object(fields) = &mut merged {
                fields.extend(changes);
            }
        }
        _ => {}
    }
    update(&state, &tenant, id, MergePolicyInput::parse(&merged)?).await
}

#[utoipa::path(delete, path = "/data/core/ups/config/mergePolicies/{id}", operation_id = "deleteMergePolicy", tag = "merge policies", params(("id" = String, Path, description = "The resource id.")), responses((status = 200, description = "Deleted.", body = Object)))]
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
