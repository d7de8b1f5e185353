//! `Attest` (`GET` / `POST /api/attest/{token}`, anonymous: the signed
//! token is the credential, and it travels in a mail link).
//!
//! `GET` shows a one-page confirmation (plain HTML, no script) naming the
//! user, what will happen and when, and two forms, one per answer. It
//! never changes anything: mail scanners fetch links. `POST` records the
//! answer of the token it is posted to (the answer is inside the signed
//! token, so a tampered answer fails the signature).
//!
//! Refusals change nothing and say so, each with its own status and code:
//! 400 `bad-link` (not a dormant link), 403 `forged-link` (the signature
//! does not verify: forged, tampered, another key), 410 `link-expired`
//! (past the next destructive step), 409 `already-answered`, 410
//! `case-ended`, 503 `attestation-not-configured` / `unavailable`. The body
//! is a short HTML page, or `{"error": {"code", "message"}}` to a caller
//! that accepts JSON. No body or log line holds the token, a name or a
//! secret: logs carry case and object ids only.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::AppContext;
use crate::host::{FunctionError, Functions};
use crate::lifecycle::attest::{
    Answer, Answered, AttestError, Attestor, Claims, Refusal, TokenError, what_happens,
};
use crate::report::html::escape;

pub const NAME: &str = "Attest";
pub const ROUTE: &str = "attest/{token}";

pub fn register(functions: Functions, ctx: Arc<AppContext>) -> Functions {
    functions.http(
        NAME,
        ROUTE,
        &[Method::GET, Method::POST],
        get(show).post(record).with_state(ctx),
    )
}

/// A refusal or failure as the caller sees it.
struct Refused {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    message: &'static str,
}

impl Refused {
    fn token(e: TokenError) -> Self {
        match e {
            TokenError::Malformed => Self {
                status: StatusCode::BAD_REQUEST,
                code: "bad-link",
                title: "This link is not valid",
                message: "The link is incomplete or is not a dormant link. Open it again from the mail, or copy the whole link.",
            },
            TokenError::BadSignature => Self {
                status: StatusCode::FORBIDDEN,
                code: "forged-link",
                title: "This link is not genuine",
                message: "The link's signature does not verify. Nothing was changed.",
            },
            TokenError::Expired => Self::expired(),
        }
    }

    fn expired() -> Self {
        Self {
            status: StatusCode::GONE,
            code: "link-expired",
            title: "This link has expired",
            message: "The link was valid until the account's next step. Nothing was changed; ask an administrator.",
        }
    }

    fn refusal(r: Refusal) -> Self {
        match r {
            Refusal::AlreadyAnswered(_) => Self {
                status: StatusCode::CONFLICT,
                code: "already-answered",
                title: "Already answered",
                message: "This case was answered already. Nothing was changed.",
            },
            Refusal::Ended => Self {
                status: StatusCode::GONE,
                code: "case-ended",
                title: "This case has ended",
                message: "The account is no longer waiting for an answer. Nothing was changed.",
            },
            Refusal::TooLate => Self::expired(),
        }
    }

    fn not_configured() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "attestation-not-configured",
            title: "Attestation is not configured",
            message: "attestation is not configured",
        }
    }

    fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            title: "Try again later",
            message: "The service is not answering right now. Nothing was changed; try the link again later.",
        }
    }

    fn into_response(self, headers: &HeaderMap) -> Response {
        let mut r = if wants_json(headers) {
            (
                self.status,
                Json(json!({"error": {"code": self.code, "message": self.message}})),
            )
                .into_response()
        } else {
            (
                self.status,
                Html(page(
                    self.title,
                    &format!("<p>{}</p>", escape(self.message)),
                )),
            )
                .into_response()
        };
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        }
        r
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// A whole page: no script, no external resource, not cached, not indexed.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         form{{display:inline-block;margin:1rem 1rem 0 0}}button{{font-size:1rem;padding:.6rem 1.2rem}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title),
    )
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The key and the verified claims, or the refusal.
async fn verified<'a>(ctx: &'a AppContext, token: &str) -> Result<(&'a Attestor, Claims), Refused> {
    let attestor = match ctx.attestor().await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(Refused::not_configured()),
        Err(e) => {
            tracing::warn!(error = %e, "the attestation key could not be read");
            return Err(Refused::unavailable());
        }
    };
    match attestor.key.verify(token, ctx.clock.now()) {
        Ok(claims) => Ok((attestor, claims)),
        Err(e) => {
            // Nothing from the token: it may be anything.
            tracing::info!(refused = %e, "attestation link refused");
            Err(Refused::token(e))
        }
    }
}

fn attest_failure(e: AttestError, claims: &Claims) -> Refused {
    match e {
        AttestError::Refused(r) => {
            tracing::info!(case = %claims.case, user = %claims.user, refused = %r, "attestation refused");
            Refused::refusal(r)
        }
        AttestError::Lifecycle(e) => {
            tracing::warn!(case = %claims.case, user = %claims.user, error = %e.audit_text(), "attestation failed; the caller may retry");
            Refused::unavailable()
        }
    }
}

async fn show(
    State(ctx): State<Arc<AppContext>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (attestor, claims) = match verified(&ctx, &token).await {
        Ok(v) => v,
        Err(r) => return r.into_response(&headers),
    };
    let lifecycle = match ctx.lifecycle().await {
        Ok(l) => l,
        Err(FunctionError::Transient(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "attestation page unavailable");
            return Refused::unavailable().into_response(&headers);
        }
        Err(e) => {
            tracing::warn!(error = %e, "attestation page unavailable");
            return Refused::unavailable().into_response(&headers);
        }
    };
    let case = match lifecycle.attest_case(&claims).await {
        Ok(c) => c,
        Err(e) => return attest_failure(e, &claims).into_response(&headers),
    };
    // The name is for the person who owns the account (it is in the mail
    // too); the page falls back to the object id if Graph does not answer.
    let name = match lifecycle
        .graph
        .get_user(claims.user.as_str(), &["id", "displayName"])
        .await
    {
        Ok(u) => u.display_name.unwrap_or_else(|| claims.user.to_string()),
        Err(e) => {
            tracing::info!(user = %claims.user, error = %crate::lifecycle::graph_code(&e), "display name not available for the attestation page");
            claims.user.to_string()
        }
    };
    if wants_json(&headers) {
        return Json(json!({
            "case": case.id,
            "user": case.user,
            "answer": claims.answer.as_str(),
            "validUntil": claims.expires,
        }))
        .into_response();
    }
    let forms = [Answer::Keep, Answer::LetGo]
        .into_iter()
        .filter_map(|answer| {
            let path = attestor.path_for(&claims, answer)?;
            let label = match answer {
                Answer::Keep => "Keep the account",
                Answer::LetGo => "Let it go",
            };
            Some(format!(
                "<form method=\"post\" action=\"{}\"><button type=\"submit\" name=\"answer\" value=\"{}\">{label}</button></form>",
                escape(&path),
                answer.as_str()
            ))
        })
        .collect::<String>();
    let keep_days = ctx.config.policy.attest.keep_days;
    let body = format!(
        "<p>The account <strong>{name}</strong> has not been used for a long time. \
         Unless it is used again, {happens}.</p>\
         <p><strong>Keep</strong> stops this and leaves the account alone for {keep_days} days \
         (or until it is used again). <strong>Let it go</strong> lets the plan go on.</p>\
         <p>You followed the <em>{chosen}</em> link. Choose:</p>{forms}\
         <p><small>This link works until {until}. Case {case_id}.</small></p>",
        name = escape(&name),
        happens = escape(&what_happens(&case)),
        chosen = match claims.answer {
            Answer::Keep => "keep",
            Answer::LetGo => "let go",
        },
        until = date(claims.expires),
        case_id = escape(&case.id),
    );
    Html(page("Is this account still needed?", &body)).into_response()
}

async fn record(
    State(ctx): State<Arc<AppContext>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_, claims) = match verified(&ctx, &token).await {
        Ok(v) => v,
        Err(r) => return r.into_response(&headers),
    };
    let lifecycle = match ctx.lifecycle().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "attestation unavailable");
            return Refused::unavailable().into_response(&headers);
        }
    };
    match lifecycle.answer(&claims).await {
        Ok(answered) => answered_response(&answered, &headers),
        Err(e) => attest_failure(e, &claims).into_response(&headers),
    }
}

fn answered_response(a: &Answered, headers: &HeaderMap) -> Response {
    if wants_json(headers) {
        return Json(json!({
            "case": a.case.id,
            "user": a.case.user,
            "answer": a.answer.as_str(),
            "keptUntil": a.kept_until,
        }))
        .into_response();
    }
    let body = match (a.answer, a.kept_until) {
        (Answer::Keep, Some(until)) => format!(
            "<p>The account will be left alone until {} (or longer, if it is used). Nothing else is needed.</p>",
            date(until)
        ),
        _ => format!(
            "<p>Your answer is recorded: {}.</p>",
            escape(&what_happens(&a.case))
        ),
    };
    Html(page("Thank you", &body)).into_response()
}
