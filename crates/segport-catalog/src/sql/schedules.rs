//! Schedules on SQL, and the firing of their due times: one transaction takes the schedule
//! on the condition that it still stands as the scheduler read it (due time, last change,
//! delta mark), records the run under its unique `(schedule, due time)` key, and either creates
//! the run's job or, with the previous run still in flight, records the due time as missed and
//! writes its `schedule.missed` event. Whatever processes race, one of them fires a due time.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::job::JobStatus;
use segport_model::schedule::{RunOutcome, Schedule, ScheduleRun};
use segport_model::webhook::EventType;
use segport_model::Tenant;
use serde_json::json;

use super::common::Statement;
use super::{SqlCatalog, Tx};
use crate::model::{as_i64, convert_all, schedule_run, ScheduleRow, ScheduleRunRow};
use crate::schedules::{FailedRun, FireOutcome, ScheduleFire};
use crate::{CatalogError, ListQuery, NewExportJob, Result, Schedules};

const SCHEDULE_COLUMNS: &str = "id, org, sandbox, name, kind, properties, cron, state, \
     next_due_ms, last_due_ms, last_job_id, missed, delta_mark_ms, delta_key, create_ms, update_ms";

const INSERT_SCHEDULE: &str = "INSERT INTO schedules (id, org, sandbox, name, kind, properties, \
     cron, state, next_due_ms, missed, create_ms, update_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11)";

const COUNT_SCHEDULES: &str = "SELECT COUNT(*) FROM schedules WHERE org = $1 AND sandbox = $2";

const UPDATE_SCHEDULE: &str = "UPDATE schedules SET name = $4, kind = $5, properties = $6, \
     cron = $7, state = $8, next_due_ms = $9, update_ms = $10 \
     WHERE id = $1 AND org = $2 AND sandbox = $3";

const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE org = $1 AND sandbox = $2 AND id = $3";

const DELETE_RUNS: &str = "DELETE FROM schedule_runs WHERE schedule_id = $1";

const SCHEDULE_RUNS: &str = "SELECT due_ms, outcome, job_id, caught_up, fired_ms \
     FROM schedule_runs WHERE org = $1 AND sandbox = $2 AND schedule_id = $3 \
     ORDER BY due_ms DESC LIMIT $4";

/// Takes the schedule for a due time: only while it stands as the scheduler read it.
const TAKE_DUE: &str = "UPDATE schedules SET next_due_ms = $6, last_due_ms = $7 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND state = 'active' AND next_due_ms = $4 \
     AND update_ms = $5 AND COALESCE(delta_mark_ms, -1) = $8 RETURNING last_job_id";

const INSERT_RUN: &str = "INSERT INTO schedule_runs (schedule_id, due_ms, org, sandbox, outcome, \
     job_id, caught_up, fired_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (schedule_id, due_ms) DO NOTHING";

const JOB_STATUS: &str = "SELECT status FROM export_jobs WHERE id = $1";

const COUNT_MISSED: &str = "UPDATE schedules SET missed = missed + 1 WHERE id = $1";

const SET_LAST_JOB: &str = "UPDATE schedules SET last_job_id = $2 WHERE id = $1";

/// A job that failed before it could run (its body no longer resolves): no batches, no task.
const INSERT_FAILED_JOB: &str = "INSERT INTO export_jobs (org, sandbox, status, spec, \
     merge_policy_id, merge_policy, request_id, warnings, errors, creation_ms, update_ms, \
     finished_ms, dataset_id, schedule_id, delta_key) \
     VALUES ($1, $2, 'FAILED', $3, $4, 'null', $5, NULL, $6, $7, $7, $7, $8, $9, NULL) RETURNING id";

const PRUNE_RUNS: &str = "DELETE FROM schedule_runs WHERE fired_ms < $1";

/// Binds `$1` to `$9` of [`INSERT_SCHEDULE`] and [`UPDATE_SCHEDULE`]: the schedule's id and
/// tenant, what a client sets, and the next due time.
fn bind_schedule<'q>(statement: Statement<'q>, s: &'q Schedule) -> Statement<'q> {
    statement
        .bind(&s.id)
        .bind(&s.org)
        .bind(&s.sandbox)
        .bind(&s.body.name)
        .bind(s.body.kind.as_str())
        .bind(s.body.properties().to_string())
        .bind(s.body.cron.as_str())
        .bind(s.body.state.as_str())
        .bind(s.next_due_ms)
}

impl SqlCatalog {
    async fn insert_schedule_job(
        tx: &mut Tx<'_>,
        tenant: &Tenant,
        job: NewExportJob,
    ) -> Result<i64> {
        let mut out = Self::insert_checked_jobs(tx, &[(tenant.clone(), job)]).await?;
        out.pop()
            .ok_or_else(|| CatalogError::Conflict("the job was not inserted".into()))?
            .map(|j| j.id)
    }

    async fn insert_failed_job(
        tx: &mut Tx<'_>,
        fire: &ScheduleFire,
        run: &FailedRun,
    ) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(INSERT_FAILED_JOB)
            .bind(fire.tenant.org.as_str())
            .bind(fire.tenant.sandbox.as_str())
            .bind(serde_json::to_string(&run.spec)?)
            .bind(run.spec.merge_policy.id.as_str())
            .bind(run.request_id.as_str())
            .bind(serde_json::to_string(&run.errors)?)
            .bind(fire.now_ms)
            .bind(run.spec.destination.dataset_id.as_str())
            .bind(fire.schedule_id.as_str())
            .fetch_one(&mut **tx)
            .await?;
        Self::emit_job_end(tx, id, fire.now_ms).await?;
        Ok(id)
    }
}

#[async_trait]
impl Schedules for SqlCatalog {
    async fn create_schedule(&self, s: &Schedule, max: u64) -> Result<()> {
        let tenant = crate::model::tenant(&s.org, &s.sandbox, "schedules")?;
        let mut tx = self.write().begin().await?;
        // Serialises creates in the sandbox, so the count holds.
        Self::lock_sandbox(&mut tx, &tenant).await?;
        let (n,): (i64,) = sqlx::query_as(COUNT_SCHEDULES)
            .bind(&s.org)
            .bind(&s.sandbox)
            .fetch_one(&mut *tx)
            .await?;
        if n >= as_i64(max) {
            return Err(CatalogError::Conflict(format!(
                "sandbox {} holds {n} schedules, the most it may; delete one first",
                s.sandbox
            )));
        }
        bind_schedule(sqlx::query(INSERT_SCHEDULE), s)
            .bind(s.create_ms)
            .bind(s.update_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_schedule(&self, tenant: &Tenant, id: &str) -> Result<Option<Schedule>> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE org = $1 AND sandbox = $2 AND id = $3"
        );
        self.fetch_scoped::<ScheduleRow, _>(&sql, tenant, id).await
    }

    async fn list_schedules(
        &self,
        tenant: &Tenant,
        page: &ListQuery,
    ) -> Result<(Vec<Schedule>, u64)> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE org = $1 AND sandbox = $2 \
             ORDER BY create_ms, id LIMIT $3 OFFSET $4"
        );
        let schedules = self.fetch_page::<ScheduleRow, _>(&sql, tenant, page).await?;
        let (n,): (i64,) = sqlx::query_as(COUNT_SCHEDULES)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .fetch_one(self.read())
            .await?;
        Ok((schedules, u64::try_from(n).unwrap_or(0)))
    }

    async fn update_schedule(&self, s: &Schedule) -> Result<bool> {
        let n = bind_schedule(sqlx::query(UPDATE_SCHEDULE), s)
            .bind(s.update_ms)
            .execute(self.write())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn delete_schedule(&self, tenant: &Tenant, id: &str) -> Result<bool> {
        let mut tx = self.write().begin().await?;
        let n = sqlx::query(DELETE_SCHEDULE)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            sqlx::query(DELETE_RUNS).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn schedule_runs(
        &self,
        tenant: &Tenant,
        id: &str,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>> {
        let rows: Vec<ScheduleRunRow> = sqlx::query_as(SCHEDULE_RUNS)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(self.read())
            .await?;
        rows.into_iter().map(schedule_run).collect()
    }

    async fn earliest_due(&self) -> Result<Option<i64>> {
        let (earliest,): (Option<i64>,) =
            sqlx::query_as("SELECT MIN(next_due_ms) FROM schedules WHERE state = 'active'")
                .fetch_one(self.read())
                .await?;
        Ok(earliest)
    }

    async fn due_schedules(&self, now_ms: i64, limit: u32) -> Result<Vec<Schedule>> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE state = 'active' \
             AND next_due_ms <= $1 ORDER BY next_due_ms LIMIT $2"
        );
        let rows: Vec<ScheduleRow> =
            sqlx::query_as(&sql).bind(now_ms).bind(i64::from(limit)).fetch_all(self.read()).await?;
        convert_all(rows)
    }

    async fn fire_schedule(&self, fire: ScheduleFire) -> Result<FireOutcome> {
        let (org, sandbox) = (fire.tenant.org.as_str(), fire.tenant.sandbox.as_str());
        let mut tx = self.write().begin().await?;
        let taken: Option<(Option<i64>,)> = sqlx::query_as(TAKE_DUE)
            .bind(org)
            .bind(sandbox)
            .bind(&fire.schedule_id)
            .bind(fire.seen_next_due_ms)
            .bind(fire.seen_update_ms)
            .bind(fire.next_due_ms)
            .bind(fire.due_ms)
            .bind(fire.seen_delta_mark_ms.unwrap_or(-1))
            .fetch_optional(&mut *tx)
            .await?;
        let Some((last_job_id,)) = taken else { return Ok(FireOutcome::Stale) };
        let in_flight = match last_job_id {
            Some(job) => {
                let status: Option<(String,)> =
                    sqlx::query_as(JOB_STATUS).bind(job).fetch_optional(&mut *tx).await?;
                status
                    .and_then(|(s,)| s.parse::<JobStatus>().ok())
                    .filter(|s| !s.is_finished())
                    .map(|_| job)
            }
            None => None,
        };
        let (outcome, job_id) = match in_flight {
            Some(job) => (FireOutcome::Missed { in_flight_job_id: job }, None),
            None => {
                let id = match &fire.job {
                    Ok(job) => {
                        match Self::insert_schedule_job(&mut tx, &fire.tenant, job.clone()).await {
                            Ok(id) => id,
                            // The merge policy changed since the job was built: build it again.
                            Err(CatalogError::Conflict(_)) => return Ok(FireOutcome::Stale),
                            Err(e) => return Err(e),
                        }
                    }
                    Err(run) => Self::insert_failed_job(&mut tx, &fire, run).await?,
                };
                (FireOutcome::Created { job_id: id }, Some(id))
            }
        };
        let run_outcome = match outcome {
            FireOutcome::Missed { .. } => RunOutcome::Missed,
            _ => RunOutcome::Created,
        };
        let recorded = sqlx::query(INSERT_RUN)
            .bind(&fire.schedule_id)
            .bind(fire.due_ms)
            .bind(org)
            .bind(sandbox)
            .bind(run_outcome.as_str())
            .bind(job_id)
            .bind(fire.caught_up)
            .bind(fire.now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if recorded != 1 {
            // Fired already (the schedule was set back to this due time): nothing more.
            return Ok(FireOutcome::Stale);
        }
        match (&outcome, job_id) {
            (FireOutcome::Missed { in_flight_job_id }, _) => {
                sqlx::query(COUNT_MISSED).bind(&fire.schedule_id).execute(&mut *tx).await?;
                let schedule_id = fire.schedule_id.clone();
                let (due_ms, job) = (fire.due_ms, *in_flight_job_id);
                Self::emit(
                    &mut tx,
                    (org, sandbox),
                    EventType::ScheduleMissed,
                    || {
                        let data = json!({
                            "scheduleId": schedule_id,
                            "dueTime": due_ms,
                            "inFlightJobId": job,
                            "href": format!("/data/core/ups/config/schedules/{schedule_id}"),
                        });
                        Ok((data.clone(), data))
                    },
                    fire.now_ms,
                )
                .await?;
            }
            (_, Some(job)) => {
                sqlx::query(SET_LAST_JOB)
                    .bind(&fire.schedule_id)
                    .bind(job)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        tx.commit().await?;
        if matches!(outcome, FireOutcome::Created { .. }) {
            self.announce_tasks().await;
        }
        Ok(outcome)
    }

    async fn prune_schedule_runs(&self, before_ms: i64) -> Result<u64> {
        let n =
            sqlx::query(PRUNE_RUNS).bind(before_ms).execute(self.write()).await?.rows_affected();
        Ok(n)
    }
}
