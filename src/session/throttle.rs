//! Per-session subscriptions with throttling and conflation.
//!
//! A [`SubscriptionSet`] decides, for one session, which symbols are due for delivery and when.
//! It holds no quotes: a due symbol is delivered by reading its topic's latest value at the
//! moment a frame is built, which is what conflation means here — however many quotes were
//! published meanwhile, the client gets the newest one, once.
//!
//! Per symbol, the rules (each tested below):
//! - at most one delivery per throttle interval (the snapshot counts as one);
//! - an *aligned* subscription (`"align": true`) is delivered on a grid of its throttle interval
//!   anchored at the session's first subscribe instead: a change goes out at the first tick after
//!   it, every aligned symbol of one interval that changed goes out at the same tick (so in one
//!   frame), at most once per tick, and a symbol that did not change costs nothing; snapshots
//!   are immediate and do not move the grid;
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

use super::alarm::Hint;
use crate::bus::{LatestCache, SessionSignal, Topic, TopicId, with_latest_cache};
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
    flags: u16,
}

/// How a subscription's deliveries are timed: at most one per `throttle_ms`; with `align`, on a
/// grid of `throttle_ms` anchored at the session's first subscribe (at throttle 0 there is no
/// grid: every change, as without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cadence {
    pub(crate) throttle_ms: u32,
    pub(crate) align: bool,
}

impl From<u32> for Cadence {
    fn from(throttle_ms: u32) -> Cadence {
        Cadence { throttle_ms, align: false }
    }
}

const EXPLICIT: u16 = 1; // subscribed by name
const WILDCARD: u16 = 2; // covered by "*"
const ARMED: u16 = 4; // a bus registration is outstanding
const DUE: u16 = 8; // in the due list
const TIMER: u16 = 16; // a timer is pending at next_allowed_us
const AWAITING_SNAPSHOT: u16 = 32; // in the snapshot queue
const RECHECK: u16 = 64; // delivered at throttle 0, in the recheck list
const ALIGNED: u16 = 128; // delivered on the session's grid (see Cadence)
const GRID_TIMER: u16 = 256; // its pending timer is its tick's GRID entry, not one of its own

/// The timer entry of a tick shared by aligned subscriptions: popped, it looks at every
/// subscription whose interval ended (in memory order), where one entry per subscription would
/// cost a heap operation and a lookup each, ten per tick for a ten-symbol session. Topic ids
/// are indexes into the topic table, never this.
const GRID: TopicId = TopicId::MAX;

impl Subscription {
    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Whether deliveries fall on the grid: aligned, at a throttle above 0.
    fn on_grid(&self) -> bool {
        self.has(ALIGNED) && self.throttle_ms > 0
    }

    fn set_cadence(&mut self, cadence: Cadence) {
        self.throttle_ms = cadence.throttle_ms;
        if cadence.align {
            self.flags |= ALIGNED;
        } else {
            self.flags &= !ALIGNED;
        }
    }
}

/// The first grid instant at or after `t`: `anchor + k·period`, k ≥ 0 (all in µs).
fn grid_ceil(anchor: u64, period: u64, t: u64) -> u64 {
    if t <= anchor { anchor } else { anchor + (t - anchor).div_ceil(period) * period }
}

/// The last grid instant at or before `t` (the anchor for any `t` before it).
fn grid_floor(anchor: u64, period: u64, t: u64) -> u64 {
    if t <= anchor { anchor } else { anchor + (t - anchor) / period * period }
}

/// The subscriptions of one session.
#[derive(Debug)]
pub(crate) struct SubscriptionSet {
    epoch: Instant,
    /// Sorted by topic id.
    subs: Vec<Subscription>,
    /// Pending throttle ends: (µs since epoch, topic), or (tick, [`GRID`]) for every aligned
    /// subscription waiting for that tick. Entries for removed subscriptions are dropped when
    /// popped; a subscription has at most one of its own (its TIMER flag), and a tick one
    /// [`GRID`] entry (listed in `grid_pending`).
    timers: BinaryHeap<Reverse<(u64, TopicId)>>,
    /// The ticks that have a [`GRID`] entry in `timers`.
    grid_pending: Vec<u64>,
    due: Vec<TopicId>,
    snapshot_queue: Vec<TopicId>,
    /// Throttle-0 symbols delivered and not armed on the bus yet: see
    /// [`SubscriptionSet::take_changed`] and [`SubscriptionSet::arm_unchanged`].
    recheck: Vec<TopicId>,
    /// Where the next [`SubscriptionSet::take_changed`] pass over the subscriptions starts.
    changed_cursor: usize,
    /// Scratch for [`SubscriptionSet::on_timers`]: the indexes of on-grid symbols found
    /// unchanged at their tick (each at most once, so bounded by the subscription count).
    quiet: Vec<usize>,
    /// Topics unsubscribed while a bus registration was still outstanding; kept so that
    /// re-subscribing does not register twice (bounded by the number of topics).
    orphan_registrations: Vec<TopicId>,
    /// Cadence of the `*` subscription, when present.
    wildcard: Option<Cadence>,
    /// The aligned grids' anchor: the first subscribe, µs since the epoch.
    anchor_us: Option<u64>,
    explicit_count: usize,
    signal: Arc<SessionSignal>,
    /// Since the last [`SubscriptionSet::take_delivery_stats`]: quotes merged away (seq gaps of
    /// live deliveries) and the longest a delivered quote waited, in µs.
    conflated: u64,
    longest_wait_us: Option<u64>,
}

/// What [`SubscriptionSet::take_changed`] found at one subscription.
enum Look {
    Unchanged,
    Taken,
    /// Left the recheck list, to be evaluated as any other symbol.
    Moved,
    /// `take` refused the quote: the frame's budget is spent.
    Full,
}

/// The looks of one [`SubscriptionSet::take_changed`] pass, added up.
#[derive(Default)]
struct Tally {
    taken: usize,
    /// Some symbol left the recheck list.
    moved: bool,
}

impl Tally {
    /// Counts `look`; true when the frame's budget is spent and the pass stops.
    fn full(&mut self, look: Look) -> bool {
        match look {
            Look::Unchanged => {}
            Look::Taken => self.taken += 1,
            Look::Moved => self.moved = true,
            Look::Full => return true,
        }
        false
    }
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
            grid_pending: Vec::new(),
            due: Vec::new(),
            snapshot_queue: Vec::new(),
            recheck: Vec::new(),
            changed_cursor: 0,
            quiet: Vec::new(),
            orphan_registrations: Vec::new(),
            wildcard: None,
            anchor_us: None,
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
        self.explicit_count + usize::from(self.wildcard.is_some())
    }

    /// Cadence of the `*` subscription, if there is one.
    pub(crate) fn wildcard_cadence(&self) -> Option<Cadence> {
        self.wildcard
    }

    pub(crate) fn has_wildcard(&self) -> bool {
        self.wildcard.is_some()
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

    /// Subscribes `topics` explicitly (or, with `wildcard`, as covered by `*`) at `cadence` (a
    /// throttle in ms, or a [`Cadence`]). With `snapshot`, newly added topics that have a latest
    /// quote are queued for a snapshot frame; without it, they start from the current seq and
    /// only later changes are sent.
    pub(crate) fn subscribe(&mut self, topics: &[Arc<Topic>], cadence: impl Into<Cadence>, snapshot: bool, wildcard: bool, now: Instant) -> SubscribeOutcome {
        let cadence = cadence.into();
        let mut outcome = SubscribeOutcome::default();
        if wildcard {
            self.wildcard = Some(cadence);
        }
        let now_us = self.micros(now);
        self.anchor_us.get_or_insert(now_us);
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
                            sub.set_cadence(cadence);
                        }
                    } else {
                        if !sub.has(EXPLICIT) {
                            self.explicit_count += 1;
                        }
                        sub.flags |= EXPLICIT;
                        // Applies from the next delivery on: next_allowed is left as it is.
                        sub.set_cadence(cadence);
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
                    let mut sub =
                        Subscription { id: topic.id, topic: topic.clone(), last_sent_seq: if snapshot { 0 } else { current }, next_allowed_us: now_us, throttle_ms: 0, flags };
                    sub.set_cadence(cadence);
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
        let mut timer_dropped = false;
        if wildcard {
            self.wildcard = None;
            let ids: Vec<TopicId> = self.subs.iter().filter(|s| s.has(WILDCARD)).map(|s| s.id).collect();
            for id in ids {
                timer_dropped |= self.drop_flag(id, WILDCARD);
            }
        } else {
            for &id in topics {
                timer_dropped |= self.drop_flag(id, EXPLICIT);
            }
        }
        if timer_dropped {
            // A removed subscription's timer goes with it, at once: left in the heap until its
            // interval ended, a client subscribing and unsubscribing in a loop would pile up
            // one entry per round for as long as the throttle (up to a minute), not one per
            // symbol. One pass per request, not per symbol.
            self.timers.clear();
            self.grid_pending.clear();
            for i in 0..self.subs.len() {
                if self.subs[i].has(TIMER) {
                    self.push_timer(i);
                }
            }
        }
    }

    /// Drops `flag` from the subscription of `id`, and the subscription when nothing covers it
    /// any more; whether the subscription removed had a timer pending.
    fn drop_flag(&mut self, id: TopicId, flag: u16) -> bool {
        let Some(i) = self.find(id) else { return false };
        if !self.subs[i].has(flag) {
            return false;
        }
        if flag == EXPLICIT {
            self.explicit_count -= 1;
        }
        self.subs[i].flags &= !flag;
        if self.subs[i].flags & (EXPLICIT | WILDCARD) != 0 {
            // Still covered by the wildcard: it falls back to the wildcard's cadence.
            if let Some(cadence) = self.wildcard {
                self.subs[i].set_cadence(cadence);
            }
            return false;
        }
        let sub = self.subs.remove(i);
        sub.topic.subscriber_removed();
        if sub.has(ARMED) {
            self.orphan_registrations.push(id);
        }
        self.due.retain(|&t| t != id);
        self.snapshot_queue.retain(|&t| t != id);
        self.recheck.retain(|&t| t != id);
        sub.has(TIMER)
    }

    /// Drops every subscription (the session is ending).
    pub(crate) fn clear(&mut self) {
        for sub in self.subs.drain(..) {
            sub.topic.subscriber_removed();
        }
        self.explicit_count = 0;
        self.wildcard = None;
        self.due.clear();
        self.snapshot_queue.clear();
        self.recheck.clear();
        self.timers.clear();
        self.grid_pending.clear();
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
                self.push_timer(i);
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
                    let anchor = self.anchor_us.unwrap_or(0);
                    let sub = &mut self.subs[i];
                    sub.flags &= !ARMED;
                    if sub.on_grid() {
                        // It changed just now, while armed: due at the first tick from now, and
                        // not before the one after its last delivery. (A timer that fires late
                        // keeps its own tick: `evaluate` moves nothing.)
                        sub.next_allowed_us = sub.next_allowed_us.max(grid_ceil(anchor, sub.throttle_ms as u64 * 1000, now_us));
                    }
                    self.evaluate(i, now_us);
                }
                None => self.orphan_registrations.retain(|&t| t != id),
            }
        }
    }

    /// Handles the throttle intervals that ended by `now`.
    ///
    /// An on-grid symbol found unchanged at its tick is looked at again at its next tick when
    /// something else became due at this one, instead of being armed on the bus: the session
    /// wakes at the next tick anyway for what it delivers now, so the look costs a timer
    /// entry, where arming costs a registration, a dispatch and a wake-up of the connection
    /// when the symbol changes. Both deliver the change at the first tick after it. A session
    /// none of whose symbols changed arms them all, and then costs nothing until one does.
    pub(crate) fn on_timers(&mut self, now: Instant) {
        let now_us = self.micros(now);
        let due_before = self.due.len();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now_us {
                break;
            }
            self.timers.pop();
            if id == GRID {
                self.grid_pending.retain(|&t| t != at);
                for i in 0..self.subs.len() {
                    let sub = &self.subs[i];
                    if !sub.has(TIMER) || !sub.has(GRID_TIMER) {
                        continue;
                    }
                    if sub.next_allowed_us <= now_us {
                        self.interval_over(i, now_us);
                    } else {
                        // Waiting for a later tick: that tick has its entry (made sure of here,
                        // whatever moved the subscription's tick since).
                        self.push_timer(i);
                    }
                }
            } else if let Some(i) = self.find(id) {
                let sub = &self.subs[i];
                if !sub.has(TIMER) || sub.has(GRID_TIMER) {
                    // Not this entry's: a removed and re-added subscription's, say.
                } else if sub.next_allowed_us <= now_us {
                    self.interval_over(i, now_us);
                } else {
                    // The timer was for an older interval; keep one for the current one.
                    self.push_timer(i);
                }
            }
        }
        if self.quiet.is_empty() {
            return;
        }
        let busy = self.due.len() > due_before;
        let anchor = self.anchor_us.unwrap_or(0);
        let mut quiet = std::mem::take(&mut self.quiet);
        for &i in &quiet {
            if busy {
                let sub = &mut self.subs[i];
                let period = sub.throttle_ms as u64 * 1000;
                sub.next_allowed_us = grid_floor(anchor, period, now_us) + period;
                sub.flags |= TIMER;
                self.push_timer(i);
            } else {
                self.evaluate(i, now_us);
            }
        }
        quiet.clear();
        self.quiet = quiet;
    }

    /// Subscription `i`'s throttle interval is over: an on-grid symbol that did not change
    /// waits in `quiet` for the end of [`SubscriptionSet::on_timers`], anything else is
    /// evaluated now.
    fn interval_over(&mut self, i: usize, now_us: u64) {
        let sub = &mut self.subs[i];
        sub.flags &= !(TIMER | GRID_TIMER);
        if sub.on_grid() && !sub.has(DUE | AWAITING_SNAPSHOT) && sub.topic.seq() <= sub.last_sent_seq {
            self.quiet.push(i);
        } else {
            self.evaluate(i, now_us);
        }
    }

    /// Makes sure a timer entry is pending at subscription `i`'s `next_allowed_us` (its TIMER
    /// flag is set): its own, or its tick's [`GRID`] entry when it is aligned.
    fn push_timer(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        let at = sub.next_allowed_us;
        if !sub.has(ALIGNED) {
            sub.flags &= !GRID_TIMER;
            self.timers.push(Reverse((at, sub.id)));
            return;
        }
        sub.flags |= GRID_TIMER;
        if !self.grid_pending.contains(&at) {
            self.grid_pending.push(at);
            self.timers.push(Reverse((at, GRID)));
        }
    }

    /// Where the set keeps what a timer's end reads first (the subscriptions, the timers, the
    /// grid's pending ticks, the due list: each its own allocation), for a prefetch.
    pub(crate) fn hints(&self) -> [Hint; 4] {
        fn hint<T>(items: &[T], count: usize) -> Hint {
            // The lines of the first `count` entries (at least one line, at most 16).
            Hint { at: items.as_ptr().cast(), lines: (count.max(1) * std::mem::size_of::<T>()).div_ceil(64).min(16) }
        }
        [hint(&self.subs, self.subs.len()), hint(self.timers.as_slice(), self.timers.len()), hint(&self.grid_pending, self.grid_pending.len()), hint(&self.due, 1)]
    }

    /// When the next throttle interval ends, if any is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| self.instant_of(*at))
    }

    pub(crate) fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// Queues every subscribed symbol that has a value for a snapshot again, whatever seq was
    /// sent last (see `Bus::resync`: after a gap on the bus, or a feed node's restart, when a
    /// topic's seq may even have started again). At most one queue entry per subscription.
    pub(crate) fn resnapshot(&mut self) {
        for sub in &mut self.subs {
            if sub.has(AWAITING_SNAPSHOT) || sub.topic.seq() == 0 {
                continue;
            }
            sub.last_sent_seq = 0;
            sub.flags |= AWAITING_SNAPSHOT;
            self.snapshot_queue.push(sub.id);
        }
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
        let anchor = self.anchor_us.unwrap_or(0);
        let sub = &mut self.subs[i];
        sub.last_sent_seq = seq;
        let period = sub.throttle_ms as u64 * 1000;
        // On the grid: the tick after the one this delivery belongs to, however late in its
        // interval it went out (at most one delivery per tick; the grid never moves).
        sub.next_allowed_us = if sub.on_grid() { grid_floor(anchor, period, now_us) + period } else { now_us + period };
        sub.flags &= !(DUE | AWAITING_SNAPSHOT);
        if sub.throttle_ms > 0 {
            if !sub.has(TIMER) {
                sub.flags |= TIMER;
                self.push_timer(i);
            }
        } else if !sub.has(RECHECK) {
            sub.flags |= RECHECK;
            self.recheck.push(sub.id);
        }
    }

    /// Arms the throttle-0 symbols delivered and not armed since that are still unchanged; any
    /// that changed meanwhile become due instead. Returns how many did.
    ///
    /// Why not arm at delivery: a symbol just delivered has, by definition, not changed yet,
    /// and arming it costs a registration, a dispatch and a wake-up per delivered quote. The
    /// body instead takes what changed at each poll ([`SubscriptionSet::take_changed`]), and
    /// when a poll finds nothing it asks the bus for one wake-up after its next dispatch round
    /// ([`crate::bus::Bus::wake_after_next_dispatch`]); only what still has not changed then is
    /// armed here. With throttle 0 under load, every delivered symbol has changed by the next
    /// poll and nothing is armed at all.
    pub(crate) fn arm_unchanged(&mut self, now: Instant) -> usize {
        let now_us = self.micros(now);
        let due_before = self.due.len();
        for id in std::mem::take(&mut self.recheck) {
            if let Some(i) = self.find(id) {
                self.subs[i].flags &= !RECHECK;
                self.evaluate(i, now_us);
            }
        }
        self.due.len() - due_before
    }

    /// Takes the listed throttle-0 symbols (delivered, not armed since) that changed, newest
    /// value of each, while `take` accepts them; returns how many it took.
    ///
    /// One pass that checks, loads, hands over and records each symbol where it lies, which is
    /// what the firehose spends its user time on: listing each changed symbol as due and then
    /// finding it again cost a binary search and two list entries per quote. A symbol whose
    /// cadence or state changed meanwhile (a throttle above 0, a snapshot or due entry of its
    /// own) leaves the list and is evaluated as any other. The pass starts where the previous
    /// one ran out of budget, so that every symbol keeps its turn.
    pub(crate) fn take_changed(&mut self, now: Instant, take: &mut dyn FnMut(&Arc<PublishedQuote>) -> bool) -> usize {
        if self.recheck.is_empty() {
            return 0;
        }
        let now_us = self.micros(now);
        // Read when first needed: a pass that finds nothing changed costs no clock read.
        let mut wall_us = None;
        let (taken, moved) = with_latest_cache(|latest| self.take_changed_from(latest, now_us, &mut wall_us, take));
        if moved {
            // `evaluate` never adds to the list: only the moved entries go.
            let subs = &self.subs;
            self.recheck.retain(|&id| subs.binary_search_by_key(&id, |s| s.id).is_ok_and(|i| subs[i].has(RECHECK)));
        }
        taken
    }

    /// The pass of [`SubscriptionSet::take_changed`]: how many it took, and whether any symbol
    /// left the list.
    fn take_changed_from(&mut self, latest: &mut LatestCache, now_us: u64, wall_us: &mut Option<i64>, take: &mut dyn FnMut(&Arc<PublishedQuote>) -> bool) -> (usize, bool) {
        let mut tally = Tally::default();
        if self.recheck.len() * 4 >= self.subs.len() {
            // Most of the session's symbols: a pass over the subscriptions in memory order costs
            // less than a binary search (a chain of cache misses) per entry.
            let n = self.subs.len();
            let start = if self.changed_cursor < n { self.changed_cursor } else { 0 };
            for i in (start..n).chain(0..start) {
                if tally.full(self.look_changed(latest, i, now_us, wall_us, take)) {
                    self.changed_cursor = i;
                    break;
                }
            }
        } else {
            let mut k = 0;
            while k < self.recheck.len() {
                let Some(i) = self.find(self.recheck[k]) else {
                    k += 1;
                    continue;
                };
                if tally.full(self.look_changed(latest, i, now_us, wall_us, take)) {
                    // The next pass starts with this one.
                    self.recheck.rotate_left(k);
                    break;
                }
                k += 1;
            }
        }
        (tally.taken, tally.moved)
    }

    /// [`SubscriptionSet::take_changed`] for subscription `i`.
    fn look_changed(&mut self, latest: &mut LatestCache, i: usize, now_us: u64, wall_us: &mut Option<i64>, take: &mut dyn FnMut(&Arc<PublishedQuote>) -> bool) -> Look {
        let sub = &self.subs[i];
        if !sub.has(RECHECK) || sub.topic.seq() <= sub.last_sent_seq {
            return Look::Unchanged;
        }
        if sub.throttle_ms > 0 || sub.has(DUE | AWAITING_SNAPSHOT) || now_us < sub.next_allowed_us {
            // Its cadence changed since it was listed (a delivery under another cadence left
            // an interval to wait out, even at throttle 0 now), or it is due otherwise.
            self.subs[i].flags &= !RECHECK;
            self.evaluate(i, now_us);
            return Look::Moved;
        }
        let Some(quote) = latest.latest(&sub.topic).filter(|q| q.quote.seq > sub.last_sent_seq) else { return Look::Unchanged };
        if !take(quote) {
            return Look::Full;
        }
        self.note_wait(i, quote, now_us, *wall_us.get_or_insert_with(crate::quote::now_micros));
        let sub = &mut self.subs[i];
        sub.last_sent_seq = quote.quote.seq;
        sub.next_allowed_us = now_us;
        Look::Taken
    }

    /// Counts a live delivery of `quote` to subscription `i` in the stats (before it is
    /// recorded): the quotes merged away since its last one, and how long it waited.
    fn note_wait(&mut self, i: usize, quote: &PublishedQuote, now_us: u64, wall_us: i64) {
        let sub = &self.subs[i];
        if sub.last_sent_seq == 0 {
            return;
        }
        self.conflated += quote.quote.seq - sub.last_sent_seq - 1;
        let since_allowed = now_us.saturating_sub(sub.next_allowed_us);
        let since_published = wall_us.saturating_sub(quote.quote.pt).max(0) as u64;
        let wait = since_allowed.min(since_published);
        self.longest_wait_us = Some(self.longest_wait_us.map_or(wait, |w| w.max(wait)));
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
        if (if snapshot { &self.snapshot_queue } else { &self.due }).is_empty() {
            // Called for every frame: the clock reads below cost more than the rest of it.
            return 0;
        }
        let now_us = self.micros(now);
        let wall_us = crate::quote::now_micros();
        let mut queue = std::mem::take(if snapshot { &mut self.snapshot_queue } else { &mut self.due });
        let mut taken = 0;
        let mut consumed = 0;
        with_latest_cache(|latest| {
            for &id in &queue {
                let Some(i) = self.find(id) else {
                    consumed += 1;
                    continue;
                };
                match latest.latest(&self.subs[i].topic) {
                    Some(quote) if quote.quote.seq > self.subs[i].last_sent_seq => {
                        if !take(quote) {
                            break;
                        }
                        consumed += 1;
                        taken += 1;
                        if !snapshot {
                            self.note_wait(i, quote, now_us, wall_us);
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
        });
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
            self.set.arm_unchanged(Instant::now());
            if self.set.has_due() {
                return;
            }
            let mut fired = Vec::new();
            self.set.signal().fired().await;
            self.set.signal().take_dirty(&mut fired);
            self.set.on_fired(&fired, Instant::now());
        }

        /// Lets the bus's dispatcher run and applies what fired, without waiting for a fire: an
        /// on-grid symbol may be looked at on its next tick instead of armed (see
        /// `SubscriptionSet::on_timers`), and then nothing fires for it.
        async fn settle(&mut self) {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let mut fired = Vec::new();
            self.set.signal().take_dirty(&mut fired);
            self.set.on_fired(&fired, Instant::now());
        }

        /// Runs every pending timer, as the body would while the client stays quiet.
        async fn run_timers(&mut self) {
            while let Some(deadline) = self.set.next_deadline() {
                tokio::time::sleep_until(deadline).await;
                self.set.on_timers(Instant::now());
            }
        }

        /// What a poll of the body sends: what is due, and the throttle-0 symbols delivered
        /// earlier that changed since.
        fn deliver(&mut self) -> Vec<(String, u64)> {
            let mut out = Vec::new();
            let mut take = |q: &Arc<PublishedQuote>| {
                out.push((q.quote.symbol.to_string(), q.quote.seq));
                true
            };
            self.set.take_due(Instant::now(), &mut take);
            self.set.take_changed(Instant::now(), &mut take);
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

        /// Advances from timer to timer until something is delivered: (ms since the set's
        /// epoch, what).
        async fn next_delivery(&mut self) -> (u64, Vec<(String, u64)>) {
            for _ in 0..50 {
                self.advance_to_deadline().await;
                let out = self.deliver();
                if !out.is_empty() {
                    return ((Instant::now() - self.set.epoch).as_millis() as u64, out);
                }
            }
            panic!("nothing delivered over 50 timers");
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

    fn aligned(throttle_ms: u32) -> Cadence {
        Cadence { throttle_ms, align: true }
    }

    fn ms(since: Instant) -> u64 {
        (Instant::now() - since).as_millis() as u64
    }

    /// Aligned: what changed goes out together at the first tick after the change, the latest
    /// value once, an unchanged symbol not at all; a change after a quiet spell waits for its
    /// tick (not the throttle after it), and a later subscription's snapshot is immediate and
    /// leaves the grid where it was.
    #[tokio::test(start_paused = true)]
    async fn aligned_deliveries_fall_on_the_sessions_grid() {
        let mut h = Harness::new(&["AAPL", "MSFT", "IBM", "NVDA"]);
        for i in 0..4 {
            h.publish(i, 1.0);
        }
        let t0 = Instant::now();
        let three = h.topics[..3].to_vec();
        h.set.subscribe(&three, aligned(200), true, false, t0);
        assert_eq!(h.snapshot().len(), 3, "the snapshot goes out at once");
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.publish(0, 2.0);
        tokio::time::sleep(Duration::from_millis(70)).await;
        h.publish(1, 2.0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        h.publish(0, 3.0);
        assert!(!h.set.has_due());
        h.advance_to_deadline().await;
        assert_eq!(ms(t0), 200, "the first tick");
        assert_eq!(h.deliver(), vec![("AAPL".into(), 3), ("MSFT".into(), 2)], "together, the latest value, IBM not at all");
        assert_eq!(h.topics[2].registrations(), 0, "IBM is looked at on the next tick the session wakes for anyway, not armed");
        // IBM, unchanged at 200, changes at 260: due at 400 with AAPL's change.
        tokio::time::sleep(Duration::from_millis(60)).await;
        h.publish(2, 2.0);
        h.settle().await;
        assert!(!h.set.has_due(), "not before its tick");
        tokio::time::sleep(Duration::from_millis(40)).await;
        h.publish(0, 4.0);
        h.advance_to_deadline().await;
        assert_eq!(ms(t0), 400);
        assert_eq!(h.deliver(), vec![("AAPL".into(), 4), ("IBM".into(), 2)]);
        // After a quiet spell (the body running through its ticks), a change at 1,030 waits
        // for the tick at 1,200.
        h.run_timers().await;
        assert!(h.topics[..3].iter().all(|t| t.registrations() == 1), "a tick with nothing changed arms them all");
        tokio::time::sleep_until(t0 + Duration::from_millis(1030)).await;
        h.publish(1, 3.0);
        h.wait_fired().await;
        assert!(!h.set.has_due());
        assert_eq!(h.next_delivery().await, (1200, vec![("MSFT".into(), 3)]));
        // NVDA subscribed at 1,250: its snapshot at once, its change at 1,260 at the tick of 1,400.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let nvda = vec![h.topics[3].clone()];
        h.set.subscribe(&nvda, aligned(200), true, false, Instant::now());
        assert_eq!(h.snapshot(), vec![("NVDA".into(), 1)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.publish(3, 2.0);
        assert_eq!(h.next_delivery().await, (1400, vec![("NVDA".into(), 2)]), "the grid did not move");
    }

    /// Two throttles on one session keep their own grids; a tick delivered late still allows
    /// one delivery per tick, and the next tick stays where the grid puts it.
    #[tokio::test(start_paused = true)]
    async fn aligned_throttles_keep_their_own_grids() {
        let mut h = Harness::new(&["AAPL", "MSFT"]);
        let (aapl, msft) = (vec![h.topics[0].clone()], vec![h.topics[1].clone()]);
        let t0 = Instant::now();
        h.set.subscribe(&aapl, aligned(200), true, false, t0);
        h.set.subscribe(&msft, aligned(500), true, false, t0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.publish(0, 1.0);
        h.publish(1, 1.0);
        // Both dispatched before the fired topics are read.
        tokio::time::sleep(Duration::from_millis(1)).await;
        h.wait_fired().await;
        assert_eq!(h.next_delivery().await, (200, vec![("AAPL".into(), 1)]));
        assert_eq!(h.next_delivery().await, (500, vec![("MSFT".into(), 1)]));
        // Both change at 510; AAPL's frame goes out late, at 730 (its tick was 600): its next
        // delivery is at 800, the grid's, not at 930.
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.publish(0, 2.0);
        h.publish(1, 2.0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        h.wait_fired().await;
        tokio::time::sleep(Duration::from_millis(219)).await;
        h.set.on_timers(Instant::now());
        assert_eq!((ms(t0), h.deliver()), (730, vec![("AAPL".into(), 2)]));
        h.publish(0, 3.0);
        assert_eq!(h.next_delivery().await, (800, vec![("AAPL".into(), 3)]));
        assert_eq!(h.next_delivery().await, (1000, vec![("MSFT".into(), 2)]), "MSFT's grid: 500, 1000");
        // Re-subscribed without align: the first change after a quiet spell goes out at once.
        h.set.subscribe(&aapl, 200, false, false, Instant::now());
        h.run_timers().await;
        tokio::time::sleep(Duration::from_millis(1030)).await;
        h.publish(0, 4.0);
        let changed = Instant::now();
        h.wait_fired().await;
        assert_eq!((Instant::now(), h.deliver()), (changed, vec![("AAPL".into(), 4)]));
    }

    /// After a resync every symbol goes out again as a snapshot, even at a seq already sent,
    /// and a seq that started again (a feed node's restart) is followed from there.
    #[tokio::test(start_paused = true)]
    async fn a_resync_resends_every_symbol_even_when_seq_started_again() {
        let mut h = Harness::new(&["AAPL", "MSFT", "IBM"]);
        h.publish(0, 1.0);
        h.publish(1, 1.0);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 0, true, false, Instant::now());
        assert_eq!(h.snapshot(), vec![("AAPL".into(), 1), ("MSFT".into(), 1)]);
        for _ in 0..4 {
            h.publish(0, 2.0);
        }
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("AAPL".into(), 5)]);
        // The feed node restarted: AAPL's seq begins again at 1.
        let restarted = crate::quote::Quote::from_draft("AAPL".into(), 1, crate::quote::now_micros(), &draft(7.0));
        h.bus.apply(&h.topics[0], restarted);
        h.set.resnapshot();
        h.set.resnapshot();
        assert_eq!(h.snapshot(), vec![("AAPL".into(), 1), ("MSFT".into(), 1)], "each once; IBM has no value");
        assert!(h.deliver().is_empty(), "the snapshot was the delivery");
        h.publish(0, 8.0);
        h.wait_fired().await;
        assert_eq!(h.deliver(), vec![("AAPL".into(), 2)], "followed from the new seq");
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
        assert_eq!(h.deliver(), vec![("A".into(), 2)]);
        assert_eq!((h.topics[0].registrations(), h.topics[1].registrations()), (0, 0));
        // Unchanged at a look that arms: armed, and the next change wakes the session.
        assert_eq!(h.set.arm_unchanged(Instant::now()), 0);
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

    /// A symbol delivered under one cadence waits out that delivery's interval when its cadence
    /// changes, even back to throttle 0. Found by the fuzz target `throttle`: a symbol still
    /// listed for a recheck from an earlier time at throttle 0 went out again at once.
    #[tokio::test(start_paused = true)]
    async fn a_cadence_change_waits_out_the_interval_of_the_last_delivery() {
        let mut h = Harness::new(&["A"]);
        let topics = h.topics.clone();
        h.set.subscribe(&topics, 0, false, false, Instant::now());
        h.publish(0, 1.0);
        h.wait_fired().await;
        assert_eq!(h.deliver().len(), 1, "delivered at throttle 0, listed for a recheck");
        h.set.subscribe(&topics, Cadence { throttle_ms: 50, align: true }, false, false, Instant::now());
        h.set.resnapshot();
        assert_eq!(h.snapshot().len(), 1, "delivered again, on the grid");
        h.set.subscribe(&topics, 0, false, false, Instant::now());
        h.publish(0, 2.0);
        assert!(h.deliver().is_empty(), "not twice within one tick of the grid");
        let (at, out) = h.next_delivery().await;
        assert_eq!(out, vec![("A".into(), 2)]);
        assert_eq!(at, 50, "at the end of the last delivery's tick");
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

    /// Takes what changed at throttle 0 with room for `budget` quotes.
    fn take_changed_within(set: &mut SubscriptionSet, budget: usize) -> Vec<String> {
        let mut taken = Vec::new();
        set.take_changed(Instant::now(), &mut |q| {
            if taken.len() == budget {
                return false;
            }
            taken.push(q.quote.symbol.to_string());
            true
        });
        taken
    }

    /// Throttle-0 symbols that keep changing faster than frames have room for each get their
    /// turn: a pass that runs out of budget is where the next one starts. Both ways of looking
    /// are covered: a pass over the subscriptions (most of the session's symbols are at
    /// throttle 0) and a walk of the list (few are, among many throttled ones).
    #[tokio::test(start_paused = true)]
    async fn changed_symbols_each_get_their_turn_when_frames_are_full() {
        for throttled in [0, 12] {
            let symbols: Vec<String> = (0..3 + throttled).map(|i| format!("S{i:02}")).collect();
            let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
            let mut h = Harness::new(&names);
            let topics = h.topics.clone();
            h.set.subscribe(&topics[..3], 0, false, false, Instant::now());
            h.set.subscribe(&topics[3..], 60_000, false, false, Instant::now());
            for t in 0..3 {
                h.publish(t, 1.0);
            }
            h.wait_fired().await;
            assert_eq!(h.deliver().len(), 3, "{throttled} throttled: the first changes");
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            for round in 0..6 {
                for t in 0..3 {
                    h.publish(t, 2.0 + round as f64);
                }
                let taken = take_changed_within(&mut h.set, 2);
                assert_eq!(taken.len(), 2, "{throttled} throttled, round {round}: {taken:?}");
                for symbol in taken {
                    *seen.entry(symbol).or_default() += 1;
                }
            }
            // Twelve quotes over three symbols, none starved: four each.
            assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![4, 4, 4], "{throttled} throttled: {seen:?}");
        }
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
    async fn resubscribing_in_a_loop_leaves_one_timer_per_symbol() {
        // Found by the property test: an unsubscribed symbol's timer stayed in the heap until
        // its interval ended, so subscribe (snapshot), deliver, unsubscribe in a loop grew the
        // heap by one entry per round for as long as the throttle.
        let mut h = Harness::new(&["A", "B"]);
        h.publish(0, 1.0);
        let topics = h.topics.clone();
        for _ in 0..1000 {
            h.set.subscribe(&topics, 60_000, true, false, Instant::now());
            assert_eq!(h.snapshot().len(), 1);
            h.set.unsubscribe(&[topics[0].id, topics[1].id], false);
            assert_eq!(h.set.pending_timers(), 0);
        }
        // A symbol still subscribed keeps its timer when another is dropped.
        h.set.subscribe(&topics, 60_000, true, false, Instant::now());
        h.snapshot();
        h.publish(1, 1.0);
        h.wait_fired().await;
        h.deliver();
        assert_eq!(h.set.pending_timers(), 2);
        h.set.unsubscribe(&[topics[0].id], false);
        assert_eq!(h.set.pending_timers(), 1);
        h.publish(1, 2.0);
        h.advance_to_deadline().await;
        assert_eq!(h.deliver(), vec![("B".into(), 2)]);
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

/// The state machine's invariants, checked on any sequence of calls: by the property tests
/// below and by the fuzz target `throttle` (through `crate::fuzzing`). A model of what the
/// client asked for runs beside a real [`SubscriptionSet`] on a real bus, driven the way the
/// session's body drives it, with the clock in the test's hands.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use std::time::Duration;

    use super::*;
    use crate::bus::{Bus, Publisher, properties::bus_with};
    use crate::quote::QuoteDraft;

    /// Symbols of the model's bus.
    const SYMBOLS: [&str; 4] = ["A", "B", "C", "D"];
    /// Throttles a step may ask for; the largest bounds how long a change may wait.
    const THROTTLES_MS: [u32; 4] = [0, 50, 100, 250];

    /// One thing that happens to a session: a client request, a feed's publish, time passing,
    /// or one of the body's calls.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(crate) enum Step {
        /// The feed publishes the topic.
        Publish {
            topic: usize,
        },
        /// `subscribe` of the topics in the mask (all of them for `*`).
        Subscribe {
            mask: u8,
            throttle: usize,
            snapshot: bool,
            wildcard: bool,
            align: bool,
        },
        Unsubscribe {
            mask: u8,
            wildcard: bool,
        },
        Advance {
            ms: u64,
        },
        /// A dispatcher round, and the body applying what fired.
        Dispatch,
        Timers,
        /// The body finding nothing to send twice: what it delivered at throttle 0 is armed.
        Arm,
        /// A frame of live quotes, holding at most `budget` of them.
        Deliver {
            budget: usize,
        },
        Snapshot {
            budget: usize,
        },
    }

    /// Bytes to steps, two bytes each: how the fuzz target reads its input.
    pub(crate) fn steps_from_bytes(data: &[u8]) -> Vec<Step> {
        data.chunks_exact(2).map(|pair| Step::from_bytes(pair[0], pair[1])).collect()
    }

    impl Step {
        fn from_bytes(kind: u8, arg: u8) -> Step {
            let mask = arg & 0x0F;
            match kind % 10 {
                0 | 1 => Step::Publish { topic: usize::from(arg) % SYMBOLS.len() },
                2 => Step::Subscribe { mask, throttle: usize::from(arg >> 4) % THROTTLES_MS.len(), snapshot: arg & 0x40 != 0, wildcard: arg & 0x80 != 0, align: kind >= 128 },
                3 => Step::Unsubscribe { mask, wildcard: arg & 0x80 != 0 },
                4 => Step::Advance { ms: u64::from(arg) * 2 },
                5 => Step::Dispatch,
                6 => Step::Timers,
                7 => Step::Arm,
                8 => Step::Deliver { budget: usize::from(arg % 5) + 1 },
                _ => Step::Snapshot { budget: usize::from(arg % 5) + 1 },
            }
        }
    }

    /// What the client asked for, per symbol, and what it was sent.
    #[derive(Debug, Default, Clone)]
    struct Model {
        /// Per topic: the cadence of its explicit subscription.
        explicit: [Option<Cadence>; SYMBOLS.len()],
        wildcard: Option<Cadence>,
        /// Per topic while delivered: seq of the last quote sent (or the seq it started from),
        /// when and under which cadence it was sent, and whether a snapshot is owed.
        last_seq: [u64; SYMBOLS.len()],
        last_sent: [Option<(u64, Cadence)>; SYMBOLS.len()],
        snapshot_owed: [bool; SYMBOLS.len()],
        /// The grids' anchor: the clock of the first subscribe, ms.
        anchor_ms: Option<u64>,
    }

    impl Model {
        fn delivered(&self, topic: usize) -> bool {
            self.explicit[topic].is_some() || self.wildcard.is_some()
        }

        /// The cadence a delivery is made under: the explicit subscription's, else `*`'s.
        fn cadence(&self, topic: usize) -> Option<Cadence> {
            self.explicit[topic].or(self.wildcard)
        }
    }

    fn draft() -> QuoteDraft {
        QuoteDraft { ts: 0, last: 1.0, bid: 0.99, ask: 1.01, size: 1, volume: 1, open: 1.0, high: 1.0, low: 1.0, prev_close: 1.0, decimals: 2 }
    }

    /// Runs `steps` and asserts, after each: the set's books agree with each other and with the
    /// model — **at most one pending entry per symbol** (one due slot, one timer, one bus
    /// registration, one recheck slot), the subscriptions and their throttles are what the
    /// client asked for; each quote taken is its topic's newest, above the last seq sent, and
    /// never sooner than the throttle after the previous one. At the end, once time has passed
    /// and the body has looked, **no stale value is left standing**: every delivered symbol's
    /// last quote sent is its topic's latest.
    pub(crate) fn check_steps(steps: &[Step]) {
        let bus = bus_with(&SYMBOLS);
        let topics = bus.topics();
        let mut set = SubscriptionSet::new(Arc::new(crate::bus::SessionSignal::default()));
        let start = Instant::now();
        let mut clock_ms = 0u64;
        let mut model = Model::default();
        for step in steps {
            let now = start + Duration::from_millis(clock_ms);
            apply(&bus, &topics, &mut set, &mut model, step, now, clock_ms);
            check_books(&set, &model, &topics);
            if let Step::Advance { ms } = step {
                clock_ms += ms;
            }
        }
        // Quiet: no more publishes; time passes and the body looks, as it would.
        let settle = [Step::Dispatch, Step::Arm, Step::Timers, Step::Snapshot { budget: SYMBOLS.len() }, Step::Deliver { budget: SYMBOLS.len() }];
        for _ in 0..3 {
            clock_ms += u64::from(THROTTLES_MS[THROTTLES_MS.len() - 1]);
            for step in &settle {
                apply(&bus, &topics, &mut set, &mut model, step, start + Duration::from_millis(clock_ms), clock_ms);
                check_books(&set, &model, &topics);
            }
        }
        for (index, topic) in topics.iter().enumerate() {
            if model.delivered(index) {
                assert_eq!(model.last_seq[index], topic.seq(), "{}: the latest value was never sent ({steps:?})", topic.symbol);
            }
        }
    }

    fn apply(bus: &Bus, topics: &[Arc<Topic>], set: &mut SubscriptionSet, model: &mut Model, step: &Step, now: Instant, clock_ms: u64) {
        let chosen = |mask: u8| -> Vec<usize> { (0..SYMBOLS.len()).filter(|i| mask & (1 << i) != 0).collect() };
        match *step {
            Step::Publish { topic } => {
                bus.publish(&topics[topic], &draft());
            }
            Step::Subscribe { mask, throttle, snapshot, wildcard, align } => {
                let cadence = Cadence { throttle_ms: THROTTLES_MS[throttle], align };
                let indices = if wildcard { (0..SYMBOLS.len()).collect() } else { chosen(mask) };
                let was: Vec<bool> = (0..SYMBOLS.len()).map(|i| model.delivered(i)).collect();
                let picked: Vec<Arc<Topic>> = indices.iter().map(|&i| topics[i].clone()).collect();
                set.subscribe(&picked, cadence, snapshot, wildcard, now);
                model.anchor_ms.get_or_insert(clock_ms);
                if wildcard {
                    model.wildcard = Some(cadence);
                }
                for &i in &indices {
                    if !wildcard {
                        model.explicit[i] = Some(cadence);
                    }
                    if !was[i] {
                        // New to the session: a snapshot if asked for and there is a quote,
                        // otherwise only changes from now on.
                        let seq = topics[i].seq();
                        model.snapshot_owed[i] = snapshot && seq > 0;
                        model.last_seq[i] = if snapshot { 0 } else { seq };
                        model.last_sent[i] = None;
                    }
                }
            }
            Step::Unsubscribe { mask, wildcard } => {
                if wildcard {
                    set.unsubscribe(&[], true);
                    model.wildcard = None;
                } else {
                    let indices = chosen(mask);
                    let ids: Vec<TopicId> = indices.iter().map(|&i| topics[i].id).collect();
                    set.unsubscribe(&ids, false);
                    for i in indices {
                        model.explicit[i] = None;
                    }
                }
            }
            Step::Advance { .. } => {}
            Step::Dispatch => {
                bus.dispatch_now();
                let mut fired = Vec::new();
                set.signal().take_dirty(&mut fired);
                set.on_fired(&fired, now);
            }
            Step::Timers => set.on_timers(now),
            Step::Arm => {
                set.arm_unchanged(now);
            }
            Step::Deliver { budget } | Step::Snapshot { budget } => {
                let snapshot = matches!(step, Step::Snapshot { .. });
                let mut taken = Vec::new();
                let mut take = |quote: &Arc<crate::quote::PublishedQuote>| {
                    if taken.len() == budget {
                        return false;
                    }
                    taken.push((quote.quote.symbol.clone(), quote.quote.seq));
                    true
                };
                if snapshot {
                    set.take_snapshot(now, take);
                } else {
                    set.take_due(now, &mut take);
                    set.take_changed(now, &mut take);
                }
                for (symbol, seq) in taken {
                    let i = SYMBOLS.iter().position(|s| **s == *symbol).expect("a model symbol");
                    assert!(model.delivered(i), "{symbol} sent but not subscribed");
                    assert_eq!(seq, topics[i].seq(), "{symbol}: a quote sent is the newest");
                    assert!(seq > model.last_seq[i], "{symbol}: seq {seq} sent after {}", model.last_seq[i]);
                    if snapshot {
                        assert!(model.snapshot_owed[i], "{symbol}: a snapshot nobody asked for");
                        model.snapshot_owed[i] = false;
                    } else {
                        assert!(!model.snapshot_owed[i], "{symbol}: a live quote before its snapshot");
                    }
                    if let Some((at, cadence)) = model.last_sent[i] {
                        let throttle = u64::from(cadence.throttle_ms);
                        if cadence.align && throttle > 0 {
                            // At most one delivery per tick of the grid, however late each went out.
                            let tick = |t: u64| grid_floor(model.anchor_ms.expect("subscribed"), throttle, t);
                            assert!(tick(clock_ms) >= tick(at) + throttle, "{symbol}: sent at {clock_ms} ms after {at} ms, within one {throttle} ms tick of the grid");
                        } else {
                            assert!(clock_ms >= at + throttle, "{symbol}: sent at {clock_ms} ms, {} ms after the last, under a {throttle} ms throttle", clock_ms - at);
                        }
                    }
                    model.last_seq[i] = seq;
                    model.last_sent[i] = Some((clock_ms, model.cadence(i).expect("delivered")));
                }
            }
        }
        // A topic no longer delivered forgets what was sent: a new subscription starts afresh.
        for i in 0..SYMBOLS.len() {
            if !model.delivered(i) {
                model.snapshot_owed[i] = false;
                model.last_sent[i] = None;
            }
        }
    }

    /// The set's books against each other and the model.
    fn check_books(set: &SubscriptionSet, model: &Model, topics: &[Arc<Topic>]) {
        assert!(set.subs.windows(2).all(|pair| pair[0].id < pair[1].id), "subscriptions sorted by topic, once each");
        let mut timers: Vec<TopicId> = set.timers.iter().map(|Reverse((_, id))| *id).filter(|&id| id != GRID).collect();
        timers.sort_unstable();
        assert!(timers.windows(2).all(|pair| pair[0] != pair[1]), "two timers for one symbol: {timers:?}");
        let with_timer: Vec<TopicId> = set.subs.iter().filter(|s| s.has(TIMER) && !s.has(GRID_TIMER)).map(|s| s.id).collect();
        assert_eq!(timers, with_timer, "a timer per symbol waiting for its interval's end, and no other");
        // The ticks' entries: one per tick listed, none unlisted, and one at or before each
        // tick an aligned symbol waits for.
        let mut grid: Vec<u64> = set.timers.iter().filter(|Reverse((_, id))| *id == GRID).map(|Reverse((at, _))| *at).collect();
        grid.sort_unstable();
        let mut pending = set.grid_pending.clone();
        pending.sort_unstable();
        assert_eq!(grid, pending, "the GRID entries are the ticks listed, once each");
        let on_grid: Vec<&Subscription> = set.subs.iter().filter(|s| s.has(TIMER) && s.has(GRID_TIMER)).collect();
        for sub in &on_grid {
            assert!(pending.iter().any(|&t| t <= sub.next_allowed_us), "topic {}: waits for {} µs with no tick entry by then", sub.id, sub.next_allowed_us);
        }
        // A tick's entry outlives the symbols it was for when they move (a cadence changed, a
        // removal) until it pops, which is when the wait it stood for would have ended.
        assert!(pending.len() <= 2 * set.subs.len(), "{} tick entries for {} symbols", pending.len(), set.subs.len());
        assert!(set.subs.iter().all(|s| s.has(TIMER) || !s.has(GRID_TIMER)), "GRID_TIMER only with TIMER");
        for (list, flag, name) in [(&set.due, DUE, "due"), (&set.snapshot_queue, AWAITING_SNAPSHOT, "snapshot"), (&set.recheck, RECHECK, "recheck")] {
            let mut listed = list.clone();
            listed.sort_unstable();
            let flagged: Vec<TopicId> = set.subs.iter().filter(|s| s.has(flag)).map(|s| s.id).collect();
            assert_eq!(listed, flagged, "the {name} list holds each flagged symbol once");
        }
        for (index, topic) in topics.iter().enumerate() {
            let sub = set.find(topic.id).map(|i| &set.subs[i]);
            assert_eq!(sub.is_some(), model.delivered(index), "{} delivered", topic.symbol);
            assert_eq!(topic.subscribers(), usize::from(sub.is_some()), "{} subscriber count", topic.symbol);
            if let Some(sub) = sub {
                assert_eq!(sub.has(EXPLICIT), model.explicit[index].is_some(), "{} explicit", topic.symbol);
                assert_eq!(sub.has(WILDCARD), model.wildcard.is_some(), "{} covered by *", topic.symbol);
                let cadence = model.cadence(index).expect("delivered");
                assert_eq!(sub.throttle_ms, cadence.throttle_ms, "{} throttle", topic.symbol);
                assert_eq!(sub.has(ALIGNED), cadence.align, "{} aligned", topic.symbol);
            }
            let orphan = set.orphan_registrations.iter().filter(|&&id| id == topic.id).count();
            assert!(orphan <= 1 && (orphan == 0 || sub.is_none()), "{}: orphan registrations", topic.symbol);
            let armed = usize::from(sub.is_some_and(|s| s.has(ARMED))) + orphan;
            assert_eq!(topic.registrations(), armed, "{}: one bus registration, only while armed", topic.symbol);
        }
        assert_eq!(set.explicit_count, model.explicit.iter().flatten().count());
        assert_eq!(set.wildcard, model.wildcard);
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;
        use crate::test_support::proptest_config;

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                6 => (0..SYMBOLS.len()).prop_map(|topic| Step::Publish { topic }),
                2 => (1u8..16, 0..THROTTLES_MS.len(), any::<bool>(), prop::bool::weighted(0.2), any::<bool>())
                    .prop_map(|(mask, throttle, snapshot, wildcard, align)| Step::Subscribe { mask, throttle, snapshot, wildcard, align }),
                1 => (1u8..16, prop::bool::weighted(0.2)).prop_map(|(mask, wildcard)| Step::Unsubscribe { mask, wildcard }),
                3 => prop_oneof![0u64..10, 10u64..300].prop_map(|ms| Step::Advance { ms }),
                3 => Just(Step::Dispatch),
                2 => Just(Step::Timers),
                1 => Just(Step::Arm),
                3 => (1..=SYMBOLS.len()).prop_map(|budget| Step::Deliver { budget }),
                1 => (1..=SYMBOLS.len()).prop_map(|budget| Step::Snapshot { budget }),
            ]
        }

        proptest! {
            #![proptest_config(proptest_config(256, "target/proptest-regressions/session-throttle.txt"))]

            #[test]
            fn one_pending_entry_per_symbol_throttled_newest_value_never_stale(steps in prop::collection::vec(step(), 0..120)) {
                check_steps(&steps);
            }

            #[test]
            fn any_bytes_read_as_steps_keep_the_promises(bytes in prop::collection::vec(any::<u8>(), 0..240)) {
                check_steps(&steps_from_bytes(&bytes));
            }
        }
    }
}
