//! The catalog as a database: health, migrations and sandboxes, on SQL.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::merge_policy::MergePolicy;
use segport_model::Tenant;

use super::policies::INSERT_POLICY;
use super::{SqlCatalog, BACKEND};
use crate::{Admin, Backend, Result};

const INSERT_SANDBOX: &str =
    "INSERT INTO sandboxes (org, sandbox, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

#[async_trait]
impl Admin for SqlCatalog {
    fn backend(&self) -> Backend {
        BACKEND
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.read()).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        self.run_migrations().await
    }

    async fn ensure_sandbox(&self, tenant: &Tenant, now_ms: i64) -> Result<()> {
        if self.sandboxes.contains(tenant) {
            return Ok(());
        }
        let mut tx = self.write().begin().await?;
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let created = sqlx::query(INSERT_SANDBOX)
            .bind(org)
            .bind(sandbox)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if created == 1 {
            let policy = MergePolicy::builtin_default(org, now_ms);
            sqlx::query(INSERT_POLICY)
                .bind(org)
                .bind(sandbox)
                .bind(&policy.id)
                .bind(policy.version)
                .bind(true)
                .bind(serde_json::to_string(&policy)?)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.sandboxes.insert(tenant);
        Ok(())
    }
}
