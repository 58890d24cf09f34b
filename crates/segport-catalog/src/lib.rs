//! The catalog: every piece of segport state that must change transactionally.
//!
//! Export jobs, datasets, batches, merge policies, the profile store's manifest, the task queue
//! and API tokens live here, on PostgreSQL in production or on an embedded SQLite file by
//! default. Each concern is a trait in a module of its own, with the types it speaks
//! ([`Jobs`], [`Datasets`], [`Batches`], [`MergePolicies`], [`Tokens`], [`TaskQueue`],
//! [`StoreManifest`], [`Admin`]), so a caller depends on the role it plays: the API on
//! [`ApiCatalog`], which has no task queue, a worker on [`WorkerCatalog`], the command-line tools
//! on all of [`Catalog`].
//!
//! The SQL behind the traits is written once, in plain Rust under `src/sql/` (one file per
//! concern, its statements beside the code that runs them), and compiled for each backend by
//! [`postgres`] and [`sqlite`], which hold what differs: pools, notifications and the few
//! statements that lock rows. Rows and their conversions to domain types live in `model`.
//! All SQL of segport lives in this crate; callers see domain types from `segport-model` only.

// Each file of `src/sql/` is loaded twice, once per backend module, by design: that is how the
// implementation is written once and compiled for both databases without a macro.
#![allow(clippy::duplicate_mod)]

mod admin;
mod batches;
mod datasets;
mod dialect;
mod error;
pub mod group;
mod jobs;
mod lease;
mod model;
mod policies;
pub mod postgres;
mod schedules;
pub mod sqlite;
mod store;
mod tasks;
pub mod testing;
mod tokens;
mod webhooks;

use std::sync::Arc;

pub use admin::Admin;
pub use batches::{
    BatchFile, BatchFilter, BatchTransition, Batches, RevertPlan, Upload, UploadRecorded,
};
pub use datasets::Datasets;
pub use error::CatalogError;
pub use jobs::{CancelOutcome, JobCount, JobListQuery, Jobs, NewExportJob};
pub use lease::TaskLease;
pub use policies::MergePolicies;
pub use postgres::PgCatalog;
pub use schedules::{FailedRun, FireOutcome, ScheduleFire, Schedules};
pub use sqlite::SqliteCatalog;
pub use store::{
    HeldSchemas, NewStoreFile, StoreFile, StoreKind, StoreManifest, StoreSnapshot, StoreState,
};
pub use tasks::{
    ClaimedTask, ExportCommit, ExportUnit, ExportedBatch, Heartbeat, IngestCommit, IngestCommitted,
    Locality, NewUnit, QueueDepth, QueueStats, ReapedTask, RunningTask, TaskKind, TaskQueue,
    UnitCommit, UnitCommitted, UnitResult, UnitState, WorkerInfo,
};
pub use tokens::{SessionRecord, TokenRecord, Tokens};
pub use webhooks::{job_end_event, AttemptResult, ClaimedDelivery, Webhooks};

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

/// A page request over datasets, batches or merge policies (Catalog's `limit` and `start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub start: u64,
}

/// What the API role uses: every concern but the task queue, whose claims, leases and fenced
/// commits belong to workers (it sees the queue's depth only, for its metrics address). The
/// scheduler and the webhook dispatcher run in API processes, so schedules and webhooks are
/// here.
pub trait ApiCatalog:
    Admin
    + Jobs
    + Datasets
    + Batches
    + MergePolicies
    + Tokens
    + StoreManifest
    + QueueStats
    + Schedules
    + Webhooks
{
}

impl<T> ApiCatalog for T where
    T: Admin
        + Jobs
        + Datasets
        + Batches
        + MergePolicies
        + Tokens
        + StoreManifest
        + QueueStats
        + Schedules
        + Webhooks
        + ?Sized
{
}

/// What a worker uses: the task queue and the store manifest, and the datasets, batches and job
/// counts its tasks and maintenance touch.
pub trait WorkerCatalog: TaskQueue + StoreManifest + Datasets + Batches + Jobs {}

impl<T> WorkerCatalog for T where T: TaskQueue + StoreManifest + Datasets + Batches + Jobs + ?Sized {}

/// The whole catalog, as [`connect`] opens it: an `Arc<dyn Catalog>` hands each role its part
/// (`Arc<dyn ApiCatalog>`, `Arc<dyn WorkerCatalog>` or one concern) by upcasting.
///
/// Every tenant-facing method is scoped by [`Tenant`](segport_model::Tenant): another tenant's
/// rows are invisible, exactly as if they did not exist.
pub trait Catalog: ApiCatalog + WorkerCatalog {}

impl<T> Catalog for T where T: ApiCatalog + WorkerCatalog + ?Sized {}

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
