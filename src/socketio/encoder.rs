//! Protocol v1's messages as Socket.IO packets, for a session's output: every message an
//! Engine.IO `message` packet in the main namespace, in one of Engine.IO's two framings.
//!
//! - a reply to a request the client sent with an ack id is its ACK, `43<id>[{…}]` — the
//!   message's fields without `type` and `id` as a plain body (never error-first): a failed
//!   request's ack is `{"error":{"code":…,"message":…}}`;
//! - anything else is an EVENT named by the message's `type`: `42["welcome",{…}]`,
//!   `42["quotes",{"quotes":[…]}]` (`{"snapshot":true,"quotes":[…]}` for snapshots),
//!   `42["feed",{…}]`, `42["error",{"code":…,"message":…}]`;
//! - the heartbeat is Engine.IO's ping, `2`.
//!
//! Quote batches are written in place around the quotes' pre-rendered JSON, as on `/ws`.

use actix_web::web::{BufMut, Bytes, BytesMut};

use super::packet::{EVENT_SUFFIX, RECORD_SEPARATOR, write_ack, write_event_prefix};
use crate::session::output::{Encoder, QuotesMark};
use crate::session::protocol::{RequestId, ServerMessage};
use crate::ws::frame::{open_text_frame, seal_text_frame};

/// How Engine.IO packets reach the client: each in a WebSocket text frame, or each a record of
/// a polling response (joined by `\x1e`).
pub(crate) trait Framing: Copy + Default + 'static {
    /// Starts a packet of at most about `max` bytes, written after the returned mark's
    /// `payload_start`.
    fn open(buf: &mut BytesMut, max: usize) -> QuotesMark;
    /// Ends the packet opened at `mark`; returns its size on the wire.
    fn seal(buf: &mut BytesMut, mark: QuotesMark) -> u64;
}

/// One WebSocket text frame per packet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WsFrames;

impl Framing for WsFrames {
    fn open(buf: &mut BytesMut, max: usize) -> QuotesMark {
        open_text_frame(buf, max)
    }

    fn seal(buf: &mut BytesMut, mark: QuotesMark) -> u64 {
        seal_text_frame(buf, mark)
    }
}

/// Each packet preceded by the record separator: a chunk of these, less its first byte, is a
/// polling response body, and each record is a packet a WebSocket can frame as it is.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Records;

impl Framing for Records {
    fn open(buf: &mut BytesMut, max: usize) -> QuotesMark {
        let start = buf.len();
        buf.reserve(max + 1);
        buf.put_u8(RECORD_SEPARATOR as u8);
        QuotesMark { start, payload_start: buf.len() }
    }

    fn seal(buf: &mut BytesMut, mark: QuotesMark) -> u64 {
        (buf.len() - mark.start) as u64
    }
}

/// What ends a `quotes` event: the quotes array, its object, the event's array.
const QUOTES_EVENT_SUFFIX: &[u8] = b"]}]";
const QUOTES_FIELD: &[u8] = br#"{"quotes":["#;
const SNAPSHOT_FIELDS: &[u8] = br#"{"snapshot":true,"quotes":["#;
/// The main namespace: the only one tickerfeed serves.
pub(crate) const NAMESPACE: &str = "/";

/// Protocol v1 as Socket.IO packets in framing `F`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SioEncoder<F: Framing>(std::marker::PhantomData<F>);

impl<F: Framing> SioEncoder<F> {
    /// One packet written by `write` (which appends the packet's text), framed.
    pub(crate) fn packet(write: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::new();
        let mark = F::open(&mut buf, 64);
        write(&mut buf);
        F::seal(&mut buf, mark);
        buf.freeze()
    }
}

impl<F: Framing> Encoder for SioEncoder<F> {
    const QUOTES_SUFFIX: &'static [u8] = QUOTES_EVENT_SUFFIX;

    fn reply(&self, buf: &mut BytesMut, message: &ServerMessage<'_>) {
        let fields = message.fields_json();
        let mark = F::open(buf, fields.len() + 32);
        match message.id() {
            // The transport gives a request the id of its ack, if it asked for one.
            Some(RequestId::Number(id)) if id.as_u64().is_some() => {
                let id = id.as_u64().expect("checked");
                if let ServerMessage::Error { .. } = message {
                    write_ack(buf, NAMESPACE, id, &[&format!(r#"{{"error":{fields}}}"#)]);
                } else {
                    write_ack(buf, NAMESPACE, id, &[&fields]);
                }
            }
            _ => {
                write_event_prefix(buf, NAMESPACE, message.kind());
                buf.put_slice(fields.as_bytes());
                buf.put_slice(EVENT_SUFFIX);
            }
        }
        F::seal(buf, mark);
    }

    fn heartbeat(&self, buf: &mut BytesMut) {
        let mark = F::open(buf, 1);
        buf.put_u8(b'2');
        F::seal(buf, mark);
    }

    fn open_quotes(&self, buf: &mut BytesMut, max: usize, snapshot: bool) -> QuotesMark {
        let mark = F::open(buf, max);
        write_event_prefix(buf, NAMESPACE, "quotes");
        buf.put_slice(if snapshot { SNAPSHOT_FIELDS } else { QUOTES_FIELD });
        mark
    }

    fn seal_quotes(&self, buf: &mut BytesMut, mark: QuotesMark) -> u64 {
        buf.put_slice(QUOTES_EVENT_SUFFIX);
        F::seal(buf, mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::protocol::ErrorCode;

    fn records(write: impl FnOnce(&SioEncoder<Records>, &mut BytesMut)) -> String {
        let mut buf = BytesMut::new();
        write(&SioEncoder::default(), &mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn replies_are_acks_when_asked_for_and_events_otherwise() {
        let listed = |id| ServerMessage::Subscriptions { id, symbols: vec!["AAPL".into()] };
        assert_eq!(records(|e, b| e.reply(b, &listed(Some(RequestId::Number(7.into()))))), "\u{1e}437[{\"symbols\":[\"AAPL\"]}]");
        assert_eq!(records(|e, b| e.reply(b, &listed(None))), "\u{1e}42[\"subscriptions\",{\"symbols\":[\"AAPL\"]}]");
        let error = |id| ServerMessage::Error { id, code: ErrorCode::TooManySymbols, message: "no".into(), count: None };
        assert_eq!(records(|e, b| e.reply(b, &error(Some(RequestId::Number(3.into()))))), "\u{1e}433[{\"error\":{\"code\":\"too_many_symbols\",\"message\":\"no\"}}]");
        assert_eq!(records(|e, b| e.reply(b, &error(None))), "\u{1e}42[\"error\",{\"code\":\"too_many_symbols\",\"message\":\"no\"}]");
        assert_eq!(records(|e, b| e.heartbeat(b)), "\u{1e}2");
    }

    #[test]
    fn quote_batches_are_one_event_with_one_object() {
        let batch = |snapshot| {
            records(|e, b| {
                let mark = e.open_quotes(b, 100, snapshot);
                b.put_slice(br#"{"s":"A"},{"s":"B"}"#);
                assert_eq!(e.seal_quotes(b, mark), b.len() as u64);
            })
        };
        assert_eq!(batch(false), "\u{1e}42[\"quotes\",{\"quotes\":[{\"s\":\"A\"},{\"s\":\"B\"}]}]");
        assert_eq!(batch(true), "\u{1e}42[\"quotes\",{\"snapshot\":true,\"quotes\":[{\"s\":\"A\"},{\"s\":\"B\"}]}]");
        // Over WebSocket the same packet is one text frame.
        let mut buf = BytesMut::new();
        let encoder = SioEncoder::<WsFrames>::default();
        let mark = encoder.open_quotes(&mut buf, 100, false);
        buf.put_slice(br#"{"s":"A"}"#);
        let wire = encoder.seal_quotes(&mut buf, mark);
        let packet = br#"42["quotes",{"quotes":[{"s":"A"}]}]"#;
        assert_eq!((wire as usize, &buf[..2], &buf[2..]), (packet.len() + 2, &[0x81, packet.len() as u8][..], &packet[..]));
    }
}
