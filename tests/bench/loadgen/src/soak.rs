//! `loadgen soak`: many clients for a long time, with churn and slow readers, while the server's
//! resources are sampled; the verdict is whether they stay flat and come back after.
//!
//! Every one of `--clients` slots is a task that keeps one client alive for the whole run,
//! reconnecting whenever its connection ends. A slot has a transport — `/ws` (most), `/sse`,
//! Socket.IO over WebSocket, Socket.IO long-polling — and a behaviour:
//! - **steady**: reads everything until the end;
//! - **churn**: reads for a random lifetime, then leaves (a clean close, or now and then an
//!   abrupt drop; a polling client either sends Engine.IO `1` or simply stops polling) and
//!   reconnects with a new random subscription (1–20 symbols or `*`, throttle 0 to 1 s);
//! - **slow**: reads one message every `--slow-read-ms`, so its socket is mostly full;
//! - **stall**: subscribes to `*` at throttle 0 with a small receive buffer and stops reading,
//!   so the server's slow-consumer rule must close it; after `--stall-for` seconds it reads
//!   again to see the close, counts it, and reconnects.
//!
//! A sampler reads, every `--sample-interval` seconds, the server's RSS (VmRSS in
//! /proc/PID/status), its open descriptors (/proc/PID/fd) and every
//! `tickerfeed_client_map_entries{map}` series of /metrics: first a baseline before any client
//! connects, then through the run, then after every client has left. The verdict:
//! - **flat**: after `--warmup`, the median of the last third of the samples is within
//!   `--tolerance-pct` (plus a small absolute slack) of the median of the first third, for RSS,
//!   descriptors and every map. Medians of thirds, because churn and the stall cycles make single
//!   samples jump; one-sided, because only growth is a leak. A leak of one entry (or a few bytes)
//!   per connection grows with the tens of thousands of reconnections, far past the tolerance.
//! - **back to baseline**: once every client has left (and the server's connection count says
//!   so), every map is back at its baseline value exactly, descriptors within `--fd-slack` of
//!   theirs, and RSS at most the run's peak and at most `--rss-after-mib` above its baseline
//!   (the allocator keeps some freed memory: the tolerance is measured, see tests/soak/README.md).
//!
//! Output: `soak.json` (configuration, samples, figures, checks) and `summary.txt` in `--out`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use crate::cli::Protocol;
use crate::client::SubSpec;
use crate::net::{self, Conn, Incoming, Target};
use crate::symbols::{Popularity, Rng, SymbolChooser};

/// `loadgen soak`: clients with churn and slow readers for a long time; the server's RSS,
/// descriptors and client maps sampled and judged (flat during, back to baseline after).
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "loadgen soak", about, long_about, max_term_width = 100)]
pub struct SoakArgs {
    /// The server's /ws endpoint; /sse, /socket.io/ and /metrics are on the same host and port.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// The server's process, for RSS and descriptors.
    #[arg(long, value_name = "PID")]
    pub server_pid: u32,
    /// Concurrent clients (slots, each reconnecting whenever its connection ends).
    #[arg(long, default_value_t = 2000)]
    pub clients: usize,
    /// Length of the run, seconds, from the first connection to the last disconnect.
    #[arg(long, default_value_t = 1800.0, value_name = "SECS")]
    pub duration: f64,
    /// Seconds after the ramp before samples count for the flatness check. Default: 900 for a
    /// run of 30 minutes or more, else a quarter of the duration. Why 900: the server's price
    /// history (one-second bars of wall time) fills during its first 15 minutes, about 6 MiB
    /// for the default 100 symbols that have nothing to do with clients; a shorter run's RSS
    /// grows by that (~0.4 MiB a minute) well within the tolerance.
    #[arg(long, value_name = "SECS")]
    pub warmup: Option<f64>,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub sample_interval: f64,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 400.0)]
    pub connect_rate: f64,
    /// Fraction of clients on /sse.
    #[arg(long, default_value_t = 0.10)]
    pub sse_fraction: f64,
    /// Fraction of clients on Socket.IO over WebSocket.
    #[arg(long, default_value_t = 0.10)]
    pub socketio_fraction: f64,
    /// Fraction of clients on Socket.IO long-polling.
    #[arg(long, default_value_t = 0.03)]
    pub polling_fraction: f64,
    /// Fraction of clients that leave after a random lifetime and reconnect.
    #[arg(long, default_value_t = 0.30)]
    pub churn_fraction: f64,
    /// Shortest and longest lifetime of a churning connection, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub lifetime_min: f64,
    #[arg(long, default_value_t = 30.0)]
    pub lifetime_max: f64,
    /// Fraction of clients that read one message every --slow-read-ms.
    #[arg(long, default_value_t = 0.05)]
    pub slow_fraction: f64,
    #[arg(long, default_value_t = 250)]
    pub slow_read_ms: u64,
    /// Fraction of clients that stop reading (the server must close them as slow consumers).
    #[arg(long, default_value_t = 0.03)]
    pub stall_fraction: f64,
    /// Seconds a stalled WebSocket client reads nothing before it looks for the server's close:
    /// more than the server's --slow-consumer-timeout (30 s, checked every 3.75 s) plus its one
    /// second to drop the socket, and less than the idle timeout (45 s), which would close it
    /// anyway. A stalled /sse client, which no idle timeout closes, waits 20 s more: its
    /// buffers may take a while to fill while the machine is busy.
    #[arg(long, default_value_t = 40.0)]
    pub stall_for: f64,
    /// Stalled connections still open when they look again, at most this percentage.
    #[arg(long, default_value_t = 1)]
    pub stall_survivors_max_pct: u64,
    /// Flatness: the last third's median may exceed the first third's by this much (percent).
    #[arg(long, default_value_t = 10.0)]
    pub tolerance_pct: f64,
    /// After all disconnect: RSS at most this many KiB per client above its baseline. The
    /// allocator (glibc's malloc) keeps what the clients' sessions freed for reuse rather than
    /// giving it back: the 2-minute run measured 23 KiB per client still resident after all
    /// left (98% of the peak), so the bound is about a third above that.
    #[arg(long, default_value_t = 32.0)]
    pub rss_after_kib_per_client: f64,
    /// After all disconnect: descriptors at most this many above their baseline.
    #[arg(long, default_value_t = 4)]
    pub fd_slack: usize,
    /// Seconds to wait for the server to see every client gone.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// Where soak.json and summary.txt go.
    #[arg(long, default_value = "tests/artifacts/soak")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl SoakArgs {
    fn validate(&self) -> Result<()> {
        let fractions = [self.sse_fraction, self.socketio_fraction, self.polling_fraction, self.churn_fraction, self.slow_fraction, self.stall_fraction];
        if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
            bail!("every --…-fraction must be between 0 and 1");
        }
        if self.sse_fraction + self.socketio_fraction + self.polling_fraction > 1.0 {
            bail!("--sse-fraction + --socketio-fraction + --polling-fraction must be at most 1");
        }
        if self.churn_fraction + self.slow_fraction + self.stall_fraction > 1.0 {
            bail!("--churn-fraction + --slow-fraction + --stall-fraction must be at most 1");
        }
        if !(self.duration > 0.0 && self.sample_interval > 0.0 && self.connect_rate > 0.0) {
            bail!("--duration, --sample-interval and --connect-rate must be > 0");
        }
        if !(self.lifetime_min > 0.0 && self.lifetime_max >= self.lifetime_min) {
            bail!("--lifetime-min must be > 0 and at most --lifetime-max");
        }
        if self.clients == 0 || self.threads == 0 {
            bail!("--clients and --threads must be >= 1");
        }
        Ok(())
    }

    fn warmup_s(&self) -> f64 {
        self.warmup.unwrap_or(if self.duration >= 1800.0 { 900.0 } else { self.duration / 4.0 })
    }
}

/// Entry point of `loadgen soak ARGS`: exit 0 when every check passed, 1 when one failed.
pub fn main(args: impl Iterator<Item = String>) -> Result<bool> {
    let args = SoakArgs::parse_from(args);
    args.validate()?;
    crate::sys::raise_nofile_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).thread_name("soak-worker").enable_all().build().context("building the tokio runtime")?;
    let ok = runtime.block_on(run(args))?;
    runtime.shutdown_background();
    Ok(ok)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Transport {
    Ws,
    Sse,
    SocketioWs,
    SocketioPolling,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Behaviour {
    Steady,
    Churn,
    Slow,
    Stall,
}

/// What the clients did, counted as they go.
#[derive(Default)]
struct Counts {
    /// Connections open now, as the clients see them.
    open: AtomicI64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    /// Left by the client: a clean close, or an abrupt drop.
    client_closes: AtomicU64,
    client_drops: AtomicU64,
    /// Polling sessions abandoned without a close (the server must expire them).
    polling_abandoned: AtomicU64,
    /// Stalled connections the server closed, and those still open when looked at again.
    stall_closed_by_server: AtomicU64,
    stall_survived: AtomicU64,
    /// Connections of reading clients that the server ended.
    server_closed_readers: AtomicU64,
    messages: AtomicU64,
    failure_examples: std::sync::Mutex<Vec<String>>,
}

impl Counts {
    fn failed(&self, why: String) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        crate::stats::keep_example(&mut self.failure_examples.lock().unwrap_or_else(|e| e.into_inner()), why);
    }
}

/// One sample of the server.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    /// Seconds since the soak started.
    t: f64,
    phase: &'static str,
    rss_bytes: u64,
    fds: usize,
    /// `tickerfeed_client_map_entries{map}` by map.
    maps: BTreeMap<String, i64>,
    /// Connections open as the clients count them.
    clients_open: i64,
    /// Server counters: connections opened (all transports), slow-consumer disconnects.
    opened_total: u64,
    slow_consumer_closes: u64,
    /// Server counter: connections ended, by reason (`tickerfeed_disconnects_total`).
    disconnects: BTreeMap<String, u64>,
}

/// Settings common to every client task.
struct Plan {
    target: Target,
    sse_target: Target,
    sio_target: Target,
    chooser: SymbolChooser,
    args: SoakArgs,
    counts: Counts,
}

async fn run(args: SoakArgs) -> Result<bool> {
    let started = Instant::now();
    let target = Target::resolve(&args.url, 32 * 1024, Protocol::V1).await?;
    let sse_target = Target::resolve(&args.url, 32 * 1024, Protocol::Sse).await?;
    let sio_target = Target::resolve(&args.url, 32 * 1024, Protocol::Socketio).await?;
    let universe = net::fetch_symbols(&target, Duration::from_secs(10)).await?;
    if universe.is_empty() {
        bail!("the server publishes no symbol");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let plan = Arc::new(Plan { target, sse_target, sio_target, chooser: SymbolChooser::new(universe, Popularity::Uniform), args: args.clone(), counts: Counts::default() });
    let interval = Duration::from_secs_f64(args.sample_interval);
    let mut samples: Vec<Sample> = Vec::new();

    // Baseline: the server as it is before any client, three samples a second apart.
    for _ in 0..3 {
        samples.push(sample(&plan, started, "baseline").await?);
        sleep(Duration::from_secs(1)).await;
    }
    let baseline = samples.last().cloned().expect("three baseline samples");
    eprintln!("soak: baseline RSS {:.1} MiB, {} fds, maps {:?}", mib(baseline.rss_bytes), baseline.fds, baseline.maps);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(args.clients);
    let roles = assign_roles(&args);
    let ramp_start = Instant::now();
    for (index, (transport, behaviour)) in roles.iter().copied().enumerate() {
        let start_at = ramp_start + Duration::from_secs_f64(index as f64 / args.connect_rate);
        tasks.push(tokio::spawn(slot(plan.clone(), index, transport, behaviour, start_at, stop_rx.clone())));
    }
    let run_end = started + Duration::from_secs_f64(args.duration);
    let ramp_s = args.clients as f64 / args.connect_rate;
    let mut next = Instant::now() + interval;
    while Instant::now() < run_end {
        tokio::time::sleep_until(next.min(run_end)).await;
        next += interval;
        let phase = if started.elapsed().as_secs_f64() < 3.0 + ramp_s { "ramp" } else { "run" };
        let s = sample(&plan, started, phase).await?;
        eprintln!(
            "soak: t={:>6.0}s clients {:>5} RSS {:>6.1} MiB fds {:>5} connections {:>5} sids {:>3} registrations {:>6} opened {:>7} slow-consumer closes {:>5}",
            s.t,
            s.clients_open,
            mib(s.rss_bytes),
            s.fds,
            s.maps.get("connections").copied().unwrap_or(-1),
            s.maps.get("socketio_sids").copied().unwrap_or(-1),
            s.maps.get("bus_registrations").copied().unwrap_or(-1),
            s.opened_total,
            s.slow_consumer_closes
        );
        samples.push(s);
    }

    // Everyone leaves; then wait for the server to see them gone.
    let _ = stop_tx.send(true);
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    for mut task in tasks {
        if tokio::time::timeout_at(stop_deadline, &mut task).await.is_err() {
            // Dropping its connection is leaving too.
            task.abort();
        }
    }
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    let mut drained = false;
    while Instant::now() < drain_deadline {
        let s = sample(&plan, started, "drain").await?;
        let done = s.maps.iter().all(|(map, n)| baseline.maps.get(map) == Some(n));
        samples.push(s);
        if done {
            drained = true;
            break;
        }
        sleep(Duration::from_secs(1)).await;
    }
    // Let timers and the allocator settle, then three samples a second apart.
    sleep(Duration::from_secs(5)).await;
    for _ in 0..3 {
        samples.push(sample(&plan, started, "after").await?);
        sleep(Duration::from_secs(1)).await;
    }
    let report = judge(&args, &plan.counts, samples, drained);
    let text = report.summary();
    eprint!("{text}");
    std::fs::write(args.out.join("summary.txt"), &text)?;
    std::fs::write(args.out.join("soak.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(report.ok)
}

/// Each slot's transport and behaviour, spread evenly over the slots (every k-th slot), so
/// that the ramp mixes them and a short run has some of each.
fn assign_roles(args: &SoakArgs) -> Vec<(Transport, Behaviour)> {
    let pick = |index: usize, salt: u64, shares: &[f64]| -> usize {
        // A fixed permutation per salt: the same role whatever --clients is.
        let u = (Rng::derive(args.seed ^ salt, index as u64).next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for (i, share) in shares.iter().enumerate() {
            acc += share;
            if u < acc {
                return i;
            }
        }
        shares.len()
    };
    (0..args.clients)
        .map(|i| {
            let transport = match pick(i, 0x7a, &[args.sse_fraction, args.socketio_fraction, args.polling_fraction]) {
                0 => Transport::Sse,
                1 => Transport::SocketioWs,
                2 => Transport::SocketioPolling,
                _ => Transport::Ws,
            };
            let behaviour = match pick(i, 0xbe, &[args.churn_fraction, args.slow_fraction, args.stall_fraction]) {
                0 => Behaviour::Churn,
                1 => Behaviour::Slow,
                2 => Behaviour::Stall,
                _ => Behaviour::Steady,
            };
            // A polling client that stops polling is one that leaves without a word: churn.
            let behaviour = if transport == Transport::SocketioPolling && behaviour != Behaviour::Steady { Behaviour::Churn } else { behaviour };
            (transport, behaviour)
        })
        .collect()
}

/// A random subscription: 1–20 symbols or `*` (one in ten), throttle 0, 100, 250 or 1000 ms
/// (`*` at 500 or 1000, so that the wildcard clients do not swamp the load generator). A
/// stalled client takes `*` at 0 with a 4 KiB receive buffer: its buffers fill in a second.
fn subscription(plan: &Plan, rng: &mut Rng, behaviour: Behaviour) -> SubSpec {
    if behaviour == Behaviour::Stall {
        return SubSpec { symbols: vec!["*".into()], throttle_ms: Some(0), snapshot: true, align: false, channels: None, rcvbuf: Some(4096) };
    }
    if rng.below(10) == 0 {
        return SubSpec { symbols: vec!["*".into()], throttle_ms: Some([500, 1000][rng.below(2)]), snapshot: true, align: false, channels: None, rcvbuf: None };
    }
    let throttle = [0, 100, 250, 250, 1000][rng.below(5)];
    // Unthrottled clients take few symbols (each symbol changes ~10 times a second).
    let most = if throttle == 0 { 5 } else { 20 };
    let k = 1 + rng.below(most.min(plan.chooser.len()));
    SubSpec { symbols: plan.chooser.choose(rng, k), throttle_ms: Some(throttle), snapshot: true, align: false, channels: None, rcvbuf: None }
}

/// One client slot: connects, behaves, reconnects, until the stop.
async fn slot(plan: Arc<Plan>, index: usize, transport: Transport, behaviour: Behaviour, start_at: Instant, mut stop: watch::Receiver<bool>) {
    tokio::time::sleep_until(start_at).await;
    let mut rng = Rng::derive(plan.args.seed, 1_000_000 + index as u64);
    while !*stop.borrow() {
        let spec = subscription(&plan, &mut rng, behaviour);
        let lifetime = match behaviour {
            Behaviour::Churn => Some(plan.args.lifetime_min + (plan.args.lifetime_max - plan.args.lifetime_min) * rng.unit_open0()),
            _ => None,
        };
        // Now and then a churning client drops its connection instead of closing it.
        let abrupt = rng.below(4) == 0;
        let outcome = match transport {
            Transport::SocketioPolling => polling_client(&plan, &spec, lifetime, abrupt, &mut stop).await,
            _ => stream_client(&plan, transport, behaviour, &spec, lifetime, abrupt, &mut stop).await,
        };
        if let Err(e) = outcome {
            plan.counts.failed(format!("{transport:?}: {e:#}"));
            // Back off a little, so that a refusing server is not hammered.
            let _ = timeout(Duration::from_secs(1), stopped(&mut stop)).await;
        }
    }
}

/// A WebSocket or SSE client's one connection: `Ok` when it ended as planned (or the server
/// closed it), `Err` when it could not connect.
async fn stream_client(
    plan: &Plan,
    transport: Transport,
    behaviour: Behaviour,
    spec: &SubSpec,
    lifetime: Option<f64>,
    abrupt: bool,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let counts = &plan.counts;
    let target = match transport {
        Transport::Sse => &plan.sse_target,
        Transport::SocketioWs => &plan.sio_target,
        _ => &plan.target,
    };
    let mut conn = timeout(Duration::from_secs(10), async {
        let (mut conn, _welcome) = Conn::open(target, spec).await?;
        conn.subscribe(spec).await?;
        anyhow::Ok(conn)
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
    counts.connects.fetch_add(1, Ordering::Relaxed);
    counts.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&counts.open);

    if behaviour == Behaviour::Stall {
        // Read nothing until the server must have closed it, then read to see that it did.
        let stall_for = plan.args.stall_for + if transport == Transport::Sse { 20.0 } else { 0.0 };
        tokio::select! {
            _ = sleep(Duration::from_secs_f64(stall_for)) => {}
            _ = stopped(stop) => return Ok(()),
        }
        let mut read = 0u64;
        let ended = timeout(Duration::from_secs(15), async {
            loop {
                match conn.next().await {
                    Some(Ok(Incoming::Closed(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => read += 1,
                }
            }
        })
        .await;
        if ended.is_ok() {
            counts.stall_closed_by_server.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.stall_survived.fetch_add(1, Ordering::Relaxed);
            let example = format!("stalled {transport:?} client still open {stall_for} s after it stopped reading ({read} messages read in the next 15 s)");
            crate::stats::keep_example(&mut counts.failure_examples.lock().unwrap_or_else(|e| e.into_inner()), example);
        }
        return Ok(());
    }

    let until = lifetime.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let pause = (behaviour == Behaviour::Slow).then(|| Duration::from_millis(plan.args.slow_read_ms));
    loop {
        let leave = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped(stop) => {
                conn.close(Instant::now() + Duration::from_secs(2), true).await;
                counts.client_closes.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            _ = leave => {
                if abrupt {
                    counts.client_drops.fetch_add(1, Ordering::Relaxed);
                } else {
                    conn.close(Instant::now() + Duration::from_secs(2), true).await;
                    counts.client_closes.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            message = conn.next() => match message {
                Some(Ok(Incoming::Closed(_))) | Some(Err(_)) | None => {
                    counts.server_closed_readers.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Some(Ok(_)) => {
                    counts.messages.fetch_add(1, Ordering::Relaxed);
                    if let Some(pause) = pause {
                        tokio::select! {
                            _ = sleep(pause) => {}
                            _ = stopped(stop) => {}
                        }
                    }
                }
            }
        }
    }
}

/// Resolves once the soak stops (at once if it has): unlike `changed`, whatever was seen
/// before, so every wait of a client ends at the stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps [`Counts::open`] right however a connection ends.
struct OpenGuard<'a>(&'a AtomicI64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A Socket.IO long-polling client's one session: the handshake (subscribing in its query, as
/// `/ws?symbols=` does), CONNECT, then polls, answering pings, until its lifetime or the stop.
/// It leaves with Engine.IO `1`, or (`abandon`) by simply no longer polling.
async fn polling_client(plan: &Plan, spec: &SubSpec, lifetime: Option<f64>, abandon: bool, stop: &mut watch::Receiver<bool>) -> Result<()> {
    let counts = &plan.counts;
    let target = &plan.target;
    let mut query = format!("EIO=4&transport=polling&symbols={}", spec.symbols.join(",").replace('*', "%2A"));
    if let Some(t) = spec.throttle_ms {
        query.push_str(&format!("&throttle_ms={t}"));
    }
    let open = timeout(Duration::from_secs(10), http(target, "GET", &format!("/socket.io/?{query}"), None)).await.map_err(|_| anyhow::anyhow!("timed out in the handshake"))??;
    let sid = open
        .strip_prefix('0')
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("Engine.IO handshake: no open packet in {}", crate::frame::truncate(&open, 100)))?;
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    http(target, "POST", &path, Some("40")).await?;
    counts.connects.fetch_add(1, Ordering::Relaxed);
    counts.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&counts.open);
    let until = lifetime.map(|s| Instant::now() + Duration::from_secs_f64(s));
    loop {
        let leave = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stopping = tokio::select! {
            _ = stopped(stop) => true,
            _ = leave => false,
            answer = http(target, "GET", &path, None) => {
                let Ok(body) = answer else {
                    counts.server_closed_readers.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                };
                for packet in body.split('\u{1e}') {
                    match packet.as_bytes().first() {
                        Some(b'2') => { http(target, "POST", &path, Some("3")).await.ok(); }
                        Some(b'1') => {
                            counts.server_closed_readers.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        Some(b'4') => { counts.messages.fetch_add(1, Ordering::Relaxed); }
                        _ => {}
                    }
                }
                continue;
            }
        };
        if abandon && !stopping {
            counts.polling_abandoned.fetch_add(1, Ordering::Relaxed);
        } else {
            // The pending poll (dropped above) may still be with the server; the close ends it.
            http(target, "POST", &path, Some("1")).await.ok();
            counts.client_closes.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`); the body of a 2xx answer.
async fn http(target: &Target, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    let mut stream = TcpStream::connect(target.addr).await.with_context(|| format!("TCP connect to {}", target.addr))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nUser-Agent: tickerfeed-loadgen-soak\r\nConnection: close\r\n\r\n{body}",
        target.authority,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let body = net::parse_http_response(&buf).with_context(|| format!("{method} {path}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The server now: RSS, descriptors, the client maps and two counters from /metrics.
async fn sample(plan: &Plan, started: Instant, phase: &'static str) -> Result<Sample> {
    let pid = plan.args.server_pid;
    let rss_bytes = crate::sys::vm_rss_bytes(pid).with_context(|| format!("reading the RSS of the server (pid {pid}): is it still running?"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("listing /proc/{pid}/fd"))?.count();
    let text = timeout(Duration::from_secs(10), net::http_get(&plan.target, "/metrics")).await.context("GET /metrics timed out")??;
    let text = String::from_utf8_lossy(&text);
    let scrape = Scrape::parse(&text);
    if scrape.maps.is_empty() {
        bail!("/metrics has no tickerfeed_client_map_entries series: is this server older than the soak?");
    }
    Ok(Sample {
        t: started.elapsed().as_secs_f64(),
        phase,
        rss_bytes,
        fds,
        maps: scrape.maps,
        clients_open: plan.counts.open.load(Ordering::Relaxed),
        opened_total: scrape.opened_total,
        slow_consumer_closes: scrape.slow_consumer_closes,
        disconnects: scrape.disconnects,
    })
}

/// What the soak reads from a scrape.
#[derive(Debug, Default, PartialEq)]
struct Scrape {
    maps: BTreeMap<String, i64>,
    opened_total: u64,
    slow_consumer_closes: u64,
    disconnects: BTreeMap<String, u64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            if let Some(map) = series.strip_prefix("tickerfeed_client_map_entries{map=\"").and_then(|r| r.strip_suffix("\"}")) {
                scrape.maps.insert(map.to_string(), value as i64);
            } else if series.starts_with("tickerfeed_connections_opened_total{") {
                scrape.opened_total += value as u64;
            } else if let Some(reason) = series.strip_prefix("tickerfeed_disconnects_total{reason=\"").and_then(|r| r.strip_suffix("\"}")) {
                scrape.disconnects.insert(reason.to_string(), value as u64);
                if reason == "slow_consumer" {
                    scrape.slow_consumer_closes = value as u64;
                }
            }
        }
        scrape
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One series' figures and checks.
#[derive(Debug, Serialize)]
struct SeriesVerdict {
    name: String,
    baseline: f64,
    peak: f64,
    /// Medians of the first and last thirds of the window after warm-up.
    first_third: f64,
    last_third: f64,
    /// The last run sample.
    end_of_run: f64,
    /// After every client left (median of the last three samples).
    after: f64,
    /// Least-squares growth over the window, per hour.
    slope_per_hour: f64,
    flat: bool,
    back_to_baseline: bool,
    /// What "back to baseline" meant for this series.
    rule: String,
}

#[derive(Debug, Serialize)]
struct SoakReport {
    ok: bool,
    config: SoakArgs,
    warmup_s: f64,
    drained: bool,
    series: Vec<SeriesVerdict>,
    clients: ClientFigures,
    failures: Vec<String>,
    samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
struct ClientFigures {
    connects: u64,
    connect_failures: u64,
    client_closes: u64,
    client_drops: u64,
    polling_abandoned: u64,
    stall_closed_by_server: u64,
    stall_survived: u64,
    server_closed_readers: u64,
    messages: u64,
    /// The server's own counts over the run.
    server_connections_opened: u64,
    server_slow_consumer_closes: u64,
    /// Connections the server ended over the run, by reason (`limit` includes refusals).
    server_disconnects: BTreeMap<String, u64>,
    failure_examples: Vec<String>,
}

/// Figures and verdict from the samples. The window is the run after warm-up, cut in thirds
/// by sample count; the after-phase is the last three samples.
fn judge(args: &SoakArgs, counts: &Counts, samples: Vec<Sample>, drained: bool) -> SoakReport {
    let warmup_s = args.warmup_s();
    let baseline = samples.iter().rfind(|s| s.phase == "baseline").expect("baseline sample").clone();
    let first_run_t = samples.iter().find(|s| s.phase == "run").map_or(f64::INFINITY, |s| s.t);
    let window: Vec<&Sample> = samples.iter().filter(|s| s.phase == "run" && s.t >= first_run_t + warmup_s).collect();
    let during: Vec<&Sample> = samples.iter().filter(|s| s.phase == "ramp" || s.phase == "run").collect();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.phase == "after").collect();
    let end = during.last().copied().unwrap_or(&baseline);
    let mut failures = Vec::new();
    if window.len() < 6 {
        failures.push(format!("only {} samples after the warm-up ({warmup_s} s): the run is too short to judge flatness (at least 6)", window.len()));
    }
    let third = window.len() / 3;
    let mut names: Vec<String> = vec!["rss_bytes".into(), "fds".into()];
    names.extend(baseline.maps.keys().map(|m| format!("map:{m}")));
    let value = |s: &Sample, name: &str| -> f64 {
        match name {
            "rss_bytes" => s.rss_bytes as f64,
            "fds" => s.fds as f64,
            map => s.maps.get(&map[4..]).copied().unwrap_or(0) as f64,
        }
    };
    let mut series = Vec::new();
    for name in &names {
        let base = value(&baseline, name);
        let peak = during.iter().chain(after.iter()).map(|s| value(s, name)).fold(base, f64::max);
        let mut first: Vec<f64> = window[..third].iter().map(|s| value(s, name)).collect();
        // The first third's own swing: a series that moves by that much from sample to sample
        // (bus registrations come and go with every dispatch) may differ by it between medians.
        let swing = first.iter().copied().fold(f64::NEG_INFINITY, f64::max) - first.iter().copied().fold(f64::INFINITY, f64::min);
        let swing = if swing.is_finite() { swing } else { 0.0 };
        let mut last: Vec<f64> = window[window.len() - third..].iter().map(|s| value(s, name)).collect();
        let (first, last) = (median(&mut first), median(&mut last));
        let mut after_values: Vec<f64> = after.iter().map(|s| value(s, name)).collect();
        let after_value = median(&mut after_values);
        // Absolute slack for series that sit near zero or move by single steps under churn.
        let slack = match name.as_str() {
            "rss_bytes" => 2.0 * 1024.0 * 1024.0,
            _ => 10.0,
        };
        let allowed = first * (1.0 + args.tolerance_pct / 100.0) + slack + swing;
        let flat = third == 0 || last <= allowed;
        let (back, rule) = match name.as_str() {
            "rss_bytes" => {
                let allowance = args.rss_after_kib_per_client * 1024.0 * args.clients as f64;
                (after_value <= peak && after_value <= base + allowance, format!("<= peak and <= baseline + {:.0} MiB", allowance / (1024.0 * 1024.0)))
            }
            "fds" => (after_value <= base + args.fd_slack as f64, format!("<= baseline + {}", args.fd_slack)),
            _ => (after_value == base, "= baseline".to_string()),
        };
        if !flat {
            failures.push(format!(
                "{name} grew during the run: last third's median {last} > {allowed} (first third's median {first} + {}% + {slack} + its swing {swing})",
                args.tolerance_pct
            ));
        }
        if !back {
            failures.push(format!("{name} is {after_value} after every client left; baseline {base}, rule {rule}"));
        }
        let points: Vec<(f64, f64)> = window.iter().map(|s| (s.t, value(s, name))).collect();
        series.push(SeriesVerdict {
            name: name.clone(),
            baseline: base,
            peak,
            first_third: first,
            last_third: last,
            end_of_run: value(end, name),
            after: after_value,
            slope_per_hour: slope(&points) * 3600.0,
            flat,
            back_to_baseline: back,
            rule,
        });
    }
    if !drained {
        failures.push(format!("the server still counted client entries {} s after every client left", args.drain_timeout));
    }
    let stall_closed = counts.stall_closed_by_server.load(Ordering::Relaxed);
    let stall_survived = counts.stall_survived.load(Ordering::Relaxed);
    // A stalled client still open when it looks again: the rule closes it 30–33.75 s after its
    // socket stopped taking data, but the 30-minute run on a machine shared with other builds
    // saw 5 of 2,418 stalls (0.2%) still open at 40 s. Under 1% is reported; a rule that no
    // longer closes stalled clients leaves nearly all of them open and fails here.
    if stall_survived * 100 > (stall_closed + stall_survived) * args.stall_survivors_max_pct {
        failures.push(format!(
            "{stall_survived} of {} stalled connections were still open {} s (/sse: 20 s more) after they stopped reading, more than {}% (the slow-consumer rule should have closed them)",
            stall_closed + stall_survived,
            args.stall_for,
            args.stall_survivors_max_pct
        ));
    }
    if stall_closed + stall_survived == 0 && args.stall_fraction > 0.0 && args.duration > args.stall_for + 20.0 {
        failures.push("no stalled client completed a cycle: the slow-consumer rule was not exercised".to_string());
    }
    // The stalled clients' ends were the slow-consumer rule's, not the idle timeout's.
    let slow_consumer_closes = samples.last().map_or(0, |s| s.slow_consumer_closes.saturating_sub(baseline.slow_consumer_closes));
    if slow_consumer_closes < stall_closed {
        failures.push(format!("the server counted {slow_consumer_closes} slow-consumer closes, fewer than the {stall_closed} stalled connections it closed"));
    }
    let connects = counts.connects.load(Ordering::Relaxed);
    let connect_failures = counts.connect_failures.load(Ordering::Relaxed);
    // A few connects may time out while the machine is saturated; more is a server problem.
    if connect_failures * 200 > connects.max(1) {
        failures.push(format!("{connect_failures} of {} connection attempts failed (more than 0.5%)", connects + connect_failures));
    }
    let last = samples.last().expect("samples");
    let clients = ClientFigures {
        connects,
        connect_failures,
        client_closes: counts.client_closes.load(Ordering::Relaxed),
        client_drops: counts.client_drops.load(Ordering::Relaxed),
        polling_abandoned: counts.polling_abandoned.load(Ordering::Relaxed),
        stall_closed_by_server: stall_closed,
        stall_survived,
        server_closed_readers: counts.server_closed_readers.load(Ordering::Relaxed),
        messages: counts.messages.load(Ordering::Relaxed),
        server_connections_opened: last.opened_total.saturating_sub(baseline.opened_total),
        server_slow_consumer_closes: last.slow_consumer_closes.saturating_sub(baseline.slow_consumer_closes),
        server_disconnects: last.disconnects.iter().map(|(reason, n)| (reason.clone(), n.saturating_sub(baseline.disconnects.get(reason).copied().unwrap_or(0)))).collect(),
        failure_examples: counts.failure_examples.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    SoakReport { ok: failures.is_empty(), config: args.clone(), warmup_s, drained, series, clients, failures, samples }
}

/// Least-squares slope of (t, v) in v per second; 0 with fewer than two points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mt, mv) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (t, v)| (num + (t - mt) * (v - mv), den + (t - mt) * (t - mt)));
    if den == 0.0 { 0.0 } else { num / den }
}

impl SoakReport {
    /// The text summary: one line per series, the clients' figures, the verdict.
    fn summary(&self) -> String {
        use std::fmt::Write;
        let a = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "soak: {} clients for {:.0} s (warm-up {:.0} s), churn {:.0}%, slow {:.0}%, stalled {:.0}%; sse {:.0}%, socket.io ws {:.0}%, polling {:.0}%",
            a.clients,
            a.duration,
            self.warmup_s,
            a.churn_fraction * 100.0,
            a.slow_fraction * 100.0,
            a.stall_fraction * 100.0,
            a.sse_fraction * 100.0,
            a.socketio_fraction * 100.0,
            a.polling_fraction * 100.0
        );
        let _ = writeln!(out, "{:<28} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>12}  checks", "series", "baseline", "peak", "first 1/3", "last 1/3", "end", "after", "slope/h");
        for s in &self.series {
            let show = |v: f64| if s.name == "rss_bytes" { format!("{:.1}M", mib(v as u64)) } else { format!("{v:.0}") };
            let slope = if s.name == "rss_bytes" { format!("{:+.1}M", s.slope_per_hour / (1024.0 * 1024.0)) } else { format!("{:+.0}", s.slope_per_hour) };
            let _ = writeln!(
                out,
                "{:<28} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>12}  {} {}",
                s.name,
                show(s.baseline),
                show(s.peak),
                show(s.first_third),
                show(s.last_third),
                show(s.end_of_run),
                show(s.after),
                slope,
                if s.flat { "flat" } else { "GREW" },
                if s.back_to_baseline { format!("back ({})", s.rule) } else { format!("NOT BACK ({})", s.rule) }
            );
        }
        let c = &self.clients;
        let _ = writeln!(
            out,
            "connections: {} opened by the clients ({} by the server's count), {} failed; left: {} closes, {} drops, {} polling sessions abandoned",
            c.connects, c.server_connections_opened, c.connect_failures, c.client_closes, c.client_drops, c.polling_abandoned
        );
        let _ = writeln!(
            out,
            "slow consumers: {} closed by the server (its count: {}), {} survived; readers closed by the server: {}; messages read: {}",
            c.stall_closed_by_server, c.server_slow_consumer_closes, c.stall_survived, c.server_closed_readers, c.messages
        );
        let closed: u64 = c.server_disconnects.values().sum();
        let reasons: Vec<String> = c.server_disconnects.iter().filter(|(_, n)| **n > 0).map(|(reason, n)| format!("{reason} {n}")).collect();
        let _ = writeln!(out, "the server ended {closed} connections: {}", reasons.join(", "));
        for example in &c.failure_examples {
            let _ = writeln!(out, "  e.g. {example}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "FAILED: {failure}");
        }
        let _ = writeln!(out, "{}", if self.ok { "soak: OK" } else { "soak: FAILED" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_gives_the_maps_and_the_counters() {
        let text = "# TYPE tickerfeed_client_map_entries gauge\n\
            tickerfeed_client_map_entries{map=\"connections\"} 12\n\
            tickerfeed_client_map_entries{map=\"socketio_sids\"} 3\n\
            tickerfeed_connections_opened_total{transport=\"sse\"} 5\n\
            tickerfeed_connections_opened_total{transport=\"websocket\"} 7\n\
            tickerfeed_disconnects_total{reason=\"slow_consumer\"} 4\n\
            tickerfeed_disconnects_total{reason=\"client_close\"} 9\n";
        let scrape = Scrape::parse(text);
        assert_eq!(scrape.maps, BTreeMap::from([("connections".to_string(), 12), ("socketio_sids".to_string(), 3)]));
        assert_eq!((scrape.opened_total, scrape.slow_consumer_closes), (12, 4));
        assert_eq!(scrape.disconnects, BTreeMap::from([("client_close".to_string(), 9), ("slow_consumer".to_string(), 4)]));
    }

    fn args(extra: &[&str]) -> SoakArgs {
        SoakArgs::parse_from(["soak", "--server-pid", "1", "--duration", "60", "--warmup", "0"].iter().chain(extra))
    }

    fn sample(t: f64, phase: &'static str, rss_mib: u64, connections: i64) -> Sample {
        Sample {
            t,
            phase,
            rss_bytes: rss_mib << 20,
            fds: 10 + connections as usize,
            maps: BTreeMap::from([("connections".to_string(), connections)]),
            clients_open: connections,
            opened_total: 0,
            slow_consumer_closes: 0,
            disconnects: BTreeMap::new(),
        }
    }

    fn run_with(rss: impl Fn(usize) -> u64, connections_after: i64) -> SoakReport {
        let mut samples = vec![sample(0.0, "baseline", 10, 0)];
        for i in 0..12 {
            samples.push(sample(5.0 * (i + 1) as f64, "run", rss(i), 100));
        }
        for i in 0..3 {
            samples.push(sample(70.0 + i as f64, "after", 14, connections_after));
        }
        judge(&args(&[]), &Counts::default(), samples, true)
    }

    #[test]
    fn flat_figures_that_come_back_pass() {
        let report = run_with(|i| 40 + (i as u64 % 2), 0);
        assert!(report.ok, "{:?}", report.failures);
        let rss = &report.series[0];
        assert_eq!((rss.baseline, rss.peak, rss.after), ((10u64 << 20) as f64, (41u64 << 20) as f64, (14u64 << 20) as f64));
    }

    #[test]
    fn steady_growth_fails_as_grew() {
        let report = run_with(|i| 40 + 4 * i as u64, 0);
        assert!(!report.ok);
        assert!(report.failures.iter().any(|f| f.starts_with("rss_bytes grew")), "{:?}", report.failures);
    }

    #[test]
    fn an_entry_left_behind_fails_as_not_back() {
        let report = run_with(|_| 40, 1);
        assert!(report.failures.iter().any(|f| f.starts_with("map:connections is 1 after")), "{:?}", report.failures);
        assert!(!report.failures.iter().any(|f| f.starts_with("fds is 11 after")), "one descriptor more is within the slack");
    }

    #[test]
    fn roles_follow_the_fractions_and_polling_clients_never_stall() {
        let roles = assign_roles(&args(&["--clients", "2000"]));
        let count = |t: Transport| roles.iter().filter(|r| r.0 == t).count();
        assert!((150..250).contains(&count(Transport::Sse)), "{}", count(Transport::Sse));
        assert!((20..100).contains(&count(Transport::SocketioPolling)));
        assert!(roles.iter().filter(|r| r.1 == Behaviour::Stall).count() > 20);
        assert!(!roles.iter().any(|r| r.0 == Transport::SocketioPolling && matches!(r.1, Behaviour::Stall | Behaviour::Slow)));
    }
}
