//! A small, faithful stand-in for the two remote transcription APIs the
//! server talks to (external systems, not ours): OpenAI's
//! `POST /v1/audio/transcriptions` (multipart `file`, `model`,
//! `response_format=verbose_json`) and the original's Whisper container
//! (`POST /transcribe`, multipart `audio`). It answers from a script of
//! behaviours, one per request, and records every request it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with a transcript of `text`.
    Transcribe(&'static str),
    /// This status, with `Retry-After` when given.
    Status(u16, Option<u64>),
    /// 200 with a body that is not JSON.
    Malformed,
    /// Waits this long, then transcribes `text`.
    Slow(Duration, &'static str),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    /// Text fields.
    pub fields: Vec<(String, String)>,
    /// The audio part: its field name, file name, and SHA-256.
    pub audio: Option<(String, String, String)>,
}

#[derive(Default)]
struct Script {
    next: VecDeque<Behaviour>,
    otherwise: Option<Behaviour>,
    received: Vec<Received>,
}

/// A fake engine serving on a random loopback port until dropped.
pub struct FakeEngine {
    pub url: String,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The segments of a transcript: two, with these mean log-probabilities.
pub const AVG_LOGPROBS: [f64; 2] = [-0.1, -0.4];

impl FakeEngine {
    /// Starts the fake; it behaves as `script` says, then as `otherwise`.
    pub async fn start(script: Vec<Behaviour>, otherwise: Behaviour) -> Self {
        let script = Arc::new(Mutex::new(Script {
            next: script.into(),
            otherwise: Some(otherwise),
            received: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(answer))
            .route("/transcribe", post(answer))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            script,
            server,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// From now on, answer every request with `behaviour`.
    pub fn set(&self, behaviour: Behaviour) {
        let mut script = self.script.lock().unwrap();
        script.next.clear();
        script.otherwise = Some(behaviour);
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    mut form: Multipart,
) -> Response {
    let mut received = Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        fields: Vec::new(),
        audio: None,
    };
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(file_name) => {
                let bytes = field.bytes().await.unwrap_or_default();
                let sha = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                received.audio = Some((name, file_name, sha));
            }
            None => {
                let text = field.text().await.unwrap_or_default();
                received.fields.push((name, text));
            }
        }
    }
    let openai = received.path.starts_with("/v1/");
    let behaviour = {
        let mut script = script.lock().unwrap();
        script.received.push(received);
        let next = script.next.pop_front();
        next.or_else(|| script.otherwise.clone())
            .unwrap_or(Behaviour::Status(500, None))
    };
    let text = match behaviour {
        Behaviour::Transcribe(text) => text,
        Behaviour::Slow(delay, text) => {
            tokio::time::sleep(delay).await;
            text
        }
        Behaviour::Malformed => return (StatusCode::OK, "<html>not json").into_response(),
        Behaviour::Status(status, retry_after) => {
            let mut response =
                (StatusCode::from_u16(status).unwrap(), "failing on purpose").into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
            }
            return response;
        }
    };
    let half = text.len() / 2;
    let cut = text[..half].rfind(' ').unwrap_or(half);
    let segments = json!([
        {"id": 0, "start": 0.0, "end": 1.5, "text": format!(" {}", &text[..cut]), "avg_logprob": AVG_LOGPROBS[0], "no_speech_prob": 0.01},
        {"id": 1, "start": 1.5, "end": 3.0, "text": text[cut..].to_owned(), "avg_logprob": AVG_LOGPROBS[1], "no_speech_prob": 0.02},
    ]);
    let body: Value = if openai {
        // OpenAI's verbose_json: no model field; the language by name.
        json!({"task": "transcribe", "language": "english", "duration": 3.0, "text": format!(" {text}"), "segments": segments})
    } else {
        // The original's container: openai-whisper's result plus the model.
        json!({"text": format!(" {text}"), "language": "en", "segments": segments, "model": "base"})
    };
    axum::Json(body).into_response()
}
