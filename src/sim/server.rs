//! The HTTPS server: TLS, HTTP/1.1 and h2, the top-level router, latency and faults.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::AuthState;
use super::clock::SimClock;
use super::http::{Body, GRAPH_JSON, Reply, Req, RequestIds, graph_error};
use super::tenant::Tenant;
use super::throttle::Throttle;

/// Latency and failures to inject; set by flags, [`super::Sim::set_faults`] or `POST /_sim/faults`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// Added to every request.
    pub latency_ms: u64,
    /// Added per item returned (users in a page, requests in a batch).
    pub per_item_latency_us: u64,
    /// Probability of a 503 `serviceNotAvailable`.
    pub rate_503: f64,
    /// Probability the connection is dropped without an answer.
    pub rate_reset: f64,
    /// Probability the body is cut short (Content-Length promises more).
    pub rate_truncate: f64,
    /// The next N matching requests get 503.
    pub next_503: u32,
    /// The next N matching requests get Graph's 429 with `Retry-After: retry_after_secs`.
    pub next_429: u32,
    pub retry_after_secs: u64,
    /// Sent verbatim as the 429's `Retry-After` instead of
    /// `retry_after_secs` (a huge or malformed value, as proxies send).
    pub retry_after_header: Option<String>,
    /// The next N matching requests get a Graph error `error_status`
    /// `error_code` with `error_message` (which may quote a user, as
    /// Graph's messages do).
    pub next_error: u32,
    pub error_status: u16,
    pub error_code: String,
    pub error_message: String,
    /// The next N matching requests are dropped.
    pub next_reset: u32,
    /// The next N matching requests get a truncated body.
    pub next_truncate: u32,
    /// The next N matching requests hang for `stuck_secs`.
    pub next_stuck: u32,
    /// The next N matching requests take effect, then their answer hangs
    /// for `stuck_secs`: the caller never learns that the change happened
    /// (a crash or a network cut between acting and recording).
    pub next_stuck_after_effect: u32,
    pub stuck_secs: u64,
    /// Faults only hit requests whose path contains this (e.g. `/users`).
    pub path_contains: Option<String>,
    /// ... and, when set, only requests of this method (`PATCH`).
    pub method: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            per_item_latency_us: 0,
            rate_503: 0.0,
            rate_reset: 0.0,
            rate_truncate: 0.0,
            next_503: 0,
            next_429: 0,
            retry_after_secs: 2,
            retry_after_header: None,
            next_error: 0,
            error_status: 400,
            error_code: "Request_BadRequest".into(),
            error_message: String::new(),
            next_reset: 0,
            next_truncate: 0,
            next_stuck: 0,
            next_stuck_after_effect: 0,
            method: None,
            stuck_secs: 3_600,
            path_contains: None,
        }
    }
}

/// A message captured from `POST /users/{id}/sendMail`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapturedMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    pub content_type: String,
    pub sent_at: String,
}

/// Counters tests assert on.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub graph_requests: AtomicU64,
    pub throttled: AtomicU64,
    pub faults_injected: AtomicU64,
    pub token_requests: AtomicU64,
    pub report_redirects: AtomicU64,
    pub report_downloads: AtomicU64,
    pub report_downloads_with_auth: AtomicU64,
    pub by_route: Mutex<BTreeMap<String, u64>>,
    /// Requests of each route answered 429 (a subset of `by_route`).
    pub throttled_by_route: Mutex<BTreeMap<String, u64>>,
    pub realm_lookups: Mutex<BTreeMap<String, u64>>,
}

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub requests: u64,
    pub graph_requests: u64,
    pub throttled: u64,
    pub faults_injected: u64,
    pub token_requests: u64,
    pub report_redirects: u64,
    pub report_downloads: u64,
    pub report_downloads_with_auth: u64,
    pub by_route: BTreeMap<String, u64>,
    pub throttled_by_route: BTreeMap<String, u64>,
    pub realm_lookups: BTreeMap<String, u64>,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        StatsSnapshot {
            requests: l(&self.requests),
            graph_requests: l(&self.graph_requests),
            throttled: l(&self.throttled),
            faults_injected: l(&self.faults_injected),
            token_requests: l(&self.token_requests),
            report_redirects: l(&self.report_redirects),
            report_downloads: l(&self.report_downloads),
            report_downloads_with_auth: l(&self.report_downloads_with_auth),
            by_route: self.by_route.lock().map(|m| m.clone()).unwrap_or_default(),
            throttled_by_route: self
                .throttled_by_route
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            realm_lookups: self
                .realm_lookups
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
        }
    }
    /// Zero every counter (between phases of a test).
    pub fn reset(&self) {
        for a in [
            &self.requests,
            &self.graph_requests,
            &self.throttled,
            &self.faults_injected,
            &self.token_requests,
            &self.report_redirects,
            &self.report_downloads,
            &self.report_downloads_with_auth,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        if let Ok(mut m) = self.by_route.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.throttled_by_route.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.realm_lookups.lock() {
            m.clear();
        }
    }
    pub fn bump_route(&self, route: String) {
        if let Ok(mut m) = self.by_route.lock() {
            *m.entry(route).or_default() += 1;
        }
    }
}

/// Everything the handlers share.
pub struct State {
    pub base_url: String,
    /// Immutable copies, so no handler needs the tenant and auth locks together.
    pub tenant_id: String,
    pub client_id: String,
    pub clock: SimClock,
    pub tenant: RwLock<Tenant>,
    pub auth: Mutex<AuthState>,
    pub faults: Mutex<Faults>,
    pub throttle: Mutex<Throttle>,
    pub stats: Stats,
    pub mail: Mutex<Vec<CapturedMail>>,
    pub concealed: AtomicBool,
    /// Pre-authenticated report downloads: token → (expiry, what the report covers).
    pub downloads: Mutex<HashMap<String, (i64, super::report::ReportScope)>>,
    pub skiptoken_ttl_secs: i64,
    pub skip_key: u64,
    pub quota_total: u64,
    pub shutdown: CancellationToken,
    pub fault_rng: Mutex<super::ids::Rng>,
    /// Sign-ins recorded but not yet visible (signInActivity lags).
    pub pending_sign_ins: Mutex<Vec<super::control::PendingSignIn>>,
    pub sign_in_lag_secs: i64,
    /// The tenant has no Entra ID P2: PIM answers `AadPremiumLicenseRequired`.
    pub no_pim: AtomicBool,
    /// SKUs without a free seat: assigning them is refused.
    pub exhausted_skus: Mutex<std::collections::HashSet<String>>,
    /// RS256 key for user ID tokens (generated on first use).
    pub idp_key: std::sync::OnceLock<Result<super::auth::IdpKey, String>>,
}

impl State {
    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }
    pub fn tenant_read(&self) -> std::sync::RwLockReadGuard<'_, Tenant> {
        self.tenant.read().unwrap_or_else(|p| p.into_inner())
    }
    pub fn tenant_write(&self) -> std::sync::RwLockWriteGuard<'_, Tenant> {
        self.tenant.write().unwrap_or_else(|p| p.into_inner())
    }
    pub fn lock<'a, T>(&self, m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type OutBody = BoxBody<Bytes, std::io::Error>;

fn full(b: Bytes) -> OutBody {
    Full::new(b)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Accept TLS connections until shutdown.
pub async fn serve(st: Arc<State>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            _ = st.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let st = st.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let shutdown = st.shutdown.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let st = st.clone();
                async move { handle(st, req).await }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {},
                _ = shutdown.cancelled() => {},
            }
        });
    }
}

enum Injected {
    None,
    Throttled(u64, Option<String>),
    Error(u16, String, String),
    Reset,
    Truncate,
    Stuck(u64),
    StuckAfterEffect(u64),
    Unavailable,
}

fn pick_fault(st: &State, method: &hyper::Method, path: &str) -> (Injected, u64, u64) {
    let mut f = st.lock(&st.faults);
    let latency = f.latency_ms;
    let per_item = f.per_item_latency_us;
    if path.starts_with("/_sim")
        || f.path_contains
            .as_deref()
            .is_some_and(|p| !path.contains(p))
        || f.method
            .as_deref()
            .is_some_and(|m| !m.eq_ignore_ascii_case(method.as_str()))
    {
        return (Injected::None, latency, per_item);
    }
    let fault = if f.next_reset > 0 {
        f.next_reset -= 1;
        Injected::Reset
    } else if f.next_truncate > 0 {
        f.next_truncate -= 1;
        Injected::Truncate
    } else if f.next_stuck > 0 {
        f.next_stuck -= 1;
        Injected::Stuck(f.stuck_secs)
    } else if f.next_stuck_after_effect > 0 {
        f.next_stuck_after_effect -= 1;
        Injected::StuckAfterEffect(f.stuck_secs)
    } else if f.next_503 > 0 {
        f.next_503 -= 1;
        Injected::Unavailable
    } else if f.next_error > 0 {
        f.next_error -= 1;
        Injected::Error(
            f.error_status,
            f.error_code.clone(),
            f.error_message.clone(),
        )
    } else if f.next_429 > 0 {
        f.next_429 -= 1;
        Injected::Throttled(f.retry_after_secs, f.retry_after_header.clone())
    } else if f.rate_reset > 0.0 || f.rate_truncate > 0.0 || f.rate_503 > 0.0 {
        let mut rng = st.lock(&st.fault_rng);
        if rng.chance(f.rate_reset) {
            Injected::Reset
        } else if rng.chance(f.rate_truncate) {
            Injected::Truncate
        } else if rng.chance(f.rate_503) {
            Injected::Unavailable
        } else {
            Injected::None
        }
    } else {
        Injected::None
    };
    (fault, latency, per_item)
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<OutBody>, std::io::Error> {
    st.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .to_string();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let r = Req {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
    };
    let ids = RequestIds {
        request_id: uuid::Uuid::new_v4().to_string(),
        client_request_id: r
            .header("client-request-id")
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        date: st.clock.now().format("%Y-%m-%dT%H:%M:%S").to_string(),
    };

    let (fault, latency_ms, per_item_us) = pick_fault(&st, &r.method, &r.path);
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    match fault {
        Injected::Reset => {
            st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated connection reset",
            ));
        }
        Injected::Stuck(secs) => {
            st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {},
                _ = st.shutdown.cancelled() => {},
            }
        }
        Injected::Unavailable => {
            st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
            let reply = graph_error(
                503,
                "serviceNotAvailable",
                "Service is temporarily unavailable. Please retry.",
                &ids,
            )
            .with_header("Retry-After", "1");
            return Ok(to_response(reply, &ids, false));
        }
        Injected::Throttled(secs, header) => {
            st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
            let mut reply = super::graph::throttled_reply(
                &st,
                secs,
                "ResourceUnitLimitExceeded",
                "ReadWrite",
                &ids,
            );
            if let Some(value) = header {
                reply
                    .headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("retry-after"));
                reply = reply.with_header("Retry-After", value);
            }
            return Ok(to_response(reply, &ids, false));
        }
        Injected::Error(status, code, message) => {
            st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
            let reply = graph_error(status, &code, &message, &ids);
            return Ok(to_response(reply, &ids, false));
        }
        _ => {}
    }

    let st2 = st.clone();
    let r2 = r.clone();
    let ids2 = ids.clone();
    // Handlers are synchronous and may take a moment on big tenants: keep them off the reactor.
    let (reply, items) = tokio::task::spawn_blocking(move || dispatch(&st2, &r2, &ids2))
        .await
        .unwrap_or_else(|_| {
            (
                graph_error(
                    500,
                    "generalException",
                    "An internal server error occurred.",
                    &ids,
                ),
                0,
            )
        });
    if per_item_us > 0 && items > 0 {
        tokio::time::sleep(Duration::from_micros(per_item_us * items as u64)).await;
    }
    if let Injected::StuckAfterEffect(secs) = fault {
        st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {},
            _ = st.shutdown.cancelled() => {},
        }
    }
    let truncate = matches!(fault, Injected::Truncate);
    if truncate {
        st.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
    }
    Ok(to_response(reply, &ids, truncate))
}

fn to_response(reply: Reply, ids: &RequestIds, truncate: bool) -> Response<OutBody> {
    let (bytes, ctype): (Bytes, Option<&str>) = match reply.body {
        Body::Empty => (Bytes::new(), None),
        Body::Json(v) => (
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            Some(GRAPH_JSON),
        ),
        Body::Raw(b, c) => (b, Some(c)),
    };
    let mut builder = Response::builder().status(reply.status);
    if let Some(c) = ctype {
        builder = builder.header("content-type", c);
    }
    builder = builder
        .header("request-id", &ids.request_id)
        .header("client-request-id", &ids.client_request_id)
        .header("x-ms-ags-diagnostic", r#"{"ServerInfo":{"DataCenter":"Sim","Slice":"E","Ring":"5","ScaleUnit":"000","RoleInstance":"SIM01"}}"#);
    for (k, v) in &reply.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if truncate && bytes.len() > 1 {
        let len = bytes.len();
        builder = builder.header("content-length", len.to_string());
        let half = bytes.slice(0..len / 2);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "simulated truncated body",
            )),
        ];
        StreamBody::new(futures::stream::iter(frames)).boxed()
    } else {
        full(bytes)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::from_static(b"bad header"))))
}

/// Route one request (also used for `$batch` items). Returns the reply and how
/// many items it carried (for per-item latency).
pub fn dispatch(st: &State, r: &Req, ids: &RequestIds) -> (Reply, usize) {
    let segs: Vec<&str> = r
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["_sim", rest @ ..] => (super::control::handle(st, r, rest), 0),
        [_tenant, "oauth2", "v2.0", "token"] => (super::auth::token(st, r, ids), 0),
        [tenant, "v2.0", ".well-known", "openid-configuration"] => {
            (super::auth::openid(st, tenant), 0)
        }
        ["msi", "token"] => (super::auth::managed_identity(st, r), 0),
        [_tenant, "discovery", "v2.0", "keys"] => (super::auth::jwks(st), 0),
        ["common", "userrealm"] | ["common", "userrealm", _] => (super::graph::userrealm(st, r), 0),
        ["secrets", rest @ ..] => (super::auth::keyvault(st, r, rest), 0),
        ["_download", token] => (super::report::download(st, r, token), 0),
        ["adminapi", "beta", _tenant, "InvokeCommand"] => (super::graph::exchange(st, r, ids), 0),
        [version @ ("v1.0" | "beta"), rest @ ..] => super::graph::route(st, r, ids, version, rest),
        _ => (
            graph_error(
                400,
                "BadRequest",
                &format!("Invalid version: {}", segs.first().copied().unwrap_or("")),
                ids,
            ),
            0,
        ),
    }
}

/// Pretty JSON helper for the control API.
pub fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
