//! One error type for both backends, shaped by what callers must decide:
//! is the thing missing, did somebody else win a race, should I retry, or is
//! this never going to work.

/// Why a write lost against the current state of the blob or queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// `If-Match` named an ETag that is no longer current (HTTP 412).
    PreconditionFailed,
    /// A create-only write found the blob, container or queue already there (HTTP 409).
    AlreadyExists,
    /// An append blob is full: Azure caps an append blob at 50,000 blocks
    /// (`BlockCountExceedsLimit`); the local store has an optional size cap
    /// that behaves the same so the audit log's rollover is tested on both.
    AppendBlobFull,
    /// Any other 409 the service named with this error code.
    Other(String),
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConflictKind::PreconditionFailed => f.write_str("the ETag is no longer current"),
            ConflictKind::AlreadyExists => f.write_str("it already exists"),
            ConflictKind::AppendBlobFull => f.write_str("the append blob is full"),
            ConflictKind::Other(code) => write!(f, "the service answered {code}"),
        }
    }
}

/// A storage failure. `Display` never contains account keys, tokens,
/// signatures or blob contents: only names, status codes and service error codes.
/// `Clone`, so one failed group-committed append can answer every caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The blob, container, queue or message does not exist (or, for a queue
    /// message, the pop receipt is no longer ours).
    #[error("{what} not found")]
    NotFound { what: String },

    /// The write lost a race or a precondition; nothing was overwritten.
    #[error("conflict on {what}: {kind}")]
    Conflict { what: String, kind: ConflictKind },

    /// A failure that may pass: 5xx, 408, 429, timeouts, connection resets.
    /// The Azure SDK has already retried these with back-off; callers may
    /// retry the whole operation later (a queue message is retried by the host).
    #[error("transient storage failure on {what}: {detail}")]
    Transient { what: String, detail: String },

    /// A failure that retrying will not fix: authorization refused, a bad
    /// request, an invalid name, a local I/O error such as a full disk.
    #[error("storage request failed on {what}: {detail}")]
    Permanent { what: String, detail: String },

    /// The storage configuration is wrong; the message names the setting.
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// Whether the error says the thing is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the error says another writer won (ETag or create-only precondition).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }

    pub(crate) fn conflict(what: impl Into<String>, kind: ConflictKind) -> Self {
        StoreError::Conflict {
            what: what.into(),
            kind,
        }
    }

    pub(crate) fn permanent(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StoreError::Permanent {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Maps a local I/O error. Interrupted/would-block/timed-out are worth a
    /// retry; everything else (permissions, full disk) needs a person.
    pub(crate) fn io(what: impl Into<String>, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let what = what.into();
        match err.kind() {
            K::NotFound => StoreError::NotFound { what },
            K::AlreadyExists => StoreError::Conflict {
                what,
                kind: ConflictKind::AlreadyExists,
            },
            K::Interrupted | K::WouldBlock | K::TimedOut => StoreError::Transient {
                what,
                detail: err.to_string(),
            },
            _ => StoreError::Permanent {
                what,
                detail: err.to_string(),
            },
        }
    }
}

/// `Result` with [`StoreError`] as the default error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_is_transient() {
        assert!(
            StoreError::Transient {
                what: "x".into(),
                detail: "503".into()
            }
            .is_transient()
        );
        assert!(!StoreError::not_found("x").is_transient());
        assert!(!StoreError::conflict("x", ConflictKind::PreconditionFailed).is_transient());
        assert!(!StoreError::permanent("x", "403").is_transient());
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(StoreError::io("blob a", &nf).is_not_found());
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(
            StoreError::io("blob a", &denied),
            StoreError::Permanent { .. }
        ));
    }
}
