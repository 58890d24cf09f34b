//! `/healthz` (the process is up), `/readyz` (the catalog answers) and `/metrics`, served by
//! every role without authentication.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use segport_catalog::{Jobs, QueueStats};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", responses((status = 200, description = "The process is up.", body = Object)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready only while the catalog answers; any failure to reach it is a 503, so that a load
/// balancer takes the process out of rotation.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations", responses((status = 200, description = "The catalog answers.", body = Object)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.catalog.ping().await.map_err(ApiError::Unavailable)?;
    Ok(Json(json!({"status": "ready", "catalog": state.catalog.backend().as_str()})))
}

/// The process's metrics; per-tenant series are served on the metrics address only
/// ([`tenant_metrics`]).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition.", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    exposition(state.metrics.render(None).await)
}

/// `/metrics` of the metrics address: the process's metrics, export jobs by tenant and status,
/// and the task queue's depth by tenant.
pub(crate) async fn tenant_metrics(State(state): State<AppState>) -> impl IntoResponse {
    exposition({
        let catalog = state.catalog.as_ref();
        state.metrics.render(Some((catalog as &dyn Jobs, catalog as &dyn QueueStats))).await
    })
}

fn exposition(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
