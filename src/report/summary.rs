//! `summary.json` (CONTRACT): the run in one small document.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryQuota {
    pub used: u64,
    pub total: u64,
}

impl DirectoryQuota {
    /// B2C guidance: alert above 90 % of the directory quota.
    pub fn is_near_limit(&self) -> bool {
        self.total > 0 && self.used.saturating_mul(100) > self.total.saturating_mul(90)
    }
}

/// What a run did to cases, as plain counts (the lifecycle's tally, taken
/// over by the scan: the report knows nothing of cases).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseCounts {
    pub opened: u64,
    pub cancelled: u64,
    pub closed: u64,
    pub enqueued: u64,
    pub waiting: u64,
    /// Cases that could not be advanced this run; the next run tries again.
    pub failed: u64,
}

/// Owners' answers through the "keep" / "let go" links, counted over the
/// cases open when the run started and the users a keep holds then:
/// `asked` = `kept` + `letGo` + `noAnswer`; `kept` = users an owner's keep
/// holds now (their cases ended with the answer); `letGo` and `noAnswer` =
/// open cases whose notification carried links, answered "let go" or not
/// answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationCounts {
    pub asked: u64,
    pub kept: u64,
    pub let_go: u64,
    pub no_answer: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub run_id: String,
    pub tenant_kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub mode: String,
    pub scanned: u64,
    pub by_verdict: BTreeMap<String, u64>,
    pub actions_planned: u64,
    pub actions_enqueued: u64,
    /// What the run did to cases (enforce mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<CaseCounts>,
    pub quarantined: bool,
    pub directory_quota: Option<DirectoryQuota>,
    pub graph_requests: u64,
    pub throttled: u64,
    /// Why the run quarantined itself, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Things an operator should know (quota near its limit, a source that
    /// could not be read). Never personal data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the data-quality breaker compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_quality: Option<DataQuality>,
    /// The guest side (workforce tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guests: Option<GuestSummary>,
    /// See [`AttestationCounts`].
    #[serde(default)]
    pub attestation: AttestationCounts,
    /// `all` (the nightly scan) or `guests` (`dormant scan --guests-only`:
    /// guests only, members' cases untouched).
    #[serde(default = "scope_all")]
    pub scope: String,
}

fn scope_all() -> String {
    "all".to_owned()
}

/// `summary.json` `guests`: pending invitations, inactive and unmanaged
/// guests, unmanaged guests by home domain (the largest domains only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestSummary {
    pub pending: u64,
    pub inactive: u64,
    pub unmanaged: u64,
    pub by_domain: BTreeMap<String, u64>,
}

impl GuestSummary {
    pub fn of(stats: &super::stats::GuestStats) -> Self {
        Self {
            pending: stats.pending,
            inactive: stats.inactive,
            unmanaged: stats.unmanaged,
            by_domain: stats.top_domains().into_iter().collect(),
        }
    }
}

/// The data-quality breaker's view of a run against the last good one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataQuality {
    /// Share of scanned users without sign-in data (verdict `unknown`).
    pub unknown_percent: f64,
    pub new_cases: u64,
    /// The run compared with (the last that passed, or was released).
    pub previous_run: Option<String>,
    pub previous_unknown_percent: Option<f64>,
    pub previous_new_cases: Option<u64>,
    /// The comparison alone would quarantine the run.
    pub tripped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys_are_all_present() {
        let s = Summary {
            run_id: "20261122T020000Z-a1b2c3".into(),
            tenant_kind: "b2c".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            mode: "report".into(),
            scanned: 10,
            by_verdict: BTreeMap::from([("inactive".to_owned(), 3)]),
            actions_planned: 3,
            actions_enqueued: 0,
            cases: None,
            quarantined: false,
            directory_quota: None,
            graph_requests: 5,
            throttled: 0,
            quarantine_reason: None,
            dry_run: false,
            warnings: vec![],
            data_quality: None,
            guests: None,
            attestation: AttestationCounts {
                asked: 3,
                kept: 1,
                let_go: 1,
                no_answer: 1,
            },
            scope: "all".into(),
        };
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(
            v["attestation"],
            serde_json::json!({"asked": 3, "kept": 1, "letGo": 1, "noAnswer": 1})
        );
        for key in [
            "runId",
            "tenantKind",
            "startedAt",
            "finishedAt",
            "mode",
            "scanned",
            "byVerdict",
            "actionsPlanned",
            "actionsEnqueued",
            "quarantined",
            "directoryQuota",
            "graphRequests",
            "throttled",
        ] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert!(v["directoryQuota"].is_null());
    }

    #[test]
    fn quota_warning_above_ninety_percent() {
        assert!(
            !DirectoryQuota {
                used: 900,
                total: 1000
            }
            .is_near_limit()
        );
        assert!(
            DirectoryQuota {
                used: 901,
                total: 1000
            }
            .is_near_limit()
        );
        assert!(!DirectoryQuota { used: 0, total: 0 }.is_near_limit());
    }
}
