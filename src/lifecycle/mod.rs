//! Cases and steps: plan, re-verify, act, record.

pub mod message;

pub use message::{ACTIONS_QUEUE, ActionKind, ActionMessage, ERASURES_QUEUE, MessageError};
