//! Batch Ingestion `/data/foundation/import`: create a batch, upload its files (streamed to
//! storage, idempotent, size-capped), then COMPLETE (queue the ingest), ABORT or FAIL; REVERT
//! withdraws a successful batch's records from the store.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use segport_catalog::{NewStoreFile, StoreKind, Upload, UploadRecorded};
use segport_model::batch::{Batch, BatchKind, BatchStatus, NewIngestBatch};
use segport_model::dataset::DatasetClass;
use segport_model::time::now_ms;
use segport_model::{DatasetId, Tenant};
use segport_store::compact::compact;
use segport_store::ingest::IngestLimits;
use segport_store::schema::UnionSchema;
use segport_store::snapshot::FileRef;
use segport_store::storage::{
    new_upload_object, store_file, upload_location, uploads_dir, valid_upload_name,
};
use segport_store::RecordKind;
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
    let batch = create_batch(&state, &tenant, &body).await?;
    let mut wire = batch.to_wire();
    wire["id"] = json!(batch.id);
    // The per-file cap, so that a client can split larger input across files (a segport
    // addition; `segport ingest --server` reads it).
    Ok((StatusCode::CREATED, [(MAX_UPLOAD_HEADER, state.max_upload_bytes.to_string())], Json(wire)))
}

/// Creates the ingest batch `body` asks for (the API's create, and the console's upload).
pub(crate) async fn create_batch(
    state: &AppState,
    tenant: &Tenant,
    body: &Value,
) -> Result<Batch, ApiError> {
    let new = NewIngestBatch::parse(body)?;
    let dataset = state.catalog.get_dataset(tenant, &new.dataset_id).await?.ok_or_else(|| {
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
    state.catalog.ensure_sandbox(tenant, now).await?;
    let batch = Batch::new_ingest(tenant.org.as_str(), tenant.sandbox.as_str(), &new, now);
    state.catalog.create_ingest_batch(&batch).await?;
    tracing::info!(batch_id = %batch.id, dataset_id = %batch.dataset_id, "ingest batch created");
    Ok(batch)
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
    Ok(Json(store_upload(&state, &tenant, &batch_raw, &dataset_raw, &name, body).await?))
}

/// Stores the file `name` of a loading ingest batch from `body`, streamed, within the upload
/// limit (the API's upload, and the console's).
pub(crate) async fn store_upload(
    state: &AppState,
    tenant: &Tenant,
    batch_raw: &str,
    dataset_raw: &str,
    name: &str,
    body: Body,
) -> Result<Value, ApiError> {
    valid_upload_name(name).map_err(|m| ApiError::invalid("fileName", m))?;
    let dataset = DatasetId::parse(dataset_raw).map_err(|m| ApiError::invalid("datasetId", m))?;
    let batch = ingest_batch(state, tenant, batch_raw).await?;
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
    let path = upload_location(org, sandbox, batch.id.as_str(), name, Some(&object));
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
        name: name.to_owned(),
        object: Some(object),
        bytes: i64::try_from(size).unwrap_or(i64::MAX),
        uploaded_ms: now_ms(),
    };
    let recorded = state.catalog.record_upload(tenant, &batch.id, &upload).await;
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
    Ok(json!({"batchId": batch.id, "name": name, "size": size}))
}

#[utoipa::path(post, path = "/data/foundation/import/batches/{id}", operation_id = "actOnIngestBatch", tag = "batch ingestion", params(("id" = segport_model::BatchId, Path, description = "The resource id."), ("action" = String, Query, description = "COMPLETE, ABORT or FAIL a loading batch; REVERT a successful one (any letter case).")), responses((status = 200, description = "Done: `{id, status}`.", body = Object)))]
async fn action(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    query: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let raw_action = query.get("action").unwrap_or_default();
    Ok(Json(act_on_batch(&state, &tenant, &raw, raw_action).await?))
}

/// COMPLETE, ABORT, FAIL or REVERT (any letter case) the ingest batch `raw`: `{id, status}`.
pub(crate) async fn act_on_batch(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
    raw_action: &str,
) -> Result<Value, ApiError> {
    let Some(action) = BatchAction::parse(raw_action) else {
        return Err(ApiError::invalid("action", "must be COMPLETE, ABORT, FAIL or REVERT"));
    };
    let batch = ingest_batch(state, tenant, raw).await?;
    let now = now_ms();
    if action == BatchAction::Revert {
        let status = revert(state, tenant, &batch).await?;
        tracing::info!(batch_id = %batch.id, "batch reverted");
        // Its records are gone: so are the types only they held.
        if let Err(e) = super::catalog::release_unheld_types(state, tenant).await {
            tracing::warn!(batch_id = %batch.id, error = %e, "cannot release the batch's types");
        }
        return Ok(json!({"id": batch.id, "status": status.as_str()}));
    }
    // A reverted batch keeps `success` in its status column; no action moves it any more.
    if batch.status == BatchStatus::Reverted {
        return Err(ApiError::Conflict(format!(
            "batch {} is reverted; {} is not possible any more",
            batch.id,
            action.as_str()
        )));
    }
    let transition = match action {
        BatchAction::Complete => state.catalog.complete_batch(tenant, &batch.id, now).await?,
        BatchAction::Abort => state.catalog.abort_batch(tenant, &batch.id, now).await?,
        BatchAction::Fail | BatchAction::Revert => {
            state.catalog.fail_batch(tenant, &batch.id, now).await?
        }
    }
    .ok_or_else(|| ApiError::NotFound(format!("batch {} not found", batch.id)))?;

    let status = transition.status;
    let acceptable = match action {
        // Completing again is harmless; completing an aborted batch, or one failed by FAIL
        // before it was ever ingested, is not possible.
        BatchAction::Complete => {
            status != BatchStatus::Aborted
                && !(status == BatchStatus::Failed && batch.record_count.is_none())
        }
        BatchAction::Abort => status == BatchStatus::Aborted,
        BatchAction::Fail | BatchAction::Revert => status == BatchStatus::Failed,
    };
    if !acceptable {
        return Err(ApiError::Conflict(format!(
            "batch {} is {}; {} is not possible any more",
            batch.id,
            status.as_str(),
            action.as_str()
        )));
    }
    // An aborted or failed batch will never be ingested: its uploads go.
    if action != BatchAction::Complete && transition.changed {
        let dir = uploads_dir(tenant.org.as_str(), tenant.sandbox.as_str(), batch.id.as_str());
        if let Err(e) = state.storage.delete_prefix(&dir).await {
            tracing::warn!(batch_id = %batch.id, error = %e, "cannot remove the batch's files");
        }
    }
    tracing::info!(batch_id = %batch.id, action = action.as_str(), status = status.as_str(), "batch action");
    Ok(json!({"id": batch.id, "status": status.as_str()}))
}

/// The actions of `POST /import/batches/{id}?action=`, as Batch Ingestion names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchAction {
    Complete,
    Abort,
    Fail,
    Revert,
}

impl BatchAction {
    fn parse(s: &str) -> Option<Self> {
        [Self::Complete, Self::Abort, Self::Fail, Self::Revert]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "COMPLETE",
            Self::Abort => "ABORT",
            Self::Fail => "FAIL",
            Self::Revert => "REVERT",
        }
    }
}

/// Withdraws a successful ingest batch's records from the store, as one commit: its own files
/// leave the store, and every compacted file of its dataset that holds some of its rows is
/// replaced by a rewrite without them, so that neither a later export nor a later compaction
/// sees them again. A compaction that replaces one of those files meanwhile makes the commit
/// fail; it is planned again.
async fn revert(state: &AppState, tenant: &Tenant, batch: &Batch) -> Result<BatchStatus, ApiError> {
    const ATTEMPTS: usize = 3;
    let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
    for attempt in 1..=ATTEMPTS {
        let Some(plan) = state.catalog.revert_plan(tenant, &batch.id).await? else {
            return Err(ApiError::Conflict(format!(
                "batch {} is {}; only a successful batch can be reverted",
                batch.id,
                current_status(state, tenant, batch).await?.as_str()
            )));
        };
        let store = state.catalog.store_state(tenant).await?;
        let parse = |text: &str| {
            UnionSchema::from_json(text).map_err(|e| {
                ApiError::Internal(format!("the sandbox schema is unreadable: {e}").into())
            })
        };
        // Both schemas once per attempt, not once per file.
        let (profile_schema, event_schema) =
            (parse(&store.profile_schema)?, parse(&store.event_schema)?);
        let rows_per_group = IngestLimits::default().row_group_rows;
        let mut rewrites = Vec::new();
        let mut written = Vec::new();
        for file in &plan.compacted {
            let (kind, schema) = match file.kind {
                StoreKind::Profile => (RecordKind::Profile, &profile_schema),
                StoreKind::Event => (RecordKind::Event, &event_schema),
            };
            let name = format!("compacted-{}.parquet", segport_model::ids::new_uuid().simple());
            let out = store_file(org, sandbox, &file.dataset_id, file.partition, &name);
            let input = FileRef { path: file.path.clone(), ingest_ms: None, seq: file.seq };
            let rewritten = compact(
                &state.storage,
                &[input],
                kind,
                schema,
                rows_per_group,
                &out,
                &[plan.commit_seq],
            )
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?;
            match rewritten {
                // None of the batch's rows were in it: it stays.
                Some(r) if r.rows == u64::try_from(file.rows).unwrap_or(u64::MAX) => {
                    written.push(out);
                }
                Some(r) => {
                    written.push(out);
                    rewrites.push((
                        file.id,
                        Some(NewStoreFile {
                            dataset_id: file.dataset_id.clone(),
                            kind: file.kind,
                            partition: file.partition,
                            path: r.path,
                            rows: i64::try_from(r.rows).unwrap_or(i64::MAX),
                            bytes: i64::try_from(r.bytes).unwrap_or(i64::MAX),
                            min_key: r.min_key,
                            max_key: r.max_key,
                            key_fences: r.key_fences,
                        }),
                    ))
                }
                None => rewrites.push((file.id, None)),
            }
        }
        let planned: Vec<i64> = plan.compacted.iter().map(|f| f.id).collect();
        let committed =
            state.catalog.revert_batch(tenant, &batch.id, &planned, &rewrites, now_ms()).await;
        // Rewrites the commit did not take are removed now rather than by the sweep.
        let kept: Vec<&str> = match &committed {
            Ok(true) => {
                rewrites.iter().filter_map(|(_, f)| f.as_ref().map(|f| f.path.as_str())).collect()
            }
            _ => Vec::new(),
        };
        for out in written.iter().filter(|o| !kept.contains(&o.as_ref())) {
            if let Err(e) = state.storage.delete_store_file(out).await {
                tracing::warn!(path = %out, error = %e, "cannot remove an unused rewrite");
            }
        }
        match committed {
            Ok(true) => return Ok(BatchStatus::Reverted),
            Ok(false) => continue,
            Err(segport_catalog::CatalogError::Conflict(why)) if attempt < ATTEMPTS => {
                tracing::info!(batch_id = %batch.id, why, "revert raced a compaction; planning again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "batch {} could not be reverted: its files kept changing; try again",
        batch.id
    )))
}

async fn current_status(
    state: &AppState,
    tenant: &Tenant,
    batch: &Batch,
) -> Result<BatchStatus, ApiError> {
    Ok(state.catalog.get_batch(tenant, &batch.id).await?.map_or(batch.status, |b| b.status))
}
