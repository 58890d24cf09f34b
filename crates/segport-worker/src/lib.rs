//! The segport worker: claims tasks from the catalog, runs them, commits their results under a
//! lease, and keeps the store tidy.
//!
//! Each of `slots` loops claims the oldest queued task (docs/store.md), holds its lease with
//! heartbeats while it runs, and commits through the catalog in one transaction fenced by the
//! lease. A maintenance loop returns expired leases to the queue, deletes store files no
//! snapshot needs any more, removes files of attempts that never committed, and compacts
//! partitions that have gathered many small files.

mod export;
mod failpoint;
mod ingest;
mod maintenance;
mod metrics;
mod runner;
mod units;

use std::sync::Arc;
use std::time::Duration;

use segport_catalog::WorkerCatalog;
use segport_store::ingest::IngestLimits;
use segport_store::Storage;

pub use export::run_export;
pub use failpoint::Failpoints;
pub use ingest::run_ingest;
pub use maintenance::{compact_sandbox, expire_export_batches, reap_expired, sweep};
pub use metrics::WorkerMetrics;
pub use runner::{TaskOutcome, Worker};
pub use units::plan_units;

/// Profiles per export unit unless configured: large enough that a unit's evaluation outweighs
/// its claim, catalog reads and commit (docs/store.md#export-units).
pub const DEFAULT_EXPORT_UNIT_PROFILES: u64 = 1_000_000;

/// How a worker behaves; docs/store.md describes the defaults.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks run at once.
    pub slots: usize,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// How often an idle slot looks for work when no notification arrives.
    pub poll: Duration,
    /// How often expired leases are reaped.
    pub reap_every: Duration,
    /// How often the store is swept and compacted.
    pub maintain_every: Duration,
    /// How long a removed or orphaned file is kept before it is deleted.
    pub file_grace: Duration,
    /// A partition is compacted once it holds this many files of one dataset.
    pub compact_min_files: usize,
    /// Finished export batches older than this are deleted with their files; `None` keeps
    /// them forever.
    pub retention: Option<Duration>,
    /// Most tasks of one tenant running at once across the fleet; `None`: no cap.
    pub tenant_max_running: Option<u32>,
    /// Profiles per work unit of an export: a larger job is split into units that any worker
    /// may run (docs/store.md).
    pub export_unit_profiles: u64,
    /// How long a queued unit of a partition another live worker's cache holds is left to
    /// that worker before this one takes it (docs/store.md#export-units).
    pub locality_wait: Duration,
    pub ingest: IngestLimits,
    pub failpoints: Failpoints,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            slots: 2,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            reap_every: Duration::from_secs(5),
            maintain_every: Duration::from_secs(60),
            file_grace: Duration::from_secs(300),
            compact_min_files: 8,
            retention: None,
            tenant_max_running: None,
            export_unit_profiles: DEFAULT_EXPORT_UNIT_PROFILES,
            locality_wait: Duration::from_secs(1),
            ingest: IngestLimits::default(),
            failpoints: Failpoints::default(),
        }
    }
}

/// What every task needs.
#[derive(Clone)]
pub struct Context {
    pub catalog: Arc<dyn WorkerCatalog>,
    pub storage: Storage,
    pub config: Arc<WorkerConfig>,
    pub metrics: WorkerMetrics,
}

/// Errors of task runs, reported on the batch or job they belong to.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Catalog(#[from] segport_catalog::CatalogError),
    #[error(transparent)]
    Store(#[from] segport_store::StoreError),
    #[error("{0}")]
    Invalid(String),
    /// A failure with the code the batch or job reports (`STORE_READ_ERROR`, …).
    #[error("{message}")]
    Failed { code: segport_model::codes::FailureCode, message: String },
    #[error("the task was stopped")]
    Stopped,
}

/// Stack of each thread of [`cpu`]. Arrow's kernels recurse once per level of a nested type;
/// records are capped at 32 levels, but a store may hold deeper ones from before the cap (up to
/// the 128 levels serde_json parses), and a debug build spends about 32 KiB of stack a level.
/// The memory is only reserved: pages are committed as the stack grows.
const CPU_STACK: usize = 16 * 1024 * 1024;

/// The pool that runs the CPU work of tasks (parsing, sorting, encoding, evaluating), with
/// stacks deep enough for any record the store holds; one per process, sized like rayon's
/// global pool (`RAYON_NUM_THREADS`, else one thread a core).
fn cpu() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .stack_size(CPU_STACK)
            .thread_name(|i| format!("segport-cpu-{i}"))
            .build()
            .or_else(|_| rayon::ThreadPoolBuilder::new().build())
            .unwrap_or_else(|e| panic!("cannot start the CPU thread pool: {e}"))
    })
}

/// Runs a catalog call until it succeeds, fails for a lasting reason, or `patience` has passed
/// since the first transient failure (a database restart, a reset connection, a deadlock
/// victim), waiting longer between tries each time. Callers are the steps a task must not
/// lose to a blip: its commit and the recording of its end.
pub(crate) async fn retrying<T, F, Fut>(
    what: &str,
    patience: Duration,
    mut call: F,
) -> Result<T, segport_catalog::CatalogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, segport_catalog::CatalogError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if e.is_transient() && started.elapsed() + pause < patience => {
                tracing::warn!(error = %e, retry_in = ?pause, "{what}: the catalog failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// The current time in epoch milliseconds.
fn now_ms() -> i64 {
    segport_model::time::now_ms()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
