//! The SQL both backends share, the rows it reads, and the one `Catalog` implementation that
//! [`impl_catalog!`] stamps out for each backend's pool type.
//!
//! PostgreSQL and SQLite accept the same DML here: `$N` placeholders, row-value comparisons,
//! `RETURNING` and `ON CONFLICT`. Only the DDL (in `migrations/`) and connection setup differ, so
//! the statements live once, as constants a reader can find, and a macro instantiates the code
//! that binds them for `sqlx::PgPool` and `sqlx::SqlitePool`.

use std::collections::BTreeMap;

use segport_model::batch::{Batch, BatchError, BatchKind, BatchStatus};
use segport_model::dataset::{Dataset, DatasetClass, SchemaRef};
use segport_model::job::{ExportJobRecord, JobStatus};
use segport_model::merge_policy::MergePolicy;
use segport_model::{BatchId, DatasetId};

use crate::{CatalogError, Result, TokenRecord};

/// The columns of a job row, `merge_policy` (the resolved policy's body) taken from `$policy`.
macro_rules! job_columns {
    ($policy:literal) => {
        concat!(
            "id, org, sandbox, status, spec, ",
            $policy,
            " AS merge_policy, errors, warnings, progress, counters, attempt, attempt_id, \
             cancel_requested, request_id, creation_ms, update_ms, started_ms, finished_ms"
        )
    };
}
/// A whole job row, the policy's body included (one job, for its worker or its page).
pub(crate) const JOB_COLUMNS: &str = job_columns!("merge_policy");
/// A job row as lists show it: the policy's body stays in the table (a job shows the policy's
/// id and version from its spec, and a body can run to the size of a 1,000-dataset `order`).
pub(crate) const LISTED_JOB_COLUMNS: &str = job_columns!("CAST(NULL AS TEXT)");

/// Statements that differ between the backends: PostgreSQL row locks, which SQLite (one writer at
/// a time) does not need.
pub(crate) struct Dialect {
    /// Claims the oldest queued task: `$1` attempt id, `$2` owner, `$3` lease expiry, `$4` now.
    pub claim_task: &'static str,
    /// Locks a merge policy against deletion while a job that uses it is inserted; yields its
    /// version.
    pub lock_policy_shared: &'static str,
    /// Locks a merge policy for deletion, waiting for jobs being inserted with it.
    pub lock_policy_exclusive: &'static str,
    /// Locks ingest batch `$3` of tenant (`$1`, `$2`) while it is `loading` (yields its id).
    pub lock_loading_batch: &'static str,
    /// Locks the task of export job `$1`. Every transaction that changes a task and its job
    /// takes the task first (claims, heartbeats, commits, the reaper), so a cancel does too:
    /// taking them the other way round deadlocks against a concurrent claim.
    pub lock_job_task: &'static str,
}

/// Serialises changes to one sandbox's merge policies and store (a row lock on PostgreSQL; SQLite
/// has one writer anyway).
pub(crate) const LOCK_SANDBOX: &str =
    "UPDATE sandboxes SET created_ms = created_ms WHERE org = $1 AND sandbox = $2";

pub(crate) const INSERT_SANDBOX: &str =
    "INSERT INTO sandboxes (org, sandbox, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

pub(crate) const INSERT_DATASET: &str = "INSERT INTO datasets \
     (id, org, sandbox, name, description, schema_ref, class, tags, created_ms, updated_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub(crate) const UPDATE_DATASET: &str = "UPDATE datasets SET name = $4, description = $5, \
     tags = $6, updated_ms = $7 WHERE org = $1 AND sandbox = $2 AND id = $3";
pub(crate) const SELECT_DATASET: &str =
    "SELECT * FROM datasets WHERE org = $1 AND sandbox = $2 AND id = $3";
pub(crate) const LIST_DATASETS: &str = "SELECT * FROM datasets WHERE org = $1 AND sandbox = $2 \
     ORDER BY created_ms, id LIMIT $3 OFFSET $4";

/// The start of an insert into `batches`: its columns, in the order values are bound.
macro_rules! insert_batches {
    () => {
        "INSERT INTO batches (id, org, sandbox, dataset_id, kind, status, job_id, input_format, \
         multiline_json, created_ms, updated_ms) "
    };
}
pub(crate) const INSERT_BATCH: &str =
    concat!(insert_batches!(), "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
pub(crate) const SELECT_BATCH: &str =
    "SELECT * FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3";
/// `$3`/`$4` are optional filters, passed as NULL when absent.
pub(crate) const LIST_BATCHES: &str = "SELECT * FROM batches WHERE org = $1 AND sandbox = $2 \
     AND ($3 IS NULL OR dataset_id = $3) \
     AND ($4 IS NULL OR (status = $4 AND reverted_ms IS NULL) \
          OR ($4 = 'reverted' AND reverted_ms IS NOT NULL)) \
     ORDER BY created_ms, id LIMIT $5 OFFSET $6";
pub(crate) const FAIL_JOB_BATCHES: &str = "UPDATE batches SET status = 'failed', updated_ms = $2, \
     completed_ms = $2 WHERE job_id = $1 AND status IN ('loading', 'staging')";

pub(crate) const INSERT_POLICY: &str = "INSERT INTO merge_policies \
     (org, sandbox, id, version, is_default, body, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const SELECT_POLICY: &str = "SELECT version, is_default, body FROM merge_policies \
     WHERE org = $1 AND sandbox = $2 AND id = $3";
pub(crate) const SELECT_DEFAULT_POLICY: &str = "SELECT version, is_default, body \
     FROM merge_policies WHERE org = $1 AND sandbox = $2 AND is_default = $3";
pub(crate) const LIST_POLICIES: &str = "SELECT version, is_default, body FROM merge_policies \
     WHERE org = $1 AND sandbox = $2 ORDER BY created_ms, id LIMIT $3 OFFSET $4";
pub(crate) const CLEAR_DEFAULT_POLICY: &str = "UPDATE merge_policies SET is_default = $3 \
     WHERE org = $1 AND sandbox = $2 AND is_default = $4";
pub(crate) const UPDATE_POLICY: &str = "UPDATE merge_policies SET version = $4, is_default = $5, \
     body = $6 WHERE org = $1 AND sandbox = $2 AND id = $3 AND version = $7";
pub(crate) const DELETE_POLICY: &str =
    "DELETE FROM merge_policies WHERE org = $1 AND sandbox = $2 AND id = $3";
pub(crate) const POLICY_IN_USE: &str = "SELECT COUNT(*) FROM export_jobs \
     WHERE org = $1 AND sandbox = $2 AND merge_policy_id = $3 AND status IN ('NEW', 'PROCESSING')";

/// Rows per multi-row insert: far below either backend's limit of bound parameters.
pub(crate) const ROWS_PER_INSERT: usize = 256;
/// Followed by the VALUES of each job (`QueryBuilder::push_values`) and `RETURNING id`.
pub(crate) const INSERT_JOBS: &str = "INSERT INTO export_jobs \
     (org, sandbox, status, spec, merge_policy_id, merge_policy, request_id, warnings, creation_ms, \
     update_ms) ";
/// Followed by the VALUES of each batch.
pub(crate) const INSERT_BATCHES: &str = insert_batches!();
pub(crate) const CANCEL_NEW_JOB: &str = "UPDATE export_jobs SET status = 'FAILED', errors = $4, \
     cancel_requested = $5, finished_ms = $6, update_ms = $6 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND status = 'NEW'";
pub(crate) const FLAG_RUNNING_JOB: &str = "UPDATE export_jobs SET cancel_requested = $4, \
     update_ms = $5 WHERE org = $1 AND sandbox = $2 AND id = $3 AND status = 'PROCESSING'";
pub(crate) const DELETE_FINISHED_JOB: &str = "DELETE FROM export_jobs \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND status IN ('SUCCEEDED', 'FAILED')";
/// Jobs by tenant and status, from the maintained counts (migration 0007): the folded counts
/// plus the deltas not folded yet; tenants and statuses with none left out.
pub(crate) const COUNT_JOBS: &str = "SELECT org, sandbox, status, CAST(SUM(n) AS BIGINT) AS n \
     FROM (SELECT org, sandbox, status, n FROM job_counts \
     UNION ALL SELECT org, sandbox, status, n FROM job_count_deltas) c \
     GROUP BY org, sandbox, status HAVING SUM(n) <> 0 ORDER BY org, sandbox, status";
/// Takes the deltas up to id `$1` (each fold takes its own: concurrent folds never count one
/// twice).
pub(crate) const TAKE_JOB_COUNT_DELTAS: &str =
    "DELETE FROM job_count_deltas WHERE id <= $1 RETURNING org, sandbox, status, n";
pub(crate) const LAST_JOB_COUNT_DELTA: &str = "SELECT MAX(id) FROM job_count_deltas";
pub(crate) const ADD_JOB_COUNT: &str = "INSERT INTO job_counts (org, sandbox, status, n) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (org, sandbox, status) \
     DO UPDATE SET n = job_counts.n + excluded.n";

pub(crate) const INSERT_TOKEN: &str = "INSERT INTO api_tokens \
     (id, org, token_sha256, created_ms, expires_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const LIST_TOKENS: &str = "SELECT * FROM api_tokens ORDER BY created_ms, id";
pub(crate) const SELECT_TOKEN: &str = "SELECT * FROM api_tokens WHERE token_sha256 = $1";
pub(crate) const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL";

pub(crate) const SELECT_STORE_STATE: &str = "SELECT partitions, commit_seq, last_ingest_ms, \
     profile_schema, event_schema, schema_version FROM sandboxes WHERE org = $1 AND sandbox = $2";
pub(crate) const SELECT_COMMIT_SEQ: &str = "SELECT commit_seq, profile_schema, event_schema \
     FROM sandboxes WHERE org = $1 AND sandbox = $2";
/// Records the current commit sequence as the task's snapshot, and reads the schemas of that
/// commit, in one statement so that no commit can slip between reading and recording them.
pub(crate) const REGISTER_SNAPSHOT: &str = "UPDATE tasks SET snapshot_seq = \
     (SELECT commit_seq FROM sandboxes WHERE org = $3 AND sandbox = $4) \
     WHERE id = $1 AND attempt_id = $2 AND state = 'running' RETURNING snapshot_seq, \
     (SELECT profile_schema FROM sandboxes WHERE org = $3 AND sandbox = $4), \
     (SELECT event_schema FROM sandboxes WHERE org = $3 AND sandbox = $4)";
/// A union schema without fields, as the catalog stores it (the columns' default).
pub(crate) const EMPTY_SCHEMA: &str = r#"{"fields":{}}"#;
/// The held schemas of the successful ingest batches of live datasets of a class.
pub(crate) const HELD_SCHEMAS: &str = "SELECT b.held_schema FROM batches b \
     JOIN datasets d ON d.id = b.dataset_id \
     WHERE d.org = $1 AND d.sandbox = $2 AND d.class = $3 AND b.kind = 'ingest' \
     AND b.status = 'success' AND b.reverted_ms IS NULL";
pub(crate) const SELECT_SCHEMA_VERSION: &str = "SELECT schema_version, profile_schema, \
     event_schema, released_version FROM sandboxes WHERE org = $1 AND sandbox = $2";
pub(crate) const RELEASE_SCHEMA: &str = "UPDATE sandboxes SET \
     profile_schema = CASE WHEN $3 = 'profile' THEN $4 ELSE profile_schema END, \
     event_schema = CASE WHEN $3 = 'event' THEN $4 ELSE event_schema END, \
     schema_version = schema_version + 1, released_version = schema_version + 1 \
     WHERE org = $1 AND sandbox = $2";
pub(crate) const SNAPSHOT_FILES: &str =
    "SELECT id, dataset_id, kind, partition_no, path, batch_id, \
     ingest_ms, seq, row_count, byte_count, min_key, max_key FROM store_files \
     WHERE org = $1 AND sandbox = $2 AND seq <= $3 AND (removed_seq IS NULL OR removed_seq > $3) \
     ORDER BY dataset_id, partition_no, seq, id";
/// Takes the sandbox's commit lock and the next commit sequence number.
pub(crate) const NEXT_COMMIT: &str = "UPDATE sandboxes SET commit_seq = commit_seq + 1 \
     WHERE org = $1 AND sandbox = $2 RETURNING commit_seq, last_ingest_ms, schema_version";
pub(crate) const RECORD_INGEST: &str = "UPDATE sandboxes SET last_ingest_ms = $3, \
     profile_schema = CASE WHEN $4 = 'profile' THEN COALESCE($5, profile_schema) ELSE profile_schema END, \
     event_schema = CASE WHEN $4 = 'event' THEN COALESCE($5, event_schema) ELSE event_schema END, \
     schema_version = schema_version + CASE WHEN $5 IS NULL THEN 0 ELSE 1 END \
     WHERE org = $1 AND sandbox = $2";
pub(crate) const INSERT_STORE_FILE: &str =
    "INSERT INTO store_files (org, sandbox, dataset_id, kind, \
     partition_no, path, batch_id, ingest_ms, seq, row_count, byte_count, min_key, max_key) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
pub(crate) const REMOVE_STORE_FILE: &str =
    "UPDATE store_files SET removed_seq = $4, removed_ms = $5 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND removed_seq IS NULL";
pub(crate) const REMOVE_DATASET_FILES: &str = "UPDATE store_files SET removed_seq = $4, \
     removed_ms = $5 WHERE org = $1 AND sandbox = $2 AND dataset_id = $3 AND removed_seq IS NULL";
pub(crate) const LIST_SANDBOXES: &str = "SELECT org, sandbox FROM sandboxes ORDER BY org, sandbox";
pub(crate) const STORE_PATHS: &str = "SELECT path FROM store_files WHERE org = $1 AND sandbox = $2";
pub(crate) const COLLECTABLE_FILES: &str = "SELECT f.id, f.path FROM store_files f \
     WHERE f.removed_seq IS NOT NULL AND f.removed_ms < $1 AND NOT EXISTS (SELECT 1 FROM tasks t \
     WHERE t.state = 'running' AND t.org = f.org AND t.sandbox = f.sandbox \
     AND t.snapshot_seq IS NOT NULL AND t.snapshot_seq < f.removed_seq) ORDER BY f.id LIMIT 1000";
pub(crate) const FORGET_FILE: &str = "DELETE FROM store_files WHERE id = $1";
pub(crate) const FINISH_INGEST_BATCH: &str = "UPDATE batches SET status = $2, record_count = $3, \
     failed_record_count = $4, errors = $5, completed_ms = $6, updated_ms = $7, \
     held_schema = $8, commit_seq = $9 WHERE id = $1";
/// The commit a successful, not reverted ingest batch stored its records at.
pub(crate) const REVERTIBLE_BATCH: &str = "SELECT b.dataset_id, b.commit_seq, \
     (SELECT MIN(f.seq) FROM store_files f WHERE f.batch_id = b.id) FROM batches b \
     WHERE b.org = $1 AND b.sandbox = $2 AND b.id = $3 AND b.kind = 'ingest' \
     AND b.status = 'success' AND b.reverted_ms IS NULL";
/// Live compacted files of a dataset made after commit `$4`: the ones that may hold its rows.
pub(crate) const COMPACTED_SINCE: &str = "SELECT id, dataset_id, kind, partition_no, path, \
     batch_id, ingest_ms, seq, row_count, byte_count, min_key, max_key FROM store_files \
     WHERE org = $1 AND sandbox = $2 AND dataset_id = $3 AND batch_id IS NULL \
     AND removed_seq IS NULL AND seq > $4 ORDER BY id";
pub(crate) const REMOVE_BATCH_FILES: &str = "UPDATE store_files SET removed_seq = $4, \
     removed_ms = $5 WHERE org = $1 AND sandbox = $2 AND batch_id = $3 AND removed_seq IS NULL";
pub(crate) const MARK_REVERTED: &str = "UPDATE batches SET reverted_ms = $4, updated_ms = $4 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND status = 'success' AND reverted_ms IS NULL";

pub(crate) const SELECT_UPLOAD: &str =
    "SELECT name, object, bytes, uploaded_ms FROM batch_uploads \
     WHERE batch_id = $1 AND name = $2";
pub(crate) const UPSERT_UPLOAD: &str = "INSERT INTO batch_uploads \
     (batch_id, name, object, bytes, uploaded_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (batch_id, name) DO UPDATE SET object = excluded.object, bytes = excluded.bytes, \
     uploaded_ms = excluded.uploaded_ms";
pub(crate) const LIST_UPLOADS: &str = "SELECT name, object, bytes, uploaded_ms FROM batch_uploads \
     WHERE batch_id = $1 ORDER BY name";
pub(crate) const MOVE_BATCH: &str = "UPDATE batches SET status = $5, updated_ms = $6 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND kind = 'ingest' AND status = $4";
pub(crate) const BATCH_STATE: &str =
    "SELECT kind, status FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3";
/// Followed by the VALUES of each task.
pub(crate) const INSERT_EXPORT_TASKS: &str =
    "INSERT INTO tasks (kind, org, sandbox, job_id, state, created_ms, updated_ms) ";
pub(crate) const FAIL_QUEUED_JOB_TASK: &str =
    "UPDATE tasks SET state = 'failed', updated_ms = $2 WHERE job_id = $1 AND state = 'queued'";
pub(crate) const START_JOB: &str =
    "UPDATE export_jobs SET status = 'PROCESSING', attempt_id = $2, \
     attempt = $3, started_ms = COALESCE(started_ms, $4), update_ms = $4 \
     WHERE id = $1 AND status IN ('NEW', 'PROCESSING')";
pub(crate) const REQUEUE_JOB: &str =
    "UPDATE export_jobs SET status = 'NEW', progress = NULL, update_ms = $2 WHERE id = $1 AND status = 'PROCESSING'";
pub(crate) const FAIL_JOB: &str = "UPDATE export_jobs SET status = 'FAILED', errors = $2, \
     progress = NULL, finished_ms = $3, update_ms = $3 WHERE id = $1 AND status IN ('NEW', 'PROCESSING')";
pub(crate) const SUCCEED_JOB: &str = "UPDATE export_jobs SET status = 'SUCCEEDED', counters = $2, \
     warnings = $3, progress = NULL, finished_ms = $4, update_ms = $4 WHERE id = $1 AND status = 'PROCESSING'";
pub(crate) const JOB_PROGRESS: &str = "UPDATE export_jobs SET progress = $3, update_ms = $4 \
     WHERE id = $1 AND attempt_id = $2 AND status = 'PROCESSING'";
pub(crate) const SUCCEED_BATCH: &str = "UPDATE batches SET status = 'success', record_count = $2, \
     failed_record_count = 0, completed_ms = $3, updated_ms = $3 WHERE id = $1";
pub(crate) const INSERT_BATCH_FILE: &str = "INSERT INTO batch_files \
     (batch_id, name, path, row_count, byte_count, created_ms) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const LIST_BATCH_FILES: &str = "SELECT f.name, f.path, f.row_count, f.byte_count \
     FROM batch_files f JOIN batches b ON b.id = f.batch_id \
     WHERE b.org = $1 AND b.sandbox = $2 AND f.batch_id = $3 ORDER BY f.name";
pub(crate) const INSERT_INGEST_TASK: &str =
    "INSERT INTO tasks (kind, org, sandbox, batch_id, state, \
     created_ms, updated_ms) VALUES ('ingest', $1, $2, $3, 'queued', $4, $4)";
pub(crate) const DATASET_BUSY: &str = "SELECT \
     (SELECT COUNT(*) FROM tasks t JOIN batches b ON t.batch_id = b.id \
      WHERE b.dataset_id = $1 AND t.state IN ('queued', 'running')) + \
     (SELECT COUNT(*) FROM batches b JOIN export_jobs j ON j.id = b.job_id \
      WHERE b.dataset_id = $1 AND j.status IN ('NEW', 'PROCESSING'))";
pub(crate) const DATASET_BATCHES: &str = "SELECT id FROM batches WHERE dataset_id = $1";
pub(crate) const BATCH_KIND_STATUS: &str =
    "SELECT kind, status FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3";
/// Only a finished export batch goes; the condition is repeated here so that a batch whose
/// state changed since it was read is left alone.
pub(crate) const DELETE_EXPORT_BATCH: &str = "DELETE FROM batches WHERE org = $1 AND sandbox = $2 \
     AND id = $3 AND kind = 'export' AND status IN ('success', 'failed')";
pub(crate) const EXPIRED_EXPORT_BATCHES: &str = "SELECT org, sandbox, id FROM batches \
     WHERE kind = 'export' AND status IN ('success', 'failed') AND completed_ms < $1 \
     ORDER BY completed_ms, id LIMIT $2";
pub(crate) const DELETE_DATASET: &str =
    "DELETE FROM datasets WHERE org = $1 AND sandbox = $2 AND id = $3";

pub(crate) const HEARTBEAT: &str = "UPDATE tasks SET lease_expires_ms = $3, updated_ms = $4 \
     WHERE id = $1 AND attempt_id = $2 AND state = 'running' RETURNING job_id";
pub(crate) const JOB_CANCEL_FLAG: &str = "SELECT cancel_requested FROM export_jobs WHERE id = $1";
pub(crate) const RELEASE_TASK: &str = "UPDATE tasks SET state = 'queued', attempt = attempt - 1, \
     lease_owner = NULL, lease_expires_ms = NULL, snapshot_seq = NULL, updated_ms = $3 \
     WHERE id = $1 AND attempt_id = $2 AND state = 'running'";
pub(crate) const FAIL_TASK: &str = "UPDATE tasks SET state = 'failed', lease_owner = NULL, \
     lease_expires_ms = NULL, updated_ms = $3 WHERE id = $1 AND attempt_id = $2 \
     AND state = 'running' RETURNING batch_id, job_id";
pub(crate) const FINISH_TASK: &str = "UPDATE tasks SET state = 'done', lease_owner = NULL, \
     lease_expires_ms = NULL, updated_ms = $3 WHERE id = $1 AND attempt_id = $2 AND state = 'running'";
pub(crate) const FAIL_BATCH: &str = "UPDATE batches SET status = 'failed', errors = $2, \
     updated_ms = $3 WHERE id = $1";
pub(crate) const REAP_TASKS: &str = "UPDATE tasks SET \
     state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'queued' END, \
     lease_owner = NULL, lease_expires_ms = NULL, snapshot_seq = NULL, updated_ms = $1 \
     WHERE state = 'running' AND lease_expires_ms < $1 RETURNING id, kind, state, batch_id, job_id";
/// Claims the queued task of one batch (for `segport ingest`, which runs its own task).
pub(crate) const CLAIM_BATCH_TASK: &str = "UPDATE tasks SET state = 'running', attempt = attempt + 1, \
     attempt_id = $1, lease_owner = $2, lease_expires_ms = $3, snapshot_seq = NULL, updated_ms = $4 \
     WHERE batch_id = $5 AND state = 'queued' \
     RETURNING id, kind, org, sandbox, batch_id, job_id, attempt, attempt_id";
pub(crate) const RUNNING_ATTEMPTS: &str =
    "SELECT attempt_id FROM tasks WHERE state = 'running' AND attempt_id IS NOT NULL";

/// `SELECT … FROM export_jobs` for one page, with or without a status filter. The keyset
/// comparison `(creation_ms, id) < (…)` walks the `(org, sandbox[, status], creation_ms DESC,
/// id DESC)` index, so a deep page costs what the first one does.
pub(crate) fn list_jobs_sql(with_status: bool) -> String {
    let status = if with_status { "AND status = $5 " } else { "" };
    let limit = if with_status { "$6 OFFSET $7" } else { "$5 OFFSET $6" };
    format!(
        "SELECT {LISTED_JOB_COLUMNS} FROM export_jobs WHERE org = $1 AND sandbox = $2 \
         AND (creation_ms, id) < ($3, $4) {status}ORDER BY creation_ms DESC, id DESC LIMIT {limit}"
    )
}

pub(crate) fn select_job_sql() -> String {
    format!("SELECT {JOB_COLUMNS} FROM export_jobs WHERE org = $1 AND sandbox = $2 AND id = $3")
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> CatalogError {
    CatalogError::Corrupt(format!("{what}: {detail}"))
}

fn json_or_default<T: serde::de::DeserializeOwned + Default>(text: Option<&str>) -> Result<T> {
    match text {
        None => Ok(T::default()),
        Some(t) => Ok(serde_json::from_str(t)?),
    }
}

/// A row of `batch_uploads`.
pub(crate) type UploadRow = (String, Option<String>, i64, i64);

impl From<UploadRow> for crate::Upload {
    fn from((name, object, bytes, uploaded_ms): UploadRow) -> Self {
        Self { name, object, bytes, uploaded_ms }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    org: String,
    sandbox: String,
    status: String,
    spec: String,
    /// `None` in lists ([`LISTED_JOB_COLUMNS`]).
    merge_policy: Option<String>,
    errors: Option<String>,
    warnings: Option<String>,
    progress: Option<String>,
    counters: Option<String>,
    attempt: i32,
    attempt_id: String,
    cancel_requested: bool,
    request_id: String,
    creation_ms: i64,
    update_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
}

impl TryFrom<JobRow> for ExportJobRecord {
    type Error = CatalogError;
    fn try_from(row: JobRow) -> Result<Self> {
        Ok(ExportJobRecord {
            id: row.id,
            status: row
                .status
                .parse::<JobStatus>()
                .map_err(|e| corrupt("export_jobs.status", e))?,
            spec: serde_json::from_str(&row.spec)?,
            merge_policy: row.merge_policy.as_deref().map(serde_json::from_str).transpose()?,
            errors: json_or_default(row.errors.as_deref())?,
            warnings: json_or_default(row.warnings.as_deref())?,
            progress: row.progress.as_deref().map(serde_json::from_str).transpose()?,
            counters: row.counters.as_deref().map(serde_json::from_str).transpose()?,
            org: row.org,
            sandbox: row.sandbox,
            attempt_id: row.attempt_id,
            attempt: row.attempt,
            cancel_requested: row.cancel_requested,
            request_id: row.request_id,
            creation_ms: row.creation_ms,
            update_ms: row.update_ms,
            started_ms: row.started_ms,
            finished_ms: row.finished_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DatasetRow {
    id: String,
    org: String,
    sandbox: String,
    name: String,
    description: Option<String>,
    schema_ref: String,
    class: String,
    tags: String,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<DatasetRow> for Dataset {
    type Error = CatalogError;
    fn try_from(row: DatasetRow) -> Result<Self> {
        Ok(Dataset {
            id: DatasetId::parse(&row.id).map_err(|e| corrupt("datasets.id", e))?,
            class: DatasetClass::parse(&row.class)
                .ok_or_else(|| corrupt("datasets.class", &row.class))?,
            schema_ref: serde_json::from_str::<SchemaRef>(&row.schema_ref)?,
            tags: serde_json::from_str::<BTreeMap<String, Vec<String>>>(&row.tags)?,
            org: row.org,
            sandbox: row.sandbox,
            name: row.name,
            description: row.description,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StoreFileRow {
    pub(crate) id: i64,
    dataset_id: String,
    kind: String,
    partition_no: i32,
    path: String,
    batch_id: Option<String>,
    ingest_ms: Option<i64>,
    seq: i64,
    row_count: i64,
    byte_count: i64,
    min_key: String,
    max_key: String,
}

impl TryFrom<StoreFileRow> for crate::StoreFile {
    type Error = CatalogError;
    fn try_from(row: StoreFileRow) -> Result<Self> {
        Ok(crate::StoreFile {
            id: row.id,
            kind: crate::StoreKind::parse(&row.kind)
                .ok_or_else(|| corrupt("store_files.kind", &row.kind))?,
            partition: u32::try_from(row.partition_no)
                .map_err(|e| corrupt("store_files.partition_no", e))?,
            dataset_id: row.dataset_id,
            path: row.path,
            batch_id: row.batch_id,
            ingest_ms: row.ingest_ms,
            seq: row.seq,
            rows: row.row_count,
            bytes: row.byte_count,
            min_key: row.min_key,
            max_key: row.max_key,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StoreStateRow {
    partitions: i32,
    commit_seq: i64,
    last_ingest_ms: i64,
    profile_schema: String,
    event_schema: String,
    schema_version: i64,
}

impl TryFrom<StoreStateRow> for crate::StoreState {
    type Error = CatalogError;
    fn try_from(row: StoreStateRow) -> Result<Self> {
        Ok(crate::StoreState {
            partitions: u32::try_from(row.partitions)
                .map_err(|e| corrupt("sandboxes.partitions", e))?,
            commit_seq: row.commit_seq,
            last_ingest_ms: row.last_ingest_ms,
            profile_schema: row.profile_schema,
            event_schema: row.event_schema,
            schema_version: row.schema_version,
        })
    }
}

pub(crate) fn task_kind(kind: &str) -> Result<crate::TaskKind> {
    match kind {
        "ingest" => Ok(crate::TaskKind::Ingest),
        "export" => Ok(crate::TaskKind::Export),
        other => Err(corrupt("tasks.kind", other)),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    id: i64,
    kind: String,
    org: String,
    sandbox: String,
    batch_id: Option<String>,
    job_id: Option<i64>,
    attempt: i32,
    attempt_id: Option<String>,
}

impl TryFrom<ClaimRow> for crate::ClaimedTask {
    type Error = CatalogError;
    fn try_from(row: ClaimRow) -> Result<Self> {
        Ok(crate::ClaimedTask {
            lease: crate::TaskLease {
                task_id: row.id,
                attempt_id: row.attempt_id.ok_or_else(|| corrupt("tasks.attempt_id", "null"))?,
            },
            kind: task_kind(&row.kind)?,
            tenant: segport_model::Tenant::parse(&row.org, &row.sandbox)
                .map_err(|e| corrupt("tasks.org/sandbox", e))?,
            batch_id: row
                .batch_id
                .map(|b| BatchId::parse(&b).map_err(|e| corrupt("tasks.batch_id", e)))
                .transpose()?,
            job_id: row.job_id,
            attempt: row.attempt,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BatchRow {
    id: String,
    org: String,
    sandbox: String,
    dataset_id: String,
    kind: String,
    status: String,
    job_id: Option<i64>,
    input_format: Option<String>,
    multiline_json: bool,
    record_count: Option<i64>,
    failed_record_count: Option<i64>,
    errors: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    completed_ms: Option<i64>,
    /// Set once a successful batch is reverted (its status column stays `success`).
    #[sqlx(default)]
    reverted_ms: Option<i64>,
}

impl TryFrom<BatchRow> for Batch {
    type Error = CatalogError;
    fn try_from(row: BatchRow) -> Result<Self> {
        Ok(Batch {
            id: BatchId::parse(&row.id).map_err(|e| corrupt("batches.id", e))?,
            dataset_id: DatasetId::parse(&row.dataset_id)
                .map_err(|e| corrupt("batches.dataset_id", e))?,
            kind: BatchKind::parse(&row.kind).ok_or_else(|| corrupt("batches.kind", &row.kind))?,
            status: match row.reverted_ms {
                Some(_) => BatchStatus::Reverted,
                None => {
                    BatchStatus::parse(&row.status).map_err(|e| corrupt("batches.status", e))?
                }
            },
            errors: json_or_default::<Vec<BatchError>>(row.errors.as_deref())?,
            org: row.org,
            sandbox: row.sandbox,
            job_id: row.job_id,
            input_format: row.input_format,
            multiline_json: row.multiline_json,
            record_count: row.record_count,
            failed_record_count: row.failed_record_count,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            completed_ms: row.completed_ms,
        })
    }
}

/// A merge policy row: the body is the source of truth but for `version` and `default`, which
/// live in columns so that switching defaults and bumping versions are plain updates.
#[derive(sqlx::FromRow)]
pub(crate) struct PolicyRow {
    version: i64,
    pub(crate) is_default: bool,
    body: String,
}

impl TryFrom<PolicyRow> for MergePolicy {
    type Error = CatalogError;
    fn try_from(row: PolicyRow) -> Result<Self> {
        let mut policy: MergePolicy = serde_json::from_str(&row.body)?;
        policy.version = row.version;
        policy.default = row.is_default;
        Ok(policy)
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: String,
    org: String,
    token_sha256: String,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked_ms: Option<i64>,
}

impl From<TokenRow> for TokenRecord {
    fn from(row: TokenRow) -> Self {
        TokenRecord {
            id: row.id,
            org: row.org,
            token_sha256: row.token_sha256,
            created_ms: row.created_ms,
            expires_ms: row.expires_ms,
            revoked_ms: row.revoked_ms,
        }
    }
}

pub(crate) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = CatalogError>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// Converts a page size or offset for binding; both backends take BIGINT.
pub(crate) fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Implements [`crate::Catalog`] for a backend struct that has `read()` and `write()` pool
/// accessors, a `run_migrations()` method and a `sandboxes: SandboxCache` field.
macro_rules! impl_catalog {
    ($catalog:ty, $db:ty, $backend:expr, $dialect:expr) => {
        impl $catalog {
            const DIALECT: $crate::sql::Dialect = $dialect;

            /// The version of merge policy `id` of `tenant`, locked against deletion until
            /// `tx` ends (the delete waits for this lock, then sees the jobs inserted with it);
            /// `None` when it is gone.
            async fn lock_policy(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant: &segport_model::Tenant,
                id: &str,
            ) -> $crate::Result<Option<i64>> {
                let policy: Option<(i64,)> = sqlx::query_as(Self::DIALECT.lock_policy_shared)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(policy.map(|(v,)| v))
            }

            /// Inserts `jobs` (their merge policies checked), their destination batches and
            /// their tasks inside `tx`: three multi-row statements, however many jobs, so that a
            /// group of creates costs three round trips rather than three per job. Yields the
            /// jobs' ids, in order.
            async fn insert_export_jobs(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &[(&segport_model::Tenant, &$crate::NewExportJob)],
            ) -> $crate::Result<Vec<i64>> {
                let mut ids = Vec::with_capacity(jobs.len());
                for chunk in jobs.chunks($crate::sql::ROWS_PER_INSERT) {
                    let texts = chunk
                        .iter()
                        .map(|(_, job)| {
                            Ok((
                                serde_json::to_string(&job.spec)?,
                                serde_json::to_string(&job.merge_policy)?,
                                (!job.warnings.is_empty())
                                    .then(|| serde_json::to_string(&job.warnings))
                                    .transpose()?,
                            ))
                        })
                        .collect::<$crate::Result<Vec<_>>>()?;
                    let mut insert = sqlx::QueryBuilder::<$db>::new($crate::sql::INSERT_JOBS);
                    insert.push_values(
                        chunk.iter().zip(&texts),
                        |mut row, ((tenant, job), text)| {
                            row.push_bind(tenant.org.as_str())
                                .push_bind(tenant.sandbox.as_str())
                                .push_bind(segport_model::job::JobStatus::New.as_str())
                                .push_bind(text.0.as_str())
                                .push_bind(job.merge_policy.id.as_str())
                                .push_bind(text.1.as_str())
                                .push_bind(job.request_id.as_str())
                                .push_bind(text.2.as_deref())
                                .push_bind(job.now_ms)
                                .push_bind(job.now_ms);
                        },
                    );
                    insert.push(" RETURNING id");
                    // Statements of every group size would crowd the connection's statement
                    // cache: these are not kept.
                    let mut inserted: Vec<i64> =
                        insert.build_query_scalar().persistent(false).fetch_all(&mut **tx).await?;
                    // The ids come from a sequence (PostgreSQL) or the rowid (SQLite), drawn
                    // row by row as the VALUES are inserted, so they ascend in the VALUES'
                    // order; RETURNING does not promise an order, sorting restores it.
                    inserted.sort_unstable();
                    if inserted.len() != chunk.len() {
                        return Err($crate::CatalogError::Conflict(format!(
                            "{} of {} jobs were inserted",
                            inserted.len(),
                            chunk.len()
                        )));
                    }
                    ids.extend(inserted);
                }
                let batches: Vec<_> = jobs
                    .iter()
                    .zip(&ids)
                    .flat_map(|((tenant, job), id)| {
                        job.spec
                            .destination
                            .batch_ids()
                            .into_iter()
                            .map(move |b| (*tenant, *job, *id, b))
                    })
                    .collect();
                for chunk in batches.chunks($crate::sql::ROWS_PER_INSERT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new($crate::sql::INSERT_BATCHES);
                    insert.push_values(chunk, |mut row, (tenant, job, id, batch)| {
                        row.push_bind(batch.as_str())
                            .push_bind(tenant.org.as_str())
                            .push_bind(tenant.sandbox.as_str())
                            .push_bind(job.spec.destination.dataset_id.as_str())
                            .push_bind(segport_model::batch::BatchKind::Export.as_str())
                            .push_bind(segport_model::batch::BatchStatus::Loading.as_str())
                            .push_bind(*id)
                            .push_bind("parquet")
                            .push_bind(false)
                            .push_bind(job.now_ms)
                            .push_bind(job.now_ms);
                    });
                    insert.build().persistent(false).execute(&mut **tx).await?;
                }
                for (chunk, ids) in jobs
                    .chunks($crate::sql::ROWS_PER_INSERT)
                    .zip(ids.chunks($crate::sql::ROWS_PER_INSERT))
                {
                    let mut insert =
                        sqlx::QueryBuilder::<$db>::new($crate::sql::INSERT_EXPORT_TASKS);
                    insert.push_values(chunk.iter().zip(ids), |mut row, ((tenant, job), id)| {
                        row.push_bind("export")
                            .push_bind(tenant.org.as_str())
                            .push_bind(tenant.sandbox.as_str())
                            .push_bind(*id)
                            .push_bind("queued")
                            .push_bind(job.now_ms)
                            .push_bind(job.now_ms);
                    });
                    insert.build().persistent(false).execute(&mut **tx).await?;
                }
                Ok(ids)
            }

            /// Inserts `jobs` inside `tx`, each whose merge policy still exists at the version
            /// it resolved (each distinct policy is looked up and locked once). A job whose
            /// policy changed or went fails alone; any other error fails them all.
            async fn insert_checked_jobs(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &[(segport_model::Tenant, $crate::NewExportJob)],
            ) -> $crate::Result<Vec<$crate::Result<segport_model::job::ExportJobRecord>>> {
                let mut versions = std::collections::HashMap::new();
                let mut accepted = Vec::with_capacity(jobs.len());
                let mut out: Vec<Option<$crate::Result<_>>> = Vec::with_capacity(jobs.len());
                for (tenant, job) in jobs {
                    let policy = (tenant, job.merge_policy.id.as_str());
                    let version = match versions.get(&policy) {
                        Some(version) => *version,
                        None => {
                            let version = Self::lock_policy(tx, tenant, policy.1).await?;
                            *versions.entry(policy).or_insert(version)
                        }
                    };
                    if version == Some(job.merge_policy.version) {
                        accepted.push((tenant, job));
                        out.push(None);
                    } else {
                        out.push(Some(Err($crate::CatalogError::Conflict(format!(
                            "merge policy {:?} was changed or deleted while the job was being \
                             created; retry the request",
                            job.merge_policy.id
                        )))));
                    }
                }
                let ids = Self::insert_export_jobs(tx, &accepted).await?;
                let mut inserted = accepted.into_iter().zip(ids);
                Ok(out
                    .into_iter()
                    .map(|answer| match answer {
                        Some(answer) => answer,
                        None => inserted
                            .next()
                            .map(|((tenant, job), id)| {
                                Ok(segport_model::job::ExportJobRecord {
                                    warnings: job.warnings.clone(),
                                    ..segport_model::job::ExportJobRecord::created(
                                        id,
                                        tenant.org.as_str().to_owned(),
                                        tenant.sandbox.as_str().to_owned(),
                                        job.spec.clone(),
                                        Some(job.merge_policy.clone()),
                                        job.request_id.clone(),
                                        job.now_ms,
                                    )
                                })
                            })
                            .unwrap_or_else(|| {
                                Err($crate::CatalogError::Conflict("a job was not inserted".into()))
                            }),
                    })
                    .collect())
            }

            /// Adds a compacted file (its rows carry their own recency) at commit `seq`.
            async fn insert_compacted_file(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant: &segport_model::Tenant,
                f: &$crate::NewStoreFile,
                seq: i64,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_STORE_FILE)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(&f.dataset_id)
                    .bind(f.kind.as_str())
                    .bind(i64::from(f.partition))
                    .bind(&f.path)
                    .bind(None::<String>)
                    .bind(None::<i64>)
                    .bind(seq)
                    .bind(f.rows)
                    .bind(f.bytes)
                    .bind(&f.min_key)
                    .bind(&f.max_key)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Fails an export job and its open batches with `errors`.
            async fn fail_job(
                tx: &mut sqlx::Transaction<'_, $db>,
                job_id: i64,
                errors: &[segport_model::batch::BatchError],
                now_ms: i64,
            ) -> $crate::Result<()> {
                let job_errors: Vec<segport_model::job::JobError> = errors
                    .iter()
                    .map(|e| segport_model::job::JobError {
                        code: e.code.clone(),
                        msg: e.description.clone(),
                        call_stack: String::new(),
                    })
                    .collect();
                sqlx::query($crate::sql::FAIL_JOB)
                    .bind(job_id)
                    .bind(serde_json::to_string(&job_errors)?)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query($crate::sql::FAIL_JOB_BATCHES)
                    .bind(job_id)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Takes the sandbox's row lock inside `tx`.
            async fn lock_sandbox(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant: &segport_model::Tenant,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::LOCK_SANDBOX)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Moves an ingest batch from `loading` to `to`, queueing its ingest task in the
            /// same transaction when `enqueue`; reports how the batch stands either way.
            async fn move_batch(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
                to: &str,
                now_ms: i64,
                enqueue: bool,
            ) -> $crate::Result<Option<$crate::BatchTransition>> {
                let mut tx = self.write().begin().await?;
                let moved = sqlx::query($crate::sql::MOVE_BATCH)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(batch_id.as_str())
                    .bind("loading")
                    .bind(to)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if moved && enqueue {
                    sqlx::query($crate::sql::INSERT_INGEST_TASK)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(batch_id.as_str())
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                let state: Option<(String, String)> = sqlx::query_as($crate::sql::BATCH_STATE)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(batch_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                let Some((kind, status)) = state else { return Ok(None) };
                let corrupt = |e: String| $crate::CatalogError::Corrupt(e);
                Ok(Some($crate::BatchTransition {
                    kind: segport_model::batch::BatchKind::parse(&kind)
                        .ok_or_else(|| corrupt(format!("batches.kind {kind:?}")))?,
                    status: segport_model::batch::BatchStatus::parse(&status).map_err(corrupt)?,
                    changed: moved,
                }))
            }

            /// One page of a tenant's rows: `sql` takes the tenant, then `LIMIT $3 OFFSET $4`.
            async fn fetch_page<R, T>(
                &self,
                sql: &str,
                tenant: &segport_model::Tenant,
                page: &$crate::ListQuery,
            ) -> $crate::Result<Vec<T>>
            where
                R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
                T: TryFrom<R, Error = $crate::CatalogError>,
            {
                let rows = sqlx::query_as::<_, R>(sql)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(i64::from(page.limit))
                    .bind($crate::sql::as_i64(page.start))
                    .fetch_all(self.read())
                    .await?;
                $crate::sql::convert_all(rows)
            }

            /// One row of a tenant's, by the id in `$3` of `sql`, converted to its domain type.
            async fn fetch_scoped<R, T>(
                &self,
                sql: &str,
                tenant: &segport_model::Tenant,
                id: &str,
            ) -> $crate::Result<Option<T>>
            where
                R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
                T: TryFrom<R, Error = $crate::CatalogError>,
            {
                sqlx::query_as::<_, R>(sql)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?
                    .map(T::try_from)
                    .transpose()
            }
        }

        #[async_trait::async_trait]
        impl $crate::Catalog for $catalog {
            fn backend(&self) -> $crate::Backend {
                $backend
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(self.read()).await?;
                Ok(())
            }

            async fn migrate(&self) -> $crate::Result<()> {
                self.run_migrations().await
            }

            async fn ensure_sandbox(
                &self,
                tenant: &segport_model::Tenant,
                now_ms: i64,
            ) -> $crate::Result<()> {
                if self.sandboxes.contains(tenant) {
                    return Ok(());
                }
                let mut tx = self.write().begin().await?;
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let created = sqlx::query($crate::sql::INSERT_SANDBOX)
                    .bind(org)
                    .bind(sandbox)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if created == 1 {
                    let policy =
                        segport_model::merge_policy::MergePolicy::builtin_default(org, now_ms);
                    sqlx::query($crate::sql::INSERT_POLICY)
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

            async fn create_dataset(
                &self,
                d: &segport_model::dataset::Dataset,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_DATASET)
                    .bind(d.id.as_str())
                    .bind(&d.org)
                    .bind(&d.sandbox)
                    .bind(&d.name)
                    .bind(&d.description)
                    .bind(serde_json::to_string(&d.schema_ref)?)
                    .bind(d.class.as_str())
                    .bind(serde_json::to_string(&d.tags)?)
                    .bind(d.created_ms)
                    .bind(d.updated_ms)
                    .execute(self.write())
                    .await?;
                Ok(())
            }

            async fn update_dataset(
                &self,
                d: &segport_model::dataset::Dataset,
            ) -> $crate::Result<bool> {
                let updated = sqlx::query($crate::sql::UPDATE_DATASET)
                    .bind(&d.org)
                    .bind(&d.sandbox)
                    .bind(d.id.as_str())
                    .bind(&d.name)
                    .bind(&d.description)
                    .bind(serde_json::to_string(&d.tags)?)
                    .bind(d.updated_ms)
                    .execute(self.write())
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            }

            async fn get_dataset(
                &self,
                tenant: &segport_model::Tenant,
                id: &segport_model::DatasetId,
            ) -> $crate::Result<Option<segport_model::dataset::Dataset>> {
                self.fetch_scoped::<$crate::sql::DatasetRow, _>(
                    $crate::sql::SELECT_DATASET,
                    tenant,
                    id.as_str(),
                )
                .await
            }

            async fn list_datasets(
                &self,
                tenant: &segport_model::Tenant,
                page: &$crate::ListQuery,
            ) -> $crate::Result<Vec<segport_model::dataset::Dataset>> {
                self.fetch_page::<$crate::sql::DatasetRow, _>(
                    $crate::sql::LIST_DATASETS,
                    tenant,
                    page,
                )
                .await
            }

            async fn get_batch(
                &self,
                tenant: &segport_model::Tenant,
                id: &segport_model::BatchId,
            ) -> $crate::Result<Option<segport_model::batch::Batch>> {
                self.fetch_scoped::<$crate::sql::BatchRow, _>(
                    $crate::sql::SELECT_BATCH,
                    tenant,
                    id.as_str(),
                )
                .await
            }

            async fn list_batches(
                &self,
                tenant: &segport_model::Tenant,
                filter: &$crate::BatchFilter,
                page: &$crate::ListQuery,
            ) -> $crate::Result<Vec<segport_model::batch::Batch>> {
                let rows = sqlx::query_as::<_, $crate::sql::BatchRow>($crate::sql::LIST_BATCHES)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(filter.dataset_id.as_ref().map(|d| d.as_str()))
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(i64::from(page.limit))
                    .bind($crate::sql::as_i64(page.start))
                    .fetch_all(self.read())
                    .await?;
                $crate::sql::convert_all(rows)
            }

            async fn list_merge_policies(
                &self,
                tenant: &segport_model::Tenant,
                page: &$crate::ListQuery,
            ) -> $crate::Result<Vec<segport_model::merge_policy::MergePolicy>> {
                self.fetch_page::<$crate::sql::PolicyRow, _>(
                    $crate::sql::LIST_POLICIES,
                    tenant,
                    page,
                )
                .await
            }

            async fn get_merge_policy(
                &self,
                tenant: &segport_model::Tenant,
                id: &str,
            ) -> $crate::Result<Option<segport_model::merge_policy::MergePolicy>> {
                self.fetch_scoped::<$crate::sql::PolicyRow, _>(
                    $crate::sql::SELECT_POLICY,
                    tenant,
                    id,
                )
                .await
            }

            async fn default_merge_policy(
                &self,
                tenant: &segport_model::Tenant,
            ) -> $crate::Result<Option<segport_model::merge_policy::MergePolicy>> {
                sqlx::query_as::<_, $crate::sql::PolicyRow>($crate::sql::SELECT_DEFAULT_POLICY)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(true)
                    .fetch_optional(self.read())
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn create_merge_policy(
                &self,
                tenant: &segport_model::Tenant,
                policy: &segport_model::merge_policy::MergePolicy,
            ) -> $crate::Result<()> {
                let mut tx = self.write().begin().await?;
                Self::lock_sandbox(&mut tx, tenant).await?;
                if policy.default {
                    sqlx::query($crate::sql::CLEAR_DEFAULT_POLICY)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(false)
                        .bind(true)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query($crate::sql::INSERT_POLICY)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(&policy.id)
                    .bind(policy.version)
                    .bind(policy.default)
                    .bind(serde_json::to_string(policy)?)
                    .bind(segport_model::time::now_ms())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_merge_policy(
                &self,
                tenant: &segport_model::Tenant,
                id: &str,
                input: segport_model::merge_policy::MergePolicyInput,
                now_ms: i64,
            ) -> $crate::Result<Option<segport_model::merge_policy::MergePolicy>> {
                let mut tx = self.write().begin().await?;
                let current =
                    sqlx::query_as::<_, $crate::sql::PolicyRow>($crate::sql::SELECT_POLICY)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(current) = current else { return Ok(None) };
                let current: segport_model::merge_policy::MergePolicy = current.try_into()?;
                if current.default && !input.default {
                    return Err($crate::CatalogError::Conflict(format!(
                        "merge policy {id:?} is the sandbox's default; make another policy the \
                         default instead of clearing this one"
                    )));
                }
                let updated = input.into_policy(
                    id.to_owned(),
                    tenant.org.as_str(),
                    current.version + 1,
                    now_ms,
                );
                if updated.default && !current.default {
                    sqlx::query($crate::sql::CLEAR_DEFAULT_POLICY)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(false)
                        .bind(true)
                        .execute(&mut *tx)
                        .await?;
                }
                let changed = sqlx::query($crate::sql::UPDATE_POLICY)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .bind(updated.version)
                    .bind(updated.default)
                    .bind(serde_json::to_string(&updated)?)
                    .bind(current.version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if changed != 1 {
                    return Err($crate::CatalogError::Conflict(format!(
                        "merge policy {id:?} changed concurrently; retry the update"
                    )));
                }
                tx.commit().await?;
                Ok(Some(updated))
            }

            async fn delete_merge_policy(
                &self,
                tenant: &segport_model::Tenant,
                id: &str,
            ) -> $crate::Result<bool> {
                let mut tx = self.write().begin().await?;
                Self::lock_sandbox(&mut tx, tenant).await?;
                // Waits for jobs being inserted with this policy, so that the count below sees
                // them.
                let locked: Option<(i64,)> = sqlx::query_as(Self::DIALECT.lock_policy_exclusive)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if locked.is_none() {
                    return Ok(false);
                }
                let current =
                    sqlx::query_as::<_, $crate::sql::PolicyRow>($crate::sql::SELECT_POLICY)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(current) = current else { return Ok(false) };
                if current.is_default {
                    return Err($crate::CatalogError::Conflict(format!(
                        "merge policy {id:?} is the sandbox's default; make another policy the \
                         default before deleting it"
                    )));
                }
                let (in_use,): (i64,) = sqlx::query_as($crate::sql::POLICY_IN_USE)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                if in_use > 0 {
                    return Err($crate::CatalogError::Conflict(format!(
                        "merge policy {id:?} is used by {in_use} queued or running export \
                         job(s); delete it once they have finished"
                    )));
                }
                sqlx::query($crate::sql::DELETE_POLICY)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn create_export_job(
                &self,
                tenant: &segport_model::Tenant,
                job: $crate::NewExportJob,
            ) -> $crate::Result<segport_model::job::ExportJobRecord> {
                let mut out = self.create_export_jobs(vec![(tenant.clone(), job)]).await;
                out.pop().unwrap_or_else(|| {
                    Err($crate::CatalogError::Conflict("the job was not inserted".into()))
                })
            }

            async fn create_export_jobs(
                &self,
                jobs: Vec<(segport_model::Tenant, $crate::NewExportJob)>,
            ) -> Vec<$crate::Result<segport_model::job::ExportJobRecord>> {
                // One transaction, one durable commit for all. A job whose policy changed
                // meanwhile fails alone (a read, the transaction goes on); any other error
                // aborts the transaction, and the jobs are then inserted one by one, so that
                // one bad job fails alone.
                let group = async {
                    let mut tx = self.write().begin().await?;
                    let out = Self::insert_checked_jobs(&mut tx, &jobs).await?;
                    tx.commit().await?;
                    Ok::<_, $crate::CatalogError>(out)
                };
                let out = match group.await {
                    Ok(out) => out,
                    Err(e) if jobs.len() == 1 => vec![Err(e)],
                    Err(_) => {
                        let mut out = Vec::with_capacity(jobs.len());
                        for job in jobs {
                            let alone = async {
                                let mut tx = self.write().begin().await?;
                                let mut answer = Self::insert_checked_jobs(&mut tx, &[job]).await?;
                                tx.commit().await?;
                                answer.pop().ok_or_else(|| {
                                    $crate::CatalogError::Conflict(
                                        "the job was not inserted".into(),
                                    )
                                })?
                            };
                            out.push(alone.await);
                        }
                        out
                    }
                };
                if out.iter().any(Result::is_ok) {
                    self.announce_tasks().await;
                }
                out
            }

            async fn get_export_job(
                &self,
                tenant: &segport_model::Tenant,
                id: i64,
            ) -> $crate::Result<Option<segport_model::job::ExportJobRecord>> {
                sqlx::query_as::<_, $crate::sql::JobRow>(&$crate::sql::select_job_sql())
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn list_export_jobs(
                &self,
                tenant: &segport_model::Tenant,
                q: &$crate::JobListQuery,
            ) -> $crate::Result<Vec<segport_model::job::ExportJobRecord>> {
                let (after_ms, after_id) = q.after.unwrap_or((i64::MAX, i64::MAX));
                let sql = $crate::sql::list_jobs_sql(q.status.is_some());
                let mut query = sqlx::query_as::<_, $crate::sql::JobRow>(&sql)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(after_ms)
                    .bind(after_id);
                if let Some(status) = q.status {
                    query = query.bind(status.as_str());
                }
                let rows = query
                    .bind(i64::from(q.limit))
                    .bind($crate::sql::as_i64(q.skip))
                    .fetch_all(self.read())
                    .await?;
                $crate::sql::convert_all(rows)
            }

            async fn cancel_export_job(
                &self,
                tenant: &segport_model::Tenant,
                id: i64,
                now_ms: i64,
            ) -> $crate::Result<Option<$crate::CancelOutcome>> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let errors = serde_json::to_string(&[segport_model::job::JobError::cancelled()])?;
                let mut tx = self.write().begin().await?;
                sqlx::query(Self::DIALECT.lock_job_task).bind(id).execute(&mut *tx).await?;
                // Each step is a conditional update on the status it expects, so a worker that
                // claims or finishes the job concurrently is never overwritten.
                let outcome = if sqlx::query($crate::sql::CANCEL_NEW_JOB)
                    .bind(org)
                    .bind(sandbox)
                    .bind(id)
                    .bind(&errors)
                    .bind(true)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1
                {
                    sqlx::query($crate::sql::FAIL_JOB_BATCHES)
                        .bind(id)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query($crate::sql::FAIL_QUEUED_JOB_TASK)
                        .bind(id)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    Some($crate::CancelOutcome::CancelledNew)
                } else if sqlx::query($crate::sql::FLAG_RUNNING_JOB)
                    .bind(org)
                    .bind(sandbox)
                    .bind(id)
                    .bind(true)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1
                {
                    Some($crate::CancelOutcome::FlaggedRunning)
                } else if sqlx::query($crate::sql::DELETE_FINISHED_JOB)
                    .bind(org)
                    .bind(sandbox)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1
                {
                    Some($crate::CancelOutcome::DeletedFinished)
                } else {
                    None
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn count_jobs(&self) -> $crate::Result<Vec<$crate::JobCount>> {
                let rows: Vec<(String, String, String, i64)> =
                    sqlx::query_as($crate::sql::COUNT_JOBS).fetch_all(self.read()).await?;
                rows.into_iter()
                    .map(|(org, sandbox, status, n)| {
                        let status =
                            status.parse().map_err(|e: String| $crate::CatalogError::Corrupt(e))?;
                        Ok($crate::JobCount { org, sandbox, status, n })
                    })
                    .collect()
            }

            async fn fold_job_counts(&self) -> $crate::Result<u64> {
                let mut tx = self.write().begin().await?;
                let (last,): (Option<i64>,) =
                    sqlx::query_as($crate::sql::LAST_JOB_COUNT_DELTA).fetch_one(&mut *tx).await?;
                let Some(last) = last else { return Ok(0) };
                let taken: Vec<(String, String, String, i64)> =
                    sqlx::query_as($crate::sql::TAKE_JOB_COUNT_DELTAS)
                        .bind(last)
                        .fetch_all(&mut *tx)
                        .await?;
                let mut sums: std::collections::BTreeMap<(String, String, String), i64> =
                    std::collections::BTreeMap::new();
                for (org, sandbox, status, n) in &taken {
                    *sums.entry((org.clone(), sandbox.clone(), status.clone())).or_default() += n;
                }
                // In key order: concurrent folds lock the count rows in one order.
                for ((org, sandbox, status), n) in sums.into_iter().filter(|(_, n)| *n != 0) {
                    sqlx::query($crate::sql::ADD_JOB_COUNT)
                        .bind(org)
                        .bind(sandbox)
                        .bind(status)
                        .bind(n)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(taken.len() as u64)
            }

            async fn store_state(
                &self,
                tenant: &segport_model::Tenant,
            ) -> $crate::Result<$crate::StoreState> {
                let row = sqlx::query_as::<_, $crate::sql::StoreStateRow>(
                    $crate::sql::SELECT_STORE_STATE,
                )
                .bind(tenant.org.as_str())
                .bind(tenant.sandbox.as_str())
                .fetch_optional(self.read())
                .await?;
                match row {
                    Some(row) => row.try_into(),
                    None => Err($crate::CatalogError::Corrupt(format!(
                        "sandbox {}/{} has no store state",
                        tenant.org, tenant.sandbox
                    ))),
                }
            }

            async fn store_snapshot(
                &self,
                tenant: &segport_model::Tenant,
                lease: Option<&$crate::TaskLease>,
            ) -> $crate::Result<$crate::StoreSnapshot> {
                type Row = (Option<i64>, Option<String>, Option<String>);
                let row: Option<Row> = match lease {
                    Some(lease) => {
                        sqlx::query_as($crate::sql::REGISTER_SNAPSHOT)
                            .bind(lease.task_id)
                            .bind(&lease.attempt_id)
                            .bind(tenant.org.as_str())
                            .bind(tenant.sandbox.as_str())
                            .fetch_optional(self.write())
                            .await?
                    }
                    None => {
                        sqlx::query_as::<_, (i64, String, String)>($crate::sql::SELECT_COMMIT_SEQ)
                            .bind(tenant.org.as_str())
                            .bind(tenant.sandbox.as_str())
                            .fetch_optional(self.read())
                            .await?
                            .map(|(s, p, e)| (Some(s), Some(p), Some(e)))
                    }
                };
                // A sandbox without a store row has empty schemas, as a new row holds.
                let empty = || $crate::sql::EMPTY_SCHEMA.to_owned();
                let (seq, profile_schema, event_schema) = match (row, lease) {
                    (None, Some(_)) => return Err($crate::CatalogError::LeaseLost),
                    (Some((Some(s), p, e)), _) => {
                        (s, p.unwrap_or_else(empty), e.unwrap_or_else(empty))
                    }
                    _ => (0, empty(), empty()),
                };
                let rows =
                    sqlx::query_as::<_, $crate::sql::StoreFileRow>($crate::sql::SNAPSHOT_FILES)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(seq)
                        .fetch_all(self.read())
                        .await?;
                Ok($crate::StoreSnapshot {
                    seq,
                    files: $crate::sql::convert_all(rows)?,
                    profile_schema,
                    event_schema,
                })
            }

            async fn held_schemas(
                &self,
                tenant: &segport_model::Tenant,
                kind: $crate::StoreKind,
            ) -> $crate::Result<$crate::HeldSchemas> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let mut tx = self.read().begin().await?;
                let (schema_version, profile, event, _): (i64, String, String, i64) =
                    sqlx::query_as($crate::sql::SELECT_SCHEMA_VERSION)
                        .bind(org)
                        .bind(sandbox)
                        .fetch_one(&mut *tx)
                        .await?;
                let class = match kind {
                    $crate::StoreKind::Profile => "profile",
                    $crate::StoreKind::Event => "experienceevent",
                };
                let held: Vec<(Option<String>,)> = sqlx::query_as($crate::sql::HELD_SCHEMAS)
                    .bind(org)
                    .bind(sandbox)
                    .bind(class)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let schema = match kind {
                    $crate::StoreKind::Profile => profile,
                    $crate::StoreKind::Event => event,
                };
                Ok($crate::HeldSchemas {
                    schema_version,
                    schema,
                    held: held.into_iter().map(|(h,)| h).collect(),
                })
            }

            async fn release_schema(
                &self,
                tenant: &segport_model::Tenant,
                kind: $crate::StoreKind,
                from_version: i64,
                schema: &str,
            ) -> $crate::Result<bool> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let mut tx = self.write().begin().await?;
                // A commit of its own: snapshots taken from here on read the released schema.
                let (_, _, schema_version): (i64, i64, i64) =
                    sqlx::query_as($crate::sql::NEXT_COMMIT)
                        .bind(org)
                        .bind(sandbox)
                        .fetch_one(&mut *tx)
                        .await?;
                if schema_version != from_version {
                    return Ok(false);
                }
                sqlx::query($crate::sql::RELEASE_SCHEMA)
                    .bind(org)
                    .bind(sandbox)
                    .bind(kind.as_str())
                    .bind(schema)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn commit_ingest(
                &self,
                c: $crate::IngestCommit,
            ) -> $crate::Result<$crate::IngestCommitted> {
                let (org, sandbox) = (c.tenant.org.as_str(), c.tenant.sandbox.as_str());
                let mut tx = self.write().begin().await?;
                // The sandbox row serialises commits: ingest times follow commit order.
                let (seq, last_ingest_ms, schema_version): (i64, i64, i64) =
                    sqlx::query_as($crate::sql::NEXT_COMMIT)
                        .bind(org)
                        .bind(sandbox)
                        .fetch_one(&mut *tx)
                        .await?;
                // The fence before the schema check: a commit sent again after it was applied
                // (its answer lost to a reset connection) meets a finished task and is told
                // LeaseLost, never SchemaChanged, on which the caller would delete the files it
                // just committed. A refusal below rolls the fence back with everything else.
                let fenced = sqlx::query($crate::sql::FINISH_TASK)
                    .bind(c.lease.task_id)
                    .bind(&c.lease.attempt_id)
                    .bind(c.now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if fenced != 1 {
                    return Err($crate::CatalogError::LeaseLost);
                }
                let (_, _, _, released_version): (i64, String, String, i64) =
                    sqlx::query_as($crate::sql::SELECT_SCHEMA_VERSION)
                        .bind(org)
                        .bind(sandbox)
                        .fetch_one(&mut *tx)
                        .await?;
                // A batch that widens the schema must have typed against the latest one; any
                // batch must have typed after the last release, which may have dropped a field
                // it holds.
                if (c.schema.is_some() && schema_version != c.schema_version)
                    || released_version > c.schema_version
                {
                    return Err($crate::CatalogError::SchemaChanged);
                }
                let success = c.record_count > 0;
                let completed_ms = c.now_ms.max(last_ingest_ms + 1);
                let status = if success {
                    segport_model::batch::BatchStatus::Success
                } else {
                    segport_model::batch::BatchStatus::Failed
                };
                if success {
                    sqlx::query($crate::sql::RECORD_INGEST)
                        .bind(org)
                        .bind(sandbox)
                        .bind(completed_ms)
                        .bind(c.kind.as_str())
                        .bind(c.schema.as_deref())
                        .execute(&mut *tx)
                        .await?;
                    for f in &c.files {
                        sqlx::query($crate::sql::INSERT_STORE_FILE)
                            .bind(org)
                            .bind(sandbox)
                            .bind(&f.dataset_id)
                            .bind(f.kind.as_str())
                            .bind(i64::from(f.partition))
                            .bind(&f.path)
                            .bind(c.batch_id.as_str())
                            .bind(completed_ms)
                            .bind(seq)
                            .bind(f.rows)
                            .bind(f.bytes)
                            .bind(&f.min_key)
                            .bind(&f.max_key)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                sqlx::query($crate::sql::FINISH_INGEST_BATCH)
                    .bind(c.batch_id.as_str())
                    .bind(status.as_str())
                    .bind(c.record_count)
                    .bind(c.failed_record_count)
                    .bind(serde_json::to_string(&c.errors)?)
                    .bind(success.then_some(completed_ms))
                    .bind(c.now_ms)
                    .bind(success.then_some(c.held.as_str()))
                    .bind(success.then_some(seq))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::IngestCommitted { completed_ms, seq, status })
            }

            async fn commit_compaction(
                &self,
                tenant: &segport_model::Tenant,
                replaced: &[i64],
                merged: &$crate::NewStoreFile,
                now_ms: i64,
            ) -> $crate::Result<i64> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let mut tx = self.write().begin().await?;
                let (seq, _, _): (i64, i64, i64) = sqlx::query_as($crate::sql::NEXT_COMMIT)
                    .bind(org)
                    .bind(sandbox)
                    .fetch_one(&mut *tx)
                    .await?;
                for id in replaced {
                    let removed = sqlx::query($crate::sql::REMOVE_STORE_FILE)
                        .bind(org)
                        .bind(sandbox)
                        .bind(id)
                        .bind(seq)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if removed != 1 {
                        return Err($crate::CatalogError::Conflict(format!(
                            "store file {id} was removed during compaction"
                        )));
                    }
                }
                Self::insert_compacted_file(&mut tx, tenant, merged, seq).await?;
                tx.commit().await?;
                Ok(seq)
            }

            async fn sandboxes(&self) -> $crate::Result<Vec<segport_model::Tenant>> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as($crate::sql::LIST_SANDBOXES).fetch_all(self.read()).await?;
                rows.iter()
                    .map(|(o, s)| {
                        segport_model::Tenant::parse(o, s)
                            .map_err(|e| $crate::CatalogError::Corrupt(e.to_string()))
                    })
                    .collect()
            }

            async fn store_paths(
                &self,
                tenant: &segport_model::Tenant,
            ) -> $crate::Result<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as($crate::sql::STORE_PATHS)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .fetch_all(self.read())
                    .await?;
                Ok(rows.into_iter().map(|(p,)| p).collect())
            }

            async fn collectable_store_files(
                &self,
                removed_before_ms: i64,
            ) -> $crate::Result<Vec<(i64, String)>> {
                Ok(sqlx::query_as($crate::sql::COLLECTABLE_FILES)
                    .bind(removed_before_ms)
                    .fetch_all(self.read())
                    .await?)
            }

            async fn forget_store_files(&self, ids: &[i64]) -> $crate::Result<()> {
                let mut tx = self.write().begin().await?;
                for id in ids {
                    sqlx::query($crate::sql::FORGET_FILE).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn create_ingest_batch(
                &self,
                b: &segport_model::batch::Batch,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_BATCH)
                    .bind(b.id.as_str())
                    .bind(&b.org)
                    .bind(&b.sandbox)
                    .bind(b.dataset_id.as_str())
                    .bind(b.kind.as_str())
                    .bind(b.status.as_str())
                    .bind(b.job_id)
                    .bind(&b.input_format)
                    .bind(b.multiline_json)
                    .bind(b.created_ms)
                    .bind(b.updated_ms)
                    .execute(self.write())
                    .await?;
                Ok(())
            }

            async fn record_upload(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
                upload: &$crate::Upload,
            ) -> $crate::Result<$crate::UploadRecorded> {
                let mut tx = self.write().begin().await?;
                let loading: Option<(String,)> = sqlx::query_as(Self::DIALECT.lock_loading_batch)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .bind(batch_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if loading.is_none() {
                    return Ok($crate::UploadRecorded::Refused);
                }
                let replaced: Option<$crate::sql::UploadRow> =
                    sqlx::query_as($crate::sql::SELECT_UPLOAD)
                        .bind(batch_id.as_str())
                        .bind(&upload.name)
                        .fetch_optional(&mut *tx)
                        .await?;
                sqlx::query($crate::sql::UPSERT_UPLOAD)
                    .bind(batch_id.as_str())
                    .bind(&upload.name)
                    .bind(upload.object.as_deref())
                    .bind(upload.bytes)
                    .bind(upload.uploaded_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::UploadRecorded::Recorded { replaced: replaced.map(Into::into) })
            }

            async fn list_uploads(
                &self,
                batch_id: &segport_model::BatchId,
            ) -> $crate::Result<Vec<$crate::Upload>> {
                let rows: Vec<$crate::sql::UploadRow> = sqlx::query_as($crate::sql::LIST_UPLOADS)
                    .bind(batch_id.as_str())
                    .fetch_all(self.read())
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn complete_batch(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
                now_ms: i64,
            ) -> $crate::Result<Option<$crate::BatchTransition>> {
                let outcome = self.move_batch(tenant, batch_id, "staging", now_ms, true).await?;
                if outcome.is_some_and(|o| o.changed) {
                    self.announce_tasks().await;
                }
                Ok(outcome)
            }

            async fn abort_batch(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
                now_ms: i64,
            ) -> $crate::Result<Option<$crate::BatchTransition>> {
                self.move_batch(tenant, batch_id, "aborted", now_ms, false).await
            }

            async fn fail_batch(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
                now_ms: i64,
            ) -> $crate::Result<Option<$crate::BatchTransition>> {
                self.move_batch(tenant, batch_id, "failed", now_ms, false).await
            }

            async fn revert_plan(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
            ) -> $crate::Result<Option<$crate::RevertPlan>> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let found: Option<(String, Option<i64>, Option<i64>)> =
                    sqlx::query_as($crate::sql::REVERTIBLE_BATCH)
                        .bind(org)
                        .bind(sandbox)
                        .bind(batch_id.as_str())
                        .fetch_optional(self.read())
                        .await?;
                let Some((dataset_id, recorded, from_files)) = found else { return Ok(None) };
                let Some(commit_seq) = recorded.or(from_files) else {
                    return Err($crate::CatalogError::Conflict(format!(
                        "batch {batch_id} was committed before reverts were recorded and its \
                         files are gone; it cannot be reverted"
                    )));
                };
                let rows =
                    sqlx::query_as::<_, $crate::sql::StoreFileRow>($crate::sql::COMPACTED_SINCE)
                        .bind(org)
                        .bind(sandbox)
                        .bind(&dataset_id)
                        .bind(commit_seq)
                        .fetch_all(self.read())
                        .await?;
                Ok(Some($crate::RevertPlan {
                    commit_seq,
                    compacted: $crate::sql::convert_all(rows)?,
                }))
            }

            async fn revert_batch(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
                planned: &[i64],
                rewrites: &[(i64, Option<$crate::NewStoreFile>)],
                now_ms: i64,
            ) -> $crate::Result<bool> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let mut tx = self.write().begin().await?;
                // The sandbox's commit lock: no compaction commits between here and the end.
                let (seq, _, _): (i64, i64, i64) = sqlx::query_as($crate::sql::NEXT_COMMIT)
                    .bind(org)
                    .bind(sandbox)
                    .fetch_one(&mut *tx)
                    .await?;
                let found: Option<(String, Option<i64>, Option<i64>)> =
                    sqlx::query_as($crate::sql::REVERTIBLE_BATCH)
                        .bind(org)
                        .bind(sandbox)
                        .bind(batch_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((dataset_id, recorded, from_files)) = found else { return Ok(false) };
                let commit_seq = recorded.or(from_files).unwrap_or(i64::MAX);
                let mut now: Vec<i64> =
                    sqlx::query_as::<_, $crate::sql::StoreFileRow>($crate::sql::COMPACTED_SINCE)
                        .bind(org)
                        .bind(sandbox)
                        .bind(&dataset_id)
                        .bind(commit_seq)
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .map(|r| r.id)
                        .collect();
                let mut planned = planned.to_vec();
                now.sort_unstable();
                planned.sort_unstable();
                if now != planned {
                    return Err($crate::CatalogError::Conflict(
                        "the dataset was compacted while the revert planned".into(),
                    ));
                }
                let marked = sqlx::query($crate::sql::MARK_REVERTED)
                    .bind(org)
                    .bind(sandbox)
                    .bind(batch_id.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if marked != 1 {
                    return Ok(false);
                }
                sqlx::query($crate::sql::REMOVE_BATCH_FILES)
                    .bind(org)
                    .bind(sandbox)
                    .bind(batch_id.as_str())
                    .bind(seq)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                for (old, new) in rewrites {
                    let removed = sqlx::query($crate::sql::REMOVE_STORE_FILE)
                        .bind(org)
                        .bind(sandbox)
                        .bind(old)
                        .bind(seq)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if removed != 1 {
                        return Err($crate::CatalogError::Conflict(format!(
                            "store file {old} was replaced while the revert rewrote it"
                        )));
                    }
                    if let Some(f) = new {
                        Self::insert_compacted_file(&mut tx, tenant, f, seq).await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_dataset(
                &self,
                tenant: &segport_model::Tenant,
                id: &segport_model::DatasetId,
                now_ms: i64,
            ) -> $crate::Result<Option<Vec<segport_model::BatchId>>> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let mut tx = self.write().begin().await?;
                let exists = sqlx::query($crate::sql::SELECT_DATASET)
                    .bind(org)
                    .bind(sandbox)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if !exists {
                    return Ok(None);
                }
                let (busy,): (i64,) = sqlx::query_as($crate::sql::DATASET_BUSY)
                    .bind(id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                if busy > 0 {
                    return Err($crate::CatalogError::Conflict(format!(
                        "dataset {id} is used by {busy} queued or running task(s); delete it \
                         once they have finished"
                    )));
                }
                let seq: Option<(i64, i64, i64)> = sqlx::query_as($crate::sql::NEXT_COMMIT)
                    .bind(org)
                    .bind(sandbox)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((seq, _, _)) = seq {
                    sqlx::query($crate::sql::REMOVE_DATASET_FILES)
                        .bind(org)
                        .bind(sandbox)
                        .bind(id.as_str())
                        .bind(seq)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                let batches: Vec<(String,)> = sqlx::query_as($crate::sql::DATASET_BATCHES)
                    .bind(id.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                sqlx::query($crate::sql::DELETE_DATASET)
                    .bind(org)
                    .bind(sandbox)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                batches
                    .into_iter()
                    .map(|(b,)| {
                        segport_model::BatchId::parse(&b)
                            .map_err(|e| $crate::CatalogError::Corrupt(e))
                    })
                    .collect::<$crate::Result<Vec<_>>>()
                    .map(Some)
            }

            async fn delete_export_batch(
                &self,
                tenant: &segport_model::Tenant,
                id: &segport_model::BatchId,
            ) -> $crate::Result<bool> {
                let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
                let mut tx = self.write().begin().await?;
                let found: Option<(String, String)> =
                    sqlx::query_as($crate::sql::BATCH_KIND_STATUS)
                        .bind(org)
                        .bind(sandbox)
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((kind, status)) = found else { return Ok(false) };
                if kind != "export" {
                    return Err($crate::CatalogError::Conflict(format!(
                        "batch {id} is an ingest batch; only export batches can be deleted"
                    )));
                }
                let deleted = sqlx::query($crate::sql::DELETE_EXPORT_BATCH)
                    .bind(org)
                    .bind(sandbox)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Err($crate::CatalogError::Conflict(format!(
                        "batch {id} is {status}: its export has not finished; delete it once \
                         the job has succeeded or failed"
                    )));
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn expired_export_batches(
                &self,
                before_ms: i64,
                limit: i64,
            ) -> $crate::Result<Vec<(segport_model::Tenant, segport_model::BatchId)>> {
                let rows: Vec<(String, String, String)> =
                    sqlx::query_as($crate::sql::EXPIRED_EXPORT_BATCHES)
                        .bind(before_ms)
                        .bind(limit)
                        .fetch_all(self.read())
                        .await?;
                rows.iter()
                    .map(|(org, sandbox, id)| {
                        let corrupt = |e: String| $crate::CatalogError::Corrupt(e);
                        let tenant = segport_model::Tenant::parse(org, sandbox)
                            .map_err(|e| corrupt(e.to_string()))?;
                        Ok((tenant, segport_model::BatchId::parse(id).map_err(corrupt)?))
                    })
                    .collect()
            }

            async fn commit_export(&self, c: $crate::ExportCommit) -> $crate::Result<()> {
                let mut tx = self.write().begin().await?;
                let fenced = sqlx::query($crate::sql::FINISH_TASK)
                    .bind(c.lease.task_id)
                    .bind(&c.lease.attempt_id)
                    .bind(c.now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if fenced != 1 {
                    return Err($crate::CatalogError::LeaseLost);
                }
                let cancel: Option<(bool,)> = sqlx::query_as($crate::sql::JOB_CANCEL_FLAG)
                    .bind(c.job_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if cancel.is_none_or(|(c,)| c) {
                    return Err($crate::CatalogError::Cancelled);
                }
                let succeeded = sqlx::query($crate::sql::SUCCEED_JOB)
                    .bind(c.job_id)
                    .bind(serde_json::to_string(&c.counters)?)
                    .bind(serde_json::to_string(&c.warnings)?)
                    .bind(c.now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if succeeded != 1 {
                    return Err($crate::CatalogError::LeaseLost);
                }
                for batch in &c.batches {
                    sqlx::query($crate::sql::SUCCEED_BATCH)
                        .bind(batch.batch_id.as_str())
                        .bind(batch.rows)
                        .bind(c.now_ms)
                        .execute(&mut *tx)
                        .await?;
                    for f in &batch.files {
                        sqlx::query($crate::sql::INSERT_BATCH_FILE)
                            .bind(batch.batch_id.as_str())
                            .bind(&f.name)
                            .bind(&f.path)
                            .bind(f.rows)
                            .bind(f.bytes)
                            .bind(c.now_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_job_progress(
                &self,
                lease: &$crate::TaskLease,
                job_id: i64,
                progress: &segport_model::job::JobProgress,
                now_ms: i64,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::JOB_PROGRESS)
                    .bind(job_id)
                    .bind(&lease.attempt_id)
                    .bind(serde_json::to_string(progress)?)
                    .bind(now_ms)
                    .execute(self.write())
                    .await?;
                Ok(())
            }

            async fn list_batch_files(
                &self,
                tenant: &segport_model::Tenant,
                batch_id: &segport_model::BatchId,
            ) -> $crate::Result<Vec<$crate::BatchFile>> {
                let rows: Vec<(String, String, i64, i64)> =
                    sqlx::query_as($crate::sql::LIST_BATCH_FILES)
                        .bind(tenant.org.as_str())
                        .bind(tenant.sandbox.as_str())
                        .bind(batch_id.as_str())
                        .fetch_all(self.read())
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, path, rows, bytes)| $crate::BatchFile { name, path, rows, bytes })
                    .collect())
            }

            async fn claim_task(
                &self,
                owner: &str,
                lease_ms: i64,
                now_ms: i64,
            ) -> $crate::Result<Option<$crate::ClaimedTask>> {
                let attempt_id = segport_model::ids::new_uuid().to_string();
                let mut tx = self.write().begin().await?;
                let claimed: Option<$crate::ClaimedTask> =
                    sqlx::query_as::<_, $crate::sql::ClaimRow>(Self::DIALECT.claim_task)
                        .bind(&attempt_id)
                        .bind(owner)
                        .bind(now_ms + lease_ms)
                        .bind(now_ms)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(TryInto::try_into)
                        .transpose()?;
                if let Some(task) = &claimed {
                    sqlx::query($crate::sql::TAKE_TURN)
                        .bind(task.tenant.org.as_str())
                        .bind(task.tenant.sandbox.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                // An export job shows PROCESSING, with the attempt as its compute job id.
                if let Some(job_id) = claimed.as_ref().and_then(|c| c.job_id) {
                    let attempt = claimed.as_ref().map_or(0, |c| c.attempt);
                    sqlx::query($crate::sql::START_JOB)
                        .bind(job_id)
                        .bind(&attempt_id)
                        .bind(attempt)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(claimed)
            }

            async fn claim_batch_task(
                &self,
                owner: &str,
                batch_id: &segport_model::BatchId,
                lease_ms: i64,
                now_ms: i64,
            ) -> $crate::Result<Option<$crate::ClaimedTask>> {
                let attempt_id = segport_model::ids::new_uuid().to_string();
                sqlx::query_as::<_, $crate::sql::ClaimRow>($crate::sql::CLAIM_BATCH_TASK)
                    .bind(&attempt_id)
                    .bind(owner)
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .bind(batch_id.as_str())
                    .fetch_optional(self.write())
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn heartbeat(
                &self,
                lease: &$crate::TaskLease,
                lease_ms: i64,
                now_ms: i64,
            ) -> $crate::Result<$crate::Heartbeat> {
                let row: Option<(Option<i64>,)> = sqlx::query_as($crate::sql::HEARTBEAT)
                    .bind(lease.task_id)
                    .bind(&lease.attempt_id)
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .fetch_optional(self.write())
                    .await?;
                let Some((job_id,)) = row else {
                    return Ok($crate::Heartbeat { alive: false, cancel_requested: false });
                };
                let cancel_requested = match job_id {
                    Some(job) => sqlx::query_as::<_, (bool,)>($crate::sql::JOB_CANCEL_FLAG)
                        .bind(job)
                        .fetch_optional(self.read())
                        .await?
                        .is_some_and(|(c,)| c),
                    None => false,
                };
                Ok($crate::Heartbeat { alive: true, cancel_requested })
            }

            async fn release_task(
                &self,
                lease: &$crate::TaskLease,
                now_ms: i64,
            ) -> $crate::Result<bool> {
                let n = sqlx::query($crate::sql::RELEASE_TASK)
                    .bind(lease.task_id)
                    .bind(&lease.attempt_id)
                    .bind(now_ms)
                    .execute(self.write())
                    .await?
                    .rows_affected();
                if n == 1 {
                    self.announce_tasks().await;
                }
                Ok(n == 1)
            }

            async fn fail_task(
                &self,
                lease: &$crate::TaskLease,
                errors: &[segport_model::batch::BatchError],
                now_ms: i64,
            ) -> $crate::Result<bool> {
                let mut tx = self.write().begin().await?;
                let row: Option<(Option<String>, Option<i64>)> =
                    sqlx::query_as($crate::sql::FAIL_TASK)
                        .bind(lease.task_id)
                        .bind(&lease.attempt_id)
                        .bind(now_ms)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((batch_id, job_id)) = row else { return Ok(false) };
                if let Some(batch_id) = batch_id {
                    sqlx::query($crate::sql::FAIL_BATCH)
                        .bind(batch_id)
                        .bind(serde_json::to_string(errors)?)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(job_id) = job_id {
                    Self::fail_job(&mut tx, job_id, errors, now_ms).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn reap_expired_tasks(
                &self,
                now_ms: i64,
            ) -> $crate::Result<Vec<$crate::ReapedTask>> {
                let mut tx = self.write().begin().await?;
                let rows: Vec<(i64, String, String, Option<String>, Option<i64>)> =
                    sqlx::query_as($crate::sql::REAP_TASKS)
                        .bind(now_ms)
                        .fetch_all(&mut *tx)
                        .await?;
                let lost_error = |what: &str| segport_model::batch::BatchError {
                    code: segport_model::codes::FailureCode::WorkerLost.as_str().to_owned(),
                    description: segport_model::codes::worker_lost_message(what),
                    rows: Vec::new(),
                };
                let lost = serde_json::to_string(&[lost_error("batch")])?;
                let mut reaped = Vec::with_capacity(rows.len());
                for (task_id, kind, state, batch_id, job_id) in rows {
                    let requeued = state == "queued";
                    if let (false, Some(batch_id)) = (requeued, batch_id) {
                        sqlx::query($crate::sql::FAIL_BATCH)
                            .bind(batch_id)
                            .bind(&lost)
                            .bind(now_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                    match (requeued, job_id) {
                        (true, Some(job)) => {
                            sqlx::query($crate::sql::REQUEUE_JOB)
                                .bind(job)
                                .bind(now_ms)
                                .execute(&mut *tx)
                                .await?;
                        }
                        (false, Some(job)) => {
                            let errors = [lost_error("export")];
                            Self::fail_job(&mut tx, job, &errors, now_ms).await?;
                        }
                        _ => {}
                    }
                    reaped.push($crate::ReapedTask {
                        task_id,
                        kind: $crate::sql::task_kind(&kind)?,
                        requeued,
                    });
                }
                tx.commit().await?;
                if reaped.iter().any(|r| r.requeued) {
                    self.announce_tasks().await;
                }
                Ok(reaped)
            }

            async fn running_attempts(&self) -> $crate::Result<Vec<String>> {
                let rows: Vec<(String,)> =
                    sqlx::query_as($crate::sql::RUNNING_ATTEMPTS).fetch_all(self.read()).await?;
                Ok(rows.into_iter().map(|(a,)| a).collect())
            }

            async fn wait_for_tasks(&self, timeout: std::time::Duration) {
                self.ensure_listening();
                let _ = tokio::time::timeout(timeout, self.task_signal().notified()).await;
            }

            async fn insert_token(&self, t: &$crate::TokenRecord) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_TOKEN)
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

            async fn list_tokens(&self) -> $crate::Result<Vec<$crate::TokenRecord>> {
                let rows = sqlx::query_as::<_, $crate::sql::TokenRow>($crate::sql::LIST_TOKENS)
                    .fetch_all(self.read())
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn find_token(
                &self,
                token_sha256: &str,
            ) -> $crate::Result<Option<$crate::TokenRecord>> {
                Ok(sqlx::query_as::<_, $crate::sql::TokenRow>($crate::sql::SELECT_TOKEN)
                    .bind(token_sha256)
                    .fetch_optional(self.read())
                    .await?
                    .map(Into::into))
            }

            async fn revoke_token(&self, id: &str, now_ms: i64) -> $crate::Result<bool> {
                let n = sqlx::query($crate::sql::REVOKE_TOKEN)
                    .bind(id)
                    .bind(now_ms)
                    .execute(self.write())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    };
}

pub(crate) use impl_catalog;

/// Sandboxes this process has already made sure of, so that `ensure_sandbox` costs a write only
/// the first time a process sees a sandbox.
#[derive(Default)]
pub(crate) struct SandboxCache(std::sync::Mutex<std::collections::HashSet<segport_model::Tenant>>);

impl SandboxCache {
    pub fn contains(&self, tenant: &segport_model::Tenant) -> bool {
        self.0.lock().map(|set| set.contains(tenant)).unwrap_or(false)
    }

    pub fn insert(&self, tenant: &segport_model::Tenant) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(tenant.clone());
        }
    }
}

/// The claim statement, with the row-locking clause of the backend (`FOR UPDATE SKIP LOCKED` on
/// PostgreSQL, so that concurrent workers never wait for each other's claims).
///
/// The task claimed is the oldest queued one of the tenant whose last claim is oldest (a tenant
/// never claimed comes first): tenants take turns, so one tenant's backlog never holds back
/// another's job. Ordering the queued tasks costs a pass over them per claim, which is small
/// next to the tasks themselves.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1, attempt_id = $1, ",
            "lease_owner = $2, lease_expires_ms = $3, snapshot_seq = NULL, updated_ms = $4 ",
            "WHERE id = (SELECT t.id FROM tasks t LEFT JOIN tenant_turns r ",
            "ON r.org = t.org AND r.sandbox = t.sandbox WHERE t.state = 'queued' ",
            "ORDER BY COALESCE(r.turn, 0), t.id LIMIT 1 ",
            $lock,
            ") RETURNING id, kind, org, sandbox, batch_id, job_id, attempt, attempt_id"
        )
    };
}

/// Gives tenant (`$1`, `$2`) the newest turn, after one of its tasks was claimed.
pub(crate) const TAKE_TURN: &str = "INSERT INTO tenant_turns (org, sandbox, turn) \
     VALUES ($1, $2, (SELECT COALESCE(MAX(turn), 0) + 1 FROM tenant_turns)) \
     ON CONFLICT (org, sandbox) DO UPDATE SET turn = excluded.turn";

pub(crate) use claim_sql;
