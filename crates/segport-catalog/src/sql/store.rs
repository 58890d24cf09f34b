//! The store manifest on SQL: every change is a commit of the sandbox (its row is the lock and
//! its sequence the commit number), snapshots read the files live at one commit, and removed
//! files are collected only once no running task's snapshot can hold them.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::Tenant;

use super::SqlCatalog;
use crate::model::{convert_all, StoreFileRow, StoreStateRow, EMPTY_SCHEMA};
use crate::{
    CatalogError, HeldSchemas, NewStoreFile, Result, StoreFile, StoreKind, StoreManifest,
    StoreSnapshot, StoreState, TaskLease,
};

const SELECT_STORE_STATE: &str = "SELECT partitions, commit_seq, last_ingest_ms, \
     profile_schema, event_schema, schema_version FROM sandboxes WHERE org = $1 AND sandbox = $2";

const SELECT_COMMIT_SEQ: &str = "SELECT commit_seq, profile_schema, event_schema \
     FROM sandboxes WHERE org = $1 AND sandbox = $2";

const REGISTER_SNAPSHOT: &str = include_str!("queries/register_snapshot.sql");

/// The held schemas of the successful ingest batches of live datasets of a class.
const HELD_SCHEMAS: &str = "SELECT b.held_schema FROM batches b \
     JOIN datasets d ON d.id = b.dataset_id \
     WHERE d.org = $1 AND d.sandbox = $2 AND d.class = $3 AND b.kind = 'ingest' \
     AND b.status = 'success' AND b.reverted_ms IS NULL";

pub(super) const SELECT_SCHEMA_VERSION: &str = "SELECT schema_version, profile_schema, \
     event_schema, released_version FROM sandboxes WHERE org = $1 AND sandbox = $2";

const RELEASE_SCHEMA: &str = "UPDATE sandboxes SET \
     profile_schema = CASE WHEN $3 = 'profile' THEN $4 ELSE profile_schema END, \
     event_schema = CASE WHEN $3 = 'event' THEN $4 ELSE event_schema END, \
     schema_version = schema_version + 1, released_version = schema_version + 1 \
     WHERE org = $1 AND sandbox = $2";

const SNAPSHOT_FILES: &str = "SELECT id, dataset_id, kind, partition_no, path, batch_id, \
     ingest_ms, seq, row_count, byte_count, min_key, max_key, key_fences FROM store_files \
     WHERE org = $1 AND sandbox = $2 AND seq <= $3 AND (removed_seq IS NULL OR removed_seq > $3) \
     AND partition_no BETWEEN $4 AND $5 ORDER BY dataset_id, partition_no, seq, id";

const LIST_SANDBOXES: &str = "SELECT org, sandbox FROM sandboxes ORDER BY org, sandbox";

const STORE_PATHS: &str = "SELECT path FROM store_files WHERE org = $1 AND sandbox = $2";

const COLLECTABLE_FILES: &str = include_str!("queries/collectable_files.sql");

const FORGET_FILE: &str = "DELETE FROM store_files WHERE id = $1";

#[async_trait]
impl StoreManifest for SqlCatalog {
    async fn find_store_state(&self, tenant: &Tenant) -> Result<Option<StoreState>> {
        sqlx::query_as::<_, StoreStateRow>(SELECT_STORE_STATE)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .fetch_optional(self.read())
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    async fn store_snapshot(
        &self,
        tenant: &Tenant,
        lease: Option<&TaskLease>,
    ) -> Result<StoreSnapshot> {
        type Row = (Option<i64>, Option<String>, Option<String>);
        let row: Option<Row> = match lease {
            Some(lease) => {
                sqlx::query_as(REGISTER_SNAPSHOT)
                    .bind(lease.task_id)
                    .bind(&lease.attempt_id)
                    .bind(tenant.org.as_str())
                    .bind(tenant.sandbox.as_str())
                    .fetch_optional(self.write())
                    .await?
            }
            None => sqlx::query_as::<_, (i64, String, String)>(SELECT_COMMIT_SEQ)
                .bind(tenant.org.as_str())
                .bind(tenant.sandbox.as_str())
                .fetch_optional(self.read())
                .await?
                .map(|(s, p, e)| (Some(s), Some(p), Some(e))),
        };
        // A sandbox without a store row has empty schemas, as a new row holds.
        let empty = || EMPTY_SCHEMA.to_owned();
        let (seq, profile_schema, event_schema) = match (row, lease) {
            (None, Some(_)) => return Err(CatalogError::LeaseLost),
            (Some((Some(s), p, e)), _) => (s, p.unwrap_or_else(empty), e.unwrap_or_else(empty)),
            _ => (0, empty(), empty()),
        };
        let files = self.snapshot_files(tenant, seq, 0..=u32::MAX).await?;
        Ok(StoreSnapshot { seq, files, profile_schema, event_schema })
    }

    async fn snapshot_files(
        &self,
        tenant: &Tenant,
        seq: i64,
        partitions: std::ops::RangeInclusive<u32>,
    ) -> Result<Vec<StoreFile>> {
        let rows = sqlx::query_as::<_, StoreFileRow>(SNAPSHOT_FILES)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(seq)
            .bind(i64::from(*partitions.start()))
            .bind(i64::from(*partitions.end()))
            .fetch_all(self.read())
            .await?;
        convert_all(rows)
    }

    async fn held_schemas(&self, tenant: &Tenant, kind: StoreKind) -> Result<HeldSchemas> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let mut tx = self.read().begin().await?;
        let (schema_version, profile, event, _): (i64, String, String, i64) =
            sqlx::query_as(SELECT_SCHEMA_VERSION)
                .bind(org)
                .bind(sandbox)
                .fetch_one(&mut *tx)
                .await?;
        let class = match kind {
            StoreKind::Profile => "profile",
            StoreKind::Event => "experienceevent",
        };
        let held: Vec<(Option<String>,)> = sqlx::query_as(HELD_SCHEMAS)
            .bind(org)
            .bind(sandbox)
            .bind(class)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let schema = match kind {
            StoreKind::Profile => profile,
            StoreKind::Event => event,
        };
        Ok(HeldSchemas { schema_version, schema, held: held.into_iter().map(|(h,)| h).collect() })
    }

    async fn release_schema(
        &self,
        tenant: &Tenant,
        kind: StoreKind,
        from_version: i64,
        schema: &str,
    ) -> Result<bool> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let mut tx = self.write().begin().await?;
        // A commit of its own: snapshots taken from here on read the released schema.
        if Self::next_commit(&mut tx, tenant).await?.schema_version != from_version {
            return Ok(false);
        }
        sqlx::query(RELEASE_SCHEMA)
            .bind(org)
            .bind(sandbox)
            .bind(kind.as_str())
            .bind(schema)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn commit_compaction(
        &self,
        tenant: &Tenant,
        replaced: &[i64],
        merged: &NewStoreFile,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.write().begin().await?;
        let seq = Self::next_commit(&mut tx, tenant).await?.seq;
        for id in replaced {
            if !Self::remove_store_file(&mut tx, tenant, *id, seq, now_ms).await? {
                return Err(CatalogError::Conflict(format!(
                    "store file {id} was removed during compaction"
                )));
            }
        }
        Self::insert_compacted_file(&mut tx, tenant, merged, seq).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn sandboxes(&self) -> Result<Vec<Tenant>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as(LIST_SANDBOXES).fetch_all(self.read()).await?;
        rows.iter()
            .map(|(o, s)| Tenant::parse(o, s).map_err(|e| CatalogError::Corrupt(e.to_string())))
            .collect()
    }

    async fn store_paths(&self, tenant: &Tenant) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(STORE_PATHS)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .fetch_all(self.read())
            .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    async fn collectable_store_files(&self, removed_before_ms: i64) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(COLLECTABLE_FILES).bind(removed_before_ms).fetch_all(self.read()).await?)
    }

    async fn forget_store_files(&self, ids: &[i64]) -> Result<()> {
        let mut tx = self.write().begin().await?;
        for id in ids {
            sqlx::query(FORGET_FILE).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
