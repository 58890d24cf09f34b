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

/// The tokens of token-mode authentication.
#[async_trait]
pub trait Tokens: Send + Sync + 'static {
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn find_token(&self, token_sha256: &str) -> Result<Option<TokenRecord>>;
    /// Marks a token revoked. `false` when no unrevoked token has that id.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool>;
}
