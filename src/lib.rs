//! tickerfeed: a real-time market data feed server.
//!
//! Quotes flow one way: **feeds → bus → sessions**.
//!
//! - [`quote`]: the quote model, its JSON form (rendered once, shared by all recipients) and
//!   price rounding.
//! - [`feed`]: the adapters that produce quotes — [`feed::sim`] (correlated geometric Brownian
//!   motion over [`feed::universe`]) and [`feed::replay`] (historical CSV files) — plus their
//!   runtime controls (pause, resume, seek, speed). Feeds know nothing of sessions.
//! - [`bus`]: one topic per symbol holding the latest quote and seq; publishing is O(1)
//!   whatever the number of listeners, and sessions are woken rather than sent queues.
//! - [`ws`]: the WebSocket protocol v1 — message types ([`ws::protocol`]), per-symbol throttling
//!   and conflation ([`ws::throttle`]), socket backpressure ([`ws::socket`]) and the session
//!   loop ([`ws::session`]).
//! - [`history`]: bounded per-symbol bars for chart backfill.
//! - [`http`]: the REST API (symbols, quotes, history, feeds and their control, health).
//! - [`api_error`]: the JSON error answer every HTTP endpoint gives, one code per status.
//! - [`web`]: the browser dashboard's files, embedded in the binary at build time.
//! - [`config`]: command line, environment and TOML configuration.
//! - [`server`]: wires everything together, runs the HTTP server, handles shutdown.
//! - [`metrics`]: the Prometheus metrics.
//! - [`tickgen`]: `tickerfeed gen`, reproducible tick files for benchmarks.
//! - [`healthcheck`]: `tickerfeed healthcheck`, for container health checks.
//! - [`logging`]: the log setup, which reports a client's malformed request at DEBUG where
//!   actix-http says ERROR.

pub mod api_error;
pub mod bus;
pub mod config;
pub mod feed;
pub mod healthcheck;
pub mod history;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod quote;
pub mod server;
pub mod settings;
pub mod tickgen;
pub mod web;
pub mod ws;
