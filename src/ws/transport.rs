//! The WebSocket transport of a session: client frames become [`Input`]s, and the connection
//! ends the RFC 6455 way.
//!
//! A client whose frames break RFC 6455 or the message limit is failed (RFC 6455 §7.1.7): the
//! answers to what it sent before are sent, then the close frame (so too before the echo of a
//! client's close), nothing more it sends is read, and the connection is dropped as soon as
//! the close frame is on its way; a slow consumer's connection too. After a close handshake the session shuts the socket itself
//! (RFC 6455 §7.1.1: the server closes the TCP connection first), since actix-http would keep
//! reading and discarding for as long as the peer sends. A server-initiated close waits (at
//! most [`CLOSE_FLUSH_TIMEOUT`]) for the client's close frame, then shuts the socket; a close
//! that cannot be flushed in that time drops the connection.

use actix_web::web::Bytes;
use bytestring::ByteString;

use super::frame::WsEncoder;
use super::inbound::{Inbound, InboundStream};
use crate::bus::SessionSignal;
use crate::metrics::TransportKind;
use crate::session::output::{Encoder, SharedOutput};
use crate::session::protocol::parse_client_message;
use crate::session::socket::SocketProbe;
use crate::session::task::{CLOSE_FLUSH_TIMEOUT, CloseCode, CloseReason, End, Input, InputError, Transport};

/// A WebSocket connection's input and its socket.
pub(crate) struct WsTransport {
    stream: InboundStream,
    probe: Option<SocketProbe>,
}

impl WsTransport {
    pub(crate) fn new(stream: InboundStream, probe: Option<SocketProbe>) -> WsTransport {
        WsTransport { stream, probe }
    }
}

/// The close frame a session's end sends: its code and reason.
pub(crate) fn close_reason(end: &End) -> Option<CloseReason> {
    let reason = |code, text: String| Some(CloseReason { code, description: Some(text) });
    match end {
        End::ClientClose(reason) => Some(reason.clone().unwrap_or(CloseReason { code: CloseCode::Normal, description: None })),
        End::ClientGone => None,
        End::SlowConsumer => reason(CloseCode::Policy, "slow consumer".into()),
        End::IdleTimeout => reason(CloseCode::Away, "idle timeout".into()),
        End::BadInput(error @ (InputError::Protocol(_) | InputError::Malformed(_))) => reason(CloseCode::Protocol, error.to_string()),
        End::BadInput(error @ InputError::InvalidUtf8(_)) => reason(CloseCode::Invalid, error.to_string()),
        End::BadInput(InputError::TooBig { limit, .. }) => reason(CloseCode::Size, format!("message too big: the limit is {limit} bytes")),
        End::Shutdown => reason(CloseCode::Away, "going away".into()),
        End::TokenExpired => reason(CloseCode::Policy, "token expired".into()),
        End::RateLimitAbuse => reason(CloseCode::Policy, "over the message rate for 10 s".into()),
        End::Fault { code: Some(code) } => reason(CloseCode::from(*code), "injected fault".into()),
        End::Fault { code: None } => None,
    }
}

/// The session's input for a client message: text and binary messages as the route takes them
/// (protocol v1 requests on `/ws`, echoes on the test route), control frames the same on every
/// WebSocket route: a ping is answered with its payload, a pong is a sign of life, a close ends
/// the session.
pub(crate) fn to_input(message: Inbound, text: impl FnOnce(ByteString) -> Input, binary: impl FnOnce(Bytes) -> Input) -> Input {
    match message {
        Inbound::Text(payload) => text(payload),
        Inbound::Binary(payload) => binary(payload),
        Inbound::Ping(payload) => Input::Answer(WsEncoder::pong_frame(&payload)),
        Inbound::Pong(_) => Input::Alive,
        Inbound::Close(reason) => Input::Close(reason),
    }
}

impl Transport for WsTransport {
    type Encoder = WsEncoder;

    async fn recv(&mut self) -> Option<Result<Input, InputError>> {
        let message = match self.stream.recv().await? {
            Ok(message) => message,
            Err(error) => return Some(Err(error)),
        };
        Some(Ok(to_input(message, |text| Input::Request(parse_client_message(&text)), |_| Input::Unsupported("binary frames are not supported: send JSON text frames"))))
    }

    /// Sends the close frame without waiting on a full socket, and drops the connection if it
    /// has not flushed within [`CLOSE_FLUSH_TIMEOUT`].
    async fn close(self, output: &SharedOutput<WsEncoder>, signal: &SessionSignal, end: &End) -> TransportKind {
        close(self.stream, self.probe, output, signal, end).await;
        TransportKind::Websocket
    }
}

/// Ends a WebSocket session for `end`, whatever its output's encoding: sends the close frame
/// without waiting on a full socket, and drops the connection if it has not flushed within
/// [`CLOSE_FLUSH_TIMEOUT`] (see the module's doc for who closes the TCP connection when).
pub(crate) async fn close<E: Encoder>(mut stream: InboundStream, probe: Option<SocketProbe>, output: &SharedOutput<E>, signal: &SessionSignal, end: &End) {
    let reason = close_reason(end);
    let frame = reason.as_ref().map(WsEncoder::close_frame);
    match (end, frame) {
        // What the client sent before its close, or before the frame at fault, is answered first.
        (End::ClientClose(_) | End::BadInput(_), Some(frame)) => output.with(|o| o.begin_close_after_answers(frame)),
        (_, frame) => output.with(|o| o.begin_close(frame)),
    }
    signal.wake();
    if reason.is_none() {
        if let (End::Fault { .. }, Some(probe)) = (end, probe) {
            // An injected drop: the connection ends with no close frame, as a network fault would.
            probe.force_close();
        }
        return;
    }
    let close_sent = || tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, std::future::poll_fn(|cx| output.with(|o| o.poll_close_sent(cx))));
    let ended = match end {
        // RFC 6455 §7.1.7: after failing the connection, nothing more the client sends is
        // read: once the close frame is on its way, the connection is dropped. So too for a
        // slow consumer: a client that took nothing for a while would not answer the close
        // soon, and reading what it sends meanwhile would only spend the server's time.
        End::BadInput(_) | End::SlowConsumer => {
            let _ = close_sent().await;
            false
        }
        // The handshake is over once the echo is on its way; RFC 6455 §7.1.1: the server
        // closes the TCP connection first.
        End::ClientClose(_) => close_sent().await.is_ok(),
        // The server closes: wait for the client's close frame (or its end), reading past
        // what it still sends before it.
        _ => {
            let reply = async move {
                while let Some(Ok(message)) = stream.recv().await {
                    if let Inbound::Close(_) = message {
                        break;
                    }
                }
            };
            tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, reply).await.is_ok()
        }
    };
    if let Some(probe) = probe {
        if ended {
            probe.shutdown();
        } else {
            probe.force_close();
        }
    }
}
