//! The deprovisioning lifecycle on the simulator with its clock (and
//! dormant's) moved forward over 60 days: nightly scans in enforce mode open
//! cases and enqueue due steps, `dormant worker`'s drain runs them, every
//! phase lands on its day and in order, audited; a user who signs in again
//! in the middle is cancelled, a user a person re-enabled is left alone, a
//! sign-in Graph shows a day late undoes what dormant had done, a night
//! whose sign-in data broke quarantines itself and changes nothing, a
//! restore brings the deleted user back with its licenses and holds it, and
//! a duplicate delivery does nothing twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dormant::clock::Clock;
use dormant::config::Config;
use dormant::functions::AppContext;
use dormant::functions::user_actions::{DrainOptions, Drained, drain};
use dormant::graph::GraphError;
use dormant::graph::exchange::MailboxKind;
use dormant::lifecycle::{ActionKind, ActionMessage, CaseStore};
use dormant::scan::run::ScanOptions;
use dormant::sim::{Quirk, Sim, SimConfig};
use dormant::store::audit::{AuditRecord, Outcome};
use dormant::store::{ACTIONS_QUEUE, SendOptions};

const DAY: i64 = 86_400;

fn config(sim: &Sim, dir: &std::path::Path) -> Config {
    // sendMail needs a mailbox of the tenant to send from.
    let mail_from = sim.with_tenant(|t| t.upn(0));
    crate::sim_harness::config_for(
        sim,
        dir,
        &[
            ("DORMANT_POLICY__MODE", "enforce"),
            ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "100000"),
            ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100"),
            ("DORMANT_POLICY__NOTIFY__MAIL_FROM", &mail_from),
        ],
    )
}

async fn drain_all(ctx: &AppContext) -> Drained {
    drain(
        ctx,
        &DrainOptions {
            once: true,
            visibility: Duration::from_secs(60),
            batch: 32,
        },
    )
    .await
    .expect("drain")
}

/// Every audit line between the two dates (the log is per UTC day).
async fn audit_lines(ctx: &AppContext, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    let mut day = from.date_naive();
    while day <= to.date_naive() {
        out.extend(ctx.audit.read_day(day).await.expect("audit day"));
        day = day.succ_opt().expect("next day");
    }
    out
}

struct Tenant {
    sim: Sim,
    clock: Clock,
    ctx: AppContext,
    _dir: tempfile::TempDir,
}

impl Tenant {
    async fn start(users: u32) -> Self {
        let sim = Sim::start(SimConfig {
            users,
            seed: 11,
            // signInActivity shows a sign-in a day late, as Graph may.
            sign_in_lag_secs: DAY,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(&sim, dir.path());
        let clock = Clock::system();
        clock.advance(sim.now() - Utc::now());
        let ctx = AppContext::build(config)
            .expect("context")
            .with_clock(clock.clone());
        Self {
            sim,
            clock,
            ctx,
            _dir: dir,
        }
    }

    fn advance_days(&self, days: i64) {
        self.sim.advance(Duration::from_secs((days * DAY) as u64));
        self.clock.advance(chrono::Duration::days(days));
    }

    async fn scan(&self) -> dormant::report::Summary {
        let scanner = self.ctx.scanner().await.expect("scanner");
        scanner
            .run(&ScanOptions::default(), Arc::new(()))
            .await
            .expect("scan")
            .summary
    }
}

#[tokio::test]
async fn sixty_days_of_cases_on_the_simulator() {
    let t = Tenant::start(400).await;
    let start = t.clock.now();
    let graph = t.ctx.graph().await.expect("graph").clone();
    let exchange = t
        .ctx
        .exchange()
        .await
        .expect("exchange")
        .expect("configured")
        .clone();
    let cases = CaseStore::new(t.ctx.store.clone());

    // Day 0: cases open for every inactive user; each gets its notify step.
    let s = t.scan().await;
    let opened = s.cases.as_ref().expect("enforce mode reports cases").opened;
    assert!(opened >= 10, "a 400-user tenant has inactive users: {s:?}");
    assert_eq!(
        s.actions_enqueued, opened,
        "every new case's notify is due now"
    );
    let users: BTreeSet<String> = cases
        .open_users()
        .await
        .expect("cases")
        .into_iter()
        .collect();
    assert_eq!(users.len() as u64, opened);
    let drained = drain_all(&t.ctx).await;
    assert_eq!(drained.handled, opened);
    let notes = audit_lines(&t.ctx, start, t.clock.now()).await;
    assert!(
        !t.sim.mail().is_empty(),
        "managers were mailed: {:?}",
        notes
            .iter()
            .filter(|r| r.step == "notify")
            .take(3)
            .collect::<Vec<_>>()
    );

    // Pick: A walks the whole plan (user mailbox, direct licenses), B signs
    // in again on day 7, C is re-enabled by a person after the disable, D
    // signs in after dormant disabled it and converted its mailbox.
    let mut full = Vec::new();
    let mut others = Vec::new();
    for u in &users {
        let (case, _) = cases.open_case(u).await.expect("read").expect("open");
        let kinds: Vec<ActionKind> = case.plan.iter().map(|p| p.kind).collect();
        if kinds.contains(&ActionKind::ConvertMailbox)
            && kinds.contains(&ActionKind::RemoveLicenses)
        {
            full.push(u.clone());
        } else {
            others.push(u.clone());
        }
    }
    assert!(
        full.len() >= 4,
        "need four users with a mailbox and licenses"
    );
    let (a, b, c, d) = (
        full[0].clone(),
        full[1].clone(),
        full[2].clone(),
        full[3].clone(),
    );
    let licenses_before = graph
        .get_user(&a, &["id", "assignedLicenses"])
        .await
        .expect("A")
        .assigned_licenses;
    assert!(!licenses_before.is_empty());
    let skus_of = |user: dormant::graph::User| -> Vec<String> {
        let mut skus: Vec<String> = user
            .assigned_licenses
            .into_iter()
            .map(|l| l.sku_id)
            .collect();
        skus.sort();
        skus
    };
    let d_skus = skus_of(
        graph
            .get_user(&d, &["id", "assignedLicenses"])
            .await
            .expect("D"),
    );

    t.advance_days(7);
    assert!(t.sim.record_sign_in(&b, true, true), "B signs in");

    // Day 14: disable is due.
    t.advance_days(7);
    let s = t.scan().await;
    assert!(
        s.cases.as_ref().expect("cases").cancelled >= 1,
        "B's case ends"
    );
    drain_all(&t.ctx).await;
    let user_a = graph
        .get_user(&a, &["id", "accountEnabled"])
        .await
        .expect("A");
    assert_eq!(user_a.account_enabled, Some(false), "A disabled on day 14");
    let user_b = graph
        .get_user(&b, &["id", "accountEnabled"])
        .await
        .expect("B");
    assert_eq!(
        user_b.account_enabled,
        Some(true),
        "B was active again: untouched"
    );
    assert!(cases.open_case(&b).await.expect("read").is_none());

    // Day 15: the mailbox converts (due day 14, after the disable).
    t.advance_days(1);
    assert!(t.sim.reenable_by_person(&c), "a person re-enables C");
    t.scan().await;
    drain_all(&t.ctx).await;
    assert_eq!(
        exchange.mailbox_kind(&a).await.expect("mailbox"),
        Some(MailboxKind::Shared)
    );
    assert_eq!(
        graph
            .get_user(&a, &["id", "assignedLicenses"])
            .await
            .expect("A")
            .assigned_licenses
            .len(),
        licenses_before.len(),
        "licenses stay until day 21"
    );
    assert!(
        cases.open_case(&c).await.expect("read").is_none(),
        "C's case ends"
    );
    assert_eq!(
        exchange.mailbox_kind(&d).await.expect("mailbox"),
        Some(MailboxKind::Shared)
    );
    // D signs in on a device that kept its token; Graph shows it a day
    // later.
    assert!(t.sim.record_sign_in(&d, true, true), "D signs in");

    // Day 21: a Graph incident, as a lapsed licence would look: a quarter
    // of the records (of users without a case) carry no readable sign-in
    // data. The run quarantines itself: nothing opens, nothing is sent.
    t.advance_days(6);
    let with_cases: BTreeSet<String> = cases
        .open_users()
        .await
        .expect("cases")
        .into_iter()
        .collect();
    let broken: Vec<String> = t.sim.with_tenant(|tenant| {
        (0..tenant.users.len() as u32)
            .filter(|i| i % 4 == 0)
            .map(|i| tenant.user_id(i))
            .filter(|u| !with_cases.contains(u) && !users.contains(u))
            .collect()
    });
    for user in &broken {
        t.sim.set_quirk(user, Some(Quirk::BadDate));
    }
    let spike = t.scan().await;
    assert!(spike.quarantined, "{spike:?}");
    assert!(
        spike
            .quarantine_reason
            .as_deref()
            .is_some_and(|r| r.contains("no sign-in data")),
        "{spike:?}"
    );
    assert_eq!(spike.actions_enqueued, 0, "a quarantined run sends nothing");
    assert_eq!(drain_all(&t.ctx).await.handled, 0);
    assert_eq!(
        graph
            .get_user(&a, &["id", "assignedLicenses"])
            .await
            .expect("A")
            .assigned_licenses
            .len(),
        licenses_before.len(),
        "nothing happens on a broken night"
    );

    // Day 22: the data is back; the licenses go a night late, and D's
    // sign-in, visible now, undoes what dormant did to D.
    for user in &broken {
        t.sim.set_quirk(user, None);
    }
    t.advance_days(1);
    let healthy = t.scan().await;
    assert!(!healthy.quarantined, "{healthy:?}");
    drain_all(&t.ctx).await;
    let d_now = graph
        .get_user(&d, &["id", "accountEnabled", "assignedLicenses"])
        .await
        .expect("D");
    assert_eq!(d_now.account_enabled, Some(true), "D enabled again");
    assert_eq!(skus_of(d_now), d_skus, "D keeps its licenses");
    assert_eq!(
        exchange.mailbox_kind(&d).await.expect("mailbox"),
        Some(MailboxKind::User),
        "D's mailbox is a user mailbox again"
    );
    assert!(cases.open_case(&d).await.expect("read").is_none());
    let direct_left = graph
        .get_user(&a, &["id", "assignedLicenses", "licenseAssignmentStates"])
        .await
        .expect("A");
    assert!(
        direct_left.assigned_licenses.iter().all(|l| direct_left
            .license_assignment_states
            .iter()
            .any(
                |s| s.sku_id.as_deref() == Some(l.sku_id.as_str()) && s.assigned_by_group.is_some()
            )),
        "only group-assigned licenses remain"
    );

    // A duplicate of A's disable message: one effect, one record.
    let (case_a, _) = cases.open_case(&a).await.expect("read").expect("A open");
    let dup = ActionMessage {
        v: 1,
        kind: ActionKind::Disable,
        tenant: t.ctx.config.tenant_id.clone(),
        user: dormant::ids::ObjectId::parse(&a).expect("id"),
        case: case_a.id.clone(),
        run: case_a.opened_by.clone(),
        not_before: case_a.opened_at,
    };
    t.ctx
        .store
        .send(ACTIONS_QUEUE, &dup.to_text(), SendOptions::default())
        .await
        .expect("send");
    assert_eq!(drain_all(&t.ctx).await.handled, 1);

    // Day 51: soft delete.
    t.advance_days(29);
    t.scan().await;
    drain_all(&t.ctx).await;
    assert!(matches!(
        graph.get_user(&a, &["id"]).await,
        Err(GraphError::NotFound)
    ));
    graph.deleted_item(&a).await.expect("A in deleted items");
    assert!(
        cases.open_case(&a).await.expect("read").is_none(),
        "A's case closed"
    );

    // Day 60: restore A within the 30 days.
    t.advance_days(9);
    let lifecycle = t.ctx.lifecycle().await.expect("lifecycle");
    let report = lifecycle.restore(&a, None, "").await.expect("restore");
    assert_eq!(report.outcome, "done");
    let back = graph
        .get_user(&a, &["id", "accountEnabled", "assignedLicenses"])
        .await
        .expect("A is back");
    assert_eq!(back.account_enabled, Some(true));
    let mut want: Vec<_> = licenses_before.iter().map(|l| l.sku_id.clone()).collect();
    let mut got: Vec<_> = back
        .assigned_licenses
        .iter()
        .map(|l| l.sku_id.clone())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every license is back");
    assert_eq!(
        exchange.mailbox_kind(&a).await.expect("mailbox"),
        Some(MailboxKind::User)
    );
    assert_eq!(
        lifecycle
            .restore(&a, None, "")
            .await
            .expect("again")
            .outcome,
        "repeat",
        "a second restore finds it done"
    );

    // Day 61: the restored user (still without activity) and the user a
    // person re-enabled are held: no case, no step, the report says why.
    t.advance_days(1);
    t.scan().await;
    drain_all(&t.ctx).await;
    for held in [&a, &c, &d] {
        assert!(
            cases.open_case(held).await.expect("read").is_none(),
            "{held} is held"
        );
    }
    let csv = t
        .ctx
        .store
        .get(
            dormant::store::REPORTS_CONTAINER,
            "latest/inactive-users.csv",
        )
        .await
        .expect("report");
    let mut reader = csv::Reader::from_reader(csv.body.as_ref());
    let headers = reader.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (id_col, verdict_col, flags_col) = (col("userId"), col("verdict"), col("riskFlags"));
    let a_row = reader
        .records()
        .map(|r| r.expect("row"))
        .find(|r| r[id_col] == *a)
        .expect("A's row");
    assert_eq!(&a_row[verdict_col], "review");
    assert!(
        a_row[flags_col].split(';').any(|f| f == "restored"),
        "{a_row:?}"
    );

    // The audit trail: A's steps on their days, in order, each once.
    let lines = audit_lines(&t.ctx, start, t.clock.now()).await;
    let of = |u: &str| -> Vec<&AuditRecord> {
        lines
            .iter()
            .filter(|r| r.user.as_deref() == Some(u))
            .collect()
    };
    let a_steps: Vec<(&str, i64)> = of(&a)
        .iter()
        .map(|r| (r.step.as_str(), (r.time - start).num_days()))
        .collect();
    assert_eq!(
        a_steps,
        [
            ("open", 0),
            ("notify", 0),
            ("disable", 14),
            ("convert-mailbox", 15),
            ("remove-licenses", 22),
            ("delete", 51),
            ("close", 51),
            ("restore", 60),
        ],
        "{a_steps:?}"
    );
    assert!(of(&a).iter().all(|r| r.outcome == Outcome::Done));
    let b_steps: Vec<&str> = of(&b).iter().map(|r| r.step.as_str()).collect();
    assert_eq!(b_steps, ["open", "notify", "cancel"]);
    assert_eq!(
        of(&b).last().and_then(|r| r.detail.as_deref()),
        Some("active-again")
    );
    let c_last = of(&c).last().map(|r| (r.step.clone(), r.detail.clone()));
    assert_eq!(
        c_last,
        Some(("cancel".into(), Some("re-enabled-by-person".into())))
    );
    let c_user = graph
        .get_user(&c, &["id", "accountEnabled"])
        .await
        .expect("C");
    assert_eq!(c_user.account_enabled, Some(true), "C is left alone");
    let d_steps: Vec<&str> = of(&d).iter().map(|r| r.step.as_str()).collect();
    assert_eq!(
        d_steps,
        [
            "open",
            "notify",
            "disable",
            "convert-mailbox",
            "cancel",
            "restore"
        ],
        "D: the case ends active-again and dormant's own steps are undone as one restore"
    );
    assert_eq!(
        of(&d)
            .iter()
            .find(|r| r.step == "cancel")
            .and_then(|r| r.detail.as_deref()),
        Some("active-again")
    );
    let d_restore = of(&d)
        .into_iter()
        .find(|r| r.step == "restore")
        .expect("D's undo");
    assert_eq!(d_restore.outcome, Outcome::Done);
    assert!(
        d_restore
            .detail
            .as_deref()
            .is_some_and(|x| x.starts_with("active-again")),
        "{d_restore:?}"
    );

    // The broken night has its audit line, and nothing else happened in it.
    let spike_lines: Vec<&AuditRecord> = lines
        .iter()
        .filter(|r| r.run.as_deref() == Some(spike.run_id.as_str()))
        .collect();
    assert!(
        spike_lines
            .iter()
            .any(|r| r.step == "quarantine" && r.detail.as_deref() == Some("unknown-share-jump")),
        "{spike_lines:?}"
    );
    // No action on a held user: after its hold began, nothing but reads.
    let held_since = |u: &str, step: &str| {
        of(u)
            .iter()
            .rposition(|r| r.step == step)
            .unwrap_or_else(|| panic!("{u}: no {step}"))
    };
    for (u, step) in [(&a, "restore"), (&c, "cancel"), (&d, "restore")] {
        let after: Vec<&str> = of(u)[held_since(u, step) + 1..]
            .iter()
            .map(|r| r.step.as_str())
            .collect();
        assert!(after.is_empty(), "{u} after {step}: {after:?}");
    }

    // Nobody is touched without a case that opened and told people first
    // (users who turn inactive during the 60 days get cases of their own).
    for (i, r) in lines.iter().enumerate() {
        if matches!(
            r.step.as_str(),
            "disable" | "convert-mailbox" | "remove-licenses" | "delete"
        ) && r.outcome == Outcome::Done
        {
            let earlier = &lines[..i];
            for before in ["open", "notify"] {
                assert!(
                    earlier.iter().any(|e| e.case == r.case && e.step == before),
                    "{} of case {:?} without an earlier {before}",
                    r.step,
                    r.case
                );
            }
        }
    }
    // No line carries an address or a UPN.
    for r in &lines {
        let text = serde_json::to_string(r).expect("line");
        assert!(!text.contains('@'), "no address in the audit log: {text}");
    }
    t.sim.shutdown().await;
}
