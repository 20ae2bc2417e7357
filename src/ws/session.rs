//! The session task: one per WebSocket connection, for everything except producing frames.
//!
//! One `select!` loop waits on the client's frames, feed state changes, new topics (for `*`),
//! the heartbeat and shutdown. It changes the session's subscriptions and queues control
//! replies in the shared [`Output`], then wakes the connection's response body, which produces
//! the frames when the socket can take them (see [`super::outbound`]). The task never waits on
//! the socket, so a client that stops reading still has its pings answered and its close
//! frame read.
//!
//! A client is a slow consumer when output has been pending and actix-http has not asked for
//! data for `slow_consumer_timeout`: the session closes it with 1008 and, if the close cannot
//! be flushed within a second, drops the connection.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::inbound::{CloseCode, CloseReason, Inbound, InboundStream, ProtocolError};
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use super::ConnectionSlot;
use super::outbound::{OUTBOX_LIMIT_BYTES, Output};
use super::protocol::{ClientOp, ErrorCode, PROTOCOL_VERSION, Rejected, RequestId, ServerMessage, parse_client_message};
use super::socket::SocketProbe;
use crate::bus::{SessionSignal, Topic};
use crate::feed::FeedEvent;
use crate::metrics::DisconnectReason;
use crate::quote::now_millis;
use crate::server::AppState;

/// Entries listed in a `subscribed` message's `rejected`, at most (the rest are dropped from
/// the list, not subscribed either), so a reply stays small whatever the request held.
pub const MAX_REJECTED_LISTED: usize = 100;
/// How long a closing connection may take to flush its close frame before it is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The slow-consumer check runs this many times per `slow_consumer_timeout`, so a stalled
/// client is closed between 1 and 1 + 1/8 timeouts after its socket stopped taking data.
const STALL_CHECKS_PER_TIMEOUT: u32 = 8;

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
    /// A text message that is not UTF-8 (RFC 6455 8.1).
    InvalidText,
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
            End::InvalidText => reason(CloseCode::Invalid, "text message is not UTF-8"),
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
            End::ProtocolError(_) | End::InvalidText => DisconnectReason::ProtocolError,
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

/// One connection's session task.
pub struct Session {
    state: Arc<AppState>,
    /// Held for the session's life: dropping it releases the connection's place in the limit.
    _slot: ConnectionSlot,
    limits: Arc<SessionLimits>,
    output: Rc<RefCell<Output>>,
    signal: Arc<SessionSignal>,
    probe: Option<SocketProbe>,
    bucket: TokenBucket,
    last_heard: Instant,
    next_ping: Instant,
    next_stall_check: Instant,
    known_topics: usize,
}

impl Session {
    pub fn new(state: Arc<AppState>, slot: ConnectionSlot, probe: Option<SocketProbe>, output: Rc<RefCell<Output>>) -> Session {
        let now = Instant::now();
        let limits = state.limits.clone();
        let signal = output.borrow().subs.signal().clone();
        Session {
            _slot: slot,
            bucket: TokenBucket::new(limits.rate_limit, limits.rate_burst, now),
            next_ping: now + limits.ping_interval,
            next_stall_check: now + stall_check_interval(&limits),
            limits,
            output,
            signal,
            probe,
            last_heard: now,
            known_topics: 0,
            state,
        }
    }

    /// Greets the client and applies the upgrade request's subscription. Called before the task
    /// is spawned, so the task's future does not carry the request's symbol list for its life.
    pub fn start(&mut self, initial: InitialSubscription) {
        self.welcome(initial);
    }

    /// Runs the session to its end, closes the connection and records why it ended. This is the
    /// spawned future itself (no wrapper): every byte of its state is held per connection.
    pub async fn run(mut self, mut stream: InboundStream) {
        let mut shutdown = self.state.shutdown.clone();
        let mut feed_events = self.state.feed_events.subscribe();
        let mut topics = self.state.bus.watch_topics();
        let end = if *shutdown.borrow() {
            End::Shutdown
        } else {
            self.event_loop(&mut stream, &mut shutdown, &mut feed_events, &mut topics).await
        };
        let state = self.state.clone();
        // Boxed: the close path's state is only needed once, at the end; inline it would
        // enlarge every live session's task by its size.
        Box::pin(self.close(stream, &end)).await;
        state.metrics.disconnected(end.reason());
        tracing::debug!(reason = end.reason().label(), "session ended: {end:?}");
    }

    async fn event_loop(
        &mut self,
        stream: &mut InboundStream,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        feed_events: &mut broadcast::Receiver<FeedEvent>,
        topics: &mut tokio::sync::watch::Receiver<usize>,
    ) -> End {
        loop {
            let wake_at = self.next_ping.min(self.last_heard + self.limits.idle_timeout).min(self.next_stall_check);
            let wildcard = self.output.borrow().subs.has_wildcard();
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
                        Some(Err(ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => return End::InvalidText,
                        Some(Err(e)) => return End::ProtocolError(e.to_string()),
                    }
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
                _ = sleep_until(wake_at) => if let Some(end) = self.on_timer(Instant::now()) { return end },
            }
            if self.output.borrow().outbox_bytes() > OUTBOX_LIMIT_BYTES {
                return End::SlowConsumer;
            }
            if self.last_heard + self.limits.idle_timeout <= Instant::now() {
                return End::IdleTimeout;
            }
        }
    }

    fn on_timer(&mut self, now: Instant) -> Option<End> {
        if now >= self.next_ping {
            self.output.borrow_mut().queue_ping();
            self.signal.wake();
            self.next_ping = now + self.limits.ping_interval;
        }
        if now >= self.next_stall_check {
            self.next_stall_check = now + stall_check_interval(&self.limits);
            // Output is pending (the body was woken, or stopped with more to send) and
            // actix-http has not asked for any for a whole timeout: its write buffer is full
            // and the kernel takes nothing.
            let last_poll = self.output.borrow().last_poll();
            if self.signal.is_woken() && now.saturating_duration_since(last_poll) >= self.limits.slow_consumer_timeout {
                return Some(End::SlowConsumer);
            }
        }
        None
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
        self.output.borrow_mut().queue_text(text);
        self.signal.wake();
    }

    fn error(&mut self, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.state.metrics.client_error(code);
        self.queue_text(ServerMessage::Error { id, code, message }.to_json());
    }

    /// Handles one client frame; returns how the session ends, if it does.
    fn on_message(&mut self, message: Inbound, now: Instant) -> Option<End> {
        match message {
            Inbound::Text(text) => {
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
            Inbound::Binary(_) => {
                self.state.metrics.client_message("invalid");
                if self.bucket.take(now) {
                    self.error(None, ErrorCode::BadRequest, "binary frames are not supported: send JSON text frames".into());
                }
            }
            Inbound::Ping(payload) => {
                self.output.borrow_mut().set_pong(payload);
                self.signal.wake();
            }
            Inbound::Pong(_) => {}
            Inbound::Close(reason) => return Some(End::ClientClose(reason)),
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
                let symbols = {
                    let subs = &mut self.output.borrow_mut().subs;
                    subs.unsubscribe(&ids, false);
                    if wildcard {
                        subs.unsubscribe(&[], true);
                    }
                    subs.symbol_list()
                };
                self.queue_text(ServerMessage::Unsubscribed { id, symbols }.to_json());
            }
            ClientOp::List { id } => {
                let symbols = self.output.borrow().subs.symbol_list();
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
        let mut output = self.output.borrow_mut();
        let subs = &mut output.subs;
        let new_explicit = topics.iter().filter(|t| !subs.is_explicit(t.id)).count();
        let new_wildcard = usize::from(wildcard && !subs.has_wildcard());
        let total = subs.counted() + new_explicit + new_wildcard;
        if total > self.limits.max_symbols {
            let message = format!("subscribing would make {total} symbols; the limit is {} per session (\"*\" counts as one)", self.limits.max_symbols);
            drop(output);
            self.error(id, ErrorCode::TooManySymbols, message);
            return;
        }
        let now = Instant::now();
        subs.subscribe(&topics, throttle, snapshot, false, now);
        if wildcard {
            let all = self.state.bus.topics();
            self.known_topics = all.len();
            subs.subscribe(&all, throttle, snapshot, true, now);
        }
        let symbols = subs.symbol_list();
        drop(output);
        for entry in &rejected {
            self.state.metrics.client_error(entry.code);
        }
        self.queue_text(ServerMessage::Subscribed { id, throttle_ms: throttle as u64, symbols, rejected }.to_json());
    }

    /// A wildcard session picks up topics registered after it subscribed.
    fn extend_wildcard(&mut self) {
        let all = self.state.bus.topics();
        if all.len() > self.known_topics {
            let mut output = self.output.borrow_mut();
            let Some(throttle) = output.subs.wildcard_throttle_ms() else { return };
            let new = &all[self.known_topics..];
            self.known_topics = all.len();
            output.subs.subscribe(new, throttle, false, true, Instant::now());
            drop(output);
            self.signal.wake();
        }
    }

    /// Sends the close frame without waiting on a full socket, and drops the connection if it
    /// has not flushed within [`CLOSE_FLUSH_TIMEOUT`].
    async fn close(self, mut stream: InboundStream, end: &End) {
        let reason = end.close_reason();
        self.output.borrow_mut().begin_close(reason.as_ref());
        self.signal.wake();
        if reason.is_none() {
            return;
        }
        let probe = self.probe;
        let flushed = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async move {
            // The close frame is queued and the body ends after it; the connection ends when
            // actix has written it and the peer has answered (or gone). Reading drains the
            // peer's close reply.
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

fn stall_check_interval(limits: &SessionLimits) -> Duration {
    (limits.slow_consumer_timeout / STALL_CHECKS_PER_TIMEOUT).max(Duration::from_millis(10))
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
