//! Lifecycle benchmark (`cargo bench --bench lifecycle`): 10,000 due
//! `disable` steps (PATCH accountEnabled + revokeSignInSessions, two writes
//! each) drained by `dormant worker --once` (release binary) against the
//! simulator's documented write budget, 3,000 writes per app per tenant per
//! 150 s, with 20 ms added to every Graph request.
//!
//! Reported: achieved write rate as a share of the budget (goal ≥ 90 %),
//! share of requests answered 429 (goal < 1 %), lost or doubled effects
//! (goal 0: every user disabled, exactly one `disable` audit line per case,
//! every case step recorded), wall time and the worker's peak RSS.
//!
//! Peer, same run, its own simulated tenant (so its own budget): the naive
//! worker most scripts are — 32 concurrent requests, no pacing, sleeping
//! `Retry-After` on a 429 — doing the same two writes for
//! `BENCH_PEER_STEPS` users (default: as many as dormant's steps; the
//! window lets 3,000 writes through at once, so a short run overstates
//! any worker's rate).
//!
//! `BENCH_STEPS` sets the step count (default 10,000; 0 runs only the peer).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use dormant::config::{Config, Sources};
use dormant::ids::{ObjectId, RunId};
use dormant::lifecycle::{ActionKind, ActionMessage, Case, CaseStore};
use dormant::policy::PlanShape;
use dormant::policy::phases::plan;
use dormant::sim::{Faults, Sim, SimConfig};
use dormant::store::audit::{AuditLog, Outcome};
use dormant::store::{ACTIONS_QUEUE, SendOptions, Store};

mod support;
use support::status_mib;

const BUDGET_PER_SEC: f64 = 3_000.0 / 150.0;
const LATENCY_MS: u64 = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Plain inactive members (no role, group, sync or other flag, every
/// signal older than 120 days): every re-check holds for them.
fn plain_inactive(sim: &Sim, want: usize) -> Vec<String> {
    let old = (sim.now() - chrono::Duration::days(120)).timestamp();
    sim.with_tenant(|t| {
        (0..t.users.len() as u32)
            .filter(|&i| {
                let u = &t.users[i as usize];
                u.enabled()
                    && t.kinds(i) == ["inactive"]
                    && u.last_success > 0
                    && [u.last_success, u.last_interactive, u.last_noninteractive]
                        .iter()
                        .chain(u.usage.iter())
                        .all(|at| *at < old)
            })
            .take(want)
            .map(|i| t.user_id(i))
            .collect()
    })
}

async fn start_sim(users: u32, seed: u64) -> Sim {
    let sim = Sim::start(SimConfig {
        users,
        seed,
        write_truth: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    sim.set_faults(Faults {
        latency_ms: LATENCY_MS,
        ..Faults::default()
    });
    sim
}

fn writes_and_429(sim: &Sim) -> (u64, u64, u64) {
    let stats = sim.stats();
    let writes: u64 = stats
        .by_route
        .iter()
        .filter(|(k, _)| k.starts_with("PATCH ") || k.contains("revokeSignInSessions"))
        .map(|(_, v)| *v)
        .sum();
    (writes, stats.throttled, stats.graph_requests)
}

async fn dormant_run(steps: usize) {
    let sim = start_sim(steps as u32 * 20 + 2_000, 21).await;
    let users = plain_inactive(&sim, steps);
    assert_eq!(users.len(), steps, "not enough plain inactive users");
    let dir = tempfile::Builder::new()
        .prefix("dormant-bench-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("tempdir");
    let mut env = sim.settings();
    env.push(("DORMANT_STORE_DIR".into(), dir.path().display().to_string()));
    env.push(("DORMANT_POLICY__MODE".into(), "enforce".into()));
    env.push(("DORMANT_GRAPH_BUDGET_SHARE".into(), "1".into()));
    let config = Config::load(&Sources::from_env(None, env.clone())).expect("config");
    let store = Store::local(dir.path()).expect("store");
    store.ensure_defaults().await.expect("containers");
    let cases = CaseStore::new(store.clone());
    let opened = Utc::now() - chrono::Duration::days(20);
    let run = RunId::new(opened);
    let steps_plan = plan(
        PlanShape {
            subject: dormant::policy::CaseSubject::Member,
            kind: config.tenant_kind,
            has_user_mailbox: false,
            has_direct_licenses: false,
        },
        &config.policy.phases,
    );
    let mut case_ids = BTreeMap::new();
    for user in &users {
        let mut case = Case::open(user, &run, &steps_plan, true, opened);
        let notify = case.steps.entry(ActionKind::Notify).or_default();
        notify.done_at = Some(opened);
        notify.recorded = true;
        cases.create(&case).await.expect("case").expect("new");
        let message = ActionMessage {
            v: 1,
            kind: ActionKind::Disable,
            tenant: config.tenant_id.clone(),
            user: ObjectId::parse(user).expect("id"),
            case: case.id.clone(),
            run: run.clone(),
            not_before: opened + chrono::Duration::days(14),
        };
        store
            .send(ACTIONS_QUEUE, &message.to_text(), SendOptions::default())
            .await
            .expect("send");
        case_ids.insert(case.id.clone(), user.clone());
    }
    sim.reset_stats();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dormant"))
        .args(["worker", "--once", "--visibility-secs", "900"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("worker");
    let pid = child.id();
    let mut peak = 0f64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        peak = peak.max(status_mib(pid, "VmHWM"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    assert!(status.success(), "worker failed: {status}");
    let (write_attempts, throttled, requests) = writes_and_429(&sim);
    let accepted = write_attempts.saturating_sub(throttled);

    // Effects and records.
    let disabled = sim.with_tenant(|t| {
        users
            .iter()
            .filter(|u| t.resolve(u).is_some_and(|i| !t.users[i as usize].enabled()))
            .count()
    });
    let lines = AuditLog::new(store.clone())
        .read_day(Utc::now().date_naive())
        .await
        .expect("audit");
    let mut per_case: BTreeMap<&str, u32> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l.step == "disable" && l.outcome == Outcome::Done)
    {
        *per_case.entry(l.case.as_deref().unwrap_or("")).or_default() += 1;
    }
    let doubled = per_case.values().filter(|n| **n > 1).count();
    let missing = case_ids
        .keys()
        .filter(|c| !per_case.contains_key(c.as_str()))
        .count();
    let mut unrecorded = 0;
    for user in &users {
        match cases.open_case(user).await.expect("read") {
            Some((case, _)) if case.step(ActionKind::Disable).is_some_and(|s| s.recorded) => {}
            _ => unrecorded += 1,
        }
    }
    let mut other: BTreeMap<String, u32> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.outcome != Outcome::Done) {
        *other
            .entry(format!(
                "{} {:?} {:?} {:?}",
                l.step, l.outcome, l.detail, l.error
            ))
            .or_default() += 1;
    }
    if !other.is_empty() {
        println!("other audit lines: {other:?}");
    }
    println!(
        "dormant worker: {steps} steps in {wall:.1} s; {accepted} writes accepted ({:.2}/s = {:.1} % of the {BUDGET_PER_SEC}/s budget); \
         {throttled} of {requests} Graph requests answered 429 ({:.3} %); disabled {disabled}/{steps}; \
         lost {missing}, doubled {doubled}, unrecorded {unrecorded}; peak RSS {peak:.1} MiB",
        accepted as f64 / wall,
        100.0 * accepted as f64 / wall / BUDGET_PER_SEC,
        100.0 * throttled as f64 / requests.max(1) as f64,
    );
    sim.shutdown().await;
}

/// The naive peer: 32 at once, no pacing, `Retry-After` honoured after
/// the fact.
async fn peer_run(steps: usize) {
    let sim = start_sim(steps as u32 * 20 + 2_000, 22).await;
    let users = plain_inactive(&sim, steps);
    let (http, bearer) = support::sim_client(&sim).await;
    sim.reset_stats();
    let base = sim.base_url();
    let queue = Arc::new(std::sync::Mutex::new(users.clone()));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, bearer, base, queue, failed) = (
            http.clone(),
            bearer.clone(),
            base.clone(),
            queue.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(user) = queue.lock().expect("queue").pop() else {
                    return;
                };
                for (method, path, body) in [
                    (
                        reqwest::Method::PATCH,
                        format!("{base}/v1.0/users/{user}"),
                        Some(serde_json::json!({"accountEnabled": false})),
                    ),
                    (
                        reqwest::Method::POST,
                        format!("{base}/v1.0/users/{user}/revokeSignInSessions"),
                        None,
                    ),
                ] {
                    let mut tries = 0;
                    loop {
                        let mut req = http
                            .request(method.clone(), &path)
                            .header("Authorization", &bearer);
                        if let Some(b) = &body {
                            req = req.json(b);
                        }
                        let Ok(r) = req.send().await else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        if r.status().as_u16() == 429 && tries < 20 {
                            let secs = r
                                .headers()
                                .get("Retry-After")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(5);
                            tries += 1;
                            tokio::time::sleep(Duration::from_secs(secs)).await;
                            continue;
                        }
                        if !r.status().is_success() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let wall = started.elapsed().as_secs_f64();
    let (write_attempts, throttled, requests) = writes_and_429(&sim);
    let accepted = write_attempts.saturating_sub(throttled);
    println!(
        "naive peer: {steps} steps in {wall:.1} s; {accepted} writes accepted ({:.2}/s = {:.1} % of the budget); \
         {throttled} of {requests} requests answered 429 ({:.1} %); {} failed",
        accepted as f64 / wall,
        100.0 * accepted as f64 / wall / BUDGET_PER_SEC,
        100.0 * throttled as f64 / requests.max(1) as f64,
        failed.load(Ordering::Relaxed),
    );
    sim.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let steps = env_usize("BENCH_STEPS", 10_000);
    let peer_steps = env_usize("BENCH_PEER_STEPS", steps);
    rt.block_on(async {
        if steps > 0 {
            dormant_run(steps).await;
        }
        if peer_steps > 0 {
            peer_run(peer_steps).await;
        }
    });
}
