//! The actions queue message (`dormant-actions`, CONTRACT schema v1):
//! `{"v":1,"kind","tenant","user","case","run","notBefore"}`. Only ids:
//! the host copies top-level properties into its own logs.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ObjectId, RunId, is_token_id};
use crate::policy::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Notify,
    Disable,
    ConvertMailbox,
    RemoveLicenses,
    Delete,
    Purge,
    Restore,
    ResetRedemption,
    GdprErase,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notify => "notify",
            Self::Disable => "disable",
            Self::ConvertMailbox => "convert-mailbox",
            Self::RemoveLicenses => "remove-licenses",
            Self::Delete => "delete",
            Self::Purge => "purge",
            Self::Restore => "restore",
            Self::ResetRedemption => "reset-redemption",
            Self::GdprErase => "gdpr-erase",
        }
    }
}

impl From<Step> for ActionKind {
    fn from(step: Step) -> Self {
        match step {
            Step::Notify => Self::Notify,
            Step::Disable => Self::Disable,
            Step::ConvertMailbox => Self::ConvertMailbox,
            Step::RemoveLicenses => Self::RemoveLicenses,
            Step::Delete => Self::Delete,
            Step::Purge => Self::Purge,
            Step::ResetRedemption => Self::ResetRedemption,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionMessage {
    pub v: u32,
    pub kind: ActionKind,
    pub tenant: String,
    pub user: ObjectId,
    pub case: String,
    pub run: RunId,
    #[serde(with = "iso_seconds")]
    pub not_before: DateTime<Utc>,
}

/// Why a message was refused. Permanent: retrying cannot fix it. The text
/// never quotes the message (it may hold what should not be logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not a v1 action message: {0}")]
    Shape(String),
    #[error("unsupported schema version {0} (this worker reads v1)")]
    Version(u64),
    #[error("the message is for another tenant")]
    WrongTenant,
    #[error("the case id is not an opaque id")]
    BadCase,
}

impl MessageError {
    /// Stable code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Shape(_) => "malformed-message",
            Self::Version(_) => "unsupported-version",
            Self::WrongTenant => "wrong-tenant",
            Self::BadCase => "malformed-message",
        }
    }
}

impl ActionMessage {
    pub const VERSION: u32 = 1;

    /// Validates a decoded queue message for `tenant`.
    pub fn from_value(value: &Value, tenant: &str) -> Result<Self, MessageError> {
        let version = value.get("v").and_then(Value::as_u64);
        match version {
            Some(1) => {}
            Some(other) => return Err(MessageError::Version(other)),
            None => return Err(MessageError::Shape("no numeric `v`".into())),
        }
        let msg: ActionMessage = serde_json::from_value(value.clone())
            .map_err(|e| MessageError::Shape(redact(&e.to_string())))?;
        if !msg.tenant.eq_ignore_ascii_case(tenant) {
            return Err(MessageError::WrongTenant);
        }
        if !is_token_id(&msg.case) {
            return Err(MessageError::BadCase);
        }
        Ok(msg)
    }

    /// The queue text: a JSON object (never a bare string the host might
    /// mistake for base64).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("an ActionMessage always serialises")
    }
}

/// serde's messages quote offending values (`invalid type: string "…"`,
/// ``unknown variant `…` ``); keep field names, drop values.
fn redact(text: &str) -> String {
    let text = text.split(" at line").next().unwrap_or_default();
    if text.starts_with("missing field") || text.starts_with("unknown field") {
        return text
            .split(", expected")
            .next()
            .unwrap_or_default()
            .to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

mod iso_seconds {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| serde::de::Error::custom("notBefore is not an ISO 8601 time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "8f0c2d2e-1111-4c4c-9d9d-123456789abc";

    fn good() -> Value {
        json!({"v":1,"kind":"remove-licenses","tenant":TENANT,
               "user":"5b3a1c2d-3333-4e4e-8f8f-0123456789ab","case":"c-1",
               "run":"20261122T020000Z-a1b2c3","notBefore":"2026-12-13T02:00:00Z"})
    }

    #[test]
    fn a_contract_message_round_trips() {
        let m = ActionMessage::from_value(&good(), TENANT).expect("valid");
        assert_eq!(m.kind, ActionKind::RemoveLicenses);
        let back: Value = serde_json::from_str(&m.to_text()).expect("json");
        assert_eq!(back, good());
    }

    #[test]
    fn every_kind_in_the_contract_parses() {
        for kind in [
            "notify",
            "disable",
            "convert-mailbox",
            "remove-licenses",
            "delete",
            "purge",
            "restore",
            "reset-redemption",
            "gdpr-erase",
        ] {
            let mut v = good();
            v["kind"] = json!(kind);
            let m = ActionMessage::from_value(&v, TENANT).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(m.kind.as_str(), kind);
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_a_stable_code() {
        let cases: Vec<(Value, &str)> = vec![
            (json!("just text"), "malformed-message"),
            (json!({"kind":"notify"}), "malformed-message"),
            (
                {
                    let mut v = good();
                    v["v"] = json!(2);
                    v
                },
                "unsupported-version",
            ),
            (
                {
                    let mut v = good();
                    v["kind"] = json!("explode");
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["user"] = json!("jane@contoso.com");
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["kind"] = json!("jane@contoso.com");
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["case"] = json!(["jane@contoso.com"]);
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["email"] = json!("jane@contoso.com");
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["tenant"] = json!("other.onmicrosoft.com");
                    v
                },
                "wrong-tenant",
            ),
            (
                {
                    let mut v = good();
                    v["case"] = json!("a case with spaces");
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["notBefore"] = json!("tomorrow");
                    v
                },
                "malformed-message",
            ),
            (
                {
                    let mut v = good();
                    v["run"] = json!("yesterday");
                    v
                },
                "malformed-message",
            ),
        ];
        for (value, code) in cases {
            let err = ActionMessage::from_value(&value, TENANT).expect_err("refused");
            assert_eq!(err.code(), code, "{value}");
            assert!(!err.to_string().contains("jane@contoso.com"), "{err}");
        }
    }
}
