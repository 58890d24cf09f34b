//! Catalog `/data/foundation/catalog`: datasets and batches, answered as objects keyed by id.

use axum::extract::State;
use axum::http::{header, HeaderName, StatusCode};
use axum::Json;
use segport_catalog::{BatchFilter, StoreKind};
use segport_model::batch::BatchStatus;
use segport_model::dataset::{Dataset, NewDataset};
use segport_model::time::now_ms;
use segport_model::{BatchId, DatasetId, Tenant, ValidationErrors};
use segport_store::schema::UnionSchema;
use segport_store::storage::batch_dir;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{BaseUrl, JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

const DEFAULT_LIMIT: u64 = 50;
/// Catalog's documented maximum page size.
const MAX_LIMIT: u64 = 100;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_datasets, create_dataset))
        .routes(routes!(get_dataset, patch_dataset, delete_dataset))
        .routes(routes!(list_batches))
        .routes(routes!(get_batch, delete_batch))
}

fn keyed<T>(items: &[T], key: impl Fn(&T) -> String, value: impl Fn(&T) -> Value) -> Value {
    let map: Map<String, Value> = items.iter().map(|i| (key(i), value(i))).collect();
    Value::Object(map)
}

#[utoipa::path(post, path = "/data/foundation/catalog/dataSets", operation_id = "createDataset", tag = "catalog", request_body(content = crate::openapi::DatasetCreate, content_type = "application/json"), responses((status = 201, description = "`[\"@/dataSets/{id}\"]`; header `Location` names the dataset.", body = Vec<String>)))]
async fn create_dataset(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    BaseUrl(base): BaseUrl,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, [(HeaderName, String); 1], Json<Value>), ApiError> {
    let new = NewDataset::parse(&body)?;
    let now = now_ms();
    let dataset = Dataset {
        id: DatasetId::generate(),
        org: tenant.org.to_string(),
        sandbox: tenant.sandbox.to_string(),
        name: new.name,
        description: new.description,
        schema_ref: new.schema_ref,
        tags: new.tags,
        class: new.class,
        created_ms: now,
        updated_ms: now,
    };
    state.catalog.create_dataset(&dataset).await?;
    tracing::info!(dataset_id = %dataset.id, class = dataset.class.as_str(), "dataset created");
    let location = format!("{base}/data/foundation/catalog/dataSets/{}", dataset.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json!([format!("@/dataSets/{}", dataset.id)])),
    ))
}

#[utoipa::path(get, path = "/data/foundation/catalog/dataSets", operation_id = "listDatasets", tag = "catalog", params(("limit" = Option<u64>, Query, description = "Page size."), ("start" = Option<u64>, Query, description = "Rows to skip.")), responses((status = 200, description = "Datasets keyed by id.", body = Object)))]
async fn list_datasets(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let page = query.page(DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
    errors.into_result(())?;
    let datasets = state.catalog.list_datasets(&tenant, &page).await?;
    Ok(Json(keyed(&datasets, |d| d.id.to_string(), Dataset::to_wire)))
}

#[utoipa::path(get, path = "/data/foundation/catalog/dataSets/{id}", operation_id = "getDataset", tag = "catalog", params(("id" = segport_model::DatasetId, Path, description = "The resource id.")), responses((status = 200, description = "The dataset, keyed by its id.", body = Object)))]
async fn get_dataset(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let id = DatasetId::parse(&raw).map_err(|m| ApiError::invalid("dataSetId", m))?;
    let dataset = state
        .catalog
        .get_dataset(&tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dataset {id} not found")))?;
    Ok(Json(keyed(&[dataset], |d| d.id.to_string(), Dataset::to_wire)))
}

#[utoipa::path(get, path = "/data/foundation/catalog/batches", operation_id = "listBatches", tag = "catalog", params(("limit" = Option<u64>, Query, description = "Page size."), ("start" = Option<u64>, Query, description = "Rows to skip."), ("dataSet" = Option<String>, Query, description = "Only batches of this dataset."), ("status" = Option<String>, Query, description = "Only batches in this status.")), responses((status = 200, description = "Batches keyed by id.", body = Object)))]
async fn list_batches(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let mut errors = ValidationErrors::default();
    let page = query.page(DEFAULT_LIMIT, MAX_LIMIT, &mut errors);
    let dataset_id = query
        .get("dataSet")
        .and_then(|raw| DatasetId::parse(raw).map_err(|m| errors.push("dataSet", m)).ok());
    let status = query
        .get("status")
        .and_then(|raw| BatchStatus::parse_filter(raw).map_err(|m| errors.push("status", m)).ok());
    errors.into_result(())?;
    let status = match status {
        // A documented status no segport batch takes: nothing matches.
        Some(None) => return Ok(Json(serde_json::json!({}))),
        Some(Some(status)) => Some(status),
        None => None,
    };
    let batches =
        state.catalog.list_batches(&tenant, &BatchFilter { dataset_id, status }, &page).await?;
    Ok(Json(keyed(&batches, |b| b.id.to_string(), |b| b.to_wire())))
}

#[utoipa::path(get, path = "/data/foundation/catalog/batches/{id}", operation_id = "getBatch", tag = "catalog", params(("id" = segport_model::BatchId, Path, description = "The resource id.")), responses((status = 200, description = "The batch, keyed by its id.", body = Object)))]
async fn get_batch(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let batch = super::batch_of(&state, &tenant, &raw).await?;
    Ok(Json(keyed(&[batch], |b| b.id.to_string(), |b| b.to_wire())))
}

/// Changes a dataset's name, description or tags (JSON Patch, or a plain object). Enabling
/// or disabling profile (`tags.unifiedProfile`) applies to batches ingested from then on.
#[utoipa::path(patch, path = "/data/foundation/catalog/dataSets/{id}", operation_id = "patchDataset", tag = "catalog", params(("id" = segport_model::DatasetId, Path, description = "The resource id.")), request_body(content((Vec<crate::openapi::JsonPatchOp> = "application/json-patch+json"), (crate::openapi::DatasetPatch = "application/json"))), responses((status = 200, description = "`[\"@/dataSets/{id}\"]`", body = Vec<String>)))]
async fn patch_dataset(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let id = DatasetId::parse(&raw).map_err(|m| ApiError::invalid("dataSetId", m))?;
    let not_found = || ApiError::NotFound(format!("dataset {id} not found"));
    let dataset = state.catalog.get_dataset(&tenant, &id).await?.ok_or_else(not_found)?;
    let patched = dataset.patched(&body, now_ms())?;
    if !state.catalog.update_dataset(&patched).await? {
        return Err(not_found());
    }
    tracing::info!(dataset_id = %id, profile = patched.unified_profile(), "dataset changed");
    Ok(Json(json!([format!("@/dataSets/{id}")])))
}

/// Deletes a dataset with its batches and store files (files stay until no running export's
/// snapshot holds them); 409 while a queued or running task writes to it.
#[utoipa::path(delete, path = "/data/foundation/catalog/dataSets/{id}", operation_id = "deleteDataset", tag = "catalog", params(("id" = segport_model::DatasetId, Path, description = "The resource id.")), responses((status = 200, description = "Deleted.", body = Object)))]
async fn delete_dataset(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let id = DatasetId::parse(&raw).map_err(|m| ApiError::invalid("dataSetId", m))?;
    let batches = state
        .catalog
        .delete_dataset(&tenant, &id, now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dataset {id} not found")))?;
    for batch in batches {
        remove_batch_files(&state, &tenant, &batch).await;
    }
    tracing::info!(dataset_id = %id, "dataset deleted");
    // The dataset is gone whatever happens here; a release that fails now is done by the next.
    if let Err(e) = release_unheld_types(&state, &tenant).await {
        tracing::warn!(dataset_id = %id, error = %e, "cannot release the dataset's types");
    }
    Ok(Json(json!([format!("@/dataSets/{id}")])))
}

/// Deletes a finished export batch and its files; 409 for an ingest batch or an export still
/// running. The job that wrote it keeps naming it.
#[utoipa::path(delete, path = "/data/foundation/catalog/batches/{id}", operation_id = "deleteBatch", tag = "catalog", params(("id" = segport_model::BatchId, Path, description = "The resource id.")), responses((status = 200, description = "Deleted with its files: `[\"@/batches/{id}\"]`.", body = Vec<String>)))]
async fn delete_batch(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let id = BatchId::parse(&raw).map_err(|m| ApiError::invalid("batchId", m))?;
    if !state.catalog.delete_export_batch(&tenant, &id).await? {
        return Err(ApiError::NotFound(format!("batch {id} not found")));
    }
    remove_batch_files(&state, &tenant, &id).await;
    tracing::info!(batch_id = %id, "export batch deleted");
    Ok(Json(json!([format!("@/batches/{id}")])))
}

/// Gives the sandbox's union schemas back what no live dataset holds any more, so that a field
/// whose type came from a deleted dataset can be loaded with another type. The schema becomes
/// the merge of what the live datasets' batches hold; batches recorded before held schemas
/// existed keep every type as it is. A concurrent commit moves the version on: then the merge
/// is computed again.
pub(crate) async fn release_unheld_types(
    state: &AppState,
    tenant: &Tenant,
) -> Result<(), ApiError> {
    const ATTEMPTS: usize = 5;
    let unreadable = |e: serde_json::Error| -> ApiError {
        ApiError::Internal(format!("a held schema of the sandbox is unreadable: {e}").into())
    };
    for kind in [StoreKind::Profile, StoreKind::Event] {
        for _ in 0..ATTEMPTS {
            let held = state.catalog.held_schemas(tenant, kind).await?;
            let mut merged = UnionSchema::default();
            let mut complete = true;
            for text in &held.held {
                let Some(text) = text else {
                    complete = false;
                    break;
                };
                let part = UnionSchema::from_json(text).map_err(unreadable)?;
                if merged.merge(&part).is_err() {
                    // Parts of one sandbox's schema always unify; should they not, keep it.
                    complete = false;
                    break;
                }
            }
            let current = UnionSchema::from_json(&held.schema).map_err(unreadable)?;
            if !complete || merged == current {
                break;
            }
            let text = serde_json::to_string(&merged).map_err(unreadable)?;
            if state.catalog.release_schema(tenant, kind, held.schema_version, &text).await? {
                let released: Vec<&String> =
                    current.fields.keys().filter(|k| !merged.fields.contains_key(*k)).collect();
                tracing::info!(kind = kind.as_str(), ?released, "union schema types released");
                break;
            }
        }
    }
    Ok(())
}

/// Removes a deleted batch's files. The catalog no longer lists them, so a failure here leaves
/// only unreachable bytes behind: it is logged, not answered.
async fn remove_batch_files(state: &AppState, tenant: &Tenant, batch: &BatchId) {
    let dir = batch_dir(tenant.org.as_str(), tenant.sandbox.as_str(), batch.as_str());
    if let Err(e) = state.storage.delete_prefix(&dir).await {
        tracing::warn!(batch_id = %batch, error = %e, "cannot remove a deleted batch's files");
    }
}
