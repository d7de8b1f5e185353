//! The simulator's clock: real time plus an offset tests can move forward.
//!
//! Every date the simulator hands out or checks (sign-in times, token and
//! skiptoken expiry, throttling windows, the 30-day deleted-items retention,
//! report download links) is read from this clock, so a test can jump a month
//! ahead and watch soft-deleted users disappear.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// A cheap, clonable handle on the simulated clock.
#[derive(Clone, Debug)]
pub struct SimClock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    start_sim: DateTime<Utc>,
    start_real: Instant,
    offset_ms: AtomicI64,
}

impl SimClock {
    /// A clock that reads `start` now and then ticks with real time.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            inner: Arc::new(ClockInner {
                start_sim: start,
                start_real: Instant::now(),
                offset_ms: AtomicI64::new(0),
            }),
        }
    }

    /// Simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        let real =
            TimeDelta::from_std(self.inner.start_real.elapsed()).unwrap_or(TimeDelta::zero());
        self.inner.start_sim
            + real
            + TimeDelta::milliseconds(self.inner.offset_ms.load(Ordering::SeqCst))
    }

    /// Simulated now in Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }

    /// Simulated now in Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Move the clock forward (never backward: expiry logic assumes monotonic time).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.inner.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The moment the simulated tenant was generated relative to.
    pub fn start(&self) -> DateTime<Utc> {
        self.inner.start_sim
    }
}
