//! Integration tests: one binary, one shared harness.
mod graph;
