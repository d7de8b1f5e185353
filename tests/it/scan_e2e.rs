//! The scan end to end on the simulator, both tenant kinds: the report's
//! actionable set equals what the simulator's ground truth implies for the
//! policy, computed here from the truth file alone (not with dormant's
//! policy code); nobody held for people gets an action; every user is
//! scanned exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use dormant::graph::{GraphClient, GraphSettings};
use dormant::scan::run::{ScanOptions, Scanner};
use dormant::sim::{Sim, SimConfig, TenantKind};
use dormant::store::Store;
use serde_json::Value;

const INACTIVE_AFTER: i64 = 90;
const GRACE: i64 = 30;

struct Truth {
    id: String,
    archetype: String,
    kinds: BTreeSet<String>,
    created: DateTime<Utc>,
    last_activity: Option<DateTime<Utc>>,
    last_sign_in: Option<DateTime<Utc>>,
    usage: Vec<DateTime<Utc>>,
    /// Sign-in dates Graph can show (logging began in April 2020).
    visible_sign_ins: bool,
    /// Graph shows a date it can trust: a success in the successful field
    /// (since 2023-12-01), or an attempt date from before that field existed
    /// (later attempts may be failures, a password spray).
    trusted_sign_in: bool,
    mailbox: String,
    role: bool,
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    let text = v.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

fn read_truth(path: &std::path::Path) -> Vec<Truth> {
    std::fs::read_to_string(path)
        .expect("truth file")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("truth line");
            let kinds: Vec<String> = v["kinds"]
                .as_array()
                .expect("kinds")
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            Truth {
                id: v["id"].as_str().expect("id").to_ascii_lowercase(),
                archetype: kinds[0].clone(),
                kinds: kinds.into_iter().collect(),
                created: time(&v["created"]).expect("created"),
                last_activity: time(&v["lastSuccessfulActivity"]),
                last_sign_in: time(&v["lastSuccessfulSignIn"]),
                usage: [
                    "exchangeLastActivity",
                    "onedriveLastActivity",
                    "sharepointLastActivity",
                    "teamsLastActivity",
                ]
                .iter()
                .filter_map(|k| time(&v[*k]))
                .collect(),
                visible_sign_ins: [
                    "lastSuccessfulSignIn",
                    "lastInteractiveAttempt",
                    "lastNonInteractiveAttempt",
                ]
                .iter()
                .filter_map(|k| time(&v[*k]))
                .any(|t| t >= logging_start()),
                trusted_sign_in: time(&v["lastSuccessfulSignIn"])
                    .is_some_and(|t| t >= successful_field_start())
                    || ["lastInteractiveAttempt", "lastNonInteractiveAttempt"]
                        .iter()
                        .filter_map(|k| time(&v[*k]))
                        .any(|t| t >= logging_start() && t < successful_field_start()),
                mailbox: v["mailbox"].as_str().unwrap_or("none").to_owned(),
                role: v.get("role").is_some_and(|r| !r.is_null()),
            }
        })
        .collect()
}

fn successful_field_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2023-12-01T00:00:00Z")
        .expect("date")
        .with_timezone(&Utc)
}

fn logging_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2020-04-01T00:00:00Z")
        .expect("date")
        .with_timezone(&Utc)
}

fn days(then: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now.date_naive() - then.date_naive()).num_days()
}

/// The usage report lags (Microsoft documents 24–48 h): activity of the
/// last two days may not be in it yet.
const REPORT_LAG_DAYS: i64 = 2;

/// What the truth implies, when it is decidable from what Graph can show:
/// `Ok(Some(true))` actionable (inactive or never signed in),
/// `Ok(Some(false))` held for people, `Ok(None)` neither, `Err(())` when the
/// answer depends on usage too recent for the report.
fn expected(t: &Truth, now: DateTime<Utc>) -> Result<Option<bool>, ()> {
    let full = judge(t, now, &t.usage, t.last_activity);
    let lagged_usage: Vec<DateTime<Utc>> = t
        .usage
        .iter()
        .copied()
        .filter(|u| days(*u, now) >= REPORT_LAG_DAYS)
        .collect();
    let lagged_last = t
        .last_sign_in
        .into_iter()
        .chain(lagged_usage.iter().copied())
        .max();
    let lagged = judge(t, now, &lagged_usage, lagged_last);
    if full == lagged { Ok(full) } else { Err(()) }
}

fn judge(
    t: &Truth,
    now: DateTime<Utc>,
    usage: &[DateTime<Utc>],
    last_activity: Option<DateTime<Utc>>,
) -> Option<bool> {
    if t.archetype == "guest-viral" {
        return Some(false); // unmanaged guest: reset, never deprovisioned
    }
    if days(t.created, now) < GRACE {
        return None;
    }
    // Graph shows no sign-in for this user. That means "never" only when
    // logging covered the whole life (created after May 2020) and no
    // accepted invitation proves a sign-in; otherwise only usage can speak.
    let blank_cannot_speak = !t.visible_sign_ins
        && (t.created < logging_start() + chrono::Duration::days(30)
            || t.archetype == "guest-accepted");
    // Only failed attempts are visible (they overwrote the legacy dates):
    // "never" can be told only for accounts younger than the successful
    // field; for older ones only usage can speak.
    let attempts_cannot_speak =
        t.visible_sign_ins && !t.trusted_sign_in && t.created < successful_field_start();
    let blank_cannot_speak = blank_cannot_speak || attempts_cannot_speak;
    let inactive = if blank_cannot_speak {
        match usage.iter().max() {
            Some(u) => days(*u, now) >= INACTIVE_AFTER,
            None => return None,
        }
    } else {
        last_activity.is_none_or(|l| days(l, now) >= INACTIVE_AFTER)
    };
    if !inactive {
        return None;
    }
    let held = t.role
        || matches!(
            t.archetype.as_str(),
            "executive" | "service-account" | "privileged-role"
        )
        || matches!(t.mailbox.as_str(), "shared" | "room" | "equipment")
        || t.kinds.contains("on-premises-synced")
        || t.kinds.contains("recently-reenabled")
        || t.kinds.contains("privileged-role");
    Some(!held)
}

struct Row {
    verdict: String,
    action: String,
}

/// A scanner pointed at `sim`, on a local store in `dir`.
pub fn scanner_for(sim: &Sim, dir: &std::path::Path, extra: &[(&str, &str)]) -> Scanner {
    let config = crate::sim_harness::config_for(sim, dir, extra);
    let graph = GraphClient::new(GraphSettings::from_config(&config)).expect("graph");
    Scanner::new(graph, Store::local(dir).expect("store"), Arc::new(config))
}

async fn scan(
    kind: TenantKind,
    users: u32,
) -> (Vec<Truth>, BTreeMap<String, Row>, DateTime<Utc>, u64) {
    let sim = Sim::start(SimConfig {
        users,
        kind,
        seed: 7,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let scanner = scanner_for(&sim, dir.path(), &[]);
    let store = scanner.store.clone();
    let outcome = scanner
        .run(&ScanOptions::default(), Arc::new(()))
        .await
        .expect("scan");
    let csv = store
        .get("dormant-reports", &outcome.csv)
        .await
        .expect("csv");
    let mut rows = BTreeMap::new();
    let mut reader = csv::Reader::from_reader(csv.body.as_ref());
    let headers = reader.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (id, verdict, action) = (col("userId"), col("verdict"), col("recommendedAction"));
    for record in reader.records() {
        let record = record.expect("row");
        let previous = rows.insert(
            record[id].to_owned(),
            Row {
                verdict: record[verdict].to_owned(),
                action: record[action].to_owned(),
            },
        );
        assert!(previous.is_none(), "user {} reported twice", &record[id]);
    }
    let truth = read_truth(sim.truth_file());
    let now = outcome.summary.started_at;
    let scanned = outcome.summary.scanned;
    sim.shutdown().await;
    (truth, rows, now, scanned)
}

fn check(truth: &[Truth], rows: &BTreeMap<String, Row>, now: DateTime<Utc>) {
    let mut actionable = 0;
    let mut undecidable = 0;
    for t in truth {
        let row = rows.get(&t.id);
        let Ok(expectation) = expected(t, now) else {
            undecidable += 1;
            continue;
        };
        match expectation {
            Some(true) => {
                actionable += 1;
                let row =
                    row.unwrap_or_else(|| panic!("{} ({}) should be reported", t.id, t.archetype));
                assert!(
                    matches!(row.verdict.as_str(), "inactive" | "never-signed-in"),
                    "{} ({}) should be actionable, got {}",
                    t.id,
                    t.archetype,
                    row.verdict
                );
                // A pending invitation has nothing to disable: it goes.
                let want = if t.archetype == "guest-pending" {
                    "delete"
                } else {
                    "notify"
                };
                assert_eq!(row.action, want, "{} ({})", t.id, t.archetype);
            }
            Some(false) => {
                let row = row.unwrap_or_else(|| {
                    panic!("{} ({}) should be held for review", t.id, t.archetype)
                });
                assert!(
                    matches!(row.verdict.as_str(), "review" | "excluded" | "unknown"),
                    "{} ({}) must be held, got {}",
                    t.id,
                    t.archetype,
                    row.verdict
                );
                assert!(
                    matches!(
                        row.action.as_str(),
                        "manual-review" | "reset-redemption" | "none"
                    ),
                    "{} ({}) must not get {}",
                    t.id,
                    t.archetype,
                    row.action
                );
            }
            None => {
                if let Some(row) = row {
                    assert!(
                        !matches!(row.verdict.as_str(), "inactive" | "never-signed-in"),
                        "{} ({}) is not inactive by the truth (last {:?}, usage {:?}, created {}), got {}",
                        t.id,
                        t.archetype,
                        t.last_activity,
                        t.usage,
                        t.created,
                        row.verdict
                    );
                    assert!(matches!(
                        row.action.as_str(),
                        "none" | "manual-review" | "reset-redemption"
                    ));
                }
            }
        }
    }
    assert!(
        actionable > 10,
        "the tenant should hold inactive users: {actionable}"
    );
    assert!(
        undecidable * 50 < truth.len(),
        "too many users depend on report lag: {undecidable}"
    );
    // Users whose blank record cannot speak are never acted on.
    for t in truth
        .iter()
        .filter(|t| t.archetype == "no-signin-data" && t.usage.is_empty())
    {
        if let Some(row) = rows.get(&t.id) {
            assert_eq!(
                (row.verdict.as_str(), row.action.as_str()),
                ("unknown", "none"),
                "{}",
                t.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workforce_report_matches_the_ground_truth() {
    let (truth, rows, now, scanned) = scan(TenantKind::Workforce, 3000).await;
    assert_eq!(
        scanned,
        truth.len() as u64,
        "every user scanned exactly once"
    );
    check(&truth, &rows, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2c_report_matches_the_ground_truth() {
    let (truth, rows, now, scanned) = scan(TenantKind::B2c, 3000).await;
    assert_eq!(
        scanned,
        truth.len() as u64,
        "every user scanned exactly once"
    );
    check(&truth, &rows, now);
}
