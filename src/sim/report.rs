//! `reports/getOffice365ActiveUserDetail(period='D7|D30|D90|D180')`.
//!
//! Graph answers 302 to a short-lived pre-authenticated download URL; that URL
//! needs (and should get) no Authorization header. The CSV starts with a UTF-8
//! BOM, dates are `YYYY-MM-DD` (empty = never), and while
//! `admin/reportSettings.displayConcealedNames` is true the UPN and display name
//! are replaced by a hex hash. The data lags: activity after the report refresh
//! date (yesterday) is not in it yet.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use chrono::{TimeZone, Utc};

use super::http::{Reply, Req, RequestIds, graph_error};
use super::ids;
use super::server::State;
use super::tenant::{L_E3, L_E5, L_EMS, L_F3, OFFICE_MASK, SKUS};

const DAY: i64 = 86_400;
/// Pre-authenticated links live 5 minutes of the sim clock.
const LINK_TTL: i64 = 300;

/// The exact header of the Office 365 active user detail report.
pub const COLUMNS: &str = "Report Refresh Date,User Principal Name,Display Name,Is Deleted,Deleted Date,Has Exchange License,Has OneDrive License,Has SharePoint License,Has Skype For Business License,Has Yammer License,Has Teams License,Exchange Last Activity Date,OneDrive Last Activity Date,SharePoint Last Activity Date,Skype For Business Last Activity Date,Yammer Last Activity Date,Teams Last Activity Date,Exchange License Assign Date,OneDrive License Assign Date,SharePoint License Assign Date,Skype For Business License Assign Date,Yammer License Assign Date,Teams License Assign Date,Assigned Products";

/// What a report download covers.
#[derive(Clone, Copy, Debug)]
pub enum ReportScope {
    /// `period='Dn'`: every licensed or active user, last activity dates.
    Period(u32),
    /// `date=YYYY-MM-DD`: users with any activity on that day (start of day, Unix seconds).
    Date(i64),
}

/// The 302 to the download link.
pub fn redirect(st: &State, ids: &RequestIds, func: &str) -> Reply {
    let arg = func
        .strip_prefix("getOffice365ActiveUserDetail(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or("");
    let scope = if let Some(date) = arg.strip_prefix("date=") {
        // `date=YYYY-MM-DD`: users active on that day; only the past 30 days exist.
        let now = st.now();
        match chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
            Ok(d) => {
                let start = d
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp())
                    .unwrap_or(0);
                if start > now || now - start > 30 * DAY {
                    return graph_error(
                        400,
                        "BadRequest",
                        &format!(
                            "Invalid value '{date}' for the date parameter: only the last 30 days are available."
                        ),
                        ids,
                    );
                }
                ReportScope::Date(start)
            }
            Err(_) => {
                return graph_error(
                    400,
                    "BadRequest",
                    &format!("Invalid value '{date}' for the date parameter. Use YYYY-MM-DD."),
                    ids,
                );
            }
        }
    } else {
        let period = arg
            .strip_prefix("period='")
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or("");
        match period {
            "D7" => ReportScope::Period(7),
            "D30" => ReportScope::Period(30),
            "D90" => ReportScope::Period(90),
            "D180" => ReportScope::Period(180),
            _ => {
                return graph_error(
                    400,
                    "BadRequest",
                    &format!(
                        "Invalid value '{period}' for the period parameter. Supported values are D7, D30, D90 and D180."
                    ),
                    ids,
                );
            }
        }
    };
    let token: [u8; 24] = rand::random();
    let token = hex::encode(token);
    let expires = st.now() + LINK_TTL;
    st.lock(&st.downloads)
        .insert(token.clone(), (expires, scope));
    st.stats.report_redirects.fetch_add(1, Ordering::Relaxed);
    let mut r = Reply::raw(302, "", "text/plain")
        .with_header("Location", format!("{}/_download/{token}", st.base_url));
    r.headers.push(("Cache-Control".into(), "private".into()));
    r
}

fn day(secs: i64) -> String {
    if secs == 0 {
        return String::new();
    }
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn conceal(seed: u64, s: &str) -> String {
    let a = ids::hash(&[seed, ids::hash_str(s), 1]);
    let b = ids::hash(&[seed, ids::hash_str(s), 2]);
    format!("{a:016X}{b:016X}")
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `GET /_download/{token}`: the CSV.
pub fn download(st: &State, r: &Req, token: &str) -> Reply {
    st.stats.report_downloads.fetch_add(1, Ordering::Relaxed);
    if r.header("authorization").is_some() {
        st.stats
            .report_downloads_with_auth
            .fetch_add(1, Ordering::Relaxed);
    }
    let now = st.now();
    let link = st.lock(&st.downloads).get(token).copied();
    let Some((expires, scope)) = link.filter(|(e, _)| *e > now) else {
        return Reply::raw(
            403,
            "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. Signed expiry time has passed.</Message></Error>",
            "application/xml",
        );
    };
    let _ = expires;
    let concealed = st.concealed.load(Ordering::SeqCst);
    let t = st.tenant_read();
    let refresh = now - DAY;
    let refresh_day = day(refresh);
    let mut out = String::with_capacity(64 + t.users.len() * 200);
    out.push('\u{feff}');
    out.push_str(COLUMNS);
    out.push_str("\r\n");
    for (i, u) in t.users.iter().enumerate() {
        let i = i as u32;
        if u.flags & super::tenant::F_PURGED != 0
            || (u.deleted_at != 0 && now - u.deleted_at >= 30 * DAY)
        {
            continue;
        }
        let licensed = u.all_licenses() & OFFICE_MASK != 0;
        if !licensed && u.usage.iter().all(|x| *x == 0) {
            continue;
        }
        let in_scope = match scope {
            // Users deleted before the period began are no longer listed.
            ReportScope::Period(days) => {
                u.deleted_at == 0 || now - u.deleted_at <= i64::from(days) * DAY
            }
            ReportScope::Date(day_start) => u
                .usage
                .iter()
                .any(|x| *x >= day_start && *x < day_start + DAY),
        };
        if !in_scope {
            continue;
        }
        let seen = |x: i64| {
            if x != 0 && x <= refresh {
                day(x)
            } else {
                String::new()
            }
        };
        let (upn, name) = if concealed {
            let h = conceal(t.seed, &t.upn(i));
            (h.clone(), h)
        } else {
            (t.upn(i), t.display_name(i))
        };
        let lic = if licensed { "True" } else { "False" };
        let assign = if licensed {
            day(u.created)
        } else {
            String::new()
        };
        let mut products = Vec::new();
        let all = u.all_licenses();
        for (bit, name) in [
            (L_E3, "OFFICE 365 E3"),
            (L_E5, "MICROSOFT 365 E5"),
            (L_F3, "MICROSOFT 365 F3"),
            (L_EMS, "ENTERPRISE MOBILITY + SECURITY E3"),
        ] {
            if all & bit != 0 {
                products.push(name);
            }
        }
        for (b, s) in SKUS.iter().enumerate() {
            if all & (1 << b) != 0 && s.part == "VISIOCLIENT" {
                products.push("VISIO PLAN 2");
            }
        }
        let _ = writeln!(
            out,
            "{refresh_day},{},{},{},{},{lic},{lic},{lic},{lic},{lic},{lic},{},{},{},,,{},{assign},{assign},{assign},{assign},{assign},{assign},{}\r",
            quote(&upn),
            quote(&name),
            if u.deleted_at != 0 { "True" } else { "False" },
            day(u.deleted_at),
            seen(u.usage[0]),
            seen(u.usage[1]),
            seen(u.usage[2]),
            seen(u.usage[3]),
            quote(&products.join("+")),
        );
    }
    // writeln! adds "\n" after our "\r": rows end in CRLF like the real report.
    Reply::raw(200, out.into_bytes(), "application/octet-stream").with_header(
        "Content-Disposition",
        "attachment; filename=\"Office365ActiveUserDetail.csv\"",
    )
}
