//! All SQL about the `recordings` table lives here.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::FromRow;
use uuid::Uuid;

use super::insert_queue::InsertQueue;
use super::model::{NewRecording, Recording, RecordingStatus};
use crate::db::Database;
use crate::timestamp::Timestamp;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such recording.
    #[error("recording not found")]
    NotFound,
    /// The database is locked by someone else for longer than the busy timeout,
    /// or no connection became free in time.
    #[error("database busy: {0}")]
    Busy(sqlx::Error),
    /// The database has been closed (shutting down).
    #[error("database closed")]
    Closed,
    /// A stored row does not decode (hand-edited or corrupt data).
    #[error("corrupt row in recordings: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error(transparent)]
    Database(sqlx::Error),
    /// The shared transaction of a group commit failed (see `insert_queue`).
    #[error("group commit failed: {0}")]
    Batch(Arc<sqlx::Error>),
}

/// SQLITE_BUSY, SQLITE_LOCKED and their extended codes, or no free connection.
fn is_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("5" | "6" | "261" | "517"))
        }
        _ => false,
    }
}

impl StoreError {
    /// The error each caller of a failed group commit receives.
    pub(crate) fn batch(err: &Arc<sqlx::Error>) -> Self {
        match err.as_ref() {
            sqlx::Error::PoolClosed => Self::Closed,
            e if is_busy(e) => Self::Busy(sqlx::Error::PoolTimedOut),
            _ => Self::Batch(err.clone()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::PoolClosed => Self::Closed,
            e if is_busy(e) => Self::Busy(err),
            _ => Self::Database(err),
        }
    }
}

/// A position in a clinician's list, newest first: the last item of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last item returned.
    pub created_at: Timestamp,
    /// `id` of the last item returned (breaks ties between equal timestamps).
    pub id: Uuid,
}

/// A cursor string that was not produced by [`Cursor::encode`].
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

impl Cursor {
    /// An opaque URL-safe token.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(24);
        raw.extend_from_slice(&self.created_at.unix_micros().to_be_bytes());
        raw.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a token made by [`Cursor::encode`].
    pub fn decode(token: &str) -> Result<Self, InvalidCursor> {
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidCursor)?;
        let (micros, id) = raw.split_at_checked(8).ok_or(InvalidCursor)?;
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| InvalidCursor)?);
        Ok(Self {
            created_at: Timestamp::from_unix_micros(micros).ok_or(InvalidCursor)?,
            id: Uuid::from_slice(id).map_err(|_| InvalidCursor)?,
        })
    }
}

/// Which page of a clinician's recordings to list.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery {
    /// Only recordings in this status.
    pub status: Option<RecordingStatus>,
    /// At most this many items.
    pub limit: u32,
    /// Start after this position (None: the newest).
    pub after: Option<Cursor>,
}

/// One page of a list, and where the next one starts (None: this was the last).
#[derive(Debug, Clone)]
pub struct Page {
    /// The recordings, newest first, as a JSON array (the API's representation).
    pub json: String,
    /// Cursor for the next page.
    pub next: Option<Cursor>,
}

impl Page {
    /// The items as typed recordings.
    pub fn recordings(&self) -> Result<Vec<Recording>, StoreError> {
        serde_json::from_str(&self.json).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// The 15 columns, in [`RecordingRow`] order, prepended to a static SQL tail
/// (static strings only: sqlx refuses SQL built at run time, and rightly so).
macro_rules! recording_sql {
    ($head:literal, $tail:literal) => {
        concat!(
            $head,
            " id, patient_id, clinician_id, audio_file_path, audio_file_size, \
             duration_seconds, status, error_message, retry_count, created_at, updated_at, \
             uploaded_at, processed_at, transcript, verification_results ",
            $tail
        )
    };
}

/// A recording as the API's JSON object, built by SQLite from the columns of
/// `recordings` (or of a CTE with the same columns). Keys in the order of the
/// serde model; `tests/store.rs` checks that both give the same JSON.
macro_rules! recording_json {
    () => {
        "json_object('id', id, 'patient_id', patient_id, 'clinician_id', clinician_id, \
         'audio_file_path', audio_file_path, 'audio_file_size', audio_file_size, \
         'duration_seconds', duration_seconds, 'status', status, 'error_message', error_message, \
         'retry_count', retry_count, 'created_at', created_at, 'updated_at', updated_at, \
         'uploaded_at', uploaded_at, 'processed_at', processed_at, 'transcript', transcript, \
         'verification_results', json(verification_results))"
    };
}

/// A page of a clinician's list as one JSON array (`[` `]` added by the caller),
/// its row count, and the position of its last row (`created_at id`, which
/// sorts as the pair does: both parts are fixed-width). Parameters, in order:
/// clinician, the filter's own, `limit`.
///
/// The subquery reads the page through the list index, in order, and the
/// aggregate concatenates in the order it receives rows: SQLite never flattens a
/// subquery with a LIMIT into an aggregate. (`group_concat(... ORDER BY ...)`
/// would say so explicitly, at the cost of re-sorting the page: a third slower.)
/// The ordering tests in tests/store.rs and tests/api.rs guard this.
///
/// `LIMIT ? + 0`, not `LIMIT ?`: SQLite plans around the value of a bare LIMIT
/// parameter and so re-prepares the statement every time it is re-bound (a
/// third of the query's cost); an expression keeps one plan for all values.
macro_rules! list_json_sql {
    ($filter:literal) => {
        concat!(
            "SELECT coalesce(group_concat(doc, ','), ''), count(*), \
             min(created_at || ' ' || id) FROM (SELECT created_at, id, ",
            recording_json!(),
            " AS doc FROM recordings WHERE clinician_id = ?",
            $filter,
            " ORDER BY created_at DESC, id DESC LIMIT ? + 0)"
        )
    };
}

/// Whether a clinician's list goes on after a position (same filters as the page).
macro_rules! list_more_sql {
    ($filter:literal) => {
        concat!(
            "SELECT EXISTS (SELECT 1 FROM recordings WHERE clinician_id = ?",
            $filter,
            " AND (created_at, id) < (?, ?))"
        )
    };
}

/// The store's SQL, public so that tests can check each statement's query plan.
pub mod sql {
    /// One recording by id.
    pub const GET: &str = recording_sql!("SELECT", "FROM recordings WHERE id = ?1");
    /// One recording as the API's JSON object.
    pub const GET_JSON: &str = concat!(
        "SELECT ",
        recording_json!(),
        " FROM recordings WHERE id = ?1"
    );
    // Four static list shapes rather than `(? IS NULL OR status = ?)`, which
    // would stop SQLite from using the (clinician_id, status, created_at, id) index.
    /// A clinician's first page.
    pub const LIST: &str = list_json_sql!("");
    /// A clinician's first page of one status.
    pub const LIST_BY_STATUS: &str = list_json_sql!(" AND status = ?");
    /// A clinician's page after a cursor.
    pub const LIST_AFTER: &str = list_json_sql!(" AND (created_at, id) < (?, ?)");
    /// A clinician's page of one status after a cursor.
    pub const LIST_BY_STATUS_AFTER: &str =
        list_json_sql!(" AND status = ? AND (created_at, id) < (?, ?)");
    /// Whether a clinician's list goes on after a position.
    pub const LIST_MORE: &str = list_more_sql!("");
    /// Whether a clinician's list of one status goes on after a position.
    pub const LIST_BY_STATUS_MORE: &str = list_more_sql!(" AND status = ?");
    /// Status change, returning the updated row.
    pub const UPDATE_STATUS: &str = recording_sql!(
        "UPDATE recordings SET status = ?1, error_message = ?2, updated_at = ?3, \
         processed_at = CASE WHEN ?4 THEN ?3 ELSE processed_at END \
         WHERE id = ?5 RETURNING",
        ""
    );
}

/// Reads and writes recordings.
#[derive(Debug, Clone)]
pub struct RecordingStore {
    db: Database,
    inserts: InsertQueue,
}

impl RecordingStore {
    /// A store over `db`; starts its group-commit task on the current runtime.
    pub fn new(db: Database) -> Self {
        Self {
            inserts: InsertQueue::start(db.clone()),
            db,
        }
    }

    /// Creates a `pending` recording for `clinician_id`.
    #[tracing::instrument(skip_all)]
    pub async fn create(
        &self,
        clinician_id: &str,
        new: NewRecording,
    ) -> Result<Recording, StoreError> {
        let now = Timestamp::now();
        let recording = Recording {
            // Time-ordered ids keep inserts at the right edge of the primary-key index.
            id: Uuid::now_v7(),
            patient_id: new.patient_id,
            clinician_id: clinician_id.to_owned(),
            audio_file_path: new.audio_file_path,
            audio_file_size: None,
            duration_seconds: Some(new.duration_seconds),
            status: RecordingStatus::Pending,
            error_message: None,
            retry_count: 0,
            created_at: now,
            updated_at: now,
            uploaded_at: None,
            processed_at: None,
            transcript: None,
            verification_results: None,
        };
        self.inserts.insert(recording.clone()).await?;
        Ok(recording)
    }

    /// Inserts a complete recording as given, through the group-commit queue.
    #[tracing::instrument(skip_all)]
    pub async fn insert(&self, r: &Recording) -> Result<(), StoreError> {
        self.inserts.insert(r.clone()).await
    }

    /// Inserts many complete recordings in one transaction (seeding, imports):
    /// all or none.
    #[tracing::instrument(skip_all, fields(rows = recordings.len()))]
    pub async fn insert_batch(&self, recordings: &[Recording]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        insert_many(&mut tx, recordings).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts a bulk load: one transaction in which the table's secondary indexes
    /// are dropped, rows are appended, and the indexes rebuilt at the end (sorting
    /// once is far cheaper than maintaining seven B-trees row by row). It holds
    /// the write lock throughout: for loading while no server is running.
    pub async fn bulk_loader(&self) -> Result<BulkLoader, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = 'recordings' AND sql IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (name, _) in &indexes {
            // The name comes from sqlite_master; quoted as an identifier.
            let sql = format!("DROP INDEX \"{}\"", name.replace('"', "\"\""));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
        Ok(BulkLoader {
            tx,
            indexes: indexes.into_iter().map(|(_, sql)| sql).collect(),
        })
    }

    /// The recording with this id.
    #[tracing::instrument(skip_all)]
    pub async fn get(&self, id: Uuid) -> Result<Recording, StoreError> {
        let row: RecordingRow = sqlx::query_as(sql::GET)
            .bind(id.hyphenated().to_string())
            .fetch_optional(self.db.readers())
            .await?
            .ok_or(StoreError::NotFound)?;
        row.try_into()
    }

    /// The recording with this id as the API's JSON object (built by SQLite).
    #[tracing::instrument(skip_all)]
    pub async fn get_json(&self, id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar(sql::GET_JSON)
            .bind(id.hyphenated().to_string())
            .fetch_optional(self.db.readers())
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// One page of a clinician's recordings, newest first, optionally of one
    /// status, as the JSON array the API answers (built by SQLite: no row is
    /// decoded into Rust and encoded again).
    #[tracing::instrument(skip_all, fields(limit = query.limit))]
    pub async fn list_for_clinician(
        &self,
        clinician_id: &str,
        query: ListQuery,
    ) -> Result<Page, StoreError> {
        let sql = match (query.status.is_some(), query.after.is_some()) {
            (false, false) => sql::LIST,
            (true, false) => sql::LIST_BY_STATUS,
            (false, true) => sql::LIST_AFTER,
            (true, true) => sql::LIST_BY_STATUS_AFTER,
        };
        let mut q = sqlx::query_as::<_, (String, i64, Option<String>)>(sql).bind(clinician_id);
        if let Some(status) = query.status {
            q = q.bind(status.as_str());
        }
        if let Some(after) = query.after {
            q = q
                .bind(after.created_at.to_string())
                .bind(after.id.hyphenated().to_string());
        }
        let (items, count, last) = q
            .bind(i64::from(query.limit))
            .fetch_one(self.db.readers())
            .await?;
        let json = format!("[{items}]");
        // A full page may be the last one: one index probe tells.
        let next = match last {
            Some(last) if count == i64::from(query.limit) => {
                let corrupt = |e: &dyn std::fmt::Display| {
                    StoreError::Corrupt(format!("list position {last:?}: {e}"))
                };
                let (created_at, id) = last
                    .split_once(' ')
                    .ok_or_else(|| corrupt(&"no separator"))?;
                let cursor = Cursor {
                    created_at: Timestamp::parse(created_at).map_err(|e| corrupt(&e))?,
                    id: Uuid::parse_str(id).map_err(|e| corrupt(&e))?,
                };
                let more_sql = if query.status.is_some() {
                    sql::LIST_BY_STATUS_MORE
                } else {
                    sql::LIST_MORE
                };
                let mut more = sqlx::query_scalar::<_, bool>(more_sql).bind(clinician_id);
                if let Some(status) = query.status {
                    more = more.bind(status.as_str());
                }
                let more = more
                    .bind(created_at)
                    .bind(id)
                    .fetch_one(self.db.readers())
                    .await?;
                more.then_some(cursor)
            }
            _ => None,
        };
        Ok(Page { json, next })
    }

    /// Sets a recording's status (and error message), maintaining `updated_at`,
    /// and `processed_at` when processing ends (`completed` or `error`).
    #[tracing::instrument(skip_all, fields(status = %status))]
    pub async fn update_status(
        &self,
        id: Uuid,
        status: RecordingStatus,
        error_message: Option<&str>,
    ) -> Result<Recording, StoreError> {
        let now = Timestamp::now().to_string();
        let mut tx = self.db.begin_write().await?;
        let row: Option<RecordingRow> = sqlx::query_as(sql::UPDATE_STATUS)
            .bind(status.as_str())
            .bind(error_message)
            .bind(&now)
            .bind(status.is_final())
            .bind(id.hyphenated().to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        row.try_into()
    }

    /// Recordings per status, in life-cycle order (statuses with none omitted).
    pub async fn count_by_status(&self) -> Result<Vec<(RecordingStatus, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM recordings GROUP BY status")
                .fetch_all(self.db.readers())
                .await?;
        let mut counts = Vec::new();
        for status in RecordingStatus::ALL {
            if let Some((_, n)) = rows.iter().find(|(s, _)| s == status.as_str()) {
                counts.push((status, *n));
            }
        }
        Ok(counts)
    }

    /// Recordings per clinician, by clinician id.
    pub async fn count_by_clinician(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT clinician_id, count(*) FROM recordings GROUP BY clinician_id ORDER BY clinician_id",
        )
        .fetch_all(self.db.readers())
        .await?)
    }

    /// Number of recordings (all clinicians).
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM recordings")
            .fetch_one(self.db.readers())
            .await?)
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// A bulk load in progress (see [`RecordingStore::bulk_loader`]). Dropping it
/// without [`BulkLoader::finish`] rolls everything back, indexes included.
pub struct BulkLoader {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    indexes: Vec<String>,
}

impl BulkLoader {
    /// Appends recordings.
    pub async fn push(&mut self, recordings: &[Recording]) -> Result<(), StoreError> {
        insert_many(&mut self.tx, recordings).await
    }

    /// Rebuilds the indexes and commits.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        for sql in &self.indexes {
            // Index definitions read back from sqlite_master.
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// One INSERT on a transaction (the group-commit queue's fallback, row by row).
pub(crate) async fn insert_one(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    r: &Recording,
) -> Result<(), StoreError> {
    insert_many(tx, std::slice::from_ref(r)).await
}

/// Multi-row INSERTs of `recordings` on a transaction.
///
/// Statements come in a few fixed sizes only, so that batches of every length
/// reuse the same handful of prepared statements instead of preparing (and
/// evicting from sqlx's statement cache) one per length.
pub(crate) async fn insert_many<R: std::borrow::Borrow<Recording>>(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    recordings: &[R],
) -> Result<(), StoreError> {
    // The largest: 15 × 500 = 7,500 parameters, well under SQLite's 32,766.
    const SIZES: [usize; 5] = [500, 64, 16, 4, 1];
    static SQL: [std::sync::OnceLock<String>; 5] = [const { std::sync::OnceLock::new() }; 5];
    let mut rest = recordings;
    while !rest.is_empty() {
        let (i, size) = SIZES
            .iter()
            .copied()
            .enumerate()
            .find(|(_, size)| *size <= rest.len())
            .unwrap_or((SIZES.len() - 1, 1));
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = SQL[i].get_or_init(|| insert_sql(size));
        // The SQL is made only of the static fragments in `insert_sql`.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for r in chunk {
            q = bind_recording(q, r.borrow());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `INSERT ... VALUES (...), (...)` for `rows` recordings (15 parameters each).
fn insert_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::from(
        "INSERT INTO recordings (id, patient_id, clinician_id, audio_file_path, audio_file_size, \
         duration_seconds, status, error_message, retry_count, created_at, updated_at, \
         uploaded_at, processed_at, transcript, verification_results) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(one);
    }
    sql
}

/// Binds one recording's 15 values, in [`insert_sql`] column order.
fn bind_recording<'q>(q: SqliteQuery<'q>, r: &Recording) -> SqliteQuery<'q> {
    q.bind(r.id.hyphenated().to_string())
        .bind(r.patient_id.clone())
        .bind(r.clinician_id.clone())
        .bind(r.audio_file_path.clone())
        .bind(r.audio_file_size)
        .bind(r.duration_seconds)
        .bind(r.status.as_str())
        .bind(r.error_message.clone())
        .bind(r.retry_count)
        .bind(r.created_at.to_string())
        .bind(r.updated_at.to_string())
        .bind(r.uploaded_at.map(|t| t.to_string()))
        .bind(r.processed_at.map(|t| t.to_string()))
        .bind(r.transcript.clone())
        .bind(r.verification_results.as_ref().map(|v| v.to_string()))
}

/// A row as SQLite stores it, before parsing ids, statuses and timestamps.
#[derive(FromRow)]
struct RecordingRow {
    id: String,
    patient_id: String,
    clinician_id: String,
    audio_file_path: Option<String>,
    audio_file_size: Option<i64>,
    duration_seconds: Option<i64>,
    status: String,
    error_message: Option<String>,
    retry_count: i64,
    created_at: String,
    updated_at: String,
    uploaded_at: Option<String>,
    processed_at: Option<String>,
    transcript: Option<String>,
    verification_results: Option<String>,
}

impl TryFrom<RecordingRow> for Recording {
    type Error = StoreError;

    fn try_from(row: RecordingRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("recording {}: {what}: {e}", row.id))
        };
        let ts = |s: &str| Timestamp::parse(s).map_err(|e| corrupt("timestamp", &e));
        let opt_ts = |s: &Option<String>| s.as_deref().map(ts).transpose();
        Ok(Recording {
            id: Uuid::parse_str(&row.id).map_err(|e| corrupt("id", &e))?,
            status: row.status.parse().map_err(|e| corrupt("status", &e))?,
            created_at: ts(&row.created_at)?,
            updated_at: ts(&row.updated_at)?,
            uploaded_at: opt_ts(&row.uploaded_at)?,
            processed_at: opt_ts(&row.processed_at)?,
            verification_results: row
                .verification_results
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("verification_results", &e))?,
            patient_id: row.patient_id,
            clinician_id: row.clinician_id,
            audio_file_path: row.audio_file_path,
            audio_file_size: row.audio_file_size,
            duration_seconds: row.duration_seconds,
            error_message: row.error_message,
            retry_count: row.retry_count,
            transcript: row.transcript,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: Timestamp::parse("2026-11-27T23:53:30.306917Z").unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "abc", "!!!!", &URL_SAFE_NO_PAD.encode([0u8; 10])] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
