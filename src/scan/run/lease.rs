//! The tenant's scan lease and the run record: one run at a time per
//! tenant (`scan.lease`, ETag-guarded, renewed by every step), each run
//! created under it with its `runs/{runId}/run.json`, and failed or freed
//! explicitly so the next StartScan or NightlyScan can sweep it up.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_PAGE_SIZE, ScanError, Scanner, run_path};
use crate::ids::RunId;
use crate::policy::RunFigures;
use crate::store::audit::{AuditLog, AuditRecord};
use crate::store::{ETag, Precondition};

/// A lease outlives any sane run; a crashed holder frees the tenant then.
/// Every step renews it once half of it has passed.
pub(super) const LEASE_TTL: Duration = Duration::hours(6);
pub(super) const LEASE_BLOB: &str = "scan.lease";

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

/// What a run pages: every user (the nightly scan), or guests only (the
/// separate guest audit, `dormant scan --guests-only`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanScope {
    #[default]
    All,
    /// Pages `userType eq 'Guest'` only. It judges and advances the guests
    /// it lists and nothing else: an open case it did not list (every
    /// member's) waits for the next full run, its figures are compared
    /// with the last guest audit's (never the full scan's), and it never
    /// replaces `latest/`.
    Guests,
}

impl ScanScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Guests => "guests",
        }
    }

    pub fn is_all(&self) -> bool {
        *self == Self::All
    }

    /// The filter ANDed with each partition's (`None`: every user).
    pub fn filter(self) -> Option<&'static str> {
        match self {
            Self::All => None,
            Self::Guests => Some("userType eq 'Guest'"),
        }
    }

    /// `dormant-reports/` folder of the newest run of this scope.
    pub fn latest_folder(self) -> &'static str {
        match self {
            Self::All => "latest",
            Self::Guests => "latest-guests",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub run: RunId,
    pub status: RunStatus,
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "ScanScope::is_all")]
    pub scope: ScanScope,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `$top` of the run's partition pages.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Why a failed run stopped (no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the data-quality breaker compares, once the run is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<RunFigures>,
    /// Audit lines of the run's decisions (quarantine, release), written
    /// here with the decision and then appended, so a failed append is
    /// finished by whoever reads the run next and never lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<RunLine>,
}

/// A decision's audit line and whether the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunLine {
    pub record: AuditRecord,
    #[serde(default)]
    pub recorded: bool,
}

impl RunLine {
    /// A decision's line, kept with the run until the log holds it.
    pub fn pending(record: AuditRecord) -> Self {
        Self {
            record,
            recorded: false,
        }
    }
}

pub(super) fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Lease {
    pub(super) run: RunId,
    pub(super) expires_at: DateTime<Utc>,
}

impl Scanner {
    pub(super) async fn create_run(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        scope: ScanScope,
        page_size: u32,
    ) -> Result<RunId, ScanError> {
        let run = RunId::new(now);
        self.acquire_lease(&run, now).await?;
        let state = RunState {
            run: run.clone(),
            status: RunStatus::Running,
            dry_run,
            scope,
            started_at: now,
            finished_at: None,
            page_size: page_size.clamp(1, DEFAULT_PAGE_SIZE),
            error: None,
            figures: None,
            lines: Vec::new(),
        };
        self.put_json(
            &run_path(&run, "run.json"),
            &state,
            Precondition::IfNoneMatch,
        )
        .await?;
        tracing::info!(run = %run, dry_run, scope = scope.as_str(), "scan run created");
        Ok(run)
    }

    pub(super) async fn state(&self, run: &RunId) -> Result<(RunState, ETag), ScanError> {
        self.get_json::<RunState>(&run_path(run, "run.json"))
            .await?
            .ok_or_else(|| ScanError::UnknownRun(run.to_string()))
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

    /// The newest run, if it is still `running`. Every run is created
    /// under the lease, so the lease blob (expired or not) names the newest
    /// one: no listing of every run's records.
    pub(super) async fn unfinished_run(&self) -> Result<Option<RunId>, ScanError> {
        let Some((lease, _)) = self.get_json::<Lease>(LEASE_BLOB).await? else {
            return Ok(None);
        };
        Ok(self
            .get_json::<RunState>(&run_path(&lease.run, "run.json"))
            .await?
            .filter(|(state, _)| state.status == RunStatus::Running)
            .map(|(state, _)| state.run))
    }

    pub(super) async fn acquire_lease(
        &self,
        run: &RunId,
        now: DateTime<Utc>,
    ) -> Result<(), ScanError> {
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
    pub(super) async fn keep_lease(&self, run: &RunId) -> Result<(), ScanError> {
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

    pub(super) async fn release_lease(&self, run: &RunId) -> Result<(), ScanError> {
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

    /// The state of a run (`RunStatus`, `dormant release`).
    pub async fn run_state(&self, run: &RunId) -> Result<Option<RunState>, ScanError> {
        Ok(self
            .get_json::<RunState>(&run_path(run, "run.json"))
            .await?
            .map(|(s, _)| s))
    }

    /// Appends the run's decision lines the log does not hold yet (a
    /// failed append, a crash after the decision), then marks them.
    pub(super) async fn record_run_lines(&self, run: &RunId) -> Result<(), ScanError> {
        for _ in 0..4 {
            let Some((mut state, etag)) = self
                .get_json::<RunState>(&run_path(run, "run.json"))
                .await?
            else {
                return Ok(());
            };
            if state.lines.iter().all(|l| l.recorded) {
                return Ok(());
            }
            let audit = AuditLog::new(self.store.clone());
            for line in state.lines.iter_mut().filter(|l| !l.recorded) {
                audit.ensure_recorded(&line.record).await?;
                line.recorded = true;
            }
            match self
                .put_json(
                    &run_path(run, "run.json"),
                    &state,
                    Precondition::IfMatch(etag),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(ScanError::Store(e)) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ScanError::Busy(format!("run {run} kept changing")))
    }
}
