//! Decoding stored audio to what speech models take: 16 kHz mono `f32`,
//! a piece at a time, so that a long dictation never sits whole in memory.
//!
//! Containers and codecs: WebM/Matroska and Ogg with Opus (Chrome's, Android's
//! and Firefox's MediaRecorder), MP4 with AAC (Safari and iOS), WAV, FLAC, and
//! Ogg/Vorbis. Symphonia (pure Rust) demuxes all of them and decodes all but
//! Opus, which libopus (built from its vendored source) decodes, straight to
//! 16 kHz mono. Other rates are converted by [`Resampler`].

use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The rate speech models take.
pub const TARGET_RATE: u32 = 16_000;
/// The most samples one Opus packet decodes to at 16 kHz (120 ms).
const MAX_OPUS_FRAME: usize = 1920;

/// Why audio could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be read.
    #[error("cannot read the audio: {0}")]
    Io(#[from] std::io::Error),
    /// Not a container or codec this server decodes, or damaged.
    #[error("the audio cannot be decoded: {0}")]
    Undecodable(String),
}

enum Codec {
    Symphonia(Box<dyn symphonia::core::codecs::Decoder>),
    Opus(opus::Decoder),
}

/// A stored dictation, decoded a packet at a time.
pub struct AudioDecoder {
    format: Box<dyn FormatReader>,
    track: u32,
    codec: Codec,
    resampler: Option<Resampler>,
    opus_buffer: Vec<f32>,
}

impl std::fmt::Debug for AudioDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioDecoder")
            .field("track", &self.track)
            .finish()
    }
}

fn undecodable(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Undecodable(e.to_string())
}

impl AudioDecoder {
    /// Opens `path`; `content_type` (the sniffed MIME type) helps the probe.
    pub fn open(path: &Path, content_type: Option<&str>) -> Result<Self, DecodeError> {
        let file = std::fs::File::open(path)?;
        let stream = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(content_type) = content_type {
            hint.mime_type(content_type);
        }
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                stream,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(undecodable)?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| DecodeError::Undecodable("no audio track".into()))?;
        let params = track.codec_params.clone();
        let track = track.id;
        let (codec, rate) = if params.codec == CODEC_TYPE_OPUS {
            // libopus decodes any Opus stream at 16 kHz, mixing channels down.
            let decoder =
                opus::Decoder::new(TARGET_RATE, opus::Channels::Mono).map_err(undecodable)?;
            (Codec::Opus(decoder), TARGET_RATE)
        } else {
            let decoder = symphonia::default::get_codecs()
                .make(&params, &DecoderOptions::default())
                .map_err(undecodable)?;
            let rate = params
                .sample_rate
                .ok_or_else(|| DecodeError::Undecodable("no sample rate".into()))?;
            (Codec::Symphonia(decoder), rate)
        };
        Ok(Self {
            format,
            track,
            codec,
            resampler: (rate != TARGET_RATE).then(|| Resampler::new(rate, TARGET_RATE)),
            opus_buffer: vec![0.0; MAX_OPUS_FRAME],
        })
    }

    /// The next packet's samples at 16 kHz mono; None at the end.
    pub fn next_samples(&mut self) -> Result<Option<Vec<f32>>, DecodeError> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(packet) => packet,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    // The resampler's last samples, once; then the end.
                    return Ok(self.resampler.take().map(|mut r| r.finish()));
                }
                Err(e) => return Err(undecodable(e)),
            };
            if packet.track_id() != self.track {
                continue;
            }
            let mono = match &mut self.codec {
                Codec::Opus(decoder) => {
                    let n = match decoder.decode_float(&packet.data, &mut self.opus_buffer, false) {
                        Ok(n) => n,
                        // A damaged packet: skip it, as a player would.
                        Err(_) => continue,
                    };
                    self.opus_buffer[..n].to_vec()
                }
                Codec::Symphonia(decoder) => match decoder.decode(&packet) {
                    Ok(decoded) => {
                        let spec = *decoded.spec();
                        let channels = spec.channels.count().max(1);
                        let mut buffer = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
                        buffer.copy_interleaved_ref(decoded);
                        buffer
                            .samples()
                            .chunks(channels)
                            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
                            .collect()
                    }
                    Err(SymphoniaError::DecodeError(_)) => continue,
                    Err(e) => return Err(undecodable(e)),
                },
            };
            return Ok(Some(match &mut self.resampler {
                Some(resampler) => resampler.push(&mono),
                None => mono,
            }));
        }
    }
}

/// Band-limited sample-rate conversion (windowed-sinc interpolation), a
/// piece at a time: enough for speech, with no dependency.
#[derive(Debug)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Low-pass cut-off, as a fraction of the input's Nyquist frequency.
    cutoff: f64,
    /// Input not yet consumed, from `start` on.
    buffer: Vec<f32>,
    /// Position of the next output sample, in input samples from the buffer's start.
    position: f64,
}

/// Input samples on each side of an output sample that it is computed from.
const HALF_TAPS: usize = 16;

impl Resampler {
    /// From `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        let step = f64::from(from) / f64::from(to);
        Self {
            step,
            // Below the lower Nyquist frequency, with room for the window's roll-off.
            cutoff: (1.0 / step).min(1.0) * 0.92,
            buffer: vec![0.0; HALF_TAPS],
            position: HALF_TAPS as f64,
        }
    }

    fn sample_at(&self, t: f64) -> f32 {
        let centre = t.floor() as isize;
        let mut sum = 0.0f64;
        for k in (centre - HALF_TAPS as isize + 1)..=(centre + HALF_TAPS as isize) {
            let Some(&x) = usize::try_from(k).ok().and_then(|k| self.buffer.get(k)) else {
                continue;
            };
            let d = t - k as f64;
            let arg = std::f64::consts::PI * d * self.cutoff;
            let sinc = if arg.abs() < 1e-9 {
                1.0
            } else {
                arg.sin() / arg
            };
            // A Hann window over the kernel's width.
            let w = 0.5 + 0.5 * (std::f64::consts::PI * d / (HALF_TAPS as f64 + 1.0)).cos();
            sum += f64::from(x) * sinc * self.cutoff * w;
        }
        sum as f32
    }

    /// Converts `input`; returns what can be computed so far.
    pub fn push(&mut self, input: &[f32]) -> Vec<f32> {
        self.buffer.extend_from_slice(input);
        let mut out = Vec::with_capacity((input.len() as f64 / self.step) as usize + 1);
        while self.position + (HALF_TAPS as f64) < self.buffer.len() as f64 {
            out.push(self.sample_at(self.position));
            self.position += self.step;
        }
        // Keep only what the next outputs still need.
        let keep_from = (self.position.floor() as usize).saturating_sub(HALF_TAPS);
        if keep_from > 0 {
            self.buffer.drain(..keep_from);
            self.position -= keep_from as f64;
        }
        out
    }

    /// The last samples, after the input ended.
    pub fn finish(&mut self) -> Vec<f32> {
        self.push(&[0.0; HALF_TAPS])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_48k_to_16k_keeps_a_tone_and_its_length() {
        let tone: Vec<f32> = (0..48_000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin())
            .collect();
        let mut r = Resampler::new(48_000, TARGET_RATE);
        let mut out = Vec::new();
        for chunk in tone.chunks(1000) {
            out.extend(r.push(chunk));
        }
        out.extend(r.finish());
        assert!((out.len() as i64 - 16_000).abs() <= 8, "{}", out.len());
        // Same tone: compare with the ideal 16 kHz sine away from the edges.
        let err: f32 = (1000..15_000)
            .map(|i| {
                let ideal = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin();
                (out[i] - ideal).abs()
            })
            .fold(0.0, f32::max);
        assert!(err < 0.02, "{err}");
    }

    #[test]
    fn a_tone_above_the_new_nyquist_is_filtered_out() {
        let tone: Vec<f32> = (0..48_000)
            .map(|i| (2.0 * std::f32::consts::PI * 12_000.0 * i as f32 / 48_000.0).sin())
            .collect();
        let mut r = Resampler::new(48_000, TARGET_RATE);
        let out = r.push(&tone);
        let peak = out[1000..14_000].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak < 0.05, "{peak}");
    }
}
