//! Catalog batches: destination batches of exports and (later) ingest batches.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::{truncate, BatchId, DatasetId};

/// Which side of segport a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchKind {
    /// Allocated by an export job; written only by its worker.
    Export,
    /// Created through the Batch Ingestion API.
    Ingest,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Export => "export",
            BatchKind::Ingest => "ingest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "export" => Some(BatchKind::Export),
            "ingest" => Some(BatchKind::Ingest),
            _ => None,
        }
    }
}

/// The batch states segport uses, a subset of Catalog's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Loading,
    Staging,
    Success,
    Failed,
    Aborted,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 5] = [
        BatchStatus::Loading,
        BatchStatus::Staging,
        BatchStatus::Success,
        BatchStatus::Failed,
        BatchStatus::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Loading => "loading",
            BatchStatus::Staging => "staging",
            BatchStatus::Success => "success",
            BatchStatus::Failed => "failed",
            BatchStatus::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        BatchStatus::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s)).ok_or_else(
            || {
                format!(
                    "{:?} is not a batch status; use loading, staging, success, failed or aborted",
                    truncate(s)
                )
            },
        )
    }
}

/// One entry of a batch's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchError {
    pub code: String,
    pub description: String,
    pub rows: Vec<u64>,
}

/// A batch as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub org: String,
    pub sandbox: String,
    pub dataset_id: DatasetId,
    pub kind: BatchKind,
    pub status: BatchStatus,
    pub job_id: Option<i64>,
    pub input_format: Option<String>,
    pub record_count: Option<i64>,
    pub failed_record_count: Option<i64>,
    pub errors: Vec<BatchError>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub completed_ms: Option<i64>,
}

impl Batch {
    /// A fresh destination batch of export job `job_id`.
    pub fn new_export(
        id: BatchId,
        org: &str,
        sandbox: &str,
        dataset_id: DatasetId,
        now_ms: i64,
    ) -> Self {
        Self {
            id,
            org: org.to_owned(),
            sandbox: sandbox.to_owned(),
            dataset_id,
            kind: BatchKind::Export,
            status: BatchStatus::Loading,
            job_id: None,
            input_format: Some("parquet".to_owned()),
            record_count: None,
            failed_record_count: None,
            errors: Vec::new(),
            created_ms: now_ms,
            updated_ms: now_ms,
            completed_ms: None,
        }
    }

    /// The Catalog object (without its id key).
    pub fn to_wire(&self) -> Value {
        let mut obj = json!({
            "imsOrg": self.org,
            "sandboxName": self.sandbox,
            "status": self.status.as_str(),
            "created": self.created_ms,
            "updated": self.updated_ms,
            "version": "1.0.0",
            "relatedObjects": [{"type": "dataSet", "id": self.dataset_id}],
            "errors": self.errors,
            "tags": {},
        });
        if let Some(format) = &self.input_format {
            obj["inputFormat"] = json!({"format": format});
        }
        if let Some(n) = self.record_count {
            obj["recordCount"] = json!(n);
        }
        if let Some(n) = self.failed_record_count {
            obj["failedRecordCount"] = json!(n);
        }
        if let Some(ms) = self.completed_ms {
            obj["completed"] = json!(ms);
        }
        if let Some(job) = self.job_id {
            obj["tags"] = json!({"segport:exportJobId": [job.to_string()]});
        }
        obj
    }
}
