//! The only `unsafe` code in clinscribe: SQLite's Online Backup API, which sqlx
//! does not wrap, called through `libsqlite3-sys` (the very library sqlx links).
//!
//! Each function upholds the C API's rules: handles are used only while open,
//! strings passed in are NUL-terminated and outlive the call, every handle that
//! is opened is closed exactly once (in `Drop`).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_int};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::time::Duration;

use libsqlite3_sys as ffi;

/// An error reported by SQLite.
#[derive(Debug, thiserror::Error)]
#[error("{message} (SQLite code {code})")]
pub struct SqliteError {
    /// SQLite's (extended) result code.
    pub code: c_int,
    /// SQLite's message.
    pub message: String,
}

/// A raw SQLite connection, used on one thread for the duration of a backup.
pub struct RawConnection {
    handle: NonNull<ffi::sqlite3>,
}

impl RawConnection {
    /// Opens `path` read-only (the backup source) or read-write, creating it (the destination).
    pub fn open(path: &Path, writable: bool) -> Result<Self, SqliteError> {
        let c_path = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| SqliteError {
            code: ffi::SQLITE_MISUSE,
            message: "path contains a NUL byte".into(),
        })?;
        let flags = if writable {
            ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE
        } else {
            ffi::SQLITE_OPEN_READONLY
        } | ffi::SQLITE_OPEN_FULLMUTEX;
        let mut handle: *mut ffi::sqlite3 = ptr::null_mut();
        // SAFETY: c_path is NUL-terminated and lives across the call; `handle` is a
        // valid out-pointer. SQLite may allocate a handle even on failure, so it is
        // closed in that case too.
        let rc = unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut handle, flags, ptr::null()) };
        let Some(handle) = NonNull::new(handle) else {
            return Err(SqliteError {
                code: rc,
                message: "out of memory opening the database".into(),
            });
        };
        let conn = Self { handle };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        // SAFETY: the handle is open.
        unsafe { ffi::sqlite3_busy_timeout(conn.handle.as_ptr(), 5_000) };
        Ok(conn)
    }

    /// Runs one or more SQL statements, discarding any rows.
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqliteError> {
        let c_sql = CString::new(sql).map_err(|_| SqliteError {
            code: ffi::SQLITE_MISUSE,
            message: "SQL contains a NUL byte".into(),
        })?;
        // SAFETY: the handle is open; c_sql is NUL-terminated; no callback, and no
        // error-message out-pointer (we read sqlite3_errmsg instead).
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.handle.as_ptr(),
                c_sql.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    fn error(&self, code: c_int) -> SqliteError {
        // SAFETY: the handle is open; sqlite3_errmsg returns a NUL-terminated string
        // owned by SQLite, valid until the next call on this handle: copied at once.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.handle.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        SqliteError { code, message }
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: the handle is open and never used again. No statement or backup
        // object outlives it: `backup` finishes its object before returning.
        unsafe { ffi::sqlite3_close(self.handle.as_ptr()) };
    }
}

/// How far a backup has come, in pages.
#[derive(Debug, Clone, Copy)]
pub struct BackupProgress {
    /// Pages in the source database.
    pub total: u64,
    /// Pages still to copy.
    pub remaining: u64,
}

/// Copies the `main` database of `source` into `dest` with the Online Backup API,
/// `pages_per_step` pages at a time, calling `after_step` and pausing `pause`
/// between steps so that other connections get the disk and the lock.
pub fn backup(
    source: &RawConnection,
    dest: &RawConnection,
    pages_per_step: c_int,
    pause: Duration,
    mut after_step: impl FnMut(BackupProgress),
) -> Result<(), SqliteError> {
    let main = c"main";
    // SAFETY: both handles are open and distinct; the names are NUL-terminated statics.
    let raw = unsafe {
        ffi::sqlite3_backup_init(
            dest.handle.as_ptr(),
            main.as_ptr(),
            source.handle.as_ptr(),
            main.as_ptr(),
        )
    };
    let Some(backup) = NonNull::new(raw) else {
        return Err(dest.error(ffi::SQLITE_ERROR));
    };
    let step_result = loop {
        // SAFETY: `backup` is live until backup_finish below.
        let rc = unsafe { ffi::sqlite3_backup_step(backup.as_ptr(), pages_per_step) };
        // SAFETY: as above.
        let (remaining, total) = unsafe {
            (
                ffi::sqlite3_backup_remaining(backup.as_ptr()),
                ffi::sqlite3_backup_pagecount(backup.as_ptr()),
            )
        };
        after_step(BackupProgress {
            total: u64::try_from(total).unwrap_or(0),
            remaining: u64::try_from(remaining).unwrap_or(0),
        });
        match rc & 0xff {
            ffi::SQLITE_DONE => break ffi::SQLITE_OK,
            ffi::SQLITE_OK => std::thread::sleep(pause),
            // Someone holds a conflicting lock for a moment: wait and retry the step.
            ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => std::thread::sleep(Duration::from_millis(10)),
            _ => break rc,
        }
    };
    // SAFETY: `backup` is live and finished exactly once.
    let finish = unsafe { ffi::sqlite3_backup_finish(backup.as_ptr()) };
    match (step_result, finish) {
        (ffi::SQLITE_OK, ffi::SQLITE_OK) => Ok(()),
        (ffi::SQLITE_OK, rc) | (rc, _) => Err(dest.error(rc)),
    }
}
