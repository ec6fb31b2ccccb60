//! Validation problems, in pydantic's shape: the one vocabulary every input
//! check uses (models, extractors, handlers), independent of HTTP. A list of
//! them becomes a 422 at the HTTP boundary (`error::ApiError::Validation`).

use serde::Serialize;
use serde_json::Value;

/// One validation problem, as pydantic reports it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ValidationIssue {
    /// Machine-readable kind: `missing`, `int_parsing`, `string_type`, `enum`, ...
    #[serde(rename = "type")]
    #[schema(example = "missing")]
    pub kind: &'static str,
    /// Where: `["body", "patient_id"]`, `["query", "status"]`,
    /// `["path", "recording_id"]`, `["body", 21]` (a character position).
    #[schema(schema_with = loc_schema)]
    pub loc: Vec<Value>,
    /// Human-readable message.
    pub msg: String,
    /// The offending input, of whatever type it was (`null` when absent).
    #[schema(schema_with = any_value_schema)]
    pub input: Value,
    /// Extra facts about the constraint, e.g. `{"ge": 0}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = ctx_schema, required = false)]
    pub ctx: Option<Value>,
}

/// `loc`: names (strings) and positions (integers).
fn loc_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(ObjectBuilder::new().schema_type(Type::Integer)),
        )
        .build()
}

/// Any JSON value.
fn any_value_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
        .build()
}

/// An object of constraint facts.
fn ctx_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .build()
}

impl ValidationIssue {
    /// An issue at `loc` without context.
    pub fn new(kind: &'static str, loc: Vec<Value>, msg: impl Into<String>, input: Value) -> Self {
        Self {
            kind,
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    /// Adds pydantic's `ctx` object.
    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }
}
