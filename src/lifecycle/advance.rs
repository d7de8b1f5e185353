//! What a nightly scan does to cases, in enforce mode and outside
//! quarantine: open a case for each newly inactive user, stop the cases
//! that no longer hold, enqueue every step that is due, close finished
//! cases, and finish whatever a crash left half-recorded.
//!
//! The scan's verdict is the authority for users it found inactive. A user
//! with an open case whom the scan did not list (it became active, was
//! excluded, is held for review, or dormant's own conversion made the
//! mailbox shared) is re-checked with dormant's own effects taken out
//! (`recheck`), with the run's usage report.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::case::{Case, CaseStatus, CaseStore, Place};
use super::ending::Ended;
use super::recheck::{CancelReason, Recheck, mailbox_of, recheck};
use super::{ActionKind, ActionMessage, Lifecycle, LifecycleError};
use crate::config::TenantKind;
use crate::graph::GraphError;
use crate::ids::{ObjectId, RunId};
use crate::policy::phases::plan;
use crate::policy::{CaseSubject, Hold, PlanShape, UsageIndex};
use crate::store::audit::Outcome;
use crate::store::{ACTIONS_QUEUE, SendOptions};

/// A user a case may open for, with what shapes the plan (ids only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub user: String,
    pub never_signed_in: bool,
    pub has_user_mailbox: bool,
    pub has_direct_licenses: bool,
    /// `accountEnabled` as the scan read it.
    #[serde(default = "enabled_by_default")]
    pub account_enabled: bool,
    /// The newest trustworthy activity the scan found: a hold ends with
    /// activity newer than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<DateTime<Utc>>,
    /// A member, a guest, a pending invitation, an unmanaged guest to reset.
    #[serde(default)]
    pub subject: CaseSubject,
}

fn enabled_by_default() -> bool {
    true
}

impl Candidate {
    pub fn shape(&self, kind: TenantKind) -> PlanShape {
        PlanShape {
            kind,
            subject: self.subject,
            has_user_mailbox: self.has_user_mailbox,
            has_direct_licenses: self.has_direct_licenses,
        }
    }
}

/// A queued step not done after this long is queued again (its message
/// may have gone to the poison queue); repeats are harmless.
const REENQUEUE_AFTER: Duration = Duration::hours(23);
/// Cases advanced at once.
const CONCURRENCY: usize = 8;

/// What a run decides on before anything is written: who has an open case,
/// who is held, and (counted leaf by leaf) how many cases the run would
/// open, which the quarantine limits. Candidates themselves are not held:
/// the run reads them again, a partition at a time, when it advances.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    open_users: BTreeSet<String>,
    holds: BTreeMap<String, Hold>,
    /// When the plan was loaded: a keep that ended by then holds nobody.
    at: DateTime<Utc>,
    pub new_cases: u64,
}

impl Plan {
    /// Open cases and holds as the store has them now (a hold placed while
    /// the run scanned counts too).
    pub async fn load(cases: &CaseStore, now: DateTime<Utc>) -> Result<Plan, LifecycleError> {
        Ok(Plan {
            open_users: cases.open_users().await?.into_iter().collect(),
            holds: cases.holds().await?,
            at: now,
            new_cases: 0,
        })
    }

    /// A hold on the user that neither activity newer than it nor its own
    /// end (a keep's) has ended.
    fn is_held(&self, c: &Candidate) -> bool {
        self.holds
            .get(&c.user.to_ascii_lowercase())
            .is_some_and(|h| h.in_force(c.last_activity, self.at))
    }

    /// Whether the run would open a case for `c`.
    fn is_new(&self, c: &Candidate) -> bool {
        !self.open_users.contains(&c.user.to_ascii_lowercase()) && !self.is_held(c)
    }

    /// Counts the new cases among one partition's candidates.
    pub fn count(&mut self, candidates: &[Candidate]) {
        self.new_cases += candidates.iter().filter(|c| self.is_new(c)).count() as u64;
    }
}

/// What a run did to cases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    pub opened: u64,
    pub cancelled: u64,
    pub closed: u64,
    pub enqueued: u64,
    pub waiting: u64,
    /// Cases that could not be advanced this run (Graph refused a re-check);
    /// they are tried again by the next run.
    pub failed: u64,
}

impl Advanced {
    pub fn add(&mut self, other: &Advanced) {
        self.opened += other.opened;
        self.cancelled += other.cancelled;
        self.closed += other.closed;
        self.enqueued += other.enqueued;
        self.waiting += other.waiting;
        self.failed += other.failed;
    }
}

/// Users with an open case that a run listed as candidates: the rest are
/// re-checked by [`Lifecycle::advance_unlisted`].
#[derive(Debug, Default)]
pub struct Listed(BTreeSet<String>);

impl Lifecycle<'_> {
    /// Applies `plan` to one partition's candidates: opens their new cases
    /// and advances their open ones. Call it for every partition, then
    /// [`advance_unlisted`](Self::advance_unlisted) once.
    pub async fn advance_listed(
        &self,
        run: &RunId,
        plan: &Plan,
        candidates: Vec<Candidate>,
        listed: &mut Listed,
    ) -> Result<Advanced, LifecycleError> {
        let (mut open, mut new) = (Vec::new(), Vec::new());
        for c in candidates {
            let user = c.user.to_ascii_lowercase();
            if plan.open_users.contains(&user) {
                listed.0.insert(user.clone());
                open.push((user, c));
            } else if !plan.is_held(&c) {
                new.push(c);
            }
        }
        // Owned items: a closure over borrowed ones would not be `Send`
        // for every lifetime, which the Functions handler needs.
        let mut total = Advanced::default();
        let results: Vec<Advanced> = futures::stream::iter(open)
            .map(|(user, c)| async move { self.advance_open(run, &user, Some(&c), None).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        results.iter().for_each(|r| total.add(r));
        let results: Vec<Advanced> = futures::stream::iter(new)
            .map(|c| async move { self.open_case(run, &c).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        results.iter().for_each(|r| total.add(r));
        Ok(total)
    }

    /// Advances the open cases whose users no run partition listed (of
    /// those in `only`, lower-case ids, when given: a run that paged only
    /// some users): each is re-checked against Graph (with `usage`)
    /// before it goes on.
    pub async fn advance_unlisted(
        &self,
        run: &RunId,
        plan: &Plan,
        listed: &Listed,
        only: Option<&BTreeSet<String>>,
        usage: Option<&UsageIndex>,
    ) -> Result<Advanced, LifecycleError> {
        let mut total = Advanced::default();
        let unlisted: Vec<String> = plan
            .open_users
            .difference(&listed.0)
            .filter(|u| only.is_none_or(|only| only.contains(*u)))
            .cloned()
            .collect();
        let results: Vec<Advanced> = futures::stream::iter(unlisted)
            .map(|user| async move { self.advance_open(run, &user, None, usage).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        results.iter().for_each(|r| total.add(r));
        Ok(total)
    }

    async fn open_case(&self, run: &RunId, c: &Candidate) -> Result<Advanced, LifecycleError> {
        let now = self.clock.now();
        let steps = plan(c.shape(self.config.tenant_kind), &self.config.policy.phases);
        let case = Case::open(&c.user, run, &steps, c.account_enabled, now);
        let cases = CaseStore::new(self.store.clone());
        let Some(etag) = cases.create(&case).await? else {
            // Opened a moment ago by someone else: the next run advances it.
            return Ok(Advanced::default());
        };
        let mut out = Advanced {
            opened: 1,
            ..Advanced::default()
        };
        let mut opened = self.record(&case, run.as_str(), "open", Outcome::Done);
        opened.detail = Some(
            case.plan
                .iter()
                .map(|p| format!("{}:{}", p.kind.as_str(), p.day))
                .collect::<Vec<_>>()
                .join(";"),
        );
        self.audit.record(&opened).await?;
        out.enqueued += self.enqueue_due(case, etag, run, now).await?;
        Ok(out)
    }

    async fn advance_open(
        &self,
        run: &RunId,
        user: &str,
        candidate: Option<&Candidate>,
        usage: Option<&UsageIndex>,
    ) -> Result<Advanced, LifecycleError> {
        let cases = CaseStore::new(self.store.clone());
        let mut out = Advanced::default();
        for _ in 0..4 {
            let Some((mut case, etag)) = cases.open_case(user).await? else {
                return Ok(out);
            };
            if case.status.is_final() {
                self.finish_final(case, Place::Open).await?;
                return Ok(out);
            }
            // A worker may be acting on a step right now: its intent is its
            // own to resolve, and nothing more is queued meanwhile; an end
            // decided now waits in the case for it (`end_case`).
            let acting = self.acting_step(&case).is_some();
            // What a crash left: a step that acted without its line marked,
            // or started without a line at all (its worker died).
            let mut etag = etag;
            let mut changed = false;
            if !acting {
                for kind in case.in_flight() {
                    self.resolve_in_flight(&mut case, kind).await?;
                    changed = true;
                }
            }
            let pending: Vec<ActionKind> = case
                .steps
                .iter()
                .filter(|(_, s)| s.record.is_some() && !s.recorded)
                .map(|(k, _)| *k)
                .collect();
            if changed || !pending.is_empty() {
                // Each record is in the case before it goes to the log.
                etag = match cases.save(&case, &etag).await {
                    Ok(e) => e,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                };
                for (_, state) in case.steps.iter_mut() {
                    if let (false, Some(record)) = (state.recorded, &state.record) {
                        self.ensure_recorded(record).await?;
                        state.recorded = true;
                    }
                }
                etag = match cases.save(&case, &etag).await {
                    Ok(e) => e,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                };
            }
            // An answer whose line a crash kept out of the log.
            if let Some(record) = case
                .attestation
                .as_ref()
                .filter(|a| !a.recorded)
                .map(|a| a.record.clone())
            {
                self.ensure_recorded(&record).await?;
                if let Some(a) = case.attestation.as_mut() {
                    a.recorded = true;
                }
                etag = match cases.save(&case, &etag).await {
                    Ok(e) => e,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                };
            }
            if case.pending_end.is_some() && !acting {
                match self.carry_out_pending_end(case, &etag).await? {
                    Ended::Conflict => continue,
                    _ => {
                        out.cancelled += 1;
                        return Ok(out);
                    }
                }
            }

            let now = self.clock.now();
            let verdict = match candidate {
                // The owner said "keep" (the answer's own request ends the
                // case; this finishes it after a crash).
                _ if case.kept() => Ok(Some(CancelReason::Kept)),
                // The scan judged the user inactive; whoever enabled it since
                // the case opened still decides (the scan does not know how
                // the account stood then).
                Some(c) => {
                    let expected_disabled =
                        case.enabled_at_open == Some(false) || case.is_done(ActionKind::Disable);
                    Ok((expected_disabled && c.account_enabled).then_some(CancelReason::ReEnabled))
                }
                None => match recheck(self.graph, &cases, self.config, &case, usage, now).await {
                    Ok(Recheck::Holds(_)) => Ok(None),
                    Ok(Recheck::Absent) if case.is_done(ActionKind::Delete) => Ok(None),
                    Ok(Recheck::Absent) => self.why_absent(&case).await.map_err(Into::into),
                    Ok(Recheck::Cancel(reason)) => Ok(Some(reason)),
                    Err(e) => Err(e),
                },
            };
            let cancel = match verdict {
                Ok(c) => c,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(case = %case.id, error = %e, "re-check refused; the case waits for the next run");
                    out.failed += 1;
                    return Ok(out);
                }
            };
            if let Some(reason) = cancel {
                match self
                    .end_case(
                        case,
                        &etag,
                        CaseStatus::Cancelled,
                        "cancel",
                        Some(reason.code()),
                        run.as_str(),
                    )
                    .await?
                {
                    Ended::Conflict => continue,
                    _ => {
                        out.cancelled += 1;
                        return Ok(out);
                    }
                }
            }

            if acting || case.pending_end.is_some() {
                return Ok(out);
            }
            if case.status == CaseStatus::Waiting {
                match self.resume_waiting(&mut case, run, candidate).await? {
                    true => {
                        etag = match cases.save(&case, &etag).await {
                            Ok(e) => e,
                            Err(e) if e.is_conflict() => continue,
                            Err(e) => return Err(e.into()),
                        };
                        let resumed: Vec<ActionKind> = case
                            .steps
                            .iter()
                            .filter(|(_, s)| s.record.is_some() && !s.recorded)
                            .map(|(k, _)| *k)
                            .collect();
                        for kind in resumed {
                            if let Some(record) =
                                case.steps.get(&kind).and_then(|s| s.record.clone())
                            {
                                self.audit.record(&record).await?;
                                case.steps.entry(kind).or_default().recorded = true;
                            }
                        }
                        etag = match cases.save(&case, &etag).await {
                            Ok(e) => e,
                            Err(e) if e.is_conflict() => continue,
                            Err(e) => return Err(e.into()),
                        };
                    }
                    false => {
                        out.waiting += 1;
                        return Ok(out);
                    }
                }
            }

            if case.next_step().is_none() {
                match self
                    .end_case(case, &etag, CaseStatus::Closed, "close", None, run.as_str())
                    .await?
                {
                    Ended::Conflict => continue,
                    _ => {
                        out.closed += 1;
                        return Ok(out);
                    }
                }
            }
            out.enqueued += self.enqueue_due(case, etag, run, now).await?;
            return Ok(out);
        }
        Err(LifecycleError::Contention(4))
    }

    /// A waiting case goes on once what it waits for is there. A mailbox
    /// conversion: once Exchange is configured, or once a person converted
    /// the mailbox (recorded as the step, `converted-by-person`). A license
    /// removal: once the mailbox is positively shared or absent, or once a
    /// person removed the licenses by hand. Returns whether it goes on.
    async fn resume_waiting(
        &self,
        case: &mut Case,
        run: &RunId,
        candidate: Option<&Candidate>,
    ) -> Result<bool, LifecycleError> {
        let Some(next) = case.next_step() else {
            case.status = CaseStatus::Open;
            case.reason = None;
            return Ok(true);
        };
        let go_on = |case: &mut Case| {
            case.status = CaseStatus::Open;
            case.reason = None;
            // The waiting line was recorded; the step itself runs again.
            case.steps.remove(&next.kind);
        };
        match next.kind {
            ActionKind::ConvertMailbox => {
                if self.exchange.is_some() {
                    go_on(case);
                    return Ok(true);
                }
                let still_user_mailbox = match candidate {
                    Some(c) => c.has_user_mailbox,
                    None => match self.graph.mailbox_settings(&case.user).await {
                        Ok(m) => m.and_then(|m| m.user_purpose).as_deref() == Some("user"),
                        Err(GraphError::NotFound) => false,
                        Err(e) => return Err(e.into()),
                    },
                };
                if still_user_mailbox {
                    return Ok(false);
                }
                let mut record = self.record(
                    case,
                    run.as_str(),
                    ActionKind::ConvertMailbox.as_str(),
                    Outcome::Done,
                );
                record.detail = Some("converted-by-person".into());
                case.status = CaseStatus::Open;
                case.reason = None;
                case.updated_at = record.time;
                let state = case.steps.entry(ActionKind::ConvertMailbox).or_default();
                state.done_at = Some(record.time);
                state.record = Some(record);
                state.recorded = false;
                Ok(true)
            }
            ActionKind::RemoveLicenses => {
                let mailbox = mailbox_of(self.graph, self.exchange, &case.user).await?;
                let licenses_left = match candidate {
                    Some(c) => c.has_direct_licenses,
                    None => match self
                        .graph
                        .get_user(&case.user, &["id", "assignedLicenses"])
                        .await
                    {
                        Ok(u) => !u.assigned_licenses.is_empty(),
                        Err(GraphError::NotFound) => false,
                        Err(e) => return Err(e.into()),
                    },
                };
                if mailbox.allows_license_removal() || !licenses_left {
                    go_on(case);
                    return Ok(true);
                }
                if case.reason.as_deref() != Some(mailbox.reason()) {
                    // Still waiting, maybe for another reason now.
                    case.reason = Some(mailbox.reason().to_owned());
                }
                Ok(false)
            }
            _ => {
                go_on(case);
                Ok(true)
            }
        }
    }

    /// Enqueues the case's next step when it is due and not already on the
    /// queue. Returns 1 when a message went out. The message goes first:
    /// a crash before the case is saved means one more (harmless) repeat,
    /// never a step that is never queued.
    async fn enqueue_due(
        &self,
        mut case: Case,
        etag: crate::store::ETag,
        run: &RunId,
        now: DateTime<Utc>,
    ) -> Result<u64, LifecycleError> {
        let Some(next) = case.next_step() else {
            return Ok(0);
        };
        let due = case.due_at(next.kind).unwrap_or(now);
        if due > now {
            return Ok(0);
        }
        let state = case.steps.get(&next.kind);
        if state
            .and_then(|s| s.enqueued_at)
            .is_some_and(|at| now - at < REENQUEUE_AFTER)
        {
            return Ok(0);
        }
        let user = ObjectId::parse(&case.user).ok_or_else(|| {
            LifecycleError::refused("bad-case", "the case's user id is not an object id")
        })?;
        let message = ActionMessage {
            v: ActionMessage::VERSION,
            kind: next.kind,
            tenant: self.config.tenant_id.clone(),
            user,
            case: case.id.clone(),
            run: run.clone(),
            not_before: due,
        };
        self.store
            .send(ACTIONS_QUEUE, &message.to_text(), SendOptions::default())
            .await?;
        let state = case.steps.entry(next.kind).or_default();
        state.enqueued_at = Some(now);
        state.enqueued_by = Some(run.clone());
        case.updated_at = now;
        let cases = CaseStore::new(self.store.clone());
        if let Err(e) = cases.save(&case, &etag).await
            && !e.is_conflict()
        {
            return Err(e.into());
        }
        Ok(1)
    }
}
