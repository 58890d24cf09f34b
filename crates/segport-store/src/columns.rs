//! The Arrow shape of store files: fixed columns (key, ordinal, identities, memberships) with
//! dictionary-encoded strings so that filters compare integers, then the attribute columns typed
//! by the union schema.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, ListArray, RecordBatch, RecordBatchOptions,
    StringArray, StructArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema, SchemaRef};
use serde_json::{Map, Value};

use crate::schema::{timestamp_type, UnionSchema, UTC};
use crate::xdm::Normalized;
use crate::{RecordKind, Result, StoreError};

/// The profile key, `namespace:id` of the primary identity; files are sorted by it.
pub const KEY: &str = "__key";
/// The record's position in its batch's input: the tie-breaker among one batch's fragments.
pub const ORD: &str = "__ord";
/// Identities: list of `{namespace, id, primary, authenticatedState}`.
pub const IDENTITIES: &str = "__identities";
/// Segment memberships: list of `{ns, segmentId, status, lastQualificationTime, version,
/// validUntil}` (profiles only).
pub const SEGMENTS: &str = "__segments";
/// Present in compacted files only: the ingest time and commit sequence of each row's batch,
/// which fresh files take from the manifest.
pub const INGEST_MS: &str = "__ingest_ms";
pub const SEQ: &str = "__seq";

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

pub fn identity_fields() -> Fields {
    Fields::from(vec![
        Field::new("namespace", dict(), false),
        Field::new("id", DataType::Utf8, false),
        Field::new("primary", DataType::Boolean, false),
        Field::new("authenticatedState", dict(), true),
    ])
}

pub fn membership_fields() -> Fields {
    Fields::from(vec![
        Field::new("ns", dict(), false),
        Field::new("segmentId", dict(), false),
        Field::new("status", dict(), false),
        Field::new("lastQualificationTime", timestamp_type(), true),
        Field::new("version", DataType::Utf8, true),
        Field::new("validUntil", timestamp_type(), true),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), false)))
}

/// The fixed leading fields of a file of `kind`.
pub fn fixed_fields(kind: RecordKind) -> Vec<Field> {
    let mut fields = vec![
        Field::new(KEY, DataType::Utf8, false),
        Field::new(ORD, DataType::UInt64, false),
        Field::new(IDENTITIES, list_of(identity_fields()), false),
    ];
    if kind == RecordKind::Profile {
        fields.push(Field::new(SEGMENTS, list_of(membership_fields()), false));
    }
    fields
}

/// The full schema of a file of `kind` whose attributes follow `attributes`.
pub fn file_schema(kind: RecordKind, attributes: &UnionSchema) -> SchemaRef {
    let mut fields = fixed_fields(kind);
    fields.extend(attributes.arrow_fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

/// A record with its position in the batch's input.
pub struct Prepared {
    pub ord: u64,
    pub record: Normalized,
}

/// Builds one record batch from prepared records. `attributes` must hold every attribute field
/// of every record (the ingest absorbed them all before); the batch has the top-level ones the
/// records have, so a few records cost what their own fields cost, whatever the union's width.
pub fn build_batch(
    kind: RecordKind,
    records: &[Prepared],
    attributes: &UnionSchema,
) -> Result<RecordBatch> {
    let present: std::collections::BTreeSet<&str> =
        records.iter().flat_map(|p| p.record.attributes.keys().map(String::as_str)).collect();
    let attributes = &attributes.only(present);
    let schema = file_schema(kind, attributes);
    let keys = StringArray::from_iter_values(records.iter().map(|p| p.record.key.as_str()));
    let ords = UInt64Array::from_iter_values(records.iter().map(|p| p.ord));
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(keys), Arc::new(ords), Arc::new(identities_column(records)?)];
    if kind == RecordKind::Profile {
        columns.push(Arc::new(memberships_column(records)?));
    }
    columns.extend(attribute_columns(records, attributes)?);
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(records.len())),
    )
    .map_err(StoreError::arrow("assembling a record batch"))
}

fn offsets<T>(records: &[Prepared], items: impl Fn(&Normalized) -> &[T]) -> OffsetBuffer<i32> {
    OffsetBuffer::from_lengths(records.iter().map(|p| items(&p.record).len()))
}

fn identities_column(records: &[Prepared]) -> Result<ListArray> {
    let all = || records.iter().flat_map(|p| p.record.identities.iter());
    let namespace: DictionaryArray<Int32Type> = all().map(|i| i.namespace.as_str()).collect();
    let id = StringArray::from_iter_values(all().map(|i| i.id.as_str()));
    let primary: BooleanArray = all().map(|i| Some(i.primary)).collect();
    let auth: DictionaryArray<Int32Type> =
        all().map(|i| i.authenticated_state.as_deref()).collect();
    let values = StructArray::try_new(
        identity_fields(),
        vec![Arc::new(namespace), Arc::new(id), Arc::new(primary), Arc::new(auth)],
        None,
    )
    .map_err(StoreError::arrow("building identities"))?;
    list(values, offsets(records, |r| &r.identities))
}

fn memberships_column(records: &[Prepared]) -> Result<ListArray> {
    let all = || records.iter().flat_map(|p| p.record.memberships.iter());
    let ns: DictionaryArray<Int32Type> = all().map(|m| m.ns.as_str()).collect();
    let segment: DictionaryArray<Int32Type> = all().map(|m| m.segment_id.as_str()).collect();
    let status: DictionaryArray<Int32Type> = all().map(|m| m.status.as_str()).collect();
    let lqt = TimestampMillisecondArray::from_iter(all().map(|m| m.last_qualification_ms))
        .with_timezone(UTC);
    let version = StringArray::from_iter(all().map(|m| m.version.as_deref()));
    let until =
        TimestampMillisecondArray::from_iter(all().map(|m| m.valid_until_ms)).with_timezone(UTC);
    let values = StructArray::try_new(
        membership_fields(),
        vec![
            Arc::new(ns),
            Arc::new(segment),
            Arc::new(status),
            Arc::new(lqt),
            Arc::new(version),
            Arc::new(until),
        ],
        None,
    )
    .map_err(StoreError::arrow("building segment memberships"))?;
    list(values, offsets(records, |r| &r.memberships))
}

fn list(values: StructArray, offsets: OffsetBuffer<i32>) -> Result<ListArray> {
    let field = Arc::new(Field::new("item", values.data_type().clone(), false));
    ListArray::try_new(field, offsets, Arc::new(values), None)
        .map_err(StoreError::arrow("building a list column"))
}

/// The attribute columns, decoded from the records' JSON by arrow-json against the schema.
fn attribute_columns(records: &[Prepared], attributes: &UnionSchema) -> Result<Vec<ArrayRef>> {
    let fields = attributes.arrow_fields();
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = arrow::json::ReaderBuilder::new(schema)
        .with_batch_size(records.len().max(1))
        .build_decoder()
        .map_err(StoreError::arrow("preparing the attribute decoder"))?;
    let rows: Vec<&Map<String, Value>> = records.iter().map(|p| &p.record.attributes).collect();
    decoder.serialize(&rows).map_err(StoreError::arrow("decoding attributes"))?;
    let batch = decoder.flush().map_err(StoreError::arrow("decoding attributes"))?;
    match batch {
        Some(b) => Ok(b.columns().to_vec()),
        None => Err(StoreError::Schema("attribute decoder produced no rows".into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::xdm::normalize;

    #[test]
    fn builds_typed_columns() {
        let mut schema = UnionSchema::default();
        let records: Vec<Prepared> = [
            json!({"identityMap": {"ECID": [{"id": "1", "primary": true}], "Email": [{"id": "a@b"}]}, "loyalty": {"points": 5}, "segmentMembership": {"ups": {"s": {"status": "realized", "lastQualificationTime": "2025-01-01T00:00:00Z"}}}}),
            json!({"identityMap": {"ECID": [{"id": "2"}]}, "loyalty": {"points": 2.5, "tier": "gold"}}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let record = normalize(v, RecordKind::Profile).unwrap();
            schema.absorb(&record.attributes).unwrap();
            Prepared { ord: i as u64, record }
        })
        .collect();
        let batch = build_batch(RecordKind::Profile, &records, &schema).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let loyalty = batch.column_by_name("loyalty").unwrap();
        assert!(matches!(loyalty.data_type(), DataType::Struct(f) if f.len() == 2));
        let ids =
            batch.column_by_name(IDENTITIES).unwrap().as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(ids.value_length(0), 2);
        assert_eq!(ids.value_length(1), 1);
    }
}
