//! Custom-handler benchmarks (`cargo bench --bench host`):
//! - cold start: exec of `dormant serve` → first answer to `GET /`, median of 20;
//! - idle RSS of `dormant serve`; release binary size;
//! - envelope round trip: POSTs of a queue envelope to a no-op function on
//!   loopback, requests/s.
//!
//! The peer, measured in the same run with the same client, is the smallest
//! custom handler one can write in Python's standard library (the language of
//! most custom-handler samples). Figures go to BENCHMARKS.md as ratios.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dormant::host::{Application, Functions, Outcome};

mod support;
use support::{free_port, status_mib, stop};

const STARTS: usize = 20;
const LOAD_SECS: u64 = 5;
const CONNECTIONS: usize = 16;

const PEER: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self._send(200, "ready")
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        msg = req["Data"]["message"]
        while isinstance(msg, str):
            msg = json.loads(msg)
        self._send(200, {"Outputs": {}, "Logs": [], "ReturnValue": None})
ThreadingHTTPServer(("127.0.0.1", int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])), H).serve_forever()
"#;

fn dormant_cmd(port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dormant"));
    c.arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("DORMANT_TENANT_ID", "8f0c2d2e-1111-4c4c-9d9d-123456789abc")
        .env(
            "DORMANT_STORE_DIR",
            std::env::temp_dir().join("dormant-bench"),
        )
        .env("RUST_LOG", "warn");
    c
}

fn peer_cmd(port: u16) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(PEER)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string());
    c
}

/// Polls `GET /` with a raw socket as fast as it can; returns when any HTTP
/// answer arrives (that is all the host waits for).
fn wait_ready(port: u16, deadline: Instant) -> bool {
    use std::io::{Read as _, Write as _};
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

fn cold_start_ms(make: impl Fn(u16) -> Command) -> f64 {
    let mut samples = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        let port = free_port();
        let started = Instant::now();
        let child = spawn(make(port));
        assert!(
            wait_ready(port, started + Duration::from_secs(30)),
            "not ready"
        );
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        stop(child);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn idle_rss_mib(make: impl Fn(u16) -> Command) -> f64 {
    let port = free_port();
    let child = spawn(make(port));
    assert!(wait_ready(port, Instant::now() + Duration::from_secs(30)));
    std::thread::sleep(Duration::from_secs(1));
    let mib = status_mib(child.id(), "VmRSS");
    stop(child);
    mib
}

fn envelope() -> String {
    let message = serde_json::json!({
        "v": 1, "kind": "notify", "tenant": "8f0c2d2e-1111-4c4c-9d9d-123456789abc",
        "user": "5b3a1c2d-3333-4e4e-8f8f-0123456789ab", "case": "c-1",
        "run": "20261122T020000Z-a1b2c3", "notBefore": "2026-11-22T02:00:00Z"
    });
    serde_json::json!({
        "Data": {"message": message.to_string()},
        "Metadata": {"DequeueCount": "1", "Id": "\"d6f2a9b0\"", "PopReceipt": "\"AgAAAA\""}
    })
    .to_string()
}

/// Requests/s over `LOAD_SECS` with `CONNECTIONS` keep-alive connections.
async fn round_trips(url: String) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let body = envelope();
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(LOAD_SECS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, body, done) = (client.clone(), url.clone(), body.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("POST");
                assert!(r.status().is_success());
                let _ = r.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs benches with `--test`: keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let binary_mib = std::fs::metadata(env!("CARGO_BIN_EXE_dormant"))
        .map(|m| m.len() as f64 / 1_048_576.0)
        .unwrap_or(0.0);
    let cold_dormant = cold_start_ms(dormant_cmd);
    let cold_peer = cold_start_ms(peer_cmd);
    let rss_dormant = idle_rss_mib(dormant_cmd);
    let rss_peer = idle_rss_mib(peer_cmd);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (rps_dormant, rps_peer) = rt.block_on(async {
        let app = Application::bind(0).await.expect("bind");
        let url = format!("http://127.0.0.1:{}/Work", app.port());
        let functions =
            Functions::new().queue("Work", "message", |_| async { Ok(Outcome::default()) });
        tokio::spawn(app.serve(functions, std::future::pending()));
        let dormant = round_trips(url).await;

        let port = free_port();
        let peer = spawn(peer_cmd(port));
        assert!(wait_ready(port, Instant::now() + Duration::from_secs(30)));
        let python = round_trips(format!("http://127.0.0.1:{port}/Work")).await;
        stop(peer);
        (dormant, python)
    });

    println!("| measure | dormant | python peer | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| cold start, exec → first GET / answer (median of {STARTS}) | {cold_dormant:.1} ms | {cold_peer:.1} ms | {:.1}× faster |",
        cold_peer / cold_dormant
    );
    println!(
        "| idle RSS | {rss_dormant:.1} MiB | {rss_peer:.1} MiB | {:.1}× less |",
        rss_peer / rss_dormant
    );
    println!(
        "| queue envelope round trip, {CONNECTIONS} connections, {LOAD_SECS} s | {rps_dormant:.0} req/s | {rps_peer:.0} req/s | {:.1}× |",
        rps_dormant / rps_peer
    );
    println!("| binary size (release, stripped) | {binary_mib:.1} MiB | — | — |");
}
