//! The custom-handler wire format: what the Functions host POSTs to
//! `/{FunctionName}` for non-HTTP triggers, and what it expects back.
//!
//! The host is loose with types (a queue message arrives as a JSON *string*,
//! sometimes encoded twice, sometimes base64; `DequeueCount` is a string;
//! `Id` is a double-quoted string), so the decoding lives here, in the types,
//! and no handler ever touches raw JSON.

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Nesting we unwrap before calling a message garbage. Real messages are
/// encoded at most twice (once by the producer, once by the host).
const MAX_ENCODING_DEPTH: usize = 4;

/// `POST /{FunctionName}` body for non-HTTP triggers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// The answer the host expects: `{"Outputs", "Logs", "ReturnValue"}`.
///
/// `Logs` are logged by the host at Information level, and only when the
/// answer is 2xx. A string output that happens to be valid base64 is decoded
/// to bytes by the host, so outputs are always JSON objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs", default)]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs", default)]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue", default)]
    pub return_value: Value,
}

/// Why an envelope could not be turned into a typed trigger.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("the invocation has no binding named `{0}` in Data")]
    MissingBinding(String),
    #[error("binding `{binding}` is not a valid {expected}: {reason}")]
    Invalid {
        binding: String,
        expected: &'static str,
        reason: String,
    },
}

/// A date as the host writes it: RFC 3339 with an offset
/// (`2026-11-22T02:00:00.0081385+00:00`), or without one
/// (`0001-01-01T00:00:00`, meaning UTC). Serialised back as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostTime(pub DateTime<Utc>);

impl HostTime {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(Self(t.with_timezone(&Utc)));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|t| Self(t.and_utc()))
    }
}

impl std::fmt::Display for HostTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl Serialize for HostTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostTime::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a date: {text:?}")))
    }
}

/// Timer trigger payload (`Data.<binding>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerInfo {
    #[serde(rename = "Schedule", default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<TimerSchedule>,
    /// Null when the host keeps no schedule monitor (`useMonitor: false`,
    /// or the first run).
    #[serde(rename = "ScheduleStatus", default)]
    pub schedule_status: Option<ScheduleStatus>,
    #[serde(rename = "IsPastDue", default)]
    pub is_past_due: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerSchedule {
    #[serde(rename = "AdjustForDST", default)]
    pub adjust_for_dst: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    #[serde(rename = "Last", default, skip_serializing_if = "Option::is_none")]
    pub last: Option<HostTime>,
    #[serde(rename = "Next", default, skip_serializing_if = "Option::is_none")]
    pub next: Option<HostTime>,
    #[serde(
        rename = "LastUpdated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_updated: Option<HostTime>,
}

impl TimerInfo {
    pub fn from_request(req: &InvocationRequest, binding: &str) -> Result<Self, EnvelopeError> {
        let value = req
            .data
            .get(binding)
            .ok_or_else(|| EnvelopeError::MissingBinding(binding.to_owned()))?;
        // Some host versions hand the timer object over as a JSON string too.
        let value = unwrap_encoded(value.clone()).map_err(|reason| EnvelopeError::Invalid {
            binding: binding.to_owned(),
            expected: "timer payload",
            reason,
        })?;
        serde_json::from_value(value).map_err(|e| EnvelopeError::Invalid {
            binding: binding.to_owned(),
            expected: "timer payload",
            reason: e.to_string(),
        })
    }
}

/// A queue-triggered invocation, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueTrigger {
    /// The message body after every layer of string / base64 encoding is
    /// peeled off. Not yet validated against any schema.
    pub message: Value,
    pub meta: QueueMetadata,
}

/// `Metadata` of a queue invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMetadata {
    pub id: Option<String>,
    pub pop_receipt: Option<String>,
    /// 1 on first delivery. The host moves the message to `<queue>-poison`
    /// after `maxDequeueCount` failed deliveries.
    pub dequeue_count: u32,
    pub insertion_time: Option<HostTime>,
    pub next_visible_time: Option<HostTime>,
    pub expiration_time: Option<HostTime>,
}

impl QueueMetadata {
    /// Reads the host's metadata, tolerating every shape it has used:
    /// `DequeueCount` as a number or a string, `Id` with or without extra
    /// JSON quoting. Never fails: unknown shapes read as absent.
    pub fn from_map(meta: &Map<String, Value>) -> Self {
        Self {
            id: meta_string(meta, "Id"),
            pop_receipt: meta_string(meta, "PopReceipt"),
            dequeue_count: meta_u32(meta, "DequeueCount").unwrap_or(1),
            insertion_time: meta_time(meta, "InsertionTime"),
            next_visible_time: meta_time(meta, "NextVisibleTime"),
            expiration_time: meta_time(meta, "ExpirationTime"),
        }
    }

    /// The shape the host sends: `DequeueCount` as a string, `Id` and
    /// `PopReceipt` double-quoted.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut metadata = Map::new();
        let quoted = |s: &str| Value::String(Value::String(s.to_owned()).to_string());
        if let Some(id) = &self.id {
            metadata.insert("Id".into(), quoted(id));
        }
        if let Some(pr) = &self.pop_receipt {
            metadata.insert("PopReceipt".into(), quoted(pr));
        }
        metadata.insert(
            "DequeueCount".into(),
            Value::String(self.dequeue_count.to_string()),
        );
        for (key, time) in [
            ("InsertionTime", self.insertion_time),
            ("NextVisibleTime", self.next_visible_time),
            ("ExpirationTime", self.expiration_time),
        ] {
            if let Some(t) = time {
                metadata.insert(key.into(), Value::String(t.to_string()));
            }
        }
        metadata
    }
}

impl QueueTrigger {
    /// Decodes `Data.<binding>` and the queue metadata.
    ///
    /// A message that cannot be decoded is returned as `Err` with the reason;
    /// the caller records it and answers 200 (a permanent failure is never
    /// retried forever).
    pub fn from_request(req: &InvocationRequest, binding: &str) -> Result<Self, EnvelopeError> {
        let value = req
            .data
            .get(binding)
            .ok_or_else(|| EnvelopeError::MissingBinding(binding.to_owned()))?;
        let message = unwrap_encoded(value.clone()).map_err(|reason| EnvelopeError::Invalid {
            binding: binding.to_owned(),
            expected: "queue message",
            reason,
        })?;
        Ok(Self {
            message,
            meta: QueueMetadata::from_map(&req.metadata),
        })
    }

    /// The request the host would send for this message (the message
    /// encoded as a JSON string). Used by the tests that play the host and by
    /// `dormant worker`, which feeds messages it received itself through the
    /// same code path.
    pub fn to_request(&self, binding: &str) -> InvocationRequest {
        let mut data = Map::new();
        data.insert(binding.to_owned(), Value::String(self.message.to_string()));
        InvocationRequest {
            data,
            metadata: self.meta.to_map(),
        }
    }
}

/// Peels string and base64 layers until a non-string JSON value remains.
///
/// The host passes a JSON message as a string, sometimes a string holding a
/// string (`"\"{\\\"v\\\":1}\""`), and base64 text when the queue binding's
/// `messageEncoding` is base64 (the default).
pub fn unwrap_encoded(mut value: Value) -> Result<Value, String> {
    for _ in 0..=MAX_ENCODING_DEPTH {
        let text = match value {
            Value::String(text) => text,
            other => return Ok(other),
        };
        if let Ok(inner) = serde_json::from_str::<Value>(&text) {
            value = inner;
            continue;
        }
        match decode_base64_text(&text) {
            Some(decoded) => value = Value::String(decoded),
            None => return Err(describe_garbage(&text)),
        }
    }
    Err(format!(
        "still a string after {MAX_ENCODING_DEPTH} layers of encoding"
    ))
}

fn decode_base64_text(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Says what was wrong without echoing the message: queue messages are
/// supposed to hold only ids, but a malformed one may hold anything.
fn describe_garbage(text: &str) -> String {
    format!(
        "neither JSON nor base64-encoded JSON ({} bytes)",
        text.len()
    )
}

/// A metadata string, with the extra JSON quoting the host adds removed.
fn meta_string(meta: &Map<String, Value>, key: &str) -> Option<String> {
    match meta.get(key)? {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => Some(inner),
            _ => Some(s.clone()),
        },
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn meta_u32(meta: &Map<String, Value>, key: &str) -> Option<u32> {
    match meta.get(key)? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(_) => meta_string(meta, key)?.trim().parse().ok(),
        _ => None,
    }
}

fn meta_time(meta: &Map<String, Value>, key: &str) -> Option<HostTime> {
    HostTime::parse(&meta_string(meta, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue_req(message: Value) -> InvocationRequest {
        let mut data = Map::new();
        data.insert("message".into(), message);
        InvocationRequest {
            data,
            metadata: Map::new(),
        }
    }

    #[test]
    fn message_encoded_once_twice_base64_and_raw_all_decode_to_the_object() {
        let want = json!({"v": 1, "kind": "notify"});
        let once = Value::String(want.to_string());
        let twice = Value::String(once.to_string());
        let b64 = Value::String(
            base64::engine::general_purpose::STANDARD.encode(want.to_string().as_bytes()),
        );
        let b64_of_quoted = Value::String(
            base64::engine::general_purpose::STANDARD.encode(once.to_string().as_bytes()),
        );
        for input in [want.clone(), once, twice, b64, b64_of_quoted] {
            let q = QueueTrigger::from_request(&queue_req(input.clone()), "message")
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.message, want, "input {input}");
        }
    }

    #[test]
    fn garbage_is_an_error_that_does_not_echo_the_body() {
        let secret = "not json, not base64: alice@contoso.com";
        let err = QueueTrigger::from_request(&queue_req(Value::String(secret.into())), "message")
            .expect_err("garbage must not decode");
        let text = err.to_string();
        assert!(!text.contains("alice"), "{text}");
        assert!(text.contains("queue message"), "{text}");
    }

    #[test]
    fn endless_string_nesting_is_bounded() {
        let mut v = Value::String("{}".into());
        for _ in 0..10 {
            v = Value::String(v.to_string());
        }
        assert!(unwrap_encoded(v).is_err());
    }

    #[test]
    fn missing_binding_is_named() {
        let err = QueueTrigger::from_request(&queue_req(json!({})), "other").unwrap_err();
        assert_eq!(err, EnvelopeError::MissingBinding("other".into()));
    }

    #[test]
    fn metadata_in_every_shape_the_host_uses() {
        let mut req = queue_req(json!("{}"));
        req.metadata = json!({
            "DequeueCount": "3",
            "Id": "\"9c2a54f7-6d0e-4d24-8f0b-2f3ad1a7c001\"",
            "PopReceipt": "\"AgAAAAMAAAAAAAAA\"",
            "InsertionTime": "2026-11-22T02:00:01+00:00",
            "NextVisibleTime": "2026-11-22T02:10:01.1234567+00:00",
            "ExpirationTime": "2026-11-29T02:00:01",
        })
        .as_object()
        .cloned()
        .expect("object literal");
        let q = QueueTrigger::from_request(&req, "message")
            .expect("decodes")
            .meta;
        assert_eq!(q.dequeue_count, 3);
        assert_eq!(
            q.id.as_deref(),
            Some("9c2a54f7-6d0e-4d24-8f0b-2f3ad1a7c001")
        );
        assert_eq!(q.pop_receipt.as_deref(), Some("AgAAAAMAAAAAAAAA"));
        assert!(q.insertion_time.is_some() && q.expiration_time.is_some());
        assert!(q.next_visible_time.is_some());

        req.metadata.insert("DequeueCount".into(), json!(2));
        req.metadata.insert("Id".into(), json!("plain-id"));
        let q = QueueTrigger::from_request(&req, "message")
            .expect("decodes")
            .meta;
        assert_eq!(q.dequeue_count, 2);
        assert_eq!(q.id.as_deref(), Some("plain-id"));
    }

    #[test]
    fn host_times_with_and_without_offset() {
        assert!(HostTime::parse("0001-01-01T00:00:00").is_some());
        assert!(HostTime::parse("2026-11-22T02:00:00.0081385+00:00").is_some());
        assert!(HostTime::parse("2026-11-22T02:00:00Z").is_some());
        assert!(HostTime::parse("yesterday").is_none());
    }
}
