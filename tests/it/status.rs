//! The operations view (`GET /api/v1/status`): administrators only, with the
//! queue, the recordings by status, the backups, disk space and the engines
//! as they are; the scheduled backups of a real server process show up in it.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use clinscribe::identity::Role;
use serde_json::{Value, json};

use crate::common::{self, ServerProcess, TestApp, client};
use crate::on_both_backends;

async fn token_of(app: &TestApp, id: &str, role: Role) -> String {
    let auth = &app.state.auth;
    auth.add_user(id, id, role, None, None).await.unwrap();
    auth.create_token(id, None).await.unwrap().1
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> crate::common::TestResponse {
    let bearer = format!("Bearer {token}");
    app.send_with(
        Method::GET,
        path,
        &[("authorization", &bearer)],
        String::new(),
    )
    .await
}

on_both_backends!(an_administrator_sees_the_instance_and_a_clinician_is_refused);

async fn an_administrator_sees_the_instance_and_a_clinician_is_refused(app: TestApp) {
    let app = app.with_auth_on();
    let admin = token_of(&app, "chief", Role::Admin).await;
    let clinician = token_of(&app, "dr-a", Role::Clinician).await;
    for n in 0..3 {
        let bearer = format!("Bearer {clinician}");
        let r = app
            .send_with(
                Method::POST,
                "/api/v1/recordings",
                &[
                    ("authorization", &bearer),
                    ("content-type", "application/json"),
                ],
                json!({"patient_id": format!("p-{n}"), "duration_seconds": 5}).to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    let refused = get_as(&app, &clinician, "/api/v1/status").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body,
        json!({"detail": "Only an administrator sees the instance's status"})
    );
    let none = app.get("/api/v1/status").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);

    let r = get_as(&app, &admin, "/api/v1/status").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = &r.body;
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["backend"], app.state.db.backend());
    assert_eq!(s["recordings"], json!([{"status": "pending", "count": 3}]));
    assert_eq!(
        s["engines"],
        json!({"transcription": "no engine", "extraction": "embedded"})
    );
    assert_eq!(s["jobs"], json!([]), "created recordings wait for no job");
    assert_eq!(s["backup"]["directory"], Value::Null);
    assert_eq!(s["backup"]["last_success_at"], Value::Null);
    assert_eq!(s["sessions_active"], 0);
    assert_eq!(s["upload_sessions_open"], 0);
    assert!(s["resident_memory_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(s["open_fds"].as_u64().unwrap() > 3);
    let volumes = s["disk"].as_array().unwrap();
    if app.state.db.backend() == "sqlite" {
        assert_eq!(
            volumes.len(),
            2,
            "the database's and the audio's: {volumes:?}"
        );
        for v in volumes {
            let (free, total) = (
                v["free_bytes"].as_u64().unwrap(),
                v["total_bytes"].as_u64().unwrap(),
            );
            assert!(free > 0 && free <= total, "{v}");
        }
        assert!(s["wal_bytes"].as_u64().is_some());
    } else {
        assert!(volumes.is_empty());
        assert_eq!(s["wal_bytes"], Value::Null);
    }
    // Nothing of a patient in it.
    assert!(!r.text.contains("p-0"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_the_scheduled_backups_of_a_running_server_show() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let server = ServerProcess::start_url(
        &crate::common::sqlite_url(&dir),
        &[
            ("PWA_BACKUP_INTERVAL", "1s"),
            ("PWA_BACKUP_DIR", backups.to_str().unwrap()),
        ],
    );
    // An upload queues a transcription job (no engine runs here: it waits).
    let key = uuid::Uuid::new_v4().to_string();
    let (status, _) = server
        .upload("patient-status", &crate::common::webm(5_000, 1), &key)
        .await;
    assert_eq!(status, 201);
    let started = Instant::now();
    let status = loop {
        let status: Value = server.get_json("/api/v1/status").await;
        if !status["backup"]["last_success_at"].is_null() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let backup = &status["backup"];
    assert_eq!(backup["directory"], backups.to_str().unwrap());
    assert_eq!(backup["every_seconds"], 1);
    assert!(backup["last_duration_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(backup["last_failure_at"], Value::Null);
    let newest = &backup["newest_file"];
    assert!(
        newest["name"].as_str().unwrap().ends_with(".db"),
        "{newest}"
    );
    assert!(newest["bytes"].as_u64().unwrap() > 4096, "{newest}");
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["kind"], "transcribe");
    assert_eq!(jobs[0]["state"], "queued");
    assert_eq!(jobs[0]["count"], 1);
    assert!(jobs[0]["oldest_due_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        status["recordings"],
        json!([{"status": "queued", "count": 1}])
    );
    // The page itself is served to the browser.
    let page = client().get(server.url("/status")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_that_fails_shows_why() {
    let dir = tempfile::tempdir().unwrap();
    // The backup directory would be beneath a file: every backup fails.
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    let backups = dir.path().join("a-file").join("backups");
    let server = ServerProcess::start_url(
        &crate::common::sqlite_url(&dir),
        &[
            ("PWA_BACKUP_INTERVAL", "1s"),
            ("PWA_BACKUP_DIR", backups.to_str().unwrap()),
        ],
    );
    let started = Instant::now();
    let backup = loop {
        let status: Value = server.get_json("/api/v1/status").await;
        if !status["backup"]["last_failure_at"].is_null() {
            break status["backup"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(backup["last_success_at"], Value::Null);
    assert_eq!(backup["newest_file"], Value::Null);
    let why = backup["last_failure"].as_str().unwrap();
    assert!(why.contains("Not a directory"), "{why}");
    assert_eq!(server.terminate(), Some(0));
}
