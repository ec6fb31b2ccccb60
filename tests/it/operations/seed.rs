//! `clinscribe seed`: the development rows, and bulk generation beside a running server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{self, ServerProcess, all_recordings, client, open_db, run_cli};
use serde_json::json;

#[tokio::test]
async fn seed_writes_the_five_development_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data/clinical.db");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let out = run_cli(&db_path, &["seed"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Seeded 5 recording(s)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("clinician-001      2"),
        "{}",
        out.stdout
    );
    let rows = all_recordings(&db_path).await;
    let mut got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["patient_id"].as_str().unwrap().to_owned(),
                r["clinician_id"].as_str().unwrap().to_owned(),
                r["duration_seconds"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
                r["audio_file_path"].as_str().unwrap().to_owned(),
                r["error_message"].as_str().map(str::to_owned),
            )
        })
        .collect();
    got.sort();
    let expected = [
        ("patient-001", "clinician-001", 120, "pending", None),
        ("patient-002", "clinician-001", 180, "completed", None),
        (
            "patient-003",
            "clinician-002",
            90,
            "error",
            Some("Transcription service timeout"),
        ),
        ("patient-004", "clinician-002", 240, "processing", None),
        ("patient-005", "clinician-003", 300, "completed", None),
    ]
    .iter()
    .enumerate()
    .map(|(i, (p, c, d, s, e))| {
        (
            p.to_string(),
            c.to_string(),
            *d,
            s.to_string(),
            format!("/uploads/audio_{:03}.webm", i + 1),
            e.map(str::to_owned),
        )
    })
    .collect::<Vec<_>>();
    assert_eq!(got, expected);

    let again = run_cli(&db_path, &["seed"]);
    assert_eq!(again.code, Some(1), "refuses to seed a non-empty database");
    assert_eq!(all_recordings(&db_path).await.len(), 5);
}

#[tokio::test]
async fn seed_count_generates_realistic_rows_with_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let out = run_cli(&db_path, &["seed", "--count", "10000"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let db = open_db(&db_path).await;
    let store = clinscribe::recordings::store::open(&clinscribe::db::Database::Sqlite(db.clone()));
    assert_eq!(store.count().await.unwrap(), 10_000);
    let by_status = store.count_by_status().await.unwrap();
    assert_eq!(by_status.len(), 6, "every status present: {by_status:?}");
    assert!(store.count_by_clinician().await.unwrap().len() >= 40);
    let (oldest, newest): (String, String) =
        sqlx::query_as("SELECT min(created_at), max(created_at) FROM recordings")
            .fetch_one(db.readers())
            .await
            .unwrap();
    assert!(
        oldest < newest && oldest.as_str() < "2025-12-31",
        "{oldest} .. {newest}"
    );
    let with_transcripts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recordings WHERE transcript IS NOT NULL AND verification_results IS NOT NULL",
    )
    .fetch_one(db.readers())
    .await
    .unwrap();
    assert!(with_transcripts > 3000, "{with_transcripts}");
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.writer())
        .await
        .unwrap();
    assert_eq!(journal_mode, "wal", "the bulk load returns the file to WAL");
    db.close().await;
    assert!(!sibling(&db_path, "-journal").exists());

    // The bulk load skips CHECK constraints; `check` (integrity_check) verifies
    // every one of them on every row.
    let check = run_cli(&db_path, &["check"]);
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("recordings: 10000 row(s)"),
        "{}",
        check.stdout
    );
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_count_while_a_server_runs_goes_in_batches_beside_its_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = ServerProcess::start(&db_path);
    let seeding = {
        let db_path = db_path.clone();
        tokio::task::spawn_blocking(move || {
            run_cli(&db_path, &["seed", "--count", "20000", "--force"])
        })
    };
    let http = client();
    let mut created = 0;
    while !seeding.is_finished() {
        let response = http
            .post(server.url("/api/v1/recordings"))
            .json(&json!({"patient_id": "patient-during-seed", "duration_seconds": 30}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        created += 1;
    }
    let out = seeding.await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Seeded 20000 recording(s)"),
        "{}",
        out.stdout
    );
    assert!(created > 0);
    server.terminate();
    assert_eq!(all_recordings(&db_path).await.len(), 20_000 + created);
    assert_eq!(run_cli(&db_path, &["check"]).code, Some(0));
}

#[tokio::test]
async fn seed_count_with_the_file_open_elsewhere_falls_back_to_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["migrate"]).code, Some(0));
    // Another process's connection (here: this test's), which is no server.
    let other = open_db(&db_path).await;
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM recordings")
        .fetch_one(other.readers())
        .await
        .unwrap();
    let out = run_cli(&db_path, &["seed", "--count", "3000"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("another process has it open; seeding in batches instead"),
        "{}",
        out.stderr
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM recordings")
        .fetch_one(other.readers())
        .await
        .unwrap();
    assert_eq!(count, 3000);
    other.close().await;
}

#[test]
fn kill_9_during_a_bulk_seed_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["seed"]).code, Some(0));
    let mut seeding = std::process::Command::new(common::binary())
        .args(["seed", "--count", "5000000", "--force"])
        .env(
            "PWA_DATABASE_URL",
            format!("sqlite://{}", db_path.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the load has spilled past its page cache into the file
    // itself (the rollback journal holding what those pages were before).
    let journal = sibling(&db_path, "-journal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&db_path).unwrap().len() < 64 << 20 {
        assert!(Instant::now() < deadline, "the load never reached the file");
        assert!(seeding.try_wait().unwrap().is_none(), "seed exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(journal.exists());
    seeding.kill().unwrap();
    seeding.wait().unwrap();

    // The next command to open the file rolls the load back from the journal.
    let out = run_cli(&db_path, &["check"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("recordings: 5 row(s)"),
        "{}",
        out.stdout
    );
    assert!(!journal.exists());
    let server = ServerProcess::start(&db_path);
    server.terminate();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (rows, mode) = rt.block_on(async {
        let db = open_db(&db_path).await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.writer())
            .await
            .unwrap();
        let rows = all_recordings(&db_path).await.len();
        db.close().await;
        (rows, mode)
    });
    assert_eq!((rows, mode.as_str()), (5, "wal"));
}
