//! What the guardrails produce and read: the facts extracted from a text,
//! each with the span it came from, the alerts of the rules, the result
//! stored in `verification_results`, and the `POST /api/v1/verify` body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::Date;
use utoipa::ToSchema;

use crate::validation::ValidationIssue;

/// A stretch of the text, in Unicode code points (`end` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Span {
    /// The first code point.
    pub start: usize,
    /// One past the last code point.
    pub end: usize,
}

/// Whether a medication is being started, goes on, or was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MedicationStatus {
    /// Started, prescribed or given now.
    Started,
    /// Taken already and going on (what a mention without a verb means).
    Continued,
    /// Stopped, held or no longer taken.
    Stopped,
}

/// A medication the text says the patient takes, starts or stopped.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Medication {
    /// The name as said ("Lipitor").
    pub text: String,
    /// The generic name ("atorvastatin"), lower case.
    pub generic: String,
    /// The dose per administration, if said.
    pub dose: Option<f64>,
    /// Its unit: `mg`, `mcg`, `g`, `units`, `ml`, `tablet`, `puff`.
    pub unit: Option<String>,
    /// How often, normalised ("twice daily", "every 6 hours", "as needed").
    pub frequency: Option<String>,
    /// Administrations a day, when the frequency says.
    pub per_day: Option<f64>,
    /// The route (`oral`, `intravenous`, …), if said.
    pub route: Option<String>,
    /// Started, continued or stopped.
    pub status: MedicationStatus,
    /// Where in the text: the name and what was said of it; None when an
    /// extraction engine named a medication the text does not contain.
    pub span: Option<Span>,
}

/// An allergy the text states.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Allergy {
    /// The allergen as said.
    pub text: String,
    /// What it is, normalised ("penicillin", or a drug's generic name).
    pub substance: String,
    /// Where in the text.
    pub span: Option<Span>,
}

/// A condition the text affirms (negated ones, "no fever", are left out).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Condition {
    /// As said.
    pub text: String,
    /// Its normalised name ("sepsis").
    pub name: String,
    /// Where in the text.
    pub span: Option<Span>,
}

/// A vital sign or bedside measurement.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VitalSign {
    /// `blood_pressure`, `heart_rate`, `respiratory_rate`, `temperature`,
    /// `oxygen_saturation`, `glucose`, `weight`.
    pub kind: String,
    /// As said ("one hundred forty over ninety").
    pub text: String,
    /// The value (systolic, for a blood pressure).
    pub value: f64,
    /// The diastolic pressure, for a blood pressure.
    pub diastolic: Option<f64>,
    /// The unit (`mmHg`, `/min`, `Cel`, `[degF]`, `%`, `mmol/L`, `mg/dL`, `kg`).
    pub unit: String,
    /// Where in the text.
    pub span: Option<Span>,
}

/// A time expression and the date it means on the recording's day.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TimeExpression {
    /// As said ("three days ago").
    pub text: String,
    /// The date it resolves to (`YYYY-MM-DD`).
    pub date: String,
    /// `past` (yesterday, three days ago), `today`, `plan` (in two weeks,
    /// tomorrow: a date the plan names) or `date` (a calendar date said).
    pub relation: String,
    /// Where in the text.
    pub span: Option<Span>,
    /// The date as a value, for the rules.
    #[serde(skip)]
    pub resolved: Option<Date>,
}

/// Everything extracted from one text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Extracted {
    /// Medications.
    pub medications: Vec<Medication>,
    /// Allergies.
    pub allergies: Vec<Allergy>,
    /// Whether the text says there are no known allergies.
    pub no_known_allergies: bool,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Vital signs.
    pub vital_signs: Vec<VitalSign>,
    /// Time expressions.
    pub times: Vec<TimeExpression>,
}

/// How serious an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Must be acknowledged before sign-off.
    Critical,
    /// Fails the check.
    High,
    /// Worth a look.
    Medium,
    /// For information.
    Low,
}

impl Severity {
    /// Parses `critical`, `high`, `medium`, `low`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "critical" => Some(Self::Critical),
            "high" => Some(Self::High),
            "medium" => Some(Self::Medium),
            "low" => Some(Self::Low),
            _ => None,
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }
}

/// The part of the text an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// The first code point.
    pub start: usize,
    /// One past the last code point.
    pub end: usize,
    /// The text there.
    pub text: String,
}

/// What a rule found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// This finding's id in this text: the rule and the code points of its
    /// first evidence (`ALLERGY_CONFLICT@27-38`); what an acknowledgement names.
    pub id: String,
    /// The rule's stable id (`DRUG_INTERACTION`, …).
    pub rule_id: String,
    /// How serious.
    pub severity: Severity,
    /// For the clinician.
    pub message: String,
    /// Where in the text (empty when the finding rests on the context alone).
    pub evidence: Vec<Evidence>,
}

/// The result of a check: what `verification_results` holds and
/// `POST /api/v1/verify` answers. `passed`, `score`, `issues` and
/// `checks_performed` are the keys the original's dictation app wrote.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Verification {
    /// False when any critical or high alert is present.
    pub passed: bool,
    /// 1.0 less a weight per alert by severity, at least 0.
    pub score: f64,
    /// The alerts' messages, most severe first.
    pub issues: Vec<String>,
    /// The rule ids that ran.
    pub checks_performed: Vec<String>,
    /// What the rules found, most severe first.
    pub alerts: Vec<Alert>,
    /// The facts extracted.
    pub extracted: Extracted,
    /// The extraction engine (`embedded`).
    pub engine: String,
    /// Why the configured engine did not extract, when the embedded one
    /// did in its place (present only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    /// The rules and data that ran: their version and a digest of the files.
    pub ruleset_version: String,
}

/// The alerts of a stored check (`verification_results`); None when it is
/// not one of ours (the original's object has no `alerts`).
pub fn stored_alerts(results: &Value) -> Option<Vec<Alert>> {
    serde_json::from_value(results.get("alerts")?.clone()).ok()
}

/// What the caller knows of the patient beyond the text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientContext {
    /// Known allergies.
    pub allergies: Vec<String>,
    /// Current medications.
    pub medications: Vec<String>,
    /// The admission date.
    pub admission_date: Option<Date>,
    /// The encounter's date (the recording's day; today when not given).
    pub encounter_date: Option<Date>,
}

impl PatientContext {
    /// No context but the encounter's day (a stored recording's check).
    pub fn on(encounter: Date) -> Self {
        Self {
            encounter_date: Some(encounter),
            ..Self::default()
        }
    }
}

/// The longest text a check reads, in characters.
pub const MAX_TEXT_CHARS: usize = 200_000;

/// `POST /api/v1/verify`: a text and, optionally, its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// The text to check.
    pub text: String,
    /// What is known besides.
    pub context: PatientContext,
}

const CONTEXT_KEYS: [&str; 4] = [
    "allergies",
    "medications",
    "admission_date",
    "encounter_date",
];

impl VerifyRequest {
    /// Checks a verify body, reporting every problem at once. An unknown
    /// key in `context` is refused: a misspelt "allergy" must not silently
    /// check nothing.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let mut issues = Vec::new();
        let loc = |path: &[&str]| {
            std::iter::once("body")
                .chain(path.iter().copied())
                .map(Value::from)
                .collect::<Vec<_>>()
        };
        let text = match body.get("text") {
            Some(Value::String(s)) if s.chars().count() > MAX_TEXT_CHARS => {
                issues.push(
                    ValidationIssue::new(
                        "string_too_long",
                        loc(&["text"]),
                        format!("String should have at most {MAX_TEXT_CHARS} characters"),
                        Value::Null,
                    )
                    .with_ctx(serde_json::json!({"max_length": MAX_TEXT_CHARS})),
                );
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            None => {
                issues.push(ValidationIssue::new(
                    "missing",
                    loc(&["text"]),
                    "Field required",
                    Value::Null,
                ));
                None
            }
            Some(other) => {
                issues.push(ValidationIssue::new(
                    "string_type",
                    loc(&["text"]),
                    "Input should be a valid string",
                    other.clone(),
                ));
                None
            }
        };
        let mut context = PatientContext::default();
        match body.get("context") {
            None | Some(Value::Null) => {}
            Some(Value::Object(fields)) => {
                read_context(fields, &mut context, &mut issues, &loc);
            }
            Some(other) => issues.push(ValidationIssue::new(
                "dict_type",
                loc(&["context"]),
                "Input should be a valid dictionary",
                other.clone(),
            )),
        }
        if !body.is_object() {
            issues.push(ValidationIssue::new(
                "model_attributes_type",
                vec![Value::from("body")],
                "Input should be a valid dictionary or object to extract fields from",
                body.clone(),
            ));
        }
        match text {
            Some(text) if issues.is_empty() => Ok(Self { text, context }),
            _ => Err(issues),
        }
    }
}

fn read_context(
    fields: &Map<String, Value>,
    context: &mut PatientContext,
    issues: &mut Vec<ValidationIssue>,
    loc: &dyn Fn(&[&str]) -> Vec<Value>,
) {
    for (key, value) in fields {
        match key.as_str() {
            "allergies" | "medications" => {
                let list = string_list(value, key, issues, loc);
                if key == "allergies" {
                    context.allergies = list;
                } else {
                    context.medications = list;
                }
            }
            "admission_date" | "encounter_date" => {
                let date = date_field(value, key, issues, loc);
                if key == "admission_date" {
                    context.admission_date = date;
                } else {
                    context.encounter_date = date;
                }
            }
            _ => issues.push(ValidationIssue::new(
                "extra_forbidden",
                loc(&["context", key]),
                format!(
                    "Extra inputs are not permitted (context knows {})",
                    CONTEXT_KEYS.join(", ")
                ),
                value.clone(),
            )),
        }
    }
}

fn string_list(
    value: &Value,
    key: &str,
    issues: &mut Vec<ValidationIssue>,
    loc: &dyn Fn(&[&str]) -> Vec<Value>,
) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    // A blank entry names nothing: skipped.
                    Value::String(s) if s.trim().is_empty() => {}
                    Value::String(s) => list.push(s.trim().to_owned()),
                    _ => {
                        let mut at = loc(&["context", key]);
                        at.push(Value::from(i));
                        issues.push(ValidationIssue::new(
                            "string_type",
                            at,
                            "Input should be a valid string",
                            item.clone(),
                        ));
                    }
                }
            }
            list
        }
        other => {
            issues.push(ValidationIssue::new(
                "list_type",
                loc(&["context", key]),
                "Input should be a valid list",
                other.clone(),
            ));
            Vec::new()
        }
    }
}

fn date_field(
    value: &Value,
    key: &str,
    issues: &mut Vec<ValidationIssue>,
    loc: &dyn Fn(&[&str]) -> Vec<Value>,
) -> Option<Date> {
    let parsed = match value {
        Value::Null => return None,
        Value::String(s) => crate::timestamp::parse_date(s),
        _ => None,
    };
    if parsed.is_none() {
        issues.push(ValidationIssue::new(
            "date_parsing",
            loc(&["context", key]),
            "Input should be a valid date in the format YYYY-MM-DD",
            value.clone(),
        ));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::date;

    use super::*;

    #[test]
    fn a_verify_body_is_read_whole() {
        let request = VerifyRequest::from_json(&json!({
            "text": "Allergic to penicillin.",
            "context": {"allergies": ["penicillin"], "medications": ["warfarin"],
                        "admission_date": "2026-11-30", "encounter_date": "2026-12-01"}
        }))
        .unwrap();
        assert_eq!(request.text, "Allergic to penicillin.");
        assert_eq!(request.context.allergies, ["penicillin"]);
        assert_eq!(request.context.medications, ["warfarin"]);
        assert_eq!(request.context.admission_date, Some(date!(2026 - 11 - 30)));
        assert_eq!(request.context.encounter_date, Some(date!(2026 - 12 - 01)));
        let bare = VerifyRequest::from_json(&json!({"text": ""})).unwrap();
        assert_eq!(bare.context, PatientContext::default());
    }

    #[test]
    fn every_problem_of_a_verify_body_is_named() {
        let issues = VerifyRequest::from_json(&json!({
            "text": 5,
            "context": {"allergy": ["x"], "medications": "warfarin", "admission_date": "30/11/2026",
                        "allergies": ["", 3]}
        }))
        .unwrap_err();
        let kinds: Vec<(&str, Value)> = issues
            .iter()
            .map(|i| (i.kind, Value::from(i.loc.clone())))
            .collect();
        assert!(kinds.contains(&("string_type", json!(["body", "text"]))));
        assert!(kinds.contains(&("extra_forbidden", json!(["body", "context", "allergy"]))));
        assert!(kinds.contains(&("list_type", json!(["body", "context", "medications"]))));
        assert!(kinds.contains(&("date_parsing", json!(["body", "context", "admission_date"]))));
        assert!(kinds.contains(&("string_type", json!(["body", "context", "allergies", 1]))));
        assert_eq!(issues.len(), 5);
        let missing = VerifyRequest::from_json(&json!({"context": null})).unwrap_err();
        assert_eq!(missing[0].kind, "missing");
        assert_eq!(VerifyRequest::from_json(&json!([1])).unwrap_err().len(), 2);
    }
}
