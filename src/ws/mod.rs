//! WebSocket protocol v1 at `GET /ws`.
//!
//! - [`inbound`]: what the client sends, RFC 6455 frames decoded and judged on their header.
//! - [`frame`]: RFC 6455 framing of what the server sends, and [`frame::WsEncoder`], protocol v1
//!   over WebSocket for the session's output ([`crate::session::output`]).
//! - [`transport`]: the session's WebSocket side: frames in, and the RFC 6455 close.
//! - [`echo`]: `GET /test/echo`, an echo on the same decoder and framing, for conformance tests
//!   only (off unless `--test-echo true`).
//!
//! This module holds the upgrade handler: it admits the client (origin, token, connection limits:
//! [`SessionContext::admit`], refusals while the REST endpoints keep answering), accepts the
//! handshake, which hands the connection over to the session ([`crate::session::handover`]),
//! and spawns the session on the worker's local executor (the session shares `Rc` state with
//! its output: not `Send`).
//! What sessions share is the [`SessionContext`] of the transport-neutral core
//! ([`crate::session`]), handed to the handler as app data.

pub(crate) mod echo;
pub(crate) mod frame;
pub(crate) mod inbound;
pub(crate) mod transport;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use self::frame::WsEncoder;
use self::inbound::InboundStream;
use self::transport::WsTransport;
use crate::api_error::{ApiError, ApiErrorCode};
use crate::bus::SessionSignal;
use crate::session::handover;
use crate::session::output::{OutboundBody, Output, SharedOutput};
use crate::session::socket::SocketProbe;
use crate::session::task::{InitialSubscription, Session};
use crate::session::{SessionContext, TokenAt};

/// `GET /ws`: upgrade and spawn the session.
pub(crate) async fn upgrade(req: HttpRequest, context: web::Data<SessionContext>) -> actix_web::Result<HttpResponse> {
    let context = context.into_inner();
    let admission = context.admit(&req, TokenAt::Handshake)?;
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        // actix-http would answer 101 and then frame the WebSocket stream in HTTP chunks: an
        // upgrade request has no body, so one that announces a chunked body is refused.
        return Err(ApiError::new(ApiErrorCode::BadRequest, "a WebSocket upgrade request has no body: remove its Transfer-Encoding header").into());
    }
    let initial = InitialSubscription::from_query(req.query_string(), "/ws");
    let probe = req.conn_data::<SocketProbe>().copied();
    let (accepted, input) = handover::accept(&req)?;
    let stream = InboundStream::new(input, context.limits.max_message_bytes);
    let signal = Arc::new(SessionSignal::default());
    let output = SharedOutput::new(Output::new(WsEncoder, context.clone(), signal.clone(), tokio::time::Instant::now()));
    let response = accepted.respond(OutboundBody::new(output.clone(), signal));
    context.metrics.connection_opened(crate::metrics::TransportKind::Websocket);
    let session = Session::new(context, admission, output);
    actix_web::rt::spawn(session.run(WsTransport::new(stream, probe), initial));
    Ok(response)
}
