//! Microsoft's Python SDKs (msgraph-sdk, azure-identity) against the simulator.
//!
//! Needs a Python with `msgraph-sdk` and `azure-identity`, named in
//! `DORMANT_SIM_PYTHON`: `scripts/test.sh` installs the pinned versions
//! (tests/conformance/requirements.txt) into `.tools/pyenv` and sets it.

use dormant::sim::SimConfig;

use crate::sim_harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgraph_sdk_pages_users_and_reads_a_batch() {
    let python = std::env::var("DORMANT_SIM_PYTHON").expect(
        "DORMANT_SIM_PYTHON is not set: run the tests through scripts/test.sh, which installs msgraph-sdk",
    );
    let h = Harness::start(SimConfig {
        users: 700,
        ..SimConfig::default()
    })
    .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/msgraph_conformance.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .envs(h.sim.settings())
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "conformance failed: {stdout}\n{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).expect("summary JSON");
    assert_eq!(summary["paged"], 700);
    assert!(summary["first_page"].as_u64().expect("first_page") <= 120);
    h.sim.shutdown().await;
}
