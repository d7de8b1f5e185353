//! Blobs and queues behind one small interface, with two backends:
//! an Azure storage account (official `azure_storage_blob`/`azure_storage_queue`
//! 1.x crates, Shared Key or Entra auth) and a local directory (the CLI's
//! embedded store). The audit log ([`audit`]) sits on top.
//!
//! The rest of dormant holds one [`Store`]: cheap to clone (an `Arc` inside),
//! dispatching by enum so no trait objects or generics leak into callers.
//!
//! Semantics both backends share, and the behavioural suite checks:
//! - a conditional write that loses ([`Precondition::IfMatch`] with a stale
//!   ETag, [`Precondition::IfNoneMatch`] on an existing blob) fails with
//!   [`StoreError::Conflict`] and leaves the blob untouched;
//! - a received queue message stays invisible for its visibility timeout,
//!   then comes back with its dequeue count raised, until it is deleted with
//!   the pop receipt of the latest receive.
//!
//! Tests: `tests/it/store.rs` runs one suite against both backends; the
//! Azure half talks to Azurite (pinned in `tools/azurite`, installed with
//! `npm ci --prefix tools/azurite`, started by `tests/it/azurite.rs`, or an
//! already running one named by `DORMANT_TEST_AZURITE_BLOB`/`_QUEUE`).

pub mod audit;
mod azure;
mod error;
mod local;
mod shared_key;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::HttpClient;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use crate::config::storage::{
    BLOB_URI_SETTING, CONNECTION_SETTING, DEFAULT_STORE_DIR, QUEUE_URI_SETTING, STORE_DIR_SETTING,
    StorageConfig,
};
pub use error::{ConflictKind, Result, StoreError};
pub use local::LocalOptions;

/// Container for run reports (`{runId}/…`, `latest/…`).
pub const REPORTS_CONTAINER: &str = "dormant-reports";
/// Container for cases and checkpoints.
pub const STATE_CONTAINER: &str = "dormant-state";
/// Container for the append-only audit log.
pub const AUDIT_CONTAINER: &str = "dormant-audit";
/// Queue of lifecycle actions.
pub const ACTIONS_QUEUE: &str = "dormant-actions";
/// Queue of `user-erased` events for other systems.
pub const ERASURES_QUEUE: &str = "dormant-erasures";

/// Default block size for streaming uploads: 4 MiB keeps memory flat and,
/// with Azure's 50,000-block limit, still allows ~195 GiB per blob.
pub const DEFAULT_BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Azure's largest Put Block payload (service version 2019-12-12+).
pub const MAX_BLOCK_SIZE: usize = 4000 * 1024 * 1024;
/// Azure's largest queue message (the XML-escaped text must fit in 64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// An entity tag, opaque to callers, quotes included as the service sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ETag(pub String);

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a write may happen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Always (last writer wins).
    #[default]
    None,
    /// Only if the blob's current ETag is this one (optimistic concurrency).
    IfMatch(ETag),
    /// Only if the blob does not exist yet (create-only).
    IfNoneMatch,
}

/// A blob's content in chunks, in order ([`Store::get_stream`]).
pub type BlobStream = futures::stream::BoxStream<'static, Result<Bytes>>;

/// A whole blob read back.
#[derive(Debug, Clone)]
pub struct Blob {
    pub body: Bytes,
    pub etag: ETag,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Full name inside the container, `/` separated.
    pub name: String,
    pub size: u64,
    pub etag: ETag,
    pub last_modified: DateTime<Utc>,
}

/// One page of a listing and the marker for the next, if any.
#[derive(Debug, Clone)]
pub struct BlobPage {
    pub items: Vec<BlobInfo>,
    /// Pass back to [`Store::list_page`] to continue; `None` at the end.
    pub next_marker: Option<String>,
}

/// Options for [`Store::send`].
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Keep the message invisible this long after sending (scheduling).
    pub initial_delay: Option<Duration>,
    /// Drop the message after this long; the service default is 7 days.
    pub ttl: Option<Duration>,
}

/// A message taken from a queue; invisible to others until its visibility
/// timeout ends or it is deleted.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub id: String,
    /// Proof of this receive; needed to delete or update the message. A later
    /// receive by anyone (after the timeout) makes it stale.
    pub pop_receipt: String,
    pub text: String,
    /// How many times the message has been received, this time included.
    pub dequeue_count: u32,
    pub inserted_at: DateTime<Utc>,
    pub next_visible_at: DateTime<Utc>,
}

/// The one storage handle the rest of dormant holds.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Azure(Arc<azure::AzureStore>),
    Local(Arc<local::LocalStore>),
}

impl Store {
    /// Builds the store from configuration. `credential` is required for
    /// [`StorageConfig::ManagedIdentity`] and ignored otherwise; building it
    /// (managed identity, workload identity…) is the caller's job.
    pub fn connect(
        config: &StorageConfig,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self> {
        Self::connect_with_http_client(config, credential, None)
    }

    /// Like [`connect`](Self::connect), sending Azure requests through `http`
    /// (for instance a `reqwest::Client` that also trusts `DORMANT_CA_FILE`
    /// for a private endpoint or proxy). The client must not decompress
    /// responses on its own: ranged blob downloads need the raw bytes.
    pub fn connect_with_http_client(
        config: &StorageConfig,
        credential: Option<Arc<dyn TokenCredential>>,
        http: Option<Arc<dyn HttpClient>>,
    ) -> Result<Self> {
        match config {
            StorageConfig::ConnectionString(conn) => {
                let conn = crate::config::storage::AccountConnection::parse(conn)
                    .map_err(|e| StoreError::Config(e.0))?;
                Ok(Self::from_backend(Backend::Azure(Arc::new(
                    azure::AzureStore::with_shared_key(conn, http)?,
                ))))
            }
            StorageConfig::ManagedIdentity { blob, queue } => {
                let credential = credential.ok_or_else(|| {
                    StoreError::Config(format!(
                        "{BLOB_URI_SETTING}/{QUEUE_URI_SETTING} need a managed identity credential"
                    ))
                })?;
                Ok(Self::from_backend(Backend::Azure(Arc::new(
                    azure::AzureStore::with_token(blob.clone(), queue.clone(), credential, http)?,
                ))))
            }
            StorageConfig::Local(dir) => Self::local(dir.clone()),
        }
    }

    /// A local directory store with default options.
    pub fn local(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::local_with(dir, LocalOptions::default())
    }

    /// A local directory store with explicit options.
    pub fn local_with(dir: impl Into<PathBuf>, options: LocalOptions) -> Result<Self> {
        Ok(Self::from_backend(Backend::Local(Arc::new(
            local::LocalStore::open(dir.into(), options)?,
        ))))
    }

    fn from_backend(backend: Backend) -> Self {
        Self { backend }
    }

    /// The audit log (`dormant-audit`) on this store.
    pub fn audit_log(&self) -> audit::AuditLog {
        audit::AuditLog::new(self.clone())
    }

    /// Which backend this is, for logs and the CLI ("azure" or "local").
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Azure(_) => "azure",
            Backend::Local(_) => "local",
        }
    }

    /// Creates dormant's containers and queues if missing (idempotent).
    pub async fn ensure_defaults(&self) -> Result<()> {
        for c in [REPORTS_CONTAINER, STATE_CONTAINER, AUDIT_CONTAINER] {
            self.ensure_container(c).await?;
        }
        for q in [ACTIONS_QUEUE, ERASURES_QUEUE] {
            self.ensure_queue(q).await?;
        }
        Ok(())
    }

    /// Creates a container if missing; an existing one is success.
    /// Names follow Azure's rules (3–63 chars, lowercase, digits, single hyphens).
    pub async fn ensure_container(&self, container: &str) -> Result<()> {
        validate_resource_name("container", container)?;
        match &self.backend {
            Backend::Azure(a) => a.ensure_container(container).await,
            Backend::Local(l) => l.ensure_container(container).await,
        }
    }

    /// Creates a queue if missing; an existing one is success.
    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        validate_resource_name("queue", queue)?;
        match &self.backend {
            Backend::Azure(a) => a.ensure_queue(queue).await,
            Backend::Local(l) => l.ensure_queue(queue).await,
        }
    }

    /// Writes a whole blob (block blob on Azure) and returns its new ETag.
    /// Fails with `Conflict` when `precondition` does not hold; nothing is
    /// overwritten then.
    pub async fn put(
        &self,
        container: &str,
        name: &str,
        body: Bytes,
        precondition: Precondition,
    ) -> Result<ETag> {
        validate_blob_name(name)?;
        tracing::debug!(
            container,
            blob = name,
            bytes = body.len(),
            ?precondition,
            "store put"
        );
        match &self.backend {
            Backend::Azure(a) => a.put(container, name, body, precondition).await,
            Backend::Local(l) => l.put(container, name, body, precondition).await,
        }
    }

    /// Starts a streaming upload with the default 4 MiB block size.
    pub async fn upload(
        &self,
        container: &str,
        name: &str,
        precondition: Precondition,
    ) -> Result<BlobWriter> {
        self.upload_with_block_size(container, name, precondition, DEFAULT_BLOCK_SIZE)
            .await
    }

    /// Starts a streaming upload: data is sent in blocks of `block_size`
    /// (Put Block on Azure, a temp file locally) and becomes visible only at
    /// [`BlobWriter::finish`], atomically, subject to `precondition`.
    pub async fn upload_with_block_size(
        &self,
        container: &str,
        name: &str,
        precondition: Precondition,
        block_size: usize,
    ) -> Result<BlobWriter> {
        validate_blob_name(name)?;
        if block_size == 0 || block_size > MAX_BLOCK_SIZE {
            return Err(StoreError::permanent(
                format!("upload of {container}/{name}"),
                format!("block size must be between 1 and {MAX_BLOCK_SIZE} bytes"),
            ));
        }
        let inner = match &self.backend {
            Backend::Azure(a) => WriterInner::Azure(a.upload(container, name, precondition)?),
            Backend::Local(l) => WriterInner::Local(l.upload(container, name, precondition).await?),
        };
        Ok(BlobWriter {
            inner,
            buffer: Vec::with_capacity(block_size.min(DEFAULT_BLOCK_SIZE)),
            block_size,
        })
    }

    /// Reads a whole blob with its ETag; `NotFound` if blob or container is missing.
    pub async fn get(&self, container: &str, name: &str) -> Result<Blob> {
        validate_blob_name(name)?;
        match &self.backend {
            Backend::Azure(a) => a.get(container, name).await,
            Backend::Local(l) => l.get(container, name).await,
        }
    }

    /// Reads a blob as a stream of chunks, so a blob of any size passes
    /// through in bounded memory (the local store reads 1 MiB at a time;
    /// Azure's download hands over its response body as it arrives).
    /// `NotFound` if blob or container is missing, before the first chunk.
    pub async fn get_stream(&self, container: &str, name: &str) -> Result<BlobStream> {
        validate_blob_name(name)?;
        match &self.backend {
            Backend::Azure(a) => a.get_stream(container, name).await,
            Backend::Local(l) => l.get_stream(container, name).await,
        }
    }

    /// Lists every blob whose name starts with `prefix`, following pages.
    pub async fn list(&self, container: &str, prefix: &str) -> Result<Vec<BlobInfo>> {
        let mut all = Vec::new();
        let mut marker = None;
        loop {
            let page = self.list_page(container, prefix, marker, None).await?;
            all.extend(page.items);
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return Ok(all),
            }
        }
    }

    /// One page of a listing, in name order. `max_results` caps the page
    /// (Azure caps it at 5,000 whatever is asked); `marker` continues a
    /// previous page.
    pub async fn list_page(
        &self,
        container: &str,
        prefix: &str,
        marker: Option<String>,
        max_results: Option<u32>,
    ) -> Result<BlobPage> {
        let max_results = max_results.map(|m| m.clamp(1, 5000));
        match &self.backend {
            Backend::Azure(a) => a.list_page(container, prefix, marker, max_results).await,
            Backend::Local(l) => l.list_page(container, prefix, marker, max_results).await,
        }
    }

    /// Deletes a blob; `NotFound` if it was not there.
    pub async fn delete(&self, container: &str, name: &str) -> Result<()> {
        validate_blob_name(name)?;
        match &self.backend {
            Backend::Azure(a) => a.delete(container, name, None).await,
            Backend::Local(l) => l.delete(container, name, None).await,
        }
    }

    /// Deletes the blob only if it is still the version read as `etag`
    /// (a conflict otherwise): the blob may have been replaced meanwhile by
    /// something that must not go with it.
    pub async fn delete_if(&self, container: &str, name: &str, etag: &ETag) -> Result<()> {
        validate_blob_name(name)?;
        match &self.backend {
            Backend::Azure(a) => a.delete(container, name, Some(etag)).await,
            Backend::Local(l) => l.delete(container, name, Some(etag)).await,
        }
    }

    /// Appends one record to an append blob, creating it if missing.
    /// On Azure one Append Block, on the local store one `O_APPEND` write
    /// followed by fsync: when this returns Ok the bytes are durable.
    pub async fn append(&self, container: &str, name: &str, data: Bytes) -> Result<()> {
        self.append_batch(container, name, &[data]).await
    }

    /// Appends several records as one block (one write), so callers can
    /// amortise a round trip; the records stay contiguous and in order.
    /// Azure limits a block to 4 MiB and a blob to 50,000 blocks; a full blob
    /// fails with `Conflict { kind: AppendBlobFull }`.
    pub async fn append_batch(&self, container: &str, name: &str, records: &[Bytes]) -> Result<()> {
        validate_blob_name(name)?;
        let total: usize = records.iter().map(Bytes::len).sum();
        if total == 0 {
            return Ok(());
        }
        if total > DEFAULT_BLOCK_SIZE {
            return Err(StoreError::permanent(
                format!("append to {container}/{name}"),
                "an append is limited to 4 MiB (Azure's Append Block maximum)",
            ));
        }
        let mut joined = Vec::with_capacity(total);
        for r in records {
            joined.extend_from_slice(r);
        }
        let body = Bytes::from(joined);
        tracing::debug!(
            container,
            blob = name,
            bytes = total,
            records = records.len(),
            "store append"
        );
        match &self.backend {
            Backend::Azure(a) => a.append(container, name, body).await,
            Backend::Local(l) => l.append(container, name, body).await,
        }
    }

    /// Sends a message and returns its id. The text must be at most 64 KiB.
    /// The text is stored as given: a Functions queue trigger reading this
    /// queue needs `"extensions": {"queues": {"messageEncoding": "none"}}` in
    /// host.json, since it expects base64 otherwise.
    pub async fn send(&self, queue: &str, text: &str, options: SendOptions) -> Result<String> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(StoreError::permanent(
                format!("queue {queue}"),
                "a message is limited to 64 KiB",
            ));
        }
        tracing::debug!(queue, bytes = text.len(), "store send");
        match &self.backend {
            Backend::Azure(a) => a.send(queue, text, options).await,
            Backend::Local(l) => l.send(queue, text, options).await,
        }
    }

    /// Receives up to `max` (1–32) visible messages and hides them for
    /// `visibility`. An empty vector means nothing is visible now.
    pub async fn receive(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        let max = max.clamp(1, 32);
        tracing::debug!(
            queue,
            max,
            visibility_secs = visibility.as_secs(),
            "store receive"
        );
        match &self.backend {
            Backend::Azure(a) => a.receive(queue, max, visibility).await,
            Backend::Local(l) => l.receive(queue, max, visibility).await,
        }
    }

    /// Deletes a received message. `NotFound` if it is gone or the pop
    /// receipt is stale (someone received it again after our timeout).
    pub async fn delete_message(&self, queue: &str, id: &str, pop_receipt: &str) -> Result<()> {
        match &self.backend {
            Backend::Azure(a) => a.delete_message(queue, id, pop_receipt).await,
            Backend::Local(l) => l.delete_message(queue, id, pop_receipt).await,
        }
    }

    /// Hides a received message for `visibility` from now (extend a lease, or
    /// zero to release it) and returns the new pop receipt.
    pub async fn update_visibility(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String> {
        match &self.backend {
            Backend::Azure(a) => {
                a.update_visibility(queue, id, pop_receipt, visibility)
                    .await
            }
            Backend::Local(l) => {
                l.update_visibility(queue, id, pop_receipt, visibility)
                    .await
            }
        }
    }
}

/// A streaming upload in progress. Write with [`write`](Self::write), then
/// [`finish`](Self::finish); dropping it without finishing leaves the old
/// blob (if any) untouched (uncommitted Azure blocks expire after 7 days; the
/// local temp file is removed).
#[derive(Debug)]
pub struct BlobWriter {
    inner: WriterInner,
    buffer: Vec<u8>,
    block_size: usize,
}

#[derive(Debug)]
enum WriterInner {
    Azure(azure::AzureUpload),
    Local(local::LocalUpload),
}

impl BlobWriter {
    /// Buffers `data`, sending each full block as it fills. At most one
    /// block is held in memory.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let room = self.block_size - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.block_size {
                self.flush_block().await?;
            }
        }
        Ok(())
    }

    async fn flush_block(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let block = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(self.block_size.min(DEFAULT_BLOCK_SIZE)),
        ));
        match &mut self.inner {
            WriterInner::Azure(u) => u.stage(block).await,
            WriterInner::Local(u) => u.stage(block).await,
        }
    }

    /// Sends the last block and commits the blob atomically; returns its ETag.
    /// `Conflict` if the precondition no longer holds (nothing is replaced).
    pub async fn finish(mut self) -> Result<ETag> {
        self.flush_block().await?;
        match self.inner {
            WriterInner::Azure(u) => u.commit().await,
            WriterInner::Local(u) => u.commit().await,
        }
    }
}

/// Azure's container/queue naming rules, enforced on both backends so a name
/// that works locally also works in the cloud (and cannot escape the local
/// store's directory).
fn validate_resource_name(kind: &str, name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(StoreError::permanent(
            format!("{kind} {name:?}"),
            "names are 3-63 lowercase letters, digits and single hyphens",
        ))
    }
}

/// Blob names: `/`-separated segments, none empty, `.` or `..`; no
/// backslash or control characters; at most 1,024 characters (Azure's limit).
fn validate_blob_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && !name.chars().any(|c| c.is_control() || c == '\\')
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::permanent(
            format!("blob {name:?}"),
            "blob names are non-empty '/'-separated segments without '.', '..', '\\' or control characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoToken;

    #[async_trait::async_trait]
    impl TokenCredential for NoToken {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "no token in unit tests",
            ))
        }
    }

    fn identity_config() -> StorageConfig {
        StorageConfig::ManagedIdentity {
            blob: url::Url::parse("https://acme.blob.core.windows.net").expect("url"),
            queue: url::Url::parse("https://acme.queue.core.windows.net").expect("url"),
        }
    }

    #[test]
    fn managed_identity_needs_a_credential() {
        let err = Store::connect(&identity_config(), None).expect_err("no credential");
        assert!(matches!(err, StoreError::Config(_)), "{err}");
        let store = Store::connect(&identity_config(), Some(Arc::new(NoToken))).expect("store");
        assert_eq!(store.kind(), "azure");
    }

    /// A credential that cannot produce a token is a permanent failure that
    /// says so (nothing is sent without a token).
    #[tokio::test]
    async fn missing_token_is_permanent() {
        let store = Store::connect(&identity_config(), Some(Arc::new(NoToken))).expect("store");
        let err = store.get("dormant-state", "x").await.expect_err("no token");
        assert!(matches!(err, StoreError::Permanent { .. }), "{err:?}");
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn resource_names() {
        for ok in ["dormant-audit", "abc", "a1-b2"] {
            assert!(validate_resource_name("container", ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Dormant", "-abc", "abc-", "a--b", "a_b", "../x"] {
            assert!(validate_resource_name("container", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blob_names() {
        for ok in ["latest/report.html", "a", "2026-11-22.jsonl", "run 1/x.csv"] {
            assert!(validate_blob_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a\\b", "a\nb"] {
            assert!(validate_blob_name(bad).is_err(), "{bad:?}");
        }
    }
}
