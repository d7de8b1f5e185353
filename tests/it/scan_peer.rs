//! The scan benchmark's peer (`benches/scan_peer.py`, Microsoft's
//! msgraph-sdk) and dormant agree on a small tenant: every user the peer
//! finds not plainly active is in dormant's CSV, and dormant lists nobody
//! else but unmanaged guests held for review (which a sign-in rule cannot
//! see). Keeps the benchmark's comparison honest without running it.
//!
//! Needs `DORMANT_SIM_PYTHON` (scripts/test.sh installs msgraph-sdk).

use std::collections::BTreeSet;
use std::sync::Arc;

use dormant::graph::{GraphClient, GraphSettings};
use dormant::scan::run::{ScanOptions, Scanner};
use dormant::sim::{Sim, SimConfig};
use dormant::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgraph_sdk_peer_finds_the_users_dormant_lists() {
    let python = std::env::var("DORMANT_SIM_PYTHON").expect(
        "DORMANT_SIM_PYTHON is not set: run the tests through scripts/test.sh, which installs msgraph-sdk",
    );
    let sim = Sim::start(SimConfig {
        users: 480,
        seed: 11,
        write_truth: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::sim_harness::config_for(
        &sim,
        dir.path(),
        &[("DORMANT_POLICY__ACTIVITY_SOURCES", "signin")],
    );
    let store = Store::local(dir.path()).expect("store");
    let scanner = Scanner::new(
        GraphClient::new(GraphSettings::from_config(&config)).expect("graph"),
        store.clone(),
        Arc::new(config),
    );
    let outcome = scanner
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("scan");
    let csv = store
        .get("dormant-reports", &outcome.csv)
        .await
        .expect("csv");
    let mut reader = csv::Reader::from_reader(csv.body.as_ref());
    let headers = reader.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (id, flags) = (col("userId"), col("riskFlags"));
    let mut listed = BTreeSet::new();
    let mut unmanaged = BTreeSet::new();
    for record in reader.records() {
        let r = record.expect("row");
        listed.insert(r[id].to_ascii_lowercase());
        if r[flags].split(';').any(|f| f == "unmanaged-guest") {
            unmanaged.insert(r[id].to_ascii_lowercase());
        }
    }

    let ids_file = dir.path().join("peer-ids.txt");
    let out = tokio::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/scan_peer.py"))
        .envs(sim.settings())
        .env("PEER_IDS_OUT", &ids_file)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peer failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).expect("peer JSON");
    assert_eq!(summary["scanned"], 480);
    assert!(summary["error"].is_null());
    let peer: BTreeSet<String> = std::fs::read_to_string(&ids_file)
        .expect("peer ids")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(summary["listed"].as_u64(), Some(peer.len() as u64));
    assert!(!peer.is_empty(), "the tenant has inactive users");
    let missing: Vec<_> = peer.difference(&listed).collect();
    assert!(missing.is_empty(), "dormant did not list {missing:?}");
    let extra: Vec<_> = listed
        .difference(&peer)
        .filter(|i| !unmanaged.contains(*i))
        .collect();
    assert!(extra.is_empty(), "only dormant listed {extra:?}");
    sim.shutdown().await;
}
