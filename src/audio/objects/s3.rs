//! Stored audio in an S3-compatible object store (`PWA_AUDIO_STORE`), so that
//! several instances share it. Uploads are multipart: never whole in memory.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::fs::File;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::{ObjectBackend, in_window, recording_id_of};
use crate::audio::AudioError;
use crate::files::fs_error;

/// Objects under a prefix of a bucket.
#[derive(Debug, Clone)]
pub struct S3Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3Objects {
    /// The store at `url` (e.g. `s3://bucket/prefix`; the credentials, region
    /// and endpoint come from the usual `AWS_*` variables).
    pub fn open(url: &str) -> Result<Self, object_store::Error> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()?;
        // `s3://bucket/some/prefix` → `some/prefix`.
        let prefix = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map_or("", |(_, path)| path.trim_matches('/'))
            .to_owned();
        Ok(Self {
            store: Arc::new(store),
            prefix,
        })
    }

    /// The object store path of a key.
    fn path(&self, key: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(key)
        } else {
            object_store::path::Path::from(format!("{}/{key}", self.prefix))
        }
    }
}

#[async_trait]
impl ObjectBackend for S3Objects {
    async fn keep(&self, file: &Path, key: &str) -> Result<(), AudioError> {
        let mut source = File::open(file)
            .await
            .map_err(fs_error("cannot open", file))?;
        let mut upload = WriteMultipart::new(self.store.put_multipart(&self.path(key)).await?);
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

    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    async fn delete(&self, key: &str) -> std::io::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    async fn len(&self, key: &str) -> std::io::Result<u64> {
        self.store
            .head(&self.path(key))
            .await
            .map(|meta| meta.size)
            .map_err(std::io::Error::other)
    }

    async fn stream(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..start + count)),
            ..Default::default()
        };
        let result = self
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(std::io::Error::other)?;
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    async fn modified(&self, after: Option<i64>, until: i64) -> Vec<(Uuid, String)> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.path("objects")))
            .filter_map(|m| async move { m.ok() })
            .collect()
            .await;
        let mut out = Vec::new();
        for meta in metas {
            let location = meta.location.to_string();
            let key = location
                .strip_prefix(self.prefix.as_str())
                .unwrap_or(&location)
                .trim_start_matches('/')
                .to_owned();
            if let Some(id) = key.rsplit('/').next().and_then(recording_id_of)
                && in_window(meta.last_modified.timestamp_micros(), after, until)
            {
                out.push((id, key));
            }
        }
        out
    }
}
