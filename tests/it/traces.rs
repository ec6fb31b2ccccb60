//! OpenTelemetry traces from the real binary to a real OTLP receiver the test
//! starts (`common::otlp`): one trace per request with its store spans, a
//! dictation's upload and its transcription job in the trace the client
//! started (`traceparent`), no patient data anywhere in them, and both
//! protocols (gRPC, the default; HTTP/protobuf).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_engine::{Behaviour, FakeEngine};
use crate::common::otlp::{ReceivedSpan, Receiver};
use crate::common::{ServerProcess, client, webm};

const SECRET_PATIENT: &str = "patient-SECRET-0815";
const SPOKEN: &str = "Zyrtec ten milligrams nightly for hay fever.";

/// The spans of one trace.
fn in_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// The request span that answered `request_id`.
fn request_span<'a>(spans: &'a [ReceivedSpan], request_id: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.attributes.get("request_id").map(String::as_str) == Some(request_id))
}

/// A server on a new SQLite database exporting its traces to `receiver`
/// over gRPC every 100 ms, with `env` besides; the database's directory.
async fn traced_server(
    receiver: &Receiver,
    env: &[(&str, &str)],
) -> (ServerProcess, tempfile::TempDir) {
    let endpoint = receiver.start_grpc().await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    vars.extend_from_slice(env);
    let server = ServerProcess::start_url(&crate::common::sqlite_url(&dir), &vars);
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_and_job_is_traced_with_its_spans_and_no_patient_data() {
    let receiver = Receiver::default();
    let whisper = FakeEngine::start(vec![], Behaviour::Transcribe(SPOKEN)).await;
    let (server, _dir) = traced_server(
        &receiver,
        &[
            ("OTEL_SERVICE_NAME", "clinscribe-under-test"),
            ("PWA_TRANSCRIBE_ENGINE", "whisper-service"),
            ("WHISPER_URL", &whisper.url),
        ],
    )
    .await;
    let http = client();

    // Three creates and a refused one, none with a trace context.
    let mut answered = Vec::new();
    for n in 0..4 {
        let body = if n < 3 {
            json!({"patient_id": format!("{SECRET_PATIENT}-{n}"), "duration_seconds": 30})
        } else {
            json!({"patient_id": SECRET_PATIENT})
        };
        let r = http
            .post(server.url("/api/v1/recordings"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let status = r.status().as_u16();
        let recording: Value = r.json().await.unwrap();
        answered.push((
            request_id,
            status,
            recording["id"].as_str().map(str::to_owned),
        ));
    }
    assert_eq!(
        answered.iter().map(|a| a.1).collect::<Vec<_>>(),
        [201, 201, 201, 422]
    );
    receiver
        .wait_for("the four requests' spans", |spans| {
            answered.iter().all(|(id, status, _)| {
                request_span(spans, id).is_some_and(|s| {
                    s.attributes.get("http.response.status_code") == Some(&status.to_string())
                })
            }) && answered[..3].iter().all(|(id, _, _)| {
                let request = request_span(spans, id).unwrap();
                in_trace(spans, &request.trace_id)
                    .iter()
                    .any(|s| s.name == "recordings.insert_audited")
            })
        })
        .await;
    let spans = receiver.spans();
    let mut traces = BTreeSet::new();
    for (request_id, status, _) in &answered {
        let request = request_span(&spans, request_id).unwrap();
        assert_eq!(request.name, "POST /api/v1/recordings");
        assert_eq!(request.service, "clinscribe-under-test");
        assert_eq!(
            request.parent_span_id, "",
            "a request without context starts a trace"
        );
        assert_eq!(request.attributes["http.request.method"], "POST");
        assert_eq!(request.attributes["http.route"], "/api/v1/recordings");
        traces.insert(request.trace_id.clone());
        let store: Vec<_> = in_trace(&spans, &request.trace_id)
            .into_iter()
            .filter(|s| s.name.starts_with("recordings."))
            .collect();
        if *status == 201 {
            assert_eq!(store.len(), 1, "{store:#?}");
            assert_eq!(store[0].name, "recordings.insert_audited");
            assert_eq!(store[0].parent_span_id, request.span_id);
        } else {
            assert!(
                store.is_empty(),
                "a refused create reaches no store: {store:#?}"
            );
        }
    }
    assert_eq!(traces.len(), 4, "one trace per request");

    // A dictation uploaded in chunks, as the web app does, in a trace it started.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parents = ["00f067aa0ba902b7", "1a2b3c4d5e6f7081"];
    let key = uuid::Uuid::new_v4().to_string();
    let audio = webm(30_000, 7);
    let started = http
        .post(server.url("/api/v1/uploads"))
        .header("traceparent", format!("00-{trace_id}-{}-01", parents[0]))
        .json(&json!({
            "local_storage_key": key,
            "patient_id": SECRET_PATIENT,
            "duration_seconds": 12,
            "total_bytes": audio.len(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let stored = http
        .put(server.url(&format!("/api/v1/uploads/{key}")))
        .header("traceparent", format!("00-{trace_id}-{}-01", parents[1]))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("bytes 0-{}/{}", audio.len() - 1, audio.len()),
        )
        .body(audio.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
    let recording: Value = stored.json().await.unwrap();
    let recording_id = recording["id"].as_str().unwrap().to_owned();
    server
        .wait_for_status(&recording_id, "completed", Duration::from_secs(30))
        .await;
    receiver
        .wait_for("the transcription job's spans", |spans| {
            in_trace(spans, trace_id)
                .iter()
                .any(|s| s.name == "jobs.complete")
        })
        .await;
    let spans = receiver.spans();
    let trace = in_trace(&spans, trace_id);
    let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "POST /api/v1/uploads",
        "PUT /api/v1/uploads/{local_storage_key}",
        "upload_sessions.start",
        "audio.append",
        "recordings.insert_durable",
        "job transcribe",
        "audio.local_file",
        "transcription",
        "verification",
        "jobs.complete",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    // The client's spans are the requests' parents.
    for (name, parent) in [
        ("POST /api/v1/uploads", parents[0]),
        ("PUT /api/v1/uploads/{local_storage_key}", parents[1]),
    ] {
        let request = trace.iter().find(|s| s.name == name).unwrap();
        assert_eq!(request.parent_span_id, parent, "{name}");
    }
    // The job continues the request that queued it: its parent is the store
    // call that wrote the job, inside the PUT.
    let job = trace.iter().find(|s| s.name == "job transcribe").unwrap();
    let queued_by = trace
        .iter()
        .find(|s| s.span_id == job.parent_span_id)
        .unwrap();
    assert_eq!(queued_by.name, "recordings.insert_durable");
    assert_eq!(job.attributes["job.kind"], "transcribe");
    assert_eq!(job.attributes["job.attempt"], "1");
    assert_eq!(job.attributes["job.outcome"], "completed");
    for child in ["transcription", "verification", "jobs.complete"] {
        let span = trace.iter().find(|s| s.name == child).unwrap();
        assert_eq!(span.parent_span_id, job.span_id, "{child}");
    }

    // Nothing in any span names a patient, a recording or what was said, and
    // no span starts a trace but a request or a job (an idle worker's polls
    // and the background sweeps are not traced).
    let mut ids: Vec<String> = answered.iter().filter_map(|a| a.2.clone()).collect();
    ids.push(recording_id);
    for span in &spans {
        let everything = format!("{} {:?}", span.name, span.attributes);
        assert!(!everything.contains("SECRET"), "{span:#?}");
        assert!(!everything.contains("Zyrtec"), "{span:#?}");
        assert!(!everything.contains("milligrams"), "{span:#?}");
        for id in &ids {
            assert!(!everything.contains(id.as_str()), "{span:#?}");
        }
        if span.parent_span_id.is_empty() {
            assert!(
                span.name.starts_with("job ")
                    || ["GET ", "POST ", "PUT ", "PATCH ", "DELETE ", "HEAD "]
                        .iter()
                        .any(|m| span.name.starts_with(m)),
                "a root span that is neither a request nor a job: {span:#?}"
            );
        }
    }
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_over_http_protobuf_when_the_protocol_says_so() {
    let receiver = Receiver::default();
    let endpoint = receiver.start_http().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(
        &crate::common::sqlite_url(&dir),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            // Exported when the server stops, not on a timer.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let r = client()
        .get(server.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(receiver.spans().is_empty());
    // Stopping exports what is buffered.
    assert_eq!(server.terminate(), Some(0));
    receiver
        .wait_for("the health request's span", |spans| {
            request_span(spans, &request_id).is_some()
        })
        .await;
    let spans = receiver.spans();
    let span = request_span(&spans, &request_id).unwrap();
    assert_eq!(span.name, "GET /api/v1/health");
    assert_eq!(span.service, "clinscribe");
    assert_eq!(span.attributes["http.response.status_code"], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_marks_its_request_span_an_error_and_a_success_does_not() {
    let receiver = Receiver::default();
    // An extraction server that is not there: a check answers 503.
    let (server, _dir) = traced_server(
        &receiver,
        &[
            ("PWA_EXTRACT_ENGINE", "openai"),
            ("PWA_EXTRACT_BASE_URL", "http://127.0.0.1:1"),
            ("PWA_EXTRACT_MODEL", "absent"),
        ],
    )
    .await;
    let http = client();
    let mut answered = Vec::new();
    for request in [
        http.post(server.url("/api/v1/verify"))
            .json(&json!({"text": "aspirin 75 mg daily"})),
        http.get(server.url("/api/v1/health")),
    ] {
        let r = request.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        answered.push((r.status().as_u16(), id));
    }
    assert_eq!(answered[0].0, 503);
    assert_eq!(answered[1].0, 200);
    receiver
        .wait_for("both requests' spans", |spans| {
            answered
                .iter()
                .all(|(_, id)| request_span(spans, id).is_some())
        })
        .await;
    let spans = receiver.spans();
    let failed = request_span(&spans, &answered[0].1).unwrap();
    assert_eq!(failed.attributes["http.response.status_code"], "503");
    assert!(failed.error, "{failed:#?}");
    let healthy = request_span(&spans, &answered[1].1).unwrap();
    assert_eq!(healthy.attributes["http.response.status_code"], "200");
    assert!(!healthy.error, "{healthy:#?}");
    assert_eq!(server.terminate(), Some(0));
}

/// `serve` with these variables: its exit code and what it said.
fn serve_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::common::binary())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("PWA_DATABASE_URL", crate::common::sqlite_url(&dir))
        .env("PWA_AUTH", "off")
        .env("PWA_TRANSCRIBE_ENGINE", "none")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn a_protocol_clinscribe_cannot_speak_or_a_broken_endpoint_stops_it_at_start() {
    let (code, stderr) = serve_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/json"),
        "{stderr}"
    );
    let (code, stderr) = serve_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && stderr.contains("invalid endpoint"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_sampled_makes_no_span_and_a_callers_decision_is_honoured() {
    let receiver = Receiver::default();
    let (server, _dir) = traced_server(
        &receiver,
        &[
            // No new trace is kept; a caller's sampled flag decides.
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    )
    .await;
    let http = client();
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let unsampled = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-00";
    let mut request_ids = Vec::new();
    for traceparent in [None, Some(unsampled), Some(sampled)] {
        let mut request = http
            .post(server.url("/api/v1/recordings"))
            .json(&json!({"patient_id": "p-sampling", "duration_seconds": 5}));
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 201);
        request_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    // Stopping flushes: everything made has arrived once it has stopped.
    assert_eq!(server.terminate(), Some(0));
    receiver
        .wait_for("the sampled request's spans", |spans| {
            request_span(spans, &request_ids[2]).is_some()
        })
        .await;
    let spans = receiver.spans();
    let kept = request_span(&spans, &request_ids[2]).unwrap();
    assert_eq!(kept.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(kept.parent_span_id, "b7ad6b7169203331");
    assert!(request_span(&spans, &request_ids[0]).is_none());
    assert!(request_span(&spans, &request_ids[1]).is_none());
    // Only the kept request's trace arrived: its request and store spans.
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["POST /api/v1/recordings", "recordings.insert_audited"]),
        "{spans:#?}"
    );
    assert!(
        spans.iter().all(|s| s.trace_id == kept.trace_id),
        "{spans:#?}"
    );
}
