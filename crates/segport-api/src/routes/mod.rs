//! The routes of the API, one module per resource family.

pub(crate) mod access;
mod catalog;
pub(crate) mod data_access;
pub(crate) mod import;
pub(crate) mod jobs;
mod merge_policies;
pub(crate) mod ops;
pub(crate) mod preview;
pub(crate) mod schedules;
pub(crate) mod webhooks;

use axum::http::{Method, Uri};
use utoipa_axum::router::OpenApiRouter;

use crate::{ApiError, AppState};

/// Every tenant-facing route.
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(jobs::routes())
        .merge(catalog::routes())
        .merge(data_access::routes())
        .merge(import::routes())
        .merge(merge_policies::routes())
        .merge(access::routes())
        .merge(preview::routes())
        .merge(schedules::routes())
        .merge(webhooks::routes())
}

/// The batch a path names (validated id) in the request's tenant, or 400/404.
pub(crate) async fn batch_of(
    state: &AppState,
    tenant: &segport_model::Tenant,
    raw: &str,
) -> Result<segport_model::batch::Batch, ApiError> {
    let id = segport_model::BatchId::parse(raw).map_err(|m| ApiError::invalid("batchId", m))?;
    state
        .catalog
        .get_batch(tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("batch {id} not found")))
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
