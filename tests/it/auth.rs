//! Sign-in and access (`PWA_AUTH=on`): every API route but the health check
//! needs a valid API token; a clinician reaches only their own recordings
//! (another's is a 404), an admin reads all; revoking a token or disabling a
//! user takes effect within the token cache's second, also from another
//! process; the command line manages users and tokens.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use clinscribe::auth::{AuthMode, AuthSettings, Role};
use serde_json::{Value, json};
use utoipa::OpenApi as _;

use crate::common::{self, TestApp, TestResponse, client, run_cli, webm};
use crate::on_both_backends;

const PASSWORD: &str = "correct horse battery staple";

/// Adds user `id` of `role` and returns a fresh API token of theirs.
async fn user_with_token(app: &TestApp, id: &str, role: Role) -> String {
    let auth = &app.state.auth;
    auth.add_user(id, &format!("Dr {id}"), role, Some(PASSWORD), None)
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
    let r = call(
        app,
        Some(token),
        Method::POST,
        "/api/v1/recordings",
        Some(body),
    )
    .await;
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
            let uri = path.replace("{recording_id}", recording_id).replace(
                "{local_storage_key}",
                "9b2f4d6e-1a3c-4e5f-8a7b-6c5d4e3f2a1b",
            );
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
    auth.add_user("dr-expired", "Dr Expired", Role::Clinician, None, None)
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
        if uri.starts_with("/api/v1/health") {
            let r = call(&app, None, method, &uri, None).await;
            assert_eq!(r.status, StatusCode::OK, "{what}");
            continue;
        }
        if uri == "/api/v1/auth/login" || uri == "/api/v1/auth/setup" {
            // Open to anyone: an empty body is a 422, not a 401.
            let r = call(&app, None, method, &uri, None).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
            continue;
        }
        if uri == "/api/v1/auth/providers" {
            let r = call(&app, None, method, &uri, None).await;
            assert_eq!(r.status, StatusCode::OK, "{what}");
            continue;
        }
        if uri.starts_with("/api/v1/auth/oidc/") {
            // Open to anyone; without a provider configured there is none.
            let r = call(&app, None, method, &uri, None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{what}");
            continue;
        }
        let r = call(&app, None, method.clone(), &uri, None).await;
        assert_401(
            &r,
            "Not authenticated",
            &format!("{what} without credentials"),
        );
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
    let r = call(
        &app,
        Some(&owner),
        Method::GET,
        &format!("/api/v1/recordings/{id}"),
        None,
    )
    .await;
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
                    Method::POST if uri.ends_with("/sign") => r#"{"acknowledgements": []}"#,
                    Method::POST => r#"{"text": "x", "reason": "y"}"#,
                    _ => "",
                },
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "dr-b {method} {uri}: {}",
            r.text
        );
        assert_eq!(
            r.body,
            json!({"detail": "Recording not found"}),
            "{method} {uri}"
        );
    }
    let list = call(&app, Some(&dr_b), Method::GET, "/api/v1/recordings", None).await;
    assert_eq!(list.body, json!([]));
    let feed = call(&app, Some(&dr_b), Method::GET, "/api/v1/changes", None).await;
    assert_eq!(feed.body["changes"], json!([]));

    // Another clinician's list: refused for Dr B, given to the admin.
    let asked = call(
        &app,
        Some(&dr_b),
        Method::GET,
        "/api/v1/recordings?clinician_id=dr-a",
        None,
    )
    .await;
    assert_eq!(asked.status, StatusCode::FORBIDDEN, "{}", asked.text);
    assert_eq!(
        asked.body["detail"],
        "Only an administrator lists another clinician's recordings"
    );
    let second = create_as(&app, &dr_a, "patient-a2").await;
    let page = call(
        &app,
        Some(&admin),
        Method::GET,
        "/api/v1/recordings?clinician_id=dr-a&limit=1",
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.body, json!([second]));
    let next = page.headers["link"].to_str().unwrap();
    let next = next
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    assert!(next.contains("clinician_id=dr-a"), "{next}");
    let rest = call(&app, Some(&admin), Method::GET, &next, None).await;
    assert_eq!(rest.body, json!([uploaded]));
    let own = call(&app, Some(&admin), Method::GET, "/api/v1/recordings", None).await;
    assert_eq!(own.body, json!([]), "without clinician_id, the admin's own");

    // The admin reads it, its history and its audio, and cannot change it.
    let r = call(&app, Some(&admin), Method::GET, &path, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, uploaded);
    let audio = call(
        &app,
        Some(&admin),
        Method::GET,
        &format!("{path}/audio"),
        None,
    )
    .await;
    assert_eq!(audio.status, StatusCode::OK);
    let history = call(
        &app,
        Some(&admin),
        Method::GET,
        &format!("{path}/history"),
        None,
    )
    .await;
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
    let history = call(
        &app,
        Some(&dr_a),
        Method::GET,
        &format!("{path}/history"),
        None,
    )
    .await;
    let readers: Vec<&str> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "read")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    // Dr B's refused attempts read nothing.
    assert_eq!(
        readers,
        ["admin", "admin", "admin", "dr-a"],
        "{}",
        history.text
    );
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
    assert!(
        short
            .stderr
            .contains("a password is 15 to 1024 characters; this one has 9"),
        "{short:?}"
    );
    assert_eq!(add("dr-a", PASSWORD, &[]).code, Some(0));
    let again = add("dr-a", PASSWORD, &[]);
    assert!(
        again.stderr.contains("a user \"dr-a\" exists already"),
        "{again:?}"
    );
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
    let servers = [server];
    let get = |token: String| status_with(&servers[0], token);
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
    refused_within_2_s(&servers, &token).await;
    assert_eq!(
        get(second.clone()).await,
        200,
        "the user's other token still works"
    );
    // Disabled: every token of the user stops.
    assert_eq!(run_cli(&db, &["user", "disable", "dr-a"]).code, Some(0));
    refused_within_2_s(&servers, &second).await;
    let no_token = run_cli(&db, &["token", "create", "dr-a"]);
    assert_ne!(no_token.code, Some(0), "{no_token:?}");
    assert!(
        no_token.stderr.contains("user \"dr-a\" is disabled") && !no_token.stdout.contains("cst_"),
        "{no_token:?}"
    );
    let wrong = client()
        .post(servers[0].url("/api/v1/auth/login"))
        .json(&json!({"username": "boss", "password": "hunter2 is not it, boss"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let [server] = servers;
    assert_eq!(server.terminate(), Some(0));

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("failed sign-in"), "{log}");
    assert!(!log.contains("hunter2"), "a password in the log");
    assert!(
        log.contains("api_tokens"),
        "the log has the debug lines: {log}"
    );
    assert!(
        !log.contains(&token) && !log.contains(&second),
        "a token in the log"
    );
    assert!(!log.contains(&token[4..20]), "part of a token in the log");
    // Every account change is in the trail.
    let trail = run_cli(&db, &["audit", "export"]);
    let actions: Vec<String> = trail
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .filter(|a| a.starts_with("user_") || a.starts_with("token_"))
        .collect();
    assert_eq!(
        actions,
        [
            "user_add",
            "user_add",
            "token_create",
            "token_create",
            "token_revoke",
            "user_disable"
        ]
    );
}

/// The status of `GET /api/v1/recordings` on `server` with API token `token`.
async fn status_with(server: &common::ServerProcess, token: String) -> u16 {
    client()
        .get(server.url("/api/v1/recordings"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until every one of `servers` refuses `token`; fails after 2 s (from
/// the change that should make them refuse it).
async fn refused_within_2_s(servers: &[common::ServerProcess], token: &str) {
    let since = Instant::now();
    for server in servers {
        while status_with(server, token.to_owned()).await != 401 {
            assert!(
                since.elapsed() < Duration::from_secs(2),
                "still accepted after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Two instances on one PostgreSQL database: a token revoked and a user
/// disabled by the CLI, a third process, are refused by both within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_postgresql_instance_within_2_s() {
    let Some(admin) = common::postgres_or_skip("a_revocation_reaches_every_postgresql_instance")
    else {
        return;
    };
    let pg = common::PgTestDb::create(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| common::run_cli_url(&pg.url, dir.path(), args);
    assert_eq!(cli(&["migrate"]).code, Some(0));
    let added = cli(&["user", "add", "dr-a", "--name", "Dr A", "--no-password"]);
    assert_eq!(added.code, Some(0), "{added:?}");
    let token = || {
        cli(&["token", "create", "dr-a"])
            .stdout
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    let (first, second) = (token(), token());
    let servers = [
        common::ServerProcess::start_url(&pg.url, &[("PWA_AUTH", "on")]),
        common::ServerProcess::start_url(&pg.url, &[("PWA_AUTH", "on")]),
    ];
    for server in &servers {
        assert_eq!(status_with(server, first.clone()).await, 200);
        assert_eq!(status_with(server, second.clone()).await, 200);
    }
    let first_id = &common::sha256_hex(first.as_bytes())[..16];
    assert_eq!(cli(&["token", "revoke", first_id]).code, Some(0));
    refused_within_2_s(&servers, &first).await;
    for server in &servers {
        assert_eq!(
            status_with(server, second.clone()).await,
            200,
            "the other token works"
        );
    }
    assert_eq!(cli(&["user", "disable", "dr-a"]).code, Some(0));
    refused_within_2_s(&servers, &second).await;
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
    assert!(
        stderr.starts_with("clinscribe: invalid PWA_AUTH \"off\""),
        "{stderr}"
    );
    assert!(stderr.contains("set PWA_AUTH=on"), "{stderr}");
    assert!(
        !dir.path().join("clinical.db").exists(),
        "nothing was created"
    );
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

    let refused = run_cli(
        &db,
        &[
            "recordings",
            "reassign",
            "--from",
            "current-clinician",
            "--to",
            "dr-a",
        ],
    );
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("no user \"dr-a\""), "{refused:?}");
    let added = common::run_cli_stdin(
        &db,
        &["user", "add", "dr-a", "--name", "Dr A", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(added.code, Some(0), "{added:?}");
    let moved = run_cli(
        &db,
        &[
            "recordings",
            "reassign",
            "--from",
            "current-clinician",
            "--to",
            "dr-a",
        ],
    );
    assert_eq!(moved.code, Some(0), "{moved:?}");
    assert!(
        moved.stdout.contains(&format!(
            "{adopted} recording(s) of current-clinician now belong to dr-a"
        )),
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
    assert_eq!(
        reassigned[0]["changes"],
        json!({"clinician_id": ["current-clinician", "dr-a"]})
    );
    assert_eq!(reassigned[0]["actor"], "system:cli");
    assert_eq!(run_cli(&db, &["audit", "verify"]).code, Some(0));
}

// ---------------------------------------------------------------- sessions

/// The app with auth on and these session and rate limits.
fn with_limits(app: TestApp, adjust: impl FnOnce(&mut AuthSettings)) -> TestApp {
    let mut settings = AuthSettings::new(AuthMode::On);
    adjust(&mut settings);
    let mut app = app;
    app.state = app.state.clone().with_auth_settings(settings);
    app.router = clinscribe::router(app.state.clone());
    app
}

/// Signs in; the session cookie (`name=value`) and the CSRF token.
async fn sign_in(app: &TestApp, user: &str, password: &str) -> TestResponse {
    let body = json!({"username": user, "password": password}).to_string();
    app.send_with(
        Method::POST,
        "/api/v1/auth/login",
        &[("content-type", "application/json")],
        body,
    )
    .await
}

struct Session {
    cookie: String,
    csrf: String,
}

async fn session_of(app: &TestApp, user: &str) -> Session {
    let r = sign_in(app, user, PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let set_cookie = r.headers["set-cookie"].to_str().unwrap();
    Session {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
        csrf: r.body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

/// A request with the session's cookie, and its CSRF token when `csrf`.
async fn with_cookie(
    app: &TestApp,
    session: &Session,
    csrf: bool,
    method: Method,
    uri: &str,
    body: &str,
) -> TestResponse {
    let mut headers = vec![
        ("cookie", session.cookie.as_str()),
        ("content-type", "application/json"),
    ];
    if csrf {
        headers.push(("x-csrf-token", session.csrf.as_str()));
    }
    app.send_with(method, uri, &headers, body.to_owned()).await
}

async fn a_password_sign_in_gives_a_session_that_needs_its_csrf_token_to_change_anything(
    app: TestApp,
) {
    let app = app.with_auth_on();
    user_with_token(&app, "dr-a", Role::Clinician).await;
    user_with_token(&app, "dr-gone", Role::Clinician).await;
    app.state.auth.disable("dr-gone").await.unwrap();
    // Wrong password, no such user, disabled user: one answer, no cookie.
    for (user, password) in [
        ("dr-a", "not the password!!"),
        ("nobody", PASSWORD),
        ("dr-gone", PASSWORD),
    ] {
        let r = sign_in(&app, user, password).await;
        assert_401(&r, "Incorrect username or password", user);
        assert!(!r.headers.contains_key("set-cookie"), "{user}");
    }
    let r = app
        .send_with(
            Method::POST,
            "/api/v1/auth/login",
            &[("content-type", "application/json")],
            r#"{"username": "dr-a"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "password"]));

    let r = sign_in(&app, "dr-a", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("clinscribe_session="), "{cookie}");
    assert!(
        cookie.contains("; HttpOnly")
            && cookie.contains("; SameSite=Strict")
            && cookie.contains("; Path=/"),
        "{cookie}"
    );
    assert!(cookie.contains("; Max-Age=43200"), "12 h: {cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert_eq!(r.body["id"], "dr-a");
    assert_eq!(r.body["role"], "clinician");
    assert_eq!(r.body["csrf_token"].as_str().unwrap().len(), 64);
    // Behind a proxy that says HTTPS: Secure.
    let proxied = app
        .send_with(
            Method::POST,
            "/api/v1/auth/login",
            &[
                ("content-type", "application/json"),
                ("x-forwarded-proto", "https"),
            ],
            json!({"username": "dr-a", "password": PASSWORD}).to_string(),
        )
        .await;
    assert!(
        proxied.headers["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );

    let session = session_of(&app, "dr-a").await;
    let me = with_cookie(&app, &session, false, Method::GET, "/api/v1/auth/me", "").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.body,
        json!({"id": "dr-a", "display_name": "Dr dr-a", "role": "clinician", "csrf_token": session.csrf})
    );
    // A change without the CSRF token (or with another) is refused and makes nothing.
    let create = r#"{"patient_id": "patient-1", "duration_seconds": 5}"#;
    let refused = with_cookie(
        &app,
        &session,
        false,
        Method::POST,
        "/api/v1/recordings",
        create,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("CSRF token missing or wrong")
    );
    let forged = Session {
        cookie: session.cookie.clone(),
        csrf: "0".repeat(64),
    };
    let refused = with_cookie(
        &app,
        &forged,
        true,
        Method::POST,
        "/api/v1/recordings",
        create,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let list = with_cookie(&app, &session, false, Method::GET, "/api/v1/recordings", "").await;
    assert_eq!(list.body, json!([]));
    let made = with_cookie(
        &app,
        &session,
        true,
        Method::POST,
        "/api/v1/recordings",
        create,
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    assert_eq!(made.body["clinician_id"], "dr-a");

    // Sign-out ends this session only; sign-out everywhere ends the rest.
    let other = session_of(&app, "dr-a").await;
    let third = session_of(&app, "dr-a").await;
    let out = with_cookie(
        &app,
        &session,
        true,
        Method::POST,
        "/api/v1/auth/logout",
        "",
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    tokio::time::sleep(clinscribe::auth::CREDENTIAL_CACHE_TTL).await;
    let gone = with_cookie(&app, &session, false, Method::GET, "/api/v1/recordings", "").await;
    assert_401(&gone, "Invalid authentication credentials", "signed out");
    let still = with_cookie(&app, &other, false, Method::GET, "/api/v1/recordings", "").await;
    assert_eq!(still.status, StatusCode::OK);
    // A signed-out session is deleted by the cleanup; the others stay.
    let deleted = app
        .state
        .auth
        .delete_finished_sessions(Duration::ZERO)
        .await;
    assert_eq!(deleted.unwrap(), 1);
    let all = with_cookie(
        &app,
        &other,
        true,
        Method::POST,
        "/api/v1/auth/logout-all",
        "",
    )
    .await;
    assert_eq!(all.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(clinscribe::auth::CREDENTIAL_CACHE_TTL).await;
    for s in [&other, &third] {
        let r = with_cookie(&app, s, false, Method::GET, "/api/v1/recordings", "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Each sign-in and sign-out is in the audit trail, by the user.
    let trail = app.state.audit.export(None, None, None).await.unwrap();
    let signs: Vec<(&str, &str)> = trail
        .iter()
        .filter(|e| e.action.starts_with("sign_"))
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    let mut expected = vec![("dr-a", "sign_in"); 5];
    expected.extend([("dr-a", "sign_out"), ("dr-a", "sign_out")]);
    assert_eq!(signs, expected);
    let everywhere = trail.iter().rev().find(|e| e.action == "sign_out").unwrap();
    // The first two sign-ins' sessions, `other` and `third`.
    assert_eq!(everywhere.changes, json!({"sessions": 4}));
    // Disabling the user ends a session at once (within the cache's second).
    let fresh = session_of(&app, "dr-a").await;
    app.state.auth.disable("dr-a").await.unwrap();
    tokio::time::sleep(clinscribe::auth::CREDENTIAL_CACHE_TTL).await;
    let r = with_cookie(&app, &fresh, false, Method::GET, "/api/v1/recordings", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn an_idle_session_ends_and_so_does_an_old_one_in_use(app: TestApp) {
    let app = with_limits(app, |s| {
        s.session_idle = Duration::from_millis(600);
        s.session_max = Duration::from_millis(1500);
    });
    user_with_token(&app, "dr-a", Role::Clinician).await;
    let get = async |s: &Session| {
        with_cookie(&app, s, false, Method::GET, "/api/v1/recordings", "")
            .await
            .status
    };
    // Left alone longer than the idle timeout: ended.
    let idle = session_of(&app, "dr-a").await;
    assert_eq!(get(&idle).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(&idle).await, StatusCode::UNAUTHORIZED);
    // Used every 200 ms: kept past the idle timeout, until the absolute lifetime.
    let busy = session_of(&app, "dr-a").await;
    let started = Instant::now();
    let mut last_ok = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(2500) {
        if get(&busy).await == StatusCode::OK {
            last_ok = started.elapsed();
        } else {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last_ok >= Duration::from_millis(900),
        "kept alive by use: {last_ok:?}"
    );
    assert!(
        last_ok < Duration::from_millis(1500),
        "ended at its lifetime: {last_ok:?}"
    );
    assert_eq!(get(&busy).await, StatusCode::UNAUTHORIZED);
}

async fn failed_sign_ins_are_limited_per_account_and_per_address_then_recover(app: TestApp) {
    let app = with_limits(app, |s| {
        s.failures_per_account = 3;
        s.failures_per_address = 5;
        s.failure_window = Duration::from_secs(3);
    });
    for id in ["dr-a", "dr-b", "dr-c"] {
        user_with_token(&app, id, Role::Clinician).await;
    }
    for _ in 0..3 {
        assert_eq!(
            sign_in(&app, "dr-a", "wrong password!!!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password waits now, and says for how long.
    let limited = sign_in(&app, "dr-a", PASSWORD).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text
    );
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&wait), "{wait}");
    assert!(
        limited.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Too many failed sign-ins")
    );
    // Another account from the same address is not limited yet ...
    assert_eq!(sign_in(&app, "dr-b", PASSWORD).await.status, StatusCode::OK);
    // ... until the address has failed 5 times in all (3 above, 2 here).
    for _ in 0..2 {
        assert_eq!(
            sign_in(&app, "dr-b", "wrong password!!!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        sign_in(&app, "dr-c", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The window passes: signing in works again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(sign_in(&app, "dr-a", PASSWORD).await.status, StatusCode::OK);
    assert_eq!(sign_in(&app, "dr-c", PASSWORD).await.status, StatusCode::OK);
}

async fn the_first_run_code_creates_the_first_admin_once(app: TestApp) {
    let app = app.with_auth_on();
    let code = app.state.auth.first_run_code().await.unwrap().unwrap();
    let setup = async |code: &str, user: &str, password: &str| {
        let body = json!({"code": code, "username": user, "display_name": "The Admin", "password": password});
        app.send_with(
            Method::POST,
            "/api/v1/auth/setup",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    };
    let wrong = setup(&"0".repeat(64), "admin", PASSWORD).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
    let short = setup(&code, "admin", "short").await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        short.body["detail"],
        "a password is 15 to 1024 characters; this one has 5"
    );
    // Two requests with the code at once: one administrator, not two.
    let (first, second) = tokio::join!(
        setup(&code, "admin", PASSWORD),
        setup(&code, "admin-too", PASSWORD)
    );
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::FORBIDDEN]);
    let made = if first.status == StatusCode::OK {
        first
    } else {
        second
    };
    assert_eq!(made.body["role"], "admin");
    let admins = app.state.auth.users().await.unwrap();
    assert_eq!(admins.len(), 1, "{admins:?}");
    let admin = admins[0].id.clone();
    assert!(
        made.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("clinscribe_session=")
    );
    let again = setup(&code, "admin2", PASSWORD).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.state.auth.first_run_code().await.unwrap(),
        None,
        "an admin exists"
    );
    assert_eq!(sign_in(&app, &admin, PASSWORD).await.status, StatusCode::OK);
}

/// A sign-in the audit trail cannot record is refused: no cookie, and the
/// session it began does not work; once the trail takes events, it works.
async fn a_sign_in_the_trail_cannot_record_is_refused(app: TestApp) {
    let app = app.with_auth_on();
    user_with_token(&app, "dr-a", Role::Clinician).await;
    // SQL that makes the trail refuse events of `action`, and that undoes it.
    let backend = app.backend;
    let refuse = |action: &str| match backend {
        common::Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse_events BEFORE INSERT ON audit_events \
             WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )],
        common::Backend::Postgres => vec![
            format!(
                "CREATE OR REPLACE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN IF NEW.action = '{action}' THEN RAISE EXCEPTION 'refused'; \
                 END IF; RETURN NEW; END $$"
            ),
            "CREATE TRIGGER refuse_events BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_events()"
                .to_owned(),
        ],
    };
    let allow = match backend {
        common::Backend::Sqlite => "DROP TRIGGER refuse_events",
        common::Backend::Postgres => "DROP TRIGGER refuse_events ON audit_events",
    };
    for sql in refuse("sign_in") {
        common::execute(&app, &sql).await.unwrap();
    }
    let refused = sign_in(&app, "dr-a", PASSWORD).await;
    assert!(refused.status.is_server_error(), "{}", refused.status);
    assert!(!refused.headers.contains_key("set-cookie"));
    assert!(!refused.text.contains("csrf_token"), "{}", refused.text);
    common::execute(&app, allow).await.unwrap();
    let session = session_of(&app, "dr-a").await;
    let r = with_cookie(&app, &session, false, Method::GET, "/api/v1/recordings", "").await;
    assert_eq!(r.status, StatusCode::OK);

    // A sign-out the trail cannot record still ends the session, at once:
    // leaving it open would be the unsafe way to fail.
    for sql in refuse("sign_out") {
        common::execute(&app, &sql).await.unwrap();
    }
    let out = with_cookie(
        &app,
        &session,
        true,
        Method::POST,
        "/api/v1/auth/logout",
        "",
    )
    .await;
    assert!(out.status.is_server_error(), "{}", out.status);
    let r = with_cookie(&app, &session, false, Method::GET, "/api/v1/recordings", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the session ended");
    common::execute(&app, allow).await.unwrap();

    let trail = app.state.audit.export(None, None, None).await.unwrap();
    let count = |action: &str| trail.iter().filter(|e| e.action == action).count();
    assert_eq!(count("sign_in"), 1, "only the sign-in that was recorded");
    assert_eq!(count("sign_out"), 0);
}

async fn an_administrator_manages_users_over_http(app: TestApp) {
    let app = app.with_auth_on();
    let admin = user_with_token(&app, "admin", Role::Admin).await;
    let clinician = user_with_token(&app, "dr-a", Role::Clinician).await;
    let add = async |body: Value| {
        call(
            &app,
            Some(&admin),
            Method::POST,
            "/api/v1/users",
            Some(body),
        )
        .await
    };

    for (method, uri) in [
        (Method::GET, "/api/v1/users"),
        (Method::POST, "/api/v1/users"),
        (Method::POST, "/api/v1/users/admin/disable"),
    ] {
        let body = json!({"id": "dr-sneaky", "display_name": "Sneaky"});
        let r = call(&app, Some(&clinician), method, uri, Some(body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(
            r.body,
            json!({"detail": "Only an administrator manages users"})
        );
    }

    let made = add(json!({"id": "dr-new", "display_name": "Dr New", "password": PASSWORD})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    assert_eq!(
        (
            &made.body["id"],
            &made.body["role"],
            &made.body["password"],
            &made.body["single_sign_on"],
            &made.body["disabled_at"]
        ),
        (
            &json!("dr-new"),
            &json!("clinician"),
            &json!(true),
            &json!(false),
            &Value::Null
        )
    );
    assert!(
        !made.text.contains(PASSWORD) && !made.text.contains("argon2"),
        "{}",
        made.text
    );
    let linked = add(
        json!({"id": "dr-sso", "display_name": "Dr SSO", "role": "admin", "oidc_subject": "sub-1"}),
    )
    .await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.text);
    assert_eq!(
        (
            &linked.body["role"],
            &linked.body["password"],
            &linked.body["single_sign_on"]
        ),
        (&json!("admin"), &json!(false), &json!(true))
    );

    let refusals = [
        (
            json!({"id": "dr-new", "display_name": "Again"}),
            StatusCode::CONFLICT,
            "a user \"dr-new\" exists already",
        ),
        (
            json!({"id": "dr-x", "display_name": "X", "oidc_subject": "sub-1"}),
            StatusCode::CONFLICT,
            "that OIDC subject belongs to user \"dr-sso\" already",
        ),
        (
            json!({"id": "dr-short", "display_name": "S", "password": "short"}),
            StatusCode::BAD_REQUEST,
            "a password is 15 to 1024 characters; this one has 5",
        ),
        (
            json!({"id": "a b", "display_name": "S"}),
            StatusCode::BAD_REQUEST,
            "a user id is 1 to 64",
        ),
    ];
    for (body, status, detail) in refusals {
        let r = add(body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(
            r.body["detail"].as_str().unwrap().starts_with(detail),
            "{body}: {}",
            r.text
        );
    }
    let r = add(json!({"id": "dr-r", "display_name": "R", "role": "root"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "role"]));
    let r = add(json!({"display_name": "No Id", "password": PASSWORD})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "id"]));
    assert!(!r.text.contains(PASSWORD), "{}", r.text);

    let listed = call(&app, Some(&admin), Method::GET, "/api/v1/users", None).await;
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["admin", "dr-a", "dr-new", "dr-sso"],
        "nothing refused was made"
    );

    // Disabled: the user's session stops at once.
    let session = session_of(&app, "dr-new").await;
    let disabled = call(
        &app,
        Some(&admin),
        Method::POST,
        "/api/v1/users/dr-new/disable",
        None,
    )
    .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text);
    assert!(
        disabled.body["disabled_at"].is_string(),
        "{}",
        disabled.text
    );
    let r = with_cookie(&app, &session, false, Method::GET, "/api/v1/recordings", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let own = call(
        &app,
        Some(&admin),
        Method::POST,
        "/api/v1/users/admin/disable",
        None,
    )
    .await;
    assert_eq!(own.status, StatusCode::CONFLICT, "{}", own.text);
    let none = call(
        &app,
        Some(&admin),
        Method::POST,
        "/api/v1/users/dr-nobody/disable",
        None,
    )
    .await;
    assert_eq!(
        (none.status, &none.body),
        (StatusCode::NOT_FOUND, &json!({"detail": "User not found"}))
    );

    let trail = app.state.audit.export(None, None, None).await.unwrap();
    let by_admin: Vec<(&str, &str)> = trail
        .iter()
        .filter(|e| e.action.starts_with("user_"))
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        by_admin,
        [
            ("admin", "user_add"),
            ("admin", "user_add"),
            ("admin", "user_disable")
        ]
    );
}

on_both_backends!(
    every_route_but_health_refuses_requests_without_valid_credentials,
    an_administrator_manages_users_over_http,
    another_clinicians_recording_is_not_found_and_an_admin_reads_it,
    random_users_and_requests_never_see_another_clinicians_recording,
    a_password_sign_in_gives_a_session_that_needs_its_csrf_token_to_change_anything,
    an_idle_session_ends_and_so_does_an_old_one_in_use,
    failed_sign_ins_are_limited_per_account_and_per_address_then_recover,
    the_first_run_code_creates_the_first_admin_once,
    a_sign_in_the_trail_cannot_record_is_refused,
);
