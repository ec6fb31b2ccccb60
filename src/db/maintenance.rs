//! `check` and `vacuum`: the health and upkeep of the database file.

use std::path::{Path, PathBuf};

use sqlx::Row;

use super::migrations::{self, MigrationState, MigrationStatus};
use super::postgres::PgDatabase;
use super::{Database, DbError, SqliteDatabase};
use crate::files::sibling;

/// The result of `clinscribe check`.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// `PRAGMA integrity_check` output (`["ok"]` when sound).
    pub integrity: Vec<String>,
    /// `PRAGMA foreign_key_check` violations, as `table rowid -> parent`.
    pub foreign_key_violations: Vec<String>,
    /// Every migration's state.
    pub migrations: Vec<MigrationStatus>,
    /// Row count of every table.
    pub tables: Vec<(String, i64)>,
}

impl CheckReport {
    /// Whether anything is wrong: corruption, broken references, or migrations
    /// edited after being applied or unknown to this binary. Pending migrations
    /// are normal after an upgrade (the next `serve` applies them).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.integrity != ["ok"] {
            problems.push(format!("integrity_check: {}", self.integrity.join("; ")));
        }
        if !self.foreign_key_violations.is_empty() {
            problems.push(format!(
                "{} foreign key violation(s)",
                self.foreign_key_violations.len()
            ));
        }
        for m in &self.migrations {
            match m.state {
                MigrationState::ChecksumMismatch => {
                    problems.push(format!(
                        "migration {} was edited after it was applied",
                        m.version
                    ));
                }
                MigrationState::Unknown => {
                    problems.push(format!(
                        "migration {} is unknown to this binary (newer database?)",
                        m.version
                    ));
                }
                MigrationState::Applied | MigrationState::Pending => {}
            }
        }
        problems
    }
}

/// Checks the database without changing it.
pub async fn check(db: &Database) -> Result<CheckReport, DbError> {
    let migrations = migrations::status(db).await?;
    match db {
        Database::Sqlite(sqlite) => check_sqlite(sqlite, migrations).await,
        Database::Postgres(pg) => check_postgres(pg, migrations).await,
    }
}

/// PostgreSQL guards its own pages (checksums, WAL) and enforces foreign keys
/// as it writes; what can still be wrong is an index left invalid by a failed
/// `CREATE INDEX CONCURRENTLY`, or a constraint added `NOT VALID`.
async fn check_postgres(
    db: &PgDatabase,
    migrations: Vec<MigrationStatus>,
) -> Result<CheckReport, DbError> {
    let pool = db.pool();
    let mut integrity: Vec<String> = sqlx::query_scalar(
        "SELECT 'invalid index ' || c.relname FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready) \
         UNION ALL \
         SELECT 'constraint not validated ' || con.conname FROM pg_constraint con \
         JOIN pg_namespace n ON n.oid = con.connamespace \
         WHERE n.nspname = current_schema() AND NOT con.convalidated \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    if integrity.is_empty() {
        integrity.push("ok".into());
    }
    let mut tables = Vec::new();
    for name in postgres_tables(db).await? {
        // Table names come from the catalog; quoted as identifiers.
        let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await?;
        tables.push((name, count));
    }
    Ok(CheckReport {
        integrity,
        foreign_key_violations: Vec::new(),
        migrations,
        tables,
    })
}

/// The tables of the current schema, by name.
pub async fn postgres_tables(db: &PgDatabase) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
}

async fn check_sqlite(
    db: &SqliteDatabase,
    migrations: Vec<MigrationStatus>,
) -> Result<CheckReport, DbError> {
    let readers = db.readers();
    // On the read-write connection: SQLite does not even parse CHECK
    // constraints on a read-only one, so integrity_check there skips them.
    // (It only reads either way.)
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(db.writer())
        .await?;
    let foreign_key_violations = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(readers)
        .await?
        .iter()
        .map(|row| {
            let table: String = row.try_get(0).unwrap_or_default();
            let rowid: Option<i64> = row.try_get(1).unwrap_or_default();
            let parent: String = row.try_get(2).unwrap_or_default();
            format!("{table} {} -> {parent}", rowid.unwrap_or_default())
        })
        .collect();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(readers)
    .await?;
    let mut tables = Vec::new();
    for name in names {
        // Table names come from sqlite_master; quoted as identifiers.
        let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(readers)
            .await?;
        tables.push((name, count));
    }
    Ok(CheckReport {
        integrity,
        foreign_key_violations,
        migrations,
        tables,
    })
}

/// How to compact.
#[derive(Debug, Clone)]
pub enum VacuumMode {
    /// Free pages in short transactions (`incremental_vacuum`): safe while the
    /// server runs, never holds the write lock for long.
    Incremental,
    /// Rebuild the whole file (`VACUUM`): holds the write lock throughout, so
    /// only when no server is running.
    Full,
    /// Write a compacted copy (`VACUUM INTO`), leaving the database as it is.
    Into(PathBuf),
}

/// What `vacuum` did.
#[derive(Debug, Clone)]
pub struct VacuumReport {
    /// Database + WAL bytes before.
    pub before_bytes: u64,
    /// Database + WAL bytes after (or the copy's size for `Into`).
    pub after_bytes: u64,
}

impl VacuumReport {
    /// Bytes given back to the file system (or saved by the copy).
    pub fn reclaimed(&self) -> u64 {
        self.before_bytes.saturating_sub(self.after_bytes)
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn database_bytes(path: &Path) -> u64 {
    file_size(path) + file_size(&sibling(path, "-wal"))
}

/// Updates planner statistics, checkpoints the WAL and compacts the database.
pub async fn vacuum(db: &SqliteDatabase, mode: &VacuumMode) -> Result<VacuumReport, DbError> {
    let before_bytes = database_bytes(db.path());
    let writer = db.writer();
    sqlx::query("PRAGMA optimize").execute(writer).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(writer)
        .await?;
    let after_bytes = match mode {
        VacuumMode::Incremental => {
            // Free pages a few MiB at a time, each in its own short transaction.
            loop {
                let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                    .fetch_one(writer)
                    .await?;
                if free == 0 {
                    break;
                }
                sqlx::query("PRAGMA incremental_vacuum(1024)")
                    .execute(writer)
                    .await?;
                let left: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                    .fetch_one(writer)
                    .await?;
                if left >= free {
                    break; // auto_vacuum is off for this file: only a full VACUUM helps
                }
            }
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(writer)
                .await?;
            database_bytes(db.path())
        }
        VacuumMode::Full => {
            sqlx::query("VACUUM").execute(writer).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(writer)
                .await?;
            database_bytes(db.path())
        }
        VacuumMode::Into(path) => {
            sqlx::query("VACUUM INTO ?1")
                .bind(path.to_string_lossy().into_owned())
                .execute(writer)
                .await?;
            file_size(path)
        }
    };
    Ok(VacuumReport {
        before_bytes,
        after_bytes,
    })
}
