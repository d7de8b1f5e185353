//! GDPR request state in `dormant-state`, ETag-guarded.
//!
//! One blob per subject, `gdpr/subjects/{oid}.json` (ids and times only):
//! the subject's requests of the last hour (the rate limit must hold across
//! instances) and its erasure requests, newest last. Reading a request
//! needs the subject, so one user can never read another's request, nor
//! learn that it exists: it is simply not in their blob.
//!
//! One blob, so `POST /delete` costs one conditional write: counting the
//! request and creating (or finding) the erasure are a single If-Match (or
//! create-only) write, and two concurrent calls, on one instance or two,
//! agree on one request. The write goes out without a read first: If-Match
//! the state this process last wrote or read (its [`Hints`]), create-only
//! for a subject it has not seen. A stale guess fails its condition and
//! the state is read and tried again, so the guess saves a round trip but
//! never decides anything; an answer that writes nothing (the limit is
//! reached, the erasure is done) always comes from a fresh read.
//!
//! Crash safety: the state is written before the queue message is sent. A
//! crash between the two leaves the request `accepted`; the client's retry
//! of `POST /delete` finds it pending and enqueues again (the erasure is
//! idempotent), so nothing stays stuck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::ObjectId;
use crate::store::audit::AuditRecord;
use crate::store::{ETag, Precondition, STATE_CONTAINER, Store, StoreError};

/// CONTRACT: at most 10 requests per subject per hour.
pub const RATE_LIMIT: usize = 10;
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// Conditional-write attempts before a hot blob is reported unavailable
/// (the first one on a guess, the others each after a fresh read).
const MAX_CAS_ATTEMPTS: usize = 9;
/// Subjects whose state a process remembers; past this it starts over.
const MAX_HINTS: usize = 10_000;
/// Erasure requests kept per subject. Only the newest can be pending (a new
/// one starts only after a failure), so older ones are failed; past this
/// many their status reads as unknown (404).
const KEPT_ERASURES: usize = 16;

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
    /// Audit lines of finished steps that may not be in the log yet. A
    /// step's line is written here in the same write that stamps the step,
    /// then appended, then dropped: a failed append (or a crash before the
    /// drop) is finished by the next delivery, which would otherwise find
    /// the step stamped and never write its line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrecorded: Vec<AuditRecord>,
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
            unrecorded: Vec::new(),
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

/// Everything kept about one subject.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubjectState {
    /// Times of the requests within the last hour, oldest first.
    #[serde(default)]
    window: Vec<DateTime<Utc>>,
    /// Erasure requests, oldest first; the last one is the current one.
    #[serde(default)]
    erasures: Vec<ErasureRequest>,
}

impl SubjectState {
    /// Counts one request at `now` against the hourly limit, or says how
    /// long to wait (the refused request is not counted, so waiting that
    /// long always helps).
    fn count(&mut self, now: DateTime<Utc>) -> Result<(), Duration> {
        let window = chrono::Duration::from_std(RATE_WINDOW).unwrap_or(chrono::Duration::hours(1));
        self.window
            .retain(|t| now.signed_duration_since(*t) < window);
        self.window.sort();
        if self.window.len() >= RATE_LIMIT {
            let oldest = self.window[self.window.len() - RATE_LIMIT];
            let wait = (oldest + window).signed_duration_since(now);
            return Err(wait.to_std().unwrap_or(Duration::from_secs(1)));
        }
        self.window.push(now);
        Ok(())
    }

    fn erasure_mut(&mut self, request_id: &str) -> Option<&mut ErasureRequest> {
        self.erasures
            .iter_mut()
            .find(|r| r.request_id == request_id)
    }
}

pub fn subject_blob(subject: &ObjectId) -> String {
    format!("gdpr/subjects/{subject}.json")
}

/// What `POST /delete` should answer.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new request, or the pending one (same id): enqueue the job.
    Pending(ErasureRequest),
    /// The subject's erasure already completed.
    Done(ErasureRequest),
}

/// Why an erasure was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The subject's hourly limit is reached; try again after this long.
    #[error("too many requests; retry in {} s", .0.as_secs())]
    Limited(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a read-modify-write does with the state it read.
enum Step<R> {
    /// Store the changed state, then answer.
    Write(R),
    /// Answer without writing (nothing changed).
    Keep(R),
}

/// The state of subjects as this process last wrote or read it, with
/// the ETag: the guess a write starts from. Bounded; shared by clones.
#[derive(Debug, Clone, Default)]
pub struct Hints(Arc<Mutex<HashMap<ObjectId, (ETag, SubjectState)>>>);

impl Hints {
    fn guess(&self, subject: &ObjectId) -> (SubjectState, Precondition) {
        match self.lock().get(subject) {
            Some((etag, state)) => (state.clone(), Precondition::IfMatch(etag.clone())),
            None => (SubjectState::default(), Precondition::IfNoneMatch),
        }
    }

    fn remember(&self, subject: &ObjectId, etag: ETag, state: SubjectState) {
        let mut hints = self.lock();
        if hints.len() >= MAX_HINTS && !hints.contains_key(subject) {
            hints.clear();
        }
        hints.insert(subject.clone(), (etag, state));
    }

    fn forget(&self, subject: &ObjectId) {
        self.lock().remove(subject);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, (ETag, SubjectState)>> {
        // A panic while holding the lock leaves a map of hints, nothing
        // that decides: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The request store on `dormant-state`.
#[derive(Debug, Clone)]
pub struct Requests {
    store: Store,
    hints: Hints,
}

impl Requests {
    /// A request store that remembers nothing between calls' processes:
    /// every write of a subject it did not write before starts create-only.
    pub fn new(store: Store) -> Self {
        Self::with_hints(store, Hints::default())
    }

    /// A request store sharing `hints` (one per process: the endpoints').
    pub fn with_hints(store: Store, hints: Hints) -> Self {
        Self { store, hints }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn read(&self, subject: &ObjectId) -> Result<(SubjectState, Precondition), StoreError> {
        let name = subject_blob(subject);
        match self.store.get(STATE_CONTAINER, &name).await {
            Ok(blob) => {
                let state: SubjectState = serde_json::from_slice(&blob.body).map_err(|e| {
                    StoreError::permanent(
                        format!("{STATE_CONTAINER}/{name}"),
                        format!("unreadable state: {e}"),
                    )
                })?;
                self.hints
                    .remember(subject, blob.etag.clone(), state.clone());
                Ok((state, Precondition::IfMatch(blob.etag)))
            }
            Err(StoreError::NotFound { .. }) => {
                self.hints.forget(subject);
                Ok((SubjectState::default(), Precondition::IfNoneMatch))
            }
            Err(e) => Err(e),
        }
    }

    /// Applies `change` to the subject's state and writes it back guarded
    /// by its ETag (or create-only). The first attempt starts from the
    /// hint; a failed condition, or an answer that would write nothing,
    /// reads the stored state and applies `change` to that instead.
    async fn modify<R>(
        &self,
        subject: &ObjectId,
        mut change: impl FnMut(&mut SubjectState) -> Step<R>,
    ) -> Result<R, StoreError> {
        let name = subject_blob(subject);
        let mut current = self.hints.guess(subject);
        let mut read = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut state, precondition) = current;
            let answer = match change(&mut state) {
                Step::Keep(answer) if read => return Ok(answer),
                Step::Keep(_) => {
                    current = self.read(subject).await?;
                    read = true;
                    continue;
                }
                Step::Write(answer) => answer,
            };
            let body = serde_json::to_vec(&state).map_err(|e| {
                StoreError::permanent(
                    format!("{STATE_CONTAINER}/{name}"),
                    format!("cannot serialize: {e}"),
                )
            })?;
            match self
                .store
                .put(STATE_CONTAINER, &name, Bytes::from(body), precondition)
                .await
            {
                Ok(etag) => {
                    self.hints.remember(subject, etag, state);
                    return Ok(answer);
                }
                // Someone else wrote (or deleted) it since: read, retry.
                Err(StoreError::Conflict { .. }) => {
                    current = self.read(subject).await?;
                    read = true;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Transient {
            what: format!("{STATE_CONTAINER}/{name}"),
            detail: "too many concurrent writers; try again".into(),
        })
    }

    /// One request of `subject`; `None` if it is not theirs or not there.
    pub async fn get(
        &self,
        subject: &ObjectId,
        request_id: &str,
    ) -> Result<Option<ErasureRequest>, StoreError> {
        if uuid::Uuid::parse_str(request_id).is_err() {
            return Ok(None);
        }
        let (mut state, _) = self.read(subject).await?;
        Ok(state.erasure_mut(request_id).map(|r| r.clone()))
    }

    /// Creates the subject's erasure request, or returns the pending or
    /// completed one. A failed one is followed by a new request. A user's
    /// request counts against their hourly limit in the same write; an
    /// operator's does not.
    pub async fn submit_erasure(
        &self,
        subject: &ObjectId,
        origin: Origin,
        now: DateTime<Utc>,
    ) -> Result<Submitted, SubmitError> {
        let outcome = self
            .modify(subject, |state| {
                let counted = origin == Origin::User;
                if counted && let Err(wait) = state.count(now) {
                    return Step::Keep(Err(wait));
                }
                let found = match state.erasures.last() {
                    Some(r) if r.status.is_pending() => Some(Submitted::Pending(r.clone())),
                    Some(r) if r.status == Status::Done => Some(Submitted::Done(r.clone())),
                    _ => None,
                };
                match found {
                    Some(found) if counted => Step::Write(Ok(found)),
                    Some(found) => Step::Keep(Ok(found)),
                    None => {
                        let request = ErasureRequest::new(subject.clone(), origin, now);
                        state.erasures.push(request.clone());
                        let excess = state.erasures.len().saturating_sub(KEPT_ERASURES);
                        state.erasures.drain(..excess);
                        Step::Write(Ok(Submitted::Pending(request)))
                    }
                }
            })
            .await?;
        outcome.map_err(SubmitError::Limited)
    }

    /// Applies `change` to a request with If-Match, re-reading on conflict.
    /// Returns the stored result; `None` if the request does not exist.
    pub async fn update(
        &self,
        subject: &ObjectId,
        request_id: &str,
        mut change: impl FnMut(&mut ErasureRequest),
    ) -> Result<Option<ErasureRequest>, StoreError> {
        self.modify(subject, |state| {
            let Some(request) = state.erasure_mut(request_id) else {
                return Step::Keep(None);
            };
            let before = request.clone();
            change(request);
            if *request == before {
                return Step::Keep(Some(before));
            }
            request.updated_at = Utc::now();
            Step::Write(Some(request.clone()))
        })
        .await
    }

    /// Counts one request of `subject` against the hourly limit. `Err` with
    /// how long to wait when the limit is reached.
    pub async fn admit(
        &self,
        subject: &ObjectId,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Duration>, StoreError> {
        self.modify(subject, |state| match state.count(now) {
            Ok(()) => Step::Write(Ok(())),
            Err(wait) => Step::Keep(Err(wait)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ObjectId {
        ObjectId::parse("5b3a1c2d-3333-4e4e-8f8f-0123456789ab").expect("id")
    }

    async fn local_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        store.ensure_defaults().await.expect("containers");
        (store, dir)
    }

    #[tokio::test]
    async fn the_window_slides_and_says_how_long_to_wait() {
        let (store, _dir) = local_store().await;
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
        let (store, _dir) = local_store().await;
        let requests = Requests::new(store);
        let Submitted::Pending(first) = requests
            .submit_erasure(&alice(), Origin::User, Utc::now())
            .await
            .expect("submit")
        else {
            panic!("a new request is pending");
        };
        let Submitted::Pending(again) = requests
            .submit_erasure(&alice(), Origin::Operator, Utc::now())
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
            .submit_erasure(&alice(), Origin::User, Utc::now())
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

    #[tokio::test]
    async fn a_user_past_the_limit_gets_no_request_and_an_operator_is_not_counted() {
        let (store, _dir) = local_store().await;
        let requests = Requests::new(store.clone());
        let now = Utc::now();
        for _ in 0..RATE_LIMIT {
            requests
                .admit(&alice(), now)
                .await
                .expect("store")
                .expect("admitted");
        }
        let refused = requests
            .submit_erasure(&alice(), Origin::User, now)
            .await
            .expect_err("over the limit");
        assert!(matches!(refused, SubmitError::Limited(_)), "{refused}");
        let blob = store
            .get(STATE_CONTAINER, &subject_blob(&alice()))
            .await
            .expect("state");
        let state: SubjectState = serde_json::from_slice(&blob.body).expect("json");
        assert!(
            state.erasures.is_empty(),
            "a refused request creates nothing"
        );
        assert_eq!(state.window.len(), RATE_LIMIT, "and is not counted");
        // Support acting for the user is not held to the user's limit.
        let Submitted::Pending(r) = requests
            .submit_erasure(&alice(), Origin::Operator, now)
            .await
            .expect("operator")
        else {
            panic!("pending");
        };
        assert_eq!(r.origin, Origin::Operator);
        let blob = store
            .get(STATE_CONTAINER, &subject_blob(&alice()))
            .await
            .expect("state");
        let state: SubjectState = serde_json::from_slice(&blob.body).expect("json");
        assert_eq!(state.window.len(), RATE_LIMIT);
    }

    #[tokio::test]
    async fn concurrent_posts_agree_on_one_request() {
        let (store, _dir) = local_store().await;
        let requests = Requests::new(store);
        let now = Utc::now();
        let calls = (0..RATE_LIMIT).map(|_| {
            let requests = requests.clone();
            tokio::spawn(async move { requests.submit_erasure(&alice(), Origin::User, now).await })
        });
        let mut ids = std::collections::BTreeSet::new();
        for call in calls {
            match call.await.expect("task").expect("submitted") {
                Submitted::Pending(r) => ids.insert(r.request_id),
                Submitted::Done(_) => panic!("nothing ran"),
            };
        }
        assert_eq!(ids.len(), 1, "{ids:?}");
        let wait = requests.admit(&alice(), now).await.expect("store");
        assert!(wait.is_err(), "every one of them was counted");
    }

    /// Two instances, each with its own hints, over one store: guesses go
    /// stale at every turn, and still every request is counted once, both
    /// agree on one erasure, and both refuse the eleventh.
    #[tokio::test]
    async fn stale_guesses_are_read_again_and_decide_nothing() {
        let (store, _dir) = local_store().await;
        let a = Requests::with_hints(store.clone(), Hints::default());
        let b = Requests::with_hints(store.clone(), Hints::default());
        let now = Utc::now();
        let Submitted::Pending(first) = a
            .submit_erasure(&alice(), Origin::User, now)
            .await
            .expect("a")
        else {
            panic!("pending");
        };
        // B has never seen alice: its create-only guess fails, it reads.
        let Submitted::Pending(same) = b
            .submit_erasure(&alice(), Origin::User, now)
            .await
            .expect("b")
        else {
            panic!("pending");
        };
        assert_eq!(first.request_id, same.request_id);
        for i in 2..RATE_LIMIT {
            let who = if i % 2 == 0 { &a } else { &b };
            assert_eq!(
                who.admit(&alice(), now).await.expect("store"),
                Ok(()),
                "{i}"
            );
        }
        assert!(a.admit(&alice(), now).await.expect("store").is_err());
        assert!(b.admit(&alice(), now).await.expect("store").is_err());
        let blob = store
            .get(STATE_CONTAINER, &subject_blob(&alice()))
            .await
            .expect("state");
        let state: SubjectState = serde_json::from_slice(&blob.body).expect("json");
        assert_eq!(state.window.len(), RATE_LIMIT, "each counted once");
        assert_eq!(state.erasures.len(), 1);

        // A refusal never rests on a guess: with the state gone (say an
        // operator cleared it), A's remembered full window is read again.
        store
            .delete(STATE_CONTAINER, &subject_blob(&alice()))
            .await
            .expect("delete");
        assert_eq!(a.admit(&alice(), now).await.expect("store"), Ok(()));
        // Nor does "already done": B remembers a done erasure that is gone.
        let Submitted::Pending(second) = b
            .submit_erasure(&alice(), Origin::Operator, now)
            .await
            .expect("b")
        else {
            panic!("pending");
        };
        b.update(&alice(), &second.request_id, |r| r.status = Status::Done)
            .await
            .expect("update")
            .expect("found");
        store
            .delete(STATE_CONTAINER, &subject_blob(&alice()))
            .await
            .expect("delete");
        match b
            .submit_erasure(&alice(), Origin::Operator, now)
            .await
            .expect("b")
        {
            Submitted::Pending(r) => assert_ne!(r.request_id, second.request_id),
            Submitted::Done(_) => panic!("answered from a guess"),
        }
    }
}
