//! `ScanContinue` (queue `dormant-scan`): one step of a scan run (gather
//! the context and fan out, scan a few partitions, finalise). Thin: decode
//! and validate the message (ids only), hand it to the scanner.

use std::sync::Arc;

use super::{AppContext, scan_failure};
use crate::host::{FunctionError, Invocation, Outcome, QueueTrigger};
use crate::scan::message::ScanMessage;

pub const NAME: &str = "ScanContinue";
pub const BINDING: &str = "message";

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
    let outcome = scanner
        .step(&message, &ctx.scan, &id)
        .await
        .map_err(scan_failure)?;
    tracing::info!(run = %message.run, scanned = outcome.scanned, handed_on = outcome.handed_on, finalized = outcome.finalized, "scan step done");
    Ok(Outcome {
        return_value: serde_json::to_value(&outcome).unwrap_or_default(),
        ..Outcome::default()
    })
}
