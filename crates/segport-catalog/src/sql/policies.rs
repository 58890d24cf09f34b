//! Merge policies on SQL: the sandbox's default changes and versions bump inside one
//! transaction, and a policy a queued or running job uses cannot be deleted.
//!
//! Compiled once per backend: `postgres.rs` and `sqlite.rs` each include this file as a module,
//! in which `SqlCatalog`, `Db` and `Tx` are that backend's catalog, sqlx database and
//! transaction.

use async_trait::async_trait;
use segport_model::merge_policy::{MergePolicy, MergePolicyInput};
use segport_model::Tenant;

use super::{SqlCatalog, Tx, DIALECT};
use crate::model::PolicyRow;
use crate::{CatalogError, ListQuery, MergePolicies, Result};

pub(super) const INSERT_POLICY: &str = "INSERT INTO merge_policies \
     (org, sandbox, id, version, is_default, body, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";

const SELECT_POLICY: &str = "SELECT version, is_default, body FROM merge_policies \
     WHERE org = $1 AND sandbox = $2 AND id = $3";

const SELECT_DEFAULT_POLICY: &str = "SELECT version, is_default, body \
     FROM merge_policies WHERE org = $1 AND sandbox = $2 AND is_default = $3";

const LIST_POLICIES: &str = "SELECT version, is_default, body FROM merge_policies \
     WHERE org = $1 AND sandbox = $2 ORDER BY created_ms, id LIMIT $3 OFFSET $4";

const CLEAR_DEFAULT_POLICY: &str = "UPDATE merge_policies SET is_default = $3 \
     WHERE org = $1 AND sandbox = $2 AND is_default = $4";

const UPDATE_POLICY: &str = "UPDATE merge_policies SET version = $4, is_default = $5, \
     body = $6 WHERE org = $1 AND sandbox = $2 AND id = $3 AND version = $7";

const DELETE_POLICY: &str =
    "DELETE FROM merge_policies WHERE org = $1 AND sandbox = $2 AND id = $3";

const POLICY_IN_USE: &str = "SELECT COUNT(*) FROM export_jobs \
     WHERE org = $1 AND sandbox = $2 AND merge_policy_id = $3 AND status IN ('NEW', 'PROCESSING')";

impl SqlCatalog {
    /// The sandbox's default policy stops being the default (another becomes it in `tx`).
    async fn clear_default(tx: &mut Tx<'_>, tenant: &Tenant) -> Result<()> {
        sqlx::query(CLEAR_DEFAULT_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(false)
            .bind(true)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The version of merge policy `id` of `tenant`, locked against deletion until
    /// `tx` ends (the delete waits for this lock, then sees the jobs inserted with it);
    /// `None` when it is gone.
    pub(super) async fn lock_policy(
        tx: &mut Tx<'_>,
        tenant: &Tenant,
        id: &str,
    ) -> Result<Option<i64>> {
        let policy: Option<(i64,)> = sqlx::query_as(DIALECT.lock_policy_shared)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(policy.map(|(v,)| v))
    }
}

#[async_trait]
impl MergePolicies for SqlCatalog {
    async fn list_merge_policies(
        &self,
        tenant: &Tenant,
        page: &ListQuery,
    ) -> Result<Vec<MergePolicy>> {
        self.fetch_page::<PolicyRow, _>(LIST_POLICIES, tenant, page).await
    }

    async fn get_merge_policy(&self, tenant: &Tenant, id: &str) -> Result<Option<MergePolicy>> {
        self.fetch_scoped::<PolicyRow, _>(SELECT_POLICY, tenant, id).await
    }

    async fn default_merge_policy(&self, tenant: &Tenant) -> Result<Option<MergePolicy>> {
        sqlx::query_as::<_, PolicyRow>(SELECT_DEFAULT_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(true)
            .fetch_optional(self.read())
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    async fn create_merge_policy(&self, tenant: &Tenant, policy: &MergePolicy) -> Result<()> {
        let mut tx = self.write().begin().await?;
        Self::lock_sandbox(&mut tx, tenant).await?;
        if policy.default {
            Self::clear_default(&mut tx, tenant).await?;
        }
        sqlx::query(INSERT_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(&policy.id)
            .bind(policy.version)
            .bind(policy.default)
            .bind(serde_json::to_string(policy)?)
            .bind(segport_model::time::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_merge_policy(
        &self,
        tenant: &Tenant,
        id: &str,
        input: MergePolicyInput,
        now_ms: i64,
    ) -> Result<Option<MergePolicy>> {
        let mut tx = self.write().begin().await?;
        let current = sqlx::query_as::<_, PolicyRow>(SELECT_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else { return Ok(None) };
        let current: MergePolicy = current.try_into()?;
        if current.default && !input.default {
            return Err(CatalogError::Conflict(format!(
                "merge policy {id:?} is the sandbox's default; make another policy the \
                 default instead of clearing this one"
            )));
        }
        let updated =
            input.into_policy(id.to_owned(), tenant.org.as_str(), current.version + 1, now_ms);
        if updated.default && !current.default {
            Self::clear_default(&mut tx, tenant).await?;
        }
        let changed = sqlx::query(UPDATE_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .bind(updated.version)
            .bind(updated.default)
            .bind(serde_json::to_string(&updated)?)
            .bind(current.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed != 1 {
            return Err(CatalogError::Conflict(format!(
                "merge policy {id:?} changed concurrently; retry the update"
            )));
        }
        tx.commit().await?;
        Ok(Some(updated))
    }

    async fn delete_merge_policy(&self, tenant: &Tenant, id: &str) -> Result<bool> {
        let mut tx = self.write().begin().await?;
        Self::lock_sandbox(&mut tx, tenant).await?;
        // Waits for jobs being inserted with this policy, so that the count below sees
        // them.
        let locked: Option<(i64,)> = sqlx::query_as(DIALECT.lock_policy_exclusive)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let current = sqlx::query_as::<_, PolicyRow>(SELECT_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else { return Ok(false) };
        if current.is_default {
            return Err(CatalogError::Conflict(format!(
                "merge policy {id:?} is the sandbox's default; make another policy the \
                 default before deleting it"
            )));
        }
        let (in_use,): (i64,) = sqlx::query_as(POLICY_IN_USE)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if in_use > 0 {
            return Err(CatalogError::Conflict(format!(
                "merge policy {id:?} is used by {in_use} queued or running export \
                 job(s); delete it once they have finished"
            )));
        }
        sqlx::query(DELETE_POLICY)
            .bind(tenant.org.as_str())
            .bind(tenant.sandbox.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
