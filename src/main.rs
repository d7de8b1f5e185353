//! The `dormant` command line: parse, build, hand over.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use dormant::config::{Config, Sources};
use dormant::functions::{self, AppContext};
use dormant::host::{Application, server::shutdown_signal};
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
    /// Operator-initiated GDPR requests (same job and audit trail as the
    /// user's own requests through the GDPR endpoints).
    #[command(subcommand)]
    Gdpr(GdprCommand),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Gdpr(command) => gdpr_cli(command),
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

    telemetry::init(LogTarget::Stderr);
    let (user_id, config_flag) = match &command {
        GdprCommand::Erase(a) => (&a.user_id, a.config.clone()),
        GdprCommand::Export(a) => (&a.user_id, a.config.clone()),
    };
    let Some(user) = ObjectId::parse(user_id) else {
        eprintln!("dormant: USER_ID must be a directory object id (a GUID)");
        return ExitCode::from(EXIT_USAGE);
    };
    let config = match load_config(config_flag) {
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
        let result: anyhow::Result<()> = async {
            let store = ctx.storage().await?;
            match command {
                GdprCommand::Erase(args) => {
                    let submitted = request_erasure(
                        store,
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
                    let result = export(graph, &ctx.extensions, store, &ctx.audit, &user).await;
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
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dormant: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
