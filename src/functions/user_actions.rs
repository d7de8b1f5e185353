//! `UserActions` (queue `dormant-actions`): one lifecycle step, restore or
//! GDPR erasure per message. Thin: decode and validate the v1 message, wait
//! for `notBefore`, hand over to the domain. `dormant worker` drains the
//! same queue through the same [`handle`].

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use serde_json::{Value, json};

use super::AppContext;
use crate::gdpr::erase::{EraseError, Eraser};
use crate::host::envelope::unwrap_encoded;
use crate::host::{FunctionError, Invocation, Outcome, PermanentFailure, QueueTrigger};
use crate::lifecycle::{ActionKind, ActionMessage, LifecycleError, StepReport};
use crate::store::audit::{AuditRecord, Outcome as AuditOutcome};
use crate::store::{ACTIONS_QUEUE, SendOptions};

pub const NAME: &str = "UserActions";
pub const BINDING: &str = "message";

/// Azure queues delay a message by at most 7 days.
const MAX_QUEUE_DELAY: Duration = Duration::days(7);
/// The host's `maxDequeueCount` (host.json): after this many failed
/// deliveries a message goes to `<queue>-poison`.
pub const MAX_DEQUEUE_COUNT: u32 = 5;

pub async fn run(
    ctx: Arc<AppContext>,
    invocation: Invocation<QueueTrigger>,
) -> Result<Outcome, FunctionError> {
    let delivery = invocation.trigger.meta.id.as_deref();
    handle(&ctx, &invocation.trigger.message, delivery).await
}

/// One decoded queue message, from the host or from `dormant worker`.
/// `delivery` is the queue message id: a redelivery of the same message
/// (its earlier delivery's visibility lapsed) may take a step over from it.
pub async fn handle(
    ctx: &AppContext,
    value: &Value,
    delivery: Option<&str>,
) -> Result<Outcome, FunctionError> {
    let message = ActionMessage::from_value(value, &ctx.config.tenant_id)
        .map_err(|e| FunctionError::permanent(e.code(), e.to_string()))?;
    tracing::info!(kind = message.kind.as_str(), user = %message.user, case = %message.case, run = %message.run, "action received");

    // Early: put it back with the remaining delay (a queue delay tops out
    // at 7 days, so long waits take several hops).
    let wait = message.not_before - ctx.clock.now();
    if wait > Duration::seconds(1) {
        requeue(ctx, &message, wait).await?;
        tracing::info!(seconds = wait.num_seconds(), "not due yet; requeued");
        return Ok(Outcome {
            return_value: json!({"requeued": true}),
            ..Outcome::default()
        });
    }

    match message.kind {
        ActionKind::GdprErase => erase(ctx, &message).await,
        ActionKind::Restore => {
            let lifecycle = ctx.lifecycle().await?;
            // The case the message names, not whichever is newest by now.
            let result = lifecycle
                .restore(
                    message.user.as_str(),
                    Some(message.case.as_str()),
                    message.run.as_str(),
                )
                .await;
            answer(ctx, &message, result).await
        }
        _ => {
            let lifecycle = ctx.lifecycle().await?;
            let result = lifecycle.run_step(&message, delivery).await;
            answer(ctx, &message, result).await
        }
    }
}

/// Puts a copy of `message` back on the queue, visible after `delay`
/// (messages are idempotent: a copy does nothing twice).
async fn requeue(
    ctx: &AppContext,
    message: &ActionMessage,
    delay: Duration,
) -> Result<(), FunctionError> {
    let delay = delay.clamp(Duration::seconds(1), MAX_QUEUE_DELAY);
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
        .map(|_| ())
        .map_err(|e| FunctionError::Transient(e.into()))
}

/// Transient → 500 (the host retries); refused → its own audit line (with
/// the case and user) and 200; a line that cannot be written → 500.
async fn answer(
    ctx: &AppContext,
    message: &ActionMessage,
    result: Result<StepReport, LifecycleError>,
) -> Result<Outcome, FunctionError> {
    match result {
        Ok(report) => Ok(Outcome {
            return_value: serde_json::to_value(&report).unwrap_or(Value::Null),
            ..Outcome::default()
        }),
        // Another delivery holds the step: this one comes back once its
        // lease is over, instead of burning the host's retries.
        Err(LifecycleError::InProgress { retry_after, .. }) => {
            requeue(ctx, message, retry_after).await?;
            Ok(Outcome {
                return_value: json!({"outcome": "deferred", "detail": "step-in-progress"}),
                ..Outcome::default()
            })
        }
        Err(e) if e.is_transient() => Err(FunctionError::Transient(e.into())),
        Err(e) => {
            let code = match &e {
                LifecycleError::Refused { code, .. } => *code,
                _ => "step-failed",
            };
            let mut record = AuditRecord::new(message.kind.as_str(), AuditOutcome::Failed);
            record.time = ctx.clock.now();
            record.run = Some(message.run.to_string());
            record.case = Some(message.case.clone());
            record.user = Some(message.user.to_string());
            record.error = Some(format!("{code}: {}", e.audit_text()));
            ctx.audit
                .record(&record)
                .await
                .map_err(|e| FunctionError::Transient(e.into()))?;
            Ok(Outcome {
                return_value: json!({"outcome": "failed", "detail": code}),
                ..Outcome::default()
            })
        }
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

/// How `dormant worker` drains the queue.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Stop when the queue has nothing visible, instead of polling on.
    pub once: bool,
    /// How long a received message stays invisible to other workers; a
    /// worker killed mid-step leaves it to reappear after this.
    pub visibility: StdDuration,
    /// Messages taken per receive (Azure allows 1–32).
    pub batch: u32,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    pub handled: u64,
    pub retried: u64,
    pub poisoned: u64,
}

/// What became of one received message.
enum Disposition {
    Handled,
    Retry,
    Poisoned,
}

/// `dormant worker`: the same handling as the queue trigger, with the
/// host's semantics played here: success or a recorded permanent failure
/// deletes the message; a transient failure leaves it to reappear; after
/// [`MAX_DEQUEUE_COUNT`] deliveries it moves to `dormant-actions-poison`.
/// The messages of one receive run concurrently, as the host runs a batch.
pub async fn drain(ctx: &AppContext, options: &DrainOptions) -> anyhow::Result<Drained> {
    use futures::StreamExt as _;
    let store = ctx.storage().await?;
    let poison = format!("{ACTIONS_QUEUE}-poison");
    store.ensure_queue(&poison).await?;
    let mut out = Drained::default();
    loop {
        let batch = store
            .receive(
                ACTIONS_QUEUE,
                options.batch.clamp(1, 32),
                options.visibility,
            )
            .await?;
        if batch.is_empty() {
            if options.once {
                return Ok(out);
            }
            tokio::time::sleep(StdDuration::from_secs(2)).await;
            continue;
        }
        let results: Vec<anyhow::Result<Disposition>> = futures::stream::iter(batch)
            .map(|msg| process(ctx, &poison, msg, options.visibility))
            .buffer_unordered(options.batch.clamp(1, 32) as usize)
            .collect()
            .await;
        for r in results {
            match r? {
                Disposition::Handled => out.handled += 1,
                Disposition::Retry => out.retried += 1,
                Disposition::Poisoned => out.poisoned += 1,
            }
        }
    }
}

async fn process(
    ctx: &AppContext,
    poison: &str,
    msg: crate::store::ReceivedMessage,
    visibility: StdDuration,
) -> anyhow::Result<Disposition> {
    let store = &ctx.store;
    // The message stays invisible while its step runs, however long: its
    // visibility is extended at half-time (as the Functions host does), so
    // the queue hands it out again only if this worker died.
    let receipt = std::sync::Mutex::new(msg.pop_receipt.clone());
    let keep_hidden = async {
        let every = (visibility / 2).max(StdDuration::from_millis(500));
        loop {
            tokio::time::sleep(every).await;
            let current = receipt.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match store
                .update_visibility(ACTIONS_QUEUE, &msg.id, &current, visibility)
                .await
            {
                Ok(next) => *receipt.lock().unwrap_or_else(|p| p.into_inner()) = next,
                Err(e) => {
                    tracing::warn!(error = %e, "could not extend a message's visibility; it may be delivered again");
                }
            }
        }
    };
    let work = async {
        match unwrap_encoded(Value::String(msg.text.clone())) {
            Ok(value) => handle(ctx, &value, Some(&msg.id)).await,
            Err(reason) => Err(FunctionError::permanent("malformed-message", reason)),
        }
    };
    let result = tokio::select! {
        result = work => result,
        never = keep_hidden => match never {},
    };
    let pop_receipt = receipt.into_inner().unwrap_or_else(|p| p.into_inner());
    let done = match result {
        Ok(_) => true,
        Err(FunctionError::Permanent { code, message }) => {
            let failure = PermanentFailure {
                function: NAME,
                invocation_id: String::new(),
                code,
                message,
                message_id: Some(msg.id.clone()),
                dequeue_count: Some(msg.dequeue_count),
            };
            match ctx.failure_recorder()(failure).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not record a refused message; it stays queued");
                    false
                }
            }
        }
        Err(FunctionError::Transient(e)) => {
            tracing::warn!(error = %format!("{e:#}"), delivery = msg.dequeue_count, "transient failure; the message will be retried");
            false
        }
    };
    if done {
        forget(store, &msg.id, &pop_receipt).await?;
        Ok(Disposition::Handled)
    } else if msg.dequeue_count >= MAX_DEQUEUE_COUNT {
        store
            .send(poison, &msg.text, SendOptions::default())
            .await?;
        forget(store, &msg.id, &pop_receipt).await?;
        Ok(Disposition::Poisoned)
    } else {
        Ok(Disposition::Retry)
    }
}

/// Deletes a handled message. If it was handed out again meanwhile (an
/// extension failed), its receipt no longer works: that is no reason to
/// stop the worker; the other delivery finds the step done.
async fn forget(store: &crate::store::Store, id: &str, pop_receipt: &str) -> anyhow::Result<()> {
    match store.delete_message(ACTIONS_QUEUE, id, pop_receipt).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => {
            tracing::warn!(error = %e, "a handled message could not be deleted (handed out again meanwhile); its next delivery is a repeat");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
