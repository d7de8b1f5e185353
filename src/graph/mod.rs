//! Microsoft Graph: auth, paging, `$batch`, pacing, typed models, reports.
//!
//! One [`GraphClient`] per tenant. Under every call: one `reqwest::Client`
//! (also the Azure SDK's transport), a token from `azure_identity`, the shared
//! [`Pacer`] (documented budgets, `Retry-After`, bounded jittered retries),
//! and typed [`GraphError`]s.

pub mod auth;
pub mod batch;
pub mod client;
pub mod error;
pub mod http;
pub mod models;
pub mod ops;
pub mod pacer;
pub mod reports;
pub mod settings;

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
