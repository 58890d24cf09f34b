//! The per-record limits of an ingest (docs/limits.md): how deeply a record nests, how many
//! distinct fields it has, how many fields the sandbox's union schema may grow to. A record past
//! one of them fails on its own, with a code naming the limit; the rest of its batch goes on.
//! Without them one hostile record could make every later read of the sandbox slow or impossible.

use serde_json::Value;

use crate::schema::MAX_RECORD_DEPTH;
use crate::xdm::RecordError;

/// The limits of [`crate::ingest::IngestLimits`] that apply to each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Levels of objects and arrays within each other, the record itself being the first; at
    /// most [`MAX_RECORD_DEPTH`] (a larger value counts as that).
    pub max_depth: usize,
    /// Distinct fields of one record's attributes (every named field at every level; the
    /// elements of an array share its fields).
    pub max_fields: usize,
    /// Distinct fields of a sandbox's union schema, per record kind.
    pub max_schema_fields: usize,
    /// Bytes of one record: its JSON text, or its decoded values when read from Parquet.
    pub max_bytes: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_depth: MAX_RECORD_DEPTH,
            max_fields: 10_000,
            max_schema_fields: 20_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Whether `value` nests deeper than `max` levels: an object or an array is one level more
/// than its deepest member, anything else none. Looks no deeper than `max + 1` levels.
pub fn deeper_than(value: &Value, max: usize) -> bool {
    match value {
        Value::Object(map) => max == 0 || map.values().any(|v| deeper_than(v, max - 1)),
        Value::Array(items) => max == 0 || items.iter().any(|v| deeper_than(v, max - 1)),
        _ => false,
    }
}

impl RecordLimits {
    /// The depth records are checked against: the configured one, never past what the store
    /// can read back.
    pub fn depth(&self) -> usize {
        self.max_depth.min(MAX_RECORD_DEPTH)
    }

    /// The error of a record nested deeper than [`Self::max_depth`].
    pub fn too_deep(&self) -> RecordError {
        RecordError::new(
            "RECORD_TOO_DEEP",
            format!(
                "the record nests objects and arrays more than {} levels deep, the limit \
                 (max-record-depth); flatten it",
                self.depth()
            ),
        )
    }

    /// The error of a record of more than [`Self::max_bytes`].
    pub fn too_large(&self, bytes: usize) -> RecordError {
        RecordError::new(
            "RECORD_TOO_LARGE",
            format!(
                "the record is {bytes} bytes; at most {} are accepted per record \
                 (max-record-bytes)",
                self.max_bytes
            ),
        )
    }

    /// The error of a record with more than [`Self::max_fields`] distinct fields.
    pub fn too_many_fields(&self, fields: usize) -> RecordError {
        RecordError::new(
            "TOO_MANY_FIELDS",
            format!(
                "the record has {fields} distinct fields; at most {} are accepted per record \
                 (max-record-fields)",
                self.max_fields
            ),
        )
    }

    /// The error of a record that would grow the union schema past [`Self::max_schema_fields`].
    pub fn schema_full(&self, held: usize, added: usize) -> RecordError {
        RecordError::new(
            "SCHEMA_FIELD_LIMIT",
            format!(
                "the record adds {added} fields to the sandbox's schema, which holds {held} of \
                 at most {} (max-schema-fields); records with the fields already known are \
                 still accepted",
                self.max_schema_fields
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The oracle: the depth computed in full.
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({"leaf": 1}), |inner, i| {
            if i % 3 == 0 {
                json!([inner])
            } else {
                json!({ "k": inner, "flat": i })
            }
        })
    }

    #[test]
    fn depth_checks_agree_with_the_full_depth() {
        let samples =
            [json!(1), json!({}), json!([]), json!({"a": 1}), json!({"a": [{"b": []}]}), nested(5)];
        for v in samples.iter().cloned().chain((1..40).map(nested)) {
            let d = depth(&v);
            for max in 0..d + 2 {
                assert_eq!(deeper_than(&v, max), d > max, "{v} at {max}");
            }
        }
        assert_eq!(depth(&nested(32)), 32);
    }
}
