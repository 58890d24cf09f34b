//! The per-sandbox union schema of attribute fields, and its type rules (docs/store.md).
//!
//! Every field's type is inferred from the values seen. Integers widen to floats when a
//! fractional value arrives (no conflict); the XDM date-time fields become timestamps; a field
//! seen only as null takes the type of its first typed value; any other disagreement (a string
//! where a number is known, an object where a list is known) is a conflict that fails the record,
//! reported with the field and both types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of an attribute field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum XType {
    Bool,
    Int,
    Float,
    String,
    /// An XDM date-time: `TIMESTAMP(ms, UTC)`.
    Timestamp,
    Object {
        fields: BTreeMap<String, XType>,
    },
    Array {
        /// `None` while only empty arrays (or nulls inside arrays) have been seen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<Box<XType>>,
    },
}

/// How deeply records may nest objects and arrays, the record itself being the first level. A
/// Parquet file stores its Arrow schema as a flatbuffer, which the reader verifies to a depth
/// of 64 tables, two a level; deeper fields could be written but never read back.
pub const MAX_RECORD_DEPTH: usize = 32;

impl XType {
    /// Drops what nests more than `levels` objects and arrays deep, and objects left without
    /// fields; answers whether anything of `self` is left.
    fn keep_within(&mut self, levels: usize) -> bool {
        match self {
            XType::Object { fields } => {
                levels > 0 && {
                    fields.retain(|_, t| t.keep_within(levels - 1));
                    !fields.is_empty()
                }
            }
            XType::Array { items } => {
                if items.as_mut().is_some_and(|t| levels == 0 || !t.keep_within(levels - 1)) {
                    *items = None;
                }
                levels > 0
            }
            _ => true,
        }
    }

    /// How many named fields this type holds below itself (see [`UnionSchema::field_count`]).
    pub fn field_count(&self) -> usize {
        match self {
            XType::Object { fields } => fields.values().map(|t| 1 + t.field_count()).sum(),
            XType::Array { items } => items.as_deref().map_or(0, XType::field_count),
            _ => 0,
        }
    }
}

impl fmt::Display for XType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XType::Bool => "boolean",
            XType::Int | XType::Float => "number",
            XType::String => "string",
            XType::Timestamp => "date-time",
            XType::Object { .. } => "object",
            XType::Array { .. } => "array",
        })
    }
}

/// The attribute schema of one record kind in one sandbox: top-level fields and their types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnionSchema {
    pub fields: BTreeMap<String, XType>,
}

/// The top-level types a record widens a schema to, from [`UnionSchema::widen`].
#[derive(Debug)]
pub struct Widening {
    merged: Vec<(String, XType)>,
    /// How many fields the schema gains.
    pub added_fields: usize,
}

/// A value that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub field: String,
    pub message: String,
}

/// Leaf names whose values are XDM date-times wherever they appear.
const DATE_TIME_LEAVES: [&str; 3] = ["timestamp", "lastQualificationTime", "validUntil"];
/// Full paths of further XDM date-time fields.
const DATE_TIME_PATHS: [&str; 2] = ["_repo.createDate", "_repo.modifyDate"];

fn is_date_time(path: &str) -> bool {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    DATE_TIME_LEAVES.contains(&leaf) || DATE_TIME_PATHS.contains(&path)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The epoch milliseconds of an RFC 3339 string.
pub fn parse_date_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// Infers the type of `value` at `path`; `Ok(None)` for null. A date-time field that is not an
/// RFC 3339 string, or an array whose elements disagree, is a conflict.
pub fn infer(value: &Value, path: &str) -> Result<Option<XType>, Conflict> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        _ if is_date_time(path) => match value {
            Value::String(s) => match segport_model::time::parse_rfc3339_ms(s) {
                Ok(_) => XType::Timestamp,
                Err(problem) => {
                    return Err(Conflict {
                        field: path.to_owned(),
                        message: format!(
                            "is an XDM date-time and needs an RFC 3339 string such as \
                             2018-01-01T00:00:00Z, not {}: {problem}",
                            short(value)
                        ),
                    })
                }
            },
            other => {
                return Err(Conflict {
                    field: path.to_owned(),
                    message: format!(
                        "is an XDM date-time and needs an RFC 3339 string, not {}",
                        short(other)
                    ),
                })
            }
        },
        Value::Bool(_) => XType::Bool,
        Value::Number(n) if n.is_i64() => XType::Int,
        Value::Number(_) => XType::Float,
        Value::String(_) => XType::String,
        Value::Object(map) => {
            let mut fields = BTreeMap::new();
            for (k, v) in map {
                if let Some(t) = infer(v, &join(path, k))? {
                    fields.insert(k.clone(), t);
                }
            }
            XType::Object { fields }
        }
        Value::Array(items) => {
            let mut item: Option<XType> = None;
            for v in items {
                // Array elements share the array's path: `a.b` names every element of `a.b`.
                if let Some(t) = infer(v, path)? {
                    item = Some(match item {
                        None => t,
                        Some(prev) => unify(&prev, &t, path)?,
                    });
                }
            }
            XType::Array { items: item.map(Box::new) }
        }
    }))
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!("{}…", &text[..text.char_indices().nth(40).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// Whether `value`, found under the key `leaf`, fits `known` as it is: absorbing it would
/// change nothing and conflict with nothing. Allocates nothing, so that the common case of an
/// ingest (records shaped like the ones before) skips [`infer`]. Conservative: a value under a
/// date-time name that the schema holds as a plain string is left to `infer` to judge.
fn fits(value: &Value, known: &XType, leaf: &str) -> bool {
    match (value, known) {
        (Value::Null, _) => true,
        (Value::String(s), XType::Timestamp) => parse_date_time(s).is_some(),
        (Value::String(_), XType::String) => {
            !DATE_TIME_LEAVES.contains(&leaf)
                && !DATE_TIME_PATHS.iter().any(|p| p.rsplit('.').next() == Some(leaf))
        }
        (Value::Bool(_), XType::Bool) => true,
        (Value::Number(n), XType::Int) => n.is_i64(),
        (Value::Number(_), XType::Float) => true,
        (Value::Object(map), XType::Object { fields }) => {
            map.iter().all(|(k, v)| v.is_null() || fields.get(k).is_some_and(|t| fits(v, t, k)))
        }
        (Value::Array(items), XType::Array { items: known }) => {
            items.iter().all(|v| v.is_null() || known.as_deref().is_some_and(|t| fits(v, t, leaf)))
        }
        _ => false,
    }
}

/// The types of a record's top-level attributes (null ones left out).
pub fn infer_record(
    attributes: &serde_json::Map<String, Value>,
) -> Result<Vec<(String, XType)>, Conflict> {
    let mut out = Vec::with_capacity(attributes.len());
    for (k, v) in attributes {
        if let Some(t) = infer(v, k)? {
            out.push((k.clone(), t));
        }
    }
    Ok(out)
}

/// The type that holds both `a` and `b`, or the conflict between them.
pub fn unify(a: &XType, b: &XType, path: &str) -> Result<XType, Conflict> {
    Ok(match (a, b) {
        (x, y) if x == y => x.clone(),
        (XType::Int, XType::Float) | (XType::Float, XType::Int) => XType::Float,
        (XType::Object { fields: fa }, XType::Object { fields: fb }) => {
            let mut fields = fa.clone();
            for (k, tb) in fb {
                let merged = match fa.get(k) {
                    Some(ta) => unify(ta, tb, &join(path, k))?,
                    None => tb.clone(),
                };
                fields.insert(k.clone(), merged);
            }
            XType::Object { fields }
        }
        (XType::Array { items: ia }, XType::Array { items: ib }) => XType::Array {
            items: match (ia, ib) {
                (Some(x), Some(y)) => Some(Box::new(unify(x, y, path)?)),
                (Some(x), None) | (None, Some(x)) => Some(x.clone()),
                (None, None) => None,
            },
        },
        (known, got) => {
            return Err(Conflict {
                field: path.to_owned(),
                message: format!(
                    "is a {got} here but the sandbox schema has it as a {known}: send it as a \
                     {known}, or free the type by deleting the datasets that hold this field (a \
                     field keeps its type while any dataset of the sandbox holds it)"
                ),
            })
        }
    })
}

impl UnionSchema {
    /// Checks one record's attributes against the schema and, when they fit, widens the schema
    /// to hold them. On a conflict the schema is left unchanged.
    pub fn absorb(&mut self, attributes: &serde_json::Map<String, Value>) -> Result<(), Conflict> {
        self.absorb_inferred(infer_record(attributes)?)
    }

    /// Whether a record's attributes fit the schema as it is (absorbing them would change
    /// nothing): such a record needs no [`infer_record`].
    pub fn holds(&self, attributes: &serde_json::Map<String, Value>) -> bool {
        attributes
            .iter()
            .all(|(k, v)| v.is_null() || self.fields.get(k).is_some_and(|t| fits(v, t, k)))
    }

    /// [`Self::absorb`] for a record typed beforehand by [`infer_record`] (which needs no schema,
    /// so records can be typed in parallel and absorbed in order).
    pub fn absorb_inferred(&mut self, types: Vec<(String, XType)>) -> Result<(), Conflict> {
        let widening = self.widen(types)?;
        self.apply(widening);
        Ok(())
    }

    /// What absorbing a record's types would change, without changing anything yet: the caller
    /// can weigh [`Widening::added_fields`] against a limit before it [`Self::apply`]s it.
    pub fn widen(&self, types: Vec<(String, XType)>) -> Result<Widening, Conflict> {
        let mut merged: Vec<(String, XType)> = Vec::new();
        let mut added_fields = 0;
        for (k, t) in types {
            let m = match self.fields.get(&k) {
                Some(known) if *known == t => continue,
                Some(known) => {
                    let m = unify(known, &t, &k)?;
                    // Unifying only ever adds fields.
                    added_fields += m.field_count().saturating_sub(known.field_count());
                    m
                }
                None => {
                    added_fields += 1 + t.field_count();
                    t
                }
            };
            merged.push((k, m));
        }
        Ok(Widening { merged, added_fields })
    }

    /// Applies a [`Widening`] computed by [`Self::widen`] on this schema.
    pub fn apply(&mut self, widening: Widening) {
        self.fields.extend(widening.merged);
    }

    /// Merges another schema in (used when two batches' schemas meet).
    pub fn merge(&mut self, other: &UnionSchema) -> Result<(), Conflict> {
        let mut merged = self.fields.clone();
        for (k, t) in &other.fields {
            let m = match merged.get(k) {
                Some(known) => unify(known, t, k)?,
                None => t.clone(),
            };
            merged.insert(k.clone(), m);
        }
        self.fields = merged;
        Ok(())
    }

    /// Reads a schema as the catalog stores it (its serde JSON form), whatever its depth, and
    /// leaves out what nests deeper than records may ([`MAX_RECORD_DEPTH`]).
    ///
    /// Each level of a record takes two levels of JSON here, so the text is read without
    /// serde_json's recursion limit of 128: a store that took deeper records before the depth
    /// cap existed must not become unreadable. The text comes from the catalog, never from a
    /// client, and the records behind it were parsed under that limit, so its depth is bounded
    /// (about 260 levels). What is deeper than the cap cannot be stored (Arrow's schema
    /// metadata refuses it when read back) and no new record can bring it, so it is dropped:
    /// the sandbox goes on without it.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        de.disable_recursion_limit();
        let mut schema = Self::deserialize(&mut de)?;
        de.end()?;
        // The record is the first level; its attributes start at the second.
        schema.fields.retain(|_, t| t.keep_within(MAX_RECORD_DEPTH - 1));
        Ok(schema)
    }

    /// The part of the schema a file holds: the fields of `columns` (a file's columns; others,
    /// like the store's own, are passed over), each cut to the struct members found there. Files
    /// store only what their records had, so reading or rewriting them need not carry the
    /// whole union.
    pub fn restricted_to(&self, columns: &Fields) -> UnionSchema {
        let fields = columns
            .iter()
            .filter_map(|c| {
                let t = self.fields.get(c.name())?;
                Some((c.name().clone(), restrict(t, c.data_type())))
            })
            .collect();
        UnionSchema { fields }
    }

    /// The schema with only the top-level fields `keep` names.
    pub fn only<'a>(&self, keep: impl IntoIterator<Item = &'a str>) -> UnionSchema {
        let fields = keep
            .into_iter()
            .filter_map(|k| self.fields.get_key_value(k))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        UnionSchema { fields }
    }

    /// How many distinct fields the schema holds: every named field at every level (the
    /// elements of an array share their array's field).
    pub fn field_count(&self) -> usize {
        self.fields.values().map(|t| 1 + t.field_count()).sum()
    }

    /// The dotted paths of its fields, objects before their fields, in name order, at most
    /// `max` of them (suggestions for a job's `fields`).
    pub fn field_paths(&self, max: usize) -> Vec<String> {
        fn walk(prefix: &str, fields: &BTreeMap<String, XType>, max: usize, out: &mut Vec<String>) {
            for (name, t) in fields {
                if out.len() >= max {
                    return;
                }
                let path =
                    if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                out.push(path.clone());
                if let XType::Object { fields } = t {
                    walk(&path, fields, max, out);
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.fields, max, &mut out);
        out
    }

    /// The Arrow fields of the attributes, in name order.
    pub fn arrow_fields(&self) -> Fields {
        self.fields.iter().map(|(k, t)| Arc::new(Field::new(k, arrow_type(t), true))).collect()
    }
}

/// `t` cut to the struct members that `stored` (its column in a file) has.
fn restrict(t: &XType, stored: &DataType) -> XType {
    match (t, stored) {
        (XType::Object { fields }, DataType::Struct(members)) => XType::Object {
            fields: members
                .iter()
                .filter_map(|m| {
                    let t = fields.get(m.name())?;
                    Some((m.name().clone(), restrict(t, m.data_type())))
                })
                .collect(),
        },
        (XType::Array { items: Some(items) }, DataType::List(item)) => {
            XType::Array { items: Some(Box::new(restrict(items, item.data_type()))) }
        }
        _ => t.clone(),
    }
}

/// The Arrow type that stores an [`XType`].
pub fn arrow_type(t: &XType) -> DataType {
    match t {
        XType::Bool => DataType::Boolean,
        XType::Int => DataType::Int64,
        XType::Float => DataType::Float64,
        XType::String => DataType::Utf8,
        XType::Timestamp => timestamp_type(),
        XType::Object { fields } => DataType::Struct(
            fields.iter().map(|(k, t)| Arc::new(Field::new(k, arrow_type(t), true))).collect(),
        ),
        XType::Array { items } => DataType::List(Arc::new(Field::new(
            "item",
            items.as_deref().map_or(DataType::Null, arrow_type),
            true,
        ))),
    }
}

/// The timezone of every stored date-time: UTC, written as an offset because arrow-json can
/// parse offsets without a timezone database.
pub const UTC: &str = "+00:00";

/// `TIMESTAMP(ms, UTC)`, the type of every XDM date-time.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn absorb(schema: &mut UnionSchema, v: Value) -> Result<(), Conflict> {
        schema.absorb(v.as_object().unwrap())
    }

    #[test]
    fn field_paths_list_objects_before_their_fields_up_to_a_bound() {
        let mut schema = UnionSchema::default();
        absorb(&mut schema, json!({"person": {"name": {"last": "x"}, "age": 3}, "tags": ["a"]}))
            .unwrap();
        assert_eq!(
            schema.field_paths(100),
            ["person", "person.age", "person.name", "person.name.last", "tags"]
        );
        assert_eq!(schema.field_paths(2), ["person", "person.age"]);
    }

    #[test]
    fn a_record_held_by_the_schema_changes_nothing_when_absorbed() {
        let mut schema = UnionSchema::default();
        let first = json!({
            "person": {"name": {"first": "a"}, "age": 3, "score": 1.5},
            "tags": ["x", null],
            "points": [{"at": 1}],
            "timestamp": "2025-01-01T00:00:00Z",
            "_repo": {"createDate": "2025-01-01T00:00:00Z"},
            "flag": true,
            "empty": []
        });
        absorb(&mut schema, first.clone()).unwrap();
        let records = [
            (first, true),
            (json!({"person": {"age": 4}, "tags": [], "flag": null}), true),
            // An integer where the schema has a float fits; a float where it has an integer
            // widens it.
            (json!({"person": {"score": 2}}), true),
            (json!({"person": {"age": 2.5}}), false),
            (json!({"person": {"name": {"middle": "b"}}}), false),
            (json!({"tags": [1]}), false),
            (json!({"points": [{"at": 2}, {"at": 1.5}]}), false),
            (json!({"empty": ["now typed"]}), false),
            (json!({"timestamp": "not a date"}), false),
            (json!({"_repo": {"createDate": 5}}), false),
            (json!({"flag": "yes"}), false),
            (json!({"new": 1}), false),
        ];
        for (record, held) in records {
            let attributes = record.as_object().unwrap();
            assert_eq!(schema.holds(attributes), held, "{record}");
            // The oracle: absorbing a held record into a copy leaves it equal.
            let mut copy = schema.clone();
            let absorbed = copy.absorb(attributes);
            if held {
                assert!(absorbed.is_ok() && copy == schema, "{record}");
            } else {
                assert!(absorbed.is_err() || copy != schema, "{record}");
            }
        }
    }

    /// The depth of a type as records count it (objects and arrays), the oracle of the pruning.
    fn depth(t: &XType) -> usize {
        match t {
            XType::Object { fields } => 1 + fields.values().map(depth).max().unwrap_or(0),
            XType::Array { items } => 1 + items.as_deref().map_or(0, depth),
            _ => 0,
        }
    }

    #[test]
    fn schemas_of_any_accepted_depth_are_read_and_kept_within_the_cap() {
        // The deepest record serde_json parses, alternating objects and arrays, beside a flat
        // field and one just within the cap.
        let mut deep = json!({"leaf": "x"});
        for i in 0..120 {
            deep = if i % 4 == 0 { json!([deep]) } else { json!({"k": deep, "n": i}) };
        }
        let mut within = json!(1);
        for _ in 0..MAX_RECORD_DEPTH - 1 {
            within = json!({ "k": within });
        }
        let mut s = UnionSchema::default();
        absorb(&mut s, json!({"deep": deep, "flat": true, "within": within.clone()})).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        assert!(serde_json::from_str::<UnionSchema>(&text).is_err(), "past serde's own limit");

        let read = UnionSchema::from_json(&text).unwrap();
        assert_eq!(read.fields["flat"], XType::Bool);
        assert_eq!(read.fields["within"], s.fields["within"], "within the cap: unchanged");
        assert_eq!(depth(&read.fields["within"]), MAX_RECORD_DEPTH - 1);
        assert_eq!(depth(&read.fields["deep"]), MAX_RECORD_DEPTH - 1, "cut at the cap");
        // What is left of the deep field is what the record had at those levels.
        let mut cut = read.clone();
        cut.fields.retain(|k, _| k == "deep");
        let mut whole = s.clone();
        whole.fields.retain(|k, _| k == "deep");
        assert!(cut.field_count() < whole.field_count());
        whole.merge(&cut).unwrap();
        assert_eq!(whole.fields["deep"], s.fields["deep"], "the cut schema is a part of the whole");
        // A schema within the cap reads back as it was written.
        let mut small = s.clone();
        small.fields.remove("deep");
        assert_eq!(UnionSchema::from_json(&serde_json::to_string(&small).unwrap()).unwrap(), small);
    }

    #[test]
    fn widening_and_nulls() {
        let mut s = UnionSchema::default();
        absorb(&mut s, json!({"a": 1, "n": null, "o": {"x": null}})).unwrap();
        assert_eq!(s.fields["a"], XType::Int);
        assert!(!s.fields.contains_key("n"));
        absorb(&mut s, json!({"a": 1.5, "n": "now typed", "o": {"x": true}})).unwrap();
        assert_eq!(s.fields["a"], XType::Float);
        assert_eq!(s.fields["n"], XType::String);
        absorb(&mut s, json!({"a": 2})).unwrap();
        assert_eq!(s.fields["a"], XType::Float);
    }

    #[test]
    fn conflicts_name_the_field_and_leave_the_schema_alone() {
        let mut s = UnionSchema::default();
        absorb(&mut s, json!({"loyalty": {"points": 10}, "tags": ["a"]})).unwrap();
        let before = s.clone();
        let c = absorb(&mut s, json!({"new": 1, "loyalty": {"points": "ten"}})).unwrap_err();
        assert_eq!(c.field, "loyalty.points");
        assert!(c.message.contains("string") && c.message.contains("number"), "{}", c.message);
        assert_eq!(s, before);
        assert_eq!(absorb(&mut s, json!({"tags": [1]})).unwrap_err().field, "tags");
        assert_eq!(absorb(&mut s, json!({"mixed": [1, "a"]})).unwrap_err().field, "mixed");
    }

    #[test]
    fn date_times() {
        let mut s = UnionSchema::default();
        absorb(&mut s, json!({"timestamp": "2025-01-01T00:00:00Z", "_repo": {"modifyDate": "2025-01-01T00:00:00+02:00"}, "birth": "1990-01-01"})).unwrap();
        assert_eq!(s.fields["timestamp"], XType::Timestamp);
        assert_eq!(s.fields["birth"], XType::String);
        let c = absorb(&mut s, json!({"timestamp": "yesterday"})).unwrap_err();
        assert_eq!(c.field, "timestamp");
        assert!(absorb(&mut s, json!({"x": {"validUntil": 5}})).is_err());
    }

    #[test]
    fn empty_arrays_take_the_first_element_type() {
        let mut s = UnionSchema::default();
        absorb(&mut s, json!({"l": []})).unwrap();
        assert_eq!(s.fields["l"], XType::Array { items: None });
        absorb(&mut s, json!({"l": [{"a": 1}]})).unwrap();
        assert!(matches!(&s.fields["l"], XType::Array { items: Some(_) }));
        assert!(arrow_type(&s.fields["l"]).to_string().contains("Struct"));
    }
}
