//! The export task: evaluates a job over a snapshot of the store with the engine, writes each
//! destination batch's Parquet files under the attempt's private folder, and commits them with
//! the job's status and metrics in one transaction fenced by the lease and the cancel flag.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use segport_catalog::{
    BatchFile, CatalogError, ClaimedTask, ExportCommit, ExportedBatch, ListQuery, NewUnit,
    StoreKind, TaskLease, UnitCommit, UnitCommitted, UnitResult,
};
use segport_engine::{
    empty_output, projections, run_partition, EngineError, ExportPlan, KeyRange, PartitionInput,
    PartitionOutput, Progress,
};
use segport_model::codes::{FailureCode, WarningCode};
use segport_model::dataset::DatasetClass;
use segport_model::job::{ExportCounters, ExportJobRecord, JobProgress, JobWarning};
use segport_model::Tenant;
use segport_store::output::{AttemptOutput, WrittenFile};
use segport_store::schema::UnionSchema;
use segport_store::snapshot::FileRef;
use segport_store::RecordKind;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::units::plan_units;
use crate::{now_ms, Context, TaskError};

/// Store files fetched into the cache at once when a task starts on a remote root.
const FETCHES_AT_ONCE: usize = 8;

/// Runs the export task `task` until it commits, fails, or `stop` fires (`cancelled` tells a
/// requested cancel from a lost lease or a shutdown).
pub async fn run_export(
    ctx: &Context,
    task: &ClaimedTask,
    stop: CancellationToken,
    cancelled: Arc<AtomicBool>,
) -> Result<(), TaskError> {
    let started = std::time::Instant::now();
    let tenant = &task.tenant;
    let job_id =
        task.job_id.ok_or_else(|| TaskError::Invalid("export task without a job".into()))?;
    let job = ctx
        .catalog
        .get_export_job(tenant, job_id)
        .await?
        .ok_or_else(|| TaskError::Invalid(format!("export job {job_id} no longer exists")))?;
    let (files, schemas) = match &task.unit {
        None => {
            // The schemas come with the snapshot, read in one statement with it: a field
            // released after the snapshot and typed anew must not meet the snapshot's files in
            // its new type.
            let snapshot = ctx.catalog.store_snapshot(tenant, Some(&task.lease)).await?;
            let schemas = Schemas {
                profile: snapshot.profile_schema.clone(),
                event: snapshot.event_schema.clone(),
            };
            let units = plan_units(&snapshot.files, ctx.config.export_unit_profiles);
            if units.len() > 1 {
                return split(ctx, task, job_id, &units, &schemas, &cancelled).await;
            }
            (snapshot.files, schemas)
        }
        Some(unit) => {
            // The snapshot and schemas the job's plan fixed, this unit's partitions only.
            let text = ctx.catalog.unit_schemas(job_id).await?.ok_or_else(|| {
                TaskError::Invalid(format!("export job {job_id} has units but no plan"))
            })?;
            let schemas: Schemas = serde_json::from_str(&text)
                .map_err(|e| TaskError::Invalid(format!("the plan of job {job_id}: {e}")))?;
            let files = ctx
                .catalog
                .snapshot_files(tenant, unit.snapshot_seq, unit.partitions.clone())
                .await?;
            (files, schemas)
        }
    };
    let schema = |text: &str| -> Result<UnionSchema, TaskError> {
        UnionSchema::from_json(text)
            .map_err(|e| TaskError::Invalid(format!("the sandbox schema is unreadable: {e}")))
    };
    let plan = plan(&job, schema(&schemas.profile)?, schema(&schemas.event)?)?;
    let projections = Arc::new(projections(&plan));
    let keys = task.unit.as_ref().map_or_else(KeyRange::all, |u| KeyRange {
        from: u.key_from.clone(),
        to: u.key_to.clone(),
    });

    // The partitions' files, opened as the store's sources (on a remote root, fetched into the
    // cache a few at a time).
    let wanted = files
        .iter()
        .map(|f| {
            let file = FileRef { path: f.path.clone(), ingest_ms: f.ingest_ms, seq: f.seq };
            (file, f.dataset_id.clone())
        })
        .collect();
    let sources =
        ctx.storage.sources(wanted, FETCHES_AT_ONCE).await.map_err(|e| TaskError::Failed {
            code: FailureCode::StoreReadError,
            message: segport_model::error::chain(&e),
        })?;
    let placed = files.iter().zip(sources).map(|(f, source)| {
        let kind = match f.kind {
            StoreKind::Profile => RecordKind::Profile,
            StoreKind::Event => RecordKind::Event,
        };
        (f.partition, kind, source)
    });
    let inputs = PartitionInput::group(placed, &keys);
    let total = inputs.len() as u64;

    let progress = Arc::new(Progress::default());
    let cancel = Arc::new(AtomicBool::new(false));
    // The watcher and the progress reporter live as long as this function, whichever way it
    // returns: a handle that aborts its task when dropped.
    let watcher = {
        let (stop, cancel) = (stop.clone(), cancel.clone());
        AbortOnDropHandle::new(tokio::spawn(async move {
            stop.cancelled().await;
            cancel.store(true, Ordering::SeqCst);
        }))
    };
    // A unit's progress shows in its job's count of committed units instead.
    let reporter = task.unit.is_none().then(|| {
        let (ctx, lease, progress) = (ctx.clone(), task.lease.clone(), progress.clone());
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                report_progress(&ctx, &lease, job_id, total, &progress).await;
            }
        }))
    });
    ctx.config.failpoints.pause("export-pause", &stop).await;
    if stop.is_cancelled() {
        return Err(TaskError::Stopped);
    }
    // Each partition's files are written as soon as the partition is done, so memory holds the
    // output of the partitions being evaluated, not of the whole export.
    let output = AttemptOutput::new(
        &ctx.storage,
        tenant.org.as_str(),
        tenant.sandbox.as_str(),
        &task.lease.attempt_id,
    );
    let batch_ids: Vec<String> =
        job.spec.destination.batch_ids().iter().map(|b| b.as_str().to_owned()).collect();
    // Where the time goes, logged with the commit: reading the catalog, evaluating and
    // writing the partitions, recording the output files, committing.
    let prepared = started.elapsed();
    let evaluated = {
        let (plan, projections, progress, cancel) =
            (plan.clone(), projections.clone(), progress.clone(), cancel.clone());
        let (output, batch_ids) = (output.clone(), batch_ids.clone());
        let handle = tokio::runtime::Handle::current();
        // Output files are numbered by partition, or by unit number plus partition: units are
        // numbered in partition order and a unit of several partitions counts one per
        // partition, so every name in a batch differs.
        let unit_no = task.unit.as_ref().map_or(0, |u| u.no as usize);
        tokio::task::spawn_blocking(move || {
            crate::cpu().install(|| {
                inputs
                    .par_iter()
                    .map(|input| {
                        let part = unit_no + input.partition as usize;
                        let written = run_partition(&plan, &projections, input, &progress, &cancel)
                            .map_err(Failure::Engine)?;
                        write_partition(&output, &handle, &batch_ids, part, written)
                    })
                    .collect::<Result<Vec<PartitionWritten>, Failure>>()
            })
        })
        .await
    };
    drop((watcher, reporter));
    let outputs = match evaluated {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(failure)) => {
            // Nothing of a failed attempt stays: its folder goes with it.
            output.remove(batch_ids.iter().map(String::as_str)).await;
            return Err(match failure {
                Failure::Engine(EngineError::Cancelled) => TaskError::Stopped,
                // The message is the whole chain of causes: all an operator sees of it.
                Failure::Engine(e @ EngineError::Store(_)) => TaskError::Failed {
                    code: FailureCode::StoreReadError,
                    message: segport_model::error::chain(&e),
                },
                Failure::Engine(e @ EngineError::Output(_)) => TaskError::Failed {
                    code: FailureCode::OutputWriteError,
                    message: segport_model::error::chain(&e),
                },
                Failure::Write(message) => {
                    TaskError::Failed { code: FailureCode::OutputWriteError, message }
                }
            });
        }
        Err(join) => return Err(TaskError::Invalid(format!("the export thread failed: {join}"))),
    };

    let evaluated_at = started.elapsed();
    // A batch without rows gets one file that carries the schema: from the first unit only,
    // when the job runs as units (the commit keeps it only if no unit had rows).
    let empty_files = task.unit.as_ref().is_none_or(|u| u.no == 0);
    let batches = match write_outputs(&output, &job, &projections, outputs, empty_files).await {
        Ok(b) => b,
        Err(e) => {
            output.remove(batch_ids.iter().map(String::as_str)).await;
            return Err(e);
        }
    };
    ctx.config.failpoints.hit("export-after-files");
    let counters = ExportCounters {
        total: batches.iter().map(|w| u64::try_from(w.batch.rows).unwrap_or(0)).sum(),
        by_namespace: batches.iter().fold(BTreeMap::new(), |mut all, w| {
            for (k, v) in &w.by_namespace {
                *all.entry(k.clone()).or_default() += v;
            }
            all
        }),
    };
    // Said once per job: by the job run whole, or by its first unit.
    let left_out = match &task.unit {
        Some(unit) if unit.no > 0 => Vec::new(),
        _ => datasets_left_out(ctx, tenant).await?,
    };
    let warnings = job
        .warnings
        .iter()
        .cloned()
        .chain(left_out)
        .chain(
            projections
                .profile
                .unknown
                .iter()
                .map(|p| (p, "fields"))
                .chain(projections.events.iter().flat_map(|e| {
                    e.unknown.iter().map(|p| (p, "additionalFields.eventList.fields"))
                }))
                .map(|(path, field)| JobWarning {
                    code: WarningCode::UnknownField.as_str().to_owned(),
                    msg: format!(
                        "{field}: {path:?} matches no field in the profile store; it was left out"
                    ),
                }),
        )
        .collect();
    let batches: Vec<ExportedBatch> = batches.into_iter().map(|w| w.batch).collect();
    let exported = counters.total;
    let written_at = started.elapsed();
    let committed = match &task.unit {
        None => {
            let commit = ExportCommit {
                lease: task.lease.clone(),
                job_id,
                batches,
                counters,
                warnings,
                now_ms: now_ms(),
            };
            crate::retrying("commit the export", ctx.config.lease, || {
                ctx.catalog.commit_export(commit.clone())
            })
            .await
            .map(|()| UnitCommitted::Job)
        }
        Some(_) => {
            let result = UnitResult {
                batches,
                counters,
                warnings,
                profiles_scanned: progress.profiles_scanned.load(Ordering::Relaxed),
            };
            let commit = UnitCommit { lease: task.lease.clone(), job_id, result, now_ms: now_ms() };
            crate::retrying("commit the unit", ctx.config.lease, || {
                ctx.catalog.commit_unit(commit.clone())
            })
            .await
        }
    };
    let total = started.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let timed = |what: &str| {
        tracing::info!(
            job_id,
            unit = task.unit.as_ref().map(|u| u.no),
            exported,
            prepare_ms = ms(prepared),
            evaluate_ms = ms(evaluated_at - prepared),
            record_ms = ms(written_at - evaluated_at),
            commit_ms = ms(total - written_at),
            "{what}"
        );
    };
    match committed {
        Ok(UnitCommitted::Unit) => {
            timed("export unit committed");
            Ok(())
        }
        Ok(UnitCommitted::Job) => {
            ctx.metrics.export_finished(true, total.as_secs_f64(), Some(exported));
            if task.unit.is_some() {
                keep_committed_files(ctx, tenant, &job).await;
            } else {
                output.commit_visible(batch_ids.iter().map(String::as_str)).await;
            }
            timed("export committed");
            Ok(())
        }
        Err(CatalogError::Cancelled) => {
            cancelled.store(true, Ordering::SeqCst);
            output.remove(batch_ids.iter().map(String::as_str)).await;
            Err(TaskError::Stopped)
        }
        Err(e) => Err(e.into()),
    }
}

/// The union schemas of a plan's snapshot, kept with a split job for its units.
#[derive(serde::Serialize, serde::Deserialize)]
struct Schemas {
    profile: String,
    event: String,
}

/// Ends the planning attempt of `job_id` by splitting it into `units`.
async fn split(
    ctx: &Context,
    task: &ClaimedTask,
    job_id: i64,
    units: &[NewUnit],
    schemas: &Schemas,
    cancelled: &AtomicBool,
) -> Result<(), TaskError> {
    let text = serde_json::to_string(schemas)
        .map_err(|e| TaskError::Invalid(format!("cannot record the plan: {e}")))?;
    let split = crate::retrying("split the export", ctx.config.lease, || {
        ctx.catalog.split_export(&task.lease, job_id, units, &text, now_ms())
    })
    .await;
    match split {
        Ok(()) => {
            tracing::info!(job_id, units = units.len(), "export split into units");
            Ok(())
        }
        Err(CatalogError::Cancelled) => {
            cancelled.store(true, Ordering::SeqCst);
            Err(TaskError::Stopped)
        }
        Err(e) => Err(e.into()),
    }
}

/// Once the last unit committed a job: its batches keep the files the commit recorded, and
/// what attempts of its units left beside them (failed, lost or cancelled ones) goes. Best
/// effort, as readers go by the catalog's records and the sweep removes what is left.
async fn keep_committed_files(ctx: &Context, tenant: &Tenant, job: &ExportJobRecord) {
    for batch in job.spec.destination.batch_ids() {
        let Ok(files) = ctx.catalog.list_batch_files(tenant, batch).await else { continue };
        let keep: std::collections::HashSet<String> = files.into_iter().map(|f| f.path).collect();
        let dir = segport_store::storage::batch_dir(
            tenant.org.as_str(),
            tenant.sandbox.as_str(),
            batch.as_str(),
        );
        let Ok(listed) = ctx.storage.list(&dir).await else { continue };
        for (path, _, _) in listed {
            if !keep.contains(path.as_ref()) {
                let _ = ctx.storage.delete(&path).await;
            }
        }
    }
}

async fn report_progress(
    ctx: &Context,
    lease: &TaskLease,
    job_id: i64,
    total: u64,
    progress: &Progress,
) {
    let p = JobProgress {
        partitions_done: progress.partitions_done.load(Ordering::Relaxed),
        partitions_total: total,
        profiles_scanned: progress.profiles_scanned.load(Ordering::Relaxed),
        profiles_exported: progress.profiles_exported.load(Ordering::Relaxed),
        ..JobProgress::default()
    };
    if let Err(e) = ctx.catalog.set_job_progress(lease, job_id, &p, now_ms()).await {
        tracing::debug!(job_id, error = %e, "cannot record progress");
    }
}

/// The engine's view of a job.
fn plan(
    job: &ExportJobRecord,
    profile_schema: UnionSchema,
    event_schema: UnionSchema,
) -> Result<ExportPlan, TaskError> {
    let policy = job
        .merge_policy
        .as_ref()
        .ok_or_else(|| TaskError::Invalid("the job has no merge policy".into()))?;
    Ok(segport_engine::job::export_plan(&job.spec, policy, profile_schema, event_schema))
}

/// A destination batch's files as written, with its rows by identity namespace.
struct WrittenBatch {
    batch: ExportedBatch,
    by_namespace: BTreeMap<String, u64>,
}

/// Why evaluating or writing a partition failed.
enum Failure {
    Engine(EngineError),
    Write(String),
}

/// A partition's written files, per batch, with its rows by namespace.
struct PartitionWritten {
    files: Vec<Option<BatchFile>>,
    by_namespace: Vec<BTreeMap<String, u64>>,
}

/// Writes one partition's encoded files (blocking on the runtime from a rayon thread).
fn write_partition(
    output: &AttemptOutput,
    handle: &tokio::runtime::Handle,
    batch_ids: &[String],
    part: usize,
    written: PartitionOutput,
) -> Result<PartitionWritten, Failure> {
    let mut files = Vec::with_capacity(batch_ids.len());
    for (batch, file) in batch_ids.iter().zip(written.files) {
        files.push(match file {
            None => None,
            Some((bytes, rows)) => {
                let name = format!("part-{part:05}.parquet");
                Some(
                    handle
                        .block_on(put(output, batch, &name, bytes, rows))
                        .map_err(Failure::Write)?,
                )
            }
        });
    }
    Ok(PartitionWritten { files, by_namespace: written.by_namespace })
}

/// Assembles each batch's files; with `empty_files`, a batch without rows gets one file that
/// carries the schema.
async fn write_outputs(
    output: &AttemptOutput,
    job: &ExportJobRecord,
    projections: &segport_engine::Projections,
    outputs: Vec<PartitionWritten>,
    empty_files: bool,
) -> Result<Vec<WrittenBatch>, TaskError> {
    let batch_ids = job.spec.destination.batch_ids();
    let mut written = Vec::with_capacity(batch_ids.len());
    for (b, batch_id) in batch_ids.iter().enumerate() {
        let mut files = Vec::new();
        let mut by_namespace: BTreeMap<String, u64> = BTreeMap::new();
        for output in &outputs {
            for (k, v) in output.by_namespace.get(b).into_iter().flatten() {
                *by_namespace.entry(k.clone()).or_default() += v;
            }
            if let Some(Some(file)) = output.files.get(b) {
                files.push(file.clone());
            }
        }
        let rows: i64 = files.iter().map(|f| f.rows).sum();
        if files.is_empty() && empty_files {
            // Through the engine's sink, like every output file.
            let empty = empty_output(&projections.schema).map_err(|e| TaskError::Failed {
                code: FailureCode::OutputWriteError,
                message: segport_model::error::chain(&e),
            })?;
            let file =
                put(output, batch_id.as_str(), "part-00000.parquet", empty, 0).await.map_err(
                    |message| TaskError::Failed { code: FailureCode::OutputWriteError, message },
                )?;
            files.push(file);
        }
        let batch = ExportedBatch { batch_id: (*batch_id).clone(), files, rows };
        written.push(WrittenBatch { batch, by_namespace });
    }
    Ok(written)
}

/// Writes one output file of `batch` and describes it for the catalog.
async fn put(
    output: &AttemptOutput,
    batch: &str,
    name: &str,
    bytes: bytes::Bytes,
    rows: u64,
) -> Result<BatchFile, String> {
    let WrittenFile { path, bytes } = output.write(batch, name, bytes).await.map_err(|e| {
        format!("cannot write {name} of batch {batch}: {}", segport_model::error::chain(&e))
    })?;
    Ok(BatchFile {
        name: name.to_owned(),
        path,
        rows: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
    })
}

/// A warning for each dataset of profile records or events that does not feed the profile store
/// (no `unifiedProfile` tag): its data is in no export, which the job must say rather than let
/// a user read a short export as complete.
async fn datasets_left_out(ctx: &Context, tenant: &Tenant) -> Result<Vec<JobWarning>, TaskError> {
    const PAGE: u32 = 1000;
    let mut warnings = Vec::new();
    let mut start = 0;
    loop {
        let page = ctx.catalog.list_datasets(tenant, &ListQuery { limit: PAGE, start }).await?;
        warnings.extend(
            page.iter().filter(|d| d.class != DatasetClass::Export && !d.unified_profile()).map(
                |d| JobWarning {
                    code: WarningCode::DatasetNotInProfile.as_str().to_owned(),
                    msg: format!(
                        "dataset {} ({:?}) holds {} records but is not enabled for profile: \
                         what is ingested into it feeds no export (records stored while it was \
                         enabled stay); enable it with PATCH /data/foundation/catalog/dataSets/{} \
                         (tags.unifiedProfile [\"enabled:true\"]) and ingest its batches again",
                        d.id,
                        d.name,
                        d.class.as_str(),
                        d.id
                    ),
                },
            ),
        );
        if page.len() < PAGE as usize {
            return Ok(warnings);
        }
        start += u64::from(PAGE);
    }
}
