//! Catalog datasets: the create-body rules and the class a dataset's schema gives it
//! (docs/api.md, Datasets).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::{truncate, DatasetId};
use crate::validate::{body_object, Checker};
use crate::ValidationErrors;

pub const PROFILE_UNION_SCHEMA: &str = "https://ns.adobe.com/xdm/context/profile__union";
pub const PROFILE_SCHEMA: &str = "https://ns.adobe.com/xdm/context/profile";
pub const EXPERIENCE_EVENT_SCHEMA: &str = "https://ns.adobe.com/xdm/context/experienceevent";
/// The tag that gives a tenant's own schema its class.
pub const CLASS_TAG: &str = "segport:class";
/// The tag that makes a dataset feed the profile store.
pub const UNIFIED_PROFILE_TAG: &str = "unifiedProfile";

const MAX_NAME_LEN: usize = 512;
const MAX_TAGS: usize = 100;

/// What a dataset holds, which decides what it can be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetClass {
    /// An export destination (profile union schema).
    Export,
    /// Profile records.
    Profile,
    /// Experience events.
    #[serde(rename = "experienceevent")]
    ExperienceEvent,
}

impl DatasetClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetClass::Export => "export",
            DatasetClass::Profile => "profile",
            DatasetClass::ExperienceEvent => "experienceevent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "export" => Some(DatasetClass::Export),
            "profile" => Some(DatasetClass::Profile),
            "experienceevent" => Some(DatasetClass::ExperienceEvent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A validated `POST /dataSets` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDataset {
    pub name: String,
    pub description: Option<String>,
    pub schema_ref: SchemaRef,
    pub tags: BTreeMap<String, Vec<String>>,
    pub class: DatasetClass,
}

impl NewDataset {
    pub fn parse(body: &Value) -> Result<Self, ValidationErrors> {
        let root = body_object(body)?;
        let mut c = Checker::new();
        let name = c.required_string(root, "name", "").map(str::to_owned);
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
            c.fail("name", format!("is longer than {MAX_NAME_LEN} characters"));
        }
        let description = c.string(root, "description", "").map(str::to_owned);
        // NUL cannot be stored in a PostgreSQL text column; refuse it on both backends alike.
        for (field, value) in [("name", &name), ("description", &description)] {
            if value.as_ref().is_some_and(|v| v.contains('\0')) {
                c.fail(field, "must not contain NUL characters");
            }
        }
        let tags = parse_tags(&mut c, root);
        let schema_ref = match c.object(root, "schemaRef", "") {
            None => {
                if Checker::get(root, "schemaRef").is_none() {
                    c.fail("schemaRef", "is required");
                }
                None
            }
            Some(obj) => {
                let id = c.required_string(obj, "id", "schemaRef").map(str::to_owned);
                let content_type = c.string(obj, "contentType", "schemaRef").map(str::to_owned);
                id.map(|id| SchemaRef { id, content_type })
            }
        };
        let class = schema_ref.as_ref().and_then(|s| match class_of(&s.id, tags.as_ref()) {
            Ok(class) => Some(class),
            Err((field, message)) => {
                c.fail(field, message);
                None
            }
        });
        match (name, schema_ref, tags, class) {
            (Some(name), Some(schema_ref), Some(tags), Some(class)) if c.errors.is_empty() => {
                Ok(Self { name, description, schema_ref, tags, class })
            }
            _ => Err(c.errors),
        }
    }
}

fn parse_tags(
    c: &mut Checker,
    root: &crate::validate::Object,
) -> Option<BTreeMap<String, Vec<String>>> {
    let Some(obj) = c.object(root, "tags", "") else {
        return Checker::get(root, "tags").is_none().then(BTreeMap::new);
    };
    if obj.len() > MAX_TAGS {
        c.fail("tags", format!("holds {} tags; at most {MAX_TAGS} are allowed", obj.len()));
        return None;
    }
    let mut tags = BTreeMap::new();
    let mut ok = true;
    for (key, value) in obj {
        let values = value.as_array().and_then(|a| {
            a.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
        });
        match values {
            Some(values) => {
                tags.insert(key.clone(), values);
            }
            None => {
                c.fail(format!("tags.{key}"), "must be an array of strings");
                ok = false;
            }
        }
    }
    ok.then_some(tags)
}

/// The class of a dataset with schema `schema_id`, or the field and message of the error.
fn class_of(
    schema_id: &str,
    tags: Option<&BTreeMap<String, Vec<String>>>,
) -> Result<DatasetClass, (&'static str, String)> {
    match schema_id {
        PROFILE_UNION_SCHEMA | crate::job::PROFILE_SCHEMA_NAME => return Ok(DatasetClass::Export),
        PROFILE_SCHEMA => return Ok(DatasetClass::Profile),
        EXPERIENCE_EVENT_SCHEMA => return Ok(DatasetClass::ExperienceEvent),
        _ => {}
    }
    let tagged = tags.and_then(|t| t.get(CLASS_TAG));
    match tagged.map(Vec::as_slice) {
        Some([one]) => DatasetClass::parse(one).ok_or_else(|| {
            (
                "tags.segport:class",
                format!("{:?} is not a class; use export, profile or experienceevent", truncate(one)),
            )
        }),
        Some(_) => Err(("tags.segport:class", "must hold exactly one class".to_owned())),
        None => Err((
            "schemaRef.id",
            format!(
                "{:?} is not a known XDM class schema; use {PROFILE_UNION_SCHEMA}, {PROFILE_SCHEMA} or \
                 {EXPERIENCE_EVENT_SCHEMA}, or tag the dataset with \"{CLASS_TAG}\": [\"export\"|\"profile\"|\"experienceevent\"]",
                truncate(schema_id)
            ),
        )),
    }
}

/// Fields of Catalog's dataset request that segport keeps no record of: a PATCH may carry them
/// (AEP's clients and examples do) and they change nothing.
const CATALOG_ONLY_FIELDS: &[&str] = &[
    "enableErrorDiagnostics",
    "observableSchema",
    "basePath",
    "fileDescription",
    "schema",
    "dataSourceId",
    "version",
];

/// What a dataset PATCH may change.
const PATCH_PATHS: crate::patch::Paths<'static> = crate::patch::Paths {
    allowed: &[&["name"], &["description"], &["tags"], &["tags", "*"]],
    hint: "/name, /description, /tags or /tags/{key}",
    dotted: false,
    remove: true,
};

impl Dataset {
    /// The dataset after a `PATCH /dataSets/{id}` body, checked by the create rules: a JSON
    /// Patch list (`add`, `replace`, `remove` on `/name`, `/description`, `/tags` and
    /// `/tags/{key}`), or an object whose `name`, `description` and `tags` (key by key) replace
    /// the dataset's. The schema, and with it the class, cannot change.
    pub fn patched(&self, body: &Value, now_ms: i64) -> Result<Dataset, ValidationErrors> {
        let mut doc = json!({
            "name": self.name,
            "schemaRef": self.schema_ref,
            "tags": self.tags,
        });
        if let Some(d) = &self.description {
            doc["description"] = json!(d);
        }
        match body {
            Value::Array(ops) => crate::patch::apply(&mut doc, ops, &PATCH_PATHS)?,
            Value::Object(fields) => {
                let mut c = Checker::new();
                for (key, value) in fields {
                    match (key.as_str(), value) {
                        ("name" | "description", _) => doc[key] = value.clone(),
                        ("tags", Value::Object(tags)) => {
                            for (k, v) in tags {
                                doc["tags"][k] = v.clone();
                            }
                        }
                        ("tags", _) => c.fail("tags", "must be an object of tag arrays"),
                        // The schema, and with it the class, is fixed at creation.
                        ("schemaRef", given) if *given == doc["schemaRef"] => {}
                        ("schemaRef", _) => {
                            c.fail("schemaRef", "cannot change: create a new dataset instead")
                        }
                        // Catalog's other dataset fields: accepted, not stored by segport.
                        (key, _) if CATALOG_ONLY_FIELDS.contains(&key) => {}
                        _ => {
                            let hint = crate::suggest::hint(key, &["name", "description", "tags"]);
                            c.fail(
                                truncate(key),
                                format!(
                                    "unknown field `{}` (it cannot be changed){hint}",
                                    truncate(key)
                                ),
                            );
                        }
                    }
                }
                c.errors.into_result(())?;
            }
            _ => {
                return Err(ValidationErrors::single(
                    "body",
                    "must be a JSON Patch array or an object with name, description or tags",
                ))
            }
        }
        let checked = NewDataset::parse(&doc)?;
        if checked.class != self.class {
            return Err(ValidationErrors::single(
                "tags.segport:class",
                format!("cannot change: the dataset holds {} records", self.class.as_str()),
            ));
        }
        Ok(Dataset {
            name: checked.name,
            description: checked.description,
            tags: checked.tags,
            updated_ms: now_ms,
            ..self.clone()
        })
    }
}

/// A dataset as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub id: DatasetId,
    pub org: String,
    pub sandbox: String,
    pub name: String,
    pub description: Option<String>,
    pub schema_ref: SchemaRef,
    pub tags: BTreeMap<String, Vec<String>>,
    pub class: DatasetClass,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A tag value as segport compares it: without whitespace, in lower case.
pub fn normalized_tag(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

impl Dataset {
    /// True when the dataset feeds the profile store (`unifiedProfile: ["enabled:true"]`), the
    /// value compared without whitespace and case: AEP's own examples and clients write
    /// `"enabled: true"`, and a dataset read as not enabled would leave its profiles out of every
    /// export without a word.
    pub fn unified_profile(&self) -> bool {
        self.tags
            .get(UNIFIED_PROFILE_TAG)
            .is_some_and(|v| v.iter().any(|t| normalized_tag(t) == "enabled:true"))
    }

    /// The Catalog object (without its id key).
    pub fn to_wire(&self) -> Value {
        let mut obj = json!({
            "name": self.name,
            "imsOrg": self.org,
            "sandboxName": self.sandbox,
            "created": self.created_ms,
            "updated": self.updated_ms,
            "version": "1.0.0",
            "schemaRef": self.schema_ref,
            "tags": self.tags,
            // As AEP's dataset objects carry it (clients such as aepp read it).
            "classification": {
                "dataBehavior": match self.class {
                    DatasetClass::ExperienceEvent => "time-series",
                    DatasetClass::Profile | DatasetClass::Export => "record",
                },
                "managedBy": "CUSTOMER",
            },
        });
        if let Some(description) = &self.description {
            obj["description"] = json!(description);
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    /// A dataset of `class` with `tags`, the rest fixed.
    fn sample(class: DatasetClass, tags: BTreeMap<String, Vec<String>>) -> Dataset {
        Dataset {
            id: DatasetId::generate(),
            org: "o".into(),
            sandbox: "s".into(),
            name: "d".into(),
            description: None,
            schema_ref: SchemaRef { id: "x".into(), content_type: None },
            tags,
            class,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    /// Issue 8, point 10: dataset objects carry AEP's `classification`.
    #[test]
    fn dataset_objects_carry_a_classification() {
        let of = |class| sample(class, BTreeMap::new()).to_wire()["classification"].clone();
        assert_eq!(
            of(DatasetClass::Profile),
            json!({"dataBehavior": "record", "managedBy": "CUSTOMER"})
        );
        assert_eq!(of(DatasetClass::Export)["dataBehavior"], "record");
        assert_eq!(of(DatasetClass::ExperienceEvent)["dataBehavior"], "time-series");
    }

    /// Issue 8, point 8: `"enabled: true"` as AEP's examples and aepp write it enables profile.
    #[test]
    fn unified_profile_tag_values_are_normalised() {
        let with = |value: &str| {
            let tags = BTreeMap::from([(UNIFIED_PROFILE_TAG.to_owned(), vec![value.to_owned()])]);
            sample(DatasetClass::Profile, tags)
        };
        for on in ["enabled:true", "enabled: true", " Enabled : TRUE ", "enabled:\ttrue"] {
            assert!(with(on).unified_profile(), "{on:?}");
        }
        for off in ["enabled:false", "disabled", "enabled", "true", "enabled:truee"] {
            assert!(!with(off).unified_profile(), "{off:?}");
        }
    }

    use super::*;

    #[test]
    fn class_follows_schema_or_tag() {
        let d = NewDataset::parse(&json!({"name": "x", "schemaRef": {"id": PROFILE_UNION_SCHEMA}}))
            .unwrap();
        assert_eq!(d.class, DatasetClass::Export);
        let d = NewDataset::parse(&json!({
            "name": "x",
            "schemaRef": {"id": "https://ns.adobe.com/acme/schemas/1", "contentType": "application/vnd.adobe.xed+json;version=1"},
            "tags": {"segport:class": ["profile"], "unifiedProfile": ["enabled:true"]}
        }))
        .unwrap();
        assert_eq!(d.class, DatasetClass::Profile);
        let err = NewDataset::parse(
            &json!({"name": "x", "schemaRef": {"id": "https://ns.adobe.com/acme/schemas/1"}}),
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, "schemaRef.id");
        let alias =
            NewDataset::parse(&json!({"name": "x", "schemaRef": {"id": "_xdm.context.profile"}}));
        assert_eq!(alias.unwrap().class, DatasetClass::Export);
        let nul =
            NewDataset::parse(&json!({"name": "a\0b", "schemaRef": {"id": PROFILE_UNION_SCHEMA}}));
        assert_eq!(nul.unwrap_err().0[0].field, "name");
        let err = NewDataset::parse(&json!({"schemaRef": {}, "tags": {"a": "b"}})).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "tags.a", "schemaRef.id"]);
    }
}
