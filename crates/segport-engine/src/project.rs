//! Projection of `fields` (docs/api.md): a dotted path selects a subtree; through an array it
//! selects within every element; through a map it selects a key. The output types follow the
//! store's union schema: objects are structs, arrays lists, and the XDM maps (`identityMap`,
//! `segmentMembership` and its per-namespace level) Parquet MAPs with UTF-8 keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use segport_store::schema::{arrow_type, timestamp_type, UnionSchema, XType};
use serde_json::{Map, Value};

/// The shape of an output value.
#[derive(Debug, Clone, PartialEq)]
pub enum OType {
    Leaf(DataType),
    Struct(BTreeMap<String, OType>),
    List(Box<OType>),
    /// A map with string keys; the value type is shared by every key.
    Map(Box<OType>),
}

fn from_xtype(t: &XType) -> OType {
    match t {
        XType::Object { fields } => {
            OType::Struct(fields.iter().map(|(k, v)| (k.clone(), from_xtype(v))).collect())
        }
        XType::Array { items: Some(items) } => OType::List(Box::new(from_xtype(items))),
        other => OType::Leaf(arrow_type(other)),
    }
}

fn utf8() -> OType {
    OType::Leaf(DataType::Utf8)
}

fn identity_map_type() -> OType {
    OType::Map(Box::new(OType::List(Box::new(OType::Struct(BTreeMap::from([
        ("id".to_owned(), utf8()),
        ("primary".to_owned(), OType::Leaf(DataType::Boolean)),
        ("authenticatedState".to_owned(), utf8()),
    ]))))))
}

fn legacy_identities_type() -> OType {
    OType::List(Box::new(OType::Struct(BTreeMap::from([
        ("id".to_owned(), utf8()),
        ("namespace".to_owned(), OType::Struct(BTreeMap::from([("code".to_owned(), utf8())]))),
        ("primary".to_owned(), OType::Leaf(DataType::Boolean)),
        ("authenticatedState".to_owned(), utf8()),
    ]))))
}

fn membership_type() -> OType {
    OType::Map(Box::new(OType::Map(Box::new(OType::Struct(BTreeMap::from([
        ("status".to_owned(), utf8()),
        ("lastQualificationTime".to_owned(), OType::Leaf(timestamp_type())),
        ("version".to_owned(), utf8()),
        ("validUntil".to_owned(), OType::Leaf(timestamp_type())),
    ]))))))
}

/// Every field an event can be projected on: its attributes and its identities.
pub fn event_tree(schema: &UnionSchema) -> BTreeMap<String, OType> {
    let mut tree: BTreeMap<String, OType> =
        schema.fields.iter().map(|(k, t)| (k.clone(), from_xtype(t))).collect();
    tree.insert("identityMap".into(), identity_map_type());
    tree
}

/// Every field a profile row can be projected on, virtual `identities` included.
pub fn profile_tree(schema: &UnionSchema) -> BTreeMap<String, OType> {
    let mut tree: BTreeMap<String, OType> =
        schema.fields.iter().map(|(k, t)| (k.clone(), from_xtype(t))).collect();
    tree.insert("identityMap".into(), identity_map_type());
    tree.insert("identities".into(), legacy_identities_type());
    tree.insert("segmentMembership".into(), membership_type());
    tree
}

/// Which parts of a value to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Keep the whole value.
    pub all: bool,
    pub children: BTreeMap<String, Selection>,
}

impl Selection {
    fn add(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.all = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().add(rest),
        }
    }
}

/// A projection resolved against the store: what to keep of each row, and its Arrow schema.
#[derive(Debug, Clone)]
pub struct Projection {
    pub selection: Selection,
    pub output: BTreeMap<String, OType>,
    /// Paths that match nothing in the snapshot (reported as `UNKNOWN_FIELD` warnings).
    pub unknown: Vec<String>,
}

/// Resolves `paths` against `tree`; an empty list keeps `default_fields` whole.
pub fn resolve(
    tree: &BTreeMap<String, OType>,
    paths: &[Vec<String>],
    default_fields: &[&str],
) -> Projection {
    let mut selection = Selection::default();
    let mut unknown = Vec::new();
    if paths.is_empty() {
        for f in default_fields {
            if tree.contains_key(*f) {
                selection.children.entry((*f).to_owned()).or_default().all = true;
            }
        }
    } else {
        for path in paths {
            if resolves(tree, path) {
                selection.add(path);
            } else {
                unknown.push(path.join("."));
            }
        }
    }
    let output = tree
        .iter()
        .filter_map(|(k, t)| {
            selection.children.get(k).and_then(|s| drop_empty(prune(t, s))).map(|t| (k.clone(), t))
        })
        .collect();
    Projection { selection, output, unknown }
}

/// `t` without structs that hold no field (Parquet cannot store them): `None` when nothing is
/// left.
pub fn drop_empty(t: OType) -> Option<OType> {
    match t {
        OType::Leaf(_) => Some(t),
        OType::Struct(fields) => {
            let kept: BTreeMap<String, OType> =
                fields.into_iter().filter_map(|(k, c)| drop_empty(c).map(|c| (k, c))).collect();
            (!kept.is_empty()).then_some(OType::Struct(kept))
        }
        OType::List(inner) => drop_empty(*inner).map(|i| OType::List(Box::new(i))),
        OType::Map(value) => drop_empty(*value).map(|v| OType::Map(Box::new(v))),
    }
}

fn resolves(tree: &BTreeMap<String, OType>, path: &[String]) -> bool {
    fn walk(t: &OType, rest: &[String]) -> bool {
        match (t, rest.split_first()) {
            (_, None) => true,
            (OType::Struct(fields), Some((head, tail))) => {
                fields.get(head).is_some_and(|c| walk(c, tail))
            }
            (OType::List(inner), Some(_)) => walk(inner, rest),
            (OType::Map(value), Some((_key, tail))) => walk(value, tail),
            (OType::Leaf(_), Some(_)) => false,
        }
    }
    match path.split_first() {
        Some((head, tail)) => tree.get(head).is_some_and(|t| walk(t, tail)),
        None => false,
    }
}

fn prune(t: &OType, s: &Selection) -> OType {
    if s.all {
        return t.clone();
    }
    match t {
        OType::Struct(fields) => OType::Struct(
            fields
                .iter()
                .filter_map(|(k, c)| s.children.get(k).map(|cs| (k.clone(), prune(c, cs))))
                .collect(),
        ),
        OType::List(inner) => OType::List(Box::new(prune(inner, s))),
        // The selected keys share the value type: prune it by every key's selection at once.
        OType::Map(value) => {
            let mut merged = Selection::default();
            for cs in s.children.values() {
                merge_selection(&mut merged, cs);
            }
            OType::Map(Box::new(prune(value, &merged)))
        }
        OType::Leaf(_) => t.clone(),
    }
}

fn merge_selection(into: &mut Selection, other: &Selection) {
    into.all |= other.all;
    for (k, v) in &other.children {
        merge_selection(into.children.entry(k.clone()).or_default(), v);
    }
}

/// The Arrow type of an output value.
pub fn arrow_of(t: &OType) -> DataType {
    match t {
        OType::Leaf(d) => d.clone(),
        OType::Struct(fields) => DataType::Struct(struct_fields(fields)),
        OType::List(inner) => DataType::List(Arc::new(Field::new("item", arrow_of(inner), true))),
        OType::Map(value) => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("keys", DataType::Utf8, false),
                    Field::new("values", arrow_of(value), true),
                ])),
                false,
            )),
            false,
        ),
    }
}

fn struct_fields(fields: &BTreeMap<String, OType>) -> Fields {
    fields.iter().map(|(k, t)| Arc::new(Field::new(k, arrow_of(t), true))).collect()
}

/// The schema of output rows.
pub fn output_schema(fields: &BTreeMap<String, OType>) -> SchemaRef {
    Arc::new(Schema::new(struct_fields(fields)))
}

/// `value` cut down to `selection` (`None` when nothing selected is present).
pub fn project(value: &Value, selection: &Selection) -> Option<Value> {
    if selection.all {
        return (!value.is_null()).then(|| value.clone());
    }
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, s) in &selection.children {
                if let Some(v) = map.get(k).and_then(|v| project(v, s)) {
                    out.insert(k.clone(), v);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        // Within every element; elements keep their place even when nothing selected is in them.
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|i| project(i, selection).unwrap_or(Value::Object(Map::new())))
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(list: &[&str]) -> Vec<Vec<String>> {
        list.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect()
    }

    /// The API checks a job's paths with the store's rule before the job runs: the two must
    /// agree on every path, or a job would be refused for a path the engine selects, or pass
    /// with one it cannot.
    #[test]
    fn the_store_path_check_agrees_with_the_projection() {
        use segport_store::paths::{known, EVENT_FIELDS, PROFILE_FIELDS};
        let mut schema = UnionSchema::default();
        schema
            .absorb(
                json!({"person": {"name": {"first": "a"}}, "orders": [{"sku": "x", "n": [1]}],
                    "empty": [], "at": "2024-01-01T00:00:00Z"})
                .as_object()
                .unwrap(),
            )
            .unwrap();
        let mut candidates: Vec<String> =
            segport_store::paths::all_paths(&schema, PROFILE_FIELDS, 1000);
        for extra in [
            "identityMap.ECID",
            "identityMap.ECID.id",
            "identityMap.ECID.x",
            "identityMap.ECID.id.x",
            "segmentMembership.ups",
            "segmentMembership.ups.s1",
            "segmentMembership.ups.s1.status",
            "segmentMembership.ups.s1.status.x",
            "identities.namespace.code.x",
            "identities.x",
            "person.x",
            "person.name.first.x",
            "orders.n.x",
            "empty.x",
            "at.x",
            "nope",
        ] {
            candidates.push(extra.to_owned());
        }
        for (tree, fixed) in
            [(profile_tree(&schema), PROFILE_FIELDS), (event_tree(&schema), EVENT_FIELDS)]
        {
            for path in paths(&candidates.iter().map(String::as_str).collect::<Vec<_>>()) {
                assert_eq!(
                    resolves(&tree, &path),
                    known(&schema, fixed, &path),
                    "{}",
                    path.join(".")
                );
            }
        }
    }

    #[test]
    fn selects_through_structs_lists_and_maps() {
        let mut schema = UnionSchema::default();
        schema.absorb(json!({"person": {"name": {"first": "a", "last": "b"}, "age": 3}, "tags": [{"k": "x", "v": 1}]}).as_object().unwrap()).unwrap();
        let tree = profile_tree(&schema);
        let p = resolve(
            &tree,
            &paths(&[
                "person.name.first",
                "tags.k",
                "identities.id",
                "segmentMembership.ups",
                "nope.x",
                "person.age.deeper",
            ]),
            &[],
        );
        assert_eq!(p.unknown, ["nope.x", "person.age.deeper"]);
        let row = json!({
            "person": {"name": {"first": "Ada", "last": "L"}, "age": 36},
            "tags": [{"k": "a", "v": 1}, {"v": 2}],
            "identities": [{"id": "1", "namespace": {"code": "ECID"}, "primary": true}],
            "segmentMembership": {"ups": {"s": {"status": "realized"}}, "aam": {"t": {"status": "exited"}}}
        });
        let out = project(&row, &p.selection).unwrap();
        assert_eq!(
            out,
            json!({
                "person": {"name": {"first": "Ada"}},
                "tags": [{"k": "a"}, {}],
                "identities": [{"id": "1"}],
                "segmentMembership": {"ups": {"s": {"status": "realized"}}}
            })
        );
        let schema = output_schema(&p.output);
        assert!(matches!(
            schema.field_with_name("segmentMembership").unwrap().data_type(),
            DataType::Map(..)
        ));
        assert!(matches!(
            schema.field_with_name("identities").unwrap().data_type(),
            DataType::List(..)
        ));
    }
}
