//! What a session sends, produced when the socket can take it.
//!
//! actix-ws hands a session a channel of 32 messages that its response body drains into
//! actix-http's write buffer; nothing tells the session whether the socket keeps up, and every
//! frame is copied twice on the way (into the channel's encoder, then into the write buffer).
//! Instead, the upgrade response carries an [`OutboundBody`] that actix-http *pulls* from:
//! actix-http polls a response body only while its write buffer for the connection holds less
//! than a threshold, so being polled is the signal that the client keeps up, with no system call and
//! no guesswork (the threshold is [`WRITE_BUFFER_BYTES`]). When polled, the body turns whatever is due into WebSocket frames written
//! straight into the chunk it returns — control replies first, then snapshots, then live quotes,
//! at most [`CHUNK_BYTES`] per poll — and when nothing is due it registers its
//! waker with the session's [`SessionSignal`] (woken by the bus and by the session task) and a
//! timer for the next throttle deadline.
//!
//! Architecture invariants:
//! - **A session's output costs at most one write buffer.** Nothing is produced ahead of the
//!   socket: a client that stops reading leaves actix-http's write buffer full, its body is no
//!   longer polled, and its due symbols stay due (conflating) instead of piling up as frames.
//!   Server memory per stalled client is at most [`WRITE_BUFFER_BYTES`] plus one chunk
//!   ([`CHUNK_BYTES`]) in the write buffer. Control replies waiting in the outbox pass
//!   [`INPUT_PAUSE_BYTES`] by at most one reply: above it the session reads nothing more from
//!   the client until the body has drained them (see [`Output::poll_input_room`]). Feed status
//!   changes are conflated (at most one waiting per feed) and a heartbeat ping is a flag.
//! - **Delivery does not involve the session task.** A publish wakes the body directly; the
//!   session task only handles what the client sends, pings and timeouts.
//!
//! The session task and the body run on the same actix worker thread and share [`Output`]
//! through a [`SharedOutput`], whose one method lends it to a closure: a closure cannot await,
//! so no borrow is ever held across an await, and the `RefCell` rule lives in one place.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{BufMut, Bytes, BytesMut};
use tokio::time::{Instant, Sleep};

use super::inbound::{CloseReason, close_payload};
use crate::bus::{SessionSignal, TopicId};
use crate::session::SessionContext;
use crate::session::throttle::SubscriptionSet;

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

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(4 * CHUNK_BYTES));
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

const LIVE_PREFIX: &[u8] = br#"{"type":"quotes","quotes":["#;
const SNAPSHOT_PREFIX: &[u8] = br#"{"type":"quotes","snapshot":true,"quotes":["#;
const SUFFIX: &[u8] = b"]}";

/// Size of the header of a server-to-client (unmasked) frame with this payload.
fn header_len(payload: usize) -> usize {
    if payload < 126 {
        2
    } else if payload <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// Size on the wire of a server-to-client WebSocket frame with this payload.
pub(crate) fn frame_wire_bytes(payload: usize) -> u64 {
    (header_len(payload) + payload) as u64
}

/// Writes a frame header into `into`, which is exactly `header_len(payload)` long.
fn write_header(into: &mut [u8], opcode: u8, payload: usize) {
    into[0] = FIN | opcode;
    match into.len() {
        2 => into[1] = payload as u8,
        4 => {
            into[1] = 126;
            into[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            into[1] = 127;
            into[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
        }
    }
}

/// Appends one whole frame.
fn put_frame(buf: &mut BytesMut, opcode: u8, payload: &[u8]) {
    let header = header_len(payload.len());
    buf.reserve(header + payload.len());
    let start = buf.len();
    buf.put_bytes(0, header);
    write_header(&mut buf[start..], opcode, payload.len());
    buf.extend_from_slice(payload);
}

/// Writes the header of the frame whose payload was appended after `room` placeholder bytes at
/// `start`, moving the payload if its header needs a different size. Returns the payload size.
fn seal_frame(buf: &mut BytesMut, start: usize, room: usize, opcode: u8) -> usize {
    let payload_start = start + room;
    let payload = buf.len() - payload_start;
    let header = header_len(payload);
    if header < room {
        buf.copy_within(payload_start.., start + header);
        buf.truncate(start + header + payload);
    } else if header > room {
        let grow = header - room;
        buf.put_bytes(0, grow);
        buf.copy_within(payload_start..payload_start + payload, payload_start + grow);
    }
    write_header(&mut buf[start..start + header], opcode, payload);
    payload
}

/// A control reply waiting to be sent.
#[derive(Debug)]
enum Outgoing {
    Text(String),
    /// The answer to one of the client's pings, with its payload (RFC 6455 §5.5.3).
    Pong(Bytes),
}

impl Outgoing {
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Text(text) => text.len(),
            Outgoing::Pong(payload) => payload.len() + 2,
        }
    }
}

/// A session's output state, shared by the session task (which queues replies and changes
/// subscriptions) and its [`OutboundBody`] (which turns them into frames).
pub(crate) struct Output {
    pub subs: SubscriptionSet,
    outbox: VecDeque<Outgoing>,
    outbox_bytes: usize,
    /// Feeds whose status changed since it was last sent (indexes into the state's feeds; each
    /// at most once: a client that reads slowly gets the latest status, not every change).
    feeds_changed: Vec<u16>,
    /// A heartbeat ping is owed to the client.
    ping_due: bool,
    /// The session task, waiting for the outbox to drain below [`INPUT_PAUSE_BYTES`].
    input_waker: Option<Waker>,
    /// Set when the session closes: the body then sends only the close frame, and ends.
    closing: bool,
    close_frame: Option<Bytes>,
    /// When actix-http last asked the body for data.
    last_poll: Instant,
    max_frame_bytes: usize,
    context: Arc<SessionContext>,
    fired: Vec<TopicId>,
    /// The body asked the bus for a wake-up after its next dispatch round, to look again at
    /// the throttle-0 symbols it delivered before arming them (see `SubscriptionSet::recheck`).
    awaiting_round: bool,
}

impl Output {
    pub(crate) fn new(context: Arc<SessionContext>, signal: Arc<SessionSignal>, now: Instant) -> Output {
        Output {
            subs: SubscriptionSet::new(signal),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            feeds_changed: Vec::new(),
            ping_due: false,
            input_waker: None,
            closing: false,
            close_frame: None,
            last_poll: now,
            max_frame_bytes: context.limits.max_frame_bytes,
            context,
            fired: Vec::new(),
            awaiting_round: false,
        }
    }

    /// Queues a control reply (the caller wakes the body).
    pub(crate) fn queue_text(&mut self, text: String) {
        self.queue(Outgoing::Text(text));
    }

    /// Queues the answer to a client's ping (the caller wakes the body).
    pub(crate) fn queue_pong(&mut self, payload: Bytes) {
        self.queue(Outgoing::Pong(payload));
    }

    fn queue(&mut self, outgoing: Outgoing) {
        self.outbox_bytes += outgoing.bytes();
        self.outbox.push_back(outgoing);
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

    /// When actix-http last asked for data.
    pub(crate) fn last_poll(&self) -> Instant {
        self.last_poll
    }

    /// Stops producing frames: from now on the body carries only the close frame (none when
    /// the client is already gone), then ends.
    pub(crate) fn begin_close(&mut self, reason: Option<&CloseReason>) {
        self.closing = true;
        if let Some(reason) = reason {
            let mut frame = BytesMut::new();
            let payload = close_payload(reason);
            put_frame(&mut frame, OPCODE_CLOSE, &payload);
            self.context.metrics.other_frame(frame_wire_bytes(payload.len()));
            self.close_frame = Some(frame.freeze());
        }
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.feeds_changed = Vec::new();
        self.ping_due = false;
        self.subs.clear();
    }

    /// Ready once the body has handed the close frame to actix-http (which writes it before
    /// anything else happens on the connection).
    pub(crate) fn poll_close_sent(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing && self.close_frame.is_none() {
            return Poll::Ready(());
        }
        self.input_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Everything due now, as one chunk of frames, or `None` if nothing is.
    fn produce(&mut self, now: Instant) -> Option<Bytes> {
        self.subs.signal().take_dirty(&mut self.fired);
        if !self.fired.is_empty() {
            self.subs.on_fired(&self.fired, now);
            self.fired.clear();
        }
        self.subs.on_timers(now);
        if self.subs.recheck(now, false) > 0 {
            self.awaiting_round = false;
        }
        SCRATCH.with_borrow_mut(|scratch| {
            // Chunks are cut from one buffer per worker thread: actix-http copies a chunk into
            // its write buffer and drops it at once, so the buffer's memory is reclaimed and
            // reused while still in cache, instead of a fresh 16 KiB allocation per chunk.
            scratch.reserve(SCRATCH_RESERVE);
            self.produce_into(scratch, now);
            if scratch.is_empty() && self.subs.has_recheck() {
                // About to return nothing, with throttle-0 symbols delivered and unchanged since.
                if self.awaiting_round {
                    // A dispatch round went by (or something else polled) and none of them
                    // changed: arm them, as any quiet symbol.
                    self.awaiting_round = false;
                    self.subs.recheck(now, true);
                } else {
                    // One wake-up after the next publish of any topic, then look again.
                    self.awaiting_round = true;
                    self.context.bus.wake_after_next_dispatch(self.subs.signal());
                    self.subs.recheck(now, false);
                }
                self.produce_into(scratch, now);
            }
            (!scratch.is_empty()).then(|| scratch.split().freeze())
        })
    }

    fn produce_into(&mut self, buf: &mut BytesMut, now: Instant) {
        if std::mem::take(&mut self.ping_due) {
            self.put_control(buf, OPCODE_PING, &[]);
        }
        // Control replies go out a chunk's worth at a time like quotes, so that a flood's
        // answers reach actix-http at the pace the socket takes them.
        while buf.len() < CHUNK_BYTES {
            let Some(outgoing) = self.outbox.pop_front() else { break };
            self.outbox_bytes -= outgoing.bytes();
            match &outgoing {
                Outgoing::Text(text) => self.put_control(buf, OPCODE_TEXT, text.as_bytes()),
                Outgoing::Pong(payload) => self.put_control(buf, OPCODE_PONG, payload),
            }
        }
        if self.outbox_bytes <= INPUT_PAUSE_BYTES {
            if let Some(waker) = self.input_waker.take() {
                waker.wake();
            }
        }
        for index in std::mem::take(&mut self.feeds_changed) {
            if let Some(feed) = self.context.feeds.get(usize::from(index)) {
                let status = crate::session::protocol::ServerMessage::Feed(&feed.status()).to_json();
                self.put_control(buf, OPCODE_TEXT, status.as_bytes());
            }
        }
        while buf.len() < CHUNK_BYTES && self.subs.has_snapshot_pending() {
            if self.put_quote_frame(buf, now, true) == 0 {
                break;
            }
        }
        while buf.len() < CHUNK_BYTES && self.subs.has_due() {
            if self.put_quote_frame(buf, now, false) == 0 {
                break;
            }
        }
    }

    fn put_control(&self, buf: &mut BytesMut, opcode: u8, payload: &[u8]) {
        put_frame(buf, opcode, payload);
        self.context.metrics.other_frame(frame_wire_bytes(payload.len()));
    }

    /// Appends one frame of due quotes (or snapshot quotes) of at most `max_frame_bytes`
    /// and of what is left of the chunk's budget (a single larger quote still goes out alone).
    /// Returns the number of quotes.
    fn put_quote_frame(&mut self, buf: &mut BytesMut, now: Instant, snapshot: bool) -> usize {
        // A frame also ends where the chunk's budget does, so a chunk never exceeds
        // CHUNK_BYTES (but for a lone quote larger than that) and the write buffer it lands in
        // stays under WRITE_BUFFER_BYTES + CHUNK_BYTES.
        let max = self.max_frame_bytes.min(CHUNK_BYTES.saturating_sub(buf.len())).max(LIVE_PREFIX.len() + SUFFIX.len());
        let start = buf.len();
        // Room for the header of a frame of `max` bytes; moved if the frame ends up smaller
        // than 126 bytes or a lone oversized quote makes it longer.
        let room = header_len(max);
        buf.reserve(room + max);
        buf.put_bytes(0, room);
        let payload_start = buf.len();
        buf.extend_from_slice(if snapshot { SNAPSHOT_PREFIX } else { LIVE_PREFIX });
        let mut count = 0usize;
        let take = |quote: &Arc<crate::quote::PublishedQuote>| {
            let json = quote.json().as_bytes();
            let separator = usize::from(count > 0);
            if count > 0 && buf.len() - payload_start + separator + json.len() + SUFFIX.len() > max {
                return false;
            }
            if separator > 0 {
                buf.put_u8(b',');
            }
            buf.extend_from_slice(json);
            count += 1;
            true
        };
        if snapshot {
            self.subs.take_snapshot(now, take);
        } else {
            self.subs.take_due(now, take);
        }
        let (conflated, longest_wait) = self.subs.take_delivery_stats();
        if count == 0 {
            buf.truncate(start);
            return 0;
        }
        buf.extend_from_slice(SUFFIX);
        let payload = seal_frame(buf, start, room, OPCODE_TEXT);
        self.context.metrics.quote_frame(count, conflated, frame_wire_bytes(payload), longest_wait);
        count
    }
}

/// A session's [`Output`], shared by its task and its [`OutboundBody`] on one worker thread.
#[derive(Clone)]
pub(crate) struct SharedOutput(Rc<RefCell<Output>>);

impl SharedOutput {
    pub(crate) fn new(output: Output) -> SharedOutput {
        SharedOutput(Rc::new(RefCell::new(output)))
    }

    /// Lends the output to `f`. Neither the session nor the body calls this from inside `f`,
    /// and `f` cannot await, so the borrow is always free when asked for.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Output) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

/// The upgrade response's body: pulls frames from the session's [`Output`] when actix-http has
/// room for them; after the close, it sends the close frame and ends.
pub(crate) struct OutboundBody {
    output: SharedOutput,
    signal: Arc<SessionSignal>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
}

impl OutboundBody {
    pub(crate) fn new(output: SharedOutput, signal: Arc<SessionSignal>) -> OutboundBody {
        OutboundBody { output, signal, timer: Box::pin(tokio::time::sleep_until(Instant::now())), timer_at: None }
    }
}

impl MessageBody for OutboundBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let OutboundBody { output, signal, timer, timer_at } = self.get_mut();
        output.with(|output| {
            if output.closing {
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
                if let Some(chunk) = output.produce(now) {
                    // More may be due than one chunk holds: until the next poll finds nothing,
                    // output counts as pending (the session's slow-consumer check reads this).
                    signal.set_woken();
                    return Poll::Ready(Some(Ok(chunk)));
                }
                let Some(deadline) = output.subs.next_deadline() else { return Poll::Pending };
                if *timer_at != Some(deadline) {
                    timer.as_mut().reset(deadline);
                    *timer_at = Some(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *timer_at = None;
                now = Instant::now();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, opcode, payload);
        buf.to_vec()
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(frame(OPCODE_TEXT, b"hi"), [0x81, 2, b'h', b'i']);
        assert_eq!(frame(OPCODE_PONG, b""), [0x8A, 0]);
        assert_eq!(frame(OPCODE_PING, b""), [0x89, 0]);
        let medium = frame(OPCODE_TEXT, &[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = frame(OPCODE_TEXT, &[b'x'; 70_000]);
        assert_eq!(&large[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(large.len(), 70_010);
    }

    #[test]
    fn sealing_moves_the_payload_to_fit_its_header() {
        for (room, size) in [(4, 10), (4, 300), (10, 300), (4, 70_000), (2, 300), (10, 70_000)] {
            let mut buf = BytesMut::from(&b"xyz"[..]);
            buf.put_bytes(0, room);
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            buf.extend_from_slice(&payload);
            assert_eq!(seal_frame(&mut buf, 3, room, OPCODE_TEXT), size);
            let mut expected = b"xyz".to_vec();
            expected.extend(frame(OPCODE_TEXT, &payload));
            assert_eq!(buf.to_vec(), expected, "room {room}, payload {size}");
        }
    }

    #[test]
    fn wire_sizes() {
        assert_eq!(frame_wire_bytes(0), 2);
        assert_eq!(frame_wire_bytes(125), 127);
        assert_eq!(frame_wire_bytes(126), 130);
        assert_eq!(frame_wire_bytes(70_000), 70_010);
    }
}
