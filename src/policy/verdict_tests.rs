//! Table-driven tests of every verdict rule, with dates around each boundary.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::activity::{ServiceUsage, SignIns, Source};
use super::verdict::*;
use crate::config::{Config, Policy, Sources, UserRef};

const TENANT: &str = "8f0c2d2e-1111-4c4c-9d9d-123456789abc";
const ID: &str = "5b3a1c2d-3333-4e4e-8f8f-0123456789ab";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T02:00:00Z")
        .expect("date")
        .with_timezone(&Utc)
}

fn days_ago(n: i64) -> DateTime<Utc> {
    now() - Duration::days(n)
}

fn date_days_ago(n: i64) -> NaiveDate {
    days_ago(n).date_naive()
}

fn policy_with(env: &[(&str, &str)]) -> Policy {
    let mut all = vec![("DORMANT_TENANT_ID".to_owned(), TENANT.to_owned())];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources::from_env(None, all))
        .expect("test policy")
        .policy
}

fn policy() -> Policy {
    policy_with(&[])
}

fn member(last_success_days: Option<i64>) -> Subject {
    Subject {
        id: ID.into(),
        upn: "jane.doe@contoso.com".into(),
        is_guest: false,
        account_enabled: true,
        created: Some(days_ago(1000)),
        sign_ins: Some(SignIns {
            last_successful: last_success_days.map(days_ago),
            ..SignIns::default()
        }),
        usage: None,
        licensed: true,
        on_premises_synced: false,
        invitation_accepted: false,
        invitation_pending_since: None,
        unreadable: false,
    }
}

fn verdict_of(subject: &Subject, enrichment: &Enrichment, policy: &Policy) -> Assessment {
    let activity = classify(subject, policy, now());
    assess(subject, activity, enrichment, policy, now())
}

#[test]
fn inactivity_threshold_boundaries() {
    let p = policy(); // 90 days
    for (days, want) in [
        (0, Verdict::Active),
        (89, Verdict::Active),
        (90, Verdict::Inactive),
        (91, Verdict::Inactive),
        (2000, Verdict::Inactive),
    ] {
        let a = verdict_of(&member(Some(days)), &Enrichment::default(), &p);
        assert_eq!(a.verdict, want, "{days} days");
        assert_eq!(a.days_inactive, Some(days), "{days} days");
    }
    let p = policy_with(&[("DORMANT_POLICY__INACTIVE_AFTER_DAYS", "180")]);
    assert_eq!(
        verdict_of(&member(Some(179)), &Enrichment::default(), &p).verdict,
        Verdict::Active
    );
    assert_eq!(
        verdict_of(&member(Some(180)), &Enrichment::default(), &p).verdict,
        Verdict::Inactive
    );
}

#[test]
fn inactive_users_are_recommended_to_be_notified_first() {
    let a = verdict_of(&member(Some(400)), &Enrichment::default(), &policy());
    assert_eq!(a.action, Action::Notify);
    assert_eq!(
        a.last_activity.map(|l| l.source),
        Some(Source::SuccessfulSignIn)
    );
}

#[test]
fn failed_sign_ins_never_keep_an_account_alive() {
    let mut s = member(Some(200));
    s.sign_ins = Some(SignIns {
        last_successful: Some(days_ago(200)),
        last_interactive: Some(days_ago(0)),
        last_non_interactive: Some(days_ago(1)),
    });
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert_eq!(a.days_inactive, Some(200));

    // Attacked and never successfully signed in.
    s.sign_ins = Some(SignIns {
        last_successful: None,
        last_interactive: Some(days_ago(0)),
        last_non_interactive: None,
    });
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::NeverSignedIn);
    assert!(a.flags.contains(&RiskFlag::LicensedNeverSignedIn));
}

#[test]
fn a_blank_record_that_cannot_speak_is_unknown_never_inactive() {
    // Created before sign-in logging began (2020-05): a blank record may
    // hide sign-ins Graph never saw.
    let mut s = member(None);
    s.sign_ins = None;
    s.created = Some(
        DateTime::parse_from_rfc3339("2020-04-30T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc),
    );
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::Unknown);
    assert_eq!(a.action, Action::None);
    assert!(a.flags.contains(&RiskFlag::NoSigninData));

    // No creation date (users from before mid-2018): unknown too.
    s.created = None;
    assert_eq!(
        verdict_of(&s, &Enrichment::default(), &policy()).verdict,
        Verdict::Unknown
    );

    // A guest who accepted the invitation signed in at least once: a blank
    // record is a data gap (the classic mistake), so unknown.
    s.created = Some(days_ago(400));
    s.is_guest = true;
    s.invitation_accepted = true;
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::Unknown);
    assert!(a.flags.contains(&RiskFlag::Guest));
}

#[test]
fn a_placeholder_or_null_record_is_no_record() {
    let placeholder = SignIns::default(); // what `0001-01-01T00:00:00Z` and nulls read as
    let created_2016 = DateTime::parse_from_rfc3339("2016-03-01T00:00:00Z")
        .expect("date")
        .with_timezone(&Utc);
    // An account from 2016: the record cannot speak for its life.
    let mut s = member(None);
    s.sign_ins = Some(placeholder.clone());
    s.created = Some(created_2016);
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(
        a.verdict,
        Verdict::Unknown,
        "2016 account, placeholder record"
    );
    assert_eq!(a.action, Action::None);
    assert!(a.flags.contains(&RiskFlag::NoSigninData));
    assert!(!a.flags.contains(&RiskFlag::LicensedNeverSignedIn));
    // An accepted guest: redeeming took a sign-in.
    let mut g = member(None);
    g.sign_ins = Some(placeholder.clone());
    g.created = Some(days_ago(400));
    g.is_guest = true;
    g.invitation_accepted = true;
    let a = verdict_of(&g, &Enrichment::default(), &policy());
    assert_eq!(
        a.verdict,
        Verdict::Unknown,
        "accepted guest, placeholder record"
    );
    // Exactly like an absent record, in every case.
    for created in [Some(created_2016), Some(days_ago(400)), None] {
        let mut with = member(None);
        with.created = created;
        with.sign_ins = Some(placeholder.clone());
        let mut without = with.clone();
        without.sign_ins = None;
        assert_eq!(
            verdict_of(&with, &Enrichment::default(), &policy()),
            verdict_of(&without, &Enrichment::default(), &policy()),
            "created {created:?}"
        );
    }
}

#[test]
fn failed_attempts_alone_do_not_prove_an_old_account_never_signed_in() {
    // Failed attempts overwrite the legacy dates: a 2016 account may have
    // signed in until 2023 without any trace left.
    let mut s = member(None);
    s.created = Some(
        DateTime::parse_from_rfc3339("2016-03-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc),
    );
    s.sign_ins = Some(SignIns {
        last_interactive: Some(days_ago(2)),
        ..SignIns::default()
    });
    assert_eq!(
        verdict_of(&s, &Enrichment::default(), &policy()).verdict,
        Verdict::Unknown
    );
    // Created after the successful field existed: it covers the whole life.
    s.created = Some(
        DateTime::parse_from_rfc3339("2023-12-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc),
    );
    assert_eq!(
        verdict_of(&s, &Enrichment::default(), &policy()).verdict,
        Verdict::NeverSignedIn
    );
}

#[test]
fn an_unreadable_record_is_unknown_and_never_acted_on() {
    let mut s = member(Some(400));
    s.unreadable = true;
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::Unknown);
    assert_eq!(a.action, Action::None);
    assert!(a.flags.contains(&RiskFlag::NoSigninData));
    assert!(!a.verdict.is_actionable());
}

#[test]
fn a_hold_keeps_the_user_for_review_until_it_is_active_again() {
    let restored = Enrichment {
        hold: Some(Hold {
            kind: HoldKind::Restored,
            since: days_ago(10),
            until: None,
        }),
        ..Enrichment::default()
    };
    // Inactive for 400 days, restored 10 days ago: held.
    let a = verdict_of(&member(Some(400)), &restored, &policy());
    assert_eq!(a.verdict, Verdict::Review);
    assert_eq!(a.action, Action::ManualReview);
    assert!(a.flags.contains(&RiskFlag::Restored));
    // A hold has no end date: restored 300 days ago, still no activity.
    let old = Enrichment {
        hold: Some(Hold {
            kind: HoldKind::Restored,
            since: days_ago(300),
            until: None,
        }),
        ..Enrichment::default()
    };
    assert_eq!(
        verdict_of(&member(Some(400)), &old, &policy()).verdict,
        Verdict::Review
    );
    // Activity newer than the hold ends it: inactive again later, the user
    // is judged like anyone else.
    let a = verdict_of(&member(Some(200)), &old, &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert!(!a.flags.contains(&RiskFlag::Restored));
    // A re-enable hold shows as recently re-enabled.
    let reenabled = Enrichment {
        hold: Some(Hold {
            kind: HoldKind::ReEnabled,
            since: days_ago(200),
            until: None,
        }),
        ..Enrichment::default()
    };
    let a = verdict_of(&member(Some(400)), &reenabled, &policy());
    assert_eq!(a.verdict, Verdict::Review);
    assert!(a.flags.contains(&RiskFlag::RecentlyReenabled));
}

#[test]
fn a_keep_holds_the_user_for_review_until_keep_days_or_new_activity() {
    let kept = |since_days: i64| Enrichment {
        hold: Some(Hold::kept(days_ago(since_days), 180)),
        ..Enrichment::default()
    };
    // Inactive 400 days, kept 10 days ago: held, flagged `kept`.
    let a = verdict_of(&member(Some(400)), &kept(10), &policy());
    assert_eq!(a.verdict, Verdict::Review);
    assert_eq!(a.action, Action::ManualReview);
    assert!(a.flags.contains(&RiskFlag::Kept));
    assert_eq!(RiskFlag::Kept.as_str(), "kept");
    // Kept 179 days ago: still held; 180 days ago: the keep has ended.
    assert!(
        verdict_of(&member(Some(400)), &kept(179), &policy())
            .flags
            .contains(&RiskFlag::Kept)
    );
    let a = verdict_of(&member(Some(400)), &kept(180), &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert!(!a.flags.contains(&RiskFlag::Kept));
    // Activity newer than the keep ends it early.
    let a = verdict_of(&member(Some(100)), &kept(150), &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert!(!a.flags.contains(&RiskFlag::Kept));
    // The rule itself, for the readers that do not go through `assess`.
    let hold = Hold::kept(days_ago(10), 180);
    assert!(hold.in_force(None, now()));
    assert!(hold.in_force(Some(days_ago(11)), now()));
    assert!(!hold.in_force(Some(days_ago(9)), now()));
    assert!(!hold.in_force(None, days_ago(10) + Duration::days(180)));
    let open = Hold::open_ended(HoldKind::Restored, days_ago(1000));
    assert!(open.in_force(None, now()));
}

#[test]
fn a_blank_record_covering_the_whole_life_means_never_signed_in() {
    let mut s = member(None);
    s.sign_ins = None;
    s.created = Some(
        DateTime::parse_from_rfc3339("2020-05-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc),
    );
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::NeverSignedIn);
    assert!(a.flags.contains(&RiskFlag::NoSigninData));
    assert!(a.flags.contains(&RiskFlag::LicensedNeverSignedIn));

    // A pending guest never redeemed: never signed in.
    s.is_guest = true;
    s.licensed = false;
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::NeverSignedIn);
}

#[test]
fn usage_report_speaks_for_users_without_sign_in_data() {
    let mut s = member(None);
    s.sign_ins = None;
    s.created = None;
    s.usage = Some(ServiceUsage {
        teams: Some(date_days_ago(3)),
        ..ServiceUsage::default()
    });
    assert!(classify(&s, &policy(), now()).is_plainly_active());

    s.usage = Some(ServiceUsage {
        teams: Some(date_days_ago(120)),
        ..ServiceUsage::default()
    });
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert!(a.flags.contains(&RiskFlag::NoSigninData));
}

#[test]
fn usage_newer_than_sign_in_keeps_a_user_active() {
    let mut s = member(Some(300));
    s.usage = Some(ServiceUsage {
        exchange: Some(date_days_ago(10)),
        ..ServiceUsage::default()
    });
    let activity = classify(&s, &policy(), now());
    assert!(activity.is_plainly_active());
    assert_eq!(activity.last().map(|l| l.source), Some(Source::Exchange));
}

#[test]
fn never_signed_in_and_the_creation_grace() {
    let p = policy(); // grace 30 days
    for (created, want) in [
        (Some(0), None),
        (Some(29), None),
        (Some(30), Some(Verdict::NeverSignedIn)),
        (Some(365), Some(Verdict::NeverSignedIn)),
        // No creation date (before mid-2018) and an all-blank record: it
        // cannot speak for the account's life.
        (None, Some(Verdict::Unknown)),
    ] {
        let mut s = member(None);
        s.created = created.map(days_ago);
        let activity = classify(&s, &p, now());
        match want {
            None => assert_eq!(activity, Activity::New, "created {created:?}"),
            Some(v) => {
                assert_eq!(
                    verdict_of(&s, &Enrichment::default(), &p).verdict,
                    v,
                    "created {created:?}"
                )
            }
        }
    }
    let mut s = member(None);
    s.licensed = false;
    let a = verdict_of(&s, &Enrichment::default(), &p);
    assert!(!a.flags.contains(&RiskFlag::LicensedNeverSignedIn));
}

#[test]
fn a_new_user_with_an_old_imported_sign_in_is_not_inactive() {
    let mut s = member(Some(400));
    s.created = Some(days_ago(5));
    assert!(classify(&s, &policy(), now()).is_plainly_active());
}

#[test]
fn exclusions_win_over_everything() {
    let by_upn = policy_with(&[("DORMANT_POLICY__EXCLUDE_USERS", "Jane.Doe@Contoso.com")]);
    let a = verdict_of(&member(Some(400)), &Enrichment::default(), &by_upn);
    assert_eq!((a.verdict, a.action), (Verdict::Excluded, Action::None));

    let by_id = policy_with(&[("DORMANT_POLICY__EXCLUDE_USERS", ID)]);
    assert_eq!(
        verdict_of(&member(Some(400)), &Enrichment::default(), &by_id).verdict,
        Verdict::Excluded
    );

    let group = Enrichment {
        in_excluded_group: true,
        ..Enrichment::default()
    };
    assert_eq!(
        verdict_of(&member(Some(400)), &group, &policy()).verdict,
        Verdict::Excluded
    );

    let bg = policy_with(&[("DORMANT_POLICY__BREAK_GLASS", ID)]);
    let mut s = member(None);
    s.sign_ins = None;
    s.created = None;
    let a = verdict_of(&s, &Enrichment::default(), &bg);
    assert_eq!(
        a.verdict,
        Verdict::Excluded,
        "break-glass is never touched, even unknown"
    );
    assert!(a.flags.contains(&RiskFlag::BreakGlass));
    assert!(
        bg.break_glass
            .contains(&UserRef::ObjectId(ID.parse().expect("uuid")))
    );
}

#[test]
fn risk_flags_hold_inactive_users_for_review() {
    let p = policy();
    let cases: Vec<(&str, Subject, Enrichment, RiskFlag)> = vec![
        (
            "executive title",
            member(Some(400)),
            Enrichment {
                job_title: Some("Chief Financial Officer".into()),
                ..Enrichment::default()
            },
            RiskFlag::Executive,
        ),
        (
            "service account UPN",
            Subject {
                upn: "svc-backup@contoso.com".into(),
                ..member(Some(400))
            },
            Enrichment::default(),
            RiskFlag::ServiceAccount,
        ),
        (
            "shared mailbox",
            member(Some(400)),
            Enrichment {
                mailbox: Some(MailboxPurpose::Shared),
                ..Enrichment::default()
            },
            RiskFlag::SharedMailbox,
        ),
        (
            "room mailbox",
            member(None),
            Enrichment {
                mailbox: Some(MailboxPurpose::Room),
                ..Enrichment::default()
            },
            RiskFlag::SharedMailbox,
        ),
        (
            "privileged role",
            member(Some(400)),
            Enrichment {
                privileged_role: true,
                ..Enrichment::default()
            },
            RiskFlag::PrivilegedRole,
        ),
        (
            "on-premises synced",
            Subject {
                on_premises_synced: true,
                ..member(Some(400))
            },
            Enrichment::default(),
            RiskFlag::OnPremisesSynced,
        ),
        (
            "re-enabled by a person 10 days ago",
            member(Some(400)),
            Enrichment {
                reenabled_at: Some(days_ago(10)),
                ..Enrichment::default()
            },
            RiskFlag::RecentlyReenabled,
        ),
    ];
    for (name, subject, enrichment, flag) in cases {
        let a = verdict_of(&subject, &enrichment, &p);
        assert_eq!(a.verdict, Verdict::Review, "{name}");
        assert_eq!(a.action, Action::ManualReview, "{name}");
        assert!(a.flags.contains(&flag), "{name}: {:?}", a.flags);
    }
}

#[test]
fn a_flag_does_not_drag_an_active_user_into_the_report() {
    let e = Enrichment {
        job_title: Some("CEO".into()),
        ..Enrichment::default()
    };
    assert_eq!(
        verdict_of(&member(Some(3)), &e, &policy()).verdict,
        Verdict::Active
    );
}

#[test]
fn re_enablement_long_ago_does_not_hold() {
    let e = Enrichment {
        reenabled_at: Some(days_ago(90)),
        ..Enrichment::default()
    };
    let a = verdict_of(&member(Some(400)), &e, &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert!(!a.flags.contains(&RiskFlag::RecentlyReenabled));
}

#[test]
fn executive_pattern_is_configurable_and_case_insensitive() {
    let p = policy_with(&[("DORMANT_POLICY__EXECUTIVE_TITLE_PATTERN", "(?i)^head of")]);
    let e = Enrichment {
        job_title: Some("HEAD OF SALES".into()),
        ..Enrichment::default()
    };
    assert_eq!(
        verdict_of(&member(Some(400)), &e, &p).verdict,
        Verdict::Review
    );
    let e = Enrichment {
        job_title: Some("Chief Executive Officer".into()),
        ..Enrichment::default()
    };
    assert_eq!(
        verdict_of(&member(Some(400)), &e, &p).verdict,
        Verdict::Inactive
    );
}

#[test]
fn unmanaged_guests_are_reset_even_when_active() {
    let mut s = member(Some(5));
    s.is_guest = true;
    let e = Enrichment {
        unmanaged_guest: true,
        ..Enrichment::default()
    };
    let a = verdict_of(&s, &e, &policy());
    assert_eq!(
        (a.verdict, a.action),
        (Verdict::Review, Action::ResetRedemption)
    );
    assert!(a.flags.contains(&RiskFlag::UnmanagedGuest) && a.flags.contains(&RiskFlag::Guest));
}

#[test]
fn guests_follow_the_same_inactivity_rules() {
    let mut s = member(Some(120));
    s.is_guest = true;
    let a = verdict_of(&s, &Enrichment::default(), &policy());
    assert_eq!(a.verdict, Verdict::Inactive);
    assert!(a.flags.contains(&RiskFlag::Guest));
}

#[test]
fn names_match_the_contract() {
    let verdicts: Vec<_> = [
        Verdict::Inactive,
        Verdict::NeverSignedIn,
        Verdict::Review,
        Verdict::Excluded,
        Verdict::Unknown,
    ]
    .iter()
    .map(|v| v.as_str())
    .collect();
    assert_eq!(
        verdicts,
        [
            "inactive",
            "never-signed-in",
            "review",
            "excluded",
            "unknown"
        ]
    );
    let actions: Vec<_> = [
        Action::None,
        Action::Notify,
        Action::Disable,
        Action::RemoveLicenses,
        Action::Delete,
        Action::ResetRedemption,
        Action::ManualReview,
    ]
    .iter()
    .map(|a| a.as_str())
    .collect();
    assert_eq!(
        actions,
        [
            "none",
            "notify",
            "disable",
            "remove-licenses",
            "delete",
            "reset-redemption",
            "manual-review"
        ]
    );
    assert_eq!(
        RiskFlag::LicensedNeverSignedIn.as_str(),
        "licensed-never-signed-in"
    );
    assert_eq!(RiskFlag::Restored.as_str(), "restored");
    assert_eq!(RiskFlag::RecentlyReenabled.as_str(), "recently-reenabled");
}

fn guest(last_success_days: Option<i64>) -> Subject {
    Subject {
        upn: "ada_fabrikam.com#EXT#@contoso.onmicrosoft.com".into(),
        is_guest: true,
        licensed: false,
        invitation_accepted: true,
        ..member(last_success_days)
    }
}

fn pending_guest(invited_days_ago: i64) -> Subject {
    Subject {
        sign_ins: None,
        invitation_accepted: false,
        invitation_pending_since: Some(days_ago(invited_days_ago)),
        ..guest(None)
    }
}

#[test]
fn a_pending_invitation_is_inactive_on_its_day_with_delete_recommended() {
    let p = policy(); // pending_after_days 30
    for (days, verdict) in [
        (0, Verdict::Active),
        (29, Verdict::Active),
        (30, Verdict::Inactive),
        (400, Verdict::Inactive),
    ] {
        let a = verdict_of(&pending_guest(days), &Enrichment::default(), &p);
        assert_eq!(a.verdict, verdict, "{days} days");
        if verdict == Verdict::Inactive {
            assert!(a.flags.contains(&RiskFlag::PendingInvitation), "{a:?}");
            assert!(a.flags.contains(&RiskFlag::Guest));
            assert!(
                !a.flags.contains(&RiskFlag::NoSigninData),
                "the state is the evidence"
            );
            assert_eq!(a.action, Action::Delete);
            assert_eq!(a.days_inactive, Some(days));
        }
    }
    let p = policy_with(&[("DORMANT_POLICY__GUESTS__PENDING_AFTER_DAYS", "10")]);
    assert_eq!(
        verdict_of(&pending_guest(10), &Enrichment::default(), &p).verdict,
        Verdict::Inactive
    );
    // A pending guest with no date to count from is not judged as pending.
    let undated = Subject {
        invitation_pending_since: None,
        created: None,
        ..pending_guest(100)
    };
    assert_eq!(
        verdict_of(&undated, &Enrichment::default(), &p).verdict,
        Verdict::Unknown
    );
}

#[test]
fn accepted_guests_have_their_own_threshold_and_no_data_is_unknown() {
    let p = policy_with(&[("DORMANT_POLICY__GUESTS__INACTIVE_AFTER_DAYS", "60")]);
    assert_eq!(
        verdict_of(&guest(Some(59)), &Enrichment::default(), &p).verdict,
        Verdict::Active
    );
    let a = verdict_of(&guest(Some(60)), &Enrichment::default(), &p);
    assert_eq!(a.verdict, Verdict::Inactive);
    assert_eq!(a.action, Action::Notify);
    // Members keep the member threshold (90).
    assert_eq!(
        verdict_of(&member(Some(60)), &Enrichment::default(), &p).verdict,
        Verdict::Active
    );
    let blank = Subject {
        sign_ins: None,
        ..guest(None)
    };
    let a = verdict_of(&blank, &Enrichment::default(), &p);
    assert_eq!(
        a.verdict,
        Verdict::Unknown,
        "an accepted guest without data"
    );
    assert!(a.flags.contains(&RiskFlag::NoSigninData));
}

#[test]
fn an_unmanaged_guest_holding_a_role_is_for_a_person_not_a_reset() {
    let p = policy();
    let unmanaged = Enrichment {
        unmanaged_guest: true,
        ..Enrichment::default()
    };
    let a = verdict_of(&guest(Some(5)), &unmanaged, &p);
    assert_eq!(a.verdict, Verdict::Review);
    assert_eq!(a.action, Action::ResetRedemption);
    let with_role = Enrichment {
        privileged_role: true,
        ..unmanaged
    };
    let a = verdict_of(&guest(Some(5)), &with_role, &p);
    assert_eq!(a.verdict, Verdict::Review);
    assert_eq!(a.action, Action::ManualReview);
}
