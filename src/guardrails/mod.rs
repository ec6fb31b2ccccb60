//! Clinical guardrails: the facts of a transcript (medications, allergies,
//! conditions, vital signs, dates), each with the span of text it came from,
//! and deterministic checks of them before a note is signed.
//!
//! Extraction sits behind one trait ([`ExtractionEngine`], chosen with
//! `PWA_EXTRACT_ENGINE`); the embedded engine ([`embedded`]) reads the text
//! with the lexicon. The rules ([`rules`]) and their data ([`lexicon`]) are
//! files embedded in the binary that a site may override
//! (`PWA_GUARDRAILS_DIR`). [`Guardrails::verify`] is the one entry point:
//! `POST /api/v1/verify` calls it on a given text.

pub mod api;
pub mod embedded;
pub mod fhir;
pub mod lexicon;
pub mod model;
pub mod openai;
pub mod rules;
pub mod text;
pub mod worker;

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use time::Date;

use crate::timestamp::Timestamp;

pub use lexicon::{DataError, Lexicon};
pub use model::{Extracted, PatientContext, Verification};

/// Why an extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Worth retrying (a model server timed out, is overloaded, or
    /// answered something malformed).
    #[error("extraction failed: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// How long the server asked to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Retrying will not help.
    #[error("extraction failed: {0}")]
    Permanent(String),
}

impl ExtractError {
    /// A transient failure without a wait asked for.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Reads the facts out of a text.
#[async_trait]
pub trait ExtractionEngine: Send + Sync + Debug {
    /// Its name, for `verification_results.engine`.
    fn name(&self) -> &'static str;

    /// The model it used, for `llm_model` (None for the embedded engine).
    fn model(&self) -> Option<String> {
        None
    }

    /// Whether it reads in this process, deterministically and at once (the
    /// check is then made with the text it checks, in the same write);
    /// otherwise each check is a `verify` job of its own.
    fn runs_in_process(&self) -> bool {
        false
    }

    /// For the health check and the log (no secret).
    fn describe(&self) -> String {
        self.name().to_owned()
    }

    /// The facts of `text`, whose relative dates are read against `on`.
    async fn extract(&self, text: &str, on: Date) -> Result<Extracted, ExtractError>;
}

/// The embedded engine: the lexicon and patterns, in process.
#[derive(Debug)]
pub struct EmbeddedEngine {
    lexicon: Arc<Lexicon>,
}

#[async_trait]
impl ExtractionEngine for EmbeddedEngine {
    fn name(&self) -> &'static str {
        EMBEDDED
    }

    fn runs_in_process(&self) -> bool {
        true
    }

    async fn extract(&self, text: &str, on: Date) -> Result<Extracted, ExtractError> {
        Ok(embedded::extract(&self.lexicon, text, on))
    }
}

pub use crate::jobs::model::StoredCheck;

/// What a write of a note's text does to its check.
#[derive(Debug, Clone, Copy)]
pub enum CheckUpdate<'a> {
    /// The text is unchanged: so is the check.
    Keep,
    /// No text is left to check: the check is cleared.
    Clear,
    /// The check of the new text, stored with it.
    Store(&'a StoredCheck),
    /// The check is cleared and a `verify` job queued with the text (an
    /// extraction engine elsewhere checks it).
    Later,
}

impl<'a> CheckUpdate<'a> {
    /// Whether the check's columns are written.
    pub fn writes(&self) -> bool {
        !matches!(self, Self::Keep)
    }

    /// The check written (None: cleared or kept).
    pub fn stored(&self) -> Option<&'a StoredCheck> {
        match self {
            Self::Store(check) => Some(check),
            _ => None,
        }
    }
}

/// The embedded engine's name.
const EMBEDDED: &str = "embedded";

/// Who extracted the facts a stored check rests on.
struct Extractor<'a> {
    engine: &'static str,
    model: Option<String>,
    /// Why the configured engine did not (the embedded one did instead).
    error: Option<&'a str>,
}

/// The extraction engine `PWA_EXTRACT_ENGINE` names.
pub const ENGINES: [&str; 2] = ["embedded", "openai"];

/// The checks: an extraction engine and the rules with their data.
#[derive(Debug, Clone)]
pub struct Guardrails {
    lexicon: Arc<Lexicon>,
    engine: Arc<dyn ExtractionEngine>,
}

impl Guardrails {
    /// The embedded engine with the built-in data, read once per process
    /// (every `AppState` starts with it; `serve` may then replace it).
    pub fn built_in() -> Result<Self, DataError> {
        static BUILT_IN: OnceLock<Arc<Lexicon>> = OnceLock::new();
        let lexicon = match BUILT_IN.get() {
            Some(lexicon) => lexicon.clone(),
            None => {
                let loaded = Arc::new(Lexicon::built_in()?);
                BUILT_IN.get_or_init(|| loaded).clone()
            }
        };
        Ok(Self::over(lexicon))
    }

    /// The embedded engine, with any data file in `dir` replacing the
    /// built-in one.
    pub fn embedded(dir: Option<&Path>) -> Result<Self, DataError> {
        match dir {
            None => Self::built_in(),
            Some(dir) => Ok(Self::over(Arc::new(Lexicon::load(Some(dir))?))),
        }
    }

    fn over(lexicon: Arc<Lexicon>) -> Self {
        Self {
            engine: Arc::new(EmbeddedEngine {
                lexicon: lexicon.clone(),
            }),
            lexicon,
        }
    }

    /// The same data, extracted by an OpenAI-compatible server.
    pub fn with_openai(self, settings: openai::OpenAiSettings) -> Result<Self, ExtractError> {
        let engine = openai::OpenAiEngine::new(settings, self.lexicon.clone())?;
        Ok(Self {
            engine: Arc::new(engine),
            lexicon: self.lexicon,
        })
    }

    /// Whether a check is made with the text it checks (the embedded
    /// engine), rather than by a `verify` job after it.
    pub fn checks_in_process(&self) -> bool {
        self.engine.runs_in_process()
    }

    /// The engine, for the health check and the log.
    pub fn describe(&self) -> String {
        self.engine.describe()
    }

    /// The data the rules use.
    pub fn lexicon(&self) -> &Lexicon {
        &self.lexicon
    }

    /// Extracts the facts of `text` and checks them. The encounter's day
    /// (which relative dates are read against) is the context's, or today.
    pub async fn verify(
        &self,
        text: &str,
        context: &PatientContext,
    ) -> Result<Verification, ExtractError> {
        let encounter = context
            .encounter_date
            .unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
        let extracted = self.engine.extract(text, encounter).await?;
        Ok(self.check(text, extracted, context, encounter))
    }

    /// Checks the text of a recording, for storing with it (relative dates
    /// are read against the day it was made). The server knows no patient
    /// context, so the check rests on the text alone.
    #[tracing::instrument(name = "verification", skip_all)]
    pub async fn check_recording(
        &self,
        text: &str,
        subject: &fhir::Subject<'_>,
    ) -> Result<StoredCheck, ExtractError> {
        let started_at = Timestamp::now();
        let extracted = self.engine.extract(text, subject.on).await?;
        let by = Extractor {
            engine: self.engine.name(),
            model: self.engine.model(),
            error: None,
        };
        self.stored(text, extracted, subject, started_at, by)
    }

    /// Checks the text of a recording with the embedded engine, because the
    /// configured one failed for good (`why`): every note is checked.
    #[tracing::instrument(name = "verification", skip_all)]
    pub fn check_recording_in_process(
        &self,
        text: &str,
        subject: &fhir::Subject<'_>,
        why: &str,
    ) -> Result<StoredCheck, ExtractError> {
        let started_at = Timestamp::now();
        let extracted = embedded::extract(&self.lexicon, text, subject.on);
        let by = Extractor {
            engine: EMBEDDED,
            model: None,
            error: Some(why),
        };
        self.stored(text, extracted, subject, started_at, by)
    }

    fn stored(
        &self,
        text: &str,
        extracted: Extracted,
        subject: &fhir::Subject<'_>,
        started_at: Timestamp,
        by: Extractor<'_>,
    ) -> Result<StoredCheck, ExtractError> {
        let fhir_json = fhir::bundle(&extracted, subject).to_string();
        let context = PatientContext::on(subject.on);
        let mut verification = self.check_by(by.engine, text, extracted, &context, subject.on);
        verification.engine_error = by.error.map(str::to_owned);
        let results_json = serde_json::to_string(&verification)
            .map_err(|e| ExtractError::Permanent(format!("cannot encode the result: {e}")))?;
        Ok(StoredCheck {
            results_json,
            score: verification.score,
            started_at,
            completed_at: Timestamp::now(),
            model: by.model,
            fhir_json,
        })
    }

    /// The embedded engine's check of `text` dated `on`, as stored (for a
    /// note that was never checked, signed now).
    pub fn verify_in_process(&self, text: &str, on: Date) -> serde_json::Value {
        let extracted = embedded::extract(&self.lexicon, text, on);
        let checked = self.check_by(EMBEDDED, text, extracted, &PatientContext::on(on), on);
        serde_json::to_value(checked).unwrap_or_default()
    }

    /// Checks facts already extracted from `text` by the configured engine.
    pub fn check(
        &self,
        text: &str,
        extracted: Extracted,
        context: &PatientContext,
        encounter: Date,
    ) -> Verification {
        self.check_by(self.engine.name(), text, extracted, context, encounter)
    }

    /// Checks facts `engine` extracted from `text`.
    fn check_by(
        &self,
        engine: &'static str,
        text: &str,
        extracted: Extracted,
        context: &PatientContext,
        encounter: Date,
    ) -> Verification {
        let facts = rules::Facts::new(&self.lexicon, text, &extracted, context, encounter);
        let (alerts, checks_performed) = rules::check(&facts);
        let lost: f64 = alerts
            .iter()
            .map(|a| {
                self.lexicon
                    .weights
                    .get(&a.severity)
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum();
        let score = ((1.0_f64 - lost).max(0.0) * 1000.0).round() / 1000.0;
        let passed = !alerts.iter().any(|a| {
            matches!(
                a.severity,
                model::Severity::Critical | model::Severity::High
            )
        });
        crate::metrics::checked(
            engine,
            passed,
            alerts
                .iter()
                .map(|a| (a.rule_id.as_str(), a.severity.as_str())),
        );
        Verification {
            passed,
            score,
            issues: alerts.iter().map(|a| a.message.clone()).collect(),
            checks_performed,
            alerts,
            extracted,
            engine: engine.to_owned(),
            engine_error: None,
            ruleset_version: self.lexicon.version.clone(),
        }
    }
}
