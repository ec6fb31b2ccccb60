//! `clinscribe restore FILE`: put a backup back in place of the database.
//!
//! The file is verified before anything changes; the running server (if any)
//! is detected through its lock and the restore refused; at every instant the
//! database path holds either the old or the new database (hard link to keep
//! the old one, atomic rename to install the new one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::super::{DbError, migrations};
use super::SqliteDatabase;
use super::adopt::{self, DatabaseKind};
use super::backup::{BackupOptions, copy_to};
use super::lock::{LockError, ServerLock};
use crate::config::{DatabaseSettings, DatabaseUrl};
use crate::files::{FsError, fs_error, fsync_dir, sibling};
use crate::timestamp::Timestamp;

/// Why a restore was refused or failed. Unless said otherwise, nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file does not exist or is not a regular file.
    #[error("{0} is not a file")]
    NotAFile(PathBuf),
    /// The file is not a usable SQLite database.
    #[error("{path} is not a valid database: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The database was migrated by a newer clinscribe.
    #[error(
        "{path} was written by a newer clinscribe (migration {found} > {known}); use that version"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its newest migration.
        found: i64,
        /// This binary's newest migration.
        known: i64,
    },
    /// A server is using the database.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// Copying or opening failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// Where the replaced database was kept (None: there was none).
    pub previous: Option<PathBuf>,
    /// Recordings in the restored database.
    pub recordings: i64,
}

/// Checks that `file` is a sound clinscribe (or original service) database this
/// binary can run.
pub async fn verify(file: &Path) -> Result<DatabaseKind, RestoreError> {
    if !file.is_file() {
        return Err(RestoreError::NotAFile(file.to_path_buf()));
    }
    let invalid = |reason: String| RestoreError::Invalid {
        path: file.to_path_buf(),
        reason,
    };
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let integrity: Result<Vec<String>, _> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await;
    let newest: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await;
    let _ = conn.close().await;
    let integrity = integrity.map_err(|e| invalid(e.to_string()))?;
    if integrity != ["ok"] {
        return Err(invalid(format!(
            "integrity_check: {}",
            integrity.join("; ")
        )));
    }
    let kind = adopt::identify(file)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    match &kind {
        DatabaseKind::Clinscribe => {
            let known = migrations::SQLITE
                .iter()
                .map(|m| m.version)
                .max()
                .unwrap_or(0);
            let found = newest.ok().flatten().unwrap_or(0);
            if found > known {
                return Err(RestoreError::TooNew {
                    path: file.to_path_buf(),
                    found,
                    known,
                });
            }
        }
        DatabaseKind::Original => {}
        DatabaseKind::Empty => return Err(invalid("it holds no tables".into())),
        DatabaseKind::Foreign(tables) => {
            return Err(invalid(format!(
                "not a clinscribe database (tables: {})",
                tables.join(", ")
            )));
        }
    }
    Ok(kind)
}

/// Replaces the database of `settings` with `file`; the old one is kept as
/// `<db>.before-restore-<UTC time>`; pending migrations are applied.
pub async fn restore(
    settings: &DatabaseSettings,
    file: &Path,
) -> Result<RestoreReport, RestoreError> {
    let DatabaseUrl::Sqlite { path: db_path } = &settings.url else {
        return Err(DbError::SqliteOnly("restore").into());
    };
    verify(file).await?;
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fs_error("cannot create", dir))?;
    }
    let lock = ServerLock::acquire(db_path)?;

    // A consistent, self-contained copy of the file next to the database.
    let staging = sibling(db_path, ".restoring");
    let _ = std::fs::remove_file(&staging);
    let options = BackupOptions {
        pause: Duration::ZERO,
        ..BackupOptions::new(".")
    };
    let (from, to) = (file.to_path_buf(), staging.clone());
    tokio::task::spawn_blocking(move || copy_to(&from, &to, &options, |_| {}))
        .await
        .map_err(|e| fs_error("cannot copy", file)(std::io::Error::other(e.to_string())))?
        .map_err(|e| {
            let _ = std::fs::remove_file(&staging);
            RestoreError::Invalid {
                path: file.to_path_buf(),
                reason: e.to_string(),
            }
        })?;

    let previous = if db_path.exists() {
        // Fold the current WAL into the file, so the kept copy is complete and
        // no stale WAL can be applied to the restored file.
        let mut conn = SqliteConnectOptions::new()
            .filename(db_path)
            .connect()
            .await
            .map_err(DbError::Sqlx)?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .map_err(DbError::Sqlx)?;
        conn.close().await.map_err(DbError::Sqlx)?;
        let kept = sibling(
            db_path,
            &format!(".before-restore-{}", Timestamp::now().file_stamp()),
        );
        std::fs::hard_link(db_path, &kept)
            .map_err(fs_error("cannot keep the current database as", &kept))?;
        // Reads a server spooled belong to the database they were made on:
        // its spool goes with it (and is moved into it when it is opened).
        let spool = super::audit_spool_dir(db_path);
        if spool.exists() {
            let kept_spool = super::audit_spool_dir(&kept);
            std::fs::rename(&spool, &kept_spool)
                .map_err(fs_error("cannot keep the audit spool as", &kept_spool))?;
        }
        for companion in ["-wal", "-shm"] {
            let p = sibling(db_path, companion);
            if p.exists() {
                std::fs::remove_file(&p).map_err(fs_error("cannot remove", &p))?;
            }
        }
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&staging, db_path)
        .map_err(fs_error("cannot install the restored database at", db_path))?;
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsync_dir(dir).map_err(fs_error("cannot fsync", dir))?;
    }

    // Adopts an original-service backup and applies pending migrations.
    let db = SqliteDatabase::open(settings).await?;
    let recordings: i64 = sqlx::query_scalar("SELECT count(*) FROM recordings")
        .fetch_one(db.readers())
        .await
        .map_err(DbError::Sqlx)?;
    db.close().await;
    drop(lock);
    Ok(RestoreReport {
        previous,
        recordings,
    })
}
