//! Receiving audio: a stream or a finished partial file becomes a temporary
//! file, hashed and sniffed, that is deleted unless the store keeps it.

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::AudioError;
use super::sniff::{SNIFF_LEN, audio_content_type};
use crate::digest::hex;
use crate::files::fs_error;

/// A temporary file that is deleted when this is dropped, unless it was moved
/// away first: a request that dies (its client gone, its future dropped)
/// leaves nothing behind.
#[derive(Debug)]
pub(super) struct TempFile(pub(super) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %self.0.display(), "cannot delete a temporary upload");
            }
        }
    }
}

/// Audio received into a temporary file, hashed and sniffed, not yet kept
/// (the file is deleted when this is dropped, unless the store moved it).
#[derive(Debug)]
pub struct Received {
    temp: TempFile,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// MIME type from the container's signature.
    pub content_type: &'static str,
}

impl Received {
    /// Where the bytes are until they are kept.
    pub fn path(&self) -> &Path {
        &self.temp.0
    }
}

/// Streams `body` into a new file at `path`, at most `limit` bytes, hashing it
/// and checking its first bytes are audio (failing as soon as they are not);
/// fsynced.
pub(super) async fn receive_stream<S, E>(
    path: PathBuf,
    body: S,
    limit: u64,
) -> Result<Received, AudioError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let temp = TempFile(path);
    let path = &temp.0;
    let mut file = File::create(path)
        .await
        .map_err(fs_error("cannot create", path))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut prefix: Vec<u8> = Vec::with_capacity(SNIFF_LEN);
    let mut content_type = None;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AudioError::Interrupted(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(AudioError::TooLarge { limit });
        }
        if content_type.is_none() {
            let take = (SNIFF_LEN - prefix.len()).min(chunk.len());
            prefix.extend_from_slice(&chunk[..take]);
            if prefix.len() == SNIFF_LEN {
                content_type = Some(audio_content_type(&prefix).ok_or(AudioError::NotAudio)?);
            }
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(fs_error("cannot write", path))?;
    }
    if size == 0 {
        return Err(AudioError::Empty);
    }
    // Shorter than the signature window: judge what there is.
    let content_type = match content_type {
        Some(ct) => ct,
        None => audio_content_type(&prefix).ok_or(AudioError::NotAudio)?,
    };
    file.sync_all()
        .await
        .map_err(fs_error("cannot sync", path))?;
    Ok(Received {
        temp,
        size,
        sha256: hex(&hasher.finalize()),
        content_type,
    })
}

/// Moves a complete file to `temp_path` and hashes and sniffs it.
pub(super) async fn receive_file(from: &Path, temp_path: PathBuf) -> Result<Received, AudioError> {
    let temp = TempFile(temp_path);
    fs::rename(from, &temp.0)
        .await
        .map_err(fs_error("cannot move", from))?;
    let mut file = File::open(&temp.0)
        .await
        .map_err(fs_error("cannot open", &temp.0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut prefix = Vec::with_capacity(SNIFF_LEN);
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(fs_error("cannot read", &temp.0))?;
        if n == 0 {
            break;
        }
        if prefix.len() < SNIFF_LEN {
            let take = (SNIFF_LEN - prefix.len()).min(n);
            prefix.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let content_type = match (size, audio_content_type(&prefix)) {
        (0, _) => Err(AudioError::Empty),
        (_, None) => Err(AudioError::NotAudio),
        (_, Some(ct)) => Ok(ct),
    };
    Ok(Received {
        temp,
        size,
        sha256: hex(&hasher.finalize()),
        content_type: content_type?,
    })
}
