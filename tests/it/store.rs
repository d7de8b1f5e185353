//! One behavioural suite for the store, run against both backends: the local
//! directory store (a temp dir) and Azure for real (Azurite, which checks
//! Shared Key signatures). Every case takes a `Store` and unique names, so
//! cases run in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use dormant::store::audit::{AuditLog, AuditRecord, Outcome};
use dormant::store::{
    ConflictKind, LocalOptions, Precondition, SendOptions, StorageConfig, Store, StoreError,
};
use secrecy::SecretString;

use crate::azurite::azurite;

/// A fresh local store; keep the `TempDir` alive for the test.
pub fn local_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::local(dir.path()).expect("local store");
    (store, dir)
}

/// A store on the shared Azurite, through the connection-string path.
pub fn azurite_store() -> Store {
    let config = StorageConfig::ConnectionString(SecretString::from(azurite().connection_string()));
    Store::connect(&config, None).expect("azurite store")
}

/// A name no other test uses (valid for containers and queues).
pub fn unique(tag: &str) -> String {
    format!(
        "t{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..20]
    )
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn local() {
                    let (store, _dir) = super::local_store();
                    super::cases::$case(store).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn azurite() {
                    super::cases::$case(super::azurite_store()).await;
                }
            }
        )*
    };
}

both_backends!(
    ensure_is_idempotent,
    put_get_list_delete,
    etag_conflict_does_not_overwrite,
    racing_conditional_writers_have_one_winner,
    create_only_conflicts,
    streaming_upload_many_blocks,
    streaming_upload_respects_preconditions,
    streaming_read_in_chunks,
    concurrent_appends_lose_nothing,
    listing_across_pages,
    not_found_is_typed,
    queue_send_receive_visibility_delete,
    queue_delay_and_update_visibility,
    queue_concurrent_receivers_share_without_duplicates,
    audit_log_round_trip,
    audit_subject_index_round_trip,
);

const ALICE: &str = "5b3a1c2d-3333-4e4e-8f8f-0123456789ab";

/// The lines of blob `name` in container `c`.
async fn blob_lines(store: &Store, c: &str, name: &str) -> Vec<String> {
    let body = store.get(c, name).await.expect("get").body;
    let text = std::str::from_utf8(&body).expect("utf8");
    text.lines().map(str::to_owned).collect()
}

mod cases {
    use super::*;

    pub async fn ensure_is_idempotent(store: Store) {
        store.ensure_defaults().await.expect("first");
        store.ensure_defaults().await.expect("second");
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        store.ensure_container(&c).await.expect("container again");
        let q = unique("q");
        store.ensure_queue(&q).await.expect("queue");
        store.ensure_queue(&q).await.expect("queue again");
        let bad = store
            .ensure_container("Bad_Name")
            .await
            .expect_err("invalid");
        assert!(matches!(bad, StoreError::Permanent { .. }), "{bad}");
    }

    pub async fn put_get_list_delete(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        let e1 = store
            .put(
                &c,
                "latest/report.html",
                Bytes::from_static(b"<html>1</html>"),
                Precondition::None,
            )
            .await
            .expect("put");
        let got = store.get(&c, "latest/report.html").await.expect("get");
        assert_eq!(got.body.as_ref(), b"<html>1</html>");
        assert_eq!(got.etag, e1);

        let e2 = store
            .put(
                &c,
                "latest/report.html",
                Bytes::from_static(b"<html>22</html>"),
                Precondition::None,
            )
            .await
            .expect("overwrite");
        assert_ne!(e1, e2, "a new body gets a new ETag");
        store
            .put(
                &c,
                "other.txt",
                Bytes::from_static(b"x"),
                Precondition::None,
            )
            .await
            .expect("put other");

        let listed = store.list(&c, "latest/").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "latest/report.html");
        assert_eq!(listed[0].size, 15);
        assert_eq!(listed[0].etag, e2);
        let age = chrono::Utc::now() - listed[0].last_modified;
        assert!(
            age.num_seconds().abs() < 300,
            "last-modified is recent: {age}"
        );
        assert_eq!(store.list(&c, "").await.expect("list all").len(), 2);

        // Names needing percent-encoding are signed and listed correctly.
        let odd = "odd names/run 1/ä+b%20c.csv";
        let e_odd = store
            .put(&c, odd, Bytes::from_static(b"odd"), Precondition::None)
            .await
            .expect("put odd name");
        assert_eq!(store.get(&c, odd).await.expect("get odd").etag, e_odd);
        let listed = store.list(&c, "odd names/").await.expect("list odd");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, odd);
        store.delete(&c, odd).await.expect("delete odd");

        // A name prefix is not a blob.
        assert!(
            store
                .get(&c, "latest")
                .await
                .expect_err("prefix")
                .is_not_found()
        );
        store
            .delete(&c, "latest/report.html")
            .await
            .expect("delete");
        assert!(
            store
                .get(&c, "latest/report.html")
                .await
                .expect_err("gone")
                .is_not_found()
        );
        assert_eq!(store.list(&c, "").await.expect("list").len(), 1);
    }

    pub async fn etag_conflict_does_not_overwrite(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        let e1 = store
            .put(
                &c,
                "case.json",
                Bytes::from_static(b"v1"),
                Precondition::None,
            )
            .await
            .expect("put");
        let e2 = store
            .put(
                &c,
                "case.json",
                Bytes::from_static(b"v2"),
                Precondition::IfMatch(e1.clone()),
            )
            .await
            .expect("matching ETag wins");
        let err = store
            .put(
                &c,
                "case.json",
                Bytes::from_static(b"stale"),
                Precondition::IfMatch(e1),
            )
            .await
            .expect_err("stale ETag must fail");
        assert!(
            matches!(
                &err,
                StoreError::Conflict {
                    kind: ConflictKind::PreconditionFailed,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_transient());
        let now = store.get(&c, "case.json").await.expect("get");
        assert_eq!(now.body.as_ref(), b"v2", "the losing write changed nothing");
        assert_eq!(now.etag, e2);

        // If-Match on a blob that does not exist is a lost precondition too
        // (Azure answers 412), and creates nothing.
        let err = store
            .put(
                &c,
                "never.json",
                Bytes::from_static(b"x"),
                Precondition::IfMatch(e2),
            )
            .await
            .expect_err("nothing to match");
        assert!(
            matches!(
                &err,
                StoreError::Conflict {
                    kind: ConflictKind::PreconditionFailed,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            store
                .get(&c, "never.json")
                .await
                .expect_err("absent")
                .is_not_found()
        );
    }

    /// Eight writers read the same ETag and race: exactly one wins and the
    /// blob holds the winner's body (check-then-write is atomic).
    pub async fn racing_conditional_writers_have_one_winner(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        let base = store
            .put(
                &c,
                "checkpoint.json",
                Bytes::from_static(b"0"),
                Precondition::None,
            )
            .await
            .expect("put");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, c, base) = (store.clone(), c.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let body = Bytes::from(format!("writer-{i}"));
                store
                    .put(
                        &c,
                        "checkpoint.json",
                        body.clone(),
                        Precondition::IfMatch(base),
                    )
                    .await
                    .map(|_| body)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(body) => winners.push(body),
                Err(e) => assert!(e.is_conflict(), "losers see Conflict: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one conditional writer wins");
        let now = store.get(&c, "checkpoint.json").await.expect("get");
        assert_eq!(now.body, winners[0]);

        // Create-only races too: one creator.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, c) = (store.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .put(
                        &c,
                        "run.lock",
                        Bytes::from(format!("{i}")),
                        Precondition::IfNoneMatch,
                    )
                    .await
                    .is_ok()
            }));
        }
        let mut created = 0;
        for t in tasks {
            created += usize::from(t.await.expect("task"));
        }
        assert_eq!(created, 1);
    }

    pub async fn create_only_conflicts(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        store
            .put(
                &c,
                "lock",
                Bytes::from_static(b"first"),
                Precondition::IfNoneMatch,
            )
            .await
            .expect("create");
        let err = store
            .put(
                &c,
                "lock",
                Bytes::from_static(b"second"),
                Precondition::IfNoneMatch,
            )
            .await
            .expect_err("exists");
        assert!(err.is_conflict(), "{err:?}");
        assert_eq!(
            store.get(&c, "lock").await.expect("get").body.as_ref(),
            b"first"
        );
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + i / 7) % 251) as u8).collect()
    }

    pub async fn streaming_upload_many_blocks(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        // 1 KiB blocks, ~40 of them, written in odd-sized pieces.
        let body = pattern(40 * 1024 + 123);
        let mut w = store
            .upload_with_block_size(&c, "run/inactive-users.csv", Precondition::None, 1024)
            .await
            .expect("upload");
        for piece in body.chunks(777) {
            w.write(piece).await.expect("write");
        }
        let etag = w.finish().await.expect("finish");
        let got = store.get(&c, "run/inactive-users.csv").await.expect("get");
        assert_eq!(got.body.len(), body.len());
        assert!(got.body.as_ref() == body.as_slice(), "byte-exact");
        assert_eq!(got.etag, etag);

        // An abandoned upload changes nothing.
        let mut w = store
            .upload_with_block_size(&c, "run/inactive-users.csv", Precondition::None, 1024)
            .await
            .expect("upload");
        w.write(&[b'z'; 3000]).await.expect("write");
        drop(w);
        let still = store.get(&c, "run/inactive-users.csv").await.expect("get");
        assert!(
            still.body.as_ref() == body.as_slice(),
            "dropped writer left the blob alone"
        );

        // An empty upload is a valid, empty blob.
        let w = store
            .upload_with_block_size(&c, "empty.csv", Precondition::None, 1024)
            .await
            .expect("upload");
        w.finish().await.expect("finish empty");
        assert!(
            store
                .get(&c, "empty.csv")
                .await
                .expect("get")
                .body
                .is_empty()
        );
    }

    /// A blob read as a stream comes back byte-exact, in more than one
    /// chunk when it is large, and a missing one is `NotFound` up front.
    pub async fn streaming_read_in_chunks(store: Store) {
        use futures::TryStreamExt as _;
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        let body = pattern(3 * 1024 * 1024 + 77);
        store
            .put(
                &c,
                "parts/big.csv",
                Bytes::from(body.clone()),
                Precondition::None,
            )
            .await
            .expect("put");
        let chunks: Vec<Bytes> = store
            .get_stream(&c, "parts/big.csv")
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("chunks");
        assert!(chunks.len() > 1, "read in pieces, not at once");
        assert!(chunks.concat() == body, "byte-exact");
        store
            .put(&c, "empty", Bytes::new(), Precondition::None)
            .await
            .expect("put empty");
        let empty: Vec<Bytes> = store
            .get_stream(&c, "empty")
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("chunks");
        assert!(empty.concat().is_empty());
        for (container, name) in [
            (c.as_str(), "nope"),
            (c.as_str(), "parts"),
            ("missing-c", "x"),
        ] {
            let err = match store.get_stream(container, name).await {
                Ok(_) => panic!("{container}/{name} streamed"),
                Err(e) => e,
            };
            assert!(err.is_not_found(), "{container}/{name}: {err:?}");
        }
    }

    pub async fn streaming_upload_respects_preconditions(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        let e1 = store
            .put(
                &c,
                "summary.json",
                Bytes::from_static(b"old"),
                Precondition::None,
            )
            .await
            .expect("put");
        let mut w = store
            .upload_with_block_size(&c, "summary.json", Precondition::IfNoneMatch, 4)
            .await
            .expect("upload");
        w.write(b"new new new").await.expect("write");
        assert!(w.finish().await.expect_err("exists").is_conflict());

        let mut w = store
            .upload_with_block_size(&c, "summary.json", Precondition::IfMatch(e1.clone()), 4)
            .await
            .expect("upload");
        w.write(b"newer").await.expect("write");
        // Someone else writes in between: our commit must lose.
        store
            .put(
                &c,
                "summary.json",
                Bytes::from_static(b"theirs"),
                Precondition::None,
            )
            .await
            .expect("put");
        let err = w.finish().await.expect_err("stale");
        assert!(err.is_conflict(), "{err:?}");
        assert_eq!(
            store
                .get(&c, "summary.json")
                .await
                .expect("get")
                .body
                .as_ref(),
            b"theirs"
        );
    }

    pub async fn concurrent_appends_lose_nothing(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        let mut tasks = Vec::new();
        for t in 0..16 {
            let store = store.clone();
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..8 {
                    let line = Bytes::from(format!("{{\"t\":{t},\"i\":{i}}}\n"));
                    store
                        .append(&c, "2026-11-22.jsonl", line)
                        .await
                        .expect("append");
                }
                let batch: Vec<Bytes> = (100..103)
                    .map(|i| Bytes::from(format!("{{\"t\":{t},\"i\":{i}}}\n")))
                    .collect();
                store
                    .append_batch(&c, "2026-11-22.jsonl", &batch)
                    .await
                    .expect("batch");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let lines = blob_lines(&store, &c, "2026-11-22.jsonl").await;
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(lines.len(), 16 * 11, "every line, none torn");
        let unique_lines: BTreeSet<&str> = lines.iter().copied().collect();
        assert_eq!(unique_lines.len(), 16 * 11);
        for t in 0..16 {
            let pos: Vec<usize> = (100..103)
                .map(|i| {
                    let want = format!("{{\"t\":{t},\"i\":{i}}}");
                    lines
                        .iter()
                        .position(|l| *l == want)
                        .expect("batched line present")
                })
                .collect();
            assert!(
                pos[1] == pos[0] + 1 && pos[2] == pos[1] + 1,
                "a batch stays contiguous"
            );
        }
    }

    pub async fn listing_across_pages(store: Store) {
        let c = unique("c");
        store.ensure_container(&c).await.expect("container");
        for i in 0..7 {
            store
                .put(
                    &c,
                    &format!("runs/r{i}/summary.json"),
                    Bytes::from(vec![b'x'; i]),
                    Precondition::None,
                )
                .await
                .expect("put");
        }
        store
            .put(
                &c,
                "zzz-outside",
                Bytes::from_static(b"o"),
                Precondition::None,
            )
            .await
            .expect("put");
        let mut names = Vec::new();
        let mut marker = None;
        let mut pages = 0;
        loop {
            let page = store
                .list_page(&c, "runs/", marker, Some(3))
                .await
                .expect("page");
            assert!(page.items.len() <= 3);
            pages += 1;
            names.extend(page.items.into_iter().map(|b| b.name));
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert!(
            pages >= 3,
            "7 names at 3 per page take 3 pages, got {pages}"
        );
        let want: Vec<String> = (0..7).map(|i| format!("runs/r{i}/summary.json")).collect();
        assert_eq!(names, want);
        let all = store.list(&c, "runs/").await.expect("list");
        assert_eq!(all.iter().map(|b| b.size).sum::<u64>(), 21);
    }

    pub async fn not_found_is_typed(store: Store) {
        let c = unique("c");
        let missing = unique("m");
        store.ensure_container(&c).await.expect("container");
        assert!(
            store
                .get(&c, "nope")
                .await
                .expect_err("blob")
                .is_not_found()
        );
        assert!(
            store
                .delete(&c, "nope")
                .await
                .expect_err("delete")
                .is_not_found()
        );
        assert!(
            store
                .get(&missing, "x")
                .await
                .expect_err("container")
                .is_not_found()
        );
        assert!(
            store
                .put(&missing, "x", Bytes::from_static(b"x"), Precondition::None)
                .await
                .expect_err("put into missing container")
                .is_not_found()
        );
        assert!(
            store
                .send(&missing, "x", SendOptions::default())
                .await
                .expect_err("queue")
                .is_not_found()
        );
        let q = unique("q");
        store.ensure_queue(&q).await.expect("queue");
        let err = store
            .delete_message(&q, "00000000-0000-0000-0000-000000000000", "receipt")
            .await
            .expect_err("message");
        assert!(err.is_not_found(), "{err:?}");
    }

    pub async fn queue_send_receive_visibility_delete(store: Store) {
        let q = unique("q");
        store.ensure_queue(&q).await.expect("queue");
        let text_a = r#"{"v":1,"kind":"disable","user":"u-1","note":"<&>"}"#;
        let id_a = store
            .send(&q, text_a, SendOptions::default())
            .await
            .expect("send a");
        let id_b = store
            .send(&q, "b", SendOptions::default())
            .await
            .expect("send b");
        assert_ne!(id_a, id_b);

        let got = store
            .receive(&q, 10, Duration::from_secs(2))
            .await
            .expect("receive");
        assert_eq!(got.len(), 2);
        let a = got.iter().find(|m| m.id == id_a).expect("a received");
        assert_eq!(a.text, text_a, "text round-trips, XML characters included");
        assert_eq!(a.dequeue_count, 1);
        assert!((chrono::Utc::now() - a.inserted_at).num_seconds().abs() < 300);
        let b = got
            .iter()
            .find(|m| m.id == id_b)
            .expect("b received")
            .clone();

        assert!(
            store
                .receive(&q, 10, Duration::from_secs(2))
                .await
                .expect("again")
                .is_empty(),
            "received messages are invisible"
        );
        store
            .delete_message(&q, &a.id, &a.pop_receipt)
            .await
            .expect("delete a");

        tokio::time::sleep(Duration::from_millis(3000)).await;
        let again = store
            .receive(&q, 10, Duration::from_secs(30))
            .await
            .expect("after timeout");
        assert_eq!(again.len(), 1, "only b comes back");
        assert_eq!(again[0].id, id_b);
        assert_eq!(again[0].dequeue_count, 2);
        let stale = store
            .delete_message(&q, &b.id, &b.pop_receipt)
            .await
            .expect_err("the old pop receipt is stale");
        assert!(stale.is_not_found(), "{stale:?}");
        store
            .delete_message(&q, &again[0].id, &again[0].pop_receipt)
            .await
            .expect("delete b");
        assert!(
            store
                .receive(&q, 10, Duration::from_secs(1))
                .await
                .expect("empty")
                .is_empty()
        );
    }

    pub async fn queue_delay_and_update_visibility(store: Store) {
        let q = unique("q");
        store.ensure_queue(&q).await.expect("queue");
        store
            .send(
                &q,
                "later",
                SendOptions {
                    initial_delay: Some(Duration::from_secs(2)),
                    ttl: Some(Duration::from_secs(3600)),
                },
            )
            .await
            .expect("send");
        assert!(
            store
                .receive(&q, 1, Duration::from_secs(30))
                .await
                .expect("now")
                .is_empty(),
            "a delayed message is not visible yet"
        );
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let got = store
            .receive(&q, 1, Duration::from_secs(60))
            .await
            .expect("later");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text, "later");

        // Release it at once: it is visible again, with a fresh count.
        let receipt = store
            .update_visibility(&q, &got[0].id, &got[0].pop_receipt, Duration::ZERO)
            .await
            .expect("update");
        assert_ne!(receipt, got[0].pop_receipt);
        let again = store
            .receive(&q, 1, Duration::from_secs(60))
            .await
            .expect("again");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].dequeue_count, 2);
        store
            .delete_message(&q, &again[0].id, &again[0].pop_receipt)
            .await
            .expect("delete");
    }

    pub async fn queue_concurrent_receivers_share_without_duplicates(store: Store) {
        let q = unique("q");
        store.ensure_queue(&q).await.expect("queue");
        for i in 0..24 {
            store
                .send(&q, &format!("m{i}"), SendOptions::default())
                .await
                .expect("send");
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let store = store.clone();
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let got = store
                        .receive(&q, 5, Duration::from_secs(60))
                        .await
                        .expect("receive");
                    if got.is_empty() {
                        return seen;
                    }
                    for m in got {
                        store
                            .delete_message(&q, &m.id, &m.pop_receipt)
                            .await
                            .expect("delete");
                        seen.push(m.text);
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        let set: BTreeSet<String> = all.iter().cloned().collect();
        assert_eq!(all.len(), 24, "each message handed out once");
        assert_eq!(set.len(), 24);
    }

    pub async fn audit_log_round_trip(store: Store) {
        let c = unique("a");
        // The container is created on first write if missing.
        let log = AuditLog::in_container(store.clone(), c.clone());
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        let at = day.and_hms_opt(2, 0, 0).expect("time").and_utc();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = AuditRecord::new("disable", Outcome::Done);
                r.time = at;
                r.user = Some(format!("user-{i}"));
                r.run = Some("20261122T020000Z-abcd".into());
                log.record(&r).await.expect("record");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut next_day = AuditRecord::new("gdpr-erase", Outcome::Accepted);
        next_day.time = at + chrono::Duration::days(1);
        next_day.request_id = Some("req-1".into());
        let mut failed = AuditRecord::new("delete", Outcome::Failed);
        failed.time = at;
        failed.error = Some("graph-503".into());
        log.record_batch(&[next_day.clone(), failed.clone()])
            .await
            .expect("batch");

        let records = log.read_day(day).await.expect("read");
        assert_eq!(records.len(), 11);
        let users: BTreeSet<_> = records.iter().filter_map(|r| r.user.clone()).collect();
        assert_eq!(users.len(), 10);
        assert!(records.contains(&failed));
        let tomorrow = log
            .read_day(day.succ_opt().expect("next"))
            .await
            .expect("read");
        assert_eq!(tomorrow, vec![next_day]);
        let names: Vec<String> = store
            .list(&c, "")
            .await
            .expect("list")
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, vec!["2026-11-22.jsonl", "2026-11-23.jsonl"]);
    }

    /// Records about a user reach the user's index beside the day; a day
    /// read never sees the index, and the index only its own subject.
    pub async fn audit_subject_index_round_trip(store: Store) {
        let c = unique("a");
        let log = AuditLog::in_container(store.clone(), c.clone());
        let alice = dormant::ids::ObjectId::parse(ALICE).expect("id");
        let bob = uuid::Uuid::new_v4().to_string();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        let at = day.and_hms_opt(2, 0, 0).expect("time").and_utc();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (log, bob) = (log.clone(), bob.clone());
            tasks.push(tokio::spawn(async move {
                let mut r = AuditRecord::new("notify", Outcome::Done);
                r.time = at + chrono::Duration::seconds(i);
                r.user = Some(if i % 3 == 0 { bob } else { ALICE.to_owned() });
                r.case = Some(format!("case-{i:02}"));
                log.record(&r).await.expect("record");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let cases: Vec<String> = log
            .subject_records(&alice)
            .await
            .expect("index")
            .into_iter()
            .filter_map(|r| r.case)
            .collect();
        let want: Vec<String> = (0..12)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("case-{i:02}"))
            .collect();
        assert_eq!(cases, want, "the subject's own records, in time order");
        assert_eq!(log.read_day(day).await.expect("day").len(), 12);
        let names: Vec<String> = store
            .list(&c, "by-user/")
            .await
            .expect("list")
            .into_iter()
            .map(|b| b.name)
            .collect();
        let mut want = vec![
            format!("by-user/{ALICE}.jsonl"),
            format!("by-user/{bob}.jsonl"),
        ];
        want.sort();
        assert_eq!(names, want);
    }
}

/// Plays a connection that drops after the service wrote an Append Block
/// but before its answer arrived, once: the SDK's retry policy sends the
/// same request again.
#[derive(Debug)]
struct LoseFirstAppendAnswer {
    inner: reqwest::Client,
    appends: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for LoseFirstAppendAnswer {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        let answer = self.inner.execute_request(request).await?;
        let append = request
            .url()
            .query()
            .is_some_and(|q| q.contains("comp=appendblock"));
        if append
            && self
                .appends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 0
        {
            assert_eq!(u16::from(answer.status()), 201, "the block was written");
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                "connection reset before the answer arrived",
            ));
        }
        Ok(answer)
    }
}

/// An Append Block whose answer is lost is sent again by the SDK; it must
/// not land twice (the append states its position, and the retry finds
/// its own bytes there).
#[tokio::test]
async fn azurite_an_append_whose_answer_is_lost_lands_once() {
    let config = StorageConfig::ConnectionString(SecretString::from(azurite().connection_string()));
    let http = std::sync::Arc::new(LoseFirstAppendAnswer {
        inner: reqwest::Client::new(),
        appends: std::sync::atomic::AtomicUsize::new(0),
    });
    let store = Store::connect_with_http_client(&config, None, Some(http.clone())).expect("store");
    let c = unique("c");
    store.ensure_container(&c).await.expect("container");
    store
        .append(&c, "2026-11-22.jsonl", Bytes::from_static(b"{\"n\":1}\n"))
        .await
        .expect("append");
    store
        .append(&c, "2026-11-22.jsonl", Bytes::from_static(b"{\"n\":2}\n"))
        .await
        .expect("append");
    let body = store.get(&c, "2026-11-22.jsonl").await.expect("get").body;
    assert_eq!(body.as_ref(), b"{\"n\":1}\n{\"n\":2}\n");
    assert!(
        http.appends.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the lost append was sent again"
    );
}

/// Two instances (each remembering where the blob ended after its own
/// appends) write to one day blob at once: each loses races to the other
/// and every line lands once, batches whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azurite_two_instances_append_to_one_blob() {
    let (a, b) = (azurite_store(), azurite_store());
    let c = unique("c");
    a.ensure_container(&c).await.expect("container");
    let mut tasks = Vec::new();
    for (who, store) in [("a", a.clone()), ("b", b.clone())] {
        for t in 0..4 {
            let (store, c) = (store.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let batch: Vec<Bytes> = (0..2)
                        .map(|k| {
                            Bytes::from(format!("{{\"w\":\"{who}{t}\",\"i\":{i},\"k\":{k}}}\n"))
                        })
                        .collect();
                    store
                        .append_batch(&c, "2026-11-22.jsonl", &batch)
                        .await
                        .expect("append");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let lines = blob_lines(&a, &c, "2026-11-22.jsonl").await;
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(lines.len(), 2 * 4 * 10 * 2, "every line once");
    let unique_lines: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique_lines.len(), lines.len());
    for pair in lines.chunks(2) {
        assert_eq!(
            pair[0].replace("\"k\":0", "\"k\":1"),
            pair[1],
            "a batch stays contiguous"
        );
    }
}

/// The local store's stand-in for Azure's 50,000-block limit sends the log
/// on to numbered siblings, and `read_day` reads them all, in order; a
/// subject's index rolls over the same way, and is read whole.
#[tokio::test]
async fn audit_rolls_over_to_siblings_when_a_day_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::local_with(
        dir.path(),
        LocalOptions {
            append_limit_bytes: Some(300),
        },
    )
    .expect("store");
    let log = AuditLog::new(store.clone());
    let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
        .expect("date")
        .and_hms_opt(3, 0, 0)
        .expect("time")
        .and_utc();
    let alice = dormant::ids::ObjectId::parse(ALICE).expect("id");
    for i in 0..12 {
        let mut r = AuditRecord::new("notify", Outcome::Done);
        r.time = at + chrono::Duration::seconds(i);
        r.case = Some(format!("case-{i:02}"));
        r.user = Some(ALICE.into());
        log.record(&r).await.expect("record");
    }
    let names: Vec<String> = store
        .list("dormant-audit", "")
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert!(names.len() >= 3, "rolled over: {names:?}");
    assert!(names.contains(&"2026-11-22.jsonl".to_owned()));
    assert!(names.contains(&"2026-11-22.1.jsonl".to_owned()));
    let back = log.read_day(at.date_naive()).await.expect("read");
    let cases: Vec<String> = back.into_iter().filter_map(|r| r.case).collect();
    let want: Vec<String> = (0..12).map(|i| format!("case-{i:02}")).collect();
    assert_eq!(cases, want, "all records, in write order across siblings");
    assert!(
        names.contains(&format!("by-user/{ALICE}.1.jsonl")),
        "{names:?}"
    );
    let indexed: Vec<String> = log
        .subject_records(&alice)
        .await
        .expect("index")
        .into_iter()
        .filter_map(|r| r.case)
        .collect();
    assert_eq!(indexed, want, "the index across its siblings");
    // A fresh log (a new process) finds its way past the full blobs too.
    let fresh = AuditLog::new(store.clone());
    let mut r = AuditRecord::new("notify", Outcome::Done);
    r.time = at + chrono::Duration::seconds(12);
    r.case = Some("case-12".into());
    r.user = Some(ALICE.into());
    fresh.record(&r).await.expect("record");
    assert_eq!(
        fresh.read_day(at.date_naive()).await.expect("read").len(),
        13
    );
    assert_eq!(
        fresh.subject_records(&alice).await.expect("index").len(),
        13
    );

    // A record that fits in no blob at all fails (the action must fail too)
    // instead of rolling over forever.
    let tiny = Store::local_with(
        dir.path().join("tiny"),
        LocalOptions {
            append_limit_bytes: Some(10),
        },
    )
    .expect("store");
    let err = AuditLog::new(tiny).record(&r).await.expect_err("too big");
    assert!(matches!(err, StoreError::Permanent { .. }), "{err:?}");
}

/// Two store handles on one directory behave like two processes: each
/// message goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_queue_is_shared_by_two_handles_on_one_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Store::local(dir.path()).expect("a");
    let b = Store::local(dir.path()).expect("b");
    a.ensure_queue("dormant-actions").await.expect("queue");
    for i in 0..10 {
        a.send("dormant-actions", &format!("m{i}"), SendOptions::default())
            .await
            .expect("send");
    }
    let (ra, rb) = tokio::join!(
        a.receive("dormant-actions", 32, Duration::from_secs(60)),
        b.receive("dormant-actions", 32, Duration::from_secs(60)),
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!(ra.len() + rb.len(), 10);
    let ids: BTreeSet<_> = ra.iter().chain(rb.iter()).map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), 10);
    // The report path the CLI prints is a plain file.
    a.ensure_container("dormant-reports").await.expect("c");
    a.put(
        "dormant-reports",
        "latest/report.html",
        Bytes::from_static(b"<html/>"),
        Precondition::None,
    )
    .await
    .expect("put");
    assert!(
        dir.path()
            .join("dormant-reports/latest/report.html")
            .is_file()
    );
}

/// Azurite checks signatures: a wrong key is a typed, permanent failure and
/// the key never shows up in the message.
#[tokio::test]
async fn azurite_rejects_a_wrong_key_as_permanent_without_echoing_it() {
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let config = StorageConfig::ConnectionString(SecretString::from(
        azurite().connection_string_with_key(wrong),
    ));
    let store = Store::connect(&config, None).expect("store");
    let err = store
        .ensure_container(&unique("c"))
        .await
        .expect_err("refused");
    assert!(matches!(err, StoreError::Permanent { .. }), "{err:?}");
    assert!(!err.is_transient());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(shown.contains("403"), "{shown}");
}

/// `UseDevelopmentStorage=true` signs with the well-known key; against the
/// test Azurite (other ports) only the parse is checked, and the config's
/// Debug output hides the connection string.
#[test]
fn development_storage_config_parses_and_hides_secrets() {
    let cfg = StorageConfig::from_lookup(|k| {
        (k == "AzureWebJobsStorage").then(|| "UseDevelopmentStorage=true".to_owned())
    })
    .expect("valid");
    assert!(!format!("{cfg:?}").contains("UseDevelopmentStorage"));
    let store = Store::connect(&cfg, None).expect("store");
    assert_eq!(store.kind(), "azure");
}

/// Env var that turns `local_cross_process_child` into a worker process for
/// `local_store_is_safe_across_processes`; unset, the child test does nothing.
const CHILD_DIR: &str = "DORMANT_TEST_STORE_CHILD_DIR";

/// The worker half of the cross-process test: drains the queue, records each
/// message it got in the shared audit-style blob, and races for a lock blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cross_process_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let store = Store::local(&dir).expect("store");
    store
        .put("shared", "child-ready", Bytes::new(), Precondition::None)
        .await
        .expect("ready");
    cross_process_worker(&store, "child").await;
}

async fn cross_process_worker(store: &Store, who: &str) {
    let led = store
        .put(
            "shared",
            "leader",
            Bytes::from(who.to_owned()),
            Precondition::IfNoneMatch,
        )
        .await;
    match led {
        Ok(_) => store
            .append("shared", "leaders.log", Bytes::from(format!("{who}\n")))
            .await
            .expect("append"),
        Err(e) => assert!(e.is_conflict(), "{e:?}"),
    }
    loop {
        let got = store
            .receive("work", 3, Duration::from_secs(60))
            .await
            .expect("receive");
        if got.is_empty() {
            return;
        }
        for m in got {
            store
                .append(
                    "shared",
                    "handled.log",
                    Bytes::from(format!("{who} {}\n", m.text)),
                )
                .await
                .expect("append");
            store
                .delete_message("work", &m.id, &m.pop_receipt)
                .await
                .expect("delete");
        }
    }
}

/// A second OS process (this test binary, re-run as a worker) and this one
/// drain one local queue and append to one blob at the same time: every
/// message is handled exactly once, no appended line is lost or torn, and
/// exactly one process wins a create-only write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_is_safe_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::local(dir.path()).expect("store");
    store.ensure_container("shared").await.expect("container");
    store.ensure_queue("work").await.expect("queue");
    for i in 0..60 {
        store
            .send("work", &format!("m{i:02}"), SendOptions::default())
            .await
            .expect("send");
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "store::local_cross_process_child",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker process");
    // Start together, so the two processes really overlap.
    let started = std::time::Instant::now();
    while store.get("shared", "child-ready").await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "worker process did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cross_process_worker(&store, "parent").await;
    let status = child.wait().await.expect("child");
    assert!(status.success(), "worker process failed: {status}");

    let log = store.get("shared", "handled.log").await.expect("log").body;
    let log = std::str::from_utf8(&log).expect("utf8");
    let by_child = log.lines().filter(|l| l.starts_with("child ")).count();
    eprintln!("cross-process: child handled {by_child} of 60");
    let mut handled: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(' ').expect("who text").1)
        .collect();
    handled.sort();
    let want: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
    assert_eq!(handled, want, "each message handled exactly once");
    let leaders = store
        .get("shared", "leaders.log")
        .await
        .expect("leaders")
        .body;
    let leaders = std::str::from_utf8(&leaders).expect("utf8");
    assert_eq!(
        leaders.lines().count(),
        1,
        "one create-only winner: {leaders:?}"
    );
    let leader = store.get("shared", "leader").await.expect("leader").body;
    assert_eq!(leader.as_ref(), leaders.trim_end().as_bytes());
}

/// A caller-supplied HTTP client (how `DORMANT_CA_FILE` trust reaches the
/// store) carries the signed requests just as well.
#[tokio::test]
async fn azurite_through_a_caller_supplied_http_client() {
    let config = StorageConfig::ConnectionString(SecretString::from(azurite().connection_string()));
    let http: std::sync::Arc<dyn azure_core::http::HttpClient> =
        std::sync::Arc::new(reqwest::Client::new());
    let store = Store::connect_with_http_client(&config, None, Some(http)).expect("store");
    let c = unique("c");
    store.ensure_container(&c).await.expect("container");
    let etag = store
        .put(
            &c,
            "x.json",
            Bytes::from_static(b"{}"),
            Precondition::IfNoneMatch,
        )
        .await
        .expect("put");
    assert_eq!(store.get(&c, "x.json").await.expect("get").etag, etag);
}

/// A stand-in for the managed identity: an Entra-shaped token (issuer,
/// audience, times) that Azurite's `--oauth basic` accepts. It also checks
/// the SDK asks for the storage scope.
#[derive(Debug)]
struct FakeManagedIdentity;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeManagedIdentity {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        use base64::Engine as _;
        assert_eq!(scopes, ["https://storage.azure.com/.default"]);
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let now = chrono::Utc::now().timestamp();
        let token = format!(
            "{}.{}.{}",
            b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})),
            b64(serde_json::json!({
                "aud": "https://storage.azure.com",
                "iss": "https://sts.windows.net/00000000-0000-4000-8000-000000000001/",
                "iat": now - 60,
                "nbf": now - 60,
                "exp": now + 3600,
                "oid": "00000000-0000-4000-8000-0000000000aa",
            })),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"not-checked"),
        );
        Ok(azure_core::credentials::AccessToken::new(
            token,
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

/// The managed-identity configuration end to end: service URIs from the
/// `AzureWebJobsStorage__*ServiceUri` settings, a caller-supplied token
/// credential, HTTPS with a private CA, bearer tokens instead of Shared Key.
#[tokio::test]
async fn azurite_with_managed_identity_over_https() {
    let az = crate::azurite::oauth_azurite();
    let (blob, queue) = (az.blob.clone(), az.queue.clone());
    let config = StorageConfig::from_lookup(move |k| match k {
        "AzureWebJobsStorage__blobServiceUri" => Some(blob.clone()),
        "AzureWebJobsStorage__queueServiceUri" => Some(queue.clone()),
        _ => None,
    })
    .expect("config");
    assert!(matches!(config, StorageConfig::ManagedIdentity { .. }));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(az.ca_pem.as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let http: std::sync::Arc<dyn azure_core::http::HttpClient> = std::sync::Arc::new(http);
    let store = Store::connect_with_http_client(
        &config,
        Some(std::sync::Arc::new(FakeManagedIdentity)),
        Some(http.clone()),
    )
    .expect("store");
    let c = unique("c");
    store.ensure_container(&c).await.expect("container");
    let etag = store
        .put(
            &c,
            "state/case.json",
            Bytes::from_static(b"{}"),
            Precondition::IfNoneMatch,
        )
        .await
        .expect("put");
    assert_eq!(
        store.get(&c, "state/case.json").await.expect("get").etag,
        etag
    );
    store
        .append(&c, "audit.jsonl", Bytes::from_static(b"{}\n"))
        .await
        .expect("append");
    let q = unique("q");
    store.ensure_queue(&q).await.expect("queue");
    store
        .send(&q, "{\"v\":1}", SendOptions::default())
        .await
        .expect("send");
    let got = store
        .receive(&q, 1, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);

    // The same instance still checks credentials: a wrong Shared Key is
    // refused, so the calls above succeeded on the bearer token.
    let anonymous = StorageConfig::ConnectionString(SecretString::from(format!(
        "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=d3Jvbmc=;BlobEndpoint={};QueueEndpoint={}",
        az.blob, az.queue
    )));
    let wrong = Store::connect_with_http_client(&anonymous, None, Some(http)).expect("store");
    let err = wrong.get(&c, "state/case.json").await.expect_err("refused");
    assert!(matches!(err, StoreError::Permanent { .. }), "{err:?}");
}
