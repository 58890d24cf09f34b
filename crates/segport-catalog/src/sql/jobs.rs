//! Export jobs on SQL: created in groups (jobs, batches and tasks in three multi-row statements
//! per group, each merge policy locked once), read, listed by keyset, cancelled by status, and
//! counted from maintained counts.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::batch::{BatchKind, BatchStatus};
use segport_model::job::{ExportJobRecord, JobError, JobStatus};
use segport_model::Tenant;

use super::common::FAIL_JOB_BATCHES;
use super::{SqlCatalog, Tx, DIALECT};
use crate::model::{as_i64, convert_all, corrupt, unit_partitions, JobRow};
use crate::{
    CancelOutcome, CatalogError, JobCount, JobListQuery, Jobs, NewExportJob, Result, UnitResult,
    UnitState,
};

/// The columns of a job row, `merge_policy` (the resolved policy's body) taken from `$policy`.
macro_rules! job_columns {
    ($policy:literal) => {
        concat!(
            "id, org, sandbox, status, spec, ",
            $policy,
            " AS merge_policy, errors, warnings, progress, counters, attempt, attempt_id, \
             cancel_requested, request_id, creation_ms, update_ms, started_ms, finished_ms, \
             units_total, schedule_id"
        )
    };
}

/// The units of a job run as units, in order; the worker is the lease's owner while one runs.
const JOB_UNITS: &str =
    "SELECT unit_no, partition_no, partition_last, state, lease_owner, attempt, result \
     FROM tasks WHERE org = $1 AND sandbox = $2 AND job_id = $3 AND unit_no IS NOT NULL \
     ORDER BY unit_no";

/// One whole job, the policy's body included (for its worker or its page).
const SELECT_JOB: &str = concat!(
    "SELECT ",
    job_columns!("merge_policy"),
    " FROM export_jobs WHERE org = $1 AND sandbox = $2 AND id = $3"
);

/// One page of jobs, with or without a status or destination filter. Lists leave the policy's
/// body in the table (a job shows the policy's id and version from its spec, and a body can run
/// to the size of a 1,000-dataset `order`). The keyset comparison `(creation_ms, id) < (…)`
/// walks the `(org, sandbox[, status | dataset_id], creation_ms DESC, id DESC)` index, so a
/// deep page costs what the first one does, and `creation_ms >= $5` ends the walk at the
/// oldest creation time asked for.
macro_rules! list_jobs {
    ($filter:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            job_columns!("CAST(NULL AS TEXT)"),
            " FROM export_jobs WHERE org = $1 AND sandbox = $2 AND (creation_ms, id) < ($3, $4) \
             AND creation_ms >= $5 ",
            $filter,
            "ORDER BY creation_ms DESC, id DESC LIMIT ",
            $limit
        )
    };
}
const LIST_JOBS: &str = list_jobs!("", "$6 OFFSET $7");
const LIST_JOBS_BY_STATUS: &str = list_jobs!("AND status = $6 ", "$7 OFFSET $8");
const LIST_JOBS_BY_DATASET: &str = list_jobs!("AND dataset_id = $6 ", "$7 OFFSET $8");
const LIST_JOBS_BY_DATASET_STATUS: &str =
    list_jobs!("AND dataset_id = $6 AND status = $7 ", "$8 OFFSET $9");

/// A job to insert, as a row of [`Dialect::insert_jobs`](crate::dialect::Dialect)'s array.
#[derive(serde::Serialize)]
struct NewJob<'a> {
    org: &'a str,
    sandbox: &'a str,
    status: &'a str,
    spec: String,
    merge_policy_id: &'a str,
    merge_policy: String,
    request_id: &'a str,
    warnings: Option<String>,
    now_ms: i64,
    dataset_id: &'a str,
    schedule_id: Option<&'a str>,
    delta_key: Option<&'a str>,
}

/// An export job's destination batch to insert.
#[derive(serde::Serialize)]
struct NewBatch<'a> {
    id: &'a str,
    org: &'a str,
    sandbox: &'a str,
    dataset_id: &'a str,
    kind: &'a str,
    status: &'a str,
    job_id: i64,
    input_format: &'a str,
    now_ms: i64,
}

/// An export job's task to insert.
#[derive(serde::Serialize)]
struct NewTask<'a> {
    kind: &'a str,
    org: &'a str,
    sandbox: &'a str,
    job_id: i64,
    state: &'a str,
    now_ms: i64,
}

const CANCEL_NEW_JOB: &str = "UPDATE export_jobs SET status = 'FAILED', errors = $4, \
     cancel_requested = $5, finished_ms = $6, update_ms = $6 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND status = 'NEW'";

const FLAG_RUNNING_JOB: &str = "UPDATE export_jobs SET cancel_requested = $4, \
     update_ms = $5 WHERE org = $1 AND sandbox = $2 AND id = $3 AND status = 'PROCESSING'";

const DELETE_FINISHED_JOB: &str = "DELETE FROM export_jobs \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND status IN ('SUCCEEDED', 'FAILED')";

const FAIL_QUEUED_JOB_TASK: &str =
    "UPDATE tasks SET state = 'failed', updated_ms = $2 WHERE job_id = $1 AND state = 'queued'";

const COUNT_JOBS: &str = include_str!("queries/count_jobs.sql");

/// Takes the deltas up to id `$1` (each fold takes its own: concurrent folds never count one
/// twice).
const TAKE_JOB_COUNT_DELTAS: &str =
    "DELETE FROM job_count_deltas WHERE id <= $1 RETURNING org, sandbox, status, n";

const LAST_JOB_COUNT_DELTA: &str = "SELECT MAX(id) FROM job_count_deltas";

const ADD_JOB_COUNT: &str = "INSERT INTO job_counts (org, sandbox, status, n) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (org, sandbox, status) \
     DO UPDATE SET n = job_counts.n + excluded.n";

impl SqlCatalog {
    /// Inserts `jobs` (their merge policies checked), their destination batches and
    /// their tasks inside `tx`: three statements, however many jobs, each taking its rows as
    /// one JSON array, so that a group of creates costs three round trips rather than three
    /// per job, and the statements stay prepared. Yields the jobs' ids, in order.
    async fn insert_export_jobs(
        tx: &mut Tx<'_>,
        jobs: &[(&Tenant, &NewExportJob)],
    ) -> Result<Vec<i64>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = jobs
            .iter()
            .map(|(tenant, job)| {
                Ok(NewJob {
                    org: tenant.org.as_str(),
                    sandbox: tenant.sandbox.as_str(),
                    status: JobStatus::New.as_str(),
                    spec: serde_json::to_string(&job.spec)?,
                    merge_policy_id: job.merge_policy.id.as_str(),
                    merge_policy: serde_json::to_string(&job.merge_policy)?,
                    request_id: job.request_id.as_str(),
                    warnings: (!job.warnings.is_empty())
                        .then(|| serde_json::to_string(&job.warnings))
                        .transpose()?,
                    now_ms: job.now_ms,
                    dataset_id: job.spec.destination.dataset_id.as_str(),
                    schedule_id: job.schedule_id.as_deref(),
                    delta_key: job.delta_key.as_deref(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<i64> = sqlx::query_scalar(DIALECT.insert_jobs)
            .bind(serde_json::to_string(&rows)?)
            .fetch_all(&mut **tx)
            .await?;
        // The ids come from a sequence (PostgreSQL) or the rowid (SQLite), drawn row by row
        // as the array's rows are inserted, so they ascend in its order; RETURNING does not
        // promise an order, sorting restores it.
        ids.sort_unstable();
        if ids.len() != jobs.len() {
            return Err(CatalogError::Conflict(format!(
                "{} of {} jobs were inserted",
                ids.len(),
                jobs.len()
            )));
        }
        let batch_ids: Vec<_> =
            jobs.iter().map(|(_, job)| job.spec.destination.batch_ids()).collect();
        let batches: Vec<NewBatch> = jobs
            .iter()
            .zip(&ids)
            .zip(&batch_ids)
            .flat_map(|(((tenant, job), id), batches)| {
                batches.iter().map(move |batch| NewBatch {
                    id: batch.as_str(),
                    org: tenant.org.as_str(),
                    sandbox: tenant.sandbox.as_str(),
                    dataset_id: job.spec.destination.dataset_id.as_str(),
                    kind: BatchKind::Export.as_str(),
                    status: BatchStatus::Loading.as_str(),
                    job_id: *id,
                    input_format: "parquet",
                    now_ms: job.now_ms,
                })
            })
            .collect();
        sqlx::query(DIALECT.insert_export_batches)
            .bind(serde_json::to_string(&batches)?)
            .execute(&mut **tx)
            .await?;
        let tasks: Vec<NewTask> = jobs
            .iter()
            .zip(&ids)
            .map(|((tenant, job), id)| NewTask {
                kind: "export",
                org: tenant.org.as_str(),
                sandbox: tenant.sandbox.as_str(),
                job_id: *id,
                state: "queued",
                now_ms: job.now_ms,
            })
            .collect();
        sqlx::query(DIALECT.insert_export_tasks)
            .bind(serde_json::to_string(&tasks)?)
            .execute(&mut **tx)
            .await?;
        Ok(ids)
    }

    /// Inserts `jobs` inside `tx`, each whose merge policy still exists at the version
    /// it resolved (each distinct policy is looked up and locked once). A job whose
    /// policy changed or went fails alone; any other error fails them all.
    pub(super) async fn insert_checked_jobs(
        tx: &mut Tx<'_>,
        jobs: &[(Tenant, NewExportJob)],
    ) -> Result<Vec<Result<ExportJobRecord>>> {
        let mut versions = std::collections::HashMap::new();
        let mut accepted = Vec::with_capacity(jobs.len());
        let mut out: Vec<Option<Result<_>>> = Vec::with_capacity(jobs.len());
        for (tenant, job) in jobs {
            let policy = (tenant, job.merge_policy.id.as_str());
            let version = match versions.get(&policy) {
                Some(version) => *version,
                None => {
                    let version = Self::lock_policy(tx, tenant, policy.1).await?;
                    *versions.entry(policy).or_insert(version)
                }
            };
            if version == Some(job.merge_policy.version) {
                accepted.push((tenant, job));
                out.push(None);
            } else {
                out.push(Some(Err(CatalogError::Conflict(format!(
                    "merge policy {:?} was changed or deleted while the job was being \
                     created; retry the request",
                    job.merge_policy.id
                )))));
            }
        }
        let ids = Self::insert_export_jobs(tx, &accepted).await?;
        let mut inserted = accepted.into_iter().zip(ids);
        Ok(out
            .into_iter()
            .map(|answer| match answer {
                Some(answer) => answer,
                None => inserted
                    .next()
                    .map(|((tenant, job), id)| {
                        Ok(ExportJobRecord {
                            warnings: job.warnings.clone(),
                            schedule_id: job.schedule_id.clone(),
                            ..ExportJobRecord::created(
                                id,
                                tenant.org.as_str().to_owned(),
                                tenant.sandbox.as_str().to_owned(),
                                job.spec.clone(),
                                Some(job.merge_policy.clone()),
                                job.request_id.clone(),
                                job.now_ms,
                            )
                        })
                    })
                    .unwrap_or_else(|| {
                        Err(CatalogError::Conflict("a job was not inserted".into()))
                    }),
            })
            .collect())
    }
}

#[async_trait]
impl Jobs for SqlCatalog {
    async fn create_export_job(
        &self,
        tenant: &Tenant,
        job: NewExportJob,
    ) -> Result<ExportJobRecord> {
        let mut out = self.create_export_jobs(vec![(tenant.clone(), job)]).await;
        out.pop().unwrap_or_else(|| Err(CatalogError::Conflict("the job was not inserted".into())))
    }

    async fn create_export_jobs(
        &self,
        jobs: Vec<(Tenant, NewExportJob)>,
    ) -> Vec<Result<ExportJobRecord>> {
        // One transaction, one durable commit for all. A job whose policy changed
        // meanwhile fails alone (a read, the transaction goes on); any other error
        // aborts the transaction, and the jobs are then inserted one by one, so that
        // one bad job fails alone.
        let group = async {
            let mut tx = self.write().begin().await?;
            let out = Self::insert_checked_jobs(&mut tx, &jobs).await?;
            tx.commit().await?;
            Ok::<_, CatalogError>(out)
        };
        let out = match group.await {
            Ok(out) => out,
            Err(e) if jobs.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let alone = async {
                        let mut tx = self.write().begin().await?;
                        let mut answer = Self::insert_checked_jobs(&mut tx, &[job]).await?;
                        tx.commit().await?;
                        answer.pop().ok_or_else(|| {
                            CatalogError::Conflict("the job was not inserted".into())
                        })?
                    };
                    out.push(alone.await);
                }
                out
            }
        };
        if out.iter().any(Result::is_ok) {
            self.announce_tasks().await;
        }
        out
    }

    async fn get_export_job(&self, tenant: &Tenant, id: i64) -> Result<Option<ExportJobRecord>> {
        sqlx::query_as::<_, JobRow>(SELECT_JOB)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    async fn export_job_units(&self, tenant: &Tenant, id: i64) -> Result<Vec<UnitState>> {
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            i32,
            i32,
            Option<i32>,
            String,
            Option<String>,
            i32,
            Option<String>,
        )> = sqlx::query_as(JOB_UNITS)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_all(self.read())
            .await?;
        rows.into_iter()
            .map(|(no, first, last, state, worker, attempt, result)| {
                let result: Option<UnitResult> = result
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| corrupt("tasks.result", e))?;
                Ok(UnitState {
                    no: u32::try_from(no).map_err(|e| corrupt("tasks.unit_no", e))?,
                    partitions: unit_partitions(first, last)?,
                    state,
                    worker,
                    attempt,
                    exported: result.as_ref().map(|r| r.counters.total),
                    scanned: result.as_ref().map(|r| r.profiles_scanned),
                })
            })
            .collect()
    }

    async fn list_export_jobs(
        &self,
        tenant: &Tenant,
        q: &JobListQuery,
    ) -> Result<Vec<ExportJobRecord>> {
        let (after_ms, after_id) = q.after.unwrap_or((i64::MAX, i64::MAX));
        let sql = match (&q.dataset_id, q.status) {
            (None, None) => LIST_JOBS,
            (None, Some(_)) => LIST_JOBS_BY_STATUS,
            (Some(_), None) => LIST_JOBS_BY_DATASET,
            (Some(_), Some(_)) => LIST_JOBS_BY_DATASET_STATUS,
        };
        let mut query = sqlx::query_as::<_, JobRow>(sql)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(after_ms)
            .bind(after_id)
            .bind(q.created_since_ms.unwrap_or(i64::MIN));
        if let Some(dataset) = &q.dataset_id {
            query = query.bind(dataset.as_str());
        }
        if let Some(status) = q.status {
            query = query.bind(status.as_str());
        }
        let rows =
            query.bind(i64::from(q.limit)).bind(as_i64(q.skip)).fetch_all(self.read()).await?;
        convert_all(rows)
    }

    async fn cancel_export_job(
        &self,
        tenant: &Tenant,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<CancelOutcome>> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let errors = serde_json::to_string(&[JobError::cancelled()])?;
        let mut tx = self.write().begin().await?;
        sqlx::query(DIALECT.lock_job_task).bind(id).execute(&mut *tx).await?;
        // Each step is a conditional update on the status it expects, so a worker that
        // claims or finishes the job concurrently is never overwritten.
        let outcome = if sqlx::query(CANCEL_NEW_JOB)
            .bind(org)
            .bind(sandbox)
            .bind(id)
            .bind(&errors)
            .bind(true)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1
        {
            sqlx::query(FAIL_JOB_BATCHES).bind(id).bind(now_ms).execute(&mut *tx).await?;
            sqlx::query(FAIL_QUEUED_JOB_TASK).bind(id).bind(now_ms).execute(&mut *tx).await?;
            Self::emit_job_end(&mut tx, id, now_ms).await?;
            Some(CancelOutcome::CancelledNew)
        } else if sqlx::query(FLAG_RUNNING_JOB)
            .bind(org)
            .bind(sandbox)
            .bind(id)
            .bind(true)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1
        {
            Some(CancelOutcome::FlaggedRunning)
        } else if sqlx::query(DELETE_FINISHED_JOB)
            .bind(org)
            .bind(sandbox)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1
        {
            Some(CancelOutcome::DeletedFinished)
        } else {
            None
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn count_jobs(&self) -> Result<Vec<JobCount>> {
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as(COUNT_JOBS).fetch_all(self.read()).await?;
        rows.into_iter()
            .map(|(org, sandbox, status, n)| {
                let status = status.parse().map_err(|e: String| CatalogError::Corrupt(e))?;
                Ok(JobCount { org, sandbox, status, n })
            })
            .collect()
    }

    async fn fold_job_counts(&self) -> Result<u64> {
        let mut tx = self.write().begin().await?;
        let (last,): (Option<i64>,) =
            sqlx::query_as(LAST_JOB_COUNT_DELTA).fetch_one(&mut *tx).await?;
        let Some(last) = last else { return Ok(0) };
        let taken: Vec<(String, String, String, i64)> =
            sqlx::query_as(TAKE_JOB_COUNT_DELTAS).bind(last).fetch_all(&mut *tx).await?;
        let mut sums: std::collections::BTreeMap<(String, String, String), i64> =
            std::collections::BTreeMap::new();
        for (org, sandbox, status, n) in &taken {
            *sums.entry((org.clone(), sandbox.clone(), status.clone())).or_default() += n;
        }
        // In key order: concurrent folds lock the count rows in one order.
        for ((org, sandbox, status), n) in sums.into_iter().filter(|(_, n)| *n != 0) {
            sqlx::query(ADD_JOB_COUNT)
                .bind(org)
                .bind(sandbox)
                .bind(status)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(taken.len() as u64)
    }
}
