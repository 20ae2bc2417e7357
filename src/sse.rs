//! Server-Sent Events at `GET /sse?symbols=AAPL,MSFT&throttle_ms=500[&align=1]`: protocol v1 one way,
//! for `curl -N`, a browser `EventSource` or any HTTP client, through any proxy.
//!
//! The response is a `text/event-stream` whose events are protocol v1's messages, each named by
//! its `type` and carrying the same JSON as on `/ws`: `welcome`, `subscribed` (with `rejected`),
//! `quotes` (snapshot first), `feed`, `error`. The subscription is the query string's, fixed
//! for the connection (a stream has no way back); a request whose every symbol is rejected
//! still streams, so the client sees why. A `: keep-alive` comment goes out every
//! `ping_interval`, and `retry:` tells an `EventSource` to reconnect after a second; a
//! reconnecting client gets snapshots again (per-symbol seqs do not fit one event id).
//!
//! Same session core as `/ws` ([`crate::session`]): the connection limit, the symbol limit, the
//! throttle clamp, and the pull-based output — events are produced only when actix-http asks
//! for data, so a client that stops reading costs one write buffer and is closed as a slow
//! consumer like any other. The client never writes, so silence is not idleness: a stream
//! ends when the client closes it (the response body is dropped), at shutdown, or when it is
//! a slow consumer.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{BufMut, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api_error::ApiError;
use crate::bus::SessionSignal;
use crate::metrics::TransportKind;
use crate::session::output::{Encoder, OutboundBody, Output, QuotesMark, SharedOutput};
use crate::session::protocol::{QUOTES_JSON_PREFIX, QUOTES_JSON_SUFFIX, SNAPSHOT_JSON_PREFIX, ServerMessage};
use crate::session::socket::SocketProbe;
use crate::session::task::{End, InitialSubscription, Input, InputError, Session, Transport};
use crate::session::{SessionContext, TokenAt};

/// Milliseconds an `EventSource` waits before reconnecting (its `retry:` field).
const RETRY_MS: u32 = 1000;

/// Protocol v1 as Server-Sent Events: `event: <type>` and the `/ws` JSON in one `data:` line
/// (JSON holds no raw newline, so one line always does).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SseEncoder;

/// What precedes a quote batch's JSON: the event's name and its data field.
const QUOTES_EVENT: &[u8] = b"event: quotes\ndata: ";

impl Encoder for SseEncoder {
    const QUOTES_SUFFIX: &'static [u8] = QUOTES_JSON_SUFFIX;

    fn reply(&self, buf: &mut BytesMut, message: &ServerMessage<'_>) {
        buf.put_slice(b"event: ");
        buf.put_slice(message.kind().as_bytes());
        buf.put_slice(b"\ndata: ");
        buf.put_slice(message.to_json().as_bytes());
        buf.put_slice(b"\n\n");
    }

    fn heartbeat(&self, buf: &mut BytesMut) {
        buf.put_slice(b": keep-alive\n\n");
    }

    fn open_quotes(&self, buf: &mut BytesMut, max: usize, snapshot: bool) -> QuotesMark {
        let start = buf.len();
        buf.reserve(max + 16);
        // The event's name and field are framing: the batch's payload (what `max` bounds, as
        // a frame's payload on /ws) starts at its JSON.
        buf.put_slice(QUOTES_EVENT);
        let payload_start = buf.len();
        buf.put_slice(if snapshot { SNAPSHOT_JSON_PREFIX } else { QUOTES_JSON_PREFIX });
        QuotesMark { start, payload_start }
    }

    fn seal_quotes(&self, buf: &mut BytesMut, mark: QuotesMark) -> u64 {
        buf.put_slice(QUOTES_JSON_SUFFIX);
        buf.put_slice(b"\n\n");
        (buf.len() - mark.start) as u64
    }
}

/// An SSE connection: nothing to read; it ends when its response body is dropped.
pub(crate) struct SseTransport {
    output: SharedOutput<SseEncoder>,
    probe: Option<SocketProbe>,
}

impl Transport for SseTransport {
    type Encoder = SseEncoder;
    const HEARS_CLIENT: bool = false;

    async fn recv(&mut self) -> Option<Result<Input, InputError>> {
        // The client never writes; the stream is over when actix-http drops the body.
        std::future::poll_fn(|cx| self.output.with(|o| o.poll_body_gone(cx))).await;
        None
    }

    async fn close(self, output: &SharedOutput<SseEncoder>, signal: &SessionSignal, end: &End) -> TransportKind {
        // An event stream has no close message: the body ends (the client's EventSource then
        // reconnects after `retry`, to a server that is back or to a 503 while it is not).
        output.with(|o| o.begin_close(None));
        signal.wake();
        if matches!(end, End::SlowConsumer | End::Fault { code: None }) {
            // Its write buffer is full and the kernel takes nothing: the end of the body would
            // never reach it.
            if let Some(probe) = self.probe {
                probe.force_close();
            }
        }
        TransportKind::Sse
    }
}

/// `GET /sse`: starts the session and answers with its event stream.
pub(crate) async fn stream(req: HttpRequest, context: web::Data<SessionContext>) -> Result<HttpResponse, ApiError> {
    let context = context.into_inner();
    let admission = context.admit(&req, TokenAt::Handshake)?;
    let mut initial = InitialSubscription::from_query(req.query_string(), "/sse");
    // A stream cannot subscribe later: it is always answered with `subscribed`, and told when
    // it asked for nothing.
    initial.requested = true;
    if initial.symbols.is_empty() {
        initial.problems.push("no symbols: ask for them in the URL, /sse?symbols=AAPL,MSFT&throttle_ms=500".into());
    }
    let probe = req.conn_data::<SocketProbe>().copied();
    let signal = Arc::new(SessionSignal::default());
    let output = SharedOutput::new(Output::new(SseEncoder, context.clone(), signal.clone(), tokio::time::Instant::now()));
    output.with(|o| o.queue(Bytes::from(format!("retry: {RETRY_MS}\n\n"))));
    let body = OutboundBody::new(output.clone(), signal);
    context.metrics.connection_opened(TransportKind::Sse);
    let session = Session::new(context, admission, output.clone());
    actix_web::rt::spawn(session.run(SseTransport { output, probe }, initial));
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        // Proxies that buffer responses (nginx) would hold events back.
        .insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")));
    // An `EventSource` is subject to CORS: a page whose origin was admitted (the allow-list
    // applies to every transport alike) may read the stream.
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())).insert_header((header::VARY, HeaderValue::from_static("Origin")));
    }
    Ok(response.body(body))
}
