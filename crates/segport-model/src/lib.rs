//! Wire types, domain records and request validation for segport.
//!
//! This crate holds what every other crate agrees on: the shapes of export jobs, datasets, batches
//! and merge policies as they travel over HTTP and sit in the catalog, and the validation of
//! client input into those shapes. It does no I/O, so the API, the catalog and (later) the worker
//! can all depend on it without pulling in each other.

pub mod batch;
pub mod codes;
pub mod dataset;
pub mod error;
pub mod fields;
pub mod ids;
pub mod job;
pub mod merge_policy;
pub mod openapi;
pub mod patch;
pub mod schedule;
pub mod suggest;
pub mod time;
mod validate;
pub mod webhook;

pub use error::{FieldError, ValidationErrors};
pub use ids::{BatchId, DatasetId, OrgId, SandboxName, Tenant};
pub use validate::{Key, KeyRole};
