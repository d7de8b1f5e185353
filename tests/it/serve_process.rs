//! `dormant serve` as a child process, driven the way the Functions host
//! drives it.

use std::time::Duration;

use crate::harness::{ServeProcess, as_refs, free_port, minimal_env};

#[tokio::test]
async fn answers_readiness_and_carries_the_invocation_id_into_log_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = minimal_env(dir.path().to_str().expect("utf8"));
    let serve = ServeProcess::start(&as_refs(&env)).await;
    let client = reqwest::Client::new();

    let ready = client.get(serve.url("/")).send().await.expect("GET /");
    assert_eq!(ready.status(), 200);

    let r = client
        .post(serve.url("/NoSuchFunction"))
        .header(
            "X-Azure-Functions-InvocationId",
            "3d1c0e2f-aaaa-4bbb-8ccc-0123456789ab",
        )
        .body(r#"{"Data":{},"Metadata":{}}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 404, "an unknown function is not served");
    let line = serve
        .wait_for_line("3d1c0e2f-aaaa-4bbb-8ccc-0123456789ab")
        .await;
    let json: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
    assert_eq!(
        json["span"]["invocation_id"],
        "3d1c0e2f-aaaa-4bbb-8ccc-0123456789ab"
    );
    assert!(json["level"].is_string() && json["timestamp"].is_string());
}

#[tokio::test]
async fn readiness_comes_fast_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = minimal_env(dir.path().to_str().expect("utf8"));
    let started = std::time::Instant::now();
    let mut serve = ServeProcess::start(&as_refs(&env)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the host gives up after ~30 s; we should be ready in milliseconds"
    );
    serve.terminate();
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn invalid_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = minimal_env(dir.path().to_str().expect("utf8"));
    env.push(("DORMANT_POLICY__INACTIVE_AFTER_DAYS", "7".into()));
    let mut serve = ServeProcess::spawn(free_port(), &as_refs(&env));
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(2));
    let out = serve.lines().join("\n");
    assert!(out.contains("DORMANT_POLICY__INACTIVE_AFTER_DAYS"), "{out}");
    assert!(out.contains("Fix:"), "{out}");
}

#[tokio::test]
async fn a_bad_port_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = minimal_env(dir.path().to_str().expect("utf8"));
    let mut refs = as_refs(&env);
    refs.push(("FUNCTIONS_CUSTOMHANDLER_PORT", "http"));
    let mut serve = ServeProcess::spawn(free_port(), &refs);
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(2));
    assert!(
        serve
            .lines()
            .join("\n")
            .contains("FUNCTIONS_CUSTOMHANDLER_PORT")
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [&["--help"][..], &["serve", "--help"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dormant"))
            .args(args)
            .output()
            .expect("run dormant");
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dormant"))
        .arg("no-such-command")
        .output()
        .expect("run dormant");
    assert_eq!(out.status.code(), Some(2), "bad usage exits 2");
}
