//! The run's counters: of the traffic ([`Counters`], per worker thread, merged when read), of
//! the connections ([`ConnectionCounts`]), and the latency histograms.
//!
//! A histogram per connection would cost ~100 KiB × thousands of clients, and one histogram
//! behind a global lock would be contended by every frame once there are several worker
//! threads. So each worker thread lazily creates its own [`WorkerStats`] and registers it with
//! the run's [`StatsRegistry`]; the hot path locks only its own thread's (uncontended) mutex,
//! once per frame. Readers (progress line, report) lock each worker in turn and sum.

use std::cell::RefCell;
use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks exactly, µs (one hour); larger values saturate.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Plain counters of received traffic. Monotonic; rates are differences of two snapshots.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Text frames of any type.
    pub frames: u64,
    /// WebSocket payload bytes of those frames.
    pub bytes: u64,
    /// Frames of type `quotes` (live and snapshot).
    pub quote_frames: u64,
    pub snapshot_frames: u64,
    pub quotes_live: u64,
    pub quotes_snapshot: u64,
    pub ordering_errors: u64,
    pub subscribed_msgs: u64,
    pub error_msgs: u64,
    pub feed_msgs: u64,
    pub pong_msgs: u64,
    /// Any other type, `welcome` included, and binary frames.
    pub other_msgs: u64,
    pub parse_errors: u64,
    /// Live quotes received "before" their publish time (clock skew); recorded as 0 µs.
    pub negative_latency: u64,
    /// Live deliveries after a gap whose oldest missed quote the observer did not have.
    pub staleness_missing: u64,
    /// Seq gaps the throttle cannot explain (see [`crate::timing`]).
    pub unexplained_gaps: u64,
    /// Seq gaps that could not be judged (the observer lacked the last skipped quote).
    pub gap_unknown: u64,
    /// Frames of type `trades` (`--channels …,trades`), and the trades in them.
    #[serde(default)]
    pub trade_frames: u64,
    #[serde(default)]
    pub trades: u64,
    /// `gap` messages, and the trades they declared lost (the sum of their seq ranges).
    #[serde(default)]
    pub gap_msgs: u64,
    #[serde(default)]
    pub trades_lost: u64,
    /// Trades whose seq was not the one after the last accounted for (received or declared
    /// lost) of their symbol, and `gap` messages that did not follow on from it.
    #[serde(default)]
    pub trade_order_errors: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.quote_frames += o.quote_frames;
        self.snapshot_frames += o.snapshot_frames;
        self.quotes_live += o.quotes_live;
        self.quotes_snapshot += o.quotes_snapshot;
        self.ordering_errors += o.ordering_errors;
        self.subscribed_msgs += o.subscribed_msgs;
        self.error_msgs += o.error_msgs;
        self.feed_msgs += o.feed_msgs;
        self.pong_msgs += o.pong_msgs;
        self.other_msgs += o.other_msgs;
        self.parse_errors += o.parse_errors;
        self.negative_latency += o.negative_latency;
        self.staleness_missing += o.staleness_missing;
        self.unexplained_gaps += o.unexplained_gaps;
        self.gap_unknown += o.gap_unknown;
        self.trade_frames += o.trade_frames;
        self.trades += o.trades;
        self.gap_msgs += o.gap_msgs;
        self.trades_lost += o.trades_lost;
        self.trade_order_errors += o.trade_order_errors;
    }
}

impl Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            frames: self.frames - o.frames,
            bytes: self.bytes - o.bytes,
            quote_frames: self.quote_frames - o.quote_frames,
            snapshot_frames: self.snapshot_frames - o.snapshot_frames,
            quotes_live: self.quotes_live - o.quotes_live,
            quotes_snapshot: self.quotes_snapshot - o.quotes_snapshot,
            ordering_errors: self.ordering_errors - o.ordering_errors,
            subscribed_msgs: self.subscribed_msgs - o.subscribed_msgs,
            error_msgs: self.error_msgs - o.error_msgs,
            feed_msgs: self.feed_msgs - o.feed_msgs,
            pong_msgs: self.pong_msgs - o.pong_msgs,
            other_msgs: self.other_msgs - o.other_msgs,
            parse_errors: self.parse_errors - o.parse_errors,
            negative_latency: self.negative_latency - o.negative_latency,
            staleness_missing: self.staleness_missing - o.staleness_missing,
            unexplained_gaps: self.unexplained_gaps - o.unexplained_gaps,
            gap_unknown: self.gap_unknown - o.gap_unknown,
            trade_frames: self.trade_frames - o.trade_frames,
            trades: self.trades - o.trades,
            gap_msgs: self.gap_msgs - o.gap_msgs,
            trades_lost: self.trades_lost - o.trades_lost,
            trade_order_errors: self.trade_order_errors - o.trade_order_errors,
        }
    }
}

/// How many example messages (errors, close reasons, rejected symbols) a report keeps.
pub const MAX_EXAMPLES: usize = 5;

/// What became of the client connections: counted by the connection tasks (see
/// [`crate::client::Shared`]), written by a `--processes` child into its result, summed over
/// the processes and printed in the report — the same type all the way.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConnectionCounts {
    /// Reading clients subscribed, and those whose setup failed.
    pub connected: u64,
    pub failed: u64,
    /// Reading clients whose connection was lost before the end of the run.
    pub disconnected: u64,
    /// Stalled clients (`--stall`, parent process only) subscribed, and failed.
    pub stall_connected: u64,
    pub stall_failed: u64,
    /// Symbols acknowledged / rejected in `subscribed`, summed over reading clients.
    pub subscribed_symbols: u64,
    pub rejected_symbols: u64,
    /// Reading clients that received at least one live quote frame (or trades frame) during
    /// the measured period: with a running feed, every connected client should.
    pub delivering: u64,
    /// The first [`MAX_EXAMPLES`] messages of each kind.
    pub connect_errors: Vec<String>,
    pub disconnect_reasons: Vec<String>,
    pub rejected_examples: Vec<String>,
}

impl ConnectionCounts {
    /// Adds another process's counts; examples are kept up to [`MAX_EXAMPLES`], in order.
    pub fn add(&mut self, o: &ConnectionCounts) {
        self.connected += o.connected;
        self.failed += o.failed;
        self.disconnected += o.disconnected;
        self.stall_connected += o.stall_connected;
        self.stall_failed += o.stall_failed;
        self.subscribed_symbols += o.subscribed_symbols;
        self.rejected_symbols += o.rejected_symbols;
        self.delivering += o.delivering;
        for (dst, src) in
            [(&mut self.connect_errors, &o.connect_errors), (&mut self.disconnect_reasons, &o.disconnect_reasons), (&mut self.rejected_examples, &o.rejected_examples)]
        {
            for x in src {
                keep_example(dst, x.clone());
            }
        }
    }
}

/// Appends `msg` unless `list` already holds [`MAX_EXAMPLES`] messages.
pub fn keep_example(list: &mut Vec<String>, msg: String) {
    if list.len() < MAX_EXAMPLES {
        list.push(msg);
    }
}

/// One worker thread's share of the statistics.
pub struct WorkerStats {
    pub counters: Counters,
    /// Live-quote latency in µs, measured period only.
    pub latency: Histogram<u64>,
    /// Throttled latency (see [`crate::timing`]), µs, measured period only.
    pub latency_throttled: Histogram<u64>,
    /// Staleness at each live delivery, µs (only with an observer).
    pub staleness: Histogram<u64>,
}

impl WorkerStats {
    pub fn new() -> WorkerStats {
        WorkerStats { counters: Counters::default(), latency: new_latency_histogram(), latency_throttled: new_latency_histogram(), staleness: new_latency_histogram() }
    }
}

pub fn new_latency_histogram() -> Histogram<u64> {
    // 3 significant digits: ±0.1 % — far finer than anything we report.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Distinguishes runs (tests start several in one process) so a thread never writes into the
/// statistics of a run it cached earlier.
static NEXT_RUN_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static LOCAL: RefCell<Option<(u64, Arc<Mutex<WorkerStats>>)>> = const { RefCell::new(None) };
}

/// All worker shares of one run.
pub struct StatsRegistry {
    id: u64,
    workers: Mutex<Vec<Arc<Mutex<WorkerStats>>>>,
}

impl Default for StatsRegistry {
    fn default() -> Self {
        StatsRegistry { id: NEXT_RUN_ID.fetch_add(1, Ordering::Relaxed), workers: Mutex::new(Vec::new()) }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking client task must not take the statistics down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatsRegistry {
    /// Runs `f` on the calling thread's share, creating and registering it on first use.
    /// `f` must not call `with` again (the thread-local is borrowed meanwhile).
    pub fn with<R>(&self, f: impl FnOnce(&mut WorkerStats) -> R) -> R {
        LOCAL.with(|cell| {
            let mut slot = cell.borrow_mut();
            if !matches!(&*slot, Some((id, _)) if *id == self.id) {
                let share = Arc::new(Mutex::new(WorkerStats::new()));
                lock(&self.workers).push(share.clone());
                *slot = Some((self.id, share));
            }
            let share = &slot.as_ref().expect("just set").1;
            f(&mut lock(share))
        })
    }

    /// Sum of all counters so far.
    pub fn totals(&self) -> Counters {
        let mut sum = Counters::default();
        for w in lock(&self.workers).iter() {
            sum.add(&lock(w).counters);
        }
        sum
    }

    /// All latency histograms merged.
    pub fn merged_latency(&self) -> Histogram<u64> {
        self.merged(|w| &w.latency)
    }

    /// One kind of histogram, merged over the workers.
    pub fn merged(&self, pick: impl Fn(&WorkerStats) -> &Histogram<u64>) -> Histogram<u64> {
        let mut h = new_latency_histogram();
        for w in lock(&self.workers).iter() {
            // Same bounds everywhere, so adding cannot fail.
            let _ = h.add(pick(&lock(w)));
        }
        h
    }

    #[cfg(test)]
    pub fn worker_count(&self) -> usize {
        lock(&self.workers).len()
    }
}

/// A histogram as (value, count) pairs of its non-empty buckets: the compact form children
/// send to the parent. Each value is the highest equivalent value of its bucket, so recording
/// it into a histogram of the same bounds lands in the same bucket: the round trip is exact.
#[allow(dead_code)] // used by --processes (next step)
pub fn histogram_to_pairs(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded().map(|v| [v.value_iterated_to(), v.count_at_value()]).collect()
}

/// Adds serialised (value, count) pairs into `h`.
#[allow(dead_code)]
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[[u64; 2]]) {
    for &[v, n] in pairs {
        h.saturating_record_n(v, n);
    }
}
