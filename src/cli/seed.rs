//! `clinscribe seed [--count N]`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use super::{progress_bar, sqlite_path};
use crate::config::DatabaseSettings;
use crate::db::Database;
use crate::db::lock::ServerLock;
use crate::recordings::RecordingStore;
use crate::recordings::seed::{Generator, development_recordings};
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
    let db = Database::open(&database)
        .await
        .context("opening the database")?;
    let store = RecordingStore::new(db.clone());
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
            if let Database::Sqlite(sqlite) = &db {
                sqlite.set_writer_cache_mib(256).await?;
            }
            let bar = progress_bar(total, 50_000, "recordings");
            let mut generator = Generator::new(total, Timestamp::now(), args.random_seed);
            let mut done = 0;
            // With no server running (its lock is free, and held until the end),
            // one bulk transaction with the indexes rebuilt once at the end;
            // otherwise short batches, so the server's writers keep going.
            // (PostgreSQL has no server lock and no bulk loader: batches, always.)
            let lock = sqlite_path(&database).and_then(|path| ServerLock::acquire(&path).ok());
            let mut loader = match lock {
                Some(_) => store.bulk_loader().await?,
                None => None,
            };
            loop {
                let batch = generator.next_batch(BATCH);
                if batch.is_empty() {
                    break;
                }
                match loader.as_mut() {
                    Some(loader) => loader.push(&batch).await?,
                    None => store.insert_batch(&batch).await?,
                }
                done += batch.len() as u64;
                bar.set_position(done);
            }
            if let Some(loader) = loader {
                bar.set_message("building indexes");
                loader.finish().await?;
            }
            drop(lock);
            bar.finish_and_clear();
            done
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
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
    db.close().await;
    Ok(ExitCode::SUCCESS)
}
