//! `clinscribe backup` and `clinscribe restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::{POSTGRES_BACKUPS, human_bytes, progress_bar, sqlite_path};
use crate::audit::AuditAction;
use crate::config::{self, ConfigError, DatabaseSettings};
use crate::db::sqlite::backup::{self, BackupOptions};
use crate::db::sqlite::restore;

#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// Directory for the backup (created if missing); files are named
    /// clinical_YYYYMMDD_HHMMSS.db (UTC).
    #[arg(long, env = "PWA_BACKUP_DIR", default_value = "./backups")]
    dest: PathBuf,

    /// Afterwards, delete the oldest backups in DIR beyond the newest N.
    #[arg(long, env = "PWA_BACKUP_KEEP")]
    keep: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    /// The backup file to restore.
    file: PathBuf,
}

impl BackupArgs {
    /// Validated options (a bad `--keep` is a setting error, exit code 2).
    pub(super) fn options(&self) -> Result<BackupOptions, ConfigError> {
        backup_options(&self.dest, self.keep.as_deref())
    }
}

/// Backup options from a directory and an optional `PWA_BACKUP_KEEP` value.
pub(super) fn backup_options(dir: &Path, keep: Option<&str>) -> Result<BackupOptions, ConfigError> {
    let mut options = BackupOptions::new(dir);
    options.keep = keep
        .map(|k| config::parse_keep("PWA_BACKUP_KEEP", k))
        .transpose()?;
    Ok(options)
}

pub(super) async fn backup(
    database: DatabaseSettings,
    options: BackupOptions,
) -> anyhow::Result<ExitCode> {
    let Some(db_path) = sqlite_path(&database) else {
        bail!("backup refused: {POSTGRES_BACKUPS}");
    };
    // A bar only for large databases (≥ 100k pages ≈ 400 MiB): small ones take milliseconds.
    let bar = progress_bar(0, 0, "pages");
    let progress = {
        let bar = bar.clone();
        move |p: crate::db::sqlite::BackupProgress| {
            if p.total >= 100_000 && bar.length() != Some(p.total) {
                bar.set_length(p.total);
            }
            bar.set_position(p.total - p.remaining);
        }
    };
    let report = backup::backup(&db_path, &options, progress)
        .await
        .with_context(|| format!("backup of {} failed", db_path.display()))?;
    bar.finish_and_clear();
    out!("backup:     {}", report.path.display());
    out!(
        "size:       {} ({} bytes)",
        human_bytes(report.size_bytes),
        report.size_bytes
    );
    out!("recordings: {}", report.recordings);
    out!("integrity:  ok");
    out!("elapsed:    {:.3} s", report.elapsed.as_secs_f64());
    for old in &report.deleted {
        out!("deleted:    {}", old.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn restore(
    database: DatabaseSettings,
    args: RestoreArgs,
) -> anyhow::Result<ExitCode> {
    let Some(db_path) = sqlite_path(&database) else {
        bail!("restore refused: {POSTGRES_BACKUPS}");
    };
    let report = restore::restore(&database, &args.file)
        .await
        .with_context(|| format!("restore of {} refused", args.file.display()))?;
    out!(
        "restored:   {} -> {}",
        args.file.display(),
        db_path.display()
    );
    match &report.previous {
        Some(kept) => out!("previous:   kept as {}", kept.display()),
        None => out!("previous:   none (there was no database)"),
    }
    out!("recordings: {}", report.recordings);
    // The restored database's audit trail says so (it is brought up to this
    // version's schema first, as the next `serve` would).
    let db = crate::db::Database::open(&database)
        .await
        .context("opening the restored database to audit the restore")?;
    let changes = serde_json::json!({
        "restored_from": args.file.display().to_string(),
        "previous_kept_as": report.previous.as_ref().map(|p| p.display().to_string()),
        "recordings": report.recordings,
    });
    let seq = super::audit::record(&db, "cli", AuditAction::Restore, changes).await?;
    db.close().await;
    out!("audit:      event {seq} records the restore");
    Ok(ExitCode::SUCCESS)
}
