//! The `openai` extraction engine: any OpenAI-compatible chat completions
//! server (`POST {base}/v1/chat/completions`: llama.cpp's server, vLLM,
//! Ollama, OpenAI, LocalAI) asked for the facts as JSON matching a JSON
//! Schema (`response_format: json_schema`, structured output where the
//! server supports it).
//!
//! What the model answers is validated (types, units, kinds) and every item
//! is looked for in the transcript: an item whose words are not there keeps
//! no span, and the `UNSUPPORTED_BY_TRANSCRIPT` rule flags it. Dates are
//! not asked of the model: the embedded reading resolves them against the
//! recording's day, deterministically.
//!
//! A connection that fails, a timeout, a 429 (with its `Retry-After`), a 5xx
//! and an answer that is not the facts asked for are transient (the job is
//! retried: a model's next answer may be well formed); any other refusal is
//! permanent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use time::Date;

use super::model::{Allergy, Condition, Extracted, Medication, MedicationStatus, Span, VitalSign};
use super::{ExtractError, ExtractionEngine, Lexicon, embedded};
use crate::http::outbound::{self, Refusal};

impl From<Refusal> for ExtractError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Transient {
                message,
                retry_after,
            } => Self::Transient {
                message,
                retry_after,
            },
            Refusal::Permanent(message) => Self::Permanent(message),
        }
    }
}

/// Where the server is and what to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiSettings {
    /// Its base URL (`http://127.0.0.1:8080`; a trailing `/v1` is accepted).
    pub base_url: String,
    /// The model to ask.
    pub model: String,
    /// Sent as a bearer token when set (never logged).
    pub api_key: Option<String>,
    /// The longest one answer may take.
    pub timeout: Duration,
}

/// The engine.
#[derive(Debug)]
pub struct OpenAiEngine {
    client: reqwest::Client,
    endpoint: String,
    settings: OpenAiSettings,
    lexicon: Arc<Lexicon>,
}

impl OpenAiEngine {
    /// The engine for `settings`, normalising names with `lexicon`.
    pub fn new(settings: OpenAiSettings, lexicon: Arc<Lexicon>) -> Result<Self, ExtractError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ExtractError::Permanent(format!("cannot build an HTTP client: {e}")))?;
        let base = settings.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Ok(Self {
            client,
            endpoint: format!("{base}/v1/chat/completions"),
            settings,
            lexicon,
        })
    }

    /// The endpoint asked.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// What the model is told.
const INSTRUCTIONS: &str = "You extract clinical facts from a clinician's dictated note. \
Answer with JSON only, matching the schema. Include only what the note states about the patient: \
medications (with the dose per administration, its unit, how often, the route, and whether it is \
being started, continued or was stopped), allergies, whether the note says there are no known \
allergies, conditions the note affirms (leave out negated ones such as 'no fever'), and vital signs. \
For every item, `text` must be the exact words of the note it comes from. Never add anything the \
note does not say.";

/// The longest `text` an item may quote: a fact is a few words, and each is
/// looked for in the whole note.
const MAX_QUOTE_CHARS: usize = 500;

/// The dose units an answer may name (those the embedded reading produces).
const MEDICATION_UNITS: [&str; 7] = ["mg", "mcg", "g", "units", "ml", "tablet", "puff"];
/// The vital signs an answer may name, and their units.
const VITAL_KINDS: [&str; 7] = [
    "blood_pressure",
    "heart_rate",
    "respiratory_rate",
    "temperature",
    "oxygen_saturation",
    "glucose",
    "weight",
];
const VITAL_UNITS: [&str; 8] = [
    "mmHg", "/min", "Cel", "[degF]", "%", "mmol/L", "mg/dL", "kg",
];

/// The JSON Schema of the answer (strict: every key present, null where the
/// note does not say).
pub fn answer_schema() -> Value {
    let string = json!({"type": "string"});
    let number_or_null = json!({"type": ["number", "null"]});
    let string_or_null = json!({"type": ["string", "null"]});
    let object = |properties: Value| {
        let required: Vec<String> = properties
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
    };
    let list = |item: Value| json!({"type": "array", "items": item});
    let mut units: Vec<Value> = MEDICATION_UNITS.iter().map(|u| json!(u)).collect();
    units.push(Value::Null);
    object(json!({
        "medications": list(object(json!({
            "text": string,
            "name": string,
            "dose": number_or_null,
            "unit": {"type": ["string", "null"], "enum": units},
            "frequency": string_or_null,
            "times_per_day": number_or_null,
            "route": string_or_null,
            "status": {"type": "string", "enum": ["started", "continued", "stopped"]},
        }))),
        "allergies": list(object(json!({"text": string, "substance": string}))),
        "no_known_allergies": {"type": "boolean"},
        "conditions": list(object(json!({"text": string, "name": string}))),
        "vital_signs": list(object(json!({
            "text": string,
            "kind": {"type": "string", "enum": VITAL_KINDS},
            "value": {"type": "number"},
            "diastolic": number_or_null,
            "unit": {"type": "string", "enum": VITAL_UNITS},
        }))),
    }))
}

/// The answer, as the schema has it.
#[derive(Debug, Deserialize)]
struct Answer {
    medications: Vec<AnswerMedication>,
    allergies: Vec<AnswerNamed>,
    no_known_allergies: bool,
    conditions: Vec<AnswerNamed>,
    vital_signs: Vec<AnswerVital>,
}

#[derive(Debug, Deserialize)]
struct AnswerMedication {
    text: String,
    name: String,
    dose: Option<f64>,
    unit: Option<String>,
    frequency: Option<String>,
    times_per_day: Option<f64>,
    route: Option<String>,
    status: MedicationStatus,
}

/// An allergy (`substance`) or a condition (`name`).
#[derive(Debug, Deserialize)]
struct AnswerNamed {
    text: String,
    #[serde(alias = "substance")]
    name: String,
}

#[derive(Debug, Deserialize)]
struct AnswerVital {
    text: String,
    kind: String,
    value: f64,
    diastolic: Option<f64>,
    unit: String,
}

/// The part of a chat completion read.
#[derive(Debug, Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

fn malformed(what: impl std::fmt::Display) -> ExtractError {
    ExtractError::transient(format!(
        "the language model answered something that is not the facts asked for: {what}"
    ))
}

impl Answer {
    /// Refuses what the schema cannot say: numbers out of reason, names
    /// that are empty, units and kinds from no list.
    fn validate(&self) -> Result<(), ExtractError> {
        let number = |n: Option<f64>| n.is_none_or(|n| n.is_finite() && n >= 0.0);
        let quoted = self
            .medications
            .iter()
            .map(|m| &m.text)
            .chain(
                self.allergies
                    .iter()
                    .chain(&self.conditions)
                    .map(|n| &n.text),
            )
            .chain(self.vital_signs.iter().map(|v| &v.text));
        if quoted.clone().any(|t| t.chars().count() > MAX_QUOTE_CHARS) {
            return Err(malformed(format!(
                "an item quoting more than {MAX_QUOTE_CHARS} characters of the note"
            )));
        }
        for m in &self.medications {
            if m.name.trim().is_empty() || m.text.trim().is_empty() {
                return Err(malformed("a medication without a name"));
            }
            if !number(m.dose) || !number(m.times_per_day) {
                return Err(malformed(format!("a dose of {:?} for {}", m.dose, m.name)));
            }
            if let Some(unit) = &m.unit
                && !MEDICATION_UNITS.contains(&unit.as_str())
            {
                return Err(malformed(format!("the unit {unit:?}")));
            }
        }
        for n in self.allergies.iter().chain(&self.conditions) {
            if n.name.trim().is_empty() || n.text.trim().is_empty() {
                return Err(malformed("an allergy or condition without a name"));
            }
        }
        for v in &self.vital_signs {
            if !VITAL_KINDS.contains(&v.kind.as_str()) || !VITAL_UNITS.contains(&v.unit.as_str()) {
                return Err(malformed(format!(
                    "the vital sign {} in {}",
                    v.kind, v.unit
                )));
            }
            if !number(Some(v.value)) || !number(v.diastolic) {
                return Err(malformed(format!("a {} of {}", v.kind, v.value)));
            }
        }
        Ok(())
    }
}

/// Finds the words of an item in the text: their span in code points, the
/// first occurrence not taken yet, compared without case.
struct Locator {
    folded: Vec<char>,
    taken: Vec<Span>,
}

impl Locator {
    fn new(text: &str) -> Self {
        Self {
            folded: text.chars().map(fold).collect(),
            taken: Vec::new(),
        }
    }

    fn find(&mut self, words: &str) -> Option<Span> {
        let needle: Vec<char> = words.trim().chars().map(fold).collect();
        if needle.is_empty() || needle.len() > self.folded.len() {
            return None;
        }
        let mut first = None;
        for start in 0..=self.folded.len() - needle.len() {
            if self.folded[start..start + needle.len()] == needle[..] {
                let span = Span {
                    start,
                    end: start + needle.len(),
                };
                if !self.taken.contains(&span) {
                    self.taken.push(span);
                    return Some(span);
                }
                first.get_or_insert(span);
            }
        }
        first
    }
}

/// A character compared without case (one character for one, so that
/// offsets stay those of the text).
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// `name` as the lexicon knows it (a brand becomes its generic name).
fn generic(lexicon: &Lexicon, name: &str, said: &str) -> String {
    lexicon
        .drug_named(name)
        .or_else(|| lexicon.drug_named(said))
        .map_or_else(
            || name.trim().to_lowercase(),
            |d| lexicon.drugs[d].generic.clone(),
        )
}

impl Answer {
    /// The answer as extracted facts of `text`, every item located there;
    /// `times` are the embedded reading's.
    fn into_extracted(self, lexicon: &Lexicon, text: &str, on: Date) -> Extracted {
        let mut locator = Locator::new(text);
        let medications = self
            .medications
            .into_iter()
            .map(|m| Medication {
                span: locator.find(&m.text),
                generic: generic(lexicon, &m.name, &m.text),
                text: m.text,
                dose: m.dose,
                unit: m.unit,
                frequency: m.frequency,
                per_day: m.times_per_day,
                route: m.route,
                status: m.status,
            })
            .collect();
        let allergies = self
            .allergies
            .into_iter()
            .map(|a| Allergy {
                span: locator.find(&a.text),
                substance: a.name.trim().to_lowercase(),
                text: a.text,
            })
            .collect();
        let conditions = self
            .conditions
            .into_iter()
            .map(|c| Condition {
                span: locator.find(&c.text),
                name: c.name.trim().to_lowercase(),
                text: c.text,
            })
            .collect();
        let vital_signs = self
            .vital_signs
            .into_iter()
            .map(|v| VitalSign {
                span: locator.find(&v.text),
                kind: v.kind,
                text: v.text,
                value: v.value,
                diastolic: v.diastolic,
                unit: v.unit,
            })
            .collect();
        Extracted {
            medications,
            allergies,
            no_known_allergies: self.no_known_allergies,
            conditions,
            vital_signs,
            times: embedded::extract(lexicon, text, on).times,
        }
    }
}

#[async_trait]
impl ExtractionEngine for OpenAiEngine {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> Option<String> {
        Some(self.settings.model.clone())
    }

    fn runs_in_process(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("openai ({}, model {})", self.endpoint, self.settings.model)
    }

    async fn extract(&self, text: &str, on: Date) -> Result<Extracted, ExtractError> {
        let body = json!({
            "model": self.settings.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": text},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "clinical_facts", "strict": true, "schema": answer_schema()},
            },
        });
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = outbound::send("the language model server", "the request", request).await?;
        let completion: Completion = response
            .json()
            .await
            .map_err(|e| malformed(format!("not a chat completion ({e})")))?;
        let content = completion
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| malformed("no message"))?;
        let answer: Answer =
            serde_json::from_str(content.trim()).map_err(|e| malformed(format!("{e}")))?;
        answer.validate()?;
        Ok(answer.into_extracted(&self.lexicon, text, on))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_found_in_the_text_by_their_words_without_case() {
        let mut locator = Locator::new("Aspirin daily. Then aspirin again; Ümlaut");
        assert_eq!(locator.find("aspirin"), Some(Span { start: 0, end: 7 }));
        assert_eq!(locator.find("ASPIRIN"), Some(Span { start: 20, end: 27 }));
        assert_eq!(locator.find("ümlaut"), Some(Span { start: 35, end: 41 }));
        assert_eq!(locator.find("warfarin"), None);
    }

    #[test]
    fn the_schema_requires_every_key_it_names() {
        let schema = answer_schema();
        assert_eq!(schema["required"].as_array().unwrap().len(), 5);
        let medication = &schema["properties"]["medications"]["items"];
        assert_eq!(medication["required"].as_array().unwrap().len(), 8);
        assert_eq!(medication["additionalProperties"], false);
    }
}
