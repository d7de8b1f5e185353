//! `RunStatus` (`GET /api/runs/{id}`, admin key checked by the host): a
//! run's status, counts, quarantine state and report blob names. `404` for
//! a run id that is malformed or unknown in this tenant.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppContext;
use super::start_scan::error;
use crate::host::Functions;
use crate::ids::RunId;
use crate::scan::run::{RunView, view};

pub const NAME: &str = "RunStatus";
pub const ROUTE: &str = "runs/{id}";

pub fn register(functions: Functions, ctx: Arc<AppContext>) -> Functions {
    functions.http(
        NAME,
        ROUTE,
        &[axum::http::Method::GET],
        get(status).with_state(ctx),
    )
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not-found", "no such run")
}

async fn status(State(ctx): State<Arc<AppContext>>, Path(id): Path<String>) -> Response {
    let Some(run) = RunId::parse(&id) else {
        return not_found();
    };
    // Reading a run needs storage only, not Graph.
    let store = match ctx.storage().await {
        Ok(s) => s.clone(),
        Err(e) => {
            tracing::warn!(error = %e, "storage unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is unavailable; try again shortly",
            );
        }
    };
    match view(&store, &run).await {
        Ok(Some(view)) => axum::Json(render(&view)).into_response(),
        Ok(None) => not_found(),
        Err(e) => {
            tracing::warn!(error = %e, run = %run, "run state unreadable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the run's state could not be read; try again shortly",
            )
        }
    }
}

/// The status document (ids, counts and blob names only).
pub fn render(view: &RunView) -> serde_json::Value {
    let s = &view.state;
    let counts = view.summary.as_ref().map(|sum| {
        json!({
            "scanned": sum.scanned,
            "byVerdict": sum.by_verdict,
            "actionsPlanned": sum.actions_planned,
            "actionsEnqueued": sum.actions_enqueued,
            "graphRequests": sum.graph_requests,
            "throttled": sum.throttled,
        })
    });
    let quarantined = view.summary.as_ref().is_some_and(|sum| sum.quarantined);
    let reports = view
        .reports
        .as_ref()
        .map(|[csv, summary, html]| json!({"csv": csv, "summary": summary, "html": html}));
    json!({
        "runId": s.run.as_str(),
        "status": s.status.as_str(),
        "dryRun": s.dry_run,
        "scope": s.scope.as_str(),
        "startedAt": s.started_at,
        "finishedAt": s.finished_at,
        "partitions": {
            "done": view.coverage.leaves,
            "split": view.coverage.splits,
            "pending": view.coverage.pending,
        },
        "counts": counts,
        "quarantined": quarantined,
        "quarantineReason": view.summary.as_ref().and_then(|sum| sum.quarantine_reason.clone()),
        "reports": reports,
        "error": s.error,
    })
}
