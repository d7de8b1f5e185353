//! The erasure end to end with the real parts: the simulated B2C tenant
//! (its identity provider signs the user's RS256 ID token, its Graph deletes
//! and purges), Azurite as the storage account (`AzureWebJobsStorage`, Shared
//! Key), and the `dormant serve` binary as a child process. The
//! test plays the Functions host: it forwards the HTTP calls at their `/api`
//! paths and drains the real `dormant-actions` queue in Azurite, handing
//! each message to `POST /UserActions` as the queue trigger does (deleted on
//! a 2xx, left to reappear otherwise, poison after five deliveries).
//!
//! Azurite is shared with other tests of this binary, so everything read
//! back is filtered to this test's user.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use dormant::sim::{SimConfig, TenantKind};
use dormant::store::audit::{AuditLog, AuditRecord, day_blob_name};
use dormant::store::{
    ACTIONS_QUEUE, AUDIT_CONTAINER, ERASURES_QUEUE, ReceivedMessage, StorageConfig, Store,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::ServeProcess;
use crate::sim_harness::Harness;

/// The queue extension's `maxDequeueCount` (host.json).
const MAX_DEQUEUE: u32 = 5;
/// Short, so a failed delivery comes back quickly in the test.
const VISIBILITY: Duration = Duration::from_secs(2);

/// What the test knows about the user that must never leave the directory.
struct Person {
    id: String,
    personal: Vec<String>,
}

fn pick_local_account(h: &Harness) -> Person {
    h.sim.with_tenant(|t| {
        let i = (0..t.users.len() as u32)
            .find(|&i| {
                let u = &t.users[i as usize];
                t.kinds(i) == ["b2c-local-email"] && u.role == 0 && !u.is_deleted()
            })
            .expect("the B2C tenant has a plain local account");
        let mut personal = vec![t.upn(i), t.display_name(i), t.b2c_sign_in_name(i)];
        personal.extend(t.mail(i));
        Person {
            id: t.user_id(i),
            personal,
        }
    })
}

/// The host's queue-trigger request for one received message
/// (`messageEncoding: none`: the text as a JSON string; top-level JSON
/// properties copied into Metadata, as the host does).
fn envelope(m: &ReceivedMessage) -> Value {
    let quoted = |s: &str| Value::String(Value::String(s.to_owned()).to_string());
    let mut metadata = json!({
        "DequeueCount": m.dequeue_count.to_string(),
        "Id": quoted(&m.id),
        "PopReceipt": quoted(&m.pop_receipt),
        "InsertionTime": m.inserted_at.to_rfc3339(),
        "NextVisibleTime": m.next_visible_at.to_rfc3339(),
        "ExpirationTime": (m.inserted_at + chrono::Duration::days(7)).to_rfc3339(),
        "sys": {"MethodName": "UserActions", "UtcNow": Utc::now().to_rfc3339(),
            "RandGuid": uuid::Uuid::new_v4().to_string()},
    });
    if let Ok(Value::Object(props)) = serde_json::from_str::<Value>(&m.text) {
        for (k, v) in props {
            metadata[k] = v;
        }
    }
    json!({"Data": {"message": m.text}, "Metadata": metadata})
}

/// Plays the queue trigger until `expected` messages of `user` were
/// handled with a 2xx. Returns the texts and the answers' ReturnValues.
async fn drain_actions(
    serve: &ServeProcess,
    store: &Store,
    user: &str,
    expected: usize,
) -> (Vec<String>, Vec<Value>) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut texts, mut returns) = (Vec::new(), Vec::new());
    while returns.len() < expected {
        assert!(
            Instant::now() < deadline,
            "{} of {expected} messages handled in 60 s",
            returns.len()
        );
        let batch = store
            .receive(ACTIONS_QUEUE, 16, VISIBILITY)
            .await
            .expect("receive from Azurite");
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for m in batch {
            let ours = serde_json::from_str::<Value>(&m.text)
                .is_ok_and(|v| v["user"].as_str() == Some(user));
            if !ours {
                continue; // another test's message: let it reappear for them
            }
            assert!(
                m.dequeue_count <= MAX_DEQUEUE,
                "the host would have poisoned {}",
                m.text
            );
            let r = client
                .post(serve.url("/UserActions"))
                .header(
                    "X-Azure-Functions-InvocationId",
                    uuid::Uuid::new_v4().to_string(),
                )
                .json(&envelope(&m))
                .send()
                .await
                .expect("POST /UserActions");
            if r.status().is_success() {
                let body: Value = r.json().await.expect("invocation response");
                store
                    .delete_message(ACTIONS_QUEUE, &m.id, &m.pop_receipt)
                    .await
                    .expect("the host deletes a handled message");
                texts.push(m.text.clone());
                returns.push(body["ReturnValue"].clone());
            }
        }
    }
    (texts, returns)
}

async fn audit_of(store: &Store, user: &str, days: &[NaiveDate]) -> (Vec<AuditRecord>, String) {
    let log = AuditLog::new(store.clone());
    let (mut records, mut raw) = (Vec::new(), String::new());
    for day in days {
        records.extend(
            log.read_day(*day)
                .await
                .expect("audit day")
                .into_iter()
                .filter(|r| r.user.as_deref() == Some(user)),
        );
        if let Ok(blob) = store.get(AUDIT_CONTAINER, &day_blob_name(*day, 0)).await {
            raw.push_str(&String::from_utf8_lossy(&blob.body));
        }
    }
    (records, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_on_the_simulator_and_azurite_through_dormant_serve() {
    let started = Utc::now().date_naive();
    let h = Harness::start(SimConfig {
        users: 60,
        kind: TenantKind::B2c,
        ..SimConfig::default()
    })
    .await;
    let person = pick_local_account(&h);
    let azurite = crate::azurite::azurite();
    let connection = azurite.connection_string();
    let mut env: Vec<(String, String)> = h
        .sim
        .settings()
        .into_iter()
        .filter(|(k, _)| k.starts_with("DORMANT_"))
        .collect();
    env.push(("AzureWebJobsStorage".into(), connection.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = ServeProcess::start(&env).await;
    let store = Store::connect(
        &StorageConfig::ConnectionString(SecretString::from(connection)),
        None,
    )
    .expect("Azurite store");
    let token = h
        .sim
        .issue_user_token(&person.id, None, Duration::from_secs(30))
        .expect("the simulator's identity provider signs an ID token");
    let api = reqwest::Client::new();
    let delete = || {
        api.post(serve.url("/api/gdpr/delete"))
            .header("x-functions-key", "checked-by-the-host")
            .bearer_auth(&token)
            .send()
    };

    let graph = h.token().await;
    let (s, _, _) = h.get(&graph, &format!("/v1.0/users/{}", person.id)).await;
    assert_eq!(s, 200, "the user exists before the request");

    // request → 202 with the id and where to look.
    let r = delete().await.expect("POST delete");
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let accepted: Value = r.json().await.expect("json");
    let id = accepted["requestId"]
        .as_str()
        .expect("requestId")
        .to_owned();
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(location, format!("/api/gdpr/requests/{id}"));

    // A repeat while pending: the same request (and the job enqueued again,
    // which the idempotent erasure absorbs).
    let r = delete().await.expect("POST delete again");
    assert_eq!(r.status(), 202);
    let again: Value = r.json().await.expect("json");
    assert_eq!(again["requestId"], id.as_str());
    let status = |api: reqwest::Client| {
        let url = serve.url(&location);
        let token = token.clone();
        async move {
            let r = api
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("GET status");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("status json")
        }
    };
    assert_eq!(status(api.clone()).await["status"], "accepted");

    // The worker: the host's queue trigger over Azurite's real queue.
    let (action_texts, returns) = drain_actions(&serve, &store, &person.id, 2).await;
    assert_eq!(returns[0]["status"], "done", "{returns:?}");
    assert_eq!(returns[1]["requestId"], id.as_str());
    for text in &action_texts {
        let m: Value = serde_json::from_str(text).expect("action JSON");
        assert_eq!(
            (m["kind"].as_str(), m["case"].as_str()),
            (Some("gdpr-erase"), Some(id.as_str()))
        );
    }

    // Gone from users and from deleted items (the simulator's Graph says so).
    let (s, _, _) = h.get(&graph, &format!("/v1.0/users/{}", person.id)).await;
    assert_eq!(s, 404, "the user is no longer in /users");
    let (s, _, _) = h
        .get(
            &graph,
            &format!("/v1.0/directory/deletedItems/{}", person.id),
        )
        .await;
    assert_eq!(s, 404, "the user was purged from deleted items");

    // Exactly one user-erased event for other systems.
    let events: Vec<ReceivedMessage> = store
        .receive(ERASURES_QUEUE, 32, Duration::from_secs(30))
        .await
        .expect("receive events")
        .into_iter()
        .filter(|m| {
            serde_json::from_str::<Value>(&m.text)
                .is_ok_and(|v| v["user"].as_str() == Some(person.id.as_str()))
        })
        .collect();
    assert_eq!(events.len(), 1, "one event per erasure");
    let event: Value = serde_json::from_str(&events[0].text).expect("event JSON");
    assert_eq!(event.as_object().map(|o| o.len()), Some(3), "{event}");
    assert_eq!(event["v"], 1);
    chrono::DateTime::parse_from_rfc3339(event["erasedAt"].as_str().expect("erasedAt"))
        .expect("erasedAt is a date");
    for e in &events {
        store
            .delete_message(ERASURES_QUEUE, &e.id, &e.pop_receipt)
            .await
            .expect("consume the event");
    }

    // Status done; a repeat after completion says done, same id, no new job.
    let done = status(api.clone()).await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["requestId"], id.as_str());
    let r = delete().await.expect("POST delete after completion");
    assert_eq!(r.status(), 200);
    let after: Value = r.json().await.expect("json");
    assert_eq!(
        (after["requestId"].as_str(), after["status"].as_str()),
        (Some(id.as_str()), Some("done"))
    );
    let leftover: Vec<ReceivedMessage> = store
        .receive(ACTIONS_QUEUE, 32, Duration::from_secs(1))
        .await
        .expect("receive")
        .into_iter()
        .filter(|m| m.text.contains(&person.id))
        .collect();
    assert!(
        leftover.is_empty(),
        "nothing enqueued after done: {leftover:?}"
    );

    // The audit trail, in order, ids only.
    let mut days = vec![started, Utc::now().date_naive()];
    days.dedup();
    let (records, raw_audit) = audit_of(&store, &person.id, &days).await;
    let steps = crate::gdpr::steps_of(&records);
    let want: Vec<(String, String)> = [
        ("gdpr-erase-request", "accepted"),
        ("gdpr-erase-request", "accepted"),
        ("gdpr-delete-user", "done"),
        ("gdpr-purge-user", "done"),
        ("gdpr-erased-event", "done"),
        ("gdpr-erase", "done"),
        ("gdpr-erase", "skipped"),
        ("gdpr-erase-request", "skipped"),
    ]
    .iter()
    .map(|(s, o)| (s.to_string(), o.to_string()))
    .collect();
    assert_eq!(steps, want);
    assert!(
        records
            .iter()
            .all(|r| r.request_id.as_deref() == Some(id.as_str())),
        "every line names the request: {records:?}"
    );

    // Nothing personal and never the token: audit, queue messages, logs.
    let logs = serve.lines().join("\n");
    assert!(
        logs.contains(&person.id),
        "the logs do name the object id (they are not empty)"
    );
    let places = [
        ("the audit log", raw_audit),
        ("the action messages", action_texts.join("\n")),
        ("the erasure event", events[0].text.clone()),
        ("the serve logs", logs),
    ];
    for (place, text) in &places {
        assert!(!text.contains(&token), "the token leaked into {place}");
        for needle in &person.personal {
            assert!(
                !text.to_lowercase().contains(&needle.to_lowercase()),
                "{needle:?} leaked into {place}"
            );
        }
    }
}
