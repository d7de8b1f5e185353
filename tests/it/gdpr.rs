//! The GDPR endpoints end to end in-process: real RS256 tokens signed with
//! a generated key, served from an HTTPS OpenID metadata + JWKS stand-in
//! (trusted through `DORMANT_CA_FILE`), the local store, and a small Graph
//! stand-in for the erasure and export. The attack list of the issue is
//! here: `alg: none`, HS256 keyed with the public key, unknown `kid` (and
//! the refetch limit), wrong issuer/audience, expired, not yet valid, stale
//! `auth_time`, tampered payload, oversized token and body, another user's
//! request id, the hourly limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use dormant::config::{Config, Sources};
use dormant::functions::{AppContext, catalog};
use dormant::graph::{GraphClient, GraphSettings, Pacer, PacerConfig, StaticToken};
use dormant::host::Application;
use dormant::store::audit::AuditLog;
use dormant::store::{ACTIONS_QUEUE, ERASURES_QUEUE, Store};
use hmac::Mac as _;
use serde_json::{Value, json};

use crate::harness::{TENANT, repo_root};

const ISSUER: &str = "https://contoso.b2clogin.com/8f0c2d2e-1111-4c4c-9d9d-123456789abc/v2.0/";
/// The user flow of [`b2c_claims`], the one the B2C app admits.
const POLICY: &str = "B2C_1_signupsignin";
const ENTRA_ISSUER: &str =
    "https://login.microsoftonline.com/8f0c2d2e-1111-4c4c-9d9d-123456789abc/v2.0";
const AUDIENCE: &str = "3c1d7a55-0000-4000-8000-00000000a0d1";
const KID: &str = "key-1";
const ALICE: &str = "5b3a1c2d-3333-4e4e-8f8f-0123456789ab";
const BOB: &str = "6c4b2d3e-4444-4f4f-9a9a-123456789abc";

#[path = "../support/jwt.rs"]
mod jwt;
use jwt::Signer;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A B2C user-flow token: `sub` is the object id, the policy is in `tfp`.
fn b2c_claims(user: &str) -> Value {
    let t = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "exp": t + 3600, "nbf": t - 60, "iat": t - 60,
        "auth_time": t - 30, "sub": user, "tfp": POLICY, "ver": "1.0",
        "emails": ["alice@example.com"]})
}

/// An Entra-shaped token: pairwise `sub` (not an object id), `oid`, `tid`, `acr`.
fn entra_claims(user: &str) -> Value {
    let t = now();
    json!({"iss": ENTRA_ISSUER, "aud": AUDIENCE, "exp": t + 3600, "nbf": t - 60, "iat": t - 60,
        "auth_time": t - 30, "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "oid": user, "tid": TENANT, "acr": "1", "ver": "2.0"})
}

/// The HTTPS issuer stand-in: metadata and JWKS, counting JWKS fetches.
struct Issuer {
    base: String,
    ca: std::path::PathBuf,
    jwks_fetches: Arc<AtomicUsize>,
    /// The published key set; tests swap it to rotate keys.
    jwks: Arc<Mutex<Value>>,
}

async fn issuer(signer: &Signer, dir: &std::path::Path) -> Issuer {
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = Arc::new(Mutex::new(json!({"keys": [
        // Keys we cannot use are skipped, as in Entra's real JWKS.
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": "AA", "y": "AA"},
        signer.jwk(KID),
    ]})));
    let published = jwks.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("https://{}", listener.local_addr().expect("addr"));
    let metadata = json!({"issuer": ISSUER, "jwks_uri": format!("{base}/discovery/v2.0/keys")});
    let counter = fetches.clone();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/discovery/v2.0/keys",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let keys = published.lock().expect("jwks").clone();
                axum::Json(keys)
            }),
        );
    let ca = serve_tls(listener, app, dir);
    Issuer {
        base,
        ca,
        jwks_fetches: fetches,
        jwks,
    }
}

/// Serves `app` over TLS with a leaf signed by a fresh CA; returns the CA path.
fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let (acceptor, ca_path) = crate::harness::test_tls(dir, "issuer-ca.pem");
    crate::harness::serve_https(listener, acceptor, app);
    ca_path
}

/// A Graph stand-in: delete, purge, user read with `$select`, extension
/// properties, directory audits. Remembers what was asked.
#[derive(Clone, Default)]
struct GraphState {
    deleted: Arc<Mutex<HashSet<String>>>,
    purged: Arc<Mutex<HashSet<String>>>,
    calls: Arc<Mutex<Vec<String>>>,
    /// While set, `DELETE /users/{id}` answers 503.
    unavailable: Arc<std::sync::atomic::AtomicBool>,
    /// While set, `DELETE /users/{id}` answers 403 (e.g. the user holds an admin role).
    refuse: Arc<std::sync::atomic::AtomicBool>,
    /// While set, `DELETE /directory/deletedItems/{id}` answers 503.
    purge_unavailable: Arc<std::sync::atomic::AtomicBool>,
}

async fn graph_stand_in(state: GraphState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (s1, s2, s3, s4, s5) = (
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state,
    );
    let app = Router::new()
        .route(
            "/v1.0/users/{id}",
            delete(move |Path(id): Path<String>| async move {
                s1.calls.lock().expect("calls").push(format!("DELETE user {id}"));
                if s1.refuse.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}})));
                }
                if s1.unavailable.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": {"code": "serviceNotAvailable", "message": "x"}})));
                }
                let gone = s1.purged.lock().expect("p").contains(&id)
                    || !s1.deleted.lock().expect("d").insert(id);
                if gone {
                    (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": "Request_ResourceNotFound", "message": "x"}})))
                } else {
                    (axum::http::StatusCode::NO_CONTENT, axum::Json(json!(null)))
                }
            })
            .get(move |Path(id): Path<String>, RawQuery(q): RawQuery| async move {
                s4.calls.lock().expect("calls").push(format!("GET user {}", q.unwrap_or_default()));
                axum::Json(json!({"id": id, "displayName": "Alice", "identities": [{"signInType": "emailAddress", "issuer": "contoso.onmicrosoft.com", "issuerAssignedId": "alice@example.com"}], "extension_0a1b_loyaltyId": "L-42"}))
            }),
        )
        .route(
            "/v1.0/directory/deletedItems/{id}",
            delete(move |Path(id): Path<String>| async move {
                s2.calls.lock().expect("calls").push(format!("DELETE deletedItem {id}"));
                if s2.purge_unavailable.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": {"code": "serviceNotAvailable", "message": "x"}})));
                }
                if s2.deleted.lock().expect("d").contains(&id) && s2.purged.lock().expect("p").insert(id) {
                    (axum::http::StatusCode::NO_CONTENT, axum::Json(json!(null)))
                } else {
                    (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": "Request_ResourceNotFound", "message": "x"}})))
                }
            }),
        )
        .route(
            "/v1.0/directoryObjects/getAvailableExtensionProperties",
            post(move || async move {
                s3.calls.lock().expect("calls").push("POST extensions".into());
                axum::Json(json!({"value": [
                    {"name": "extension_0a1b_loyaltyId", "targetObjects": ["User"]},
                    {"name": "extension_0a1b_groupTag", "targetObjects": ["Group"]}
                ]}))
            }),
        )
        .route(
            "/v1.0/auditLogs/directoryAudits",
            get(move |RawQuery(q): RawQuery| async move {
                s5.calls.lock().expect("calls").push(format!("GET audits {}", q.unwrap_or_default()));
                axum::Json(json!({"value": [{"id": "audit-1", "activityDisplayName": "Update user", "targetResources": [{"id": ALICE}]}]}))
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// A Graph client for the stand-in at `root`.
fn graph_client(root: &str) -> GraphClient {
    let mut settings = GraphSettings::new(TENANT);
    settings.graph_url = url::Url::parse(root).expect("url");
    settings.max_retry_time = Duration::from_secs(2);
    GraphClient::with_parts(
        &settings,
        reqwest::Client::new(),
        Arc::new(StaticToken(secrecy::SecretString::from(
            "graph-token".to_string(),
        ))),
        Arc::new(Pacer::new(PacerConfig::from_settings(&settings))),
    )
}

struct App {
    base: String,
    store: Store,
    client: reqwest::Client,
}

impl App {
    /// The app behind the B2C issuer, admitting [`POLICY`].
    async fn start(
        store_dir: &std::path::Path,
        issuer: Option<&Issuer>,
        graph: Option<&str>,
    ) -> Self {
        Self::start_with(store_dir, issuer, graph, ISSUER, Some(POLICY)).await
    }

    /// The app trusting tokens of `iss`, restricted to `policies` if any.
    async fn start_with(
        store_dir: &std::path::Path,
        issuer: Option<&Issuer>,
        graph: Option<&str>,
        iss: &str,
        policies: Option<&str>,
    ) -> Self {
        let mut env = vec![
            ("DORMANT_TENANT_ID".to_string(), TENANT.to_string()),
            (
                "DORMANT_STORE_DIR".to_string(),
                store_dir.display().to_string(),
            ),
        ];
        if let Some(i) = issuer {
            env.push(("DORMANT_GDPR_ISSUER".into(), iss.into()));
            if let Some(p) = policies {
                env.push(("DORMANT_GDPR_POLICIES".into(), p.into()));
            }
            env.push(("DORMANT_GDPR_AUDIENCE".into(), AUDIENCE.into()));
            env.push((
                "DORMANT_GDPR_METADATA_URL".into(),
                format!("{}/.well-known/openid-configuration", i.base),
            ));
            env.push(("DORMANT_CA_FILE".into(), i.ca.display().to_string()));
        }
        let config = Config::load(&Sources::from_env(None, env)).expect("config");
        let mut ctx = AppContext::build(config).expect("context");
        if let Some(root) = graph {
            ctx = ctx.with_graph(graph_client(root));
        }
        let ctx = Arc::new(ctx);
        let app = Application::bind(0).await.expect("bind");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.serve(catalog(ctx.clone()), std::future::pending()));
        Self {
            base,
            store: Store::local(store_dir).expect("store"),
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request")
    }

    async fn export(&self, token: &str) -> Value {
        let r = self
            .call(reqwest::Method::GET, "/api/gdpr/export", Some(token))
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    async fn delete(&self, token: &str) -> reqwest::Response {
        self.call(reqwest::Method::POST, "/api/gdpr/delete", Some(token))
            .await
    }

    /// Plays the host: takes the next message off `dormant-actions` and
    /// POSTs it to `/UserActions` as the queue trigger does.
    async fn deliver_next_action(&self) -> (u16, Value) {
        let msgs = self
            .store
            .receive(ACTIONS_QUEUE, 1, Duration::from_secs(30))
            .await
            .expect("receive");
        let msg = msgs.into_iter().next().expect("an action was enqueued");
        self.deliver(&msg.text).await
    }

    async fn deliver(&self, text: &str) -> (u16, Value) {
        let envelope =
            json!({"Data": {"message": text}, "Metadata": {"DequeueCount": "1", "Id": "\"m-1\""}});
        let r = self
            .client
            .post(format!("{}/UserActions", self.base))
            .json(&envelope)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn error_of(r: reqwest::Response) -> (u16, Option<String>, String) {
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = r.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(body["error"]["message"].is_string());
    (status, challenge, code)
}

/// Each audit record as `(step, outcome)`.
pub fn steps_of(records: &[dormant::store::audit::AuditRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            let outcome = serde_json::to_value(r.outcome).expect("outcome");
            (
                r.step.clone(),
                outcome.as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn erasure_from_token_to_purge_and_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let graph_state = GraphState::default();
    let graph = graph_stand_in(graph_state.clone()).await;
    let app = App::start(&dir.path().join("store"), Some(&issuer), Some(&graph)).await;
    let alice = signer.token(&b2c_claims(ALICE));

    let r = app.delete(&alice).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let body: Value = r.json().await.expect("json");
    let id = body["requestId"].as_str().expect("requestId").to_owned();
    assert_eq!(body["status"], "accepted");
    assert_eq!(location, format!("/api/gdpr/requests/{id}"));

    // A repeat while pending: the same request.
    let again: Value = app.delete(&alice).await.json().await.expect("json");
    assert_eq!(again["requestId"], id.as_str());

    // Status for the owner; 404 for anyone else, as for an unknown id.
    let s: Value = app
        .call(reqwest::Method::GET, &location, Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "accepted");
    assert!(s["updatedAt"].is_string());
    let bob = signer.token(&b2c_claims(BOB));
    let (status, _, code) =
        error_of(app.call(reqwest::Method::GET, &location, Some(&bob)).await).await;
    assert_eq!((status, code.as_str()), (404, "not-found"));
    let (status, _, _) = error_of(
        app.call(
            reqwest::Method::GET,
            "/api/gdpr/requests/not-a-request",
            Some(&alice),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);

    // The queue message carries ids only; the job runs from UserActions.
    let msgs = app
        .store
        .receive(ACTIONS_QUEUE, 32, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(
        msgs.len(),
        2,
        "one message per accepted POST (the repeat re-enqueues)"
    );
    let message: Value = serde_json::from_str(&msgs[0].text).expect("json");
    assert_eq!(message["kind"], "gdpr-erase");
    assert_eq!(message["user"], ALICE);
    assert_eq!(message["case"], id.as_str());
    assert!(
        !msgs[0].text.contains("alice@"),
        "no personal data in the message"
    );

    let (code, ret) = app.deliver(&msgs[0].text).await;
    assert_eq!(code, 200, "{ret}");
    assert_eq!(ret["ReturnValue"]["status"], "done");
    // The second delivery does nothing twice.
    let (code, _) = app.deliver(&msgs[1].text).await;
    assert_eq!(code, 200);
    let calls = graph_state.calls.lock().expect("calls").clone();
    assert_eq!(
        calls,
        [
            format!("DELETE user {ALICE}"),
            format!("DELETE deletedItem {ALICE}")
        ]
    );

    let s: Value = app
        .call(reqwest::Method::GET, &location, Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "done");
    // A repeat after completion says done.
    let r = app.delete(&alice).await;
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.expect("json");
    assert_eq!(
        (done["requestId"].as_str(), done["status"].as_str()),
        (Some(id.as_str()), Some("done"))
    );

    let events = app
        .store
        .receive(ERASURES_QUEUE, 32, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(events.len(), 1);
    let event: Value = serde_json::from_str(&events[0].text).expect("json");
    assert_eq!(event["v"], 1);
    assert_eq!(event["user"], ALICE);
    assert!(event["erasedAt"].is_string());

    let audit = AuditLog::new(app.store.clone())
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("audit");
    let steps = steps_of(&audit);
    for expected in [
        ("gdpr-erase-request", "accepted"),
        ("gdpr-delete-user", "done"),
        ("gdpr-purge-user", "done"),
        ("gdpr-erased-event", "done"),
        ("gdpr-erase", "done"),
        ("gdpr-erase", "skipped"),
        ("gdpr-erase-request", "skipped"),
    ] {
        assert!(
            steps
                .iter()
                .any(|(s, o)| s == expected.0 && o == expected.1),
            "{expected:?} in {steps:?}"
        );
    }
    let all = serde_json::to_string(&audit).expect("json");
    assert!(
        !all.contains("alice@") && !all.contains("Alice"),
        "ids only in the audit log"
    );
    assert!(
        audit
            .iter()
            .all(|r| r.user.as_deref().is_none_or(|u| u == ALICE))
    );
}

#[tokio::test]
async fn a_user_deleted_elsewhere_is_still_purged_and_unknown_requests_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let graph_state = GraphState::default();
    graph_state
        .deleted
        .lock()
        .expect("d")
        .insert(ALICE.to_owned());
    let graph = graph_stand_in(graph_state.clone()).await;
    let app = App::start(&dir.path().join("store"), Some(&issuer), Some(&graph)).await;
    assert_eq!(
        app.delete(&signer.token(&b2c_claims(ALICE))).await.status(),
        202
    );
    let (code, ret) = app.deliver_next_action().await;
    assert_eq!(code, 200);
    assert_eq!(
        ret["ReturnValue"]["status"], "done",
        "already deleted → continue to the purge"
    );
    assert!(graph_state.purged.lock().expect("p").contains(ALICE));

    // An unknown request id in a message: recorded, answered 200, not retried.
    let mut forged: Value = json!({"v":1,"kind":"gdpr-erase","tenant":TENANT,"user":BOB,
        "case":"6a1f0000-0000-4000-8000-000000000009","run":"20261122T020000Z-a1b2c3",
        "notBefore":"2026-01-01T00:00:00Z"});
    let (code, _) = app.deliver(&forged.to_string()).await;
    assert_eq!(code, 200);
    forged["kind"] = json!("reset-redemption");
    let (code, ret) = app.deliver(&forged.to_string()).await;
    assert_eq!(
        code, 200,
        "a step of a case that does not exist does nothing: {ret}"
    );
    let audit = AuditLog::new(app.store.clone())
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("audit");
    assert!(audit.iter().any(|r| r.step == "unknown-request"));
    assert!(audit.iter().any(|r| r.step == "gdpr-delete-user" && r.detail.as_deref() == Some("already-deleted")));
}

#[tokio::test]
async fn export_holds_every_attribute_the_audits_and_our_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let graph_state = GraphState::default();
    let graph = graph_stand_in(graph_state.clone()).await;
    let app = App::start(&dir.path().join("store"), Some(&issuer), Some(&graph)).await;
    let alice = signer.token(&b2c_claims(ALICE));
    let doc = app.export(&alice).await;
    assert_eq!(doc["user"]["id"], ALICE);
    assert_eq!(doc["user"]["extension_0a1b_loyaltyId"], "L-42");
    assert_eq!(doc["auditEvents"][0]["id"], "audit-1");
    assert!(doc["exportedAt"].is_string());
    assert!(doc["dormantRecords"].is_array());
    // A second export: our first export's record is in it; extension
    // properties come from the cache.
    let doc = app.export(&alice).await;
    assert!(
        doc["dormantRecords"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["step"] == "gdpr-export")
    );
    let calls = graph_state.calls.lock().expect("calls").clone();
    assert_eq!(
        calls.iter().filter(|c| *c == "POST extensions").count(),
        1,
        "{calls:?}"
    );
    let user_get = calls
        .iter()
        .find(|c| c.starts_with("GET user"))
        .expect("user read");
    let query = urlencoding_decode(user_get);
    for p in [
        "identities",
        "extension_0a1b_loyaltyId",
        "otherMails",
        "createdDateTime",
    ] {
        assert!(query.contains(p), "{p} selected: {query}");
    }
    assert!(
        !query.contains("groupTag"),
        "only user extension properties"
    );
    let audits = calls
        .iter()
        .find(|c| c.starts_with("GET audits"))
        .expect("audits");
    assert!(
        urlencoding_decode(audits).contains(&format!("targetResources/any(t:t/id eq '{ALICE}')"))
    );
}

/// The export's `dormantRecords` come from the subject's index alone: a
/// log written before the index existed shows up after `dormant audit
/// reindex`, and stays there with every day blob gone.
#[tokio::test]
async fn the_export_reads_the_subject_index_and_reindex_backfills_it() {
    use dormant::store::audit::{AuditRecord, Outcome, day_blob_name};
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let graph = graph_stand_in(GraphState::default()).await;
    let store_dir = dir.path().join("store");
    let app = App::start(&store_dir, Some(&issuer), Some(&graph)).await;
    let alice = signer.token(&b2c_claims(ALICE));
    let records = |doc: &Value| -> Vec<String> {
        doc["dormantRecords"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["step"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // Two years ago, by a version without the index.
    let mut old = AuditRecord::new("disable", Outcome::Done);
    old.time = chrono::Utc::now() - chrono::Duration::days(730);
    old.user = Some(ALICE.into());
    old.case = Some("case-1".into());
    app.store.ensure_defaults().await.expect("containers");
    app.store
        .append(
            "dormant-audit",
            &day_blob_name(old.time.date_naive(), 0),
            bytes::Bytes::from(old.to_line().expect("line")),
        )
        .await
        .expect("old line");
    let doc = app.export(&alice).await;
    assert!(records(&doc).is_empty(), "{doc}");

    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dormant"))
            .args(args)
            .env_clear()
            .env("DORMANT_TENANT_ID", TENANT)
            .env("DORMANT_STORE_DIR", &store_dir)
            .current_dir(dir.path())
            .output()
            .expect("run dormant")
    };
    assert!(run(&["audit", "reindex", "--help"]).status.success());
    assert_eq!(
        run(&["audit", "reindex", "--from", "yesterday"])
            .status
            .code(),
        Some(2)
    );
    let done = run(&["audit", "reindex"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let done: Value = serde_json::from_slice(&done.stdout).expect("json");
    assert_eq!(done["appended"], 1, "only the old line was missing: {done}");
    let again: Value = serde_json::from_slice(&run(&["audit", "reindex"]).stdout).expect("json");
    assert_eq!(again["appended"], 0, "idempotent: {again}");

    // Every day blob gone: the export still has them all.
    for blob in app.store.list("dormant-audit", "").await.expect("list") {
        if !blob.name.starts_with("by-user/") {
            app.store
                .delete("dormant-audit", &blob.name)
                .await
                .expect("delete");
        }
    }
    let doc = app.export(&alice).await;
    assert_eq!(records(&doc), ["disable", "gdpr-export"], "{doc}");
}

/// Each erasure step's audit line survives an append that fails: the
/// redelivery appends it (once, also when it had landed after all), and
/// skips nothing else. Every third delivery's log cannot append (an
/// audit container that cannot exist), so each step's line fails once.
#[tokio::test]
async fn an_erasure_step_whose_audit_append_fails_is_recorded_once() {
    use dormant::gdpr::erase::{EraseError, Eraser};
    use dormant::gdpr::request_erasure;
    use dormant::gdpr::requests::{Origin, Requests, Status, Submitted};
    let dir = tempfile::tempdir().expect("tempdir");
    let graph_state = GraphState::default();
    let graph = graph_client(&graph_stand_in(graph_state.clone()).await);
    let store = Store::local(dir.path()).expect("store");
    store.ensure_defaults().await.expect("containers");
    let log = AuditLog::new(store.clone());
    let broken = AuditLog::in_container(store.clone(), "Not_A_Container");
    let subject = dormant::ids::ObjectId::parse(ALICE).expect("id");
    let requests = Requests::new(store.clone());
    let Submitted::Pending(request) =
        request_erasure(&requests, &log, TENANT, &subject, Origin::User)
            .await
            .expect("submitted")
    else {
        panic!("pending");
    };
    let id = request.request_id.as_str();
    let good = Eraser {
        store: &store,
        audit: &log,
        graph: &graph,
    };
    let failing = Eraser {
        store: &store,
        audit: &broken,
        graph: &graph,
    };
    let transient = |r: Result<_, EraseError>| matches!(r, Err(EraseError::Transient(_)));

    // The user is deleted; its line cannot be appended.
    assert!(transient(failing.run(&subject, id).await));
    // The redelivery appends it, then meets a Graph outage at the purge.
    graph_state.purge_unavailable.store(true, Ordering::SeqCst);
    assert!(transient(good.run(&subject, id).await));
    graph_state.purge_unavailable.store(false, Ordering::SeqCst);
    // Purged; its line cannot be appended.
    assert!(transient(failing.run(&subject, id).await));
    // As if it had been appended after all, just before the process died.
    let left = requests
        .get(&subject, id)
        .await
        .expect("state")
        .expect("request")
        .unrecorded;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].step, "gdpr-purge-user");
    log.record(&left[0]).await.expect("append");
    // The redelivery finds it in the log; the event cannot go out (the
    // queue is gone for a moment).
    std::fs::remove_dir_all(dir.path().join("_queues").join(ERASURES_QUEUE)).expect("queue");
    assert!(transient(good.run(&subject, id).await));
    store.ensure_queue(ERASURES_QUEUE).await.expect("queue");
    // The event goes out; its line cannot be appended.
    assert!(transient(failing.run(&subject, id).await));
    let done = good.run(&subject, id).await.expect("done");
    assert_eq!(done.status, Status::Done);
    assert!(done.unrecorded.is_empty());
    good.run(&subject, id).await.expect("a repeat");

    let day = log
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("day");
    let index = log.subject_records(&subject).await.expect("index");
    for records in [&day, &index] {
        let steps = steps_of(records);
        for step in [
            "gdpr-delete-user",
            "gdpr-purge-user",
            "gdpr-erased-event",
            "gdpr-erase",
        ] {
            let n = steps
                .iter()
                .filter(|(s, o)| s == step && o == "done")
                .count();
            assert_eq!(n, 1, "{step} in {steps:?}");
        }
    }
    let events = store
        .receive(ERASURES_QUEUE, 32, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(events.len(), 1, "one user-erased event");
    let calls = graph_state.calls.lock().expect("calls").clone();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("DELETE user"))
            .count(),
        1,
        "{calls:?}"
    );
}

fn urlencoding_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[tokio::test]
async fn tokens_that_must_be_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let app = App::start(&dir.path().join("store"), Some(&issuer), None).await;
    let t = now();

    // A good token passes (sanity for the refusals below).
    assert_eq!(
        app.delete(&signer.token(&b2c_claims(ALICE))).await.status(),
        202
    );

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = b2c_claims(ALICE);
        f(&mut c);
        signer.token(&c)
    };
    let good = signer.token(&b2c_claims(ALICE));
    let (h, p, s) = {
        let mut parts = good.split('.');
        (
            parts.next().expect("h").to_owned(),
            parts.next().expect("p").to_owned(),
            parts.next().expect("s").to_owned(),
        )
    };
    // HS256 keyed with the public key material, the classic confusion.
    let hs = {
        let header = B64.encode(json!({"alg": "HS256", "typ": "JWT", "kid": KID}).to_string());
        let input = format!("{header}.{p}");
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(signer.n.as_bytes()).expect("hmac");
        mac.update(input.as_bytes());
        format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
    };
    let tampered = {
        let mut c = b2c_claims(ALICE);
        c["sub"] = json!(BOB);
        format!("{h}.{}.{s}", B64.encode(c.to_string()))
    };
    let none = format!(
        "{}.{p}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string())
    );
    let unknown_kid = signer.sign(
        &json!({"alg": "RS256", "kid": "forged"}),
        &b2c_claims(ALICE),
    );
    let cases: Vec<(&str, String)> = vec![
        ("alg none", none),
        ("HS256 with the public key", hs),
        ("unknown kid", unknown_kid.clone()),
        ("tampered payload", tampered),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example/v2.0/")),
        ),
        ("wrong audience", with(&|c| c["aud"] = json!("another-app"))),
        // A minute past the 5 min skew: a busy machine can spend seconds
        // between `t` and the check, which must not walk the case into it.
        (
            "expired past the skew",
            with(&|c| c["exp"] = json!(t - 360)),
        ),
        (
            "not yet valid past the skew",
            with(&|c| c["nbf"] = json!(t + 360)),
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().expect("obj").remove("exp");
            }),
        ),
        (
            "subject not an object id",
            with(&|c| c["sub"] = json!("alice")),
        ),
        ("oversized", with(&|c| c["pad"] = json!("x".repeat(20_000)))),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in &cases {
        let r = app.delete(token).await;
        let (status, challenge, code) = error_of(r).await;
        assert_eq!((status, code.as_str()), (401, "invalid-token"), "{name}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
    }
    // Within the skew still passes.
    assert_eq!(
        app.delete(&with(&|c| c["exp"] = json!(t - 200)))
            .await
            .status(),
        202
    );

    // Unknown kids do not hammer the issuer: one fetch for the first
    // token, none for any number of forged kids within five minutes.
    for _ in 0..5 {
        assert_eq!(app.delete(&unknown_kid).await.status(), 401);
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);

    // Stale sign-in: 403 with a step-up hint; no auth_time at all: 403 too.
    for token in [
        with(&|c| c["auth_time"] = json!(t - 600 - 301 - 10)),
        with(&|c| {
            c.as_object_mut().expect("obj").remove("auth_time");
        }),
    ] {
        let (status, challenge, code) = error_of(app.delete(&token).await).await;
        assert_eq!((status, code.as_str()), (403, "reauthentication-required"));
        assert!(challenge.unwrap_or_default().contains("max_age=\"600\""));
    }

    // Missing token: 401 with a bare challenge.
    let (status, challenge, code) = error_of(
        app.call(reqwest::Method::POST, "/api/gdpr/delete", None)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "missing-token"));
    assert!(challenge.unwrap_or_default().starts_with("Bearer"));

    // A body over 64 KiB: 413, before anything else.
    let r = app
        .client
        .post(format!("{}/api/gdpr/delete", app.base))
        .bearer_auth(&good)
        .body(vec![b'{'; 64 * 1024 + 1])
        .send()
        .await
        .expect("POST");
    assert_eq!(error_of(r).await.0, 413);

    // No error body ever echoes the token.
    let r = app.delete(&cases[3].1).await;
    let text = r.text().await.expect("text");
    assert!(!text.contains(&cases[3].1[..40]));
}

/// B2C signs every user flow's tokens with the same keys for the same
/// audience: only the configured flows and policies get in (`tfp`, else
/// `acr`, compared case-insensitively); another policy, or none, is a 401.
#[tokio::test]
async fn only_the_configured_b2c_policies_may_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let app = App::start_with(
        &dir.path().join("store"),
        Some(&issuer),
        None,
        ISSUER,
        Some("B2C_1_signupsignin,B2C_1A_Signup_Signin"),
    )
    .await;
    let with = |user: &str, f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = b2c_claims(user);
        f(c.as_object_mut().expect("claims"));
        signer.token(&c)
    };
    let right_policy = signer.token(&b2c_claims(ALICE));
    let other_case = with(ALICE, &|c| {
        c.insert("tfp".into(), json!("b2c_1_SIGNUPSIGNIN"));
    });
    // A custom policy names itself in `acr`.
    let custom_in_acr = with(BOB, &|c| {
        c.remove("tfp");
        c.insert("acr".into(), json!("b2c_1a_signup_signin"));
    });
    for (name, token) in [
        ("right policy", &right_policy),
        ("other case", &other_case),
        ("custom policy in acr", &custom_in_acr),
    ] {
        assert!(app.delete(token).await.status().is_success(), "{name}");
    }
    let other_policy = with(ALICE, &|c| {
        c.insert("tfp".into(), json!("B2C_1_passwordreset"));
    });
    // `tfp` is the one B2C sets deliberately: an allowed `acr` beside
    // another `tfp` does not get in.
    let tfp_wins = with(ALICE, &|c| {
        c.insert("tfp".into(), json!("B2C_1_passwordreset"));
        c.insert("acr".into(), json!(POLICY));
    });
    let no_policy = with(ALICE, &|c| {
        c.remove("tfp");
    });
    for (name, token) in [
        ("other policy", &other_policy),
        ("tfp wins over acr", &tfp_wins),
        ("no policy", &no_policy),
    ] {
        let r = app.delete(token).await;
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        assert_eq!(status, 401, "{name}: {text}");
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        let body: Value = serde_json::from_str(&text).expect("error body");
        assert_eq!(body["error"]["code"], "invalid-token", "{name}");
        assert!(
            !text.contains(&token[..40]) && !text.contains("passwordreset"),
            "{name}: neither the token nor its claims are echoed: {text}"
        );
    }
    // Nothing was stored for the refused tokens: only the three accepted
    // requests (two subjects) left a trace.
    let audit = AuditLog::new(app.store.clone())
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("audit");
    assert_eq!(audit.len(), 3, "{audit:?}");

    // An Entra issuer needs no list; given one, it still restricts: an
    // Entra token's `acr` is its authentication context class ("1").
    let entra = signer.token(&entra_claims(ALICE));
    let open = App::start_with(
        &dir.path().join("entra"),
        Some(&issuer),
        None,
        ENTRA_ISSUER,
        None,
    )
    .await;
    assert_eq!(open.delete(&entra).await.status(), 202);
    let restricted = App::start_with(
        &dir.path().join("entra-restricted"),
        Some(&issuer),
        None,
        ENTRA_ISSUER,
        Some(POLICY),
    )
    .await;
    let (status, _, code) = error_of(restricted.delete(&entra).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid-token"));
}

#[tokio::test]
async fn the_hourly_limit_holds_across_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let store = dir.path().join("store");
    let one = App::start(&store, Some(&issuer), None).await;
    let two = App::start(&store, Some(&issuer), None).await;
    let alice = signer.token(&b2c_claims(ALICE));
    for i in 0..10 {
        let app = if i % 2 == 0 { &one } else { &two };
        assert!(
            app.delete(&alice).await.status().is_success(),
            "request {i}"
        );
    }
    for app in [&one, &two] {
        let r = app
            .call(
                reqwest::Method::GET,
                "/api/gdpr/requests/6a1f0000-0000-4000-8000-000000000009",
                Some(&alice),
            )
            .await;
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((3000..=3600).contains(&retry), "{retry}");
        assert_eq!(error_of(r).await, (429, None, "rate-limited".to_owned()));
    }
    // Another subject has its own budget.
    assert_eq!(
        one.delete(&signer.token(&b2c_claims(BOB))).await.status(),
        202
    );
}

#[tokio::test]
async fn without_gdpr_settings_the_endpoints_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::start(dir.path(), None, None).await;
    for (method, path) in [
        (reqwest::Method::POST, "/api/gdpr/delete"),
        (reqwest::Method::GET, "/api/gdpr/export"),
        (
            reqwest::Method::GET,
            "/api/gdpr/requests/6a1f0000-0000-4000-8000-000000000009",
        ),
    ] {
        let (status, _, code) = error_of(app.call(method, path, Some("x.y.z")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (503, "gdpr-not-configured"),
            "{path}"
        );
    }
}

#[test]
fn gdpr_functions_require_the_function_key() {
    for name in ["GdprDelete", "GdprExport", "GdprStatus"] {
        let path = repo_root()
            .join("functions")
            .join(name)
            .join("function.json");
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let trigger = &json["bindings"][0];
        assert_eq!(trigger["type"], "httpTrigger", "{name}");
        assert_eq!(trigger["authLevel"], "function", "{name}");
    }
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_once_the_refresh_interval_allows() {
    use dormant::gdpr::token::{TokenError, TokenVerifier};
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Signer::new(KID);
    // Generated up front: key generation must not eat the refresh interval.
    let new = Signer::new(KID);
    let issuer = issuer(&old, dir.path()).await;
    let gdpr = dormant::config::Gdpr {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        metadata_url: url::Url::parse(&format!("{}/.well-known/openid-configuration", issuer.base))
            .expect("url"),
        max_auth_age_secs: 600,
        policies: Vec::new(),
    };
    let http = dormant::graph::build_http_client(Some(&issuer.ca)).expect("client");
    let verifier = TokenVerifier::new(&gdpr, http).with_min_refresh(Duration::from_secs(1));
    let now = chrono::Utc::now();

    // Without a policy list an Entra-shaped token (`acr` "1") names none.
    let mut entra = entra_claims(ALICE);
    entra["iss"] = json!(ISSUER);
    let user = verifier
        .verify(&old.token(&entra), now)
        .await
        .expect("valid");
    assert_eq!(
        (user.subject.as_str(), user.policy.as_deref()),
        (ALICE, None)
    );
    let mut custom = b2c_claims(BOB);
    custom.as_object_mut().expect("obj").remove("tfp");
    custom["acr"] = json!("B2C_1A_signup_signin");
    let custom = verifier
        .verify(&old.token(&custom), now)
        .await
        .expect("valid");
    assert_eq!(custom.policy.as_deref(), Some("B2C_1A_signup_signin"));
    let b2c = verifier
        .verify(&old.token(&b2c_claims(BOB)), now)
        .await
        .expect("valid");
    assert_eq!(
        (b2c.subject.as_str(), b2c.policy.as_deref()),
        (BOB, Some("B2C_1_signupsignin"))
    );

    // The issuer rotates to a new key.
    *issuer.jwks.lock().expect("jwks") = json!({"keys": [new.jwk("key-2")]});
    let rotated = new.sign(&json!({"alg": "RS256", "kid": "key-2"}), &b2c_claims(ALICE));
    assert!(
        matches!(
            verifier.verify(&rotated, now).await,
            Err(TokenError::Invalid(_))
        ),
        "within the interval the unknown kid is refused without a fetch"
    );
    assert_eq!(verifier.jwks_fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier
        .verify(&rotated, now)
        .await
        .expect("the new key after one refresh");
    assert_eq!(verifier.jwks_fetches(), 2);
    // The withdrawn key no longer verifies.
    assert!(
        verifier
            .verify(&old.token(&b2c_claims(ALICE)), now)
            .await
            .is_err()
    );
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_operator_cli_records_and_enqueues_the_same_erasure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dormant"))
            .args(args)
            .env_clear()
            .env("DORMANT_TENANT_ID", TENANT)
            .env("DORMANT_STORE_DIR", dir.path())
            .current_dir(dir.path())
            .output()
            .expect("run dormant")
    };
    for help in [
        &["gdpr", "--help"][..],
        &["gdpr", "erase", "--help"],
        &["gdpr", "export", "--help"],
    ] {
        assert!(run(help).status.success(), "{help:?}");
    }
    assert_eq!(
        run(&["gdpr", "erase", "alice@example.com"]).status.code(),
        Some(2)
    );
    let first = run(&["gdpr", "erase", ALICE]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(first["status"], "accepted");
    let again: Value =
        serde_json::from_slice(&run(&["gdpr", "erase", ALICE]).stdout).expect("json");
    assert_eq!(again["requestId"], first["requestId"]);

    let store = Store::local(dir.path()).expect("store");
    let msgs = store
        .receive(ACTIONS_QUEUE, 32, Duration::from_secs(30))
        .await
        .expect("receive");
    assert!(!msgs.is_empty());
    let message: Value = serde_json::from_str(&msgs[0].text).expect("json");
    assert_eq!(
        (message["kind"].as_str(), message["user"].as_str()),
        (Some("gdpr-erase"), Some(ALICE))
    );
    let audit = AuditLog::new(store)
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|r| r.step == "gdpr-erase-request" && r.detail.as_deref() == Some("by-operator"))
    );
}

#[tokio::test]
async fn graph_outage_is_retried_by_the_host_and_the_request_stays_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let graph_state = GraphState::default();
    graph_state.unavailable.store(true, Ordering::SeqCst);
    let graph = graph_stand_in(graph_state.clone()).await;
    let app = App::start(&dir.path().join("store"), Some(&issuer), Some(&graph)).await;
    let alice = signer.token(&b2c_claims(ALICE));
    let r = app.delete(&alice).await;
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let msgs = app
        .store
        .receive(ACTIONS_QUEUE, 1, Duration::from_secs(30))
        .await
        .expect("receive");
    let (code, _) = app.deliver(&msgs[0].text).await;
    assert_eq!(code, 500, "transient: the host retries");
    let s: Value = app
        .call(reqwest::Method::GET, &location, Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "running");
    graph_state.unavailable.store(false, Ordering::SeqCst);
    let (code, ret) = app.deliver(&msgs[0].text).await;
    assert_eq!(
        (code, ret["ReturnValue"]["status"].as_str()),
        (200, Some("done"))
    );
}

#[tokio::test]
async fn a_graph_refusal_fails_the_request_and_a_new_post_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(KID);
    let issuer = issuer(&signer, dir.path()).await;
    let graph_state = GraphState::default();
    graph_state.refuse.store(true, Ordering::SeqCst);
    let graph = graph_stand_in(graph_state.clone()).await;
    let app = App::start(&dir.path().join("store"), Some(&issuer), Some(&graph)).await;
    let alice = signer.token(&b2c_claims(ALICE));
    let first: Value = app.delete(&alice).await.json().await.expect("json");
    let (code, ret) = app.deliver_next_action().await;
    assert_eq!(code, 200, "a refusal is final, not retried");
    assert_eq!(ret["ReturnValue"]["status"], "failed");
    let location = format!(
        "/api/gdpr/requests/{}",
        first["requestId"].as_str().expect("id")
    );
    let s: Value = app
        .call(reqwest::Method::GET, &location, Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(s["status"], "failed");
    let audit = AuditLog::new(app.store.clone())
        .read_day(chrono::Utc::now().date_naive())
        .await
        .expect("audit");
    assert!(audit.iter().any(|r| r.step == "gdpr-erase"
        && r.error.as_deref() == Some("graph-403-Authorization_RequestDenied")));
    graph_state.refuse.store(false, Ordering::SeqCst);
    let second: Value = app.delete(&alice).await.json().await.expect("json");
    assert_ne!(second["requestId"], first["requestId"]);
    assert_eq!(second["status"], "accepted");
}
