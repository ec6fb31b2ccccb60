//! The recording: what a dictation becomes on the server.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::timestamp::Timestamp;
use crate::validation::ValidationIssue;

/// Where a recording is in its life: created, uploaded, transcribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStatus {
    /// Created, audio not yet received.
    Pending,
    /// Audio upload in progress.
    Uploading,
    /// Audio stored, waiting for transcription.
    Queued,
    /// Being transcribed.
    Processing,
    /// Transcribed and verified.
    Completed,
    /// Processing failed; see `error_message`.
    Error,
}

impl RecordingStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Uploading,
        Self::Queued,
        Self::Processing,
        Self::Completed,
        Self::Error,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Uploading => "uploading",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Error => "error",
        }
    }

    /// Whether processing has ended (successfully or not).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Error)
    }
}

/// Who moves a recording from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusActor {
    /// The transcription worker.
    Worker,
    /// A clinician, with `PATCH /api/v1/recordings/{id}` (or `POST …/retry`).
    Clinician,
}

/// The life-cycle, written down once: every move a recording's status can
/// make, and who makes it (docs/API.md shows the same table). A recording is
/// born `pending` (created without audio; it stays so) or `queued` (its audio
/// stored); `uploading` is found only in the original's data. Nothing else
/// moves a status.
pub const STATUS_TRANSITIONS: [(RecordingStatus, RecordingStatus, StatusActor); 5] = {
    use RecordingStatus::{Completed, Error, Processing, Queued};
    use StatusActor::{Clinician, Worker};
    [
        (Queued, Processing, Worker),
        (Processing, Completed, Worker),
        (Processing, Error, Worker),
        // An attempt failed and will be retried, or the server stopped mid-job.
        (Processing, Queued, Worker),
        // Transcribe again after a failure (what `POST …/retry` does).
        (Error, Queued, Clinician),
    ]
};

impl RecordingStatus {
    /// The issue for a value that is not a status, as pydantic words it.
    pub fn issue(loc: Vec<Value>, input: Value) -> ValidationIssue {
        const EXPECTED: &str =
            "'pending', 'uploading', 'queued', 'processing', 'completed' or 'error'";
        ValidationIssue::new("enum", loc, format!("Input should be {EXPECTED}"), input)
            .with_ctx(json!({ "expected": EXPECTED }))
    }

    /// The statuses a clinician may move a recording in this status to.
    pub fn clinician_moves(self) -> Vec<Self> {
        STATUS_TRANSITIONS
            .iter()
            .filter(|(from, _, actor)| *from == self && *actor == StatusActor::Clinician)
            .map(|(_, to, _)| *to)
            .collect()
    }
}

/// A clinician's change to a recording (`PATCH /api/v1/recordings/{id}`, a
/// JSON merge patch, RFC 7396): a field absent is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingPatch {
    /// The corrected text (`Some(None)`: cleared). `transcript` keeps the engine's.
    pub final_transcript: Option<Option<String>>,
    /// The patient, when the dictation was filed under the wrong one.
    pub patient_id: Option<String>,
    /// A move along [`STATUS_TRANSITIONS`] that a clinician may make.
    pub status: Option<RecordingStatus>,
}

/// The body of `PATCH /api/v1/recordings/{id}`, as the API document shows it
/// (requests are read by [`RecordingPatch::from_json`]).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingPatchBody {
    /// The corrected text (null clears it).
    #[schema(schema_with = final_transcript_schema)]
    pub final_transcript: Option<String>,
    /// The patient the dictation is about.
    #[schema(schema_with = patient_id_schema)]
    pub patient_id: Option<String>,
    /// A status move a clinician may make (see docs/API.md); never null.
    #[schema(nullable = false)]
    pub status: Option<RecordingStatus>,
}

/// The schema of a corrected transcript: see [`FREE_TEXT_PATTERN`].
pub fn final_transcript_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(TRANSCRIPT_MAX_CHARS))
        .pattern(Some(FREE_TEXT_PATTERN))
        .description(Some(
            "The corrected text (null clears it): at most 200,000 characters, no control characters but tab and line breaks",
        ))
        .build()
}

/// A 412's body: why, and the recording as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaleBody {
    /// What happened.
    pub detail: String,
    /// The current recording (its version is the new `ETag`).
    pub current: Recording,
}

/// Every field of a recording's JSON, in order (a unit test checks that it
/// lists them all).
pub const RECORDING_FIELDS: [&str; 38] = [
    "id",
    "patient_id",
    "clinician_id",
    "audio_file_path",
    "audio_file_size",
    "duration_seconds",
    "status",
    "error_message",
    "retry_count",
    "created_at",
    "updated_at",
    "uploaded_at",
    "processed_at",
    "transcript",
    "verification_results",
    "local_storage_key",
    "draft_transcript",
    "final_transcript",
    "upload_attempts",
    "audio_sha256",
    "audio_content_type",
    "whisper_model",
    "transcription_started_at",
    "transcription_completed_at",
    "transcript_language",
    "transcript_segments",
    "fhir_bundle",
    "llm_model",
    "extraction_started_at",
    "extraction_completed_at",
    "verification_score",
    "verified_at",
    "signed_at",
    "signed_by",
    "signed_sha256",
    "amendments",
    "acknowledgements",
    "version",
];
/// The longest accepted `final_transcript`, in characters (hours of speech).
pub const TRANSCRIPT_MAX_CHARS: usize = 200_000;

impl RecordingPatch {
    /// Validates a merge-patch body: every problem reported, unknown and
    /// read-only fields named.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let object = body_object(body)?;
        let mut issues = Vec::new();
        let mut patch = Self::default();
        for (field, value) in object {
            match field.as_str() {
                "final_transcript" => match value {
                    Value::Null => patch.final_transcript = Some(None),
                    v => {
                        if let Some(text) = transcript_field(field, v, &mut issues) {
                            patch.final_transcript = Some(Some(text));
                        }
                    }
                },
                "patient_id" => {
                    patch.patient_id =
                        text_field(field, value, 1, PATIENT_ID_MAX_CHARS, &mut issues);
                }
                "status" => match value.as_str().map(str::parse::<RecordingStatus>) {
                    Some(Ok(status)) => patch.status = Some(status),
                    _ => issues.push(RecordingStatus::issue(body_loc(field), value.clone())),
                },
                other => {
                    let msg = if RECORDING_FIELDS.contains(&other) {
                        "This field is read-only; a patch may change final_transcript, patient_id and status"
                    } else {
                        "Extra inputs are not permitted; a patch may change final_transcript, patient_id and status"
                    };
                    issues.push(ValidationIssue::new(
                        "extra_forbidden",
                        body_loc(other),
                        msg,
                        value.clone(),
                    ));
                }
            }
        }
        if issues.is_empty() {
            Ok(patch)
        } else {
            Err(issues)
        }
    }

    /// The same patch without the fields that would not change `current`.
    pub fn changes_to(&self, current: &Recording) -> Self {
        Self {
            final_transcript: self
                .final_transcript
                .clone()
                .filter(|t| *t != current.upload.final_transcript),
            patient_id: self.patient_id.clone().filter(|p| *p != current.patient_id),
            status: self.status.filter(|s| *s != current.status),
        }
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A corrected transcript: free text (see [`free_text_issue`]) of at most
/// [`TRANSCRIPT_MAX_CHARS`].
fn transcript_field(
    field: &str,
    value: &Value,
    issues: &mut Vec<ValidationIssue>,
) -> Option<String> {
    let issue = |kind, msg: &str| ValidationIssue::new(kind, body_loc(field), msg, value.clone());
    let Some(s) = value.as_str() else {
        issues.push(issue("string_type", "Input should be a valid string"));
        return None;
    };
    if s.chars().count() > TRANSCRIPT_MAX_CHARS {
        issues.push(
            issue(
                "string_too_long",
                "String should have at most 200000 characters",
            )
            .with_ctx(json!({ "max_length": TRANSCRIPT_MAX_CHARS })),
        );
        return None;
    }
    match free_text_issue(body_loc(field), s) {
        Some(refused) => {
            issues.push(refused);
            None
        }
        None => Some(s.to_owned()),
    }
}

impl fmt::Display for RecordingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that is not one of the six statuses (exact, lower case).
#[derive(Debug, thiserror::Error)]
#[error("unknown recording status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RecordingStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A clinical recording, as stored and as answered by the API (all 15 fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Recording {
    /// Server-generated id.
    pub id: Uuid,
    /// The patient the dictation is about.
    pub patient_id: String,
    /// The clinician who made it.
    pub clinician_id: String,
    /// Where the client kept the audio (metadata only: never opened by the server).
    pub audio_file_path: Option<String>,
    /// Audio size in bytes.
    pub audio_file_size: Option<i64>,
    /// Length of the dictation in seconds.
    pub duration_seconds: Option<i64>,
    /// Life-cycle state.
    pub status: RecordingStatus,
    /// Why processing failed, when `status` is `error`.
    pub error_message: Option<String>,
    /// How many times processing was retried.
    pub retry_count: i64,
    /// When the recording was created (RFC 3339, UTC).
    #[schema(value_type = String, format = DateTime, example = "2026-11-27T23:53:30.306917Z")]
    pub created_at: Timestamp,
    /// When it last changed.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// When its audio arrived.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub uploaded_at: Option<Timestamp>,
    /// When processing ended.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub processed_at: Option<Timestamp>,
    /// The transcript, once processed.
    pub transcript: Option<String>,
    /// The clinical guardrails' check of the note's text (what `POST
    /// /api/v1/verify` answers), stored with the text; a recording from the
    /// original may hold the original's own object.
    #[schema(value_type = Option<Object>)]
    pub verification_results: Option<Value>,
    /// How the audio arrived (flattened into the same JSON object).
    #[serde(flatten)]
    pub upload: UploadDetails,
    /// What processing made of it (flattened into the same JSON object).
    #[serde(flatten)]
    pub processing: Processing,
    /// Its signature and amendments (flattened into the same JSON object).
    #[serde(flatten)]
    pub signoff: SignOff,
    /// Grows by one on every change, by anyone (the clinician, an upload,
    /// the transcription worker); also the recording's `ETag` (`"<version>"`).
    #[schema(minimum = 1, example = 1)]
    pub version: i64,
}

/// A recording's processing: the original's later columns, and what the
/// transcription engine returned beside the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Processing {
    /// The speech model that transcribed it (the original's default, `base`,
    /// until one has).
    pub whisper_model: String,
    /// When a worker began transcribing it (the last attempt).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub transcription_started_at: Option<Timestamp>,
    /// When its transcript was stored.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub transcription_completed_at: Option<Timestamp>,
    /// The language the engine heard (ISO 639-1, e.g. `en`).
    pub transcript_language: Option<String>,
    /// The transcript in timed segments, each with the engine's confidence.
    pub transcript_segments: Option<Vec<Segment>>,
    /// A FHIR bundle of the extracted facts (the original's column; not yet filled).
    #[schema(value_type = Option<Object>)]
    pub fhir_bundle: Option<Value>,
    /// The language model that extracted the facts (null with the embedded engine).
    pub llm_model: Option<String>,
    /// When the check's extraction began.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub extraction_started_at: Option<Timestamp>,
    /// When the check's extraction ended.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub extraction_completed_at: Option<Timestamp>,
    /// The check's score (`verification_results.score`).
    pub verification_score: Option<f64>,
    /// When the note's text was checked.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub verified_at: Option<Timestamp>,
}

/// A note's signature, and the corrections made after it.
///
/// Once signed, a note's text, patient and signature never change (the
/// database refuses it too); a correction is an [`Amendment`], added after
/// the signed text and never in its place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignOff {
    /// When the note was signed (null: not yet).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub signed_at: Option<Timestamp>,
    /// The clinician who signed it.
    pub signed_by: Option<String>,
    /// SHA-256 (lower-case hex) of the text signed, `final_transcript` as UTF-8.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub signed_sha256: Option<String>,
    /// Corrections made after signing, oldest first.
    pub amendments: Vec<Amendment>,
    /// The guardrails' alerts the signer acknowledged, with a reason, when
    /// signing (every critical one must be).
    pub acknowledgements: Vec<Acknowledgement>,
}

/// An alert of the note's check, acknowledged by the clinician who signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Acknowledgement {
    /// The alert's id in the check (`verification_results.alerts[].id`).
    pub alert_id: String,
    /// Its rule.
    pub rule_id: String,
    /// Its severity.
    pub severity: String,
    /// Its message, as the clinician saw it.
    pub message: String,
    /// Why the note is right as it is.
    pub reason: String,
    /// The clinician who acknowledged it.
    pub by: String,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// A correction to a signed note: kept beside it with its author and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Amendment {
    /// The correction, as the clinician wrote it.
    pub text: String,
    /// Why it was needed.
    pub reason: String,
    /// The clinician who made it.
    pub author: String,
    /// When it was made.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// The longest accepted reason for an amendment, in characters.
pub const AMENDMENT_REASON_MAX_CHARS: usize = 1000;

/// The body of `POST /api/v1/recordings/{id}/amendments` (read by
/// [`AmendmentRequest::from_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendmentRequest {
    /// The correction: 1–200,000 characters, not only whitespace, no control
    /// characters but tab and line breaks.
    #[schema(schema_with = amendment_text_schema)]
    pub text: String,
    /// Why: 1–1,000 characters, not only whitespace, no control characters.
    #[schema(schema_with = amendment_reason_schema)]
    pub reason: String,
}

impl AmendmentRequest {
    /// Validates a body: every problem reported at once.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let object = body_object(body)?;
        let mut issues = Vec::new();
        let text = required(object, body, "text", &mut issues).and_then(|v| {
            let text = transcript_field("text", v, &mut issues)?;
            // Blank as the schema's `\s` sees it (which counts U+FEFF).
            if text.chars().all(|c| c.is_whitespace() || c == '\u{feff}') {
                issues.push(
                    ValidationIssue::new(
                        "string_too_short",
                        body_loc("text"),
                        "String should have at least 1 character (and not only whitespace)",
                        v.clone(),
                    )
                    .with_ctx(json!({ "min_length": 1 })),
                );
                return None;
            }
            Some(text)
        });
        let reason = required(object, body, "reason", &mut issues)
            .and_then(|v| text_field("reason", v, 1, AMENDMENT_REASON_MAX_CHARS, &mut issues));
        for field in object
            .keys()
            .filter(|k| !matches!(k.as_str(), "text" | "reason"))
        {
            issues.push(ValidationIssue::new(
                "extra_forbidden",
                body_loc(field),
                "Extra inputs are not permitted; an amendment has text and reason",
                object[field].clone(),
            ));
        }
        match (text, reason) {
            (Some(text), Some(reason)) if issues.is_empty() => Ok(Self { text, reason }),
            _ => Err(issues),
        }
    }
}

/// The longest accepted reason for acknowledging an alert, in characters.
pub const ACKNOWLEDGEMENT_REASON_MAX_CHARS: usize = 1000;

/// The body of `POST /api/v1/recordings/{id}/sign` (optional; read by
/// [`SignRequest::from_json`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The alerts of the note's check acknowledged, each with a reason:
    /// every critical one must be.
    #[serde(default)]
    pub acknowledgements: Vec<GivenAcknowledgement>,
}

/// An alert acknowledged in a signature request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GivenAcknowledgement {
    /// The alert's id (`verification_results.alerts[].id`).
    #[schema(schema_with = alert_id_schema)]
    pub alert_id: String,
    /// Why the note is right as it is: 1–1,000 characters, not only
    /// whitespace, no control or invisible formatting characters.
    #[schema(schema_with = amendment_reason_schema)]
    pub reason: String,
}

impl SignRequest {
    /// Validates a body (None: no body, nothing acknowledged): every
    /// problem reported at once.
    pub fn from_json(body: Option<&Value>) -> Result<Self, Vec<ValidationIssue>> {
        let Some(body) = body else {
            return Ok(Self::default());
        };
        let object = body_object(body)?;
        let mut issues = Vec::new();
        for field in object.keys().filter(|k| k.as_str() != "acknowledgements") {
            issues.push(ValidationIssue::new(
                "extra_forbidden",
                body_loc(field),
                "Extra inputs are not permitted; a signature takes acknowledgements",
                object[field].clone(),
            ));
        }
        let mut acknowledgements = Vec::new();
        match object.get("acknowledgements") {
            None => {}
            Some(Value::Array(items)) => {
                for (n, item) in items.iter().enumerate() {
                    let loc = |key: &str| {
                        vec![
                            json!("body"),
                            json!("acknowledgements"),
                            json!(n),
                            json!(key),
                        ]
                    };
                    let Some(item) = item.as_object() else {
                        issues.push(ValidationIssue::new(
                            "model_type",
                            vec![json!("body"), json!("acknowledgements"), json!(n)],
                            "Input should be an object with alert_id and reason",
                            item.clone(),
                        ));
                        continue;
                    };
                    let mut field = |key: &str, max: usize| -> Option<String> {
                        let mut found = Vec::new();
                        let value = match item.get(key) {
                            Some(v) => v,
                            None => {
                                issues.push(ValidationIssue::new(
                                    "missing",
                                    loc(key),
                                    "Field required",
                                    Value::Null,
                                ));
                                return None;
                            }
                        };
                        let text = text_field(key, value, 1, max, &mut found);
                        issues.extend(found.into_iter().map(|mut issue| {
                            issue.loc = loc(key);
                            issue
                        }));
                        text
                    };
                    let alert_id = field("alert_id", ALERT_ID_MAX_CHARS);
                    let reason = field("reason", ACKNOWLEDGEMENT_REASON_MAX_CHARS);
                    for key in item
                        .keys()
                        .filter(|k| !matches!(k.as_str(), "alert_id" | "reason"))
                    {
                        issues.push(ValidationIssue::new(
                            "extra_forbidden",
                            loc(key),
                            "Extra inputs are not permitted; an acknowledgement has alert_id and reason",
                            item[key].clone(),
                        ));
                    }
                    if let (Some(alert_id), Some(reason)) = (alert_id, reason) {
                        acknowledgements.push(GivenAcknowledgement { alert_id, reason });
                    }
                }
            }
            Some(other) => issues.push(ValidationIssue::new(
                "list_type",
                body_loc("acknowledgements"),
                "Input should be a valid list",
                other.clone(),
            )),
        }
        if issues.is_empty() {
            Ok(Self { acknowledgements })
        } else {
            Err(issues)
        }
    }
}

/// What an amendment's text must match: free text (see
/// [`FREE_TEXT_PATTERN`]) with at least one character that is not whitespace.
pub const AMENDMENT_TEXT_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// The schema of an amendment's text: see [`AMENDMENT_TEXT_PATTERN`].
pub fn amendment_text_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(TRANSCRIPT_MAX_CHARS))
        .pattern(Some(AMENDMENT_TEXT_PATTERN))
        .description(Some(
            "The correction: 1–200,000 characters, not only whitespace, no control characters but tab and line breaks",
        ))
        .build()
}

/// The schema of an amendment's reason: a patient id's rules, longer.
pub fn amendment_reason_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(AMENDMENT_REASON_MAX_CHARS))
        .pattern(Some(PATIENT_ID_PATTERN))
        .description(Some(
            "Why: 1–1,000 characters, not only whitespace, no control or invisible formatting characters",
        ))
        .build()
}

/// The longest alert id an acknowledgement may name.
pub const ALERT_ID_MAX_CHARS: usize = 200;

/// The schema of an acknowledged alert's id: a patient id's rules.
pub fn alert_id_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(ALERT_ID_MAX_CHARS))
        .pattern(Some(PATIENT_ID_PATTERN))
        .description(Some(
            "An alert's id: 1–200 characters, not only whitespace, no control or invisible formatting characters",
        ))
        .build()
}

/// The default model name the original stored for every recording.
pub const DEFAULT_WHISPER_MODEL: &str = "base";

impl Default for Processing {
    fn default() -> Self {
        Self {
            whisper_model: DEFAULT_WHISPER_MODEL.to_owned(),
            transcription_started_at: None,
            transcription_completed_at: None,
            transcript_language: None,
            transcript_segments: None,
            fhir_bundle: None,
            llm_model: None,
            extraction_started_at: None,
            extraction_completed_at: None,
            verification_score: None,
            verified_at: None,
        }
    }
}

/// A timed piece of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    /// Start, in seconds from the beginning of the audio.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The words.
    pub text: String,
    /// The engine's confidence in these words, from 0 to 1 (for Whisper
    /// engines, the mean probability of the segment's tokens).
    pub confidence: Option<f64>,
}

/// A recording's upload: the original's Phase 2 fields and what audio storage
/// needs. All empty (and `upload_attempts` 0) for a recording created without audio.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadDetails {
    /// The client's id for the dictation (a UUID it made when recording began);
    /// unique per clinician, it makes retried uploads find the first one.
    pub local_storage_key: Option<Uuid>,
    /// The transcript the device drafted while recording, if any.
    pub draft_transcript: Option<String>,
    /// The reviewed transcript, once the clinician has signed it off.
    pub final_transcript: Option<String>,
    /// How many times the client sent this dictation (retries included).
    pub upload_attempts: i64,
    /// SHA-256 of the stored audio, lower-case hex (also its `ETag`).
    pub audio_sha256: Option<String>,
    /// MIME type of the stored audio, from its container's signature.
    pub audio_content_type: Option<String>,
}

/// Characters no identifier may hold, as a regular-expression class body:
/// control characters (Cc) and format characters (Cf) of the Basic
/// Multilingual Plane. (The server also refuses the few format characters
/// beyond it, which a pattern cannot name portably.)
macro_rules! forbidden_in_identifiers {
    () => {
        r"\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    };
}

/// What a `patient_id` must match: no control or format characters, and at
/// least one character that is not whitespace.
pub const PATIENT_ID_PATTERN: &str = concat!(
    "^[^",
    forbidden_in_identifiers!(),
    "]*[^\\s",
    forbidden_in_identifiers!(),
    "][^",
    forbidden_in_identifiers!(),
    "]*$"
);

/// What a draft transcript must match: no control characters but tab, line
/// feed and carriage return.
pub const FREE_TEXT_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// What `duration_seconds` may be as a string (pydantic's lax mode): digits,
/// optionally signed with `+`, surrounded by whitespace.
pub const DURATION_STRING_PATTERN: &str = r"^\s*\+?[0-9]{1,18}\s*$";

/// The schema of `duration_seconds`: a whole number ≥ 0, or a string of one.
pub fn duration_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(i64::MAX)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(DURATION_STRING_PATTERN)),
        )
        .description(Some(
            "Length in seconds (≥ 0); a numeric string such as `\"120\"` is accepted",
        ))
        .examples([serde_json::json!(120)])
        .build()
        .into()
}

/// The schema of `patient_id`: see [`PATIENT_ID_PATTERN`].
pub fn patient_id_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(PATIENT_ID_MAX_CHARS))
        .pattern(Some(PATIENT_ID_PATTERN))
        .description(Some(
            "The patient, 1–128 characters, not only whitespace, no control or invisible formatting characters",
        ))
        .examples([serde_json::json!("patient-001")])
        .build()
}

/// What a client sends to create a recording (`POST /api/v1/recordings`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct NewRecording {
    /// The patient, 1–128 characters, not only whitespace, no control or
    /// invisible formatting characters.
    #[schema(schema_with = patient_id_schema)]
    pub patient_id: String,
    /// Length in seconds (≥ 0). A numeric string such as `"120"` is accepted.
    #[schema(schema_with = duration_schema)]
    pub duration_seconds: i64,
    /// Client-side location of the audio (metadata).
    #[schema(max_length = 1024)]
    #[serde(default)]
    pub audio_file_path: Option<String>,
}

/// The longest accepted `patient_id`.
pub const PATIENT_ID_MAX_CHARS: usize = 128;
/// The longest accepted `audio_file_path`.
pub const AUDIO_PATH_MAX_CHARS: usize = 1024;

impl NewRecording {
    /// Validates a JSON request body the way the original's pydantic model did,
    /// minus its bugs (see docs/API.md): one issue per bad field, all reported.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let object = body_object(body)?;
        let mut issues = Vec::new();
        let patient_id = required(object, body, "patient_id", &mut issues)
            .and_then(|v| text_field("patient_id", v, 1, PATIENT_ID_MAX_CHARS, &mut issues));
        let duration_seconds = required(object, body, "duration_seconds", &mut issues)
            .and_then(|v| non_negative_int("duration_seconds", v, &mut issues));
        let audio_file_path = match object.get("audio_file_path") {
            None | Some(Value::Null) => Some(None),
            Some(v) => {
                text_field("audio_file_path", v, 0, AUDIO_PATH_MAX_CHARS, &mut issues).map(Some)
            }
        };
        match (patient_id, duration_seconds, audio_file_path) {
            (Some(patient_id), Some(duration_seconds), Some(audio_file_path))
                if issues.is_empty() =>
            {
                Ok(Self {
                    patient_id,
                    duration_seconds,
                    audio_file_path,
                })
            }
            _ => Err(issues),
        }
    }
}

/// A JSON body's object, or pydantic's issue for anything else.
fn body_object(body: &Value) -> Result<&Map<String, Value>, Vec<ValidationIssue>> {
    body.as_object().ok_or_else(|| {
        vec![ValidationIssue::new(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            body.clone(),
        )]
    })
}

fn body_loc(field: &str) -> Vec<Value> {
    vec![json!("body"), json!(field)]
}

fn required<'a>(
    object: &'a Map<String, Value>,
    body: &Value,
    field: &str,
    issues: &mut Vec<ValidationIssue>,
) -> Option<&'a Value> {
    let value = object.get(field);
    if value.is_none() {
        issues.push(ValidationIssue::new(
            "missing",
            body_loc(field),
            "Field required",
            body.clone(),
        ));
    }
    value
}

/// A string of `min..=max` characters with no control characters; whitespace-only
/// counts as empty when `min > 0`.
fn text_field(
    field: &str,
    value: &Value,
    min: usize,
    max: usize,
    issues: &mut Vec<ValidationIssue>,
) -> Option<String> {
    let mut fail = |kind, msg: String, ctx: Option<Value>| {
        let mut issue = ValidationIssue::new(kind, body_loc(field), msg, value.clone());
        issue.ctx = ctx;
        issues.push(issue);
        None
    };
    let Some(s) = value.as_str() else {
        return fail("string_type", "Input should be a valid string".into(), None);
    };
    if min > 0 && s.trim().chars().count() < min {
        return fail(
            "string_too_short",
            format!("String should have at least {min} character (and not only whitespace)"),
            Some(json!({ "min_length": min })),
        );
    }
    if s.chars().count() > max {
        return fail(
            "string_too_long",
            format!("String should have at most {max} characters"),
            Some(json!({ "max_length": max })),
        );
    }
    if s.chars().any(|c| c.is_control() || is_format_character(c)) {
        return fail(
            "string_pattern_mismatch",
            "String should not contain control characters or invisible formatting characters"
                .into(),
            None,
        );
    }
    Some(s.to_owned())
}

/// Unicode's format characters (general category Cf): zero-width spaces and
/// joiners, bidirectional overrides, the byte order mark. Invisible, so two
/// identifiers that differ only by them look identical.
pub fn is_format_character(c: char) -> bool {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;
    CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
}

/// Free text from a device (a draft transcript): any characters but control
/// characters other than tab, line feed and carriage return (NUL among them,
/// which PostgreSQL cannot store). Format characters are allowed here: scripts
/// such as Persian need the zero-width non-joiner.
pub fn free_text_issue(loc: Vec<Value>, text: &str) -> Option<ValidationIssue> {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        .then(|| {
            ValidationIssue::new(
                "string_pattern_mismatch",
                loc,
                "String should not contain control characters other than tab and line breaks",
                Value::String(text.to_owned()),
            )
        })
}

/// An integer ≥ 0 with pydantic's lax coercions: `"120"` and `12.0` are 120 and 12;
/// booleans, fractions, and values beyond 64 bits are rejected.
pub fn non_negative_int(
    field: &str,
    value: &Value,
    issues: &mut Vec<ValidationIssue>,
) -> Option<i64> {
    let mut fail = |kind, msg: &str| {
        issues.push(ValidationIssue::new(
            kind,
            body_loc(field),
            msg,
            value.clone(),
        ));
        None
    };
    const TOO_BIG: &str = "Input should be a valid integer, the number is too large";
    let n = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i
            } else if n.is_u64() {
                return fail("int_parsing_size", TOO_BIG);
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    return fail(
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    );
                }
                // 2^63: the first magnitude beyond i64.
                if f.abs() >= 9_223_372_036_854_775_808.0 {
                    return fail("int_parsing_size", TOO_BIG);
                }
                f as i64
            }
        }
        Value::String(s) => {
            let t = s.trim();
            match t.parse::<i64>() {
                Ok(i) => i,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                    ) =>
                {
                    return fail("int_parsing_size", TOO_BIG);
                }
                Err(_) => {
                    return fail(
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                    );
                }
            }
        }
        _ => return fail("int_type", "Input should be a valid integer"),
    };
    if n < 0 {
        issues.push(
            ValidationIssue::new(
                "greater_than_equal",
                body_loc(field),
                "Input should be greater than or equal to 0",
                value.clone(),
            )
            .with_ctx(json!({ "ge": 0 })),
        );
        return None;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(body: Value) -> Vec<(&'static str, Vec<Value>)> {
        NewRecording::from_json(&body)
            .unwrap_err()
            .into_iter()
            .map(|i| (i.kind, i.loc))
            .collect()
    }

    #[test]
    fn status_parses_exactly_and_serialises_lowercase() {
        for status in RecordingStatus::ALL {
            assert_eq!(status.as_str().parse::<RecordingStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
        assert!("Pending".parse::<RecordingStatus>().is_err());
        assert!("".parse::<RecordingStatus>().is_err());
        assert!("done".parse::<RecordingStatus>().is_err());
        assert!(RecordingStatus::Error.is_final() && !RecordingStatus::Processing.is_final());
    }

    #[test]
    fn recording_round_trips_through_json_with_all_fields() {
        let rec = Recording {
            id: Uuid::parse_str("6f1c1f0e-7b2a-4c39-9d0e-0a1b2c3d4e5f").unwrap(),
            patient_id: "patient-001".into(),
            clinician_id: "clinician-001".into(),
            audio_file_path: Some("/uploads/audio_001.webm".into()),
            audio_file_size: Some(1024),
            duration_seconds: Some(120),
            status: RecordingStatus::Completed,
            error_message: None,
            retry_count: 2,
            created_at: Timestamp::parse("2026-11-27T23:53:30.306917Z").unwrap(),
            updated_at: Timestamp::parse("2026-11-27T23:54:00Z").unwrap(),
            uploaded_at: None,
            processed_at: Some(Timestamp::parse("2026-11-27T23:55:00.5Z").unwrap()),
            transcript: Some("Patient reports mild headache.".into()),
            verification_results: Some(json!({"confidence": 0.93, "flags": []})),
            processing: Default::default(),
            version: 1,
            signoff: Default::default(),
            upload: UploadDetails {
                local_storage_key: Some(Uuid::nil()),
                upload_attempts: 2,
                ..Default::default()
            },
        };
        let value = serde_json::to_value(&rec).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(
            object.len(),
            38,
            "15 original fields, 6 of the upload, 11 of processing, 5 of sign-off, and the version"
        );
        let mut listed = RECORDING_FIELDS.to_vec();
        listed.sort_unstable();
        assert_eq!(
            object.keys().map(String::as_str).collect::<Vec<_>>(),
            listed,
            "RECORDING_FIELDS lists them all"
        );
        assert_eq!(value["whisper_model"], "base");
        assert_eq!(value["upload_attempts"], 2);
        assert_eq!(
            value["local_storage_key"],
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(value["id"], "6f1c1f0e-7b2a-4c39-9d0e-0a1b2c3d4e5f");
        assert_eq!(value["status"], "completed");
        assert_eq!(value["created_at"], "2026-11-27T23:53:30.306917Z");
        assert_eq!(value["processed_at"], "2026-11-27T23:55:00.500000Z");
        assert_eq!(value["uploaded_at"], Value::Null);
        assert_eq!(value["verification_results"]["confidence"], 0.93);
        let back: Recording = serde_json::from_value(value).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn new_recording_accepts_the_originals_lax_coercions() {
        for (duration, expected) in [
            (json!(120), 120),
            (json!("120"), 120),
            (json!(12.0), 12),
            (json!(0), 0),
        ] {
            let body = json!({"patient_id": "p-1", "duration_seconds": duration, "ignored": true});
            let new = NewRecording::from_json(&body).unwrap();
            assert_eq!(new.duration_seconds, expected);
            assert_eq!(new.patient_id, "p-1");
            assert_eq!(new.audio_file_path, None);
        }
        let with_path =
            json!({"patient_id": "p", "duration_seconds": 1, "audio_file_path": "/a.webm"});
        assert_eq!(
            NewRecording::from_json(&with_path)
                .unwrap()
                .audio_file_path
                .as_deref(),
            Some("/a.webm")
        );
    }

    #[test]
    fn new_recording_reports_each_problem_like_pydantic() {
        let body = |p: Value, d: Value| json!({"patient_id": p, "duration_seconds": d});
        let p_loc = vec![json!("body"), json!("patient_id")];
        let d_loc = vec![json!("body"), json!("duration_seconds")];
        assert_eq!(
            kinds(json!({})),
            vec![("missing", p_loc.clone()), ("missing", d_loc.clone())]
        );
        assert_eq!(
            kinds(json!([1])),
            vec![("model_attributes_type", vec![json!("body")])]
        );
        assert_eq!(
            kinds(body(json!("p"), json!("abc"))),
            vec![("int_parsing", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), json!(12.5))),
            vec![("int_from_float", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), Value::Null)),
            vec![("int_type", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), json!(true))),
            vec![("int_type", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), json!(-1))),
            vec![("greater_than_equal", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), json!(1e30))),
            vec![("int_parsing_size", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), json!(18446744073709551615u64))),
            vec![("int_parsing_size", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("p"), json!("99999999999999999999999"))),
            vec![("int_parsing_size", d_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!(123), json!(1))),
            vec![("string_type", p_loc.clone())]
        );
        assert_eq!(
            kinds(body(Value::Null, json!(1))),
            vec![("string_type", p_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("   "), json!(1))),
            vec![("string_too_short", p_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!(""), json!(1))),
            vec![("string_too_short", p_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("a\u{0}b"), json!(1))),
            vec![("string_pattern_mismatch", p_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!("x".repeat(129)), json!(1))),
            vec![("string_too_long", p_loc.clone())]
        );
        assert_eq!(
            kinds(body(json!(""), json!("x"))),
            vec![("string_too_short", p_loc), ("int_parsing", d_loc)]
        );
    }

    #[test]
    fn a_patch_names_unknown_and_read_only_fields_and_checks_the_rest() {
        let issues = RecordingPatch::from_json(&json!({
            "version": 3, "colour": "red", "patient_id": " ", "status": "done",
            "final_transcript": "a\u{7}b"
        }))
        .unwrap_err();
        let mut found: Vec<(String, &str)> = issues
            .iter()
            .map(|i| (i.loc[1].as_str().unwrap().to_owned(), i.kind))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("colour".into(), "extra_forbidden"),
                ("final_transcript".into(), "string_pattern_mismatch"),
                ("patient_id".into(), "string_too_short"),
                ("status".into(), "enum"),
                ("version".into(), "extra_forbidden"),
            ]
        );
        let read_only = issues.iter().find(|i| i.loc[1] == "version").unwrap();
        assert!(read_only.msg.contains("read-only"), "{}", read_only.msg);

        let patch = RecordingPatch::from_json(&json!({
            "final_transcript": "Line one.\nLine two.", "patient_id": "p-2"
        }))
        .unwrap();
        assert_eq!(
            patch.final_transcript,
            Some(Some("Line one.\nLine two.".into()))
        );
        assert_eq!(patch.patient_id.as_deref(), Some("p-2"));
        // Free text as a draft is: a zero-width non-joiner (Persian) is text.
        let persian = "می\u{200c}خواهم";
        let kept = RecordingPatch::from_json(&json!({"final_transcript": persian})).unwrap();
        assert_eq!(kept.final_transcript, Some(Some(persian.into())));
        let cleared = RecordingPatch::from_json(&json!({"final_transcript": null})).unwrap();
        assert_eq!(cleared.final_transcript, Some(None));
        assert!(RecordingPatch::from_json(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn a_clinician_may_only_send_a_failed_recording_back_to_the_queue() {
        for from in RecordingStatus::ALL {
            let expected = if from == RecordingStatus::Error {
                vec![RecordingStatus::Queued]
            } else {
                vec![]
            };
            assert_eq!(from.clinician_moves(), expected, "from {from}");
        }
    }
}
