//! Webhook endpoints `/segport/webhooks/endpoints` (a segport addition; AEP has no such API):
//! create (the signing secret shown once), list, get, change, delete, rotate the secret, send a
//! test event, and read an endpoint's delivery log. Deliveries are the dispatcher's
//! (`segport-webhooks`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use segport_model::time::now_ms;
use segport_model::webhook::{Endpoint, EndpointInput, EventType, MAX_ENDPOINTS_PER_SANDBOX};
use segport_model::Tenant;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

/// How long the previous secret still signs after a rotation.
pub const ROTATION_GRACE_MS: i64 = 24 * 3_600_000;
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 500;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, change, delete))
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test))
        .routes(routes!(deliveries))
}

/// A new signing secret: `whsec_` and 32 random bytes in base64, as the Standard Webhooks
/// specification writes them.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "webhook endpoint {:?} not found",
        segport_model::error::clip(id, 80)
    ))
}

pub(crate) async fn find(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<Endpoint, ApiError> {
    state.catalog.get_endpoint(tenant, id).await?.ok_or_else(|| not_found(id))
}

#[utoipa::path(get, path = "/segport/webhooks/endpoints", operation_id = "listWebhookEndpoints", tag = "webhooks", params(("limit" = Option<u64>, Query, description = "Page size, 1 to 500 (default 50)."), ("start" = Option<u64>, Query, description = "Endpoints to skip.")), responses((status = 200, description = "A page of endpoints, oldest first; secrets are never listed.", body = Object)))]
async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let page = query.peeked_page(DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut endpoints = state.catalog.list_endpoints(&tenant, &page.fetch()).await?;
    let next = page.cut(&mut endpoints);
    let children: Vec<Value> = endpoints.iter().map(Endpoint::to_wire).collect();
    Ok(Json(json!({"_page": {"count": children.len(), "next": next}, "children": children})))
}

#[utoipa::path(post, path = "/segport/webhooks/endpoints", operation_id = "createWebhookEndpoint", tag = "webhooks", request_body(content = crate::openapi::WebhookEndpointWrite, content_type = "application/json"), responses((status = 200, description = "The endpoint, with its signing secret: shown this once.", body = Object)))]
async fn create(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let endpoint = create_endpoint(&state, &tenant, &body).await?;
    let mut answer = endpoint.to_wire();
    answer["secret"] = json!(endpoint.secret);
    Ok(Json(answer))
}

/// Creates an endpoint from a create's body (the API's and the console's); the answer holds
/// its secret, to show once.
pub(crate) async fn create_endpoint(
    state: &AppState,
    tenant: &Tenant,
    body: &Value,
) -> Result<Endpoint, ApiError> {
    let input = EndpointInput::parse(body)?;
    let now = now_ms();
    state.catalog.ensure_sandbox(tenant, now).await?;
    let endpoint = Endpoint {
        id: segport_model::ids::new_uuid().to_string(),
        org: tenant.org.as_str().to_owned(),
        sandbox: tenant.sandbox.as_str().to_owned(),
        url: input.url,
        description: input.description,
        events: input.events,
        secret: new_secret(),
        previous_secret: None,
        previous_until_ms: None,
        enabled: input.enabled.unwrap_or(true),
        disabled_reason: None,
        create_ms: now,
        update_ms: now,
    };
    state.catalog.create_endpoint(&endpoint, MAX_ENDPOINTS_PER_SANDBOX).await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    Ok(endpoint)
}

#[utoipa::path(get, path = "/segport/webhooks/endpoints/{id}", operation_id = "getWebhookEndpoint", tag = "webhooks", params(("id" = String, Path, description = "The resource id.")), responses((status = 200, description = "The endpoint (without its secret).", body = Object)))]
async fn get_one(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find(&state, &tenant, &id).await?.to_wire()))
}

/// Changes the fields the body names (`url`, `description`, `events`, `enabled`); the rest
/// stay. `enabled: true` re-enables an endpoint the dispatcher disabled.
#[utoipa::path(patch, path = "/segport/webhooks/endpoints/{id}", operation_id = "updateWebhookEndpoint", tag = "webhooks", params(("id" = String, Path, description = "The resource id.")), request_body(content = crate::openapi::WebhookEndpointWrite, content_type = "application/json"), responses((status = 200, description = "The endpoint.", body = Object)))]
async fn change(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let Value::Object(changes) = body else {
        return Err(ApiError::invalid("body", "must be a JSON object of the fields to change"));
    };
    Ok(Json(change_endpoint(&state, &tenant, &id, changes).await?.to_wire()))
}

/// Changes the fields `changes` names (the API's PATCH and the console's buttons).
pub(crate) async fn change_endpoint(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    changes: serde_json::Map<String, Value>,
) -> Result<Endpoint, ApiError> {
    let current = find(state, tenant, id).await?;
    let mut merged = json!({
        "url": current.url,
        "description": current.description,
        "events": current.events.as_ref().map(|e| e.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
        "enabled": current.enabled,
    });
    if let Value::Object(fields) = &mut merged {
        fields.extend(changes);
    }
    let input = EndpointInput::parse(&merged)?;
    let enabled = input.enabled.unwrap_or(current.enabled);
    let updated = Endpoint {
        url: input.url,
        description: input.description,
        events: input.events,
        disabled_reason: if enabled { None } else { current.disabled_reason.clone() },
        enabled,
        update_ms: now_ms(),
        ..current
    };
    if !state.catalog.update_endpoint(&updated).await? {
        return Err(not_found(id));
    }
    Ok(updated)
}

#[utoipa::path(delete, path = "/segport/webhooks/endpoints/{id}", operation_id = "deleteWebhookEndpoint", tag = "webhooks", params(("id" = String, Path, description = "The resource id.")), responses((status = 204, description = "Deleted, with its pending deliveries and log.")))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if state.catalog.delete_endpoint(&tenant, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

/// A new secret, shown once; for 24 hours deliveries carry signatures by both secrets.
#[utoipa::path(post, path = "/segport/webhooks/endpoints/{id}/rotate-secret", operation_id = "rotateWebhookSecret", tag = "webhooks", params(("id" = String, Path, description = "The resource id.")), responses((status = 200, description = "The endpoint with its new secret: shown this once.", body = Object)))]
async fn rotate_secret(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    let updated = rotate(&state, &tenant, &id).await?;
    let mut answer = updated.to_wire();
    answer["secret"] = json!(updated.secret);
    Ok(Json(answer))
}

/// Gives endpoint `id` a new secret; the old one signs too for [`ROTATION_GRACE_MS`].
pub(crate) async fn rotate(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<Endpoint, ApiError> {
    let current = find(state, tenant, id).await?;
    let now = now_ms();
    let updated = Endpoint {
        secret: new_secret(),
        previous_secret: Some(current.secret.clone()),
        previous_until_ms: Some(now + ROTATION_GRACE_MS),
        update_ms: now,
        ..current
    };
    if !state.catalog.update_endpoint(&updated).await? {
        return Err(not_found(id));
    }
    tracing::info!(endpoint_id = %id, "webhook secret rotated");
    Ok(updated)
}

/// Sends a `segport.test` event to this endpoint alone, whatever its filter.
#[utoipa::path(post, path = "/segport/webhooks/endpoints/{id}/test", operation_id = "sendWebhookTest", tag = "webhooks", params(("id" = String, Path, description = "The resource id.")), responses((status = 202, description = "Queued; its delivery shows in the endpoint's log.", body = Object)))]
async fn send_test(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let msg_id = queue_test(&state, &tenant, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"webhookId": msg_id}))))
}

/// Queues a test event for endpoint `id` (the API's and the console's button).
pub(crate) async fn queue_test(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<String, ApiError> {
    let now = now_ms();
    let data = json!({"endpointId": id, "message": "a test event from segport"});
    let payload = segport_model::webhook::payload(EventType::Test, now, &data, &data);
    state.catalog.send_test_event(tenant, id, &payload, now).await?.ok_or_else(|| not_found(id))
}

#[utoipa::path(get, path = "/segport/webhooks/endpoints/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks", params(("id" = String, Path, description = "The resource id."), ("limit" = Option<u64>, Query, description = "Page size, 1 to 500 (default 50)."), ("start" = Option<u64>, Query, description = "Deliveries to skip.")), responses((status = 200, description = "The endpoint's deliveries, newest first: state, attempts, last status and error.", body = Object)))]
async fn deliveries(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(id): PathId,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let page = query.peeked_page(DEFAULT_LIMIT, MAX_LIMIT)?;
    find(&state, &tenant, &id).await?;
    let mut log = state.catalog.list_deliveries(&tenant, &id, &page.fetch()).await?;
    let next = page.cut(&mut log);
    let children: Vec<Value> = log.iter().map(|d| d.to_wire()).collect();
    Ok(Json(json!({"_page": {"count": children.len(), "next": next}, "children": children})))
}
