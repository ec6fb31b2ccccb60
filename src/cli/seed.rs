//! `clinscribe seed [--count N]`.

use std::sync::Arc;

use std::process::ExitCode;
use std::time::Instant;

use crate::audit::AuditAction;
use anyhow::{Context, bail};
use clap::Args;
use indicatif::ProgressBar;

use super::progress_bar;
use crate::config::DatabaseSettings;
use crate::db::sqlite::lock::ServerLock;
use crate::db::{Database, DbError};
use crate::recordings::RecordingStore;
use crate::recordings::model::Recording;
use crate::recordings::seed::{Generator, development_recordings};
use crate::recordings::store::{BoundInserts, BulkLoader, StoreError};
use crate::timestamp::Timestamp;

#[derive(Debug, Args)]
pub(super) struct SeedArgs {
    /// Instead of the five development recordings, generate N realistic ones
    /// (spread over clinicians, patients, statuses and the last two years).
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Seed even if the database already holds recordings.
    #[arg(long)]
    force: bool,

    /// Random seed for --count, for reproducible data.
    #[arg(long, default_value_t = 42)]
    random_seed: u64,
}

/// Rows generated at a time (and per transaction while a server runs: short
/// enough that its writers wait only briefly).
const BATCH: usize = 5_000;

pub(super) async fn run(database: DatabaseSettings, args: SeedArgs) -> anyhow::Result<ExitCode> {
    let mut db = super::audit::open_database(&database).await?;
    let mut store = crate::recordings::store::open(&db.clone());
    let existing = store.count().await?;
    if existing > 0 && !args.force {
        db.close().await;
        bail!(
            "the database already holds {existing} recording(s); seeding adds development data, use --force to add it anyway"
        );
    }
    let started = Instant::now();
    let inserted = match args.count {
        None => {
            let rows = development_recordings(Timestamp::now());
            store.insert_batch(&rows).await?;
            rows.len() as u64
        }
        Some(total) => {
            let bar = progress_bar(total, 50_000, "recordings");
            let generator = Generator::new(total, Timestamp::now(), args.random_seed);
            let done = match start_bulk_load(&db).await? {
                Some((mut loader, lock)) => {
                    let prepare = |batch: Vec<Recording>| BoundInserts::new(&batch);
                    let done = load_generated(generator, &bar, prepare, async |rows| {
                        loader.push(rows).await
                    })
                    .await?;
                    bar.set_message("building indexes");
                    loader.finish().await.context("finishing the bulk load")?;
                    drop(lock);
                    done
                }
                None => {
                    (db, store) = reopen_if_closed(db, store, &database).await?;
                    if let Database::Sqlite(sqlite) = &db {
                        sqlite.set_writer_cache_mib(256).await?;
                    }
                    load_generated(
                        generator,
                        &bar,
                        |batch| batch,
                        async |batch| store.insert_batch(&batch).await,
                    )
                    .await?
                }
            };
            bar.finish_and_clear();
            done
        }
    };
    (db, store) = reopen_if_closed(db, store, &database).await?;
    let elapsed = started.elapsed().as_secs_f64();
    super::audit::record(
        &db,
        "cli",
        AuditAction::Seed,
        serde_json::json!({ "recordings": inserted }),
    )
    .await?;
    out!(
        "Seeded {inserted} recording(s) in {elapsed:.2} s ({:.0} rows/s).",
        inserted as f64 / elapsed.max(1e-9)
    );
    out!("");
    out!("Recordings by status:");
    for (status, n) in store.count_by_status().await? {
        out!("  {status:<11} {n}");
    }
    let by_clinician = store.count_by_clinician().await?;
    out!("Recordings by clinician ({}):", by_clinician.len());
    for (clinician, n) in by_clinician.iter().take(20) {
        out!("  {clinician:<18} {n}");
    }
    if by_clinician.len() > 20 {
        out!("  … and {} more", by_clinician.len() - 20);
    }
    let clinicians: Vec<&str> = by_clinician
        .iter()
        .map(|(id, _)| id.as_str())
        .take(DEVELOPMENT_USERS)
        .collect();
    let outcome = development_users(&db, &clinicians).await;
    db.close().await;
    outcome?;
    Ok(ExitCode::SUCCESS)
}

/// Clinicians of the seeded data given a development account (and a token).
const DEVELOPMENT_USERS: usize = 10;

/// Adds an account for each of `clinicians` that has none, and an `admin`,
/// and prints an API token for each of them (development only).
async fn development_users(db: &Database, clinicians: &[&str]) -> anyhow::Result<()> {
    use crate::auth::{AccountCommandError, AccountError, AuthMode, Authenticator, Role};
    let auth = Authenticator::new(db, AuthMode::On);
    out!("");
    out!("Development users and their API tokens (Authorization: Bearer …):");
    let users = clinicians
        .iter()
        .map(|id| (*id, Role::Clinician))
        .chain([("admin", Role::Admin)]);
    for (id, role) in users {
        match auth.add_user(id, id, role, None, None).await {
            Ok(()) => {
                let changes =
                    serde_json::json!({"user": id, "role": role.as_str(), "password": false});
                super::audit::record(db, "cli", AuditAction::UserAdd, changes).await?;
            }
            Err(AccountCommandError::Refused(AccountError::UserExists(_))) => {}
            Err(e) => return Err(e).with_context(|| format!("adding development user {id}")),
        }
        let (info, token) = auth.create_token(id, None).await?;
        let changes = serde_json::json!({"token": info.id, "user": id, "expires_at": null});
        super::audit::record(db, "cli", AuditAction::TokenCreate, changes).await?;
        out!("  {id:<18} {:<9} {token}", role.as_str());
    }
    out!("(no passwords: set one with `clinscribe user passwd ID` to sign in in the browser)");
    Ok(())
}

/// Starts a bulk load (see [`BulkLoader`]) when nothing else uses the SQLite
/// file: no server (its lock is free, and held until the load ends) and no
/// other process (leaving WAL mode needs the only connection, so ours are
/// closed first). Otherwise None, and the rows go in short batches through the
/// store, so that a running server's writers keep going. PostgreSQL has no
/// server lock and no bulk loader: batches, always.
async fn start_bulk_load(db: &Database) -> anyhow::Result<Option<(BulkLoader, ServerLock)>> {
    let Database::Sqlite(sqlite) = db else {
        return Ok(None);
    };
    let Ok(lock) = ServerLock::acquire(sqlite.path()) else {
        return Ok(None);
    };
    db.close().await;
    match BulkLoader::open(sqlite.path()).await {
        Ok(loader) => Ok(Some((loader, lock))),
        Err(e @ DbError::JournalMode { .. }) => {
            eprintln!("note: {e}; seeding in batches instead (slower)");
            Ok(None)
        }
        Err(e) => Err(e).context("starting the bulk load"),
    }
}

/// The database (and its store) again if [`start_bulk_load`] closed it.
async fn reopen_if_closed(
    db: Database,
    store: Arc<dyn RecordingStore>,
    settings: &DatabaseSettings,
) -> anyhow::Result<(Database, Arc<dyn RecordingStore>)> {
    if !db.is_closed() {
        return Ok((db, store));
    }
    let db = Database::open(settings)
        .await
        .context("reopening the database")?;
    let store = crate::recordings::store::open(&db.clone());
    Ok((db, store))
}

/// Generates the recordings batch by batch on a thread of its own, where
/// `prepare` also runs (binding them to statements, for a bulk load), and
/// stores each with `store` meanwhile: the database writes one batch on one
/// core while the next is made on the other.
async fn load_generated<T: Send + 'static>(
    mut generator: Generator,
    bar: &ProgressBar,
    prepare: fn(Vec<Recording>) -> T,
    mut store: impl AsyncFnMut(T) -> Result<(), StoreError>,
) -> anyhow::Result<u64> {
    // Two batches ahead at most: enough to never wait, little memory.
    let (batches, mut received) = tokio::sync::mpsc::channel(2);
    let producer = tokio::task::spawn_blocking(move || {
        loop {
            let batch = generator.next_batch(BATCH);
            if batch.is_empty() {
                break;
            }
            // A closed channel means the loop below stopped on an error.
            let rows = batch.len();
            if batches.blocking_send((rows, prepare(batch))).is_err() {
                break;
            }
        }
    });
    let mut done = 0;
    while let Some((rows, batch)) = received.recv().await {
        store(batch).await?;
        done += rows as u64;
        bar.set_position(done);
    }
    producer.await.context("generating recordings")?;
    Ok(done)
}
