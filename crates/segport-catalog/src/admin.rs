//! What every role needs of the catalog itself: which database it is, whether it answers, its
//! migrations, and the sandboxes it has made sure of.

use async_trait::async_trait;
use segport_model::Tenant;

use crate::{Backend, Result};

/// The catalog as a database: health, schema and sandboxes.
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Applies the embedded migrations of this backend.
    async fn migrate(&self) -> Result<()>;

    /// Makes sure a sandbox exists, creating it with its default merge policy on first use.
    async fn ensure_sandbox(&self, tenant: &Tenant, now_ms: i64) -> Result<()>;
}

/// Sandboxes this process has already made sure of, so that `ensure_sandbox` costs a write only
/// the first time a process sees a sandbox.
#[derive(Default)]
pub(crate) struct SandboxCache(std::sync::Mutex<std::collections::HashSet<Tenant>>);

impl SandboxCache {
    pub fn contains(&self, tenant: &Tenant) -> bool {
        self.0.lock().map(|set| set.contains(tenant)).unwrap_or(false)
    }

    pub fn insert(&self, tenant: &Tenant) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(tenant.clone());
        }
    }
}
