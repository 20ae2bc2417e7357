//! The orchestration of one run, one function per phase, called in order by [`run`]:
//! limits ([`check_limits`]) → setup ([`Run::prepare`]) → observer → ramp-up
//! ([`Run::connect_clients`]) → warm-up → measured period (open the window, start the probes
//! and the churn — their loops are in [`crate::background`] —, [`Run::measure`], close the
//! window) → settle → shutdown ([`Run::close`]) → this process's results, its children's
//! ([`Run::gather`]) → the report and its verdict ([`Run::report`], [`judge`]). What the phases
//! share is a [`Run`]; what one hands to a later one is a small type of its own (`Ramp`,
//! `WindowStart`, `Window`, `Closed`, `Outcome`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout_at};

use crate::background::{Background, PROBE_TIMEOUT, churn_loop, churn_stats, probe_loop, probe_stats};
use crate::cli::Args;
use crate::client::{self, ChurnSample, PHASE_DONE, PHASE_MEASURE, ProbeSample, Role, Shared, Shutdown, SubSpec};
use crate::multi::{self, ChildProc, ProcResult};
use crate::net::{self, Target};
use crate::report::{ChurnStats, ClientStats, ConfigEcho, Latency, LoadgenStats, Messages, ObserverStats, Report, Rss, ServerStats, ThrottleStats, Throughput};
use crate::stats::{self, Counters};
use crate::symbols::{Popularity, Rng, SymbolChooser};
use crate::sys::{self, CpuTimes};
use crate::timing::ObserverLog;

/// Total time allowed for closing every connection at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Loadgen CPU above this share of its worker threads flags the run as client-bound.
const CLIENT_BOUND_PCT: f64 = 80.0;

/// Progress line on stderr (unless --quiet).
macro_rules! progress {
    ($quiet:expr, $($arg:tt)*) => { if !$quiet { eprintln!("[loadgen] {}", format!($($arg)*)); } };
}

/// Descriptors the run needs: one per connection plus probes and churn connections in flight
/// (at worst each lives until its timeout) plus a reserve.
pub fn fds_needed(args: &Args) -> u64 {
    let probes_in_flight = if args.probe_interval_ms == 0 { 0 } else { PROBE_TIMEOUT.as_millis() as u64 / args.probe_interval_ms.max(1) + 1 };
    let churn_in_flight = (args.churn * args.connect_timeout).ceil() as u64;
    (args.clients + args.stall) as u64 + probes_in_flight + churn_in_flight + sys::FD_RESERVE
}

/// Runs the whole benchmark, phase by phase. Errors are reserved for "could not run at all";
/// problems seen during the run end up in `Report::failures`.
pub async fn run(args_in: &Args) -> Result<Report> {
    args_in.validate()?;
    let cpu_at_start = sys::cpu_times();
    let is_child = args_in.child_index.is_some();
    // With --processes N the children start first (they ramp in parallel with this process);
    // `args` is this process's share from here on, `args_in` the whole run.
    let (own_args, mut children) = if args_in.processes > 1 && !is_child { multi::spawn_children(args_in)? } else { (args_in.clone(), Vec::new()) };
    let args = &own_args;

    let fd_limit = check_limits(args)?;
    let mut run = Run::prepare(args).await?;
    // The baseline for memory per connection: nothing of this run is connected yet.
    let rss_before = run.rss.sample();
    let observer = run.start_observer().await;
    let ramp = run.connect_clients().await;

    // Nothing to measure if nobody got in (the report then says why). With several processes
    // every one takes part in the common window regardless.
    let connections = run.shared.connections();
    let nobody = connections.connected + connections.stall_connected == 0 && children.is_empty() && !is_child;
    if nobody {
        progress!(run.quiet, "no connection succeeded; skipping warm-up and measurement");
    }
    run.warm_up(&mut children, nobody).await?;

    let start = run.open_window();
    let probes = run.start_probes(nobody);
    let churn = run.start_churn(nobody);
    run.measure(&start, nobody).await;
    let window = run.close_window(start);

    // Probes and churn end with the window; then the optional settle period.
    let probes = probes.map(|p| p.stop(Instant::now() + CLOSE_GRACE));
    let churn = match churn.map(|c| c.stop(Instant::now() + CLOSE_GRACE)) {
        Some(task) => {
            let (attempted, samples) = task.await.unwrap_or_default();
            Some(churn_stats(args.churn, attempted, &samples, window.measured_s))
        }
        None => None,
    };
    let rss_after_settle = run.settle(nobody).await;

    let closed = run.close(ramp.tasks, probes, observer).await;
    let own = run.own_result(&window, ramp.ramp_s, cpu_at_start);
    let results = run.gather(own, children).await?;
    Ok(run.report(args_in, Outcome { fd_limit, window, results, rss_before, rss_after_settle, closed, churn }))
}

/// Raises the open-file limit to the hard limit and checks that the run's connections fit in
/// it and in the local ephemeral ports. Returns the limit.
fn check_limits(args: &Args) -> Result<u64> {
    let fd_limit = sys::raise_nofile_limit()?;
    let needed = fds_needed(args);
    progress!(args.quiet, "open-file limit {fd_limit}: room for about {} connections", fd_limit.saturating_sub(sys::FD_RESERVE));
    if needed > fd_limit {
        bail!(
            "{} connections need about {needed} file descriptors but the limit is {fd_limit} (already raised to the \
             hard limit); raise it with `ulimit -n` / `ulimit -Hn` or LimitNOFILE=, or use fewer --clients/--stall",
            args.clients + args.stall
        );
    }
    let total = args.clients + args.stall;
    if let Some(ports) = sys::ephemeral_ports()
        && total as u64 > ports
    {
        bail!(
            "{total} connections to one server address exceed the {ports} local ephemeral ports \
             (/proc/sys/net/ipv4/ip_local_port_range)"
        );
    }
    Ok(fd_limit)
}

/// What the phases of one process's run share: its arguments, the server, the symbols, the
/// state the connection tasks report into, and the signal that ends them.
struct Run<'a> {
    /// This process's share of the run (with --processes: its share of the clients).
    args: &'a Args,
    quiet: bool,
    target: Arc<Target>,
    chooser: SymbolChooser,
    symbols_available: usize,
    /// The observer's record, with an observer (--throttle-ms > 0 or --observer).
    observer_log: Option<Arc<ObserverLog>>,
    shared: Arc<Shared>,
    /// `Some(deadline)`: every connection closes now and is gone by the deadline.
    shutdown_tx: watch::Sender<Option<Instant>>,
    shutdown_rx: Shutdown,
    rss: RssSampler,
}

/// The ramp-up's result: the connection tasks (they run until the shutdown) and how long it
/// took until every client was subscribed or had failed, seconds.
struct Ramp {
    tasks: JoinSet<()>,
    ramp_s: f64,
}

/// The observer connection, started before any client.
struct ObserverStart {
    task: JoinHandle<Result<()>>,
    log: Arc<ObserverLog>,
    /// Symbols subscribed (all of them for "*").
    symbols: usize,
}

/// Readings at the start of the measured period.
struct WindowStart {
    t0: Instant,
    counters: Counters,
    cpu: CpuTimes,
    /// The server's CPU time so far (--server-pid), seconds.
    server_cpu_at_start: Option<f64>,
    /// Server RSS, MiB.
    rss: Option<f64>,
}

/// The measured period, read at both ends.
struct Window {
    start: WindowStart,
    t1: Instant,
    /// t1 − t0, seconds (never 0: it divides the rates).
    measured_s: f64,
    counters_end: Counters,
    cpu_end: CpuTimes,
    /// The server's CPU time within the window, seconds.
    server_cpu_s: Option<f64>,
    rss_end: Option<f64>,
}

/// What the shutdown leaves: the probes' samples and the observer's end.
struct Closed {
    probes: Vec<ProbeSample>,
    observer: Option<(ObserverStart, Option<String>)>,
}

/// Everything the report is made of, gathered by the phases.
struct Outcome {
    fd_limit: u64,
    window: Window,
    /// This process's results first, then its children's.
    results: Vec<ProcResult>,
    rss_before: Option<f64>,
    rss_after_settle: Option<f64>,
    closed: Closed,
    churn: Option<ChurnStats>,
}

/// The server's resident memory over the whole run: a sample every second (with --server-pid)
/// and the readings the phases take. Every sample is kept with its time, so the report can
/// show the series ("is it flat?").
struct RssSampler {
    pid: Option<u32>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Samples every second until the shutdown signal.
    fn start(pid: Option<u32>, mut stop: Shutdown) -> RssSampler {
        let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let task = pid.map(|pid| {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Some(b) = sys::vm_rss_bytes(pid) {
                                unpoisoned(&samples).push((Instant::now(), b));
                            }
                        }
                        _ = stop.wait_for(|s| s.is_some()) => break,
                    }
                }
            })
        });
        RssSampler { pid, samples, task }
    }

    /// A reading now, MiB (kept as a sample too); `None` without --server-pid.
    fn sample(&self) -> Option<f64> {
        let b = self.pid.and_then(sys::vm_rss_bytes);
        if let Some(b) = b {
            unpoisoned(&self.samples).push((Instant::now(), b));
        }
        b.map(mib)
    }

    /// Waits for the sampler to stop (after the shutdown signal).
    async fn finish(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The report's figures (see [`rss_summary`]); `None` without --server-pid.
    fn summary(&self, t0: Instant, t1: Instant, readings: [Option<f64>; 4]) -> Option<Rss> {
        self.pid.map(|_| {
            let samples = std::mem::take(&mut *unpoisoned(&self.samples));
            rss_summary(&samples, t0, t1, readings)
        })
    }
}

impl<'a> Run<'a> {
    /// Setup: the server's address, the symbol universe (from `/api/symbols` unless
    /// --symbol-list), the shared state, and the RSS sampler.
    async fn prepare(args: &'a Args) -> Result<Run<'a>> {
        let quiet = args.quiet;
        let target = Arc::new(Target::resolve(&args.url, args.read_buffer_kib * 1024, args.protocol).await?);
        let universe = match &args.symbol_list {
            Some(list) => {
                let mut seen = std::collections::HashSet::new();
                list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty() && seen.insert(s.clone())).collect()
            }
            None => net::fetch_symbols(&target, Duration::from_secs(10)).await.context("could not get the symbol list (is the server up? --symbol-list skips this)")?,
        };
        if universe.is_empty() {
            bail!("the symbol list is empty");
        }
        let needs_k = (args.clients > 0 && !args.wildcard) || (args.stall > 0 && !args.stall_wildcard);
        if needs_k && args.symbols > universe.len() {
            bail!("--symbols {} exceeds the {} symbols available", args.symbols, universe.len());
        }
        let symbols_available = universe.len();
        let popularity = args.zipf.map_or(Popularity::Uniform, Popularity::Zipf);
        let chooser = SymbolChooser::new(universe, popularity);
        progress!(quiet, "{} symbols; target {} ({})", symbols_available, args.url, target.addr);

        let observer_log = args.observer_on().then(|| Arc::new(ObserverLog::default()));
        let shared = Arc::new(Shared::new(observer_log.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel::<Option<Instant>>(None);
        let rss = RssSampler::start(args.server_pid, shutdown_rx.clone());
        if let Some(pid) = args.server_pid
            && sys::vm_rss_bytes(pid).is_none()
        {
            progress!(quiet, "warning: cannot read VmRSS of pid {pid}");
        }
        Ok(Run { args, quiet, target, chooser, symbols_available, observer_log, shared, shutdown_tx, shutdown_rx, rss })
    }

    /// A subscription like the clients': K symbols drawn with `rng` (or "*"), the run's throttle.
    fn spec_for(&self, wildcard: bool, snapshot: bool, rng: &mut Rng) -> SubSpec {
        SubSpec {
            symbols: if wildcard || self.args.symbols == 0 { vec!["*".to_string()] } else { self.chooser.choose(rng, self.args.symbols) },
            throttle_ms: self.args.throttle_ms,
            snapshot,
            align: self.args.align,
            channels: self.args.channels.clone(),
            rcvbuf: None,
        }
    }

    /// The observer: subscribed before any client, so it has every quote a client can be
    /// missing. Returns once it is subscribed (or has failed); `None` without an observer.
    async fn start_observer(&self) -> Option<ObserverStart> {
        let log = self.observer_log.clone()?;
        let symbols = self.observer_symbols();
        let count = if symbols == ["*"] { self.symbols_available } else { symbols.len() };
        progress!(self.quiet, "observer: {} symbols at throttle 0", count);
        let (otx, mut orx) = mpsc::channel::<()>(1);
        let task = tokio::spawn(client::observer_task(self.target.clone(), symbols, log.clone(), connect_timeout_of(self.args), otx, self.shutdown_rx.clone()));
        let _ = orx.recv().await; // ready (or failed)
        Some(ObserverStart { task, log, symbols: count })
    }

    /// What the observer subscribes to: the union of every reading client's symbols (over all
    /// processes), or "*" for wildcard clients or a union too large for one subscribe.
    fn observer_symbols(&self) -> Vec<String> {
        const MAX_UNION: usize = 1000;
        let args = self.args;
        if args.wildcard || args.symbols == 0 {
            return vec!["*".to_string()];
        }
        let mut seen = std::collections::BTreeSet::new();
        for g in 0..args.all_clients() {
            let mut rng = Rng::derive(args.seed, g as u64);
            seen.extend(self.spec_for(false, true, &mut rng).symbols);
            if seen.len() > MAX_UNION || seen.len() == self.chooser.len() {
                return vec!["*".to_string()];
            }
        }
        seen.into_iter().collect()
    }

    /// Ramp-up: connects and subscribes the reading clients, then the stalled ones, at
    /// --connect-rate, and waits until every one is subscribed or has failed.
    async fn connect_clients(&self) -> Ramp {
        let (args, quiet) = (self.args, self.quiet);
        let total = args.clients + args.stall;
        // Each task holds a clone of `ready_tx` until it is subscribed (or has failed); recv()
        // returns None once every task has dropped its clone — even one that panicked.
        let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1);
        let connect_timeout = connect_timeout_of(args);
        let gap = if args.connect_rate > 0.0 { Duration::from_secs_f64(1.0 / args.connect_rate) } else { Duration::ZERO };
        let mut tasks = JoinSet::new();
        let ramp_start = Instant::now();
        let mut next_progress = ramp_start + Duration::from_secs(1);
        progress!(quiet, "connecting {} clients + {} stalled at {} conn/s", args.clients, args.stall, args.connect_rate);
        for i in 0..total {
            if !gap.is_zero() {
                sleep_until(ramp_start + gap * i as u32).await;
            }
            let role = if i < args.clients { Role::Reader } else { Role::Stalled };
            // Global client index: the same symbols whatever the number of processes.
            let global = match role {
                Role::Reader => args.client_offset + i,
                Role::Stalled => args.all_clients() + (i - args.clients),
            };
            let mut rng = Rng::derive(args.seed, global as u64);
            let spec = match role {
                Role::Reader => self.spec_for(args.wildcard, !args.no_snapshot, &mut rng),
                Role::Stalled => SubSpec { rcvbuf: args.stall_rcvbuf_kib.map(|k| k.saturating_mul(1024)), ..self.spec_for(args.stall_wildcard, !args.no_snapshot, &mut rng) },
            };
            tasks.spawn(client::client_task(self.shared.clone(), self.target.clone(), spec, role, connect_timeout, ready_tx.clone(), self.shutdown_rx.clone()));
            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(1);
                progress_ramp(&self.shared, quiet, i + 1);
            }
        }
        drop(ready_tx);
        loop {
            tokio::select! {
                r = ready_rx.recv() => if r.is_none() { break },
                _ = sleep_until(next_progress) => {
                    next_progress += Duration::from_secs(1);
                    progress_ramp(&self.shared, quiet, total);
                }
            }
        }
        let ramp_s = ramp_start.elapsed().as_secs_f64();
        progress_ramp(&self.shared, quiet, total);
        if let Some(w) = self.shared.welcome.get()
            && let Some(max) = w.max_symbols
            && !args.wildcard
            && args.symbols as u64 > max
        {
            progress!(quiet, "warning: --symbols {} exceeds the server's max_symbols {max}", args.symbols);
        }
        Ramp { tasks, ramp_s }
    }

    /// Warm-up. One process: resume the feed (--resume-feed) and wait --warmup. Several: once
    /// every process is ready the parent resumes the feed and names a common wall-clock start
    /// (now + warm-up) that every process sleeps until.
    async fn warm_up(&self, children: &mut [ChildProc], nobody: bool) -> Result<()> {
        let (args, quiet) = (self.args, self.quiet);
        let is_child = args.child_index.is_some();
        let start_wall = if is_child {
            Some(multi::child_ready_and_wait().await?)
        } else if !children.is_empty() {
            progress!(quiet, "waiting for {} child processes", children.len());
            multi::wait_ready(children).await?;
            resume_feed(args, &self.target).await?;
            let start = client::now_us() + (args.warmup * 1e6) as i64;
            multi::send_start(children, start).await?;
            Some(start)
        } else {
            None
        };
        if start_wall.is_none() && !is_child {
            resume_feed(args, &self.target).await?;
        }
        if let Some(start) = start_wall {
            progress!(quiet, "all processes ready; warming up for {} s", args.warmup);
            let wait_us = (start - client::now_us()).max(0) as u64;
            sleep(Duration::from_micros(wait_us)).await;
        } else if args.warmup > 0.0 && !nobody {
            progress!(quiet, "warming up for {} s", args.warmup);
            sleep(Duration::from_secs_f64(args.warmup)).await;
        }
        Ok(())
    }

    /// Opens the measured period: the readings at its start, then latency recording on.
    fn open_window(&self) -> WindowStart {
        let rss = self.rss.sample();
        let counters = self.shared.stats.totals();
        let cpu = sys::cpu_times();
        // Read last, right before the window opens, so ramp-up and warm-up cost the server
        // nothing in the headline figure.
        let server_cpu_at_start = self.args.server_pid.and_then(sys::process_cpu_s);
        let t0 = Instant::now();
        self.shared.phase.store(PHASE_MEASURE, Ordering::Relaxed);
        progress!(self.quiet, "measuring for {} s", self.args.duration);
        WindowStart { t0, counters, cpu, server_cpu_at_start, rss }
    }

    /// Snapshot probes (--probe-interval-ms) during the measured period: fresh connections
    /// that look like the clients (same K, same wildcard), always with a snapshot.
    fn start_probes(&self, nobody: bool) -> Option<Background<Vec<ProbeSample>>> {
        let args = self.args;
        (args.probe_interval_ms > 0 && !nobody).then(|| {
            let mut rng = Rng::derive(args.seed, u64::MAX);
            let specs: Vec<SubSpec> = (0..256).map(|_| self.spec_for(args.wildcard || (args.clients == 0 && args.stall_wildcard), true, &mut rng)).collect();
            let (target, interval) = (self.target.clone(), Duration::from_millis(args.probe_interval_ms));
            Background::spawn(move |stop| probe_loop(target, specs, interval, stop))
        })
    }

    /// --churn during the measured period: short-lived connections that subscribe like the
    /// reading clients (K symbols, same throttle).
    fn start_churn(&self, nobody: bool) -> Option<Background<(u64, Vec<ChurnSample>)>> {
        let args = self.args;
        (args.churn > 0.0 && !nobody).then(|| {
            let mut rng = Rng::derive(args.seed, u64::MAX - 1);
            let specs: Vec<SubSpec> = (0..256).map(|_| self.spec_for(args.wildcard, !args.no_snapshot, &mut rng)).collect();
            let (target, rate, limit) = (self.target.clone(), args.churn, connect_timeout_of(args));
            Background::spawn(move |stop| churn_loop(target, specs, rate, limit, stop))
        })
    }

    /// The measured period: --duration seconds, with a progress line every second.
    async fn measure(&self, start: &WindowStart, nobody: bool) {
        if nobody {
            return;
        }
        let end = start.t0 + Duration::from_secs_f64(self.args.duration);
        let mut last = (start.t0, start.counters);
        loop {
            let next = (last.0 + Duration::from_secs(1)).min(end);
            sleep_until(next).await;
            let now = Instant::now();
            let c = self.shared.stats.totals();
            let dt = (now - last.0).as_secs_f64().max(1e-9);
            let d = c - last.1;
            let connections = self.shared.connections();
            progress!(
                self.quiet,
                "t={:>5.1}s  {:>9.0} quotes/s  {:>8.0} frames/s  {:>6.2} MB/s  conns {}  disc {}  order-err {}{}",
                (now - start.t0).as_secs_f64(),
                d.quotes_live as f64 / dt,
                d.frames as f64 / dt,
                d.bytes as f64 / dt / 1e6,
                connections.connected.saturating_sub(connections.disconnected),
                connections.disconnected,
                c.ordering_errors,
                self.args.server_pid.and_then(sys::vm_rss_bytes).map_or(String::new(), |b| format!("  rss {:.1} MiB", mib(b)))
            );
            last = (now, c);
            if now >= end {
                break;
            }
        }
    }

    /// Closes the measured period: latency recording off, the readings at its end.
    fn close_window(&self, start: WindowStart) -> Window {
        self.shared.phase.store(PHASE_DONE, Ordering::Relaxed);
        let server_cpu_at_end = self.args.server_pid.and_then(sys::process_cpu_s);
        let t1 = Instant::now();
        let measured_s = (t1 - start.t0).as_secs_f64().max(1e-6);
        let counters_end = self.shared.stats.totals();
        let cpu_end = sys::cpu_times();
        let rss_end = self.rss.sample();
        let server_cpu_s = match (start.server_cpu_at_start, server_cpu_at_end) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        Window { start, t1, measured_s, counters_end, cpu_end, server_cpu_s, rss_end }
    }

    /// --settle: every client stays connected a while after the measured period, then the
    /// server's RSS is read again (did it give memory back?).
    async fn settle(&self, nobody: bool) -> Option<f64> {
        if self.args.settle > 0.0 && !nobody {
            progress!(self.quiet, "settling for {} s", self.args.settle);
            sleep(Duration::from_secs_f64(self.args.settle)).await;
            self.rss.sample()
        } else {
            None
        }
    }

    /// Shutdown: every connection closes within `CLOSE_GRACE` (the rest are dropped), then the
    /// probes, the RSS sampler and the observer finish.
    async fn close(&mut self, mut tasks: JoinSet<()>, probes: Option<JoinHandle<Vec<ProbeSample>>>, observer: Option<ObserverStart>) -> Closed {
        let deadline = Instant::now() + CLOSE_GRACE;
        let _ = self.shutdown_tx.send(Some(deadline));
        progress!(self.quiet, "closing connections");
        while let Ok(Some(_)) = timeout_at(deadline + Duration::from_millis(100), tasks.join_next()).await {}
        let stragglers = tasks.len();
        tasks.abort_all();
        let probes = match probes {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        self.rss.finish().await;
        let observer = match observer {
            Some(mut ob) => {
                let error = match timeout_at(deadline + Duration::from_millis(200), &mut ob.task).await {
                    Ok(Ok(Ok(()))) => None,
                    Ok(Ok(Err(e))) => Some(format!("{e:#}")),
                    Ok(Err(e)) => Some(format!("observer task: {e}")),
                    Err(_) => None, // did not close in time: not a measurement problem
                };
                Some((ob, error))
            }
            None => None,
        };
        if stragglers > 0 {
            progress!(self.quiet, "{stragglers} connections did not close within {CLOSE_GRACE:?}; dropped");
        }
        Closed { probes, observer }
    }

    /// This process's raw results: what a --processes child hands to the parent.
    fn own_result(&self, window: &Window, ramp_s: f64, cpu_at_start: CpuTimes) -> ProcResult {
        let shared = &self.shared;
        let (cpu0, cpu1) = (window.start.cpu, window.cpu_end);
        let cpu_now = sys::cpu_times();
        ProcResult {
            measured_s: window.measured_s,
            measured: window.counters_end - window.start.counters,
            total: window.counters_end,
            latency: stats::histogram_to_pairs(&shared.stats.merged_latency()),
            latency_throttled: stats::histogram_to_pairs(&shared.stats.merged(|w| &w.latency_throttled)),
            staleness: stats::histogram_to_pairs(&shared.stats.merged(|w| &w.staleness)),
            connections: shared.connections(),
            ramp_s,
            cpu_user_s: (cpu1.user.saturating_sub(cpu0.user)).as_secs_f64(),
            cpu_sys_s: (cpu1.sys.saturating_sub(cpu0.sys)).as_secs_f64(),
            cpu_total_s: (cpu_now.user + cpu_now.sys).saturating_sub(cpu_at_start.user + cpu_at_start.sys).as_secs_f64(),
            threads: self.args.threads,
            welcome: shared.welcome.get().cloned(),
        }
    }

    /// A child writes its results for the parent; the parent adds its children's to its own.
    async fn gather(&self, own: ProcResult, children: Vec<ChildProc>) -> Result<Vec<ProcResult>> {
        if let Some(path) = &self.args.child_json {
            multi::write_result(path, &own)?;
        }
        let mut results = vec![own];
        if !children.is_empty() {
            progress!(self.quiet, "collecting the results of {} children", children.len());
            results.extend(multi::collect(children, CLOSE_GRACE + Duration::from_secs(15)).await?);
        }
        Ok(results)
    }

    /// The report: every process's results merged, the figures derived, the verdict.
    fn report(&self, args_in: &Args, o: Outcome) -> Report {
        let args = self.args;
        let Window { start, t1, measured_s, server_cpu_s, rss_end, .. } = o.window;
        let m = multi::merge(&o.results, measured_s, CLIENT_BOUND_PCT);
        let d = m.measured;
        let observer = o.closed.observer.map(|(ob, error)| ObserverStats {
            symbols: ob.symbols,
            frames: ob.log.frames.load(Ordering::Relaxed),
            quotes: ob.log.quotes.load(Ordering::Relaxed),
            gaps: ob.log.gaps.load(Ordering::Relaxed),
            gap_quotes: ob.log.gap_quotes.load(Ordering::Relaxed),
            error,
        });
        let cpu_pct = 100.0 * (m.cpu_user_s + m.cpu_sys_s) / measured_s;
        let loadgen = LoadgenStats {
            threads: args.threads,
            cpu_user_s: m.cpu_user_s,
            cpu_sys_s: m.cpu_sys_s,
            cpu_pct_one_core: cpu_pct,
            cpu_total_s: m.cpu_total_s,
            client_bound: m.client_bound,
            processes: o.results.len(),
            cpu_pct_max_process: m.cpu_pct_max_process,
        };
        // The stalled clients are the parent's alone (a child's stall counts are 0).
        let clients = ClientStats { requested: args_in.clients, stall_requested: args.stall, ramp_s: m.ramp_s, connections: m.connections };
        let mut report = Report {
            ok: true,
            failures: Vec::new(),
            warnings: Vec::new(),
            config: config_echo(args_in, args),
            server: ServerStats { welcome: m.welcome.clone(), pid: args.server_pid, cpu_s: server_cpu_s, cpu_pct: server_cpu_s.map(|c| 100.0 * c / measured_s) },
            fd_limit: o.fd_limit,
            symbols_available: self.symbols_available,
            clients,
            measured: throughput(&d, measured_s, server_cpu_s),
            latency_ms: latency_of(&m.latency),
            latency_throttled_ms: latency_of(&m.latency_throttled),
            staleness_ms: latency_of(&m.staleness),
            throttle: ThrottleStats { throttle_ms: args.throttle_ms, staleness_missing: d.staleness_missing, unexplained_gaps: d.unexplained_gaps, gaps_unjudged: d.gap_unknown },
            observer,
            probe: probe_stats(&o.closed.probes, args.probe_slow_ms),
            churn: o.churn,
            messages: messages(&m.total),
            server_rss_mib: self.rss.summary(start.t0, t1, [o.rss_before, start.rss, rss_end, o.rss_after_settle]),
            loadgen,
        };
        judge(&mut report, &d);
        report
    }
}

/// The run's settings as the report echoes them: the whole run's client count and connect
/// rate, everything else as this process used it.
fn config_echo(args_in: &Args, args: &Args) -> ConfigEcho {
    ConfigEcho {
        url: args.url.clone(),
        clients: args_in.clients,
        symbols_per_client: args.symbols,
        wildcard: args.wildcard,
        throttle_ms: args.throttle_ms,
        snapshot: !args.no_snapshot,
        align: args.align,
        channels: args.channels.clone(),
        duration_s: args.duration,
        warmup_s: args.warmup,
        connect_rate: args_in.connect_rate,
        stall: args.stall,
        stall_wildcard: args.stall_wildcard,
        seed: args.seed,
        zipf: args.zipf,
        probe_interval_ms: args.probe_interval_ms,
        threads: args.threads,
        protocol: args.protocol,
        processes: args_in.processes,
        observer: args.observer_on(),
        churn: args.churn,
        settle_s: args.settle,
        resume_feed: args_in.resume_feed.clone(),
        idle: args.idle,
    }
}

/// Traffic of the measured period (`d`, all processes) as totals and rates.
fn throughput(d: &Counters, measured_s: f64, server_cpu_s: Option<f64>) -> Throughput {
    let quotes = d.quotes_live + d.quotes_snapshot;
    Throughput {
        duration_s: measured_s,
        quotes,
        quotes_live: d.quotes_live,
        quotes_snapshot: d.quotes_snapshot,
        quotes_per_s: quotes as f64 / measured_s,
        frames: d.frames,
        frames_per_s: d.frames as f64 / measured_s,
        quote_frames: d.quote_frames,
        quotes_per_frame: if d.quote_frames > 0 { quotes as f64 / d.quote_frames as f64 } else { 0.0 },
        bytes: d.bytes,
        mb_per_s: d.bytes as f64 / measured_s / 1e6,
        quotes_per_server_cpu_s: server_cpu_s.filter(|&c| c > 0.0).map(|c| quotes as f64 / c),
        trades: d.trades,
        trades_per_s: d.trades as f64 / measured_s,
        trade_frames: d.trade_frames,
        trades_per_frame: if d.trade_frames > 0 { d.trades as f64 / d.trade_frames as f64 } else { 0.0 },
        trades_lost: d.trades_lost,
        trades_lost_pct: if d.trades + d.trades_lost > 0 { 100.0 * d.trades_lost as f64 / (d.trades + d.trades_lost) as f64 } else { 0.0 },
        gap_msgs: d.gap_msgs,
        trades_per_server_cpu_s: server_cpu_s.filter(|&c| c > 0.0 && d.trades > 0).map(|c| d.trades as f64 / c),
    }
}

/// Message counts of the whole run (`total`, all processes).
fn messages(total: &Counters) -> Messages {
    Messages {
        ordering_errors: total.ordering_errors,
        trade_order_errors: total.trade_order_errors,
        gap: total.gap_msgs,
        error: total.error_msgs,
        feed: total.feed_msgs,
        pong: total.pong_msgs,
        subscribed: total.subscribed_msgs,
        other: total.other_msgs,
        parse_errors: total.parse_errors,
        negative_latency: total.negative_latency,
    }
}

/// `--resume-feed`: the feed was paused while the clients connected; start it now. A server
/// that does not resume cannot be measured, so this is an error (exit status 2).
async fn resume_feed(args: &Args, target: &Target) -> Result<()> {
    let Some(path) = &args.resume_feed else {
        return Ok(());
    };
    progress!(args.quiet, "resuming the feed: POST {path}");
    tokio::time::timeout(Duration::from_secs(10), net::http_post_json(target, path, r#"{"action":"resume"}"#))
        .await
        .map_err(|_| anyhow::anyhow!("POST {path} timed out after 10 s"))?
        .with_context(|| format!("resuming the feed (--resume-feed {path})"))?;
    Ok(())
}

fn connect_timeout_of(args: &Args) -> Duration {
    Duration::from_secs_f64(args.connect_timeout)
}

/// Percentiles of a µs histogram, in ms.
pub fn latency_of(hist: &hdrhistogram::Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    if hist.is_empty() {
        return Latency::default();
    }
    Latency {
        samples: hist.len(),
        p50: ms(hist.value_at_quantile(0.5)),
        p90: ms(hist.value_at_quantile(0.9)),
        p99: ms(hist.value_at_quantile(0.99)),
        p999: ms(hist.value_at_quantile(0.999)),
        max: ms(hist.max()),
        mean: hist.mean() / 1000.0,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn progress_ramp(shared: &Shared, quiet: bool, started: usize) {
    let c = shared.connections();
    progress!(quiet, "started {started}: connected {} (+{} stalled), failed {} (+{} stalled)", c.connected, c.stall_connected, c.failed, c.stall_failed);
}

/// Fills in failures (exit status 1) and warnings.
fn judge(r: &mut Report, measured: &Counters) {
    let (requested, stall_requested) = (r.clients.requested, r.clients.stall_requested);
    let c = &r.clients.connections;
    let first = |v: &Vec<String>| v.first().map_or(String::new(), |e| format!(" (first: {e})"));
    if c.failed > 0 {
        r.failures.push(format!("{} of {requested} client connections failed{}", c.failed, first(&c.connect_errors)));
    }
    if c.stall_failed > 0 {
        r.failures.push(format!("{} of {stall_requested} stalled-client connections failed{}", c.stall_failed, first(&c.connect_errors)));
    }
    if requested > 0 && c.connected == 0 {
        r.failures.push("no client connected".into());
    }
    if c.disconnected > 0 {
        r.failures.push(format!("{} reading clients lost their connection during the run{}", c.disconnected, first(&c.disconnect_reasons)));
    }
    if r.messages.ordering_errors > 0 {
        r.failures.push(format!("{} quotes arrived with seq ≤ the previous seq of their symbol", r.messages.ordering_errors));
    }
    if r.messages.trade_order_errors > 0 {
        r.failures.push(format!(
            "{} trades (or gap messages) were out of order: a seq not one above the last of its symbol, and no gap message for the seqs between",
            r.messages.trade_order_errors
        ));
    }
    let trades_asked = r.config.channels.as_ref().is_some_and(|c| c.iter().any(|c| c == "trades"));
    if trades_asked && r.clients.connections.connected > 0 && r.measured.trades == 0 && !r.config.idle {
        r.warnings.push("--channels asked for trades but none were received during the measured period".into());
    }
    if r.clients.connections.connected > 0 && r.measured.quotes_live == 0 && r.measured.trades == 0 && !r.config.idle {
        r.warnings.push("no live quotes were received during the measured period (is the feed running?)".into());
    } else if r.clients.connections.delivering < r.clients.connections.connected && !r.config.idle {
        r.warnings.push(format!(
            "{} of {} connected reading clients received no live quote{} during the measured period",
            r.clients.connections.connected - r.clients.connections.delivering,
            r.clients.connections.connected,
            if trades_asked { " or trade" } else { "" }
        ));
    }
    if let Some(ch) = &r.churn
        && ch.failed > 0
    {
        r.warnings.push(format!("{} of {} churn connections failed{}", ch.failed, ch.attempted, first(&ch.errors)));
    }
    if r.loadgen.client_bound {
        r.warnings.push(format!(
            "the load generator used {:.0}% of one core with {} thread(s) (busiest of {} process(es)): results may be client-bound",
            r.loadgen.cpu_pct_max_process, r.loadgen.threads, r.loadgen.processes
        ));
    }
    if measured.negative_latency > 0 {
        r.warnings.push(format!("{} quotes were received before their pt (clock skew?); recorded as 0 ms", measured.negative_latency));
    }
    if r.messages.parse_errors > 0 {
        r.warnings.push(format!("{} frames could not be parsed", r.messages.parse_errors));
    }
    if r.messages.error > 0 {
        r.warnings.push(format!("the server sent {} error messages", r.messages.error));
    }
    if r.clients.connections.rejected_symbols > 0 {
        r.warnings.push(format!("the server rejected {} subscribed symbols{}", r.clients.connections.rejected_symbols, first(&r.clients.connections.rejected_examples)));
    }
    if r.probe.failed > 0 {
        r.warnings.push(format!("{} of {} snapshot probes failed{}", r.probe.failed, r.probe.count, first(&r.probe.errors)));
    }
    if r.probe.slow > 0 {
        r.warnings.push(format!("{} of {} snapshot probes took > {} ms", r.probe.slow, r.probe.count, r.probe.slow_threshold_ms));
    }
    r.ok = r.failures.is_empty();
}

/// Locks a mutex even if a panicking task poisoned it: the samples are still valid.
fn unpoisoned<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The RSS report from the timed samples (bytes) and the four named readings (MiB, in the
/// order before, start, end, after settle). `t0`..`t1` is the measured period.
pub fn rss_summary(samples: &[(Instant, u64)], t0: Instant, t1: Instant, [before, start, end, after_settle]: [Option<f64>; 4]) -> Rss {
    let since_t0 = |at: Instant| {
        if at >= t0 { (at - t0).as_secs_f64() } else { -(t0 - at).as_secs_f64() }
    };
    let mut sorted: Vec<(Instant, u64)> = samples.to_vec();
    sorted.sort_by_key(|s| s.0);
    let series: Vec<[f64; 2]> = sorted.iter().map(|&(at, b)| [round3(since_t0(at)), round3(mib(b))]).collect();
    let in_window = sorted.iter().filter(|(at, _)| *at >= t0 && *at <= t1).map(|&(_, b)| mib(b)).chain(start).chain(end);
    let (mut lo, mut hi) = (None::<f64>, None::<f64>);
    for v in in_window {
        lo = Some(lo.map_or(v, |x| x.min(v)));
        hi = Some(hi.map_or(v, |x| x.max(v)));
    }
    let max = sorted.iter().map(|s| s.1).max().map(mib);
    Rss { before, start, end, max, measured_min: lo, measured_max: hi, after_settle, series }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
