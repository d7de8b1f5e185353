//! The functions this handler serves, one file per function once they
//! exist. Each is thin: it turns a trigger into a call on the domain.
//!
//! `catalog()` is the single list the router serves; a test checks it
//! against the `functions/*/function.json` folders the host reads.

use std::sync::Arc;

use crate::config::Config;
use crate::host::Functions;

/// What every function needs, built once per process.
pub struct AppContext {
    pub config: Config,
}

/// Every function dormant serves, registered on the router.
pub fn catalog(_ctx: Arc<AppContext>) -> Functions {
    Functions::new()
}
