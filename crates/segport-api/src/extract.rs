//! Request extractors that answer bad input in the contract's error shape, never with a
//! framework default (plain-text 400/413/415/422).

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};
use segport_model::ValidationErrors;
use serde_json::Value;

use crate::{ApiError, MAX_JSON_BODY};

/// A JSON request body: `Content-Type` checked (415), size capped (413), syntax checked (400).
/// Its fields are validated by the model, so one answer can name every invalid field.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json_content_type(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "a JSON body needs the header Content-Type: application/json".to_owned(),
            ));
        }
        let bytes = read_limited(request.into_body(), MAX_JSON_BODY).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("body", "is required: send a JSON object"));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))
    }
}

async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(body_error(e.as_ref())),
    }
}

/// The answer to a request body that failed while being read: 408 when it stalled past the
/// body timeout (the router's `RequestBodyTimeoutLayer`), else 400.
pub(crate) fn body_error(error: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::Timeout(
                "the request body stopped arriving before it was complete; it was dropped"
                    .to_owned(),
            );
        }
        cause = e.source();
    }
    ApiError::invalid("body", format!("could not be read: {error}"))
}

/// `application/json`, or any `application/…+json` media type, parameters allowed.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The query string as name/value pairs, first occurrence winning; unknown names are ignored by
/// the handlers.
pub struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    /// Catalog-style paging: `limit` (1..=`max`, default `default`) and `start` (a row offset).
    pub fn page(
        &self,
        default: u64,
        max: u64,
        errors: &mut ValidationErrors,
    ) -> segport_catalog::ListQuery {
        let limit = self.int_in("limit", default, 1, max, errors);
        let start = self.int_in("start", 0, 0, i64::MAX as u64, errors);
        segport_catalog::ListQuery { limit: u32::try_from(limit).unwrap_or(u32::MAX), start }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A non-negative integer in `min..=max`, or `default` when absent.
    pub fn int_in(
        &self,
        name: &str,
        default: u64,
        min: u64,
        max: u64,
        errors: &mut ValidationErrors,
    ) -> u64 {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    errors.push(name, format!("{raw:?} is not an integer from {min} to {max}"));
                    default
                }
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
            .map(QueryPairs)
            .map_err(|e| ApiError::invalid("query", format!("is not a valid query string: {e}")))
    }
}

/// One path segment (an id), decoded; a segment that cannot be decoded is reported as 404.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathId(p.0))
            .map_err(|_| {
                ApiError::NotFound("no such resource: the id in the path is not valid".to_owned())
            })
    }
}
