//! `clinscribe seed [--count N]`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use super::progress_bar;
use crate::config::DatabaseSettings;
use crate::db::Database;
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

/// Rows per transaction when generating: large enough to amortise the commit,
/// small enough to keep a running server's writers waiting only briefly.
const BATCH: usize = 5_000;

pub(super) async fn run(database: DatabaseSettings, args: SeedArgs) -> anyhow::Result<ExitCode> {
    let db = Database::open(&database).await.context("opening the database")?;
    let store = RecordingStore::new(db.clone());
    let existing = store.count().await?;
    if existing > 0 && !args.force {
        db.close().await;
        bail!("the database already holds {existing} recording(s); seeding adds development data, use --force to add it anyway");
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
            let mut generator = Generator::new(total, Timestamp::now(), args.random_seed);
            let mut done = 0;
            loop {
                let batch = generator.next_batch(BATCH);
                if batch.is_empty() {
                    break;
                }
                store.insert_batch(&batch).await?;
                done += batch.len() as u64;
                bar.set_position(done);
            }
            bar.finish_and_clear();
            done
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "Seeded {inserted} recording(s) in {elapsed:.2} s ({:.0} rows/s).",
        inserted as f64 / elapsed.max(1e-9)
    );
    println!();
    println!("Recordings by status:");
    for (status, n) in store.count_by_status().await? {
        println!("  {status:<11} {n}");
    }
    let by_clinician = store.count_by_clinician().await?;
    println!("Recordings by clinician ({}):", by_clinician.len());
    for (clinician, n) in by_clinician.iter().take(20) {
        println!("  {clinician:<18} {n}");
    }
    if by_clinician.len() > 20 {
        println!("  … and {} more", by_clinician.len() - 20);
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}
