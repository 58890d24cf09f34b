//! The PostgreSQL catalog: the production backend, shared by every api and worker process.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::sql::{impl_catalog, Dialect, SandboxCache};
use crate::{Backend, CatalogError, ConnectOptions, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// A catalog on PostgreSQL.
pub struct PgCatalog {
    pool: PgPool,
    pub(crate) sandboxes: SandboxCache,
}

impl PgCatalog {
    pub async fn connect(options: &ConnectOptions) -> Result<Self> {
        let connect: PgConnectOptions = options.url.parse().map_err(|e| {
            CatalogError::Config(format!("{}: {e}", crate::redact_url(&options.url)))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect.application_name("segport"))
            .await?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool, sandboxes: SandboxCache::default() }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn read(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn write(&self) -> &PgPool {
        &self.pool
    }

    async fn run_migrations(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

impl_catalog!(
    PgCatalog,
    sqlx::Postgres,
    Backend::Postgres,
    Dialect {
        lock_policy_shared: "SELECT version FROM merge_policies WHERE org = $1 AND sandbox = $2 AND id = $3 FOR SHARE",
        lock_policy_exclusive: "SELECT version FROM merge_policies WHERE org = $1 AND sandbox = $2 AND id = $3 FOR UPDATE",
    }
);
