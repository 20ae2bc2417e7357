//! The session task: one per WebSocket connection, for everything except producing frames.
//!
//! One `select!` loop waits on the client's frames, feed state changes, new topics (for `*`),
//! the heartbeat and shutdown. It changes the session's subscriptions and queues control
//! replies in the shared [`Output`], then wakes the connection's response body, which produces
//! the frames when the socket can take them (see [`crate::session::output`]). The task never waits on
//! the socket, so a client that stops reading still has its pings answered and its close
//! frame read.
//!
//! Input is read only as fast as its answers drain: while the replies waiting in the outbox
//! pass [`INPUT_PAUSE_BYTES`], the session reads no client message (the client's writes then
//! stall in TCP), so a flood of requests from a client that reads is slowed, never closed. A
//! client over the message rate gets one `rate_limited` error for the first message dropped and
//! then at most one per [`RATE_LIMIT_REPORT_INTERVAL`], each counting the messages it stands for.
//!
//! A client is a slow consumer when output has been pending and actix-http has not asked for
//! data for `slow_consumer_timeout`: the session closes it with 1008 and, if the close cannot
//! be flushed within a second, drops the connection.
//!
//! A client whose frames break RFC 6455 or the message limit is failed (RFC 6455 §7.1.7): the
//! close frame is sent, nothing more it sends is read, and the connection is dropped as soon as
//! the close frame is on its way. After a close handshake the session shuts the socket itself
//! (RFC 6455 §7.1.1: the server closes the TCP connection first), since actix-http would keep
//! reading and discarding for as long as the peer sends.

use std::sync::Arc;
use std::time::Duration;

use super::inbound::{CloseCode, CloseReason, Inbound, InboundError, InboundStream};
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use super::frame::WsEncoder;
use crate::api_error::excerpt;
use crate::bus::{FindError, SessionSignal, Topic};
use crate::feed::FeedEvent;
use crate::metrics::DisconnectReason;
use crate::quote::now_millis;
use crate::session::limits::{Limits, MAX_THROTTLE_MS};
use crate::session::output::{INPUT_PAUSE_BYTES, Output, SharedOutput};
use crate::session::protocol::{ClientOp, ErrorCode, PROTOCOL_VERSION, Rejected, RequestId, ServerMessage, parse_client_message};
use crate::session::socket::SocketProbe;
use crate::session::{ConnectionSlot, SessionContext};

/// Entries listed in a `subscribed` message's `rejected`, at most (the rest are dropped from
/// the list, not subscribed either), so a reply stays small whatever the request held.
pub(crate) const MAX_REJECTED_LISTED: usize = 100;
/// How long a closing connection may take to flush its close frame before it is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The slow-consumer check runs this many times per `slow_consumer_timeout`, so a stalled
/// client is closed between 1 and 1 + 1/8 timeouts after its socket stopped taking data.
const STALL_CHECKS_PER_TIMEOUT: u32 = 8;
/// A client over the message rate hears of the messages dropped since at most this often.
pub(crate) const RATE_LIMIT_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A subscription requested in the upgrade URL (`/ws?symbols=A,B&throttle_ms=500`).
#[derive(Debug, Clone, Default)]
pub(crate) struct InitialSubscription {
    /// A subscription parameter was given (even an empty one): answer with `subscribed`.
    pub requested: bool,
    pub symbols: Vec<String>,
    pub throttle_ms: Option<u64>,
    /// What the server could not use, each told to the client as a `bad_request` error.
    pub problems: Vec<String>,
}

/// Why a session ended; each maps to a close code and a disconnect reason.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum End {
    /// The client sent a close frame: echoed with its code and reason (1000 when it gave none).
    ClientClose(Option<CloseReason>),
    /// The connection ended without a close frame.
    ClientGone,
    SlowConsumer,
    IdleTimeout,
    /// The client's frames could not be read on (1002, 1007 or 1009).
    BadInput(InboundError),
    Shutdown,
}

impl End {
    fn close_reason(&self) -> Option<CloseReason> {
        let reason = |code, text: String| Some(CloseReason { code, description: Some(text) });
        match self {
            End::ClientClose(reason) => Some(reason.clone().unwrap_or(CloseReason { code: CloseCode::Normal, description: None })),
            End::ClientGone => None,
            End::SlowConsumer => reason(CloseCode::Policy, "slow consumer".into()),
            End::IdleTimeout => reason(CloseCode::Away, "idle timeout".into()),
            End::BadInput(error @ InboundError::Protocol(_)) => reason(CloseCode::Protocol, error.to_string()),
            End::BadInput(error @ InboundError::InvalidUtf8(_)) => reason(CloseCode::Invalid, error.to_string()),
            End::BadInput(InboundError::TooBig { limit, .. }) => reason(CloseCode::Size, format!("message too big: the limit is {limit} bytes")),
            End::Shutdown => reason(CloseCode::Away, "going away".into()),
        }
    }

    /// The disconnect reason reported in metrics.
    pub(crate) fn reason(&self) -> DisconnectReason {
        match self {
            End::ClientClose(_) | End::ClientGone => DisconnectReason::ClientClose,
            End::SlowConsumer => DisconnectReason::SlowConsumer,
            End::IdleTimeout => DisconnectReason::IdleTimeout,
            End::BadInput(InboundError::TooBig { .. }) => DisconnectReason::Limit,
            End::BadInput(_) => DisconnectReason::ProtocolError,
            End::Shutdown => DisconnectReason::Shutdown,
        }
    }
}

/// Messages dropped by the rate limit since the last `rate_limited` error.
#[derive(Debug)]
struct RateLimitedRun {
    /// When the next report is due.
    report_at: Instant,
    dropped: u64,
    /// The `id` of the first message dropped since the last report.
    first_id: Option<RequestId>,
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
pub(crate) struct Session {
    context: Arc<SessionContext>,
    /// Held for the session's life: dropping it releases the connection's place in the limit.
    _slot: ConnectionSlot,
    limits: Arc<Limits>,
    output: SharedOutput<WsEncoder>,
    signal: Arc<SessionSignal>,
    probe: Option<SocketProbe>,
    bucket: TokenBucket,
    last_heard: Instant,
    next_ping: Instant,
    next_stall_check: Instant,
    known_topics: usize,
    /// Open while the client is over the message rate (boxed: rare, and every idle session
    /// would carry its size).
    rate_limited: Option<Box<RateLimitedRun>>,
}

impl Session {
    pub(crate) fn new(context: Arc<SessionContext>, slot: ConnectionSlot, probe: Option<SocketProbe>, output: SharedOutput<WsEncoder>) -> Session {
        let now = Instant::now();
        let limits = context.limits.clone();
        let signal = output.with(|o| o.subs.signal().clone());
        Session {
            _slot: slot,
            bucket: TokenBucket::new(limits.rate_limit, limits.rate_burst, now),
            next_ping: now + limits.ping_interval(),
            next_stall_check: now + stall_check_interval(&limits),
            limits,
            output,
            signal,
            probe,
            last_heard: now,
            known_topics: 0,
            rate_limited: None,
            context,
        }
    }

    /// Greets the client and applies the upgrade request's subscription. Called before the task
    /// is spawned, so the task's future does not carry the request's symbol list for its life.
    pub(crate) fn start(&mut self, initial: InitialSubscription) {
        self.welcome(initial);
    }

    /// Runs the session to its end, closes the connection and records why it ended. This is the
    /// spawned future itself (no wrapper): every byte of its state is held per connection.
    pub(crate) async fn run(mut self, mut stream: InboundStream) {
        let mut shutdown = self.context.shutdown.clone();
        let mut feed_events = self.context.feeds.subscribe();
        let mut topics = self.context.bus.watch_topics();
        let end = if *shutdown.borrow() { End::Shutdown } else { self.event_loop(&mut stream, &mut shutdown, &mut feed_events, &mut topics).await };
        let context = self.context.clone();
        // Boxed: the close path's state is only needed once, at the end; inline it would
        // enlarge every live session's task by its size.
        Box::pin(self.close(stream, &end)).await;
        context.metrics.disconnected(end.reason());
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
            let mut wake_at = self.next_ping.min(self.last_heard + self.limits.idle_timeout()).min(self.next_stall_check);
            if let Some(run) = &self.rate_limited {
                wake_at = wake_at.min(run.report_at);
            }
            let wildcard = self.output.with(|o| o.subs.has_wildcard());
            // Backpressure on input: no client message is read while its answers pile up.
            let input_paused = self.output.with(|o| o.outbox_bytes()) > INPUT_PAUSE_BYTES;
            tokio::select! {
                biased;
                _ = shutdown.changed() => return End::Shutdown,
                message = stream.recv(), if !input_paused => {
                    let now = Instant::now();
                    self.last_heard = now;
                    match message {
                        None => return End::ClientGone,
                        Some(Ok(message)) => if let Some(end) = self.on_message(message, now) { return end },
                        Some(Err(error)) => return End::BadInput(error),
                    }
                }
                () = std::future::poll_fn(|cx| self.output.with(|o| o.poll_input_room(cx))), if input_paused => {
                    // The client is reading what it asked for: its silence meanwhile was ours.
                    self.last_heard = Instant::now();
                }
                event = feed_events.recv() => match event {
                    Ok(FeedEvent(status)) => self.feed_changed(&status.name),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.output.with(|o| (0..self.context.feeds.len()).for_each(|index| o.queue_feed_status(index)));
                        self.signal.wake();
                    }
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = topics.changed(), if wildcard => self.extend_wildcard(),
                _ = sleep_until(wake_at) => if let Some(end) = self.on_timer(Instant::now()) { return end },
            }
            if self.last_heard + self.limits.idle_timeout() <= Instant::now() {
                return End::IdleTimeout;
            }
        }
    }

    fn feed_changed(&mut self, name: &str) {
        if let Some(index) = self.context.feeds.position(name) {
            self.output.with(|o| o.queue_feed_status(index));
            self.signal.wake();
        }
    }

    fn on_timer(&mut self, now: Instant) -> Option<End> {
        if self.rate_limited.as_ref().is_some_and(|run| now >= run.report_at) {
            self.report_rate_limited(now);
        }
        if now >= self.next_ping {
            self.output.with(Output::<WsEncoder>::queue_ping);
            self.signal.wake();
            self.next_ping = now + self.limits.ping_interval();
        }
        if now >= self.next_stall_check {
            self.next_stall_check = now + stall_check_interval(&self.limits);
            // Output is pending (the body was woken, or stopped with more to send) and
            // actix-http has not asked for any for a whole timeout: its write buffer is full
            // and the kernel takes nothing.
            let last_poll = self.output.with(|o| o.last_poll());
            if self.signal.is_woken() && now.saturating_duration_since(last_poll) >= self.limits.slow_consumer_timeout() {
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
            instance: &self.context.instance,
            throttle_ms: self.limits.throttle_ms,
            min_throttle_ms: self.limits.min_throttle_ms,
            max_symbols: self.limits.max_symbols,
            max_frame_bytes: self.limits.max_frame_bytes,
        };
        self.reply(&welcome);
        if initial.requested {
            self.subscribe(None, &initial.symbols, initial.throttle_ms, true);
        }
        // After `subscribed`, so that the first two messages are always the documented pair.
        for problem in initial.problems {
            self.error(None, ErrorCode::BadRequest, problem);
        }
    }

    fn reply(&self, message: &ServerMessage<'_>) {
        self.output.with(|o| o.queue_reply(message));
        self.signal.wake();
    }

    fn error(&mut self, id: Option<RequestId>, code: ErrorCode, message: String) {
        self.context.metrics.client_error(code.as_str());
        self.reply(&ServerMessage::Error { id, code, message, count: None });
    }

    /// A message over the rate is dropped: the first of a run is answered at once, the rest
    /// are counted into one error per [`RATE_LIMIT_REPORT_INTERVAL`].
    fn rate_limited(&mut self, id: Option<RequestId>, now: Instant) {
        match &mut self.rate_limited {
            Some(run) => {
                if run.dropped == 0 {
                    run.first_id = id;
                }
                run.dropped += 1;
            }
            None => {
                self.rate_limited = Some(Box::new(RateLimitedRun { report_at: now + RATE_LIMIT_REPORT_INTERVAL, dropped: 0, first_id: None }));
                self.send_rate_limited(id, 1);
            }
        }
    }

    /// Reports the messages dropped since the last report; closes the run if there were none.
    fn report_rate_limited(&mut self, now: Instant) {
        let Some(run) = self.rate_limited.as_mut() else { return };
        if run.dropped == 0 {
            self.rate_limited = None;
            return;
        }
        let (id, dropped) = (run.first_id.take(), std::mem::take(&mut run.dropped));
        run.report_at = now + RATE_LIMIT_REPORT_INTERVAL;
        self.send_rate_limited(id, dropped);
    }

    fn send_rate_limited(&mut self, id: Option<RequestId>, count: u64) {
        self.context.metrics.client_errors(ErrorCode::RateLimited.as_str(), count);
        let (rate, burst) = (self.limits.rate_limit, self.limits.rate_burst);
        let message = if count == 1 {
            format!("message not processed: more than {rate} messages per second (bursts of {burst}); messages dropped from now on are counted in one error per second")
        } else {
            format!("{count} messages not processed: more than {rate} messages per second (bursts of {burst})")
        };
        self.reply(&ServerMessage::Error { id, code: ErrorCode::RateLimited, message, count: Some(count) });
    }

    /// Handles one client frame; returns how the session ends, if it does.
    fn on_message(&mut self, message: Inbound, now: Instant) -> Option<End> {
        match message {
            Inbound::Text(text) => {
                let parsed = parse_client_message(&text);
                self.context.metrics.client_message(parsed.as_ref().map_or("invalid", ClientOp::name));
                if !self.bucket.take(now) {
                    self.rate_limited(parsed.map_or_else(|f| f.id, |op| op_id(&op)), now);
                    return None;
                }
                match parsed {
                    Ok(op) => self.on_op(op),
                    Err(failure) => self.error(failure.id, failure.code, failure.message),
                }
            }
            Inbound::Binary(_) => {
                self.context.metrics.client_message("invalid");
                if self.bucket.take(now) {
                    self.error(None, ErrorCode::BadRequest, "binary frames are not supported: send JSON text frames".into());
                } else {
                    self.rate_limited(None, now);
                }
            }
            Inbound::Ping(payload) => {
                // Every ping gets its own pong (as Autobahn|Testsuite 2.10 expects); a flood of
                // them is bounded by the input backpressure like any other request.
                self.output.with(|o| o.queue(WsEncoder::pong_frame(&payload)));
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
                    if symbol.trim() == "*" {
                        wildcard = true;
                    } else if let Ok(topic) = self.context.bus.find(symbol) {
                        ids.push(topic.id);
                    }
                }
                let symbols = self.output.with(|o| {
                    o.subs.unsubscribe(&ids, false);
                    if wildcard {
                        o.subs.unsubscribe(&[], true);
                    }
                    o.subs.symbol_list()
                });
                self.reply(&ServerMessage::Unsubscribed { id, symbols });
            }
            ClientOp::List { id } => {
                let symbols = self.output.with(|o| o.subs.symbol_list());
                self.reply(&ServerMessage::Subscriptions { id, symbols });
            }
            ClientOp::Ping { id } => self.reply(&ServerMessage::Pong { id, ts: now_millis() }),
        }
    }

    fn subscribe(&mut self, id: Option<RequestId>, requested: &[String], throttle_ms: Option<u64>, snapshot: bool) {
        let throttle = throttle_ms.unwrap_or(self.limits.throttle_ms).clamp(self.limits.min_throttle_ms, MAX_THROTTLE_MS) as u32;
        let mut rejected = Vec::new();
        let mut topics: Vec<Arc<Topic>> = Vec::new();
        let mut wildcard = false;
        let reject = |rejected: &mut Vec<Rejected>, entry: Rejected| {
            if rejected.len() < MAX_REJECTED_LISTED && !rejected.contains(&entry) {
                rejected.push(entry);
            }
        };
        for raw in requested {
            if raw.trim() == "*" {
                wildcard = true;
                continue;
            }
            match self.context.bus.find(raw) {
                Ok(topic) => {
                    if !topics.iter().any(|t| t.id == topic.id) {
                        topics.push(topic);
                    }
                }
                Err(FindError::Invalid { .. }) => reject(&mut rejected, Rejected { symbol: excerpt(raw, 32), code: ErrorCode::InvalidSymbol }),
                Err(FindError::Unknown(symbol)) => reject(&mut rejected, Rejected { symbol, code: ErrorCode::UnknownSymbol }),
            }
        }
        let max_symbols = self.limits.max_symbols;
        let all = wildcard.then(|| self.context.bus.topics());
        let subscribed = self.output.with(|o| {
            let subs = &mut o.subs;
            let new_explicit = topics.iter().filter(|t| !subs.is_explicit(t.id)).count();
            let new_wildcard = usize::from(wildcard && !subs.has_wildcard());
            let total = subs.counted() + new_explicit + new_wildcard;
            if total > max_symbols {
                return Err(format!("subscribing would make {total} symbols; the limit is {max_symbols} per session (\"*\" counts as one)"));
            }
            let now = Instant::now();
            subs.subscribe(&topics, throttle, snapshot, false, now);
            if let Some(all) = &all {
                subs.subscribe(all, throttle, snapshot, true, now);
            }
            Ok(subs.symbol_list())
        });
        let symbols = match subscribed {
            Ok(symbols) => symbols,
            Err(message) => return self.error(id, ErrorCode::TooManySymbols, message),
        };
        if let Some(all) = all {
            self.known_topics = all.len();
        }
        for entry in &rejected {
            self.context.metrics.client_error(entry.code.as_str());
        }
        self.reply(&ServerMessage::Subscribed { id, throttle_ms: throttle as u64, symbols, rejected });
    }

    /// A wildcard session picks up topics registered after it subscribed.
    fn extend_wildcard(&mut self) {
        let all = self.context.bus.topics();
        if all.len() > self.known_topics {
            let new = &all[self.known_topics..];
            let extended = self.output.with(|o| {
                let Some(throttle) = o.subs.wildcard_throttle_ms() else { return false };
                o.subs.subscribe(new, throttle, false, true, Instant::now());
                true
            });
            if extended {
                self.known_topics = all.len();
                self.signal.wake();
            }
        }
    }

    /// Sends the close frame without waiting on a full socket, and drops the connection if it
    /// has not flushed within [`CLOSE_FLUSH_TIMEOUT`].
    async fn close(self, mut stream: InboundStream, end: &End) {
        let reason = end.close_reason();
        self.output.with(|o| o.begin_close(reason.as_ref().map(WsEncoder::close_frame)));
        self.signal.wake();
        if reason.is_none() {
            return;
        }
        let probe = self.probe;
        let output = self.output.clone();
        let close_sent = || tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, std::future::poll_fn(|cx| output.with(|o| o.poll_close_sent(cx))));
        let ended = match end {
            // RFC 6455 §7.1.7: after failing the connection, nothing more the client sends is
            // read: once the close frame is on its way, the connection is dropped.
            End::BadInput(_) => {
                let _ = close_sent().await;
                false
            }
            // The handshake is over once the echo is on its way; RFC 6455 §7.1.1: the server
            // closes the TCP connection first.
            End::ClientClose(_) => close_sent().await.is_ok(),
            // The server closes: wait for the client's close frame (or its end), reading past
            // what it still sends before it.
            _ => {
                let reply = async move {
                    while let Some(Ok(message)) = stream.recv().await {
                        if let Inbound::Close(_) = message {
                            break;
                        }
                    }
                };
                tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, reply).await.is_ok()
            }
        };
        if let Some(probe) = probe {
            if ended {
                probe.shutdown();
            } else {
                probe.force_close();
            }
        }
    }
}

fn stall_check_interval(limits: &Limits) -> Duration {
    (limits.slow_consumer_timeout() / STALL_CHECKS_PER_TIMEOUT).max(Duration::from_millis(10))
}

fn op_id(op: &ClientOp) -> Option<RequestId> {
    match op {
        ClientOp::Subscribe { id, .. } | ClientOp::Unsubscribe { id, .. } | ClientOp::List { id } | ClientOp::Ping { id } => id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
