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
pub mod lexicon;
pub mod model;
pub mod rules;
pub mod text;

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use time::Date;

use crate::timestamp::Timestamp;

pub use lexicon::{DataError, Lexicon};
pub use model::{Extracted, PatientContext, Verification};

/// Why an extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Worth retrying (a model server timed out or is overloaded).
    #[error("extraction failed (will retry): {0}")]
    Transient(String),
    /// Retrying will not help.
    #[error("extraction failed: {0}")]
    Permanent(String),
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
        "embedded"
    }

    async fn extract(&self, text: &str, on: Date) -> Result<Extracted, ExtractError> {
        Ok(embedded::extract(&self.lexicon, text, on))
    }
}

/// A check of a recording's text as the recording keeps it:
/// `verification_results` (the [`Verification`] as JSON), `verification_score`,
/// `verified_at`, `extraction_started_at`, `llm_model`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheck {
    /// The [`Verification`], as JSON.
    pub results_json: String,
    /// Its score.
    pub score: f64,
    /// When the extraction began.
    pub started_at: Timestamp,
    /// When the check ended (`verified_at`, `extraction_completed_at`).
    pub completed_at: Timestamp,
    /// The language model that extracted, if one did.
    pub model: Option<String>,
}

/// The extraction engine `PWA_EXTRACT_ENGINE` names.
pub const ENGINES: [&str; 1] = ["embedded"];

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

    /// Checks the text of a recording dictated on `on` (the day its relative
    /// dates are read against), for storing with it. The server knows no
    /// patient context, so the check rests on the text alone.
    pub async fn check_recording(&self, text: &str, on: Date) -> Result<StoredCheck, ExtractError> {
        let started_at = Timestamp::now();
        let context = PatientContext {
            encounter_date: Some(on),
            ..PatientContext::default()
        };
        let verification = self.verify(text, &context).await?;
        let results_json = serde_json::to_string(&verification)
            .map_err(|e| ExtractError::Permanent(format!("cannot encode the result: {e}")))?;
        Ok(StoredCheck {
            results_json,
            score: verification.score,
            started_at,
            completed_at: Timestamp::now(),
            model: self.engine.model(),
        })
    }

    /// Checks facts already extracted from `text`.
    pub fn check(
        &self,
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
        Verification {
            passed: !alerts.iter().any(|a| {
                matches!(
                    a.severity,
                    model::Severity::Critical | model::Severity::High
                )
            }),
            score,
            issues: alerts.iter().map(|a| a.message.clone()).collect(),
            checks_performed,
            alerts,
            extracted,
            engine: self.engine.name().to_owned(),
            ruleset_version: self.lexicon.version.clone(),
        }
    }
}
