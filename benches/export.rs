//! GDPR export benchmark (`cargo bench --bench export`): what an export of
//! dormant's own records about one user costs after years of audit log.
//!
//! The fixture: 3 years of daily audit blobs on the local store, 1,000,000
//! lines in all, spread over 50,000 subjects, the subject under test with
//! 300 of them (a few a week: lifecycle steps, GDPR requests, exports).
//! The day blobs are written as a version without the index wrote them,
//! then `AuditLog::reindex` (what `dormant audit reindex` runs) builds the
//! per-subject index: its time is reported too.
//!
//! Measured, each in a child process of its own (peak RSS: the child's
//! own `VmHWM`; `wait4`'s `ru_maxrss` would carry over the parent's peak,
//! which Linux keeps across `exec`), on the same store in the same run:
//! - dormant: `AuditLog::subject_records`, what `GET /api/gdpr/export`
//!   calls for `dormantRecords` (the subject's index blob, streamed);
//! - peer: the full scan the export did before the index: list the day
//!   blobs, read every day, keep the subject's lines. It lists the day
//!   blobs by their leading digit, so it never pays for the index beside
//!   them (the old code listed the whole container).
//!
//! Both must return the same records. The store is built on tmpfs
//! (`/dev/shm`; building it makes ~50,000 fsynced appends), then copied to
//! a folder on disk (`EXPORT_BENCH_DISK=0` skips it) and measured there as
//! well, the copy's pages still cached. `EXPORT_BENCH_LINES`,
//! `EXPORT_BENCH_SUBJECTS`, `EXPORT_BENCH_REQUESTS` (dormant, default
//! 1,000) and `EXPORT_BENCH_PEER_REQUESTS` (default 10) change the sizes.
//! Goal (issue 12, item 19): p99 < 200 ms, RSS < 64 MiB.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use chrono::{Duration, NaiveDate, Utc};
use dormant::ids::ObjectId;
use dormant::store::audit::{AuditLog, AuditRecord, Outcome, day_blob_name};
use dormant::store::{AUDIT_CONTAINER, Precondition, Store};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sha2::Digest as _;

mod support;
use support::status_mib;

const DAYS: i64 = 3 * 365 + 1;
const SUBJECT: &str = "5b3a1c2d-3333-4e4e-8f8f-0123456789ab";
const SUBJECT_LINES: usize = 300;
const GOAL_P99_MS: f64 = 200.0;
const GOAL_RSS_MIB: f64 = 64.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One plausible audit line about `user` at `time`.
fn line(rng: &mut StdRng, user: &str, time: chrono::DateTime<Utc>) -> AuditRecord {
    const STEPS: [(&str, Outcome); 8] = [
        ("notify", Outcome::Done),
        ("disable", Outcome::Done),
        ("convert-mailbox", Outcome::Done),
        ("remove-licenses", Outcome::Skipped),
        ("delete", Outcome::Done),
        ("close", Outcome::Cancelled),
        ("gdpr-export", Outcome::Done),
        ("gdpr-erase-request", Outcome::Accepted),
    ];
    let (step, outcome) = STEPS[rng.random_range(0..STEPS.len())];
    let mut r = AuditRecord::new(step, outcome);
    r.time = time;
    r.user = Some(user.to_owned());
    r.run = Some(format!(
        "{}-{:06x}",
        time.format("%Y%m%dT020000Z"),
        rng.random_range(0..0x100_0000u32)
    ));
    r.case = Some(uuid::Uuid::from_u128(rng.random()).to_string());
    r.detail = Some("already-disabled".into());
    r
}

/// Writes the day blobs (as an index-less version did) and returns the
/// days and lines written.
async fn build(store: &Store, lines: usize, subjects: usize) -> (usize, usize) {
    store.ensure_defaults().await.expect("containers");
    let mut rng = StdRng::seed_from_u64(42);
    let users: Vec<String> = (0..subjects)
        .map(|_| uuid::Uuid::from_u128(rng.random()).to_string())
        .collect();
    let first: NaiveDate = Utc::now().date_naive() - Duration::days(DAYS);
    let per_day = lines / DAYS as usize;
    let mut written = 0;
    for d in 0..DAYS {
        let day = first + Duration::days(d);
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let mut body = Vec::with_capacity(per_day * 260);
        let count = if d == DAYS - 1 {
            lines - written
        } else {
            per_day
        };
        // The subject's lines, evenly over the three years.
        let ours = (d as usize + 1) * SUBJECT_LINES / DAYS as usize
            - d as usize * SUBJECT_LINES / DAYS as usize;
        for i in 0..count {
            let time = midnight + Duration::milliseconds(i as i64 * 86_400_000 / count as i64);
            let user = if i < ours {
                SUBJECT
            } else {
                &users[rng.random_range(0..users.len())]
            };
            body.extend_from_slice(&line(&mut rng, user, time).to_line().expect("line"));
        }
        written += count;
        store
            .put(
                AUDIT_CONTAINER,
                &day_blob_name(day, 0),
                Bytes::from(body),
                Precondition::None,
            )
            .await
            .expect("day blob");
    }
    (DAYS as usize, written)
}

/// The export's read before the index: every day blob, filtered.
async fn full_scan(store: &Store, audit: &AuditLog, subject: &str) -> Vec<AuditRecord> {
    let mut days: Vec<NaiveDate> = store
        .list(AUDIT_CONTAINER, "2")
        .await
        .expect("list")
        .iter()
        .filter_map(|b| b.name.get(..10))
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .collect();
    days.sort();
    days.dedup();
    let mut out = Vec::new();
    for day in days {
        for r in audit.read_day(day).await.expect("day") {
            if r.user.as_deref() == Some(subject) {
                out.push(r);
            }
        }
    }
    out
}

/// The child: `requests` reads by `mode` on the store at `dir`; prints
/// `p50_ms p99_ms records sha peak_rss_mib` on one line.
fn measure(mode: &str, dir: &Path, requests: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::local(dir).expect("store");
        let audit = AuditLog::new(store.clone());
        let subject = ObjectId::parse(SUBJECT).expect("id");
        let mut took = Vec::with_capacity(requests);
        let mut last = Vec::new();
        for _ in 0..requests {
            let t = Instant::now();
            last = match mode {
                "index" => audit.subject_records(&subject).await.expect("index"),
                _ => full_scan(&store, &audit, SUBJECT).await,
            };
            took.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);
        let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
        let text = serde_json::to_string(&last).expect("json");
        let digest = sha2::Sha256::digest(text.as_bytes());
        println!(
            "{:.3} {:.3} {} {} {:.1}",
            pct(0.50),
            pct(0.99),
            last.len(),
            hex::encode(&digest[..6]),
            status_mib(std::process::id(), "VmHWM")
        );
    });
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    records: usize,
    sha: String,
    rss_mib: f64,
    requests: usize,
}

fn run_child(mode: &str, dir: &Path, requests: usize) -> Figures {
    let out = Command::new(std::env::current_exe().expect("bench binary"))
        .args(["--measure", mode])
        .arg(dir)
        .arg(requests.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the measuring child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the {mode} child failed: {text}");
    let f: Vec<&str> = text.split_whitespace().collect();
    Figures {
        p50_ms: f[0].parse().expect("p50"),
        p99_ms: f[1].parse().expect("p99"),
        records: f[2].parse().expect("records"),
        sha: f[3].to_owned(),
        rss_mib: f[4].parse().expect("rss"),
        requests,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let requests = args[i + 3].parse().expect("requests");
        measure(&args[i + 1], Path::new(&args[i + 2]), requests);
        return;
    }
    let lines = env_or("EXPORT_BENCH_LINES", 1_000_000usize);
    let subjects = env_or("EXPORT_BENCH_SUBJECTS", 50_000usize);
    let requests = env_or("EXPORT_BENCH_REQUESTS", 1_000usize);
    let peer_requests = env_or("EXPORT_BENCH_PEER_REQUESTS", 10usize);
    let shm = Path::new("/dev/shm");
    let tmpfs =
        tempfile::tempdir_in(if shm.is_dir() { shm } else { Path::new(".") }).expect("tmpfs dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (days, written, reindex_s, reindexed) = rt.block_on(async {
        let store = Store::local(tmpfs.path()).expect("store");
        let (days, written) = build(&store, lines, subjects).await;
        let t = Instant::now();
        let done = AuditLog::new(store).reindex(None).await.expect("reindex");
        (days, written, t.elapsed().as_secs_f64(), done)
    });
    let build_rss = status_mib(std::process::id(), "VmHWM");
    eprintln!("built {days} days, {written} lines; reindex {reindex_s:.1} s: {reindexed:?}");
    let mut stores = vec![("tmpfs", tmpfs.path().to_path_buf())];
    let disk = tempfile::tempdir_in(std::env::temp_dir()).expect("disk dir");
    if env_or("EXPORT_BENCH_DISK", 1u8) == 1 {
        let copied = Command::new("cp")
            .arg("-a")
            .arg(tmpfs.path().join("."))
            .arg(disk.path())
            .status()
            .expect("cp");
        assert!(copied.success(), "copy to disk");
        stores.push(("disk", disk.path().to_path_buf()));
    }

    println!(
        "| store | read | requests | p50 | p99 | records (sha) | peak RSS |\n|---|---|---|---|---|---|---|"
    );
    let mut verdicts = Vec::new();
    for (label, dir) in &stores {
        let ours = run_child("index", dir, requests);
        let peer = run_child("scan", dir, peer_requests);
        assert_eq!(
            (ours.records, &ours.sha),
            (peer.records, &peer.sha),
            "both reads return the same records"
        );
        for (name, f) in [
            ("dormant: the subject's index", &ours),
            ("peer: scan of every day blob", &peer),
        ] {
            println!(
                "| {label} | {name} | {} | {:.2} ms | {:.2} ms | {} ({}) | {:.1} MiB |",
                f.requests, f.p50_ms, f.p99_ms, f.records, f.sha, f.rss_mib
            );
        }
        verdicts.push(format!(
            "{label}: p99 {:.2} ms vs {:.0} ms ({:.0}x faster), RSS {:.1} vs {:.1} MiB; goal (p99 < {GOAL_P99_MS} ms, RSS < {GOAL_RSS_MIB} MiB) {}",
            ours.p99_ms,
            peer.p99_ms,
            peer.p99_ms / ours.p99_ms,
            ours.rss_mib,
            peer.rss_mib,
            if ours.p99_ms < GOAL_P99_MS && ours.rss_mib < GOAL_RSS_MIB {
                "met"
            } else {
                "not met"
            }
        ));
    }
    println!();
    println!(
        "fixture: {days} days, {written} lines, {subjects} subjects + the one measured ({SUBJECT_LINES} lines); reindex (backfill of the whole log) {reindex_s:.1} s in {} passes, {} lines indexed; bench process peak RSS (build + reindex) {build_rss:.1} MiB",
        reindexed.passes, reindexed.appended
    );
    for v in verdicts {
        println!("{v}");
    }
}
