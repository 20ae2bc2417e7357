//! Feeds: the adapters that produce quotes and publish them onto the bus.
//!
//! A feed is a tokio task that owns its model (the simulation, or the replayed rows) and a
//! [`FeedControl`] through which the REST API pauses, resumes, seeks and changes its speed.
//! Feeds know nothing of sessions: they publish to the [`Bus`](crate::bus::Bus) and report their
//! state in a [`FeedStatus`] that the HTTP layer reads and that is broadcast to sessions as a
//! [`FeedEvent`] whenever it changes.
//!
//! Owned here: the shared control plumbing, the pacing clock that maps feed time to wall time
//! ([`Pacer`]), and the per-day session statistics ([`DayStats`]) both feed kinds compute.

pub(crate) mod remote;
pub(crate) mod replay;
pub(crate) mod settings;
pub(crate) mod sim;
pub(crate) mod universe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Why the feeds could not start. Each message names the file, line or symbol at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Universe(#[from] universe::UniverseError),
    #[error(transparent)]
    Replay(#[from] replay::format::ReplayError),
    #[error("feed '{feed}': {message}")]
    Invalid { feed: String, message: String },
}

/// A feed to run, as the configuration resolved it (`config` builds these; a feed reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// Unique; in `/api/feeds`, the control URL and the `feed` field of each symbol.
    pub name: String,
    /// Which adapter runs it.
    pub kind: FeedKind,
    /// Seed of the simulation or of the intrabar paths of bar files.
    pub seed: u64,
    /// Appended (upper case) to every symbol of the feed.
    pub suffix: String,
    /// Sim: model seconds per wall second. Replay: history seconds per wall second (0: as fast
    /// as possible).
    pub speed: f64,
    /// Sim only.
    pub rate: f64,
    /// Sim only: the instrument universe CSV (none: the built-in one).
    pub universe: Option<std::path::PathBuf>,
    /// Replay only.
    pub files: Vec<(std::path::PathBuf, Option<String>)>,
    /// Replay only: a fixed wall interval per row instead of `speed`.
    pub interval_ms: Option<f64>,
    /// Replay only: start again at the end of the data.
    pub loop_replay: bool,
    /// Replay only: intrabar ticks per OHLC bar.
    pub ticks_per_bar: usize,
}

/// The running feeds: their handles (status, control) and the stream of their state changes.
pub struct Feeds {
    handles: Vec<FeedHandle>,
    events: broadcast::Sender<FeedEvent>,
}

impl Feeds {
    /// Starts every configured feed: loads its data (errors stop startup), registers its symbols
    /// on the bus (a symbol published by two feeds is an error naming both), spawns its task.
    pub(crate) async fn start(feeds: &[FeedConfig], publisher: Arc<dyn crate::bus::Publisher>) -> Result<Feeds, StartError> {
        // State changes are rare (pause, seek, speed, end); a session that falls 64 behind
        // re-reads every status instead.
        let (events, _) = broadcast::channel(64);
        let mut handles = Vec::new();
        for feed in feeds {
            let handle = match feed.kind {
                FeedKind::Sim => sim::start(feed, publisher.clone(), events.clone())?,
                FeedKind::Replay => replay::start(feed, publisher.clone(), events.clone())?,
            };
            handles.push(handle);
        }
        Ok(Feeds { handles, events })
    }

    /// The feeds of another node (a gateway's, from the Redis bus): a handle per status, whose
    /// state the caller keeps up to date through the returned controls (`update`), and whose
    /// control requests it answers.
    pub(crate) fn remote(statuses: Vec<FeedStatus>) -> (Feeds, Vec<FeedControl>) {
        let (events, _) = broadcast::channel(64);
        let (handles, controls) = statuses.into_iter().map(|status| control_pair(status, events.clone())).unzip();
        (Feeds { handles, events }, controls)
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, FeedHandle> {
        self.handles.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    pub(crate) fn get(&self, index: usize) -> Option<&FeedHandle> {
        self.handles.get(index)
    }

    /// The index of the feed with this name.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.handles.iter().position(|f| *f.name == *name)
    }

    /// Every feed has loaded and started.
    pub(crate) fn all_started(&self) -> bool {
        self.handles.iter().all(|f| f.status().state != FeedState::Starting)
    }

    /// State changes from now on, as `feed` messages for sessions.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.events.subscribe()
    }

    /// Receivers of the state changes: one per open session (watched as a client map).
    pub(crate) fn event_receivers(&self) -> usize {
        self.events.receiver_count()
    }
}

/// Which adapter a feed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    /// The simulated market (`feed::sim`).
    Sim,
    /// Historical CSV files (`feed::replay`).
    Replay,
}

/// What a feed is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FeedState {
    /// Configured, not yet publishing.
    Starting,
    Running,
    Paused,
    /// A replay reached the end of its data (and does not loop).
    Finished,
}

/// A feed's state as the REST API and the `feed` WebSocket message report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FeedStatus {
    pub name: Arc<str>,
    pub kind: FeedKind,
    pub state: FeedState,
    /// Replay: history seconds per wall second (0 = as fast as possible).
    /// Sim: the model's time scale (model seconds per wall second).
    pub speed: f64,
    /// Replay: the historical time of the last published row, ms since the epoch.
    pub clock: Option<i64>,
    /// Replay: the same clock as an ISO-8601 string, for people.
    pub clock_iso: Option<String>,
    pub symbols: usize,
    pub rows_read: u64,
    pub rows_skipped: u64,
    pub quotes_published: u64,
    /// How far behind its schedule the feed is, in seconds (0 when keeping up or paused).
    pub lag_seconds: f64,
}

impl FeedStatus {
    pub(crate) fn new(name: &str, kind: FeedKind, speed: f64, symbols: usize) -> FeedStatus {
        FeedStatus {
            name: name.into(),
            kind,
            state: FeedState::Starting,
            speed,
            clock: None,
            clock_iso: None,
            symbols,
            rows_read: 0,
            rows_skipped: 0,
            quotes_published: 0,
            lag_seconds: 0.0,
        }
    }
}

/// The highest speed any feed takes, in its configuration or at run time. Far beyond what a
/// chart can show (a replay of 20 years in under a millisecond), it only keeps the pacing
/// arithmetic away from infinities; the README and both feeds' speed rules quote it as `1e12`.
pub(crate) const MAX_SPEED: f64 = 1e12;

/// A runtime command for a feed, from `POST /api/feeds/{name}/control` (serialised only between
/// nodes of the Redis bus, `feed::remote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ControlAction {
    Pause,
    Resume,
    /// Jump to this historical time (ms since the epoch). Replay only. `whole_day`: the target
    /// was a date, and names its whole UTC day (`to` is its midnight), so a day whose first row
    /// comes after midnight is still inside the data.
    Seek {
        to: i64,
        whole_day: bool,
    },
    /// Set the speed (replay: history seconds per wall second; sim: time scale).
    Speed(f64),
}

/// Why a control command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("feed '{0}' does not support {1}")]
    Unsupported(String, &'static str),
    /// `accepts` states the feed's rule, which differs by kind (a replay takes 0, a simulation
    /// does not).
    #[error("invalid speed {value} for feed '{feed}': {accepts}")]
    InvalidSpeed { feed: String, value: f64, accepts: &'static str },
    /// Before the first row or after the last one: refused at both ends, nothing moved.
    #[error("seek to {} is outside the replayed data, which runs from {} to {}", iso_millis(*.requested), iso_millis(*.first), iso_millis(*.last))]
    SeekOutOfRange { requested: i64, first: i64, last: i64 },
    #[error("feed '{0}' has stopped")]
    Stopped(String),
    /// A gateway forwarded the command to the feed node through Redis and had no answer in time.
    #[error("feed '{0}': the feed node did not answer within 2 s (is it running, and Redis up?)")]
    Timeout(String),
    /// A gateway already has its limit of control requests waiting for the feed node.
    #[error("feed '{0}': {1} control requests already wait for the feed node; retry shortly")]
    Busy(String, usize),
    /// The feed node refused the command: its kind ([`ControlError::kind`]) and message.
    #[error("{message}")]
    Remote { kind: String, message: String },
}

impl ControlError {
    /// What kind of refusal this is, the same on every node: `stopped`, `unsupported`,
    /// `timeout`, `busy` or `invalid` (a speed or seek target the feed refuses).
    pub(crate) fn kind(&self) -> &str {
        match self {
            ControlError::Stopped(_) => "stopped",
            ControlError::Unsupported(..) => "unsupported",
            ControlError::Timeout(_) => "timeout",
            ControlError::Busy(..) => "busy",
            ControlError::InvalidSpeed { .. } | ControlError::SeekOutOfRange { .. } => "invalid",
            ControlError::Remote { kind, .. } => kind,
        }
    }
}

/// A control command with the channel its answer goes back on.
pub(crate) struct ControlRequest {
    pub action: ControlAction,
    pub reply: oneshot::Sender<Result<FeedStatus, ControlError>>,
}

/// A change of a feed's state, pushed to every session as a `feed` message.
#[derive(Debug, Clone)]
pub(crate) struct FeedEvent(pub FeedStatus);

/// The part of a feed shared with the rest of the server: its status and its command queue.
#[derive(Clone)]
pub(crate) struct FeedHandle {
    pub name: Arc<str>,
    status: Arc<Mutex<FeedStatus>>,
    commands: mpsc::Sender<ControlRequest>,
}

impl FeedHandle {
    pub(crate) fn status(&self) -> FeedStatus {
        // The lock is never held across an await or a panic-prone call.
        self.status.lock().expect("feed status lock").clone()
    }

    /// Sends a control command to the feed task and waits for its answer.
    pub(crate) async fn control(&self, action: ControlAction) -> Result<FeedStatus, ControlError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ControlError::Stopped(self.name.to_string());
        self.commands.send(ControlRequest { action, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The feed task's side of the control plumbing.
pub(crate) struct FeedControl {
    status: Arc<Mutex<FeedStatus>>,
    pub commands: mpsc::Receiver<ControlRequest>,
    events: broadcast::Sender<FeedEvent>,
}

impl FeedControl {
    /// Updates the shared status. `announce` pushes it to sessions (state or speed changed);
    /// counters and the clock are updated silently, clients read them over REST.
    pub(crate) fn update(&self, announce: bool, change: impl FnOnce(&mut FeedStatus)) -> FeedStatus {
        let snapshot = {
            let mut status = self.status.lock().expect("feed status lock");
            change(&mut status);
            status.clone()
        };
        if announce {
            // No receiver is fine: no session is connected.
            let _ = self.events.send(FeedEvent(snapshot.clone()));
        }
        snapshot
    }

    pub(crate) fn status(&self) -> FeedStatus {
        self.status.lock().expect("feed status lock").clone()
    }
}

/// Creates the two halves of a feed's control plumbing.
pub(crate) fn control_pair(status: FeedStatus, events: broadcast::Sender<FeedEvent>) -> (FeedHandle, FeedControl) {
    let name = status.name.clone();
    let status = Arc::new(Mutex::new(status));
    // Control commands come from REST requests; a handful in flight is plenty.
    let (tx, rx) = mpsc::channel(16);
    (FeedHandle { name, status: status.clone(), commands: tx }, FeedControl { status, commands: rx, events })
}

/// Maps feed time (ms of history, or any monotonic feed clock) to wall-clock deadlines at a
/// given speed, across pauses and speed changes.
///
/// The mapping is re-anchored at every change, so a speed change applies from the current
/// position on and a resume continues where the pause stopped, without a burst of catch-up.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    anchor_wall: Instant,
    anchor_feed_ms: f64,
    /// Feed milliseconds per wall millisecond; 0 = as fast as possible.
    speed: f64,
}

impl Pacer {
    pub(crate) fn new(now: Instant, feed_ms: f64, speed: f64) -> Pacer {
        Pacer { anchor_wall: now, anchor_feed_ms: feed_ms, speed }
    }

    pub(crate) fn speed(&self) -> f64 {
        self.speed
    }

    /// The wall time at which feed time `feed_ms` is due; `None` when due at once (speed 0).
    pub(crate) fn deadline(&self, feed_ms: f64) -> Option<Instant> {
        if self.speed <= 0.0 {
            return None;
        }
        let wall_ms = ((feed_ms - self.anchor_feed_ms) / self.speed).max(0.0);
        Some(self.anchor_wall + Duration::from_secs_f64(wall_ms / 1000.0))
    }

    /// Restarts the mapping at (`now`, `feed_ms`) with a new speed.
    pub(crate) fn reanchor(&mut self, now: Instant, feed_ms: f64, speed: f64) {
        self.anchor_wall = now;
        self.anchor_feed_ms = feed_ms;
        self.speed = speed;
    }

    /// Resumes after a pause at `feed_ms` (the next row's time) from `now`: the pause's length
    /// is not caught up in a burst.
    pub(crate) fn resume(&mut self, now: Instant, feed_ms: f64) {
        self.reanchor(now, feed_ms, self.speed);
    }

    /// Seconds the feed is behind its schedule when it publishes `feed_ms` at `now`.
    pub(crate) fn lag_seconds(&self, now: Instant, feed_ms: f64) -> f64 {
        match self.deadline(feed_ms) {
            Some(due) if now > due => (now - due).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Trading-session statistics of one instrument: open, high, low, cumulative volume and the
/// previous session's close. A session is whatever the feed says it is: the simulation's one
/// session since start, or a replayed UTC calendar day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DayStats {
    /// Which session these statistics belong to (replay: days since the epoch).
    pub day: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub volume: u64,
    pub prev_close: f64,
    pub last: f64,
}

impl DayStats {
    /// Statistics of a session that has not traded yet, whose previous close is `prev_close`.
    pub(crate) fn new(day: i64, prev_close: f64) -> DayStats {
        DayStats { day, open: f64::NAN, high: f64::NAN, low: f64::NAN, volume: 0, prev_close, last: prev_close }
    }

    /// Records a trade at `price` of `size` in session `day`. A new day rolls the statistics:
    /// the previous day's last becomes `prev_close`. Returns whether the day rolled.
    pub(crate) fn trade(&mut self, day: i64, price: f64, size: u64) -> bool {
        let rolled = day != self.day;
        if rolled {
            let prev = if self.open.is_nan() { self.prev_close } else { self.last };
            *self = DayStats::new(day, prev);
        }
        if self.open.is_nan() {
            self.open = price;
            self.high = price;
            self.low = price;
            if self.prev_close.is_nan() || self.prev_close == 0.0 {
                self.prev_close = price;
            }
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.volume = self.volume.saturating_add(size);
        self.last = price;
        rolled
    }

    /// The quote of the trade just recorded with [`DayStats::trade`], with these session
    /// statistics.
    pub(crate) fn draft(&self, ts: i64, bid: f64, ask: f64, size: u64, decimals: u8) -> crate::quote::QuoteDraft {
        crate::quote::QuoteDraft {
            ts,
            last: self.last,
            bid,
            ask,
            size,
            volume: self.volume,
            open: self.open,
            high: self.high,
            low: self.low,
            prev_close: self.prev_close,
            decimals,
        }
    }

    /// Overrides the cumulative volume when the source provides it (tick files with `volume`).
    pub(crate) fn set_volume(&mut self, volume: u64) {
        self.volume = volume;
    }
}

/// Milliseconds since the epoch to a UTC day number.
pub(crate) fn utc_day(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(86_400_000)
}

/// Milliseconds since the epoch as ISO-8601 UTC (`2008-09-15T14:30:00.000Z`).
pub(crate) fn iso_millis(ts_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts_ms) {
        Some(time) => time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ts_ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_stats_roll_over_and_track_range() {
        let mut stats = DayStats::new(0, f64::NAN);
        stats.trade(0, 10.0, 5);
        stats.trade(0, 12.0, 5);
        stats.trade(0, 9.0, 5);
        assert_eq!((stats.open, stats.high, stats.low, stats.volume), (10.0, 12.0, 9.0, 15));
        assert_eq!(stats.prev_close, 10.0, "first session uses its open as previous close");
        assert!(stats.trade(1, 11.0, 1));
        assert_eq!((stats.open, stats.high, stats.low, stats.volume, stats.prev_close), (11.0, 11.0, 11.0, 1, 9.0));
    }

    #[test]
    fn pacer_maps_speed_and_reanchors() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 0.0, 1000.0);
        assert_eq!(pacer.deadline(5000.0), Some(start + Duration::from_millis(5)));
        pacer.reanchor(start + Duration::from_millis(5), 5000.0, 10.0);
        assert_eq!(pacer.deadline(6000.0), Some(start + Duration::from_millis(105)));
        pacer.reanchor(start, 0.0, 0.0);
        assert_eq!(pacer.deadline(1e12), None);
    }
}
