//! Which dotted field paths a job may name: the fields of a sandbox's union schema (through
//! arrays) and the fields every stored row has beside its attributes (`identityMap`, and for
//! profiles `identities` and `segmentMembership`). The API checks a job's `fields` with this
//! before the job is queued; the engine resolves the same paths against its output types, and
//! a test holds the two together.

use crate::schema::{UnionSchema, XType};

/// The shape of a field the store adds to every row.
#[derive(Debug)]
pub enum Shape {
    Leaf,
    Struct(&'static [(&'static str, Shape)]),
    List(&'static Shape),
    /// Keyed by any string: a namespace, a segment id.
    Map(&'static Shape),
}

const IDENTITY: Shape = Shape::Struct(&[
    ("id", Shape::Leaf),
    ("primary", Shape::Leaf),
    ("authenticatedState", Shape::Leaf),
]);

const IDENTITY_MAP: (&str, Shape) = ("identityMap", Shape::Map(&Shape::List(&IDENTITY)));

/// The fields a profile row has beside its attributes.
pub const PROFILE_FIELDS: &[(&str, Shape)] = &[
    IDENTITY_MAP,
    (
        "identities",
        Shape::List(&Shape::Struct(&[
            ("id", Shape::Leaf),
            ("namespace", Shape::Struct(&[("code", Shape::Leaf)])),
            ("primary", Shape::Leaf),
            ("authenticatedState", Shape::Leaf),
        ])),
    ),
    (
        "segmentMembership",
        Shape::Map(&Shape::Map(&Shape::Struct(&[
            ("status", Shape::Leaf),
            ("lastQualificationTime", Shape::Leaf),
            ("version", Shape::Leaf),
            ("validUntil", Shape::Leaf),
        ]))),
    ),
];

/// The fields an event has beside its attributes.
pub const EVENT_FIELDS: &[(&str, Shape)] = &[IDENTITY_MAP];

/// Whether `path` names a field of `schema` or of `fixed`: each segment a member of the object
/// before it; an array is passed through to its elements; a map takes any key.
pub fn known<S: AsRef<str>>(schema: &UnionSchema, fixed: &[(&str, Shape)], path: &[S]) -> bool {
    let Some((head, rest)) = path.split_first() else { return false };
    match fixed.iter().find(|(name, _)| *name == head.as_ref()) {
        Some((_, shape)) => in_shape(shape, rest),
        None => schema.fields.get(head.as_ref()).is_some_and(|t| in_type(t, rest)),
    }
}

fn in_shape<S: AsRef<str>>(shape: &Shape, path: &[S]) -> bool {
    match (shape, path.split_first()) {
        (_, None) => true,
        (Shape::Struct(members), Some((head, rest))) => members
            .iter()
            .find(|(name, _)| *name == head.as_ref())
            .is_some_and(|(_, s)| in_shape(s, rest)),
        (Shape::List(inner), Some(_)) => in_shape(inner, path),
        (Shape::Map(value), Some((_, rest))) => in_shape(value, rest),
        (Shape::Leaf, Some(_)) => false,
    }
}

fn in_type<S: AsRef<str>>(t: &XType, path: &[S]) -> bool {
    match (t, path.split_first()) {
        (_, None) => true,
        (XType::Object { fields }, Some((head, rest))) => {
            fields.get(head.as_ref()).is_some_and(|t| in_type(t, rest))
        }
        (XType::Array { items: Some(items) }, Some(_)) => in_type(items, path),
        _ => false,
    }
}

/// Every path `known` accepts that names a field of the schema or of `fixed`, without map keys
/// (which are open), for suggesting the one a misspelled path meant; at most `cap` of them.
pub fn all_paths(schema: &UnionSchema, fixed: &[(&str, Shape)], cap: usize) -> Vec<String> {
    fn shape_paths(prefix: &str, shape: &Shape, out: &mut Vec<String>, cap: usize) {
        if let Shape::Struct(members) = shape {
            for (name, s) in *members {
                if out.len() >= cap {
                    return;
                }
                let path = format!("{prefix}.{name}");
                out.push(path.clone());
                shape_paths(&path, s, out, cap);
            }
        } else if let Shape::List(inner) = shape {
            shape_paths(prefix, inner, out, cap);
        }
    }
    fn type_paths(prefix: &str, t: &XType, out: &mut Vec<String>, cap: usize) {
        match t {
            XType::Object { fields } => {
                for (name, t) in fields {
                    if out.len() >= cap {
                        return;
                    }
                    let path = format!("{prefix}.{name}");
                    out.push(path.clone());
                    type_paths(&path, t, out, cap);
                }
            }
            XType::Array { items: Some(items) } => type_paths(prefix, items, out, cap),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, shape) in fixed {
        out.push((*name).to_owned());
        shape_paths(name, shape, &mut out, cap);
    }
    for (name, t) in &schema.fields {
        if out.len() >= cap {
            break;
        }
        out.push(name.clone());
        type_paths(name, t, &mut out, cap);
    }
    out.truncate(cap);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> UnionSchema {
        let mut s = UnionSchema::default();
        let record = serde_json::json!({
            "person": {"name": {"firstName": "a"}},
            "orders": [{"sku": "x", "lines": [{"qty": 1}]}],
            "tags": [],
        });
        s.absorb(record.as_object().unwrap()).unwrap();
        s
    }

    #[test]
    fn paths_are_checked_through_objects_arrays_and_maps() {
        let s = schema();
        let ok = |p: &str| known(&s, PROFILE_FIELDS, &p.split('.').collect::<Vec<_>>());
        for good in [
            "person",
            "person.name.firstName",
            "orders.sku",
            "orders.lines.qty",
            "tags",
            "identityMap",
            "identityMap.ECID.id",
            "identities.namespace.code",
            "segmentMembership.ups.seg-1.status",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "persona",
            "person.name.lastName",
            "person.name.firstName.x",
            "orders.qty",
            "tags.x",
            "identityMap.ECID.nope",
            "identities.nope",
            "segmentMembership.ups.seg-1.status.x",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(!known(&s, EVENT_FIELDS, &["identities"]), "events have no legacy identities");
    }

    #[test]
    fn every_listed_path_is_known_and_the_list_is_capped() {
        let s = schema();
        let all = all_paths(&s, PROFILE_FIELDS, 1000);
        assert!(all.contains(&"orders.lines.qty".to_owned()), "{all:?}");
        assert!(all.contains(&"identities.namespace.code".to_owned()), "{all:?}");
        for p in &all {
            assert!(known(&s, PROFILE_FIELDS, &p.split('.').collect::<Vec<_>>()), "{p}");
        }
        assert_eq!(all_paths(&s, PROFILE_FIELDS, 3).len(), 3);
    }
}
