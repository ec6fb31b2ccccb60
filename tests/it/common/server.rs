//! The real `clinscribe` binary as a process serving on a random loopback
//! port: shared by the integration tests and the load generator
//! (`benches/loadgen.rs` includes this file).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the server's log (stderr) goes.
pub enum Log<'a> {
    /// The test's own stderr.
    Inherit,
    /// A file.
    File(&'a Path),
}

/// The path of the `clinscribe` binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_clinscribe")
}

/// The real binary, serving on a random loopback port.
pub struct ServerProcess {
    pub child: Child,
    pub base_url: String,
    /// `http://host:port/metrics`, when `PWA_METRICS_BIND` is set.
    pub metrics_url: Option<String>,
    _audio: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts `clinscribe serve` on `db_path` and waits until it listens.
    pub fn start(db_path: &Path) -> Self {
        Self::start_with_env(db_path, &[])
    }

    pub fn start_with_env(db_path: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_url(&format!("sqlite://{}", db_path.display()), env)
    }

    /// Starts `clinscribe serve` on the database at `database_url` (audio in a
    /// temp dir of its own unless `env` sets `PWA_AUDIO_DIR`).
    pub fn start_url(database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logging(database_url, env, None)
    }

    /// Like [`ServerProcess::start_url`], with the server's log (stderr, at
    /// `PWA_LOG` as `env` sets it, `warn` otherwise) written to `log` when given.
    pub fn start_logging(database_url: &str, env: &[(&str, &str)], log: Option<&Path>) -> Self {
        let log = log.map_or(Log::Inherit, Log::File);
        Self::spawn(Path::new(binary()), database_url, env, log)
    }

    /// Starts `binary` (this build, or another to compare with) serving
    /// `database_url`, and waits until it listens.
    pub fn spawn(binary: &Path, database_url: &str, env: &[(&str, &str)], log: Log) -> Self {
        let audio = (!env.iter().any(|(k, _)| *k == "PWA_AUDIO_DIR"))
            .then(|| tempfile::tempdir().expect("audio dir"));
        let mut command = Command::new(binary);
        if let Some(audio) = &audio {
            command.env("PWA_AUDIO_DIR", audio.path());
        }
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("PWA_DATABASE_URL", database_url)
            .env("PWA_LOG", "warn")
            // No transcription unless a test asks for it (the default would
            // obtain a model).
            .env("PWA_TRANSCRIBE_ENGINE", "none")
            // The original's single clinician, as the contract's tests expect,
            // unless a test signs in (PWA_AUTH=on).
            .env("PWA_AUTH", "off")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(match log {
                Log::Inherit => Stdio::inherit(),
                Log::File(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            })
            .spawn()
            .expect("spawn clinscribe");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut metrics_url = None;
        let base_url = loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read listening line");
            if let Some(url) = line.trim().strip_prefix("metrics listening on ") {
                metrics_url = Some(url.to_owned());
                continue;
            }
            break line
                .trim()
                .strip_prefix("clinscribe listening on ")
                .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
                .to_owned();
        };
        // Keep draining stdout so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        Self {
            child,
            base_url,
            metrics_url,
            _audio: audio,
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
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
        let _audio = self._audio.take();
        std::mem::forget(self);
        code
    }

    /// Waits for an exit that a signal sent elsewhere asked for; its exit code.
    pub fn terminate_after_signal(mut self) -> Option<i32> {
        let code = wait_with_timeout(&mut self.child, Duration::from_secs(20));
        let _audio = self._audio.take();
        std::mem::forget(self);
        code
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        let _audio = self._audio.take();
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
