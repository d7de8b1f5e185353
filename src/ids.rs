//! Identifiers that cross process boundaries: run ids, case ids, object
//! ids. Only these go into queue messages, logs and the audit log.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `20261122T020000Z-<short-random>`: sorts by time (CONTRACT).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

const RUN_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl RunId {
    pub fn new(at: DateTime<Utc>) -> Self {
        let suffix: u32 = rand::rng().random_range(0..0x100_0000);
        Self(format!("{}-{suffix:06x}", at.format(RUN_TIME_FORMAT)))
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (time, suffix) = text.split_once('-')?;
        NaiveDateTime::parse_from_str(time, RUN_TIME_FORMAT).ok()?;
        (!suffix.is_empty()
            && suffix.len() <= 16
            && suffix.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| Self(text.to_owned()))
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        let time = self.0.split_once('-').map(|(t, _)| t).unwrap_or_default();
        NaiveDateTime::parse_from_str(time, RUN_TIME_FORMAT)
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RunId::parse(&text).ok_or_else(|| serde::de::Error::custom("not a run id"))
    }
}

/// An Entra object id (a GUID), lower-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(String);

impl ObjectId {
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text)
            .ok()
            .map(|u| Self(u.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ObjectId::parse(&text).ok_or_else(|| serde::de::Error::custom("not an object id (GUID)"))
    }
}

/// An opaque token id (case ids, request ids): letters, digits, `-_.`,
/// at most 128 characters, so nothing else can hide in one.
pub fn is_token_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_round_trip() {
        let a = RunId::new(
            DateTime::parse_from_rfc3339("2026-11-22T02:00:00Z")
                .expect("date")
                .with_timezone(&Utc),
        );
        let b = RunId::new(
            DateTime::parse_from_rfc3339("2026-11-23T02:00:00Z")
                .expect("date")
                .with_timezone(&Utc),
        );
        assert!(a < b);
        assert!(a.as_str().starts_with("20261122T020000Z-"));
        assert_eq!(RunId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.started_at().to_rfc3339(), "2026-11-22T02:00:00+00:00");
        for bad in [
            "",
            "20261122T020000Z",
            "2026-11-22-abc",
            "20261122T020000Z-a b",
            "x-y",
        ] {
            assert_eq!(RunId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn object_ids_are_normalised_guids() {
        assert_eq!(
            ObjectId::parse("5B3A1C2D-3333-4E4E-8F8F-0123456789AB").map(|o| o.to_string()),
            Some("5b3a1c2d-3333-4e4e-8f8f-0123456789ab".to_owned())
        );
        assert_eq!(ObjectId::parse("jane@contoso.com"), None);
    }

    #[test]
    fn token_ids_hold_nothing_but_safe_characters() {
        assert!(is_token_id("c-5b3a1c2d_20261122.1"));
        assert!(!is_token_id("jane doe"));
        assert!(!is_token_id("a@b"));
        assert!(!is_token_id(&"x".repeat(129)));
    }
}
