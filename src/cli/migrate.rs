//! `clinscribe migrate [--status]`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::sqlite_path;
use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::db::migrations::{self, MigrationState};
use crate::db::sqlite::adopt::{self, DatabaseKind};

#[derive(Debug, Args)]
pub(super) struct MigrateArgs {
    /// List applied and pending migrations with their checksums; change nothing.
    #[arg(long)]
    status: bool,
}

pub(super) async fn run(settings: DatabaseSettings, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    out!("database: {}", settings.url);
    let mut adopted = None;
    // Only SQLite files can have been written by the original service.
    if let Some(path) = sqlite_path(&settings) {
        super::create_data_dir(&path)?;
        if args.status {
            if adopt::identify(&path).await? == DatabaseKind::Original {
                out!(
                    "written by the original Python service: `migrate` or `serve` will adopt it (keeping a copy)"
                );
            }
        } else if let Some(report) = adopt::adopt_if_original(&path).await? {
            out!(
                "adopted the original service's database: {} recording(s); the original is kept as {}",
                report.recordings,
                report.original_copy.display()
            );
            adopted = Some(report);
        }
    }
    let db = Database::open_without_migrating(&settings)
        .await
        .context("opening the database")?;
    let before = migrations::status(&db).await?;
    if !args.status {
        migrations::run(&db).await?;
    }
    if let Some(report) = &adopted {
        super::audit::record_adoption(&db, report).await?;
    }
    let after = migrations::status(&db).await?;
    db.close().await;

    out!(
        "{:<16} {:<9} {:<34} checksum (sha384)",
        "version",
        "state",
        "description"
    );
    let mut problems = 0;
    for m in &after {
        let state = match m.state {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::ChecksumMismatch => {
                problems += 1;
                "CHANGED"
            }
            MigrationState::Unknown => {
                problems += 1;
                "UNKNOWN"
            }
        };
        out!(
            "{:<16} {:<9} {:<34} {}",
            m.version,
            state,
            m.description,
            m.checksum
        );
    }
    if !args.status {
        let newly = after
            .iter()
            .filter(|m| m.state == MigrationState::Applied)
            .filter(|m| {
                before
                    .iter()
                    .any(|b| b.version == m.version && b.state == MigrationState::Pending)
            })
            .count();
        out!("applied {newly} migration(s)");
    }
    if problems > 0 {
        eprintln!(
            "clinscribe: {problems} migration(s) differ from this binary (CHANGED: edited after being applied; UNKNOWN: applied by a newer version)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
