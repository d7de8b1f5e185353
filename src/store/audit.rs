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
//!
//! Group commit: records handed in while an append is in flight wait for
//! it to finish and then go out together in one append per day (one Append
//! Block on Azure, one write and one fdatasync locally), each caller
//! answered only once its own lines are durable. Under load every request
//! still waits for its own record, but the log costs one round trip per
//! batch, not per record, and a day's 50,000 blocks last that much longer.

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
    /// Some parts were done and some refused (a restore without a free
    /// seat for one license): `detail` says what was done, `error` what not.
    Partial,
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

/// Appends records to the audit container. Cheap to clone; clones share
/// one group commit.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    container: String,
    /// Last sibling known to accept appends, per day, so a full day's blob
    /// is not retried on every record.
    current: Arc<Mutex<HashMap<NaiveDate, u32>>>,
    group: Arc<GroupCommit>,
}

/// Lines waiting for the next append, and how to tell their caller.
struct Waiting {
    lines: Vec<(NaiveDate, Bytes)>,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

#[derive(Default)]
struct GroupCommit {
    waiting: Mutex<Vec<Waiting>>,
    /// Held by the one batch being appended.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
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
            group: Arc::new(GroupCommit::default()),
        }
    }

    /// Appends one record; Ok means it is stored durably.
    pub async fn record(&self, record: &AuditRecord) -> Result<()> {
        self.record_batch(std::slice::from_ref(record)).await
    }

    /// Appends several records, contiguous and in order, one append per
    /// day touched (split further only if a day's lines pass the 4 MiB
    /// block limit), together with whatever other callers handed in
    /// meanwhile. Ok means every one of them is stored durably.
    pub async fn record_batch(&self, records: &[AuditRecord]) -> Result<()> {
        let mut lines = Vec::with_capacity(records.len());
        for r in records {
            lines.push((r.time.date_naive(), Bytes::from(r.to_line()?)));
        }
        if lines.is_empty() {
            return Ok(());
        }
        let (done, mut answer) = tokio::sync::oneshot::channel();
        self.group
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Waiting { lines, done });
        let writer = self.group.writer.clone().lock_owned().await;
        // The batch before ours may have taken our lines along: it answers
        // before it lets the writer go.
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        let batch = std::mem::take(
            &mut *self
                .group
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Its own task: a caller that goes away (a dropped HTTP request)
        // must not cancel an append the others wait for.
        let log = self.clone();
        tokio::spawn(async move {
            log.append_batch(batch).await;
            drop(writer);
        });
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Transient {
                what: format!("{}/audit", self.container),
                detail: "the audit append was interrupted".into(),
            })
        })
    }

    /// Appends the lines of `batch` by day and answers each caller with the
    /// outcome of the appends that held its lines.
    async fn append_batch(&self, batch: Vec<Waiting>) {
        let mut failed: Vec<Option<StoreError>> = (0..batch.len()).map(|_| None).collect();
        let mut by_day: Vec<(NaiveDate, Vec<(usize, Bytes)>)> = Vec::new();
        for (who, waiting) in batch.iter().enumerate() {
            for (day, line) in &waiting.lines {
                match by_day.iter_mut().find(|(d, _)| d == day) {
                    Some((_, lines)) => lines.push((who, line.clone())),
                    None => by_day.push((*day, vec![(who, line.clone())])),
                }
            }
        }
        for (day, lines) in by_day {
            let mut chunks: Vec<Vec<(usize, Bytes)>> = vec![Vec::new()];
            let mut size = 0;
            for (who, line) in lines {
                let chunk = chunks.last_mut().expect("never empty");
                if size + line.len() > DEFAULT_BLOCK_SIZE && !chunk.is_empty() {
                    chunks.push(Vec::new());
                    size = 0;
                }
                size += line.len();
                chunks.last_mut().expect("never empty").push((who, line));
            }
            for chunk in chunks {
                let body: Vec<Bytes> = chunk.iter().map(|(_, l)| l.clone()).collect();
                if let Err(e) = self.append_day(day, &body).await {
                    for (who, _) in &chunk {
                        failed[*who].get_or_insert_with(|| e.clone());
                    }
                }
            }
        }
        for (waiting, error) in batch.into_iter().zip(failed) {
            // A caller that went away no longer listens; its lines are written.
            let _ = waiting.done.send(error.map_or(Ok(()), Err));
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_all_written_and_a_failure_reaches_every_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        let log = AuditLog::in_container(store.clone(), "audit-group");
        let writers = (0..64).map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut r = AuditRecord::new("gdpr-erase-request", Outcome::Accepted);
                r.request_id = Some(format!("req-{i}"));
                log.record(&r).await
            })
        });
        for w in writers {
            w.await.expect("task").expect("recorded");
        }
        let day = Utc::now().date_naive();
        let mut ids: Vec<String> = log
            .read_day(day)
            .await
            .expect("read")
            .into_iter()
            .filter_map(|r| r.request_id)
            .collect();
        assert_eq!(ids.len(), 64, "every record");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 64, "each record once");

        // A container that cannot exist: every waiting caller hears it.
        let broken = AuditLog::in_container(store, "Not_A_Container");
        let writers = (0..16).map(|_| {
            let log = broken.clone();
            tokio::spawn(async move {
                log.record(&AuditRecord::new("disable", Outcome::Done))
                    .await
            })
        });
        for w in writers {
            assert!(w.await.expect("task").is_err(), "no caller is told Ok");
        }
    }
}
