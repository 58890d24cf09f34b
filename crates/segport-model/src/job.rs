//! Export jobs: the request rules of docs/api.md, the stored spec (which is also the echo), and
//! the job object clients see.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::fields::FieldList;
use crate::ids::{truncate, BatchId, DatasetId};
use crate::time::Rfc3339;
use crate::validate::join;

mod request;

pub use request::EXPORT_JOB_KEYS;

/// The only schema an export may target.
pub const PROFILE_SCHEMA_NAME: &str = "_xdm.context.profile";
/// `segmentNs` when a segment entry names none.
pub const DEFAULT_SEGMENT_NS: &str = "ups";
/// `profileInstanceId` when the request carries no `x-profile-instance-id`.
pub const DEFAULT_PROFILE_INSTANCE: &str = "ups";

/// Upper bounds that keep one request from holding the service hostage.
pub const MAX_SEGMENTS: usize = 100;
const MAX_ID_LEN: usize = 256;

/// The four statuses AEP clients know. A cancelled job ends `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    New,
    Processing,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] =
        [JobStatus::New, JobStatus::Processing, JobStatus::Succeeded, JobStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::New => "NEW",
            JobStatus::Processing => "PROCESSING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    /// Accepts the four statuses in any letter case.
    fn from_str(s: &str) -> Result<Self, String> {
        JobStatus::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!(
                "{:?} is not a job status; use one of NEW, PROCESSING, SUCCEEDED, FAILED",
                truncate(s)
            )
        })
    }
}

/// A segment membership status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SegmentStatus {
    Realized,
    Existing,
    Exited,
}

impl SegmentStatus {
    pub const DEFAULT: [SegmentStatus; 2] = [SegmentStatus::Realized, SegmentStatus::Existing];

    pub fn as_str(self) -> &'static str {
        match self {
            SegmentStatus::Realized => "realized",
            SegmentStatus::Existing => "existing",
            SegmentStatus::Exited => "exited",
        }
    }
}

impl FromStr for SegmentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "realized" => Ok(SegmentStatus::Realized),
            "existing" => Ok(SegmentStatus::Existing),
            "exited" => Ok(SegmentStatus::Exited),
            other => Err(format!(
                "{:?} is not a segment status; use realized, existing or exited",
                truncate(other)
            )),
        }
    }
}

/// One `filter.segments[]` entry, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentFilter {
    pub segment_id: String,
    pub segment_ns: String,
    pub status: Vec<SegmentStatus>,
}

/// An inclusive time window; each bound optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualificationWindow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Rfc3339>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Rfc3339>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<SegmentFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_qualification_time: Option<QualificationWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ingest_timestamp: Option<Rfc3339>,
    pub empty_profiles: bool,
}

/// The ingest-time window of `additionalFields.eventList.filter`; both bounds exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ingest_timestamp: Option<Rfc3339>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ingest_timestamp: Option<Rfc3339>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<EventFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_list: Option<EventList>,
}

/// One destination batch of a `segmentPerBatch` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationBatch {
    pub segment_id: String,
    pub segment_ns: String,
    pub status: Vec<SegmentStatus>,
    pub batch_id: BatchId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub dataset_id: DatasetId,
    pub segment_per_batch: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<Vec<DestinationBatch>>,
}

impl Destination {
    /// Every batch the job writes, in segment order.
    pub fn batch_ids(&self) -> Vec<&BatchId> {
        match (&self.batch_id, &self.batches) {
            (Some(id), _) => vec![id],
            (None, Some(batches)) => batches.iter().map(|b| &b.batch_id).collect(),
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchemaName {
    pub name: String,
}

/// The merge policy a job uses, as echoed: `{id, version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MergePolicyRef {
    pub id: String,
    pub version: i64,
}

/// A job as the client asked for it, validated, before the catalog resolves its merge policy
/// and allocates its batches.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportJobRequest {
    pub dataset_id: DatasetId,
    pub segment_per_batch: bool,
    pub fields: FieldList,
    pub filter: JobFilter,
    pub additional_fields: Option<AdditionalFields>,
    /// `mergePolicy.id` and optional `version`; `None` means the sandbox's default.
    pub merge_policy: Option<(String, Option<i64>)>,
    /// Paths of keys AEP documents that segport accepts without acting on them.
    pub ignored_keys: Vec<String>,
}

/// What a job was created with: stored in the catalog and echoed in every job object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportJobSpec {
    pub destination: Destination,
    /// As given; `""` (every field) when the request had none.
    #[serde(default)]
    pub fields: FieldList,
    pub schema: SchemaName,
    pub filter: JobFilter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_fields: Option<AdditionalFields>,
    pub merge_policy: MergePolicyRef,
    pub profile_instance_id: String,
}

/// One entry of a job's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    pub code: String,
    pub msg: String,
    pub call_stack: String,
}

impl JobError {
    pub fn new(code: crate::codes::FailureCode, msg: impl Into<String>) -> Self {
        Self { code: code.as_str().to_owned(), msg: msg.into(), call_stack: String::new() }
    }

    pub fn cancelled() -> Self {
        Self::new(crate::codes::FailureCode::ExportCancelled, crate::codes::CANCELLED_MESSAGE)
    }
}

/// One entry of a job's `warnings` (a segport addition, ignored by AEP clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobWarning {
    pub code: String,
    pub msg: String,
}

impl JobWarning {
    pub fn new(code: crate::codes::WarningCode, msg: impl Into<String>) -> Self {
        Self { code: code.as_str().to_owned(), msg: msg.into() }
    }
}

/// `progress` while a job runs (a segport addition). For a job run as units, the partitions
/// whose units have all committed, and the profiles of the committed units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    pub partitions_done: u64,
    pub partitions_total: u64,
    pub profiles_scanned: u64,
    pub profiles_exported: u64,
    /// Units committed, for a job run as units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_total: Option<u64>,
}

/// One work unit of a job run as units (a segport addition), run as a task of its own: a
/// partition and a range of its profile keys, or several whole partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobUnit {
    pub unit: u32,
    /// Its (first) partition.
    pub partition: u32,
    /// Its last partition, when it covers several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_partition: Option<u32>,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// The worker running it, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Attempts so far (a lost worker's attempt counts).
    pub attempt: i32,
    /// Profiles it exported and scanned, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles_exported: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles_scanned: Option<u64>,
}

impl JobProgress {
    /// The progress of a job run as `units`.
    pub fn of_units(units: &[JobUnit]) -> Self {
        let mut partitions: BTreeMap<u32, bool> = BTreeMap::new();
        for u in units {
            for partition in u.partition..=u.last_partition.unwrap_or(u.partition) {
                *partitions.entry(partition).or_insert(true) &= u.state == "done";
            }
        }
        Self {
            partitions_done: partitions.values().filter(|done| **done).count() as u64,
            partitions_total: partitions.len() as u64,
            profiles_scanned: units.iter().filter_map(|u| u.profiles_scanned).sum(),
            profiles_exported: units.iter().filter_map(|u| u.profiles_exported).sum(),
            units_done: Some(units.iter().filter(|u| u.state == "done").count() as u64),
            units_total: Some(units.len() as u64),
        }
    }
}

/// `{startTimeInMs, endTimeInMs, totalTimeInMs}`; the end fields only once finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeSpan {
    pub start_time_in_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time_in_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time_in_ms: Option<i64>,
}

impl TimeSpan {
    fn new(start: i64, end: Option<i64>) -> Self {
        Self {
            start_time_in_ms: start,
            end_time_in_ms: end,
            total_time_in_ms: end.map(|e| e - start),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobMetrics {
    pub total_time: TimeSpan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_export_time: Option<TimeSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_exported_profile_counter: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_profile_by_namespace_counter: Option<BTreeMap<String, u64>>,
}

/// What a finished export counted, stored with the job when it commits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCounters {
    pub total: u64,
    pub by_namespace: BTreeMap<String, u64>,
}

/// An export job as the catalog holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportJobRecord {
    pub id: i64,
    pub org: String,
    pub sandbox: String,
    pub status: JobStatus,
    pub spec: ExportJobSpec,
    /// The merge policy resolved at creation, whole; `None` in lists, which show the policy's
    /// id and version from the spec.
    pub merge_policy: Option<crate::merge_policy::MergePolicy>,
    pub errors: Vec<JobError>,
    pub warnings: Vec<JobWarning>,
    pub progress: Option<JobProgress>,
    pub counters: Option<ExportCounters>,
    /// The running (or last) attempt's id; empty until a worker starts the job.
    pub attempt_id: String,
    pub attempt: i32,
    pub cancel_requested: bool,
    pub request_id: String,
    pub creation_ms: i64,
    pub update_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// How many units the job was split into; `None` when it runs as one task.
    pub units_total: Option<i64>,
    /// The schedule whose due time made the job (a segport addition).
    pub schedule_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeGatewayJobId {
    pub export_job: String,
}

/// The job object of GET, POST and list answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    pub id: i64,
    pub job_type: String,
    #[serde(flatten)]
    pub spec: ExportJobSpec,
    pub ims_org_id: String,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<JobError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<JobWarning>>,
    pub metrics: JobMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
    /// The units of a job run as units (a segport addition; single-job answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Vec<JobUnit>>,
    pub compute_gateway_job_id: ComputeGatewayJobId,
    pub creation_time: i64,
    pub update_time: i64,
    pub request_id: String,
    /// The schedule that made the job (a segport addition; absent for jobs made by a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
}

impl ExportJobRecord {
    /// A job as it is created: `NEW`, with no attempt, progress or outcome yet.
    pub fn created(
        id: i64,
        org: String,
        sandbox: String,
        spec: ExportJobSpec,
        merge_policy: Option<crate::merge_policy::MergePolicy>,
        request_id: String,
        now_ms: i64,
    ) -> Self {
        Self {
            id,
            org,
            sandbox,
            status: JobStatus::New,
            spec,
            merge_policy,
            errors: Vec::new(),
            warnings: Vec::new(),
            progress: None,
            counters: None,
            attempt_id: String::new(),
            attempt: 0,
            cancel_requested: false,
            request_id,
            creation_ms: now_ms,
            update_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            units_total: None,
            schedule_id: None,
        }
    }

    pub fn to_wire(&self) -> ExportJob {
        let finished = self.finished_ms.filter(|_| self.status.is_finished());
        let metrics = JobMetrics {
            total_time: TimeSpan::new(self.creation_ms, finished),
            profile_export_time: self.started_ms.map(|s| TimeSpan::new(s, finished)),
            total_exported_profile_counter: self.counters.as_ref().map(|c| c.total),
            exported_profile_by_namespace_counter: self
                .counters
                .as_ref()
                .map(|c| c.by_namespace.clone()),
        };
        ExportJob {
            id: self.id,
            job_type: "BATCH".to_owned(),
            spec: self.spec.clone(),
            ims_org_id: self.org.clone(),
            status: self.status,
            errors: (!self.errors.is_empty()).then(|| self.errors.clone()),
            warnings: (!self.warnings.is_empty()).then(|| self.warnings.clone()),
            metrics,
            progress: self.progress.clone().filter(|_| self.status == JobStatus::Processing),
            units: None,
            compute_gateway_job_id: ComputeGatewayJobId { export_job: self.attempt_id.clone() },
            creation_time: self.creation_ms,
            update_time: self.update_ms,
            request_id: self.request_id.clone(),
            schedule_id: self.schedule_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::ValidationErrors;

    fn fields_of(err: ValidationErrors) -> Vec<String> {
        err.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn segment_entries_are_capped() {
        let body = |n: usize| {
            let segments: Vec<_> = (0..n).map(|i| json!({"segmentId": format!("s{i}")})).collect();
            json!({
                "destination": {"datasetId": "5b7c86968f7b6501e21ba9df", "segmentPerBatch": true},
                "schema": {"name": "_xdm.context.profile"},
                "filter": {"segments": segments}
            })
        };
        assert_eq!(
            ExportJobRequest::parse(&body(MAX_SEGMENTS)).unwrap().batch_count(),
            MAX_SEGMENTS
        );
        let err = ExportJobRequest::parse(&body(MAX_SEGMENTS + 1)).unwrap_err();
        assert_eq!(fields_of(err.clone()), ["filter.segments"]);
        assert!(err.0[0].message.contains("at most 100"), "{err}");
    }

    fn minimal(extra: Value) -> Value {
        let mut body = json!({
            "destination": {"datasetId": "5b7c86968f7b6501e21ba9df"},
            "schema": {"name": "_xdm.context.profile"},
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    /// A misspelled key must never widen an export: `filters` would otherwise be dropped and
    /// the job export every profile.
    #[test]
    fn unknown_keys_are_refused_with_the_closest_valid_one() {
        let err = ExportJobRequest::parse(&minimal(json!({
            "filters": {"segments": [{"segmentId": "s"}]},
            "filter": {
                "segments": [{"segmentId": "s", "staus": ["realized"]}],
                "segmentQualificationTime": {"startTime": "2024-01-01T00:00:00Z", "end": "x"},
                "fromIngestTimeStamp": "2024-01-01T00:00:00Z",
            },
            "additionalFields": {"eventList": {"filter": {"toIngestTimestamp": "2024-01-01T00:00:00Z", "zzz": 1}}},
            "mergePolicy": {"id": "m", "versoin": 1},
        })))
        .unwrap_err();
        let got: Vec<(String, String)> = err.0.into_iter().map(|e| (e.field, e.message)).collect();
        let expect = [
            ("filters", "unknown field `filters`; did you mean `filter`?"),
            ("filter.segments[0].staus", "unknown field `staus`; did you mean `status`?"),
            (
                "filter.segmentQualificationTime.end",
                "unknown field `end`; valid here: startTime, endTime",
            ),
            (
                "filter.fromIngestTimeStamp",
                "unknown field `fromIngestTimeStamp`; did you mean `fromIngestTimestamp`?",
            ),
            (
                "additionalFields.eventList.filter.zzz",
                "unknown field `zzz`; valid here: fromIngestTimestamp, toIngestTimestamp",
            ),
            ("mergePolicy.versoin", "unknown field `versoin`; did you mean `version`?"),
        ];
        for (field, message) in expect {
            assert!(
                got.iter().any(|(f, m)| f == field && m == message),
                "{field}: {message:?} missing from {got:?}"
            );
        }
    }

    /// What AEP answers as a job may be sent back as a body: its read-only keys are accepted,
    /// change nothing and are named in the job's warnings.
    #[test]
    fn read_only_keys_of_aep_jobs_are_accepted_and_named() {
        let plain = ExportJobRequest::parse(&minimal(json!({}))).unwrap();
        let mut copied = minimal(json!({
            "id": 100, "jobType": "BATCH", "status": "SUCCEEDED", "imsOrgId": "o",
            "metrics": {"totalTime": {}}, "requestId": "r",
        }));
        copied["destination"]["batchId"] = json!("da5cfb4de32c4b93a09f7e37fa53ad52");
        let copied = ExportJobRequest::parse(&copied).unwrap();
        let mut ignored = copied.ignored_keys.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            ["destination.batchId", "id", "imsOrgId", "jobType", "metrics", "requestId", "status"]
        );
        assert_eq!(copied.warnings().len(), 7);
        assert!(copied.warnings().iter().all(|w| w.code == "IGNORED_FIELD"));
        assert!(plain.warnings().is_empty());
        assert_eq!(
            ExportJobRequest { ignored_keys: Vec::new(), ..copied },
            plain,
            "ignored keys change nothing"
        );
    }

    /// AEP's example writes `"version": 1.0`: a whole number with a fraction part is accepted,
    /// a real fraction is not.
    #[test]
    fn merge_policy_versions_may_be_written_with_a_fraction_part() {
        let version = |v: Value| {
            ExportJobRequest::parse(&minimal(json!({"mergePolicy": {"id": "m", "version": v}})))
        };
        assert_eq!(version(json!(1.0)).unwrap().merge_policy, Some(("m".into(), Some(1))));
        assert_eq!(version(json!(3)).unwrap().merge_policy, Some(("m".into(), Some(3))));
        for bad in [json!(1.5), json!(0.0), json!(-2), json!(1e300)] {
            let err = version(bad.clone()).unwrap_err();
            assert_eq!(fields_of(err), ["mergePolicy.version"], "{bad}");
        }
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let req = ExportJobRequest::parse(&json!({
            "destination": {"datasetId": "5b7c86968f7b6501e21ba9df"},
            "schema": {"name": "_xdm.context.profile"}
        }))
        .unwrap();
        assert!(!req.segment_per_batch);
        assert!(!req.filter.empty_profiles);
        assert_eq!(req.batch_count(), 1);
        let spec = req.into_spec(
            MergePolicyRef { id: "m".into(), version: 1 },
            vec![BatchId::generate()],
            "ups".into(),
        );
        let echo = serde_json::to_value(&spec).unwrap();
        assert_eq!(echo["filter"], json!({"emptyProfiles": false}));
        assert_eq!(echo["destination"]["segmentPerBatch"], json!(false));
        assert!(echo["destination"]["batchId"].is_string());
    }

    #[test]
    fn segment_defaults_and_per_batch_allocation() {
        let req = ExportJobRequest::parse(&json!({
            "destination": {"dataSetId": "5b7c86968f7b6501e21ba9df", "segmentPerBatch": true},
            "schema": {"name": "_xdm.context.profile"},
            "filter": {"segments": [{"segmentId": "a"}, {"segmentId": "b", "segmentNs": "AAM", "status": ["exited"]}]}
        }))
        .unwrap();
        assert_eq!(req.batch_count(), 2);
        let segs = req.filter.segments.clone().unwrap();
        assert_eq!(segs[0].segment_ns, "ups");
        assert_eq!(segs[0].status, SegmentStatus::DEFAULT.to_vec());
        let spec = req.into_spec(
            MergePolicyRef { id: "m".into(), version: 1 },
            vec![BatchId::generate(), BatchId::generate()],
            "ups".into(),
        );
        assert!(spec.destination.batch_id.is_none());
        assert_eq!(spec.destination.batches.as_ref().unwrap()[1].segment_ns, "AAM");
        assert_eq!(spec.destination.batch_ids().len(), 2);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let err = ExportJobRequest::parse(&json!({
            "destination": {"segmentPerBatch": "yes"},
            "schema": {"name": "other"},
            "fields": "a..b",
            "filter": {
                "segments": [{"segmentNs": ""}, 7, {"segmentId": "x", "status": ["maybe"]}],
                "segmentQualificationTime": {"startTime": "2020-01-02T00:00:00Z", "endTime": "2020-01-01T00:00:00Z"},
                "fromIngestTimestamp": "now",
                "emptyProfiles": 1
            },
            "additionalFields": {"eventList": {"filter": {"fromIngestTimestamp": "2020-01-01T00:00:00Z", "toIngestTimestamp": "2020-01-01T00:00:00Z"}}},
            "mergePolicy": {"version": 0},
            "evaluationInfo": {"segmentation": true}
        }))
        .unwrap_err();
        let fields = fields_of(err);
        for expected in [
            "destination.datasetId",
            "destination.segmentPerBatch",
            "schema.name",
            "fields",
            "filter.segments[0].segmentId",
            "filter.segments[0].segmentNs",
            "filter.segments[1]",
            "filter.segments[2].status[0]",
            "filter.segmentQualificationTime.endTime",
            "filter.fromIngestTimestamp",
            "filter.emptyProfiles",
            "additionalFields.eventList.filter.toIngestTimestamp",
            "mergePolicy.id",
            "mergePolicy.version",
            "evaluationInfo.segmentation",
        ] {
            assert!(fields.iter().any(|f| f == expected), "{expected} not in {fields:?}");
        }
    }

    #[test]
    fn qualification_window_needs_segments() {
        let err = ExportJobRequest::parse(&json!({
            "destination": {"datasetId": "5b7c86968f7b6501e21ba9df"},
            "schema": {"name": "_xdm.context.profile"},
            "filter": {"segmentQualificationTime": {"startTime": "2018-01-01T00:00:00Z"}}
        }))
        .unwrap_err();
        assert_eq!(fields_of(err), ["filter.segmentQualificationTime"]);
    }

    #[test]
    fn not_an_object() {
        assert_eq!(fields_of(ExportJobRequest::parse(&json!([1])).unwrap_err()), ["body"]);
    }

    #[test]
    fn spec_round_trips_through_storage() {
        let req = ExportJobRequest::parse(&json!({
            "destination": {"datasetId": "5b7c86968f7b6501e21ba9df"},
            "schema": {"name": "_xdm.context.profile"},
            "fields": "identities.id, personalEmail.address",
            "filter": {"segments": [{"segmentId": "s"}], "segmentQualificationTime": {"endTime": "2018-02-01T00:00:00Z"}},
            "additionalFields": {"eventList": {"fields": "_id"}}
        }))
        .unwrap();
        let spec = req.into_spec(
            MergePolicyRef { id: "m".into(), version: 3 },
            vec![BatchId::generate()],
            "ups".into(),
        );
        let text = serde_json::to_string(&spec).unwrap();
        let back: ExportJobSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }
}
