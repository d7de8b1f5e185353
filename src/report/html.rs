//! `report.html`: one self-contained file (inline CSS and SVG, no script, no
//! network) an admin can open anywhere, mail, or archive.

use std::fmt::Write as _;

use super::stats::{GuestStats, ReportStats};
use super::summary::Summary;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const VERDICT_COLOURS: &[(&str, &str)] = &[
    ("inactive", "#d9534f"),
    ("never-signed-in", "#f0ad4e"),
    ("review", "#5bc0de"),
    ("excluded", "#777777"),
    ("unknown", "#9b59b6"),
];

/// A horizontal bar chart as inline SVG. `bars` are (label, value, colour).
fn bar_chart(title: &str, bars: &[(String, u64, &str)]) -> String {
    let row_h = 28;
    let label_w = 200;
    let bar_w = 440;
    let height = row_h * bars.len().max(1) + 10;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        escape(title),
        label_w + bar_w + 80,
        label_w + bar_w + 80
    );
    if bars.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"20\" class=\"muted\">nothing to show</text>"
        );
    }
    for (i, (label, value, colour)) in bars.iter().enumerate() {
        let y = i * row_h + 5;
        let w = if *value == 0 {
            0
        } else {
            ((*value as f64 / max as f64) * bar_w as f64)
                .round()
                .max(2.0) as usize
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{colour}\" rx=\"3\"><title>{}: {value}</title></rect>\
             <text x=\"{}\" y=\"{}\">{value}</text>",
            label_w - 8,
            y + 17,
            escape(label),
            label_w,
            row_h - 8,
            escape(label),
            label_w + w + 6,
            y + 17,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Renders the whole report.
pub fn render(summary: &Summary, stats: &ReportStats) -> String {
    let mut html = String::with_capacity(32 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<title>dormant report {run}</title><style>\
body{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#222;max-width:1100px}}\
h1{{font-size:1.6rem;margin-bottom:.2rem}} h2{{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}}\
.muted{{color:#666;fill:#666}} svg text{{font-size:13px;fill:#222}}\
.cards{{display:flex;gap:1rem;flex-wrap:wrap}} .card{{border:1px solid #ddd;border-radius:6px;padding:.8rem 1.2rem;min-width:130px}}\
.card b{{display:block;font-size:1.5rem}} .banner{{padding:1rem;border-radius:6px;margin:1rem 0}}\
.quarantined{{background:#fdecea;border:1px solid #d9534f}} .ok{{background:#eef7ee;border:1px solid #5cb85c}}\
.warn{{background:#fff8e5;border:1px solid #f0ad4e}}\
table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #eee;padding:.35rem .5rem;text-align:left;font-size:.9rem}}\
</style></head><body>",
        run = escape(&summary.run_id)
    );
    let _ = write!(
        html,
        "<h1>{}</h1><p class=\"muted\">Run <code id=\"run-id\">{}</code> · {} tenant · mode <b id=\"mode\">{}</b>{} · {} → {}</p>",
        if summary.scope == "guests" {
            "Guest audit: inactive and unmanaged guests"
        } else {
            "Inactive accounts"
        },
        escape(&summary.run_id),
        escape(&summary.tenant_kind),
        escape(&summary.mode),
        if summary.dry_run { " (dry run)" } else { "" },
        summary.started_at.format("%Y-%m-%d %H:%M UTC"),
        summary.finished_at.format("%Y-%m-%d %H:%M UTC"),
    );

    if summary.quarantined {
        let _ = write!(
            html,
            "<div class=\"banner quarantined\" id=\"quarantine\"><b>Quarantined.</b> Nothing was enqueued: {}. \
             Review the list, then release the run with <code>dormant release {}</code>.</div>",
            escape(
                summary
                    .quarantine_reason
                    .as_deref()
                    .unwrap_or("the run exceeded its limits")
            ),
            escape(&summary.run_id)
        );
    } else {
        let _ = write!(
            html,
            "<div class=\"banner ok\" id=\"quarantine\">Not quarantined: {} step(s) planned, {} enqueued.</div>",
            summary.actions_planned, summary.actions_enqueued
        );
    }
    for w in &summary.warnings {
        let _ = write!(html, "<div class=\"banner warn\">{}</div>", escape(w));
    }
    if let Some(dq) = &summary.data_quality {
        let against = match (
            &dq.previous_run,
            dq.previous_unknown_percent,
            dq.previous_new_cases,
        ) {
            (Some(run), Some(pct), Some(cases)) => {
                format!("against {pct:.2}% and {cases} new case(s) in run {run}")
            }
            _ => "no earlier run to compare with".to_owned(),
        };
        let _ = write!(
            html,
            "<p class=\"muted\" id=\"data-quality\">Data quality: {:.2}% of scanned users without sign-in data, {} new case(s), {}{}.</p>",
            dq.unknown_percent,
            dq.new_cases,
            escape(&against),
            if dq.tripped {
                " — <b>the jump looks like broken data, not inactivity</b>"
            } else {
                ""
            }
        );
    }

    let _ = write!(html, "<div class=\"cards\">");
    let card = |html: &mut String, label: &str, value: String| {
        let _ = write!(
            html,
            "<div class=\"card\"><b>{}</b>{}</div>",
            escape(&value),
            escape(label)
        );
    };
    card(&mut html, "users scanned", summary.scanned.to_string());
    for (verdict, _) in VERDICT_COLOURS {
        let n = summary.by_verdict.get(*verdict).copied().unwrap_or(0);
        card(&mut html, verdict, n.to_string());
    }
    if let Some(q) = summary.directory_quota {
        card(
            &mut html,
            "directory quota used",
            format!("{} / {}", q.used, q.total),
        );
    }
    card(
        &mut html,
        "Graph requests (throttled)",
        format!("{} ({})", summary.graph_requests, summary.throttled),
    );
    html.push_str("</div>");

    let verdict_bars: Vec<(String, u64, &str)> = VERDICT_COLOURS
        .iter()
        .map(|(v, c)| {
            (
                (*v).to_owned(),
                summary.by_verdict.get(*v).copied().unwrap_or(0),
                *c,
            )
        })
        .collect();
    let _ = write!(
        html,
        "<h2>Verdicts</h2><figure id=\"verdicts\">{}</figure>",
        bar_chart("Users by verdict", &verdict_bars)
    );

    let mut hist: Vec<(String, u64, &str)> = stats
        .histogram
        .iter()
        .map(|(l, c)| (l.clone(), *c, "#d9534f"))
        .collect();
    hist.push((
        "never signed in".to_owned(),
        stats.never_signed_in,
        "#f0ad4e",
    ));
    let _ = write!(
        html,
        "<h2>How long inactive</h2><figure id=\"histogram\">{}</figure>",
        bar_chart("Inactive users by days since last activity", &hist)
    );

    let mut skus: Vec<(&String, &u64)> = stats.reclaimable_licenses.iter().collect();
    skus.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let sku_bars: Vec<(String, u64, &str)> = skus
        .into_iter()
        .take(15)
        .map(|(s, c)| (s.clone(), *c, "#337ab7"))
        .collect();
    let _ = write!(
        html,
        "<h2>Reclaimable licenses by SKU</h2><figure id=\"licenses\">{}</figure>",
        bar_chart("Licenses held by inactive users", &sku_bars)
    );

    if summary.guests.is_some() {
        guest_section(&mut html, &stats.guests);
    }
    attestation_section(&mut html, &summary.attestation);

    let review = stats.review_list();
    let _ = write!(
        html,
        "<h2>Held for review (top {})</h2><table id=\"review\"><thead><tr><th>User</th><th>Name</th><th>Days inactive</th><th>Why</th></tr></thead><tbody>",
        review.len()
    );
    if review.is_empty() {
        html.push_str(
            "<tr><td colspan=\"4\" class=\"muted\">No user is held for review.</td></tr>",
        );
    }
    for r in &review {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.user_principal_name),
            escape(&r.display_name),
            r.days_inactive
                .map(|d| d.to_string())
                .unwrap_or_else(|| "—".into()),
            escape(&r.flags)
        );
    }
    html.push_str("</tbody></table>");
    html.push_str(
        "<p class=\"muted\">The full list is inactive-users.csv; the figures are in summary.json.</p></body></html>\n",
    );
    html
}

/// Guests: pending invitations by age, inactive guests, unmanaged guests
/// by home domain.
fn guest_section(html: &mut String, g: &GuestStats) {
    let _ = write!(
        html,
        "<h2>Guests</h2><div class=\"cards\" id=\"guests\">\
         <div class=\"card\"><b>{}</b>pending invitations</div>\
         <div class=\"card\"><b>{}</b>inactive guests</div>\
         <div class=\"card\"><b>{}</b>unmanaged guests</div></div>",
        g.pending, g.inactive, g.unmanaged
    );
    let ages: Vec<(String, u64, &str)> = g
        .pending_by_age
        .iter()
        .enumerate()
        .map(|(i, (lo, n))| {
            let label = match g.pending_by_age.get(i + 1) {
                Some((hi, _)) => format!("{lo}–{} days", hi - 1),
                None => format!("{lo}+ days"),
            };
            (label, *n, "#f0ad4e")
        })
        .collect();
    let _ = write!(
        html,
        "<figure id=\"guests-pending\">{}</figure>",
        bar_chart("Pending invitations by age", &ages)
    );
    let domains: Vec<(String, u64, &str)> = g
        .top_domains()
        .into_iter()
        .map(|(d, n)| (d, n, "#5bc0de"))
        .collect();
    let _ = write!(
        html,
        "<figure id=\"guests-unmanaged\">{}</figure>",
        bar_chart("Unmanaged guests by home domain", &domains)
    );
}

/// Owners' answers through the notifications' links (no names: counts).
fn attestation_section(html: &mut String, a: &super::summary::AttestationCounts) {
    let bars = [
        ("kept".to_owned(), a.kept, "#5cb85c"),
        ("let go".to_owned(), a.let_go, "#d9534f"),
        ("no answer".to_owned(), a.no_answer, "#777777"),
    ];
    let _ = write!(
        html,
        "<h2>Owners' answers</h2><section id=\"attestation\"><p>{} asked through keep / let-go links: {} kept, {} let go, {} no answer yet.</p><figure>{}</figure></section>",
        a.asked,
        a.kept,
        a.let_go,
        a.no_answer,
        bar_chart("Answers to keep / let-go links", &bars)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{RiskFlag, Verdict};
    use crate::report::GuestSummary;
    use crate::report::csv::ReportRow;
    use chrono::Utc;
    use std::collections::BTreeMap;

    fn summary(quarantined: bool) -> Summary {
        Summary {
            run_id: "20261122T020000Z-a1b2c3".into(),
            tenant_kind: "workforce".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            mode: "report".into(),
            scanned: 1000,
            by_verdict: BTreeMap::from([("inactive".to_owned(), 40), ("review".to_owned(), 1)]),
            actions_planned: 40,
            actions_enqueued: 0,
            cases: None,
            quarantined,
            directory_quota: None,
            graph_requests: 12,
            throttled: 1,
            quarantine_reason: quarantined.then(|| "41 new cases exceed the limit of 10".into()),
            data_quality: None,
            dry_run: false,
            warnings: vec![],
            guests: Some(GuestSummary::default()),
            attestation: Default::default(),
            scope: "all".into(),
        }
    }

    #[test]
    fn hostile_names_are_escaped_and_nothing_is_fetched() {
        let mut stats = ReportStats::new(90);
        stats.add(&ReportRow {
            verdict: Some(Verdict::Review),
            user_principal_name: "x@contoso.com".into(),
            display_name: Some("<script>alert(1)</script>".into()),
            risk_flags: [RiskFlag::Executive].into_iter().collect(),
            days_inactive: Some(200),
            ..ReportRow::default()
        });
        let html = render(&summary(true), &stats);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            !html.contains("http://")
                || html
                    .matches("http://")
                    .all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
        );
        assert!(!html.contains("https://"), "no network references");
        assert!(html.contains("id=\"quarantine\"") && html.contains("Quarantined."));
        assert!(html.contains("<svg"));
    }

    #[test]
    fn an_empty_run_renders() {
        let html = render(&summary(false), &ReportStats::new(90));
        assert!(html.contains("No user is held for review."));
        assert!(html.contains("Not quarantined"));
        assert!(html.contains("id=\"attestation\""));
    }

    #[test]
    fn the_attestation_section_shows_the_answers() {
        let mut s = summary(false);
        s.attestation = crate::report::summary::AttestationCounts {
            asked: 7,
            kept: 2,
            let_go: 1,
            no_answer: 4,
        };
        let html = render(&s, &ReportStats::new(90));
        assert!(
            html.contains(
                "7 asked through keep / let-go links: 2 kept, 1 let go, 4 no answer yet."
            ),
            "{html}"
        );
    }
}
