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
use sqlx::{Column, ConnectOptions, Connection, Row, SqliteConnection};
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
    /// Recordings whose `local_storage_key` repeated an older one's: kept,
    /// without the key (ours is unique per clinician).
    pub keys_cleared: Vec<String>,
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
    let converted = match outcome {
        Ok(c) => c,
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
        recordings = converted.recordings,
        "adopted a database written by the original service"
    );
    if !converted.keys_cleared.is_empty() {
        tracing::warn!(
            recordings = ?converted.keys_cleared,
            "these recordings repeated an older recording's local_storage_key; the older one \
             keeps it, these keep every other field and no key"
        );
    }
    Ok(Some(AdoptionReport {
        original_copy,
        recordings: converted.recordings,
        keys_cleared: converted.keys_cleared,
    }))
}

/// How a column of the original's table becomes ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    /// Copied as it is.
    Text,
    /// Copied as it is.
    Integer,
    /// Copied as it is.
    Real,
    /// 32 hex digits (or any UUID form) → hyphenated lower case.
    Uuid,
    /// A naive UTC time (`2026-11-28 00:09:08.725903`) → RFC 3339 with `Z`.
    Timestamp,
}

/// Every column of the original's latest version, in [`INSERT_ADOPTED`]
/// order; ours has the same names. Its first version had the first 15.
const COLUMNS: [(&str, Conversion); 28] = [
    ("id", Conversion::Uuid),
    ("patient_id", Conversion::Text),
    ("clinician_id", Conversion::Text),
    ("audio_file_path", Conversion::Text),
    ("audio_file_size", Conversion::Integer),
    ("duration_seconds", Conversion::Integer),
    ("status", Conversion::Text),
    ("error_message", Conversion::Text),
    ("retry_count", Conversion::Integer),
    ("created_at", Conversion::Timestamp),
    ("updated_at", Conversion::Timestamp),
    ("uploaded_at", Conversion::Timestamp),
    ("processed_at", Conversion::Timestamp),
    ("transcript", Conversion::Text),
    ("verification_results", Conversion::Text),
    ("draft_transcript", Conversion::Text),
    ("final_transcript", Conversion::Text),
    ("local_storage_key", Conversion::Uuid),
    ("upload_attempts", Conversion::Integer),
    ("whisper_model", Conversion::Text),
    ("transcription_started_at", Conversion::Timestamp),
    ("transcription_completed_at", Conversion::Timestamp),
    ("fhir_bundle", Conversion::Text),
    ("llm_model", Conversion::Text),
    ("extraction_started_at", Conversion::Timestamp),
    ("extraction_completed_at", Conversion::Timestamp),
    ("verification_score", Conversion::Real),
    ("verified_at", Conversion::Timestamp),
];

/// `whisper_model` of a row written before the original had the column (its
/// migration's default).
const ORIGINAL_WHISPER_MODEL: &str = "base";

/// Index of `local_storage_key` in [`COLUMNS`].
const LOCAL_STORAGE_KEY: usize = 17;

const INSERT_ADOPTED: &str = "INSERT INTO recordings (id, patient_id, clinician_id, \
    audio_file_path, audio_file_size, duration_seconds, status, error_message, retry_count, \
    created_at, updated_at, uploaded_at, processed_at, transcript, verification_results, \
    draft_transcript, final_transcript, local_storage_key, upload_attempts, whisper_model, \
    transcription_started_at, transcription_completed_at, fhir_bundle, llm_model, \
    extraction_started_at, extraction_completed_at, verification_score, verified_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)";

const SELECT_ADOPTED: &str = "SELECT id, patient_id, clinician_id, \
    audio_file_path, audio_file_size, duration_seconds, status, error_message, retry_count, \
    created_at, updated_at, uploaded_at, processed_at, transcript, verification_results, \
    draft_transcript, final_transcript, local_storage_key, upload_attempts, whisper_model, \
    transcription_started_at, transcription_completed_at, fhir_bundle, llm_model, \
    extraction_started_at, extraction_completed_at, verification_score, verified_at \
    FROM recordings";

/// One converted value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(Option<String>),
    Integer(Option<i64>),
    Real(Option<f64>),
}

/// Creates our schema at `staging` and copies every recording of `original`
/// into it, then reads every column of every row back and compares.
async fn convert_into(original: &Path, staging: &Path) -> Result<Converted, AdoptError> {
    let target = SqliteDatabase::open_without_migrating(&DatabaseSettings::sqlite(staging)).await?;
    migrations::run_sqlite(&target).await?;

    let mut source = open_plain(original, true).await?;
    // `*`: the original's first version has 15 columns, its later ones 28;
    // a column it lacks reads as NULL (or its later default) below.
    let rows: Vec<SqliteRow> = sqlx::query("SELECT * FROM recordings ORDER BY created_at, rowid")
        .fetch_all(&mut source)
        .await?;
    source.close().await?;

    let mut converted = Converted::default();
    let mut expected = std::collections::HashMap::new();
    let mut keys_seen = std::collections::HashSet::new();
    let mut tx = target.begin_write().await?;
    for row in &rows {
        let mut values = convert_row(row)?;
        // Ours is unique per clinician; the original's was not. The oldest
        // row keeps the key (a device retrying finds that one); later ones
        // keep everything else.
        if let (Value::Text(Some(clinician)), Value::Text(Some(key))) =
            (&values[2], &values[LOCAL_STORAGE_KEY])
            && !keys_seen.insert((clinician.clone(), key.clone()))
        {
            if let Value::Text(Some(id)) = &values[0] {
                converted.keys_cleared.push(id.clone());
            }
            values[LOCAL_STORAGE_KEY] = Value::Text(None);
        }
        let mut insert = sqlx::query(INSERT_ADOPTED);
        for value in &values {
            insert = match value {
                Value::Text(v) => insert.bind(v.clone()),
                Value::Integer(v) => insert.bind(*v),
                Value::Real(v) => insert.bind(*v),
            };
        }
        insert
            .execute(&mut *tx)
            .await
            .map_err(|e| AdoptError::BadRow {
                id: row.try_get("id").unwrap_or_default(),
                reason: e.to_string(),
            })?;
        if let Value::Text(Some(id)) = &values[0] {
            expected.insert(id.clone(), values);
        }
    }
    // Dictations the original had queued, or stuck mid-way in its worker, get
    // their transcription job (as the migration that made the table did for
    // rows already there).
    sqlx::query(
        "INSERT INTO jobs (recording_id, kind, state, attempts, run_after, created_at, updated_at) \
         SELECT id, 'transcribe', 'queued', 0, updated_at, updated_at, updated_at \
         FROM recordings WHERE status IN ('queued', 'processing')",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let copied: Vec<SqliteRow> = sqlx::query(SELECT_ADOPTED)
        .fetch_all(target.writer())
        .await?;
    target.close().await;
    if copied.len() != rows.len() {
        return Err(AdoptError::CountMismatch {
            original: rows.len() as i64,
            copied: copied.len() as i64,
        });
    }
    for row in &copied {
        let id: String = row.try_get(0)?;
        let mut read_back = Vec::with_capacity(COLUMNS.len());
        for (i, (_, conversion)) in COLUMNS.iter().enumerate() {
            read_back.push(match conversion {
                Conversion::Integer => Value::Integer(row.try_get(i)?),
                Conversion::Real => Value::Real(row.try_get(i)?),
                _ => Value::Text(row.try_get(i)?),
            });
        }
        if expected.get(&id) != Some(&read_back) {
            return Err(AdoptError::BadRow {
                id,
                reason: "a column differs after copying".into(),
            });
        }
    }
    converted.recordings = copied.len() as i64;
    Ok(converted)
}

/// What [`convert_into`] did.
#[derive(Debug, Default)]
struct Converted {
    recordings: i64,
    keys_cleared: Vec<String>,
}

/// One row of the original's table as our column values; every field kept.
fn convert_row(row: &SqliteRow) -> Result<Vec<Value>, AdoptError> {
    let raw_id: String = row.try_get("id").unwrap_or_default();
    let bad = |col: &str, e: &dyn std::fmt::Display| AdoptError::BadRow {
        id: raw_id.clone(),
        reason: format!("{col}: {e}"),
    };
    let present = |col: &str| row.columns().iter().any(|c| c.name() == col);
    let mut values = Vec::with_capacity(COLUMNS.len());
    for (col, conversion) in COLUMNS {
        let value = if !present(col) {
            match col {
                "retry_count" | "upload_attempts" => Value::Integer(Some(0)),
                "whisper_model" => Value::Text(Some(ORIGINAL_WHISPER_MODEL.into())),
                _ if conversion == Conversion::Integer => Value::Integer(None),
                _ if conversion == Conversion::Real => Value::Real(None),
                _ => Value::Text(None),
            }
        } else {
            match conversion {
                Conversion::Integer => Value::Integer(row.try_get(col).map_err(|e| bad(col, &e))?),
                Conversion::Real => Value::Real(row.try_get(col).map_err(|e| bad(col, &e))?),
                Conversion::Text => Value::Text(row.try_get(col).map_err(|e| bad(col, &e))?),
                Conversion::Uuid => {
                    let text: Option<String> = row.try_get(col).map_err(|e| bad(col, &e))?;
                    Value::Text(
                        text.map(|s| Uuid::parse_str(&s).map(|u| u.hyphenated().to_string()))
                            .transpose()
                            .map_err(|e| bad(col, &e))?,
                    )
                }
                Conversion::Timestamp => {
                    let text: Option<String> = row.try_get(col).map_err(|e| bad(col, &e))?;
                    Value::Text(
                        text.map(|s| Timestamp::parse(&s).map(|t| t.to_string()))
                            .transpose()
                            .map_err(|e| bad(col, &e))?,
                    )
                }
            }
        };
        values.push(value);
    }
    Ok(values)
}
