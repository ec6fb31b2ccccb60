//! Writing a Whisper model in the ggml format whisper.cpp loads, from a
//! CTranslate2 Whisper model ([`super::ct2`]).
//!
//! The file: the magic `ggml`; eleven `i32` hyperparameters; the mel
//! filterbank (`i32` rows, `i32` columns, `f32` values); the text tokens
//! (`i32` count, then per token an `i32` length and its bytes; whisper.cpp
//! adds the special tokens itself); then the tensors, each as `i32` rank,
//! `i32` name length, `i32` type (0 f32, 1 f16), the dimensions innermost
//! first, the name and the data. Names are those of OpenAI's PyTorch
//! checkpoint, which whisper.cpp expects.

use std::io::Write;

use super::ct2::{Ct2Error, Model, Variable};

const GGML_MAGIC: u32 = 0x6767_6d6c;
/// Whisper's audio front end: 16 kHz, a 400-sample FFT (201 bins), 80 mel bands.
const SAMPLE_RATE: f64 = 16_000.0;
const N_FFT: usize = 400;

/// How a tensor is stored in the ggml file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    F32,
    F16,
    /// ggml's Q8_0: blocks of 32 values, an f16 scale and 32 signed bytes.
    Q8_0,
}

impl Storage {
    /// ggml's type id.
    fn ggml_type(self) -> usize {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 8,
        }
    }
}

/// The precision of the weight matrices in the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float16, as the source model (whisper.cpp's `ftype` 1).
    #[default]
    F16,
    /// 8-bit blocks (whisper.cpp's `ftype` 7): half the size, faster on CPUs.
    Q8_0,
}

/// Values per Q8_0 block.
const Q8_BLOCK: usize = 32;

/// `values` as Q8_0 blocks: per 32 values, the scale `max |x| / 127` as f16,
/// then each value divided by it, rounded, as i8.
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_BLOCK * (2 + Q8_BLOCK));
    for block in values.chunks(Q8_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(scale).to_bits().to_le_bytes());
        for v in block {
            out.push((v * inverse).round().clamp(-127.0, 127.0) as i8 as u8);
        }
    }
    out
}

/// One tensor to write: its name, dims outermost first, storage and values.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    storage: Storage,
    bytes: Vec<u8>,
}

/// The hyperparameters of a Whisper model, read off its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    /// Vocabulary size (51864 English-only, 51865 multilingual).
    pub n_vocab: usize,
    /// Encoder positions (1500).
    pub n_audio_ctx: usize,
    /// Encoder width.
    pub n_audio_state: usize,
    /// Encoder attention heads.
    pub n_audio_head: usize,
    /// Encoder layers.
    pub n_audio_layer: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder attention heads.
    pub n_text_head: usize,
    /// Decoder layers.
    pub n_text_layer: usize,
    /// Mel bands (80).
    pub n_mels: usize,
}

fn var<'a>(model: &'a Model, name: &str) -> Result<&'a Variable, Ct2Error> {
    model
        .variables
        .get(name)
        .ok_or_else(|| Ct2Error::Unsupported(format!("no variable {name}")))
}

fn dim(model: &Model, name: &str, axis: usize) -> Result<usize, Ct2Error> {
    var(model, name)?
        .shape
        .get(axis)
        .copied()
        .ok_or_else(|| Ct2Error::Unsupported(format!("{name} has no axis {axis}")))
}

fn layers(model: &Model, side: &str) -> usize {
    (0..)
        .take_while(|i| {
            model
                .variables
                .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
        })
        .count()
}

fn heads(model: &Model, side: &str) -> Result<usize, Ct2Error> {
    var(model, &format!("{side}/num_heads"))?
        .scalar_int()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Ct2Error::Unsupported(format!("{side}/num_heads is not an integer")))
}

impl Hparams {
    /// Reads the hyperparameters off a CTranslate2 Whisper model.
    pub fn of(model: &Model) -> Result<Self, Ct2Error> {
        if model.spec != "WhisperSpec" {
            return Err(Ct2Error::Unsupported(format!(
                "a {} model; only Whisper models are converted",
                model.spec
            )));
        }
        Ok(Self {
            n_vocab: dim(model, "decoder/embeddings/weight", 0)?,
            n_audio_ctx: dim(model, "encoder/position_encodings/encodings", 0)?,
            n_audio_state: dim(model, "encoder/conv1/weight", 0)?,
            n_audio_head: heads(model, "encoder")?,
            n_audio_layer: layers(model, "encoder"),
            n_text_ctx: dim(model, "decoder/position_encodings/encodings", 0)?,
            n_text_state: dim(model, "decoder/embeddings/weight", 1)?,
            n_text_head: heads(model, "decoder")?,
            n_text_layer: layers(model, "decoder"),
            n_mels: dim(model, "encoder/conv1/weight", 1)?,
        })
    }
}

/// Rows `from..to` (of `rows` in all) of a row-major matrix variable.
fn rows(v: &Variable, from: usize, to: usize) -> Result<Variable, Ct2Error> {
    let total = v.shape.first().copied().unwrap_or(0);
    if total == 0 || to > total || !v.data.len().is_multiple_of(total) {
        return Err(Ct2Error::Unsupported(format!("cannot split {:?}", v.shape)));
    }
    let row_bytes = v.data.len() / total;
    let mut shape = v.shape.clone();
    shape[0] = to - from;
    Ok(Variable {
        shape,
        dtype: v.dtype,
        data: v.data[from * row_bytes..to * row_bytes].to_vec(),
    })
}

/// The tensors whisper.cpp loads, named as OpenAI's checkpoint names them.
/// Weight matrices (every F16 tensor but the convolutions, which whisper.cpp
/// keeps in f16) take `precision`.
fn tensors(model: &Model, h: &Hparams, precision: Precision) -> Result<Vec<Tensor>, Ct2Error> {
    let mut out = Vec::new();
    let mut push = |name: String, v: &Variable, storage: Storage| -> Result<(), Ct2Error> {
        let storage = match (storage, precision) {
            (Storage::F16, Precision::Q8_0)
                if !name.contains(".conv") && v.shape.last().is_some_and(|n| n % Q8_BLOCK == 0) =>
            {
                Storage::Q8_0
            }
            (storage, _) => storage,
        };
        let bytes = match storage {
            Storage::F16 => v.to_f16_bytes()?,
            Storage::F32 => v.to_f32()?.into_iter().flat_map(f32::to_le_bytes).collect(),
            Storage::Q8_0 => quantize_q8_0(&v.to_f32()?),
        };
        out.push(Tensor {
            name,
            shape: v.shape.clone(),
            storage,
            bytes,
        });
        Ok(())
    };
    let norm = |push: &mut dyn FnMut(String, &Variable, Storage) -> Result<(), Ct2Error>,
                to: &str,
                from: &str|
     -> Result<(), Ct2Error> {
        push(
            format!("{to}.weight"),
            var(model, &format!("{from}/gamma"))?,
            Storage::F32,
        )?;
        push(
            format!("{to}.bias"),
            var(model, &format!("{from}/beta"))?,
            Storage::F32,
        )
    };
    let linear = |push: &mut dyn FnMut(String, &Variable, Storage) -> Result<(), Ct2Error>,
                  to: &str,
                  from: &str|
     -> Result<(), Ct2Error> {
        push(
            format!("{to}.weight"),
            var(model, &format!("{from}/weight"))?,
            Storage::F16,
        )?;
        push(
            format!("{to}.bias"),
            var(model, &format!("{from}/bias"))?,
            Storage::F32,
        )
    };

    // What every block has: self-attention with its norm and output, and the MLP.
    let self_attention_part =
        |push: &mut dyn FnMut(String, &Variable, Storage) -> Result<(), Ct2Error>,
         to: &str,
         from: &str,
         d: usize|
         -> Result<(), Ct2Error> {
            norm(
                push,
                &format!("{to}.attn_ln"),
                &format!("{from}/self_attention/layer_norm"),
            )?;
            self_attention(
                push,
                &format!("{to}.attn"),
                &format!("{from}/self_attention"),
                model,
                d,
            )?;
            linear(
                push,
                &format!("{to}.attn.out"),
                &format!("{from}/self_attention/linear_1"),
            )
        };
    let mlp_part = |push: &mut dyn FnMut(String, &Variable, Storage) -> Result<(), Ct2Error>,
                    to: &str,
                    from: &str|
     -> Result<(), Ct2Error> {
        norm(
            push,
            &format!("{to}.mlp_ln"),
            &format!("{from}/ffn/layer_norm"),
        )?;
        linear(
            push,
            &format!("{to}.mlp.0"),
            &format!("{from}/ffn/linear_0"),
        )?;
        linear(
            push,
            &format!("{to}.mlp.2"),
            &format!("{from}/ffn/linear_1"),
        )
    };

    // Encoder.
    push(
        "encoder.positional_embedding".into(),
        var(model, "encoder/position_encodings/encodings")?,
        Storage::F32,
    )?;
    for conv in ["conv1", "conv2"] {
        push(
            format!("encoder.{conv}.weight"),
            var(model, &format!("encoder/{conv}/weight"))?,
            Storage::F16,
        )?;
        // whisper.cpp wants the bias as a column: [n, 1].
        let mut bias = var(model, &format!("encoder/{conv}/bias"))?.clone();
        bias.shape = vec![bias.shape[0], 1];
        push(format!("encoder.{conv}.bias"), &bias, Storage::F32)?;
    }
    norm(&mut push, "encoder.ln_post", "encoder/layer_norm")?;
    let d = h.n_audio_state;
    for i in 0..h.n_audio_layer {
        let (to, from) = (format!("encoder.blocks.{i}"), format!("encoder/layer_{i}"));
        self_attention_part(&mut push, &to, &from, d)?;
        mlp_part(&mut push, &to, &from)?;
    }

    // Decoder.
    push(
        "decoder.positional_embedding".into(),
        var(model, "decoder/position_encodings/encodings")?,
        Storage::F32,
    )?;
    push(
        "decoder.token_embedding.weight".into(),
        var(model, "decoder/embeddings/weight")?,
        Storage::F16,
    )?;
    norm(&mut push, "decoder.ln", "decoder/layer_norm")?;
    let d = h.n_text_state;
    for i in 0..h.n_text_layer {
        let (to, from) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
        self_attention_part(&mut push, &to, &from, d)?;
        norm(
            &mut push,
            &format!("{to}.cross_attn_ln"),
            &format!("{from}/attention/layer_norm"),
        )?;
        linear(
            &mut push,
            &format!("{to}.cross_attn.query"),
            &format!("{from}/attention/linear_0"),
        )?;
        // Cross-attention keys and values are stacked by rows; the key has no bias.
        let kv_w = var(model, &format!("{from}/attention/linear_1/weight"))?;
        let kv_b = var(model, &format!("{from}/attention/linear_1/bias"))?;
        push(
            format!("{to}.cross_attn.key.weight"),
            &rows(kv_w, 0, d)?,
            Storage::F16,
        )?;
        push(
            format!("{to}.cross_attn.value.weight"),
            &rows(kv_w, d, 2 * d)?,
            Storage::F16,
        )?;
        push(
            format!("{to}.cross_attn.value.bias"),
            &rows(kv_b, d, 2 * d)?,
            Storage::F32,
        )?;
        linear(
            &mut push,
            &format!("{to}.cross_attn.out"),
            &format!("{from}/attention/linear_2"),
        )?;
        mlp_part(&mut push, &to, &from)?;
    }
    Ok(out)
}

/// Self-attention's query, key and value, stacked by rows in `linear_0`; the
/// key has no bias (CTranslate2 stores zeros for it).
fn self_attention(
    push: &mut dyn FnMut(String, &Variable, Storage) -> Result<(), Ct2Error>,
    to: &str,
    from: &str,
    model: &Model,
    d: usize,
) -> Result<(), Ct2Error> {
    let w = var(model, &format!("{from}/linear_0/weight"))?;
    let b = var(model, &format!("{from}/linear_0/bias"))?;
    push(format!("{to}.query.weight"), &rows(w, 0, d)?, Storage::F16)?;
    push(format!("{to}.query.bias"), &rows(b, 0, d)?, Storage::F32)?;
    push(
        format!("{to}.key.weight"),
        &rows(w, d, 2 * d)?,
        Storage::F16,
    )?;
    push(
        format!("{to}.value.weight"),
        &rows(w, 2 * d, 3 * d)?,
        Storage::F16,
    )?;
    push(
        format!("{to}.value.bias"),
        &rows(b, 2 * d, 3 * d)?,
        Storage::F32,
    )
}

/// Slaney's mel scale (librosa's default, which Whisper's filters use):
/// linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let log_step = 6.4f64.ln() / 27.0;
    if hz >= 1000.0 {
        min_log_mel + (hz / 1000.0).ln() / log_step
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let log_step = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        1000.0 * (log_step * (mel - min_log_mel)).exp()
    } else {
        mel * f_sp
    }
}

/// The mel filterbank Whisper was trained with: `n_mels` triangular filters
/// over the 201 bins of a 400-point FFT at 16 kHz, from 0 Hz to 8 kHz,
/// Slaney-normalised (each filter's area constant), row-major.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let n_bins = N_FFT / 2 + 1;
    let bin_hz: Vec<f64> = (0..n_bins)
        .map(|i| i as f64 * SAMPLE_RATE / N_FFT as f64)
        .collect();
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2.0));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut filters = Vec::with_capacity(n_mels * n_bins);
    for m in 0..n_mels {
        let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let norm = 2.0 / (right - left);
        for &hz in &bin_hz {
            let rising = (hz - left) / (centre - left);
            let falling = (right - hz) / (right - centre);
            filters.push((rising.min(falling).max(0.0) * norm) as f32);
        }
    }
    filters
}

fn put_i32(out: &mut impl Write, v: usize) -> std::io::Result<()> {
    let v = i32::try_from(v).map_err(|_| std::io::Error::other("a value does not fit in i32"))?;
    out.write_all(&v.to_le_bytes())
}

/// Writes `model` (with `tokens`, its text tokens as bytes) as a ggml file.
pub fn write(
    model: &Model,
    tokens: &[Vec<u8>],
    precision: Precision,
    out: &mut impl Write,
) -> Result<Hparams, Ct2Error> {
    let h = Hparams::of(model)?;
    out.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in [
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
        match precision {
            Precision::F16 => 1,  // mostly f16
            Precision::Q8_0 => 7, // mostly q8_0
        },
    ] {
        put_i32(out, v)?;
    }
    let filters = mel_filters(h.n_mels);
    put_i32(out, h.n_mels)?;
    put_i32(out, N_FFT / 2 + 1)?;
    for v in filters {
        out.write_all(&v.to_le_bytes())?;
    }
    put_i32(out, tokens.len())?;
    for token in tokens {
        put_i32(out, token.len())?;
        out.write_all(token)?;
    }
    for t in tensors(model, &h, precision)? {
        put_i32(out, t.shape.len())?;
        put_i32(out, t.name.len())?;
        put_i32(out, t.storage.ggml_type())?;
        for &d in t.shape.iter().rev() {
            put_i32(out, d)?;
        }
        out.write_all(t.name.as_bytes())?;
        out.write_all(&t.bytes)?;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_hold_a_scale_and_rounded_values() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let q = quantize_q8_0(&values);
        assert_eq!(q.len(), 2 * 34);
        let scale = half::f16::from_le_bytes([q[0], q[1]]).to_f32();
        assert!((scale - 3.15 / 127.0).abs() < 1e-4, "{scale}");
        // Dequantised, every value is within one step (half a step of
        // rounding, plus the scale's own rounding to f16, as in ggml).
        for (i, v) in values[..32].iter().enumerate() {
            let back = f32::from(q[2 + i] as i8) * scale;
            assert!((back - v).abs() <= scale, "{i}: {back} vs {v}");
        }
    }

    #[test]
    fn the_mel_filterbank_is_slaney_normalised_triangles() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        // Every filter is non-negative and non-empty; the first starts at 0 Hz.
        for row in f.chunks(201) {
            assert!(row.iter().all(|v| *v >= 0.0) && row.iter().any(|v| *v > 0.0));
        }
        assert_eq!(f[0], 0.0);
        // The scale's two regimes meet at 1 kHz (15 mels).
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((mel_to_hz(hz_to_mel(3210.0)) - 3210.0).abs() < 1e-9);
        // Slaney normalisation: the peak of filter m is 2 / (right - left) at its centre.
        let peak = f[..201].iter().cloned().fold(0.0f32, f32::max);
        assert!(peak > 0.02 && peak < 0.03, "{peak}");
    }
}
