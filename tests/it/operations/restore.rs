//! `clinscribe restore`: brings back exactly what was backed up, refuses what it must.

use super::{backup_path_from, file_bytes};
use crate::common::{ServerProcess, all_recordings, client, open_db, run_cli};
use clinscribe::config::DatabaseSettings;
use clinscribe::db::SqliteDatabase;
use serde_json::{Value, json};

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
    // The restored trail: the backup's events, then one saying it was restored.
    let db = crate::common::open_db(&db_path).await;
    let (seq, actor, action, changes): (i64, String, String, String) = sqlx::query_as(
        "SELECT seq, actor, action, changes FROM audit_events ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(db.readers())
    .await
    .unwrap();
    db.close().await;
    assert_eq!((actor.as_str(), action.as_str()), ("system:cli", "restore"));
    // Seed: its event, then 4 development users (clinician-001..003, admin),
    // each added and given a token.
    let restore_event = 1 + 4 * 2 + 3 + 1;
    assert_eq!(
        seq, restore_event,
        "after the seed's events and the 3 creates in the backup"
    );
    assert!(changes.contains(r#""recordings":8"#), "{changes}");
    assert!(
        restored
            .stdout
            .contains(&format!("audit:      event {restore_event}")),
        "{}",
        restored.stdout
    );
    let verified = run_cli(&db_path, &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
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
