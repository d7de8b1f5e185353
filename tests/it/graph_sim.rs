//! The production Graph client against the simulator: paging with the
//! 120-user cap and expiring skiptokens, `$batch`, throttling storms, 503
//! bursts, token expiry mid-run, the usage report's 302, and credential
//! rotation through Key Vault with the managed identity (the real binary).

use std::time::Duration;

use dormant::config::{Config, Sources};
use dormant::graph::{
    GraphClient, GraphError, GraphSettings, ReportPeriod, SCAN_SELECT, UserQuery,
};
use dormant::sim::{Faults, Sim, SimConfig, ThrottleConfig};
use futures::TryStreamExt as _;

async fn sim(users: u32) -> Sim {
    Sim::start(SimConfig {
        users,
        seed: 11,
        write_truth: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

fn client(sim: &Sim) -> GraphClient {
    let dir = std::env::temp_dir();
    let mut env = sim.settings();
    env.push(("DORMANT_STORE_DIR".into(), dir.display().to_string()));
    let config = Config::load(&Sources::from_env(None, env)).expect("config");
    let mut settings = GraphSettings::from_config(&config);
    settings.max_retry_time = Duration::from_secs(60);
    GraphClient::new(settings).expect("client")
}

fn scan_query() -> UserQuery {
    UserQuery {
        select: SCAN_SELECT.iter().map(|s| s.to_string()).collect(),
        top: Some(999),
        ..UserQuery::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_every_user_once_with_the_signin_activity_cap() {
    let sim = sim(1000).await;
    let graph = client(&sim);
    let listing = graph.users_listing(&scan_query());
    let first = graph
        .users_page(&listing, &listing.first)
        .await
        .expect("first page");
    assert_eq!(
        first.value.len(),
        120,
        "signInActivity caps pages at 120 whatever $top says"
    );
    let all: Vec<_> = graph
        .list_users(&scan_query())
        .try_collect()
        .await
        .expect("all pages");
    let ids: std::collections::BTreeSet<_> = all.iter().map(|u| u.id.clone()).collect();
    assert_eq!(all.len(), 1000);
    assert_eq!(ids.len(), 1000, "no user twice");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_skiptoken_is_its_own_error() {
    let sim = sim(500).await;
    let graph = client(&sim);
    let listing = graph.users_listing(&scan_query());
    let first = graph
        .users_page(&listing, &listing.first)
        .await
        .expect("first page");
    let next = first.next_link.expect("more pages");
    sim.advance(Duration::from_secs(30 * 60));
    let err = graph
        .users_page(&listing, &next)
        .await
        .expect_err("expired");
    assert!(matches!(err, GraphError::ExpiredSkipToken), "{err:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_more_than_twenty_come_back_in_order_with_missing_users_typed() {
    let sim = sim(200).await;
    let graph = client(&sim);
    let users: Vec<_> = graph
        .list_users(&scan_query())
        .try_collect()
        .await
        .expect("users");
    let mut ids: Vec<String> = users.iter().take(45).map(|u| u.id.clone()).collect();
    ids.insert(7, "00000000-0000-4000-8000-000000000000".into());
    let got = graph.get_users(&ids, &["id"]).await.expect("batch");
    assert_eq!(got.len(), 46);
    for (id, answer) in ids.iter().zip(&got) {
        match answer {
            Ok(u) => assert_eq!(&u.id, id),
            Err(e) => {
                assert_eq!(id, "00000000-0000-4000-8000-000000000000");
                assert!(matches!(e, GraphError::NotFound), "{e:?}");
            }
        }
    }
    let batches = sim
        .stats()
        .by_route
        .iter()
        .filter(|(k, _)| k.contains("$batch"))
        .map(|(_, v)| *v)
        .sum::<u64>();
    assert!(
        batches >= 3,
        "46 requests need at least three $batch calls: {batches}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_storms_and_503_bursts_are_survived() {
    let sim = sim(600).await;
    let graph = client(&sim);
    sim.set_faults(Faults {
        next_429: 6,
        retry_after_secs: 1,
        next_503: 5,
        path_contains: Some("/users".into()),
        ..Faults::default()
    });
    let all: Vec<_> = graph
        .list_users(&scan_query())
        .try_collect()
        .await
        .expect("survives");
    assert_eq!(all.len(), 600);
    let stats = graph.stats();
    assert!(stats.throttled >= 6, "{stats:?}");
    assert!(stats.retries >= 11, "{stats:?}");

    // A real budget storm: a tiny resource-unit budget forces 429s with
    // Retry-After; every page still arrives.
    sim.set_faults(Faults::default());
    sim.set_throttle(ThrottleConfig {
        resource_units_per_10s: Some(6),
        ..ThrottleConfig::default()
    });
    let all: Vec<_> = graph
        .list_users(&scan_query())
        .try_collect()
        .await
        .expect("paced through");
    assert_eq!(all.len(), 600);
    assert!(sim.stats().throttled > 0 || graph.stats().throttled > 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_mid_run_is_refreshed() {
    let sim = sim(300).await;
    let graph = client(&sim);
    let listing = graph.users_listing(&scan_query());
    let first = graph
        .users_page(&listing, &listing.first)
        .await
        .expect("first page");
    let before = sim.stats().token_requests;
    sim.advance(Duration::from_secs(2 * 3600)); // tokens live ~1 h
    // The skiptoken expired too: restart the listing, as a scan does.
    let again = graph
        .users_page(&listing, &listing.first)
        .await
        .expect("after refresh");
    assert_eq!(again.value.len(), first.value.len());
    assert!(
        sim.stats().token_requests > before,
        "a new token was fetched"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_report_is_fetched_without_our_token_and_names_are_concealed_again() {
    let sim = sim(300).await;
    let graph = client(&sim);
    assert!(sim.concealed_names());
    let rows = graph
        .with_revealed_names(|g| async move {
            let rows = g.office365_active_user_detail(ReportPeriod::D180).await?;
            rows.try_collect::<Vec<_>>().await
        })
        .await
        .expect("report");
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.user_principal_name.contains('@')),
        "names revealed for the download"
    );
    assert!(sim.concealed_names(), "concealment restored");
    let stats = sim.stats();
    assert!(stats.report_redirects >= 1 && stats.report_downloads >= 1);
    assert_eq!(
        stats.report_downloads_with_auth, 0,
        "the pre-authenticated URL never sees our token"
    );
    sim.shutdown().await;
}

/// The real binary reads its secret from Key Vault with the managed
/// identity when the one it was given was rotated away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_re_read_from_key_vault_with_the_managed_identity() {
    let sim = sim(150).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = sim.settings();
    let old_secret = sim.client_secret();
    let _new = sim.rotate_secret();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dormant"))
        .arg("scan")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(
            env.iter()
                .filter(|(k, _)| k != "DORMANT_CLIENT_SECRET")
                .cloned(),
        )
        .env("DORMANT_CLIENT_SECRET", &old_secret)
        .env("DORMANT_STORE_DIR", dir.path())
        .env("DORMANT_POLICY__ACTIVITY_SOURCES", "signin")
        .output()
        .await
        .expect("dormant scan runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("read the client credential from Key Vault"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&old_secret),
        "a secret never reaches the logs"
    );
    sim.shutdown().await;
}
