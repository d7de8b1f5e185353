//! Who enabled an account that dormant did not: a person's decision (or
//! another system's, HR provisioning say), which always wins over dormant's
//! plan. Read from `Enable account` directory audits; only dormant's own
//! application is not "someone else".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::graph::DirectoryAudit;

/// Whether `audit` was initiated by anyone but dormant's own app
/// (`own_app`, its application id). Without `own_app` every app counts as
/// someone else: a hold too many is safe, a missed one is not.
pub fn by_someone_else(audit: &DirectoryAudit, own_app: Option<&str>) -> bool {
    if audit.initiated_by.user.is_some() {
        return true;
    }
    match (&audit.initiated_by.app, own_app) {
        (Some(app), Some(own)) => !app
            .app_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(own)),
        // No initiator at all is not dormant either.
        _ => true,
    }
}

/// The newest enable by someone else, per target user id (lowercase).
pub fn enabled_by_others<'a>(
    audits: impl IntoIterator<Item = &'a DirectoryAudit>,
    own_app: Option<&str>,
) -> BTreeMap<String, DateTime<Utc>> {
    let mut out = BTreeMap::new();
    for audit in audits {
        let Some(at) = audit.activity_date_time else {
            continue;
        };
        if !by_someone_else(audit, own_app) {
            continue;
        }
        for target in &audit.target_resources {
            if let Some(id) = &target.id {
                let entry = out.entry(id.to_ascii_lowercase()).or_insert(at);
                *entry = (*entry).max(at);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{AppIdentity, AuditActivityInitiator, TargetResource, UserIdentity};

    fn audit(user: bool, app: Option<&str>, at: &str, target: &str) -> DirectoryAudit {
        DirectoryAudit {
            activity_date_time: Some(at.parse().expect("date")),
            initiated_by: AuditActivityInitiator {
                user: user.then(UserIdentity::default),
                app: app.map(|id| AppIdentity {
                    app_id: Some(id.into()),
                    ..AppIdentity::default()
                }),
            },
            target_resources: vec![TargetResource {
                id: Some(target.into()),
                ..TargetResource::default()
            }],
            ..DirectoryAudit::default()
        }
    }

    #[test]
    fn only_dormants_own_app_is_not_someone_else() {
        let own = Some("0000-own");
        let cases = [
            (
                audit(true, None, "2026-11-01T00:00:00Z", "A"),
                true,
                "a person",
            ),
            (
                audit(false, Some("1111-hr"), "2026-11-01T00:00:00Z", "A"),
                true,
                "another app (HR provisioning)",
            ),
            (
                audit(false, Some("0000-OWN"), "2026-11-01T00:00:00Z", "A"),
                false,
                "dormant's own restore",
            ),
            (
                audit(false, None, "2026-11-01T00:00:00Z", "A"),
                true,
                "no initiator",
            ),
        ];
        for (a, want, name) in &cases {
            assert_eq!(by_someone_else(a, own), *want, "{name}");
        }
        assert!(
            by_someone_else(&cases[2].0, None),
            "without knowing itself dormant counts every app as someone else"
        );
    }

    #[test]
    fn the_newest_enable_per_user_wins() {
        let audits = [
            audit(true, None, "2026-11-01T00:00:00Z", "A"),
            audit(true, None, "2026-11-05T00:00:00Z", "a"),
            audit(false, Some("own"), "2026-11-09T00:00:00Z", "A"),
        ];
        let map = enabled_by_others(&audits, Some("own"));
        assert_eq!(
            map.get("a").map(|t| t.to_rfc3339()),
            Some("2026-11-05T00:00:00+00:00".into())
        );
    }
}
