//! A worker killed with SIGKILL after its step took effect in the directory
//! but before it was recorded: the redelivered message finishes the step
//! with one effect and exactly one audit line.
//!
//! The simulator applies the writes and then withholds the answer, so the
//! kill lands exactly between acting and recording, with no hook in
//! dormant's own code.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use dormant::graph::{GraphClient, GraphSettings};
use dormant::ids::{ObjectId, RunId};
use dormant::lifecycle::{ActionKind, ActionMessage, Case, CaseStore};
use dormant::policy::PlanShape;
use dormant::policy::phases::plan;
use dormant::sim::{Faults, Sim, SimConfig};
use dormant::store::audit::{AuditLog, Outcome};
use dormant::store::{ACTIONS_QUEUE, SendOptions, Store};

fn worker(sim: &Sim, store: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dormant"));
    cmd.args(["worker", "--once", "--visibility-secs", "2"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(sim.settings())
        .env("DORMANT_STORE_DIR", store)
        .env("DORMANT_POLICY__MODE", "enforce")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_acting_and_recording_leaves_one_effect_and_one_record() {
    let sim = Sim::start(SimConfig {
        users: 200,
        seed: 5,
        write_truth: false,
        sign_in_lag_secs: 0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        crate::sim_harness::config_for(&sim, dir.path(), &[("DORMANT_POLICY__MODE", "enforce")]);
    let graph = GraphClient::new(GraphSettings::from_config(&config)).expect("graph");
    let store = Store::local(dir.path()).expect("store");
    store.ensure_defaults().await.expect("containers");

    // An enabled member whose last sign-in is long past: a case that opened
    // 20 days ago, notified, with its disable due.
    let user = sim.with_tenant(|t| {
        (0..200u32)
            .find(|&i| {
                t.users[i as usize].enabled()
                    && !t.kinds(i).iter().any(|k| *k != "inactive")
                    && t.kinds(i).contains(&"inactive")
            })
            .map(|i| t.user_id(i))
    });
    let user = user.expect("an inactive plain member");
    let opened = Utc::now() - chrono::Duration::days(20);
    let steps = plan(
        PlanShape {
            subject: dormant::policy::CaseSubject::Member,
            kind: config.tenant_kind,
            has_user_mailbox: false,
            has_direct_licenses: false,
        },
        &config.policy.phases,
    );
    let run = RunId::new(opened);
    let mut case = Case::open(&user, &run, &steps, true, opened);
    case.steps.entry(ActionKind::Notify).or_default().done_at = Some(opened);
    case.steps.entry(ActionKind::Notify).or_default().recorded = true;
    let cases = CaseStore::new(store.clone());
    cases.create(&case).await.expect("create").expect("new");
    let message = ActionMessage {
        v: 1,
        kind: ActionKind::Disable,
        tenant: config.tenant_id.clone(),
        user: ObjectId::parse(&user).expect("id"),
        case: case.id.clone(),
        run: run.clone(),
        not_before: opened + chrono::Duration::days(14),
    };
    store
        .send(ACTIONS_QUEUE, &message.to_text(), SendOptions::default())
        .await
        .expect("send");

    // The disable goes as one `$batch` (PATCH + revokeSignInSessions): it
    // takes effect; its answer never comes.
    sim.set_faults(Faults {
        next_stuck_after_effect: 1,
        stuck_secs: 3_600,
        method: Some("POST".into()),
        path_contains: Some("$batch".into()),
        ..Faults::default()
    });
    let mut first = worker(&sim, dir.path()).spawn().expect("first worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let u = graph
            .get_user(&user, &["id", "accountEnabled"])
            .await
            .expect("read user");
        if u.account_enabled == Some(false) {
            break;
        }
        assert!(Instant::now() < deadline, "the disable never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");

    let audit = AuditLog::new(store.clone());
    let lines = |records: Vec<dormant::store::audit::AuditRecord>| {
        records
            .into_iter()
            .filter(|r| r.case.as_deref() == Some(case.id.as_str()) && r.step == "disable")
            .collect::<Vec<_>>()
    };
    assert!(
        lines(
            audit
                .read_day(Utc::now().date_naive())
                .await
                .expect("audit")
        )
        .is_empty(),
        "killed before recording"
    );

    // The message reappears after its visibility timeout; a new worker
    // finishes the step without acting again.
    sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let out = worker(&sim, dir.path())
        .output()
        .await
        .expect("second worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = lines(
        audit
            .read_day(Utc::now().date_naive())
            .await
            .expect("audit"),
    );
    assert_eq!(recorded.len(), 1, "exactly one record: {recorded:?}");
    assert_eq!(recorded[0].outcome, Outcome::Done);
    assert_eq!(
        recorded[0].detail.as_deref(),
        Some("disabled;sessions-revoked;resumed"),
        "the second worker found the change made and did not make it again"
    );
    let (after, _) = cases.open_case(&user).await.expect("read").expect("open");
    let state = after.step(ActionKind::Disable).expect("disable state");
    assert!(state.recorded && state.done_at.is_some());
    assert_eq!(
        after.snapshot.account_enabled,
        Some(true),
        "snapshot taken before acting"
    );

    // A third delivery of the same message: nothing more.
    store
        .send(ACTIONS_QUEUE, &message.to_text(), SendOptions::default())
        .await
        .expect("send");
    let out = worker(&sim, dir.path())
        .output()
        .await
        .expect("third worker");
    assert!(out.status.success());
    assert_eq!(
        lines(
            audit
                .read_day(Utc::now().date_naive())
                .await
                .expect("audit")
        )
        .len(),
        1
    );
    sim.shutdown().await;
}
