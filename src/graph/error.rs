//! Typed Graph failures and the rules that sort an answer into them.
//!
//! The sort decides what the client does next: retry ([`GraphError::Transient`],
//! [`GraphError::Throttled`]), restart a scan partition ([`GraphError::ExpiredSkipToken`]),
//! treat as absence ([`GraphError::NotFound`]) or stop ([`GraphError::Permanent`],
//! [`GraphError::Auth`]).

use serde::Deserialize;
use std::time::Duration;

/// Everything that can go wrong talking to Microsoft Graph (or to the token
/// authority and Key Vault on its behalf).
///
/// Messages hold neither tokens nor personal data: Graph's `error.message`
/// can quote a user principal name or a mail address, so only its
/// `error.code`, the HTTP status and dormant's own words are kept. These
/// texts reach `run.json`, summary warnings and audit lines.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// A failure that may pass: 5xx, connection reset, timeout, a truncated
    /// or non-JSON body on a read.
    #[error("transient Microsoft Graph failure: {0}")]
    Transient(String),
    /// Graph answered 429; `retry_after` is its `Retry-After` (or our backoff
    /// when it sent none).
    #[error("throttled by Microsoft Graph, retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    /// Graph refused the request for good (400, 403, 409, …). `detail` is
    /// dormant's own description (never Graph's message), empty when the
    /// status and code say it all.
    #[error(
        "Microsoft Graph refused the request: HTTP {status} {code}{}",
        detail_suffix(detail)
    )]
    Permanent {
        status: u16,
        code: String,
        detail: String,
    },
    /// 404: the object does not exist (or no longer does).
    #[error("not found in Microsoft Graph")]
    NotFound,
    /// The `$skiptoken` in a `@odata.nextLink` expired; the caller must restart
    /// its partition from the first page (Graph: skiptokens expire).
    #[error("the paging token expired; restart the listing from its first page")]
    ExpiredSkipToken,
    /// The credential could not produce a token, or Graph kept refusing it.
    #[error("authentication failed: {0}")]
    Auth(String),
}

impl GraphError {
    /// Worth trying again later (by the client's own retry loop or by a queue redelivery).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GraphError::Transient(_) | GraphError::Throttled { .. }
        )
    }

    /// Graph's error code, when Graph gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Permanent { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A refusal described in dormant's own words (`detail` must never
    /// carry text from an answer).
    pub(crate) fn permanent(status: u16, code: &str, detail: impl Into<String>) -> Self {
        GraphError::Permanent {
            status,
            code: code.to_string(),
            detail: detail.into(),
        }
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// Describes a JSON decoding failure without quoting the document: serde's
/// own message repeats the offending value (`invalid type: string "ada@…"`),
/// which may be personal data. Kind and position only.
pub(crate) fn decode_failure(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not the expected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    if e.line() == 0 {
        kind.to_string()
    } else {
        format!("{kind} at line {} column {}", e.line(), e.column())
    }
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GraphErrorBody {
    pub error: GraphErrorDetail,
}

/// The `error` object of a Graph error body.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct GraphErrorDetail {
    pub code: String,
    pub message: String,
    pub inner_error: Option<InnerError>,
}

/// `innerError`: correlation ids to quote in a support case.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct InnerError {
    pub code: Option<String>,
    pub date: Option<String>,
    #[serde(rename = "request-id")]
    pub request_id: Option<String>,
    #[serde(rename = "client-request-id")]
    pub client_request_id: Option<String>,
}

/// What to do with one HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx (or a 3xx the caller asked for).
    Success,
    /// 401: fetch a fresh token once and resend.
    Unauthorized(GraphError),
    /// Give up or retry according to the error's kind.
    Fail(GraphError),
}

/// Error codes Graph uses when a `$skiptoken` is no longer valid.
const EXPIRED_PAGE_TOKEN_CODES: &[&str] = &["Directory_ExpiredPageToken", "ExpiredPageToken"];

/// Default pause after a 429 without `Retry-After` (Graph: "if no Retry-After
/// header is provided, use an exponential backoff"; the pacer adds the backoff).
pub(crate) const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(5);

/// Sorts one HTTP answer. `retry_after` is the parsed `Retry-After` header.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let detail = parse_error_body(body);
    // Graph's message is read to sort the answer, never kept (it can quote
    // a UPN); the code names the failure.
    let (code, message) = match &detail {
        Some(d) if !d.code.is_empty() => (d.code.as_str(), d.message.as_str()),
        Some(d) => ("(no code)", d.message.as_str()),
        None => ("(no Graph error body)", ""),
    };
    match status {
        401 => Verdict::Unauthorized(GraphError::Auth(format!("Graph answered 401 {code}"))),
        404 => Verdict::Fail(GraphError::NotFound),
        429 => Verdict::Fail(GraphError::Throttled {
            retry_after: retry_after.unwrap_or(DEFAULT_THROTTLE_PAUSE),
        }),
        400 if is_expired_page_token(code, message) => Verdict::Fail(GraphError::ExpiredSkipToken),
        // 408 Request Timeout, 5xx, and 509 (bandwidth) are the documented transient answers.
        408 | 500..=599 => Verdict::Fail(GraphError::Transient(format!("HTTP {status} {code}"))),
        _ => Verdict::Fail(GraphError::permanent(status, code, "")),
    }
}

fn is_expired_page_token(code: &str, message: &str) -> bool {
    if EXPIRED_PAGE_TOKEN_CODES.contains(&code) {
        return true;
    }
    let m = message.to_ascii_lowercase();
    (m.contains("skiptoken") || m.contains("page token")) && m.contains("expired")
}

/// Parses a Graph error body; `None` for anything else (HTML from a proxy,
/// a truncated body): the status alone then decides.
pub(crate) fn parse_error_body(body: &[u8]) -> Option<GraphErrorDetail> {
    serde_json::from_slice::<GraphErrorBody>(body)
        .ok()
        .map(|b| b.error)
        .filter(|d| !d.code.is_empty() || !d.message.is_empty())
}

/// The longest wait dormant takes from one `Retry-After`. Graph asks for
/// seconds to a few minutes; a larger value is a broken header (or a proxy's
/// idea of a joke) and would pause every call of its budget for that long.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` is seconds for Graph; an HTTP date is accepted too (RFC 9110).
/// Clamped to [`MAX_RETRY_AFTER`]; `None` for a value that is neither (the
/// caller then backs off on its own).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        // `from_secs_f64` panics past u64 seconds: clamp first.
        Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
        delta.to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    const THROTTLED: &str = include_str!("fixtures/error-429.json");

    #[test]
    fn error_body_parses_documented_shape() {
        let d = parse_error_body(THROTTLED.as_bytes()).expect("fixture is a Graph error");
        assert_eq!(d.code, "TooManyRequests");
        let inner = d.inner_error.expect("innerError present");
        assert!(inner.request_id.is_some());
        assert!(inner.date.is_some());
    }

    #[test]
    fn statuses_sort_into_kinds() {
        assert_eq!(classify(200, None, b""), Verdict::Success);
        assert_eq!(classify(204, None, b""), Verdict::Success);
        assert!(matches!(
            classify(401, None, b"{}"),
            Verdict::Unauthorized(_)
        ));
        assert_eq!(
            classify(
                404,
                None,
                br#"{"error":{"code":"Request_ResourceNotFound","message":"x"}}"#
            ),
            Verdict::Fail(GraphError::NotFound)
        );
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), THROTTLED.as_bytes()),
            Verdict::Fail(GraphError::Throttled {
                retry_after: Duration::from_secs(7)
            })
        );
        assert_eq!(
            classify(429, None, b""),
            Verdict::Fail(GraphError::Throttled {
                retry_after: DEFAULT_THROTTLE_PAUSE
            })
        );
        for s in [500, 502, 503, 504, 408] {
            match classify(s, None, b"<html>gateway</html>") {
                Verdict::Fail(e) => assert!(e.is_transient(), "{s}"),
                v => panic!("{s}: {v:?}"),
            }
        }
        match classify(
            403,
            None,
            br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges"}}"#,
        ) {
            Verdict::Fail(GraphError::Permanent { status, code, .. }) => {
                assert_eq!(status, 403);
                assert_eq!(code, "Authorization_RequestDenied");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn expired_skiptoken_is_its_own_kind() {
        let body = br#"{"error":{"code":"Directory_ExpiredPageToken","message":"The specified page token value has expired and can no longer be included in your request."}}"#;
        assert_eq!(
            classify(400, None, body),
            Verdict::Fail(GraphError::ExpiredSkipToken)
        );
        let body = br#"{"error":{"code":"BadRequest","message":"The skiptoken has expired."}}"#;
        assert_eq!(
            classify(400, None, body),
            Verdict::Fail(GraphError::ExpiredSkipToken)
        );
        let other = br#"{"error":{"code":"BadRequest","message":"Invalid filter clause"}}"#;
        assert!(matches!(
            classify(400, None, other),
            Verdict::Fail(GraphError::Permanent { .. })
        ));
    }

    #[test]
    fn garbage_bodies_never_panic() {
        for body in [
            &b"\xff\xfe\x00garbage"[..],
            b"{\"error\":",
            b"null",
            b"[]",
            b"",
        ] {
            let _ = classify(400, None, body);
            let _ = classify(503, None, body);
            assert!(parse_error_body(body).is_none());
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    #[test]
    fn huge_or_malformed_retry_after_is_clamped_and_never_panics() {
        for huge in [
            "18446744073709551615",
            "99999999999999999999999",
            "1e30",
            "1.7976931348623157e308",
            "86400",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for bad in ["NaN", "inf", "-inf", "", "-0.5", "1,5", "\u{0}", "30s"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after("299"), Some(Duration::from_secs(299)));
    }

    #[test]
    fn graph_error_messages_that_quote_a_user_are_not_kept() {
        let upn = "ada.lovelace@contoso.com";
        let body = format!(
            r#"{{"error":{{"code":"Request_BadRequest","message":"Invalid value for user {upn}"}}}}"#
        );
        for status in [400, 401, 403, 409, 500, 503] {
            let text = match classify(status, None, body.as_bytes()) {
                Verdict::Fail(e) | Verdict::Unauthorized(e) => e.to_string(),
                Verdict::Success => panic!("{status}"),
            };
            assert!(!text.contains(upn), "{status}: {text}");
            assert!(text.contains("Request_BadRequest"), "{status}: {text}");
        }
        let err = serde_json::from_str::<u32>(&format!("\"{upn}\"")).unwrap_err();
        assert!(err.to_string().contains(upn), "serde quotes the value");
        let told = decode_failure(&err);
        assert!(!told.contains(upn), "{told}");
        assert!(told.starts_with("not the expected shape"), "{told}");
    }
}
