//! `ReleaseRun` (`POST /api/runs/{id}/release`, admin key): a person
//! reviewed a quarantined run and lets its plan go. The same code as
//! `dormant release`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::AppContext;
use super::admin::{error, unavailable};
use crate::host::Functions;
use crate::ids::RunId;
use crate::scan::run::ScanError;

pub const NAME: &str = "ReleaseRun";
pub const ROUTE: &str = "runs/{id}/release";

pub fn register(functions: Functions, ctx: Arc<AppContext>) -> Functions {
    functions.http(NAME, ROUTE, &[Method::POST], post(release).with_state(ctx))
}

async fn release(State(ctx): State<Arc<AppContext>>, Path(id): Path<String>) -> Response {
    let Some(run) = RunId::parse(&id) else {
        return error(StatusCode::NOT_FOUND, "unknown-run", "no run has this id");
    };
    let scanner = match ctx.scanner().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    match scanner.release(&run).await {
        Ok(cases) => (
            StatusCode::OK,
            Json(json!({"runId": run.to_string(), "status": "released", "cases": cases})),
        )
            .into_response(),
        Err(ScanError::NotReleasable(why)) if why.starts_with("there is no run") => {
            error(StatusCode::NOT_FOUND, "unknown-run", "no run has this id")
        }
        Err(ScanError::NotReleasable(why)) => error(StatusCode::CONFLICT, "not-releasable", &why),
        Err(e) if !e.is_transient() => error(
            StatusCode::CONFLICT,
            "not-releasable",
            "the run's state cannot be released",
        ),
        Err(e) => unavailable(&e),
    }
}
