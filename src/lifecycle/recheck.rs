//! Does the case still hold? Asked right before every step (CONTRACT: the
//! worker re-reads the user and cancels if the user was active since the
//! case opened, became excluded, or was re-enabled by a person).
//!
//! The same rules as the scan (`policy::assess`), on a fresh read of the
//! user, with dormant's own effects taken out: a mailbox dormant converted
//! to shared is still judged as the user mailbox it was, and an account
//! dormant disabled is expected to stay disabled: enabled again means a
//! person re-enabled it.

use chrono::{DateTime, Utc};

use super::ActionKind;
use super::case::Case;
use crate::config::{Config, TenantKind};
use crate::graph::{GraphClient, GraphError, SCAN_SELECT, User};
use crate::policy::{self, Enrichment, MailboxPurpose};
use crate::policy::{SignIns, Subject, UsageIndex};

/// What the policy is told about a Graph user (the scan and every re-check
/// judge the same facts); `usage` is the run's usage report, if any.
pub fn subject_of(user: &User, usage: Option<&UsageIndex>) -> Subject {
    let upn = user.user_principal_name.clone().unwrap_or_default();
    Subject {
        id: user.id.to_ascii_lowercase(),
        usage: usage.and_then(|u| u.get(&upn)),
        upn,
        is_guest: user.user_type.as_deref() == Some("Guest"),
        account_enabled: user.account_enabled.unwrap_or(true),
        created: user.created_date_time,
        sign_ins: user.sign_in_activity.as_ref().map(|s| SignIns {
            last_successful: s.last_successful_sign_in_date_time,
            last_interactive: s.last_sign_in_date_time,
            last_non_interactive: s.last_non_interactive_sign_in_date_time,
        }),
        licensed: !user.assigned_licenses.is_empty(),
        on_premises_synced: user.on_premises_sync_enabled == Some(true),
        invitation_accepted: user
            .external_user_state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Accepted")),
    }
}

/// Why a case stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A successful sign-in after the case opened.
    ActiveAgain,
    /// Enabled again after dormant disabled it: a person decided.
    ReEnabled,
    Excluded,
    /// A risk flag now holds the user for people (privileged role, …).
    HeldForReview,
    /// The scan no longer finds the user inactive (a service was used).
    NotInactive,
    /// Not in the directory, and not deleted by this case.
    UserGone,
    /// Restored from deleted items by someone else before the purge.
    RestoredByPerson,
}

impl CancelReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::ActiveAgain => "active-again",
            Self::ReEnabled => "re-enabled-by-person",
            Self::Excluded => "excluded",
            Self::HeldForReview => "held-for-review",
            Self::NotInactive => "not-inactive",
            Self::UserGone => "user-gone",
            Self::RestoredByPerson => "restored-by-person",
        }
    }
}

pub enum Recheck {
    Holds(Box<User>),
    /// The user is not in the directory (a delete step may find it in
    /// deleted items).
    Absent,
    Cancel(CancelReason),
}

/// Reads the user and judges the case. `usage` is the scan's usage report
/// (the nightly advance has it; a worker right before a step relies on the
/// sign-ins, the report being at most a day old when the step was queued).
pub async fn recheck(
    graph: &GraphClient,
    config: &Config,
    case: &Case,
    usage: Option<&UsageIndex>,
    now: DateTime<Utc>,
) -> Result<Recheck, GraphError> {
    let user = match graph.get_user(&case.user, SCAN_SELECT).await {
        Ok(u) => u,
        Err(GraphError::NotFound) => return Ok(Recheck::Absent),
        Err(e) => return Err(e),
    };
    if case.is_done(ActionKind::Disable) && user.account_enabled == Some(true) {
        return Ok(Recheck::Cancel(CancelReason::ReEnabled));
    }
    let subject = subject_of(&user, usage);
    let activity = policy::classify(&subject, &config.policy, now);
    if activity.last().is_some_and(|l| l.at > case.opened_at) {
        return Ok(Recheck::Cancel(CancelReason::ActiveAgain));
    }

    let mut enrichment = Enrichment {
        job_title: user.job_title.clone(),
        ..Enrichment::default()
    };
    if config.tenant_kind == TenantKind::Workforce {
        // A mailbox in the plan was a user mailbox when the case opened; its
        // conversion to shared (by dormant or by a person) is the plan, not
        // a reason to hold the user.
        enrichment.mailbox = if case.snapshot.converted_mailbox
            || case.in_plan(ActionKind::ConvertMailbox).is_some()
        {
            Some(MailboxPurpose::User)
        } else {
            graph
                .mailbox_settings(&user.id)
                .await?
                .and_then(|m| m.user_purpose.as_deref().and_then(MailboxPurpose::parse))
        };
    }
    let memberships = graph.transitive_member_of(&user.id).await?;
    enrichment.in_excluded_group = memberships.iter().any(|m| {
        config
            .policy
            .exclude_groups
            .iter()
            .any(|g| g.to_string().eq_ignore_ascii_case(&m.id))
    });
    enrichment.privileged_role = memberships
        .iter()
        .any(|m| m.odata_type.as_deref() == Some("#microsoft.graph.directoryRole"))
        || !graph.role_assignments_of(&user.id).await?.is_empty();

    let assessment = policy::assess(&subject, activity, &enrichment, &config.policy, now);
    Ok(match assessment.verdict {
        v if v.is_actionable() => Recheck::Holds(Box::new(user)),
        policy::Verdict::Excluded => Recheck::Cancel(CancelReason::Excluded),
        policy::Verdict::Review => Recheck::Cancel(CancelReason::HeldForReview),
        policy::Verdict::Active => Recheck::Cancel(CancelReason::ActiveAgain),
        // No data that can speak now: never act on a blank.
        _ => Recheck::Cancel(CancelReason::NotInactive),
    })
}
