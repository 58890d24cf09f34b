//! API tokens on SQL.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;

use super::SqlCatalog;
use crate::model::TokenRow;
use crate::{Result, TokenRecord, Tokens};

const INSERT_TOKEN: &str = "INSERT INTO api_tokens \
     (id, org, token_sha256, created_ms, expires_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6)";

const LIST_TOKENS: &str = "SELECT * FROM api_tokens ORDER BY created_ms, id";

const SELECT_TOKEN: &str = "SELECT * FROM api_tokens WHERE token_sha256 = $1";

const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL";

#[async_trait]
impl Tokens for SqlCatalog {
    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(INSERT_TOKEN)
            .bind(&t.id)
            .bind(&t.org)
            .bind(&t.token_sha256)
            .bind(t.created_ms)
            .bind(t.expires_ms)
            .bind(t.revoked_ms)
            .execute(self.write())
            .await?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query_as::<_, TokenRow>(LIST_TOKENS).fetch_all(self.read()).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn find_token(&self, token_sha256: &str) -> Result<Option<TokenRecord>> {
        Ok(sqlx::query_as::<_, TokenRow>(SELECT_TOKEN)
            .bind(token_sha256)
            .fetch_optional(self.read())
            .await?
            .map(Into::into))
    }

    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool> {
        let n = sqlx::query(REVOKE_TOKEN)
            .bind(id)
            .bind(now_ms)
            .execute(self.write())
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}
