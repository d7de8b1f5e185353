//! The audit log: one JSON line per action and per GDPR request, appended to
//! `dormant-audit/{yyyy-mm-dd}.jsonl` (UTC date of the record's `time`).
//!
//! Records carry object ids and short codes only, never names, UPNs or
//! emails: the log is exported to the data subject and kept for years.
//!
//! Azure caps an append blob at 50,000 blocks. When a day's blob is full the
//! log continues in numbered siblings, `{date}.1.jsonl`, `{date}.2.jsonl`, …;
//! [`AuditLog::read_day`] reads the base file and every sibling, in order.
//! A record that cannot be written is an error: the action that needed it
//! must fail rather than happen unrecorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ConflictKind, Result, StoreError};
use super::{AUDIT_CONTAINER, DEFAULT_BLOCK_SIZE, Store};

/// A day with this many full siblings (50,000 blocks each) is not a real
/// day's log; stop rather than loop.
const MAX_SIBLINGS: u32 = 10_000;

/// What became of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The step ran and changed what it meant to change.
    Done,
    /// Nothing to do (already done, idempotent repeat, dry run).
    Skipped,
    /// The case was cancelled before the step (user active again, excluded…).
    Cancelled,
    /// A request was accepted for later processing (GDPR erasure).
    Accepted,
    /// The step failed; `error` says why.
    Failed,
}

/// One line of the audit log. Optional fields are left out when `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    /// Run id (`20261122T020000Z-abcd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Case id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// The user's directory object id (never a UPN or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The step: `notify`, `disable`, `gdpr-export`, `malformed-message`, …
    pub step: String,
    pub outcome: Outcome,
    /// A short error code or message, free of personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// GDPR request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// A short machine-readable detail code (`already-disabled`, `group-license`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditRecord {
    /// A record stamped now with the required fields; set the rest directly.
    pub fn new(step: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            time: Utc::now(),
            run: None,
            case: None,
            user: None,
            step: step.into(),
            outcome,
            error: None,
            request_id: None,
            detail: None,
        }
    }

    /// The record as one JSON line, newline included. JSON escapes control
    /// characters, so a record can never span two lines.
    pub fn to_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self)
            .map_err(|e| StoreError::permanent("audit record", format!("cannot serialize: {e}")))?;
        line.push(b'\n');
        Ok(line)
    }
}

/// The blob name of a day's log: sibling 0 is `{date}.jsonl`, sibling n is
/// `{date}.{n}.jsonl`.
pub fn day_blob_name(date: NaiveDate, sibling: u32) -> String {
    if sibling == 0 {
        format!("{}.jsonl", date.format("%Y-%m-%d"))
    } else {
        format!("{}.{sibling}.jsonl", date.format("%Y-%m-%d"))
    }
}

/// Which sibling a blob name is for `date`, if it is one of that day's files.
fn sibling_of(date: NaiveDate, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(&date.format("%Y-%m-%d").to_string())?;
    if rest == ".jsonl" {
        return Some(0);
    }
    let n = rest.strip_prefix('.')?.strip_suffix(".jsonl")?;
    n.parse().ok().filter(|n| *n > 0)
}

/// Appends records to the audit container. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    container: String,
    /// Last sibling known to accept appends, per day, so a full day's blob
    /// is not retried on every record.
    current: Arc<Mutex<HashMap<NaiveDate, u32>>>,
}

impl AuditLog {
    /// The log in `dormant-audit`.
    pub fn new(store: Store) -> Self {
        Self::in_container(store, AUDIT_CONTAINER)
    }

    /// The log in another container (tests use unique names).
    pub fn in_container(store: Store, container: impl Into<String>) -> Self {
        Self {
            store,
            container: container.into(),
            current: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Appends one record; Ok means it is stored durably.
    pub async fn record(&self, record: &AuditRecord) -> Result<()> {
        self.record_batch(std::slice::from_ref(record)).await
    }

    /// Appends several records, one append per day touched (split further
    /// only if a day's lines pass the 4 MiB block limit).
    pub async fn record_batch(&self, records: &[AuditRecord]) -> Result<()> {
        let mut by_day: Vec<(NaiveDate, Vec<Bytes>)> = Vec::new();
        for r in records {
            let day = r.time.date_naive();
            let line = Bytes::from(r.to_line()?);
            match by_day.iter_mut().find(|(d, _)| *d == day) {
                Some((_, lines)) => lines.push(line),
                None => by_day.push((day, vec![line])),
            }
        }
        for (day, lines) in by_day {
            let mut chunk: Vec<Bytes> = Vec::new();
            let mut size = 0;
            for line in lines {
                if size + line.len() > DEFAULT_BLOCK_SIZE && !chunk.is_empty() {
                    self.append_day(day, &std::mem::take(&mut chunk)).await?;
                    size = 0;
                }
                size += line.len();
                chunk.push(line);
            }
            if !chunk.is_empty() {
                self.append_day(day, &chunk).await?;
            }
        }
        Ok(())
    }

    async fn append_day(&self, day: NaiveDate, lines: &[Bytes]) -> Result<()> {
        let mut sibling = self.cached_sibling(day);
        let mut created_container = false;
        loop {
            let name = day_blob_name(day, sibling);
            match self.store.append_batch(&self.container, &name, lines).await {
                Ok(()) => {
                    self.remember_sibling(day, sibling);
                    return Ok(());
                }
                Err(StoreError::Conflict {
                    kind: ConflictKind::AppendBlobFull,
                    ..
                }) if sibling < MAX_SIBLINGS => {
                    tracing::info!(blob = %name, "audit blob full; continuing in the next sibling");
                    sibling += 1;
                }
                // The container is created at start-up; create it here too
                // rather than lose a record to a missing folder.
                Err(StoreError::NotFound { .. }) if !created_container => {
                    created_container = true;
                    self.store.ensure_container(&self.container).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn cached_sibling(&self, day: NaiveDate) -> u32 {
        self.current
            .lock()
            .map(|m| m.get(&day).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn remember_sibling(&self, day: NaiveDate, sibling: u32) {
        if let Ok(mut m) = self.current.lock() {
            // Keep the map small: only recent days matter.
            if m.len() > 8 {
                m.clear();
            }
            let e = m.entry(day).or_insert(0);
            *e = (*e).max(sibling);
        }
    }

    /// Every record of a UTC day, base blob first, then its siblings in
    /// order. Missing day: empty. A trailing line without newline (a write
    /// in flight on the local store) is left out; unreadable lines are
    /// skipped with a warning (their content is not logged).
    pub async fn read_day(&self, date: NaiveDate) -> Result<Vec<AuditRecord>> {
        let prefix = date.format("%Y-%m-%d.").to_string();
        let listing = match self.store.list(&self.container, &prefix).await {
            Ok(l) => l,
            Err(StoreError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files: Vec<(u32, String)> = listing
            .into_iter()
            .filter_map(|b| sibling_of(date, &b.name).map(|n| (n, b.name)))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for (_, name) in files {
            let blob = match self.store.get(&self.container, &name).await {
                Ok(b) => b,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let body = blob.body.as_ref();
            let complete = match body.iter().rposition(|b| *b == b'\n') {
                Some(i) => &body[..=i],
                None => &[][..],
            };
            let mut skipped = 0usize;
            for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<AuditRecord>(line) {
                    Ok(r) => out.push(r),
                    Err(_) => skipped += 1,
                }
            }
            if skipped > 0 {
                tracing::warn!(blob = %name, skipped, "unreadable audit lines skipped");
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_fields_are_left_out_and_one_line_per_record() {
        let mut r = AuditRecord::new("disable", Outcome::Done);
        r.time = DateTime::parse_from_rfc3339("2026-11-22T02:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        r.user = Some("0b1c2d3e-0000-4000-8000-000000000001".into());
        let line = String::from_utf8(r.to_line().expect("line")).expect("utf8");
        assert_eq!(
            line,
            "{\"time\":\"2026-11-22T02:00:00Z\",\"user\":\"0b1c2d3e-0000-4000-8000-000000000001\",\"step\":\"disable\",\"outcome\":\"done\"}\n"
        );
        r.error = Some("line one\nline two".into());
        r.request_id = Some("req-1".into());
        let line = String::from_utf8(r.to_line().expect("line")).expect("utf8");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains("\"requestId\":\"req-1\""));
        let back: AuditRecord = serde_json::from_str(line.trim_end()).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn sibling_names_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        assert_eq!(day_blob_name(d, 0), "2026-11-22.jsonl");
        assert_eq!(day_blob_name(d, 3), "2026-11-22.3.jsonl");
        assert_eq!(sibling_of(d, "2026-11-22.jsonl"), Some(0));
        assert_eq!(sibling_of(d, "2026-11-22.12.jsonl"), Some(12));
        assert_eq!(sibling_of(d, "2026-11-22.0.jsonl"), None);
        assert_eq!(sibling_of(d, "2026-11-22.x.jsonl"), None);
        assert_eq!(sibling_of(d, "2026-11-23.jsonl"), None);
    }
}
