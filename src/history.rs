//! Bounded in-memory price history per symbol, for chart backfill (`GET /api/history/{symbol}`).
//!
//! Every published quote is folded into one-second and one-minute OHLCV bars of its event time
//! (`ts`), kept in two rings per topic: the last [`SECOND_BARS`] one-second bars and the last
//! [`MINUTE_BARS`] one-minute bars, at most 56 bytes each — about 82 KiB per symbol whatever
//! the feed rate or uptime. Each bar carries the `seq` of the last quote it includes, so a
//! client that backfills and then applies live quotes with a higher seq joins the two without
//! gap or duplicate.
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
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub(crate) fn new() -> History {
        History { seconds: Ring::new(Resolution::Second, SECOND_BARS), minutes: Ring::new(Resolution::Minute, MINUTE_BARS) }
    }

    pub(crate) fn record(&mut self, quote: &Quote) {
        self.seconds.record(quote);
        self.minutes.record(quote);
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
}
