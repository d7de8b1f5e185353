//! The functions this handler serves, one file per function once they
//! exist. Each is thin: it turns a trigger into a call on the domain.
//!
//! `catalog()` is the single list the router serves; a test checks it
//! against the `functions/*/function.json` folders the host reads.

pub mod admin;
pub mod attest;
pub mod gdpr;
pub mod nightly_scan;
pub mod release_run;
pub mod restore_user;
pub mod run_status;
pub mod scan_continue;
pub mod start_scan;
pub mod user_actions;

use std::sync::Arc;

use anyhow::Context as _;
use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};

use crate::clock::Clock;
use crate::config::Config;
use crate::gdpr::export::ExtensionCache;
use crate::gdpr::requests::{Hints, Requests};
use crate::gdpr::token::TokenVerifier;
use crate::graph::exchange::ExchangeAdmin;
use crate::graph::{
    EntraTokenProvider, GraphClient, GraphError, GraphSettings, Pacer, PacerConfig,
    build_http_client,
};
use crate::host::{FailureRecorder, FunctionError, Functions, PermanentFailure};
use crate::lifecycle::Lifecycle;
use crate::lifecycle::attest::{AttestKey, Attestor};
use crate::scan::run::{ScanError, ScanRuntime, Scanner};
use crate::store::audit::{AuditLog, AuditRecord, Outcome};
use crate::store::{StorageConfig, Store};

/// The Functions host's setting for a user-assigned identity on an
/// identity-based storage connection.
const STORAGE_CLIENT_ID_SETTING: &str = "AzureWebJobsStorage__clientId";

/// What every function needs, built once per process. Building does no
/// network I/O, so `dormant serve` answers the host's readiness probe at once.
pub struct AppContext {
    pub config: Config,
    pub store: Store,
    pub audit: AuditLog,
    /// The one outbound HTTPS client (trusts `DORMANT_CA_FILE`): Graph,
    /// tokens, and the GDPR issuer's metadata and keys.
    pub http: reqwest::Client,
    /// Verifies user tokens on the GDPR endpoints; `None` when
    /// `DORMANT_GDPR_*` is not configured (the endpoints answer 503).
    pub gdpr: Option<Arc<TokenVerifier>>,
    /// User extension attribute names for exports.
    pub extensions: ExtensionCache,
    /// GDPR subject states this process last saw (a write's first guess).
    pub gdpr_hints: Hints,
    /// dormant's "now" (the system clock outside tests).
    pub clock: Clock,
    /// What this instance's scan invocations share: partition slots, the
    /// time budget, the Graph traffic ledger.
    pub scan: ScanRuntime,
    storage_ready: tokio::sync::OnceCell<()>,
    graph: tokio::sync::OnceCell<GraphClient>,
    exchange: tokio::sync::OnceCell<Option<ExchangeAdmin>>,
    attest: tokio::sync::OnceCell<Option<Attestor>>,
}

impl AppContext {
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let credential: Option<Arc<dyn TokenCredential>> = match &config.storage {
            StorageConfig::ManagedIdentity { .. } => {
                let user_assigned_id = std::env::var(STORAGE_CLIENT_ID_SETTING)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(UserAssignedId::ClientId);
                let credential =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        user_assigned_id,
                        ..Default::default()
                    }))
                    .context("creating the managed identity credential for storage")?;
                Some(credential)
            }
            _ => None,
        };
        let store = Store::connect(&config.storage, credential).context("connecting storage")?;
        let audit = AuditLog::new(store.clone());
        let http = build_http_client(config.ca_file.as_deref())
            .context("building the outbound HTTPS client")?;
        let gdpr = config
            .gdpr
            .as_ref()
            .map(|g| Arc::new(TokenVerifier::new(g, http.clone())));
        if config.public_url.is_none() {
            tracing::warn!(
                "DORMANT_PUBLIC_URL is not set: notifications go out without keep / let-go links"
            );
        } else if config.attest_key.is_none() && config.attest_key_name.is_none() {
            tracing::warn!(
                "no attestation key (DORMANT_ATTEST_KEY_NAME or DORMANT_ATTEST_KEY): notifications go out without keep / let-go links"
            );
        }
        Ok(Self {
            config,
            store,
            audit,
            http,
            gdpr,
            extensions: ExtensionCache::default(),
            gdpr_hints: Hints::default(),
            clock: Clock::system(),
            scan: ScanRuntime::default(),
            storage_ready: tokio::sync::OnceCell::new(),
            graph: tokio::sync::OnceCell::new(),
            exchange: tokio::sync::OnceCell::new(),
            attest: tokio::sync::OnceCell::new(),
        })
    }

    /// Signs and checks "keep" links: the key from `DORMANT_ATTEST_KEY`,
    /// else from Key Vault (`DORMANT_ATTEST_KEY_NAME`), read on first use
    /// and kept. `None` when no key is configured. A vault that does not
    /// answer is an error (retried by the next caller), never "no key".
    pub async fn attestor(&self) -> Result<Option<&Attestor>, GraphError> {
        self.attest
            .get_or_try_init(|| async {
                let c = &self.config;
                let secret = match (&c.attest_key, &c.attest_key_name) {
                    (Some(key), _) => key.clone(),
                    (None, Some(name)) => {
                        let tokens = EntraTokenProvider::new(
                            GraphSettings::from_config(c),
                            self.http.clone(),
                            None,
                        )?;
                        let secret = tokens.read_secret(name).await?;
                        tracing::info!(secret_name = %name, "read the attestation key from Key Vault");
                        secret
                    }
                    (None, None) => return Ok(None),
                };
                let Some(key) = AttestKey::new(secret) else {
                    tracing::warn!(
                        "the attestation key is shorter than 32 characters: notifications go out without links and /api/attest answers 503"
                    );
                    return Ok(None);
                };
                Ok(Some(Attestor {
                    key,
                    public_url: c.public_url.clone(),
                }))
            })
            .await
            .map(Option::as_ref)
    }

    /// The GDPR request store over `store`, with this process's hints.
    pub fn gdpr_requests(&self, store: &Store) -> Requests {
        Requests::with_hints(store.clone(), self.gdpr_hints.clone())
    }

    /// Replaces the token verifier (tests: a shorter refresh interval).
    pub fn with_token_verifier(mut self, verifier: TokenVerifier) -> Self {
        self.gdpr = Some(Arc::new(verifier));
        self
    }

    /// Replaces the scan runtime (tests: a short time budget, small pages).
    pub fn with_scan_runtime(mut self, scan: ScanRuntime) -> Self {
        self.scan = scan;
        self
    }

    /// The tenant's scanner over the shared Graph client and store. Either
    /// failing is worth a retry (an operator can fix a credential setting
    /// within the host's retries).
    pub async fn scanner(&self) -> Result<Scanner, FunctionError> {
        let store = self
            .storage()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?
            .clone();
        let graph = self
            .graph()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?
            .clone();
        let mut scanner = Scanner::new(graph, store, Arc::new(self.config.clone()));
        scanner.clock = self.clock.clone();
        scanner.exchange = self
            .exchange()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?
            .cloned();
        Ok(scanner)
    }

    /// Uses `graph` instead of building one from configuration (tests,
    /// and the CLI's demo against the simulator).
    pub fn with_graph(self, graph: GraphClient) -> Self {
        // A fresh cell cannot be full: `set` only fails when it is.
        let _ = self.graph.set(graph);
        self
    }

    /// The Graph client, built on first use over the shared HTTPS client.
    /// Building does no network I/O, but it can refuse a credential
    /// setting; doing it lazily keeps `dormant serve` ready whatever Graph
    /// needs, and only the functions that call Graph report the problem.
    pub async fn graph(&self) -> Result<&GraphClient, GraphError> {
        self.graph
            .get_or_try_init(|| async {
                let settings = GraphSettings::from_config(&self.config);
                let tokens = Arc::new(EntraTokenProvider::new(
                    settings.clone(),
                    self.http.clone(),
                    None,
                )?);
                let pacer = Arc::new(Pacer::new(PacerConfig::from_settings(&settings)));
                Ok(GraphClient::with_parts(
                    &settings,
                    self.http.clone(),
                    tokens,
                    pacer,
                ))
            })
            .await
    }

    /// Runs on `clock` instead of the system clock (tests walking a
    /// simulated tenant through weeks).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Exchange Online's admin API, when `DORMANT_EXCHANGE_URL` is set.
    pub async fn exchange(&self) -> Result<Option<&ExchangeAdmin>, GraphError> {
        self.exchange
            .get_or_try_init(|| async {
                match &self.config.exchange_url {
                    Some(root) => Ok(Some(ExchangeAdmin::new(
                        &GraphSettings::from_config(&self.config),
                        root,
                        self.http.clone(),
                    )?)),
                    None => Ok(None),
                }
            })
            .await
            .map(Option::as_ref)
    }

    /// Everything a lifecycle step needs, set up on first use.
    pub async fn lifecycle(&self) -> Result<Lifecycle<'_>, FunctionError> {
        let store = self
            .storage()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?;
        // A credential setting Graph refuses will not fix itself by
        // retrying, but an operator can fix it within the retries.
        let graph = self
            .graph()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?;
        let exchange = self
            .exchange()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?;
        let attest = self
            .attestor()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?;
        Ok(Lifecycle {
            graph,
            store,
            audit: &self.audit,
            config: &self.config,
            clock: &self.clock,
            exchange,
            http: &self.http,
            attest,
        })
    }

    /// Creates dormant's containers and queues once per process, on first
    /// use rather than at start (start must not wait on the network). A
    /// failure is retried by the next caller.
    pub async fn storage(&self) -> Result<&Store, crate::store::StoreError> {
        self.storage_ready
            .get_or_try_init(|| self.store.ensure_defaults())
            .await?;
        Ok(&self.store)
    }

    /// Records a permanent failure in the audit log before the host is told
    /// the invocation is done.
    pub fn failure_recorder(&self) -> FailureRecorder {
        let audit = self.audit.clone();
        Arc::new(move |failure: PermanentFailure| {
            let audit = audit.clone();
            Box::pin(async move {
                audit
                    .record(&failure_record(&failure))
                    .await
                    .context("writing the audit record of a permanent failure")
            })
        })
    }
}

/// The audit line of a refused invocation: codes and opaque ids only.
pub fn failure_record(failure: &PermanentFailure) -> AuditRecord {
    let mut record = AuditRecord::new(failure.code.clone(), Outcome::Failed);
    record.error = Some(failure.message.clone());
    record.detail = Some(match (&failure.message_id, failure.dequeue_count) {
        (Some(id), Some(n)) => format!("{} message {id} delivery {n}", failure.function),
        _ => failure.function.to_owned(),
    });
    record
}

/// Every function dormant serves, registered on the router.
pub fn catalog(ctx: Arc<AppContext>) -> Functions {
    let recorder = ctx.failure_recorder();
    let actions = ctx.clone();
    let (nightly, continues) = (ctx.clone(), ctx.clone());
    let functions = Functions::new()
        .queue(user_actions::NAME, user_actions::BINDING, move |inv| {
            user_actions::run(actions.clone(), inv)
        })
        .timer(nightly_scan::NAME, nightly_scan::BINDING, move |inv| {
            nightly_scan::run(nightly.clone(), inv)
        })
        .queue(scan_continue::NAME, scan_continue::BINDING, move |inv| {
            scan_continue::run(continues.clone(), inv)
        });
    let functions = start_scan::register(functions, ctx.clone());
    let functions = run_status::register(functions, ctx.clone());
    let functions = restore_user::register(functions, ctx.clone());
    let functions = release_run::register(functions, ctx.clone());
    let functions = attest::register(functions, ctx.clone());
    gdpr::register(functions, ctx).on_permanent_failure(recorder)
}

/// A scan failure as the host should see it: retry what can heal.
pub fn scan_failure(e: ScanError) -> FunctionError {
    match e {
        e if e.is_transient() => FunctionError::Transient(e.into()),
        ScanError::UnknownRun(_) => FunctionError::permanent("unknown-run", e.to_string()),
        e => FunctionError::permanent("scan-failed", e.to_string()),
    }
}
