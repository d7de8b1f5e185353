//! Quarantine and release, the operator endpoints (`ReleaseRun`,
//! `RestoreUser`) served as the Functions host forwards them, dry runs,
//! report mode, and the signed notification webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use dormant::clock::Clock;
use dormant::functions::user_actions::{DrainOptions, drain};
use dormant::functions::{AppContext, catalog};
use dormant::host::Application;
use dormant::lifecycle::CaseStore;
use dormant::lifecycle::notify::signature;
use dormant::scan::run::ScanOptions;
use dormant::sim::{Sim, SimConfig};
use dormant::store::ACTIONS_QUEUE;
use secrecy::SecretString;
use serde_json::Value;

const WEBHOOK_SECRET: &str = "whsec-test-not-a-real-secret";

struct Tenant {
    sim: Sim,
    ctx: Arc<AppContext>,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn tenant(extra: &[(&str, String)]) -> Tenant {
    let sim = Sim::start(SimConfig {
        users: 300,
        seed: 17,
        write_truth: false,
        sign_in_lag_secs: 0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = vec![("DORMANT_POLICY__MODE", "enforce")];
    settings.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let config = crate::sim_harness::config_for(&sim, dir.path(), &settings);
    let clock = Clock::system();
    clock.advance(sim.now() - chrono::Utc::now());
    let ctx = Arc::new(
        AppContext::build(config)
            .expect("context")
            .with_clock(clock),
    );
    let app = Application::bind(0).await.expect("bind");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.serve(catalog(ctx.clone()), std::future::pending()));
    Tenant {
        sim,
        ctx,
        base,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn queued(t: &Tenant) -> usize {
    // Peek by receiving with a tiny visibility timeout.
    let msgs = t
        .ctx
        .store
        .receive(ACTIONS_QUEUE, 32, Duration::from_millis(1))
        .await
        .expect("receive");
    tokio::time::sleep(Duration::from_millis(5)).await;
    msgs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_run_enqueues_nothing_until_released() {
    let t = tenant(&[
        ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "3".into()),
        ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100".into()),
    ])
    .await;
    let scanner = t.ctx.scanner().await.expect("scanner");
    let outcome = scanner
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("scan");
    let s = &outcome.summary;
    assert!(s.quarantined, "{s:?}");
    assert!(
        s.quarantine_reason
            .as_deref()
            .is_some_and(|r| r.contains("limit of 3"))
    );
    assert_eq!(s.actions_enqueued, 0);
    let cases = CaseStore::new(t.ctx.store.clone());
    assert!(cases.open_users().await.expect("cases").is_empty());
    assert_eq!(queued(&t).await, 0, "nothing enqueued while quarantined");

    // Not a run id → 404; a run that is not quarantined → 409.
    let r = t
        .http
        .post(format!("{}/api/runs/not-a-run/release", t.base))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 404);

    let r = t
        .http
        .post(format!("{}/api/runs/{}/release", t.base, outcome.run))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "released");
    let opened = body["cases"]["opened"].as_u64().expect("opened");
    assert!(opened > 3, "{body}");
    assert_eq!(body["cases"]["enqueued"].as_u64(), Some(opened));
    assert_eq!(
        cases.open_users().await.expect("cases").len() as u64,
        opened
    );
    let state = scanner
        .run_state(&outcome.run)
        .await
        .expect("state")
        .expect("run");
    assert_eq!(format!("{:?}", state.status), "Released");

    // A second release opens nothing more and queues nothing more.
    let again: Value = t
        .http
        .post(format!("{}/api/runs/{}/release", t.base, outcome.run))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    assert_eq!(again["cases"]["opened"], 0, "{again}");
    assert_eq!(again["cases"]["enqueued"], 0, "{again}");

    let audit = t
        .ctx
        .audit
        .read_day(t.ctx.clock.now().date_naive())
        .await
        .expect("audit");
    assert_eq!(audit.iter().filter(|r| r.step == "quarantine").count(), 1);
    assert_eq!(audit.iter().filter(|r| r.step == "release").count(), 1);
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_and_report_mode_open_no_case() {
    let t = tenant(&[("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100".into())]).await;
    let scanner = t.ctx.scanner().await.expect("scanner");
    let s = scanner
        .run(
            &ScanOptions {
                dry_run: true,
                ..ScanOptions::default()
            },
            Arc::new(()),
        )
        .await
        .expect("dry run")
        .summary;
    assert!(s.actions_planned > 0);
    assert_eq!(s.actions_enqueued, 0);
    let cases = CaseStore::new(t.ctx.store.clone());
    assert!(cases.open_users().await.expect("cases").is_empty());
    assert_eq!(queued(&t).await, 0);
    t.sim.shutdown().await;

    let t = tenant(&[("DORMANT_POLICY__MODE", "report".into())]).await;
    let s = t
        .ctx
        .scanner()
        .await
        .expect("scanner")
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("scan")
        .summary;
    assert_eq!((s.actions_enqueued, s.cases.clone()), (0, None));
    assert!(
        CaseStore::new(t.ctx.store.clone())
            .open_users()
            .await
            .expect("cases")
            .is_empty()
    );
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_posts_a_signed_webhook_with_ids_only_and_restore_answers_over_http() {
    // The webhook receiver: records bodies and signatures; fails the first
    // delivery with 503 so the retry is exercised.
    let seen: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (seen2, calls2) = (seen.clone(), calls.clone());
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (seen, calls) = (seen2.clone(), calls2.clone());
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("x-dormant-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().expect("seen").push((sig, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let t = tenant(&[
        ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "1".into()),
        ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100".into()),
        ("DORMANT_POLICY__NOTIFY__WEBHOOK", hook),
        (
            "DORMANT_POLICY__NOTIFY__WEBHOOK_SECRET",
            WEBHOOK_SECRET.into(),
        ),
    ])
    .await;
    let scanner = t.ctx.scanner().await.expect("scanner");
    let run = scanner
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("scan")
        .run;
    scanner.release(&run).await.expect("release");
    let users = CaseStore::new(t.ctx.store.clone())
        .open_users()
        .await
        .expect("cases");
    let drained = drain(
        &t.ctx,
        &DrainOptions {
            once: true,
            visibility: Duration::from_secs(60),
            batch: 1,
        },
    )
    .await
    .expect("drain");
    assert_eq!(drained.handled as usize, users.len());
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen.len(),
        users.len(),
        "one delivery per case after the retry"
    );
    let secret = SecretString::from(WEBHOOK_SECRET);
    for (sig, body) in &seen {
        assert_eq!(sig, &signature(&secret, body), "signed with HMAC-SHA256");
        let v: Value = serde_json::from_slice(body).expect("json body");
        assert!(users.contains(&v["user"].as_str().expect("user").to_owned()));
        assert!(
            v["idempotencyKey"]
                .as_str()
                .expect("key")
                .ends_with(":notify")
        );
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains('@'), "ids only: {text}");
        assert!(!text.contains(WEBHOOK_SECRET));
    }

    // Restore over HTTP: a bad id is 400, a user without a case 404, a
    // user with an open case 200 (nothing was removed yet).
    let post = |path: String| {
        let http = t.http.clone();
        async move { http.post(path).send().await.expect("POST") }
    };
    assert_eq!(
        post(format!("{}/api/users/nope/restore", t.base))
            .await
            .status()
            .as_u16(),
        400
    );
    assert_eq!(
        post(format!(
            "{}/api/users/00000000-0000-4000-8000-000000000000/restore",
            t.base
        ))
        .await
        .status()
        .as_u16(),
        404
    );
    let r = post(format!("{}/api/users/{}/restore", t.base, users[0])).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["outcome"], "done", "{body}");
    assert_eq!(body["detail"], "restored-by-operator;nothing-to-undo");
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_exchange_the_mailbox_waits_for_a_person_and_the_licenses_stay() {
    let t = tenant(&[
        ("DORMANT_EXCHANGE_URL", String::new()),
        ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "100000".into()),
        ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100".into()),
    ])
    .await;
    let day = |n: i64| {
        t.sim.advance(Duration::from_secs((n * 86_400) as u64));
        t.ctx.clock.advance(chrono::Duration::days(n));
    };
    let night = || async {
        t.ctx
            .scanner()
            .await
            .expect("scanner")
            .run(&ScanOptions::default(), Arc::new(()))
            .await
            .expect("scan");
        drain(
            &t.ctx,
            &DrainOptions {
                once: true,
                visibility: Duration::from_secs(60),
                batch: 16,
            },
        )
        .await
        .expect("drain");
    };
    night().await;
    let cases = CaseStore::new(t.ctx.store.clone());
    let mut mailbox_user = None;
    for u in cases.open_users().await.expect("cases") {
        let (case, _) = cases.open_case(&u).await.expect("read").expect("open");
        if case
            .in_plan(dormant::lifecycle::ActionKind::ConvertMailbox)
            .is_some()
            && case
                .in_plan(dormant::lifecycle::ActionKind::RemoveLicenses)
                .is_some()
        {
            mailbox_user = Some(u);
            break;
        }
    }
    let a = mailbox_user.expect("a user with a mailbox and direct licenses");
    let graph = t.ctx.graph().await.expect("graph").clone();
    let licensed = |g: dormant::graph::GraphClient, a: String| async move {
        g.get_user(&a, &["id", "assignedLicenses"])
            .await
            .expect("user")
            .assigned_licenses
            .len()
    };
    let before = licensed(graph.clone(), a.clone()).await;

    day(14);
    night().await; // disable
    day(1);
    night().await; // the conversion: nobody can do it
    let (case, _) = cases.open_case(&a).await.expect("read").expect("open");
    assert_eq!(case.status, dormant::lifecycle::CaseStatus::Waiting);
    assert_eq!(
        case.reason.as_deref(),
        Some("mailbox-conversion-not-configured")
    );
    day(7);
    night().await; // day 22: licenses are due, but they wait for the mailbox
    assert_eq!(
        licensed(graph.clone(), a.clone()).await,
        before,
        "licenses stay"
    );

    // A person converts the mailbox; the next night goes on.
    let settings = dormant::graph::GraphSettings::from_config(&t.ctx.config);
    let exchange = dormant::graph::exchange::ExchangeAdmin::new(
        &settings,
        &url::Url::parse(&t.sim.base_url()).expect("url"),
        t.ctx.http.clone(),
    )
    .expect("exchange");
    exchange.set_mailbox_type(&a, true).await.expect("convert");
    night().await;
    let (case, _) = cases.open_case(&a).await.expect("read").expect("open");
    assert_eq!(case.status, dormant::lifecycle::CaseStatus::Open);
    let convert = case
        .step(dormant::lifecycle::ActionKind::ConvertMailbox)
        .expect("convert step");
    assert_eq!(
        convert.record.as_ref().and_then(|r| r.detail.as_deref()),
        Some("converted-by-person")
    );
    assert!(convert.recorded);
    // That night also queued the license removal and the worker ran it.
    assert!(
        licensed(graph.clone(), a.clone()).await < before,
        "direct licenses go once the mailbox is shared"
    );
    t.sim.shutdown().await;
}
