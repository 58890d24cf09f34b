//! API tokens on SQL.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;

use super::SqlCatalog;
use crate::model::TokenRow;
use crate::{Result, SessionRecord, TokenRecord, Tokens};

const INSERT_TOKEN: &str = "INSERT INTO api_tokens \
     (id, org, token_sha256, created_ms, expires_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6)";

const LIST_TOKENS: &str = "SELECT * FROM api_tokens ORDER BY created_ms, id";

const SELECT_TOKEN: &str = "SELECT * FROM api_tokens WHERE token_sha256 = $1";

const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL";

const INSERT_SESSION: &str = "INSERT INTO ui_sessions \
     (id_sha256, token_sha256, org, sandbox, csrf, created_ms, seen_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const FORGET_IDLE_SESSIONS: &str = "DELETE FROM ui_sessions WHERE seen_ms < $1";

const SELECT_SESSION: &str = "SELECT id_sha256, token_sha256, org, sandbox, csrf, created_ms, \
     seen_ms FROM ui_sessions WHERE id_sha256 = $1";

const TOUCH_SESSION: &str =
    "UPDATE ui_sessions SET sandbox = $2, seen_ms = $3 WHERE id_sha256 = $1";

const DELETE_SESSION: &str = "DELETE FROM ui_sessions WHERE id_sha256 = $1";

type SessionRow = (String, String, String, String, String, i64, i64);

#[async_trait]
impl Tokens for SqlCatalog {
    async fn insert_session(&self, s: &SessionRecord, idle_before_ms: i64) -> Result<()> {
        let mut tx = self.write().begin().await?;
        sqlx::query(FORGET_IDLE_SESSIONS).bind(idle_before_ms).execute(&mut *tx).await?;
        sqlx::query(INSERT_SESSION)
            .bind(&s.id_sha256)
            .bind(&s.token_sha256)
            .bind(&s.org)
            .bind(&s.sandbox)
            .bind(&s.csrf)
            .bind(s.created_ms)
            .bind(s.seen_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_session(&self, id_sha256: &str) -> Result<Option<SessionRecord>> {
        let row: Option<SessionRow> =
            sqlx::query_as(SELECT_SESSION).bind(id_sha256).fetch_optional(self.read()).await?;
        Ok(row.map(|(id_sha256, token_sha256, org, sandbox, csrf, created_ms, seen_ms)| {
            SessionRecord { id_sha256, token_sha256, org, sandbox, csrf, created_ms, seen_ms }
        }))
    }

    async fn touch_session(&self, id_sha256: &str, sandbox: &str, now_ms: i64) -> Result<()> {
        sqlx::query(TOUCH_SESSION)
            .bind(id_sha256)
            .bind(sandbox)
            .bind(now_ms)
            .execute(self.write())
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id_sha256: &str) -> Result<()> {
        sqlx::query(DELETE_SESSION).bind(id_sha256).execute(self.write()).await?;
        Ok(())
    }

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
