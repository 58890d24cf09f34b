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
    /// A successful ingest batch whose records were withdrawn from the store.
    Reverted,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 6] = [
        BatchStatus::Loading,
        BatchStatus::Staging,
        BatchStatus::Success,
        BatchStatus::Failed,
        BatchStatus::Aborted,
        BatchStatus::Reverted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Loading => "loading",
            BatchStatus::Staging => "staging",
            BatchStatus::Success => "success",
            BatchStatus::Failed => "failed",
            BatchStatus::Aborted => "aborted",
            BatchStatus::Reverted => "reverted",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        BatchStatus::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s)).ok_or_else(
            || {
                format!(
                    "{:?} is not a batch status; use loading, staging, success, failed, aborted \
                     or reverted",
                    truncate(s)
                )
            },
        )
    }
}

/// Every batch status Catalog documents, for a `status` list filter, with the segport status
/// each stands for (`None`: no segport batch is ever in it, so the filter matches nothing).
const STATUS_FILTERS: &[(&str, Option<BatchStatus>)] = &[
    ("loading", Some(BatchStatus::Loading)),
    ("staging", Some(BatchStatus::Staging)),
    ("success", Some(BatchStatus::Success)),
    ("failed", Some(BatchStatus::Failed)),
    ("aborted", Some(BatchStatus::Aborted)),
    ("reverted", Some(BatchStatus::Reverted)),
    // Aliases: Catalog's other names for the same states.
    ("active", Some(BatchStatus::Success)),
    ("failure", Some(BatchStatus::Failed)),
    // Completed by the client, waiting for or in the hands of a worker.
    ("queued", Some(BatchStatus::Staging)),
    ("processing", Some(BatchStatus::Staging)),
    ("retrying", Some(BatchStatus::Staging)),
    ("loaded", Some(BatchStatus::Staging)),
    ("staged", Some(BatchStatus::Staging)),
    // States segport's batches never take.
    ("stalled", None),
    ("abandoned", None),
    ("inactive", None),
    ("deleted", None),
];

impl BatchStatus {
    /// A `status` query value: any status Catalog documents, in any letter case.
    pub fn parse_filter(s: &str) -> Result<Option<Self>, String> {
        STATUS_FILTERS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, status)| *status)
            .ok_or_else(|| {
                let names: Vec<&str> = STATUS_FILTERS.iter().map(|(n, _)| *n).collect();
                format!("{:?} is not a batch status; use one of {}", truncate(s), names.join(", "))
            })
    }
}

/// The input formats an ingest batch accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    Json,
    Parquet,
}

impl IngestFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            IngestFormat::Json => "json",
            IngestFormat::Parquet => "parquet",
        }
    }

    /// `json` or `parquet` in any letter case (AEP's enum writes `JSON` and `Parquet`).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("json") {
            Ok(IngestFormat::Json)
        } else if s.eq_ignore_ascii_case("parquet") {
            Ok(IngestFormat::Parquet)
        } else if s.eq_ignore_ascii_case("csv") {
            Err("CSV is not supported; send json (NDJSON, or one array with isMultiLineJson) \
                 or parquet"
                .to_owned())
        } else {
            Err(format!("{:?} is not supported; use json or parquet", truncate(s)))
        }
    }
}

/// A validated `POST /data/foundation/import/batches` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIngestBatch {
    pub dataset_id: DatasetId,
    pub format: IngestFormat,
    pub multiline_json: bool,
}

impl NewIngestBatch {
    pub fn parse(body: &serde_json::Value) -> Result<Self, crate::ValidationErrors> {
        use crate::validate::{body_object, Checker};
        let root = body_object(body)?;
        let mut c = Checker::new();
        let dataset_id = match c.parsed(root, "datasetId", "", DatasetId::parse) {
            Some(id) => Some(id),
            None => {
                if Checker::get(root, "datasetId").is_none() {
                    c.fail("datasetId", "is required");
                }
                None
            }
        };
        let (format, multiline_json) = match c.object(root, "inputFormat", "") {
            None => {
                if Checker::get(root, "inputFormat").is_none() {
                    c.fail("inputFormat", "is required, e.g. {\"format\": \"json\"}");
                }
                (None, false)
            }
            Some(obj) => {
                let format = c.required_string(obj, "format", "inputFormat").and_then(|f| {
                    IngestFormat::parse(f).map_err(|m| c.fail("inputFormat.format", m)).ok()
                });
                let multiline = c.bool(obj, "isMultiLineJson", "inputFormat").unwrap_or(false);
                if multiline && format == Some(IngestFormat::Parquet) {
                    c.fail("inputFormat.isMultiLineJson", "applies to json only");
                }
                (format, multiline)
            }
        };
        match (dataset_id, format) {
            (Some(dataset_id), Some(format)) if c.errors.is_empty() => {
                Ok(Self { dataset_id, format, multiline_json })
            }
            _ => Err(c.errors),
        }
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
    /// `inputFormat.isMultiLineJson`: each JSON file is one array of records.
    pub multiline_json: bool,
    pub record_count: Option<i64>,
    pub failed_record_count: Option<i64>,
    pub errors: Vec<BatchError>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub completed_ms: Option<i64>,
}

impl Batch {
    /// A fresh ingest batch, `loading` until its client completes it.
    pub fn new_ingest(org: &str, sandbox: &str, new: &NewIngestBatch, now_ms: i64) -> Self {
        Self {
            id: BatchId::generate(),
            org: org.to_owned(),
            sandbox: sandbox.to_owned(),
            dataset_id: new.dataset_id.clone(),
            kind: BatchKind::Ingest,
            status: BatchStatus::Loading,
            job_id: None,
            input_format: Some(new.format.as_str().to_owned()),
            multiline_json: new.multiline_json,
            record_count: None,
            failed_record_count: None,
            errors: Vec::new(),
            created_ms: now_ms,
            updated_ms: now_ms,
            completed_ms: None,
        }
    }

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
            multiline_json: false,
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
            if self.multiline_json {
                obj["inputFormat"]["isMultiLineJson"] = json!(true);
            }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ingest_batch_bodies() {
        let ok = NewIngestBatch::parse(&json!({"datasetId": "5b7c86968f7b6501e21ba9df", "inputFormat": {"format": "json", "isMultiLineJson": true}})).unwrap();
        assert!(ok.multiline_json);
        assert_eq!(ok.format, IngestFormat::Json);
        let err =
            NewIngestBatch::parse(&json!({"datasetId": "x", "inputFormat": {"format": "csv"}}))
                .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["datasetId", "inputFormat.format"]);
        let err = NewIngestBatch::parse(&json!({})).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["datasetId", "inputFormat"]);
    }
}
