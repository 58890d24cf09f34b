//! The catalog: every piece of segport state that must change transactionally.
//!
//! Export jobs, datasets, batches, merge policies and API tokens live here, on PostgreSQL in
//! production or on an embedded SQLite file by default. Both backends implement [`Catalog`] with
//! the same SQL (see [`sql`]) and pass the same behaviour suite. All SQL of segport lives in this
//! crate; callers see domain types from `segport-model` only.

mod error;
pub mod group;
mod postgres;
mod sql;
mod sqlite;
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use segport_model::batch::{Batch, BatchError, BatchKind, BatchStatus};
use segport_model::dataset::Dataset;
use segport_model::job::{ExportJobRecord, ExportJobSpec, JobStatus};
use segport_model::merge_policy::{MergePolicy, MergePolicyInput};
use segport_model::{BatchId, DatasetId, Tenant};

pub use error::CatalogError;
pub use postgres::PgCatalog;
pub use sqlite::SqliteCatalog;

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Which database a catalog runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Connection settings shared by both backends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `postgres://…` or `sqlite://…` (a path; the file is created when missing).
    pub url: String,
    pub max_connections: u32,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 16 }
    }
}

/// Opens the catalog a URL names. Migrations are not applied; call [`Catalog::migrate`].
pub async fn connect(options: &ConnectOptions) -> Result<Arc<dyn Catalog>> {
    let url = options.url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgCatalog::connect(options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteCatalog::connect(options).await?))
    } else {
        Err(CatalogError::Config(format!(
            "unsupported database URL scheme in {:?}; use postgres://… or sqlite://…",
            redact_url(url)
        )))
    }
}

/// A URL with its password (if any) replaced, for logs and messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => {
                    format!("{}://{}:***{}", &url[..scheme_end], &creds[..colon], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// An API token as stored: only its SHA-256 is kept.
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

/// A page request over a tenant's export jobs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobListQuery {
    pub status: Option<JobStatus>,
    /// Keyset cursor `(creation_ms, id)`: return only jobs strictly after it in list order.
    pub after: Option<(i64, i64)>,
    /// Rows to skip (the legacy integer `offset`); applied after the cursor.
    pub skip: u64,
    pub limit: u32,
}

/// A page request over datasets or batches (Catalog's `limit` and `start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchFilter {
    pub dataset_id: Option<DatasetId>,
    pub status: Option<BatchStatus>,
}

/// A job ready to insert: the spec with its batches allocated and its policy resolved.
#[derive(Debug, Clone)]
pub struct NewExportJob {
    pub spec: ExportJobSpec,
    pub merge_policy: MergePolicy,
    /// What the job says from its creation on (ignored keys, fields not known yet); a run adds
    /// its own.
    pub warnings: Vec<segport_model::job::JobWarning>,
    pub request_id: String,
    pub now_ms: i64,
}

/// What `DELETE /export/jobs/{id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// A NEW job, failed at once as cancelled.
    CancelledNew,
    /// A PROCESSING job, flagged for its worker.
    FlaggedRunning,
    /// A finished job, deleted (its committed batches stay).
    DeletedFinished,
}

/// A sandbox's store: partition count, commit sequence and attribute schemas (JSON documents the
/// store crate defines; the catalog only keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    pub partitions: u32,
    pub commit_seq: i64,
    pub last_ingest_ms: i64,
    pub profile_schema: String,
    pub event_schema: String,
    /// Bumped whenever either schema changes; commits name the version they extended.
    pub schema_version: i64,
}

/// Whether a store file holds profile fragments or events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    Profile,
    Event,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Profile => "profile",
            StoreKind::Event => "event",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "profile" => Some(StoreKind::Profile),
            "event" => Some(StoreKind::Event),
            _ => None,
        }
    }
}

/// A Parquet file of the store, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    pub id: i64,
    pub dataset_id: String,
    pub kind: StoreKind,
    pub partition: u32,
    pub path: String,
    pub batch_id: Option<String>,
    /// The ingest time of all its rows; `None` for compacted files, whose rows carry their own.
    pub ingest_ms: Option<i64>,
    /// The commit that added it.
    pub seq: i64,
    pub rows: i64,
    pub bytes: i64,
    pub min_key: String,
    pub max_key: String,
}

/// A file to add to the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStoreFile {
    pub dataset_id: String,
    pub kind: StoreKind,
    pub partition: u32,
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub min_key: String,
    pub max_key: String,
}

/// The files of a sandbox's store at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSnapshot {
    pub seq: i64,
    pub files: Vec<StoreFile>,
    /// The union schemas as of `seq`, read with it: they type exactly the snapshot's files.
    pub profile_schema: String,
    pub event_schema: String,
}

/// See [`Catalog::revert_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertPlan {
    /// The commit the batch's records were stored at: their rows' `__seq` in compacted files.
    pub commit_seq: i64,
    pub compacted: Vec<StoreFile>,
}

/// What the live datasets of a sandbox hold of one union schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSchemas {
    pub schema_version: i64,
    /// The union schema as the sandbox holds it now.
    pub schema: String,
    /// One per successful ingest batch of a live dataset of the kind: the part of the schema
    /// its files hold; `None` for a batch committed before this was recorded.
    pub held: Vec<Option<String>>,
}

/// How many export jobs of a tenant are in a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub org: String,
    pub sandbox: String,
    pub status: JobStatus,
    pub n: i64,
}

/// A file uploaded to an ingest batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub name: String,
    /// The key of its bytes under the batch's uploads folder; `None` for uploads from before
    /// keys existed, whose bytes live at their name.
    pub object: Option<String>,
    pub bytes: i64,
    pub uploaded_ms: i64,
}

/// What became of an upload's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadRecorded {
    /// The batch no longer takes files (it is not `loading`); nothing changed.
    Refused,
    /// Recorded, replacing the earlier upload of the same name if there was one.
    Recorded { replaced: Option<Upload> },
}

/// What kind of work a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Ingest,
    Export,
}

/// The right to work on a task: its id and the attempt that holds it. Every change a worker
/// makes names its lease; a lease taken over by another attempt fences the old one out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLease {
    pub task_id: i64,
    pub attempt_id: String,
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
    /// What the batch's files hold of the union schema (see [`Catalog::held_schemas`]).
    pub held: String,
    /// The schema version the attempt started from; a commit on another fails with
    /// [`CatalogError::SchemaChanged`] and the attempt types its records again.
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

/// A file an export wrote into one of its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFile {
    pub name: String,
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
}

/// One destination batch of a finished export.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub counters: segport_model::job::ExportCounters,
    pub warnings: Vec<segport_model::job::JobWarning>,
    pub now_ms: i64,
}

/// How a batch stands after a COMPLETE or ABORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTransition {
    pub kind: BatchKind,
    pub status: BatchStatus,
    /// This call changed the status (false for a repeated or refused call).
    pub changed: bool,
}

/// The state segport keeps transactionally. Every tenant-facing method is scoped by [`Tenant`]:
/// another tenant's rows are invisible, exactly as if they did not exist.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Applies the embedded migrations of this backend.
    async fn migrate(&self) -> Result<()>;

    /// Makes sure a sandbox exists, creating it with its default merge policy on first use.
    async fn ensure_sandbox(&self, tenant: &Tenant, now_ms: i64) -> Result<()>;

    // Datasets.
    async fn create_dataset(&self, dataset: &Dataset) -> Result<()>;
    /// Stores a dataset's name, description and tags (the rest never changes); false when it
    /// no longer exists.
    async fn update_dataset(&self, dataset: &Dataset) -> Result<bool>;
    async fn get_dataset(&self, tenant: &Tenant, id: &DatasetId) -> Result<Option<Dataset>>;
    async fn list_datasets(&self, tenant: &Tenant, page: &ListQuery) -> Result<Vec<Dataset>>;

    // Batches.
    async fn get_batch(&self, tenant: &Tenant, id: &BatchId) -> Result<Option<Batch>>;
    async fn list_batches(
        &self,
        tenant: &Tenant,
        filter: &BatchFilter,
        page: &ListQuery,
    ) -> Result<Vec<Batch>>;

    // Merge policies.
    async fn list_merge_policies(
        &self,
        tenant: &Tenant,
        page: &ListQuery,
    ) -> Result<Vec<MergePolicy>>;
    async fn get_merge_policy(&self, tenant: &Tenant, id: &str) -> Result<Option<MergePolicy>>;
    async fn default_merge_policy(&self, tenant: &Tenant) -> Result<Option<MergePolicy>>;
    /// Inserts a policy; when it is the default, the previous default stops being one.
    async fn create_merge_policy(&self, tenant: &Tenant, policy: &MergePolicy) -> Result<()>;
    /// Replaces a policy's settings and bumps its version. `None` when it does not exist.
    async fn update_merge_policy(
        &self,
        tenant: &Tenant,
        id: &str,
        input: MergePolicyInput,
        now_ms: i64,
    ) -> Result<Option<MergePolicy>>;
    /// Deletes a policy. `Ok(false)` when it does not exist; `Conflict` when it is the default
    /// or a queued or running job uses it.
    async fn delete_merge_policy(&self, tenant: &Tenant, id: &str) -> Result<bool>;

    // Export jobs.
    /// Inserts a job and its destination batches in one transaction.
    async fn create_export_job(
        &self,
        tenant: &Tenant,
        job: NewExportJob,
    ) -> Result<ExportJobRecord>;
    /// Inserts several jobs (of any sandboxes) in one transaction: one durable commit for all.
    /// Answers per job, in order; a job whose merge policy changed meanwhile fails alone.
    async fn create_export_jobs(
        &self,
        jobs: Vec<(Tenant, NewExportJob)>,
    ) -> Vec<Result<ExportJobRecord>>;
    async fn get_export_job(&self, tenant: &Tenant, id: i64) -> Result<Option<ExportJobRecord>>;
    async fn list_export_jobs(
        &self,
        tenant: &Tenant,
        query: &JobListQuery,
    ) -> Result<Vec<ExportJobRecord>>;
    /// Cancels or deletes a job by its status (docs/api.md). `None` when it does not exist.
    async fn cancel_export_job(
        &self,
        tenant: &Tenant,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<CancelOutcome>>;
    /// Jobs by tenant and status, from counts the catalog maintains as jobs change (no count
    /// over the jobs themselves), for the metrics address.
    async fn count_jobs(&self) -> Result<Vec<JobCount>>;
    /// Folds the changes recorded since the last fold into the maintained job counts (the
    /// worker's maintenance does it now and then); answers how many changes it folded.
    async fn fold_job_counts(&self) -> Result<u64>;

    // The profile store.
    /// The store settings and state of a sandbox (which must exist).
    async fn store_state(&self, tenant: &Tenant) -> Result<StoreState>;
    /// The files of the store now. With a lease, the snapshot's sequence is recorded with the
    /// task, so that no file it includes is deleted before the task ends.
    async fn store_snapshot(
        &self,
        tenant: &Tenant,
        lease: Option<&TaskLease>,
    ) -> Result<StoreSnapshot>;
    /// What the live datasets of the sandbox hold of the union schema of `kind`.
    async fn held_schemas(&self, tenant: &Tenant, kind: StoreKind) -> Result<HeldSchemas>;
    /// Replaces the union schema of `kind` by `schema` (the merge of what live datasets hold)
    /// when its version is still `from_version`, as a commit of its own: an ingest attempt that
    /// typed its records before must type them again. Answers whether it did.
    async fn release_schema(
        &self,
        tenant: &Tenant,
        kind: StoreKind,
        from_version: i64,
        schema: &str,
    ) -> Result<bool>;
    /// Commits an ingest attempt: files, batch status and counts, union schema and ingest time,
    /// all or nothing, only while `commit.lease` holds ([`CatalogError::LeaseLost`] otherwise).
    async fn commit_ingest(&self, commit: IngestCommit) -> Result<IngestCommitted>;
    /// Replaces compacted files by the file that merges them, in one commit. Fails with
    /// `Conflict` when one of them was removed meanwhile.
    async fn commit_compaction(
        &self,
        tenant: &Tenant,
        replaced: &[i64],
        merged: &NewStoreFile,
        now_ms: i64,
    ) -> Result<i64>;
    /// Every sandbox with a store, for maintenance.
    async fn sandboxes(&self) -> Result<Vec<Tenant>>;
    /// Every manifest path of a sandbox, live or removed but not yet collected.
    async fn store_paths(&self, tenant: &Tenant) -> Result<Vec<String>>;
    /// Removed files that no running task's snapshot can hold any more, removed before
    /// `removed_before_ms`: `(id, path)`.
    async fn collectable_store_files(&self, removed_before_ms: i64) -> Result<Vec<(i64, String)>>;
    /// Drops collected files from the manifest.
    async fn forget_store_files(&self, ids: &[i64]) -> Result<()>;

    // Ingest batches.
    async fn create_ingest_batch(&self, batch: &Batch) -> Result<()>;
    /// Records an uploaded file stored at `object` (replacing one of the same name) while the
    /// batch is `loading`, checked under a lock on the batch so that a concurrent COMPLETE
    /// either sees the file or refuses it.
    async fn record_upload(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        upload: &Upload,
    ) -> Result<UploadRecorded>;
    async fn list_uploads(&self, batch_id: &BatchId) -> Result<Vec<Upload>>;
    /// `loading → staging`, queueing the ingest task. `None` when the batch does not exist.
    async fn complete_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>>;
    /// `loading → aborted`. `None` when the batch does not exist.
    async fn abort_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>>;
    /// `loading → failed` (Batch Ingestion's FAIL). `None` when the batch does not exist.
    async fn fail_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>>;
    /// What reverting a successful ingest batch involves: the commit its records were stored
    /// at, and the live compacted files of its dataset made since, which may hold some of them.
    /// `None` when it is not a successful, not yet reverted ingest batch of the tenant.
    async fn revert_plan(&self, tenant: &Tenant, batch_id: &BatchId) -> Result<Option<RevertPlan>>;
    /// Reverts a successful ingest batch in one commit: its own store files leave the store,
    /// each compacted file of `rewrites` is replaced by its rewrite without the batch's rows
    /// (or by nothing), and the batch shows as reverted. `planned` are the ids of the plan's
    /// compacted files: a compaction since (which may have merged the batch's own files) is a
    /// `Conflict`, as is a rewritten file replaced meanwhile (plan again). False when the batch
    /// is no longer revertible.
    async fn revert_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        planned: &[i64],
        rewrites: &[(i64, Option<NewStoreFile>)],
        now_ms: i64,
    ) -> Result<bool>;
    /// Deletes a dataset, its batches and (after every snapshot holding them) its store files.
    /// Answers the ids of its batches, whose uploaded files the caller removes; `None` when it
    /// does not exist; `Conflict` while a queued or running task writes to it.
    async fn delete_dataset(
        &self,
        tenant: &Tenant,
        id: &DatasetId,
        now_ms: i64,
    ) -> Result<Option<Vec<BatchId>>>;

    // Exports.
    /// Commits an export attempt: files, batches, job status and metrics. `LeaseLost` when the
    /// lease is gone, `Cancelled` when a cancel was requested (nothing is committed then).
    async fn commit_export(&self, commit: ExportCommit) -> Result<()>;
    /// Records a running job's progress (ignored once the lease is gone).
    async fn set_job_progress(
        &self,
        lease: &TaskLease,
        job_id: i64,
        progress: &segport_model::job::JobProgress,
        now_ms: i64,
    ) -> Result<()>;
    /// The committed files of a batch.
    async fn list_batch_files(&self, tenant: &Tenant, batch_id: &BatchId)
        -> Result<Vec<BatchFile>>;
    /// Deletes a finished export batch with the records of its files (the caller removes the
    /// files). `false` when the tenant has no such batch; `Conflict` when it is an ingest
    /// batch or its export has not finished.
    async fn delete_export_batch(&self, tenant: &Tenant, id: &BatchId) -> Result<bool>;
    /// Finished export batches that completed before `before_ms`, oldest first, at most
    /// `limit` of them: what retention removes.
    async fn expired_export_batches(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<(Tenant, BatchId)>>;

    // Tasks.
    /// Claims the oldest queued task for `owner`, with a lease until `now_ms + lease_ms`.
    async fn claim_task(
        &self,
        owner: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<ClaimedTask>>;
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

    // API tokens.
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn find_token(&self, token_sha256: &str) -> Result<Option<TokenRecord>>;
    /// Marks a token revoked. `false` when no unrevoked token has that id.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
