//! The command line: one binary to serve and to operate.
//!
//! Settings come from flags, then `PWA_*` environment variables, then defaults.
//! A bad setting is reported in one line naming it, with exit code 2.

mod migrate;
mod serve;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, DatabaseSettings};

/// Exit code for a bad setting or usage error.
pub const EXIT_USAGE: u8 = 2;

/// clinscribe: clinical dictation server and offline-first web app.
#[derive(Debug, Parser)]
#[command(name = "clinscribe", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Database URL: sqlite://./data/clinical.db (the original's
    /// sqlite+aiosqlite:///./data/clinical.db form is accepted too).
    /// The directory is created if missing.
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

    /// Log filter, e.g. `info`, `warn`, `clinscribe=debug` (tracing EnvFilter syntax).
    #[arg(long, env = "PWA_LOG", default_value = config::DEFAULT_LOG, global = true)]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending migrations, or list them with --status.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (IP:PORT).
    #[arg(long, env = "PWA_BIND", default_value = config::DEFAULT_BIND)]
    bind: String,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// List applied and pending migrations with their checksums; change nothing.
    #[arg(long)]
    status: bool,
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("clinscribe: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("clinscribe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let database = DatabaseSettings::parse(&cli.database_url, &cli.sqlite_synchronous)?;
    let filter = config::parse_log_filter(&cli.log)?;
    let command = match cli.command {
        Command::Serve(args) => Validated::Serve(config::parse_bind(&args.bind)?),
        Command::Migrate(args) => Validated::Migrate {
            status: args.status,
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().map_err(anyhow::Error::from)?;
    let code = runtime.block_on(async move {
        match command {
            Validated::Serve(bind) => serve::run(database, bind).await,
            Validated::Migrate { status } => migrate::run(database, status).await,
        }
    })?;
    Ok(code)
}

/// A subcommand whose settings have all been validated.
enum Validated {
    Serve(std::net::SocketAddr),
    Migrate { status: bool },
}
