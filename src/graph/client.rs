//! The Graph client: one request loop (pacing, token, retries, classification)
//! under every call, and paging as a `Stream`.

use super::auth::{EntraTokenProvider, TokenProvider};
use super::error::{GraphError, Verdict, classify, decode_failure, parse_retry_after};
use super::http::build_http_client;
use super::pacer::{Pacer, PacerConfig, PacerStats, RequestClass};
use super::settings::{GraphSettings, TenantKind};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::Method;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use url::Url;

/// Most attempts of one call, whatever the time budget says.
const MAX_ATTEMPTS: u32 = 30;
/// Shortest wait after a 429, whatever `Retry-After` says.
const THROTTLE_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

/// Microsoft Graph for one tenant. Cheap to clone; clones share the HTTP
/// client, the token provider and the pacer.
#[derive(Clone, Debug)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `{graph root}/v1.0/`.
    version_root: Url,
    authority_host: Url,
    tenant_kind: TenantKind,
    tokens: Arc<dyn TokenProvider>,
    pacer: Arc<Pacer>,
    request_timeout: Duration,
    pub(crate) realms: super::guests::Realms,
    watch: super::watch::Watch,
}

/// One HTTP call as the request loop sees it.
#[derive(Debug, Clone)]
pub(crate) struct GraphRequest {
    pub method: Method,
    pub url: Url,
    pub body: Option<Bytes>,
    pub class: RequestClass,
    /// Path with ids replaced by placeholders, for logs (`/users/{id}`): no PII.
    pub template: Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
    pub authenticated: bool,
    /// Hand 3xx back to the caller instead of failing (the usage report).
    pub accept_redirect: bool,
    /// A 2xx body must be complete JSON (else it is garbage or truncated).
    pub expect_json: bool,
}

impl GraphRequest {
    pub fn new(
        method: Method,
        url: Url,
        class: RequestClass,
        template: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            method,
            url,
            body: None,
            class,
            template: template.into(),
            headers: Vec::new(),
            authenticated: true,
            accept_redirect: false,
            expect_json: true,
        }
    }

    pub fn json<B: Serialize>(mut self, body: &B) -> Result<Self, GraphError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            GraphError::permanent(0, "SerializationFailed", format!("request body: {e}"))
        })?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }
}

/// A successful answer, body read in full.
#[derive(Debug, Clone)]
pub struct GraphResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl GraphResponse {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GraphError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            GraphError::permanent(
                self.status,
                "UnexpectedResponse",
                format!("the answer is {}", decode_failure(&e)),
            )
        })
    }
}

/// A listing to page through: the first URL and how its pages are paced.
/// Serializable: save it with a page's `next_link` to resume a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    /// Absolute URL of the first page.
    pub first: String,
    pub class: RequestClass,
    /// Sends `ConsistencyLevel: eventual` (needed by `$count` and advanced filters).
    #[serde(default)]
    pub eventual_consistency: bool,
    /// Path template for logs (`/users`), never ids.
    pub template: String,
}

/// One page of a collection.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// The absolute URL of the next page, to be followed verbatim (Graph:
    /// "the entire URL … should be used as-is"; never rebuilt from parts).
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    #[serde(rename = "@odata.count", default)]
    pub count: Option<u64>,
}

impl GraphClient {
    /// The production client: shared HTTP stack (with `DORMANT_CA_FILE`),
    /// `azure_identity` credential, one pacer for this tenant.
    pub fn new(settings: GraphSettings) -> Result<Self, GraphError> {
        let http = build_http_client(settings.ca_file.as_deref())?;
        let tokens = Arc::new(EntraTokenProvider::new(
            settings.clone(),
            http.clone(),
            None,
        )?);
        let pacer = Arc::new(Pacer::new(PacerConfig::from_settings(&settings)));
        Ok(Self::with_parts(&settings, http, tokens, pacer))
    }

    /// Assembles a client from parts (tests inject a token provider; several
    /// clients of one tenant can share a pacer).
    pub fn with_parts(
        settings: &GraphSettings,
        http: reqwest::Client,
        tokens: Arc<dyn TokenProvider>,
        pacer: Arc<Pacer>,
    ) -> Self {
        let mut version_root = settings.graph_url.clone();
        {
            let base = version_root.path().trim_end_matches('/').to_string();
            version_root.set_path(&format!("{base}/v1.0/"));
        }
        Self {
            inner: Arc::new(Inner {
                http,
                version_root,
                authority_host: settings.authority_host.clone(),
                tenant_kind: settings.tenant_kind,
                tokens,
                pacer,
                request_timeout: settings.request_timeout,
                realms: super::guests::Realms::default(),
                watch: super::watch::Watch::default(),
            }),
        }
    }

    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.inner.pacer
    }

    /// `graphRequests`, `throttled` and retries so far.
    pub fn stats(&self) -> PacerStats {
        self.inner.pacer.stats()
    }

    pub fn tenant_kind(&self) -> TenantKind {
        self.inner.tenant_kind
    }

    /// The shared HTTP client (same roots, same pool); hand it to other Azure
    /// SDK clients with [`http::sdk_transport`](super::http::sdk_transport).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn authority_host(&self) -> &Url {
        &self.inner.authority_host
    }

    pub(crate) fn watch(&self) -> &super::watch::Watch {
        &self.inner.watch
    }

    /// The current access token (for reading dormant's own app id from it).
    pub(crate) async fn access_token(&self) -> Result<secrecy::SecretString, GraphError> {
        self.inner.tokens.token().await
    }

    pub(crate) fn realms(&self) -> &super::guests::Realms {
        &self.inner.realms
    }

    /// `{root}/v1.0/{segments…}`, each segment percent-encoded (ids and UPNs
    /// can hold `#`, `'` or `/`).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.version_root.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        url
    }

    /// Like [`url`](Self::url) with query pairs.
    pub fn url_with_query(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.url(segments);
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// A URL relative to the version root (`/users/{id}?$select=…`), the form
    /// `$batch` items need; segments encoded as in [`url`](Self::url).
    pub fn batch_path(&self, segments: &[&str], query: &[(&str, &str)]) -> String {
        let url = self.url_with_query(segments, query);
        let root = self.inner.version_root.path().trim_end_matches('/');
        let path = url.path().strip_prefix(root).unwrap_or(url.path());
        match url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        }
    }

    /// The `$batch` endpoint.
    pub(crate) fn batch_url(&self) -> Url {
        self.url(&["$batch"])
    }

    /// A link from Graph (nextLink) must stay on the Graph host we were given:
    /// we send our bearer token to it.
    fn check_same_origin(&self, url: &Url) -> Result<(), GraphError> {
        let root = &self.inner.version_root;
        if url.scheme() == root.scheme()
            && url.host_str() == root.host_str()
            && url.port_or_known_default() == root.port_or_known_default()
        {
            Ok(())
        } else {
            Err(GraphError::permanent(
                0,
                "ForeignNextLink",
                "a paging link points outside the Graph root; refusing to send the token there",
            ))
        }
    }

    /// The request loop. Paces, authenticates, retries transient failures and
    /// 429s within the pacer's bounded time, refreshes the token once on 401.
    ///
    /// Writes are resent after a connection failure too: every dormant
    /// operation is idempotent (disable, revoke, remove a license, delete,
    /// restore, purge, reset redemption), and a resend of a delete that had
    /// landed answers 404, which callers treat as done.
    pub(crate) async fn send(&self, req: GraphRequest) -> Result<GraphResponse, GraphError> {
        let pacer = &self.inner.pacer;
        let budget = pacer.retry_budget();
        let mut refreshed = false;
        let mut attempt: u32 = 0;
        // Backoff grows with transient failures only: a 429 says exactly how
        // long to wait, and stacking backoff on it would waste the budget.
        let mut transient_failures: u32 = 0;
        loop {
            attempt += 1;
            pacer.acquire(req.class).await;
            let span = tracing::debug_span!(
                "graph.request",
                method = %req.method,
                path = %req.template,
                attempt,
                status = tracing::field::Empty,
            );
            let outcome = self.attempt(&req).instrument(span.clone()).await;
            let (error, hint) = match outcome {
                Attempt::Done(resp) => {
                    span.record("status", resp.status);
                    return Ok(resp);
                }
                Attempt::Unauthorized(e) => {
                    span.record("status", 401u16);
                    if refreshed || !req.authenticated {
                        return Err(e);
                    }
                    // Graph 401 InvalidAuthenticationToken: the cached token may
                    // have been revoked or expired early. One fresh token, then give up.
                    refreshed = true;
                    tracing::info!(parent: &span, "Graph answered 401; refreshing the token once");
                    self.inner.tokens.invalidate().await;
                    pacer.count_retry();
                    continue;
                }
                Attempt::Failed {
                    error,
                    status,
                    hint,
                } => {
                    if let Some(s) = status {
                        span.record("status", s);
                    }
                    (error, hint)
                }
            };
            match &error {
                GraphError::Throttled { retry_after } => {
                    // Graph's Retry-After is the wait; a floor keeps
                    // `Retry-After: 0` from spinning.
                    let pause = (*retry_after).max(THROTTLE_FLOOR);
                    pacer.throttled(req.class, pause);
                    tracing::warn!(parent: &span, retry_after_ms = retry_after.as_millis() as u64, "throttled by Graph");
                    if attempt >= MAX_ATTEMPTS || !budget.allows(pause) {
                        return Err(error);
                    }
                    // The paused bucket makes `acquire` wait out Retry-After;
                    // a request outside every budget waits on its own.
                    if req.class.cost(self.inner.tenant_kind).0.is_empty() {
                        tokio::time::sleep(pause).await;
                    }
                }
                GraphError::Transient(_) => {
                    transient_failures += 1;
                    let delay = hint
                        .unwrap_or_default()
                        .max(pacer.backoff(transient_failures));
                    if attempt >= MAX_ATTEMPTS || !budget.allows(delay) {
                        tracing::warn!(parent: &span, %error, "giving up after retries");
                        return Err(error);
                    }
                    tracing::info!(parent: &span, delay_ms = delay.as_millis() as u64, %error, "transient Graph failure; retrying");
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(error),
            }
            pacer.count_retry();
        }
    }

    async fn attempt(&self, req: &GraphRequest) -> Attempt {
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .timeout(self.inner.request_timeout);
        if req.authenticated {
            match self.inner.tokens.token().await {
                Ok(token) => builder = builder.bearer_auth(token.expose_secret()),
                Err(e) => {
                    return Attempt::Failed {
                        error: e,
                        status: None,
                        hint: None,
                    };
                }
            }
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = &req.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let sent = builder.send().await;
        self.inner.pacer.count_request();
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Failed {
                    error: transport_error(&e),
                    status: None,
                    hint: None,
                };
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if req.accept_redirect && (300..400).contains(&status) {
            return Attempt::Done(GraphResponse {
                status,
                headers,
                body: Bytes::new(),
            });
        }
        // A body cut short (connection reset mid-body) surfaces here.
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Failed {
                    error: GraphError::Transient(format!("reading the answer: {}", short(&e))),
                    status: Some(status),
                    hint: None,
                };
            }
        };
        match classify(status, retry_after, &body) {
            Verdict::Success => {
                // Garbage or truncated JSON on a read is retried (idempotent);
                // on a write it is reported as transient without a blind resend.
                let expects_json = req.expect_json && status != 204 && !body.is_empty();
                if expects_json && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                    let error = GraphError::Transient(format!(
                        "HTTP {status} with a body that is not complete JSON"
                    ));
                    if req.method == Method::GET {
                        return Attempt::Failed {
                            error,
                            status: Some(status),
                            hint: None,
                        };
                    }
                    return Attempt::Failed {
                        error: GraphError::Transient(format!(
                            "HTTP {status} with a body that is not JSON (write not resent)"
                        )),
                        status: Some(status),
                        hint: Some(Duration::MAX),
                    };
                }
                Attempt::Done(GraphResponse {
                    status,
                    headers,
                    body,
                })
            }
            Verdict::Unauthorized(e) => Attempt::Unauthorized(e),
            Verdict::Fail(error) => Attempt::Failed {
                error,
                status: Some(status),
                hint: retry_after,
            },
        }
    }

    /// GET a JSON object through the request loop (pacing, retries, token):
    /// the escape hatch for a read without its own method.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        class: RequestClass,
        template: &'static str,
    ) -> Result<T, GraphError> {
        self.send(GraphRequest::new(Method::GET, url, class, template))
            .await?
            .json()
    }

    /// A write with an optional JSON body through the request loop; the
    /// answer is returned raw.
    pub async fn write<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        class: RequestClass,
        template: &'static str,
    ) -> Result<GraphResponse, GraphError> {
        let mut req = GraphRequest::new(method, url, class, template);
        if let Some(b) = body {
            req = req.json(b)?;
        }
        self.send(req).await
    }

    /// One page of `listing` at `link` (the first URL or a saved nextLink).
    pub async fn page<T: DeserializeOwned>(
        &self,
        listing: &Listing,
        link: &str,
    ) -> Result<Page<T>, GraphError> {
        let url = Url::parse(link).map_err(|e| {
            GraphError::permanent(0, "InvalidNextLink", format!("not an absolute URL: {e}"))
        })?;
        self.check_same_origin(&url)?;
        let mut req = GraphRequest::new(Method::GET, url, listing.class, listing.template.clone());
        if listing.eventual_consistency {
            req.headers
                .push(("ConsistencyLevel", "eventual".to_string()));
        }
        self.send(req).await?.json()
    }

    /// Every page of `listing`, from `start` (its first URL, or a saved
    /// nextLink to resume). Ends after the first error.
    pub fn pages_from<T: DeserializeOwned + Send + 'static>(
        &self,
        listing: Listing,
        start: String,
    ) -> impl Stream<Item = Result<Page<T>, GraphError>> + Send + 'static {
        let client = self.clone();
        futures::stream::try_unfold(Some(start), move |link| {
            let client = client.clone();
            let listing = listing.clone();
            async move {
                let Some(link) = link else {
                    return Ok(None);
                };
                let page: Page<T> = client.page(&listing, &link).await?;
                let next = page.next_link.clone();
                Ok(Some((page, next)))
            }
        })
    }

    /// Every page of `listing`.
    pub fn pages<T: DeserializeOwned + Send + 'static>(
        &self,
        listing: Listing,
    ) -> impl Stream<Item = Result<Page<T>, GraphError>> + Send + 'static {
        let start = listing.first.clone();
        self.pages_from(listing, start)
    }

    /// Every item of `listing`, page after page.
    pub fn items<T: DeserializeOwned + Send + 'static>(
        &self,
        listing: Listing,
    ) -> impl Stream<Item = Result<T, GraphError>> + Send + 'static {
        self.pages::<T>(listing)
            .map_ok(|page| futures::stream::iter(page.value.into_iter().map(Ok)))
            .try_flatten()
    }

    /// Collects a whole listing (for small ones: SKUs, role assignments).
    pub(crate) async fn collect<T: DeserializeOwned + Send + 'static>(
        &self,
        listing: Listing,
    ) -> Result<Vec<T>, GraphError> {
        self.items::<T>(listing).try_collect().await
    }

    /// Builds a [`Listing`] from a first URL.
    pub fn listing(&self, first: Url, class: RequestClass, template: &str) -> Listing {
        Listing {
            first: first.to_string(),
            class,
            eventual_consistency: false,
            template: template.to_string(),
        }
    }
}

enum Attempt {
    Done(GraphResponse),
    Unauthorized(GraphError),
    Failed {
        error: GraphError,
        status: Option<u16>,
        /// Retry-After on a 5xx; `Duration::MAX` = do not resend.
        hint: Option<Duration>,
    },
}

/// A reqwest failure, without its URL (it may carry a UPN or a SAS).
fn short(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// Connection resets, timeouts and refused connections are transient.
pub(crate) fn transport_error(e: &reqwest::Error) -> GraphError {
    if e.is_builder() {
        GraphError::permanent(0, "InvalidRequest", short(e))
    } else {
        GraphError::Transient(format!("connection failure: {}", short(e)))
    }
}

/// Quotes a value for an OData string literal: `'` is doubled.
pub fn odata_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::auth::StaticToken;
    use secrecy::SecretString;

    fn client(root: &str) -> GraphClient {
        let mut s = GraphSettings::new("t");
        s.graph_url = Url::parse(root).expect("url");
        GraphClient::with_parts(
            &s,
            reqwest::Client::new(),
            Arc::new(StaticToken(SecretString::from("t".to_string()))),
            Arc::new(Pacer::new(PacerConfig::from_settings(&s))),
        )
    }

    #[test]
    fn urls_encode_segments_and_keep_the_version() {
        let c = client("https://graph.microsoft.com");
        assert_eq!(
            c.url(&["users", "a#b/c'd@contoso.com", "manager"]).as_str(),
            "https://graph.microsoft.com/v1.0/users/a%23b%2Fc'd@contoso.com/manager"
        );
        let c = client("https://127.0.0.1:8443/");
        assert_eq!(
            c.url(&["$batch"]).as_str(),
            "https://127.0.0.1:8443/v1.0/$batch"
        );
        assert_eq!(
            c.url_with_query(&["users"], &[("$top", "999"), ("$select", "id,mail")])
                .as_str(),
            "https://127.0.0.1:8443/v1.0/users?%24top=999&%24select=id%2Cmail"
        );
    }

    #[test]
    fn next_link_is_kept_verbatim_and_must_stay_on_graph() {
        let doc = include_str!("fixtures/users-page.json");
        let page: Page<serde_json::Value> = serde_json::from_str(doc).expect("page parses");
        let link = page.next_link.expect("has nextLink");
        assert!(link.starts_with("https://graph.microsoft.com/v1.0/users?"));
        assert!(link.contains("$skiptoken="));
        let c = client("https://graph.microsoft.com");
        assert!(
            c.check_same_origin(&Url::parse(&link).expect("url"))
                .is_ok()
        );
        assert!(
            c.check_same_origin(&Url::parse("https://evil.example/v1.0/users").expect("url"))
                .is_err()
        );
        assert!(
            c.check_same_origin(&Url::parse("http://graph.microsoft.com/v1.0/users").expect("url"))
                .is_err()
        );
    }

    #[test]
    fn listing_survives_a_checkpoint() {
        let c = client("https://graph.microsoft.com");
        let mut l = c.listing(
            c.url_with_query(&["users"], &[("$top", "120")]),
            RequestClass::ReadList,
            "/users",
        );
        l.eventual_consistency = true;
        let saved = serde_json::to_string(&l).expect("ser");
        assert!(saved.contains("\"class\":\"read-list\""));
        let back: Listing = serde_json::from_str(&saved).expect("de");
        assert_eq!(back, l);
    }

    #[test]
    fn odata_quotes_double_apostrophes() {
        assert_eq!(odata_quote("o'brien"), "'o''brien'");
    }
}
