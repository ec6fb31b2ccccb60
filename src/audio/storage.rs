//! Where audio lives: a directory (`PWA_AUDIO_DIR`, default `./data/audio`).
//!
//! ```text
//! objects/<last two hex digits of the id>/<recording id>.<ext>   stored audio
//! tmp/<random>.part                                               single uploads in flight
//! partial/<clinician hash>-<local_storage_key>.part               chunked uploads in progress
//! ```
//!
//! Paths are made from server-side ids only; nothing a client sends (its file
//! name, its `audio_file_path`) ever becomes part of a path. Audio is streamed
//! through: never held whole in memory.
//!
//! Durability: an object is written under a temporary name, fsynced, renamed
//! into place and its directory fsynced *before* the recording's row is
//! committed, so a committed row always has its audio. A crash in between
//! leaves a file without a row, which [`AudioStore::orphans`] finds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::sniff::{SNIFF_LEN, audio_content_type, extension};
use crate::db::{FsError, fs_error, fsync_dir};

/// Why audio was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// More bytes than allowed.
    #[error("the audio is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The bytes are not a supported audio container.
    #[error(
        "the file is not a supported audio format (WebM/Matroska, Ogg, WAV, MP4/M4A, MP3 or FLAC)"
    )]
    NotAudio,
    /// No bytes at all.
    #[error("the audio file is empty")]
    Empty,
    /// The client's stream broke off.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// The server's disk failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Audio received into a temporary file, hashed and sniffed, not yet kept.
#[derive(Debug)]
pub struct Received {
    temp: PathBuf,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// MIME type from the container's signature.
    pub content_type: &'static str,
}

/// The local-filesystem audio store.
#[derive(Debug, Clone)]
pub struct AudioStore {
    root: PathBuf,
}

impl AudioStore {
    /// The store under `root`, creating its directories.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, FsError> {
        let store = Self { root: root.into() };
        for dir in ["objects", "tmp", "partial"] {
            let dir = store.root.join(dir);
            std::fs::create_dir_all(&dir).map_err(fs_error("cannot create", &dir))?;
        }
        Ok(store)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key (path relative to the root) of a recording's audio.
    pub fn object_key(id: Uuid, content_type: &str) -> String {
        let hex = id.simple().to_string();
        // The last digits are random in every UUID version: an even spread.
        format!("objects/{}/{id}.{}", &hex[30..], extension(content_type))
    }

    /// Streams `body` into a temporary file, at most `limit` bytes, hashing it
    /// and checking its first bytes are audio (failing as soon as they are not).
    pub async fn receive<S, E>(&self, body: S, limit: u64) -> Result<Received, AudioError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let temp = self
            .root
            .join("tmp")
            .join(format!("{}.part", Uuid::new_v4()));
        let outcome = write_stream(&temp, body, limit).await;
        match outcome {
            Ok((size, sha256, content_type)) => Ok(Received {
                temp,
                size,
                sha256,
                content_type,
            }),
            Err(e) => {
                let _ = fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    /// Moves received audio into place as recording `id`'s object, durably;
    /// returns its key.
    pub async fn keep(&self, received: &Received, id: Uuid) -> Result<String, FsError> {
        let key = Self::object_key(id, received.content_type);
        let path = self.root.join(&key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(fs_error("cannot create", &dir))?;
        fs::rename(&received.temp, &path)
            .await
            .map_err(fs_error("cannot move audio to", &path))?;
        sync_dir(&dir).await?;
        Ok(key)
    }

    /// Deletes received audio that is not kept (a duplicate, a refused upload).
    pub async fn discard(&self, received: Received) {
        if let Err(e) = fs::remove_file(&received.temp).await {
            tracing::warn!(error = %e, path = %received.temp.display(), "cannot delete a temporary upload");
        }
    }

    /// Deletes a stored object (its row was not committed).
    pub async fn remove(&self, key: &str) {
        let path = self.root.join(key);
        if let Err(e) = fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, path = %path.display(), "cannot delete an audio object");
        }
    }

    /// Opens a stored object for reading; returns it and its length.
    pub async fn open_object(&self, key: &str) -> std::io::Result<(File, u64)> {
        let file = File::open(self.root.join(key)).await?;
        let len = file.metadata().await?.len();
        Ok((file, len))
    }

    // ------------------------------------------------------------ chunked uploads

    /// The file holding a chunked upload's bytes so far.
    pub fn partial_path(&self, clinician_id: &str, local_storage_key: Uuid) -> PathBuf {
        let clinician = hex(&Sha256::digest(clinician_id.as_bytes())[..8]);
        self.root
            .join("partial")
            .join(format!("{clinician}-{local_storage_key}.part"))
    }

    /// Appends `body` to a partial file at `offset` (bytes past `offset`, from
    /// an earlier attempt whose end was never acknowledged, are dropped first),
    /// at most up to `total` bytes. Returns the new length, fsynced, even when
    /// the client broke off: what arrived is kept and the upload resumes there.
    pub async fn append<S, E>(
        &self,
        path: &Path,
        offset: u64,
        total: u64,
        body: S,
    ) -> (u64, Result<(), AudioError>)
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut file = match OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .await
        {
            Ok(f) => f,
            Err(e) => return (offset, Err(fs_error("cannot open", path)(e).into())),
        };
        let prepared = async {
            file.set_len(offset).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = prepared {
            return (offset, Err(fs_error("cannot prepare", path)(e).into()));
        }
        let mut len = offset;
        let mut outcome = Ok(());
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(AudioError::Interrupted(e.to_string()));
                    break;
                }
            };
            if len + chunk.len() as u64 > total {
                outcome = Err(AudioError::TooLarge { limit: total });
                break;
            }
            if let Err(e) = file.write_all(&chunk).await {
                outcome = Err(fs_error("cannot write", path)(e).into());
                break;
            }
            len += chunk.len() as u64;
        }
        if let Err(e) = file.sync_all().await {
            return (offset, Err(fs_error("cannot sync", path)(e).into()));
        }
        (len, outcome)
    }

    /// Turns a complete partial file into received audio (hashing and sniffing it).
    pub async fn receive_partial(&self, path: &Path) -> Result<Received, AudioError> {
        let temp = self
            .root
            .join("tmp")
            .join(format!("{}.part", Uuid::new_v4()));
        fs::rename(path, &temp)
            .await
            .map_err(fs_error("cannot move", path))?;
        let mut file = File::open(&temp)
            .await
            .map_err(fs_error("cannot open", &temp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        let mut prefix = Vec::with_capacity(SNIFF_LEN);
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(fs_error("cannot read", &temp))?;
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
        match content_type {
            Ok(content_type) => Ok(Received {
                temp,
                size,
                sha256: hex(&hasher.finalize()),
                content_type,
            }),
            Err(e) => {
                let _ = fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    // ------------------------------------------------------------ cleanup

    /// Stored objects last modified more than `grace` ago, with the recording id
    /// each belongs to: candidates for deletion when no row has that id.
    pub async fn objects_older_than(&self, grace: Duration) -> Vec<(Uuid, String)> {
        let mut out = Vec::new();
        let objects = self.root.join("objects");
        let Ok(mut shards) = fs::read_dir(&objects).await else {
            return out;
        };
        while let Ok(Some(shard)) = shards.next_entry().await {
            let Ok(mut files) = fs::read_dir(shard.path()).await else {
                continue;
            };
            while let Ok(Some(file)) = files.next_entry().await {
                let name = file.file_name().to_string_lossy().into_owned();
                let id = name.split('.').next().and_then(|s| Uuid::parse_str(s).ok());
                if let Some(id) = id
                    && is_older(&file.path(), grace).await
                {
                    let shard_name = shard.file_name().to_string_lossy().into_owned();
                    out.push((id, format!("objects/{shard_name}/{name}")));
                }
            }
        }
        out
    }

    /// Deletes temporary and partial files untouched for `grace` (uploads cut
    /// off by a crash; a live chunked upload touches its file with every chunk,
    /// and its session expires after the same time); returns how many.
    pub async fn sweep_temporary(&self, grace: Duration) -> usize {
        let mut deleted = 0;
        for dir in ["tmp", "partial"] {
            let Ok(mut files) = fs::read_dir(self.root.join(dir)).await else {
                continue;
            };
            while let Ok(Some(file)) = files.next_entry().await {
                if is_older(&file.path(), grace).await && fs::remove_file(file.path()).await.is_ok()
                {
                    deleted += 1;
                }
            }
        }
        deleted
    }
}

async fn is_older(path: &Path, grace: Duration) -> bool {
    match fs::metadata(path).await.and_then(|m| m.modified()) {
        Ok(modified) => SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age >= grace),
        Err(_) => false,
    }
}

/// Writes a stream to a new file: size, SHA-256 and content type, fsynced.
async fn write_stream<S, E>(
    path: &Path,
    body: S,
    limit: u64,
) -> Result<(u64, String, &'static str), AudioError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
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
    Ok((size, hex(&hasher.finalize()), content_type))
}

async fn sync_dir(dir: &Path) -> Result<(), FsError> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || fsync_dir(&owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(fs_error("cannot sync directory", dir))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
