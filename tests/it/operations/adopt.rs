//! Adopting the original service's database: every row and field, on `serve` and `migrate`, and nothing lost when it fails.

use super::{file_bytes, integrity};
use std::path::{Path, PathBuf};

use crate::common::{ServerProcess, all_recordings, open_db, run_cli};
use clinscribe::config::DatabaseSettings;
use clinscribe::db::SqliteDatabase;
use clinscribe::db::sqlite::adopt::{self, DatabaseKind};
use serde_json::Value;

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
            insert_later_columns(object);
            row
        })
        .collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    assert_eq!(rows.len() as u64, doc["count"].as_u64().unwrap());
    rows
}

/// The columns the original's first version lacked, as adoption leaves them:
/// its migration's default model, version 1, the rest empty.
fn insert_later_columns(object: &mut serde_json::Map<String, Value>) {
    object.insert("whisper_model".into(), "base".into());
    object.insert("version".into(), 1.into());
    object.insert("amendments".into(), Value::Array(Vec::new()));
    object.insert("acknowledgements".into(), Value::Array(Vec::new()));
    for field in [
        "signed_at",
        "signed_by",
        "signed_sha256",
        "transcription_started_at",
        "transcription_completed_at",
        "transcript_language",
        "transcript_segments",
        "fhir_bundle",
        "llm_model",
        "extraction_started_at",
        "extraction_completed_at",
        "verification_score",
        "verified_at",
    ] {
        object.entry(field).or_insert(Value::Null);
    }
}

/// The rows of `original-head.json` (the original's latest version, 28
/// columns) as adoption must leave them: ids hyphenated, times RFC 3339 UTC,
/// every value otherwise equal; the columns only we have, empty.
fn expected_head_rows() -> Vec<Value> {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/original-head.json").unwrap(),
    )
    .unwrap();
    let mut rows: Vec<Value> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut row = r.clone();
            let object = row.as_object_mut().unwrap();
            assert_eq!(
                object.len(),
                28,
                "the original's latest version has 28 columns"
            );
            for (name, value) in object.iter_mut() {
                if let Value::String(text) = value {
                    if name == "id" {
                        *text = uuid::Uuid::parse_str(text)
                            .unwrap()
                            .hyphenated()
                            .to_string();
                    } else if name.ends_with("_at") {
                        assert_eq!(text.len(), 26, "{name}: {text}");
                        *text = format!("{}Z", text.replacen(' ', "T", 1));
                    }
                }
            }
            object.insert("audio_sha256".into(), Value::Null);
            object.insert("audio_content_type".into(), Value::Null);
            insert_later_columns(object);
            row
        })
        .collect();
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
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
    // The adopted database's trail begins with the adoption, then the reads.
    let events = run_cli(&db_path, &["audit", "export"]);
    let first: Value = serde_json::from_str(events.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["action"], "adopt");
    assert_eq!(first["actor"], "system:adopt");
    assert_eq!(first["changes"]["recordings"], 7);
    assert!(
        first["changes"]["original_kept_as"]
            .as_str()
            .unwrap()
            .contains(".before-clinscribe-")
    );
    assert_eq!(
        events
            .stdout
            .lines()
            .filter(|l| l.contains(r#""action":"adopt""#))
            .count(),
        1
    );

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
    let events = run_cli(&db_path, &["audit", "export"]);
    let lines: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "the adoption: {}", events.stdout);
    assert_eq!(lines[0]["action"], "adopt");
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
    assert_eq!(indexes, 9, "indexes recreated");
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
async fn the_latest_originals_database_is_adopted_with_every_column_of_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    std::fs::copy("tests/fixtures/original-head.db", &db_path).unwrap();
    assert_eq!(
        adopt::identify(&db_path).await.unwrap(),
        DatabaseKind::Original
    );
    let report = adopt::adopt_if_original(&db_path).await.unwrap().unwrap();
    assert_eq!((report.recordings, report.keys_cleared.len()), (8, 0));
    let expected = expected_head_rows();
    let adopted = all_recordings(&db_path).await;
    assert_eq!(adopted.len(), 8);
    for (got, want) in adopted.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    // Four uploads kept their dictation keys, their drafts, and the original's error.
    let with_keys = adopted
        .iter()
        .filter(|r| !r["local_storage_key"].is_null())
        .count();
    assert_eq!(with_keys, 4);
    assert!(
        adopted
            .iter()
            .any(|r| r["draft_transcript"] == "Patient reports chest pain")
    );
}

#[tokio::test]
async fn a_repeated_local_storage_key_is_kept_by_the_oldest_row_and_no_row_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    std::fs::copy("tests/fixtures/original-head.db", &db_path).unwrap();
    // The original's column was not unique: two uploads of one dictation.
    let (older, newer) = (
        "925708e9db50494685fe04712b6492b1",
        "9f443420a5874be8b5e10953c7a74906",
    );
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path.display()))
            .await
            .unwrap();
        sqlx::query(
            "UPDATE recordings SET local_storage_key = \
             (SELECT local_storage_key FROM recordings WHERE id = ?1) WHERE id = ?2",
        )
        .bind(older)
        .bind(newer)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let report = adopt::adopt_if_original(&db_path).await.unwrap().unwrap();
    let newer_id = uuid::Uuid::parse_str(newer)
        .unwrap()
        .hyphenated()
        .to_string();
    assert_eq!(report.recordings, 8);
    assert_eq!(report.keys_cleared, vec![newer_id.clone()]);

    let mut expected = expected_head_rows();
    let older_key = expected
        .iter()
        .find(|r| {
            r["id"]
                == uuid::Uuid::parse_str(older)
                    .unwrap()
                    .hyphenated()
                    .to_string()
        })
        .unwrap()["local_storage_key"]
        .clone();
    assert_eq!(older_key, "f4436a6e-45b9-4e1f-a060-53d1b1afddf4");
    for row in &mut expected {
        if row["id"] == newer_id.as_str() {
            row["local_storage_key"] = Value::Null;
        }
    }
    assert_eq!(all_recordings(&db_path).await, expected);
}
