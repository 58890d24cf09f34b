//! The task queue on SQL: claims that give tenants turns, heartbeats, the reaper, and the
//! commits that end a task, each fenced by its lease (a task row still `running` under the
//! attempt's id) in the same transaction as everything it commits.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::batch::{BatchError, BatchStatus};
use segport_model::job::{ExportCounters, JobError, JobProgress, JobWarning};
use segport_model::{BatchId, Tenant};

use super::common::{fences_text, SandboxCommit, FAIL_JOB_BATCHES, INSERT_STORE_FILE};
use super::store::SELECT_SCHEMA_VERSION;
use super::{SqlCatalog, Tx, DIALECT};
use crate::model::{corrupt, task_kind, ClaimRow};
use crate::{
    CatalogError, ClaimedTask, ExportCommit, ExportedBatch, Heartbeat, IngestCommit,
    IngestCommitted, Locality, NewUnit, QueueDepth, QueueStats, ReapedTask, Result, RunningTask,
    TaskLease, TaskQueue, UnitCommit, UnitCommitted, UnitResult, WorkerInfo,
};

/// Gives tenant (`$1`, `$2`) the newest turn, after one of its tasks was claimed.
/// Rounds of a capped claim (see `claim_task_within`).
const CAPPED_CLAIM_ROUNDS: usize = 4;

const QUEUE_DEPTH: &str = "SELECT org, sandbox, kind, \
     CAST(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS BIGINT), \
     CAST(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END) AS BIGINT) \
     FROM tasks WHERE state IN ('queued', 'running') GROUP BY org, sandbox, kind \
     ORDER BY org, sandbox, kind";

const TENANT_RUNNING: &str =
    "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND org = $1 AND sandbox = $2";

const TAKE_TURN: &str = "INSERT INTO tenant_turns (org, sandbox, turn) \
     VALUES ($1, $2, (SELECT COALESCE(MAX(turn), 0) + 1 FROM tenant_turns)) \
     ON CONFLICT (org, sandbox) DO UPDATE SET turn = excluded.turn";

const ANNOUNCE_CACHE: &str =
    "INSERT INTO worker_caches (owner, held, seen_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (owner) DO UPDATE SET held = excluded.held, seen_ms = excluded.seen_ms";

/// Workers not seen for an hour are gone (killed without saying so).
const FORGET_GONE_CACHES: &str = "DELETE FROM worker_caches WHERE seen_ms < $1";

const FORGET_CACHE: &str = "DELETE FROM worker_caches WHERE owner = $1";

const REGISTER_WORKER: &str =
    "INSERT INTO workers (owner, host, slots, started_ms, seen_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (owner) DO UPDATE SET seen_ms = excluded.seen_ms";

/// Workers not seen for an hour are gone (killed without saying so).
const FORGET_GONE_WORKERS: &str = "DELETE FROM workers WHERE seen_ms < $1";

const FORGET_WORKER: &str = "DELETE FROM workers WHERE owner = $1";

const LIVE_WORKERS: &str =
    "SELECT owner, host, CAST(slots AS BIGINT), started_ms, seen_ms FROM workers \
     WHERE seen_ms >= $1 ORDER BY owner";

/// Running tasks (the partial index on running leases finds them), oldest first.
macro_rules! running_tasks {
    ($tenant:literal, $limit:literal) => {
        concat!(
            "SELECT id, kind, org, sandbox, job_id, batch_id, CAST(unit_no AS BIGINT), lease_owner, attempt, \
             updated_ms FROM tasks WHERE state = 'running' ",
            $tenant,
            "ORDER BY updated_ms, id LIMIT ",
            $limit
        )
    };
}
const RUNNING_TASKS: &str = running_tasks!("", "$1");
const RUNNING_TASKS_OF: &str = running_tasks!("AND org = $1 AND sandbox = $2 ", "$3");

const START_JOB: &str = "UPDATE export_jobs SET status = 'PROCESSING', attempt_id = $2, \
     attempt = $3, started_ms = COALESCE(started_ms, $4), update_ms = $4 \
     WHERE id = $1 AND status IN ('NEW', 'PROCESSING')";

/// Claims the queued task of one batch (for `segport ingest`, which runs its own task).
const CLAIM_BATCH_TASK: &str = "UPDATE tasks SET state = 'running', attempt = attempt + 1, \
     attempt_id = $1, lease_owner = $2, lease_expires_ms = $3, snapshot_seq = NULL, updated_ms = $4 \
     WHERE batch_id = $5 AND state = 'queued' \
     RETURNING id, kind, org, sandbox, batch_id, job_id, attempt, attempt_id";

const HEARTBEAT: &str = "UPDATE tasks SET lease_expires_ms = $3, updated_ms = $4 \
     WHERE id = $1 AND attempt_id = $2 AND state = 'running' RETURNING job_id";

/// Whether a job's running tasks must stop: a cancel was requested, or the job ended (a unit
/// of it failed for good).
const JOB_CANCEL_FLAG: &str =
    "SELECT cancel_requested OR status <> 'PROCESSING' FROM export_jobs WHERE id = $1";

const RELEASE_TASK: &str = "UPDATE tasks SET state = 'queued', attempt = attempt - 1, \
     lease_owner = NULL, lease_expires_ms = NULL, updated_ms = $3, \
     snapshot_seq = CASE WHEN unit_no IS NULL THEN NULL ELSE snapshot_seq END \
     WHERE id = $1 AND attempt_id = $2 AND state = 'running'";

const FAIL_TASK: &str = "UPDATE tasks SET state = 'failed', lease_owner = NULL, \
     lease_expires_ms = NULL, updated_ms = $3 WHERE id = $1 AND attempt_id = $2 \
     AND state = 'running' RETURNING batch_id, job_id";

const FINISH_TASK: &str = "UPDATE tasks SET state = 'done', lease_owner = NULL, \
     lease_expires_ms = NULL, updated_ms = $3 WHERE id = $1 AND attempt_id = $2 AND state = 'running'";

const FAIL_BATCH: &str = "UPDATE batches SET status = 'failed', errors = $2, \
     updated_ms = $3 WHERE id = $1";

const REAP_TASKS: &str = include_str!("queries/reap_tasks.sql");

const REQUEUE_JOB: &str =
    "UPDATE export_jobs SET status = 'NEW', progress = NULL, update_ms = $2 WHERE id = $1 AND status = 'PROCESSING'";

const FAIL_JOB: &str = "UPDATE export_jobs SET status = 'FAILED', errors = $2, \
     progress = NULL, finished_ms = $3, update_ms = $3 WHERE id = $1 AND status IN ('NEW', 'PROCESSING')";

/// Attempts whose files must stay: running ones, and committed units of jobs still running
/// (their output becomes the job's when the last unit commits).
const RUNNING_ATTEMPTS: &str = "SELECT attempt_id FROM tasks WHERE attempt_id IS NOT NULL \
     AND (state = 'running' OR (state = 'done' AND unit_no IS NOT NULL AND job_id IN \
     (SELECT id FROM export_jobs WHERE status = 'PROCESSING')))";

/// The snapshot and tenant of a running task (the planning attempt of a split).
const TASK_SNAPSHOT: &str = "SELECT snapshot_seq, org, sandbox FROM tasks \
     WHERE id = $1 AND attempt_id = $2 AND state = 'running'";

const INSERT_UNIT: &str = "INSERT INTO tasks (kind, org, sandbox, job_id, state, snapshot_seq, \
     unit_no, partition_no, partition_last, key_from, key_to, created_ms, updated_ms) \
     VALUES ('export', $1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $10)";

const SPLIT_JOB: &str = "UPDATE export_jobs SET units_total = $2, units_done = 0, \
     unit_schemas = $3, update_ms = $4 WHERE id = $1 AND status = 'PROCESSING'";

const UNIT_SCHEMAS: &str = "SELECT unit_schemas FROM export_jobs WHERE id = $1";

const UNIT_RESULT: &str = "UPDATE tasks SET result = $2 WHERE id = $1";

const UNIT_DONE: &str = "UPDATE export_jobs SET units_done = units_done + 1, update_ms = $2 \
     WHERE id = $1 AND status = 'PROCESSING' RETURNING units_done, units_total";

const UNIT_RESULTS: &str = "SELECT result FROM tasks \
     WHERE job_id = $1 AND unit_no IS NOT NULL AND state = 'done' ORDER BY unit_no";

/// Units of a failed job that have not started: they never will.
const DROP_QUEUED_UNITS: &str = "UPDATE tasks SET state = 'failed', updated_ms = $2 \
     WHERE job_id = $1 AND state = 'queued'";

const RECORD_INGEST: &str = include_str!("queries/record_ingest.sql");

const FINISH_INGEST_BATCH: &str = "UPDATE batches SET status = $2, record_count = $3, \
     failed_record_count = $4, errors = $5, completed_ms = $6, updated_ms = $7, \
     held_schema = $8, commit_seq = $9 WHERE id = $1";

const SUCCEED_JOB: &str = "UPDATE export_jobs SET status = 'SUCCEEDED', counters = $2, \
     warnings = $3, progress = NULL, finished_ms = $4, update_ms = $4 WHERE id = $1 AND status = 'PROCESSING'";

const SUCCEED_BATCH: &str = "UPDATE batches SET status = 'success', record_count = $2, \
     failed_record_count = 0, completed_ms = $3, updated_ms = $3 WHERE id = $1";

const INSERT_BATCH_FILE: &str = "INSERT INTO batch_files \
     (batch_id, name, path, row_count, byte_count, created_ms) VALUES ($1, $2, $3, $4, $5, $6)";

/// A delta schedule's mark moves to the store commit its successful job `$1` read (the
/// planning task's snapshot for a job run as units), under the key the job ran with.
const MOVE_DELTA_MARK: &str = "UPDATE schedules SET \
     delta_mark_ms = (SELECT t.snapshot_ingest_ms FROM tasks t \
         WHERE t.job_id = $1 AND t.unit_no IS NULL), \
     delta_key = (SELECT j.delta_key FROM export_jobs j WHERE j.id = $1) \
     WHERE id = (SELECT j.schedule_id FROM export_jobs j WHERE j.id = $1 AND j.delta_key IS NOT NULL) \
     AND (SELECT t.snapshot_ingest_ms FROM tasks t WHERE t.job_id = $1 AND t.unit_no IS NULL) \
     IS NOT NULL";

const JOB_PROGRESS: &str = "UPDATE export_jobs SET progress = $3, update_ms = $4 \
     WHERE id = $1 AND attempt_id = $2 AND status = 'PROCESSING'";

impl SqlCatalog {
    /// One claim: `None` when it went past the tenant's cap and was rolled back (claim again),
    /// `Some(None)` when there is nothing to claim.
    async fn claim_once(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
        tenant_cap: Option<u32>,
        locality: &Locality<'_>,
    ) -> Result<Option<Option<ClaimedTask>>> {
        let held: Vec<String> = locality.held.iter().map(u32::to_string).collect();
        let attempt_id = segport_model::ids::new_uuid().to_string();
        let cap = tenant_cap.map(i64::from);
        let mut tx = self.write().begin().await?;
        let statement = if cap.is_some() { DIALECT.claim_task_capped } else { DIALECT.claim_task };
        let mut claim = sqlx::query_as::<_, ClaimRow>(statement)
            .bind(&attempt_id)
            .bind(owner)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(held.join(","))
            .bind(i32::from(locality.leave_to_holders))
            .bind(now_ms - locality.live_ms);
        if let Some(cap) = cap {
            claim = claim.bind(cap);
        }
        let claimed: Option<ClaimedTask> =
            claim.fetch_optional(&mut *tx).await?.map(TryInto::try_into).transpose()?;
        if let (Some(task), Some(cap)) = (&claimed, cap) {
            let (org, sandbox) = (task.tenant.org.as_str(), task.tenant.sandbox.as_str());
            if let Some(lock) = DIALECT.lock_tenant_claims {
                sqlx::query(lock).bind(org).bind(sandbox).execute(&mut *tx).await?;
            }
            // This claim included, as every claim of the tenant committed before the lock.
            let (running,): (i64,) =
                sqlx::query_as(TENANT_RUNNING).bind(org).bind(sandbox).fetch_one(&mut *tx).await?;
            if running > cap {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        if let Some(task) = &claimed {
            sqlx::query(TAKE_TURN)
                .bind(task.tenant.org.as_str())
                .bind(task.tenant.sandbox.as_str())
                .execute(&mut *tx)
                .await?;
        }
        // An export job shows PROCESSING, with the attempt as its compute job id (the
        // planning attempt's, for a job split into units).
        if let Some(job_id) = claimed.as_ref().filter(|c| c.unit.is_none()).and_then(|c| c.job_id) {
            let attempt = claimed.as_ref().map_or(0, |c| c.attempt);
            sqlx::query(START_JOB)
                .bind(job_id)
                .bind(&attempt_id)
                .bind(attempt)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(claimed))
    }

    /// Ends the task under `lease` inside `tx`, the fence of every commit: `LeaseLost` when the
    /// task is no longer running under this attempt (then nothing of `tx` may commit).
    async fn fence(tx: &mut Tx<'_>, lease: &TaskLease, now_ms: i64) -> Result<()> {
        let fenced = sqlx::query(FINISH_TASK)
            .bind(lease.task_id)
            .bind(&lease.attempt_id)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if fenced != 1 {
            return Err(CatalogError::LeaseLost);
        }
        Ok(())
    }

    /// Fails an export job and its open batches with `errors`.
    async fn fail_job(
        tx: &mut Tx<'_>,
        job_id: i64,
        errors: &[BatchError],
        now_ms: i64,
    ) -> Result<()> {
        let job_errors: Vec<JobError> = errors
            .iter()
            .map(|e| JobError {
                code: e.code.clone(),
                msg: e.description.clone(),
                call_stack: String::new(),
            })
            .collect();
        let failed = sqlx::query(FAIL_JOB)
            .bind(job_id)
            .bind(serde_json::to_string(&job_errors)?)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if failed == 1 {
            Self::emit_job_end(tx, job_id, now_ms).await?;
        }
        sqlx::query(FAIL_JOB_BATCHES).bind(job_id).bind(now_ms).execute(&mut **tx).await?;
        sqlx::query(DROP_QUEUED_UNITS).bind(job_id).bind(now_ms).execute(&mut **tx).await?;
        Ok(())
    }

    /// Records a finished export inside `tx`: the job SUCCEEDED with its counters and
    /// warnings, its batches successful with their files. `LeaseLost` when the job is no
    /// longer running.
    async fn record_export(
        tx: &mut Tx<'_>,
        job_id: i64,
        batches: &[ExportedBatch],
        counters: &ExportCounters,
        warnings: &[JobWarning],
        now_ms: i64,
    ) -> Result<()> {
        let succeeded = sqlx::query(SUCCEED_JOB)
            .bind(job_id)
            .bind(serde_json::to_string(counters)?)
            .bind(serde_json::to_string(warnings)?)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if succeeded != 1 {
            return Err(CatalogError::LeaseLost);
        }
        sqlx::query(MOVE_DELTA_MARK).bind(job_id).execute(&mut **tx).await?;
        for batch in batches {
            sqlx::query(SUCCEED_BATCH)
                .bind(batch.batch_id.as_str())
                .bind(batch.rows)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
            for f in &batch.files {
                sqlx::query(INSERT_BATCH_FILE)
                    .bind(batch.batch_id.as_str())
                    .bind(&f.name)
                    .bind(&f.path)
                    .bind(f.rows)
                    .bind(f.bytes)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Self::emit_job_end(tx, job_id, now_ms).await?;
        Ok(())
    }

    /// `Cancelled` when export job `job_id` must not commit (a cancel, or it ended).
    async fn check_not_cancelled(tx: &mut Tx<'_>, job_id: i64) -> Result<()> {
        let cancel: Option<(bool,)> =
            sqlx::query_as(JOB_CANCEL_FLAG).bind(job_id).fetch_optional(&mut **tx).await?;
        if cancel.is_none_or(|(c,)| c) {
            return Err(CatalogError::Cancelled);
        }
        Ok(())
    }
}

#[async_trait]
impl TaskQueue for SqlCatalog {
    async fn claim_task_preferring(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
        tenant_cap: Option<u32>,
        locality: &Locality<'_>,
    ) -> Result<Option<ClaimedTask>> {
        // A claim that raced another claim of the same tenant past its cap is rolled back and
        // made again: by then the other claim has committed, and the claim statement passes
        // the tenant over. A few rounds settle any race.
        for _ in 0..CAPPED_CLAIM_ROUNDS {
            if let Some(claimed) =
                self.claim_once(owner, lease_ms, now_ms, tenant_cap, locality).await?
            {
                return Ok(claimed);
            }
        }
        Ok(None)
    }
    async fn announce_cache(&self, owner: &str, held: &[u32], now_ms: i64) -> Result<()> {
        const GONE_MS: i64 = 3_600_000;
        let held: Vec<String> = held.iter().map(u32::to_string).collect();
        let mut tx = self.write().begin().await?;
        sqlx::query(ANNOUNCE_CACHE)
            .bind(owner)
            .bind(held.join(","))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(FORGET_GONE_CACHES).bind(now_ms - GONE_MS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_cache(&self, owner: &str) -> Result<()> {
        sqlx::query(FORGET_CACHE).bind(owner).execute(self.write()).await?;
        Ok(())
    }

    async fn register_worker(&self, worker: &WorkerInfo, now_ms: i64) -> Result<()> {
        const GONE_MS: i64 = 3_600_000;
        let mut tx = self.write().begin().await?;
        sqlx::query(REGISTER_WORKER)
            .bind(&worker.owner)
            .bind(&worker.host)
            .bind(i64::from(worker.slots))
            .bind(worker.started_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(FORGET_GONE_WORKERS).bind(now_ms - GONE_MS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_worker(&self, owner: &str) -> Result<()> {
        sqlx::query(FORGET_WORKER).bind(owner).execute(self.write()).await?;
        Ok(())
    }

    async fn claim_batch_task(
        &self,
        owner: &str,
        batch_id: &BatchId,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<ClaimedTask>> {
        let attempt_id = segport_model::ids::new_uuid().to_string();
        sqlx::query_as::<_, ClaimRow>(CLAIM_BATCH_TASK)
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

    async fn heartbeat(&self, lease: &TaskLease, lease_ms: i64, now_ms: i64) -> Result<Heartbeat> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(HEARTBEAT)
            .bind(lease.task_id)
            .bind(&lease.attempt_id)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .fetch_optional(self.write())
            .await?;
        let Some((job_id,)) = row else {
            return Ok(Heartbeat { alive: false, cancel_requested: false });
        };
        let cancel_requested = match job_id {
            Some(job) => sqlx::query_as::<_, (bool,)>(JOB_CANCEL_FLAG)
                .bind(job)
                .fetch_optional(self.read())
                .await?
                .is_some_and(|(c,)| c),
            None => false,
        };
        Ok(Heartbeat { alive: true, cancel_requested })
    }

    async fn release_task(&self, lease: &TaskLease, now_ms: i64) -> Result<bool> {
        let n = sqlx::query(RELEASE_TASK)
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
        lease: &TaskLease,
        errors: &[BatchError],
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.write().begin().await?;
        let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(FAIL_TASK)
            .bind(lease.task_id)
            .bind(&lease.attempt_id)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((batch_id, job_id)) = row else { return Ok(false) };
        if let Some(batch_id) = batch_id {
            sqlx::query(FAIL_BATCH)
                .bind(&batch_id)
                .bind(serde_json::to_string(errors)?)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            Self::emit_batch_end(&mut tx, &batch_id, now_ms).await?;
        }
        if let Some(job_id) = job_id {
            Self::fail_job(&mut tx, job_id, errors, now_ms).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reap_expired_tasks(&self, now_ms: i64) -> Result<Vec<ReapedTask>> {
        let mut tx = self.write().begin().await?;
        type Reaped = (i64, String, String, Option<String>, Option<i64>, Option<i32>);
        let rows: Vec<Reaped> = sqlx::query_as(REAP_TASKS).bind(now_ms).fetch_all(&mut *tx).await?;
        let lost_error = |what: &str| BatchError {
            code: segport_model::codes::FailureCode::WorkerLost.as_str().to_owned(),
            description: segport_model::codes::worker_lost_message(what),
            rows: Vec::new(),
        };
        let lost = serde_json::to_string(&[lost_error("batch")])?;
        let mut reaped = Vec::with_capacity(rows.len());
        for (task_id, kind, state, batch_id, job_id, unit_no) in rows {
            let requeued = state == "queued";
            if let (false, Some(batch_id)) = (requeued, batch_id) {
                sqlx::query(FAIL_BATCH)
                    .bind(&batch_id)
                    .bind(&lost)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                Self::emit_batch_end(&mut tx, &batch_id, now_ms).await?;
            }
            match (requeued, job_id) {
                // A unit queued again leaves its job running: the other units go on.
                (true, Some(_)) if unit_no.is_some() => {}
                (true, Some(job)) => {
                    sqlx::query(REQUEUE_JOB).bind(job).bind(now_ms).execute(&mut *tx).await?;
                }
                (false, Some(job)) => {
                    let errors = [lost_error("export")];
                    Self::fail_job(&mut tx, job, &errors, now_ms).await?;
                }
                _ => {}
            }
            reaped.push(ReapedTask { task_id, kind: task_kind(&kind)?, requeued });
        }
        tx.commit().await?;
        if reaped.iter().any(|r| r.requeued) {
            self.announce_tasks().await;
        }
        Ok(reaped)
    }

    async fn running_attempts(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(RUNNING_ATTEMPTS).fetch_all(self.read()).await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    async fn wait_for_tasks(&self, timeout: std::time::Duration) {
        self.ensure_listening();
        let _ = tokio::time::timeout(timeout, self.task_signal().notified()).await;
    }

    async fn set_job_progress(
        &self,
        lease: &TaskLease,
        job_id: i64,
        progress: &JobProgress,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(JOB_PROGRESS)
            .bind(job_id)
            .bind(&lease.attempt_id)
            .bind(serde_json::to_string(progress)?)
            .bind(now_ms)
            .execute(self.write())
            .await?;
        Ok(())
    }

    async fn commit_ingest(&self, c: IngestCommit) -> Result<IngestCommitted> {
        let (org, sandbox) = (c.tenant.org.as_str(), c.tenant.sandbox.as_str());
        let mut tx = self.write().begin().await?;
        // The sandbox row serialises commits: ingest times follow commit order.
        let SandboxCommit { seq, last_ingest_ms, schema_version } =
            Self::next_commit(&mut tx, &c.tenant).await?;
        // The fence before the schema check: a commit sent again after it was applied
        // (its answer lost to a reset connection) meets a finished task and is told
        // LeaseLost, never SchemaChanged, on which the caller would delete the files it
        // just committed. A refusal below rolls the fence back with everything else.
        Self::fence(&mut tx, &c.lease, c.now_ms).await?;
        let (_, _, _, released_version): (i64, String, String, i64) =
            sqlx::query_as(SELECT_SCHEMA_VERSION)
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
            return Err(CatalogError::SchemaChanged);
        }
        let success = c.record_count > 0;
        let completed_ms = c.now_ms.max(last_ingest_ms + 1);
        let status = if success { BatchStatus::Success } else { BatchStatus::Failed };
        if success {
            sqlx::query(RECORD_INGEST)
                .bind(org)
                .bind(sandbox)
                .bind(completed_ms)
                .bind(c.kind.as_str())
                .bind(c.schema.as_deref())
                .execute(&mut *tx)
                .await?;
            for f in &c.files {
                sqlx::query(INSERT_STORE_FILE)
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
                    .bind(fences_text(&f.key_fences)?)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(FINISH_INGEST_BATCH)
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
        Self::emit_batch_end(&mut tx, c.batch_id.as_str(), c.now_ms).await?;
        tx.commit().await?;
        Ok(IngestCommitted { completed_ms, seq, status })
    }

    async fn commit_export(&self, c: ExportCommit) -> Result<()> {
        let mut tx = self.write().begin().await?;
        Self::fence(&mut tx, &c.lease, c.now_ms).await?;
        Self::check_not_cancelled(&mut tx, c.job_id).await?;
        Self::record_export(&mut tx, c.job_id, &c.batches, &c.counters, &c.warnings, c.now_ms)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn split_export(
        &self,
        lease: &TaskLease,
        job_id: i64,
        units: &[NewUnit],
        schemas: &str,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().begin().await?;
        let planned: Option<(Option<i64>, String, String)> = sqlx::query_as(TASK_SNAPSHOT)
            .bind(lease.task_id)
            .bind(&lease.attempt_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((Some(snapshot_seq), org, sandbox)) = planned else {
            return Err(CatalogError::LeaseLost);
        };
        Self::fence(&mut tx, lease, now_ms).await?;
        Self::check_not_cancelled(&mut tx, job_id).await?;
        for (no, unit) in units.iter().enumerate() {
            sqlx::query(INSERT_UNIT)
                .bind(&org)
                .bind(&sandbox)
                .bind(job_id)
                .bind(snapshot_seq)
                .bind(i64::try_from(no).unwrap_or(i64::MAX))
                .bind(i64::from(*unit.partitions.start()))
                .bind(i64::from(*unit.partitions.end()))
                .bind(&unit.key_from)
                .bind(&unit.key_to)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        let total = i64::try_from(units.len()).unwrap_or(i64::MAX);
        let split = sqlx::query(SPLIT_JOB)
            .bind(job_id)
            .bind(total)
            .bind(schemas)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if split != 1 {
            return Err(CatalogError::Cancelled);
        }
        tx.commit().await?;
        self.announce_tasks().await;
        Ok(())
    }

    async fn unit_schemas(&self, job_id: i64) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as(UNIT_SCHEMAS).bind(job_id).fetch_optional(self.read()).await?;
        Ok(row.and_then(|(s,)| s))
    }

    async fn commit_unit(&self, c: UnitCommit) -> Result<UnitCommitted> {
        let mut tx = self.write().begin().await?;
        Self::fence(&mut tx, &c.lease, c.now_ms).await?;
        Self::check_not_cancelled(&mut tx, c.job_id).await?;
        sqlx::query(UNIT_RESULT)
            .bind(c.lease.task_id)
            .bind(serde_json::to_string(&c.result)?)
            .execute(&mut *tx)
            .await?;
        // The job's row, locked by this update, serialises the units' commits: exactly one
        // of them sees the last count.
        let counted: Option<(i64, Option<i64>)> = sqlx::query_as(UNIT_DONE)
            .bind(c.job_id)
            .bind(c.now_ms)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((done, total)) = counted else { return Err(CatalogError::Cancelled) };
        if Some(done) != total {
            tx.commit().await?;
            return Ok(UnitCommitted::Unit);
        }
        let texts: Vec<(Option<String>,)> =
            sqlx::query_as(UNIT_RESULTS).bind(c.job_id).fetch_all(&mut *tx).await?;
        let mut results = Vec::with_capacity(texts.len());
        for (text,) in texts {
            let text = text.ok_or_else(|| corrupt("tasks.result", "a done unit without result"))?;
            results.push(
                serde_json::from_str::<UnitResult>(&text)
                    .map_err(|e| corrupt("tasks.result", e))?,
            );
        }
        let all = UnitResult::combine(results);
        Self::record_export(
            &mut tx,
            c.job_id,
            &all.batches,
            &all.counters,
            &all.warnings,
            c.now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(UnitCommitted::Job)
    }
}

#[async_trait]
impl QueueStats for SqlCatalog {
    async fn queue_depth(&self) -> Result<Vec<QueueDepth>> {
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as(QUEUE_DEPTH).fetch_all(self.read()).await?;
        rows.into_iter()
            .map(|(org, sandbox, kind, queued, running)| {
                Ok(QueueDepth { org, sandbox, kind: task_kind(&kind)?, queued, running })
            })
            .collect()
    }

    async fn live_workers(&self, seen_since_ms: i64) -> Result<Vec<WorkerInfo>> {
        let rows: Vec<(String, String, i64, i64, i64)> =
            sqlx::query_as(LIVE_WORKERS).bind(seen_since_ms).fetch_all(self.read()).await?;
        Ok(rows
            .into_iter()
            .map(|(owner, host, slots, started_ms, seen_ms)| WorkerInfo {
                owner,
                host,
                slots: u32::try_from(slots).unwrap_or(0),
                started_ms,
                seen_ms,
            })
            .collect())
    }

    async fn running_tasks(&self, tenant: Option<&Tenant>, limit: u32) -> Result<Vec<RunningTask>> {
        type Row = (
            i64,
            String,
            String,
            String,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<String>,
            i32,
            i64,
        );
        let query = match tenant {
            None => sqlx::query_as::<_, Row>(RUNNING_TASKS),
            Some(t) => sqlx::query_as::<_, Row>(RUNNING_TASKS_OF)
                .bind(t.org.as_str())
                .bind(t.sandbox.as_str()),
        };
        let rows = query.bind(i64::from(limit)).fetch_all(self.read()).await?;
        rows.into_iter()
            .map(|(id, kind, org, sandbox, job_id, batch_id, unit, owner, attempt, since_ms)| {
                Ok(RunningTask {
                    id,
                    kind: task_kind(&kind)?,
                    org,
                    sandbox,
                    job_id,
                    batch_id,
                    unit_no: unit.and_then(|u| u32::try_from(u).ok()),
                    owner: owner.unwrap_or_default(),
                    attempt,
                    since_ms,
                })
            })
            .collect()
    }
}
