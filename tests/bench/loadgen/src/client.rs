//! The connections: reading clients, stalled clients and snapshot probes.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};

use crate::cli::Protocol;
use crate::frame::{self, Event, Kind, ProbeEvent, SeqTracker, Welcome};
use crate::net::{Conn, Incoming, Target};
use crate::stats::{ConnectionCounts, StatsRegistry, keep_example};
use crate::timing::ObserverLog;

/// Run phases (0, the default, is setup and warm-up); latency is recorded only in `MEASURE`.
pub const PHASE_MEASURE: u8 = 1;
pub const PHASE_DONE: u8 = 2;

/// `None` while running; `Some(deadline)` = close now, and be gone by the deadline.
pub type Shutdown = watch::Receiver<Option<Instant>>;

/// Everything the connection tasks share with the orchestrator.
#[derive(Default)]
pub struct Shared {
    pub stats: StatsRegistry,
    pub phase: AtomicU8,
    /// What became of the connections. A std mutex: it is taken a few times per connection
    /// (setup, first live quote, loss) and once a second by the progress line, never across an
    /// `.await`; the per-frame counting goes to [`StatsRegistry`].
    connections: Mutex<ConnectionCounts>,
    pub welcome: OnceLock<Welcome>,
    /// The observer's record (set before any client starts), shared by every reader.
    pub observer: Option<std::sync::Arc<ObserverLog>>,
}

/// Wall-clock now in µs since the epoch: the same clock the server stamps `pt` with.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

impl Shared {
    /// The shared state of a run, with the observer's record when there is an observer.
    pub fn new(observer: Option<std::sync::Arc<ObserverLog>>) -> Shared {
        Shared { observer, ..Shared::default() }
    }

    /// The connection counts so far.
    pub fn connections(&self) -> ConnectionCounts {
        self.count(|c| c.clone())
    }

    /// Updates the connection counts.
    fn count<R>(&self, f: impl FnOnce(&mut ConnectionCounts) -> R) -> R {
        // A panicking client task must not take the counts down with it.
        f(&mut self.connections.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Processes one message of a client connection into the calling worker's statistics:
    /// `kind` as the transport read it (`None`: a v1 object naming its own type). `wire_len` is
    /// its size on the wire (larger than `text` with Socket.IO and SSE).
    fn handle(&self, kind: Option<Kind>, text: &str, wire_len: usize, seq: &mut SeqTracker) -> Event {
        let now = now_us();
        let measuring = self.phase.load(Ordering::Relaxed) == PHASE_MEASURE;
        self.stats.with(|st| {
            st.counters.bytes += wire_len.saturating_sub(text.len()) as u64;
            frame::process_as(kind, text, seq, st, now, measuring)
        })
    }

    /// Housekeeping (Engine.IO pings, SSE comments and `retry:`) counts as frames of another type.
    fn count_control(&self, len: usize) {
        self.count_binary(len);
    }

    fn count_binary(&self, len: usize) {
        self.stats.with(|st| {
            st.counters.frames += 1;
            st.counters.bytes += len as u64;
            st.counters.other_msgs += 1;
        });
    }
}

/// What a client subscribes to.
#[derive(Clone, Debug)]
pub struct SubSpec {
    /// `["*"]` for wildcard.
    pub symbols: Vec<String>,
    pub throttle_ms: Option<u64>,
    pub snapshot: bool,
    /// Aligned delivery (`"align": true`): deliveries on a grid of the throttle.
    pub align: bool,
    /// `"channels"` (`--channels`); `None`: not sent, the server's default (quotes).
    pub channels: Option<Vec<String>>,
    /// SO_RCVBUF for this connection (stalled clients only; `None` = kernel default).
    pub rcvbuf: Option<u32>,
}

#[derive(Serialize)]
struct SubscribeMsg<'a> {
    op: &'static str,
    symbols: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    throttle_ms: Option<u64>,
    snapshot: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    align: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    id: u64,
}

/// The v1 `subscribe` op: `{"op":"subscribe","symbols":[...],"throttle_ms":0,"snapshot":true,"id":1}`
/// (`"channels":[...]` too with `--channels`).
pub fn subscribe_text(spec: &SubSpec, id: u64) -> String {
    let channels = spec.channels.as_deref();
    serde_json::to_string(&SubscribeMsg { op: "subscribe", symbols: &spec.symbols, throttle_ms: spec.throttle_ms, snapshot: spec.snapshot, align: spec.align, channels, id })
        .expect("serialising a plain struct cannot fail")
}

#[derive(Serialize)]
struct SubscribeArg<'a> {
    symbols: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    throttle_ms: Option<u64>,
    snapshot: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    align: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
}

/// The Socket.IO `subscribe` event's argument: the op's fields without `op` and `id`,
/// `{"symbols":[...],"throttle_ms":0,"snapshot":true}`.
pub fn subscribe_payload(spec: &SubSpec) -> String {
    let channels = spec.channels.as_deref();
    serde_json::to_string(&SubscribeArg { symbols: &spec.symbols, throttle_ms: spec.throttle_ms, snapshot: spec.snapshot, align: spec.align, channels })
        .expect("serialising a plain struct cannot fail")
}

/// Subscribes an open connection as `spec` says (see [`Conn::subscribe`]).
async fn subscribe(conn: &mut Conn, spec: &SubSpec) -> Result<()> {
    conn.subscribe(spec).await
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Role {
    /// Reads and checks every frame until the end of the run.
    Reader,
    /// Reads up to `subscribed`, then never again.
    Stalled,
}

/// One client connection from connect to close. Reports its setup outcome by bumping the
/// connected/failed counters and dropping `ready` (the orchestrator waits for all of them).
pub async fn client_task(
    shared: std::sync::Arc<Shared>,
    target: std::sync::Arc<Target>,
    spec: SubSpec,
    role: Role,
    connect_timeout: Duration,
    ready: mpsc::Sender<()>,
    mut shutdown: Shutdown,
) {
    let mut seq = SeqTracker::default();
    seq.throttle_us = spec.throttle_ms.unwrap_or(0) as i64 * 1000;
    seq.observer = shared.observer.clone();
    let setup = timeout(connect_timeout, setup(&shared, &target, &spec, &mut seq)).await;
    let (mut ws, subscribed) = match setup {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return fail(&shared, role, format!("{e:#}"), ready),
        Err(_) => {
            return fail(&shared, role, format!("setup timed out after {connect_timeout:?}"), ready);
        }
    };
    match role {
        Role::Reader => {
            let subscribed = match subscribed {
                Event::Subscribed { symbols, rejected, first_rejected, throttle_ms } => {
                    // The server's word on the throttle it applies beats what we asked for.
                    if let Some(t) = throttle_ms {
                        seq.throttle_us = t as i64 * 1000;
                    }
                    Some((symbols, rejected, first_rejected))
                }
                _ => None,
            };
            shared.count(|c| {
                c.connected += 1;
                if let Some((symbols, rejected, first_rejected)) = subscribed {
                    c.subscribed_symbols += symbols as u64;
                    c.rejected_symbols += rejected as u64;
                    if let Some(r) = first_rejected {
                        keep_example(&mut c.rejected_examples, r);
                    }
                }
            });
        }
        Role::Stalled => shared.count(|c| c.stall_connected += 1),
    }
    drop(ready);

    match role {
        Role::Reader => {
            if !read_loop(&shared, &mut ws, &mut seq, &mut shutdown).await {
                return; // lost the connection; already counted
            }
            let deadline = shutdown_deadline(&shutdown);
            ws.close(deadline, true).await;
        }
        Role::Stalled => {
            // Keep the socket open and unread; the server's problem is what to do about it.
            let _ = shutdown.wait_for(|s| s.is_some()).await;
            let deadline = shutdown_deadline(&shutdown);
            // Don't drain: megabytes may be queued and nobody cares about them. Just say goodbye.
            ws.close(deadline, false).await;
        }
    }
}

fn fail(shared: &Shared, role: Role, msg: String, ready: mpsc::Sender<()>) {
    shared.count(|c| {
        match role {
            Role::Reader => c.failed += 1,
            Role::Stalled => c.stall_failed += 1,
        }
        keep_example(&mut c.connect_errors, msg);
    });
    drop(ready);
}

fn shutdown_deadline(shutdown: &Shutdown) -> Instant {
    shutdown.borrow().unwrap_or_else(|| Instant::now() + Duration::from_secs(2))
}

/// Connect, welcome, subscribe, and read until the `subscribed` ack (returned). Frames before
/// the ack are counted like any other. Over SSE the ack confirms the request's subscription.
async fn setup(shared: &Shared, target: &Target, spec: &SubSpec, seq: &mut SeqTracker) -> Result<(Conn, Event)> {
    let opened = now_us();
    let (mut ws, welcome) = Conn::open(target, spec).await?;
    let _ = shared.welcome.set(welcome);
    // The server anchors an aligned grid when it applies the subscription: the request's URL
    // over SSE, the subscribe message otherwise. Anchoring ours when it was sent puts our ticks
    // no later than the server's, so a tick's lateness is never under-reported.
    if spec.align {
        seq.grid_anchor_us = Some(if ws.protocol == Protocol::Sse { opened } else { now_us() });
    }
    subscribe(&mut ws, spec).await?;
    loop {
        match ws.next().await {
            Some(Ok(Incoming::Text { frame, start, end, wire, kind })) => match shared.handle(kind, &frame[start..end], wire, seq) {
                ev @ Event::Subscribed { .. } => return Ok((ws, ev)),
                Event::Error => bail!("server error instead of subscribed: {}", frame::truncate(&frame, 300)),
                _ => {}
            },
            Some(Ok(Incoming::Binary(n))) => shared.count_binary(n),
            Some(Ok(Incoming::Control(n))) => shared.count_control(n),
            Some(Ok(Incoming::Closed(f))) => {
                bail!("server closed the connection before subscribed: {f}")
            }
            Some(Err(e)) => return Err(e.context("reading subscribed")),
            None => bail!("connection ended before subscribed"),
        }
    }
}

/// Reads until shutdown (returns true) or until the connection is lost (false, counted).
async fn read_loop(shared: &Shared, ws: &mut Conn, seq: &mut SeqTracker, shutdown: &mut Shutdown) -> bool {
    // One pinned future instead of a fresh `changed()` per frame.
    let stop = shutdown.wait_for(|s| s.is_some());
    tokio::pin!(stop);
    // Counted once per client, at its first live quote of the measured period, so the count
    // is complete when the period ends (no need to wait for the tasks to finish).
    let mut delivering = false;
    let lost = loop {
        tokio::select! {
            biased;
            _ = &mut stop => break None,
            msg = ws.next() => match msg {
                Some(Ok(Incoming::Text { frame, start, end, wire, kind })) => {
                    let event = shared.handle(kind, &frame[start..end], wire, seq);
                    if !delivering
                        && matches!(event, Event::Quotes { snapshot: false } | Event::Trades)
                        && shared.phase.load(Ordering::Relaxed) == PHASE_MEASURE
                    {
                        delivering = true;
                        shared.count(|c| c.delivering += 1);
                    }
                }
                Some(Ok(Incoming::Binary(n))) => shared.count_binary(n),
                Some(Ok(Incoming::Control(n))) => shared.count_control(n),
                Some(Ok(Incoming::Closed(f))) => break Some(format!("server closed: {f}")),
                Some(Err(e)) => break Some(format!("read error: {e:#}")),
                None => break Some("connection ended".to_string()),
            },
        }
    };
    match lost {
        None => true,
        Some(reason) => {
            shared.count(|c| {
                c.disconnected += 1;
                keep_example(&mut c.disconnect_reasons, reason);
            });
            false
        }
    }
}

/// The unthrottled observer: subscribes at throttle 0 and records every (symbol, seq, pt) it
/// receives into `log` until shutdown. Its traffic is not counted as client traffic.
pub async fn observer_task(
    target: std::sync::Arc<Target>,
    symbols: Vec<String>,
    log: std::sync::Arc<ObserverLog>,
    connect_timeout: Duration,
    ready: mpsc::Sender<()>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let spec = SubSpec { symbols, throttle_ms: Some(0), snapshot: true, align: false, channels: None, rcvbuf: None };
    let mut ws = timeout(connect_timeout, async {
        let (mut ws, _) = Conn::open(&target, &spec).await?;
        subscribe(&mut ws, &spec).await?;
        anyhow::Ok(ws)
    })
    .await
    .map_err(|_| anyhow!("observer setup timed out"))??;
    drop(ready);
    loop {
        let stop = shutdown.wait_for(|s| s.is_some());
        tokio::select! {
            biased;
            _ = stop => break,
            msg = ws.next() => match msg {
                Some(Ok(Incoming::Text { frame, start, end, kind, .. })) => record_observed(&log, kind, &frame[start..end]),
                Some(Ok(Incoming::Closed(f))) => bail!("observer: server closed: {f}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.context("observer read")),
                None => bail!("observer: connection ended"),
            },
        }
    }
    let deadline = shutdown_deadline(&shutdown);
    ws.close(deadline, true).await;
    Ok(())
}

fn record_observed(log: &ObserverLog, kind: Option<Kind>, text: &str) {
    fn with_seq_pt(q: (&str, Option<u64>, Option<i64>)) -> Option<(&str, u64, i64)> {
        Some((q.0, q.1?, q.2?))
    }
    if let Some(kind) = kind {
        // A Socket.IO event: only `quotes`, whose payload has no `type`.
        if kind != Kind::Quotes {
            return;
        }
        if let Some(f) = crate::scan::scan_quotes_payload(text) {
            let it = f.quotes.iter().filter_map(|q| with_seq_pt((q.symbol, q.seq, q.pt)));
            log.record(f.snapshot, it);
        } else if let Ok(p) = serde_json::from_str::<frame::QuotesPayload>(text) {
            let it = p.quotes.iter().filter_map(|q| with_seq_pt((&q.symbol, q.seq, q.pt)));
            log.record(p.snapshot.unwrap_or(false), it);
        }
        return;
    }
    if let Some(f) = crate::scan::scan_quotes(text) {
        let it = f.quotes.iter().filter_map(|q| with_seq_pt((q.symbol, q.seq, q.pt)));
        log.record(f.snapshot, it);
    } else if let Ok(f) = serde_json::from_str::<frame::Frame>(text)
        && f.kind == "quotes"
    {
        let it = f.quotes.iter().filter_map(|q| with_seq_pt((&q.symbol, q.seq, q.pt)));
        log.record(f.snapshot.unwrap_or(false), it);
    }
}

/// One snapshot probe's timings; `None` where the step was not reached.
#[derive(Debug, Default, Clone)]
pub struct ProbeSample {
    /// TCP connect → welcome received.
    pub welcome: Option<Duration>,
    /// subscribe sent → `subscribed` received.
    pub ack: Option<Duration>,
    /// subscribe sent → first snapshot `quotes` frame received.
    pub snapshot: Option<Duration>,
    /// Live quotes arrived before any snapshot frame (the server sent an empty snapshot).
    pub no_snapshot: bool,
    pub error: Option<String>,
}

/// Opens a fresh connection, subscribes with snapshot and times it; then closes.
pub async fn probe_once(target: &Target, spec: &SubSpec, limit: Duration) -> ProbeSample {
    let mut sample = ProbeSample::default();
    let t0 = Instant::now();
    let deadline = t0 + limit;
    let mut conn: Option<Conn> = None;
    let res = timeout_at(deadline, probe_steps(target, spec, t0, &mut sample, &mut conn)).await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => sample.error = Some(format!("{e:#}")),
        Err(_) => sample.error = Some(format!("timed out after {limit:?}")),
    }
    if let Some(mut ws) = conn {
        ws.close(Instant::now() + Duration::from_millis(500), false).await;
    }
    sample
}

async fn probe_steps(target: &Target, spec: &SubSpec, t0: Instant, sample: &mut ProbeSample, conn: &mut Option<Conn>) -> Result<()> {
    let (ws, _) = Conn::open(target, spec).await?;
    let ws = conn.insert(ws);
    sample.welcome = Some(t0.elapsed());
    // Over SSE the subscription went with the request: the ack and the snapshot are timed from it.
    let t1 = if ws.protocol == Protocol::Sse { t0 } else { Instant::now() };
    subscribe(ws, spec).await?;
    loop {
        let (frame, start, end, kind) = ws.next_text("probe connection").await?;
        let text = &frame[start..end];
        match frame::probe_classify_as(kind, text) {
            ProbeEvent::Subscribed => sample.ack = Some(t1.elapsed()),
            ProbeEvent::SnapshotQuotes => {
                sample.snapshot = Some(t1.elapsed());
                return Ok(());
            }
            ProbeEvent::LiveQuotes => {
                sample.no_snapshot = true;
                return Ok(());
            }
            ProbeEvent::Error => bail!("server error: {}", frame::truncate(text, 300)),
            ProbeEvent::Other => {}
        }
    }
}

/// One --churn connection's outcome.
#[derive(Debug, Default, Clone)]
pub struct ChurnSample {
    /// Connect → snapshot (or `subscribed` when no snapshot was asked for); `None` on failure.
    pub setup: Option<Duration>,
    pub error: Option<String>,
    /// The close handshake completed in time (meaningful for successful ones only).
    pub clean_close: bool,
}

/// How long a churn connection waits for the server's close frame after its own.
const CHURN_CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// A short-lived client: connect, subscribe like the steady clients, wait for `subscribed`
/// and (when asked for) the snapshot, then close with a full close handshake, so the server
/// goes through its normal session teardown rather than a reset. (An SSE stream has no close
/// handshake: it is dropped, as a browser's `EventSource.close()` drops it.)
pub async fn churn_once(target: &Target, spec: &SubSpec, limit: Duration) -> ChurnSample {
    let t0 = Instant::now();
    let mut conn: Option<Conn> = None;
    let res = timeout_at(t0 + limit, churn_steps(target, spec, &mut conn)).await;
    let mut sample = ChurnSample::default();
    match res {
        Ok(Ok(())) => sample.setup = Some(t0.elapsed()),
        Ok(Err(e)) => sample.error = Some(format!("{e:#}")),
        Err(_) => sample.error = Some(format!("timed out after {limit:?}")),
    }
    if let Some(mut ws) = conn {
        let deadline = Instant::now() + CHURN_CLOSE_LIMIT;
        sample.clean_close = ws.close_handshake(deadline).await;
    }
    sample
}

async fn churn_steps(target: &Target, spec: &SubSpec, conn: &mut Option<Conn>) -> Result<()> {
    let (ws, _) = Conn::open(target, spec).await?;
    let ws = conn.insert(ws);
    subscribe(ws, spec).await?;
    let mut acked = false;
    loop {
        let (frame, start, end, kind) = ws.next_text("connection").await?;
        let text = &frame[start..end];
        match frame::probe_classify_as(kind, text) {
            ProbeEvent::Subscribed if !spec.snapshot => return Ok(()),
            ProbeEvent::Subscribed => acked = true,
            // A live frame first means the server had nothing to snapshot: still served.
            ProbeEvent::SnapshotQuotes | ProbeEvent::LiveQuotes if acked => return Ok(()),
            ProbeEvent::Error => bail!("server error reply: {}", frame::truncate(text, 300)),
            _ => {}
        }
    }
}

/// The kind of a churn failure, from its message (the report counts failures by kind).
pub fn failure_kind(message: &str) -> &'static str {
    if message.starts_with("timed out") {
        "timeout"
    } else if message.starts_with("TCP connect") {
        "connect"
    } else if message.starts_with("WebSocket handshake") || message.contains("SSE request refused") {
        "handshake"
    } else if message.contains("server error reply") {
        "error_reply"
    } else if message.contains("closed") || message.contains("connection ended") {
        "closed"
    } else if message.starts_with("still running") {
        "unfinished"
    } else {
        "other"
    }
}
