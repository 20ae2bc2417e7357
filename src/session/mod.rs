//! The transport-neutral session core: what a client's session is, whatever wire protocol
//! carries it.
//!
//! - [`protocol`]: protocol v1's messages, one enum each way (every transport carries these).
//! - [`throttle`]: which subscribed symbols are due, per session (throttling and conflation).
//! - [`limits`]: the sessions' settings.
//! - [`output`]: what a session sends, produced when its socket can take it, in its
//!   transport's encoding (the [`output::Encoder`] a transport supplies).
//! - [`socket`]: the accepted socket's send-buffer bound and the forced close.
//! - [`task`]: the session task (requests, replies, rate limits, heartbeat, timeouts) and the
//!   [`task::Transport`] a wire protocol implements.
//!
//! Owned here: [`SessionContext`], what every session shares (bus, feeds, metrics, limits,
//! connection count, shutdown), and [`Connections`], the one connection limit all transports
//! count against. Invariant: a connection's place in the limit is released however its
//! session ends (the [`ConnectionSlot`] is dropped with the session).

pub(crate) mod limits;
pub(crate) mod output;
pub(crate) mod protocol;
pub(crate) mod socket;
pub(crate) mod task;
pub(crate) mod throttle;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::header;

use self::limits::Limits;
use crate::api_error::{ApiError, ApiErrorCode};
use crate::bus::Bus;
use crate::feed::Feeds;
use crate::metrics::Metrics;

/// What every session shares, whatever its transport.
pub(crate) struct SessionContext {
    pub limits: Arc<Limits>,
    pub bus: Arc<Bus>,
    pub feeds: Arc<Feeds>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Connections>,
    /// Changes on every start, so clients can tell a restart (seq back to 1) from a gap.
    pub instance: String,
    /// Turns true when the server shuts down: every session closes with 1001.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl SessionContext {
    /// A place for a new connection of any transport: refused (503) at the connection limit,
    /// with `Retry-After`, and while the server shuts down.
    pub(crate) fn admit(&self) -> Result<ConnectionSlot, ApiError> {
        let Some(slot) = self.connections.open() else {
            let max = self.connections.max;
            self.metrics.disconnected(crate::metrics::DisconnectReason::Limit);
            return Err(ApiError::new(ApiErrorCode::TooManyConnections, format!("the server is at its limit of {max} connections (/ws, /sse and /socket.io/ together)"))
                .with_header(header::RETRY_AFTER, header::HeaderValue::from_static("5")));
        };
        if *self.shutdown.borrow() {
            return Err(ApiError::new(ApiErrorCode::ShuttingDown, "the server is shutting down"));
        }
        Ok(slot)
    }
}

/// Open sessions of every transport, against the limit; shutdown waits for them to end.
pub struct Connections {
    open: AtomicUsize,
    pub(crate) max: usize,
    /// Told when the last connection ends.
    drained: tokio::sync::Notify,
}

impl Connections {
    pub(crate) fn new(max: usize) -> Connections {
        Connections { open: AtomicUsize::new(0), max, drained: tokio::sync::Notify::new() }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place within the limit, held for the connection's life; `None` at the limit.
    pub(crate) fn open(self: &Arc<Connections>) -> Option<ConnectionSlot> {
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.clone());
        (previous < self.max).then_some(slot)
    }

    /// Returns once no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            // Created before the count is read: `notify_waiters` reaches a `Notified` from its
            // creation, so a last close in between still wakes this.
            let notified = self.drained.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the connection count when the session ends, however it ends.
pub(crate) struct ConnectionSlot(Arc<Connections>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}
