//! Throttle-aware timing: throttled latency, staleness and "unexplained" seq gaps, and the
//! unthrottled observer's record of what was published.
//!
//! Definitions (benchmark spec), per client and per symbol, for live quotes:
//! - throttled latency = receive time − max(`pt`, previous delivery of that symbol + throttle):
//!   the part of the latency the throttle does not excuse;
//! - staleness, sampled at each delivery of (symbol, seq) whose previous delivery had seq s0 =
//!   receive time − `pt`(s0 + 1): how long the oldest quote the client did not yet have (the
//!   first one published after its previous delivery) had been waiting. `pt`(s0 + 1) comes from
//!   the observer — an extra connection at throttle 0 — or from the quote itself when seq = s0+1;
//! - an unexplained gap: seq jumps by more than 1 although the last skipped quote (seq − 1) was
//!   published more than throttle + slack after the previous delivery, i.e. the throttle window
//!   was open and the server still skipped it. Reported, never a failure: a conflating server
//!   under backpressure legitimately skips.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::frame::Fnv;

/// Quotes remembered per symbol by the observer; staleness looks back about one throttle
/// interval, far less than this at any realistic per-symbol rate.
pub const RING: usize = 4096;

/// Slack on top of the throttle before a gap counts as unexplained.
pub const GAP_SLACK_US: i64 = 50_000;

/// receive − max(pt, prev_rx + throttle); `prev_rx` = receive time of the previous delivery of
/// the symbol on this connection (`None` for the first).
pub fn throttled_latency_us(now: i64, pt: i64, prev_rx: Option<i64>, throttle_us: i64) -> i64 {
    let due = match prev_rx {
        Some(p) => pt.max(p + throttle_us),
        None => pt,
    };
    now - due
}

/// [`throttled_latency_us`] for aligned delivery: receive − the grid tick the quote was due at
/// — the first tick at or after its publish, and after the tick of the previous delivery (each
/// tick delivers a symbol at most once). The grid is `anchor + k·period`.
pub fn aligned_latency_us(now: i64, pt: i64, prev_rx: Option<i64>, anchor: i64, period: i64) -> i64 {
    let ceil = |t: i64| if t <= anchor { anchor } else { anchor + (t - anchor + period - 1) / period * period };
    let floor = |t: i64| if t <= anchor { anchor } else { anchor + (t - anchor) / period * period };
    let due = match prev_rx {
        Some(p) => ceil(pt).max(floor(p) + period),
        None => ceil(pt),
    };
    now - due
}

/// Staleness at the delivery of (`seq`, `pt`) after a previous delivery of `prev_seq`:
/// `Some(now − pt(prev_seq + 1))`; `None` if that publish time is unknown (the observer does
/// not have it) or the delivery is out of order.
pub fn staleness_us(now: i64, prev_seq: u64, seq: u64, pt: i64, lookup: impl FnOnce(u64) -> Option<i64>) -> Option<i64> {
    let first_missed = prev_seq.checked_add(1)?;
    if seq == first_missed {
        Some(now - pt)
    } else if seq > first_missed {
        lookup(first_missed).map(|p| now - p)
    } else {
        None
    }
}

/// Whether the step `prev_seq` → `seq` (previous delivery received at `prev_rx`) is a gap the
/// throttle cannot explain. `Some(false)` for no gap, `None` if the publish time of the last
/// skipped quote is unknown.
pub fn gap_unexplained(prev_rx: i64, prev_seq: u64, seq: u64, throttle_us: i64, lookup: impl FnOnce(u64) -> Option<i64>) -> Option<bool> {
    if seq <= prev_seq.saturating_add(1) {
        return Some(false);
    }
    let last_skipped_pt = lookup(seq - 1)?;
    Some(last_skipped_pt - prev_rx > throttle_us + GAP_SLACK_US)
}

/// The last [`RING`] (seq, pt) per symbol, indexed by seq modulo the ring size.
pub struct Ring {
    slots: Box<[(u64, i64)]>,
    last_seq: Option<u64>,
}

impl Ring {
    fn new() -> Ring {
        Ring { slots: vec![(u64::MAX, 0); RING].into_boxed_slice(), last_seq: None }
    }
}

/// What the observer connection has seen, shared with every reading client of the process.
#[derive(Default)]
pub struct ObserverLog {
    rings: Mutex<HashMap<Box<str>, Ring, BuildHasherDefault<Fnv>>>,
    /// Quotes recorded (live and snapshot).
    pub quotes: AtomicU64,
    pub frames: AtomicU64,
    /// Live steps with seq > previous + 1: the observer itself was conflated (or missed
    /// updates), so some publish times are unknown.
    pub gaps: AtomicU64,
    /// Quotes skipped by those gaps (sum of seq − previous − 1).
    pub gap_quotes: AtomicU64,
}

pub type Rings<'a> = std::sync::MutexGuard<'a, HashMap<Box<str>, Ring, BuildHasherDefault<Fnv>>>;

impl ObserverLog {
    /// Records one frame's quotes (symbol, seq, pt).
    pub fn record<'q>(&self, snapshot: bool, quotes: impl Iterator<Item = (&'q str, u64, i64)>) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let (mut n, mut gaps, mut gap_quotes) = (0, 0, 0);
        for (symbol, seq, pt) in quotes {
            n += 1;
            let ring = match rings.get_mut(symbol) {
                Some(r) => r,
                None => rings.entry(symbol.into()).or_insert_with(Ring::new),
            };
            if let Some(last) = ring.last_seq {
                if seq <= last {
                    continue; // stale or duplicate: keep the newer record
                }
                if !snapshot && seq > last + 1 {
                    gaps += 1;
                    gap_quotes += seq - last - 1;
                }
            }
            ring.last_seq = Some(seq);
            ring.slots[(seq % RING as u64) as usize] = (seq, pt);
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.quotes.fetch_add(n, Ordering::Relaxed);
        self.gaps.fetch_add(gaps, Ordering::Relaxed);
        self.gap_quotes.fetch_add(gap_quotes, Ordering::Relaxed);
    }

    /// Locks the record for a batch of lookups (one frame of a client).
    pub fn lock(&self) -> Rings<'_> {
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `pt` of (symbol, seq) if the observer saw it and it is still in the ring.
pub fn lookup(rings: &Rings<'_>, symbol: &str, seq: u64) -> Option<i64> {
    let r = rings.get(symbol)?;
    let (s, pt) = r.slots[(seq % RING as u64) as usize];
    (s == seq).then_some(pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_latency_hand_computed() {
        // First delivery: plain latency.
        assert_eq!(throttled_latency_us(1_000_300, 1_000_000, None, 200_000), 300);
        // Published long after the window opened: plain latency again.
        assert_eq!(throttled_latency_us(1_000_300, 1_000_000, Some(500_000), 200_000), 300);
        // Published while the window was closed (prev 900 ms, throttle 200 ms → due at
        // 1100 ms): latency counts from 1100 ms, not from pt = 1000 ms.
        assert_eq!(throttled_latency_us(1_100_700, 1_000_000, Some(900_000), 200_000), 700);
        // Throttle 0 = plain latency.
        assert_eq!(throttled_latency_us(5_000, 4_000, Some(3_999), 0), 1_000);
    }

    #[test]
    fn aligned_latency_hand_computed() {
        // Grid 1_000_000 + k·200_000. Published at 1_050_000: due at the tick of 1_200_000.
        assert_eq!(aligned_latency_us(1_200_700, 1_050_000, None, 1_000_000, 200_000), 700);
        // Published exactly on a tick: due then.
        assert_eq!(aligned_latency_us(1_400_300, 1_400_000, None, 1_000_000, 200_000), 300);
        // The previous delivery arrived late in the tick of 1_200_000 (at 1_390_000): the next
        // is due at 1_400_000 even for a quote published at 1_210_000.
        assert_eq!(aligned_latency_us(1_400_500, 1_210_000, Some(1_390_000), 1_000_000, 200_000), 500);
        // A quote published before the anchor is due at the anchor.
        assert_eq!(aligned_latency_us(1_000_100, 900_000, None, 1_000_000, 200_000), 100);
    }

    #[test]
    fn staleness_hand_computed() {
        // Published: seq 10 @1000, 11 @1100, 12 @1250, 13 @1400 (µs).
        let pts = [(10u64, 1000i64), (11, 1100), (12, 1250), (13, 1400)];
        let obs = |s: u64| pts.iter().find(|p| p.0 == s).map(|p| p.1);
        // Client had 10, receives 13 at 1500: oldest missing is 11 (pt 1100) → 400.
        assert_eq!(staleness_us(1500, 10, 13, 1400, obs), Some(400));
        // Client had 12, receives 13 at 1450: consecutive → now − pt(13) = 50, no lookup.
        assert_eq!(staleness_us(1450, 12, 13, 1400, |_| panic!("no lookup")), Some(50));
        // Observer does not have 11 → unknown.
        assert_eq!(staleness_us(1500, 10, 13, 1400, |_| None), None);
        // Out of order → no sample.
        assert_eq!(staleness_us(1500, 13, 12, 1250, obs), None);
    }

    #[test]
    fn unexplained_gaps_hand_computed() {
        let pts = [(11u64, 1_150_000i64), (12, 1_300_000), (13, 1_500_000)];
        let obs = |s: u64| pts.iter().find(|p| p.0 == s).map(|p| p.1);
        // Throttle 200 ms, previous delivery (seq 10) at 1.1 s.
        // 10 → 11: no gap.
        assert_eq!(gap_unexplained(1_100_000, 10, 11, 200_000, obs), Some(false));
        // 10 → 13: last skipped 12 published at 1.3 s ≤ 1.1 + 0.2 + 0.05 → explained.
        assert_eq!(gap_unexplained(1_100_000, 10, 13, 200_000, obs), Some(false));
        // Previous delivery at 1.0 s: 1.3 − 1.0 = 0.3 s > 0.25 s → unexplained.
        assert_eq!(gap_unexplained(1_000_000, 10, 13, 200_000, obs), Some(true));
        // Previous delivery at 0.9 s: 1.3 − 0.9 = 0.4 s > 0.25 s → unexplained.
        assert_eq!(gap_unexplained(900_000, 10, 13, 200_000, obs), Some(true));
        // Unknown skipped quote.
        assert_eq!(gap_unexplained(900_000, 10, 13, 200_000, |_| None), None);
    }

    #[test]
    fn observer_ring_records_and_counts_gaps() {
        let log = ObserverLog::default();
        log.record(true, [("A", 5, 50)].into_iter());
        log.record(false, [("A", 6, 60), ("B", 1, 10)].into_iter());
        log.record(false, [("A", 9, 90)].into_iter()); // gap of 2 quotes
        log.record(false, [("A", 8, 80)].into_iter()); // stale: ignored
        let r = log.lock();
        assert_eq!(lookup(&r, "A", 6), Some(60));
        assert_eq!(lookup(&r, "A", 9), Some(90));
        assert_eq!(lookup(&r, "A", 8), None);
        assert_eq!(lookup(&r, "C", 1), None);
        drop(r);
        assert_eq!(log.gaps.load(Ordering::Relaxed), 1);
        assert_eq!(log.gap_quotes.load(Ordering::Relaxed), 2);
        // Old entries are overwritten after RING newer ones.
        log.record(false, [("A", 9 + RING as u64, 1)].into_iter());
        assert_eq!(lookup(&log.lock(), "A", 9), None);
        assert_eq!(lookup(&log.lock(), "A", 9 + RING as u64), Some(1));
    }
}
