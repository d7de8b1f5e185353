//! Logging: JSON lines on stdout (the Functions host collects stdout), level
//! from `RUST_LOG` (default `info`). Every line written inside an invocation
//! carries its `invocation_id` through the span the host layer opens.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::host::logs::CaptureLayer;

/// Where the JSON lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// `dormant serve`: the host collects stdout.
    Stdout,
    /// Command-line use: stdout carries the command's own answer (report
    /// paths, the simulator's settings), so logs go to stderr.
    Stderr,
}

/// Installs the global subscriber. Safe to call more than once (tests):
/// later calls are no-ops.
pub fn init(target: LogTarget) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(true)
        .with_writer(move || -> Box<dyn std::io::Write> {
            match target {
                LogTarget::Stdout => Box::new(std::io::stdout()),
                LogTarget::Stderr => Box::new(std::io::stderr()),
            }
        });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(CaptureLayer)
        .try_init();
}
