//! Fault injection (`--faults`, docs/FAULTS.md): faults added at run time through
//! `/api/faults` or at start with `--fault` and `[[faults]]`, fired on schedule, applied where
//! they act — a session's connection, what a feed publishes, a new connection — and counted.
//!
//! - [`spec`]: what a fault is ([`FaultSpec`]) and the one parser of its three forms.
//! - [`settings`]: `--faults`, `--fault` and the TOML keys.
//!
//! Owned here: [`Faults`], the registry of active faults (held as `Arc<Faults>`, built only when
//! `--faults` is given), its timer task ([`Faults::run`]) that fires and expires them, the log
//! of recent firings; the three ways faults reach what they act on: [`FaultWatch`] (one per
//! session: the [`SessionFault`]s its firings ask of it), [`Faults::publisher`] (a `Publisher`
//! around the feeds' own that skips and drops quotes: `gap`, `feed_stall`) and
//! [`Faults::reject_connect`] (the admission check).
//!
//! Invariants: without `--faults` nothing here exists — no registry, no timer, no wrapper
//! around the publisher — so faults cost nothing when off. With it, memory is bounded: at most
//! [`MAX_ACTIVE`] faults, [`MAX_LOG`] log entries and [`MAX_SESSION_FIRINGS`] session firings
//! kept for sessions to read. Which sessions a `fraction` fault hits is a function of the
//! server's seed, the fault's id, the firing's number and the session's id, never of the clock
//! ([`hits`]). Every injected fault is logged and counted in
//! `tickerfeed_faults_injected_total{kind}`: a session-level firing once per session it hits
//! (when the session takes it, [`FaultWatch::take_actions`]), a refused connection once, a
//! feed-level firing (`gap`, `feed_stall`) once.

pub(crate) mod settings;
pub(crate) mod spec;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::bus::{BusError, Publisher, SymbolInfo, Topic};
use crate::metrics::Metrics;
use crate::quote::QuoteDraft;

pub use self::spec::{FaultKind, FaultSpec, SpecError};

/// Faults active at once; one more is refused (409 `too_many_faults`).
pub(crate) const MAX_ACTIVE: usize = 64;
/// Firings kept for `GET /api/faults`'s `log`, newest last.
pub(crate) const MAX_LOG: usize = 256;
/// Session-level firings kept for sessions to take: a session that has not looked for this
/// many firings misses the oldest.
pub(crate) const MAX_SESSION_FIRINGS: usize = 256;

/// What a firing asks of one session (already filtered by the fault's target).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SessionFault {
    /// `None`: drop the TCP connection with no close frame; else close with this code.
    Disconnect { code: Option<u16> },
    /// Write nothing for this long.
    Stall { duration: Duration },
    /// Hold each delivery `by` while now < `until`.
    Delay { by: Duration, until: Instant },
    /// The next `count` quotes (of `symbol`, or any) go out twice.
    Duplicate { symbol: Option<Arc<str>>, count: u32 },
}

/// Why a fault could not be added.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum AddError {
    #[error("{MAX_ACTIVE} faults are active, the limit; delete one first (DELETE /api/faults/{{id}})")]
    TooMany,
    /// The spec names something that does not exist here (a symbol, a feed).
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

/// The registry of active faults. See the module documentation.
pub(crate) struct Faults {
    /// The server's `--seed`: with the fault id, the firing and the session, it decides which
    /// sessions a `fraction` fault hits.
    seed: u64,
    metrics: Arc<Metrics>,
    /// Symbols a fault names must be published here.
    bus: Arc<crate::bus::Bus>,
    /// The configured feeds' names, which a `feed=` target must be one of.
    feeds: Vec<String>,
    state: Mutex<State>,
    /// What the publisher wrapper acts on; a lock of its own so that the API never holds up a
    /// feed for longer than one lookup.
    effects: Mutex<FeedEffects>,
    /// Faults in the registry (for [`Faults::active`] without the lock).
    active: AtomicUsize,
    /// Whether a `reject_connect` fault may refuse: false makes the admission check one load.
    reject_armed: AtomicBool,
    /// Whether `effects` holds anything: false makes a publish one load more than without faults.
    feed_effects: AtomicBool,
    /// The number of session-level firings so far: sessions wait for it to change.
    session_firings: watch::Sender<u64>,
    /// Wakes the timer when a fault is added or removed.
    changed: Notify,
}

struct State {
    next_id: u64,
    /// Ordered by id; at most [`MAX_ACTIVE`].
    faults: Vec<Active>,
    /// At most [`MAX_LOG`], oldest first.
    log: VecDeque<LogEntry>,
    /// At most [`MAX_SESSION_FIRINGS`], by increasing `seq`.
    session_firings: VecDeque<SessionFiring>,
    /// The `seq` the next session firing gets.
    next_session_firing: u64,
}

/// A fault in the registry.
struct Active {
    id: u64,
    spec: FaultSpec,
    added_at: u64,
    /// When `for` ends (and the wall-clock time of it, for the listing).
    expires: Option<(Instant, u64)>,
    next_fire: Option<Instant>,
    fired: u64,
    /// reject_connect: refusals left from the last firing; `None` refuses every connection
    /// until the fault ends (`for` without `count`).
    remaining: Option<u32>,
}

/// One entry of the log `GET /api/faults` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LogEntry {
    /// Unix milliseconds.
    pub at: u64,
    pub id: u64,
    pub kind: &'static str,
    /// The fault's firing this belongs to (1 = at its addition).
    pub firing: u64,
    pub what: String,
}

/// A session-level firing, kept for sessions to take.
struct SessionFiring {
    seq: u64,
    fault: u64,
    kind: FaultKind,
    firing: u64,
    fraction: Option<f64>,
    session: Option<u64>,
    action: SessionFault,
}

/// What the publisher wrapper acts on.
#[derive(Default)]
struct FeedEffects {
    /// Running feed stalls: (fault id, feed name or symbol; neither: every feed).
    stalls: Vec<(u64, Option<String>, Option<String>)>,
    /// Per symbol: quotes still to skip, and those skipped since its last publish.
    gaps: HashMap<String, Gap>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Gap {
    remaining: u64,
    skipped: u64,
}

/// What the wrapper does with one publish.
enum Effect {
    Publish,
    Drop,
    Jump(u64),
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Faults {
    /// An empty registry. `feeds`: the configured feeds' names.
    pub(crate) fn new(seed: u64, metrics: Arc<Metrics>, bus: Arc<crate::bus::Bus>, feeds: Vec<String>) -> Arc<Faults> {
        Arc::new(Faults {
            seed,
            metrics,
            bus,
            feeds,
            state: Mutex::new(State { next_id: 1, faults: Vec::new(), log: VecDeque::new(), session_firings: VecDeque::new(), next_session_firing: 0 }),
            effects: Mutex::new(FeedEffects::default()),
            active: AtomicUsize::new(0),
            reject_armed: AtomicBool::new(false),
            feed_effects: AtomicBool::new(false),
            session_firings: watch::channel(0).0,
            changed: Notify::new(),
        })
    }

    /// Adds a fault and fires it at once; returns it as `GET /api/faults` lists it (before a
    /// one-shot fault leaves the registry).
    pub(crate) fn add(&self, spec: FaultSpec) -> Result<Value, AddError> {
        if let Some(symbol) = &spec.symbol {
            if self.bus.topic(symbol).is_none() {
                return Err(SpecError { key: "symbol".into(), message: format!("no feed publishes '{symbol}'") }.into());
            }
        }
        if let Some(feed) = &spec.feed {
            if !self.feeds.contains(feed) {
                return Err(SpecError { key: "feed".into(), message: format!("no feed is named '{feed}'; feeds: {}", self.feeds.join(", ")) }.into());
            }
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut state = self.state.lock().expect("faults lock");
        if state.faults.len() >= MAX_ACTIVE {
            return Err(AddError::TooMany);
        }
        let id = state.next_id;
        state.next_id += 1;
        let lasts = match (spec.kind, spec.every, spec.lasts) {
            (FaultKind::Stall, None, None) => Some(Duration::from_millis(spec.ms.unwrap_or(0))),
            (_, _, lasts) => lasts,
        };
        let expires = lasts.map(|lasts| (now + lasts, unix_millis(wall + lasts)));
        let next_fire = spec.every.map(|every| now + every);
        tracing::warn!(fault = id, kind = spec.kind.as_str(), "fault added: {spec}");
        state.faults.push(Active { id, spec, added_at: unix_millis(wall), expires, next_fire, fired: 0, remaining: None });
        let index = state.faults.len() - 1;
        self.fire(&mut state, index, now);
        let listed = listing(&state.faults[index]);
        if state.faults[index].is_done() {
            self.remove_at(&mut state, index);
        }
        self.settle(&state);
        drop(state);
        self.changed.notify_one();
        Ok(listed)
    }

    /// Removes fault `id`; returns it as it was listed, or `None` if there is no such fault.
    pub(crate) fn remove(&self, id: u64) -> Option<Value> {
        let mut state = self.state.lock().expect("faults lock");
        let index = state.faults.iter().position(|fault| fault.id == id)?;
        let listed = listing(&state.faults[index]);
        tracing::warn!(fault = id, "fault deleted");
        self.remove_at(&mut state, index);
        self.settle(&state);
        drop(state);
        self.changed.notify_one();
        Some(listed)
    }

    /// Removes every fault; returns how many there were.
    pub(crate) fn clear(&self) -> usize {
        let mut state = self.state.lock().expect("faults lock");
        let count = state.faults.len();
        while !state.faults.is_empty() {
            self.remove_at(&mut state, 0);
        }
        if count > 0 {
            tracing::warn!(count, "every fault deleted");
        }
        self.settle(&state);
        drop(state);
        self.changed.notify_one();
        count
    }

    /// `GET /api/faults`: `{"active", "faults": [...], "log": [...]}`.
    pub(crate) fn list(&self) -> Value {
        let state = self.state.lock().expect("faults lock");
        let faults: Vec<Value> = state.faults.iter().map(listing).collect();
        json!({"active": self.active(), "faults": faults, "log": state.log})
    }

    /// Whether any fault is active (for the dashboard).
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// The timer: fires each fault every `every` and removes it when its `for` has elapsed.
    /// Runs for the life of the server; spawn it once.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let notified = self.changed.notified();
            let next = {
                let mut state = self.state.lock().expect("faults lock");
                let next = self.tick(&mut state, Instant::now());
                self.settle(&state);
                next
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Expires and fires what is due at `now`; returns the next time anything is due.
    fn tick(&self, state: &mut State, now: Instant) -> Option<Instant> {
        let mut index = 0;
        while index < state.faults.len() {
            let fault = &state.faults[index];
            if fault.expires.is_some_and(|(at, _)| at <= now) {
                tracing::warn!(fault = fault.id, kind = fault.spec.kind.as_str(), fired = fault.fired, "fault expired ('for' elapsed)");
                self.remove_at(state, index);
                continue;
            }
            if let (Some(at), Some(every)) = (fault.next_fire, fault.spec.every) {
                if at <= now {
                    // Late (the server was busy): the next firing is one period from now, not a burst.
                    let next = if at + every > now { at + every } else { now + every };
                    state.faults[index].next_fire = Some(next);
                    self.fire(state, index, now);
                }
            }
            index += 1;
        }
        state.faults.iter().flat_map(|fault| [fault.next_fire, fault.expires.map(|(at, _)| at)]).flatten().min()
    }

    /// One firing of `state.faults[index]`: logged, then applied where the kind acts.
    fn fire(&self, state: &mut State, index: usize, now: Instant) {
        let fault = &mut state.faults[index];
        fault.fired += 1;
        let (id, firing, kind) = (fault.id, fault.fired, fault.spec.kind);
        let spec = fault.spec.clone();
        let what = match kind {
            FaultKind::RejectConnect => {
                fault.remaining = match (spec.count, spec.lasts) {
                    (None, Some(_)) => None,
                    (count, _) => Some(count.unwrap_or(1)),
                };
                match fault.remaining {
                    Some(count) => format!("the next {count} connection(s) are refused"),
                    None => "every connection is refused until the fault ends".to_string(),
                }
            }
            FaultKind::Gap => {
                let symbol = spec.symbol.clone().unwrap_or_default();
                let count = u64::from(spec.count.unwrap_or(1));
                let mut effects = self.effects.lock().expect("fault effects lock");
                effects.gaps.entry(symbol.clone()).or_default().remaining += count;
                self.feed_effects.store(true, Ordering::Release);
                self.metrics.faults_injected(kind.as_str(), 1);
                format!("the next {count} quote(s) of {symbol} are skipped")
            }
            FaultKind::FeedStall => {
                let mut effects = self.effects.lock().expect("fault effects lock");
                if !effects.stalls.iter().any(|(fault, ..)| *fault == id) {
                    effects.stalls.push((id, spec.feed.clone(), spec.symbol.clone()));
                }
                self.feed_effects.store(true, Ordering::Release);
                self.metrics.faults_injected(kind.as_str(), 1);
                let lasts = spec.lasts.map(spec::format_duration).unwrap_or_default();
                match (&spec.feed, &spec.symbol) {
                    (Some(feed), _) => format!("feed {feed} publishes nothing for {lasts}"),
                    (_, Some(symbol)) => format!("{symbol} is not published for {lasts}"),
                    _ => format!("every feed publishes nothing for {lasts}"),
                }
            }
            FaultKind::Disconnect | FaultKind::Stall | FaultKind::Delay | FaultKind::Duplicate => {
                let action = match kind {
                    FaultKind::Disconnect => SessionFault::Disconnect { code: spec.code },
                    FaultKind::Stall => SessionFault::Stall { duration: Duration::from_millis(spec.ms.unwrap_or(0)) },
                    FaultKind::Delay => {
                        let until = fault.expires.map_or(now, |(at, _)| at);
                        SessionFault::Delay { by: Duration::from_millis(spec.ms.unwrap_or(0)), until }
                    }
                    _ => SessionFault::Duplicate { symbol: spec.symbol.as_deref().map(Arc::from), count: spec.count.unwrap_or(1) },
                };
                let seq = state.next_session_firing;
                state.next_session_firing += 1;
                if state.session_firings.len() >= MAX_SESSION_FIRINGS {
                    state.session_firings.pop_front();
                }
                state.session_firings.push_back(SessionFiring { seq, fault: id, kind, firing, fraction: spec.fraction, session: spec.session, action });
                self.session_firings.send_replace(seq + 1);
                match (spec.session, spec.fraction) {
                    (Some(session), _) => format!("session {session}"),
                    (_, Some(fraction)) => format!("a fraction {fraction} of the sessions"),
                    _ => "every session".to_string(),
                }
            }
        };
        tracing::warn!(fault = id, kind = kind.as_str(), firing, "fault injected: {what}");
        push_log(state, LogEntry { at: unix_millis(SystemTime::now()), id, kind: kind.as_str(), firing, what });
    }

    /// Takes `state.faults[index]` out of the registry and ends what lasts with it (a feed stall).
    fn remove_at(&self, state: &mut State, index: usize) {
        let fault = state.faults.remove(index);
        if fault.spec.kind == FaultKind::FeedStall {
            let mut effects = self.effects.lock().expect("fault effects lock");
            effects.stalls.retain(|(id, ..)| *id != fault.id);
            self.feed_effects.store(!effects.stalls.is_empty() || !effects.gaps.is_empty(), Ordering::Release);
        }
    }

    /// Brings the lock-free flags up to date with `state`.
    fn settle(&self, state: &State) {
        self.active.store(state.faults.len(), Ordering::Release);
        let armed = state.faults.iter().any(|fault| fault.spec.kind == FaultKind::RejectConnect && fault.remaining != Some(0));
        self.reject_armed.store(armed, Ordering::Release);
    }

    /// The admission check of a new connection, any transport: `Some(id)` of the
    /// `reject_connect` fault that refuses it (one of its count used, counted in the metric,
    /// logged), `None` to let it in.
    pub(crate) fn reject_connect(&self) -> Option<u64> {
        if !self.reject_armed.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.state.lock().expect("faults lock");
        let index = state.faults.iter().position(|fault| fault.spec.kind == FaultKind::RejectConnect && fault.remaining != Some(0))?;
        let fault = &mut state.faults[index];
        let (id, firing) = (fault.id, fault.fired);
        let what = match &mut fault.remaining {
            Some(remaining) => {
                *remaining -= 1;
                format!("refused a connection ({} left)", remaining)
            }
            None => "refused a connection".to_string(),
        };
        self.metrics.faults_injected(FaultKind::RejectConnect.as_str(), 1);
        tracing::warn!(fault = id, kind = "reject_connect", firing, "fault injected: {what}");
        push_log(&mut state, LogEntry { at: unix_millis(SystemTime::now()), id, kind: FaultKind::RejectConnect.as_str(), firing, what });
        if state.faults[index].is_done() {
            self.remove_at(&mut state, index);
        }
        self.settle(&state);
        Some(id)
    }

    /// The faults' view of one session, for its task to wait on.
    pub(crate) fn watch(self: &Arc<Self>, session: u64) -> FaultWatch {
        let state = self.state.lock().expect("faults lock");
        let joined = state.next_session_firing;
        let now = Instant::now();
        // A delay still running applies to sessions that start during it, too.
        let running_delay = state.session_firings.iter().find(|f| matches!(f.action, SessionFault::Delay { until, .. } if until > now)).map(|f| f.seq);
        let mut version = self.session_firings.subscribe();
        if running_delay.is_some() {
            version.mark_changed();
        }
        drop(state);
        FaultWatch { faults: self.clone(), session, joined, next: running_delay.unwrap_or(joined), version }
    }

    /// Wraps the feeds' publisher: `gap` and `feed_stall` act here. Only built with `--faults`.
    pub(crate) fn publisher(self: &Arc<Self>, inner: Arc<dyn Publisher>) -> Arc<dyn Publisher> {
        Arc::new(FaultyPublisher { inner, faults: self.clone() })
    }

    /// What a publish of `topic` becomes while feed effects exist.
    fn effect(&self, topic: &Topic) -> Effect {
        let mut effects = self.effects.lock().expect("fault effects lock");
        let stalled = effects.stalls.iter().any(|(_, feed, symbol)| match (feed, symbol) {
            (Some(feed), _) => **feed == *topic.info.feed,
            (_, Some(symbol)) => **symbol == *topic.symbol,
            _ => true,
        });
        if stalled {
            return Effect::Drop;
        }
        let Some(gap) = effects.gaps.get_mut(&*topic.symbol) else { return Effect::Publish };
        if gap.remaining > 0 {
            gap.remaining -= 1;
            gap.skipped += 1;
            return Effect::Drop;
        }
        let skipped = gap.skipped;
        effects.gaps.remove(&*topic.symbol);
        self.feed_effects.store(!effects.stalls.is_empty() || !effects.gaps.is_empty(), Ordering::Release);
        Effect::Jump(skipped)
    }
}

impl Active {
    /// Whether the fault has nothing left to do: no `every`, no `for`, and fired (a
    /// reject_connect: its count used up).
    fn is_done(&self) -> bool {
        // A one-shot stall stays listed (and on the dashboard's banner) while it holds its
        // sessions: it expires `ms` after its firing.
        let once = self.spec.every.is_none() && self.spec.lasts.is_none() && self.expires.is_none();
        once && (self.spec.kind != FaultKind::RejectConnect || self.remaining == Some(0))
    }
}

/// A fault as `GET /api/faults` lists it: `id`, the spec's fields, `fired`, `remaining`
/// (reject_connect), `added_at` and `expires_at` (Unix ms). Posting it back adds the same spec.
fn listing(fault: &Active) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("id".into(), fault.id.into());
    map.extend(fault.spec.to_json());
    map.insert("fired".into(), fault.fired.into());
    if fault.spec.kind == FaultKind::RejectConnect {
        map.insert("remaining".into(), fault.remaining.map_or(Value::Null, Value::from));
    }
    map.insert("added_at".into(), fault.added_at.into());
    if let Some((_, at)) = fault.expires {
        map.insert("expires_at".into(), at.into());
    }
    Value::Object(map)
}

fn push_log(state: &mut State, entry: LogEntry) {
    if state.log.len() >= MAX_LOG {
        state.log.pop_front();
    }
    state.log.push_back(entry);
}

/// Whether firing `firing` of fault `fault` hits `session`: by id for a `session` target; for
/// a `fraction`, when a hash of (seed, fault, firing, session) falls under it — the same
/// sessions for the same seed, whatever the clock.
pub(crate) fn hits(seed: u64, fault: u64, firing: u64, session: u64, fraction: Option<f64>, target: Option<u64>) -> bool {
    if let Some(target) = target {
        return session == target;
    }
    let Some(fraction) = fraction else { return true };
    let hash = mix(seed ^ mix(fault ^ mix(firing ^ mix(session))));
    // The top 53 bits as a number in [0, 1).
    ((hash >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// SplitMix64's finaliser: a fixed, well-mixed 64-bit hash (std's hashers may change).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One session's view of the faults: it waits for [`FaultWatch::fired`] and then takes what the
/// firings ask of it. Small: a handle, the session's id and a cursor.
pub(crate) struct FaultWatch {
    faults: Arc<Faults>,
    session: u64,
    /// The first firing after the session started; earlier ones apply only if they are delays
    /// still running.
    joined: u64,
    /// The next firing not taken yet.
    next: u64,
    version: watch::Receiver<u64>,
}

// The session task (`session::task`) selects on `fired` and applies what `take_actions` returns.
impl FaultWatch {
    /// Cancel-safe: resolves when a fault fired since the last [`FaultWatch::take_actions`]
    /// (never, if the registry is gone).
    pub(crate) async fn fired(&mut self) {
        if self.version.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// What the firings since the last call ask of this session, filtered by their targets.
    /// Each returned action is counted once in `tickerfeed_faults_injected_total{kind}` here,
    /// so a firing that hits N sessions counts N.
    pub(crate) fn take_actions(&mut self) -> Vec<SessionFault> {
        self.version.borrow_and_update();
        let faults = &self.faults;
        let state = faults.state.lock().expect("faults lock");
        let now = Instant::now();
        let mut actions = Vec::new();
        for firing in state.session_firings.iter().filter(|f| f.seq >= self.next) {
            let running = match firing.action {
                SessionFault::Delay { until, .. } => until > now,
                _ => firing.seq >= self.joined,
            };
            if !running || !hits(faults.seed, firing.fault, firing.firing, self.session, firing.fraction, firing.session) {
                continue;
            }
            faults.metrics.faults_injected(firing.kind.as_str(), 1);
            tracing::debug!(fault = firing.fault, kind = firing.kind.as_str(), firing = firing.firing, session = self.session, "fault hits session");
            actions.push(firing.action.clone());
        }
        self.next = state.next_session_firing;
        actions
    }
}

/// The feeds' publisher with `gap` and `feed_stall` applied: one atomic load per publish while
/// neither is running.
struct FaultyPublisher {
    inner: Arc<dyn Publisher>,
    faults: Arc<Faults>,
}

impl Publisher for FaultyPublisher {
    fn register(&self, symbol: &str, info: SymbolInfo) -> Result<Arc<Topic>, BusError> {
        self.inner.register(symbol, info)
    }

    fn publish(&self, topic: &Topic, draft: &QuoteDraft) -> u64 {
        if !self.faults.feed_effects.load(Ordering::Acquire) {
            return self.inner.publish(topic, draft);
        }
        match self.faults.effect(topic) {
            Effect::Publish => self.inner.publish(topic, draft),
            // Not published: the seq stays (a stall) or is consumed by the jump to come (a gap).
            Effect::Drop => topic.seq(),
            Effect::Jump(skipped) => self.inner.publish_skipping(topic, draft, skipped),
        }
    }

    fn publish_skipping(&self, topic: &Topic, draft: &QuoteDraft, skip: u64) -> u64 {
        self.inner.publish_skipping(topic, draft, skip)
    }
}

#[cfg(test)]
mod tests;
