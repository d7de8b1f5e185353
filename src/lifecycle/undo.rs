//! Everything dormant does can be undone, from the case's snapshot: back
//! from deleted items, the removed licenses added back (each on its own, so
//! one without a free seat does not keep the others away), the mailbox a
//! user mailbox again, the account enabled again.
//!
//! Three callers: an operator's restore (`dormant restore`, `RestoreUser`,
//! a queued `restore`), dormant itself when a late sign-in shows the user
//! was active after all (`active-again`), and a step that landed after its
//! case was cancelled.

use super::case::{Case, CaseStatus, Place, StepState, UndoPlan};
use super::{ActionKind, Lifecycle, LifecycleError, graph_code};
use crate::graph::exchange::MailboxKind;
use crate::graph::{GraphError, User};
use crate::policy::{Hold, HoldKind};
use crate::store::audit::{AuditRecord, Outcome};

/// The reason of an operator's restore in its audit line.
pub const RESTORED_BY_OPERATOR: &str = "restored-by-operator";

/// What an undo did and could not do (short codes, ids only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undone {
    pub parts: Vec<String>,
    /// Parts Graph refused for good (`license:{skuId}:{code}`, …).
    pub failed: Vec<String>,
}

impl Undone {
    /// The audit line of the undo: `detail` = reason and what was done,
    /// `error` = what could not be.
    pub fn record(&self, mut record: AuditRecord, reason: &str) -> AuditRecord {
        let mut detail = vec![reason.to_owned()];
        if self.parts.is_empty() && self.failed.is_empty() {
            detail.push("nothing-to-undo".into());
        }
        detail.extend(self.parts.iter().cloned());
        record.detail = Some(detail.join(";"));
        if !self.failed.is_empty() {
            record.outcome = Outcome::Partial;
            record.error = Some(self.failed.join(";"));
        }
        record
    }
}

impl Lifecycle<'_> {
    /// Undoes `steps` of `case` (those that took effect). Idempotent: every
    /// part reads the directory first, so a repeat after a crash finds the
    /// parts done. A transient failure is an error (retry the whole undo); a
    /// refusal is recorded in [`Undone::failed`] and the rest goes on.
    pub(crate) async fn undo(
        &self,
        case: &Case,
        steps: &[ActionKind],
    ) -> Result<Undone, LifecycleError> {
        let graph = self.graph;
        let id = case.user.as_str();
        let mut out = Undone::default();
        let wants = |k: ActionKind| steps.contains(&k);
        if wants(ActionKind::Delete) {
            match graph.get_user(id, &["id"]).await {
                Ok(_) => {}
                Err(GraphError::NotFound) => match graph.restore_deleted(id).await {
                    Ok(()) => out.parts.push("undeleted".into()),
                    Err(e) if e.is_transient() => return Err(e.into()),
                    Err(e) => {
                        // Nothing else can be given back to a user who is
                        // not in the directory.
                        out.failed.push(format!("undelete:{}", graph_code(&e)));
                        return Ok(out);
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
        let current = match graph
            .get_user(id, &["id", "accountEnabled", "assignedLicenses"])
            .await
        {
            Ok(u) => u,
            Err(GraphError::NotFound) => {
                out.failed.push("user-not-in-directory".into());
                return Ok(out);
            }
            Err(e) => return Err(e.into()),
        };
        let converted = wants(ActionKind::ConvertMailbox) && case.snapshot.converted_mailbox;
        // Licenses first: a user mailbox needs one.
        if wants(ActionKind::RemoveLicenses) || converted {
            self.add_missing_licenses(case, &current, &mut out).await?;
        }
        if converted {
            match self.exchange {
                Some(ex) => match ex.mailbox_kind(id).await {
                    Ok(Some(MailboxKind::Shared)) => match ex.set_mailbox_type(id, false).await {
                        Ok(()) => out.parts.push("mailbox-regular".into()),
                        Err(e) if e.is_transient() => return Err(e.into()),
                        Err(e) => out.failed.push(format!("mailbox:{}", graph_code(&e))),
                    },
                    Ok(_) => {}
                    Err(e) if e.is_transient() => return Err(e.into()),
                    Err(e) => out.failed.push(format!("mailbox:{}", graph_code(&e))),
                },
                None => out.failed.push("mailbox:exchange-not-configured".into()),
            }
        }
        if wants(ActionKind::Disable)
            && case.snapshot.account_enabled == Some(true)
            && current.account_enabled == Some(false)
        {
            match graph.set_account_enabled(id, true).await {
                Ok(()) => out.parts.push("enabled".into()),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => out.failed.push(format!("enable:{}", graph_code(&e))),
            }
        }
        Ok(out)
    }

    async fn add_missing_licenses(
        &self,
        case: &Case,
        current: &User,
        out: &mut Undone,
    ) -> Result<(), LifecycleError> {
        let mut added = 0;
        for license in &case.snapshot.licenses {
            if current
                .assigned_licenses
                .iter()
                .any(|c| c.sku_id.eq_ignore_ascii_case(&license.sku_id))
            {
                continue;
            }
            // One SKU per call: Graph refuses a whole call for one SKU
            // without a free seat.
            match self
                .graph
                .add_licenses(&case.user, std::slice::from_ref(license))
                .await
            {
                Ok(()) => added += 1,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => out
                    .failed
                    .push(format!("license:{}:{}", license.sku_id, graph_code(&e))),
            }
        }
        if added > 0 {
            out.parts.push(format!("licenses-added={added}"));
        }
        Ok(())
    }

    /// Undoes the user's case: `case_id` names it (a queued `restore`),
    /// else the open case, else the newest archived case that did something.
    /// Any case that did something can be restored (cancelled ones too) for
    /// 30 days after its newest destructive step (Graph keeps deleted users
    /// 30 days). The user is then held (`restored`): no new case opens until
    /// it is active after the restore, or a person lifts the hold. Recorded
    /// as `restore`; a repeat finds it done.
    pub async fn restore(
        &self,
        user: &str,
        case_id: Option<&str>,
        run: &str,
    ) -> Result<StepReport, LifecycleError> {
        let cases = self.cases();
        for _ in 0..super::worker::MAX_ATTEMPTS {
            let (mut case, etag, place) = match self.case_to_restore(user, case_id).await? {
                Some(found) => found,
                None => {
                    return Err(LifecycleError::refused(
                        "no-case",
                        "dormant has no case for this user",
                    ));
                }
            };
            if let Some(state) = &case.restore {
                if state.recorded {
                    return Ok(StepReport::repeat("already-restored"));
                }
                if state.started_at.is_some() || state.record.is_some() {
                    // Decided before a crash: finish it.
                    let case = self.finish_final(case, place).await?;
                    return Ok(restore_report(case));
                }
            }
            if case.is_done(ActionKind::Purge) {
                return Err(LifecycleError::refused(
                    "purged",
                    "the user was purged; it cannot be restored",
                ));
            }
            let now = self.clock.now();
            let open = place == Place::Open && !case.status.is_final();
            if open && let Some(acting) = self.acting_step(&case) {
                return Err(LifecycleError::InProgress {
                    step: acting.as_str(),
                    retry_after: super::ending::INTENT_TTL,
                });
            }
            if open {
                // What a crash left half done is found out first.
                for kind in case.in_flight() {
                    self.resolve_in_flight(&mut case, kind).await?;
                }
            }
            let scope = case.done_destructive();
            if scope.is_empty() && !open {
                return Err(LifecycleError::refused(
                    "nothing-to-undo",
                    "the case changed nothing in the directory",
                ));
            }
            if !scope.is_empty() && scope.iter().all(|k| *k == ActionKind::ResetRedemption) {
                // Graph has no way back from a redemption reset; it kept
                // the object id, groups and app roles, and the guest
                // redeems again with its own identity.
                return Err(LifecycleError::refused(
                    "cannot-be-undone",
                    "a redemption reset has no undo: the guest keeps its object id, groups and app roles and redeems again",
                ));
            }
            if let Some(last) = case.last_destructive_at()
                && now - last > super::case::RESTORE_WINDOW
            {
                return Err(LifecycleError::refused(
                    "restore-window-passed",
                    "the case's last change was more than 30 days ago",
                ));
            }
            // The hold first: from now on no scan opens a case for the user.
            cases
                .hold(
                    &case.user,
                    Hold {
                        kind: HoldKind::Restored,
                        since: now,
                        until: None,
                    },
                )
                .await?;
            case.restore = Some(StepState {
                started_at: Some(now),
                ..StepState::default()
            });
            case.undo = Some(UndoPlan {
                steps: scope,
                reason: RESTORED_BY_OPERATOR.into(),
                run: run.to_owned(),
            });
            if open {
                case.reason = Some(RESTORED_BY_OPERATOR.into());
            }
            case.status = CaseStatus::Restored;
            case.updated_at = now;
            match cases.save_at(&case, &etag, place).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
            let case = self.finish_final(case, place).await?;
            return Ok(restore_report(case));
        }
        Err(LifecycleError::Contention(super::worker::MAX_ATTEMPTS))
    }

    /// A person lifts the hold on `user` (recorded as `lift-hold`).
    /// Returns whether there was one.
    pub async fn lift_hold(&self, user: &str) -> Result<bool, LifecycleError> {
        let cases = self.cases();
        if cases.hold_of(user).await?.is_none() {
            return Ok(false);
        }
        // The line first: a hold lifted without its line would be a
        // decision nobody can trace (a retry after a failed delete writes
        // the line again, which loses nothing).
        let mut record = AuditRecord::new("lift-hold", Outcome::Done);
        record.time = self.clock.now();
        record.user = Some(user.to_ascii_lowercase());
        self.audit.record(&record).await?;
        cases.lift_hold(user).await?;
        Ok(true)
    }

    async fn case_to_restore(
        &self,
        user: &str,
        case_id: Option<&str>,
    ) -> Result<Option<(Case, crate::store::ETag, Place)>, LifecycleError> {
        let cases = self.cases();
        if let Some(id) = case_id {
            return Ok(cases.find(user, id).await?);
        }
        if let Some((case, etag)) = cases.open_case(user).await? {
            return Ok(Some((case, etag, Place::Open)));
        }
        let closed = cases.closed_cases(user).await?;
        // The newest case that did something (or whose restore is under
        // way), else the newest at all (to answer "nothing to undo").
        let pick = closed
            .iter()
            .position(|(c, _)| !c.done_destructive().is_empty() || c.restore.is_some())
            .or(if closed.is_empty() { None } else { Some(0) });
        Ok(pick.map(|i| {
            let (c, e) = closed[i].clone();
            (c, e, Place::Closed)
        }))
    }
}

pub use super::worker::StepReport;

/// What a finished restore answers: its record, or `repeat` when another
/// delivery recorded it first.
fn restore_report(case: Case) -> StepReport {
    case.restore
        .and_then(|s| s.record)
        .map(|r| StepReport::from_record(&r))
        .unwrap_or_else(|| StepReport::repeat("already-restored"))
}
