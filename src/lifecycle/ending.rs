//! How a case ends, and how whatever a crash or a race left half done is
//! finished, so that there is never an action without its audit line and
//! never an archived case that hides one.
//!
//! - A step writes its intent (`started_at`) and a lease (`acting_until`)
//!   into the case before it acts, and its record after.
//! - An end (a cancellation, the close) decided while a step holds its
//!   lease is not carried out under it: it waits in the case
//!   (`pending_end`) and the acting worker carries it out once its step is
//!   recorded. A step that landed after the decision is then undone.
//! - An intent without a record and without a lease (its worker died) is
//!   resolved by looking: did the action land? It is then recorded as done
//!   (`…;resumed`) or forgotten.
//! - Every record is written into the case before it is appended to the
//!   log, and the log is checked before a second append: a crash between
//!   the two is finished by whoever finds the case next.

use chrono::{DateTime, Duration, Utc};

use super::case::{Case, CaseStatus, PendingEnd, Place, StepState, UndoPlan};
use super::recheck::CancelReason;
use super::{ActionKind, Lifecycle, LifecycleError};
use crate::graph::GraphError;
use crate::graph::exchange::MailboxKind;
use crate::policy::{Hold, HoldKind};
use crate::store::ETag;
use crate::store::audit::{AuditRecord, Outcome};

/// How long a step's lease lasts: longer than a step can take (a few Graph
/// calls, each retried for at most 3 minutes) and than an invocation lives
/// (10 minutes on Consumption).
pub const INTENT_TTL: Duration = Duration::minutes(15);

/// A step that landed after its case ended is undone with this reason.
pub const CANCELLED_DURING_STEP: &str = "cancelled-during-step";

/// How an end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Ended (and archived).
    Ended,
    /// A step holds its lease: the end waits in the case for its worker.
    Deferred,
    /// Someone else changed the case first: read it again.
    Conflict,
}

impl Lifecycle<'_> {
    /// A step whose worker holds its lease now.
    pub(crate) fn acting_step(&self, case: &Case) -> Option<ActionKind> {
        let now = self.clock.now();
        case.steps
            .iter()
            .find(|(_, s)| s.in_flight() && s.acting_until.is_some_and(|until| until > now))
            .map(|(k, _)| *k)
    }

    /// Appends `record` unless the log already holds it (a crash between
    /// appending and marking it recorded), the subject's index included.
    pub(crate) async fn ensure_recorded(&self, record: &AuditRecord) -> Result<(), LifecycleError> {
        Ok(self.audit.ensure_recorded(record).await?)
    }

    /// Whether the action of the in-flight step `kind` landed, by looking
    /// at the directory. A notification cannot be looked at: it counts as
    /// sent (mail is at-least-once; the webhook carries an idempotency key).
    async fn landed(&self, case: &Case, kind: ActionKind) -> Result<bool, LifecycleError> {
        let graph = self.graph;
        let id = case.user.as_str();
        let user = match graph
            .get_user(id, &["id", "accountEnabled", "assignedLicenses"])
            .await
        {
            Ok(u) => Some(u),
            Err(GraphError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let in_deleted_items = || async {
            match graph.deleted_item(id).await {
                Ok(_) => Ok(true),
                Err(GraphError::NotFound) => Ok(false),
                Err(e) => Err(LifecycleError::from(e)),
            }
        };
        Ok(match kind {
            ActionKind::Notify => true,
            ActionKind::Disable => user.is_some_and(|u| u.account_enabled == Some(false)),
            ActionKind::ConvertMailbox => match (self.exchange, &user) {
                (Some(ex), Some(_)) => ex.mailbox_kind(id).await? == Some(MailboxKind::Shared),
                _ => false,
            },
            ActionKind::RemoveLicenses => user.is_some_and(|u| {
                !case.snapshot.licenses.is_empty()
                    && case.snapshot.licenses.iter().all(|l| {
                        !u.assigned_licenses
                            .iter()
                            .any(|a| a.sku_id.eq_ignore_ascii_case(&l.sku_id))
                    })
            }),
            ActionKind::Delete => user.is_none() && in_deleted_items().await?,
            ActionKind::Purge => user.is_none() && !in_deleted_items().await?,
            _ => false,
        })
    }

    /// Resolves the in-flight step `kind` of `case` (in memory): a record
    /// if it landed, else the intent is forgotten. The caller saves the
    /// case and appends the record.
    pub(crate) async fn resolve_in_flight(
        &self,
        case: &mut Case,
        kind: ActionKind,
    ) -> Result<(), LifecycleError> {
        let landed = self.landed(case, kind).await?;
        let now = self.clock.now();
        let run = case
            .step(kind)
            .and_then(|s| s.enqueued_by.as_ref())
            .map(|r| r.to_string())
            .unwrap_or_default();
        let mut record = self.record(case, &run, kind.as_str(), Outcome::Done);
        let state = case.steps.entry(kind).or_default();
        state.acting_until = None;
        state.acting_message = None;
        if landed {
            record.detail = Some(match kind {
                ActionKind::Notify => "unconfirmed;resumed".to_owned(),
                _ => "resumed".to_owned(),
            });
            state.done_at = Some(now);
            state.record = Some(record);
            state.recorded = false;
            if kind == ActionKind::Delete {
                case.snapshot.deleted_at.get_or_insert(now);
            }
        } else {
            state.started_at = None;
        }
        Ok(())
    }

    /// Ends `case` as `status` with one audit line (step `step`), then
    /// archives it. A cancellation because the user was active again first
    /// undoes what dormant did (late sign-ins: `signInActivity` lags up to
    /// a day). A re-enable by someone else holds the user.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn end_case(
        &self,
        mut case: Case,
        etag: &ETag,
        status: CaseStatus,
        step: &str,
        reason: Option<&str>,
        run: &str,
    ) -> Result<Ended, LifecycleError> {
        let now = self.clock.now();
        // A keep holds the user from the answer on, whoever ends the case
        // and whenever (the hold first: no scan opens a new case meanwhile).
        if reason == Some(CancelReason::Kept.code())
            && let Some(answer) = &case.attestation
        {
            self.cases()
                .hold(
                    &case.user,
                    Hold::kept(answer.at, self.config.policy.attest.keep_days),
                )
                .await?;
        }
        if self.acting_step(&case).is_some() {
            case.pending_end = Some(PendingEnd {
                status,
                reason: reason.map(str::to_owned),
                step: step.to_owned(),
                run: run.to_owned(),
                decided_at: now,
            });
            case.updated_at = now;
            return Ok(match self.cases().save(&case, etag).await {
                Ok(_) => Ended::Deferred,
                Err(e) if e.is_conflict() => Ended::Conflict,
                Err(e) => return Err(e.into()),
            });
        }
        for kind in case.in_flight() {
            self.resolve_in_flight(&mut case, kind).await?;
        }
        // What to give back: everything, if the user was active all along;
        // else what landed after the end was decided (a step racing it).
        let decided = case
            .pending_end
            .as_ref()
            .map(|p| p.decided_at)
            .unwrap_or(now);
        let active_again = reason == Some(CancelReason::ActiveAgain.code());
        let undo: Vec<ActionKind> = if active_again && status == CaseStatus::Cancelled {
            case.done_destructive()
        } else if status == CaseStatus::Cancelled {
            landed_after(&case, decided)
        } else {
            Vec::new()
        };
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
        case.pending_end = None;
        case.closing = Some(StepState {
            record: Some(record),
            ..StepState::default()
        });
        if !undo.is_empty() {
            case.status = CaseStatus::Restored;
            case.restore = Some(StepState {
                started_at: Some(now),
                ..StepState::default()
            });
            case.undo = Some(UndoPlan {
                steps: undo,
                reason: if active_again {
                    CancelReason::ActiveAgain.code().to_owned()
                } else {
                    CANCELLED_DURING_STEP.to_owned()
                },
                run: run.to_owned(),
            });
        }
        match self.cases().save(&case, etag).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => return Ok(Ended::Conflict),
            Err(e) => return Err(e.into()),
        }
        if reason == Some(CancelReason::ReEnabled.code()) {
            self.cases()
                .hold(
                    &case.user,
                    Hold {
                        kind: HoldKind::ReEnabled,
                        since: now,
                        until: None,
                    },
                )
                .await?;
        }
        self.finish_final(case, Place::Open).await?;
        Ok(Ended::Ended)
    }

    /// Carries out the end a step's worker found waiting in its case once
    /// the step is recorded.
    pub(crate) async fn carry_out_pending_end(
        &self,
        case: Case,
        etag: &ETag,
    ) -> Result<Ended, LifecycleError> {
        let Some(end) = case.pending_end.clone() else {
            return Ok(Ended::Ended);
        };
        self.end_case(
            case,
            etag,
            end.status,
            &end.step,
            end.reason.as_deref(),
            &end.run,
        )
        .await
    }

    /// Finishes a final case, wherever it is: in-flight steps resolved, every
    /// record in the log, a decided undo carried out and recorded, then the
    /// archive. Each stage is idempotent, so a crash anywhere is finished by
    /// the next caller. Returns the case as archived.
    pub(crate) async fn finish_final(
        &self,
        mut case: Case,
        place: Place,
    ) -> Result<Case, LifecycleError> {
        let cases = self.cases();
        let mut changed = false;
        if self.acting_step(&case).is_none() {
            for kind in case.in_flight() {
                self.resolve_in_flight(&mut case, kind).await?;
                changed = true;
            }
        }
        if let Some(restore) = &case.restore
            && restore.record.is_none()
            && restore.started_at.is_some()
        {
            let plan = case.undo.clone().unwrap_or(UndoPlan {
                steps: case.done_destructive(),
                reason: String::new(),
                run: String::new(),
            });
            let undone = self.undo(&case, &plan.steps).await?;
            let base = self.record(
                &case,
                &plan.run,
                ActionKind::Restore.as_str(),
                Outcome::Done,
            );
            let record = undone.record(base, &plan.reason);
            case.restore = Some(StepState {
                done_at: Some(record.time),
                record: Some(record),
                ..StepState::default()
            });
            changed = true;
        }
        if changed {
            // Written before it is appended, like every record.
            self.save_final(&case, place).await?;
        }
        for state in case
            .steps
            .values_mut()
            .chain(case.closing.as_mut())
            .chain(case.restore.as_mut())
        {
            if let (false, Some(record)) = (state.recorded, &state.record) {
                self.ensure_recorded(record).await?;
                state.recorded = true;
            }
        }
        if let Some(answer) = case.attestation.as_mut().filter(|a| !a.recorded) {
            self.ensure_recorded(&answer.record).await?;
            answer.recorded = true;
        }
        cases.archive_final(&case).await?;
        Ok(case)
    }

    /// Writes a final case where it lives, whatever its version (the final
    /// state only grows: records are added, never taken away).
    async fn save_final(&self, case: &Case, place: Place) -> Result<(), LifecycleError> {
        let cases = self.cases();
        match place {
            Place::Open => match cases.open_case(&case.user).await? {
                Some((current, etag)) if current.id == case.id => {
                    cases.save(case, &etag).await?;
                }
                _ => cases.archive_final(case).await?,
            },
            Place::Closed => cases.archive_final(case).await?,
        }
        Ok(())
    }
}

/// Steps that took effect after `at` (a step racing an end decided at `at`).
fn landed_after(case: &Case, at: DateTime<Utc>) -> Vec<ActionKind> {
    case.done_destructive()
        .into_iter()
        .filter(|k| {
            case.step(*k)
                .and_then(|s| s.done_at)
                .is_some_and(|d| d > at)
        })
        .collect()
}
