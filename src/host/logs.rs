//! Per-invocation log capture for the `Logs` array of the host response.
//!
//! Everything is also written to stdout as JSON lines (the host collects
//! stdout); `Logs` is a convenience the host shows next to the invocation.
//! A tracing layer copies Information-and-above events of the running
//! invocation into a task-local buffer, bounded so a chatty function cannot
//! blow up its own response.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

const MAX_LINES: usize = 200;
const MAX_LINE_CHARS: usize = 1_000;

tokio::task_local! {
    static CAPTURE: Arc<Mutex<Vec<String>>>;
}

/// Runs `fut` with log capture on and returns its output with the lines
/// it logged.
pub async fn capture<F: Future>(fut: F) -> (F::Output, Vec<String>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let output = CAPTURE.scope(buffer.clone(), fut).await;
    let lines = match Arc::try_unwrap(buffer) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => shared.lock().map(|l| l.clone()).unwrap_or_default(),
    };
    (output, lines)
}

/// The layer that feeds [`capture`].
pub struct CaptureLayer;

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > Level::INFO {
            return;
        }
        let _ = CAPTURE.try_with(|buffer| {
            let Ok(mut lines) = buffer.lock() else {
                return;
            };
            if lines.len() >= MAX_LINES {
                return;
            }
            let mut line = LineVisitor(format!("{} ", event.metadata().level()));
            event.record(&mut line);
            let mut text = line.0;
            if text.len() > MAX_LINE_CHARS {
                let mut cut = MAX_LINE_CHARS;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            lines.push(text);
        });
    }
}

struct LineVisitor(String);

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
