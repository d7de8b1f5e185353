//! `UserActions` (queue `dormant-actions`): one lifecycle step or GDPR
//! erasure per message. Thin: decode and validate the v1 message, wait for
//! `notBefore`, hand over to the domain.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;

use super::AppContext;
use crate::gdpr::erase::{EraseError, Eraser};
use crate::host::{FunctionError, Invocation, Outcome, QueueTrigger};
use crate::lifecycle::{ActionKind, ActionMessage};
use crate::store::{ACTIONS_QUEUE, SendOptions};

pub const NAME: &str = "UserActions";
pub const BINDING: &str = "message";

/// Azure queues delay a message by at most 7 days.
const MAX_QUEUE_DELAY: Duration = Duration::days(7);

pub async fn run(
    ctx: Arc<AppContext>,
    invocation: Invocation<QueueTrigger>,
) -> Result<Outcome, FunctionError> {
    let message = ActionMessage::from_value(&invocation.trigger.message, &ctx.config.tenant_id)
        .map_err(|e| FunctionError::permanent(e.code(), e.to_string()))?;
    tracing::info!(kind = message.kind.as_str(), user = %message.user, case = %message.case, run = %message.run, "action received");

    // Early: put it back with the remaining delay (a queue delay tops out
    // at 7 days, so long waits take several hops).
    let wait = message.not_before - Utc::now();
    if wait > Duration::seconds(1) {
        let delay = wait.min(MAX_QUEUE_DELAY);
        ctx.storage()
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?
            .send(
                ACTIONS_QUEUE,
                &message.to_text(),
                SendOptions {
                    initial_delay: delay.to_std().ok(),
                    // The default 7-day time-to-live would expire the message
                    // the moment a 7-day delay ends.
                    ttl: (delay + MAX_QUEUE_DELAY).to_std().ok(),
                },
            )
            .await
            .map_err(|e| FunctionError::Transient(e.into()))?;
        tracing::info!(seconds = delay.num_seconds(), "not due yet; requeued");
        return Ok(Outcome {
            return_value: json!({"requeued": true}),
            ..Outcome::default()
        });
    }

    match message.kind {
        ActionKind::GdprErase => erase(&ctx, &message).await,
        // The lifecycle steps plug in here as they land; until then a kind
        // is refused honestly: recorded, never retried forever.
        kind => Err(unsupported(kind)),
    }
}

/// `gdpr-erase`: `case` carries the request id (CONTRACT: ids only).
async fn erase(ctx: &AppContext, message: &ActionMessage) -> Result<Outcome, FunctionError> {
    let store = ctx
        .storage()
        .await
        .map_err(|e| FunctionError::Transient(e.into()))?;
    // A credential setting Graph refuses will not fix itself by retrying,
    // but an operator can fix it within the retries; let the host retry.
    let graph = ctx
        .graph()
        .await
        .map_err(|e| FunctionError::Transient(e.into()))?;
    let eraser = Eraser {
        store,
        audit: &ctx.audit,
        graph,
    };
    match eraser.run(&message.user, &message.case).await {
        Ok(request) => Ok(Outcome {
            return_value: request.view(),
            ..Outcome::default()
        }),
        Err(EraseError::Transient(e)) => Err(FunctionError::Transient(e)),
        Err(EraseError::Permanent { code, message }) => {
            Err(FunctionError::permanent(code, message))
        }
    }
}

fn unsupported(kind: ActionKind) -> FunctionError {
    FunctionError::permanent(
        "unsupported-kind",
        format!("this build does not run `{}` steps", kind.as_str()),
    )
}
