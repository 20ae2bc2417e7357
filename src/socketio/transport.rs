//! A Socket.IO session's transport side: Engine.IO packets in, read as Socket.IO packets and
//! those as protocol v1 requests; the CONNECT before the session starts; and the end of the
//! connection, the way its [`Link`] closes.
//!
//! Where the packets come from is the [`Link`]'s business: a WebSocket opened with
//! `transport=websocket` is read on its own worker ([`WsLink`]); a session opened by polling
//! gets them from its requests, and after an upgrade from its WebSocket, whatever worker those
//! run on (`polling::RemoteLink`). Everything else is decided here, the same for both:
//! - before the CONNECT to `/`, nothing but a CONNECT or a pong is taken (events are dropped,
//!   as the reference server drops them: the client has no socket yet); a CONNECT to another
//!   namespace gets CONNECT_ERROR; no CONNECT within pingInterval + pingTimeout closes;
//! - an Engine.IO packet that does not parse, or that a v4 client never sends there (`open`,
//!   `ping`, `upgrade`, `noop`), fails the connection: the client is not a Socket.IO client;
//! - a Socket.IO packet that does not parse, an event over the message limit, an event in
//!   another namespace, an ACK, a BINARY_EVENT (its attachments are skipped) are answered with
//!   an `error` (the request's ack when it has one) and the session goes on;
//! - the server ends a session by closing its transport, never with a DISCONNECT, so that the
//!   client reconnects (a DISCONNECT tells socket.io-client not to).

use std::sync::Arc;

use actix_web::web::Bytes;
use bytestring::ByteString;
use rand::RngExt;

use super::encoder::{Framing, NAMESPACE, SioEncoder, WsFrames};
use super::events::client_op;
use super::packet::{EnginePacket, SocketBody, SocketPacket, peek_event_ack, write_connect, write_connect_error};
use super::settings::SocketIoSettings;
use crate::access::{Access, Grant, unauthorized};
use crate::bus::SessionSignal;
use crate::metrics::TransportKind;
use crate::session::limits::Limits;
use crate::session::output::SharedOutput;
use crate::session::protocol::{ErrorCode, ParseFailure, RequestId};
use crate::session::socket::SocketProbe;
use crate::session::task::{End, Input, InputError, Timing, Transport};
use crate::ws::frame::WsEncoder;
use crate::ws::inbound::{Inbound, InboundStream};

/// Where a session's Engine.IO packets come from, and how its connection ends.
pub(crate) trait Link {
    /// How its packets reach the client.
    type Framing: Framing;

    /// The client's next message (a WebSocket's, or a record of a polling request); `None`
    /// once it is gone. Cancel-safe.
    async fn next(&mut self) -> Option<Result<Inbound, InputError>>;

    /// Ends the connection for `end`; returns the transport it ended on.
    async fn close(self, output: &SharedOutput<SioEncoder<Self::Framing>>, signal: &SessionSignal, end: &End) -> TransportKind;
}

/// How a Socket.IO client shows its token: in the CONNECT's auth payload (`{"token": …}`,
/// socket.io-client's `auth` option), else with the handshake request (`Authorization: Bearer`
/// or the `token` query parameter).
pub(crate) struct ConnectAuth {
    pub access: Arc<Access>,
    pub handshake_token: Option<String>,
}

/// A Socket.IO session's transport over `L`.
pub(crate) struct SioTransport<L: Link> {
    link: L,
    /// Taken when the CONNECT is accepted: checked once.
    auth: Option<ConnectAuth>,
    /// The Socket.IO socket's id, told to the client in the CONNECT reply.
    socket_id: String,
    timing: Timing,
    max_message_bytes: usize,
    /// Binary attachments still to skip, announced by a BINARY_EVENT or BINARY_ACK refused.
    attachments_to_skip: u64,
}

impl<L: Link> SioTransport<L> {
    pub(crate) fn new(link: L, settings: &SocketIoSettings, limits: &Limits, auth: ConnectAuth) -> SioTransport<L> {
        SioTransport {
            link,
            auth: Some(auth),
            socket_id: random_id(),
            timing: Timing { heartbeat: settings.ping_interval(), idle: settings.silence_timeout() },
            max_message_bytes: limits.max_message_bytes,
            attachments_to_skip: 0,
        }
    }

    /// One packet, already framed for the client.
    fn packet(write: impl FnOnce(&mut actix_web::web::BytesMut)) -> Bytes {
        SioEncoder::<L::Framing>::packet(write)
    }

    /// What a message from the client means for the session, if anything.
    fn on_inbound(&mut self, inbound: Inbound) -> Option<Result<Input, InputError>> {
        match inbound {
            Inbound::Text(text) => self.on_text(&text),
            Inbound::Binary(_) => self.on_binary(),
            Inbound::Ping(payload) => Some(Ok(Input::Answer(WsEncoder::pong_frame(&payload)))),
            Inbound::Pong(_) => Some(Ok(Input::Alive)),
            Inbound::Close(reason) => Some(Ok(Input::Close(reason))),
        }
    }

    /// A binary message: an attachment of a refused binary packet is skipped; any other is a
    /// mistake the client hears of.
    fn on_binary(&mut self) -> Option<Result<Input, InputError>> {
        if self.attachments_to_skip > 0 {
            self.attachments_to_skip -= 1;
            return None;
        }
        Some(Ok(Input::Unsupported("binary messages are not supported: emit JSON arguments")))
    }

    fn on_text(&mut self, text: &str) -> Option<Result<Input, InputError>> {
        let packet = match EnginePacket::decode(text) {
            Ok(packet) => packet,
            Err(error) => return Some(Err(InputError::Malformed(error.to_string()))),
        };
        match packet {
            EnginePacket::Message(data) => self.on_message(data).map(Ok),
            EnginePacket::Pong(_) => Some(Ok(Input::Alive)),
            EnginePacket::Close => Some(Ok(Input::Close(None))),
            EnginePacket::Binary(_) => self.on_binary(),
            other => Some(Err(unexpected(other))),
        }
    }

    /// A Socket.IO packet once connected.
    fn on_message(&mut self, data: &str) -> Option<Input> {
        let failure = |id: Option<u64>, message: String| Input::Request(Err(ParseFailure { id: id.map(|id| RequestId::Number(id.into())), code: ErrorCode::BadRequest, message }));
        if data.len() > self.max_message_bytes {
            return Some(failure(peek_event_ack(data), format!("a message of {} bytes; the limit is {} (not processed)", data.len(), self.max_message_bytes)));
        }
        let packet = match SocketPacket::decode(data) {
            Ok(packet) => packet,
            Err(error) => return Some(failure(None, error.to_string())),
        };
        let elsewhere = packet.namespace != NAMESPACE;
        Some(match packet.body {
            SocketBody::Connect { .. } if elsewhere => Input::Answer(self.connect_error(packet.namespace)),
            // Connected already: the same answer again (socket.io-client resends CONNECT only
            // after a reconnection, on a new transport, but another client may).
            SocketBody::Connect { .. } => Input::Answer(self.connect_reply()),
            SocketBody::Disconnect if elsewhere => return None,
            SocketBody::Disconnect => Input::Close(None),
            SocketBody::Event { ack, .. } if elsewhere => failure(ack, format!("namespace '{}' is not connected: tickerfeed serves '/' only", packet.namespace)),
            SocketBody::Event { name, args, ack } => Input::Request(client_op(&name, args, ack)),
            SocketBody::Ack { id, .. } => failure(None, format!("ACK {id} answers nothing: the server asks for no acknowledgements")),
            SocketBody::ConnectError { .. } => failure(None, "CONNECT_ERROR is the server's to send".into()),
            SocketBody::BinaryEvent { attachments, ack } => {
                self.attachments_to_skip = attachments;
                failure(ack, "binary events are not supported: emit JSON arguments (the event and its attachments are dropped)".into())
            }
            SocketBody::BinaryAck { attachments, .. } => {
                self.attachments_to_skip = attachments;
                failure(None, "BINARY_ACK answers nothing: the server asks for no acknowledgements".into())
            }
        })
    }

    fn connect_reply(&self) -> Bytes {
        Self::packet(|buf| write_connect(buf, NAMESPACE, &self.socket_id))
    }

    fn connect_error(&self, namespace: &str) -> Bytes {
        Self::packet(|buf| write_connect_error(buf, namespace, "Invalid namespace", None))
    }

    /// The grant of a CONNECT to `/` with `auth`, or the CONNECT_ERROR that refuses it (the
    /// client may CONNECT again, with another token, until the session's deadline).
    fn authenticate(&mut self, auth: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<Grant, Bytes> {
        let connect = self.auth.as_ref().expect("authenticated once");
        let token = match auth.and_then(|a| a.get(crate::access::TOKEN_PARAMETER)) {
            Some(serde_json::Value::String(token)) => Some(token.as_str()),
            Some(other) => {
                let message = format!("auth.token must be a string, not {}", crate::api_error::json_kind(other));
                return Err(Self::packet(|buf| write_connect_error(buf, NAMESPACE, &message, Some("unauthorized"))));
            }
            None => connect.handshake_token.as_deref(),
        };
        match connect.access.verify(token) {
            Ok(grant) => {
                self.auth = None;
                Ok(grant)
            }
            Err(error) => {
                let refusal = unauthorized(error);
                Err(Self::packet(|buf| write_connect_error(buf, NAMESPACE, &refusal.message, Some(refusal.code.as_str()))))
            }
        }
    }
}

/// A well-formed Engine.IO packet a v4 client never sends on an open session.
fn unexpected(packet: EnginePacket<'_>) -> InputError {
    let why = match packet {
        EnginePacket::Ping(_) => "the server pings in Engine.IO v4; a client answers with a pong",
        EnginePacket::Open(_) => "the server opens the session",
        _ => "not expected on an open session",
    };
    InputError::Malformed(format!("engine.io packet: {} ({why})", packet.name()))
}

/// A random id of 20 URL-safe characters (120 bits), for Engine.IO sessions and Socket.IO sockets.
pub(crate) fn random_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..20).map(|_| ALPHABET[rng.random_range(0..64)] as char).collect()
}

impl<L: Link> Transport for SioTransport<L> {
    type Encoder = SioEncoder<L::Framing>;
    /// A client library waits for each ack (until its own timeout, if it has one).
    const ANSWERS_EVERY_REQUEST: bool = true;

    fn timing(&self, _limits: &Limits) -> Timing {
        self.timing
    }

    /// Waits for the client's CONNECT to `/` with a valid token (when one is required), at most
    /// pingInterval + pingTimeout.
    async fn accept(&mut self, output: &SharedOutput<Self::Encoder>, signal: &SessionSignal) -> Result<Option<Grant>, End> {
        let deadline = tokio::time::Instant::now() + self.timing.idle;
        loop {
            let inbound = match tokio::time::timeout_at(deadline, self.link.next()).await {
                Err(_) => return Err(End::IdleTimeout),
                Ok(None) => return Err(End::ClientGone),
                Ok(Some(Err(error))) => return Err(End::BadInput(error)),
                Ok(Some(Ok(inbound))) => inbound,
            };
            let text = match inbound {
                Inbound::Text(text) => text,
                Inbound::Close(reason) => return Err(End::ClientClose(reason)),
                Inbound::Ping(payload) => {
                    output.with(|o| o.queue(WsEncoder::pong_frame(&payload)));
                    signal.wake();
                    continue;
                }
                Inbound::Pong(_) | Inbound::Binary(_) => continue,
            };
            let reply = match self.connect_phase(&text) {
                Ok(Some(reply)) => reply,
                Ok(None) => continue,
                Err(end) => return Err(end),
            };
            let (reply, grant) = reply;
            output.with(|o| o.queue(reply));
            signal.wake();
            if grant.is_some() {
                return Ok(grant);
            }
        }
    }

    async fn recv(&mut self) -> Option<Result<Input, InputError>> {
        loop {
            let inbound = match self.link.next().await? {
                Ok(inbound) => inbound,
                Err(error) => return Some(Err(error)),
            };
            if let Some(input) = self.on_inbound(inbound) {
                return Some(input);
            }
        }
    }

    async fn close(self, output: &SharedOutput<Self::Encoder>, signal: &SessionSignal, end: &End) -> TransportKind {
        self.link.close(output, signal, end).await
    }
}

impl<L: Link> SioTransport<L> {
    /// A packet before the CONNECT: the answer to send and, if the client is now connected,
    /// its grant; nothing; or the end of the connection.
    fn connect_phase(&mut self, text: &ByteString) -> Result<Option<(Bytes, Option<Grant>)>, End> {
        let packet = EnginePacket::decode(text).map_err(|e| End::BadInput(InputError::Malformed(e.to_string())))?;
        let data = match packet {
            EnginePacket::Message(data) => data,
            EnginePacket::Pong(_) | EnginePacket::Binary(_) => return Ok(None),
            EnginePacket::Close => return Err(End::ClientClose(None)),
            other => return Err(End::BadInput(unexpected(other))),
        };
        let packet = match SocketPacket::decode(data) {
            Ok(packet) => packet,
            // Not connected: no socket to send an error event to.
            Err(error) => {
                tracing::debug!("socket.io packet before CONNECT dropped: {error}");
                return Ok(None);
            }
        };
        match packet.body {
            SocketBody::Connect { auth } if packet.namespace == NAMESPACE => match self.authenticate(auth.as_ref()) {
                Ok(grant) => Ok(Some((self.connect_reply(), Some(grant)))),
                Err(refusal) => Ok(Some((refusal, None))),
            },
            SocketBody::Connect { .. } => Ok(Some((self.connect_error(packet.namespace), None))),
            _ => Ok(None),
        }
    }
}

/// A Socket.IO session on a WebSocket opened with `transport=websocket`, read on its worker.
pub(crate) struct WsLink {
    stream: InboundStream,
    probe: Option<SocketProbe>,
}

impl WsLink {
    pub(crate) fn new(stream: InboundStream, probe: Option<SocketProbe>) -> WsLink {
        WsLink { stream, probe }
    }
}

impl Link for WsLink {
    type Framing = WsFrames;

    async fn next(&mut self) -> Option<Result<Inbound, InputError>> {
        self.stream.recv().await
    }

    async fn close(self, output: &SharedOutput<SioEncoder<WsFrames>>, signal: &SessionSignal, end: &End) -> TransportKind {
        crate::ws::transport::close(self.stream, self.probe, output, signal, end).await;
        TransportKind::SocketioWebsocket
    }
}
