//! Microsoft Graph: auth, paging, `$batch`, pacing, typed models, reports.
//!
//! One [`GraphClient`] per tenant. Under every call: one `reqwest::Client`
//! (also the Azure SDK's transport), a token from `azure_identity`, the shared
//! [`Pacer`] (documented budgets, `Retry-After`, bounded jittered retries),
//! and typed [`GraphError`]s.
//!
//! ```no_run
//! # async fn scan() -> Result<(), dormant::graph::GraphError> {
//! use dormant::graph::*;
//! use futures::TryStreamExt;
//!
//! let mut settings = GraphSettings::new("contoso.onmicrosoft.com");
//! settings.credential = CredentialKind::ManagedIdentity;
//! let graph = GraphClient::new(settings)?;
//!
//! // A resumable scan: checkpoint `page.next_link`, resume with `pages_from`.
//! let query = UserQuery {
//!     select: SCAN_SELECT.iter().map(|s| s.to_string()).collect(),
//!     top: Some(120), // pages hold at most 120 users with signInActivity
//!     ..Default::default()
//! };
//! let listing = graph.users_listing(&query);
//! let mut pages = std::pin::pin!(graph.pages::<User>(listing.clone()));
//! while let Some(page) = pages.try_next().await? {
//!     // … decide, then save `listing` + `page.next_link` as the checkpoint …
//! }
//!
//! // Usage report with names revealed, restored on every path.
//! let rows: Vec<ActiveUserDetail> = graph
//!     .with_revealed_names(|g| async move {
//!         g.office365_active_user_detail(ReportPeriod::D180).await?.try_collect().await
//!     })
//!     .await?;
//! let stats = graph.stats(); // summary.json: graphRequests, throttled
//! # let _ = (rows, stats);
//! # Ok(()) }
//! ```
//!
//! Errors: [`GraphError::ExpiredSkipToken`] means "restart this partition from
//! its first page"; [`GraphError::is_transient`] means "retry later" (the
//! client already retried within `GraphSettings::max_retry_time`).

pub mod auth;
pub mod batch;
pub mod client;
pub mod error;
pub mod exchange;
pub mod guests;
pub mod http;
pub mod models;
pub mod ops;
pub mod pacer;
pub mod reports;
pub mod settings;
pub mod watch;

pub use auth::{CertificateAssertion, EntraTokenProvider, StaticToken, TokenProvider};
pub use batch::{BatchItem, BatchItemResponse, MAX_BATCH};
pub use client::{GraphClient, Listing, Page, odata_quote};
pub use error::{GraphError, GraphErrorBody, GraphErrorDetail};
pub use http::build_http_client;
pub use models::*;
pub use ops::{SCAN_SELECT, UserQuery};
pub use pacer::{Budget, Pacer, PacerConfig, PacerStats, RequestClass};
pub use reports::{ConcealedNamesGuard, ReportPeriod};
pub use settings::{CredentialKind, GraphSettings, TenantKind, TenantSize};
pub use watch::ENABLE_ACCOUNT;
