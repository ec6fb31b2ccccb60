//! `clinscribe audit verify` and `clinscribe audit export`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::maintenance::open_existing;
use crate::audit::{AuditAction, AuditContext, AuditEvent, NewAuditEvent};
use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::db::sqlite::adopt::AdoptionReport;
use crate::timestamp::Timestamp;

/// The audit trail's commands.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; report the first broken link (exit 1).
    Verify,
    /// Write audit events to stdout (the export itself is audited).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Events at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Events before this time.
    #[arg(long)]
    until: Option<String>,
    /// Only this patient's events.
    #[arg(long)]
    patient: Option<String>,
    /// One JSON object per line, or CSV with a header.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: ExportFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
}

/// Opens (and migrates) the database `settings` names; when that adopted the
/// original service's file, appends the adoption's event to the new trail;
/// moves into the chain the reads a stopped server left in the audit spool.
pub(super) async fn open_database(settings: &DatabaseSettings) -> anyhow::Result<Database> {
    let db = Database::open(settings)
        .await
        .context("opening the database")?;
    if let Some(report) = db.take_adoption() {
        record_adoption(&db, &report).await?;
    }
    if let Database::Sqlite(sqlite) = &db {
        let moved = crate::audit::store::sqlite::move_pending(sqlite)
            .await
            .context("moving the reads a stopped server left in the audit spool into the chain")?;
        if moved > 0 {
            tracing::info!(
                events = moved,
                "audit spool: reads an earlier process left moved into the chain"
            );
        }
    }
    Ok(db)
}

/// Appends the event of `report`'s adoption to `db`'s trail (done before
/// anything else is written to the adopted database).
pub(super) async fn record_adoption(db: &Database, report: &AdoptionReport) -> anyhow::Result<()> {
    let changes = json!({
        "adopted_from": "the original service's database",
        "original_kept_as": report.original_copy.display().to_string(),
        "recordings": report.recordings,
        "local_storage_keys_cleared": report.keys_cleared,
    });
    record(db, "adopt", AuditAction::Adopt, changes).await?;
    Ok(())
}

/// Appends an event of `component` of the command line (`system:<component>`)
/// that concerns no one recording; returns its position in the chain.
pub(super) async fn record(
    db: &Database,
    component: &str,
    action: AuditAction,
    changes: serde_json::Value,
) -> anyhow::Result<i64> {
    let event = AuditContext::system(component).event(action, None, None, changes);
    let event = crate::audit::store::open(db)
        .append(&event)
        .await
        .with_context(|| format!("auditing the {}", action.as_str()))?;
    Ok(event.seq)
}

/// Runs an audit command.
pub(super) async fn run(database: DatabaseSettings, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let db = open_existing(&database).await?;
    let audit = crate::audit::store::open(&db);
    let outcome = match args.command {
        AuditCommand::Verify => {
            let (checked, broken) = audit.verify().await?;
            match broken {
                None => {
                    out!("audit trail intact: {checked} event(s), every hash verified");
                    Ok(ExitCode::SUCCESS)
                }
                Some(link) => {
                    out!(
                        "audit trail BROKEN at event {}: {} ({checked} event(s) before it verified)",
                        link.seq,
                        link.reason
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Export(args) => export(audit.as_ref(), args).await,
    };
    db.close().await;
    outcome
}

fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<Timestamp>> {
    value
        .map(|v| {
            Timestamp::parse(v).map_err(|e| {
                anyhow::anyhow!("{flag} {v:?}: {e} (expected e.g. 2026-12-01T00:00:00Z)")
            })
        })
        .transpose()
}

async fn export(
    audit: &dyn crate::audit::AuditStore,
    args: ExportArgs,
) -> anyhow::Result<ExitCode> {
    let since = parse_time("--since", args.since.as_deref())?;
    let until = parse_time("--until", args.until.as_deref())?;
    let events = audit
        .export(since, until, args.patient.as_deref())
        .await
        .context("reading the audit trail")?;
    let mut stdout = std::io::stdout().lock();
    match args.format {
        ExportFormat::Jsonl => {
            for e in &events {
                writeln!(stdout, "{}", serde_json::to_string(e)?)?;
            }
        }
        ExportFormat::Csv => {
            writeln!(
                stdout,
                "seq,at,actor,action,recording_id,patient_id,changes,request_id,client_addr,prev_hash,hash"
            )?;
            for e in &events {
                writeln!(stdout, "{}", csv_row(e))?;
            }
        }
    }
    stdout.flush()?;
    // Reading patient data out of the system is itself audited.
    let context = AuditContext::system("cli");
    audit
        .append(&NewAuditEvent {
            at: Timestamp::now(),
            actor: context.actor,
            action: AuditAction::Export,
            recording_id: None,
            patient_id: args.patient.clone(),
            changes: json!({
                "since": args.since, "until": args.until,
                "format": format!("{:?}", args.format).to_lowercase(),
                "events": events.len(),
            }),
            request_id: None,
            client_addr: None,
        })
        .await
        .context("auditing the export")?;
    Ok(ExitCode::SUCCESS)
}

/// One CSV line (RFC 4180: fields quoted, quotes doubled).
fn csv_row(e: &AuditEvent) -> String {
    let field = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let opt = |s: &Option<String>| s.as_deref().map(field).unwrap_or_default();
    [
        e.seq.to_string(),
        field(&e.at),
        field(&e.actor),
        field(&e.action),
        opt(&e.recording_id),
        opt(&e.patient_id),
        field(&e.changes.to_string()),
        opt(&e.request_id),
        opt(&e.client_addr),
        field(&e.prev_hash),
        field(&e.hash),
    ]
    .join(",")
}
