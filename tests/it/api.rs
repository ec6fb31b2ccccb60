//! The HTTP API, driven through the router, against CONTRACT.md.

use crate::common;

use crate::common::TestApp;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

const RECORDINGS: &str = "/api/v1/recordings";

fn detail_types(body: &Value) -> Vec<(String, Value)> {
    body["detail"]
        .as_array()
        .expect("validation detail array")
        .iter()
        .map(|i| (i["type"].as_str().unwrap().to_owned(), i["loc"].clone()))
        .collect()
}

async fn health_reports_the_database(app: TestApp) {
    let r = app.get("/api/v1/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "healthy");
    assert_eq!(r.body["components"]["pwa"], "ok");
    assert_eq!(r.body["components"]["database"], "ok");
    assert_eq!(r.body["components"]["extraction"], "embedded");
    assert_eq!(r.body["components"]["queue"], "ok (0 queued)");
    let disk = r.body["components"]["disk"].as_str().unwrap();
    match app.backend.name() {
        // The database's and the audio's directories, probed.
        "sqlite" => assert!(
            disk.starts_with("ok (") && disk.ends_with(" MiB free)"),
            "{disk}"
        ),
        // The database's disk is the PostgreSQL server's, out of sight.
        _ => assert_eq!(disk, "ok"),
    }
    assert_eq!(r.body["backend"], app.backend.name());
    // An orchestrator's probes: the process answers; it can serve.
    let live = app.get("/api/v1/health/live").await;
    assert_eq!(
        (live.status, live.body.clone()),
        (StatusCode::OK, serde_json::json!({"status": "alive"}))
    );
    let ready = app.get("/api/v1/health/ready").await;
    assert_eq!(
        (ready.status, ready.body.clone()),
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    );
}

async fn health_is_503_when_the_database_is_unusable(app: TestApp) {
    app.state.db.close().await;
    let r = app.get("/api/v1/health").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["status"], "unhealthy");
    assert_eq!(
        r.body["components"]["queue"],
        "down: the database is unusable"
    );
    let ready = app.get("/api/v1/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["status"], "not ready");
    assert_eq!(app.get("/api/v1/health/live").await.status, StatusCode::OK);
    assert!(
        r.body["detail"].as_str().unwrap().contains("database"),
        "{}",
        r.text
    );
    // Data routes say so too, instead of a 500.
    let create = app
        .post_json(RECORDINGS, r#"{"patient_id":"p","duration_seconds":1}"#)
        .await;
    assert_eq!(create.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(create.body["detail"], "The database is not available");
    assert!(create.headers.contains_key("retry-after"));
}

async fn create_returns_201_with_all_fields_and_ignores_client_controlled_ones(app: TestApp) {
    let r = app
        .post_json(
            RECORDINGS,
            r#"{"patient_id":"patient-001","duration_seconds":"120","audio_file_path":"/uploads/a.webm",
               "id":"00000000-0000-0000-0000-000000000000","status":"completed",
               "clinician_id":"mallory","created_at":"2000-01-01T00:00:00","unknown":1}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let body = r.body.as_object().unwrap();
    assert_eq!(
        body.len(),
        38,
        "the original's 15 fields, the 6 of uploads, the 11 of processing, the 5 of sign-off and the version"
    );
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["upload_attempts"], 0);
    assert_eq!(r.body["local_storage_key"], Value::Null);
    assert_eq!(r.body["patient_id"], "patient-001");
    assert_eq!(r.body["duration_seconds"], 120);
    assert_eq!(r.body["audio_file_path"], "/uploads/a.webm");
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["clinician_id"], "current-clinician");
    assert_ne!(r.body["id"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(r.body["retry_count"], 0);
    let created_at = r.body["created_at"].as_str().unwrap();
    assert!(
        created_at.starts_with("20") && created_at.ends_with('Z') && created_at.len() == 27,
        "{created_at}"
    );
    assert_eq!(r.body["error_message"], Value::Null);
    assert_eq!(r.body["verification_results"], Value::Null);

    let id = r.body["id"].as_str().unwrap();
    let fetched = app.get(&format!("{RECORDINGS}/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, r.body);
}

async fn get_accepts_unhyphenated_and_upper_case_ids(app: TestApp) {
    let created = app.create("p", 5).await;
    let id = created["id"].as_str().unwrap();
    for form in [
        id.replace('-', ""),
        id.to_uppercase(),
        id.replace('-', "").to_uppercase(),
    ] {
        let r = app.get(&format!("{RECORDINGS}/{form}")).await;
        assert_eq!(r.status, StatusCode::OK, "{form}");
        assert_eq!(r.body["id"], id, "answered with the canonical form");
    }
}

async fn get_unknown_is_404_and_malformed_is_422(app: TestApp) {
    let r = app
        .get(&format!(
            "{RECORDINGS}/6f1c1f0e-7b2a-4c39-9d0e-0a1b2c3d4e5f"
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, json!({"detail": "Recording not found"}));

    for bad in [
        "not-a-uuid",
        "6f1c1f0e-7b2a-4c39-9d0e",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "%00",
    ] {
        let r = app.get(&format!("{RECORDINGS}/{bad}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(r.body["detail"][0]["type"], "uuid_parsing");
        assert_eq!(r.body["detail"][0]["loc"], json!(["path", "recording_id"]));
    }
}

async fn bad_create_bodies_are_4xx_in_fastapis_shape_and_write_nothing(app: TestApp) {
    let body = |p: &str| json!(["body", p]);
    // (name, content type, body, expected issues); every case is a 422.
    type Case<'a> = (&'a str, Option<&'a str>, &'a str, Vec<(&'a str, Value)>);
    let cases: Vec<Case> = vec![
        (
            "empty object",
            Some("application/json"),
            "{}",
            vec![
                ("missing", body("patient_id")),
                ("missing", body("duration_seconds")),
            ],
        ),
        (
            "empty body",
            Some("application/json"),
            "",
            vec![("missing", json!(["body"]))],
        ),
        (
            "null",
            Some("application/json"),
            "null",
            vec![("missing", json!(["body"]))],
        ),
        (
            "not json",
            Some("application/json"),
            "{nope",
            vec![("json_invalid", json!(["body", 1]))],
        ),
        (
            "array",
            Some("application/json"),
            "[1,2]",
            vec![("model_attributes_type", json!(["body"]))],
        ),
        (
            "form",
            Some("application/x-www-form-urlencoded"),
            "patient_id=p&duration_seconds=1",
            vec![("model_attributes_type", json!(["body"]))],
        ),
        (
            "text",
            Some("text/plain"),
            r#"{"patient_id":"p","duration_seconds":1}"#,
            vec![("model_attributes_type", json!(["body"]))],
        ),
        (
            "abc duration",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":"abc"}"#,
            vec![("int_parsing", body("duration_seconds"))],
        ),
        (
            "fractional",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":12.5}"#,
            vec![("int_from_float", body("duration_seconds"))],
        ),
        (
            "null duration",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":null}"#,
            vec![("int_type", body("duration_seconds"))],
        ),
        (
            "bool duration",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":true}"#,
            vec![("int_type", body("duration_seconds"))],
        ),
        (
            "negative",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":-5}"#,
            vec![("greater_than_equal", body("duration_seconds"))],
        ),
        (
            "beyond 64 bits",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":123456789012345678901234567890}"#,
            vec![("int_parsing_size", body("duration_seconds"))],
        ),
        (
            "numeric patient",
            Some("application/json"),
            r#"{"patient_id":123,"duration_seconds":1}"#,
            vec![("string_type", body("patient_id"))],
        ),
        (
            "null patient",
            Some("application/json"),
            r#"{"patient_id":null,"duration_seconds":1}"#,
            vec![("string_type", body("patient_id"))],
        ),
        (
            "blank patient",
            Some("application/json"),
            r#"{"patient_id":"  ","duration_seconds":1}"#,
            vec![("string_too_short", body("patient_id"))],
        ),
        (
            "NUL in patient",
            Some("application/json"),
            r#"{"patient_id":"a\u0000b","duration_seconds":1}"#,
            vec![("string_pattern_mismatch", body("patient_id"))],
        ),
        (
            "right-to-left override in patient",
            Some("application/json"),
            r#"{"patient_id":"patient-\u202e100","duration_seconds":1}"#,
            vec![("string_pattern_mismatch", body("patient_id"))],
        ),
        (
            "zero-width space in patient",
            Some("application/json"),
            r#"{"patient_id":"patient\u200b-001","duration_seconds":1}"#,
            vec![("string_pattern_mismatch", body("patient_id"))],
        ),
        (
            "byte order mark in patient",
            Some("application/json"),
            r#"{"patient_id":"\ufeffpatient-001","duration_seconds":1}"#,
            vec![("string_pattern_mismatch", body("patient_id"))],
        ),
        (
            "lone surrogate",
            Some("application/json"),
            r#"{"patient_id":"\ud800","duration_seconds":1}"#,
            vec![("json_invalid", json!(["body", 21]))],
        ),
        (
            "numeric path",
            Some("application/json"),
            r#"{"patient_id":"p","duration_seconds":1,"audio_file_path":7}"#,
            vec![("string_type", body("audio_file_path"))],
        ),
    ];
    for (name, ct, payload, expected) in cases {
        let r = app
            .send(Method::POST, RECORDINGS, ct, payload.to_owned())
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            r.text
        );
        let got = detail_types(&r.body);
        let expected: Vec<(String, Value)> = expected
            .into_iter()
            .map(|(t, l)| (t.to_owned(), l))
            .collect();
        assert_eq!(got, expected, "{name}: {}", r.text);
        for issue in r.body["detail"].as_array().unwrap() {
            assert!(
                issue["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: msg"
            );
            assert!(issue.get("input").is_some(), "{name}: input");
        }
    }

    // Invalid UTF-8: 400, as the original.
    let r = app
        .send(
            Method::POST,
            RECORDINGS,
            Some("application/json"),
            vec![b'{', 0xff, 0xfe, b'}'],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body,
        json!({"detail": "There was an error parsing the body"})
    );

    // Over the body limit: 413.
    let huge = format!(
        r#"{{"patient_id":"p","duration_seconds":1,"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let r = app.post_json(RECORDINGS, &huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body["detail"].as_str().unwrap().contains("too large"));

    assert_eq!(app.row_count().await, 0, "no bad request wrote anything");
}

async fn create_without_content_type_is_read_as_json(app: TestApp) {
    let r = app
        .send(
            Method::POST,
            RECORDINGS,
            None,
            r#"{"patient_id":"p","duration_seconds":12.0}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["duration_seconds"], 12);
}

async fn list_filters_by_status_and_rejects_unknown_statuses(app: TestApp) {
    let a = app.create("p1", 1).await;
    let b = app.create("p2", 2).await;
    let id_b = uuid::Uuid::parse_str(b["id"].as_str().unwrap()).unwrap();
    app.state
        .recordings
        .update_status(
            id_b,
            clinscribe::recordings::RecordingStatus::Completed,
            None,
        )
        .await
        .unwrap();

    let r = app.get(RECORDINGS).await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<_> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].clone())
        .collect();
    assert_eq!(ids, vec![b["id"].clone(), a["id"].clone()], "newest first");
    assert!(r.headers.get("link").is_none());

    let r = app.get(&format!("{RECORDINGS}?status=pending")).await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<_> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].clone())
        .collect();
    assert_eq!(ids, vec![a["id"].clone()]);

    for bad in ["Pending", "PENDING", "", "done", "pending%00"] {
        let r = app.get(&format!("{RECORDINGS}?status={bad}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert_eq!(
            detail_types(&r.body),
            vec![("enum".to_owned(), json!(["query", "status"]))]
        );
    }
}

async fn list_pages_are_bounded_and_linked_with_a_cursor(app: TestApp) {
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create(&format!("p{i}"), i).await["id"].clone());
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut url = format!("{RECORDINGS}?limit=3&status=pending");
    let mut pages = 0;
    loop {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        pages += 1;
        let items = r.body.as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|x| x["id"].clone()));
        let Some(link) = r.headers.get("link") else {
            break;
        };
        let link = link.to_str().unwrap();
        assert!(link.ends_with(r#">; rel="next""#), "{link}");
        assert!(
            link.contains("status=pending") && link.contains("limit=3"),
            "{link}"
        );
        url = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    let default = app.get(RECORDINGS).await;
    assert_eq!(default.body.as_array().unwrap().len(), 7);

    for (query, kind) in [
        ("limit=0", "greater_than_equal"),
        ("limit=1001", "less_than_equal"),
        ("limit=ten", "int_parsing"),
        ("cursor=garbage", "value_error"),
    ] {
        let r = app.get(&format!("{RECORDINGS}?{query}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(r.body["detail"][0]["type"], kind, "{query}");
        assert_eq!(r.body["detail"][0]["loc"][0], "query");
    }
}

async fn routing_errors_match_fastapi(app: TestApp) {
    let r = app.get("/api/v1/recordings/?status=pending").await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers["location"], "/api/v1/recordings?status=pending");

    let r = app
        .send(Method::DELETE, RECORDINGS, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body, json!({"detail": "Method Not Allowed"}));
    let r = app
        .send(Method::PUT, "/api/v1/health", None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    let r = app.get("/api/v2/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, json!({"detail": "Not Found"}));
}

async fn every_response_carries_a_request_id(app: TestApp) {
    let r = app.get("/api/v1/health").await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
}

async fn a_clients_request_id_is_kept_only_when_short_and_printable(app: TestApp) {
    let kept = "req-7f3a_09.x";
    let r = app
        .send_with(
            Method::GET,
            "/api/v1/health",
            &[("x-request-id", kept)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], kept);
    let too_long = "a".repeat(65);
    for replaced in [too_long.as_str(), "has space", "tab\there", ""] {
        let r = app
            .send_with(
                Method::GET,
                "/api/v1/health",
                &[("x-request-id", replaced)],
                Body::empty(),
            )
            .await;
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "{replaced:?} replaced by {id}"
        );
    }
    let r = app
        .send_with(
            Method::GET,
            "/api/v1/health",
            &[("x-request-id", &"b".repeat(64))],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "b".repeat(64).as_str());
}

/// Every route, with what it must (not) allow caches to keep: patient data
/// (the API, audio) never; every response is served with `nosniff`.
async fn every_route_forbids_sniffing_and_patient_data_is_never_cached(app: TestApp) {
    let recording = app.create("patient-001", 60).await;
    let id = recording["id"].as_str().unwrap().to_owned();
    let (ct, body) = common::multipart(&[
        ("patient_id", None, b"patient-002"),
        ("duration_seconds", None, b"60"),
        (
            "local_storage_key",
            None,
            b"3e0b1c2d-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
        ),
        // A valid signature followed by HTML: still served as audio, never sniffed.
        (
            "audio",
            Some("a.webm"),
            b"\x1a\x45\xdf\xa3<html><script>alert(1)</script></html>",
        ),
    ]);
    let uploaded = app
        .send(Method::POST, "/api/v1/recordings/upload", Some(&ct), body)
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{}", uploaded.text);
    let audio_id = uploaded.body["id"].as_str().unwrap().to_owned();
    let shell = app.get("/").await.text;
    let asset = shell
        .split('"')
        .find(|s| s.starts_with("/static/"))
        .expect("a versioned asset")
        .to_owned();
    // (route, whether it carries patient data)
    let routes: Vec<(String, bool)> = vec![
        ("/api/v1/health".into(), true),
        ("/api/v1/recordings".into(), true),
        (format!("/api/v1/recordings/{id}"), true),
        (format!("/api/v1/recordings/{audio_id}/audio"), true),
        (
            "/api/v1/uploads/3e0b1c2d-4f5a-4b6c-8d7e-9f0a1b2c3d4e".into(),
            true,
        ),
        ("/api/v1/nothing-here".into(), true),
        ("/".into(), false),
        ("/record/patient-001".into(), false),
        ("/queue".into(), false),
        (format!("/recordings/{id}"), false),
        ("/sw.js".into(), false),
        ("/sw-module.js".into(), false),
        ("/manifest.webmanifest".into(), false),
        ("/favicon.ico".into(), false),
        (asset, false),
        ("/openapi.json".into(), false),
        ("/docs/".into(), false),
    ];
    for (route, patient_data) in routes {
        let (status, headers, _) = app.get_bytes(&route, &[]).await;
        assert!(status.as_u16() < 500, "{route}: {status}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{route}");
        if patient_data {
            assert_eq!(headers["cache-control"], "no-store", "{route}");
        } else {
            assert_ne!(
                headers.get("cache-control").map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "{route}: the app shell and assets stay cacheable for offline use"
            );
        }
    }
    let (_, headers, _) = app
        .get_bytes(&format!("/api/v1/recordings/{audio_id}/audio"), &[])
        .await;
    assert_eq!(headers["content-type"], "audio/webm");
    // The API explorer may only run its own code, and never inside a frame.
    let (_, headers, _) = app.get_bytes("/docs/", &[]).await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
}

crate::on_both_backends!(
    a_clients_request_id_is_kept_only_when_short_and_printable,
    every_route_forbids_sniffing_and_patient_data_is_never_cached,
    health_reports_the_database,
    health_is_503_when_the_database_is_unusable,
    create_returns_201_with_all_fields_and_ignores_client_controlled_ones,
    get_accepts_unhyphenated_and_upper_case_ids,
    get_unknown_is_404_and_malformed_is_422,
    bad_create_bodies_are_4xx_in_fastapis_shape_and_write_nothing,
    create_without_content_type_is_read_as_json,
    list_filters_by_status_and_rejects_unknown_statuses,
    list_pages_are_bounded_and_linked_with_a_cursor,
    routing_errors_match_fastapi,
    every_response_carries_a_request_id,
);
