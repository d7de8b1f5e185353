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

    let [blob_port, queue_port] = spawn_azurite(&[])?;
    Ok(Azurite {
        blob: format!("http://127.0.0.1:{blob_port}/devstoreaccount1"),
        queue: format!("http://127.0.0.1:{queue_port}/devstoreaccount1"),
    })
}

/// A second Azurite serving HTTPS (its own test CA) and accepting Entra
/// bearer tokens (`--oauth basic`: issuer, audience and times are checked,
/// the signature is not). It proves the managed-identity path: the SDK's
/// bearer policy, https-only, no Shared Key.
#[derive(Debug, Clone)]
pub struct OauthAzurite {
    pub blob: String,
    pub queue: String,
    /// PEM of the CA that signed Azurite's certificate.
    pub ca_pem: String,
}

static OAUTH_AZURITE: OnceLock<Result<OauthAzurite, String>> = OnceLock::new();

/// The shared OAuth/HTTPS Azurite, started on first use (always the pinned
/// copy in tools/azurite).
pub fn oauth_azurite() -> OauthAzurite {
    match OAUTH_AZURITE.get_or_init(start_oauth) {
        Ok(a) => a.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

fn start_oauth() -> Result<OauthAzurite, String> {
    let dir = scratch_dir("oauth")?;
    let ca_key = rcgen::KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("CA params: {e}"))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dormant test CA");
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| format!("CA cert: {e}"))?;
    let key = rcgen::KeyPair::generate().map_err(|e| format!("server key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .map_err(|e| format!("server params: {e}"))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("server cert: {e}"))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).map_err(|e| format!("write cert: {e}"))?;
    std::fs::write(&key_path, key.serialize_pem()).map_err(|e| format!("write key: {e}"))?;
    let args = vec![
        "--oauth".to_owned(),
        "basic".to_owned(),
        "--cert".to_owned(),
        cert_path.display().to_string(),
        "--key".to_owned(),
        key_path.display().to_string(),
    ];
    let [blob_port, queue_port] = spawn_azurite(&args)?;
    Ok(OauthAzurite {
        blob: format!("https://127.0.0.1:{blob_port}/devstoreaccount1"),
        queue: format!("https://127.0.0.1:{queue_port}/devstoreaccount1"),
        ca_pem: ca.pem(),
    })
}

fn scratch_dir(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("dormant-azurite-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("azurite workdir: {e}"))?;
    Ok(dir)
}

/// Starts the pinned Azurite in memory on free ports with `extra` arguments
/// and returns the blob and queue ports once both accept connections.
fn spawn_azurite(extra: &[String]) -> Result<[u16; 2], String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = installed_azurite(&root)?;
    let [blob_port, queue_port, table_port] = free_ports();
    let workdir = scratch_dir(&blob_port.to_string())?;
    let extra = extra.to_vec();

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
                "--silent",
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
            .args(&extra)
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
    Ok([blob_port, queue_port])
}

/// The pinned Azurite under `root`, or the instruction that installs it.
fn installed_azurite(root: &std::path::Path) -> Result<PathBuf, String> {
    let bin = root.join("tools/azurite/node_modules/.bin/azurite");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "Azurite is not installed: run `npm ci --prefix tools/azurite` in {} \
             (or point DORMANT_TEST_AZURITE_BLOB/_QUEUE at a running Azurite)",
            root.display()
        ))
    }
}

/// Without Azurite the tests fail with the fix, they are not skipped.
#[test]
fn missing_azurite_says_how_to_install_it() {
    let err =
        installed_azurite(std::path::Path::new("/nonexistent/dormant")).expect_err("not installed");
    assert!(err.contains("npm ci --prefix tools/azurite"), "{err}");
    assert!(err.contains("DORMANT_TEST_AZURITE_BLOB"), "{err}");
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
