//! The embedded SQLite catalog: the default when no `DATABASE_URL` is set, so that one process
//! runs with no external server.
//!
//! SQLite allows one writer at a time. Rather than let concurrent transactions fail with
//! `SQLITE_BUSY` when they upgrade from reading to writing, every write goes through a pool of
//! exactly one connection (writers queue in the pool), while reads use their own pool and, in WAL
//! mode, never wait for the writer. The concerns' SQL is `src/sql/`, compiled here with
//! `Db = sqlx::Sqlite` (and again in `postgres.rs`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use tokio::sync::Notify;

use crate::admin::SandboxCache;
use crate::dialect::{claim_sql, due_deliveries_sql, Dialect};
use crate::{Backend, CatalogError, ConnectOptions, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A catalog on an SQLite file.
pub struct SqliteCatalog {
    reader: SqlitePool,
    writer: SqlitePool,
    pub(crate) sandboxes: SandboxCache,
    /// Wakes this process's workers; other processes on the same file find tasks by polling.
    tasks: Notify,
}

impl SqliteCatalog {
    pub async fn connect(options: &ConnectOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(&options.url)
            .map_err(|e| CatalogError::Config(format!("{}: {e}", options.url)))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect.read_only(true))
            .await?;
        Ok(Self { reader, writer, sandboxes: SandboxCache::default(), tasks: Notify::new() })
    }

    pub(crate) fn task_signal(&self) -> &Notify {
        &self.tasks
    }

    /// SQLite has no notifications between processes; nothing to start.
    pub(crate) fn ensure_listening(&self) {}

    pub(crate) async fn announce_tasks(&self) {
        self.tasks.notify_one();
    }

    pub(crate) fn read(&self) -> &SqlitePool {
        &self.reader
    }

    pub(crate) fn write(&self) -> &SqlitePool {
        &self.writer
    }

    async fn run_migrations(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}

// The shared implementation, compiled for SQLite.
type SqlCatalog = SqliteCatalog;
type Db = sqlx::Sqlite;
type Tx<'a> = sqlx::Transaction<'a, Db>;
const BACKEND: Backend = Backend::Sqlite;
/// One writer at a time: the write transaction itself is the lock, so nothing locks rows.
const DIALECT: Dialect = Dialect {
    claim_task: claim_sql!(""),
    claim_task_capped: claim_sql!(capped, ""),
    lock_policy_shared: "SELECT version FROM merge_policies \
        WHERE org = $1 AND sandbox = $2 AND id = $3",
    lock_policy_exclusive: "SELECT version FROM merge_policies \
        WHERE org = $1 AND sandbox = $2 AND id = $3",
    lock_loading_batch: "SELECT id FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3 \
        AND kind = 'ingest' AND status = 'loading'",
    lock_job_task: "SELECT id FROM tasks WHERE job_id = $1",
    lock_tenant_claims: None,
    due_deliveries: due_deliveries_sql!(""),
    // `json_each` numbers the array's elements in `key`; rowids are drawn as rows are inserted.
    insert_jobs: "INSERT INTO export_jobs (org, sandbox, status, spec, merge_policy_id, \
        merge_policy, request_id, warnings, creation_ms, update_ms, dataset_id, schedule_id, \
        delta_key) \
        SELECT json_extract(value, '$.org'), json_extract(value, '$.sandbox'), \
        json_extract(value, '$.status'), json_extract(value, '$.spec'), \
        json_extract(value, '$.merge_policy_id'), json_extract(value, '$.merge_policy'), \
        json_extract(value, '$.request_id'), json_extract(value, '$.warnings'), \
        json_extract(value, '$.now_ms'), json_extract(value, '$.now_ms'), \
        json_extract(value, '$.dataset_id'), json_extract(value, '$.schedule_id'), \
        json_extract(value, '$.delta_key') \
        FROM json_each($1) ORDER BY key \
        RETURNING id",
    insert_export_batches: "INSERT INTO batches (id, org, sandbox, dataset_id, kind, status, \
        job_id, input_format, multiline_json, created_ms, updated_ms) \
        SELECT json_extract(value, '$.id'), json_extract(value, '$.org'), \
        json_extract(value, '$.sandbox'), json_extract(value, '$.dataset_id'), \
        json_extract(value, '$.kind'), json_extract(value, '$.status'), \
        json_extract(value, '$.job_id'), json_extract(value, '$.input_format'), 0, \
        json_extract(value, '$.now_ms'), json_extract(value, '$.now_ms') \
        FROM json_each($1) ORDER BY key",
    insert_export_tasks: "INSERT INTO tasks (kind, org, sandbox, job_id, state, created_ms, \
        updated_ms) \
        SELECT json_extract(value, '$.kind'), json_extract(value, '$.org'), \
        json_extract(value, '$.sandbox'), json_extract(value, '$.job_id'), \
        json_extract(value, '$.state'), json_extract(value, '$.now_ms'), \
        json_extract(value, '$.now_ms') \
        FROM json_each($1) ORDER BY key",
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
