//! The local cache of a process that reads the store from a remote root (`s3://`): the Parquet
//! files an export reads, downloaded, and the companions derived from them (the row file and
//! the membership index), built here from the Parquet file rather than fetched.
//!
//! Durable state is the catalog and the Parquet files; everything here can be thrown away and
//! made again. On a local root ([`crate::Storage::local`]) the companions sit beside their data file,
//! written at ingest, and the cache is not used.
//!
//! Companions are memory-mapped without validation ([`crate::mapped`]), so an entry is made so
//! that it is whole or absent: its files are written into a fresh `tmp-*` folder, fsynced, and
//! described in `entry.json` (sizes and xxh3 checksums), and only then is the folder renamed to
//! its final name. At start, [`Cache::open`] deletes leftover `tmp-*` folders and every entry
//! whose files fail their sizes or checksums. An entry is evicted, least recently used first,
//! once the cache holds more than its capacity, but never while a [`SourceFile`] of it is alive
//! (a running task reads or maps it): the capacity is exceeded rather than a mapped file pulled
//! away, and the excess goes as soon as those tasks end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatchReader;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use xxhash_rust::xxh3::Xxh3;

use crate::index::IndexBuilder;
use crate::rowfile::RowFileWriter;
use crate::snapshot::{FileRef, Pin, SourceFile};
use crate::{Result, StoreError};

/// The layout version of entries: a cache written by another layout is not read.
const LAYOUT: &str = "v1";
/// The description of an entry, written last.
const ENTRY: &str = "entry.json";
/// An entry's files.
pub(crate) const DATA: &str = "data.parquet";
pub(crate) const ROWS: &str = "rows.arrow";
pub(crate) const INDEX: &str = "members.arrow";
/// Rows per batch while companions are built: bounded memory, whatever the file's size.
const BUILD_BATCH: usize = 8192;

/// The cache's counters, served at `/metrics` by the process that holds it.
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    bytes: Gauge,
    fill_bytes: Counter,
}

impl CacheMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_hits",
            "Store files read from the local cache without fetching them",
            self.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Store files fetched into the local cache (their companions built there)",
            self.misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries evicted from the local cache, least recently used first",
            self.evictions.clone(),
        );
        registry.register("cache_bytes", "Bytes the local cache holds", self.bytes.clone());
        registry.register(
            "cache_fill_bytes",
            "Bytes written into the local cache (downloaded and built)",
            self.fill_bytes.clone(),
        );
    }

    /// Hits, misses and evictions so far, and the bytes held now.
    pub fn snapshot(&self) -> (u64, u64, u64, i64) {
        (self.hits.get(), self.misses.get(), self.evictions.get(), self.bytes.get())
    }
}

/// One file of an entry, as `entry.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryFile {
    name: String,
    bytes: u64,
    /// xxh3-64 of its bytes, in hex.
    xxh3: String,
}

/// What `entry.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryMeta {
    /// The store path of the data file.
    path: String,
    files: Vec<EntryFile>,
}

impl EntryMeta {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.name == name)
    }
}

struct Entry {
    /// Its folder's name under the cache root.
    name: String,
    meta: EntryMeta,
    last_used: u64,
    pin: Arc<()>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Bytes of all entries.
    used: u64,
    /// Use counter: an entry's `last_used` is the tick of its last use.
    tick: u64,
    /// Entries being filled, by store path: a second reader waits for the first's fill.
    filling: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// A bounded cache of store files and their companions on local disk.
pub struct Cache {
    root: PathBuf,
    capacity: u64,
    state: Mutex<State>,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("root", &self.root).field("capacity", &self.capacity).finish()
    }
}

fn io_error<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::Cache(format!("cannot {what} {}: {e}", path.display()))
}

/// The xxh3 of a file and its size, read in chunks.
fn checksum(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((bytes, format!("{:016x}", hasher.digest())))
}

/// Syncs a directory, so that a rename into it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Whether the files of an entry folder are those its `entry.json` describes.
fn verify(folder: &Path) -> Option<EntryMeta> {
    let text = std::fs::read(folder.join(ENTRY)).ok()?;
    let meta: EntryMeta = serde_json::from_slice(&text).ok()?;
    if !meta.has(DATA) {
        return None;
    }
    for file in &meta.files {
        if ![DATA, ROWS, INDEX].contains(&file.name.as_str()) {
            return None;
        }
        let (bytes, xxh3) = checksum(&folder.join(&file.name)).ok()?;
        if bytes != file.bytes || xxh3 != file.xxh3 {
            return None;
        }
    }
    Some(meta)
}

/// The folder name of the entry of the store file at `path`.
fn entry_name(path: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(path.as_bytes()))
}

impl Cache {
    /// Opens the cache at `dir` (created when missing), holding at most `capacity` bytes:
    /// leftovers of interrupted fills are deleted, every entry is checked against its
    /// checksums (one that fails is deleted), and entries beyond the capacity are evicted.
    /// Blocking: reads every file of the cache once.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self> {
        let root = dir.join(LAYOUT);
        std::fs::create_dir_all(&root).map_err(io_error("create the cache folder", &root))?;
        let mut found = Vec::new();
        let listing = std::fs::read_dir(&root).map_err(io_error("list the cache folder", &root))?;
        for item in listing {
            let item = item.map_err(io_error("list the cache folder", &root))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let folder = item.path();
            let valid = if name.starts_with("tmp-") { None } else { verify(&folder) };
            match valid {
                Some(meta) if entry_name(&meta.path) == name => {
                    let modified = item
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .unwrap_or(std::time::UNIX_EPOCH);
                    found.push((modified, name, meta));
                }
                _ => {
                    tracing::info!(entry = %folder.display(), "deleting an incomplete or damaged cache entry");
                    let removed = if folder.is_dir() {
                        std::fs::remove_dir_all(&folder)
                    } else {
                        std::fs::remove_file(&folder)
                    };
                    removed.map_err(io_error("delete", &folder))?;
                }
            }
        }
        // The oldest entries are the least recently used ones.
        found.sort_by_key(|(modified, _, _)| *modified);
        let mut state = State::default();
        for (_, name, meta) in found {
            state.tick += 1;
            state.used += meta.bytes();
            let entry = Entry { name, last_used: state.tick, pin: Arc::new(()), meta };
            state.entries.insert(entry.meta.path.clone(), entry);
        }
        let cache =
            Self { root, capacity, state: Mutex::new(state), metrics: CacheMetrics::default() };
        let trash = cache.evict();
        Self::delete(trash);
        cache.metrics.bytes.set(i64::try_from(cache.used()).unwrap_or(i64::MAX));
        Ok(cache)
    }

    /// The counters of this cache.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// Where the cache keeps its entries.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The partitions (`p=N` in their paths) of the store files the cache holds, ascending.
    pub fn held_partitions(&self) -> Vec<u32> {
        let mut held: Vec<u32> = self
            .lock()
            .entries
            .keys()
            .filter_map(|path| {
                path.split('/').find_map(|part| part.strip_prefix("p=")?.parse().ok())
            })
            .collect();
        held.sort_unstable();
        held.dedup();
        held
    }

    /// Bytes the cache holds.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held left consistent data: each change is one statement.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store file `file` of `dataset` in `store`, read through the cache: fetched and
    /// its companions built on first use. The entry stays while the source lives.
    pub(crate) async fn source(
        &self,
        store: &dyn ObjectStore,
        file: FileRef,
        dataset: String,
    ) -> Result<SourceFile> {
        let path = file.path.clone();
        if let Some(source) = self.hit(&file, &dataset) {
            return Ok(source);
        }
        // One fill per file at a time: others wait for it, then find the entry.
        let gate = self.lock().filling.entry(path.clone()).or_default().clone();
        let filled = {
            let _filling = gate.lock().await;
            match self.hit(&file, &dataset) {
                Some(source) => Ok(source),
                None => self.fill(store, file, dataset).await,
            }
        };
        let mut state = self.lock();
        if state.filling.get(&path).is_some_and(|g| Arc::strong_count(g) <= 2) {
            state.filling.remove(&path);
        }
        filled
    }

    /// The source of `file` when its entry is here.
    fn hit(&self, file: &FileRef, dataset: &str) -> Option<SourceFile> {
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        let entry = state.entries.get_mut(&file.path)?;
        entry.last_used = tick;
        self.metrics.hits.inc();
        Some(self.source_of(entry, file.clone(), dataset.to_owned()))
    }

    fn source_of(&self, entry: &Entry, file: FileRef, dataset: String) -> SourceFile {
        let folder = self.root.join(&entry.name);
        let companion = |name: &str| entry.meta.has(name).then(|| folder.join(name));
        SourceFile::new(
            file,
            dataset,
            folder.join(DATA),
            companion(ROWS),
            companion(INDEX),
            Some(Pin(entry.pin.clone())),
        )
    }

    /// Fetches `file` into a new entry and builds its companions there.
    async fn fill(
        &self,
        store: &dyn ObjectStore,
        file: FileRef,
        dataset: String,
    ) -> Result<SourceFile> {
        self.metrics.misses.inc();
        let name = entry_name(&file.path);
        let temporary = self.root.join(format!("tmp-{}", segport_model::ids::new_uuid().simple()));
        // Whatever happens below, the temporary folder does not outlive this fill.
        let guard = RemoveOnDrop(temporary.clone());
        std::fs::create_dir_all(&temporary).map_err(io_error("create", &temporary))?;
        let data = temporary.join(DATA);
        let downloaded = download(store, &file.path, &data).await?;
        let (store_path, folder) = (file.path.clone(), temporary.clone());
        let mut files = tokio::task::spawn_blocking(move || build_companions(&folder, &store_path))
            .await
            .map_err(|e| {
                StoreError::Cache(format!("building the companions of {}: {e}", file.path))
            })??;
        files.insert(0, downloaded);
        let meta = EntryMeta { path: file.path.clone(), files };
        let bytes = meta.bytes();
        let (folder, final_folder) = (temporary.clone(), self.root.join(&name));
        let text = serde_json::to_vec(&meta).map_err(|e| StoreError::Cache(e.to_string()))?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = std::fs::File::create(folder.join(ENTRY))?;
            out.write_all(&text)?;
            out.sync_all()?;
            sync_dir(&folder)?;
            // A folder of the same name is a damaged entry no one holds (a held one is in the
            // map and would have been a hit): it is replaced.
            if final_folder.exists() {
                std::fs::remove_dir_all(&final_folder)?;
            }
            std::fs::rename(&folder, &final_folder)?;
            sync_dir(&root)
        })
        .await
        .map_err(|e| StoreError::Cache(format!("{}: {e}", file.path)))?
        .map_err(|e| {
            StoreError::Cache(format!("cannot store the cache entry of {}: {e}", file.path))
        })?;
        drop(guard);
        self.metrics.fill_bytes.inc_by(bytes);
        let (source, trash) = {
            let mut state = self.lock();
            state.tick += 1;
            let entry = Entry { name, meta, last_used: state.tick, pin: Arc::new(()) };
            let source = self.source_of(&entry, file.clone(), dataset);
            state.used += bytes;
            if let Some(old) = state.entries.insert(file.path.clone(), entry) {
                state.used -= old.meta.bytes();
            }
            drop(state);
            (source, self.evict())
        };
        tokio::task::spawn_blocking(move || Self::delete(trash))
            .await
            .map_err(|e| StoreError::Cache(format!("evicting: {e}")))?;
        self.metrics.bytes.set(i64::try_from(self.used()).unwrap_or(i64::MAX));
        Ok(source)
    }

    /// Takes entries out, least recently used first and never a held one, until the cache is
    /// within its capacity; answers their folders, renamed out of the way, for deletion.
    fn evict(&self) -> Vec<PathBuf> {
        let mut state = self.lock();
        let mut trash = Vec::new();
        while state.used > self.capacity {
            let victim = state
                .entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.pin) == 1)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(path, _)| path.clone());
            let Some(path) = victim else {
                tracing::warn!(
                    used = state.used,
                    capacity = self.capacity,
                    "the cache holds more than its capacity: running tasks hold every entry"
                );
                break;
            };
            let Some(entry) = state.entries.remove(&path) else { break };
            state.used -= entry.meta.bytes();
            self.metrics.evictions.inc();
            // Renamed while the lock is held: a fill of the same file may start at once and
            // must find the final name free.
            let from = self.root.join(&entry.name);
            let to = self.root.join(format!("tmp-{}", segport_model::ids::new_uuid().simple()));
            match std::fs::rename(&from, &to) {
                Ok(()) => trash.push(to),
                Err(e) => {
                    tracing::warn!(entry = %from.display(), error = %e, "cannot evict a cache entry")
                }
            }
        }
        trash
    }

    fn delete(trash: Vec<PathBuf>) {
        for folder in trash {
            if let Err(e) = std::fs::remove_dir_all(&folder) {
                tracing::warn!(entry = %folder.display(), error = %e, "cannot delete an evicted cache entry");
            }
        }
    }
}

/// Removes a temporary folder when dropped (a fill that failed or was cancelled); after the
/// folder was renamed into place there is nothing left to remove.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Streams the object at `path` into the local file `to`, synced; its size and checksum.
async fn download(store: &dyn ObjectStore, path: &str, to: &Path) -> Result<EntryFile> {
    let location = object_store::path::Path::from(path);
    let mut stream =
        store.get(&location).await.map_err(StoreError::storage(&location))?.into_stream();
    let mut out = tokio::fs::File::create(to).await.map_err(io_error("create", to))?;
    let (mut hasher, mut bytes) = (Xxh3::new(), 0u64);
    while let Some(chunk) = stream.try_next().await.map_err(StoreError::storage(&location))? {
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        out.write_all(&chunk).await.map_err(io_error("write", to))?;
    }
    out.sync_all().await.map_err(io_error("sync", to))?;
    Ok(EntryFile { name: DATA.into(), bytes, xxh3: format!("{:016x}", hasher.digest()) })
}

/// Builds the row file and the membership index of the Parquet file in `folder` (the data
/// file of the store file at `path`), as ingest writes them beside a local store's files;
/// answers them as `entry.json` describes them.
fn build_companions(folder: &Path, path: &str) -> Result<Vec<EntryFile>> {
    let location = object_store::path::Path::from(path);
    let data = folder.join(DATA);
    let input = std::fs::File::open(&data).map_err(io_error("open", &data))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
        .and_then(|b| b.with_batch_size(BUILD_BATCH).build())
        .map_err(StoreError::parquet(&location))?;
    let rows_at = folder.join(ROWS);
    let mut rows = RowFileWriter::create(&rows_at, &reader.schema())?;
    let mut index = IndexBuilder::default();
    for batch in reader {
        let batch = batch.map_err(StoreError::arrow("reading a store file into the cache"))?;
        rows.write(&batch)?;
        index.push(&batch)?;
    }
    rows.finish()?;
    let mut names = vec![ROWS];
    if let Some(bytes) = index.finish(&location)? {
        let at = folder.join(INDEX);
        let mut out = std::fs::File::create(&at).map_err(io_error("create", &at))?;
        out.write_all(&bytes).and_then(|()| out.sync_all()).map_err(io_error("write", &at))?;
        names.push(INDEX);
    }
    names
        .into_iter()
        .map(|name| {
            let at = folder.join(name);
            let (bytes, xxh3) = checksum(&at).map_err(io_error("read", &at))?;
            Ok(EntryFile { name: name.into(), bytes, xxh3 })
        })
        .collect()
}
