//! The `dormant-scan` queue message: one step of one run.
//!
//! FACTS: the top-level properties of a JSON queue message are copied into
//! the host's metadata and logs, so a message holds ids only: the tenant,
//! the run id, and partition keys (hex-encoded UPN prefixes of at most three
//! characters, which name no one).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::partition::Partition;
use crate::ids::RunId;

pub const VERSION: u32 = 1;

/// Partitions handed to one message: a few, so several instances share a
/// big tenant and one invocation stays well inside its time budget.
pub const PARTITIONS_PER_MESSAGE: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanStep {
    /// Gather what every partition shares, then fan the roots out.
    Start,
    /// Find every partition without a result and fan those out (a resumed
    /// run); finalise when there is none.
    Sweep,
    /// Scan these partitions (and fan out the children of any that split).
    Partitions,
    /// Finalise once coverage is complete (a retry after another
    /// invocation's finalise claim lapses).
    Finalize,
}

impl ScanStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Sweep => "sweep",
            Self::Partitions => "partitions",
            Self::Finalize => "finalize",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanMessage {
    pub v: u32,
    pub tenant: String,
    pub run: RunId,
    pub step: ScanStep,
    /// Partition keys ([`Partition::key`]); only for `partitions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
}

/// Why a message was refused (permanent: recorded, never retried).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("not a v1 scan message: {0}")]
    Malformed(String),
    #[error("the message is for another tenant")]
    WrongTenant,
    #[error("the message names a partition key the plan cannot produce")]
    BadPartition,
}

impl MessageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed-message",
            Self::WrongTenant => "wrong-tenant",
            Self::BadPartition => "bad-partition",
        }
    }
}

impl ScanMessage {
    pub fn new(tenant: &str, run: &RunId, step: ScanStep) -> Self {
        Self {
            v: VERSION,
            tenant: tenant.to_owned(),
            run: run.clone(),
            step,
            partitions: Vec::new(),
        }
    }

    pub fn partitions(tenant: &str, run: &RunId, partitions: &[Partition]) -> Self {
        Self {
            partitions: partitions.iter().map(Partition::key).collect(),
            ..Self::new(tenant, run, ScanStep::Partitions)
        }
    }

    /// Validates a decoded message against this deployment's tenant. The
    /// reason never echoes the message (it could hold anything).
    pub fn from_value(value: &Value, tenant: &str) -> Result<Self, MessageError> {
        let message: ScanMessage = serde_json::from_value(value.clone()).map_err(|e| {
            MessageError::Malformed(
                e.to_string()
                    .split(" at line")
                    .next()
                    .unwrap_or("invalid")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(120)
                    .collect(),
            )
        })?;
        if message.v != VERSION {
            return Err(MessageError::Malformed(format!(
                "version {} is not supported",
                message.v
            )));
        }
        if !message.tenant.eq_ignore_ascii_case(tenant) {
            return Err(MessageError::WrongTenant);
        }
        if (message.step == ScanStep::Partitions) == message.partitions.is_empty() {
            return Err(MessageError::Malformed(
                "partition keys come with, and only with, the `partitions` step".into(),
            ));
        }
        if message
            .partitions
            .iter()
            .any(|k| Partition::from_key(k).is_none())
        {
            return Err(MessageError::BadPartition);
        }
        Ok(message)
    }

    /// The partitions named (validated by [`from_value`](Self::from_value)).
    pub fn partition_list(&self) -> Vec<Partition> {
        self.partitions
            .iter()
            .filter_map(|k| Partition::from_key(k))
            .collect()
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a scan message always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "8f0c2d2e-1111-4c4c-9d9d-123456789abc";

    fn run() -> RunId {
        RunId::parse("20261122T020000Z-a1b2c3").expect("run id")
    }

    #[test]
    fn round_trips_and_holds_only_ids() {
        let parts = Partition::roots();
        let m = ScanMessage::partitions(TENANT, &run(), &parts[..3]);
        let text = m.to_text();
        let back = ScanMessage::from_value(&serde_json::from_str(&text).expect("json"), TENANT)
            .expect("valid");
        assert_eq!(back, m);
        assert_eq!(back.partition_list(), parts[..3].to_vec());
        let v: Value = serde_json::from_str(&text).expect("json");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["partitions", "run", "step", "tenant", "v"]);
        // Keys are hex, never the prefix itself.
        assert!(
            v["partitions"][0]
                .as_str()
                .expect("key")
                .chars()
                .all(|c| c.is_ascii_hexdigit())
        );
    }

    #[test]
    fn refusals() {
        let ok = json!({"v":1,"tenant":TENANT,"run":"20261122T020000Z-a1b2c3","step":"start"});
        assert!(ScanMessage::from_value(&ok, TENANT).is_ok());
        let cases = [
            (
                json!({"v":2,"tenant":TENANT,"run":"20261122T020000Z-a1b2c3","step":"start"}),
                "malformed-message",
            ),
            (
                json!({"v":1,"tenant":"other","run":"20261122T020000Z-a1b2c3","step":"start"}),
                "wrong-tenant",
            ),
            (
                json!({"v":1,"tenant":TENANT,"run":"jane@contoso.com","step":"start"}),
                "malformed-message",
            ),
            (
                json!({"v":1,"tenant":TENANT,"run":"20261122T020000Z-a1b2c3","step":"partitions"}),
                "malformed-message",
            ),
            (
                json!({"v":1,"tenant":TENANT,"run":"20261122T020000Z-a1b2c3","step":"start","partitions":["61"]}),
                "malformed-message",
            ),
            (
                json!({"v":1,"tenant":TENANT,"run":"20261122T020000Z-a1b2c3","step":"partitions","partitions":["2e"]}),
                "bad-partition",
            ),
            (
                json!({"v":1,"tenant":TENANT,"run":"20261122T020000Z-a1b2c3","step":"start","upn":"jane@contoso.com"}),
                "malformed-message",
            ),
        ];
        for (value, code) in cases {
            let err = ScanMessage::from_value(&value, TENANT).expect_err("refused");
            assert_eq!(err.code(), code, "{value}");
            assert!(!err.to_string().contains("jane"), "{err}");
        }
    }
}
