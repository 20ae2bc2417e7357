//! What a session's symbols carry besides quotes: the `trades` and `bars:1s` / `bars:1m`
//! channels, and the resume of trades after a reconnect (`since`).
//!
//! A subscription names its channels (default `quotes`); each symbol carries the channels of
//! the request that named it, and those of the wildcard when `*` covers it. The throttle
//! (`session::throttle`) decides, as for quotes, *when* a symbol is due; when it is, a symbol
//! with other channels is marked pending here, and the output then writes, at most a chunk at a
//! time:
//! - `trades`: every trade since the last one sent, read from the symbol's ring in its history
//!   ([`crate::history`]), never conflated. The ring is the session's buffer: a session that
//!   falls behind further than the ring reaches is told exactly which seqs it lost in a `gap`
//!   message, and continues.
//! - `bars:*`: the forming bar, and each bar that closed since (`final: true`, once), the same
//!   bars `/api/history` serves.
//!
//! Owned here: [`ChannelSet`] (the channel names) and [`Channels`], the per-session state.
//! Invariant: it holds one entry per subscribed symbol with a channel other than quotes, so it
//! is bounded like the subscription set (`max_symbols`, or the topics for `*`); a session
//! without one has no `Channels` at all, and its quotes path does not change.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::protocol::{BarOut, ServerMessage, TradeOut};
use crate::bus::{Topic, TopicId};
use crate::history::{Bar, Resolution, Trade};

const QUOTES: u8 = 1;
const TRADES: u8 = 2;
const BARS_1S: u8 = 4;
const BARS_1M: u8 = 8;

/// Every channel, by its name in `channels`.
const NAMES: [(&str, u8); 4] = [("quotes", QUOTES), ("trades", TRADES), ("bars:1s", BARS_1S), ("bars:1m", BARS_1M)];

/// Bytes a trade takes in a `trades` message, about: how many trades fit in a frame.
const TRADE_JSON_BYTES: usize = 112;
/// Bytes a bar takes in a `bars` message, about.
const BAR_JSON_BYTES: usize = 150;
/// Closed bars sent at most per symbol, resolution and pass (a session that was due only after
/// more than this many closed gets the newest of them; `/api/history` has the rest).
const CLOSED_BARS_PER_PASS: usize = 64;

/// The channels a subscription asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ChannelSet(u8);

impl ChannelSet {
    /// The default: quotes only.
    pub(crate) const QUOTES: ChannelSet = ChannelSet(QUOTES);

    /// Reads channel names; an unknown one, or none at all, is an error that lists them.
    pub(crate) fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ChannelSet, String> {
        let mut set = 0;
        for name in names {
            match NAMES.iter().find(|(known, _)| *known == name) {
                Some((_, bit)) => set |= bit,
                None => return Err(format!("unknown channel '{}'; channels: {}", crate::api_error::excerpt(name, 32), Self::all_names())),
            }
        }
        if set == 0 {
            return Err(format!("name at least one channel: {}", Self::all_names()));
        }
        Ok(ChannelSet(set))
    }

    fn all_names() -> String {
        NAMES.map(|(name, _)| name).join(", ")
    }

    pub(crate) fn quotes(self) -> bool {
        self.0 & QUOTES != 0
    }

    pub(crate) fn trades(self) -> bool {
        self.0 & TRADES != 0
    }

    fn bars(self, resolution: Resolution) -> bool {
        self.0 & bars_bit(resolution) != 0
    }

    /// Whether it carries anything but quotes.
    pub(crate) fn beyond_quotes(self) -> bool {
        self.0 & !QUOTES != 0
    }

    fn union(self, other: ChannelSet) -> ChannelSet {
        ChannelSet(self.0 | other.0)
    }

    /// The names of the channels in the set.
    pub(crate) fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES.into_iter().filter(move |(_, bit)| self.0 & bit != 0).map(|(name, _)| name)
    }
}

fn bars_bit(resolution: Resolution) -> u8 {
    match resolution {
        Resolution::Second => BARS_1S,
        Resolution::Minute => BARS_1M,
    }
}

/// A resume in progress: the trades after the client's `since`, up to where live delivery
/// begins, go out flagged `recovered`.
#[derive(Debug)]
struct Backlog {
    /// The ring position at the subscription: from here on, trades are live.
    end: u64,
    /// Whether the ring holds every trade after `since` (found false at the subscription, for
    /// a `since` of another run, or when a read finds trades gone).
    complete: bool,
    /// A recovered message went out already (one goes out even when the backlog is empty).
    told: bool,
}

/// One symbol with channels beyond quotes.
#[derive(Debug)]
struct Entry {
    topic: Arc<Topic>,
    /// The channels of the last request that named the symbol.
    explicit: Option<ChannelSet>,
    /// Whether the wildcard covers it.
    wildcard: bool,
    /// Where its trades are read next (a ring position, see `history`).
    trade_position: u64,
    /// The seq of the last trade sent (0 = none): a loss is told from the next one.
    last_trade_seq: u64,
    /// Per resolution, the start and seq of the last bar sent.
    bars: [Option<(i64, u64)>; 2],
    backlog: Option<Backlog>,
    pending: bool,
}

/// How much of each channel a pass of [`Channels::produce`] wrote, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub trades: u64,
    pub trades_lost: u64,
    /// Bars per resolution, in [`Resolution::ALL`]'s order.
    pub bars: [u64; 2],
}

/// A session's channels beyond quotes.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    entries: HashMap<Arc<str>, Entry>,
    /// The channels of the wildcard subscription, if there is one.
    wildcard: Option<ChannelSet>,
    /// Symbols with output to write, each at most once.
    pending: VecDeque<Arc<str>>,
    /// Scratch for a pass's trades, kept between passes.
    trades: Vec<(Arc<str>, Trade)>,
}

impl Entry {
    fn set(&self, wildcard: Option<ChannelSet>) -> ChannelSet {
        let explicit = self.explicit.unwrap_or_default();
        if self.wildcard { explicit.union(wildcard.unwrap_or(ChannelSet::QUOTES)) } else { explicit }
    }
}

impl Channels {
    /// Applies a subscription: `topics` carry `set` from now on (as covered by the wildcard
    /// when `wildcard`). A symbol that gains `trades` reads them from now on, or, when `since`
    /// has a seq for it, from after that seq. Returns whether the session now needs this state.
    pub(crate) fn subscribe(&mut self, topics: &[Arc<Topic>], set: ChannelSet, wildcard: bool, since: &HashMap<Arc<str>, u64>, now_us: i64) -> bool {
        // Each entry's channels before are judged by the wildcard's channels before.
        let wildcard_before = self.wildcard;
        if wildcard {
            self.wildcard = Some(set);
        }
        for topic in topics {
            let fresh = || Entry { topic: topic.clone(), explicit: None, wildcard: false, trade_position: 0, last_trade_seq: 0, bars: [None; 2], backlog: None, pending: false };
            let entry = self.entries.entry(topic.symbol.clone()).or_insert_with(fresh);
            let before = entry.set(wildcard_before);
            if wildcard {
                entry.wildcard = true;
            } else {
                entry.explicit = Some(set);
            }
            let after = entry.set(self.wildcard);
            let resume = since.get(&topic.symbol).copied();
            if after.trades() && (!before.trades() || resume.is_some()) {
                topic.with_history(|history| match resume {
                    Some(since) => {
                        let (position, complete) = history.trades_after(since, now_us);
                        entry.trade_position = position;
                        entry.last_trade_seq = since;
                        entry.backlog = Some(Backlog { end: history.trades_end(), complete, told: false });
                    }
                    None => {
                        entry.trade_position = history.trades_end();
                        entry.last_trade_seq = history.newest_trade_seq();
                        entry.backlog = None;
                    }
                });
            }
            for resolution in Resolution::ALL {
                if after.bars(resolution) && !before.bars(resolution) {
                    entry.bars[resolution as usize] = None;
                }
            }
            if (after.beyond_quotes() && !entry.pending) && (resume.is_some() || after != before) {
                entry.pending = true;
                self.pending.push_back(topic.symbol.clone());
            }
        }
        self.prune();
        self.is_needed()
    }

    /// Drops `topics` from the explicit subscriptions, and the wildcard if `wildcard`; returns
    /// whether the session still needs this state.
    pub(crate) fn unsubscribe(&mut self, topics: &[TopicId], wildcard: bool) -> bool {
        for entry in self.entries.values_mut() {
            if topics.contains(&entry.topic.id) {
                entry.explicit = None;
            }
            if wildcard {
                entry.wildcard = false;
            }
        }
        if wildcard {
            self.wildcard = None;
        }
        self.prune();
        self.is_needed()
    }

    fn prune(&mut self) {
        let wildcard = self.wildcard;
        self.entries.retain(|_, entry| entry.set(wildcard).beyond_quotes());
    }

    fn is_needed(&self) -> bool {
        !self.entries.is_empty() || self.wildcard.is_some_and(ChannelSet::beyond_quotes)
    }

    /// The channels of the wildcard subscription, for the topics it picks up later.
    pub(crate) fn wildcard(&self) -> Option<ChannelSet> {
        self.wildcard
    }

    /// A subscribed symbol is due (its throttle allows a delivery and it changed): marks its
    /// other channels' output pending. Returns whether it carries quotes.
    pub(crate) fn on_due(&mut self, symbol: &Arc<str>) -> bool {
        let wildcard = self.wildcard;
        let Some(entry) = self.entries.get_mut(symbol) else { return true };
        if !entry.pending {
            entry.pending = true;
            self.pending.push_back(symbol.clone());
        }
        entry.set(wildcard).quotes()
    }

    /// Whether output is waiting to be written.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Per channel, the symbols of `symbols` (a session's subscription list, `*` for the
    /// wildcard) that carry it, for `subscribed`.
    pub(crate) fn describe(channels: Option<&Channels>, symbols: &[String]) -> serde_json::Map<String, Value> {
        let mut by_channel: Vec<(&str, Vec<Value>)> = NAMES.iter().map(|(name, _)| (*name, Vec::new())).collect();
        for symbol in symbols {
            let set = match channels {
                None => ChannelSet::QUOTES,
                Some(channels) if symbol == "*" => channels.wildcard.unwrap_or(ChannelSet::QUOTES),
                Some(channels) => channels.entries.get(symbol.as_str()).and_then(|e| e.explicit).unwrap_or(ChannelSet::QUOTES),
            };
            for name in set.names() {
                if let Some((_, list)) = by_channel.iter_mut().find(|(n, _)| *n == name) {
                    list.push(Value::String(symbol.clone()));
                }
            }
        }
        by_channel.into_iter().filter(|(_, list)| !list.is_empty()).map(|(name, list)| (name.to_string(), Value::Array(list))).collect()
    }

    /// Writes pending output through `emit` (which writes one message and returns its size):
    /// about `room` bytes at most, in messages of about `max_frame` bytes at most. What does not
    /// fit stays pending, read from the ring at the next pass.
    pub(crate) fn produce(&mut self, now_us: i64, room: usize, max_frame: usize, mut emit: impl FnMut(&ServerMessage<'_>) -> usize) -> Written {
        let mut written = Written::default();
        let mut used = 0usize;
        let per_frame = (max_frame / TRADE_JSON_BYTES).max(1);
        let mut trades = std::mem::take(&mut self.trades);
        let mut bars: [Vec<(Arc<str>, Bar, bool)>; 2] = [Vec::new(), Vec::new()];
        let wildcard = self.wildcard;
        while used < room {
            let Some(symbol) = self.pending.pop_front() else { break };
            let Some(entry) = self.entries.get_mut(&symbol) else { continue };
            entry.pending = false;
            let set = entry.set(wildcard);
            if set.trades() {
                if let Some(backlog) = &mut entry.backlog {
                    // A resume's trades go out alone, flagged, before any live one of the symbol.
                    let mut recovered = Vec::new();
                    let max = per_frame.min(backlog.end.saturating_sub(entry.trade_position) as usize);
                    let read = entry.topic.with_history(|history| history.read_trades(entry.trade_position, now_us, max, &mut recovered));
                    // Judged when read, not at the subscription: the ring may have moved on since.
                    // The seqs between `since` and the first trade held are gone (a `since`
                    // of another run is above them all: nothing to name).
                    if (!backlog.told || read.lost > 0) && read.resume_seq > entry.last_trade_seq + 1 {
                        let (from_seq, to_seq) = (entry.last_trade_seq + 1, read.resume_seq - 1);
                        used += emit(&ServerMessage::Gap { channel: "trades", symbol: &symbol, from_seq, to_seq });
                        written.trades_lost += to_seq - from_seq + 1;
                        backlog.complete = false;
                    }
                    entry.trade_position = read.next;
                    if let Some(last) = recovered.last() {
                        entry.last_trade_seq = last.seq;
                    }
                    let done = read.next >= backlog.end;
                    if !recovered.is_empty() || !backlog.told {
                        backlog.told = true;
                        let out = recovered.iter().map(|t| TradeOut::new(&symbol, t)).collect();
                        used += emit(&ServerMessage::Trades { recovered: Some(backlog.complete), trades: out });
                        written.trades += recovered.len() as u64;
                    }
                    if done {
                        entry.backlog = None;
                    }
                    // The rest of the backlog, or the live trades since, at the next turn.
                    entry.pending = true;
                    self.pending.push_back(symbol);
                    continue;
                }
                let before = trades.len();
                let mut read_into = Vec::new();
                let max = (room.saturating_sub(used) / TRADE_JSON_BYTES).max(1);
                let read = entry.topic.with_history(|history| history.read_trades(entry.trade_position, now_us, max, &mut read_into));
                if read.lost > 0 {
                    let (from_seq, to_seq) = (entry.last_trade_seq + 1, read.resume_seq.saturating_sub(1));
                    if from_seq <= to_seq {
                        used += emit(&ServerMessage::Gap { channel: "trades", symbol: &symbol, from_seq, to_seq });
                    }
                    written.trades_lost += read.lost;
                }
                entry.trade_position = read.next;
                if let Some(last) = read_into.last() {
                    entry.last_trade_seq = last.seq;
                }
                trades.extend(read_into.into_iter().map(|t| (symbol.clone(), t)));
                used += (trades.len() - before) * TRADE_JSON_BYTES;
                if read.more {
                    // More than the room took: the rest at the next pass.
                    entry.pending = true;
                    self.pending.push_back(symbol.clone());
                }
            }
            for resolution in Resolution::ALL {
                if !set.bars(resolution) {
                    continue;
                }
                let sent = &mut entry.bars[resolution as usize];
                let recent = entry.topic.history(resolution, CLOSED_BARS_PER_PASS);
                let Some(forming) = recent.last().copied() else { continue };
                if *sent == Some((forming.t, forming.seq)) {
                    continue;
                }
                if let Some((last_t, _)) = *sent {
                    // Bars that closed since the last one sent (it included), once each, final.
                    for closed in recent.iter().filter(|b| b.t >= last_t && b.t < forming.t) {
                        bars[resolution as usize].push((symbol.clone(), *closed, true));
                    }
                }
                bars[resolution as usize].push((symbol.clone(), forming, false));
                *sent = Some((forming.t, forming.seq));
                used += BAR_JSON_BYTES;
            }
        }
        for batch in trades.chunks(per_frame) {
            let out = batch.iter().map(|(symbol, trade)| TradeOut::new(symbol, trade)).collect();
            emit(&ServerMessage::Trades { recovered: None, trades: out });
            written.trades += batch.len() as u64;
        }
        trades.clear();
        self.trades = trades;
        let per_bar_frame = (max_frame / BAR_JSON_BYTES).max(1);
        for resolution in Resolution::ALL {
            for batch in bars[resolution as usize].chunks(per_bar_frame) {
                let out = batch.iter().map(|(symbol, bar, closed)| BarOut { symbol, bar: *bar, closed: *closed }).collect();
                emit(&ServerMessage::Bars { resolution, bars: out });
                written.bars[resolution as usize] += batch.len() as u64;
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Publisher, SymbolInfo};
    use crate::history::TRADES_KEPT;
    use crate::quote::{QuoteDraft, now_micros};

    fn bus_with(symbols: &[&str]) -> (Bus, Vec<Arc<Topic>>) {
        let bus = Bus::default();
        let info = |s: &str| SymbolInfo { name: s.to_string(), sector: String::new(), feed: "sim".into() };
        let topics = symbols.iter().map(|s| bus.register(s, info(s)).unwrap()).collect();
        (bus, topics)
    }

    fn publish(bus: &Bus, topic: &Topic, ts: i64, last: f64) {
        let draft = QuoteDraft { ts, last, bid: last - 0.01, ask: last + 0.01, size: 5, volume: 0, open: last, high: last, low: last, prev_close: last, decimals: 2 };
        bus.publish(topic, &draft);
    }

    /// One pass: every message written, as JSON.
    fn pass(channels: &mut Channels) -> Vec<Value> {
        let mut out = Vec::new();
        channels.produce(now_micros(), 16 * 1024, 16 * 1024, |message| {
            let json = message.to_json();
            out.push(serde_json::from_str(&json).unwrap());
            json.len()
        });
        out
    }

    fn set(names: &[&str]) -> ChannelSet {
        ChannelSet::parse(names.iter().copied()).unwrap()
    }

    #[test]
    fn channel_names_parse_and_unknown_ones_are_named() {
        assert_eq!(set(&["quotes", "trades"]).names().collect::<Vec<_>>(), ["quotes", "trades"]);
        assert!(!ChannelSet::QUOTES.beyond_quotes() && set(&["bars:1m"]).beyond_quotes());
        let error = ChannelSet::parse(["trades", "ticks"]).unwrap_err();
        assert!(error.contains("unknown channel 'ticks'") && error.contains("bars:1s"), "{error}");
        assert!(ChannelSet::parse([]).unwrap_err().contains("at least one"));
    }

    #[test]
    fn a_session_behind_the_ring_is_told_its_gap_then_goes_on() {
        let (bus, topics) = bus_with(&["A"]);
        for i in 0..5 {
            publish(&bus, &topics[0], i, 10.0);
        }
        let mut channels = Channels::default();
        assert!(channels.subscribe(&topics, set(&["trades"]), false, &HashMap::new(), now_micros()));
        for i in 0..(TRADES_KEPT as i64 + 100) {
            publish(&bus, &topics[0], i, 10.0);
        }
        assert!(!channels.on_due(&topics[0].symbol), "a trades-only symbol carries no quotes");
        let (mut seqs, mut gaps) = (Vec::new(), Vec::new());
        let mut passes = 0;
        while channels.has_pending() {
            passes += 1;
            for message in pass(&mut channels) {
                match message["type"].as_str().unwrap() {
                    "trades" => seqs.extend(message["trades"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap())),
                    "gap" => gaps.push((message["from_seq"].as_u64().unwrap(), message["to_seq"].as_u64().unwrap())),
                    other => panic!("unexpected {other}"),
                }
            }
        }
        // Subscribed after seq 5; 1,124 published since, the ring held the last 1,024.
        assert_eq!(gaps, [(6, 105)]);
        assert_eq!(seqs, (106..=5 + TRADES_KEPT as u64 + 100).collect::<Vec<_>>());
        assert!(passes > 1, "a pass writes at most its room: {passes}");
    }

    #[test]
    fn a_resume_sends_its_backlog_flagged_then_live_trades() {
        let (bus, topics) = bus_with(&["A"]);
        for i in 0..20 {
            publish(&bus, &topics[0], i, 10.0);
        }
        let mut channels = Channels::default();
        let since = HashMap::from([(topics[0].symbol.clone(), 15)]);
        channels.subscribe(&topics, set(&["quotes", "trades"]), false, &since, now_micros());
        let first = pass(&mut channels);
        assert_eq!(first[0]["recovered"], true);
        assert_eq!(first[0]["trades"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [16, 17, 18, 19, 20]);
        publish(&bus, &topics[0], 30, 11.0);
        assert!(channels.on_due(&topics[0].symbol), "quotes too");
        let live = pass(&mut channels);
        assert_eq!(live.len(), 1);
        assert!(live[0].get("recovered").is_none(), "live trades are not flagged: {}", live[0]);
        assert_eq!(live[0]["trades"][0]["seq"], 21);
        // Nothing recoverable: the flag says so, and the gap names what is gone.
        let mut far = Channels::default();
        let since = HashMap::from([(topics[0].symbol.clone(), 999)]);
        far.subscribe(&topics, set(&["trades"]), false, &since, now_micros());
        let told = pass(&mut far);
        assert_eq!((told[0]["type"].as_str(), told[0]["recovered"].as_bool()), (Some("trades"), Some(false)), "{told:?}");
    }

    #[test]
    fn bars_go_out_forming_at_each_due_and_final_once() {
        let (bus, topics) = bus_with(&["A"]);
        publish(&bus, &topics[0], 1_000, 10.0);
        let mut channels = Channels::default();
        channels.subscribe(&topics, set(&["bars:1s"]), false, &HashMap::new(), now_micros());
        let first = pass(&mut channels);
        assert_eq!((first[0]["resolution"].as_str(), first[0]["bars"][0]["final"].as_bool(), first[0]["bars"][0]["t"].as_i64()), (Some("1s"), Some(false), Some(1_000)));
        publish(&bus, &topics[0], 1_500, 12.0);
        channels.on_due(&topics[0].symbol);
        let forming = pass(&mut channels);
        assert_eq!((forming[0]["bars"][0]["high"].as_f64(), forming[0]["bars"][0]["final"].as_bool()), (Some(12.0), Some(false)));
        channels.on_due(&topics[0].symbol);
        assert!(pass(&mut channels).is_empty(), "an unchanged bar is not sent again");
        publish(&bus, &topics[0], 2_100, 11.0);
        channels.on_due(&topics[0].symbol);
        let closed = pass(&mut channels);
        let bars = closed[0]["bars"].as_array().unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!((bars[0]["t"].as_i64(), bars[0]["final"].as_bool(), bars[0]["close"].as_f64()), (Some(1_000), Some(true), Some(12.0)));
        assert_eq!((bars[1]["t"].as_i64(), bars[1]["final"].as_bool()), (Some(2_000), Some(false)));
    }

    #[test]
    fn a_wildcard_that_gains_trades_reads_them_from_now_on() {
        let (bus, topics) = bus_with(&["A"]);
        for i in 0..50 {
            publish(&bus, &topics[0], i, 10.0);
        }
        let mut channels = Channels::default();
        // A has an entry of its own (bars), and `*` covers it with quotes; then `*` asks for trades.
        channels.subscribe(&topics, set(&["bars:1s"]), false, &HashMap::new(), now_micros());
        channels.subscribe(&topics, set(&["quotes"]), true, &HashMap::new(), now_micros());
        pass(&mut channels);
        channels.subscribe(&topics, set(&["quotes", "trades"]), true, &HashMap::new(), now_micros());
        publish(&bus, &topics[0], 60, 11.0);
        channels.on_due(&topics[0].symbol);
        let messages = pass(&mut channels);
        assert!(messages.iter().all(|m| m["type"] != "gap"), "nothing before the subscription is owed: {messages:?}");
        let trades: Vec<_> = messages.iter().filter(|m| m["type"] == "trades").flat_map(|m| m["trades"].as_array().unwrap().clone()).collect();
        assert_eq!(trades.iter().map(|t| t["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [51]);
    }

    #[test]
    fn unsubscribing_prunes_and_describe_lists_each_channel() {
        let (_bus, topics) = bus_with(&["A", "B"]);
        let mut channels = Channels::default();
        channels.subscribe(&topics[..1], set(&["trades"]), false, &HashMap::new(), now_micros());
        channels.subscribe(&topics, set(&["quotes", "bars:1m"]), true, &HashMap::new(), now_micros());
        let described = Channels::describe(Some(&channels), &["A".to_string(), "*".to_string()]);
        assert_eq!(Value::Object(described), serde_json::json!({"quotes": ["*"], "trades": ["A"], "bars:1m": ["*"]}));
        assert!(channels.unsubscribe(&[], true), "A still has trades");
        assert_eq!(channels.entries.len(), 1);
        assert!(!channels.unsubscribe(&[topics[0].id], false), "nothing beyond quotes is left");
        assert!(channels.entries.is_empty());
        assert_eq!(Value::Object(Channels::describe(None, &["B".to_string()])), serde_json::json!({"quotes": ["B"]}));
    }
}
