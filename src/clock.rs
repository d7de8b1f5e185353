//! dormant's notion of "now".
//!
//! Production reads the system clock. The lifecycle spans weeks (notify on
//! day 0, delete on day 51), so tests and the simulator walk a tenant
//! through time by moving one shared offset: the simulator's clock and
//! dormant's clock then agree, and every due date is computed against the
//! same instant the directory sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// Cheap to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system clock (0 in production).
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let a = Clock::system();
        let b = a.clone();
        a.advance(Duration::days(14));
        let ahead = b.now() - Utc::now();
        assert!(ahead > Duration::days(14) - Duration::seconds(5));
        assert!(ahead < Duration::days(14) + Duration::seconds(5));
    }
}
