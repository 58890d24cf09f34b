//! Reading a create-job body: every key it may carry ([`EXPORT_JOB_KEYS`]) and the rules of
//! docs/api.md that need no catalog lookup, checked all at once so that a client learns every
//! mistake of its request in one answer.

use serde_json::Value;

use super::*;
use crate::ids::DatasetId;
use crate::validate::{body_object, Checker, Key, KeyRole, Object};
use crate::ValidationErrors;

/// Every key an export job body may carry, as AEP's ExportJob schema names them: the ones
/// segport reads, and the ones of AEP's job object (what a client gets back and may send again)
/// that it accepts without acting on them. A key outside this table is a 400, so that a
/// misspelling (`filters` for `filter`) can never widen an export. The OpenAPI request schema
/// (`openapi::ExportJobCreate`) lists the same keys.
pub const EXPORT_JOB_KEYS: &[Key] = {
    use KeyRole::{Ignored, Read, ReadEach};
    const LEAF: KeyRole = Read(&[]);
    &[
        Key {
            name: "destination",
            role: Read(&[
                Key { name: "datasetId", role: LEAF },
                Key { name: "dataSetId", role: LEAF },
                Key { name: "segmentPerBatch", role: LEAF },
                Key { name: "batchId", role: Ignored },
                Key { name: "batches", role: Ignored },
            ]),
        },
        Key { name: "schema", role: Read(&[Key { name: "name", role: LEAF }]) },
        Key { name: "fields", role: LEAF },
        Key {
            name: "filter",
            role: Read(&[
                Key {
                    name: "segments",
                    role: ReadEach(&[
                        Key { name: "segmentId", role: LEAF },
                        Key { name: "segmentNs", role: LEAF },
                        Key { name: "status", role: LEAF },
                    ]),
                },
                Key {
                    name: "segmentQualificationTime",
                    role: Read(&[
                        Key { name: "startTime", role: LEAF },
                        Key { name: "endTime", role: LEAF },
                    ]),
                },
                Key { name: "fromIngestTimestamp", role: LEAF },
                Key { name: "emptyProfiles", role: LEAF },
            ]),
        },
        Key {
            name: "additionalFields",
            role: Read(&[Key {
                name: "eventList",
                role: Read(&[
                    Key { name: "fields", role: LEAF },
                    Key {
                        name: "filter",
                        role: Read(&[
                            Key { name: "fromIngestTimestamp", role: LEAF },
                            Key { name: "toIngestTimestamp", role: LEAF },
                        ]),
                    },
                ]),
            }]),
        },
        Key {
            name: "mergePolicy",
            role: Read(&[Key { name: "id", role: LEAF }, Key { name: "version", role: LEAF }]),
        },
        Key { name: "evaluationInfo", role: Read(&[Key { name: "segmentation", role: LEAF }]) },
        // AEP's job object, as answered: read-only there, so a body copied from an answer
        // carries them. The server sets each itself.
        Key { name: "id", role: Ignored },
        Key { name: "jobType", role: Ignored },
        Key { name: "imsOrgId", role: Ignored },
        Key { name: "status", role: Ignored },
        Key { name: "profileInstanceId", role: Ignored },
        Key { name: "errors", role: Ignored },
        Key { name: "metrics", role: Ignored },
        Key { name: "computeGatewayJobId", role: Ignored },
        Key { name: "creationTime", role: Ignored },
        Key { name: "updateTime", role: Ignored },
        Key { name: "requestId", role: Ignored },
    ]
};

impl ExportJobRequest {
    /// Checks a create-job body against every rule of docs/api.md that needs no catalog lookup.
    pub fn parse(body: &Value) -> Result<Self, ValidationErrors> {
        let root = body_object(body)?;
        let mut c = Checker::new();
        let mut ignored_keys = Vec::new();
        c.known_keys(root, "", EXPORT_JOB_KEYS, &mut ignored_keys);

        let destination = c.object(root, "destination", "");
        if destination.is_none() && Checker::get(root, "destination").is_none() {
            c.fail("destination", "is required");
        }
        let dataset_id = destination.and_then(|d| parse_destination_dataset(&mut c, d));
        let segment_per_batch =
            destination.and_then(|d| c.bool(d, "segmentPerBatch", "destination")).unwrap_or(false);

        match c.object(root, "schema", "") {
            None if Checker::get(root, "schema").is_none() => c.fail("schema", "is required"),
            None => {}
            Some(schema) => {
                if let Some(name) = c.required_string(schema, "name", "schema") {
                    if name != PROFILE_SCHEMA_NAME {
                        c.fail(
                            "schema.name",
                            format!(
                                "{:?} is not supported; exports use {PROFILE_SCHEMA_NAME:?}",
                                truncate(name)
                            ),
                        );
                    }
                }
            }
        }

        let fields = c.parsed(root, "fields", "", FieldList::parse).unwrap_or_default();
        let filter = parse_filter(&mut c, root);
        let additional_fields = parse_additional_fields(&mut c, root);
        let merge_policy = parse_merge_policy(&mut c, root);

        if let Some(info) = c.object(root, "evaluationInfo", "") {
            if c.bool(info, "segmentation", "evaluationInfo") == Some(true) {
                c.fail(
                    "evaluationInfo.segmentation",
                    "segment evaluation is not supported yet; export the memberships already \
                     in the profile store by leaving it false or absent",
                );
            }
        }

        // Judged on what was sent, so that an invalid entry is not also reported as missing.
        let segments_sent = Checker::get(root, "filter")
            .and_then(|f| f.get("segments"))
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        if segment_per_batch && !segments_sent {
            c.fail(
                "destination.segmentPerBatch",
                "true needs at least one entry in filter.segments (one batch is written per entry)",
            );
        }

        let dataset_id = match dataset_id {
            Some(id) => id,
            None => return Err(c.errors),
        };
        c.errors.into_result(Self {
            dataset_id,
            segment_per_batch,
            fields,
            filter,
            additional_fields,
            merge_policy,
            ignored_keys,
        })
    }

    /// What the job should say at creation about the request: the keys it accepted and ignored.
    pub fn warnings(&self) -> Vec<JobWarning> {
        self.ignored_keys
            .iter()
            .map(|path| JobWarning {
                code: crate::codes::WarningCode::IgnoredField.as_str().to_owned(),
                msg: format!(
                    "{path} is accepted for compatibility with AEP but has no effect: the \
                     server sets it"
                ),
            })
            .collect()
    }

    /// The dataset and merge policy a body refers to, read leniently, so that the catalog can
    /// check them even when other fields are invalid (one answer names every problem).
    pub fn references(body: &Value) -> (Option<DatasetId>, Option<(String, Option<i64>)>) {
        let destination = body.get("destination");
        let dataset = ["datasetId", "dataSetId"]
            .iter()
            .find_map(|k| destination.and_then(|d| d.get(*k)).and_then(Value::as_str))
            .and_then(|s| DatasetId::parse(s).ok());
        let policy = body.get("mergePolicy").and_then(|p| {
            let id = p.get("id").and_then(Value::as_str).filter(|s| !s.trim().is_empty())?;
            let version =
                p.get("version").and_then(crate::validate::whole_number).filter(|v| *v >= 1);
            Some((id.to_owned(), version))
        });
        (dataset, policy)
    }

    /// How many destination batches the job needs.
    pub fn batch_count(&self) -> usize {
        match (&self.filter.segments, self.segment_per_batch) {
            (Some(segments), true) => segments.len(),
            _ => 1,
        }
    }

    /// Completes the request into the stored spec, once the catalog has resolved the policy and
    /// allocated `batch_ids` (exactly [`Self::batch_count`] of them).
    pub fn into_spec(
        self,
        merge_policy: MergePolicyRef,
        mut batch_ids: Vec<BatchId>,
        profile_instance_id: String,
    ) -> ExportJobSpec {
        let destination = match (&self.filter.segments, self.segment_per_batch) {
            (Some(segments), true) => Destination {
                dataset_id: self.dataset_id,
                segment_per_batch: true,
                batch_id: None,
                batches: Some(
                    segments
                        .iter()
                        .zip(batch_ids)
                        .map(|(s, batch_id)| DestinationBatch {
                            segment_id: s.segment_id.clone(),
                            segment_ns: s.segment_ns.clone(),
                            status: s.status.clone(),
                            batch_id,
                        })
                        .collect(),
                ),
            },
            _ => Destination {
                dataset_id: self.dataset_id,
                segment_per_batch: false,
                batch_id: batch_ids.pop(),
                batches: None,
            },
        };
        ExportJobSpec {
            destination,
            fields: self.fields,
            schema: SchemaName { name: PROFILE_SCHEMA_NAME.to_owned() },
            filter: self.filter,
            additional_fields: self.additional_fields,
            merge_policy,
            profile_instance_id,
        }
    }
}

fn parse_destination_dataset(c: &mut Checker, destination: &Object) -> Option<DatasetId> {
    let canonical = c.parsed(destination, "datasetId", "destination", DatasetId::parse);
    let alias = c.parsed(destination, "dataSetId", "destination", DatasetId::parse);
    let given = |key| Checker::get(destination, key).is_some();
    match (canonical, alias) {
        (Some(a), Some(b)) if a != b => {
            c.fail("destination.dataSetId", "differs from destination.datasetId; send only one");
            None
        }
        (Some(id), _) | (None, Some(id)) => Some(id),
        (None, None) => {
            if !given("datasetId") && !given("dataSetId") {
                c.fail("destination.datasetId", "is required");
            }
            None
        }
    }
}

fn parse_filter(c: &mut Checker, root: &Object) -> JobFilter {
    let mut filter = JobFilter {
        segments: None,
        segment_qualification_time: None,
        from_ingest_timestamp: None,
        empty_profiles: false,
    };
    let Some(obj) = c.object(root, "filter", "") else { return filter };

    if let Some(entries) = c.array(obj, "segments", "filter") {
        if entries.is_empty() {
            c.fail(
                "filter.segments",
                "must hold at least one entry; leave it out to export profiles of every segment",
            );
        } else if entries.len() > MAX_SEGMENTS {
            c.fail(
                "filter.segments",
                format!("holds {} entries; at most {MAX_SEGMENTS} are allowed", entries.len()),
            );
        } else {
            let parsed: Vec<_> = entries
                .iter()
                .enumerate()
                .filter_map(|(i, entry)| parse_segment(c, entry, &format!("filter.segments[{i}]")))
                .collect();
            if parsed.len() == entries.len() {
                filter.segments = Some(parsed);
            }
        }
    }

    if let Some(window) = c.object(obj, "segmentQualificationTime", "filter") {
        let path = "filter.segmentQualificationTime";
        let start_time = c.parsed(window, "startTime", path, Rfc3339::parse);
        let end_time = c.parsed(window, "endTime", path, Rfc3339::parse);
        if let (Some(s), Some(e)) = (&start_time, &end_time) {
            if s.epoch_ms() > e.epoch_ms() {
                c.fail(join(path, "endTime"), "must not be before startTime");
            }
        }
        if Checker::get(obj, "segments").is_none() {
            c.fail(path, "needs filter.segments: the window applies to segment qualifications");
        }
        filter.segment_qualification_time = Some(QualificationWindow { start_time, end_time });
    }

    filter.from_ingest_timestamp = c.parsed(obj, "fromIngestTimestamp", "filter", Rfc3339::parse);
    filter.empty_profiles = c.bool(obj, "emptyProfiles", "filter").unwrap_or(false);
    filter
}

fn parse_segment(c: &mut Checker, entry: &Value, path: &str) -> Option<SegmentFilter> {
    let Value::Object(obj) = entry else {
        c.fail(path, "must be an object with a segmentId");
        return None;
    };
    let segment_id = c.required_string(obj, "segmentId", path).map(str::to_owned);
    let segment_ns = match c.string(obj, "segmentNs", path) {
        None => Some(DEFAULT_SEGMENT_NS.to_owned()),
        Some(ns) if ns.trim().is_empty() => {
            c.fail(join(path, "segmentNs"), "must not be empty; leave it out for \"ups\"");
            None
        }
        Some(ns) => Some(ns.to_owned()),
    };
    for (key, value) in [("segmentId", &segment_id), ("segmentNs", &segment_ns)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_ID_LEN) {
            c.fail(join(path, key), format!("is longer than {MAX_ID_LEN} characters"));
        }
    }
    let status = match c.array(obj, "status", path) {
        None if Checker::get(obj, "status").is_some() => None,
        None => Some(SegmentStatus::DEFAULT.to_vec()),
        Some([]) => {
            c.fail(join(path, "status"), "must hold at least one of realized, existing, exited");
            None
        }
        Some(values) => {
            let mut statuses = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                let field = format!("{path}.status[{i}]");
                match v.as_str().map(SegmentStatus::from_str) {
                    Some(Ok(s)) => statuses.push(s),
                    Some(Err(message)) => c.fail(field, message),
                    None => c.fail(field, "must be one of the strings realized, existing, exited"),
                }
            }
            (statuses.len() == values.len()).then_some(statuses)
        }
    };
    Some(SegmentFilter { segment_id: segment_id?, segment_ns: segment_ns?, status: status? })
}

fn parse_additional_fields(c: &mut Checker, root: &Object) -> Option<AdditionalFields> {
    let obj = c.object(root, "additionalFields", "")?;
    let event_list = c.object(obj, "eventList", "additionalFields").map(|list| {
        let path = "additionalFields.eventList";
        let fields = c.parsed(list, "fields", path, FieldList::parse);
        let filter = c.object(list, "filter", path).map(|f| {
            let path = "additionalFields.eventList.filter";
            let from = c.parsed(f, "fromIngestTimestamp", path, Rfc3339::parse);
            let to = c.parsed(f, "toIngestTimestamp", path, Rfc3339::parse);
            if let (Some(from), Some(to)) = (&from, &to) {
                if from.epoch_ms() >= to.epoch_ms() {
                    c.fail(
                        join(path, "toIngestTimestamp"),
                        "must be after fromIngestTimestamp (both bounds are exclusive)",
                    );
                }
            }
            EventFilter { from_ingest_timestamp: from, to_ingest_timestamp: to }
        });
        EventList { fields, filter }
    });
    Some(AdditionalFields { event_list })
}

fn parse_merge_policy(c: &mut Checker, root: &Object) -> Option<(String, Option<i64>)> {
    let obj = c.object(root, "mergePolicy", "")?;
    let id = c.required_string(obj, "id", "mergePolicy");
    let version = c.positive_int(obj, "version", "mergePolicy");
    Some((id?.to_owned(), version))
}
