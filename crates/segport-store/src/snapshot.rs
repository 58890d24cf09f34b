//! The store as an export reads it: each file of a catalog snapshot opened as a source, with
//! its row file and membership index found beside it.
//!
//! A [`SourceFile`] is made only by [`Storage::source`] from a path the catalog's manifest
//! names, so its companions are files the store wrote itself: the only files this crate maps
//! without validating them ([`crate::mapped`] says why that is sound). Today the storage root
//! must be local; a root elsewhere is refused here, in one place, with a clear error.

use std::path::PathBuf;

use crate::compact::FileRef;
use crate::index::Index;
use crate::rowfile::RowFile;
use crate::{layout, Result, Storage, StoreError};

/// A store file of a snapshot, ready to be read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Its path in the store, ingest time and commit.
    pub file: FileRef,
    /// The dataset it belongs to.
    pub dataset: String,
    /// Where the Parquet file is on disk.
    local: PathBuf,
}

impl Storage {
    /// The source of the store file `file` of `dataset`, as a snapshot lists it.
    pub fn source(&self, file: FileRef, dataset: String) -> Result<SourceFile> {
        let local = self.local_path(&file.path).ok_or_else(|| {
            StoreError::Location(format!(
                "{}: exports read the store from a local storage root",
                file.path
            ))
        })?;
        Ok(SourceFile { file, dataset, local })
    }
}

impl SourceFile {
    /// The Parquet file, opened for reading.
    pub fn open_parquet(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&self.local)
    }

    /// Its row file, mapped; `None` when it has none.
    pub fn open_rows(&self) -> Result<Option<RowFile>> {
        match self.companion(layout::rows_path) {
            Some(path) => RowFile::open_trusted(&path),
            None => Ok(None),
        }
    }

    /// Its membership index, mapped; `None` when it has none (event files, old profile files).
    pub fn open_index(&self) -> Result<Option<Index>> {
        match self.companion(layout::index_path) {
            Some(path) => Index::open_trusted(&path),
            None => Ok(None),
        }
    }

    /// Where a companion file is on disk: `name_of` gives its store path from the data file's,
    /// `None` when the file is not a data file that has such companions.
    fn companion(&self, name_of: fn(&str) -> Option<String>) -> Option<PathBuf> {
        name_of(&self.file.path)?;
        name_of(&self.local.to_string_lossy()).map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use super::*;

    #[test]
    fn a_source_opens_its_file_and_finds_no_companions_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let path = "org/prod/store/d1/p=0/f1.parquet";
        let local = storage.local_path(path).unwrap();
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, b"PAR1").unwrap();
        let file = FileRef { path: path.into(), ingest_ms: Some(5), seq: 2 };
        let source = storage.source(file.clone(), "d1".into()).unwrap();
        assert_eq!((&source.file, source.dataset.as_str()), (&file, "d1"));
        let mut bytes = Vec::new();
        source.open_parquet().unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"PAR1");
        // No row file or index was written beside it.
        assert!(source.open_rows().unwrap().is_none());
        assert!(source.open_index().unwrap().is_none());
    }
}
