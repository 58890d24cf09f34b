//! The storage root's operations, run the same way on a local directory (`file://`) and on a
//! real S3-compatible server (`s3://`, the one the test command starts:
//! `SEGPORT_TEST_S3_ENDPOINT`, bucket `segport-test`; each test writes under a prefix of its
//! own): objects written, read whole, by range and streamed, listed, deleted; an export
//! attempt's output folder; and a storage root that does not answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use segport_store::output::AttemptOutput;
use segport_store::Storage;

mod common;
use common::{endpoint, s3_settings, SECRET};

/// A storage root of each kind, empty.
fn roots() -> Vec<(Storage, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = Storage::local(dir.path()).unwrap();
    let url = format!("s3://segport-test/run-{}", segport_model::ids::new_uuid().simple());
    let s3 = Storage::from_url_with(&url, s3_settings(&endpoint())).unwrap();
    vec![(local, Some(dir)), (s3, None)]
}

fn path(p: &str) -> Path {
    Path::from(p)
}

#[tokio::test]
async fn objects_are_written_read_listed_and_deleted_alike() {
    for (storage, _dir) in roots() {
        let root = storage.url().to_owned();
        storage.check().await.unwrap_or_else(|e| panic!("{root}: {e}"));
        let data = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
        storage.put(&path("o/s/store/d/p=0/a.parquet"), data.clone()).await.unwrap();
        storage.put(&path("o/s/store/d/p=1/b.parquet"), Bytes::from_static(b"bb")).await.unwrap();
        storage.put(&path("o/s/batches/x/uploads/u"), Bytes::from_static(b"u")).await.unwrap();

        let a = path("o/s/store/d/p=0/a.parquet");
        assert_eq!(storage.get(&a).await.unwrap(), data, "{root}");
        assert_eq!(storage.size(&a).await.unwrap(), 100_000, "{root}");
        assert_eq!(storage.get_range(&a, 1000..1010).await.unwrap(), data.slice(1000..1010));
        let streamed: Vec<Bytes> =
            storage.stream(&a, Some(99_990..100_000)).await.unwrap().try_collect().await.unwrap();
        assert_eq!(streamed.concat(), data.slice(99_990..).to_vec(), "{root}");
        let whole: Vec<Bytes> =
            storage.stream(&a, None).await.unwrap().try_collect().await.unwrap();
        assert_eq!(whole.concat(), data.to_vec(), "{root}");

        let mut listed: Vec<(String, u64)> = storage
            .list(&path("o/s/store"))
            .await
            .unwrap()
            .into_iter()
            .map(|(p, size, _)| (p.to_string(), size))
            .collect();
        listed.sort();
        let expected = [
            ("o/s/store/d/p=0/a.parquet".to_owned(), 100_000),
            ("o/s/store/d/p=1/b.parquet".to_owned(), 2),
        ];
        assert_eq!(listed, expected, "{root}");

        storage.delete(&a).await.unwrap();
        storage.delete(&a).await.expect("deleting what is gone is not an error");
        assert!(storage.get(&a).await.is_err(), "{root}: a deleted object reads");
        storage.delete_prefix(&path("o/s")).await.unwrap();
        assert!(storage.list(&path("o")).await.unwrap().is_empty(), "{root}: left after delete");
    }
}

#[tokio::test]
async fn an_attempts_output_folder_behaves_alike() {
    for (storage, _dir) in roots() {
        let root = storage.url().to_owned();
        let a = AttemptOutput::new(&storage, "o", "s", "attempt-a");
        let b = AttemptOutput::new(&storage, "o", "s", "attempt-b");
        a.write("b1", "part-00000.parquet", Bytes::from_static(b"aaa")).await.unwrap();
        b.write("b1", "part-00000.parquet", Bytes::from_static(b"bb")).await.unwrap();
        let mine = a.list("b1").await.unwrap();
        assert_eq!(mine.len(), 1, "{root}");
        let written = (mine[0].path.as_str(), mine[0].bytes);
        assert_eq!(written, ("o/s/batches/b1/attempt-a/part-00000.parquet", 3), "{root}");
        a.commit_visible(["b1"]).await;
        assert!(b.list("b1").await.unwrap().is_empty(), "{root}: another attempt's file stayed");
        assert_eq!(a.list("b1").await.unwrap(), mine, "{root}");
        a.remove(["b1"]).await;
        assert!(storage.list(&path("o")).await.unwrap().is_empty(), "{root}");
    }
}

#[tokio::test]
async fn large_objects_are_written_in_parts_and_read_back_whole() {
    // Two and a half parts of bytes that differ from part to part.
    let len = segport_store::storage::PART_BYTES * 5 / 2;
    let bytes: Bytes = (0..len).map(|i| (i % 251) as u8 ^ (i / 65_536) as u8).collect();
    for (storage, _dir) in roots() {
        let at = path("org/prod/batches/b/attempt/part-00000.parquet");
        storage.put(&at, bytes.clone()).await.unwrap();
        assert_eq!(storage.size(&at).await.unwrap(), len as u64, "{}", storage.url());
        assert_eq!(storage.get(&at).await.unwrap(), bytes, "{}", storage.url());
        // A range across the first part boundary.
        let boundary = segport_store::storage::PART_BYTES as u64;
        let range = boundary - 10..boundary + 10;
        let got = storage.get_range(&at, range.clone()).await.unwrap();
        assert_eq!(got, bytes.slice(range.start as usize..range.end as usize));
    }
    // A multipart upload that cannot complete (no such bucket) fails, naming the object.
    let missing =
        Storage::from_url_with("s3://no-such-bucket/x", s3_settings(&endpoint())).unwrap();
    let error = missing.put(&path("big"), bytes).await.unwrap_err().to_string();
    assert!(error.contains("big"), "{error}");
}

#[tokio::test]
async fn a_root_that_does_not_answer_is_named_without_its_credentials() {
    // Nothing listens on port 1.
    let url = "s3://segport-test/nowhere";
    let storage = Storage::from_url_with(url, s3_settings("http://127.0.0.1:1")).unwrap();
    let message = storage.check().await.expect_err("an endpoint nothing answers").to_string();
    assert!(message.contains(url), "{message}");
    assert!(!message.contains(SECRET), "the secret key is printed: {message}");

    // A bucket that does not exist on a server that answers.
    let missing = Storage::from_url_with("s3://no-such-bucket", s3_settings(&endpoint())).unwrap();
    let message = missing.check().await.expect_err("a bucket that does not exist").to_string();
    assert!(message.contains("s3://no-such-bucket"), "{message}");

    for bad in ["s3://", "gs://bucket/x", "/relative", "file://"] {
        let e = Storage::from_url_with(bad, s3_settings(&endpoint())).expect_err(bad).to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}
