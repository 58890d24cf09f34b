//! The store as an export reads it: each file of a catalog snapshot opened as a source, with
//! its row file and membership index.
//!
//! A [`SourceFile`] is made only by [`Storage::source`] from a path the catalog's manifest
//! names, so its companions are files the store made itself: the only files this crate maps
//! without validating them ([`crate::mapped`] says why that is sound). On a local root the
//! data file is read in place and its companions are found beside it, as ingest wrote them; on
//! a remote root all three come from the local [`Cache`], which fetches the data file and
//! builds the companions on first use.

use std::path::PathBuf;
use std::sync::Arc;

use crate::index::Index;
use crate::rowfile::RowFile;
use crate::Result;

/// A file as a reader needs it: where it is and, for a fresh file, the ingest time and commit
/// sequence of all its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    /// `None` for a compacted file, whose rows carry their own.
    pub ingest_ms: Option<i64>,
    pub seq: i64,
}

/// A hold on a cache entry ([`crate::cache`]): while any clone is alive, the entry is not
/// evicted.
#[derive(Debug, Clone)]
pub(crate) struct Pin(#[allow(dead_code)] pub(crate) Arc<()>);

/// A store file of a snapshot, ready to be read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Its path in the store, ingest time and commit.
    pub file: FileRef,
    /// The dataset it belongs to.
    pub dataset: String,
    /// Where the Parquet file is on disk.
    local: PathBuf,
    /// Where its row file and membership index are on disk, when it has them.
    rows: Option<PathBuf>,
    index: Option<PathBuf>,
    /// The cache entry holding these files, kept from eviction while the source lives.
    _pin: Option<Pin>,
    /// Its row file, already mapped and shared between reads ([`crate::Storage::share_rows`]).
    shared_rows: Option<Arc<RowFile>>,
}

impl SourceFile {
    /// A source whose files are on local disk: `pin` holds the cache entry they are in.
    pub(crate) fn new(
        file: FileRef,
        dataset: String,
        local: PathBuf,
        rows: Option<PathBuf>,
        index: Option<PathBuf>,
        pin: Option<Pin>,
    ) -> Self {
        Self { file, dataset, local, rows, index, _pin: pin, shared_rows: None }
    }

    /// The Parquet file, opened for reading.
    pub fn open_parquet(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&self.local)
    }

    /// Its row file, mapped; `None` when it has none.
    pub fn open_rows(&self) -> Result<Option<Arc<RowFile>>> {
        if let Some(shared) = &self.shared_rows {
            return Ok(Some(shared.clone()));
        }
        match &self.rows {
            Some(path) => Ok(RowFile::open_trusted(path)?.map(Arc::new)),
            None => Ok(None),
        }
    }

    /// Where its row file is, when it has one.
    pub(crate) fn rows_path(&self) -> Option<&std::path::Path> {
        self.rows.as_deref()
    }

    /// The source with its row file mapped once for all its readers.
    pub(crate) fn with_shared_rows(mut self, rows: Arc<RowFile>) -> Self {
        self.shared_rows = Some(rows);
        self
    }

    /// Its membership index, mapped; `None` when it has none (event files, old profile files).
    pub fn open_index(&self) -> Result<Option<Index>> {
        match &self.index {
            Some(path) => Index::open_trusted(path),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use super::*;
    use crate::Storage;

    #[tokio::test]
    async fn a_source_opens_its_file_and_finds_no_companions_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let path = "org/prod/store/d1/p=0/f1.parquet";
        let local = storage.local_path(path).unwrap();
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, b"PAR1").unwrap();
        let file = FileRef { path: path.into(), ingest_ms: Some(5), seq: 2 };
        let source = storage.source(file.clone(), "d1".into()).await.unwrap();
        assert_eq!((&source.file, source.dataset.as_str()), (&file, "d1"));
        let mut bytes = Vec::new();
        source.open_parquet().unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"PAR1");
        // No row file or index was written beside it.
        assert!(source.open_rows().unwrap().is_none());
        assert!(source.open_index().unwrap().is_none());
    }
}
