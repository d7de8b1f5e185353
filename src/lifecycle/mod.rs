//! Cases and steps: plan, re-verify, act, record.

pub mod message;

pub use message::{ActionKind, ActionMessage, MessageError};
