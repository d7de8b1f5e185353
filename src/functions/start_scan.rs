//! `StartScan` (`POST /api/scans[?dryRun=true][&guestsOnly=true]`, admin
//! key checked by the host): queues a scan and answers `202` with the run id and a `Location`
//! to `RunStatus` at once. The scan itself runs on the queue: a forwarded
//! HTTP answer is cut at 230 s, far shorter than a big tenant's scan.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::AppContext;
use crate::config::TenantKind;
use crate::host::Functions;
use crate::scan::run::{ScanError, ScanScope};

pub const NAME: &str = "StartScan";
pub const ROUTE: &str = "scans";

pub fn register(functions: Functions, ctx: Arc<AppContext>) -> Functions {
    functions.http(
        NAME,
        ROUTE,
        &[axum::http::Method::POST],
        post(start).with_state(ctx),
    )
}

/// `/api/runs/{runId}`: where `RunStatus` answers for the run.
pub fn location(run: &str) -> String {
    format!("/api/runs/{run}")
}

/// The error body every admin endpoint uses: `{"error": {"code","message"}}`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "scan storage or Graph unavailable");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "storage or Microsoft Graph is unavailable; try again shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
    r
}

/// `dryRun` as `true`/`false` (any case); absent means false; `None` for
/// anything else.
fn dry_run(query: &HashMap<String, String>) -> Option<bool> {
    flag(query, "dryRun")
}

fn flag(query: &HashMap<String, String>, name: &str) -> Option<bool> {
    match query.get(name).map(|v| v.to_ascii_lowercase()) {
        None => Some(false),
        Some(v) if v == "true" => Some(true),
        Some(v) if v == "false" => Some(false),
        Some(_) => None,
    }
}

async fn start(
    State(ctx): State<Arc<AppContext>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(dry_run) = dry_run(&query) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "dryRun must be true or false",
        );
    };
    let scope = match flag(&query, "guestsOnly") {
        Some(false) => ScanScope::All,
        Some(true) if ctx.config.tenant_kind == TenantKind::Workforce => ScanScope::Guests,
        Some(true) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "guestsOnly is the workforce guest audit; a B2C tenant's guests are judged by every scan",
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "guestsOnly must be true or false",
            );
        }
    };
    let scanner = match ctx.scanner().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    match scanner.begin(dry_run, scope, &ctx.scan).await {
        Ok(begun) => {
            let run = begun.run.as_str();
            tracing::info!(run = %run, dry_run = begun.dry_run, scope = begun.scope.as_str(), resumed = begun.resumed, "scan requested");
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location(run))],
                axum::Json(json!({
                    "runId": run,
                    "status": "running",
                    "dryRun": begun.dry_run,
                    "scope": begun.scope.as_str(),
                    "resumed": begun.resumed,
                })),
            )
                .into_response()
        }
        Err(ScanError::Busy(running)) => {
            let mut r = error(
                StatusCode::CONFLICT,
                "scan-running",
                &format!("scan {running} is running in this tenant; one scan at a time"),
            );
            if crate::ids::RunId::parse(&running).is_some()
                && let Ok(v) = header::HeaderValue::from_str(&location(&running))
            {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) if e.is_transient() => unavailable(&e),
        Err(e) => {
            tracing::error!(error = %e, "the scan could not be started");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "scan-failed",
                "the scan could not be started",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_is_true_false_or_refused() {
        let q = |v: &str| HashMap::from([("dryRun".to_owned(), v.to_owned())]);
        assert_eq!(dry_run(&HashMap::new()), Some(false));
        assert_eq!(dry_run(&q("true")), Some(true));
        assert_eq!(dry_run(&q("TRUE")), Some(true));
        assert_eq!(dry_run(&q("false")), Some(false));
        assert_eq!(dry_run(&q("yes")), None);
    }
}
