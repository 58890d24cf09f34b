//! Schedules: kept per sandbox for the API, and fired by the scheduler, one due time at a time,
//! each exactly once however many processes fire.

use async_trait::async_trait;
use segport_model::job::JobError;
use segport_model::schedule::{Schedule, ScheduleRun};
use segport_model::Tenant;

use crate::{ListQuery, NewExportJob, Result};

/// One due time of a schedule, as a scheduler fires it.
#[derive(Debug, Clone)]
pub struct ScheduleFire {
    pub tenant: Tenant,
    pub schedule_id: String,
    /// The due time fired: the latest one at or before now.
    pub due_ms: i64,
    /// The schedule's `next_due_ms` and `update_ms` as the scheduler read them; a schedule that
    /// moved on since (fired by another process, or changed) is not fired.
    pub seen_next_due_ms: i64,
    pub seen_update_ms: i64,
    /// The delta mark the job was built with (`None`: a full run); a mark moved since (the
    /// previous run succeeded meanwhile) makes the scheduler build the job again.
    pub seen_delta_mark_ms: Option<i64>,
    /// Earlier due times this one stands for (no scheduler ran at them).
    pub caught_up: i64,
    /// The due time after this one; `None` when the expression fires no more.
    pub next_due_ms: Option<i64>,
    /// The job to create, or one to create FAILED, saying why it cannot run.
    pub job: std::result::Result<NewExportJob, FailedRun>,
    pub now_ms: i64,
}

/// A run whose export body no longer resolves: its job is created FAILED.
#[derive(Debug, Clone)]
pub struct FailedRun {
    pub spec: segport_model::job::ExportJobSpec,
    pub errors: Vec<JobError>,
    pub request_id: String,
}

/// What firing a due time did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// The job was created (FAILED at once when its body no longer resolved).
    Created { job_id: i64 },
    /// The previous run was still in flight: the due time was recorded as missed.
    Missed { in_flight_job_id: i64 },
    /// Another process fired it, or the schedule changed since it was read: nothing was done.
    Stale,
}

/// A tenant's schedules, and their firing.
#[async_trait]
pub trait Schedules: Send + Sync + 'static {
    /// Stores a new schedule; `Conflict` when the sandbox holds `max` already.
    async fn create_schedule(&self, schedule: &Schedule, max: u64) -> Result<()>;
    async fn get_schedule(&self, tenant: &Tenant, id: &str) -> Result<Option<Schedule>>;
    /// A page of a sandbox's schedules, oldest first, and how many it holds.
    async fn list_schedules(
        &self,
        tenant: &Tenant,
        page: &ListQuery,
    ) -> Result<(Vec<Schedule>, u64)>;
    /// Replaces what a client sets (name, properties, cron, state) and the next due time;
    /// false when there is no such schedule.
    async fn update_schedule(&self, schedule: &Schedule) -> Result<bool>;
    /// Deletes a schedule and its runs (its jobs stay, naming it).
    async fn delete_schedule(&self, tenant: &Tenant, id: &str) -> Result<bool>;
    /// A schedule's latest runs, newest first.
    async fn schedule_runs(
        &self,
        tenant: &Tenant,
        id: &str,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>>;
    /// The earliest next due time of any active schedule (the scheduler sleeps until it).
    async fn earliest_due(&self) -> Result<Option<i64>>;
    /// Active schedules whose next due time is at or before `now_ms`, the most overdue first.
    async fn due_schedules(&self, now_ms: i64, limit: u32) -> Result<Vec<Schedule>>;
    /// Fires one due time in one transaction: the run's unique row, the job (or the missed
    /// record and its `schedule.missed` event) and the schedule's next due time.
    async fn fire_schedule(&self, fire: ScheduleFire) -> Result<FireOutcome>;
    /// Deletes the runs recorded before `before_ms`; answers how many.
    async fn prune_schedule_runs(&self, before_ms: i64) -> Result<u64>;
}
