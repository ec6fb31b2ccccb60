//! Sign-in and access (`PWA_AUTH=on`): every API route but the health check
//! needs a valid API token; a clinician reaches only their own recordings
//! (another's is a 404), an admin reads all; revoking a token or disabling a
//! user takes effect within the token cache's second, also from another
//! process; the command line manages users and tokens.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use clinscribe::auth::Role;
use serde_json::{Value, json};
use utoipa::OpenApi as _;

use crate::common::{self, TestApp, TestResponse, client, run_cli, webm};
use crate::on_both_backends;

const PASSWORD: &str = "correct horse battery staple";

/// Adds user `id` of `role` and returns a fresh API token of theirs.
async fn user_with_token(app: &TestApp, id: &str, role: Role) -> String {
    let auth = &app.state.auth;
    auth.add_user(id, &format!("Dr {id}"), role, Some(PASSWORD))
        .await
        .unwrap();
    auth.create_token(id, None).await.unwrap().1
}

/// A request as `token` (none: no credentials).
async fn call(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> TestResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    app.send_with(method, uri, &headers, body).await
}

async fn create_as(app: &TestApp, token: &str, patient: &str) -> Value {
    let body = json!({"patient_id": patient, "duration_seconds": 30});
    let r = call(app, Some(token), Method::POST, "/api/v1/recordings", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body
}

/// Every operation of the OpenAPI document (which a test keeps equal to the
/// router's routes), with its path parameters filled in.
fn every_operation(recording_id: &str) -> Vec<(Method, String)> {
    let doc = serde_json::to_value(clinscribe::app::openapi::ApiDoc::openapi()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let uri = path
                .replace("{recording_id}", recording_id)
                .replace("{local_storage_key}", "9b2f4d6e-1a3c-4e5f-8a7b-6c5d4e3f2a1b");
            operations.push((method, uri));
        }
    }
    assert!(operations.len() >= 15, "{operations:?}");
    operations
}

fn assert_401(r: &TestResponse, detail: &str, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
    assert_eq!(r.headers["www-authenticate"], "Bearer", "{what}");
    assert_eq!(r.body, json!({ "detail": detail }), "{what}");
}

async fn every_route_but_health_refuses_requests_without_valid_credentials(app: TestApp) {
    let app = app.with_auth_on();
    let auth = app.state.auth.clone();
    let owner = user_with_token(&app, "dr-owner", Role::Clinician).await;
    let recording = create_as(&app, &owner, "patient-1").await;
    let id = recording["id"].as_str().unwrap().to_owned();

    let revoked = user_with_token(&app, "dr-revoked", Role::Clinician).await;
    let revoked_id = auth.tokens(Some("dr-revoked")).await.unwrap()[0].id.clone();
    auth.revoke_token(&revoked_id).await.unwrap();
    let disabled = user_with_token(&app, "dr-disabled", Role::Clinician).await;
    auth.disable("dr-disabled").await.unwrap();
    auth.add_user("dr-expired", "Dr Expired", Role::Clinician, None)
        .await
        .unwrap();
    let (_, expired) = auth
        .create_token("dr-expired", Some(Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let bad_credentials = [
        ("a wrong token", "cst_0000".to_owned()),
        ("a revoked token", revoked),
        ("a disabled user's token", disabled),
        ("an expired token", expired),
    ];

    for (method, uri) in every_operation(&id) {
        let what = format!("{method} {uri}");
        if uri == "/api/v1/health" {
            let r = call(&app, None, method, &uri, None).await;
            assert_eq!(r.status, StatusCode::OK, "{what}");
            continue;
        }
        let r = call(&app, None, method.clone(), &uri, None).await;
        assert_401(&r, "Not authenticated", &format!("{what} without credentials"));
        for (kind, token) in &bad_credentials {
            let r = call(&app, Some(token), method.clone(), &uri, None).await;
            assert_401(
                &r,
                "Invalid authentication credentials",
                &format!("{what} with {kind}"),
            );
        }
    }
    // Another scheme, or a bare token, is no credential at all.
    for header in ["Basic ZHItYTpwdw==", owner.as_str()] {
        let r = app
            .send_with(
                Method::GET,
                "/api/v1/recordings",
                &[("authorization", header)],
                "",
            )
            .await;
        assert_401(&r, "Not authenticated", header);
    }
    // Nothing was changed by any refused request.
    let r = call(&app, Some(&owner), Method::GET, &format!("/api/v1/recordings/{id}"), None).await;
    assert_eq!(r.body, recording);
    // The web app and its assets are served without credentials.
    for page in ["/", "/manifest.webmanifest", "/docs/", "/openapi.json"] {
        let r = call(&app, None, Method::GET, page, None).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
    }
}

async fn another_clinicians_recording_is_not_found_and_an_admin_reads_it(app: TestApp) {
    let app = app.with_auth_on();
    let dr_a = user_with_token(&app, "dr-a", Role::Clinician).await;
    let dr_b = user_with_token(&app, "dr-b", Role::Clinician).await;
    let admin = user_with_token(&app, "admin", Role::Admin).await;

    let uploaded = {
        let (content_type, body) = common::multipart(&[
            ("patient_id", None, b"patient-a"),
            ("duration_seconds", None, b"5"),
            ("audio", Some("dictation.webm"), &webm(4000, 1)),
        ]);
        let bearer = format!("Bearer {dr_a}");
        let r = app
            .send_with(
                Method::POST,
                "/api/v1/recordings/upload",
                &[("content-type", &content_type), ("authorization", &bearer)],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let mut body = r.body;
        // Said of the upload's answer only (SQLite: the commit was synced).
        body.as_object_mut().unwrap().remove("durable");
        body
    };
    assert_eq!(uploaded["clinician_id"], "dr-a");
    let id = uploaded["id"].as_str().unwrap();
    let version = format!("\"{}\"", uploaded["version"]);
    let path = format!("/api/v1/recordings/{id}");

    // Dr B: as if it did not exist, for every way of reaching it.
    for (method, uri) in [
        (Method::GET, path.clone()),
        (Method::GET, format!("{path}/audio")),
        (Method::GET, format!("{path}/history")),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::POST, format!("{path}/sign")),
        (Method::POST, format!("{path}/amendments")),
        (Method::POST, format!("{path}/retry")),
    ] {
        let bearer = format!("Bearer {dr_b}");
        let r = app
            .send_with(
                method.clone(),
                &uri,
                &[
                    ("authorization", &bearer),
                    ("if-match", &version),
                    ("content-type", "application/json"),
                ],
                match method {
                    Method::PATCH => r#"{"final_transcript": "changed by B"}"#,
                    Method::POST => r#"{"text": "x", "reason": "y"}"#,
                    _ => "",
                },
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "dr-b {method} {uri}: {}", r.text);
        assert_eq!(r.body, json!({"detail": "Recording not found"}), "{method} {uri}");
    }
    let list = call(&app, Some(&dr_b), Method::GET, "/api/v1/recordings", None).await;
    assert_eq!(list.body, json!([]));
    let feed = call(&app, Some(&dr_b), Method::GET, "/api/v1/changes", None).await;
    assert_eq!(feed.body["changes"], json!([]));

    // The admin reads it, its history and its audio, and cannot change it.
    let r = call(&app, Some(&admin), Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, uploaded);
    let audio = call(&app, Some(&admin), Method::GET, &format!("{path}/audio"), None).await;
    assert_eq!(audio.status, StatusCode::OK);
    let history = call(&app, Some(&admin), Method::GET, &format!("{path}/history"), None).await;
    assert_eq!(history.status, StatusCode::OK);
    let bearer = format!("Bearer {admin}");
    let r = app
        .send_with(
            Method::PATCH,
            &path,
            &[
                ("authorization", &bearer),
                ("if-match", &version),
                ("content-type", "application/json"),
            ],
            r#"{"final_transcript": "changed by the admin"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Dr A's recording is as it was; the admin's reads are in its history, by name.
    let r = call(&app, Some(&dr_a), Method::GET, &path, None).await;
    assert_eq!(r.body, uploaded);
    let history = call(&app, Some(&dr_a), Method::GET, &format!("{path}/history"), None).await;
    let readers: Vec<&str> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "read")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(readers, ["admin", "admin", "admin"], "{}", history.text);
}

async fn random_users_and_requests_never_see_another_clinicians_recording(app: TestApp) {
    let app = app.with_auth_on();
    let clinicians = ["c0", "c1", "c2"];
    let mut tokens = Vec::new();
    for c in clinicians {
        tokens.push(user_with_token(&app, c, Role::Clinician).await);
    }
    let mut owner_of = std::collections::HashMap::new();
    for seed in 0..3u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..rng.usize(4..10) {
            let who = rng.usize(..clinicians.len());
            let r = create_as(&app, &tokens[who], &format!("patient-{}", rng.u32(..))).await;
            owner_of.insert(r["id"].as_str().unwrap().to_owned(), clinicians[who]);
        }
        let ids: Vec<String> = owner_of.keys().cloned().collect();
        for _ in 0..40 {
            let who = rng.usize(..clinicians.len());
            let id = &ids[rng.usize(..ids.len())];
            let uri = match rng.u8(..5) {
                0 => "/api/v1/recordings?limit=5".to_owned(),
                1 => "/api/v1/changes".to_owned(),
                2 => format!("/api/v1/recordings/{id}"),
                3 => format!("/api/v1/recordings/{id}/history"),
                _ => format!("/api/v1/recordings/{id}/audio"),
            };
            let r = call(&app, Some(&tokens[who]), Method::GET, &uri, None).await;
            let seen: Vec<&Value> = match uri.as_str() {
                _ if r.status != StatusCode::OK || uri.ends_with("/audio") => Vec::new(),
                "/api/v1/changes" => r.body["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| &c["recording"])
                    .collect(),
                _ if uri.starts_with("/api/v1/recordings?") => {
                    r.body.as_array().unwrap().iter().collect()
                }
                _ if uri.ends_with("/history") => Vec::new(),
                _ => vec![&r.body],
            };
            for recording in seen {
                assert_eq!(recording["clinician_id"], clinicians[who], "{uri}");
            }
            let own = owner_of[id] == clinicians[who];
            if uri.contains(id.as_str()) && !own {
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.text);
            }
            if uri.contains(id.as_str()) && own && !uri.ends_with("/audio") {
                assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
            }
        }
    }
}

on_both_backends!(
    every_route_but_health_refuses_requests_without_valid_credentials,
    another_clinicians_recording_is_not_found_and_an_admin_reads_it,
    random_users_and_requests_never_see_another_clinicians_recording,
);

/// The real binary with `PWA_AUTH=on`; users and tokens made with the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_users_and_tokens_and_a_revocation_takes_effect_within_2_s() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clinical.db");
    let add = |id: &str, password: &str, extra: &[&str]| {
        let mut args = vec!["user", "add", id, "--name", "Dr Who", "--password-stdin"];
        args.extend(extra);
        common::run_cli_stdin(&db, &args, &format!("{password}\n"))
    };
    let short = add("dr-a", "too short", &[]);
    assert_eq!(short.code, Some(1), "{short:?}");
    assert!(short.stderr.contains("a password is 15 to 1024 characters; this one has 9"), "{short:?}");
    assert_eq!(add("dr-a", PASSWORD, &[]).code, Some(0));
    let again = add("dr-a", PASSWORD, &[]);
    assert!(again.stderr.contains("a user \"dr-a\" exists already"), "{again:?}");
    assert_eq!(add("boss", PASSWORD, &["--admin"]).code, Some(0));
    let list = run_cli(&db, &["user", "list"]);
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(4).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["boss", "admin", "active", "yes"],
            ["dr-a", "clinician", "active", "yes"]
        ]
    );

    let created = run_cli(&db, &["token", "create", "dr-a", "--expires", "90d"]);
    assert_eq!(created.code, Some(0), "{created:?}");
    let token = created.stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("cst_") && token.len() == 68, "{token}");
    let second = run_cli(&db, &["token", "create", "dr-a"]);
    let second = second.stdout.lines().last().unwrap().to_owned();
    assert_eq!(run_cli(&db, &["token", "create", "nobody"]).code, Some(1));

    let log = dir.path().join("server.log");
    let server = common::ServerProcess::start_logging(
        &format!("sqlite://{}", db.display()),
        &[("PWA_AUTH", "on"), ("PWA_LOG", "debug")],
        Some(&log),
    );
    let get = |token: String| {
        let url = server.url("/api/v1/recordings");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(token.clone()).await, 200);
    assert_eq!(get(second.clone()).await, 200);
    let listed = run_cli(&db, &["token", "list", "--user", "dr-a"]);
    let ids: Vec<&str> = listed
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed:?}");
    let first_id = &common::sha256_hex(token.as_bytes())[..16];
    assert!(ids.contains(&first_id), "{listed:?}");
    assert!(!listed.stdout.contains(&token), "a token is shown once");
    let first: Vec<&str> = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(first_id))
        .unwrap()
        .split_whitespace()
        .collect();
    // id, user, created, expires, last used (just now), revoked.
    assert_eq!(first.len(), 6, "{listed:?}");
    assert_eq!(first[1], "dr-a");
    assert!(first[3] > first[2] && first[4] >= first[2], "{first:?}");
    assert_eq!(first[5], "-");

    // Revoked from another process: refused within 2 s (the cache's 1 s).
    let revoked = run_cli(&db, &["token", "revoke", first_id]);
    assert_eq!(revoked.code, Some(0), "{revoked:?}");
    let since = Instant::now();
    while get(token.clone()).await != 401 {
        assert!(since.elapsed() < Duration::from_secs(2), "still accepted after 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(second.clone()).await, 200, "the user's other token still works");
    // Disabled: every token of the user stops.
    assert_eq!(run_cli(&db, &["user", "disable", "dr-a"]).code, Some(0));
    let since = Instant::now();
    while get(second.clone()).await != 401 {
        assert!(since.elapsed() < Duration::from_secs(2), "still accepted after 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.terminate(), Some(0));

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("api_tokens"), "the log has the debug lines: {log}");
    assert!(!log.contains(&token) && !log.contains(&second), "a token in the log");
    assert!(!log.contains(&token[4..20]), "part of a token in the log");
    // Every account change is in the trail.
    let trail = run_cli(&db, &["audit", "export"]);
    let actions: Vec<String> = trail
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["action"].as_str().unwrap().to_owned())
        .filter(|a| a.starts_with("user_") || a.starts_with("token_"))
        .collect();
    assert_eq!(
        actions,
        ["user_add", "user_add", "token_create", "token_create", "token_revoke", "user_disable"]
    );
}

#[test]
fn auth_off_is_refused_unless_bound_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::binary())
        .args(["serve", "--bind", "0.0.0.0:0"])
        .current_dir(dir.path())
        .env("PWA_DATABASE_URL", "sqlite://./clinical.db")
        .env("PWA_AUTH", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("clinscribe: invalid PWA_AUTH \"off\""), "{stderr}");
    assert!(stderr.contains("set PWA_AUTH=on"), "{stderr}");
    assert!(!dir.path().join("clinical.db").exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassign_gives_the_adopted_clinicians_recordings_to_a_user_audited() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clinical.db");
    std::fs::copy("tests/fixtures/original-head.db", &db).unwrap();
    let before = common::run_cli(&db, &["migrate"]);
    assert_eq!(before.code, Some(0), "{before:?}");
    let owned: Vec<Value> = common::all_recordings(&db).await;
    let adopted = owned
        .iter()
        .filter(|r| r["clinician_id"] == "current-clinician")
        .count();
    assert!(adopted > 0);

    let refused = run_cli(&db, &["recordings", "reassign", "--from", "current-clinician", "--to", "dr-a"]);
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("no user \"dr-a\""), "{refused:?}");
    let added = common::run_cli_stdin(
        &db,
        &["user", "add", "dr-a", "--name", "Dr A", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(added.code, Some(0), "{added:?}");
    let moved = run_cli(&db, &["recordings", "reassign", "--from", "current-clinician", "--to", "dr-a"]);
    assert_eq!(moved.code, Some(0), "{moved:?}");
    assert!(
        moved.stdout.contains(&format!("{adopted} recording(s) of current-clinician now belong to dr-a")),
        "{moved:?}"
    );
    let after = common::all_recordings(&db).await;
    for (b, a) in owned.iter().zip(&after) {
        assert_eq!(a["id"], b["id"]);
        if b["clinician_id"] == "current-clinician" {
            assert_eq!(a["clinician_id"], "dr-a");
            assert_eq!(a["version"], b["version"].as_i64().unwrap() + 1);
        } else {
            assert_eq!(a, b);
        }
    }
    let trail = run_cli(&db, &["audit", "export"]);
    let reassigned: Vec<Value> = trail
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "reassign")
        .collect();
    assert_eq!(reassigned.len(), adopted);
    assert_eq!(reassigned[0]["changes"], json!({"clinician_id": ["current-clinician", "dr-a"]}));
    assert_eq!(reassigned[0]["actor"], "system:cli");
    assert_eq!(run_cli(&db, &["audit", "verify"]).code, Some(0));
}
