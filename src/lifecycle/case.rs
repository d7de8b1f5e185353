//! A case: one inactive user's walk through the phases, kept in
//! `dormant-state` so every step is crash-safe, undoable and auditable.
//!
//! Layout:
//! - `cases/open/{userId}.json`: the user's current case (at most one);
//! - `cases/closed/{userId}/{caseId}.json`: finished, cancelled or restored
//!   cases, kept for restore and for the record.
//!
//! Every write is ETag-guarded (`IfMatch`, or `IfNoneMatch` to open), so a
//! nightly scan and several queue workers can touch one case at once and
//! exactly one of them wins each change; the losers re-read and re-decide.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::graph::AssignedLicense;
use crate::ids::RunId;
use crate::lifecycle::ActionKind;
use crate::lifecycle::attest::{Answer, Attestation};
use crate::policy::phases::due_at;
use crate::policy::{Hold, HoldKind, Step};
use crate::store::audit::AuditRecord;
use crate::store::{ETag, Precondition, STATE_CONTAINER, Store, StoreError};

const OPEN_PREFIX: &str = "cases/open/";
const CLOSED_PREFIX: &str = "cases/closed/";
const HELD_PREFIX: &str = "cases/held/";

/// Deleted users stay restorable this long (Graph's deleted items).
pub const RESTORE_WINDOW: Duration = Duration::days(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseStatus {
    /// Walking its plan.
    Open,
    /// A step needs a person first (a mailbox to convert by hand): the
    /// nightly scan looks again and continues once it is done.
    Waiting,
    /// Stopped before its end: the user was active again, became excluded
    /// or held for review, or was re-enabled by someone other than dormant.
    Cancelled,
    /// Every step ran.
    Closed,
    /// What dormant did was undone: by an operator (`dormant restore`), or
    /// by dormant itself when a late sign-in showed the user active again
    /// (`reason` = `active-again`).
    Restored,
}

impl CaseStatus {
    /// A case in one of these states is archived and takes no more steps.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Closed | Self::Restored)
    }
}

/// One step of the plan with its day offset from the opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub kind: ActionKind,
    pub day: u32,
}

/// What happened to one step. Serialized with the case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    /// The step is about to act (or acting): written before the action, so
    /// whoever finds it without a record knows the action may have landed
    /// and must find out (the step's intent). Cleared with the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// A worker is acting on the step until then (its lease): nobody else
    /// acts on it or ends the case under it. Given up when the worker stops
    /// without a record (the intent stays: the action may have landed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_until: Option<DateTime<Utc>>,
    /// The queue message whose delivery holds the lease: the queue hands a
    /// message out again only once its earlier delivery lapsed (the
    /// Functions host and `dormant worker` keep it invisible while they
    /// work), so a redelivery of the same message takes the step over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_message: Option<String>,
    /// When a scan put the step's message on the queue, and which scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_by: Option<RunId>,
    /// The step took effect (or was found done) at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
    /// The audit line of the step, written into the case before it is
    /// appended to the log: a crash between the two is finished by the next
    /// delivery, which appends it unless the log already holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<AuditRecord>,
    /// The record is in the audit log.
    #[serde(default)]
    pub recorded: bool,
}

/// What the steps removed, so a restore can put it back. Taken before each
/// step acts (FACTS: the best-known open tool could not roll back because
/// it kept no state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// `accountEnabled` before the disable step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    /// The mailbox was a user mailbox that dormant converted to shared.
    #[serde(default)]
    pub converted_mailbox: bool,
    /// Directly assigned licenses dormant removed (SKU id, disabled plans).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<AssignedLicense>,
    /// Licenses a group assigns (SKU id → group id): not removable per
    /// user, so reported and left alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_licenses: BTreeMap<String, String>,
    /// When the soft delete happened (restorable for 30 days after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl StepState {
    /// Started, and no line says how it went.
    pub fn in_flight(&self) -> bool {
        self.started_at.is_some() && self.record.is_none()
    }
}

/// An end decided while a step was acting: the acting worker records its
/// step first, then ends the case itself (undoing what landed after the
/// decision). So a step racing a cancellation either does not act, or acts
/// and is recorded, and the cancellation then undoes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingEnd {
    pub status: CaseStatus,
    /// The cancel reason code, if a cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The audit step of the end (`cancel`, a step's kind, `close`).
    pub step: String,
    #[serde(default)]
    pub run: String,
    pub decided_at: DateTime<Utc>,
}

/// The steps an undo gives back, and why (the `restore` line's reason:
/// `restored-by-operator`, `active-again`, `cancelled-during-step`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndoPlan {
    pub steps: Vec<ActionKind>,
    pub reason: String,
    #[serde(default)]
    pub run: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub id: String,
    pub user: String,
    pub opened_at: DateTime<Utc>,
    pub opened_by: RunId,
    /// `accountEnabled` when the case opened: an account disabled then (by
    /// HR, say) and enabled later was enabled by a person, whoever had
    /// disabled it. `None` in cases opened before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_at_open: Option<bool>,
    pub status: CaseStatus,
    /// Why the case waits or was cancelled (a short code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub plan: Vec<PlannedStep>,
    #[serde(default)]
    pub steps: BTreeMap<ActionKind, StepState>,
    #[serde(default)]
    pub snapshot: Snapshot,
    /// The line that ended the case (cancel or close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing: Option<StepState>,
    /// The undo of what dormant did (an operator's restore, or dormant's
    /// own when the user was active again). Its intent (`started_at`) is
    /// written with the decision, so a crash before the undo finished is
    /// finished by whoever finds the case next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<StepState>,
    /// What the pending undo (`restore` with an intent) gives back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoPlan>,
    /// See [`PendingEnd`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_end: Option<PendingEnd>,
    /// The owner's answer through a notification's link (one per case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    pub updated_at: DateTime<Utc>,
}

/// `c-` + the opening time + randomness: sortable, opaque, no personal data.
pub fn new_case_id(at: DateTime<Utc>) -> String {
    let suffix: u32 = rand::rng().random();
    format!("c-{}-{suffix:08x}", at.format("%Y%m%dT%H%M%SZ"))
}

impl Case {
    pub fn open(
        user: &str,
        run: &RunId,
        plan: &[(Step, u32)],
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: new_case_id(now),
            user: user.to_ascii_lowercase(),
            opened_at: now,
            opened_by: run.clone(),
            enabled_at_open: Some(enabled),
            status: CaseStatus::Open,
            reason: None,
            plan: plan
                .iter()
                .map(|(s, d)| PlannedStep {
                    kind: ActionKind::from(*s),
                    day: *d,
                })
                .collect(),
            steps: BTreeMap::new(),
            snapshot: Snapshot::default(),
            closing: None,
            restore: None,
            undo: None,
            pending_end: None,
            attestation: None,
            updated_at: now,
        }
    }

    /// Steps started whose outcome no line records.
    pub fn in_flight(&self) -> Vec<ActionKind> {
        self.steps
            .iter()
            .filter(|(_, s)| s.in_flight())
            .map(|(k, _)| *k)
            .collect()
    }

    /// The destructive steps that took effect, in plan order.
    pub fn done_destructive(&self) -> Vec<ActionKind> {
        self.plan
            .iter()
            .map(|p| p.kind)
            .filter(|k| *k != ActionKind::Notify && self.is_done(*k))
            .collect()
    }

    /// When the newest destructive step took effect: a restore is possible
    /// for [`RESTORE_WINDOW`] after it (Graph keeps deleted users 30 days).
    pub fn last_destructive_at(&self) -> Option<DateTime<Utc>> {
        self.done_destructive()
            .into_iter()
            .filter_map(|k| self.step(k).and_then(|s| s.done_at))
            .max()
    }

    pub fn step(&self, kind: ActionKind) -> Option<&StepState> {
        self.steps.get(&kind)
    }

    pub fn is_done(&self, kind: ActionKind) -> bool {
        self.step(kind).is_some_and(|s| s.done_at.is_some())
    }

    pub fn in_plan(&self, kind: ActionKind) -> Option<&PlannedStep> {
        self.plan.iter().find(|p| p.kind == kind)
    }

    pub fn due_at(&self, kind: ActionKind) -> Option<DateTime<Utc>> {
        self.in_plan(kind).map(|p| due_at(self.opened_at, p.day))
    }

    /// The first step of the plan not done yet: steps run strictly in plan
    /// order, so a later step never overtakes an earlier one.
    pub fn next_step(&self) -> Option<PlannedStep> {
        self.plan.iter().copied().find(|p| !self.is_done(p.kind))
    }

    /// Every step before `kind` in the plan is done.
    pub fn ready_for(&self, kind: ActionKind) -> bool {
        self.plan
            .iter()
            .take_while(|p| p.kind != kind)
            .all(|p| self.is_done(p.kind))
    }

    /// The case's current phase for the report (`notify`, `disable`, …):
    /// the last step done, or `opened`.
    pub fn phase(&self) -> &'static str {
        self.plan
            .iter()
            .rev()
            .find(|p| self.is_done(p.kind))
            .map(|p| p.kind.as_str())
            .unwrap_or("opened")
    }

    fn open_name(user: &str) -> String {
        format!("{OPEN_PREFIX}{}.json", user.to_ascii_lowercase())
    }

    fn closed_name(&self) -> String {
        format!("{CLOSED_PREFIX}{}/{}.json", self.user, self.id)
    }
}

/// What the report shows of a user's open case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseView {
    /// The last step done (`notify`, `disable`, …) or `opened`.
    pub phase: String,
    pub next_step: Option<ActionKind>,
    pub next_due: Option<DateTime<Utc>>,
    pub waiting: bool,
    /// Why it waits (or the code of a pending end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The notification carried "keep" / "let go" links.
    #[serde(default)]
    pub attestation_asked: bool,
    /// What the owner answered, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

impl Case {
    pub fn view(&self) -> CaseView {
        let next = self.next_step();
        CaseView {
            phase: self.phase().to_owned(),
            next_step: next.map(|p| p.kind),
            next_due: next.map(|p| due_at(self.opened_at, p.day)),
            waiting: self.status == CaseStatus::Waiting,
            reason: self.reason.clone(),
            attestation_asked: self.attestation_asked(),
            answer: self.attestation.as_ref().map(|a| a.answer),
        }
    }
}

/// Where a case was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Open,
    Closed,
}

fn hold_name(user: &str) -> String {
    format!("{HELD_PREFIX}{}.json", user.to_ascii_lowercase())
}

/// A hold as stored. Holds written before kinds existed held for a fixed
/// time (`until`, set to the re-enable plus `inactive_after_days`): they
/// read as a re-enable hold from 90 days before it. A hold with a kind
/// ends at its `until`, if it has one (a keep).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredHold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<HoldKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<DateTime<Utc>>,
}

impl From<Hold> for StoredHold {
    fn from(h: Hold) -> Self {
        Self {
            kind: Some(h.kind),
            since: Some(h.since),
            until: h.until,
        }
    }
}

impl StoredHold {
    fn hold(&self) -> Option<Hold> {
        let Some(kind) = self.kind else {
            let since = self.until.map(|u| u - Duration::days(90))?;
            return Some(Hold::open_ended(HoldKind::ReEnabled, since));
        };
        Some(Hold {
            kind,
            since: self.since?,
            until: self.until,
        })
    }
}

async fn read_hold(store: &Store, name: &str) -> Result<Option<Hold>, StoreError> {
    match store.get(STATE_CONTAINER, name).await {
        Ok(blob) => {
            let stored: StoredHold = serde_json::from_slice(&blob.body)
                .map_err(|e| StoreError::permanent("hold", e.to_string()))?;
            Ok(stored.hold())
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Case persistence in `dormant-state`.
#[derive(Debug, Clone)]
pub struct CaseStore {
    store: Store,
}

fn corrupt(name: &str, e: serde_json::Error) -> StoreError {
    StoreError::permanent("case", format!("{name} is not a readable case: {e}"))
}

impl CaseStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn read(&self, name: &str) -> Result<Option<(Case, ETag)>, StoreError> {
        match self.store.get(STATE_CONTAINER, name).await {
            Ok(blob) => {
                let case = serde_json::from_slice(&blob.body).map_err(|e| corrupt(name, e))?;
                Ok(Some((case, blob.etag)))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write(&self, name: &str, case: &Case, pre: Precondition) -> Result<ETag, StoreError> {
        let body = serde_json::to_vec_pretty(case)
            .map_err(|e| StoreError::permanent("case", e.to_string()))?;
        self.store
            .put(STATE_CONTAINER, name, Bytes::from(body), pre)
            .await
    }

    /// The user's open (or waiting) case.
    pub async fn open_case(&self, user: &str) -> Result<Option<(Case, ETag)>, StoreError> {
        self.read(&Case::open_name(user)).await
    }

    /// Opens `case`; `Ok(None)` when the user already has one.
    pub async fn create(&self, case: &Case) -> Result<Option<ETag>, StoreError> {
        match self
            .write(
                &Case::open_name(&case.user),
                case,
                Precondition::IfNoneMatch,
            )
            .await
        {
            Ok(etag) => Ok(Some(etag)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a changed open case over the version read as `etag`. A
    /// conflict (someone else changed it) is returned as the error.
    pub async fn save(&self, case: &Case, etag: &ETag) -> Result<ETag, StoreError> {
        self.write(
            &Case::open_name(&case.user),
            case,
            Precondition::IfMatch(etag.clone()),
        )
        .await
    }

    /// Moves a final case out of `open/`: first the final state is written
    /// over `etag` (so any concurrent writer loses and re-reads a final
    /// case), then the archive copy, then the open blob goes. Each stage is
    /// idempotent, so a crash in between is finished by the next caller.
    pub async fn archive(&self, case: &Case, etag: &ETag) -> Result<(), StoreError> {
        debug_assert!(case.status.is_final());
        self.save(case, etag).await?;
        self.archive_final(case).await
    }

    /// The archive and delete stages of [`archive`](Self::archive), for a
    /// final case already written.
    /// The open blob goes only while it still holds this case: the user
    /// may have a newer case there by now.
    pub async fn archive_final(&self, case: &Case) -> Result<(), StoreError> {
        self.write(&case.closed_name(), case, Precondition::None)
            .await?;
        let open = Case::open_name(&case.user);
        for _ in 0..4 {
            let Some((current, etag)) = self.read(&open).await? else {
                return Ok(());
            };
            if current.id != case.id {
                return Ok(());
            }
            match self.store.delete_if(STATE_CONTAINER, &open, &etag).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() => return Ok(()),
                // Another finisher wrote it meanwhile: look again.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::conflict(
            open,
            crate::store::ConflictKind::PreconditionFailed,
        ))
    }

    /// User ids with an open or waiting case.
    pub async fn open_users(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .list(STATE_CONTAINER, OPEN_PREFIX)
            .await?
            .into_iter()
            .filter_map(|b| {
                b.name
                    .strip_prefix(OPEN_PREFIX)
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect())
    }

    /// Every open case's view, by user (the scan's report columns).
    pub async fn views(&self) -> Result<BTreeMap<String, CaseView>, StoreError> {
        use futures::{StreamExt as _, TryStreamExt as _};
        let users = self.open_users().await?;
        let views: Vec<Option<(String, CaseView)>> = futures::stream::iter(users)
            .map(|user| async move {
                Ok::<_, StoreError>(self.open_case(&user).await?.map(|(c, _)| (user, c.view())))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(views.into_iter().flatten().collect())
    }

    /// The names of the user's archived cases, oldest first (case ids
    /// begin with their opening time).
    async fn closed_names(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{CLOSED_PREFIX}{}/", user.to_ascii_lowercase());
        let mut names: Vec<String> = self
            .store
            .list(STATE_CONTAINER, &prefix)
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The user's newest archived case.
    pub async fn latest_closed(&self, user: &str) -> Result<Option<(Case, ETag)>, StoreError> {
        match self.closed_names(user).await?.pop() {
            Some(name) => self.read(&name).await,
            None => Ok(None),
        }
    }

    /// Holds `user` (see [`Hold`]): the newest decision replaces an older one.
    pub async fn hold(&self, user: &str, hold: Hold) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&StoredHold::from(hold))
            .map_err(|e| StoreError::permanent("hold", e.to_string()))?;
        self.store
            .put(
                STATE_CONTAINER,
                &hold_name(user),
                Bytes::from(body),
                Precondition::None,
            )
            .await
            .map(|_| ())
    }

    /// The user's hold, if any.
    pub async fn hold_of(&self, user: &str) -> Result<Option<Hold>, StoreError> {
        read_hold(&self.store, &hold_name(user)).await
    }

    /// A person lifts the hold. Returns whether there was one.
    pub async fn lift_hold(&self, user: &str) -> Result<bool, StoreError> {
        match self.store.delete(STATE_CONTAINER, &hold_name(user)).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every hold, by user.
    pub async fn holds(&self) -> Result<BTreeMap<String, Hold>, StoreError> {
        use futures::{StreamExt as _, TryStreamExt as _};
        let names: Vec<(String, String)> = self
            .store
            .list(STATE_CONTAINER, HELD_PREFIX)
            .await?
            .into_iter()
            .filter_map(|b| {
                let user = b
                    .name
                    .strip_prefix(HELD_PREFIX)
                    .and_then(|n| n.strip_suffix(".json"))?
                    .to_owned();
                Some((user, b.name))
            })
            .collect();
        let store = self.store.clone();
        let holds: Vec<Option<(String, Hold)>> =
            futures::stream::iter(names)
                .map(|(user, name)| {
                    let store = store.clone();
                    async move {
                        Ok::<_, StoreError>(read_hold(&store, &name).await?.map(|h| (user, h)))
                    }
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
        Ok(holds.into_iter().flatten().collect())
    }

    /// The case `id` of `user`, open or archived, with where it is.
    pub async fn find(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Option<(Case, ETag, Place)>, StoreError> {
        if let Some((case, etag)) = self.open_case(user).await?
            && case.id == id
        {
            return Ok(Some((case, etag, Place::Open)));
        }
        let name = format!("{CLOSED_PREFIX}{}/{id}.json", user.to_ascii_lowercase());
        Ok(self
            .read(&name)
            .await?
            .map(|(case, etag)| (case, etag, Place::Closed)))
    }

    /// Writes `case` back where it was read.
    pub async fn save_at(
        &self,
        case: &Case,
        etag: &ETag,
        place: Place,
    ) -> Result<ETag, StoreError> {
        match place {
            Place::Open => self.save(case, etag).await,
            Place::Closed => self.save_closed(case, etag).await,
        }
    }

    /// The user's archived cases, newest first.
    pub async fn closed_cases(&self, user: &str) -> Result<Vec<(Case, ETag)>, StoreError> {
        let mut out = Vec::new();
        for name in self.closed_names(user).await?.into_iter().rev() {
            if let Some(found) = self.read(&name).await? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// Writes an archived case back (a restore of a closed case).
    pub async fn save_closed(&self, case: &Case, etag: &ETag) -> Result<ETag, StoreError> {
        self.write(
            &case.closed_name(),
            case,
            Precondition::IfMatch(etag.clone()),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Phases, TenantKind};
    use crate::policy::{PlanShape, phases::plan};

    fn case() -> Case {
        let phases = Phases::default();
        let shape = PlanShape {
            subject: crate::policy::CaseSubject::Member,
            kind: TenantKind::Workforce,
            has_user_mailbox: true,
            has_direct_licenses: true,
        };
        let now = DateTime::parse_from_rfc3339("2026-11-01T02:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        Case::open(
            "6B3F2C1E-0000-4000-8000-000000000001",
            &RunId::new(now),
            &plan(shape, &phases),
            true,
            now,
        )
    }

    #[test]
    fn steps_run_in_plan_order_and_the_phase_follows() {
        let mut c = case();
        assert_eq!(c.user, "6b3f2c1e-0000-4000-8000-000000000001");
        assert!(crate::ids::is_token_id(&c.id));
        assert_eq!(c.phase(), "opened");
        assert_eq!(c.next_step().map(|p| p.kind), Some(ActionKind::Notify));
        assert!(c.ready_for(ActionKind::Notify));
        assert!(!c.ready_for(ActionKind::Disable));
        c.steps.entry(ActionKind::Notify).or_default().done_at = Some(c.opened_at);
        assert!(c.ready_for(ActionKind::Disable));
        assert!(
            !c.ready_for(ActionKind::RemoveLicenses),
            "the mailbox comes first"
        );
        assert_eq!(c.phase(), "notify");
        assert_eq!(
            c.due_at(ActionKind::Disable).map(|d| d.to_rfc3339()),
            Some("2026-11-15T02:00:00+00:00".into())
        );
        assert_eq!(c.due_at(ActionKind::Purge), None, "purge is not configured");
    }

    #[test]
    fn a_case_round_trips_through_json() {
        let mut c = case();
        c.snapshot.licenses.push(AssignedLicense {
            sku_id: "sku".into(),
            disabled_plans: vec!["p".into()],
        });
        let text = serde_json::to_string(&c).expect("serialize");
        let back: Case = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, c);
    }

    #[tokio::test]
    async fn holds_round_trip_and_a_hold_from_before_kinds_reads_as_a_re_enable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        store.ensure_defaults().await.expect("containers");
        let cases = CaseStore::new(store.clone());
        let user = "6B3F2C1E-0000-4000-8000-000000000002";
        assert_eq!(cases.hold_of(user).await.expect("read"), None);
        let since = DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let hold = Hold::open_ended(HoldKind::Restored, since);
        cases.hold(user, hold).await.expect("hold");
        assert_eq!(cases.hold_of(user).await.expect("read"), Some(hold));
        assert_eq!(cases.holds().await.expect("holds").len(), 1);

        // Written by an earlier build: `{"until"}` = re-enable + 90 days.
        store
            .put(
                STATE_CONTAINER,
                &hold_name(user),
                Bytes::from_static(br#"{"until":"2027-02-18T08:00:00Z"}"#),
                Precondition::None,
            )
            .await
            .expect("legacy hold");
        assert_eq!(
            cases
                .hold_of(&user.to_ascii_lowercase())
                .await
                .expect("read"),
            Some(Hold::open_ended(HoldKind::ReEnabled, since))
        );
        // A keep ends at its own date, kept with it.
        let kept = Hold::kept(since, 180);
        cases.hold(user, kept).await.expect("keep");
        assert_eq!(cases.hold_of(user).await.expect("read"), Some(kept));
        assert_eq!(kept.until.map(|u| u - since), Some(Duration::days(180)));
        assert!(cases.lift_hold(user).await.expect("lift"));
        assert!(!cases.lift_hold(user).await.expect("lift again"));
        assert_eq!(cases.hold_of(user).await.expect("read"), None);
    }
}
