//! The custom-handler HTTP server: readiness, the non-HTTP trigger
//! dispatcher, forwarded HTTP routes under `/api/...`, and the error model.
//!
//! Error model (FACTS: a non-2xx answer fails the invocation, the host
//! retries it and after `maxDequeueCount` moves a queue message to
//! `<queue>-poison`):
//! - [`FunctionError::Transient`] → 500: the host retries.
//! - [`FunctionError::Permanent`] → recorded through the
//!   [`FailureRecorder`] (the audit log), then 200 so it is never retried
//!   forever. If the record cannot be written the answer is 500: losing the
//!   record is worse than a retry.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use super::envelope::{
    EnvelopeError, InvocationRequest, InvocationResponse, QueueMetadata, QueueTrigger, TimerInfo,
};
use super::logs;

/// Header the host puts on every invocation.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// Cap on an envelope body. Queue messages are at most 64 KiB; timer
/// payloads are tiny. Anything larger is not from the host.
const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One invocation of a non-HTTP function.
#[derive(Debug, Clone)]
pub struct Invocation<T> {
    pub invocation_id: String,
    pub function: &'static str,
    pub trigger: T,
    pub metadata: Map<String, Value>,
}

/// What a function hands back on success.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub outputs: Map<String, Value>,
    pub return_value: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// Worth retrying: Graph or storage unavailable, throttled past the
    /// budget, a lease held by someone else.
    #[error("transient failure: {0:#}")]
    Transient(#[source] anyhow::Error),
    /// Retrying cannot help: a malformed message, an impossible request.
    /// `code` is a stable machine-readable token; `message` must hold no
    /// personal data (it goes to the audit log).
    #[error("permanent failure {code}: {message}")]
    Permanent { code: String, message: String },
}

impl FunctionError {
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A permanent failure to be recorded before the host is told "done".
#[derive(Debug, Clone)]
pub struct PermanentFailure {
    pub function: &'static str,
    pub invocation_id: String,
    pub code: String,
    pub message: String,
    /// Queue message id, when the trigger was a queue.
    pub message_id: Option<String>,
    pub dequeue_count: Option<u32>,
}

pub type FailureRecorder =
    Arc<dyn Fn(PermanentFailure) -> BoxFuture<anyhow::Result<()>> + Send + Sync>;

type Handler<T> =
    Arc<dyn Fn(Invocation<T>) -> BoxFuture<Result<Outcome, FunctionError>> + Send + Sync>;

#[derive(Clone)]
enum NonHttp {
    Timer {
        binding: &'static str,
        handler: Handler<TimerInfo>,
    },
    Queue {
        binding: &'static str,
        handler: Handler<QueueTrigger>,
    },
}

/// The trigger kind of a registered function, for the `functions/` folder
/// consistency check and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    Timer {
        binding: &'static str,
    },
    Queue {
        binding: &'static str,
    },
    /// Forwarded HTTP: `route` as written in function.json (without `/api`).
    Http {
        route: &'static str,
        methods: Vec<Method>,
    },
}

/// The set of functions this handler serves.
#[derive(Clone, Default)]
pub struct Functions {
    non_http: BTreeMap<&'static str, NonHttp>,
    catalog: BTreeMap<&'static str, TriggerKind>,
    http: Router,
    recorder: Option<FailureRecorder>,
}

impl Functions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a timer-triggered function `name` whose binding in
    /// function.json is `binding`.
    pub fn timer<F, Fut>(mut self, name: &'static str, binding: &'static str, f: F) -> Self
    where
        F: Fn(Invocation<TimerInfo>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, FunctionError>> + Send + 'static,
    {
        let handler: Handler<TimerInfo> = Arc::new(move |inv| Box::pin(f(inv)));
        self.non_http
            .insert(name, NonHttp::Timer { binding, handler });
        self.catalog.insert(name, TriggerKind::Timer { binding });
        self
    }

    /// Registers a queue-triggered function.
    pub fn queue<F, Fut>(mut self, name: &'static str, binding: &'static str, f: F) -> Self
    where
        F: Fn(Invocation<QueueTrigger>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, FunctionError>> + Send + 'static,
    {
        let handler: Handler<QueueTrigger> = Arc::new(move |inv| Box::pin(f(inv)));
        self.non_http
            .insert(name, NonHttp::Queue { binding, handler });
        self.catalog.insert(name, TriggerKind::Queue { binding });
        self
    }

    /// Registers a forwarded HTTP function. `route` is the function.json
    /// route (`gdpr/requests/{id}`); the host forwards the original path,
    /// which includes `/api`.
    pub fn http(
        mut self,
        name: &'static str,
        route: &'static str,
        methods: &[Method],
        handler: MethodRouter,
    ) -> Self {
        self.http = self.http.route(&format!("/api/{route}"), handler);
        self.catalog.insert(
            name,
            TriggerKind::Http {
                route,
                methods: methods.to_vec(),
            },
        );
        self
    }

    /// Where permanent failures are recorded (the audit log).
    pub fn on_permanent_failure(mut self, recorder: FailureRecorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Every function served, with its trigger.
    pub fn catalog(&self) -> &BTreeMap<&'static str, TriggerKind> {
        &self.catalog
    }

    /// The axum application: `GET /`, `POST /{FunctionName}`, `/api/...`.
    pub fn into_router(self) -> Router {
        let http = self.http.clone();
        let state = Arc::new(self);
        Router::new()
            .route("/", get(ready))
            .route("/{function}", post(dispatch))
            .with_state(state)
            .merge(http)
            .layer(middleware::from_fn(invocation_span))
    }
}

async fn ready() -> &'static str {
    "dormant ready"
}

/// Opens the span that carries the invocation id into every log line.
async fn invocation_span(req: Request, next: Next) -> Response {
    let invocation_id = req
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match invocation_id {
        Some(id) => {
            let span = tracing::info_span!("invocation", invocation_id = %id);
            next.run(req).instrument(span).await
        }
        None => next.run(req).await,
    }
}

async fn dispatch(
    State(functions): State<Arc<Functions>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((&name, registered)) = functions.non_http.get_key_value(function.as_str()) else {
        tracing::warn!(function = %function, "invocation for a function this handler does not serve");
        return (
            StatusCode::NOT_FOUND,
            format!("no non-HTTP function named {function:?}"),
        )
            .into_response();
    };
    if body.len() > MAX_ENVELOPE_BYTES {
        return (StatusCode::PAYLOAD_TOO_LARGE, "envelope too large").into_response();
    }
    let request: InvocationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        // Not the host's shape at all: nothing to record, nothing to retry
        // usefully. The host never sends this; a stray caller gets a 400.
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("not an invocation: {e}")).into_response();
        }
    };
    let invocation_id = headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    let recorder = functions.recorder.clone();
    let ((status, response), logs) = logs::capture(run_function(
        name,
        registered.clone(),
        request,
        invocation_id,
        recorder,
    ))
    .await;
    let mut response = response;
    response.logs = logs;
    (status, axum::Json(response)).into_response()
}

async fn run_function(
    name: &'static str,
    registered: NonHttp,
    request: InvocationRequest,
    invocation_id: String,
    recorder: Option<FailureRecorder>,
) -> (StatusCode, InvocationResponse) {
    let metadata = request.metadata.clone();
    let (result, message_id, dequeue_count) = match registered {
        NonHttp::Timer { binding, handler } => {
            let result = match TimerInfo::from_request(&request, binding) {
                Ok(trigger) => {
                    handler(Invocation {
                        invocation_id: invocation_id.clone(),
                        function: name,
                        trigger,
                        metadata,
                    })
                    .await
                }
                Err(e) => Err(envelope_failure(e)),
            };
            (result, None, None)
        }
        NonHttp::Queue { binding, handler } => {
            let meta = QueueMetadata::from_map(&request.metadata);
            let (id, count) = (meta.id.clone(), meta.dequeue_count);
            tracing::info!(function = name, message_id = ?id, dequeue_count = count, "queue message received");
            let result = match QueueTrigger::from_request(&request, binding) {
                Ok(trigger) => {
                    handler(Invocation {
                        invocation_id: invocation_id.clone(),
                        function: name,
                        trigger,
                        metadata,
                    })
                    .await
                }
                Err(e) => Err(envelope_failure(e)),
            };
            (result, id, Some(count))
        }
    };

    match result {
        Ok(outcome) => (
            StatusCode::OK,
            InvocationResponse {
                outputs: outcome.outputs,
                logs: Vec::new(),
                return_value: outcome.return_value,
            },
        ),
        Err(FunctionError::Transient(e)) => {
            tracing::warn!(function = name, error = %format!("{e:#}"), "transient failure; the host will retry");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                InvocationResponse::default(),
            )
        }
        Err(FunctionError::Permanent { code, message }) => {
            let failure = PermanentFailure {
                function: name,
                invocation_id,
                code,
                message,
                message_id,
                dequeue_count,
            };
            tracing::error!(function = name, code = %failure.code, reason = %failure.message, "permanent failure; recorded, not retried");
            let recorded = match recorder {
                Some(record) => record(failure).await,
                None => Err(anyhow::anyhow!("no failure recorder is configured")),
            };
            match recorded {
                Ok(()) => (StatusCode::OK, InvocationResponse::default()),
                Err(e) => {
                    tracing::error!(function = name, error = %format!("{e:#}"), "could not record a permanent failure; answering 500 so the host retries");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        InvocationResponse::default(),
                    )
                }
            }
        }
    }
}

fn envelope_failure(e: EnvelopeError) -> FunctionError {
    FunctionError::permanent("malformed-envelope", e.to_string())
}

/// The bound listener, before any slow set-up (FACTS: bind 127.0.0.1 first,
/// the host polls `GET /` for about 30 s).
pub struct Application {
    listener: TcpListener,
    port: u16,
}

impl Application {
    /// Binds `127.0.0.1:port` (0 = any free port). The host always calls
    /// 127.0.0.1, never another interface.
    pub async fn bind(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let port = listener.local_addr()?.port();
        Ok(Self { listener, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves; in-flight requests finish first.
    pub async fn serve(
        self,
        functions: Functions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, functions.into_router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Resolves on SIGTERM (the host recycling the worker) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
