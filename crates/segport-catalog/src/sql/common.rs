//! What several concerns share: paging and scoped look-ups, the sandbox's locks and commit
//! sequence, and the store-manifest statements that ingest, compaction and revert all write.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use segport_model::Tenant;

use super::{Db, SqlCatalog, Tx};
use crate::model::{as_i64, convert_all};
use crate::{CatalogError, ListQuery, NewStoreFile, Result};

/// Serialises changes to one sandbox's merge policies and store (a row lock on PostgreSQL; SQLite
/// has one writer anyway).
pub(super) const LOCK_SANDBOX: &str =
    "UPDATE sandboxes SET created_ms = created_ms WHERE org = $1 AND sandbox = $2";

/// Takes the sandbox's commit lock and the next commit sequence number.
/// Also read on its own where a sandbox may have no store row yet.
pub(super) const NEXT_COMMIT: &str = "UPDATE sandboxes SET commit_seq = commit_seq + 1 \
     WHERE org = $1 AND sandbox = $2 RETURNING commit_seq, last_ingest_ms, schema_version";

pub(super) const INSERT_STORE_FILE: &str =
    "INSERT INTO store_files (org, sandbox, dataset_id, kind, \
     partition_no, path, batch_id, ingest_ms, seq, row_count, byte_count, min_key, max_key, \
     key_fences) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const REMOVE_STORE_FILE: &str = "UPDATE store_files SET removed_seq = $4, removed_ms = $5 \
     WHERE org = $1 AND sandbox = $2 AND id = $3 AND removed_seq IS NULL";

pub(super) const FAIL_JOB_BATCHES: &str = "UPDATE batches SET status = 'failed', updated_ms = $2, \
     completed_ms = $2 WHERE job_id = $1 AND status IN ('loading', 'staging')";

/// A statement with its arguments, for the helpers that bind the columns several statements
/// share.
pub(super) type Statement<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

/// A commit of a sandbox's store, as [`SqlCatalog::next_commit`] took it.
pub(super) struct SandboxCommit {
    pub seq: i64,
    pub last_ingest_ms: i64,
    pub schema_version: i64,
}

impl SqlCatalog {
    /// Takes the sandbox's commit lock (its row, until `tx` ends) and the next commit number.
    pub(super) async fn next_commit(tx: &mut Tx<'_>, tenant: &Tenant) -> Result<SandboxCommit> {
        let (seq, last_ingest_ms, schema_version): (i64, i64, i64) = sqlx::query_as(NEXT_COMMIT)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .fetch_one(&mut **tx)
            .await?;
        Ok(SandboxCommit { seq, last_ingest_ms, schema_version })
    }

    /// Marks live store file `id` removed at commit `seq`; false when it was removed already.
    pub(super) async fn remove_store_file(
        tx: &mut Tx<'_>,
        tenant: &Tenant,
        id: i64,
        seq: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let removed = sqlx::query(REMOVE_STORE_FILE)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .bind(seq)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        Ok(removed == 1)
    }

    /// Takes the sandbox's row lock inside `tx`.
    pub(super) async fn lock_sandbox(tx: &mut Tx<'_>, tenant: &Tenant) -> Result<()> {
        sqlx::query(LOCK_SANDBOX)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Adds a compacted file (its rows carry their own recency) at commit `seq`.
    pub(super) async fn insert_compacted_file(
        tx: &mut Tx<'_>,
        tenant: &Tenant,
        f: &NewStoreFile,
        seq: i64,
    ) -> Result<()> {
        sqlx::query(INSERT_STORE_FILE)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(&f.dataset_id)
            .bind(f.kind.as_str())
            .bind(i64::from(f.partition))
            .bind(&f.path)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(seq)
            .bind(f.rows)
            .bind(f.bytes)
            .bind(&f.min_key)
            .bind(&f.max_key)
            .bind(fences_text(&f.key_fences)?)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// One page of a tenant's rows: `sql` takes the tenant, then `LIMIT $3 OFFSET $4`.
    pub(super) async fn fetch_page<R, T>(
        &self,
        sql: &str,
        tenant: &Tenant,
        page: &ListQuery,
    ) -> Result<Vec<T>>
    where
        R: for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row> + Send + Unpin,
        T: TryFrom<R, Error = CatalogError>,
    {
        let rows = sqlx::query_as::<_, R>(sql)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(i64::from(page.limit))
            .bind(as_i64(page.start))
            .fetch_all(self.read())
            .await?;
        convert_all(rows)
    }

    /// One row of a tenant's, by the id in `$3` of `sql`, converted to its domain type.
    pub(super) async fn fetch_scoped<R, T>(
        &self,
        sql: &str,
        tenant: &Tenant,
        id: &str,
    ) -> Result<Option<T>>
    where
        R: for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row> + Send + Unpin,
        T: TryFrom<R, Error = CatalogError>,
    {
        sqlx::query_as::<_, R>(sql)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .map(T::try_from)
            .transpose()
    }
}

/// A file's key fences as stored: a JSON array, `NULL` for none.
pub(super) fn fences_text(fences: &[String]) -> Result<Option<String>> {
    if fences.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_string(fences)?))
}
