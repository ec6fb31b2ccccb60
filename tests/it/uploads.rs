//! Audio uploads: stored exactly once per dictation, durable, downloadable with
//! ranges; chunked uploads that survive interruptions; Idempotency-Key; every
//! bad input refused without writing anything. On SQLite, and on PostgreSQL
//! when `PWA_TEST_POSTGRES_URL` is set.

use crate::common;

use crate::common::{TestApp, multipart, sha256_hex, webm};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

const UPLOAD: &str = "/api/v1/recordings/upload";

async fn upload(app: &TestApp, audio: &[u8], key: Option<&str>) -> common::TestResponse {
    let mut fields: Vec<(&str, Option<&str>, &[u8])> = vec![
        ("patient_id", None, b"patient-042"),
        ("duration_seconds", None, b"95"),
        ("draft_transcript", None, "Draft: chest clear ✓".as_bytes()),
        ("audio", Some("dictation.webm"), audio),
    ];
    if let Some(key) = key {
        fields.push(("local_storage_key", None, key.as_bytes()));
    }
    let (content_type, body) = multipart(&fields);
    app.send_with(
        Method::POST,
        UPLOAD,
        &[("content-type", &content_type)],
        body,
    )
    .await
}

/// Nothing in the database, and no audio file left anywhere.
async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.row_count().await, 0, "no recording");
    assert!(app.audio_files("objects").is_empty(), "no stored audio");
    assert!(app.audio_files("tmp").is_empty(), "no temporary file");
}

async fn upload_then_download_returns_identical_bytes_and_ranges(app: TestApp) {
    let audio = webm(300_000, 1);
    let key = uuid::Uuid::new_v4().to_string();
    let r = upload(&app, &audio, Some(&key)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let body = &r.body;
    assert_eq!(body["durable"], true);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["patient_id"], "patient-042");
    assert_eq!(body["duration_seconds"], 95);
    assert_eq!(body["local_storage_key"], key.as_str());
    assert_eq!(body["draft_transcript"], "Draft: chest clear ✓");
    assert_eq!(body["audio_file_size"], 300_000);
    assert_eq!(body["audio_sha256"], sha256_hex(&audio).as_str());
    assert_eq!(body["audio_content_type"], "audio/webm");
    assert_eq!(body["upload_attempts"], 1);
    assert!(body["uploaded_at"].is_string());
    let id = body["id"].as_str().unwrap().to_owned();
    // GET answers the same recording (without the upload-only "durable").
    let got = app.get(&format!("/api/v1/recordings/{id}")).await;
    let mut expected = body.clone();
    expected.as_object_mut().unwrap().remove("durable");
    assert_eq!(got.body, expected);

    let url = format!("/api/v1/recordings/{id}/audio");
    let (status, headers, bytes) = app.get_bytes(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, audio, "identical bytes");
    assert_eq!(headers["content-type"], "audio/webm");
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&audio)));

    for (range, start, end) in [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=299000-", 299_000, 299_999),
        ("bytes=-500", 299_500, 299_999),
        ("bytes=123456-123456", 123_456, 123_456),
    ] {
        let (status, headers, bytes) = app.get_bytes(&url, &[("range", range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(bytes, &audio[start..=end], "{range}");
        assert_eq!(
            headers["content-range"],
            format!("bytes {start}-{end}/300000").as_str()
        );
    }
    let (status, headers, _) = app.get_bytes(&url, &[("range", "bytes=300000-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */300000");
    let (status, _, bytes) = app.get_bytes(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(bytes.is_empty());

    // A recording without audio (created as JSON, with a client path that is
    // never opened) has none to download.
    let other = app
        .post_json(
            "/api/v1/recordings",
            r#"{"patient_id":"p","duration_seconds":1,"audio_file_path":"../../../etc/passwd"}"#,
        )
        .await;
    let other_id = other.body["id"].as_str().unwrap();
    let r = app
        .get(&format!("/api/v1/recordings/{other_id}/audio"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["detail"], "Recording has no audio");
    let r = app
        .get(&format!(
            "/api/v1/recordings/{}/audio",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn the_same_upload_five_times_makes_one_recording(app: TestApp) {
    // One after the other: the first creates, the rest get it back.
    let audio = webm(50_000, 2);
    let key = uuid::Uuid::new_v4().to_string();
    let mut ids = Vec::new();
    for attempt in 1..=5 {
        let r = upload(&app, &audio, Some(&key)).await;
        let expected = if attempt == 1 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, expected, "attempt {attempt}: {}", r.text);
        assert_eq!(r.body["durable"], true);
        assert_eq!(r.body["upload_attempts"], attempt);
        ids.push(r.body["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert_eq!(app.row_count().await, 1);
    assert_eq!(app.audio_files("objects").len(), 1, "one stored object");
    // Each repeat counted an attempt, and each is audited with that change.
    let events = app.state.audit.export(None, None, None).await.unwrap();
    let uploads: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.action == "upload")
        .map(|e| &e.changes)
        .collect();
    assert_eq!(uploads.len(), 5);
    for (attempt, changes) in uploads[1..].iter().enumerate() {
        assert_eq!(
            **changes,
            serde_json::json!({"upload_attempts": [attempt + 1, attempt + 2]})
        );
    }

    // Five at once.
    let audio = webm(80_000, 3);
    let key = uuid::Uuid::new_v4().to_string();
    let (content_type, body) = multipart(&[
        ("patient_id", None, b"patient-7"),
        ("duration_seconds", None, b"12"),
        ("local_storage_key", None, key.as_bytes()),
        ("audio", Some("a.webm"), &audio),
    ]);
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (app, content_type, body) = (app.clone(), content_type.clone(), body.clone());
            tokio::spawn(async move {
                app.send_with(
                    Method::POST,
                    UPLOAD,
                    &[("content-type", &content_type)],
                    body,
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        statuses.push(r.status.as_u16());
        ids.insert(r.body["id"].as_str().unwrap().to_owned());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200, 200, 201]);
    assert_eq!(ids.len(), 1, "one recording");
    assert_eq!(app.row_count().await, 2);
    assert_eq!(
        app.audio_files("objects").len(),
        2,
        "one object per dictation"
    );
    assert!(app.audio_files("tmp").is_empty());
}

async fn the_same_key_with_different_audio_is_409_and_changes_nothing(app: TestApp) {
    let key = uuid::Uuid::new_v4().to_string();
    let first = upload(&app, &webm(10_000, 4), Some(&key)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let r = upload(&app, &webm(10_000, 5), Some(&key)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("already belongs to a recording with different audio"),
        "{}",
        r.text
    );
    assert_eq!(app.row_count().await, 1);
    assert_eq!(app.audio_files("objects").len(), 1);
    assert!(app.audio_files("tmp").is_empty());
    let id = first.body["id"].as_str().unwrap();
    let again = app.get(&format!("/api/v1/recordings/{id}")).await;
    assert_eq!(
        again.body["upload_attempts"], 1,
        "a refused upload is not an attempt"
    );
}

async fn bad_uploads_are_refused_and_write_nothing(app: TestApp) {
    let missing = |r: &common::TestResponse| -> Vec<Value> {
        r.body["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| json!([i["type"], i["loc"]]))
            .collect()
    };
    // Not multipart at all: every required field is missing.
    let r = app
        .post_json(UPLOAD, r#"{"patient_id":"p","duration_seconds":1}"#)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        missing(&r),
        vec![
            json!(["missing", ["body", "audio"]]),
            json!(["missing", ["body", "patient_id"]]),
            json!(["missing", ["body", "duration_seconds"]]),
        ]
    );
    // No audio field.
    let (ct, body) = multipart(&[("patient_id", None, b"p"), ("duration_seconds", None, b"3")]);
    let r = app
        .send_with(Method::POST, UPLOAD, &[("content-type", &ct)], body)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing(&r), vec![json!(["missing", ["body", "audio"]])]);
    // Bad fields alongside good audio: the audio is not kept.
    let audio = webm(5_000, 6);
    let (ct, body) = multipart(&[
        ("patient_id", None, b" "),
        ("duration_seconds", None, b"-4"),
        ("local_storage_key", None, b"not-a-uuid"),
        ("audio", Some("a.webm"), &audio),
    ]);
    let r = app
        .send_with(Method::POST, UPLOAD, &[("content-type", &ct)], body)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let kinds: Vec<Value> = missing(&r);
    assert_eq!(kinds.len(), 3, "{}", r.text);
    assert!(kinds.contains(&json!(["uuid_parsing", ["body", "local_storage_key"]])));
    // The JSON create's rules for every text field: no invisible formatting in
    // the patient id, no NUL (or other control characters but tab and line
    // breaks) in the draft transcript, which PostgreSQL could not store.
    let (ct, body) = multipart(&[
        ("patient_id", None, "patient-\u{202e}001".as_bytes()),
        ("duration_seconds", None, b"4"),
        ("draft_transcript", None, b"BP 140/90\0 on lisinopril"),
        ("audio", Some("a.webm"), &audio),
    ]);
    let r = app
        .send_with(Method::POST, UPLOAD, &[("content-type", &ct)], body)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        missing(&r),
        vec![
            json!(["string_pattern_mismatch", ["body", "patient_id"]]),
            json!(["string_pattern_mismatch", ["body", "draft_transcript"]]),
        ]
    );
    let r = app
        .post_json(
            "/api/v1/uploads",
            r#"{"local_storage_key":"6a1f3c2e-8b4d-4e5f-9a0b-1c2d3e4f5a6b","patient_id":"p","duration_seconds":4,"total_bytes":5000,"draft_transcript":"a\u0000b"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        missing(&r),
        vec![json!([
            "string_pattern_mismatch",
            ["body", "draft_transcript"]
        ])]
    );
    // Line breaks and tabs in a draft are fine.
    let (ct, body) = multipart(&[
        ("patient_id", None, b"p-ok"),
        ("duration_seconds", None, b"4"),
        ("draft_transcript", None, b"line one\n\tline two\r\n"),
        ("audio", Some("a.webm"), &audio),
    ]);
    let other = TestApp::on(app.backend).await;
    let r = other
        .send_with(Method::POST, UPLOAD, &[("content-type", &ct)], body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["draft_transcript"], "line one\n\tline two\r\n");
    // Not audio: a PDF, HTML, text; and an empty file.
    for (bytes, expected) in [
        (
            &b"%PDF-1.7\n%\xE2\xE3\xCF\xD3 lots of pdf"[..],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            &b"<html><script>alert(1)</script></html>"[..],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (&b"hi"[..], StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (&b""[..], StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = upload(&app, bytes, Some(&uuid::Uuid::new_v4().to_string())).await;
        assert_eq!(r.status, expected, "{}", r.text);
    }
    // Announced as too large: refused before reading.
    let r = app
        .send_with(
            Method::POST,
            UPLOAD,
            &[
                ("content-type", "multipart/form-data; boundary=x"),
                ("content-length", "10000000000"),
            ],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_nothing_written(&app).await;

    // The client disconnects in the middle of the audio.
    let (ct, body) = multipart(&[
        ("patient_id", None, b"p"),
        ("duration_seconds", None, b"3"),
        ("audio", Some("a.webm"), &webm(200_000, 8)),
    ]);
    let r = app
        .send_with(
            Method::POST,
            UPLOAD,
            &[("content-type", &ct)],
            broken_body(body[..100_000].to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_nothing_written(&app).await;

    // Larger than the limit while streaming (a 1 MiB limit, 1.5 MiB of audio).
    let small = TestApp::with_uploads(app.backend, |s| s.max_bytes = 1024 * 1024).await;
    let r = upload(&small, &webm(1_500_000, 7), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_nothing_written(&small).await;
}

/// A request body that delivers `bytes` and then breaks, as a dropped connection does.
fn broken_body(bytes: Vec<u8>) -> Body {
    let stream = futures_util::stream::iter(vec![
        Ok(axum::body::Bytes::from(bytes)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )),
    ]);
    Body::from_stream(stream)
}

async fn chunked_upload_interrupted_after_each_chunk_resumes_to_one_recording(app: TestApp) {
    let audio = webm(350_000, 8);
    let key = uuid::Uuid::new_v4().to_string();
    let start = json!({"local_storage_key": key, "patient_id": "patient-9", "duration_seconds": 600,
                       "total_bytes": audio.len(), "draft_transcript": "long dictation"});
    let r = app.post_json("/api/v1/uploads", &start.to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["received_bytes"], 0);
    // Starting again (the response was lost) resumes the same session.
    let r = app.post_json("/api/v1/uploads", &start.to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["upload-offset"], "0");

    let url = format!("/api/v1/uploads/{key}");
    let total = audio.len();
    let chunk = 64 * 1024;
    let mut offset = 0usize;
    let mut last = None;
    while offset < total {
        let end = (offset + chunk).min(total) - 1;
        let range = format!("bytes {offset}-{end}/{total}");
        // Half the chunk arrives, then the connection drops.
        let half = (end + 1 - offset) / 2;
        let r = app
            .put_chunk(
                &url,
                &range,
                broken_body(audio[offset..offset + half].to_vec()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        // Where does the server stand? It kept what arrived.
        let head = app.send_with(Method::HEAD, &url, &[], Body::empty()).await;
        assert_eq!(head.status, StatusCode::OK);
        let held: usize = head.headers["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(held, offset + half);
        // Sending from the wrong place is refused with the right offset.
        let wrong = format!("bytes {offset}-{end}/{total}");
        if half > 0 {
            let r = app
                .put_chunk(&url, &wrong, audio[offset..=end].to_vec())
                .await;
            assert_eq!(r.status, StatusCode::CONFLICT);
            assert_eq!(r.headers["upload-offset"], held.to_string().as_str());
        }
        // Resume from there.
        let range = format!("bytes {held}-{end}/{total}");
        let r = app
            .put_chunk(&url, &range, audio[held..=end].to_vec())
            .await;
        offset = end + 1;
        if offset < total {
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
            assert_eq!(r.body["received_bytes"], offset);
        } else {
            last = Some(r);
        }
    }
    let done = last.unwrap();
    assert_eq!(done.status, StatusCode::CREATED, "{}", done.text);
    assert_eq!(done.body["durable"], true);
    assert_eq!(done.body["audio_sha256"], sha256_hex(&audio).as_str());
    assert_eq!(done.body["draft_transcript"], "long dictation");
    assert_eq!(done.body["duration_seconds"], 600);
    let id = done.body["id"].as_str().unwrap().to_owned();

    // The last chunk's answer was lost: sending it again gets the recording.
    let range = format!("bytes {}-{}/{total}", total - 10, total - 1);
    let r = app
        .put_chunk(&url, &range, audio[total - 10..].to_vec())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], id.as_str());
    let status = app.get(&url).await;
    assert_eq!(status.body["complete"], true);
    assert_eq!(status.body["recording"]["id"], id.as_str());

    let (_, _, bytes) = app
        .get_bytes(&format!("/api/v1/recordings/{id}/audio"), &[])
        .await;
    assert_eq!(bytes, audio);
    assert_eq!(app.row_count().await, 1);
    assert_eq!(app.audio_files("objects").len(), 1);
    assert!(
        app.audio_files("partial").is_empty(),
        "no partial file left"
    );
    assert!(app.audio_files("tmp").is_empty());
}

/// A chunk that reaches an instance without the bytes before it (no shared
/// audio directory, or lost) restarts the dictation there from byte 0: never a gap.
async fn chunked_upload_without_its_earlier_bytes_restarts_from_zero(app: TestApp) {
    let audio = webm(200_000, 11);
    let key = uuid::Uuid::new_v4();
    let start = json!({"local_storage_key": key, "patient_id": "p", "duration_seconds": 9, "total_bytes": audio.len()});
    assert_eq!(
        app.post_json("/api/v1/uploads", &start.to_string())
            .await
            .status,
        StatusCode::CREATED
    );
    let url = format!("/api/v1/uploads/{key}");
    let first = app
        .put_chunk(&url, "bytes 0-99999/200000", audio[..100_000].to_vec())
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    for file in app.audio_files("partial") {
        std::fs::remove_file(file).unwrap(); // as if this chunk had reached another instance
    }
    let next = app
        .put_chunk(
            &url,
            "bytes 100000-199999/200000",
            audio[100_000..].to_vec(),
        )
        .await;
    assert_eq!(next.status, StatusCode::CONFLICT, "{}", next.text);
    assert_eq!(next.headers["upload-offset"], "0");
    let whole = app
        .put_chunk(&url, "bytes 0-199999/200000", audio.clone())
        .await;
    assert_eq!(whole.status, StatusCode::CREATED, "{}", whole.text);
    assert_eq!(whole.body["audio_sha256"], sha256_hex(&audio).as_str());
}

async fn chunked_uploads_refuse_bad_input(app: TestApp) {
    let key = uuid::Uuid::new_v4().to_string();
    // Bad session starts.
    for (body, status) in [
        (
            json!({"patient_id": "p", "duration_seconds": 1, "total_bytes": 10}),
            422,
        ),
        (
            json!({"local_storage_key": "x", "patient_id": "p", "duration_seconds": 1, "total_bytes": 10}),
            422,
        ),
        (
            json!({"local_storage_key": key, "patient_id": "p", "duration_seconds": 1, "total_bytes": 0}),
            422,
        ),
        (
            json!({"local_storage_key": key, "patient_id": "", "duration_seconds": 1, "total_bytes": 10}),
            422,
        ),
        (
            json!({"local_storage_key": key, "patient_id": "p", "duration_seconds": 1, "total_bytes": 10_000_000_000u64}),
            413,
        ),
    ] {
        let r = app.post_json("/api/v1/uploads", &body.to_string()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
    }
    let url = format!("/api/v1/uploads/{key}");
    // No session.
    let r = app.put_chunk(&url, "bytes 0-3/4", vec![0u8; 4]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/v1/uploads/nope").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let start = json!({"local_storage_key": key, "patient_id": "p", "duration_seconds": 1, "total_bytes": 1000});
    assert_eq!(
        app.post_json("/api/v1/uploads", &start.to_string())
            .await
            .status,
        StatusCode::CREATED
    );
    // The same key with other metadata while in progress.
    let other = json!({"local_storage_key": key, "patient_id": "q", "duration_seconds": 1, "total_bytes": 1000});
    assert_eq!(
        app.post_json("/api/v1/uploads", &other.to_string())
            .await
            .status,
        StatusCode::CONFLICT
    );
    // Missing or malformed Content-Range; wrong total.
    for range in [
        None,
        Some("bytes 0-9"),
        Some("bytes 9-0/1000"),
        Some("items 0-9/1000"),
        Some("bytes 0-1000/1000"),
    ] {
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("content-range", *r)).collect();
        let r = app
            .send_with(Method::PUT, &url, &headers, vec![0u8; 10])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{range:?}");
    }
    let r = app.put_chunk(&url, "bytes 0-9/999", vec![0u8; 10]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // More bytes than the range says.
    let r = app.put_chunk(&url, "bytes 0-9/1000", webm(20, 1)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    // Not audio: refused at the first chunk, the session is gone.
    let r = app
        .put_chunk(&url, "bytes 0-99/1000", vec![b'%'; 100])
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);
    assert_eq!(app.get(&url).await.status, StatusCode::NOT_FOUND);
    assert!(app.audio_files("partial").is_empty());
    assert_nothing_written(&app).await;
}

async fn idempotency_key_replays_the_first_response(app: TestApp) {
    let body = r#"{"patient_id":"p-1","duration_seconds":30}"#;
    let key = [
        ("content-type", "application/json"),
        ("idempotency-key", "create-7f3a"),
    ];
    let first = app
        .send_with(Method::POST, "/api/v1/recordings", &key, body)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // Same key, same body (other spacing and key order): the same response.
    let again = app
        .send_with(
            Method::POST,
            "/api/v1/recordings",
            &key,
            r#"{ "duration_seconds": 30, "patient_id": "p-1" }"#,
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // Same key, other body.
    let other = app
        .send_with(
            Method::POST,
            "/api/v1/recordings",
            &key,
            r#"{"patient_id":"p-2","duration_seconds":30}"#,
        )
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.body["detail"][0]["type"], "idempotency_key_reused");
    assert_eq!(
        other.body["detail"][0]["loc"],
        json!(["header", "idempotency-key"])
    );
    assert!(
        other.body["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("different request body")
    );
    assert_eq!(app.row_count().await, 1);

    // A key whose first request is still being processed.
    let held = app
        .state
        .idempotency
        .claim(
            "current-clinician",
            "busy-key",
            &clinscribe::idempotency::fingerprint(&serde_json::from_str(body).unwrap()),
        )
        .await
        .unwrap();
    assert!(
        matches!(held, clinscribe::idempotency::Claim::Claimed(_)),
        "{held:?}"
    );
    let with_busy_key = || {
        app.send_with(
            Method::POST,
            "/api/v1/recordings",
            &[
                ("content-type", "application/json"),
                ("idempotency-key", "busy-key"),
            ],
            body,
        )
    };
    let busy = with_busy_key().await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.text);
    assert!(
        busy.headers.contains_key("retry-after"),
        "the client may retry"
    );
    // Once its request is gone (here: the hold dropped, as when a request's
    // write and release both failed, or its client went away), the claim no
    // longer blocks the key: at once on SQLite, where one server holds the
    // database; on PostgreSQL, another instance may hold it, so only after
    // ABANDONED_AFTER.
    drop(held);
    let retried = with_busy_key().await;
    let taken_over = app.backend == common::Backend::Sqlite;
    let expected = if taken_over {
        StatusCode::CREATED
    } else {
        StatusCode::CONFLICT
    };
    assert_eq!(retried.status, expected, "{}", retried.text);

    // An invalid request with a key is not remembered: the corrected one works.
    let fix = [
        ("content-type", "application/json"),
        ("idempotency-key", "fix-me"),
    ];
    let bad = app
        .send_with(
            Method::POST,
            "/api/v1/recordings",
            &fix,
            r#"{"patient_id":"p"}"#,
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let good = app
        .send_with(Method::POST, "/api/v1/recordings", &fix, body)
        .await;
    assert_eq!(good.status, StatusCode::CREATED);
    // Malformed keys.
    let long = "k".repeat(256);
    for bad_key in ["", "has space", long.as_str()] {
        let r = app
            .send_with(
                Method::POST,
                "/api/v1/recordings",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", bad_key),
                ],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad_key:?}");
    }
    assert_eq!(app.row_count().await, if taken_over { 3 } else { 2 });
}

async fn cleanup_deletes_orphans_and_expired_sessions_only(app: TestApp) {
    let app = TestApp::with_uploads(app.backend, |s| {
        s.expiry = std::time::Duration::from_secs(1)
    })
    .await;
    let kept = upload(
        &app,
        &webm(1_000, 9),
        Some(&uuid::Uuid::new_v4().to_string()),
    )
    .await;
    assert_eq!(kept.status, StatusCode::CREATED);
    // What a crash between storing the audio and committing its row leaves.
    let orphan_id = uuid::Uuid::now_v7();
    let orphan =
        app.dir
            .path()
            .join("audio")
            .join(clinscribe::audio::storage::AudioStore::object_key(
                orphan_id,
                "audio/webm",
            ));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, webm(100, 1)).unwrap();
    std::fs::write(app.dir.path().join("audio/tmp/dead.part"), b"x").unwrap();
    // A chunked upload's bytes whose session a crash lost.
    std::fs::write(app.dir.path().join("audio/partial/lost.part"), b"x").unwrap();
    let key = uuid::Uuid::new_v4();
    let start = json!({"local_storage_key": key, "patient_id": "p", "duration_seconds": 1, "total_bytes": 1000});
    app.post_json("/api/v1/uploads", &start.to_string()).await;
    app.put_chunk(
        &format!("/api/v1/uploads/{key}"),
        "bytes 0-99/1000",
        webm(100, 2),
    )
    .await;
    assert_eq!(
        app.audio_files("partial").len(),
        2,
        "the session's and the lost one"
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = app.state.uploads.sweep().await.unwrap();
    assert_eq!(report.orphaned_objects, 1);
    assert_eq!(report.temporary_files, 2);
    assert_eq!(report.sessions, 1);
    assert!(!orphan.exists());
    assert_eq!(
        app.audio_files("objects").len(),
        1,
        "the recorded audio stays"
    );
    assert!(app.audio_files("partial").is_empty());
    let id = kept.body["id"].as_str().unwrap();
    let (status, _, _) = app
        .get_bytes(&format!("/api/v1/recordings/{id}/audio"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
}

crate::on_both_backends!(
    upload_then_download_returns_identical_bytes_and_ranges,
    the_same_upload_five_times_makes_one_recording,
    the_same_key_with_different_audio_is_409_and_changes_nothing,
    bad_uploads_are_refused_and_write_nothing,
    chunked_upload_interrupted_after_each_chunk_resumes_to_one_recording,
    chunked_uploads_refuse_bad_input,
    chunked_upload_without_its_earlier_bytes_restarts_from_zero,
    idempotency_key_replays_the_first_response,
    cleanup_deletes_orphans_and_expired_sessions_only,
);

// ---------------------------------------------------------------- the real binary

/// `kill -9` while 20 clients upload: every acknowledged upload has its row
/// and its exact bytes after a restart; no row points to a missing file; once
/// the cleanup has run, no file is left without a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_20_concurrent_uploads_loses_no_acknowledged_upload() {
    use crate::common::{ServerProcess, client, files_under};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clinical.db");
    let audio_dir = dir.path().join("audio");
    let env = [
        ("PWA_AUDIO_DIR", audio_dir.to_str().unwrap()),
        ("PWA_UPLOAD_EXPIRY", "1s"),
    ];
    let server = ServerProcess::start_with_env(&db, &env);
    let url = server.url(UPLOAD);
    // (recording id, the audio sent) of every upload answered 201.
    type Acknowledged = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let acknowledged: Acknowledged = Arc::default();
    let http = client();
    let mut tasks = Vec::new();
    for c in 0..20u64 {
        let (url, http, acknowledged) = (url.clone(), http.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            // Each client uploads dictations one after another until the server dies.
            for n in 0.. {
                let audio = webm(200_000 + (c as usize) * 997, c * 1000 + n);
                let key = uuid::Uuid::new_v4().to_string();
                let (ct, body) = multipart(&[
                    ("patient_id", None, format!("patient-{c}").as_bytes()),
                    ("duration_seconds", None, b"30"),
                    ("local_storage_key", None, key.as_bytes()),
                    ("audio", Some("a.webm"), &audio),
                ]);
                let Ok(response) = http
                    .post(&url)
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() != 201 {
                    return;
                }
                let Ok(json) = response.json::<Value>().await else {
                    return;
                };
                assert_eq!(json["durable"], true);
                let id = json["id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push((id, audio));
            }
        }));
    }
    // Let uploads flow, then pull the plug.
    while acknowledged.lock().unwrap().len() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill_9();
    for t in tasks {
        t.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 40);

    // Files a crash may leave must be older than PWA_UPLOAD_EXPIRY to be swept.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let server = ServerProcess::start_with_env(&db, &env);
    for (id, audio) in &acknowledged {
        let response = http
            .get(server.url(&format!("/api/v1/recordings/{id}/audio")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "acknowledged upload {id} lost");
        assert_eq!(
            &response.bytes().await.unwrap()[..],
            &audio[..],
            "bytes of {id}"
        );
    }
    // Every row's audio exists (the cleanup runs at start and every second).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let db_handle = common::open_db(&db).await;
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT id, audio_file_path FROM recordings WHERE audio_sha256 IS NOT NULL")
            .fetch_all(db_handle.readers())
            .await
            .unwrap();
    db_handle.close().await;
    assert!(stored.len() >= acknowledged.len());
    for (id, path) in &stored {
        assert!(
            audio_dir.join(path).is_file(),
            "row {id} points to a missing file"
        );
    }
    let files = files_under(&audio_dir.join("objects"));
    assert_eq!(
        files.len(),
        stored.len(),
        "no file without a row after cleanup"
    );
    assert!(
        files_under(&audio_dir.join("tmp")).is_empty(),
        "no temporary file left"
    );
    assert_eq!(server.terminate(), Some(0));
}
