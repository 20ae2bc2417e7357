//! The listener's upgrade service: every WebSocket upgrade request, and the connection under it.
//!
//! actix-http hands a request that asks for a WebSocket (`Connection: Upgrade`,
//! `Upgrade: websocket`) to this service with the connection itself, instead of to the app.
//! The service passes the request on to the app all the same, marked
//! [`Upgradable`](crate::session::handover::Upgradable), so that admission (origin, token,
//! connection limits), routing and the refusals stay the handlers' and the middleware's. Then:
//! - an answer carrying a [`Handover`] (a handler accepted the upgrade): its 101 head is written
//!   and the connection is the session's from then on (`session::handover`);
//! - any other answer (a refusal, a path that does not upgrade): it is sent with
//!   `Connection: close`, the write side is shut, and what the client still sends is read and
//!   dropped for at most the disconnect timeout, so that the answer is not lost to a reset.
//!
//! Invariant: a connection that is not handed over ends within the disconnect timeout of its
//! answer being written (and the answer's writing itself is bounded by the same time).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, Encoder, Framed};
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, HttpMessage, Request, Response};
use actix_web::ResponseError;
use actix_web::dev::{AppConfig, Service, ServiceFactory, ServiceResponse};
use actix_web::web::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api_error::{ApiError, ApiErrorCode};
use crate::session::handover::{Handover, Upgradable};

/// Most bytes of a refusal's body sent on an upgrade request (the handlers' refusals are small
/// JSON objects; a route that streams is refused instead).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Makes the upgrade service of each worker, around its own instance of the app.
pub(crate) struct UpgradeFactory<F> {
    app: F,
    config: AppConfig,
    linger: Duration,
}

impl<F> UpgradeFactory<F> {
    /// `app`: the actix-web app (`App::into_factory`), `config` its configuration (scheme,
    /// host and address, as the listener's main service has them), `linger`: how long a
    /// connection that is not handed over may take to get its answer and end.
    pub(crate) fn new(app: F, config: AppConfig, linger: Duration) -> UpgradeFactory<F> {
        UpgradeFactory { app, config, linger }
    }
}

impl<T, F, B> ServiceFactory<(Request, Framed<T, Codec>)> for UpgradeFactory<F>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: ServiceFactory<Request, Config = AppConfig, Response = ServiceResponse<B>, Error = actix_web::Error, InitError = ()>,
    F::Future: 'static,
    F::Service: 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_http::Error;
    type Config = ();
    type Service = UpgradeService<F::Service>;
    type InitError = ();
    type Future = Pin<Box<dyn Future<Output = Result<Self::Service, ()>>>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(self.config.clone());
        let linger = self.linger;
        Box::pin(async move { Ok(UpgradeService { app: Rc::new(app.await?), linger }) })
    }
}

/// One worker's upgrade service (see the module's doc).
pub(crate) struct UpgradeService<S> {
    app: Rc<S>,
    linger: Duration,
}

impl<T, S, B> Service<(Request, Framed<T, Codec>)> for UpgradeService<S>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_http::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), actix_http::Error>>>>;

    actix_web::dev::always_ready!();

    fn call(&self, (req, framed): (Request, Framed<T, Codec>)) -> Self::Future {
        req.extensions_mut().insert(Upgradable);
        let app = self.app.clone();
        let linger = self.linger;
        Box::pin(async move {
            let mut response: Response<B> = match app.call(req).await {
                Ok(response) => response.into(),
                Err(error) => {
                    answer(framed, error.error_response().into(), linger).await;
                    return Ok(());
                }
            };
            let handover = response.extensions_mut().remove::<Handover>();
            match handover {
                Some(handover) => {
                    let (head, body) = response.into_parts();
                    let parts = framed.into_parts();
                    let mut codec = parts.codec;
                    let mut out = parts.write_buf;
                    if codec.encode(Message::Item((head, BodySize::None)), &mut out).is_err() {
                        return Ok(());
                    }
                    drop(codec);
                    handover.run(parts.io, out, parts.read_buf, linger).await;
                    // The answer's body (an empty one, through the middleware) ends with the
                    // session: the request counts as in flight for as long as the session runs.
                    drop(body);
                    Ok(())
                }
                None => {
                    answer(framed, response.map_into_boxed_body(), linger).await;
                    Ok(())
                }
            }
        })
    }
}

/// Sends `response` on a connection that is not handed over, then ends it (module's doc). A
/// failure only ends the connection sooner: the client has gone, or its stream is broken.
async fn answer<T, B>(framed: Framed<T, Codec>, response: Response<B>, linger: Duration)
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: MessageBody + 'static,
{
    let (mut head, body) = response.into_parts();
    let body = match body.size() {
        BodySize::None | BodySize::Sized(0) => Bytes::new(),
        BodySize::Sized(n) if n <= MAX_ANSWER_BYTES as u64 => actix_http::body::to_bytes(body).await.unwrap_or_default(),
        _ => {
            let refusal = ApiError::new(ApiErrorCode::BadRequest, "this path does not take a WebSocket upgrade: ask it without 'Upgrade: websocket'");
            let (refusal_head, refusal_body) = Response::from(refusal.error_response()).into_parts();
            head = refusal_head;
            actix_http::body::to_bytes(refusal_body).await.unwrap_or_default()
        }
    };
    head.head_mut().set_connection_type(ConnectionType::Close);
    let parts = framed.into_parts();
    let (mut codec, mut out, mut io) = (parts.codec, parts.write_buf, parts.io);
    let encoded = codec
        .encode(Message::Item((head, BodySize::Sized(body.len() as u64))), &mut out)
        .and_then(|()| if body.is_empty() { Ok(()) } else { codec.encode(Message::Chunk(Some(body)), &mut out) })
        .and_then(|()| codec.encode(Message::Chunk(None), &mut out));
    if encoded.is_err() {
        return;
    }
    let _ = tokio::time::timeout(linger, async move {
        io.write_all(&out).await?;
        io.shutdown().await?;
        // Read to the client's end of stream: closing with its bytes unread would reset the
        // connection, and the client could lose the answer.
        let mut sink = [0u8; 1024];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}
