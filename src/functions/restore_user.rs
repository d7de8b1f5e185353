//! `RestoreUser` (`POST /api/users/{id}/restore`, admin key): undo the
//! user's newest case within 30 days. The same code as `dormant restore`
//! and the `restore` queue message.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::AppContext;
use super::admin::{error, unavailable};
use crate::host::{FunctionError, Functions};
use crate::ids::ObjectId;
use crate::lifecycle::LifecycleError;

pub const NAME: &str = "RestoreUser";
pub const ROUTE: &str = "users/{id}/restore";

pub fn register(functions: Functions, ctx: Arc<AppContext>) -> Functions {
    functions.http(NAME, ROUTE, &[Method::POST], post(restore).with_state(ctx))
}

async fn restore(State(ctx): State<Arc<AppContext>>, Path(id): Path<String>) -> Response {
    let Some(user) = ObjectId::parse(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-user-id",
            "the user id must be a directory object id (a GUID)",
        );
    };
    let lifecycle = match ctx.lifecycle().await {
        Ok(l) => l,
        Err(FunctionError::Transient(e)) => return unavailable(&format!("{e:#}")),
        Err(e) => return unavailable(&e),
    };
    match lifecycle.restore(user.as_str(), None, "").await {
        Ok(report) => (StatusCode::OK, Json(report)).into_response(),
        Err(LifecycleError::Refused {
            code: "no-case",
            message,
        }) => error(StatusCode::NOT_FOUND, "no-case", &message),
        Err(LifecycleError::Refused { code, message }) => {
            error(StatusCode::CONFLICT, code, &message)
        }
        Err(e) => unavailable(&e),
    }
}
