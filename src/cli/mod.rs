//! The command line: one binary to serve and to operate.
//!
//! Settings come from flags, then `PWA_*` environment variables, then defaults.
//! A bad setting is reported in one line naming it, with exit code 2; any other
//! failure in one line with exit code 1.

/// `println!` that ignores a closed stdout (`clinscribe seed | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod accounts;
mod audit;
mod backup;
mod maintenance;
mod migrate;
mod migrate_data;
mod model;
mod seed;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{self, ConfigError, DatabaseSettings};

/// Exit code for a bad setting or usage error.
pub const EXIT_USAGE: u8 = 2;

/// clinscribe: clinical dictation server and offline-first web app.
#[derive(Debug, Parser)]
#[command(name = "clinscribe", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Database URL: sqlite://./data/clinical.db (the original's
    /// sqlite+aiosqlite:///./data/clinical.db form is accepted too; the
    /// directory is created if missing) or postgres://user:pass@host/db.
    #[arg(long, env = "PWA_DATABASE_URL", default_value = config::DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    /// SQLite durability: `normal` survives a crash of the server process;
    /// `full` also survives power loss, at a cost per commit.
    #[arg(
        long,
        env = "PWA_SQLITE_SYNCHRONOUS",
        default_value = "normal",
        global = true
    )]
    sqlite_synchronous: String,

    /// PostgreSQL only: connections per instance.
    #[arg(
        long,
        env = "PWA_DATABASE_POOL_SIZE",
        default_value = config::DEFAULT_POOL_SIZE,
        global = true
    )]
    database_pool_size: String,

    /// PostgreSQL only: cancel a statement running longer than this (e.g. `30s`).
    #[arg(long, env = "PWA_DATABASE_STATEMENT_TIMEOUT", default_value = config::DEFAULT_STATEMENT_TIMEOUT, global = true)]
    database_statement_timeout: String,

    /// Log filter, e.g. `info`, `warn`, `clinscribe=debug` (tracing EnvFilter syntax).
    #[arg(long, env = "PWA_LOG", default_value = config::DEFAULT_LOG, global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (adopts an original-service database and applies
    /// pending migrations first; optionally takes scheduled backups).
    Serve(Box<serve::ServeArgs>),
    /// Apply pending migrations, or list them with --status.
    Migrate(migrate::MigrateArgs),
    /// Hot backup through SQLite's Online Backup API, verified; safe while serving.
    Backup(backup::BackupArgs),
    /// Replace the database with a verified backup (refused while a server runs).
    Restore(backup::RestoreArgs),
    /// Insert the original's five development recordings, or --count N generated ones.
    Seed(seed::SeedArgs),
    /// Copy every table between SQLite and PostgreSQL (counts and checksums verified).
    MigrateData(migrate_data::MigrateDataArgs),
    /// Check integrity, foreign keys, migrations and row counts (exit 1 if anything is wrong).
    Check,
    /// Update statistics, checkpoint the WAL and compact the database.
    Vacuum(maintenance::VacuumArgs),
    /// Whisper models for the embedded transcription engine (import, fetch).
    Model(model::ModelArgs),
    /// The audit trail: verify its hash chain, export events.
    Audit(audit::AuditArgs),
    /// Local accounts: add, list, disable, set a password.
    User(accounts::UserArgs),
    /// API tokens for scripts and integrations: create, list, revoke.
    Token(accounts::TokenArgs),
    /// Recordings in bulk: reassign one clinician's to another.
    Recordings(accounts::RecordingsArgs),
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if crate::audit::UNAUDITED
        && std::env::var_os("CLINSCRIBE_BENCHMARK_UNAUDITED").is_none_or(|v| v != "1")
    {
        eprintln!(
            "clinscribe: this build writes no audit events (the `unaudited` feature, a \
             benchmark's baseline); it runs only with CLINSCRIBE_BENCHMARK_UNAUDITED=1"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("clinscribe: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("clinscribe: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes that repeat what an
/// outer message already says (many library errors include their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

/// How a command failed: a bad setting (exit 2) or at run time (exit 1).
enum Failure {
    Config(ConfigError),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    /// A setting a subcommand validates itself (e.g. `model transcribe`) is
    /// still a bad setting.
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<ConfigError>() {
            Ok(config) => Self::Config(config),
            Err(e) => Self::Runtime(e),
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let database = DatabaseSettings::parse(&cli.database_url, &cli.sqlite_synchronous)?
        .with_postgres_limits(&cli.database_pool_size, &cli.database_statement_timeout)?;
    let filter = config::parse_log_filter(&cli.log)?;
    // Validate the subcommand's own settings before anything touches the disk.
    let job = Job::validate(cli.command, &database)?;
    // Traces are the server's: the other commands only log.
    let traces = match job {
        Job::Serve(_) => crate::telemetry::TraceSettings::from_env()?,
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(anyhow::Error::from)?;
    let tracing = {
        let _inside = runtime.enter();
        traces
            .as_ref()
            .map(crate::telemetry::Tracing::start)
            .transpose()?
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                // Events only: the spans are the exporter's (crate::telemetry).
                .with_filter(filter.and(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.is_event()
                }))),
        )
        .with(tracing.as_ref().map(crate::telemetry::Tracing::layer))
        .init();
    if let Some(settings) = &traces {
        tracing::info!(transport = ?settings.transport, "exporting traces over OTLP");
    }
    let outcome = runtime.block_on(job.run(database));
    if let Some(tracing) = tracing {
        // The exporter's last batch goes out over the runtime's connections.
        let _inside = runtime.enter();
        tracing.shutdown();
    }
    Ok(outcome?)
}

/// A command whose own settings are validated: ready to run.
enum Job {
    Serve(Box<serve::ServeSettings>),
    Migrate(migrate::MigrateArgs),
    Backup(crate::db::sqlite::backup::BackupOptions),
    Restore(backup::RestoreArgs),
    Seed(seed::SeedArgs),
    MigrateData(
        DatabaseSettings,
        DatabaseSettings,
        migrate_data::MigrateDataArgs,
    ),
    Check,
    Vacuum(maintenance::VacuumArgs),
    Model(model::ModelArgs),
    Audit(audit::AuditArgs),
    User(accounts::UserArgs),
    Token(accounts::TokenArgs),
    Recordings(accounts::RecordingsArgs),
}

impl Job {
    fn validate(command: Command, database: &DatabaseSettings) -> Result<Self, ConfigError> {
        Ok(match command {
            Command::Serve(args) => Self::Serve(Box::new(args.settings()?)),
            Command::Migrate(args) => Self::Migrate(args),
            Command::Backup(args) => Self::Backup(args.options()?),
            Command::Restore(args) => Self::Restore(args),
            Command::Seed(args) => Self::Seed(args),
            Command::MigrateData(args) => {
                let (from, to) = args.settings(database)?;
                Self::MigrateData(from, to, args)
            }
            Command::Check => Self::Check,
            Command::Vacuum(args) => Self::Vacuum(args),
            Command::Model(args) => Self::Model(args),
            Command::Audit(args) => Self::Audit(args),
            Command::User(args) => Self::User(args),
            Command::Token(args) => Self::Token(args),
            Command::Recordings(args) => Self::Recordings(args),
        })
    }

    async fn run(self, database: DatabaseSettings) -> anyhow::Result<ExitCode> {
        match self {
            Self::Serve(settings) => serve::run(database, *settings).await,
            Self::Migrate(args) => migrate::run(database, args).await,
            Self::Backup(options) => backup::backup(database, options).await,
            Self::Restore(args) => backup::restore(database, args).await,
            Self::Seed(args) => seed::run(database, args).await,
            Self::MigrateData(from, to, args) => migrate_data::run(from, to, args).await,
            Self::Check => maintenance::check(database).await,
            Self::Vacuum(args) => maintenance::vacuum(database, args).await,
            Self::Model(args) => tokio::task::spawn_blocking(move || model::run(args)).await?,
            Self::Audit(args) => audit::run(database, args).await,
            Self::User(args) => accounts::user(database, args).await,
            Self::Token(args) => accounts::token(database, args).await,
            Self::Recordings(args) => accounts::recordings(database, args).await,
        }
    }
}

/// Creates the directory of SQLite file `path`, if it has one.
fn create_data_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    Ok(())
}

/// The SQLite file behind the settings (None on PostgreSQL).
fn sqlite_path(settings: &DatabaseSettings) -> Option<PathBuf> {
    match &settings.url {
        config::DatabaseUrl::Sqlite { path } => Some(path.clone()),
        config::DatabaseUrl::Postgres { .. } => None,
    }
}

/// Why `backup` and `restore` do not apply to PostgreSQL.
const POSTGRES_BACKUPS: &str = "this database is PostgreSQL, which is backed up with its own tools, not by clinscribe: \
     pg_dump / pg_restore for logical copies, or base backups with WAL archiving for point-in-time recovery \
     (see docs/OPERATIONS.md, \"PostgreSQL\")";

/// A progress bar on stderr, shown only on a terminal and for work of at least `min` units.
fn progress_bar(total: u64, min: u64, unit: &str) -> ProgressBar {
    let visible = std::io::IsTerminal::is_terminal(&std::io::stderr()) && total >= min;
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template =
        format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `1536` → `1.5 KiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
