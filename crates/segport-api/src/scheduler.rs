//! The scheduler: every API process runs one. Each tick it reads the active schedules whose due
//! time has come, builds each one's job as `POST /export/jobs` would from its body (resolving
//! dataset, merge policy and fields now, at the run), and fires the due time in the catalog,
//! where one transaction takes it exactly once, however many schedulers race (see
//! `segport_catalog::Schedules::fire_schedule`).
//!
//! A scheduler that finds several due times passed (no process ran at them) fires the latest
//! one alone and counts the others as caught up: one catch-up run, not one per missed time.

use std::time::Duration;

use axum::http::HeaderMap;
use segport_catalog::{FailedRun, FireOutcome, NewExportJob, ScheduleFire};
use segport_model::codes::{FailureCode, WarningCode};
use segport_model::job::{
    ExportJobRequest, JobError, JobWarning, MergePolicyRef, DEFAULT_PROFILE_INSTANCE,
};
use segport_model::schedule::Schedule;
use segport_model::time::{now_ms, Rfc3339};
use segport_model::Tenant;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::routes::jobs::check_create;
use crate::{ApiError, AppState};

/// Due schedules taken per tick.
const PER_TICK: u32 = 100;
/// Runs are kept this long (the schedule's page lists the latest).
const RUN_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// Fires due schedules until `shutdown`: at the earliest due time it knows of, and at least
/// every `tick` (which finds schedules created or changed meanwhile, in any process).
pub async fn run(state: AppState, tick: Duration, shutdown: CancellationToken) {
    let mut last_prune = 0;
    loop {
        let now = now_ms();
        match fire_due(&state, now).await {
            Ok(fired) if fired > 0 => tracing::debug!(fired, "schedules fired"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot fire due schedules; retrying"),
        }
        if now - last_prune > 3_600_000 {
            last_prune = now;
            if let Err(e) = state.catalog.prune_schedule_runs(now - RUN_RETENTION_MS).await {
                tracing::warn!(error = %e, "cannot prune schedule runs");
            }
        }
        let wait = match state.catalog.earliest_due().await {
            // Due after this round began: sleep until then (not at all when it came meanwhile).
            Ok(Some(due)) if due > now => {
                Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(tick)
            }
            // Due when this round fired (another process holds it, or it failed): the tick,
            // rather than spinning.
            _ => tick,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Fires every schedule due at `now`; answers how many due times this process fired.
pub async fn fire_due(state: &AppState, now: i64) -> Result<usize, ApiError> {
    let mut fired = 0;
    for schedule in state.catalog.due_schedules(now, PER_TICK).await? {
        let id = schedule.id.clone();
        match fire_one(state, schedule, now).await {
            Ok(FireOutcome::Created { job_id }) => {
                fired += 1;
                tracing::info!(schedule_id = %id, job_id, "schedule fired");
            }
            Ok(FireOutcome::Missed { in_flight_job_id }) => {
                fired += 1;
                tracing::info!(schedule_id = %id, in_flight_job_id, "schedule due time missed: the previous run is still in flight");
            }
            Ok(FireOutcome::Stale) => {}
            // One schedule's trouble never holds back the others.
            Err(e) => tracing::warn!(schedule_id = %id, error = %e, "cannot fire schedule"),
        }
    }
    Ok(fired)
}

async fn fire_one(state: &AppState, s: Schedule, now: i64) -> Result<FireOutcome, ApiError> {
    let Some(seen_next) = s.next_due_ms else { return Ok(FireOutcome::Stale) };
    let cron = &s.body.cron;
    let (due, caught_up) = cron.latest_due(seen_next, now).unwrap_or((seen_next, 0));
    let tenant = Tenant::parse(&s.org, &s.sandbox)?;
    let (job, seen_mark) = build_job(state, &tenant, &s, now).await?;
    let fire = ScheduleFire {
        tenant,
        schedule_id: s.id.clone(),
        due_ms: due,
        seen_next_due_ms: seen_next,
        seen_update_ms: s.update_ms,
        seen_delta_mark_ms: seen_mark,
        caught_up,
        next_due_ms: cron.next_after(due.max(now)),
        job,
        now_ms: now,
    };
    Ok(state.catalog.fire_schedule(fire).await?)
}

/// The key a delta mark belongs to: the export body and the merge policy it resolved to. A
/// run under another key starts again from a full export.
fn delta_key(s: &Schedule, policy: &MergePolicyRef) -> String {
    let mut hash = Sha256::new();
    hash.update(s.body.export_job.to_string().as_bytes());
    hash.update(b"\0");
    hash.update(policy.id.as_bytes());
    hash.update(b"\0");
    hash.update(policy.version.to_string().as_bytes());
    hex::encode(hash.finalize())
}

type BuiltJob = Result<NewExportJob, FailedRun>;

/// The job a due time of `s` creates, and the schedule's delta mark it was built with. A
/// body that no longer resolves gives a job to create FAILED, saying why.
async fn build_job(
    state: &AppState,
    tenant: &Tenant,
    s: &Schedule,
    now: i64,
) -> Result<(BuiltJob, Option<i64>), ApiError> {
    let request_id = format!("schedule-{}", s.id);
    match check_create(state, tenant, &HeaderMap::new(), &s.body.export_job, now).await {
        Ok(mut checked) => {
            let policy = checked.policy.to_ref();
            let key = s.body.delta.then(|| delta_key(s, &policy));
            let mark = match (&key, &s.delta_key, s.delta_mark_ms) {
                (Some(key), Some(marked), Some(mark)) if key == marked => Some(mark),
                _ => None,
            };
            if let Some(mark) = mark {
                // The later of the mark and the body's own threshold.
                let filter = &mut checked.request.filter;
                let own = filter.from_ingest_timestamp.as_ref().map(Rfc3339::epoch_ms);
                if own.is_none_or(|own| own < mark) {
                    filter.from_ingest_timestamp = Some(Rfc3339::from_ms(mark));
                }
                checked.warnings.push(JobWarning {
                    code: WarningCode::DeltaExport.as_str().to_owned(),
                    msg: format!(
                        "a delta run of schedule {}: only profiles updated after {} (the store \
                         as the previous successful run read it)",
                        s.id,
                        Rfc3339::from_ms(mark).as_str()
                    ),
                });
            }
            let job = NewExportJob {
                schedule_id: Some(s.id.clone()),
                delta_key: key,
                ..checked.into_job(request_id, now)
            };
            Ok((Ok(job), s.delta_mark_ms))
        }
        Err(ApiError::Invalid(errors)) => {
            // The body was checked at creation; what no longer resolves is the sandbox's
            // (a dataset or merge policy deleted, a field gone).
            let request = ExportJobRequest::parse(&s.body.export_job).map_err(ApiError::Invalid)?;
            let policy_ref = MergePolicyRef {
                id: request.merge_policy.as_ref().map(|(id, _)| id.clone()).unwrap_or_default(),
                version: request.merge_policy.as_ref().and_then(|(_, v)| *v).unwrap_or(0),
            };
            let spec = request.into_spec(policy_ref, Vec::new(), DEFAULT_PROFILE_INSTANCE.into());
            let why: Vec<String> =
                errors.0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
            let error = JobError::new(
                FailureCode::ScheduleUnresolved,
                format!("schedule {}'s export body no longer resolves: {}", s.id, why.join("; ")),
            );
            let run =
                FailedRun { spec, errors: vec![error], request_id: format!("schedule-{}", s.id) };
            Ok((Err(run), s.delta_mark_ms))
        }
        Err(other) => Err(other),
    }
}
