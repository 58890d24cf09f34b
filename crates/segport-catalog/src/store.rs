//! The profile store's manifest: each sandbox's commit sequence, union schemas and the Parquet
//! files live at each commit, so that a task reads one consistent snapshot and no file it reads
//! is collected before it ends.

use async_trait::async_trait;
use segport_model::Tenant;

use crate::lease::TaskLease;
use crate::Result;

/// A sandbox's store: partition count, commit sequence and attribute schemas (JSON documents the
/// store crate defines; the catalog only keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    pub partitions: u32,
    pub commit_seq: i64,
    pub last_ingest_ms: i64,
    pub profile_schema: String,
    pub event_schema: String,
    /// Bumped whenever either schema changes; commits name the version they extended.
    pub schema_version: i64,
}

/// Whether a store file holds profile fragments or events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    Profile,
    Event,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Profile => "profile",
            StoreKind::Event => "event",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "profile" => Some(StoreKind::Profile),
            "event" => Some(StoreKind::Event),
            _ => None,
        }
    }
}

/// A Parquet file of the store, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    pub id: i64,
    pub dataset_id: String,
    pub kind: StoreKind,
    pub partition: u32,
    pub path: String,
    pub batch_id: Option<String>,
    /// The ingest time of all its rows; `None` for compacted files, whose rows carry their own.
    pub ingest_ms: Option<i64>,
    /// The commit that added it.
    pub seq: i64,
    pub rows: i64,
    pub bytes: i64,
    pub min_key: String,
    pub max_key: String,
    /// Every few-thousandth key of the file, in order (empty for files written before): where a
    /// plan may cut the partition into key ranges.
    pub key_fences: Vec<String>,
}

/// A file to add to the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStoreFile {
    pub dataset_id: String,
    pub kind: StoreKind,
    pub partition: u32,
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub min_key: String,
    pub max_key: String,
    pub key_fences: Vec<String>,
}

/// The files of a sandbox's store at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSnapshot {
    pub seq: i64,
    pub files: Vec<StoreFile>,
    /// The union schemas as of `seq`, read with it: they type exactly the snapshot's files.
    pub profile_schema: String,
    pub event_schema: String,
}

/// What the live datasets of a sandbox hold of one union schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSchemas {
    pub schema_version: i64,
    /// The union schema as the sandbox holds it now.
    pub schema: String,
    /// One per successful ingest batch of a live dataset of the kind: the part of the schema
    /// its files hold; `None` for a batch committed before this was recorded.
    pub held: Vec<Option<String>>,
}

/// The store manifest of every sandbox.
#[async_trait]
pub trait StoreManifest: Send + Sync + 'static {
    /// The store settings and state of a sandbox (which must exist).
    async fn store_state(&self, tenant: &Tenant) -> Result<StoreState> {
        self.find_store_state(tenant).await?.ok_or_else(|| {
            crate::CatalogError::Corrupt(format!(
                "sandbox {}/{} has no store state",
                tenant.org, tenant.sandbox
            ))
        })
    }
    /// The store settings and state of a sandbox, if the catalog knows it.
    async fn find_store_state(&self, tenant: &Tenant) -> Result<Option<StoreState>>;
    /// The files of the store now. With a lease, the snapshot's sequence is recorded with the
    /// task, so that no file it includes is deleted before the task ends.
    async fn store_snapshot(
        &self,
        tenant: &Tenant,
        lease: Option<&TaskLease>,
    ) -> Result<StoreSnapshot>;
    /// The files in `partitions` of the store at commit `seq` (a unit's snapshot, which its
    /// job's plan fixed and which the unit's task row keeps from collection).
    async fn snapshot_files(
        &self,
        tenant: &Tenant,
        seq: i64,
        partitions: std::ops::RangeInclusive<u32>,
    ) -> Result<Vec<StoreFile>>;
    /// What the live datasets of the sandbox hold of the union schema of `kind`.
    async fn held_schemas(&self, tenant: &Tenant, kind: StoreKind) -> Result<HeldSchemas>;
    /// Replaces the union schema of `kind` by `schema` (the merge of what live datasets hold)
    /// when its version is still `from_version`, as a commit of its own: an ingest attempt that
    /// typed its records before must type them again. Answers whether it did.
    async fn release_schema(
        &self,
        tenant: &Tenant,
        kind: StoreKind,
        from_version: i64,
        schema: &str,
    ) -> Result<bool>;
    /// Replaces compacted files by the file that merges them, in one commit. Fails with
    /// `Conflict` when one of them was removed meanwhile.
    async fn commit_compaction(
        &self,
        tenant: &Tenant,
        replaced: &[i64],
        merged: &NewStoreFile,
        now_ms: i64,
    ) -> Result<i64>;
    /// Every sandbox with a store, for maintenance.
    async fn sandboxes(&self) -> Result<Vec<Tenant>>;
    /// Every manifest path of a sandbox, live or removed but not yet collected.
    async fn store_paths(&self, tenant: &Tenant) -> Result<Vec<String>>;
    /// Removed files that no running task's snapshot can hold any more, removed before
    /// `removed_before_ms`: `(id, path)`.
    async fn collectable_store_files(&self, removed_before_ms: i64) -> Result<Vec<(i64, String)>>;
    /// Drops collected files from the manifest.
    async fn forget_store_files(&self, ids: &[i64]) -> Result<()>;
}
