//! The export engine: given a snapshot of a sandbox's store and an export job's plan, it merges
//! every profile's fragments under the merge policy, applies the job's filters, projects the
//! requested fields and encodes the rows as Parquet, one destination batch at a time.
//!
//! Work is split by partition and run on rayon. Within a partition, the store files (each sorted
//! by profile key) are merged by key while being read row group by row group, so memory holds a
//! row group per file, never a partition. Only profiles that pass the cheap filters (segment
//! memberships, update time) are turned into JSON and projected. No SQL, no HTTP: the worker
//! hands in the files and takes the encoded output away.

mod columnar;
mod columns;
mod error;
pub mod job;
pub mod lookup;
mod merge;
pub mod plan;
mod prefilter;
pub mod project;
mod run;
mod sink;
mod source;

pub use error::EngineError;
pub use plan::{EventWindow, ExportPlan, Precedence, SegmentMatch};
pub use run::{projections, run_partition, PartitionOutput, Progress, Projections};
pub use sink::{empty_output, encode_rows, output_rows};
pub use source::{KeyRange, PartitionInput, SourceFile};
