//! Guest benchmark (`cargo bench --bench guests`): a workforce tenant with
//! `BENCH_GUESTS` (default 10,000) unmanaged (viral) guests over
//! `BENCH_DOMAINS` (default 300) home domains of their own, Graph throttling
//! on (`/invitations`: 150 per 5 s per tenant), 20 ms added to every request.
//!
//! dormant (release binary, enforce mode, `unmanaged = "reset"`, the whole
//! budget): `dormant scan` finds them, asking each home realm once, and
//! enqueues one `reset-redemption` step each; `dormant worker --once`
//! re-checks each guest and resets it through `POST /invitations`.
//!
//! Reported: userrealm calls per process against the domains (goal: equal),
//! resets per second against the invitations budget (goal ≥ 90 %), share of
//! invitation requests answered 429 (goal < 1 %), lost or doubled resets
//! (goal 0: every guest pending again, exactly one `reset-redemption` audit
//! line each), wall times and peak RSS.
//!
//! Peer, same run, its own tenant: the script most admins run — for each
//! guest, ask its realm, and if viral, `POST /invitations`, 32 at once,
//! sleeping `Retry-After` on a 429.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dormant::sim::{Archetype, Faults, Sim, SimConfig};
use dormant::store::Store;
use dormant::store::audit::{AuditLog, Outcome};

mod support;
use support::status_mib;

const INVITATIONS_PER_SEC: f64 = 150.0 / 5.0;
const LATENCY_MS: u64 = 20;
const MEMBERS: u32 = 2_000;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start_sim(guests: u32, domains: u32, seed: u64) -> Sim {
    let sim = Sim::start(SimConfig {
        users: MEMBERS,
        seed,
        write_truth: false,
        viral_guests: guests,
        viral_domains: domains,
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

/// Every unmanaged guest of the tenant, by id, with its home mail.
fn viral(sim: &Sim) -> Vec<(String, String)> {
    sim.with_tenant(|t| {
        (0..t.users.len() as u32)
            .filter(|&i| t.users[i as usize].arch == Archetype::GuestViral)
            .map(|i| (t.user_id(i), t.guest_mail(i)))
            .collect()
    })
}

/// Guests of `users` whose invitation is pending again (reset).
fn reset_count(sim: &Sim, users: &[(String, String)]) -> usize {
    sim.with_tenant(|t| {
        users
            .iter()
            .filter(|(id, _)| t.resolve(id).is_some_and(|i| t.is_pending(i)))
            .count()
    })
}

fn invitations_and_429(sim: &Sim) -> (u64, u64) {
    let stats = sim.stats();
    let posted = stats.by_route.get("POST invitations").copied().unwrap_or(0);
    let throttled = stats
        .throttled_by_route
        .get("POST invitations")
        .copied()
        .unwrap_or(0);
    (posted, throttled)
}

/// Runs `dormant ARGS` (release) with `env`: wall seconds and peak RSS (MiB).
async fn run_dormant(args: &[&str], env: &[(String, String)]) -> (f64, f64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dormant"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dormant");
    let pid = child.id();
    let mut peak = 0f64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        peak = peak.max(status_mib(pid, "VmHWM"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "dormant {args:?} failed: {status}");
    (started.elapsed().as_secs_f64(), peak)
}

async fn dormant_run(guests: u32, domains: u32) {
    let sim = start_sim(guests, domains, 31).await;
    let users = viral(&sim);
    let dir = tempfile::Builder::new()
        .prefix("dormant-bench-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("tempdir");
    let mut env = sim.settings();
    for (k, v) in [
        ("DORMANT_STORE_DIR", dir.path().display().to_string()),
        ("DORMANT_POLICY__MODE", "enforce".into()),
        ("DORMANT_POLICY__GUESTS__UNMANAGED", "reset".into()),
        ("DORMANT_GRAPH_BUDGET_SHARE", "1".into()),
        ("DORMANT_POLICY__ACTIVITY_SOURCES", "signin".into()),
        (
            "DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES",
            "1000000".into(),
        ),
        ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100".into()),
    ] {
        env.push((k.into(), v));
    }
    sim.reset_stats();
    let (scan_wall, scan_peak) = run_dormant(&["scan"], &env).await;
    let scan_stats = sim.stats();
    let scan_realms = scan_stats.realm_lookups.clone();
    let scan_requests = scan_stats.graph_requests;

    sim.reset_stats();
    let (wall, peak) = run_dormant(&["worker", "--once", "--visibility-secs", "900"], &env).await;
    let worker_realms = sim.stats().realm_lookups;
    let (posted, throttled) = invitations_and_429(&sim);
    let accepted = posted.saturating_sub(throttled);
    let reset = reset_count(&sim, &users);

    let store = Store::local(dir.path()).expect("store");
    let lines = AuditLog::new(store)
        .read_day(sim.now().date_naive())
        .await
        .expect("audit");
    let mut per_user: BTreeMap<&str, u32> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l.step == "reset-redemption" && l.outcome == Outcome::Done)
    {
        *per_user.entry(l.user.as_deref().unwrap_or("")).or_default() += 1;
    }
    let doubled = per_user.values().filter(|n| **n > 1).count();
    let lost = users
        .iter()
        .filter(|(id, _)| !per_user.contains_key(id.as_str()))
        .count();
    let mut other: BTreeMap<String, u32> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l.step == "reset-redemption" && l.outcome != Outcome::Done)
    {
        *other
            .entry(format!("{:?} {:?} {:?}", l.outcome, l.detail, l.error))
            .or_default() += 1;
    }
    if !other.is_empty() {
        println!("other reset lines: {other:?}");
    }
    let viral_domains = |m: &BTreeMap<String, u64>| {
        sim.with_tenant(|t| {
            m.keys()
                .filter(|d| t.is_viral_domain(d) == Some(true))
                .count()
        })
    };
    println!(
        "dormant scan: {} users in {scan_wall:.1} s, {scan_requests} Graph requests; userrealm: {} calls for {} domains ({} unmanaged, the most for one domain {}); peak RSS {scan_peak:.1} MiB",
        MEMBERS + guests,
        scan_realms.values().sum::<u64>(),
        scan_realms.len(),
        viral_domains(&scan_realms),
        scan_realms.values().max().copied().unwrap_or(0),
    );
    println!(
        "dormant worker: {} resets in {wall:.1} s ({:.2}/s = {:.1} % of the {INVITATIONS_PER_SEC}/s invitations budget); \
         {throttled} of {posted} invitations answered 429 ({:.3} %); userrealm: {} calls for {} domains; \
         pending again {reset}/{}; lost {lost}, doubled {doubled}; peak RSS {peak:.1} MiB",
        accepted,
        accepted as f64 / wall,
        100.0 * accepted as f64 / wall / INVITATIONS_PER_SEC,
        100.0 * throttled as f64 / posted.max(1) as f64,
        worker_realms.values().sum::<u64>(),
        worker_realms.len(),
        users.len(),
    );
    sim.shutdown().await;
}

/// The script: realm per guest, then the reset, 32 at once.
async fn peer_run(guests: u32, domains: u32) {
    let sim = start_sim(guests, domains, 32).await;
    let users = viral(&sim);
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
                let Some((id, mail)) = queue.lock().expect("queue").pop() else {
                    return;
                };
                let realm: serde_json::Value = match http
                    .get(format!("{base}/common/userrealm"))
                    .query(&[("user", mail.as_str()), ("api-version", "2.1")])
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                if realm["IsViral"] != true {
                    continue;
                }
                let body = serde_json::json!({
                    "invitedUserEmailAddress": mail,
                    "inviteRedirectUrl": "https://myapps.microsoft.com",
                    "sendInvitationMessage": false,
                    "resetRedemption": true,
                    "invitedUser": {"id": id},
                });
                let mut tries = 0;
                loop {
                    let Ok(r) = http
                        .post(format!("{base}/v1.0/invitations"))
                        .header("Authorization", &bearer)
                        .json(&body)
                        .send()
                        .await
                    else {
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
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let wall = started.elapsed().as_secs_f64();
    let (posted, throttled) = invitations_and_429(&sim);
    let accepted = posted.saturating_sub(throttled);
    let realms = sim.stats().realm_lookups;
    println!(
        "script peer: {accepted} resets in {wall:.1} s ({:.2}/s = {:.1} % of the budget); \
         {throttled} of {posted} invitations answered 429 ({:.1} %); userrealm: {} calls for {} domains; \
         pending again {}/{}; {} failed",
        accepted as f64 / wall,
        100.0 * accepted as f64 / wall / INVITATIONS_PER_SEC,
        100.0 * throttled as f64 / posted.max(1) as f64,
        realms.values().sum::<u64>(),
        realms.len(),
        reset_count(&sim, &users),
        users.len(),
        failed.load(Ordering::Relaxed),
    );
    sim.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let guests = env_u32("BENCH_GUESTS", 10_000);
    let domains = env_u32("BENCH_DOMAINS", 300);
    rt.block_on(async {
        dormant_run(guests, domains).await;
        if std::env::var("BENCH_PEER").as_deref() != Ok("0") {
            peer_run(guests, domains).await;
        }
    });
}
