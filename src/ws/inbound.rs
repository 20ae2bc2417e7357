//! What a client sends: WebSocket frames decoded from the upgrade request's payload, fragmented
//! messages joined.
//!
//! actix-ws offers the same through `actix_ws::handle`, but that call also builds the outgoing
//! half — a 32-message channel allocated up front (1.8 KB per connection, measured with
//! heaptrack) — which tickerfeed never uses: frames go out through [`super::outbound`]. A
//! market-data connection is mostly idle, so that channel was a tenth of its memory. Decoding
//! uses actix-http's own WebSocket codec (masking, frame limits, control-frame rules); this
//! module adds only what actix-ws adds on top: joining continuations, bounded, and the RFC 6455
//! rules about their order.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;
use bytestring::ByteString;

// actix-ws's protocol types (re-exported from actix-http): the session speaks in the same
// terms as actix-ws applications do.
pub use actix_ws::{CloseCode, CloseReason, Item, ProtocolError};

/// One message from the client, continuations joined.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// A fragmented message being joined.
struct Partial {
    text: bool,
    data: BytesMut,
}

/// The client's frames, decoded from the request payload.
pub struct InboundStream {
    payload: Payload,
    buf: BytesMut,
    codec: Codec,
    partial: Option<Partial>,
    max_message_bytes: usize,
    /// The payload has ended (or failed): decode what is buffered, then end.
    eof: bool,
    /// A protocol error was returned: nothing after it is trusted.
    failed: bool,
}

impl InboundStream {
    /// `max_frame_bytes` bounds one frame, `max_message_bytes` a joined message; beyond either
    /// the stream returns [`ProtocolError::Overflow`].
    pub fn new(payload: Payload, max_frame_bytes: usize, max_message_bytes: usize) -> InboundStream {
        InboundStream {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_frame_bytes),
            partial: None,
            max_message_bytes,
            eof: false,
            failed: false,
        }
    }

    /// The next message; `None` when the connection has ended.
    pub async fn recv(&mut self) -> Option<Result<Inbound, ProtocolError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn fail(&mut self, error: ProtocolError) -> Poll<Option<Result<Inbound, ProtocolError>>> {
        self.failed = true;
        self.partial = None;
        self.buf = BytesMut::new();
        Poll::Ready(Some(Err(error)))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Inbound, ProtocolError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        loop {
            match self.codec.decode(&mut self.buf) {
                Err(error) => return self.fail(error),
                Ok(Some(frame)) => match self.join(frame) {
                    Err(error) => return self.fail(error),
                    Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                    Ok(None) => continue,
                },
                Ok(None) => {}
            }
            if self.buf.is_empty() {
                // Holding an empty view of actix-http's read buffer would keep that buffer's
                // allocation alive on an idle connection.
                self.buf = BytesMut::new();
            }
            if self.eof {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::from(bytes);
                    } else {
                        self.buf.extend_from_slice(&bytes);
                    }
                }
                // The connection is gone (actix-http fails the payload when it drops it).
                Poll::Ready(Some(Err(PayloadError::Incomplete(_)))) | Poll::Ready(None) => self.eof = true,
                Poll::Ready(Some(Err(error))) => return self.fail(ProtocolError::Io(io::Error::other(error))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Turns a frame into a message, joining fragments (RFC 6455 5.4: control frames may come
    /// between fragments; a new data message may not start before the last one ends).
    fn join(&mut self, frame: Frame) -> Result<Option<Inbound>, ProtocolError> {
        let whole = |text: bool, data: Bytes| -> Result<Inbound, ProtocolError> {
            if text {
                ByteString::try_from(data).map(Inbound::Text).map_err(|e| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
            } else {
                Ok(Inbound::Binary(data))
            }
        };
        match frame {
            Frame::Ping(b) => Ok(Some(Inbound::Ping(b))),
            Frame::Pong(b) => Ok(Some(Inbound::Pong(b))),
            Frame::Close(reason) => Ok(Some(Inbound::Close(reason))),
            Frame::Text(_) | Frame::Binary(_) if self.partial.is_some() => Err(ProtocolError::ContinuationStarted),
            Frame::Text(b) => whole(true, b).map(Some),
            Frame::Binary(b) => whole(false, b).map(Some),
            Frame::Continuation(item) => match item {
                Item::FirstText(_) | Item::FirstBinary(_) if self.partial.is_some() => Err(ProtocolError::ContinuationStarted),
                Item::FirstText(b) => self.start(true, b).map(|()| None),
                Item::FirstBinary(b) => self.start(false, b).map(|()| None),
                Item::Continue(b) => self.append(b).map(|()| None),
                Item::Last(b) => {
                    self.append(b)?;
                    let partial = self.partial.take().expect("a fragmented message is open");
                    whole(partial.text, partial.data.freeze()).map(Some)
                }
            },
        }
    }

    fn start(&mut self, text: bool, bytes: Bytes) -> Result<(), ProtocolError> {
        self.partial = Some(Partial { text, data: BytesMut::new() });
        self.append(bytes)
    }

    /// Adds a fragment to the open message (the caller checked that one is open).
    fn append(&mut self, bytes: Bytes) -> Result<(), ProtocolError> {
        let Some(partial) = self.partial.as_mut() else { return Err(ProtocolError::ContinuationNotStarted) };
        if partial.data.len() + bytes.len() > self.max_message_bytes {
            return Err(ProtocolError::Overflow);
        }
        partial.data.extend_from_slice(&bytes);
        Ok(())
    }
}

/// RFC 6455 5.5: a control frame's payload is at most 125 bytes, so a close reason's text is
/// at most 123 (cut at a character boundary).
pub fn close_payload(reason: &CloseReason) -> Vec<u8> {
    let mut payload = u16::from(reason.code).to_be_bytes().to_vec();
    if let Some(text) = &reason.description {
        let mut end = text.len().min(123);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&text.as_bytes()[..end]);
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payload_is_code_then_reason_cut_to_123_bytes_at_a_character() {
        let short = CloseReason { code: CloseCode::Away, description: Some("idle timeout".into()) };
        assert_eq!(close_payload(&short), [&[0x03, 0xE9][..], b"idle timeout"].concat());
        assert_eq!(close_payload(&CloseReason { code: CloseCode::Normal, description: None }), [0x03, 0xE8]);
        // 61 two-byte characters = 122 bytes, then one that would end at byte 124.
        let long = CloseReason { code: CloseCode::Policy, description: Some("é".repeat(62)) };
        let payload = close_payload(&long);
        assert_eq!(payload.len(), 2 + 122);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
