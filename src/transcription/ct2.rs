//! Reading a CTranslate2 Whisper model (faster-whisper's format): `model.bin`
//! and its vocabulary.
//!
//! `model.bin` is little-endian: `u32` binary version (6), the spec name and
//! a `u32` revision, a `u32` variable count, then per variable its name, a
//! `u8` rank, `rank` × `u32` dimensions, a `u8` data type, a `u32` byte count
//! and the data; then `u32` alias count and per alias two names. A name is a
//! `u16` length (its NUL included) and the bytes.

use std::collections::HashMap;
use std::io::Read;

/// CTranslate2's data types, by their code in `model.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// 0.
    F32,
    /// 1.
    I8,
    /// 2.
    I16,
    /// 3.
    I32,
    /// 4.
    F16,
    /// 5.
    Bf16,
}

impl DataType {
    fn from_code(code: u8) -> Result<Self, Ct2Error> {
        Ok(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            other => return Err(Ct2Error::Format(format!("unknown data type {other}"))),
        })
    }
}

/// One variable of the model.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its dimensions, outermost first (row-major data).
    pub shape: Vec<usize>,
    /// How its values are stored.
    pub dtype: DataType,
    /// The raw little-endian values.
    pub data: Vec<u8>,
}

impl Variable {
    /// The values as f32 (from f32, f16 or bf16).
    pub fn to_f32(&self) -> Result<Vec<f32>, Ct2Error> {
        let pairs = self
            .data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]));
        Ok(match self.dtype {
            DataType::F32 => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DataType::F16 => pairs.map(|h| half::f16::from_bits(h).to_f32()).collect(),
            DataType::Bf16 => pairs.map(|h| half::bf16::from_bits(h).to_f32()).collect(),
            other => {
                return Err(Ct2Error::Unsupported(format!(
                    "{other:?} weights (quantized models): use a float16 or float32 model"
                )));
            }
        })
    }

    /// The values as f16 little-endian bytes.
    pub fn to_f16_bytes(&self) -> Result<Vec<u8>, Ct2Error> {
        if self.dtype == DataType::F16 {
            return Ok(self.data.clone());
        }
        Ok(self
            .to_f32()?
            .into_iter()
            .flat_map(|v| half::f16::from_f32(v).to_bits().to_le_bytes())
            .collect())
    }

    /// A scalar integer (e.g. `encoder/num_heads`).
    pub fn scalar_int(&self) -> Option<i64> {
        match (self.dtype, self.data.as_slice()) {
            (DataType::I8, [a]) => Some(i64::from(*a as i8)),
            (DataType::I16, [a, b]) => Some(i64::from(i16::from_le_bytes([*a, *b]))),
            (DataType::I32, [a, b, c, d]) => Some(i64::from(i32::from_le_bytes([*a, *b, *c, *d]))),
            _ => None,
        }
    }
}

/// A CTranslate2 model: its spec name and variables by name.
#[derive(Debug)]
pub struct Model {
    /// E.g. `WhisperSpec`.
    pub spec: String,
    /// Variables (aliases resolved to their own entry too).
    pub variables: HashMap<String, Variable>,
}

/// Why a model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    /// Reading failed.
    #[error("cannot read the model: {0}")]
    Io(std::io::Error),
    /// The data ends before the model does: a damaged download, or a model
    /// split in parts with its last part missing.
    #[error("the model is truncated: it ends before its last variable (a part missing?)")]
    Truncated,
    /// Not CTranslate2's format, or damaged.
    #[error("not a CTranslate2 model.bin: {0}")]
    Format(String),
    /// Readable, but not something this converter handles.
    #[error("unsupported model: {0}")]
    Unsupported(String),
}

impl From<std::io::Error> for Ct2Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Io(e)
        }
    }
}

fn read_u8(r: &mut impl Read) -> Result<u8, Ct2Error> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> Result<u16, Ct2Error> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> Result<u32, Ct2Error> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_name(r: &mut impl Read) -> Result<String, Ct2Error> {
    let len = usize::from(read_u16(r)?);
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|e| Ct2Error::Format(format!("a name is not UTF-8: {e}")))
}

/// The largest variable accepted (guards against reading garbage as a size).
const MAX_VARIABLE_BYTES: u32 = 2 << 30;

/// Reads a whole `model.bin`.
pub fn read_model(mut r: impl Read) -> Result<Model, Ct2Error> {
    let version = read_u32(&mut r)?;
    if !(5..=6).contains(&version) {
        return Err(Ct2Error::Format(format!(
            "binary version {version}, expected 6"
        )));
    }
    let spec = read_name(&mut r)?;
    let _revision = read_u32(&mut r)?;
    let count = read_u32(&mut r)?;
    let mut variables = HashMap::new();
    for _ in 0..count {
        let name = read_name(&mut r)?;
        let rank = read_u8(&mut r)?;
        let shape = (0..rank)
            .map(|_| read_u32(&mut r).map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = DataType::from_code(read_u8(&mut r)?)?;
        let bytes = read_u32(&mut r)?;
        if bytes > MAX_VARIABLE_BYTES {
            return Err(Ct2Error::Format(format!("{name}: {bytes} bytes")));
        }
        let mut data = vec![0u8; bytes as usize];
        r.read_exact(&mut data)?;
        variables.insert(name, Variable { shape, dtype, data });
    }
    let aliases = read_u32(&mut r)?;
    for _ in 0..aliases {
        let alias = read_name(&mut r)?;
        let target = read_name(&mut r)?;
        if let Some(variable) = variables.get(&target).cloned() {
            variables.insert(alias, variable);
        }
    }
    Ok(Model { spec, variables })
}

/// GPT-2's mapping of bytes to printable characters, reversed: byte-level BPE
/// vocabularies (Whisper's among them) write each byte as one of these.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

/// The text tokens of `vocabulary.txt` (one token per line, by id) as raw
/// bytes: every token before `<|endoftext|>`, where the special tokens begin.
pub fn text_tokens(vocabulary: &str) -> Result<Vec<Vec<u8>>, Ct2Error> {
    let decode = unicode_to_byte();
    let mut tokens = Vec::new();
    for line in vocabulary.lines() {
        if line == "<|endoftext|>" {
            return Ok(tokens);
        }
        let bytes = line
            .chars()
            .map(|c| decode.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                Ct2Error::Format(format!("vocabulary token {line:?} is not byte-level BPE"))
            })?;
        tokens.push(bytes);
    }
    Err(Ct2Error::Format(
        "the vocabulary has no <|endoftext|>".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_decode_to_their_bytes() {
        let tokens = text_tokens("!\n\u{120}the\n\u{10a}\n<|endoftext|>\n<|en|>\n").unwrap();
        assert_eq!(
            tokens,
            vec![b"!".to_vec(), b" the".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(unicode_to_byte().len(), 256);
    }

    #[test]
    fn a_tiny_model_file_reads_back() {
        let mut file = Vec::new();
        let name = |s: &str, out: &mut Vec<u8>| {
            out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        file.extend_from_slice(&6u32.to_le_bytes());
        name("WhisperSpec", &mut file);
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        name("encoder/num_heads", &mut file);
        file.push(0);
        file.push(2);
        file.extend_from_slice(&2u32.to_le_bytes());
        file.extend_from_slice(&6i16.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        name("encoder/heads", &mut file);
        name("encoder/num_heads", &mut file);
        let model = read_model(file.as_slice()).unwrap();
        assert_eq!(model.spec, "WhisperSpec");
        assert_eq!(model.variables["encoder/heads"].scalar_int(), Some(6));
        assert!(read_model(&file[..20]).is_err());
    }
}
