//! Prometheus metrics: what an operator asks at 3 a.m. — how many clients, is the feed alive,
//! how far behind are we, who is being dropped and why.
//!
//! The server owns its own [`Registry`] (no global default registry, so tests that start several
//! servers in one process do not share counters); every name carries the `tickerfeed_` prefix
//! and base units. The exception is the standard `process_*` families (CPU, memory, file
//! descriptors, threads, start time): they keep the unprefixed names every Prometheus client
//! library exports, which stock dashboards and alerts query, so they live in a second registry
//! of the server's, without a prefix, gathered into the same scrape.
//!
//! No label takes values from clients or symbols: labels are transports, feeds (configured),
//! reasons, ops and codes (fixed lists), HTTP route patterns, methods and status codes. Label
//! values known in advance are created at start, so a series exists at zero before its first
//! event.
//!
//! Cost on the hot path: the WebSocket session updates metrics once per *frame* (atomic adds on
//! pre-resolved handles, no lock, no hash lookup), never per quote per session. Values that
//! already exist elsewhere — connection and subscription counts, feed state and counters — are
//! read at scrape time instead of being maintained twice. Building without the default
//! `metrics` feature turns the hot-path updates into no-ops, to measure their cost.
//!
//! Every collection that grows with clients (connections, the Socket.IO sid registry, the bus's
//! registrations, …) is watched by `tickerfeed_client_map_entries{map}`: its owner registers it
//! once with [`Metrics::client_map`] and its length is read at scrape time, so a leak (entries
//! left behind by sessions that ended) shows as a series that only grows. The soak
//! (`tests/soak/run.sh`) asserts them flat under churn and back to zero after.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::bus::Bus;
use crate::feed::{FeedHandle, FeedKind, FeedState, Feeds};

/// The label values of the client metrics, from the protocol (which this module does not
/// import: `ws` depends on `metrics`, not the other way round).
pub(crate) struct ClientLabels<'a> {
    /// The ops a client may send; `invalid` is added for messages that are not a valid request.
    pub ops: &'a [&'static str],
    /// The codes of the errors sent to clients.
    pub error_codes: &'a [&'static str],
    /// The kinds of injected faults (`fault::FaultKind`), the `kind` label of
    /// `tickerfeed_faults_injected_total`.
    pub fault_kinds: &'a [&'static str],
}

/// Why a WebSocket connection ended, as the `reason` label of `tickerfeed_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DisconnectReason {
    ClientClose,
    SlowConsumer,
    IdleTimeout,
    ProtocolError,
    /// Closed or refused for exceeding a limit (message size, connection count).
    Limit,
    Shutdown,
    /// Refused before the session: an origin not allowed, or no valid token.
    Refused,
    /// The session's token expired.
    TokenExpired,
    /// Still over the message rate after 10 s of `rate_limited` errors.
    RateLimitAbuse,
    /// Dropped, closed or refused by an injected fault (`--faults`, docs/FAULTS.md).
    Fault,
}

impl DisconnectReason {
    pub(crate) const ALL: [DisconnectReason; 10] = [
        DisconnectReason::ClientClose,
        DisconnectReason::SlowConsumer,
        DisconnectReason::IdleTimeout,
        DisconnectReason::ProtocolError,
        DisconnectReason::Limit,
        DisconnectReason::Shutdown,
        DisconnectReason::Refused,
        DisconnectReason::TokenExpired,
        DisconnectReason::RateLimitAbuse,
        DisconnectReason::Fault,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            DisconnectReason::ClientClose => "client_close",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::Limit => "limit",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Refused => "refused",
            DisconnectReason::TokenExpired => "token_expired",
            DisconnectReason::RateLimitAbuse => "rate_limit_abuse",
            DisconnectReason::Fault => "fault",
        }
    }
}

/// The wire protocol a connection speaks: the `transport` label of the connection families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// `GET /ws`, protocol v1 in WebSocket text frames.
    Websocket,
    /// `GET /sse`, protocol v1 as Server-Sent Events.
    Sse,
    /// `/socket.io/` on WebSocket (opened so, or upgraded from polling).
    SocketioWebsocket,
    /// `/socket.io/` on HTTP long-polling.
    SocketioPolling,
}

impl TransportKind {
    pub(crate) const ALL: [TransportKind; 4] = [TransportKind::Websocket, TransportKind::Sse, TransportKind::SocketioWebsocket, TransportKind::SocketioPolling];

    pub(crate) fn label(self) -> &'static str {
        match self {
            TransportKind::Websocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::SocketioWebsocket => "socketio_websocket",
            TransportKind::SocketioPolling => "socketio_polling",
        }
    }
}

/// The `op` label of a client message that is not a valid request.
const INVALID_OP: &str = "invalid";

/// Feed states, as the `state` label of `tickerfeed_feed_state`.
const FEED_STATES: [(FeedState, &str); 4] = [(FeedState::Starting, "starting"), (FeedState::Running, "running"), (FeedState::Paused, "paused"), (FeedState::Finished, "finished")];

/// HTTP methods kept as label values; anything else is `other`.
const METHODS: [&str; 7] = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// The server's metrics.
pub struct Metrics {
    /// tickerfeed's own families; the registry adds the `tickerfeed_` prefix to every name.
    registry: Registry,
    /// The standard `process_*` families, under their unprefixed names: a registry's prefix
    /// applies to every collector in it, so these cannot share `registry`.
    process: Registry,
    /// Open connections and connections opened, per [`TransportKind`] (indexed by it).
    connections: Vec<IntGauge>,
    opened: Vec<IntCounter>,
    disconnects: Vec<IntCounter>,
    subscriptions: IntGauge,
    subscribed_symbols: IntGauge,
    /// The bus's link to other nodes (Redis): 1 while up (always on the memory bus).
    bus_connected: IntGauge,
    bus_reconnects: IntCounter,
    bus_seq_gaps: IntCounter,
    bus_conflated: IntCounter,
    bus_duplicate_publishers: IntCounter,
    bus_feed_restarts: IntCounter,
    quotes_published: IntCounterVec,
    quotes_delivered: IntCounter,
    quotes_conflated: IntCounter,
    trades_delivered: IntCounter,
    trades_lost: IntCounter,
    /// `tickerfeed_bars_delivered_total{resolution}`: `1s`, then `1m`.
    bars_delivered: [IntCounter; 2],
    frames_sent: IntCounter,
    sent_bytes: IntCounter,
    /// `op` label values, `invalid` last; `client_messages` follows this order.
    client_ops: Vec<&'static str>,
    client_messages: Vec<IntCounter>,
    /// `code` label values; `client_errors` follows this order.
    client_error_codes: Vec<&'static str>,
    client_errors: Vec<IntCounter>,
    /// `kind` label values of injected faults; `faults_injected` follows this order.
    fault_kinds: Vec<&'static str>,
    faults_injected: Vec<IntCounter>,
    delivery_latency: Histogram,
    frame_quotes: Histogram,
    feed_state: IntGaugeVec,
    replay_clock: prometheus::GaugeVec,
    rows_skipped: IntCounterVec,
    feed_lag: prometheus::GaugeVec,
    feed_speed: prometheus::GaugeVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// `tickerfeed_client_map_entries{map}`: one series per registered map.
    client_map_entries: IntGaugeVec,
    /// The maps keyed by clients, read at scrape time (see [`Metrics::client_map`]).
    client_maps: Mutex<Vec<ClientMap>>,
    /// Serialises scrape-time refreshes, which turn absolute feed counters into increments.
    refresh: Mutex<()>,
}

/// A collection whose size grows with clients, as [`Metrics::client_map`] registered it.
struct ClientMap {
    gauge: IntGauge,
    /// Its number of entries now; `None` once its owner is gone (a weak reference, so that
    /// watching a map never keeps it, or the sessions it holds, alive).
    entries: Box<dyn Fn() -> Option<usize> + Send + Sync>,
}

/// Delivery latency buckets (seconds): from a quarter millisecond, where a keeping-up client
/// sits on loopback, to 5 s, where a stalled one ends up.
const LATENCY_BUCKETS: &[f64] = &[0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Quotes per frame: 1 for a quiet throttled client, hundreds for a wildcard firehose.
const FRAME_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
/// HTTP handling time: REST answers take microseconds to milliseconds.
const HTTP_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    // Names are static and unique: registration cannot fail.
    registry.register(Box::new(collector.clone())).expect("metric registers");
    collector
}

impl Metrics {
    /// Creates every metric, with series for the given feeds initialised at zero.
    pub(crate) fn new(feeds: &[(String, FeedKind)], client: &ClientLabels) -> Metrics {
        let registry = Registry::new_custom(Some("tickerfeed".into()), None).expect("the prefix is a valid metric name");
        let r = &registry;
        let connections = register(r, IntGaugeVec::new(Opts::new("connections", "Open client connections, by transport."), &["transport"]).unwrap());
        let opened = register(r, IntCounterVec::new(Opts::new("connections_opened_total", "Client connections opened, by transport."), &["transport"]).unwrap());
        let disconnects = register(r, IntCounterVec::new(Opts::new("disconnects_total", "Client connections ended, by reason."), &["reason"]).unwrap());
        let client_messages =
            register(r, IntCounterVec::new(Opts::new("client_messages_total", "Messages received from clients, by op (invalid: not a valid request)."), &["op"]).unwrap());
        let client_errors = register(r, IntCounterVec::new(Opts::new("client_errors_total", "Errors and rejected symbols sent to clients, by code."), &["code"]).unwrap());
        let faults_injected = register(
            r,
            IntCounterVec::new(
                Opts::new("faults_injected_total", "Faults injected (--faults), by kind: each session a firing hits, each refused connection, each feed-level firing."),
                &["kind"],
            )
            .unwrap(),
        );
        let quotes_published = register(r, IntCounterVec::new(Opts::new("quotes_published_total", "Quotes published onto the bus, by feed."), &["feed"]).unwrap());
        let feed_state = register(r, IntGaugeVec::new(Opts::new("feed_state", "1 for the state each feed is in, 0 for the others."), &["feed", "state"]).unwrap());
        let replay_clock =
            register(r, prometheus::GaugeVec::new(Opts::new("feed_replay_clock_seconds", "Historical time a replay feed has reached, Unix seconds."), &["feed"]).unwrap());
        let rows_skipped = register(r, IntCounterVec::new(Opts::new("feed_rows_skipped_total", "Replay rows skipped as unusable, by feed."), &["feed"]).unwrap());
        let feed_lag = register(r, prometheus::GaugeVec::new(Opts::new("feed_lag_seconds", "How far behind its schedule a feed publishes."), &["feed"]).unwrap());
        let feed_speed = register(r, prometheus::GaugeVec::new(Opts::new("feed_speed", "Replay: history seconds per wall second; sim: model time scale."), &["feed"]).unwrap());
        let http_requests = register(
            r,
            IntCounterVec::new(Opts::new("http_requests_total", "HTTP requests, by matched route pattern, method and status."), &["route", "method", "status"]).unwrap(),
        );
        let http_duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "Time to answer an HTTP request (for /ws: the upgrade, not the connection's life).")
                    .buckets(HTTP_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .unwrap(),
        );
        let client_map_entries = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "client_map_entries",
                    "Entries in each server-side collection that grows with clients (read at scrape time); flat under churn, back to 0 when all disconnect.",
                ),
                &["map"],
            )
            .unwrap(),
        );
        let build_info = register(r, IntGaugeVec::new(Opts::new("build_info", "Version and git commit of this build; always 1."), &["version", "commit"]).unwrap());
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("TICKERFEED_GIT_COMMIT").unwrap_or("unknown")]).set(1);
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("process metrics register");

        for (name, kind) in feeds {
            quotes_published.with_label_values(&[name]);
            rows_skipped.with_label_values(&[name]);
            feed_lag.with_label_values(&[name]);
            feed_speed.with_label_values(&[name]);
            for (_, state) in FEED_STATES {
                feed_state.with_label_values(&[name, state]);
            }
            if *kind == FeedKind::Replay {
                replay_clock.with_label_values(&[name]);
            }
        }
        Metrics {
            connections: TransportKind::ALL.iter().map(|t| connections.with_label_values(&[t.label()])).collect(),
            opened: TransportKind::ALL.iter().map(|t| opened.with_label_values(&[t.label()])).collect(),
            disconnects: DisconnectReason::ALL.iter().map(|r| disconnects.with_label_values(&[r.label()])).collect(),
            subscriptions: register(r, IntGauge::new("subscriptions", "Subscriptions: (session, symbol) pairs, a wildcard counting each symbol it covers.").unwrap()),
            subscribed_symbols: register(r, IntGauge::new("subscribed_symbols", "Symbols with at least one subscriber.").unwrap()),
            bus_connected: register(r, IntGauge::new("bus_connected", "1 while the bus reaches Redis (always 1 on the memory bus).").unwrap()),
            bus_reconnects: register(r, IntCounter::new("bus_reconnects_total", "Times the Redis connection came back after being down.").unwrap()),
            bus_seq_gaps: register(r, IntCounter::new("bus_seq_gaps_total", "Gateway: quotes received more than one seq above the symbol's last.").unwrap()),
            bus_conflated: register(r, IntCounter::new("bus_conflated_total", "Feed node: publishes merged into a symbol still waiting to go to Redis.").unwrap()),
            bus_duplicate_publishers: register(r, IntCounter::new("bus_duplicate_publishers_total", "Gateway: symbols seen published by two live feed nodes (an error: one feed node per symbol).").unwrap()),
            bus_feed_restarts: register(r, IntCounter::new("bus_feed_restarts_total", "Gateway: symbols that moved to a newer feed node (a restart; their seq began again).").unwrap()),
            quotes_delivered: register(r, IntCounter::new("quotes_delivered_total", "Quotes sent to clients (snapshots included).").unwrap()),
            quotes_conflated: register(r, IntCounter::new("quotes_conflated_total", "Quotes merged away by throttling and conflation: published but superseded before a client got them.").unwrap()),
            trades_delivered: register(r, IntCounter::new("trades_delivered_total", "Trades sent to clients on the trades channel (resumed ones included).").unwrap()),
            trades_lost: register(r, IntCounter::new("trades_lost_total", "Trades a client of the trades channel did not get (it fell behind the ring, or a resume reached back too far), each told in a gap message.").unwrap()),
            bars_delivered: {
                let bars = register(r, IntCounterVec::new(Opts::new("bars_delivered_total", "Bars sent to clients on the bars channels (forming and final), by resolution."), &["resolution"]).unwrap());
                ["1s", "1m"].map(|resolution| bars.with_label_values(&[resolution]))
            },
            frames_sent: register(r, IntCounter::new("frames_sent_total", "WebSocket frames handed to client sockets.").unwrap()),
            sent_bytes: register(r, IntCounter::new("sent_bytes_total", "Bytes handed to client sockets, WebSocket framing included.").unwrap()),
            client_ops: client.ops.iter().copied().chain([INVALID_OP]).collect(),
            client_messages: client.ops.iter().copied().chain([INVALID_OP]).map(|op| client_messages.with_label_values(&[op])).collect(),
            client_error_codes: client.error_codes.to_vec(),
            client_errors: client.error_codes.iter().map(|c| client_errors.with_label_values(&[c])).collect(),
            fault_kinds: client.fault_kinds.to_vec(),
            faults_injected: client.fault_kinds.iter().map(|k| faults_injected.with_label_values(&[k])).collect(),
            delivery_latency: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("delivery_latency_seconds", "Time from when a quote could be delivered (published, and the client's throttle interval over) to when its frame was handed to the socket; per frame, of its longest-waiting quote.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .unwrap(),
            ),
            frame_quotes: register(r, Histogram::with_opts(HistogramOpts::new("frame_quotes", "Quotes per quote frame.").buckets(FRAME_BUCKETS.to_vec())).unwrap()),
            quotes_published,
            feed_state,
            replay_clock,
            rows_skipped,
            feed_lag,
            feed_speed,
            http_requests,
            http_duration,
            client_map_entries,
            client_maps: Mutex::new(Vec::new()),
            refresh: Mutex::new(()),
            registry,
            process,
        }
    }

    /// Watches a collection that grows with clients as `tickerfeed_client_map_entries{map}`:
    /// `entries(owner)` is called at each scrape (never on a hot path), through a weak
    /// reference to `owner`, so the series reads 0 once the owner is gone. `map` is a fixed
    /// name, never client input. One line per map, where the server is wired:
    ///
    /// ```ignore
    /// metrics.client_map("socketio_sids", &socketio, SocketIo::sessions);
    /// ```
    pub(crate) fn client_map<T: Send + Sync + 'static>(&self, map: &'static str, owner: &Arc<T>, entries: fn(&T) -> usize) {
        let owner: Weak<T> = Arc::downgrade(owner);
        let gauge = self.client_map_entries.with_label_values(&[map]);
        let mut maps = self.client_maps.lock().expect("client maps lock");
        maps.push(ClientMap { gauge, entries: Box::new(move || owner.upgrade().map(|owner| entries(&owner))) });
    }

    /// A connection was accepted and its session started.
    pub(crate) fn connection_opened(&self, transport: TransportKind) {
        self.opened[transport as usize].inc();
        self.connections[transport as usize].inc();
    }

    /// An open connection moved to another transport (a Socket.IO upgrade): counted as open
    /// on `to` from now on (it stays counted as opened on `from`).
    pub(crate) fn connection_upgraded(&self, from: TransportKind, to: TransportKind) {
        self.connections[from as usize].dec();
        self.connections[to as usize].inc();
    }

    /// A connection's session ended, for `reason`.
    pub(crate) fn connection_closed(&self, transport: TransportKind, reason: DisconnectReason) {
        self.connections[transport as usize].dec();
        self.disconnected(reason);
    }

    /// A connection ended or was refused (a refused one was never opened: it is not counted in
    /// the open connections).
    pub(crate) fn disconnected(&self, reason: DisconnectReason) {
        self.disconnects[reason as usize].inc();
    }

    /// A client message, by its op name (anything not an op counts as `invalid`).
    pub(crate) fn client_message(&self, op: &str) {
        let index = self.client_ops.iter().position(|o| *o == op).unwrap_or(self.client_messages.len() - 1);
        self.client_messages[index].inc();
    }

    pub(crate) fn client_error(&self, code: &str) {
        self.client_errors(code, 1);
    }

    /// `count` client mistakes of one kind (a rate-limited run is reported once for many).
    pub(crate) fn client_errors(&self, code: &str, count: u64) {
        if let Some(index) = self.client_error_codes.iter().position(|c| *c == code) {
            self.client_errors[index].inc_by(count);
        }
    }

    /// `count` faults of `kind` were injected (a `fault::FaultKind` label; never on a hot path).
    pub(crate) fn faults_injected(&self, kind: &str, count: u64) {
        if let Some(index) = self.fault_kinds.iter().position(|k| *k == kind) {
            self.faults_injected[index].inc_by(count);
        }
    }

    /// A quote frame was handed to a socket. Called once per frame: the per-quote work was
    /// summed by the caller.
    #[inline]
    pub(crate) fn quote_frame(&self, quotes: usize, conflated: u64, wire_bytes: u64, longest_wait: Option<Duration>) {
        if cfg!(feature = "metrics") {
            self.quotes_delivered.inc_by(quotes as u64);
            self.quotes_conflated.inc_by(conflated);
            self.frames_sent.inc();
            self.sent_bytes.inc_by(wire_bytes);
            self.frame_quotes.observe(quotes as f64);
            if let Some(wait) = longest_wait {
                self.delivery_latency.observe(wait.as_secs_f64());
            }
        }
    }

    /// A pass of a session's channels wrote `trades` trades, told of `lost` it lost, and wrote
    /// bars of each resolution (`1s`, `1m`). Once per pass, not per trade.
    pub(crate) fn channels_written(&self, trades: u64, lost: u64, bars: [u64; 2]) {
        if cfg!(feature = "metrics") {
            self.trades_delivered.inc_by(trades);
            self.trades_lost.inc_by(lost);
            for (counter, count) in self.bars_delivered.iter().zip(bars) {
                counter.inc_by(count);
            }
        }
    }

    /// Any other frame (control replies, pings) was handed to a socket.
    #[inline]
    pub(crate) fn other_frame(&self, wire_bytes: u64) {
        if cfg!(feature = "metrics") {
            self.frames_sent.inc();
            self.sent_bytes.inc_by(wire_bytes);
        }
    }

    /// An HTTP request was answered.
    pub(crate) fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let method = METHODS.iter().find(|m| **m == method).copied().unwrap_or("other");
        self.http_requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
    }

    /// Brings scrape-time values up to date and renders the text exposition format.
    pub fn render(&self, bus: &Bus, feeds: &Feeds) -> String {
        {
            let _guard = self.refresh.lock().expect("metrics refresh lock");
            let topics = bus.topics();
            let mut pairs = 0usize;
            let mut subscribed = 0usize;
            for topic in &topics {
                let n = topic.subscribers();
                pairs += n;
                subscribed += usize::from(n > 0);
            }
            self.subscriptions.set(pairs as i64);
            self.subscribed_symbols.set(subscribed as i64);
            let link = &bus.link;
            self.bus_connected.set(i64::from(link.is_connected()));
            let counters = [
                (&self.bus_reconnects, link.reconnects()),
                (&self.bus_seq_gaps, link.seq_gaps()),
                (&self.bus_conflated, link.conflated()),
                (&self.bus_duplicate_publishers, link.duplicate_publishers()),
                (&self.bus_feed_restarts, link.feed_restarts()),
            ];
            for (counter, now) in counters {
                counter.inc_by(now.saturating_sub(counter.get()));
            }
            for feed in feeds.iter() {
                self.refresh_feed(feed);
            }
            self.refresh_client_maps();
        }
        self.encode()
    }

    /// The text exposition format of the current values, without refreshing the scrape-time ones:
    /// the `process_*` families, then tickerfeed's (each registry's families sorted by name, and
    /// no name in both, as one prefix is `process_` and the other `tickerfeed_`).
    fn encode(&self) -> String {
        let mut families = self.process.gather();
        families.extend(self.registry.gather());
        let mut buffer = Vec::new();
        // Encoding gathered families into memory cannot fail.
        TextEncoder::new().encode(&families, &mut buffer).expect("metrics encode");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    fn refresh_client_maps(&self) {
        for map in self.client_maps.lock().expect("client maps lock").iter() {
            map.gauge.set((map.entries)().unwrap_or(0) as i64);
        }
    }

    fn refresh_feed(&self, feed: &FeedHandle) {
        let status = feed.status();
        let name = &*status.name;
        let published = self.quotes_published.with_label_values(&[name]);
        published.inc_by(status.quotes_published.saturating_sub(published.get()));
        let skipped = self.rows_skipped.with_label_values(&[name]);
        skipped.inc_by(status.rows_skipped.saturating_sub(skipped.get()));
        for (state, label) in FEED_STATES {
            self.feed_state.with_label_values(&[name, label]).set(i64::from(status.state == state));
        }
        self.feed_lag.with_label_values(&[name]).set(status.lag_seconds);
        self.feed_speed.with_label_values(&[name]).set(status.speed);
        if status.kind == FeedKind::Replay {
            if let Some(clock) = status.clock {
                self.replay_clock.with_label_values(&[name]).set(clock as f64 / 1000.0);
            }
        }
    }

    /// The content type of [`Metrics::render`]'s output.
    pub(crate) fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol's labels, as the server passes them.
    const OPS: &[&str] = &["subscribe", "unsubscribe", "list", "ping"];
    const ERROR_CODES: &[&str] = &["bad_request", "unknown_op", "too_many_symbols", "rate_limited", "unknown_symbol", "invalid_symbol"];
    const FAULT_KINDS: &[&str] = &["disconnect", "gap"];
    const CLIENT: ClientLabels = ClientLabels { ops: OPS, error_codes: ERROR_CODES, fault_kinds: FAULT_KINDS };

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("series {series} not found"))
    }

    #[test]
    fn known_label_values_start_at_zero() {
        let metrics = Metrics::new(&[("sim".into(), FeedKind::Sim), ("history".into(), FeedKind::Replay)], &CLIENT);
        let text = metrics.encode();
        for reason in DisconnectReason::ALL {
            assert_eq!(value(&text, &format!("tickerfeed_disconnects_total{{reason=\"{}\"}}", reason.label())), 0.0);
        }
        for op in OPS.iter().chain(&[INVALID_OP]) {
            assert_eq!(value(&text, &format!("tickerfeed_client_messages_total{{op=\"{op}\"}}")), 0.0);
        }
        for code in ERROR_CODES {
            assert_eq!(value(&text, &format!("tickerfeed_client_errors_total{{code=\"{code}\"}}")), 0.0);
        }
        for kind in FAULT_KINDS {
            assert_eq!(value(&text, &format!("tickerfeed_faults_injected_total{{kind=\"{kind}\"}}")), 0.0);
        }
        assert_eq!(value(&text, "tickerfeed_feed_state{feed=\"history\",state=\"paused\"}"), 0.0);
        assert_eq!(value(&text, "tickerfeed_quotes_published_total{feed=\"sim\"}"), 0.0);
        assert!(text.contains("tickerfeed_feed_replay_clock_seconds{feed=\"history\"}"));
        assert!(!text.contains("tickerfeed_feed_replay_clock_seconds{feed=\"sim\"}"), "only replay feeds have a clock");
        assert!(text.contains("tickerfeed_build_info{commit="));
    }

    /// The families of the process collector, under the names every Prometheus client library
    /// exports: the only families without the `tickerfeed_` prefix.
    const PROCESS_FAMILIES: [&str; 7] = [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ];

    /// The names of the families in a scrape, from its `# TYPE` lines.
    fn family_names(text: &str) -> Vec<&str> {
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect()
    }

    #[test]
    fn process_families_keep_their_standard_names_and_ours_keep_the_prefix() {
        // Two servers' metrics in one process, as the integration tests have: each has its own
        // process collector, and registering them does not collide.
        let first = Metrics::new(&[("sim".into(), FeedKind::Sim)], &CLIENT);
        let second = Metrics::new(&[("sim".into(), FeedKind::Sim)], &CLIENT);
        for metrics in [&first, &second] {
            let text = metrics.encode();
            assert!(!text.contains("tickerfeed_process_"), "process families must not carry the prefix");
            let names = family_names(&text);
            if cfg!(target_os = "linux") {
                for family in PROCESS_FAMILIES {
                    assert!(names.contains(&family), "{family} missing from {names:?}");
                    assert!(text.lines().any(|l| l.starts_with(family) && l[family.len()..].starts_with(' ')), "{family} has no sample");
                }
            }
            for name in &names {
                assert!(name.starts_with("tickerfeed_") || PROCESS_FAMILIES.contains(name), "{name} lost the tickerfeed_ prefix");
            }
            for family in ["tickerfeed_build_info", "tickerfeed_disconnects_total", "tickerfeed_feed_state", "tickerfeed_subscriptions", "tickerfeed_delivery_latency_seconds"] {
                assert!(names.contains(&family), "{family} missing from {names:?}");
            }
        }
    }

    #[test]
    fn client_maps_are_read_at_scrape_time_and_read_zero_once_their_owner_is_gone() {
        let metrics = Metrics::new(&[], &CLIENT);
        let sids = Arc::new(Mutex::new(vec![1, 2, 3]));
        metrics.client_map("sids", &sids, |m| m.lock().unwrap().len());
        metrics.refresh_client_maps();
        assert_eq!(value(&metrics.encode(), "tickerfeed_client_map_entries{map=\"sids\"}"), 3.0);
        sids.lock().unwrap().clear();
        metrics.refresh_client_maps();
        assert_eq!(value(&metrics.encode(), "tickerfeed_client_map_entries{map=\"sids\"}"), 0.0);
        sids.lock().unwrap().push(4);
        drop(sids);
        metrics.refresh_client_maps();
        assert_eq!(value(&metrics.encode(), "tickerfeed_client_map_entries{map=\"sids\"}"), 0.0, "a map whose owner is gone holds nothing");
    }

    #[test]
    fn counters_move_with_their_events() {
        let metrics = Metrics::new(&[], &CLIENT);
        metrics.disconnected(DisconnectReason::SlowConsumer);
        metrics.client_message("ping");
        metrics.client_message("no such op");
        metrics.client_error("rate_limited");
        metrics.faults_injected("gap", 2);
        metrics.faults_injected("no such kind", 1);
        metrics.http_request("/api/quotes/{symbol}", "GET", 404, Duration::from_millis(1));
        metrics.http_request("/api/feeds", "BREW", 200, Duration::from_millis(1));
        metrics.quote_frame(7, 3, 1500, Some(Duration::from_millis(2)));
        metrics.other_frame(100);
        let text = metrics.encode();
        assert_eq!(value(&text, "tickerfeed_disconnects_total{reason=\"slow_consumer\"}"), 1.0);
        assert_eq!(value(&text, "tickerfeed_client_messages_total{op=\"ping\"}"), 1.0);
        assert_eq!(value(&text, "tickerfeed_client_messages_total{op=\"invalid\"}"), 1.0);
        assert_eq!(value(&text, "tickerfeed_client_errors_total{code=\"rate_limited\"}"), 1.0);
        assert_eq!(value(&text, "tickerfeed_faults_injected_total{kind=\"gap\"}"), 2.0);
        assert_eq!(value(&text, "tickerfeed_http_requests_total{method=\"GET\",route=\"/api/quotes/{symbol}\",status=\"404\"}"), 1.0);
        assert_eq!(value(&text, "tickerfeed_http_requests_total{method=\"other\",route=\"/api/feeds\",status=\"200\"}"), 1.0);
        if cfg!(feature = "metrics") {
            assert_eq!(value(&text, "tickerfeed_quotes_delivered_total"), 7.0);
            assert_eq!(value(&text, "tickerfeed_quotes_conflated_total"), 3.0);
            assert_eq!(value(&text, "tickerfeed_frames_sent_total"), 2.0);
            assert_eq!(value(&text, "tickerfeed_sent_bytes_total"), 1600.0);
            assert_eq!(value(&text, "tickerfeed_delivery_latency_seconds_count"), 1.0);
            assert_eq!(value(&text, "tickerfeed_frame_quotes_bucket{le=\"10\"}"), 1.0);
        }
    }
}
