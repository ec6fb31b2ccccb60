//! Adopting a database written by the original Python service.
//!
//! The original's SQLAlchemy `create_all` made a `recordings` table with ids as
//! 32 hex digits, naive UTC timestamps (`2026-11-28 00:09:08.725903`) and JSON
//! as text, and no migration table of ours. A clinic upgrading points
//! `PWA_DATABASE_URL` at that file; on `serve` or `migrate` it is converted:
//!
//! 1. an exact copy is kept next to it: `clinical.db.before-clinscribe-<UTC time>`
//!    (with its `-wal`, if any);
//! 2. the original is checkpointed in place (logically unchanged);
//! 3. a new database is built beside it (`clinical.db.adopting`) by our
//!    migrations, every row converted into it, and the counts compared;
//! 4. only then does the new file replace the original, by an atomic rename.
//!
//! A failure at any step leaves the original in place. A second start finds our
//! migration table and does nothing.

use std::path::{Path, PathBuf};

use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use uuid::Uuid;

use super::super::{DbError, migrations};
use super::SqliteDatabase;
use crate::config::DatabaseSettings;
use crate::files::{FsError, fs_error, fsync_dir, sibling};
use crate::timestamp::Timestamp;

/// What a database file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// No file, or a file with no tables.
    Empty,
    /// Managed by clinscribe (has `_sqlx_migrations`).
    Clinscribe,
    /// Written by the original service (`recordings`, maybe `alembic_version`).
    Original,
    /// Something else: these are its tables.
    Foreign(Vec<String>),
}

/// Why adoption failed (the original database is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// A row of the original could not be converted.
    #[error("cannot adopt recording {id}: {reason}")]
    BadRow {
        /// The original's id of the row.
        id: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The new database does not hold as many rows as the original.
    #[error("adoption copied {copied} of {original} recordings; the original is unchanged")]
    CountMismatch {
        /// Rows in the original.
        original: i64,
        /// Rows copied.
        copied: i64,
    },
    /// A database error.
    #[error("adoption failed: {0}")]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for AdoptError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(DbError::Sqlx(e))
    }
}

/// What an adoption did.
#[derive(Debug, Clone)]
pub struct AdoptionReport {
    /// The exact copy of the original file.
    pub original_copy: PathBuf,
    /// Recordings converted.
    pub recordings: i64,
}

/// Tables the original service created.
const ORIGINAL_TABLES: [&str; 2] = ["recordings", "alembic_version"];

/// Opens a database file for inspection without changing it (no journal-mode switch).
async fn open_plain(path: &Path, read_only: bool) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .connect()
        .await
}

/// Tells what kind of database `path` holds, without changing it.
pub async fn identify(path: &Path) -> Result<DatabaseKind, sqlx::Error> {
    if !path.exists() {
        return Ok(DatabaseKind::Empty);
    }
    let mut conn = open_plain(path, true).await?;
    let tables: Result<Vec<String>, _> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await;
    let _ = conn.close().await;
    let tables = tables?;
    Ok(if tables.is_empty() {
        DatabaseKind::Empty
    } else if tables.iter().any(|t| t == "_sqlx_migrations") {
        DatabaseKind::Clinscribe
    } else if tables.iter().any(|t| t == "recordings")
        && tables.iter().all(|t| ORIGINAL_TABLES.contains(&t.as_str()))
    {
        DatabaseKind::Original
    } else {
        DatabaseKind::Foreign(tables)
    })
}

/// Removes a database file and its `-wal`/`-shm` companions, if present.
fn remove_database_files(path: &Path) -> Result<(), AdoptError> {
    for p in [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fs_error("cannot remove", &p)(e).into()),
        }
    }
    Ok(())
}

/// Copies `from` to `to` and fsyncs the copy.
fn copy_synced(from: &Path, to: &Path) -> Result<(), AdoptError> {
    std::fs::copy(from, to).map_err(fs_error("cannot copy to", to))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(fs_error("cannot fsync", to))?;
    Ok(())
}

/// Converts the database at `path` if the original service wrote it; otherwise does nothing.
pub async fn adopt_if_original(path: &Path) -> Result<Option<AdoptionReport>, AdoptError> {
    if identify(path).await? != DatabaseKind::Original {
        return Ok(None);
    }
    let stamp = Timestamp::now().file_stamp();

    // 1. The exact copy, WAL included, before anything touches the file.
    let original_copy = sibling(path, &format!(".before-clinscribe-{stamp}"));
    copy_synced(path, &original_copy)?;
    let wal = sibling(path, "-wal");
    if wal.exists() {
        copy_synced(&wal, &sibling(&original_copy, "-wal"))?;
    }

    // 2. Fold the original's WAL into its main file, so replacing the main file
    //    later cannot leave committed data behind in a WAL.
    let mut conn = open_plain(path, false).await?;
    let checkpoint = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await;
    conn.close().await?;
    checkpoint?;

    // 3. Build the converted database beside it.
    let staging = sibling(path, ".adopting");
    remove_database_files(&staging)?;
    let outcome = convert_into(path, &staging).await;
    let copied = match outcome {
        Ok(n) => n,
        Err(e) => {
            let _ = remove_database_files(&staging);
            return Err(e);
        }
    };

    // 4. Swap: the staging file (checkpointed, self-contained) replaces the original.
    for companion in ["-wal", "-shm"] {
        let p = sibling(path, companion);
        if p.exists() {
            std::fs::remove_file(&p).map_err(fs_error("cannot remove", &p))?;
        }
    }
    std::fs::rename(&staging, path).map_err(fs_error("cannot replace", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsync_dir(dir).map_err(fs_error("cannot fsync", dir))?;
    }
    tracing::warn!(
        original_copy = %original_copy.display(),
        recordings = copied,
        "adopted a database written by the original service"
    );
    Ok(Some(AdoptionReport {
        original_copy,
        recordings: copied,
    }))
}

/// Our `recordings` columns that adoption fills, in [`INSERT_ADOPTED`] order.
const INSERT_ADOPTED: &str = "INSERT INTO recordings (id, patient_id, clinician_id, \
    audio_file_path, audio_file_size, duration_seconds, status, error_message, retry_count, \
    created_at, updated_at, uploaded_at, processed_at, transcript, verification_results, \
    local_storage_key, draft_transcript, final_transcript, upload_attempts) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// Creates our schema at `staging` and copies every recording of `original` into it.
async fn convert_into(original: &Path, staging: &Path) -> Result<i64, AdoptError> {
    let target = SqliteDatabase::open_without_migrating(&DatabaseSettings::sqlite(staging)).await?;
    migrations::run_sqlite(&target).await?;

    let mut source = open_plain(original, true).await?;
    let original_count: i64 = sqlx::query_scalar("SELECT count(*) FROM recordings")
        .fetch_one(&mut source)
        .await?;
    // `*`: the original's first version has 15 columns, its later ones more;
    // a column it lacks reads as NULL below.
    let rows: Vec<SqliteRow> = sqlx::query("SELECT * FROM recordings ORDER BY created_at")
        .fetch_all(&mut source)
        .await?;
    source.close().await?;

    let mut tx = target.begin_write().await?;
    for row in &rows {
        insert_adopted(&mut tx, row).await?;
    }
    tx.commit().await?;
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM recordings")
        .fetch_one(target.writer())
        .await?;
    target.close().await;
    if copied != original_count {
        return Err(AdoptError::CountMismatch {
            original: original_count,
            copied,
        });
    }
    Ok(copied)
}

/// Converts one row of the original's table into ours; every field kept. Ids
/// become hyphenated and timestamps RFC 3339; our table's CHECKs refuse
/// anything else that does not fit (an unknown status, invalid JSON).
async fn insert_adopted(conn: &mut SqliteConnection, row: &SqliteRow) -> Result<(), AdoptError> {
    let raw_id: String = row.try_get("id").unwrap_or_default();
    let bad = |reason: String| AdoptError::BadRow {
        id: raw_id.clone(),
        reason,
    };
    let text = |col: &str| match row.try_get::<Option<String>, _>(col) {
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        other => other.map_err(|e| bad(format!("{col}: {e}"))),
    };
    let int = |col: &str| match row.try_get::<Option<i64>, _>(col) {
        Err(sqlx::Error::ColumnNotFound(_)) => Ok(None),
        other => other.map_err(|e| bad(format!("{col}: {e}"))),
    };
    let uuid = |col: &str| -> Result<Option<String>, AdoptError> {
        text(col)?
            .map(|s| {
                Uuid::parse_str(&s)
                    .map(|u| u.hyphenated().to_string())
                    .map_err(|e| bad(format!("{col}: {e}")))
            })
            .transpose()
    };
    let timestamp = |col: &str| -> Result<Option<String>, AdoptError> {
        text(col)?
            .map(|s| {
                Timestamp::parse(&s)
                    .map(|t| t.to_string())
                    .map_err(|e| bad(format!("{col}: {e}")))
            })
            .transpose()
    };
    sqlx::query(INSERT_ADOPTED)
        .bind(uuid("id")?)
        .bind(text("patient_id")?)
        .bind(text("clinician_id")?)
        .bind(text("audio_file_path")?)
        .bind(int("audio_file_size")?)
        .bind(int("duration_seconds")?)
        .bind(text("status")?)
        .bind(text("error_message")?)
        .bind(int("retry_count")?.unwrap_or(0))
        .bind(timestamp("created_at")?)
        .bind(timestamp("updated_at")?)
        .bind(timestamp("uploaded_at")?)
        .bind(timestamp("processed_at")?)
        .bind(text("transcript")?)
        .bind(text("verification_results")?)
        .bind(uuid("local_storage_key")?)
        .bind(text("draft_transcript")?)
        .bind(text("final_transcript")?)
        .bind(int("upload_attempts")?.unwrap_or(0))
        .execute(conn)
        .await
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}
