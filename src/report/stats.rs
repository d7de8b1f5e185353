//! Aggregates gathered while rows stream past: what the HTML report and
//! summary.json show. Bounded memory whatever the tenant size.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

use super::csv::ReportRow;
use crate::policy::Verdict;

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
    use crate::policy::RiskFlag;

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
