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
