//! The run's result: a serialisable report, its human-readable table, and the verdict.

use std::fmt::Write as _;

use serde::Serialize;

use crate::frame::Welcome;
use crate::stats::ConnectionCounts;

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// False if any failure below was found (the exit status is then 1 unless --allow-errors).
    pub ok: bool,
    /// Reasons for a non-zero exit status.
    pub failures: Vec<String>,
    /// Things worth knowing that do not fail the run (client-bound, clock skew, slow probes…).
    pub warnings: Vec<String>,
    pub config: ConfigEcho,
    /// The server: its `welcome` and, with --server-pid, its CPU over the measured period.
    pub server: ServerStats,
    /// Open-file soft limit after raising it to the hard limit.
    pub fd_limit: u64,
    /// Size of the symbol universe the clients chose from.
    pub symbols_available: usize,
    pub clients: ClientStats,
    /// Traffic received by the reading clients during the measured period.
    pub measured: Throughput,
    /// Live quote latency (receive time − `pt`) during the measured period, in ms.
    pub latency_ms: Latency,
    /// receive − max(pt, previous delivery of the symbol + throttle), live quotes, measured
    /// period, ms: the latency the throttle does not excuse.
    pub latency_throttled_ms: Latency,
    /// receive − pt of the oldest quote the client did not yet have (per the observer), at
    /// each live delivery of the measured period, ms. Empty without an observer.
    pub staleness_ms: Latency,
    pub throttle: ThrottleStats,
    /// The unthrottled observer connection; null without one.
    pub observer: Option<ObserverStats>,
    pub probe: ProbeStats,
    /// Short-lived connections opened during the measured period (--churn); null without.
    pub churn: Option<ChurnStats>,
    /// Message counts over the whole run (setup, warm-up and measured period).
    pub messages: Messages,
    /// Null without --server-pid.
    pub server_rss_mib: Option<Rss>,
    pub loadgen: LoadgenStats,
}

#[derive(Serialize, Debug, Clone)]
pub struct ConfigEcho {
    pub url: String,
    pub clients: usize,
    pub symbols_per_client: usize,
    pub wildcard: bool,
    pub throttle_ms: Option<u64>,
    pub snapshot: bool,
    /// Clients subscribed with aligned delivery (`--align`).
    pub align: bool,
    /// The subscriptions' `channels` (`--channels`); null: not sent (quotes only).
    pub channels: Option<Vec<String>>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connect_rate: f64,
    pub stall: usize,
    pub stall_wildcard: bool,
    pub seed: u64,
    pub zipf: Option<f64>,
    pub probe_interval_ms: u64,
    pub threads: usize,
    pub protocol: crate::cli::Protocol,
    pub processes: usize,
    pub observer: bool,
    pub churn: f64,
    pub settle_s: f64,
    pub resume_feed: Option<String>,
    pub idle: bool,
}

/// The server under test. The `welcome` fields sit at the top level of this object (as they
/// did when `server` was the welcome alone); the CPU figures need --server-pid.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ServerStats {
    /// The first `welcome` received (absent if no client got that far).
    #[serde(flatten)]
    pub welcome: Option<Welcome>,
    pub pid: Option<u32>,
    /// utime + stime of the server process over exactly the measured period (from
    /// /proc/PID/stat at its start and end), seconds; resolution one clock tick (10 ms).
    pub cpu_s: Option<f64>,
    /// cpu_s / measured wall time × 100: 100 = one core fully busy.
    pub cpu_pct: Option<f64>,
}

/// --churn: connections that connect, subscribe, get their snapshot and close.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ChurnStats {
    /// Requested connections per second.
    pub rate: f64,
    /// Connections started during the measured period, and that divided by its length.
    pub attempted: u64,
    pub attempted_per_s: f64,
    /// Reached `subscribed` (and the snapshot, when asked for) in time.
    pub ok: u64,
    pub failed: u64,
    /// Failures by kind: connect, handshake (e.g. an HTTP 503 at the connection limit),
    /// timeout, closed, error_reply, unfinished (still running when the run ended), other.
    pub failure_kinds: std::collections::BTreeMap<String, u64>,
    /// A few failure messages as examples.
    pub errors: Vec<String>,
    /// Successful connections whose close handshake did not complete within its deadline.
    pub unclean_closes: u64,
    /// Connect → snapshot (or `subscribed` without snapshot) of the successful ones, ms.
    pub setup_p50_ms: Option<f64>,
    pub setup_p99_ms: Option<f64>,
    pub setup_max_ms: Option<f64>,
}

/// Throttle-aware checks of the measured period (see the `timing` module).
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct ThrottleStats {
    pub throttle_ms: Option<u64>,
    /// Deliveries after a gap whose oldest missed quote the observer did not have (no
    /// staleness sample).
    pub staleness_missing: u64,
    /// Seq gaps although the last skipped quote was published > throttle + 50 ms after the
    /// previous delivery. Reported, not a failure (a conflating server may skip under
    /// backpressure).
    pub unexplained_gaps: u64,
    /// Gaps that could not be judged (the observer lacked the last skipped quote).
    pub gaps_unjudged: u64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct ObserverStats {
    /// Symbols subscribed (all of them for "*").
    pub symbols: usize,
    pub frames: u64,
    pub quotes: u64,
    /// Seq gaps the observer itself saw (it may be conflated under load), and the quotes
    /// they skipped: those publish times are unknown.
    pub gaps: u64,
    pub gap_quotes: u64,
    pub error: Option<String>,
}

/// The `clients` object: what was asked for, and what became of it (the counts' fields sit at
/// the top level of this object).
#[derive(Serialize, Debug, Clone, Default)]
pub struct ClientStats {
    pub requested: usize,
    pub stall_requested: usize,
    /// Seconds from the first connect to the last client subscribed (or failed).
    pub ramp_s: f64,
    #[serde(flatten)]
    pub connections: ConnectionCounts,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Throughput {
    /// Actual length of the measured period.
    pub duration_s: f64,
    /// Quotes delivered (live + snapshot).
    pub quotes: u64,
    pub quotes_live: u64,
    pub quotes_snapshot: u64,
    pub quotes_per_s: f64,
    /// Text frames of any type.
    pub frames: u64,
    pub frames_per_s: f64,
    pub quote_frames: u64,
    /// quotes / quote_frames: how much batching/conflation the server does.
    pub quotes_per_frame: f64,
    /// WebSocket payload bytes.
    pub bytes: u64,
    /// 10^6 payload bytes per second.
    pub mb_per_s: f64,
    /// quotes / server.cpu_s: delivered quotes per server CPU-second, the headline figure. It
    /// stays meaningful when the load generator is the bottleneck. Needs --server-pid.
    pub quotes_per_server_cpu_s: Option<f64>,
    /// Trades delivered (`--channels …,trades`; 0 without), in `trades` frames.
    pub trades: u64,
    pub trades_per_s: f64,
    pub trade_frames: u64,
    /// trades / trade_frames.
    pub trades_per_frame: f64,
    /// Trades the server declared lost in `gap` messages (the sum of their seq ranges): a
    /// client that falls more than the server's ring behind loses the oldest.
    pub trades_lost: u64,
    /// trades_lost / (trades + trades_lost), %: the share of the trades published for the
    /// clients' symbols that they did not get.
    pub trades_lost_pct: f64,
    pub gap_msgs: u64,
    /// trades / server.cpu_s: delivered trades per server CPU-second (the same CPU as
    /// quotes_per_server_cpu_s: the server spends it on both). Needs --server-pid.
    pub trades_per_server_cpu_s: Option<f64>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct ProbeStats {
    /// Probes started during the measured period.
    pub count: usize,
    /// Probes that received a snapshot frame.
    pub ok: usize,
    /// Probes that errored or timed out.
    pub failed: usize,
    /// Probes that got live quotes but no snapshot frame first.
    pub no_snapshot: usize,
    /// subscribe → first snapshot frame longer than slow_threshold_ms.
    pub slow: usize,
    pub slow_threshold_ms: u64,
    /// TCP connect → welcome.
    pub welcome_p50_ms: Option<f64>,
    pub welcome_max_ms: Option<f64>,
    /// subscribe → subscribed.
    pub ack_p50_ms: Option<f64>,
    pub ack_max_ms: Option<f64>,
    /// subscribe → first snapshot quotes frame.
    pub snapshot_p50_ms: Option<f64>,
    pub snapshot_max_ms: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Messages {
    pub ordering_errors: u64,
    /// Trades out of seq order per symbol, or after a jump no `gap` message explained.
    pub trade_order_errors: u64,
    pub gap: u64,
    pub error: u64,
    pub feed: u64,
    pub pong: u64,
    pub subscribed: u64,
    pub other: u64,
    pub parse_errors: u64,
    /// Live quotes received before their `pt` (clock skew), recorded as 0 ms.
    pub negative_latency: u64,
}

/// Server resident memory, MiB.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Rss {
    /// Before the first connection of the run (the observer's included).
    pub before: Option<f64>,
    /// At the start of the measured period (after connect, subscribe and warm-up).
    pub start: Option<f64>,
    /// At the end of the measured period.
    pub end: Option<f64>,
    /// Highest sample over the whole run (sampled every second).
    pub max: Option<f64>,
    /// Lowest and highest sample of the measured period (start and end included).
    pub measured_min: Option<f64>,
    pub measured_max: Option<f64>,
    /// After --settle seconds past the measured period (null without --settle).
    pub after_settle: Option<f64>,
    /// Every sample of the run as [seconds since the start of the measured period, MiB]:
    /// negative during ramp-up and warm-up, beyond the duration during --settle.
    pub series: Vec<[f64; 2]>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct LoadgenStats {
    pub threads: usize,
    /// CPU seconds (user, system) during the measured period.
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// (user + system) / measured wall time × 100: 100 = one core fully busy.
    pub cpu_pct_one_core: f64,
    /// CPU seconds over the whole process lifetime.
    pub cpu_total_s: f64,
    /// The load generator used ≥ 80 % of its worker threads' capacity: the numbers may
    /// describe the client rather than the server. With --processes: any one process was.
    pub client_bound: bool,
    /// Load generator processes (--processes); the CPU figures above are their sums.
    pub processes: usize,
    /// The busiest process's CPU, % of one core (measured period).
    pub cpu_pct_max_process: f64,
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

fn opt_mib(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"))
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let c = &self.clients.connections;
        let (requested, stall_requested, ramp_s) = (self.clients.requested, self.clients.stall_requested, self.clients.ramp_s);
        let m = &self.measured;
        let l = &self.latency_ms;
        let p = &self.probe;
        let g = &self.messages;
        let w = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        let _ = writeln!(s, "tickerfeed loadgen report");
        if let Some(sv) = &self.server.welcome {
            w(
                &mut s,
                "server",
                format!(
                    "{} (instance {}, protocol {}, default throttle {} ms)",
                    sv.server.as_deref().unwrap_or("?"),
                    sv.instance.as_deref().unwrap_or("?"),
                    sv.protocol.map_or("?".into(), |x| x.to_string()),
                    sv.throttle_ms.map_or("?".into(), |x| x.to_string())
                ),
            );
        }
        let cfg = &self.config;
        w(
            &mut s,
            "load",
            format!(
                "{} clients × {} (of {} symbols{}), throttle {}, {} stalled{}, {} thread(s)",
                cfg.clients,
                if cfg.wildcard { "\"*\"".to_string() } else { format!("{} symbols", cfg.symbols_per_client) },
                self.symbols_available,
                cfg.zipf.map_or(String::new(), |z| format!(", zipf {z}")),
                cfg.throttle_ms.map_or("server default".into(), |t| format!("{t} ms")),
                cfg.stall,
                if cfg.stall_wildcard { " (\"*\")" } else { "" },
                cfg.threads
            ),
        );
        let _ = writeln!(s, "connections");
        w(&mut s, "clients connected/failed", format!("{} / {} of {requested}", c.connected, c.failed));
        w(&mut s, "stalled connected/failed", format!("{} / {} of {stall_requested}", c.stall_connected, c.stall_failed));
        w(&mut s, "disconnected during run", c.disconnected.to_string());
        w(&mut s, "ramp-up", format!("{ramp_s:.2} s (fd limit {})", self.fd_limit));
        w(&mut s, "delivering in the window", format!("{} of {} connected", c.delivering, c.connected));
        w(&mut s, "symbols subscribed/rejected", format!("{} / {}", c.subscribed_symbols, c.rejected_symbols));
        let _ = writeln!(s, "throughput (measured {:.2} s)", m.duration_s);
        w(&mut s, "quotes/s", format!("{:.0}  ({} live, {} snapshot)", m.quotes_per_s, m.quotes_live, m.quotes_snapshot));
        w(&mut s, "frames/s", format!("{:.0}", m.frames_per_s));
        w(&mut s, "quotes per frame", format!("{:.2}", m.quotes_per_frame));
        w(&mut s, "MB/s (payload)", format!("{:.2}", m.mb_per_s));
        if let Some(q) = m.quotes_per_server_cpu_s {
            w(&mut s, "quotes per server CPU-s", format!("{q:.0}"));
        }
        let trades_asked = cfg.channels.as_ref().is_some_and(|c| c.iter().any(|c| c == "trades"));
        if trades_asked || m.trades > 0 || m.trades_lost > 0 {
            w(&mut s, "trades/s", format!("{:.0}  ({} in {} frames, {:.2} per frame)", m.trades_per_s, m.trades, m.trade_frames, m.trades_per_frame));
            w(&mut s, "trades lost (gap messages)", format!("{} ({:.2}%) in {} gaps", m.trades_lost, m.trades_lost_pct, m.gap_msgs));
            if let Some(t) = m.trades_per_server_cpu_s {
                w(&mut s, "trades per server CPU-s", format!("{t:.0}"));
            }
        }
        let _ = writeln!(s, "latency, live quotes (receive − pt), ms");
        w(&mut s, "p50 / p99 / p99.9 / max", format!("{:.3} / {:.3} / {:.3} / {:.3}   (p90 {:.3}, mean {:.3}, n={})", l.p50, l.p99, l.p999, l.max, l.p90, l.mean, l.samples));
        let lt = &self.latency_throttled_ms;
        w(&mut s, "throttled p50/p99/p99.9/max", format!("{:.3} / {:.3} / {:.3} / {:.3}   (n={})", lt.p50, lt.p99, lt.p999, lt.max, lt.samples));
        if let Some(o) = &self.observer {
            let st = &self.staleness_ms;
            w(
                &mut s,
                "staleness p50/p99/p99.9/max",
                format!("{:.3} / {:.3} / {:.3} / {:.3}   (n={}, missing {})", st.p50, st.p99, st.p999, st.max, st.samples, self.throttle.staleness_missing),
            );
            w(&mut s, "unexplained gaps", format!("{} (unjudged {})", self.throttle.unexplained_gaps, self.throttle.gaps_unjudged));
            w(
                &mut s,
                "observer",
                format!(
                    "{} symbols, {} quotes, {} gaps ({} quotes skipped){}",
                    o.symbols,
                    o.quotes,
                    o.gaps,
                    o.gap_quotes,
                    o.error.as_deref().map_or(String::new(), |e| format!(", error: {e}"))
                ),
            );
        }
        let _ = writeln!(s, "snapshot probes (fresh connections)");
        w(&mut s, "probes ok/failed/no-snap", format!("{} / {} / {} of {}", p.ok, p.failed, p.no_snapshot, p.count));
        w(&mut s, "connect→welcome p50/max", format!("{} / {} ms", opt_ms(p.welcome_p50_ms), opt_ms(p.welcome_max_ms)));
        w(&mut s, "subscribe→ack p50/max", format!("{} / {} ms", opt_ms(p.ack_p50_ms), opt_ms(p.ack_max_ms)));
        w(&mut s, "subscribe→snapshot p50/max", format!("{} / {} ms", opt_ms(p.snapshot_p50_ms), opt_ms(p.snapshot_max_ms)));
        w(&mut s, "slow probes", format!("{} (> {} ms)", p.slow, p.slow_threshold_ms));
        if let Some(ch) = &self.churn {
            let _ = writeln!(s, "churn ({} connections/s asked)", ch.rate);
            w(&mut s, "attempted/ok/failed", format!("{} / {} / {} ({:.0}/s; unclean closes {})", ch.attempted, ch.ok, ch.failed, ch.attempted_per_s, ch.unclean_closes));
            if !ch.failure_kinds.is_empty() {
                let kinds: Vec<String> = ch.failure_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
                w(&mut s, "failures by kind", kinds.join(", "));
            }
            w(&mut s, "setup p50/p99/max", format!("{} / {} / {} ms", opt_ms(ch.setup_p50_ms), opt_ms(ch.setup_p99_ms), opt_ms(ch.setup_max_ms)));
        }
        let _ = writeln!(s, "correctness (whole run)");
        w(&mut s, "ordering errors", g.ordering_errors.to_string());
        if trades_asked || g.trade_order_errors > 0 {
            w(&mut s, "trade order errors", format!("{} (gap messages {})", g.trade_order_errors, g.gap));
        }
        w(&mut s, "messages", format!("error {}, feed {}, pong {}, other {}, unparseable {}", g.error, g.feed, g.pong, g.other, g.parse_errors));
        let _ = writeln!(s, "resources");
        match &self.server_rss_mib {
            Some(r) => {
                w(
                    &mut s,
                    "server RSS before/start/end",
                    format!(
                        "{} / {} / {} MiB (max {}{})",
                        opt_mib(r.before),
                        opt_mib(r.start),
                        opt_mib(r.end),
                        opt_mib(r.max),
                        r.after_settle.map_or(String::new(), |x| format!(", after settle {x:.1}"))
                    ),
                );
            }
            None => w(&mut s, "server RSS", "- (no --server-pid)".into()),
        }
        if let (Some(cpu), Some(pct)) = (self.server.cpu_s, self.server.cpu_pct) {
            w(&mut s, "server CPU (measured)", format!("{cpu:.2} s = {pct:.1}% of one core"));
        }
        let lg = &self.loadgen;
        w(
            &mut s,
            "loadgen CPU",
            format!("{:.1}% of one core (user {:.2} s, sys {:.2} s){}", lg.cpu_pct_one_core, lg.cpu_user_s, lg.cpu_sys_s, if lg.client_bound { "  << CLIENT-BOUND" } else { "" }),
        );
        for x in &self.warnings {
            let _ = writeln!(s, "WARNING: {x}");
        }
        for x in &self.failures {
            let _ = writeln!(s, "FAILED: {x}");
        }
        let _ = writeln!(s, "{}", if self.ok { "result: OK" } else { "result: FAILED" });
        s
    }
}

/// Sorted-sample percentile (nearest rank), for the handful of probe timings.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
