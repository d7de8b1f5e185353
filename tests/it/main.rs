//! Integration tests: one binary, one shared harness.

mod sim_bench;
mod sim_conformance;
mod sim_graph;
mod sim_harness;
mod sim_platform;
mod sim_sdk;
