//! Sign-off, amendments and deletion: a signed note's text never changes
//! (not through the API, not by hand in the database), corrections are kept
//! beside it in order, and a deleted recording disappears, ends its job, and
//! loses its audio after the retention period.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{self, TestApp, TestResponse, multipart, sha256_hex, webm};
use crate::review::{current, etag, in_status, patch, tag_of};
use clinscribe::recordings::RecordingStatus;

async fn post_with_tag(
    app: &TestApp,
    url: &str,
    tag: Option<&str>,
    body: Option<Value>,
) -> TestResponse {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(tag) = tag {
        headers.push(("if-match", tag));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    app.send_with(Method::POST, url, &headers, body).await
}

async fn sign(app: &TestApp, id: &str, tag: Option<&str>) -> TestResponse {
    post_with_tag(app, &format!("/api/v1/recordings/{id}/sign"), tag, None).await
}

async fn amend(app: &TestApp, id: &str, tag: &str, body: Value) -> TestResponse {
    post_with_tag(
        app,
        &format!("/api/v1/recordings/{id}/amendments"),
        Some(tag),
        Some(body),
    )
    .await
}

async fn delete(app: &TestApp, id: &str, tag: Option<&str>) -> TestResponse {
    let headers: Vec<(&str, &str)> = tag.map(|t| ("if-match", t)).into_iter().collect();
    app.send_with(
        Method::DELETE,
        &format!("/api/v1/recordings/{id}"),
        &headers,
        Body::empty(),
    )
    .await
}

/// A completed recording whose corrected text is `text`.
async fn completed_with_text(app: &TestApp, text: &str) -> Value {
    let recording = in_status(app, RecordingStatus::Completed).await;
    let id = recording["id"].as_str().unwrap();
    let r = patch(
        app,
        id,
        Some(&tag_of(&recording)),
        json!({"final_transcript": text}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

const SIGNED_TEXT: &str = "Patient stable. Continue metformin 500 mg twice daily.";

async fn a_signed_note_keeps_its_text_and_takes_amendments_in_order(app: TestApp) {
    let note = completed_with_text(&app, SIGNED_TEXT).await;
    let id = note["id"].as_str().unwrap();
    let seen = tag_of(&note);

    let r = sign(&app, id, None).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.text);
    let r = sign(&app, id, Some("\"1\"")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.text);
    assert_eq!(r.body["current"], note);
    assert_eq!(
        current(&app, id).await,
        note,
        "a refused signature changes nothing"
    );

    let signed = sign(&app, id, Some(&seen)).await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.text);
    let signed = signed.body;
    assert_eq!(signed["version"], note["version"].as_i64().unwrap() + 1);
    assert_eq!(signed["signed_by"], "current-clinician");
    assert_eq!(signed["signed_sha256"], sha256_hex(SIGNED_TEXT.as_bytes()));
    assert!(signed["signed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(signed["amendments"], json!([]));
    assert_eq!(signed["final_transcript"], SIGNED_TEXT);

    // Nothing about the signed text may change, through any endpoint.
    let tag = tag_of(&signed);
    let again = sign(&app, id, Some(&tag)).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    for change in [
        json!({"final_transcript": "Stop metformin."}),
        json!({"final_transcript": null}),
        json!({"patient_id": "another-patient"}),
    ] {
        let r = patch(&app, id, Some(&tag), change.clone()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{change}: {}", r.text);
        assert!(
            r.body["detail"].as_str().unwrap().contains("amendment"),
            "{}",
            r.text
        );
    }
    let r = delete(&app, id, Some(&tag)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(current(&app, id).await, signed, "refusals change nothing");

    // Amendments: validated, then kept in order beside the signed text.
    let r = amend(&app, id, &tag, json!({"text": "Dose is 850 mg."})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "reason"]));
    let r = amend(
        &app,
        id,
        &tag,
        json!({"text": "  ", "reason": "x", "signed_by": "me"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["detail"].as_array().unwrap().len(), 2, "{}", r.text);
    assert_eq!(current(&app, id).await, signed);

    let first = amend(
        &app,
        id,
        &tag,
        json!({"text": "Dose is 850 mg twice daily.", "reason": "Misheard dose"}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(etag(&first), tag_of(&first.body));
    let stale = amend(&app, id, &tag, json!({"text": "Other.", "reason": "Late"})).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.text
    );
    let second = amend(
        &app,
        id,
        &tag_of(&first.body),
        json!({"text": "Review in 3 months.", "reason": "Omitted follow-up"}),
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let amended = current(&app, id).await;
    assert_eq!(amended, second.body);
    let amendments = amended["amendments"].as_array().unwrap();
    assert_eq!(amendments.len(), 2);
    assert_eq!(amendments[0]["text"], "Dose is 850 mg twice daily.");
    assert_eq!(amendments[0]["reason"], "Misheard dose");
    assert_eq!(amendments[0]["author"], "current-clinician");
    assert_eq!(amendments[1]["text"], "Review in 3 months.");
    assert!(amendments[0]["created_at"].as_str() <= amendments[1]["created_at"].as_str());
    // The signed text and its hash stay as they were.
    assert_eq!(amended["final_transcript"], SIGNED_TEXT);
    assert_eq!(amended["signed_sha256"], signed["signed_sha256"]);
    assert_eq!(amended["signed_at"], signed["signed_at"]);
}

async fn only_a_completed_note_with_text_is_signed_and_only_a_signed_one_amended(app: TestApp) {
    for status in RecordingStatus::ALL {
        if status == RecordingStatus::Completed {
            continue;
        }
        let r = in_status(&app, status).await;
        let id = r["id"].as_str().unwrap();
        let answer = sign(&app, id, Some(&tag_of(&r))).await;
        assert_eq!(
            answer.status,
            StatusCode::CONFLICT,
            "{status}: {}",
            answer.text
        );
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap()
                .contains("completed"),
            "{}",
            answer.text
        );
        assert_eq!(current(&app, id).await, r);
    }
    let cleared = completed_with_text(&app, "x").await;
    let id = cleared["id"].as_str().unwrap();
    let cleared = patch(
        &app,
        id,
        Some(&tag_of(&cleared)),
        json!({"final_transcript": null}),
    )
    .await
    .body;
    let r = sign(&app, id, Some(&tag_of(&cleared))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("no text"),
        "{}",
        r.text
    );

    let unsigned = completed_with_text(&app, "Draft note.").await;
    let id = unsigned["id"].as_str().unwrap();
    let r = amend(
        &app,
        id,
        &tag_of(&unsigned),
        json!({"text": "More.", "reason": "Why"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(current(&app, id).await, unsigned);

    let missing = uuid::Uuid::now_v7();
    assert_eq!(
        sign(&app, &missing.to_string(), Some("\"1\"")).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn the_database_itself_refuses_to_change_a_signed_note(app: TestApp) {
    let note = completed_with_text(&app, SIGNED_TEXT).await;
    let id = note["id"].as_str().unwrap();
    let signed = sign(&app, id, Some(&tag_of(&note))).await.body;
    let r = amend(
        &app,
        id,
        &tag_of(&signed),
        json!({"text": "Addendum.", "reason": "Late result"}),
    )
    .await;
    let signed = r.body;
    for set in [
        "final_transcript = 'forged'",
        "patient_id = 'someone-else'",
        "signed_sha256 = NULL",
        "signed_at = NULL",
        "amendments = '[]'",
    ] {
        let error = common::execute(
            &app,
            &format!("UPDATE recordings SET {set}, version = version + 1 WHERE id = '{id}'"),
        )
        .await
        .expect_err(set);
        assert!(
            error.contains("a signed note cannot change"),
            "{set}: {error}"
        );
    }
    assert_eq!(current(&app, id).await, signed);
}

async fn a_deleted_recording_disappears_ends_its_job_and_loses_its_audio_after_retention(
    app: TestApp,
) {
    let audio = webm(50_000, 7);
    let upload = |key: &'static str| {
        let (content_type, body) = multipart(&[
            ("patient_id", None, b"patient-del"),
            ("duration_seconds", None, b"5"),
            ("local_storage_key", None, key.as_bytes()),
            ("audio", Some("dictation.webm"), &audio),
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
            r.body
        }
    };
    let doomed = upload("0b9c7d7e-1f55-4c37-9a3a-6f1f0f000001").await;
    let kept = upload("0b9c7d7e-1f55-4c37-9a3a-6f1f0f000002").await;
    let id = doomed["id"].as_str().unwrap();
    let url = format!("/api/v1/recordings/{id}");
    let mut doomed = doomed.clone();
    doomed.as_object_mut().unwrap().remove("durable");
    assert_eq!(app.audio_files("objects").len(), 2);

    let r = delete(&app, id, None).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED, "{}", r.text);
    let r = delete(&app, id, Some("\"99\"")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.text);
    assert_eq!(r.body["current"], doomed);

    let r = delete(&app, id, Some(&tag_of(&doomed))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(r.text, "");
    assert_eq!(app.get(&url).await.status, StatusCode::NOT_FOUND);
    let listed = app.get("/api/v1/recordings").await.body;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [kept["id"].as_str().unwrap()]);
    let next = tag_of(&doomed).replace(
        &doomed["version"].to_string(),
        &(doomed["version"].as_i64().unwrap() + 1).to_string(),
    );
    assert_eq!(
        delete(&app, id, Some(&next)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&app, id, Some(&next), json!({"patient_id": "p"}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/recordings/{id}/audio"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Its transcription job ended with it: no worker will take it.
    assert_eq!(
        job_of(&app, id).await,
        (
            "failed".to_owned(),
            Some("the recording was deleted".to_owned())
        )
    );
    let claim = || app.state.jobs.claim("test-worker", Duration::from_secs(60));
    let taken = claim().await.unwrap().expect("the other dictation's job");
    assert_eq!(taken.recording_id.to_string(), kept["id"].as_str().unwrap());
    assert!(
        claim().await.unwrap().is_none(),
        "the deleted one's job is not taken"
    );

    // Within the retention period the sweep keeps the audio; after it, only
    // the deleted recording's audio goes.
    let report = app.state.uploads.sweep().await.unwrap();
    assert_eq!(report.deleted_audio, 0);
    assert_eq!(app.audio_files("objects").len(), 2);
    tokio::time::sleep(RETENTION + Duration::from_millis(100)).await;
    let uploads = &app.state.uploads;
    let report = uploads.sweep().await.unwrap();
    assert_eq!(report.deleted_audio, 1);
    let left = app.audio_files("objects");
    assert_eq!(left.len(), 1);
    assert!(
        left[0]
            .to_str()
            .unwrap()
            .contains(kept["id"].as_str().unwrap())
    );
    assert_eq!(
        uploads.sweep().await.unwrap().deleted_audio,
        0,
        "purged once"
    );
    let purges: Vec<_> = app
        .state
        .audit
        .export(None, None, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "purge")
        .collect();
    assert_eq!(purges.len(), 1, "the purge is audited once");
    assert_eq!(purges[0].actor, "system:cleanup");
    assert_eq!(purges[0].recording_id.as_deref(), Some(id));
    assert_eq!(purges[0].changes["audio_content_type"][1], Value::Null);
    let (status, _, kept_audio) = app
        .get_bytes(
            &format!("/api/v1/recordings/{}/audio", kept["id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept_audio, audio);
}

/// The `PWA_DELETED_RETENTION` of the deletion test.
const RETENTION: Duration = Duration::from_secs(1);

/// The deletion test, on an app whose retention is [`RETENTION`].
mod deletion {
    use super::*;
    use crate::common::Backend;

    async fn app(backend: Backend) -> TestApp {
        TestApp::with_uploads(backend, |s| s.deleted_retention = RETENTION).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        a_deleted_recording_disappears_ends_its_job_and_loses_its_audio_after_retention(
            app(Backend::Sqlite).await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        if common::postgres_or_skip("deletion").is_some() {
            a_deleted_recording_disappears_ends_its_job_and_loses_its_audio_after_retention(
                app(Backend::Postgres).await,
            )
            .await;
        }
    }
}

async fn sign_with(app: &TestApp, id: &str, tag: &str, body: Value) -> TestResponse {
    post_with_tag(
        app,
        &format!("/api/v1/recordings/{id}/sign"),
        Some(tag),
        Some(body),
    )
    .await
}

const ALLERGY_TEXT: &str = "Allergic to penicillin. Start amoxicillin 500 mg three times a day. Atorvastatin 40 mg and simvastatin 20 mg.";

/// A critical alert must be acknowledged, with a reason, before the note is
/// signed; a high one may be; the acknowledgements are kept with the
/// signature, audited with it, and final.
async fn a_critical_alert_is_acknowledged_with_a_reason_before_signing(app: TestApp) {
    let note = completed_with_text(&app, ALLERGY_TEXT).await;
    let id = note["id"].as_str().unwrap();
    let tag = tag_of(&note);
    let alerts = note["verification_results"]["alerts"].as_array().unwrap();
    let ids: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (critical, high) = (ids[0].0.to_owned(), ids[1].0.to_owned());
    assert_eq!(ids[0].1, "critical");
    assert!(critical.starts_with("ALLERGY_CONFLICT@"), "{critical}");
    assert_eq!(ids[1].1, "high");
    assert!(high.starts_with("DUPLICATE_THERAPY@"), "{high}");

    // Without a body, or acknowledging only the high one: 409 naming the critical one.
    for body in [
        None,
        Some(
            json!({"acknowledgements": [{"alert_id": high, "reason": "Switching statins this week"}]}),
        ),
    ] {
        let r = post_with_tag(
            &app,
            &format!("/api/v1/recordings/{id}/sign"),
            Some(&tag),
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(&critical), "{detail}");
        assert!(detail.contains("must be acknowledged"), "{detail}");
    }
    // An alert the check does not have: 409 naming it.
    let r = sign_with(
        &app,
        id,
        &tag,
        json!({"acknowledgements": [{"alert_id": "ALLERGY_CONFLICT@0-1", "reason": "x"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("'ALLERGY_CONFLICT@0-1'"),
        "{}",
        r.text
    );
    // Malformed: 422 naming every problem.
    let r = sign_with(
        &app,
        id,
        &tag,
        json!({"acknowledgements": [{"alert_id": critical, "reason": "   "}, {"reason": "no id", "extra": 1}], "note": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let problems: Vec<(String, String)> = r.body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["type"].as_str().unwrap().to_owned(), d["loc"].to_string()))
        .collect();
    assert_eq!(
        problems,
        [
            (
                "extra_forbidden".to_owned(),
                r#"["body","note"]"#.to_owned()
            ),
            (
                "string_too_short".to_owned(),
                r#"["body","acknowledgements",0,"reason"]"#.to_owned()
            ),
            (
                "missing".to_owned(),
                r#"["body","acknowledgements",1,"alert_id"]"#.to_owned()
            ),
            (
                "extra_forbidden".to_owned(),
                r#"["body","acknowledgements",1,"extra"]"#.to_owned()
            ),
        ]
    );
    // Nothing refused changed anything.
    assert_eq!(current(&app, id).await, note);

    let reason = "Tolerated amoxicillin in 2024; the penicillin allergy is a childhood rash";
    let r = sign_with(
        &app,
        id,
        &tag,
        json!({"acknowledgements": [{"alert_id": critical, "reason": reason}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let signed = r.body;
    let kept = &signed["acknowledgements"];
    assert_eq!(kept.as_array().unwrap().len(), 1);
    assert_eq!(kept[0]["alert_id"], critical.as_str());
    assert_eq!(kept[0]["rule_id"], "ALLERGY_CONFLICT");
    assert_eq!(kept[0]["severity"], "critical");
    assert_eq!(kept[0]["reason"], reason);
    assert_eq!(kept[0]["by"], signed["signed_by"]);
    assert_eq!(kept[0]["at"], signed["signed_at"]);
    assert_eq!(kept[0]["message"], alerts[0]["message"]);

    let history = app
        .get(&format!("/api/v1/recordings/{id}/history"))
        .await
        .body;
    let event = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["action"], "sign");
    assert_eq!(event["changes"]["acknowledgements"], json!([[], kept]));

    let error = common::execute(
        &app,
        &format!(
            "UPDATE recordings SET acknowledgements = '[]', version = version + 1 WHERE id = '{id}'"
        ),
    )
    .await
    .expect_err("acknowledgements are final");
    assert!(error.contains("a signed note cannot change"), "{error}");
}

/// A note that was never checked (a recording adopted from the original,
/// its text written before the guardrails existed) is checked at signing:
/// its critical alert must be acknowledged all the same.
async fn a_note_never_checked_is_checked_when_it_is_signed(app: TestApp) {
    let recording = in_status(&app, RecordingStatus::Completed).await;
    let id = recording["id"].as_str().unwrap();
    common::execute(
        &app,
        &format!(
            "UPDATE recordings SET final_transcript = 'Allergic to penicillin. Start amoxicillin 500 mg three times a day.', \
             version = version + 1 WHERE id = '{id}'"
        ),
    )
    .await
    .unwrap();
    let note = current(&app, id).await;
    assert!(note["verification_results"].is_null());
    let r = sign(&app, id, Some(&tag_of(&note))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("ALLERGY_CONFLICT@"), "{detail}");
    let alert = detail
        .split_whitespace()
        .find(|w| w.starts_with("ALLERGY_CONFLICT@"))
        .unwrap()
        .to_owned();
    let r = sign_with(
        &app,
        id,
        &tag_of(&note),
        json!({"acknowledgements": [{"alert_id": alert, "reason": "Allergy disproven by skin testing"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["acknowledgements"][0]["rule_id"], "ALLERGY_CONFLICT");
}

/// A note without critical alerts is signed as before, with no body.
async fn a_note_without_critical_alerts_is_signed_without_acknowledgements(app: TestApp) {
    let note = completed_with_text(&app, SIGNED_TEXT).await;
    let id = note["id"].as_str().unwrap();
    assert_eq!(note["verification_results"]["alerts"], json!([]));
    // JSON `null` is no body, as an empty one is.
    let r = post_with_tag(
        &app,
        &format!("/api/v1/recordings/{id}/sign"),
        Some(&tag_of(&note)),
        Some(Value::Null),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["acknowledgements"], json!([]));
}

/// The state and last error of a recording's transcription job.
async fn job_of(app: &TestApp, id: &str) -> (String, Option<String>) {
    use clinscribe::db::Database;
    let sql = format!("SELECT state, last_error FROM jobs WHERE recording_id = '{id}'");
    let sql = sqlx::AssertSqlSafe(sql);
    match &app.state.db {
        Database::Sqlite(db) => sqlx::query_as(sql).fetch_one(db.readers()).await,
        Database::Postgres(db) => sqlx::query_as(sql).fetch_one(db.pool()).await,
    }
    .expect("job row")
}

crate::on_both_backends!(
    a_signed_note_keeps_its_text_and_takes_amendments_in_order,
    only_a_completed_note_with_text_is_signed_and_only_a_signed_one_amended,
    the_database_itself_refuses_to_change_a_signed_note,
    a_critical_alert_is_acknowledged_with_a_reason_before_signing,
    a_note_without_critical_alerts_is_signed_without_acknowledgements,
    a_note_never_checked_is_checked_when_it_is_signed,
);

/// The purge runs by itself in the server: a real process with a short
/// `PWA_DELETED_RETENTION` deletes a deleted recording's audio file, keeps the
/// others', and the feed still reports the deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_purges_deleted_audio_by_itself_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let audio_dir = dir.path().join("audio");
    let server = common::ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[
            ("PWA_AUDIO_DIR", audio_dir.to_str().unwrap()),
            ("PWA_DELETED_RETENTION", "2s"),
        ],
    );
    let (status, doomed) = common::upload_to(
        &server.base_url,
        "patient-purge",
        &webm(40_000, 1),
        "6d0d1d5e-0000-4000-8000-000000000001",
    )
    .await;
    assert_eq!(status, 201);
    let (status, kept) = common::upload_to(
        &server.base_url,
        "patient-purge",
        &webm(40_000, 2),
        "6d0d1d5e-0000-4000-8000-000000000002",
    )
    .await;
    assert_eq!(status, 201);
    let objects = || common::files_under(&audio_dir.join("objects"));
    assert_eq!(objects().len(), 2);

    let id = doomed["id"].as_str().unwrap();
    let deleted = common::client()
        .delete(server.url(&format!("/api/v1/recordings/{id}")))
        .header("if-match", tag_of(&doomed))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let started = std::time::Instant::now();
    while objects().len() == 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the audio was never purged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = objects();
    assert_eq!(left.len(), 1);
    assert!(
        left[0]
            .to_str()
            .unwrap()
            .contains(kept["id"].as_str().unwrap())
    );
    let feed: Value = server.get_json("/api/v1/changes").await;
    let tombstone = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .expect("the deletion in the feed");
    assert_eq!(tombstone["deleted"], true);
    assert_eq!(tombstone["recording"], Value::Null);
    assert_eq!(server.terminate(), Some(0));
}
