//! Audio in an S3-compatible object store (`PWA_AUDIO_STORE`), tested against
//! moto's S3 server (`python3 -m moto.server`, installed by scripts/test; the
//! tests are skipped, saying so, when it is missing): uploads land in the
//! bucket and nowhere on disk, download with ranges, exactly one object per
//! dictation, orphans swept; and two PostgreSQL instances sharing the bucket.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    PgTestDb, ServerProcess, client, files_under, multipart, postgres_or_skip, webm,
};
use serde_json::Value;

/// moto's S3 server on a free port, with one bucket.
struct S3 {
    child: Child,
    endpoint: String,
    bucket: String,
}

impl S3 {
    async fn start(test: &str) -> Option<Self> {
        let available = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: moto's S3 server is not installed (pip install 'moto[server]'; scripts/test does)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        // Owned at once, so that it is killed and reaped however this ends.
        let s3 = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: format!("audio-{}", uuid::Uuid::new_v4().simple()),
        };
        let http = client();
        for _ in 0..100 {
            if let Ok(r) = http
                .put(format!("{}/{}", s3.endpoint, s3.bucket))
                .send()
                .await
                && r.status().is_success()
            {
                return Some(s3);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto did not start");
    }

    /// The server settings for this bucket, under `prefix`.
    fn env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PWA_AUDIO_STORE", format!("s3://{}/{prefix}", self.bucket)),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The keys in the bucket under `prefix`.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let xml = client()
            .get(format!(
                "{}/{}?list-type=2&prefix={prefix}",
                self.endpoint, self.bucket
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_env<'a>(
    env: &'a [(&'static str, String)],
    extra: &[(&'static str, &'a str)],
) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_lives_in_the_bucket_once_per_dictation() {
    let Some(s3) = S3::start("audio_lives_in_the_bucket_once_per_dictation").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let audio_dir = dir.path().join("audio");
    let env = s3.env("clinic-1");
    let server = ServerProcess::start_with_env(
        &dir.path().join("clinical.db"),
        &with_env(
            &env,
            &[
                ("PWA_AUDIO_DIR", audio_dir.to_str().unwrap()),
                ("PWA_UPLOAD_EXPIRY", "1s"),
            ],
        ),
    );
    let audio = webm(6_000_000, 1); // more than one multipart part
    let key = uuid::Uuid::new_v4().to_string();
    let mut ids = HashSet::new();
    for attempt in 0..5 {
        let (status, body) = server.upload("patient-s3", &audio, &key).await;
        assert_eq!(status, if attempt == 0 { 201 } else { 200 }, "{body}");
        assert_eq!(body["durable"], true);
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    let keys = s3.keys("clinic-1/objects").await;
    assert_eq!(keys.len(), 1, "one object: {keys:?}");
    assert!(keys[0].ends_with(&format!("{id}.webm")), "{keys:?}");
    assert!(
        files_under(&audio_dir.join("objects")).is_empty(),
        "nothing stored on disk"
    );
    assert!(files_under(&audio_dir.join("tmp")).is_empty());

    let url = server.url(&format!("/api/v1/recordings/{id}/audio"));
    let bytes = server
        .get_bytes(&format!("/api/v1/recordings/{id}/audio"))
        .await;
    assert_eq!(&bytes[..], &audio[..]);
    let part = client()
        .get(&url)
        .header("range", "bytes=5999990-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        "bytes 5999990-5999999/6000000"
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &audio[5_999_990..]);

    // An object whose row was never committed (a crash between the two) is swept.
    let orphan = format!("clinic-1/objects/aa/{}.webm", uuid::Uuid::now_v7());
    client()
        .put(format!("{}/{}/{orphan}", s3.endpoint, s3.bucket))
        .body(webm(100, 2))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let keys = s3.keys("clinic-1/objects").await;
    assert_eq!(
        keys.len(),
        1,
        "the orphan is gone, the recording's audio stays: {keys:?}"
    );
    assert!(keys[0].ends_with(&format!("{id}.webm")));
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgresql_instances_share_the_bucket_without_a_shared_disk() {
    let Some(admin) = postgres_or_skip("two_postgresql_instances_share_the_bucket") else {
        return;
    };
    let Some(s3) = S3::start("two_postgresql_instances_share_the_bucket").await else {
        return;
    };
    let pg = PgTestDb::create(&admin).await;
    let env = s3.env("group");
    // Each instance has a disk of its own (the default temp audio dir).
    let servers = [
        ServerProcess::start_url(&pg.url, &with_env(&env, &[])),
        ServerProcess::start_url(&pg.url, &with_env(&env, &[])),
    ];
    let audio = webm(300_000, 3);
    let key = uuid::Uuid::new_v4().to_string();
    let (a, b) = tokio::join!(
        servers[0].upload("patient-s3", &audio, &key),
        servers[1].upload("patient-s3", &audio, &key)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{} {}", a.1, b.1);
    assert_eq!(a.1["id"], b.1["id"]);
    let id = a.1["id"].as_str().unwrap();
    assert_eq!(s3.keys("group/objects").await.len(), 1, "one object");
    for server in &servers {
        let bytes = server
            .get_bytes(&format!("/api/v1/recordings/{id}/audio"))
            .await;
        assert_eq!(&bytes[..], &audio[..], "either instance serves it");
    }
}

/// The bucket unreachable: an upload is answered 503 with Retry-After (the
/// client retries later), and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_is_503_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = dir.path().join("clinical.db");
    let audio_dir = dir.path().join("audio");
    let env = [
        ("PWA_AUDIO_STORE", "s3://nowhere/clinic".to_owned()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        // object_store retries for a while by default; keep the test short.
        ("AWS_MAX_RETRIES", "0".into()),
        ("AWS_RETRY_TIMEOUT", "1s".into()),
    ];
    let server = ServerProcess::start_with_env(
        &db,
        &with_env(&env, &[("PWA_AUDIO_DIR", audio_dir.to_str().unwrap())]),
    );
    let key = uuid::Uuid::new_v4().to_string();
    let (ct, body) = multipart(&[
        ("patient_id", None, b"p"),
        ("duration_seconds", None, b"3"),
        ("local_storage_key", None, key.as_bytes()),
        ("audio", Some("a.webm"), &webm(10_000, 1)),
    ]);
    let r = client()
        .post(server.url("/api/v1/recordings/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let listed: Vec<Value> = server.get_json("/api/v1/recordings").await;
    assert!(listed.is_empty(), "no recording");
    assert!(
        files_under(&audio_dir.join("tmp")).is_empty(),
        "no file left"
    );
    assert!(files_under(&audio_dir.join("objects")).is_empty());
}
