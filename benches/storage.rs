//! The storage limit: raw one-insert-per-transaction and point-read rates
//! through the same library, schema and settings as the server, without HTTP.
//!
//! `cargo bench --bench storage` (options: `-- --seconds 3 --runs 3`).
//! Prints one JSON object per measurement and a Markdown table.

use std::time::{Duration, Instant};

use clinscribe::config::{DatabaseSettings, SqliteSynchronous};
use clinscribe::db::Database;
use clinscribe::recordings::{NewRecording, RecordingStore};
use uuid::Uuid;

struct Options {
    seconds: f64,
    runs: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Options {
        seconds: value("--seconds", 3.0),
        runs: value("--runs", 3.0) as usize,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn open(dir: &std::path::Path, synchronous: SqliteSynchronous) -> RecordingStore {
    let mut settings = DatabaseSettings::sqlite(dir.join(format!("{synchronous:?}.db")));
    settings.synchronous = synchronous;
    RecordingStore::new(Database::open(&settings).await.expect("open"))
}

/// Sequential creates for `seconds`; returns operations per second.
async fn inserts(store: &RecordingStore, seconds: f64) -> (f64, Vec<Uuid>) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        let r = store
            .create(
                &format!("clinician-{}", ids.len() % 10),
                NewRecording {
                    patient_id: format!("patient-{}", ids.len() % 1000),
                    duration_seconds: 60,
                    audio_file_path: None,
                },
            )
            .await
            .expect("insert");
        ids.push(r.id);
    }
    (ids.len() as f64 / started.elapsed().as_secs_f64(), ids)
}

async fn point_reads(store: &RecordingStore, ids: &[Uuid], seconds: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut n = 0usize;
    while Instant::now() < deadline {
        store
            .get(ids[n.wrapping_mul(7919) % ids.len()])
            .await
            .expect("get");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = options();
    let dir = tempfile::tempdir().expect("temp dir");
    println!("| measurement | median ops/s | runs |");
    println!("|---|---:|---:|");
    for synchronous in [SqliteSynchronous::Normal, SqliteSynchronous::Full] {
        let store = open(dir.path(), synchronous).await;
        let mut insert_rates = Vec::new();
        let mut read_rates = Vec::new();
        let mut all_ids = Vec::new();
        for _ in 0..opts.runs {
            let (rate, ids) = inserts(&store, opts.seconds).await;
            insert_rates.push(rate);
            all_ids.extend(ids);
            read_rates.push(point_reads(&store, &all_ids, opts.seconds).await);
        }
        let name = format!("{synchronous:?}").to_lowercase();
        for (what, rates) in [
            ("insert (1 per transaction)", insert_rates),
            ("point read", read_rates),
        ] {
            let m = median(rates.clone());
            println!("| {what}, synchronous={name} | {m:.0} | {} |", rates.len());
            eprintln!(
                "{}",
                serde_json::json!({"bench": "storage", "what": what, "synchronous": name, "median_ops_per_s": m, "runs": rates})
            );
        }
    }
}
