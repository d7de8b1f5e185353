//! The Microsoft 365 usage report as a compact lookup by UPN.
//!
//! `getOffice365ActiveUserDetail` has one row per user, keyed by UPN (a hex
//! hash while names are concealed). Joining it to a million-user scan must
//! not hold a million strings: the index keeps a 64-bit hash of the
//! case-folded UPN and four day numbers, 24 bytes a user, and serialises to
//! a blob so every partition worker of a run reads the same snapshot.
//!
//! Two UPNs sharing a 64-bit hash (odds about 1 in 10^7 for a million users)
//! merge their dates to the newer: a collision can only make a user look
//! more active, never less, so it cannot cause an action.

use std::collections::HashMap;

use chrono::{Datelike as _, NaiveDate};

use super::ServiceUsage;

/// No activity recorded.
const NONE: i32 = i32::MIN;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageIndex {
    map: HashMap<u64, [i32; 4]>,
    /// Rows whose UPN was a concealed hash: they cannot be joined.
    pub concealed_rows: u64,
    pub refreshed: Option<NaiveDate>,
}

/// The index's on-disk format. `DUI1` keyed users by `DefaultHasher`, whose
/// algorithm the standard library may change between releases: two builds
/// of dormant (instances mid-deployment) would then read one index
/// differently and see no usage for anyone. `DUI2` is keyed by SHA-256, a
/// hash that never changes; a `DUI1` index is refused, not misread.
const MAGIC: &[u8; 4] = b"DUI2";

/// The first 8 bytes (little-endian) of SHA-256 over the ASCII-lowercased
/// UPN: the same in every build, process and instance.
fn key(upn: &str) -> u64 {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(upn.to_ascii_lowercase().as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

fn day(d: Option<NaiveDate>) -> i32 {
    d.map(|d| d.num_days_from_ce()).unwrap_or(NONE)
}

fn date(n: i32) -> Option<NaiveDate> {
    (n != NONE)
        .then(|| NaiveDate::from_num_days_from_ce_opt(n))
        .flatten()
}

impl UsageIndex {
    /// Adds a row. A UPN without `@` is a concealed hash and is only counted.
    pub fn insert(&mut self, upn: &str, usage: &ServiceUsage) {
        if !upn.contains('@') {
            self.concealed_rows += 1;
            return;
        }
        let new = [
            day(usage.exchange),
            day(usage.onedrive),
            day(usage.sharepoint),
            day(usage.teams),
        ];
        let entry = self.map.entry(key(upn)).or_insert([NONE; 4]);
        for (old, new) in entry.iter_mut().zip(new) {
            *old = (*old).max(new);
        }
    }

    pub fn get(&self, upn: &str) -> Option<ServiceUsage> {
        self.map.get(&key(upn)).map(|d| ServiceUsage {
            exchange: date(d[0]),
            onedrive: date(d[1]),
            sharepoint: date(d[2]),
            teams: date(d[3]),
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether names were concealed for the whole report: then it cannot
    /// speak for anyone and the scan says so instead of using it.
    pub fn is_concealed(&self) -> bool {
        self.map.is_empty() && self.concealed_rows > 0
    }

    /// Little-endian: magic, refresh day, concealed count, entry count, then
    /// (key, 4 days) per entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.map.len() * 24);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(
            &self
                .refreshed
                .map(|d| d.num_days_from_ce())
                .unwrap_or(NONE)
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.concealed_rows.to_le_bytes());
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (k, d) in &self.map {
            out.extend_from_slice(&k.to_le_bytes());
            for n in d {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (refreshed, rest) = rest.split_at_checked(4)?;
        let (concealed, rest) = rest.split_at_checked(8)?;
        let (count, mut rest) = rest.split_at_checked(8)?;
        let count = u64::from_le_bytes(count.try_into().ok()?);
        if rest.len() as u64 != count.checked_mul(24)? {
            return None;
        }
        let mut map = HashMap::with_capacity(count as usize);
        while !rest.is_empty() {
            let (k, tail) = rest.split_at(8);
            let mut d = [NONE; 4];
            for (i, slot) in d.iter_mut().enumerate() {
                *slot = i32::from_le_bytes(tail[i * 4..i * 4 + 4].try_into().ok()?);
            }
            map.insert(u64::from_le_bytes(k.try_into().ok()?), d);
            rest = &tail[16..];
        }
        Some(Self {
            map,
            concealed_rows: u64::from_le_bytes(concealed.try_into().ok()?),
            refreshed: date(i32::from_le_bytes(refreshed.try_into().ok()?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
    }

    #[test]
    fn lookup_is_case_insensitive_and_keeps_the_newest_dates() {
        let mut idx = UsageIndex::default();
        idx.insert(
            "Jane.Doe@Contoso.com",
            &ServiceUsage {
                exchange: d("2026-10-01"),
                ..ServiceUsage::default()
            },
        );
        idx.insert(
            "jane.doe@contoso.com",
            &ServiceUsage {
                exchange: d("2026-09-01"),
                teams: d("2026-11-01"),
                ..ServiceUsage::default()
            },
        );
        let u = idx.get("JANE.DOE@contoso.com").expect("found");
        assert_eq!(u.exchange, d("2026-10-01"));
        assert_eq!(u.teams, d("2026-11-01"));
        assert_eq!(u.onedrive, None);
        assert!(idx.get("john@contoso.com").is_none());
    }

    #[test]
    fn the_key_is_the_same_in_every_build() {
        // Pinned: SHA-256("jane.doe@contoso.com"), first 8 bytes, LE. A
        // change here breaks every index written by an older build.
        assert_eq!(key("Jane.Doe@Contoso.com"), key("jane.doe@contoso.com"));
        assert_eq!(key("jane.doe@contoso.com"), 0xde63_8abb_d233_076f_u64);
    }

    #[test]
    fn an_index_of_the_old_format_is_refused_not_misread() {
        let mut idx = UsageIndex::default();
        idx.insert("jane.doe@contoso.com", &ServiceUsage::default());
        let mut bytes = idx.to_bytes();
        bytes[..4].copy_from_slice(b"DUI1");
        assert_eq!(UsageIndex::from_bytes(&bytes), None);
    }

    #[test]
    fn concealed_rows_are_counted_not_joined() {
        let mut idx = UsageIndex::default();
        idx.insert("6C1C3F4E0A8B2D9E1F7A5B3C4D2E1F0A", &ServiceUsage::default());
        assert!(idx.is_concealed());
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn bytes_round_trip_and_garbage_is_refused() {
        let mut idx = UsageIndex {
            refreshed: d("2026-11-20"),
            ..UsageIndex::default()
        };
        for i in 0..1000 {
            idx.insert(
                &format!("user{i}@contoso.com"),
                &ServiceUsage {
                    sharepoint: d("2026-01-01").map(|x| x + chrono::Duration::days(i)),
                    ..ServiceUsage::default()
                },
            );
        }
        let bytes = idx.to_bytes();
        assert_eq!(bytes.len(), 24 + 1000 * 24);
        assert_eq!(UsageIndex::from_bytes(&bytes), Some(idx));
        assert_eq!(UsageIndex::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(UsageIndex::from_bytes(b"nope"), None);
    }
}
