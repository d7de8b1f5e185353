//! The scan's Functions, driven the way the Functions host drives them:
//! `POST /NightlyScan` with a timer payload, forwarded HTTP at
//! `/api/scans` and `/api/runs/{id}`, and `dormant-scan` messages
//! delivered to `POST /ScanContinue` in the host's envelope (the message as
//! a JSON string, its top-level properties copied into Metadata), deleted
//! on a 2xx answer and left to reappear otherwise. Two "instances" (two
//! handlers with their own Graph client and pacer) share one store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dormant::config::{Config, Sources};
use dormant::functions::{AppContext, catalog};
use dormant::graph::{GraphClient, GraphSettings};
use dormant::host::{Application, InvocationResponse};
use dormant::scan::run::{SCAN_QUEUE, ScanRuntime};
use dormant::sim::{Faults, Sim, SimConfig, TenantKind};
use dormant::store::{ACTIONS_QUEUE, ReceivedMessage, Store};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use crate::harness::{fixture, repo_root};

struct Instance {
    base: String,
    /// Stops the in-process server when dropped (`None`: a child process).
    _stop: Option<oneshot::Sender<()>>,
}

async fn instance(config: Config, rt: ScanRuntime) -> Instance {
    instance_with(AppContext::build(config).expect("context"), rt).await
}

async fn instance_with(ctx: AppContext, rt: ScanRuntime) -> Instance {
    dormant::telemetry::init(dormant::telemetry::LogTarget::Stderr);
    let ctx = ctx.with_scan_runtime(rt);
    let app = Application::bind(0).await.expect("bind");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.serve(catalog(Arc::new(ctx)), async move {
        let _ = stopped.await;
    }));
    Instance {
        base,
        _stop: Some(stop),
    }
}

fn config(sim: &Sim, dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut env = sim.settings();
    env.push(("DORMANT_STORE_DIR".into(), dir.display().to_string()));
    env.push(("DORMANT_GRAPH_BUDGET_SHARE".into(), "1".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources::from_env(None, env)).expect("config")
}

async fn tenant(kind: TenantKind, users: u32) -> Sim {
    Sim::start(SimConfig {
        users,
        kind,
        seed: 11,
        write_truth: false,
        ..SimConfig::default()
    })
    .await
    .expect("simulator")
}

/// The host's envelope for a queue message.
fn envelope(message: &ReceivedMessage) -> String {
    let mut metadata = Map::new();
    // The host copies a JSON message's top-level properties into Metadata.
    if let Ok(Value::Object(props)) = serde_json::from_str::<Value>(&message.text) {
        metadata.extend(props);
    }
    metadata.insert("Id".into(), json!(format!("\"{}\"", message.id)));
    metadata.insert(
        "PopReceipt".into(),
        json!(format!("\"{}\"", message.pop_receipt)),
    );
    metadata.insert(
        "DequeueCount".into(),
        json!(message.dequeue_count.to_string()),
    );
    json!({"Data": {"message": message.text}, "Metadata": metadata}).to_string()
}

async fn post_envelope(base: &str, function: &str, body: String) -> (u16, InvocationResponse) {
    let r = reqwest::Client::new()
        .post(format!("{base}/{function}"))
        .header(
            "X-Azure-Functions-InvocationId",
            uuid::Uuid::new_v4().to_string(),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// One delivery as the host makes it.
#[derive(Debug, Clone)]
struct Delivery {
    text: String,
    status: u16,
    instance: usize,
    result: Value,
}

/// Plays the queue trigger until `dormant-scan` has nothing visible:
/// receives a batch, delivers each message to an instance (round robin,
/// concurrently), deletes what was answered 2xx. `copies(step)` says how
/// many times at once a message of that step is delivered (queues deliver
/// at least once).
async fn drain(
    instances: &[Instance],
    store: &Store,
    copies: impl Fn(&str) -> usize,
) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    let mut next = 0;
    for _round in 0..2000 {
        let batch = store
            .receive(SCAN_QUEUE, 16, Duration::from_secs(120))
            .await
            .expect("receive");
        if batch.is_empty() {
            return deliveries;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for message in batch {
            let step: Value = serde_json::from_str(&message.text).expect("JSON text");
            for copy in 0..copies(step["step"].as_str().unwrap_or_default()).max(1) {
                let (i, base) = (
                    next % instances.len(),
                    instances[next % instances.len()].base.clone(),
                );
                next += 1;
                let (message, store) = (message.clone(), store.clone());
                tasks.spawn(async move {
                    let (status, response) =
                        post_envelope(&base, "ScanContinue", envelope(&message)).await;
                    if (200..300).contains(&status) && copy == 0 {
                        store
                            .delete_message(SCAN_QUEUE, &message.id, &message.pop_receipt)
                            .await
                            .expect("delete");
                    }
                    Delivery {
                        text: message.text,
                        status,
                        instance: i,
                        result: response.return_value,
                    }
                });
            }
        }
        while let Some(d) = tasks.join_next().await {
            deliveries.push(d.expect("delivery"));
        }
    }
    panic!("the scan queue never drained");
}

/// Every scan message holds the tenant, the run id, a step and partition
/// keys, nothing else; keys are hex.
fn assert_ids_only(deliveries: &[Delivery]) {
    for d in deliveries {
        let v: Value = serde_json::from_str(&d.text).expect("json");
        let keys: BTreeSet<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            keys.is_subset(&BTreeSet::from([
                "v",
                "tenant",
                "run",
                "step",
                "partitions"
            ])),
            "{}",
            d.text
        );
        for k in v["partitions"].as_array().into_iter().flatten() {
            let k = k.as_str().expect("key");
            assert!(
                k.chars().all(|c| c.is_ascii_hexdigit()) && k.len() <= 6,
                "{k}"
            );
        }
    }
}

async fn get(base: &str, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

async fn post(base: &str, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// `POST /api/scans` that must be accepted; the run id.
async fn start_run(base: &str) -> String {
    let (status, body, _) = post(base, "/api/scans").await;
    assert_eq!(status, 202, "{body}");
    body["runId"].as_str().expect("runId").to_owned()
}

/// One instance of the handler on a fresh local store.
async fn lone_instance(
    sim: &Sim,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> (Instance, Store) {
    let one = instance(config(sim, dir, extra), ScanRuntime::default()).await;
    (one, Store::local(dir).expect("store"))
}

/// Every message delivered once.
fn once(_step: &str) -> usize {
    1
}

fn finalized(deliveries: &[Delivery]) -> usize {
    deliveries
        .iter()
        .filter(|d| d.result["finalized"] == true)
        .count()
}

async fn assert_no_actions(store: &Store, why: &str) {
    let actions = store
        .receive(ACTIONS_QUEUE, 32, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(actions.is_empty(), "{why}");
}

fn csv_ids(store_dir: &std::path::Path, run: &str) -> usize {
    let path = store_dir.join(format!("dormant-reports/{run}/inactive-users.csv"));
    let csv = std::fs::read(&path).expect("csv");
    let mut ids = BTreeSet::new();
    for record in csv::Reader::from_reader(csv.as_slice()).records() {
        let record = record.expect("row");
        assert!(ids.insert(record[0].to_owned()), "{} twice", &record[0]);
    }
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_timer_fans_the_scan_out_over_two_instances() {
    let users = 1500;
    let sim = tenant(TenantKind::Workforce, users).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Pages of 60: the big partitions split and hand their children on.
    let rt = || ScanRuntime::default().with_page_size(60);
    let instances = [
        instance(config(&sim, dir.path(), &[]), rt()).await,
        instance(config(&sim, dir.path(), &[]), rt()).await,
    ];
    let store = Store::local(dir.path()).expect("store");

    let (status, timer) = post_envelope(
        &instances[0].base,
        "NightlyScan",
        fixture("host/timer-first-run.json"),
    )
    .await;
    assert_eq!(status, 200);
    let run = timer.return_value["runId"]
        .as_str()
        .expect("run id")
        .to_owned();
    assert_eq!(timer.return_value["resumed"], false);

    // A second timer while it runs is skipped, not a second scan.
    let (status, again) = post_envelope(
        &instances[1].base,
        "NightlyScan",
        fixture("host/timer-without-status.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again.return_value["runningRunId"], run.as_str());

    let deliveries = drain(&instances, &store, once).await;
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");
    assert_ids_only(&deliveries);
    let partition_messages = deliveries
        .iter()
        .filter(|d| d.text.contains("\"partitions\""))
        .count();
    assert!(
        partition_messages > 10,
        "the roots fan out a few per message: {partition_messages}"
    );
    for i in 0..instances.len() {
        let scanned: u64 = deliveries
            .iter()
            .filter(|d| d.instance == i)
            .filter_map(|d| d.result["scanned"].as_u64())
            .sum();
        assert!(scanned > 0, "instance {i} shared the tenant");
    }
    assert_eq!(finalized(&deliveries), 1, "finalised exactly once");

    let (status, view, _) = get(&instances[1].base, &format!("/api/runs/{run}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "done");
    assert_eq!(view["counts"]["scanned"], users);
    assert_eq!(view["partitions"]["pending"], 0);
    assert!(
        view["partitions"]["split"].as_u64().unwrap_or(0) > 0,
        "{view}"
    );
    assert!(
        deliveries
            .iter()
            .any(|d| d.text.contains("\"partitions\"")
                && d.result["handedOn"].as_u64().unwrap_or(0) > 0),
        "split children went to the queue"
    );
    assert_eq!(view["quarantined"], false);
    assert!(view["counts"]["graphRequests"].as_u64().unwrap_or(0) > partition_messages as u64);
    let csv = view["reports"]["csv"].as_str().expect("csv name");
    assert_eq!(csv, format!("dormant-reports/{run}/inactive-users.csv"));
    assert!(dir.path().join(csv).is_file());
    let rows = csv_ids(dir.path(), &run) as u64;
    let by_verdict: u64 = view["counts"]["byVerdict"]
        .as_object()
        .expect("byVerdict")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(rows, by_verdict, "every reported user has one row");

    // A message seen again after the run finished does nothing.
    let replay = ReceivedMessage {
        text: deliveries[0].text.clone(),
        ..fake_message()
    };
    let (status, again) =
        post_envelope(&instances[0].base, "ScanContinue", envelope(&replay)).await;
    assert_eq!(status, 200);
    assert_eq!(again.return_value["alreadyFinished"], true);
    sim.shutdown().await;
}

fn fake_message() -> ReceivedMessage {
    ReceivedMessage {
        id: "6a1f0000-0000-4000-8000-000000000009".into(),
        pop_receipt: "AgAAAAMAAAAAAAAA".into(),
        text: String::new(),
        dequeue_count: 1,
        inserted_at: chrono::Utc::now(),
        next_visible_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_scan_answers_202_at_once_and_a_dry_run_enqueues_nothing() {
    let users = 400;
    let sim = tenant(TenantKind::Workforce, users).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, store) =
        lone_instance(&sim, dir.path(), &[("DORMANT_POLICY__MODE", "enforce")]).await;

    let (status, body, _) = post(&one.base, "/api/scans?dryRun=maybe").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad-request");

    let (status, body, headers) = post(&one.base, "/api/scans?dryRun=true").await;
    assert_eq!(status, 202, "{body}");
    let run = body["runId"].as_str().expect("runId").to_owned();
    assert_eq!(body["dryRun"], true);
    assert_eq!(
        headers["location"].to_str().expect("location"),
        format!("/api/runs/{run}")
    );

    // Nothing ran inside the request: the run waits on the queue.
    let (status, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "running");
    assert!(view["counts"].is_null() && view["reports"].is_null());

    let (status, busy, headers) = post(&one.base, "/api/scans").await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "scan-running");
    assert_eq!(
        headers["location"].to_str().expect("location"),
        format!("/api/runs/{run}")
    );

    let deliveries = drain(std::slice::from_ref(&one), &store, once).await;
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");

    let (status, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "done");
    assert_eq!(view["dryRun"], true);
    assert_eq!(view["counts"]["scanned"], users);
    assert!(
        view["counts"]["actionsPlanned"].as_u64().unwrap_or(0) > 0,
        "{view}"
    );
    assert_eq!(view["counts"]["actionsEnqueued"], 0);
    let summary: Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join(format!("dormant-reports/{run}/summary.json")),
        )
        .expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["dryRun"], true);
    assert_eq!(summary["mode"], "enforce");
    assert_no_actions(&store, "a dry run enqueues nothing").await;

    for path in [
        "/api/runs/not-a-run",
        "/api/runs/20261122T020000Z-abcdef",
        "/api/runs/..%2F..%2Fscan.lease",
    ] {
        let (status, body, _) = get(&one.base, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not-found", "{path}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_time_budget_hands_the_rest_on_and_the_finalise_happens_once() {
    let users = 600;
    let sim = tenant(TenantKind::B2c, users).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // No time at all: every invocation starts one partition, then hands on.
    let budget = || ScanRuntime::new(Duration::ZERO, 4);
    let instances = [
        instance(config(&sim, dir.path(), &[]), budget()).await,
        instance(config(&sim, dir.path(), &[]), budget()).await,
    ];
    let store = Store::local(dir.path()).expect("store");
    let run = start_run(&instances[0].base).await;

    // Every finalize message is delivered four times at once.
    let deliveries = drain(&instances, &store, |step| match step {
        "finalize" => 4,
        _ => 1,
    })
    .await;
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");
    assert_ids_only(&deliveries);
    let continued = deliveries
        .iter()
        .filter(|d| d.result["scanned"] == 1 && d.result["handedOn"].as_u64().unwrap_or(0) > 0)
        .count();
    assert!(
        continued > 5,
        "invocations out of time handed the rest on: {continued}"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d.result["scanned"].as_u64().unwrap_or(0) <= 1),
        "nothing starts after the budget"
    );
    let finalize_deliveries = deliveries
        .iter()
        .filter(|d| d.text.contains("\"finalize\""))
        .count();
    assert!(
        finalize_deliveries >= 4,
        "the finalise went to its own message"
    );
    assert_eq!(finalized(&deliveries), 1, "finalised exactly once");

    let (_, view, _) = get(&instances[0].base, &format!("/api/runs/{run}")).await;
    assert_eq!(view["status"], "done");
    assert_eq!(
        view["counts"]["scanned"], users,
        "nobody lost, nobody twice"
    );
    csv_ids(dir.path(), &run);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_quarantine_limit_waits_and_says_so() {
    let sim = tenant(TenantKind::Workforce, 300).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, store) = lone_instance(
        &sim,
        dir.path(),
        &[
            ("DORMANT_POLICY__MODE", "enforce"),
            ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "1"),
        ],
    )
    .await;
    let run = start_run(&one.base).await;
    drain(std::slice::from_ref(&one), &store, once).await;
    let (_, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(view["status"], "quarantined", "{view}");
    assert_eq!(view["quarantined"], true);
    assert!(
        view["quarantineReason"]
            .as_str()
            .is_some_and(|r| r.contains('1')),
        "{view}"
    );
    assert_eq!(view["counts"]["actionsEnqueued"], 0);
    assert_no_actions(&store, "a quarantined run enqueues nothing").await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_no_retry_can_fix_fails_the_run_and_frees_the_tenant() {
    let sim = tenant(TenantKind::Workforce, 100).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // An exclusion group that does not exist: the scan cannot tell who is
    // protected, so it must not go on.
    let (one, store) = lone_instance(
        &sim,
        dir.path(),
        &[(
            "DORMANT_POLICY__EXCLUDE_GROUPS",
            "0d7f6c1e-9a1b-4c2d-8e3f-5a6b7c8d9e0f",
        )],
    )
    .await;
    let run = start_run(&one.base).await;
    let deliveries = drain(std::slice::from_ref(&one), &store, once).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, 200, "recorded, not retried forever");
    let (_, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert!(
        view["reports"].is_null() && view["counts"].is_null(),
        "{view}"
    );
    assert!(
        view["error"]
            .as_str()
            .is_some_and(|e| e.contains("0d7f6c1e-9a1b-4c2d-8e3f-5a6b7c8d9e0f")),
        "{view}"
    );
    let audit = store
        .audit_log()
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("audit");
    assert!(audit.iter().any(|r| r.step == "scan-failed"), "{audit:?}");
    // The tenant is free: the next scan starts at once.
    let (status, next, _) = post(&one.base, "/api/scans").await;
    assert_eq!(status, 202, "{next}");
    assert_ne!(next["runId"], run.as_str());
    assert_eq!(next["resumed"], false);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_about_to_be_poisoned_frees_the_lease_so_the_run_is_swept_up() {
    let users = 200;
    let sim = tenant(TenantKind::Workforce, users).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&sim, dir.path(), &[]);
    let mut settings = GraphSettings::from_config(&config);
    settings.max_retry_time = Duration::from_millis(300);
    let graph = GraphClient::new(settings).expect("graph");
    let one = instance_with(
        AppContext::build(config)
            .expect("context")
            .with_graph(graph),
        ScanRuntime::default(),
    )
    .await;
    let store = Store::local(dir.path()).expect("store");
    let run = start_run(&one.base).await;

    // Graph down (tokens still issued).
    sim.set_faults(Faults {
        rate_503: 1.0,
        path_contains: Some("/v1.0/".into()),
        ..Faults::default()
    });
    let mut start = store
        .receive(SCAN_QUEUE, 1, Duration::from_secs(60))
        .await
        .expect("receive")
        .pop()
        .expect("the start message");
    start.dequeue_count = 1;
    let (status, _) = post_envelope(&one.base, "ScanContinue", envelope(&start)).await;
    assert_eq!(status, 500, "Graph down: retried");
    let (status, busy, _) = post(&one.base, "/api/scans").await;
    assert_eq!(status, 409, "{busy}");

    start.dequeue_count = dormant::functions::scan_continue::MAX_DEQUEUE_COUNT;
    let (status, _) = post_envelope(&one.base, "ScanContinue", envelope(&start)).await;
    assert_eq!(status, 500);
    store
        .delete_message(SCAN_QUEUE, &start.id, &start.pop_receipt)
        .await
        .expect("the host moves it to the poison queue");

    // Graph is back; the next StartScan sweeps the same run up.
    sim.set_faults(Faults::default());
    let (status, again, _) = post(&one.base, "/api/scans?dryRun=true").await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["runId"], run.as_str());
    assert_eq!(again["resumed"], true);
    assert_eq!(
        again["dryRun"], false,
        "a resumed run keeps its own setting"
    );
    drain(std::slice::from_ref(&one), &store, once).await;
    let (_, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["counts"]["scanned"], users);
    sim.shutdown().await;
}

/// The same fan-out on Azure storage (Azurite checks Shared Key
/// signatures, ETags and queue visibility as Azure does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_runs_on_azure_storage() {
    let users = 500;
    let sim = tenant(TenantKind::Workforce, users).await;
    let connection = crate::azurite::azurite().connection_string();
    let config = || {
        let mut env = sim.settings();
        env.push(("AzureWebJobsStorage".into(), connection.clone()));
        Config::load(&Sources::from_env(None, env)).expect("config")
    };
    let instances = [
        instance(config(), ScanRuntime::default()).await,
        instance(config(), ScanRuntime::default()).await,
    ];
    let store = Store::connect(&config().storage, None).expect("azurite store");
    let run = start_run(&instances[0].base).await;
    // Every message delivered twice at once: nobody counts twice.
    let deliveries = drain(&instances, &store, |_| 2).await;
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");
    assert_eq!(finalized(&deliveries), 1, "finalised exactly once");
    let (_, view, _) = get(&instances[1].base, &format!("/api/runs/{run}")).await;
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["counts"]["scanned"], users);
    let csv = store
        .get("dormant-reports", &format!("{run}/inactive-users.csv"))
        .await
        .expect("csv");
    let rows = csv::Reader::from_reader(csv.body.as_ref())
        .records()
        .count() as u64;
    let by_verdict: u64 = view["counts"]["byVerdict"]
        .as_object()
        .expect("byVerdict")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(rows, by_verdict);
    sim.shutdown().await;
}

/// `dormant serve` itself, configured from its environment as the host
/// starts it, serves the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_serve_runs_a_scan_end_to_end() {
    let users = 300;
    let sim = tenant(TenantKind::B2c, users).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env: Vec<(String, String)> = sim.settings();
    env.push(("DORMANT_STORE_DIR".into(), dir.path().display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = crate::harness::ServeProcess::start(&env).await;
    let one = Instance {
        base: serve.url(""),
        _stop: None,
    };
    let store = Store::local(dir.path()).expect("store");
    let run = start_run(&one.base).await;
    let deliveries = drain(std::slice::from_ref(&one), &store, once).await;
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");
    let (_, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["counts"]["scanned"], users);
    let line = serve.wait_for_line("scan step done").await;
    assert!(line.contains("invocation_id"), "{line}");
    sim.shutdown().await;
}

#[test]
fn the_scan_functions_are_declared_as_the_contract_says() {
    let read = |name: &str| -> Value {
        let path = repo_root().join(format!("functions/{name}/function.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("function.json")).expect("json")
    };
    let timer = &read("NightlyScan")["bindings"][0];
    assert_eq!(timer["schedule"], "0 0 2 * * *");
    assert_eq!(timer["runOnStartup"], false);
    for (name, route, method) in [
        ("StartScan", "scans", "post"),
        ("RunStatus", "runs/{id}", "get"),
    ] {
        let http = &read(name)["bindings"][0];
        assert_eq!(http["authLevel"], "admin", "{name}");
        assert_eq!(http["route"], route, "{name}");
        assert_eq!(http["methods"], json!([method]), "{name}");
    }
    let queue = &read("ScanContinue")["bindings"][0];
    assert_eq!(queue["queueName"], SCAN_QUEUE);
    let host_json: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("host.json")).expect("host.json"),
    )
    .expect("json");
    assert_eq!(
        host_json["extensions"]["queues"]["maxDequeueCount"],
        dormant::functions::scan_continue::MAX_DEQUEUE_COUNT
    );
    // The budget leaves room for partitions in flight and the finalise
    // inside host.json's functionTimeout.
    let host: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("host.json")).expect("host.json"),
    )
    .expect("json");
    let timeout: Vec<u64> = host["functionTimeout"]
        .as_str()
        .expect("functionTimeout")
        .split(':')
        .map(|p| p.parse().expect("number"))
        .collect();
    let timeout = timeout[0] * 3600 + timeout[1] * 60 + timeout[2];
    assert!(dormant::scan::run::DEFAULT_TIME_BUDGET.as_secs() * 10 <= timeout * 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_scan_with_guests_only_runs_the_guest_audit_on_the_queue() {
    let sim = tenant(TenantKind::Workforce, 400).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, store) = lone_instance(&sim, dir.path(), &[]).await;

    let (status, body, _) = post(&one.base, "/api/scans?guestsOnly=maybe").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad-request");

    let (status, body, _) = post(&one.base, "/api/scans?guestsOnly=true").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["scope"], "guests");
    let run = body["runId"].as_str().expect("runId").to_owned();
    let deliveries = drain(std::slice::from_ref(&one), &store, once).await;
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");

    let (status, view, _) = get(&one.base, &format!("/api/runs/{run}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["scope"], "guests");
    let guests = sim.with_tenant(|t| t.users.iter().filter(|u| u.arch.is_guest()).count());
    assert!(guests > 0);
    assert_eq!(view["counts"]["scanned"], guests as u64);
    let reports = dir.path().join("dormant-reports");
    assert!(reports.join("latest-guests/summary.json").exists());
    assert!(
        !reports.join("latest").exists(),
        "a guest audit is not the newest full report"
    );
    sim.shutdown().await;
}
