//! The session task: one per connection, whatever its transport, for everything except
//! producing output.
//!
//! One `select!` loop waits on the client's input (from its [`Transport`]), feed state changes,
//! new topics (for `*`), the heartbeat and shutdown. It changes the session's subscriptions and
//! queues replies in the shared [`Output`], then wakes the connection's response body, which
//! produces the output when the socket can take it (see [`super::output`]). The task never
//! waits on the socket, so a client that stops reading still has its pings answered and its
//! close read.
//!
//! A transport turns its wire input into [`Input`]s (a request already parsed into a
//! [`ClientOp`], or why it could not be), decides how a connection ends ([`Transport::close`]),
//! and may hold the greeting until its client is accepted ([`Transport::accept`], Socket.IO's
//! CONNECT) and announce its own heartbeat ([`Transport::timing`]); everything else is decided
//! here, the same for every transport: rate limits, limits, replies, the heartbeat, idle and
//! slow-consumer closes.
//!
//! Input is read only as fast as its answers drain: while the replies waiting in the outbox
//! pass [`INPUT_PAUSE_BYTES`], the session reads no client input (the client's writes then
//! stall in TCP), so a flood of requests from a client that reads is slowed, never closed. A
//! client over the message rate gets one `rate_limited` error for the first message dropped and
//! then at most one per [`RATE_LIMIT_REPORT_INTERVAL`], each counting the messages it stands for.
//!
//! A client is a slow consumer when output has been pending and actix-http has not asked for
//! data for `slow_consumer_timeout`: the session ends with [`End::SlowConsumer`], and its
//! transport closes the connection (dropping it if the close cannot be flushed within
//! [`CLOSE_FLUSH_TIMEOUT`]).

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

use super::channels::{ChannelSet, Channels};
use super::limits::{Limits, MAX_THROTTLE_MS};
use super::output::{Encoder, INPUT_PAUSE_BYTES, Output, SharedOutput};
use super::protocol::{ClientOp, ErrorCode, PROTOCOL_VERSION, ParseFailure, Rejected, RequestId, ServerMessage, SubscribeOptions};
use super::throttle::Cadence;
use super::{Admission, ConnectionSlot, SessionContext};
use crate::access::Grant;
use crate::access::entitlements::Entitlements;
use crate::api_error::excerpt;
use crate::bus::{FindError, SessionSignal, TableVersion, Topic};
use crate::fault::{FaultWatch, SessionFault};
use crate::feed::FeedEvent;
use crate::metrics::{DisconnectReason, TransportKind};
use crate::quote::now_millis;

pub(crate) use actix_http::ws::{CloseCode, CloseReason};

/// Entries listed in a `subscribed` message's `rejected`, at most (the rest are dropped from
/// the list, not subscribed either), so a reply stays small whatever the request held.
pub(crate) const MAX_REJECTED_LISTED: usize = 100;
/// How long a closing connection may take to flush its close before it is dropped.
pub(crate) const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The slow-consumer check runs this many times per `slow_consumer_timeout`, so a stalled
/// client is closed between 1 and 1 + 1/8 timeouts after its socket stopped taking data.
const STALL_CHECKS_PER_TIMEOUT: u32 = 8;
/// A client over the message rate hears of the messages dropped since at most this often.
pub(crate) const RATE_LIMIT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A client still over the message rate this long after its first `rate_limited` error is not
/// a burst but abuse: it is closed (WebSocket 1008).
pub(crate) const RATE_LIMIT_ABUSE_AFTER: Duration = Duration::from_secs(10);

/// A subscription requested with the connection (`/ws?symbols=A,B&throttle_ms=500&align=1`).
#[derive(Debug, Clone, Default)]
pub(crate) struct InitialSubscription {
    /// A subscription parameter was given (even an empty one): answer with `subscribed`.
    pub requested: bool,
    pub symbols: Vec<String>,
    pub throttle_ms: Option<u64>,
    pub align: Option<bool>,
    /// `channels=quotes,trades,bars:1s`.
    pub channels: Option<ChannelSet>,
    /// `since=AAPL:1042,MSFT:7`: per symbol, the last trade seq seen.
    pub since: Vec<(String, u64)>,
    /// What the server could not use, each told to the client as a `bad_request` error.
    pub problems: Vec<String>,
}

/// The query parameters a connection's URL takes (`/ws`, `/sse`).
const QUERY_PARAMETERS: &[&str] = &["symbols", "throttle_ms", "align", "channels", "since", crate::access::TOKEN_PARAMETER];

impl InitialSubscription {
    /// Reads a connection request's query string (`?symbols=AAPL,MSFT&throttle_ms=500`) for
    /// `endpoint` (named in messages). Nothing in it fails the connection: `symbols` may be
    /// repeated (the lists are joined), and a parameter the server cannot use is reported to the
    /// client in an `error` message after `welcome`, with the subscription made as well as it can
    /// be (an unusable `throttle_ms` leaves the default).
    pub(crate) fn from_query(query: &str, endpoint: &str) -> InitialSubscription {
        match web::Query::<Vec<(String, String)>>::from_query(query) {
            Ok(pairs) => InitialSubscription::from_pairs(pairs.into_inner(), endpoint),
            Err(e) => InitialSubscription { problems: vec![format!("query string: {e}")], ..InitialSubscription::default() },
        }
    }

    /// [`InitialSubscription::from_query`] for a query string already split into its pairs.
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>, endpoint: &str) -> InitialSubscription {
        let mut initial = InitialSubscription::default();
        for (name, value) in pairs {
            match name.as_str() {
                // Read by access control before the session starts.
                crate::access::TOKEN_PARAMETER => {}
                "symbols" => {
                    initial.requested = true;
                    initial.symbols.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string));
                }
                "throttle_ms" => {
                    initial.requested = true;
                    match value.trim().parse::<u64>() {
                        Ok(ms) => initial.throttle_ms = Some(ms),
                        Err(_) => {
                            initial.problems.push(format!("query parameter 'throttle_ms': '{}' is not a whole number of milliseconds; the default applies", excerpt(&value, 32)))
                        }
                    }
                }
                "align" => match value.trim() {
                    "1" | "true" => initial.align = Some(true),
                    "0" | "false" => initial.align = Some(false),
                    other => initial.problems.push(format!("query parameter 'align': '{}' is not 1, 0, true or false; not aligned", excerpt(other, 32))),
                },
                "channels" => match ChannelSet::parse(value.split(',').map(str::trim).filter(|s| !s.is_empty())) {
                    Ok(set) => initial.channels = Some(set),
                    Err(e) => initial.problems.push(format!("query parameter 'channels': {e}; quotes only")),
                },
                "since" => {
                    for pair in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        match pair.rsplit_once(':').map(|(symbol, seq)| (symbol, seq.trim().parse::<u64>())) {
                            Some((symbol, Ok(seq))) => initial.since.push((symbol.trim().to_string(), seq)),
                            _ => initial.problems.push(format!("query parameter 'since': '{}' is not SYMBOL:SEQ; not resumed", excerpt(pair, 40))),
                        }
                    }
                }
                other => initial.problems.push(format!("unknown query parameter '{}'; {endpoint} takes: {}", excerpt(other, 32), QUERY_PARAMETERS.join(", "))),
            }
        }
        initial
    }
}

/// Why a session ended; each maps to a disconnect reason, and a transport to its way of closing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum End {
    /// The client closed (a WebSocket close frame: echoed with its code and reason).
    ClientClose(Option<CloseReason>),
    /// The connection ended without a close.
    ClientGone,
    SlowConsumer,
    IdleTimeout,
    /// The client's input could not be read on.
    BadInput(InputError),
    Shutdown,
    /// The session's token reached its `exp`.
    TokenExpired,
    /// Still over the message rate after [`RATE_LIMIT_ABUSE_AFTER`] of `rate_limited` errors.
    RateLimitAbuse,
    /// An injected `disconnect` fault: closed with `code`, or, with none, the connection dropped
    /// without a close.
    Fault {
        code: Option<u16>,
    },
}

impl End {
    /// The disconnect reason reported in metrics.
    pub(crate) fn reason(&self) -> DisconnectReason {
        match self {
            End::ClientClose(_) | End::ClientGone => DisconnectReason::ClientClose,
            End::SlowConsumer => DisconnectReason::SlowConsumer,
            End::IdleTimeout => DisconnectReason::IdleTimeout,
            End::BadInput(InputError::TooBig { .. }) => DisconnectReason::Limit,
            End::BadInput(_) => DisconnectReason::ProtocolError,
            End::Shutdown => DisconnectReason::Shutdown,
            End::TokenExpired => DisconnectReason::TokenExpired,
            End::RateLimitAbuse => DisconnectReason::RateLimitAbuse,
            End::Fault { .. } => DisconnectReason::Fault,
        }
    }
}

/// Why a client's input cannot be read on, whatever its transport (a WebSocket maps each to
/// an RFC 6455 close code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum InputError {
    /// The input breaks its wire protocol's rules (WebSocket: close code 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Text that is not UTF-8 (WebSocket: close code 1007).
    #[error("{0} is not UTF-8")]
    InvalidUtf8(&'static str),
    /// Input its wire protocol cannot parse, with what is wrong (WebSocket: close code 1002).
    #[error("{0}")]
    Malformed(String),
    /// A message over the limit, known from its announced size (WebSocket: close code 1009).
    #[error("a message of at least {announced} bytes; the limit is {limit}")]
    TooBig { announced: u64, limit: usize },
}

/// What a transport hands its session from the client.
#[derive(Debug)]
pub(crate) enum Input {
    /// A request, parsed by the transport into an op, or why it could not be (answered with an
    /// error). Counted against the message rate.
    Request(Result<ClientOp, ParseFailure>),
    /// Input of a kind the transport does not take (a binary WebSocket frame): answered with
    /// `message` as a `bad_request` error, counted against the rate.
    Unsupported(&'static str),
    /// Something the transport answers itself, sent back as it is (a WebSocket pong).
    Answer(Bytes),
    /// A sign of life that needs no answer (a pong).
    Alive,
    /// The client closes.
    Close(Option<CloseReason>),
}

/// How often a session sends a heartbeat, and how long a client that [`Transport::HEARS_CLIENT`]
/// may stay silent before it is closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timing {
    pub heartbeat: Duration,
    pub idle: Duration,
}

/// A wire protocol's side of a session: it reads the client's input and closes the connection.
/// What goes out is written by its [`Encoder`] into the session's [`Output`].
pub(crate) trait Transport {
    type Encoder: Encoder;

    /// The session's heartbeat and idle timeout: the sessions' settings, unless the wire
    /// protocol announces its own (Engine.IO's `pingInterval` and `pingTimeout`).
    fn timing(&self, limits: &Limits) -> Timing {
        Timing { heartbeat: limits.ping_interval(), idle: limits.idle_timeout() }
    }

    /// Waits until the client may be greeted, answering what it sends meanwhile itself
    /// (Socket.IO: until its CONNECT, whose token it checks: `Some` is the grant that token
    /// gives, replacing the handshake's). An `Err` ends the connection before the session
    /// starts. Must watch its own deadline; shutdown is watched by the caller.
    async fn accept(&mut self, _output: &SharedOutput<Self::Encoder>, _signal: &SessionSignal) -> Result<Option<Grant>, End> {
        Ok(None)
    }

    /// Whether a request that carries an id is always answered, even when the rate limit drops
    /// it (each with its own `rate_limited` error), because the client waits for that answer (a
    /// Socket.IO ack). Otherwise dropped requests after the first are counted into one error per
    /// [`RATE_LIMIT_REPORT_INTERVAL`]. Either way replies are bounded by the input backpressure.
    const ANSWERS_EVERY_REQUEST: bool = false;

    /// Whether the client writes to the server (requests, pongs), so that its silence for
    /// `idle_timeout` ends the session. False for a one-way stream (SSE), which a client leaves
    /// by closing the connection, and which the slow-consumer rule still covers.
    const HEARS_CLIENT: bool = true;

    /// The client's next input; `None` once the client is gone. Must be cancel-safe: the
    /// session drops the future when something else happens first.
    async fn recv(&mut self) -> Option<Result<Input, InputError>>;

    /// Ends the connection for `end`: hands the output its close (if the transport has one)
    /// and waits for as long as its rules say, at most [`CLOSE_FLUSH_TIMEOUT`] or so. Returns
    /// the `transport` label the connection ended on, for the metrics (a Socket.IO session
    /// opened by polling may have upgraded to WebSocket, until the moment it closes).
    async fn close(self, output: &SharedOutput<Self::Encoder>, signal: &SessionSignal, end: &End) -> TransportKind;
}

/// Messages dropped by the rate limit since the last `rate_limited` error.
#[derive(Debug)]
struct RateLimitedRun {
    /// When the first message of the run was dropped.
    since: Instant,
    /// Whether a message was dropped since the last report (a run with none ends).
    dropped_since_report: bool,
    /// Whether the run's first dropped message without its own answer was reported at once.
    told: bool,
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
pub(crate) struct Session<E: Encoder> {
    context: Arc<SessionContext>,
    /// Held for the session's life: dropping it releases the connection's place in the limit.
    _slot: ConnectionSlot,
    limits: Arc<Limits>,
    output: SharedOutput<E>,
    signal: Arc<SessionSignal>,
    bucket: TokenBucket,
    last_heard: Instant,
    /// The transport's heartbeat and idle timeout (set when the session runs).
    timing: Timing,
    next_ping: Instant,
    next_stall_check: Instant,
    known_topics: usize,
    /// Open while the client is over the message rate (boxed: rare, and every idle session
    /// would carry its size).
    rate_limited: Option<Box<RateLimitedRun>>,
    /// The symbols the client's token lets it read.
    entitlements: Entitlements,
    /// When the client's token expires: the session ends then.
    token_expires: Option<Instant>,
    /// The injected faults that may hit this session (`--faults` only; boxed: rare).
    faults: Option<Box<FaultWatch>>,
}

impl<E: Encoder> Session<E> {
    pub(crate) fn new(context: Arc<SessionContext>, admission: Admission, output: SharedOutput<E>) -> Session<E> {
        let Admission { slot, grant } = admission;
        let slot_id = slot.id();
        let now = Instant::now();
        let limits = context.limits.clone();
        let signal = output.with(|o| o.subs.signal().clone());
        Session {
            _slot: slot,
            bucket: TokenBucket::new(limits.rate_limit, limits.rate_burst, now),
            timing: Timing { heartbeat: limits.ping_interval(), idle: limits.idle_timeout() },
            next_ping: now + limits.ping_interval(),
            next_stall_check: now + stall_check_interval(&limits),
            limits,
            output,
            signal,
            last_heard: now,
            known_topics: 0,
            rate_limited: None,
            entitlements: Entitlements::unrestricted(),
            token_expires: None,
            faults: context.faults.as_ref().map(|faults| Box::new(faults.watch(slot_id))),
            context,
        }
        .with_grant(grant)
    }

    /// Takes what the client's token allows: its symbols, and its expiry as a deadline.
    fn with_grant(mut self, grant: Grant) -> Session<E> {
        self.entitlements = grant.entitlements;
        self.token_expires = grant.expires_at.map(|at| {
            let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        });
        self
    }

    /// Runs the session to its end, closes the connection and records why it ended: once the
    /// transport accepts the client, greets it and applies the connection request's
    /// subscription (`initial`). This is the spawned future itself (no wrapper): every byte of
    /// its state is held per connection.
    pub(crate) async fn run<T: Transport<Encoder = E>>(mut self, mut transport: T, initial: InitialSubscription) {
        let mut shutdown = self.context.shutdown.clone();
        let mut feed_events = self.context.feeds.subscribe();
        let mut topics = self.context.bus.watch_topics();
        self.timing = transport.timing(&self.limits);
        self.next_ping = self.last_heard + self.timing.heartbeat;
        let end = if *shutdown.borrow() {
            End::Shutdown
        } else {
            // Boxed: the accept phase's state is needed once, at the start; inline it would
            // enlarge every live session's task by its size.
            let accepted = tokio::select! {
                biased;
                _ = shutdown.changed() => Err(End::Shutdown),
                accepted = Box::pin(transport.accept(&self.output, &self.signal)) => accepted,
            };
            match accepted {
                Ok(grant) => {
                    if let Some(grant) = grant {
                        self = self.with_grant(grant);
                    }
                    self.welcome(initial);
                    self.event_loop(&mut transport, &mut shutdown, &mut feed_events, &mut topics).await
                }
                Err(end) => end,
            }
        };
        let context = self.context.clone();
        // Boxed, as the accept phase.
        let kind = Box::pin(self.close(transport, &end)).await;
        context.metrics.connection_closed(kind, end.reason());
        tracing::debug!(reason = end.reason().label(), "session ended: {end:?}");
    }

    async fn event_loop<T: Transport<Encoder = E>>(
        &mut self,
        transport: &mut T,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
        feed_events: &mut broadcast::Receiver<FeedEvent>,
        topics: &mut tokio::sync::watch::Receiver<TableVersion>,
    ) -> End {
        let mut resyncs = topics.borrow().resyncs;
        loop {
            let mut wake_at = self.next_ping.min(self.next_stall_check);
            if T::HEARS_CLIENT {
                wake_at = wake_at.min(self.last_heard + self.timing.idle);
            }
            if let Some(run) = &self.rate_limited {
                wake_at = wake_at.min(run.report_at);
            }
            if let Some(expires) = self.token_expires {
                wake_at = wake_at.min(expires);
            }
            let wildcard = self.output.with(|o| o.subs.has_wildcard());
            // Backpressure on input: no client message is read while its answers pile up.
            let input_paused = self.output.with(|o| o.outbox_bytes()) > INPUT_PAUSE_BYTES;
            tokio::select! {
                biased;
                _ = shutdown.changed() => return End::Shutdown,
                input = transport.recv(), if !input_paused => {
                    let now = Instant::now();
                    self.last_heard = now;
                    match input {
                        None => return End::ClientGone,
                        Some(Ok(input)) => if let Some(end) = self.on_input(input, now, T::ANSWERS_EVERY_REQUEST) { return end },
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
                _ = topics.changed() => {
                    let version = *topics.borrow_and_update();
                    if version.resyncs != resyncs {
                        resyncs = version.resyncs;
                        self.output.with(|o| o.subs.resnapshot());
                        self.signal.wake();
                    }
                    if wildcard {
                        self.extend_wildcard();
                    }
                }
                _ = sleep_until(wake_at) => if let Some(end) = self.on_timer(Instant::now()) { return end },
                () = fault_fired(&mut self.faults) => if let Some(end) = self.apply_faults() { return end },
            }
            if T::HEARS_CLIENT && self.last_heard + self.timing.idle <= Instant::now() {
                return End::IdleTimeout;
            }
        }
    }

    /// Applies what injected faults ask of this session; a `disconnect` ends it.
    fn apply_faults(&mut self) -> Option<End> {
        let actions = self.faults.as_mut()?.take_actions();
        let now = Instant::now();
        for action in &actions {
            if let SessionFault::Disconnect { code } = action {
                return Some(End::Fault { code: *code });
            }
            self.output.with(|o| o.apply_fault(action, now));
        }
        if !actions.is_empty() {
            self.signal.wake();
        }
        None
    }

    fn feed_changed(&mut self, name: &str) {
        if let Some(index) = self.context.feeds.position(name) {
            self.output.with(|o| o.queue_feed_status(index));
            self.signal.wake();
        }
    }

    fn on_timer(&mut self, now: Instant) -> Option<End> {
        if self.token_expires.is_some_and(|expires| now >= expires) {
            // Told in the protocol too: a Socket.IO polling close and an event stream's end
            // carry no reason of their own.
            self.context.metrics.client_error(ErrorCode::TokenExpired.as_str());
            let message = "the token expired: reconnect with a new one".to_string();
            self.output.with(|o| o.say_last(&ServerMessage::Error { id: None, code: ErrorCode::TokenExpired, message, count: None }));
            return Some(End::TokenExpired);
        }
        if self.rate_limited.as_ref().is_some_and(|run| now >= run.report_at) {
            if let Some(end) = self.report_rate_limited(now) {
                return Some(end);
            }
        }
        if now >= self.next_ping {
            self.output.with(Output::<E>::queue_ping);
            self.signal.wake();
            self.next_ping = now + self.timing.heartbeat;
        }
        if now >= self.next_stall_check {
            self.next_stall_check = now + stall_check_interval(&self.limits);
            // Output is pending (the body was woken, or stopped with more to send) and
            // actix-http has not asked for any for a whole timeout: its write buffer is full
            // and the kernel takes nothing.
            // Output an injected fault holds back is not the client's doing.
            let (last_poll, held) = self.output.with(|o| (o.last_poll(), o.held_by_fault(now)));
            if self.signal.is_woken() && !held && now.saturating_duration_since(last_poll) >= self.limits.slow_consumer_timeout() {
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
            session: self._slot.id().to_string(),
            faults: self.context.faults.is_some(),
            throttle_ms: self.limits.throttle_ms,
            min_throttle_ms: self.limits.min_throttle_ms,
            max_symbols: self.limits.max_symbols,
            max_frame_bytes: self.limits.max_frame_bytes,
        };
        self.reply(&welcome);
        if initial.requested {
            let options = SubscribeOptions { throttle_ms: initial.throttle_ms, snapshot: None, align: initial.align, channels: initial.channels, since: initial.since };
            self.subscribe(None, &initial.symbols, options);
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
    fn rate_limited(&mut self, id: Option<RequestId>, now: Instant, answer_each: bool) {
        let opened = self.rate_limited.is_none();
        let run = self.rate_limited.get_or_insert_with(|| {
            Box::new(RateLimitedRun { since: now, dropped_since_report: false, told: false, report_at: now + RATE_LIMIT_REPORT_INTERVAL, dropped: 0, first_id: None })
        });
        // The message that opens a run is reported at once; the run goes on while more follow.
        run.dropped_since_report |= !opened;
        if answer_each && id.is_some() {
            self.context.metrics.client_errors(ErrorCode::RateLimited.as_str(), 1);
            let (rate, burst) = (self.limits.rate_limit, self.limits.rate_burst);
            let message = format!("message not processed: more than {rate} messages per second (bursts of {burst})");
            return self.reply(&ServerMessage::Error { id, code: ErrorCode::RateLimited, message, count: Some(1) });
        }
        if !run.told {
            run.told = true;
            self.send_rate_limited(id, 1);
        } else {
            if run.dropped == 0 {
                run.first_id = id;
            }
            run.dropped += 1;
        }
    }

    /// Reports the messages dropped since the last report; closes the run if there were none,
    /// and the session if the run has lasted [`RATE_LIMIT_ABUSE_AFTER`].
    fn report_rate_limited(&mut self, now: Instant) -> Option<End> {
        let run = self.rate_limited.as_mut()?;
        if !std::mem::take(&mut run.dropped_since_report) {
            self.rate_limited = None;
            return None;
        }
        if now.saturating_duration_since(run.since) >= RATE_LIMIT_ABUSE_AFTER {
            return Some(End::RateLimitAbuse);
        }
        run.report_at = now + RATE_LIMIT_REPORT_INTERVAL;
        let (id, dropped) = (run.first_id.take(), std::mem::take(&mut run.dropped));
        if dropped > 0 {
            self.send_rate_limited(id, dropped);
        }
        None
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

    /// Handles one input from the client; returns how the session ends, if it does.
    fn on_input(&mut self, input: Input, now: Instant, answer_each: bool) -> Option<End> {
        match input {
            Input::Request(parsed) => {
                self.context.metrics.client_message(parsed.as_ref().map_or("invalid", ClientOp::name));
                if !self.bucket.take(now) {
                    self.rate_limited(parsed.map_or_else(|f| f.id, |op| op_id(&op)), now, answer_each);
                    return None;
                }
                match parsed {
                    Ok(op) => self.on_op(op),
                    Err(failure) => self.error(failure.id, failure.code, failure.message),
                }
            }
            Input::Unsupported(message) => {
                self.context.metrics.client_message("invalid");
                if self.bucket.take(now) {
                    self.error(None, ErrorCode::BadRequest, message.into());
                } else {
                    self.rate_limited(None, now, answer_each);
                }
            }
            Input::Answer(answer) => {
                // Every ping gets its own answer (as Autobahn|Testsuite 2.10 expects); a flood
                // of them is bounded by the input backpressure like any other request.
                self.output.with(|o| o.queue(answer));
                self.signal.wake();
            }
            Input::Alive => {}
            Input::Close(reason) => return Some(End::ClientClose(reason)),
        }
        None
    }

    fn on_op(&mut self, op: ClientOp) {
        match op {
            ClientOp::Subscribe { id, symbols, options } => self.subscribe(id, &symbols, options),
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
                    if o.channels.as_mut().is_some_and(|channels| !channels.unsubscribe(&ids, wildcard)) {
                        o.channels = None;
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

    fn subscribe(&mut self, id: Option<RequestId>, requested: &[String], options: SubscribeOptions) {
        let throttle = options.throttle_ms.unwrap_or(self.limits.throttle_ms).clamp(self.limits.min_throttle_ms, MAX_THROTTLE_MS) as u32;
        let cadence = Cadence { throttle_ms: throttle, align: options.align.unwrap_or(false) };
        let snapshot = options.snapshot.unwrap_or(true);
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
                // Whether the symbol exists is not told to a client that may not read it.
                Ok(topic) if !self.entitlements.allows(&topic.symbol) => reject(&mut rejected, Rejected { symbol: topic.symbol.to_string(), code: ErrorCode::NotEntitled }),
                Err(FindError::Unknown(symbol)) if !self.entitlements.allows(&symbol) => reject(&mut rejected, Rejected { symbol, code: ErrorCode::NotEntitled }),
                Ok(topic) => {
                    if !topics.iter().any(|t| t.id == topic.id) {
                        topics.push(topic);
                    }
                }
                Err(FindError::Invalid { .. }) => reject(&mut rejected, Rejected { symbol: excerpt(raw, 32), code: ErrorCode::InvalidSymbol }),
                Err(FindError::Unknown(symbol)) => reject(&mut rejected, Rejected { symbol, code: ErrorCode::UnknownSymbol }),
            }
        }
        let channel_set = options.channels.unwrap_or(ChannelSet::QUOTES);
        // `since` names symbols as the client wrote them: keyed by the topic's own name.
        let since: std::collections::HashMap<Arc<str>, u64> =
            options.since.iter().filter_map(|(symbol, seq)| self.context.bus.find(symbol).ok().map(|topic| (topic.symbol.clone(), *seq))).collect();
        let max_symbols = self.limits.max_symbols;
        let all = wildcard.then(|| self.context.bus.topics());
        let entitled_all = all.as_ref().map(|all| self.entitled(all));
        let subscribed = self.output.with(|o| {
            let subs = &mut o.subs;
            let new_explicit = topics.iter().filter(|t| !subs.is_explicit(t.id)).count();
            let new_wildcard = usize::from(wildcard && !subs.has_wildcard());
            let total = subs.counted() + new_explicit + new_wildcard;
            if total > max_symbols {
                return Err(format!("subscribing would make {total} symbols; the limit is {max_symbols} per session (\"*\" counts as one)"));
            }
            let now = Instant::now();
            subs.subscribe(&topics, cadence, snapshot, false, now);
            if let Some(all) = &entitled_all {
                subs.subscribe(all, cadence, snapshot, true, now);
            }
            if channel_set.beyond_quotes() || o.channels.is_some() {
                let channels = o.channels.get_or_insert_with(Box::default);
                let now_us = crate::quote::now_micros();
                channels.subscribe(&topics, channel_set, false, &since, now_us);
                let needed = match &entitled_all {
                    Some(all) => channels.subscribe(all, channel_set, true, &since, now_us),
                    None => channels.subscribe(&[], channel_set, false, &since, now_us),
                };
                if !needed {
                    o.channels = None;
                }
            }
            let symbols = o.subs.symbol_list();
            let channels = Channels::describe(o.channels.as_deref(), &symbols);
            Ok((symbols, channels))
        });
        let (symbols, channels) = match subscribed {
            Ok(listed) => listed,
            Err(message) => return self.error(id, ErrorCode::TooManySymbols, message),
        };
        if let Some(all) = all {
            self.known_topics = all.len();
        }
        for entry in &rejected {
            self.context.metrics.client_error(entry.code.as_str());
        }
        self.reply(&ServerMessage::Subscribed { id, throttle_ms: throttle as u64, align: cadence.align, symbols, rejected, channels });
    }

    /// A wildcard session picks up topics registered after it subscribed.
    fn extend_wildcard(&mut self) {
        let all = self.context.bus.topics();
        if all.len() > self.known_topics {
            let new = self.entitled(&all[self.known_topics..]);
            let extended = self.output.with(|o| {
                let Some(cadence) = o.subs.wildcard_cadence() else { return false };
                o.subs.subscribe(&new, cadence, false, true, Instant::now());
                if let Some(channels) = o.channels.as_deref_mut() {
                    if let Some(set) = channels.wildcard() {
                        channels.subscribe(&new, set, true, &std::collections::HashMap::new(), crate::quote::now_micros());
                    }
                }
                true
            });
            if extended {
                self.known_topics = all.len();
                self.signal.wake();
            }
        }
    }

    /// The topics of `topics` the client may read: `*` means these, present and future.
    fn entitled<'t>(&self, topics: &'t [Arc<Topic>]) -> std::borrow::Cow<'t, [Arc<Topic>]> {
        if self.entitlements.allows_all() {
            return std::borrow::Cow::Borrowed(topics);
        }
        topics.iter().filter(|t| self.entitlements.allows(&t.symbol)).cloned().collect::<Vec<_>>().into()
    }

    /// Stops the output and lets the transport close the connection.
    async fn close<T: Transport<Encoder = E>>(self, transport: T, end: &End) -> TransportKind {
        transport.close(&self.output, &self.signal, end).await
    }
}

/// Resolves when an injected fault fired (never, for a session without fault injection).
async fn fault_fired(faults: &mut Option<Box<FaultWatch>>) {
    match faults {
        Some(watch) => watch.fired().await,
        None => std::future::pending().await,
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

    #[test]
    fn upgrade_query_joins_symbol_lists_and_reports_what_it_cannot_use() {
        let initial = InitialSubscription::from_query("symbols=AAPL,MSFT&symbols=NVDA&throttle_ms=500", "/ws");
        assert_eq!((initial.symbols, initial.throttle_ms, initial.requested), (vec!["AAPL".into(), "MSFT".into(), "NVDA".into()], Some(500), true));
        assert!(initial.problems.is_empty());
        let empty = InitialSubscription::from_query("symbols=", "/ws");
        assert!(empty.requested && empty.symbols.is_empty() && empty.problems.is_empty());
        assert!(!InitialSubscription::from_query("", "/ws").requested);
        for bad in ["abc", "-1", "1.5", ""] {
            let initial = InitialSubscription::from_query(&format!("symbols=AAPL&throttle_ms={bad}"), "/ws");
            assert_eq!(initial.throttle_ms, None, "{bad}");
            assert!(initial.problems[0].contains("'throttle_ms'"), "{bad}: {:?}", initial.problems);
        }
        let typo = InitialSubscription::from_query("symbol=AAPL", "/ws");
        assert!(typo.problems[0].contains("unknown query parameter 'symbol'"), "{:?}", typo.problems);
        assert!(!typo.requested);
    }
}
