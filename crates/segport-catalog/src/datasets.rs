//! Datasets: created and listed by the Catalog API, deleted with their batches and store files.

use async_trait::async_trait;
use segport_model::dataset::Dataset;
use segport_model::{BatchId, DatasetId, Tenant};

use crate::{ListQuery, Result};

/// A tenant's datasets.
#[async_trait]
pub trait Datasets: Send + Sync + 'static {
    async fn create_dataset(&self, dataset: &Dataset) -> Result<()>;
    /// Stores a dataset's name, description and tags (the rest never changes); false when it
    /// no longer exists.
    async fn update_dataset(&self, dataset: &Dataset) -> Result<bool>;
    async fn get_dataset(&self, tenant: &Tenant, id: &DatasetId) -> Result<Option<Dataset>>;
    async fn list_datasets(&self, tenant: &Tenant, page: &ListQuery) -> Result<Vec<Dataset>>;
    /// Deletes a dataset, its batches and (after every snapshot holding them) its store files.
    /// Answers the ids of its batches, whose uploaded files the caller removes; `None` when it
    /// does not exist; `Conflict` while a queued or running task writes to it.
    async fn delete_dataset(
        &self,
        tenant: &Tenant,
        id: &DatasetId,
        now_ms: i64,
    ) -> Result<Option<Vec<BatchId>>>;
}
