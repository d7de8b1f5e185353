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

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::context::{ContextError, RunContext};
use super::message::{PARTITIONS_PER_MESSAGE, ScanMessage, ScanStep};
use super::partition::Partition;
use super::usage::UsageIndex;
use super::worker::{PART_BLOCK, PartitionError, PartitionResult, RowSink, scan_partition};
use crate::clock::Clock;
use crate::config::{Config, Mode};
use crate::graph::exchange::ExchangeAdmin;
use crate::graph::{GraphClient, PacerStats};
use crate::ids::RunId;
use crate::lifecycle::advance::{Advanced, Listed, Plan};
use crate::lifecycle::{CaseStore, Lifecycle, LifecycleError};
use crate::policy;
use crate::report::{CsvChunks, ReportStats, Summary, html};
use crate::store::audit::{AuditLog, AuditRecord, Outcome as AuditOutcome};
use crate::store::{
    BlobWriter, ETag, Precondition, REPORTS_CONTAINER, STATE_CONTAINER, SendOptions, Store,
    StoreError,
};

/// The queue of scan steps (`ScanContinue`).
pub const SCAN_QUEUE: &str = "dormant-scan";

/// A lease outlives any sane run; a crashed holder frees the tenant then.
/// Every step renews it once half of it has passed.
const LEASE_TTL: Duration = Duration::hours(6);
const LEASE_BLOB: &str = "scan.lease";

/// A finaliser that has not finished by then is presumed dead. Longer than
/// the longest invocation (10 minutes on Consumption).
const FINALIZE_CLAIM_TTL: Duration = Duration::minutes(15);

/// Partition records the finalise reads at once: a big tenant has
/// thousands of partitions.
const FINALIZE_READS: usize = 8;
/// Block size of the report CSV uploads.
const REPORT_BLOCK: usize = 1024 * 1024;
/// Rows parts the finalise opens ahead of the one it copies.
const PARTS_OPEN_AHEAD: usize = 2;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Done,
    /// Finished, but it would open too many cases: nothing was enqueued; it
    /// waits for `dormant release`.
    Quarantined,
    Released,
    /// Stopped by a failure retrying cannot fix (say, a permission the app
    /// lacks); `error` says which. The tenant is free for the next run.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Quarantined => "quarantined",
            Self::Released => "released",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub run: RunId,
    pub status: RunStatus,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `$top` of the run's partition pages.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Why a failed run stopped (no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    run: RunId,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FinalizeClaim {
    by: String,
    until: DateTime<Utc>,
}

/// A leaf partition's record: its result and where its rows are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recorded {
    #[serde(flatten)]
    result: PartitionResult,
    /// `None` when the partition holds no row.
    rows_blob: Option<String>,
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
    /// Partitions paged at once.
    pub concurrency: usize,
    /// `$top` of partition pages (smaller splits sooner; tests).
    pub page_size: u32,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
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

fn parts_prefix(run: &RunId) -> String {
    run_path(run, "parts/")
}

fn leaf_blob(run: &RunId, p: &Partition) -> String {
    run_path(run, &format!("parts/{}.json", p.key()))
}

fn split_blob(run: &RunId, p: &Partition) -> String {
    run_path(run, &format!("parts/{}.split.json", p.key()))
}

fn rows_blob(run: &RunId, p: &Partition, attempt: &str) -> String {
    run_path(run, &format!("parts/{}.{attempt}.csv", p.key()))
}

fn state_err(e: serde_json::Error) -> ScanError {
    ScanError::State(e.to_string())
}

fn short_random() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// What the records say about the partition tree.
#[derive(Debug, Default)]
struct Recordings {
    leaves: BTreeSet<String>,
    splits: BTreeSet<String>,
}

impl Recordings {
    /// Walks from the roots: a leaf covers its prefix, a split hands it to
    /// its children. A leaf wins over a split of the same partition (two
    /// attempts saw different sizes), so nobody is counted twice.
    fn walk(&self) -> (Vec<Partition>, Vec<Partition>) {
        let mut queue: VecDeque<Partition> = Partition::roots().into();
        let (mut leaves, mut missing) = (Vec::new(), Vec::new());
        while let Some(p) = queue.pop_front() {
            let key = p.key();
            if self.leaves.contains(&key) {
                leaves.push(p);
            } else if self.splits.contains(&key) {
                queue.extend(p.children());
            } else {
                missing.push(p);
            }
        }
        leaves.sort();
        (leaves, missing)
    }
}

/// Rows of a partition, streamed to a part blob opened on the first row
/// (most partitions of a big tenant have rows; many small ones have none).
struct LazyBlobSink {
    store: Store,
    name: String,
    writer: Option<BlobWriter>,
}

impl RowSink for LazyBlobSink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.writer.is_none() {
            self.writer = Some(
                self.store
                    .upload_with_block_size(
                        STATE_CONTAINER,
                        &self.name,
                        Precondition::None,
                        PART_BLOCK,
                    )
                    .await?,
            );
        }
        match self.writer.as_mut() {
            Some(w) => w.write(&bytes).await,
            None => unreachable!("the writer was just opened"),
        }
    }

    /// An unfinished upload commits nothing: dropping it drops the rows.
    fn restart(&mut self) {
        self.writer = None;
    }
}

/// Where the children of a split go.
#[derive(Clone)]
enum Children {
    /// Scanned by this process (the CLI).
    Local,
    /// Queued for any instance, before the split is recorded (so a crash in
    /// between re-splits and re-queues rather than losing them).
    Queue { tenant: String },
}

enum Attempt {
    Recorded(PartitionResult),
    /// Already recorded by someone else before we started.
    AlreadyDone,
    /// Not started: the time budget ran out.
    Deferred(Partition),
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
        let run = match self.unfinished_run().await? {
            Some(run) => {
                tracing::info!(run = %run, "resuming an unfinished scan");
                self.acquire_lease(&run, now).await?;
                run
            }
            None => {
                self.create_run(now, options.dry_run, options.page_size)
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
    pub async fn begin(&self, dry_run: bool, rt: &ScanRuntime) -> Result<Begun, ScanError> {
        self.store.ensure_defaults().await?;
        self.ensure_scan_queue(rt).await?;
        let now = self.clock.now();
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
                };
                (begun, ScanStep::Sweep)
            }
            None => {
                let run = self.create_run(now, dry_run, rt.page_size).await?;
                let begun = Begun {
                    run,
                    resumed: false,
                    dry_run,
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

    /// Marks a run failed (a failure no retry can fix) and frees the
    /// tenant. A run that is not running any more is left as it is.
    pub async fn fail(&self, run: &RunId, reason: &str) -> Result<(), ScanError> {
        let (mut state, etag) = self.state(run).await?;
        if state.status != RunStatus::Running {
            return Ok(());
        }
        state.status = RunStatus::Failed;
        state.finished_at = Some(self.clock.now());
        state.error = Some(reason.chars().take(500).collect());
        match self
            .put_json(
                &run_path(run, "run.json"),
                &state,
                Precondition::IfMatch(etag),
            )
            .await
        {
            // Someone else moved it on (finished or failed it): theirs stands.
            Err(ScanError::Store(e)) if e.is_conflict() => return Ok(()),
            other => other.map(|_| ())?,
        }
        tracing::warn!(run = %run, reason, "scan run failed");
        self.release_lease(run).await
    }

    /// Frees the tenant's lease if `run` holds it, so the next StartScan
    /// or NightlyScan sweeps the run up (its step's message is about to be
    /// poisoned).
    pub async fn let_go(&self, run: &RunId) -> Result<(), ScanError> {
        self.release_lease(run).await
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

    /// Queues `partitions` a few per message.
    async fn hand_on(
        &self,
        run: &RunId,
        tenant: &str,
        partitions: &[Partition],
    ) -> Result<(), ScanError> {
        for chunk in partitions.chunks(PARTITIONS_PER_MESSAGE) {
            self.send(&ScanMessage::partitions(tenant, run, chunk), None)
                .await?;
        }
        Ok(())
    }

    async fn create_run(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        page_size: u32,
    ) -> Result<RunId, ScanError> {
        let run = RunId::new(now);
        self.acquire_lease(&run, now).await?;
        let state = RunState {
            run: run.clone(),
            status: RunStatus::Running,
            dry_run,
            started_at: now,
            finished_at: None,
            page_size: page_size.clamp(1, DEFAULT_PAGE_SIZE),
            error: None,
        };
        self.put_json(
            &run_path(&run, "run.json"),
            &state,
            Precondition::IfNoneMatch,
        )
        .await?;
        tracing::info!(run = %run, dry_run, "scan run created");
        Ok(run)
    }

    async fn state(&self, run: &RunId) -> Result<(RunState, ETag), ScanError> {
        self.get_json::<RunState>(&run_path(run, "run.json"))
            .await?
            .ok_or_else(|| ScanError::UnknownRun(run.to_string()))
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
        ctx.cases = CaseStore::new(self.store.clone())
            .views()
            .await
            .map_err(LifecycleError::from)?;
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

    /// The newest run, if it is still `running`. Every run is created
    /// under the lease, so the lease blob (expired or not) names the newest
    /// one: no listing of every run's records.
    async fn unfinished_run(&self) -> Result<Option<RunId>, ScanError> {
        let Some((lease, _)) = self.get_json::<Lease>(LEASE_BLOB).await? else {
            return Ok(None);
        };
        Ok(self
            .get_json::<RunState>(&run_path(&lease.run, "run.json"))
            .await?
            .filter(|(state, _)| state.status == RunStatus::Running)
            .map(|(state, _)| state.run))
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

    /// Renews the run's lease once half of it has passed. Losing the race
    /// to another step of the same run is fine: it renewed.
    async fn keep_lease(&self, run: &RunId) -> Result<(), ScanError> {
        let now = self.clock.now();
        let Some((held, etag)) = self.get_json::<Lease>(LEASE_BLOB).await? else {
            return self.acquire_lease(run, now).await;
        };
        let ours_or_free = held.run == *run || held.expires_at <= now;
        if !ours_or_free || held.expires_at - now > LEASE_TTL / 2 {
            return Ok(());
        }
        let lease = Lease {
            run: run.clone(),
            expires_at: now + LEASE_TTL,
        };
        match self
            .put_json(LEASE_BLOB, &lease, Precondition::IfMatch(etag))
            .await
        {
            Err(ScanError::Store(e)) if e.is_conflict() => Ok(()),
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

    async fn recordings(&self, run: &RunId) -> Result<Recordings, ScanError> {
        recordings(&self.store, run).await
    }

    /// Whether `p` has a record already (a redelivered message).
    async fn is_recorded(&self, run: &RunId, p: &Partition) -> Result<bool, ScanError> {
        let prefix = run_path(run, &format!("parts/{}.", p.key()));
        Ok(self
            .store
            .list(STATE_CONTAINER, &prefix)
            .await?
            .iter()
            .any(|b| b.name.ends_with(".json")))
    }

    /// Scans one partition and records it: rows first, then the result,
    /// create-only (an earlier attempt's record stands; ours is dropped).
    /// The children of a split are handed on before the split is recorded.
    pub async fn scan_and_record(
        &self,
        run: &RunId,
        ctx: &RunContext,
        usage: Option<&UsageIndex>,
        partition: &Partition,
    ) -> Result<PartitionResult, ScanError> {
        self.scan_and_record_with(run, ctx, usage, partition, &Children::Local)
            .await
    }

    async fn scan_and_record_with(
        &self,
        run: &RunId,
        ctx: &RunContext,
        usage: Option<&UsageIndex>,
        partition: &Partition,
        children: &Children,
    ) -> Result<PartitionResult, ScanError> {
        let mut sink = LazyBlobSink {
            store: self.store.clone(),
            name: rows_blob(run, partition, &short_random()),
            writer: None,
        };
        let result =
            scan_partition(&self.graph, &self.config, ctx, usage, partition, &mut sink).await?;
        if !result.split.is_empty() {
            if let Children::Queue { tenant } = children {
                self.hand_on(run, tenant, &result.split).await?;
            }
            return match self
                .put_json(
                    &split_blob(run, partition),
                    &result,
                    Precondition::IfNoneMatch,
                )
                .await
            {
                Err(ScanError::Store(e)) if e.is_conflict() => Ok(result),
                other => other.map(|_| result),
            };
        }
        let rows_name = match sink.writer.take() {
            Some(writer) => {
                writer.finish().await?;
                Some(sink.name.clone())
            }
            None => None,
        };
        let record = Recorded {
            result,
            rows_blob: rows_name.clone(),
        };
        match self
            .put_json(
                &leaf_blob(run, partition),
                &record,
                Precondition::IfNoneMatch,
            )
            .await
        {
            Ok(_) => Ok(record.result),
            Err(ScanError::Store(e)) if e.is_conflict() => {
                tracing::info!(partition = %partition.key(), "partition recorded by another attempt first; keeping that record");
                if let Some(name) = rows_name
                    && let Err(e) = self.store.delete(STATE_CONTAINER, &name).await
                {
                    tracing::debug!(error = %e, "could not delete a superseded rows blob");
                }
                let (winner, _) = self
                    .get_json::<Recorded>(&leaf_blob(run, partition))
                    .await?
                    .ok_or_else(|| ScanError::State("a recorded partition vanished".into()))?;
                Ok(winner.result)
            }
            Err(e) => Err(e),
        }
    }

    /// Scans `work` and, locally or through the queue, the children of
    /// whatever splits. With a deadline, partitions not started by then are
    /// handed to a continuation message (at least one is always started, so
    /// every invocation makes progress).
    #[allow(clippy::too_many_arguments)]
    async fn scan_partitions(
        &self,
        run: &RunId,
        ctx: Arc<RunContext>,
        usage: Arc<Option<UsageIndex>>,
        work: Vec<Partition>,
        slots: &Arc<Semaphore>,
        deadline: Option<Instant>,
        children: Children,
        progress: Arc<dyn Progress>,
    ) -> Result<StepOutcome, ScanError> {
        let mut queue: VecDeque<Partition> = work.into();
        let mut running: JoinSet<Result<Attempt, ScanError>> = JoinSet::new();
        let started = Arc::new(AtomicBool::new(false));
        let mut outcome = StepOutcome::default();
        let mut deferred = Vec::new();
        let check_first = matches!(children, Children::Queue { .. });
        loop {
            while let Some(p) = queue.pop_front() {
                let (me, run, ctx, usage) = (self.clone(), run.clone(), ctx.clone(), usage.clone());
                let (slots, started, children) = (slots.clone(), started.clone(), children.clone());
                running.spawn(async move {
                    let _slot = slots
                        .acquire_owned()
                        .await
                        .map_err(|_| ScanError::State("partition slots closed".into()))?;
                    if deadline.is_some_and(|d| Instant::now() >= d)
                        && started.load(Ordering::SeqCst)
                    {
                        return Ok(Attempt::Deferred(p));
                    }
                    started.store(true, Ordering::SeqCst);
                    if check_first && me.is_recorded(&run, &p).await? {
                        return Ok(Attempt::AlreadyDone);
                    }
                    me.scan_and_record_with(&run, &ctx, usage.as_ref().as_ref(), &p, &children)
                        .await
                        .map(Attempt::Recorded)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined.map_err(|e| ScanError::State(format!("partition task: {e}")))?? {
                Attempt::Recorded(result) => {
                    outcome.scanned += 1;
                    progress.partitions_added(result.split.len());
                    progress.partition_done(result.stats.scanned, result.rows);
                    match &children {
                        Children::Local => queue.extend(result.split),
                        Children::Queue { .. } => outcome.handed_on += result.split.len(),
                    }
                }
                Attempt::AlreadyDone => {}
                Attempt::Deferred(p) => deferred.push(p),
            }
        }
        if !deferred.is_empty() {
            deferred.sort();
            tracing::info!(run = %run, left = deferred.len(), "time budget spent; handing the rest to a continuation message");
            let tenant = match &children {
                Children::Queue { tenant } => tenant.clone(),
                Children::Local => self.config.tenant_id.clone(),
            };
            self.hand_on(run, &tenant, &deferred).await?;
            outcome.handed_on += deferred.len();
        }
        Ok(outcome)
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

    async fn graph_use(&self, run: &RunId) -> Result<GraphUse, ScanError> {
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

    /// The right to finalise: create-only, or taken over once it lapsed.
    async fn claim_finalize(&self, run: &RunId, by: &str) -> Result<Claim, ScanError> {
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
    async fn finalize_claimed(&self, run: &RunId, claim: ETag) -> Result<RunOutcome, ScanError> {
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

    /// Every leaf of the run, walking from the roots through the splits:
    /// proof that the whole user set was covered exactly once.
    async fn covered(&self, run: &RunId) -> Result<Vec<Partition>, ScanError> {
        let (leaves, missing) = self.recordings(run).await?.walk();
        if !missing.is_empty() {
            return Err(ScanError::Incomplete(missing.len()));
        }
        Ok(leaves)
    }

    /// The records of `leaves`, a few read ahead, in order. Only those in
    /// flight are held: a big tenant's candidates never sit in memory at once.
    fn leaf_records(
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
    /// partition at a time; then the open cases no partition listed.
    async fn advance_cases(
        &self,
        audit: &AuditLog,
        run: &RunId,
        plan: &Plan,
        leaves: &[Partition],
        usage: Option<&UsageIndex>,
    ) -> Result<Advanced, ScanError> {
        let lifecycle = self.lifecycle(audit);
        let mut listed = Listed::default();
        let mut total = Advanced::default();
        let mut records = self.leaf_records(run, leaves);
        while let Some(record) = records.try_next().await? {
            let done = lifecycle
                .advance_listed(run, plan, record.result.candidates, &mut listed)
                .await?;
            total.add(&done);
        }
        total.add(
            &lifecycle
                .advance_unlisted(run, plan, &listed, usage)
                .await?,
        );
        tracing::info!(run = %run, opened = total.opened, cancelled = total.cancelled, enqueued = total.enqueued, closed = total.closed, "cases advanced");
        Ok(total)
    }

    async fn finalize(&self, run: &RunId) -> Result<RunOutcome, ScanError> {
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
        let mut rows = Vec::with_capacity(leaves.len());
        let mut records = self.leaf_records(run, &leaves);
        while let Some(record) = records.try_next().await? {
            let leaf = record.result;
            stats.merge(leaf.stats);
            planned += leaf.candidates.len() as u64;
            gaps += leaf.enrichment_gaps;
            case_plan.count(&leaf.candidates);
            rows.extend(record.rows_blob);
        }

        let mut warnings = ctx.warnings.clone();
        if gaps > 0 {
            warnings.push(format!(
                "{gaps} user(s) could not be fully looked up (manager or mailbox kind); no action is planned from this run"
            ));
        }
        let actionable = ctx.actionable && gaps == 0;
        let enforce = self.config.policy.mode == Mode::Enforce;
        // New cases are what the quarantine limits; open cases go on.
        let reason = policy::quarantine(
            case_plan.new_cases,
            stats.scanned,
            &self.config.policy.quarantine,
        );
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
                "latest/inactive-users.csv",
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
            self.advance_cases(&audit, run, &case_plan, &leaves, usage.as_ref())
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
            cases: enforce.then_some(advanced),
            quarantined,
            directory_quota: ctx.directory_quota,
            graph_requests: graph.requests,
            throttled: graph.throttled,
            quarantine_reason: if quarantined {
                reason.map(|r| r.to_string())
            } else {
                None
            },
            dry_run: state.dry_run,
            warnings,
        };
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

/// Every partition record of the run, from one listing.
async fn recordings(store: &Store, run: &RunId) -> Result<Recordings, ScanError> {
    let prefix = parts_prefix(run);
    let mut rec = Recordings::default();
    for blob in store.list(STATE_CONTAINER, &prefix).await? {
        let name = &blob.name[prefix.len()..];
        if let Some(key) = name.strip_suffix(".split.json") {
            rec.splits.insert(key.to_owned());
        } else if let Some(key) = name.strip_suffix(".json") {
            rec.leaves.insert(key.to_owned());
        }
    }
    Ok(rec)
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

impl Scanner {
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
            .advance_cases(&audit, run, &plan, &leaves, usage.as_ref())
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

enum Claim {
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

    #[test]
    fn the_walk_prefers_a_leaf_and_lists_what_is_missing() {
        let a = Partition { prefix: "a".into() };
        let mut rec = Recordings::default();
        for p in Partition::roots() {
            if p != a {
                rec.leaves.insert(p.key());
            }
        }
        rec.splits.insert(a.key());
        let (_, missing) = rec.walk();
        assert_eq!(
            missing,
            a.children(),
            "a split hands its prefix to its children"
        );
        for c in a.children() {
            rec.leaves.insert(c.key());
        }
        let (leaves, missing) = rec.walk();
        assert!(missing.is_empty());
        assert_eq!(
            leaves.len(),
            Partition::roots().len() - 1 + a.children().len()
        );
        // Another attempt recorded `a` whole: it wins, children are ignored.
        rec.leaves.insert(a.key());
        let (leaves, missing) = rec.walk();
        assert!(missing.is_empty());
        assert_eq!(leaves.len(), Partition::roots().len());
    }

    #[tokio::test]
    async fn a_restarted_partition_writes_its_rows_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        store.ensure_defaults().await.expect("containers");
        let mut sink = LazyBlobSink {
            store: store.clone(),
            name: "runs/r/parts/61.x.csv".into(),
            writer: None,
        };
        sink.write(b"first attempt\n".to_vec())
            .await
            .expect("write");
        sink.restart();
        sink.write(b"second attempt\n".to_vec())
            .await
            .expect("write");
        sink.writer
            .take()
            .expect("open")
            .finish()
            .await
            .expect("finish");
        let blob = store
            .get(STATE_CONTAINER, "runs/r/parts/61.x.csv")
            .await
            .expect("rows");
        assert_eq!(blob.body.as_ref(), b"second attempt\n");
    }

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
