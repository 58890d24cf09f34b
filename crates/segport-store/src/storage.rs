//! The storage root and the layout under it (docs/store.md), behind `object_store`: a local
//! directory (`file://`, the embedded default) or an S3 bucket (`s3://`):
//!
//! ```text
//! {org}/{sandbox}/store/{datasetId}/p={partition}/{file}.parquet   fragments and events
//! {org}/{sandbox}/batches/{batchId}/uploads/{name}                  files uploaded to a batch
//! {org}/{sandbox}/batches/{batchId}/{attemptId}/part-N.parquet      export output (later)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::rowfile::RowFile;
use crate::snapshot::{FileRef, SourceFile};
use crate::{Result, StoreError};

/// The storage root: an object store and the layout of segport's files in it.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The directory behind the store when it is the local filesystem: readers that stream
    /// row groups open files directly.
    local_root: Option<std::path::PathBuf>,
    /// The URL it was opened from, for messages (it carries no credentials).
    url: String,
    /// Where store files of a remote root are read from ([`crate::cache`]).
    cache: Option<Arc<crate::cache::Cache>>,
    /// Row files kept mapped for reads of a few rows ([`Storage::share_rows`]).
    shared_rows: SharedRows,
}

/// Row files kept mapped between reads of a few rows (profile look-ups): mapping a file,
/// decoding its keys and unmapping it again costs more than reading one profile, mostly in the
/// kernel (page-table and TLB work). An entry is kept at most [`SHARED_ROWS_FOR`], so that a
/// file the store deleted meanwhile (a mapping holds its disk space) is let go soon after.
#[derive(Clone, Default)]
struct SharedRows(Arc<std::sync::Mutex<HashMap<PathBuf, SharedRowFile>>>);

/// A shared row file, and when it was mapped.
type SharedRowFile = (Arc<RowFile>, Instant);

/// How long a shared row file stays mapped, and how many are.
impl std::fmt::Debug for SharedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRows")
    }
}

const SHARED_ROWS_FOR: Duration = Duration::from_secs(60);
const SHARED_ROWS_MAX: usize = 4096;

/// How long one request to object storage may take before it is tried again, and how many
/// times, with backoff, it is: a slow or flaky endpoint fails a task, not the process.
const S3_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const S3_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const S3_RETRIES: usize = 5;

/// Objects larger than this go to a remote root as multipart uploads of parts this large (S3
/// wants at least 5 MiB a part, and allows 10,000 parts: objects up to 78 GiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

impl Storage {
    /// A storage root on the local filesystem (created when missing).
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| {
            StoreError::Location(format!("cannot create storage root {}: {e}", root.display()))
        })?;
        // Empty directories go with their last file, so removed attempts leave no folders.
        let fs = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| StoreError::Location(format!("{}: {e}", root.display())))?
            .with_automatic_cleanup(true);
        let local_root = std::fs::canonicalize(root).ok();
        let url = format!("file://{}", root.display());
        Ok(Self {
            store: Arc::new(fs),
            local_root,
            url,
            cache: None,
            shared_rows: SharedRows::default(),
        })
    }

    /// A storage root from a URL: `file:///abs/path`, or `s3://bucket[/prefix]` configured the
    /// standard way from the `AWS_*` environment (see [`Self::from_url_with`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, std::env::vars())
    }

    /// [`Self::from_url`] with the `AWS_*` settings taken from `settings` rather than the
    /// process environment: `AWS_ENDPOINT_URL` (an S3-compatible server, addressed path-style
    /// unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` is set), `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP` for a local endpoint, and
    /// web-identity credentials (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`: IRSA on EKS).
    /// Other keys are ignored.
    pub fn from_url_with(
        url: &str,
        settings: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.is_empty() {
                return Self::local(std::path::Path::new(path));
            }
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StoreError::Location(format!(
                "{url}: use file:///absolute/path or s3://bucket/prefix"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Location(format!("{url}: no bucket named")));
        }
        // Timeouts and retries first: the settings may add to the client options (allow_http).
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_retry(object_store::RetryConfig { max_retries: S3_RETRIES, ..Default::default() })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(S3_REQUEST_TIMEOUT)
                    .with_connect_timeout(S3_CONNECT_TIMEOUT),
            );
        for (key, value) in settings {
            if key.starts_with("AWS_") {
                if let Ok(key) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(key, value);
                }
            }
        }
        let s3 = builder
            .with_bucket_name(bucket)
            .build()
            // The builder's messages name settings, never their values.
            .map_err(|e| StoreError::Location(format!("{url}: {e}")))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        };
        Ok(Self {
            store,
            local_root: None,
            url: url.to_owned(),
            cache: None,
            shared_rows: SharedRows::default(),
        })
    }

    /// This root, reading its store files through `cache` when it is not local.
    pub fn with_cache(mut self, cache: Arc<crate::cache::Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The cache store files are read through, when there is one.
    pub fn cache(&self) -> Option<&Arc<crate::cache::Cache>> {
        self.cache.as_ref()
    }

    /// Whether the root is a local directory: companions are then written beside their data
    /// file, and read there.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// A remote root over any object store (`url` names it in messages): its store files are
    /// read through the cache, as those of `s3://` roots are.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        Self {
            store,
            local_root: None,
            url: url.to_owned(),
            cache: None,
            shared_rows: SharedRows::default(),
        }
    }

    /// The URL this root was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The source of the store file `file` of `dataset`, as a snapshot lists it: in place on a
    /// local root, else through the cache ([`Storage::with_cache`]), fetched on first use.
    pub async fn source(&self, file: FileRef, dataset: String) -> Result<SourceFile> {
        if let Some(local) = self.local_path(&file.path) {
            let beside = |name_of: fn(&str) -> Option<String>| {
                name_of(&file.path)?;
                name_of(&local.to_string_lossy()).map(std::path::PathBuf::from)
            };
            let (rows, index) =
                (beside(crate::layout::rows_path), beside(crate::layout::index_path));
            return Ok(SourceFile::new(file, dataset, local, rows, index, None));
        }
        let cache = self.cache().ok_or_else(|| {
            StoreError::Location(format!(
                "{}: reading the store from {} needs a local cache",
                file.path,
                self.url()
            ))
        })?;
        cache.source(self.store.as_ref(), file, dataset).await
    }

    /// The sources of `files` (each with its dataset), in order: on a remote root fetched into
    /// the cache `at_once` at a time.
    pub async fn sources(
        &self,
        files: Vec<(FileRef, String)>,
        at_once: usize,
    ) -> Result<Vec<SourceFile>> {
        futures::stream::iter(files)
            .map(|(file, dataset)| self.source(file, dataset))
            .buffered(at_once.max(1))
            .try_collect()
            .await
    }

    /// `source` with its row file mapped once and shared by every read of it for a while (see
    /// [`SharedRows`]): for reads of a few rows, which would otherwise map it each time.
    pub fn share_rows(&self, source: SourceFile) -> Result<SourceFile> {
        let Some(path) = source.rows_path().map(std::path::Path::to_path_buf) else {
            return Ok(source);
        };
        let lock = || self.shared_rows.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((rows, at)) = lock().get(&path) {
            if at.elapsed() < SHARED_ROWS_FOR {
                return Ok(source.with_shared_rows(rows.clone()));
            }
        }
        // Mapped without the lock, so that other reads are not held up by this file's opening
        // (two reads opening the same file at once both map it; the later one is kept).
        let Some(rows) = RowFile::open_trusted(&path)?.map(Arc::new) else {
            return Ok(source);
        };
        let mut shared = lock();
        if shared.len() >= SHARED_ROWS_MAX {
            shared.retain(|_, (_, at)| at.elapsed() < SHARED_ROWS_FOR);
            if shared.len() >= SHARED_ROWS_MAX {
                shared.clear();
            }
        }
        shared.insert(path, (rows.clone(), Instant::now()));
        Ok(source.with_shared_rows(rows))
    }

    /// Checks that the storage root answers (a listing of its top level), so that a process
    /// started on an unreachable or misconfigured root stops at once, naming it.
    pub async fn check(&self) -> Result<()> {
        self.store.list_with_delimiter(None).await.map(|_| ()).map_err(|e| {
            // object_store's message already carries its causes.
            StoreError::Location(format!("the storage root {} does not answer: {e}", self.url))
        })
    }

    /// The filesystem path of an object, when storage is local.
    pub fn local_path(&self, path: &str) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|root| path.split('/').fold(root.clone(), |p, s| p.join(s)))
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Writes `bytes` at `path`. On a remote root a large object goes up as a multipart upload
    /// of [`PART_BYTES`] parts, a few at a time; one that fails is aborted, so it leaves no
    /// parts behind (a process killed midway does: see docs/storage.md on lifecycle rules).
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        if self.is_local() || bytes.len() <= PART_BYTES {
            self.store
                .put(path, PutPayload::from(bytes))
                .await
                .map_err(StoreError::storage(path))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(path).await.map_err(StoreError::storage(path))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut rest = bytes;
        while !rest.is_empty() {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(StoreError::Storage { path: path.to_string(), source: e });
            }
            // Parts are slices of the same buffer: nothing is copied.
            let part = rest.split_to(rest.len().min(PART_BYTES));
            writer.put(part);
        }
        writer.finish().await.map_err(StoreError::storage(path))?;
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        let result = self.store.get(path).await.map_err(StoreError::storage(path))?;
        result.bytes().await.map_err(StoreError::storage(path))
    }

    /// Bytes `range` of the object at `path`.
    pub async fn get_range(&self, path: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.store.get_range(path, range).await.map_err(StoreError::storage(path))
    }

    /// [`Self::put`] for files read back without validation (membership indexes, memory-mapped):
    /// on a local root the bytes are synced to disk before the file takes its name, so a crash
    /// leaves the file whole or absent, never a torn file under the final name.
    pub async fn put_synced(&self, path: &Path, bytes: Bytes) -> Result<()> {
        let Some(local) = self.local_path(path.as_ref()) else {
            return self.put(path, bytes).await;
        };
        let write = move || -> std::io::Result<()> {
            if let Some(dir) = local.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut name = local.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".{}.tmp", segport_model::ids::new_uuid().simple()));
            let temporary = local.with_file_name(name);
            let written = std::fs::write(&temporary, &bytes)
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &local));
            if written.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            written
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StoreError::Location(format!("cannot write {path}: {e}")))?
            .map_err(|e| StoreError::Location(format!("cannot write {path}: {e}")))
    }

    /// Bytes `range` (or all) of the object at `path` as a stream of chunks, so that a
    /// download holds a chunk at a time, whatever the size of the file.
    pub async fn stream(
        &self,
        path: &Path,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<futures::stream::BoxStream<'static, object_store::Result<Bytes>>> {
        let options = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        let result = self.store.get_opts(path, options).await.map_err(StoreError::storage(path))?;
        Ok(result.into_stream())
    }

    pub async fn size(&self, path: &Path) -> Result<u64> {
        Ok(self.store.head(path).await.map_err(StoreError::storage(path))?.size)
    }

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Storage { path: path.to_string(), source: e }),
        }
    }

    /// Deletes a store file and its companions, the membership index ([`crate::index`]) and
    /// the row file ([`crate::rowfile`]); they go last, so that an interrupted delete leaves
    /// companions without data, which the sweep removes.
    pub async fn delete_store_file(&self, path: &Path) -> Result<()> {
        self.delete(path).await?;
        if !self.is_local() {
            // A remote root holds no companions: they live in the readers' caches.
            return Ok(());
        }
        for companion in crate::layout::all_companions(path.as_ref()) {
            self.delete(&companion.as_str().into()).await?;
        }
        Ok(())
    }

    /// Where the row file of the store file at `path` goes on disk; `None` when storage is not
    /// local (row files are read through a memory map) or `path` is not a data file.
    pub fn row_file_path(&self, path: &Path) -> Option<std::path::PathBuf> {
        crate::layout::rows_path(path.as_ref()).and_then(|rows| self.local_path(&rows))
    }

    /// Every object under `prefix`, with its size and last modification (epoch ms).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<(Path, u64, i64)>> {
        self.store
            .list(Some(prefix))
            .map_ok(|meta| (meta.location, meta.size, meta.last_modified.timestamp_millis()))
            .try_collect()
            .await
            .map_err(StoreError::storage(prefix))
    }

    /// Deletes everything under `prefix`.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        for (path, _, _) in self.list(prefix).await? {
            self.delete(&path).await?;
        }
        Ok(())
    }
}

/// The directory of one dataset's store files.
pub fn dataset_dir(org: &str, sandbox: &str, dataset: &str) -> Path {
    Path::from_iter([org, sandbox, "store", dataset])
}

/// A store file of one partition.
pub fn store_file(org: &str, sandbox: &str, dataset: &str, partition: u32, name: &str) -> Path {
    Path::from_iter([org, sandbox, "store", dataset, &format!("p={partition}"), name])
}

/// Everything of one batch: its uploads, or its export attempts' output.
pub fn batch_dir(org: &str, sandbox: &str, batch: &str) -> Path {
    Path::from_iter([org, sandbox, "batches", batch])
}

/// Where the files uploaded to a batch live.
pub fn uploads_dir(org: &str, sandbox: &str, batch: &str) -> Path {
    batch_dir(org, sandbox, batch).join("uploads")
}

/// Where the bytes of an upload live: under its object key (a fresh key per upload, so a
/// refused or replaced upload never touches the bytes a batch reads), or, for uploads from
/// before keys, at their name ([`upload_file`]).
pub fn upload_location(
    org: &str,
    sandbox: &str,
    batch: &str,
    name: &str,
    object: Option<&str>,
) -> Path {
    match object {
        Some(key) => uploads_dir(org, sandbox, batch).join(key),
        None => upload_file(org, sandbox, batch, name),
    }
}

/// A fresh object key for an upload: `u-` and 32 hex digits, never a client's file name.
pub fn new_upload_object() -> String {
    format!("u-{}", segport_model::ids::new_uuid().simple())
}

/// One uploaded file as uploads were stored before object keys: at its name, a relative path
/// already validated by [`valid_upload_name`].
pub fn upload_file(org: &str, sandbox: &str, batch: &str, name: &str) -> Path {
    let mut parts = vec![org, sandbox, "batches", batch, "uploads"];
    parts.extend(name.split('/'));
    Path::from_iter(parts)
}

/// Checks an upload's file name: a relative path of 1 to 512 bytes, without `..` or `.`
/// segments, empty segments, NUL, backslashes or control characters.
pub fn valid_upload_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("file name {name:?} {why}"));
    if name.is_empty() || name.len() > 512 {
        return bad("must be 1 to 512 bytes long");
    }
    if name.contains('\0') || name.contains('\\') || name.chars().any(char::is_control) {
        return bad("must not contain NUL, backslashes or control characters");
    }
    if name.starts_with('/') {
        return bad("must be a relative path");
    }
    if name.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("must not contain empty, . or .. path segments");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names() {
        for ok in ["a.json", "dir/part-1.ndjson", "x y.parquet"] {
            assert!(valid_upload_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/../b", "/abs", "a\\b", "a\0b", "a//b", "./a", "a/"] {
            assert!(valid_upload_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layout() {
        assert_eq!(store_file("o", "s", "d", 3, "f.parquet").as_ref(), "o/s/store/d/p=3/f.parquet");
        assert_eq!(
            upload_file("o", "s", "b", "x/y.json").as_ref(),
            "o/s/batches/b/uploads/x/y.json"
        );
    }
}
