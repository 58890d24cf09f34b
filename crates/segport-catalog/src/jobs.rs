//! Export jobs as the API sees them: created (with their destination batches and task),
//! read, listed, cancelled, and counted by status.

use async_trait::async_trait;
use segport_model::job::{ExportJobRecord, ExportJobSpec, JobStatus, JobWarning};
use segport_model::merge_policy::MergePolicy;
use segport_model::Tenant;

use crate::Result;

/// A page request over a tenant's export jobs, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobListQuery {
    pub status: Option<JobStatus>,
    /// Only jobs writing into this dataset.
    pub dataset_id: Option<segport_model::DatasetId>,
    /// Only jobs created at or after this time (ms since the epoch).
    pub created_since_ms: Option<i64>,
    /// Keyset cursor `(creation_ms, id)`: return only jobs strictly after it in list order.
    pub after: Option<(i64, i64)>,
    /// Rows to skip (the legacy integer `offset`); applied after the cursor.
    pub skip: u64,
    pub limit: u32,
}

/// A job ready to insert: the spec with its batches allocated and its policy resolved.
#[derive(Debug, Clone)]
pub struct NewExportJob {
    pub spec: ExportJobSpec,
    pub merge_policy: MergePolicy,
    /// What the job says from its creation on (ignored keys, fields not known yet); a run adds
    /// its own.
    pub warnings: Vec<JobWarning>,
    pub request_id: String,
    pub now_ms: i64,
    /// The schedule whose due time makes the job.
    pub schedule_id: Option<String>,
    /// A delta run's key: the export body and resolved merge policy its mark belongs to.
    pub delta_key: Option<String>,
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

/// How many export jobs of a tenant are in a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub org: String,
    pub sandbox: String,
    pub status: JobStatus,
    pub n: i64,
}

/// A tenant's export jobs.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
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
    /// The units of a job run as units (none for a job run as one task).
    async fn export_job_units(&self, tenant: &Tenant, id: i64) -> Result<Vec<crate::UnitState>>;
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
}
