//! Operations: backup, restore, seed, check, vacuum, adoption of the original's
//! database, scheduled backups — with the real binary where processes matter.

use crate::common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ServerProcess, all_recordings, client, open_db, run_cli};
use clinscribe::config::DatabaseSettings;
use clinscribe::db::SqliteDatabase;
use clinscribe::db::sqlite::adopt::{self, DatabaseKind};
use serde_json::{Value, json};

fn backups_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("clinical_")
    });
    v.sort();
    v
}

fn backup_path_from(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backup:"))
        .expect("backup line");
    PathBuf::from(line.trim_start_matches("backup:").trim())
}

async fn integrity(path: &Path) -> String {
    let db = open_db(path).await;
    let r: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(db.readers())
        .await
        .unwrap();
    db.close().await;
    r
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_8_writers_is_consistent_and_never_stalls_them() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let seeded = run_cli(&db_path, &["seed", "--count", "30000"]);
    assert_eq!(seeded.code, Some(0), "{}", seeded.stderr);

    let server = ServerProcess::start(&db_path);
    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (http, url, stop) = (http.clone(), server.url("/api/v1/recordings"), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new(); // (id, acknowledged at)
                let mut worst = Duration::ZERO;
                let mut errors = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 20_000 {
                    n += 1;
                    let started = Instant::now();
                    let r = http
                        .post(&url)
                        .json(&json!({"patient_id": format!("w{w}-{n}"), "duration_seconds": 30}))
                        .send()
                        .await
                        .unwrap();
                    worst = worst.max(started.elapsed());
                    if r.status() != 201 {
                        errors.push(r.status().as_u16());
                        continue;
                    }
                    let body: Value = r.json().await.unwrap();
                    acked.push((body["id"].as_str().unwrap().to_owned(), Instant::now()));
                }
                (acked, worst, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup_started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let db_path = db_path.clone();
        move || run_cli(&db_path, &["backup", "--dest", "backups"])
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("integrity:  ok"), "{}", out.stdout);

    let mut before_backup = HashSet::new();
    let mut total = 0;
    for w in writers {
        let (acked, worst, errors) = w.await.unwrap();
        assert!(errors.is_empty(), "writer saw errors: {errors:?}");
        assert!(worst < Duration::from_secs(1), "a writer waited {worst:?}");
        total += acked.len();
        before_backup.extend(
            acked
                .into_iter()
                .filter(|(_, at)| *at < backup_started)
                .map(|(id, _)| id),
        );
    }
    assert!(
        total > 100 && !before_backup.is_empty(),
        "writers made progress: {total}"
    );
    drop(server);

    let backup = backup_path_from(&out.stdout);
    assert!(
        backup.starts_with(dir.path().join("backups")),
        "{}",
        backup.display()
    );
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("clinical_")
            && name.ends_with(".db")
            && name.len() == "clinical_20261128_101010.db".len()
    );
    assert_eq!(integrity(&backup).await, "ok");
    let db = open_db(&backup).await;
    let ids: HashSet<String> = sqlx::query_scalar("SELECT id FROM recordings")
        .fetch_all(db.readers())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<_> = before_backup.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged recordings missing from the backup",
        missing.len()
    );
    assert!(ids.len() >= 30_000 + before_backup.len());
}

#[test]
fn backups_never_overwrite_and_keep_prunes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["seed"]).code, Some(0));
    let mut made = Vec::new();
    for _ in 0..4 {
        let out = run_cli(&db_path, &["backup", "--dest", "b", "--keep", "3"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains("recordings: 5"), "{}", out.stdout);
        made.push(backup_path_from(&out.stdout));
    }
    let unique: HashSet<_> = made.iter().collect();
    assert_eq!(unique.len(), 4, "each backup got its own name: {made:?}");
    let left = backups_in(&dir.path().join("b"));
    assert_eq!(left.len(), 3);
    assert!(
        !left
            .iter()
            .any(|p| p.ends_with(made[0].file_name().unwrap())),
        "the oldest was pruned"
    );
    let partials = std::fs::read_dir(dir.path().join("b")).unwrap().count();
    assert_eq!(partials, 3, "no temporary files left behind");

    let missing = run_cli(&dir.path().join("nope.db"), &["backup", "--dest", "b"]);
    assert_eq!(missing.code, Some(1));
    assert_eq!(missing.stderr.lines().count(), 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_round_trip_brings_back_exactly_the_backed_up_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["seed"]).code, Some(0));
    let server = ServerProcess::start(&db_path);
    let http = client();
    for i in 0..3 {
        let r = http
            .post(server.url("/api/v1/recordings"))
            .json(&json!({"patient_id": format!("before-{i}"), "duration_seconds": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let out = run_cli(&db_path, &["backup", "--dest", "b"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let backup = backup_path_from(&out.stdout);
    let backed_up = all_recordings(&backup).await;
    assert_eq!(backed_up.len(), 8);
    for i in 0..4 {
        let r = http
            .post(server.url("/api/v1/recordings"))
            .json(&json!({"patient_id": format!("after-{i}"), "duration_seconds": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    // Refused while the server runs, changing nothing.
    let refused = run_cli(&db_path, &["restore", backup.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused
            .stderr
            .contains("in use by a running clinscribe server"),
        "{}",
        refused.stderr
    );
    assert_eq!(server.terminate(), Some(0));
    let current = all_recordings(&db_path).await;
    assert_eq!(current.len(), 12);

    let restored = run_cli(&db_path, &["restore", backup.to_str().unwrap()]);
    assert_eq!(restored.code, Some(0), "{}", restored.stderr);
    assert!(
        restored.stdout.contains("recordings: 8"),
        "{}",
        restored.stdout
    );
    assert_eq!(
        all_recordings(&db_path).await,
        backed_up,
        "exactly the backed-up rows"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("clinical.db.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        all_recordings(&kept[0]).await,
        current,
        "the replaced database is kept whole"
    );

    // The server starts on the restored database.
    let server = ServerProcess::start(&db_path);
    let health: Value = server.get_json("/api/v1/health").await;
    assert_eq!(health["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_corrupt_and_foreign_files_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(
        run_cli(&db_path, &["seed", "--count", "2000"]).code,
        Some(0)
    );
    let out = run_cli(&db_path, &["backup", "--dest", "b"]);
    let backup = backup_path_from(&out.stdout);

    // A corrupt copy: garbage over its middle pages.
    let corrupt = dir.path().join("corrupt.db");
    let mut bytes = std::fs::read(&backup).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0xA5;
    }
    std::fs::write(&corrupt, bytes).unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "this is not a database\n".repeat(100)).unwrap();
    let foreign = dir.path().join("foreign.db");
    {
        let db = SqliteDatabase::open_without_migrating(&DatabaseSettings::sqlite(&foreign))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            .execute(db.writer())
            .await
            .unwrap();
        db.close().await;
    }

    let before = file_bytes(&db_path);
    for (file, expect) in [
        (&corrupt, "not a valid database"),
        (&text, "not a valid database"),
        (&foreign, "not a clinscribe database"),
        (&dir.path().join("missing.db"), "is not a file"),
    ] {
        let out = run_cli(&db_path, &["restore", file.to_str().unwrap()]);
        assert_eq!(out.code, Some(1), "{}", file.display());
        assert!(
            out.stderr.contains(expect),
            "{}: {}",
            file.display(),
            out.stderr
        );
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
        assert_eq!(
            file_bytes(&db_path),
            before,
            "database unchanged after refusing {}",
            file.display()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("before-restore") || n.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

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

#[tokio::test]
async fn check_reports_a_row_that_breaks_a_check_constraint() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["seed"]).code, Some(0));
    let db = open_db(&db_path).await;
    let mut conn = db.writer().acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE recordings SET created_at = '28/11/2026' WHERE patient_id = 'patient-001'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    db.close().await;
    let out = run_cli(&db_path, &["check"]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("CHECK constraint failed in recordings"),
        "{}",
        out.stdout
    );
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

#[tokio::test]
async fn check_reports_ok_and_fails_on_an_edited_migration() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["seed"]).code, Some(0));
    let out = run_cli(&db_path, &["check"]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("integrity:     ok"), "{}", out.stdout);
    assert!(
        out.stdout.contains("recordings: 5 row(s)"),
        "{}",
        out.stdout
    );

    let db = open_db(&db_path).await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00'")
        .execute(db.writer())
        .await
        .unwrap();
    db.close().await;
    let out = run_cli(&db_path, &["check"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("edited after it was applied"),
        "{}",
        out.stderr
    );

    let missing = run_cli(&dir.path().join("missing.db"), &["check"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        !dir.path().join("missing.db").exists(),
        "check never creates a database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_reclaims_space_and_refuses_full_vacuum_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(
        run_cli(&db_path, &["seed", "--count", "20000"]).code,
        Some(0)
    );
    let db = open_db(&db_path).await;
    sqlx::query("DELETE FROM recordings WHERE status = 'completed'")
        .execute(db.writer())
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM recordings")
        .fetch_one(db.readers())
        .await
        .unwrap();
    db.close().await;

    let server = ServerProcess::start(&db_path);
    let full = run_cli(&db_path, &["vacuum", "--full"]);
    assert_eq!(full.code, Some(1));
    assert!(full.stderr.contains("in use"), "{}", full.stderr);
    let out = run_cli(&db_path, &["vacuum"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let reclaimed: u64 = out
        .stdout
        .lines()
        .find(|l| l.starts_with("reclaimed:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("reclaimed bytes");
    assert!(
        reclaimed > 1_000_000,
        "reclaimed only {reclaimed} bytes:\n{}",
        out.stdout
    );
    let copy = dir.path().join("compact.db");
    let into = run_cli(&db_path, &["vacuum", "--into", copy.to_str().unwrap()]);
    assert_eq!(into.code, Some(0), "{}", into.stderr);
    assert_eq!(server.terminate(), Some(0));

    assert_eq!(integrity(&db_path).await, "ok");
    assert_eq!(all_recordings(&db_path).await.len() as i64, left);
    assert_eq!(integrity(&copy).await, "ok");
    assert_eq!(all_recordings(&copy).await.len() as i64, left);
    let full = run_cli(&db_path, &["vacuum", "--full"]);
    assert_eq!(full.code, Some(0), "{}", full.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_prune_and_survive_failures() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let backups = dir.path().join("scheduled");
    let server = ServerProcess::start_with_env(
        &db_path,
        &[
            ("PWA_BACKUP_INTERVAL", "1s"),
            ("PWA_BACKUP_DIR", backups.to_str().unwrap()),
            ("PWA_BACKUP_KEEP", "2"),
        ],
    );
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let made = backups_in(&backups);
    assert_eq!(made.len(), 2, "{made:?}");
    for b in &made {
        assert_eq!(integrity(b).await, "ok");
    }
    assert_eq!(server.terminate(), Some(0));

    // A backup directory that cannot be created: logged, the server keeps serving.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let server = ServerProcess::start_with_env(
        &db_path,
        &[
            ("PWA_BACKUP_INTERVAL", "1s"),
            ("PWA_BACKUP_DIR", blocker.join("sub").to_str().unwrap()),
        ],
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let health = client()
        .get(server.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_bad_backup_setting_stops_serve_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    for (var, value) in [
        ("PWA_BACKUP_INTERVAL", "sometimes"),
        ("PWA_BACKUP_KEEP", "0"),
    ] {
        let out = std::process::Command::new(common::binary())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env(
                "PWA_DATABASE_URL",
                format!("sqlite://{}", db_path.display()),
            )
            .env("PWA_BACKUP_INTERVAL", "1h")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(var));
    }
}

// ---- adopting the original's database ----

fn fixture(dir: &Path) -> PathBuf {
    let db = dir.join("clinical.db");
    std::fs::copy("tests/fixtures/original-seeded.db", &db).unwrap();
    db
}

fn expected_rows() -> Vec<Value> {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/original-seeded.json").unwrap(),
    )
    .unwrap();
    let mut rows: Vec<Value> = doc["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            // Every field the original had, and the upload fields it lacked, empty.
            let mut row = r["expected"].clone();
            let object = row.as_object_mut().unwrap();
            for field in [
                "local_storage_key",
                "draft_transcript",
                "final_transcript",
                "audio_sha256",
                "audio_content_type",
            ] {
                object.insert(field.into(), Value::Null);
            }
            object.insert("upload_attempts".into(), 0.into());
            row
        })
        .collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    assert_eq!(rows.len() as u64, doc["count"].as_u64().unwrap());
    rows
}

fn kept_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.to_string_lossy().contains("before-clinscribe-")
                && !p.to_string_lossy().ends_with("-wal")
        })
        .collect()
}

#[tokio::test]
async fn the_originals_database_is_adopted_with_every_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = fixture(dir.path());
    assert_eq!(
        adopt::identify(&db_path).await.unwrap(),
        DatabaseKind::Original
    );

    let db = SqliteDatabase::open(&DatabaseSettings::sqlite(&db_path))
        .await
        .unwrap();
    db.close().await;
    assert_eq!(
        adopt::identify(&db_path).await.unwrap(),
        DatabaseKind::Clinscribe
    );
    assert_eq!(all_recordings(&db_path).await, expected_rows());

    let copies = kept_copies(dir.path());
    assert_eq!(copies.len(), 1);
    assert_eq!(
        std::fs::read(&copies[0]).unwrap(),
        std::fs::read("tests/fixtures/original-seeded.db").unwrap(),
        "exact copy"
    );
    assert!(!dir.path().join("clinical.db.adopting").exists());

    // A second start does nothing.
    let before = file_bytes(&db_path);
    let db = SqliteDatabase::open(&DatabaseSettings::sqlite(&db_path))
        .await
        .unwrap();
    db.close().await;
    assert_eq!(kept_copies(dir.path()).len(), 1);
    assert_eq!(all_recordings(&db_path).await, expected_rows());
    assert_eq!(file_bytes(&db_path).len(), before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_adopts_the_original_and_answers_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = fixture(dir.path());
    let server = ServerProcess::start(&db_path);
    for row in expected_rows() {
        // The original's hyphen-less id form works too.
        let simple = row["id"].as_str().unwrap().replace('-', "");
        let got: Value = server
            .get_json(&format!("/api/v1/recordings/{simple}"))
            .await;
        assert_eq!(got, row);
    }
    let listed: Vec<Value> = server.get_json("/api/v1/recordings").await;
    assert_eq!(listed.len(), 2, "current-clinician's two recordings");
    assert_eq!(server.terminate(), Some(0));

    let out = run_cli(&db_path, &["migrate"]);
    assert_eq!(out.code, Some(0));
    assert!(
        !out.stdout.contains("adopted"),
        "second time: nothing to adopt\n{}",
        out.stdout
    );
    assert_eq!(kept_copies(dir.path()).len(), 1);
}

#[test]
fn migrate_reports_adoption() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = fixture(dir.path());
    let status = run_cli(&db_path, &["migrate", "--status"]);
    assert!(
        status.stdout.contains("original Python service"),
        "{}",
        status.stdout
    );
    assert!(
        kept_copies(dir.path()).is_empty(),
        "--status changes nothing"
    );
    let out = run_cli(&db_path, &["migrate"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("adopted the original service's database: 7 recording(s)"),
        "{}",
        out.stdout
    );
}

/// The table-rebuild pattern of docs/MIGRATIONS.md, proven on real rows.
#[tokio::test]
async fn a_table_rebuild_migration_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(
        run_cli(&db_path, &["seed", "--count", "3000"]).code,
        Some(0)
    );
    let before = all_recordings(&db_path).await;

    // This binary's migrations plus a test-only one that rebuilds `recordings`.
    let folder = dir.path().join("migrations");
    std::fs::create_dir(&folder).unwrap();
    for entry in std::fs::read_dir("migrations/sqlite").unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
    }
    std::fs::copy(
        "tests/fixtures/migrations/29991231000000_rebuild_recordings.sql",
        folder.join("29991231000000_rebuild_recordings.sql"),
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(folder.as_path())
        .await
        .unwrap();
    let db = open_db(&db_path).await;
    migrator.run(db.writer()).await.unwrap();
    let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'recordings'")
        .fetch_one(db.readers())
        .await
        .unwrap();
    assert!(
        sql.contains("length(patient_id) BETWEEN 1 AND 128"),
        "rebuilt with the new constraint: {sql}"
    );
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recordings' AND sql IS NOT NULL",
    )
    .fetch_one(db.readers())
    .await
    .unwrap();
    assert_eq!(indexes, 7, "indexes recreated");
    db.close().await;
    assert_eq!(all_recordings(&db_path).await, before);
    assert_eq!(integrity(&db_path).await, "ok");
}

#[tokio::test]
async fn a_failed_adoption_leaves_the_original_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = fixture(dir.path());
    {
        // One row the conversion cannot read: an unknown status.
        let db = open_db(&db_path).await;
        sqlx::query("UPDATE recordings SET status = 'archived' WHERE patient_id = 'patient-004'")
            .execute(db.writer())
            .await
            .unwrap();
        db.close().await;
    }
    let before = file_bytes(&db_path);
    let err = SqliteDatabase::open(&DatabaseSettings::sqlite(&db_path))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot adopt recording"), "{err}");
    assert!(err.to_string().contains("status"), "{err}");
    assert_eq!(
        adopt::identify(&db_path).await.unwrap(),
        DatabaseKind::Original
    );
    assert_eq!(file_bytes(&db_path), before, "the original is untouched");
    assert!(
        !dir.path().join("clinical.db.adopting").exists(),
        "no staging file left"
    );
    let out = run_cli(&db_path, &["migrate"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn restore_refuses_a_database_from_a_newer_clinscribe() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    assert_eq!(run_cli(&db_path, &["seed"]).code, Some(0));
    let newer = dir.path().join("newer.db");
    assert_eq!(run_cli(&newer, &["seed"]).code, Some(0));
    {
        let db = open_db(&newer).await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (29991231000000, 'from the future', 1, X'00', 0)",
        )
        .execute(db.writer())
        .await
        .unwrap();
        db.close().await;
    }
    let before = file_bytes(&db_path);
    let out = run_cli(&db_path, &["restore", newer.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("newer clinscribe"), "{}", out.stderr);
    assert_eq!(file_bytes(&db_path), before);
}

#[test]
fn a_bad_keep_for_backup_is_a_setting_error() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let out = run_cli(&db_path, &["backup", "--keep", "0"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("PWA_BACKUP_KEEP"), "{}", out.stderr);
    assert!(!dir.path().join("backups").exists(), "nothing written");
}
