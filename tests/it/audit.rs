//! The audit trail: each change a clinician makes leaves exactly one event
//! (actor, action, every changed field before and after, request id) in the
//! transaction of the change; a refused request leaves none; the table
//! refuses UPDATE and DELETE; `clinscribe audit verify` finds an event
//! changed, removed or forged by hand; `audit export` writes JSON lines or
//! CSV and is itself audited.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{self, TestApp, run_cli};
use crate::review::{current, get_if_none_match, in_status, patch, tag_of};
use clinscribe::audit::AuditEvent;
use clinscribe::recordings::RecordingStatus;

/// Every event of the database, in the order they happened (a read, spooled
/// on SQLite, enters the chain after a change made just after it).
async fn events(app: &TestApp) -> Vec<AuditEvent> {
    let mut events = app.state.audit.export(None, None, None).await.unwrap();
    events.sort_by(|a, b| (&a.at, a.seq).cmp(&(&b.at, b.seq)));
    events
}

async fn post(app: &TestApp, url: &str, tag: &str, body: Option<Value>) -> common::TestResponse {
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    app.send_with(
        Method::POST,
        url,
        &[("if-match", tag), ("content-type", "application/json")],
        body,
    )
    .await
}

async fn each_change_leaves_one_event_and_a_refused_request_none(app: TestApp) {
    let recording = in_status(&app, RecordingStatus::Completed).await;
    let id = recording["id"].as_str().unwrap();
    // Its creation (POST /api/v1/recordings) is the first event.
    let created = events(&app).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].action, "create");
    assert_eq!(created[0].actor, "current-clinician");
    assert_eq!(
        created[0].changes["patient_id"],
        json!([null, "patient-review"])
    );
    assert_eq!(created[0].changes["status"], json!([null, "pending"]));
    assert!(created[0].changes.get("version").is_none());

    // Refused requests: stale, invalid, without If-Match, an illegal move.
    let stale = patch(&app, id, Some("\"99\""), json!({"final_transcript": "x"})).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let invalid = patch(&app, id, Some(&tag_of(&recording)), json!({"version": 3})).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = patch(&app, id, None, json!({"final_transcript": "x"})).await;
    assert_eq!(missing.status, StatusCode::PRECONDITION_REQUIRED);
    let illegal = patch(
        &app,
        id,
        Some(&tag_of(&recording)),
        json!({"status": "queued"}),
    )
    .await;
    assert_eq!(illegal.status, StatusCode::CONFLICT);
    assert_eq!(
        events(&app).await,
        created,
        "a refused request leaves no event"
    );

    let edited = patch(
        &app,
        id,
        Some(&tag_of(&recording)),
        json!({"final_transcript": "Amlodipine 5 mg daily.", "patient_id": "patient-moved"}),
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK);
    let request_id = edited.headers["x-request-id"].to_str().unwrap().to_owned();
    let signed = post(
        &app,
        &format!("/api/v1/recordings/{id}/sign"),
        &tag_of(&edited.body),
        None,
    )
    .await;
    assert_eq!(signed.status, StatusCode::OK);
    let amended = post(
        &app,
        &format!("/api/v1/recordings/{id}/amendments"),
        &tag_of(&signed.body),
        Some(json!({"text": "And review in 4 weeks.", "reason": "Omitted"})),
    )
    .await;
    assert_eq!(amended.status, StatusCode::CREATED);

    let all: Vec<AuditEvent> = events(&app).await.split_off(1);
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["update", "sign", "amend"]);
    let update = &all[0];
    assert_eq!(update.seq, 2);
    assert_eq!(update.actor, "current-clinician");
    assert_eq!(update.recording_id.as_deref(), Some(id));
    assert_eq!(
        update.patient_id.as_deref(),
        Some("patient-review"),
        "the patient before the change"
    );
    assert_eq!(
        update.changes,
        json!({
            "final_transcript": [null, "Amlodipine 5 mg daily."],
            "patient_id": ["patient-review", "patient-moved"],
        })
    );
    assert_eq!(update.request_id.as_deref(), Some(request_id.as_str()));
    let sign = &all[1];
    assert_eq!(
        sign.changes["signed_by"],
        json!([null, "current-clinician"])
    );
    assert_eq!(
        sign.changes["signed_sha256"][1],
        common::sha256_hex("Amlodipine 5 mg daily.".as_bytes())
    );
    assert_eq!(sign.prev_hash, update.hash);
    let amend = &all[2];
    assert_eq!(amend.changes["amendments"][0], json!([]));
    assert_eq!(amend.changes["amendments"][1][0]["reason"], "Omitted");

    // The history endpoint: the same events, oldest first, as the API shows them.
    let history = app.get(&format!("/api/v1/recordings/{id}/history")).await;
    assert_eq!(history.status, StatusCode::OK);
    let history = history.body.as_array().unwrap().clone();
    assert_eq!(history.len(), 4);
    assert_eq!(history[0]["action"], "create");
    assert_eq!(history[1]["action"], "update");
    assert_eq!(history[1]["actor"], "current-clinician");
    assert_eq!(history[1]["at"], update.at.as_str());
    assert_eq!(history[1]["changes"], update.changes);
    assert_eq!(
        app.get(&format!(
            "/api/v1/recordings/{}/history",
            uuid::Uuid::now_v7()
        ))
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    // Retry and delete, on another recording.
    let failed = in_status(&app, RecordingStatus::Error).await;
    let failed_id = failed["id"].as_str().unwrap();
    let retried = app
        .send(
            Method::POST,
            &format!("/api/v1/recordings/{failed_id}/retry"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    let deleted = app
        .send_with(
            Method::DELETE,
            &format!("/api/v1/recordings/{failed_id}"),
            &[("if-match", &tag_of(&retried.body))],
            Body::empty(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let all = events(&app).await;
    assert_eq!(all.len(), 8);
    // Reading the history was a read of the recording's data.
    assert_eq!(all[4].action, "read");
    assert_eq!(all[4].changes, json!({"read": "history"}));
    assert_eq!(all[5].action, "create");
    assert_eq!(all[6].action, "retry");
    assert_eq!(all[6].changes["status"], json!(["error", "queued"]));
    assert_eq!(all[6].changes["retry_count"], json!([0, 1]));
    assert_eq!(all[7].action, "delete");
    assert_eq!(all[7].changes["deleted_at"][0], Value::Null);
    assert_eq!(all[7].recording_id.as_deref(), Some(failed_id));
    assert_eq!(app.state.audit.verify().await.unwrap(), (8, None));
    let before_read = events(&app).await.len();
    assert_eq!(current(&app, id).await, amended.body);
    assert_eq!(events(&app).await.len(), before_read + 1);
}

/// The events appended since the first `skip` (a test's reads).
async fn events_after(app: &TestApp, skip: usize) -> Vec<AuditEvent> {
    events(app).await.split_off(skip)
}

/// Every read of patient data leaves one `read` event naming what was read
/// (a list or feed page: the ids it returned), committed before the answer;
/// an answer that reveals nothing (304, 404, an empty page) leaves none.
async fn each_read_of_patient_data_leaves_one_event_and_an_answer_without_data_none(app: TestApp) {
    let first = app.create("patient-read-1", 30).await;
    let second = app.create("patient-read-2", 30).await;
    let (id1, id2) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let n = events(&app).await.len();
    assert_eq!(n, 2, "the two creations");

    let one = app.get(&format!("/api/v1/recordings/{id1}")).await;
    assert_eq!(one.status, StatusCode::OK);
    let read = events_after(&app, n).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].action, "read");
    assert_eq!(read[0].actor, "current-clinician");
    assert_eq!(read[0].recording_id.as_deref(), Some(id1));
    assert_eq!(read[0].patient_id.as_deref(), Some("patient-read-1"));
    assert_eq!(read[0].changes, json!({"read": "recording"}));
    assert_eq!(
        read[0].request_id.as_deref(),
        one.headers["x-request-id"].to_str().ok()
    );

    // Nothing revealed: the client's copy is current; no such recording; an empty page.
    let not_modified =
        get_if_none_match(&app, &format!("/api/v1/recordings/{id1}"), &tag_of(&first)).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    let missing = app
        .get(&format!("/api/v1/recordings/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let empty = app.get("/api/v1/recordings?status=error").await;
    assert_eq!(empty.body, json!([]));
    assert_eq!(events(&app).await.len(), n + 1, "no event without data");

    // A list page and a feed page: one event each, with the ids returned, in order.
    let list = app.get("/api/v1/recordings?limit=1").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let feed = app.get("/api/v1/changes").await;
    assert_eq!(feed.status, StatusCode::OK);
    let history = app.get(&format!("/api/v1/recordings/{id2}/history")).await;
    assert_eq!(history.status, StatusCode::OK);
    let read = events_after(&app, n + 1).await;
    let what: Vec<&Value> = read.iter().map(|e| &e.changes).collect();
    assert_eq!(
        what,
        [
            &json!({"read": "list", "ids": [id2]}),
            &json!({"read": "changes", "ids": [id1, id2]}),
            &json!({"read": "history"}),
        ]
    );
    assert!(
        read[..2]
            .iter()
            .all(|e| e.patient_id.is_none() && e.recording_id.is_none())
    );
    assert_eq!(read[2].patient_id.as_deref(), Some("patient-read-2"));

    // Audio: each answer with audio in it (whole or a range) is a read; a 304 is not.
    let uploaded = app
        .upload_audio("patient-audio", &common::webm(4_000, 7))
        .await;
    let audio_id = uploaded["id"].as_str().unwrap();
    let n = events(&app).await.len();
    let url = format!("/api/v1/recordings/{audio_id}/audio");
    let (status, headers, _) = app.get_bytes(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = app.get_bytes(&url, &[("range", "bytes=0-99")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let (status, _, _) = app.get_bytes(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let read = events_after(&app, n).await;
    assert_eq!(read.len(), 2);
    for event in &read {
        assert_eq!(event.changes, json!({"read": "audio"}));
        assert_eq!(event.recording_id.as_deref(), Some(audio_id));
        assert_eq!(event.patient_id.as_deref(), Some("patient-audio"));
    }
    let (checked, broken) = app.state.audit.verify().await.unwrap();
    assert_eq!((checked as usize, broken), (n + 2, None));
}

/// A read whose event cannot be recorded is refused and reveals nothing
/// (fail closed); once the trail takes events again, reads work again. On
/// SQLite a read is recorded once it is in the spool: while the chain
/// refuses it, the read is answered and its event waits there (an export
/// meanwhile fails rather than leave it out), and enters the chain once the
/// chain takes it (a spool that cannot be written: `hostile`'s full disk).
async fn a_read_the_trail_cannot_record_is_refused_and_reveals_nothing(app: TestApp) {
    let created = app.create("patient-closed", 30).await;
    let id = created["id"].as_str().unwrap();
    let audio = common::webm(4_000, 9);
    let with_audio = app.upload_audio("patient-closed-audio", &audio).await;
    let audio_url = format!(
        "/api/v1/recordings/{}/audio",
        with_audio["id"].as_str().unwrap()
    );
    let (refuse, allow) = match app.backend {
        common::Backend::Sqlite => (
            vec![
                "CREATE TRIGGER refuse_reads BEFORE INSERT ON audit_events \
                 WHEN NEW.action = 'read' BEGIN SELECT RAISE(ABORT, 'reads refused'); END",
            ],
            vec!["DROP TRIGGER refuse_reads"],
        ),
        common::Backend::Postgres => (
            vec![
                "CREATE FUNCTION refuse_reads() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN IF NEW.action = 'read' THEN RAISE EXCEPTION 'reads refused'; END IF; \
                 RETURN NEW; END $$",
                "CREATE TRIGGER refuse_reads BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_reads()",
            ],
            vec!["DROP TRIGGER refuse_reads ON audit_events"],
        ),
    };
    for sql in refuse {
        common::execute(&app, sql).await.unwrap();
    }
    let before = events(&app).await;
    let urls = [
        format!("/api/v1/recordings/{id}"),
        "/api/v1/recordings".to_owned(),
        "/api/v1/changes".to_owned(),
        format!("/api/v1/recordings/{id}/history"),
    ];
    if app.backend == common::Backend::Sqlite {
        let (history, reads) = urls.split_last().unwrap();
        for url in reads {
            assert_eq!(app.get(url).await.status, StatusCode::OK, "{url}");
        }
        // A history would leave out the reads waiting in the spool.
        let refused = app.get(history).await;
        assert!(refused.status.is_server_error(), "{}", refused.status);
        assert!(!refused.text.contains(id), "{}", refused.text);
        let (status, _, bytes) = app.get_bytes(&audio_url, &[]).await;
        assert_eq!((status, bytes.len()), (StatusCode::OK, audio.len()));
        let refused = app.state.audit.export(None, None, None).await;
        assert!(refused.is_err(), "an export without the spooled reads");
        for sql in allow {
            common::execute(&app, sql).await.unwrap();
        }
        let after = events(&app).await;
        let read: Vec<&Value> = after[before.len()..]
            .iter()
            .map(|e| &e.changes["read"])
            .collect();
        assert_eq!(read, ["recording", "list", "changes", "audio"]);
        assert_eq!(
            app.state.audit.verify().await.unwrap(),
            (after.len() as i64, None)
        );
        return;
    }
    for url in urls {
        let refused = app.get(&url).await;
        assert!(
            refused.status.is_server_error(),
            "{url}: {}",
            refused.status
        );
        assert!(
            !refused.text.contains("patient-closed") && !refused.text.contains(id),
            "{url} revealed data: {}",
            refused.text
        );
    }
    let (status, _, bytes) = app.get_bytes(&audio_url, &[]).await;
    assert!(status.is_server_error(), "audio: {status}");
    assert!(
        bytes.len() < audio.len() / 2,
        "the audio was sent: {} bytes",
        bytes.len()
    );
    assert_eq!(events(&app).await, before);
    for sql in allow {
        common::execute(&app, sql).await.unwrap();
    }
    let read = app.get(&format!("/api/v1/recordings/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["patient_id"], "patient-closed");
    assert_eq!(events(&app).await.len(), before.len() + 1);
}

/// A recording created, then four audited changes: five events.
async fn four_events(app: &TestApp) {
    let mut r = in_status(app, RecordingStatus::Completed).await;
    let id = r["id"].as_str().unwrap().to_owned();
    for text in ["one", "two", "three", "four"] {
        let answer = patch(
            app,
            &id,
            Some(&tag_of(&r)),
            json!({"final_transcript": text}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        r = answer.body;
    }
}

async fn the_table_refuses_changes_and_verify_finds_a_row_changed_removed_or_forged(app: TestApp) {
    four_events(&app).await;
    assert_eq!(app.state.audit.verify().await.unwrap(), (5, None));
    for sql in [
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
    ] {
        let error = common::execute(&app, sql).await.expect_err(sql);
        assert!(error.contains("append-only"), "{sql}: {error}");
    }

    // With the triggers dropped, by someone with full access to the database.
    let drop = match app.backend {
        common::Backend::Sqlite => vec![
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ],
        common::Backend::Postgres => vec![
            "DROP TRIGGER audit_events_no_update ON audit_events",
            "DROP TRIGGER audit_events_no_delete ON audit_events",
        ],
    };
    for sql in drop {
        common::execute(&app, sql).await.unwrap();
    }
    let original: String = app.state.audit.export(None, None, None).await.unwrap()[1]
        .changes
        .to_string();
    common::execute(
        &app,
        r#"UPDATE audit_events SET changes = '{"final_transcript":["one","TWO"]}' WHERE seq = 2"#,
    )
    .await
    .unwrap();
    assert_broken_at(&app, 1, 2, "changed").await;
    common::execute(
        &app,
        &format!("UPDATE audit_events SET changes = '{original}' WHERE seq = 2"),
    )
    .await
    .unwrap();
    assert_eq!(
        app.state.audit.verify().await.unwrap(),
        (5, None),
        "put back"
    );

    // A forged event at the end, with a hash that does not follow.
    common::execute(
        &app,
        "INSERT INTO audit_events (seq, at, actor, action, recording_id, patient_id, changes, \
         request_id, client_addr, prev_hash, hash) SELECT 6, at, 'mallory', 'update', recording_id, \
         patient_id, '{}', NULL, NULL, hash, hash FROM audit_events WHERE seq = 5",
    )
    .await
    .unwrap();
    let (_, broken) = app.state.audit.verify().await.unwrap();
    assert_eq!(broken.map(|b| b.seq), Some(6));
    common::execute(&app, "DELETE FROM audit_events WHERE seq = 6")
        .await
        .unwrap();

    // A removed event: the next one no longer follows.
    common::execute(&app, "DELETE FROM audit_events WHERE seq = 3")
        .await
        .unwrap();
    assert_broken_at(&app, 2, 4, "expected event 3").await;
}

/// `audit verify` verified `checked` events, then found event `seq` broken
/// for a reason that says `why`.
async fn assert_broken_at(app: &TestApp, checked: i64, seq: i64, why: &str) {
    let (verified, broken) = app.state.audit.verify().await.unwrap();
    let broken = broken.expect("a broken link");
    assert_eq!((verified, broken.seq), (checked, seq), "{}", broken.reason);
    assert!(broken.reason.contains(why), "{}", broken.reason);
}

/// The commands, on a server's database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_and_export_from_the_command_line() {
    let app = TestApp::new().await;
    four_events(&app).await;
    let db_path = app.db_path();
    let verified = run_cli(&db_path, &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stderr);
    assert!(
        verified.stdout.contains("intact: 5 event(s)"),
        "{}",
        verified.stdout
    );

    let jsonl = run_cli(
        &db_path,
        &["audit", "export", "--patient", "patient-review"],
    );
    assert_eq!(jsonl.code, Some(0), "{}", jsonl.stderr);
    let lines: Vec<Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["action"], "create");
    assert_eq!(
        lines[4]["changes"]["final_transcript"],
        json!(["three", "four"])
    );
    let none = run_cli(
        &db_path,
        &["audit", "export", "--patient", "nobody", "--format", "csv"],
    );
    assert_eq!(
        none.stdout.lines().count(),
        1,
        "the header only: {}",
        none.stdout
    );
    let csv = run_cli(
        &db_path,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--since",
            "2000-01-01T00:00:00Z",
        ],
    );
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(
        rows[0],
        "seq,at,actor,action,recording_id,patient_id,changes,request_id,client_addr,prev_hash,hash"
    );
    assert_eq!(
        rows.len(),
        1 + 5 + 2,
        "5 events and the 2 exports before this one"
    );
    assert!(
        rows[2].contains(r#""{""final_transcript"":[null,""one""]}""#),
        "{}",
        rows[2]
    );
    let bad = run_cli(&db_path, &["audit", "export", "--since", "yesterday"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("--since"), "{}", bad.stderr);

    // Each export is an event of its own, and the chain still holds.
    let exports: Vec<AuditEvent> = events(&app)
        .await
        .into_iter()
        .filter(|e| e.action == "export")
        .collect();
    assert_eq!(exports.len(), 3);
    assert_eq!(exports[0].actor, "system:cli");
    assert_eq!(exports[0].patient_id.as_deref(), Some("patient-review"));
    assert_eq!(exports[0].changes["events"], 5);
    let verified = run_cli(&db_path, &["audit", "verify"]);
    assert!(
        verified.stdout.contains("intact: 8 event(s)"),
        "{}",
        verified.stdout
    );

    // A changed event: exit 1, naming it.
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(app.sqlite().writer())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
        .execute(app.sqlite().writer())
        .await
        .unwrap();
    let broken = run_cli(&db_path, &["audit", "verify"]);
    assert_eq!(broken.code, Some(1));
    assert!(
        broken.stdout.contains("BROKEN at event 3"),
        "{}",
        broken.stdout
    );
}

/// kill -9 in the middle of a burst of patches: afterwards every recording's
/// version says how many patches committed, and exactly that many `update`
/// events exist for it (change and event together, or neither); the chain
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_write_leaves_each_change_with_its_event_or_neither() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = common::ServerProcess::start(&db_path);
    let http = common::client();
    let mut ids = Vec::new();
    for i in 0..8 {
        let created: Value = http
            .post(server.url("/api/v1/recordings"))
            .json(&json!({"patient_id": format!("patient-kill-{i}"), "duration_seconds": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut writers = Vec::new();
    for id in ids.clone() {
        let (http, url) = (
            http.clone(),
            server.url(&format!("/api/v1/recordings/{id}")),
        );
        writers.push(tokio::spawn(async move {
            let mut version = 1;
            for n in 0.. {
                let sent = http
                    .patch(&url)
                    .header("if-match", format!("\"{version}\""))
                    .json(&json!({"final_transcript": format!("revision {n}")}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => version += 1,
                    _ => return version,
                }
            }
            version
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill_9();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.push(w.await.unwrap());
    }

    let db = common::open_db(&db_path).await;
    let mut patches = 0;
    for (id, acked) in ids.iter().zip(&acknowledged) {
        let version: i64 = sqlx::query_scalar("SELECT version FROM recordings WHERE id = ?1")
            .bind(id)
            .fetch_one(db.readers())
            .await
            .unwrap();
        let events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE recording_id = ?1 AND action = 'update'",
        )
        .bind(id)
        .fetch_one(db.readers())
        .await
        .unwrap();
        assert!(
            version >= *acked,
            "an acknowledged patch survives: {version} < {acked}"
        );
        assert_eq!(events, version - 1, "{id}: one event per committed patch");
        patches += version - 1;
    }
    assert!(patches > 50, "the burst wrote: {patches} patches");
    db.close().await;
    let verified = run_cli(&db_path, &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
    assert!(
        verified
            .stdout
            .contains(&format!("intact: {} event(s)", patches + ids.len() as i64)),
        "{}",
        verified.stdout
    );
}

async fn the_transcription_worker_s_changes_are_events_of_system_transcription(app: TestApp) {
    use clinscribe::jobs::JobResult;
    use std::time::Duration;
    let upload = |key: &'static str| {
        let (content_type, body) = common::multipart(&[
            ("patient_id", None, b"patient-worker"),
            ("duration_seconds", None, b"5"),
            ("local_storage_key", None, key.as_bytes()),
            ("audio", Some("dictation.webm"), &common::webm(20_000, 3)),
        ]);
        let app = &app;
        async move {
            let r = app
                .send_with(
                    Method::POST,
                    "/api/v1/recordings/upload",
                    &[("content-type", &content_type)],
                    body,
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            r.body["id"].as_str().unwrap().to_owned()
        }
    };
    let done = upload("7e6c5b4a-0000-4000-8000-000000000001").await;
    let lease = Duration::from_secs(60);
    let job = app
        .state
        .jobs
        .claim("worker-1", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.recording_id.to_string(), done);
    let result = JobResult {
        text: "Blood pressure 130 over 85.".into(),
        language: Some("en".into()),
        segments_json: "[]".into(),
        model: "tiny.en".into(),
        check: None,
        check_later: false,
    };
    assert!(
        app.state
            .jobs
            .complete(job.recording_id, "worker-1", &result)
            .await
            .unwrap()
    );
    let failed = upload("7e6c5b4a-0000-4000-8000-000000000002").await;
    let job = app
        .state
        .jobs
        .claim("worker-1", lease)
        .await
        .unwrap()
        .unwrap();
    assert!(
        app.state
            .jobs
            .retry_later(job.recording_id, "worker-1", "engine busy", Duration::ZERO)
            .await
            .unwrap()
    );
    let job = app
        .state
        .jobs
        .claim("worker-1", lease)
        .await
        .unwrap()
        .unwrap();
    assert!(
        app.state
            .jobs
            .fail(job.recording_id, "worker-1", "cannot decode")
            .await
            .unwrap()
    );
    // A worker that lost its lease stores nothing, and so audits nothing.
    assert!(
        !app.state
            .jobs
            .fail(job.recording_id, "worker-2", "late")
            .await
            .unwrap()
    );

    let all = events(&app).await;
    let uploads: Vec<&AuditEvent> = all.iter().filter(|e| e.action == "upload").collect();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].actor, "current-clinician");
    assert_eq!(uploads[0].changes["status"], json!([null, "queued"]));
    assert_eq!(
        uploads[0].changes["audio_content_type"],
        json!([null, "audio/webm"])
    );
    let all: Vec<AuditEvent> = all.into_iter().filter(|e| e.action != "upload").collect();
    assert!(
        all.iter()
            .all(|e| e.actor == "system:transcription" && e.action == "transcribe")
    );
    let of = |id: &str| -> Vec<Value> {
        all.iter()
            .filter(|e| e.recording_id.as_deref() == Some(id))
            .map(|e| e.changes.clone())
            .collect()
    };
    assert_eq!(
        of(&done),
        [
            json!({"status": ["queued", "processing"]}),
            json!({
                "status": ["processing", "completed"],
                "transcript": [null, "Blood pressure 130 over 85."],
                "final_transcript": [null, "Blood pressure 130 over 85."],
                "transcript_language": [null, "en"],
                "whisper_model": ["base", "tiny.en"],
            }),
        ]
    );
    assert_eq!(
        of(&failed),
        [
            json!({"status": ["queued", "processing"]}),
            json!({"status": ["processing", "queued"], "error_message": [null, "engine busy"]}),
            json!({"status": ["queued", "processing"]}),
            json!({"status": ["processing", "error"], "error_message": ["engine busy", "cannot decode"]}),
        ]
    );
    assert_eq!(app.state.audit.verify().await.unwrap(), (8, None));
}

crate::on_both_backends!(
    each_change_leaves_one_event_and_a_refused_request_none,
    each_read_of_patient_data_leaves_one_event_and_an_answer_without_data_none,
    a_read_the_trail_cannot_record_is_refused_and_reveals_nothing,
    the_table_refuses_changes_and_verify_finds_a_row_changed_removed_or_forged,
    the_transcription_worker_s_changes_are_events_of_system_transcription,
);

/// `audit verify` checks ranges of the chain side by side: a link broken on
/// either side of a range's edge is found where a sequential check finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_break_at_the_edge_of_its_ranges() {
    use clinscribe::audit::{AuditAction, AuditContext, NewAuditEvent};
    let app = TestApp::new().await;
    let context = AuditContext::system("test");
    let events: Vec<NewAuditEvent> = (0..5000)
        .map(|n| {
            context.event(
                AuditAction::Update,
                None,
                Some(format!("patient-{n}")),
                json!({"final_transcript": [null, n]}),
            )
        })
        .collect();
    let refs: Vec<&NewAuditEvent> = events.iter().collect();
    app.state.audit.append_batch(&refs).await.unwrap();
    assert_eq!(app.state.audit.verify().await.unwrap(), (5000, None));

    for sql in [
        "DROP TRIGGER audit_events_no_update",
        "DROP TRIGGER audit_events_no_delete",
    ] {
        common::execute(&app, sql).await.unwrap();
    }
    // SQLite's ranges are 4,096 events: 4096 ends the first, 4097 begins the second.
    common::execute(
        &app,
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4096",
    )
    .await
    .unwrap();
    assert_broken_at(&app, 4095, 4096, "changed").await;
    common::execute(
        &app,
        "UPDATE audit_events SET actor = 'system:test' WHERE seq = 4096",
    )
    .await
    .unwrap();
    common::execute(&app, "DELETE FROM audit_events WHERE seq = 4097")
        .await
        .unwrap();
    assert_broken_at(&app, 4096, 4098, "expected event 4097").await;
}

/// A recording's history is every event of it, oldest first, however far
/// apart in the chain (SQLite indexes them by block of 16,384 positions
/// first, and looks the recording up in each block).
#[tokio::test]
async fn a_history_holds_the_recording_s_events_from_every_block_of_the_chain() {
    use clinscribe::audit::{AuditAction, AuditContext, NewAuditEvent};
    let app = TestApp::new().await;
    let context = AuditContext::system("test");
    let (ours, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Ours at positions 1, 16,384, 16,385 and 40,000 (blocks 0, 1, 1 and 2).
    let ours_at = [1, 16_384, 16_385, 40_000];
    let events: Vec<NewAuditEvent> = (1..=40_000)
        .map(|seq| {
            let recording = if ours_at.contains(&seq) { ours } else { other };
            context.event(
                AuditAction::Update,
                Some(recording),
                Some("patient-1".into()),
                json!({ "final_transcript": [null, seq] }),
            )
        })
        .collect();
    let refs: Vec<&NewAuditEvent> = events.iter().collect();
    app.state.audit.append_batch(&refs).await.unwrap();

    let history = app.state.audit.history(ours).await.unwrap();
    let seqs: Vec<i64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, ours_at);
    assert_eq!(
        history[3].changes,
        json!({ "final_transcript": [null, 40_000] })
    );
    assert!(
        app.state
            .audit
            .history(uuid::Uuid::new_v4())
            .await
            .unwrap()
            .is_empty()
    );
}

/// kill -9 in the middle of a burst of reads: every read that was answered
/// with the recording has its `read` event afterwards (the event commits
/// before the answer goes), and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_reads_leaves_every_answered_read_with_its_event() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = common::ServerProcess::start(&db_path);
    let http = common::client();
    let created: Value = http
        .post(server.url("/api/v1/recordings"))
        .json(&json!({"patient_id": "patient-read-kill", "duration_seconds": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (http, url) = (
            http.clone(),
            server.url(&format!("/api/v1/recordings/{id}")),
        );
        readers.push(tokio::spawn(async move {
            let mut answered = 0i64;
            loop {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(body) if body["patient_id"] == "patient-read-kill" => answered += 1,
                        _ => return answered,
                    },
                    _ => return answered,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill_9();
    let mut answered = 0;
    for r in readers {
        answered += r.await.unwrap();
    }
    assert!(answered > 100, "the burst read: {answered} reads");

    // Opening the database (here, for `audit verify`) moves the reads the
    // crash left in the spool into the chain.
    let verified = run_cli(&db_path, &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
    let events = common::read_events_of(&db_path, &id).await;
    // An event may be recorded whose answer the crash cut off, never the reverse.
    assert!(
        events >= answered,
        "{answered} reads answered, {events} read events"
    );
}

/// What a crashed server left in its spool enters the chain when the
/// database is next opened, once: whole lines in order, a line cut short by
/// the crash dropped, a segment of another database left alone. A restore
/// keeps the spool with the database it replaces (whose reads it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_crash_left_in_the_spool_enter_the_chain_once_when_the_database_opens() {
    use clinscribe::audit::spool_file::{dir_of, segment_path};
    use clinscribe::audit::{AuditContext, ReadOf};
    use clinscribe::config::DatabaseSettings;
    use clinscribe::db::SqliteDatabase;

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let db = SqliteDatabase::open(&DatabaseSettings::sqlite(&db_path))
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_spool")
        .fetch_one(db.readers())
        .await
        .unwrap();
    assert_eq!(rows, 0, "no spool until a server spools");
    // What a server writes when it first spools.
    let spool_id = "feedc0de12345678";
    sqlx::query("INSERT INTO audit_spool VALUES (1, ?1, 0, 0)")
        .bind(spool_id)
        .execute(db.writer())
        .await
        .unwrap();
    db.close().await;
    let line = |n: u128| {
        let event = AuditContext::clinician(&format!("dr-{n}")).read(
            ReadOf::Recording,
            uuid::Uuid::from_u128(n),
            "patient-spooled",
        );
        serde_json::to_string(&event).unwrap() + "\n"
    };
    let spool = dir_of(&db_path);
    std::fs::create_dir_all(&spool).unwrap();
    let cut = &line(3)[..25];
    std::fs::write(segment_path(&spool, spool_id, 3), line(1) + &line(2) + cut).unwrap();
    std::fs::write(segment_path(&spool, spool_id, 4), line(4)).unwrap();
    let foreign = segment_path(&spool, "0123456789abcdef", 1);
    std::fs::write(&foreign, line(9)).unwrap();

    let actors = |path: std::path::PathBuf| async move {
        let db = common::open_db(&path).await;
        let actors: Vec<String> =
            sqlx::query_scalar("SELECT actor FROM audit_events WHERE action = 'read' ORDER BY seq")
                .fetch_all(db.readers())
                .await
                .unwrap();
        db.close().await;
        actors
    };
    // Opened twice by a command (`audit verify` checks the chain after).
    for _ in 0..2 {
        let verified = run_cli(&db_path, &["audit", "verify"]);
        assert_eq!(verified.code, Some(0), "{}", verified.stdout);
        assert_eq!(actors(db_path.clone()).await, ["dr-1", "dr-2", "dr-4"]);
    }
    assert!(
        !segment_path(&spool, spool_id, 3).exists(),
        "a moved segment is removed"
    );
    assert!(foreign.exists());

    // A backup, then a read spooled by a server that crashed; restored.
    let backup = dir.path().join("backup.db");
    std::fs::copy(&db_path, &backup).unwrap();
    std::fs::write(segment_path(&spool, spool_id, 5), line(5)).unwrap();
    let restored = run_cli(&db_path, &["restore", backup.to_str().unwrap()]);
    assert_eq!(restored.code, Some(0), "{}", restored.stderr);
    let kept = restored
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("previous:   kept as "))
        .map(std::path::PathBuf::from)
        .expect("the kept database");
    assert_eq!(actors(db_path.clone()).await, ["dr-1", "dr-2", "dr-4"]);
    assert!(
        !spool.exists(),
        "the restored database starts without a spool"
    );
    // The spool went with the kept database, and its read enters that
    // database's chain when it is next opened.
    assert!(dir_of(&kept).join(foreign.file_name().unwrap()).exists());
    let verified = run_cli(&kept, &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
    assert_eq!(actors(kept.clone()).await, ["dr-1", "dr-2", "dr-4", "dr-5"]);
}
