//! The task loop: claim, run under a heartbeated lease, commit or hand back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use segport_catalog::{ClaimedTask, Locality, TaskKind};
use segport_model::batch::BatchError;
use segport_model::codes::{FailureCode, CANCELLED_MESSAGE};
use segport_model::error::chain as error_chain;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::{duration_ms, now_ms, run_export, run_ingest, Context, TaskError};

/// How a task run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Committed.
    Done,
    /// Failed for good; its batch or job says why.
    Failed,
    /// Another attempt holds the task now; nothing was committed.
    LeaseLost,
    /// Handed back to the queue at shutdown, without using up an attempt.
    HandedBack,
}

/// How often a worker with a cache tells the catalog what the cache holds, at least.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// A worker counts as live for others' claims while its last announcement is this recent.
const LIVE_FOR: Duration = Duration::from_secs(6);

/// A worker process's task runner.
pub struct Worker {
    ctx: Context,
    owner: String,
    /// What this worker last told the catalog its cache holds, and when.
    announced: tokio::sync::Mutex<Option<(Vec<u32>, std::time::Instant)>>,
}

impl Worker {
    pub fn new(ctx: Context) -> Self {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &segport_model::ids::new_uuid().simple().to_string()[..8]
        );
        Self { ctx, owner, announced: tokio::sync::Mutex::new(None) }
    }

    /// Tells the catalog which partitions this worker's cache holds, when that changed or
    /// the last word is getting old, so that others' claims leave their units to it (docs/
    /// store.md#export-units). Answers what it holds. Best effort: a failed announcement only
    /// costs locality.
    async fn announce_cache(&self) -> Vec<u32> {
        let Some(cache) = self.ctx.storage.cache() else { return Vec::new() };
        let held = cache.held_partitions();
        let mut announced = self.announced.lock().await;
        let due = announced
            .as_ref()
            .is_none_or(|(last, at)| *last != held || at.elapsed() >= ANNOUNCE_EVERY);
        if due {
            match self.ctx.catalog.announce_cache(&self.owner, &held, now_ms()).await {
                Ok(()) => *announced = Some((held.clone(), std::time::Instant::now())),
                Err(e) => tracing::debug!(error = %e, "cannot announce the cache"),
            }
        }
        held
    }

    /// Says every few seconds that this worker is alive (operators see it) and what its cache
    /// holds, until `stop`; then withdraws both. Best effort: a failed word costs only what
    /// operators and other workers' locality see.
    async fn presence(&self, stop: CancellationToken) {
        let me = segport_catalog::WorkerInfo {
            owner: self.owner.clone(),
            host: host_name(),
            slots: u32::try_from(self.ctx.config.slots.max(1)).unwrap_or(u32::MAX),
            started_ms: now_ms(),
            seen_ms: now_ms(),
        };
        let mut every = tokio::time::interval(ANNOUNCE_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = every.tick() => {
                    if let Err(e) = self.ctx.catalog.register_worker(&me, now_ms()).await {
                        tracing::debug!(error = %e, "cannot say this worker is alive");
                    }
                    self.announce_cache().await;
                }
            }
        }
        if let Err(e) = self.ctx.catalog.forget_worker(&self.owner).await {
            tracing::debug!(error = %e, "cannot withdraw this worker");
        }
        if self.ctx.storage.cache().is_some() {
            if let Err(e) = self.ctx.catalog.forget_cache(&self.owner).await {
                tracing::debug!(error = %e, "cannot withdraw the cache announcement");
            }
        }
    }

    /// The name this worker claims tasks under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Runs the slots and the maintenance loop until `shutdown`; running tasks then get `grace`
    /// to finish before they are handed back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let mut handles = Vec::new();
        for slot in 0..self.ctx.config.slots.max(1) {
            let (worker, shutdown) = (self.clone(), shutdown.clone());
            handles.push(tokio::spawn(async move { worker.slot(slot, shutdown, grace).await }));
        }
        let (worker, stop) = (self.clone(), shutdown.clone());
        handles.push(tokio::spawn(async move { crate::maintenance::run(&worker.ctx, stop).await }));
        let (worker, stop) = (self.clone(), shutdown.clone());
        handles.push(tokio::spawn(async move { worker.presence(stop).await }));
        tracing::info!(owner = %self.owner, slots = self.ctx.config.slots, "worker started");
        for handle in handles {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a worker loop ended abnormally");
            }
        }
        tracing::info!(owner = %self.owner, "worker stopped");
    }

    async fn slot(&self, slot: usize, shutdown: CancellationToken, grace: Duration) {
        let config = &self.ctx.config;
        // Since when this slot has found nothing but units other workers hold (delay
        // scheduling): after `locality_wait` of that, it takes those too.
        let mut passing_since: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            // Units of partitions whose files this worker's cache holds come first; those that
            // another worker holds are left to it until this slot has waited long enough.
            let held = self.announce_cache().await;
            let leave_to_holders = config.locality_wait > Duration::ZERO
                && passing_since.is_none_or(|since| since.elapsed() < config.locality_wait);
            let locality =
                Locality { held: &held, leave_to_holders, live_ms: duration_ms(LIVE_FOR) };
            let claimed = self
                .ctx
                .catalog
                .claim_task_preferring(
                    &self.owner,
                    duration_ms(config.lease),
                    now_ms(),
                    config.tenant_max_running,
                    &locality,
                )
                .await;
            match claimed {
                Ok(Some(task)) => {
                    // A slot that took a unit another worker holds goes on taking them until
                    // it finds nothing at all: the holders were busy.
                    if leave_to_holders {
                        passing_since = None;
                    }
                    tracing::info!(slot, task_id = task.lease.task_id, attempt = task.attempt, kind = ?task.kind, "task claimed");
                    let outcome = self.run_claimed(task, shutdown.clone(), grace).await;
                    tracing::info!(slot, ?outcome, "task ended");
                }
                Ok(None) => {
                    // Nothing even without leaving units to others: the queue is empty for
                    // this worker, and the next units it sees start a new wait.
                    let mut wait = config.poll;
                    if !leave_to_holders {
                        passing_since = None;
                    } else {
                        let since = *passing_since.get_or_insert_with(std::time::Instant::now);
                        wait = wait.min(config.locality_wait.saturating_sub(since.elapsed()));
                    }
                    tokio::select! {
                        () = self.ctx.catalog.wait_for_tasks(wait) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(slot, error = %e, "cannot claim tasks; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(config.poll) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Runs a claimed task to its end while holding its lease.
    pub async fn run_claimed(
        &self,
        task: ClaimedTask,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> TaskOutcome {
        self.run_claimed_with_progress(task, shutdown, grace, Arc::default()).await
    }

    /// [`Self::run_claimed`], counting records and bytes into `progress` as it goes.
    pub async fn run_claimed_with_progress(
        &self,
        task: ClaimedTask,
        shutdown: CancellationToken,
        grace: Duration,
        progress: Arc<segport_store::ingest::Progress>,
    ) -> TaskOutcome {
        let stop = CancellationToken::new();
        let lease_lost = Arc::new(AtomicBool::new(false));
        let handed_back = Arc::new(AtomicBool::new(false));
        let cancelled = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let (ctx, lease, stop, lost, cancelled) = (
                self.ctx.clone(),
                task.lease.clone(),
                stop.clone(),
                lease_lost.clone(),
                cancelled.clone(),
            );
            AbortOnDropHandle::new(tokio::spawn(async move {
                let every = ctx.config.heartbeat;
                loop {
                    tokio::time::sleep(every).await;
                    match ctx
                        .catalog
                        .heartbeat(&lease, duration_ms(ctx.config.lease), now_ms())
                        .await
                    {
                        Ok(h) if h.alive && h.cancel_requested => {
                            tracing::info!(task_id = lease.task_id, "cancel requested; stopping");
                            cancelled.store(true, Ordering::SeqCst);
                            stop.cancel();
                        }
                        Ok(h) if !h.alive => {
                            tracing::warn!(
                                task_id = lease.task_id,
                                "lease lost; stopping the task"
                            );
                            lost.store(true, Ordering::SeqCst);
                            stop.cancel();
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(task_id = lease.task_id, error = %e, "heartbeat failed")
                        }
                    }
                }
            }))
        };
        let grace_timer = {
            let (stop, handed_back) = (stop.clone(), handed_back.clone());
            AbortOnDropHandle::new(tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                handed_back.store(true, Ordering::SeqCst);
                stop.cancel();
            }))
        };

        let started = std::time::Instant::now();
        let result = match task.kind {
            TaskKind::Ingest => run_ingest(&self.ctx, &task, stop.clone(), progress).await,
            TaskKind::Export => run_export(&self.ctx, &task, stop.clone(), cancelled.clone()).await,
        };
        drop((heartbeat, grace_timer));

        let outcome = self.settle(&task, result, &handed_back, &cancelled, &lease_lost).await;
        if outcome == TaskOutcome::Failed {
            match task.kind {
                TaskKind::Export => {
                    self.ctx.metrics.export_finished(false, started.elapsed().as_secs_f64(), None)
                }
                TaskKind::Ingest => self.ctx.metrics.ingest_failed(),
            }
        }
        outcome
    }

    /// What became of a task whose run ended with `result`: done, handed back, lost, or failed
    /// for good (recorded on its batch or job).
    async fn settle(
        &self,
        task: &ClaimedTask,
        result: Result<(), TaskError>,
        handed_back: &AtomicBool,
        cancelled: &AtomicBool,
        lease_lost: &AtomicBool,
    ) -> TaskOutcome {
        let lease = &task.lease;
        match result {
            Ok(()) => TaskOutcome::Done,
            // At shutdown: one try, the process is about to go.
            Err(_) if handed_back.load(Ordering::SeqCst) => {
                self.hand_back(lease, Duration::ZERO).await
            }
            Err(TaskError::Catalog(segport_catalog::CatalogError::LeaseLost)) => {
                TaskOutcome::LeaseLost
            }
            Err(_) if cancelled.load(Ordering::SeqCst) => {
                self.fail(lease, FailureCode::ExportCancelled, CANCELLED_MESSAGE.into()).await
            }
            Err(_) if lease_lost.load(Ordering::SeqCst) => TaskOutcome::LeaseLost,
            // The catalog failed, not the task: it goes back to the queue without using up an
            // attempt, to run again once the catalog answers (or, if even that cannot be
            // recorded, when its lease expires).
            Err(TaskError::Catalog(e)) if e.is_transient() => {
                tracing::warn!(task_id = lease.task_id, error = %error_chain(&e), "the catalog failed during the task; handing it back");
                self.hand_back(lease, self.ctx.config.lease).await
            }
            Err(TaskError::Failed { code, message }) => {
                tracing::error!(task_id = lease.task_id, code = code.as_str(), error = %message, "task failed");
                self.fail(lease, code, message).await
            }
            Err(e) => {
                tracing::error!(task_id = lease.task_id, error = %error_chain(&e), "task failed");
                let (code, what) = match task.kind {
                    TaskKind::Ingest => {
                        (FailureCode::IngestFailed, "the batch could not be ingested")
                    }
                    TaskKind::Export => (FailureCode::Internal, "the export failed"),
                };
                self.fail(lease, code, format!("{what}: {}", error_chain(&e))).await
            }
        }
    }

    /// Returns the task to the queue without using up an attempt, trying for `patience`; when
    /// that cannot be recorded, its lease expires and the reaper returns it.
    async fn hand_back(
        &self,
        lease: &segport_catalog::TaskLease,
        patience: Duration,
    ) -> TaskOutcome {
        let released = crate::retrying("hand the task back", patience, || {
            self.ctx.catalog.release_task(lease, now_ms())
        })
        .await;
        match released {
            Ok(true) => TaskOutcome::HandedBack,
            Ok(false) => TaskOutcome::LeaseLost,
            Err(e) => {
                tracing::warn!(task_id = lease.task_id, error = %e, "cannot hand the task back; its lease will expire");
                TaskOutcome::HandedBack
            }
        }
    }

    /// Fails the task and its batch or job for good.
    async fn fail(
        &self,
        lease: &segport_catalog::TaskLease,
        code: FailureCode,
        message: String,
    ) -> TaskOutcome {
        let errors =
            [BatchError { code: code.as_str().to_owned(), description: message, rows: Vec::new() }];
        let failed = crate::retrying("record the failure", self.ctx.config.lease, || {
            self.ctx.catalog.fail_task(lease, &errors, now_ms())
        })
        .await;
        match failed {
            Ok(true) => TaskOutcome::Failed,
            Ok(false) => TaskOutcome::LeaseLost,
            Err(e) => {
                tracing::error!(task_id = lease.task_id, error = %e, "cannot record the failure; the lease will expire and the task be retried");
                TaskOutcome::Failed
            }
        }
    }
}

/// The machine's name (a pod's, under Kubernetes), for operators; `unknown` when unreadable.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
