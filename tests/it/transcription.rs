//! Transcription through the remote engines, on the real binary: a stored
//! dictation becomes a transcript exactly once; failures are retried with
//! backoff and then end in `error` with the reason; `retry` queues it again;
//! a worker killed mid-job is replaced once its lease expires; two PostgreSQL
//! instances share the queue. The engines are the fake in
//! `common/fake_engine.rs`, a real HTTP server speaking their APIs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::fake_engine::{AVG_LOGPROBS, Behaviour, FakeEngine};
use crate::common::{PgTestDb, ServerProcess, client, postgres_or_skip, sqlite_url, webm};
use clinscribe::config::DatabaseSettings;
use clinscribe::db::Database;

const TEXT: &str = "Patient started metformin 500 mg twice daily and lisinopril 10 mg";

/// Settings that keep the retries of a test short.
fn engine_env<'a>(engine: &'a str, url_var: &'a str, url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("PWA_TRANSCRIBE_ENGINE", engine),
        (url_var, url),
        ("PWA_TRANSCRIBE_BACKOFF", "1s"),
        ("PWA_TRANSCRIBE_MAX_ATTEMPTS", "3"),
        ("PWA_TRANSCRIBE_LEASE", "3s"),
        ("PWA_TRANSCRIBE_TIMEOUT", "2s"),
    ]
}

/// Settings for a server whose engine call outlasts the test's waits: no
/// engine timeout, a lease of `lease` (None: the short one), and the audio in
/// `audio_dir`, so that a restarted server finds it.
fn long_job_env<'a>(
    fake_url: &'a str,
    lease: Option<&'a str>,
    audio_dir: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = engine_env("whisper-service", "WHISPER_URL", fake_url);
    env.retain(|(k, _)| {
        *k != "PWA_TRANSCRIBE_TIMEOUT" && (lease.is_none() || *k != "PWA_TRANSCRIBE_LEASE")
    });
    if let Some(lease) = lease {
        env.push(("PWA_TRANSCRIBE_LEASE", lease));
    }
    env.push(("PWA_AUDIO_DIR", audio_dir));
    env
}

/// Uploads a fresh dictation and waits until the engine is working on it; its id.
async fn upload_to_the_engine(server: &ServerProcess, fake: &FakeEngine, seed: u64) -> String {
    let id = upload(server, seed).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .wait_for_status(&id, "processing", Duration::from_secs(10))
        .await;
    while fake.received().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    id
}

/// Uploads a fresh dictation; its recording.
async fn upload(server: &ServerProcess, seed: u64) -> Value {
    let key = uuid::Uuid::new_v4().to_string();
    let (status, body) = server.upload("patient-tx", &webm(40_000, seed), &key).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "queued");
    body
}

/// `(state, attempts, lease_owner)` of a recording's job.
async fn job(database_url: &str, id: &str) -> (String, i64, Option<String>) {
    let settings = DatabaseSettings::parse(database_url, "normal").unwrap();
    let db = Database::open_without_migrating(&settings).await.unwrap();
    let sql = "SELECT state, attempts, lease_owner FROM jobs WHERE CAST(recording_id AS TEXT) = $1";
    let row = match &db {
        Database::Sqlite(db) => sqlx::query_as(sql).bind(id).fetch_one(db.readers()).await,
        Database::Postgres(db) => sqlx::query_as(sql).bind(id).fetch_one(db.pool()).await,
    }
    .unwrap();
    db.close().await;
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whisper_service_transcribes_a_stored_dictation_exactly_once() {
    let fake = FakeEngine::start(vec![], Behaviour::Transcribe(TEXT)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let server = ServerProcess::start_url(
        &url,
        &engine_env("whisper-service", "WHISPER_URL", &fake.url),
    );
    let health: Value = server.get_json("/api/v1/health").await;
    assert_eq!(
        health["components"]["transcription"],
        format!("whisper-service ({}/transcribe)", fake.url)
    );

    let created = upload(&server, 1).await;
    let id = created["id"].as_str().unwrap();
    let done = server
        .wait_for_status(id, "completed", Duration::from_secs(20))
        .await;
    assert_eq!(done["transcript"], TEXT);
    assert_eq!(done["final_transcript"], TEXT);
    assert_eq!(done["whisper_model"], "base");
    assert_eq!(done["transcript_language"], "en");
    assert!(done["error_message"].is_null());
    assert!(
        done["transcription_started_at"].as_str().unwrap()
            <= done["transcription_completed_at"].as_str().unwrap()
    );
    assert_eq!(done["processed_at"], done["transcription_completed_at"]);
    // The guardrails checked the transcript, stored with it in one change.
    let check = &done["verification_results"];
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(check["engine"], "embedded");
    let generics: Vec<&str> = check["extracted"]["medications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["generic"].as_str().unwrap())
        .collect();
    assert_eq!(generics, ["metformin", "lisinopril"]);
    assert_eq!(done["verification_score"], 1.0);
    assert_eq!(done["verified_at"], done["extraction_completed_at"]);
    assert!(
        done["extraction_started_at"].as_str().unwrap() <= done["verified_at"].as_str().unwrap()
    );
    assert!(done["llm_model"].is_null());
    let segments = done["transcript_segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1]["start"], 1.5);
    for (segment, logprob) in segments.iter().zip(AVG_LOGPROBS) {
        let confidence = segment["confidence"].as_f64().unwrap();
        assert!((confidence - logprob.exp()).abs() < 1e-9, "{confidence}");
    }

    // The container got the stored audio, once, under the original's field name.
    let received = fake.received();
    assert_eq!(received.len(), 1);
    let (field, file_name, sha) = received[0].audio.clone().unwrap();
    assert_eq!(
        (field.as_str(), received[0].path.as_str()),
        ("audio", "/transcribe")
    );
    assert_eq!(file_name, format!("{id}.webm"));
    assert_eq!(sha, created["audio_sha256"].as_str().unwrap());
    assert_eq!(job(&url, id).await.0, "done");

    // Retrying a completed recording is refused; an unknown one is 404.
    let retry = |id: String| {
        let url = server.url(&format!("/api/v1/recordings/{id}/retry"));
        async move { client().post(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(retry(id.to_owned()).await, 409);
    assert_eq!(retry(uuid::Uuid::new_v4().to_string()).await, 404);
    assert_eq!(retry("not-a-uuid".into()).await, 422);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.received().len(), 1, "transcribed once");
}

/// A transcript with a penicillin allergy and amoxicillin ends `completed`
/// with the allergy conflict found by the worker's check, its evidence on
/// the drug, in the recording's first completed version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_prescribing_against_an_allergy_is_stored_with_its_alert() {
    const SPOKEN: &str = "The patient is allergic to penicillin. Start amoxicillin 500 milligrams three times a day.";
    let fake = FakeEngine::start(vec![], Behaviour::Transcribe(SPOKEN)).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(
        &sqlite_url(&dir),
        &engine_env("whisper-service", "WHISPER_URL", &fake.url),
    );
    let created = upload(&server, 7).await;
    let id = created["id"].as_str().unwrap();
    let done = server
        .wait_for_status(id, "completed", Duration::from_secs(20))
        .await;
    let check = &done["verification_results"];
    assert_eq!(check["passed"], false, "{check}");
    assert_eq!(done["verification_score"], 0.6);
    let alerts = check["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{check}");
    assert_eq!(alerts[0]["rule_id"], "ALLERGY_CONFLICT");
    assert_eq!(alerts[0]["severity"], "critical");
    let evidence: Vec<&str> = alerts[0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        evidence,
        ["penicillin", "amoxicillin 500 milligrams three times a day"]
    );
    let start = alerts[0]["evidence"][1]["start"].as_u64().unwrap() as usize;
    assert_eq!(&SPOKEN[start..start + "amoxicillin".len()], "amoxicillin");
    // queued -> processing -> completed with its check: two changes.
    assert_eq!(done["version"], created["version"].as_i64().unwrap() + 2);
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_engine_is_retried_after_500_and_429_then_completes() {
    let fake = FakeEngine::start(
        vec![
            Behaviour::Status(500, None),
            Behaviour::Status(429, Some(1)),
        ],
        Behaviour::Transcribe(TEXT),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let mut env = engine_env("openai", "PWA_TRANSCRIBE_URL", &fake.url);
    env.push(("PWA_TRANSCRIBE_API_KEY", "sk-test-secret"));
    env.push(("PWA_TRANSCRIBE_MODEL", "whisper-large-v3"));
    let log = dir.path().join("server.log");
    let env_log: Vec<(&str, &str)> = env.iter().copied().chain([("PWA_LOG", "info")]).collect();
    let server = ServerProcess::start_logging(&url, &env_log, Some(&log));

    let created = upload(&server, 2).await;
    let id = created["id"].as_str().unwrap();
    let done = server
        .wait_for_status(id, "completed", Duration::from_secs(30))
        .await;
    assert_eq!(done["transcript"], TEXT);
    assert_eq!(done["whisper_model"], "whisper-large-v3");
    assert_eq!(done["transcript_language"], "english");
    assert_eq!(job(&url, id).await.1, 3, "three attempts");

    let received = fake.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(request.path, "/v1/audio/transcriptions");
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer sk-test-secret")
        );
        assert!(
            request
                .fields
                .contains(&("model".into(), "whisper-large-v3".into()))
        );
        assert!(
            request
                .fields
                .contains(&("response_format".into(), "verbose_json".into()))
        );
        assert_eq!(request.audio.as_ref().unwrap().0, "file");
    }
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains("sk-test-secret"),
        "the API key is never logged"
    );
    assert!(!log.contains("metformin"), "no transcript in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_in_error_with_the_reason_and_retry_queues_again() {
    let fake = FakeEngine::start(vec![], Behaviour::Status(503, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let server = ServerProcess::start_url(
        &url,
        &engine_env("whisper-service", "WHISPER_URL", &fake.url),
    );
    let id = upload(&server, 3).await["id"].as_str().unwrap().to_owned();

    let failed = server
        .wait_for_status(&id, "error", Duration::from_secs(30))
        .await;
    let reason = failed["error_message"].as_str().unwrap();
    assert!(
        reason.contains("after 3 attempts") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(fake.received().len(), 3);
    assert_eq!(job(&url, &id).await.0, "failed");

    // Malformed answers are retried too, and then end the same way.
    fake.set(Behaviour::Malformed);
    let response = client()
        .post(server.url(&format!("/api/v1/recordings/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let queued: Value = response.json().await.unwrap();
    assert_eq!(
        (queued["status"].as_str(), queued["retry_count"].as_i64()),
        (Some("queued"), Some(1))
    );
    assert!(queued["error_message"].is_null());
    let failed = server
        .wait_for_status(&id, "error", Duration::from_secs(30))
        .await;
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .contains("not a transcript"),
        "{failed}"
    );

    // A server that answers too slowly.
    fake.set(Behaviour::Slow(Duration::from_secs(5), TEXT));
    client()
        .post(server.url(&format!("/api/v1/recordings/{id}/retry")))
        .send()
        .await
        .unwrap();
    let failed = server
        .wait_for_status(&id, "error", Duration::from_secs(40))
        .await;
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{failed}"
    );

    // Once the engine works, a retry completes.
    fake.set(Behaviour::Transcribe(TEXT));
    client()
        .post(server.url(&format!("/api/v1/recordings/{id}/retry")))
        .send()
        .await
        .unwrap();
    let done = server
        .wait_for_status(&id, "completed", Duration::from_secs(20))
        .await;
    assert_eq!(
        (done["transcript"].as_str(), done["retry_count"].as_i64()),
        (Some(TEXT), Some(3))
    );

    // A refusal that retrying cannot fix ends at once.
    fake.set(Behaviour::Status(400, None));
    let other = upload(&server, 4).await["id"].as_str().unwrap().to_owned();
    let failed = server
        .wait_for_status(&other, "error", Duration::from_secs(20))
        .await;
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{failed}"
    );
    assert_eq!(job(&url, &other).await.1, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_cannot_be_reached_is_retried_then_error() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let server =
        ServerProcess::start_url(&url, &engine_env("openai", "PWA_TRANSCRIBE_URL", &closed));
    let id = upload(&server, 5).await["id"].as_str().unwrap().to_owned();
    let failed = server
        .wait_for_status(&id, "error", Duration::from_secs(30))
        .await;
    let reason = failed["error_message"].as_str().unwrap();
    assert!(
        reason.contains("cannot be reached") && reason.contains("after 3 attempts"),
        "{reason}"
    );
    assert_eq!(job(&url, &id).await.1, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_job_leaves_it_to_the_next_after_the_lease() {
    // The first request hangs long enough for the kill; the next succeeds.
    let fake = FakeEngine::start(
        vec![Behaviour::Slow(Duration::from_secs(30), TEXT)],
        Behaviour::Transcribe(TEXT),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let audio_dir = dir.path().join("audio");
    let env = long_job_env(&fake.url, None, audio_dir.to_str().unwrap());
    let server = ServerProcess::start_url(&url, &env);
    let id = upload_to_the_engine(&server, &fake, 6).await;
    server.kill_9();

    let server = ServerProcess::start_url(&url, &env);
    let done = server
        .wait_for_status(&id, "completed", Duration::from_secs(30))
        .await;
    assert_eq!(done["transcript"], TEXT);
    let (state, attempts, _) = job(&url, &id).await;
    assert_eq!(
        (state.as_str(), attempts),
        ("done", 2),
        "the killed attempt counts"
    );
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgresql_instances_transcribe_twenty_dictations_each_once() {
    let Some(admin) = postgres_or_skip("two_postgresql_instances_transcribe") else {
        return;
    };
    let pg = PgTestDb::create(&admin).await;
    let fake = FakeEngine::start(vec![], Behaviour::Slow(Duration::from_millis(150), TEXT)).await;
    // Instances that share a database share the audio store too: either may
    // take a dictation the other stored.
    let audio = tempfile::tempdir().unwrap();
    let mut env = engine_env("whisper-service", "WHISPER_URL", &fake.url);
    env.push(("PWA_AUDIO_DIR", audio.path().to_str().unwrap()));
    let servers = [
        ServerProcess::start_url(&pg.url, &env),
        ServerProcess::start_url(&pg.url, &env),
    ];
    let mut ids = Vec::new();
    for n in 0..20u64 {
        ids.push(
            upload(&servers[(n % 2) as usize], 100 + n).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut owners = std::collections::HashSet::new();
    for id in &ids {
        servers[0]
            .wait_for_status(id, "completed", Duration::from_secs(60))
            .await;
        let (state, attempts, owner) = job(&pg.url, id).await;
        assert_eq!((state.as_str(), attempts), ("done", 1));
        // `host:pid@addr/worker`: the instance is what precedes the worker number.
        let owner = owner.unwrap();
        owners.insert(owner.rsplit_once('/').unwrap().0.to_owned());
    }
    assert_eq!(owners.len(), 2, "both instances took some: {owners:?}");
    let received = fake.received();
    assert_eq!(received.len(), 20, "each transcribed exactly once");
    let names: std::collections::HashSet<_> = received
        .iter()
        .map(|r| r.audio.clone().unwrap().1)
        .collect();
    assert_eq!(names.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_mid_job_puts_it_back_in_the_queue_at_once() {
    let fake = FakeEngine::start(
        vec![Behaviour::Slow(Duration::from_secs(30), TEXT)],
        Behaviour::Transcribe(TEXT),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let audio_dir = dir.path().join("audio");
    // A lease far longer than the test waits: only an orderly hand-back
    // lets the restarted server take the job in time.
    let env = long_job_env(&fake.url, Some("120s"), audio_dir.to_str().unwrap());
    let server = ServerProcess::start_url(&url, &env);
    let id = upload_to_the_engine(&server, &fake, 8).await;
    let stopping = Instant::now();
    assert_eq!(server.terminate(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "SIGTERM waited for the engine: {:?}",
        stopping.elapsed()
    );
    let (state, attempts, _) = job(&url, &id).await;
    assert_eq!(
        (state.as_str(), attempts),
        ("queued", 1),
        "handed back, due at once"
    );

    let server = ServerProcess::start_url(&url, &env);
    let done = server
        .wait_for_status(&id, "completed", Duration::from_secs(15))
        .await;
    assert_eq!(done["transcript"], TEXT);
    assert_eq!(job(&url, &id).await.1, 2);
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_that_meets_a_full_disk_is_kept_and_stored_once_space_returns() {
    use crate::common::small_fs::{SmallFs, fill};
    let Some(fs) = SmallFs::mount("12m", None) else {
        return;
    };
    // Long enough to need more pages than the refused write left in the WAL
    // (a later, smaller write would fit in them).
    let long_text: &'static str = Box::leak([TEXT; 2000].join(". ").into_boxed_str());
    let fake = FakeEngine::start(
        // Slow enough for the disk to fill before the engine answers.
        vec![Behaviour::Slow(Duration::from_secs(10), long_text)],
        Behaviour::Transcribe(long_text),
    )
    .await;
    let url = format!("sqlite://{}", fs.path().join("clinical.db").display());
    let audio_dir = fs.path().join("audio");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let mut env = long_job_env(&fake.url, Some("120s"), audio_dir.to_str().unwrap());
    env.push(("PWA_LOG", "info"));
    let server = ServerProcess::start_logging(&url, &env, Some(&log));
    let id = upload_to_the_engine(&server, &fake, 9).await;

    // While the engine works, the disk fills up, to the last page of the WAL.
    let filler = fs.path().join("filler");
    fill(&filler);
    let mut full = false;
    for _ in 0..5000 {
        let response = client()
            .post(server.url("/api/v1/recordings"))
            .json(&serde_json::json!({"patient_id": "patient-tx", "duration_seconds": 1}))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            201 => {}
            507 => {
                full = true;
                break;
            }
            other => panic!("a write on a full disk answered {other}"),
        }
    }
    assert!(full, "the disk never filled");
    assert_eq!(fake.received().len(), 1, "the engine is still working");
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("cannot store a transcript yet")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker never met the full disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read from the file: a GET on a full disk is refused (its audit event
    // cannot be written), as it should be.
    let meanwhile: (String, Option<String>) = {
        use sqlx::Connection as _;
        let file = fs.path().join("clinical.db");
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", file.display()))
                .await
                .unwrap();
        let row = sqlx::query_as("SELECT status, transcript FROM recordings WHERE id = ?1")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        row
    };
    assert_eq!(meanwhile, ("processing".to_owned(), None));

    // Space returns: the transcript the engine already made is stored, once,
    // without asking the engine again.
    std::fs::remove_file(&filler).unwrap();
    let done = server
        .wait_for_status(&id, "completed", Duration::from_secs(15))
        .await;
    assert!(
        done["transcript"] == long_text,
        "the whole transcript is stored"
    );
    let (state, attempts, _) = job(&url, &id).await;
    assert_eq!((state.as_str(), attempts), ("done", 1));
    assert_eq!(fake.received().len(), 1);
    assert_eq!(server.terminate(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("transcript stored after all"), "{log}");
    assert!(!log.contains(TEXT), "the transcript is never logged");
}
