//! One step of one case, exactly once in effect.
//!
//! The protocol, for a message `{kind, user, case}`:
//! 1. find the case it names (open or archived); an archived or final case,
//!    or a step already recorded, is a repeat: whatever a crash left half
//!    done is finished (see [`ending`](super::ending)) and nothing more
//!    happens;
//! 2. a step that acted but whose audit line may be missing (a crash after
//!    acting) is finished: the line is appended unless the log holds it;
//! 3. an end decided while the step was acting is carried out;
//! 4. otherwise re-check the user (cancel instead of acting when the case
//!    no longer holds), snapshot what the step removes and write the step's
//!    intent and lease into the case, act — each action first reads the
//!    directory's current state, so acting again after a crash finds the
//!    work done instead of doing it twice — then write the step's audit
//!    line into the case, append it to the log, and mark it recorded.
//!
//! Every case write is `IfMatch`: of two deliveries racing, one records;
//! the other re-reads and finds the step recorded.

use chrono::Duration;
use serde::Serialize;

use super::case::{Case, CaseStatus, CaseStore, Place};
use super::ending::{Ended, INTENT_TTL};
use super::recheck::{CancelReason, Recheck, mailbox_of, recheck};
use super::{ActionKind, ActionMessage, Lifecycle, LifecycleError, graph_code, notify};
use crate::graph::exchange::MailboxKind;
use crate::graph::{DeletedItem, ExternalUserState, GraphError, SCAN_SELECT, User};
use crate::store::audit::{AuditRecord, Outcome};

/// Re-reads after losing an ETag race before giving the message back.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// Graph's clock and dormant's may differ this much (deleted items'
/// `deletedDateTime` against the intent dormant wrote before its delete).
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Where a guest lands after redeeming a reset invitation.
const RESET_REDIRECT_URL: &str = "https://myapps.microsoft.com";

/// Whether the guest's redemption was reset since `started` (the step's
/// intent): pending again, the state changed after the intent.
fn reset_landed(user: &User, started: chrono::DateTime<chrono::Utc>) -> bool {
    user.external_user_state == Some(ExternalUserState::PendingAcceptance)
        && user
            .external_user_state_change_date_time
            .is_some_and(|at| at + CLOCK_SKEW >= started)
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// `done`, `skipped`, `cancelled`, `waiting`, `failed`, `partial`,
    /// `deferred`, `repeat`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StepReport {
    pub(crate) fn repeat(detail: &str) -> Self {
        Self {
            outcome: "repeat",
            detail: Some(detail.to_owned()),
        }
    }

    pub(crate) fn from_record(record: &AuditRecord) -> Self {
        Self {
            outcome: match record.outcome {
                Outcome::Done => "done",
                Outcome::Skipped => "skipped",
                Outcome::Cancelled => "cancelled",
                Outcome::Accepted => "accepted",
                Outcome::Failed => "failed",
                Outcome::Partial => "partial",
            },
            detail: record.detail.clone(),
        }
    }

    fn cancelled(reason: CancelReason, ended: Ended) -> Self {
        Self {
            outcome: if ended == Ended::Deferred {
                "deferred"
            } else {
                "cancelled"
            },
            detail: Some(reason.code().to_owned()),
        }
    }
}

/// What an action did.
struct Acted {
    outcome: Outcome,
    detail: String,
    /// The step cannot run without a person (a mailbox that is not
    /// positively shared, a conversion not configured): the case waits and
    /// the step stays undone.
    waiting: bool,
}

impl Acted {
    fn done(detail: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Done,
            detail: detail.into(),
            waiting: false,
        }
    }

    fn found_done(detail: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Skipped,
            detail: detail.into(),
            waiting: false,
        }
    }

    fn waiting(detail: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Skipped,
            detail: detail.into(),
            waiting: true,
        }
    }
}

/// Why a step is not run now, decided before anything is written.
enum Blocked {
    Cancel(CancelReason),
    /// The user is where the step expects it (absent before a purge, …).
    Go(Option<Box<User>>),
}

impl Lifecycle<'_> {
    pub(crate) fn cases(&self) -> CaseStore {
        CaseStore::new(self.store.clone())
    }

    /// An audit line about `case`, stamped with dormant's clock; `run`
    /// empty for an operator's action.
    pub(crate) fn record(
        &self,
        case: &Case,
        run: &str,
        step: &str,
        outcome: Outcome,
    ) -> AuditRecord {
        let mut r = AuditRecord::new(step, outcome);
        r.time = self.clock.now();
        r.run = (!run.is_empty()).then(|| run.to_owned());
        r.case = Some(case.id.clone());
        r.user = Some(case.user.clone());
        r
    }

    /// Runs the step named by `message`.
    pub async fn run_step(
        &self,
        message: &ActionMessage,
        delivery: Option<&str>,
    ) -> Result<StepReport, LifecycleError> {
        let kind = message.kind;
        let run = message.run.as_str();
        let cases = self.cases();
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut case, etag, place)) =
                cases.find(message.user.as_str(), &message.case).await?
            else {
                return Ok(StepReport::repeat("no-case"));
            };
            if place == Place::Closed || case.status.is_final() {
                self.finish_final(case, place).await?;
                return Ok(StepReport::repeat("case-ended"));
            }
            if case.in_plan(kind).is_none() {
                return Err(LifecycleError::refused(
                    "not-in-plan",
                    format!("`{}` is not a step of this case", kind.as_str()),
                ));
            }
            let state = case.step(kind).cloned().unwrap_or_default();
            if state.recorded {
                return Ok(StepReport::repeat("already-recorded"));
            }
            let now = self.clock.now();
            let redelivery = delivery.is_some() && state.acting_message.as_deref() == delivery;
            if let Some(until) = state.acting_until.filter(|u| *u > now)
                && state.record.is_none()
                && !redelivery
            {
                // Another delivery of this message is acting right now.
                return Err(LifecycleError::InProgress {
                    step: kind.as_str(),
                    retry_after: until - now,
                });
            }
            if redelivery && state.record.is_none() {
                // The earlier delivery of this very message died holding
                // the lease: this one takes the step over.
                if let Some(s) = case.steps.get_mut(&kind) {
                    s.acting_until = None;
                }
            }
            if let Some(record) = state.record.clone() {
                // Acted and wrote the line into the case; the log may lack it.
                self.ensure_recorded(&record).await?;
                case.steps.entry(kind).or_default().recorded = true;
                match cases.save(&case, &etag).await {
                    Ok(etag) => {
                        self.after_recorded(case, &etag, run).await?;
                        return Ok(StepReport::from_record(&record));
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if case.pending_end.is_some() {
                // Decided while an earlier delivery acted and then died: its
                // intent is resolved by looking, then the end is carried out.
                return match self.carry_out_pending_end(case, &etag).await? {
                    Ended::Conflict => continue,
                    _ => Ok(StepReport::repeat("case-ended")),
                };
            }
            if case.status == CaseStatus::Waiting {
                return Ok(StepReport::repeat("waiting-for-person"));
            }
            if !case.ready_for(kind) {
                return Err(LifecycleError::refused(
                    "out-of-order",
                    format!("an earlier step than `{}` is not done", kind.as_str()),
                ));
            }
            if case.due_at(kind).is_some_and(|due| due > now) {
                return Err(LifecycleError::refused(
                    "not-due",
                    format!("`{}` is not due yet", kind.as_str()),
                ));
            }

            let user = match self.blocked(&case, kind, now).await? {
                Blocked::Go(user) => user,
                Blocked::Cancel(reason) => {
                    match self
                        .end_case(
                            case,
                            &etag,
                            CaseStatus::Cancelled,
                            kind.as_str(),
                            Some(reason.code()),
                            run,
                        )
                        .await?
                    {
                        Ended::Conflict => continue,
                        ended => return Ok(StepReport::cancelled(reason, ended)),
                    }
                }
            };

            // Snapshot what the step removes, and the intent and lease,
            // before it acts.
            if let Some(user) = &user {
                self.snapshot(&mut case, kind, user).await?;
            }
            let entry = case.steps.entry(kind).or_default();
            entry.started_at.get_or_insert(now);
            entry.acting_until = Some(now + INTENT_TTL);
            entry.acting_message = delivery.map(str::to_owned);
            case.updated_at = now;
            match cases.save(&case, &etag).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }

            let acted = match self.act(&case, kind, user.as_deref()).await {
                Ok(a) => a,
                Err(LifecycleError::Graph(e)) if !e.is_transient() => {
                    self.give_up_lease(&case, kind).await?;
                    return self.record_failure(&case, message, &graph_code(&e)).await;
                }
                Err(e) => {
                    // The intent stays (the action may have landed); the
                    // lease goes, so the retry resumes at once.
                    if let Err(lease) = self.give_up_lease(&case, kind).await {
                        tracing::warn!(error = %lease, "could not give the step's lease up; it lapses on its own");
                    }
                    return Err(e);
                }
            };
            let mut record = self.record(&case, run, kind.as_str(), acted.outcome);
            record.detail = Some(acted.detail.clone());
            let report = if acted.waiting {
                StepReport {
                    outcome: "waiting",
                    detail: Some(acted.detail.clone()),
                }
            } else {
                StepReport::from_record(&record)
            };
            self.record_step(&case, kind, record, &acted).await?;
            tracing::info!(kind = kind.as_str(), case = %message.case, outcome = report.outcome, "step recorded");
            return Ok(report);
        }
        Err(LifecycleError::Contention(MAX_ATTEMPTS))
    }

    /// Whether the step may go on: the re-check, and where the user is for
    /// the steps that expect it gone.
    async fn blocked(
        &self,
        case: &Case,
        kind: ActionKind,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Blocked, LifecycleError> {
        // A reset that landed before a crash hid the answer leaves the guest
        // pending since the step's intent: the step is found done, not
        // cancelled as "no longer unmanaged".
        if kind == ActionKind::ResetRedemption
            && let Some(started) = case.step(kind).and_then(|s| s.started_at)
        {
            match self.graph.get_user(&case.user, SCAN_SELECT).await {
                Ok(user) if reset_landed(&user, started) => {
                    return Ok(Blocked::Go(Some(Box::new(user))));
                }
                Ok(_) | Err(GraphError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let found = recheck(self.graph, &self.cases(), self.config, case, None, now).await?;
        let user = match found {
            Recheck::Cancel(reason) => return Ok(Blocked::Cancel(reason)),
            Recheck::Holds(user) => Some(user),
            Recheck::Absent => None,
        };
        Ok(match (kind, user) {
            // Back in the directory before the purge: someone restored it.
            (ActionKind::Purge, Some(_)) => Blocked::Cancel(CancelReason::RestoredByPerson),
            (ActionKind::Purge, None) => match self.purge_recheck(case).await? {
                Some(reason) => Blocked::Cancel(reason),
                None => Blocked::Go(None),
            },
            // In deleted items, and not by this case: the case ends, and
            // nothing of dormant ever purges it.
            (ActionKind::Delete, None) => match self.why_absent(case).await? {
                Some(reason) => Blocked::Cancel(reason),
                None => Blocked::Go(None),
            },
            (_, None) => Blocked::Cancel(
                self.why_absent(case)
                    .await?
                    .unwrap_or(CancelReason::UserGone),
            ),
            (_, Some(user)) => Blocked::Go(Some(user)),
        })
    }

    /// Why a user this case has not deleted yet is gone from the directory:
    /// someone else deleted it (it is in deleted items, and not by this
    /// case), or it is gone altogether. `None`: the deletion is this case's
    /// own (its delete step acted before a crash hid the answer).
    pub(crate) async fn why_absent(&self, case: &Case) -> Result<Option<CancelReason>, GraphError> {
        match self.graph.deleted_item(&case.user).await {
            Ok(item) if self.deleted_by_this_case(case, &item) => Ok(None),
            Ok(_) => Ok(Some(CancelReason::DeletedBySomeoneElse)),
            Err(GraphError::NotFound) => Ok(Some(CancelReason::UserGone)),
            Err(e) => Err(e),
        }
    }

    /// Whether `item` is the deletion this case's delete step made: the
    /// step's intent was written before the delete was sent, so Graph's
    /// `deletedDateTime` is not older than it.
    fn deleted_by_this_case(&self, case: &Case, item: &DeletedItem) -> bool {
        let started = case
            .step(ActionKind::Delete)
            .and_then(|s| s.started_at)
            .or(case.snapshot.deleted_at);
        let done = case.step(ActionKind::Delete).and_then(|s| s.done_at);
        match (started, item.deleted_date_time) {
            (Some(started), Some(deleted)) => {
                deleted + CLOCK_SKEW >= started && done.is_none_or(|d| deleted <= d + CLOCK_SKEW)
            }
            // Graph did not date it: only an intent of this case claims it.
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The purge's own re-check (the user is in deleted items): the deletion
    /// must be this case's, and nobody may have held or excluded the user
    /// since.
    async fn purge_recheck(&self, case: &Case) -> Result<Option<CancelReason>, LifecycleError> {
        let item = match self.graph.deleted_item(&case.user).await {
            Ok(item) => item,
            // Already gone: the step finds it done.
            Err(GraphError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !self.deleted_by_this_case(case, &item) {
            return Ok(Some(CancelReason::DeletedBySomeoneElse));
        }
        if case.kept() {
            return Ok(Some(CancelReason::Kept));
        }
        // A deleted user shows no activity: only a hold's own end ends it.
        let now = self.clock.now();
        if self
            .cases()
            .hold_of(&case.user)
            .await?
            .is_some_and(|h| h.in_force(None, now))
        {
            return Ok(Some(CancelReason::Held));
        }
        // A deleted user's UPN is prefixed with its object id (no dashes).
        let prefix = case.user.replace('-', "");
        let upn = item
            .user_principal_name
            .as_deref()
            .map(|u| u.strip_prefix(prefix.as_str()).unwrap_or(u))
            .unwrap_or_default();
        let named = |list: &[crate::config::UserRef]| {
            list.iter().any(|r| match r {
                crate::config::UserRef::ObjectId(id) => {
                    id.to_string().eq_ignore_ascii_case(&case.user)
                }
                crate::config::UserRef::Upn(u) => u.eq_ignore_ascii_case(upn),
            })
        };
        let policy = &self.config.policy;
        if named(&policy.exclude_users) || named(&policy.break_glass) {
            return Ok(Some(CancelReason::Excluded));
        }
        Ok(None)
    }

    /// Writes the step's record into its case (wherever the case is by
    /// now), appends it, marks it recorded, then whatever follows: an end
    /// that waited for the step, or the close after the last one.
    async fn record_step(
        &self,
        acted_on: &Case,
        kind: ActionKind,
        record: AuditRecord,
        acted: &Acted,
    ) -> Result<(), LifecycleError> {
        let cases = self.cases();
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut case, etag, place)) = cases.find(&acted_on.user, &acted_on.id).await?
            else {
                // The case vanished (an operator deleted state by hand):
                // the line still goes to the log.
                self.ensure_recorded(&record).await?;
                return Ok(());
            };
            let final_case = place == Place::Closed || case.status.is_final();
            let entry = case.steps.entry(kind).or_default();
            if entry.record.is_some() {
                // Someone resolved the step meanwhile (a lease that lapsed).
                self.ensure_recorded(&record).await?;
                return Ok(());
            }
            entry.record = Some(record.clone());
            entry.recorded = false;
            entry.acting_until = None;
            entry.acting_message = None;
            if acted.waiting {
                entry.started_at = None;
            } else {
                entry.done_at = Some(record.time);
            }
            if kind == ActionKind::Delete && !acted.waiting {
                case.snapshot.deleted_at.get_or_insert(record.time);
            }
            if acted.waiting && !final_case {
                case.status = CaseStatus::Waiting;
                case.reason = Some(acted.detail.clone());
            }
            case.updated_at = record.time;
            if final_case {
                // Ended while the step acted (its lease lapsed first): the
                // step is recorded in the ended case, then given back.
                if !acted.waiting && kind != ActionKind::Notify {
                    self.undo_late_step(&mut case, kind).await?;
                }
                match cases.save_at(&case, &etag, place).await {
                    Ok(_) => {}
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
                self.finish_final(case, place).await?;
                return Ok(());
            }
            let etag = match cases.save(&case, &etag).await {
                Ok(e) => e,
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            };
            self.audit.record(&record).await?;
            case.steps.entry(kind).or_default().recorded = true;
            let etag = match cases.save(&case, &etag).await {
                Ok(e) => e,
                // The line is in the log; whoever changed the case finds
                // it there.
                Err(e) if e.is_conflict() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            return self
                .after_recorded(case, &etag, record.run.as_deref().unwrap_or(""))
                .await;
        }
        Err(LifecycleError::Contention(MAX_ATTEMPTS))
    }

    /// A step landed in a case that had ended: decide its undo (carried out
    /// by [`finish_final`](Self::finish_final)).
    async fn undo_late_step(
        &self,
        case: &mut Case,
        kind: ActionKind,
    ) -> Result<(), LifecycleError> {
        if let Some(restore) = case.restore.as_mut() {
            match (&restore.record, restore.recorded) {
                // An undo is decided and not carried out yet: it takes the
                // step along.
                (None, _) if restore.started_at.is_some() => {
                    if let Some(plan) = case.undo.as_mut() {
                        plan.steps.push(kind);
                    }
                    return Ok(());
                }
                // An undo already ran: its line goes first, then a new one.
                (Some(record), false) => {
                    self.ensure_recorded(record).await?;
                    restore.recorded = true;
                }
                _ => {}
            }
        }
        case.restore = Some(super::case::StepState {
            started_at: Some(self.clock.now()),
            ..super::case::StepState::default()
        });
        case.undo = Some(super::case::UndoPlan {
            steps: vec![kind],
            reason: super::ending::CANCELLED_DURING_STEP.to_owned(),
            run: String::new(),
        });
        Ok(())
    }

    /// After a step's line is recorded: the end that waited for it, or the
    /// close after the last step.
    async fn after_recorded(
        &self,
        case: Case,
        etag: &crate::store::ETag,
        run: &str,
    ) -> Result<(), LifecycleError> {
        if case.pending_end.is_some() {
            self.carry_out_pending_end(case, etag).await?;
        } else if case.status != CaseStatus::Waiting && case.next_step().is_none() {
            self.end_case(case, etag, CaseStatus::Closed, "close", None, run)
                .await?;
        }
        Ok(())
    }

    /// The acting worker stops without a record: the lease goes, the intent
    /// stays.
    async fn give_up_lease(&self, of: &Case, kind: ActionKind) -> Result<(), LifecycleError> {
        let cases = self.cases();
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut case, etag, Place::Open)) = cases.find(&of.user, &of.id).await? else {
                return Ok(());
            };
            let Some(state) = case.steps.get_mut(&kind) else {
                return Ok(());
            };
            state.acting_until = None;
            state.acting_message = None;
            match cases.save(&case, &etag).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A refusal Graph will repeat (permission missing, a license Graph
    /// will not remove): recorded, the step stays undone, and the next
    /// nightly scan queues it again.
    async fn record_failure(
        &self,
        case: &Case,
        message: &ActionMessage,
        error: &str,
    ) -> Result<StepReport, LifecycleError> {
        let mut record = self.record(
            case,
            message.run.as_str(),
            message.kind.as_str(),
            Outcome::Failed,
        );
        record.error = Some(error.to_owned());
        self.audit.record(&record).await?;
        Ok(StepReport {
            outcome: "failed",
            detail: Some(error.to_owned()),
        })
    }

    /// Records into the case what `kind` is about to remove (saved with the
    /// step's intent, before it acts).
    async fn snapshot(
        &self,
        case: &mut Case,
        kind: ActionKind,
        user: &User,
    ) -> Result<(), LifecycleError> {
        let snap = &mut case.snapshot;
        match kind {
            ActionKind::Disable if snap.account_enabled.is_none() => {
                snap.account_enabled = Some(user.account_enabled.unwrap_or(true));
            }
            ActionKind::ConvertMailbox if !snap.converted_mailbox => {
                if let Some(ex) = self.exchange
                    && ex.mailbox_kind(&user.id).await? == Some(MailboxKind::User)
                {
                    snap.converted_mailbox = true;
                }
            }
            ActionKind::RemoveLicenses => {
                for l in &user.assigned_licenses {
                    // One state per source: a SKU can be both direct and
                    // inherited from a group.
                    let states: Vec<_> = user
                        .license_assignment_states
                        .iter()
                        .filter(|s| s.sku_id.as_deref() == Some(l.sku_id.as_str()))
                        .collect();
                    for group in states.iter().filter_map(|s| s.assigned_by_group.clone()) {
                        snap.group_licenses.insert(l.sku_id.clone(), group);
                    }
                    let direct =
                        states.is_empty() || states.iter().any(|s| s.assigned_by_group.is_none());
                    if direct && !snap.licenses.iter().any(|s| s.sku_id == l.sku_id) {
                        snap.licenses.push(l.clone());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The action itself. Each reads the directory's state first, so a
    /// repeat after a crash finds the work done.
    async fn act(
        &self,
        case: &Case,
        kind: ActionKind,
        user: Option<&User>,
    ) -> Result<Acted, LifecycleError> {
        let graph = self.graph;
        let id = case.user.as_str();
        match (kind, user) {
            (ActionKind::Notify, Some(user)) => {
                let detail = notify::notify(
                    graph,
                    self.http,
                    self.config,
                    self.attest,
                    case,
                    user,
                    self.clock.now(),
                )
                .await?;
                Ok(Acted::done(detail))
            }
            (ActionKind::Disable, Some(user)) => {
                let was_enabled = user.account_enabled != Some(false);
                // The revoke is idempotent: it signs out every session,
                // whoever disabled the account.
                graph.disable_and_revoke(id, was_enabled).await?;
                Ok(if was_enabled {
                    Acted::done("disabled;sessions-revoked")
                } else if case.snapshot.account_enabled == Some(true) {
                    // Enabled when this step took its snapshot: the change
                    // is this step's, made before a crash hid the answer.
                    Acted::done("disabled;sessions-revoked;resumed")
                } else {
                    Acted::found_done("already-disabled;sessions-revoked")
                })
            }
            (ActionKind::ConvertMailbox, Some(_)) => {
                let Some(ex) = self.exchange else {
                    return Ok(Acted::waiting("mailbox-conversion-not-configured"));
                };
                match ex.mailbox_kind(id).await? {
                    Some(MailboxKind::User) => {
                        ex.set_mailbox_type(id, true).await?;
                        Ok(Acted::done("converted-to-shared"))
                    }
                    Some(MailboxKind::Shared) if case.snapshot.converted_mailbox => {
                        Ok(Acted::done("converted-to-shared;resumed"))
                    }
                    Some(MailboxKind::Shared) => Ok(Acted::found_done("already-shared")),
                    Some(MailboxKind::Other) => Ok(Acted::found_done("not-a-user-mailbox")),
                    None => Ok(Acted::found_done("no-mailbox")),
                }
            }
            (ActionKind::RemoveLicenses, Some(user)) => {
                // The direct assignments the snapshot holds that are still there.
                let direct: Vec<String> = user
                    .assigned_licenses
                    .iter()
                    .filter(|l| case.snapshot.licenses.iter().any(|s| s.sku_id == l.sku_id))
                    .map(|l| l.sku_id.clone())
                    .collect();
                // Group-assigned licenses are reported with the group that
                // assigns them (ids only): only the group can take them.
                let groups: String = case
                    .snapshot
                    .group_licenses
                    .iter()
                    .map(|(sku, group)| format!(";group-assigned={sku}:{group}"))
                    .collect();
                if direct.is_empty() && !case.snapshot.licenses.is_empty() {
                    return Ok(Acted::done(format!(
                        "removed={}{groups};resumed",
                        case.snapshot.licenses.len()
                    )));
                }
                if direct.is_empty() {
                    return Ok(Acted::found_done(format!("no-direct-licenses{groups}")));
                }
                // Only on positive evidence that no mail is lost: removing
                // the licenses of a user mailbox disconnects it.
                let mailbox = mailbox_of(graph, self.exchange, id).await?;
                if !mailbox.allows_license_removal() {
                    return Ok(Acted::waiting(mailbox.reason()));
                }
                graph.remove_licenses(id, &direct).await?;
                Ok(Acted::done(format!("removed={}{groups}", direct.len())))
            }
            (ActionKind::Delete, Some(_)) => {
                graph.delete_user(id).await?;
                Ok(Acted::done("soft-deleted"))
            }
            (ActionKind::ResetRedemption, Some(user)) => {
                if case
                    .step(kind)
                    .and_then(|s| s.started_at)
                    .is_some_and(|started| reset_landed(user, started))
                {
                    return Ok(Acted::done("redemption-reset;resumed"));
                }
                let Some(email) = user.mail.as_deref().filter(|m| m.contains('@')) else {
                    return Ok(Acted::waiting("no-invitation-address"));
                };
                // Object id, groups and app role assignments stay (FACTS).
                graph
                    .reset_redemption(
                        id,
                        email,
                        RESET_REDIRECT_URL,
                        self.config.policy.guests.send_invitation_message,
                    )
                    .await?;
                Ok(Acted::done("redemption-reset"))
            }
            // `blocked` let it through: the deletion is this step's own,
            // made before a crash hid the answer.
            (ActionKind::Delete, None) => Ok(Acted::done("soft-deleted;resumed")),
            (ActionKind::Purge, None) => match graph.deleted_item(id).await {
                Ok(_) => {
                    graph.purge_deleted(id).await?;
                    Ok(Acted::done("purged"))
                }
                Err(GraphError::NotFound) => Ok(Acted::found_done("already-purged")),
                Err(e) => Err(e.into()),
            },
            (other, _) => Err(LifecycleError::refused(
                "unsupported-kind",
                format!("`{}` is not a case step", other.as_str()),
            )),
        }
    }
}
