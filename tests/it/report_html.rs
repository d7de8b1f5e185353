//! The HTML report opened in a real browser (Debian's headless Chromium):
//! it renders, its sections are there, and it loads nothing from outside.

use std::process::Command;

use chrono::Utc;
use dormant::policy::{RiskFlag, Verdict};
use dormant::report::{ReportRow, ReportStats, Summary, html};

fn chromium() -> &'static str {
    for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(path).exists() {
            return path;
        }
    }
    panic!("Chromium is not installed: scripts/test.sh installs Debian's chromium package");
}

fn sample() -> (Summary, ReportStats) {
    let mut stats = ReportStats::new(90);
    for (i, verdict) in [
        Verdict::Inactive,
        Verdict::Review,
        Verdict::NeverSignedIn,
        Verdict::Inactive,
    ]
    .into_iter()
    .enumerate()
    {
        stats.add(&ReportRow {
            verdict: Some(verdict),
            user_principal_name: format!("user{i}@contoso.com"),
            display_name: Some(format!("User <{i}>")),
            days_inactive: Some(100 + 200 * i as i64),
            licenses: vec!["ENTERPRISEPACK".into()],
            risk_flags: [RiskFlag::Executive].into_iter().collect(),
            ..ReportRow::default()
        });
    }
    // Guests: a pending invitation and two unmanaged guests of one domain.
    for (i, flags) in [
        vec![RiskFlag::Guest, RiskFlag::PendingInvitation],
        vec![RiskFlag::Guest, RiskFlag::UnmanagedGuest],
        vec![RiskFlag::Guest, RiskFlag::UnmanagedGuest],
    ]
    .into_iter()
    .enumerate()
    {
        stats.add(&ReportRow {
            verdict: Some(if i == 0 {
                Verdict::Inactive
            } else {
                Verdict::Review
            }),
            user_principal_name: format!("guest{i}_viral.example#EXT#@contoso.onmicrosoft.com"),
            days_inactive: Some(45),
            risk_flags: flags.into_iter().collect(),
            ..ReportRow::default()
        });
    }
    let summary = Summary {
        run_id: "20261122T020000Z-a1b2c3".into(),
        tenant_kind: "workforce".into(),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        mode: "report".into(),
        scanned: 1000,
        by_verdict: stats.by_verdict.clone(),
        actions_planned: 3,
        actions_enqueued: 0,
        cases: None,
        quarantined: true,
        directory_quota: None,
        graph_requests: 42,
        throttled: 2,
        quarantine_reason: Some("3 new cases exceed the limit of 2".into()),
        dry_run: false,
        warnings: vec![],
        data_quality: None,
        guests: Some(dormant::report::GuestSummary::of(&stats.guests)),
        attestation: dormant::report::AttestationCounts {
            asked: 5,
            kept: 2,
            let_go: 1,
            no_answer: 2,
        },
        scope: "all".into(),
    };
    (summary, stats)
}

fn headless(
    args: &[&str],
    page: &std::path::Path,
    profile: &std::path::Path,
) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn the_report_renders_in_chromium_with_every_section() {
    let (summary, stats) = sample();
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, html::render(&summary, &stats)).expect("write report");

    let dom = headless(&["--dump-dom"], &page, &dir.path().join("profile-dom"));
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in [
        "verdicts",
        "histogram",
        "licenses",
        "review",
        "quarantine",
        "run-id",
        "guests",
        "guests-pending",
        "guests-unmanaged",
        "attestation",
    ] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "section {id} missing from the rendered DOM"
        );
    }
    assert!(dom.contains("Quarantined."));
    assert!(dom.contains("viral.example"), "unmanaged guests by domain");
    assert!(dom.contains("User &lt;1&gt;"), "names are text, not markup");
    assert!(
        dom.contains("5 asked through keep / let-go links: 2 kept, 1 let go, 2 no answer yet."),
        "the attestation section shows the answers"
    );

    let shot = dir.path().join("report.png");
    let out = headless(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1400",
        ],
        &page,
        &dir.path().join("profile-shot"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 10_000,
        "a blank page compresses to almost nothing: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("DORMANT_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
}
