//! Stored audio objects, on the local disk ([`disk::DiskObjects`]) or in an
//! S3-compatible object store ([`s3::S3Objects`]), behind one interface. A
//! key is the object's path relative to the audio root
//! (`objects/<shard>/<recording id>.<ext>`), the same on both.

pub mod disk;
pub mod s3;

use std::path::Path;

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::stream::BoxStream;
use uuid::Uuid;

use super::AudioError;

/// Where stored audio lives.
#[async_trait]
pub trait ObjectBackend: Send + Sync + std::fmt::Debug {
    /// Makes the finished local file `file` the object `key`, durably (the
    /// file is moved or copied; the caller deletes what is left of it).
    async fn keep(&self, file: &Path, key: &str) -> Result<(), AudioError>;

    /// The object as a local file, when it is one (on disk).
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf>;

    /// Deletes an object; an object already gone is fine.
    async fn delete(&self, key: &str) -> std::io::Result<()>;

    /// The object's length.
    async fn len(&self, key: &str) -> std::io::Result<u64>;

    /// `count` bytes of the object from `start`, as a stream.
    async fn stream(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>>;

    /// Objects last modified after `after` (all when None) and at or before
    /// `until` (microseconds since the epoch), with the recording id each
    /// belongs to.
    async fn modified(&self, after: Option<i64>, until: i64) -> Vec<(Uuid, String)>;
}

/// The recording id an object's file name carries (`<id>.<ext>`).
fn recording_id_of(file_name: &str) -> Option<Uuid> {
    file_name
        .split('.')
        .next()
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Whether a modification time falls in the window `(after, until]`.
fn in_window(micros: i64, after: Option<i64>, until: i64) -> bool {
    micros <= until && after.is_none_or(|a| micros > a)
}
