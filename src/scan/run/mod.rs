//! A scan run: one at a time per tenant (a lease), partitions scanned
//! concurrently and recorded one by one (so a killed run resumes where it
//! stopped, without losing or double-counting anyone), then finalised into
//! the report exactly once.
//!
//! Two ways to drive a run, over the same records:
//! - [`Scanner::run`] (the CLI): everything in this process, to the end;
//! - [`Scanner::begin`] + [`Scanner::step`] (Azure Functions): `begin`
//!   (StartScan, NightlyScan) only creates the run and queues its `start`
//!   message on [`SCAN_QUEUE`]; each `ScanContinue` invocation then does one
//!   [`ScanStep`]. Partitions fan out a few per message, so several
//!   instances share a big tenant; an invocation near its time budget stops
//!   starting partitions and queues the rest (FACTS: Consumption cuts an
//!   invocation at 10 minutes, an HTTP answer at 230 s).
//!
//! The jobs live in their own files: `lease` (the tenant's lease and the
//! run record), `plan` (the partition plan: scanning, recording, the
//! coverage walk) and `finalize` (report, quarantine, cases, release).
//!
//! State in `dormant-state`:
//! - `scan.lease`: which run holds the tenant, until when (ETag-guarded);
//! - `runs/{runId}/run.json`: status;
//! - `runs/{runId}/context.json`, `usage.bin`: what every partition shares;
//! - `runs/{runId}/parts/{key}.{attempt}.csv`: a partition's rows, then
//!   `{key}.json` (a leaf: its result, naming its rows blob) or
//!   `{key}.split.json` (split into its children). Results are written
//!   create-only: the first attempt to finish wins, so a partition scanned
//!   twice (a redelivered message) still counts once;
//! - `runs/{runId}/graph/{invocation}.json`: Graph requests per invocation;
//! - `runs/{runId}/finalize.json`: the finalise claim (create-only, with an
//!   expiry so a crashed finaliser is replaced).

mod finalize;
mod lease;
mod plan;

use finalize::Claim;
pub use finalize::{may_enqueue, report_names};
use lease::{LEASE_BLOB, Lease};
pub use lease::{RunState, RunStatus, ScanScope};
use plan::{Children, recordings};

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::context::{ContextError, RunContext};
use super::message::{ScanMessage, ScanStep};
use super::worker::PartitionError;
use crate::clock::Clock;
use crate::config::Config;
use crate::graph::exchange::ExchangeAdmin;
use crate::graph::{GraphClient, PacerStats};
use crate::ids::RunId;
use crate::lifecycle::{CaseStore, Lifecycle, LifecycleError};
use crate::policy::UsageIndex;
use crate::report::Summary;
use crate::store::audit::AuditLog;
use crate::store::{
    ETag, Precondition, REPORTS_CONTAINER, STATE_CONTAINER, SendOptions, Store, StoreError,
};

/// The queue of scan steps (`ScanContinue`).
pub const SCAN_QUEUE: &str = "dormant-scan";

/// How long an invocation keeps starting partitions. host.json sets
/// `functionTimeout` to 10 minutes (Consumption's maximum); what is left
/// covers partitions in flight and the finalise.
pub const DEFAULT_TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(6 * 60);

/// Partitions one instance pages at once, across all its invocations (the
/// host runs up to `batchSize + newBatchThreshold` = 24 messages at once).
pub const DEFAULT_PARTITION_SLOTS: usize = 16;

/// `$top` of a partition's pages. Graph caps pages at 120 users when
/// `signInActivity` is selected, whatever `$top` says; a partition whose
/// first page is full splits.
pub const DEFAULT_PAGE_SIZE: u32 = 999;

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
    #[error("no run {0} in this tenant")]
    UnknownRun(String),
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
            Self::State(_) | Self::UnknownRun(_) | Self::NotReleasable(_) => false,
            Self::Cases(e) => e.is_transient(),
        }
    }
}

/// Graph traffic of one invocation, summed into `summary.json`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct GraphUse {
    requests: u64,
    throttled: u64,
}

/// Options of one scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub dry_run: bool,
    pub scope: ScanScope,
    /// Partitions paged at once.
    pub concurrency: usize,
    /// `$top` of partition pages (smaller splits sooner; tests).
    pub page_size: u32,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            scope: ScanScope::All,
            concurrency: 16,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// What one `dormant serve` process shares across its scan invocations.
#[derive(Debug)]
pub struct ScanRuntime {
    /// Caps partitions paged at once by this instance, whatever the number
    /// of messages the host hands it concurrently.
    pub slots: Arc<Semaphore>,
    /// How long one invocation keeps starting partitions.
    pub time_budget: std::time::Duration,
    /// `$top` of partition pages of new runs.
    pub page_size: u32,
    ledger: GraphLedger,
    queue_ready: tokio::sync::OnceCell<()>,
}

impl Default for ScanRuntime {
    fn default() -> Self {
        Self::new(DEFAULT_TIME_BUDGET, DEFAULT_PARTITION_SLOTS)
    }
}

impl ScanRuntime {
    pub fn new(time_budget: std::time::Duration, slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            time_budget,
            page_size: DEFAULT_PAGE_SIZE,
            ledger: GraphLedger::default(),
            queue_ready: tokio::sync::OnceCell::new(),
        }
    }

    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, DEFAULT_PAGE_SIZE);
        self
    }
}

/// The Graph client's counters are per process and shared by concurrent
/// invocations: each report takes what was not reported yet, so the
/// per-invocation records sum to the process's traffic, never more. (Other
/// jobs' calls in the same process between two scan steps, a GDPR export
/// say, are counted with the scan.)
#[derive(Debug, Default)]
struct GraphLedger(Mutex<PacerStats>);

impl GraphLedger {
    fn take(&self, now: PacerStats) -> GraphUse {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let used = GraphUse {
            requests: now.requests.saturating_sub(seen.requests),
            throttled: now.throttled.saturating_sub(seen.throttled),
        };
        *seen = now;
        used
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

/// How [`Scanner::begin`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begun {
    pub run: RunId,
    /// The tenant's unfinished run had stalled (its lease lapsed): it was
    /// picked up again instead of starting another.
    pub resumed: bool,
    /// The run's own setting (a resumed run keeps the one it started with).
    pub dry_run: bool,
    /// The run's own scope (likewise).
    pub scope: ScanScope,
}

/// What one step did (the invocation's ReturnValue).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// Partitions scanned and recorded by this invocation.
    pub scanned: usize,
    /// Partitions handed to new messages (fan-out, split children, or the
    /// rest after the time budget).
    pub handed_on: usize,
    pub finalized: bool,
    /// The run was not running any more: nothing to do.
    pub already_finished: bool,
}

/// A run as `RunStatus` shows it.
#[derive(Debug, Clone)]
pub struct RunView {
    pub state: RunState,
    pub coverage: CoverageCounts,
    /// The finished run's summary.
    pub summary: Option<Summary>,
    /// Report blob names (`dormant-reports/…`), once finished.
    pub reports: Option<[String; 3]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoverageCounts {
    pub leaves: usize,
    pub splits: usize,
    /// Partitions the coverage walk still needs a result for.
    pub pending: usize,
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

fn state_err(e: serde_json::Error) -> ScanError {
    ScanError::State(e.to_string())
}

fn short_random() -> String {
    format!("{:08x}", rand::random::<u32>())
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
            // The scan enqueues steps and never notifies itself.
            attest: None,
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
        let run = match self.unfinished_run().await? {
            Some(run) => {
                tracing::info!(run = %run, "resuming an unfinished scan");
                self.acquire_lease(&run, now).await?;
                run
            }
            None => {
                self.create_run(now, options.dry_run, options.scope, options.page_size)
                    .await?
            }
        };
        let (state, _) = self.state(&run).await?;
        let (ctx, usage) = self.prepare_context(&state).await?;
        let ledger = GraphLedger::default();
        let missing = self.recordings(&run).await?.walk().1;
        progress.partitions_added(missing.len());
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        self.scan_partitions(
            &run,
            Arc::new(ctx),
            Arc::new(usage),
            missing,
            &slots,
            None,
            Children::Local,
            progress,
        )
        .await?;
        self.record_graph_use(&run, &ledger).await?;
        let invocation = format!("cli-{}", short_random());
        let claim = match self.claim_finalize(&run, &invocation).await? {
            Claim::Won(claim) => claim,
            Claim::Finished => return Err(ScanError::State(format!("run {run} already finished"))),
            Claim::Held(until) => {
                return Err(ScanError::Busy(format!(
                    "{run} is being finalised by another instance (until {until})"
                )));
            }
        };
        let outcome = self.finalize_claimed(&run, claim).await?;
        self.release_lease(&run).await?;
        Ok(outcome)
    }

    /// Starts a run for the Functions (StartScan, NightlyScan): the lease,
    /// the run record and its `start` message; the work happens in
    /// [`step`](Self::step) invocations. A stalled unfinished run (its
    /// lease lapsed: a lost or poisoned message) is swept up instead.
    pub async fn begin(
        &self,
        dry_run: bool,
        scope: ScanScope,
        rt: &ScanRuntime,
    ) -> Result<Begun, ScanError> {
        self.store.ensure_defaults().await?;
        self.ensure_scan_queue(rt).await?;
        let now = self.clock.now();
        if let Some((held, _)) = self.get_json::<Lease>(LEASE_BLOB).await? {
            // The previous run's decision lines, if an append failed.
            self.record_run_lines(&held.run).await?;
        }
        if let Some((held, _)) = self.get_json::<Lease>(LEASE_BLOB).await?
            && held.expires_at > now
            && self
                .get_json::<RunState>(&run_path(&held.run, "run.json"))
                .await?
                .is_some_and(|(state, _)| state.status == RunStatus::Running)
        {
            return Err(ScanError::Busy(held.run.to_string()));
        }
        let (begun, step) = match self.unfinished_run().await? {
            Some(run) => {
                tracing::info!(run = %run, "an unfinished scan had stalled; sweeping it up");
                self.acquire_lease(&run, now).await?;
                let (state, _) = self.state(&run).await?;
                let begun = Begun {
                    run,
                    resumed: true,
                    dry_run: state.dry_run,
                    scope: state.scope,
                };
                (begun, ScanStep::Sweep)
            }
            None => {
                let run = self.create_run(now, dry_run, scope, rt.page_size).await?;
                let begun = Begun {
                    run,
                    resumed: false,
                    dry_run,
                    scope,
                };
                (begun, ScanStep::Start)
            }
        };
        let message = ScanMessage::new(&self.config.tenant_id, &begun.run, step);
        if let Err(e) = self.send(&message, None).await {
            // Without its message the run would sit on the lease for hours:
            // let the next StartScan or NightlyScan sweep it up.
            self.release_lease(&begun.run).await?;
            return Err(e);
        }
        Ok(begun)
    }

    /// One `ScanContinue` invocation: does `message`'s step within the
    /// runtime's time budget and queues whatever is left.
    pub async fn step(
        &self,
        message: &ScanMessage,
        rt: &ScanRuntime,
        invocation: &str,
    ) -> Result<StepOutcome, ScanError> {
        let deadline = Instant::now() + rt.time_budget;
        self.ensure_scan_queue(rt).await?;
        let run = &message.run;
        let (state, _) = self.state(run).await?;
        if state.status != RunStatus::Running {
            // A retried message of a finished run: its decision lines may
            // still lack the log (an append that failed once).
            self.record_run_lines(run).await?;
            return Ok(StepOutcome {
                already_finished: true,
                ..StepOutcome::default()
            });
        }
        self.keep_lease(run).await?;
        let outcome = match message.step {
            // A stalled run may have stalled before its context was
            // gathered: a sweep prepares it too (read back when present).
            ScanStep::Start | ScanStep::Sweep => {
                self.prepare_context(&state).await?;
                self.sweep(run, invocation, &rt.ledger).await?
            }
            ScanStep::Finalize => self.sweep(run, invocation, &rt.ledger).await?,
            ScanStep::Partitions => {
                let (ctx, usage) = self.load_context(run).await?;
                let children = Children::Queue {
                    tenant: message.tenant.clone(),
                };
                let mut outcome = self
                    .scan_partitions(
                        run,
                        Arc::new(ctx),
                        Arc::new(usage),
                        message.partition_list(),
                        &rt.slots,
                        Some(deadline),
                        children,
                        Arc::new(()),
                    )
                    .await?;
                if outcome.handed_on == 0 {
                    let (_, missing) = self.recordings(run).await?.walk();
                    if missing.is_empty() {
                        outcome.finalized = self
                            .finalize_step(run, Some(deadline), invocation, &rt.ledger)
                            .await?;
                    }
                }
                outcome
            }
        };
        // Recorded last: a step that failed is retried and reports then.
        self.record_graph_use(run, &rt.ledger).await?;
        Ok(outcome)
    }

    /// Fans every partition without a result out to the queue, or
    /// finalises when there is none.
    async fn sweep(
        &self,
        run: &RunId,
        invocation: &str,
        ledger: &GraphLedger,
    ) -> Result<StepOutcome, ScanError> {
        let (_, missing) = self.recordings(run).await?.walk();
        if missing.is_empty() {
            let finalized = self.finalize_step(run, None, invocation, ledger).await?;
            return Ok(StepOutcome {
                finalized,
                ..StepOutcome::default()
            });
        }
        self.hand_on(run, &self.config.tenant_id, &missing).await?;
        Ok(StepOutcome {
            handed_on: missing.len(),
            ..StepOutcome::default()
        })
    }

    /// Finalises if this invocation wins the claim and has the time (an
    /// invocation that only swept always has: it did nothing else);
    /// otherwise leaves a `finalize` message for later.
    async fn finalize_step(
        &self,
        run: &RunId,
        deadline: Option<Instant>,
        invocation: &str,
        ledger: &GraphLedger,
    ) -> Result<bool, ScanError> {
        let later = |delay: std::time::Duration| {
            let message = ScanMessage::new(&self.config.tenant_id, run, ScanStep::Finalize);
            async move { self.send(&message, Some(delay)).await }
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!(run = %run, "time budget spent; the finalise goes to a new invocation");
            later(std::time::Duration::ZERO).await?;
            return Ok(false);
        }
        match self.claim_finalize(run, invocation).await? {
            Claim::Won(claim) => {
                // This invocation's own traffic belongs in the summary too.
                self.record_graph_use(run, ledger).await?;
                self.finalize_claimed(run, claim).await?;
                self.release_lease(run).await?;
                Ok(true)
            }
            Claim::Finished => Ok(false),
            Claim::Held(until) => {
                // If that finaliser dies, this message takes over.
                let wait = (until - self.clock.now() + Duration::seconds(5))
                    .to_std()
                    .unwrap_or_default();
                later(wait).await?;
                Ok(false)
            }
        }
    }

    async fn ensure_scan_queue(&self, rt: &ScanRuntime) -> Result<(), ScanError> {
        rt.queue_ready
            .get_or_try_init(|| self.store.ensure_queue(SCAN_QUEUE))
            .await?;
        Ok(())
    }

    async fn send(
        &self,
        message: &ScanMessage,
        delay: Option<std::time::Duration>,
    ) -> Result<(), ScanError> {
        self.store
            .send(
                SCAN_QUEUE,
                &message.to_text(),
                SendOptions {
                    initial_delay: delay.filter(|d| !d.is_zero()),
                    ttl: None,
                },
            )
            .await?;
        Ok(())
    }

    /// The run's context: read back if gathered already, else gathered
    /// now. Create-only, so two `start` deliveries agree on one context.
    async fn prepare_context(
        &self,
        state: &RunState,
    ) -> Result<(RunContext, Option<UsageIndex>), ScanError> {
        let run = &state.run;
        if self
            .get_json::<serde_json::Value>(&run_path(run, "context.json"))
            .await?
            .is_some()
        {
            return self.load_context(run).await;
        }
        let (mut ctx, usage) =
            RunContext::gather(&self.graph, &self.config, run.clone(), state.started_at).await?;
        ctx.page_size = state.page_size;
        ctx.scope = state.scope;
        let cases = CaseStore::new(self.store.clone());
        ctx.cases = cases.views().await.map_err(LifecycleError::from)?;
        ctx.holds = cases.holds().await.map_err(LifecycleError::from)?;
        if let Some(u) = &usage {
            self.store
                .put(
                    STATE_CONTAINER,
                    &run_path(run, "usage.bin"),
                    Bytes::from(u.to_bytes()),
                    Precondition::None,
                )
                .await?;
        }
        match self
            .put_json(
                &run_path(run, "context.json"),
                &ctx,
                Precondition::IfNoneMatch,
            )
            .await
        {
            Ok(_) => Ok((ctx, usage)),
            Err(ScanError::Store(e)) if e.is_conflict() => self.load_context(run).await,
            Err(e) => Err(e),
        }
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
        get_state_json(&self.store, name).await
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

    /// Records the Graph traffic not reported yet under this run.
    async fn record_graph_use(&self, run: &RunId, ledger: &GraphLedger) -> Result<(), ScanError> {
        let used = ledger.take(self.graph.stats());
        if used.requests == 0 && used.throttled == 0 {
            return Ok(());
        }
        let name = run_path(
            run,
            &format!("graph/{}.json", uuid::Uuid::new_v4().simple()),
        );
        self.put_json(&name, &used, Precondition::IfNoneMatch)
            .await
            .map(|_| ())
    }
}

/// A JSON blob of `dormant-state` with its ETag; `None` if absent.
async fn get_state_json<T: for<'de> Deserialize<'de>>(
    store: &Store,
    name: &str,
) -> Result<Option<(T, ETag)>, ScanError> {
    match store.get(STATE_CONTAINER, name).await {
        Ok(blob) => Ok(Some((
            serde_json::from_slice(&blob.body).map_err(state_err)?,
            blob.etag,
        ))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What `RunStatus` shows; `None` for a run this tenant never had.
pub async fn view(store: &Store, run: &RunId) -> Result<Option<RunView>, ScanError> {
    let Some((state, _)) = get_state_json::<RunState>(store, &run_path(run, "run.json")).await?
    else {
        return Ok(None);
    };
    let recordings = recordings(store, run).await?;
    let (_, missing) = recordings.walk();
    let coverage = CoverageCounts {
        leaves: recordings.leaves.len(),
        splits: recordings.splits.len(),
        pending: missing.len(),
    };
    // A failed run wrote no report.
    let (summary, reports) = if matches!(state.status, RunStatus::Running | RunStatus::Failed) {
        (None, None)
    } else {
        let names = report_names(run);
        let summary = match store.get(REPORTS_CONTAINER, &names[1]).await {
            Ok(blob) => Some(serde_json::from_slice(&blob.body).map_err(state_err)?),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        (
            summary,
            Some(names.map(|n| format!("{REPORTS_CONTAINER}/{n}"))),
        )
    };
    Ok(Some(RunView {
        state,
        coverage,
        summary,
        reports,
    }))
}

impl Scanner {}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_ledger_never_reports_the_same_requests_twice() {
        let ledger = GraphLedger::default();
        let at = |requests, throttled| PacerStats {
            requests,
            throttled,
            retries: 0,
        };
        assert_eq!(ledger.take(at(10, 1)).requests, 10);
        let second = ledger.take(at(25, 1));
        assert_eq!((second.requests, second.throttled), (15, 0));
        assert_eq!(ledger.take(at(25, 1)).requests, 0);
    }
}
