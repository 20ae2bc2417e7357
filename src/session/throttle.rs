//! Per-session subscriptions with throttling and conflation.
//!
//! A [`SubscriptionSet`] decides, for one session, which symbols are due for delivery and when.
//! It holds no quotes: a due symbol is delivered by reading its topic's latest value at the
//! moment a frame is built, which is what conflation means here — however many quotes were
//! published meanwhile, the client gets the newest one, once.
//!
//! Per symbol, the rules (each tested below):
//! - at most one delivery per throttle interval (the snapshot counts as one);
//! - the first change after a quiet period is due at once: an idle symbol is *armed* on the bus
//!   and the bus wakes the session on its next publish;
//! - the latest value always goes out eventually: when a throttle interval ends, the symbol is
//!   checked and delivered if it changed meanwhile, or armed again if not;
//! - seq only increases: a delivery is made only when the topic's seq is above the last one sent.
//!
//! Architecture invariant: **a session never holds more than one pending entry per symbol** —
//! one slot in the due list, one timer, one bus registration, one slot in the recheck list —
//! so its memory is bounded by its subscription count whatever the feed rate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::bus::{SessionSignal, Topic, TopicId};
use crate::quote::PublishedQuote;

/// One subscribed symbol. Kept small: a session with ten symbols must cost well under 1 KiB.
#[derive(Debug)]
struct Subscription {
    /// The topic's id, kept inline: lookups by id binary-search the subscriptions, and reading
    /// it through the `Arc` would cost a cache miss per probe.
    id: TopicId,
    topic: Arc<Topic>,
    /// Seq of the last quote sent (snapshot or live); 0 = none.
    last_sent_seq: u64,
    /// Earliest time of the next delivery, µs since the set's epoch.
    next_allowed_us: u64,
    /// Throttle interval in ms (0 = every change).
    throttle_ms: u32,
    flags: u8,
}

const EXPLICIT: u8 = 1; // subscribed by name
const WILDCARD: u8 = 2; // covered by "*"
const ARMED: u8 = 4; // a bus registration is outstanding
const DUE: u8 = 8; // in the due list
const TIMER: u8 = 16; // a timer is pending at next_allowed_us
const AWAITING_SNAPSHOT: u8 = 32; // in the snapshot queue
const RECHECK: u8 = 64; // delivered at throttle 0, in the recheck list

impl Subscription {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The subscriptions of one session.
#[derive(Debug)]
pub(crate) struct SubscriptionSet {
    epoch: Instant,
    /// Sorted by topic id.
    subs: Vec<Subscription>,
    /// Pending throttle ends: (µs since epoch, topic). Entries for removed subscriptions are
    /// dropped when popped; a subscription has at most one (its TIMER flag).
    timers: BinaryHeap<Reverse<(u64, TopicId)>>,
    due: Vec<TopicId>,
    snapshot_queue: Vec<TopicId>,
    /// Throttle-0 symbols delivered and not armed on the bus yet: see
    /// [`SubscriptionSet::recheck`].
    recheck: Vec<TopicId>,
    /// Topics unsubscribed while a bus registration was still outstanding; kept so that
    /// re-subscribing does not register twice (bounded by the number of topics).
    orphan_registrations: Vec<TopicId>,
    /// Throttle of the `*` subscription, when present.
    wildcard_throttle_ms: Option<u32>,
    explicit_count: usize,
    signal: Arc<SessionSignal>,
    /// Since the last [`SubscriptionSet::take_delivery_stats`]: quotes merged away (seq gaps of
    /// live deliveries) and the longest a delivered quote waited, in µs.
    conflated: u64,
    longest_wait_us: Option<u64>,
}

/// What a subscribe call changed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SubscribeOutcome {
    /// Topics newly delivered to this session (not previously covered by any subscription).
    pub added: Vec<TopicId>,
}

impl SubscriptionSet {
    pub(crate) fn new(signal: Arc<SessionSignal>) -> SubscriptionSet {
        SubscriptionSet {
            epoch: Instant::now(),
            subs: Vec::new(),
            timers: BinaryHeap::new(),
            due: Vec::new(),
            snapshot_queue: Vec::new(),
            recheck: Vec::new(),
            orphan_registrations: Vec::new(),
            wildcard_throttle_ms: None,
            explicit_count: 0,
            signal,
            conflated: 0,
            longest_wait_us: None,
        }
    }

    pub(crate) fn signal(&self) -> &Arc<SessionSignal> {
        &self.signal
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The instant a pending µs offset stands for.
    pub(crate) fn instant_of(&self, micros: u64) -> Instant {
        self.epoch + std::time::Duration::from_micros(micros)
    }

    /// Explicit symbols plus one for `*`: what counts against the per-session limit.
    pub(crate) fn counted(&self) -> usize {
        self.explicit_count + usize::from(self.wildcard_throttle_ms.is_some())
    }

    /// Throttle of the `*` subscription, if there is one.
    pub(crate) fn wildcard_throttle_ms(&self) -> Option<u32> {
        self.wildcard_throttle_ms
    }

    pub(crate) fn has_wildcard(&self) -> bool {
        self.wildcard_throttle_ms.is_some()
    }

    pub(crate) fn is_explicit(&self, topic: TopicId) -> bool {
        self.find(topic).is_some_and(|i| self.subs[i].has(EXPLICIT))
    }

    /// Number of topics delivered to this session.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.subs.len()
    }

    /// The explicit symbols, sorted, followed by `*` when subscribed: the `symbols` of replies.
    pub(crate) fn symbol_list(&self) -> Vec<String> {
        let mut symbols: Vec<String> = self.subs.iter().filter(|s| s.has(EXPLICIT)).map(|s| s.topic.symbol.to_string()).collect();
        symbols.sort();
        if self.has_wildcard() {
            symbols.push("*".to_string());
        }
        symbols
    }

    fn find(&self, topic: TopicId) -> Option<usize> {
        self.subs.binary_search_by_key(&topic, |s| s.id).ok()
    }

    /// Subscribes `topics` explicitly (or, with `wildcard`, as covered by `*`) at `throttle_ms`.
    /// With `snapshot`, newly added topics that have a latest quote are queued for a snapshot
    /// frame; without it, they start from the current seq and only later changes are sent.
    pub(crate) fn subscribe(&mut self, topics: &[Arc<Topic>], throttle_ms: u32, snapshot: bool, wildcard: bool, now: Instant) -> SubscribeOutcome {
        let mut outcome = SubscribeOutcome::default();
        if wildcard {
            self.wildcard_throttle_ms = Some(throttle_ms);
        }
        let now_us = self.micros(now);
        // Exact capacities: a session costs its subscriptions, not a doubling's slack (a
        // 10-symbol session would otherwise carry 16 slots).
        let new = topics.iter().filter(|t| self.find(t.id).is_none()).count();
        self.subs.reserve_exact(new);
        if snapshot {
            self.snapshot_queue.reserve_exact(new);
        }
        for topic in topics {
            match self.find(topic.id) {
                Some(i) => {
                    let sub = &mut self.subs[i];
                    if wildcard {
                        sub.flags |= WILDCARD;
                        if !sub.has(EXPLICIT) {
                            sub.throttle_ms = throttle_ms;
                        }
                    } else {
                        if !sub.has(EXPLICIT) {
                            self.explicit_count += 1;
                        }
                        sub.flags |= EXPLICIT;
                        // Applies from the next delivery on: next_allowed is left as it is.
                        sub.throttle_ms = throttle_ms;
                    }
                }
                None => {
                    let mut flags = if wildcard { WILDCARD } else { EXPLICIT };
                    if !wildcard {
                        self.explicit_count += 1;
                    }
                    if let Some(pos) = self.orphan_registrations.iter().position(|&id| id == topic.id) {
                        self.orphan_registrations.swap_remove(pos);
                        flags |= ARMED;
                    }
                    let current = topic.seq();
                    let sub = Subscription { id: topic.id, topic: topic.clone(), last_sent_seq: if snapshot { 0 } else { current }, next_allowed_us: now_us, throttle_ms, flags };
                    let at = self.subs.partition_point(|s| s.id < topic.id);
                    self.subs.insert(at, sub);
                    topic.subscriber_added();
                    outcome.added.push(topic.id);
                    if snapshot && current > 0 {
                        self.subs[at].flags |= AWAITING_SNAPSHOT;
                        self.snapshot_queue.push(topic.id);
                    } else {
                        self.evaluate(at, now_us);
                    }
                }
            }
        }
        outcome
    }

    /// Removes explicit subscriptions (`wildcard` = false) or the `*` subscription (`true`).
    /// A symbol still covered by the other kind stays delivered.
    pub(crate) fn unsubscribe(&mut self, topics: &[TopicId], wildcard: bool) {
        if wildcard {
            self.wildcard_throttle_ms = None;
            let ids: Vec<TopicId> = self.subs.iter().filter(|s| s.has(WILDCARD)).map(|s| s.id).collect();
            for id in ids {
                self.drop_flag(id, WILDCARD);
            }
        } else {
            for &id in topics {
                self.drop_flag(id, EXPLICIT);
            }
        }
    }

    fn drop_flag(&mut self, id: TopicId, flag: u8) {
        let Some(i) = self.find(id) else { return };
        if !self.subs[i].has(flag) {
            return;
        }
        if flag == EXPLICIT {
            self.explicit_count -= 1;
        }
        self.subs[i].flags &= !flag;
        if self.subs[i].flags & (EXPLICIT | WILDCARD) != 0 {
            // Still covered by the wildcard: it falls back to the wildcard's throttle.
            if let Some(throttle) = self.wildcard_throttle_ms {
                self.subs[i].throttle_ms = throttle;
            }
            return;
        }
        let sub = self.subs.remove(i);
        sub.topic.subscriber_removed();
        if sub.has(ARMED) {
            self.orphan_registrations.push(id);
        }
        self.due.retain(|&t| t != id);
        self.snapshot_queue.retain(|&t| t != id);
        self.recheck.retain(|&t| t != id);
    }

    /// Drops every subscription (the session is ending).
    pub(crate) fn clear(&mut self) {
        for sub in self.subs.drain(..) {
            sub.topic.subscriber_removed();
        }
        self.explicit_count = 0;
        self.wildcard_throttle_ms = None;
        self.due.clear();
        self.snapshot_queue.clear();
        self.recheck.clear();
        self.timers.clear();
    }

    /// Decides what to do with a subscription whose topic may have changed.
    fn evaluate(&mut self, i: usize, now_us: u64) {
        let sub = &mut self.subs[i];
        if sub.has(DUE) || sub.has(AWAITING_SNAPSHOT) {
            return;
        }
        if sub.topic.seq() > sub.last_sent_seq {
            if now_us >= sub.next_allowed_us {
                sub.flags |= DUE;
                self.due.push(sub.id);
            } else if !sub.has(TIMER) {
                sub.flags |= TIMER;
                self.timers.push(Reverse((sub.next_allowed_us, sub.id)));
            }
            return;
        }
        if !sub.has(ARMED) {
            sub.flags |= ARMED;
            sub.topic.arm(&self.signal);
            // A publish between the seq check above and arming would have found no
            // registration: look again now that we are registered.
            if sub.topic.seq() > sub.last_sent_seq {
                self.evaluate(i, now_us);
            }
        }
    }

    /// Handles the topics the bus reported as changed.
    pub(crate) fn on_fired(&mut self, topics: &[TopicId], now: Instant) {
        let now_us = self.micros(now);
        for &id in topics {
            match self.find(id) {
                Some(i) => {
                    self.subs[i].flags &= !ARMED;
                    self.evaluate(i, now_us);
                }
                None => self.orphan_registrations.retain(|&t| t != id),
            }
        }
    }

    /// Handles the throttle intervals that ended by `now`.
    pub(crate) fn on_timers(&mut self, now: Instant) {
        let now_us = self.micros(now);
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now_us {
                break;
            }
            self.timers.pop();
            if let Some(i) = self.find(id) {
                if self.subs[i].has(TIMER) && self.subs[i].next_allowed_us <= now_us {
                    self.subs[i].flags &= !TIMER;
                    self.evaluate(i, now_us);
                } else if self.subs[i].has(TIMER) {
                    // The timer was for an older interval; keep one for the current one.
                    let next = self.subs[i].next_allowed_us;
                    self.timers.push(Reverse((next, id)));
                }
            }
        }
    }

    /// When the next throttle interval ends, if any is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| self.instant_of(*at))
    }

    pub(crate) fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    pub(crate) fn has_snapshot_pending(&self) -> bool {
        !self.snapshot_queue.is_empty()
    }

    /// Number of timers pending (for tests and the memory budget).
    #[cfg(test)]
    fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    fn record_delivery(&mut self, i: usize, seq: u64, now_us: u64) {
        let sub = &mut self.subs[i];
        sub.last_sent_seq = seq;
        sub.next_allowed_us = now_us + sub.throttle_ms as u64 * 1000;
        sub.flags &= !(DUE | AWAITING_SNAPSHOT);
        if sub.throttle_ms > 0 {
            if !sub.has(TIMER) {
                sub.flags |= TIMER;
                self.timers.push(Reverse((sub.next_allowed_us, sub.id)));
            }
        } else if !sub.has(RECHECK) {
            sub.flags |= RECHECK;
            self.recheck.push(sub.id);
        }
    }

    /// Looks again at the throttle-0 symbols delivered and not armed since: those that changed
    /// become due, and returns how many did. With `arm`, the others are armed on the bus;
    /// without it they stay listed, unarmed.
    ///
    /// Why not arm at delivery: a symbol just delivered has, by definition, not changed yet,
    /// and arming it costs a registration, a dispatch and a wake-up per delivered quote. The
    /// body instead asks the bus for one wake-up after its next dispatch round
    /// ([`crate::bus::Bus::wake_after_next_dispatch`]), looks again then, and arms only what
    /// still has not changed. With throttle 0 under load, every delivered symbol has changed by
    /// then and nothing is armed at all.
    pub(crate) fn recheck(&mut self, now: Instant, arm: bool) -> usize {
        if self.recheck.is_empty() {
            return 0;
        }
        let now_us = self.micros(now);
        let due_before = self.due.len();
        let mut list = std::mem::take(&mut self.recheck);
        let look = |set: &mut SubscriptionSet, i: usize| {
            let sub = &set.subs[i];
            if !arm && sub.topic.seq() <= sub.last_sent_seq {
                return true;
            }
            set.subs[i].flags &= !RECHECK;
            set.evaluate(i, now_us);
            false
        };
        if list.len() * 4 >= self.subs.len() {
            // Most of the session's symbols: one pass over the subscriptions in memory order
            // costs less than a binary search (a chain of cache misses) per entry.
            list.clear();
            for i in 0..self.subs.len() {
                if self.subs[i].has(RECHECK) && look(self, i) {
                    list.push(self.subs[i].id);
                }
            }
        } else {
            list.retain(|&id| self.find(id).is_some_and(|i| look(self, i)));
        }
        // `evaluate` never adds to the list, so it is still empty.
        self.recheck = list;
        self.due.len() - due_before
    }

    pub(crate) fn has_recheck(&self) -> bool {
        !self.recheck.is_empty()
    }

    /// Takes due quotes, newest value of each symbol, while `take` accepts them (it returns
    /// false when the frame budget is spent; that quote and the rest stay due).
    pub(crate) fn take_due(&mut self, now: Instant, mut take: impl FnMut(&Arc<PublishedQuote>) -> bool) -> usize {
        self.drain_queue(now, false, &mut take)
    }

    /// Takes the snapshot quotes of newly subscribed symbols, as [`SubscriptionSet::take_due`].
    pub(crate) fn take_snapshot(&mut self, now: Instant, mut take: impl FnMut(&Arc<PublishedQuote>) -> bool) -> usize {
        self.drain_queue(now, true, &mut take)
    }

    /// Quotes merged away and the longest wait of a delivered quote since the last call.
    /// The wait runs from when the quote became deliverable — published, and its throttle
    /// interval over — so a client's own throttle is not counted as server latency.
    pub(crate) fn take_delivery_stats(&mut self) -> (u64, Option<std::time::Duration>) {
        let stats = (self.conflated, self.longest_wait_us.map(std::time::Duration::from_micros));
        self.conflated = 0;
        self.longest_wait_us = None;
        stats
    }

    fn drain_queue(&mut self, now: Instant, snapshot: bool, take: &mut dyn FnMut(&Arc<PublishedQuote>) -> bool) -> usize {
        let now_us = self.micros(now);
        let wall_us = crate::quote::now_micros();
        let mut queue = std::mem::take(if snapshot { &mut self.snapshot_queue } else { &mut self.due });
        let mut taken = 0;
        let mut consumed = 0;
        for &id in &queue {
            let Some(i) = self.find(id) else {
                consumed += 1;
                continue;
            };
            // A borrowed load: no reference count is touched unless `take` keeps the quote.
            let latest = self.subs[i].topic.latest_ref();
            match &*latest {
                Some(quote) if quote.quote.seq > self.subs[i].last_sent_seq => {
                    if !take(quote) {
                        break;
                    }
                    consumed += 1;
                    taken += 1;
                    let sub = &self.subs[i];
                    if !snapshot && sub.last_sent_seq > 0 {
                        self.conflated += quote.quote.seq - sub.last_sent_seq - 1;
                        let since_allowed = now_us.saturating_sub(sub.next_allowed_us);
                        let since_published = wall_us.saturating_sub(quote.quote.pt).max(0) as u64;
                        let wait = since_allowed.min(since_published);
                        self.longest_wait_us = Some(self.longest_wait_us.map_or(wait, |w| w.max(wait)));
                    }
                    self.record_delivery(i, quote.quote.seq, now_us);
                }
                _ => {
                    // Nothing newer after all (or never published): back to waiting.
                    consumed += 1;
                    self.subs[i].flags &= !(DUE | AWAITING_SNAPSHOT);
                    self.evaluate(i, now_us);
                }
            }
        }
        queue.drain(..consumed);
        // Entries added while draining (a throttle-0 symbol that changed again) go after the
        // ones still waiting, so every due symbol keeps its turn.
        let target = if snapshot { &mut self.snapshot_queue } else { &mut self.due };
        queue.append(target);
        *target = queue;
        taken
    }
}

impl Drop for SubscriptionSet {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::{Bus, Publisher, SymbolInfo};
    use crate::quote::QuoteDraft;

    struct Harness {
        bus: Arc<Bus>,
        topics: Vec<Arc<Topic>>,
        set: SubscriptionSet,
    }

    fn draft(last: f64) -> QuoteDraft {
        QuoteDraft { ts: 0, last, bid: last - 0.01, ask: last + 0.01, size: 1, volume: 1, open: last, high: last, low: last, prev_close: last, decimals: 2 }
    }

    impl Harness {
        fn new(symbols: &[&str]) -> Harness {
            let bus = Arc::new(Bus::new());
            tokio::spawn(bus.clone().run_dispatcher());
            let topics = symbols.iter().map(|s| bus.register(s, SymbolInfo { name: s.to_string(), sector: "X".into(), feed: "test".into() }).unwrap()).collect();
            let set = SubscriptionSet::new(Arc::new(SessionSignal::default()));
            Harness { bus, topics, set }
        }

        fn publish(&self, topic: usize, last: f64) -> u64 {
            self.bus.publish(&self.topics[topic], &draft(last))
        }

        /// Waits for the bus to wake the session and applies what fired. Like the body going
        /// idle, it first arms what it delivered at throttle 0 (and returns at once if some of
        /// that changed meanwhile).
        async fn wait_fired(&mut self) {
            self.set.recheck(Instant::now(), true);
            if self.set.has_due() {
                return;
            }
            let mut fired = Vec::new();
            self.set.signal().fired().await;
            self.set.signal().take_dirty(&mut fired);
            self.set.on_fired(&fired, Instant::now());
        }

        /// What a poll of the body sends: what is due, and the throttle-0 symbols delivered
        /// earlier that changed since.
        fn deliver(&mut self) -> Vec<(String, u64)> {
            let mut out = Vec::new();
            self.set.recheck(Instant::now(), false);
            self.set.take_due(Instant::now(), |q| {
                out.push((q.quote.symbol.to_string(), q.quote.seq));
                true
            });
            out
        }

        fn snapshot(&mut self) -> Vec<(String, u64)> {
            let mut out = Vec::new();
            self.set.take_snapshot(Instant::now(), |q| {
                out.push((q.quote.symbol.to_string(), q.quote.seq));
                true
            });
            out
        }

        async fn advance_to_deadline(&mut self) {
            let deadline = self.set.next_deadline().expect("a timer is pending");
            tokio::time::sleep_until(deadline).await;
            self.set.on_timers(Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_then_throttled_latest_value() {
        let mut h = Harness::new(&["AAPL"]);
        h.publish(0, 1.0);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 250, true, false, Instant::now());
        assert_eq!(h.snapshot(), vec![("AAPL".into(), 1)]);
        // Three changes inside the interval: nothing is due until it ends...
        for i in 0..3 {
            h.publish(0, 2.0 + i as f64);
        }
        assert!(!h.set.has_due());
        let start = Instant::now();
        h.advance_to_deadline().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(250));
        // ...then only the latest goes out, once.
        assert_eq!(h.deliver(), vec![("AAPL".into(), 4)]);
        assert!(h.deliver().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn first_change_after_quiet_goes_out_at_once() {
        let mut h = Harness::new(&["AAPL"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 1000, true, false, Instant::now());
        assert!(h.snapshot().is_empty(), "no quote yet, no snapshot");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let published = Instant::now();
        h.publish(0, 1.0);
        h.wait_fired().await;
        assert_eq!(Instant::now(), published, "due without waiting for a throttle interval");
        assert_eq!(h.deliver(), vec![("AAPL".into(), 1)]);
        // The interval after it ends with no change: the symbol is re-armed, not polled.
        h.advance_to_deadline().await;
        assert!(h.deliver().is_empty());
        assert_eq!(h.set.pending_timers(), 0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.publish(0, 2.0);
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("AAPL".into(), 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn latest_value_goes_out_when_feed_goes_quiet() {
        let mut h = Harness::new(&["AAPL"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 100, false, false, Instant::now());
        h.publish(0, 1.0);
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("AAPL".into(), 1)]);
        // A last change inside the interval and then silence: it must still arrive.
        h.publish(0, 2.0);
        h.advance_to_deadline().await;
        assert_eq!(h.deliver(), vec![("AAPL".into(), 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_zero_delivers_every_change_but_conflates_backlog() {
        let mut h = Harness::new(&["AAPL", "MSFT"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 0, false, false, Instant::now());
        h.publish(0, 1.0);
        h.publish(1, 1.0);
        h.wait_fired().await;
        // Both due at one moment: one batch.
        let mut got = h.deliver();
        got.sort();
        assert_eq!(got, vec![("AAPL".into(), 1), ("MSFT".into(), 1)]);
        // The session does not read for a while: 100 publishes become one delivery.
        for i in 0..100 {
            h.publish(0, 2.0 + i as f64);
        }
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("AAPL".into(), 101)]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_zero_is_armed_only_when_found_unchanged() {
        let mut h = Harness::new(&["A", "B"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 0, false, false, Instant::now());
        assert_eq!(h.topics[0].registrations(), 1, "idle symbol armed at subscribe");
        h.publish(0, 1.0);
        h.publish(1, 1.0);
        h.wait_fired().await;
        assert_eq!(h.deliver().len(), 2);
        assert_eq!(h.topics[0].registrations(), 0, "not armed at delivery");
        // Changed by the next look: due again, still no bus registration.
        h.publish(0, 2.0);
        assert_eq!(h.set.recheck(Instant::now(), false), 1);
        assert_eq!(h.deliver(), vec![("A".into(), 2)]);
        assert_eq!((h.topics[0].registrations(), h.topics[1].registrations()), (0, 0));
        // Unchanged at a look that arms: armed, and the next change wakes the session.
        assert_eq!(h.set.recheck(Instant::now(), true), 0);
        assert!(!h.set.has_recheck());
        assert_eq!((h.topics[0].registrations(), h.topics[1].registrations()), (1, 1));
        h.publish(1, 2.0);
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("B".into(), 2)]);
        // Unsubscribing drops a pending recheck with the subscription.
        assert!(h.set.has_recheck());
        h.set.unsubscribe(&[topics[1].id], false);
        assert!(!h.set.has_recheck());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_leaves_the_rest_due_in_order() {
        let mut h = Harness::new(&["A", "B", "C"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 0, false, false, Instant::now());
        for t in 0..3 {
            h.publish(t, 1.0);
        }
        h.wait_fired().await;
        let mut first = Vec::new();
        h.set.take_due(Instant::now(), |q| {
            if first.len() == 2 {
                return false;
            }
            first.push(q.quote.symbol.to_string());
            true
        });
        assert_eq!(first.len(), 2);
        let rest = h.deliver();
        assert_eq!(rest.len(), 1);
        assert!(!first.contains(&rest[0].0));
    }

    #[tokio::test(start_paused = true)]
    async fn wildcard_counts_once_and_explicit_keeps_its_throttle() {
        let mut h = Harness::new(&["A", "B", "C"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics[..1], 1000, false, false, Instant::now());
        h.set.subscribe(&topics, 0, false, true, Instant::now());
        assert_eq!(h.set.counted(), 2);
        assert_eq!(h.set.symbol_list(), vec!["A".to_string(), "*".to_string()]);
        assert_eq!(h.set.len(), 3);
        h.publish(0, 1.0);
        h.publish(1, 1.0);
        h.wait_fired().await;
        h.deliver();
        h.publish(0, 2.0);
        h.publish(1, 2.0);
        h.wait_fired().await;
        // B rides the wildcard's throttle 0; A keeps its explicit 1 s.
        assert_eq!(h.deliver(), vec![("B".into(), 2)]);
        h.set.unsubscribe(&[], true);
        assert_eq!(h.set.symbol_list(), vec!["A".to_string()]);
        assert_eq!(h.set.len(), 1);
        assert_eq!(h.topics[1].subscribers(), 0);
        assert_eq!(h.topics[0].subscribers(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn resubscribing_does_not_register_twice() {
        let mut h = Harness::new(&["A"]);
        let topics = h.topics.clone();
        for _ in 0..1000 {
            h.set.subscribe(&topics, 0, false, false, Instant::now());
            h.set.unsubscribe(&[topics[0].id], false);
        }
        h.set.subscribe(&topics, 0, false, false, Instant::now());
        h.publish(0, 1.0);
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("A".into(), 1)]);
    }
}
