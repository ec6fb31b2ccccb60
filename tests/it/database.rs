//! Connection settings and migrations on real SQLite files.

use crate::common;

use clinscribe::config::{DatabaseSettings, SqliteSynchronous};
use clinscribe::db::migrations::{self, MigrationState};
use clinscribe::db::{Database, SqliteDatabase};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};

async fn pragmas(conn: &mut PoolConnection<Sqlite>) -> (String, i64, i64, i64) {
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    (journal, synchronous, busy, fk)
}

/// Holds every connection of the pool at once, so each one is checked.
async fn all_connections(pool: &SqlitePool) -> Vec<PoolConnection<Sqlite>> {
    let n = pool.options().get_max_connections();
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(pool.acquire().await.unwrap());
    }
    conns
}

#[tokio::test]
async fn every_pooled_connection_has_the_originals_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteDatabase::open(&DatabaseSettings::sqlite(
        dir.path().join("data/sub/clinical.db"),
    ))
    .await
    .unwrap();
    assert!(
        dir.path().join("data/sub/clinical.db").exists(),
        "data directory created"
    );
    let mut checked = 0;
    for pool in [db.writer(), db.readers()] {
        for mut conn in all_connections(pool).await {
            // synchronous: 1 = NORMAL
            assert_eq!(pragmas(&mut conn).await, ("wal".to_owned(), 1, 5000, 1));
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "writer and at least two readers checked, got {checked}"
    );
    db.close().await;
}

#[tokio::test]
async fn synchronous_full_is_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = DatabaseSettings::sqlite(dir.path().join("c.db"));
    settings.synchronous = SqliteSynchronous::Full;
    let db = SqliteDatabase::open(&settings).await.unwrap();
    for pool in [db.writer(), db.readers()] {
        for mut conn in all_connections(pool).await {
            // synchronous: 2 = FULL
            assert_eq!(pragmas(&mut conn).await.1, 2);
        }
    }
}

#[tokio::test]
async fn bundled_sqlite_is_recent_enough() {
    let app = common::TestApp::new().await;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(app.sqlite().readers())
        .await
        .unwrap();
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts >= vec![3, 51, 3],
        "SQLite {version} carries the WAL-reset bug"
    );
}

#[tokio::test]
async fn readers_cannot_write() {
    let app = common::TestApp::new().await;
    let err = sqlx::query("DELETE FROM recordings")
        .execute(app.sqlite().readers())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}

#[tokio::test]
async fn migrations_build_the_schema_from_nothing_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DatabaseSettings::sqlite(dir.path().join("clinical.db"));

    let db = SqliteDatabase::open_without_migrating(&settings)
        .await
        .unwrap();
    let before = migrations::status(&Database::Sqlite(db.clone()))
        .await
        .unwrap();
    assert!(!before.is_empty());
    assert!(before.iter().all(|m| m.state == MigrationState::Pending));
    assert!(before.iter().all(|m| m.checksum.len() == 96), "sha384 hex");
    db.close().await;

    let db = SqliteDatabase::open(&settings).await.unwrap();
    let after = migrations::status(&Database::Sqlite(db.clone()))
        .await
        .unwrap();
    assert!(after.iter().all(|m| m.state == MigrationState::Applied));
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('recordings') ORDER BY cid")
            .fetch_all(db.readers())
            .await
            .unwrap();
    assert_eq!(
        columns,
        [
            "id",
            "patient_id",
            "clinician_id",
            "audio_file_path",
            "audio_file_size",
            "duration_seconds",
            "status",
            "error_message",
            "retry_count",
            "created_at",
            "updated_at",
            "uploaded_at",
            "processed_at",
            "transcript",
            "verification_results",
            "local_storage_key",
            "draft_transcript",
            "final_transcript",
            "upload_attempts",
            "audio_sha256",
            "audio_content_type",
            "whisper_model",
            "transcription_started_at",
            "transcription_completed_at",
            "fhir_bundle",
            "llm_model",
            "extraction_started_at",
            "extraction_completed_at",
            "verification_score",
            "verified_at",
            "transcript_language",
            "transcript_segments",
            "version",
            "signed_at",
            "signed_by",
            "signed_sha256",
            "amendments",
            "deleted_at",
            "change_seq",
            "acknowledgements",
        ]
    );
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recordings' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(db.readers())
    .await
    .unwrap();
    for expected in [
        "ix_recordings_patient_id",
        "ix_recordings_clinician_id",
        "ix_recordings_status",
        "ix_recordings_created_at",
        "ix_recordings_clinician_created",
        "ix_recordings_clinician_status_created",
        "ux_recordings_clinician_local_storage_key",
        "ix_recordings_changes",
        "ix_recordings_deleted",
    ] {
        assert!(
            indexes.iter().any(|i| i == expected),
            "missing index {expected}: {indexes:?}"
        );
    }
    // The status CHECK holds even for SQL that bypasses the API.
    let now = "2026-01-01T00:00:00.000000Z";
    let err = sqlx::query(
        "INSERT INTO recordings (id, patient_id, clinician_id, status, created_at, updated_at) VALUES ('x', 'p', 'c', 'done', ?1, ?1)",
    )
    .bind(now)
    .execute(db.writer())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
    db.close().await;

    // A second start changes nothing.
    let db = SqliteDatabase::open(&settings).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(db.readers())
        .await
        .unwrap();
    assert_eq!(applied as usize, after.len());
    assert_eq!(
        migrations::status(&Database::Sqlite(db.clone()))
            .await
            .unwrap(),
        after
    );
}

/// `EXPLAIN QUERY PLAN` of the hot queries: an index, never a full scan.
#[tokio::test]
async fn hot_queries_use_their_indexes() {
    let app = common::TestApp::new().await;
    use clinscribe::recordings::store::sql;
    let cases = [
        ("get", sql::GET, 1),
        ("update status", sql::UPDATE_STATUS, 5),
        ("get as JSON", sql::GET_JSON, 1),
        ("list", sql::LIST, 2),
        ("list by status", sql::LIST_BY_STATUS, 3),
        ("list page n", sql::LIST_AFTER, 4),
        ("list by status page n", sql::LIST_BY_STATUS_AFTER, 5),
        ("list goes on", sql::LIST_MORE, 3),
        ("list by status goes on", sql::LIST_BY_STATUS_MORE, 4),
    ];
    for (name, sql, params) in cases {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
        for _ in 0..params {
            q = q.bind("x");
        }
        let plan: Vec<String> = q
            .fetch_all(app.sqlite().readers())
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.3)
            .collect();
        let joined = plan.join(" | ");
        println!("{name}: {joined}");
        // Every access to the table goes through an index, in index order (the
        // list's JSON aggregate may sort the ≤ 1,001 rows of its page).
        let table_steps: Vec<&String> = plan.iter().filter(|s| s.contains("recordings")).collect();
        assert!(!table_steps.is_empty(), "{name}: {joined}");
        assert!(
            table_steps
                .iter()
                .all(|s| s.starts_with("SEARCH recordings USING INDEX")
                    || s.starts_with("SEARCH recordings USING COVERING INDEX")),
            "{name}: {joined}"
        );
        assert!(
            !joined.contains("USE TEMP B-TREE FOR ORDER BY"),
            "{name} sorts the table's rows instead of reading them in index order: {joined}"
        );
    }
}

/// Commits never checkpoint (`wal_autocheckpoint=0`); the background task
/// copies committed pages into the database file within moments.
#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background() {
    let app = common::TestApp::new().await;
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(app.sqlite().writer())
        .await
        .unwrap();
    assert_eq!(autocheckpoint, 0);
    let main_file = || std::fs::metadata(app.db_path()).unwrap().len();
    let before = main_file();
    let rows = clinscribe::recordings::seed::Generator::new(
        3000,
        clinscribe::timestamp::Timestamp::now(),
        3,
    )
    .next_batch(3000);
    app.state.recordings.insert_batch(&rows).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while main_file() < before + 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: main file still {} bytes",
            main_file()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
