//! The PostgreSQL catalog: the production backend, shared by every api and worker process.
//!
//! This module holds what is PostgreSQL's own: the pool, `LISTEN`/`NOTIFY` for queued tasks,
//! and the row-locking statements of its [`Dialect`]. The concerns' SQL is `src/sql/`,
//! compiled here with `Db = sqlx::Postgres` (and again in `sqlite.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::admin::SandboxCache;
use crate::dialect::{claim_sql, due_deliveries_sql, Dialect};
use crate::{Backend, CatalogError, ConnectOptions, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The channel on which queued tasks are announced.
const TASKS_CHANNEL: &str = "segport_tasks";

/// A catalog on PostgreSQL.
pub struct PgCatalog {
    pool: PgPool,
    pub(crate) sandboxes: SandboxCache,
    /// Woken by `LISTEN segport_tasks` (and by this process's own announcements).
    tasks: Arc<Notify>,
    listening: AtomicBool,
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
        Self {
            pool,
            sandboxes: SandboxCache::default(),
            tasks: Arc::new(Notify::new()),
            listening: AtomicBool::new(false),
        }
    }

    pub(crate) fn task_signal(&self) -> &Notify {
        &self.tasks
    }

    /// Starts, once, the listener that turns `NOTIFY segport_tasks` from any process into a
    /// wake-up here. It reconnects after a lost connection and ends with the catalog.
    pub(crate) fn ensure_listening(&self) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool = self.pool.clone();
        let notify = Arc::downgrade(&self.tasks);
        tokio::spawn(async move {
            while !pool.is_closed() {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(TASKS_CHANNEL).await {
                            tracing::warn!(error = %e, "cannot LISTEN for tasks; polling only");
                        } else {
                            loop {
                                let Some(n) = notify.upgrade() else { return };
                                // Tasks queued while no one listened are found by claiming.
                                n.notify_one();
                                drop(n);
                                if listener.recv().await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "task listener cannot connect"),
                }
                if notify.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Wakes workers here and, through `NOTIFY`, in every other process.
    pub(crate) async fn announce_tasks(&self) {
        self.tasks.notify_one();
        if let Err(e) =
            sqlx::query("SELECT pg_notify($1, '')").bind(TASKS_CHANNEL).execute(&self.pool).await
        {
            tracing::debug!(error = %e, "cannot NOTIFY; workers will find the task by polling");
        }
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

// The shared implementation, compiled for PostgreSQL.
type SqlCatalog = PgCatalog;
type Db = sqlx::Postgres;
type Tx<'a> = sqlx::Transaction<'a, Db>;
const BACKEND: Backend = Backend::Postgres;
const DIALECT: Dialect = Dialect {
    claim_task: claim_sql!("FOR UPDATE OF t SKIP LOCKED"),
    claim_task_capped: claim_sql!(capped, "FOR UPDATE OF t SKIP LOCKED"),
    lock_policy_shared: "SELECT version FROM merge_policies \
        WHERE org = $1 AND sandbox = $2 AND id = $3 FOR SHARE",
    lock_policy_exclusive: "SELECT version FROM merge_policies \
        WHERE org = $1 AND sandbox = $2 AND id = $3 FOR UPDATE",
    lock_loading_batch: "SELECT id FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3 \
        AND kind = 'ingest' AND status = 'loading' FOR UPDATE",
    lock_job_task: "SELECT id FROM tasks WHERE job_id = $1 FOR UPDATE",
    lock_tenant_claims: Some("SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))"),
    due_deliveries: due_deliveries_sql!("FOR UPDATE SKIP LOCKED"),
    // `json_to_recordset` yields the rows in the array's order, and the ids are drawn from
    // the sequence as they are inserted.
    insert_jobs: "INSERT INTO export_jobs (org, sandbox, status, spec, merge_policy_id, \
        merge_policy, request_id, warnings, creation_ms, update_ms, dataset_id, schedule_id, \
        delta_key) \
        SELECT org, sandbox, status, spec, merge_policy_id, merge_policy, request_id, warnings, \
        now_ms, now_ms, dataset_id, schedule_id, delta_key \
        FROM json_to_recordset($1::json) AS r(org TEXT, sandbox TEXT, status TEXT, spec TEXT, \
        merge_policy_id TEXT, merge_policy TEXT, request_id TEXT, warnings TEXT, now_ms BIGINT, \
        dataset_id TEXT, schedule_id TEXT, delta_key TEXT) \
        RETURNING id",
    insert_export_batches: "INSERT INTO batches (id, org, sandbox, dataset_id, kind, status, \
        job_id, input_format, multiline_json, created_ms, updated_ms) \
        SELECT id, org, sandbox, dataset_id, kind, status, job_id, input_format, FALSE, now_ms, \
        now_ms \
        FROM json_to_recordset($1::json) AS r(id TEXT, org TEXT, sandbox TEXT, dataset_id TEXT, \
        kind TEXT, status TEXT, job_id BIGINT, input_format TEXT, now_ms BIGINT)",
    insert_export_tasks: "INSERT INTO tasks (kind, org, sandbox, job_id, state, created_ms, \
        updated_ms) \
        SELECT kind, org, sandbox, job_id, state, now_ms, now_ms \
        FROM json_to_recordset($1::json) AS r(kind TEXT, org TEXT, sandbox TEXT, job_id BIGINT, \
        state TEXT, now_ms BIGINT)",
};

#[path = "sql/admin.rs"]
mod admin;
#[path = "sql/batches.rs"]
mod batches;
#[path = "sql/common.rs"]
mod common;
#[path = "sql/datasets.rs"]
mod datasets;
#[path = "sql/jobs.rs"]
mod jobs;
#[path = "sql/policies.rs"]
mod policies;
#[path = "sql/schedules.rs"]
mod schedules;
#[path = "sql/store.rs"]
mod store;
#[path = "sql/tasks.rs"]
mod tasks;
#[path = "sql/tokens.rs"]
mod tokens;
#[path = "sql/webhooks.rs"]
mod webhooks;
