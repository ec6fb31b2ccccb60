//! How fast `clinscribe audit verify` recomputes the chain:
//! `cargo bench --bench audit [-- EVENTS]` (default 1,000,000) appends that
//! many events to a fresh SQLite database through the same `append_many` the
//! group commits use, 256 at a time (each an edit of a transcript, with a
//! 200-character text), then
//! times `AuditStore::verify` three times and prints the median in events/s.

// A benchmark that cannot do its work stops with a message: no recovery to attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use clinscribe::audit::{AuditAction, NewAuditEvent};
use clinscribe::config::DatabaseSettings;
use clinscribe::db::{Database, SqliteDatabase};
use clinscribe::timestamp::Timestamp;
use serde_json::json;

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(1_000_000, |a| a.parse().expect("EVENTS: a number"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let db = SqliteDatabase::open(&DatabaseSettings::sqlite(dir.path().join("audit.db")))
            .await
            .expect("open");
        let text = "Patient reports improved breathing; continue salbutamol as needed and review in two weeks. ".repeat(3);
        let started = Instant::now();
        let mut tx = db.begin_write().await.expect("begin");
        let mut batch = Vec::with_capacity(256);
        for n in 0..events {
            batch.push(NewAuditEvent {
                at: Timestamp::now(),
                actor: format!("clinician-{}", n % 50),
                action: AuditAction::Update,
                recording_id: Some(uuid::Uuid::now_v7()),
                patient_id: Some(format!("patient-{}", n % 10_000)),
                changes: json!({"final_transcript": [null, &text[..200]]}),
                request_id: Some(uuid::Uuid::new_v4().to_string()),
                client_addr: Some("10.0.0.7".into()),
            });
            if batch.len() == 256 || n + 1 == events {
                let refs: Vec<&NewAuditEvent> = batch.iter().collect();
                clinscribe::audit::store::sqlite::append_many(&mut tx, &refs)
                    .await
                    .expect("append");
                batch.clear();
            }
        }
        tx.commit().await.expect("commit");
        println!(
            "appended {events} events in {:.1} s ({:.0} events/s, one transaction)",
            started.elapsed().as_secs_f64(),
            events as f64 / started.elapsed().as_secs_f64()
        );
        let audit = clinscribe::audit::store::open(&Database::Sqlite(db.clone()));
        let mut rates = Vec::new();
        for run in 1..=3 {
            let started = Instant::now();
            let (checked, broken) = audit.verify().await.expect("verify");
            let seconds = started.elapsed().as_secs_f64();
            assert_eq!((checked as u64, broken), (events, None));
            rates.push(events as f64 / seconds);
            println!("verify run {run}: {events} events in {seconds:.2} s ({:.0} events/s)", events as f64 / seconds);
        }
        rates.sort_by(f64::total_cmp);
        println!("verify median: {:.0} events/s", rates[1]);
        db.close().await;
    });
}
