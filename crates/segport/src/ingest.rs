//! `segport ingest`: loads local files into a dataset as one batch, through the same steps as
//! the Batch Ingestion API (create, upload, complete) and then runs the batch's ingest task in
//! this process, with a progress bar of records and bytes. Safe while a server runs: the batch's
//! task is claimed like any other.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use object_store::buffered::BufWriter;
use segport_catalog::Catalog;
use segport_catalog::{Upload, UploadRecorded};
use segport_model::batch::{Batch, BatchStatus, IngestFormat, NewIngestBatch};
use segport_model::dataset::DatasetClass;
use segport_model::time::now_ms;
use segport_model::{DatasetId, Tenant};
use segport_store::ingest::Progress;
use segport_store::storage::upload_location;
use segport_store::Storage;
use segport_worker::{Context as WorkerContext, TaskOutcome, Worker, WorkerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::cli::{FormatArg, IngestArgs};
use crate::config::{open_catalog, open_storage};

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let dataset_id =
        DatasetId::parse(&args.dataset).map_err(|m| anyhow::anyhow!("--dataset: {m}"))?;
    let format = match args.format {
        Some(FormatArg::Parquet) => IngestFormat::Parquet,
        Some(FormatArg::Json) => IngestFormat::Json,
        None => format_of(&args.files)?,
    };
    if let Some(server) = &args.server {
        return crate::upload::run(server, &args, dataset_id, format).await;
    }
    let org = args.org.as_deref().context("--org is required (optional only with --server)")?;
    let tenant =
        Tenant::parse(org, &args.sandbox).map_err(|e| anyhow::anyhow!("--org/--sandbox: {e}"))?;
    if args.catalog.database_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
        let db = args.catalog.data_dir.join("segport.db");
        anyhow::ensure!(
            db.exists(),
            "no segport catalog at {}: `segport ingest` loads into the catalog of a server and \
             never creates one. Run it where `segport serve` keeps its data, point --data-dir \
             (SEGPORT_DATA_DIR) at that directory or --database-url (DATABASE_URL) at its \
             database, or load through the running server with --server URL",
            db.display()
        );
    }
    let catalog = open_catalog(&args.catalog, crate::config::TOOL_CONNECTIONS).await?;
    let storage = open_storage(&args.catalog).await?;
    catalog.ensure_sandbox(&tenant, now_ms()).await?;
    let dataset = catalog.get_dataset(&tenant, &dataset_id).await?.with_context(|| {
        format!(
            "no dataset {dataset_id} in {}/{}; create it with POST /data/foundation/catalog/dataSets",
            tenant.org, tenant.sandbox
        )
    })?;
    if dataset.class == DatasetClass::Export {
        bail!(
            "dataset {dataset_id} is an export destination; load into a profile or event dataset"
        );
    }

    let new = NewIngestBatch { dataset_id, format, multiline_json: args.multiline_json };
    let batch = Batch::new_ingest(tenant.org.as_str(), tenant.sandbox.as_str(), &new, now_ms());
    catalog.create_ingest_batch(&batch).await?;
    let mut total_bytes = 0;
    for file in &args.files {
        total_bytes += upload(&catalog, &storage, &tenant, &batch, file, args.link).await?;
    }
    catalog.complete_batch(&tenant, &batch.id, now_ms()).await?;
    eprintln!(
        "batch {} created with {} file(s), {:.1} MiB",
        batch.id,
        args.files.len(),
        total_bytes as f64 / 1_048_576.0
    );

    let worker = Worker::new(WorkerContext {
        catalog: catalog.clone(),
        storage,
        config: Arc::new(WorkerConfig::default()),
        metrics: segport_worker::WorkerMetrics::default(),
    });
    let start = Instant::now();
    let lease = i64::try_from(WorkerConfig::default().lease.as_millis()).unwrap_or(30_000);
    let claimed = catalog.claim_batch_task(worker.owner(), &batch.id, lease, now_ms()).await?;
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(args.quiet, total_bytes, progress.clone(), true);
    match claimed {
        Some(task) => {
            let outcome = worker
                .run_claimed_with_progress(
                    task,
                    CancellationToken::new(),
                    Duration::ZERO,
                    progress.clone(),
                )
                .await;
            if outcome != TaskOutcome::Done && outcome != TaskOutcome::Failed {
                bail!("the ingest did not finish ({outcome:?})");
            }
        }
        // A running server's worker took the task first; wait for it.
        None => wait_for_batch(&catalog, &tenant, &batch).await?,
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report(&catalog, &tenant, &batch, start.elapsed(), total_bytes).await
}

fn format_of(files: &[std::path::PathBuf]) -> anyhow::Result<IngestFormat> {
    let parquet = |f: &std::path::PathBuf| f.extension().is_some_and(|e| e == "parquet");
    match (files.iter().all(parquet), files.iter().any(parquet)) {
        (true, _) => Ok(IngestFormat::Parquet),
        (false, false) => Ok(IngestFormat::Json),
        (false, true) => {
            bail!("a batch holds files of one format; load Parquet and JSON separately")
        }
    }
}

/// Copies (or with `link`, hard-links) a local file into the batch's upload area, as the upload
/// endpoint does.
async fn upload(
    catalog: &Arc<dyn Catalog>,
    storage: &Storage,
    tenant: &Tenant,
    batch: &Batch,
    file: &std::path::Path,
    link: bool,
) -> anyhow::Result<u64> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", file.display()))?;
    segport_store::storage::valid_upload_name(name).map_err(anyhow::Error::msg)?;
    let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
    let object = segport_store::storage::new_upload_object();
    let path = upload_location(org, sandbox, batch.id.as_str(), name, Some(&object));
    let size = match storage.local_path(path.as_ref()) {
        // On a local storage root the kernel copies the file (copy_file_range, reflinks).
        Some(target) => copy_local(file, &target, link).await?,
        None => stream_to_storage(storage, file, path.clone()).await?,
    };
    let upload = Upload {
        name: name.to_owned(),
        object: Some(object),
        bytes: i64::try_from(size).unwrap_or(i64::MAX),
        uploaded_ms: now_ms(),
    };
    // The batch is this command's own, so nothing else replaces or refuses its files.
    if catalog.record_upload(tenant, &batch.id, &upload).await? == UploadRecorded::Refused {
        let _ = storage.delete(&path).await;
        bail!("batch {} stopped loading during the upload", batch.id);
    }
    Ok(size)
}

async fn copy_local(
    file: &std::path::Path,
    target: &std::path::Path,
    link: bool,
) -> anyhow::Result<u64> {
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size == 0 {
        bail!("{} is empty", file.display());
    }
    if let Some(dir) = target.parent() {
        tokio::fs::create_dir_all(dir).await.context("cannot write to storage")?;
    }
    if link && tokio::fs::hard_link(file, target).await.is_ok() {
        return Ok(size);
    }
    tokio::fs::copy(file, target)
        .await
        .with_context(|| format!("cannot copy {} into storage", file.display()))
}

async fn stream_to_storage(
    storage: &Storage,
    file: &std::path::Path,
    path: object_store::path::Path,
) -> anyhow::Result<u64> {
    let mut input = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let mut writer = BufWriter::new(storage.object_store(), path);
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buffer)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        if n == 0 {
            break;
        }
        writer.write_all(&buffer[..n]).await.context("cannot write to storage")?;
        size += n as u64;
    }
    if size == 0 {
        let _ = writer.abort().await;
        bail!("{} is empty", file.display());
    }
    writer.shutdown().await.context("cannot write to storage")?;
    Ok(size)
}

/// A progress bar of `progress`'s bytes (and, with `records`, its record counts), redrawn a few
/// times a second until it is finished; `None` when quiet.
pub(crate) fn progress_bar(
    quiet: bool,
    total_bytes: u64,
    progress: Arc<Progress>,
    records: bool,
) -> Option<ProgressBar> {
    if quiet {
        return None;
    }
    let bar = ProgressBar::new(total_bytes);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let shown = bar.clone();
    tokio::spawn(async move {
        while !shown.is_finished() {
            shown.set_position(progress.bytes.load(Ordering::Relaxed));
            if records {
                shown.set_message(format!(
                    "{} records, {} failed",
                    progress.records.load(Ordering::Relaxed),
                    progress.failed.load(Ordering::Relaxed)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some(bar)
}

async fn wait_for_batch(
    catalog: &Arc<dyn Catalog>,
    tenant: &Tenant,
    batch: &Batch,
) -> anyhow::Result<()> {
    loop {
        let current =
            catalog.get_batch(tenant, &batch.id).await?.context("the batch disappeared")?;
        if matches!(current.status, BatchStatus::Success | BatchStatus::Failed) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn report(
    catalog: &Arc<dyn Catalog>,
    tenant: &Tenant,
    batch: &Batch,
    elapsed: Duration,
    bytes: u64,
) -> anyhow::Result<()> {
    let done = catalog.get_batch(tenant, &batch.id).await?.context("the batch disappeared")?;
    Summary {
        batch_id: batch.id.to_string(),
        status: done.status.as_str().to_owned(),
        records: done.record_count.unwrap_or(0),
        failed: done.failed_record_count.unwrap_or(0),
        errors: done.errors.into_iter().map(|e| (e.code, e.description, e.rows)).collect(),
    }
    .print(elapsed, bytes)
}

/// How a batch ended, as both modes print it.
pub(crate) struct Summary {
    pub batch_id: String,
    pub status: String,
    pub records: i64,
    pub failed: i64,
    /// Code, description and the rows listed.
    pub errors: Vec<(String, String, Vec<u64>)>,
}

impl Summary {
    /// Prints the summary line and the batch's errors; an error when the batch did not succeed.
    pub fn print(&self, elapsed: Duration, bytes: u64) -> anyhow::Result<()> {
        let (records, failed) = (self.records, self.failed);
        let secs = elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "batch {}: {} — {records} records ingested, {failed} failed, in {:.1} s ({:.0} records/s, {:.1} MB/s)",
            self.batch_id,
            self.status,
            secs,
            (records + failed) as f64 / secs,
            bytes as f64 / 1e6 / secs,
        );
        for (code, description, rows) in &self.errors {
            let shown: Vec<String> = rows.iter().take(10).map(u64::to_string).collect();
            eprintln!(
                "  {code}: {description} (rows {}{})",
                shown.join(", "),
                if rows.len() > 10 { ", …" } else { "" }
            );
        }
        if self.status != BatchStatus::Success.as_str() {
            bail!("batch {} {}", self.batch_id, self.status);
        }
        Ok(())
    }
}
