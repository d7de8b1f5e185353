//! The phased deprovisioning plan of a case: which steps, in which order,
//! due when.
//!
//! The order is the field's hard-won one (FACTS): notify → disable sign-in
//! and revoke sessions → convert the mailbox to shared → remove licenses →
//! (30 days) → soft delete → purge. Removing licenses before the shared
//! conversion breaks the conversion and loses mail. B2C accounts have no
//! mailbox and no licenses: notify → disable → delete. Guests: notify (their
//! sponsor) → disable → (licenses, if they hold any directly) → delete; a
//! pending invitation has nothing to disable: notify → delete; an unmanaged
//! guest dormant resets has one step, the redemption reset.

use chrono::{DateTime, Duration, Utc};

use crate::config::{Phases, TenantKind};

/// One step of a case. Its queue message `kind` is
/// `lifecycle::ActionKind::from(step)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Notify,
    Disable,
    ConvertMailbox,
    RemoveLicenses,
    Delete,
    Purge,
    /// An unmanaged guest redeems again with a managed identity.
    ResetRedemption,
}

impl Step {
    /// Steps that change the directory and so must re-check the user first.
    pub fn is_destructive(self) -> bool {
        !matches!(self, Self::Notify)
    }

    fn day(self, phases: &Phases) -> Option<u32> {
        match self {
            Self::Notify => Some(phases.notify),
            Self::Disable => Some(phases.disable),
            Self::ConvertMailbox => Some(phases.convert_mailbox),
            Self::RemoveLicenses => Some(phases.remove_licenses),
            Self::Delete => Some(phases.delete),
            Self::Purge => phases.purge,
            Self::ResetRedemption => Some(0),
        }
    }
}

/// Whom a case is about, as far as its plan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseSubject {
    #[default]
    Member,
    /// An accepted guest.
    Guest,
    /// A guest invitation nobody accepted.
    PendingInvitation,
    /// An unmanaged (viral) guest whose redemption dormant resets.
    UnmanagedGuest,
}

/// What the plan depends on besides the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanShape {
    pub kind: TenantKind,
    pub subject: CaseSubject,
    /// A user mailbox to convert before licenses go.
    pub has_user_mailbox: bool,
    /// Licenses assigned directly (group-assigned ones cannot be removed
    /// per user).
    pub has_direct_licenses: bool,
}

/// The steps of a case, in order, with their day offsets.
pub fn plan(shape: PlanShape, phases: &Phases) -> Vec<(Step, u32)> {
    let mut steps = match shape.subject {
        CaseSubject::UnmanagedGuest => return vec![(Step::ResetRedemption, 0)],
        CaseSubject::PendingInvitation => vec![Step::Notify],
        CaseSubject::Member | CaseSubject::Guest => vec![Step::Notify, Step::Disable],
    };
    match (shape.kind, shape.subject) {
        (TenantKind::Workforce, CaseSubject::Member) => {
            if shape.has_user_mailbox {
                steps.push(Step::ConvertMailbox);
            }
            if shape.has_direct_licenses {
                steps.push(Step::RemoveLicenses);
            }
        }
        // A guest's mailbox is at home; licenses only if it holds any.
        (TenantKind::Workforce, CaseSubject::Guest) if shape.has_direct_licenses => {
            steps.push(Step::RemoveLicenses);
        }
        _ => {}
    }
    steps.push(Step::Delete);
    steps.push(Step::Purge);
    steps
        .into_iter()
        .filter_map(|s| s.day(phases).map(|d| (s, d)))
        .collect()
}

/// When `step` falls due in a case opened at `opened`.
pub fn due_at(opened: DateTime<Utc>, day: u32) -> DateTime<Utc> {
    opened + Duration::days(i64::from(day))
}

/// The first step of `plan` not in `done`, with its due time. Steps run in
/// plan order: a later step never overtakes an earlier one that is not done.
pub fn next_step(
    plan: &[(Step, u32)],
    done: &[Step],
    opened: DateTime<Utc>,
) -> Option<(Step, DateTime<Utc>)> {
    plan.iter()
        .find(|(s, _)| !done.contains(s))
        .map(|(s, d)| (*s, due_at(opened, *d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases() -> Phases {
        Phases::default()
    }

    #[test]
    fn workforce_plan_keeps_the_safe_order() {
        let shape = PlanShape {
            subject: CaseSubject::Member,
            kind: TenantKind::Workforce,
            has_user_mailbox: true,
            has_direct_licenses: true,
        };
        let steps: Vec<Step> = plan(shape, &phases()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            steps,
            [
                Step::Notify,
                Step::Disable,
                Step::ConvertMailbox,
                Step::RemoveLicenses,
                Step::Delete
            ]
        );
        let pos = |s| steps.iter().position(|x| *x == s).expect("present");
        assert!(
            pos(Step::ConvertMailbox) < pos(Step::RemoveLicenses),
            "licenses before the mailbox lose mail"
        );
    }

    #[test]
    fn b2c_has_no_mailbox_or_license_steps() {
        let shape = PlanShape {
            subject: CaseSubject::Member,
            kind: TenantKind::B2c,
            has_user_mailbox: true,
            has_direct_licenses: true,
        };
        let steps: Vec<Step> = plan(shape, &phases()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [Step::Notify, Step::Disable, Step::Delete]);
    }

    #[test]
    fn purge_only_when_configured() {
        let mut p = phases();
        p.purge = Some(90);
        let shape = PlanShape {
            subject: CaseSubject::Member,
            kind: TenantKind::B2c,
            has_user_mailbox: false,
            has_direct_licenses: false,
        };
        assert_eq!(plan(shape, &p).last(), Some(&(Step::Purge, 90)));
    }

    #[test]
    fn next_step_walks_in_order_and_dates_from_the_opening() {
        let shape = PlanShape {
            subject: CaseSubject::Member,
            kind: TenantKind::Workforce,
            has_user_mailbox: false,
            has_direct_licenses: true,
        };
        let p = plan(shape, &phases());
        let opened = DateTime::parse_from_rfc3339("2026-11-01T02:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let (s, due) = next_step(&p, &[], opened).expect("first");
        assert_eq!((s, due), (Step::Notify, opened));
        let (s, due) = next_step(&p, &[Step::Notify], opened).expect("second");
        assert_eq!(s, Step::Disable);
        assert_eq!(due.to_rfc3339(), "2026-11-15T02:00:00+00:00");
        let (s, _) = next_step(&p, &[Step::Notify, Step::Disable], opened).expect("third");
        assert_eq!(s, Step::RemoveLicenses);
        let all = [
            Step::Notify,
            Step::Disable,
            Step::RemoveLicenses,
            Step::Delete,
        ];
        assert_eq!(next_step(&p, &all, opened), None);
    }
}
