//! Integration tests: one binary, one shared harness.

mod audit_wiring;
mod azurite;
mod config_files;
mod functions_folders;
mod gdpr;
mod graph;
mod graph_sim;
mod harness;
mod host_fixtures;
mod host_protocol;
mod packaging;
mod report_html;
mod scan_e2e;
mod scan_peer;
mod scan_resume;
mod serve_process;
mod sim_bench;
mod sim_conformance;
mod sim_graph;
mod sim_harness;
mod sim_platform;
mod sim_sdk;
mod store;
