//! `clinscribe migrate-data --from URL --to URL`: move a clinic between backends.

use std::process::ExitCode;
use std::time::Instant;

use crate::audit::AuditAction;
use anyhow::Context;
use clap::Args;

use super::progress_bar;
use crate::config::{ConfigError, DatabaseSettings, DatabaseUrl};
use crate::db::sqlite::lock::ServerLock;
use crate::db::transfer;

#[derive(Debug, Args)]
pub(super) struct MigrateDataArgs {
    /// The database to copy from (e.g. sqlite://./data/clinical.db).
    #[arg(long, value_name = "URL")]
    from: String,

    /// The database to copy into (e.g. postgres://user@host/clinscribe).
    #[arg(long, value_name = "URL")]
    to: String,

    /// Replace the target's rows if it is not empty.
    #[arg(long)]
    force: bool,

    /// Rows per INSERT.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
}

impl MigrateDataArgs {
    /// Both URLs, validated (a bad one is a setting error, exit code 2).
    pub(super) fn settings(
        &self,
        base: &DatabaseSettings,
    ) -> Result<(DatabaseSettings, DatabaseSettings), ConfigError> {
        let with = |url: &str, flag: &'static str| -> Result<DatabaseSettings, ConfigError> {
            let url = DatabaseUrl::parse(url).map_err(|e| ConfigError { setting: flag, ..e })?;
            Ok(DatabaseSettings {
                url,
                ..base.clone()
            })
        };
        Ok((with(&self.from, "--from")?, with(&self.to, "--to")?))
    }
}

pub(super) async fn run(
    from: DatabaseSettings,
    to: DatabaseSettings,
    args: MigrateDataArgs,
) -> anyhow::Result<ExitCode> {
    if std::mem::discriminant(&from.url) == std::mem::discriminant(&to.url) {
        return Err(transfer::TransferError::SameBackend.into());
    }
    // No server may write to an SQLite side while it is copied (or replaced).
    let mut _locks = Vec::new();
    for settings in [&from, &to] {
        if let DatabaseUrl::Sqlite { path } = &settings.url {
            _locks.push(ServerLock::acquire(path)?);
        }
    }
    let source = super::audit::open_database(&from)
        .await
        .with_context(|| format!("opening the source {}", from.url))?;
    let target = super::audit::open_database(&to)
        .await
        .with_context(|| format!("opening the target {}", to.url))?;
    out!("from: {}", from.url);
    out!("to:   {}", to.url);
    let started = Instant::now();
    let bar = progress_bar(0, 0, "rows");
    let outcome = transfer::copy_all(
        &source,
        &target,
        args.force,
        args.batch as usize,
        |table, done, total| {
            if bar.length() != Some(total) {
                bar.set_length(total);
                bar.set_message(table.to_owned());
            }
            bar.set_position(done);
        },
    )
    .await;
    bar.finish_and_clear();
    source.close().await;
    // The copied trail, then this event (backend names only: a URL may hold a password).
    let recorded = match &outcome {
        Ok(reports) => {
            let rows = reports
                .iter()
                .map(|r| (r.table.clone(), serde_json::Value::from(r.rows)))
                .collect::<serde_json::Map<_, _>>();
            let changes = serde_json::json!({"copied_from": source.backend(), "rows": rows});
            Some(super::audit::record(&target, "cli", AuditAction::Migrate, changes).await)
        }
        Err(_) => None,
    };
    target.close().await;
    let reports = outcome.context("migrate-data failed")?;
    recorded.transpose()?;
    for r in &reports {
        out!(
            "table {}: {} row(s) copied, counts and checksum {} verified",
            r.table,
            r.rows,
            r.checksum
        );
    }
    out!("done in {:.2} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
