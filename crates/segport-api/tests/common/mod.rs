//! The API under test: the real router over a fresh catalog, driven in-process with `oneshot`.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use segport_api::{AppState, AuthMode, Surface};
use segport_catalog::testing::TestCatalog;
use segport_catalog::Backend;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_http::normalize_path::NormalizePath;

pub const ORG: &str = "1BD6382559DF0C130A49422D@AdobeOrg";
pub const SANDBOX: &str = "prod";
pub const UNION: &str = "https://ns.adobe.com/xdm/context/profile__union";

pub struct TestApp {
    pub app: NormalizePath<Router>,
    pub db: TestCatalog,
    pub state: AppState,
    /// The storage root on a local root, the local cache on an S3 one; removed on drop.
    pub storage_dir: std::path::PathBuf,
    pub root: Root,
    /// The token API calls carry (token mode, after [`TestApp::with_api_token`]).
    pub bearer: Option<String>,
}

/// Where a test's storage root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// A fresh directory under the system's temporary directory.
    Local,
    /// A fresh prefix of the bucket `segport-test` on the S3-compatible test server the test
    /// command starts (`SEGPORT_TEST_S3_ENDPOINT`), read through a local cache.
    S3,
}

/// A test's catalog backend and storage root.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub backend: Backend,
    pub root: Root,
}

impl From<Backend> for Setup {
    fn from(backend: Backend) -> Self {
        Setup { backend, root: Root::Local }
    }
}

/// A fresh prefix of the S3 test bucket, read through a cache in a fresh local directory.
pub fn s3_storage() -> (segport_store::Storage, std::path::PathBuf) {
    let endpoint = std::env::var("SEGPORT_TEST_S3_ENDPOINT").expect(
        "SEGPORT_TEST_S3_ENDPOINT: the S3-compatible test server (scripts/test starts one); \
         the S3 tests are never skipped",
    );
    let settings = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let url = format!("s3://segport-test/api-{}", segport_model::ids::new_uuid().simple());
    let storage = segport_store::Storage::from_url_with(&url, settings).expect("s3 root");
    let dir =
        std::env::temp_dir().join(format!("segport-cache-{}", segport_model::ids::new_uuid()));
    let cache = segport_store::cache::Cache::open(&dir, 1 << 30).expect("cache");
    (storage.with_cache(std::sync::Arc::new(cache)), dir)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage_dir);
    }
}

/// A fresh storage root under the system's temporary directory.
pub fn temp_storage() -> (segport_store::Storage, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("segport-store-{}", segport_model::ids::new_uuid()));
    (segport_store::Storage::local(&dir).expect("storage root"), dir)
}

/// One answer: status, headers and the body parsed as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The `field`s named in a service error's `report.details`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["report"]["details"]
            .as_array()
            .map(|d| d.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }

    /// Asserts the service-error shape of docs/api.md and the status.
    pub fn assert_service_error(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let b = &self.body;
        assert_eq!(b["status"], json!(status), "{}", self.text);
        let ty = b["type"].as_str().unwrap_or_default();
        assert!(
            ty.starts_with("https://ns.adobe.com/aep/errors/SEGPORT-")
                && ty.ends_with(&format!("-{status}")),
            "type {ty:?}"
        );
        assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()), "{}", self.text);
        assert!(b["requestId"].as_str().is_some_and(|t| !t.is_empty()), "{}", self.text);
        assert!(b["report"]["details"].is_array(), "{}", self.text);
    }

    /// Asserts the gateway shape `{error_code, message}`.
    pub fn assert_gateway_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.body["error_code"], json!(code), "{}", self.text);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

impl TestApp {
    pub async fn new(setup: impl Into<Setup>) -> Self {
        Self::with_auth(setup, AuthMode::Dev).await
    }

    pub async fn with_auth(setup: impl Into<Setup>, auth: AuthMode) -> Self {
        let Setup { backend, root } = setup.into();
        let db = TestCatalog::new(backend).await;
        let (storage, storage_dir) = match root {
            Root::Local => temp_storage(),
            Root::S3 => s3_storage(),
        };
        let state = AppState::new(db.catalog.clone(), storage, auth);
        let app = segport_api::app(state.clone(), Surface::Full);
        Self { app, db, state, storage_dir, root, bearer: None }
    }

    /// The app with a live token of `ORG` that its API calls carry (token mode).
    pub async fn with_api_token(mut self) -> Self {
        let issued = segport_api::auth::issue_token(ORG, None);
        self.db.catalog.insert_token(&issued.record).await.expect("token stored");
        self.bearer = Some(issued.secret);
        self
    }

    /// Every file under `prefix` of the storage root, by path.
    pub async fn files_under(&self, prefix: &str) -> Vec<String> {
        let listed = self.state.storage.list(&prefix.into()).await.expect("listing");
        let mut paths: Vec<String> = listed.into_iter().map(|(p, _, _)| p.to_string()).collect();
        paths.sort();
        paths
    }

    /// Sends a raw request.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.expect("infallible service");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Answer { status, headers, body, text }
    }

    /// A request with the standard headers of `org`/`sandbox` and an optional JSON body.
    pub async fn call_as(
        &self,
        org: &str,
        sandbox: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                "authorization",
                format!("Bearer {}", self.bearer.as_deref().unwrap_or("dev-token")),
            )
            .header("x-api-key", "test")
            .header("x-gw-ims-org-id", org)
            .header("x-sandbox-name", sandbox);
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_as(ORG, SANDBOX, method, path, body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a dataset of `schema` in the default tenant and returns its id.
    pub async fn dataset_as(&self, org: &str, sandbox: &str, schema: &str) -> String {
        let a = self
            .call_as(
                org,
                sandbox,
                Method::POST,
                "/data/foundation/catalog/dataSets",
                Some(json!({"name": "d", "schemaRef": {"id": schema, "contentType": "application/vnd.adobe.xed+json;version=1"}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        let reference = a.body[0].as_str().expect("reference");
        reference.strip_prefix("@/dataSets/").expect("@/dataSets/ prefix").to_owned()
    }

    pub async fn export_dataset(&self) -> String {
        self.dataset_as(ORG, SANDBOX, UNION).await
    }

    /// Creates a job from `body` and returns the job object.
    pub async fn create_job(&self, body: Value) -> Value {
        let a = self.post("/export/jobs", body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.body
    }

    /// Sets a job's status behind the API's back, as a worker would.
    pub async fn force_status(&self, id: i64, status: &str) {
        let sql = format!("UPDATE export_jobs SET status = '{status}' WHERE id = {id}");
        if self.db.url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&self.db.url).await.expect("pg");
            sqlx::query(&sql).execute(&pool).await.expect("update");
        } else {
            let pool = sqlx::SqlitePool::connect(&self.db.url).await.expect("sqlite");
            sqlx::query(&sql).execute(&pool).await.expect("update");
        }
    }
}

/// A minimal valid job body for dataset `ds`.
pub fn minimal_job(ds: &str) -> Value {
    json!({"destination": {"datasetId": ds}, "schema": {"name": "_xdm.context.profile"}})
}

/// The create-job example of the endpoint guide, for dataset `ds`.
pub fn seed_job(ds: &str) -> Value {
    json!({
        "fields": "identities.id,personalEmail.address",
        "mergePolicy": {"id": "timestampOrdered-none-mp", "version": 1},
        "filter": {
            "segments": [{"segmentId": "52c26d0d-45f2-47a2-ab30-ed06abc981ff", "segmentNs": "ups", "status": ["realized"]}],
            "segmentQualificationTime": {"startTime": "2018-01-01T00:00:00Z", "endTime": "2018-02-01T00:00:00Z"},
            "fromIngestTimestamp": "2018-01-01T00:00:00Z",
            "emptyProfiles": true
        },
        "additionalFields": {"eventList": {"fields": "_id, _experience", "filter": {"fromIngestTimestamp": "2018-01-01T00:00:00Z", "toIngestTimestamp": "2020-01-01T00:00:00Z"}}},
        "destination": {"datasetId": ds, "segmentPerBatch": false},
        "schema": {"name": "_xdm.context.profile"}
    })
}

/// Runs each named async test on PostgreSQL with an S3 storage root (the test server's).
#[macro_export]
macro_rules! on_s3 {
    ($($name:ident),* $(,)?) => {
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() {
                  super::$name(super::common::Setup {
                      backend: segport_catalog::Backend::Postgres,
                      root: super::common::Root::S3,
                  })
                  .await
              })*
        }
    };
}

/// Runs each named async test on PostgreSQL and on SQLite.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(segport_catalog::Backend::Postgres.into()).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(segport_catalog::Backend::Sqlite.into()).await })*
        }
    };
}

pub const PROFILE_SCHEMA: &str = "https://ns.adobe.com/xdm/context/profile";
pub const EVENT_SCHEMA: &str = "https://ns.adobe.com/xdm/context/experienceevent";

/// Small sizes so that a few thousand records make several files per partition and several row
/// groups per file.
pub fn small_limits() -> segport_store::ingest::IngestLimits {
    segport_store::ingest::IngestLimits {
        chunk_records: 2048,
        flush_bytes: 2 * 1024 * 1024,
        row_group_rows: 100,
        ..Default::default()
    }
}

impl TestApp {
    /// A dataset of `schema` that feeds the profile store.
    pub async fn store_dataset(&self, schema: &str) -> String {
        let a = self
            .post(
                "/data/foundation/catalog/dataSets",
                json!({"name": "in", "schemaRef": {"id": schema}, "tags": {"unifiedProfile": ["enabled:true"]}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.body[0].as_str().unwrap().trim_start_matches("@/dataSets/").to_owned()
    }

    /// Creates an ingest batch and answers its id.
    pub async fn new_batch(&self, dataset: &str, input_format: Value) -> String {
        let a = self
            .post(
                "/data/foundation/import/batches",
                json!({"datasetId": dataset, "inputFormat": input_format}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert_eq!(a.body["status"], "loading");
        a.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn upload(&self, batch: &str, dataset: &str, name: &str, bytes: Vec<u8>) -> Answer {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{name}"))
            .header("authorization", "Bearer t")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", ORG)
            .header("x-sandbox-name", SANDBOX)
            .header("content-type", "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap();
        self.send(req).await
    }

    pub async fn batch_action(&self, batch: &str, action: &str) -> Answer {
        self.call(
            Method::POST,
            &format!("/data/foundation/import/batches/{batch}?action={action}"),
            None,
        )
        .await
    }

    /// The Catalog object of a batch.
    pub async fn batch(&self, batch: &str) -> Value {
        let a = self.get(&format!("/data/foundation/catalog/batches/{batch}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.body[batch].clone()
    }

    pub fn worker_context(
        &self,
        limits: segport_store::ingest::IngestLimits,
    ) -> segport_worker::Context {
        segport_worker::Context {
            catalog: self.db.catalog.clone(),
            storage: self.state.storage.clone(),
            config: std::sync::Arc::new(segport_worker::WorkerConfig {
                ingest: limits,
                file_grace: std::time::Duration::ZERO,
                compact_min_files: 2,
                ..segport_worker::WorkerConfig::default()
            }),
            metrics: segport_worker::WorkerMetrics::default(),
        }
    }

    /// Runs queued tasks in this process until none is left; answers how many ran.
    pub async fn run_tasks(&self) -> usize {
        let worker = segport_worker::Worker::new(self.worker_context(small_limits()));
        self.run_tasks_on(&worker).await
    }

    /// Claims the next queued task for `worker` (there must be one).
    pub async fn claim(&self, worker: &segport_worker::Worker) -> segport_catalog::ClaimedTask {
        self.db
            .catalog
            .claim_task(worker.owner(), 30_000, segport_model::time::now_ms())
            .await
            .unwrap()
            .expect("a queued task")
    }

    /// Runs queued tasks on `worker` until none is left; answers how many ran.
    pub async fn run_tasks_on(&self, worker: &segport_worker::Worker) -> usize {
        let mut ran = 0;
        while let Some(task) = self
            .db
            .catalog
            .claim_task(worker.owner(), 30_000, segport_model::time::now_ms())
            .await
            .unwrap()
        {
            run_one(worker, task).await;
            ran += 1;
        }
        ran
    }

    /// Creates a batch of `files`, completes it and runs its ingest; answers the batch object.
    pub async fn ingest(
        &self,
        dataset: &str,
        input_format: Value,
        files: Vec<(&str, Vec<u8>)>,
    ) -> (String, Value) {
        let worker = segport_worker::Worker::new(self.worker_context(small_limits()));
        self.ingest_on(&worker, dataset, input_format, files).await
    }

    /// [`Self::ingest`] on a given worker (with limits of its own).
    pub async fn ingest_on(
        &self,
        worker: &segport_worker::Worker,
        dataset: &str,
        input_format: Value,
        files: Vec<(&str, Vec<u8>)>,
    ) -> (String, Value) {
        let batch = self.new_batch(dataset, input_format).await;
        for (name, bytes) in files {
            let a = self.upload(&batch, dataset, name, bytes).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        }
        let a = self.batch_action(&batch, "COMPLETE").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(self.run_tasks_on(worker).await, 1);
        let object = self.batch(&batch).await;
        (batch, object)
    }

    /// Every stored row of `dataset`, as XDM JSON, ordered by key and recency.
    pub async fn stored(&self, dataset: &str, kind: segport_store::RecordKind) -> Vec<Value> {
        let batch = self.stored_batch(dataset, kind, None).await;
        segport_store::read::rows_as_xdm(&batch).unwrap()
    }

    /// The fragments of `dataset` in the current snapshot, or in `files` when given.
    pub async fn stored_batch(
        &self,
        dataset: &str,
        kind: segport_store::RecordKind,
        files: Option<&[segport_catalog::StoreFile]>,
    ) -> arrow::array::RecordBatch {
        let tenant = segport_model::Tenant::parse(ORG, SANDBOX).unwrap();
        let snapshot;
        let files = match files {
            Some(f) => f,
            None => {
                snapshot = self.db.catalog.store_snapshot(&tenant, None).await.unwrap();
                &snapshot.files
            }
        };
        let state = self.db.catalog.store_state(&tenant).await.unwrap();
        let schema_text = match kind {
            segport_store::RecordKind::Profile => state.profile_schema,
            segport_store::RecordKind::Event => state.event_schema,
        };
        let union = segport_store::schema::UnionSchema::from_json(&schema_text).unwrap();
        let refs: Vec<_> = files
            .iter()
            .filter(|f| f.dataset_id == dataset)
            .map(|f| segport_store::snapshot::FileRef {
                path: f.path.clone(),
                ingest_ms: f.ingest_ms,
                seq: f.seq,
            })
            .collect();
        let schema = segport_store::compact::fragment_schema(kind, &union);
        segport_store::compact::read_fragments(&self.state.storage, &refs, &schema).await.unwrap()
    }
}

/// Rows as a Parquet file written by the parquet crate, with the types arrow-json infers.
pub fn to_parquet(rows: &[Value]) -> Vec<u8> {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let (schema, _) =
        arrow::json::reader::infer_json_schema(std::io::Cursor::new(text.as_bytes()), None)
            .unwrap();
    let schema = std::sync::Arc::new(schema);
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .build(std::io::Cursor::new(text.as_bytes()))
        .unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    for batch in reader {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.close().unwrap();
    out
}

/// The rows of a batch's files, read back with the Parquet reader, as JSON.
pub async fn output_rows(t: &TestApp, files: &[segport_catalog::BatchFile]) -> Vec<Value> {
    let mut got = Vec::new();
    for f in files {
        let bytes = t.state.storage.get(&f.path.as_str().into()).await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            w.write(&batch).unwrap();
            w.finish().unwrap();
            let rows: Vec<Value> = serde_json::from_slice(&w.into_inner()).unwrap_or_default();
            got.extend(rows);
        }
    }
    got
}

/// Numbers compare as numbers, date-time strings as instants, objects without their null
/// members.
pub fn same_json(a: &Value, b: &Value) -> bool {
    let instant =
        |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis());
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => {
            x == y || (instant(x).is_some() && instant(x) == instant(y))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            let present = |m: &serde_json::Map<String, Value>| -> Vec<String> {
                let mut k: Vec<_> =
                    m.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.clone()).collect();
                k.sort();
                k
            };
            present(x) == present(y)
                && x.iter().filter(|(_, v)| !v.is_null()).all(|(k, v)| same_json(v, &y[k]))
        }
        _ => a == b,
    }
}

/// The oracles' profile key: the identity marked primary, or the only one.
pub fn naive_key(record: &Value) -> String {
    let mut all = Vec::new();
    for (ns, list) in record["identityMap"].as_object().unwrap() {
        for i in list.as_array().unwrap() {
            all.push((ns.clone(), i["id"].as_str().unwrap().to_owned(), i["primary"] == true));
        }
    }
    let chosen =
        all.iter().find(|i| i.2).or(if all.len() == 1 { all.first() } else { None }).unwrap();
    format!("{}:{}", chosen.0, chosen.1)
}

/// Runs one claimed task on `worker` to its end.
pub async fn run_one(worker: &segport_worker::Worker, task: segport_catalog::ClaimedTask) {
    worker
        .run_claimed(
            task,
            tokio_util::sync::CancellationToken::new(),
            std::time::Duration::from_secs(30),
        )
        .await;
}
