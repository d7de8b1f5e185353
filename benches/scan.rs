//! Scan benchmark (`cargo bench --bench scan`): dormant's full scan of a
//! simulated tenant against a sequential peer, in the same run, on the same
//! simulator.
//!
//! - The simulator is `dormant sim` (its own process, so its memory is not
//!   dormant's) with `--latency-ms` added to every request: 150 ms a page by
//!   default, Graph's throttling on.
//! - dormant: `dormant scan` (release binary, embedded local store, default
//!   settings but `policy.activity_sources = signin`, the rule the peer can
//!   apply). Wall time, its peak RSS from `wait4` (`ru_maxrss`), Graph
//!   requests as the simulator counted them, 429s, and failed requests after
//!   retries (a call that still fails makes the scan exit non-zero; a failed
//!   enrichment read is reported as a gap in `summary.json`).
//! - Peer: `benches/scan_peer.py`, Microsoft's Python `msgraph-sdk` with its
//!   PageIterator, one request at a time, same `$select`, same first-stage
//!   rule on the sign-in fields.
//! - Both sets are compared: dormant's CSV rows that are not plainly active
//!   (it also lists plainly active unmanaged guests, for review) against the
//!   peer's, by count and SHA-256 of the sorted ids.
//!
//! Environment: `SCAN_BENCH_USERS` (default 1,000,000), `SCAN_BENCH_LATENCY_MS`
//! (150), `SCAN_BENCH_CONCURRENCY` (dormant's `--concurrency`; its default
//! otherwise), `SCAN_BENCH_PEER=0` to skip the peer, `SCAN_BENCH_SEED` (42),
//! `SCAN_BENCH_BUDGET_SHARE` (dormant's `DORMANT_GRAPH_BUDGET_SHARE`, default
//! 0.5), `SCAN_BENCH_PYTHON` (default `.tools/pyenv/bin/python`, which
//! `scripts/test.sh` installs from tests/conformance/requirements.txt),
//! `SCAN_BENCH_PEER_MAX_SECS` (no cap by default): the peer stops paging after
//! that long; the table then gives the users it judged, its measured pace and
//! the time that pace needs for the whole tenant (marked as a projection),
//! and compares both sets over the users the peer did judge.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

mod support;
use support::status_mib;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a finished child cost: wall time, exit status and peak RSS.
struct Finished {
    seconds: f64,
    success: bool,
    peak_rss_mib: f64,
}

/// Waits for `child` with `wait4`, which reports the child's own peak RSS
/// (`ru_maxrss`, KiB on Linux): no polling gap can miss the peak.
fn wait_measured(child: Child, started: Instant) -> Finished {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; both pointers are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    // The child is reaped; `Child` must not wait again.
    std::mem::forget(child);
    Finished {
        seconds: started.elapsed().as_secs_f64(),
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// `VmRSS` of `pid` every half second until it is gone: where in the run
/// the peak falls (paging or the final report), which `wait4` cannot say.
fn rss_sampler(pid: u32) -> std::thread::JoinHandle<Vec<(f64, f64)>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut samples = Vec::new();
        loop {
            let mib = status_mib(pid, "VmRSS");
            if mib == 0.0 {
                return samples;
            }
            samples.push((started.elapsed().as_secs_f64(), mib));
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// The simulator as its own process, with the settings it printed.
struct SimProcess {
    child: Child,
    settings: Vec<(String, String)>,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl SimProcess {
    fn start(bin: &Path, dir: &Path, users: u32, seed: u64, latency_ms: u64) -> SimProcess {
        let mut child = Command::new(bin)
            .args([
                "sim",
                "--users",
                &users.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .args(["--latency-ms", &latency_ms.to_string()])
            .arg("--dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dormant sim");
        let mut stdout = BufReader::new(child.stdout.take().expect("sim stdout"));
        let mut settings = Vec::new();
        // The last setting it always prints.
        while !settings
            .iter()
            .any(|(k, _): &(String, String)| k == "DORMANT_GDPR_METADATA_URL")
        {
            let mut line = String::new();
            if stdout.read_line(&mut line).expect("read sim stdout") == 0 {
                panic!("dormant sim exited before printing its settings");
            }
            if let Some((k, v)) = line.trim_end().split_once('=') {
                settings.push((k.to_owned(), v.to_owned()));
            }
        }
        SimProcess {
            child,
            settings,
            _stdout: stdout,
        }
    }

    fn get(&self, key: &str) -> &str {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the simulator did not print {key}"))
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulator's control API (`/_sim/stats`), over its own CA.
struct Control {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Control {
    fn new(sim: &SimProcess) -> Control {
        let pem = std::fs::read(sim.get("DORMANT_CA_FILE")).expect("sim CA");
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Control {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            http,
            base: sim.get("DORMANT_SIM_CONTROL").to_owned(),
        }
    }

    fn reset_stats(&self) {
        let status = self.rt.block_on(async {
            self.http
                .delete(format!("{}/stats", self.base))
                .send()
                .await
                .expect("reset stats")
                .status()
        });
        assert!(status.is_success(), "reset stats: {status}");
    }

    fn stats(&self) -> serde_json::Value {
        self.rt.block_on(async {
            self.http
                .get(format!("{}/stats", self.base))
                .send()
                .await
                .expect("sim stats")
                .json()
                .await
                .expect("sim stats JSON")
        })
    }
}

/// Graph requests, 429s and injected faults the simulator saw.
#[derive(Debug, Clone, Copy, Default)]
struct Served {
    graph: u64,
    throttled: u64,
    faults: u64,
}

impl Served {
    fn from(stats: &serde_json::Value) -> Served {
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        Served {
            graph: n("graphRequests"),
            throttled: n("throttled"),
            faults: n("faultsInjected"),
        }
    }
}

struct DormantRun {
    finished: Finished,
    served: Served,
    summary: serde_json::Value,
    /// Ids of the CSV rows that are not plainly active (the peer's set).
    listed: BTreeSet<String>,
    /// Rows in the CSV (also plainly active unmanaged guests).
    rows: u64,
    /// Enrichment reads that failed after retries (summary warning).
    gaps: u64,
}

fn run_dormant(
    bin: &Path,
    sim: &SimProcess,
    control: &Control,
    store: &Path,
    concurrency: Option<usize>,
) -> DormantRun {
    control.reset_stats();
    let mut cmd = Command::new(bin);
    cmd.arg("scan");
    if let Some(c) = concurrency {
        cmd.args(["--concurrency", &c.to_string()]);
    }
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(sim.settings.iter().map(|(k, v)| (k, v)))
        .env("DORMANT_STORE_DIR", store)
        .env("DORMANT_POLICY__ACTIVITY_SOURCES", "signin")
        .env("RUST_LOG", "warn")
        .envs(
            std::env::var("SCAN_BENCH_BUDGET_SHARE")
                .ok()
                .map(|s| ("DORMANT_GRAPH_BUDGET_SHARE", s)),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let child = cmd.spawn().expect("start dormant scan");
    let sampler = rss_sampler(child.id());
    let finished = wait_measured(child, started);
    let samples = sampler.join().expect("RSS sampler");
    if let Some((at, mib)) = samples.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)) {
        let at_half = samples
            .iter()
            .filter(|(t, _)| *t <= finished.seconds / 2.0)
            .map(|(_, m)| *m)
            .fold(0.0, f64::max);
        eprintln!(
            "dormant RSS: sampled peak {mib:.1} MiB at {at:.0} s of {:.0} s; highest in the first half {at_half:.1} MiB",
            finished.seconds
        );
    }
    let served = Served::from(&control.stats());
    let reports = store.join("dormant-reports").join("latest");
    let summary: serde_json::Value = std::fs::read(reports.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let gaps = summary["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str())
        .filter(|w| w.contains("could not be fully looked up"))
        .filter_map(|w| w.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let (listed, rows) = match summary["startedAt"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    {
        Some(now) => not_plainly_active(&reports.join("inactive-users.csv"), now.into()),
        None => (BTreeSet::new(), 0),
    };
    DormantRun {
        finished,
        served,
        summary,
        listed,
        rows,
        gaps,
    }
}

/// The ids of CSV rows that dormant's first stage did not find plainly
/// active: a row is plainly active when its last activity is under 90 days
/// old or the account is within the 30-day grace (the defaults), which only
/// unmanaged guests held for review are.
fn not_plainly_active(csv: &Path, now: DateTime<Utc>) -> (BTreeSet<String>, u64) {
    let mut reader = csv::Reader::from_path(csv).expect("dormant's CSV");
    let headers = reader.headers().expect("CSV header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("CSV has no {name}"))
    };
    let (id, created, days) = (col("userId"), col("createdDateTime"), col("daysInactive"));
    let mut set = BTreeSet::new();
    let mut rows = 0;
    for record in reader.records() {
        let r = record.expect("CSV row");
        rows += 1;
        let recent = r[days].parse::<i64>().is_ok_and(|d| d < 90);
        let new = DateTime::parse_from_rfc3339(&r[created])
            .is_ok_and(|c| (now.date_naive() - c.date_naive()).num_days() < 30);
        if !recent && !new {
            set.insert(r[id].to_ascii_lowercase());
        }
    }
    (set, rows)
}

fn digest(ids: &BTreeSet<String>) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

struct PeerRun {
    finished: Finished,
    served: Served,
    out: serde_json::Value,
    ids: BTreeSet<String>,
    /// Every user the peer judged, when it stopped at its time cap.
    judged: Option<BTreeSet<String>>,
}

fn read_ids(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn run_peer(
    python: &Path,
    sim: &SimProcess,
    control: &Control,
    dir: &Path,
    max_secs: Option<u64>,
) -> PeerRun {
    control.reset_stats();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scan_peer.py");
    let ids_file = dir.join("peer-ids.txt");
    let judged_file = dir.join("peer-judged.txt");
    let started = Instant::now();
    let mut command = Command::new(python);
    if let Some(secs) = max_secs {
        command.env("PEER_MAX_SECONDS", secs.to_string());
    }
    let child = command
        .arg(&script)
        .envs(sim.settings.iter().map(|(k, v)| (k, v)))
        .env("PEER_IDS_OUT", &ids_file)
        .env("PEER_SCANNED_OUT", &judged_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python peer");
    let pid = child.id();
    // Read its one JSON line on a thread: the pipe must not fill while we wait.
    let mut child = child;
    let stdout = child.stdout.take().expect("peer stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text);
        text
    });
    let finished = wait_measured(child, started);
    let text = reader.join().expect("peer reader");
    let served = Served::from(&control.stats());
    let out: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("peer (pid {pid}) printed no JSON: {text}"));
    let ids = read_ids(&ids_file);
    let judged = (out["partial"] == true).then(|| read_ids(&judged_file));
    PeerRun {
        finished,
        served,
        out,
        ids,
        judged,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness has no filters.
    let users: u32 = env_or("SCAN_BENCH_USERS", 1_000_000);
    let latency: u64 = env_or("SCAN_BENCH_LATENCY_MS", 150);
    let seed: u64 = env_or("SCAN_BENCH_SEED", 42);
    let concurrency: Option<usize> = std::env::var("SCAN_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok());
    let with_peer = std::env::var("SCAN_BENCH_PEER").as_deref() != Ok("0");
    let peer_max_secs: Option<u64> = std::env::var("SCAN_BENCH_PEER_MAX_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_dormant"));
    let python = std::env::var_os("SCAN_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/pyenv/bin/python"));
    if with_peer && !python.exists() {
        panic!(
            "{} is missing: run scripts/test.sh once (it installs msgraph-sdk), set SCAN_BENCH_PYTHON, or SCAN_BENCH_PEER=0",
            python.display()
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let sim = SimProcess::start(&bin, dir.path(), users, seed, latency);
    let sim_start = t.elapsed().as_secs_f64();
    let control = Control::new(&sim);
    let sim_pid = sim.child.id();
    eprintln!(
        "scan bench: {users} users, {latency} ms a request, simulator up in {sim_start:.1} s ({:.0} MiB RSS)",
        status_mib(sim_pid, "VmRSS")
    );

    let store = dir.path().join("store");
    let d = run_dormant(&bin, &sim, &control, &store, concurrency);
    let s = &d.summary;
    eprintln!(
        "dormant: {:.1} s, exit ok {}, {:.1} MiB peak RSS, {} Graph requests ({} 429), {} scanned, {} rows, {} not plainly active",
        d.finished.seconds,
        d.finished.success,
        d.finished.peak_rss_mib,
        d.served.graph,
        d.served.throttled,
        s["scanned"],
        d.rows,
        d.listed.len()
    );
    eprintln!("dormant byVerdict: {}", s["byVerdict"]);

    let peer = with_peer.then(|| run_peer(&python, &sim, &control, dir.path(), peer_max_secs));
    let sim_hwm = status_mib(sim_pid, "VmHWM");

    println!();
    println!("| measure | dormant | python msgraph-sdk peer | ratio | goal |");
    println!("|---|---|---|---|---|");
    let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
    match &peer {
        Some(p) => {
            let peer_judged = p.out["scanned"].as_f64().unwrap_or(0.0);
            match &p.judged {
                None => println!(
                    "| wall time, {users} users, {latency} ms a request | {:.1} s | {:.1} s | {:.1}× faster | ≥ 10× |",
                    d.finished.seconds,
                    p.finished.seconds,
                    ratio(d.finished.seconds, p.finished.seconds)
                ),
                Some(_) => {
                    // The peer is sequential: every page costs it the same,
                    // so its measured pace gives the time for all users.
                    let projected = p.finished.seconds * f64::from(users) / peer_judged.max(1.0);
                    println!(
                        "| wall time, {users} users, {latency} ms a request | {:.1} s | stopped at its cap after {:.1} s, {} users judged ({:.1} users/s); projected for {users}: {:.0} s | {:.1}× faster (projected) | ≥ 10× |",
                        d.finished.seconds,
                        p.finished.seconds,
                        peer_judged,
                        peer_judged / p.finished.seconds,
                        projected,
                        ratio(d.finished.seconds, projected)
                    );
                }
            }
            println!(
                "| Graph requests (simulator count) | {} ({} × 429) | {} ({} × 429) | — | — |",
                d.served.graph, d.served.throttled, p.served.graph, p.served.throttled
            );
            println!(
                "| peak RSS | {:.1} MiB | {:.1} MiB | — | dormant < 150 MB |",
                d.finished.peak_rss_mib, p.finished.peak_rss_mib
            );
            println!(
                "| failed requests after retries | {} (exit {}, {} enrichment gaps) | {} | — | 0 |",
                u64::from(!d.finished.success) + d.gaps,
                if d.finished.success { "0" } else { "≠0" },
                d.gaps,
                if p.out["error"].is_null() && p.finished.success {
                    "0".to_string()
                } else {
                    format!("run failed: {}", p.out["error"])
                }
            );
            println!(
                "| users scanned | {} | {} | — | — |",
                s["scanned"], p.out["scanned"]
            );
            // A capped peer judged only some users: compare dormant's set
            // over those users.
            let mine: BTreeSet<String> = match &p.judged {
                None => d.listed.clone(),
                Some(judged) => d.listed.intersection(judged).cloned().collect(),
            };
            let same = mine == p.ids;
            println!(
                "| not plainly active{} (sha256 of sorted ids) | {} ({}) | {} ({}) | {} | equal |",
                if p.judged.is_some() {
                    ", over the users the peer judged"
                } else {
                    ""
                },
                mine.len(),
                &digest(&mine)[..12],
                p.ids.len(),
                &digest(&p.ids)[..12],
                if same { "same set" } else { "DIFFERENT" }
            );
            if !same {
                let only_d = mine.difference(&p.ids).count();
                let only_p = p.ids.difference(&mine).count();
                eprintln!("sets differ: {only_d} only in dormant, {only_p} only in the peer");
            }
            eprintln!("peer: {}", p.out);
        }
        None => {
            println!(
                "| wall time, {users} users, {latency} ms a request | {:.1} s | not run | — | — |",
                d.finished.seconds
            );
            println!(
                "| Graph requests (simulator count) | {} ({} × 429) | — | — | — |",
                d.served.graph, d.served.throttled
            );
            println!(
                "| peak RSS | {:.1} MiB | — | — | < 150 MB |",
                d.finished.peak_rss_mib
            );
        }
    }
    println!(
        "| CSV rows (incl. plainly active unmanaged guests) | {} | — | — | — |",
        d.rows
    );
    println!("| simulator peak RSS (its own process) | {sim_hwm:.0} MiB | | | |");
    assert_eq!(d.served.faults, 0, "no faults were injected");
}
