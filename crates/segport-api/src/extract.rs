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

    /// [`Self::page`] as a 400 when invalid, widened by one row: the list is fetched with it
    /// and cut by [`Peeked::cut`], which tells whether a next page exists.
    pub fn peeked_page(&self, default: u64, max: u64) -> Result<Peeked, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let page = self.page(default, max, &mut errors);
        errors.into_result(Peeked(page))
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

/// The scheme and authority clients reach this service at, for the absolute links AEP answers
/// with (`_links.self.href`, `Location`): the configured public URL, else the request's
/// `X-Forwarded-Proto`/`X-Forwarded-Host` (set by a proxy in front), else its `Host` over
/// plain HTTP. Empty (links stay relative) when the request names no usable host.
pub struct BaseUrl(pub String);

impl FromRequestParts<crate::AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, ApiError> {
        if let Some(url) = &state.public_url {
            return Ok(BaseUrl(url.to_string()));
        }
        Ok(BaseUrl(base_from_headers(&parts.headers).unwrap_or_default()))
    }
}

/// `scheme://host` from the forwarding headers or `Host`, when they hold a plausible authority
/// (a client's header must not put anything else into the links we answer).
fn base_from_headers(headers: &HeaderMap) -> Option<String> {
    // The first value of a list: the proxy nearest the client wrote it.
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("x-forwarded-host").or_else(|| first(header::HOST.as_str()))?;
    let authority = host.parse::<axum::http::uri::Authority>().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let scheme = match first("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{authority}"))
}

/// A `--public-url` as links are built from it: `http(s)://authority[/path]`, without a
/// trailing slash, query or fragment.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let uri: axum::http::Uri = text.parse().map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() || uri.query().is_some() {
        return Err(format!(
            "{text:?} must be an http:// or https:// URL with a host and no query, such as \
             https://segport.example.com"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A page asked for with `limit` and `start`, fetched one row longer to see past its end.
pub struct Peeked(segport_catalog::ListQuery);

impl Peeked {
    /// The query to fetch with: one row more than the page.
    pub fn fetch(&self) -> segport_catalog::ListQuery {
        segport_catalog::ListQuery { limit: self.0.limit.saturating_add(1), start: self.0.start }
    }

    /// Cuts `rows` (fetched with [`Self::fetch`]) to the page; answers the next page's `start`,
    /// empty on the last page.
    pub fn cut<T>(&self, rows: &mut Vec<T>) -> String {
        let limit = self.0.limit as usize;
        if rows.len() > limit {
            rows.truncate(limit);
            (self.0.start + u64::from(self.0.limit)).to_string()
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_come_from_forwarding_headers_or_host() {
        let base = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            base_from_headers(&h)
        };
        assert_eq!(base(&[("host", "localhost:8080")]).as_deref(), Some("http://localhost:8080"));
        assert_eq!(
            base(&[
                ("host", "10.0.0.5:8080"),
                ("x-forwarded-host", "api.example.com, proxy.internal"),
                ("x-forwarded-proto", "https"),
            ])
            .as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(base(&[]), None);
        assert_eq!(base(&[("host", "evil.com/path?x")]), None);
        assert_eq!(base(&[("host", "user@evil.com")]), None);
        assert_eq!(parse_public_url("https://x.example.com/").unwrap(), "https://x.example.com");
        assert!(parse_public_url("ftp://x").is_err());
        assert!(parse_public_url("x.example.com").is_err());
    }
}
