//! The embedded local store: a directory the CLI can use without Azure.
//!
//! Layout under the root (`DORMANT_STORE_DIR`):
//! - `<container>/<blob/name/with/slashes>`: each container is a folder and a
//!   blob is a plain file, so `dormant-reports/latest/report.html` can be
//!   opened directly;
//! - `_queues/<queue>/<id>.json`: one file per message (`_` cannot start a
//!   container name, so the two never collide);
//! - `.dormant/tmp/` temp files and `.dormant/locks/` lock files.
//!
//! Crash safety: every whole-blob write and every message update is "write a
//! temp file, fsync, rename over the target, fsync the folder", so a reader
//! sees the old or the new content, never half. Appends are one `O_APPEND`
//! write followed by fsync, whole or not at all: a write that fails part
//! way is cut back before the error is returned (else the caller's retry
//! would write its first lines twice), and the torn tail a process killed
//! mid-write leaves is cut before the next line-shaped append (else the
//! next record would be glued to it and lost).
//!
//! Concurrency across processes (a CLI worker and a scan at once): every
//! mutation of a blob holds an exclusive `flock` on its lock file (one of
//! 64 stripes per container, by name), every mutation of a queue on the
//! queue's lock file, so check-then-write is atomic.
//!
//! A blob's lock covers the check and the rename (or the append's write),
//! never an fsync: the file's data is synced before the lock is taken, the
//! folder (or the appended bytes) after it is released, and only then does
//! the call return. One lock per container held across the fsync had
//! serialised every writer of a container behind the disk (measured: 92 %
//! of the GDPR endpoint's thread time was spent waiting in `flock` while
//! one writer fsynced). Releasing early loses nothing acknowledged: a later
//! writer's rename sits in the same folder and its own folder fsync, which
//! comes after, persists both; a reader could already see a rename before
//! its fsync (reads take no lock). A new append file's name is made durable
//! under the lock, once, so no appender is acknowledged before it.
//! Folder fsyncs are group-committed per folder ([`sync_dir`]): writers
//! that renamed into one folder while its fsync ran share the next one.
//!
//! Lock files are named by stripe: processes of this version and of the
//! previous one (one lock per container) must not share a store directory.
//!
//! ETags are a SHA-256 of the content (strong and stable: equal bytes, equal
//! tag, and no reuse after a delete). Computing one reads the file, which is
//! fine at CLI scale; listings of very large blobs pay for it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::{ConflictKind, Result, StoreError};
use super::{Blob, BlobInfo, BlobPage, ETag, Precondition, ReceivedMessage, SendOptions};

/// Tuning for the local store.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Refuse appends that would grow a file beyond this many bytes, with
    /// `Conflict { kind: AppendBlobFull }`: the local stand-in for Azure's
    /// 50,000-block append blob limit, so the audit log's rollover works (and
    /// is tested) the same way on both backends. `None`: no limit.
    pub append_limit_bytes: Option<u64>,
}

/// Chunk size of [`LocalStore::get_stream`].
const STREAM_CHUNK: usize = 1024 * 1024;

/// Lock files per container (see [`LocalStore::blob_lock`]).
const LOCK_STRIPES: u64 = 64;

/// Azure's default message time-to-live, kept locally too.
const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug)]
pub(crate) struct LocalStore {
    root: Arc<PathBuf>,
    options: LocalOptions,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::permanent("local store", format!("blocking task failed: {e}")))?
}

/// An exclusive `flock` released on drop (closing the file releases it).
struct Lock(#[allow(dead_code)] File);

fn lock(path: &Path) -> Result<Lock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io(format!("lock {}", path.display()), &e))?;
    // std's `File::lock` (flock on Unix, LockFileEx on Windows) is stable
    // since 1.89; the crate's rust-version (1.88) should move up to match.
    #[allow(clippy::incompatible_msrv)]
    file.lock()
        .map_err(|e| StoreError::io(format!("lock {}", path.display()), &e))?;
    Ok(Lock(file))
}

fn etag_of_bytes(data: &[u8]) -> ETag {
    etag_of_digest(Sha256::digest(data).as_slice())
}

fn etag_of_digest(digest: &[u8]) -> ETag {
    ETag(format!("\"{}\"", hex::encode(&digest[..16])))
}

/// ETag of a file, or `None` if it does not exist.
fn etag_of_file(path: &Path) -> std::io::Result<Option<ETag>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(etag_of_digest(hasher.finalize().as_slice())))
}

/// Makes the renames into `dir` durable. Folder fsyncs are group-committed
/// per folder: a caller whose rename is done waits for an fsync that
/// *starts* after it (the one running may have begun before the rename),
/// and one fsync answers everyone who registered before it began. Under
/// load (the GDPR endpoint's state and queue writes) the disk sees one
/// folder fsync per batch instead of one per write.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    static FOLDERS: LazyLock<Mutex<HashMap<PathBuf, Arc<FolderSync>>>> =
        LazyLock::new(Mutex::default);
    let folders = || FOLDERS.lock().unwrap_or_else(|e| e.into_inner());
    let folder = folders().entry(dir.to_path_buf()).or_default().clone();
    let result = folder.sync_with(|| File::open(dir)?.sync_all());
    let mut map = folders();
    // Nobody else holds it (clones are taken under this lock): forget it,
    // so a long-lived process does not keep every folder it ever synced.
    if Arc::strong_count(&folder) == 2 {
        map.remove(dir);
    }
    result
}

/// One folder's fsync group commit (see [`sync_dir`]).
#[derive(Debug, Default)]
struct FolderSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Callers registered so far (each after its rename).
    registered: u64,
    /// Every caller up to this one is durable.
    synced: u64,
    running: bool,
}

impl FolderSync {
    fn sync_with(&self, fsync: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = lock();
        state.registered += 1;
        let mine = state.registered;
        loop {
            if state.synced >= mine {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                let covers = state.registered;
                drop(state);
                let result = fsync();
                state = lock();
                state.running = false;
                if result.is_ok() {
                    state.synced = state.synced.max(covers);
                }
                // On failure a waiter runs its own fsync and hears its own result.
                self.done.notify_all();
                return result;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn check_precondition(what: &str, current: Option<&ETag>, p: &Precondition) -> Result<()> {
    match (p, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::IfNoneMatch, Some(_)) => {
            Err(StoreError::conflict(what, ConflictKind::AlreadyExists))
        }
        (Precondition::IfNoneMatch, None) => Ok(()),
        (Precondition::IfMatch(want), Some(have)) if want == have => Ok(()),
        (Precondition::IfMatch(_), _) => {
            Err(StoreError::conflict(what, ConflictKind::PreconditionFailed))
        }
    }
}

/// Runs `op` in `parent`, creating the folder when `op` finds it missing;
/// again if a delete pruned the (then empty) folder in between, as a
/// delete of another blob holds another lock stripe. Most calls find the
/// folder there and pay for no `mkdir`. Bounded: a folder that keeps
/// vanishing is an error.
fn in_folder<T>(parent: &Path, mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut attempts = 0;
    loop {
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 8 => {
                attempts += 1;
                fs::create_dir_all(parent)?;
            }
            other => return other,
        }
    }
}

/// Cuts `file` (`len` bytes) back to its last newline, when it does not
/// end in one, and returns its length after. Only a writer that died
/// mid-append leaves such a tail, and it was never acknowledged; what is
/// before the last newline is whole records.
fn cut_torn_tail(file: &mut File, len: u64) -> std::io::Result<u64> {
    use std::io::{Seek as _, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    if len == 0 {
        return Ok(0);
    }
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut byte)?;
    if byte[0] == b'\n' {
        return Ok(len);
    }
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    tracing::warn!(
        bytes = len - end,
        "cutting the torn tail of an append that did not finish"
    );
    file.set_len(end)?;
    Ok(end)
}

/// Renames `tmp` over `target`, creating parent folders. Not yet durable:
/// call [`sync_parent`] after releasing the lock.
fn place_file(tmp: &Path, target: &Path) -> std::io::Result<()> {
    let parent = target
        .parent()
        .expect("blob paths sit inside a container folder");
    in_folder(parent, || fs::rename(tmp, target))
}

/// Makes a rename into `target`'s folder durable. A folder that is gone
/// was pruned by a delete of the blob we wrote (folders are removed only
/// when empty): nothing of ours is left to persist.
fn sync_parent(target: &Path) -> std::io::Result<()> {
    let parent = target
        .parent()
        .expect("blob paths sit inside a container folder");
    match sync_dir(parent) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl LocalStore {
    pub fn open(root: PathBuf, options: LocalOptions) -> Result<Self> {
        for sub in [".dormant/tmp", ".dormant/locks", "_queues"] {
            let p = root.join(sub);
            fs::create_dir_all(&p)
                .map_err(|e| StoreError::io(format!("local store at {}", root.display()), &e))?;
        }
        remove_stale_temp_files(&root.join(".dormant/tmp"));
        Ok(Self {
            root: Arc::new(root),
            options,
        })
    }

    fn container_dir(&self, container: &str) -> PathBuf {
        self.root.join(container)
    }

    fn blob_path(&self, container: &str, name: &str) -> PathBuf {
        let mut p = self.container_dir(container);
        for seg in name.split('/') {
            p.push(seg);
        }
        p
    }

    fn tmp_path(root: &Path) -> PathBuf {
        root.join(".dormant/tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The lock file guarding blob `name`: one of [`LOCK_STRIPES`] per
    /// container, chosen by a hash of the name that every process (and
    /// version) computes alike. Writers of one blob always meet on the same
    /// lock; writers of different blobs (the GDPR state of two users) rarely
    /// do, so they no longer queue behind each other.
    fn blob_lock(root: &Path, container: &str, name: &str) -> PathBuf {
        let digest = Sha256::digest(name.as_bytes());
        let stripe = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % LOCK_STRIPES;
        root.join(".dormant/locks")
            .join(format!("c-{container}-{stripe:02x}.lock"))
    }

    fn queue_dir(root: &Path, queue: &str) -> PathBuf {
        root.join("_queues").join(queue)
    }

    fn queue_lock(root: &Path, queue: &str) -> PathBuf {
        root.join(".dormant/locks").join(format!("q-{queue}.lock"))
    }

    fn require_container(&self, container: &str) -> Result<()> {
        if self.container_dir(container).is_dir() {
            Ok(())
        } else {
            Err(StoreError::not_found(format!("container {container}")))
        }
    }

    pub async fn ensure_container(&self, container: &str) -> Result<()> {
        let dir = self.container_dir(container);
        let what = format!("container {container}");
        blocking(move || fs::create_dir_all(&dir).map_err(|e| StoreError::io(what, &e))).await
    }

    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        let dir = Self::queue_dir(&self.root, queue);
        let what = format!("queue {queue}");
        blocking(move || fs::create_dir_all(&dir).map_err(|e| StoreError::io(what, &e))).await
    }

    pub async fn put(
        &self,
        container: &str,
        name: &str,
        body: Bytes,
        precondition: Precondition,
    ) -> Result<ETag> {
        self.require_container(container)?;
        let root = Arc::clone(&self.root);
        let target = self.blob_path(container, name);
        let lock_path = Self::blob_lock(&root, container, name);
        let what = what(container, name);
        blocking(move || {
            let tmp = Self::tmp_path(&root);
            let io = |e: std::io::Error| StoreError::io(what.clone(), &e);
            let result = (|| {
                let mut f = File::create(&tmp).map_err(io)?;
                f.write_all(&body).map_err(io)?;
                f.sync_all().map_err(io)?;
                drop(f);
                let guard = lock(&lock_path)?;
                let current = etag_of_file(&target).map_err(io)?;
                check_precondition(&what, current.as_ref(), &precondition)?;
                place_file(&tmp, &target).map_err(io)?;
                drop(guard);
                sync_parent(&target).map_err(io)?;
                Ok(etag_of_bytes(&body))
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })
        .await
    }

    pub async fn upload(
        &self,
        container: &str,
        name: &str,
        precondition: Precondition,
    ) -> Result<LocalUpload> {
        self.require_container(container)?;
        let tmp = Self::tmp_path(&self.root);
        let what = what(container, name);
        let file = {
            let tmp = tmp.clone();
            let what = what.clone();
            blocking(move || File::create(&tmp).map_err(|e| StoreError::io(what, &e))).await?
        };
        Ok(LocalUpload {
            file: Some(file),
            hasher: Some(Sha256::new()),
            tmp,
            target: self.blob_path(container, name),
            lock_path: Self::blob_lock(&self.root, container, name),
            what,
            precondition,
            committed: false,
        })
    }

    pub async fn get(&self, container: &str, name: &str) -> Result<Blob> {
        let path = self.blob_path(container, name);
        let what = what(container, name);
        blocking(move || {
            // A folder is a name prefix here, not a blob.
            if path.is_dir() {
                return Err(StoreError::not_found(what));
            }
            // Renames are atomic, so the open file is one version, whole.
            let body = fs::read(&path).map_err(|e| StoreError::io(what, &e))?;
            let etag = etag_of_bytes(&body);
            Ok(Blob {
                body: Bytes::from(body),
                etag,
            })
        })
        .await
    }

    pub async fn get_stream(&self, container: &str, name: &str) -> Result<super::BlobStream> {
        use futures::StreamExt as _;
        let path = self.blob_path(container, name);
        let what = what(container, name);
        let file = {
            let what = what.clone();
            blocking(move || {
                if path.is_dir() {
                    return Err(StoreError::not_found(what));
                }
                // Renames are atomic: the open file stays one version, whole.
                File::open(&path).map_err(|e| StoreError::io(what, &e))
            })
            .await?
        };
        let reader = tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            STREAM_CHUNK,
        );
        Ok(reader
            .map(move |chunk| chunk.map_err(|e| StoreError::io(what.clone(), &e)))
            .boxed())
    }

    pub async fn list_page(
        &self,
        container: &str,
        prefix: &str,
        marker: Option<String>,
        max_results: Option<u32>,
    ) -> Result<BlobPage> {
        self.require_container(container)?;
        let dir = self.container_dir(container);
        let prefix = prefix.to_owned();
        let what = format!("listing of {container}");
        blocking(move || {
            let io = |e: std::io::Error| StoreError::io(what.clone(), &e);
            let mut names = Vec::new();
            walk(&dir, "", &prefix, &mut names).map_err(io)?;
            names.retain(|(n, _)| marker.as_ref().is_none_or(|m| n.as_str() > m.as_str()));
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let max = max_results.map_or(usize::MAX, |m| m as usize);
            let more = names.len() > max;
            names.truncate(max);
            let mut items = Vec::with_capacity(names.len());
            for (name, path) in names {
                let meta = match fs::metadata(&path) {
                    Ok(m) => m,
                    // Deleted between the walk and now: not part of the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(e)),
                };
                let Some(etag) = etag_of_file(&path).map_err(io)? else {
                    continue;
                };
                items.push(BlobInfo {
                    name,
                    size: meta.len(),
                    etag,
                    last_modified: meta
                        .modified()
                        .map(DateTime::<Utc>::from)
                        .unwrap_or(DateTime::UNIX_EPOCH),
                });
            }
            let next_marker = if more {
                items.last().map(|i| i.name.clone())
            } else {
                None
            };
            Ok(BlobPage { items, next_marker })
        })
        .await
    }

    pub async fn delete(&self, container: &str, name: &str, etag: Option<&ETag>) -> Result<()> {
        self.require_container(container)?;
        let path = self.blob_path(container, name);
        let dir = self.container_dir(container);
        let lock_path = Self::blob_lock(&self.root, container, name);
        let what = what(container, name);
        let want = etag.cloned();
        blocking(move || {
            let guard = lock(&lock_path)?;
            if path.is_dir() {
                return Err(StoreError::not_found(what));
            }
            if let Some(want) = &want {
                match etag_of_file(&path).map_err(|e| StoreError::io(what.clone(), &e))? {
                    None => return Err(StoreError::not_found(what)),
                    Some(have) if have == *want => {}
                    Some(_) => {
                        return Err(StoreError::conflict(what, ConflictKind::PreconditionFailed));
                    }
                }
            }
            fs::remove_file(&path).map_err(|e| StoreError::io(what.clone(), &e))?;
            // Prune folders the blob leaves empty, as Azure has no folders.
            let mut parent = path.parent().map(Path::to_path_buf);
            while let Some(p) = parent {
                if p == dir || fs::remove_dir(&p).is_err() {
                    break;
                }
                parent = p.parent().map(Path::to_path_buf);
            }
            drop(guard);
            if let Some(p) = path.parent() {
                let _ = sync_dir(if p.exists() { p } else { &dir });
            }
            Ok(())
        })
        .await
    }

    pub async fn append(&self, container: &str, name: &str, body: Bytes) -> Result<()> {
        self.require_container(container)?;
        let path = self.blob_path(container, name);
        let lock_path = Self::blob_lock(&self.root, container, name);
        let limit = self.options.append_limit_bytes;
        let what = what(container, name);
        blocking(move || {
            let io = |e: std::io::Error| StoreError::io(what.clone(), &e);
            let guard = lock(&lock_path)?;
            let parent = path
                .parent()
                .expect("blob paths sit inside a container folder");
            let (created, mut f) = in_folder(parent, || {
                let created = !path.exists();
                let f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(&path)?;
                Ok((created, f))
            })
            .map_err(io)?;
            if created {
                // Under the lock, once per file: an appender after us must
                // not be acknowledged while the file's name is not durable.
                sync_dir(parent).map_err(io)?;
            }
            let mut len = f.metadata().map_err(io)?.len();
            if body.ends_with(b"\n") {
                // Every writer holds the lock while it writes: a tail that
                // is not a whole line under the lock is a dead writer's.
                len = cut_torn_tail(&mut f, len).map_err(io)?;
            }
            if let Some(limit) = limit {
                if len > 0 && len + body.len() as u64 > limit {
                    return Err(StoreError::conflict(
                        what.clone(),
                        ConflictKind::AppendBlobFull,
                    ));
                }
                if body.len() as u64 > limit {
                    // Would not fit even in a fresh file: rolling over cannot help.
                    return Err(StoreError::permanent(
                        what.clone(),
                        "the append is larger than the store's append limit",
                    ));
                }
            }
            // One write under the lock: records never interleave. The
            // fdatasync after it covers every byte written to the file so
            // far, ours included, whoever wrote them.
            if let Err(e) = f.write_all(&body) {
                // A short write (disk full, file size limit) left part of
                // the records: take it back so a retry writes them once.
                if let Err(cut) = f.set_len(len) {
                    tracing::warn!(blob = %what, error = %cut, "cannot cut back a failed append; the next append cuts a torn line");
                }
                return Err(io(e));
            }
            drop(guard);
            f.sync_data().map_err(io)?;
            Ok(())
        })
        .await
    }

    pub async fn send(&self, queue: &str, text: &str, options: SendOptions) -> Result<String> {
        let root = Arc::clone(&self.root);
        let queue = queue.to_owned();
        let text = text.to_owned();
        blocking(move || {
            let dir = Self::queue_dir(&root, &queue);
            let what = format!("queue {queue}");
            if !dir.is_dir() {
                return Err(StoreError::not_found(what));
            }
            let now = Utc::now();
            // Sortable ids: insertion order is file-name order.
            let id = format!(
                "{:016x}-{}",
                now.timestamp_micros(),
                uuid::Uuid::new_v4().simple()
            );
            let message = StoredMessage {
                id: id.clone(),
                text,
                inserted_at: now,
                expires_at: after(now, options.ttl.unwrap_or(DEFAULT_TTL)),
                next_visible_at: after(now, options.initial_delay.unwrap_or_default()),
                dequeue_count: 0,
                pop_receipt: None,
            };
            // A new file needs no lock: nobody else can know its name yet.
            write_message(&root, &dir, &message).map_err(|e| StoreError::io(what.clone(), &e))?;
            sync_dir(&dir).map_err(|e| StoreError::io(what, &e))?;
            Ok(id)
        })
        .await
    }

    pub async fn receive(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        let root = Arc::clone(&self.root);
        let queue = queue.to_owned();
        blocking(move || {
            let dir = Self::queue_dir(&root, &queue);
            let what = format!("queue {queue}");
            let io = |e: std::io::Error| StoreError::io(what.clone(), &e);
            if !dir.is_dir() {
                return Err(StoreError::not_found(what.clone()));
            }
            let _guard = lock(&Self::queue_lock(&root, &queue))?;
            let now = Utc::now();
            let mut files: Vec<PathBuf> = fs::read_dir(&dir)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            let mut out = Vec::new();
            for path in files {
                if out.len() >= max as usize {
                    break;
                }
                let Some(mut m) = read_message(&path) else {
                    continue;
                };
                if m.expires_at <= now {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                if m.next_visible_at > now {
                    continue;
                }
                m.dequeue_count = m.dequeue_count.saturating_add(1);
                m.pop_receipt = Some(uuid::Uuid::new_v4().simple().to_string());
                m.next_visible_at = after(now, visibility);
                write_message(&root, &dir, &m).map_err(io)?;
                out.push(ReceivedMessage {
                    id: m.id,
                    pop_receipt: m.pop_receipt.unwrap_or_default(),
                    text: m.text,
                    dequeue_count: m.dequeue_count,
                    inserted_at: m.inserted_at,
                    next_visible_at: m.next_visible_at,
                });
            }
            if !out.is_empty() {
                sync_dir(&dir).map_err(io)?;
            }
            Ok(out)
        })
        .await
    }

    pub async fn delete_message(&self, queue: &str, id: &str, pop_receipt: &str) -> Result<()> {
        let root = Arc::clone(&self.root);
        let queue = queue.to_owned();
        let id = id.to_owned();
        let pop_receipt = pop_receipt.to_owned();
        blocking(move || {
            let what = format!("message {id} in queue {queue}");
            let dir = Self::queue_dir(&root, &queue);
            let path = message_path(&dir, &id).ok_or_else(|| StoreError::not_found(&what))?;
            let _guard = lock(&Self::queue_lock(&root, &queue))?;
            match read_message(&path) {
                Some(m) if m.pop_receipt.as_deref() == Some(pop_receipt.as_str()) => {
                    fs::remove_file(&path).map_err(|e| StoreError::io(what.clone(), &e))?;
                    sync_dir(&dir).map_err(|e| StoreError::io(what, &e))
                }
                _ => Err(StoreError::not_found(what)),
            }
        })
        .await
    }

    pub async fn update_visibility(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String> {
        let root = Arc::clone(&self.root);
        let queue = queue.to_owned();
        let id = id.to_owned();
        let pop_receipt = pop_receipt.to_owned();
        blocking(move || {
            let what = format!("message {id} in queue {queue}");
            let dir = Self::queue_dir(&root, &queue);
            let path = message_path(&dir, &id).ok_or_else(|| StoreError::not_found(&what))?;
            let _guard = lock(&Self::queue_lock(&root, &queue))?;
            match read_message(&path) {
                Some(mut m) if m.pop_receipt.as_deref() == Some(pop_receipt.as_str()) => {
                    let receipt = uuid::Uuid::new_v4().simple().to_string();
                    m.pop_receipt = Some(receipt.clone());
                    m.next_visible_at = after(Utc::now(), visibility);
                    write_message(&root, &dir, &m)
                        .and_then(|()| sync_dir(&dir))
                        .map_err(|e| StoreError::io(what, &e))?;
                    Ok(receipt)
                }
                _ => Err(StoreError::not_found(what)),
            }
        })
        .await
    }
}

/// A streaming upload into a temp file, renamed into place at commit.
#[derive(Debug)]
pub(crate) struct LocalUpload {
    file: Option<File>,
    hasher: Option<Sha256>,
    tmp: PathBuf,
    target: PathBuf,
    lock_path: PathBuf,
    what: String,
    precondition: Precondition,
    committed: bool,
}

impl LocalUpload {
    pub async fn stage(&mut self, block: Bytes) -> Result<()> {
        let (Some(mut file), Some(mut hasher)) = (self.file.take(), self.hasher.take()) else {
            return Err(StoreError::permanent(
                self.what.clone(),
                "upload already failed",
            ));
        };
        let what = self.what.clone();
        let (file, hasher) = blocking(move || {
            file.write_all(&block)
                .map_err(|e| StoreError::io(what, &e))?;
            hasher.update(&block);
            Ok((file, hasher))
        })
        .await?;
        self.file = Some(file);
        self.hasher = Some(hasher);
        Ok(())
    }

    pub async fn commit(mut self) -> Result<ETag> {
        let (Some(file), Some(hasher)) = (self.file.take(), self.hasher.take()) else {
            return Err(StoreError::permanent(
                self.what.clone(),
                "upload already failed",
            ));
        };
        let tmp = self.tmp.clone();
        let target = self.target.clone();
        let lock_path = self.lock_path.clone();
        let what = self.what.clone();
        let precondition = self.precondition.clone();
        let etag = blocking(move || {
            let io = |e: std::io::Error| StoreError::io(what.clone(), &e);
            file.sync_all().map_err(io)?;
            drop(file);
            let guard = lock(&lock_path)?;
            let current = etag_of_file(&target).map_err(io)?;
            check_precondition(&what, current.as_ref(), &precondition)?;
            place_file(&tmp, &target).map_err(io)?;
            drop(guard);
            sync_parent(&target).map_err(io)?;
            Ok(etag_of_digest(hasher.finalize().as_slice()))
        })
        .await?;
        self.committed = true;
        Ok(etag)
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredMessage {
    id: String,
    text: String,
    inserted_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    next_visible_at: DateTime<Utc>,
    dequeue_count: u32,
    pop_receipt: Option<String>,
}

/// The message file for an id, refusing ids that could leave the folder.
fn message_path(dir: &Path, id: &str) -> Option<PathBuf> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    ok.then(|| dir.join(format!("{id}.json")))
}

fn read_message(path: &Path) -> Option<StoredMessage> {
    let data = fs::read(path).ok()?;
    match serde_json::from_slice(&data) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "skipping unreadable local queue message");
            None
        }
    }
}

fn write_message(root: &Path, dir: &Path, m: &StoredMessage) -> std::io::Result<()> {
    let tmp = LocalStore::tmp_path(root);
    let data = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    let mut f = File::create(&tmp)?;
    f.write_all(&data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(format!("{}.json", m.id))).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Temp files left by a crash mid-write are never renamed into place; sweep
/// the ones old enough that no live writer can still own them.
fn remove_stale_temp_files(tmp_dir: &Path) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    let cutoff = std::time::SystemTime::now() - Duration::from_secs(24 * 3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `at + d`, saturating instead of panicking on absurd durations.
fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn what(container: &str, name: &str) -> String {
    format!("blob {container}/{name}")
}

/// Collects `(blob name, path)` for every file under `dir` (the folder of
/// names starting `rel/`) whose name could start with `wanted`. Folders
/// that cannot hold such a name are not entered: a day listing of the
/// audit container must not walk its per-subject index.
fn walk(
    dir: &Path,
    rel: &str,
    wanted: &str,
    out: &mut Vec<(String, PathBuf)>,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not a name this store wrote
        };
        let full = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ty = entry.file_type()?;
        if ty.is_dir() {
            let inner = format!("{full}/");
            if inner.starts_with(wanted) || wanted.starts_with(&inner) {
                walk(&entry.path(), &full, wanted, out)?;
            }
        } else if ty.is_file() && full.starts_with(wanted) {
            out.push((full, entry.path()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers that register while an fsync runs are answered by the next
    /// one, which starts after them: ten waiters, one more fsync.
    #[test]
    fn folder_fsyncs_are_group_committed() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::mpsc;
        let folder = Arc::new(FolderSync::default());
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let leader = {
            let folder = folder.clone();
            std::thread::spawn(move || {
                folder.sync_with(|| {
                    entered_tx.send(()).expect("entered");
                    release_rx.recv().expect("release");
                    Ok(())
                })
            })
        };
        entered.recv().expect("the first fsync runs");
        let fsyncs = Arc::new(AtomicU32::new(0));
        let followers: Vec<_> = (0..10)
            .map(|_| {
                let (folder, fsyncs) = (folder.clone(), fsyncs.clone());
                std::thread::spawn(move || {
                    folder.sync_with(|| {
                        fsyncs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                })
            })
            .collect();
        while folder.state.lock().expect("state").registered < 11 {
            std::thread::yield_now();
        }
        release.send(()).expect("release");
        leader.join().expect("leader").expect("synced");
        for f in followers {
            f.join().expect("follower").expect("synced");
        }
        assert_eq!(fsyncs.load(Ordering::SeqCst), 1, "one fsync for all ten");
        // A failed fsync answers its caller with the error; the next
        // caller runs its own.
        let failed = folder.sync_with(|| Err(std::io::Error::other("disk")));
        assert!(failed.is_err());
        folder.sync_with(|| Ok(())).expect("the next one succeeds");
        assert_eq!(folder.state.lock().expect("state").synced, 13);
    }

    /// A delete prunes the folder it empties while holding only its own
    /// blob's stripe, so a write of another blob can find its freshly
    /// created folder gone before the rename: it creates it again.
    #[test]
    fn a_rename_into_a_folder_pruned_meanwhile_is_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join("tmp-file");
        fs::write(&tmp, b"x").expect("tmp");
        let target = dir.path().join("c/shared/folder/blob");
        let parent = target.parent().expect("parent").to_path_buf();
        fs::create_dir_all(&parent).expect("the folder, before the prune");
        let mut calls = 0;
        in_folder(&parent, || {
            calls += 1;
            if calls == 1 {
                // The concurrent delete's prune lands right here.
                fs::remove_dir(&parent)?;
            }
            fs::rename(&tmp, &target)
        })
        .expect("placed on the second attempt");
        assert_eq!(calls, 2);
        assert_eq!(fs::read(&target).expect("blob"), b"x");
    }

    /// Writes and deletes of many blobs in one folder, at once: every one
    /// succeeds and the folder is pruned once the last blob is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_and_deletes_in_one_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            LocalStore::open(dir.path().to_path_buf(), LocalOptions::default()).expect("store"),
        );
        store.ensure_container("c-prune").await.expect("container");
        let tasks = (0..16).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..4 {
                    let name = format!("shared/folder/blob-{i}-{round}");
                    store
                        .put(
                            "c-prune",
                            &name,
                            Bytes::from_static(b"x"),
                            Precondition::IfNoneMatch,
                        )
                        .await?;
                    store.delete("c-prune", &name, None).await?;
                }
                Ok::<_, StoreError>(())
            })
        });
        for t in tasks {
            t.await
                .expect("task")
                .expect("every write and delete succeeds");
        }
        assert!(
            !dir.path().join("c-prune/shared").exists(),
            "empty folders pruned"
        );
    }

    /// A process killed in the middle of an append leaves the start of a
    /// line without its newline; the next append must not glue its record
    /// to it (the record would be unreadable, lost): the torn tail goes.
    #[tokio::test]
    async fn a_torn_tail_is_cut_before_the_next_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            LocalStore::open(dir.path().to_path_buf(), LocalOptions::default()).expect("store");
        store.ensure_container("c-torn").await.expect("container");
        let path = dir.path().join("c-torn/log");
        // (left by a dead writer, appended, what the file must hold after)
        let cases: [(&[u8], &[u8], &[u8]); 3] = [
            (
                b"{\"a\":1}\n{\"c\":",
                b"{\"d\":4}\n",
                b"{\"a\":1}\n{\"d\":4}\n",
            ),
            (b"{\"x\":", b"{\"e\":5}\n", b"{\"e\":5}\n"),
            (b"{\"a\":1}\n", b"{\"f\":6}\n", b"{\"a\":1}\n{\"f\":6}\n"),
        ];
        for (left, appended, after) in cases {
            fs::write(&path, left).expect("torn file");
            store
                .append("c-torn", "log", Bytes::from_static(appended))
                .await
                .expect("append");
            assert_eq!(fs::read(&path).expect("read"), after);
        }
        // Appends that are not lines are left as they come.
        for part in [&b"ab"[..], b"cd"] {
            store
                .append("c-torn", "raw.bin", Bytes::from_static(part))
                .await
                .expect("append");
        }
        assert_eq!(
            fs::read(dir.path().join("c-torn/raw.bin")).expect("read"),
            b"abcd"
        );
    }

    /// Set by [`a_short_write_is_taken_back_before_the_error`] for its
    /// child process; unset, [`short_write_child`] does nothing.
    const SHORT_WRITE_DIR: &str = "DORMANT_TEST_SHORT_WRITE_DIR";

    /// The child half: under a file size limit a little above the blob's
    /// length, an append of two lines writes part of them and fails; the
    /// blob must be as before, so a retry writes each line once.
    #[tokio::test]
    async fn short_write_child() {
        let Ok(dir) = std::env::var(SHORT_WRITE_DIR) else {
            return;
        };
        let store = LocalStore::open(PathBuf::from(&dir), LocalOptions::default()).expect("store");
        store.ensure_container("c-short").await.expect("container");
        let first = b"{\"first\":1}\n";
        store
            .append("c-short", "log.jsonl", Bytes::from_static(first))
            .await
            .expect("first append");
        let limit = libc::rlimit {
            rlim_cur: first.len() as u64 + 16,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain system calls on this process only (its own child).
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        let both = b"{\"second\":2}\n{\"third\":3, \"padding\":\"xxxxxxxxxxxxxxxx\"}\n";
        store
            .append("c-short", "log.jsonl", Bytes::from_static(both))
            .await
            .expect_err("the file size limit stops the write part way");
        let after = fs::read(Path::new(&dir).join("c-short/log.jsonl")).expect("read");
        assert_eq!(after, first, "the part that was written is taken back");
    }

    #[test]
    fn a_short_write_is_taken_back_before_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "store::local::tests::short_write_child",
                "--test-threads=1",
            ])
            .env(SHORT_WRITE_DIR, dir.path())
            .output()
            .expect("run the child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {text}");
        assert!(text.contains("1 passed"), "the child ran: {text}");
        assert!(dir.path().join("c-short/log.jsonl").is_file());
    }

    #[test]
    fn a_blob_always_maps_to_the_same_lock_stripe() {
        let root = Path::new("/r");
        let a = LocalStore::blob_lock(root, "dormant-state", "gdpr/subjects/a.json");
        assert_eq!(
            a,
            LocalStore::blob_lock(root, "dormant-state", "gdpr/subjects/a.json")
        );
        let stripes: std::collections::BTreeSet<PathBuf> = (0..1000)
            .map(|i| {
                LocalStore::blob_lock(root, "dormant-state", &format!("gdpr/subjects/{i}.json"))
            })
            .collect();
        assert_eq!(
            stripes.len() as u64,
            LOCK_STRIPES,
            "names spread over every stripe"
        );
    }
}
