//! The catalog: every piece of segport state that must change transactionally.
//!
//! Export jobs, datasets, batches, merge policies and API tokens live here, on PostgreSQL in
//! production or on an embedded SQLite file by default. Both backends implement [`Catalog`] with
//! the same SQL (see [`sql`]) and pass the same behaviour suite. All SQL of segport lives in this
//! crate; callers see domain types from `segport-model` only.

mod error;
mod postgres;
mod sql;
mod sqlite;
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use segport_model::batch::{Batch, BatchStatus};
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
    async fn get_export_job(&self, tenant: &Tenant, id: i64) -> Result<Option<ExportJobRecord>>;
    async fn list_export_jobs(
        &self,
        tenant: &Tenant,
        query: &JobListQuery,
    ) -> Result<Vec<ExportJobRecord>>;
    /// Cancels or deletes a job by its status (DESIGN §3). `None` when it does not exist.
    async fn cancel_export_job(
        &self,
        tenant: &Tenant,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<CancelOutcome>>;
    /// Jobs per status over all tenants, for `/metrics`.
    async fn count_jobs_by_status(&self) -> Result<Vec<(JobStatus, i64)>>;

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
