//! The routes of the API, one module per resource family.

mod catalog;
mod data_access;
mod import;
mod jobs;
mod merge_policies;
pub(crate) mod ops;

use axum::http::{Method, Uri};
use axum::Router;

use crate::{ApiError, AppState};

/// Every tenant-facing route.
pub(crate) fn api_routes() -> Router<AppState> {
    Router::new()
        .merge(jobs::routes())
        .merge(catalog::routes())
        .merge(data_access::routes())
        .merge(import::routes())
        .merge(merge_policies::routes())
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
