//! Hot backups through SQLite's Online Backup API.
//!
//! Not a file copy: copying a live WAL database file can produce a torn,
//! unusable copy. The backup reads one consistent snapshot (it holds a read
//! transaction, which in WAL mode never blocks the server's writers), copies
//! it in bounded steps, writes it under a temporary name, fsyncs it, renames
//! it into place without overwriting anything, and verifies the result.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::ffi::{self, BackupProgress, RawConnection};
use crate::files::{FsError, fs_error, fsync_dir};
use crate::timestamp::Timestamp;

/// Where and how to back up.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Directory for the backups (created if missing).
    pub dest_dir: PathBuf,
    /// Keep only this many newest backups in `dest_dir` (None: keep all).
    pub keep: Option<usize>,
    /// Pages copied per step of the Online Backup API.
    pub pages_per_step: i32,
    /// Pause between steps, leaving the disk to the server.
    pub pause: Duration,
}

impl BackupOptions {
    /// Defaults: 1,024 pages (4 MiB) per step, 1 ms pause.
    pub fn new(dest_dir: impl Into<PathBuf>) -> Self {
        Self {
            dest_dir: dest_dir.into(),
            keep: None,
            pages_per_step: 1024,
            pause: Duration::from_millis(1),
        }
    }
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The verified backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Recordings it holds.
    pub recordings: i64,
    /// Wall time, copy and verification.
    pub elapsed: Duration,
    /// Older backups deleted by `keep`.
    pub deleted: Vec<PathBuf>,
}

/// Why a backup failed. Nothing is left under the final name when it does.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database file does not exist.
    #[error("database {0} does not exist")]
    NoDatabase(PathBuf),
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// SQLite refused the copy.
    #[error("backup failed: {0}")]
    Sqlite(#[from] ffi::SqliteError),
    /// The copy did not pass verification.
    #[error("backup {path} failed verification: {reason}")]
    Verification {
        /// The (deleted) copy.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The backup task panicked or was cancelled.
    #[error("backup task failed: {0}")]
    Task(String),
}

/// Backs up the SQLite database at `db_path`; `progress` is called after each step.
pub async fn backup(
    db_path: &Path,
    options: &BackupOptions,
    progress: impl FnMut(BackupProgress) + Send + 'static,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if !db_path.is_file() {
        return Err(BackupError::NoDatabase(db_path.to_path_buf()));
    }
    std::fs::create_dir_all(&options.dest_dir)
        .map_err(fs_error("cannot create", &options.dest_dir))?;
    // Report absolute paths: an operator (or a script) should not have to guess the cwd.
    let dest_dir = std::fs::canonicalize(&options.dest_dir)
        .map_err(fs_error("cannot resolve", &options.dest_dir))?;
    let options = &BackupOptions {
        dest_dir,
        ..options.clone()
    };
    // The original's naming, clinical_YYYYMMDD_HHMMSS, in UTC.
    let base = format!(
        "clinical_{}",
        Timestamp::now()
            .file_stamp()
            .replace('T', "_")
            .trim_end_matches('Z')
    );
    let temp = options.dest_dir.join(format!(
        ".{base}.{}.{:08x}.partial",
        std::process::id(),
        fastrand::u32(..)
    ));

    let copy = {
        let (source, temp, options) = (db_path.to_path_buf(), temp.clone(), options.clone());
        tokio::task::spawn_blocking(move || copy_to(&source, &temp, &options, progress))
    };
    let copied = copy.await.map_err(|e| BackupError::Task(e.to_string()));
    if let Err(e) = copied.and_then(|r| r) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }

    let final_path = match link_without_overwriting(&temp, &options.dest_dir, &base) {
        Ok(path) => path,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(&temp);
    fsync_dir(&options.dest_dir).map_err(fs_error("cannot fsync", &options.dest_dir))?;

    let recordings = match verify(&final_path).await {
        Ok(n) => n,
        Err(reason) => {
            let _ = std::fs::remove_file(&final_path);
            return Err(BackupError::Verification {
                path: final_path,
                reason,
            });
        }
    };
    let size_bytes = std::fs::metadata(&final_path)
        .map_err(fs_error("cannot stat", &final_path))?
        .len();
    let deleted = match options.keep {
        Some(keep) => prune(&options.dest_dir, keep.max(1))?,
        None => Vec::new(),
    };
    Ok(BackupReport {
        path: final_path,
        size_bytes,
        recordings,
        elapsed: started.elapsed(),
        deleted,
    })
}

/// The blocking part: a consistent snapshot of `source` into a new file `temp`, fsynced.
pub(crate) fn copy_to(
    source: &Path,
    temp: &Path,
    options: &BackupOptions,
    progress: impl FnMut(BackupProgress),
) -> Result<(), BackupError> {
    let src = RawConnection::open(source, false)?;
    // One read transaction across all steps: every step sees the same snapshot, so
    // writes by the server neither restart the backup nor leak into it half-way.
    src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")?;
    {
        let dst = RawConnection::open(temp, true)?;
        ffi::backup(&src, &dst, options.pages_per_step, options.pause, progress)?;
        // A backup is one self-contained file, whatever the source's journal mode.
        dst.execute_batch("PRAGMA journal_mode = DELETE;")?;
    }
    src.execute_batch("COMMIT;")?;
    drop(src);
    std::fs::File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(fs_error("cannot fsync", temp))?;
    Ok(())
}

/// Gives `temp` its final name, `base.db` or `base_N.db` if that exists: a hard link
/// fails instead of replacing an existing file, so two backups in the same second
/// never overwrite each other.
fn link_without_overwriting(temp: &Path, dir: &Path, base: &str) -> Result<PathBuf, BackupError> {
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{base}.db")
        } else {
            format!("{base}_{n}.db")
        };
        let candidate = dir.join(name);
        match std::fs::hard_link(temp, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fs_error("cannot create", &candidate)(e).into()),
        }
    }
    Err(
        fs_error("cannot name backup in", dir)(std::io::Error::other(
            "too many backups in one second",
        ))
        .into(),
    )
}

/// Opens the copy read-only: `integrity_check` must be `ok`; returns its recording count.
async fn verify(path: &Path) -> Result<i64, String> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| format!("cannot open: {e}"))?;
    let result: Result<i64, String> = async {
        let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if check != ["ok"] {
            return Err(format!("integrity_check: {}", check.join("; ")));
        }
        sqlx::query_scalar("SELECT count(*) FROM recordings")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let _ = conn.close().await;
    result
}

/// A backup file name made by [`backup`]: `clinical_YYYYMMDD_HHMMSS[_N].db`.
fn backup_sort_key(name: &str) -> Option<(String, u32)> {
    let stem = name.strip_prefix("clinical_")?.strip_suffix(".db")?;
    let (stamp, n) = match stem.len() {
        15 => (stem, 1),
        _ => {
            let (stamp, n) = stem.split_at_checked(15)?;
            (stamp, n.strip_prefix('_')?.parse().ok()?)
        }
    };
    let ok = stamp.len() == 15
        && stamp.as_bytes()[8] == b'_'
        && stamp
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit());
    ok.then(|| (stamp.to_owned(), n))
}

/// The backup files [`backup`] made in `dir`, oldest first (by their names' time).
fn backups_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut backups: Vec<((String, u32), PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some((backup_sort_key(&name)?, entry.path()))
        })
        .collect();
    backups.sort();
    Ok(backups.into_iter().map(|(_, path)| path).collect())
}

/// The newest backup file [`backup`] made in `dir`.
pub fn newest(dir: &Path) -> Option<PathBuf> {
    backups_in(dir).ok()?.pop()
}

/// Deletes the oldest backups in `dir` beyond the newest `keep`.
fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let backups = backups_in(dir).map_err(fs_error("cannot list", dir))?;
    let excess = backups.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for path in backups.into_iter().take(excess) {
        std::fs::remove_file(&path).map_err(fs_error("cannot delete old backup", &path))?;
        deleted.push(path);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_sort_by_time_then_suffix() {
        assert_eq!(
            backup_sort_key("clinical_20261128_101010.db"),
            Some(("20261128_101010".into(), 1))
        );
        assert_eq!(
            backup_sort_key("clinical_20261128_101010_12.db"),
            Some(("20261128_101010".into(), 12))
        );
        for other in [
            "clinical.db",
            "clinical_2026.db",
            "clinical_20261128-101010.db",
            "x_20261128_101010.db",
            ".clinical_20261128_101010.db.1.partial",
        ] {
            assert_eq!(backup_sort_key(other), None, "{other}");
        }
    }
}
