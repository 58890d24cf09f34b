//! What an export evaluates: its filters, fields and merge policy, free of wire types.

use segport_store::schema::UnionSchema;

/// How fragments of one profile combine (docs/api.md, Merge policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precedence {
    /// Per leaf field, the non-null value of the most recently ingested fragment.
    TimestampOrdered,
    /// Per leaf field, the first dataset of the list that has one, most recent within it;
    /// datasets not listed are ignored for everything.
    DatasetOrder(Vec<String>),
}

impl Precedence {
    /// The precedence of merge policy `policy`.
    pub fn of(policy: &segport_model::merge_policy::MergePolicy) -> Self {
        use segport_model::merge_policy::AttributeMergeType;
        match policy.attribute_merge.kind {
            AttributeMergeType::TimestampOrdered => Precedence::TimestampOrdered,
            AttributeMergeType::DataSetPrecedence => Precedence::DatasetOrder(
                policy.attribute_merge.order.iter().flatten().map(|d| d.to_string()).collect(),
            ),
        }
    }
}

/// One `filter.segments[]` entry, with the qualification window (both bounds inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMatch {
    pub segment_id: String,
    /// Compared case-insensitively; kept lower-case.
    pub ns: String,
    pub statuses: Vec<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// `additionalFields.eventList`: events ingested strictly inside the window, projected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWindow {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Dotted paths; empty means every event field.
    pub fields: Vec<Vec<String>>,
}

/// An export job as the engine evaluates it.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// `None`: every profile; otherwise a profile must match at least one entry.
    pub segments: Option<Vec<SegmentMatch>>,
    /// The merged update time must be strictly later.
    pub from_ingest_ms: Option<i64>,
    pub empty_profiles: bool,
    /// Dotted paths; empty means every field.
    pub fields: Vec<Vec<String>>,
    pub events: Option<EventWindow>,
    /// One output batch per segment entry instead of one for all.
    pub per_segment: bool,
    pub precedence: Precedence,
    pub profile_schema: UnionSchema,
    pub event_schema: UnionSchema,
}

impl ExportPlan {
    /// How many output batches the plan writes.
    pub fn batch_count(&self) -> usize {
        match (&self.segments, self.per_segment) {
            (Some(s), true) => s.len(),
            _ => 1,
        }
    }

    /// Whether events must be read at all.
    pub fn needs_events(&self) -> bool {
        self.events.is_some() || self.empty_profiles
    }
}
