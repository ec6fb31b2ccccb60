//! The embedded SQLite backend: [`SqliteDatabase`] (one writer, a pool of
//! readers, a background checkpointer) and the operations only SQLite has:
//! backups, restore, adoption of the original's files, the server lock and
//! the Online Backup API's FFI.
//!
//! SQLite allows one writer at a time. Rather than let many pooled connections
//! race for the write lock (and fail with "database is locked" once
//! `busy_timeout` runs out), every write goes through a pool of exactly one
//! connection, so writers queue in-process; reads use their own pool of
//! read-only connections, which WAL lets run alongside the writer.

pub mod adopt;
pub mod backup;
mod ffi;
pub mod lock;
pub mod restore;

pub use ffi::BackupProgress;

/// Splits `len` rows into chunks of the given sizes (largest first, the last
/// being 1): `(index of the size, size)` per chunk, in order. Multi-row
/// statements then come in these few sizes only, so few are prepared and
/// cached, whatever the number of rows.
pub fn fixed_size_chunks(mut len: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    while len > 0 {
        let (i, size) = sizes
            .iter()
            .copied()
            .enumerate()
            .find(|(_, size)| *size <= len)
            .unwrap_or((sizes.len() - 1, 1));
        chunks.push((i, size));
        len -= size;
    }
    chunks
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite, Transaction};

use super::{DbError, migrations};
use crate::config::{self, DatabaseSettings, DatabaseUrl};

/// How long SQLite waits for a lock held by another process before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The directory of the audit spool (`crate::audit::spool`) of the database
/// at `db_path`: it goes where the database goes.
pub fn audit_spool_dir(db_path: &Path) -> PathBuf {
    crate::files::sibling(db_path, "-audit-spool")
}

/// The SQLite file `settings` names, or an error if it names another backend.
fn sqlite_path(settings: &DatabaseSettings) -> Result<&PathBuf, DbError> {
    match &settings.url {
        DatabaseUrl::Sqlite { path } => Ok(path),
        DatabaseUrl::Postgres { .. } => Err(DbError::SqliteOnly("opening an SQLite file")),
    }
}

/// An open SQLite database: one writer connection, a pool of readers, and a
/// connection that checkpoints the WAL in the background.
#[derive(Debug, Clone)]
pub struct SqliteDatabase {
    writer: SqlitePool,
    readers: SqlitePool,
    checkpointer: SqlitePool,
    path: PathBuf,
    synchronous: config::SqliteSynchronous,
    /// What opening it adopted, until the caller takes it to audit.
    adopted: std::sync::Arc<std::sync::Mutex<Option<adopt::AdoptionReport>>>,
}

/// How often committed pages are copied from the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

impl SqliteDatabase {
    /// Opens (creating if needed) the database, adopts it if the original service
    /// wrote it (see [`adopt`]), and applies pending migrations.
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, DbError> {
        let path = sqlite_path(settings)?;
        create_parent_dir(path)?;
        let adopted = adopt::adopt_if_original(path).await.map_err(Box::new)?;
        let db = Self::open_without_migrating(settings).await?;
        if let Ok(mut slot) = db.adopted.lock() {
            *slot = adopted;
        }
        migrations::run_sqlite(&db).await?;
        Ok(db)
    }

    /// Opens (creating if needed) the database without touching its schema.
    pub async fn open_without_migrating(settings: &DatabaseSettings) -> Result<Self, DbError> {
        let path = sqlite_path(settings)?;
        create_parent_dir(path)?;
        let options = connect_options(path, settings.synchronous);
        let open_err = |source| DbError::Open {
            path: path.clone(),
            source,
        };
        // The writer is opened eagerly: it creates the file and switches it to WAL
        // before any reader connects.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            // A COMMIT that fails for lack of space makes SQLite roll the
            // transaction back itself; sqlx's ROLLBACK then fails and its count
            // of open transactions stays at one, so every later BEGIN on this
            // connection would fail until a restart. Such a connection is
            // closed on release and the pool opens a fresh one.
            .after_release(|conn, _| {
                Box::pin(async move {
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    // A rollback may still be queued: let it run, then look again.
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .acquire_timeout(Duration::from_secs(60))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                options
                    .clone()
                    // Takes effect when the file is created: lets `vacuum` free pages
                    // in short steps while the server runs, instead of a full VACUUM.
                    .auto_vacuum(SqliteAutoVacuum::Incremental)
                    // A group commit or a move of the audit spool dirties index
                    // pages all over the file; with SQLite's 2 MiB default they
                    // spill into the WAL before the commit and are read again.
                    .pragma("cache_size", WRITER_CACHE_SIZE),
            )
            .await
            .map_err(open_err)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(reader_pool_size())
            // A local file does not go stale like a network connection: skip the
            // round trip to the connection's thread that a ping would cost.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(open_err)?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let closed = checkpointer.clone();
        crate::tasks::spawn_watched(
            "WAL checkpoints",
            run_checkpoints(checkpointer.clone(), writer.clone()),
            move || closed.is_closed(),
        );
        Ok(Self {
            writer,
            readers,
            checkpointer,
            path: path.clone(),
            synchronous: settings.synchronous,
            adopted: Default::default(),
        })
    }

    /// The adoption [`SqliteDatabase::open`] made of the original's file, once
    /// (the caller appends its audit event).
    pub fn take_adoption(&self) -> Option<adopt::AdoptionReport> {
        self.adopted.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The pool of read-only connections.
    pub fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    /// The single writer connection (as a pool of one, so writers queue for it).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE`: it takes SQLite's write
    /// lock up front, so a read-then-write transaction can never fail half-way
    /// with "database is locked" because another process wrote in between.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// Gives the writer connection a page cache of `mib` MiB (SQLite's default is
    /// 2 MiB): bulk loads touch index pages all over the file and would otherwise
    /// re-read them from the OS for every batch. The server keeps the default.
    pub async fn set_writer_cache_mib(&self, mib: u32) -> Result<(), sqlx::Error> {
        let kib = i64::from(mib) * 1024;
        // A number formatted into the PRAGMA: PRAGMA takes no bound parameters.
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{kib}")))
            .execute(&self.writer)
            .await
            .map(drop)
    }

    /// The configured `synchronous` setting.
    pub fn synchronous(&self) -> config::SqliteSynchronous {
        self.synchronous
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection; the last one to close checkpoints the WAL.
    pub async fn close(&self) {
        self.readers.close().await;
        self.checkpointer.close().await;
        self.writer.close().await;
    }

    /// Whether [`SqliteDatabase::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed() || self.readers.is_closed()
    }
}

/// Opens the only connection to the SQLite file at `path` for a bulk load
/// (seeding), in rollback-journal mode with a 256 MiB page cache.
///
/// In WAL mode a large transaction writes every page twice: into the WAL, then
/// into the database file at the checkpoint. With a rollback journal, pages
/// appended to the file are written once and only pages that existed before
/// are journaled, and a crash still rolls the whole load back (the journal is
/// replayed by the next connection to open the file). [`leave_bulk_load`]
/// switches back to WAL. Leaving WAL needs every other connection closed:
/// the caller holds the [`lock::ServerLock`] and has closed its pools; if
/// another process still has the file open, this fails rather than waits.
pub async fn connect_for_bulk_load(path: &Path) -> Result<SqliteConnection, DbError> {
    let mut conn = connect_options(path, config::SqliteSynchronous::Normal)
        // Another process's connection makes the switch below fail at once
        // rather than after a wait: it would not go away by itself.
        .busy_timeout(Duration::ZERO)
        .pragma("cache_size", "-262144")
        // With temporary storage in memory, SQLite's sorter allocates every index
        // entry on its own while building an index; with files, it fills large
        // blocks and spills to a file only past the cache size (see
        // benches/experiments/seed_breakdown.py).
        .pragma("temp_store", "file")
        .connect()
        .await
        .map_err(|source| DbError::Open {
            path: path.to_owned(),
            source,
        })?;
    set_journal_mode(&mut conn, "delete").await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {}",
        BUSY_TIMEOUT.as_millis()
    )))
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

/// Switches a connection from [`connect_for_bulk_load`] back to WAL mode and closes it.
pub async fn leave_bulk_load(mut conn: SqliteConnection) -> Result<(), DbError> {
    set_journal_mode(&mut conn, "wal").await?;
    conn.close().await?;
    Ok(())
}

/// `PRAGMA journal_mode = mode`, checking that SQLite did switch (it answers
/// with the mode it kept when it cannot, e.g. while another connection reads).
async fn set_journal_mode(conn: &mut SqliteConnection, mode: &'static str) -> Result<(), DbError> {
    // A fixed word formatted into the PRAGMA: PRAGMA takes no bound parameters.
    let switched: Result<String, sqlx::Error> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA journal_mode = {mode}")))
            .fetch_one(&mut *conn)
            .await;
    match switched {
        Ok(now) if now == mode => Ok(()),
        Ok(_) => Err(DbError::JournalMode { wanted: mode }),
        // SQLITE_BUSY: another connection holds a lock on the file.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") => {
            Err(DbError::JournalMode { wanted: mode })
        }
        Err(e) => Err(e.into()),
    }
}

/// Checkpoints in the background, on a connection of its own.
///
/// With SQLite's default, the connection that commits past 1,000 WAL pages runs
/// the checkpoint itself, fsync included, so every few hundred commits one
/// request waits for the disk. Here the writer never checkpoints
/// (`wal_autocheckpoint=0`); this task copies committed pages every
/// [`CHECKPOINT_INTERVAL`] with a PASSIVE checkpoint, which waits for no one and
/// blocks no writer. Durability is unchanged: a commit is in the WAL either way.
///
/// A PASSIVE checkpoint never lets the WAL start over while writes keep coming
/// (a commit rewinds it only once every frame has been copied back, which
/// under a steady stream of commits never happens), so under a sustained
/// burst the WAL would grow without bound. Past [`WAL_LIMIT_BYTES`], this task
/// holds the writer connection for one more PASSIVE checkpoint: with no commit
/// adding frames meanwhile, it copies the little the last round left, and the
/// next commit starts the WAL over (truncated to `journal_size_limit`). Writers
/// wait only for that one short checkpoint, queued in-process as for any write.
async fn run_checkpoints(pool: SqlitePool, writer: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut page_size: Option<i64> = None;
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let passive: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        let wal_frames = match passive {
            Ok((_, frames, _)) => frames,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "background WAL checkpoint failed; retrying");
                continue;
            }
        };
        if page_size.is_none() {
            page_size = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&pool)
                .await
                .ok();
        }
        let wal_bytes = wal_frames.saturating_mul(page_size.unwrap_or(4096));
        if wal_bytes > WAL_LIMIT_BYTES {
            rewind_wal(&writer).await;
        }
    }
}

/// The WAL size past which a checkpoint makes it start over (the same figure
/// as `journal_size_limit`, so a rewound WAL is truncated to it).
pub const WAL_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// A PASSIVE checkpoint on the writer connection: while it runs, no commit
/// (of this process) adds frames, so it copies every frame back and the next
/// commit rewinds the WAL.
async fn rewind_wal(writer: &SqlitePool) {
    let started = std::time::Instant::now();
    let outcome: Result<(i64, i64, i64), sqlx::Error> = async {
        let mut conn = writer.acquire().await?;
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await
    }
    .await;
    match outcome {
        Ok((_, frames, copied)) => tracing::debug!(
            frames,
            copied,
            held_writer_ms = started.elapsed().as_millis() as u64,
            "WAL past its limit: checkpointed with writes held"
        ),
        Err(sqlx::Error::PoolClosed) => {}
        Err(e) => tracing::warn!(error = %e, "checkpoint with writes held failed; retrying"),
    }
}

/// The writer connection's page cache, in `PRAGMA cache_size` form (32 MiB).
const WRITER_CACHE_SIZE: &str = "-32768";

/// The PRAGMAs every connection gets (the original's settings, `synchronous` configurable).
fn connect_options(path: &Path, synchronous: config::SqliteSynchronous) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match synchronous {
            config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
            config::SqliteSynchronous::Full => SqliteSynchronous::Full,
        })
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // Statement journals of multi-row statements stay in memory instead of
        // temporary files (a third of the write cost of a bulk insert otherwise).
        .pragma("temp_store", "memory")
        // Checkpoints run in the background (see `run_checkpoints`), never in a commit.
        .pragma("wal_autocheckpoint", "0")
        // When the WAL is rewound after a checkpoint, give back space beyond
        // WAL_LIMIT_BYTES.
        .pragma("journal_size_limit", "67108864")
}

/// Three readers per core: each read hands work to its connection's thread, so a
/// few more connections than cores keep the cores busy; beyond that they only
/// add memory (the load benchmark chose the figure; see docs/BENCHMARKS.md).
fn reader_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores * 3).unwrap_or(8).clamp(2, 16)
}

fn create_parent_dir(path: &Path) -> Result<(), DbError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

impl SqliteDatabase {
    /// Checks that the database answers a query that touches the file.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master")
            .fetch_one(&self.readers)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_split_into_the_fixed_sizes_largest_first() {
        let sizes = [64, 16, 4, 1];
        let sized = |len| -> Vec<usize> {
            super::fixed_size_chunks(len, &sizes)
                .into_iter()
                .map(|(i, size)| {
                    assert_eq!(sizes[i], size);
                    size
                })
                .collect()
        };
        assert_eq!(sized(0), Vec::<usize>::new());
        assert_eq!(sized(1), [1]);
        assert_eq!(sized(85), [64, 16, 4, 1]);
        assert_eq!(sized(135), [64, 64, 4, 1, 1, 1]);
    }
}
