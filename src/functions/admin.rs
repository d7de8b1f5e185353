//! Answers of the operator endpoints (`authLevel: admin`: the host checks
//! the master key): one error shape, `{"error": {"code", "message"}}`,
//! never a stack of causes that could carry a name.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
    }
    r
}

/// A failure worth retrying: 503 with `Retry-After`, the cause logged.
pub fn unavailable(cause: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %cause, "operator request failed; retry later");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Microsoft Graph or storage is not answering; retry later",
    )
}
