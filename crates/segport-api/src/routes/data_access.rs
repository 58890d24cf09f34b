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
use segport_store::storage::upload_location;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::extract::{BaseUrl, PathId, QueryPairs};
use crate::{ApiError, AppState};

const PREFIX: &str = "/data/foundation/export";

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(batch_files)).routes(routes!(file))
}

/// A committed file: its name, storage path and size.
struct Listed {
    name: String,
    path: object_store::path::Path,
    bytes: i64,
}

async fn committed_files(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
) -> Result<(BatchId, Vec<Listed>, i64), ApiError> {
    // Ids are opaque to clients: one not shaped like segport's names nothing here (404).
    let Ok(id) = BatchId::parse(raw) else {
        let shown = segport_model::error::clip(raw, 64);
        return Err(ApiError::NotFound(format!("file {shown} not found")));
    };
    let batch = state
        .catalog
        .get_batch(tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("file {id} not found")))?;
    let files = match batch.kind {
        BatchKind::Export => state
            .catalog
            .list_batch_files(tenant, &id)
            .await?
            .into_iter()
            .map(|f| {
                // Stored paths are object_store paths in their encoded form: parsed, not
                // encoded again.
                let path = object_store::path::Path::parse(&f.path).map_err(|e| {
                    ApiError::Internal(format!("batch file path {:?}: {e}", f.path).into())
                })?;
                Ok(Listed { name: f.name, path, bytes: f.bytes })
            })
            .collect::<Result<_, ApiError>>()?,
        // An aborted or FAILed batch (never ingested: no record count) lost its uploads.
        BatchKind::Ingest
            if !(batch.status == BatchStatus::Aborted
                || (batch.status == BatchStatus::Failed && batch.record_count.is_none())) =>
        {
            state
                .catalog
                .list_uploads(&id)
                .await?
                .into_iter()
                .map(|u| Listed {
                    path: upload_location(
                        tenant.org.as_str(),
                        tenant.sandbox.as_str(),
                        id.as_str(),
                        &u.name,
                        u.object.as_deref(),
                    ),
                    name: u.name,
                    bytes: u.bytes,
                })
                .collect()
        }
        BatchKind::Ingest => Vec::new(),
    };
    Ok((id, files, batch.updated_ms))
}

#[utoipa::path(get, path = "/data/foundation/export/batches/{id}/files", operation_id = "listBatchFiles", tag = "data access", params(("id" = segport_model::BatchId, Path, description = "The resource id.")), responses((status = 200, description = "The batch's committed files.", body = Object)))]
async fn batch_files(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    PathId(raw): PathId,
    BaseUrl(base): BaseUrl,
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
            "_links": {"self": {"href": format!("{base}{PREFIX}/files/{id}")}},
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
    BaseUrl(base): BaseUrl,
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
                // The name goes into a query: encoded, so that `#`, `?`, `%`, `&` or
                // non-ASCII in a file name survive the round trip.
                let query =
                    serde_urlencoded::to_string([("path", f.name.as_str())]).unwrap_or_default();
                json!({
                    "name": f.name,
                    "length": f.bytes.to_string(),
                    "_links": {"self": {"href": format!("{base}{PREFIX}/files/{id}?{query}")}},
                })
            })
            .collect();
        let count = data.len();
        return Ok(
            Json(json!({"data": data, "_page": {"limit": 100, "count": count}})).into_response()
        );
    };
    send_file(&state, &id, &files, name, &headers).await
}

/// A committed file of batch `raw` of `tenant`, as an attachment (Range supported): the
/// console's download, for a browser signed in to the sandbox.
pub(crate) async fn download(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (id, files, _) = committed_files(state, tenant, raw).await?;
    let mut response = send_file(state, &id, &files, name, headers).await?;
    // The name is the store's (`part-…parquet`); one that is not a plain token is left to the
    // browser to name.
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let disposition =
        if plain { format!("attachment; filename=\"{name}\"") } else { "attachment".to_owned() };
    if let Ok(value) = header::HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The bytes of the committed file `name` of batch `id` (whose files are `files`), the part a
/// `Range` header asks for when it has one: for the API and the console's downloads.
async fn send_file(
    state: &AppState,
    id: &BatchId,
    files: &[Listed],
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let listed = files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("file {id} has no {name:?}")))?;
    let size = u64::try_from(listed.bytes).unwrap_or(0);
    let range = match headers.get(header::RANGE) {
        None => Ask::Whole,
        // A header that is not text is no `bytes=` range either: ignored.
        Some(value) => value.to_str().map_or(Ask::Whole, |v| parse_range(v, size)),
    };
    let (status, span, content_range) = match range {
        Ask::Whole => (StatusCode::OK, None, None),
        Ask::Part(start, end) => (
            StatusCode::PARTIAL_CONTENT,
            Some(start..end + 1),
            Some(format!("bytes {start}-{end}/{size}")),
        ),
        Ask::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                ApiError::RangeNotSatisfiable(format!(
                    "the range does not start within the file's {size} bytes"
                )),
            )
                .into_response());
        }
    };
    let length = span.as_ref().map_or(size, |r| r.end - r.start);
    let stream = state
        .storage
        .stream(&listed.path, span)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(value) = content_range.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}

/// What a `Range` header asks of a file.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// No range, or one that is not a parseable `bytes=` range: the whole file (RFC 9110
    /// lets a server ignore a range it does not understand).
    Whole,
    /// Inclusive first and last byte, the last clamped to the file.
    Part(u64, u64),
    /// A `bytes=` range that starts past the end: 416.
    Unsatisfiable,
}

/// The first range of a `Range: bytes=…` header of a file of `size` bytes.
fn parse_range(value: &str, size: u64) -> Ask {
    let Some(spec) = value.trim().strip_prefix("bytes=").and_then(|s| s.split(',').next()) else {
        return Ask::Whole;
    };
    let Some((a, b)) = spec.trim().split_once('-') else { return Ask::Whole };
    let number = |s: &str| s.parse::<u64>().ok();
    let last = size.checked_sub(1);
    match (a.trim(), b.trim()) {
        ("", "") => Ask::Whole,
        ("", suffix) => match (number(suffix), last) {
            (None, _) => Ask::Whole,
            (Some(0), _) | (_, None) => Ask::Unsatisfiable,
            (Some(n), Some(last)) => Ask::Part(size - n.min(size), last),
        },
        (a, b) => {
            let (Some(start), end) =
                (number(a), if b.is_empty() { Some(u64::MAX) } else { number(b) })
            else {
                return Ask::Whole;
            };
            match (end, last) {
                (None, _) => Ask::Whole,
                (Some(end), _) if end < start => Ask::Whole,
                (Some(_), None) => Ask::Unsatisfiable,
                (Some(_), Some(last)) if start > last => Ask::Unsatisfiable,
                (Some(end), Some(last)) => Ask::Part(start, end.min(last)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        use super::Ask::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 99));
        assert_eq!(
            parse_range("bytes=50-500", 100),
            Part(50, 99),
            "an end past the file is clamped"
        );
        assert_eq!(parse_range("bytes=0-1, 5-6", 100), Part(0, 1));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        for ignored in
            ["items=0-1", "bytes=5-1", "bytes=a-b", "bytes=", "bytes=-", "0-1", "bytes=1-x"]
        {
            assert_eq!(parse_range(ignored, 100), Whole, "{ignored}");
        }
    }
}
