//! Wake-ups at session outputs' next deadlines, from one timer per worker thread.
//!
//! Every session's output sleeps until its next throttle deadline (on the aligned grid, a
//! tick every `throttle_ms`). With a tokio `Sleep` each, 5,000 sessions on a 200 ms grid put
//! 25,000 entries a second through tokio's timer wheel, each inserted, cascaded down the
//! wheel's levels and fired where its session keeps it: a cache miss at every step, and the
//! wheel was 7% of the server's CPU in the aligned ticker. Here an output holds an [`Alarm`],
//! a slot in its worker thread's [`Clock`]: a wheel of one-millisecond buckets, each a list of
//! (slot, generation) pairs, with the slots' wakers side by side in one table. One driver task
//! per thread sleeps until the earliest occupied bucket and wakes every alarm in the buckets
//! that are due. tokio's timer sees at most one entry per millisecond per worker, whatever the
//! number of sessions, and firing an alarm touches two small arrays and the task it wakes.
//!
//! The sessions of one bucket are polled one after the other once woken, each first touching
//! state it left a throttle interval ago, long out of cache: that was most of their polls' own
//! time. So a firing alarm also prefetches its task's header and the memory its owner named
//! ([`Alarm::set_hints`]), and the misses of a bucket's sessions overlap instead of following
//! each other.
//!
//! Deadlines are rounded up to the millisecond (as tokio's timer does): an alarm never wakes
//! its task early. A deadline more than [`WHEEL_MS`] ahead waits in a heap until it comes
//! within the wheel's reach.
//!
//! Invariant: **an alarm has at most one live entry** (the one for its current deadline: its
//! generation); a deadline replaced, or an alarm dropped, leaves a stale entry that is skipped
//! when it comes up, and stale entries are swept whenever the entries outnumber
//! [`sweep_threshold`] of the alarms alive on the thread. So the clock's memory is bounded by
//! the number of sessions, not by how often they change their deadlines.
//!
//! Outputs are polled on actix workers, each a tokio `LocalSet`: the driver is spawned there,
//! on the first alarm set on the thread, and again if its runtime ended.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The wheel's reach, in one-millisecond buckets (a power of two).
const WHEEL_MS: u64 = 1024;
const WORDS: usize = (WHEEL_MS / 64) as usize;
/// Entries' worth of memory a bucket keeps once fired (2 KiB), so the wheel holds at most
/// 2 MiB between bursts.
const BUCKET_KEEP: usize = 256;

/// Past this many entries, counting stale ones, the entries are swept: twice the alarms alive
/// on the thread, plus room so that a handful of alarms does not sweep at every change.
fn sweep_threshold(alarms: usize) -> usize {
    2 * alarms + 64
}

/// One alarm's place in the clock.
#[derive(Default)]
struct Slot {
    /// The generation of its live entry; bumped at every deadline set, so older entries are stale.
    generation: u32,
    /// Whether the entry of `generation` is still to fire.
    armed: bool,
    /// Its deadline's bucket, while armed.
    tick: u64,
    /// The task to wake, taken when it fires.
    waker: Option<Waker>,
    /// Memory its task will touch first when woken, prefetched when it fires (see
    /// [`Alarm::set_hints`]).
    hints: [Hint; HINTS],
    /// Its poller's (see [`polling_with`]).
    poller: [Hint; POLLER_HINTS],
}

/// Memory a woken task touches first, and how many cache lines of it to prefetch. Only an
/// address: it is never read through, so a stale one costs a useless prefetch, nothing more.
#[derive(Clone, Copy)]
pub(crate) struct Hint {
    pub(crate) at: *const u8,
    pub(crate) lines: usize,
}

impl Hint {
    const NONE: Hint = Hint { at: std::ptr::null(), lines: 0 };

    /// The first `lines` cache lines of `value`.
    pub(crate) fn of<T>(value: &T, lines: usize) -> Hint {
        Hint { at: (value as *const T).cast(), lines }
    }
}

impl Default for Hint {
    fn default() -> Hint {
        Hint::NONE
    }
}

/// Hints for what polls an output (its connection), named by the poller for the time of one poll.
const POLLER_HINTS: usize = 2;

thread_local! {
    static POLLER: Cell<[Hint; POLLER_HINTS]> = const { Cell::new([Hint::NONE; POLLER_HINTS]) };
}

/// Runs `poll` with `hints` named as the memory the polling task touches before it reaches the
/// output (the connection that polls it): an alarm set during `poll` prefetches them too when it
/// fires. The alarm's owner knows only its own state; this is how the layer above it adds its own.
pub(crate) fn polling_with<R>(hints: [Hint; POLLER_HINTS], poll: impl FnOnce() -> R) -> R {
    let before = POLLER.replace(hints);
    let result = poll();
    POLLER.set(before);
    result
}

pub(crate) const HINTS: usize = 6;
/// Cache lines of a woken task prefetched from its waker's data (the task's header and the
/// start of its future).
const TASK_LINES: usize = 8;

/// Asks the CPU to bring `lines` cache lines from `at` into its caches. A hint: it never
/// faults, whatever the address, and costs nothing to be wrong.
#[inline]
fn prefetch(at: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch does not access memory; any address is allowed.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line * 64).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, lines);
}

/// An entry in a bucket: a slot, and the generation it was set at.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    slot: u32,
    generation: u32,
}

/// The thread's deadlines and its driver.
struct Clock {
    /// Bucket `t` (milliseconds from `origin`, rounded up) is at `t % WHEEL_MS`.
    origin: Instant,
    slots: Vec<Slot>,
    /// Slots of dropped alarms, reused first.
    free: Vec<u32>,
    buckets: Vec<Vec<Entry>>,
    /// Which buckets hold an entry (a bit per bucket).
    occupied: [u64; WORDS],
    /// The first tick not fired yet: buckets from here to `cursor + WHEEL_MS` are the wheel's.
    cursor: u64,
    /// Entries too far ahead for the wheel, by tick.
    later: BinaryHeap<Reverse<(u64, Entry)>>,
    /// Entries in the buckets and in `later`, stale ones included.
    entries: usize,
    /// Alarms alive on this thread.
    alarms: usize,
    /// A driver task is alive on this thread.
    driving: bool,
    /// The driver, while it waits: its waker and the tick its timer is set to (`None`: no entry).
    driver: Option<(Waker, Option<u64>)>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            slots: Vec::new(),
            free: Vec::new(),
            buckets: (0..WHEEL_MS).map(|_| Vec::new()).collect(),
            occupied: [0; WORDS],
            cursor: 0,
            later: BinaryHeap::new(),
            entries: 0,
            alarms: 0,
            driving: false,
            driver: None,
        }
    }

    /// The first tick at or after `at`: waking at that tick is never early.
    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        since.as_millis() as u64 + u64::from(since.subsec_nanos() % 1_000_000 != 0)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + Duration::from_millis(tick)
    }

    fn is_live(&self, entry: Entry) -> bool {
        let slot = &self.slots[entry.slot as usize];
        slot.armed && slot.generation == entry.generation
    }

    fn insert(&mut self, tick: u64, entry: Entry) {
        self.entries += 1;
        // A tick already passed is fired at the driver's next pass.
        let tick = tick.max(self.cursor);
        if tick >= self.cursor + WHEEL_MS {
            self.later.push(Reverse((tick, entry)));
            return;
        }
        let index = (tick % WHEEL_MS) as usize;
        self.buckets[index].push(entry);
        self.occupied[index / 64] |= 1 << (index % 64);
    }

    /// Fires every bucket up to `now` into `due` (the wakers of live entries), bringing
    /// entries of `later` into the wheel as the cursor comes within reach of them.
    fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        let Some(last) = now.checked_duration_since(self.origin).map(|since| since.as_millis() as u64) else { return };
        loop {
            self.reach_later();
            if let Some(tick) = self.next_occupied().filter(|&tick| tick <= last) {
                self.fire_bucket(tick, due);
                self.cursor = tick + 1;
            } else if let Some(&Reverse((tick, _))) = self.later.peek().filter(|Reverse((tick, _))| *tick <= last) {
                // Nothing in the wheel before it: move the wheel there.
                self.cursor = tick;
            } else {
                self.cursor = self.cursor.max(last + 1);
                self.reach_later();
                return;
            }
        }
    }

    /// Moves the entries of `later` that the wheel reaches from its cursor into it.
    fn reach_later(&mut self) {
        while let Some(&Reverse((tick, entry))) = self.later.peek() {
            if tick >= self.cursor + WHEEL_MS {
                break;
            }
            self.later.pop();
            self.entries -= 1;
            if self.is_live(entry) {
                self.insert(tick, entry);
            }
        }
    }

    fn fire_bucket(&mut self, tick: u64, due: &mut Vec<Waker>) {
        let index = (tick % WHEEL_MS) as usize;
        self.occupied[index / 64] &= !(1 << (index % 64));
        let mut bucket = std::mem::take(&mut self.buckets[index]);
        self.entries -= bucket.len();
        for entry in bucket.drain(..) {
            if self.is_live(entry) {
                let slot = &mut self.slots[entry.slot as usize];
                slot.armed = false;
                // The tasks of one bucket are polled one after the other once woken, each
                // first touching state it left 200 ms ago, out of cache: fetched here, their
                // misses overlap instead of following each other.
                for hint in slot.poller.iter().chain(&slot.hints) {
                    prefetch(hint.at, hint.lines);
                }
                if let Some(waker) = slot.waker.take() {
                    prefetch(waker.data().cast(), TASK_LINES);
                    due.push(waker);
                }
            }
        }
        // A bucket keeps its memory for the next time round, up to a bound: one that took a
        // burst (thousands of sessions connecting in one millisecond) gives it back.
        if bucket.capacity() <= BUCKET_KEEP {
            self.buckets[index] = bucket;
        }
    }

    /// The first occupied bucket's tick from the cursor on, if the wheel holds any.
    fn next_occupied(&self) -> Option<u64> {
        let start = (self.cursor % WHEEL_MS) as usize;
        // Words from the cursor's to the end of the wheel, then from its start back round.
        for step in 0..=WORDS {
            let word = (start / 64 + step) % WORDS;
            let mut bits = self.occupied[word];
            if step == 0 {
                bits &= !0u64 << (start % 64);
            } else if step == WORDS {
                bits &= !(!0u64 << (start % 64));
            }
            if bits != 0 {
                let index = word * 64 + bits.trailing_zeros() as usize;
                let offset = (index + WHEEL_MS as usize - start) % WHEEL_MS as usize;
                return Some(self.cursor + offset as u64);
            }
        }
        None
    }

    /// The tick the driver must wake at: the wheel's first occupied bucket, else the first
    /// entry waiting beyond it.
    fn next_tick(&self) -> Option<u64> {
        self.next_occupied().or_else(|| self.later.peek().map(|Reverse((tick, _))| *tick))
    }

    /// Drops every stale entry.
    fn sweep(&mut self) {
        let slots = &self.slots;
        let live = |entry: &Entry| {
            let slot = &slots[entry.slot as usize];
            slot.armed && slot.generation == entry.generation
        };
        let mut entries = 0;
        for (index, bucket) in self.buckets.iter_mut().enumerate() {
            bucket.retain(live);
            entries += bucket.len();
            if bucket.is_empty() {
                self.occupied[index / 64] &= !(1 << (index % 64));
                // An emptied bucket's memory goes back too: a burst must not stay allocated.
                *bucket = Vec::new();
            }
        }
        self.later.retain(|Reverse((_, entry))| live(entry));
        self.entries = entries + self.later.len();
    }
}

thread_local! {
    static CLOCK: RefCell<Clock> = RefCell::new(Clock::new());
}

/// A session output's wake-up at its next deadline (see the module documentation).
pub(crate) struct Alarm {
    slot: u32,
    /// Given to the slot at every [`Alarm::set`].
    hints: [Hint; HINTS],
}

impl Alarm {
    pub(crate) fn new() -> Alarm {
        CLOCK.with_borrow_mut(|clock| {
            clock.alarms += 1;
            let slot = clock.free.pop().unwrap_or_else(|| {
                clock.slots.push(Slot::default());
                (clock.slots.len() - 1) as u32
            });
            Alarm { slot, hints: [Hint::default(); HINTS] }
        })
    }

    /// Records where the alarm's task starts its work when woken, for the clock to prefetch.
    pub(crate) fn set_hints(&mut self, hints: [Hint; HINTS]) {
        self.hints = hints;
    }

    /// Arranges for `cx`'s task to be woken at `at` (rounded up to the millisecond), replacing
    /// the deadline set before, if any. A deadline already past wakes the task at the driver's
    /// next pass, within a millisecond.
    pub(crate) fn set(&mut self, at: Instant, cx: &Context<'_>) {
        let wake_driver = CLOCK.with_borrow_mut(|clock| {
            let tick = clock.tick_of(at);
            let slot = &mut clock.slots[self.slot as usize];
            slot.hints = self.hints;
            slot.poller = POLLER.get();
            match &slot.waker {
                Some(known) if known.will_wake(cx.waker()) => {}
                _ => slot.waker = Some(cx.waker().clone()),
            }
            if slot.armed && slot.tick == tick {
                return None;
            }
            slot.generation = slot.generation.wrapping_add(1);
            slot.armed = true;
            slot.tick = tick;
            let entry = Entry { slot: self.slot, generation: slot.generation };
            if clock.entries >= sweep_threshold(clock.alarms) {
                clock.sweep();
            }
            clock.insert(tick, entry);
            if !clock.driving {
                clock.driving = true;
                let at = clock.instant_of(tick);
                tokio::task::spawn_local(Driver { sleep: Box::pin(tokio::time::sleep_until(at)) });
                return None;
            }
            // The driver's timer is set later than this tick (or not at all): it must look again.
            match clock.driver.as_ref() {
                Some((_, Some(driver_tick))) if *driver_tick <= tick => None,
                Some(_) => clock.driver.take().map(|(waker, _)| waker),
                None => None,
            }
        });
        if let Some(waker) = wake_driver {
            waker.wake();
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // The thread's storage may be gone already when a thread ends.
        let _ = CLOCK.try_with(|clock| {
            let mut clock = clock.borrow_mut();
            clock.alarms -= 1;
            let slot = &mut clock.slots[self.slot as usize];
            slot.armed = false;
            slot.waker = None;
            clock.free.push(self.slot);
        });
    }
}

/// The thread's one timer: sleeps until the earliest occupied bucket and wakes every alarm
/// due by then.
struct Driver {
    sleep: Pin<Box<Sleep>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Its runtime ended: the next alarm set on this thread spawns a new one.
        let _ = CLOCK.try_with(|clock| {
            let mut clock = clock.borrow_mut();
            clock.driving = false;
            clock.driver = None;
        });
    }
}

thread_local! {
    /// The wakers a driver pass found due, woken once the clock is no longer borrowed (kept to
    /// reuse its memory; empty between passes).
    static DUE: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut due = DUE.take();
        let poll = CLOCK.with_borrow_mut(|clock| {
            clock.driver = None;
            loop {
                clock.fire(Instant::now(), &mut due);
                let Some(tick) = clock.next_tick() else {
                    clock.driver = Some((cx.waker().clone(), None));
                    return Poll::Pending;
                };
                let at = clock.instant_of(tick);
                if self.sleep.deadline() != at {
                    self.sleep.as_mut().reset(at);
                }
                if self.sleep.as_mut().poll(cx).is_pending() {
                    clock.driver = Some((cx.waker().clone(), Some(tick)));
                    return Poll::Pending;
                }
            }
        });
        // Woken outside the borrow: a task is free to set its alarm again at once.
        for waker in due.drain(..) {
            waker.wake();
        }
        DUE.set(due);
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn woken(count: &Count) -> usize {
        count.0.load(AtomicOrdering::SeqCst)
    }

    fn entries() -> usize {
        CLOCK.with_borrow(|clock| clock.entries)
    }

    /// Lets the driver run (its timer fired, or it was woken) without moving the clock.
    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    /// Moves the paused clock to `at` (if it is not past it) and lets the driver run.
    async fn settle_at(at: Instant) {
        tokio::time::sleep_until(at).await;
        settle().await;
    }

    async fn in_local_set<F: Future<Output = ()>>(f: F) {
        tokio::task::LocalSet::new().run_until(f).await;
    }

    #[tokio::test(start_paused = true)]
    async fn each_alarm_wakes_at_its_own_deadline_and_only_then() {
        in_local_set(async {
            let start = Instant::now();
            let counters: Vec<_> = (0..3).map(|_| counter()).collect();
            let mut alarms: Vec<_> = (0..3).map(|_| Alarm::new()).collect();
            // Set out of order: 300, 100, 200 ms.
            for (i, ms) in [300, 100, 200].into_iter().enumerate() {
                alarms[i].set(start + Duration::from_millis(ms), &Context::from_waker(&counters[i].1));
            }
            // Fired once each at its deadline, and nothing more without a new one.
            for (ms, expect) in [(0, [0, 0, 0]), (99, [0, 0, 0]), (100, [0, 1, 0]), (200, [0, 1, 1]), (400, [1, 1, 1]), (1000, [1, 1, 1])] {
                settle_at(start + Duration::from_millis(ms)).await;
                assert_eq!(counters.iter().map(|(count, _)| woken(count)).collect::<Vec<_>>(), expect, "at {ms} ms");
            }
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_deadline_replaces_the_old_one_earlier_or_later() {
        in_local_set(async {
            let start = Instant::now();
            let (count, waker) = counter();
            let cx = Context::from_waker(&waker);
            let mut alarm = Alarm::new();
            alarm.set(start + Duration::from_millis(500), &cx);
            settle().await;
            // Earlier than the driver's timer: the driver must take it.
            alarm.set(start + Duration::from_millis(50), &cx);
            settle_at(start + Duration::from_millis(50)).await;
            assert_eq!(woken(&count), 1);
            // Later: the replaced deadline (50 ms from now) must not wake it.
            alarm.set(start + Duration::from_millis(300), &cx);
            alarm.set(start + Duration::from_millis(400), &cx);
            settle_at(start + Duration::from_millis(399)).await;
            assert_eq!(woken(&count), 1, "a replaced deadline woke the alarm");
            settle_at(start + Duration::from_millis(400)).await;
            assert_eq!(woken(&count), 2);
            // Dropped with a deadline set: never woken.
            alarm.set(start + Duration::from_millis(450), &cx);
            drop(alarm);
            settle_at(start + Duration::from_millis(500)).await;
            assert_eq!(woken(&count), 2, "a dropped alarm woke its task");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_changed_in_a_loop_leave_bounded_entries() {
        in_local_set(async {
            let start = Instant::now();
            let (count, waker) = counter();
            let cx = Context::from_waker(&waker);
            let mut alarms: Vec<_> = (0..10).map(|_| Alarm::new()).collect();
            let limit = CLOCK.with_borrow(|clock| sweep_threshold(clock.alarms));
            let mut most = 0;
            // Each alarm moves its deadline 10,000 times, always into the future (stale entries
            // never come up by themselves): only the sweep keeps the heap small.
            for round in 0..10_000u64 {
                for alarm in &mut alarms {
                    alarm.set(start + Duration::from_millis(1000 + round % 500), &cx);
                }
                most = most.max(entries());
            }
            assert!(most <= limit, "the clock reached {most} entries for 10 alarms (limit {limit})");
            settle_at(start + Duration::from_secs(3)).await;
            assert_eq!(woken(&count), 10, "each alarm wakes once, at its last deadline");
            assert_eq!(entries(), 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_wakes_within_a_millisecond() {
        in_local_set(async {
            let (count, waker) = counter();
            let mut alarm = Alarm::new();
            let cx = Context::from_waker(&waker);
            alarm.set(Instant::now() + Duration::from_millis(3), &cx);
            tokio::time::sleep(Duration::from_millis(10)).await;
            settle().await;
            assert_eq!(woken(&count), 1);
            alarm.set(Instant::now() - Duration::from_millis(5), &cx);
            tokio::time::sleep(Duration::from_millis(1)).await;
            settle().await;
            assert_eq!(woken(&count), 2);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_beyond_the_wheel_wait_and_then_fire_on_time() {
        in_local_set(async {
            let start = Instant::now();
            let counters: Vec<_> = (0..3).map(|_| counter()).collect();
            let mut alarms: Vec<_> = (0..3).map(|_| Alarm::new()).collect();
            // 5 s and 2.5 s are past the wheel's reach when set; 1.5 ms is in it.
            let deadlines = [Duration::from_secs(5), Duration::from_millis(2500), Duration::from_micros(1500)];
            for (i, after) in deadlines.into_iter().enumerate() {
                alarms[i].set(start + after, &Context::from_waker(&counters[i].1));
            }
            // tokio's paused clock moves in whole milliseconds: look a millisecond before the
            // deadline's, and at the one it rounds up to.
            for (i, before, by) in [(2, 1, 2), (1, 2499, 2500), (0, 4999, 5000)] {
                settle_at(start + Duration::from_millis(before)).await;
                assert_eq!(woken(&counters[i].0), 0, "alarm {i} woke by {before} ms, before {:?}", deadlines[i]);
                settle_at(start + Duration::from_millis(by)).await;
                assert_eq!(woken(&counters[i].0), 1, "alarm {i} ({:?}) had not woken by {by} ms", deadlines[i]);
            }
        })
        .await;
    }
}
