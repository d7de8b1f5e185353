//! GDPR endpoint benchmark (`cargo bench --bench gdpr`): `POST
//! /api/gdpr/delete` on `dormant serve` (release binary; local store on
//! disk and on tmpfs, and Azurite) with
//! real RS256 tokens, 200 keep-alive connections on loopback; requests/s,
//! p50/p99 latency, peak RSS.
//!
//! Every request does the whole job: verify the token (cached JWKS), count
//! it in the subject's store-backed hourly window, create or find the
//! request, enqueue the erasure, append the audit record. Subjects are
//! distinct (at most 10 requests each, the hourly limit).
//!
//! Two loads, the same client for dormant and the peer:
//! - closed loop: `wrk` (Debian's package; a C client, so the two cores go
//!   to the server, not to the load), 200 connections, 2 threads, each
//!   request with the next token of a list: the saturation throughput,
//!   where Little's law fixes the mean latency at 200 / throughput;
//! - open loop (wrk2-style): in process, 200 connections at 1,000, 2,000
//!   and 4,000 requests/s offered, latency counted from each request's
//!   scheduled time (a server that falls behind is charged for the wait):
//!   the latency at a load the server carries, and the highest offered
//!   rate whose p99 meets the 25 ms goal.
//!
//! Peers measured in the same run with the same client:
//! - dormant's bare readiness route (`GET /`): the floor of the HTTP stack;
//! - a Python standard-library server verifying the same tokens with
//!   `cryptography` (RS256, iss, aud, exp/nbf, auth_time) and answering 202
//!   without storing anything: a lower bound for a verifier in the language
//!   of most custom-handler samples (it does less work than dormant).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use support::{free_port, status_mib, stop};

/// The tests' token signer.
#[path = "../tests/support/jwt.rs"]
mod jwt;
use jwt::Signer;

/// The tests' Azurite (the pinned copy in tools/azurite, in memory).
#[path = "../tests/it/azurite.rs"]
#[allow(dead_code)]
mod azurite;

const CONNECTIONS: usize = 200;
const PER_CONNECTION: usize = 60;
/// Closed loop: how long wrk runs, and distinct subjects in its token
/// list (ten requests each, the hourly limit): enough that no subject is
/// asked an eleventh time below 20,000 requests/s.
const CLOSED_SECONDS: u32 = 5;
const CLOSED_SUBJECTS: usize = 10_000;

/// wrk's script: each thread walks the token list from its own offset,
/// two threads interleaved, round after round; a subject comes back only
/// after every other one (never two of its requests at once, at most ten
/// in `CLOSED_SUBJECTS * 10` requests). `done` prints the figures as JSON
/// (latency in microseconds, from wrk's own histogram).
const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  tokens = {}
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  step = tonumber(args[2])
  counter = id
  method = args[3]
end
function request()
  local headers = {}
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1]
  end
  counter = counter + step
  return wrk.format(method, nil, headers, method == "POST" and "" or nil)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;
/// Open loop: the rates offered (requests/s over `CONNECTIONS`
/// connections), each with subjects of its own; `GDPR_BENCH_RATES`
/// (comma-separated) overrides.
const RATES: [u32; 3] = [1_000, 2_000, 4_000];
/// The latency goal (issue 6): p99 under 25 ms at 200 connections.
const GOAL_P99_MS: f64 = 25.0;
const ISSUER: &str = "https://bench.b2clogin.com/tenant/v2.0/";
const AUDIENCE: &str = "3c1d7a55-0000-4000-8000-00000000a0d1";
/// The user flow of the bench's tokens (`tfp`), the one dormant admits.
const POLICY: &str = "B2C_1_susi";

const PEER: &str = r#"
import base64, json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from cryptography.hazmat.primitives.asymmetric import rsa, padding
from cryptography.hazmat.primitives import hashes
def b64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
KEY = rsa.RSAPublicNumbers(int.from_bytes(b64(os.environ["PEER_E"]), "big"), int.from_bytes(b64(os.environ["PEER_N"]), "big")).public_key()
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
    def do_GET(self): self._send(200, "ready")
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n: self.rfile.read(n)
        try:
            token = self.headers["Authorization"].split(" ", 1)[1]
            h, p, s = token.split(".")
            header = json.loads(b64(h))
            assert header["alg"] == "RS256" and header["kid"] == "k1"
            KEY.verify(b64(s), (h + "." + p).encode(), padding.PKCS1v15(), hashes.SHA256())
            c = json.loads(b64(p)); now = time.time()
            assert c["iss"] == os.environ["PEER_ISS"] and c["aud"] == os.environ["PEER_AUD"]
            assert c["exp"] + 300 > now and c.get("nbf", 0) - 300 < now and now - c["auth_time"] < 900
            self._send(202, {"requestId": c["sub"], "status": "accepted"})
        except Exception:
            self._send(401, {"error": {"code": "invalid-token", "message": "no"}})
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not ready");
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: usize,
    total: usize,
}

/// The open loop (wrk2-style): `CONNECTIONS` tasks, each with its own
/// keep-alive connection, each sending its share of `tokens` every `pace`
/// (`CONNECTIONS / pace` requests/s in all, connections staggered). Each
/// request has a scheduled time and its latency counts from then, so a
/// server that falls behind is charged for the wait. Every connection is
/// opened and used once (`GET /`, untimed) before the clock starts.
async fn open_loop(url: String, tokens: Arc<Vec<String>>, pace: Duration) -> Load {
    let ready = Arc::new(tokio::sync::Barrier::new(CONNECTIONS + 1));
    let root = url::Url::parse(&url).expect("url").join("/").expect("root");
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (url, tokens) = (url.clone(), tokens.clone());
        let (ready, root) = (ready.clone(), root.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .http1_only()
                .build()
                .expect("client");
            let warm = client.get(root).send().await.expect("warm-up");
            let _ = warm.bytes().await;
            ready.wait().await;
            let start = Instant::now();
            let mut lat = Vec::with_capacity(PER_CONNECTION);
            let mut ok = 0;
            for i in 0..PER_CONNECTION {
                let r = client
                    .post(&url)
                    .bearer_auth(&tokens[(c * PER_CONNECTION + i) % tokens.len()]);
                let due = start + pace * i as u32 + pace * c as u32 / CONNECTIONS as u32;
                tokio::time::sleep_until(due.into()).await;
                let resp = r.send().await.expect("request");
                let good = resp.status().is_success();
                let _ = resp.bytes().await;
                lat.push(due.elapsed().as_secs_f64() * 1000.0);
                ok += usize::from(good);
            }
            (lat, ok)
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut all = Vec::new();
    let mut ok = 0;
    for t in tasks {
        let (lat, n) = t.await.expect("task");
        all.extend(lat);
        ok += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Load {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        ok,
        total: all.len(),
    }
}

/// The closed loop through `wrk` (`CONNECTIONS` connections, 2 threads,
/// `CLOSED_SECONDS`): each request carries the next token of `tokens`
/// (a file, one per line; empty: no Authorization header).
fn wrk_closed(method: &str, url: &str, tokens: &std::path::Path, script: &std::path::Path) -> Load {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{CLOSED_SECONDS}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .arg("--")
        .arg(tokens)
        .args(["2", method])
        .output()
        .expect("run wrk (Debian package `wrk`)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no figures: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("wrk JSON");
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let total = n("requests") as usize;
    Load {
        rps: n("requests") / (n("duration_us") / 1e6),
        p50_ms: n("p50_us") / 1000.0,
        p99_ms: n("p99_us") / 1000.0,
        ok: total.saturating_sub((n("non2xx") + n("errors")) as usize),
        total,
    }
}

/// The issuer's metadata and JWKS over HTTPS (a fresh CA, trusted by
/// dormant through `DORMANT_CA_FILE`).
async fn issuer(jwk: serde_json::Value, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("https://{}", listener.local_addr().expect("addr"));
    let metadata = json!({"issuer": ISSUER, "jwks_uri": format!("{base}/keys")});
    let jwks = json!({"keys": [jwk]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(metadata) }),
        )
        .route("/keys", get(move || async move { axum::Json(jwks) }));
    let (acceptor, ca_path) = support::https::test_tls(dir, "ca.pem");
    support::https::serve_https(listener, acceptor, app);
    (base, ca_path)
}

fn main() {
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let key = Signer::new("k1");
    let now = chrono::Utc::now().timestamp();
    let rates: Vec<u32> = std::env::var("GDPR_BENCH_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| RATES.to_vec());
    // One subject per 10 requests: the hourly limit is never the bottleneck.
    // Each open-loop rate's subjects first, then the closed loop's.
    let paced_subjects = CONNECTIONS * PER_CONNECTION / 10;
    let signer = |i: usize| {
        key.token(&json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600, "nbf": now - 60,
            "auth_time": now - 10, "sub": format!("5b3a1c2d-3333-4e4e-8f8f-{i:012x}"), "tfp": POLICY}))
    };
    let open_subjects = rates.len() * paced_subjects;
    let tokens: Vec<String> = (0..open_subjects + CLOSED_SUBJECTS).map(signer).collect();
    // Per rate, connection c sends slots c*PER_CONNECTION.. : each
    // subject's ten requests come from one connection, as one user's would.
    let slots = CONNECTIONS * PER_CONNECTION;
    let paced_tokens: Vec<(u32, Arc<Vec<String>>)> = rates
        .iter()
        .enumerate()
        .map(|(k, rate)| {
            let first = k * paced_subjects;
            let list = (0..slots)
                .map(|slot| tokens[first + slot / 10].clone())
                .collect();
            (*rate, Arc::new(list))
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    // wrk's inputs: its script, the closed loop's tokens (one line a
    // subject), and no tokens at all.
    let script = dir.path().join("gdpr.lua");
    std::fs::write(&script, WRK_SCRIPT).expect("script");
    let closed_tokens = dir.path().join("tokens.txt");
    std::fs::write(&closed_tokens, tokens[open_subjects..].join("\n") + "\n").expect("tokens");
    let no_tokens = dir.path().join("none.txt");
    std::fs::write(&no_tokens, "").expect("empty");
    // Every rate in turn, against `url`.
    let sweep = |url: String| {
        let paced_tokens = paced_tokens.clone();
        async move {
            let mut out = Vec::new();
            for (rate, tokens) in paced_tokens {
                let pace = Duration::from_secs_f64(CONNECTIONS as f64 / f64::from(rate));
                out.push((rate, open_loop(url.clone(), tokens, pace).await));
            }
            out
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (base, ca) = issuer(key.jwk("k1"), dir.path()).await;
        // The local store fsyncs every write (crash safety for the CLI); the
        // same run on tmpfs separates the disk from the code path, and the
        // run on Azurite is the store the Functions host would use locally
        // (Node, on the same two cores).
        let shm = std::path::Path::new("/dev/shm");
        let tmpfs = tempfile::tempdir_in(if shm.is_dir() { shm } else { dir.path() }).expect("tmpfs dir");
        let mut runs = Vec::new();
        // `GDPR_BENCH_STORES=disk,tmpfs,azurite` (the default) picks the runs.
        let stores = std::env::var("GDPR_BENCH_STORES").unwrap_or_else(|_| "disk,tmpfs,azurite".into());
        let all = [
            ("disk", ("DORMANT_STORE_DIR", dir.path().join("store").display().to_string())),
            ("tmpfs", ("DORMANT_STORE_DIR", tmpfs.path().join("store").display().to_string())),
            ("azurite", ("AzureWebJobsStorage", String::new())),
        ];
        for (label, (key, mut value)) in all.into_iter().filter(|(l, _)| stores.split(',').any(|s| s == *l)) {
            if label == "azurite" {
                value = azurite::azurite().connection_string();
            }
            let port = free_port();
            let child = Command::new(env!("CARGO_BIN_EXE_dormant"))
                .arg("serve")
                .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
                .env("DORMANT_TENANT_ID", "8f0c2d2e-1111-4c4c-9d9d-123456789abc")
                .env(key, value)
                .env("DORMANT_GDPR_ISSUER", ISSUER)
                .env("DORMANT_GDPR_AUDIENCE", AUDIENCE)
                .env("DORMANT_GDPR_POLICIES", POLICY)
                .env("DORMANT_GDPR_METADATA_URL", format!("{base}/.well-known/openid-configuration"))
                .env("DORMANT_CA_FILE", &ca)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn dormant");
            wait_ready(port);
            let pid = child.id();
            let ready = wrk_closed("GET", &format!("http://127.0.0.1:{port}/"), &no_tokens, &script);
            let url = format!("http://127.0.0.1:{port}/api/gdpr/delete");
            let delete = wrk_closed("POST", &url, &closed_tokens, &script);
            // Azurite (one Node thread) cannot take the open loop's rates.
            let paced = if label == "azurite" { Vec::new() } else { sweep(url).await };
            let rss = status_mib(pid, "VmHWM");
            stop(child);
            runs.push((label, ready, delete, paced, rss));
        }

        // Verification alone, in process: the cost a request pays before
        // any storage (keys cached after the first call).
        let gdpr = dormant::config::Gdpr {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            metadata_url: url::Url::parse(&format!("{base}/.well-known/openid-configuration")).expect("url"),
            max_auth_age_secs: 600,
            policies: vec![POLICY.into()],
        };
        let verifier = dormant::gdpr::token::TokenVerifier::new(
            &gdpr,
            dormant::graph::build_http_client(Some(&ca)).expect("client"),
        );
        let now = chrono::Utc::now();
        verifier.verify(&tokens[0], now).await.expect("valid");
        let samples = 5000;
        let t = Instant::now();
        for token in tokens.iter().take(samples) {
            verifier.verify(token, now).await.expect("valid");
        }
        let verify_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;

        let peer_port = free_port();
        let peer = Command::new("python3")
            .arg("-c")
            .arg(PEER)
            .env("PORT", peer_port.to_string())
            .env("PEER_N", &key.n)
            .env("PEER_E", &key.e)
            .env("PEER_ISS", ISSUER)
            .env("PEER_AUD", AUDIENCE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python peer");
        wait_ready(peer_port);
        let peer_pid = peer.id();
        let python = wrk_closed("POST", &format!("http://127.0.0.1:{peer_port}/"), &closed_tokens, &script);
        let python_paced = sweep(format!("http://127.0.0.1:{peer_port}/")).await;
        let peer_rss = status_mib(peer_pid, "VmHWM");
        stop(peer);

        println!("| measure ({CONNECTIONS} connections) | req/s | p50 | p99 | ok | peak RSS |");
        println!("|---|---|---|---|---|---|");
        for (label, ready, delete, paced, rss) in &runs {
            println!(
                "| dormant POST /api/gdpr/delete, store on {label} (verify + limit + state + queue + audit), closed loop | {:.0} | {:.2} ms | {:.2} ms | {}/{} | {rss:.1} MiB |",
                delete.rps, delete.p50_ms, delete.p99_ms, delete.ok, delete.total
            );
            for (rate, p) in paced {
                println!(
                    "| dormant POST /api/gdpr/delete, store on {label}, open loop at {rate} req/s offered | {:.0} | {:.2} ms | {:.2} ms | {}/{} | {rss:.1} MiB |",
                    p.rps, p.p50_ms, p.p99_ms, p.ok, p.total
                );
            }
            println!(
                "| dormant GET / (readiness, same process, store on {label}) | {:.0} | {:.2} ms | {:.2} ms | {}/{} | {rss:.1} MiB |",
                ready.rps, ready.p50_ms, ready.p99_ms, ready.ok, ready.total
            );
        }
        println!(
            "| python http.server + cryptography, verify only | {:.0} | {:.2} ms | {:.2} ms | {}/{} | {peer_rss:.1} MiB |",
            python.rps, python.p50_ms, python.p99_ms, python.ok, python.total
        );
        for (rate, p) in &python_paced {
            println!(
                "| python http.server + cryptography, verify only, open loop at {rate} req/s offered | {:.0} | {:.2} ms | {:.2} ms | {}/{} | {peer_rss:.1} MiB |",
                p.rps, p.p50_ms, p.p99_ms, p.ok, p.total
            );
        }
        println!("| dormant token verification alone, one core, in process | {:.0}/s | {verify_us:.1} µs each | — | {samples}/{samples} | — |", 1e6 / verify_us);
        // The goal, per server: the highest offered rate answered in full
        // with p99 under it.
        let best = |paced: &[(u32, Load)]| {
            paced
                .iter()
                .filter(|(_, p)| p.ok == p.total && p.p99_ms < GOAL_P99_MS)
                .map(|(rate, _)| *rate)
                .max()
                .map_or_else(|| "none".to_owned(), |r| format!("{r} req/s"))
        };
        println!();
        for (label, _, _, paced, _) in runs.iter().filter(|r| !r.3.is_empty()) {
            println!("highest offered rate with p99 < {GOAL_P99_MS} ms, dormant on {label}: {}", best(paced));
        }
        println!("highest offered rate with p99 < {GOAL_P99_MS} ms, python verifier: {}", best(&python_paced));
    });
}
