//! Authentication and tenancy: who is calling, and which (org, sandbox) the request belongs to.
//!
//! `dev` mode accepts any non-empty bearer token (allowed only on loopback, enforced by the
//! binary). `token` mode accepts tokens issued by `segport token create`: the catalog keeps only
//! their SHA-256, compared in constant time, and each token is bound to one org.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use rand::RngCore;
use segport_catalog::{TokenRecord, Tokens};
use segport_model::time::now_ms;
use segport_model::Tenant;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// How bearer tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Any non-empty token; for a developer's loopback server.
    Dev,
    /// Tokens from `segport token create`, bound to an org.
    Token,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dev" => Ok(AuthMode::Dev),
            "token" => Ok(AuthMode::Token),
            other => Err(format!("{other:?} is not an auth mode; use dev or token")),
        }
    }
}

/// The lowercase hex SHA-256 of a token secret, as the catalog stores it.
pub fn token_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A freshly issued token: the secret (shown once) and the record to store.
pub struct IssuedToken {
    pub secret: String,
    pub record: TokenRecord,
}

/// Makes a new token for `org`: 32 random bytes, prefixed so that leaked tokens are greppable.
pub fn issue_token(org: &str, expires_in: Option<Duration>) -> IssuedToken {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("spt_{}", hex::encode(bytes));
    let created_ms = now_ms();
    let expires_ms = expires_in
        .map(|d| created_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    let record = TokenRecord {
        id: format!("tok_{}", &segport_model::ids::new_uuid().simple().to_string()[..16]),
        org: org.to_owned(),
        token_sha256: token_sha256(&secret),
        created_ms,
        expires_ms,
        revoked_ms: None,
    };
    IssuedToken { secret, record }
}

/// How long a token looked up in the catalog is trusted before it is looked up again; this
/// bounds how late a revocation takes effect.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
const TOKEN_CACHE_MAX: usize = 10_000;

/// Checks credentials; holds a short-lived cache of token lookups.
pub struct Authenticator {
    mode: AuthMode,
    catalog: Arc<dyn Tokens>,
    cache: Mutex<HashMap<String, (Option<TokenRecord>, Instant)>>,
}

impl Authenticator {
    pub fn new(mode: AuthMode, catalog: Arc<dyn Tokens>) -> Self {
        Self { mode, catalog, cache: Mutex::new(HashMap::new()) }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Checks the headers of a tenant request, in the order AEP's gateway does: token present,
    /// API key present, org and sandbox well-formed, token valid, token allowed for the org.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Tenant, ApiError> {
        let token = match headers.get("authorization") {
            None => return Err(ApiError::MissingToken),
            Some(value) => value.to_str().ok().and_then(bearer).ok_or(ApiError::InvalidToken)?,
        };
        let api_key = headers.get("x-api-key").map(|v| v.as_bytes()).unwrap_or_default();
        if api_key.is_empty() {
            return Err(ApiError::MissingApiKey);
        }
        // A token names its org: in token mode a request may leave the org header out (a
        // segport addition, for clients that hold only a token), and then it is the token's.
        let org_from_token = self.mode == AuthMode::Token && !headers.contains_key(ORG_HEADER);
        let tenant = if org_from_token { None } else { Some(tenant_from_headers(headers, None)?) };
        match self.mode {
            AuthMode::Dev => tenant
                .ok_or_else(|| ApiError::BadTenantHeader(format!("Missing header {ORG_HEADER}"))),
            AuthMode::Token => {
                if org_from_token {
                    // The sandbox header is checked before the token, as with an org header.
                    sandbox_header(headers)?;
                }
                let record = self.lookup(token).await?.ok_or(ApiError::InvalidToken)?;
                let now = now_ms();
                if record.revoked_ms.is_some() || record.expires_ms.is_some_and(|e| e <= now) {
                    return Err(ApiError::InvalidToken);
                }
                match tenant {
                    Some(tenant) if record.org != tenant.org.as_str() => {
                        Err(ApiError::OrgNotAllowed)
                    }
                    Some(tenant) => Ok(tenant),
                    None => tenant_from_headers(headers, Some(&record.org)),
                }
            }
        }
    }

    /// The token of secret `secret` while it is live (neither revoked nor expired).
    pub(crate) async fn live_token(&self, secret: &str) -> Result<Option<TokenRecord>, ApiError> {
        self.live_token_by_hash(&token_sha256(secret)).await
    }

    /// The token whose secret's SHA-256 is `hash` while it is live (a console session's).
    pub(crate) async fn live_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<TokenRecord>, ApiError> {
        let now = now_ms();
        Ok(self
            .lookup_hash(hash.to_owned())
            .await?
            .filter(|r| r.revoked_ms.is_none() && r.expires_ms.is_none_or(|e| e > now)))
    }

    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, ApiError> {
        self.lookup_hash(token_sha256(token)).await
    }

    async fn lookup_hash(&self, hash: String) -> Result<Option<TokenRecord>, ApiError> {
        if let Some(hit) = self.cached(&hash) {
            return Ok(hit);
        }
        let found = self.catalog.find_token(&hash).await?;
        // The index found the row by hash; compare again in constant time so that no timing
        // difference depends on how much of a guessed hash matched.
        let found = found.filter(|r| bool::from(r.token_sha256.as_bytes().ct_eq(hash.as_bytes())));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (found.clone(), Instant::now()));
        }
        Ok(found)
    }

    fn cached(&self, hash: &str) -> Option<Option<TokenRecord>> {
        let cache = self.cache.lock().ok()?;
        let (record, at) = cache.get(hash)?;
        (at.elapsed() < TOKEN_CACHE_TTL).then(|| record.clone())
    }
}

/// The token of an `Authorization: Bearer <token>` value, if it is one.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 8192)
        .then_some(token)
}

const ORG_HEADER: &str = "x-gw-ims-org-id";
const SANDBOX_HEADER: &str = "x-sandbox-name";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let value = headers
        .get(name)
        .ok_or_else(|| ApiError::BadTenantHeader(format!("Missing header {name}")))?;
    value.to_str().map_err(|_| {
        ApiError::BadTenantHeader(format!("Header {name} holds characters that are not ASCII"))
    })
}

fn sandbox_header(headers: &HeaderMap) -> Result<&str, ApiError> {
    header(headers, SANDBOX_HEADER)
}

/// The tenant the headers name; `org`, when given, stands for the org header.
fn tenant_from_headers(headers: &HeaderMap, org: Option<&str>) -> Result<Tenant, ApiError> {
    let org = match org {
        Some(org) => org,
        None => header(headers, ORG_HEADER)?,
    };
    let sandbox = sandbox_header(headers)?;
    Tenant::parse(org, sandbox).map_err(|errors| {
        let first = errors.0.first().map(|e| format!("Invalid header {}: {}", e.field, e.message));
        ApiError::BadTenantHeader(first.unwrap_or_else(|| "Invalid header".to_owned()))
    })
}

/// The authenticated tenant of a request, as a handler argument.
pub struct Authenticated(pub Tenant);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.authenticate(&parts.headers).await.map(Authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn issued_tokens_hash_to_their_record() {
        let t = issue_token("org", Some(Duration::from_secs(60)));
        assert_eq!(token_sha256(&t.secret), t.record.token_sha256);
        assert!(t.record.expires_ms.unwrap() > t.record.created_ms);
        assert_ne!(issue_token("org", None).secret, t.secret);
    }
}
