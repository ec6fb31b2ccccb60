//! `clinscribe backup` and scheduled backups: consistent under writers, never overwriting, pruned.

use super::{backup_path_from, backups_in, integrity};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, ServerProcess, client, open_db, run_cli};
use serde_json::{Value, json};

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

#[test]
fn a_bad_keep_for_backup_is_a_setting_error() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let out = run_cli(&db_path, &["backup", "--keep", "0"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("PWA_BACKUP_KEEP"), "{}", out.stderr);
    assert!(!dir.path().join("backups").exists(), "nothing written");
}
