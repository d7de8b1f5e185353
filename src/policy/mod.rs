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
pub use phases::{CaseSubject, PlanShape, Step};
pub use usage::UsageIndex;
pub use verdict::{
    Action, Activity, Assessment, Enrichment, Hold, HoldKind, MailboxPurpose, RiskFlag, Subject,
    Verdict, assess, classify,
};

use crate::config::Quarantine;

/// Why a run quarantined itself (Lifecycle Workflows do the same: a run that
/// would touch more than a count or a share of users waits for a person).
#[derive(Debug, Clone, PartialEq)]
pub enum QuarantineReason {
    TooManyCases {
        new_cases: u64,
        max: u32,
    },
    TooLargeShare {
        percent: f64,
        max: f64,
    },
    /// The share of users without sign-in data jumped against the previous
    /// run: a lapsed P1 licence, a Graph incident or a lost permission
    /// looks like this, not like mass inactivity.
    UnknownShareJump {
        percent: f64,
        previous: f64,
    },
    /// The number of new cases jumped against the previous run.
    NewCasesJump {
        new_cases: u64,
        previous: u64,
    },
}

impl QuarantineReason {
    /// A short stable code for the audit log and the report.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooManyCases { .. } => "too-many-cases",
            Self::TooLargeShare { .. } => "too-large-share",
            Self::UnknownShareJump { .. } => "unknown-share-jump",
            Self::NewCasesJump { .. } => "new-cases-jump",
        }
    }

    /// Whether the data of the run itself is in doubt (rather than its size).
    pub fn is_data_quality(&self) -> bool {
        matches!(
            self,
            Self::UnknownShareJump { .. } | Self::NewCasesJump { .. }
        )
    }
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
            Self::UnknownShareJump { percent, previous } => write!(
                f,
                "{percent:.2}% of scanned users have no sign-in data, against {previous:.2}% in the previous run: the data looks broken (a lapsed licence, a Graph incident, a lost permission), not inactive"
            ),
            Self::NewCasesJump {
                new_cases,
                previous,
            } => write!(
                f,
                "{new_cases} new cases against {previous} in the previous run: the jump looks like broken data, not mass inactivity"
            ),
        }
    }
}

/// What the data-quality breaker compares between two runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFigures {
    pub scanned: u64,
    /// Users the run could not judge for want of data (verdict `unknown`).
    pub unknown: u64,
    /// Cases the run would open (counted in every mode).
    pub new_cases: u64,
}

impl RunFigures {
    pub fn unknown_percent(&self) -> f64 {
        if self.scanned == 0 {
            0.0
        } else {
            self.unknown as f64 * 100.0 / self.scanned as f64
        }
    }
}

/// `Some(reason)` when the run must wait for a person: more new cases than
/// the configured count or percentage, or (the data-quality breaker) a jump
/// against `previous`, the last run that passed or that a person released.
/// The first run of a tenant has no previous run and only the size limits
/// apply.
pub fn quarantine(
    current: &RunFigures,
    previous: Option<&RunFigures>,
    limits: &Quarantine,
) -> Option<QuarantineReason> {
    let new_cases = current.new_cases;
    if new_cases > u64::from(limits.max_new_cases) {
        return Some(QuarantineReason::TooManyCases {
            new_cases,
            max: limits.max_new_cases,
        });
    }
    if current.scanned > 0 {
        let percent = new_cases as f64 * 100.0 / current.scanned as f64;
        if percent > limits.max_percent {
            return Some(QuarantineReason::TooLargeShare {
                percent,
                max: limits.max_percent,
            });
        }
    }
    let previous = previous?;
    let (percent, before) = (current.unknown_percent(), previous.unknown_percent());
    if percent > limits.unknown_min_percent && percent > before * limits.unknown_growth {
        return Some(QuarantineReason::UnknownShareJump {
            percent,
            previous: before,
        });
    }
    if new_cases > u64::from(limits.new_cases_min)
        && new_cases as f64 > previous.new_cases as f64 * limits.new_cases_growth
    {
        return Some(QuarantineReason::NewCasesJump {
            new_cases,
            previous: previous.new_cases,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Quarantine {
        Quarantine {
            max_new_cases: 500,
            max_percent: 5.0,
            unknown_growth: 2.0,
            unknown_min_percent: 5.0,
            new_cases_growth: 3.0,
            new_cases_min: 50,
        }
    }

    fn run(scanned: u64, unknown: u64, new_cases: u64) -> RunFigures {
        RunFigures {
            scanned,
            unknown,
            new_cases,
        }
    }

    #[test]
    fn quarantine_is_strictly_more_than_either_limit() {
        let q = limits();
        let size = |new, scanned| quarantine(&run(scanned, 0, new), None, &q);
        assert_eq!(size(500, 100_000), None, "exactly the count is allowed");
        assert!(matches!(
            size(501, 100_000),
            Some(QuarantineReason::TooManyCases { .. })
        ));
        assert_eq!(size(50, 1_000), None, "exactly 5 % is allowed");
        assert!(matches!(
            size(51, 1_000),
            Some(QuarantineReason::TooLargeShare { .. })
        ));
        assert_eq!(size(0, 0), None);
    }

    #[test]
    fn data_quality_breaker_table() {
        let q = limits();
        struct Case {
            name: &'static str,
            current: RunFigures,
            previous: Option<RunFigures>,
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "first run: no breaker, only the size limits",
                current: run(10_000, 5_000, 400),
                previous: None,
                want: None,
            },
            Case {
                name: "a lapsed P1 licence: unknown share 1 % -> 60 %",
                current: run(10_000, 6_000, 0),
                previous: Some(run(10_000, 100, 10)),
                want: Some("unknown-share-jump"),
            },
            Case {
                name: "unknown share doubles but stays at 5 %: allowed",
                current: run(10_000, 500, 10),
                previous: Some(run(10_000, 200, 10)),
                want: None,
            },
            Case {
                name: "unknown share above 5 % but not doubled: allowed",
                current: run(10_000, 1_100, 10),
                previous: Some(run(10_000, 1_000, 10)),
                want: None,
            },
            Case {
                name: "exactly double is not more than double",
                current: run(10_000, 1_200, 10),
                previous: Some(run(10_000, 600, 10)),
                want: None,
            },
            Case {
                name: "new cases 10 -> 51: more than 3x and above 50",
                current: run(10_000, 0, 51),
                previous: Some(run(10_000, 0, 10)),
                want: Some("new-cases-jump"),
            },
            Case {
                name: "new cases 10 -> 50: not above 50",
                current: run(10_000, 0, 50),
                previous: Some(run(10_000, 0, 10)),
                want: None,
            },
            Case {
                name: "new cases 40 -> 120: exactly 3x is allowed",
                current: run(100_000, 0, 120),
                previous: Some(run(100_000, 0, 40)),
                want: None,
            },
            Case {
                name: "the size limits come first",
                current: run(1_000, 900, 600),
                previous: Some(run(1_000, 0, 1)),
                want: Some("too-many-cases"),
            },
        ];
        for c in cases {
            let got = quarantine(&c.current, c.previous.as_ref(), &q);
            assert_eq!(got.as_ref().map(|r| r.code()), c.want, "{}", c.name);
            if let Some(r) = got {
                assert_eq!(r.is_data_quality(), r.code().ends_with("-jump"));
            }
        }
    }
}
