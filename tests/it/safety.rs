//! Issue 12, one test per scenario: no action without positive evidence,
//! a person's decision always wins, everything dormant does can be undone,
//! every action has its audit line. On the simulator with its clock (and
//! dormant's) moved, and the local store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dormant::clock::Clock;
use dormant::functions::AppContext;
use dormant::functions::user_actions::{DrainOptions, Drained, drain};
use dormant::graph::GraphError;
use dormant::graph::exchange::MailboxKind;
use dormant::lifecycle::{ActionKind, Case, CaseStatus, CaseStore};
use dormant::report::Summary;
use dormant::scan::run::ScanOptions;
use dormant::sim::Quirk;
use dormant::sim::{Sim, SimConfig};
use dormant::store::REPORTS_CONTAINER;
use dormant::store::audit::{AuditRecord, Outcome};

const DAY: i64 = 86_400;

/// Phases short enough to walk a case in a few simulated nights: one step
/// a night (notify, disable, convert, licenses), delete a month later.
const QUICK_PHASES: &[(&str, &str)] = &[
    ("DORMANT_POLICY__PHASES__DISABLE", "1"),
    ("DORMANT_POLICY__PHASES__CONVERT_MAILBOX", "1"),
    ("DORMANT_POLICY__PHASES__REMOVE_LICENSES", "1"),
    ("DORMANT_POLICY__PHASES__DELETE", "31"),
];

pub(crate) struct Tenant {
    pub sim: Sim,
    pub clock: Clock,
    pub ctx: Arc<AppContext>,
    pub start: DateTime<Utc>,
    pub dir: tempfile::TempDir,
}

pub(crate) struct Row {
    pub verdict: String,
    pub flags: Vec<String>,
    pub action: String,
}

impl Tenant {
    pub async fn start(users: u32, seed: u64, lag_secs: i64, extra: &[(&str, &str)]) -> Self {
        Self::start_kind(
            users,
            seed,
            lag_secs,
            dormant::sim::TenantKind::Workforce,
            extra,
        )
        .await
    }

    pub async fn start_kind(
        users: u32,
        seed: u64,
        lag_secs: i64,
        kind: dormant::sim::TenantKind,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_with(
            SimConfig {
                users,
                seed,
                kind,
                sign_in_lag_secs: lag_secs,
                ..SimConfig::default()
            },
            extra,
        )
        .await
    }

    /// A tenant from `cfg` (its truth file and throttling switched off).
    pub async fn start_with(cfg: SimConfig, extra: &[(&str, &str)]) -> Self {
        let kind = cfg.kind;
        let sim = Sim::start(SimConfig {
            write_truth: false,
            // These tests move the clock days at a time in seconds of real
            // time; Graph's budgets are tested elsewhere.
            throttle: dormant::sim::ThrottleConfig {
                enabled: false,
                ..dormant::sim::ThrottleConfig::default()
            },
            ..cfg
        })
        .await
        .expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let mail_from = sim.with_tenant(|t| t.upn(0));
        let mut settings: Vec<(&str, &str)> = vec![
            ("DORMANT_POLICY__MODE", "enforce"),
            ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "100000"),
            ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100"),
            // The tests jump months at a time; the new-cases breaker is
            // tested on its own (policy tables).
            ("DORMANT_POLICY__QUARANTINE__NEW_CASES_MIN", "100000"),
            // Sign-ins speak alone: the usage report's budget (14 calls per
            // 10 minutes) would make a night of simulated weeks wait.
            ("DORMANT_POLICY__ACTIVITY_SOURCES", "signin"),
        ];
        if kind == dormant::sim::TenantKind::Workforce {
            settings.push(("DORMANT_POLICY__NOTIFY__MAIL_FROM", mail_from.as_str()));
        } else {
            // B2C users hear through the application: a webhook (never
            // called by these tests, which do not drain B2C steps).
            settings.push((
                "DORMANT_POLICY__NOTIFY__WEBHOOK",
                "https://127.0.0.1:9/hook",
            ));
            settings.push(("DORMANT_POLICY__NOTIFY__WEBHOOK_SECRET", "whsec-test"));
        }
        settings.extend_from_slice(extra);
        let config = crate::sim_harness::config_for(&sim, dir.path(), &settings);
        let clock = Clock::system();
        clock.advance(sim.now() - Utc::now());
        let ctx = Arc::new(
            AppContext::build(config)
                .expect("context")
                .with_clock(clock.clone()),
        );
        let start = clock.now();
        Self {
            sim,
            clock,
            ctx,
            start,
            dir,
        }
    }

    /// A tenant with purge on (day 32), walked through a case's steps up to
    /// its delete (due 28 days on), and the case's user.
    pub async fn walked_to_the_delete(seed: u64) -> (Self, String) {
        let mut phases = QUICK_PHASES.to_vec();
        phases.push(("DORMANT_POLICY__PHASES__PURGE", "32"));
        let t = Self::start(300, seed, 0, &phases).await;
        t.day_of_work().await;
        let user = t.case_users_with(&[ActionKind::Delete]).await[0].clone();
        for _ in 0..3 {
            t.days(1.0);
            t.day_of_work().await;
        }
        (t, user)
    }

    pub fn advance_secs(&self, secs: i64) {
        self.sim.advance(Duration::from_secs(secs as u64));
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    pub fn days(&self, days: f64) {
        self.advance_secs((days * DAY as f64) as i64);
    }

    pub async fn night(&self) -> Summary {
        self.ctx
            .scanner()
            .await
            .expect("scanner")
            .run(&ScanOptions::default(), Arc::new(()))
            .await
            .expect("scan")
            .summary
    }

    pub async fn drain(&self) -> Drained {
        drain(
            &self.ctx,
            &DrainOptions {
                once: true,
                visibility: Duration::from_secs(60),
                batch: 32,
            },
        )
        .await
        .expect("drain")
    }

    /// Night and drain: one simulated day of dormant.
    pub async fn day_of_work(&self) -> Summary {
        let s = self.night().await;
        self.drain().await;
        s
    }

    pub fn cases(&self) -> CaseStore {
        CaseStore::new(self.ctx.store.clone())
    }

    pub async fn open_case(&self, user: &str) -> Option<Case> {
        self.cases()
            .open_case(user)
            .await
            .expect("read case")
            .map(|(c, _)| c)
    }

    pub async fn graph(&self) -> dormant::graph::GraphClient {
        self.ctx.graph().await.expect("graph").clone()
    }

    pub async fn enabled(&self, user: &str) -> Option<bool> {
        self.graph()
            .await
            .get_user(user, &["id", "accountEnabled"])
            .await
            .expect("user")
            .account_enabled
    }

    pub async fn skus(&self, user: &str) -> Vec<String> {
        let mut skus: Vec<String> = self
            .graph()
            .await
            .get_user(user, &["id", "assignedLicenses"])
            .await
            .expect("user")
            .assigned_licenses
            .into_iter()
            .map(|l| l.sku_id)
            .collect();
        skus.sort();
        skus
    }

    /// Every audit line since the tenant started.
    pub async fn lines(&self) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut day = self.start.date_naive();
        while day <= self.clock.now().date_naive() {
            out.extend(self.ctx.audit.read_day(day).await.expect("audit day"));
            day = day.succ_opt().expect("next day");
        }
        out
    }

    pub async fn lines_of(&self, user: &str) -> Vec<AuditRecord> {
        self.lines()
            .await
            .into_iter()
            .filter(|r| r.user.as_deref() == Some(user))
            .collect()
    }

    pub async fn steps_of(&self, user: &str) -> Vec<String> {
        self.lines_of(user)
            .await
            .into_iter()
            .map(|r| r.step)
            .collect()
    }

    /// The newest report's rows, by user id.
    pub async fn rows(&self) -> BTreeMap<String, Row> {
        self.rows_in("latest/inactive-users.csv").await
    }

    /// A report's rows (`dormant-reports/` blob `name`), by user id.
    pub async fn rows_in(&self, name: &str) -> BTreeMap<String, Row> {
        let blob = self
            .ctx
            .store
            .get(REPORTS_CONTAINER, name)
            .await
            .expect("report");
        let mut reader = csv::Reader::from_reader(blob.body.as_ref());
        let headers = reader.headers().expect("header").clone();
        let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
        let (id, verdict, flags, action) = (
            col("userId"),
            col("verdict"),
            col("riskFlags"),
            col("recommendedAction"),
        );
        reader
            .records()
            .map(|r| {
                let r = r.expect("row");
                (
                    r[id].to_owned(),
                    Row {
                        verdict: r[verdict].to_owned(),
                        flags: r[flags]
                            .split(';')
                            .filter(|f| !f.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        action: r[action].to_owned(),
                    },
                )
            })
            .collect()
    }

    /// Users of an archetype (and nothing else that holds them), by id,
    /// with `also` true of their record.
    pub fn users_where(
        &self,
        archetype: &str,
        also: impl Fn(&dormant::sim::UserRec) -> bool,
    ) -> Vec<String> {
        self.sim.with_tenant(|t| {
            (0..t.users.len() as u32)
                .filter(|&i| {
                    let kinds = t.kinds(i);
                    let holds = kinds.iter().any(|k| {
                        matches!(
                            *k,
                            "on-premises-synced"
                                | "privileged-role"
                                | "recently-reenabled"
                                | "in-exclusion-group"
                        )
                    });
                    kinds.first() == Some(&archetype) && !holds && also(&t.users[i as usize])
                })
                .map(|i| t.user_id(i))
                .collect()
        })
    }

    /// Enabled plain members whose last activity of any kind is long past
    /// (dormant finds them inactive on the first night).
    pub fn long_inactive(&self) -> Vec<String> {
        let cutoff = self.sim.now().timestamp() - 150 * DAY;
        self.sim.with_tenant(|t| {
            (0..t.users.len() as u32)
                .filter(|&i| {
                    t.kinds(i) == ["inactive"]
                        && t.users[i as usize].enabled()
                        && t.truth_last_activity(i) < cutoff
                        && t.truth_last_activity(i) > 0
                })
                .map(|i| t.user_id(i))
                .collect()
        })
    }

    /// Users with an open case whose plan has every step of `kinds`, and
    /// whose account was enabled when it opened.
    pub async fn case_users_with(&self, kinds: &[ActionKind]) -> Vec<String> {
        let mut out = Vec::new();
        for user in self.cases().open_users().await.expect("cases") {
            if let Some(case) = self.open_case(&user).await
                && kinds.iter().all(|k| case.in_plan(*k).is_some())
                && case.enabled_at_open == Some(true)
            {
                out.push(user);
            }
        }
        out.sort();
        out
    }

    /// The user's newest archived case.
    pub async fn closed_case(&self, user: &str) -> Case {
        self.cases()
            .latest_closed(user)
            .await
            .expect("read")
            .expect("an archived case")
            .0
    }
}

fn ts(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .expect("date")
        .with_timezone(&Utc)
        .timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_or_null_sign_in_record_is_unknown_not_never_signed_in() {
    // Sign-in data alone (the usage report would speak for some of them).
    let t = Tenant::start(300, 21, 0, &[]).await;
    // An account from before sign-in logging (2020-05) with Graph's
    // placeholder dates, and an accepted guest with nulls everywhere.
    let before_logging = ts("2020-05-01T00:00:00Z");
    let mut old = t.users_where("inactive", |u| u.created < before_logging);
    old.extend(t.users_where("active", |u| u.created < before_logging));
    let guests = t.users_where("guest-accepted", |_| true);
    let (old, guest) = (old[0].clone(), guests[0].clone());
    assert!(t.sim.set_quirk(&old, Some(Quirk::PlaceholderSignIn)));
    assert!(t.sim.set_quirk(&guest, Some(Quirk::NullSignIn)));

    let summary = t.night().await;
    let rows = t.rows().await;
    for user in [&old, &guest] {
        let row = rows.get(user).expect("reported");
        assert_eq!(row.verdict, "unknown", "{user}");
        assert!(row.flags.iter().any(|f| f == "no-signin-data"), "{user}");
        assert_eq!(row.action, "none");
        assert!(t.open_case(user).await.is_none(), "no case for {user}");
    }
    assert!(summary.by_verdict.get("unknown").copied().unwrap_or(0) >= 2);
    t.sim.shutdown().await;
}

async fn unreadable_records_do_not_fail(kind: dormant::sim::TenantKind) {
    let t = Tenant::start_kind(300, 22, 0, kind, &[]).await;
    let all: Vec<String> = t
        .sim
        .with_tenant(|t| (10..13).map(|i| t.user_id(i)).collect());
    for (user, quirk) in all.iter().zip([
        Quirk::NullCollection,
        Quirk::BadDate,
        Quirk::UnknownUserType,
    ]) {
        assert!(t.sim.set_quirk(user, Some(quirk)));
    }
    let summary = t.night().await;
    let live = t
        .sim
        .with_tenant(|t| t.users.iter().filter(|u| !u.is_deleted()).count());
    assert_eq!(summary.scanned as usize, live, "every user scanned");
    let rows = t.rows().await;
    for user in &all {
        let row = rows.get(user).expect("reported");
        assert_eq!(row.verdict, "unknown", "{user}");
        assert!(row.flags.iter().any(|f| f == "no-signin-data"));
        assert_eq!(row.action, "none");
        assert!(t.open_case(user).await.is_none());
    }
    let warning = summary
        .warnings
        .iter()
        .find(|w| w.contains("could not be read"))
        .expect("a warning about the records");
    assert!(warning.starts_with("3 user record(s)"), "{warning}");
    assert!(!warning.contains('@'), "no UPN in the warning: {warning}");
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_user_record_is_reported_unknown_and_the_workforce_scan_goes_on() {
    unreadable_records_do_not_fail(dormant::sim::TenantKind::Workforce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_user_record_is_reported_unknown_and_the_b2c_scan_goes_on() {
    unreadable_records_do_not_fail(dormant::sim::TenantKind::B2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_in_users_without_sign_in_data_quarantines_the_run_until_released() {
    let t = Tenant::start(400, 23, 0, &[]).await;
    let first = t.day_of_work().await;
    assert!(!first.quarantined, "{first:?}");
    let before = first.data_quality.as_ref().expect("figures");
    assert!(
        before.previous_run.is_none(),
        "the first run has no yardstick"
    );

    // A lapsed licence or a Graph incident: a quarter of the records say
    // nothing any more.
    let broken: Vec<String> = t.sim.with_tenant(|t| {
        (0..t.users.len() as u32)
            .filter(|i| i % 4 == 0)
            .map(|i| t.user_id(i))
            .collect()
    });
    for user in &broken {
        t.sim.set_quirk(user, Some(Quirk::BadDate));
    }
    t.days(1.0);
    let opened_before = t.cases().open_users().await.expect("cases").len();
    let second = t.night().await;
    assert!(second.quarantined, "{second:?}");
    let reason = second.quarantine_reason.clone().expect("reason");
    assert!(reason.contains("no sign-in data"), "{reason}");
    let dq = second.data_quality.as_ref().expect("figures");
    assert!(dq.tripped);
    assert_eq!(dq.previous_run.as_deref(), Some(first.run_id.as_str()));
    assert_eq!(
        t.cases().open_users().await.expect("cases").len(),
        opened_before,
        "a quarantined run opens no case"
    );
    let html = t
        .ctx
        .store
        .get(REPORTS_CONTAINER, "latest/report.html")
        .await
        .expect("html");
    let html = String::from_utf8_lossy(&html.body);
    assert!(html.contains("no sign-in data"), "the HTML report says why");
    let run = dormant::ids::RunId::parse(&second.run_id).expect("run id");
    let view = dormant::scan::run::view(&t.ctx.store, &run)
        .await
        .expect("view")
        .expect("run");
    assert_eq!(view.state.status.as_str(), "quarantined");
    let line = t
        .lines()
        .await
        .into_iter()
        .find(|l| l.step == "quarantine" && l.run.as_deref() == Some(second.run_id.as_str()))
        .expect("the quarantine is audited");
    assert_eq!(line.detail.as_deref(), Some("unknown-share-jump"));

    // A quarantined run is not the yardstick of the next: the same broken
    // data quarantines again.
    t.days(1.0);
    let third = t.night().await;
    assert!(third.quarantined, "{third:?}");
    assert_eq!(
        third
            .data_quality
            .as_ref()
            .and_then(|d| d.previous_run.clone()),
        Some(first.run_id.clone())
    );
    // A person looked and lets it go.
    let run = dormant::ids::RunId::parse(&third.run_id).expect("run id");
    t.ctx
        .scanner()
        .await
        .expect("scanner")
        .release(&run)
        .await
        .expect("release");
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_re_enabling_an_account_hr_disabled_cancels_the_case_and_holds_the_user() {
    let t = Tenant::start(300, 24, 0, &[]).await;
    let user = t.long_inactive()[0].clone();
    // HR disabled the account before dormant ever looked.
    assert!(t.sim.set_enabled(&user, false, "person"));
    t.day_of_work().await;
    let case = t.open_case(&user).await.expect("a case opens");
    assert_eq!(case.enabled_at_open, Some(false));

    // Someone enables it again: whoever disabled it, that is a decision.
    t.days(2.0);
    assert!(t.sim.set_enabled(&user, true, "person"));
    t.days(13.0);
    t.day_of_work().await;
    assert!(t.open_case(&user).await.is_none(), "the case ends");
    let last = t.lines_of(&user).await.pop().expect("lines");
    assert_eq!(
        (last.step.as_str(), last.detail.as_deref()),
        ("cancel", Some("re-enabled-by-person"))
    );
    assert_eq!(t.enabled(&user).await, Some(true));

    // Held: reported for people, no new case, never disabled.
    for _ in 0..3 {
        t.days(20.0);
        t.day_of_work().await;
        assert!(t.open_case(&user).await.is_none());
        assert_eq!(t.enabled(&user).await, Some(true));
    }
    let row = t.rows().await.remove(&user).expect("reported");
    assert_eq!(row.verdict, "review");
    assert!(row.flags.iter().any(|f| f == "recently-reenabled"));
    assert!(
        !t.steps_of(&user).await.iter().any(|s| s == "disable"),
        "never disabled"
    );
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enable_by_another_app_after_the_case_opened_cancels_it_though_the_state_looks_unchanged()
 {
    let t = Tenant::start(300, 25, 0, &[]).await;
    let user = t.long_inactive()[0].clone();
    t.day_of_work().await;
    assert!(t.open_case(&user).await.is_some());
    // HR provisioning (an app, not dormant) disables and enables again:
    // the account looks as it did when the case opened, the audit knows.
    t.days(3.0);
    assert!(t.sim.set_enabled(&user, false, "hr-provisioning-app"));
    t.days(1.0);
    assert!(t.sim.set_enabled(&user, true, "hr-provisioning-app"));
    t.days(11.0);
    t.day_of_work().await;
    assert!(
        t.open_case(&user).await.is_none(),
        "the case ends: {:?} {:#?}",
        t.rows()
            .await
            .get(&user)
            .map(|r| (&r.verdict, &r.flags, &r.action)),
        t.lines_of(&user).await
    );
    assert_eq!(t.enabled(&user).await, Some(true), "never disabled");
    let cancel = t
        .lines_of(&user)
        .await
        .into_iter()
        .find(|l| l.step == "cancel")
        .expect("cancelled");
    assert_eq!(cancel.detail.as_deref(), Some("re-enabled-by-person"));
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_user_is_not_disabled_again_until_it_is_active_and_inactive_again() {
    let t = Tenant::start(300, 26, 0, QUICK_PHASES).await;
    t.day_of_work().await; // open, notify
    let users = t.case_users_with(&[ActionKind::Disable]).await;
    let (user, other) = (users[0].clone(), users[1].clone());
    t.days(1.0);
    t.day_of_work().await; // disable
    assert_eq!(t.enabled(&user).await, Some(false));
    assert_eq!(t.enabled(&other).await, Some(false));

    let lifecycle = t.ctx.lifecycle().await.expect("lifecycle");
    for u in [&user, &other] {
        let report = lifecycle.restore(u, None, "").await.expect("restore");
        assert_eq!(report.outcome, "done", "{report:?}");
        assert!(
            report
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("enabled")),
            "{report:?}"
        );
    }
    // A person lifts the hold on one of them.
    assert!(lifecycle.lift_hold(&other).await.expect("lift"));
    assert!(!lifecycle.lift_hold(&other).await.expect("again"));

    for _ in 0..3 {
        t.days(10.0);
        t.day_of_work().await;
        assert!(t.open_case(&user).await.is_none(), "no new case");
        assert_eq!(t.enabled(&user).await, Some(true), "not disabled again");
    }
    let row = t.rows().await.remove(&user).expect("reported");
    assert_eq!(row.verdict, "review");
    assert!(row.flags.iter().any(|f| f == "restored"));
    assert_eq!(row.action, "manual-review");
    // The lifted one is judged like anyone else again.
    assert!(
        t.steps_of(&other)
            .await
            .iter()
            .filter(|s| *s == "open")
            .count()
            >= 2,
        "a new case opened after the hold was lifted"
    );
    assert!(t.steps_of(&other).await.contains(&"lift-hold".to_owned()));

    // Activity after the restore ends the hold; inactive again later, the
    // user gets a case like anyone else.
    assert!(t.sim.record_sign_in(&user, true, true));
    t.days(1.0);
    t.day_of_work().await;
    assert!(t.open_case(&user).await.is_none(), "active");
    t.days(95.0);
    t.day_of_work().await;
    assert!(
        t.open_case(&user).await.is_some(),
        "inactive again after being active: a new case: {:?}",
        t.rows()
            .await
            .get(&user)
            .map(|r| (&r.verdict, &r.flags, &r.action))
    );
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sign_in_undoes_dormants_own_steps() {
    // signInActivity lags a day.
    let t = Tenant::start(300, 27, DAY, QUICK_PHASES).await;
    t.day_of_work().await; // day 0: open, notify
    let users = t
        .case_users_with(&[ActionKind::ConvertMailbox, ActionKind::RemoveLicenses])
        .await;
    let user = users[0].clone();
    let skus = t.skus(&user).await;
    let exchange = t
        .ctx
        .exchange()
        .await
        .expect("exchange")
        .expect("configured")
        .clone();
    t.days(1.0);
    t.day_of_work().await; // day 1: disable
    t.days(1.0);
    t.day_of_work().await; // day 2: mailbox to shared
    assert_eq!(
        exchange.mailbox_kind(&user).await.expect("mailbox"),
        Some(MailboxKind::Shared)
    );
    // The user signs in (on a device that still had a token) just before
    // the licenses go; Graph shows it a day later.
    t.days(0.9);
    assert!(t.sim.record_sign_in(&user, false, true));
    t.days(0.1);
    t.day_of_work().await; // day 3: licenses go, the sign-in not visible yet
    assert!(t.skus(&user).await.len() < skus.len(), "licenses removed");
    t.days(1.0);
    t.day_of_work().await; // day 4: the sign-in shows
    assert_eq!(t.enabled(&user).await, Some(true), "enabled again");
    assert_eq!(t.skus(&user).await, skus, "licenses back");
    assert_eq!(
        exchange.mailbox_kind(&user).await.expect("mailbox"),
        Some(MailboxKind::User),
        "a user mailbox again"
    );
    let lines = t.lines_of(&user).await;
    let restore = lines
        .iter()
        .find(|l| l.step == "restore")
        .expect("the undo is recorded");
    let detail = restore.detail.as_deref().unwrap_or_default();
    assert!(detail.starts_with("active-again"), "{detail}");
    assert_eq!(restore.outcome, Outcome::Done);
    assert!(t.open_case(&user).await.is_none(), "the case is closed");
    let case = t.closed_case(&user).await;
    assert_eq!(case.status, CaseStatus::Restored);
    assert_eq!(case.reason.as_deref(), Some("active-again"));
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_undoes_a_cancelled_case_part_by_part_and_answers_partial() {
    let t = Tenant::start(300, 28, 0, QUICK_PHASES).await;
    t.day_of_work().await;
    let users = t.case_users_with(&[ActionKind::RemoveLicenses]).await;
    let mut picked = None;
    for u in users {
        let skus = t.skus(&u).await;
        if skus.len() >= 2 {
            picked = Some((u, skus));
            break;
        }
    }
    let (user, skus) = picked.expect("a case with two licenses to remove");
    for _ in 0..3 {
        t.days(1.0);
        t.day_of_work().await; // disable, mailbox, licenses
    }
    let removed = t.skus(&user).await;
    assert!(removed.len() < skus.len(), "licenses removed");
    // A person enables the account: the case ends, dormant's other steps
    // stay until someone restores.
    assert!(t.sim.set_enabled(&user, true, "person"));
    t.days(1.0);
    t.day_of_work().await;
    assert_eq!(t.closed_case(&user).await.status, CaseStatus::Cancelled);

    // One SKU has no free seat any more.
    let gone: Vec<&String> = skus.iter().filter(|s| !removed.contains(s)).collect();
    t.sim.set_sku_seats_free(gone[0], false);
    let lifecycle = t.ctx.lifecycle().await.expect("lifecycle");
    let report = lifecycle.restore(&user, None, "").await.expect("restore");
    assert_eq!(report.outcome, "partial", "{report:?}");
    let after = t.skus(&user).await;
    assert!(!after.contains(gone[0]), "the seatless SKU stays out");
    for sku in gone.iter().skip(1) {
        assert!(after.contains(sku), "the others are back");
    }
    let line = t
        .lines_of(&user)
        .await
        .into_iter()
        .rfind(|l| l.step == "restore")
        .expect("recorded");
    assert_eq!(line.outcome, Outcome::Partial);
    let error = line.error.clone().unwrap_or_default();
    assert!(error.contains(&format!("license:{}", gone[0])), "{error}");
    assert!(!error.contains('@'));
    assert_eq!(
        lifecycle
            .restore(&user, None, "")
            .await
            .expect("again")
            .outcome,
        "repeat"
    );
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_refused_30_days_after_the_last_change() {
    let t = Tenant::start(300, 29, 0, QUICK_PHASES).await;
    t.day_of_work().await;
    let user = t.case_users_with(&[ActionKind::Disable]).await[0].clone();
    t.days(1.0);
    t.day_of_work().await;
    assert_eq!(t.enabled(&user).await, Some(false));
    t.days(31.0);
    let lifecycle = t.ctx.lifecycle().await.expect("lifecycle");
    match lifecycle.restore(&user, None, "").await {
        Err(dormant::lifecycle::LifecycleError::Refused { code, .. }) => {
            assert_eq!(code, "restore-window-passed")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_stay_until_a_positive_answer_that_the_mailbox_is_shared_or_absent() {
    // Without Exchange's admin API, Graph's 404 cannot tell "no mailbox"
    // from "a mailbox Graph cannot see".
    let mut phases = QUICK_PHASES.to_vec();
    phases.push(("DORMANT_EXCHANGE_URL", ""));
    let t = Tenant::start(300, 30, 0, &phases).await;
    t.day_of_work().await;
    let users = t.case_users_with(&[ActionKind::RemoveLicenses]).await;
    let mut no_convert = Vec::new();
    for u in users {
        let case = t.open_case(&u).await.expect("case");
        if case.in_plan(ActionKind::ConvertMailbox).is_none() {
            no_convert.push(u);
        }
    }
    let user = no_convert
        .first()
        .expect("a licensed user whose mailbox Graph answers 404 for")
        .clone();
    let skus = t.skus(&user).await;
    for _ in 0..3 {
        t.days(1.0);
        t.day_of_work().await;
    }
    assert_eq!(t.skus(&user).await, skus, "the licenses stay");
    let case = t.open_case(&user).await.expect("waiting case");
    assert_eq!(case.status, CaseStatus::Waiting);
    assert_eq!(case.reason.as_deref(), Some("mailbox-not-confirmed"));
    let waiting = t
        .lines_of(&user)
        .await
        .into_iter()
        .rfind(|l| l.step == "remove-licenses")
        .expect("the wait is recorded");
    assert_eq!(waiting.outcome, Outcome::Skipped);

    // With Exchange's admin API, "no mailbox" is a positive answer.
    let config = crate::sim_harness::config_for(
        &t.sim,
        t.dir.path(),
        &[
            ("DORMANT_POLICY__MODE", "enforce"),
            ("DORMANT_POLICY__QUARANTINE__MAX_NEW_CASES", "100000"),
            ("DORMANT_POLICY__QUARANTINE__MAX_PERCENT", "100"),
            ("DORMANT_POLICY__PHASES__DISABLE", "1"),
            ("DORMANT_POLICY__PHASES__CONVERT_MAILBOX", "1"),
            ("DORMANT_POLICY__PHASES__REMOVE_LICENSES", "1"),
            ("DORMANT_POLICY__PHASES__DELETE", "31"),
        ],
    );
    let with_exchange = AppContext::build(config)
        .expect("context")
        .with_clock(t.clock.clone());
    t.days(1.0);
    with_exchange
        .scanner()
        .await
        .expect("scanner")
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("scan");
    drain(
        &with_exchange,
        &DrainOptions {
            once: true,
            visibility: Duration::from_secs(60),
            batch: 32,
        },
    )
    .await
    .expect("drain");
    assert!(t.skus(&user).await.len() < skus.len(), "now they go");
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_someone_else_deleted_ends_the_case_and_is_never_purged() {
    let (t, user) = Tenant::walked_to_the_delete(31).await;
    // The delete is due and queued; before the worker gets to it, an
    // administrator deletes the user by hand.
    t.days(28.0);
    let before = t.night().await;
    assert!(before.actions_enqueued >= 1);
    t.graph()
        .await
        .delete_user(&user)
        .await
        .expect("deleted by hand");
    t.drain().await;
    assert!(t.open_case(&user).await.is_none());
    let case = t.closed_case(&user).await;
    assert_eq!(case.status, CaseStatus::Cancelled);
    assert_eq!(case.reason.as_deref(), Some("deleted-by-someone-else"));
    for _ in 0..3 {
        t.days(1.0);
        t.day_of_work().await;
    }
    t.graph()
        .await
        .deleted_item(&user)
        .await
        .expect("still in deleted items: dormant never purges it");
    let acted: Vec<String> = t
        .lines_of(&user)
        .await
        .into_iter()
        .filter(|l| {
            matches!(l.step.as_str(), "delete" | "purge") && l.outcome != Outcome::Cancelled
        })
        .map(|l| l.step)
        .collect();
    assert!(
        acted.is_empty(),
        "dormant neither deleted nor purged: {acted:?}"
    );
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_racing_a_cancellation_is_recorded_and_then_undone() {
    let t = Tenant::start(300, 32, 0, QUICK_PHASES).await;
    t.day_of_work().await;
    let user = t.case_users_with(&[ActionKind::Disable]).await[0].clone();
    t.days(1.0);
    // The disable is due; only this user's goes on the queue.
    let case = t.open_case(&user).await.expect("case");
    let message = dormant::lifecycle::ActionMessage {
        v: 1,
        kind: ActionKind::Disable,
        tenant: t.ctx.config.tenant_id.clone(),
        user: dormant::ids::ObjectId::parse(&user).expect("id"),
        case: case.id.clone(),
        run: case.opened_by.clone(),
        not_before: t.clock.now(),
    };
    t.ctx
        .store
        .send(
            dormant::store::ACTIONS_QUEUE,
            &message.to_text(),
            dormant::store::SendOptions::default(),
        )
        .await
        .expect("send");
    // The disable takes effect; its answer is slow to come back.
    t.sim.set_faults(dormant::sim::Faults {
        next_stuck_after_effect: 1,
        stuck_secs: 8,
        method: Some("POST".into()),
        path_contains: Some("$batch".into()),
        ..dormant::sim::Faults::default()
    });
    let ctx = t.ctx.clone();
    let worker = tokio::spawn(async move {
        drain(
            &ctx,
            &DrainOptions {
                once: true,
                visibility: Duration::from_secs(60),
                batch: 32,
            },
        )
        .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while t.enabled(&user).await != Some(false) {
        assert!(
            std::time::Instant::now() < deadline,
            "the disable never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Meanwhile the user signs in and tonight's advance cancels the case.
    assert!(t.sim.record_sign_in(&user, true, true));
    t.night().await;
    worker.await.expect("worker").expect("drain");
    t.sim.set_faults(dormant::sim::Faults::default());

    let lines = t.lines_of(&user).await;
    let steps: Vec<&str> = lines.iter().map(|l| l.step.as_str()).collect();
    let pos = |s: &str| steps.iter().position(|x| *x == s);
    let (disable, cancel, restore) = (pos("disable"), pos("cancel"), pos("restore"));
    assert!(
        disable.is_some(),
        "the step that acted is recorded: {steps:?}"
    );
    assert!(
        cancel.is_some(),
        "{steps:?} {:#?}",
        t.closed_case(&user).await
    );
    assert!(
        cancel.is_some() && restore.is_some() && disable < restore,
        "{steps:?}"
    );
    assert_eq!(
        t.enabled(&user).await,
        Some(true),
        "the cancellation undid it"
    );
    assert!(t.open_case(&user).await.is_none());
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pim_eligible_administrator_is_held_like_an_active_one() {
    let t = Tenant::start(300, 33, 0, QUICK_PHASES).await;
    let plain = t.long_inactive();
    // Eligible before the scan: held for review, no case.
    let eligible = plain[0].clone();
    assert!(t.sim.make_eligible(&eligible));
    t.day_of_work().await;
    let row = t.rows().await.remove(&eligible).expect("reported");
    assert_eq!(row.verdict, "review");
    assert!(row.flags.iter().any(|f| f == "privileged-role"));
    assert!(t.open_case(&eligible).await.is_none());

    // Made eligible after its case opened: the step's re-check holds it.
    let later = t
        .case_users_with(&[ActionKind::Disable])
        .await
        .into_iter()
        .find(|u| plain.contains(u))
        .expect("a plain member with a case");
    t.days(1.0);
    t.night().await; // its disable is queued
    assert!(t.sim.make_eligible(&later));
    t.drain().await;
    assert_eq!(t.enabled(&later).await, Some(true), "not disabled");
    let case = t.closed_case(&later).await;
    assert_eq!(case.reason.as_deref(), Some("held-for-review"));

    // A tenant without P2 has no PIM: nobody is eligible, nothing fails.
    t.sim.set_pim_licensed(false);
    t.days(1.0);
    let s = t.day_of_work().await;
    assert!(s.scanned > 0);
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_restore_acts_on_the_case_it_names() {
    let t = Tenant::start(300, 34, 0, QUICK_PHASES).await;
    let user = t.long_inactive()[0].clone();
    t.day_of_work().await;
    let first = t.open_case(&user).await.expect("a first case");
    // The user signs in before anything was done: the first case ends.
    assert!(t.sim.record_sign_in(&user, true, true));
    t.days(1.0);
    t.day_of_work().await;
    assert!(t.open_case(&user).await.is_none());
    // Inactive again months later: a second case disables the account.
    t.days(100.0);
    t.day_of_work().await;
    let Some(second) = t.open_case(&user).await else {
        panic!(
            "a second case: {:?} {:?}",
            t.rows()
                .await
                .get(&user)
                .map(|r| (&r.verdict, &r.flags, &r.action)),
            t.lines_of(&user).await
        );
    };
    assert_ne!(first.id, second.id);
    t.days(1.0);
    t.day_of_work().await;
    assert_eq!(t.enabled(&user).await, Some(false));

    // A `restore` message naming the first case (which changed nothing).
    let message = dormant::lifecycle::ActionMessage {
        v: 1,
        kind: ActionKind::Restore,
        tenant: t.ctx.config.tenant_id.clone(),
        user: dormant::ids::ObjectId::parse(&user).expect("id"),
        case: first.id.clone(),
        run: first.opened_by.clone(),
        not_before: t.clock.now(),
    };
    t.ctx
        .store
        .send(
            dormant::store::ACTIONS_QUEUE,
            &message.to_text(),
            dormant::store::SendOptions::default(),
        )
        .await
        .expect("send");
    t.drain().await;
    let refused = t
        .lines_of(&user)
        .await
        .into_iter()
        .find(|l| l.step == "restore")
        .expect("the restore is recorded");
    assert_eq!(refused.case.as_deref(), Some(first.id.as_str()));
    assert_eq!(refused.outcome, Outcome::Failed);
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("nothing-to-undo")),
        "{refused:?}"
    );
    let still = t.open_case(&user).await.expect("the second case is open");
    assert_eq!(still.id, second.id, "the newer case is untouched");
    assert_eq!(t.enabled(&user).await, Some(false));
    t.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_stays_in_deleted_items_until_the_purge_re_checks_it() {
    let (t, user) = Tenant::walked_to_the_delete(35).await;
    t.days(28.0);
    t.day_of_work().await; // soft delete
    assert!(matches!(
        t.graph().await.get_user(&user, &["id"]).await,
        Err(GraphError::NotFound)
    ));
    // An operator restores it from deleted items by hand before the purge.
    t.graph()
        .await
        .restore_deleted(&user)
        .await
        .expect("restored by hand");
    t.days(1.0);
    t.day_of_work().await;
    t.graph()
        .await
        .get_user(&user, &["id"])
        .await
        .expect("the user is back and stays");
    let lines = t.lines_of(&user).await;
    assert!(
        !lines
            .iter()
            .any(|l| l.step == "purge" && l.outcome != Outcome::Cancelled),
        "{lines:#?}"
    );
    t.sim.shutdown().await;
}

/// Every stored text dormant owns (its state and its audit log; the
/// report, and the report rows a run keeps until it is written, are meant
/// to name users), as one string per file.
fn stored_texts(root: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = path.display().to_string();
            if name.contains(REPORTS_CONTAINER) || name.contains("/parts/") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((name, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_messages_that_quote_a_user_never_reach_run_records_warnings_or_audit_errors() {
    let t = Tenant::start(120, 31, 0, QUICK_PHASES).await;
    t.day_of_work().await; // day 0: cases open, notify
    let user = t.case_users_with(&[ActionKind::Disable]).await[0].clone();
    let upn = t.sim.with_tenant(|tenant| {
        (0..tenant.users.len() as u32)
            .find(|&i| tenant.user_id(i) == user)
            .map(|i| tenant.upn(i))
            .expect("the user")
    });
    let quoting = |path: &str, method: Option<&str>| dormant::sim::Faults {
        next_error: 1_000,
        error_status: 403,
        error_code: "Authorization_RequestDenied".into(),
        error_message: format!("Insufficient privileges to complete the operation on {upn}"),
        path_contains: Some(path.into()),
        method: method.map(str::to_owned),
        ..dormant::sim::Faults::default()
    };
    // Graph refuses the re-check before the disable and names the user in
    // its message.
    t.days(1.0);
    t.sim
        .set_faults(quoting(&format!("/users/{user}"), Some("GET")));
    t.day_of_work().await;
    let failed = t
        .lines_of(&user)
        .await
        .into_iter()
        .find(|l| l.step == "disable" && l.outcome == Outcome::Failed);
    let failed = failed.expect("the refused re-check is recorded");
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("Authorization_RequestDenied"), "{error}");
    // A scan Graph refuses halfway (who is PIM-eligible) fails with codes.
    t.sim
        .set_faults(quoting("roleEligibilityScheduleInstances", None));
    t.days(1.0);
    let failed_scan = t
        .ctx
        .scanner()
        .await
        .expect("scanner")
        .run(&ScanOptions::default(), Arc::new(()))
        .await;
    let message = format!(
        "{:#}",
        failed_scan.expect_err("the scan cannot know who is privileged")
    );
    assert!(!message.contains(&upn), "{message}");
    t.sim.set_faults(dormant::sim::Faults::default());
    let summary = t.day_of_work().await;
    for w in &summary.warnings {
        assert!(!w.contains(&upn), "{w}");
    }
    let texts = stored_texts(t.dir.path());
    assert!(
        texts.iter().any(|(name, _)| name.contains("audit")),
        "the audit log is stored here"
    );
    for (name, text) in texts {
        assert!(!text.contains(&upn), "{name} quotes the user: {text}");
    }
    t.sim.shutdown().await;
}
