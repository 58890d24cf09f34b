//! Batches: ingest batches through their upload lifecycle (loading → staging → success or
//! failed, aborted, reverted) and the export batches jobs write, with their files.

use async_trait::async_trait;
use segport_model::batch::{Batch, BatchKind, BatchStatus};
use segport_model::{BatchId, DatasetId, Tenant};

use crate::store::{NewStoreFile, StoreFile};
use crate::{ListQuery, Result};

/// Which batches a listing shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchFilter {
    pub dataset_id: Option<DatasetId>,
    pub status: Option<BatchStatus>,
}

/// A file uploaded to an ingest batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub name: String,
    /// The key of its bytes under the batch's uploads folder; `None` for uploads from before
    /// keys existed, whose bytes live at their name.
    pub object: Option<String>,
    pub bytes: i64,
    pub uploaded_ms: i64,
}

/// What became of an upload's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadRecorded {
    /// The batch no longer takes files (it is not `loading`); nothing changed.
    Refused,
    /// Recorded, replacing the earlier upload of the same name if there was one.
    Recorded { replaced: Option<Upload> },
}

/// How a batch stands after a COMPLETE, ABORT or FAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTransition {
    pub kind: BatchKind,
    pub status: BatchStatus,
    /// This call changed the status (false for a repeated or refused call).
    pub changed: bool,
}

/// See [`Batches::revert_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertPlan {
    /// The commit the batch's records were stored at: their rows' `__seq` in compacted files.
    pub commit_seq: i64,
    pub compacted: Vec<StoreFile>,
}

/// A file an export wrote into one of its batches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchFile {
    pub name: String,
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
}

/// A tenant's batches.
#[async_trait]
pub trait Batches: Send + Sync + 'static {
    async fn get_batch(&self, tenant: &Tenant, id: &BatchId) -> Result<Option<Batch>>;
    async fn list_batches(
        &self,
        tenant: &Tenant,
        filter: &BatchFilter,
        page: &ListQuery,
    ) -> Result<Vec<Batch>>;
    async fn create_ingest_batch(&self, batch: &Batch) -> Result<()>;
    /// Records an uploaded file stored at `object` (replacing one of the same name) while the
    /// batch is `loading`, checked under a lock on the batch so that a concurrent COMPLETE
    /// either sees the file or refuses it.
    async fn record_upload(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        upload: &Upload,
    ) -> Result<UploadRecorded>;
    async fn list_uploads(&self, batch_id: &BatchId) -> Result<Vec<Upload>>;
    /// `loading → staging`, queueing the ingest task. `None` when the batch does not exist.
    async fn complete_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>>;
    /// `loading → aborted`. `None` when the batch does not exist.
    async fn abort_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>>;
    /// `loading → failed` (Batch Ingestion's FAIL). `None` when the batch does not exist.
    async fn fail_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>>;
    /// What reverting a successful ingest batch involves: the commit its records were stored
    /// at, and the live compacted files of its dataset made since, which may hold some of them.
    /// `None` when it is not a successful, not yet reverted ingest batch of the tenant.
    async fn revert_plan(&self, tenant: &Tenant, batch_id: &BatchId) -> Result<Option<RevertPlan>>;
    /// Reverts a successful ingest batch in one commit: its own store files leave the store,
    /// each compacted file of `rewrites` is replaced by its rewrite without the batch's rows
    /// (or by nothing), and the batch shows as reverted. `planned` are the ids of the plan's
    /// compacted files: a compaction since (which may have merged the batch's own files) is a
    /// `Conflict`, as is a rewritten file replaced meanwhile (plan again). False when the batch
    /// is no longer revertible.
    async fn revert_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        planned: &[i64],
        rewrites: &[(i64, Option<NewStoreFile>)],
        now_ms: i64,
    ) -> Result<bool>;
    /// The committed files of a batch.
    async fn list_batch_files(&self, tenant: &Tenant, batch_id: &BatchId)
        -> Result<Vec<BatchFile>>;
    /// Deletes a finished export batch with the records of its files (the caller removes the
    /// files). `false` when the tenant has no such batch; `Conflict` when it is an ingest
    /// batch or its export has not finished.
    async fn delete_export_batch(&self, tenant: &Tenant, id: &BatchId) -> Result<bool>;
    /// Finished export batches that completed before `before_ms`, oldest first, at most
    /// `limit` of them: what retention removes.
    async fn expired_export_batches(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<(Tenant, BatchId)>>;
}
