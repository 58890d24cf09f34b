//! The catalog's rows as they are read, and their conversions into domain types.
//!
//! Each row type derives `sqlx::FromRow` for any row of any backend, so both backends read
//! through the same structs. A value the catalog wrote that does not convert back is reported as
//! [`CatalogError::Corrupt`], naming the column.

use std::collections::BTreeMap;

use segport_model::batch::{Batch, BatchError, BatchKind, BatchStatus};
use segport_model::dataset::{Dataset, DatasetClass, SchemaRef};
use segport_model::job::{ExportJobRecord, JobStatus};
use segport_model::merge_policy::MergePolicy;
use segport_model::schedule::{RunOutcome, Schedule, ScheduleBody, ScheduleRun};
use segport_model::webhook::{parse_events_column, Delivery, DeliveryState, Endpoint};
use segport_model::{BatchId, DatasetId, Tenant};

use crate::{CatalogError, Result};
use crate::{
    ClaimedTask, ExportUnit, StoreFile, StoreKind, StoreState, TaskKind, TaskLease, TokenRecord,
    Upload,
};

/// A union schema without fields, as the catalog stores it (the columns' default).
pub(crate) const EMPTY_SCHEMA: &str = r#"{"fields":{}}"#;

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> CatalogError {
    CatalogError::Corrupt(format!("{what}: {detail}"))
}

/// The partitions of a unit's row: `partition_no` to `partition_last` (`NULL`: the first only).
pub(crate) fn unit_partitions(
    first: i32,
    last: Option<i32>,
) -> Result<std::ops::RangeInclusive<u32>> {
    let first = u32::try_from(first).map_err(|e| corrupt("tasks.partition_no", e))?;
    let last = match last {
        Some(last) => u32::try_from(last).map_err(|e| corrupt("tasks.partition_last", e))?,
        None => first,
    };
    if last < first {
        return Err(corrupt("tasks.partition_last", format!("{last} before {first}")));
    }
    Ok(first..=last)
}

pub(crate) fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    text: Option<&str>,
) -> Result<T> {
    match text {
        None => Ok(T::default()),
        Some(t) => Ok(serde_json::from_str(t)?),
    }
}

/// A row of `batch_uploads`.
pub(crate) type UploadRow = (String, Option<String>, i64, i64);

impl From<UploadRow> for Upload {
    fn from((name, object, bytes, uploaded_ms): UploadRow) -> Self {
        Self { name, object, bytes, uploaded_ms }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    org: String,
    sandbox: String,
    status: String,
    spec: String,
    /// `None` in lists, which leave the policy's body in the table.
    merge_policy: Option<String>,
    errors: Option<String>,
    warnings: Option<String>,
    progress: Option<String>,
    counters: Option<String>,
    attempt: i32,
    attempt_id: String,
    cancel_requested: bool,
    request_id: String,
    creation_ms: i64,
    update_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    #[sqlx(default)]
    units_total: Option<i64>,
    #[sqlx(default)]
    schedule_id: Option<String>,
}

impl TryFrom<JobRow> for ExportJobRecord {
    type Error = CatalogError;
    fn try_from(row: JobRow) -> Result<Self> {
        Ok(ExportJobRecord {
            id: row.id,
            status: row
                .status
                .parse::<JobStatus>()
                .map_err(|e| corrupt("export_jobs.status", e))?,
            spec: serde_json::from_str(&row.spec)?,
            // `null` for a job that failed before its policy resolved (a schedule's run).
            merge_policy: row
                .merge_policy
                .as_deref()
                .map(serde_json::from_str::<Option<MergePolicy>>)
                .transpose()?
                .flatten(),
            errors: json_or_default(row.errors.as_deref())?,
            warnings: json_or_default(row.warnings.as_deref())?,
            progress: row.progress.as_deref().map(serde_json::from_str).transpose()?,
            counters: row.counters.as_deref().map(serde_json::from_str).transpose()?,
            org: row.org,
            sandbox: row.sandbox,
            attempt_id: row.attempt_id,
            attempt: row.attempt,
            cancel_requested: row.cancel_requested,
            request_id: row.request_id,
            creation_ms: row.creation_ms,
            update_ms: row.update_ms,
            started_ms: row.started_ms,
            finished_ms: row.finished_ms,
            units_total: row.units_total,
            schedule_id: row.schedule_id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DatasetRow {
    id: String,
    org: String,
    sandbox: String,
    name: String,
    description: Option<String>,
    schema_ref: String,
    class: String,
    tags: String,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<DatasetRow> for Dataset {
    type Error = CatalogError;
    fn try_from(row: DatasetRow) -> Result<Self> {
        Ok(Dataset {
            id: DatasetId::parse(&row.id).map_err(|e| corrupt("datasets.id", e))?,
            class: DatasetClass::parse(&row.class)
                .ok_or_else(|| corrupt("datasets.class", &row.class))?,
            schema_ref: serde_json::from_str::<SchemaRef>(&row.schema_ref)?,
            tags: serde_json::from_str::<BTreeMap<String, Vec<String>>>(&row.tags)?,
            org: row.org,
            sandbox: row.sandbox,
            name: row.name,
            description: row.description,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StoreFileRow {
    pub(crate) id: i64,
    dataset_id: String,
    kind: String,
    partition_no: i32,
    path: String,
    batch_id: Option<String>,
    ingest_ms: Option<i64>,
    seq: i64,
    row_count: i64,
    byte_count: i64,
    min_key: String,
    max_key: String,
    #[sqlx(default)]
    key_fences: Option<String>,
}

impl TryFrom<StoreFileRow> for StoreFile {
    type Error = CatalogError;
    fn try_from(row: StoreFileRow) -> Result<Self> {
        Ok(StoreFile {
            id: row.id,
            kind: StoreKind::parse(&row.kind)
                .ok_or_else(|| corrupt("store_files.kind", &row.kind))?,
            partition: u32::try_from(row.partition_no)
                .map_err(|e| corrupt("store_files.partition_no", e))?,
            dataset_id: row.dataset_id,
            path: row.path,
            batch_id: row.batch_id,
            ingest_ms: row.ingest_ms,
            seq: row.seq,
            rows: row.row_count,
            bytes: row.byte_count,
            min_key: row.min_key,
            max_key: row.max_key,
            key_fences: match row.key_fences {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|e| corrupt("store_files.key_fences", e))?
                }
                None => Vec::new(),
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StoreStateRow {
    partitions: i32,
    commit_seq: i64,
    last_ingest_ms: i64,
    profile_schema: String,
    event_schema: String,
    schema_version: i64,
}

impl TryFrom<StoreStateRow> for StoreState {
    type Error = CatalogError;
    fn try_from(row: StoreStateRow) -> Result<Self> {
        Ok(StoreState {
            partitions: u32::try_from(row.partitions)
                .map_err(|e| corrupt("sandboxes.partitions", e))?,
            commit_seq: row.commit_seq,
            last_ingest_ms: row.last_ingest_ms,
            profile_schema: row.profile_schema,
            event_schema: row.event_schema,
            schema_version: row.schema_version,
        })
    }
}

pub(crate) fn task_kind(kind: &str) -> Result<TaskKind> {
    match kind {
        "ingest" => Ok(TaskKind::Ingest),
        "export" => Ok(TaskKind::Export),
        other => Err(corrupt("tasks.kind", other)),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    id: i64,
    kind: String,
    org: String,
    sandbox: String,
    batch_id: Option<String>,
    job_id: Option<i64>,
    attempt: i32,
    attempt_id: Option<String>,
    #[sqlx(default)]
    unit_no: Option<i32>,
    #[sqlx(default)]
    partition_no: Option<i32>,
    #[sqlx(default)]
    partition_last: Option<i32>,
    #[sqlx(default)]
    key_from: Option<String>,
    #[sqlx(default)]
    key_to: Option<String>,
    #[sqlx(default)]
    snapshot_seq: Option<i64>,
}

impl TryFrom<ClaimRow> for ClaimedTask {
    type Error = CatalogError;
    fn try_from(row: ClaimRow) -> Result<Self> {
        Ok(ClaimedTask {
            lease: TaskLease {
                task_id: row.id,
                attempt_id: row.attempt_id.ok_or_else(|| corrupt("tasks.attempt_id", "null"))?,
            },
            kind: task_kind(&row.kind)?,
            tenant: tenant(&row.org, &row.sandbox, "tasks")?,
            batch_id: row.batch_id.map(|b| batch_id(&b, "tasks.batch_id")).transpose()?,
            job_id: row.job_id,
            attempt: row.attempt,
            unit: match (row.unit_no, row.partition_no, row.snapshot_seq) {
                (Some(no), Some(partition), Some(snapshot_seq)) => Some(ExportUnit {
                    no: u32::try_from(no).map_err(|e| corrupt("tasks.unit_no", e))?,
                    partitions: unit_partitions(partition, row.partition_last)?,
                    key_from: row.key_from,
                    key_to: row.key_to,
                    snapshot_seq,
                }),
                (None, _, _) => None,
                _ => return Err(corrupt("tasks.unit_no", "a unit without partition or snapshot")),
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BatchRow {
    id: String,
    org: String,
    sandbox: String,
    dataset_id: String,
    kind: String,
    status: String,
    job_id: Option<i64>,
    input_format: Option<String>,
    multiline_json: bool,
    record_count: Option<i64>,
    failed_record_count: Option<i64>,
    errors: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    completed_ms: Option<i64>,
    /// Set once a successful batch is reverted (its status column stays `success`).
    #[sqlx(default)]
    reverted_ms: Option<i64>,
}

impl TryFrom<BatchRow> for Batch {
    type Error = CatalogError;
    fn try_from(row: BatchRow) -> Result<Self> {
        Ok(Batch {
            id: BatchId::parse(&row.id).map_err(|e| corrupt("batches.id", e))?,
            dataset_id: DatasetId::parse(&row.dataset_id)
                .map_err(|e| corrupt("batches.dataset_id", e))?,
            kind: BatchKind::parse(&row.kind).ok_or_else(|| corrupt("batches.kind", &row.kind))?,
            status: match row.reverted_ms {
                Some(_) => BatchStatus::Reverted,
                None => {
                    BatchStatus::parse(&row.status).map_err(|e| corrupt("batches.status", e))?
                }
            },
            errors: json_or_default::<Vec<BatchError>>(row.errors.as_deref())?,
            org: row.org,
            sandbox: row.sandbox,
            job_id: row.job_id,
            input_format: row.input_format,
            multiline_json: row.multiline_json,
            record_count: row.record_count,
            failed_record_count: row.failed_record_count,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            completed_ms: row.completed_ms,
        })
    }
}

/// A merge policy row: the body is the source of truth but for `version` and `default`, which
/// live in columns so that switching defaults and bumping versions are plain updates.
#[derive(sqlx::FromRow)]
pub(crate) struct PolicyRow {
    version: i64,
    pub(crate) is_default: bool,
    body: String,
}

impl TryFrom<PolicyRow> for MergePolicy {
    type Error = CatalogError;
    fn try_from(row: PolicyRow) -> Result<Self> {
        let mut policy: MergePolicy = serde_json::from_str(&row.body)?;
        policy.version = row.version;
        policy.default = row.is_default;
        Ok(policy)
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: String,
    org: String,
    token_sha256: String,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked_ms: Option<i64>,
}

impl From<TokenRow> for TokenRecord {
    fn from(row: TokenRow) -> Self {
        TokenRecord {
            id: row.id,
            org: row.org,
            token_sha256: row.token_sha256,
            created_ms: row.created_ms,
            expires_ms: row.expires_ms,
            revoked_ms: row.revoked_ms,
        }
    }
}

pub(crate) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = CatalogError>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// Converts a page size or offset for binding; both backends take BIGINT.
pub(crate) fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A tenant from its stored `org` and `sandbox` columns.
pub(crate) fn tenant(org: &str, sandbox: &str, table: &str) -> Result<Tenant> {
    Tenant::parse(org, sandbox).map_err(|e| corrupt(&format!("{table}.org/sandbox"), e))
}

/// A batch id from a stored column.
pub(crate) fn batch_id(id: &str, column: &str) -> Result<BatchId> {
    BatchId::parse(id).map_err(|e| corrupt(column, e))
}

#[derive(sqlx::FromRow)]
pub(crate) struct EndpointRow {
    id: String,
    org: String,
    sandbox: String,
    url: String,
    description: String,
    events: Option<String>,
    secret: String,
    previous_secret: Option<String>,
    previous_until_ms: Option<i64>,
    enabled: bool,
    disabled_reason: Option<String>,
    create_ms: i64,
    update_ms: i64,
}

impl TryFrom<EndpointRow> for Endpoint {
    type Error = CatalogError;
    fn try_from(row: EndpointRow) -> Result<Self> {
        Ok(Endpoint {
            events: parse_events_column(row.events.as_deref())
                .map_err(|e| corrupt("webhook_endpoints.events", e))?,
            id: row.id,
            org: row.org,
            sandbox: row.sandbox,
            url: row.url,
            description: row.description,
            secret: row.secret,
            previous_secret: row.previous_secret,
            previous_until_ms: row.previous_until_ms,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            create_ms: row.create_ms,
            update_ms: row.update_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    endpoint_id: String,
    msg_id: String,
    event_type: String,
    state: String,
    attempts: i32,
    next_attempt_ms: i64,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = CatalogError;
    fn try_from(row: DeliveryRow) -> Result<Self> {
        let state =
            DeliveryState::parse(&row.state).map_err(|e| corrupt("webhook_deliveries.state", e))?;
        Ok(Delivery {
            id: row.id,
            endpoint_id: row.endpoint_id,
            msg_id: row.msg_id,
            event_type: row.event_type,
            next_attempt_ms: (state == DeliveryState::Pending).then_some(row.next_attempt_ms),
            state,
            attempts: row.attempts,
            last_status: row.last_status,
            last_error: row.last_error,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    id: String,
    org: String,
    sandbox: String,
    name: String,
    kind: String,
    properties: String,
    cron: String,
    state: String,
    next_due_ms: Option<i64>,
    last_due_ms: Option<i64>,
    last_job_id: Option<i64>,
    missed: i64,
    delta_mark_ms: Option<i64>,
    delta_key: Option<String>,
    create_ms: i64,
    update_ms: i64,
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = CatalogError;
    fn try_from(row: ScheduleRow) -> Result<Self> {
        let properties: serde_json::Value = serde_json::from_str(&row.properties)
            .map_err(|e| corrupt("schedules.properties", e))?;
        let document = serde_json::json!({
            "name": row.name,
            "type": row.kind,
            "properties": properties,
            "schedule": row.cron,
            "state": row.state,
        });
        let body = ScheduleBody::parse(&document).map_err(|e| corrupt("schedules", e))?;
        Ok(Schedule {
            id: row.id,
            org: row.org,
            sandbox: row.sandbox,
            body,
            next_due_ms: row.next_due_ms,
            last_due_ms: row.last_due_ms,
            last_job_id: row.last_job_id,
            missed: row.missed,
            delta_mark_ms: row.delta_mark_ms,
            delta_key: row.delta_key,
            create_ms: row.create_ms,
            update_ms: row.update_ms,
        })
    }
}

/// A row of `schedule_runs`: due time, outcome, job, caught-up count, fired time.
pub(crate) type ScheduleRunRow = (i64, String, Option<i64>, i64, i64);

pub(crate) fn schedule_run(
    (due_ms, outcome, job_id, caught_up, fired_ms): ScheduleRunRow,
) -> Result<ScheduleRun> {
    let outcome = match outcome.as_str() {
        "created" => RunOutcome::Created,
        "missed" => RunOutcome::Missed,
        other => return Err(corrupt("schedule_runs.outcome", other)),
    };
    Ok(ScheduleRun { due_ms, outcome, job_id, caught_up, fired_ms })
}
