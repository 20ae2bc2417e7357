//! The replay feed's runtime: merges the ticks of its files in timestamp order and publishes
//! them paced by a [`Pacer`], under pause, resume, seek and speed commands.
//!
//! Parsing lives in [`format`] (file formats, bad rows), [`timestamp`] (date and time styles)
//! and [`intrabar`] (the path a bar's ticks follow). Everything is loaded before the server
//! starts, so a bad file stops startup with its name, and the running feed does no I/O.
//!
//! Invariants: seq never goes back (the bus assigns it, and a loop or a seek only moves the
//! replay position); session statistics (open, high, low, volume, previous close) are those of
//! the UTC calendar day of the quote's `ts`, recomputed from the data on a seek; a seek outside
//! the data (before its first row or after its last) is refused and changes nothing.

pub(crate) mod format;
pub(crate) mod intrabar;
pub(crate) mod timestamp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use self::format::{FileOptions, load_file};
use self::timestamp::DAY_MS;
use super::{
    ControlAction, ControlError, ControlRequest, DayStats, FeedControl, FeedEvent, FeedHandle, FeedKind, FeedState, FeedStatus, Pacer, StartError, control_pair, iso_millis,
    utc_day,
};
use crate::bus::{Publisher, SymbolInfo, Topic};
use crate::feed::FeedConfig;
use crate::quote::synthetic_spread;

/// Rows published between yields to the executor when replaying as fast as possible.
const BATCH: usize = 1024;
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Spread given to rows that carry no bid and ask, as a fraction of the price.
const SYNTHETIC_SPREAD: f64 = 0.0002;

/// One row (or intrabar tick) ready to publish.
#[derive(Debug, Clone)]
struct Event {
    ts: i64,
    symbol: u32,
    price: f64,
    size: u64,
    bid: Option<f64>,
    ask: Option<f64>,
    volume: Option<u64>,
    /// Share of a "row" for fixed-interval pacing: 1 for a row, 1/n for one of a bar's n ticks.
    weight: f32,
}

struct ReplaySymbol {
    topic: Arc<Topic>,
    decimals: u8,
    stats: DayStats,
}

/// Loads every file, registers the symbols and spawns the feed task.
pub(crate) fn start(config: &FeedConfig, publisher: Arc<dyn Publisher>, events: broadcast::Sender<FeedEvent>) -> Result<FeedHandle, StartError> {
    let mut index: HashMap<Arc<str>, u32> = HashMap::new();
    let mut names: Vec<(Arc<str>, u8)> = Vec::new();
    let mut rows: Vec<Event> = Vec::new();
    let (mut rows_read, mut rows_skipped) = (0u64, 0u64);
    for (path, symbol) in &config.files {
        let options = FileOptions { symbol: symbol.clone(), seed: config.seed, ticks_per_bar: config.ticks_per_bar };
        let loaded = load_file(path, &options)?;
        rows_read += loaded.rows_read;
        rows_skipped += loaded.rows_skipped;
        let weight = if matches!(loaded.format, format::FileFormat::Bars) { 1.0 / config.ticks_per_bar as f32 } else { 1.0 };
        for tick in loaded.ticks {
            let id = *index.entry(tick.symbol.clone()).or_insert_with(|| {
                let decimals = loaded.decimals.get(&tick.symbol).copied().unwrap_or(2);
                names.push((tick.symbol.clone(), decimals));
                (names.len() - 1) as u32
            });
            let decimals = loaded.decimals.get(&tick.symbol).copied().unwrap_or(2);
            if decimals > names[id as usize].1 {
                names[id as usize].1 = decimals;
            }
            rows.push(Event { ts: tick.ts, symbol: id, price: tick.price, size: tick.size.unwrap_or(0), bid: tick.bid, ask: tick.ask, volume: tick.volume, weight });
        }
    }
    // Files are each sorted; a stable sort merges them in timestamp order, file order on ties.
    rows.sort_by_key(|e| e.ts);
    if rows.is_empty() {
        return Err(StartError::Invalid { feed: config.name.clone(), message: "no usable row in any file".into() });
    }
    let mut symbols = Vec::with_capacity(names.len());
    for (name, decimals) in &names {
        let symbol = format!("{name}{}", config.suffix);
        let info = SymbolInfo { name: name.to_string(), sector: "Replay".into(), feed: config.name.as_str().into() };
        let topic = publisher.register(&symbol, info)?;
        symbols.push(ReplaySymbol { topic, decimals: *decimals, stats: DayStats::new(i64::MIN, f64::NAN) });
    }
    let mut status = FeedStatus::new(&config.name, FeedKind::Replay, config.speed, symbols.len());
    status.rows_read = rows_read;
    status.rows_skipped = rows_skipped;
    status.clock = Some(rows[0].ts);
    status.clock_iso = Some(iso_millis(rows[0].ts));
    tracing::info!(feed = %config.name, rows = rows.len(), symbols = symbols.len(), skipped = rows_skipped, "replay loaded");
    let (handle, control) = control_pair(status, events);
    let replay = Replay {
        rows,
        symbols,
        position: 0,
        interval_ms: config.interval_ms,
        loop_replay: config.loop_replay,
        rank: Vec::new(),
        pacer: Pacer::new(Instant::now(), 0.0, config.speed),
        published: 0,
        control,
        publisher,
    };
    tokio::spawn(replay.run());
    Ok(handle)
}

/// What a replay's speed may be, as an error message states it.
const SPEED_RULE: &str = "a replay's speed (history seconds per wall second) must be >= 0 and <= 1e12; 0 replays as fast as possible";

fn speed_accepted(value: f64) -> bool {
    (0.0..=super::MAX_SPEED).contains(&value)
}

struct Replay {
    rows: Vec<Event>,
    symbols: Vec<ReplaySymbol>,
    position: usize,
    /// Fixed wall interval per row instead of the timestamps, when set.
    interval_ms: Option<f64>,
    loop_replay: bool,
    /// Cumulative row weights, for fixed-interval pacing (empty otherwise).
    rank: Vec<f64>,
    pacer: Pacer,
    published: u64,
    control: FeedControl,
    publisher: Arc<dyn Publisher>,
}

impl Replay {
    /// The pacing coordinate of a row: its time, or its rank in fixed-interval mode.
    fn feed_ms(&self, position: usize) -> f64 {
        match self.interval_ms {
            Some(interval) => self.rank.get(position).copied().unwrap_or(0.0) * interval,
            None => self.rows[position.min(self.rows.len() - 1)].ts as f64,
        }
    }

    /// Speed given to the pacer: the configured one, or 1 (wall ms) in fixed-interval mode.
    fn pacer_speed(&self, speed: f64) -> f64 {
        if self.interval_ms.is_some() { 1.0 } else { speed }
    }

    fn build_rank(&mut self) {
        if self.interval_ms.is_some() {
            let mut total = 0.0;
            self.rank = self
                .rows
                .iter()
                .map(|row| {
                    let at = total;
                    total += row.weight as f64;
                    at
                })
                .collect();
        } else {
            self.rank = Vec::new();
        }
    }

    async fn run(mut self) {
        self.build_rank();
        let speed = self.control.status().speed;
        self.pacer.reanchor(Instant::now(), self.feed_ms(0), self.pacer_speed(speed));
        self.control.update(true, |s| s.state = FeedState::Running);
        let mut next_status = Instant::now() + STATUS_EVERY;
        loop {
            if self.position >= self.rows.len() {
                if self.loop_replay {
                    self.position = 0;
                    let speed = self.pacer.speed();
                    self.pacer.reanchor(Instant::now(), self.feed_ms(0), speed);
                } else if !self.finished().await {
                    return;
                }
                continue;
            }
            let now = Instant::now();
            if let Some(due) = self.pacer.deadline(self.feed_ms(self.position)) {
                if due > now {
                    tokio::select! {
                        _ = sleep_until(due) => {}
                        request = self.control.commands.recv() => match request {
                            Some(request) => self.handle(request).await,
                            None => return,
                        },
                    }
                    continue;
                }
            }
            let mut lag = 0.0;
            for _ in 0..BATCH {
                if self.position >= self.rows.len() {
                    break;
                }
                let feed_ms = self.feed_ms(self.position);
                if self.pacer.deadline(feed_ms).is_some_and(|due| due > now) {
                    break;
                }
                lag = self.pacer.lag_seconds(now, feed_ms);
                self.publish(self.position);
                self.position += 1;
            }
            if now >= next_status || self.position >= self.rows.len() {
                next_status = now + STATUS_EVERY;
                self.report(lag);
            }
            tokio::task::yield_now().await;
            // Commands waiting while rows are published as fast as possible.
            if let Ok(request) = self.control.commands.try_recv() {
                self.handle(request).await;
            }
        }
    }

    fn report(&self, lag: f64) {
        let published = self.published;
        let clock = self.rows[self.position.saturating_sub(1).min(self.rows.len() - 1)].ts;
        self.control.update(false, |s| {
            s.quotes_published = published;
            s.clock = Some(clock);
            s.clock_iso = Some(iso_millis(clock));
            s.lag_seconds = lag;
        });
    }

    fn publish(&mut self, index: usize) {
        let row = &self.rows[index];
        let symbol = &mut self.symbols[row.symbol as usize];
        symbol.stats.trade(utc_day(row.ts), row.price, row.size);
        if let Some(volume) = row.volume {
            symbol.stats.set_volume(volume);
        }
        let (bid, ask) = match (row.bid, row.ask) {
            (Some(bid), Some(ask)) if bid < ask => (bid, ask),
            _ => synthetic_spread(row.price, SYNTHETIC_SPREAD, symbol.decimals),
        };
        let draft = symbol.stats.draft(row.ts, bid, ask, row.size, symbol.decimals);
        self.publisher.publish(&symbol.topic, &draft);
        self.published += 1;
    }

    /// The end of the data without looping: report it and serve commands until a seek moves
    /// the position back into the data. Returns false when the feed is being dropped.
    async fn finished(&mut self) -> bool {
        self.report(0.0);
        self.control.update(true, |s| s.state = FeedState::Finished);
        while let Some(request) = self.control.commands.recv().await {
            self.handle(request).await;
            if self.position < self.rows.len() {
                return true;
            }
        }
        false
    }

    async fn handle(&mut self, request: ControlRequest) {
        match request.action {
            ControlAction::Pause => {
                if self.control.status().state != FeedState::Running {
                    let _ = request.reply.send(Ok(self.control.status()));
                    return;
                }
                let status = self.control.update(true, |s| {
                    s.state = FeedState::Paused;
                    s.lag_seconds = 0.0;
                });
                let _ = request.reply.send(Ok(status));
                while let Some(request) = self.control.commands.recv().await {
                    match request.action {
                        ControlAction::Resume => {
                            let position = self.position;
                            self.pacer.resume(Instant::now(), self.feed_ms(position));
                            let status = self.control.update(true, |s| s.state = FeedState::Running);
                            let _ = request.reply.send(Ok(status));
                            return;
                        }
                        ControlAction::Pause => {
                            let _ = request.reply.send(Ok(self.control.status()));
                        }
                        action => {
                            let answer = self.apply(action, FeedState::Paused);
                            let _ = request.reply.send(answer);
                        }
                    }
                }
            }
            ControlAction::Resume => {
                let _ = request.reply.send(Ok(self.control.status()));
            }
            action => {
                let state = if self.position >= self.rows.len() { FeedState::Finished } else { FeedState::Running };
                let answer = self.apply(action, state);
                let _ = request.reply.send(answer);
            }
        }
    }

    /// Seek and speed, in any state. `state` is the state the feed is in.
    fn apply(&mut self, action: ControlAction, state: FeedState) -> Result<FeedStatus, ControlError> {
        match action {
            ControlAction::Speed(value) => {
                if !speed_accepted(value) {
                    return Err(ControlError::InvalidSpeed { feed: self.control.status().name.to_string(), value, accepts: SPEED_RULE });
                }
                // A speed replaces fixed-interval pacing: from now on rows follow their times.
                self.interval_ms = None;
                self.rank = Vec::new();
                let position = self.position.min(self.rows.len() - 1);
                self.pacer.reanchor(Instant::now(), self.feed_ms(position), value);
                Ok(self.control.update(true, |s| s.speed = value))
            }
            ControlAction::Seek { to, whole_day } => {
                // One rule for both ends: a target outside the data is refused and the feed
                // stays where it was. (Clamping the start but not the end, as before, made the
                // same mistake succeed or fail depending on its direction.) A date names its
                // whole day, so the data's first day is inside even when its first row is not
                // at midnight (what a date picker sends).
                let (first, last) = (self.rows[0].ts, self.rows[self.rows.len() - 1].ts);
                let starts_before = if whole_day { to + DAY_MS <= first } else { to < first };
                if starts_before || to > last {
                    return Err(ControlError::SeekOutOfRange { requested: to, first, last });
                }
                let position = self.rows.partition_point(|row| row.ts < to);
                self.seek_to(position);
                let clock = self.rows[position].ts;
                let state = if state == FeedState::Finished { FeedState::Running } else { state };
                Ok(self.control.update(true, |s| {
                    s.state = state;
                    s.clock = Some(clock);
                    s.clock_iso = Some(iso_millis(clock));
                }))
            }
            ControlAction::Pause | ControlAction::Resume => Ok(self.control.status()),
        }
    }

    /// Moves to `position` and recomputes every symbol's session statistics as a straight
    /// replay up to it would have left them.
    fn seek_to(&mut self, position: usize) {
        for symbol in &mut self.symbols {
            symbol.stats = DayStats::new(i64::MIN, f64::NAN);
        }
        for row in &self.rows[..position] {
            let stats = &mut self.symbols[row.symbol as usize].stats;
            stats.trade(utc_day(row.ts), row.price, row.size);
            if let Some(volume) = row.volume {
                stats.set_volume(volume);
            }
        }
        self.position = position;
        let speed = self.pacer.speed();
        self.pacer.reanchor(Instant::now(), self.feed_ms(position), speed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_rule_matches_its_text() {
        assert!(SPEED_RULE.contains(">= 0 and <= 1e12") && super::super::MAX_SPEED == 1e12);
        for (value, accepted) in [(0.0, true), (-0.0, true), (-1e-9, false), (1e12, true), (1.000001e12, false), (f64::NAN, false), (f64::INFINITY, false)] {
            assert_eq!(speed_accepted(value), accepted, "speed {value}");
        }
    }
}
