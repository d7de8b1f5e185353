//! `ScanContinue` (queue `dormant-scan`): one step of a scan run (gather
//! the context and fan out, scan a few partitions, finalise). Thin: decode
//! and validate the message (ids only), hand it to the scanner.

use std::sync::Arc;

use super::{AppContext, scan_failure};
use crate::host::{FunctionError, Invocation, Outcome, QueueTrigger};
use crate::scan::message::ScanMessage;
use crate::scan::run::ScanError;

pub const NAME: &str = "ScanContinue";
pub const BINDING: &str = "message";

/// host.json `extensions.queues.maxDequeueCount`: the delivery after which
/// a failing message goes to `dormant-scan-poison`. A step that fails that
/// often frees the tenant's lease, so the next StartScan or NightlyScan
/// sweeps the run up instead of waiting hours for the lease to lapse.
pub const MAX_DEQUEUE_COUNT: u32 = 5;

pub async fn run(
    ctx: Arc<AppContext>,
    invocation: Invocation<QueueTrigger>,
) -> Result<Outcome, FunctionError> {
    let message = ScanMessage::from_value(&invocation.trigger.message, &ctx.config.tenant_id)
        .map_err(|e| FunctionError::permanent(e.code(), e.to_string()))?;
    tracing::info!(run = %message.run, step = message.step.as_str(), partitions = message.partitions.len(), "scan step received");
    let scanner = ctx.scanner().await?;
    let id = if invocation.invocation_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        invocation.invocation_id.clone()
    };
    let outcome = match scanner.step(&message, &ctx.scan, &id).await {
        Ok(outcome) => outcome,
        Err(e @ ScanError::UnknownRun(_)) => return Err(scan_failure(e)),
        Err(e) if e.is_transient() => {
            if invocation.trigger.meta.dequeue_count >= MAX_DEQUEUE_COUNT
                && let Err(release) = scanner.let_go(&message.run).await
            {
                tracing::warn!(error = %release, "could not free the lease of a stalling run");
            }
            return Err(scan_failure(e));
        }
        Err(e) => {
            // No retry can fix it: the run stops, says why, and frees the
            // tenant (rather than holding it until the lease lapses).
            if let Err(fail) = scanner.fail(&message.run, &e.to_string()).await {
                tracing::warn!(error = %fail, "could not mark the run failed");
                return Err(FunctionError::Transient(fail.into()));
            }
            return Err(scan_failure(e));
        }
    };
    tracing::info!(run = %message.run, scanned = outcome.scanned, handed_on = outcome.handed_on, finalized = outcome.finalized, "scan step done");
    Ok(Outcome {
        return_value: serde_json::to_value(&outcome).unwrap_or_default(),
        ..Outcome::default()
    })
}
