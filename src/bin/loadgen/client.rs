//! The connections: reading clients, stalled clients and snapshot probes.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::frame::{self, Event, ProbeEvent, SeqTracker, Welcome};
use crate::net::{self, Target, Ws};
use crate::stats::StatsRegistry;

/// Run phases (0, the default, is setup and warm-up); latency is recorded only in `MEASURE`.
pub const PHASE_MEASURE: u8 = 1;
pub const PHASE_DONE: u8 = 2;

/// How many example error messages to keep for the report.
const MAX_EXAMPLES: usize = 5;

/// `None` while running; `Some(deadline)` = close now, and be gone by the deadline.
pub type Shutdown = watch::Receiver<Option<Instant>>;

/// Everything the connection tasks share with the orchestrator.
#[derive(Default)]
pub struct Shared {
    pub stats: StatsRegistry,
    pub phase: AtomicU8,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub stall_connected: AtomicU64,
    pub stall_failed: AtomicU64,
    /// Reading clients that lost their connection before the end of the run.
    pub disconnects: AtomicU64,
    /// Symbols acknowledged / rejected in `subscribed`, summed over reading clients.
    pub subscribed_symbols: AtomicU64,
    pub rejected_symbols: AtomicU64,
    pub welcome: OnceLock<Welcome>,
    pub connect_errors: Mutex<Vec<String>>,
    pub disconnect_reasons: Mutex<Vec<String>>,
    pub rejected_examples: Mutex<Vec<String>>,
}

fn keep_example(list: &Mutex<Vec<String>>, msg: String) {
    let mut l = list.lock().unwrap_or_else(|e| e.into_inner());
    if l.len() < MAX_EXAMPLES {
        l.push(msg);
    }
}

/// Wall-clock now in µs since the epoch: the same clock the server stamps `pt` with.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Shared {
    /// Processes one text frame of a client connection into the calling worker's statistics.
    fn handle(&self, text: &str, seq: &mut SeqTracker) -> Event {
        let now = now_us();
        let measuring = self.phase.load(Ordering::Relaxed) == PHASE_MEASURE;
        self.stats
            .with(|st| frame::process(text, seq, st, now, measuring))
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
    id: u64,
}

pub fn subscribe_text(spec: &SubSpec, id: u64) -> String {
    serde_json::to_string(&SubscribeMsg {
        op: "subscribe",
        symbols: &spec.symbols,
        throttle_ms: spec.throttle_ms,
        snapshot: spec.snapshot,
        id,
    })
    .expect("serialising a plain struct cannot fail")
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
    let setup = timeout(connect_timeout, setup(&shared, &target, &spec, &mut seq)).await;
    let (mut ws, subscribed) = match setup {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return fail(&shared, role, format!("{e:#}"), ready),
        Err(_) => {
            return fail(
                &shared,
                role,
                format!("setup timed out after {connect_timeout:?}"),
                ready,
            );
        }
    };
    match role {
        Role::Reader => {
            shared.connected.fetch_add(1, Ordering::Relaxed);
            if let Event::Subscribed {
                symbols,
                rejected,
                first_rejected,
            } = subscribed
            {
                shared
                    .subscribed_symbols
                    .fetch_add(symbols as u64, Ordering::Relaxed);
                shared
                    .rejected_symbols
                    .fetch_add(rejected as u64, Ordering::Relaxed);
                if let Some(r) = first_rejected {
                    keep_example(&shared.rejected_examples, r);
                }
            }
        }
        Role::Stalled => {
            shared.stall_connected.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(ready);

    match role {
        Role::Reader => {
            if !read_loop(&shared, &mut ws, &mut seq, &mut shutdown).await {
                return; // lost the connection; already counted
            }
            let deadline = shutdown_deadline(&shutdown);
            close(&mut ws, deadline, true).await;
        }
        Role::Stalled => {
            // Keep the socket open and unread; the server's problem is what to do about it.
            let _ = shutdown.wait_for(|s| s.is_some()).await;
            let deadline = shutdown_deadline(&shutdown);
            // Don't drain: megabytes may be queued and nobody cares about them. Just say goodbye.
            close(&mut ws, deadline, false).await;
        }
    }
}

fn fail(shared: &Shared, role: Role, msg: String, ready: mpsc::Sender<()>) {
    match role {
        Role::Reader => shared.failed.fetch_add(1, Ordering::Relaxed),
        Role::Stalled => shared.stall_failed.fetch_add(1, Ordering::Relaxed),
    };
    keep_example(&shared.connect_errors, msg);
    drop(ready);
}

fn shutdown_deadline(shutdown: &Shutdown) -> Instant {
    shutdown
        .borrow()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(2))
}

/// Connect, welcome, subscribe, and read until the `subscribed` ack (returned). Frames before
/// the ack are counted like any other.
async fn setup(
    shared: &Shared,
    target: &Target,
    spec: &SubSpec,
    seq: &mut SeqTracker,
) -> Result<(Ws, Event)> {
    let mut ws = net::connect(target, spec.rcvbuf).await?;
    let welcome = net::read_welcome(&mut ws).await?;
    let _ = shared.welcome.set(welcome);
    ws.send(Message::text(subscribe_text(spec, 1))).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match shared.handle(&t, seq) {
                ev @ Event::Subscribed { .. } => return Ok((ws, ev)),
                Event::Error => bail!(
                    "server error instead of subscribed: {}",
                    frame::truncate(&t, 300)
                ),
                _ => {}
            },
            Some(Ok(Message::Binary(b))) => shared.count_binary(b.len()),
            Some(Ok(Message::Close(f))) => {
                bail!("server closed the connection before subscribed: {f:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(anyhow!(e).context("reading subscribed")),
            None => bail!("connection ended before subscribed"),
        }
    }
}

/// Reads until shutdown (returns true) or until the connection is lost (false, counted).
async fn read_loop(
    shared: &Shared,
    ws: &mut Ws,
    seq: &mut SeqTracker,
    shutdown: &mut Shutdown,
) -> bool {
    // One pinned future instead of a fresh `changed()` per frame.
    let stop = shutdown.wait_for(|s| s.is_some());
    tokio::pin!(stop);
    let lost = loop {
        tokio::select! {
            biased;
            _ = &mut stop => break None,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => { shared.handle(&t, seq); }
                Some(Ok(Message::Binary(b))) => shared.count_binary(b.len()),
                Some(Ok(Message::Close(f))) => break Some(format!("server closed: {f:?}")),
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(e)) => break Some(format!("read error: {e}")),
                None => break Some("connection ended".to_string()),
            },
        }
    };
    match lost {
        None => true,
        Some(reason) => {
            shared.disconnects.fetch_add(1, Ordering::Relaxed);
            keep_example(&shared.disconnect_reasons, reason);
            false
        }
    }
}

/// Close handshake, bounded by `deadline`. With `drain`, reads (and discards) until the
/// server's close frame so it sees a clean close rather than a reset.
async fn close(ws: &mut Ws, deadline: Instant, drain: bool) {
    if timeout_at(deadline, ws.close(None)).await.is_err() || !drain {
        return;
    }
    let _ = timeout_at(deadline, async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
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
    let mut conn: Option<Ws> = None;
    let res = timeout_at(
        deadline,
        probe_steps(target, spec, t0, &mut sample, &mut conn),
    )
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => sample.error = Some(format!("{e:#}")),
        Err(_) => sample.error = Some(format!("timed out after {limit:?}")),
    }
    if let Some(mut ws) = conn {
        close(&mut ws, Instant::now() + Duration::from_millis(500), false).await;
    }
    sample
}

async fn probe_steps(
    target: &Target,
    spec: &SubSpec,
    t0: Instant,
    sample: &mut ProbeSample,
    conn: &mut Option<Ws>,
) -> Result<()> {
    let ws = conn.insert(net::connect(target, None).await?);
    net::read_welcome(ws).await?;
    sample.welcome = Some(t0.elapsed());
    let t1 = Instant::now();
    ws.send(Message::text(subscribe_text(spec, 1))).await?;
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => bail!("server closed the probe: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(anyhow!(e)),
            None => bail!("probe connection ended"),
        };
        match frame::probe_classify(&text) {
            ProbeEvent::Subscribed => sample.ack = Some(t1.elapsed()),
            ProbeEvent::SnapshotQuotes => {
                sample.snapshot = Some(t1.elapsed());
                return Ok(());
            }
            ProbeEvent::LiveQuotes => {
                sample.no_snapshot = true;
                return Ok(());
            }
            ProbeEvent::Error => bail!("server error: {}", frame::truncate(&text, 300)),
            ProbeEvent::Other => {}
        }
    }
}
