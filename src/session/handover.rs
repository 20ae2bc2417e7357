//! A WebSocket connection handed over by actix-http: the session writes to the socket and reads
//! from it itself.
//!
//! Why: actix-http writes a response body by copying each chunk into a write buffer of the
//! connection's own (8 KiB at accept, up to its threshold and one chunk more), and reads into a
//! read buffer of its own. For a WebSocket that lives for hours, that is two buffers per
//! connection and a copy of every frame the session does not need.
//!
//! How: the listener's upgrade service (`http::upgrade`) passes each WebSocket upgrade request
//! to the app as usual, marked [`Upgradable`]. A handler that accepts one ([`accept`]) answers
//! with [`Accepted::respond`], whose 101 carries a [`Handover`]: the session's output body and
//! the sending end of its input. The upgrade service writes the 101 head and calls
//! [`Handover::run`] with the connection's socket.
//!
//! [`Handover::run`] writes each chunk the output produces straight to the socket. Only what
//! the socket does not take at once is copied, into a buffer of the connection's own, and the
//! output is not asked for more until that has gone: the same backpressure as actix-http's
//! (being asked is the sign that the client keeps up). What the client sends is read into a
//! per-thread buffer and handed to the session's input stream as it arrives; reading pauses while
//! the stream holds [`INPUT_BUFFER_BYTES`] not yet decoded.
//!
//! Invariants:
//! - A connection's own memory is the unsent tail of at most one chunk (nothing while the client
//!   keeps up) plus its input not yet decoded (at most [`INPUT_BUFFER_BYTES`] and one read).
//! - The connection ends once both sides are done: the output has ended (its close went out)
//!   and the input has ended (the client's end of stream, an error, or the session no longer
//!   reading). The session's own rules (`task`, `ws::transport`) bound how long that takes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::{Buf, Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::alarm::{self, Hint};
use crate::api_error::{ApiError, ApiErrorCode};

/// Above this many bytes of input not yet decoded, the connection reads nothing more from the
/// client until the session has taken them (TCP flow control then slows the client down).
pub(crate) const INPUT_BUFFER_BYTES: usize = 32 * 1024;
/// The per-thread buffer each read lands in before its bytes go to the session's input.
const READ_BYTES: usize = 16 * 1024;
/// Chunks a connection writes per poll at most before it lets its worker run other tasks.
const CHUNKS_PER_POLL: usize = 4;

thread_local! {
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
}

/// Marks a request whose connection can be handed over: the listener's upgrade service sets it
/// on every WebSocket upgrade request it passes to the app.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upgradable;

/// A WebSocket upgrade a handler accepted: its 101 response, not yet sent, and the sending end
/// of the session's input.
pub(crate) struct Accepted {
    response: actix_http::ResponseBuilder,
    input: Rc<RefCell<Pipe>>,
}

/// Accepts the WebSocket upgrade `req` (RFC 6455 §4.2.2): returns the handshake's answer, to
/// send with [`Accepted::respond`], and the client's byte stream for the session's decoder.
/// Refused with 400 if the request is not a valid WebSocket handshake, or did not come through
/// the listener's upgrade service (then the connection cannot be handed over).
pub(crate) fn accept(req: &HttpRequest) -> actix_web::Result<(Accepted, Payload)> {
    if req.extensions().get::<Upgradable>().is_none() {
        return Err(ApiError::new(ApiErrorCode::BadRequest, "not a WebSocket upgrade: send 'Connection: Upgrade' and 'Upgrade: websocket' (and no request body)").into());
    }
    let response = actix_http::ws::handshake(req.head())?;
    let input = Rc::new(RefCell::new(Pipe::default()));
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(InputStream(input.clone()));
    Ok((Accepted { response, input }, Payload::from(stream)))
}

impl Accepted {
    /// The 101 answer, carrying the [`Handover`] of the connection to `output` (the session's
    /// frames, pulled as the socket takes them; its end is the end of the output).
    pub(crate) fn respond(mut self, output: impl MessageBody + 'static) -> HttpResponse {
        let mut response = self.response.finish();
        response.extensions_mut().insert(Handover { output: BoxBody::new(output), input: self.input });
        HttpResponse::from(response.map_into_boxed_body())
    }
}

/// What a 101 response leaves for the upgrade service: the session's output and input.
pub(crate) struct Handover {
    output: BoxBody,
    input: Rc<RefCell<Pipe>>,
}

impl Handover {
    /// Serves the connection until both its sides are done (see the module's doc). `head`
    /// holds bytes to send first (the 101's head); `read` holds what the client sent after its
    /// request head, already read from the socket.
    /// Once the client's stream has ended, the output has `linger` to finish (its close
    /// frame), or none if the socket is already full: the client will not read it.
    pub(crate) async fn run<T: AsyncRead + AsyncWrite + Unpin>(self, io: T, head: BytesMut, read: BytesMut, linger: Duration) {
        let Handover { output, input } = self;
        // Neither of actix-http's buffers is kept (each was allocated at its full size): what
        // they hold is copied, and they are freed before the connection's life begins.
        if !read.is_empty() {
            input.borrow_mut().push(Bytes::copy_from_slice(&read));
        }
        drop(read);
        let unsent = BytesMut::from(&head[..]);
        drop(head);
        let mut connection = Connection { io, unsent, output: Some(output), input: Some(input), flushed: true, linger, last_call: None };
        std::future::poll_fn(|cx| connection.poll(cx)).await;
    }
}

struct Connection<T> {
    io: T,
    /// What the socket has not taken yet, sent before the output is asked for more.
    unsent: BytesMut,
    /// `None` once it has ended (or the socket failed).
    output: Option<BoxBody>,
    /// `None` once the client's stream has ended (or the session stopped reading it).
    input: Option<Rc<RefCell<Pipe>>>,
    /// Whether everything written has been flushed (TLS holds records until flushed).
    flushed: bool,
    linger: Duration,
    /// Once the input has ended: when the output must be done.
    last_call: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_output(cx);
        self.poll_input(cx);
        if self.input.is_none() && self.output.is_some() {
            // The client's stream has ended (or the session forced the socket shut): what it
            // has not taken so far it never will.
            let linger = self.linger;
            if !self.unsent.is_empty() || self.last_call.get_or_insert_with(|| Box::pin(tokio::time::sleep(linger))).as_mut().poll(cx).is_ready() {
                self.output = None;
            }
        }
        if self.output.is_none() && self.input.is_none() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Writes what is unsent, then what the output produces, until the socket or the output
    /// has nothing more to give.
    fn poll_output(&mut self, cx: &mut Context<'_>) {
        let mut chunks = 0;
        while self.output.is_some() {
            if chunks == CHUNKS_PER_POLL {
                // A session whose output never runs dry (a `trades` backlog read as fast as a
                // loopback client takes it) would otherwise keep its worker for as long as the
                // socket takes data, and the worker's other sessions, accepts and handshakes
                // would wait: it yields, and is polled again after them.
                cx.waker().wake_by_ref();
                return;
            }
            if !self.unsent.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.unsent) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.unsent.advance(n);
                        if self.unsent.is_empty() {
                            // Its memory goes back as soon as it is sent: a connection that
                            // keeps up holds none.
                            self.unsent = BytesMut::new();
                        }
                        self.flushed = false;
                        continue;
                    }
                    Poll::Pending => return,
                    Poll::Ready(_) => return self.fail(),
                }
            }
            // What a wake-up of this connection touches first: itself, then its input's pipe.
            let hints = [Hint::of(self, size_of::<Self>().div_ceil(64)), self.input.as_deref().map_or(Hint::default(), |pipe| Hint::of(pipe, 1))];
            let Some(output) = self.output.as_mut() else { return };
            match alarm::polling_with(hints, || Pin::new(output).poll_next(cx)) {
                Poll::Ready(Some(Ok(chunk))) => {
                    chunks += 1;
                    self.write(cx, chunk);
                }
                Poll::Ready(Some(Err(_))) => return self.fail(),
                Poll::Ready(None) => {
                    // The close went out (or there is none): flush it, then the output is done.
                    if !self.flushed && Pin::new(&mut self.io).poll_flush(cx).is_pending() {
                        return;
                    }
                    self.output = None;
                }
                Poll::Pending => {
                    if !self.flushed
                        && let Poll::Ready(result) = Pin::new(&mut self.io).poll_flush(cx)
                    {
                        self.flushed = result.is_ok();
                    }
                    return;
                }
            }
        }
    }

    /// Writes `chunk` straight to the socket; what it does not take waits in `unsent`.
    fn write(&mut self, cx: &mut Context<'_>, chunk: Bytes) {
        let written = match Pin::new(&mut self.io).poll_write(cx, &chunk) {
            Poll::Ready(Ok(n)) => n,
            Poll::Pending => 0,
            Poll::Ready(Err(_)) => return self.fail(),
        };
        self.flushed = false;
        if written < chunk.len() {
            self.unsent.extend_from_slice(&chunk[written..]);
        }
    }

    /// The socket failed: nothing more can be written, and the session hears that its client
    /// is gone (its input ends with the error).
    fn fail(&mut self) {
        self.output = None;
        self.unsent = BytesMut::new();
        if let Some(input) = self.input.take() {
            input.borrow_mut().end(Some(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
    }

    /// Reads what the client sent into the session's input, while the session takes it.
    fn poll_input(&mut self, cx: &mut Context<'_>) {
        while let Some(input) = &self.input {
            {
                let mut pipe = input.borrow_mut();
                if pipe.reader_gone {
                    drop(pipe);
                    self.input = None;
                    return;
                }
                if pipe.buffered >= INPUT_BUFFER_BYTES {
                    pipe.writer = Some(cx.waker().clone());
                    return;
                }
            }
            let read = READ_SCRATCH.with_borrow_mut(|scratch| {
                let mut buf = ReadBuf::new(scratch);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok((!buf.filled().is_empty()).then(|| Bytes::copy_from_slice(buf.filled())))),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match read {
                Poll::Pending => return,
                Poll::Ready(Ok(Some(bytes))) => input.borrow_mut().push(bytes),
                Poll::Ready(Ok(None)) => {
                    input.borrow_mut().end(None);
                    self.input = None;
                }
                Poll::Ready(Err(e)) => {
                    input.borrow_mut().end(Some(e));
                    self.input = None;
                }
            }
        }
    }
}

/// The client's bytes between the connection (which pushes them) and the session's input
/// stream (which takes them), on one worker thread.
#[derive(Default)]
struct Pipe {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// The stream's end: `Some(None)` at the client's end of stream, `Some(Some(e))` on error.
    end: Option<Option<io::Error>>,
    /// The session, waiting for bytes.
    reader: Option<Waker>,
    /// The connection, waiting for the session to take some.
    writer: Option<Waker>,
    reader_gone: bool,
}

impl Pipe {
    fn push(&mut self, bytes: Bytes) {
        self.buffered += bytes.len();
        self.chunks.push_back(bytes);
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn end(&mut self, error: Option<io::Error>) {
        self.end.get_or_insert(error);
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

/// The session's end of its [`Pipe`]: the stream its WebSocket decoder reads.
struct InputStream(Rc<RefCell<Pipe>>);

impl Stream for InputStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut pipe = self.0.borrow_mut();
        if let Some(bytes) = pipe.chunks.pop_front() {
            pipe.buffered -= bytes.len();
            if let Some(waker) = pipe.writer.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(bytes)));
        }
        match pipe.end.as_mut() {
            Some(None) => Poll::Ready(None),
            Some(Some(error)) => {
                let error = io::Error::new(error.kind(), error.to_string());
                pipe.end = Some(None);
                Poll::Ready(Some(Err(PayloadError::Io(error))))
            }
            None => {
                pipe.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for InputStream {
    fn drop(&mut self) {
        let mut pipe = self.0.borrow_mut();
        pipe.reader_gone = true;
        pipe.chunks.clear();
        pipe.buffered = 0;
        if let Some(waker) = pipe.writer.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use actix_web::body::BodySize;
    use actix_web::test::TestRequest;
    use futures_util::{FutureExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// An output of `count` chunks of `size` bytes, counting those taken.
    struct Chunks {
        size: usize,
        count: usize,
        taken: Rc<Cell<usize>>,
    }

    impl MessageBody for Chunks {
        type Error = Infallible;

        fn size(&self) -> BodySize {
            BodySize::Stream
        }

        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
            let this = self.get_mut();
            if this.taken.get() == this.count {
                return Poll::Ready(None);
            }
            this.taken.set(this.taken.get() + 1);
            Poll::Ready(Some(Ok(Bytes::from(vec![b'x'; this.size]))))
        }
    }

    /// A handover whose output is `output`, as a handler makes it, and the session's input.
    fn handover(output: impl MessageBody + 'static) -> (Handover, Payload) {
        let req = TestRequest::get()
            .insert_header(("connection", "upgrade"))
            .insert_header(("upgrade", "websocket"))
            .insert_header(("sec-websocket-version", "13"))
            .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_request();
        req.extensions_mut().insert(Upgradable);
        let (accepted, input) = accept(&req).expect("a valid handshake is accepted");
        let mut response = accepted.respond(output);
        assert_eq!(response.status().as_u16(), 101);
        let handover = response.extensions_mut().remove::<Handover>().expect("the 101 carries the handover");
        (handover, input)
    }

    /// Lets the connection's task run until it waits on something only the test can change
    /// (in-memory sockets on one thread: a few turns reach that state).
    async fn settle() {
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
    }

    fn serve(handover: Handover, server: DuplexStream) -> tokio::task::JoinHandle<()> {
        actix_web::rt::spawn(handover.run(server, BytesMut::from(&b"HEAD"[..]), BytesMut::new(), Duration::from_secs(1)))
    }

    #[test]
    fn a_request_that_did_not_come_through_the_upgrade_service_is_refused() {
        let req = TestRequest::get().insert_header(("connection", "upgrade")).insert_header(("upgrade", "websocket")).to_http_request();
        let error = accept(&req).err().expect("refused");
        assert_eq!(error.as_response_error().status_code().as_u16(), 400);
        assert!(error.to_string().contains("Upgrade: websocket"), "{error}");
    }

    #[actix_web::test]
    async fn the_output_is_asked_for_more_only_once_the_socket_took_what_it_gave() {
        let taken = Rc::new(Cell::new(0));
        let (handover, _input) = handover(Chunks { size: 4096, count: 100, taken: taken.clone() });
        // The client's socket holds 1,000 bytes and it does not read.
        let (mut client, server) = tokio::io::duplex(1000);
        let task = serve(handover, server);
        settle().await;
        assert_eq!(taken.get(), 1, "one chunk taken, and its unsent tail waits: the output is not asked again");
        // The client reads: the head first, then the chunks, each asked for as the last went out.
        let mut head = [0u8; 4];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HEAD");
        let mut body = vec![0u8; 100 * 4096];
        client.read_exact(&mut body).await.unwrap();
        assert!(body.iter().all(|&b| b == b'x'));
        assert_eq!(taken.get(), 100);
        // The output has ended; the connection ends with the client's end of stream.
        drop(client);
        task.await.unwrap();
    }

    #[actix_web::test]
    async fn reading_pauses_while_the_session_does_not_take_the_input() {
        let (handover, mut input) = handover(Chunks { size: 1, count: 0, taken: Rc::new(Cell::new(0)) });
        let capacity = 4096;
        let (mut client, server) = tokio::io::duplex(capacity);
        let task = serve(handover, server);
        // The client writes until nothing more is taken.
        let block = vec![7u8; 1024];
        let mut written = 0usize;
        loop {
            settle().await;
            match client.write(&block).now_or_never() {
                Some(Ok(n)) => written += n,
                Some(Err(e)) => panic!("the connection failed: {e}"),
                None => break,
            }
            assert!(written < 1 << 20, "{written} bytes taken from a client whose session reads nothing");
        }
        let held = written - capacity;
        assert!((INPUT_BUFFER_BYTES..INPUT_BUFFER_BYTES + READ_BYTES).contains(&held), "the connection holds {held} bytes of input");
        // The session reads: every byte arrives, in order, and the client can write again.
        let mut received = 0usize;
        while received < held {
            let chunk = input.next().await.expect("input").expect("no error");
            assert!(chunk.iter().all(|&b| b == 7));
            received += chunk.len();
        }
        settle().await;
        assert!(client.write(&block).now_or_never().is_some(), "reading resumed");
        // The client leaves: the session's input ends, and so does the connection.
        drop(client);
        while let Some(chunk) = input.next().await {
            chunk.expect("an end of stream, not an error");
        }
        task.await.unwrap();
    }

    #[actix_web::test]
    async fn a_client_that_left_while_output_was_unsent_ends_the_connection_at_once() {
        let taken = Rc::new(Cell::new(0));
        let (handover, mut input) = handover(Chunks { size: 4096, count: usize::MAX, taken: taken.clone() });
        let (client, server) = tokio::io::duplex(1000);
        let task = serve(handover, server);
        settle().await;
        drop(client);
        task.await.unwrap();
        assert_eq!(taken.get(), 1);
        // The session hears that its client is gone.
        while let Some(Ok(_)) = input.next().await {}
    }
}
