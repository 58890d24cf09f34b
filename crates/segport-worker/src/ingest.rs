//! The ingest task: a completed batch's uploaded files into the profile store.

use segport_catalog::{
    CatalogError, ClaimedTask, IngestCommit, NewStoreFile, StoreKind, StoreState, TaskLease,
};
use segport_model::batch::{Batch, BatchError, BatchStatus};
use segport_model::dataset::DatasetClass;
use segport_model::Tenant;
use std::sync::Arc;

use segport_store::ingest::{Ingest, IngestOutcome, IngestTarget, Progress};
use segport_store::input::InputFormat;
use segport_store::schema::UnionSchema;
use segport_store::storage::upload_location;
use segport_store::RecordKind;
use tokio_util::sync::CancellationToken;

use crate::{now_ms, Context, TaskError};

/// How many times an attempt types its records again when another batch changed the sandbox's
/// schema while it ran.
const SCHEMA_RETRIES: usize = 5;

/// Runs the ingest task `task` until it commits, fails, or `stop` fires.
pub async fn run_ingest(
    ctx: &Context,
    task: &ClaimedTask,
    stop: CancellationToken,
    progress: Arc<Progress>,
) -> Result<(), TaskError> {
    let tenant = &task.tenant;
    let batch_id = task
        .batch_id
        .as_ref()
        .ok_or_else(|| TaskError::Invalid("ingest task without a batch".into()))?;
    let batch = ctx
        .catalog
        .get_batch(tenant, batch_id)
        .await?
        .ok_or_else(|| TaskError::Invalid(format!("batch {batch_id} no longer exists")))?;
    if batch.status != BatchStatus::Staging {
        return Err(TaskError::Invalid(format!("batch {batch_id} is {}", batch.status.as_str())));
    }
    let dataset = ctx.catalog.get_dataset(tenant, &batch.dataset_id).await?.ok_or_else(|| {
        TaskError::Invalid(format!("dataset {} no longer exists", batch.dataset_id))
    })?;
    let kind = match dataset.class {
        DatasetClass::Profile => RecordKind::Profile,
        DatasetClass::ExperienceEvent => RecordKind::Event,
        DatasetClass::Export => {
            return Err(TaskError::Invalid(format!(
                "dataset {} is an export destination",
                dataset.id
            )))
        }
    };
    let format = match (batch.input_format.as_deref(), batch.multiline_json) {
        (Some("parquet"), _) => InputFormat::Parquet,
        (_, true) => InputFormat::JsonArray,
        _ => InputFormat::NdJson,
    };

    for _ in 0..SCHEMA_RETRIES {
        let state = ctx.catalog.store_state(tenant).await?;
        let schema_text = match kind {
            RecordKind::Profile => &state.profile_schema,
            RecordKind::Event => &state.event_schema,
        };
        let schema = UnionSchema::from_json(schema_text)
            .map_err(|e| TaskError::Invalid(format!("the sandbox schema is unreadable: {e}")))?;
        let target = IngestTarget {
            org: tenant.org.to_string(),
            sandbox: tenant.sandbox.to_string(),
            dataset: dataset.id.to_string(),
            kind,
            partitions: state.partitions,
            file_prefix: format!(
                "{}-{}-v{}",
                batch.id, task.lease.attempt_id, state.schema_version
            ),
            write: dataset.unified_profile(),
        };
        let outcome =
            ingest_files(ctx, &batch, target, format, schema.clone(), &stop, progress.clone())
                .await?;
        ctx.config.failpoints.hit("ingest-after-files");
        match commit(ctx, tenant, &task.lease, &batch, kind, &state, &schema, &outcome).await {
            Ok(()) => return Ok(()),
            Err(TaskError::Catalog(CatalogError::SchemaChanged)) => {
                tracing::info!(batch_id = %batch.id, "sandbox schema changed meanwhile; typing the batch again");
                for file in &outcome.files {
                    ctx.storage.delete_store_file(&file.path.as_str().into()).await?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(TaskError::Invalid("the sandbox schema kept changing; retry the batch later".into()))
}

/// Parses and writes every uploaded file of the batch, off the async runtime.
async fn ingest_files(
    ctx: &Context,
    batch: &Batch,
    target: IngestTarget,
    format: InputFormat,
    schema: UnionSchema,
    stop: &CancellationToken,
    progress: Arc<Progress>,
) -> Result<IngestOutcome, TaskError> {
    let uploads = ctx.catalog.list_uploads(&batch.id).await?;
    let storage = ctx.storage.clone();
    let limits = ctx.config.ingest.clone();
    let handle = tokio::runtime::Handle::current();
    let (org, sandbox, batch_id) = (batch.org.clone(), batch.sandbox.clone(), batch.id.to_string());
    let mut ingest = Ingest::new(storage.clone(), handle.clone(), target, limits, schema)
        .with_progress(progress);
    let flag = ingest.stop_flag();
    let watcher = {
        let stop = stop.clone();
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            stop.cancelled().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }))
    };
    let result = tokio::task::spawn_blocking(move || {
        crate::cpu().install(|| {
            for upload in uploads {
                let path = upload_location(
                    &org,
                    &sandbox,
                    &batch_id,
                    &upload.name,
                    upload.object.as_deref(),
                );
                if format == InputFormat::NdJson {
                    ingest_ndjson(&mut ingest, &storage, &handle, &path, &upload.name)?;
                } else {
                    let bytes = handle.block_on(storage.get(&path))?;
                    ingest.add_file(&upload.name, bytes, format)?;
                }
            }
            ingest.finish()
        })
    })
    .await;
    drop(watcher);
    match result {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(segport_store::StoreError::Cancelled)) => Err(TaskError::Stopped),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => Err(TaskError::Invalid(format!("the ingest thread failed: {join}"))),
    }
}

/// Feeds an NDJSON file to the ingest a part at a time, each part ending at a line boundary.
fn ingest_ndjson(
    ingest: &mut Ingest,
    storage: &segport_store::Storage,
    handle: &tokio::runtime::Handle,
    path: &object_store::path::Path,
    name: &str,
) -> Result<(), segport_store::StoreError> {
    let size = handle.block_on(storage.size(path))?;
    let (limits, part) = (ingest.limits().record, ingest.limits().ndjson_part as u64);
    let mut carry: Vec<u8> = Vec::new();
    let mut next_line = 1u64;
    let mut offset = 0u64;
    // Inside a line past the record size limit: its bytes are passed over, not held.
    let mut skipping = false;
    while offset < size {
        let end = (offset + part.max(1)).min(size);
        let bytes = handle.block_on(storage.get_range(path, offset..end))?;
        offset = end;
        let mut bytes = &bytes[..];
        if skipping {
            match memchr::memchr(b'\n', bytes) {
                None => continue,
                Some(newline) => {
                    bytes = &bytes[newline + 1..];
                    next_line += 1;
                    skipping = false;
                }
            }
        }
        carry.extend_from_slice(bytes);
        let cut = if offset == size {
            carry.len()
        } else {
            match segport_store::input::whole_lines_end(&carry) {
                Some(end) => end,
                // One line longer than a record may be: refused (unless it is blank, which
                // is no record), and skipped to its end.
                None if carry.len() > limits.max_bytes => {
                    if !carry.iter().all(u8::is_ascii_whitespace) {
                        ingest.refuse(name, next_line, limits.too_large(carry.len()));
                    }
                    carry.clear();
                    skipping = true;
                    continue;
                }
                None => continue, // one line longer than a part: read on
            }
        };
        let rest = carry.split_off(cut);
        ingest.add_ndjson_part(name, &carry, next_line)?;
        next_line += segport_store::input::count_newlines(&carry);
        carry = rest;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn commit(
    ctx: &Context,
    tenant: &Tenant,
    lease: &TaskLease,
    batch: &Batch,
    kind: RecordKind,
    state: &StoreState,
    start_schema: &UnionSchema,
    outcome: &IngestOutcome,
) -> Result<(), TaskError> {
    let store_kind = match kind {
        RecordKind::Profile => StoreKind::Profile,
        RecordKind::Event => StoreKind::Event,
    };
    let mut errors: Vec<BatchError> = outcome
        .errors
        .iter()
        .map(|e| BatchError {
            code: e.code.clone(),
            description: match e.rows.len() {
                listed if e.count == listed as u64 => e.description.clone(),
                0 => format!(
                    "{} ({} records; their rows are not listed, as {} rows of this code are)",
                    e.description,
                    e.count,
                    segport_store::ingest::MAX_ROWS_PER_ERROR
                ),
                listed => format!(
                    "{} ({} records; the first {listed} rows are listed)",
                    e.description, e.count
                ),
            },
            rows: e.rows.clone(),
        })
        .collect();
    if outcome.record_count + outcome.failed_record_count == 0 {
        errors.push(BatchError {
            code: segport_model::codes::FailureCode::NoRecords.as_str().to_owned(),
            description: "the batch holds no records: upload at least one non-empty file before \
                          completing it"
                .to_owned(),
            rows: Vec::new(),
        });
    }
    // A batch that stores nothing (its dataset does not feed the profile store) widens
    // nothing: a type no live dataset holds would only stand in others' way.
    let schema = (outcome.schema != *start_schema && !outcome.files.is_empty())
        .then(|| serde_json::to_string(&outcome.schema))
        .transpose()
        .map_err(|e| TaskError::Invalid(e.to_string()))?;
    let held =
        serde_json::to_string(&outcome.held).map_err(|e| TaskError::Invalid(e.to_string()))?;
    let commit = IngestCommit {
        lease: lease.clone(),
        tenant: tenant.clone(),
        batch_id: batch.id.clone(),
        kind: store_kind,
        held,
        files: outcome
            .files
            .iter()
            .map(|f| NewStoreFile {
                dataset_id: batch.dataset_id.to_string(),
                kind: store_kind,
                partition: f.partition,
                path: f.path.clone(),
                rows: i64::try_from(f.rows).unwrap_or(i64::MAX),
                bytes: i64::try_from(f.bytes).unwrap_or(i64::MAX),
                min_key: f.min_key.clone(),
                max_key: f.max_key.clone(),
                key_fences: f.key_fences.clone(),
            })
            .collect(),
        record_count: i64::try_from(outcome.record_count).unwrap_or(i64::MAX),
        failed_record_count: i64::try_from(outcome.failed_record_count).unwrap_or(i64::MAX),
        errors,
        schema,
        schema_version: state.schema_version,
        now_ms: now_ms(),
    };
    let committed = crate::retrying("commit the ingest", ctx.config.lease, || {
        ctx.catalog.commit_ingest(commit.clone())
    })
    .await?;
    ctx.metrics.ingest_committed(
        outcome.record_count,
        outcome.failed_record_count,
        committed.status == segport_model::batch::BatchStatus::Failed,
    );
    tracing::info!(
        batch_id = %batch.id,
        status = committed.status.as_str(),
        records = outcome.record_count,
        failed = outcome.failed_record_count,
        files = outcome.files.len(),
        completed_ms = committed.completed_ms,
        "ingest committed"
    );
    Ok(())
}
