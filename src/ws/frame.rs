//! RFC 6455 framing of what the server sends, and the WebSocket transport's [`Encoder`]: every
//! message of protocol v1 in one text frame, quote batches written in place (the header's room
//! is reserved before the quotes are appended and the payload moved only if the header ends up
//! another size).

use actix_web::web::{BufMut, Bytes, BytesMut};

use super::inbound::{CloseReason, close_payload};
use crate::session::output::{Encoder, QuotesMark};
use crate::session::protocol::{QUOTES_JSON_PREFIX, QUOTES_JSON_SUFFIX, SNAPSHOT_JSON_PREFIX, ServerMessage};

pub(crate) const OPCODE_TEXT: u8 = 0x1;
pub(crate) const OPCODE_BINARY: u8 = 0x2;
pub(crate) const OPCODE_CLOSE: u8 = 0x8;
pub(crate) const OPCODE_PING: u8 = 0x9;
pub(crate) const OPCODE_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// Size of the header of a server-to-client (unmasked) frame with this payload.
fn header_len(payload: usize) -> usize {
    if payload < 126 {
        2
    } else if payload <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// Size on the wire of a server-to-client WebSocket frame with this payload.
pub(crate) fn frame_wire_bytes(payload: usize) -> u64 {
    (header_len(payload) + payload) as u64
}

/// Writes a frame header into `into`, which is exactly `header_len(payload)` long.
fn write_header(into: &mut [u8], opcode: u8, payload: usize) {
    into[0] = FIN | opcode;
    match into.len() {
        2 => into[1] = payload as u8,
        4 => {
            into[1] = 126;
            into[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            into[1] = 127;
            into[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
        }
    }
}

/// Appends one whole frame.
pub(crate) fn put_frame(buf: &mut BytesMut, opcode: u8, payload: &[u8]) {
    let header = header_len(payload.len());
    buf.reserve(header + payload.len());
    let start = buf.len();
    buf.put_bytes(0, header);
    write_header(&mut buf[start..], opcode, payload.len());
    buf.extend_from_slice(payload);
}

/// Writes the header of the frame whose payload was appended after `room` placeholder bytes at
/// `start`, moving the payload if its header needs a different size. Returns the payload size.
fn seal_frame(buf: &mut BytesMut, start: usize, room: usize, opcode: u8) -> usize {
    let payload_start = start + room;
    let payload = buf.len() - payload_start;
    let header = header_len(payload);
    if header < room {
        buf.copy_within(payload_start.., start + header);
        buf.truncate(start + header + payload);
    } else if header > room {
        let grow = header - room;
        buf.put_bytes(0, grow);
        buf.copy_within(payload_start..payload_start + payload, payload_start + grow);
    }
    write_header(&mut buf[start..start + header], opcode, payload);
    payload
}

/// Starts a text frame whose payload the caller appends in place (at most `max` bytes, or a
/// little more): reserves room for its header, which [`seal_text_frame`] writes.
pub(crate) fn open_text_frame(buf: &mut BytesMut, max: usize) -> QuotesMark {
    let start = buf.len();
    // Room for the header of a frame of `max` bytes; moved if the frame ends up smaller than
    // 126 bytes or a lone oversized quote makes it longer.
    let room = header_len(max);
    buf.reserve(room + max);
    buf.put_bytes(0, room);
    QuotesMark { start, payload_start: buf.len() }
}

/// Ends the text frame opened at `mark` (its payload is everything appended since): writes its
/// header and returns its size on the wire.
pub(crate) fn seal_text_frame(buf: &mut BytesMut, mark: QuotesMark) -> u64 {
    let payload = seal_frame(buf, mark.start, mark.payload_start - mark.start, OPCODE_TEXT);
    frame_wire_bytes(payload)
}

/// Protocol v1 over WebSocket: each message a text frame; `quotes` batches as
/// `{"type":"quotes",["snapshot":true,]"quotes":[…]}`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WsEncoder;

impl WsEncoder {
    /// The close frame for `reason`.
    pub(crate) fn close_frame(reason: &CloseReason) -> Bytes {
        let mut frame = BytesMut::new();
        put_frame(&mut frame, OPCODE_CLOSE, &close_payload(reason));
        frame.freeze()
    }

    /// The answer to a client's ping, with its payload (RFC 6455 §5.5.3).
    pub(crate) fn pong_frame(payload: &[u8]) -> Bytes {
        let mut frame = BytesMut::new();
        put_frame(&mut frame, OPCODE_PONG, payload);
        frame.freeze()
    }
}

impl Encoder for WsEncoder {
    const QUOTES_SUFFIX: &'static [u8] = QUOTES_JSON_SUFFIX;

    fn reply(&self, buf: &mut BytesMut, message: &ServerMessage<'_>) {
        put_frame(buf, OPCODE_TEXT, message.to_json().as_bytes());
    }

    fn heartbeat(&self, buf: &mut BytesMut) {
        put_frame(buf, OPCODE_PING, &[]);
    }

    fn open_quotes(&self, buf: &mut BytesMut, max: usize, snapshot: bool) -> QuotesMark {
        let mark = open_text_frame(buf, max);
        buf.extend_from_slice(if snapshot { SNAPSHOT_JSON_PREFIX } else { QUOTES_JSON_PREFIX });
        mark
    }

    fn seal_quotes(&self, buf: &mut BytesMut, mark: QuotesMark) -> u64 {
        buf.extend_from_slice(QUOTES_JSON_SUFFIX);
        seal_text_frame(buf, mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, opcode, payload);
        buf.to_vec()
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(frame(OPCODE_TEXT, b"hi"), [0x81, 2, b'h', b'i']);
        assert_eq!(frame(OPCODE_PONG, b""), [0x8A, 0]);
        assert_eq!(frame(OPCODE_PING, b""), [0x89, 0]);
        let medium = frame(OPCODE_TEXT, &[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = frame(OPCODE_TEXT, &[b'x'; 70_000]);
        assert_eq!(&large[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(large.len(), 70_010);
    }

    #[test]
    fn sealing_moves_the_payload_to_fit_its_header() {
        for (room, size) in [(4, 10), (4, 300), (10, 300), (4, 70_000), (2, 300), (10, 70_000)] {
            let mut buf = BytesMut::from(&b"xyz"[..]);
            buf.put_bytes(0, room);
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            buf.extend_from_slice(&payload);
            assert_eq!(seal_frame(&mut buf, 3, room, OPCODE_TEXT), size);
            let mut expected = b"xyz".to_vec();
            expected.extend(frame(OPCODE_TEXT, &payload));
            assert_eq!(buf.to_vec(), expected, "room {room}, payload {size}");
        }
    }

    #[test]
    fn wire_sizes() {
        assert_eq!(frame_wire_bytes(0), 2);
        assert_eq!(frame_wire_bytes(125), 127);
        assert_eq!(frame_wire_bytes(126), 130);
        assert_eq!(frame_wire_bytes(70_000), 70_010);
    }
}
