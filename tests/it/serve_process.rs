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

mod user_actions {
    use super::*;
    use dormant::store::audit::AuditLog;
    use dormant::store::{ACTIONS_QUEUE, Store};

    async fn post(serve: &ServeProcess, body: String) -> u16 {
        reqwest::Client::new()
            .post(serve.url("/UserActions"))
            .header(
                "X-Azure-Functions-InvocationId",
                "7e0c7b1a-0000-4000-8000-00000000abcd",
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST")
            .status()
            .as_u16()
    }

    fn envelope(message: serde_json::Value) -> String {
        serde_json::json!({
            "Data": {"message": message.to_string()},
            "Metadata": {"DequeueCount": "1", "Id": "\"6a1f0000-0000-4000-8000-000000000001\""}
        })
        .to_string()
    }

    fn action(kind: &str, not_before: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
        serde_json::json!({"v":1,"kind":kind,"tenant":crate::harness::TENANT,
            "user":"5b3a1c2d-3333-4e4e-8f8f-0123456789ab","case":"c-1",
            "run":"20261122T020000Z-a1b2c3",
            "notBefore": not_before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
    }

    #[tokio::test]
    async fn malformed_and_unsupported_messages_are_audited_and_answered_200() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = minimal_env(dir.path().to_str().expect("utf8"));
        let serve = ServeProcess::start(&as_refs(&env)).await;

        assert_eq!(
            post(&serve, crate::harness::fixture("host/queue-malformed.json")).await,
            200
        );
        let mut wrong_tenant = action("notify", chrono::Utc::now());
        wrong_tenant["tenant"] = serde_json::json!("other.onmicrosoft.com");
        assert_eq!(post(&serve, envelope(wrong_tenant)).await, 200);
        // A step for a user without a case is a stale repeat: answered,
        // nothing done, nothing recorded (a reset like any other step).
        assert_eq!(
            post(
                &serve,
                envelope(action("reset-redemption", chrono::Utc::now()))
            )
            .await,
            200
        );
        assert_eq!(
            post(&serve, envelope(action("purge", chrono::Utc::now()))).await,
            200
        );

        let store = Store::local(dir.path()).expect("store");
        let records = AuditLog::new(store)
            .read_day(chrono::Utc::now().date_naive())
            .await
            .expect("audit");
        let steps: Vec<&str> = records.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(steps, ["malformed-envelope", "wrong-tenant"]);
    }

    #[tokio::test]
    async fn a_message_that_is_not_due_goes_back_on_the_queue_with_its_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = minimal_env(dir.path().to_str().expect("utf8"));
        let serve = ServeProcess::start(&as_refs(&env)).await;
        let later = chrono::Utc::now() + chrono::Duration::days(3);
        assert_eq!(post(&serve, envelope(action("disable", later))).await, 200);

        let store = Store::local(dir.path()).expect("store");
        let now = store
            .receive(ACTIONS_QUEUE, 10, Duration::from_secs(30))
            .await
            .expect("receive");
        assert!(now.is_empty(), "invisible until it is due");
        let audit = AuditLog::new(store)
            .read_day(chrono::Utc::now().date_naive())
            .await
            .expect("audit");
        assert!(audit.is_empty(), "a requeue is not a failure: {audit:?}");
    }
}
