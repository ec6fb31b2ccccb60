//! File-system helpers shared by the database, backups and audio storage:
//! errors that say what was being done where, sibling paths, directory fsync.

use std::path::{Path, PathBuf};

/// A failed file-system operation, saying what was being done and where.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FsError {
    /// What was being done, e.g. "cannot copy to".
    pub action: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    /// Whether the file system is out of space (or of the user's quota).
    pub fn is_storage_full(&self) -> bool {
        is_storage_full(&self.source)
    }
}

/// Whether `e` says the file system is out of space (or of the user's quota).
pub fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// For `map_err`: turns an I/O error into an [`FsError`] about `action` on `path`.
pub fn fs_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> FsError + use<> {
    let path = path.to_path_buf();
    move |source| FsError {
        action,
        path,
        source,
    }
}

/// `path` with `suffix` appended to its file name (`clinical.db` → `clinical.db-wal`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// fsyncs a directory, making a rename or a new file in it durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
