//! `NightlyScan` (timer `0 0 2 * * *`): starts the night's scan. Thin: the
//! work runs on the `dormant-scan` queue (`ScanContinue`), a few partitions
//! per invocation, so no invocation meets the function timeout.
//!
//! It is also the watchdog: a run whose messages were lost or poisoned
//! stalls once its lease lapses, and the next night's timer sweeps it up.

use std::sync::Arc;

use serde_json::json;

use super::{AppContext, scan_failure};
use crate::host::{FunctionError, Invocation, Outcome, TimerInfo};
use crate::scan::run::ScanError;

pub const NAME: &str = "NightlyScan";
pub const BINDING: &str = "timer";

pub async fn run(
    ctx: Arc<AppContext>,
    invocation: Invocation<TimerInfo>,
) -> Result<Outcome, FunctionError> {
    if invocation.trigger.is_past_due {
        tracing::info!("the nightly scan is past due (the app was down at 02:00); starting now");
    }
    let scanner = ctx.scanner().await?;
    let return_value = match scanner
        .begin(false, crate::scan::run::ScanScope::All, &ctx.scan)
        .await
    {
        Ok(begun) => {
            tracing::info!(run = %begun.run, resumed = begun.resumed, "nightly scan queued");
            json!({"runId": begun.run.as_str(), "resumed": begun.resumed})
        }
        // A timer is not retried: a scan already running is the answer.
        Err(ScanError::Busy(run)) => {
            tracing::info!(running = %run, "a scan is already running; tonight's is skipped");
            json!({"skipped": "a scan is already running", "runningRunId": run})
        }
        Err(e) => return Err(scan_failure(e)),
    };
    Ok(Outcome {
        return_value,
        ..Outcome::default()
    })
}
