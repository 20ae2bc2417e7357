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

pub mod inbound;
pub mod outbound;
pub mod protocol;
pub mod session;
pub mod socket;
pub mod throttle;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use self::inbound::InboundStream;
use self::outbound::{OutboundBody, Output};
use self::session::{InitialSubscription, Session};
use crate::bus::SessionSignal;
use self::socket::SocketProbe;
use crate::server::AppState;

/// Query string of the upgrade request.
#[derive(Debug, Default, Deserialize)]
struct UpgradeQuery {
    symbols: Option<String>,
    throttle_ms: Option<String>,
}

/// Decrements the connection count when the session ends, however it ends.
pub struct ConnectionSlot(Arc<AppState>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /ws`: upgrade and spawn the session.
pub async fn upgrade(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> actix_web::Result<HttpResponse> {
    let state = state.into_inner();
    let max = state.config.max_connections;
    let previous = state.connections.fetch_add(1, Ordering::AcqRel);
    let slot = ConnectionSlot(state.clone());
    if previous >= max {
        state.metrics.disconnected(crate::metrics::DisconnectReason::Limit);
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(serde_json::json!({"error": "too_many_connections", "message": format!("the server is at its limit of {max} WebSocket connections")})));
    }
    if *state.shutdown.borrow() {
        return Ok(HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": "shutting_down", "message": "the server is shutting down"})));
    }
    // A malformed query must not fail the upgrade: the session reports it as a rejection.
    let query = web::Query::<UpgradeQuery>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default();
    let initial = InitialSubscription {
        symbols: query.symbols.map(|s| s.split(',').map(str::to_string).filter(|s| !s.trim().is_empty()).collect()).unwrap_or_default(),
        throttle_ms: query.throttle_ms.and_then(|t| t.trim().parse().ok()),
    };
    let probe = req.conn_data::<SocketProbe>().copied();
    let mut response = actix_http::ws::handshake(req.head())?;
    let max_message = state.config.max_message_bytes;
    let stream = InboundStream::new(body.into_inner(), max_message, max_message);
    let signal = Arc::new(SessionSignal::default());
    let output = Rc::new(RefCell::new(Output::new(state.clone(), signal.clone(), tokio::time::Instant::now())));
    let response = HttpResponse::from(response.message_body(OutboundBody::new(output.clone(), signal))?.map_into_boxed_body());
    state.metrics.connection_opened();
    let mut session = Session::new(state, slot, probe, output);
    session.start(initial);
    actix_web::rt::spawn(session.run(stream));
    Ok(response)
}
