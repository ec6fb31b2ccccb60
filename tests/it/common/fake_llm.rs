//! A small, faithful stand-in for an OpenAI-compatible chat completions
//! server (`POST /v1/chat/completions`, as llama.cpp's server, vLLM, Ollama
//! and OpenAI answer it), an external system the `openai` extraction engine
//! talks to. It answers from a script of behaviours, one per request, and
//! records every request body it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a completion whose message content is these facts, as JSON.
    Facts(Value),
    /// 200 with a completion whose message content is this text.
    Content(&'static str),
    /// This status, with `Retry-After` when given.
    Status(u16, Option<u64>),
    /// Waits this long, then replies.
    Slow(Duration, Box<Reply>),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Asked {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Script {
    next: VecDeque<Reply>,
    otherwise: Option<Reply>,
    asked: Vec<Asked>,
}

/// The fake, serving on a random loopback port until dropped.
pub struct FakeLlm {
    pub url: String,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeLlm {
    /// Starts the fake; it replies as `script` says, then as `otherwise`.
    pub async fn start(script: Vec<Reply>, otherwise: Reply) -> Self {
        let script = Arc::new(Mutex::new(Script {
            next: script.into(),
            otherwise: Some(otherwise),
            asked: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
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
    pub fn asked(&self) -> Vec<Asked> {
        self.script.lock().unwrap().asked.clone()
    }
}

/// An OpenAI chat completion carrying `content`.
fn completion(content: String) -> Response {
    axum::Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    }))
    .into_response()
}

async fn complete(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let asked = Asked {
        path: uri.path().to_owned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let mut reply = {
        let mut script = script.lock().unwrap();
        script.asked.push(asked);
        let next = script.next.pop_front();
        next.or_else(|| script.otherwise.clone())
            .unwrap_or(Reply::Status(500, None))
    };
    loop {
        match reply {
            Reply::Slow(delay, then) => {
                tokio::time::sleep(delay).await;
                reply = *then;
            }
            Reply::Facts(facts) => return completion(facts.to_string()),
            Reply::Content(text) => return completion(text.to_owned()),
            Reply::Status(status, retry_after) => {
                let mut response = (
                    StatusCode::from_u16(status).unwrap(),
                    axum::Json(json!({"error": {"message": "failing on purpose"}})),
                )
                    .into_response();
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
                }
                return response;
            }
        }
    }
}
