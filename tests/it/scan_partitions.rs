//! The partitions cover every user exactly once, on both tenant kinds,
//! checked directly: after a real scan with small pages (so partitions
//! split, down to three characters), every recorded leaf partition is
//! listed again through Graph with its own `startswith` filter (B2C's filter
//! restrictions enforced by the simulator), and the union of those listings
//! is exactly the tenant, with no user in two leaves. The tenant holds
//! users whose UPN starts with every legal first character (A–Z a–z 0–9
//! `' - _ ! # ^ ~`), in both cases where a letter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dormant::graph::UserQuery;
use dormant::scan::Partition;
use dormant::scan::partition::FIRST_CHARS;
use dormant::scan::run::ScanOptions;
use dormant::sim::{Sim, SimConfig, TenantKind};
use serde_json::Value;

use crate::scan_e2e::scanner_for;

/// One seeded user per legal first character (letters in both cases), and
/// a cluster under `~a` big enough to split twice with pages of 10.
fn seeded_upns() -> Vec<String> {
    let mut upns = Vec::new();
    for (i, c) in FIRST_CHARS.chars().enumerate() {
        upns.push(format!("{c}seed.{i}"));
        if c.is_ascii_lowercase() {
            upns.push(format!("{}Seed.Upper{i}", c.to_ascii_uppercase()));
        }
    }
    upns.extend((1..=10).map(|i| format!("~a{i}")));
    upns.extend(
        [
            "~A.upper",
            "~a.dot",
            "~a_under",
            "o'neil.seed",
            "#hash.seed",
            "x.y.seed",
        ]
        .map(String::from),
    );
    upns
}

struct Truth {
    id: String,
    upn: String,
}

fn read_truth(path: &std::path::Path) -> Vec<Truth> {
    std::fs::read_to_string(path)
        .expect("truth file")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("truth line");
            Truth {
                id: v["id"].as_str().expect("id").to_ascii_lowercase(),
                upn: v["upn"].as_str().expect("upn").to_owned(),
            }
        })
        .collect()
}

/// (prefix, users the scan counted) of every recorded leaf partition.
fn recorded_leaves(store_dir: &std::path::Path) -> Vec<(Partition, u64)> {
    let runs = store_dir.join("dormant-state/runs");
    let run = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .next()
        .expect("one run")
        .path();
    let mut leaves = Vec::new();
    for f in std::fs::read_dir(run.join("parts"))
        .expect("parts")
        .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with(".split.json") {
            continue;
        }
        let v: Value =
            serde_json::from_slice(&std::fs::read(f.path()).expect("read")).expect("json");
        let partition: Partition =
            serde_json::from_value(v["partition"].clone()).expect("partition");
        leaves.push((partition, v["stats"]["scanned"].as_u64().expect("scanned")));
    }
    leaves
}

async fn check(kind: TenantKind, users: u32, page_size: u32) {
    let sim = Sim::start(SimConfig {
        users,
        kind,
        seed: 5,
        extra_upns: seeded_upns(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let scanner = scanner_for(&sim, dir.path(), &[("DORMANT_GRAPH_BUDGET_SHARE", "1")]);
    let graph = scanner.graph.clone();
    let outcome = scanner
        .run(
            &ScanOptions {
                page_size,
                ..ScanOptions::default()
            },
            Arc::new(()),
        )
        .await
        .expect("scan");
    let truth = read_truth(sim.truth_file());
    assert_eq!(truth.len(), users as usize + seeded_upns().len());
    assert_eq!(outcome.summary.scanned, truth.len() as u64);

    let leaves = recorded_leaves(dir.path());
    assert!(
        leaves.iter().any(|(p, _)| p.prefix.chars().count() == 3),
        "small pages split partitions down to three characters"
    );
    assert!(leaves.iter().any(|(p, _)| p.prefix.starts_with("~a")));

    // Every leaf listed again through Graph, with its own filter only.
    let mut seen: BTreeMap<String, Partition> = BTreeMap::new();
    for (leaf, counted) in &leaves {
        let query = UserQuery {
            select: vec!["id".into(), "userPrincipalName".into()],
            filter: Some(leaf.filter()),
            top: Some(999),
            ..UserQuery::default()
        };
        let listing = graph.users_listing(&query);
        let mut link = listing.first.clone();
        let mut listed = 0u64;
        loop {
            let page = graph.users_page(&listing, &link).await.expect("page");
            for record in page.value {
                let dormant::graph::UserRecord::User(user) = record else {
                    panic!("the simulator sent a record that does not decode");
                };
                listed += 1;
                let upn = user.user_principal_name.clone().unwrap_or_default();
                assert!(leaf.contains(&upn), "{upn} listed under {leaf:?}");
                if let Some(other) = seen.insert(user.id.to_ascii_lowercase(), leaf.clone()) {
                    panic!("{upn} is in both {other:?} and {leaf:?}");
                }
            }
            match page.next_link {
                Some(next) => link = next,
                None => break,
            }
        }
        assert_eq!(
            listed, *counted,
            "{leaf:?}: the scan counted what Graph lists"
        );
    }
    let all: BTreeSet<&str> = truth.iter().map(|t| t.id.as_str()).collect();
    let union: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(union, all, "the union of the partitions is the tenant");

    // And by the rule alone: every UPN lies in exactly one recorded leaf.
    for t in &truth {
        let holders = leaves.iter().filter(|(p, _)| p.contains(&t.upn)).count();
        assert_eq!(holders, 1, "{}", t.upn);
    }
    // Every first-character class is really present, letters in both cases.
    for c in FIRST_CHARS.chars() {
        assert!(
            truth.iter().any(|t| t.upn.starts_with(c)),
            "no UPN starts with {c:?}"
        );
        if c.is_ascii_lowercase() {
            let upper = c.to_ascii_uppercase();
            assert!(truth.iter().any(|t| t.upn.starts_with(upper)), "{upper:?}");
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workforce_partitions_cover_every_user_exactly_once() {
    check(TenantKind::Workforce, 400, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2c_partitions_cover_every_user_exactly_once() {
    check(TenantKind::B2c, 300, 4).await;
}
