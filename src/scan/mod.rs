//! The nightly inactivity scan.

pub mod context;
pub mod message;
pub mod partition;
pub mod run;
pub mod worker;

pub use partition::Partition;
