//! WebSocket protocol v1 at `GET /ws`.
//!
//! - [`protocol`]: the messages, one enum each way.
//! - [`throttle`]: which subscribed symbols are due, per session (throttling and conflation).
//! - [`outbound`]: the upgrade response's body, which produces frames when the socket can take
//!   them (backpressure, conflation while it cannot).
//! - [`socket`]: the accepted socket's send-buffer bound and the forced close.
//! - [`session`]: the per-connection task (client messages, heartbeat, timeouts).
//!
//! This module holds the upgrade handler: it enforces the connection limit (503 beyond it, while
//! the REST endpoints keep answering), performs the handshake and spawns the session on the
//! worker's local executor (the session shares `Rc` state with its response body: not `Send`).
//! What sessions share is a [`SessionContext`], owned here and handed to the handler as app data: the
//! bus, the feeds, the metrics, the limits and the connection count, nothing else.

pub(crate) mod inbound;
pub(crate) mod limits;
pub(crate) mod outbound;
pub(crate) mod protocol;
pub(crate) mod session;
pub(crate) mod socket;
pub(crate) mod throttle;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use self::inbound::InboundStream;
use self::limits::Limits;
use self::outbound::{OutboundBody, Output, SharedOutput};
use self::session::{InitialSubscription, Session};
use self::socket::SocketProbe;
use crate::api_error::{ApiError, ApiErrorCode, excerpt};
use crate::bus::{Bus, SessionSignal};
use crate::feed::Feeds;
use crate::metrics::Metrics;

/// What every WebSocket session shares.
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

/// Open WebSocket connections, against the limit; shutdown waits for them to end.
pub struct Connections {
    open: AtomicUsize,
    max: usize,
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
    fn open(self: &Arc<Connections>) -> Option<ConnectionSlot> {
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

/// The query parameters `/ws` takes.
const UPGRADE_PARAMETERS: &[&str] = &["symbols", "throttle_ms"];

/// Reads the upgrade request's query string (`?symbols=AAPL,MSFT&throttle_ms=500`). Nothing in
/// it fails the upgrade: `symbols` may be repeated (the lists are joined), and a parameter the
/// server cannot use is reported to the client in an `error` message after `welcome`, with
/// the subscription made as well as it can be (an unusable `throttle_ms` leaves the default).
pub(crate) fn parse_upgrade_query(query: &str) -> InitialSubscription {
    let mut initial = InitialSubscription::default();
    let pairs = match web::Query::<Vec<(String, String)>>::from_query(query) {
        Ok(pairs) => pairs.into_inner(),
        Err(e) => {
            initial.problems.push(format!("query string: {e}"));
            return initial;
        }
    };
    for (name, value) in pairs {
        match name.as_str() {
            "symbols" => {
                initial.requested = true;
                initial.symbols.extend(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string));
            }
            "throttle_ms" => {
                initial.requested = true;
                match value.trim().parse::<u64>() {
                    Ok(ms) => initial.throttle_ms = Some(ms),
                    Err(_) => initial.problems.push(format!("query parameter 'throttle_ms': '{}' is not a whole number of milliseconds; the default applies", excerpt(&value, 32))),
                }
            }
            other => initial.problems.push(format!("unknown query parameter '{}'; /ws takes: {}", excerpt(other, 32), UPGRADE_PARAMETERS.join(", "))),
        }
    }
    initial
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

/// `GET /ws`: upgrade and spawn the session.
pub(crate) async fn upgrade(req: HttpRequest, body: web::Payload, context: web::Data<SessionContext>) -> actix_web::Result<HttpResponse> {
    let context = context.into_inner();
    let Some(slot) = context.connections.open() else {
        let max = context.connections.max;
        context.metrics.disconnected(crate::metrics::DisconnectReason::Limit);
        return Err(ApiError::new(ApiErrorCode::TooManyConnections, format!("the server is at its limit of {max} WebSocket connections"))
            .with_header(header::RETRY_AFTER, header::HeaderValue::from_static("5"))
            .into());
    };
    if *context.shutdown.borrow() {
        return Err(ApiError::new(ApiErrorCode::ShuttingDown, "the server is shutting down").into());
    }
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        // actix-http would answer 101 and then frame the WebSocket stream in HTTP chunks: an
        // upgrade request has no body, so one that announces a chunked body is refused.
        return Err(ApiError::new(ApiErrorCode::BadRequest, "a WebSocket upgrade request has no body: remove its Transfer-Encoding header").into());
    }
    let initial = parse_upgrade_query(req.query_string());
    let probe = req.conn_data::<SocketProbe>().copied();
    let mut response = actix_http::ws::handshake(req.head())?;
    let max_message = context.limits.max_message_bytes;
    let stream = InboundStream::new(body.into_inner(), max_message);
    let signal = Arc::new(SessionSignal::default());
    let output = SharedOutput::new(Output::new(context.clone(), signal.clone(), tokio::time::Instant::now()));
    let response = HttpResponse::from(response.message_body(OutboundBody::new(output.clone(), signal))?.map_into_boxed_body());
    context.metrics.connection_opened();
    let mut session = Session::new(context, slot, probe, output);
    session.start(initial);
    actix_web::rt::spawn(session.run(stream));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_query_joins_symbol_lists_and_reports_what_it_cannot_use() {
        let initial = parse_upgrade_query("symbols=AAPL,MSFT&symbols=NVDA&throttle_ms=500");
        assert_eq!((initial.symbols, initial.throttle_ms, initial.requested), (vec!["AAPL".into(), "MSFT".into(), "NVDA".into()], Some(500), true));
        assert!(initial.problems.is_empty());
        let empty = parse_upgrade_query("symbols=");
        assert!(empty.requested && empty.symbols.is_empty() && empty.problems.is_empty());
        assert!(!parse_upgrade_query("").requested);
        for bad in ["abc", "-1", "1.5", ""] {
            let initial = parse_upgrade_query(&format!("symbols=AAPL&throttle_ms={bad}"));
            assert_eq!(initial.throttle_ms, None, "{bad}");
            assert!(initial.problems[0].contains("'throttle_ms'"), "{bad}: {:?}", initial.problems);
        }
        let typo = parse_upgrade_query("symbol=AAPL");
        assert!(typo.problems[0].contains("unknown query parameter 'symbol'"), "{:?}", typo.problems);
        assert!(!typo.requested);
    }
}
