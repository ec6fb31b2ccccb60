//! The server lock: `clinical.db.lock`, exclusively locked (flock) by a running
//! server, so that `restore` can tell the database is in use and a second
//! server cannot start on the same file. The OS releases the lock when the
//! process dies, even on `kill -9`, so a stale lock file is harmless.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (a running server) holds it.
    #[error(
        "the database is in use by a running clinscribe server (lock {0} is held); stop it first"
    )]
    InUse(PathBuf),
    /// The lock file could not be opened.
    #[error("cannot open lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The lock file that guards `db_path`.
pub fn lock_path(db_path: &Path) -> PathBuf {
    crate::files::sibling(db_path, ".lock")
}

impl ServerLock {
    /// Takes the lock, or fails at once if another process holds it.
    pub fn acquire(db_path: &Path) -> Result<Self, LockError> {
        let path = lock_path(db_path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::InUse(path)),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
