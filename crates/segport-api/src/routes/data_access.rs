//! Data Access `/data/foundation/export`: the committed files of a batch, listed and downloaded
//! (with `Range`). A batch's files form one "dataset file" whose id is the batch id: an export's
//! Parquet parts once it committed, an ingest batch's uploaded files.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use segport_model::batch::{BatchKind, BatchStatus};
use segport_model::{BatchId, Tenant};
use segport_store::storage::upload_file;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{PathId, QueryPairs};
use crate::{ApiError, AppState};

const PREFIX: &str = "/data/foundation/export";

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(batch_files)).routes(routes!(file))
}

/// A committed file: its name, storage path and size.
struct Listed {
    name: String,
    path: String,
    bytes: i64,
}

async fn committed_files(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
) -> Result<(BatchId, Vec<Listed>, i64), ApiError> {
    let batch = super::batch_of(state, tenant, raw).await?;
    let id = batch.id.clone();
    let files = match batch.kind {
        BatchKind::Export => state
            .catalog
            .list_batch_files(tenant, &id)
            .await?
            .into_iter()
            .map(|f| Listed { name: f.name, path: f.path, bytes: f.bytes })
            .collect(),
        BatchKind::Ingest if batch.status != BatchStatus::Aborted => state
            .catalog
            .list_uploads(&id)
            .await?
            .into_iter()
            .map(|u| Listed {
                path: upload_file(
                    tenant.org.as_str(),
                    tenant.sandbox.as_str(),
                    id.as_str(),
                    &u.name,
                )
                .to_string(),
                name: u.name,
                bytes: u.bytes,
            })
            .collect(),
        BatchKind::Ingest => Vec::new(),
    };
    Ok((id, files, batch.updated_ms))
}

#[utoipa::path(get, path = "/data/foundation/export/batches/{id}/files", operation_id = "listBatchFiles", tag = "data access", params(("id" = segport_model::BatchId, Path, description = "The resource id.")), responses((status = 200, description = "The batch's committed files.", body = Object)))]
async fn batch_files(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
) -> Result<Json<Value>, ApiError> {
    let (id, files, updated) = committed_files(&state, &tenant, &raw).await?;
    let data: Vec<Value> = if files.is_empty() {
        Vec::new()
    } else {
        vec![json!({
            "dataSetFileId": id,
            "dataSetViewId": id,
            "version": "1.0.0",
            "created": updated.to_string(),
            "updated": updated.to_string(),
            "isValid": true,
            "_links": {"self": {"href": format!("{PREFIX}/files/{id}")}},
        })]
    };
    let count = data.len();
    Ok(Json(json!({"data": data, "_page": {"limit": 100, "count": count}})))
}

#[utoipa::path(get, path = "/data/foundation/export/files/{id}", operation_id = "getFile", tag = "data access", params(("id" = segport_model::BatchId, Path, description = "The resource id."), ("path" = Option<String>, Query, description = "A file name: downloads it (Range supported).")), responses((status = 200, description = "The file listing, or the file's bytes with `path`.", content((Object = "application/json"), (Vec<u8> = "application/octet-stream"))), (status = 206, description = "The requested range of the file.", body = Vec<u8>, content_type = "application/octet-stream")))]
async fn file(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    query: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, files, _) = committed_files(&state, &tenant, &raw).await?;
    if files.is_empty() {
        return Err(ApiError::NotFound(format!(
            "file {id} not found (the batch has no committed files)"
        )));
    }
    let Some(name) = query.get("path") else {
        let data: Vec<Value> = files
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "length": f.bytes.to_string(),
                    "_links": {"self": {"href": format!("{PREFIX}/files/{id}?path={}", f.name)}},
                })
            })
            .collect();
        let count = data.len();
        return Ok(
            Json(json!({"data": data, "_page": {"limit": 100, "count": count}})).into_response()
        );
    };
    let listed = files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("file {id} has no {name:?}")))?;
    let size = u64::try_from(listed.bytes).unwrap_or(0);
    let location = object_store::path::Path::from(listed.path.as_str());
    match headers.get(header::RANGE).map(|v| v.to_str().unwrap_or_default()) {
        None => {
            let bytes =
                state.storage.get(&location).await.map_err(|e| ApiError::Internal(Box::new(e)))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::ACCEPT_RANGES, "bytes".to_owned()),
                ],
                Body::from(bytes),
            )
                .into_response())
        }
        Some(range) => {
            let (start, end) = parse_range(range, size).ok_or_else(|| {
                ApiError::RangeNotSatisfiable(format!(
                    "range {range:?} does not fit a file of {size} bytes"
                ))
            })?;
            let bytes = state
                .storage
                .get_range(&location, start..end + 1)
                .await
                .map_err(|e| ApiError::Internal(Box::new(e)))?;
            Ok((
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::ACCEPT_RANGES, "bytes".to_owned()),
                    (header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
                ],
                Body::from(bytes),
            )
                .into_response())
        }
    }
}

/// The first range of a `Range: bytes=…` header as inclusive `(start, end)` within `size`.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?.split(',').next()?.trim();
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size.checked_sub(1)?)),
    };
    (start <= end && end < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }
}
