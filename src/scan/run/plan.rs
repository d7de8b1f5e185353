//! The partition plan of a run: partitions scanned concurrently and
//! recorded one by one (create-only, so a redelivered message counts
//! nobody twice), splits handed on before they are recorded, and the
//! coverage walk from the roots that proves every user was covered once.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Progress, ScanError, Scanner, StepOutcome, run_path, short_random};
use crate::ids::RunId;
use crate::policy::UsageIndex;
use crate::scan::context::RunContext;
use crate::scan::message::{PARTITIONS_PER_MESSAGE, ScanMessage};
use crate::scan::partition::Partition;
use crate::scan::worker::{PART_BLOCK, PartitionResult, RowSink, scan_partition};
use crate::store::{BlobWriter, Precondition, STATE_CONTAINER, Store, StoreError};

/// A leaf partition's record: its result and where its rows are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Recorded {
    #[serde(flatten)]
    pub(super) result: PartitionResult,
    /// `None` when the partition holds no row.
    pub(super) rows_blob: Option<String>,
}

pub(super) fn parts_prefix(run: &RunId) -> String {
    run_path(run, "parts/")
}

pub(super) fn leaf_blob(run: &RunId, p: &Partition) -> String {
    run_path(run, &format!("parts/{}.json", p.key()))
}

pub(super) fn split_blob(run: &RunId, p: &Partition) -> String {
    run_path(run, &format!("parts/{}.split.json", p.key()))
}

pub(super) fn rows_blob(run: &RunId, p: &Partition, attempt: &str) -> String {
    run_path(run, &format!("parts/{}.{attempt}.csv", p.key()))
}

/// What the records say about the partition tree.
#[derive(Debug, Default)]
pub(super) struct Recordings {
    pub(super) leaves: BTreeSet<String>,
    pub(super) splits: BTreeSet<String>,
}

impl Recordings {
    /// Walks from the roots: a leaf covers its prefix, a split hands it to
    /// its children. A leaf wins over a split of the same partition (two
    /// attempts saw different sizes), so nobody is counted twice.
    pub(super) fn walk(&self) -> (Vec<Partition>, Vec<Partition>) {
        let mut queue: VecDeque<Partition> = Partition::roots().into();
        let (mut leaves, mut missing) = (Vec::new(), Vec::new());
        while let Some(p) = queue.pop_front() {
            let key = p.key();
            if self.leaves.contains(&key) {
                leaves.push(p);
            } else if self.splits.contains(&key) {
                queue.extend(p.children());
            } else {
                missing.push(p);
            }
        }
        leaves.sort();
        (leaves, missing)
    }
}

/// Rows of a partition, streamed to a part blob opened on the first row
/// (most partitions of a big tenant have rows; many small ones have none).
pub(super) struct LazyBlobSink {
    pub(super) store: Store,
    pub(super) name: String,
    pub(super) writer: Option<BlobWriter>,
}

impl RowSink for LazyBlobSink {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.writer.is_none() {
            self.writer = Some(
                self.store
                    .upload_with_block_size(
                        STATE_CONTAINER,
                        &self.name,
                        Precondition::None,
                        PART_BLOCK,
                    )
                    .await?,
            );
        }
        match self.writer.as_mut() {
            Some(w) => w.write(&bytes).await,
            None => unreachable!("the writer was just opened"),
        }
    }

    /// An unfinished upload commits nothing: dropping it drops the rows.
    fn restart(&mut self) {
        self.writer = None;
    }
}

/// Where the children of a split go.
#[derive(Clone)]
pub(super) enum Children {
    /// Scanned by this process (the CLI).
    Local,
    /// Queued for any instance, before the split is recorded (so a crash in
    /// between re-splits and re-queues rather than losing them).
    Queue { tenant: String },
}

pub(super) enum Attempt {
    Recorded(Box<PartitionResult>),
    /// Already recorded by someone else before we started.
    AlreadyDone,
    /// Not started: the time budget ran out.
    Deferred(Partition),
}

/// Every partition record of the run, from one listing.
pub(super) async fn recordings(store: &Store, run: &RunId) -> Result<Recordings, ScanError> {
    let prefix = parts_prefix(run);
    let mut rec = Recordings::default();
    for blob in store.list(STATE_CONTAINER, &prefix).await? {
        let name = &blob.name[prefix.len()..];
        if let Some(key) = name.strip_suffix(".split.json") {
            rec.splits.insert(key.to_owned());
        } else if let Some(key) = name.strip_suffix(".json") {
            rec.leaves.insert(key.to_owned());
        }
    }
    Ok(rec)
}

impl Scanner {
    pub(super) async fn recordings(&self, run: &RunId) -> Result<Recordings, ScanError> {
        recordings(&self.store, run).await
    }

    /// Whether `p` has a record already (a redelivered message).
    pub(super) async fn is_recorded(&self, run: &RunId, p: &Partition) -> Result<bool, ScanError> {
        let prefix = run_path(run, &format!("parts/{}.", p.key()));
        Ok(self
            .store
            .list(STATE_CONTAINER, &prefix)
            .await?
            .iter()
            .any(|b| b.name.ends_with(".json")))
    }

    /// Queues `partitions` a few per message.
    pub(super) async fn hand_on(
        &self,
        run: &RunId,
        tenant: &str,
        partitions: &[Partition],
    ) -> Result<(), ScanError> {
        for chunk in partitions.chunks(PARTITIONS_PER_MESSAGE) {
            self.send(&ScanMessage::partitions(tenant, run, chunk), None)
                .await?;
        }
        Ok(())
    }

    /// Scans one partition and records it: rows first, then the result,
    /// create-only (an earlier attempt's record stands; ours is dropped).
    /// The children of a split are handed on before the split is recorded.
    pub async fn scan_and_record(
        &self,
        run: &RunId,
        ctx: &RunContext,
        usage: Option<&UsageIndex>,
        partition: &Partition,
    ) -> Result<PartitionResult, ScanError> {
        self.scan_and_record_with(run, ctx, usage, partition, &Children::Local)
            .await
    }

    pub(super) async fn scan_and_record_with(
        &self,
        run: &RunId,
        ctx: &RunContext,
        usage: Option<&UsageIndex>,
        partition: &Partition,
        children: &Children,
    ) -> Result<PartitionResult, ScanError> {
        let mut sink = LazyBlobSink {
            store: self.store.clone(),
            name: rows_blob(run, partition, &short_random()),
            writer: None,
        };
        let result =
            scan_partition(&self.graph, &self.config, ctx, usage, partition, &mut sink).await?;
        if !result.split.is_empty() {
            if let Children::Queue { tenant } = children {
                self.hand_on(run, tenant, &result.split).await?;
            }
            return match self
                .put_json(
                    &split_blob(run, partition),
                    &result,
                    Precondition::IfNoneMatch,
                )
                .await
            {
                Err(ScanError::Store(e)) if e.is_conflict() => Ok(result),
                other => other.map(|_| result),
            };
        }
        let rows_name = match sink.writer.take() {
            Some(writer) => {
                writer.finish().await?;
                Some(sink.name.clone())
            }
            None => None,
        };
        let record = Recorded {
            result,
            rows_blob: rows_name.clone(),
        };
        match self
            .put_json(
                &leaf_blob(run, partition),
                &record,
                Precondition::IfNoneMatch,
            )
            .await
        {
            Ok(_) => Ok(record.result),
            Err(ScanError::Store(e)) if e.is_conflict() => {
                tracing::info!(partition = %partition.key(), "partition recorded by another attempt first; keeping that record");
                if let Some(name) = rows_name
                    && let Err(e) = self.store.delete(STATE_CONTAINER, &name).await
                {
                    tracing::debug!(error = %e, "could not delete a superseded rows blob");
                }
                let (winner, _) = self
                    .get_json::<Recorded>(&leaf_blob(run, partition))
                    .await?
                    .ok_or_else(|| ScanError::State("a recorded partition vanished".into()))?;
                Ok(winner.result)
            }
            Err(e) => Err(e),
        }
    }

    /// Scans `work` and, locally or through the queue, the children of
    /// whatever splits. With a deadline, partitions not started by then are
    /// handed to a continuation message (at least one is always started, so
    /// every invocation makes progress).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn scan_partitions(
        &self,
        run: &RunId,
        ctx: Arc<RunContext>,
        usage: Arc<Option<UsageIndex>>,
        work: Vec<Partition>,
        slots: &Arc<Semaphore>,
        deadline: Option<Instant>,
        children: Children,
        progress: Arc<dyn Progress>,
    ) -> Result<StepOutcome, ScanError> {
        let mut queue: VecDeque<Partition> = work.into();
        let mut running: JoinSet<Result<Attempt, ScanError>> = JoinSet::new();
        let started = Arc::new(AtomicBool::new(false));
        let mut outcome = StepOutcome::default();
        let mut deferred = Vec::new();
        let check_first = matches!(children, Children::Queue { .. });
        loop {
            while let Some(p) = queue.pop_front() {
                let (me, run, ctx, usage) = (self.clone(), run.clone(), ctx.clone(), usage.clone());
                let (slots, started, children) = (slots.clone(), started.clone(), children.clone());
                running.spawn(async move {
                    let _slot = slots
                        .acquire_owned()
                        .await
                        .map_err(|_| ScanError::State("partition slots closed".into()))?;
                    if deadline.is_some_and(|d| Instant::now() >= d)
                        && started.load(Ordering::SeqCst)
                    {
                        return Ok(Attempt::Deferred(p));
                    }
                    started.store(true, Ordering::SeqCst);
                    if check_first && me.is_recorded(&run, &p).await? {
                        return Ok(Attempt::AlreadyDone);
                    }
                    me.scan_and_record_with(&run, &ctx, usage.as_ref().as_ref(), &p, &children)
                        .await
                        .map(|r| Attempt::Recorded(Box::new(r)))
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined.map_err(|e| ScanError::State(format!("partition task: {e}")))?? {
                Attempt::Recorded(result) => {
                    outcome.scanned += 1;
                    progress.partitions_added(result.split.len());
                    progress.partition_done(result.stats.scanned, result.rows);
                    match &children {
                        Children::Local => queue.extend(result.split),
                        Children::Queue { .. } => outcome.handed_on += result.split.len(),
                    }
                }
                Attempt::AlreadyDone => {}
                Attempt::Deferred(p) => deferred.push(p),
            }
        }
        if !deferred.is_empty() {
            deferred.sort();
            tracing::info!(run = %run, left = deferred.len(), "time budget spent; handing the rest to a continuation message");
            let tenant = match &children {
                Children::Queue { tenant } => tenant.clone(),
                Children::Local => self.config.tenant_id.clone(),
            };
            self.hand_on(run, &tenant, &deferred).await?;
            outcome.handed_on += deferred.len();
        }
        Ok(outcome)
    }

    /// Every leaf of the run, walking from the roots through the splits:
    /// proof that the whole user set was covered exactly once.
    pub(super) async fn covered(&self, run: &RunId) -> Result<Vec<Partition>, ScanError> {
        let (leaves, missing) = self.recordings(run).await?.walk();
        if !missing.is_empty() {
            return Err(ScanError::Incomplete(missing.len()));
        }
        Ok(leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_walk_prefers_a_leaf_and_lists_what_is_missing() {
        let a = Partition { prefix: "a".into() };
        let mut rec = Recordings::default();
        for p in Partition::roots() {
            if p != a {
                rec.leaves.insert(p.key());
            }
        }
        rec.splits.insert(a.key());
        let (_, missing) = rec.walk();
        assert_eq!(
            missing,
            a.children(),
            "a split hands its prefix to its children"
        );
        for c in a.children() {
            rec.leaves.insert(c.key());
        }
        let (leaves, missing) = rec.walk();
        assert!(missing.is_empty());
        assert_eq!(
            leaves.len(),
            Partition::roots().len() - 1 + a.children().len()
        );
        // Another attempt recorded `a` whole: it wins, children are ignored.
        rec.leaves.insert(a.key());
        let (leaves, missing) = rec.walk();
        assert!(missing.is_empty());
        assert_eq!(leaves.len(), Partition::roots().len());
    }

    #[tokio::test]
    async fn a_restarted_partition_writes_its_rows_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        store.ensure_defaults().await.expect("containers");
        let mut sink = LazyBlobSink {
            store: store.clone(),
            name: "runs/r/parts/61.x.csv".into(),
            writer: None,
        };
        sink.write(b"first attempt\n".to_vec())
            .await
            .expect("write");
        sink.restart();
        sink.write(b"second attempt\n".to_vec())
            .await
            .expect("write");
        sink.writer
            .take()
            .expect("open")
            .finish()
            .await
            .expect("finish");
        let blob = store
            .get(STATE_CONTAINER, "runs/r/parts/61.x.csv")
            .await
            .expect("rows");
        assert_eq!(blob.body.as_ref(), b"second attempt\n");
    }
}
