//! Does the case still hold? Asked right before every step (CONTRACT: the
//! worker re-reads the user and cancels if the user was active since the
//! case opened, became excluded, or was re-enabled by a person).
//!
//! The same rules as the scan (`policy::assess`), on a fresh read of the
//! user, with dormant's own effects taken out: a mailbox dormant converted
//! to shared is still judged as the user mailbox it was, and an account
//! dormant disabled is expected to stay disabled. A person's decision
//! always wins: an account enabled by anyone but dormant since the case
//! opened (its state went from disabled to enabled, or an `Enable account`
//! audit names someone else), or a hold dormant keeps for the user, ends
//! the case. No action without positive evidence: a record that cannot be
//! read, or no data that can speak, ends it too.

use chrono::{DateTime, Duration, Utc};

use super::ActionKind;
use super::case::{Case, CaseStore};
use super::reenable::enabled_by_others;
use crate::config::{Config, TenantKind};
use crate::graph::exchange::{ExchangeAdmin, MailboxKind};
use crate::graph::{
    ExternalUserState, GraphClient, GraphError, SCAN_SELECT, User, UserRecord, UserType,
};
use crate::policy::{self, Enrichment, MailboxPurpose};
use crate::policy::{SignIns, Subject, UsageIndex};
use crate::store::StoreError;

/// Entra keeps directory audits this long (P1/P2; B2C keeps 7 days): the
/// oldest enable a re-check can see.
const AUDIT_RETENTION: Duration = Duration::days(30);

/// What the policy is told about a Graph user (the scan and every re-check
/// judge the same facts); `usage` is the run's usage report, if any.
pub fn subject_of(user: &User, usage: Option<&UsageIndex>) -> Subject {
    let upn = user.user_principal_name.clone().unwrap_or_default();
    Subject {
        id: user.id.to_ascii_lowercase(),
        usage: usage.and_then(|u| u.get(&upn)),
        upn,
        is_guest: user.user_type == Some(UserType::Guest),
        account_enabled: user.account_enabled.unwrap_or(true),
        created: user.created_date_time,
        sign_ins: user.sign_in_activity.as_ref().map(|s| SignIns {
            last_successful: s.last_successful_sign_in_date_time,
            last_interactive: s.last_sign_in_date_time,
            last_non_interactive: s.last_non_interactive_sign_in_date_time,
        }),
        licensed: !user.assigned_licenses.is_empty(),
        on_premises_synced: user.on_premises_sync_enabled == Some(true),
        invitation_accepted: user.external_user_state == Some(ExternalUserState::Accepted),
        // An invitation not yet redeemed, dated by its state's change (the
        // invitation or the last redemption reset), else the account.
        invitation_pending_since: (user.external_user_state
            == Some(ExternalUserState::PendingAcceptance))
        .then(|| {
            user.external_user_state_change_date_time
                .or(user.created_date_time)
        })
        .flatten(),
        unreadable: false,
    }
}

/// Why a case stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A successful sign-in after the case opened.
    ActiveAgain,
    /// Enabled by someone other than dormant since the case opened: a
    /// person (or another system) decided.
    ReEnabled,
    Excluded,
    /// A risk flag now holds the user for people (privileged role, …).
    HeldForReview,
    /// dormant holds the user (a person restored or re-enabled it).
    Held,
    /// The scan no longer finds the user inactive (a service was used).
    NotInactive,
    /// Graph's record of the user no longer says anything dormant can act
    /// on (no sign-in data, or a record that does not decode).
    NoSigninData,
    /// Not in the directory, and not deleted by this case.
    UserGone,
    /// In deleted items, but not by this case's delete.
    DeletedBySomeoneElse,
    /// Restored from deleted items by someone else before the purge.
    RestoredByPerson,
    /// A guest to reset is no longer unmanaged (reset already, or its
    /// domain became managed).
    NotUnmanaged,
    /// The account's owner answered "keep" through a notification's link.
    Kept,
}

impl CancelReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::ActiveAgain => "active-again",
            Self::ReEnabled => "re-enabled-by-person",
            Self::Excluded => "excluded",
            Self::HeldForReview => "held-for-review",
            Self::Held => "held",
            Self::NotInactive => "not-inactive",
            Self::NoSigninData => "no-signin-data",
            Self::UserGone => "user-gone",
            Self::DeletedBySomeoneElse => "deleted-by-someone-else",
            Self::RestoredByPerson => "restored-by-person",
            Self::NotUnmanaged => "not-unmanaged",
            Self::Kept => "kept",
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

#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecheckError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Graph(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
        }
    }
}

/// Whether someone other than dormant enabled the account since the case
/// opened: by its state (disabled when the case opened or by dormant's own
/// step, enabled now) or by an `Enable account` audit.
pub async fn enabled_by_someone_else(
    graph: &GraphClient,
    case: &Case,
    enabled_now: bool,
    now: DateTime<Utc>,
) -> Result<bool, GraphError> {
    let expected_disabled =
        case.enabled_at_open == Some(false) || case.is_done(ActionKind::Disable);
    if expected_disabled && enabled_now {
        return Ok(true);
    }
    // One window for every case (not from each case's opening), so that
    // every re-check within a minute shares one answer; the case's own
    // opening is applied below.
    let audits = graph
        .enable_audits_since(now - AUDIT_RETENTION, now)
        .await?;
    let own_app = graph.own_app_id().await;
    Ok(enabled_by_others(audits.iter(), own_app.as_deref())
        .get(&case.user)
        .is_some_and(|at| *at > case.opened_at))
}

/// Reads the user and judges the case. `usage` is the scan's usage report
/// (the nightly advance has it; a worker right before a step relies on the
/// sign-ins, the report being at most a day old when the step was queued).
pub async fn recheck(
    graph: &GraphClient,
    cases: &CaseStore,
    config: &Config,
    case: &Case,
    usage: Option<&UsageIndex>,
    now: DateTime<Utc>,
) -> Result<Recheck, RecheckError> {
    let user = match graph.get_user_record(&case.user, SCAN_SELECT).await {
        Ok(UserRecord::User(u)) => *u,
        Ok(UserRecord::Unreadable(_)) => return Ok(Recheck::Cancel(CancelReason::NoSigninData)),
        Err(GraphError::NotFound) => return Ok(Recheck::Absent),
        Err(e) => return Err(e.into()),
    };
    if enabled_by_someone_else(graph, case, user.account_enabled == Some(true), now).await? {
        return Ok(Recheck::Cancel(CancelReason::ReEnabled));
    }
    let subject = subject_of(&user, usage);
    let activity = policy::classify(&subject, &config.policy, now);
    // A redemption reset is about the guest's identity, not its activity:
    // an active unmanaged guest is reset all the same.
    let reset = case.in_plan(ActionKind::ResetRedemption).is_some();
    if !reset && activity.last().is_some_and(|l| l.at > case.opened_at) {
        return Ok(Recheck::Cancel(CancelReason::ActiveAgain));
    }
    // An owner answered "keep" (the answer is in the case before the
    // hold is written, so a crash between the two still stops the case).
    if case.kept() {
        return Ok(Recheck::Cancel(CancelReason::Kept));
    }
    if let Some(hold) = cases.hold_of(&case.user).await?
        && hold.in_force(activity.last().map(|l| l.at), now)
    {
        return Ok(Recheck::Cancel(CancelReason::Held));
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
    // Active holders show as directoryRole memberships (through groups
    // too) or own assignments; PIM-eligible ones only in the eligibility
    // list, for the user or a role-assignable group it is in.
    enrichment.privileged_role = memberships
        .iter()
        .any(|m| m.odata_type.as_deref() == Some("#microsoft.graph.directoryRole"))
        || !graph.role_assignments_of(&user.id).await?.is_empty()
        || graph.is_role_eligible(&user.id).await?;
    for group in memberships
        .iter()
        .filter(|m| m.is_assignable_to_role == Some(true))
    {
        if enrichment.privileged_role {
            break;
        }
        enrichment.privileged_role = graph.is_role_eligible(&group.id).await?;
    }

    if reset {
        // Positive evidence first: still an unmanaged guest, asked now.
        enrichment.unmanaged_guest = graph.is_unmanaged_guest(&user).await?;
    }
    let assessment = policy::assess(&subject, activity, &enrichment, &config.policy, now);
    if reset {
        return Ok(match (assessment.verdict, assessment.action) {
            (_, policy::Action::ResetRedemption) => Recheck::Holds(Box::new(user)),
            (policy::Verdict::Excluded, _) => Recheck::Cancel(CancelReason::Excluded),
            (_, policy::Action::ManualReview) => Recheck::Cancel(CancelReason::HeldForReview),
            _ => Recheck::Cancel(CancelReason::NotUnmanaged),
        });
    }
    Ok(match assessment.verdict {
        v if v.is_actionable() => Recheck::Holds(Box::new(user)),
        policy::Verdict::Excluded => Recheck::Cancel(CancelReason::Excluded),
        policy::Verdict::Review => Recheck::Cancel(CancelReason::HeldForReview),
        policy::Verdict::Active => Recheck::Cancel(CancelReason::ActiveAgain),
        policy::Verdict::Unknown => Recheck::Cancel(CancelReason::NoSigninData),
        _ => Recheck::Cancel(CancelReason::NotInactive),
    })
}

/// What is known of a user's mailbox before its licenses go (FACTS:
/// removing licenses before the shared conversion loses mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailbox {
    /// Positively shared: it needs no license.
    Shared,
    /// Positively none (Exchange's admin API did not find one).
    None,
    /// A user mailbox: it must be converted first.
    User,
    /// Nothing positive: a 404 or `MailboxNotEnabledForRESTAPI` from Graph
    /// (no mailbox, or one Graph cannot see), a purpose dormant does not
    /// know, an error. The case waits for a person; the code says why.
    Unknown(&'static str),
}

impl Mailbox {
    /// Licenses may go.
    pub fn allows_license_removal(&self) -> bool {
        matches!(self, Self::Shared | Self::None)
    }

    /// The waiting reason when they may not.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Shared | Self::None => "",
            Self::User => "mailbox-not-converted",
            Self::Unknown(code) => code,
        }
    }
}

/// The mailbox of `user`, from Exchange's admin API when configured (the
/// only source that can say "no mailbox"), else from Graph's
/// `mailboxSettings.userPurpose`. Transient failures are errors (a retry
/// may know); permanent ones are `Unknown`.
pub async fn mailbox_of(
    graph: &GraphClient,
    exchange: Option<&ExchangeAdmin>,
    user: &str,
) -> Result<Mailbox, GraphError> {
    if let Some(ex) = exchange {
        return match ex.mailbox_kind(user).await {
            Ok(Some(MailboxKind::Shared)) => Ok(Mailbox::Shared),
            Ok(Some(MailboxKind::User)) => Ok(Mailbox::User),
            Ok(Some(MailboxKind::Other)) => Ok(Mailbox::Unknown("mailbox-not-shared")),
            Ok(None) => Ok(Mailbox::None),
            Err(e) if e.is_transient() => Err(e),
            Err(_) => Ok(Mailbox::Unknown("mailbox-unreadable")),
        };
    }
    match graph.mailbox_settings(user).await {
        Ok(Some(settings)) => Ok(
            match settings
                .user_purpose
                .as_deref()
                .and_then(MailboxPurpose::parse)
            {
                Some(MailboxPurpose::Shared) => Mailbox::Shared,
                Some(MailboxPurpose::User) => Mailbox::User,
                Some(_) => Mailbox::Unknown("mailbox-not-shared"),
                None => Mailbox::Unknown("mailbox-purpose-unknown"),
            },
        ),
        // 404 or `MailboxNotEnabledForRESTAPI` (`mailbox_settings` answers
        // `None`): Graph cannot tell "no mailbox" from "a mailbox it cannot
        // see" (on-premises, inactive, not provisioned yet).
        Ok(None) => Ok(Mailbox::Unknown("mailbox-not-confirmed")),
        Err(e) if e.is_transient() => Err(e),
        Err(_) => Ok(Mailbox::Unknown("mailbox-unreadable")),
    }
}
