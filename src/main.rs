//! The `dormant` command line: parse, build, hand over.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};

use dormant::config::{Config, Sources};
use dormant::functions::{self, AppContext};
use dormant::host::{Application, server::shutdown_signal};
use dormant::scan::run::{Progress, ScanOptions, ScanScope};
use dormant::store::{REPORTS_CONTAINER, StorageConfig};
use dormant::telemetry::{self, LogTarget};

/// Inactive-account governance for Microsoft Entra ID and Azure AD B2C.
///
/// Exit codes: 0 done; 1 failed; 2 bad usage or bad configuration.
#[derive(Debug, Parser)]
#[command(name = "dormant", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Azure Functions custom-handler protocol on
    /// 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (default 3000).
    Serve(ServeArgs),
    /// Run one inactivity scan now and print where the report went.
    Scan(ScanArgs),
    /// The whole job on the embedded default: a simulated tenant, a local
    /// store, a scan, the report. Prints the report paths.
    Demo(DemoArgs),
    /// Serve a simulated Microsoft Graph tenant (HTTPS with its own CA).
    /// Prints the settings that point dormant at it, then serves until killed.
    Sim(dormant::sim::SimArgs),
    /// Operator-initiated GDPR requests (same job and audit trail as the
    /// user's own requests through the GDPR endpoints).
    #[command(subcommand)]
    Gdpr(GdprCommand),
    /// Drain the actions queue outside Functions (the same code as the
    /// UserActions queue trigger).
    Worker(WorkerArgs),
    /// Undo the user's case (the open one, else the newest that did
    /// something) within 30 days of its last change: back from deleted
    /// items, enabled again, its licenses and mailbox restored. The user is
    /// then held (`restored`) until it is active again or the hold is
    /// lifted. Prints the outcome.
    Restore(RestoreArgs),
    /// Lift dormant's hold on a user (after a restore or a re-enable by a
    /// person): the next scans judge the user again like anyone else.
    LiftHold(RestoreArgs),
    /// Release a quarantined run: open its cases and enqueue their due steps.
    Release(ReleaseArgs),
    /// The audit log (`dormant-audit`).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Put every record of the day logs that names a user into that user's
    /// index (`dormant-audit/by-user/{objectId}.jsonl`, what exports read)
    /// unless it is there already: for lines written before the index
    /// existed, or after an index append failed. Idempotent; prints what it
    /// did as JSON.
    Reindex(AuditReindexArgs),
}

#[derive(Debug, Args)]
struct AuditReindexArgs {
    /// Only the days from this one on (YYYY-MM-DD, UTC); default: every day.
    #[arg(long, value_name = "DATE")]
    from: Option<chrono::NaiveDate>,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// Stop once the queue is empty instead of polling on.
    #[arg(long)]
    once: bool,
    /// Seconds a taken message stays invisible to other workers (a killed
    /// worker's message reappears after this).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    visibility_secs: u64,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The user's directory object id.
    user_id: String,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ReleaseArgs {
    /// The quarantined run (`20261122T020000Z-…`).
    run_id: String,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// Plan, but enqueue nothing.
    #[arg(long)]
    dry_run: bool,
    /// The separate guest audit (workforce tenants): pages guests only,
    /// judges and advances their cases, leaves members' cases and
    /// `latest/` alone (its report also goes to `latest-guests/`).
    #[arg(long)]
    guests_only: bool,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Partitions paged at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Users in the simulated tenant.
    #[arg(long, default_value_t = 2000)]
    users: u32,
    /// Workforce or B2C tenant.
    #[arg(long, value_enum, default_value_t = dormant::sim::TenantKind::Workforce)]
    kind: dormant::sim::TenantKind,
    /// Seed of the simulated tenant.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the local store goes (default: $DORMANT_STORE_DIR, else ./dormant-data).
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum GdprCommand {
    /// Record and enqueue the erasure of USER_ID (delete, purge, then a
    /// `user-erased` event); prints the request id. The queue worker runs
    /// it, or `--now` runs it here and prints the final status.
    Erase(GdprEraseArgs),
    /// Print everything held about USER_ID as JSON (the user object with
    /// every attribute, directory audit events, dormant's own records).
    Export(GdprExportArgs),
}

#[derive(Debug, Args)]
struct GdprEraseArgs {
    /// The user's directory object id.
    user_id: String,
    /// Run the erasure in this process instead of leaving it to the worker.
    #[arg(long)]
    now: bool,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct GdprExportArgs {
    /// The user's directory object id.
    user_id: String,
    /// Write the export here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (default: $DORMANT_CONFIG, else ./dormant.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Exit code for bad usage or bad configuration (CONTRACT).
const EXIT_USAGE: u8 = 2;

/// glibc gives every thread that allocates its own malloc arena (up to
/// 8 per core) and keeps what they freed: a worker's live heap stays under
/// 2 MiB for thousands of steps while its resident size climbs past
/// 45 MiB (BENCHMARKS.md, lifecycle). dormant waits on Graph, not on
/// malloc, so two arenas lose nothing and bound the growth. An explicit
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists; mallopt only changes allocator tuning.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Scan(args) => scan(args),
        Command::Demo(args) => demo(args),
        Command::Sim(args) => sim(args),
        Command::Gdpr(command) => gdpr_cli(command),
        Command::Worker(args) => worker(args),
        Command::Restore(args) => restore(args),
        Command::LiftHold(args) => lift_hold(args),
        Command::Release(args) => release(args),
        Command::Audit(AuditCommand::Reindex(args)) => audit_reindex(args),
    }
}

fn audit_reindex(args: AuditReindexArgs) -> ExitCode {
    with_context(args.config, |ctx| async move {
        ctx.storage().await?;
        let done = ctx.audit.reindex(args.from).await?;
        println!("{}", serde_json::to_string(&done)?);
        Ok(())
    })
}

/// Loads configuration, builds the context and runs `job` on a runtime;
/// the job's error is printed and exits 1.
fn with_context<F, Fut>(config: Option<PathBuf>, job: F) -> ExitCode
where
    F: FnOnce(AppContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    telemetry::init(LogTarget::Stderr);
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let ctx = match AppContext::build(config) {
            Ok(ctx) => ctx,
            Err(e) => {
                eprintln!("dormant: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        match job(ctx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dormant: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn worker(args: WorkerArgs) -> ExitCode {
    use dormant::functions::user_actions::{DrainOptions, drain};
    let options = DrainOptions {
        once: args.once,
        visibility: std::time::Duration::from_secs(args.visibility_secs.max(1)),
        batch: 16,
    };
    with_context(args.config, |ctx| async move {
        let drained = tokio::select! {
            d = drain(&ctx, &options) => d?,
            _ = shutdown_signal() => {
                eprintln!("dormant worker: stopping");
                return Ok(());
            }
        };
        eprintln!(
            "dormant worker: {} handled, {} left for retry, {} moved to the poison queue",
            drained.handled, drained.retried, drained.poisoned
        );
        Ok(())
    })
}

fn restore(args: RestoreArgs) -> ExitCode {
    let Some(user) = dormant::ids::ObjectId::parse(&args.user_id) else {
        eprintln!("dormant: USER_ID must be a directory object id (a GUID)");
        return ExitCode::from(EXIT_USAGE);
    };
    with_context(args.config, |ctx| async move {
        let lifecycle = ctx.lifecycle().await?;
        let report = lifecycle.restore(user.as_str(), None, "").await?;
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}

fn lift_hold(args: RestoreArgs) -> ExitCode {
    let Some(user) = dormant::ids::ObjectId::parse(&args.user_id) else {
        eprintln!("dormant: USER_ID must be a directory object id (a GUID)");
        return ExitCode::from(EXIT_USAGE);
    };
    with_context(args.config, |ctx| async move {
        let lifecycle = ctx.lifecycle().await?;
        let lifted = lifecycle.lift_hold(user.as_str()).await?;
        println!(
            "{}",
            serde_json::json!({"user": user.to_string(), "lifted": lifted})
        );
        Ok(())
    })
}

fn release(args: ReleaseArgs) -> ExitCode {
    let Some(run) = dormant::ids::RunId::parse(&args.run_id) else {
        eprintln!("dormant: RUN_ID must be a run id such as 20261122T020000Z-ab12cd");
        return ExitCode::from(EXIT_USAGE);
    };
    with_context(args.config, |ctx| async move {
        let cases = ctx.scanner().await?.release(&run).await?;
        println!(
            "{}",
            serde_json::json!({"runId": run.to_string(), "status": "released", "cases": cases})
        );
        Ok(())
    })
}

fn sim(args: dormant::sim::SimArgs) -> ExitCode {
    telemetry::init(LogTarget::Stderr);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(dormant::sim::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dormant sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn scan(args: ScanArgs) -> ExitCode {
    telemetry::init(LogTarget::Stderr);
    let config = match load_config(args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if args.guests_only && config.tenant_kind == dormant::config::TenantKind::B2c {
        eprintln!(
            "dormant: --guests-only is the workforce guest audit; a B2C tenant's guests are judged by every scan. Fix: run `dormant scan` without --guests-only"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let options = ScanOptions {
        dry_run: args.dry_run,
        scope: if args.guests_only {
            ScanScope::Guests
        } else {
            ScanScope::All
        },
        concurrency: args.concurrency,
        ..ScanOptions::default()
    };
    rt.block_on(run_scan(config, options))
}

fn demo(args: DemoArgs) -> ExitCode {
    telemetry::init(LogTarget::Stderr);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let sim = match dormant::sim::Sim::start(dormant::sim::SimConfig {
            users: args.users,
            kind: args.kind,
            seed: args.seed,
            ..dormant::sim::SimConfig::default()
        })
        .await
        {
            Ok(sim) => sim,
            Err(e) => {
                eprintln!("dormant demo: the simulated tenant did not start: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "dormant demo: simulated {} tenant with {} users at {}",
            args.kind.as_str(),
            args.users,
            sim.base_url()
        );
        let store_dir = args
            .store_dir
            .map(|d| d.display().to_string())
            .or_else(|| std::env::var("DORMANT_STORE_DIR").ok())
            .unwrap_or_else(|| dormant::store::DEFAULT_STORE_DIR.to_owned());
        let mut env = sim.settings();
        env.push(("DORMANT_STORE_DIR".into(), store_dir));
        let config = match Config::load(&Sources::from_env(None, env)) {
            Ok(c) => c,
            Err(e) => {
                eprint!("dormant demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        let code = run_scan(config, ScanOptions::default()).await;
        sim.shutdown().await;
        code
    })
}

/// A progress bar on a terminal; nothing otherwise.
struct Bar {
    bar: indicatif::ProgressBar,
    users: AtomicU64,
    listed: AtomicU64,
}

impl Progress for Bar {
    fn partitions_added(&self, n: usize) {
        self.bar.inc_length(n as u64);
    }
    fn partition_done(&self, scanned: u64, rows: u64) {
        self.bar.inc(1);
        let users = self.users.fetch_add(scanned, Ordering::Relaxed) + scanned;
        let listed = self.listed.fetch_add(rows, Ordering::Relaxed) + rows;
        self.bar
            .set_message(format!("{users} users, {listed} not plainly active"));
    }
}

async fn run_scan(config: Config, options: ScanOptions) -> ExitCode {
    let ctx = match AppContext::build(config) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("dormant: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let scanner = match ctx.scanner().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dormant: cannot set up Microsoft Graph: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local_root = match &ctx.config.storage {
        StorageConfig::Local(dir) => Some(dir.clone()),
        _ => None,
    };
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} partitions {pos}/{len} {wide_bar} {msg} [{elapsed}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Arc::new(Bar {
            bar,
            users: AtomicU64::new(0),
            listed: AtomicU64::new(0),
        })
    } else {
        Arc::new(())
    };
    match scanner.run(&options, progress).await {
        Ok(outcome) => {
            let s = &outcome.summary;
            if s.scope != options.scope.as_str() {
                eprintln!(
                    "dormant: run {} was unfinished and was resumed instead (scope {}); run the command again for the scan you asked for",
                    outcome.run, s.scope
                );
            }
            eprintln!(
                "dormant: run {} scanned {} {}: {}",
                outcome.run,
                s.scanned,
                if s.scope == "guests" {
                    "guests"
                } else {
                    "users"
                },
                s.by_verdict
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for name in [&outcome.csv, &outcome.json, &outcome.html] {
                match &local_root {
                    Some(root) => println!("{}", root.join(REPORTS_CONTAINER).join(name).display()),
                    None => println!("{REPORTS_CONTAINER}/{name}"),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dormant: the scan failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("dormant: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn load_config(flag: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(&Sources::from_process(flag)).map_err(|e| {
        eprint!("dormant: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    telemetry::init(LogTarget::Stdout);
    let port = match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Err(_) => 3000,
        Ok(text) => match text.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!(
                    "dormant: FUNCTIONS_CUSTOMHANDLER_PORT={text:?} is not a port number. Fix: unset it (default 3000) or give 1-65535"
                );
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let config = match load_config(args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        // Bind before anything slow: the host polls GET / for ~30 s.
        let app = match Application::bind(port).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("dormant: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(port = app.port(), "dormant serve listening");
        let ctx = match AppContext::build(config) {
            Ok(ctx) => Arc::new(ctx),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start");
                return ExitCode::FAILURE;
            }
        };
        match app.serve(functions::catalog(ctx), shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn gdpr_cli(command: GdprCommand) -> ExitCode {
    use dormant::gdpr::requests::{Origin, Submitted};
    use dormant::gdpr::{erase::Eraser, export::export, record_export, request_erasure};
    use dormant::ids::ObjectId;
    use dormant::store::audit::Outcome;

    let (user_id, config_flag) = match &command {
        GdprCommand::Erase(a) => (&a.user_id, a.config.clone()),
        GdprCommand::Export(a) => (&a.user_id, a.config.clone()),
    };
    let Some(user) = ObjectId::parse(user_id) else {
        eprintln!("dormant: USER_ID must be a directory object id (a GUID)");
        return ExitCode::from(EXIT_USAGE);
    };
    with_context(config_flag, |ctx| async move {
        let store = ctx.storage().await?;
        match command {
            GdprCommand::Erase(args) => {
                let submitted = request_erasure(
                    &ctx.gdpr_requests(store),
                    &ctx.audit,
                    &ctx.config.tenant_id,
                    &user,
                    Origin::Operator,
                )
                .await?;
                let mut request = match submitted {
                    Submitted::Pending(r) | Submitted::Done(r) => r,
                };
                if args.now && request.status.is_pending() {
                    let eraser = Eraser {
                        store,
                        audit: &ctx.audit,
                        graph: ctx.graph().await?,
                    };
                    request = eraser.run(&user, &request.request_id).await?;
                }
                println!("{}", request.view());
                if request.status == dormant::gdpr::requests::Status::Failed {
                    anyhow::bail!("the erasure failed: {}", request.error.unwrap_or_default());
                }
                Ok(())
            }
            GdprCommand::Export(args) => {
                let graph = ctx.graph().await?;
                let result = export(graph, &ctx.extensions, &ctx.audit, &user).await;
                let outcome = if result.is_ok() {
                    Outcome::Done
                } else {
                    Outcome::Failed
                };
                let code = result.as_ref().err().map(|_| "export-failed");
                record_export(&ctx.audit, &user, Origin::Operator, outcome, code).await?;
                let text = serde_json::to_string_pretty(&result?)?;
                match args.out {
                    Some(path) => {
                        std::fs::write(&path, text)?;
                        eprintln!("dormant: export written to {}", path.display());
                    }
                    None => println!("{text}"),
                }
                Ok(())
            }
        }
    })
}
