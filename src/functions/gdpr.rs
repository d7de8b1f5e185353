//! `GdprDelete`, `GdprExport`, `GdprStatus`: forwarded HTTP functions
//! called by application backends with the user's own token (and the
//! function key, which the Functions host checks: `authLevel: function`).
//!
//! Every request: body at most 64 KiB (413), token verified (401/403),
//! then counted against the subject's hourly limit (429), then served.
//! The subject is always the token's; nobody can name another user.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::json;

use super::AppContext;
use crate::gdpr::error::{Error, Result};
use crate::gdpr::export::{ExportError, export};
use crate::gdpr::requests::{Origin, SubmitError, Submitted};
use crate::gdpr::token::VerifiedUser;
use crate::gdpr::{record_export, request_erasure};
use crate::graph::GraphError;
use crate::host::Functions;
use crate::store::audit::Outcome;

pub const DELETE: &str = "GdprDelete";
pub const DELETE_ROUTE: &str = "gdpr/delete";
pub const EXPORT: &str = "GdprExport";
pub const EXPORT_ROUTE: &str = "gdpr/export";
pub const STATUS: &str = "GdprStatus";
pub const STATUS_ROUTE: &str = "gdpr/requests/{id}";

/// CONTRACT: a body over 64 KiB is refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn register(functions: Functions, ctx: Arc<AppContext>) -> Functions {
    functions
        .http(
            DELETE,
            DELETE_ROUTE,
            &[Method::POST],
            post(delete).with_state(ctx.clone()),
        )
        .http(
            EXPORT,
            EXPORT_ROUTE,
            &[Method::GET],
            get(export_data).with_state(ctx.clone()),
        )
        .http(
            STATUS,
            STATUS_ROUTE,
            &[Method::GET],
            get(status).with_state(ctx),
        )
}

fn location(request_id: &str) -> String {
    format!("/api/gdpr/requests/{request_id}")
}

/// Size check (declared length, then the bytes actually sent), then the
/// token: nothing is stored for an unverified caller.
async fn verify(ctx: &AppContext, headers: &HeaderMap, body: Body) -> Result<VerifiedUser> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Error::TooLarge);
    }
    // The bodies carry nothing we use; read them only to enforce the cap
    // on chunked uploads.
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| Error::TooLarge)?;
    let verifier = ctx.gdpr.as_ref().ok_or(Error::NotConfigured)?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(verifier.verify_header(authorization).await?)
}

/// [`verify`], then the subject's hourly limit.
async fn admit(ctx: &AppContext, headers: &HeaderMap, body: Body) -> Result<VerifiedUser> {
    let user = verify(ctx, headers, body).await?;
    let store = ctx.storage().await?;
    if let Err(retry_after) = ctx
        .gdpr_requests(store)
        .admit(&user.subject, Utc::now())
        .await?
    {
        return Err(Error::RateLimited { retry_after });
    }
    Ok(user)
}

async fn delete(
    State(ctx): State<Arc<AppContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let user = verify(&ctx, &headers, body).await?;
    let store = ctx.storage().await?;
    // Counts against the hourly limit in the same write that creates or
    // finds the request.
    let submitted = request_erasure(
        &ctx.gdpr_requests(store),
        &ctx.audit,
        &ctx.config.tenant_id,
        &user.subject,
        Origin::User,
    )
    .await
    .map_err(|e| match e {
        SubmitError::Limited(retry_after) => Error::RateLimited { retry_after },
        SubmitError::Store(e) => e.into(),
    })?;
    let (status, request) = match submitted {
        Submitted::Pending(r) => (StatusCode::ACCEPTED, r),
        Submitted::Done(r) => (StatusCode::OK, r),
    };
    tracing::info!(user = %user.subject, request = %request.request_id, status = ?request.status, "GDPR erasure requested");
    let mut body = json!({"requestId": request.request_id, "status": request.status});
    if status == StatusCode::OK {
        body = request.view();
    }
    Ok((
        status,
        [(header::LOCATION, location(&request.request_id))],
        axum::Json(body),
    )
        .into_response())
}

async fn status(
    State(ctx): State<Arc<AppContext>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let user = admit(&ctx, &headers, body).await?;
    let store = ctx.storage().await?;
    let request = ctx
        .gdpr_requests(store)
        .get(&user.subject, &id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(axum::Json(request.view()).into_response())
}

async fn export_data(
    State(ctx): State<Arc<AppContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let user = admit(&ctx, &headers, body).await?;
    let graph = ctx.graph().await.map_err(|e| Error::Unexpected(e.into()))?;
    let result = export(graph, &ctx.extensions, &ctx.audit, &user.subject).await;
    let (outcome, code) = match &result {
        Ok(_) => (Outcome::Done, None),
        Err(ExportError::Graph(GraphError::NotFound)) => (Outcome::Failed, Some("user-not-found")),
        Err(ExportError::Graph(e)) if e.is_transient() => {
            (Outcome::Failed, Some("graph-unavailable"))
        }
        Err(ExportError::Graph(_)) => (Outcome::Failed, Some("graph-refused")),
        Err(ExportError::Store(_)) => (Outcome::Failed, Some("storage-unavailable")),
    };
    record_export(&ctx.audit, &user.subject, Origin::User, outcome, code).await?;
    tracing::info!(user = %user.subject, outcome = ?outcome, "GDPR export");
    match result {
        Ok(document) => Ok(axum::Json(document).into_response()),
        // The token verified but the directory no longer holds the user
        // (erased meanwhile): nothing to export.
        Err(ExportError::Graph(GraphError::NotFound)) => Err(Error::NotFound),
        Err(ExportError::Graph(e)) => Err(e.into()),
        Err(ExportError::Store(e)) => Err(e.into()),
    }
}
