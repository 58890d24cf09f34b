//! Batch Ingestion `/data/foundation/import`: create a batch, upload its files (streamed to
//! storage, idempotent, size-capped), then COMPLETE (queue the ingest) or ABORT.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use segport_catalog::{Upload, UploadRecorded};
use segport_model::batch::{Batch, BatchKind, BatchStatus, NewIngestBatch};
use segport_model::dataset::DatasetClass;
use segport_model::time::now_ms;
use segport_model::{DatasetId, Tenant};
use segport_store::storage::{new_upload_object, upload_location, uploads_dir, valid_upload_name};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{JsonBody, PathId, QueryPairs};
use crate::{ApiError, AppState};

/// The header of a batch-create answer that names the largest file an upload accepts.
pub const MAX_UPLOAD_HEADER: &str = "x-segport-max-upload-bytes";

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(action)).routes(routes!(upload))
}

#[utoipa::path(post, path = "/data/foundation/import/batches", operation_id = "createIngestBatch", tag = "batch ingestion", request_body(content = crate::openapi::IngestBatchCreate, content_type = "application/json"), responses((status = 201, description = "The batch, status loading. Header `x-segport-max-upload-bytes` names the largest file an upload accepts.", body = Object)))]
async fn create(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, [(&'static str, String); 1], Json<Value>), ApiError> {
    let new = NewIngestBatch::parse(&body)?;
    let dataset = state.catalog.get_dataset(&tenant, &new.dataset_id).await?.ok_or_else(|| {
        ApiError::invalid(
            "datasetId",
            format!("no dataset {} in sandbox {}", new.dataset_id, tenant.sandbox),
        )
    })?;
    if dataset.class == DatasetClass::Export {
        return Err(ApiError::invalid(
            "datasetId",
            format!(
                "dataset {} is an export destination; ingest into a dataset of profile or \
                 experience-event records",
                dataset.id
            ),
        ));
    }
    let now = now_ms();
    state.catalog.ensure_sandbox(&tenant, now).await?;
    let batch = Batch::new_ingest(tenant.org.as_str(), tenant.sandbox.as_str(), &new, now);
    state.catalog.create_ingest_batch(&batch).await?;
    tracing::info!(batch_id = %batch.id, dataset_id = %batch.dataset_id, "ingest batch created");
    let mut wire = batch.to_wire();
    wire["id"] = json!(batch.id);
    // The per-file cap, so that a client can split larger input across files (a segport
    // addition; `segport ingest --server` reads it).
    Ok((StatusCode::CREATED, [(MAX_UPLOAD_HEADER, state.max_upload_bytes.to_string())], Json(wire)))
}

/// The batch an import call names, which must be an ingest batch of this tenant.
async fn ingest_batch(state: &AppState, tenant: &Tenant, raw: &str) -> Result<Batch, ApiError> {
    let batch = super::batch_of(state, tenant, raw).await?;
    if batch.kind == BatchKind::Export {
        return Err(ApiError::Conflict(format!(
            "batch {} was allocated by an export job; only the export writes to it",
            batch.id
        )));
    }
    Ok(batch)
}

#[utoipa::path(put, path = "/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{*name}", operation_id = "uploadFile", tag = "batch ingestion", params(("batch" = segport_model::BatchId, Path, description = "The batch id."), ("dataset" = segport_model::DatasetId, Path, description = "The dataset id."), ("name" = String, Path, description = "The file's relative path.")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 200, description = "Stored.", body = Object)))]
async fn upload(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path((batch_raw, dataset_raw, name)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    valid_upload_name(&name).map_err(|m| ApiError::invalid("fileName", m))?;
    let dataset = DatasetId::parse(&dataset_raw).map_err(|m| ApiError::invalid("datasetId", m))?;
    let batch = ingest_batch(&state, &tenant, &batch_raw).await?;
    if batch.dataset_id != dataset {
        return Err(ApiError::NotFound(format!(
            "batch {} belongs to dataset {}, not {dataset}",
            batch.id, batch.dataset_id
        )));
    }
    if batch.status != BatchStatus::Loading {
        return Err(ApiError::Conflict(format!(
            "batch {} is {}; files can only be uploaded while it is loading",
            batch.id,
            batch.status.as_str()
        )));
    }

    // The bytes go to a key of their own; the catalog switches the name to it only if the
    // batch is still loading, so a refused upload changes nothing and a replaced one is
    // removed after the switch.
    let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
    let object = new_upload_object();
    let path = upload_location(org, sandbox, batch.id.as_str(), &name, Some(&object));
    let limit = state.max_upload_bytes;
    let mut writer = BufWriter::new(state.storage.object_store(), path.clone());
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    // A client that stops sending loses its upload: the router's body timeout ends a body
    // that makes no progress (408).
    let failure = loop {
        match stream.next().await {
            None => break None,
            Some(Err(e)) => break Some(crate::extract::body_error(&e)),
            Some(Ok(chunk)) => {
                size += chunk.len() as u64;
                if size > limit {
                    break Some(ApiError::PayloadTooLarge {
                        limit: usize::try_from(limit).unwrap_or(usize::MAX),
                    });
                }
                if let Err(e) = writer.write_all(&chunk).await {
                    break Some(ApiError::Internal(Box::new(e)));
                }
            }
        }
    };
    let failure = failure.or_else(|| {
        (size == 0)
            .then(|| ApiError::invalid("body", "the file is empty; upload a file with records"))
    });
    if let Some(error) = failure {
        // Nothing partial stays: the multipart upload is abandoned, and a file of this name
        // uploaded earlier is left as it was.
        let _ = writer.abort().await;
        return Err(error);
    }
    writer.shutdown().await.map_err(|e| ApiError::Internal(Box::new(e)))?;
    let upload = Upload {
        name: name.clone(),
        object: Some(object),
        bytes: i64::try_from(size).unwrap_or(i64::MAX),
        uploaded_ms: now_ms(),
    };
    let recorded = state.catalog.record_upload(&tenant, &batch.id, &upload).await;
    let stale = match &recorded {
        // The catalog never took these bytes. (After an error it may have: they stay, and go
        // with the batch's folder if they were not taken.)
        Ok(UploadRecorded::Refused) => Some(path),
        Err(_) => None,
        Ok(UploadRecorded::Recorded { replaced: Some(old) }) => {
            Some(upload_location(org, sandbox, batch.id.as_str(), &old.name, old.object.as_deref()))
        }
        Ok(UploadRecorded::Recorded { replaced: None }) => None,
    };
    if let Some(stale) = stale {
        if let Err(e) = state.storage.delete(&stale).await {
            tracing::warn!(batch_id = %batch.id, error = %e, "cannot remove an unused upload");
        }
    }
    if recorded? == UploadRecorded::Refused {
        return Err(ApiError::Conflict(format!(
            "batch {} stopped loading during the upload; the file was not added",
            batch.id
        )));
    }
    tracing::info!(batch_id = %batch.id, file = %name, bytes = size, "file uploaded");
    Ok(Json(json!({"batchId": batch.id, "name": name, "size": size})))
}

#[utoipa::path(post, path = "/data/foundation/import/batches/{id}", operation_id = "actOnIngestBatch", tag = "batch ingestion", params(("id" = segport_model::BatchId, Path, description = "The resource id."), ("action" = String, Query, description = "COMPLETE or ABORT.")), responses((status = 200, description = "Done.", body = Object)))]
async fn action(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let action = query.get("action").unwrap_or_default().to_ascii_uppercase();
    if action != "COMPLETE" && action != "ABORT" {
        return Err(ApiError::invalid("action", "must be COMPLETE or ABORT"));
    }
    let batch = ingest_batch(&state, &tenant, &raw).await?;
    let now = now_ms();
    let transition = if action == "COMPLETE" {
        state.catalog.complete_batch(&tenant, &batch.id, now).await?
    } else {
        state.catalog.abort_batch(&tenant, &batch.id, now).await?
    }
    .ok_or_else(|| ApiError::NotFound(format!("batch {} not found", batch.id)))?;

    let status = transition.status;
    let acceptable = match action.as_str() {
        // Completing again is harmless; completing an aborted batch is not possible.
        "COMPLETE" => status != BatchStatus::Aborted,
        _ => status == BatchStatus::Aborted,
    };
    if !acceptable {
        return Err(ApiError::Conflict(format!(
            "batch {} is {}; {action} is not possible any more",
            batch.id,
            status.as_str()
        )));
    }
    if action == "ABORT" && transition.changed {
        let dir = uploads_dir(tenant.org.as_str(), tenant.sandbox.as_str(), batch.id.as_str());
        if let Err(e) = state.storage.delete_prefix(&dir).await {
            tracing::warn!(batch_id = %batch.id, error = %e, "cannot remove the aborted batch's files");
        }
    }
    tracing::info!(batch_id = %batch.id, action, status = status.as_str(), "batch action");
    Ok(Json(json!({"id": batch.id, "status": status.as_str()})))
}
