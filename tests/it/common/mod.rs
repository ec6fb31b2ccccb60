//! Test harness: the app over a real SQLite file in a temp dir, or over a fresh
//! PostgreSQL database ([`PgTestDb`], when `PWA_TEST_POSTGRES_URL` is set),
//! driven through the router in-process ([`TestApp`]), or the real binary as a
//! child process ([`ServerProcess`]) where restarts and crashes matter.
//!
//! [`on_both_backends!`] runs a test on each backend.

pub mod fake_engine;
pub mod fake_llm;
pub mod otlp;
mod server;
pub mod small_fs;

pub use server::{ServerProcess, binary};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use clinscribe::AppState;
use clinscribe::config::DatabaseSettings;
use clinscribe::db::{Database, SqliteDatabase};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Where PostgreSQL tests connect to create their databases.
pub const POSTGRES_URL_VAR: &str = "PWA_TEST_POSTGRES_URL";

/// Runs each listed `async fn name(app: TestApp)` as two tests, `sqlite::name`
/// and `postgres::name`; the PostgreSQL one is skipped, saying so, when
/// `PWA_TEST_POSTGRES_URL` is not set.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::TestApp::on(super::common::Backend::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if super::common::postgres_or_skip(stringify!($name)).is_some() {
                        super::$name(super::common::TestApp::on(super::common::Backend::Postgres).await).await
                    }
                }
            )*
        }
    };
}

/// A database backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// As `/api/v1/health` names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// `PWA_TEST_POSTGRES_URL`, or None after telling the test output that `test` is skipped.
pub fn postgres_or_skip(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            use std::io::Write as _;
            // Straight to stderr: libtest captures only print!/eprint!, and a
            // skip must be visible in the output.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test} on PostgreSQL: {POSTGRES_URL_VAR} is not set"
            );
            None
        }
    }
}

/// A PostgreSQL database created for one test and dropped when this is dropped.
pub struct PgTestDb {
    /// URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgTestDb {
    /// Creates `clinscribe_test_<random>` on the server of `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        Self::create_with(admin_url, "").await
    }

    /// Like [`PgTestDb::create`], with `options` after `CREATE DATABASE name`
    /// (e.g. ` TABLESPACE small`).
    pub async fn create_with(admin_url: &str, options: &str) -> Self {
        use sqlx::Connection as _;
        let name = format!("clinscribe_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connect to PWA_TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}{options}"
        )))
        .execute(&mut admin)
        .await
        .expect("create test database");
        let _ = admin.close().await;
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: a
        // thread of its own with a small runtime does the DROP.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use sqlx::Connection as _;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// `postgres://u@h:5432/db?x` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{root}/{name}{query}")
}

/// The app on a fresh database, driven in-process.
pub struct TestApp {
    pub state: AppState,
    pub router: axum::Router,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    /// The PostgreSQL database, dropped after the app (fields drop in order).
    _pg: Option<PgTestDb>,
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
    /// On SQLite.
    pub async fn new() -> Self {
        Self::on(Backend::Sqlite).await
    }

    /// On `backend` (PostgreSQL: panics unless `PWA_TEST_POSTGRES_URL` is set;
    /// see [`postgres_or_skip`]).
    pub async fn on(backend: Backend) -> Self {
        Self::with_uploads(backend, |_| {}).await
    }

    /// On `backend`, with upload settings adjusted by `adjust` (audio under `dir/audio`).
    pub async fn with_uploads(
        backend: Backend,
        adjust: impl FnOnce(&mut clinscribe::config::UploadSettings),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (settings, pg) = match backend {
            Backend::Sqlite => (
                DatabaseSettings::sqlite(dir.path().join("clinical.db")),
                None,
            ),
            Backend::Postgres => {
                let admin = std::env::var(POSTGRES_URL_VAR).expect(POSTGRES_URL_VAR);
                let pg = PgTestDb::create(&admin).await;
                (DatabaseSettings::postgres(pg.url.clone()), Some(pg))
            }
        };
        let db = Database::open(&settings).await.expect("open database");
        let mut uploads = clinscribe::config::UploadSettings::in_dir(dir.path().join("audio"));
        adjust(&mut uploads);
        let state = AppState::new(db, uploads).expect("audio directory");
        Self {
            router: clinscribe::router(state.clone()),
            state,
            dir,
            backend,
            _pg: pg,
        }
    }

    /// The same app, with single sign-on through the provider of `settings`.
    pub fn with_single_sign_on(mut self, settings: clinscribe::auth::oidc::OidcSettings) -> Self {
        self.state.auth = self
            .state
            .auth
            .clone()
            .with_single_sign_on(settings)
            .unwrap();
        self.router = clinscribe::router(self.state.clone());
        self
    }

    /// The same app, with every API request needing credentials (`PWA_AUTH=on`).
    pub fn with_auth_on(mut self) -> Self {
        self.state = self.state.with_auth(clinscribe::auth::AuthMode::On);
        self.router = clinscribe::router(self.state.clone());
        self
    }

    /// The SQLite database (panics on PostgreSQL).
    pub fn sqlite(&self) -> &SqliteDatabase {
        match &self.state.db {
            Database::Sqlite(db) => db,
            Database::Postgres(_) => panic!("this test needs SQLite"),
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
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.send_with(method, uri, &headers, body).await
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.send(Method::GET, uri, None, Body::empty()).await
    }

    pub async fn post_json(&self, uri: &str, body: &str) -> TestResponse {
        self.send(Method::POST, uri, Some("application/json"), body.to_owned())
            .await
    }

    /// Uploads a dictation of `audio` (multipart, no key) and returns its JSON.
    pub async fn upload_audio(&self, patient_id: &str, audio: &[u8]) -> Value {
        let (content_type, body) = multipart(&[
            ("patient_id", None, patient_id.as_bytes()),
            ("duration_seconds", None, b"5"),
            ("audio", Some("dictation.webm"), audio),
        ]);
        let response = self
            .send_with(
                Method::POST,
                "/api/v1/recordings/upload",
                &[("content-type", &content_type)],
                body,
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        response.body
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

    /// Sends a request with extra headers; the body decoded as JSON when it is.
    pub async fn send_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        let (status, headers, bytes) = self.request(method, uri, headers, body).await;
        TestResponse {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// PUT of one chunk of a resumable upload, with its `Content-Range`.
    pub async fn put_chunk(&self, uri: &str, range: &str, body: impl Into<Body>) -> TestResponse {
        self.send_with(Method::PUT, uri, &[("content-range", range)], body)
            .await
    }

    /// GET returning the raw body bytes.
    pub async fn get_bytes(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        self.request(Method::GET, uri, headers, Body::empty()).await
    }

    /// One request through the router: status, headers and body bytes.
    async fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
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
        (status, headers, bytes.to_vec())
    }

    /// Files under the audio directory's `sub` folder (recursively).
    pub fn audio_files(&self, sub: &str) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("audio").join(sub))
    }

    pub async fn row_count(&self) -> i64 {
        self.state.recordings.count().await.expect("count")
    }
}

impl ServerProcess {
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

    /// GET `path`; the body's bytes.
    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body")
            .to_vec()
    }

    /// Uploads a dictation (multipart); the status and the JSON answer.
    pub async fn upload(&self, patient: &str, audio: &[u8], key: &str) -> (u16, Value) {
        upload_to(&self.base_url, patient, audio, key).await
    }

    /// Polls recording `id` until its status is `want` (panics after `within`).
    pub async fn wait_for_status(&self, id: &str, want: &str, within: Duration) -> Value {
        let started = std::time::Instant::now();
        loop {
            let recording: Value = self.get_json(&format!("/api/v1/recordings/{id}")).await;
            if recording["status"] == want {
                return recording;
            }
            assert!(
                started.elapsed() < within,
                "still {} after {within:?}, not {want}: {recording}",
                recording["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The URL of a database file `clinical.db` in `dir`.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("clinical.db").display())
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

/// How many `read` events of recording `id` the chain of the database at
/// `path` holds (what a stopped server left in the audit spool is not counted).
pub async fn read_events_of(path: &Path, id: &str) -> i64 {
    let db = open_db(path).await;
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE recording_id = ?1 AND action = 'read'",
    )
    .bind(id)
    .fetch_one(db.readers())
    .await
    .expect("count read events");
    db.close().await;
    events
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
    run_cli_url(
        &format!("sqlite://{}", db_path.display()),
        db_path.parent().expect("db dir"),
        args,
    )
}

/// Runs `clinscribe ARGS` against the database at `db_path`, with `stdin` as its input.
pub fn run_cli_stdin(db_path: &Path, args: &[&str], stdin: &str) -> CliOutput {
    run_cli_with(
        &format!("sqlite://{}", db_path.display()),
        db_path.parent().expect("db dir"),
        args,
        Some(stdin),
    )
}

/// Runs `clinscribe ARGS` against `database_url`, in `dir`.
pub fn run_cli_url(database_url: &str, dir: &Path, args: &[&str]) -> CliOutput {
    run_cli_with(database_url, dir, args, None)
}

/// Runs `clinscribe ARGS` against `database_url`, in `dir`, with `stdin` as
/// its input when given.
fn run_cli_with(database_url: &str, dir: &Path, args: &[&str], stdin: Option<&str>) -> CliOutput {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env("PWA_DATABASE_URL", database_url)
        .env("PWA_LOG", "warn")
        .env("PWA_TRANSCRIBE_ENGINE", "none")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run clinscribe");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(stdin) = stdin {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait for clinscribe");
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
    let store = clinscribe::recordings::store::open(&Database::Sqlite(db.clone()));
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

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A multipart/form-data body: `(name, file name, bytes)`; file name None for text fields.
pub fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("clinscribe-test-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(file) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `n` bytes of fake WebM audio: the EBML signature, then deterministic noise.
pub fn webm(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0x1A, 0x45, 0xDF, 0xA3];
    bytes.extend((4..n).map(|_| rng.u8(..)));
    bytes.truncate(n);
    bytes
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Uploads a dictation to the server at `base_url` (multipart, 60 s); the status
/// and the JSON answer. A free function, for tasks that cannot borrow a server.
pub async fn upload_to(base_url: &str, patient: &str, audio: &[u8], key: &str) -> (u16, Value) {
    let (ct, body) = multipart(&[
        ("patient_id", None, patient.as_bytes()),
        ("duration_seconds", None, b"60"),
        ("local_storage_key", None, key.as_bytes()),
        ("audio", Some("a.webm"), audio),
    ]);
    let response = client()
        .post(format!("{base_url}/api/v1/recordings/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// Runs one statement on the app's database, as someone with a SQL shell
/// would (bypassing the stores): the statement's rows affected, or the error.
pub async fn execute(app: &TestApp, sql: &str) -> Result<u64, String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match &app.state.db {
        Database::Sqlite(db) => sqlx::query(sql)
            .execute(db.writer())
            .await
            .map(|r| r.rows_affected()),
        Database::Postgres(db) => sqlx::query(sql)
            .execute(db.pool())
            .await
            .map(|r| r.rows_affected()),
    }
    .map_err(|e| e.to_string())
}
