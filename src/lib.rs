//! tickerfeed: a real-time market data feed server. Quotes flow one way: **feeds → bus →
//! sessions**; the code map, the dependency rule and each module's invariant are in
//! `docs/ARCHITECTURE.md`.
//!
//! The public API is what the binary and the integration tests use, nothing else:
//!
//! - [`config`]: the command line ([`config::Cli`]) and [`config::Config`], with the settings
//!   types of each subsystem it nests.
//! - [`server`]: [`server::start`] a server from a `Config` and get a [`server::RunningServer`]
//!   (its address, its parts for inspection, a graceful shutdown), or
//!   [`server::run_until_signal`].
//! - [`logging`]: the log subscriber the binary installs.
//! - [`tickgen`], [`healthcheck`]: the `gen` and `healthcheck` subcommands; [`access`]'s
//!   [`access::sign_with_secret_file`]: the `token` subcommand (the rest of `access` is
//!   internal).
//! - `fuzzing` (with the `fuzzing` feature only): the fuzz targets' entry points.
//!
//! Everything else is `pub(crate)`: the compiler, not a convention, keeps it internal.

#![warn(unreachable_pub, missing_docs)]

pub mod access;
pub mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod healthcheck;
pub mod logging;
pub mod server;
pub mod tickgen;

mod api_error;
mod bus;
mod fault;
mod feed;
mod history;
mod http;
mod metrics;
mod quote;
mod session;
mod settings;
// Wired by the Socket.IO transport (issue 13); nothing calls the codec until then.
mod socketio;
mod sse;
#[cfg(test)]
mod test_support;
mod web;
mod ws;
