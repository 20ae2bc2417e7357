//! Cheap parsing of server frames and the per-client seq-order check.
//!
//! Every frame a reading client receives goes through [`process`], so it is the load
//! generator's hot path. `quotes` and `trades` frames and `gap` messages are read by the
//! hand-written scanner in [`crate::scan`] (about 3× faster); anything it declines is
//! deserialised by serde into borrowed structs holding only the fields the measurements need
//! (`type`, `snapshot`, and per quote or trade `symbol`, `seq`, `pt`) — no `serde_json::Value`,
//! no owned strings.
//!
//! Trades (`--channels …,trades`) are counted and checked per symbol: each seq one above the
//! previous, unless a `gap` message said the seqs between were lost (their number is counted
//! as trades lost).
//!
//! A v1 message names its type in its JSON (`"type":"quotes"`); over Socket.IO the event's
//! name does (`42["quotes",{"quotes":[...]}]`) and the payload has no `type`: [`process_as`],
//! [`parse_welcome_as`] and [`probe_classify_as`] take the [`Kind`] the transport read, or
//! `None` for a self-describing v1 message.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::scan;
use crate::stats::WorkerStats;
use crate::timing::{self, ObserverLog};

/// A frame as the hot path sees it. Strict about `quotes` (it must be an array of quotes), so
/// frames of other types that happen to carry a differently-shaped `quotes` or `snapshot`
/// field fail here and fall back to [`Head`].
#[derive(Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub snapshot: Option<bool>,
    #[serde(default, borrow)]
    pub quotes: Vec<QuoteLite<'a>>,
}

/// The fields of a quote the load generator uses; everything else is skipped unparsed.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct QuoteLite<'a> {
    /// `Cow` borrows from the frame unless the string contains escapes (it never should).
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(default)]
    pub seq: Option<u64>,
    /// Server publish time, µs since the Unix epoch.
    #[serde(default)]
    pub pt: Option<i64>,
}

/// A `quotes` event's payload (Socket.IO): a [`Frame`] without `type`, `quotes` required.
#[derive(Deserialize)]
pub struct QuotesPayload<'a> {
    #[serde(default)]
    pub snapshot: Option<bool>,
    #[serde(borrow)]
    pub quotes: Vec<QuoteLite<'a>>,
}

/// A `trades` frame or a Socket.IO `trades` event's payload (a `type`, if any, is ignored):
/// the trades' `symbol`, `seq` and `pt`, the rest skipped.
#[derive(Deserialize)]
pub struct TradesPayload<'a> {
    #[serde(borrow)]
    pub trades: Vec<QuoteLite<'a>>,
}

/// A `gap` message or a Socket.IO `gap` event's payload.
#[derive(Deserialize)]
pub struct GapPayload<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    pub from_seq: u64,
    pub to_seq: u64,
}

/// What a message is, when the transport says so rather than the message's own `type`: a
/// Socket.IO event's name, or the request an acknowledgement answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Quotes,
    Trades,
    Gap,
    Subscribed,
    Welcome,
    Feed,
    Pong,
    Error,
    /// Any other name (`unsubscribed`, `subscriptions`, one a newer server adds).
    Other,
}

impl Kind {
    /// The kind of a message named `name` (a v1 `type` or a Socket.IO event name).
    pub fn of_name(name: &str) -> Kind {
        match name {
            "quotes" => Kind::Quotes,
            "trades" => Kind::Trades,
            "gap" => Kind::Gap,
            "subscribed" => Kind::Subscribed,
            "welcome" => Kind::Welcome,
            "feed" => Kind::Feed,
            "pong" => Kind::Pong,
            "error" => Kind::Error,
            _ => Kind::Other,
        }
    }
}

/// Only the message type: the fallback when [`Frame`] does not fit.
#[derive(Deserialize)]
pub struct Head<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
}

/// The `subscribed` acknowledgement (one per connection, so owned data is fine).
#[derive(Deserialize, Debug, Default, Clone)]
pub struct SubAck {
    /// Only the count matters; `IgnoredAny` elements make this a Vec of zero-sized values.
    #[serde(default)]
    pub symbols: Vec<IgnoredAny>,
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    /// The effective throttle the server applies to this subscription.
    #[serde(default)]
    pub throttle_ms: Option<u64>,
}

/// A rejected symbol: `{"symbol":"ZZZ","code":"unknown_symbol"}` as tickerfeed and the peers
/// send it, or a bare name.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Rejected {
    Name(String),
    Entry { symbol: String },
}

impl Rejected {
    pub fn into_symbol(self) -> String {
        match self {
            Rejected::Name(s) | Rejected::Entry { symbol: s } => s,
        }
    }
}

/// What the caller needs to know about a processed frame (the counting is already done).
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A `quotes` frame (live, or the snapshot after `subscribed`).
    Quotes {
        snapshot: bool,
    },
    /// A `trades` frame.
    Trades,
    Subscribed {
        symbols: usize,
        rejected: usize,
        first_rejected: Option<String>,
        throttle_ms: Option<u64>,
    },
    Welcome,
    /// `{"type":"error",...}` from the server.
    Error,
    Other,
    Unparseable,
}

/// FNV-1a: symbols are short and trusted, so a DoS-resistant SipHash buys nothing here.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Per symbol on one connection: the last (highest) seq delivered and when it was received.
#[derive(Clone, Copy)]
pub struct Last {
    pub seq: u64,
    /// Receive time of that delivery, µs since the epoch.
    pub rx: i64,
}

/// Last seq seen per symbol on one connection, plus what the throttle-aware measurements need.
///
/// The protocol promises that `seq` strictly increases per symbol in what one client receives
/// (gaps are fine: throttling merges updates), snapshot quotes included.
#[derive(Default)]
pub struct SeqTracker {
    last: HashMap<Box<str>, Last, BuildHasherDefault<Fnv>>,
    /// Per symbol, the last trade seq accounted for: received, or declared lost by a `gap`.
    trades: HashMap<Box<str>, u64, BuildHasherDefault<Fnv>>,
    /// Effective throttle of this connection (from `subscribed`), µs.
    pub throttle_us: i64,
    /// Aligned delivery: this client's estimate of the grid's anchor (µs since the epoch).
    pub grid_anchor_us: Option<i64>,
    /// The unthrottled observer's record, for staleness and unexplained gaps.
    pub observer: Option<Arc<ObserverLog>>,
}

impl SeqTracker {
    /// Records `seq` for `symbol`; returns false if it does not exceed the last one seen.
    /// On a violation the remembered value stays at the maximum, so one stale quote counts as
    /// one error rather than making every following (correct) quote look wrong.
    #[cfg(test)]
    pub fn observe(&mut self, symbol: &str, seq: u64) -> bool {
        self.deliver(symbol, seq, 0).0
    }

    /// As [`Self::observe`], also recording the receive time; returns (in order, the previous
    /// delivery of the symbol if any).
    pub fn deliver(&mut self, symbol: &str, seq: u64, now: i64) -> (bool, Option<Last>) {
        match self.last.get_mut(symbol) {
            Some(last) if seq <= last.seq => (false, Some(*last)),
            Some(last) => {
                let prev = *last;
                *last = Last { seq, rx: now };
                (true, Some(prev))
            }
            None => {
                self.last.insert(symbol.into(), Last { seq, rx: now });
                (true, None)
            }
        }
    }

    #[cfg(test)]
    pub fn symbols_seen(&self) -> usize {
        self.last.len()
    }

    /// Records a trade of `symbol`; false when it is out of order: its seq not above the last
    /// one accounted for, or more than one above it (a jump no `gap` message explained). The
    /// first trade of a symbol may have any seq. The remembered seq stays at the maximum, so
    /// one stray trade counts as one error.
    pub fn trade(&mut self, symbol: &str, seq: u64) -> bool {
        match self.trades.get_mut(symbol) {
            Some(last) => {
                let next = last.checked_add(1) == Some(seq);
                *last = (*last).max(seq);
                next
            }
            None => {
                self.trades.insert(symbol.into(), seq);
                true
            }
        }
    }

    /// Records a `gap` of `symbol`'s trades `from..=to`; false when it does not follow on from
    /// the last trade accounted for (or is empty: `from` > `to`). A gap before any trade of
    /// the symbol is in order. The seqs it names count as accounted for.
    pub fn trade_gap(&mut self, symbol: &str, from: u64, to: u64) -> bool {
        if from > to {
            return false;
        }
        match self.trades.get_mut(symbol) {
            Some(last) => {
                let next = last.checked_add(1) == Some(from);
                *last = (*last).max(to);
                next
            }
            None => {
                self.trades.insert(symbol.into(), to);
                true
            }
        }
    }
}

/// Counts one text frame into `stats` and checks seq order.
///
/// `now_us` is the receive time (µs since the epoch, read once per frame); latency is recorded
/// for live (non-snapshot) quotes only and only when `record_latency` (measured period).
pub fn process(text: &str, seq: &mut SeqTracker, stats: &mut WorkerStats, now_us: i64, record_latency: bool) -> Event {
    let c = &mut stats.counters;
    c.frames += 1;
    c.bytes += text.len() as u64;
    // Fast path for the frames that matter; serde below is the reference for everything else.
    if let Some(f) = scan::scan_quotes(text) {
        let quotes = f.quotes.iter().map(|q| (q.symbol, q.seq, q.pt));
        count_quotes(f.snapshot, f.quotes.len(), quotes, seq, stats, now_us, record_latency);
        return Event::Quotes { snapshot: f.snapshot };
    }
    // Each scanner declines another type at its `type`, the first key: a few bytes each.
    if let Some(f) = scan::scan_trades(text) {
        count_trades(f.quotes.len(), f.quotes.iter().map(|q| (q.symbol, q.seq)), seq, stats);
        return Event::Trades;
    }
    if let Some(g) = scan::scan_gap(text, true) {
        return count_gap(g.channel, g.symbol, g.from_seq, g.to_seq, seq, stats);
    }
    let frame: Frame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(_) => {
            // Not a quotes-shaped frame: find out its type alone.
            return match serde_json::from_str::<Head>(text) {
                Ok(h) if h.kind != "quotes" => count_named(text, Kind::of_name(&h.kind), seq, stats),
                _ => {
                    stats.counters.parse_errors += 1;
                    Event::Unparseable
                }
            };
        }
    };
    if frame.kind != "quotes" {
        return count_named(text, Kind::of_name(&frame.kind), seq, stats);
    }
    let quotes = frame.quotes.iter().map(|q| (&*q.symbol, q.seq, q.pt));
    let snapshot = frame.snapshot.unwrap_or(false);
    count_quotes(snapshot, frame.quotes.len(), quotes, seq, stats, now_us, record_latency);
    Event::Quotes { snapshot }
}

/// As [`process`], for a message whose kind the transport gave (`Some`: a Socket.IO event or
/// acknowledgement, whose JSON has no `type`) or that names it itself (`None`: v1).
pub fn process_as(kind: Option<Kind>, text: &str, seq: &mut SeqTracker, stats: &mut WorkerStats, now_us: i64, record_latency: bool) -> Event {
    let Some(kind) = kind else {
        return process(text, seq, stats, now_us, record_latency);
    };
    let c = &mut stats.counters;
    c.frames += 1;
    c.bytes += text.len() as u64;
    match kind {
        Kind::Quotes => {}
        Kind::Trades => {
            if let Some(f) = scan::scan_trades_payload(text) {
                count_trades(f.quotes.len(), f.quotes.iter().map(|q| (q.symbol, q.seq)), seq, stats);
                return Event::Trades;
            }
            return count_named(text, kind, seq, stats);
        }
        Kind::Gap => {
            if let Some(g) = scan::scan_gap(text, false) {
                return count_gap(g.channel, g.symbol, g.from_seq, g.to_seq, seq, stats);
            }
            return count_named(text, kind, seq, stats);
        }
        _ => return count_other(text, kind, stats),
    }
    if let Some(f) = scan::scan_quotes_payload(text) {
        let quotes = f.quotes.iter().map(|q| (q.symbol, q.seq, q.pt));
        count_quotes(f.snapshot, f.quotes.len(), quotes, seq, stats, now_us, record_latency);
        return Event::Quotes { snapshot: f.snapshot };
    }
    match serde_json::from_str::<QuotesPayload>(text) {
        Ok(p) => {
            let quotes = p.quotes.iter().map(|q| (&*q.symbol, q.seq, q.pt));
            let snapshot = p.snapshot.unwrap_or(false);
            count_quotes(snapshot, p.quotes.len(), quotes, seq, stats, now_us, record_latency);
            Event::Quotes { snapshot }
        }
        Err(_) => {
            stats.counters.parse_errors += 1;
            Event::Unparseable
        }
    }
}

/// The accounting of one `quotes` frame, whichever parser read it.
fn count_quotes<'q>(
    snapshot: bool,
    n: usize,
    quotes: impl Iterator<Item = (&'q str, Option<u64>, Option<i64>)>,
    seq: &mut SeqTracker,
    stats: &mut WorkerStats,
    now_us: i64,
    record_latency: bool,
) {
    let c = &mut stats.counters;
    c.quote_frames += 1;
    if snapshot {
        c.snapshot_frames += 1;
        c.quotes_snapshot += n as u64;
    } else {
        c.quotes_live += n as u64;
    }
    let throttle_us = seq.throttle_us;
    let observer = seq.observer.clone();
    let rings = match &observer {
        Some(o) if record_latency && !snapshot => Some(o.lock()),
        _ => None,
    };
    for (symbol, s, pt) in quotes {
        let (in_order, prev) = match s {
            Some(s) => seq.deliver(symbol, s, now_us),
            None => (true, None),
        };
        if !in_order {
            stats.counters.ordering_errors += 1;
        }
        if snapshot || !record_latency {
            continue;
        }
        let Some(pt) = pt else { continue };
        let lat = now_us - pt;
        if lat < 0 {
            // Receive before publish: only possible with clock skew (server on another
            // host). Recorded as 0 and counted so the report can say so.
            stats.counters.negative_latency += 1;
        }
        stats.latency.saturating_record(lat.max(0) as u64);
        if !in_order {
            continue;
        }
        let thr = match seq.grid_anchor_us {
            Some(anchor) if throttle_us > 0 => timing::aligned_latency_us(now_us, pt, prev.map(|p| p.rx), anchor, throttle_us),
            _ => timing::throttled_latency_us(now_us, pt, prev.map(|p| p.rx), throttle_us),
        };
        stats.latency_throttled.saturating_record(thr.max(0) as u64);
        if let (Some(rings), Some(prev), Some(s)) = (&rings, prev, s) {
            let look = |q| timing::lookup(rings, symbol, q);
            match timing::staleness_us(now_us, prev.seq, s, pt, look) {
                Some(st) => stats.staleness.saturating_record(st.max(0) as u64),
                None => stats.counters.staleness_missing += 1,
            }
            match timing::gap_unexplained(prev.rx, prev.seq, s, throttle_us, look) {
                Some(true) => stats.counters.unexplained_gaps += 1,
                Some(false) => {}
                None => stats.counters.gap_unknown += 1,
            }
        }
    }
}

/// The accounting of one `trades` frame of `n` trades (symbol, seq), whichever parser read it.
fn count_trades<'q>(n: usize, trades: impl Iterator<Item = (&'q str, Option<u64>)>, seq: &mut SeqTracker, stats: &mut WorkerStats) {
    let c = &mut stats.counters;
    c.trade_frames += 1;
    c.trades += n as u64;
    for (symbol, s) in trades {
        if let Some(s) = s
            && !seq.trade(symbol, s)
        {
            c.trade_order_errors += 1;
        }
    }
}

/// The accounting of one `gap` message: of the `trades` channel, its seqs count as lost and
/// the symbol's trades go on after it; of another channel, it is counted and nothing else.
fn count_gap(channel: &str, symbol: &str, from: u64, to: u64, seq: &mut SeqTracker, stats: &mut WorkerStats) -> Event {
    let c = &mut stats.counters;
    c.gap_msgs += 1;
    if channel == "trades" {
        c.trades_lost += (to + 1).saturating_sub(from);
        if !seq.trade_gap(symbol, from, to) {
            c.trade_order_errors += 1;
        }
    }
    Event::Other
}

/// Counts a message the scanners declined, by its kind: `trades` and `gap` through serde (the
/// reference), anything else as [`count_other`] does. The JSON may carry a `type` or not.
fn count_named(text: &str, kind: Kind, seq: &mut SeqTracker, stats: &mut WorkerStats) -> Event {
    match kind {
        Kind::Trades => match serde_json::from_str::<TradesPayload>(text) {
            Ok(p) => {
                count_trades(p.trades.len(), p.trades.iter().map(|t| (&*t.symbol, t.seq)), seq, stats);
                Event::Trades
            }
            Err(_) => {
                stats.counters.parse_errors += 1;
                Event::Unparseable
            }
        },
        Kind::Gap => match serde_json::from_str::<GapPayload>(text) {
            Ok(g) => count_gap(&g.channel, &g.symbol, g.from_seq, g.to_seq, seq, stats),
            Err(_) => {
                stats.counters.parse_errors += 1;
                Event::Unparseable
            }
        },
        _ => count_other(text, kind, stats),
    }
}

/// Counts a message other than `quotes`, `trades` and `gap`. (A `quotes` kind here is a v1
/// frame that did not parse as one: [`process`] never passes it; `trades` and `gap` go
/// through [`count_named`] and reach here only from a caller that counts them as others.)
fn count_other(text: &str, kind: Kind, stats: &mut WorkerStats) -> Event {
    let c = &mut stats.counters;
    match kind {
        Kind::Subscribed => {
            c.subscribed_msgs += 1;
            let ack: SubAck = serde_json::from_str(text).unwrap_or_default();
            Event::Subscribed {
                symbols: ack.symbols.len(),
                rejected: ack.rejected.len(),
                first_rejected: ack.rejected.into_iter().next().map(Rejected::into_symbol),
                throttle_ms: ack.throttle_ms,
            }
        }
        Kind::Welcome => {
            c.other_msgs += 1;
            Event::Welcome
        }
        Kind::Feed => {
            c.feed_msgs += 1;
            Event::Other
        }
        Kind::Pong => {
            c.pong_msgs += 1;
            Event::Other
        }
        Kind::Error => {
            c.error_msgs += 1;
            Event::Error
        }
        Kind::Quotes | Kind::Trades | Kind::Gap | Kind::Other => {
            c.other_msgs += 1;
            Event::Other
        }
    }
}

/// The `welcome` message, kept for the report. Every field optional: a newer server may
/// drop or add fields without breaking the load generator.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq)]
pub struct Welcome {
    #[serde(default)]
    pub protocol: Option<u64>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub throttle_ms: Option<u64>,
    #[serde(default)]
    pub min_throttle_ms: Option<u64>,
    #[serde(default)]
    pub max_symbols: Option<u64>,
    #[serde(default)]
    pub max_frame_bytes: Option<u64>,
}

/// Parses a frame that must be `welcome`; `Err` carries a short description otherwise.
pub fn parse_welcome(text: &str) -> Result<Welcome, String> {
    match serde_json::from_str::<Head>(text) {
        Ok(h) if h.kind == "welcome" => serde_json::from_str(text).map_err(|e| format!("bad welcome: {e}")),
        Ok(h) => Err(format!("expected welcome, got type {:?}: {}", h.kind, truncate(text, 200))),
        Err(e) => Err(format!("expected welcome, got unparseable frame ({e}): {}", truncate(text, 200))),
    }
}

/// As [`parse_welcome`], for a message whose kind the transport gave (`None`: v1).
pub fn parse_welcome_as(kind: Option<Kind>, text: &str) -> Result<Welcome, String> {
    match kind {
        None => parse_welcome(text),
        Some(Kind::Welcome) => serde_json::from_str(text).map_err(|e| format!("bad welcome: {e}")),
        Some(k) => Err(format!("expected welcome, got a {k:?} message: {}", truncate(text, 200))),
    }
}

/// As [`probe_classify`], for a message whose kind the transport gave (`None`: v1).
pub fn probe_classify_as(kind: Option<Kind>, text: &str) -> ProbeEvent {
    #[derive(Deserialize)]
    struct ProbePayload {
        #[serde(default)]
        snapshot: Option<bool>,
        #[allow(dead_code)]
        quotes: IgnoredAny,
    }
    match kind {
        None => probe_classify(text),
        Some(Kind::Subscribed) => ProbeEvent::Subscribed,
        Some(Kind::Error) => ProbeEvent::Error,
        Some(Kind::Quotes) => match serde_json::from_str::<ProbePayload>(text) {
            Ok(p) if p.snapshot == Some(true) => ProbeEvent::SnapshotQuotes,
            Ok(_) => ProbeEvent::LiveQuotes,
            Err(_) => ProbeEvent::Other,
        },
        Some(_) => ProbeEvent::Other,
    }
}

/// Classifies a frame for the snapshot probe without touching any statistics.
#[derive(Debug, PartialEq)]
pub enum ProbeEvent {
    Subscribed,
    SnapshotQuotes,
    LiveQuotes,
    Error,
    Other,
}

pub fn probe_classify(text: &str) -> ProbeEvent {
    #[derive(Deserialize)]
    struct ProbeHead<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default)]
        snapshot: Option<bool>,
        // Skipped, not collected.
        #[serde(default)]
        #[allow(dead_code)]
        quotes: Option<IgnoredAny>,
    }
    let (kind, snapshot) = match serde_json::from_str::<ProbeHead>(text) {
        Ok(h) => (h.kind.into_owned(), h.snapshot.unwrap_or(false)),
        Err(_) => match serde_json::from_str::<Head>(text) {
            Ok(h) => (h.kind.into_owned(), false),
            Err(_) => return ProbeEvent::Other,
        },
    };
    match kind.as_str() {
        "subscribed" => ProbeEvent::Subscribed,
        "quotes" if snapshot => ProbeEvent::SnapshotQuotes,
        "quotes" => ProbeEvent::LiveQuotes,
        "error" => ProbeEvent::Error,
        _ => ProbeEvent::Other,
    }
}

/// Shortens `s` to at most `max` bytes (on a char boundary) for error messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
