//! What a session sends, produced when the socket can take it, in its transport's encoding.
//!
//! actix-ws hands a session a channel of 32 messages that its response body drains into
//! actix-http's write buffer; nothing tells the session whether the socket keeps up, and every
//! frame is copied twice on the way (into the channel's encoder, then into the write buffer).
//! Instead, a session's output is an [`OutboundBody`] that is *pulled* from, only when the
//! socket has taken what came before: over a WebSocket by the connection the session was handed
//! ([`super::handover`], which writes each chunk straight to the socket), over SSE and Socket.IO
//! polling by actix-http, which polls a response body only while its write buffer for the
//! connection holds less than [`WRITE_BUFFER_BYTES`]. So being polled is the signal that the
//! client keeps up, with no system call and no guesswork. When polled, the body turns whatever is due into frames written
//! straight into the chunk it returns — control replies first, then snapshots, then live quotes,
//! at most [`CHUNK_BYTES`] per poll — and when nothing is due it registers its
//! waker with the session's [`SessionSignal`] (woken by the bus and by the session task) and a
//! timer for the next throttle deadline.
//!
//! Architecture invariants:
//! - **A session's output costs at most one write buffer.** Nothing is produced ahead of the
//!   socket: a client that stops reading leaves its socket full, its body is no longer polled,
//!   and its due symbols stay due (conflating) instead of piling up as frames. Server memory
//!   per stalled client is at most one chunk ([`CHUNK_BYTES`]) over a WebSocket (the unsent
//!   tail in its connection), and [`WRITE_BUFFER_BYTES`] plus one chunk in actix-http's write
//!   buffer otherwise. Control replies waiting in the outbox pass
//!   [`INPUT_PAUSE_BYTES`] by at most one reply: above it the session reads nothing more from
//!   the client until the body has drained them (see [`Output::poll_input_room`]). Feed status
//!   changes are conflated (at most one waiting per feed) and a heartbeat ping is a flag.
//! - **Delivery does not involve the session task.** A publish wakes the body directly; the
//!   session task only handles what the client sends, pings and timeouts.
//!
//! The output knows nothing of a wire protocol: its transport's [`Encoder`] writes each reply,
//! heartbeat and quote batch (a WebSocket text frame, a Server-Sent Event, an Engine.IO packet),
//! and the output decides what goes out when, and how much.
//!
//! The session task and the body run on the same actix worker thread and share [`Output`]
//! through a [`SharedOutput`], whose one method lends it to a closure: a closure cannot await,
//! so no borrow is ever held across an await, and the `RefCell` rule lives in one place.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use super::SessionContext;
use super::alarm::{Alarm, Hint};
use super::channels::Channels;
use super::protocol::ServerMessage;
use super::throttle::SubscriptionSet;
use crate::bus::{SessionSignal, TopicId};
use crate::fault::SessionFault;

/// actix-http's write buffer threshold for every connection (set on the server): it polls a
/// body for more only while the buffer holds less than this.
pub(crate) const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Most bytes of quote frames returned by one poll, so the write buffer of a client that
/// stops reading holds at most [`WRITE_BUFFER_BYTES`] + this = 32 KiB.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;
/// Above this many bytes of control replies waiting to be sent, the session stops reading the
/// client's messages until the body has sent them: a client that floods requests is slowed to
/// the pace at which it reads the answers (TCP flow control does the rest), instead of being
/// closed or making the server queue replies without bound.
pub(crate) const INPUT_PAUSE_BYTES: usize = 16 * 1024;
/// Room made in the worker's scratch buffer before each chunk: one chunk, plus a frame that
/// may overshoot it (a control reply, a lone large quote) without reallocating.
const SCRATCH_RESERVE: usize = 2 * CHUNK_BYTES;
/// The smallest payload budget a quote batch is opened with (a nearly full chunk still takes
/// one batch; its first quote always goes in, whatever its size).
const MIN_BATCH_BYTES: usize = 64;
/// Most bytes an injected `delay` fault holds per session: past it, nothing more is produced
/// until held chunks go out (the symbols conflate meanwhile, as for a slow socket).
pub(crate) const MAX_HELD_BYTES: usize = 256 * 1024;

/// What injected faults (`--faults`, docs/FAULTS.md) do to a session's output now.
#[derive(Debug, Default)]
struct OutputFaults {
    /// `stall`: nothing is written before this.
    stall_until: Option<Instant>,
    /// `delay`: each chunk produced before `.1` is held for `.0`.
    delay: Option<(std::time::Duration, Instant)>,
    /// Chunks held by a delay, with when each may go; in order.
    held: VecDeque<(Instant, Bytes)>,
    held_bytes: usize,
    /// `duplicate`: the next `.1` quotes (of `.0`, or any) go out twice.
    duplicate: Option<(Option<Arc<str>>, u32)>,
}

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(4 * CHUNK_BYTES));
}

/// How a transport writes what a session sends. The output calls it as it fills a chunk, so
/// everything it writes is appended to `buf`, which holds the chunk so far.
pub(crate) trait Encoder: 'static {
    /// What ends a quote batch (after the last quote's JSON): counted when deciding whether
    /// one more quote fits in a batch.
    const QUOTES_SUFFIX: &'static [u8];

    /// Appends one message carrying `message` (a reply, an error, a feed's status, …).
    fn reply(&self, buf: &mut BytesMut, message: &ServerMessage<'_>);

    /// Appends a heartbeat (a WebSocket ping, an Engine.IO ping, an SSE comment).
    fn heartbeat(&self, buf: &mut BytesMut);

    /// Opens a quote batch whose payload will be at most `max` bytes (or one lone larger
    /// quote): writes what precedes the first quote's JSON and returns where the batch starts.
    fn open_quotes(&self, buf: &mut BytesMut, max: usize, snapshot: bool) -> QuotesMark;

    /// Ends the batch opened at `mark` (quotes were appended after it, comma-separated):
    /// writes the suffix and any framing, and returns its size on the wire.
    fn seal_quotes(&self, buf: &mut BytesMut, mark: QuotesMark) -> u64;
}

/// Where an open quote batch starts in the chunk: the encoder's framing from `start`, the
/// batch's payload (its JSON, prefix included) from `payload_start`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotesMark {
    pub start: usize,
    pub payload_start: usize,
}

/// A session's output state, shared by the session task (which queues replies and changes
/// subscriptions) and its [`OutboundBody`] (which turns them into frames).
pub(crate) struct Output<E: Encoder> {
    encoder: E,
    pub subs: SubscriptionSet,
    /// The channels beyond quotes of the subscribed symbols; `None` (no cost on the quotes
    /// path) until a subscription asks for one.
    pub channels: Option<Box<Channels>>,
    /// Messages rendered by the transport, waiting to be sent.
    outbox: VecDeque<Bytes>,
    outbox_bytes: usize,
    /// Feeds whose status changed since it was last sent (indexes into the state's feeds; each
    /// at most once: a client that reads slowly gets the latest status, not every change).
    feeds_changed: Vec<u16>,
    /// A heartbeat ping is owed to the client.
    ping_due: bool,
    /// The session task, waiting for the outbox to drain below [`INPUT_PAUSE_BYTES`].
    input_waker: Option<Waker>,
    /// The response body was dropped: actix-http is done with the connection.
    body_gone: bool,
    /// The transport, waiting to hear that the body was dropped.
    gone_waker: Option<Waker>,
    /// Set when the session closes: the body then sends only the close frame, and ends.
    closing: bool,
    close_frame: Option<Bytes>,
    /// A message that goes out just before the close frame, even though the close drops what
    /// else was waiting (why the server closes, where the close itself cannot say it).
    last_words: Option<Bytes>,
    /// When actix-http last asked the body for data.
    last_poll: Instant,
    max_frame_bytes: usize,
    context: Arc<SessionContext>,
    fired: Vec<TopicId>,
    /// Injected faults acting on this output (`None` unless one hit the session).
    faults: Option<Box<OutputFaults>>,
    /// The body asked the bus for a wake-up after its next dispatch round, to look again at
    /// the throttle-0 symbols it delivered before arming them (see `SubscriptionSet::arm_unchanged`).
    awaiting_round: bool,
}

impl<E: Encoder> Output<E> {
    pub(crate) fn new(encoder: E, context: Arc<SessionContext>, signal: Arc<SessionSignal>, now: Instant) -> Output<E> {
        Output {
            encoder,
            subs: SubscriptionSet::new(signal),
            channels: None,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            feeds_changed: Vec::new(),
            ping_due: false,
            input_waker: None,
            body_gone: false,
            gone_waker: None,
            closing: false,
            close_frame: None,
            last_words: None,
            last_poll: now,
            max_frame_bytes: context.limits.max_frame_bytes,
            context,
            fired: Vec::new(),
            awaiting_round: false,
            faults: None,
        }
    }

    /// Applies an injected fault that acts on output (`stall`, `delay`, `duplicate`; the
    /// session task handles `disconnect`).
    pub(crate) fn apply_fault(&mut self, fault: &SessionFault, now: Instant) {
        let faults = self.faults.get_or_insert_with(Box::default);
        match fault {
            SessionFault::Stall { duration } => faults.stall_until = Some(now + *duration),
            SessionFault::Delay { by, until } => faults.delay = Some((*by, *until)),
            SessionFault::Duplicate { symbol, count } => faults.duplicate = Some((symbol.clone(), *count)),
            SessionFault::Disconnect { .. } => {}
        }
    }

    /// Until when an injected fault holds all output back (a stall, or delayed chunks not yet
    /// due), if one does; otherwise the held chunk that is due, if any, as `Err`.
    fn fault_gate(&mut self, now: Instant) -> Option<Result<Instant, Bytes>> {
        let faults = self.faults.as_deref_mut()?;
        if let Some(until) = faults.stall_until {
            if until > now {
                return Some(Ok(until));
            }
            faults.stall_until = None;
        }
        if let Some(&(at, _)) = faults.held.front() {
            if at <= now {
                let (_, chunk) = faults.held.pop_front().expect("front exists");
                faults.held_bytes -= chunk.len();
                return Some(Err(chunk));
            }
            if faults.held_bytes >= MAX_HELD_BYTES {
                return Some(Ok(at));
            }
        }
        None
    }

    /// A chunk just produced: sent now, or held by an injected delay (returned when it may go
    /// now). Held chunks keep their order: while any is held, a new one waits behind it.
    fn pass_fault(&mut self, chunk: Bytes, now: Instant) -> Option<Bytes> {
        let Some(faults) = self.faults.as_deref_mut() else { return Some(chunk) };
        let delay = faults.delay.filter(|(_, until)| *until > now).map(|(by, _)| by);
        if delay.is_none() {
            faults.delay = None;
            if faults.held.is_empty() {
                return Some(chunk);
            }
        }
        let behind = faults.held.back().map_or(now, |(at, _)| *at);
        faults.held_bytes += chunk.len();
        faults.held.push_back(((now + delay.unwrap_or_default()).max(behind), chunk));
        None
    }

    /// When the next held chunk may go, if one is held.
    fn next_held(&self) -> Option<Instant> {
        self.faults.as_ref().and_then(|f| f.held.front().map(|(at, _)| *at))
    }

    /// Whether an injected fault holds back output the slow-consumer rule must not count
    /// against the client.
    pub(crate) fn held_by_fault(&self, now: Instant) -> bool {
        self.faults.as_ref().is_some_and(|f| f.stall_until.is_some_and(|until| until > now) || !f.held.is_empty())
    }

    /// Queues a reply, written by the transport's encoder (the caller wakes the body).
    pub(crate) fn queue_reply(&mut self, message: &ServerMessage<'_>) {
        let mut buf = BytesMut::new();
        self.encoder.reply(&mut buf, message);
        self.queue(buf.freeze());
    }

    /// `message` goes out just before the close, whatever else is dropped then.
    pub(crate) fn say_last(&mut self, message: &ServerMessage<'_>) {
        let mut buf = BytesMut::new();
        self.encoder.reply(&mut buf, message);
        self.last_words = Some(buf.freeze());
    }

    /// Queues a message the transport has written itself (e.g. a WebSocket pong).
    pub(crate) fn queue(&mut self, message: Bytes) {
        self.outbox_bytes += message.len();
        self.outbox.push_back(message);
    }

    /// Owes the client a heartbeat ping (one, however many are asked for before it goes out).
    pub(crate) fn queue_ping(&mut self) {
        self.ping_due = true;
    }

    /// Owes the client the status of feed `index` (once, however often it changes before the
    /// status goes out; the status sent is the one current then).
    pub(crate) fn queue_feed_status(&mut self, index: usize) {
        let index = index as u16;
        if !self.feeds_changed.contains(&index) {
            self.feeds_changed.push(index);
        }
    }

    /// Bytes of control replies not yet handed to actix.
    pub(crate) fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// Ready when the session may read the client's next message: the outbox holds at most
    /// [`INPUT_PAUSE_BYTES`]. Otherwise the body wakes the session once it has drained that far.
    pub(crate) fn poll_input_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.outbox_bytes <= INPUT_PAUSE_BYTES {
            return Poll::Ready(());
        }
        if !self.input_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.input_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Ready once the response body has been dropped: the connection is gone (or the server
    /// ended the response). For a transport the client never writes to (SSE), this is how it
    /// learns that the client left.
    pub(crate) fn poll_body_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.body_gone {
            return Poll::Ready(());
        }
        if !self.gone_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.gone_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// When actix-http last asked for data.
    pub(crate) fn last_poll(&self) -> Instant {
        self.last_poll
    }

    /// Stops producing frames: from now on the body carries only the last words, if any, and
    /// `close` (the transport's close frame; none when the client is already gone or the
    /// transport has none), then ends.
    pub(crate) fn begin_close(&mut self, close: Option<Bytes>) {
        self.closing = true;
        if let Some(frame) = &close {
            self.context.metrics.other_frame(frame.len() as u64);
        }
        self.close_frame = close;
        self.outbox.clear();
        self.outbox_bytes = 0;
        if let Some(words) = self.last_words.take() {
            self.queue(words);
        }
        self.feeds_changed = Vec::new();
        self.ping_due = false;
        self.subs.clear();
        self.channels = None;
    }

    /// Whether the body has handed out the close frame (its last words, if any, went before).
    pub(crate) fn close_taken(&self) -> bool {
        self.close_frame.is_none() && self.outbox.is_empty()
    }

    /// [`Output::begin_close`] for a close the client caused (its close frame, or input that
    /// fails the connection): the answers already queued (pongs, replies to what it sent before)
    /// go out ahead of `close`, so that each message before the one at fault is answered
    /// (Autobahn|Testsuite 3.2: a valid message's echo precedes the failure). Bounded: the
    /// outbox holds at most [`INPUT_PAUSE_BYTES`] and one reply.
    pub(crate) fn begin_close_after_answers(&mut self, close: Bytes) {
        let mut frames = BytesMut::with_capacity(self.outbox_bytes + close.len());
        for answer in self.outbox.drain(..) {
            self.context.metrics.other_frame(answer.len() as u64);
            frames.extend_from_slice(&answer);
        }
        self.begin_close(Some(close.clone()));
        frames.extend_from_slice(&close);
        self.close_frame = Some(frames.freeze());
    }

    /// Whether the session is closing (the body now carries only its close).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Ready once the body has handed the close frame to actix-http (which writes it before
    /// anything else happens on the connection).
    pub(crate) fn poll_close_sent(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing && self.close_frame.is_none() && self.outbox.is_empty() {
            return Poll::Ready(());
        }
        self.input_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// What a poll of the body touches first, for its alarm to prefetch.
    fn hints(&self, signal: &Arc<SessionSignal>) -> [Hint; super::alarm::HINTS] {
        let [subs, timers, grid, due] = self.subs.hints();
        [Hint::of(self, size_of::<Self>().div_ceil(64)), Hint::of(&**signal, 1), subs, timers, grid, due]
    }

    /// Everything due now, as one chunk of frames, or `None` if nothing is.
    fn produce(&mut self, now: Instant) -> Option<Bytes> {
        self.subs.signal().take_dirty(&mut self.fired);
        if !self.fired.is_empty() {
            self.subs.on_fired(&self.fired, now);
            self.fired.clear();
        }
        self.subs.on_timers(now);
        SCRATCH.with_borrow_mut(|scratch| {
            // Chunks are cut from one buffer per worker thread: a chunk is written to the socket
            // (or copied into actix-http's write buffer) and dropped at once, so the buffer's memory is reclaimed and
            // reused while still in cache, instead of a fresh 16 KiB allocation per chunk.
            scratch.reserve(SCRATCH_RESERVE);
            self.produce_into(scratch, now);
            if scratch.is_empty() && self.subs.has_recheck() {
                // About to return nothing, with throttle-0 symbols delivered and unchanged since.
                if self.awaiting_round {
                    // A dispatch round went by (or something else polled) and none of them
                    // changed: arm them, as any quiet symbol.
                    self.awaiting_round = false;
                    self.subs.arm_unchanged(now);
                } else {
                    // One wake-up after the next publish of any topic, then look again (now
                    // too: one may have changed since the look that found nothing).
                    self.awaiting_round = true;
                    self.context.bus.wake_after_next_dispatch(self.subs.signal());
                }
                self.produce_into(scratch, now);
            }
            (!scratch.is_empty()).then(|| scratch.split().freeze())
        })
    }

    fn produce_into(&mut self, buf: &mut BytesMut, now: Instant) {
        if std::mem::take(&mut self.ping_due) {
            let start = buf.len();
            self.encoder.heartbeat(buf);
            self.context.metrics.other_frame((buf.len() - start) as u64);
        }
        // Control replies go out a chunk's worth at a time like quotes, so that a flood's
        // answers reach actix-http at the pace the socket takes them.
        while buf.len() < CHUNK_BYTES {
            let Some(message) = self.outbox.pop_front() else { break };
            self.outbox_bytes -= message.len();
            buf.extend_from_slice(&message);
            self.context.metrics.other_frame(message.len() as u64);
        }
        if self.outbox_bytes <= INPUT_PAUSE_BYTES {
            if let Some(waker) = self.input_waker.take() {
                waker.wake();
            }
        }
        for index in std::mem::take(&mut self.feeds_changed) {
            if let Some(feed) = self.context.feeds.get(usize::from(index)) {
                let start = buf.len();
                self.encoder.reply(buf, &ServerMessage::Feed(&feed.status()));
                self.context.metrics.other_frame((buf.len() - start) as u64);
            }
        }
        while buf.len() < CHUNK_BYTES && self.subs.has_snapshot_pending() {
            if self.put_quote_frame(buf, now, true) == 0 {
                break;
            }
        }
        while buf.len() < CHUNK_BYTES && (self.subs.has_due() || self.subs.has_recheck()) {
            if self.put_quote_frame(buf, now, false) == 0 {
                break;
            }
        }
        if let Some(channels) = self.channels.as_deref_mut().filter(|c| c.has_pending()) {
            let room = CHUNK_BYTES.saturating_sub(buf.len()).max(MIN_BATCH_BYTES);
            let (encoder, metrics) = (&self.encoder, &self.context.metrics);
            let written = channels.produce(crate::quote::now_micros(), room, self.max_frame_bytes, |message| {
                let start = buf.len();
                encoder.reply(buf, message);
                let size = buf.len() - start;
                metrics.other_frame(size as u64);
                size
            });
            metrics.channels_written(written.trades, written.trades_lost, written.bars);
        }
    }

    /// Appends one frame of due quotes (or snapshot quotes) of at most `max_frame_bytes`
    /// and of what is left of the chunk's budget (a single larger quote still goes out alone).
    /// Returns the number of quotes.
    fn put_quote_frame(&mut self, buf: &mut BytesMut, now: Instant, snapshot: bool) -> usize {
        // A frame also ends where the chunk's budget does, so a chunk never exceeds
        // CHUNK_BYTES (but for a lone quote larger than that) and the write buffer it lands in
        // stays under WRITE_BUFFER_BYTES + CHUNK_BYTES.
        let max = self.max_frame_bytes.min(CHUNK_BYTES.saturating_sub(buf.len())).max(MIN_BATCH_BYTES);
        let mark = self.encoder.open_quotes(buf, max, snapshot);
        let (start, payload_start) = (mark.start, mark.payload_start);
        let suffix = E::QUOTES_SUFFIX.len();
        let mut count = 0usize;
        let channels = &mut self.channels;
        let duplicate = self.faults.as_deref_mut().and_then(|f| f.duplicate.as_mut());
        let mut duplicate = duplicate.filter(|(_, left)| *left > 0);
        let mut take = |quote: &Arc<crate::quote::PublishedQuote>| {
            if let Some(channels) = channels.as_deref_mut() {
                // A symbol with other channels: they are written after the quotes.
                if !channels.on_due(&quote.quote.symbol) {
                    return true;
                }
            }
            let json = quote.json().as_bytes();
            let separator = usize::from(count > 0);
            if count > 0 && buf.len() - payload_start + separator + json.len() + suffix > max {
                return false;
            }
            if separator > 0 {
                buf.put_u8(b',');
            }
            buf.extend_from_slice(json);
            count += 1;
            if let Some((_, left)) = duplicate.as_mut().filter(|(symbol, left)| *left > 0 && symbol.as_ref().is_none_or(|s| *s == quote.quote.symbol)) {
                // An injected duplicate: the same quote, same seq, again.
                buf.put_u8(b',');
                buf.extend_from_slice(json);
                *left -= 1;
            }
            true
        };
        if snapshot {
            self.subs.take_snapshot(now, take);
        } else {
            self.subs.take_due(now, &mut take);
            if self.subs.take_changed(now, &mut take) > 0 {
                // Something delivered at throttle 0 changed again: no need to arm yet.
                self.awaiting_round = false;
            }
        }
        let (conflated, longest_wait) = self.subs.take_delivery_stats();
        if count == 0 {
            buf.truncate(start);
            return 0;
        }
        let wire = self.encoder.seal_quotes(buf, mark);
        self.context.metrics.quote_frame(count, conflated, wire, longest_wait);
        count
    }
}

/// A session's [`Output`], shared by its task and its [`OutboundBody`] on one worker thread.
pub(crate) struct SharedOutput<E: Encoder>(Rc<RefCell<Output<E>>>);

impl<E: Encoder> Clone for SharedOutput<E> {
    fn clone(&self) -> Self {
        SharedOutput(self.0.clone())
    }
}

impl<E: Encoder> SharedOutput<E> {
    pub(crate) fn new(output: Output<E>) -> SharedOutput<E> {
        SharedOutput(Rc::new(RefCell::new(output)))
    }

    /// Lends the output to `f`. Neither the session nor the body calls this from inside `f`,
    /// and `f` cannot await, so the borrow is always free when asked for.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Output<E>) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

/// The upgrade response's body: pulls frames from the session's [`Output`] when actix-http has
/// room for them; after the close, it sends the close frame and ends.
pub(crate) struct OutboundBody<E: Encoder> {
    output: SharedOutput<E>,
    signal: Arc<SessionSignal>,
    /// Wakes the body at its next throttle deadline.
    alarm: Alarm,
}

impl<E: Encoder> OutboundBody<E> {
    pub(crate) fn new(output: SharedOutput<E>, signal: Arc<SessionSignal>) -> OutboundBody<E> {
        OutboundBody { output, signal, alarm: Alarm::new() }
    }
}

impl<E: Encoder> Drop for OutboundBody<E> {
    fn drop(&mut self) {
        self.output.with(|output| {
            output.body_gone = true;
            if let Some(waker) = output.gone_waker.take() {
                waker.wake();
            }
        });
    }
}

impl<E: Encoder> MessageBody for OutboundBody<E> {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let OutboundBody { output, signal, alarm } = self.get_mut();
        output.with(|output| {
            if output.closing {
                if let Some(words) = output.outbox.pop_front() {
                    output.outbox_bytes -= words.len();
                    return Poll::Ready(Some(Ok(words)));
                }
                let frame = output.close_frame.take();
                if let Some(waker) = output.input_waker.take() {
                    // The session may be waiting to drop a failed connection once this is written.
                    waker.wake();
                }
                return Poll::Ready(frame.map(Ok));
            }
            signal.register(cx.waker());
            let mut now = Instant::now();
            output.last_poll = now;
            loop {
                match output.fault_gate(now) {
                    None => {}
                    Some(Err(held)) => {
                        signal.set_woken();
                        return Poll::Ready(Some(Ok(held)));
                    }
                    Some(Ok(until)) => {
                        alarm.set(until, cx);
                        return Poll::Pending;
                    }
                }
                if let Some(chunk) = output.produce(now) {
                    // More may be due than one chunk holds: until the next poll finds nothing,
                    // output counts as pending (the session's slow-consumer check reads this).
                    signal.set_woken();
                    match output.pass_fault(chunk, now) {
                        Some(chunk) => return Poll::Ready(Some(Ok(chunk))),
                        None => continue,
                    }
                }
                let next = output.subs.next_deadline();
                let deadline = match (next, output.next_held()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let Some(deadline) = deadline else { return Poll::Pending };
                if deadline > now {
                    alarm.set_hints(output.hints(signal));
                    alarm.set(deadline, cx);
                    return Poll::Pending;
                }
                now = Instant::now();
            }
        })
    }
}
