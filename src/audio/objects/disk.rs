//! Stored audio under the local audio directory: written under a temporary
//! name, fsynced, renamed into place and its directory fsynced.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::{ObjectBackend, in_window, recording_id_of};
use crate::audio::AudioError;
use crate::files::{FsError, fs_error, fsync_dir};

/// Bytes read from disk per chunk of a download.
const READ_CHUNK: usize = 64 * 1024;

/// Objects under `<root>/objects/`.
#[derive(Debug, Clone)]
pub struct DiskObjects {
    root: PathBuf,
}

impl DiskObjects {
    /// Objects kept under `root` (the audio directory).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

#[async_trait]
impl ObjectBackend for DiskObjects {
    async fn keep(&self, file: &Path, key: &str) -> Result<(), AudioError> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(fs_error("cannot create", &dir))?;
        fs::rename(file, &path)
            .await
            .map_err(fs_error("cannot move audio to", &path))?;
        sync_dir(&dir).await?;
        Ok(())
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.root.join(key))
    }

    async fn delete(&self, key: &str) -> std::io::Result<()> {
        match fs::remove_file(self.root.join(key)).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn len(&self, key: &str) -> std::io::Result<u64> {
        Ok(fs::metadata(self.root.join(key)).await?.len())
    }

    async fn stream(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let mut file = File::open(self.root.join(key)).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
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

    async fn modified(&self, after: Option<i64>, until: i64) -> Vec<(Uuid, String)> {
        let mut out = Vec::new();
        let Ok(mut shards) = fs::read_dir(self.root.join("objects")).await else {
            return out;
        };
        while let Ok(Some(shard)) = shards.next_entry().await {
            let Ok(mut files) = fs::read_dir(shard.path()).await else {
                continue;
            };
            while let Ok(Some(file)) = files.next_entry().await {
                let name = file.file_name().to_string_lossy().into_owned();
                if let Some(id) = recording_id_of(&name)
                    && modified_micros(&file.path())
                        .await
                        .is_some_and(|m| in_window(m, after, until))
                {
                    let shard_name = shard.file_name().to_string_lossy().into_owned();
                    out.push((id, format!("objects/{shard_name}/{name}")));
                }
            }
        }
        out
    }
}

/// When a file was last written, in microseconds since the epoch.
async fn modified_micros(path: &Path) -> Option<i64> {
    let modified = fs::metadata(path).await.and_then(|m| m.modified()).ok()?;
    let since_epoch = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_micros()).ok()
}

async fn sync_dir(dir: &Path) -> Result<(), FsError> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || fsync_dir(&owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(fs_error("cannot sync directory", dir))
}
