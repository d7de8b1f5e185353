//! The finalise, exactly once per run under an expiring claim: totals and
//! the report from the recorded parts, the quarantine decision, the cases;
//! and the release of a quarantined run by a person.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use super::lease::{LEASE_BLOB, Lease, RunLine, RunState, RunStatus, ScanScope};
use super::plan::{Recorded, leaf_blob};
use super::{GraphUse, RunOutcome, ScanError, Scanner, get_state_json, run_path, state_err};
use crate::config::{Mode, TenantKind};
use crate::ids::RunId;
use crate::lifecycle::CaseStore;
use crate::lifecycle::advance::{Advanced, Listed, Plan};
use crate::policy;
use crate::policy::RunFigures;
use crate::policy::UsageIndex;
use crate::report::{CaseCounts, CsvChunks, DataQuality, GuestSummary, ReportStats, Summary, html};
use crate::scan::partition::Partition;
use crate::store::audit::{AuditLog, AuditRecord, Outcome as AuditOutcome};
use crate::store::{ETag, Precondition, REPORTS_CONTAINER, STATE_CONTAINER};

/// A finaliser that has not finished by then is presumed dead. Longer than
/// the longest invocation (10 minutes on Consumption).
pub(super) const FINALIZE_CLAIM_TTL: Duration = Duration::minutes(15);

/// Partition records the finalise reads at once: a big tenant has
/// thousands of partitions.
pub(super) const FINALIZE_READS: usize = 8;
/// Block size of the report CSV uploads.
pub(super) const REPORT_BLOCK: usize = 1024 * 1024;
/// Rows parts the finalise opens ahead of the one it copies.
pub(super) const PARTS_OPEN_AHEAD: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FinalizeClaim {
    pub(super) by: String,
    pub(super) until: DateTime<Utc>,
}

pub(super) enum Claim {
    /// Ours, with the claim blob's ETag.
    Won(ETag),
    /// Another invocation holds the claim until then.
    Held(DateTime<Utc>),
    /// The run is finished already.
    Finished,
}

/// `dormant-reports/` names of a run's CSV, summary and HTML report.
pub fn report_names(run: &RunId) -> [String; 3] {
    [
        format!("{run}/inactive-users.csv"),
        format!("{run}/summary.json"),
        format!("{run}/report.html"),
    ]
}

/// Whether a finished run hands steps to the lifecycle: only in enforce
/// mode, when every protective lookup and activity source was read, when it
/// did not quarantine itself, and when it is not a dry run (which plans
/// but enqueues nothing).
pub fn may_enqueue(enforce: bool, actionable: bool, quarantined: bool, dry_run: bool) -> bool {
    enforce && actionable && !quarantined && !dry_run
}

impl Scanner {
    /// The right to finalise: create-only, or taken over once it lapsed.
    pub(super) async fn claim_finalize(&self, run: &RunId, by: &str) -> Result<Claim, ScanError> {
        let name = run_path(run, "finalize.json");
        let now = self.clock.now();
        let claim = FinalizeClaim {
            by: by.to_owned(),
            until: now + FINALIZE_CLAIM_TTL,
        };
        let pre = match self.get_json::<FinalizeClaim>(&name).await? {
            None => Precondition::IfNoneMatch,
            Some((held, etag)) => {
                if self.state(run).await?.0.status != RunStatus::Running {
                    return Ok(Claim::Finished);
                }
                if held.until > now {
                    return Ok(Claim::Held(held.until));
                }
                Precondition::IfMatch(etag)
            }
        };
        match self.put_json(&name, &claim, pre).await {
            Ok(etag) => Ok(Claim::Won(etag)),
            Err(ScanError::Store(e)) if e.is_conflict() => Ok(Claim::Held(claim.until)),
            Err(e) => Err(e),
        }
    }

    /// Finalises under a won claim. If the finalise fails, the claim is
    /// given up at once, so the retry need not wait for it to lapse.
    pub(super) async fn finalize_claimed(
        &self,
        run: &RunId,
        claim: ETag,
    ) -> Result<RunOutcome, ScanError> {
        match self.finalize(run).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                let lapsed = FinalizeClaim {
                    by: String::new(),
                    until: self.clock.now(),
                };
                if let Err(give_up) = self
                    .put_json(
                        &run_path(run, "finalize.json"),
                        &lapsed,
                        Precondition::IfMatch(claim),
                    )
                    .await
                {
                    tracing::warn!(error = %give_up, "could not give up the finalise claim; it lapses on its own");
                }
                Err(e)
            }
        }
    }

    /// The records of `leaves`, a few read ahead, in order. Only those in
    /// flight are held: a big tenant's candidates never sit in memory at once.
    pub(super) fn leaf_records(
        &self,
        run: &RunId,
        leaves: &[Partition],
    ) -> impl futures::Stream<Item = Result<Recorded, ScanError>> + Send + 'static {
        // Each read owns what it needs (futures borrowing through a lazy
        // iterator defeat the compiler's `Send` proof for the handler).
        let reads: Vec<_> = leaves
            .iter()
            .map(|p| {
                let (store, name) = (self.store.clone(), leaf_blob(run, p));
                async move {
                    get_state_json::<Recorded>(&store, &name)
                        .await?
                        .map(|(record, _)| record)
                        .ok_or_else(|| ScanError::State("a recorded partition vanished".into()))
                }
            })
            .collect();
        futures::stream::iter(reads).buffered(FINALIZE_READS)
    }

    /// Opens and advances cases per `plan`, reading the candidates again a
    /// partition at a time; then the open cases no partition listed (a
    /// guest audit: only those of guests it paged; it never saw the
    /// members, whose cases wait for the next full run).
    pub(super) async fn advance_cases(
        &self,
        audit: &AuditLog,
        run: &RunId,
        scope: ScanScope,
        plan: &Plan,
        leaves: &[Partition],
        usage: Option<&UsageIndex>,
    ) -> Result<Advanced, ScanError> {
        let lifecycle = self.lifecycle(audit);
        let mut listed = Listed::default();
        let mut total = Advanced::default();
        let mut paged = std::collections::BTreeSet::new();
        let mut records = self.leaf_records(run, leaves);
        while let Some(record) = records.try_next().await? {
            paged.extend(record.result.paged_with_case);
            let done = lifecycle
                .advance_listed(run, plan, record.result.candidates, &mut listed)
                .await?;
            total.add(&done);
        }
        let only = (!scope.is_all()).then_some(&paged);
        total.add(
            &lifecycle
                .advance_unlisted(run, plan, &listed, only, usage)
                .await?,
        );
        tracing::info!(run = %run, opened = total.opened, cancelled = total.cancelled, enqueued = total.enqueued, closed = total.closed, "cases advanced");
        Ok(total)
    }

    pub(super) async fn finalize(&self, run: &RunId) -> Result<RunOutcome, ScanError> {
        let leaves = self.covered(run).await?;
        let (ctx, usage) = self.load_context(run).await?;
        let (mut state, etag) = self.state(run).await?;

        // First pass: totals, the parts to concatenate, and the new cases
        // (the quarantine decides on them before anything is written).
        let cases = CaseStore::new(self.store.clone());
        let mut case_plan = Plan::load(&cases, self.clock.now()).await?;
        let mut stats = ReportStats::new(self.config.policy.inactive_after_days);
        let mut planned = 0u64;
        let mut gaps = 0u64;
        let mut unreadable = 0u64;
        let mut unreadable_paths = std::collections::BTreeSet::new();
        let mut rows = Vec::with_capacity(leaves.len());
        let mut records = self.leaf_records(run, &leaves);
        while let Some(record) = records.try_next().await? {
            let leaf = record.result;
            stats.merge(leaf.stats);
            planned += leaf.candidates.len() as u64;
            gaps += leaf.enrichment_gaps;
            unreadable += leaf.unreadable;
            unreadable_paths.extend(leaf.unreadable_paths);
            case_plan.count(&leaf.candidates);
            rows.extend(record.rows_blob);
        }

        let mut warnings = ctx.warnings.clone();
        if gaps > 0 {
            warnings.push(format!(
                "{gaps} user(s) could not be fully looked up (manager or mailbox kind); no action is planned from this run"
            ));
        }
        if unreadable > 0 {
            let paths: Vec<&str> = unreadable_paths
                .iter()
                .map(String::as_str)
                .take(5)
                .collect();
            warnings.push(format!(
                "{unreadable} user record(s) from Graph could not be read (at: {}); they are reported unknown (no-signin-data) and never acted on",
                paths.join(", ")
            ));
        }
        let actionable = ctx.actionable && gaps == 0;
        let enforce = self.config.policy.mode == Mode::Enforce;
        // New cases are what the quarantine limits; open cases go on. The
        // data-quality breaker compares with the last run that passed it
        // (or that a person released): a broken run never becomes the
        // yardstick of the next.
        let figures = RunFigures {
            scanned: stats.scanned,
            unknown: stats
                .by_verdict
                .get(policy::Verdict::Unknown.as_str())
                .copied()
                .unwrap_or(0),
            new_cases: case_plan.new_cases,
        };
        let baseline = self.baseline(state.scope).await?;
        let reason = policy::quarantine(
            &figures,
            baseline.as_ref().map(|b| &b.figures),
            &self.config.policy.quarantine,
        );
        let data_quality = DataQuality {
            unknown_percent: figures.unknown_percent(),
            new_cases: figures.new_cases,
            previous_run: baseline.as_ref().map(|b| b.run.to_string()),
            previous_unknown_percent: baseline.as_ref().map(|b| b.figures.unknown_percent()),
            previous_new_cases: baseline.as_ref().map(|b| b.figures.new_cases),
            tripped: reason.as_ref().is_some_and(|r| r.is_data_quality()),
        };
        let quarantined = enforce && actionable && !state.dry_run && reason.is_some();
        if (!enforce || state.dry_run)
            && let Some(r) = &reason
        {
            warnings.push(format!(
                "in enforce mode this run would quarantine itself: {r}"
            ));
        }

        // The report: one header, then every part in partition order, in
        // 1 MiB blocks (two uploads at once; 50,000 blocks still allow
        // 48 GiB, a hundred times a 10-million-user report).
        let [csv_name, json_name, html_name] = report_names(run);
        let latest_folder = state.scope.latest_folder();
        let mut by_run = self
            .store
            .upload_with_block_size(
                REPORTS_CONTAINER,
                &csv_name,
                Precondition::None,
                REPORT_BLOCK,
            )
            .await?;
        let mut latest = self
            .store
            .upload_with_block_size(
                REPORTS_CONTAINER,
                &format!("{latest_folder}/inactive-users.csv"),
                Precondition::None,
                REPORT_BLOCK,
            )
            .await?;
        let header = CsvChunks::header();
        by_run.write(&header).await?;
        latest.write(&header).await?;
        // Parts pass through in chunks (a part of a big tenant is megabytes);
        // the next ones are opened ahead, and `buffered` keeps their order.
        let opens: Vec<_> = rows
            .into_iter()
            .map(|name| {
                let store = self.store.clone();
                async move { store.get_stream(STATE_CONTAINER, &name).await }
            })
            .collect();
        let mut parts = futures::stream::iter(opens).buffered(PARTS_OPEN_AHEAD);
        while let Some(part) = parts.next().await {
            let mut chunks = part?;
            while let Some(chunk) = chunks.try_next().await? {
                by_run.write(&chunk).await?;
                latest.write(&chunk).await?;
            }
        }
        by_run.finish().await?;
        latest.finish().await?;

        // A finalise redone after a crash advances again: opening is
        // create-only and a queued step is not queued twice.
        let audit = AuditLog::new(self.store.clone());
        let advanced = if may_enqueue(enforce, actionable, quarantined, state.dry_run) {
            self.advance_cases(
                &audit,
                run,
                state.scope,
                &case_plan,
                &leaves,
                usage.as_ref(),
            )
            .await?
        } else {
            Advanced::default()
        };
        let actions_enqueued = advanced.enqueued;

        let graph = self.graph_use(run).await?;
        let summary = Summary {
            run_id: run.to_string(),
            tenant_kind: self.config.tenant_kind.as_str().to_owned(),
            started_at: state.started_at,
            finished_at: self.clock.now(),
            mode: match self.config.policy.mode {
                Mode::Report => "report",
                Mode::Enforce => "enforce",
            }
            .to_owned(),
            scanned: stats.scanned,
            by_verdict: stats.by_verdict.clone(),
            actions_planned: planned,
            actions_enqueued,
            cases: enforce.then(|| case_counts(&advanced)),
            quarantined,
            directory_quota: ctx.directory_quota,
            graph_requests: graph.requests,
            throttled: graph.throttled,
            quarantine_reason: if quarantined {
                reason.as_ref().map(|r| r.to_string())
            } else {
                None
            },
            dry_run: state.dry_run,
            warnings,
            data_quality: Some(data_quality),
            guests: (self.config.tenant_kind == TenantKind::Workforce)
                .then(|| GuestSummary::of(&stats.guests)),
            attestation: attestation_counts(&ctx, self.clock.now()),
            scope: state.scope.as_str().to_owned(),
        };
        let summary_bytes = Bytes::from(serde_json::to_vec_pretty(&summary).map_err(state_err)?);
        let html_bytes = Bytes::from(html::render(&summary, &stats));
        for (name, body) in [
            (json_name.clone(), &summary_bytes),
            (format!("{latest_folder}/summary.json"), &summary_bytes),
            (html_name.clone(), &html_bytes),
            (format!("{latest_folder}/report.html"), &html_bytes),
        ] {
            self.store
                .put(REPORTS_CONTAINER, &name, body.clone(), Precondition::None)
                .await?;
        }

        state.status = if quarantined {
            RunStatus::Quarantined
        } else {
            RunStatus::Done
        };
        state.finished_at = Some(summary.finished_at);
        state.figures = Some(figures);
        if quarantined {
            // The line goes into the run record with the decision, then to
            // the log: a failed append is finished by the retry.
            let mut line = AuditRecord::new("quarantine", AuditOutcome::Skipped);
            line.time = self.clock.now();
            line.run = Some(run.to_string());
            line.detail = reason.as_ref().map(|r| r.code().to_owned());
            state.lines.push(RunLine::pending(line));
        }
        self.put_json(
            &run_path(run, "run.json"),
            &state,
            Precondition::IfMatch(etag),
        )
        .await?;
        if actionable && reason.is_none() {
            self.set_baseline(run, state.scope, figures).await?;
        }
        self.record_run_lines(run).await?;
        tracing::info!(run = %run, scanned = summary.scanned, rows = stats.by_verdict.values().sum::<u64>(), quarantined, "scan finished");
        Ok(RunOutcome {
            run: run.clone(),
            summary,
            csv: csv_name,
            json: json_name,
            html: html_name,
        })
    }

    /// Releases a quarantined run (`dormant release`, `ReleaseRun`): a
    /// person looked at the plan and lets it go. The run's cases open and
    /// their due steps are enqueued exactly as the run would have done;
    /// every step still re-checks its user first. Repeating a release (or
    /// finishing one a crash interrupted) is harmless: opening is
    /// create-only and a queued step is not queued again.
    pub async fn release(&self, run: &RunId) -> Result<Advanced, ScanError> {
        let (mut state, _) = self
            .get_json::<RunState>(&run_path(run, "run.json"))
            .await?
            .ok_or_else(|| ScanError::NotReleasable(format!("there is no run {run}")))?;
        match state.status {
            RunStatus::Quarantined | RunStatus::Released => {}
            other => {
                return Err(ScanError::NotReleasable(format!(
                    "run {run} is {other:?}, not quarantined"
                )));
            }
        }
        if self.config.policy.mode != Mode::Enforce {
            return Err(ScanError::NotReleasable(
                "policy.mode is report: nothing is ever enqueued".into(),
            ));
        }
        // The lease names the newest run: a plan older than that is stale.
        if let Some((held, _)) = self.get_json::<Lease>(LEASE_BLOB).await?
            && held.run != *run
        {
            return Err(ScanError::NotReleasable(format!(
                "run {} started after {run}: release the newest run instead",
                held.run
            )));
        }
        let now = self.clock.now();
        self.acquire_lease(run, now).await?;
        let (_ctx, usage) = self.load_context(run).await?;
        let leaves = self.covered(run).await?;
        let cases = CaseStore::new(self.store.clone());
        let plan = Plan::load(&cases, self.clock.now()).await?;
        let audit = AuditLog::new(self.store.clone());
        let advanced = self
            .advance_cases(&audit, run, state.scope, &plan, &leaves, usage.as_ref())
            .await?;
        if state.status != RunStatus::Released {
            let mut line = AuditRecord::new("release", AuditOutcome::Done);
            line.time = now;
            line.run = Some(run.to_string());
            line.detail = Some(format!(
                "opened={};enqueued={}",
                advanced.opened, advanced.enqueued
            ));
            let (_, etag) = self
                .get_json::<RunState>(&run_path(run, "run.json"))
                .await?
                .ok_or_else(|| ScanError::State(format!("run {run} has no state")))?;
            state.status = RunStatus::Released;
            state.lines.push(RunLine::pending(line));
            self.put_json(
                &run_path(run, "run.json"),
                &state,
                Precondition::IfMatch(etag),
            )
            .await?;
        }
        // A person looked at this run and let it go: its figures are the
        // next runs' yardstick.
        if let Some(figures) = state.figures {
            self.set_baseline(run, state.scope, figures).await?;
        }
        self.record_run_lines(run).await?;
        self.release_lease(run).await?;
        Ok(advanced)
    }

    pub(super) async fn graph_use(&self, run: &RunId) -> Result<GraphUse, ScanError> {
        let reads: Vec<_> = self
            .store
            .list(STATE_CONTAINER, &run_path(run, "graph/"))
            .await?
            .into_iter()
            .map(|blob| {
                let store = self.store.clone();
                async move { get_state_json::<GraphUse>(&store, &blob.name).await }
            })
            .collect();
        let mut total = GraphUse::default();
        let mut used = futures::stream::iter(reads).buffer_unordered(FINALIZE_READS);
        while let Some(one) = used.next().await {
            if let Some((one, _)) = one? {
                total.requests += one.requests;
                total.throttled += one.throttled;
            }
        }
        Ok(total)
    }
}

/// The yardstick of the data-quality breaker: the last run that passed
/// it, or that a person released.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Baseline {
    pub(super) run: RunId,
    pub(super) figures: RunFigures,
}

const BASELINE_BLOB: &str = "scan-baseline.json";
/// A guest audit's yardstick is the last guest audit: its figures (guests
/// only) would make every full run look like a jump, and the other way round.
const GUEST_BASELINE_BLOB: &str = "scan-baseline-guests.json";

fn baseline_blob(scope: ScanScope) -> &'static str {
    match scope {
        ScanScope::All => BASELINE_BLOB,
        ScanScope::Guests => GUEST_BASELINE_BLOB,
    }
}

impl Scanner {
    pub(super) async fn baseline(&self, scope: ScanScope) -> Result<Option<Baseline>, ScanError> {
        Ok(self
            .get_json::<Baseline>(baseline_blob(scope))
            .await?
            .map(|(b, _)| b))
    }

    /// Makes `run` the yardstick, unless a newer run already is.
    pub(super) async fn set_baseline(
        &self,
        run: &RunId,
        scope: ScanScope,
        figures: RunFigures,
    ) -> Result<(), ScanError> {
        let blob = baseline_blob(scope);
        let (pre, current) = match self.get_json::<Baseline>(blob).await? {
            Some((b, etag)) => (Precondition::IfMatch(etag), Some(b.run)),
            None => (Precondition::IfNoneMatch, None),
        };
        if current.as_ref().is_some_and(|c| c.as_str() > run.as_str()) {
            return Ok(());
        }
        let baseline = Baseline {
            run: run.clone(),
            figures,
        };
        match self.put_json(blob, &baseline, pre).await {
            // Someone else set one at the same moment: theirs stands.
            Err(ScanError::Store(e)) if e.is_conflict() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// The lifecycle's tally as the report's plain counts.
fn case_counts(a: &Advanced) -> CaseCounts {
    CaseCounts {
        opened: a.opened,
        cancelled: a.cancelled,
        closed: a.closed,
        enqueued: a.enqueued,
        waiting: a.waiting,
        failed: a.failed,
    }
}

/// The owners' answers (see [`AttestationCounts`]): from the open cases and
/// holds the run read when it started.
fn attestation_counts(
    ctx: &crate::scan::context::RunContext,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::report::AttestationCounts {
    use crate::lifecycle::attest::Answer;
    let mut counts = crate::report::AttestationCounts {
        kept: ctx
            .holds
            .values()
            .filter(|h| h.kind == crate::policy::HoldKind::Kept && h.in_force(None, now))
            .count() as u64,
        ..Default::default()
    };
    for (user, view) in ctx.cases.iter().filter(|(_, v)| v.attestation_asked) {
        match view.answer {
            Some(Answer::LetGo) => counts.let_go += 1,
            // A keep ends its case at once; one still open is ending (its
            // hold, if written already, is counted above).
            Some(Answer::Keep)
                if !ctx
                    .holds
                    .get(user)
                    .is_some_and(|h| h.kind == crate::policy::HoldKind::Kept) =>
            {
                counts.kept += 1
            }
            Some(Answer::Keep) => {}
            None => counts.no_answer += 1,
        }
    }
    counts.asked = counts.kept + counts.let_go + counts.no_answer;
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn only_an_actionable_enforce_run_that_is_neither_quarantined_nor_dry_enqueues() {
        for enforce in [false, true] {
            for actionable in [false, true] {
                for quarantined in [false, true] {
                    for dry_run in [false, true] {
                        assert_eq!(
                            may_enqueue(enforce, actionable, quarantined, dry_run),
                            enforce && actionable && !quarantined && !dry_run,
                        );
                    }
                }
            }
        }
        assert!(may_enqueue(true, true, false, false));
        assert!(!may_enqueue(true, true, false, true), "dry run");
        assert!(!may_enqueue(true, true, true, false), "quarantined");
    }
}
