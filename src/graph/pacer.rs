//! The pacer: one per tenant, shared (`Arc`) by every Graph call to it.
//!
//! Token buckets hold each documented Graph budget, scaled by the share of the
//! budget this instance may use (several instances share one app's per-tenant
//! budget). A 429 pauses the whole bucket for its `Retry-After`, so the other
//! requests in flight wait too instead of each earning its own 429. Retries of
//! transient failures use jittered exponential backoff inside a bounded total time.

use super::settings::{GraphSettings, TenantKind, TenantSize};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A documented Graph budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Identity & access: 3,500 / 5,000 / 8,000 resource units per 10 s per app
    /// per tenant (tenants under 50 / 50–500 / over 500 users).
    IdentityAccess,
    /// Writes: 3,000 requests per app per tenant per 150 s.
    Writes,
    /// Identity reports (`directoryAudits`): 5 requests per 10 s.
    DirectoryAudits,
    /// `/invitations`: 150 requests per 5 s.
    Invitations,
    /// Usage reports: 14 calls per 10 min.
    Reports,
    /// Azure AD B2C: 200 requests per second per tenant (every request).
    B2c,
}

const BUDGETS: [Budget; 6] = [
    Budget::IdentityAccess,
    Budget::Writes,
    Budget::DirectoryAudits,
    Budget::Invitations,
    Budget::Reports,
    Budget::B2c,
];

impl Budget {
    fn index(self) -> usize {
        self as usize
    }

    /// (amount, window) from the Graph throttling documentation.
    fn documented(self, size: TenantSize) -> (f64, Duration) {
        match self {
            Budget::IdentityAccess => (
                match size {
                    TenantSize::Small => 3_500.0,
                    TenantSize::Medium => 5_000.0,
                    TenantSize::Large => 8_000.0,
                },
                Duration::from_secs(10),
            ),
            Budget::Writes => (3_000.0, Duration::from_secs(150)),
            Budget::DirectoryAudits => (5.0, Duration::from_secs(10)),
            Budget::Invitations => (150.0, Duration::from_secs(5)),
            Budget::Reports => (14.0, Duration::from_secs(600)),
            Budget::B2c => (200.0, Duration::from_secs(1)),
        }
    }
}

/// What one request costs, per budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCost(pub Vec<(Budget, u32)>);

/// The kind of a Graph request, for pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestClass {
    /// GET of one object: about 1 resource unit.
    ReadOne,
    /// GET of a collection (`GET users` ≈ 1–2 units; we charge 2).
    ReadList,
    /// PATCH/POST/DELETE on a directory object: resource units plus the write budget.
    Write,
    /// `GET auditLogs/directoryAudits`.
    DirectoryAudit,
    /// `POST /invitations`.
    Invitation,
    /// `GET reports/...` and `admin/reportSettings`.
    Report,
    /// Not a Graph budget (the token authority, userrealm): only counted.
    Unmetered,
}

impl RequestClass {
    pub fn cost(self, kind: TenantKind) -> RequestCost {
        let mut c = match self {
            RequestClass::ReadOne => vec![(Budget::IdentityAccess, 1)],
            RequestClass::ReadList => vec![(Budget::IdentityAccess, 2)],
            RequestClass::Write => vec![(Budget::IdentityAccess, 3), (Budget::Writes, 1)],
            RequestClass::DirectoryAudit => vec![(Budget::DirectoryAudits, 1)],
            // The invitation manager is its own service with its own limit
            // (150 per 5 s per tenant, Microsoft's throttling table): not
            // the directory's write quota.
            RequestClass::Invitation => vec![(Budget::Invitations, 1)],
            RequestClass::Report => vec![(Budget::Reports, 1)],
            RequestClass::Unmetered => return RequestCost(Vec::new()),
        };
        if kind == TenantKind::B2c {
            c.push((Budget::B2c, 1));
        }
        RequestCost(c)
    }
}

/// Pacer tuning (defaults from [`GraphSettings`]).
#[derive(Debug, Clone)]
pub struct PacerConfig {
    pub tenant_kind: TenantKind,
    pub tenant_size: TenantSize,
    /// Fraction (0, 1] of every documented budget this instance may spend.
    pub budget_share: f64,
    /// First retry delay; doubled per attempt, jittered, capped at `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A call stops retrying once this much time has passed since its first attempt.
    pub max_retry_time: Duration,
}

impl PacerConfig {
    pub fn from_settings(s: &GraphSettings) -> Self {
        Self {
            tenant_kind: s.tenant_kind,
            tenant_size: s.tenant_size,
            budget_share: s.budget_share,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_time: s.max_retry_time,
        }
    }
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
    /// What was spent in the last `window`, oldest first, and its sum.
    spent: VecDeque<(Instant, f64)>,
    spent_sum: f64,
}

/// One budget: at most `capacity` in any `window` (a sliding window, as
/// Graph counts: a token bucket alone lets a full bucket plus a window's
/// refill through, twice the limit, in the first window after a quiet
/// spell), smoothed by a token bucket of half the capacity refilled at the
/// budget's rate, so a backlog goes out evenly instead of in window-sized
/// bursts. The steady rate is the whole budget.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    burst: f64,
    per_sec: f64,
    window: Duration,
    state: Mutex<BucketState>,
}

impl Bucket {
    fn new(amount: f64, window: Duration, share: f64) -> Self {
        // At least one token, or a small share of "5 per 10 s" would never pass.
        let capacity = (amount * share).max(1.0);
        let burst = (capacity / 2.0).max(1.0);
        Self {
            capacity,
            burst,
            per_sec: capacity / window.as_secs_f64(),
            window,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
                paused_until: None,
                spent: VecDeque::new(),
                spent_sum: 0.0,
            }),
        }
    }

    /// Takes `cost`, or says how long to wait before asking again.
    fn try_take(&self, cost: f64, now: Instant) -> Result<(), Duration> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = st.paused_until {
            if until > now {
                return Err(until - now);
            }
            st.paused_until = None;
        }
        let elapsed = now.saturating_duration_since(st.last).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.per_sec).min(self.burst);
        st.last = now;
        while let Some(&(at, c)) = st.spent.front() {
            if at + self.window > now {
                break;
            }
            st.spent.pop_front();
            st.spent_sum -= c;
        }
        if st.spent.is_empty() {
            // No drift from float sums.
            st.spent_sum = 0.0;
        }
        let cost = cost.min(self.capacity);
        let token_cost = cost.min(self.burst);
        let token_wait = (token_cost - st.tokens).max(0.0) / self.per_sec;
        let window_wait = {
            let need = st.spent_sum + cost - self.capacity;
            if need <= 1e-9 {
                0.0
            } else {
                let mut freed = 0.0;
                let mut at = now + self.window;
                for &(t, c) in &st.spent {
                    freed += c;
                    if freed + 1e-9 >= need {
                        at = t + self.window;
                        break;
                    }
                }
                at.saturating_duration_since(now).as_secs_f64()
            }
        };
        if token_wait <= 0.0 && window_wait <= 0.0 {
            st.tokens -= token_cost;
            st.spent.push_back((now, cost));
            st.spent_sum += cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                token_wait.max(window_wait).max(0.001),
            ))
        }
    }

    /// Undoes a [`try_take`](Self::try_take) of `cost` made at `now`
    /// (another budget of the same request was short).
    fn give_back(&self, cost: f64, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let cost = cost.min(self.capacity);
        st.tokens = (st.tokens + cost.min(self.burst)).min(self.burst);
        if let Some(i) = st
            .spent
            .iter()
            .rposition(|&(t, c)| t == now && (c - cost).abs() < 1e-9)
            && let Some((_, c)) = st.spent.remove(i)
        {
            st.spent_sum -= c;
        }
    }

    fn pause(&self, until: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.paused_until.is_none_or(|u| u < until) {
            st.paused_until = Some(until);
        }
        // After a 429 the budget is spent: start again from empty.
        st.tokens = 0.0;
        st.last = until;
    }
}

/// Counters for the scan summary (`graphRequests`, `throttled`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// HTTP requests sent (every attempt and every page; a `$batch` call counts once).
    pub requests: u64,
    /// 429 answers, top-level or inside a `$batch`.
    pub throttled: u64,
    /// Attempts that were retries.
    pub retries: u64,
}

/// Shared pacing state for one tenant.
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    buckets: Vec<Bucket>,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
}

impl Pacer {
    pub fn new(config: PacerConfig) -> Self {
        let share = if config.budget_share.is_finite() && config.budget_share > 0.0 {
            config.budget_share.min(1.0)
        } else {
            1.0
        };
        let buckets = BUDGETS
            .iter()
            .map(|b| {
                let (amount, window) = b.documented(config.tenant_size);
                Bucket::new(amount, window, share)
            })
            .collect();
        Self {
            config,
            buckets,
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &PacerConfig {
        &self.config
    }

    /// Waits until every budget of `class` has room (and no bucket is paused by a 429).
    pub async fn acquire(&self, class: RequestClass) {
        let cost = class.cost(self.config.tenant_kind);
        loop {
            let now = Instant::now();
            let mut wait = None;
            // Check all first so that a paused bucket does not drain the others.
            for (budget, _) in &cost.0 {
                let b = &self.buckets[budget.index()];
                let st = b.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(until) = st.paused_until.filter(|u| *u > now) {
                    wait = Some(wait.map_or(until - now, |w: Duration| w.max(until - now)));
                }
            }
            if let Some(w) = wait {
                tokio::time::sleep(w).await;
                continue;
            }
            let mut taken = Vec::new();
            let mut short = None;
            for (budget, units) in &cost.0 {
                match self.buckets[budget.index()].try_take(f64::from(*units), now) {
                    Ok(()) => taken.push((*budget, *units)),
                    Err(w) => {
                        short = Some(w);
                        break;
                    }
                }
            }
            match short {
                None => return,
                Some(w) => {
                    // Give back what we took so a starved budget does not waste the others.
                    for (budget, units) in taken {
                        self.buckets[budget.index()].give_back(f64::from(units), now);
                    }
                    tokio::time::sleep(w).await;
                }
            }
        }
    }

    /// A 429 for a request of `class`: pause all its budgets for `retry_after`.
    pub fn throttled(&self, class: RequestClass, retry_after: Duration) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        // Saturating: a pause past what `Instant` holds (a broken header)
        // is as long as the longest one dormant takes.
        let now = Instant::now();
        let until = now
            .checked_add(retry_after.min(super::error::MAX_RETRY_AFTER))
            .unwrap_or(now);
        for (budget, _) in class.cost(self.config.tenant_kind).0 {
            self.buckets[budget.index()].pause(until);
        }
    }

    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> PacerStats {
        PacerStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// Jittered exponential backoff for retry number `attempt` (1-based):
    /// uniformly in [d/2, d] with d = min(max, base · 2^(attempt-1)).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let d = self
            .config
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.config.max_backoff);
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        d.mul_f64(jitter)
    }

    /// Starts the retry clock of one call.
    pub fn retry_budget(&self) -> RetryBudget {
        RetryBudget {
            deadline: Instant::now() + self.config.max_retry_time,
        }
    }
}

/// The bounded total time of one call's retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    deadline: Instant,
}

impl RetryBudget {
    /// Whether waiting `delay` and trying again still ends before the deadline.
    pub fn allows(&self, delay: Duration) -> bool {
        Instant::now()
            .checked_add(delay)
            .is_some_and(|t| t <= self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(share: f64, kind: TenantKind) -> Pacer {
        Pacer::new(PacerConfig {
            tenant_kind: kind,
            tenant_size: TenantSize::Small,
            budget_share: share,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_time: Duration::from_secs(120),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn reports_budget_allows_14_per_10_minutes() {
        let p = pacer(1.0, TenantKind::Workforce);
        let start = Instant::now();
        // Half the budget at once, then one per 600/14 s.
        for _ in 0..7 {
            p.acquire(RequestClass::Report).await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        p.acquire(RequestClass::Report).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(42) && waited <= Duration::from_secs(44),
            "{waited:?}"
        );
    }

    /// Graph counts a sliding window: after a quiet spell a token bucket
    /// alone would let a full bucket and a window's refill through in one
    /// window, twice the limit.
    #[tokio::test(start_paused = true)]
    async fn no_window_ever_holds_more_than_the_budget() {
        let p = pacer(1.0, TenantKind::Workforce);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..600 {
            p.acquire(RequestClass::Invitation).await;
            sent.push(start.elapsed());
        }
        // 150 per 5 s, in every 5 s window.
        for (i, at) in sent.iter().enumerate() {
            let within = sent[i..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(5))
                .count();
            assert!(within <= 150, "{within} invitations in 5 s from {at:?}");
        }
        // And the whole budget is used: 600 in about 20 s.
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(17_600), "{took:?}");
        // Invitations are the invitation manager's own budget, not writes.
        let start = Instant::now();
        p.acquire(RequestClass::Write).await;
        assert!(start.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn share_scales_the_budget() {
        let p = pacer(0.2, TenantKind::Workforce);
        // 5 per 10 s × 0.2 = 1 per 10 s.
        let start = Instant::now();
        p.acquire(RequestClass::DirectoryAudit).await;
        p.acquire(RequestClass::DirectoryAudit).await;
        assert!(start.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn identity_budget_refills_per_10s() {
        // Small tenant: 3,500 units / 10 s; a list costs 2 → half of 1,750
        // lists at once, then one per 2/350 s.
        let p = pacer(1.0, TenantKind::Workforce);
        let start = Instant::now();
        for _ in 0..875 {
            p.acquire(RequestClass::ReadList).await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        p.acquire(RequestClass::ReadList).await;
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert!(start.elapsed() <= Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn b2c_adds_its_per_second_budget() {
        let p = pacer(1.0, TenantKind::B2c);
        let start = Instant::now();
        for _ in 0..200 {
            p.acquire(RequestClass::ReadOne).await;
        }
        p.acquire(RequestClass::ReadOne).await;
        assert!(
            start.elapsed() >= Duration::from_millis(4),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_whole_bucket() {
        let p = pacer(1.0, TenantKind::Workforce);
        p.acquire(RequestClass::ReadOne).await;
        p.throttled(RequestClass::ReadList, Duration::from_secs(30));
        let start = Instant::now();
        // Another request of the same budget, not the one that was throttled, waits too.
        p.acquire(RequestClass::ReadOne).await;
        assert!(start.elapsed() >= Duration::from_secs(30));
        // Other budgets are not paused.
        let start = Instant::now();
        p.acquire(RequestClass::Report).await;
        assert!(start.elapsed() < Duration::from_millis(1));
        assert_eq!(p.stats().throttled, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_budget_is_bounded() {
        let p = pacer(1.0, TenantKind::Workforce);
        let budget = p.retry_budget();
        assert!(budget.allows(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(budget.allows(Duration::from_secs(20)));
        assert!(!budget.allows(Duration::from_secs(21)));
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let p = pacer(1.0, TenantKind::Workforce);
        for attempt in 1..=30 {
            let d = p.backoff(attempt);
            let full = Duration::from_millis(500)
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(Duration::from_secs(30));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn costs_follow_the_docs() {
        assert_eq!(
            RequestClass::Write.cost(TenantKind::B2c).0,
            vec![
                (Budget::IdentityAccess, 3),
                (Budget::Writes, 1),
                (Budget::B2c, 1)
            ]
        );
        assert!(RequestClass::Unmetered.cost(TenantKind::B2c).0.is_empty());
    }
}
