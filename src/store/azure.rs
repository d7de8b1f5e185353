//! Azure backend on the official 1.x crates.
//!
//! Clients are built per call from shared `ClientOptions` (one transport, so
//! one connection pool): the crates' own `blob_client()` helpers percent-encode
//! `/` inside blob names, so blob URLs are built here segment by segment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::Policy;
use azure_core::http::{
    ClientOptions, HttpClient, HttpClientOptions, RequestContent, Transport, Url, new_http_client,
};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions, BlobClientDeleteOptions,
    BlobClientDownloadOptions, BlobClientDownloadResult, BlobClientGetPropertiesResultHeaders as _,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::{
    AppendBlobClient, BlobClient, BlobClientOptions, BlobContainerClient,
    BlobContainerClientOptions,
};
use azure_storage_queue::models::{
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use super::error::{ConflictKind, Result, StoreError};
use super::shared_key::SharedKeyPolicy;
use super::{Blob, BlobInfo, BlobPage, ETag, Precondition, ReceivedMessage, SendOptions};
use crate::config::storage::{AccountConnection, trim_trailing_slash};

pub(crate) struct AzureStore {
    blob_endpoint: Url,
    queue_endpoint: Url,
    credential: Option<Arc<dyn TokenCredential>>,
    options: ClientOptions,
    append_positions: AppendPositions,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore")
            .field("blob_endpoint", &self.blob_endpoint.as_str())
            .field("queue_endpoint", &self.queue_endpoint.as_str())
            .field(
                "auth",
                &if self.credential.is_some() {
                    "token"
                } else {
                    "shared-key"
                },
            )
            .finish()
    }
}

fn base_options(http: Option<Arc<dyn HttpClient>>) -> ClientOptions {
    // Storage clients turn off automatic decompression (ranged downloads
    // need the raw bytes); keep that when supplying our own transport.
    let http = http.unwrap_or_else(|| {
        new_http_client(Some(HttpClientOptions {
            automatic_decompression: false,
        }))
    });
    ClientOptions {
        transport: Some(Transport::new(http)),
        ..Default::default()
    }
}

impl AzureStore {
    pub fn with_shared_key(
        conn: AccountConnection,
        http: Option<Arc<dyn HttpClient>>,
    ) -> Result<Self> {
        let mut options = base_options(http);
        let policy: Arc<dyn Policy> = Arc::new(SharedKeyPolicy::new(conn.account, conn.key));
        options.per_try_policies.push(policy);
        tracing::debug!(
            blob = %conn.blob_endpoint,
            queue = %conn.queue_endpoint,
            "storage: account key (Shared Key) authorization"
        );
        Ok(Self {
            blob_endpoint: trim_trailing_slash(conn.blob_endpoint),
            queue_endpoint: trim_trailing_slash(conn.queue_endpoint),
            credential: None,
            options,
            append_positions: AppendPositions::default(),
        })
    }

    pub fn with_token(
        blob: Url,
        queue: Url,
        credential: Arc<dyn TokenCredential>,
        http: Option<Arc<dyn HttpClient>>,
    ) -> Result<Self> {
        Ok(Self {
            blob_endpoint: trim_trailing_slash(blob),
            queue_endpoint: trim_trailing_slash(queue),
            credential: Some(credential),
            options: base_options(http),
            append_positions: AppendPositions::default(),
        })
    }

    fn url(base: &Url, segments: &[&str]) -> Url {
        let mut url = base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("service endpoints are http(s) URLs, which can be a base");
            path.pop_if_empty();
            for s in segments {
                for part in s.split('/') {
                    path.push(part);
                }
            }
        }
        url
    }

    fn container(&self, container: &str) -> Result<BlobContainerClient> {
        let url = Self::url(&self.blob_endpoint, &[container]);
        BlobContainerClient::new(
            url,
            self.credential.clone(),
            Some(BlobContainerClientOptions {
                client_options: self.options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| map_err(&format!("container {container}"), e))
    }

    fn blob(&self, container: &str, name: &str) -> Result<BlobClient> {
        let url = Self::url(&self.blob_endpoint, &[container, name]);
        BlobClient::new(
            url,
            self.credential.clone(),
            Some(BlobClientOptions {
                client_options: self.options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| map_err(&what(container, name), e))
    }

    fn queue(&self, queue: &str) -> Result<QueueClient> {
        let url = Self::url(&self.queue_endpoint, &[queue]);
        QueueClient::new(
            url,
            self.credential.clone(),
            Some(QueueClientOptions {
                client_options: self.options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| map_err(&format!("queue {queue}"), e))
    }

    pub async fn ensure_container(&self, container: &str) -> Result<()> {
        match self.container(container)?.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e).as_deref() == Some("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(map_err(&format!("container {container}"), e)),
        }
    }

    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        // 201 created, 204 already there with the same metadata; 409 only if
        // someone set different metadata, which still means it exists.
        match self.queue(queue)?.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e).as_deref() == Some("QueueAlreadyExists") => Ok(()),
            Err(e) => Err(map_err(&format!("queue {queue}"), e)),
        }
    }

    pub async fn put(
        &self,
        container: &str,
        name: &str,
        body: Bytes,
        precondition: Precondition,
    ) -> Result<ETag> {
        let (if_match, if_none_match) = conditions(&precondition);
        let options = BlockBlobClientUploadOptions {
            if_match,
            if_none_match,
            ..Default::default()
        };
        let result = self
            .blob(container, name)?
            .upload(body.into(), Some(options))
            .await
            .map_err(|e| map_err(&what(container, name), e))?;
        result
            .etag
            .map(|e| etag(e.as_ref()))
            .ok_or_else(|| missing_etag(container, name))
    }

    pub fn upload(
        &self,
        container: &str,
        name: &str,
        precondition: Precondition,
    ) -> Result<AzureUpload> {
        Ok(AzureUpload {
            client: self.blob(container, name)?,
            what: what(container, name),
            precondition,
            block_ids: Vec::new(),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// Starts a download; the blob's name for errors comes along.
    async fn download(
        &self,
        container: &str,
        name: &str,
    ) -> Result<(String, BlobClientDownloadResult)> {
        let w = what(container, name);
        let result = self
            .blob(container, name)?
            .download(None)
            .await
            .map_err(|e| read_err(&w, e))?;
        Ok((w, result))
    }

    pub async fn get(&self, container: &str, name: &str) -> Result<Blob> {
        let (w, result) = self.download(container, name).await?;
        let etag = result
            .properties
            .etag
            .clone()
            .map(|e| etag(e.as_ref()))
            .ok_or_else(|| missing_etag(container, name))?;
        let body = result.body.collect().await.map_err(|e| read_err(&w, e))?;
        Ok(Blob { body, etag })
    }

    pub async fn get_stream(&self, container: &str, name: &str) -> Result<super::BlobStream> {
        let (w, result) = self.download(container, name).await?;
        Ok(result
            .body
            .map(move |chunk| chunk.map_err(|e| read_err(&w, e)))
            .boxed())
    }

    pub async fn list_page(
        &self,
        container: &str,
        prefix: &str,
        marker: Option<String>,
        max_results: Option<u32>,
    ) -> Result<BlobPage> {
        let w = format!("listing of {container}");
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            marker,
            maxresults: max_results.map(|m| m as i32),
            ..Default::default()
        };
        let mut pages = self
            .container(container)?
            .list_blobs(Some(options))
            .map_err(|e| map_err(&w, e))?
            .into_pages();
        let Some(page) = pages.next().await else {
            return Ok(BlobPage {
                items: Vec::new(),
                next_marker: None,
            });
        };
        let page = page
            .map_err(|e| map_err(&w, e))?
            .into_model()
            .map_err(|e| map_err(&w, e))?;
        let mut items = Vec::with_capacity(page.blob_items.len());
        for item in page.blob_items {
            let (Some(name), Some(props)) = (item.name, item.properties) else {
                continue;
            };
            let Some(tag) = props.etag else {
                continue;
            };
            items.push(BlobInfo {
                name,
                size: props.content_length.unwrap_or(0),
                etag: etag(tag.as_ref()),
                last_modified: props
                    .last_modified
                    .map(to_chrono)
                    .unwrap_or(DateTime::UNIX_EPOCH),
            });
        }
        Ok(BlobPage {
            items,
            next_marker: page.next_marker.filter(|m| !m.is_empty()),
        })
    }

    pub async fn delete(&self, container: &str, name: &str, etag: Option<&ETag>) -> Result<()> {
        let options = etag.map(|tag| BlobClientDeleteOptions {
            if_match: Some(tag.0.as_str().into()),
            ..Default::default()
        });
        self.blob(container, name)?
            .delete(options)
            .await
            .map(|_| ())
            .map_err(|e| map_err(&what(container, name), e))
    }

    /// Append Block at a stated position, so that an append lands once even
    /// when its answer is lost.
    ///
    /// The SDK retries a request whose answer did not arrive (a connection
    /// reset, a timeout, a 500 after the service wrote): a plain Append Block
    /// retried that way lands twice. With `x-ms-blob-condition-appendpos`
    /// the block can only land at `position`, so after a `412
    /// AppendPositionConditionNotMet` one ranged read of `position..+len`
    /// settles it: our bytes there mean an earlier try landed (done, once);
    /// other bytes mean another writer got there first, and we go again at
    /// the blob's length (the read's `Content-Range` gives it). The other
    /// way, a dedupe key per record, would have every reader filter
    /// duplicates and every writer read back what it appended; here the
    /// common case costs nothing extra (the position is remembered from our
    /// own last append) and a conflict (several instances append to one
    /// day's blob) costs one small read. Byte-identical data racing for one
    /// position is taken as ours: for audit lines, stamped to the
    /// nanosecond, that is one record written twice, kept once.
    ///
    /// The append blob is created on first use, create-only (`If-None-Match:
    /// *`) so two first writers cannot truncate each other's records.
    pub async fn append(&self, container: &str, name: &str, body: Bytes) -> Result<()> {
        let w = what(container, name);
        let key = format!("{container}/{name}");
        let blob = self.blob(container, name)?;
        let client = blob.append_blob_client();
        let len = body.len() as u64;
        let mut position = match self.append_positions.get(&key) {
            Some(p) => p,
            None => self.blob_length(&blob, &w).await?,
        };
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let options = AppendBlobClientAppendBlockOptions {
                append_position: Some(i64::try_from(position).unwrap_or(i64::MAX)),
                ..Default::default()
            };
            let error = match client
                .append_block(body.clone().into(), len, Some(options))
                .await
            {
                Ok(_) => {
                    self.append_positions.set(&key, position + len);
                    return Ok(());
                }
                Err(e) => e,
            };
            match error_code(&error).as_deref() {
                Some("AppendPositionConditionNotMet") => {
                    match self.bytes_at(&blob, position, &body, &w).await? {
                        AtPosition::Ours { blob_length } => {
                            self.append_positions.set(&key, blob_length);
                            return Ok(());
                        }
                        AtPosition::Other { blob_length } => position = blob_length,
                    }
                    if attempt >= 2 {
                        // Writers keep overtaking each other: spread them out.
                        let cap = 5u64 << attempt.min(6);
                        let wait = rand::random_range(0..cap);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                }
                Some("BlobNotFound") => {
                    position = match self.create_append_blob(&client, &w).await? {
                        true => 0,
                        false => self.blob_length(&blob, &w).await?,
                    };
                }
                _ => {
                    self.append_positions.forget(&key);
                    return Err(map_err(&w, error));
                }
            }
        }
        self.append_positions.forget(&key);
        Err(StoreError::Transient {
            what: w,
            detail: "too many concurrent appenders; try again".into(),
        })
    }

    /// Creates an empty append blob unless one exists (someone else's
    /// first write is fine: we append to theirs). `true` if it is ours,
    /// so still empty as far as we know.
    async fn create_append_blob(&self, client: &AppendBlobClient, w: &str) -> Result<bool> {
        let create = AppendBlobClientCreateOptions {
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        match client.create(Some(create)).await {
            Ok(_) => Ok(true),
            Err(e) => match map_err(w, e) {
                StoreError::Conflict { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// The blob's length, creating it empty if it does not exist yet.
    async fn blob_length(&self, blob: &BlobClient, w: &str) -> Result<u64> {
        for _ in 0..2 {
            match blob.get_properties(None).await {
                Ok(props) => {
                    return props
                        .content_length()
                        .map_err(|e| map_err(w, e))?
                        .ok_or_else(|| StoreError::permanent(w, "the service sent no length"));
                }
                // A HEAD answer has no body, so no error code: the status says it.
                Err(e) if is_status(&e, 404) => {
                    // Ours: empty, no need to ask (a wrong guess costs a 412).
                    if self
                        .create_append_blob(&blob.append_blob_client(), w)
                        .await?
                    {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(map_err(w, e)),
            }
        }
        Err(StoreError::Transient {
            what: w.to_owned(),
            detail: "the append blob vanished after it was created".into(),
        })
    }

    /// Whether `ours` sits at `position`, and the blob's length.
    async fn bytes_at(
        &self,
        blob: &BlobClient,
        position: u64,
        ours: &[u8],
        w: &str,
    ) -> Result<AtPosition> {
        let options = BlobClientDownloadOptions {
            range: Some((position..position + ours.len() as u64).into()),
            ..Default::default()
        };
        let result = match blob.download(Some(options)).await {
            Ok(r) => r,
            // Shorter than `position` (deleted and created again since we
            // remembered it): nothing of ours can be there.
            Err(e) if is_status(&e, 416) => {
                return Ok(AtPosition::Other {
                    blob_length: self.blob_length(blob, w).await?,
                });
            }
            Err(e) => return Err(read_err(w, e)),
        };
        let blob_length = result
            .headers
            .get_optional_str(&HeaderName::from_static("content-range"))
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse::<u64>().ok());
        let there = result.body.collect().await.map_err(|e| read_err(w, e))?;
        let blob_length = match blob_length {
            Some(l) => l,
            None => self.blob_length(blob, w).await?,
        };
        Ok(if there.as_ref() == ours {
            AtPosition::Ours { blob_length }
        } else {
            AtPosition::Other { blob_length }
        })
    }

    pub async fn send(&self, queue: &str, text: &str, options: SendOptions) -> Result<String> {
        let w = format!("queue {queue}");
        let message = QueueMessage {
            message_text: Some(text.to_owned()),
        };
        let content: RequestContent<QueueMessage, _> =
            message.try_into().map_err(|e| map_err(&w, e))?;
        let send_options = QueueClientSendMessageOptions {
            visibility_timeout: options.initial_delay.map(|d| secs(d, 0)),
            message_time_to_live: options.ttl.map(|d| secs(d, 1)),
            ..Default::default()
        };
        let sent = self
            .queue(queue)?
            .send_message(content, Some(send_options))
            .await
            .map_err(|e| map_err(&w, e))?
            .into_model()
            .map_err(|e| map_err(&w, e))?;
        sent.items
            .and_then(|items| items.into_iter().next())
            .and_then(|m| m.message_id)
            .ok_or_else(|| StoreError::permanent(w, "the service returned no message id"))
    }

    pub async fn receive(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>> {
        let w = format!("queue {queue}");
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max as i32),
            // The service wants 1 s .. 7 days here.
            visibility_timeout: Some(secs(visibility, 1)),
            ..Default::default()
        };
        let received = self
            .queue(queue)?
            .receive_messages(Some(options))
            .await
            .map_err(|e| map_err(&w, e))?
            .into_model()
            .map_err(|e| map_err(&w, e))?;
        let mut out = Vec::new();
        for m in received.items.unwrap_or_default() {
            let (Some(id), Some(pop_receipt)) = (m.message_id, m.pop_receipt) else {
                continue;
            };
            out.push(ReceivedMessage {
                id,
                pop_receipt,
                text: m.message_text.unwrap_or_default(),
                dequeue_count: m.dequeue_count.unwrap_or(1).clamp(0, u32::MAX as i64) as u32,
                inserted_at: m.insertion_time.map(to_chrono).unwrap_or_else(Utc::now),
                next_visible_at: m.time_next_visible.map(to_chrono).unwrap_or_else(Utc::now),
            });
        }
        Ok(out)
    }

    pub async fn delete_message(&self, queue: &str, id: &str, pop_receipt: &str) -> Result<()> {
        self.queue(queue)?
            .delete_message(id, pop_receipt, None)
            .await
            .map(|_| ())
            .map_err(|e| map_err(&format!("message {id} in queue {queue}"), e))
    }

    pub async fn update_visibility(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<String> {
        let w = format!("message {id} in queue {queue}");
        let rsp = self
            .queue(queue)?
            .update_message(id, pop_receipt, secs(visibility, 0), None)
            .await
            .map_err(|e| map_err(&w, e))?;
        rsp.headers()
            .get_optional_str(&HeaderName::from_static("x-ms-popreceipt"))
            .map(str::to_owned)
            .ok_or_else(|| StoreError::permanent(w, "the service returned no pop receipt"))
    }
}

/// Azure's limit on committed blocks per block blob.
const MAX_BLOCKS: usize = 50_000;

/// Append tries before a blob that other writers keep extending is
/// reported busy (each lost race costs one small read and a short wait).
const MAX_APPEND_ATTEMPTS: u32 = 32;
/// Append blobs whose end this process remembers; past this it starts
/// over (a forgotten end costs one length probe).
const MAX_APPEND_POSITIONS: usize = 4096;

/// What a ranged read found where our append would have landed.
enum AtPosition {
    Ours { blob_length: u64 },
    Other { blob_length: u64 },
}

/// Where each append blob ended after this process last appended to it:
/// the position the next append states. A guess only: a wrong one costs a
/// `412` and a read, never a misplaced block.
#[derive(Debug, Default)]
struct AppendPositions(std::sync::Mutex<HashMap<String, u64>>);

impl AppendPositions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Only guesses inside: a panic elsewhere leaves nothing unsafe.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.lock().get(key).copied()
    }

    fn set(&self, key: &str, end: u64) {
        let mut map = self.lock();
        if map.len() >= MAX_APPEND_POSITIONS && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_owned(), end);
    }

    fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// A block blob being staged. Block ids carry a per-upload nonce so two
/// uploads racing to the same name cannot commit each other's blocks.
pub(crate) struct AzureUpload {
    client: BlobClient,
    what: String,
    precondition: Precondition,
    block_ids: Vec<Vec<u8>>,
    nonce: String,
}

impl std::fmt::Debug for AzureUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureUpload")
            .field("blob", &self.what)
            .field("blocks", &self.block_ids.len())
            .finish()
    }
}

impl AzureUpload {
    pub async fn stage(&mut self, block: Bytes) -> Result<()> {
        if self.block_ids.len() >= MAX_BLOCKS {
            return Err(StoreError::permanent(
                self.what.clone(),
                "a block blob holds at most 50,000 blocks: upload with a larger block size",
            ));
        }
        // Ids must all have the same length within a blob: fixed-width index.
        let id = format!("{}-{:08}", self.nonce, self.block_ids.len()).into_bytes();
        let len = block.len() as u64;
        self.client
            .block_blob_client()
            .stage_block(&id, len, block.into(), None)
            .await
            .map_err(|e| map_err(&self.what, e))?;
        self.block_ids.push(id);
        Ok(())
    }

    pub async fn commit(self) -> Result<ETag> {
        let (if_match, if_none_match) = conditions(&self.precondition);
        let list = BlockLookupList {
            latest: Some(self.block_ids),
            ..Default::default()
        };
        let content: RequestContent<BlockLookupList, _> =
            list.try_into().map_err(|e| map_err(&self.what, e))?;
        let options = BlockBlobClientCommitBlockListOptions {
            if_match,
            if_none_match,
            ..Default::default()
        };
        let rsp = self
            .client
            .block_blob_client()
            .commit_block_list(content, Some(options))
            .await
            .map_err(|e| map_err(&self.what, e))?;
        rsp.headers()
            .get_optional_str(&HeaderName::from_static("etag"))
            .map(etag)
            .ok_or_else(|| StoreError::permanent(self.what, "the service returned no ETag"))
    }
}

fn conditions(
    p: &Precondition,
) -> (
    Option<azure_core::http::Etag>,
    Option<azure_core::http::Etag>,
) {
    match p {
        Precondition::None => (None, None),
        Precondition::IfMatch(tag) => (Some(tag.0.as_str().into()), None),
        Precondition::IfNoneMatch => (None, Some("*".into())),
    }
}

/// Headers quote ETags (`"0x8D…"`), listing XML does not (`0x8D…`): keep
/// one form, quoted, so a listed ETag can be compared and used in `If-Match`.
fn etag(raw: &str) -> ETag {
    let raw = raw.trim();
    if raw.starts_with('"') || raw.starts_with("W/") {
        ETag(raw.to_owned())
    } else {
        ETag(format!("\"{raw}\""))
    }
}

fn what(container: &str, name: &str) -> String {
    format!("blob {container}/{name}")
}

fn missing_etag(container: &str, name: &str) -> StoreError {
    StoreError::permanent(what(container, name), "the service returned no ETag")
}

/// Seconds for the service, rounded up so a sub-second delay is not lost.
fn secs(d: Duration, min: i32) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX).max(min)
}

fn to_chrono(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or(DateTime::UNIX_EPOCH)
}

fn is_status(e: &azure_core::Error, want: u16) -> bool {
    matches!(e.kind(), ErrorKind::HttpResponse { status, .. } if u16::from(*status) == want)
}

fn error_code(e: &azure_core::Error) -> Option<String> {
    match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

/// A download's error. Large blobs download in ETag-locked ranges; a write
/// in between fails the later ranges with 412, which here means "changed
/// while reading": worth a retry, not a conflict of ours.
fn read_err(what: &str, e: azure_core::Error) -> StoreError {
    match map_err(what, e) {
        StoreError::Conflict {
            what,
            kind: ConflictKind::PreconditionFailed,
        } => StoreError::Transient {
            what,
            detail: "the blob changed while it was read".to_owned(),
        },
        other => other,
    }
}

/// Maps an SDK error to the store's kinds. Only the status and the service's
/// error code reach the message: Azure's 403 body quotes the string it
/// signed, and nothing from a response body belongs in our logs.
fn map_err(what: &str, e: azure_core::Error) -> StoreError {
    let what = what.to_owned();
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let code = error_code.clone().unwrap_or_default();
            match (status, code.as_str()) {
                (404, _) | (400, "PopReceiptMismatch") => StoreError::NotFound { what },
                (412, _) => StoreError::Conflict {
                    what,
                    kind: ConflictKind::PreconditionFailed,
                },
                (409, "BlockCountExceedsLimit") => StoreError::Conflict {
                    what,
                    kind: ConflictKind::AppendBlobFull,
                },
                (409, c) if c.ends_with("AlreadyExists") => StoreError::Conflict {
                    what,
                    kind: ConflictKind::AlreadyExists,
                },
                (409, c) => StoreError::Conflict {
                    what,
                    kind: ConflictKind::Other(c.to_owned()),
                },
                (408 | 429 | 500..=599, _) => StoreError::Transient {
                    what,
                    detail: format!("HTTP {status} {code}").trim_end().to_owned(),
                },
                (403, _) => StoreError::Permanent {
                    what,
                    detail: format!(
                        "HTTP 403 {code}: authorization refused (check the account key, or the identity's Storage Blob/Queue Data role)"
                    ),
                },
                _ => StoreError::Permanent {
                    what,
                    detail: format!("HTTP {status} {code}").trim_end().to_owned(),
                },
            }
        }
        ErrorKind::Connection | ErrorKind::Io => StoreError::Transient {
            what,
            detail: format!("connection failed: {e}"),
        },
        ErrorKind::Credential => StoreError::Permanent {
            what,
            detail: "could not get a token for storage from the credential".to_owned(),
        },
        _ => StoreError::Permanent {
            what,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_slashes_in_blob_names_and_encode_the_rest() {
        let base = Url::parse("http://127.0.0.1:10000/devstoreaccount1").expect("url");
        let u = AzureStore::url(&base, &["dormant-reports", "latest/report 1.html"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/dormant-reports/latest/report%201.html"
        );
        let base = Url::parse("https://a.blob.core.windows.net/").expect("url");
        let u = AzureStore::url(&base, &["c"]);
        assert_eq!(u.as_str(), "https://a.blob.core.windows.net/c");
    }

    use azure_core::http::StatusCode;

    fn http(status: StatusCode, code: Option<&str>) -> azure_core::Error {
        ErrorKind::HttpResponse {
            status,
            error_code: code.map(str::to_owned),
            raw_response: None,
        }
        .into_error()
    }

    #[test]
    fn service_errors_map_to_store_kinds() {
        let m = |s, c| map_err("blob c/x", http(s, c));
        assert!(m(StatusCode::NotFound, Some("BlobNotFound")).is_not_found());
        assert!(m(StatusCode::BadRequest, Some("PopReceiptMismatch")).is_not_found());
        assert!(matches!(
            m(StatusCode::PreconditionFailed, Some("ConditionNotMet")),
            StoreError::Conflict {
                kind: ConflictKind::PreconditionFailed,
                ..
            }
        ));
        assert!(matches!(
            m(StatusCode::Conflict, Some("BlobAlreadyExists")),
            StoreError::Conflict {
                kind: ConflictKind::AlreadyExists,
                ..
            }
        ));
        assert!(matches!(
            m(StatusCode::Conflict, Some("BlockCountExceedsLimit")),
            StoreError::Conflict {
                kind: ConflictKind::AppendBlobFull,
                ..
            }
        ));
        for s in [
            StatusCode::ServiceUnavailable,
            StatusCode::InternalServerError,
            StatusCode::TooManyRequests,
            StatusCode::RequestTimeout,
        ] {
            assert!(m(s, Some("ServerBusy")).is_transient(), "{s:?}");
        }
        let forbidden = m(StatusCode::Forbidden, Some("AuthenticationFailed"));
        assert!(matches!(forbidden, StoreError::Permanent { .. }));
        assert!(forbidden.to_string().contains("403"));
        let reset = map_err(
            "queue q",
            azure_core::Error::with_message(ErrorKind::Connection, "connection reset"),
        );
        assert!(reset.is_transient());
        let io = map_err(
            "queue q",
            azure_core::Error::with_message(ErrorKind::Io, "timed out"),
        );
        assert!(io.is_transient());
        assert!(!map_err("q", http(StatusCode::BadRequest, Some("InvalidInput"))).is_transient());
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(etag("0x8D1").0, "\"0x8D1\"");
        assert_eq!(etag("\"0x8D1\"").0, "\"0x8D1\"");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(secs(Duration::from_millis(1500), 0), 2);
        assert_eq!(secs(Duration::ZERO, 1), 1);
        assert_eq!(secs(Duration::from_secs(30), 1), 30);
    }
}
