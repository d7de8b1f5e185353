//! Pure decisions: who is inactive, which flags hold them, which step is
//! next, whether a run must quarantine itself. No I/O here, so every rule is
//! a plain unit test.

pub mod activity;
pub mod phases;
pub mod usage;
pub mod verdict;

#[cfg(test)]
mod verdict_tests;

pub use activity::{LastActivity, ServiceUsage, SignIns, Source};
pub use phases::{PlanShape, Step};
pub use usage::UsageIndex;
pub use verdict::{
    Action, Activity, Assessment, Enrichment, MailboxPurpose, RiskFlag, Subject, Verdict, assess,
    classify,
};

use crate::config::Quarantine;

/// Why a run quarantined itself (Lifecycle Workflows do the same: a run that
/// would touch more than a count or a share of users waits for a person).
#[derive(Debug, Clone, PartialEq)]
pub enum QuarantineReason {
    TooManyCases { new_cases: u64, max: u32 },
    TooLargeShare { percent: f64, max: f64 },
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyCases { new_cases, max } => {
                write!(f, "{new_cases} new cases exceed the limit of {max}")
            }
            Self::TooLargeShare { percent, max } => write!(
                f,
                "new cases for {percent:.2}% of scanned users exceed the limit of {max}%"
            ),
        }
    }
}

/// `Some(reason)` when opening `new_cases` out of `scanned` users is more
/// than the configured count or percentage.
pub fn quarantine(new_cases: u64, scanned: u64, limits: &Quarantine) -> Option<QuarantineReason> {
    if new_cases > u64::from(limits.max_new_cases) {
        return Some(QuarantineReason::TooManyCases {
            new_cases,
            max: limits.max_new_cases,
        });
    }
    if scanned > 0 {
        let percent = new_cases as f64 * 100.0 / scanned as f64;
        if percent > limits.max_percent {
            return Some(QuarantineReason::TooLargeShare {
                percent,
                max: limits.max_percent,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_is_strictly_more_than_either_limit() {
        let q = Quarantine {
            max_new_cases: 500,
            max_percent: 5.0,
        };
        assert_eq!(
            quarantine(500, 100_000, &q),
            None,
            "exactly the count is allowed"
        );
        assert!(matches!(
            quarantine(501, 100_000, &q),
            Some(QuarantineReason::TooManyCases { .. })
        ));
        assert_eq!(quarantine(50, 1_000, &q), None, "exactly 5 % is allowed");
        assert!(matches!(
            quarantine(51, 1_000, &q),
            Some(QuarantineReason::TooLargeShare { .. })
        ));
        assert_eq!(quarantine(0, 0, &q), None);
    }
}
