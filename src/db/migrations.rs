//! Versioned schema migrations, embedded in the binary from `migrations/sqlite/`
//! and `migrations/postgres/` (one folder per backend, the same versions in each).
//!
//! Never edit a migration once it has been applied anywhere: sqlx stores each
//! one's checksum and refuses to start when an applied file has changed.

use sqlx::migrate::{Migrate, Migrator};

use super::{Database, DbError, SqliteDatabase};
use crate::digest::hex;

/// The SQLite migrations.
pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
/// The PostgreSQL migrations.
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// Applies every pending migration (no-op when up to date).
pub async fn run(db: &Database) -> Result<(), DbError> {
    match db {
        Database::Sqlite(db) => run_sqlite(db).await,
        Database::Postgres(db) => Ok(POSTGRES.run(db.pool()).await?),
    }
}

/// Applies every pending SQLite migration.
pub(crate) async fn run_sqlite(db: &SqliteDatabase) -> Result<(), DbError> {
    SQLITE.run(db.writer()).await?;
    Ok(())
}

/// One migration known to this binary or recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Version number (the file's prefix).
    pub version: i64,
    /// Description (the rest of the file name).
    pub description: String,
    /// Hex SHA-384 of the migration as embedded in this binary (empty if unknown to it).
    pub checksum: String,
    /// Whether it has been applied, and with what result.
    pub state: MigrationState,
}

/// Where a migration stands in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// Applied, and the file is unchanged.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but the embedded file differs from what was applied.
    ChecksumMismatch,
    /// Applied by a newer binary: this one does not know it.
    Unknown,
}

/// Lists every migration, applied and pending, in version order.
pub async fn status(db: &Database) -> Result<Vec<MigrationStatus>, DbError> {
    let (migrator, applied) = match db {
        Database::Sqlite(db) => {
            let mut conn = db.readers().acquire().await?;
            let table_exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
            )
            .fetch_one(&mut *conn)
            .await?;
            let applied = if table_exists {
                conn.list_applied_migrations("_sqlx_migrations").await?
            } else {
                Vec::new()
            };
            (&SQLITE, applied)
        }
        Database::Postgres(db) => {
            let mut conn = db.pool().acquire().await?;
            let table_exists: bool =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(&mut *conn)
                    .await?;
            let applied = if table_exists {
                conn.list_applied_migrations("_sqlx_migrations").await?
            } else {
                Vec::new()
            };
            (&POSTGRES, applied)
        }
    };
    let mut out: Vec<MigrationStatus> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| {
            let state = match applied.iter().find(|a| a.version == m.version) {
                Some(a) if a.checksum == m.checksum => MigrationState::Applied,
                Some(_) => MigrationState::ChecksumMismatch,
                None => MigrationState::Pending,
            };
            MigrationStatus {
                version: m.version,
                description: m.description.to_string(),
                checksum: hex(&m.checksum),
                state,
            }
        })
        .collect();
    for a in &applied {
        if !migrator.version_exists(a.version) {
            out.push(MigrationStatus {
                version: a.version,
                description: String::new(),
                checksum: hex(&a.checksum),
                state: MigrationState::Unknown,
            });
        }
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}
