//! The plan of an export job as the catalog holds it: its stored spec and the merge policy it
//! was created with, against the union schemas of the snapshot it reads. Shared by the worker,
//! which runs jobs, and the api's preview, which runs a job body without creating it.

use segport_model::job::ExportJobSpec;
use segport_model::merge_policy::MergePolicy;
use segport_store::schema::UnionSchema;

use crate::plan::{EventWindow, ExportPlan, Precedence, SegmentMatch};

/// The engine's plan of job `spec` under merge policy `policy`.
pub fn export_plan(
    spec: &ExportJobSpec,
    policy: &MergePolicy,
    profile_schema: UnionSchema,
    event_schema: UnionSchema,
) -> ExportPlan {
    let window = spec.filter.segment_qualification_time.as_ref();
    let segments = spec.filter.segments.as_ref().map(|list| {
        list.iter()
            .map(|s| SegmentMatch {
                segment_id: s.segment_id.clone(),
                ns: s.segment_ns.to_lowercase(),
                statuses: s.status.iter().map(|st| st.as_str().to_owned()).collect(),
                from_ms: window.and_then(|w| w.start_time.as_ref()).map(|t| t.epoch_ms()),
                to_ms: window.and_then(|w| w.end_time.as_ref()).map(|t| t.epoch_ms()),
            })
            .collect()
    });
    let paths = |list: &segport_model::fields::FieldList| -> Vec<Vec<String>> {
        list.paths().iter().map(|p| p.segments().to_vec()).collect()
    };
    let events = spec.additional_fields.as_ref().and_then(|a| a.event_list.as_ref()).map(|e| {
        let filter = e.filter.as_ref();
        EventWindow {
            from_ms: filter.and_then(|f| f.from_ingest_timestamp.as_ref()).map(|t| t.epoch_ms()),
            to_ms: filter.and_then(|f| f.to_ingest_timestamp.as_ref()).map(|t| t.epoch_ms()),
            fields: e.fields.as_ref().map(paths).unwrap_or_default(),
        }
    });
    ExportPlan {
        segments,
        from_ingest_ms: spec.filter.from_ingest_timestamp.as_ref().map(|t| t.epoch_ms()),
        empty_profiles: spec.filter.empty_profiles,
        fields: paths(&spec.fields),
        events,
        per_segment: spec.destination.segment_per_batch,
        precedence: Precedence::of(policy),
        profile_schema,
        event_schema,
    }
}
