//! Chunked uploads in progress: their bytes so far, in one file each under
//! `partial/`, appended to at the offset the client and server agree on.

use std::path::Path;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::fs::OpenOptions;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::AudioError;
use crate::files::fs_error;

/// Appends `body` to a partial file at `offset` (bytes past `offset`, from
/// an earlier attempt whose end was never acknowledged, are dropped first),
/// at most up to `total` bytes. Returns the new length, fsynced, even when
/// the client broke off: what arrived is kept and the upload resumes there.
pub async fn append<S, E>(
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
