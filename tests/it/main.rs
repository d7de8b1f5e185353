//! Integration tests: one binary, one shared harness.

mod audit_wiring;
mod azurite;
mod config_files;
mod functions_folders;
mod gdpr;
mod graph;
mod harness;
mod host_fixtures;
mod host_protocol;
mod packaging;
mod report_html;
mod serve_process;
mod store;
