//! Datasets on SQL.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::dataset::Dataset;
use segport_model::{BatchId, DatasetId, Tenant};

use super::common::NEXT_COMMIT;
use super::SqlCatalog;
use crate::model::DatasetRow;
use crate::{CatalogError, Datasets, ListQuery, Result};

const INSERT_DATASET: &str = "INSERT INTO datasets \
     (id, org, sandbox, name, description, schema_ref, class, tags, created_ms, updated_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const UPDATE_DATASET: &str = "UPDATE datasets SET name = $4, description = $5, \
     tags = $6, updated_ms = $7 WHERE org = $1 AND sandbox = $2 AND id = $3";

const SELECT_DATASET: &str = "SELECT * FROM datasets WHERE org = $1 AND sandbox = $2 AND id = $3";

const LIST_DATASETS: &str = "SELECT * FROM datasets WHERE org = $1 AND sandbox = $2 \
     ORDER BY created_ms, id LIMIT $3 OFFSET $4";

const DATASET_BUSY: &str = include_str!("queries/dataset_busy.sql");

const REMOVE_DATASET_FILES: &str = "UPDATE store_files SET removed_seq = $4, \
     removed_ms = $5 WHERE org = $1 AND sandbox = $2 AND dataset_id = $3 AND removed_seq IS NULL";

const DATASET_BATCHES: &str = "SELECT id FROM batches WHERE dataset_id = $1";

const DELETE_DATASET: &str = "DELETE FROM datasets WHERE org = $1 AND sandbox = $2 AND id = $3";

#[async_trait]
impl Datasets for SqlCatalog {
    async fn create_dataset(&self, d: &Dataset) -> Result<()> {
        sqlx::query(INSERT_DATASET)
            .bind(d.id.as_str())
            .bind(&d.org)
            .bind(&d.sandbox)
            .bind(&d.name)
            .bind(&d.description)
            .bind(serde_json::to_string(&d.schema_ref)?)
            .bind(d.class.as_str())
            .bind(serde_json::to_string(&d.tags)?)
            .bind(d.created_ms)
            .bind(d.updated_ms)
            .execute(self.write())
            .await?;
        Ok(())
    }

    async fn update_dataset(&self, d: &Dataset) -> Result<bool> {
        let updated = sqlx::query(UPDATE_DATASET)
            .bind(&d.org)
            .bind(&d.sandbox)
            .bind(d.id.as_str())
            .bind(&d.name)
            .bind(&d.description)
            .bind(serde_json::to_string(&d.tags)?)
            .bind(d.updated_ms)
            .execute(self.write())
            .await?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn get_dataset(&self, tenant: &Tenant, id: &DatasetId) -> Result<Option<Dataset>> {
        self.fetch_scoped::<DatasetRow, _>(SELECT_DATASET, tenant, id.as_str()).await
    }

    async fn list_datasets(&self, tenant: &Tenant, page: &ListQuery) -> Result<Vec<Dataset>> {
        self.fetch_page::<DatasetRow, _>(LIST_DATASETS, tenant, page).await
    }

    async fn delete_dataset(
        &self,
        tenant: &Tenant,
        id: &DatasetId,
        now_ms: i64,
    ) -> Result<Option<Vec<BatchId>>> {
        let (org, sandbox) = (tenant.org.as_str(), tenant.sandbox.as_str());
        let mut tx = self.write().begin().await?;
        let exists = sqlx::query(SELECT_DATASET)
            .bind(org)
            .bind(sandbox)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let (busy,): (i64,) =
            sqlx::query_as(DATASET_BUSY).bind(id.as_str()).fetch_one(&mut *tx).await?;
        if busy > 0 {
            return Err(CatalogError::Conflict(format!(
                "dataset {id} is used by {busy} queued or running task(s); delete it \
                 once they have finished"
            )));
        }
        let seq: Option<(i64, i64, i64)> =
            sqlx::query_as(NEXT_COMMIT).bind(org).bind(sandbox).fetch_optional(&mut *tx).await?;
        if let Some((seq, _, _)) = seq {
            sqlx::query(REMOVE_DATASET_FILES)
                .bind(org)
                .bind(sandbox)
                .bind(id.as_str())
                .bind(seq)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        let batches: Vec<(String,)> =
            sqlx::query_as(DATASET_BATCHES).bind(id.as_str()).fetch_all(&mut *tx).await?;
        sqlx::query(DELETE_DATASET)
            .bind(org)
            .bind(sandbox)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        batches
            .into_iter()
            .map(|(b,)| BatchId::parse(&b).map_err(CatalogError::Corrupt))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}
