//! Merge policies: how fragments of one profile combine (docs/api.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{truncate, DatasetId};
use crate::job::{MergePolicyRef, PROFILE_SCHEMA_NAME};
use crate::validate::{body_object, Checker};
use crate::ValidationErrors;

/// The policy every sandbox starts with.
pub const DEFAULT_POLICY_ID: &str = "timestampOrdered-none-mp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityGraphType {
    None,
    Pdg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityGraph {
    #[serde(rename = "type")]
    pub kind: IdentityGraphType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AttributeMergeType {
    TimestampOrdered,
    DataSetPrecedence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttributeMerge {
    #[serde(rename = "type")]
    pub kind: AttributeMergeType,
    /// Dataset priority, highest first; only with `dataSetPrecedence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<DatasetId>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicySchema {
    pub name: String,
}

/// A merge policy in AEP's shape; stored whole with every job that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergePolicy {
    pub id: String,
    pub name: String,
    pub ims_org_id: String,
    pub schema: PolicySchema,
    pub version: i64,
    pub identity_graph: IdentityGraph,
    pub attribute_merge: AttributeMerge,
    pub is_active_on_edge: bool,
    pub default: bool,
    /// Seconds since the epoch of the last change, as AEP reports it.
    pub update_epoch: i64,
}

impl MergePolicy {
    /// `timestampOrdered-none-mp`, version 1, the default of every new sandbox.
    pub fn builtin_default(org: &str, now_ms: i64) -> Self {
        Self {
            id: DEFAULT_POLICY_ID.to_owned(),
            name: "Timestamp ordered, no identity stitching".to_owned(),
            ims_org_id: org.to_owned(),
            schema: PolicySchema { name: PROFILE_SCHEMA_NAME.to_owned() },
            version: 1,
            identity_graph: IdentityGraph { kind: IdentityGraphType::None },
            attribute_merge: AttributeMerge {
                kind: AttributeMergeType::TimestampOrdered,
                order: None,
            },
            is_active_on_edge: false,
            default: true,
            update_epoch: now_ms / 1000,
        }
    }

    pub fn to_ref(&self) -> MergePolicyRef {
        MergePolicyRef { id: self.id.clone(), version: self.version }
    }
}

/// The client-settable part of a policy, from a create or update body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePolicyInput {
    pub name: String,
    pub identity_graph: IdentityGraphType,
    pub attribute_merge: AttributeMerge,
    pub is_active_on_edge: bool,
    pub default: bool,
}

impl MergePolicyInput {
    pub fn parse(body: &Value) -> Result<Self, ValidationErrors> {
        let root = body_object(body)?;
        let mut c = Checker::new();
        let name = c.required_string(root, "name", "").map(str::to_owned);

        match c.object(root, "schema", "") {
            None if Checker::get(root, "schema").is_none() => c.fail("schema", "is required"),
            None => {}
            Some(schema) => {
                if let Some(n) = c.required_string(schema, "name", "schema") {
                    if n != PROFILE_SCHEMA_NAME {
                        c.fail(
                            "schema.name",
                            format!(
                                "{:?} is not supported; use {PROFILE_SCHEMA_NAME:?}",
                                truncate(n)
                            ),
                        );
                    }
                }
            }
        }

        let identity_graph = match c.object(root, "identityGraph", "") {
            None => {
                if Checker::get(root, "identityGraph").is_none() {
                    c.fail("identityGraph", "is required");
                }
                None
            }
            Some(obj) => match c.required_string(obj, "type", "identityGraph") {
                Some("none") => Some(IdentityGraphType::None),
                Some("pdg") => Some(IdentityGraphType::Pdg),
                Some(other) => {
                    c.fail(
                        "identityGraph.type",
                        format!("{:?} is not an identity graph; use none or pdg", truncate(other)),
                    );
                    None
                }
                None => None,
            },
        };

        let attribute_merge = match c.object(root, "attributeMerge", "") {
            None => {
                if Checker::get(root, "attributeMerge").is_none() {
                    c.fail("attributeMerge", "is required");
                }
                None
            }
            Some(obj) => parse_attribute_merge(&mut c, obj),
        };

        let is_active_on_edge = c.bool(root, "isActiveOnEdge", "").unwrap_or(false);
        let default = c.bool(root, "default", "").unwrap_or(false);
        match (name, identity_graph, attribute_merge) {
            (Some(name), Some(identity_graph), Some(attribute_merge)) if c.errors.is_empty() => {
                Ok(Self { name, identity_graph, attribute_merge, is_active_on_edge, default })
            }
            _ => Err(c.errors),
        }
    }

    /// The stored policy this input describes.
    pub fn into_policy(self, id: String, org: &str, version: i64, now_ms: i64) -> MergePolicy {
        MergePolicy {
            id,
            name: self.name,
            ims_org_id: org.to_owned(),
            schema: PolicySchema { name: PROFILE_SCHEMA_NAME.to_owned() },
            version,
            identity_graph: IdentityGraph { kind: self.identity_graph },
            attribute_merge: self.attribute_merge,
            is_active_on_edge: self.is_active_on_edge,
            default: self.default,
            update_epoch: now_ms / 1000,
        }
    }
}

fn parse_attribute_merge(c: &mut Checker, obj: &crate::validate::Object) -> Option<AttributeMerge> {
    let kind = match c.required_string(obj, "type", "attributeMerge")? {
        "timestampOrdered" => AttributeMergeType::TimestampOrdered,
        "dataSetPrecedence" => AttributeMergeType::DataSetPrecedence,
        other => {
            c.fail(
                "attributeMerge.type",
                format!(
                    "{:?} is not a merge type; use timestampOrdered or dataSetPrecedence",
                    truncate(other)
                ),
            );
            return None;
        }
    };
    let order = match c.array(obj, "order", "attributeMerge") {
        None => None,
        Some(items) if items.len() > MAX_ORDER => {
            c.fail(
                "attributeMerge.order",
                format!("names {} datasets; at most {MAX_ORDER} are allowed", items.len()),
            );
            return None;
        }
        Some(items) => {
            let mut ids = Vec::with_capacity(items.len());
            let mut seen = std::collections::HashSet::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let field = format!("attributeMerge.order[{i}]");
                match item.as_str().map(DatasetId::parse) {
                    Some(Ok(id)) if !seen.insert(id.clone()) => {
                        c.fail(field, "names a dataset twice")
                    }
                    Some(Ok(id)) => ids.push(id),
                    Some(Err(m)) => c.fail(field, m),
                    None => c.fail(field, "must be a dataset id string"),
                }
            }
            Some(ids)
        }
    };
    match (kind, order) {
        (AttributeMergeType::DataSetPrecedence, Some(order)) if !order.is_empty() => {
            Some(AttributeMerge { kind, order: Some(order) })
        }
        (AttributeMergeType::DataSetPrecedence, _) => {
            c.fail(
                "attributeMerge.order",
                "dataSetPrecedence needs a non-empty list of dataset ids, highest priority first",
            );
            None
        }
        (AttributeMergeType::TimestampOrdered, Some(_)) => {
            c.fail("attributeMerge.order", "is only allowed with dataSetPrecedence");
            None
        }
        (AttributeMergeType::TimestampOrdered, None) => Some(AttributeMerge { kind, order: None }),
    }
}

/// Datasets a `dataSetPrecedence` policy may name in its `order` (docs/limits.md); a sandbox with
/// more profile datasets than this is far past what merge policies are used for.
pub const MAX_ORDER: usize = 1000;

/// Checks a merge-policy id from a path or a job request.
pub fn parse_policy_id(id: &str) -> Result<&str, String> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(format!(
            "{:?} is not a merge policy id (1 to 128 characters of A-Z, a-z, 0-9, ., _ and -)",
            truncate(id)
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_and_checks_order() {
        let p = MergePolicyInput::parse(&json!({
            "name": "p", "schema": {"name": "_xdm.context.profile"},
            "identityGraph": {"type": "none"},
            "attributeMerge": {"type": "dataSetPrecedence", "order": ["5b7c86968f7b6501e21ba9df"]}
        }))
        .unwrap();
        assert_eq!(p.attribute_merge.kind, AttributeMergeType::DataSetPrecedence);
        let err = MergePolicyInput::parse(&json!({
            "name": "p", "schema": {"name": "_xdm.context.profile"},
            "identityGraph": {"type": "x"},
            "attributeMerge": {"type": "dataSetPrecedence"}
        }))
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["identityGraph.type", "attributeMerge.order"]);
    }

    #[test]
    fn order_is_capped_and_duplicates_are_named() {
        let policy = |order: Vec<String>| {
            MergePolicyInput::parse(&json!({
                "name": "p", "schema": {"name": "_xdm.context.profile"},
                "identityGraph": {"type": "none"},
                "attributeMerge": {"type": "dataSetPrecedence", "order": order}
            }))
        };
        let id = |i: usize| format!("{i:024x}");
        let at_cap: Vec<String> = (0..MAX_ORDER).map(id).collect();
        assert_eq!(policy(at_cap.clone()).unwrap().attribute_merge.order.unwrap().len(), MAX_ORDER);
        let err = policy((0..=MAX_ORDER).map(id).collect()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].message.contains("at most 1000"), "{err}");
        let mut twice = at_cap;
        twice[700] = id(3);
        twice[999] = id(3);
        let err = policy(twice).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["attributeMerge.order[700]", "attributeMerge.order[999]"]);
    }

    #[test]
    fn wire_shape() {
        let v = serde_json::to_value(MergePolicy::builtin_default("o", 5000)).unwrap();
        assert_eq!(v["identityGraph"], json!({"type": "none"}));
        assert_eq!(v["attributeMerge"], json!({"type": "timestampOrdered"}));
        assert_eq!(v["updateEpoch"], json!(5));
    }
}
