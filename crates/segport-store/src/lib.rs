//! The profile store of segport: where profiles and events live, and how they get there.
//!
//! Client input (XDM JSON lines, JSON arrays or Parquet) is parsed record by record, its
//! identities normalised into one list and its profile key taken from the primary identity
//! ([`xdm`]), its other fields typed against the sandbox's union schema ([`schema`]), and turned
//! into Arrow record batches ([`columns`]). Rows are hashed into the sandbox's partitions, sorted
//! by key and written as immutable Parquet files through `object_store` ([`ingest`],
//! [`storage`]). Which files make up the store at a moment is the catalog's manifest; this crate
//! never touches SQL. Readers align every file to the union schema ([`align`], [`read`]).

pub mod align;
pub mod cache;
mod chunked;
pub mod columns;
pub mod compact;
mod error;
pub mod gather;
pub mod index;
pub mod ingest;
pub mod input;
pub mod layout;
pub mod limits;
mod mapped;
pub mod output;
pub mod paths;
pub mod read;
pub mod rowfile;
pub mod schema;
pub mod snapshot;
pub mod storage;
pub mod xdm;

pub use error::StoreError;
pub use storage::Storage;

/// Result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a dataset's records are: this decides their columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Profile records: identities, segment memberships and attributes.
    Profile,
    /// Experience events: identities, `_id`, `timestamp` and attributes.
    Event,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Profile => "profile",
            RecordKind::Event => "event",
        }
    }
}
