//! The two error shapes of docs/api.md and the middleware that gives every answer its request id.
//!
//! Service errors: `{type, title, status, requestId, report: {details: [{field, message}]}}`.
//! Header and token errors use AEP's gateway shape `{error_code, message}`. 500s are opaque to
//! the client and logged with their full cause chain.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use segport_catalog::CatalogError;
use segport_model::error::chain;
use segport_model::{FieldError, ValidationErrors};

use crate::openapi::{ErrorReport, GatewayErrorBody, ServiceErrorBody};
use tracing::Instrument;

tokio::task_local! {
    /// The id of the request being served, for error bodies built deep in a handler.
    static REQUEST_ID: String;
}

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("the catalog database is unreachable; retry later")]
    Unavailable(#[source] CatalogError),
    /// The server is at its limit of requests in flight.
    #[error("the server is busy ({0} requests in flight); retry later")]
    Overloaded(usize),
    #[error("{0}")]
    Timeout(String),
    /// Refused for a reason the message gives (a console form without its CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// A bounded pool (engine reads) is full.
    #[error("{0}")]
    Busy(String),
    /// A read ran past its deadline.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    // Gateway-shaped errors (headers and tokens).
    #[error("Oauth token is missing.")]
    MissingToken,
    #[error("Oauth token is not valid")]
    InvalidToken,
    #[error("Api Key is required")]
    MissingApiKey,
    #[error("{0}")]
    BadTenantHeader(String),
    #[error("Profile is not valid")]
    OrgNotAllowed,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(ValidationErrors::single(field, message))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::BadTenantHeader(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) | ApiError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::MissingApiKey | ApiError::OrgNotAllowed => StatusCode::FORBIDDEN,
        }
    }

    /// The stable code in `type`: `https://ns.adobe.com/aep/errors/SEGPORT-<code>-<http>`.
    fn service_code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "100400",
            ApiError::NotFound(_) => "100404",
            ApiError::MethodNotAllowed(_) => "100405",
            ApiError::Conflict(_) => "100409",
            ApiError::PayloadTooLarge { .. } => "100413",
            ApiError::UnsupportedMediaType(_) => "100415",
            ApiError::RangeNotSatisfiable(_) => "100416",
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => "100503",
            ApiError::Timeout(_) => "100408",
            _ => "100500",
        }
    }

    fn gateway_code(&self) -> Option<&'static str> {
        match self {
            ApiError::MissingToken => Some("403010"),
            ApiError::InvalidToken => Some("401013"),
            ApiError::MissingApiKey => Some("403000"),
            ApiError::BadTenantHeader(_) => Some("400003"),
            ApiError::OrgNotAllowed => Some("403025"),
            _ => None,
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Unavailable(_) => ApiError::Unavailable(err),
            CatalogError::Conflict(message) => ApiError::Conflict(message),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Invalid(errors)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Some(code) = self.gateway_code() {
            let body = GatewayErrorBody { error_code: code.to_owned(), message: self.to_string() };
            return (status, Json(body)).into_response();
        }
        let request_id = current_request_id();
        match &self {
            ApiError::Internal(_) | ApiError::Unavailable(_) => {
                tracing::error!(request_id, error = chain(&self), "request failed");
            }
            _ => {}
        }
        let details: Vec<FieldError> = match &self {
            ApiError::Invalid(errors) => errors.0.clone(),
            _ => Vec::new(),
        };
        let body = ServiceErrorBody {
            kind: format!(
                "https://ns.adobe.com/aep/errors/SEGPORT-{}-{}",
                self.service_code(),
                status.as_u16()
            ),
            title: self.to_string(),
            status: status.as_u16(),
            request_id,
            report: ErrorReport { details },
        };
        (status, Json(body)).into_response()
    }
}

/// The request id of the request being served (empty outside a request).
pub(crate) fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

const REQUEST_ID_HEADER: &str = "x-request-id";

/// Takes `x-request-id` (or makes a UUID), serves the request with it in scope, and echoes it
/// in the answer's `x-request-id` header.
pub(crate) async fn with_request_id(request: Request, next: Next) -> Response {
    // A missing or unusable id (too long, not visible ASCII) is replaced by a fresh UUID: the
    // header is optional and only helps debugging, so it never fails a request.
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map_or_else(|| segport_model::ids::new_uuid().to_string(), str::to_owned);
    // Every log line written while serving the request carries its id.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let has_body = request.headers().contains_key(axum::http::header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut response =
        REQUEST_ID.scope(request_id.clone(), next.run(request)).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // An error answered before the body was read (an unknown route, a refused header) leaves
    // the body unread, and the server then closes the connection: say so, so that a client
    // does not send its next request on it.
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn valid_request_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}
