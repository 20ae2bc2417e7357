//! The Engine.IO v4 and Socket.IO v5 wire formats: what a client sends, parsed and judged; what
//! the server sends, encoded. No I/O and no session state: whether a well-formed packet is
//! welcome now (a client's `open`, a `ping` that is not an upgrade probe, a binary message) is
//! the transport's decision, not this module's.
//!
//! Sources: engine.io-protocol (README, v4), socket.io-protocol (Readme, v5) and the reference
//! parsers, `packages/engine.io-parser` and `packages/socket.io-parser` of the socket.io monorepo.
//!
//! Two layers, as on the wire:
//! - an Engine.IO packet is a type digit and its data (`4hello`, `2probe`, `6`). Over WebSocket
//!   a text frame is one packet; a polling body is packets joined by `\x1e`.
//! - a Socket.IO packet is the data of an Engine.IO `message` (`4`):
//!   `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`.
//!
//! Invariant: **decoding never panics and holds O(input) memory, whatever the input.** It
//! borrows from the input where it can (an Engine.IO packet's data, a namespace); what it builds
//! is serde_json's tree of the JSON part, a constant factor of its text, nested at most 128
//! deep (serde_json's limit), so no packet can exhaust the stack. Every refusal is a
//! [`PacketError`] naming the layer and the fault, quoting at most 32 characters of client text.
//!
//! It accepts what the reference parsers accept, and refuses in addition (no socket.io client
//! sends any of these): data after `close`, `upgrade` or `noop`; a namespace of more than
//! [`MAX_NAMESPACE_CHARS`] characters or with a control character (namespaces are echoed in
//! replies, and a `\x1e` would split a polling payload); an ack id on CONNECT, DISCONNECT or
//! CONNECT_ERROR, an ACK without one, one that does not fit in 64 bits (the reference reads it
//! as a float); an EVENT or ACK without payload (mandatory in socket.io-protocol v5, though the
//! reference parser lets it through); a number as event name (the reference allows it); JSON
//! that `JSON.parse` takes and serde_json does not (nesting deeper than 128, a lone UTF-16
//! surrogate escape such as `"\ud800"`).
//! Binary is recognised, not decoded: tickerfeed sends none and answers a client's with an
//! error, so a base64 record and the JSON of a BINARY_EVENT or BINARY_ACK are not parsed.
//!
//! Encoding writes whole Engine.IO packets: each call's output is one WebSocket text frame or one
//! record of a polling payload, so the Socket.IO writers include the leading `4`. They append to
//! a growable buffer — `Vec<u8>` or `BytesMut`, through the `bytes` crate's `BufMut`, which
//! actix-web re-exports — so the hot path writes straight into the buffer it sends from.

use std::fmt::Display;

use actix_web::web::BufMut;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api_error::{excerpt, json_kind};

/// Longest namespace accepted, in characters. Namespaces are names the server declares
/// (`/`, `/admin`); a longer one is not a namespace anyone serves, only bytes to echo back.
pub(crate) const MAX_NAMESPACE_CHARS: usize = 128;

/// Separates the packets of a polling payload (engine.io-protocol v4, "Packet encoding", "HTTP
/// long-polling"): the ASCII record separator, which no JSON text contains unescaped.
pub(crate) const RECORD_SEPARATOR: char = '\u{1e}';

/// Ends an event written by [`write_event_prefix`] and the caller's one argument.
pub(crate) const EVENT_SUFFIX: &[u8] = b"]";

/// How much client text an error message quotes.
const QUOTE_CHARS: usize = 32;

/// Event names socket.io-parser refuses (`RESERVED_EVENTS`): each already means something to the
/// client or the server library, so a peer sending one is confused or probing.
const RESERVED_EVENTS: [&str; 6] = ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

/// A packet that cannot be decoded, or a polling payload that cannot be split. The message names
/// the layer (`engine.io packet`, `socket.io packet`, `polling payload`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PacketError(String);

impl PacketError {
    fn engine(what: impl Display) -> PacketError {
        PacketError(format!("engine.io packet: {what}"))
    }

    fn socket(what: impl Display) -> PacketError {
        PacketError(format!("socket.io packet: {what}"))
    }

    fn payload(what: impl Display) -> PacketError {
        PacketError(format!("polling payload: {what}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Engine.IO
// ---------------------------------------------------------------------------------------------

/// One Engine.IO packet, borrowing its data from the decoded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnginePacket<'a> {
    /// `0` + the handshake JSON, which the server sends (see [`OpenPacket`]); decoded
    /// unparsed, for a client never sends one.
    Open(&'a str),
    /// `1`: the peer closes the session.
    Close,
    /// `2`, from the server in v4; `2probe` from a client starting an upgrade.
    Ping(&'a str),
    /// `3`, the client's answer to a ping; `3probe` from the server during an upgrade.
    Pong(&'a str),
    /// `4` + text: a Socket.IO packet, for tickerfeed.
    Message(&'a str),
    /// `5`: the client completes the upgrade to WebSocket.
    Upgrade,
    /// `6`: ends a pending poll during an upgrade.
    Noop,
    /// `b` + base64, a binary message in a polling payload; the base64 is not checked. (Over
    /// WebSocket a binary message is a binary frame, which never reaches this decoder.)
    Binary(&'a str),
}

impl<'a> EnginePacket<'a> {
    /// Decodes one packet: a WebSocket text frame, or one record of a polling payload.
    pub(crate) fn decode(text: &'a str) -> Result<EnginePacket<'a>, PacketError> {
        let mut chars = text.chars();
        let Some(kind) = chars.next() else {
            return Err(PacketError::engine("empty packet"));
        };
        let data = chars.as_str();
        let no_data = |packet: EnginePacket<'a>| {
            if data.is_empty() { Ok(packet) } else { Err(PacketError::engine(format!("{} ({kind}) takes no data, got '{}'", packet.name(), excerpt(data, QUOTE_CHARS)))) }
        };
        match kind {
            '0' => Ok(EnginePacket::Open(data)),
            '1' => no_data(EnginePacket::Close),
            '2' => Ok(EnginePacket::Ping(data)),
            '3' => Ok(EnginePacket::Pong(data)),
            '4' => Ok(EnginePacket::Message(data)),
            '5' => no_data(EnginePacket::Upgrade),
            '6' => no_data(EnginePacket::Noop),
            'b' => Ok(EnginePacket::Binary(data)),
            other => Err(PacketError::engine(format!("unknown type '{}' (expected 0-6, or b for base64)", other.escape_debug()))),
        }
    }

    /// The packet type's name in the protocol document.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EnginePacket::Open(_) => "open",
            EnginePacket::Close => "close",
            EnginePacket::Ping(_) => "ping",
            EnginePacket::Pong(_) => "pong",
            EnginePacket::Message(_) => "message",
            EnginePacket::Upgrade => "upgrade",
            EnginePacket::Noop => "noop",
            EnginePacket::Binary(_) => "binary message",
        }
    }

    /// The packet's text form, for a control packet sent as a frame of its own (`2`, `3probe`).
    pub(crate) fn to_text(self) -> String {
        let (kind, data) = self.parts();
        let mut text = String::with_capacity(1 + data.len());
        text.push(kind);
        text.push_str(data);
        text
    }

    /// The type character (ASCII) and the data.
    fn parts(self) -> (char, &'a str) {
        match self {
            EnginePacket::Open(data) => ('0', data),
            EnginePacket::Close => ('1', ""),
            EnginePacket::Ping(data) => ('2', data),
            EnginePacket::Pong(data) => ('3', data),
            EnginePacket::Message(data) => ('4', data),
            EnginePacket::Upgrade => ('5', ""),
            EnginePacket::Noop => ('6', ""),
            EnginePacket::Binary(data) => ('b', data),
        }
    }
}

/// The handshake's `open` packet (engine.io-protocol v4, "Handshake"):
/// `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenPacket<'a> {
    /// The Engine.IO session id, which the client sends back as `?sid=` on every request.
    pub sid: &'a str,
    /// `["websocket"]` for a session opened by polling, `[]` for one opened on WebSocket.
    pub upgrades: &'a [&'a str],
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the client has to answer a ping.
    pub ping_timeout: u64,
    /// The most bytes the client should put in one polling payload (the Node server advertises
    /// its `maxHttpBufferSize` here).
    pub max_payload: u64,
}

impl OpenPacket<'_> {
    /// Appends `0` and the handshake JSON to `out`.
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(b'0');
        put_json(out, self);
    }
}

/// Splits a polling request's body into its packets (engine.io-protocol v4, "Packet encoding").
/// An empty body or an empty record is refused: each record holds at least a type. The caller
/// bounds the body (the `maxPayload` it advertised) before calling.
pub(crate) fn decode_payload(body: &str) -> Result<Vec<EnginePacket<'_>>, PacketError> {
    if body.is_empty() {
        return Err(PacketError::payload("empty body"));
    }
    let records = body.split(RECORD_SEPARATOR).count();
    body.split(RECORD_SEPARATOR)
        .enumerate()
        .map(|(index, record)| {
            let number = index + 1;
            if record.is_empty() {
                return Err(PacketError::payload(format!("record {number} of {records} is empty")));
            }
            EnginePacket::decode(record).map_err(|e| PacketError::payload(format!("record {number} of {records}: {e}")))
        })
        .collect()
}

#[cfg(test)] // The server writes whole records and frames itself (see `encoder`).
/// Joins encoded packets into a polling response body: `\x1e` between records. Each record is
/// one packet as this module's encoders write it, which holds no separator as long as the JSON
/// handed to them is JSON (it escapes control characters; namespaces are checked for them).
pub(crate) fn join_payload<R: AsRef<[u8]>>(records: impl IntoIterator<Item = R>, out: &mut impl BufMut) {
    for (index, record) in records.into_iter().enumerate() {
        debug_assert!(!record.as_ref().contains(&(RECORD_SEPARATOR as u8)), "a record holds the separator");
        if index > 0 {
            // ASCII: one byte.
            out.put_u8(RECORD_SEPARATOR as u8);
        }
        out.put_slice(record.as_ref());
    }
}

// ---------------------------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------------------------

/// One Socket.IO packet, decoded from the data of an Engine.IO `message`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SocketPacket<'a> {
    /// `/` when the packet names none; otherwise starts with `/`, at most
    /// [`MAX_NAMESPACE_CHARS`] characters, no `,` and no control character.
    pub namespace: &'a str,
    pub body: SocketBody,
}

/// What a Socket.IO packet carries, by type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SocketBody {
    /// `0`: join the namespace, with the client's `auth` object if it sent one (`40` and `40{}`
    /// are both a CONNECT; the first has no `auth`).
    Connect { auth: Option<Map<String, Value>> },
    /// `1`: leave the namespace.
    Disconnect,
    /// `2`: an event, `["name", args…]`, with the id to acknowledge it under if the sender
    /// wants an answer.
    Event { name: String, args: Vec<Value>, ack: Option<u64> },
    /// `3`: the answer to an event the server sent with an ack id.
    Ack { id: u64, args: Vec<Value> },
    /// `4`: a server's refusal of a CONNECT (a string or an object); a client never sends one.
    ConnectError { data: Value },
    /// `5`: an event with binary attachments (sent as that many frames or `b` records after it);
    /// its JSON is not parsed, since the server refuses the packet.
    BinaryEvent { attachments: u64, ack: Option<u64> },
    /// `6`: an ACK with binary attachments; refused like [`SocketBody::BinaryEvent`].
    BinaryAck { attachments: u64, id: Option<u64> },
}

/// The seven packet types (socket.io-protocol v5, "Exchange protocol"), in digit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl SocketType {
    fn from_char(c: char) -> Option<SocketType> {
        Some(match c {
            '0' => SocketType::Connect,
            '1' => SocketType::Disconnect,
            '2' => SocketType::Event,
            '3' => SocketType::Ack,
            '4' => SocketType::ConnectError,
            '5' => SocketType::BinaryEvent,
            '6' => SocketType::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> u8 {
        b'0' + self as u8
    }

    fn name(self) -> &'static str {
        match self {
            SocketType::Connect => "CONNECT",
            SocketType::Disconnect => "DISCONNECT",
            SocketType::Event => "EVENT",
            SocketType::Ack => "ACK",
            SocketType::ConnectError => "CONNECT_ERROR",
            SocketType::BinaryEvent => "BINARY_EVENT",
            SocketType::BinaryAck => "BINARY_ACK",
        }
    }
}

const EVENT_SHAPE: &str = "EVENT payload must be an array starting with the event name";

impl<'a> SocketPacket<'a> {
    /// Decodes the data of an Engine.IO `message`:
    /// `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, each part as socket.io-parser's
    /// `decodeString` finds it, then judged by type.
    pub(crate) fn decode(text: &'a str) -> Result<SocketPacket<'a>, PacketError> {
        let mut chars = text.chars();
        let Some(first) = chars.next() else {
            return Err(PacketError::socket("empty packet"));
        };
        let Some(kind) = SocketType::from_char(first) else {
            return Err(PacketError::socket(format!("unknown type '{}' (expected 0-6)", first.escape_debug())));
        };
        let mut rest = chars.as_str();

        let attachments = if matches!(kind, SocketType::BinaryEvent | SocketType::BinaryAck) {
            let (digits, after) = split_digits(rest);
            let Some(after) = after.strip_prefix('-').filter(|_| !digits.is_empty()) else {
                return Err(PacketError::socket(format!("{}: the attachment count must be digits followed by '-', got '{}'", kind.name(), excerpt(rest, QUOTE_CHARS))));
            };
            rest = after;
            digits.parse::<u64>().map_err(|_| PacketError::socket(format!("{}: attachment count too long ({} digits)", kind.name(), digits.len())))?
        } else {
            0
        };

        // A namespace starts with '/' and runs to the first ',' or to the end: socket.io's own
        // test suite sends `40/custom` without the comma.
        let namespace = if rest.starts_with('/') {
            let (namespace, after) = match rest.find(',') {
                Some(comma) => (&rest[..comma], &rest[comma + 1..]),
                None => (rest, ""),
            };
            check_namespace(namespace).map_err(PacketError::socket)?;
            rest = after;
            namespace
        } else {
            "/"
        };

        let (digits, data) = split_digits(rest);
        let ack = match digits {
            "" => None,
            // Only digits are left, so the one way to fail is a number past u64::MAX.
            _ => Some(digits.parse::<u64>().map_err(|_| PacketError::socket(format!("ack id too long ({} digits, over the 64-bit maximum {})", digits.len(), u64::MAX)))?),
        };
        let no_ack = || match ack {
            Some(id) => Err(PacketError::socket(format!("{} takes no ack id, got {id}", kind.name()))),
            None => Ok(()),
        };

        let body = match kind {
            SocketType::Connect => {
                no_ack()?;
                let auth = match data {
                    "" => None,
                    _ => match parse_json(kind, data)? {
                        Value::Object(auth) => Some(auth),
                        other => return Err(PacketError::socket(format!("CONNECT payload must be an object, got {}", json_kind(&other)))),
                    },
                };
                SocketBody::Connect { auth }
            }
            SocketType::Disconnect => {
                no_ack()?;
                if !data.is_empty() {
                    return Err(PacketError::socket(format!("DISCONNECT takes no payload, got '{}'", excerpt(data, QUOTE_CHARS))));
                }
                SocketBody::Disconnect
            }
            SocketType::Event => {
                if data.is_empty() {
                    return Err(PacketError::socket(format!("{EVENT_SHAPE}, got no payload")));
                }
                let items = match parse_json(kind, data)? {
                    Value::Array(items) => items,
                    other => return Err(PacketError::socket(format!("{EVENT_SHAPE}, got {}", json_kind(&other)))),
                };
                let mut items = items.into_iter();
                let name = match items.next() {
                    Some(Value::String(name)) => name,
                    Some(other) => return Err(PacketError::socket(format!("{EVENT_SHAPE}, got an array starting with {}", json_kind(&other)))),
                    None => return Err(PacketError::socket(format!("{EVENT_SHAPE}, got an empty array"))),
                };
                if RESERVED_EVENTS.contains(&name.as_str()) {
                    return Err(PacketError::socket(format!("event name '{name}' is reserved")));
                }
                SocketBody::Event { name, args: items.collect(), ack }
            }
            SocketType::Ack => {
                let Some(id) = ack else {
                    return Err(PacketError::socket("ACK without an ack id"));
                };
                if data.is_empty() {
                    return Err(PacketError::socket("ACK payload must be an array, got no payload"));
                }
                match parse_json(kind, data)? {
                    Value::Array(args) => SocketBody::Ack { id, args },
                    other => return Err(PacketError::socket(format!("ACK payload must be an array, got {}", json_kind(&other)))),
                }
            }
            SocketType::ConnectError => {
                no_ack()?;
                if data.is_empty() {
                    return Err(PacketError::socket("CONNECT_ERROR payload must be a string or an object, got no payload"));
                }
                match parse_json(kind, data)? {
                    data @ (Value::String(_) | Value::Object(_)) => SocketBody::ConnectError { data },
                    other => return Err(PacketError::socket(format!("CONNECT_ERROR payload must be a string or an object, got {}", json_kind(&other)))),
                }
            }
            SocketType::BinaryEvent => SocketBody::BinaryEvent { attachments, ack },
            SocketType::BinaryAck => SocketBody::BinaryAck { attachments, id: ack },
        };
        Ok(SocketPacket { namespace, body })
    }
}

/// The ack id of an EVENT, read from its head alone (`2[/ns,]<id>[…`), for answering an event
/// that is refused before it is parsed (too big). `None` for other packets or no id.
pub(crate) fn peek_event_ack(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('2')?;
    let rest = match rest.strip_prefix('/') {
        Some(_) => &rest[rest.find(',')? + 1..],
        None => rest,
    };
    split_digits(rest).0.parse().ok()
}

/// Splits `text` after its leading ASCII digits (a byte index past ASCII bytes: a char boundary).
fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(text.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text.len()))
}

fn parse_json(kind: SocketType, data: &str) -> Result<Value, PacketError> {
    serde_json::from_str(data).map_err(|e| PacketError::socket(format!("{} payload is not JSON ({e}): '{}'", kind.name(), excerpt(data, QUOTE_CHARS))))
}

/// Refuses a namespace the server would not echo: too long, or holding a control character.
/// (`,` cannot occur in a decoded one; the encoders check for it too.)
fn check_namespace(namespace: &str) -> Result<(), String> {
    if namespace.chars().nth(MAX_NAMESPACE_CHARS).is_some() {
        return Err(format!("namespace longer than {MAX_NAMESPACE_CHARS} characters: '{}…'", excerpt(namespace, QUOTE_CHARS)));
    }
    if namespace.chars().any(char::is_control) {
        return Err(format!("namespace '{}' has a control character", namespace.escape_debug()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Socket.IO, what the server sends. Each writer appends one whole Engine.IO message: `4`, the
// Socket.IO type, `<namespace>,` unless the namespace is `/`, then the rest.
// ---------------------------------------------------------------------------------------------

/// The CONNECT reply granting a namespace: `40{"sid":"…"}`, `40/admin,{"sid":"…"}`. The `sid` is
/// the Socket.IO socket's id, not the Engine.IO session's (socket.io-protocol v5, "Difference
/// between v5 and v4"); a v3+ client treats a CONNECT without it as a v2 server and gives up.
pub(crate) fn write_connect(out: &mut impl BufMut, namespace: &str, sid: &str) {
    #[derive(Serialize)]
    struct Reply<'a> {
        sid: &'a str,
    }
    put_header(out, SocketType::Connect, namespace);
    put_json(out, &Reply { sid });
}

/// The CONNECT_ERROR refusing a namespace: `44{"message":"…"}`, `44/random,{"message":"…"}`.
pub(crate) fn write_connect_error(out: &mut impl BufMut, namespace: &str, message: &str, code: Option<&str>) {
    // socket.io-client hands `message` and `data` to `connect_error` as an Error's `message`
    // and `data`: `data.code` is what a program branches on (`token_expired`: get a new one).
    #[derive(Serialize)]
    struct Data<'a> {
        code: &'a str,
    }
    #[derive(Serialize)]
    struct Refusal<'a> {
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Data<'a>>,
    }
    put_header(out, SocketType::ConnectError, namespace);
    put_json(out, &Refusal { message, data: code.map(|code| Data { code }) });
}

#[cfg(test)] // The server writes whole records and frames itself (see `encoder`).
/// The server's DISCONNECT from a namespace: `41`, `41/admin,`.
pub(crate) fn write_disconnect(out: &mut impl BufMut, namespace: &str) {
    put_header(out, SocketType::Disconnect, namespace);
}

#[cfg(test)] // The server writes whole records and frames itself (see `encoder`).
/// An EVENT without ack id: `42["name",arg…]`, each argument already serialised JSON.
pub(crate) fn write_event(out: &mut impl BufMut, namespace: &str, event: &str, args: &[&str]) {
    put_header(out, SocketType::Event, namespace);
    out.put_u8(b'[');
    put_json(out, event);
    for arg in args {
        out.put_u8(b',');
        out.put_slice(arg.as_bytes());
    }
    out.put_u8(b']');
}

/// The start of an EVENT whose one argument the caller writes: `42["name",`. The caller then
/// appends the argument's JSON and [`EVENT_SUFFIX`]; a session writes the prefix once and reuses
/// it for every frame (`42["quotes",` + `{"quotes":[…]}` + `]`).
pub(crate) fn write_event_prefix(out: &mut impl BufMut, namespace: &str, event: &str) {
    put_header(out, SocketType::Event, namespace);
    out.put_u8(b'[');
    put_json(out, event);
    out.put_u8(b',');
}

/// The ACK of a client's event: `43<id>[arg…]`, each argument already serialised JSON (none:
/// `43<id>[]`).
pub(crate) fn write_ack(out: &mut impl BufMut, namespace: &str, id: u64, args: &[&str]) {
    put_header(out, SocketType::Ack, namespace);
    put_json(out, &id);
    out.put_u8(b'[');
    for (index, arg) in args.iter().enumerate() {
        if index > 0 {
            out.put_u8(b',');
        }
        out.put_slice(arg.as_bytes());
    }
    out.put_u8(b']');
}

/// `4`, the type digit and the namespace part. The namespace is `/` or one a client sent (which
/// decoding checked); it never contains `,`, which would end it early on the client's side.
fn put_header(out: &mut impl BufMut, kind: SocketType, namespace: &str) {
    debug_assert!(namespace.starts_with('/') && !namespace.contains(',') && check_namespace(namespace).is_ok(), "namespace {namespace:?}");
    out.put_slice(&[b'4', kind.digit()]);
    if namespace != "/" {
        out.put_slice(namespace.as_bytes());
        out.put_u8(b',');
    }
}

fn put_json<T: Serialize + ?Sized>(out: &mut impl BufMut, value: &T) {
    // Strings, integers and structs of them serialise without error, and a growing buffer's
    // writer takes every byte: serde_json can only fail on I/O, on non-string map keys or in a
    // failing Serialize impl, none of which is here.
    serde_json::to_writer(BufMut::writer(out), value).expect("strings and integers serialise into a growing buffer");
}

#[cfg(test)]
mod tests {
    use actix_web::web::BytesMut;
    use serde_json::json;

    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("encoders write UTF-8")
    }

    fn engine_error(input: &str) -> String {
        EnginePacket::decode(input).expect_err(input).to_string()
    }

    fn socket(input: &str) -> SocketPacket<'_> {
        SocketPacket::decode(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn socket_error(input: &str) -> String {
        SocketPacket::decode(input).expect_err(input).to_string()
    }

    fn args(values: serde_json::Value) -> Vec<Value> {
        match values {
            Value::Array(items) => items,
            other => panic!("not an array: {other}"),
        }
    }

    // -- Engine.IO ---------------------------------------------------------------------------

    #[test]
    fn engine_packets_decode_by_type() {
        // engine.io-protocol v4, "Protocol" (the type table), "Upgrade" (2probe, 3probe, 5) and
        // "Packet encoding" (4hello, bAQIDBA==).
        assert_eq!(EnginePacket::decode("0{}"), Ok(EnginePacket::Open("{}")));
        assert_eq!(EnginePacket::decode("1"), Ok(EnginePacket::Close));
        assert_eq!(EnginePacket::decode("2"), Ok(EnginePacket::Ping("")));
        assert_eq!(EnginePacket::decode("2probe"), Ok(EnginePacket::Ping("probe")));
        assert_eq!(EnginePacket::decode("3"), Ok(EnginePacket::Pong("")));
        assert_eq!(EnginePacket::decode("3probe"), Ok(EnginePacket::Pong("probe")));
        assert_eq!(EnginePacket::decode("4hello"), Ok(EnginePacket::Message("hello")));
        assert_eq!(EnginePacket::decode("4"), Ok(EnginePacket::Message("")));
        assert_eq!(EnginePacket::decode("4€ é"), Ok(EnginePacket::Message("€ é")));
        assert_eq!(EnginePacket::decode("5"), Ok(EnginePacket::Upgrade));
        assert_eq!(EnginePacket::decode("6"), Ok(EnginePacket::Noop));
        assert_eq!(EnginePacket::decode("bAQIDBA=="), Ok(EnginePacket::Binary("AQIDBA==")));
    }

    #[test]
    fn engine_refusals_name_the_fault() {
        assert_eq!(engine_error(""), "engine.io packet: empty packet");
        // engine.io-protocol's test suite, "closes the session upon invalid packet format".
        assert_eq!(engine_error("abc"), "engine.io packet: unknown type 'a' (expected 0-6, or b for base64)");
        assert_eq!(engine_error("7"), "engine.io packet: unknown type '7' (expected 0-6, or b for base64)");
        assert_eq!(engine_error("€4"), "engine.io packet: unknown type '€' (expected 0-6, or b for base64)");
        assert_eq!(engine_error("\u{1e}"), "engine.io packet: unknown type '\\u{1e}' (expected 0-6, or b for base64)");
        assert_eq!(engine_error("5probe"), "engine.io packet: upgrade (5) takes no data, got 'probe'");
        assert_eq!(engine_error("1x"), "engine.io packet: close (1) takes no data, got 'x'");
        assert_eq!(engine_error("6 "), "engine.io packet: noop (6) takes no data, got ' '");
    }

    #[test]
    fn engine_packets_encode_as_documented() {
        assert_eq!(EnginePacket::Ping("").to_text(), "2");
        assert_eq!(EnginePacket::Pong("probe").to_text(), "3probe");
        assert_eq!(EnginePacket::Noop.to_text(), "6");
        assert_eq!(EnginePacket::Close.to_text(), "1");
        assert_eq!(EnginePacket::Message("hello").to_text(), "4hello");
        for input in ["0{\"sid\":\"x\"}", "1", "2", "2probe", "3", "3probe", "4", "4hello", "4€", "5", "6", "bAQIDBA=="] {
            assert_eq!(EnginePacket::decode(input).unwrap().to_text(), input);
        }
    }

    #[test]
    fn the_open_packet_matches_the_sample_session() {
        // socket.io-protocol v5, "Sample session", request n°1.
        let open = OpenPacket { sid: "lv_VI97HAXpY6yYWAAAC", upgrades: &["websocket"], ping_interval: 25000, ping_timeout: 5000, max_payload: 1_000_000 };
        assert_eq!(text(|out| open.encode(out)), r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#);
        // A session opened on WebSocket offers no upgrade (engine.io-protocol's test suite).
        let open = OpenPacket { sid: "a\"b", upgrades: &[], ping_interval: 300, ping_timeout: 200, max_payload: 1_000_000 };
        assert_eq!(text(|out| open.encode(out)), r#"0{"sid":"a\"b","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#);
    }

    #[test]
    fn polling_payloads_split_on_the_record_separator() {
        // engine.io-protocol v4, "Packet encoding", "HTTP long-polling".
        assert_eq!(decode_payload("4hello\x1e2\x1e4world"), Ok(vec![EnginePacket::Message("hello"), EnginePacket::Ping(""), EnginePacket::Message("world")]));
        assert_eq!(decode_payload("4hello\x1ebAQIDBA=="), Ok(vec![EnginePacket::Message("hello"), EnginePacket::Binary("AQIDBA==")]));
        // socket.io-protocol v5, "Sample session", request n°5.
        assert_eq!(decode_payload("42[\"hello\"]\x1e42[\"world\"]"), Ok(vec![EnginePacket::Message("2[\"hello\"]"), EnginePacket::Message("2[\"world\"]")]));
        assert_eq!(decode_payload("3"), Ok(vec![EnginePacket::Pong("")]));
    }

    #[test]
    fn polling_payload_refusals_name_the_record() {
        assert_eq!(decode_payload("").unwrap_err().to_string(), "polling payload: empty body");
        assert_eq!(decode_payload("\x1e").unwrap_err().to_string(), "polling payload: record 1 of 2 is empty");
        assert_eq!(decode_payload("4a\x1e\x1e4b").unwrap_err().to_string(), "polling payload: record 2 of 3 is empty");
        assert_eq!(decode_payload("4a\x1e").unwrap_err().to_string(), "polling payload: record 2 of 2 is empty");
        assert_eq!(decode_payload("4a\x1eabc").unwrap_err().to_string(), "polling payload: record 2 of 2: engine.io packet: unknown type 'a' (expected 0-6, or b for base64)");
    }

    #[test]
    fn polling_payloads_join_with_the_record_separator() {
        // engine.io-protocol's test suite: "4test1\x1e4test2\x1e4test3" comes back as sent.
        let records: Vec<String> = ["test1", "test2", "test3"].iter().map(|m| EnginePacket::Message(m).to_text()).collect();
        let mut body = Vec::new();
        join_payload(&records, &mut body);
        assert_eq!(body, b"4test1\x1e4test2\x1e4test3");
        let mut one = BytesMut::new();
        join_payload(["2"], &mut one);
        assert_eq!(&one[..], b"2");
        let mut none = Vec::new();
        join_payload(Vec::<&[u8]>::new(), &mut none);
        assert!(none.is_empty());
        let body = String::from_utf8(body).unwrap();
        assert_eq!(decode_payload(&body).unwrap().len(), 3);
    }

    // -- Socket.IO, decoding -----------------------------------------------------------------

    #[test]
    fn socket_packets_decode_as_the_protocol_examples() {
        // socket.io-protocol v5, "Packet encoding", "Examples".
        assert_eq!(socket("0"), SocketPacket { namespace: "/", body: SocketBody::Connect { auth: None } });
        let connect = socket(r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#);
        assert_eq!(connect.namespace, "/admin");
        assert_eq!(connect.body, SocketBody::Connect { auth: json!({"sid": "oSO0OpakMV_3jnilAAAA"}).as_object().cloned() });
        assert_eq!(socket(r#"4{"message":"Not authorized"}"#).body, SocketBody::ConnectError { data: json!({"message": "Not authorized"}) });
        assert_eq!(socket(r#"2["foo"]"#), SocketPacket { namespace: "/", body: SocketBody::Event { name: "foo".into(), args: vec![], ack: None } });
        assert_eq!(socket(r#"2/admin,["bar"]"#), SocketPacket { namespace: "/admin", body: SocketBody::Event { name: "bar".into(), args: vec![], ack: None } });
        assert_eq!(socket(r#"51-["baz",{"_placeholder":true,"num":0}]"#).body, SocketBody::BinaryEvent { attachments: 1, ack: None });
        let binary = socket(r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#);
        assert_eq!((binary.namespace, binary.body), ("/admin", SocketBody::BinaryEvent { attachments: 2, ack: None }));
        assert_eq!(socket(r#"212["foo"]"#).body, SocketBody::Event { name: "foo".into(), args: vec![], ack: Some(12) });
        assert_eq!(socket(r#"3/admin,13["bar"]"#), SocketPacket { namespace: "/admin", body: SocketBody::Ack { id: 13, args: args(json!(["bar"])) } });
        assert_eq!(socket(r#"61-15["bar",{"_placeholder":true,"num":0}]"#).body, SocketBody::BinaryAck { attachments: 1, id: Some(15) });
        assert_eq!(socket("1"), SocketPacket { namespace: "/", body: SocketBody::Disconnect });
        assert_eq!(socket("1/admin,"), SocketPacket { namespace: "/admin", body: SocketBody::Disconnect });
        // "Sample session": `42/admin,1["tellme"]`, an event asking for an ack.
        assert_eq!(socket(r#"2/admin,1["tellme"]"#), SocketPacket { namespace: "/admin", body: SocketBody::Event { name: "tellme".into(), args: vec![], ack: Some(1) } });
    }

    #[test]
    fn socket_packets_decode_as_the_test_suite_sends_them() {
        // socket.io-protocol's test suite (test-suite/test-suite.js), without the Engine.IO `4`.
        assert_eq!(socket(r#"0{"token":"123"}"#).body, SocketBody::Connect { auth: json!({"token": "123"}).as_object().cloned() });
        assert_eq!(socket("0/custom,"), SocketPacket { namespace: "/custom", body: SocketBody::Connect { auth: None } });
        // The namespace runs to the end when no comma closes it.
        assert_eq!(socket("0/custom"), SocketPacket { namespace: "/custom", body: SocketBody::Connect { auth: None } });
        assert_eq!(socket("1/custom").namespace, "/custom");
        assert_eq!(socket(r#"0/custom,{"token":"abc"}"#).body, SocketBody::Connect { auth: json!({"token": "abc"}).as_object().cloned() });
        assert_eq!(socket("0{}").body, SocketBody::Connect { auth: Some(Map::new()) });
        assert_eq!(socket(r#"2["message",1,"2",{"3":[true]}]"#).body, SocketBody::Event { name: "message".into(), args: args(json!([1, "2", {"3": [true]}])), ack: None });
        assert_eq!(
            socket(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#).body,
            SocketBody::Event { name: "message-with-ack".into(), args: args(json!([1, "2", {"3": [false]}])), ack: Some(456) }
        );
        assert_eq!(
            socket(r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#).body,
            SocketBody::BinaryEvent { attachments: 2, ack: Some(789) }
        );
        assert_eq!(socket("50-[\"x\"]").body, SocketBody::BinaryEvent { attachments: 0, ack: None });
        // Multi-byte text passes through untouched.
        assert_eq!(socket("2/ñ€,[\"𝄞\",\"é\"]"), SocketPacket { namespace: "/ñ€", body: SocketBody::Event { name: "𝄞".into(), args: args(json!(["é"])), ack: None } });
    }

    #[test]
    fn socket_refusals_name_the_fault() {
        // The test suite's "invalid format" cases ("4abc", "42{}", `42abc[…]`).
        assert_eq!(socket_error("abc"), "socket.io packet: unknown type 'a' (expected 0-6)");
        assert_eq!(socket_error("2{}"), "socket.io packet: EVENT payload must be an array starting with the event name, got an object");
        assert!(socket_error(r#"2abc["message-with-ack",1]"#).starts_with("socket.io packet: EVENT payload is not JSON ("), "{}", socket_error("2abc[]"));
        // socket.io-parser's test/parser.js, "throw an error upon parsing error".
        assert_eq!(socket_error("999"), "socket.io packet: unknown type '9' (expected 0-6)");
        // (Type 4, ack id 42: refused for the id before its broken JSON is read.)
        assert_eq!(socket_error(r#"442["some","data""#), "socket.io packet: CONNECT_ERROR takes no ack id, got 42");
        assert!(socket_error(r#"4["some","data""#).starts_with("socket.io packet: CONNECT_ERROR payload is not JSON ("));
        assert_eq!(socket_error(r#"0/admin,"invalid""#), "socket.io packet: CONNECT payload must be an object, got a string");
        assert_eq!(socket_error("0[]"), "socket.io packet: CONNECT payload must be an object, got an empty array");
        assert_eq!(socket_error("1/admin,{}"), "socket.io packet: DISCONNECT takes no payload, got '{}'");
        assert!(socket_error(r#"2/admin,"invalid"#).starts_with("socket.io packet: EVENT payload is not JSON ("));
        assert_eq!(socket_error("2/admin,{}"), "socket.io packet: EVENT payload must be an array starting with the event name, got an object");
        assert_eq!(socket_error(r#"2[{"toString":"foo"}]"#), "socket.io packet: EVENT payload must be an array starting with the event name, got an array starting with an object");
        assert_eq!(socket_error(r#"2[true,"foo"]"#), "socket.io packet: EVENT payload must be an array starting with the event name, got an array starting with a boolean");
        assert_eq!(socket_error(r#"2[null,"bar"]"#), "socket.io packet: EVENT payload must be an array starting with the event name, got an array starting with null");
        assert_eq!(socket_error(r#"2["connect"]"#), "socket.io packet: event name 'connect' is reserved");
        assert_eq!(socket_error(r#"2["disconnect","123"]"#), "socket.io packet: event name 'disconnect' is reserved");
        for bad_count in ["5", "51", "5a-", "51.23-", "5-[\"x\"]"] {
            assert!(socket_error(bad_count).starts_with("socket.io packet: BINARY_EVENT: the attachment count must be digits followed by '-', got '"), "{bad_count}");
        }
        assert!(socket_error("6x").starts_with("socket.io packet: BINARY_ACK: the attachment count"));
        // Beyond the reference parser: the protocol document's rules and the server's bounds.
        assert_eq!(socket_error(""), "socket.io packet: empty packet");
        assert_eq!(socket_error("2"), "socket.io packet: EVENT payload must be an array starting with the event name, got no payload");
        assert_eq!(socket_error("2[]"), "socket.io packet: EVENT payload must be an array starting with the event name, got an empty array");
        assert_eq!(socket_error("2[1]"), "socket.io packet: EVENT payload must be an array starting with the event name, got an array starting with a number");
        assert_eq!(socket_error("3[]"), "socket.io packet: ACK without an ack id");
        assert_eq!(socket_error("312"), "socket.io packet: ACK payload must be an array, got no payload");
        assert_eq!(socket_error("312{}"), "socket.io packet: ACK payload must be an array, got an object");
        assert_eq!(socket_error("05{}"), "socket.io packet: CONNECT takes no ack id, got 5");
        assert_eq!(socket_error("1/a,7"), "socket.io packet: DISCONNECT takes no ack id, got 7");
        assert_eq!(socket_error("4"), "socket.io packet: CONNECT_ERROR payload must be a string or an object, got no payload");
        assert_eq!(socket_error("4[]"), "socket.io packet: CONNECT_ERROR payload must be a string or an object, got an empty array");
        assert_eq!(socket_error("0null"), "socket.io packet: CONNECT payload must be an object, got null");
        assert!(socket_error(r#"2["a"]x"#).contains("trailing characters"), "{}", socket_error(r#"2["a"]x"#));
        assert_eq!(socket_error("0/a\u{1e}b,"), "socket.io packet: namespace '/a\\u{1e}b' has a control character");
        assert_eq!(socket_error("€"), "socket.io packet: unknown type '€' (expected 0-6)");
    }

    #[test]
    fn ack_ids_and_attachment_counts_must_fit_in_64_bits() {
        assert_eq!(socket("218446744073709551615[\"a\"]").body, SocketBody::Event { name: "a".into(), args: vec![], ack: Some(u64::MAX) });
        assert_eq!(socket_error("218446744073709551616[\"a\"]"), "socket.io packet: ack id too long (20 digits, over the 64-bit maximum 18446744073709551615)");
        let long = format!("2{}[\"a\"]", "9".repeat(10_000));
        assert_eq!(socket_error(&long), "socket.io packet: ack id too long (10000 digits, over the 64-bit maximum 18446744073709551615)");
        // Leading zeros are the same number, as for JavaScript's Number().
        assert_eq!(socket("2007[\"a\"]").body, SocketBody::Event { name: "a".into(), args: vec![], ack: Some(7) });
        assert_eq!(socket_error("5184467440737095516160-[]"), "socket.io packet: BINARY_EVENT: attachment count too long (21 digits)");
    }

    #[test]
    fn an_event_ack_id_is_read_from_its_head() {
        assert_eq!(peek_event_ack("212[\"subscribe\""), Some(12));
        assert_eq!(peek_event_ack("2/admin,7[\"x"), Some(7));
        assert_eq!(peek_event_ack("2[\"x\"]"), None);
        assert_eq!(peek_event_ack("312[]"), None);
        assert_eq!(peek_event_ack("2/admin"), None);
        assert_eq!(peek_event_ack("299999999999999999999999["), None);
    }

    #[test]
    fn namespaces_are_bounded() {
        let longest = format!("/{}", "n".repeat(MAX_NAMESPACE_CHARS - 1));
        let packet = format!("0{longest},");
        assert_eq!(socket(&packet).namespace, longest);
        // Counted in characters: 127 two-byte characters after the '/' still fit.
        let wide = format!("/{}", "é".repeat(MAX_NAMESPACE_CHARS - 1));
        assert_eq!(socket(&format!("0{wide}")).namespace, wide);
        let too_long = format!("0/{}", "n".repeat(MAX_NAMESPACE_CHARS));
        assert_eq!(socket_error(&too_long), format!("socket.io packet: namespace longer than {MAX_NAMESPACE_CHARS} characters: '/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn…'"));
        let huge = format!("2/{}", "x".repeat(1 << 20));
        assert!(socket_error(&huge).starts_with("socket.io packet: namespace longer than"));
    }

    #[test]
    fn deeply_nested_json_is_refused_not_a_stack_overflow() {
        let deep = format!("2[\"a\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(socket_error(&deep).contains("recursion limit exceeded"), "{}", socket_error(&deep));
        let deep_object = format!("0{}", "{\"a\":".repeat(100_000));
        assert!(socket_error(&deep_object).starts_with("socket.io packet: CONNECT payload is not JSON ("));
        // JavaScript takes a lone surrogate; a Rust String cannot hold one.
        assert!(socket_error(r#"2["a","\ud800"]"#).starts_with("socket.io packet: EVENT payload is not JSON ("), "{}", socket_error(r#"2["a","\ud800"]"#));
    }

    // -- Socket.IO, encoding -----------------------------------------------------------------

    #[test]
    fn connect_replies_carry_the_socket_id() {
        // socket.io-protocol v5, "Sample session": request n°3 and the WebSocket frames.
        assert_eq!(text(|out| write_connect(out, "/", "wZX3oN0bSVIhsaknAAAI")), r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#);
        assert_eq!(text(|out| write_connect(out, "/admin", "-G5j-67EZFp-q59rADQM")), r#"40/admin,{"sid":"-G5j-67EZFp-q59rADQM"}"#);
        // "Packet encoding" gives `4{"message":"Not authorized"}`, sent as `44…`; the test suite
        // expects `44/random,{"message":"Invalid namespace"}` for an unknown namespace.
        assert_eq!(text(|out| write_connect_error(out, "/", "Not authorized", None)), r#"44{"message":"Not authorized"}"#);
        assert_eq!(text(|out| write_connect_error(out, "/random", "Invalid namespace", None)), r#"44/random,{"message":"Invalid namespace"}"#);
        assert_eq!(text(|out| write_connect_error(out, "/", "the token expired", Some("token_expired"))), r#"44{"message":"the token expired","data":{"code":"token_expired"}}"#);
        assert_eq!(text(|out| write_connect_error(out, "/", "say \"no\"\n", None)), r#"44{"message":"say \"no\"\n"}"#);
        // "Disconnection from a namespace": `1`, `1/admin,`.
        assert_eq!(text(|out| write_disconnect(out, "/")), "41");
        assert_eq!(text(|out| write_disconnect(out, "/admin")), "41/admin,");
    }

    #[test]
    fn events_and_acks_encode_as_documented() {
        // socket.io-protocol v5, "Sample session", request n°4: socket.emit('hey', 'Jude').
        assert_eq!(text(|out| write_event(out, "/", "hey", &["\"Jude\""])), r#"42["hey","Jude"]"#);
        // The test suite's auth echo, on a custom namespace.
        assert_eq!(text(|out| write_event(out, "/custom", "auth", &["{}"])), r#"42/custom,["auth",{}]"#);
        assert_eq!(text(|out| write_event(out, "/", "bar", &[])), r#"42["bar"]"#);
        assert_eq!(text(|out| write_event(out, "/", "a\"b\u{1e}", &["1", "2"])), r#"42["a\"b\u001e",1,2]"#);
        // "Acknowledgement": `Server > { type: ACK, data: [], id: 12 }`; `3/admin,13["bar"]`;
        // the test suite's `43456[1,"2",{"3":[false]}]`.
        assert_eq!(text(|out| write_ack(out, "/", 12, &[])), "4312[]");
        assert_eq!(text(|out| write_ack(out, "/admin", 13, &["\"bar\""])), r#"43/admin,13["bar"]"#);
        assert_eq!(text(|out| write_ack(out, "/", 456, &["1", "\"2\"", r#"{"3":[false]}"#])), r#"43456[1,"2",{"3":[false]}]"#);
        assert_eq!(text(|out| write_ack(out, "/", u64::MAX, &[])), "4318446744073709551615[]");
    }

    #[test]
    fn an_event_prefix_and_suffix_frame_a_spliced_argument() {
        let mut frame = BytesMut::new();
        write_event_prefix(&mut frame, "/", "quotes");
        assert_eq!(&frame[..], br#"42["quotes","#);
        frame.extend_from_slice(br#"{"quotes":[{"symbol":"AAPL","last":1.5},{"symbol":"MSFT","last":2}]}"#);
        frame.extend_from_slice(EVENT_SUFFIX);
        assert_eq!(&frame[..], br#"42["quotes",{"quotes":[{"symbol":"AAPL","last":1.5},{"symbol":"MSFT","last":2}]}]"#);
        assert_eq!(text(|out| write_event_prefix(out, "/feed", "q")), r#"42/feed,["q","#);
        // The spliced frame is what write_event writes, and decodes back to the event.
        let spliced = String::from_utf8(frame.to_vec()).unwrap();
        assert_eq!(spliced, text(|out| write_event(out, "/", "quotes", &[r#"{"quotes":[{"symbol":"AAPL","last":1.5},{"symbol":"MSFT","last":2}]}"#])));
        let EnginePacket::Message(data) = EnginePacket::decode(&spliced).unwrap() else { panic!("not a message: {spliced}") };
        assert_eq!(
            socket(data).body,
            SocketBody::Event { name: "quotes".into(), args: args(json!([{"quotes": [{"symbol": "AAPL", "last": 1.5}, {"symbol": "MSFT", "last": 2}]}])), ack: None }
        );
    }

    #[test]
    fn what_the_server_writes_decodes_back() {
        let message = |out: Vec<u8>| -> String {
            let text = String::from_utf8(out).unwrap();
            match EnginePacket::decode(&text) {
                Ok(EnginePacket::Message(data)) => data.to_owned(),
                other => panic!("{text:?} is not a message: {other:?}"),
            }
        };
        for namespace in ["/", "/admin", "/ñ€"] {
            let mut out = Vec::new();
            write_connect(&mut out, namespace, "sid1");
            let data = message(out);
            assert_eq!(socket(&data), SocketPacket { namespace, body: SocketBody::Connect { auth: json!({"sid": "sid1"}).as_object().cloned() } });
            let mut out = Vec::new();
            write_connect_error(&mut out, namespace, "no", None);
            assert_eq!(socket(&message(out)), SocketPacket { namespace, body: SocketBody::ConnectError { data: json!({"message": "no"}) } });
            let mut out = Vec::new();
            write_disconnect(&mut out, namespace);
            assert_eq!(socket(&message(out)), SocketPacket { namespace, body: SocketBody::Disconnect });
            let mut out = Vec::new();
            write_event(&mut out, namespace, "e", &["[1]", "null"]);
            assert_eq!(socket(&message(out)), SocketPacket { namespace, body: SocketBody::Event { name: "e".into(), args: args(json!([[1], null])), ack: None } });
            let mut out = Vec::new();
            write_ack(&mut out, namespace, 9, &["true"]);
            assert_eq!(socket(&message(out)), SocketPacket { namespace, body: SocketBody::Ack { id: 9, args: args(json!([true])) } });
        }
    }

    // -- Never panics ------------------------------------------------------------------------

    /// Runs every decoder on `input`; each either decodes or names its layer in the error.
    fn decode_everything(input: &str) {
        if let Err(e) = EnginePacket::decode(input) {
            assert!(e.to_string().starts_with("engine.io packet: "), "{input:?}: {e}");
        }
        if let Err(e) = decode_payload(input) {
            assert!(e.to_string().starts_with("polling payload: "), "{input:?}: {e}");
        }
        match SocketPacket::decode(input) {
            Ok(packet) => {
                assert!(packet.namespace.starts_with('/') && packet.namespace.chars().count() <= MAX_NAMESPACE_CHARS, "{input:?}");
                assert!(!packet.namespace.contains(',') && !packet.namespace.chars().any(char::is_control), "{input:?}");
            }
            Err(e) => assert!(e.to_string().starts_with("socket.io packet: "), "{input:?}: {e}"),
        }
        // The Socket.IO decoder as the transport calls it: on the data of an Engine.IO message.
        if let Some(data) = input.strip_prefix('4') {
            let _ = SocketPacket::decode(data);
        }
    }

    /// A small deterministic generator (xorshift64*), so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    const VALID: &[&str] = &[
        "0",
        "0{}",
        "40",
        "40/admin,",
        "0/admin,{\"token\":\"123\"}",
        "1/admin,",
        "2[\"foo\"]",
        "42[\"hey\",\"Jude\"]",
        "212[\"foo\"]",
        "2/admin,13[\"bar\",{\"a\":[1,2.5e3,null,true]}]",
        "3/admin,13[\"bar\"]",
        "4312[]",
        "4{\"message\":\"Not authorized\"}",
        "52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0}]",
        "61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]",
        "4hello\x1e2\x1e4world",
        "4hello\x1ebAQIDBA==",
        "2probe",
        "3probe",
        "5",
        "6",
        "2/ñ€,[\"𝄞\",\"é\\u00e9\"]",
        "0{\"sid\":\"lv_VI97HAXpY6yYWAAAC\",\"upgrades\":[\"websocket\"]}",
    ];

    #[test]
    fn no_input_makes_a_decoder_panic() {
        // Every cut of every sample, at every byte: a cut inside a multi-byte character leaves
        // U+FFFD in its place, which is what a lossy transport would hand over.
        for sample in VALID {
            let bytes = sample.as_bytes();
            for cut in 0..=bytes.len() {
                decode_everything(&String::from_utf8_lossy(&bytes[..cut]));
                decode_everything(&String::from_utf8_lossy(&bytes[cut..]));
                // A multi-byte character, a separator or a comma slipped in at every place.
                for insert in ["é", "€", "𝄞", "\u{1e}", ",", "/", "-", "9", "\u{0}"] {
                    let mut spliced = bytes[..cut].to_vec();
                    spliced.extend_from_slice(insert.as_bytes());
                    spliced.extend_from_slice(&bytes[cut..]);
                    decode_everything(&String::from_utf8_lossy(&spliced));
                }
            }
        }
        // Random strings over the characters that matter to the grammar, and a few that don't.
        const PIECES: &[&str] = &[
            "0", "1", "2", "3", "4", "5", "6", "7", "9", "b", "-", "/", ",", "[", "]", "{", "}", "\"", ":", "null", "true", "\\", "\u{1e}", "é", "€", "𝄞", " ", "a", "\u{7f}",
            "\u{fffd}",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..50_000 {
            let len = rng.below(24);
            let input: String = (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            decode_everything(&input);
        }
        // Valid packets with random mutations: a piece replaced, dropped or inserted.
        for _ in 0..50_000 {
            let mut chars: Vec<char> = VALID[rng.below(VALID.len())].chars().collect();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(chars.len() + 1);
                let piece = PIECES[rng.below(PIECES.len())].chars().next().unwrap_or('x');
                match rng.below(3) {
                    0 if at < chars.len() => chars[at] = piece,
                    1 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.insert(at, piece),
                }
            }
            decode_everything(&chars.into_iter().collect::<String>());
        }
    }
}

/// The decoders' invariants, checked on any text: by the property tests below and by the fuzz
/// target `socketio` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// Runs every decoder on `input` (as a frame, as a polling body, as a Socket.IO packet and as
    /// the data of an Engine.IO message) and asserts: no panic; a refusal names its layer; an
    /// Engine.IO packet or payload that decodes encodes back to the same text; a decoded
    /// namespace is one the server may echo (starts with `/`, at most
    /// [`MAX_NAMESPACE_CHARS`] characters, no `,`, no control character).
    pub(crate) fn check_any_text(input: &str) {
        match EnginePacket::decode(input) {
            Ok(packet) => assert_eq!(packet.to_text(), input, "an engine.io packet encodes back"),
            Err(e) => assert!(e.to_string().starts_with("engine.io packet: "), "{input:?}: {e}"),
        }
        match decode_payload(input) {
            Ok(packets) => {
                let records: Vec<String> = packets.iter().map(|p| p.to_text()).collect();
                assert_eq!(records.join("\u{1e}"), input, "a polling payload encodes back");
            }
            Err(e) => assert!(e.to_string().starts_with("polling payload: "), "{input:?}: {e}"),
        }
        for text in [Some(input), input.strip_prefix('4')].into_iter().flatten() {
            match SocketPacket::decode(text) {
                Ok(packet) => {
                    let namespace = packet.namespace;
                    assert!(namespace.starts_with('/') && namespace.chars().count() <= MAX_NAMESPACE_CHARS, "{text:?}");
                    assert!(!namespace.contains(',') && !namespace.chars().any(char::is_control), "{text:?}");
                    if let SocketBody::Event { name, .. } = &packet.body {
                        assert!(!RESERVED_EVENTS.contains(&name.as_str()), "{text:?}");
                    }
                }
                Err(e) => assert!(e.to_string().starts_with("socket.io packet: "), "{text:?}: {e}"),
            }
        }
        let _ = peek_event_ack(input);
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;
        use serde_json::json;

        use super::*;
        use crate::test_support::proptest_config;

        fn namespace() -> impl Strategy<Value = String> {
            prop_oneof![Just("/".to_string()), "/[a-zA-Z0-9é€𝄞_/. -]{1,30}"]
        }

        /// JSON that reads back as itself: integers, short strings, flags, nesting.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), any::<i64>().prop_map(Value::from), any::<String>().prop_map(Value::from)];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = Map<String, Value>> {
            prop::collection::vec(("\\PC{0,6}", json_value()), 0..4).prop_map(|fields| fields.into_iter().collect())
        }

        fn event_name() -> impl Strategy<Value = String> {
            any::<String>().prop_filter("a reserved name", |name| !RESERVED_EVENTS.contains(&name.as_str()))
        }

        fn body() -> impl Strategy<Value = SocketBody> {
            prop_oneof![
                prop::option::of(object()).prop_map(|auth| SocketBody::Connect { auth }),
                Just(SocketBody::Disconnect),
                (event_name(), prop::collection::vec(json_value(), 0..4), prop::option::of(any::<u64>())).prop_map(|(name, args, ack)| SocketBody::Event { name, args, ack }),
                (any::<u64>(), prop::collection::vec(json_value(), 0..4)).prop_map(|(id, args)| SocketBody::Ack { id, args }),
                prop_oneof![any::<String>().prop_map(Value::from), object().prop_map(Value::Object)].prop_map(|data| SocketBody::ConnectError { data }),
                (any::<u64>(), prop::option::of(any::<u64>())).prop_map(|(attachments, ack)| SocketBody::BinaryEvent { attachments, ack }),
                (any::<u64>(), prop::option::of(any::<u64>())).prop_map(|(attachments, id)| SocketBody::BinaryAck { attachments, id }),
            ]
        }

        /// A client's encoder, as socket.io-parser's `encodeAsString` writes a packet.
        fn encode(namespace: &str, body: &SocketBody) -> String {
            let mut out = String::new();
            let (kind, attachments, ack, data) = match body {
                SocketBody::Connect { auth } => ('0', None, None, auth.as_ref().map(|a| Value::Object(a.clone()).to_string())),
                SocketBody::Disconnect => ('1', None, None, None),
                SocketBody::Event { name, args, ack } => {
                    let mut items = vec![Value::from(name.clone())];
                    items.extend(args.iter().cloned());
                    ('2', None, *ack, Some(Value::Array(items).to_string()))
                }
                SocketBody::Ack { id, args } => ('3', None, Some(*id), Some(Value::Array(args.clone()).to_string())),
                SocketBody::ConnectError { data } => ('4', None, None, Some(data.to_string())),
                SocketBody::BinaryEvent { attachments, ack } => ('5', Some(*attachments), *ack, None),
                SocketBody::BinaryAck { attachments, id } => ('6', Some(*attachments), *id, None),
            };
            out.push(kind);
            if let Some(count) = attachments {
                out.push_str(&format!("{count}-"));
            }
            if namespace != "/" {
                out.push_str(namespace);
                out.push(',');
            }
            if let Some(id) = ack {
                out.push_str(&id.to_string());
            }
            out.push_str(data.as_deref().unwrap_or(""));
            out
        }

        /// Text built from the pieces of the grammar, so that random input reaches past the
        /// type digit: types, separators, digits, JSON punctuation, multi-byte characters.
        fn grammar_soup() -> impl Strategy<Value = String> {
            let piece = prop::sample::select(vec![
                "0", "1", "2", "3", "4", "5", "6", "7", "9", "b", "-", "/", ",", "[", "]", "{", "}", "\"", ":", "null", "true", "\\", "\u{1e}", "é", "€", "𝄞", " ", "a", "\u{7f}",
                "probe", "\"x\"", "12",
            ]);
            prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(proptest_config(1024, "target/proptest-regressions/socketio-packet.txt"))]

            #[test]
            fn any_text_decodes_or_is_refused_naming_its_layer(input in prop_oneof![any::<String>(), grammar_soup()]) {
                check_any_text(&input);
            }

            #[test]
            fn a_packet_encoded_as_a_client_does_decodes_back(namespace in namespace(), body in body()) {
                let text = encode(&namespace, &body);
                check_any_text(&format!("4{text}"));
                prop_assert_eq!(SocketPacket::decode(&text), Ok(SocketPacket { namespace: &namespace, body }), "{}", text);
            }

            #[test]
            fn a_polling_payload_of_encoded_packets_splits_into_them(packets in prop::collection::vec((namespace(), body()), 1..5)) {
                let records: Vec<String> = packets.iter().map(|(namespace, body)| format!("4{}", encode(namespace, body))).collect();
                let mut body = Vec::new();
                join_payload(&records, &mut body);
                let body = String::from_utf8(body).expect("UTF-8");
                let decoded = decode_payload(&body).expect("a payload of packets");
                prop_assert_eq!(decoded.len(), packets.len());
                for (packet, (namespace, expected)) in decoded.into_iter().zip(&packets) {
                    let EnginePacket::Message(data) = packet else { panic!("{packet:?} is not a message") };
                    prop_assert_eq!(SocketPacket::decode(data), Ok(SocketPacket { namespace, body: expected.clone() }));
                }
            }

            #[test]
            fn what_the_server_writes_decodes_back(namespace in namespace(), text in any::<String>(), id in any::<u64>(), args in prop::collection::vec(json_value(), 0..3)) {
                let message = |out: Vec<u8>| -> String {
                    let text = String::from_utf8(out).expect("encoders write UTF-8");
                    match EnginePacket::decode(&text) {
                        Ok(EnginePacket::Message(data)) => data.to_owned(),
                        other => panic!("{text:?} is not a message: {other:?}"),
                    }
                };
                let decode = |out: Vec<u8>| SocketPacket::decode(&message(out)).map(|p| (p.namespace.to_string(), p.body));
                let arg_texts: Vec<String> = args.iter().map(Value::to_string).collect();
                let arg_refs: Vec<&str> = arg_texts.iter().map(String::as_str).collect();
                let mut out = Vec::new();
                write_connect(&mut out, &namespace, &text);
                prop_assert_eq!(decode(out), Ok((namespace.clone(), SocketBody::Connect { auth: json!({"sid": text}).as_object().cloned() })));
                let mut out = Vec::new();
                write_connect_error(&mut out, &namespace, &text, None);
                prop_assert_eq!(decode(out), Ok((namespace.clone(), SocketBody::ConnectError { data: json!({"message": text}) })));
                let mut out = Vec::new();
                write_connect_error(&mut out, &namespace, &text, Some(&text));
                prop_assert_eq!(decode(out), Ok((namespace.clone(), SocketBody::ConnectError { data: json!({"message": text, "data": {"code": text}}) })));
                let mut out = Vec::new();
                write_ack(&mut out, &namespace, id, &arg_refs);
                prop_assert_eq!(decode(out), Ok((namespace.clone(), SocketBody::Ack { id, args: args.clone() })));
                if !RESERVED_EVENTS.contains(&text.as_str()) {
                    let mut out = Vec::new();
                    write_event(&mut out, &namespace, &text, &arg_refs);
                    prop_assert_eq!(decode(out), Ok((namespace.clone(), SocketBody::Event { name: text.clone(), args: args.clone(), ack: None })));
                    let mut out = Vec::new();
                    write_event_prefix(&mut out, &namespace, &text);
                    out.extend_from_slice(b"{\"quotes\":[]}");
                    out.extend_from_slice(EVENT_SUFFIX);
                    prop_assert_eq!(decode(out), Ok((namespace.clone(), SocketBody::Event { name: text.clone(), args: vec![json!({"quotes": []})], ack: None })));
                }
            }
        }
    }
}
