//! What a client sends to upload a dictation, validated in one place: the
//! chunked upload's start body ([`StartUpload`]), a chunk's `Content-Range`
//! ([`ChunkRange`]), a path's key, and the schemas that describe them.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::recordings::NewRecording;
use crate::recordings::model::{
    FREE_TEXT_PATTERN, duration_schema, free_text_issue, non_negative_int, patient_id_schema,
};
use crate::validation::ValidationIssue;

/// The body that starts (or resumes) a chunked upload.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct StartUpload {
    /// The client's id for the dictation.
    pub local_storage_key: Uuid,
    #[schema(schema_with = patient_id_schema)]
    pub patient_id: String,
    #[schema(schema_with = duration_schema)]
    pub duration_seconds: i64,
    /// The audio's whole length in bytes (at most PWA_MAX_UPLOAD_MB).
    #[schema(minimum = 1)]
    pub total_bytes: i64,
    #[schema(schema_with = draft_transcript_schema)]
    pub draft_transcript: Option<String>,
}

impl StartUpload {
    /// Validates a JSON body as the JSON create does (same rules, same issues),
    /// reporting every problem at once.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let mut issues = Vec::new();
        let new = NewRecording::from_json(body)
            .map_err(|mut found| issues.append(&mut found))
            .ok();
        let key = match body.get("local_storage_key") {
            Some(Value::String(raw)) => match Uuid::parse_str(raw) {
                Ok(key) => Some(key),
                Err(e) => {
                    issues.push(key_issue(body_loc("local_storage_key"), raw, &e));
                    None
                }
            },
            other => {
                let (kind, msg) = match other {
                    None => ("missing", "Field required"),
                    Some(_) => ("string_type", "Input should be a valid string"),
                };
                issues.push(ValidationIssue::new(
                    kind,
                    body_loc("local_storage_key"),
                    msg,
                    other.cloned().unwrap_or(Value::Null),
                ));
                None
            }
        };
        let mut ignored = Vec::new();
        let total = match body
            .get("total_bytes")
            // A number (12.0 counts, as in JSON Schema), not a numeric string.
            .filter(|v| v.is_number())
            .and_then(|v| non_negative_int("total_bytes", v, &mut ignored))
        {
            Some(n) if n > 0 => Some(n),
            _ => {
                issues.push(
                    ValidationIssue::new(
                        "greater_than",
                        body_loc("total_bytes"),
                        "Input should be a whole number of bytes greater than 0",
                        body.get("total_bytes").cloned().unwrap_or(Value::Null),
                    )
                    .with_ctx(json!({"gt": 0})),
                );
                None
            }
        };
        let draft = match body.get("draft_transcript") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                issues.extend(free_text_issue(body_loc("draft_transcript"), s));
                Some(s.clone())
            }
            Some(other) => {
                issues.push(ValidationIssue::new(
                    "string_type",
                    body_loc("draft_transcript"),
                    "Input should be a valid string",
                    other.clone(),
                ));
                None
            }
        };
        match (new, key, total) {
            (Some(new), Some(local_storage_key), Some(total_bytes)) if issues.is_empty() => {
                Ok(Self {
                    local_storage_key,
                    patient_id: new.patient_id,
                    duration_seconds: new.duration_seconds,
                    total_bytes,
                    draft_transcript: draft,
                })
            }
            _ => Err(issues),
        }
    }
}

/// The bytes a chunk carries: `Content-Range: bytes START-END/TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// The first byte's offset.
    pub start: i64,
    /// The last byte's offset (inclusive).
    pub end: i64,
    /// The whole upload's length.
    pub total: i64,
}

/// A `Content-Range` that is missing or not `bytes START-END/TOTAL` with
/// START ≤ END < TOTAL.
#[derive(Debug, thiserror::Error)]
#[error("Expected a Content-Range header such as `bytes 0-1048575/52428800`")]
pub struct BadContentRange;

impl ChunkRange {
    /// Parses a `Content-Range` header value.
    pub fn parse(value: Option<&str>) -> Result<Self, BadContentRange> {
        let rest = value
            .ok_or(BadContentRange)?
            .trim()
            .strip_prefix("bytes ")
            .ok_or(BadContentRange)?;
        let (range, total) = rest.split_once('/').ok_or(BadContentRange)?;
        let (start, end) = range.split_once('-').ok_or(BadContentRange)?;
        let parse = |s: &str| s.trim().parse::<i64>().map_err(|_| BadContentRange);
        let (start, end, total) = (parse(start)?, parse(end)?, parse(total)?);
        if start < 0 || end < start || end >= total {
            return Err(BadContentRange);
        }
        Ok(Self { start, end, total })
    }
}

fn body_loc(field: &str) -> Vec<Value> {
    vec![json!("body"), json!(field)]
}

/// A `local_storage_key` that is not a UUID.
pub fn key_issue(loc: Vec<Value>, raw: &str, e: &uuid::Error) -> ValidationIssue {
    ValidationIssue::new(
        "uuid_parsing",
        loc,
        format!("Input should be a valid UUID, {e}"),
        Value::String(raw.to_owned()),
    )
}

/// The `local_storage_key` in a path (the issues in a list, like every
/// validation here).
pub fn path_key(raw: &str) -> Result<Uuid, Vec<ValidationIssue>> {
    Uuid::parse_str(raw).map_err(|e| {
        vec![key_issue(
            vec![json!("path"), json!("local_storage_key")],
            raw,
            &e,
        )]
    })
}

/// The schema of a draft transcript: see [`FREE_TEXT_PATTERN`].
pub fn draft_transcript_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(FREE_TEXT_PATTERN))
        .description(Some(
            "The transcript the device drafted, if any: no control characters but tab and line breaks",
        ))
        .build()
}
