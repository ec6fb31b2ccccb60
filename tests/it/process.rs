//! The real binary as a process: restarts, SIGTERM, kill -9, many writers, CLI errors.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{ServerProcess, binary, client, open_db};
use serde_json::{Value, json};
use uuid::Uuid;

async fn create(
    client: &reqwest::Client,
    server_url: &str,
    patient: &str,
) -> reqwest::Result<(u16, Value)> {
    let response = client
        .post(format!("{server_url}/api/v1/recordings"))
        .json(&json!({"patient_id": patient, "duration_seconds": 60}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_survive_a_restart_of_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data/clinical.db");
    let http = client();

    let server = ServerProcess::start(&db_path);
    let mut created = Vec::new();
    for i in 0..20 {
        let (status, body) = create(&http, &server.base_url, &format!("patient-{i:03}"))
            .await
            .unwrap();
        assert_eq!(status, 201);
        created.push(body);
    }
    assert_eq!(server.terminate(), Some(0), "SIGTERM exits 0");
    let wal = db_path.with_extension("db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL checkpointed on shutdown"
    );

    let server = ServerProcess::start(&db_path);
    for before in &created {
        let id = before["id"].as_str().unwrap();
        let after: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
        assert_eq!(&after, before, "identical after restart");
    }
    let listed: Vec<Value> = server.get_json("/api/v1/recordings").await;
    assert_eq!(listed.len(), 20);
    assert_eq!(server.terminate(), Some(0));
}

/// 8 concurrent writers, `kill -9` mid-stream, restart: every 201 is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let http = client();
    let mut acknowledged: HashSet<Uuid> = HashSet::new();

    for cycle in 0..5 {
        let server = ServerProcess::start(&db_path);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let http = http.clone();
                let url = server.base_url.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 5_000 {
                        n += 1;
                        match create(&http, &url, &format!("c{cycle}-w{w}-{n}")).await {
                            Ok((201, body)) => {
                                acked.push(Uuid::parse_str(body["id"].as_str().unwrap()).unwrap())
                            }
                            Ok((status, body)) => panic!("unexpected {status}: {body}"),
                            Err(_) => break, // the server died under us: expected
                        }
                    }
                    acked
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + 150 * cycle)).await;
        server.kill_9();
        stop.store(true, Ordering::Relaxed);
        let mut this_cycle = 0;
        for w in writers {
            let acked = w.await.unwrap();
            this_cycle += acked.len();
            acknowledged.extend(acked);
        }
        assert!(
            this_cycle > 0,
            "cycle {cycle}: writers made progress before the kill"
        );
    }

    let db = open_db(&db_path).await;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(db.readers())
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let stored: HashSet<Uuid> = sqlx::query_scalar::<_, String>("SELECT id FROM recordings")
        .fetch_all(db.readers())
        .await
        .unwrap()
        .into_iter()
        .map(|s| Uuid::parse_str(&s).unwrap())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged recordings lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        acknowledged.len() >= 40,
        "only {} writes acknowledged",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_writers_never_see_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = ServerProcess::start(&db_path);
    let http = client();
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let http = http.clone();
            let url = server.base_url.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..25 {
                    let (status, body) = create(&http, &url, &format!("w{w}-{i}"))
                        .await
                        .expect("request");
                    if status != 201 {
                        statuses.push(format!("{status}: {body}"));
                    }
                }
                statuses
            })
        })
        .collect();
    let mut failures = Vec::new();
    for w in writers {
        failures.extend(w.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let listed: Vec<Value> = server.get_json("/api/v1/recordings?limit=1000").await;
    assert_eq!(listed.len(), 1000);
    let next = http
        .get(server.url("/api/v1/recordings?limit=1000"))
        .send()
        .await
        .unwrap();
    assert!(
        next.headers().contains_key("link"),
        "1600 rows: a second page exists"
    );
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn a_bad_setting_is_one_line_naming_it_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let broken_data = dir.path().join("guardrails");
    std::fs::create_dir(&broken_data).unwrap();
    std::fs::write(broken_data.join("rules.toml"), "version = [\n").unwrap();
    let broken_data = broken_data.to_str().unwrap().to_owned();
    let cases: [(&str, &str, &str); 13] = [
        (
            "PWA_DATABASE_URL",
            "mysql://localhost/db",
            "PWA_DATABASE_URL",
        ),
        ("PWA_BIND", "not-an-address", "PWA_BIND"),
        (
            "PWA_SQLITE_SYNCHRONOUS",
            "sometimes",
            "PWA_SQLITE_SYNCHRONOUS",
        ),
        ("PWA_LOG", "info,[", "PWA_LOG"),
        ("PWA_AUTH", "maybe", "PWA_AUTH"),
        ("PWA_METRICS_BIND", "somewhere", "PWA_METRICS_BIND"),
        // The metrics never on the service's own port.
        ("PWA_METRICS_BIND", "127.0.0.1:8000", "port of their own"),
        ("PWA_SESSION_IDLE", "soon", "PWA_SESSION_IDLE"),
        ("PWA_SESSION_MAX", "0s", "PWA_SESSION_MAX"),
        ("PWA_EXTRACT_ENGINE", "oracle", "PWA_EXTRACT_ENGINE"),
        // The openai engine without its server.
        ("PWA_EXTRACT_ENGINE", "openai", "PWA_EXTRACT_BASE_URL"),
        ("PWA_GUARDRAILS_DIR", "/no/such/dir", "PWA_GUARDRAILS_DIR"),
        ("PWA_GUARDRAILS_DIR", &broken_data, "rules.toml: line 1"),
    ];
    for (var, value, named) in cases {
        let output = Command::new(binary())
            .arg("serve")
            .current_dir(dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{var}: {stderr}");
        assert!(stderr.contains(named), "{var}: {stderr}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing created on a bad setting"
    );
}

#[tokio::test]
async fn a_guardrails_directory_replaces_the_files_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("guardrails");
    std::fs::create_dir(&data).unwrap();
    // A site's rules: the identifier check off.
    let rules = include_str!("../../src/guardrails/data/rules.toml").replace(
        r#"{ id = "PII_IDENTIFIER", severity = "critical","#,
        r#"{ id = "PII_IDENTIFIER", enabled = false, severity = "critical","#,
    );
    std::fs::write(data.join("rules.toml"), rules).unwrap();
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[("PWA_GUARDRAILS_DIR", data.to_str().unwrap())],
    );
    let result: Value = client()
        .post(server.url("/api/v1/verify"))
        .json(&json!({"text": "Medicare 2123 45670 1."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checks = result["checks_performed"].as_array().unwrap();
    assert_eq!(checks.len(), 7, "{result}");
    assert!(!checks.contains(&Value::from("PII_IDENTIFIER")));
    assert_eq!(result["passed"], true);
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn help_documents_every_subcommand_and_setting() {
    let output = Command::new(binary()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "serve",
        "migrate",
        "PWA_DATABASE_URL",
        "PWA_SQLITE_SYNCHRONOUS",
        "PWA_LOG",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let output = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("PWA_BIND"));
}

#[test]
fn migrate_applies_then_reports_status_with_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite+aiosqlite:///{}", dir.path().join("c.db").display());
    let run = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .env("PWA_DATABASE_URL", &url)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["migrate", "--status"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("pending") && !out.contains("applied "),
        "{out}"
    );
    let (code, out) = run(&["migrate"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("applied 12 migration(s)"), "{out}");
    let (code, out) = run(&["migrate", "--status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("applied") && !out.contains("pending"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().last().is_some_and(|c| c.len() == 96)),
        "{out}"
    );
    let (_, out) = run(&["migrate"]);
    assert!(out.contains("applied 0 migration(s)"), "{out}");
}
