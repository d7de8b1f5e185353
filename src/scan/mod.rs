//! The nightly inactivity scan.

pub mod partition;

pub use partition::Partition;
