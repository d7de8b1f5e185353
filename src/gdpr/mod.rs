//! GDPR requests of the data subject: erase my account, export my data.
//!
//! - [`token`]: the user's own token, verified against the issuer's JWKS.
//! - [`requests`]: request state and the per-subject rate limit in `dormant-state`.
//! - [`erase`]: the erasure job run from the actions queue.
//! - [`export`]: the export document.
//! - [`error`]: the endpoints' one error type (`IntoResponse`).
//!
//! The HTTP functions (`functions/gdpr.rs`) and the CLI (`dormant gdpr`)
//! both go through [`request_erasure`], so an operator's request leaves the
//! same state, queue message and audit trail as the user's own.

pub mod erase;
pub mod error;
pub mod export;
pub mod requests;
pub mod token;

use chrono::Utc;

use crate::ids::ObjectId;
use crate::lifecycle::{ActionKind, ActionMessage};
use crate::store::audit::{AuditLog, AuditRecord, Outcome};
use crate::store::{ACTIONS_QUEUE, SendOptions, StoreError};
use requests::{Origin, Requests, SubmitError, Submitted};

pub use error::Error;

/// Counts (for a user), creates (or finds), enqueues and records the
/// erasure of `subject`. A pending request is enqueued again: a crash
/// between the state write and the send must heal on the caller's retry,
/// and the job is idempotent. The audit record is durable before this
/// returns, so nobody is told "accepted" for an unrecorded request.
pub async fn request_erasure(
    requests: &Requests,
    audit: &AuditLog,
    tenant: &str,
    subject: &ObjectId,
    origin: Origin,
) -> Result<Submitted, SubmitError> {
    let submitted = requests.submit_erasure(subject, origin, Utc::now()).await?;
    let store = requests.store();
    let (request, outcome, detail, message) = match &submitted {
        Submitted::Pending(r) => {
            let message = ActionMessage {
                v: ActionMessage::VERSION,
                kind: ActionKind::GdprErase,
                tenant: tenant.to_owned(),
                user: subject.clone(),
                case: r.request_id.clone(),
                run: r.run.clone(),
                not_before: Utc::now(),
            };
            (r, Outcome::Accepted, None, Some(message))
        }
        Submitted::Done(r) => (r, Outcome::Skipped, Some("already-erased"), None),
    };
    let mut record = AuditRecord::new("gdpr-erase-request", outcome);
    record.user = Some(subject.to_string());
    record.request_id = Some(request.request_id.clone());
    record.run = Some(request.run.to_string());
    record.detail = Some(
        detail
            .unwrap_or(match origin {
                Origin::User => "by-user",
                Origin::Operator => "by-operator",
            })
            .to_owned(),
    );
    // The request is already durable as `accepted`: the hand-off to the
    // queue and the audit line are independent, so they run side by side,
    // and both must succeed before the caller hears of it.
    let enqueue = async {
        match &message {
            Some(m) => store
                .send(ACTIONS_QUEUE, &m.to_text(), SendOptions::default())
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let (sent, recorded) = tokio::join!(enqueue, audit.record(&record));
    sent?;
    recorded?;
    Ok(submitted)
}

/// Records an export in the audit log (ids only).
pub async fn record_export(
    audit: &AuditLog,
    subject: &ObjectId,
    origin: Origin,
    outcome: Outcome,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let mut record = AuditRecord::new("gdpr-export", outcome);
    record.user = Some(subject.to_string());
    record.error = error.map(str::to_owned);
    record.detail = Some(
        match origin {
            Origin::User => "by-user",
            Origin::Operator => "by-operator",
        }
        .to_owned(),
    );
    audit.record(&record).await
}
