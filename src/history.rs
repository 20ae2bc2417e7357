//! Bounded in-memory price history per symbol: bars for chart backfill
//! (`GET /api/history/{symbol}`) and the `bars:*` channels, and the recent trades for the
//! `trades` channel and its resume.
//!
//! Every published quote is folded into one-second and one-minute OHLCV bars of its event time
//! (`ts`), kept in two rings per topic: the last [`SECOND_BARS`] one-second bars and the last
//! [`MINUTE_BARS`] one-minute bars, at most 56 bytes each — about 82 KiB per symbol whatever
//! the feed rate or uptime. Each bar carries the `seq` of the last quote it includes, so a
//! client that backfills and then applies live quotes with a higher seq joins the two without
//! gap or duplicate.
//!
//! Every published quote is also a trade (its `last` printed with its `size`): the last
//! [`TRADES_KEPT`] trades are kept in a ring, each at most [`TRADE_MAX_AGE_US`] old when read
//! (40 bytes each, 40 KiB per symbol). Sessions of the `trades` channel read from it at their
//! own pace by *position* (a count of trades ever recorded, so that a seq restart on a feed
//! node's restart does not confuse it): the ring is every session's buffer, and a session that
//! falls further behind than it reaches learns exactly which seqs it lost ([`TradeRead`]).
//!
//! The history is updated on the publish path (the topic's own feed is its only writer, so the
//! lock is uncontended but for the rare HTTP reader) because bars need every quote: a
//! subscriber would see conflated updates and miss highs and lows.

use std::collections::VecDeque;

use serde::Serialize;

use crate::quote::Quote;

/// One-second bars kept per symbol (15 minutes).
pub(crate) const SECOND_BARS: usize = 900;
/// One-minute bars kept per symbol (10 hours).
pub(crate) const MINUTE_BARS: usize = 600;

/// Trades kept per symbol for the `trades` channel and its resume (`since`).
pub(crate) const TRADES_KEPT: usize = 1024;
/// A trade older than this (by publish time) is no longer served, even while the ring holds it:
/// a resume reaches back at most this far.
pub(crate) const TRADE_MAX_AGE_US: i64 = 120_000_000;

/// One trade: a published quote's `last` and `size`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trade {
    pub seq: u64,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Publish time on this node's bus, µs since the epoch.
    pub pt: i64,
    pub price: f64,
    pub size: u64,
}

/// What [`History::read_trades`] found from a position on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TradeRead {
    /// Trades from the position on that are no longer held.
    pub lost: u64,
    /// The seq of the first trade handed out (or, when none was, the next seq to come): a
    /// reader that lost trades lost the seqs from after its last one up to this one.
    pub resume_seq: u64,
    /// The position after the last trade handed out.
    pub next: u64,
    /// Whether more trades follow it.
    pub more: bool,
}

/// The recent trades of one symbol.
#[derive(Debug, Default)]
struct TradeRing {
    trades: VecDeque<Trade>,
    /// Trades ever recorded: the position after the newest one.
    recorded: u64,
}

impl TradeRing {
    fn record(&mut self, trade: Trade) {
        // A seq that does not move forward means the symbol started again (a feed node
        // restarted): earlier trades cannot be found by seq any more.
        if self.trades.back().is_some_and(|last| last.seq >= trade.seq) {
            self.trades.clear();
        }
        if self.trades.len() == TRADES_KEPT {
            self.trades.pop_front();
        }
        self.trades.push_back(trade);
        self.recorded += 1;
    }

    /// Position of the oldest trade still served at `now_us`.
    fn first_served(&self, now_us: i64) -> u64 {
        let first = self.recorded - self.trades.len() as u64;
        let stale = self.trades.iter().take_while(|t| now_us - t.pt > TRADE_MAX_AGE_US).count();
        first + stale as u64
    }

    fn at(&self, position: u64) -> &Trade {
        &self.trades[(position - (self.recorded - self.trades.len() as u64)) as usize]
    }
}

/// One OHLCV bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bar {
    /// Start of the bar, ms since the epoch (of the quotes' event time).
    pub t: i64,
    /// First price in the bar.
    pub open: f64,
    /// Highest price.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Last price.
    pub close: f64,
    /// Traded size within the bar.
    pub volume: u64,
    /// Seq of the last quote in the bar.
    pub seq: u64,
}

/// Bar width of a history query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// One-second bars (`1s`).
    #[serde(rename = "1s")]
    Second,
    /// One-minute bars (`1m`).
    #[serde(rename = "1m")]
    Minute,
}

impl Resolution {
    pub(crate) const ALL: [Resolution; 2] = [Resolution::Second, Resolution::Minute];

    pub(crate) fn parse(text: &str) -> Option<Resolution> {
        match text {
            "1s" => Some(Resolution::Second),
            "1m" => Some(Resolution::Minute),
            _ => None,
        }
    }

    fn millis(self) -> i64 {
        match self {
            Resolution::Second => 1000,
            Resolution::Minute => 60_000,
        }
    }
}

#[derive(Debug)]
struct Ring {
    resolution: Resolution,
    capacity: usize,
    bars: VecDeque<Bar>,
}

impl Ring {
    fn new(resolution: Resolution, capacity: usize) -> Ring {
        Ring { resolution, capacity, bars: VecDeque::new() }
    }

    fn record(&mut self, quote: &Quote) {
        let width = self.resolution.millis();
        let start = quote.ts.div_euclid(width) * width;
        match self.bars.back_mut() {
            Some(bar) if bar.t == start => {
                bar.high = bar.high.max(quote.last);
                bar.low = bar.low.min(quote.last);
                bar.close = quote.last;
                bar.volume = bar.volume.saturating_add(quote.size);
                bar.seq = quote.seq;
                return;
            }
            // Time went back (a replay looped or was sought): the old bars no longer lead up
            // to the present, so they go.
            Some(bar) if bar.t > start => self.bars.clear(),
            _ => {}
        }
        if self.bars.len() == self.capacity {
            self.bars.pop_front();
        }
        self.bars.push_back(Bar { t: start, open: quote.last, high: quote.last, low: quote.last, close: quote.last, volume: quote.size, seq: quote.seq });
    }
}

/// The history of one symbol.
#[derive(Debug)]
pub(crate) struct History {
    seconds: Ring,
    minutes: Ring,
    trades: TradeRing,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub(crate) fn new() -> History {
        History { seconds: Ring::new(Resolution::Second, SECOND_BARS), minutes: Ring::new(Resolution::Minute, MINUTE_BARS), trades: TradeRing::default() }
    }

    pub(crate) fn record(&mut self, quote: &Quote) {
        self.seconds.record(quote);
        self.minutes.record(quote);
        self.trades.record(Trade { seq: quote.seq, ts: quote.ts, pt: quote.pt, price: quote.last, size: quote.size });
    }

    /// The position after the newest trade: where a session that wants only what comes next
    /// starts reading.
    pub(crate) fn trades_end(&self) -> u64 {
        self.trades.recorded
    }

    /// The seq of the newest trade held (0 when none is).
    pub(crate) fn newest_trade_seq(&self) -> u64 {
        self.trades.trades.back().map_or(0, |t| t.seq)
    }

    /// The seq of the trade at `position`, if it is held.
    #[cfg(test)]
    pub(crate) fn seq_at(&self, position: u64) -> Option<u64> {
        let ring = &self.trades;
        (position >= ring.recorded - ring.trades.len() as u64 && position < ring.recorded).then(|| ring.at(position).seq)
    }

    /// Where a session resuming after `since` (the last seq its client saw) starts reading, and
    /// whether the ring still reaches back that far (every trade after `since` is served). A
    /// `since` above the newest seq is from another run of the symbol: nothing is recovered.
    pub(crate) fn trades_after(&self, since: u64, now_us: i64) -> (u64, bool) {
        let ring = &self.trades;
        let newest = ring.trades.back().map_or(0, |t| t.seq);
        if since > newest {
            return (ring.recorded, false);
        }
        let first = ring.first_served(now_us);
        let mut position = first;
        while position < ring.recorded && ring.at(position).seq <= since {
            position += 1;
        }
        let complete = since == newest
            // The ring holds a trade at or before `since`: everything after it is here.
            || position > first
            || (position < ring.recorded && ring.at(position).seq == since + 1);
        (position, complete)
    }

    /// Appends to `into` the trades from `position` on, at most `max`, and says how many from
    /// `position` on were no longer held (evicted, or too old).
    pub(crate) fn read_trades(&self, position: u64, now_us: i64, max: usize, into: &mut Vec<Trade>) -> TradeRead {
        let ring = &self.trades;
        let first = ring.first_served(now_us);
        let start = position.max(first);
        let end = ring.recorded.min(start + max as u64);
        into.extend((start..end).map(|p| *ring.at(p)));
        let resume_seq = if start < ring.recorded { ring.at(start).seq } else { ring.trades.back().map_or(0, |t| t.seq) + 1 };
        TradeRead { lost: start - position.min(start), resume_seq, next: end, more: end < ring.recorded }
    }

    /// The last `limit` bars at `resolution`, oldest first.
    pub(crate) fn bars(&self, resolution: Resolution, limit: usize) -> Vec<Bar> {
        let ring = match resolution {
            Resolution::Second => &self.seconds,
            Resolution::Minute => &self.minutes,
        };
        let skip = ring.bars.len().saturating_sub(limit);
        ring.bars.iter().skip(skip).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(seq: u64, ts: i64, last: f64) -> Quote {
        Quote {
            symbol: "A".into(),
            seq,
            ts,
            pt: 0,
            last,
            bid: last - 0.01,
            ask: last + 0.01,
            size: 10,
            volume: 0,
            open: last,
            high: last,
            low: last,
            prev_close: last,
            change: 0.0,
            change_pct: 0.0,
        }
    }

    #[test]
    fn quotes_fold_into_bars_carrying_their_last_seq() {
        let mut history = History::new();
        history.record(&quote(1, 1_000, 10.0));
        history.record(&quote(2, 1_400, 12.0));
        history.record(&quote(3, 1_900, 9.0));
        history.record(&quote(4, 2_100, 11.0));
        let bars = history.bars(Resolution::Second, usize::MAX);
        assert_eq!(bars.len(), 2);
        assert_eq!((bars[0].open, bars[0].high, bars[0].low, bars[0].close, bars[0].volume, bars[0].seq), (10.0, 12.0, 9.0, 9.0, 30, 3));
        assert_eq!((bars[1].t, bars[1].seq), (2_000, 4));
        let minutes = history.bars(Resolution::Minute, usize::MAX);
        assert_eq!((minutes.len(), minutes[0].seq, minutes[0].high), (1, 4, 12.0));
    }

    #[test]
    fn rings_are_bounded() {
        let mut history = History::new();
        for i in 0..(SECOND_BARS as i64 * 3) {
            history.record(&quote(i as u64 + 1, i * 1000, 10.0));
        }
        let bars = history.bars(Resolution::Second, usize::MAX);
        assert_eq!(bars.len(), SECOND_BARS);
        assert_eq!(bars.last().unwrap().seq, SECOND_BARS as u64 * 3);
        assert_eq!(history.bars(Resolution::Second, 10).len(), 10);
        assert!(history.bars(Resolution::Minute, usize::MAX).len() <= MINUTE_BARS);
    }

    #[test]
    fn time_going_back_starts_over() {
        let mut history = History::new();
        history.record(&quote(1, 50_000, 10.0));
        history.record(&quote(2, 1_000, 11.0));
        let bars = history.bars(Resolution::Second, usize::MAX);
        assert_eq!(bars.len(), 1);
        assert_eq!(bars[0].seq, 2);
    }

    fn record_trades(history: &mut History, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            history.record(&quote(seq, seq as i64, 10.0));
        }
    }

    fn seqs(trades: &[Trade]) -> Vec<u64> {
        trades.iter().map(|t| t.seq).collect()
    }

    #[test]
    fn trades_are_read_by_position_and_what_the_ring_dropped_is_counted() {
        let mut history = History::new();
        record_trades(&mut history, 1..=10);
        let mut into = Vec::new();
        let read = history.read_trades(3, 0, 4, &mut into);
        assert_eq!(seqs(&into), [4, 5, 6, 7]);
        assert_eq!((read.lost, read.next, read.resume_seq), (0, 7, 4));
        record_trades(&mut history, 11..=TRADES_KEPT as u64 + 20);
        into.clear();
        // Positions 7..20 (seqs 8..=20) are gone: the oldest held is seq 21.
        let read = history.read_trades(7, 0, 5, &mut into);
        assert_eq!((read.lost, read.resume_seq, read.next), (13, 21, 25));
        assert_eq!(seqs(&into), [21, 22, 23, 24, 25]);
        assert_eq!(history.trades_end(), TRADES_KEPT as u64 + 20);
    }

    #[test]
    fn trades_older_than_the_age_limit_are_not_served() {
        let mut history = History::new();
        record_trades(&mut history, 1..=5);
        let mut into = Vec::new();
        // `pt` is 0 for these: at TRADE_MAX_AGE_US + 1 every one is too old.
        let read = history.read_trades(0, TRADE_MAX_AGE_US + 1, 10, &mut into);
        assert!(into.is_empty());
        assert_eq!((read.lost, read.next, read.resume_seq), (5, 5, 6));
        assert_eq!(history.trades_after(2, TRADE_MAX_AGE_US + 1), (5, false), "a resume cannot reach them either");
    }

    #[test]
    fn a_resume_says_whether_the_ring_reaches_back() {
        let mut history = History::new();
        record_trades(&mut history, 1..=100);
        assert_eq!(history.trades_after(40, 0), (40, true), "from seq 41 on, all held");
        assert_eq!(history.trades_after(100, 0), (100, true), "nothing new: complete");
        assert_eq!(history.trades_after(0, 0), (0, true), "from the first trade");
        assert_eq!(history.trades_after(500, 0), (100, false), "a seq of another run");
        record_trades(&mut history, 101..=TRADES_KEPT as u64 + 100);
        let (position, complete) = history.trades_after(10, 0);
        assert_eq!((position, complete), (100, false), "seqs 11..=100 are gone");
        assert_eq!(history.seq_at(position), Some(101));
        assert_eq!(history.newest_trade_seq(), TRADES_KEPT as u64 + 100);
    }

    #[test]
    fn a_seq_that_goes_back_starts_the_trades_over() {
        let mut history = History::new();
        record_trades(&mut history, 1..=50);
        // A feed node restarted: its seq begins again.
        record_trades(&mut history, 1..=3);
        assert_eq!(history.trades_after(1, 0), (51, true));
        let mut into = Vec::new();
        history.read_trades(0, 0, 100, &mut into);
        assert_eq!(seqs(&into), [1, 2, 3], "positions go on; the old run's trades are gone");
    }
}
