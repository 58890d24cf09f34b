//! The bounded pool in which the api process runs the engine for reads (profile look-ups and,
//! later, previews): a few at once, a bounded number waiting, each within a deadline, so that
//! heavy reads never stall the API (docs/limits.md). A read that finds the pool and its queue
//! full is refused at once (503); one past its deadline is answered 504, and its work, which
//! cannot be interrupted midway, keeps its slot until it ends, so the pool's bound holds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use segport_catalog::StoreFile;
use segport_model::Tenant;

use crate::ApiError;

/// Reads that may wait for a slot, per slot, before more are refused.
const WAITING_PER_SLOT: usize = 16;

/// A partition of a sandbox's store at a commit: sandbox, commit, partition.
type PartitionAt = (Tenant, i64, u32);

/// Engine reads in flight in the api process.
#[derive(Clone)]
pub struct ReadPool {
    /// The files of a partition at a store commit, which never change once committed: a
    /// look-up reads the commit it sees and finds its partition's files here after the first.
    files: Arc<Mutex<HashMap<PartitionAt, Arc<Vec<StoreFile>>>>>,
    /// Reads admitted: running or waiting for a slot.
    admitted: Arc<Semaphore>,
    /// Reads running.
    running: Arc<Semaphore>,
    slots: usize,
    deadline: Duration,
}

impl ReadPool {
    pub fn new(slots: usize, deadline: Duration) -> Self {
        let slots = slots.max(1);
        Self {
            files: Arc::default(),
            admitted: Arc::new(Semaphore::new(slots * (1 + WAITING_PER_SLOT))),
            running: Arc::new(Semaphore::new(slots)),
            slots,
            deadline,
        }
    }

    /// Runs `read` (whose engine part goes through [`ReadSlot::blocking`]) in a slot of the pool
    /// within the deadline, which includes the wait for the slot.
    pub async fn run<T, F>(&self, read: impl FnOnce(ReadSlot) -> F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<T, ApiError>>,
    {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy(format!(
                "{} reads (look-ups, previews) are running and {} waiting, as many as this server \
                 takes; retry shortly",
                self.slots,
                self.slots * WAITING_PER_SLOT
            ))
        })?;
        let cancel = Arc::new(AtomicBool::new(false));
        let read = async {
            let running = self
                .running
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| ApiError::Internal(Box::new(e)))?;
            read(ReadSlot { permits: Arc::new((admitted, running)), cancel: cancel.clone() }).await
        };
        match tokio::time::timeout(self.deadline, read).await {
            Ok(answer) => answer,
            Err(_) => Err({
                // Work that watches the flag stops early and frees its slot.
                cancel.store(true, Ordering::Relaxed);
                ApiError::DeadlineExceeded(format!(
                    "the read took longer than its deadline of {} ms",
                    self.deadline.as_millis()
                ))
            }),
        }
    }
}

impl ReadPool {
    /// The files of `partition` of `tenant`'s store at commit `seq`, from the catalog the first
    /// time, then kept (a commit's files are fixed; the cache starts again when it is full).
    pub(crate) async fn partition_files(
        &self,
        catalog: &dyn crate::ApiCatalog,
        tenant: &Tenant,
        seq: i64,
        partition: u32,
    ) -> Result<Arc<Vec<StoreFile>>, ApiError> {
        let key = (tenant.clone(), seq, partition);
        let lock = || self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(files) = lock().get(&key) {
            return Ok(files.clone());
        }
        let files = Arc::new(catalog.snapshot_files(tenant, seq, partition..=partition).await?);
        let mut kept = lock();
        if kept.len() >= PARTITION_FILES_KEPT {
            kept.clear();
        }
        kept.insert(key, files.clone());
        Ok(files)
    }
}

/// Partitions whose files [`ReadPool::partition_files`] keeps.
const PARTITION_FILES_KEPT: usize = 4096;

/// A read's place in the pool, held until its blocking work ends.
pub struct ReadSlot {
    permits: Arc<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    cancel: Arc<AtomicBool>,
}

impl ReadSlot {
    /// Set once the read is past its deadline: long work checks it to stop early.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Runs `work` on a blocking thread; the slot stays taken until it returns, even when the
    /// read was answered 504 meanwhile.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permits = self.permits.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = permits;
            work()
        })
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))
    }
}

/// Store files fetched at once into the cache (on an S3 root) when a read opens its files.
const FETCHES_AT_ONCE: usize = 8;

/// The snapshot files `files`, opened as the store's sources and grouped by partition, each
/// partition's input covering `keys`. With `few_rows` (a look-up), their row files are kept
/// mapped between reads ([`segport_store::Storage::share_rows`]).
pub(crate) async fn open_inputs(
    storage: &segport_store::Storage,
    files: &[segport_catalog::StoreFile],
    keys: &segport_engine::KeyRange,
    few_rows: bool,
) -> Result<Vec<segport_engine::PartitionInput>, ApiError> {
    use segport_catalog::StoreKind;
    use segport_store::snapshot::FileRef;
    use segport_store::RecordKind;
    let wanted = files
        .iter()
        .map(|f| {
            let file = FileRef { path: f.path.clone(), ingest_ms: f.ingest_ms, seq: f.seq };
            (file, f.dataset_id.clone())
        })
        .collect();
    let mut sources = storage
        .sources(wanted, FETCHES_AT_ONCE)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    if few_rows {
        sources = sources
            .into_iter()
            .map(|s| storage.share_rows(s))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::Internal(Box::new(e)))?;
    }
    let placed = files.iter().zip(sources).map(|(f, source)| {
        let kind = match f.kind {
            StoreKind::Profile => RecordKind::Profile,
            StoreKind::Event => RecordKind::Event,
        };
        (f.partition, kind, source)
    });
    Ok(segport_engine::PartitionInput::group(placed, keys))
}
