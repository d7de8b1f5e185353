//! Simulator measurements (ignored by default; run in release):
//! `cargo test --release --test it sim_bench -- --ignored --nocapture --test-threads 1`.

use std::time::Instant;

use dormant::sim::{SimConfig, ThrottleConfig};

use crate::sim_harness::Harness;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark"]
async fn bench_paging_throughput() {
    let users = std::env::var("SIM_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let h = Harness::start(SimConfig {
        users,
        write_truth: false,
        throttle: ThrottleConfig {
            enabled: false,
            ..ThrottleConfig::default()
        },
        ..SimConfig::default()
    })
    .await;
    let tok = h.token().await;
    for (label, q) in [
        (
            "signInActivity (120 per page)",
            "/v1.0/users?$select=id,userPrincipalName,displayName,accountEnabled,userType,createdDateTime,signInActivity&$top=999",
        ),
        (
            "no signInActivity (999 per page)",
            "/v1.0/users?$select=id,userPrincipalName,displayName,accountEnabled,userType,createdDateTime&$top=999",
        ),
    ] {
        let t = Instant::now();
        let (all, sizes) = h.page_all(&tok, q).await;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "paging {label}: {} users in {} pages, {secs:.2}s = {:.0} users/s",
            all.len(),
            sizes.len(),
            all.len() as f64 / secs
        );
    }
    h.sim.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark"]
async fn bench_million_user_tenant() {
    let before = rss_mib();
    let t = Instant::now();
    let h = Harness::start(SimConfig {
        users: 1_000_000,
        write_truth: true,
        ..SimConfig::default()
    })
    .await;
    let took = t.elapsed();
    let truth = std::fs::metadata(h.sim.truth_file())
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "1,000,000-user tenant: started (generate + truth file) in {took:?}; RSS {:.0} MiB (was {before:.0}); truth file {:.0} MiB",
        rss_mib(),
        truth as f64 / 1_048_576.0
    );
    let tok = h.token().await;
    let (s, _, body) = h
        .get(&tok, "/v1.0/users?$select=id,signInActivity&$top=999")
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(120));
    h.sim.shutdown().await;
}

/// The production client's cost per page against raw HTTP on the same
/// simulator: same query, same pages; the difference is pacing, retries,
/// typed decoding and token handling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_client_overhead_per_page() {
    use dormant::config::{Config, Sources};
    use dormant::graph::{GraphClient, GraphSettings, SCAN_SELECT, UserQuery};
    use futures::TryStreamExt as _;

    let users = std::env::var("SIM_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let h = Harness::start(SimConfig {
        users,
        write_truth: false,
        throttle: ThrottleConfig {
            enabled: false,
            ..ThrottleConfig::default()
        },
        ..SimConfig::default()
    })
    .await;
    let select = SCAN_SELECT.join(",");
    let tok = h.token().await;
    let t = Instant::now();
    let (raw, pages) = h
        .page_all(&tok, &format!("/v1.0/users?$select={select}&$top=999"))
        .await;
    let raw_secs = t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = h.sim.settings();
    env.push(("DORMANT_STORE_DIR".into(), dir.path().display().to_string()));
    env.push(("DORMANT_GRAPH_BUDGET_SHARE".into(), "1".into()));
    let config = Config::load(&Sources::from_env(None, env)).expect("config");
    let graph = GraphClient::new(GraphSettings::from_config(&config)).expect("client");
    let query = UserQuery {
        select: SCAN_SELECT.iter().map(|s| s.to_string()).collect(),
        top: Some(999),
        ..UserQuery::default()
    };
    let before = rss_mib();
    let t = Instant::now();
    let mut count = 0usize;
    let stream = graph.list_users(&query);
    futures::pin_mut!(stream);
    while let Some(_user) = stream.try_next().await.expect("page") {
        count += 1;
    }
    let client_secs = t.elapsed().as_secs_f64();
    assert_eq!(count, raw.len());
    let n = pages.len() as f64;
    eprintln!(
        "client overhead: {} users, {} pages; raw HTTP {:.2} ms/page, dormant client {:.2} ms/page ({:.2}x); RSS {before:.0} -> {:.0} MiB",
        count,
        pages.len(),
        raw_secs * 1000.0 / n,
        client_secs * 1000.0 / n,
        client_secs / raw_secs,
        rss_mib()
    );
    h.sim.shutdown().await;
}
