//! Cases and steps: plan, re-verify, act, record.
//!
//! - [`case`]: the case state and where it lives;
//! - [`advance`]: what each nightly scan does to cases (open, cancel,
//!   enqueue due steps, close);
//! - [`worker`]: one queued step, exactly once in effect; restore;
//! - [`recheck`]: does a case still hold, right before a step;
//! - [`notify`]: mail and webhook notifications;
//! - [`attest`]: the owners' "keep" / "let go" answers through signed links.

pub mod advance;
pub mod attest;
pub mod case;
pub mod ending;
pub mod message;
pub mod notify;
pub mod recheck;
pub mod reenable;
pub mod undo;
pub mod worker;

pub use advance::Candidate;
pub use case::{Case, CaseStatus, CaseStore};
pub use message::{ActionKind, ActionMessage, MessageError};
pub use recheck::subject_of;
pub use worker::StepReport;

use crate::clock::Clock;
use crate::config::Config;
use crate::graph::exchange::ExchangeAdmin;
use crate::graph::{GraphClient, GraphError};
use crate::store::audit::AuditLog;
use crate::store::{Store, StoreError};

/// What the lifecycle works with, borrowed from the caller (the function
/// context, the CLI, a test).
#[derive(Clone, Copy)]
pub struct Lifecycle<'a> {
    pub graph: &'a GraphClient,
    pub store: &'a Store,
    pub audit: &'a AuditLog,
    pub config: &'a Config,
    pub clock: &'a Clock,
    /// `None` when `DORMANT_EXCHANGE_URL` is not set: mailbox conversions
    /// wait for a person.
    pub exchange: Option<&'a ExchangeAdmin>,
    /// For the notification webhook.
    pub http: &'a reqwest::Client,
    /// Signs the "keep" / "let go" links of notifications; `None` when no
    /// key is configured (notifications go out without links).
    pub attest: Option<&'a attest::Attestor>,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("Graph: {0}")]
    Graph(#[from] GraphError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Retrying the same message cannot help; recorded, never retried.
    /// The message holds no personal data.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// A dependency (the webhook) is down; worth a retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("the case kept changing under this worker ({0} attempts)")]
    Contention(u32),
    /// Another delivery is acting on the step (it holds the step's lease):
    /// try again after `retry_after`.
    #[error("step `{step}` is being run by another worker")]
    InProgress {
        step: &'static str,
        retry_after: chrono::Duration,
    },
}

impl From<recheck::RecheckError> for LifecycleError {
    fn from(e: recheck::RecheckError) -> Self {
        match e {
            recheck::RecheckError::Graph(e) => Self::Graph(e),
            recheck::RecheckError::Store(e) => Self::Store(e),
        }
    }
}

/// Graph's status and code, never its message: Graph's messages can quote a
/// UPN, and this text goes to the audit log.
pub fn graph_code(e: &GraphError) -> String {
    match e {
        GraphError::Permanent { status, code, .. } => format!("graph {status} {code}"),
        GraphError::NotFound => "graph 404".into(),
        GraphError::Auth(_) => "graph authentication failed".into(),
        other => other.to_string(),
    }
}

impl LifecycleError {
    /// The text for an audit line: free of personal data.
    pub fn audit_text(&self) -> String {
        match self {
            Self::Graph(e) => graph_code(e),
            other => other.to_string(),
        }
    }

    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Graph(e) => e.is_transient(),
            Self::Store(e) => e.is_transient() || e.is_conflict(),
            Self::Refused { .. } => false,
            Self::Unavailable(_) | Self::Contention(_) | Self::InProgress { .. } => true,
        }
    }
}
