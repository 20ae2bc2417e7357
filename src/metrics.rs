//! The Prometheus registry of this server.
//!
//! The server owns its own [`prometheus::Registry`] (no global default registry, so tests that
//! start several servers in one process do not share counters). The metrics themselves are
//! added by the observability issue; this module is where they will live.

use prometheus::Registry;

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("tickerfeed".into()), None).expect("the prefix is a valid metric name");
        Metrics { registry }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
