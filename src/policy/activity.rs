//! Which signal says when a user was last active.
//!
//! Graph's `signInActivity` (FACTS):
//! - `lastSuccessfulSignInDateTime`: interactive or not, successful only,
//!   recorded since 2023-12-01 and not back-filled.
//! - `lastSignInDateTime` / `lastNonInteractiveSignInDateTime`: successful
//!   **or failed** attempts. A password spray updates them, so on their own
//!   they would keep an attacked account alive forever.
//!
//! So the successful field is the signal. The other two are used only where
//! the successful field cannot speak: for dates before 2023-12-01, when it
//! did not exist yet. A date after that with no successful sign-in behind it
//! is a failed attempt and is ignored.

use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};

/// Sign-in logging covers interactive sign-ins since 2020-04 and
/// non-interactive ones since 2020-05: an account created after this day has
/// had every sign-in of its life recorded.
pub fn sign_in_logging_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 5, 1, 0, 0, 0)
        .single()
        .expect("a valid constant date")
}

/// `lastSuccessfulSignInDateTime` exists from this day on.
pub fn successful_field_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 12, 1, 0, 0, 0)
        .single()
        .expect("a valid constant date")
}

/// The three `signInActivity` dates as Graph returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignIns {
    pub last_successful: Option<DateTime<Utc>>,
    pub last_interactive: Option<DateTime<Utc>>,
    pub last_non_interactive: Option<DateTime<Utc>>,
}

impl SignIns {
    /// No date at all: Graph's placeholder (`0001-01-01T00:00:00Z`, read as
    /// `None` by the model) or nulls everywhere say nothing, exactly like an
    /// absent `signInActivity`.
    pub fn is_blank(&self) -> bool {
        self.last_successful.is_none()
            && self.last_interactive.is_none()
            && self.last_non_interactive.is_none()
    }
}

/// Last activity per Microsoft 365 service, from the usage report
/// (`getOffice365ActiveUserDetail`): dates without a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceUsage {
    pub exchange: Option<NaiveDate>,
    pub onedrive: Option<NaiveDate>,
    pub sharepoint: Option<NaiveDate>,
    pub teams: Option<NaiveDate>,
}

/// Which signal won (`lastActivitySource` in the CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    SuccessfulSignIn,
    InteractiveSignIn,
    NonInteractiveSignIn,
    Exchange,
    OneDrive,
    SharePoint,
    Teams,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SuccessfulSignIn => "successful-signin",
            Self::InteractiveSignIn => "interactive-signin",
            Self::NonInteractiveSignIn => "non-interactive-signin",
            Self::Exchange => "exchange",
            Self::OneDrive => "onedrive",
            Self::SharePoint => "sharepoint",
            Self::Teams => "teams",
        }
    }
}

/// The newest trustworthy activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastActivity {
    pub at: DateTime<Utc>,
    pub source: Source,
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists every day")
        .and_utc()
}

/// The newest trustworthy signal, or `None` when no signal speaks.
///
/// `sign_ins` is `None` when Graph returned no `signInActivity` at all;
/// `usage` is `None` when the usage report is not a source or has no row for
/// the user. Ties go to the sign-in signal (it carries a time).
pub fn last_activity(
    sign_ins: Option<&SignIns>,
    usage: Option<&ServiceUsage>,
) -> Option<LastActivity> {
    let start = successful_field_start();
    let mut candidates: Vec<(DateTime<Utc>, Source)> = Vec::with_capacity(7);
    if let Some(s) = sign_ins {
        if let Some(t) = s.last_successful {
            candidates.push((t, Source::SuccessfulSignIn));
        }
        // Only before the successful field existed can these be trusted.
        for (t, source) in [
            (s.last_interactive, Source::InteractiveSignIn),
            (s.last_non_interactive, Source::NonInteractiveSignIn),
        ] {
            if let Some(t) = t.filter(|t| *t < start) {
                candidates.push((t, source));
            }
        }
    }
    if let Some(u) = usage {
        for (d, source) in [
            (u.exchange, Source::Exchange),
            (u.onedrive, Source::OneDrive),
            (u.sharepoint, Source::SharePoint),
            (u.teams, Source::Teams),
        ] {
            if let Some(d) = d {
                candidates.push((midnight(d), source));
            }
        }
    }
    // Newest first; among equal instants the earlier-listed source wins.
    candidates
        .into_iter()
        .enumerate()
        .max_by(|(ia, (ta, _)), (ib, (tb, _))| ta.cmp(tb).then(ib.cmp(ia)))
        .map(|(_, (at, source))| LastActivity { at, source })
}

/// Whether a sign-in attempt newer than every trustworthy signal exists: the
/// mark of an account that is being attacked (password spray) rather than
/// used.
pub fn has_untrusted_newer_attempt(sign_ins: &SignIns, trusted: Option<DateTime<Utc>>) -> bool {
    [sign_ins.last_interactive, sign_ins.last_non_interactive]
        .into_iter()
        .flatten()
        .any(|t| t >= successful_field_start() && trusted.is_none_or(|tr| t > tr))
}

/// Whole calendar days (UTC) between `then` and `now`.
pub fn days_between(then: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now.date_naive() - then.date_naive()).num_days()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test date")
            .with_timezone(&Utc)
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            sign_ins: Option<SignIns>,
            usage: Option<ServiceUsage>,
            want: Option<(&'static str, Source)>,
        }
        let cases = [
            Case {
                name: "no data at all",
                sign_ins: None,
                usage: None,
                want: None,
            },
            Case {
                name: "successful sign-in wins",
                sign_ins: Some(SignIns {
                    last_successful: Some(t("2026-10-01T08:00:00Z")),
                    last_interactive: Some(t("2026-09-01T08:00:00Z")),
                    last_non_interactive: None,
                }),
                usage: None,
                want: Some(("2026-10-01T08:00:00Z", Source::SuccessfulSignIn)),
            },
            Case {
                name: "failed attempts after 2023-12-01 never count (password spray)",
                sign_ins: Some(SignIns {
                    last_successful: Some(t("2025-01-01T00:00:00Z")),
                    last_interactive: Some(t("2026-11-21T03:00:00Z")),
                    last_non_interactive: Some(t("2026-11-21T03:00:01Z")),
                }),
                usage: None,
                want: Some(("2025-01-01T00:00:00Z", Source::SuccessfulSignIn)),
            },
            Case {
                name: "attacked account that never succeeded has no activity",
                sign_ins: Some(SignIns {
                    last_successful: None,
                    last_interactive: Some(t("2026-11-21T03:00:00Z")),
                    last_non_interactive: None,
                }),
                usage: None,
                want: None,
            },
            Case {
                name: "legacy interactive date before the successful field is trusted",
                sign_ins: Some(SignIns {
                    last_successful: None,
                    last_interactive: Some(t("2023-11-30T23:59:59Z")),
                    last_non_interactive: Some(t("2023-06-01T00:00:00Z")),
                }),
                usage: None,
                want: Some(("2023-11-30T23:59:59Z", Source::InteractiveSignIn)),
            },
            Case {
                name: "a legacy date exactly on 2023-12-01 is no longer trusted",
                sign_ins: Some(SignIns {
                    last_successful: None,
                    last_interactive: Some(t("2023-12-01T00:00:00Z")),
                    last_non_interactive: Some(t("2023-05-01T00:00:00Z")),
                }),
                usage: None,
                want: Some(("2023-05-01T00:00:00Z", Source::NonInteractiveSignIn)),
            },
            Case {
                name: "usage report newer than sign-in wins (token refresh lag, mail on mobile)",
                sign_ins: Some(SignIns {
                    last_successful: Some(t("2026-06-01T10:00:00Z")),
                    ..SignIns::default()
                }),
                usage: Some(ServiceUsage {
                    exchange: Some(d("2026-11-20")),
                    teams: Some(d("2026-11-10")),
                    ..ServiceUsage::default()
                }),
                want: Some(("2026-11-20T00:00:00Z", Source::Exchange)),
            },
            Case {
                name: "usage alone speaks when sign-in data is missing",
                sign_ins: None,
                usage: Some(ServiceUsage {
                    sharepoint: Some(d("2026-08-08")),
                    ..ServiceUsage::default()
                }),
                want: Some(("2026-08-08T00:00:00Z", Source::SharePoint)),
            },
            Case {
                name: "same instant: the sign-in signal wins the tie",
                sign_ins: Some(SignIns {
                    last_successful: Some(t("2026-08-08T00:00:00Z")),
                    ..SignIns::default()
                }),
                usage: Some(ServiceUsage {
                    onedrive: Some(d("2026-08-08")),
                    ..ServiceUsage::default()
                }),
                want: Some(("2026-08-08T00:00:00Z", Source::SuccessfulSignIn)),
            },
        ];
        for c in cases {
            let got = last_activity(c.sign_ins.as_ref(), c.usage.as_ref());
            let want = c
                .want
                .map(|(at, source)| LastActivity { at: t(at), source });
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn untrusted_newer_attempts_are_detected() {
        let s = SignIns {
            last_successful: Some(t("2025-01-01T00:00:00Z")),
            last_interactive: Some(t("2026-11-21T03:00:00Z")),
            last_non_interactive: None,
        };
        assert!(has_untrusted_newer_attempt(&s, s.last_successful));
        let quiet = SignIns {
            last_interactive: Some(t("2024-12-31T00:00:00Z")),
            ..s.clone()
        };
        assert!(!has_untrusted_newer_attempt(&quiet, quiet.last_successful));
    }

    #[test]
    fn days_are_calendar_days_in_utc() {
        assert_eq!(
            days_between(t("2026-11-21T23:59:00Z"), t("2026-11-22T00:01:00Z")),
            1
        );
        assert_eq!(
            days_between(t("2026-08-24T12:00:00Z"), t("2026-11-22T02:00:00Z")),
            90
        );
    }
}
