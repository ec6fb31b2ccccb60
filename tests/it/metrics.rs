//! Prometheus metrics (`PWA_METRICS_BIND`), scraped from the real binary
//! after a scripted workload: each counter moved by exactly what was done,
//! the queue's gauges say what is stored, and no label holds a patient id or
//! a recording id.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_engine::{Behaviour, FakeEngine};
use crate::common::{ServerProcess, client, webm};

/// One sample of the exposition text: its labels and value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parses Prometheus's text format (the lines that are samples).
fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().expect("value"))
        })
        .collect()
}

/// The value of the series `name` with exactly `labels` (0 when absent).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map_or(0.0, |(_, _, v)| *v)
}

async fn scrape(server: &ServerProcess) -> (String, Samples) {
    let url = server.metrics_url.as_deref().expect("metrics listening");
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

const SECRET_PATIENT: &str = "patient-SECRET-4711";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_by_exactly_what_was_done_and_no_label_holds_an_id() {
    let whisper =
        FakeEngine::start(vec![], Behaviour::Transcribe("Blood pressure 130 over 85.")).await;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::sqlite_url(&dir);
    let server = ServerProcess::start_url(
        &url,
        &[
            ("PWA_METRICS_BIND", "127.0.0.1:0"),
            ("PWA_TRANSCRIBE_ENGINE", "whisper-service"),
            ("WHISPER_URL", &whisper.url),
        ],
    );
    let (_, before) = scrape(&server).await;
    assert_eq!(
        value(
            &before,
            "clinscribe_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(value(&before, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&before, "process_open_fds", &[]) > 3.0);

    let http = client();
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = http
            .post(server.url("/api/v1/recordings"))
            .json(&json!({"patient_id": format!("{SECRET_PATIENT}-{n}"), "duration_seconds": 30}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let refused = http
        .post(server.url("/api/v1/recordings"))
        .json(&json!({"patient_id": SECRET_PATIENT}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    for id in &ids {
        let r = http
            .get(server.url(&format!("/api/v1/recordings/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let checked = http
        .post(server.url("/api/v1/verify"))
        .json(
            &json!({"text": "Allergic to penicillin. Start amoxicillin 500 mg three times a day."}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), 200);

    // A dictation uploaded twice (the same key and audio): one recording, one job.
    let key = uuid::Uuid::new_v4().to_string();
    let audio = webm(40_000, 3);
    let (status, first) = server.upload(SECRET_PATIENT, &audio, &key).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = server.upload(SECRET_PATIENT, &audio, &key).await;
    assert_eq!(status, 200, "{again}");
    let uploaded = first["id"].as_str().unwrap().to_owned();
    server
        .wait_for_status(&uploaded, "completed", Duration::from_secs(30))
        .await;

    let (text, after) = scrape(&server).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "clinscribe_http_requests_total";
    let create = [("method", "POST"), ("route", "/api/v1/recordings")];
    assert_eq!(
        moved(requests, &[create[0], create[1], ("status_class", "2xx")]),
        3.0
    );
    assert_eq!(
        moved(requests, &[create[0], create[1], ("status_class", "4xx")]),
        1.0
    );
    let read = [
        ("method", "GET"),
        ("route", "/api/v1/recordings/{recording_id}"),
        ("status_class", "2xx"),
    ];
    assert!(
        moved(requests, &read) >= 3.0,
        "the three reads, and the polls"
    );
    assert_eq!(
        moved("clinscribe_http_request_duration_seconds_count", &create),
        4.0
    );
    assert_eq!(moved("clinscribe_uploads_completed_total", &[]), 1.0);
    assert_eq!(moved("clinscribe_uploads_deduplicated_total", &[]), 1.0);
    assert_eq!(
        moved("clinscribe_upload_bytes_total", &[]),
        2.0 * audio.len() as f64
    );
    assert_eq!(
        moved("clinscribe_job_attempts_total", &[("kind", "transcribe")]),
        1.0
    );
    assert_eq!(
        moved(
            "clinscribe_jobs_finished_total",
            &[("kind", "transcribe"), ("outcome", "completed")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "clinscribe_job_duration_seconds_count",
            &[("kind", "transcribe")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "clinscribe_jobs",
            &[("kind", "transcribe"), ("state", "done")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "clinscribe_jobs",
            &[("kind", "transcribe"), ("state", "queued")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "clinscribe_jobs_oldest_due_age_seconds",
            &[("kind", "transcribe")]
        ),
        0.0
    );
    assert_eq!(
        moved(
            "clinscribe_transcription_seconds_per_audio_second_count",
            &[]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "clinscribe_check_alerts_total",
            &[("rule", "ALLERGY_CONFLICT"), ("severity", "critical")]
        ),
        1.0
    );
    // The /verify text, and the transcript's check.
    assert_eq!(
        moved(
            "clinscribe_checks_total",
            &[("engine", "embedded"), ("passed", "false")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "clinscribe_checks_total",
            &[("engine", "embedded"), ("passed", "true")]
        ),
        1.0
    );
    // The three creates, one after the other: three group commits of one.
    assert_eq!(moved("clinscribe_db_commit_batch_size_count", &[]), 3.0);
    assert_eq!(moved("clinscribe_db_commit_batch_size_sum", &[]), 3.0);
    let pool = |state| {
        value(
            &after,
            "clinscribe_db_pool_connections",
            &[("pool", "sqlite_readers"), ("state", state)],
        )
    };
    assert!(
        pool("idle") + pool("in_use") >= 1.0,
        "the readers' pool is open"
    );
    assert!(text.contains("clinscribe_db_pool_connections{pool=\"sqlite_writer\",state=\"idle\"}"));

    // No label carries a patient id or a recording id.
    assert!(!text.contains("SECRET"), "a patient id in the metrics");
    for id in ids.iter().chain([&uploaded]) {
        assert!(!text.contains(id.as_str()), "a recording id in the metrics");
    }
    // The public port does not serve them.
    let public = http.get(server.url("/metrics")).send().await.unwrap();
    assert!(
        !public
            .text()
            .await
            .unwrap()
            .contains("clinscribe_http_requests_total")
    );
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_shows_as_the_oldest_due_jobs_age() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::sqlite_url(&dir);
    // No engine: the dictation waits in the queue.
    let server = ServerProcess::start_url(&url, &[("PWA_METRICS_BIND", "127.0.0.1:0")]);
    let (status, _) = server
        .upload(
            "patient-backlog",
            &webm(40_000, 4),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A chunked upload begun and not finished: an open session.
    let started = client()
        .post(server.url("/api/v1/uploads"))
        .json(&json!({
            "local_storage_key": uuid::Uuid::new_v4().to_string(),
            "patient_id": "patient-backlog",
            "duration_seconds": 4,
            "total_bytes": 5000
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let (_, samples) = scrape(&server).await;
    assert_eq!(
        value(
            &samples,
            "clinscribe_jobs",
            &[("kind", "transcribe"), ("state", "queued")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "clinscribe_upload_sessions_open", &[]), 1.0);
    let age = value(
        &samples,
        "clinscribe_jobs_oldest_due_age_seconds",
        &[("kind", "transcribe")],
    );
    assert!((1.0..30.0).contains(&age), "{age}");
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_counted_by_outcome_and_sessions_by_the_active() {
    const PASSWORD: &str = "correct horse battery staple";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clinical.db");
    let added = crate::common::run_cli_stdin(
        &db,
        &["user", "add", "dr-m", "--name", "Dr M", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(added.code, Some(0), "{added:?}");
    let server = ServerProcess::start_url(
        &format!("sqlite://{}", db.display()),
        &[("PWA_METRICS_BIND", "127.0.0.1:0"), ("PWA_AUTH", "on")],
    );
    let login = |password: &'static str| {
        client()
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"username": "dr-m", "password": password}))
            .send()
    };
    assert_eq!(
        login("not the password at all").await.unwrap().status(),
        401
    );
    for _ in 0..2 {
        assert_eq!(login(PASSWORD).await.unwrap().status(), 200);
    }
    let (text, samples) = scrape(&server).await;
    let sign_ins = |outcome| {
        value(
            &samples,
            "clinscribe_sign_ins_total",
            &[("method", "password"), ("outcome", outcome)],
        )
    };
    assert_eq!((sign_ins("success"), sign_ins("failure")), (2.0, 1.0));
    assert_eq!(value(&samples, "clinscribe_sessions_active", &[]), 2.0);
    assert!(!text.contains("dr-m"), "a user id in the metrics");
    assert_eq!(server.terminate(), Some(0));
}
