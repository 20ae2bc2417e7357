//! `GET /test/echo`: a WebSocket echo for conformance testing (Autobahn|Testsuite), served only
//! when the `test_echo` setting turns it on (`--test-echo true`; off by default, and then the
//! path is not routed at all: 404 like any unknown path).
//!
//! Most of Autobahn|Testsuite's cases judge a server by what it echoes, and `/ws` answers with
//! protocol v1's JSON instead. This route exists so those cases test `/ws`'s own code: it reads
//! with the same decoder ([`InboundStream`]: frame judgement, message limit, UTF-8, close
//! frames), answers pings and closes through the same transport functions
//! ([`super::transport::to_input`], [`super::transport::close`]), writes with the same RFC 6455
//! framing ([`super::frame::put_frame`]) and runs the same session task (backpressure,
//! heartbeat, idle and slow-consumer rules). Only what a text or binary message becomes differs:
//! an echo of it instead of a request, and nothing of protocol v1 is sent (no welcome, no
//! replies; there are no subscriptions, so no quotes).
//!
//! Invariant: the route is registered only when the setting is on; echoes are answers the
//! session queues like pongs, so a client that does not read its echoes stops being read.

use std::sync::Arc;

use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, web};

use super::frame::{OPCODE_BINARY, OPCODE_TEXT, WsEncoder, put_frame};
use super::inbound::InboundStream;
use super::transport::{close, to_input};
use crate::bus::SessionSignal;
use crate::metrics::TransportKind;
use crate::session::handover;
use crate::session::output::{Encoder, OutboundBody, Output, QuotesMark, SharedOutput};
use crate::session::protocol::ServerMessage;
use crate::session::socket::SocketProbe;
use crate::session::task::{End, InitialSubscription, Input, InputError, Session, Transport};
use crate::session::{SessionContext, TokenAt};

/// The route's path.
pub(crate) const PATH: &str = "/test/echo";

/// `GET /test/echo`: upgrade and spawn an echo session (the same steps as `/ws`'s upgrade,
/// with the echo's transport and encoder).
pub(crate) async fn upgrade(req: HttpRequest, context: web::Data<SessionContext>) -> actix_web::Result<HttpResponse> {
    let context = context.into_inner();
    let admission = context.admit(&req, TokenAt::Handshake)?;
    let probe = req.conn_data::<SocketProbe>().copied();
    let (accepted, input) = handover::accept(&req)?;
    let stream = InboundStream::new(input, context.limits.max_message_bytes);
    let signal = Arc::new(SessionSignal::default());
    let output = SharedOutput::new(Output::new(EchoEncoder, context.clone(), signal.clone(), tokio::time::Instant::now()));
    let response = accepted.respond(OutboundBody::new(output.clone(), signal));
    context.metrics.connection_opened(TransportKind::Websocket);
    let session = Session::new(context, admission, output);
    actix_web::rt::spawn(session.run(EchoTransport { stream, probe }, InitialSubscription::default()));
    Ok(response)
}

/// The echo's side of a session: text and binary messages come back as they came, in one
/// frame each; control frames and the close are `/ws`'s.
struct EchoTransport {
    stream: InboundStream,
    probe: Option<SocketProbe>,
}

/// One unfragmented frame carrying `payload`.
fn echo_frame(opcode: u8, payload: &[u8]) -> Input {
    let mut frame = BytesMut::new();
    put_frame(&mut frame, opcode, payload);
    Input::Answer(frame.freeze())
}

impl Transport for EchoTransport {
    type Encoder = EchoEncoder;

    async fn recv(&mut self) -> Option<Result<Input, InputError>> {
        let message = match self.stream.recv().await? {
            Ok(message) => message,
            Err(error) => return Some(Err(error)),
        };
        Some(Ok(to_input(message, |text| echo_frame(OPCODE_TEXT, text.as_bytes()), |data: Bytes| echo_frame(OPCODE_BINARY, &data))))
    }

    async fn close(self, output: &SharedOutput<EchoEncoder>, signal: &SessionSignal, end: &End) -> TransportKind {
        close(self.stream, self.probe, output, signal, end).await;
        TransportKind::Websocket
    }
}

/// The echo's output: nothing of protocol v1 (the session's welcome and any reply are dropped),
/// `/ws`'s heartbeat ping.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EchoEncoder;

impl Encoder for EchoEncoder {
    const QUOTES_SUFFIX: &'static [u8] = WsEncoder::QUOTES_SUFFIX;

    fn reply(&self, _buf: &mut BytesMut, _message: &ServerMessage<'_>) {}

    fn heartbeat(&self, buf: &mut BytesMut) {
        WsEncoder.heartbeat(buf);
    }

    // An echo session subscribes to nothing, so no quote batch is ever opened; were one, it
    // would be `/ws`'s.
    fn open_quotes(&self, buf: &mut BytesMut, max: usize, snapshot: bool) -> QuotesMark {
        WsEncoder.open_quotes(buf, max, snapshot)
    }

    fn seal_quotes(&self, buf: &mut BytesMut, mark: QuotesMark) -> u64 {
        WsEncoder.seal_quotes(buf, mark)
    }
}
