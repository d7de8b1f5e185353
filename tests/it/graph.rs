//! HTTP behaviour of the Graph client against a tiny scripted server on
//! 127.0.0.1: redirects without Authorization, 429 Retry-After, 5xx bursts,
//! token refresh on 401, nextLink verbatim, `$batch` partial retries, the
//! report-settings guard, and (over HTTPS with a private CA) client-secret
//! tokens with the Key Vault re-read on `invalid_client`.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use dormant::graph::*;
use futures::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

struct TestServer {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
    fn count(&self, path_prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.uri.starts_with(path_prefix))
            .count()
    }
}

type Handler = Arc<dyn Fn(&Seen, &str) -> Response<Body> + Send + Sync>;

fn reply(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn reply_with(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Body> {
    let mut r = Response::builder().status(StatusCode::from_u16(status).expect("status"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.to_string())).expect("response")
}

fn router(handler: Handler, seen: Arc<Mutex<Vec<Seen>>>, base: String) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let handler = handler.clone();
        let seen = seen.clone();
        let base = base.clone();
        async move {
            let method = req.method().to_string();
            let uri = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let authorization = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            let s = Seen {
                method,
                uri,
                authorization,
                body,
            };
            seen.lock().expect("lock").push(s.clone());
            handler(&s, &base)
        }
    })
}

async fn serve(
    handler: impl Fn(&Seen, &str) -> Response<Body> + Send + Sync + 'static,
) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = router(Arc::new(handler), seen.clone(), base.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestServer { base, seen }
}

/// An HTTPS server whose certificate chains to a fresh CA written to a PEM file.
async fn serve_tls(
    handler: impl Fn(&Seen, &str) -> Response<Body> + Send + Sync + 'static,
    dir: &std::path::Path,
) -> (TestServer, std::path::PathBuf) {
    let (acceptor, ca_path) = crate::harness::test_tls(dir, "ca.pem");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("https://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = router(Arc::new(handler), seen.clone(), base.clone());
    crate::harness::serve_https(listener, acceptor, app);
    (TestServer { base, seen }, ca_path)
}

/// Tokens `token-0`, `token-1`, … : the number counts invalidations.
#[derive(Debug, Default)]
struct CountingTokens {
    invalidated: AtomicUsize,
}

impl TokenProvider for CountingTokens {
    fn token(&self) -> futures::future::BoxFuture<'_, Result<SecretString, GraphError>> {
        let n = self.invalidated.load(Ordering::SeqCst);
        Box::pin(async move { Ok(SecretString::from(format!("token-{n}"))) })
    }
    fn invalidate(&self) -> futures::future::BoxFuture<'_, ()> {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

fn settings_for(base: &str) -> GraphSettings {
    let mut s = GraphSettings::new("contoso.onmicrosoft.com");
    s.graph_url = Url::parse(base).expect("url");
    s.authority_host = Url::parse(base).expect("url");
    s.max_retry_time = Duration::from_secs(20);
    s.request_timeout = Duration::from_secs(5);
    s
}

fn client_for(base: &str, tokens: Arc<dyn TokenProvider>) -> GraphClient {
    let s = settings_for(base);
    let mut pc = PacerConfig::from_settings(&s);
    pc.base_backoff = Duration::from_millis(10);
    pc.max_backoff = Duration::from_millis(100);
    GraphClient::with_parts(
        &s,
        build_http_client(None).expect("client"),
        tokens,
        Arc::new(Pacer::new(pc)),
    )
}

fn static_client(base: &str) -> GraphClient {
    client_for(
        base,
        Arc::new(StaticToken(SecretString::from("t0".to_string()))),
    )
}

const CSV: &str = "\u{feff}Report Refresh Date,User Principal Name,Display Name,Is Deleted,Deleted Date,Has Exchange License,Exchange Last Activity Date,Teams Last Activity Date,Assigned Products\r\n2024-05-28,a@contoso.com,A,False,,True,2024-05-27,,OFFICE 365 E3\r\n2024-05-28,b@contoso.com,B,False,,True,,,\r\n";

#[tokio::test]
async fn usage_report_follows_302_without_authorization() {
    let server = serve(|s, base| {
        if s.uri
            .starts_with("/v1.0/reports/getOffice365ActiveUserDetail")
        {
            reply_with(
                302,
                &[("location", &format!("{base}/download/report.csv?sig=abc"))],
                "",
            )
        } else if s.uri.starts_with("/download/") {
            reply_with(200, &[("content-type", "application/octet-stream")], CSV)
        } else {
            reply(404, "{}")
        }
    })
    .await;
    let client = static_client(&server.base);
    let rows: Vec<ActiveUserDetail> = client
        .office365_active_user_detail(ReportPeriod::D180)
        .await
        .expect("report starts")
        .try_collect()
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].user_principal_name, "a@contoso.com");
    assert!(rows[1].exchange_last_activity.is_none());
    let seen = server.seen();
    assert_eq!(
        seen[0].uri,
        "/v1.0/reports/getOffice365ActiveUserDetail(period='D180')"
    );
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer t0"));
    assert_eq!(seen[1].uri, "/download/report.csv?sig=abc");
    assert_eq!(
        seen[1].authorization, None,
        "no token to the pre-authenticated URL"
    );
}

#[tokio::test]
async fn a_429_waits_its_retry_after_then_succeeds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = serve(move |_, _| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            reply_with(
                429,
                &[("retry-after", "1")],
                include_str!("../../src/graph/fixtures/error-429.json"),
            )
        } else {
            reply(200, r#"{"id":"u1","displayName":"A"}"#)
        }
    })
    .await;
    let client = static_client(&server.base);
    let start = Instant::now();
    let user = client.get_user("u1", &["id"]).await.expect("user");
    assert_eq!(user.id, "u1");
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    let stats = client.stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.retries, 1);
}

#[tokio::test]
async fn a_burst_of_503s_is_survived_and_a_long_outage_gives_up_in_bounded_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = serve(move |s, _| {
        if s.uri.starts_with("/v1.0/users/down") {
            return reply(503, "<html>Service Unavailable</html>");
        }
        if c.fetch_add(1, Ordering::SeqCst) < 4 {
            reply(
                503,
                r#"{"error":{"code":"serviceNotAvailable","message":"try later"}}"#,
            )
        } else {
            reply(200, r#"{"id":"u1"}"#)
        }
    })
    .await;
    let client = static_client(&server.base);
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // Always 503: a transient error after at most max_retry_time (here 2 s).
    let mut s = settings_for(&server.base);
    s.max_retry_time = Duration::from_secs(2);
    let mut pc = PacerConfig::from_settings(&s);
    pc.base_backoff = Duration::from_millis(50);
    pc.max_backoff = Duration::from_millis(400);
    let client = GraphClient::with_parts(
        &s,
        build_http_client(None).expect("client"),
        Arc::new(StaticToken(SecretString::from("t".to_string()))),
        Arc::new(Pacer::new(pc)),
    );
    let start = Instant::now();
    let err = client.get_user("down", &[]).await.expect_err("gives up");
    assert!(err.is_transient(), "{err:?}");
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(client.stats().retries >= 2);
}

#[tokio::test]
async fn garbage_and_truncated_bodies_on_reads_are_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = serve(move |_, _| match c.fetch_add(1, Ordering::SeqCst) {
        0 => reply(200, "<html>captive portal</html>"),
        1 => reply(200, r#"{"id":"u1","displayNa"#),
        _ => reply(200, r#"{"id":"u1"}"#),
    })
    .await;
    let client = static_client(&server.base);
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_401_refreshes_the_token_once() {
    let server = serve(|s, _| {
        if s.uri.starts_with("/v1.0/users/always401") {
            return reply(401, r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}"#);
        }
        match s.authorization.as_deref() {
            Some("Bearer token-1") => reply(200, r#"{"id":"u1"}"#),
            _ => reply(401, r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}"#),
        }
    })
    .await;
    let tokens = Arc::new(CountingTokens::default());
    let client = client_for(&server.base, tokens.clone());
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
    let err = client.get_user("always401", &[]).await.expect_err("auth");
    assert!(matches!(err, GraphError::Auth(_)), "{err:?}");
    assert_eq!(
        tokens.invalidated.load(Ordering::SeqCst),
        2,
        "only once per call"
    );
}

#[tokio::test]
async fn paging_follows_next_link_verbatim_and_resumes_from_a_saved_link() {
    let server = serve(|s, base| {
        if s.uri.contains("$skiptoken=EXPIRED") {
            return reply(400, r#"{"error":{"code":"Directory_ExpiredPageToken","message":"The specified page token value has expired and can no longer be included in your request."}}"#);
        }
        if s.uri.contains("$skiptoken=X%2BY") {
            return reply(200, r#"{"value":[{"id":"c"}]}"#);
        }
        let next = format!("{base}/v1.0/users?$select=id,signInActivity&$top=120&$skiptoken=X%2BY");
        reply(200, &format!(r#"{{"value":[{{"id":"a"}},{{"id":"b"}}],"@odata.nextLink":"{next}"}}"#))
    })
    .await;
    let client = static_client(&server.base);
    let query = UserQuery {
        select: vec!["id".into(), "signInActivity".into()],
        top: Some(120),
        ..Default::default()
    };
    let ids: Vec<String> = client
        .list_users(&query)
        .map_ok(|u| u.id)
        .try_collect()
        .await
        .expect("users");
    assert_eq!(ids, ["a", "b", "c"]);
    let seen = server.seen();
    assert_eq!(
        seen[0].uri,
        "/v1.0/users?%24select=id%2CsignInActivity&%24top=120"
    );
    assert_eq!(
        seen[1].uri, "/v1.0/users?$select=id,signInActivity&$top=120&$skiptoken=X%2BY",
        "nextLink sent exactly as Graph gave it"
    );

    // Page-level API: a checkpointed nextLink resumes; an expired one is typed.
    let listing = client.users_listing(&query);
    let first = client
        .users_page(&listing, &listing.first)
        .await
        .expect("page");
    let saved = first.next_link.expect("next");
    let rest: Vec<Page<User>> = client
        .pages_from(listing.clone(), saved)
        .try_collect()
        .await
        .expect("resume");
    assert_eq!(rest.len(), 1);
    let expired = format!("{}/v1.0/users?$skiptoken=EXPIRED", server.base);
    let mut pages = client.pages_from::<User>(listing.clone(), expired).boxed();
    assert_eq!(
        pages.next().await.expect("one item").expect_err("expired"),
        GraphError::ExpiredSkipToken
    );
    assert!(pages.next().await.is_none(), "stream ends after an error");
    // A nextLink to another host is refused (it would carry our token).
    let err = client
        .users_page(&listing, "https://evil.example/v1.0/users")
        .await
        .expect_err("foreign");
    assert_eq!(err.code(), Some("ForeignNextLink"));
}

#[tokio::test]
async fn batch_retries_only_the_throttled_items_and_keeps_order() {
    let failed_once = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let f = failed_once.clone();
    let server = serve(move |s, _| {
        let req: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
        let mut failed = f.lock().expect("lock");
        let items = req["requests"].as_array().cloned().unwrap_or_default();
        let responses: Vec<serde_json::Value> = items
            .iter()
            .map(|it| {
                let id = it["id"].as_str().unwrap_or_default().to_string();
                let url = it["url"].as_str().unwrap_or_default();
                if url.ends_with("/gone") {
                    serde_json::json!({"id": id, "status": 404, "body": {"error": {"code": "Request_ResourceNotFound", "message": "x"}}})
                } else if url.ends_with("/busy") && failed.insert(url.to_string()) {
                    serde_json::json!({"id": id, "status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"code": "TooManyRequests", "message": "x"}}})
                } else if url.ends_with("/flaky") && failed.insert(url.to_string()) {
                    serde_json::json!({"id": id, "status": 503, "body": {"error": {"code": "serviceNotAvailable", "message": "x"}}})
                } else {
                    let uid = url.rsplit('/').next().unwrap_or_default();
                    serde_json::json!({"id": id, "status": 200, "body": {"id": uid}})
                }
            })
            .rev() // Graph may answer in any order.
            .collect();
        reply(200, &serde_json::json!({ "responses": responses }).to_string())
    })
    .await;
    let client = static_client(&server.base);
    let mut items: Vec<BatchItem> = (0..23)
        .map(|i| BatchItem::get(format!("/users/u{i}")))
        .collect();
    items[3] = BatchItem::get("/users/busy");
    items[5] = BatchItem::get("/users/gone");
    items[21] = BatchItem::get("/users/flaky");
    let start = Instant::now();
    let results = client.batch(&items).await.expect("batch");
    assert_eq!(results.len(), 23);
    for (i, r) in results.iter().enumerate() {
        match i {
            5 => assert_eq!(r.as_ref().expect_err("404"), &GraphError::NotFound),
            3 => assert_eq!(
                r.as_ref().expect("retried").body.as_ref().expect("body")["id"],
                "busy"
            ),
            21 => assert_eq!(
                r.as_ref().expect("retried").body.as_ref().expect("body")["id"],
                "flaky"
            ),
            _ => {
                let v: serde_json::Value = r.as_ref().expect("ok").json().expect("json");
                assert_eq!(v["id"], format!("u{i}"));
            }
        }
    }
    assert!(start.elapsed() >= Duration::from_millis(950));
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "20 + 3, then one retry batch");
    let retry: serde_json::Value = serde_json::from_slice(&seen[2].body).expect("json");
    let ids: Vec<&str> = retry["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["3", "21"], "only the failed items are re-sent");
    assert_eq!(client.stats().throttled, 1);
}

#[tokio::test]
async fn report_settings_guard_restores_on_error_and_is_a_no_op_when_names_are_visible() {
    let concealed = Arc::new(Mutex::new(true));
    let c = concealed.clone();
    let server = serve(move |s, _| {
        if s.method == "PATCH" {
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
            *c.lock().expect("lock") = v["displayConcealedNames"].as_bool().unwrap_or(true);
            return reply(204, "");
        }
        let now = *c.lock().expect("lock");
        reply(200, &format!(r#"{{"displayConcealedNames":{now}}}"#))
    })
    .await;
    let client = static_client(&server.base);
    let seen_during = Arc::new(Mutex::new(None));
    let sd = seen_during.clone();
    let c2 = concealed.clone();
    let r: Result<(), GraphError> = client
        .with_revealed_names(|_| async move {
            *sd.lock().expect("lock") = Some(*c2.lock().expect("lock"));
            Err(GraphError::Transient("download failed".into()))
        })
        .await;
    assert!(r.is_err());
    assert_eq!(
        *seen_during.lock().expect("lock"),
        Some(false),
        "revealed during the work"
    );
    assert!(
        *concealed.lock().expect("lock"),
        "concealed again after an error"
    );

    // Explicit guard.
    let guard = client.reveal_report_names().await.expect("guard");
    assert!(guard.was_concealed());
    assert!(!*concealed.lock().expect("lock"));
    guard.restore().await.expect("restore");
    assert!(*concealed.lock().expect("lock"));

    // Names already visible: nothing to change, nothing to restore.
    *concealed.lock().expect("lock") = false;
    let patches_before = server.seen().iter().filter(|s| s.method == "PATCH").count();
    let guard = client.reveal_report_names().await.expect("guard");
    assert!(!guard.was_concealed());
    guard.restore().await.expect("restore");
    let patches_after = server.seen().iter().filter(|s| s.method == "PATCH").count();
    assert_eq!(patches_before, patches_after);
    assert!(!*concealed.lock().expect("lock"));
}

#[tokio::test]
async fn a_dropped_guard_shouts_and_restores_in_the_background() {
    let concealed = Arc::new(Mutex::new(true));
    let c = concealed.clone();
    let server = serve(move |s, _| {
        if s.method == "PATCH" {
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
            *c.lock().expect("lock") = v["displayConcealedNames"].as_bool().unwrap_or(true);
            return reply(204, "");
        }
        let now = *c.lock().expect("lock");
        reply(200, &format!(r#"{{"displayConcealedNames":{now}}}"#))
    })
    .await;
    let client = static_client(&server.base);
    let guard = client.reveal_report_names().await.expect("guard");
    assert!(!*concealed.lock().expect("lock"));
    drop(guard);
    for _ in 0..100 {
        if *concealed.lock().expect("lock") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(*concealed.lock().expect("lock"), "fallback restore ran");
}

#[tokio::test]
async fn report_settings_guard_restores_when_the_work_panics() {
    let concealed = Arc::new(Mutex::new(true));
    let c = concealed.clone();
    let server = serve(move |s, _| {
        if s.method == "PATCH" {
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
            *c.lock().expect("lock") = v["displayConcealedNames"].as_bool().unwrap_or(true);
            return reply(204, "");
        }
        let now = *c.lock().expect("lock");
        reply(200, &format!(r#"{{"displayConcealedNames":{now}}}"#))
    })
    .await;
    let client = static_client(&server.base);
    let task = tokio::spawn(async move {
        client
            .with_revealed_names(|_| async move {
                if true {
                    panic!("scan bug");
                }
                Ok::<(), GraphError>(())
            })
            .await
    });
    assert!(task.await.expect_err("panicked").is_panic());
    assert!(
        *concealed.lock().expect("lock"),
        "restored before the panic resumed"
    );
}

#[tokio::test]
async fn writes_and_small_reads_hit_the_documented_endpoints() {
    let server = serve(|s, _| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", u) if u.starts_with("/v1.0/users/nomgr/manager") => reply(404, r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'manager' does not exist"}}"#),
        ("GET", u) if u.starts_with("/v1.0/users/u1/manager") => reply(200, include_str!("../../src/graph/fixtures/manager.json")),
        ("GET", "/v1.0/users/u1/mailboxSettings") => reply(200, include_str!("../../src/graph/fixtures/mailbox-settings.json")),
        ("GET", "/v1.0/users/nobox/mailboxSettings") => reply(404, r#"{"error":{"code":"MailboxNotEnabledForRESTAPI","message":"REST API is not yet supported for this mailbox."}}"#),
        ("GET", "/v1.0/subscribedSkus") => reply(200, include_str!("../../src/graph/fixtures/subscribed-skus.json")),
        ("GET", u) if u.starts_with("/v1.0/organization") => reply(200, include_str!("../../src/graph/fixtures/organization.json")),
        ("POST", "/v1.0/invitations") => reply(201, include_str!("../../src/graph/fixtures/invitation.json")),
        ("GET", u) if u.starts_with("/common/userrealm") => reply(200, include_str!("../../src/graph/fixtures/userrealm.json")),
        ("POST", _) | ("PATCH", _) | ("DELETE", _) => reply(204, ""),
        _ => reply(404, "{}"),
    })
    .await;
    let client = static_client(&server.base);
    client
        .set_account_enabled("u1", false)
        .await
        .expect("disable");
    client.revoke_sign_in_sessions("u1").await.expect("revoke");
    client
        .remove_licenses("u1", &["b05e124f-c7cc-45a0-a6aa-8cf78c946968".into()])
        .await
        .expect("licenses");
    client.delete_user("u1").await.expect("delete");
    client.restore_deleted("u1").await.expect("restore");
    client.purge_deleted("u1").await.expect("purge");
    assert!(client.manager("nomgr").await.expect("manager").is_none());
    assert_eq!(
        client.manager("u1").await.expect("manager").map(|m| m.id),
        Some("6b0d8a7c-9f1b-4d4e-8e3a-2b1f5d9c0a11".to_string())
    );
    assert_eq!(
        client
            .mailbox_settings("u1")
            .await
            .expect("mbx")
            .and_then(|m| m.user_purpose),
        Some("shared".to_string())
    );
    assert!(
        client
            .mailbox_settings("nobox")
            .await
            .expect("mbx")
            .is_none()
    );
    assert_eq!(client.subscribed_skus().await.expect("skus").len(), 2);
    assert_eq!(
        client.directory_quota().await.expect("quota"),
        Some(DirectorySizeQuota {
            used: 8,
            total: 300_000
        })
    );
    let inv = client
        .reset_redemption(
            "u1",
            "a@fabrikam.com",
            "https://myapps.microsoft.com",
            false,
        )
        .await
        .expect("invite");
    assert_eq!(inv.status.as_deref(), Some("Completed"));
    assert_eq!(
        client
            .user_realm("Someone@Viral.example")
            .await
            .expect("realm")
            .is_viral,
        Some(true)
    );
    client
        .user_realm("other@viral.example")
        .await
        .expect("cached");

    let seen = server.seen();
    let find = |m: &str, u: &str| {
        seen.iter()
            .find(|s| s.method == m && s.uri == u)
            .unwrap_or_else(|| panic!("{m} {u} not sent"))
            .clone()
    };
    let patch = find("PATCH", "/v1.0/users/u1");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&patch.body).expect("json"),
        serde_json::json!({"accountEnabled": false})
    );
    find("POST", "/v1.0/users/u1/revokeSignInSessions");
    let lic = find("POST", "/v1.0/users/u1/assignLicense");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&lic.body).expect("json"),
        serde_json::json!({"addLicenses": [], "removeLicenses": ["b05e124f-c7cc-45a0-a6aa-8cf78c946968"]})
    );
    find("DELETE", "/v1.0/users/u1");
    find("POST", "/v1.0/directory/deletedItems/u1/restore");
    find("DELETE", "/v1.0/directory/deletedItems/u1");
    let inv = find("POST", "/v1.0/invitations");
    let body: serde_json::Value = serde_json::from_slice(&inv.body).expect("json");
    assert_eq!(body["resetRedemption"], true);
    assert_eq!(body["invitedUser"]["id"], "u1");
    let realm: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.uri.starts_with("/common/userrealm"))
        .collect();
    assert_eq!(realm.len(), 1, "one lookup per domain");
    assert!(realm[0].uri.contains("api-version=2.1"));
    assert_eq!(realm[0].authorization, None, "userrealm is unauthenticated");
}

/// Client-secret tokens over HTTPS trusted through DORMANT_CA_FILE, the secret
/// read from Key Vault, and re-read once when the authority says invalid_client.
#[tokio::test]
async fn client_secret_from_key_vault_is_re_read_once_on_invalid_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv_reads = Arc::new(AtomicUsize::new(0));
    let k = kv_reads.clone();
    let (server, ca) = serve_tls(
        move |s, base| {
            if s.uri.starts_with("/secrets/") {
                if s.authorization.is_none() {
                    // Key Vault's challenge: the SDK asks for a token for `resource`.
                    let challenge = format!(
                        "Bearer authorization=\"{base}/kv-tenant\", resource=\"https://vault.azure.net\""
                    );
                    return reply_with(401, &[("www-authenticate", &challenge)], "");
                }
                let n = k.fetch_add(1, Ordering::SeqCst);
                let value = if s.uri.contains("rotating") && n > 0 { "new-secret" } else { "old-secret" };
                return reply(200, &serde_json::json!({"value": value, "id": format!("{base}/secrets/x/1")}).to_string());
            }
            if s.uri.ends_with("/oauth2/v2.0/token") {
                let form = String::from_utf8_lossy(&s.body).to_string();
                if form.contains("client_secret=new-secret") {
                    return reply(200, r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"graph-token"}"#);
                }
                return reply(401, r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#);
            }
            if s.uri.starts_with("/v1.0/users/u1") {
                if s.authorization.as_deref() == Some("Bearer graph-token") {
                    return reply(200, r#"{"id":"u1"}"#);
                }
                return reply(401, "{}");
            }
            reply(404, "{}")
        },
        dir.path(),
    )
    .await;

    let mut s = settings_for(&server.base);
    s.credential = CredentialKind::ClientSecret;
    s.client_id = Some("00000000-0000-0000-0000-0000000000a1".into());
    s.keyvault_url = Some(Url::parse(&server.base).expect("url"));
    s.client_secret_name = Some("rotating".into());
    s.ca_file = Some(ca.clone());
    let http = build_http_client(Some(&ca)).expect("https client with extra CA");
    let kv_cred: Arc<dyn azure_core::credentials::TokenCredential> = Arc::new(FakeKvCredential);
    let tokens = Arc::new(
        EntraTokenProvider::new(s.clone(), http.clone(), Some(kv_cred.clone())).expect("provider"),
    );
    let client = GraphClient::with_parts(
        &s,
        http.clone(),
        tokens,
        Arc::new(Pacer::new(PacerConfig::from_settings(&s))),
    );
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    assert_eq!(
        kv_reads.load(Ordering::SeqCst),
        2,
        "read, then re-read after invalid_client"
    );
    let token_calls = server.count("/contoso.onmicrosoft.com/oauth2/v2.0/token");
    assert_eq!(token_calls, 2);
    // The secret never appears in a request other than the token request.
    assert!(
        server
            .seen()
            .iter()
            .filter(|x| !x.uri.ends_with("/token"))
            .all(|x| !String::from_utf8_lossy(&x.body).contains("secret"))
    );

    // A secret that stays wrong: one re-read, then a typed auth error.
    let reads_before = kv_reads.load(Ordering::SeqCst);
    let mut s2 = s.clone();
    s2.client_secret_name = Some("stale".into());
    let tokens = Arc::new(
        EntraTokenProvider::new(s2.clone(), http.clone(), Some(kv_cred)).expect("provider"),
    );
    let client = GraphClient::with_parts(
        &s2,
        http,
        tokens,
        Arc::new(Pacer::new(PacerConfig::from_settings(&s2))),
    );
    let err = client.get_user("u1", &[]).await.expect_err("auth");
    assert!(
        matches!(&err, GraphError::Auth(m) if m.contains("even after re-reading")),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(kv_reads.load(Ordering::SeqCst) - reads_before, 2);
}

#[derive(Debug)]
struct FakeKvCredential;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeKvCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://vault.azure.net/.default"]);
        Ok(azure_core::credentials::AccessToken::new(
            "kv-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn connection_resets_truncated_bodies_and_timeouts_are_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = sock.read(&mut buf).await;
                match n {
                    // Reset: close without an answer.
                    0 => drop(sock),
                    // Truncated: promise 100 bytes, send 11, close.
                    1 => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":\"u1\"}")
                            .await;
                        drop(sock);
                    }
                    // Too slow: past the per-attempt timeout.
                    2 => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        drop(sock);
                    }
                    _ => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"id\":\"u1\"}")
                            .await;
                    }
                }
            });
        }
    });
    let mut s = settings_for(&base);
    s.request_timeout = Duration::from_secs(1);
    let mut pc = PacerConfig::from_settings(&s);
    pc.base_backoff = Duration::from_millis(10);
    pc.max_backoff = Duration::from_millis(50);
    let client = GraphClient::with_parts(
        &s,
        build_http_client(None).expect("client"),
        Arc::new(StaticToken(SecretString::from("t".to_string()))),
        Arc::new(Pacer::new(pc)),
    );
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    assert_eq!(connections.load(Ordering::SeqCst), 4);
    assert_eq!(client.stats().retries, 3);
}

/// Certificate and workload-identity credentials over HTTPS: both send a
/// client assertion to `{authority}/{tenant}/oauth2/v2.0/token`.
#[tokio::test]
async fn certificate_and_workload_identity_credentials_send_client_assertions() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let assertions = Arc::new(Mutex::new(Vec::<String>::new()));
    let a = assertions.clone();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("rsa");
    let cert = rcgen::CertificateParams::new(vec!["dormant".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    let kv_pem = pem.clone();
    let (server, ca) = serve_tls(
        move |s, base| {
            if s.uri.starts_with("/secrets/app-cert") {
                if s.authorization.is_none() {
                    let challenge = format!(
                        "Bearer authorization=\"{base}/kv-tenant\", resource=\"https://vault.azure.net\""
                    );
                    return reply_with(401, &[("www-authenticate", &challenge)], "");
                }
                return reply(
                    200,
                    &serde_json::json!({"value": kv_pem, "contentType": "application/x-pem-file", "kid": format!("{base}/keys/app-cert/1")}).to_string(),
                );
            }
            if s.uri.ends_with("/oauth2/v2.0/token") {
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(&s.body).into_owned().collect();
                assert_eq!(
                    form.get("client_assertion_type").map(String::as_str),
                    Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                );
                assert!(form.get("scope").is_some_and(|s| s.ends_with("/.default")));
                a.lock()
                    .expect("lock")
                    .push(form.get("client_assertion").cloned().unwrap_or_default());
                return reply(
                    200,
                    r#"{"token_type":"Bearer","expires_in":3599,"access_token":"graph-token"}"#,
                );
            }
            if s.authorization.as_deref() == Some("Bearer graph-token") {
                return reply(200, r#"{"id":"u1"}"#);
            }
            reply(401, "{}")
        },
        dir.path(),
    )
    .await;
    let http = build_http_client(Some(&ca)).expect("client");

    // Certificate from a PEM file.
    let pem_path = dir.path().join("app.pem");
    std::fs::write(&pem_path, &pem).expect("write");
    let mut s = settings_for(&server.base);
    s.credential = CredentialKind::ClientCertificate;
    s.client_id = Some("app-id".into());
    s.client_certificate_path = Some(pem_path);
    let tokens =
        Arc::new(EntraTokenProvider::new(s.clone(), http.clone(), None).expect("provider"));
    let client = GraphClient::with_parts(
        &s,
        http.clone(),
        tokens,
        Arc::new(Pacer::new(PacerConfig::from_settings(&s))),
    );
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    let jwt = assertions.lock().expect("lock")[0].clone();
    let claims = jwt.split('.').nth(1).expect("claims");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        claims["aud"],
        format!("{}/contoso.onmicrosoft.com/oauth2/v2.0/token", server.base)
    );
    assert_eq!(claims["iss"], "app-id");

    // Workload identity: the federated token file is the assertion.
    let token_file = dir.path().join("federated-token");
    std::fs::write(&token_file, "federated.jwt.value").expect("write");
    let mut s = settings_for(&server.base);
    s.credential = CredentialKind::WorkloadIdentity;
    s.client_id = Some("app-id".into());
    s.federated_token_file = Some(token_file);
    let tokens =
        Arc::new(EntraTokenProvider::new(s.clone(), http.clone(), None).expect("provider"));
    let client = GraphClient::with_parts(
        &s,
        http,
        tokens,
        Arc::new(Pacer::new(PacerConfig::from_settings(&s))),
    );
    assert_eq!(client.get_user("u1", &[]).await.expect("user").id, "u1");
    assert_eq!(assertions.lock().expect("lock")[1], "federated.jwt.value");
    assert_eq!(
        server.count("/contoso.onmicrosoft.com/oauth2/v2.0/token"),
        2
    );
}

#[tokio::test]
async fn get_users_reads_many_by_id_through_batch() {
    let server = serve(|s, _| {
        let req: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
        let responses: Vec<serde_json::Value> = req["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|it| {
                let url = it["url"].as_str().unwrap_or_default();
                let id = url.trim_start_matches("/users/").split('?').next().unwrap_or_default();
                assert!(url.ends_with("?%24select=id%2CaccountEnabled"), "{url}");
                if id == "gone" {
                    serde_json::json!({"id": it["id"], "status": 404, "body": {"error": {"code": "Request_ResourceNotFound", "message": "x"}}})
                } else {
                    serde_json::json!({"id": it["id"], "status": 200, "body": {"id": id, "accountEnabled": true}})
                }
            })
            .collect();
        reply(200, &serde_json::json!({ "responses": responses }).to_string())
    })
    .await;
    let client = static_client(&server.base);
    let ids: Vec<String> = vec!["a".into(), "gone".into(), "c".into()];
    let users = client
        .get_users(&ids, &["id", "accountEnabled"])
        .await
        .expect("batch");
    assert_eq!(users[0].as_ref().expect("a").id, "a");
    assert_eq!(users[1].as_ref().expect_err("gone"), &GraphError::NotFound);
    assert_eq!(users[2].as_ref().expect("c").account_enabled, Some(true));
    assert_eq!(server.seen()[0].uri, "/v1.0/$batch");
}

#[tokio::test]
async fn a_retry_after_beyond_the_retry_budget_is_returned_as_throttled() {
    let server = serve(|_, _| reply_with(429, &[("retry-after", "3600")], "{}")).await;
    let client = static_client(&server.base);
    let start = Instant::now();
    let err = client.get_user("u1", &[]).await.expect_err("throttled");
    assert_eq!(
        err,
        GraphError::Throttled {
            // An hour is clamped to the longest wait dormant takes.
            retry_after: Duration::from_secs(300)
        }
    );
    assert!(err.is_transient());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_to_the_reveal_patch_still_conceals_the_names_again() {
    // The PATCH that un-conceals lands, but the caller hears a refusal (a
    // gateway error, a timeout): the names must not stay revealed.
    let concealed = Arc::new(Mutex::new(true));
    let c = concealed.clone();
    let server = serve(move |s, _| {
        if s.method == "PATCH" {
            let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
            let conceal = v["displayConcealedNames"].as_bool().unwrap_or(true);
            *c.lock().expect("lock") = conceal;
            if !conceal {
                return reply(
                    409,
                    r#"{"error":{"code":"Request_ConflictingObjects","message":"Another operation is in progress"}}"#,
                );
            }
            return reply(204, "");
        }
        let now = *c.lock().expect("lock");
        reply(200, &format!(r#"{{"displayConcealedNames":{now}}}"#))
    })
    .await;
    let client = static_client(&server.base);
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    let r = client
        .with_revealed_names(|_| async move {
            r2.fetch_add(1, Ordering::SeqCst);
            Ok::<(), GraphError>(())
        })
        .await;
    assert!(r.is_err(), "the reveal failed as far as dormant knows");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "no download without the reveal"
    );
    assert!(
        *concealed.lock().expect("lock"),
        "names concealed again although the answer was lost"
    );
    let patches: Vec<String> = server
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches[1].contains("true"), "{patches:?}");
}

#[tokio::test]
async fn a_huge_or_malformed_retry_after_is_clamped_and_never_panics() {
    let odd_calls = Arc::new(AtomicUsize::new(0));
    let oc = odd_calls.clone();
    let server = serve(move |s, _| {
        let throttled = |value: &str| {
            reply_with(
                429,
                &[("content-type", "application/json"), ("retry-after", value)],
                r#"{"error":{"code":"TooManyRequests","message":"Please retry again later."}}"#,
            )
        };
        if s.uri.starts_with("/v1.0/users/huge") {
            throttled("1e30")
        } else if s.uri.starts_with("/v1.0/users/forever") {
            throttled("18446744073709551615")
        } else if s.uri.starts_with("/v1.0/users/odd") {
            if oc.fetch_add(1, Ordering::SeqCst) == 0 {
                throttled("after lunch")
            } else {
                reply(200, r#"{"id":"odd"}"#)
            }
        } else {
            reply(404, "{}")
        }
    })
    .await;
    for id in ["huge", "forever"] {
        // A fresh client each time: the first pause holds its budget.
        let client = static_client(&server.base);
        let started = Instant::now();
        let r = client.get_user(id, &["id"]).await;
        assert_eq!(
            r.expect_err("throttled"),
            GraphError::Throttled {
                retry_after: Duration::from_secs(300)
            },
            "{id}: clamped to five minutes"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{id}: a wait past the retry budget is not taken"
        );
    }
    // A malformed value falls back to dormant's own pause and the call goes on.
    let client = static_client(&server.base);
    let user = client.get_user("odd", &["id"]).await.expect("retried");
    assert_eq!(user.id, "odd");
    assert_eq!(odd_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn graph_error_text_quoting_a_user_never_reaches_the_error_we_keep() {
    let upn = "ada.lovelace@contoso.com";
    let server = serve(move |s, _| {
        if s.uri.starts_with("/v1.0/users/refused") {
            reply(
                403,
                &format!(
                    r#"{{"error":{{"code":"Authorization_RequestDenied","message":"Insufficient privileges to update {upn}"}}}}"#
                ),
            )
        } else if s.uri.starts_with("/v1.0/users/odd") {
            // An answer of the wrong shape whose value is a UPN.
            reply(200, &format!(r#"{{"id":"odd","accountEnabled":"{upn}"}}"#))
        } else {
            reply(
                503,
                &format!(r#"{{"error":{{"code":"serviceNotAvailable","message":"busy with {upn}"}}}}"#),
            )
        }
    })
    .await;
    let client = static_client(&server.base);
    let refused = client.get_user("refused", &["id"]).await.expect_err("403");
    assert_eq!(refused.code(), Some("Authorization_RequestDenied"));
    let odd = client
        .get_user("odd", &["id", "accountEnabled"])
        .await
        .expect_err("wrong shape");
    let busy = client.get_user("busy", &["id"]).await.expect_err("503");
    for e in [refused, odd, busy] {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(upn), "{text}");
        assert!(!text.contains("ada.lovelace"), "{text}");
    }
}

#[tokio::test]
async fn enable_audits_are_asked_once_a_minute_and_then_only_for_what_is_new() {
    // Directory audits allow 5 requests per 10 s: a night of re-checks must
    // share one answer, and a refresh must not page a month again.
    let server = serve(|s, _| {
        let filter =
            url::form_urlencoded::parse(s.uri.split_once('?').map_or("", |q| q.1).as_bytes())
                .find(|(k, _)| k == "$filter")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        let event = |id: &str, at: &str, user: &str| {
            serde_json::json!({
                "id": id,
                "activityDisplayName": "Enable account",
                "activityDateTime": at,
                "initiatedBy": {"user": {"id": "admin"}},
                "targetResources": [{"id": user, "type": "User"}],
            })
        };
        let value = if filter.contains("ge 2026-11-02") {
            vec![event("e1", "2026-11-20T10:00:00Z", "u1")]
        } else {
            // The refresh: from the last fetch less two hours.
            assert!(filter.contains("ge 2026-12-02T08:00:00Z"), "{filter}");
            vec![event("e2", "2026-12-02T10:30:00Z", "u2")]
        };
        reply(200, &serde_json::json!({ "value": value }).to_string())
    })
    .await;
    let client = static_client(&server.base);
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().expect("date");
    let month = chrono::Duration::days(30);
    let now = at("2026-12-02T10:00:00Z");
    let first = client
        .enable_audits_since(now - month, now)
        .await
        .expect("audits");
    assert_eq!(first.len(), 1);
    for later in [
        now + chrono::Duration::seconds(30),
        now + chrono::Duration::seconds(59),
    ] {
        let again = client
            .enable_audits_since(later - month, later)
            .await
            .expect("audits");
        assert_eq!(again.len(), 1);
    }
    assert_eq!(
        server.count("/v1.0/auditLogs/directoryAudits"),
        1,
        "one request a minute"
    );
    let later = now + chrono::Duration::minutes(45);
    let merged = client
        .enable_audits_since(later - month, later)
        .await
        .expect("audits");
    let ids: Vec<&str> = merged.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2"], "the old answer kept, the new one added");
    assert_eq!(server.count("/v1.0/auditLogs/directoryAudits"), 2);
}
