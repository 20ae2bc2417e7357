//! The session loop: one task per WebSocket connection.
//!
//! One `select!` loop waits on the client's frames, the bus's wake-ups, throttle timers, feed
//! state changes, the heartbeat and shutdown; after each event it flushes what is due. It never
//! awaits a send: output is produced only while the socket keeps up (see [`super::socket`]) and
//! the actix channel has room, so a session stuck behind a full socket still reads pings and
//! close frames, and keeps conflating instead of queueing.
//!
//! Output priority: control replies (the outbox) first, then snapshot frames, then live quote
//! frames. Architecture invariant: **the server's buffers hold at most [`SERVER_BUFFER_BUDGET`]
//! bytes per session** (plus the bounded outbox); everything else a client has not received yet
//! exists only as "this symbol is due", which costs no memory per quote.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Message, ProtocolError};
use futures_util::SinkExt;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use super::protocol::{ClientOp, ErrorCode, PROTOCOL_VERSION, QuoteFrameBuilder, Rejected, RequestId, ServerMessage, parse_client_message};
use super::socket::{SendLedger, SocketProbe, frame_wire_bytes};
use super::throttle::SubscriptionSet;
use crate::bus::{SessionSignal, Topic, TopicId};
use crate::feed::FeedEvent;
use crate::metrics::DisconnectReason;
use crate::quote::now_millis;
use crate::server::AppState;

/// Bytes a session may have in the server's own buffers (actix-ws channel plus actix-http's
/// write buffer) before it stops producing quote frames.
pub const SERVER_BUFFER_BUDGET: u64 = 32 * 1024;
/// Below this many unconfirmed bytes a frame is sent without asking the kernel.
const FAST_PATH_BYTES: u64 = 16 * 1024;
/// Kernel bytes not yet on the wire above which the socket counts as backed up.
const KERNEL_UNSENT_LIMIT: u64 = 16 * 1024;
/// Control replies waiting to be sent, at most; a client that lets more pile up is closed.
pub const OUTBOX_LIMIT_BYTES: usize = 32 * 1024;
/// Entries listed in a `subscribed` message's `rejected`, at most (the rest are dropped from
/// the list, not subscribed either), so a reply stays small whatever the request held.
pub const MAX_REJECTED_LISTED: usize = 100;
/// How long a closing connection may take to flush its close frame before it is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait between checks of a backed-up socket.
const MAX_RETRY: Duration = Duration::from_millis(100);

/// The limits a session enforces, from the configuration.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub default_throttle_ms: u64,
    pub min_throttle_ms: u64,
    pub max_throttle_ms: u64,
    pub max_symbols: usize,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub rate_limit: f64,
    pub rate_burst: f64,
    pub slow_consumer_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

/// A subscription requested in the upgrade URL (`/ws?symbols=A,B&throttle_ms=500`).
#[derive(Debug, Clone, Default)]
pub struct InitialSubscription {
    pub symbols: Vec<String>,
    pub throttle_ms: Option<u64>,
}

/// Why a session ended; each maps to a close code and a disconnect reason.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The client sent a close frame (echoed back) or vanished.
    ClientClose(Option<CloseReason>),
    ClientGone,
    SlowConsumer,
    IdleTimeout,
    ProtocolError(String),
    MessageTooBig,
    Shutdown,
}

impl End {
    fn close_reason(&self) -> Option<CloseReason> {
        let reason = |code, text: &str| Some(CloseReason { code, description: Some(text.to_string()) });
        match self {
            End::ClientClose(reason) => Some(reason.as_ref().map(|r| CloseReason { code: r.code, description: None }).unwrap_or(CloseReason { code: CloseCode::Normal, description: None })),
            End::ClientGone => None,
            End::SlowConsumer => reason(CloseCode::Policy, "slow consumer"),
            End::IdleTimeout => reason(CloseCode::Away, "idle timeout"),
            End::ProtocolError(_) => reason(CloseCode::Protocol, "protocol error"),
            End::MessageTooBig => reason(CloseCode::Size, "message too big"),
            End::Shutdown => reason(CloseCode::Away, "going away"),
        }
    }

    /// The disconnect reason reported in metrics.
    pub fn reason(&self) -> DisconnectReason {
        match self {
            End::ClientClose(_) | End::ClientGone => DisconnectReason::ClientClose,
            End::SlowConsumer => DisconnectReason::SlowConsumer,
            End::IdleTimeout => DisconnectReason::IdleTimeout,
            End::ProtocolError(_) => DisconnectReason::ProtocolError,
            End::MessageTooBig => DisconnectReason::Limit,
            End::Shutdown => DisconnectReason::Shutdown,
        }
    }
}

/// Token bucket for client messages.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { tokens: burst, rate, burst, updated: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

enum Outgoing {
    Text(String),
    Ping,
    Pong(actix_web::web::Bytes),
}

impl Outgoing {
    fn wire_bytes(&self) -> u64 {
        match self {
            Outgoing::Text(t) => frame_wire_bytes(t.len()),
            Outgoing::Ping => frame_wire_bytes(0),
            Outgoing::Pong(b) => frame_wire_bytes(b.len()),
        }
    }

    fn into_message(self) -> Message {
        match self {
            Outgoing::Text(t) => Message::Text(t.into()),
            Outgoing::Ping => Message::Ping(actix_web::web::Bytes::new()),
            Outgoing::Pong(b) => Message::Pong(b),
        }
    }
}

/// Whether the session may produce output now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Room {
    Yes,
    /// Backed up: look again at the retry time.
    No,
    /// The actix channel is full: wait for it.
    Channel,
}

/// One connection's state.
pub struct Session {
    state: Arc<AppState>,
    limits: Arc<SessionLimits>,
    ws: actix_ws::Session,
    subs: SubscriptionSet,
    outbox: VecDeque<Outgoing>,
    outbox_bytes: usize,
    /// A pong owed to the client; only the latest ping is answered (RFC 6455 5.5.3 allows it).
    pending_pong: Option<actix_web::web::Bytes>,
    ping_due: bool,
    ledger: SendLedger,
    probe: Option<SocketProbe>,
    bucket: TokenBucket,
    last_heard: Instant,
    next_ping: Instant,
    retry_at: Option<Instant>,
    retry_backoff: Duration,
    waiting_for_channel: bool,
    /// Since when output has been waiting with no progress by the kernel.
    stalled_since: Option<Instant>,
    fired: Vec<TopicId>,
    known_topics: usize,
    /// Whether the kernel was asked already during the current flush.
    probed_this_flush: bool,
}

impl Session {
    pub fn new(state: Arc<AppState>, ws: actix_ws::Session, probe: Option<SocketProbe>) -> Session {
        let now = Instant::now();
        let limits = state.limits.clone();
        let mut ledger = SendLedger::new();
        if let Some(progress) = probe.as_ref().and_then(SocketProbe::progress) {
            ledger.observe(progress);
        }
        Session {
            bucket: TokenBucket::new(limits.rate_limit, limits.rate_burst, now),
            next_ping: now + limits.ping_interval,
            limits,
            ws,
            subs: SubscriptionSet::new(Arc::new(SessionSignal::default())),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            pending_pong: None,
            ping_due: false,
            ledger,
            probe,
            last_heard: now,
            retry_at: None,
            retry_backoff: Duration::from_millis(1),
            waiting_for_channel: false,
            stalled_since: None,
            fired: Vec::new(),
            known_topics: 0,
            probed_this_flush: false,
            state,
        }
    }

    /// Runs the session to its end and closes the connection. Returns why it ended.
    pub async fn run(mut self, mut stream: AggregatedMessageStream, initial: InitialSubscription) -> End {
        let mut shutdown = self.state.shutdown.clone();
        let mut feed_events = self.state.feed_events.subscribe();
        let mut topics = self.state.bus.watch_topics();
        let end = if *shutdown.borrow() {
            End::Shutdown
        } else {
            self.welcome(initial);
            self.event_loop(&mut stream, &mut shutdown, &mut feed_events, &mut topics).await
        };
        self.close(stream, &end).await;
        end
    }

    async fn event_loop(
        &mut self,
        stream: &mut AggregatedMessageStream,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        feed_events: &mut broadcast::Receiver<FeedEvent>,
        topics: &mut tokio::sync::watch::Receiver<usize>,
    ) -> End {
        let signal = self.subs.signal().clone();
        loop {
            if let Err(end) = self.flush() {
                return end;
            }
            let wake_at = self.next_wake();
            let wildcard = self.subs.has_wildcard();
            let waiting_for_channel = self.waiting_for_channel;
            tokio::select! {
                biased;
                _ = shutdown.changed() => return End::Shutdown,
                message = stream.recv() => {
                    let now = Instant::now();
                    self.last_heard = now;
                    match message {
                        None => return End::ClientGone,
                        Some(Ok(message)) => if let Some(end) = self.on_message(message, now) { return end },
                        Some(Err(ProtocolError::Overflow)) => return End::MessageTooBig,
                        Some(Err(e)) => return End::ProtocolError(e.to_string()),
                    }
                }
                _ = signal.notify.notified() => {
                    self.subs.signal().take_dirty(&mut self.fired);
                    self.subs.on_fired(&self.fired, Instant::now());
                    self.fired.clear();
                }
                ready = std::future::poll_fn(|cx| self.ws.poll_ready_unpin(cx)), if waiting_for_channel => {
                    if ready.is_err() {
                        return End::ClientGone;
                    }
                    self.waiting_for_channel = false;
                    self.stalled_since = None;
                }
                event = feed_events.recv() => match event {
                    Ok(FeedEvent(status)) => self.queue_text(ServerMessage::Feed(&status).to_json()),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let state = self.state.clone();
                        for feed in &state.feeds {
                            self.queue_text(ServerMessage::Feed(&feed.status()).to_json());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = topics.changed(), if wildcard => self.extend_wildcard(),
                _ = sleep_until(wake_at) => self.on_timer(Instant::now()),
            }
            if self.outbox_bytes > OUTBOX_LIMIT_BYTES {
                return End::SlowConsumer;
            }
            if self.last_heard + self.limits.idle_timeout <= Instant::now() {
                return End::IdleTimeout;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_ping.min(self.last_heard + self.limits.idle_timeout);
        if let Some(deadline) = self.subs.next_deadline() {
            wake = wake.min(deadline);
        }
        if let Some(retry) = self.retry_at {
            wake = wake.min(retry);
        }
        wake
    }

    fn on_timer(&mut self, now: Instant) {
        self.subs.on_timers(now);
        if now >= self.next_ping {
            self.ping_due = true;
            self.next_ping = now + self.limits.ping_interval;
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
    }

    fn welcome(&mut self, initial: InitialSubscription) {
        let version = format!("tickerfeed {}", env!("CARGO_PKG_VERSION"));
        let welcome = ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            server: &version,
            instance: &self.state.instance,
            throttle_ms: self.limits.default_throttle_ms,
            min_throttle_ms: self.limits.min_throttle_ms,
            max_symbols: self.limits.max_symbols,
            max_frame_bytes: self.limits.max_frame_bytes,
        };
        self.queue_text(welcome.to_json());
        if !initial.symbols.is_empty() || initial.throttle_ms.is_some() {
            self.subscribe(None, &initial.symbols, initial.throttle_ms, true);
        }
    }

    fn queue_text(&mut self, text: String) {
        self.outbox_bytes += text.len();
        self.outbox.push_back(Outgoing::Text(text));
    }

    fn error(&mut self, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.state.metrics.client_error(code);
        self.queue_text(ServerMessage::Error { id, code, message }.to_json());
    }

    /// Handles one client frame; returns how the session ends, if it does.
    fn on_message(&mut self, message: AggregatedMessage, now: Instant) -> Option<End> {
        match message {
            AggregatedMessage::Text(text) => {
                let parsed = parse_client_message(&text);
                self.state.metrics.client_message(parsed.as_ref().map_or("invalid", ClientOp::name));
                if !self.bucket.take(now) {
                    let id = parsed.map_or_else(|f| f.id, |op| op_id(&op));
                    let message = format!("more than {} messages per second (bursts of {})", self.limits.rate_limit, self.limits.rate_burst);
                    self.error(id, ErrorCode::RateLimited, message);
                    return None;
                }
                match parsed {
                    Ok(op) => self.on_op(op),
                    Err(failure) => self.error(failure.id, failure.code, failure.message),
                }
            }
            AggregatedMessage::Binary(_) => {
                self.state.metrics.client_message("invalid");
                if self.bucket.take(now) {
                    self.error(None, ErrorCode::BadRequest, "binary frames are not supported: send JSON text frames".into());
                }
            }
            AggregatedMessage::Ping(payload) => self.pending_pong = Some(payload),
            AggregatedMessage::Pong(_) => {}
            AggregatedMessage::Close(reason) => return Some(End::ClientClose(reason)),
        }
        None
    }

    fn on_op(&mut self, op: ClientOp) {
        match op {
            ClientOp::Subscribe { id, symbols, throttle_ms, snapshot } => self.subscribe(id, &symbols, throttle_ms, snapshot.unwrap_or(true)),
            ClientOp::Unsubscribe { id, symbols } => {
                let mut wildcard = false;
                let mut ids = Vec::new();
                for symbol in &symbols {
                    if symbol == "*" {
                        wildcard = true;
                    } else if let Some(topic) = self.state.bus.topic(&symbol.trim().to_ascii_uppercase()) {
                        ids.push(topic.id);
                    }
                }
                self.subs.unsubscribe(&ids, false);
                if wildcard {
                    self.subs.unsubscribe(&[], true);
                }
                let symbols = self.subs.symbol_list();
                self.queue_text(ServerMessage::Unsubscribed { id, symbols }.to_json());
            }
            ClientOp::List { id } => {
                let symbols = self.subs.symbol_list();
                self.queue_text(ServerMessage::Subscriptions { id, symbols }.to_json());
            }
            ClientOp::Ping { id } => self.queue_text(ServerMessage::Pong { id, ts: now_millis() }.to_json()),
        }
    }

    fn subscribe(&mut self, id: Option<RequestId>, requested: &[String], throttle_ms: Option<u64>, snapshot: bool) {
        let throttle = throttle_ms.unwrap_or(self.limits.default_throttle_ms).clamp(self.limits.min_throttle_ms, self.limits.max_throttle_ms) as u32;
        let mut rejected = Vec::new();
        let mut topics: Vec<Arc<Topic>> = Vec::new();
        let mut wildcard = false;
        let reject = |rejected: &mut Vec<Rejected>, entry: Rejected| {
            if rejected.len() < MAX_REJECTED_LISTED && !rejected.contains(&entry) {
                rejected.push(entry);
            }
        };
        for raw in requested {
            let symbol = raw.trim().to_ascii_uppercase();
            if symbol == "*" {
                wildcard = true;
            } else if !valid_symbol(&symbol) {
                reject(&mut rejected, Rejected { symbol: truncate(raw, 32), code: ErrorCode::InvalidSymbol });
            } else if let Some(topic) = self.state.bus.topic(&symbol) {
                if !topics.iter().any(|t| t.id == topic.id) {
                    topics.push(topic);
                }
            } else {
                reject(&mut rejected, Rejected { symbol, code: ErrorCode::UnknownSymbol });
            }
        }
        let new_explicit = topics.iter().filter(|t| !self.subs.is_explicit(t.id)).count();
        let new_wildcard = usize::from(wildcard && !self.subs.has_wildcard());
        let total = self.subs.counted() + new_explicit + new_wildcard;
        if total > self.limits.max_symbols {
            let message = format!("subscribing would make {total} symbols; the limit is {} per session (\"*\" counts as one)", self.limits.max_symbols);
            self.error(id, ErrorCode::TooManySymbols, message);
            return;
        }
        let now = Instant::now();
        self.subs.subscribe(&topics, throttle, snapshot, false, now);
        if wildcard {
            let all = self.state.bus.topics();
            self.known_topics = all.len();
            self.subs.subscribe(&all, throttle, snapshot, true, now);
        }
        for entry in &rejected {
            self.state.metrics.client_error(entry.code);
        }
        let symbols = self.subs.symbol_list();
        self.queue_text(ServerMessage::Subscribed { id, throttle_ms: throttle as u64, symbols, rejected }.to_json());
    }

    /// A wildcard session picks up topics registered after it subscribed.
    fn extend_wildcard(&mut self) {
        let all = self.state.bus.topics();
        if all.len() > self.known_topics {
            let Some(throttle) = self.subs.wildcard_throttle_ms() else { return };
            let new = &all[self.known_topics..];
            self.known_topics = all.len();
            self.subs.subscribe(new, throttle, false, true, Instant::now());
        }
    }

    /// Whether `bytes` more may be handed to actix now.
    fn room_for(&mut self, bytes: u64, now: Instant) -> Room {
        if let Some(probe) = &self.probe {
            if self.ledger.unconfirmed() + bytes > FAST_PATH_BYTES || self.ledger.kernel_unsent() > KERNEL_UNSENT_LIMIT {
                // Only actix's dispatcher for this connection moves bytes from the server's
                // buffers to the kernel, and it runs on this same worker thread, not during a
                // flush: a second reading within one flush would return the same figures.
                if !self.probed_this_flush {
                    self.probed_this_flush = true;
                    match probe.progress() {
                        Some(progress) => {
                            if self.ledger.observe(progress) {
                                self.stalled_since = None;
                            }
                        }
                        None => return Room::Yes,
                    }
                }
                let unconfirmed = self.ledger.unconfirmed();
                let fits = unconfirmed == 0 || unconfirmed + bytes <= SERVER_BUFFER_BUDGET;
                if !fits || self.ledger.kernel_unsent() > KERNEL_UNSENT_LIMIT {
                    self.stalled_since.get_or_insert(now);
                    return Room::No;
                }
            }
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match self.ws.poll_ready_unpin(&mut cx) {
            std::task::Poll::Pending => {
                self.stalled_since.get_or_insert(now);
                Room::Channel
            }
            _ => Room::Yes,
        }
    }

    fn hand_over(&mut self, outgoing: Outgoing) -> Result<(), End> {
        self.ledger.handed(outgoing.wire_bytes());
        self.ws.start_send_unpin(outgoing.into_message()).map_err(|_| End::ClientGone)
    }

    /// Sends what is due while there is room: control messages, then snapshots, then quotes.
    fn flush(&mut self) -> Result<(), End> {
        let now = Instant::now();
        self.probed_this_flush = false;
        if self.ping_due {
            self.ping_due = false;
            self.outbox.push_back(Outgoing::Ping);
        }
        if let Some(payload) = self.pending_pong.take() {
            self.outbox.push_front(Outgoing::Pong(payload));
        }
        loop {
            let next = if let Some(first) = self.outbox.front() {
                first.wire_bytes()
            } else if self.subs.has_snapshot_pending() || self.subs.has_due() {
                (self.limits.max_frame_bytes as u64).min(SERVER_BUFFER_BUDGET / 2)
            } else {
                break;
            };
            match self.room_for(next, now) {
                Room::Yes => {}
                Room::No => {
                    self.retry_at = Some(now + self.retry_backoff);
                    self.retry_backoff = (self.retry_backoff * 2).min(MAX_RETRY);
                    return self.check_stall(now);
                }
                Room::Channel => {
                    self.waiting_for_channel = true;
                    // Also look again on a timer: a channel that never drains must still end
                    // in a slow-consumer close.
                    self.retry_at = Some(now + MAX_RETRY);
                    return self.check_stall(now);
                }
            }
            self.retry_backoff = Duration::from_millis(1);
            if let Some(outgoing) = self.outbox.pop_front() {
                if let Outgoing::Text(t) = &outgoing {
                    self.outbox_bytes -= t.len();
                }
                self.state.metrics.other_frame(outgoing.wire_bytes());
                self.hand_over(outgoing)?;
                continue;
            }
            let snapshot = self.subs.has_snapshot_pending();
            let frame = self.build_frame(now, snapshot);
            let (conflated, longest_wait) = self.subs.take_delivery_stats();
            match frame {
                Some((text, quotes)) => {
                    let outgoing = Outgoing::Text(text);
                    self.state.metrics.quote_frame(quotes, conflated, outgoing.wire_bytes(), longest_wait);
                    self.hand_over(outgoing)?
                }
                None => continue,
            }
        }
        self.stalled_since = None;
        Ok(())
    }

    /// Builds one frame of due quotes (at most `max_frame_bytes`).
    fn build_frame(&mut self, now: Instant, snapshot: bool) -> Option<(String, usize)> {
        let max = self.limits.max_frame_bytes;
        let mut builder = QuoteFrameBuilder::new(max, snapshot);
        let mut bytes = 48usize;
        let mut count = 0usize;
        let take = |q: &Arc<crate::quote::PublishedQuote>| {
            let json = q.json();
            if count > 0 && bytes + json.len() + 1 > max {
                return false;
            }
            bytes += json.len() + 1;
            count += 1;
            builder.push(json);
            true
        };
        if snapshot {
            self.subs.take_snapshot(now, take);
        } else {
            self.subs.take_due(now, take);
        }
        builder.finish().into_iter().next()
    }

    fn check_stall(&self, now: Instant) -> Result<(), End> {
        match self.stalled_since {
            Some(since) if now.saturating_duration_since(since) >= self.limits.slow_consumer_timeout => Err(End::SlowConsumer),
            _ => Ok(()),
        }
    }

    /// Sends the close frame without waiting on a full socket, and drops the connection if it
    /// has not flushed within [`CLOSE_FLUSH_TIMEOUT`].
    async fn close(mut self, mut stream: AggregatedMessageStream, end: &End) {
        self.subs.clear();
        if let End::ClientGone = end {
            return;
        }
        let probe = self.probe;
        let reason = end.close_reason();
        let flushed = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async move {
            if self.ws.close(reason).await.is_err() {
                return;
            }
            // The close is queued; the connection ends when actix has written it and the peer
            // has answered (or gone). Reading also drains the peer's close reply.
            while let Some(Ok(_)) = stream.recv().await {}
        })
        .await;
        if flushed.is_err() {
            if let Some(probe) = probe {
                probe.force_close();
            }
        }
    }
}

fn op_id(op: &ClientOp) -> Option<RequestId> {
    match op {
        ClientOp::Subscribe { id, .. } | ClientOp::Unsubscribe { id, .. } | ClientOp::List { id } | ClientOp::Ping { id } => id.clone(),
    }
}

/// Symbol syntax: letters, digits, `.`, `-`, `^`, `=`, 1 to 16 characters.
pub fn valid_symbol(symbol: &str) -> bool {
    (1..=16).contains(&symbol.len()) && symbol.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'^' | b'='))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_syntax() {
        for ok in ["AAPL", "BRK.B", "^GSPC", "EURUSD=X", "ES-2025", "A"] {
            assert!(valid_symbol(ok), "{ok}");
        }
        for bad in ["", "../etc", "A B", "AAAAAAAAAAAAAAAAA", "A/B", "ÄPPL"] {
            assert!(!valid_symbol(bad), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_allows_bursts_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(50.0, 100.0, start);
        assert_eq!((0..150).filter(|_| bucket.take(start)).count(), 100);
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!((0..150).filter(|_| bucket.take(now)).count(), 50);
    }
}
