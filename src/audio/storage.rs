//! Where audio lives: a directory (`PWA_AUDIO_DIR`, default `./data/audio`),
//! and optionally an S3-compatible object store (`PWA_AUDIO_STORE`) for the
//! stored audio, so that several instances share it.
//!
//! ```text
//! objects/<last two hex digits of the id>/<recording id>.<ext>   stored audio (on disk, or under the store's prefix)
//! tmp/<random>.part                                               single uploads in flight (always on disk)
//! partial/<clinician hash>-<local_storage_key>.part               chunked uploads in progress (always on disk)
//! ```
//!
//! Paths are made from server-side ids only; nothing a client sends (its file
//! name, its `audio_file_path`) ever becomes part of a path. Audio is streamed
//! through: never held whole in memory.
//!
//! Durability: an object is written under a temporary name, fsynced, renamed
//! into place and its directory fsynced (or, with an object store, its upload
//! completed) *before* the recording's row is committed, so a committed row
//! always has its audio. A crash in between leaves an object without a row,
//! which [`AudioStore::objects_modified`] lists for the cleanup to check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::sniff::{SNIFF_LEN, audio_content_type, extension};
use crate::digest::hex;
use crate::files::{FsError, fs_error, fsync_dir};

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
    /// The object store failed (unreachable, refused).
    #[error("audio store: {0}")]
    Remote(#[from] object_store::Error),
}

/// A temporary file that is deleted when this is dropped, unless it was moved
/// away first: a request that dies (its client gone, its future dropped)
/// leaves nothing behind.
#[derive(Debug)]
struct TempFile(PathBuf);

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
/// (the file is deleted when this is dropped, unless [`AudioStore::keep`] moved it).
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

/// Where stored audio goes.
#[derive(Debug, Clone)]
enum Objects {
    /// `objects/` under the local directory.
    Disk,
    /// An object store (S3-compatible), under a prefix.
    Remote {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

/// The audio store: uploads are received on the local disk, stored audio is
/// kept on the disk or in an object store. Every operation on stored audio goes
/// through here, whichever it is.
#[derive(Debug, Clone)]
pub struct AudioStore {
    root: PathBuf,
    objects: Objects,
}

/// Why the audio store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local directory.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `PWA_AUDIO_STORE` (its URL or the `AWS_*` settings).
    #[error("PWA_AUDIO_STORE: {0}")]
    Remote(#[from] object_store::Error),
}

impl AudioStore {
    /// The store under `root` (creating its directories), keeping stored
    /// audio in the object store at `remote` (e.g. `s3://bucket/prefix`; the
    /// credentials, region and endpoint come from the usual `AWS_*` variables)
    /// when given.
    pub fn open(root: impl Into<PathBuf>, remote: Option<&str>) -> Result<Self, OpenError> {
        let objects = match remote {
            None => Objects::Disk,
            Some(url) => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()?;
                // `s3://bucket/some/prefix` → `some/prefix`.
                let prefix = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split_once('/'))
                    .map_or("", |(_, path)| path.trim_matches('/'))
                    .to_owned();
                Objects::Remote {
                    store: Arc::new(store),
                    prefix,
                }
            }
        };
        let store = Self {
            root: root.into(),
            objects,
        };
        for dir in ["objects", "tmp", "partial"] {
            let dir = store.root.join(dir);
            std::fs::create_dir_all(&dir).map_err(fs_error("cannot create", &dir))?;
        }
        Ok(store)
    }

    /// The object store path of a key.
    fn remote_path(prefix: &str, key: &str) -> object_store::path::Path {
        if prefix.is_empty() {
            object_store::path::Path::from(key)
        } else {
            object_store::path::Path::from(format!("{prefix}/{key}"))
        }
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
        let temp = TempFile(self.temp_path());
        let (size, sha256, content_type) = write_stream(&temp.0, body, limit).await?;
        Ok(Received {
            temp,
            size,
            sha256,
            content_type,
        })
    }

    /// A new name for a temporary file.
    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.part", Uuid::new_v4()))
    }

    /// Moves received audio into place as recording `id`'s object, durably;
    /// returns its key.
    pub async fn keep(&self, received: &Received, id: Uuid) -> Result<String, AudioError> {
        let key = Self::object_key(id, received.content_type);
        if let Objects::Remote { store, prefix } = &self.objects {
            self.upload(
                store.as_ref(),
                &Self::remote_path(prefix, &key),
                &received.temp.0,
            )
            .await?;
            return Ok(key);
        }
        let path = self.root.join(&key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(fs_error("cannot create", &dir))?;
        fs::rename(&received.temp.0, &path)
            .await
            .map_err(fs_error("cannot move audio to", &path))?;
        sync_dir(&dir).await?;
        Ok(key)
    }

    /// Streams a local file into the object store (multipart: never whole in memory).
    async fn upload(
        &self,
        store: &dyn ObjectStore,
        path: &object_store::path::Path,
        file: &Path,
    ) -> Result<(), AudioError> {
        let mut source = File::open(file)
            .await
            .map_err(fs_error("cannot open", file))?;
        let mut upload = WriteMultipart::new(store.put_multipart(path).await?);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = source
                .read(&mut buf)
                .await
                .map_err(fs_error("cannot read", file))?;
            if n == 0 {
                break;
            }
            upload.wait_for_capacity(4).await?;
            upload.write(&buf[..n]);
        }
        upload.finish().await?;
        Ok(())
    }

    /// Deletes received audio that is not kept (a duplicate, a refused upload).
    pub async fn discard(&self, received: Received) {
        drop(received);
    }

    /// Deletes a stored object (its row was not committed).
    pub async fn remove(&self, key: &str) {
        if let Objects::Remote { store, prefix } = &self.objects {
            if let Err(e) = store.delete(&Self::remote_path(prefix, key)).await {
                tracing::warn!(error = %e, key, "cannot delete an audio object");
            }
            return;
        }
        let path = self.root.join(key);
        if let Err(e) = fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, path = %path.display(), "cannot delete an audio object");
        }
    }

    /// The length of a stored object.
    pub async fn object_len(&self, key: &str) -> std::io::Result<u64> {
        match &self.objects {
            Objects::Disk => Ok(fs::metadata(self.root.join(key)).await?.len()),
            Objects::Remote { store, prefix } => store
                .head(&Self::remote_path(prefix, key))
                .await
                .map(|meta| meta.size)
                .map_err(std::io::Error::other),
        }
    }

    /// `count` bytes of a stored object from `start`, as a stream.
    pub async fn object_stream(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        if let Objects::Remote { store, prefix } = &self.objects {
            let options = GetOptions {
                range: Some(GetRange::Bounded(start..start + count)),
                ..Default::default()
            };
            let result = store
                .get_opts(&Self::remote_path(prefix, key), options)
                .await
                .map_err(std::io::Error::other)?;
            return Ok(result.into_stream().map_err(std::io::Error::other).boxed());
        }
        let mut file = File::open(self.root.join(key)).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        // Bytes read from disk per chunk.
        const READ_CHUNK: usize = 64 * 1024;
        Ok(
            futures_util::stream::unfold((file, count), |(mut file, left)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf =
                    vec![0u8; READ_CHUNK.min(usize::try_from(left).unwrap_or(READ_CHUNK))];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
                    }
                    Err(e) => Some((Err(e), (file, 0))),
                }
            })
            .boxed(),
        )
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
        let temp = TempFile(self.temp_path());
        fs::rename(path, &temp.0)
            .await
            .map_err(fs_error("cannot move", path))?;
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

    // ------------------------------------------------------------ cleanup

    /// Stored objects last modified after `after` (all when None) and at or
    /// before `until` (microseconds since the epoch), with the recording id each
    /// belongs to: candidates for deletion when no row has that id.
    pub async fn objects_modified(&self, after: Option<i64>, until: i64) -> Vec<(Uuid, String)> {
        let in_window = |micros: i64| micros <= until && after.is_none_or(|a| micros > a);
        let mut out = Vec::new();
        if let Objects::Remote { store, prefix } = &self.objects {
            let listing = store.list(Some(&Self::remote_path(prefix, "objects")));
            let metas: Vec<_> = listing
                .filter_map(|m| async move { m.ok() })
                .collect()
                .await;
            for meta in metas {
                let location = meta.location.to_string();
                let key = location
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&location)
                    .trim_start_matches('/')
                    .to_owned();
                let id = key
                    .rsplit('/')
                    .next()
                    .and_then(|name| name.split('.').next())
                    .and_then(|s| Uuid::parse_str(s).ok());
                if let Some(id) = id
                    && in_window(meta.last_modified.timestamp_micros())
                {
                    out.push((id, key));
                }
            }
            return out;
        }
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
                    && modified_micros(&file.path()).await.is_some_and(in_window)
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

/// When a file was last written, in microseconds since the epoch.
async fn modified_micros(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).await.and_then(|m| m.modified()).ok()?;
    let since_epoch = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_micros()).ok()
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
