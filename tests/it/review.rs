//! Review without lost updates: versions and ETags, conditional patches
//! (412 with the current recording, 428 without If-Match), the status
//! life-cycle, and the worker never overwriting a clinician's text.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{self, TestApp, TestResponse};
use clinscribe::jobs::JobResult;
use clinscribe::recordings::RecordingStatus;

pub(crate) async fn patch(
    app: &TestApp,
    id: &str,
    if_match: Option<&str>,
    body: Value,
) -> TestResponse {
    let mut headers = vec![("content-type", "application/merge-patch+json")];
    if let Some(tag) = if_match {
        headers.push(("if-match", tag));
    }
    app.send_with(
        Method::PATCH,
        &format!("/api/v1/recordings/{id}"),
        &headers,
        Body::from(body.to_string()),
    )
    .await
}

/// The recording as the API answers it now.
pub(crate) async fn current(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/recordings/{id}")).await.body
}

/// The `If-Match` value for the version a client holds.
pub(crate) fn tag_of(recording: &Value) -> String {
    format!("\"{}\"", recording["version"])
}

pub(crate) async fn get_if_none_match(app: &TestApp, url: &str, tag: &str) -> TestResponse {
    app.send_with(Method::GET, url, &[("if-none-match", tag)], Body::empty())
        .await
}

pub(crate) fn etag(response: &TestResponse) -> &str {
    response.headers["etag"].to_str().unwrap()
}

/// Moves a fresh recording to `status` the way the system does (not by patch).
pub(crate) async fn in_status(app: &TestApp, status: RecordingStatus) -> Value {
    let created = app.create("patient-review", 30).await;
    let id = uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    if status != RecordingStatus::Pending {
        app.state
            .recordings
            .update_status(
                id,
                status,
                (status == RecordingStatus::Error).then_some("engine down"),
            )
            .await
            .unwrap();
    }
    // Through the store, not GET: a test's setup reads nothing a clinician would.
    serde_json::to_value(app.state.recordings.get(id).await.unwrap()).unwrap()
}

async fn every_change_grows_the_version_and_get_answers_304_for_the_current_one(app: TestApp) {
    let created = app.create("patient-review", 30).await;
    assert_eq!(created["version"], 1);
    let id = created["id"].as_str().unwrap();
    let url = format!("/api/v1/recordings/{id}");
    let first = app.get(&url).await;
    assert_eq!(etag(&first), "\"1\"");

    let same = get_if_none_match(&app, &url, "\"1\"").await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.text, "");
    assert_eq!(etag(&same), "\"1\"");

    // A change by the system (here: a status change) also counts.
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    let changed = app
        .state
        .recordings
        .update_status(uuid, RecordingStatus::Uploading, None)
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    let now = get_if_none_match(&app, &url, "\"1\"").await;
    assert_eq!(now.status, StatusCode::OK);
    assert_eq!(etag(&now), "\"2\"");
    assert_eq!(now.body["version"], 2);
}

async fn a_second_client_with_a_stale_version_gets_412_with_the_first_ones_result(app: TestApp) {
    let recording = in_status(&app, RecordingStatus::Completed).await;
    let id = recording["id"].as_str().unwrap();
    let seen = tag_of(&recording);

    let first = patch(
        &app,
        id,
        Some(&seen),
        json!({"final_transcript": "Metformin 500 mg twice daily."}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let after_first = recording["version"].as_i64().unwrap() + 1;
    assert_eq!(first.body["version"], after_first);
    assert_eq!(etag(&first), format!("\"{after_first}\""));
    assert_eq!(
        first.body["final_transcript"],
        "Metformin 500 mg twice daily."
    );

    let second = patch(
        &app,
        id,
        Some(&seen),
        json!({"final_transcript": "Metformin 850 mg."}),
    )
    .await;
    assert_eq!(
        second.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        second.text
    );
    assert_eq!(
        second.body["current"], first.body,
        "the first client's result"
    );
    assert!(
        second.body["detail"]
            .as_str()
            .unwrap()
            .contains("has changed"),
        "{}",
        second.text
    );
    assert_eq!(etag(&second), format!("\"{after_first}\""));
    let unchanged = current(&app, id).await;
    assert_eq!(unchanged, first.body, "a refused patch changes nothing");

    // With the fresh ETag, the second client's change goes through.
    let retried = patch(
        &app,
        id,
        Some(etag(&second)),
        json!({"final_transcript": "Metformin 850 mg."}),
    )
    .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(retried.body["version"], after_first + 1);
    assert_eq!(retried.body["final_transcript"], "Metformin 850 mg.");
    assert_eq!(
        retried.body["transcript"], recording["transcript"],
        "the engine's text stays"
    );

    // A patient id filed wrongly is corrected; a patch that changes nothing
    // keeps the version.
    let moved = patch(
        &app,
        id,
        Some(etag(&retried)),
        json!({"patient_id": "patient-other"}),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_eq!(moved.body["patient_id"], "patient-other");
    let noop = patch(
        &app,
        id,
        Some(etag(&moved)),
        json!({"patient_id": "patient-other"}),
    )
    .await;
    assert_eq!(noop.status, StatusCode::OK);
    assert_eq!(noop.body["version"], moved.body["version"]);
}

async fn a_patch_without_if_match_or_with_bad_fields_changes_nothing(app: TestApp) {
    let recording = in_status(&app, RecordingStatus::Completed).await;
    let id = recording["id"].as_str().unwrap();
    let tag = tag_of(&recording);
    let body = json!({"final_transcript": "changed"});

    let missing = patch(&app, id, None, body.clone()).await;
    assert_eq!(missing.status, StatusCode::PRECONDITION_REQUIRED);
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("If-Match is required")
    );
    for bad in ["*", "W/\"2\"", "2", "\"1\", \"2\""] {
        let response = patch(&app, id, Some(bad), body.clone()).await;
        assert_eq!(response.status, StatusCode::PRECONDITION_REQUIRED, "{bad}");
    }

    let fields = patch(
        &app,
        id,
        Some(&tag),
        json!({"version": 9, "transcript": "x", "colour": 1}),
    )
    .await;
    assert_eq!(fields.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut named: Vec<&str> = fields.body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["loc"][1].as_str().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["colour", "transcript", "version"]);

    let not_json = app
        .send_with(
            Method::PATCH,
            &format!("/api/v1/recordings/{id}"),
            &[
                ("content-type", "application/json"),
                ("if-match", tag.as_str()),
            ],
            Body::from("{\"final_transcript\": "),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);

    let unknown = patch(&app, &uuid::Uuid::now_v7().to_string(), Some("\"1\""), body).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, json!({"detail": "Recording not found"}));

    let after = current(&app, id).await;
    assert_eq!(after, recording, "nothing changed");
}

async fn status_moves_follow_the_life_cycle_and_the_rest_are_409(app: TestApp) {
    for from in RecordingStatus::ALL {
        for to in RecordingStatus::ALL {
            let recording = in_status(&app, from).await;
            let id = recording["id"].as_str().unwrap();
            let tag = tag_of(&recording);
            let response = patch(&app, id, Some(&tag), json!({"status": to.as_str()})).await;
            let after = current(&app, id).await;
            if from == to {
                assert_eq!(response.status, StatusCode::OK, "{from} -> {to}");
                assert_eq!(after, recording, "{from} -> {to} changes nothing");
            } else if (from, to) == (RecordingStatus::Error, RecordingStatus::Queued) {
                assert_eq!(
                    response.status,
                    StatusCode::OK,
                    "{from} -> {to}: {}",
                    response.text
                );
                assert_eq!(after["status"], "queued");
                assert_eq!(
                    after["retry_count"],
                    recording["retry_count"].as_i64().unwrap() + 1
                );
                assert_eq!(after["error_message"], Value::Null);
                assert_eq!(after["version"], recording["version"].as_i64().unwrap() + 1);
                assert_eq!(
                    app.state.jobs.counts().await.unwrap().queued,
                    1,
                    "its job is queued"
                );
                // Taken off the queue again, so that the count above stays exact.
                let job = app
                    .state
                    .jobs
                    .claim("test", Duration::from_secs(60))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(job.recording_id.to_string(), id);
            } else {
                assert_eq!(
                    response.status,
                    StatusCode::CONFLICT,
                    "{from} -> {to}: {}",
                    response.text
                );
                let detail = response.body["detail"].as_str().unwrap();
                let allowed = if from == RecordingStatus::Error {
                    "'queued'"
                } else {
                    "none"
                };
                assert!(
                    detail.contains(&format!("cannot go from '{from}' to '{to}'"))
                        && detail.ends_with(allowed),
                    "{detail}"
                );
                assert_eq!(after, recording, "{from} -> {to} changes nothing");
            }
        }
    }
}

async fn the_worker_finishing_keeps_the_text_a_clinician_wrote_meanwhile(app: TestApp) {
    let failed = in_status(&app, RecordingStatus::Error).await;
    let id = failed["id"].as_str().unwrap();
    let requeued = patch(
        &app,
        id,
        Some(&tag_of(&failed)),
        json!({"status": "queued"}),
    )
    .await;
    assert_eq!(requeued.status, StatusCode::OK);
    let job = app
        .state
        .jobs
        .claim("worker-1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let processing = app.get(&format!("/api/v1/recordings/{id}")).await;
    assert_eq!(processing.body["status"], "processing");
    assert_eq!(
        processing.body["version"],
        requeued.body["version"].as_i64().unwrap() + 1
    );

    let typed = patch(
        &app,
        id,
        Some(etag(&processing)),
        json!({"final_transcript": "Typed by Dr Lee."}),
    )
    .await;
    assert_eq!(typed.status, StatusCode::OK, "{}", typed.text);
    let result = JobResult {
        text: "the engine's words".into(),
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
    let done = current(&app, id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["transcript"], "the engine's words");
    assert_eq!(
        done["final_transcript"], "Typed by Dr Lee.",
        "the clinician's text stays"
    );
    assert_eq!(done["version"], typed.body["version"].as_i64().unwrap() + 1);
}

crate::on_both_backends!(
    every_change_grows_the_version_and_get_answers_304_for_the_current_one,
    a_second_client_with_a_stale_version_gets_412_with_the_first_ones_result,
    a_patch_without_if_match_or_with_bad_fields_changes_nothing,
    status_moves_follow_the_life_cycle_and_the_rest_are_409,
    the_worker_finishing_keeps_the_text_a_clinician_wrote_meanwhile,
);
