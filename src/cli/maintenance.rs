//! `clinscribe check` and `clinscribe vacuum`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::{human_bytes, sqlite_path};
use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::db::maintenance::{self, VacuumMode};
use crate::db::migrations::MigrationState;
use crate::db::sqlite::lock::{LockError, ServerLock};

#[derive(Debug, Args)]
pub(super) struct VacuumArgs {
    /// Rebuild the whole file with VACUUM (only when no server is running:
    /// it holds the write lock throughout).
    #[arg(long, conflicts_with = "into")]
    full: bool,

    /// Write a compacted copy to PATH (VACUUM INTO) instead; safe while serving.
    #[arg(long, value_name = "PATH")]
    into: Option<PathBuf>,
}

/// Opens an existing database (never creates one) without migrating it.
pub(super) async fn open_existing(database: &DatabaseSettings) -> anyhow::Result<Database> {
    if let Some(path) = sqlite_path(database)
        && !path.is_file()
    {
        bail!("database {} does not exist", path.display());
    }
    Database::open_without_migrating(database)
        .await
        .context("opening the database")
}

pub(super) async fn check(database: DatabaseSettings) -> anyhow::Result<ExitCode> {
    let db = open_existing(&database).await?;
    let report = maintenance::check(&db).await?;
    db.close().await;
    out!("database:      {}", database.url);
    out!("integrity:     {}", report.integrity.join("; "));
    out!(
        "foreign keys:  {} violation(s)",
        report.foreign_key_violations.len()
    );
    for v in &report.foreign_key_violations {
        out!("  {v}");
    }
    for m in &report.migrations {
        let state = match m.state {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending (applied by the next serve or migrate)",
            MigrationState::ChecksumMismatch => "CHANGED after being applied",
            MigrationState::Unknown => "UNKNOWN to this binary",
        };
        out!("migration:     {} {} — {state}", m.version, m.description);
    }
    for (table, rows) in &report.tables {
        out!("table:         {table}: {rows} row(s)");
    }
    let problems = report.problems();
    if problems.is_empty() {
        out!("result:        ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("clinscribe: check: {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

pub(super) async fn vacuum(
    database: DatabaseSettings,
    args: VacuumArgs,
) -> anyhow::Result<ExitCode> {
    let Some(db_path) = sqlite_path(&database) else {
        bail!(
            "vacuum works on SQLite files; PostgreSQL's autovacuum reclaims space by itself (run `VACUUM (ANALYZE)` with psql if needed)"
        );
    };
    let mode = match (args.full, args.into) {
        (_, Some(path)) => {
            if path.exists() {
                bail!(
                    "{} already exists; VACUUM INTO needs a new file",
                    path.display()
                );
            }
            VacuumMode::Into(path)
        }
        (true, None) => VacuumMode::Full,
        (false, None) => VacuumMode::Incremental,
    };
    // A full VACUUM would stall a running server's writers for its whole duration.
    let _lock = match mode {
        VacuumMode::Full => Some(ServerLock::acquire(&db_path).map_err(|e| match e {
            LockError::InUse(_) => anyhow::anyhow!(
                "{e}; or run `clinscribe vacuum` (incremental) or `vacuum --into PATH`, which are safe while serving"
            ),
            other => other.into(),
        })?),
        _ => None,
    };
    let db = match open_existing(&database).await? {
        Database::Sqlite(db) => db,
        Database::Postgres(db) => {
            db.close().await;
            anyhow::bail!("vacuum works on SQLite only; PostgreSQL's autovacuum does this work");
        }
    };
    let report = maintenance::vacuum(&db, &mode).await;
    db.close().await;
    let report = report?;
    match &mode {
        VacuumMode::Into(path) => {
            out!(
                "compacted copy: {} ({})",
                path.display(),
                human_bytes(report.after_bytes)
            );
            out!(
                "saved:          {} versus the live database",
                human_bytes(report.reclaimed())
            );
        }
        _ => {
            out!("before:    {}", human_bytes(report.before_bytes));
            out!("after:     {}", human_bytes(report.after_bytes));
            out!(
                "reclaimed: {} ({} bytes)",
                human_bytes(report.reclaimed()),
                report.reclaimed()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
