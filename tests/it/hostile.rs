//! The real binary against a failing machine and hostile clients: a full disk,
//! slow, stalled and idle connections, too many connections, pages of other
//! sites, wrong host names, a dead request's idempotency claim, and a burst of
//! writes that would grow the WAL.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::small_fs::{SmallFs, fill};
use crate::common::{ServerProcess, client, multipart, webm};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(server: &ServerProcess) -> TcpStream {
    TcpStream::connect(server.addr().to_owned())
        .await
        .expect("connect")
}

/// Starts a multipart upload of `fields` by hand and sends its first `sent`
/// bytes of body; the connection and the whole body, to go on (or not).
async fn start_upload(
    server: &ServerProcess,
    fields: &[(&str, Option<&str>, &[u8])],
    sent: usize,
) -> (TcpStream, Vec<u8>) {
    let (content_type, body) = multipart(fields);
    let mut stream = connect(server).await;
    let head = format!(
        "POST /api/v1/recordings/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        server.addr().to_owned(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    (stream, body)
}

/// Reads until the server closes the connection; what it sent, and when it
/// closed. Panics if it stays open longer than `at_most` from now.
async fn until_closed(stream: &mut TcpStream, at_most: Duration) -> (Vec<u8>, Instant) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let remaining = at_most
            .checked_sub(started.elapsed())
            .unwrap_or_else(|| panic!("connection still open after {at_most:?}"));
        match tokio::time::timeout(remaining, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {at_most:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Instant::now()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn create(base_url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(format!("{base_url}/api/v1/recordings"))
        .json(&json!({"patient_id": "patient-001", "duration_seconds": 60}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

async fn health(server: &ServerProcess) -> Value {
    server.get_json("/api/v1/health").await
}

async fn recording_count(server: &ServerProcess) -> usize {
    let list: Vec<Value> = server.get_json("/api/v1/recordings?limit=1000").await;
    list.len()
}

// ---------------------------------------------------------------- slow and idle clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_stalled_bodies_and_idle_connections_are_closed_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("audio");
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[
            ("PWA_HEADER_TIMEOUT", "1s"),
            ("PWA_BODY_TIMEOUT", "1s"),
            ("PWA_IDLE_TIMEOUT", "2s"),
            ("PWA_AUDIO_DIR", audio.to_str().unwrap()),
        ],
    );
    let host = server.addr().to_owned();

    // Half a request line.
    let opened = Instant::now();
    let mut half_line = connect(&server).await;
    half_line.write_all(b"GET /api/v1/hea").await.unwrap();
    // Unfinished headers.
    let mut half_headers = connect(&server).await;
    half_headers
        .write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    // An upload whose body stalls after its first bytes of audio, and one whose
    // client half-closes the connection after sending part of it.
    let dictation = webm(200_000, 1);
    let fields: &[(&str, Option<&str>, &[u8])] = &[
        ("patient_id", None, b"patient-001"),
        ("duration_seconds", None, b"60"),
        ("audio", Some("a.webm"), &dictation),
    ];
    let (mut stalled, _) = start_upload(&server, fields, 100_000).await;
    let (mut half_closed, _) = start_upload(&server, fields, 150_000).await;
    half_closed.shutdown().await.unwrap();
    // A kept-alive connection, idle after one request.
    let mut idle = connect(&server).await;
    idle.write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let idle_since = Instant::now();

    // Meanwhile, other clients are served.
    assert_eq!(create(&server.base_url, &[]).await.status(), 201);
    assert_eq!(health(&server).await["status"], "healthy");

    for stream in [&mut half_line, &mut half_headers] {
        let (_, closed) = until_closed(stream, Duration::from_secs(5)).await;
        let after = closed - opened;
        assert!(
            after >= Duration::from_millis(900),
            "closed only after the header timeout: {after:?}"
        );
    }
    let (answer, _) = until_closed(&mut stalled, Duration::from_secs(6)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a stalled upload fails: {answer}"
    );
    assert!(answer.contains("interrupted"), "{answer}");
    until_closed(&mut half_closed, Duration::from_secs(5)).await;
    // The idle connection goes after PWA_IDLE_TIMEOUT, not before.
    let (_, closed) = until_closed(&mut idle, Duration::from_secs(6)).await;
    let after = closed - idle_since;
    assert!(
        after >= Duration::from_millis(1900),
        "idle for its timeout first: {after:?}"
    );
    // The dead upload left no temporary file behind.
    assert_eq!(
        common::files_under(&audio.join("tmp")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(recording_count(&server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_slowloris_connections_are_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[("PWA_HEADER_TIMEOUT", "1s")],
    );
    let host = server.addr().to_owned();
    let request = format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\nX-A: b\r\n");
    let mut loris = Vec::new();
    for _ in 0..20 {
        let stream = connect(&server).await;
        let request = request.clone();
        // One byte every 200 ms: the headers never end, traffic never stops.
        loris.push(tokio::spawn(async move {
            let mut stream = stream;
            let started = Instant::now();
            for byte in request.bytes().cycle() {
                if stream.write_all(&[byte]).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            started.elapsed()
        }));
    }
    for handle in loris {
        let closed_after = handle.await.unwrap();
        assert!(
            closed_after < Duration::from_secs(6),
            "closed after {closed_after:?}"
        );
    }
    assert_eq!(health(&server).await["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_answers_503_logs_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = ServerProcess::start_logging(
        &format!("sqlite://{}", dir.path().join("clinical.db").display()),
        &[("PWA_MAX_CONNECTIONS", "4")],
        Some(&log),
    );
    let host = server.addr().to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&server).await);
    }
    // Let the server accept the four before the next ones arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let mut over = connect(&server).await;
        let _ = over
            .write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        let (answer, _) = until_closed(&mut over, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(answer.contains("too many open connections"), "{answer}");
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = client()
            .get(server.url("/api/v1/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "served again once connections closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("connection limit reached").count(),
        1,
        "one line per episode:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_closes_stalled_connections_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[
            ("PWA_SHUTDOWN_TIMEOUT", "3s"),
            ("PWA_HEADER_TIMEOUT", "60s"),
            ("PWA_BODY_TIMEOUT", "60s"),
        ],
    );
    let host = server.addr().to_owned();
    // Stalled in its headers, forever.
    let mut stalled = connect(&server).await;
    stalled
        .write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
        .await
        .unwrap();
    // An upload in flight, sent slowly: it must finish after the signal.
    let audio = webm(50_000, 2);
    let (mut upload, body) = start_upload(
        &server,
        &[
            ("patient_id", None, b"patient-001"),
            ("duration_seconds", None, b"60"),
            (
                "local_storage_key",
                None,
                b"0b7e3f6e-2a4c-4f7e-9d1a-5c2b8e4f6a10",
            ),
            ("audio", Some("a.webm"), &audio),
        ],
        20_000,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = server.pid().to_string();
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    upload.write_all(&body[20_000..]).await.unwrap();
    let mut answer = vec![0u8; 12];
    upload.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201", "the upload in flight completes");
    until_closed(&mut stalled, Duration::from_secs(10)).await;
    let code = server.terminate_after_signal();
    let took = signalled.elapsed();
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(8),
        "exited within the bound: {took:?}"
    );
    assert!(
        took >= Duration::from_millis(2500),
        "waited for the bound first: {took:?}"
    );
}

// ---------------------------------------------------------------- other sites

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_other_sites_and_requests_for_other_hosts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("audio");
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[
            ("PWA_AUDIO_DIR", audio.to_str().unwrap()),
            ("PWA_ALLOWED_ORIGINS", "https://portal.clinic.example"),
        ],
    );
    let own_origin = server.base_url.clone();
    // Accepted: no browser headers (curl, scripts), the server's own origin,
    // a listed origin, a same-origin fetch.
    for headers in [
        vec![],
        vec![("origin", own_origin.as_str())],
        vec![("origin", "https://portal.clinic.example")],
        vec![("sec-fetch-site", "same-origin")],
    ] {
        assert_eq!(
            create(&server.base_url, &headers).await.status(),
            201,
            "{headers:?}"
        );
    }
    // Refused: another site's page.
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let response = create(&server.base_url, &headers).await;
        assert_eq!(response.status(), 403, "{headers:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("PWA_ALLOWED_ORIGINS"),
            "{body}"
        );
    }
    // A multipart upload from another site's form.
    let (content_type, body) = multipart(&[
        ("patient_id", None, b"patient-001"),
        ("duration_seconds", None, b"60"),
        ("audio", Some("a.webm"), &webm(10_000, 3)),
    ]);
    let response = client()
        .post(server.url("/api/v1/recordings/upload"))
        .header("content-type", content_type)
        .header("origin", "http://evil.example")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        common::files_under(&audio),
        Vec::<PathBuf>::new(),
        "nothing stored"
    );
    // Reads from another site's page are not state-changing.
    let read = client()
        .get(server.url("/api/v1/recordings"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(recording_count(&server).await, 4);

    // DNS rebinding: a host name that is not this server's.
    let port = server
        .addr()
        .to_owned()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    for host in [
        format!("rebind.attacker.example:{port}"),
        "localhost:1".to_owned(),
    ] {
        let response = client()
            .get(server.url("/api/v1/recordings"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 421, "{host}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("PWA_ALLOWED_HOSTS"),
            "{body}"
        );
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let response = client()
            .get(server.url("/api/v1/health"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_public_name_is_allowed_by_setting() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &[("PWA_ALLOWED_HOSTS", "dictation.clinic.example")],
    );
    let response = client()
        .post(server.url("/api/v1/recordings"))
        .header("host", "dictation.clinic.example")
        .header("origin", "https://dictation.clinic.example")
        .json(&json!({"patient_id": "patient-001", "duration_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

// ---------------------------------------------------------------- a dead request's claim

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_claim_left_by_a_crash_is_taken_over_at_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = ServerProcess::start(&db_path);
    assert_eq!(server.terminate(), Some(0));
    // What a request that died mid-way leaves: a claim without a response.
    let body = json!({"patient_id": "patient-001", "duration_seconds": 60});
    let db = common::open_db(&db_path).await;
    sqlx::query(
        "INSERT INTO idempotency_keys (clinician_id, key, request_sha256, created_at) \
         VALUES ('current-clinician', 'retry-after-crash', ?1, ?2)",
    )
    .bind(clinscribe::idempotency::fingerprint(&body))
    .bind(clinscribe::timestamp::Timestamp::now().to_string())
    .execute(db.writer())
    .await
    .unwrap();
    db.close().await;

    let server = ServerProcess::start(&db_path);
    let response = create(
        &server.base_url,
        &[("idempotency-key", "retry-after-crash")],
    )
    .await;
    assert_eq!(response.status(), 201, "not 409 for a minute");
    let first: Value = response.json().await.unwrap();
    let replay = create(
        &server.base_url,
        &[("idempotency-key", "retry-after-crash")],
    )
    .await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    assert_eq!(recording_count(&server).await, 1);
}

// ---------------------------------------------------------------- the WAL under a burst

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_a_burst_of_creates() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = ServerProcess::start(&db_path);
    let wal = dir.path().join("clinical.db-wal");
    let stop = Instant::now() + Duration::from_secs(8);
    let mut writers = Vec::new();
    for w in 0..32 {
        let base = server.base_url.clone();
        writers.push(tokio::spawn(async move {
            let http = client();
            let mut created = 0u64;
            while Instant::now() < stop {
                let response = http
                    .post(format!("{base}/api/v1/recordings"))
                    .json(&json!({"patient_id": format!("patient-{w}"), "duration_seconds": 60}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                created += 1;
            }
            created
        }));
    }
    // Readers hold snapshots too, which is what keeps a WAL from rewinding.
    let reader_base = server.base_url.clone();
    let reader = tokio::spawn(async move {
        let http = client();
        while Instant::now() < stop {
            let _ = http
                .get(format!("{reader_base}/api/v1/recordings?limit=100"))
                .send()
                .await;
        }
    });
    let mut largest = 0u64;
    while Instant::now() < stop {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut created = 0;
    for w in writers {
        created += w.await.unwrap();
    }
    reader.await.unwrap();
    let limit = clinscribe::db::sqlite::WAL_LIMIT_BYTES as u64;
    eprintln!("{created} creates in 8 s; largest WAL {largest} bytes");
    assert!(
        largest <= limit + limit / 2,
        "WAL grew to {largest} bytes (limit {limit})"
    );
}

// ---------------------------------------------------------------- a full disk

/// Counts the full-disk episodes a test went through, as the server logs them:
/// one begins with a refusal and ends with the next write that succeeds.
struct Episodes {
    count: usize,
    refused_last: bool,
}

impl Episodes {
    /// After the first refusal.
    fn new() -> Self {
        Self {
            count: 1,
            refused_last: true,
        }
    }

    /// Whether a write that answered `status` was refused for a full disk
    /// (507); anything but that or a success (201) fails the test.
    fn refused(&mut self, status: u16) -> bool {
        match status {
            507 => {
                self.refused_last = true;
                true
            }
            201 => {
                if self.refused_last {
                    self.count += 1;
                }
                self.refused_last = false;
                false
            }
            other => panic!("a write on a full disk answered {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_then_recovers_without_a_restart() {
    let Some(fs) = SmallFs::mount("12m", None) else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let audio = fs.path().join("audio");
    let server = ServerProcess::start_logging(
        &format!("sqlite://{}", fs.path().join("clinical.db").display()),
        &[("PWA_AUDIO_DIR", audio.to_str().unwrap())],
        Some(&log),
    );
    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        let response = create(&server.base_url, &[]).await;
        assert_eq!(response.status(), 201);
        acknowledged.push(response.json::<Value>().await.unwrap());
    }

    let filler = fs.path().join("filler");
    fill(&filler);
    // The WAL may still have room for a few commits; then writes are refused.
    let mut refused = None;
    for _ in 0..5000 {
        let response = create(&server.base_url, &[]).await;
        match response.status().as_u16() {
            201 => acknowledged.push(response.json::<Value>().await.unwrap()),
            507 => {
                refused = Some(response);
                break;
            }
            other => panic!(
                "a write on a full disk answered {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    let refused = refused.expect("a write was refused");
    // A refused commit may leave WAL frames that a smaller one can reuse, and
    // a checkpoint may let the WAL start over in space it already holds: such
    // a write is acknowledged in full and ends the episode (the server says
    // so); the next refusal starts one. So each write below is tried until
    // the disk refuses it, and every write that still fit is kept.
    let mut episodes = Episodes::new();
    let mut in_a_row = 1;
    while in_a_row < 3 {
        let response = create(&server.base_url, &[]).await;
        if episodes.refused(response.status().as_u16()) {
            in_a_row += 1;
        } else {
            acknowledged.push(response.json::<Value>().await.unwrap());
            in_a_row = 0;
        }
    }
    assert_eq!(refused.headers()["retry-after"], "30");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("storage is full"),
        "{body}"
    );

    // Every kind of write is refused the same way, and leaves nothing behind.
    let mut refused_key = String::new();
    for attempt in 0.. {
        refused_key = format!("while-full-{attempt}");
        let keyed = create(&server.base_url, &[("idempotency-key", &refused_key)]).await;
        if episodes.refused(keyed.status().as_u16()) {
            break;
        }
        acknowledged.push(keyed.json::<Value>().await.unwrap());
    }
    for attempt in 0u32.. {
        let chunked = client()
            .post(server.url("/api/v1/uploads"))
            .json(&json!({"local_storage_key": format!("9b2f4d6e-1a3c-4e5f-8a7b-6c5d4e3f{attempt:04x}"),
                          "patient_id": "patient-001", "duration_seconds": 60, "total_bytes": 300000}))
            .send()
            .await
            .unwrap();
        if episodes.refused(chunked.status().as_u16()) {
            break;
        }
    }
    let mut refused_upload = String::new();
    let mut uploaded = Vec::new();
    for attempt in 0u32.. {
        refused_upload = format!("5f0c8a52-7d3e-4a55-b5c1-8d9e2f3a{attempt:04x}");
        let (status, body) = server
            .upload("patient-001", &webm(300_000, 4), &refused_upload)
            .await;
        if episodes.refused(status) {
            break;
        }
        uploaded.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        common::files_under(&audio.join("tmp")),
        Vec::<PathBuf>::new()
    );
    let health_now = health(&server).await;
    assert_eq!(health_now["status"], "degraded", "{health_now}");
    assert!(
        health_now["components"]["database"]
            .as_str()
            .unwrap()
            .starts_with("degraded"),
        "{health_now}"
    );

    // Space comes back: writes succeed again by themselves, within seconds.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = create(&server.base_url, &[]).await;
        if response.status() == 201 {
            acknowledged.push(response.json::<Value>().await.unwrap());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes still refused after space came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keyed = create(&server.base_url, &[("idempotency-key", &refused_key)]).await;
    assert_eq!(keyed.status(), 201, "the key of a refused request is free");
    acknowledged.push(keyed.json::<Value>().await.unwrap());
    let (status, _) = server
        .upload("patient-001", &webm(300_000, 4), &refused_upload)
        .await;
    assert_eq!(status, 201, "the dictation of a refused upload is taken");
    // Writes work again; the small volume is still short of space, which
    // health says (below 1 GiB free) without refusing anything.
    let after = health(&server).await;
    assert_eq!(after["components"]["database"], "ok", "{after}");
    assert_eq!(after["status"], "degraded", "{after}");
    let disk = after["components"]["disk"].as_str().unwrap();
    assert!(
        disk.starts_with("degraded: ") && disk.contains(" MiB free in "),
        "{disk}"
    );
    assert!(
        after["detail"].as_str().unwrap().starts_with("disk: "),
        "{after}"
    );

    // Every acknowledged row is intact.
    for before in &acknowledged {
        let id = before["id"].as_str().unwrap();
        let after: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
        assert_eq!(&after, before);
    }
    for id in &uploaded {
        let after: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
        assert_eq!(after["audio_file_size"], 300_000, "{after}");
    }
    assert_eq!(
        recording_count(&server).await,
        acknowledged.len() + uploaded.len() + 1
    );
    assert_eq!(server.terminate(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("storage full").count(),
        episodes.count,
        "logged once per episode:\n{log}"
    );
    assert_eq!(
        log.matches("storage writable again").count(),
        episodes.count,
        "{log}"
    );
    assert!(
        !log.contains("Internal Server Error") && !log.contains("internal error"),
        "{log}"
    );
}

/// A read whose audit event cannot be spooled (the disk is full) is refused
/// with 507 and reveals nothing; once space returns, reads are answered
/// again, and every read answered is in the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_full_disk_cannot_record_is_refused_with_507_and_reveals_nothing() {
    let Some(fs) = SmallFs::mount("12m", None) else {
        return;
    };
    let db_path = fs.path().join("clinical.db");
    let server = ServerProcess::start_logging(
        &format!("sqlite://{}", db_path.display()),
        &[("PWA_AUDIO_DIR", fs.path().join("audio").to_str().unwrap())],
        None,
    );
    let created = create(&server.base_url, &[]).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.url(&format!("/api/v1/recordings/{id}"));
    let read = || async { client().get(&url).send().await.expect("request") };
    assert_eq!(read().await.status(), 200);
    let mut answered = 1;

    let filler = fs.path().join("filler");
    fill(&filler);
    // The spool's last page may hold a few more events; then reads are refused.
    let refused = loop {
        let response = read().await;
        match response.status().as_u16() {
            200 => answered += 1,
            507 => break response,
            other => panic!("a read on a full disk answered {other}"),
        }
        assert!(answered < 1_000, "reads were never refused");
    };
    assert_eq!(refused.headers()["retry-after"], "30");
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("storage is full") && !text.contains("patient-001"),
        "{text}"
    );

    std::fs::remove_file(&filler).unwrap();
    let response = read().await;
    assert_eq!(response.status(), 200);
    answered += 1;
    assert_eq!(server.terminate(), Some(0));
    let events = common::read_events_of(&db_path, &id).await;
    assert_eq!(
        events, answered,
        "one event per read answered, none for the refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_disk_full_refuses_writes_with_507_then_recovers() {
    use sqlx::Connection as _;
    let Some(admin) =
        common::postgres_or_skip("postgres_disk_full_refuses_writes_with_507_then_recovers")
    else {
        return;
    };
    let Some(space) = SmallFs::mount("16m", Some("postgres")) else {
        return;
    };
    let tablespace = format!("clinscribe_full_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLESPACE {tablespace} LOCATION '{}'",
        space.path().display()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let pg = common::PgTestDb::create_with(&admin, &format!(" TABLESPACE {tablespace}")).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let server = ServerProcess::start_logging(&pg.url, &[], Some(&log));
    let mut acknowledged = 0usize;
    for _ in 0..10 {
        assert_eq!(create(&server.base_url, &[]).await.status(), 201);
        acknowledged += 1;
    }
    let filler = space.path().join("filler");
    fill(&filler);
    let mut refused = false;
    for _ in 0..20_000 {
        let response = create(&server.base_url, &[]).await;
        match response.status().as_u16() {
            201 => acknowledged += 1,
            507 => {
                assert_eq!(response.headers()["retry-after"], "30");
                refused = true;
                break;
            }
            other => panic!(
                "a write on a full disk answered {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    assert!(refused, "a write was refused");
    assert_eq!(health(&server).await["status"], "degraded");
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = create(&server.base_url, &[]).await;
        if response.status() == 201 {
            acknowledged += 1;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes still refused after space came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(health(&server).await["status"], "healthy");
    assert_eq!(recording_count(&server).await, acknowledged);
    assert_eq!(server.terminate(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("storage full").count(),
        1,
        "logged once:\n{log}"
    );
    drop(pg);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLESPACE {tablespace}")))
        .execute(&mut conn)
        .await
        .unwrap();
}
