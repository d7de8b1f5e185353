//! GDPR request state in `dormant-state`, ETag-guarded.
//!
//! Layout (ids only; the subject is the directory object id):
//! - `gdpr/subjects/{oid}/requests/{requestId}.json`: one request's status.
//!   Reading it needs the subject, so one user can never read another's
//!   request, nor learn that it exists: the path simply is not there.
//! - `gdpr/subjects/{oid}/erasure.json`: the subject's current erasure
//!   request id; created create-only, replaced with If-Match, so two
//!   concurrent `POST /delete` calls agree on one request.
//! - `gdpr/subjects/{oid}/window.json`: the timestamps of the subject's
//!   requests in the last hour (the rate limit must hold across instances).
//!
//! Crash safety: the request blob is written before the pointer, and the
//! queue message after both. A crash before the message leaves the request
//! `accepted`; the client's retry of `POST /delete` finds it pending and
//! enqueues again (the erasure is idempotent), so nothing stays stuck.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::ObjectId;
use crate::store::{ETag, Precondition, STATE_CONTAINER, Store, StoreError};

/// CONTRACT: at most 10 requests per subject per hour.
pub const RATE_LIMIT: usize = 10;
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// Conditional-write attempts before a hot blob is reported unavailable.
const MAX_CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Accepted,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Accepted | Status::Running)
    }
}

/// Who asked: the user through the endpoint, or an operator on the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    User,
    Operator,
}

/// One erasure request. `*_at` fields record finished steps, so a second
/// delivery of the job skips what the first one did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureRequest {
    pub request_id: String,
    pub subject: ObjectId,
    pub origin: Origin,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The run id carried by the queue message (`run` is required there).
    pub run: crate::ids::RunId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_deleted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_published_at: Option<DateTime<Utc>>,
    /// Short error code when `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ErasureRequest {
    pub fn new(subject: ObjectId, origin: Origin, now: DateTime<Utc>) -> Self {
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            subject,
            origin,
            status: Status::Accepted,
            created_at: now,
            updated_at: now,
            run: crate::ids::RunId::new(now),
            user_deleted_at: None,
            purged_at: None,
            event_published_at: None,
            error: None,
        }
    }

    /// The public view: `{"requestId","status","updatedAt"}`.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "requestId": self.request_id,
            "status": self.status,
            "updatedAt": self.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pointer {
    request_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Window {
    /// Times of the requests within the last hour, oldest first.
    times: Vec<DateTime<Utc>>,
}

fn subject_dir(subject: &ObjectId) -> String {
    format!("gdpr/subjects/{subject}")
}

pub fn request_blob(subject: &ObjectId, request_id: &str) -> String {
    format!("{}/requests/{request_id}.json", subject_dir(subject))
}

fn pointer_blob(subject: &ObjectId) -> String {
    format!("{}/erasure.json", subject_dir(subject))
}

fn window_blob(subject: &ObjectId) -> String {
    format!("{}/window.json", subject_dir(subject))
}

/// What `POST /delete` should answer.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new request, or the pending one (same id): enqueue the job.
    Pending(ErasureRequest),
    /// The subject's erasure already completed.
    Done(ErasureRequest),
}

/// The request store on `dormant-state`.
#[derive(Debug, Clone)]
pub struct Requests {
    store: Store,
}

impl Requests {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<(T, ETag)>, StoreError> {
        match self.store.get(STATE_CONTAINER, name).await {
            Ok(blob) => {
                let value = serde_json::from_slice(&blob.body).map_err(|e| {
                    StoreError::permanent(
                        format!("{STATE_CONTAINER}/{name}"),
                        format!("unreadable state: {e}"),
                    )
                })?;
                Ok(Some((value, blob.etag)))
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        precondition: Precondition,
    ) -> Result<ETag, StoreError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            StoreError::permanent(
                format!("{STATE_CONTAINER}/{name}"),
                format!("cannot serialize: {e}"),
            )
        })?;
        self.store
            .put(STATE_CONTAINER, name, Bytes::from(body), precondition)
            .await
    }

    /// One request of `subject`; `None` if it is not theirs or not there.
    pub async fn get(
        &self,
        subject: &ObjectId,
        request_id: &str,
    ) -> Result<Option<(ErasureRequest, ETag)>, StoreError> {
        if uuid::Uuid::parse_str(request_id).is_err() {
            return Ok(None);
        }
        self.read(&request_blob(subject, request_id)).await
    }

    /// Creates the subject's erasure request, or returns the pending or
    /// completed one. A failed one is replaced by a new request.
    pub async fn submit_erasure(
        &self,
        subject: &ObjectId,
        origin: Origin,
    ) -> Result<Submitted, StoreError> {
        let pointer_name = pointer_blob(subject);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self.read::<Pointer>(&pointer_name).await?;
            let precondition = match &current {
                Some((pointer, etag)) => match self.get(subject, &pointer.request_id).await? {
                    Some((r, _)) if r.status.is_pending() => return Ok(Submitted::Pending(r)),
                    Some((r, _)) if r.status == Status::Done => return Ok(Submitted::Done(r)),
                    // Failed, or a pointer whose request vanished: start anew.
                    _ => Precondition::IfMatch(etag.clone()),
                },
                None => Precondition::IfNoneMatch,
            };
            let request = ErasureRequest::new(subject.clone(), origin, Utc::now());
            self.write(
                &request_blob(subject, &request.request_id),
                &request,
                Precondition::IfNoneMatch,
            )
            .await?;
            let pointer = Pointer {
                request_id: request.request_id.clone(),
            };
            match self.write(&pointer_name, &pointer, precondition).await {
                Ok(_) => return Ok(Submitted::Pending(request)),
                // Someone else won the race: drop ours (never handed out)
                // and answer with theirs on the next turn.
                Err(StoreError::Conflict { .. }) => {
                    let _ = self
                        .store
                        .delete(STATE_CONTAINER, &request_blob(subject, &request.request_id))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(contended(&pointer_name))
    }

    /// Applies `change` to a request with If-Match, re-reading on conflict.
    /// Returns the stored result; `None` if the request does not exist.
    pub async fn update(
        &self,
        subject: &ObjectId,
        request_id: &str,
        mut change: impl FnMut(&mut ErasureRequest),
    ) -> Result<Option<ErasureRequest>, StoreError> {
        let name = request_blob(subject, request_id);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some((mut request, etag)) = self.read::<ErasureRequest>(&name).await? else {
                return Ok(None);
            };
            let before = request.clone();
            change(&mut request);
            if request == before {
                return Ok(Some(request));
            }
            request.updated_at = Utc::now();
            match self
                .write(&name, &request, Precondition::IfMatch(etag))
                .await
            {
                Ok(_) => return Ok(Some(request)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(contended(&name))
    }

    /// Counts one request of `subject` against the hourly limit. `Err` with
    /// how long to wait when the limit is reached (the refused request is
    /// not counted, so waiting that long always helps).
    pub async fn admit(
        &self,
        subject: &ObjectId,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Duration>, StoreError> {
        let name = window_blob(subject);
        let window = chrono::Duration::from_std(RATE_WINDOW).unwrap_or(chrono::Duration::hours(1));
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut state, precondition) = match self.read::<Window>(&name).await? {
                Some((w, etag)) => (w, Precondition::IfMatch(etag)),
                None => (Window::default(), Precondition::IfNoneMatch),
            };
            state
                .times
                .retain(|t| now.signed_duration_since(*t) < window);
            state.times.sort();
            if state.times.len() >= RATE_LIMIT {
                let oldest = state.times[state.times.len() - RATE_LIMIT];
                let wait = (oldest + window).signed_duration_since(now);
                return Ok(Err(wait.to_std().unwrap_or(Duration::from_secs(1))));
            }
            state.times.push(now);
            match self.write(&name, &state, precondition).await {
                Ok(_) => return Ok(Ok(())),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(contended(&name))
    }
}

fn contended(name: &str) -> StoreError {
    StoreError::Transient {
        what: format!("{STATE_CONTAINER}/{name}"),
        detail: "too many concurrent writers; try again".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ObjectId {
        ObjectId::parse("5b3a1c2d-3333-4e4e-8f8f-0123456789ab").expect("id")
    }

    #[tokio::test]
    async fn the_window_slides_and_says_how_long_to_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        store.ensure_defaults().await.expect("containers");
        let requests = Requests::new(store);
        let start = Utc::now();
        for i in 0..RATE_LIMIT {
            let at = start + chrono::Duration::minutes(i as i64);
            assert_eq!(
                requests.admit(&alice(), at).await.expect("store"),
                Ok(()),
                "{i}"
            );
        }
        let later = start + chrono::Duration::minutes(30);
        let wait = requests
            .admit(&alice(), later)
            .await
            .expect("store")
            .expect_err("the 11th within the hour is refused");
        assert_eq!(
            wait.as_secs(),
            30 * 60,
            "until the oldest leaves the window"
        );
        // Refusals are not counted: once the oldest left, one more fits.
        let after = start + chrono::Duration::minutes(60);
        assert_eq!(
            requests.admit(&alice(), after).await.expect("store"),
            Ok(())
        );
        assert!(
            requests
                .admit(&alice(), after)
                .await
                .expect("store")
                .is_err()
        );
    }

    #[tokio::test]
    async fn one_pending_erasure_per_subject_and_a_failed_one_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        store.ensure_defaults().await.expect("containers");
        let requests = Requests::new(store);
        let Submitted::Pending(first) = requests
            .submit_erasure(&alice(), Origin::User)
            .await
            .expect("submit")
        else {
            panic!("a new request is pending");
        };
        let Submitted::Pending(again) = requests
            .submit_erasure(&alice(), Origin::Operator)
            .await
            .expect("submit")
        else {
            panic!("still pending");
        };
        assert_eq!(first.request_id, again.request_id);
        requests
            .update(&alice(), &first.request_id, |r| r.status = Status::Failed)
            .await
            .expect("update");
        let Submitted::Pending(fresh) = requests
            .submit_erasure(&alice(), Origin::User)
            .await
            .expect("submit")
        else {
            panic!("a failed request is replaced");
        };
        assert_ne!(fresh.request_id, first.request_id);
        // Request ids are looked up under the subject only.
        let bob = ObjectId::parse("6c4b2d3e-4444-4f4f-9a9a-123456789abc").expect("id");
        assert!(
            requests
                .get(&bob, &fresh.request_id)
                .await
                .expect("get")
                .is_none()
        );
        assert!(requests.get(&alice(), "../x").await.expect("get").is_none());
        let view = fresh.view();
        assert_eq!(view.as_object().expect("object").len(), 3);
        assert_eq!(view["status"], "accepted");
    }
}
