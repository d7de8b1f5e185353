//! dormant: inactive-account governance for Microsoft Entra ID and Azure AD B2C.
//!
//! Data flows one way: trigger (`host`) → function (`functions`) → domain
//! (`policy`, `lifecycle`, `report`) → I/O (`graph`, `store`). `policy` does no
//! I/O. Production code never imports `sim`; only the CLI's `demo`/`sim`
//! commands and the tests do.

pub mod clock;
pub mod config;
pub mod functions;
pub mod gdpr;
pub mod graph;
pub mod host;
pub mod ids;
pub mod lifecycle;
pub mod policy;
pub mod report;
pub mod scan;
pub mod sim;
pub mod store;
pub mod telemetry;
