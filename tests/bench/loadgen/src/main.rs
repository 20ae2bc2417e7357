//! `loadgen`: the load generator and correctness checker for the tickerfeed server, over
//! WebSocket (protocol v1, or Socket.IO) or Server-Sent Events (`--protocol sse`).
//!
//! It opens many client connections from one process (one task per connection on a tokio
//! runtime with `--threads` workers, 1 by default because the benchmark pins it to one core),
//! subscribes each to K random symbols, and measures what the server delivers: quotes/s,
//! frames/s, bytes/s, end-to-end latency of live quotes (receive time − the quote's `pt`), the
//! time a fresh connection waits for its snapshot, server RSS, and its own CPU use — so a run
//! that was limited by the client rather than the server can be recognised. It also checks
//! the protocol promise that `seq` strictly increases per symbol on every connection, and can
//! add "stalled" clients that never read, to exercise the server's slow-consumer handling.
//!
//! Modules:
//! - [`cli`]: command line.
//! - [`run`]: the phases of a run (ramp-up, warm-up, measurement, shutdown) and the verdict.
//! - [`background`]: snapshot probes and churn connections beside the clients.
//! - [`client`]: reading clients, stalled clients and snapshot probes.
//! - [`frame`]: classification and accounting of server frames; the seq-order check.
//! - [`scan`]: the fast hand-written scanner for `quotes` frames (serde is the fallback).
//! - [`stats`]: the traffic counters (per worker), the connection counts (one type from the
//!   connection tasks through the `--processes` merge to the report), latency histograms.
//! - [`symbols`]: seeded choice of each client's symbols (uniform or Zipf).
//! - [`net`]: target resolution, the client connection over either transport ([`net::Conn`]),
//!   the HTTP requests for `/api/symbols` and the feed control.
//! - [`sys`]: fd limit, getrusage, /proc RSS.
//! - [`report`]: the report (table and JSON).
//! - [`timing`]: throttled latency, staleness and unexplained gaps; the observer's record.
//! - [`eio`]: Engine.IO v4 / Socket.IO framing for `--protocol socketio`.
//! - [`sse`]: the request, chunked transfer decoding and event-stream parsing for
//!   `--protocol sse`: incremental, bounded, a malformed stream an error and never a panic.
//! - [`multi`]: `--processes N`: child processes, the common start, merging their results.
//! - [`soak`]: `loadgen soak …`, a mode of its own: thousands of clients with churn and slow
//!   readers for a long time; the server's RSS, descriptors and client maps judged flat and
//!   back to baseline (`tests/soak/run.sh`).
//!
//! With a throttle (`--throttle-ms` > 0, or `--observer`) one extra unthrottled observer
//! connection records what is published, so each delivery can be judged: throttled latency
//! (receive − max(pt, previous delivery + throttle)), staleness (receive − pt of the oldest
//! quote the client did not yet have) and gaps the throttle cannot explain. With
//! `--processes N` only the parent has the observer, so staleness and the gap check cover the
//! parent's share of the clients; throttled latency covers all of them.
//!
//! Exit status: 0 OK, 1 run completed with failures (see `FAILED:` lines), 2 could not run.

mod background;
mod cli;
mod client;
mod eio;
mod frame;
mod multi;
mod net;
mod report;
mod run;
mod scan;
mod soak;
mod sse;
mod stats;
mod symbols;
mod sys;
mod timing;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::Args;
use crate::report::Report;

fn main() -> ExitCode {
    // `loadgen soak …` is a mode with options of its own.
    if std::env::args().nth(1).as_deref() == Some("soak") {
        return match soak::main(std::env::args().skip(1)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("loadgen soak: error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let args = Args::parse();
    match main_inner(&args) {
        Ok(report) => {
            if report.ok {
                ExitCode::SUCCESS
            } else if args.allow_errors {
                eprintln!("loadgen: failures ignored (--allow-errors)");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main_inner(cli: &Args) -> Result<Report> {
    // A --processes child: its arguments come from the parent; it reports in a file only.
    let child;
    let args = if cli.child_index.is_some() {
        child = multi::child_args(cli)?;
        &child
    } else {
        cli
    };
    args.validate()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).thread_name("loadgen-worker").enable_all().build().context("building the tokio runtime")?;
    let report = runtime.block_on(run::run(args))?;
    // Connection tasks that missed the close deadline were aborted; don't wait on anything.
    runtime.shutdown_background();
    if args.child_index.is_none() {
        emit(args, &report)?;
    }
    Ok(report)
}

/// Prints the table (unless the JSON goes to stdout) and writes the JSON file.
fn emit(args: &Args, report: &Report) -> Result<()> {
    let json_to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let mut out = std::io::stdout().lock();
    if json_to_stdout {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.table())?;
    }
    out.flush()?;
    if let Some(path) = args.json.as_deref().filter(|_| !json_to_stdout) {
        let mut text = serde_json::to_string_pretty(report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
