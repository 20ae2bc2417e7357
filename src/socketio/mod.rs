//! Socket.IO v5 over Engine.IO v4 at `/socket.io/`, served by tickerfeed itself: `socketioxide`
//! is a tower service and cannot be mounted in actix-web, and the protocol's server side is
//! small. A Socket.IO client (`io()`, python-socketio) subscribes with events and receives
//! protocol v1's messages as events, through the same session core as `/ws` and `/sse`.
//!
//! - [`packet`]: the wire codec — Engine.IO packets and polling payloads, Socket.IO packets.
//!   Pure: no I/O, no session state.
//! - [`events`]: a client's events read as protocol v1 requests.
//! - [`encoder`]: protocol v1's messages written as Socket.IO packets (acks and events), over
//!   WebSocket frames or polling records.
//! - [`transport`]: a session's Socket.IO side — CONNECT, packets in, the close — over a link.
//! - [`polling`]: HTTP long-polling sessions and their upgrade to WebSocket.
//! - [`settings`]: pingInterval, pingTimeout and maxPayload.
//!
//! This module routes a request by its query (`EIO`, `transport`, `sid`): a WebSocket without
//! `sid` is a session of its own on its worker; a GET without `sid` opens a polling session;
//! with `sid`, a GET polls, a POST sends, and a WebSocket upgrades that session. Anything else
//! is refused with 400 naming what is wrong (an unknown sid, `EIO` other than 4, an unknown
//! transport); the connection limit and shutdown refuse with 503, as on `/ws`. Invariant: a
//! session, however it was opened, holds one place in the connection limit and is in the
//! polling registry only while it is open.

pub(crate) mod encoder;
pub(crate) mod events;
pub(crate) mod packet;
pub(crate) mod polling;
pub(crate) mod settings;
pub(crate) mod transport;

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;

use self::encoder::{Records, SioEncoder, WsFrames};
use self::packet::{OpenPacket, decode_payload};
use self::polling::{Pulled, Registry};
use self::settings::SocketIoSettings;
use self::transport::{ConnectAuth, SioTransport, WsLink, random_id};
use crate::api_error::{ApiError, ApiErrorCode, excerpt};
use crate::bus::SessionSignal;
use crate::metrics::TransportKind;
use crate::session::handover;
use crate::session::output::{OutboundBody, Output, SharedOutput};
use crate::session::socket::SocketProbe;
use crate::session::task::{InitialSubscription, InputError, Session};
use crate::session::{SessionContext, TokenAt};
use crate::ws::inbound::InboundStream;

/// The Socket.IO endpoint's own state, shared by every worker.
pub(crate) struct SocketIo {
    pub settings: SocketIoSettings,
    registry: Arc<Registry>,
}

impl SocketIo {
    pub(crate) fn new(settings: SocketIoSettings) -> SocketIo {
        SocketIo { settings, registry: Arc::new(Registry::default()) }
    }

    /// Entries of the polling registry, by sid (watched as the client map `socketio_sids`).
    pub(crate) fn sessions(&self) -> usize {
        self.registry.len()
    }

    /// The handshake's `open` packet for session `sid`.
    fn open_packet(&self, sid: &str, upgrades: &[&str], out: &mut BytesMut) {
        OpenPacket {
            sid,
            upgrades,
            ping_interval: self.settings.socketio_ping_interval_ms,
            ping_timeout: self.settings.socketio_ping_timeout_ms,
            max_payload: self.settings.socketio_max_payload as u64,
        }
        .encode(out);
    }
}

/// The query parameters Engine.IO's requests carry, and the subscription a client may ask for.
struct EngineQuery {
    transport: String,
    sid: Option<String>,
    initial: InitialSubscription,
}

/// Reads the query: `EIO=4` and a known `transport` are required. `symbols`, `throttle_ms` and
/// `align` subscribe at CONNECT as on `/ws`; other parameters are the application's (socket.io-client's
/// `query` option) and are ignored, as are Engine.IO's `t` (cache busting) and `b64`.
fn engine_query(req: &HttpRequest) -> Result<EngineQuery, ApiError> {
    let bad = |message: String| ApiError::new(ApiErrorCode::BadRequest, message);
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map_err(|e| bad(format!("Engine.IO: query string: {e}")))?.into_inner();
    let value = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    match value("EIO").as_deref() {
        Some("4") => {}
        Some(other) => {
            return Err(bad(format!(
                "Engine.IO: unsupported protocol version EIO={}; tickerfeed speaks EIO=4 (socket.io-client 3 and later, python-socketio 5)",
                excerpt(other, 16)
            )));
        }
        None => return Err(bad("Engine.IO: missing query parameter EIO (EIO=4)".into())),
    }
    let transport = match value("transport") {
        Some(t) if t == "polling" || t == "websocket" => t,
        Some(other) => return Err(bad(format!("Engine.IO: unknown transport '{}'; expected polling or websocket", excerpt(&other, 32)))),
        None => return Err(bad("Engine.IO: missing query parameter transport (polling or websocket)".into())),
    };
    let sid = value("sid");
    let subscription = pairs.into_iter().filter(|(name, _)| matches!(name.as_str(), "symbols" | "throttle_ms" | "align")).collect();
    Ok(EngineQuery { transport, sid, initial: InitialSubscription::from_pairs(subscription, "/socket.io/") })
}

/// Every request to `/socket.io/`. Every answer but a WebSocket's 101 carries the CORS headers,
/// refusals included, so that a page on another origin can read why it was refused.
pub(crate) async fn endpoint(req: HttpRequest, body: web::Payload, context: web::Data<SessionContext>, sio: web::Data<SocketIo>) -> HttpResponse {
    // Every request, not only the handshake: a page that may not open a session may not poll
    // or post to one either (and is told so without CORS headers: its script cannot read it).
    if let Err(refusal) = context.access.check_origin(&req) {
        context.metrics.disconnected(crate::metrics::DisconnectReason::Refused);
        return refusal.error_response();
    }
    if req.method() == Method::OPTIONS {
        return preflight(&req);
    }
    let response = route(req.clone(), body, context, sio).await.unwrap_or_else(|error| error.error_response());
    if response.status() == StatusCode::SWITCHING_PROTOCOLS { response } else { with_cors(response, &req) }
}

/// Routes a request by its query and method (see the module's doc).
async fn route(req: HttpRequest, body: web::Payload, context: web::Data<SessionContext>, sio: web::Data<SocketIo>) -> actix_web::Result<HttpResponse> {
    let query = engine_query(&req)?;
    let (context, sio) = (context.into_inner(), sio.into_inner());
    let unknown = |sid: &str| ApiError::new(ApiErrorCode::BadRequest, format!("Engine.IO: unknown session id '{}' (closed, or never opened here)", excerpt(sid, 32)));
    let response = match (query.transport.as_str(), query.sid, req.method().clone()) {
        ("websocket", None, Method::GET) => return open_websocket(&req, &context, &sio, query.initial),
        ("websocket", Some(sid), Method::GET) => {
            let handle = sio.registry.get(&sid).ok_or_else(|| unknown(&sid))?;
            if handle.mode() != polling::Mode::Polling {
                return Err(ApiError::new(ApiErrorCode::BadRequest, "Engine.IO: this session is already upgrading or upgraded").into());
            }
            let (accepted, input) = handover::accept(&req)?;
            let stream = InboundStream::new(input, sio.settings.socketio_max_payload);
            let probe = req.conn_data::<SocketProbe>().copied();
            return Ok(accepted.respond(polling::upgrade(handle, stream, probe)));
        }
        ("polling", None, Method::GET) => {
            let pulled = open_polling(&req, &context, &sio, query.initial).await?;
            poll_response(pulled)
        }
        ("polling", Some(sid), Method::GET) => {
            let handle = sio.registry.get(&sid).ok_or_else(|| unknown(&sid))?;
            match polling::poll(&handle).await {
                Ok(Pulled::End) => return Err(unknown(&sid).into()),
                Ok(Pulled::Upgraded) => return Err(ApiError::new(ApiErrorCode::BadRequest, "Engine.IO: this session has upgraded to WebSocket: it is not polled any more").into()),
                Ok(pulled) => poll_response(pulled),
                Err(why) => return Err(ApiError::new(ApiErrorCode::BadRequest, format!("Engine.IO: {why}")).into()),
            }
        }
        ("polling", Some(sid), Method::POST) => {
            let handle = sio.registry.get(&sid).ok_or_else(|| unknown(&sid))?;
            let payload = read_body(body, sio.settings.socketio_max_payload).await?;
            let text = match std::str::from_utf8(&payload) {
                Ok(text) => text,
                Err(_) => {
                    polling::fail(&handle, InputError::InvalidUtf8("a polling request body"));
                    return Err(ApiError::new(ApiErrorCode::BadRequest, "Engine.IO: the request body is not UTF-8 (the session is closed)").into());
                }
            };
            if let Err(error) = decode_payload(text) {
                polling::fail(&handle, InputError::Malformed(error.to_string()));
                return Err(ApiError::new(ApiErrorCode::BadRequest, format!("Engine.IO: {error} (the session is closed)")).into());
            }
            match polling::post(&handle, payload).await {
                Ok(true) => HttpResponse::Ok().content_type("text/html").body("ok"),
                Ok(false) => return Err(unknown(&sid).into()),
                Err(why) => return Err(ApiError::new(ApiErrorCode::BadRequest, format!("Engine.IO: {why}")).into()),
            }
        }
        (_, None, Method::POST) => return Err(ApiError::new(ApiErrorCode::BadRequest, "Engine.IO: a POST needs the sid of a polling session").into()),
        ("websocket", _, _) => return Err(ApiError::new(ApiErrorCode::BadRequest, "Engine.IO: a WebSocket is opened with GET").into()),
        _ => {
            return Err(ApiError::new(ApiErrorCode::MethodNotAllowed, format!("Engine.IO: {} is not a polling request (GET polls, POST sends)", req.method()))
                .with_header(header::ALLOW, HeaderValue::from_static(ALLOW))
                .into());
        }
    };
    Ok(response)
}

/// Methods `/socket.io/` takes.
pub(crate) const ALLOW: &str = "GET, POST, OPTIONS";

/// The answer to a poll.
fn poll_response(pulled: Pulled) -> HttpResponse {
    let body = match pulled {
        // Records start with their separator: the payload is the records less the first byte.
        Pulled::Records(records) | Pulled::Close(records) => records.slice(1..),
        Pulled::Noop => Bytes::from_static(b"6"),
        Pulled::End | Pulled::Upgraded => Bytes::from_static(b"1"),
    };
    HttpResponse::Ok().content_type("text/plain; charset=UTF-8").insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store"))).body(body)
}

/// Polling requests may come from a page on another origin, as a WebSocket may: an origin that
/// `--allowed-origins` allows (the only ones that get this far) is named in the answer.
fn with_cors(mut response: HttpResponse, req: &HttpRequest) -> HttpResponse {
    let headers = response.headers_mut();
    match req.headers().get(header::ORIGIN) {
        // Echoed with credentials allowed, so that `withCredentials: true` works too.
        Some(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }
    response
}

/// A CORS preflight (a polling client with extra headers).
fn preflight(req: &HttpRequest) -> HttpResponse {
    let mut response = HttpResponse::build(StatusCode::NO_CONTENT);
    response.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST")));
    if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone()));
    }
    response.insert_header((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400")));
    with_cors(response.finish(), req)
}

/// A POST body, at most `limit` bytes (413 beyond, without reading the rest).
async fn read_body(mut body: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let too_big = || ApiError::new(ApiErrorCode::PayloadTooLarge, format!("Engine.IO: the request body is over maxPayload ({limit} bytes)"));
    let mut all = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| crate::api_error::body_read_error("Engine.IO: the request body", &e))?;
        if all.len() + chunk.len() > limit {
            return Err(too_big());
        }
        all.extend_from_slice(&chunk);
    }
    if all.is_empty() {
        return Err(ApiError::new(ApiErrorCode::BadRequest, "Engine.IO: empty request body (a POST carries packets)"));
    }
    Ok(all.freeze())
}

/// A session on a WebSocket opened with `transport=websocket`.
fn open_websocket(req: &HttpRequest, context: &Arc<SessionContext>, sio: &SocketIo, initial: InitialSubscription) -> actix_web::Result<HttpResponse> {
    let admission = context.admit(req, TokenAt::Connect)?;
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(ApiError::new(ApiErrorCode::BadRequest, "a WebSocket upgrade request has no body: remove its Transfer-Encoding header").into());
    }
    let (accepted, input) = handover::accept(req)?;
    let probe = req.conn_data::<SocketProbe>().copied();
    let stream = InboundStream::new(input, sio.settings.socketio_max_payload);
    let signal = Arc::new(SessionSignal::default());
    let output = SharedOutput::new(Output::new(SioEncoder::<WsFrames>::default(), context.clone(), signal.clone(), tokio::time::Instant::now()));
    let sid = random_id();
    output.with(|o| o.queue(SioEncoder::<WsFrames>::packet(|buf| sio.open_packet(&sid, &[], buf))));
    let response = accepted.respond(OutboundBody::new(output.clone(), signal));
    context.metrics.connection_opened(TransportKind::SocketioWebsocket);
    let transport = SioTransport::new(WsLink::new(stream, probe), &sio.settings, &context.limits, connect_auth(req, context));
    let session = Session::new(context.clone(), admission, output);
    actix_web::rt::spawn(session.run(transport, initial));
    Ok(response)
}

/// What the session's CONNECT is checked with: the handshake's token, if it carried one.
fn connect_auth(req: &HttpRequest, context: &SessionContext) -> ConnectAuth {
    ConnectAuth { access: context.access.clone(), handshake_token: crate::access::request_token(req) }
}

/// Opens a polling session on this worker and answers its handshake GET (the `open` packet).
async fn open_polling(req: &HttpRequest, context: &Arc<SessionContext>, sio: &SocketIo, initial: InitialSubscription) -> Result<Pulled, ApiError> {
    let admission = context.admit(req, TokenAt::Connect)?;
    let sid = random_id();
    let signal = Arc::new(SessionSignal::default());
    let output = SharedOutput::new(Output::new(SioEncoder::<Records>::default(), context.clone(), signal.clone(), tokio::time::Instant::now()));
    output.with(|o| o.queue(SioEncoder::<Records>::packet(|buf| sio.open_packet(&sid, &["websocket"], buf))));
    let (link, pump) = polling::open(&sio.registry, sid.clone(), context.metrics.clone());
    let handle = sio.registry.get(&sid).expect("just registered");
    context.metrics.connection_opened(TransportKind::SocketioPolling);
    actix_web::rt::spawn(polling::pump(output.clone(), signal, pump));
    let transport = SioTransport::new(link, &sio.settings, &context.limits, connect_auth(req, context));
    let session = Session::new(context.clone(), admission, output);
    actix_web::rt::spawn(session.run(transport, initial));
    match polling::poll(&handle).await {
        Ok(pulled) => Ok(pulled),
        Err(why) => Err(ApiError::new(ApiErrorCode::BadRequest, format!("Engine.IO: {why}"))),
    }
}
