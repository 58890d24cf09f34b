//! The task queue: ingest and export work claimed by workers under leases, and the commits that
//! end it, each fenced by its lease so that an attempt taken over by another commits nothing.

use std::ops::RangeInclusive;

use async_trait::async_trait;
use segport_model::batch::{BatchError, BatchStatus};
use segport_model::job::{ExportCounters, JobProgress, JobWarning};
use segport_model::{BatchId, Tenant};

use crate::batches::BatchFile;
use crate::lease::TaskLease;
use crate::store::{NewStoreFile, StoreKind};
use crate::Result;

/// What kind of work a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Ingest,
    Export,
}

/// A task a worker has claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    pub lease: TaskLease,
    pub kind: TaskKind,
    pub tenant: Tenant,
    pub batch_id: Option<BatchId>,
    pub job_id: Option<i64>,
    pub attempt: i32,
    /// For a unit of an export job split across workers: which part of the job it is.
    pub unit: Option<ExportUnit>,
}

/// One work unit of an export job: the profiles of its partitions with keys from `key_from`
/// (included) to `key_to` (excluded; `None` leaves an end open), read at the store commit the
/// job's plan fixed. A unit of several partitions takes them whole (its key range is open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportUnit {
    pub no: u32,
    pub partitions: RangeInclusive<u32>,
    pub key_from: Option<String>,
    pub key_to: Option<String>,
    pub snapshot_seq: i64,
}

/// What a claiming worker's cache holds, and whether it leaves units to the workers that
/// hold their partitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Locality<'a> {
    /// The partitions of the store files in the worker's cache.
    pub held: &'a [u32],
    /// Passes over the units of partitions that another live worker holds and this one does
    /// not (a worker does so until it has found nothing else for a while).
    pub leave_to_holders: bool,
    /// How recently a worker must have announced its cache to count as live.
    pub live_ms: i64,
}

/// A unit as a plan makes it (numbered by its position in the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUnit {
    pub partitions: RangeInclusive<u32>,
    pub key_from: Option<String>,
    pub key_to: Option<String>,
}

/// What one committed unit of an export produced, kept until the last unit commits the job.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitResult {
    pub batches: Vec<ExportedBatch>,
    pub counters: ExportCounters,
    pub warnings: Vec<JobWarning>,
    pub profiles_scanned: u64,
}

impl UnitResult {
    /// The results of a job's units (in unit order) as the job's: each batch's files in unit
    /// order and rows summed, counters summed, warnings once each. Units with no rows for a
    /// batch write an empty file only when they are the first unit; it is kept only when no unit
    /// had rows for that batch, so that every batch holds at least one file, as a job run
    /// whole gives it.
    pub fn combine(results: impl IntoIterator<Item = UnitResult>) -> UnitResult {
        let mut all = UnitResult::default();
        for result in results {
            for batch in result.batches {
                match all.batches.iter_mut().find(|b| b.batch_id == batch.batch_id) {
                    Some(into) => {
                        into.rows += batch.rows;
                        into.files.extend(batch.files);
                    }
                    None => all.batches.push(batch),
                }
            }
            all.counters.total += result.counters.total;
            for (namespace, n) in result.counters.by_namespace {
                *all.counters.by_namespace.entry(namespace).or_default() += n;
            }
            for warning in result.warnings {
                if !all.warnings.contains(&warning) {
                    all.warnings.push(warning);
                }
            }
            all.profiles_scanned += result.profiles_scanned;
        }
        for batch in &mut all.batches {
            if batch.rows > 0 {
                batch.files.retain(|f| f.rows > 0);
            } else {
                batch.files.truncate(1);
            }
        }
        all
    }
}

/// The result of a unit attempt, committed in one transaction fenced by its lease and by the
/// job's cancel flag; the last unit's commit commits the job.
#[derive(Debug, Clone)]
pub struct UnitCommit {
    pub lease: TaskLease,
    pub job_id: i64,
    pub result: UnitResult,
    pub now_ms: i64,
}

/// What a unit's commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitCommitted {
    /// The unit is recorded; others are still to come.
    Unit,
    /// It was the last: the job, its batches and metrics are committed.
    Job,
}

/// A unit of a job as its record lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub no: u32,
    pub partitions: RangeInclusive<u32>,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// The worker running it (a unit's lease owner is cleared when it ends).
    pub worker: Option<String>,
    pub attempt: i32,
    /// Profiles it exported and scanned, once committed.
    pub exported: Option<u64>,
    pub scanned: Option<u64>,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// False once the lease is no longer this attempt's: the worker must stop and not commit.
    pub alive: bool,
    /// A cancel was requested (export jobs).
    pub cancel_requested: bool,
}

/// A task whose lease expired, as the reaper left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedTask {
    pub task_id: i64,
    pub kind: TaskKind,
    /// Requeued for another attempt; otherwise failed for good (`WORKER_LOST`).
    pub requeued: bool,
}

/// The result of an ingest attempt, committed in one transaction fenced by its lease.
#[derive(Debug, Clone)]
pub struct IngestCommit {
    pub lease: TaskLease,
    pub tenant: Tenant,
    pub batch_id: BatchId,
    pub kind: StoreKind,
    pub files: Vec<NewStoreFile>,
    pub record_count: i64,
    pub failed_record_count: i64,
    pub errors: Vec<BatchError>,
    /// The widened union schema of `kind`, when the batch changed it.
    pub schema: Option<String>,
    /// What the batch's files hold of the union schema (see
    /// [`StoreManifest::held_schemas`](crate::StoreManifest::held_schemas)).
    pub held: String,
    /// The schema version the attempt started from; a commit on another fails with
    /// [`CatalogError::SchemaChanged`](crate::CatalogError::SchemaChanged) and the attempt
    /// types its records again.
    pub schema_version: i64,
    pub now_ms: i64,
}

/// What an ingest commit recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestCommitted {
    /// The batch's ingest time (`completed`), strictly increasing per sandbox.
    pub completed_ms: i64,
    pub seq: i64,
    pub status: BatchStatus,
}

/// One destination batch of a finished export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedBatch {
    pub batch_id: BatchId,
    pub files: Vec<BatchFile>,
    pub rows: i64,
}

/// The result of an export attempt, committed in one transaction fenced by its lease and by the
/// job's cancel flag.
#[derive(Debug, Clone)]
pub struct ExportCommit {
    pub lease: TaskLease,
    pub job_id: i64,
    pub batches: Vec<ExportedBatch>,
    pub counters: ExportCounters,
    pub warnings: Vec<JobWarning>,
    pub now_ms: i64,
}

/// The queue of ingest and export tasks, as workers use it.
#[async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    /// Claims the oldest queued task for `owner`, with a lease until `now_ms + lease_ms`.
    /// Tenants take turns: the task claimed belongs to the tenant whose last claim is oldest.
    async fn claim_task(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<ClaimedTask>> {
        self.claim_task_within(owner, lease_ms, now_ms, None).await
    }
    /// [`Self::claim_task`], skipping the tenants that already run `tenant_cap` tasks: however
    /// many workers claim at once, no tenant runs more than that.
    async fn claim_task_within(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
        tenant_cap: Option<u32>,
    ) -> Result<Option<ClaimedTask>> {
        self.claim_task_preferring(owner, lease_ms, now_ms, tenant_cap, &Locality::default()).await
    }
    /// [`Self::claim_task_within`], keeping units where their files are: within the tenant
    /// whose turn it is, the units of the partitions the worker holds come first, and a unit
    /// of a partition that another live worker holds is left to it for a while (see
    /// [`Locality`]).
    async fn claim_task_preferring(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
        tenant_cap: Option<u32>,
        locality: &Locality<'_>,
    ) -> Result<Option<ClaimedTask>>;
    /// Records the partitions `held` in the local cache of worker `owner`, seen at `now_ms`
    /// (and forgets workers not seen for an hour).
    async fn announce_cache(&self, owner: &str, held: &[u32], now_ms: i64) -> Result<()>;
    /// Forgets the cache of worker `owner` (it stops).
    async fn forget_cache(&self, owner: &str) -> Result<()>;
    /// Records that worker `worker.owner` is alive at `now_ms` (and forgets workers not seen
    /// for an hour).
    async fn register_worker(&self, worker: &WorkerInfo, now_ms: i64) -> Result<()>;
    /// Forgets worker `owner` (it stops).
    async fn forget_worker(&self, owner: &str) -> Result<()>;
    /// Claims the queued task of one batch, if it is still queued.
    async fn claim_batch_task(
        &self,
        owner: &str,
        batch_id: &BatchId,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<ClaimedTask>>;
    async fn heartbeat(&self, lease: &TaskLease, lease_ms: i64, now_ms: i64) -> Result<Heartbeat>;
    /// Hands a task back without using up its attempt (graceful shutdown).
    async fn release_task(&self, lease: &TaskLease, now_ms: i64) -> Result<bool>;
    /// Fails a task and its batch or job for good, with `errors` (their `code` and
    /// `description` become a job's `errors[].code` and `msg`).
    async fn fail_task(
        &self,
        lease: &TaskLease,
        errors: &[BatchError],
        now_ms: i64,
    ) -> Result<bool>;
    /// Requeues tasks whose lease expired, or fails them after their last attempt.
    async fn reap_expired_tasks(&self, now_ms: i64) -> Result<Vec<ReapedTask>>;
    /// Attempt ids of running tasks (their private files must not be swept).
    async fn running_attempts(&self) -> Result<Vec<String>>;
    /// Waits until a task may have been queued, or `timeout` passes.
    async fn wait_for_tasks(&self, timeout: std::time::Duration);
    /// Records a running job's progress (ignored once the lease is gone).
    async fn set_job_progress(
        &self,
        lease: &TaskLease,
        job_id: i64,
        progress: &JobProgress,
        now_ms: i64,
    ) -> Result<()>;
    /// Commits an ingest attempt: files, batch status and counts, union schema and ingest time,
    /// all or nothing, only while `commit.lease` holds
    /// ([`CatalogError::LeaseLost`](crate::CatalogError::LeaseLost) otherwise).
    async fn commit_ingest(&self, commit: IngestCommit) -> Result<IngestCommitted>;
    /// Commits an export attempt: files, batches, job status and metrics. `LeaseLost` when the
    /// lease is gone, `Cancelled` when a cancel was requested (nothing is committed then).
    async fn commit_export(&self, commit: ExportCommit) -> Result<()>;
    /// Ends the planning attempt under `lease` by splitting export job `job_id` into `units`,
    /// queued as tasks that read the attempt's snapshot (kept until they end), with the union
    /// schemas `schemas` of that snapshot. `LeaseLost` or `Cancelled` as for a commit.
    async fn split_export(
        &self,
        lease: &TaskLease,
        job_id: i64,
        units: &[NewUnit],
        schemas: &str,
        now_ms: i64,
    ) -> Result<()>;
    /// The union schemas a split job's plan recorded.
    async fn unit_schemas(&self, job_id: i64) -> Result<Option<String>>;
    /// Commits a unit attempt; the last unit of a job commits the job (its batches, files,
    /// status and metrics summed over units) in the same transaction.
    async fn commit_unit(&self, commit: UnitCommit) -> Result<UnitCommitted>;
}

/// How many tasks of one kind a tenant has waiting and running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub org: String,
    pub sandbox: String,
    pub kind: TaskKind,
    pub queued: i64,
    pub running: i64,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Ingest => "ingest",
            TaskKind::Export => "export",
        }
    }
}

/// A worker process, as it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub owner: String,
    pub host: String,
    pub slots: u32,
    pub started_ms: i64,
    pub seen_ms: i64,
}

/// A task being run, as operators watch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub id: i64,
    pub kind: TaskKind,
    pub org: String,
    pub sandbox: String,
    pub job_id: Option<i64>,
    pub batch_id: Option<String>,
    /// The unit of its job, when the job runs as units.
    pub unit_no: Option<u32>,
    pub owner: String,
    pub attempt: i32,
    /// When it was claimed (its last change).
    pub since_ms: i64,
}

/// The queue as operators watch it: read-only, so that the API's metrics address and the
/// console can show it without seeing the queue's workings.
#[async_trait]
pub trait QueueStats: Send + Sync + 'static {
    /// Queued and running tasks by tenant and kind; tenants with none left out.
    async fn queue_depth(&self) -> Result<Vec<QueueDepth>>;
    /// Workers seen at or after `seen_since_ms`, by owner.
    async fn live_workers(&self, seen_since_ms: i64) -> Result<Vec<WorkerInfo>>;
    /// Running tasks, the oldest first, at most `limit`; only `tenant`'s when given.
    async fn running_tasks(
        &self,
        tenant: Option<&segport_model::Tenant>,
        limit: u32,
    ) -> Result<Vec<RunningTask>>;
}
