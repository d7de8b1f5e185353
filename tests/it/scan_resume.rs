//! A scan killed with SIGKILL resumes: the second `dormant scan` finishes
//! the same run, and every user is counted exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dormant::sim::{Faults, Sim, SimConfig};

fn partitions_recorded(store: &Path) -> usize {
    let runs = store.join("dormant-state").join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|run| std::fs::read_dir(run.path().join("parts")).ok())
        .flat_map(|parts| parts.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .count()
}

fn scan_command(sim: &Sim, store: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dormant"));
    cmd.arg("scan")
        .arg("--concurrency")
        .arg("2")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(sim.settings())
        .env("DORMANT_STORE_DIR", store)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_scan_resumes_without_losing_or_double_counting_users() {
    let users = 1500;
    let sim = Sim::start(SimConfig {
        users,
        seed: 3,
        write_truth: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    // Slow pages so the kill lands mid-run.
    sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");

    let mut first = scan_command(&sim, dir.path()).spawn().expect("first scan");
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions_recorded(dir.path()) < 5 {
        assert!(
            Instant::now() < deadline,
            "the first scan recorded no partitions"
        );
        if let Ok(Some(status)) = first.try_wait() {
            panic!("the first scan ended before the kill: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    let recorded_before = partitions_recorded(dir.path());

    sim.set_faults(Faults::default());
    let second = scan_command(&sim, dir.path())
        .output()
        .await
        .expect("second scan");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("resuming an unfinished scan"), "{stderr}");

    // One run, finished, every user once.
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("dormant-state/runs"))
        .expect("runs")
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1, "the killed run was resumed, not replaced");
    assert!(partitions_recorded(dir.path()) > recorded_before);
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("dormant-reports/latest/summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(
        summary["scanned"], users,
        "nobody lost, nobody counted twice"
    );
    let csv =
        std::fs::read(dir.path().join("dormant-reports/latest/inactive-users.csv")).expect("csv");
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let mut ids = BTreeSet::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.expect("row");
        rows += 1;
        assert!(ids.insert(record[0].to_owned()), "{} twice", &record[0]);
    }
    let by_verdict: u64 = summary["byVerdict"]
        .as_object()
        .expect("byVerdict")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(rows as u64, by_verdict, "every reported user has one row");
    sim.shutdown().await;
}

/// A finalise that fails gives its claim up at once: the next attempt
/// finalises the same run instead of waiting for the claim to lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_finalise_gives_its_claim_up() {
    use std::sync::Arc;

    use dormant::scan::run::ScanOptions;

    let sim = Sim::start(SimConfig {
        users: 200,
        seed: 4,
        write_truth: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let scanner = crate::scan_e2e::scanner_for(&sim, dir.path(), &[]);
    // A file where the `latest/` folder must go: the report cannot be written.
    let latest = dir.path().join("dormant-reports/latest");
    std::fs::create_dir_all(latest.parent().expect("parent")).expect("mkdir");
    std::fs::write(&latest, b"in the way").expect("blocker");
    let first = scanner.run(&ScanOptions::default(), Arc::new(())).await;
    assert!(first.is_err(), "the report could not be written");

    std::fs::remove_file(&latest).expect("unblock");
    let second = scanner
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("the same run finalises now");
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("dormant-state/runs"))
        .expect("runs")
        .flatten()
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "the failed finalise's run was finished, not replaced"
    );
    assert_eq!(second.summary.scanned, 200);
    sim.shutdown().await;
}
