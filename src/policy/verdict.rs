//! Who is inactive, which flags hold them for people, and what dormant would
//! do next. Pure: facts in, decision out.
//!
//! Two stages, so a scan enriches only users who are not plainly active
//! (manager, mailbox kind, roles cost Graph calls):
//! 1. [`classify`] looks at activity signals and the creation date only;
//! 2. [`assess`] adds what enrichment found and gives the verdict.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::activity::{LastActivity, ServiceUsage, SignIns, days_between, last_activity};
use crate::config::{Policy, UserRef};

/// What Graph says about a user, as far as the policy needs it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub id: String,
    pub upn: String,
    pub is_guest: bool,
    pub account_enabled: bool,
    /// Null in Graph for users created before mid-2018: treated as old.
    pub created: Option<DateTime<Utc>>,
    /// `None` when Graph returned no `signInActivity` for the user. A
    /// record whose dates are all blank is read as `None` too
    /// ([`Subject::sign_ins`]).
    pub sign_ins: Option<SignIns>,
    /// `None` when the usage report is not a source or has no row.
    pub usage: Option<ServiceUsage>,
    pub licensed: bool,
    pub on_premises_synced: bool,
    /// A guest whose invitation was redeemed (`externalUserState` =
    /// `Accepted`): redeeming takes a sign-in, so a blank sign-in record
    /// there is a gap in the data, not a guest who never came.
    pub invitation_accepted: bool,
    /// A guest whose invitation is still `PendingAcceptance`, since when
    /// (`externalUserStateChangeDateTime`, else `createdDateTime`); `None`
    /// for everyone else, and for a pending guest without either date
    /// (nothing to count from: not judged as pending).
    pub invitation_pending_since: Option<DateTime<Utc>>,
    /// Graph's record of the user could not be read (a `null` collection, a
    /// date that does not parse, an unknown enum value): nothing in it can
    /// speak, so the user is `unknown` and never acted on.
    pub unreadable: bool,
}

impl Subject {
    /// The sign-in record, if it says anything: all-blank is no record.
    pub fn sign_ins(&self) -> Option<&SignIns> {
        self.sign_ins.as_ref().filter(|s| !s.is_blank())
    }
}

/// Why dormant keeps its hands off a user until the user is active again
/// (or a person lifts it): a person's decision about this account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldKind {
    /// Someone other than dormant enabled the account during a case.
    ReEnabled,
    /// An operator restored the user (`dormant restore`, `RestoreUser`).
    Restored,
    /// The person who owns the account (manager, sponsor) answered "keep"
    /// through the link of a notification: held for `policy.attest.keep_days`.
    Kept,
}

/// A hold on a user, from `since`: it ends with activity newer than
/// `since`, or at `until` when the decision was for a time (a keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    pub kind: HoldKind,
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl Hold {
    /// A hold with no end date (a restore, a re-enable by a person).
    pub fn open_ended(kind: HoldKind, since: DateTime<Utc>) -> Self {
        Self {
            kind,
            since,
            until: None,
        }
    }

    /// An owner's "keep" at `since`, for `keep_days`.
    pub fn kept(since: DateTime<Utc>, keep_days: u32) -> Self {
        Self {
            kind: HoldKind::Kept,
            since,
            until: Some(since + chrono::Duration::days(i64::from(keep_days))),
        }
    }

    /// Whether the hold still holds at `now` for a user whose newest
    /// trustworthy activity is `last_activity`. The one rule every reader of
    /// a hold uses (the scan, the nightly advance, every re-check).
    pub fn in_force(&self, last_activity: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_activity.is_none_or(|at| at <= self.since) && self.until.is_none_or(|end| now < end)
    }
}

/// What a scan looks up for users who are not plainly active.
#[derive(Debug, Clone, Default)]
pub struct Enrichment {
    pub job_title: Option<String>,
    pub mailbox: Option<MailboxPurpose>,
    pub privileged_role: bool,
    pub in_excluded_group: bool,
    pub unmanaged_guest: bool,
    /// When someone other than dormant last enabled the account (audit log
    /// `Enable account`).
    pub reenabled_at: Option<DateTime<Utc>>,
    /// A hold dormant keeps for the user (see [`Hold`]).
    pub hold: Option<Hold>,
}

/// `mailboxSettings.userPurpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxPurpose {
    User,
    Shared,
    Room,
    Equipment,
    Linked,
    Others,
}

impl MailboxPurpose {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "user" => Self::User,
            "shared" => Self::Shared,
            "room" => Self::Room,
            "equipment" => Self::Equipment,
            "linked" => Self::Linked,
            "others" => Self::Others,
            _ => return None,
        })
    }
}

/// Stage one: what the activity signals alone say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Created within `never_signed_in_grace_days`: too new to judge.
    New,
    Active {
        last: LastActivity,
        days: i64,
    },
    Inactive {
        last: LastActivity,
        days: i64,
    },
    /// No trustworthy sign-in in a record that covers the account's whole
    /// life, and no service used.
    NeverSignedIn,
    /// No activity data that can speak. Never acted on: one real tool
    /// disabled active guests because of a blank date.
    Unknown,
    /// A guest invitation nobody accepted for `pending_after_days` (or
    /// more): there is no account to disable, only an invitation to
    /// withdraw.
    PendingInvitation {
        days: i64,
    },
}

impl Activity {
    /// Plainly active users get no row, no enrichment, no case.
    pub fn is_plainly_active(&self) -> bool {
        matches!(self, Self::New | Self::Active { .. })
    }

    pub fn last(&self) -> Option<LastActivity> {
        match self {
            Self::Active { last, .. } | Self::Inactive { last, .. } => Some(*last),
            _ => None,
        }
    }

    pub fn days_inactive(&self) -> Option<i64> {
        match self {
            Self::Active { days, .. }
            | Self::Inactive { days, .. }
            | Self::PendingInvitation { days } => Some(*days),
            _ => None,
        }
    }
}

pub fn classify(subject: &Subject, policy: &Policy, now: DateTime<Utc>) -> Activity {
    if subject.unreadable {
        return Activity::Unknown;
    }
    let last = last_activity(subject.sign_ins(), subject.usage.as_ref());
    if let (None, Some(since)) = (
        last,
        subject
            .invitation_pending_since
            .filter(|_| subject.is_guest),
    ) {
        // Nobody redeemed it: the invitation's age is all there is to judge.
        let days = days_between(since, now).max(0);
        return if days < i64::from(policy.guests.pending_after_days) {
            Activity::New
        } else {
            Activity::PendingInvitation { days }
        };
    }
    let new = subject
        .created
        .is_some_and(|c| days_between(c, now) < i64::from(policy.never_signed_in_grace_days));
    let inactive_after = if subject.is_guest {
        policy.guests.inactive_after_days
    } else {
        policy.inactive_after_days
    };
    match last {
        Some(last) => {
            let days = days_between(last.at, now).max(0);
            if days < i64::from(inactive_after) || new {
                Activity::Active { last, days }
            } else {
                Activity::Inactive { last, days }
            }
        }
        None if new => Activity::New,
        None if !blank_means_never(subject) => Activity::Unknown,
        None => Activity::NeverSignedIn,
    }
}

/// Graph leaves `signInActivity` out for users who never signed in, and
/// also when it has no record for other reasons. No trustworthy sign-in
/// means "never" only when the record covered the account's whole life and
/// nothing else proves a sign-in happened (an accepted invitation):
/// - no record at all: logging started 2020-05, so created after that;
/// - a record of failed attempts only: those overwrite the legacy dates, so
///   only the successful field (since 2023-12-01) can say "never", for
///   accounts created after it.
///
/// Users created before mid-2018 have no `createdDateTime`.
fn blank_means_never(subject: &Subject) -> bool {
    let covered_since = if subject.sign_ins().is_some() {
        super::activity::successful_field_start()
    } else {
        super::activity::sign_in_logging_start()
    };
    subject.created.is_some_and(|c| c >= covered_since) && !subject.invitation_accepted
}

/// CONTRACT `verdict`; `Active` never reaches the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Active,
    Inactive,
    NeverSignedIn,
    Review,
    Excluded,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::NeverSignedIn => "never-signed-in",
            Self::Review => "review",
            Self::Excluded => "excluded",
            Self::Unknown => "unknown",
        }
    }

    /// Verdicts a case may open for.
    pub fn is_actionable(self) -> bool {
        matches!(self, Self::Inactive | Self::NeverSignedIn)
    }
}

/// CONTRACT `riskFlags`, in the CONTRACT's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RiskFlag {
    Executive,
    ServiceAccount,
    SharedMailbox,
    PrivilegedRole,
    BreakGlass,
    OnPremisesSynced,
    NoSigninData,
    LicensedNeverSignedIn,
    Guest,
    UnmanagedGuest,
    /// A guest invitation still not accepted after `pending_after_days`.
    PendingInvitation,
    RecentlyReenabled,
    /// An operator restored the user: held until it is active again.
    Restored,
    /// An owner answered "keep" through a notification's link.
    Kept,
}

impl RiskFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executive => "executive",
            Self::ServiceAccount => "service-account",
            Self::SharedMailbox => "shared-mailbox",
            Self::PrivilegedRole => "privileged-role",
            Self::BreakGlass => "break-glass",
            Self::OnPremisesSynced => "on-premises-synced",
            Self::NoSigninData => "no-signin-data",
            Self::LicensedNeverSignedIn => "licensed-never-signed-in",
            Self::Guest => "guest",
            Self::UnmanagedGuest => "unmanaged-guest",
            Self::PendingInvitation => "pending-invitation",
            Self::RecentlyReenabled => "recently-reenabled",
            Self::Restored => "restored",
            Self::Kept => "kept",
        }
    }

    /// Flags that hold an otherwise inactive user for a person to decide.
    pub fn holds_for_review(self) -> bool {
        matches!(
            self,
            Self::Executive
                | Self::ServiceAccount
                | Self::SharedMailbox
                | Self::PrivilegedRole
                | Self::OnPremisesSynced
                | Self::UnmanagedGuest
                | Self::RecentlyReenabled
                | Self::Restored
                | Self::Kept
        )
    }
}

/// CONTRACT `recommendedAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    None,
    Notify,
    Disable,
    RemoveLicenses,
    Delete,
    ResetRedemption,
    ManualReview,
}

impl Action {
    /// The report's action for a case whose next step is `kind`. The mailbox
    /// conversion is the first half of taking the licenses.
    pub fn from_step(kind: &str) -> Option<Self> {
        Some(match kind {
            "notify" => Self::Notify,
            "disable" => Self::Disable,
            "convert-mailbox" | "remove-licenses" => Self::RemoveLicenses,
            "delete" | "purge" => Self::Delete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Notify => "notify",
            Self::Disable => "disable",
            Self::RemoveLicenses => "remove-licenses",
            Self::Delete => "delete",
            Self::ResetRedemption => "reset-redemption",
            Self::ManualReview => "manual-review",
        }
    }
}

/// The decision about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub verdict: Verdict,
    pub flags: BTreeSet<RiskFlag>,
    /// What dormant would do next if no case were open yet. An open case's
    /// own next step overrides it (the lifecycle knows).
    pub action: Action,
    pub last_activity: Option<LastActivity>,
    pub days_inactive: Option<i64>,
}

fn named(list: &[UserRef], subject: &Subject) -> bool {
    list.iter().any(|r| match r {
        UserRef::ObjectId(id) => id.to_string().eq_ignore_ascii_case(&subject.id),
        UserRef::Upn(upn) => upn.eq_ignore_ascii_case(&subject.upn),
    })
}

/// Stage two. `activity` is what [`classify`] returned for `subject`.
pub fn assess(
    subject: &Subject,
    activity: Activity,
    enrichment: &Enrichment,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Assessment {
    let mut flags = BTreeSet::new();
    let break_glass = named(&policy.break_glass, subject);
    let excluded =
        break_glass || named(&policy.exclude_users, subject) || enrichment.in_excluded_group;
    let mut flag = |cond: bool, f: RiskFlag| {
        if cond {
            flags.insert(f);
        }
    };
    flag(break_glass, RiskFlag::BreakGlass);
    flag(
        enrichment
            .job_title
            .as_deref()
            .is_some_and(|t| policy.executive_title_pattern.is_match(t)),
        RiskFlag::Executive,
    );
    flag(
        policy.service_account_upn_pattern.is_match(&subject.upn),
        RiskFlag::ServiceAccount,
    );
    flag(
        matches!(
            enrichment.mailbox,
            Some(MailboxPurpose::Shared | MailboxPurpose::Room | MailboxPurpose::Equipment)
        ),
        RiskFlag::SharedMailbox,
    );
    flag(enrichment.privileged_role, RiskFlag::PrivilegedRole);
    flag(subject.on_premises_synced, RiskFlag::OnPremisesSynced);
    let pending = matches!(activity, Activity::PendingInvitation { .. });
    // A pending invitation has no sign-in data because nobody redeemed it:
    // its state is the evidence, not a gap.
    flag(
        subject.unreadable || (subject.sign_ins().is_none() && !pending),
        RiskFlag::NoSigninData,
    );
    flag(pending, RiskFlag::PendingInvitation);
    flag(
        activity == Activity::NeverSignedIn && subject.licensed,
        RiskFlag::LicensedNeverSignedIn,
    );
    flag(subject.is_guest, RiskFlag::Guest);
    flag(enrichment.unmanaged_guest, RiskFlag::UnmanagedGuest);
    // A hold lasts until the user shows activity newer than it (or, for a
    // keep, until its end).
    let hold = enrichment
        .hold
        .filter(|h| h.in_force(activity.last().map(|l| l.at), now));
    flag(
        enrichment.reenabled_at.is_some_and(|t| {
            let days = days_between(t, now);
            (0..i64::from(policy.inactive_after_days)).contains(&days)
        }) || hold.is_some_and(|h| h.kind == HoldKind::ReEnabled),
        RiskFlag::RecentlyReenabled,
    );
    flag(
        hold.is_some_and(|h| h.kind == HoldKind::Restored),
        RiskFlag::Restored,
    );
    flag(
        hold.is_some_and(|h| h.kind == HoldKind::Kept),
        RiskFlag::Kept,
    );

    let held = flags.iter().any(|f| f.holds_for_review());
    let verdict = if excluded {
        Verdict::Excluded
    } else if enrichment.unmanaged_guest {
        // The home realm, not activity, is the evidence here: an unmanaged
        // guest is for review (and a reset) whatever its sign-ins say.
        Verdict::Review
    } else if activity == Activity::Unknown {
        Verdict::Unknown
    } else if held && (!activity.is_plainly_active() || enrichment.unmanaged_guest) {
        Verdict::Review
    } else {
        match activity {
            Activity::Inactive { .. } | Activity::PendingInvitation { .. } => Verdict::Inactive,
            Activity::NeverSignedIn => Verdict::NeverSignedIn,
            _ => Verdict::Active,
        }
    };
    let action = match verdict {
        Verdict::Active | Verdict::Excluded | Verdict::Unknown => Action::None,
        // App-only calls cannot reset a guest who holds a directory role
        // (FACTS): a person must.
        Verdict::Review
            if enrichment.unmanaged_guest && !flags.contains(&RiskFlag::PrivilegedRole) =>
        {
            Action::ResetRedemption
        }
        Verdict::Review => Action::ManualReview,
        // Nothing to disable: the invitation goes (after the sponsor hears).
        Verdict::Inactive if pending => Action::Delete,
        // A case starts with telling people.
        Verdict::Inactive | Verdict::NeverSignedIn => Action::Notify,
    };
    Assessment {
        verdict,
        flags,
        action,
        last_activity: activity.last(),
        days_inactive: activity.days_inactive(),
    }
}
