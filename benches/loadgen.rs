//! The load benchmark: one command that measures clinscribe end to end.
//!
//! `cargo bench --bench loadgen` (see `--help`). For each database size it:
//! 1. seeds a fresh temp database with `clinscribe seed --count N` (rows/s);
//! 2. measures the storage limit through the same library without HTTP: raw
//!    one-insert-per-transaction and point-read rates;
//! 3. times backups (and, on the largest size, the worst stall a concurrent
//!    writer sees during one);
//! 4. starts the release server (startup time), and drives each workload over
//!    HTTP/1.1 keep-alive at each concurrency, fixed warm-up and duration, N runs:
//!    throughput, p50/p99/p99.9, errors, server CPU and peak RSS, and this
//!    process's own CPU (client and server share the machine);
//! 5. repeats `create` with `synchronous=full`;
//! 6. (`backends`, largest size) copies the data into PostgreSQL with
//!    `clinscribe migrate-data` and runs get/create/list/mixed against SQLite,
//!    one PostgreSQL instance and two PostgreSQL instances, in the same run.
//!    PostgreSQL: `PWA_BENCH_POSTGRES_URL` (default: the project machines'
//!    `postgres://postgres@127.0.0.1:5432/test`); a database is created and dropped;
//! 7. (`uploads`) uploads 1 MB and 50 MB dictations (multipart) at 1 and 16
//!    concurrent clients: MB/s, p50/p99, and the server's peak RSS;
//! 8. (`wal`, smallest size) a burst of creates at 64 connections for at
//!    least 10 s, sampling the WAL file's size: its peak, with the throughput;
//! 9. (`compare`, with `--baseline BIN`) each workload against this build and
//!    another build of clinscribe (e.g. the previous commit's release binary)
//!    on copies of the same database, runs alternating, in the same run; `wal`
//!    also runs the baseline;
//! 10. (`auth`) each workload signed in with an API token (`PWA_AUTH=on`, an
//!     administrator's token, so that every seeded recording is readable)
//!     against `PWA_AUTH=off`, this build, copies of the same database, runs
//!     alternating: the cost of authentication.
//! 11. (`metrics`) each workload with Prometheus metrics on (`PWA_METRICS_BIND`,
//!     scraped every second meanwhile, as a busy Prometheus would) against
//!     off, this build, copies of the same database, runs alternating.
//! 12. (`tracing`) each workload with OpenTelemetry traces on (exported over
//!     OTLP/gRPC to a receiver in this process that decodes and counts the
//!     spans) against off, the same way: every request traced, then a tenth.
//!
//! Results: JSON lines in `target/bench/loadgen-<time>.jsonl` and a Markdown
//! report appended to `docs/BENCHMARKS.md` (`--no-report` to skip).

// A benchmark that cannot do its work stops with a message: no recovery to attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clinscribe::config::DatabaseSettings;
use clinscribe::db::SqliteDatabase;
use clinscribe::recordings::{NewRecording, RecordingStore};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use uuid::Uuid;

// ---------------------------------------------------------------- options

/// The load benchmark: `cargo bench --bench loadgen -- [OPTIONS]`; results
/// go to docs/BENCHMARKS.md by hand, raw medians to target/loadgen.json.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loadgen")]
struct Options {
    /// Database sizes (rows) to measure at.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<u64>,
    /// Concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// HTTP workloads.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "health,get,create,list,list-status,list-1000,list-deep,mixed"
    )]
    workloads: Vec<Workload>,
    /// Seconds per measurement.
    #[arg(long, value_parser = seconds, default_value = "10")]
    duration: Duration,
    /// Seconds of warm-up before each measurement.
    #[arg(long, value_parser = seconds, default_value = "2")]
    warmup: Duration,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Do not write target/loadgen.json.
    #[arg(long = "no-report", action = clap::ArgAction::SetFalse)]
    report: bool,
    /// Phases: seed, storage, backup, http, full, backends, uploads, wal,
    /// compare (needs --baseline), auth, metrics, tracing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "seed,storage,backup,http,full,backends,uploads"
    )]
    phases: Vec<String>,
    /// Concurrent clients in the backends phase.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    backend_concurrency: Vec<usize>,
    /// Another clinscribe binary to compare with (phases wal, compare).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

fn parse_options() -> Options {
    <Options as clap::Parser>::parse()
}

// ---------------------------------------------------------------- workloads

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Health,
    Get,
    Create,
    List,
    ListStatus,
    #[value(name = "list-1000")]
    List1000,
    ListDeep,
    Mixed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Get => "get",
            Self::Create => "create",
            Self::List => "list",
            Self::ListStatus => "list-status",
            Self::List1000 => "list-1000",
            Self::ListDeep => "list-deep",
            Self::Mixed => "mixed",
        }
    }
}

// ---------------------------------------------------------------- the server process

#[path = "../tests/it/common/server.rs"]
#[allow(dead_code)] // what only the tests use
mod server_process;

use server_process::{Log, ServerProcess};

#[path = "../tests/it/common/otlp.rs"]
#[allow(dead_code)] // what only the tests use
mod otlp;

/// A server under load: the test harness's process, its log in a file, and
/// how long it took to start.
struct Server {
    process: ServerProcess,
    addr: String,
    startup: Duration,
    /// The `Authorization` header its requests carry (`PWA_AUTH=on`).
    authorization: Option<String>,
    _log: tempfile::NamedTempFile,
}

impl Server {
    fn start(db: &Path, synchronous: &str) -> Self {
        Self::start_url(&format!("sqlite://{}", db.display()), synchronous)
    }

    fn start_url(url: &str, synchronous: &str) -> Self {
        Self::start_binary(
            Path::new(env!("CARGO_BIN_EXE_clinscribe")),
            url,
            synchronous,
        )
    }

    /// `binary` (this build, or a baseline build to compare with) serving `url`.
    fn start_binary(binary: &Path, url: &str, synchronous: &str) -> Self {
        Self::spawn(
            binary,
            url,
            &[("PWA_SQLITE_SYNCHRONOUS", synchronous)],
            None,
        )
    }

    /// This build on SQLite file `db` with `PWA_AUTH=on`, its requests signed
    /// in with a new administrator's API token.
    fn start_signed_in(db: &Path) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_clinscribe"));
        let cli = |args: &[&str]| {
            let out = Command::new(binary)
                .args(args)
                .env("PWA_DATABASE_URL", format!("sqlite://{}", db.display()))
                .env("PWA_LOG", "error")
                .output()
                .expect("clinscribe");
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        cli(&[
            "user",
            "add",
            "bench-admin",
            "--name",
            "Benchmark",
            "--admin",
            "--no-password",
        ]);
        let token = cli(&["token", "create", "bench-admin"]);
        let token = token.lines().last().expect("a token").to_owned();
        let url = format!("sqlite://{}", db.display());
        Self::spawn(
            binary,
            &url,
            &[("PWA_AUTH", "on")],
            Some(format!("Bearer {token}")),
        )
    }

    fn spawn(
        binary: &Path,
        url: &str,
        env: &[(&str, &str)],
        authorization: Option<String>,
    ) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let started = Instant::now();
        // Request logging stays on (it is part of the product), into a file.
        let mut env = env.to_vec();
        env.push(("PWA_LOG", "info"));
        let process = ServerProcess::spawn(binary, url, &env, Log::File(log.path()));
        Self {
            addr: process.addr().to_owned(),
            startup: started.elapsed(),
            authorization,
            process,
            _log: log,
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn stop(self) {
        let _ = self.process.terminate();
    }
}

/// CPU seconds (user + system) used so far by a process, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the file: 11 and 12 after ')'. USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------- the HTTP driver

/// A keep-alive connection, and the `Host` its requests name (the server's
/// own address: it refuses host names it does not answer to).
struct Sender {
    inner: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    authorization: Option<String>,
}

async fn connect(addr: &str) -> Sender {
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let _ = stream.set_nodelay(true);
            if let Ok((inner, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            {
                tokio::spawn(conn);
                return Sender {
                    inner,
                    host: addr.to_owned(),
                    authorization: None,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Shared {
    /// Worker `i` talks to `addrs[i % addrs.len()]` (several instances: round robin).
    addrs: Vec<String>,
    /// The `Authorization` header for each of `addrs`.
    authorizations: Vec<Option<String>>,
    ids: Vec<String>,
    stop: AtomicBool,
    measuring: AtomicBool,
    errors: AtomicU64,
}

/// One response: status, `Link` header, body length.
async fn send(
    sender: &mut Sender,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Option<String>), ()> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &sender.host);
    if let Some(authorization) = &sender.authorization {
        req = req.header("authorization", authorization);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(drop)?;
    let response = sender.inner.send_request(req).await.map_err(drop)?;
    let status = response.status().as_u16();
    let link = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.strip_prefix('<'))
        .and_then(|l| l.split('>').next())
        .map(str::to_owned);
    response.into_body().collect().await.map_err(drop)?;
    Ok((status, link))
}

/// Per-worker results: latency histograms (µs) by label.
type Histos = BTreeMap<&'static str, Histogram<u64>>;

fn record(histos: &mut Histos, label: &'static str, started: Instant) {
    let micros = started.elapsed().as_micros() as u64;
    histos
        .entry(label)
        .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"))
        .saturating_record(micros.max(1));
}

async fn worker(shared: Arc<Shared>, workload: Workload, id: usize) -> Histos {
    let addr = shared.addrs[id % shared.addrs.len()].clone();
    let authorization = shared.authorizations[id % shared.addrs.len()].clone();
    let mut sender = connect(&addr).await;
    sender.authorization.clone_from(&authorization);
    let mut histos = Histos::new();
    let mut rng = fastrand::Rng::with_seed(id as u64 * 7919 + 1);
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let kind = match workload {
            Workload::Mixed => match rng.u8(0..10) {
                0..7 => Workload::Get,
                7..9 => Workload::List,
                _ => Workload::Create,
            },
            other => other,
        };
        let outcome: Result<(), ()> = async {
            match kind {
                Workload::ListDeep => {
                    // Follow the cursor 20 pages deep; pages 1 and 20 timed separately.
                    let mut path = "/api/v1/recordings?limit=100".to_owned();
                    for page in 1..=20 {
                        let started = Instant::now();
                        let (status, link) = send(&mut sender, Method::GET, &path, None).await?;
                        if status != 200 {
                            return Err(());
                        }
                        if shared.measuring.load(Ordering::Relaxed) {
                            record(&mut histos, "all", started);
                            match page {
                                1 => record(&mut histos, "page1", started),
                                20 => record(&mut histos, "page20", started),
                                _ => {}
                            }
                        }
                        match link {
                            Some(next) => path = next,
                            None => break,
                        }
                    }
                    Ok(())
                }
                _ => {
                    let (method, path, body, expect) = match kind {
                        Workload::Health => (Method::GET, "/api/v1/health".to_owned(), None, 200),
                        Workload::Get => {
                            let id = &shared.ids[rng.usize(0..shared.ids.len())];
                            (Method::GET, format!("/api/v1/recordings/{id}"), None, 200)
                        }
                        Workload::Create => (
                            Method::POST,
                            "/api/v1/recordings".to_owned(),
                            Some(format!(
                                r#"{{"patient_id":"bench-{id}-{}","duration_seconds":{}}}"#,
                                n % 5000,
                                30 + n % 600
                            )),
                            201,
                        ),
                        Workload::List => (Method::GET, "/api/v1/recordings".to_owned(), None, 200),
                        Workload::ListStatus => (
                            Method::GET,
                            "/api/v1/recordings?status=completed".to_owned(),
                            None,
                            200,
                        ),
                        Workload::List1000 => (
                            Method::GET,
                            "/api/v1/recordings?limit=1000".to_owned(),
                            None,
                            200,
                        ),
                        Workload::ListDeep | Workload::Mixed => unreachable!(),
                    };
                    let started = Instant::now();
                    let (status, _) = send(&mut sender, method, &path, body).await?;
                    if shared.measuring.load(Ordering::Relaxed) {
                        record(&mut histos, "all", started);
                    }
                    if status == expect { Ok(()) } else { Err(()) }
                }
            }
        }
        .await;
        if outcome.is_err() {
            if shared.measuring.load(Ordering::Relaxed) {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            // The connection may be unusable: start a fresh one.
            sender = connect(&addr).await;
            sender.authorization.clone_from(&authorization);
        }
    }
    histos
}

#[derive(Debug, Clone)]
struct RunResult {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    server_cpu_pct: f64,
    server_peak_rss_mib: f64,
    loadgen_cpu_pct: f64,
    extra: BTreeMap<String, f64>,
}

async fn run_workload(
    servers: &[&Server],
    ids: &[String],
    workload: Workload,
    conns: usize,
    opts: &Options,
) -> RunResult {
    let shared = Arc::new(Shared {
        addrs: servers.iter().map(|s| s.addr.clone()).collect(),
        authorizations: servers.iter().map(|s| s.authorization.clone()).collect(),
        ids: ids.to_vec(),
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        errors: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(worker(shared.clone(), workload, i)))
        .collect();
    tokio::time::sleep(opts.warmup).await;
    // CPU and RSS are summed over the instances.
    let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let servers_cpu = || -> f64 { pids.iter().map(|p| cpu_seconds(&p.to_string())).sum() };
    let servers_rss = || -> f64 { pids.iter().map(|p| rss_mib(*p)).sum() };
    let (server_cpu0, self_cpu0) = (servers_cpu(), cpu_seconds("self"));
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    let mut peak_rss: f64 = servers_rss();
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak_rss = peak_rss.max(servers_rss());
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let (server_cpu1, self_cpu1) = (servers_cpu(), cpu_seconds("self"));
    shared.stop.store(true, Ordering::Relaxed);
    let mut merged = Histos::new();
    for t in tasks {
        for (label, h) in t.await.expect("worker") {
            merged
                .entry(label)
                .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"))
                .add(h)
                .expect("merge");
        }
    }
    let empty = Histogram::<u64>::new(3).expect("histogram");
    let all = merged.get("all").unwrap_or(&empty);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut extra = BTreeMap::new();
    for page in ["page1", "page20"] {
        if let Some(h) = merged.get(page) {
            extra.insert(format!("{page}_p50_ms"), ms(h, 0.5));
            extra.insert(format!("{page}_p99_ms"), ms(h, 0.99));
        }
    }
    RunResult {
        throughput: all.len() as f64 / elapsed,
        p50_ms: ms(all, 0.5),
        p99_ms: ms(all, 0.99),
        p999_ms: ms(all, 0.999),
        errors: shared.errors.load(Ordering::Relaxed),
        server_cpu_pct: (server_cpu1 - server_cpu0) / elapsed * 100.0,
        server_peak_rss_mib: peak_rss,
        loadgen_cpu_pct: (self_cpu1 - self_cpu0) / elapsed * 100.0,
        extra,
    }
}

/// The median over runs of the server's CPU time per request, in microseconds.
fn median_cpu_per_request(runs: &[RunResult]) -> f64 {
    let mut v: Vec<f64> = runs
        .iter()
        .map(|r| r.server_cpu_pct * 1e4 / r.throughput.max(1.0))
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median run by throughput, with each latency figure the median across runs.
fn median_of(runs: &[RunResult]) -> RunResult {
    let med = |f: &dyn Fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut extra = BTreeMap::new();
    for key in runs[0].extra.keys() {
        extra.insert(
            key.clone(),
            med(&|r: &RunResult| r.extra.get(key).copied().unwrap_or(0.0)),
        );
    }
    RunResult {
        throughput: med(&|r| r.throughput),
        p50_ms: med(&|r| r.p50_ms),
        p99_ms: med(&|r| r.p99_ms),
        p999_ms: med(&|r| r.p999_ms),
        errors: runs.iter().map(|r| r.errors).sum(),
        server_cpu_pct: med(&|r| r.server_cpu_pct),
        server_peak_rss_mib: runs
            .iter()
            .map(|r| r.server_peak_rss_mib)
            .fold(0.0, f64::max),
        loadgen_cpu_pct: med(&|r| r.loadgen_cpu_pct),
        extra,
    }
}

// ---------------------------------------------------------------- storage limit, seed, backup

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn open_store(db: &Path) -> (SqliteDatabase, Arc<dyn RecordingStore>) {
    let database = SqliteDatabase::open(&DatabaseSettings::sqlite(db))
        .await
        .expect("open");
    (
        database.clone(),
        clinscribe::recordings::store::open(&clinscribe::db::Database::Sqlite(database)),
    )
}

/// Sequential one-insert-per-transaction creates, ops/s.
async fn raw_inserts(store: &Arc<dyn RecordingStore>, d: Duration) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < d {
        store
            .create(
                &clinscribe::audit::AuditContext::clinician("storage-bench"),
                NewRecording {
                    patient_id: format!("p-{n}"),
                    duration_seconds: 60,
                    audio_file_path: None,
                },
            )
            .await
            .expect("insert");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Point reads by random id from `tasks` concurrent tasks, ops/s.
async fn point_reads(
    store: &Arc<dyn RecordingStore>,
    ids: &[String],
    tasks: usize,
    d: Duration,
) -> f64 {
    let ids: Arc<Vec<Uuid>> = Arc::new(
        ids.iter()
            .map(|s| Uuid::parse_str(s).expect("uuid"))
            .collect(),
    );
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, ids, count) = (store.clone(), ids.clone(), count.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                while started.elapsed() < d {
                    store.get(ids[rng.usize(0..ids.len())]).await.expect("get");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("reader");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn sample_ids(db: &Path, n: usize) -> Vec<String> {
    let (database, _) = open_store(db).await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM recordings ORDER BY random() LIMIT ?")
            .bind(n as i64)
            .fetch_all(database.readers())
            .await
            .expect("ids");
    database.close().await;
    ids
}

fn cli(db: &Path, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_clinscribe"))
        .args(args)
        .current_dir(db.parent().expect("dir"))
        .env("PWA_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("PWA_LOG", "error")
        .output()
        .expect("clinscribe");
    assert!(
        out.status.success(),
        "clinscribe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

/// The worst create latency seen by `writers` concurrent writers while a backup
/// runs, next to the worst in an equal window without one.
async fn backup_stall(server: &Server, db: &Path, writers: usize) -> (f64, f64, f64) {
    async fn worst_during(
        addr: &str,
        writers: usize,
        during: impl std::future::Future<Output = ()>,
    ) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (addr, stop) = (addr.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut sender = connect(&addr).await;
                    let mut worst = 0.0f64;
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body =
                            format!(r#"{{"patient_id":"stall-{w}-{n}","duration_seconds":1}}"#);
                        let started = Instant::now();
                        let ok = matches!(
                            send(&mut sender, Method::POST, "/api/v1/recordings", Some(body)).await,
                            Ok((201, _))
                        );
                        assert!(ok, "a writer failed during the backup");
                        worst = worst.max(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    worst
                })
            })
            .collect();
        during.await;
        stop.store(true, Ordering::Relaxed);
        let mut worst = 0.0f64;
        for h in handles {
            worst = worst.max(h.await.expect("writer"));
        }
        worst
    }
    let mut backup_secs = 0.0;
    let with_backup = worst_during(&server.addr, writers, async {
        let db = db.to_path_buf();
        let (_, took) =
            tokio::task::spawn_blocking(move || cli(&db, &["backup", "--dest", "stall-backups"]))
                .await
                .expect("backup");
        backup_secs = took.as_secs_f64();
    })
    .await;
    let baseline = worst_during(
        &server.addr,
        writers,
        tokio::time::sleep(Duration::from_secs_f64(backup_secs)),
    )
    .await;
    let _ = std::fs::remove_dir_all(db.parent().expect("dir").join("stall-backups"));
    (with_backup, baseline, backup_secs)
}

// ---------------------------------------------------------------- report

struct Report {
    json: std::fs::File,
    markdown: String,
}

impl Report {
    fn emit(&mut self, value: Value) {
        writeln!(self.json, "{value}").expect("write json");
        eprintln!("{value}");
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem:.0} GiB RAM")
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------- main

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let opts = parse_options();
    let stamp = time::OffsetDateTime::now_utc();
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir).expect("target/bench");
    // Nanoseconds: two short runs can start within the same second.
    let json_path = out_dir.join(format!("loadgen-{}.jsonl", stamp.unix_timestamp_nanos()));
    let mut report = Report {
        json: std::fs::File::create(&json_path).expect("json"),
        markdown: String::new(),
    };
    let md = &mut String::new();
    md.push_str(&format!(
        "\n## Load benchmark, {} UTC, commit {}\n\n{}; client and server on the same machine. \
         Release build; `PWA_LOG=info` (one log line per request). Each figure: median of {} runs of {:.0} s \
         after a {:.0} s warm-up; peak RSS is the maximum over the runs.\n",
        stamp.date(),
        commit(),
        machine(),
        opts.runs,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64()
    ));
    let has = |p: &str| opts.phases.iter().any(|x| x == p);

    for &size in &opts.sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("clinical.db");
        md.push_str(&format!("\n### {size} recordings\n\n"));

        // Seed (always: every other phase needs the rows).
        let (out, took) = cli(&db, &["seed", "--count", &size.to_string()]);
        let seed_rate = size as f64 / took.as_secs_f64();
        report.emit(json!({"size": size, "phase": "seed", "rows_per_s": seed_rate, "seconds": took.as_secs_f64(), "output": out.lines().next()}));
        if has("seed") {
            md.push_str(&format!("- `seed --count {size}`: {:.1} s, **{seed_rate:.0} rows/s** (whole command, bulk mode)\n", took.as_secs_f64()));
        }
        let ids = sample_ids(&db, 50_000).await;

        let (mut insert_limit, mut read_limit) = (f64::NAN, f64::NAN);
        if has("storage") {
            let (database, store) = open_store(&db).await;
            let mut inserts = Vec::new();
            let mut reads = Vec::new();
            for _ in 0..opts.runs {
                inserts.push(raw_inserts(&store, opts.duration.min(Duration::from_secs(5))).await);
                reads.push(
                    point_reads(&store, &ids, 4, opts.duration.min(Duration::from_secs(5))).await,
                );
            }
            database.close().await;
            insert_limit = median(inserts.clone());
            read_limit = median(reads.clone());
            report.emit(json!({"size": size, "phase": "storage", "insert_per_s": inserts, "read_per_s": reads}));
            md.push_str(&format!(
                "- storage limit (same library, schema and settings, no HTTP): **{insert_limit:.0} inserts/s** \
                 (one per transaction, sequential), **{read_limit:.0} point reads/s** (4 tasks)\n"
            ));
        }

        if has("backup") {
            let mut times = Vec::new();
            for _ in 0..opts.runs {
                let (out, took) = cli(&db, &["backup", "--dest", "b"]);
                assert!(out.contains("integrity:  ok"));
                times.push(took.as_secs_f64() * 1000.0);
                let _ = std::fs::remove_dir_all(dir.path().join("b"));
            }
            let t = median(times.clone());
            report.emit(json!({"size": size, "phase": "backup", "ms": times}));
            let bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
            md.push_str(&format!(
                "- `clinscribe backup` of {:.0} MiB: **{t:.0} ms** (whole command: copy, fsync, integrity check)\n",
                bytes as f64 / 1048576.0
            ));
        }

        let server = Server::start(&db, "normal");
        report.emit(
            json!({"size": size, "phase": "startup", "ms": server.startup.as_secs_f64() * 1000.0}),
        );
        md.push_str(&format!(
            "- server start-up to listening: **{:.0} ms**\n",
            server.startup.as_secs_f64() * 1000.0
        ));

        if has("backup") && size == *opts.sizes.iter().max().unwrap_or(&0) {
            let (worst, baseline, secs) = backup_stall(&server, &db, 4).await;
            report.emit(json!({"size": size, "phase": "backup-stall", "worst_ms": worst, "baseline_worst_ms": baseline, "backup_s": secs}));
            md.push_str(&format!(
                "- longest create seen by 4 concurrent writers during a {secs:.1} s backup: **{worst:.1} ms** \
                 (same writers without a backup, same duration: {baseline:.1} ms)\n"
            ));
        }

        if has("http") {
            md.push_str(
                "\n| workload | conns | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU | server peak RSS | loadgen CPU | vs limit |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            let mut health_at: BTreeMap<usize, f64> = BTreeMap::new();
            for &workload in &opts.workloads {
                for &conns in &opts.concurrency {
                    let mut runs = Vec::new();
                    for _ in 0..opts.runs {
                        runs.push(run_workload(&[&server], &ids, workload, conns, &opts).await);
                    }
                    let m = median_of(&runs);
                    if workload == Workload::Health {
                        health_at.insert(conns, m.throughput);
                    }
                    let mut limits = Vec::new();
                    if workload != Workload::Health {
                        limits.push(("health", health_at.get(&conns).copied().unwrap_or(f64::NAN)));
                    }
                    match workload {
                        Workload::Create => limits.push(("raw inserts", insert_limit)),
                        Workload::Get => limits.push(("raw reads", read_limit)),
                        _ => {}
                    }
                    let vs = limits
                        .iter()
                        .filter(|(_, l)| l.is_finite() && *l > 0.0)
                        .map(|(what, l)| format!("{:.0} % of {what}", m.throughput / l * 100.0))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut name = workload.name().to_owned();
                    if let (Some(p1), Some(p20)) =
                        (m.extra.get("page1_p99_ms"), m.extra.get("page20_p99_ms"))
                    {
                        name.push_str(&format!(" (p99 page 1: {p1:.2}, page 20: {p20:.2})"));
                    }
                    md.push_str(&format!(
                        "| {name} | {conns} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} % | {:.1} MiB | {:.0} % | {vs} |\n",
                        m.throughput, m.p50_ms, m.p99_ms, m.p999_ms, m.errors, m.server_cpu_pct, m.server_peak_rss_mib, m.loadgen_cpu_pct
                    ));
                    report.emit(json!({
                        "size": size, "phase": "http", "workload": workload.name(), "connections": conns,
                        "median": {"req_per_s": m.throughput, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "p999_ms": m.p999_ms,
                                   "errors": m.errors, "server_cpu_pct": m.server_cpu_pct, "server_peak_rss_mib": m.server_peak_rss_mib,
                                   "loadgen_cpu_pct": m.loadgen_cpu_pct, "extra": m.extra},
                        "runs": runs.iter().map(|r| json!({"req_per_s": r.throughput, "p99_ms": r.p99_ms, "errors": r.errors})).collect::<Vec<_>>(),
                    }));
                }
            }
        }
        server.stop();

        if has("full") && size == *opts.sizes.iter().max().unwrap_or(&0) {
            let server = Server::start(&db, "full");
            md.push_str("\n`create` with `PWA_SQLITE_SYNCHRONOUS=full` (same database, same run):\n\n| conns | req/s | p50 ms | p99 ms | errors |\n|---:|---:|---:|---:|---:|\n");
            for &conns in opts.concurrency.iter().filter(|c| **c >= 16) {
                let runs: Vec<RunResult> = {
                    let mut v = Vec::new();
                    for _ in 0..opts.runs {
                        v.push(
                            run_workload(&[&server], &ids, Workload::Create, conns, &opts).await,
                        );
                    }
                    v
                };
                let m = median_of(&runs);
                md.push_str(&format!(
                    "| {conns} | {:.0} | {:.2} | {:.2} | {} |\n",
                    m.throughput, m.p50_ms, m.p99_ms, m.errors
                ));
                report.emit(json!({"size": size, "phase": "http-full", "workload": "create", "connections": conns, "req_per_s": m.throughput, "p99_ms": m.p99_ms, "errors": m.errors}));
            }
            server.stop();
        }

        if has("backends") && size == *opts.sizes.iter().max().unwrap_or(&0) {
            backends(&db, size, &ids, &opts, md, &mut report).await;
        }
        if has("uploads") && size == *opts.sizes.iter().min().unwrap_or(&0) {
            uploads(&db, &opts, md, &mut report).await;
        }
        if has("wal") && size == *opts.sizes.iter().min().unwrap_or(&0) {
            wal_burst(&db, size, &ids, &opts, md, &mut report).await;
        }
        if has("metrics") {
            metrics_cost(&db, size, &ids, &opts, md, &mut report).await;
        }
        if has("auth") {
            auth_cost(&db, size, &ids, &opts, md, &mut report).await;
        }
        if has("tracing") {
            tracing_cost(&db, size, &ids, &opts, md, &mut report).await;
        }
        if has("compare") {
            match &opts.baseline {
                Some(baseline) => {
                    compare(&db, baseline, size, &ids, &opts, md, &mut report).await;
                }
                None => eprintln!("phase compare skipped: it needs --baseline PATH"),
            }
        }
    }

    md.push_str(&format!(
        "\nRaw results: `{}` (JSON lines).\n",
        json_path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&json_path)
            .display()
    ));
    report.markdown = md.clone();
    print!("{}", report.markdown);
    if opts.report {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .expect("BENCHMARKS.md");
        f.write_all(report.markdown.as_bytes())
            .expect("append report");
        eprintln!("appended to {}", path.display());
    }
}

// ---------------------------------------------------------------- SQLite vs PostgreSQL

/// The same workloads on SQLite, one PostgreSQL instance and two, in one run.
async fn backends(
    db: &Path,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    use sqlx::Connection as _;
    let admin = std::env::var("PWA_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("clinscribe_bench_{}", std::process::id());
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        md.push_str(&format!(
            "\nSQLite vs PostgreSQL: skipped, no PostgreSQL at {admin}\n"
        ));
        return;
    };
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("create bench database");
    let root = admin.rsplit_once('/').map_or(admin.as_str(), |(r, _)| r);
    let pg_url = format!("{root}/{name}");

    let from = format!("sqlite://{}", db.display());
    let (out, took) = cli(db, &["migrate-data", "--from", &from, "--to", &pg_url]);
    assert!(out.contains("verified"), "migrate-data: {out}");
    let rate = size as f64 / took.as_secs_f64();
    report.emit(json!({"size": size, "phase": "migrate-data", "rows_per_s": rate, "seconds": took.as_secs_f64()}));
    md.push_str(&format!(
        "\n#### SQLite vs PostgreSQL ({size} recordings)\n\n\
         PostgreSQL {} on the same machine (default settings, pool of 16 per instance), \
         loaded with `clinscribe migrate-data`: {:.1} s, **{rate:.0} rows/s** (copy + verification).\n\n\
         | workload | conns | SQLite req/s | p99 ms | PG ×1 req/s | p99 ms | PG ×2 req/s | p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        postgres_version(&mut conn).await,
        took.as_secs_f64()
    ));

    let sqlite = Server::start(db, "normal");
    let pg1 = Server::start_url(&pg_url, "normal");
    let pg2 = Server::start_url(&pg_url, "normal");
    let setups: [(&str, Vec<&Server>); 3] = [
        ("sqlite", vec![&sqlite]),
        ("postgres-1", vec![&pg1]),
        ("postgres-2", vec![&pg1, &pg2]),
    ];
    for workload in [
        Workload::Get,
        Workload::Create,
        Workload::List,
        Workload::Mixed,
    ] {
        for &conns in &opts.backend_concurrency {
            let mut row = format!("| {} | {conns} ", workload.name());
            for (setup, servers) in &setups {
                let mut runs = Vec::new();
                for _ in 0..opts.runs {
                    runs.push(run_workload(servers, ids, workload, conns, opts).await);
                }
                let m = median_of(&runs);
                row.push_str(&format!("| {:.0} | {:.2} ", m.throughput, m.p99_ms));
                if m.errors > 0 {
                    row.push_str(&format!("({} errors) ", m.errors));
                }
                report.emit(json!({
                    "size": size, "phase": "backends", "setup": setup, "workload": workload.name(),
                    "connections": conns, "req_per_s": m.throughput, "p50_ms": m.p50_ms,
                    "p99_ms": m.p99_ms, "errors": m.errors, "server_cpu_pct": m.server_cpu_pct,
                    "server_peak_rss_mib": m.server_peak_rss_mib,
                }));
            }
            row.push_str("|\n");
            md.push_str(&row);
        }
    }
    sqlite.stop();
    pg1.stop();
    pg2.stop();
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop_db))
        .execute(&mut conn)
        .await;
}

async fn postgres_version(conn: &mut sqlx::PgConnection) -> String {
    sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(conn)
        .await
        .unwrap_or_default()
}

// ---------------------------------------------------------------- uploads

/// Upload throughput and latency for 1 MB and 50 MB dictations at 1 and 16
/// clients, and the server's peak RSS meanwhile (it must not grow with the size).
async fn uploads(db: &Path, opts: &Options, md: &mut String, report: &mut Report) {
    let server = Server::start(db, "normal");
    md.push_str(
        "\n#### Audio uploads (`POST /api/v1/recordings/upload`, multipart, each a new dictation)\n\n\
         Each upload is streamed to disk, hashed, fsynced, renamed, its directory fsynced and its row \
         committed with `synchronous=FULL` before the answer (`\"durable\": true`).\n\n\
         | size | clients | uploads/s | MB/s | p50 ms | p99 ms | errors | server peak RSS |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (mb, clients) in [(1usize, 1usize), (1, 16), (50, 1), (50, 16)] {
        let size = mb * 1_000_000;
        // One payload shared by the clients; each upload is a new dictation (new key).
        let audio = {
            let mut rng = fastrand::Rng::with_seed(mb as u64);
            let mut audio = vec![0x1A, 0x45, 0xDF, 0xA3];
            audio.extend((4..size).map(|_| rng.u8(..)));
            Arc::new(audio)
        };
        let payloads: Vec<Arc<Vec<u8>>> = (0..clients).map(|_| audio.clone()).collect();
        let duration = if mb >= 50 {
            opts.duration.max(Duration::from_secs(10))
        } else {
            opts.duration
        };
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let pid = server.pid();
        let tasks: Vec<_> = payloads
            .iter()
            .map(|audio| {
                let (audio, stop, errors, addr) =
                    (audio.clone(), stop.clone(), errors.clone(), server.addr.clone());
                tokio::spawn(async move {
                    let mut sender = connect(&addr).await;
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let boundary = "bench-boundary-7d1f";
                        let key = Uuid::new_v4();
                        let head = format!(
                            "--{boundary}\r\nContent-Disposition: form-data; name=\"patient_id\"\r\n\r\nbench\r\n\
                             --{boundary}\r\nContent-Disposition: form-data; name=\"duration_seconds\"\r\n\r\n60\r\n\
                             --{boundary}\r\nContent-Disposition: form-data; name=\"local_storage_key\"\r\n\r\n{key}\r\n\
                             --{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.webm\"\r\n\
                             Content-Type: audio/webm\r\n\r\n"
                        );
                        let mut body = Vec::with_capacity(audio.len() + 1024);
                        body.extend_from_slice(head.as_bytes());
                        body.extend_from_slice(&audio);
                        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
                        let req = Request::builder()
                            .method(Method::POST)
                            .uri("/api/v1/recordings/upload")
                            .header("host", &sender.host)
                            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                            .body(Full::new(Bytes::from(body)))
                            .expect("request");
                        let t = Instant::now();
                        let ok = match sender.inner.send_request(req).await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                r.into_body().collect().await.is_ok() && status == 201
                            }
                            Err(_) => false,
                        };
                        if ok {
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                            sender = connect(&addr).await;
                        }
                    }
                    latencies
                })
            })
            .collect();
        let mut peak_rss: f64 = rss_mib(pid);
        while started.elapsed() < duration {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak_rss = peak_rss.max(rss_mib(pid));
        }
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.expect("upload client"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let rate = latencies.len() as f64 / elapsed;
        let mb_s = rate * mb as f64;
        let errors = errors.load(Ordering::Relaxed);
        md.push_str(&format!(
            "| {mb} MB | {clients} | {rate:.1} | {mb_s:.0} | {:.0} | {:.0} | {errors} | {peak_rss:.0} MiB |\n",
            pct(0.5),
            pct(0.99)
        ));
        report.emit(
            json!({"phase": "uploads", "mb": mb, "clients": clients, "uploads_per_s": rate,
            "mb_per_s": mb_s, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": errors,
            "server_peak_rss_mib": peak_rss, "uploads": latencies.len()}),
        );
    }
    server.stop();
    let audio = std::env::temp_dir().join(format!("clinscribe-bench-audio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(audio);
}

// ---------------------------------------------------------------- baseline and WAL

/// A copy of the database file (checkpointed: the seeding command closed it).
fn copy_db(db: &Path, name: &str) -> PathBuf {
    let copy = db.with_file_name(name);
    std::fs::copy(db, &copy).expect("copy database");
    copy
}

/// The short name of a binary for the report: this build, or the baseline's path.
fn build_name(binary: &Path) -> String {
    if binary == Path::new(env!("CARGO_BIN_EXE_clinscribe")) {
        "this build".to_owned()
    } else {
        format!("baseline `{}`", binary.display())
    }
}

/// Creates at 64 connections for at least 10 s, sampling the WAL's size every
/// 20 ms: its peak shows whether the WAL stays bounded under writes that never
/// pause (readers of the `mixed` workload would hold snapshots too; creates
/// alone already keep the PASSIVE checkpoint from catching up).
async fn wal_burst(
    db: &Path,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    let mut binaries = vec![PathBuf::from(env!("CARGO_BIN_EXE_clinscribe"))];
    binaries.extend(opts.baseline.clone());
    let burst = Options {
        duration: opts.duration.max(Duration::from_secs(10)),
        ..opts.clone()
    };
    md.push_str(&format!(
        "\nWAL under a burst of creates (64 connections, {:.0} s, on a copy of the {size}-row database; WAL size sampled every 20 ms; limit {} MiB):\n\n\
         | build | creates/s | p99 ms | p99.9 ms | peak WAL MiB | WAL at the end MiB |\n|---|---:|---:|---:|---:|---:|\n",
        burst.duration.as_secs_f64(),
        clinscribe::db::sqlite::WAL_LIMIT_BYTES / (1024 * 1024)
    ));
    for (i, binary) in binaries.iter().enumerate() {
        let copy = copy_db(db, &format!("wal-burst-{i}.db"));
        let wal = copy.with_file_name(format!("wal-burst-{i}.db-wal"));
        let server =
            Server::start_binary(binary, &format!("sqlite://{}", copy.display()), "normal");
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (sampling, wal) = (sampling.clone(), wal.clone());
            tokio::spawn(async move {
                let mut peak = 0u64;
                while sampling.load(Ordering::Relaxed) {
                    peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak
            })
        };
        let run = run_workload(&[&server], ids, Workload::Create, 64, &burst).await;
        sampling.store(false, Ordering::Relaxed);
        let peak = sampler.await.expect("sampler");
        let end = std::fs::metadata(&wal).map_or(0, |m| m.len());
        server.stop();
        let mib = |b: u64| b as f64 / 1048576.0;
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} |\n",
            build_name(binary),
            run.throughput,
            run.p99_ms,
            run.p999_ms,
            mib(peak),
            mib(end)
        ));
        report.emit(json!({"size": size, "phase": "wal", "build": build_name(binary), "req_per_s": run.throughput,
                           "p99_ms": run.p99_ms, "p999_ms": run.p999_ms, "peak_wal_bytes": peak, "end_wal_bytes": end}));
        let _ = std::fs::remove_file(&copy);
    }
}

/// Each workload against this build and the baseline build, on copies of the
/// same database, runs alternating so that both see the same machine noise.
/// Each workload signed in with an API token against `PWA_AUTH=off`, this
/// build, on copies of the same database, runs alternating.
async fn auth_cost(
    db: &Path,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    let on = Server::start_signed_in(&copy_db(db, "auth-on.db"));
    let off = Server::start(&copy_db(db, "auth-off.db"), "normal");
    md.push_str(&format!(
        "\nSigned in with an API token (`PWA_AUTH=on`) against `PWA_AUTH=off` ({size} rows, runs alternating, medians):\n\n"
    ));
    alternating_then_stop(
        [("token", on), ("off", off)],
        "auth",
        size,
        ids,
        opts,
        md,
        report,
    )
    .await;
}

/// Each workload with the metrics on (and scraped every second) against
/// off, this build, on copies of the same database, runs alternating.
async fn metrics_cost(
    db: &Path,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    let url = |name: &str| format!("sqlite://{}", copy_db(db, name).display());
    let binary = Path::new(env!("CARGO_BIN_EXE_clinscribe"));
    let on = Server::spawn(
        binary,
        &url("metrics-on.db"),
        &[("PWA_METRICS_BIND", "127.0.0.1:0")],
        None,
    );
    let off = Server::start(&copy_db(db, "metrics-off.db"), "normal");
    let scrape_url = on.process.metrics_url.clone().expect("metrics listening");
    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let scraping = scraping.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while scraping.load(Ordering::Relaxed) {
                let _ = client.get(&scrape_url).send().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    md.push_str(&format!(
        "\nPrometheus metrics on (`PWA_METRICS_BIND`, scraped every second) against off ({size} rows, runs alternating, medians):\n\n"
    ));
    alternating_then_stop(
        [("metrics", on), ("off", off)],
        "metrics",
        size,
        ids,
        opts,
        md,
        report,
    )
    .await;
    scraping.store(false, Ordering::Relaxed);
    let _ = scraper.await;
}

/// Each workload with traces on (every request traced, exported over gRPC
/// to a receiver in this process) against off, this build, on copies of the
/// same database, runs alternating; how many spans arrived.
async fn tracing_cost(
    db: &Path,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    let receiver = otlp::Receiver::counting();
    let endpoint = receiver.start_grpc().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_clinscribe"));
    // Every trace kept, then a tenth (the standard sampler variables).
    for (ratio, what) in [("1.0", "every request"), ("0.1", "a tenth of requests")] {
        let db_on = copy_db(db, &format!("tracing-on-{ratio}.db"));
        // A queue and batches large enough that no span is dropped at these rates.
        let on = Server::spawn(
            binary,
            &format!("sqlite://{}", db_on.display()),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", ratio),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "262144"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
            None,
        );
        let off = Server::start(&copy_db(db, &format!("tracing-off-{ratio}.db")), "normal");
        md.push_str(&format!(
            "\nOpenTelemetry traces on ({what} traced, OTLP/gRPC to a receiver in the load generator) against off ({size} rows, runs alternating, medians):\n\n"
        ));
        let before = receiver.received.load(Ordering::Relaxed);
        let phase = format!("tracing-{ratio}");
        alternating_then_stop(
            [("tracing", on), ("off", off)],
            &phase,
            size,
            ids,
            opts,
            md,
            report,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let spans = receiver.received.load(Ordering::Relaxed) - before;
        md.push_str(&format!(
            "\nSpans received by the OTLP receiver: {spans}.\n"
        ));
        report.emit(json!({"size": size, "phase": phase, "spans_received": spans}));
    }
}

async fn compare(
    db: &Path,
    baseline: &Path,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    let this = Server::start(&copy_db(db, "compare-this.db"), "normal");
    let base = Server::start_binary(
        baseline,
        &format!("sqlite://{}", copy_db(db, "compare-baseline.db").display()),
        "normal",
    );
    md.push_str(&format!(
        "\nThis build against {} ({size} rows, runs alternating, medians):\n\n",
        build_name(baseline)
    ));
    alternating_then_stop(
        [("this", this), ("baseline", base)],
        "compare",
        size,
        ids,
        opts,
        md,
        report,
    )
    .await;
}

/// [`alternating`], then both servers stopped.
async fn alternating_then_stop(
    [(first_name, first), (second_name, second)]: [(&str, Server); 2],
    phase: &str,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    let sides = [(first_name, &first), (second_name, &second)];
    alternating(sides, phase, size, ids, opts, md, report).await;
    first.stop();
    second.stop();
}

/// Each workload at each concurrency on two servers, runs alternating: a
/// table of their medians and ratio (first / second), and the raw runs.
async fn alternating(
    [(first_name, first), (second_name, second)]: [(&str, &Server); 2],
    phase: &str,
    size: u64,
    ids: &[String],
    opts: &Options,
    md: &mut String,
    report: &mut Report,
) {
    // Throughput on this shared machine moves with everything else on it;
    // the server's CPU time per request is the steadier measure of a cost.
    md.push_str(&format!(
        "| workload | conns | {first_name} req/s | {second_name} req/s | ratio | {first_name} p99 ms | {second_name} p99 ms | {first_name} CPU µs/req | {second_name} CPU µs/req | CPU ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    ));
    for &workload in &opts.workloads {
        for &conns in &opts.concurrency {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..opts.runs {
                a.push(run_workload(&[first], ids, workload, conns, opts).await);
                b.push(run_workload(&[second], ids, workload, conns, opts).await);
            }
            let (m, n) = (median_of(&a), median_of(&b));
            let (cpu_a, cpu_b) = (median_cpu_per_request(&a), median_cpu_per_request(&b));
            md.push_str(&format!(
                "| {} | {conns} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} |\n",
                workload.name(),
                m.throughput,
                n.throughput,
                m.throughput / n.throughput,
                m.p99_ms,
                n.p99_ms,
                cpu_a,
                cpu_b,
                cpu_a / cpu_b
            ));
            let throughputs =
                |runs: &[RunResult]| runs.iter().map(|r| r.throughput).collect::<Vec<_>>();
            let mut row = json!({"size": size, "phase": phase, "workload": workload.name(), "connections": conns});
            for (name, median, runs) in [(first_name, &m, &a), (second_name, &n, &b)] {
                row[name] = json!({"req_per_s": median.throughput, "p99_ms": median.p99_ms, "errors": median.errors,
                                   "server_cpu_us_per_req": median_cpu_per_request(runs)});
                row[format!("runs_{name}")] = json!(throughputs(runs));
            }
            report.emit(row);
        }
    }
}
