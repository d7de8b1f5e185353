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
//!
//! Per-subject index: a record naming a user (an object id) is appended
//! a second time, to `by-user/{objectId}.jsonl` (siblings
//! `by-user/{objectId}.1.jsonl`, … as for a day), in the same group commit
//! once its day's append succeeded, one append per subject per batch, the
//! subjects side by side; the caller hears Ok once both are durable. An
//! export reads that blob only, so its cost follows the subject's own
//! history, not the years of log. The day blobs stay the record: the index
//! holds copies of their lines and can be rebuilt from them
//! ([`AuditLog::reindex`], `dormant audit reindex`). Day blob names start
//! with a digit and the index lives under `by-user/`, so day listings
//! (prefix `yyyy-mm-dd.`, or a leading digit) never see it.
//!
//! The index may hold a line twice (a reindex racing live appends, an
//! index append retried after its day line was already indexed): a
//! subject's records are read back once each, identical records being one
//! record (each is stamped to the nanosecond).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use super::error::{ConflictKind, Result, StoreError};
use super::{AUDIT_CONTAINER, DEFAULT_BLOCK_SIZE, Store};
use crate::ids::ObjectId;

/// A day (or subject) with this many full siblings (50,000 blocks each) is
/// not a real log; stop rather than loop.
const MAX_SIBLINGS: u32 = 10_000;
/// Where the per-subject index lives in the audit container.
pub const SUBJECT_INDEX_PREFIX: &str = "by-user/";
/// Subjects whose index a batch (or a reindex) appends to at once.
const INDEX_CONCURRENCY: usize = 16;
/// Log text a reindex pass holds (its subjects' lines): the log is read
/// once per pass, each subject's index once in all.
const REINDEX_PASS_BYTES: u64 = 32 * 1024 * 1024;
/// Remembered rolled-over families (days, subjects); only the last few
/// days matter, and a subject rolls over almost never.
const MAX_REMEMBERED_SIBLINGS: usize = 64;

/// What became of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    /// The user the record is about, when it names one by object id (only
    /// those are indexed: an export is asked for by object id).
    pub fn subject(&self) -> Option<ObjectId> {
        self.user.as_deref().and_then(ObjectId::parse)
    }
}

/// Sibling 0 of a family is `{stem}.jsonl`, sibling n `{stem}.{n}.jsonl`.
fn family_blob_name(stem: &str, sibling: u32) -> String {
    if sibling == 0 {
        format!("{stem}.jsonl")
    } else {
        format!("{stem}.{sibling}.jsonl")
    }
}

fn day_stem(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn subject_stem(subject: &ObjectId) -> String {
    format!("{SUBJECT_INDEX_PREFIX}{subject}")
}

/// The blob name of a day's log: sibling 0 is `{date}.jsonl`, sibling n is
/// `{date}.{n}.jsonl`.
pub fn day_blob_name(date: NaiveDate, sibling: u32) -> String {
    family_blob_name(&day_stem(date), sibling)
}

/// The blob name of a subject's index: `by-user/{objectId}.jsonl`, then
/// `by-user/{objectId}.{n}.jsonl` once one is full.
pub fn subject_blob_name(subject: &ObjectId, sibling: u32) -> String {
    family_blob_name(&subject_stem(subject), sibling)
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
    /// Last sibling known to accept appends, per family stem (a day, a
    /// subject) past sibling 0, so a full blob is not retried on every
    /// record.
    current: Arc<Mutex<HashMap<String, u32>>>,
    group: Arc<GroupCommit>,
}

/// One record on its way: its day, its subject, its line.
struct Line {
    day: NaiveDate,
    subject: Option<ObjectId>,
    bytes: Bytes,
}

/// Lines waiting for the next append, and how to tell their caller.
struct Waiting {
    lines: Vec<Line>,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// What [`AuditLog::reindex`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reindexed {
    /// Days read (each with its siblings).
    pub days: usize,
    /// Passes over those days (each indexes a share of the subjects).
    pub passes: u64,
    /// Records that name a subject.
    pub records: u64,
    pub subjects: u64,
    /// Lines the index lacked and now holds.
    pub appended: u64,
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

    /// Appends one record; Ok means it is stored durably (see
    /// [`record_batch`](Self::record_batch)).
    pub async fn record(&self, record: &AuditRecord) -> Result<()> {
        self.record_batch(std::slice::from_ref(record)).await
    }

    /// Appends several records, contiguous and in order, one append per
    /// day touched (split further only if a day's lines pass the 4 MiB
    /// block limit), together with whatever other callers handed in
    /// meanwhile. Ok means every one of them is stored durably, in its
    /// day and, when it names a user, in the user's index.
    pub async fn record_batch(&self, records: &[AuditRecord]) -> Result<()> {
        let mut lines = Vec::with_capacity(records.len());
        for r in records {
            lines.push(Line {
                day: r.time.date_naive(),
                subject: r.subject(),
                bytes: Bytes::from(r.to_line()?),
            });
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
        // Empty: the batch before ours took our lines along (it lets the
        // writer go once its day lines are out, and answers after the
        // index), so its answer is ours.
        if !batch.is_empty() {
            // Its own task: a caller that goes away (a dropped HTTP
            // request) must not cancel an append the others wait for.
            let log = self.clone();
            tokio::spawn(async move { log.append_batch(batch, writer).await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Transient {
                what: format!("{}/audit", self.container),
                detail: "the audit append was interrupted".into(),
            })
        })
    }

    /// Appends the lines of `batch` by day, then the durable ones to their
    /// subjects' indexes, and answers each caller with the outcome of the
    /// appends that held its lines. The next batch may start on the days
    /// (`writer` goes) while this one is still on the indexes: days keep
    /// their order, and a subject's records are read back in time order
    /// whatever order its index holds them in.
    async fn append_batch(&self, batch: Vec<Waiting>, writer: tokio::sync::OwnedMutexGuard<()>) {
        let mut failed: Vec<Option<StoreError>> = (0..batch.len()).map(|_| None).collect();
        let mut by_day: Vec<(NaiveDate, Vec<(usize, &Line)>)> = Vec::new();
        for (who, waiting) in batch.iter().enumerate() {
            for line in &waiting.lines {
                match by_day.iter_mut().find(|(d, _)| *d == line.day) {
                    Some((_, lines)) => lines.push((who, line)),
                    None => by_day.push((line.day, vec![(who, line)])),
                }
            }
        }
        // The index gets a line only once the day holds it.
        let mut by_subject: Vec<(ObjectId, Vec<(usize, Bytes)>)> = Vec::new();
        let mut slot: HashMap<ObjectId, usize> = HashMap::new();
        for (day, lines) in by_day {
            let stem = day_stem(day);
            for chunk in chunks(lines, |(_, l)| l.bytes.len()) {
                let body: Vec<Bytes> = chunk.iter().map(|(_, l)| l.bytes.clone()).collect();
                if let Err(e) = self.append_family(&stem, &body).await {
                    for (who, _) in &chunk {
                        failed[*who].get_or_insert_with(|| e.clone());
                    }
                    continue;
                }
                for (who, line) in chunk {
                    let Some(subject) = &line.subject else {
                        continue;
                    };
                    let i = *slot.entry(subject.clone()).or_insert_with(|| {
                        by_subject.push((subject.clone(), Vec::new()));
                        by_subject.len() - 1
                    });
                    by_subject[i].1.push((who, line.bytes.clone()));
                }
            }
        }
        drop(writer);
        let indexed: Vec<(Vec<usize>, Result<()>)> = futures::stream::iter(by_subject)
            .map(|(subject, lines)| async move {
                let stem = subject_stem(&subject);
                let whos = lines.iter().map(|(who, _)| *who).collect();
                let mut result = Ok(());
                for chunk in chunks(lines, |(_, l)| l.len()) {
                    let body: Vec<Bytes> = chunk.into_iter().map(|(_, l)| l).collect();
                    result = self.append_family(&stem, &body).await;
                    if result.is_err() {
                        break;
                    }
                }
                (whos, result)
            })
            .buffer_unordered(INDEX_CONCURRENCY)
            .collect()
            .await;
        for (whos, result) in indexed {
            if let Err(e) = result {
                for who in whos {
                    failed[who].get_or_insert_with(|| e.clone());
                }
            }
        }
        for (waiting, error) in batch.into_iter().zip(failed) {
            // A caller that went away no longer listens; its lines are written.
            let _ = waiting.done.send(error.map_or(Ok(()), Err));
        }
    }

    /// Appends `lines` to the family `stem` (a day or a subject), moving on
    /// to the next sibling when a blob is full.
    async fn append_family(&self, stem: &str, lines: &[Bytes]) -> Result<()> {
        let mut sibling = self.cached_sibling(stem);
        let mut created_container = false;
        loop {
            let name = family_blob_name(stem, sibling);
            match self.store.append_batch(&self.container, &name, lines).await {
                Ok(()) => {
                    self.remember_sibling(stem, sibling);
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

    fn cached_sibling(&self, stem: &str) -> u32 {
        self.current
            .lock()
            .map(|m| m.get(stem).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn remember_sibling(&self, stem: &str, sibling: u32) {
        // Sibling 0 is where every family starts: nothing to remember.
        if sibling == 0 {
            return;
        }
        if let Ok(mut m) = self.current.lock() {
            if m.len() >= MAX_REMEMBERED_SIBLINGS && !m.contains_key(stem) {
                m.clear();
            }
            let e = m.entry(stem.to_owned()).or_insert(0);
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
            self.read_blob(&name, &mut out).await?;
        }
        Ok(out)
    }

    /// Every record about `subject`, oldest first, each once, read from
    /// its index only (a few hundred lines for a real user, whatever the
    /// size of the log). Lines the index lacks (written before it existed)
    /// come back after `dormant audit reindex`.
    pub async fn subject_records(&self, subject: &ObjectId) -> Result<Vec<AuditRecord>> {
        let mut out = Vec::new();
        // Siblings are created in order: the first one missing ends them.
        for sibling in 0..MAX_SIBLINGS {
            let name = subject_blob_name(subject, sibling);
            if !self.read_blob(&name, &mut out).await? {
                break;
            }
        }
        let mut seen = HashSet::with_capacity(out.len());
        out.retain(|r| seen.insert(r.clone()));
        out.sort_by_key(|r| r.time);
        Ok(out)
    }

    /// Appends `record` unless the log already holds it, and makes sure
    /// its subject's index holds it too: the retry of a step whose append
    /// failed, or whose process died between appending and saying so.
    /// The index is written after the day, so a record found there is in
    /// both.
    pub async fn ensure_recorded(&self, record: &AuditRecord) -> Result<()> {
        let subject = record.subject();
        if let Some(s) = &subject
            && self.subject_records(s).await?.contains(record)
        {
            return Ok(());
        }
        if !self
            .read_day(record.time.date_naive())
            .await?
            .contains(record)
        {
            return self.record(record).await;
        }
        match subject {
            Some(s) => {
                self.append_family(&subject_stem(&s), &[Bytes::from(record.to_line()?)])
                    .await
            }
            None => Ok(()),
        }
    }

    /// Reads one blob's records into `out`, streamed (a blob of any size
    /// passes through in bounded memory). `false` if it does not exist.
    async fn read_blob(&self, name: &str, out: &mut Vec<AuditRecord>) -> Result<bool> {
        let mut chunks = match self.store.get_stream(&self.container, name).await {
            Ok(s) => s,
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut skipped = 0usize;
        while let Some(chunk) = chunks.try_next().await? {
            pending.extend_from_slice(&chunk);
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            for line in pending[..end]
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
            {
                match serde_json::from_slice::<AuditRecord>(line) {
                    Ok(r) => out.push(r),
                    Err(_) => skipped += 1,
                }
            }
            pending.drain(..=end);
        }
        if skipped > 0 {
            tracing::warn!(blob = %name, skipped, "unreadable audit lines skipped");
        }
        Ok(true)
    }

    /// Every day with a log from `from` on (all days without), with the
    /// bytes its blobs hold. Listed by leading digit (or year), so the
    /// index under `by-user/` is never listed.
    async fn days(&self, from: Option<NaiveDate>) -> Result<Vec<(NaiveDate, u64)>> {
        let prefixes: Vec<String> = match from {
            Some(from) => (from.year()..=Utc::now().year() + 1)
                .map(|y| format!("{y:04}-"))
                .collect(),
            None => (0..10).map(|d| d.to_string()).collect(),
        };
        let mut days: HashMap<NaiveDate, u64> = HashMap::new();
        for prefix in prefixes {
            let listing = match self.store.list(&self.container, &prefix).await {
                Ok(l) => l,
                Err(StoreError::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            for blob in listing {
                let Some(day) = blob
                    .name
                    .get(..10)
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                else {
                    continue;
                };
                if sibling_of(day, &blob.name).is_some() && from.is_none_or(|f| day >= f) {
                    *days.entry(day).or_default() += blob.size;
                }
            }
        }
        let mut days: Vec<(NaiveDate, u64)> = days.into_iter().collect();
        days.sort();
        Ok(days)
    }

    /// Puts every record of the day logs (from `from` on) that names a
    /// subject into that subject's index, unless the index holds it
    /// already: the backfill for lines written before the index existed,
    /// and the repair after an index append that failed. Idempotent, and
    /// safe beside live appends (a line both add is read back once).
    ///
    /// Bounded memory: subjects are split into passes of about
    /// [`REINDEX_PASS_BYTES`] of log text each; every pass reads the log
    /// once and holds only its own subjects' lines, so each subject's
    /// index is read and appended to once in all.
    pub async fn reindex(&self, from: Option<NaiveDate>) -> Result<Reindexed> {
        self.reindex_in_passes(from, REINDEX_PASS_BYTES).await
    }

    async fn reindex_in_passes(
        &self,
        from: Option<NaiveDate>,
        pass_bytes: u64,
    ) -> Result<Reindexed> {
        let days = self.days(from).await?;
        let bytes: u64 = days.iter().map(|(_, b)| b).sum();
        let passes = bytes.div_ceil(pass_bytes.max(1)).max(1);
        let mut done = Reindexed {
            days: days.len(),
            passes,
            ..Reindexed::default()
        };
        for pass in 0..passes {
            let mut by_subject: HashMap<ObjectId, Vec<AuditRecord>> = HashMap::new();
            for (day, _) in &days {
                for record in self.read_day(*day).await? {
                    let Some(subject) = record.subject() else {
                        continue;
                    };
                    if shard(&subject, passes) == pass {
                        by_subject.entry(subject).or_default().push(record);
                    }
                }
            }
            done.subjects += by_subject.len() as u64;
            done.records += by_subject.values().map(|r| r.len() as u64).sum::<u64>();
            let appended: Vec<Result<u64>> = futures::stream::iter(by_subject)
                .map(|(subject, records)| self.index_missing(subject, records))
                .buffer_unordered(INDEX_CONCURRENCY)
                .collect()
                .await;
            for n in appended {
                done.appended += n?;
            }
        }
        Ok(done)
    }

    /// Appends to `subject`'s index those of `records` it lacks, in order.
    async fn index_missing(&self, subject: ObjectId, records: Vec<AuditRecord>) -> Result<u64> {
        let mut held: HashSet<AuditRecord> =
            self.subject_records(&subject).await?.into_iter().collect();
        let mut lines = Vec::new();
        for record in records {
            let line = Bytes::from(record.to_line()?);
            if held.insert(record) {
                lines.push(line);
            }
        }
        let appended = lines.len() as u64;
        let stem = subject_stem(&subject);
        for chunk in chunks(lines, Bytes::len) {
            self.append_family(&stem, &chunk).await?;
        }
        Ok(appended)
    }
}

/// Splits `items` into runs of at most 4 MiB (Azure's Append Block
/// limit), keeping their order; one item larger than that stays alone.
fn chunks<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = vec![Vec::new()];
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        let chunk = out.last_mut().expect("never empty");
        if bytes + n > DEFAULT_BLOCK_SIZE && !chunk.is_empty() {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += n;
        out.last_mut().expect("never empty").push(item);
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Which reindex pass handles `subject`: object ids are random GUIDs, so
/// their value spreads subjects evenly.
fn shard(subject: &ObjectId, passes: u64) -> u64 {
    let value = uuid::Uuid::parse_str(subject.as_str()).map_or(0, |u| u.as_u128());
    (value % u128::from(passes)) as u64
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

    const ALICE: &str = "5b3a1c2d-3333-4e4e-8f8f-0123456789ab";
    const BOB: &str = "6c4b2d3e-4444-4f4f-9a9a-123456789abc";

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 11, day)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("time")
            .and_utc()
    }

    fn about(user: Option<&str>, step: &str, time: DateTime<Utc>) -> AuditRecord {
        let mut r = AuditRecord::new(step, Outcome::Done);
        r.time = time;
        r.user = user.map(str::to_owned);
        r
    }

    fn local() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        (Store::local(dir.path()).expect("store"), dir)
    }

    fn subject(id: &str) -> ObjectId {
        ObjectId::parse(id).expect("object id")
    }

    /// What an export reads: the subject's index, in time order, each
    /// record once, whatever else the day logs hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subject_s_records_come_from_its_index() {
        let (store, _dir) = local();
        let log = AuditLog::new(store.clone());
        let upper = ALICE.to_ascii_uppercase();
        let records = [
            about(Some(ALICE), "notify", at(22, 2)),
            about(Some(BOB), "notify", at(22, 3)),
            about(None, "malformed-message", at(22, 4)),
            about(Some("user-7"), "disable", at(22, 5)),
            about(Some(&upper), "disable", at(23, 1)),
        ];
        log.record_batch(&records[1..]).await.expect("batch");
        log.record(&records[0]).await.expect("record");
        let alice = log.subject_records(&subject(ALICE)).await.expect("read");
        assert_eq!(
            alice,
            vec![records[0].clone(), records[4].clone()],
            "oldest first"
        );
        let bob = log.subject_records(&subject(BOB)).await.expect("read");
        assert_eq!(bob, vec![records[1].clone()]);
        let names: Vec<String> = store
            .list(AUDIT_CONTAINER, "")
            .await
            .expect("list")
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(
            names,
            [
                "2026-11-22.jsonl".to_owned(),
                "2026-11-23.jsonl".to_owned(),
                format!("by-user/{ALICE}.jsonl"),
                format!("by-user/{BOB}.jsonl"),
            ]
        );
        // The day logs are untouched by the index.
        assert_eq!(
            log.read_day(at(22, 0).date_naive())
                .await
                .expect("day")
                .len(),
            4
        );
        // A line the index holds twice is read back once.
        store
            .append(
                AUDIT_CONTAINER,
                &subject_blob_name(&subject(BOB), 0),
                Bytes::from(records[1].to_line().expect("line")),
            )
            .await
            .expect("append");
        assert_eq!(log.subject_records(&subject(BOB)).await.expect("read"), bob);
    }

    /// A log written before the index existed: exports see none of it
    /// until `reindex`, which adds each line once, however often it runs
    /// and in however many passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reindex_backfills_an_old_log_once() {
        let (store, _dir) = local();
        store
            .ensure_container(AUDIT_CONTAINER)
            .await
            .expect("container");
        let mut old = Vec::new();
        for day in 1..=20u32 {
            let mut lines = Vec::new();
            for (i, user) in [ALICE, BOB, "not-an-id"].iter().enumerate() {
                let r = about(Some(user), "notify", at(day, i as u32));
                lines.push(Bytes::from(r.to_line().expect("line")));
                old.push(r);
            }
            store
                .append_batch(
                    AUDIT_CONTAINER,
                    &day_blob_name(at(day, 0).date_naive(), 0),
                    &lines,
                )
                .await
                .expect("old day");
        }
        let log = AuditLog::new(store.clone());
        assert!(
            log.subject_records(&subject(ALICE))
                .await
                .expect("read")
                .is_empty()
        );
        // Written since the index exists: indexed already.
        let live = about(Some(ALICE), "disable", at(21, 0));
        log.record(&live).await.expect("record");

        let done = log.reindex_in_passes(None, 512).await.expect("reindex");
        assert!(done.passes > 1, "{done:?}");
        assert_eq!((done.days, done.subjects), (21, 2), "{done:?}");
        assert_eq!(done.appended, 40, "the old lines only: {done:?}");
        let mut want: Vec<AuditRecord> = old
            .iter()
            .filter(|r| r.user.as_deref() == Some(ALICE))
            .cloned()
            .collect();
        want.push(live);
        assert_eq!(
            log.subject_records(&subject(ALICE)).await.expect("read"),
            want
        );

        let again = log.reindex(None).await.expect("again");
        assert_eq!((again.appended, again.records), (0, 41), "{again:?}");
        let from = log
            .reindex(Some(at(15, 0).date_naive()))
            .await
            .expect("from a day on");
        assert_eq!((from.days, from.appended), (7, 0), "{from:?}");
        let index = store
            .get(AUDIT_CONTAINER, &subject_blob_name(&subject(ALICE), 0))
            .await
            .expect("index");
        assert_eq!(
            index.body.iter().filter(|b| **b == b'\n').count(),
            21,
            "no line twice"
        );
    }

    /// The retry of a step whose append failed, or whose process died
    /// after it: the line ends up once in the day and once in the index.
    #[tokio::test]
    async fn ensure_recorded_writes_what_is_missing_and_nothing_twice() {
        let (store, _dir) = local();
        let log = AuditLog::new(store.clone());
        let count =
            |records: &[AuditRecord], r: &AuditRecord| records.iter().filter(|x| *x == r).count();
        // Nowhere yet: appended to both.
        let fresh = about(Some(ALICE), "gdpr-delete-user", at(22, 1));
        log.ensure_recorded(&fresh).await.expect("ensure");
        // In the day but not in the index (the index append failed).
        let day_only = about(Some(ALICE), "gdpr-purge-user", at(22, 2));
        store
            .append(
                AUDIT_CONTAINER,
                &day_blob_name(at(22, 0).date_naive(), 0),
                Bytes::from(day_only.to_line().expect("line")),
            )
            .await
            .expect("append");
        log.ensure_recorded(&day_only).await.expect("ensure");
        // Already in both.
        log.ensure_recorded(&fresh).await.expect("ensure");
        // About nobody in particular.
        let anonymous = about(None, "malformed-message", at(22, 3));
        log.ensure_recorded(&anonymous).await.expect("ensure");
        log.ensure_recorded(&anonymous).await.expect("ensure");

        let day = log.read_day(at(22, 0).date_naive()).await.expect("day");
        let index = log.subject_records(&subject(ALICE)).await.expect("index");
        for r in [&fresh, &day_only] {
            assert_eq!((count(&day, r), count(&index, r)), (1, 1), "{}", r.step);
        }
        assert_eq!(count(&day, &anonymous), 1);
        let raw = store
            .get(AUDIT_CONTAINER, &subject_blob_name(&subject(ALICE), 0))
            .await
            .expect("index");
        assert_eq!(raw.body.iter().filter(|b| **b == b'\n').count(), 2);
    }
}
