//! The deadline between a kept-alive connection's requests, which actix-http leaves open.
//!
//! actix-http bounds the first request's head (`client_request_timeout`) and the idle wait for
//! a next request (keep-alive), but once the first byte of a second request arrives it clears
//! the keep-alive timer and sets no head timer ("head timer only applies to first request on
//! connection", `h1/dispatcher.rs`): a client could answer one request and then hold the
//! connection forever by trickling the next head a byte at a time.
//!
//! So each connection has an [`Activity`] in its connection data (`on_connect`), which the
//! [`TrackRequests`] middleware keeps up to date — requests in flight, and when the last
//! answer's body was done or dropped — and a watchdog task that shuts the socket when the
//! connection has had no request in flight for `keep_alive + request_head` since its last
//! answer (or its accept).
//!
//! Invariant: a connection never waits more than `keep_alive_timeout + request_head_timeout`
//! between the end of an answer and the whole head of the next request. A request in flight
//! (a WebSocket, an SSE stream, a long poll) is its handler's to bound. The watchdog ends with
//! its connection and costs one sleeping task per connection and a few cell updates per request.

use std::cell::Cell;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::web::Bytes;
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
pub(crate) struct TrackRequests;

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
        ready(Ok(TrackRequestsService { service }))
    }
}

pub(crate) struct TrackRequestsService<S> {
    service: S,
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

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let guard = req.conn_data::<Watched>().map(|watched| InFlight::begin(&watched.0));
        let response = self.service.call(req);
        Box::pin(async move {
            // An error is turned into an answer right after this: the request ends with `guard`.
            let response = response.await?;
            Ok(response.map_into_boxed_body().map_body(|_, body| TrackedBody { body, _in_flight: guard }))
        })
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

/// An answer's body that ends its request's [`InFlight`] when it is done or dropped. Boxed
/// (`BoxBody` keeps bytes and empty bodies unboxed), so that it is `Unpin`.
pub(crate) struct TrackedBody {
    body: BoxBody,
    _in_flight: Option<InFlight>,
}

impl MessageBody for TrackedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
