//! API tokens: only a secret's SHA-256 is kept.

use async_trait::async_trait;

use crate::Result;

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub org: String,
    /// Lowercase hex SHA-256 of the secret.
    pub token_sha256: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A console session of token mode ([`Tokens::insert_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Lowercase hex SHA-256 of the cookie's secret.
    pub id_sha256: String,
    /// The token it signed in with (its SHA-256).
    pub token_sha256: String,
    pub org: String,
    pub sandbox: String,
    /// The token its forms carry.
    pub csrf: String,
    pub created_ms: i64,
    pub seen_ms: i64,
}

/// The tokens of token-mode authentication, and the console sessions signed in with them.
#[async_trait]
pub trait Tokens: Send + Sync + 'static {
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn find_token(&self, token_sha256: &str) -> Result<Option<TokenRecord>>;
    /// Marks a token revoked. `false` when no unrevoked token has that id.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// Records a new console session (and forgets those idle since before `idle_before_ms`).
    async fn insert_session(&self, session: &SessionRecord, idle_before_ms: i64) -> Result<()>;
    async fn find_session(&self, id_sha256: &str) -> Result<Option<SessionRecord>>;
    /// Marks a session used at `now_ms`, showing `sandbox`.
    async fn touch_session(&self, id_sha256: &str, sandbox: &str, now_ms: i64) -> Result<()>;
    async fn delete_session(&self, id_sha256: &str) -> Result<()>;
}
