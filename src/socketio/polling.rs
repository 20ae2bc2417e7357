//! Engine.IO's HTTP long-polling, and the upgrade of a polling session to WebSocket.
//!
//! A polling session is opened by a GET without `sid` and lives on that request's worker: its
//! session task, its output and a *pump* — the task that produces the output when a request
//! asks for it. Its later requests, and the WebSocket it may upgrade to, arrive on any worker,
//! so they reach it only through its [`Handle`] (in the [`Registry`], by sid), which holds
//! `Send` parts only:
//! - a GET (`poll`) sends a pull to the pump and waits for its answer: whatever is due, at most
//!   [`POLL_RESPONSE_BYTES`], as soon as anything is (a long poll; the heartbeat ping bounds the
//!   wait). A second GET while one is pending is a protocol error: 400, and the session closes.
//! - a POST's body (at most `maxPayload`: 413 beyond) is checked, handed to the session's
//!   inbox and answered `ok` once the session has taken its last packet, so a client that
//!   floods requests waits for them to be read. A second POST while one is in progress gets 400.
//! - the upgrade's WebSocket answers `2probe` with `3probe` itself, turns the session to
//!   *probing* (pending and new polls get a `6` noop at once, so the client's last poll ends),
//!   and on `5` to *upgraded*: from then on its response body pulls from the pump as a GET
//!   does, turning each record into a text frame, and its reader forwards what the client sends
//!   to the inbox. A probe that fails (the WebSocket ends before `5`) leaves the session polling.
//!
//! Backpressure is the same as on `/ws`: nothing is produced but when a request asks for it, so
//! a client that stops polling leaves its symbols conflating and is closed as a slow consumer
//! after `slow_consumer_timeout`; one that polls but stops answering pings is closed after
//! pingInterval + pingTimeout.
//!
//! Invariant: a session's mode (polling, probing, upgraded, closed) moves by compare-and-swap
//! only, so an upgrade and the session's close never both win: a session that closes during
//! the probe never upgrades, and its close goes out in the framing of the transport it is on.
//!
//! Bounds: the registry holds one handle per open session (the connection limit); a session
//! holds at most one POST body (`maxPayload`), 16 forwarded WebSocket messages (each at most
//! `maxPayload`) and one poll's answer.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::sync::{Notify, mpsc, oneshot};

use super::encoder::{Records, SioEncoder};
use super::packet::{EnginePacket, RECORD_SEPARATOR};
use super::transport::Link;
use crate::bus::SessionSignal;
use crate::metrics::{Metrics, TransportKind};
use crate::session::output::{OutboundBody, SharedOutput};
use crate::session::socket::SocketProbe;
use crate::session::task::{CLOSE_FLUSH_TIMEOUT, CloseCode, CloseReason, End, InputError};
use crate::ws::frame::{OPCODE_TEXT, WsEncoder, put_frame};
use crate::ws::inbound::{Inbound, InboundStream};
use crate::ws::transport::close_reason;

/// Most bytes of records one poll's answer carries (more waits for the next poll).
pub(crate) const POLL_RESPONSE_BYTES: usize = 64 * 1024;
/// How long an upgrade's WebSocket may take from its opening to its `5` (engine.io's
/// `upgradeTimeout`); past it the WebSocket is closed and the session goes on polling.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket messages forwarded to a session and not yet read by it, at most.
const INBOX_MESSAGES: usize = 16;

/// Where a polling session's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    Polling = 0,
    /// The upgrade's WebSocket has answered `3probe`: polls get a noop.
    Probing = 1,
    /// Everything goes over the WebSocket.
    Upgraded = 2,
    /// The session is closing: an upgrade can no longer complete.
    Closed = 3,
}

/// Every polling session, by Engine.IO sid.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<String, Arc<Handle>>>,
}

impl Registry {
    pub(crate) fn get(&self, sid: &str) -> Option<Arc<Handle>> {
        self.sessions.lock().expect("registry lock").get(sid).cloned()
    }

    fn insert(&self, sid: String, handle: Arc<Handle>) {
        self.sessions.lock().expect("registry lock").insert(sid, handle);
    }

    fn remove(&self, sid: &str) {
        self.sessions.lock().expect("registry lock").remove(sid);
    }

    /// Open polling sessions (upgraded ones included): watched as a client map.
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().expect("registry lock").len()
    }
}

/// What a session's requests on any worker use to reach it.
pub(crate) struct Handle {
    inbox: mpsc::Sender<Delivery>,
    pulls: mpsc::UnboundedSender<Pull>,
    /// Shared with the pump, which holds no sender of its own pulls (so that it ends once
    /// nothing can reach it any more).
    mode: Arc<ModeCell>,
    /// The upgraded WebSocket's socket, for the close.
    ws_probe: Mutex<Option<SocketProbe>>,
    polling: AtomicBool,
    posting: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Handle {
    pub(crate) fn mode(&self) -> Mode {
        self.mode.get()
    }

    /// Moves the session from `from` to `to`, unless it has moved on (closed) meanwhile.
    fn transition(&self, from: Mode, to: Mode) -> bool {
        self.mode.transition(from, to)
    }
}

/// A session's [`Mode`], and the pump's wake-up when it changes.
struct ModeCell {
    mode: AtomicU8,
    /// Tells the pump that the mode changed (a pending poll may need its noop).
    changed: Notify,
}

impl ModeCell {
    fn get(&self) -> Mode {
        Self::decode(self.mode.load(Ordering::Acquire))
    }

    fn decode(value: u8) -> Mode {
        match value {
            0 => Mode::Polling,
            1 => Mode::Probing,
            2 => Mode::Upgraded,
            _ => Mode::Closed,
        }
    }

    /// One atomic step, so that an upgrade and the session's close never both win.
    fn transition(&self, from: Mode, to: Mode) -> bool {
        let moved = self.mode.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if moved {
            self.changed.notify_one();
        }
        moved
    }

    /// Closes: no upgrade completes from now on. Returns the mode the session was in.
    fn close(&self) -> Mode {
        let previous = Self::decode(self.mode.swap(Mode::Closed as u8, Ordering::AcqRel));
        self.changed.notify_one();
        previous
    }
}

/// Something for the session from a request on another worker.
enum Delivery {
    /// A POST's body (checked: records of packets), and the POST, told once all are read.
    Body(Bytes, oneshot::Sender<()>),
    /// A message from the upgraded WebSocket.
    Ws(Result<Inbound, InputError>),
    /// The upgraded WebSocket is gone.
    WsGone,
    /// The client broke a polling rule (a second concurrent poll): the session fails.
    Fail(InputError),
}

/// A request for output: a poll's, or the upgraded WebSocket body's.
struct Pull {
    from_ws: bool,
    reply: oneshot::Sender<Pulled>,
}

/// The pump's answer to a pull.
pub(crate) enum Pulled {
    /// Records (each `\x1e` + a packet).
    Records(Bytes),
    /// The session is upgrading: a poll ends with a noop.
    Noop,
    /// The session's last bytes: `\x1e1` for a poll, a close frame for the WebSocket.
    Close(Bytes),
    /// Nothing more, ever.
    End,
    /// A poll on a session that has upgraded to WebSocket.
    Upgraded,
}

/// Opens a polling session's plumbing: its handle (registered under `sid`), the session's
/// [`RemoteLink`], and the pump to spawn on this worker.
pub(crate) fn open(registry: &Arc<Registry>, sid: String, metrics: Arc<Metrics>) -> (RemoteLink, PumpInput) {
    let (inbox, inbox_rx) = mpsc::channel(INBOX_MESSAGES);
    let (pulls, pulls_rx) = mpsc::unbounded_channel();
    let handle = Arc::new(Handle {
        inbox,
        pulls,
        mode: Arc::new(ModeCell { mode: AtomicU8::new(Mode::Polling as u8), changed: Notify::new() }),
        ws_probe: Mutex::new(None),
        polling: AtomicBool::new(false),
        posting: AtomicBool::new(false),
        metrics,
    });
    registry.insert(sid.clone(), handle.clone());
    let link = RemoteLink { inbox: inbox_rx, body: None, handle: handle.clone(), registry: registry.clone(), sid };
    let mode = handle.mode.clone();
    (link, PumpInput { pulls: pulls_rx, mode })
}

/// What the pump needs besides the output.
pub(crate) struct PumpInput {
    pulls: mpsc::UnboundedReceiver<Pull>,
    mode: Arc<ModeCell>,
}

/// The pump: answers each pull with what the output produces, when it produces it. Runs on
/// the session's worker until it has handed out the session's close, or nothing can pull any
/// more (the session is out of the registry, and no request or WebSocket holds its handle).
pub(crate) async fn pump(output: SharedOutput<SioEncoder<Records>>, signal: Arc<SessionSignal>, input: PumpInput) {
    let PumpInput { mut pulls, mode } = input;
    let mut body = OutboundBody::new(output.clone(), signal);
    while let Some(pull) = pulls.recv().await {
        let Pull { from_ws, mut reply } = pull;
        let answer = loop {
            if !from_ws {
                match mode.get() {
                    // A closing session's last poll carries its close.
                    Mode::Polling | Mode::Closed => {}
                    Mode::Probing => break Some(Pulled::Noop),
                    Mode::Upgraded => break Some(Pulled::Upgraded),
                }
            }
            tokio::select! {
                biased;
                chunk = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)) => break Some(match chunk {
                    None => Pulled::End,
                    // A closing session's last words (records, framed as such after an upgrade),
                    // then its close.
                    Some(Ok(chunk)) if output.with(|o| o.is_closing() && !o.close_taken()) => Pulled::Records(chunk),
                    Some(Ok(chunk)) if output.with(|o| o.is_closing()) => Pulled::Close(chunk),
                    Some(Ok(chunk)) => Pulled::Records(gather(&mut body, chunk).await),
                }),
                // The request went away before anything was produced for it.
                () = reply.closed() => break None,
                () = mode.changed.notified(), if !from_ws => continue,
            }
        };
        if let Some(answer) = answer {
            let last = matches!(answer, Pulled::End | Pulled::Close(_));
            let _ = reply.send(answer);
            if last {
                // Later pulls find the channel closed: `End`.
                return;
            }
        }
    }
}

/// Adds to `first` whatever else the output has ready now, up to [`POLL_RESPONSE_BYTES`].
async fn gather(body: &mut OutboundBody<SioEncoder<Records>>, first: Bytes) -> Bytes {
    let mut all = BytesMut::from(first);
    while all.len() < POLL_RESPONSE_BYTES {
        match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_next(cx))).await {
            Poll::Ready(Some(Ok(chunk))) => all.extend_from_slice(&chunk),
            _ => break,
        }
    }
    all.freeze()
}

/// A polling session's input, from the requests of any worker.
pub(crate) struct RemoteLink {
    inbox: mpsc::Receiver<Delivery>,
    /// The POST body being read: its records from `offset` on, and its POST's reply.
    body: Option<(Bytes, usize, oneshot::Sender<()>)>,
    handle: Arc<Handle>,
    registry: Arc<Registry>,
    sid: String,
}

impl RemoteLink {
    /// The next record of the POST body being read; the POST is answered with the last.
    fn next_record(&mut self) -> Option<Inbound> {
        let (body, offset, _) = self.body.as_mut()?;
        let rest = &body[*offset..];
        let len = rest.iter().position(|&b| b == RECORD_SEPARATOR as u8).unwrap_or(rest.len());
        let record = body.slice(*offset..*offset + len);
        *offset += len + 1;
        if *offset >= body.len() {
            if let Some((_, _, done)) = self.body.take() {
                let _ = done.send(());
            }
        }
        // The POST handler checked the body as UTF-8 and split on an ASCII byte.
        Some(Inbound::Text(ByteString::try_from(record).unwrap_or_default()))
    }
}

impl Link for RemoteLink {
    type Framing = Records;

    async fn next(&mut self) -> Option<Result<Inbound, InputError>> {
        if let Some(record) = self.next_record() {
            return Some(Ok(record));
        }
        match self.inbox.recv().await? {
            Delivery::Body(body, done) => {
                self.body = Some((body, 0, done));
                self.next_record().map(Ok)
            }
            Delivery::Ws(message) => Some(message),
            Delivery::WsGone => None,
            Delivery::Fail(error) => Some(Err(error)),
        }
    }

    async fn close(mut self, output: &SharedOutput<SioEncoder<Records>>, signal: &SessionSignal, end: &End) -> TransportKind {
        // From here on an upgrade in flight fails: the close goes out in the framing of the
        // transport the session is on now.
        let upgraded = self.handle.mode.close() == Mode::Upgraded;
        let close = if upgraded {
            close_reason(end).map(|reason| WsEncoder::close_frame(&reason))
        } else if *end == (End::Fault { code: None }) {
            // An injected drop: the session is gone with no close packet; the next poll learns it.
            None
        } else {
            Some(SioEncoder::<Records>::packet(|buf| buf.extend_from_slice(b"1")))
        };
        output.with(|o| o.begin_close(close));
        signal.wake();
        // A poll (or the WebSocket) takes the close, if one comes in time.
        let close_sent = std::future::poll_fn(|cx| output.with(|o| o.poll_close_sent(cx)));
        let sent = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, close_sent).await.is_ok();
        if upgraded {
            let probe = *self.handle.ws_probe.lock().expect("probe lock");
            // As on /ws: after the server's close, the client's close (or its end) ends it.
            let answered = match end {
                End::ClientClose(_) => sent,
                End::BadInput(_) | End::ClientGone | End::Fault { code: None } => false,
                _ => {
                    let reply = async {
                        while let Some(delivery) = self.inbox.recv().await {
                            if let Delivery::Ws(Ok(Inbound::Close(_))) | Delivery::WsGone = delivery {
                                break;
                            }
                        }
                    };
                    tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, reply).await.is_ok()
                }
            };
            if let Some(probe) = probe {
                if answered {
                    probe.shutdown();
                } else {
                    probe.force_close();
                }
            }
        }
        self.registry.remove(&self.sid);
        if upgraded { TransportKind::SocketioWebsocket } else { TransportKind::SocketioPolling }
    }
}

/// A GET on a session: the pump's next answer.
pub(crate) async fn poll(handle: &Handle) -> Result<Pulled, &'static str> {
    if handle.polling.swap(true, Ordering::AcqRel) {
        let _ = handle.inbox.try_send(Delivery::Fail(InputError::Protocol("a second poll while one was pending")));
        return Err("a poll is already pending for this session (the session is closed)");
    }
    struct Pending<'a>(&'a AtomicBool);
    impl Drop for Pending<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _pending = Pending(&handle.polling);
    let (reply, answer) = oneshot::channel();
    if handle.pulls.send(Pull { from_ws: false, reply }).is_err() {
        return Ok(Pulled::End);
    }
    Ok(answer.await.unwrap_or(Pulled::End))
}

/// A POST on a session: hands its checked body over and waits until the session has read it.
/// `Err` when another POST is in progress.
pub(crate) async fn post(handle: &Handle, body: Bytes) -> Result<bool, &'static str> {
    if handle.posting.swap(true, Ordering::AcqRel) {
        return Err("a POST is already in progress for this session");
    }
    let (done, read) = oneshot::channel();
    let delivered = handle.inbox.send(Delivery::Body(body, done)).await.is_ok();
    let read = delivered && read.await.is_ok();
    handle.posting.store(false, Ordering::Release);
    Ok(read)
}

/// Fails a session whose client broke a polling rule (a malformed body).
pub(crate) fn fail(handle: &Handle, error: InputError) {
    let _ = handle.inbox.try_send(Delivery::Fail(error));
}

/// The upgrade WebSocket's side that stays on its worker: frames it sends by itself (`3probe`,
/// pongs) and whether the upgrade is done.
#[derive(Default)]
struct Local {
    frames: VecDeque<Bytes>,
    upgraded: bool,
    /// The reader is done and nothing more will come from the pump.
    ended: bool,
    waker: Option<Waker>,
}

impl Local {
    fn push(&mut self, frame: Bytes) {
        self.frames.push_back(frame);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Starts the WebSocket a polling session upgrades to: returns its response body, and spawns
/// its reader on this worker.
pub(crate) fn upgrade(handle: Arc<Handle>, mut stream: InboundStream, probe: Option<SocketProbe>) -> UpgradeBody {
    let local = Rc::new(RefCell::new(Local::default()));
    let body = UpgradeBody { handle: handle.clone(), local: local.clone(), in_flight: None };
    actix_web::rt::spawn(async move {
        let text = |s: &str| {
            let mut frame = BytesMut::new();
            put_frame(&mut frame, OPCODE_TEXT, s.as_bytes());
            frame.freeze()
        };
        // The probe: `2probe` → `3probe`, then `5`, within the upgrade timeout.
        let probe_deadline = tokio::time::Instant::now() + UPGRADE_TIMEOUT;
        // Only the WebSocket that turned the session to probing may complete or undo it (two
        // upgrade attempts at once: the second's `2probe` fails).
        let mut probing = false;
        let upgraded = loop {
            let Ok(message) = tokio::time::timeout_at(probe_deadline, stream.recv()).await else { break false };
            match message {
                Some(Ok(Inbound::Text(t))) if &*t == "2probe" => {
                    if probing || !handle.transition(Mode::Polling, Mode::Probing) {
                        break false;
                    }
                    probing = true;
                    local.borrow_mut().push(text(&EnginePacket::Pong("probe").to_text()));
                }
                Some(Ok(Inbound::Text(t))) if &*t == "5" && probing => {
                    // Before the switch, so that a close right after it finds the socket.
                    *handle.ws_probe.lock().expect("probe lock") = probe;
                    break handle.transition(Mode::Probing, Mode::Upgraded);
                }
                Some(Ok(Inbound::Ping(payload))) => local.borrow_mut().push(WsEncoder::pong_frame(&payload)),
                Some(Ok(Inbound::Pong(_))) => {}
                _ => break false,
            }
        };
        if !upgraded {
            // The session stays on polling (unless it has closed meanwhile); this WebSocket ends.
            if probing {
                handle.transition(Mode::Probing, Mode::Polling);
            }
            let mut local = local.borrow_mut();
            local.ended = true;
            let reason = if handle.mode() == Mode::Closed {
                CloseReason { code: CloseCode::Away, description: Some("the session is closed".into()) }
            } else {
                CloseReason { code: CloseCode::Protocol, description: Some("upgrade aborted: expected 2probe, then 5".into()) }
            };
            local.push(WsEncoder::close_frame(&reason));
            return;
        }
        handle.metrics.connection_upgraded(TransportKind::SocketioPolling, TransportKind::SocketioWebsocket);
        {
            let mut local = local.borrow_mut();
            local.upgraded = true;
            if let Some(waker) = local.waker.take() {
                waker.wake();
            }
        }
        while let Some(message) = stream.recv().await {
            let message = match message {
                // Answered here: the pong is the WebSocket's business, not the session's.
                Ok(Inbound::Ping(payload)) => {
                    local.borrow_mut().push(WsEncoder::pong_frame(&payload));
                    continue;
                }
                other => other,
            };
            let last = matches!(message, Err(_) | Ok(Inbound::Close(_)));
            if handle.inbox.send(Delivery::Ws(message)).await.is_err() || last {
                return;
            }
        }
        let _ = handle.inbox.send(Delivery::WsGone).await;
    });
    body
}

/// The upgrade WebSocket's response body: its own frames first; once upgraded, the session's
/// output pulled from the pump, each record a text frame.
pub(crate) struct UpgradeBody {
    handle: Arc<Handle>,
    local: Rc<RefCell<Local>>,
    in_flight: Option<oneshot::Receiver<Pulled>>,
}

impl MessageBody for UpgradeBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        {
            let mut local = this.local.borrow_mut();
            if let Some(frame) = local.frames.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if local.ended && !local.upgraded {
                return Poll::Ready(None);
            }
            local.waker = Some(cx.waker().clone());
            if !local.upgraded {
                return Poll::Pending;
            }
        }
        let in_flight = match &mut this.in_flight {
            Some(in_flight) => in_flight,
            None => {
                let (reply, answer) = oneshot::channel();
                if this.handle.pulls.send(Pull { from_ws: true, reply }).is_err() {
                    return Poll::Ready(None);
                }
                this.in_flight.insert(answer)
            }
        };
        let answer = match Pin::new(in_flight).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answer) => answer,
        };
        this.in_flight = None;
        match answer {
            Ok(Pulled::Records(records)) => Poll::Ready(Some(Ok(frame_records(&records)))),
            Ok(Pulled::Close(frame)) => Poll::Ready(Some(Ok(frame))),
            Ok(Pulled::Noop) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Ok(Pulled::End | Pulled::Upgraded) | Err(_) => Poll::Ready(None),
        }
    }
}

/// Each `\x1e`-led record of `records` as a WebSocket text frame.
fn frame_records(records: &[u8]) -> Bytes {
    let mut frames = BytesMut::with_capacity(records.len() + 16);
    for record in records.split(|&b| b == RECORD_SEPARATOR as u8).filter(|r| !r.is_empty()) {
        put_frame(&mut frames, OPCODE_TEXT, record);
    }
    frames.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_becomes_one_text_frame() {
        let frames = frame_records(b"\x1e42[\"a\",{}]\x1e2");
        assert_eq!(&frames[..], &[&[0x81, 10][..], br#"42["a",{}]"#, &[0x81, 1, b'2']].concat()[..]);
        assert!(frame_records(b"").is_empty());
    }
}
