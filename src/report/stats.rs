//! Aggregates gathered while rows stream past: what the HTML report and
//! summary.json show. Bounded memory whatever the tenant size.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

use super::csv::ReportRow;
use crate::policy::{RiskFlag, Verdict};

/// How many review rows the HTML report lists.
pub const REVIEW_LIST_LEN: usize = 50;

/// One entry of the review list (the longest-inactive first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReviewEntry {
    pub days_inactive: Option<i64>,
    pub user_principal_name: String,
    pub display_name: String,
    pub flags: String,
}

/// Serialisable so a resumable scan can checkpoint it per partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportStats {
    pub scanned: u64,
    /// Rows by verdict (`active` users are counted in `scanned` only).
    pub by_verdict: BTreeMap<String, u64>,
    /// Inactive users by how long: (label, count), in order.
    pub histogram: Vec<(String, u64)>,
    edges: Vec<i64>,
    pub never_signed_in: u64,
    /// Licenses held by inactive and never-signed-in users, by SKU.
    pub reclaimable_licenses: BTreeMap<String, u64>,
    review: BinaryHeap<Reverse<ReviewEntry>>,
    #[serde(default)]
    pub guests: GuestStats,
}

/// How many domains `summary.json` names (`guests.byDomain`).
pub const TOP_DOMAINS: usize = 20;

/// Pending invitations by age: lower bounds of each bucket, in days.
const PENDING_AGE_EDGES: [i64; 4] = [0, 60, 90, 180];

/// The guest side of a run (rows that are guests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    /// Invitations still pending past `pending_after_days`.
    pub pending: u64,
    /// The same by age: (lower bound in days, count), in order.
    pub pending_by_age: Vec<(i64, u64)>,
    /// Accepted guests found inactive.
    pub inactive: u64,
    /// Unmanaged (viral) guests.
    pub unmanaged: u64,
    /// Unmanaged guests by home domain (all of them; the summary shows the
    /// largest [`TOP_DOMAINS`]).
    pub unmanaged_by_domain: BTreeMap<String, u64>,
}

impl GuestStats {
    fn add(&mut self, row: &ReportRow) {
        if !row.risk_flags.contains(&RiskFlag::Guest) {
            return;
        }
        if row.risk_flags.contains(&RiskFlag::PendingInvitation) {
            self.pending += 1;
            let days = row.days_inactive.unwrap_or(0);
            let bucket = PENDING_AGE_EDGES
                .iter()
                .rposition(|e| days >= *e)
                .unwrap_or(0);
            if self.pending_by_age.is_empty() {
                self.pending_by_age = PENDING_AGE_EDGES.iter().map(|e| (*e, 0)).collect();
            }
            self.pending_by_age[bucket].1 += 1;
        } else if row.verdict == Some(Verdict::Inactive) {
            self.inactive += 1;
        }
        if row.risk_flags.contains(&RiskFlag::UnmanagedGuest) {
            self.unmanaged += 1;
            if let Some(domain) = guest_home_domain(&row.user_principal_name) {
                *self.unmanaged_by_domain.entry(domain).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: GuestStats) {
        self.pending += other.pending;
        if self.pending_by_age.is_empty() {
            self.pending_by_age = other.pending_by_age;
        } else {
            for (mine, theirs) in self.pending_by_age.iter_mut().zip(other.pending_by_age) {
                mine.1 += theirs.1;
            }
        }
        self.inactive += other.inactive;
        self.unmanaged += other.unmanaged;
        for (k, v) in other.unmanaged_by_domain {
            *self.unmanaged_by_domain.entry(k).or_default() += v;
        }
    }

    /// The largest domains, most guests first (ties by name).
    pub fn top_domains(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .unmanaged_by_domain
            .iter()
            .map(|(d, n)| (d.clone(), *n))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(TOP_DOMAINS);
        all
    }
}

/// A guest's home domain from its UPN (`ada_fabrikam.com#EXT#@contoso…`).
pub fn guest_home_domain(upn: &str) -> Option<String> {
    let local = upn.split_once("#EXT#")?.0;
    let domain = local.rsplit_once('_')?.1;
    (!domain.is_empty() && domain.contains('.')).then(|| domain.to_ascii_lowercase())
}

impl ReportStats {
    pub fn new(inactive_after_days: u32) -> Self {
        let start = i64::from(inactive_after_days);
        let mut edges = vec![start];
        edges.extend([180, 365, 730].into_iter().filter(|e| *e > start));
        let histogram = edges
            .iter()
            .enumerate()
            .map(|(i, lo)| {
                let label = match edges.get(i + 1) {
                    Some(hi) => format!("{lo}–{} days", hi - 1),
                    None => format!("{lo}+ days"),
                };
                (label, 0)
            })
            .collect();
        Self {
            histogram,
            edges,
            ..Self::default()
        }
    }

    pub fn count_scanned(&mut self) {
        self.scanned += 1;
    }

    pub fn add(&mut self, row: &ReportRow) {
        let Some(verdict) = row.verdict else {
            return;
        };
        self.guests.add(row);
        *self
            .by_verdict
            .entry(verdict.as_str().to_owned())
            .or_default() += 1;
        match verdict {
            Verdict::Inactive => {
                if let Some(days) = row.days_inactive {
                    let bucket = self.edges.iter().rposition(|e| days >= *e).unwrap_or(0);
                    self.histogram[bucket].1 += 1;
                }
            }
            Verdict::NeverSignedIn => self.never_signed_in += 1,
            Verdict::Review => {
                self.review.push(Reverse(ReviewEntry {
                    days_inactive: row.days_inactive,
                    user_principal_name: row.user_principal_name.clone(),
                    display_name: row.display_name.clone().unwrap_or_default(),
                    flags: row
                        .risk_flags
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }));
                if self.review.len() > REVIEW_LIST_LEN {
                    self.review.pop();
                }
            }
            _ => {}
        }
        if verdict.is_actionable() {
            for sku in &row.licenses {
                *self.reclaimable_licenses.entry(sku.clone()).or_default() += 1;
            }
        }
    }

    /// Merges the stats of another partition of the same run.
    pub fn merge(&mut self, other: ReportStats) {
        self.scanned += other.scanned;
        for (k, v) in other.by_verdict {
            *self.by_verdict.entry(k).or_default() += v;
        }
        for (mine, theirs) in self.histogram.iter_mut().zip(other.histogram) {
            mine.1 += theirs.1;
        }
        self.never_signed_in += other.never_signed_in;
        self.guests.merge(other.guests);
        for (k, v) in other.reclaimable_licenses {
            *self.reclaimable_licenses.entry(k).or_default() += v;
        }
        for entry in other.review {
            self.review.push(entry);
            if self.review.len() > REVIEW_LIST_LEN {
                self.review.pop();
            }
        }
    }

    /// The review list, longest-inactive first (no data last).
    pub fn review_list(&self) -> Vec<ReviewEntry> {
        let mut list: Vec<ReviewEntry> = self.review.iter().map(|r| r.0.clone()).collect();
        list.sort_by(|a, b| b.cmp(a));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_counts_merge_and_name_home_domains() {
        let guest = |flags: &[RiskFlag], verdict, days, upn: &str| ReportRow {
            verdict: Some(verdict),
            days_inactive: days,
            user_principal_name: upn.into(),
            risk_flags: flags.iter().copied().collect(),
            ..ReportRow::default()
        };
        let mut a = ReportStats::new(90);
        let mut b = ReportStats::new(90);
        let pending = [RiskFlag::Guest, RiskFlag::PendingInvitation];
        a.add(&guest(
            &pending,
            Verdict::Inactive,
            Some(45),
            "a_x.com#EXT#@t.onmicrosoft.com",
        ));
        b.add(&guest(
            &pending,
            Verdict::Inactive,
            Some(200),
            "b_x.com#EXT#@t.onmicrosoft.com",
        ));
        a.add(&guest(
            &[RiskFlag::Guest],
            Verdict::Inactive,
            Some(120),
            "c_y.com#EXT#@t.onmicrosoft.com",
        ));
        let viral = [RiskFlag::Guest, RiskFlag::UnmanagedGuest];
        for upn in [
            "d_Viral.org#EXT#@t.onmicrosoft.com",
            "e_viral.org#EXT#@t.onmicrosoft.com",
            "f_other.net#EXT#@t.onmicrosoft.com",
        ] {
            b.add(&guest(&viral, Verdict::Review, Some(3), upn));
        }
        // A member is no guest, whatever its name looks like.
        a.add(&guest(
            &[],
            Verdict::Inactive,
            Some(300),
            "g_z.com#EXT#@t.onmicrosoft.com",
        ));
        a.merge(b);
        let g = &a.guests;
        assert_eq!((g.pending, g.inactive, g.unmanaged), (2, 1, 3));
        assert_eq!(g.pending_by_age, [(0, 1), (60, 0), (90, 0), (180, 1)]);
        assert_eq!(
            g.top_domains(),
            [("viral.org".to_string(), 2), ("other.net".to_string(), 1)]
        );
        assert_eq!(guest_home_domain("jane@contoso.com"), None);
    }

    fn row(verdict: Verdict, days: Option<i64>, licenses: &[&str]) -> ReportRow {
        ReportRow {
            verdict: Some(verdict),
            days_inactive: days,
            licenses: licenses.iter().map(|s| s.to_string()).collect(),
            user_principal_name: format!("u{}@contoso.com", days.unwrap_or(-1)),
            risk_flags: [RiskFlag::Executive].into_iter().collect(),
            ..ReportRow::default()
        }
    }

    #[test]
    fn histogram_buckets_start_at_the_threshold() {
        let mut s = ReportStats::new(90);
        for d in [90, 179, 180, 364, 365, 729, 730, 5000] {
            s.add(&row(Verdict::Inactive, Some(d), &[]));
        }
        let counts: Vec<u64> = s.histogram.iter().map(|(_, c)| *c).collect();
        assert_eq!(counts, [2, 2, 2, 2]);
        assert_eq!(s.histogram[0].0, "90–179 days");
        assert_eq!(ReportStats::new(400).histogram.len(), 2, "400–729, 730+");
    }

    #[test]
    fn reclaimable_licenses_count_only_actionable_rows() {
        let mut s = ReportStats::new(90);
        s.add(&row(Verdict::Inactive, Some(100), &["E5", "EMS"]));
        s.add(&row(Verdict::NeverSignedIn, None, &["E5"]));
        s.add(&row(Verdict::Review, Some(100), &["E5"]));
        s.add(&row(Verdict::Excluded, Some(100), &["E5"]));
        assert_eq!(s.reclaimable_licenses.get("E5"), Some(&2));
        assert_eq!(s.reclaimable_licenses.get("EMS"), Some(&1));
    }

    #[test]
    fn review_list_is_bounded_and_longest_first_across_merges() {
        let mut a = ReportStats::new(90);
        let mut b = ReportStats::new(90);
        for d in 0..80 {
            a.add(&row(Verdict::Review, Some(100 + d), &[]));
            b.add(&row(Verdict::Review, Some(1000 + d), &[]));
        }
        a.merge(b);
        let list = a.review_list();
        assert_eq!(list.len(), REVIEW_LIST_LEN);
        assert_eq!(list[0].days_inactive, Some(1079));
        assert!(
            list.windows(2)
                .all(|w| w[0].days_inactive >= w[1].days_inactive)
        );
        assert_eq!(a.by_verdict.get("review"), Some(&160));
    }
}
