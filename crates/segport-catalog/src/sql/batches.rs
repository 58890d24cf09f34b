//! Batches on SQL: the ingest lifecycle (uploads under a lock on the loading batch, moves that
//! queue the ingest task in the same transaction, revert as one store commit) and export
//! batches with their files.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::batch::{Batch, BatchKind, BatchStatus};
use segport_model::{BatchId, Tenant};

use super::{Db, SqlCatalog, DIALECT};
use crate::model::{as_i64, convert_all, BatchRow, StoreFileRow, UploadRow};
use crate::{
    BatchFile, BatchFilter, BatchTransition, Batches, CatalogError, ListQuery, NewStoreFile,
    Result, RevertPlan, Upload, UploadRecorded,
};

/// The start of an insert into `batches`, followed by the VALUES of each batch (an ingest
/// batch here, the export batches of a group of jobs in `jobs.rs`).
pub(super) const INSERT_BATCHES: &str = "INSERT INTO batches (id, org, sandbox, dataset_id, \
     kind, status, job_id, input_format, multiline_json, created_ms, updated_ms) ";

const SELECT_BATCH: &str = "SELECT * FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3";

const LIST_BATCHES: &str = include_str!("queries/list_batches.sql");

const SELECT_UPLOAD: &str = "SELECT name, object, bytes, uploaded_ms FROM batch_uploads \
     WHERE batch_id = $1 AND name = $2";

const UPSERT_UPLOAD: &str = "INSERT INTO batch_uploads \
     (batch_id, name, object, bytes, uploaded_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (batch_id, name) DO UPDATE SET object = excluded.object, bytes = excluded.bytes, \
     uploaded_ms = excluded.uploaded_ms";

const LIST_UPLOADS: &str = "SELECT name, object, bytes, uploaded_ms FROM batch_uploads \
     WHERE batch_id = $1 ORDER BY name";

const MOVE_BATCH: &str = "UPDATE batches SET status = $5, updated_ms = $6 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND kind = 'ingest' AND status = $4";

const BATCH_STATE: &str =
    "SELECT kind, status FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3";

const INSERT_INGEST_TASK: &str = "INSERT INTO tasks (kind, org, sandbox, batch_id, state, \
     created_ms, updated_ms) VALUES ('ingest', $1, $2, $3, 'queued', $4, $4)";

/// The commit a successful, not reverted ingest batch stored its records at.
const REVERTIBLE_BATCH: &str = "SELECT b.dataset_id, b.commit_seq, \
     (SELECT MIN(f.seq) FROM store_files f WHERE f.batch_id = b.id) FROM batches b \
     WHERE b.org = $1 AND b.sandbox = $2 AND b.id = $3 AND b.kind = 'ingest' \
     AND b.status = 'success' AND b.reverted_ms IS NULL";

/// Live compacted files of a dataset made after commit `$4`: the ones that may hold its rows.
const COMPACTED_SINCE: &str = "SELECT id, dataset_id, kind, partition_no, path, \
     batch_id, ingest_ms, seq, row_count, byte_count, min_key, max_key FROM store_files \
     WHERE org = $1 AND sandbox = $2 AND dataset_id = $3 AND batch_id IS NULL \
     AND removed_seq IS NULL AND seq > $4 ORDER BY id";

const REMOVE_BATCH_FILES: &str = "UPDATE store_files SET removed_seq = $4, \
     removed_ms = $5 WHERE org = $1 AND sandbox = $2 AND batch_id = $3 AND removed_seq IS NULL";

const MARK_REVERTED: &str = "UPDATE batches SET reverted_ms = $4, updated_ms = $4 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND status = 'success' AND reverted_ms IS NULL";

const LIST_BATCH_FILES: &str = "SELECT f.name, f.path, f.row_count, f.byte_count \
     FROM batch_files f JOIN batches b ON b.id = f.batch_id \
     WHERE b.org = $1 AND b.sandbox = $2 AND f.batch_id = $3 ORDER BY f.name";

const BATCH_KIND_STATUS: &str =
    "SELECT kind, status FROM batches WHERE org = $1 AND sandbox = $2 AND id = $3";

/// Only a finished export batch goes; the condition is repeated here so that a batch whose
/// state changed since it was read is left alone.
const DELETE_EXPORT_BATCH: &str = "DELETE FROM batches WHERE org = $1 AND sandbox = $2 \
     AND id = $3 AND kind = 'export' AND status IN ('success', 'failed')";

const EXPIRED_EXPORT_BATCHES: &str = "SELECT org, sandbox, id FROM batches \
     WHERE kind = 'export' AND status IN ('success', 'failed') AND completed_ms < $1 \
     ORDER BY completed_ms, id LIMIT $2";

impl SqlCatalog {
    /// Moves an ingest batch from `loading` to `to`, queueing its ingest task in the
    /// same transaction when `enqueue`; reports how the batch stands either way.
    async fn move_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        to: &str,
        now_ms: i64,
        enqueue: bool,
    ) -> Result<Option<BatchTransition>> {
        let mut tx = self.write().begin().await?;
        let moved = sqlx::query(MOVE_BATCH)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(batch_id.as_str())
            .bind("loading")
            .bind(to)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if moved && enqueue {
            sqlx::query(INSERT_INGEST_TASK)
                .bind(tenant.org.as_str())
                .bind(tenant.sandbox.as_str())
                .bind(batch_id.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        if moved && to == "failed" {
            Self::emit_batch_end(&mut tx, batch_id.as_str(), now_ms).await?;
        }
        let state: Option<(String, String)> = sqlx::query_as(BATCH_STATE)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(batch_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some((kind, status)) = state else { return Ok(None) };
        let corrupt = |e: String| CatalogError::Corrupt(e);
        Ok(Some(BatchTransition {
            kind: BatchKind::parse(&kind)
                .ok_or_else(|| corrupt(format!("batches.kind {kind:?}")))?,
            status: BatchStatus::parse(&status).map_err(corrupt)?,
            changed: moved,
        }))
    }
}

#[async_trait]
impl Batches for SqlCatalog {
    async fn get_batch(&self, tenant: &Tenant, id: &BatchId) -> Result<Option<Batch>> {
        self.fetch_scoped::<BatchRow, _>(SELECT_BATCH, tenant, id.as_str()).await
    }

    async fn list_batches(
        &self,
        tenant: &Tenant,
        filter: &BatchFilter,
        page: &ListQuery,
    ) -> Result<Vec<Batch>> {
        let rows = sqlx::query_as::<_, BatchRow>(LIST_BATCHES)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(filter.dataset_id.as_ref().map(|d| d.as_str()))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(i64::from(page.limit))
            .bind(as_i64(page.start))
            .fetch_all(self.read())
            .await?;
        convert_all(rows)
    }

    async fn create_ingest_batch(&self, b: &Batch) -> Result<()> {
        let mut insert = sqlx::QueryBuilder::<Db>::new(INSERT_BATCHES);
        insert.push_values([b], |mut row, b| {
            row.push_bind(b.id.as_str())
                .push_bind(&b.org)
                .push_bind(&b.sandbox)
                .push_bind(b.dataset_id.as_str())
                .push_bind(b.kind.as_str())
                .push_bind(b.status.as_str())
                .push_bind(b.job_id)
                .push_bind(&b.input_format)
                .push_bind(b.multiline_json)
                .push_bind(b.created_ms)
                .push_bind(b.updated_ms);
        });
        insert.build().execute(self.write()).await?;
        Ok(())
    }

    async fn record_upload(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        upload: &Upload,
    ) -> Result<UploadRecorded> {
        let mut tx = self.write().begin().await?;
        let loading: Option<(String,)> = sqlx::query_as(DIALECT.lock_loading_batch)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(batch_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if loading.is_none() {
            return Ok(UploadRecorded::Refused);
        }
        let replaced: Option<UploadRow> = sqlx::query_as(SELECT_UPLOAD)
            .bind(batch_id.as_str())
            .bind(&upload.name)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(UPSERT_UPLOAD)
            .bind(batch_id.as_str())
            .bind(&upload.name)
            .bind(upload.object.as_deref())
            .bind(upload.bytes)
            .bind(upload.uploaded_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(UploadRecorded::Recorded { replaced: replaced.map(Into::into) })
    }

    async fn list_uploads(&self, batch_id: &BatchId) -> Result<Vec<Upload>> {
        let rows: Vec<UploadRow> =
            sqlx::query_as(LIST_UPLOADS).bind(batch_id.as_str()).fetch_all(self.read()).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn complete_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>> {
        let outcome = self.move_batch(tenant, batch_id, "staging", now_ms, true).await?;
        if outcome.is_some_and(|o| o.changed) {
            self.announce_tasks().await;
        }
        Ok(outcome)
    }

    async fn abort_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>> {
        self.move_batch(tenant, batch_id, "aborted", now_ms, false).await
    }

    async fn fail_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        now_ms: i64,
    ) -> Result<Option<BatchTransition>> {
        self.move_batch(tenant, batch_id, "failed", now_ms, false).await
    }

    async fn revert_plan(&self, tenant: &Tenant, batch_id: &BatchId) -> Result<Option<RevertPlan>> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let found: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(REVERTIBLE_BATCH)
            .bind(org)
            .bind(sandbox)
            .bind(batch_id.as_str())
            .fetch_optional(self.read())
            .await?;
        let Some((dataset_id, recorded, from_files)) = found else { return Ok(None) };
        let Some(commit_seq) = recorded.or(from_files) else {
            return Err(CatalogError::Conflict(format!(
                "batch {batch_id} was committed before reverts were recorded and its \
                 files are gone; it cannot be reverted"
            )));
        };
        let rows = sqlx::query_as::<_, StoreFileRow>(COMPACTED_SINCE)
            .bind(org)
            .bind(sandbox)
            .bind(&dataset_id)
            .bind(commit_seq)
            .fetch_all(self.read())
            .await?;
        Ok(Some(RevertPlan { commit_seq, compacted: convert_all(rows)? }))
    }

    async fn revert_batch(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
        planned: &[i64],
        rewrites: &[(i64, Option<NewStoreFile>)],
        now_ms: i64,
    ) -> Result<bool> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let mut tx = self.write().begin().await?;
        // The sandbox's commit lock: no compaction commits between here and the end.
        let seq = Self::next_commit(&mut tx, tenant).await?.seq;
        let found: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(REVERTIBLE_BATCH)
            .bind(org)
            .bind(sandbox)
            .bind(batch_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((dataset_id, recorded, from_files)) = found else { return Ok(false) };
        let commit_seq = recorded.or(from_files).unwrap_or(i64::MAX);
        let mut now: Vec<i64> = sqlx::query_as::<_, StoreFileRow>(COMPACTED_SINCE)
            .bind(org)
            .bind(sandbox)
            .bind(&dataset_id)
            .bind(commit_seq)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut planned = planned.to_vec();
        now.sort_unstable();
        planned.sort_unstable();
        if now != planned {
            return Err(CatalogError::Conflict(
                "the dataset was compacted while the revert planned".into(),
            ));
        }
        let marked = sqlx::query(MARK_REVERTED)
            .bind(org)
            .bind(sandbox)
            .bind(batch_id.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if marked != 1 {
            return Ok(false);
        }
        sqlx::query(REMOVE_BATCH_FILES)
            .bind(org)
            .bind(sandbox)
            .bind(batch_id.as_str())
            .bind(seq)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        for (old, new) in rewrites {
            if !Self::remove_store_file(&mut tx, tenant, *old, seq, now_ms).await? {
                return Err(CatalogError::Conflict(format!(
                    "store file {old} was replaced while the revert rewrote it"
                )));
            }
            if let Some(f) = new {
                Self::insert_compacted_file(&mut tx, tenant, f, seq).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn list_batch_files(
        &self,
        tenant: &Tenant,
        batch_id: &BatchId,
    ) -> Result<Vec<BatchFile>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(LIST_BATCH_FILES)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(batch_id.as_str())
            .fetch_all(self.read())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, path, rows, bytes)| BatchFile { name, path, rows, bytes })
            .collect())
    }

    async fn delete_export_batch(&self, tenant: &Tenant, id: &BatchId) -> Result<bool> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let mut tx = self.write().begin().await?;
        let found: Option<(String, String)> = sqlx::query_as(BATCH_KIND_STATUS)
            .bind(org)
            .bind(sandbox)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((kind, status)) = found else { return Ok(false) };
        if kind != "export" {
            return Err(CatalogError::Conflict(format!(
                "batch {id} is an ingest batch; only export batches can be deleted"
            )));
        }
        let deleted = sqlx::query(DELETE_EXPORT_BATCH)
            .bind(org)
            .bind(sandbox)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(CatalogError::Conflict(format!(
                "batch {id} is {status}: its export has not finished; delete it once \
                 the job has succeeded or failed"
            )));
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn expired_export_batches(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<(Tenant, BatchId)>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(EXPIRED_EXPORT_BATCHES)
            .bind(before_ms)
            .bind(limit)
            .fetch_all(self.read())
            .await?;
        rows.iter()
            .map(|(org, sandbox, id)| {
                let corrupt = |e: String| CatalogError::Corrupt(e);
                let tenant = Tenant::parse(org, sandbox).map_err(|e| corrupt(e.to_string()))?;
                Ok((tenant, BatchId::parse(id).map_err(corrupt)?))
            })
            .collect()
    }
}
