//! The erasure job (`gdpr-erase` on `dormant-actions`): delete the user,
//! purge it from deleted items, tell other systems (`dormant-erasures`),
//! and keep the request's status and the audit log in step.
//!
//! Idempotent: each finished step is stamped on the request
//! (`userDeletedAt`, `purgedAt`, `eventPublishedAt`) before the next one
//! starts, so a second delivery skips what the first did; "already gone"
//! answers from Graph (404) count as done. The one duplicate a crash can
//! cause is the `user-erased` event (sent, then the crash before the stamp):
//! consumers key on the user id.
//!
//! No step loses its audit line: the stamp and the step's line are one
//! ETag-guarded write of the request (`unrecorded`), then the line is
//! appended, then dropped from the request. A delivery that finds lines
//! left there (the append failed, or the process died before dropping
//! them) appends each one unless the log already holds it, before
//! anything else.

use chrono::{DateTime, Utc};

use super::requests::{ErasureRequest, Requests, Status};
use crate::graph::{GraphClient, GraphError};
use crate::ids::ObjectId;
use crate::store::audit::{AuditLog, AuditRecord, Outcome};
use crate::store::{ERASURES_QUEUE, SendOptions, Store, StoreError};

/// How long after our own delete a 404 on the deleted item is read as
/// replication lag (retry) rather than "already purged".
const DELETED_ITEM_LAG: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// Graph or storage unavailable: the queue delivers the message again.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (no such request). Recorded by the caller.
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
}

impl From<StoreError> for EraseError {
    fn from(e: StoreError) -> Self {
        // A state blob that cannot be read or written leaves the request
        // unfinished; let the host retry (and poison-queue it if it persists).
        EraseError::Transient(e.into())
    }
}

/// Everything the job touches.
pub struct Eraser<'a> {
    pub store: &'a Store,
    pub audit: &'a AuditLog,
    pub graph: &'a GraphClient,
}

impl Eraser<'_> {
    /// Runs (or resumes) request `request_id` of `subject`.
    pub async fn run(
        &self,
        subject: &ObjectId,
        request_id: &str,
    ) -> Result<ErasureRequest, EraseError> {
        let requests = Requests::new(self.store.clone());
        let Some(request) = requests.get(subject, request_id).await? else {
            return Err(EraseError::Permanent {
                code: "unknown-request".into(),
                message: "no erasure request with this id for this user".into(),
            });
        };
        let request = self.finish_records(&requests, request).await?;
        if !request.status.is_pending() {
            let repeat = record(
                &request,
                "gdpr-erase",
                Outcome::Skipped,
                None,
                Some("already-finished"),
            );
            self.audit.record(&repeat).await?;
            return Ok(request);
        }
        let mut request = self
            .update(&requests, &request, |r| r.status = Status::Running)
            .await?;

        if request.user_deleted_at.is_none() {
            let step = "gdpr-delete-user";
            request = match self.graph.delete_user(subject.as_str()).await {
                Ok(()) => {
                    let line = record(&request, step, Outcome::Done, None, None);
                    let now = Utc::now();
                    self.step(&requests, &request, vec![line], |r| {
                        r.user_deleted_at = Some(now)
                    })
                    .await?
                }
                Err(GraphError::NotFound) => {
                    // Deleted before (by us in a delivery that crashed, or by
                    // someone else): nothing left to soft-delete. Marked with
                    // the epoch so the purge does not wait for replication.
                    let line = record(
                        &request,
                        step,
                        Outcome::Skipped,
                        None,
                        Some("already-deleted"),
                    );
                    self.step(&requests, &request, vec![line], |r| {
                        r.user_deleted_at = Some(DateTime::<Utc>::UNIX_EPOCH)
                    })
                    .await?
                }
                Err(e) => return self.graph_failure(&requests, &request, step, e).await,
            };
        }

        if request.purged_at.is_none() {
            let step = "gdpr-purge-user";
            let (outcome, detail) = match self.graph.purge_deleted(subject.as_str()).await {
                Ok(()) => (Outcome::Done, None),
                Err(GraphError::NotFound) => {
                    let deleted = request
                        .user_deleted_at
                        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                    if Utc::now().signed_duration_since(deleted) < DELETED_ITEM_LAG {
                        // Graph is eventually consistent: the user we just
                        // deleted may not be listed in deletedItems yet.
                        return Err(EraseError::Transient(anyhow::anyhow!(
                            "the deleted user is not in deletedItems yet"
                        )));
                    }
                    (Outcome::Skipped, Some("already-purged"))
                }
                Err(e) => return self.graph_failure(&requests, &request, step, e).await,
            };
            let line = record(&request, step, outcome, None, detail);
            let now = Utc::now();
            request = self
                .step(&requests, &request, vec![line], |r| r.purged_at = Some(now))
                .await?;
        }

        if request.event_published_at.is_none() {
            let erased_at = request.purged_at.unwrap_or_else(Utc::now);
            let event = serde_json::json!({
                "v": 1,
                "user": subject.as_str(),
                "erasedAt": erased_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            self.store
                .send(ERASURES_QUEUE, &event.to_string(), SendOptions::default())
                .await?;
            let line = record(&request, "gdpr-erased-event", Outcome::Done, None, None);
            let now = Utc::now();
            request = self
                .step(&requests, &request, vec![line], |r| {
                    r.event_published_at = Some(now)
                })
                .await?;
        }

        let line = record(&request, "gdpr-erase", Outcome::Done, None, None);
        self.step(&requests, &request, vec![line], |r| {
            r.status = Status::Done;
            r.error = None;
        })
        .await
    }

    async fn update(
        &self,
        requests: &Requests,
        request: &ErasureRequest,
        change: impl FnMut(&mut ErasureRequest),
    ) -> Result<ErasureRequest, EraseError> {
        requests
            .update(&request.subject, &request.request_id, change)
            .await?
            .ok_or_else(|| EraseError::Permanent {
                code: "unknown-request".into(),
                message: "the erasure request disappeared while it ran".into(),
            })
    }

    /// Records a finished step: `change` (its stamp) and its `lines` in
    /// one write of the request, then the lines in the log, then dropped
    /// from the request. Fresh lines cannot be in the log yet: appended
    /// without looking.
    async fn step(
        &self,
        requests: &Requests,
        request: &ErasureRequest,
        lines: Vec<AuditRecord>,
        change: impl Fn(&mut ErasureRequest),
    ) -> Result<ErasureRequest, EraseError> {
        let stamped = self
            .update(requests, request, |r| {
                change(r);
                for line in &lines {
                    if !r.unrecorded.contains(line) {
                        r.unrecorded.push(line.clone());
                    }
                }
            })
            .await?;
        self.audit.record_batch(&lines).await?;
        self.drop_recorded(requests, &stamped, &lines).await
    }

    /// Appends the lines an earlier delivery left on the request, each
    /// unless the log holds it already, and drops them from it.
    async fn finish_records(
        &self,
        requests: &Requests,
        request: ErasureRequest,
    ) -> Result<ErasureRequest, EraseError> {
        if request.unrecorded.is_empty() {
            return Ok(request);
        }
        let lines = request.unrecorded.clone();
        for line in &lines {
            self.audit.ensure_recorded(line).await?;
        }
        self.drop_recorded(requests, &request, &lines).await
    }

    async fn drop_recorded(
        &self,
        requests: &Requests,
        request: &ErasureRequest,
        lines: &[AuditRecord],
    ) -> Result<ErasureRequest, EraseError> {
        self.update(requests, request, |r| {
            r.unrecorded.retain(|l| !lines.contains(l))
        })
        .await
    }

    /// Transient Graph trouble → retry; a refusal → the request fails with
    /// Graph's code (no personal data in it) and the job ends.
    async fn graph_failure(
        &self,
        requests: &Requests,
        request: &ErasureRequest,
        step: &str,
        error: GraphError,
    ) -> Result<ErasureRequest, EraseError> {
        if error.is_transient() {
            return Err(EraseError::Transient(error.into()));
        }
        let code = match &error {
            GraphError::Permanent { status, code, .. } => format!("graph-{status}-{code}"),
            GraphError::Auth(_) => "graph-unauthorized".to_owned(),
            _ => "graph-refused".to_owned(),
        };
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(80)
            .collect();
        let lines = vec![
            record(request, step, Outcome::Failed, Some(&code), None),
            record(request, "gdpr-erase", Outcome::Failed, Some(&code), None),
        ];
        self.step(requests, request, lines, |r| {
            r.status = Status::Failed;
            r.error = Some(code.clone());
        })
        .await
    }
}

/// An audit line about `request`, stamped now.
fn record(
    request: &ErasureRequest,
    step: &str,
    outcome: Outcome,
    error: Option<&str>,
    detail: Option<&str>,
) -> AuditRecord {
    let mut r = AuditRecord::new(step, outcome);
    r.user = Some(request.subject.to_string());
    r.request_id = Some(request.request_id.clone());
    r.run = Some(request.run.to_string());
    r.error = error.map(str::to_owned);
    r.detail = detail.map(str::to_owned);
    r
}
