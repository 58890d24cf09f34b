//! `/healthz` (the process is up), `/readyz` (the catalog answers) and `/metrics`, served by
//! every role without authentication.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready only while the catalog answers; any failure to reach it is a 503, so that a load
/// balancer takes the process out of rotation.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.catalog.ping().await.map_err(ApiError::Unavailable)?;
    Ok(Json(json!({"status": "ready", "catalog": state.catalog.backend().as_str()})))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.render(&state.catalog).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
