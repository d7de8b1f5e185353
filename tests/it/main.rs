//! Integration tests: one binary, one shared harness.

mod azurite;
mod store;
