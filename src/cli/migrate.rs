//! `clinscribe migrate [--status]`.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::db::migrations::{self, MigrationState};

pub(super) async fn run(settings: DatabaseSettings, status_only: bool) -> anyhow::Result<ExitCode> {
    let db = Database::open_without_migrating(&settings)
        .await
        .context("opening the database")?;
    let before = migrations::status(&db).await?;
    if !status_only {
        migrations::run(&db).await?;
    }
    let after = migrations::status(&db).await?;
    db.close().await;

    println!("database: {}", settings.url);
    println!(
        "{:<16} {:<9} {:<34} checksum (sha384)",
        "version", "state", "description"
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
        println!(
            "{:<16} {:<9} {:<34} {}",
            m.version, state, m.description, m.checksum
        );
    }
    if !status_only {
        let newly = after
            .iter()
            .filter(|m| m.state == MigrationState::Applied)
            .filter(|m| {
                before
                    .iter()
                    .any(|b| b.version == m.version && b.state == MigrationState::Pending)
            })
            .count();
        println!("applied {newly} migration(s)");
    }
    if problems > 0 {
        eprintln!(
            "clinscribe: {problems} migration(s) differ from this binary (CHANGED: edited after being applied; UNKNOWN: applied by a newer version)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
