//! One step of one case, exactly once in effect.
//!
//! The protocol, for a message `{kind, user, case}`:
//! 1. read the user's open case; a message for another (older) case, a
//!    final case, or a step already recorded is a repeat: nothing happens
//!    and nothing more is written;
//! 2. a step that acted but whose audit line may be missing (a crash after
//!    acting) is finished: the line is appended unless the day's log
//!    already holds it;
//! 3. otherwise re-check the user (cancel instead of acting when the case no
//!    longer holds), snapshot what the step removes into the case, act — each
//!    action first reads the directory's current state, so acting again
//!    after a crash finds the work done instead of doing it twice — then
//!    write the step's audit line into the case, append it to the log, and
//!    mark it recorded.
//!
//! Every case write is `IfMatch`: of two deliveries racing, one records;
//! the other re-reads and finds the step recorded.

use serde::Serialize;

use super::case::{Case, CaseStatus, CaseStore, RESTORE_WINDOW, StepState};
use super::recheck::{CancelReason, Recheck, recheck};
use super::{ActionKind, ActionMessage, Lifecycle, LifecycleError, graph_code, notify};
use crate::graph::exchange::MailboxKind;
use crate::graph::{GraphError, User};
use crate::store::audit::{AuditRecord, Outcome};

/// Re-reads after losing an ETag race before giving the message back.
const MAX_ATTEMPTS: u32 = 8;

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// `done`, `skipped`, `cancelled`, `waiting`, `failed`, `repeat`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StepReport {
    fn repeat(detail: &str) -> Self {
        Self {
            outcome: "repeat",
            detail: Some(detail.to_owned()),
        }
    }

    fn from_record(record: &AuditRecord) -> Self {
        Self {
            outcome: match record.outcome {
                Outcome::Done => "done",
                Outcome::Skipped => "skipped",
                Outcome::Cancelled => "cancelled",
                Outcome::Accepted => "accepted",
                Outcome::Failed => "failed",
            },
            detail: record.detail.clone(),
        }
    }
}

/// What an action did.
struct Acted {
    outcome: Outcome,
    detail: String,
    /// The step cannot run without a person (mailbox conversion not
    /// configured): the case waits and the step stays undone.
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
}

impl Lifecycle<'_> {
    fn cases(&self) -> CaseStore {
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

    /// Appends `record` unless the log already holds it (a crash between
    /// appending and marking it recorded).
    pub(crate) async fn ensure_recorded(&self, record: &AuditRecord) -> Result<(), LifecycleError> {
        let day = self.audit.read_day(record.time.date_naive()).await?;
        if !day.iter().any(|r| r == record) {
            self.audit.record(record).await?;
        }
        Ok(())
    }

    /// Finishes a final case left in `open/` by a crash: its last record,
    /// then the archive.
    pub(crate) async fn finish_final(&self, mut case: Case) -> Result<(), LifecycleError> {
        if let Some(closing) = case.closing.as_mut()
            && !closing.recorded
            && let Some(record) = &closing.record
        {
            self.ensure_recorded(record).await?;
            closing.recorded = true;
        }
        for state in case.steps.values_mut() {
            if let (false, Some(record)) = (state.recorded, &state.record) {
                self.ensure_recorded(record).await?;
                state.recorded = true;
            }
        }
        self.cases().archive_final(&case).await?;
        Ok(())
    }

    /// Ends `case` as `status` with one audit line (step `step`), then
    /// archives it. Used for cancellations and for the close after the last
    /// step.
    pub(crate) async fn end_case(
        &self,
        mut case: Case,
        etag: &crate::store::ETag,
        status: CaseStatus,
        step: &str,
        reason: Option<&str>,
        run: &str,
    ) -> Result<bool, LifecycleError> {
        let outcome = if status == CaseStatus::Cancelled {
            Outcome::Cancelled
        } else {
            Outcome::Done
        };
        let mut record = self.record(&case, run, step, outcome);
        record.detail = reason.map(str::to_owned);
        case.status = status;
        case.reason = reason.map(str::to_owned);
        case.updated_at = record.time;
        case.closing = Some(StepState {
            record: Some(record),
            ..StepState::default()
        });
        let cases = self.cases();
        match cases.save(&case, etag).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if reason == Some(CancelReason::ReEnabled.code()) {
            let days = i64::from(self.config.policy.inactive_after_days);
            cases
                .hold(&case.user, case.updated_at + chrono::Duration::days(days))
                .await?;
        }
        self.finish_final(case).await?;
        Ok(true)
    }

    /// Runs the step named by `message`.
    pub async fn run_step(&self, message: &ActionMessage) -> Result<StepReport, LifecycleError> {
        let kind = message.kind;
        let cases = self.cases();
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut case, etag)) = cases.open_case(message.user.as_str()).await? else {
                return Ok(StepReport::repeat("no-open-case"));
            };
            if case.id != message.case {
                return Ok(StepReport::repeat("stale-case"));
            }
            if case.status.is_final() {
                self.finish_final(case).await?;
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
            if let Some(record) = &state.record {
                // Acted and wrote the line into the case; the log may lack it.
                self.ensure_recorded(record).await?;
                let report = StepReport::from_record(record);
                case.steps.entry(kind).or_default().recorded = true;
                match cases.save(&case, &etag).await {
                    Ok(_) => return Ok(report),
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
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
            let now = self.clock.now();
            if case.due_at(kind).is_some_and(|due| due > now) {
                return Err(LifecycleError::refused(
                    "not-due",
                    format!("`{}` is not due yet", kind.as_str()),
                ));
            }

            let (user, mut cancel) =
                match recheck(self.graph, self.config, &case, None, now).await? {
                    Recheck::Holds(user) => (Some(*user), None),
                    Recheck::Absent => (None, None),
                    Recheck::Cancel(reason) => (None, Some(reason)),
                };
            // Who is where now: a user back in the directory before the
            // purge was restored by someone; a user gone before the delete
            // (and not in deleted items) was removed by someone else.
            if cancel.is_none() {
                cancel = match (kind, &user) {
                    (ActionKind::Purge, Some(_)) => Some(CancelReason::RestoredByPerson),
                    (ActionKind::Delete, None) if case.snapshot.deleted_at.is_none() => {
                        match self.graph.deleted_item(&case.user).await {
                            Ok(_) => None,
                            Err(GraphError::NotFound) => Some(CancelReason::UserGone),
                            Err(e) => return Err(e.into()),
                        }
                    }
                    (ActionKind::Delete | ActionKind::Purge, _) => None,
                    (_, None) => Some(CancelReason::UserGone),
                    (_, Some(_)) => None,
                };
            }
            if let Some(reason) = cancel {
                if self
                    .end_case(
                        case,
                        &etag,
                        CaseStatus::Cancelled,
                        kind.as_str(),
                        Some(reason.code()),
                        message.run.as_str(),
                    )
                    .await?
                {
                    return Ok(StepReport {
                        outcome: "cancelled",
                        detail: Some(reason.code().to_owned()),
                    });
                }
                continue;
            }

            // Snapshot what the step removes, before it acts.
            let mut etag = etag;
            if let Some(user) = &user
                && self.snapshot(&mut case, kind, user).await?
            {
                case.updated_at = now;
                match cases.save(&case, &etag).await {
                    Ok(e) => etag = e,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if kind == ActionKind::Delete && case.snapshot.deleted_at.is_none() {
                case.snapshot.deleted_at = Some(now);
                match cases.save(&case, &etag).await {
                    Ok(e) => etag = e,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            }

            let acted = match self.act(&case, kind, user.as_ref()).await {
                Ok(a) => a,
                Err(LifecycleError::Graph(e)) if !e.is_transient() => {
                    return self.record_failure(&case, message, &graph_code(&e)).await;
                }
                Err(e) => return Err(e),
            };

            let mut record = self.record(&case, message.run.as_str(), kind.as_str(), acted.outcome);
            record.detail = Some(acted.detail.clone());
            let entry = case.steps.entry(kind).or_default();
            entry.record = Some(record.clone());
            if acted.waiting {
                case.status = CaseStatus::Waiting;
                case.reason = Some(acted.detail.clone());
            } else {
                entry.done_at = Some(record.time);
            }
            case.updated_at = record.time;
            let etag = match cases.save(&case, &etag).await {
                Ok(e) => e,
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            };
            self.audit.record(&record).await?;
            case.steps.entry(kind).or_default().recorded = true;
            let report = if acted.waiting {
                StepReport {
                    outcome: "waiting",
                    detail: Some(acted.detail),
                }
            } else {
                StepReport::from_record(&record)
            };
            if case.next_step().is_none() {
                self.end_case(
                    case,
                    &etag,
                    CaseStatus::Closed,
                    "close",
                    None,
                    message.run.as_str(),
                )
                .await?;
            } else if let Err(e) = cases.save(&case, &etag).await
                && !e.is_conflict()
            {
                // The line is in the log; a later delivery finds it there.
                return Err(e.into());
            }
            tracing::info!(kind = kind.as_str(), case = %message.case, outcome = report.outcome, "step recorded");
            return Ok(report);
        }
        Err(LifecycleError::Contention(MAX_ATTEMPTS))
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

    /// Records into the case what `kind` is about to remove. Returns
    /// whether the snapshot changed (and the case must be saved first).
    async fn snapshot(
        &self,
        case: &mut Case,
        kind: ActionKind,
        user: &User,
    ) -> Result<bool, LifecycleError> {
        let snap = &mut case.snapshot;
        Ok(match kind {
            ActionKind::Disable if snap.account_enabled.is_none() => {
                snap.account_enabled = Some(user.account_enabled.unwrap_or(true));
                true
            }
            ActionKind::ConvertMailbox if !snap.converted_mailbox => match self.exchange {
                Some(ex) if ex.mailbox_kind(&user.id).await? == Some(MailboxKind::User) => {
                    snap.converted_mailbox = true;
                    true
                }
                _ => false,
            },
            ActionKind::RemoveLicenses => {
                let mut changed = false;
                for l in &user.assigned_licenses {
                    // One state per source: a SKU can be both direct and
                    // inherited from a group.
                    let states: Vec<_> = user
                        .license_assignment_states
                        .iter()
                        .filter(|s| s.sku_id.as_deref() == Some(l.sku_id.as_str()))
                        .collect();
                    for group in states.iter().filter_map(|s| s.assigned_by_group.clone()) {
                        changed |= snap
                            .group_licenses
                            .insert(l.sku_id.clone(), group)
                            .is_none();
                    }
                    let direct =
                        states.is_empty() || states.iter().any(|s| s.assigned_by_group.is_none());
                    if direct && !snap.licenses.iter().any(|s| s.sku_id == l.sku_id) {
                        snap.licenses.push(l.clone());
                        changed = true;
                    }
                }
                changed
            }
            _ => false,
        })
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
                let detail = notify::notify(graph, self.http, self.config, case, user).await?;
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
                    return Ok(Acted {
                        outcome: Outcome::Skipped,
                        detail: "mailbox-conversion-not-configured".into(),
                        waiting: true,
                    });
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
                graph.remove_licenses(id, &direct).await?;
                Ok(Acted::done(format!("removed={}{groups}", direct.len())))
            }
            (ActionKind::Delete, Some(_)) => {
                graph.delete_user(id).await?;
                Ok(Acted::done("soft-deleted"))
            }
            (ActionKind::Delete, None) => match graph.deleted_item(id).await {
                // `deletedAt` is set before the delete is sent.
                Ok(_) if case.snapshot.deleted_at.is_some() => {
                    Ok(Acted::done("soft-deleted;resumed"))
                }
                Ok(_) => Ok(Acted::found_done("already-deleted")),
                // Deleted by this step and then purged by someone else.
                Err(GraphError::NotFound) => Ok(Acted::found_done("gone-from-deleted-items")),
                Err(e) => Err(e.into()),
            },
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

    /// Undoes the user's newest case (open, or closed within the restore
    /// window): back from deleted items, enabled again if it was, the
    /// removed licenses added back, the mailbox a user mailbox again.
    /// Recorded like any step (`restore`); a repeat finds it done.
    pub async fn restore(&self, user: &str, run: &str) -> Result<StepReport, LifecycleError> {
        let cases = self.cases();
        for _ in 0..MAX_ATTEMPTS {
            let (mut case, etag, open) = match cases.open_case(user).await? {
                Some((c, e)) => (c, e, true),
                None => match cases.latest_closed(user).await? {
                    Some((c, e)) => (c, e, false),
                    None => {
                        return Err(LifecycleError::refused(
                            "no-case",
                            "dormant has no case for this user",
                        ));
                    }
                },
            };
            if let Some(state) = &case.restore {
                if state.recorded {
                    return Ok(StepReport::repeat("already-restored"));
                }
                if let Some(record) = &state.record {
                    self.ensure_recorded(record).await?;
                    let report = StepReport::from_record(record);
                    case.restore.get_or_insert_default().recorded = true;
                    self.save_any(&case, &etag, open).await?;
                    if open {
                        cases.archive_final(&case).await?;
                    }
                    return Ok(report);
                }
            }
            if case.status == CaseStatus::Cancelled {
                return Err(LifecycleError::refused(
                    "case-cancelled",
                    "the case was cancelled; there is nothing to undo",
                ));
            }
            if case.is_done(ActionKind::Purge) {
                return Err(LifecycleError::refused(
                    "purged",
                    "the user was purged; it cannot be restored",
                ));
            }
            let now = self.clock.now();
            if let Some(deleted) = case.snapshot.deleted_at
                && now - deleted > RESTORE_WINDOW
            {
                return Err(LifecycleError::refused(
                    "restore-window-passed",
                    "the user was deleted more than 30 days ago",
                ));
            }

            let mut undone = Vec::new();
            // Back from deleted items (it may already be back after a crash).
            if case.snapshot.deleted_at.is_some() {
                match self.graph.get_user(&case.user, &["id"]).await {
                    Ok(_) => {}
                    Err(GraphError::NotFound) => {
                        self.graph.restore_deleted(&case.user).await?;
                        undone.push("undeleted");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let current = self
                .graph
                .get_user(&case.user, &["id", "accountEnabled", "assignedLicenses"])
                .await?;
            if case.snapshot.converted_mailbox
                && let Some(ex) = self.exchange
                && ex.mailbox_kind(&case.user).await? == Some(MailboxKind::Shared)
            {
                // Licenses first: a user mailbox needs one.
                self.add_missing_licenses(&case, &current, &mut undone)
                    .await?;
                ex.set_mailbox_type(&case.user, false).await?;
                undone.push("mailbox-regular");
            } else {
                self.add_missing_licenses(&case, &current, &mut undone)
                    .await?;
            }
            if case.snapshot.account_enabled == Some(true) && current.account_enabled == Some(false)
            {
                self.graph.set_account_enabled(&case.user, true).await?;
                undone.push("enabled");
            }
            if undone.is_empty() {
                undone.push("nothing-to-undo");
            }

            let mut record = self.record(&case, run, ActionKind::Restore.as_str(), Outcome::Done);
            record.detail = Some(undone.join(";"));
            case.restore = Some(StepState {
                done_at: Some(record.time),
                record: Some(record.clone()),
                ..StepState::default()
            });
            case.status = CaseStatus::Restored;
            case.updated_at = record.time;
            let etag = match self.save_any(&case, &etag, open).await {
                Ok(e) => e,
                Err(LifecycleError::Store(e)) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            };
            self.audit.record(&record).await?;
            case.restore.get_or_insert_default().recorded = true;
            self.save_any(&case, &etag, open).await?;
            if open {
                cases.archive_final(&case).await?;
            }
            return Ok(StepReport::from_record(&record));
        }
        Err(LifecycleError::Contention(MAX_ATTEMPTS))
    }

    async fn add_missing_licenses(
        &self,
        case: &Case,
        current: &User,
        undone: &mut Vec<&'static str>,
    ) -> Result<(), LifecycleError> {
        let missing: Vec<_> = case
            .snapshot
            .licenses
            .iter()
            .filter(|l| {
                !current
                    .assigned_licenses
                    .iter()
                    .any(|c| c.sku_id == l.sku_id)
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.graph.add_licenses(&case.user, &missing).await?;
            undone.push("licenses-added");
        }
        Ok(())
    }

    async fn save_any(
        &self,
        case: &Case,
        etag: &crate::store::ETag,
        open: bool,
    ) -> Result<crate::store::ETag, LifecycleError> {
        let cases = self.cases();
        Ok(if open {
            cases.save(case, etag).await?
        } else {
            cases.save_closed(case, etag).await?
        })
    }
}
