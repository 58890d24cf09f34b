//! The codes a job or batch reports when it fails or warns, each spelled once, with the wording
//! that more than one place writes (the cancel message is written where a NEW job is cancelled
//! and where a running one stops).

use std::fmt;

/// Why a task's job or batch failed as a whole (per-record ingest errors have codes of their
/// own, from the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// A DELETE cancelled the export job.
    ExportCancelled,
    /// The workers running the task stopped answering until its attempts were used up.
    WorkerLost,
    /// The store's files could not be read.
    StoreReadError,
    /// The export's output could not be written.
    OutputWriteError,
    /// An ingest batch held no record.
    NoRecords,
    /// An ingest failed for another reason.
    IngestFailed,
    /// An export failed for another reason.
    Internal,
    /// A schedule's export body no longer resolved when its due time came (dataset or merge
    /// policy gone, a field no longer known).
    ScheduleUnresolved,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::ExportCancelled => "EXPORT_CANCELLED",
            FailureCode::WorkerLost => "WORKER_LOST",
            FailureCode::StoreReadError => "STORE_READ_ERROR",
            FailureCode::OutputWriteError => "OUTPUT_WRITE_ERROR",
            FailureCode::NoRecords => "NO_RECORDS",
            FailureCode::IngestFailed => "INGEST_FAILED",
            FailureCode::Internal => "INTERNAL",
            FailureCode::ScheduleUnresolved => "SCHEDULE_UNRESOLVED",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job says in its `warnings` (a segport addition AEP clients ignore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningCode {
    /// A key AEP documents that segport accepts without acting on it.
    IgnoredField,
    /// A `fields` path checked only when the job runs: the sandbox held no data at creation.
    FieldNotChecked,
    /// A `fields` path that matched nothing when the job ran.
    UnknownField,
    /// A dataset of records that does not feed the profile store.
    DatasetNotInProfile,
    /// A delta schedule's run: only profiles updated after the previous successful run.
    DeltaExport,
}

impl WarningCode {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningCode::IgnoredField => "IGNORED_FIELD",
            WarningCode::FieldNotChecked => "FIELD_NOT_CHECKED",
            WarningCode::UnknownField => "UNKNOWN_FIELD",
            WarningCode::DatasetNotInProfile => "DATASET_NOT_IN_PROFILE",
            WarningCode::DeltaExport => "DELTA_EXPORT",
        }
    }
}

/// The message of a cancelled export job, wherever it is cancelled.
pub const CANCELLED_MESSAGE: &str =
    "the export job was cancelled by a DELETE request; nothing of it was committed";

/// The message of a task whose workers stopped answering, for a batch or an export.
pub fn worker_lost_message(what: &str) -> String {
    format!(
        "the workers running this {what} stopped answering; it was retried until its attempts \
         were used up"
    )
}
