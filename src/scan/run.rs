//! A scan run: one at a time per tenant (a lease), partitions scanned
//! concurrently and recorded one by one (so a killed run resumes where it
//! stopped, without losing or double-counting anyone), then finalised into
//! the report.
//!
//! State in `dormant-state`:
//! - `scan.lease`: which run holds the tenant, until when (ETag-guarded);
//! - `runs/{runId}/run.json`: status;
//! - `runs/{runId}/context.json`, `usage.bin`: what every partition shares;
//! - `runs/{runId}/parts/{key}.csv` then `{key}.json`: a partition's rows,
//!   then its result; the JSON's existence marks the partition done.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::context::{ContextError, RunContext};
use super::partition::Partition;
use super::usage::UsageIndex;
use super::worker::{Candidate, PartitionError, PartitionResult, RowSink, scan_partition};
use crate::clock::Clock;
use crate::config::{Config, Mode};
use crate::graph::GraphClient;
use crate::graph::exchange::ExchangeAdmin;
use crate::ids::RunId;
use crate::lifecycle::advance::Advanced;
use crate::lifecycle::{self, CaseStore, Lifecycle, LifecycleError};
use crate::policy;
use crate::report::{CsvChunks, ReportStats, Summary, html};
use crate::store::audit::{AuditLog, AuditRecord, Outcome as AuditOutcome};
use crate::store::{
    BlobWriter, ETag, Precondition, REPORTS_CONTAINER, STATE_CONTAINER, Store, StoreError,
};

/// A lease outlives any sane run; a crashed holder frees the tenant then.
const LEASE_TTL: Duration = Duration::hours(6);
const LEASE_BLOB: &str = "scan.lease";

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("another scan ({0}) holds this tenant")]
    Busy(String),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("run state is unreadable: {0}")]
    State(String),
    #[error("partition coverage is incomplete: {0} partition(s) have no result")]
    Incomplete(usize),
    #[error("cases: {0}")]
    Cases(#[from] LifecycleError),
    #[error("cannot release: {0}")]
    NotReleasable(String),
}

impl ScanError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Busy(_) | Self::Incomplete(_) => true,
            Self::Context(e) => e.is_transient(),
            Self::Partition(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
            Self::State(_) | Self::NotReleasable(_) => false,
            Self::Cases(e) => e.is_transient(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Done,
    /// Finished, but it would open too many cases: nothing was enqueued; it
    /// waits for `dormant release`.
    Quarantined,
    Released,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub run: RunId,
    pub status: RunStatus,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    run: RunId,
    expires_at: DateTime<Utc>,
}

/// Options of one scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub dry_run: bool,
    /// Partitions paged at once.
    pub concurrency: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            concurrency: 16,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run: RunId,
    pub summary: Summary,
    /// `dormant-reports/{runId}/…` blob names.
    pub csv: String,
    pub json: String,
    pub html: String,
}

/// Progress callbacks (the CLI's progress bar).
pub trait Progress: Send + Sync {
    fn partition_done(&self, _scanned: u64, _rows: u64) {}
    fn partitions_added(&self, _n: usize) {}
}

impl Progress for () {}

/// The scan of one tenant.
#[derive(Clone)]
pub struct Scanner {
    pub graph: GraphClient,
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Clock,
    /// Mailbox conversions for the cases the scan opens (`None`: they wait
    /// for a person).
    pub exchange: Option<ExchangeAdmin>,
}

fn run_path(run: &RunId, rest: &str) -> String {
    format!("runs/{run}/{rest}")
}

fn part_csv(run: &RunId, p: &Partition) -> String {
    run_path(run, &format!("parts/{}.csv", p.key()))
}

fn part_json(run: &RunId, p: &Partition) -> String {
    run_path(run, &format!("parts/{}.json", p.key()))
}

fn state_err(e: serde_json::Error) -> ScanError {
    ScanError::State(e.to_string())
}

/// Rows of a partition streamed to its part blob.
struct BlobSink(BlobWriter);

impl RowSink for BlobSink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.0.write(&bytes).await
    }
}

impl Scanner {
    /// A scanner on the system clock without Exchange.
    pub fn new(graph: GraphClient, store: Store, config: Arc<Config>) -> Self {
        Self {
            graph,
            store,
            config,
            clock: Clock::system(),
            exchange: None,
        }
    }

    fn lifecycle<'a>(&'a self, audit: &'a AuditLog) -> Lifecycle<'a> {
        Lifecycle {
            graph: &self.graph,
            store: &self.store,
            audit,
            config: &self.config,
            clock: &self.clock,
            exchange: self.exchange.as_ref(),
            http: self.graph.http(),
        }
    }

    /// Runs a scan to its end in this process: resumes the tenant's
    /// unfinished run if there is one (a crashed or killed scan), else starts
    /// a new one.
    pub async fn run(
        &self,
        options: &ScanOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RunOutcome, ScanError> {
        self.store.ensure_defaults().await?;
        let now = self.clock.now();
        let (run, ctx, usage) = match self.unfinished_run().await? {
            Some(run) => {
                tracing::info!(run = %run, "resuming an unfinished scan");
                self.acquire_lease(&run, now).await?;
                let (ctx, usage) = self.load_context(&run).await?;
                (run, ctx, usage)
            }
            None => {
                let run = RunId::new(now);
                self.acquire_lease(&run, now).await?;
                let state = RunState {
                    run: run.clone(),
                    status: RunStatus::Running,
                    dry_run: options.dry_run,
                    started_at: now,
                    finished_at: None,
                };
                self.put_json(
                    &run_path(&run, "run.json"),
                    &state,
                    Precondition::IfNoneMatch,
                )
                .await?;
                let (mut ctx, usage) =
                    RunContext::gather(&self.graph, &self.config, run.clone(), now).await?;
                ctx.cases = CaseStore::new(self.store.clone())
                    .views()
                    .await
                    .map_err(LifecycleError::from)?;
                self.put_json(&run_path(&run, "context.json"), &ctx, Precondition::None)
                    .await?;
                if let Some(u) = &usage {
                    self.store
                        .put(
                            STATE_CONTAINER,
                            &run_path(&run, "usage.bin"),
                            Bytes::from(u.to_bytes()),
                            Precondition::None,
                        )
                        .await?;
                }
                (run, ctx, usage)
            }
        };
        let ctx = Arc::new(ctx);
        let usage = Arc::new(usage);
        self.scan_all(
            &run,
            ctx.clone(),
            usage.clone(),
            options.concurrency,
            progress,
        )
        .await?;
        let outcome = self.finalize(&run, &ctx, usage.as_ref().as_ref()).await?;
        self.release_lease(&run).await?;
        Ok(outcome)
    }

    async fn put_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        pre: Precondition,
    ) -> Result<ETag, ScanError> {
        let body = serde_json::to_vec_pretty(value).map_err(state_err)?;
        Ok(self
            .store
            .put(STATE_CONTAINER, name, Bytes::from(body), pre)
            .await?)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<(T, ETag)>, ScanError> {
        match self.store.get(STATE_CONTAINER, name).await {
            Ok(blob) => Ok(Some((
                serde_json::from_slice(&blob.body).map_err(state_err)?,
                blob.etag,
            ))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The newest run still `running`, if any.
    async fn unfinished_run(&self) -> Result<Option<RunId>, ScanError> {
        let mut runs: Vec<String> = self
            .store
            .list(STATE_CONTAINER, "runs/")
            .await?
            .into_iter()
            .filter(|b| b.name.ends_with("/run.json"))
            .map(|b| b.name)
            .collect();
        runs.sort();
        for name in runs.into_iter().rev() {
            if let Some((state, _)) = self.get_json::<RunState>(&name).await? {
                if state.status == RunStatus::Running {
                    return Ok(Some(state.run));
                }
                return Ok(None);
            }
        }
        Ok(None)
    }

    async fn acquire_lease(&self, run: &RunId, now: DateTime<Utc>) -> Result<(), ScanError> {
        let lease = Lease {
            run: run.clone(),
            expires_at: now + LEASE_TTL,
        };
        let pre = match self.get_json::<Lease>(LEASE_BLOB).await? {
            None => Precondition::IfNoneMatch,
            Some((held, etag)) if held.run == *run || held.expires_at <= now => {
                Precondition::IfMatch(etag)
            }
            Some((held, _)) => return Err(ScanError::Busy(held.run.to_string())),
        };
        match self.put_json(LEASE_BLOB, &lease, pre).await {
            Err(ScanError::Store(e)) if e.is_conflict() => Err(ScanError::Busy(
                "a scan that started at the same moment".into(),
            )),
            other => other.map(|_| ()),
        }
    }

    async fn release_lease(&self, run: &RunId) -> Result<(), ScanError> {
        if let Some((held, etag)) = self.get_json::<Lease>(LEASE_BLOB).await?
            && held.run == *run
        {
            let expired = Lease {
                run: run.clone(),
                expires_at: self.clock.now(),
            };
            // Losing this race means someone else already took over.
            if let Err(e) = self
                .put_json(LEASE_BLOB, &expired, Precondition::IfMatch(etag))
                .await
            {
                tracing::warn!(error = %e, "could not release the scan lease");
            }
        }
        Ok(())
    }

    async fn load_context(
        &self,
        run: &RunId,
    ) -> Result<(RunContext, Option<UsageIndex>), ScanError> {
        let (ctx, _) = self
            .get_json::<RunContext>(&run_path(run, "context.json"))
            .await?
            .ok_or_else(|| ScanError::State(format!("run {run} has no context")))?;
        let usage = match self
            .store
            .get(STATE_CONTAINER, &run_path(run, "usage.bin"))
            .await
        {
            Ok(blob) => Some(
                UsageIndex::from_bytes(&blob.body)
                    .ok_or_else(|| ScanError::State("usage index is corrupt".into()))?,
            ),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        Ok((ctx, usage))
    }

    /// A partition's recorded result, if it was scanned already.
    async fn result_of(
        &self,
        run: &RunId,
        p: &Partition,
    ) -> Result<Option<PartitionResult>, ScanError> {
        Ok(self.get_json(&part_json(run, p)).await?.map(|(r, _)| r))
    }

    /// Scans one partition and records it: rows first, then the result.
    pub async fn scan_and_record(
        &self,
        run: &RunId,
        ctx: &RunContext,
        usage: Option<&UsageIndex>,
        partition: &Partition,
    ) -> Result<PartitionResult, ScanError> {
        let writer = self
            .store
            .upload_with_block_size(
                STATE_CONTAINER,
                &part_csv(run, partition),
                Precondition::None,
                super::worker::PART_BLOCK,
            )
            .await?;
        let mut sink = BlobSink(writer);
        let result =
            scan_partition(&self.graph, &self.config, ctx, usage, partition, &mut sink).await?;
        sink.0.finish().await?;
        self.put_json(&part_json(run, partition), &result, Precondition::None)
            .await?;
        Ok(result)
    }

    async fn scan_all(
        &self,
        run: &RunId,
        ctx: Arc<RunContext>,
        usage: Arc<Option<UsageIndex>>,
        concurrency: usize,
        progress: Arc<dyn Progress>,
    ) -> Result<(), ScanError> {
        let mut queue: VecDeque<Partition> = Partition::roots().into();
        progress.partitions_added(queue.len());
        let mut running: JoinSet<Result<PartitionResult, ScanError>> = JoinSet::new();
        loop {
            while running.len() < concurrency.max(1) {
                let Some(p) = queue.pop_front() else { break };
                if let Some(done) = self.result_of(run, &p).await? {
                    progress.partitions_added(done.split.len());
                    progress.partition_done(done.stats.scanned, done.rows);
                    queue.extend(done.split);
                    continue;
                }
                let (me, run, ctx, usage) = (self.clone(), run.clone(), ctx.clone(), usage.clone());
                running.spawn(async move {
                    me.scan_and_record(&run, &ctx, usage.as_ref().as_ref(), &p)
                        .await
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let result = joined.map_err(|e| ScanError::State(format!("partition task: {e}")))??;
            progress.partitions_added(result.split.len());
            progress.partition_done(result.stats.scanned, result.rows);
            queue.extend(result.split);
        }
        Ok(())
    }

    /// Every partition result of the run, walking from the roots through
    /// the splits: proof that the whole user set was covered exactly once.
    async fn covered(&self, run: &RunId) -> Result<Vec<PartitionResult>, ScanError> {
        let mut queue: VecDeque<Partition> = Partition::roots().into();
        let mut leaves = Vec::new();
        let mut missing = 0;
        while let Some(p) = queue.pop_front() {
            match self.result_of(run, &p).await? {
                Some(r) if !r.split.is_empty() => queue.extend(r.split),
                Some(r) => leaves.push(r),
                None => missing += 1,
            }
        }
        if missing > 0 {
            return Err(ScanError::Incomplete(missing));
        }
        leaves.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(leaves)
    }

    async fn finalize(
        &self,
        run: &RunId,
        ctx: &RunContext,
        usage: Option<&UsageIndex>,
    ) -> Result<RunOutcome, ScanError> {
        let leaves = self.covered(run).await?;
        let (mut state, etag) = self
            .get_json::<RunState>(&run_path(run, "run.json"))
            .await?
            .ok_or_else(|| ScanError::State(format!("run {run} has no state")))?;

        let mut stats = ReportStats::new(self.config.policy.inactive_after_days);
        let mut planned = 0u64;
        let mut gaps = 0u64;
        for leaf in &leaves {
            stats.merge(leaf.stats.clone());
            planned += leaf.candidates.len() as u64;
            gaps += leaf.enrichment_gaps;
        }

        let mut warnings = ctx.warnings.clone();
        if gaps > 0 {
            warnings.push(format!(
                "{gaps} user(s) could not be fully looked up (manager or mailbox kind); no action is planned from this run"
            ));
        }
        let actionable = ctx.actionable && gaps == 0;
        let enforce = self.config.policy.mode == Mode::Enforce;
        let candidates: Vec<Candidate> = leaves
            .iter()
            .flat_map(|l| l.candidates.iter().cloned())
            .collect();
        // New cases are what the quarantine limits; open cases go on.
        let cases = CaseStore::new(self.store.clone());
        let case_plan = lifecycle::advance::plan_run(&cases, &candidates, self.clock.now()).await?;
        let new_cases = case_plan.new_cases.len() as u64;
        let reason = policy::quarantine(new_cases, stats.scanned, &self.config.policy.quarantine);
        let quarantined = enforce && actionable && reason.is_some();
        let audit = AuditLog::new(self.store.clone());
        let advanced = if enforce && actionable && !quarantined && !state.dry_run {
            self.lifecycle(&audit)
                .advance(run, &case_plan, &candidates, usage)
                .await?
        } else {
            Advanced::default()
        };
        if !enforce && let Some(r) = &reason {
            warnings.push(format!(
                "in enforce mode this run would quarantine itself: {r}"
            ));
        }

        // The report: one header, then every part in partition order.
        let csv_name = format!("{run}/inactive-users.csv");
        let mut by_run = self
            .store
            .upload(REPORTS_CONTAINER, &csv_name, Precondition::None)
            .await?;
        let mut latest = self
            .store
            .upload(
                REPORTS_CONTAINER,
                "latest/inactive-users.csv",
                Precondition::None,
            )
            .await?;
        let header = CsvChunks::header();
        by_run.write(&header).await?;
        latest.write(&header).await?;
        for leaf in &leaves {
            if leaf.rows == 0 {
                continue;
            }
            let part = self
                .store
                .get(STATE_CONTAINER, &part_csv(run, &leaf.partition))
                .await?;
            by_run.write(&part.body).await?;
            latest.write(&part.body).await?;
        }
        by_run.finish().await?;
        latest.finish().await?;

        let graph_stats = self.graph.stats();
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
            actions_enqueued: advanced.enqueued,
            cases: enforce.then_some(advanced),
            quarantined,
            directory_quota: ctx.directory_quota,
            graph_requests: graph_stats.requests,
            throttled: graph_stats.throttled,
            quarantine_reason: if quarantined {
                reason.map(|r| r.to_string())
            } else {
                None
            },
            dry_run: state.dry_run,
            warnings,
        };
        let json_name = format!("{run}/summary.json");
        let html_name = format!("{run}/report.html");
        let summary_bytes = Bytes::from(serde_json::to_vec_pretty(&summary).map_err(state_err)?);
        let html_bytes = Bytes::from(html::render(&summary, &stats));
        for (name, body) in [
            (json_name.as_str(), &summary_bytes),
            ("latest/summary.json", &summary_bytes),
            (html_name.as_str(), &html_bytes),
            ("latest/report.html", &html_bytes),
        ] {
            self.store
                .put(REPORTS_CONTAINER, name, body.clone(), Precondition::None)
                .await?;
        }

        state.status = if quarantined {
            RunStatus::Quarantined
        } else {
            RunStatus::Done
        };
        state.finished_at = Some(summary.finished_at);
        self.put_json(
            &run_path(run, "run.json"),
            &state,
            Precondition::IfMatch(etag),
        )
        .await?;
        if quarantined {
            let mut line = AuditRecord::new("quarantine", AuditOutcome::Skipped);
            line.time = self.clock.now();
            line.run = Some(run.to_string());
            line.detail = summary.quarantine_reason.clone();
            audit.record(&line).await?;
        }
        tracing::info!(run = %run, scanned = summary.scanned, rows = stats.by_verdict.values().sum::<u64>(), quarantined, "scan finished");
        Ok(RunOutcome {
            run: run.clone(),
            summary,
            csv: csv_name,
            json: json_name,
            html: html_name,
        })
    }

    /// The state of a run (`RunStatus`, `dormant release`).
    pub async fn run_state(&self, run: &RunId) -> Result<Option<RunState>, ScanError> {
        Ok(self
            .get_json::<RunState>(&run_path(run, "run.json"))
            .await?
            .map(|(s, _)| s))
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
        let mut later: Vec<String> = self
            .store
            .list(STATE_CONTAINER, "runs/")
            .await?
            .into_iter()
            .filter(|b| {
                b.name.ends_with("/run.json")
                    && b.name.as_str() > run_path(run, "run.json").as_str()
            })
            .map(|b| b.name)
            .collect();
        later.sort();
        for name in later {
            if let Some((s, _)) = self.get_json::<RunState>(&name).await?
                && s.status != RunStatus::Running
            {
                return Err(ScanError::NotReleasable(format!(
                    "run {} finished after {run}: release the newest run instead",
                    s.run
                )));
            }
        }
        let now = self.clock.now();
        self.acquire_lease(run, now).await?;
        let (_ctx, usage) = self.load_context(run).await?;
        let candidates: Vec<Candidate> = self
            .covered(run)
            .await?
            .iter()
            .flat_map(|l| l.candidates.iter().cloned())
            .collect();
        let cases = CaseStore::new(self.store.clone());
        let plan = lifecycle::advance::plan_run(&cases, &candidates, self.clock.now()).await?;
        let audit = AuditLog::new(self.store.clone());
        let advanced = self
            .lifecycle(&audit)
            .advance(run, &plan, &candidates, usage.as_ref())
            .await?;
        if state.status != RunStatus::Released {
            let mut line = AuditRecord::new("release", AuditOutcome::Done);
            line.time = now;
            line.run = Some(run.to_string());
            line.detail = Some(format!(
                "opened={};enqueued={}",
                advanced.opened, advanced.enqueued
            ));
            audit.record(&line).await?;
            let (_, etag) = self
                .get_json::<RunState>(&run_path(run, "run.json"))
                .await?
                .ok_or_else(|| ScanError::State(format!("run {run} has no state")))?;
            state.status = RunStatus::Released;
            self.put_json(
                &run_path(run, "run.json"),
                &state,
                Precondition::IfMatch(etag),
            )
            .await?;
        }
        self.release_lease(run).await?;
        Ok(advanced)
    }
}
