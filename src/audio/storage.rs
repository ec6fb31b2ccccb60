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

//!
//! The jobs are in their own modules: [`super::receiving`] (a stream or a
//! finished partial file becomes a hashed, sniffed temporary file),
//! [`super::partial`] (chunked uploads in progress) and [`super::objects`]
//! (stored audio, on disk or in a bucket, behind one interface). This is the
//! one type the rest of the code uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::fs;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::objects::ObjectBackend;
use super::objects::disk::DiskObjects;
use super::objects::s3::S3Objects;
use super::partial;
use super::receiving::{self, Received, TempFile};
use super::sniff::extension;
use super::{AudioError, OpenError};
use crate::digest::hex;
use crate::files::fs_error;

/// The audio store: uploads are received on the local disk, stored audio is
/// kept on the disk or in an object store. Every operation on audio goes
/// through here, whichever it is.
#[derive(Debug, Clone)]
pub struct AudioStore {
    root: PathBuf,
    objects: Arc<dyn ObjectBackend>,
}

impl AudioStore {
    /// The store under `root` (creating its directories), keeping stored
    /// audio in the object store at `remote` (e.g. `s3://bucket/prefix`; the
    /// credentials, region and endpoint come from the usual `AWS_*` variables)
    /// when given.
    pub fn open(root: impl Into<PathBuf>, remote: Option<&str>) -> Result<Self, OpenError> {
        let root = root.into();
        let objects: Arc<dyn ObjectBackend> = match remote {
            None => Arc::new(DiskObjects::new(root.clone())),
            Some(url) => Arc::new(S3Objects::open(url)?),
        };
        for dir in ["objects", "tmp", "partial"] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(fs_error("cannot create", &dir))?;
        }
        Ok(Self { root, objects })
    }

    /// The key (path relative to the root) of a recording's audio.
    pub fn object_key(id: Uuid, content_type: &str) -> String {
        let hex = id.simple().to_string();
        // The last digits are random in every UUID version: an even spread.
        format!("objects/{}/{id}.{}", &hex[30..], extension(content_type))
    }

    /// Streams `body` into a temporary file, at most `limit` bytes, hashing it
    /// and checking its first bytes are audio (failing as soon as they are not).
    #[tracing::instrument(name = "audio.receive", skip_all)]
    pub async fn receive<S, E>(&self, body: S, limit: u64) -> Result<Received, AudioError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        receiving::receive_stream(self.temp_path(), body, limit).await
    }

    /// A new name for a temporary file.
    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.part", Uuid::new_v4()))
    }

    /// Moves received audio into place as recording `id`'s object, durably;
    /// returns its key.
    #[tracing::instrument(name = "audio.keep", skip_all)]
    pub async fn keep(&self, received: &Received, id: Uuid) -> Result<String, AudioError> {
        let key = Self::object_key(id, received.content_type);
        self.objects.keep(received.path(), &key).await?;
        Ok(key)
    }

    /// Deletes received audio that is not kept (a duplicate, a refused upload).
    pub async fn discard(&self, received: Received) {
        drop(received);
    }

    /// Deletes a stored object (its row was not committed); a failure is logged.
    pub async fn remove(&self, key: &str) {
        if let Err(e) = self.objects.delete(key).await {
            tracing::warn!(error = %e, "cannot delete an audio object");
        }
    }

    /// Deletes a stored object; one already gone is fine.
    #[tracing::instrument(name = "audio.delete", skip_all)]
    pub async fn delete(&self, key: &str) -> std::io::Result<()> {
        self.objects.delete(key).await
    }

    /// The length of a stored object.
    #[tracing::instrument(name = "audio.object_len", skip_all)]
    pub async fn object_len(&self, key: &str) -> std::io::Result<u64> {
        self.objects.len(key).await
    }

    /// `count` bytes of a stored object from `start`, as a stream.
    #[tracing::instrument(name = "audio.object_stream", skip_all)]
    pub async fn object_stream(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        self.objects.stream(key, start, count).await
    }

    /// A stored object as a local file (for a transcription engine): the
    /// object itself on disk; from a bucket, a temporary copy deleted when
    /// the returned value drops.
    #[tracing::instrument(name = "audio.local_file", skip_all)]
    pub async fn local_file(&self, key: &str) -> std::io::Result<LocalFile> {
        if let Some(path) = self.objects.local_path(key) {
            fs::metadata(&path).await?;
            return Ok(LocalFile { path, _copy: None });
        }
        let len = self.objects.len(key).await?;
        let copy = TempFile(self.temp_path());
        let mut file = fs::File::create(&copy.0).await?;
        let mut stream = self.objects.stream(key, 0, len).await?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).await?;
        }
        file.flush().await?;
        Ok(LocalFile {
            path: copy.0.clone(),
            _copy: Some(copy),
        })
    }

    /// The file holding a chunked upload's bytes so far.
    pub fn partial_path(&self, clinician_id: &str, local_storage_key: Uuid) -> PathBuf {
        let clinician = hex(&Sha256::digest(clinician_id.as_bytes())[..8]);
        self.root
            .join("partial")
            .join(format!("{clinician}-{local_storage_key}.part"))
    }

    /// Appends `body` to a partial file at `offset`, at most up to `total`
    /// bytes; returns the new length, fsynced, even when the client broke off
    /// (see [`partial`]).
    #[tracing::instrument(name = "audio.append", skip_all)]
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
        partial::append(path, offset, total, body).await
    }

    /// Turns a complete partial file into received audio (hashing and sniffing it).
    #[tracing::instrument(name = "audio.receive_partial", skip_all)]
    pub async fn receive_partial(&self, path: &Path) -> Result<Received, AudioError> {
        receiving::receive_file(path, self.temp_path()).await
    }

    /// Stored objects last modified after `after` (all when None) and at or
    /// before `until` (microseconds since the epoch), with the recording id each
    /// belongs to: candidates for deletion when no row has that id.
    pub async fn objects_modified(&self, after: Option<i64>, until: i64) -> Vec<(Uuid, String)> {
        self.objects.modified(after, until).await
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

/// A stored object as a local file (see [`AudioStore::local_file`]).
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    _copy: Option<TempFile>,
}

impl LocalFile {
    /// Where the bytes are.
    pub fn path(&self) -> &Path {
        &self.path
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
