//! Create-job bodies (`segport_model::job::ExportJobRequest::parse`).
//!
//! Every input is used twice: as JSON text (`serde_json::from_slice`, skipped when it is not
//! JSON), and as the raw material of a structure-aware body built with `arbitrary`: an object
//! with `destination`, `schema`, `fields`, `filter`, `segments`, times, `additionalFields`,
//! `mergePolicy` and `evaluationInfo`, each absent, null, well-typed (with values drawn from
//! valid and near-valid examples or made up) or of a wrong type, so that the fuzzer reaches the
//! validation rules instead of stopping at JSON syntax.
//!
//! Never panics, and:
//! - a refusal names at least one field, each with a message;
//! - an accepted request completes into a spec whose batches match `batch_count`, the spec
//!   round-trips through its JSON (the catalog's storage) and through the job object's JSON
//!   (`ExportJob`), and posting the spec's echo again gives the same request (with the
//!   resolved merge policy);
//! - `ExportJobRequest::references` finds the same dataset and merge policy as `parse`.

#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use segport_model::ids::BatchId;
use segport_model::job::{
    ExportJob, ExportJobRecord, ExportJobRequest, ExportJobSpec, MergePolicyRef,
};
use serde_json::{json, Map, Number, Value};

// ---------------------------------------------------------------------------------------------
// The properties.

fn check(body: &Value) {
    let (dataset_ref, policy_ref) = ExportJobRequest::references(body);
    let request = match ExportJobRequest::parse(body) {
        Ok(request) => request,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names at least one field");
            for e in &errors.0 {
                assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            return;
        }
    };
    assert_eq!(dataset_ref.as_ref(), Some(&request.dataset_id), "references() finds the dataset");
    assert_eq!(policy_ref, request.merge_policy, "references() finds the merge policy");

    let count = request.batch_count();
    assert!(count >= 1);
    if request.segment_per_batch {
        let segments = request.filter.segments.as_ref().expect("segmentPerBatch needs segments");
        assert_eq!(count, segments.len());
    }
    let batch_ids: Vec<BatchId> =
        (0..count).map(|i| BatchId::parse(&format!("{i:032x}")).expect("a batch id")).collect();
    let policy = match &request.merge_policy {
        Some((id, version)) => MergePolicyRef { id: id.clone(), version: version.unwrap_or(1) },
        None => MergePolicyRef { id: "default-mp".into(), version: 1 },
    };
    let spec = request.clone().into_spec(policy.clone(), batch_ids.clone(), "ups".into());
    assert_eq!(spec.destination.batch_ids().into_iter().cloned().collect::<Vec<_>>(), batch_ids);

    // The spec as the catalog stores it.
    let text = serde_json::to_string(&spec).expect("a spec serialises");
    let back: ExportJobSpec = serde_json::from_str(&text).expect("a stored spec deserialises");
    assert_eq!(back, spec);

    // The job object clients see.
    let record = ExportJobRecord::created(
        1,
        "org@AdobeOrg".into(),
        "prod".into(),
        spec.clone(),
        None,
        "r".into(),
        1,
    );
    let wire = record.to_wire();
    let text = serde_json::to_string(&wire).expect("a job serialises");
    let back: ExportJob = serde_json::from_str(&text).expect("a job object deserialises");
    assert_eq!(back, wire);

    // The echo posted again is the same request, with the merge policy it resolved to.
    let echo = serde_json::to_value(&spec).expect("a spec serialises");
    let again = match ExportJobRequest::parse(&echo) {
        Ok(again) => again,
        Err(e) => panic!("the echo of an accepted request is refused: {e}\necho: {echo}"),
    };
    let mut expected = request;
    expected.merge_policy = Some((policy.id, Some(policy.version)));
    assert_eq!(again, expected, "echo: {echo}");
}

// ---------------------------------------------------------------------------------------------
// Structure-aware bodies.

/// A field of the body: absent, `null`, well-typed (most often, so that whole requests pass
/// validation often enough to reach the properties of accepted ones), or any other JSON value.
#[derive(Debug, Arbitrary)]
enum Slot<T> {
    Absent,
    Null,
    Valid(T),
    Valid2(T),
    Valid3(T),
    Valid4(T),
    Valid5(T),
    Other(AnyJson),
}

/// Any JSON value, small.
#[derive(Debug)]
struct AnyJson(Value);

impl<'a> Arbitrary<'a> for AnyJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        any_value(u, 3).map(AnyJson)
    }
}

fn any_value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let choice = if depth == 0 { u.int_in_range(0..=5)? } else { u.int_in_range(0..=7)? };
    Ok(match choice {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::from(u.arbitrary::<u64>()?),
        5 => Value::String(Text::arbitrary(u)?.0),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| any_value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(Text::arbitrary(u)?.0, any_value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// A string: one of `examples`, or made up.
fn text_from(u: &mut Unstructured<'_>, examples: &[&str]) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(examples)?).to_owned())
    } else {
        Ok(u.arbitrary::<String>()?)
    }
}

/// Any string, often one that means something somewhere in a request.
#[derive(Debug)]
struct Text(String);

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const WORDS: &[&str] = &[
            "",
            " ",
            "destination",
            "datasetId",
            "dataSetId",
            "segmentPerBatch",
            "schema",
            "name",
            "fields",
            "filter",
            "segments",
            "segmentId",
            "segmentNs",
            "status",
            "realized",
            "existing",
            "exited",
            "segmentQualificationTime",
            "startTime",
            "endTime",
            "fromIngestTimestamp",
            "toIngestTimestamp",
            "emptyProfiles",
            "additionalFields",
            "eventList",
            "mergePolicy",
            "id",
            "version",
            "evaluationInfo",
            "segmentation",
            "_xdm.context.profile",
            "5b7c86968f7b6501e21ba9df",
            "2018-01-01T00:00:00Z",
        ];
        text_from(u, WORDS).map(Text)
    }
}

#[derive(Debug)]
struct DatasetText(String);

impl<'a> Arbitrary<'a> for DatasetText {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 3)? {
            // Made of hex digits, of about the right length.
            let len = u.int_in_range(22..=26)?;
            let digits = b"0123456789abcdefABCDEF";
            let s =
                (0..len).map(|_| u.choose(digits).map(|b| *b as char)).collect::<Result<_>>()?;
            return Ok(DatasetText(s));
        }
        text_from(
            u,
            &[
                "5b7c86968f7b6501e21ba9df",
                "000000000000000000000000",
                "ffffffffffffffffffffffff",
                "5B7C86968F7B6501E21BA9DF",
                "5b7c86968f7b6501e21ba9d",
                "5b7c86968f7b6501e21ba9dff",
                "",
            ],
        )
        .map(DatasetText)
    }
}

#[derive(Debug)]
struct TimeText(String);

impl<'a> Arbitrary<'a> for TimeText {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 2)? {
            // Each part in or just out of its range.
            let year = u.int_in_range(0..=9999u32)?;
            let month = u.int_in_range(0..=13u32)?;
            let day = u.int_in_range(0..=32u32)?;
            let hour = u.int_in_range(0..=24u32)?;
            let minute = u.int_in_range(0..=60u32)?;
            let second = u.int_in_range(0..=61u32)?;
            let sep = *u.choose(&["T", "t", " ", "_"])?;
            let frac = match u.int_in_range(0..=3u8)? {
                0 => String::new(),
                1 => format!(".{}", u.int_in_range(0..=999u32)?),
                2 => format!(".{:09}", u.int_in_range(0..=999_999_999u32)?),
                _ => format!(".{}", "9".repeat(u.int_in_range(1..=30usize)?)),
            };
            let offset = match u.int_in_range(0..=3u8)? {
                0 => "Z".to_owned(),
                1 => "z".to_owned(),
                2 => format!(
                    "{}{:02}:{:02}",
                    u.choose(&["+", "-"])?,
                    u.int_in_range(0..=24u32)?,
                    u.int_in_range(0..=60u32)?
                ),
                _ => String::new(),
            };
            return Ok(TimeText(format!(
                "{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{frac}{offset}"
            )));
        }
        text_from(
            u,
            &[
                "2018-01-01T00:00:00Z",
                "2018-02-01T00:00:00Z",
                "2018-01-01T01:00:00+01:00",
                "2020-01-01T00:00:00Z",
                "2016-12-31T23:59:60Z",
                "0000-01-01T00:00:00+23:59",
                "9999-12-31T23:59:59.999999999-23:59",
                "2018-01-01",
                "yesterday",
                "",
            ],
        )
        .map(TimeText)
    }
}

#[derive(Debug)]
struct FieldsText(String);

impl<'a> Arbitrary<'a> for FieldsText {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 2)? {
            let parts = u.int_in_range(0..=5)?;
            let mut s = String::new();
            for i in 0..parts {
                if i > 0 {
                    s.push_str(u.choose(&[",", ", ", " ,", ",,"])?);
                }
                let segments = u.int_in_range(0..=3)?;
                for j in 0..segments {
                    if j > 0 {
                        s.push('.');
                    }
                    s.push_str(&text_from(
                        u,
                        &[
                            "identities",
                            "id",
                            "personalEmail",
                            "address",
                            "_id",
                            "$x",
                            "a-b",
                            "@c",
                            "xdm:foo",
                            "_repo",
                            "createDate",
                            "a b",
                            "",
                            "é",
                        ],
                    )?);
                }
            }
            return Ok(FieldsText(s));
        }
        text_from(
            u,
            &["", " , ", "identities.id,personalEmail.address", "_id, _experience", "a..b", "a."],
        )
        .map(FieldsText)
    }
}

#[derive(Debug)]
struct SegmentText(String);

impl<'a> Arbitrary<'a> for SegmentText {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 8)? {
            let len = u.int_in_range(250..=260)?;
            return Ok(SegmentText("s".repeat(len)));
        }
        text_from(u, &["52c26d0d-45f2-47a2-ab30-ed06abc981ff", "a", "ups", "AAM", "", " "])
            .map(SegmentText)
    }
}

#[derive(Debug)]
struct StatusText(String);

impl<'a> Arbitrary<'a> for StatusText {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        text_from(u, &["realized", "existing", "exited", "Realized", "maybe", ""]).map(StatusText)
    }
}

#[derive(Debug)]
struct SchemaText(String);

impl<'a> Arbitrary<'a> for SchemaText {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        text_from(
            u,
            &[
                "_xdm.context.profile",
                "https://ns.adobe.com/xdm/context/profile__union",
                "_xdm.context.profile ",
                "",
            ],
        )
        .map(SchemaText)
    }
}

/// A JSON number for `mergePolicy.version`.
#[derive(Debug, Arbitrary)]
enum VersionNumber {
    Small(u8),
    Int(i64),
    Big(u64),
    Float(f64),
}

#[derive(Debug, Arbitrary)]
struct Destination {
    dataset_id: Slot<DatasetText>,
    data_set_id: Slot<DatasetText>,
    segment_per_batch: Slot<bool>,
    extra: Option<(Text, AnyJson)>,
}

#[derive(Debug, Arbitrary)]
struct Schema {
    name: Slot<SchemaText>,
}

#[derive(Debug, Arbitrary)]
struct Segment {
    segment_id: Slot<SegmentText>,
    segment_ns: Slot<SegmentText>,
    status: Slot<Vec<Slot<StatusText>>>,
}

#[derive(Debug, Arbitrary)]
enum Segments {
    Few(Vec<Slot<Segment>>),
    /// Around the 1000-entry limit.
    Many {
        count: u16,
        entry: Segment,
    },
}

#[derive(Debug, Arbitrary)]
struct Window {
    start_time: Slot<TimeText>,
    end_time: Slot<TimeText>,
}

#[derive(Debug, Arbitrary)]
struct Filter {
    segments: Slot<Segments>,
    segment_qualification_time: Slot<Window>,
    from_ingest_timestamp: Slot<TimeText>,
    empty_profiles: Slot<bool>,
}

#[derive(Debug, Arbitrary)]
struct EventFilter {
    from_ingest_timestamp: Slot<TimeText>,
    to_ingest_timestamp: Slot<TimeText>,
}

#[derive(Debug, Arbitrary)]
struct EventList {
    fields: Slot<FieldsText>,
    filter: Slot<EventFilter>,
}

#[derive(Debug, Arbitrary)]
struct AdditionalFields {
    event_list: Slot<EventList>,
}

#[derive(Debug, Arbitrary)]
struct MergePolicy {
    id: Slot<Text>,
    version: Slot<VersionNumber>,
}

#[derive(Debug, Arbitrary)]
struct EvaluationInfo {
    segmentation: Slot<bool>,
}

#[derive(Debug, Arbitrary)]
struct Job {
    destination: Slot<Destination>,
    schema: Slot<Schema>,
    fields: Slot<FieldsText>,
    filter: Slot<Filter>,
    additional_fields: Slot<AdditionalFields>,
    merge_policy: Slot<MergePolicy>,
    evaluation_info: Slot<EvaluationInfo>,
    extra: Option<(Text, AnyJson)>,
}

trait ToJson {
    fn to_json(&self) -> Value;
}

impl<T: ToJson> Slot<T> {
    fn put(&self, obj: &mut Map<String, Value>, key: &str) {
        match self {
            Slot::Absent => {}
            Slot::Null => {
                obj.insert(key.into(), Value::Null);
            }
            Slot::Valid(v)
            | Slot::Valid2(v)
            | Slot::Valid3(v)
            | Slot::Valid4(v)
            | Slot::Valid5(v) => {
                obj.insert(key.into(), v.to_json());
            }
            Slot::Other(v) => {
                obj.insert(key.into(), v.0.clone());
            }
        }
    }

    fn item(&self) -> Option<Value> {
        match self {
            Slot::Absent => None,
            Slot::Null => Some(Value::Null),
            Slot::Valid(v)
            | Slot::Valid2(v)
            | Slot::Valid3(v)
            | Slot::Valid4(v)
            | Slot::Valid5(v) => Some(v.to_json()),
            Slot::Other(v) => Some(v.0.clone()),
        }
    }
}

fn object(build: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut map = Map::new();
    build(&mut map);
    Value::Object(map)
}

fn put_extra(obj: &mut Map<String, Value>, extra: &Option<(Text, AnyJson)>) {
    if let Some((key, value)) = extra {
        obj.insert(key.0.clone(), value.0.clone());
    }
}

macro_rules! string_json {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn to_json(&self) -> Value {
                Value::String(self.0.clone())
            }
        }
    )*};
}
string_json!(Text, DatasetText, TimeText, FieldsText, SegmentText, StatusText, SchemaText);

impl ToJson for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToJson for VersionNumber {
    fn to_json(&self) -> Value {
        match self {
            VersionNumber::Small(n) => json!(n),
            VersionNumber::Int(n) => json!(n),
            VersionNumber::Big(n) => json!(n),
            VersionNumber::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        }
    }
}

impl<T: ToJson> ToJson for Vec<Slot<T>> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().filter_map(Slot::item).collect())
    }
}

impl ToJson for Destination {
    fn to_json(&self) -> Value {
        object(|o| {
            self.dataset_id.put(o, "datasetId");
            self.data_set_id.put(o, "dataSetId");
            self.segment_per_batch.put(o, "segmentPerBatch");
            put_extra(o, &self.extra);
        })
    }
}

impl ToJson for Schema {
    fn to_json(&self) -> Value {
        object(|o| self.name.put(o, "name"))
    }
}

impl ToJson for Segment {
    fn to_json(&self) -> Value {
        object(|o| {
            self.segment_id.put(o, "segmentId");
            self.segment_ns.put(o, "segmentNs");
            self.status.put(o, "status");
        })
    }
}

impl ToJson for Segments {
    fn to_json(&self) -> Value {
        match self {
            Segments::Few(entries) => entries.to_json(),
            Segments::Many { count, entry } => {
                let n = 990 + usize::from(*count % 20);
                let entry = entry.to_json();
                Value::Array(vec![entry; n])
            }
        }
    }
}

impl ToJson for Window {
    fn to_json(&self) -> Value {
        object(|o| {
            self.start_time.put(o, "startTime");
            self.end_time.put(o, "endTime");
        })
    }
}

impl ToJson for Filter {
    fn to_json(&self) -> Value {
        object(|o| {
            self.segments.put(o, "segments");
            self.segment_qualification_time.put(o, "segmentQualificationTime");
            self.from_ingest_timestamp.put(o, "fromIngestTimestamp");
            self.empty_profiles.put(o, "emptyProfiles");
        })
    }
}

impl ToJson for EventFilter {
    fn to_json(&self) -> Value {
        object(|o| {
            self.from_ingest_timestamp.put(o, "fromIngestTimestamp");
            self.to_ingest_timestamp.put(o, "toIngestTimestamp");
        })
    }
}

impl ToJson for EventList {
    fn to_json(&self) -> Value {
        object(|o| {
            self.fields.put(o, "fields");
            self.filter.put(o, "filter");
        })
    }
}

impl ToJson for AdditionalFields {
    fn to_json(&self) -> Value {
        object(|o| self.event_list.put(o, "eventList"))
    }
}

impl ToJson for MergePolicy {
    fn to_json(&self) -> Value {
        object(|o| {
            self.id.put(o, "id");
            self.version.put(o, "version");
        })
    }
}

impl ToJson for EvaluationInfo {
    fn to_json(&self) -> Value {
        object(|o| self.segmentation.put(o, "segmentation"))
    }
}

impl ToJson for Job {
    fn to_json(&self) -> Value {
        object(|o| {
            self.destination.put(o, "destination");
            self.schema.put(o, "schema");
            self.fields.put(o, "fields");
            self.filter.put(o, "filter");
            self.additional_fields.put(o, "additionalFields");
            self.merge_policy.put(o, "mergePolicy");
            self.evaluation_info.put(o, "evaluationInfo");
            put_extra(o, &self.extra);
        })
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<Value>(data) {
        check(&body);
    }
    if let Ok(job) = Job::arbitrary_take_rest(Unstructured::new(data)) {
        check(&job.to_json());
    }
});
