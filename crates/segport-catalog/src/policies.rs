//! Merge policies: a sandbox's default and the others, as the Profile API serves them.

use async_trait::async_trait;
use segport_model::merge_policy::{MergePolicy, MergePolicyInput};
use segport_model::Tenant;

use crate::{ListQuery, Result};

/// A tenant's merge policies.
#[async_trait]
pub trait MergePolicies: Send + Sync + 'static {
    async fn list_merge_policies(
        &self,
        tenant: &Tenant,
        page: &ListQuery,
    ) -> Result<Vec<MergePolicy>>;
    async fn get_merge_policy(&self, tenant: &Tenant, id: &str) -> Result<Option<MergePolicy>>;
    async fn default_merge_policy(&self, tenant: &Tenant) -> Result<Option<MergePolicy>>;
    /// Inserts a policy; when it is the default, the previous default stops being one.
    async fn create_merge_policy(&self, tenant: &Tenant, policy: &MergePolicy) -> Result<()>;
    /// Replaces a policy's settings and bumps its version. `None` when it does not exist.
    async fn update_merge_policy(
        &self,
        tenant: &Tenant,
        id: &str,
        input: MergePolicyInput,
        now_ms: i64,
    ) -> Result<Option<MergePolicy>>;
    /// Deletes a policy. `Ok(false)` when it does not exist; `Conflict` when it is the default
    /// or a queued or running job uses it.
    async fn delete_merge_policy(&self, tenant: &Tenant, id: &str) -> Result<bool>;
}
