//! Keeping the queue and the store tidy: expired leases go back to the queue, files that no
//! snapshot needs are deleted, leftovers of attempts that never committed are removed, and
//! partitions with many small files are compacted.

use std::collections::{BTreeMap, HashSet};

use segport_catalog::{NewStoreFile, StoreKind};
use segport_model::Tenant;
use segport_store::compact::compact;
use segport_store::schema::UnionSchema;
use segport_store::snapshot::FileRef;
use segport_store::storage::{batch_dir, store_file};
use segport_store::RecordKind;
use tokio_util::sync::CancellationToken;

use crate::{duration_ms, now_ms, Context, TaskError};

/// The maintenance loop of a worker process.
pub(crate) async fn run(ctx: &Context, shutdown: CancellationToken) {
    let mut reap = tokio::time::interval(ctx.config.reap_every);
    let mut maintain = tokio::time::interval(ctx.config.maintain_every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = reap.tick() => {
                if let Err(e) = reap_expired(ctx).await {
                    tracing::warn!(error = %e, "cannot reap expired leases");
                }
            }
            _ = maintain.tick() => {
                if let Err(e) = sweep(ctx).await {
                    tracing::warn!(error = %e, "store sweep failed");
                }
                if let Err(e) = ctx.catalog.fold_job_counts().await {
                    tracing::warn!(error = %e, "cannot fold the job counts");
                }
                if let Some(retention) = ctx.config.retention {
                    if let Err(e) = expire_export_batches(ctx, now_ms() - duration_ms(retention)).await {
                        tracing::warn!(error = %e, "export batch retention failed");
                    }
                }
                match ctx.catalog.sandboxes().await {
                    Ok(sandboxes) => {
                        for tenant in sandboxes {
                            if let Err(e) = compact_sandbox(ctx, &tenant).await {
                                tracing::warn!(org = %tenant.org, sandbox = %tenant.sandbox, error = %e, "compaction failed");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list sandboxes"),
                }
            }
        }
    }
}

/// Returns the tasks whose lease expired to the queue (or fails them after their last
/// attempt). Answers how many there were.
pub async fn reap_expired(ctx: &Context) -> Result<usize, TaskError> {
    let reaped = ctx.catalog.reap_expired_tasks(now_ms()).await?;
    for r in &reaped {
        tracing::warn!(task_id = r.task_id, requeued = r.requeued, "task lease expired");
        ctx.metrics.lease_expired(r.kind, r.requeued);
    }
    Ok(reaped.len())
}

/// Deletes removed files that no snapshot holds any more, and files of attempts that never
/// committed, once both are older than the grace period. Answers how many files were deleted.
pub async fn sweep(ctx: &Context) -> Result<usize, TaskError> {
    let grace = duration_ms(ctx.config.file_grace);
    let mut deleted = 0;
    let collectable = ctx.catalog.collectable_store_files(now_ms() - grace).await?;
    if !collectable.is_empty() {
        for (_, path) in &collectable {
            ctx.storage.delete_store_file(&path.as_str().into()).await?;
        }
        let ids: Vec<i64> = collectable.iter().map(|(id, _)| *id).collect();
        ctx.catalog.forget_store_files(&ids).await?;
        deleted += ids.len();
    }

    let running: HashSet<String> = ctx.catalog.running_attempts().await?.into_iter().collect();
    for tenant in ctx.catalog.sandboxes().await? {
        deleted += sweep_batch_attempts(ctx, &tenant, &running, now_ms() - grace).await?;
        let prefix = object_store::path::Path::from_iter([
            tenant.org.as_str(),
            tenant.sandbox.as_str(),
            "store",
        ]);
        // Listed first: a file committed after this listing is then found in the manifest or
        // among the running attempts read below.
        let listed = ctx.storage.list(&prefix).await?;
        if listed.is_empty() {
            continue;
        }
        let known: HashSet<String> = ctx.catalog.store_paths(&tenant).await?.into_iter().collect();
        let cutoff = now_ms() - grace;
        for (path, _, modified_ms) in listed {
            let text = path.to_string();
            // Young files may belong to a compaction or an attempt that is about to commit.
            // Companions (membership index, row file) live and die with their data file.
            let data = segport_store::layout::companion_data(&text);
            if known.contains(&text)
                || data.is_some_and(|d| known.contains(&d))
                || modified_ms > cutoff
            {
                continue;
            }
            let attempt = attempt_of(&text);
            if attempt.is_some_and(|a| running.contains(a)) {
                continue;
            }
            tracing::info!(path = %text, "removing a file no commit references");
            ctx.storage.delete(&path).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes the finished export batches that completed before `before_ms`, with their files
/// (retention). Answers how many were deleted. A batch is gone from the catalog before its
/// files go, so a reader never lists a file that is being removed.
pub async fn expire_export_batches(ctx: &Context, before_ms: i64) -> Result<usize, TaskError> {
    const PAGE: i64 = 500;
    let mut deleted = 0;
    loop {
        let expired = ctx.catalog.expired_export_batches(before_ms, PAGE).await?;
        let page = expired.len();
        for (tenant, batch) in expired {
            match ctx.catalog.delete_export_batch(&tenant, &batch).await {
                Ok(true) => {}
                // Deleted meanwhile (a DELETE request, another worker): nothing left to do.
                Ok(false) => continue,
                Err(e) => return Err(e.into()),
            }
            let dir = batch_dir(tenant.org.as_str(), tenant.sandbox.as_str(), batch.as_str());
            ctx.storage.delete_prefix(&dir).await?;
            tracing::info!(batch_id = %batch, org = %tenant.org, sandbox = %tenant.sandbox, "expired export batch deleted");
            deleted += 1;
        }
        if page < PAGE as usize {
            return Ok(deleted);
        }
    }
}

/// Removes export attempt folders (`batches/{batchId}/{attemptId}/…`) that no commit references
/// and whose attempt no longer runs: the output of crashed, lost or cancelled attempts.
async fn sweep_batch_attempts(
    ctx: &Context,
    tenant: &Tenant,
    running: &HashSet<String>,
    cutoff_ms: i64,
) -> Result<usize, TaskError> {
    let prefix = object_store::path::Path::from_iter([
        tenant.org.as_str(),
        tenant.sandbox.as_str(),
        "batches",
    ]);
    let mut deleted = 0;
    let mut committed: std::collections::HashMap<String, HashSet<String>> =
        std::collections::HashMap::new();
    for (path, _, modified_ms) in ctx.storage.list(&prefix).await? {
        let parts: Vec<String> = path.parts().map(|p| p.as_ref().to_owned()).collect();
        // org / sandbox / batches / batch / attempt-or-"uploads" / …
        let (Some(batch), Some(attempt)) = (parts.get(3), parts.get(4)) else { continue };
        if attempt == "uploads" || running.contains(attempt) || modified_ms > cutoff_ms {
            continue;
        }
        if !committed.contains_key(batch) {
            let files = match segport_model::BatchId::parse(batch) {
                Ok(id) => ctx.catalog.list_batch_files(tenant, &id).await?,
                Err(_) => Vec::new(),
            };
            committed.insert(batch.clone(), files.into_iter().map(|f| f.path).collect());
        }
        if committed.get(batch).is_some_and(|c| c.contains(&path.to_string())) {
            continue;
        }
        tracing::info!(path = %path, "removing an export attempt's uncommitted file");
        ctx.storage.delete(&path).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// The attempt id in a store file name `{batchId}-{attemptId}-…` (attempt ids are UUIDs).
fn attempt_of(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let rest = name.get(33..)?;
    rest.get(..36)
}

/// Compacts every partition of the sandbox that holds at least `compact_min_files` files of
/// one dataset. Answers how many partitions were compacted.
pub async fn compact_sandbox(ctx: &Context, tenant: &Tenant) -> Result<usize, TaskError> {
    let snapshot = ctx.catalog.store_snapshot(tenant, None).await?;
    let mut groups: BTreeMap<(String, &'static str, u32), Vec<&segport_catalog::StoreFile>> =
        BTreeMap::new();
    for file in &snapshot.files {
        groups
            .entry((file.dataset_id.clone(), file.kind.as_str(), file.partition))
            .or_default()
            .push(file);
    }
    let mut compacted = 0;
    for ((dataset, _, partition), files) in groups {
        if files.len() < ctx.config.compact_min_files.max(2) {
            continue;
        }
        let kind = files[0].kind;
        compact_files(ctx, tenant, &dataset, kind, partition, &files).await?;
        compacted += 1;
    }
    Ok(compacted)
}

async fn compact_files(
    ctx: &Context,
    tenant: &Tenant,
    dataset: &str,
    kind: StoreKind,
    partition: u32,
    files: &[&segport_catalog::StoreFile],
) -> Result<(), TaskError> {
    let state = ctx.catalog.store_state(tenant).await?;
    let (record_kind, schema_text) = match kind {
        StoreKind::Profile => (RecordKind::Profile, &state.profile_schema),
        StoreKind::Event => (RecordKind::Event, &state.event_schema),
    };
    let schema = UnionSchema::from_json(schema_text)
        .map_err(|e| TaskError::Invalid(format!("the sandbox schema is unreadable: {e}")))?;
    let refs: Vec<FileRef> = files
        .iter()
        .map(|f| FileRef { path: f.path.clone(), ingest_ms: f.ingest_ms, seq: f.seq })
        .collect();
    let name = format!("compacted-{}.parquet", segport_model::ids::new_uuid().simple());
    let out = store_file(tenant.org.as_str(), tenant.sandbox.as_str(), dataset, partition, &name);
    let row_group_rows = ctx.config.ingest.row_group_rows;
    let merged = compact(&ctx.storage, &refs, record_kind, &schema, row_group_rows, &out, &[])
        .await?
        .ok_or_else(|| TaskError::Invalid(format!("partition {partition} held no rows")))?;
    let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
    let new_file = NewStoreFile {
        dataset_id: dataset.to_owned(),
        kind,
        partition,
        path: merged.path.clone(),
        rows: i64::try_from(merged.rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(merged.bytes).unwrap_or(i64::MAX),
        min_key: merged.min_key,
        max_key: merged.max_key,
        key_fences: merged.key_fences,
    };
    match ctx.catalog.commit_compaction(tenant, &ids, &new_file, now_ms()).await {
        Ok(seq) => {
            tracing::info!(dataset, partition, files = ids.len(), seq, "partition compacted");
            Ok(())
        }
        Err(e) => {
            // The merged file is not referenced; remove it now rather than wait for the sweep.
            ctx.storage.delete_store_file(&out).await?;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::attempt_of;

    #[test]
    fn attempt_ids_in_file_names() {
        let path = "o/s/store/d/p=3/0123456789abcdef0123456789abcdef-6f1c2a1e-8d7b-4c1e-9a1b-0c2d3e4f5a6b-v0-00000.parquet";
        assert_eq!(attempt_of(path), Some("6f1c2a1e-8d7b-4c1e-9a1b-0c2d3e4f5a6b"));
        assert_eq!(attempt_of("o/s/store/d/p=1/compacted-x.parquet"), None);
    }
}
