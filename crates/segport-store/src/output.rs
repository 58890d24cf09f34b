//! An export attempt's output: the files it writes into its destination batches.
//!
//! Each attempt writes under a folder of its own in every batch (`…/batches/{batch}/{attempt}/`),
//! so attempts of the same job never see each other's files. Nothing written here is visible to
//! readers until the catalog commits the attempt; then [`AttemptOutput::commit_visible`] leaves
//! the batches with this attempt's files alone, and a failed or cancelled attempt takes its
//! files away with [`AttemptOutput::remove`].

use bytes::Bytes;
use object_store::path::Path;

use crate::storage::batch_dir;
use crate::{Result, Storage};

/// The output folders of one attempt of an export, in the batches of one tenant.
#[derive(Debug, Clone)]
pub struct AttemptOutput {
    storage: Storage,
    org: String,
    sandbox: String,
    attempt: String,
}

/// A file as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path in the store.
    pub path: String,
    pub bytes: u64,
}

impl AttemptOutput {
    pub fn new(storage: &Storage, org: &str, sandbox: &str, attempt: &str) -> Self {
        Self {
            storage: storage.clone(),
            org: org.to_owned(),
            sandbox: sandbox.to_owned(),
            attempt: attempt.to_owned(),
        }
    }

    /// Writes `name` into this attempt's folder of `batch`.
    pub async fn write(&self, batch: &str, name: &str, bytes: Bytes) -> Result<WrittenFile> {
        let path = self.folder(batch).join(name);
        let size = bytes.len() as u64;
        self.storage.put(&path, bytes).await?;
        Ok(WrittenFile { path: path.to_string(), bytes: size })
    }

    /// The files this attempt wrote into `batch`, by path.
    pub async fn list(&self, batch: &str) -> Result<Vec<WrittenFile>> {
        let mut files: Vec<WrittenFile> = self
            .storage
            .list(&self.folder(batch))
            .await?
            .into_iter()
            .map(|(path, bytes, _)| WrittenFile { path: path.to_string(), bytes })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Once the catalog committed this attempt: its files become the only ones of `batches`,
    /// and what other attempts left there (crashed, lost or cancelled ones) goes. Best effort:
    /// a file left behind is swept later, and readers go by the catalog's records anyway.
    pub async fn commit_visible<'a>(&self, batches: impl IntoIterator<Item = &'a str>) {
        for batch in batches {
            let all = batch_dir(&self.org, &self.sandbox, batch);
            let Ok(listed) = self.storage.list(&all).await else { continue };
            let mine = self.folder(batch);
            for (path, _, _) in listed {
                if !path.prefix_matches(&mine) {
                    let _ = self.storage.delete(&path).await;
                }
            }
        }
    }

    /// Removes everything this attempt wrote into `batches` (it failed or was cancelled).
    /// Best effort, like [`Self::commit_visible`].
    pub async fn remove<'a>(&self, batches: impl IntoIterator<Item = &'a str>) {
        for batch in batches {
            let _ = self.storage.delete_prefix(&self.folder(batch)).await;
        }
    }

    fn folder(&self, batch: &str) -> Path {
        batch_dir(&self.org, &self.sandbox, batch).join(self.attempt.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The paths under `prefix`, as a naive listing of the store sees them.
    async fn all(storage: &Storage, prefix: &str) -> Vec<String> {
        let mut paths: Vec<String> = storage
            .list(&Path::from(prefix))
            .await
            .unwrap()
            .into_iter()
            .map(|(p, _, _)| p.to_string())
            .collect();
        paths.sort();
        paths
    }

    #[tokio::test]
    async fn attempts_write_apart_and_the_committed_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let a = AttemptOutput::new(&storage, "org", "prod", "attempt-a");
        let b = AttemptOutput::new(&storage, "org", "prod", "attempt-b");
        let other_tenant = AttemptOutput::new(&storage, "org", "dev", "attempt-b");
        let written = a.write("b1", "part-00000.parquet", Bytes::from_static(b"aaa")).await;
        let written = written.unwrap();
        assert_eq!(written.path, "org/prod/batches/b1/attempt-a/part-00000.parquet");
        assert_eq!(written.bytes, 3);
        a.write("b2", "part-00000.parquet", Bytes::from_static(b"a")).await.unwrap();
        b.write("b1", "part-00000.parquet", Bytes::from_static(b"bb")).await.unwrap();
        b.write("b1", "part-00001.parquet", Bytes::from_static(b"bb")).await.unwrap();
        other_tenant.write("b1", "part-00000.parquet", Bytes::from_static(b"x")).await.unwrap();

        // Each attempt lists its own files only.
        assert_eq!(a.list("b1").await.unwrap(), [written]);
        let of_b: Vec<String> = b.list("b1").await.unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(
            of_b,
            [
                "org/prod/batches/b1/attempt-b/part-00000.parquet",
                "org/prod/batches/b1/attempt-b/part-00001.parquet"
            ]
        );

        // A's commit leaves its batches with A's files; another tenant's stay.
        a.commit_visible(["b1", "b2"]).await;
        assert_eq!(
            all(&storage, "org/prod/batches").await,
            [
                "org/prod/batches/b1/attempt-a/part-00000.parquet",
                "org/prod/batches/b2/attempt-a/part-00000.parquet"
            ]
        );
        assert_eq!(all(&storage, "org/dev").await.len(), 1);

        // Removing an attempt takes all it wrote, and only that.
        a.remove(["b1"]).await;
        assert!(a.list("b1").await.unwrap().is_empty());
        assert_eq!(a.list("b2").await.unwrap().len(), 1);
        assert_eq!(all(&storage, "org/dev").await.len(), 1);
    }
}
