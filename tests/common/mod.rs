//! Test harness: the app over a real SQLite file in a temp dir, driven through
//! the router in-process ([`TestApp`]), or the real binary as a child process
//! ([`ServerProcess`]) where restarts and crashes matter.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use clinscribe::AppState;
use clinscribe::config::DatabaseSettings;
use clinscribe::db::SqliteDatabase;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The app on a fresh database file, driven in-process.
pub struct TestApp {
    pub state: AppState,
    pub router: axum::Router,
    pub dir: tempfile::TempDir,
}

/// A response, decoded.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = SqliteDatabase::open(&DatabaseSettings::sqlite(dir.path().join("clinical.db")))
            .await
            .expect("open database");
        let state = AppState::new(db);
        Self {
            router: clinscribe::router(state.clone()),
            state,
            dir,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("clinical.db")
    }

    /// Sends a request with an optional body and content type.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let response = self
            .router
            .clone()
            .oneshot(builder.body(body.into()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.send(Method::GET, uri, None, Body::empty()).await
    }

    pub async fn post_json(&self, uri: &str, body: &str) -> TestResponse {
        self.send(Method::POST, uri, Some("application/json"), body.to_owned())
            .await
    }

    /// Creates a recording through the API and returns its JSON.
    pub async fn create(&self, patient_id: &str, duration: i64) -> Value {
        let body = serde_json::json!({"patient_id": patient_id, "duration_seconds": duration});
        let response = self
            .post_json("/api/v1/recordings", &body.to_string())
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        response.body
    }

    pub async fn row_count(&self) -> i64 {
        self.state.recordings.count().await.expect("count")
    }
}

/// The path of the `clinscribe` binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_clinscribe")
}

/// The real binary, serving on a random loopback port.
pub struct ServerProcess {
    pub child: Child,
    pub base_url: String,
}

impl ServerProcess {
    /// Starts `clinscribe serve` on `db_path` and waits until it listens.
    pub fn start(db_path: &Path) -> Self {
        Self::start_with_env(db_path, &[])
    }

    pub fn start_with_env(db_path: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env(
                "PWA_DATABASE_URL",
                format!("sqlite://{}", db_path.display()),
            )
            .env("PWA_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn clinscribe");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read listening line");
        // Keep draining stdout so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base_url = line
            .trim()
            .strip_prefix("clinscribe listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self { child, base_url }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// GET `path` and decode the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON body")
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let code = wait_with_timeout(&mut self.child, Duration::from_secs(20));
        std::mem::forget(self);
        code
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        std::mem::forget(self);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP client for talking to a [`ServerProcess`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Opens a database file directly, as it is (no adoption, no migrations), to
/// check what a server or a command left behind.
pub async fn open_db(path: &Path) -> SqliteDatabase {
    SqliteDatabase::open_without_migrating(&DatabaseSettings::sqlite(path))
        .await
        .expect("open database")
}

/// Output of one `clinscribe` command.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `clinscribe ARGS` against the database at `db_path`, in `db_path`'s directory.
pub fn run_cli(db_path: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(binary())
        .args(args)
        .current_dir(db_path.parent().expect("db dir"))
        .env(
            "PWA_DATABASE_URL",
            format!("sqlite://{}", db_path.display()),
        )
        .env("PWA_LOG", "warn")
        .output()
        .expect("run clinscribe");
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every recording in a database file, as JSON, ordered by id.
pub async fn all_recordings(path: &Path) -> Vec<Value> {
    let db = open_db(path).await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM recordings ORDER BY id")
        .fetch_all(db.readers())
        .await
        .expect("ids");
    let store = clinscribe::recordings::RecordingStore::new(db.clone());
    let mut out = Vec::new();
    for id in ids {
        let r = store
            .get(uuid::Uuid::parse_str(&id).unwrap())
            .await
            .expect("get");
        out.push(serde_json::to_value(r).unwrap());
    }
    db.close().await;
    out
}
