//! The HTTP server's settings: where it listens, with how many workers, and how long it takes
//! to stop. Declared here once each (see [`crate::settings`]); `server` builds the listener
//! from them.

use std::net::SocketAddr;

use crate::settings::{Invalid, settings};

settings! {
    /// The HTTP listener (REST, dashboard and WebSocket upgrades share it).
    pub struct Listen, args ListenArgs {
        /// Address to listen on.
        bind: String = "127.0.0.1:8080".to_string(), env "TICKERFEED_BIND";
        /// HTTP worker threads.
        workers: usize = available_cpus(), env "TICKERFEED_WORKERS", range(1, 1024), shown "number of CPUs";
        /// Seconds to wait for connections to close at shutdown (SIGINT, SIGTERM).
        shutdown_timeout: f64 = 5.0, env "TICKERFEED_SHUTDOWN_TIMEOUT", range(0, 3600);
        /// Test only, never in production: also serve `GET /test/echo`, a WebSocket echo with
        /// /ws's decoder and framing, for Autobahn|Testsuite (docs/CONFORMANCE.md).
        test_echo: bool = false, env "TICKERFEED_TEST_ECHO";
    }
    check = check_bind;
}

fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn check_bind(listen: &Listen) -> Result<(), Invalid> {
    parse_bind(&listen.bind).map(|_| ())
}

fn parse_bind(text: &str) -> Result<SocketAddr, Invalid> {
    text.parse().map_err(|e| Invalid::new("bind", format!("'{text}' is not an address like 127.0.0.1:8080 ({e})")))
}

impl Listen {
    /// The address to bind (checked when the settings were resolved).
    pub fn addr(&self) -> SocketAddr {
        parse_bind(&self.bind).expect("bind was checked when the settings were resolved")
    }
}
