//! Azurite for the integration tests: one process per test binary.
//!
//! Two ways to get one:
//! - an Azurite you already run: set `DORMANT_TEST_AZURITE_BLOB` and
//!   `DORMANT_TEST_AZURITE_QUEUE` to its account URLs, e.g.
//!   `http://127.0.0.1:10000/devstoreaccount1` and
//!   `http://127.0.0.1:10001/devstoreaccount1` (no trailing slash; start it
//!   with `--skipApiVersionCheck`);
//! - otherwise the pinned copy in `tools/azurite` (install it once with
//!   `npm ci --prefix tools/azurite`), started lazily on free ports with
//!   `--inMemoryPersistence`.
//!
//! Neither available: the Azurite tests fail with that instruction; they are
//! never skipped silently.
//!
//! The child is spawned from a keeper thread that lives as long as the test
//! process, with `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills Azurite when
//! that thread (hence the process) ends, even on a panic or a kill, so no
//! orphan stays behind. (The signal follows the spawning *thread*, which is
//! why a test thread must not spawn it.)

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the tests' Azurite listens.
#[derive(Debug, Clone)]
pub struct Azurite {
    pub blob: String,
    pub queue: String,
}

impl Azurite {
    /// A connection string for the well-known development account.
    pub fn connection_string(&self) -> String {
        self.connection_string_with_key(
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        )
    }

    /// Same endpoints, another key (to prove signatures are checked).
    pub fn connection_string_with_key(&self, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={};QueueEndpoint={};",
            self.blob, self.queue
        )
    }
}

static AZURITE: OnceLock<Result<Azurite, String>> = OnceLock::new();

/// The shared Azurite, started on first use. Panics with the fix when none
/// can be had.
pub fn azurite() -> Azurite {
    match AZURITE.get_or_init(start) {
        Ok(a) => a.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

fn start() -> Result<Azurite, String> {
    let blob = std::env::var("DORMANT_TEST_AZURITE_BLOB").ok();
    let queue = std::env::var("DORMANT_TEST_AZURITE_QUEUE").ok();
    match (blob, queue) {
        (Some(blob), Some(queue)) => {
            return Ok(Azurite {
                blob: blob.trim_end_matches('/').to_owned(),
                queue: queue.trim_end_matches('/').to_owned(),
            });
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(
                "set both DORMANT_TEST_AZURITE_BLOB and DORMANT_TEST_AZURITE_QUEUE, or neither"
                    .to_owned(),
            );
        }
        (None, None) => {}
    }

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("tools/azurite/node_modules/.bin/azurite");
    if !bin.exists() {
        return Err(format!(
            "Azurite is not installed: run `npm ci --prefix tools/azurite` in {} \
             (or point DORMANT_TEST_AZURITE_BLOB/_QUEUE at a running Azurite)",
            root.display()
        ));
    }
    let [blob_port, queue_port, table_port] = free_ports();
    let workdir = std::env::temp_dir().join(format!("dormant-azurite-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).map_err(|e| format!("azurite workdir: {e}"))?;

    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("azurite-keeper".into())
        .spawn(move || {
            let mut cmd = Command::new(&bin);
            cmd.args([
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                "--blobHost",
                "127.0.0.1",
                "--queueHost",
                "127.0.0.1",
                "--tableHost",
                "127.0.0.1",
                "--blobPort",
                &blob_port.to_string(),
                "--queuePort",
                &queue_port.to_string(),
                "--tablePort",
                &table_port.to_string(),
            ])
            // Azurite refuses --location with --inMemoryPersistence; run it
            // in a scratch folder so any debug file lands there.
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    // Hold the thread (the death-signal anchor) for the life
                    // of the process.
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("could not start Azurite: {e}")));
                }
            }
        })
        .map_err(|e| format!("azurite keeper thread: {e}"))?;
    rx.recv()
        .map_err(|_| "azurite keeper thread died".to_owned())??;

    let deadline = Instant::now() + Duration::from_secs(60);
    for port in [blob_port, queue_port] {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("Azurite did not listen on port {port} within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Azurite {
        blob: format!("http://127.0.0.1:{blob_port}/devstoreaccount1"),
        queue: format!("http://127.0.0.1:{queue_port}/devstoreaccount1"),
    })
}

/// Three distinct free ports (held together so they differ).
fn free_ports() -> [u16; 3] {
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    let ports: Vec<u16> = ls
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    [ports[0], ports[1], ports[2]]
}
