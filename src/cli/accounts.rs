//! `clinscribe user …`, `clinscribe token …` and `clinscribe recordings
//! reassign`: accounts, API tokens, and moving recordings between clinicians.
//! Each change is an audit event of `system:cli`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::audit::{open_database, record};
use crate::audit::{AuditAction, AuditContext};
use crate::auth::{AuthMode, Authenticator, Role};
use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::timestamp::Timestamp;

/// Local accounts.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (a clinician, or an admin with --admin), with a password.
    Add {
        /// The user id (what their recordings' clinician_id holds).
        id: String,
        /// The name shown.
        #[arg(long)]
        name: String,
        /// An administrator: manages users and may read every recording.
        #[arg(long)]
        admin: bool,
        /// Read the password as one line from standard input (else it is
        /// asked for on the terminal).
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// No password: the user signs in through single sign-on only, or
        /// uses API tokens.
        #[arg(long)]
        no_password: bool,
        /// Link the account to this subject (`sub`) at the single sign-on
        /// provider: that person signs in as this user.
        #[arg(long)]
        oidc_subject: Option<String>,
    },
    /// List users.
    List,
    /// Disable a user: they cannot sign in, and their tokens stop working at once.
    Disable {
        /// The user id.
        id: String,
    },
    /// Set a user's password.
    Passwd {
        /// The user id.
        id: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// API tokens.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token for USER; the token is printed once, as the last line.
    Create {
        /// The user id.
        user: String,
        /// Lifetime, e.g. 90d or 12h (none: until revoked).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never the tokens themselves: their ids).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (from `token list`): it stops working at once.
    Revoke {
        /// The token id.
        id: String,
    },
}

/// Recordings, in bulk.
#[derive(Debug, Args)]
pub struct RecordingsArgs {
    #[command(subcommand)]
    command: RecordingsCommand,
}

#[derive(Debug, Subcommand)]
enum RecordingsCommand {
    /// Give every recording of one clinician to another (e.g. the adopted
    /// `current-clinician`'s to a real user).
    Reassign {
        /// The clinician id they belong to now.
        #[arg(long)]
        from: String,
        /// The user they go to.
        #[arg(long)]
        to: String,
    },
}

/// Runs a `user` command.
pub(super) async fn user(database: DatabaseSettings, args: UserArgs) -> anyhow::Result<ExitCode> {
    let db = open(&database).await?;
    let auth = Authenticator::new(&db, AuthMode::On);
    let outcome = run_user(&db, &auth, args.command).await;
    db.close().await;
    outcome
}

async fn run_user(
    db: &Database,
    auth: &Authenticator,
    command: UserCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add {
            id,
            name,
            admin,
            password_stdin,
            no_password,
            oidc_subject,
        } => {
            let role = if admin { Role::Admin } else { Role::Clinician };
            let password = if no_password {
                None
            } else {
                Some(read_password(password_stdin)?)
            };
            auth.add_user(
                &id,
                &name,
                role,
                password.as_deref(),
                oidc_subject.as_deref(),
            )
            .await?;
            let changes = json!({
                "user": id,
                "role": role.as_str(),
                "password": password.is_some(),
                "single_sign_on": oidc_subject.is_some(),
            });
            record(db, "cli", AuditAction::UserAdd, changes).await?;
            out!("added {} {id}", role.as_str());
        }
        UserCommand::List => {
            out!(
                "{:<24} {:<10} {:<9} {:<8} {:<4} name",
                "id",
                "role",
                "status",
                "password",
                "sso"
            );
            for user in auth.users().await? {
                let status = if user.disabled_at.is_some() {
                    "disabled"
                } else {
                    "active"
                };
                let yes_no = |yes: bool| if yes { "yes" } else { "no" };
                out!(
                    "{:<24} {:<10} {:<9} {:<8} {:<4} {}",
                    user.id,
                    user.role.as_str(),
                    status,
                    yes_no(user.has_password),
                    yes_no(user.oidc_subject.is_some()),
                    user.display_name
                );
            }
        }
        UserCommand::Disable { id } => {
            auth.disable(&id).await?;
            record(db, "cli", AuditAction::UserDisable, json!({"user": id})).await?;
            out!("disabled {id}: their tokens no longer work");
        }
        UserCommand::Passwd { id, password_stdin } => {
            let password = read_password(password_stdin)?;
            auth.set_password(&id, &password).await?;
            record(db, "cli", AuditAction::UserPassword, json!({"user": id})).await?;
            out!("password of {id} set");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a `token` command.
pub(super) async fn token(database: DatabaseSettings, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let db = open(&database).await?;
    let auth = Authenticator::new(&db, AuthMode::On);
    let outcome = run_token(&db, &auth, args.command).await;
    db.close().await;
    outcome
}

async fn run_token(
    db: &Database,
    auth: &Authenticator,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { user, expires } => {
            let lifetime = expires
                .as_deref()
                .map(crate::auth::model::parse_expiry)
                .transpose()?;
            let (info, secret) = auth.create_token(&user, lifetime).await?;
            let expires_at = info.expires_at.map(|t| t.to_string());
            let changes = json!({"token": info.id, "user": user, "expires_at": expires_at});
            record(db, "cli", AuditAction::TokenCreate, changes).await?;
            out!(
                "API token {} for {user}, expires {}; shown once, keep it secret:",
                info.id,
                expires_at.as_deref().unwrap_or("never")
            );
            out!("{secret}");
        }
        TokenCommand::List { user } => {
            out!(
                "{:<16} {:<24} {:<27} {:<27} {:<27} revoked",
                "id",
                "user",
                "created",
                "expires",
                "last used"
            );
            let shown = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
            for token in auth.tokens(user.as_deref()).await? {
                out!(
                    "{:<16} {:<24} {:<27} {:<27} {:<27} {}",
                    token.id,
                    token.user_id,
                    token.created_at.to_string(),
                    shown(token.expires_at),
                    shown(token.last_used_at),
                    shown(token.revoked_at)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            auth.revoke_token(&id).await?;
            record(db, "cli", AuditAction::TokenRevoke, json!({"token": id})).await?;
            out!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a `recordings` command.
pub(super) async fn recordings(
    database: DatabaseSettings,
    args: RecordingsArgs,
) -> anyhow::Result<ExitCode> {
    let RecordingsCommand::Reassign { from, to } = args.command;
    let db = open(&database).await?;
    let outcome = reassign(&db, &from, &to).await;
    db.close().await;
    outcome
}

async fn reassign(db: &Database, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let auth = Authenticator::new(db, AuthMode::On);
    if !auth.users().await?.iter().any(|u| u.id == to) {
        bail!("no user {to:?}: add them first (clinscribe user add)");
    }
    let moved = crate::recordings::store::open(db)
        .reassign(from, to, &AuditContext::system("cli"))
        .await
        .with_context(|| {
            format!("reassigning (nothing moved; does {to} already have a dictation {from} has?)")
        })?;
    out!("{moved} recording(s) of {from} now belong to {to}");
    Ok(ExitCode::SUCCESS)
}

/// Opens (creating and migrating) the database.
async fn open(database: &DatabaseSettings) -> anyhow::Result<Database> {
    if let Some(path) = super::sqlite_path(database) {
        super::create_data_dir(&path)?;
    }
    open_database(database).await
}

/// A new password: one line of standard input, or asked twice on the terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for a password on: pass --password-stdin and pipe it");
    }
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let again = rpassword::prompt_password("Again: ").context("reading the password")?;
    if first != again {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}
