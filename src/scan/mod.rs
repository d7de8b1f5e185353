//! The nightly inactivity scan.

pub mod partition;
pub mod usage;

pub use partition::Partition;
pub use usage::UsageIndex;
