//! The `openai` extraction engine against a chat completions server the test
//! starts (tests/it/common/fake_llm.rs): what it is asked, a good answer
//! located in the text, an invented medication flagged, malformed answers
//! and a timeout refused, and the `verify` jobs that check every note with
//! it: retried, stored once, audited, checked by the embedded engine when it
//! keeps failing, and waited for before signing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::fake_engine::{Behaviour, FakeEngine};
use crate::common::fake_llm::{FakeLlm, Reply};
use crate::common::{ServerProcess, client, sqlite_url, webm};

const NOTE: &str = "Allergic to penicillin. Start amoxicillin 500 mg three times a day.";
const MODEL: &str = "llama-3.1-8b-instruct";

/// The facts of [`NOTE`] as a model answers them.
fn note_facts() -> Value {
    json!({
        "medications": [{
            "text": "amoxicillin 500 mg three times a day", "name": "amoxicillin",
            "dose": 500, "unit": "mg", "frequency": "three times daily", "times_per_day": 3,
            "route": null, "status": "started"
        }],
        "allergies": [{"text": "penicillin", "substance": "penicillin"}],
        "no_known_allergies": false,
        "conditions": [],
        "vital_signs": []
    })
}

/// Settings for a server extracting with the fake at `url`.
fn openai_env(url: &str) -> Vec<(&str, &str)> {
    vec![
        ("PWA_EXTRACT_ENGINE", "openai"),
        ("PWA_EXTRACT_BASE_URL", url),
        ("PWA_EXTRACT_MODEL", MODEL),
        ("PWA_EXTRACT_API_KEY", "sk-extract-secret"),
        ("PWA_EXTRACT_TIMEOUT", "2s"),
        ("PWA_TRANSCRIBE_BACKOFF", "1s"),
        ("PWA_TRANSCRIBE_MAX_ATTEMPTS", "3"),
        ("PWA_TRANSCRIBE_LEASE", "5s"),
    ]
}

async fn verify(server: &ServerProcess, text: &str) -> (u16, Value) {
    let r = client()
        .post(server.url("/api/v1/verify"))
        .json(&json!({"text": text}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The code points of `part` in `text`.
fn span_of(text: &str, part: &str) -> (usize, usize) {
    let start = text[..text.find(part).unwrap()].chars().count();
    (start, start + part.chars().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_answer_is_checked_with_each_item_located_in_the_text() {
    let llm = FakeLlm::start(vec![], Reply::Facts(note_facts())).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(&sqlite_url(&dir), &openai_env(&llm.url));
    let health: Value = server.get_json("/api/v1/health").await;
    assert_eq!(
        health["components"]["extraction"],
        format!("openai ({}/v1/chat/completions, model {MODEL})", llm.url)
    );
    let (status, check) = verify(&server, NOTE).await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["engine"], "openai");
    assert_eq!(check["passed"], false);
    let alerts = check["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{check}");
    assert_eq!(alerts[0]["rule_id"], "ALLERGY_CONFLICT");
    assert_eq!(alerts[0]["severity"], "critical");
    let (start, end) = span_of(NOTE, "amoxicillin 500 mg three times a day");
    assert_eq!(
        alerts[0]["evidence"][1],
        json!({"start": start, "end": end, "text": "amoxicillin 500 mg three times a day"})
    );
    let medication = &check["extracted"]["medications"][0];
    assert_eq!(medication["generic"], "amoxicillin");
    assert_eq!(medication["per_day"], 3.0);
    assert_eq!(
        check["extracted"]["allergies"][0]["span"],
        json!({"start": 12, "end": 22})
    );

    let asked = llm.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].path, "/v1/chat/completions");
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some("Bearer sk-extract-secret")
    );
    let body = &asked[0].body;
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["temperature"], 0);
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": NOTE})
    );
    let format = &body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["required"],
        json!([
            "allergies",
            "conditions",
            "medications",
            "no_known_allergies",
            "vital_signs"
        ])
    );
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invented_medication_is_kept_and_flagged_unsupported() {
    let mut facts = note_facts();
    facts["medications"].as_array_mut().unwrap().push(json!({
        "text": "warfarin 5 mg daily", "name": "Coumadin", "dose": 5, "unit": "mg",
        "frequency": "daily", "times_per_day": 1, "route": "oral", "status": "continued"
    }));
    let llm = FakeLlm::start(vec![], Reply::Facts(facts)).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(&sqlite_url(&dir), &openai_env(&llm.url));
    let (status, check) = verify(&server, NOTE).await;
    assert_eq!(status, 200, "{check}");
    let invented = &check["extracted"]["medications"][1];
    assert_eq!(invented["generic"], "warfarin", "the brand is normalised");
    assert!(invented["span"].is_null(), "{invented}");
    let rules: Vec<(&str, &str)> = check["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule_id"].as_str().unwrap(),
                a["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("ALLERGY_CONFLICT", "critical"),
            ("UNSUPPORTED_BY_TRANSCRIPT", "high")
        ]
    );
    let unsupported = &check["alerts"][1];
    assert!(
        unsupported["message"]
            .as_str()
            .unwrap()
            .contains("warfarin 5 mg daily"),
        "{unsupported}"
    );
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_and_a_timeout_are_refused_with_503() {
    let mut wrong_type = note_facts();
    wrong_type["medications"][0]["dose"] = json!("five hundred");
    let mut unknown_unit = note_facts();
    unknown_unit["medications"][0]["unit"] = json!("bucket");
    let llm = FakeLlm::start(
        vec![
            Reply::Content("Sure! Here are the facts: {medications: ["),
            Reply::Facts(wrong_type),
            Reply::Facts(unknown_unit),
            Reply::Slow(Duration::from_secs(5), Box::new(Reply::Facts(note_facts()))),
            Reply::Status(429, Some(7)),
        ],
        Reply::Facts(note_facts()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(&sqlite_url(&dir), &openai_env(&llm.url));
    for expected in [
        "not the facts asked for",
        "not the facts asked for",
        "the unit \"bucket\"",
    ] {
        let (status, body) = verify(&server, NOTE).await;
        assert_eq!(status, 503, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{detail}");
    }
    let started = Instant::now();
    let (status, body) = verify(&server, NOTE).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "PWA_EXTRACT_TIMEOUT is 2s"
    );
    let (status, body) = verify(&server, NOTE).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("429"), "{body}");
    let (status, body) = verify(&server, NOTE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_retrying_cannot_mend_is_said_as_such() {
    let llm = FakeLlm::start(vec![], Reply::Status(400, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(&sqlite_url(&dir), &openai_env(&llm.url));
    let (status, body) = verify(&server, NOTE).await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("the language model server refused the request (400 Bad Request)"),
        "{detail}"
    );
    assert_eq!(llm.asked().len(), 1, "not retried within the request");
    assert_eq!(server.terminate(), Some(0));
}

/// Polls the recording until `done(recording)` holds (panics after `within`).
async fn wait_until(
    server: &ServerProcess,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let recording: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
        if done(&recording) {
            return recording;
        }
        assert!(
            started.elapsed() < within,
            "not yet after {within:?}: {recording}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload(server: &ServerProcess, seed: u64) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    let (status, body) = server
        .upload("patient-llm", &webm(40_000, seed), &key)
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `(kind, state, attempts)` of every job of a recording.
async fn jobs_of(url: &str, id: &str) -> Vec<(String, String, i64)> {
    use clinscribe::config::DatabaseSettings;
    use clinscribe::db::Database;
    let settings = DatabaseSettings::parse(url, "normal").unwrap();
    let db = Database::open_without_migrating(&settings).await.unwrap();
    let sql = "SELECT kind, state, attempts FROM jobs \
               WHERE CAST(recording_id AS TEXT) = $1 ORDER BY kind";
    let rows = match &db {
        Database::Sqlite(db) => sqlx::query_as(sql).bind(id).fetch_all(db.readers()).await,
        Database::Postgres(db) => sqlx::query_as(sql).bind(id).fetch_all(db.pool()).await,
    }
    .unwrap();
    db.close().await;
    rows
}

async fn history(server: &ServerProcess, id: &str) -> Vec<Value> {
    server
        .get_json::<Value>(&format!("/api/v1/recordings/{id}/history"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transcript_is_checked_by_a_verify_job_retried_until_it_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    checked_by_a_verify_job(&sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transcript_is_checked_by_a_verify_job_on_postgresql() {
    let test = "every_transcript_is_checked_by_a_verify_job_on_postgresql";
    let Some(admin) = crate::common::postgres_or_skip(test) else {
        return;
    };
    let pg = crate::common::PgTestDb::create(&admin).await;
    checked_by_a_verify_job(&pg.url).await;
}

/// A transcript's check: a malformed answer and a 503 retried, then stored
/// once, with its FHIR bundle and its audit event.
async fn checked_by_a_verify_job(url: &str) {
    let whisper = FakeEngine::start(vec![], Behaviour::Transcribe(NOTE)).await;
    let llm = FakeLlm::start(
        vec![
            Reply::Content("{\"medications\": oops"),
            Reply::Status(503, None),
        ],
        Reply::Facts(note_facts()),
    )
    .await;
    let mut env = openai_env(&llm.url);
    env.extend([
        ("PWA_TRANSCRIBE_ENGINE", "whisper-service"),
        ("WHISPER_URL", whisper.url.as_str()),
    ]);
    let server = ServerProcess::start_url(url, &env);
    let id = upload(&server, 1).await;
    let checked = wait_until(&server, &id, Duration::from_secs(30), |r| {
        !r["verification_results"].is_null()
    })
    .await;
    assert_eq!(checked["status"], "completed");
    assert_eq!(checked["final_transcript"], NOTE);
    let check = &checked["verification_results"];
    assert_eq!(check["engine"], "openai");
    assert!(check.get("engine_error").is_none(), "{check}");
    assert_eq!(check["alerts"][0]["rule_id"], "ALLERGY_CONFLICT");
    assert_eq!(checked["llm_model"], MODEL);
    assert_eq!(checked["verification_score"], 0.6);
    assert_eq!(checked["verified_at"], checked["extraction_completed_at"]);
    assert_eq!(
        checked["fhir_bundle"]["entry"][0]["resource"]["medicationCodeableConcept"]["text"],
        "amoxicillin"
    );
    assert_eq!(llm.asked().len(), 3, "malformed, 503, then a good answer");
    assert_eq!(
        jobs_of(url, &id).await,
        [
            ("transcribe".to_owned(), "done".to_owned(), 1),
            ("verify".to_owned(), "done".to_owned(), 3)
        ]
    );
    // The note went to the model: the trail says so, once.
    let verified: Vec<Value> = history(&server, &id)
        .await
        .into_iter()
        .filter(|e| e["action"] == "verify")
        .collect();
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0]["actor"], "system:guardrails");
    assert_eq!(verified[0]["changes"]["llm_model"], json!([null, MODEL]));
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_keeps_failing_leaves_the_check_to_the_embedded_engine() {
    let whisper = FakeEngine::start(vec![], Behaviour::Transcribe(NOTE)).await;
    let llm = FakeLlm::start(vec![], Reply::Status(500, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let mut env = openai_env(&llm.url);
    env.retain(|(k, _)| *k != "PWA_TRANSCRIBE_MAX_ATTEMPTS");
    env.extend([
        ("PWA_TRANSCRIBE_MAX_ATTEMPTS", "2"),
        ("PWA_TRANSCRIBE_ENGINE", "whisper-service"),
        ("WHISPER_URL", whisper.url.as_str()),
    ]);
    let server = ServerProcess::start_url(&url, &env);
    let id = upload(&server, 2).await;
    let checked = wait_until(&server, &id, Duration::from_secs(30), |r| {
        !r["verification_results"].is_null()
    })
    .await;
    let check = &checked["verification_results"];
    assert_eq!(check["engine"], "embedded");
    let why = check["engine_error"].as_str().unwrap();
    assert!(
        why.contains("failed after 2 attempts") && why.contains("500"),
        "{why}"
    );
    assert_eq!(
        check["alerts"][0]["rule_id"], "ALLERGY_CONFLICT",
        "still checked"
    );
    assert!(checked["llm_model"].is_null());
    assert_eq!(llm.asked().len(), 2);
    assert_eq!(
        jobs_of(&url, &id).await[1],
        ("verify".to_owned(), "failed".to_owned(), 2)
    );
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_is_checked_again_and_the_note_is_signed_only_once_it_is() {
    let whisper = FakeEngine::start(vec![], Behaviour::Transcribe(NOTE)).await;
    let llm = FakeLlm::start(
        vec![
            Reply::Facts(note_facts()),
            Reply::Slow(
                Duration::from_millis(1500),
                Box::new(Reply::Facts(note_facts())),
            ),
        ],
        Reply::Facts(note_facts()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let mut env = openai_env(&llm.url);
    env.extend([
        ("PWA_TRANSCRIBE_ENGINE", "whisper-service"),
        ("WHISPER_URL", whisper.url.as_str()),
    ]);
    let server = ServerProcess::start_url(&url, &env);
    let id = upload(&server, 3).await;
    let checked = wait_until(&server, &id, Duration::from_secs(30), |r| {
        !r["verification_results"].is_null()
    })
    .await;
    let http = client();
    let recording_url = server.url(&format!("/api/v1/recordings/{id}"));
    let corrected = format!("{NOTE} Review in two weeks.");
    let r = http
        .patch(&recording_url)
        .header("if-match", format!("\"{}\"", checked["version"]))
        .json(&json!({"final_transcript": corrected}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert!(
        patched["verification_results"].is_null(),
        "the old check is not the new text's: {patched}"
    );
    assert!(patched["fhir_bundle"].is_null());
    let sign = |version: &Value, body: Value| {
        http.post(server.url(&format!("/api/v1/recordings/{id}/sign")))
            .header("if-match", format!("\"{version}\""))
            .json(&body)
            .send()
    };
    let r = sign(&patched["version"], json!({})).await.unwrap();
    assert_eq!(r.status(), 409);
    let detail = r.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("still checking"), "{detail}");

    let rechecked = wait_until(&server, &id, Duration::from_secs(30), |r| {
        !r["verification_results"].is_null()
    })
    .await;
    assert_eq!(rechecked["final_transcript"], corrected.as_str());
    assert_eq!(
        rechecked["version"],
        patched["version"].as_i64().unwrap() + 1
    );
    assert_eq!(
        llm.asked()[1].body["messages"][1]["content"],
        corrected.as_str()
    );
    let alert = rechecked["verification_results"]["alerts"][0]["id"].clone();
    let r = sign(
        &rechecked["version"],
        json!({"acknowledgements": [{"alert_id": alert, "reason": "Allergy disproven by testing"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let signed: Value = r.json().await.unwrap();
    assert_eq!(signed["acknowledgements"][0]["alert_id"], alert);
    assert_eq!(
        jobs_of(&url, &id).await[1],
        ("verify".to_owned(), "done".to_owned(), 1)
    );
    assert_eq!(server.terminate(), Some(0));
}
