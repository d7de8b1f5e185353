//! The shared harness: plays the Functions host against `dormant serve`
//! started as a child process, or against an in-process server.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TENANT: &str = "8f0c2d2e-1111-4c4c-9d9d-123456789abc";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(path: &str) -> String {
    let full = repo_root().join("tests/fixtures").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `dormant serve` as the host starts it.
pub struct ServeProcess {
    pub port: u16,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `dormant serve` with a clean environment plus `env`, on a free
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`, and waits until `GET /` answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut process = Self::spawn(port, env);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(process.url("/")).send().await {
                assert!(r.status().is_success(), "GET / answered {}", r.status());
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "dormant serve exited early with {status}: {:?}",
                    process.lines()
                );
            }
            assert!(Instant::now() < deadline, "dormant serve not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Spawns without waiting (for tests of start-up failures).
    pub fn spawn(port: u16, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dormant"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("RUST_LOG", "info")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dormant serve");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().expect("log sink").push(line);
                }
            });
        }
        Self {
            port,
            child,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every line written so far, stdout and stderr.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().expect("log sink").clone()
    }

    /// Waits for the process to exit on its own and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits until a line containing `needle` was written.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} in {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, as the host does when it recycles a worker.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The minimal valid environment for `dormant serve`.
pub fn minimal_env(store_dir: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DORMANT_TENANT_ID", TENANT.to_owned()),
        ("DORMANT_STORE_DIR", store_dir.to_owned()),
    ]
}

pub fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A validated configuration for the test tenant on a local store in `dir`.
pub fn local_config(dir: &std::path::Path) -> dormant::config::Config {
    dormant::config::Config::load(&dormant::config::Sources::from_env(
        None,
        vec![
            ("DORMANT_TENANT_ID".into(), TENANT.into()),
            ("DORMANT_STORE_DIR".into(), dir.display().to_string()),
        ],
    ))
    .expect("test configuration")
}

#[path = "../support/https.rs"]
mod https;
pub use https::{serve_https, test_tls};
