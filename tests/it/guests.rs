//! Issue 13, the guest side: pending invitations, inactive guests, and
//! unmanaged (viral) guests, on the simulator with its clock moved.

use dormant::lifecycle::{ActionKind, CaseStatus};
use dormant::sim::Archetype;
use dormant::store::audit::Outcome;

use crate::safety::Tenant;

const DAY: f64 = 1.0;

fn of_archetype(t: &Tenant, arch: Archetype) -> Vec<String> {
    t.sim.with_tenant(|tenant| {
        (0..tenant.users.len() as u32)
            .filter(|&i| {
                tenant.users[i as usize].arch == arch && !tenant.users[i as usize].is_deleted()
            })
            .map(|i| tenant.user_id(i))
            .collect()
    })
}

/// `GET /users/{id}/appRoleAssignments`: (resource, app role) pairs.
async fn app_role_assignments(t: &Tenant, user: &str) -> Vec<(String, String)> {
    let graph = t.graph().await;
    let page: serde_json::Value = graph
        .get_json(
            graph.url(&["users", user, "appRoleAssignments"]),
            dormant::graph::RequestClass::ReadList,
            "/users/{id}/appRoleAssignments",
        )
        .await
        .expect("app role assignments");
    let mut out: Vec<(String, String)> = page["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|a| {
            (
                a["resourceId"].as_str().unwrap_or("").to_owned(),
                a["appRoleId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_are_judged_and_each_home_domain_is_asked_once() {
    // Report mode: nothing changes, every guest kind is named; one home
    // domain holds 500 unmanaged guests.
    let t = Tenant::start_with(
        dormant::sim::SimConfig {
            users: 600,
            seed: 41,
            viral_guests: 500,
            viral_domains: 1,
            ..dormant::sim::SimConfig::default()
        },
        &[("DORMANT_POLICY__MODE", "report")],
    )
    .await;
    let summary = t.night().await;
    let rows = t.rows().await;
    let pending = of_archetype(&t, Archetype::GuestPending);
    let viral = of_archetype(&t, Archetype::GuestViral);
    assert!(
        pending.len() >= 5 && viral.len() >= 5,
        "{} {}",
        pending.len(),
        viral.len()
    );
    let now = t.sim.now();
    let mut old_pending = 0;
    for user in &pending {
        let invited = t.sim.with_tenant(|tenant| {
            let i = (0..tenant.users.len() as u32)
                .find(|&i| tenant.user_id(i) == *user)
                .expect("guest");
            tenant.users[i as usize].state_changed
        });
        let days = (now.timestamp() - invited) / 86_400;
        match rows.get(user) {
            Some(row) if days >= 30 => {
                old_pending += 1;
                assert_eq!(row.verdict, "inactive", "{user}");
                assert_eq!(row.action, "delete", "{user}");
                assert!(
                    row.flags.contains(&"pending-invitation".to_string()),
                    "{:?}",
                    row.flags
                );
                assert!(
                    !row.flags.contains(&"no-signin-data".to_string()),
                    "{:?}",
                    row.flags
                );
            }
            None => assert!(days < 30, "{user}: {days} days pending and not listed"),
            Some(row) => panic!("{user}: {days} days pending listed as {}", row.verdict),
        }
    }
    for user in &viral {
        if let Some(row) = rows.get(user) {
            assert!(
                row.flags.contains(&"unmanaged-guest".to_string()),
                "{:?}",
                row.flags
            );
            assert_eq!(row.action, "reset-redemption");
        } else {
            panic!("unmanaged guest {user} not listed");
        }
    }
    let guests = summary
        .guests
        .as_ref()
        .expect("workforce summary has guests");
    assert_eq!(guests.pending, old_pending);
    assert_eq!(guests.unmanaged, viral.len() as u64);
    assert!(
        guests.by_domain.keys().all(|d| d == "adatumstudents.edu"
            || d == "litwarefreelance.com"
            || d == "campus000.example.edu"),
        "{:?}",
        guests.by_domain
    );
    assert_eq!(guests.by_domain["campus000.example.edu"], 500);
    // One realm lookup per guest domain, however many guests share it.
    let lookups = t.sim.stats().realm_lookups;
    assert_eq!(
        lookups.get("campus000.example.edu"),
        Some(&1),
        "{lookups:?}"
    );
    for (domain, n) in &lookups {
        assert_eq!(*n, 1, "{domain} asked {n} times: {lookups:?}");
    }
    // A second run in the same process asks again only after the answer
    // went stale (12 h), not for every run of a busy day.
    t.night().await;
    assert!(t.sim.stats().realm_lookups.values().all(|n| *n == 1));
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_guests_are_reset_keeping_their_id_groups_and_app_roles_and_role_holders_are_not()
{
    let t = Tenant::start(
        600,
        42,
        0,
        &[("DORMANT_POLICY__GUESTS__UNMANAGED", "reset")],
    )
    .await;
    let viral = of_archetype(&t, Archetype::GuestViral);
    // One holds a directory role (PIM-eligible): app-only cannot reset it.
    let admin = viral[0].clone();
    assert!(t.sim.make_eligible(&admin));
    let groups_before = t
        .graph()
        .await
        .transitive_member_of(&viral[1])
        .await
        .expect("groups");
    let mut assignments_before = Vec::new();
    for user in &viral[1..] {
        assignments_before.push(app_role_assignments(&t, user).await);
    }
    assert!(
        assignments_before.iter().any(|a| !a.is_empty()),
        "some reset guests hold an app role"
    );
    let summary = t.day_of_work().await;
    assert!(!summary.quarantined, "{summary:?}");
    let rows = t.rows().await;
    assert_eq!(rows[&admin].action, "manual-review");
    for user in &viral[1..] {
        let lines = t.lines_of(user).await;
        let reset = lines
            .iter()
            .find(|l| l.step == "reset-redemption")
            .unwrap_or_else(|| panic!("{user}: {lines:?}"));
        assert_eq!(reset.outcome, Outcome::Done, "{reset:?}");
        assert_eq!(reset.detail.as_deref(), Some("redemption-reset"));
        let u = t
            .graph()
            .await
            .get_user(user, &["id", "externalUserState"])
            .await
            .expect("the same object id answers");
        assert_eq!(u.id.to_ascii_lowercase(), user.to_ascii_lowercase());
        assert_eq!(
            u.external_user_state,
            Some(dormant::graph::ExternalUserState::PendingAcceptance)
        );
        let case = t.closed_case(user).await;
        assert_eq!(case.status, CaseStatus::Closed, "{user}");
        assert!(case.in_plan(ActionKind::ResetRedemption).is_some());
    }
    // Graph has no undo for a reset: restore says so instead of "done".
    let lifecycle = t.ctx.lifecycle().await.expect("lifecycle");
    let refused = lifecycle
        .restore(&viral[1], None, "")
        .await
        .expect_err("no undo for a reset");
    assert!(refused.to_string().contains("no undo"), "{refused}");
    let groups_after = t
        .graph()
        .await
        .transitive_member_of(&viral[1])
        .await
        .expect("groups");
    assert_eq!(
        groups_after.iter().map(|g| &g.id).collect::<Vec<_>>(),
        groups_before.iter().map(|g| &g.id).collect::<Vec<_>>(),
        "groups kept"
    );
    for (user, before) in viral[1..].iter().zip(&assignments_before) {
        assert_eq!(
            &app_role_assignments(&t, user).await,
            before,
            "{user}: app roles kept"
        );
    }
    assert!(
        t.lines_of(&admin)
            .await
            .iter()
            .all(|l| l.step != "reset-redemption")
    );
    // The next night finds them pending, not unmanaged: no second reset.
    t.days(DAY);
    t.day_of_work().await;
    for user in &viral[1..] {
        let resets = t
            .lines_of(user)
            .await
            .into_iter()
            .filter(|l| l.step == "reset-redemption")
            .count();
        assert_eq!(resets, 1, "{user}");
    }
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_invitation_is_deleted_on_its_day_after_its_sponsor_hears_and_can_be_restored() {
    let t = Tenant::start(
        400,
        43,
        0,
        &[
            ("DORMANT_POLICY__PHASES__DISABLE", "1"),
            ("DORMANT_POLICY__PHASES__CONVERT_MAILBOX", "1"),
            ("DORMANT_POLICY__PHASES__REMOVE_LICENSES", "1"),
            ("DORMANT_POLICY__PHASES__DELETE", "31"),
        ],
    )
    .await;
    t.day_of_work().await;
    let pending: Vec<String> = {
        let rows = t.rows().await;
        of_archetype(&t, Archetype::GuestPending)
            .into_iter()
            .filter(|u| {
                rows.get(u)
                    .is_some_and(|r| r.flags.contains(&"pending-invitation".to_string()))
            })
            .collect()
    };
    assert!(!pending.is_empty());
    let guest = pending[0].clone();
    // Give the guest a sponsor: the notice goes to the sponsor.
    let sponsor = t.users_where("active", |u| u.enabled())[0].clone();
    assert!(t.sim.set_sponsor(&guest, Some(&sponsor)));
    let case = t
        .open_case(&guest)
        .await
        .expect("a case for the invitation");
    let kinds: Vec<ActionKind> = case.plan.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [ActionKind::Notify, ActionKind::Delete],
        "nothing to disable"
    );
    // The notify ran on day 0 before the sponsor was set; a guest without
    // one is told to the governance mailbox.
    let notify = t
        .lines_of(&guest)
        .await
        .into_iter()
        .find(|l| l.step == "notify")
        .expect("notified");
    assert!(
        matches!(
            notify.detail.as_deref(),
            Some("mail-sponsor" | "mail-governance" | "mail-inviter")
        ),
        "{notify:?}"
    );
    t.days(31.0);
    t.day_of_work().await;
    assert!(
        matches!(
            t.graph().await.get_user(&guest, &["id"]).await,
            Err(dormant::graph::GraphError::NotFound)
        ),
        "deleted on its day"
    );
    let lifecycle = t.ctx.lifecycle().await.expect("lifecycle");
    let report = lifecycle.restore(&guest, None, "").await.expect("restore");
    assert_eq!(report.outcome, "done", "{report:?}");
    t.graph()
        .await
        .get_user(&guest, &["id"])
        .await
        .expect("back");
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_notice_goes_to_its_sponsor() {
    let t = Tenant::start(400, 44, 0, &[]).await;
    let sponsor = t.users_where("active", |u| u.enabled())[0].clone();
    let sponsor_mail = t
        .graph()
        .await
        .get_user(&sponsor, &["id", "mail"])
        .await
        .expect("sponsor")
        .mail
        .expect("a mailbox");
    // Every guest gets the sponsor, then the night opens their cases.
    for g in of_archetype(&t, Archetype::GuestPending)
        .into_iter()
        .chain(of_archetype(&t, Archetype::GuestAccepted))
    {
        t.sim.set_sponsor(&g, Some(&sponsor));
    }
    t.day_of_work().await;
    let mails = t.sim.mail();
    let to_sponsor = mails
        .iter()
        .filter(|m| m.to.contains(&sponsor_mail))
        .count();
    assert!(to_sponsor >= 1, "the sponsor heard: {}", mails.len());
    let lines = t.lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.step == "notify" && l.detail.as_deref() == Some("mail-sponsor"))
    );
    assert!(lines.iter().all(|l| {
        l.detail.as_deref() != Some("mail-user")
            || !l.user.as_deref().is_some_and(|u| {
                of_archetype(&t, Archetype::GuestAccepted).contains(&u.to_string())
            })
    }));
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_without_a_sponsor_is_told_to_its_inviter_else_the_governance_mailbox() {
    let t = Tenant::start(400, 45, 0, &[]).await;
    let members = t.users_where("active", |u| u.enabled());
    let inviter = members[1].clone();
    let inviter_mail = t
        .graph()
        .await
        .get_user(&inviter, &["id", "mail"])
        .await
        .expect("inviter")
        .mail
        .expect("a mailbox");
    let guests: Vec<String> = of_archetype(&t, Archetype::GuestPending)
        .into_iter()
        .chain(of_archetype(&t, Archetype::GuestAccepted))
        .collect();
    for g in &guests {
        t.sim.set_sponsor(g, None);
    }
    // Half were invited by a person lately (the audit is there); the rest
    // long ago (Entra keeps audits 30 days): nobody to name.
    let invited: Vec<&String> = guests.iter().step_by(2).collect();
    for g in &invited {
        assert!(t.sim.record_invitation(g, &inviter));
    }
    t.day_of_work().await;
    let lines = t.lines().await;
    let notices: Vec<_> = lines
        .iter()
        .filter(|l| l.step == "notify" && l.user.as_ref().is_some_and(|u| guests.contains(u)))
        .collect();
    assert!(!notices.is_empty());
    for n in &notices {
        let user = n.user.clone().unwrap_or_default();
        let want = if invited.contains(&&user) {
            "mail-inviter"
        } else {
            "mail-governance"
        };
        assert!(
            n.detail.as_deref().is_some_and(|d| d.starts_with(want)),
            "{user}: {:?}",
            n.detail
        );
    }
    let mails = t.sim.mail();
    assert!(
        mails.iter().any(|m| m.to.contains(&inviter_mail)),
        "the inviter heard"
    );
    // Directory audits are asked once for every guest, not once each.
    let audits = t
        .sim
        .stats()
        .by_route
        .get("GET auditLogs/directoryAudits")
        .copied()
        .unwrap_or(0);
    assert!(
        (1..=6).contains(&audits),
        "{audits} directory-audit requests for {} notices",
        notices.len()
    );
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_only_audit_judges_guests_and_leaves_members_cases_and_latest_alone() {
    use dormant::scan::run::{ScanOptions, ScanScope};
    use dormant::store::{REPORTS_CONTAINER, STATE_CONTAINER};
    let t = Tenant::start(600, 43, 0, &[]).await;
    t.day_of_work().await;
    let store = &t.ctx.store;
    let latest = store
        .get(REPORTS_CONTAINER, "latest/summary.json")
        .await
        .expect("latest")
        .body;
    let baseline = store
        .get(STATE_CONTAINER, "scan-baseline.json")
        .await
        .expect("baseline")
        .body;
    // A member and a guest with open cases sign in again.
    let open = t.cases().open_users().await.expect("cases");
    let is_guest = |id: &str| {
        t.sim.with_tenant(|tenant| {
            (0..tenant.users.len() as u32)
                .find(|&i| tenant.user_id(i).eq_ignore_ascii_case(id))
                .is_some_and(|i| tenant.users[i as usize].arch.is_guest())
        })
    };
    let member = open.iter().find(|u| !is_guest(u)).expect("a member case");
    let accepted = of_archetype(&t, Archetype::GuestAccepted);
    let guest = open
        .iter()
        .find(|u| accepted.iter().any(|a| a.eq_ignore_ascii_case(u)))
        .expect("an accepted guest's case");
    assert!(t.sim.record_sign_in(member, true, true));
    assert!(t.sim.record_sign_in(guest, true, true));
    t.days(0.5);

    let outcome = t
        .ctx
        .scanner()
        .await
        .expect("scanner")
        .run(
            &ScanOptions {
                scope: ScanScope::Guests,
                ..ScanOptions::default()
            },
            std::sync::Arc::new(()),
        )
        .await
        .expect("guest audit");
    let summary = &outcome.summary;
    assert_eq!(summary.scope, "guests");
    let guests = t.sim.with_tenant(|tenant| {
        tenant
            .users
            .iter()
            .filter(|u| u.arch.is_guest() && !u.is_deleted())
            .count() as u64
    });
    assert_eq!(summary.scanned, guests, "every guest and no one else paged");
    let rows = t.rows_in(&outcome.csv).await;
    assert!(!rows.is_empty());
    for user in rows.keys() {
        assert!(is_guest(user), "{user} is not a guest");
    }
    // The nightly report and yardstick are the full scan's still.
    let store = t.ctx.store.clone();
    let after = |container: &'static str, name: &'static str| {
        let store = store.clone();
        async move { store.get(container, name).await.expect(name).body }
    };
    assert_eq!(
        after(REPORTS_CONTAINER, "latest/summary.json").await,
        latest
    );
    assert_eq!(after(STATE_CONTAINER, "scan-baseline.json").await, baseline);
    let guest_latest: dormant::report::Summary =
        serde_json::from_slice(&after(REPORTS_CONTAINER, "latest-guests/summary.json").await)
            .expect("guest summary");
    assert_eq!(guest_latest.run_id, summary.run_id);
    after(STATE_CONTAINER, "scan-baseline-guests.json").await;
    // The guest it saw active again is let go; the member it never saw
    // keeps the case until the next full run judges it.
    assert!(t.open_case(guest).await.is_none(), "guest case still open");
    assert_eq!(t.closed_case(guest).await.status, CaseStatus::Cancelled);
    assert!(t.open_case(member).await.is_some(), "member case touched");
    t.night().await;
    assert!(
        t.open_case(member).await.is_none(),
        "the full run lets it go"
    );
    t.sim.shutdown().await;
}
