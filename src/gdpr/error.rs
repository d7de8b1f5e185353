//! The one error type of the GDPR endpoints. The cause is logged; the
//! caller gets a stable code and a message, `{"error":{"code","message"}}`,
//! never the token or anything personal.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::token::TokenError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `DORMANT_GDPR_*` is not set: nobody can be verified.
    #[error("the GDPR endpoints are not configured")]
    NotConfigured,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("no such request")]
    NotFound,
    #[error("the request body is larger than 64 KiB")]
    TooLarge,
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// Storage or Graph is unavailable; worth retrying.
    #[error("temporarily unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Unavailable(e.into())
    }
}

impl From<crate::graph::GraphError> for Error {
    fn from(e: crate::graph::GraphError) -> Self {
        if e.is_transient() {
            Error::Unavailable(e.into())
        } else {
            Error::Unexpected(e.into())
        }
    }
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            Error::Token(TokenError::TooOld { .. }) => StatusCode::FORBIDDEN,
            Error::Token(TokenError::KeysUnavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Token(_) => StatusCode::UNAUTHORIZED,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotConfigured => "gdpr-not-configured",
            Error::Token(TokenError::Missing) => "missing-token",
            Error::Token(TokenError::Invalid(_)) => "invalid-token",
            Error::Token(TokenError::TooOld { .. }) => "reauthentication-required",
            Error::Token(TokenError::KeysUnavailable(_)) => "issuer-unavailable",
            Error::NotFound => "not-found",
            Error::TooLarge => "body-too-large",
            Error::RateLimited { .. } => "rate-limited",
            Error::Unavailable(_) => "unavailable",
            Error::Unexpected(_) => "internal-error",
        }
    }

    fn message(&self) -> String {
        match self {
            Error::NotConfigured => "GDPR requests are not enabled on this deployment: set DORMANT_GDPR_ISSUER, DORMANT_GDPR_AUDIENCE and DORMANT_GDPR_METADATA_URL".into(),
            Error::Token(e @ (TokenError::Missing | TokenError::Invalid(_) | TokenError::TooOld { .. })) => e.to_string(),
            Error::Token(TokenError::KeysUnavailable(_)) => "the token issuer's signing keys cannot be read right now; try again later".into(),
            Error::NotFound => "no such request".into(),
            Error::TooLarge => "the request body is larger than 64 KiB".into(),
            Error::RateLimited { .. } => "more than 10 GDPR requests in an hour; try again later".into(),
            Error::Unavailable(_) => "a backing service is unavailable; try again later".into(),
            Error::Unexpected(_) => "the request failed; it has been logged".into(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Error::Unavailable(e) | Error::Unexpected(e) => {
                tracing::error!(code = self.code(), error = %format!("{e:#}"), "GDPR request failed")
            }
            Error::Token(TokenError::KeysUnavailable(cause)) => {
                tracing::warn!(code = self.code(), error = %cause, "GDPR request refused")
            }
            other => tracing::info!(
                code = other.code(),
                status = status.as_u16(),
                "GDPR request refused"
            ),
        }
        let body = json!({"error": {"code": self.code(), "message": self.message()}});
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        // RFC 6750 §3: no error attribute when no credentials were sent.
        let challenge = match &self {
            Error::Token(TokenError::Missing) => Some("Bearer realm=\"dormant\"".to_owned()),
            Error::Token(TokenError::Invalid(_)) => Some(
                "Bearer realm=\"dormant\", error=\"invalid_token\", error_description=\"the token is not valid\"".to_owned(),
            ),
            // RFC 9470 step-up: tells the app how fresh the sign-in must be.
            Error::Token(TokenError::TooOld { max_age_secs }) => Some(format!(
                "Bearer realm=\"dormant\", error=\"insufficient_user_authentication\", error_description=\"a more recent sign-in is required\", max_age=\"{max_age_secs}\""
            )),
            _ => None,
        };
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        let retry = match &self {
            Error::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
            Error::Unavailable(_) | Error::Token(TokenError::KeysUnavailable(_)) => Some(30),
            _ => None,
        };
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(e: Error) -> (u16, Option<String>, Option<String>) {
        let r = e.into_response();
        let h = |n: header::HeaderName| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            r.status().as_u16(),
            h(header::WWW_AUTHENTICATE),
            h(header::RETRY_AFTER),
        )
    }

    #[test]
    fn statuses_and_headers_follow_the_contract() {
        let (s, c, _) = parts(Error::Token(TokenError::Missing));
        assert_eq!((s, c.as_deref()), (401, Some("Bearer realm=\"dormant\"")));
        let (s, c, _) = parts(Error::Token(TokenError::Invalid("x")));
        assert_eq!(s, 401);
        assert!(c.unwrap_or_default().contains("error=\"invalid_token\""));
        let (s, c, _) = parts(Error::Token(TokenError::TooOld { max_age_secs: 600 }));
        assert_eq!(s, 403);
        assert!(c.unwrap_or_default().contains("max_age=\"600\""));
        let (s, _, r) = parts(Error::RateLimited {
            retry_after: Duration::from_secs(42),
        });
        assert_eq!((s, r.as_deref()), (429, Some("42")));
        assert_eq!(parts(Error::NotFound).0, 404);
        assert_eq!(parts(Error::TooLarge).0, 413);
        assert_eq!(parts(Error::NotConfigured).0, 503);
        assert_eq!(
            parts(Error::Token(TokenError::KeysUnavailable("down".into()))).0,
            503
        );
        assert_eq!(parts(Error::Unexpected(anyhow::anyhow!("boom"))).0, 500);
    }
}
