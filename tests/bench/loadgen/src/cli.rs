//! Command line of the load generator.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;

/// Load generator for the tickerfeed server: protocol v1 over WebSocket (or Server-Sent Events,
/// or Socket.IO).
///
/// Opens `--clients` reading connections (plus `--stall` connections that subscribe and then
/// never read), subscribes each to `--symbols` random symbols, waits `--warmup` seconds and then
/// measures for `--duration` seconds: delivered quotes/s, frames/s, bytes/s, end-to-end latency
/// (receive time − the quote's `pt` publish time, same host clock), per-symbol seq ordering,
/// snapshot latency of fresh connections (probes), server RSS and the load generator's own CPU.
///
/// Exit status: 0 = clean run; 1 = the run finished but a connect failed, a client was
/// disconnected, or quotes arrived out of order (see "FAILED:" lines; --allow-errors turns this
/// into 0); 2 = could not run at all (bad arguments, unreachable server, fd limit too low).
#[derive(Parser, Debug, Clone, serde::Serialize, serde::Deserialize)]
#[command(name = "loadgen", version, about, long_about, max_term_width = 100)]
pub struct Args {
    /// WebSocket endpoint of the server; the symbol list is fetched from GET /api/symbols on the
    /// same host and port (plain ws:// only, no TLS). With --protocol sse an http:// URL does as
    /// well, e.g. http://127.0.0.1:8080/sse.
    #[arg(long, env = "LOADGEN_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Number of well-behaved clients: they read and check every frame.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,

    /// Symbols per client (K), drawn without repetition from the universe. Ignored by
    /// --wildcard clients.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub symbols: usize,

    /// Clients subscribe to "*" (every symbol) instead of K symbols.
    #[arg(long)]
    pub wildcard: bool,

    /// `throttle_ms` sent in each subscribe (0 = every update), or in the query string with
    /// --protocol sse. Omitted when not given, so the server's default applies.
    #[arg(long, value_name = "MS")]
    pub throttle_ms: Option<u64>,

    /// Clients subscribe with `"align":true` (`align=1` with --protocol sse): aligned delivery,
    /// on a grid of the throttle anchored at the subscribe. Throttled latency is then measured
    /// from the grid tick each quote was due at (the client's grid: anchored when it sent its
    /// subscribe, so the figure includes the request's way to the server).
    #[arg(long)]
    pub align: bool,

    /// Clients subscribe with these channels (`"channels":["quotes","trades"]` in the subscribe;
    /// `channels=quotes,trades` in the query with --protocol sse), e.g. `quotes,trades`. Trades
    /// are counted (frames, trades, trades lost in `gap` messages) and checked in seq order per
    /// symbol, and reported beside the quotes. Default: no `channels` sent (the server's
    /// default, quotes only). Probes and churn connections subscribe alike; the observer does
    /// not (quotes only).
    #[arg(long, value_delimiter = ',', value_name = "CHANNEL,...")]
    pub channels: Option<Vec<String>>,

    /// Clients subscribe with `"snapshot":false` (probes always ask for a snapshot). Not with
    /// --protocol sse: an event stream always starts with the snapshot.
    #[arg(long)]
    pub no_snapshot: bool,

    /// Length of the measured period, in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,

    /// Seconds to wait after every client has subscribed before measuring; latency samples
    /// and the rates only cover the measured period.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub warmup: f64,

    /// New connections per second while ramping up (0 = as fast as possible).
    #[arg(long, default_value_t = 500.0, value_name = "PER_SEC")]
    pub connect_rate: f64,

    /// Per-connection limit, in seconds, for TCP connect + handshake + welcome + subscribed.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,

    /// Extra clients that connect, subscribe, read up to `subscribed` and then never read
    /// again (socket kept open until the end) — slow consumers the server must cope with.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stall: usize,

    /// Stalled clients subscribe to "*" instead of K symbols.
    #[arg(long)]
    pub stall_wildcard: bool,

    /// SO_RCVBUF of stalled clients, in KiB (the kernel doubles it and enforces a minimum).
    /// Small values make the server notice a stalled reader sooner; default: kernel autotuning,
    /// which lets several MiB pile up per stalled client first.
    #[arg(long, value_name = "KIB")]
    pub stall_rcvbuf_kib: Option<u32>,

    /// The server's process: its resident memory (VmRSS in /proc/PID/status) is sampled
    /// before the first connection, every second, and at the start and end of the measured
    /// period; its CPU time (/proc/PID/stat) over exactly the measured period gives the
    /// headline figure, delivered quotes per server CPU-second.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// During the measured period, also open RATE short-lived connections per second: each
    /// connects, subscribes like a client (K symbols, same throttle), waits for `subscribed`
    /// and the snapshot, then closes cleanly. Attempts, successes and failures (by reason) are
    /// reported; failed churn connects are a measurement, not a failure of the run.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub churn: f64,

    /// After the measured period (and the churn) ends, keep the clients connected for SECS more
    /// seconds and sample the server's RSS again (`rss_after_settle`): does memory come back
    /// once the churn stops?
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub settle: f64,

    /// The server starts with its feed paused: once every client is subscribed (in every
    /// --processes child too), POST `{"action":"resume"}` to PATH on the server's host and
    /// port, then warm up and measure. Clients then connect without competing with the feed, so
    /// a server that accepts slowly while it is busy still gets every client before the window.
    /// tickerfeed: /api/feeds/replay/control (the bench peers answer the same path).
    #[arg(long, value_name = "PATH")]
    pub resume_feed: Option<String>,

    /// The feed is expected to be paused: no live quote during the measured period is normal,
    /// so neither zero quotes nor clients without deliveries are warned about.
    #[arg(long)]
    pub idle: bool,

    /// Seed for the symbol choice; a given seed gives every client the same symbols each run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Choose symbols with Zipf popularity of exponent S (rank = position in the symbol list)
    /// instead of uniformly. S = 0 is uniform; S ≈ 1 is a typical "few hot symbols" mix.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,

    /// Use these symbols instead of fetching GET /api/symbols.
    #[arg(long, value_delimiter = ',', value_name = "SYM,SYM,...")]
    pub symbol_list: Option<Vec<String>>,

    /// Also write the report as JSON to FILE ("-" = stdout, replacing the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// During the measured period, open a fresh connection this often and time its
    /// welcome and first snapshot frame (0 = no probes).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub probe_interval_ms: u64,

    /// A probe slower than this (subscribe → first snapshot frame) counts as slow.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub probe_slow_ms: u64,

    /// Tokio worker threads. The benchmark pins the load generator to one core, hence 1.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// WebSocket read buffer per connection, in KiB. It is allocated eagerly, so it bounds
    /// memory per connection; larger means fewer read syscalls when a client falls behind.
    #[arg(long, default_value_t = 32, value_name = "KIB")]
    pub read_buffer_kib: usize,

    /// Exit 0 even if connects failed, clients were disconnected or seq order was violated.
    #[arg(long)]
    pub allow_errors: bool,

    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Wire protocol: tickerfeed v1 over WebSocket; Socket.IO (Engine.IO v4 over WebSocket at
    /// /socket.io/?EIO=4&transport=websocket on the host and port of --url); or v1 as
    /// Server-Sent Events: one HTTP/1.1 GET per client to /sse?symbols=…&throttle_ms=… on the
    /// host and port of --url (at --url's path if it ends in /sse), the subscription being the
    /// query string's (--symbols or --wildcard, --throttle-ms), each `quotes` event counted as a
    /// /ws frame, comments and `retry:` as other messages. An SSE client never writes: it is
    /// closed by dropping the connection.
    #[arg(long, value_enum, default_value_t = Protocol::V1)]
    pub protocol: Protocol,

    /// Open one extra unthrottled connection (throttle 0, the union of the clients' symbols)
    /// that records what is published, for staleness and unexplained gaps. Default: on when
    /// --throttle-ms > 0.
    #[arg(long)]
    pub observer: bool,

    /// No observer connection (no staleness, no unexplained-gap check).
    #[arg(long)]
    pub no_observer: bool,

    /// Spread the --clients over N processes (this one and N−1 children of the same binary)
    /// that measure the same wall-clock window; the report merges them. --stall, probes and
    /// the observer stay in this process. Needed beyond one core or ~20 000 descriptors.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub processes: usize,

    /// (internal) This process is child I of a --processes run.
    #[arg(long, hide = true, value_name = "I")]
    pub child_index: Option<usize>,

    /// (internal) Where a child writes its raw results.
    #[arg(long, hide = true, value_name = "FILE")]
    pub child_json: Option<PathBuf>,

    /// (internal) Global index of this process's first client (keeps symbol choices equal to
    /// a one-process run).
    #[arg(long, hide = true, default_value_t = 0)]
    pub client_offset: usize,

    /// (internal) Total reading clients over all processes (0 = --clients).
    #[arg(long, hide = true, default_value_t = 0)]
    pub clients_total: usize,
}

/// Wire protocol of the clients.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// tickerfeed protocol v1: JSON text frames at --url.
    #[default]
    V1,
    /// Socket.IO v5 over Engine.IO v4 (WebSocket transport only) at /socket.io/ on the host and
    /// port of --url, in tickerfeed's mapping: events named after what they carry (`quotes`,
    /// `welcome`, `feed`, `error`), the v1 fields without `type`; `subscribe` sent with an ack
    /// id, its ack standing for `subscribed`.
    Socketio,
    /// Server-Sent Events at /sse on the host and port of --url: the subscription in the query
    /// string, the v1 objects as the events' data (chunked HTTP/1.1).
    Sse,
}

impl Args {
    /// Checks what clap cannot express; fails with a message naming the option.
    pub fn validate(&self) -> Result<()> {
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be > 0 seconds");
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            bail!("--warmup must be >= 0 seconds");
        }
        if !(self.connect_rate.is_finite() && self.connect_rate >= 0.0) {
            bail!("--connect-rate must be >= 0");
        }
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            bail!("--connect-timeout must be > 0 seconds");
        }
        if let Some(s) = self.zipf
            && !(s.is_finite() && s >= 0.0)
        {
            bail!("--zipf exponent must be >= 0");
        }
        if !(self.churn.is_finite() && self.churn >= 0.0) {
            bail!("--churn must be >= 0 connections per second");
        }
        if !(self.settle.is_finite() && self.settle >= 0.0) {
            bail!("--settle must be >= 0 seconds");
        }
        if self.churn > 0.0 && !self.wildcard && self.symbols == 0 {
            bail!("--churn needs --symbols >= 1 (or --wildcard)");
        }
        if let Some(path) = &self.resume_feed
            && !path.starts_with('/')
        {
            bail!("--resume-feed must be a path starting with '/' (got {path:?})");
        }
        if self.threads == 0 {
            bail!("--threads must be >= 1");
        }
        if self.read_buffer_kib == 0 {
            bail!("--read-buffer-kib must be >= 1");
        }
        if self.processes == 0 {
            bail!("--processes must be >= 1");
        }
        if self.processes > 1 && self.clients < self.processes {
            bail!("--processes {} needs at least as many --clients", self.processes);
        }
        if self.protocol == Protocol::Sse && self.no_snapshot {
            bail!("--no-snapshot cannot be honoured with --protocol sse: /sse has no snapshot parameter, a stream always starts with one");
        }
        if let Some(channels) = &self.channels
            && (channels.is_empty() || channels.iter().any(|c| c.trim().is_empty()))
        {
            bail!("--channels needs a comma-separated list of channel names, e.g. quotes,trades");
        }
        if self.clients + self.stall == 0 {
            bail!("nothing to do: --clients and --stall are both 0");
        }
        let needs_k = (self.clients > 0 && !self.wildcard) || (self.stall > 0 && !self.stall_wildcard);
        if needs_k && self.symbols == 0 {
            bail!("--symbols must be >= 1 (or use --wildcard / --stall-wildcard)");
        }
        Ok(())
    }

    /// Whether this process runs the observer connection.
    pub fn observer_on(&self) -> bool {
        self.child_index.is_none() && (self.observer || (!self.no_observer && self.throttle_ms.is_some_and(|t| t > 0)))
    }

    /// Reading clients over all processes.
    pub fn all_clients(&self) -> usize {
        if self.clients_total > 0 { self.clients_total } else { self.clients }
    }
}
