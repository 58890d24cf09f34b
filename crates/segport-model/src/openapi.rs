//! OpenAPI schemas of the wire types whose JSON is a validated string (ids, timestamps, field
//! lists): the derives of `utoipa::ToSchema` on the other wire types refer to these, so the
//! served description follows the types the API actually reads and writes.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A string schema with a description and an optional pattern.
pub(crate) fn string_schema(description: &str, pattern: Option<&str>) -> RefOr<Schema> {
    let mut builder = ObjectBuilder::new().schema_type(Type::String).description(Some(description));
    if let Some(pattern) = pattern {
        builder = builder.pattern(Some(pattern));
    }
    RefOr::T(Schema::Object(builder.build()))
}

impl utoipa::PartialSchema for crate::fields::FieldList {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "Comma-separated dotted field paths; empty means every field. Each path is segments \
             of [A-Za-z0-9_@:$-]+ joined by dots.",
            None,
        )
    }
}

impl utoipa::ToSchema for crate::fields::FieldList {}

impl utoipa::PartialSchema for crate::time::Rfc3339 {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some("An RFC 3339 timestamp."))
            .build();
        RefOr::T(Schema::Object(schema))
    }
}

impl utoipa::ToSchema for crate::time::Rfc3339 {}
