//! The deadlines actix-http leaves open once a connection has had its first request.
//!
//! actix-http bounds the first request's head (`client_request_timeout`) and the idle wait for
//! a next request (keep-alive), but:
//! - once the first byte of a second request arrives it clears the keep-alive timer and sets no
//!   head timer ("head timer only applies to first request on connection", `h1/dispatcher.rs`):
//!   a client could get one answer and then hold the connection forever by trickling the next
//!   head a byte at a time;
//! - it has no deadline for writing an answer: it asks a body for its end only once its write
//!   buffer has drained, and starts its keep-alive or disconnect timer only then, so a client
//!   that never reads a large answer holds the connection forever.
//!
//! So each connection has an [`Activity`] in its connection data (`on_connect`), which the
//! [`TrackRequests`] middleware keeps up to date — requests in flight, and when the last answer
//! was wholly handed to actix-http — and a watchdog task that shuts the socket when the
//! connection has had no request in flight for `keep_alive + request_head` since then (or since
//! its accept).
//!
//! actix-http has no deadline for a request's body either: a client could announce a body and
//! trickle it a byte at a time. [`TrackRequests`] also wraps the body of every request that has
//! one (not an upgrade: a WebSocket's stream is its session's) in a [`Deadline`]: once
//! `request_body_timeout` has passed since the head, the stream ends with a `TimedOut` error,
//! which the handlers answer with 408 (`api_error::body_read_error`); actix-http closes a
//! connection whose request body was not read to its end.
//!
//! Invariant: no connection stays open more than `keep_alive_timeout + request_head_timeout`
//! after an answer was handed over without the whole head of a next request, and no handler
//! waits for a request body longer than `request_body_timeout`. A request in flight (a
//! WebSocket, an SSE stream, a long poll) is its handler's to bound. The watchdog ends
//! with its connection and costs one sleeping task per connection (about 0.5 KB with its state)
//! and a few cell updates per request.

use std::cell::Cell;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::sync::Notify;

use crate::session::socket::SocketProbe;

/// What the watchdog of one connection watches: kept in the connection's data.
struct Activity {
    in_flight: Cell<usize>,
    idle_since: Cell<Instant>,
    /// Wakes the watchdog on every change and when the connection is gone.
    changed: Rc<Notify>,
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.changed.notify_one();
    }
}

/// The connection data [`TrackRequests`] finds.
#[derive(Clone)]
struct Watched(Rc<Activity>);

/// Starts the watchdog of a new connection (`probe`: its socket) and records its activity in
/// the connection's `extensions`. Called from `on_connect`, on the connection's worker.
pub(crate) fn watch(extensions: &mut Extensions, probe: SocketProbe, limit: Duration) {
    let changed = Rc::new(Notify::new());
    let activity = Rc::new(Activity { in_flight: Cell::new(0), idle_since: Cell::new(Instant::now()), changed: changed.clone() });
    let weak = Rc::downgrade(&activity);
    extensions.insert(Watched(activity));
    actix_web::rt::spawn(watchdog(weak, changed, probe, limit));
}

async fn watchdog(activity: Weak<Activity>, changed: Rc<Notify>, probe: SocketProbe, limit: Duration) {
    loop {
        // The connection data is dropped with the connection (and its last request).
        let Some(idle_since) = activity.upgrade().map(|a| (a.in_flight.get() == 0).then(|| a.idle_since.get())) else { return };
        match idle_since {
            None => changed.notified().await,
            Some(since) => {
                tokio::select! {
                    () = changed.notified() => {}
                    () = tokio::time::sleep_until((since + limit).into()) => {
                        // No change since `since` (a request would have woken us first).
                        if activity.strong_count() > 0 {
                            tracing::debug!(target: "tickerfeed::peer", "no whole request head within {limit:?} of the last answer: connection closed");
                            probe.shutdown();
                        }
                        return;
                    }
                }
            }
        }
    }
}

/// Middleware that counts a connection's requests in flight: from the head's arrival to the
/// end (or drop) of the answer's body. Outermost, so that every answer's body is counted.
pub(crate) struct TrackRequests {
    body_deadline: Duration,
}

impl TrackRequests {
    /// Tracks requests; a request body must arrive whole within `body_deadline` of its head.
    pub(crate) fn new(body_deadline: Duration) -> TrackRequests {
        TrackRequests { body_deadline }
    }
}

impl<S, B> Transform<S, ServiceRequest> for TrackRequests
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<TrackedBody>;
    type Error = actix_web::Error;
    type Transform = TrackRequestsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TrackRequestsService { service, body_deadline: self.body_deadline }))
    }
}

pub(crate) struct TrackRequestsService<S> {
    service: S,
    body_deadline: Duration,
}

impl<S, B> Service<ServiceRequest> for TrackRequestsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<TrackedBody>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let guard = req.conn_data::<Watched>().map(|watched| InFlight::begin(&watched.0));
        if has_body(&req) {
            let body = actix_web::HttpMessage::take_payload(&mut req);
            req.set_payload(Payload::from(Box::pin(Deadline::new(body, self.body_deadline)) as actix_http::BoxedPayloadStream));
        }
        let response = self.service.call(req);
        Box::pin(async move {
            // An error is turned into an answer right after this: the request ends with `guard`.
            let response = response.await?;
            Ok(response.map_into_boxed_body().map_body(|_, body| TrackedBody::new(body, guard)))
        })
    }
}

/// Whether a request announces a body of its own: a length above zero or a chunked body, and
/// no `Upgrade` (after a WebSocket upgrade the "body" is the session's stream).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    if headers.contains_key(header::UPGRADE) {
        return false;
    }
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
}

/// A request body with a deadline: after it, the stream yields one `TimedOut` error and ends.
struct Deadline<S> {
    body: S,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl<S> Deadline<S> {
    fn new(body: S, limit: Duration) -> Deadline<S> {
        Deadline { body, limit, timer: Box::pin(tokio::time::sleep(limit)), expired: false }
    }
}

impl<S: Stream<Item = Result<Bytes, PayloadError>> + Unpin> Stream for Deadline<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.body).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let message = format!("not received whole within {} s (--request-body-timeout)", self.limit.as_secs_f64());
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, message)))));
        }
        Poll::Pending
    }
}

/// One request in flight on a watched connection, until dropped.
struct InFlight(Rc<Activity>);

impl InFlight {
    fn begin(activity: &Rc<Activity>) -> InFlight {
        activity.in_flight.set(activity.in_flight.get() + 1);
        activity.changed.notify_one();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.in_flight.set(activity.in_flight.get() - 1);
        activity.idle_since.set(Instant::now());
        activity.changed.notify_one();
    }
}

/// An answer's body that ends its request's [`InFlight`] once the whole answer is handed to
/// actix-http: when its last byte of a known size has been taken, at its end, or when dropped.
/// (actix-http asks a body for its end only once its write buffer has drained, which a client
/// that does not read never lets happen.) Boxed (`BoxBody` keeps bytes and empty bodies
/// unboxed), so that it is `Unpin`.
pub(crate) struct TrackedBody {
    body: BoxBody,
    /// Bytes still to come of a body of known size.
    remaining: Option<u64>,
    in_flight: Option<InFlight>,
}

impl TrackedBody {
    fn new(body: BoxBody, in_flight: Option<InFlight>) -> TrackedBody {
        let remaining = match body.size() {
            BodySize::Sized(size) => Some(size),
            BodySize::None | BodySize::Stream => None,
        };
        let mut tracked = TrackedBody { body, remaining, in_flight };
        if tracked.remaining == Some(0) {
            tracked.in_flight = None;
        }
        tracked
    }
}

impl MessageBody for TrackedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(remaining) = self.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    if *remaining == 0 {
                        self.in_flight = None;
                    }
                }
            }
            Poll::Ready(_) => self.in_flight = None,
            Poll::Pending => {}
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Rc<Activity> {
        Rc::new(Activity { in_flight: Cell::new(0), idle_since: Cell::new(Instant::now()), changed: Rc::new(Notify::new()) })
    }

    fn poll(body: &mut TrackedBody) -> Option<Bytes> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(chunk))) => Some(chunk),
            Poll::Ready(None) => None,
            other => panic!("{:?}", other.map(|o| o.map(|r| r.map_err(|e| e.to_string())))),
        }
    }

    #[test]
    fn a_sized_answer_is_handed_over_with_its_last_byte_before_its_end_is_asked() {
        let activity = activity();
        let mut body = TrackedBody::new(BoxBody::new("an answer"), Some(InFlight::begin(&activity)));
        assert_eq!(activity.in_flight.get(), 1);
        let before = activity.idle_since.get();
        assert_eq!(poll(&mut body).as_deref(), Some(&b"an answer"[..]));
        // actix-http would ask for the end only once its write buffer drained.
        assert_eq!(activity.in_flight.get(), 0);
        assert!(activity.idle_since.get() >= before);
        assert_eq!(poll(&mut body), None);
        drop(body);
        assert_eq!(activity.in_flight.get(), 0, "counted once");
    }

    #[test]
    fn a_stream_is_in_flight_until_it_ends_or_is_dropped_and_an_empty_answer_never_is() {
        let activity = activity();
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"frame"))]);
        let mut body = TrackedBody::new(BoxBody::new(actix_web::body::BodyStream::new(stream)), Some(InFlight::begin(&activity)));
        assert_eq!(poll(&mut body).as_deref(), Some(&b"frame"[..]));
        assert_eq!(activity.in_flight.get(), 1, "a stream's size is unknown: still in flight");
        assert_eq!(poll(&mut body), None);
        assert_eq!(activity.in_flight.get(), 0);
        let dropped =
            TrackedBody::new(BoxBody::new(actix_web::body::BodyStream::new(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())), Some(InFlight::begin(&activity)));
        assert_eq!(activity.in_flight.get(), 1);
        drop(dropped);
        assert_eq!(activity.in_flight.get(), 0);
        let _empty = TrackedBody::new(BoxBody::new(()), Some(InFlight::begin(&activity)));
        assert_eq!(activity.in_flight.get(), 0);
    }

    #[test]
    fn the_watchdog_is_small() {
        // One per connection, beside an idle WebSocket connection's ~18 KB: 304 bytes when
        // written, plus the task's header, the Activity and the Notify (about 0.5 KB in all).
        let activity = activity();
        let watchdog = watchdog(Rc::downgrade(&activity), activity.changed.clone(), probe_placeholder(), Duration::from_secs(10));
        let size = std::mem::size_of_val(&watchdog);
        assert!(size <= 512, "the watchdog's future is {size} bytes");
    }

    fn probe_placeholder() -> SocketProbe {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = runtime.enter();
        let server = tokio::net::TcpStream::from_std(server).unwrap();
        SocketProbe::on_accept(&server, 0).unwrap()
    }
}
