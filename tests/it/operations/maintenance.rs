//! `clinscribe check` and `clinscribe vacuum`.

use super::integrity;
use crate::common::{ServerProcess, all_recordings, open_db, run_cli};

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
    sqlx::query("UPDATE recordings SET created_at = '28/11/2026', version = version + 1 WHERE patient_id = 'patient-001'")
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
