//! The topic bus: one topic per symbol holding its latest quote and seq, and the wake-up path
//! from a publish to the sessions that wait for that symbol.
//!
//! Architecture invariants:
//! - **A publish costs the same whatever the number of listeners.** [`Bus::publish`] stores the
//!   new quote in the topic's slot, bumps its seq and, if the topic is not already queued, pushes
//!   its id onto the dispatch queue: O(1), no allocation per listener, no lock held by sessions.
//! - **Nobody is handed an unbounded queue.** A topic keeps only its latest value. Sessions are
//!   *woken*, never sent quotes: a session that wants to hear about the next change of a symbol
//!   *arms* it ([`Topic::arm`]); the dispatcher task fires each armed registration once, telling
//!   the session which topic changed. A session re-arms a symbol only when it is ready for that
//!   symbol again (its throttle interval elapsed), so the wake-up work is proportional to what is
//!   delivered, not to what is published, and a session holds at most one registration per topic.
//!   A session that just delivered unthrottled symbols can instead ask for one wake-up after the
//!   next dispatch round, whatever topic it is for ([`Bus::wake_after_next_dispatch`]): one
//!   registration per session instead of one per symbol, at most one per session at a time.
//! - **Topics are never removed** and are only created by feeds (never by client input), so the
//!   topic table is bounded by the feeds' configured symbols.
//!
//! A distributed backend (Redis pub/sub, a later issue) implements [`Publisher`]: feeds publish
//! through it, it forwards to the shared channel and applies what arrives to this local topic
//! table with [`Bus::apply`]. Sessions only ever read the local table, so neither feeds nor
//! sessions change when the backend does.

pub(crate) mod redis;
pub(crate) mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::Waker;

use arc_swap::ArcSwapOption;
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, watch};

use crate::history::{Bar, History, Resolution};
use crate::quote::{PublishedQuote, Quote, QuoteDraft, SymbolError, normalise_symbol, now_micros};

/// Why a symbol a client gave names no topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FindError {
    /// Not a symbol at all; `text` is what was given, trimmed and cut to 32 characters.
    #[error("'{text}' is not a symbol: it {reason}")]
    Invalid { text: String, reason: SymbolError },
    /// A valid symbol (normalised) that no feed publishes.
    #[error("unknown symbol '{0}'")]
    Unknown(String),
}

/// Index of a topic in the bus's table.
pub(crate) type TopicId = u32;

/// Reference data of a symbol, as `/api/symbols` lists it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SymbolInfo {
    pub name: String,
    pub sector: String,
    /// The feed that publishes this symbol.
    pub feed: Arc<str>,
}

/// Why a symbol could not be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BusError {
    #[error("symbol '{symbol}' is published by two feeds: '{first}' and '{second}' (give one of them a symbol suffix)")]
    DuplicateSymbol { symbol: String, first: String, second: String },
}

/// Where feeds publish quotes. The in-process [`Bus`] implements it directly.
pub(crate) trait Publisher: Send + Sync {
    /// Declares a symbol before its first quote. Fails when another feed already owns it.
    fn register(&self, symbol: &str, info: SymbolInfo) -> Result<Arc<Topic>, BusError>;
    /// Publishes the next quote of `topic`; returns the seq it was given.
    fn publish(&self, topic: &Topic, draft: &QuoteDraft) -> u64;
    /// Publishes the quote after `skip` seqs that are consumed with nothing published for them
    /// (an injected `gap`, `fault`): the seq jumps by `skip + 1`; returns the seq it was given.
    fn publish_skipping(&self, topic: &Topic, draft: &QuoteDraft, skip: u64) -> u64;
}

/// What a session shares with the bus: the topics that fired, and the waker of whatever
/// turns them into frames (the session's response body, see `session::output`).
///
/// The dirty list holds at most one entry per topic the session armed, and a session arms a
/// topic at most once until it fires, so it is bounded by the number of topics.
#[derive(Debug, Default)]
pub(crate) struct SessionSignal {
    dirty: Mutex<Vec<TopicId>>,
    waker: AtomicWaker,
    /// Set by [`SessionSignal::wake`], cleared by the consumer when it has looked at everything:
    /// "there may be output the consumer has not produced yet".
    woken: AtomicBool,
    /// Whether the session is on the bus's list of [`Bus::wake_after_next_dispatch`], so that
    /// it is there at most once.
    listed: AtomicBool,
}

impl SessionSignal {
    fn fire(&self, topic: TopicId) {
        self.dirty.lock().expect("dirty lock").push(topic);
        self.wake();
    }

    /// Moves the ids of the topics that fired since the last call into `into`.
    pub(crate) fn take_dirty(&self, into: &mut Vec<TopicId>) {
        let mut dirty = self.dirty.lock().expect("dirty lock");
        into.append(&mut dirty);
    }

    /// Wakes the consumer (from any thread).
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Registers the consumer's waker and clears the woken flag. Call it *before* looking at
    /// the state, so that a wake racing with the look is not lost.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
        self.woken.store(false, Ordering::Release);
    }

    /// Marks that the consumer stopped with output possibly still pending.
    pub(crate) fn set_woken(&self) {
        self.woken.store(true, Ordering::Release);
    }

    /// Whether the consumer was woken (or stopped with output pending) and has not looked since.
    pub(crate) fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    /// Resolves once a topic has fired.
    #[cfg(test)]
    pub(crate) async fn fired(&self) {
        std::future::poll_fn(|cx| {
            self.register(cx.waker());
            if self.dirty.lock().expect("dirty lock").is_empty() { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        })
        .await
    }
}

/// One worker thread's copy of the latest quote of each topic it looks at, refreshed when the
/// topic's quote changes. Sessions on a thread look at each new quote once per subscriber —
/// hundreds of looks per quote in a busy feed — and a look through the topic's `ArcSwap` costs
/// two atomic read-modify-writes (its debt slot taken, then paid back); a look here costs a plain
/// load of the topic's pointer, and the `ArcSwap` is read once per new quote per thread.
///
/// Bounded by the topic table: one entry per topic, each holding its topic and the one quote the
/// thread saw last (kept alive until the thread looks at the topic again).
#[derive(Default)]
pub(crate) struct LatestCache {
    entries: Vec<Option<arc_swap::cache::Cache<LatestOf, Option<Arc<PublishedQuote>>>>>,
}

/// A topic seen as its latest-quote cell, which is what an `arc_swap` cache reads.
struct LatestOf(Arc<Topic>);

impl std::ops::Deref for LatestOf {
    type Target = ArcSwapOption<PublishedQuote>;

    fn deref(&self) -> &Self::Target {
        &self.0.latest
    }
}

impl LatestCache {
    /// `topic`'s latest quote. Current as of the caller's last [`Topic::seq`] read at least: the
    /// publisher stores the quote before the seq, and that read acquires it.
    pub(crate) fn latest(&mut self, topic: &Arc<Topic>) -> Option<&Arc<PublishedQuote>> {
        let index = topic.id as usize;
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, || None);
        }
        let entry = &mut self.entries[index];
        // Another bus's topic of the same id (tests run several buses on one thread) is a miss.
        if !entry.as_ref().is_some_and(|cache| std::ptr::eq(cache.arc_swap(), &topic.latest)) {
            *entry = Some(arc_swap::cache::Cache::new(LatestOf(topic.clone())));
        }
        entry.as_mut().and_then(|cache| cache.load().as_ref())
    }
}

thread_local! {
    static LATEST: std::cell::RefCell<LatestCache> = std::cell::RefCell::default();
}

/// Lends `f` this thread's [`LatestCache`]. Not reentrant: `f` must not call this again.
pub(crate) fn with_latest_cache<R>(f: impl FnOnce(&mut LatestCache) -> R) -> R {
    LATEST.with_borrow_mut(f)
}

#[derive(Debug, Default)]
struct Waiters {
    armed: Vec<Weak<SessionSignal>>,
    /// Length at which dead registrations (closed sessions) are swept out; doubles with the
    /// number of live ones so sweeping stays amortised O(1) per registration.
    sweep_at: usize,
}

/// One symbol's topic.
#[derive(Debug)]
pub struct Topic {
    pub(crate) id: TopicId,
    pub(crate) symbol: Arc<str>,
    pub(crate) info: SymbolInfo,
    latest: ArcSwapOption<PublishedQuote>,
    /// Seq of the latest published quote (0 = none yet). Written by the topic's single feed.
    seq: AtomicU64,
    waiters: Mutex<Waiters>,
    /// Whether the topic is on the dispatch queue already.
    queued: AtomicBool,
    /// Number of sessions subscribed (explicitly or by wildcard).
    subscribers: AtomicUsize,
    /// Recent bars for chart backfill; written by the topic's feed on publish.
    history: Mutex<History>,
}

impl Topic {
    fn new(id: TopicId, symbol: Arc<str>, info: SymbolInfo) -> Topic {
        Topic {
            id,
            symbol,
            info,
            latest: ArcSwapOption::empty(),
            seq: AtomicU64::new(0),
            waiters: Mutex::new(Waiters { armed: Vec::new(), sweep_at: 64 }),
            queued: AtomicBool::new(false),
            subscribers: AtomicUsize::new(0),
            history: Mutex::new(History::new()),
        }
    }

    /// Seq of the latest quote, 0 before the first.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// The latest quote, if any was published.
    pub(crate) fn latest(&self) -> Option<Arc<PublishedQuote>> {
        self.latest.load_full()
    }

    /// Registrations waiting for this topic's next publish (including those of sessions that
    /// ended since, until they are swept).
    pub(crate) fn registrations(&self) -> usize {
        self.waiters.lock().expect("waiters lock").armed.len()
    }

    /// Asks to be woken once at the next publish of this topic. The caller must check
    /// [`Topic::seq`] *after* arming, so that a publish racing with the call is not missed.
    pub(crate) fn arm(&self, signal: &Arc<SessionSignal>) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        if waiters.armed.len() >= waiters.sweep_at {
            waiters.armed.retain(|w| w.strong_count() > 0);
            waiters.sweep_at = (waiters.armed.len() * 2).max(64);
        }
        waiters.armed.push(Arc::downgrade(signal));
    }

    /// The last `limit` bars of this symbol and the seq of the latest quote they include.
    pub fn history(&self, resolution: Resolution, limit: usize) -> Vec<Bar> {
        self.history.lock().expect("history lock").bars(resolution, limit)
    }

    /// Lends the symbol's history (bars and recent trades) to `f`, under its lock: keep `f`
    /// short, the feed's next publish waits for it.
    pub(crate) fn with_history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.history.lock().expect("history lock"))
    }

    pub(crate) fn subscriber_added(&self) {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn subscriber_removed(&self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// The bus's link to other nodes (Redis): whether it is up, and what crossing it cost. On the
/// memory bus it is always up and its counters stay at zero. Written by `bus::redis`, read by
/// `/readyz` and the metrics.
#[derive(Debug)]
pub(crate) struct Link {
    connected: AtomicBool,
    /// Times the connection came back after being down.
    reconnects: AtomicU64,
    /// Quotes a gateway received with a seq more than one above its last (the feed node or
    /// Redis merged or lost the ones between): visible to clients in `seq`, counted here.
    seq_gaps: AtomicU64,
    /// Publishes a feed node merged into a symbol already waiting for Redis.
    conflated: AtomicU64,
    /// Symbols a gateway saw published by two live feed nodes (an older one still publishing
    /// after a newer one began): a misconfiguration, counted once per symbol and node.
    duplicate_publishers: AtomicU64,
    /// Times a gateway saw a symbol move to a newer feed node (a restart: seq began again).
    feed_restarts: AtomicU64,
}

impl Default for Link {
    fn default() -> Link {
        let zero = || AtomicU64::new(0);
        Link { connected: AtomicBool::new(true), reconnects: zero(), seq_gaps: zero(), conflated: zero(), duplicate_publishers: zero(), feed_restarts: zero() }
    }
}

impl Link {
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Records the link's state; returns whether it changed (a reconnect is counted).
    pub(crate) fn set_connected(&self, up: bool) -> bool {
        let was = self.connected.swap(up, Ordering::AcqRel);
        if up && !was {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        was != up
    }

    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn seq_gap(&self) {
        self.seq_gaps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn seq_gaps(&self) -> u64 {
        self.seq_gaps.load(Ordering::Relaxed)
    }

    pub(crate) fn conflate(&self) {
        self.conflated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn conflated(&self) -> u64 {
        self.conflated.load(Ordering::Relaxed)
    }

    pub(crate) fn duplicate_publisher(&self) {
        self.duplicate_publishers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn duplicate_publishers(&self) -> u64 {
        self.duplicate_publishers.load(Ordering::Relaxed)
    }

    pub(crate) fn feed_restart(&self) {
        self.feed_restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn feed_restarts(&self) -> u64 {
        self.feed_restarts.load(Ordering::Relaxed)
    }
}

/// What [`Bus::watch_topics`] reports: how many topics there are, and how many resyncs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableVersion {
    pub(crate) topics: usize,
    pub(crate) resyncs: u64,
}

/// The in-process bus: the topic table plus the dispatch queue.
pub struct Bus {
    /// The link to other nodes (Redis); always up on the memory bus.
    pub(crate) link: Link,
    topics: RwLock<Vec<Arc<Topic>>>,
    by_symbol: RwLock<HashMap<Arc<str>, TopicId>>,
    dispatch_queue: Mutex<Vec<TopicId>>,
    dispatch_wake: Notify,
    /// Sessions to wake after the next dispatch round, whatever topic it was for; each at most
    /// once (its `listed` flag), so bounded by the number of sessions.
    after_dispatch: Mutex<Vec<Weak<SessionSignal>>>,
    /// The topic table's version: new topics tell wildcard subscribers to pick up new
    /// symbols; a resync tells every session to send its symbols again (see [`Bus::resync`]).
    table: watch::Sender<TableVersion>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub(crate) fn new() -> Bus {
        Bus {
            link: Link::default(),
            topics: RwLock::new(Vec::new()),
            by_symbol: RwLock::new(HashMap::new()),
            dispatch_queue: Mutex::new(Vec::new()),
            dispatch_wake: Notify::new(),
            after_dispatch: Mutex::new(Vec::new()),
            table: watch::channel(TableVersion::default()).0,
        }
    }

    /// The topic of `symbol` (already uppercased), if a feed publishes it.
    /// The topic a client names: the text goes through the one symbol rule
    /// ([`normalise_symbol`]) first, so REST and every transport accept and refuse the same.
    pub(crate) fn find(&self, requested: &str) -> Result<Arc<Topic>, FindError> {
        let symbol = normalise_symbol(requested).map_err(|reason| FindError::Invalid { text: requested.trim().chars().take(32).collect(), reason })?;
        self.topic(&symbol).ok_or(FindError::Unknown(symbol))
    }

    /// The topic of a symbol as the feeds publish it (upper case, valid).
    pub fn topic(&self, symbol: &str) -> Option<Arc<Topic>> {
        let id = *self.by_symbol.read().expect("symbol table lock").get(symbol)?;
        self.topic_by_id(id)
    }

    pub(crate) fn topic_by_id(&self, id: TopicId) -> Option<Arc<Topic>> {
        self.topics.read().expect("topic table lock").get(id as usize).cloned()
    }

    /// Every topic, in registration order.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().expect("topic table lock").clone()
    }

    /// A receiver that changes whenever a topic is added or the table is resynced.
    pub(crate) fn watch_topics(&self) -> watch::Receiver<TableVersion> {
        self.table.subscribe()
    }

    /// Tells every session that the latest values may have moved other than by publishing —
    /// the bus came back after a gap, or a feed node restarted and its `seq` began again — so
    /// each sends all its symbols' latest quotes again as a `"snapshot":true` batch, whatever
    /// seq it last sent (a snapshot may repeat it). Nobody is left on a stale price.
    pub(crate) fn resync(&self) {
        self.table.send_modify(|version| version.resyncs += 1);
    }

    /// Registrations over every topic ([`Topic::arm`]), dead ones included until they fire or
    /// are swept: bounded by sessions × their symbols (watched as a client map; a scrape takes
    /// each topic's lock once).
    pub(crate) fn registrations(&self) -> usize {
        self.topics.read().expect("topic table lock").iter().map(|t| t.registrations()).sum()
    }

    /// Sessions listed for a wake-up after the next dispatch round (watched as a client map).
    pub(crate) fn after_dispatch_entries(&self) -> usize {
        self.after_dispatch.lock().expect("after-dispatch lock").len()
    }

    /// Receivers of [`Bus::watch_topics`]: one per open session (watched as a client map).
    pub(crate) fn topic_watchers(&self) -> usize {
        self.table.receiver_count()
    }

    /// Stores a quote stamped elsewhere (by this bus's [`Publisher::publish`], or by a remote
    /// node for a distributed backend) and schedules the wake-up of armed sessions.
    pub(crate) fn apply(&self, topic: &Topic, quote: Quote) {
        self.apply_published(topic, PublishedQuote::new(quote));
    }

    /// [`Bus::apply`] for a quote whose JSON is known already (received from a remote node).
    pub(crate) fn apply_published(&self, topic: &Topic, published: PublishedQuote) {
        let seq = published.quote.seq;
        topic.history.lock().expect("history lock").record(&published.quote);
        topic.latest.store(Some(Arc::new(published)));
        topic.seq.store(seq, Ordering::Release);
        if !topic.queued.swap(true, Ordering::AcqRel) {
            self.dispatch_queue.lock().expect("dispatch lock").push(topic.id);
            self.dispatch_wake.notify_one();
        }
    }

    /// Wakes `signal` once after the next dispatch round — the next publish of *any* topic —
    /// without telling it which topic changed. Like [`Topic::arm`], the caller must check the
    /// seqs it cares about *after* this call.
    ///
    /// Why: a session that has just delivered many unthrottled symbols would otherwise arm each
    /// of them, and every one of those registrations costs a lock, a dispatch and a wake-up.
    /// One registration here costs one of each, and under load — when the worker's run queue
    /// is long — the session runs again only after most of its symbols changed anyway. A
    /// session woken this way and finding none of its symbols changed arms them as usual (see
    /// `session::throttle`), so a quiet symbol costs at most one spurious wake-up.
    pub(crate) fn wake_after_next_dispatch(&self, signal: &Arc<SessionSignal>) {
        if !signal.listed.swap(true, Ordering::AcqRel) {
            self.after_dispatch.lock().expect("after-dispatch lock").push(Arc::downgrade(signal));
        }
    }

    /// The dispatcher: fires the armed registrations of every topic that changed. Runs for the
    /// life of the server; spawn it once.
    pub(crate) async fn run_dispatcher(self: Arc<Self>) {
        let mut batch: Vec<TopicId> = Vec::new();
        let mut fired: Vec<Weak<SessionSignal>> = Vec::new();
        let mut after: Vec<Weak<SessionSignal>> = Vec::new();
        loop {
            self.dispatch_wake.notified().await;
            self.dispatch_round(&mut batch, &mut fired, &mut after);
        }
    }

    /// One round of the dispatcher: the queued topics' registrations fired, then the sessions
    /// waiting for the round woken. The vectors are scratch space kept between rounds.
    fn dispatch_round(&self, batch: &mut Vec<TopicId>, fired: &mut Vec<Weak<SessionSignal>>, after: &mut Vec<Weak<SessionSignal>>) {
        std::mem::swap(batch, &mut *self.dispatch_queue.lock().expect("dispatch lock"));
        // Held for the batch: registering a topic (the only writer) is rare and brief.
        let topics = self.topics.read().expect("topic table lock");
        for id in batch.drain(..) {
            let topic = &topics[id as usize];
            // Cleared before taking the registrations: a publish from here on queues the
            // topic again, so no change is left without a wake-up.
            topic.queued.store(false, Ordering::Release);
            std::mem::swap(fired, &mut topic.waiters.lock().expect("waiters lock").armed);
            for waiter in fired.drain(..) {
                if let Some(signal) = waiter.upgrade() {
                    signal.fire(id);
                }
            }
        }
        drop(topics);
        // Taken after the batch's `queued` flags were cleared: a publish that found its
        // topic still queued happened before this point, so a session listed after it
        // sees its seq when it checks, and one listed before it is woken now.
        std::mem::swap(after, &mut *self.after_dispatch.lock().expect("after-dispatch lock"));
        for waiter in after.drain(..) {
            if let Some(signal) = waiter.upgrade() {
                signal.listed.store(false, Ordering::Release);
                signal.wake();
            }
        }
    }

    /// Runs one dispatcher round now, on the caller's thread: a test drives the wake-up path
    /// step by step with it instead of spawning [`Bus::run_dispatcher`].
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn dispatch_now(&self) {
        self.dispatch_round(&mut Vec::new(), &mut Vec::new(), &mut Vec::new());
    }
}

impl Publisher for Bus {
    fn register(&self, symbol: &str, info: SymbolInfo) -> Result<Arc<Topic>, BusError> {
        let mut by_symbol = self.by_symbol.write().expect("symbol table lock");
        let mut topics = self.topics.write().expect("topic table lock");
        if let Some(&id) = by_symbol.get(symbol) {
            let existing = &topics[id as usize];
            return Err(BusError::DuplicateSymbol { symbol: symbol.to_string(), first: existing.info.feed.to_string(), second: info.feed.to_string() });
        }
        let id = topics.len() as TopicId;
        let symbol: Arc<str> = symbol.into();
        let topic = Arc::new(Topic::new(id, symbol.clone(), info));
        topics.push(topic.clone());
        by_symbol.insert(symbol, id);
        let count = topics.len();
        drop(topics);
        drop(by_symbol);
        self.table.send_modify(|version| version.topics = count);
        Ok(topic)
    }

    fn publish(&self, topic: &Topic, draft: &QuoteDraft) -> u64 {
        // One feed owns a topic, so read-then-store cannot race with another publisher.
        let seq = topic.seq.load(Ordering::Relaxed) + 1;
        let quote = Quote::from_draft(topic.symbol.clone(), seq, now_micros(), draft);
        self.apply(topic, quote);
        seq
    }

    fn publish_skipping(&self, topic: &Topic, draft: &QuoteDraft, skip: u64) -> u64 {
        let seq = topic.seq.load(Ordering::Relaxed) + 1 + skip;
        let quote = Quote::from_draft(topic.symbol.clone(), seq, now_micros(), draft);
        self.apply(topic, quote);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    fn info(feed: &str) -> SymbolInfo {
        SymbolInfo { name: "Test".into(), sector: "Tech".into(), feed: feed.into() }
    }

    fn draft(last: f64) -> QuoteDraft {
        QuoteDraft { ts: 0, last, bid: last - 0.01, ask: last + 0.01, size: 1, volume: 1, open: last, high: last, low: last, prev_close: last, decimals: 2 }
    }

    #[test]
    fn duplicate_symbol_names_both_feeds() {
        let bus = Bus::new();
        bus.register("AAPL", info("sim")).unwrap();
        let err = bus.register("AAPL", info("replay")).unwrap_err();
        assert_eq!(err.to_string(), "symbol 'AAPL' is published by two feeds: 'sim' and 'replay' (give one of them a symbol suffix)");
    }

    #[test]
    fn latest_cache_follows_publishes_and_tells_buses_apart() {
        let bus = Bus::new();
        let topic = bus.register("AAPL", info("sim")).unwrap();
        let mut cache = LatestCache::default();
        assert!(cache.latest(&topic).is_none());
        bus.publish(&topic, &draft(1.0));
        assert_eq!(cache.latest(&topic).map(|q| q.quote.seq), Some(1));
        bus.publish(&topic, &draft(2.0));
        assert_eq!(cache.latest(&topic).map(|q| (q.quote.seq, q.quote.last)), Some((2, 2.0)));
        // Another bus's first topic has the same id: its own quote, in the same one entry.
        let other = Bus::new();
        let msft = other.register("MSFT", info("sim")).unwrap();
        assert_eq!(msft.id, topic.id);
        assert!(cache.latest(&msft).is_none());
        other.publish(&msft, &draft(3.0));
        assert_eq!(cache.latest(&msft).map(|q| &*q.quote.symbol), Some("MSFT"));
        assert_eq!(cache.latest(&topic).map(|q| (&*q.quote.symbol, q.quote.seq)), Some(("AAPL", 2)));
        assert_eq!(cache.entries.len(), 1, "one entry per topic id");
    }

    #[test]
    fn publish_keeps_latest_and_counts_seq() {
        let bus = Bus::new();
        let topic = bus.register("AAPL", info("sim")).unwrap();
        assert_eq!(topic.seq(), 0);
        assert!(topic.latest().is_none());
        assert_eq!(bus.publish(&topic, &draft(1.0)), 1);
        assert_eq!(bus.publish(&topic, &draft(2.0)), 2);
        let latest = topic.latest().unwrap();
        assert_eq!((latest.quote.seq, latest.quote.last), (2, 2.0));
        assert_eq!(bus.publish_skipping(&topic, &draft(3.0), 3), 6, "three seqs consumed, the quote gets the fourth");
        assert_eq!((topic.seq(), topic.latest().unwrap().quote.last), (6, 3.0));
    }

    #[tokio::test]
    async fn armed_sessions_are_woken_once_per_registration() {
        let bus = Arc::new(Bus::new());
        tokio::spawn(bus.clone().run_dispatcher());
        let topic = bus.register("AAPL", info("sim")).unwrap();
        let signal = Arc::new(SessionSignal::default());
        topic.arm(&signal);
        bus.publish(&topic, &draft(1.0));
        signal.fired().await;
        let mut dirty = Vec::new();
        signal.take_dirty(&mut dirty);
        assert_eq!(dirty, vec![topic.id]);
        // Not re-armed: further publishes do not reach the session.
        bus.publish(&topic, &draft(2.0));
        bus.publish(&topic, &draft(3.0));
        tokio::task::yield_now().await;
        let dispatcher_done = tokio::time::timeout(std::time::Duration::from_millis(50), signal.fired()).await;
        assert!(dispatcher_done.is_err(), "an unarmed session must not be woken");
        dirty.clear();
        signal.take_dirty(&mut dirty);
        assert!(dirty.is_empty());
    }

    /// Resolves once `signal` was woken (without clearing the flag, unlike a consumer).
    async fn woken(signal: &SessionSignal) {
        std::future::poll_fn(|cx| {
            signal.waker.register(cx.waker());
            if signal.is_woken() { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }

    #[tokio::test]
    async fn listed_sessions_are_woken_by_any_publish_once() {
        let bus = Arc::new(Bus::new());
        tokio::spawn(bus.clone().run_dispatcher());
        let a = bus.register("AAPL", info("sim")).unwrap();
        let b = bus.register("MSFT", info("sim")).unwrap();
        let signal = Arc::new(SessionSignal::default());
        let waker = futures_util::task::noop_waker();
        signal.register(&waker);
        // Listed twice: one entry.
        bus.wake_after_next_dispatch(&signal);
        bus.wake_after_next_dispatch(&signal);
        assert_eq!(bus.after_dispatch.lock().unwrap().len(), 1);
        assert!(!signal.is_woken());
        // A topic the session never armed: still woken, and told no topic.
        bus.publish(&b, &draft(1.0));
        woken(&signal).await;
        let mut dirty = Vec::new();
        signal.take_dirty(&mut dirty);
        assert!(dirty.is_empty());
        assert!(bus.after_dispatch.lock().unwrap().is_empty());
        // Woken once: the next round does not wake it again.
        signal.register(&waker);
        bus.publish(&a, &draft(1.0));
        bus.publish(&b, &draft(2.0));
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), woken(&signal)).await;
        assert!(again.is_err(), "a listed session is woken by one dispatch round only");
    }

    #[test]
    fn dead_registrations_are_swept() {
        let bus = Bus::new();
        let topic = bus.register("AAPL", info("sim")).unwrap();
        for _ in 0..10_000 {
            let signal = Arc::new(SessionSignal::default());
            topic.arm(&signal);
        }
        assert!(topic.waiters.lock().unwrap().armed.len() <= 128);
    }
}

/// [`Bus::find`]'s invariants, checked on any text: by the property tests below and by the
/// fuzz target `symbol` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// A bus with a few topics, as a feed registers them.
    pub(crate) fn bus_with(symbols: &[&str]) -> Bus {
        let bus = Bus::new();
        for symbol in symbols {
            bus.register(symbol, SymbolInfo { name: symbol.to_string(), sector: "Test".into(), feed: "test".into() }).expect("distinct symbols");
        }
        bus
    }

    /// Asserts, whatever `requested` is: it finds the topic of its normalised symbol when a feed
    /// publishes it; a valid symbol no feed publishes is `Unknown`, named normalised; anything
    /// else is `Invalid`, quoting at most 32 characters of the text with the symbol rule's reason.
    pub(crate) fn check_find(bus: &Bus, requested: &str) {
        match (bus.find(requested), normalise_symbol(requested)) {
            (Ok(topic), Ok(symbol)) => assert_eq!(&*topic.symbol, symbol.as_str()),
            (Err(FindError::Unknown(name)), Ok(symbol)) => {
                assert_eq!(name, symbol);
                assert!(bus.topic(&symbol).is_none(), "{symbol} is published but was not found");
            }
            (Err(FindError::Invalid { text, reason }), Err(expected)) => {
                assert_eq!(reason, expected);
                assert!(text.chars().count() <= 32, "{text:?} quotes more than 32 characters");
                assert!(requested.trim().starts_with(&text));
            }
            (found, normalised) => panic!("{requested:?}: find gave {found:?}, the symbol rule {normalised:?}"),
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;
        use crate::test_support::proptest_config;

        proptest! {
            #![proptest_config(proptest_config(1024, "target/proptest-regressions/bus.txt"))]

            #[test]
            fn a_client_finds_what_the_symbol_rule_names(requested in prop_oneof![any::<String>(), "\\s?(AAPL|aapl|MSFT|BRK\\.B|brk\\.b|EURUSD=X|\\^GSPC|XYZ|[A-Za-z.^=-]{0,18})\\s?", "[A-Za-zé ]{30,40}"]) {
                let bus = bus_with(&["AAPL", "MSFT", "BRK.B", "EURUSD=X", "^GSPC"]);
                check_find(&bus, &requested);
            }
        }
    }
}
