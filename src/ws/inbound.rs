//! What a client sends: WebSocket frames (RFC 6455 §5) decoded from the upgrade request's
//! payload, fragmented messages joined.
//!
//! tickerfeed decodes client frames itself rather than with actix-http's codec, for three
//! reasons found by probing the server from outside:
//! - actix-http's parser compares a frame's length with its limit only once the whole frame has
//!   arrived, so a header announcing 2^62 bytes made the server buffer whatever followed (a
//!   gigabyte in three seconds). Here a frame is judged by its header: one that would take the
//!   message past `max_message_bytes` is refused before a byte of its payload is read.
//! - it reports reserved bits and invalid UTF-8 as the same error, and an invalid close code and
//!   a non-UTF-8 close reason as another; RFC 6455 wants 1002 for the first of each pair and
//!   1007 for the second, so [`InputError`] tells them apart.
//! - `actix_ws::handle` would also build an outgoing channel (1.8 KB per connection) that
//!   tickerfeed never uses: frames go out through [`crate::session::output`].
//!
//! Architecture invariant: **the decoder holds at most `max_message_bytes` plus one control
//! frame (125 bytes) and one frame header (14) of the client's data**, whatever the client
//! sends — the joined fragments of the open message and the bytes of the frame being read, which
//! [`InboundStream::buffered`] reports; the control frame is a ping, pong or close that RFC 6455
//! lets a client send between the fragments of a message at the limit — plus the
//! rest of the one chunk actix-http last handed over (bounded by actix-http's read buffer, which
//! stops reading the socket while its payload is not consumed). A session that does not call
//! [`InboundStream::recv`] therefore stops the client by TCP flow control.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

pub(crate) use actix_ws::{CloseCode, CloseReason};

use crate::session::task::InputError;

/// Largest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask.
#[cfg(test)]
const MAX_HEADER_BYTES: usize = 14;
/// RFC 6455 §5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: u64 = 125;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const OPCODE: u8 = 0x0F;
const MASKED: u8 = 0x80;

/// One message from the client, continuations joined.
#[derive(Debug, PartialEq)]
pub(crate) enum Inbound {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The client's close frame: its code and reason, if it sent any.
    Close(Option<CloseReason>),
}

/// A frame header, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header itself.
    len: usize,
    payload: u64,
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes are needed (the result
/// says how many the header takes once its length field is readable).
fn parse_header(buf: &[u8]) -> Result<Result<Header, usize>, InputError> {
    if buf.len() < 2 {
        return Ok(Err(2));
    }
    let (first, second) = (buf[0], buf[1]);
    if first & RSV != 0 {
        // No extension is negotiated, so no reserved bit may be set (RFC 6455 §5.2).
        return Err(InputError::Protocol("reserved bits set with no extension negotiated"));
    }
    if second & MASKED == 0 {
        return Err(InputError::Protocol("client frames must be masked"));
    }
    let (extended, len) = match second & 0x7F {
        126 => (2, 2 + 2 + 4),
        127 => (8, 2 + 8 + 4),
        _ => (0, 2 + 4),
    };
    if buf.len() < len {
        return Ok(Err(len));
    }
    let payload = match extended {
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        8 => u64::from_be_bytes(buf[2..10].try_into().expect("eight bytes")),
        _ => u64::from(second & 0x7F),
    };
    if payload >> 63 != 0 {
        return Err(InputError::Protocol("a 64-bit length with its most significant bit set"));
    }
    Ok(Ok(Header { fin: first & FIN != 0, opcode: first & OPCODE, mask: buf[len - 4..len].try_into().expect("four bytes"), len, payload }))
}

/// Unmasks part of a client payload in place (RFC 6455 §5.3): `payload` starts `offset` bytes
/// into the frame's payload.
fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) & 3];
    }
}

/// A text message's UTF-8, checked as its bytes arrive (RFC 6455 §8.1): a message is refused at
/// the first byte that no continuation could make valid, not once it is whole, so that a client
/// streaming an invalid message is failed at once (Autobahn|Testsuite 6.4: fail fast).
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character cut by the end of the bytes checked so far (at most 3 bytes).
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Check {
    /// Checks the message's next bytes; an error if they cannot be part of valid UTF-8.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InputError> {
        let invalid = || InputError::InvalidUtf8("a text message");
        // First complete the character the previous bytes cut, one byte at a time.
        while self.pending_len > 0 {
            let Some((&first, rest)) = bytes.split_first() else { return Ok(()) };
            self.pending[self.pending_len] = first;
            self.pending_len += 1;
            bytes = rest;
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(invalid()),
                Err(_) => {}
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            // `error_len` is `None` when the bytes end inside a character that may yet be valid.
            Err(e) if e.error_len().is_some() => Err(invalid()),
            Err(e) => {
                let cut = &bytes[e.valid_up_to()..];
                self.pending[..cut.len()].copy_from_slice(cut);
                self.pending_len = cut.len();
                Ok(())
            }
        }
    }

    /// At the message's end: no character may be left unfinished. Resets for the next message.
    fn finish(&mut self) -> Result<(), InputError> {
        let unfinished = std::mem::take(&mut self.pending_len) > 0;
        if unfinished { Err(InputError::InvalidUtf8("a text message")) } else { Ok(()) }
    }
}

/// Parses a close frame's payload (RFC 6455 §5.5.1, §7.4): nothing, or a valid code and a UTF-8
/// reason.
fn parse_close(payload: &[u8]) -> Result<Option<CloseReason>, InputError> {
    match payload.len() {
        0 => return Ok(None),
        1 => return Err(InputError::Protocol("a close frame with a one-byte payload")),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    // 1004–1006 and 1015 are reserved and never sent; 1016–2999 are unassigned; 3000–4999 are
    // for registered and private use.
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(InputError::Protocol("a close frame with an invalid status code"));
    }
    let reason = std::str::from_utf8(&payload[2..]).map_err(|_| InputError::InvalidUtf8("the close reason"))?;
    Ok(Some(CloseReason { code: CloseCode::from(code), description: (!reason.is_empty()).then(|| reason.to_string()) }))
}

/// A fragmented message being joined.
struct Partial {
    text: bool,
    data: BytesMut,
}

/// The client's frames, decoded from the request payload.
pub(crate) struct InboundStream {
    payload: Payload,
    /// The frame being read: its header, then its payload as it arrives.
    frame: BytesMut,
    /// The part of actix-http's last chunk not yet moved into `frame`.
    rest: Bytes,
    partial: Option<Partial>,
    /// Bytes of the frame's payload already unmasked (and, in a text message, checked).
    unmasked: usize,
    /// The UTF-8 of the text message being read.
    utf8: Utf8Check,
    max_message_bytes: usize,
    /// The payload has ended (or failed): decode what is held, then end.
    eof: bool,
    /// An error was returned: nothing after it is decoded.
    failed: bool,
}

impl InboundStream {
    /// `max_message_bytes` bounds a message, whole or joined from fragments; a frame whose
    /// header would take a message beyond it ends the stream with [`InputError::TooBig`].
    pub(crate) fn new(payload: Payload, max_message_bytes: usize) -> InboundStream {
        InboundStream { payload, frame: BytesMut::new(), rest: Bytes::new(), partial: None, unmasked: 0, utf8: Utf8Check::default(), max_message_bytes, eof: false, failed: false }
    }

    /// The next message; `None` when the connection has ended.
    pub(crate) async fn recv(&mut self) -> Option<Result<Inbound, InputError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Bytes of client data the decoder holds: the open fragmented message and the frame being
    /// read (not the rest of actix-http's chunk, which is actix-http's buffer).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.frame.len() + self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    fn fail(&mut self, error: InputError) -> Poll<Option<Result<Inbound, InputError>>> {
        self.failed = true;
        self.partial = None;
        self.frame = BytesMut::new();
        self.rest = Bytes::new();
        Poll::Ready(Some(Err(error)))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Inbound, InputError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        loop {
            match self.next_frame() {
                Err(error) => return self.fail(error),
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) if !self.rest.is_empty() => continue,
                Ok(None) => {}
            }
            if self.eof {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.rest = bytes,
                // The connection is gone (actix-http fails the payload when it drops it).
                Poll::Ready(Some(Err(PayloadError::Incomplete(_)))) | Poll::Ready(None) => self.eof = true,
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!("client payload failed: {error}");
                    self.eof = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Moves bytes from `rest` into the frame until it is whole; returns the message it
    /// completes, if any. Each frame's header is checked as soon as it is readable.
    fn next_frame(&mut self) -> Result<Option<Inbound>, InputError> {
        let header = loop {
            match parse_header(&self.frame)? {
                Ok(header) => break header,
                Err(needed) => {
                    if !self.take_rest(needed) {
                        return Ok(None);
                    }
                }
            }
        };
        self.check(&header)?;
        // `check` bounded the payload by the message limit (or 125), so this fits in memory.
        let whole = header.len + header.payload as usize;
        let complete = self.take_rest(whole);
        // What has arrived of the payload is unmasked now, and a text message's checked, so
        // that invalid UTF-8 fails the connection before the rest of its frame is waited for.
        let arrived = self.frame.len() - header.len;
        if arrived > self.unmasked {
            let new = &mut self.frame[header.len + self.unmasked..];
            unmask(new, header.mask, self.unmasked);
            self.unmasked = arrived;
            if header.opcode == 0x1 || (header.opcode == 0x0 && self.partial.as_ref().is_some_and(|p| p.text)) {
                self.utf8.feed(new)?;
            }
        }
        if !complete {
            return Ok(None);
        }
        self.unmasked = 0;
        let mut payload = std::mem::take(&mut self.frame);
        payload.advance(header.len);
        self.join(header, payload)
    }

    /// Moves bytes from `rest` until the frame holds `needed` bytes; whether it does.
    fn take_rest(&mut self, needed: usize) -> bool {
        let missing = needed.saturating_sub(self.frame.len());
        let take = missing.min(self.rest.len());
        if take > 0 {
            self.frame.extend_from_slice(&self.rest[..take]);
            self.rest.advance(take);
        }
        if self.rest.is_empty() {
            // An empty view of actix-http's chunk would still keep its allocation alive on an
            // idle connection.
            self.rest = Bytes::new();
        }
        self.frame.len() >= needed
    }

    /// The rules a header must meet before any of its payload is read.
    fn check(&self, header: &Header) -> Result<(), InputError> {
        match header.opcode {
            0x8..=0xA => {
                if !header.fin {
                    return Err(InputError::Protocol("a fragmented control frame"));
                }
                if header.payload > MAX_CONTROL_PAYLOAD {
                    return Err(InputError::Protocol("a control frame with more than 125 bytes"));
                }
            }
            0x0..=0x2 => {
                match (header.opcode, self.partial.is_some()) {
                    (0x0, false) => return Err(InputError::Protocol("a continuation frame with no message started")),
                    (0x1 | 0x2, true) => return Err(InputError::Protocol("a new message before the fragmented one ended")),
                    _ => {}
                }
                let joined = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
                if joined + header.payload > self.max_message_bytes as u64 {
                    return Err(InputError::TooBig { announced: joined + header.payload, limit: self.max_message_bytes });
                }
            }
            _ => return Err(InputError::Protocol("a reserved opcode")),
        }
        Ok(())
    }

    /// Turns a whole frame into a message, joining fragments (RFC 6455 §5.4: control frames may
    /// come between fragments). `check` has validated the frame's place in the sequence.
    fn join(&mut self, header: Header, payload: BytesMut) -> Result<Option<Inbound>, InputError> {
        // A text message's bytes were checked as they arrived; `finish` checks its end.
        let utf8 = &mut self.utf8;
        let mut message = |text: bool, data: Bytes| -> Result<Inbound, InputError> {
            if text {
                utf8.finish()?;
                ByteString::try_from(data).map(Inbound::Text).map_err(|_| InputError::InvalidUtf8("a text message"))
            } else {
                Ok(Inbound::Binary(data))
            }
        };
        match header.opcode {
            0x8 => parse_close(&payload).map(|reason| Some(Inbound::Close(reason))),
            0x9 => Ok(Some(Inbound::Ping(payload.freeze()))),
            0xA => Ok(Some(Inbound::Pong(payload.freeze()))),
            opcode @ (0x1 | 0x2) if header.fin => message(opcode == 0x1, payload.freeze()).map(Some),
            opcode @ (0x1 | 0x2) => {
                self.partial = Some(Partial { text: opcode == 0x1, data: payload });
                Ok(None)
            }
            _ => {
                let partial = self.partial.as_mut().expect("check: a continuation has a message open");
                partial.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let partial = self.partial.take().expect("open");
                message(partial.text, partial.data.freeze()).map(Some)
            }
        }
    }
}

/// RFC 6455 5.5: a control frame's payload is at most 125 bytes, so a close reason's text is
/// at most 123 (cut at a character boundary).
pub(crate) fn close_payload(reason: &CloseReason) -> Vec<u8> {
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

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(MASKED | n as u8),
            n if n <= 0xFFFF => {
                out.push(MASKED | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(MASKED | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    /// A stream fed by hand, and what feeds it (as actix-http does, one chunk per call).
    fn stream(limit: usize) -> (impl FnMut(&[u8]), InboundStream) {
        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        (move |bytes: &[u8]| sender.feed_data(Bytes::copy_from_slice(bytes)), InboundStream::new(Payload::from(payload), limit))
    }

    fn poll(stream: &mut InboundStream) -> Poll<Option<Result<Inbound, InputError>>> {
        stream.poll_recv(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn headers_are_judged_before_their_payload_arrives() {
        let (mut feed, mut inbound) = stream(4096);
        // A text frame announcing 2^62 bytes: refused on its 14 header bytes alone.
        let mut header = vec![0x81, MASKED | 127];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        feed(&header);
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(InputError::TooBig { announced: 1 << 62, limit: 4096 }))));
        assert_eq!(inbound.buffered(), 0);
        assert_eq!(poll(&mut inbound), Poll::Ready(None), "nothing is decoded after an error");
    }

    #[test]
    fn the_decoder_never_holds_more_than_the_limit_and_a_header() {
        let limit = 1000;
        let (mut feed, mut inbound) = stream(limit);
        // A fragmented message that reaches the limit exactly, fed in one large chunk and then
        // byte by byte: what is held never passes limit + header.
        let mut bytes = frame(0x01, &[b'a'; 600]);
        bytes.extend(frame(0x80, &[b'a'; 400]));
        let (first, second) = bytes.split_at(300);
        feed(first);
        assert!(poll(&mut inbound).is_pending());
        for byte in second {
            feed(&[*byte]);
            match poll(&mut inbound) {
                Poll::Pending => assert!(inbound.buffered() <= limit + MAX_HEADER_BYTES, "{} held", inbound.buffered()),
                Poll::Ready(Some(Ok(Inbound::Text(text)))) => assert_eq!(text.len(), limit),
                other => panic!("{other:?}"),
            }
        }
        // One byte more than the limit, announced by a continuation's header.
        feed(&frame(0x01, &[b'a'; 600]));
        feed(&frame(0x80, &[b'a'; 401])[..8]);
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(InputError::TooBig { announced: 1001, limit }))));
    }

    #[test]
    fn a_ping_between_fragments_at_the_limit_is_held_beside_them() {
        // Found by the fuzz target: the module doc said "the limit plus a header", but a control
        // frame may come between the fragments of a message already at the limit.
        let limit = 64;
        let (mut feed, mut inbound) = stream(limit);
        feed(&frame(0x02, &[7; 64]));
        assert!(poll(&mut inbound).is_pending());
        let ping = frame(0x89, &[1; 125]);
        feed(&ping[..ping.len() - 1]);
        assert!(poll(&mut inbound).is_pending());
        // The message so far, and all but the last byte of the ping (a 6-byte header, 125 bytes).
        assert_eq!(inbound.buffered(), limit + 6 + 125 - 1);
        assert!(inbound.buffered() <= limit + MAX_CONTROL_PAYLOAD as usize + MAX_HEADER_BYTES);
        feed(&ping[ping.len() - 1..]);
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Ping(Bytes::from_static(&[1; 125]))))));
        feed(&frame(0x80, b""));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Binary(Bytes::from_static(&[7; 64]))))));
    }

    #[test]
    fn each_rfc_violation_has_its_own_error() {
        let cases: Vec<(&str, Vec<u8>, InputError)> = vec![
            ("RSV1 on a text frame", frame(0x81 | 0x40, b"{}"), InputError::Protocol("reserved bits set with no extension negotiated")),
            ("RSV3 on a ping", frame(0x89 | 0x10, b""), InputError::Protocol("reserved bits set with no extension negotiated")),
            ("an unmasked frame", vec![0x81, 0x00], InputError::Protocol("client frames must be masked")),
            ("a reserved opcode", frame(0x83, b""), InputError::Protocol("a reserved opcode")),
            ("a fragmented ping", frame(0x09, b""), InputError::Protocol("a fragmented control frame")),
            ("a 126-byte ping", frame(0x89, &[0; 126]), InputError::Protocol("a control frame with more than 125 bytes")),
            ("a continuation first", frame(0x80, b"x"), InputError::Protocol("a continuation frame with no message started")),
            ("invalid UTF-8 text", frame(0x81, &[0x7b, 0xff]), InputError::InvalidUtf8("a text message")),
            ("a one-byte close", frame(0x88, &[3]), InputError::Protocol("a close frame with a one-byte payload")),
            ("close code 1005", frame(0x88, &1005u16.to_be_bytes()), InputError::Protocol("a close frame with an invalid status code")),
            ("close code 2999", frame(0x88, &2999u16.to_be_bytes()), InputError::Protocol("a close frame with an invalid status code")),
            ("a non-UTF-8 close reason", frame(0x88, &[0x03, 0xE8, 0xce, 0xba, 0xff]), InputError::InvalidUtf8("the close reason")),
        ];
        for (what, bytes, expected) in cases {
            let (mut feed, mut inbound) = stream(4096);
            feed(&bytes);
            assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(expected))), "{what}");
        }
    }

    #[test]
    fn messages_close_frames_and_control_frames_between_fragments() {
        let (mut feed, mut inbound) = stream(4096);
        let mut bytes = frame(0x01, b"{\"op\"");
        bytes.extend(frame(0x89, b"between"));
        bytes.extend(frame(0x80, b":1}"));
        bytes.extend(frame(0x82, &[1, 2]));
        bytes.extend(frame(0x88, &[0x0F, 0xA1, b'd', b'o', b'n', b'e']));
        feed(&bytes);
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Ping(Bytes::from_static(b"between"))))));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Text("{\"op\":1}".into())))));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Binary(Bytes::from_static(&[1, 2]))))));
        let close = CloseReason { code: CloseCode::Other(4001), description: Some("done".into()) };
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Close(Some(close))))));
        assert!(poll(&mut inbound).is_pending());
        assert_eq!(inbound.buffered(), 0);
    }

    #[test]
    fn invalid_utf8_fails_at_its_first_byte_not_at_the_end_of_the_message() {
        // A first fragment whose bytes can never be UTF-8 (a UTF-16 surrogate): refused before
        // the message's last fragment arrives.
        let (mut feed, mut inbound) = stream(4096);
        feed(&frame(0x01, &[b'a', 0xed, 0xa0, 0x80, b'b']));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(InputError::InvalidUtf8("a text message")))));
        // Within a frame: a header announcing 100 bytes, then 10 of them with a 0xFF among them.
        let (mut feed, mut inbound) = stream(4096);
        let whole = frame(0x81, &[[b'x'; 5].as_slice(), &[0xff], &[b'y'; 94]].concat());
        feed(&whole[..2 + 2 + 4 + 10]);
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(InputError::InvalidUtf8("a text message")))));
        // A continuation of a text message is checked as the message; binary is never checked.
        let (mut feed, mut inbound) = stream(4096);
        feed(&frame(0x01, b"ok so far"));
        feed(&frame(0x00, &[0xc0, 0xaf]));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(InputError::InvalidUtf8("a text message")))));
        let (mut feed, mut inbound) = stream(4096);
        feed(&frame(0x82, &[0xff, 0xfe]));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Binary(Bytes::from_static(&[0xff, 0xfe]))))));
    }

    #[test]
    fn characters_cut_by_fragments_and_reads_are_joined_and_a_cut_at_the_end_is_refused() {
        let text = "κόσμε 𝄞 ok";
        let bytes = text.as_bytes();
        // Fragments cut inside characters (after 1, 8 and 10 bytes), fed one byte at a time.
        let (mut feed, mut inbound) = stream(4096);
        let mut wire = frame(0x01, &bytes[..1]);
        wire.extend(frame(0x00, &bytes[1..8]));
        wire.extend(frame(0x00, &bytes[8..10]));
        wire.extend(frame(0x80, &bytes[10..]));
        for byte in &wire[..wire.len() - 1] {
            feed(&[*byte]);
            assert!(poll(&mut inbound).is_pending());
        }
        feed(&wire[wire.len() - 1..]);
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Ok(Inbound::Text(text.into())))));
        // The next message starts afresh, and one that ends inside a character is refused.
        feed(&frame(0x01, "é".as_bytes()));
        feed(&frame(0x80, &"𝄞".as_bytes()[..3]));
        assert_eq!(poll(&mut inbound), Poll::Ready(Some(Err(InputError::InvalidUtf8("a text message")))));
    }

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

/// The decoder's invariants, checked on any bytes: by the property tests below and by the fuzz
/// target `ws_inbound` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// Largest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask.
    const HEADER_BYTES: usize = 14;

    /// What the decoder gave, in order, up to its end or its first error.
    pub(crate) type Outcome = Vec<Result<Inbound, InputError>>;

    /// Feeds `data` to a decoder with a message limit of `limit`, cut into chunks after each
    /// offset in `cuts`, polling until it waits after each chunk; asserts after every poll what
    /// the module promises — it holds at most `limit` plus one header of client data; a message
    /// is at most `limit` bytes, a control frame's at most 125; nothing comes after an error —
    /// and returns what it decoded.
    pub(crate) fn check_any_bytes(data: &[u8], cuts: &[usize], limit: usize) -> Outcome {
        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        let mut inbound = InboundStream::new(Payload::from(payload), limit);
        let mut outcome = Vec::new();
        let mut offsets: Vec<usize> = cuts.iter().map(|&cut| cut.min(data.len())).collect();
        offsets.push(data.len());
        offsets.sort_unstable();
        let mut from = 0;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for to in offsets {
            if to > from {
                sender.feed_data(Bytes::copy_from_slice(&data[from..to]));
                from = to;
            }
            loop {
                let poll = inbound.poll_recv(&mut cx);
                let held = inbound.frame.len() + inbound.partial.as_ref().map_or(0, |p| p.data.len());
                assert!(held <= limit + MAX_CONTROL_PAYLOAD as usize + HEADER_BYTES, "the decoder holds {held} bytes, over the limit {limit}, a control frame and a header");
                match poll {
                    Poll::Pending => break,
                    Poll::Ready(None) => return outcome,
                    Poll::Ready(Some(result)) => {
                        match &result {
                            Ok(Inbound::Text(text)) => assert!(text.len() <= limit),
                            Ok(Inbound::Binary(bytes)) => assert!(bytes.len() <= limit),
                            Ok(Inbound::Ping(bytes) | Inbound::Pong(bytes)) => assert!(bytes.len() as u64 <= MAX_CONTROL_PAYLOAD),
                            Ok(Inbound::Close(_)) => {}
                            Err(_) => {
                                outcome.push(result);
                                assert_eq!(inbound.poll_recv(&mut cx), Poll::Ready(None), "nothing is decoded after an error");
                                return outcome;
                            }
                        }
                        outcome.push(result);
                    }
                }
            }
        }
        outcome
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;

        /// A masked client frame; `width` picks the length field (7 bits, 16 or 64), wider than
        /// needed when asked (RFC 6455 wants the shortest; the decoder takes any).
        fn frame(first: u8, payload: &[u8], mask: [u8; 4], width: u8) -> Vec<u8> {
            let mut out = vec![first];
            let n = payload.len();
            match width {
                0 if n < 126 => out.push(MASKED | n as u8),
                0 | 1 if n <= 0xFFFF => {
                    out.push(MASKED | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                _ => {
                    out.push(MASKED | 127);
                    out.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
            out
        }

        /// A message a client may send, cut into fragments, with pings between them.
        #[derive(Debug, Clone)]
        struct Message {
            text: bool,
            payload: Vec<u8>,
            fragments: Vec<usize>,
            ping_between: Option<Vec<u8>>,
            mask: [u8; 4],
            width: u8,
        }

        fn message(limit: usize) -> impl Strategy<Value = Message> {
            let payload = prop_oneof![any::<String>().prop_map(|s| (true, s.into_bytes())), prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| (false, b))];
            (payload, prop::collection::vec(any::<prop::sample::Index>(), 0..3), prop::option::of(prop::collection::vec(any::<u8>(), 0..126)), any::<[u8; 4]>(), 0u8..3)
                .prop_filter("within the limit", move |((_, payload), ..)| payload.len() <= limit)
                .prop_map(|((text, payload), cuts, ping_between, mask, width)| {
                    let mut fragments: Vec<usize> = cuts.iter().map(|cut| cut.index(payload.len() + 1)).collect();
                    fragments.sort_unstable();
                    Message { text, payload, fragments, ping_between, mask, width }
                })
        }

        fn encode(messages: &[Message]) -> (Vec<u8>, Vec<Inbound>) {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for m in messages {
                let mut bounds = vec![0];
                bounds.extend(&m.fragments);
                bounds.push(m.payload.len());
                let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &m.payload[w[0]..w[1]]).collect();
                for (index, piece) in pieces.iter().enumerate() {
                    let opcode = if index > 0 {
                        0x0
                    } else if m.text {
                        0x1
                    } else {
                        0x2
                    };
                    let fin = if index == pieces.len() - 1 { FIN } else { 0 };
                    bytes.extend(frame(fin | opcode, piece, m.mask, m.width));
                    if let (Some(ping), true) = (&m.ping_between, fin == 0) {
                        bytes.extend(frame(FIN | 0x9, ping, m.mask, 0));
                        expected.push(Inbound::Ping(Bytes::copy_from_slice(ping)));
                    }
                }
                let payload = Bytes::copy_from_slice(&m.payload);
                expected.push(if m.text { Inbound::Text(ByteString::try_from(payload).expect("a String's bytes")) } else { Inbound::Binary(payload) });
            }
            (bytes, expected)
        }

        proptest! {
            #![proptest_config(crate::test_support::proptest_config(512, "target/proptest-regressions/ws-inbound.txt"))]

            #[test]
            fn any_bytes_in_any_chunks_keep_the_bounds(data in prop::collection::vec(any::<u8>(), 0..300), cuts in prop::collection::vec(0usize..300, 0..6), limit in 0usize..200) {
                let whole = check_any_bytes(&data, &[], limit);
                // How the bytes arrive changes nothing that is decoded.
                prop_assert_eq!(check_any_bytes(&data, &cuts, limit), whole);
            }

            #[test]
            fn frames_a_client_sends_decode_to_its_messages_however_they_arrive(messages in prop::collection::vec(message(100), 0..5), cuts in prop::collection::vec(0usize..600, 0..8)) {
                let (bytes, expected) = encode(&messages);
                let outcome = check_any_bytes(&bytes, &cuts, 100);
                prop_assert_eq!(outcome, expected.into_iter().map(Ok).collect::<Outcome>());
            }

            #[test]
            fn a_message_over_the_limit_is_refused_on_its_header(size in 101usize..400, cut in 2usize..14) {
                let bytes = frame(FIN | 0x2, &vec![0; size], [1, 2, 3, 4], 1);
                // Only the header has arrived: the refusal does not wait for the payload.
                let outcome = check_any_bytes(&bytes[..cut.max(8)], &[], 100);
                prop_assert_eq!(outcome, vec![Err(InputError::TooBig { announced: size as u64, limit: 100 })]);
            }
        }
    }
}
