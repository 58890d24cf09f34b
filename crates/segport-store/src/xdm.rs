//! XDM records as segport stores them: identities normalised into one list, the profile key
//! taken from the primary identity, segment memberships flattened, everything else left as
//! attributes (docs/api.md, Inputs).

use serde_json::{Map, Value};

use crate::schema::parse_date_time;
use crate::RecordKind;

/// One identity of a record, from `identityMap` or the legacy `identities` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub id: String,
    pub primary: bool,
    pub authenticated_state: Option<String>,
}

/// One `segmentMembership.{ns}.{segmentId}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub ns: String,
    pub segment_id: String,
    pub status: String,
    pub last_qualification_ms: Option<i64>,
    pub version: Option<String>,
    pub valid_until_ms: Option<i64>,
}

/// A record ready to be typed and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The primary identity, `namespace:id`.
    pub key: String,
    pub identities: Vec<Identity>,
    /// Always empty for events.
    pub memberships: Vec<Membership>,
    /// Every other field; for events this includes `_id` and `timestamp`.
    pub attributes: Map<String, Value>,
}

/// Why a record was refused; reported with its row, grouped by code and description.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordError {
    pub code: &'static str,
    pub description: String,
}

/// Longest description of a record error, in characters: descriptions quote client names
/// (namespaces, segment ids, fields), and a batch lists them for every kind of error.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Longest client string quoted inside a description, in characters.
const MAX_QUOTED_CHARS: usize = 80;

/// A client string as a description quotes it: clipped.
fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    segport_model::error::clip(text, MAX_QUOTED_CHARS)
}

impl RecordError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        let description = description.into();
        let description = match segport_model::error::clip(&description, MAX_DESCRIPTION_CHARS) {
            std::borrow::Cow::Borrowed(_) => description,
            std::borrow::Cow::Owned(clipped) => clipped,
        };
        Self { code, description }
    }
}

/// Refuses control characters (NUL included) in an identity's namespace or id: they reach the
/// catalog's text columns (as profile keys of the store manifest), where PostgreSQL refuses NUL
/// and SQLite keeps it, and no identity system issues them.
fn plain_identity_text(what: &str, text: &str) -> Result<(), RecordError> {
    match text.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => err(
            "INVALID_IDENTITY",
            format!(
                "{what} {:?} holds the control character U+{:04X}; identity namespaces and ids \
                 must be printable",
                quoted(text),
                u32::from(c)
            ),
        ),
    }
}

fn err<T>(code: &'static str, description: impl Into<String>) -> Result<T, RecordError> {
    Err(RecordError::new(code, description))
}

/// Parses one record's JSON text.
pub fn parse(bytes: &[u8]) -> Result<Value, RecordError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RecordError::new("INVALID_JSON", format!("record is not valid JSON: {e}")))
}

/// Normalises a parsed record of `kind`.
pub fn normalize(value: Value, kind: RecordKind) -> Result<Normalized, RecordError> {
    let Value::Object(mut record) = value else {
        return err("NOT_AN_OBJECT", "a record must be a JSON object");
    };
    let mut identities = Vec::new();
    if let Some(map) = record.remove("identityMap").filter(|v| !v.is_null()) {
        identity_map(map, &mut identities)?;
    }
    if let Some(list) = record.remove("identities").filter(|v| !v.is_null()) {
        legacy_identities(list, &mut identities)?;
    }
    let key = primary_key(&identities)?;
    let memberships = match kind {
        RecordKind::Profile => match record.remove("segmentMembership").filter(|v| !v.is_null()) {
            Some(v) => memberships(v)?,
            None => Vec::new(),
        },
        RecordKind::Event => {
            match record.get("_id") {
                Some(Value::String(s)) if !s.is_empty() => {}
                _ => return err("MISSING_EVENT_ID", "an event needs a non-empty string _id"),
            }
            match record.get("timestamp") {
                Some(Value::String(s)) if parse_date_time(s).is_some() => {}
                _ => return err("MISSING_TIMESTAMP", "an event needs an RFC 3339 timestamp"),
            }
            Vec::new()
        }
    };
    // The store's own columns are named `__…` next to the attributes (columns.rs); an attribute
    // of such a name would shadow one of them.
    if let Some(name) = record.keys().find(|k| k.starts_with("__")) {
        return err(
            "RESERVED_FIELD",
            format!(
                "top-level field {:?} is reserved: names starting with __ are the store's own; \
                 rename it",
                name.chars().take(80).collect::<String>()
            ),
        );
    }
    drop_empty_objects(&mut record);
    Ok(Normalized { key, identities, memberships, attributes: record })
}

/// Removes what holds no data: null fields, and objects left without fields (`{}`,
/// `{"a": null}`, `{"a": {}}`), which become absent in an object and null in an array. Such a
/// value would otherwise make a struct without members, which Parquet cannot store, and fail the
/// whole batch at write time; the export could not tell it from absent anyway.
fn drop_empty_objects(object: &mut Map<String, Value>) {
    object.retain(|_, value| {
        prune(value);
        !value.is_null()
    });
}

/// [`drop_empty_objects`] on one value: an object without data becomes null.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            drop_empty_objects(map);
            if map.is_empty() {
                *value = Value::Null;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn push_identity(out: &mut Vec<Identity>, identity: Identity) {
    match out.iter_mut().find(|i| i.namespace == identity.namespace && i.id == identity.id) {
        Some(existing) => {
            existing.primary |= identity.primary;
            if existing.authenticated_state.is_none() {
                existing.authenticated_state = identity.authenticated_state;
            }
        }
        None => out.push(identity),
    }
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn primary_flag(v: Option<&Value>, field: &str) -> Result<bool, RecordError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => err("INVALID_IDENTITY", format!("{field}.primary must be a boolean")),
    }
}

fn identity_map(map: Value, out: &mut Vec<Identity>) -> Result<(), RecordError> {
    let Value::Object(map) = map else {
        return err("INVALID_IDENTITY", "identityMap must be an object of namespace → array");
    };
    for (ns, entries) in map {
        let Value::Array(entries) = entries else {
            return err(
                "INVALID_IDENTITY",
                format!("identityMap.{} must be an array", quoted(&ns)),
            );
        };
        plain_identity_text("the identityMap namespace", &ns)?;
        for entry in entries {
            let Some(id) = non_empty_str(entry.get("id")) else {
                return err(
                    "INVALID_IDENTITY",
                    format!("identityMap.{}[] needs a non-empty string id", quoted(&ns)),
                );
            };
            plain_identity_text("the identity id", id)?;
            push_identity(
                out,
                Identity {
                    namespace: ns.clone(),
                    id: id.to_owned(),
                    primary: primary_flag(
                        entry.get("primary"),
                        &format!("identityMap.{}[]", quoted(&ns)),
                    )?,
                    authenticated_state: entry
                        .get("authenticatedState")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
            );
        }
    }
    Ok(())
}

fn legacy_identities(list: Value, out: &mut Vec<Identity>) -> Result<(), RecordError> {
    let Value::Array(list) = list else {
        return err("INVALID_IDENTITY", "identities must be an array");
    };
    for entry in list {
        let id = non_empty_str(entry.get("id"));
        let ns = non_empty_str(entry.get("namespace").and_then(|n| n.get("code")));
        let (Some(id), Some(ns)) = (id, ns) else {
            return err("INVALID_IDENTITY", "identities[] needs an id and a namespace.code");
        };
        plain_identity_text("the identities[] namespace.code", ns)?;
        plain_identity_text("the identity id", id)?;
        push_identity(
            out,
            Identity {
                namespace: ns.to_owned(),
                id: id.to_owned(),
                primary: primary_flag(entry.get("primary"), "identities[]")?,
                authenticated_state: entry
                    .get("authenticatedState")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
        );
    }
    Ok(())
}

/// `namespace:id` of the identity marked primary, or of the only identity.
fn primary_key(identities: &[Identity]) -> Result<String, RecordError> {
    let mut primaries = identities.iter().filter(|i| i.primary);
    let chosen = match (primaries.next(), primaries.next()) {
        (Some(one), None) => one,
        (Some(_), Some(_)) => {
            return err("AMBIGUOUS_PRIMARY_IDENTITY", "more than one identity is marked primary")
        }
        (None, _) => match identities {
            [only] => only,
            [] => {
                return err("NO_IDENTITY", "the record has no identity (identityMap or identities)")
            }
            _ => {
                return err(
                    "AMBIGUOUS_PRIMARY_IDENTITY",
                    "the record has several identities and none is marked primary",
                )
            }
        },
    };
    Ok(format!("{}:{}", chosen.namespace, chosen.id))
}

fn memberships(value: Value) -> Result<Vec<Membership>, RecordError> {
    let bad = |what: String| err("INVALID_SEGMENT_MEMBERSHIP", what);
    let Value::Object(namespaces) = value else {
        return bad(
            "segmentMembership must be an object of namespace → segment id → membership".into()
        );
    };
    let mut out = Vec::new();
    for (ns, segments) in namespaces {
        let Value::Object(segments) = segments else {
            return bad(format!("segmentMembership.{} must be an object", quoted(&ns)));
        };
        for (segment_id, m) in segments {
            let path = format!("segmentMembership.{}.{}", quoted(&ns), quoted(&segment_id));
            let Value::Object(m) = m else { return bad(format!("{path} must be an object")) };
            let status = match m.get("status").and_then(Value::as_str) {
                Some(s @ ("realized" | "existing" | "exited")) => s.to_owned(),
                _ => return bad(format!("{path}.status must be realized, existing or exited")),
            };
            let time = |key: &str| -> Result<Option<i64>, RecordError> {
                match m.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if parse_date_time(s).is_some() => {
                        Ok(parse_date_time(s))
                    }
                    Some(_) => err(
                        "INVALID_SEGMENT_MEMBERSHIP",
                        format!("{path}.{key} must be an RFC 3339 date-time"),
                    ),
                }
            };
            let version = match m.get("version") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => return bad(format!("{path}.version must be a string")),
            };
            out.push(Membership {
                ns: ns.clone(),
                segment_id: segment_id.clone(),
                status,
                last_qualification_ms: time("lastQualificationTime")?,
                version,
                valid_until_ms: time("validUntil")?,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_column_names_are_refused() {
        for name in ["__key", "__ord", "__anything"] {
            let record = serde_json::json!({"identityMap": {"E": [{"id": "1"}]}, name: 5});
            let e = normalize(record, RecordKind::Profile).unwrap_err();
            assert_eq!(e.code, "RESERVED_FIELD", "{name}");
            assert!(e.description.contains(name), "{}", e.description);
        }
        // Only top-level names meet the store's columns.
        let nested = serde_json::json!({"identityMap": {"E": [{"id": "1"}]}, "a": {"__key": 5}});
        assert!(normalize(nested, RecordKind::Profile).is_ok());
    }

    #[test]
    fn objects_without_data_are_dropped() {
        let record = serde_json::json!({
            "identityMap": {"ECID": [{"id": "1"}]},
            "": {"p": null},
            "a": {"b": {}, "c": 1, "d": {"e": null, "f": {}}},
            "list": [{}, {"x": null}, {"x": 2}, []],
            "gone": {},
        });
        let n = normalize(record, RecordKind::Profile).unwrap();
        assert_eq!(
            Value::Object(n.attributes),
            serde_json::json!({"a": {"c": 1}, "list": [null, null, {"x": 2}, []]})
        );
    }

    use serde_json::json;

    use super::*;

    #[test]
    fn identity_map_and_legacy_identities_merge() {
        let n = normalize(
            json!({
                "identityMap": {"ECID": [{"id": "1", "primary": true}], "Email": [{"id": "a@b"}]},
                "identities": [{"id": "1", "namespace": {"code": "ECID"}}, {"id": "C9", "namespace": {"code": "CRMID"}}],
                "person": {"name": "x"}
            }),
            RecordKind::Profile,
        )
        .unwrap();
        assert_eq!(n.key, "ECID:1");
        assert_eq!(n.identities.len(), 3);
        assert!(n.attributes.contains_key("person"));
        assert!(!n.attributes.contains_key("identityMap"));
    }

    #[test]
    fn primary_rules() {
        let only =
            normalize(json!({"identityMap": {"Email": [{"id": "a@b"}]}}), RecordKind::Profile);
        assert_eq!(only.unwrap().key, "Email:a@b");
        let code = |v| normalize(v, RecordKind::Profile).unwrap_err().code;
        assert_eq!(code(json!({"a": 1})), "NO_IDENTITY");
        assert_eq!(
            code(json!({"identityMap": {"A": [{"id": "1"}], "B": [{"id": "2"}]}})),
            "AMBIGUOUS_PRIMARY_IDENTITY"
        );
        assert_eq!(
            code(
                json!({"identityMap": {"A": [{"id": "1", "primary": true}], "B": [{"id": "2", "primary": true}]}})
            ),
            "AMBIGUOUS_PRIMARY_IDENTITY"
        );
        assert_eq!(code(json!({"identityMap": {"A": [{"id": ""}]}})), "INVALID_IDENTITY");
        assert_eq!(code(json!([1])), "NOT_AN_OBJECT");
    }

    #[test]
    fn memberships_are_flattened_and_checked() {
        let n = normalize(
            json!({
                "identityMap": {"ECID": [{"id": "1"}]},
                "segmentMembership": {"ups": {"s1": {"status": "realized", "lastQualificationTime": "2025-01-01T00:00:00Z"}, "s2": {"status": "exited"}}}
            }),
            RecordKind::Profile,
        )
        .unwrap();
        assert_eq!(n.memberships.len(), 2);
        assert_eq!(n.memberships[0].last_qualification_ms, Some(1_735_689_600_000));
        let bad = normalize(
            json!({"identityMap": {"ECID": [{"id": "1"}]}, "segmentMembership": {"ups": {"s1": {"status": "gone"}}}}),
            RecordKind::Profile,
        );
        assert_eq!(bad.unwrap_err().code, "INVALID_SEGMENT_MEMBERSHIP");
    }

    #[test]
    fn events_need_id_and_timestamp() {
        let ok = normalize(
            json!({"_id": "e1", "timestamp": "2025-01-01T00:00:00Z", "identityMap": {"ECID": [{"id": "1"}]}}),
            RecordKind::Event,
        )
        .unwrap();
        assert!(ok.attributes.contains_key("_id"));
        let code = |v| normalize(v, RecordKind::Event).unwrap_err().code;
        assert_eq!(
            code(
                json!({"timestamp": "2025-01-01T00:00:00Z", "identityMap": {"ECID": [{"id": "1"}]}})
            ),
            "MISSING_EVENT_ID"
        );
        assert_eq!(
            code(json!({"_id": "e", "identityMap": {"ECID": [{"id": "1"}]}})),
            "MISSING_TIMESTAMP"
        );
        assert_eq!(code(json!({"_id": "e", "timestamp": "2025-01-01T00:00:00Z"})), "NO_IDENTITY");
    }
}
