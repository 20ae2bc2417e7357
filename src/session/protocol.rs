//! Protocol v1 messages: one enum each way, so the whole wire format reads in one file.
//!
//! Client messages are parsed in two steps so that a malformed request still gets an error that
//! echoes its `id`: first as a loose JSON object (to find `id` and `op`), then into the typed
//! [`ClientOp`]. Quote batches are not built through serde: the quotes inside are already JSON
//! (rendered once per quote for every recipient), so `session::output` splices them into frames.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::channels::ChannelSet;
use crate::api_error::excerpt;
use crate::feed::FeedStatus;
use crate::history::{Resolution, Trade};

/// Protocol version announced in `welcome`.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted string `id`.
pub(crate) const MAX_ID_CHARS: usize = 64;

/// A request id, echoed in the reply: a number or a short string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RequestId {
    Number(serde_json::Number),
    Text(String),
}

/// A subscribe request's options, in every transport's form of it; `None` = the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SubscribeOptions {
    pub throttle_ms: Option<u64>,
    /// Send the latest quote of each newly subscribed symbol at once (default true).
    pub snapshot: Option<bool>,
    /// Deliver on a grid of `throttle_ms` (default false; see `session::throttle::Cadence`).
    pub align: Option<bool>,
    /// What the request's symbols carry (default quotes only; see `session::channels`).
    pub channels: Option<ChannelSet>,
    /// Per symbol, the last trade seq the client saw: its `trades` resume after it.
    pub since: Vec<(String, u64)>,
}

/// The fields a subscribe request takes besides `symbols` (and `op`, `id`), in every transport.
pub(crate) const SUBSCRIBE_OPTION_FIELDS: [&str; 5] = ["throttle_ms", "snapshot", "align", "channels", "since"];

/// Client → server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientOp {
    /// `{"op":"subscribe","symbols":[..],"throttle_ms":250,"snapshot":true,"align":false,"id":1}`
    Subscribe { id: Option<RequestId>, symbols: Vec<String>, options: SubscribeOptions },
    /// `{"op":"unsubscribe","symbols":[..]}`
    Unsubscribe { id: Option<RequestId>, symbols: Vec<String> },
    /// `{"op":"list"}`
    List { id: Option<RequestId> },
    /// `{"op":"ping"}`
    Ping { id: Option<RequestId> },
}

impl ClientOp {
    /// The op's name, as sent.
    pub(crate) fn name(&self) -> &'static str {
        let index = match self {
            ClientOp::Subscribe { .. } => SUBSCRIBE,
            ClientOp::Unsubscribe { .. } => UNSUBSCRIBE,
            ClientOp::List { .. } => LIST,
            ClientOp::Ping { .. } => PING,
        };
        OPS[index].0
    }
}

/// Every op a client may send, with the fields it takes: the one list, read by the parser, by
/// `unknown_op` messages and for the `op` label of `tickerfeed_client_messages_total`.
pub(crate) const OPS: [(&str, &[&str]); 4] = [
    ("subscribe", &["op", "id", "symbols", "throttle_ms", "snapshot", "align", "channels", "since"]),
    ("unsubscribe", &["op", "id", "symbols"]),
    ("list", &["op", "id"]),
    ("ping", &["op", "id"]),
];
const SUBSCRIBE: usize = 0;
const UNSUBSCRIBE: usize = 1;
const LIST: usize = 2;
const PING: usize = 3;

/// Error codes of the `error` message and of `rejected` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// Not JSON, not an object, fields of the wrong type, or a binary frame.
    BadRequest,
    UnknownOp,
    TooManySymbols,
    RateLimited,
    UnknownSymbol,
    InvalidSymbol,
    /// The session's token does not include the symbol.
    NotEntitled,
    /// The session's token expired: sent just before the connection closes.
    TokenExpired,
}

impl ErrorCode {
    pub(crate) const ALL: &[ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::TooManySymbols,
        ErrorCode::RateLimited,
        ErrorCode::UnknownSymbol,
        ErrorCode::InvalidSymbol,
        ErrorCode::NotEntitled,
        ErrorCode::TokenExpired,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::InvalidSymbol => "invalid_symbol",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::TokenExpired => "token_expired",
        }
    }
}

/// A symbol the server would not subscribe, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Rejected {
    pub symbol: String,
    pub code: ErrorCode,
}

/// A `quotes` message's JSON up to its first quote (live, and snapshot), and after its last:
/// every transport writes batches in place around the quotes' pre-rendered JSON.
pub(crate) const QUOTES_JSON_PREFIX: &[u8] = br#"{"type":"quotes","quotes":["#;
pub(crate) const SNAPSHOT_JSON_PREFIX: &[u8] = br#"{"type":"quotes","snapshot":true,"quotes":["#;
pub(crate) const QUOTES_JSON_SUFFIX: &[u8] = b"]}";

/// Server → client, except quote batches (built by `session::output`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerMessage<'a> {
    Welcome {
        protocol: u32,
        server: &'a str,
        instance: &'a str,
        /// This session's id (a fault can target it: docs/FAULTS.md).
        session: String,
        /// Present, true, when the server injects faults (`--faults`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        faults: bool,
        throttle_ms: u64,
        min_throttle_ms: u64,
        max_symbols: usize,
        max_frame_bytes: usize,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        throttle_ms: u64,
        align: bool,
        symbols: Vec<String>,
        rejected: Vec<Rejected>,
        /// Per channel, the symbols of the whole set that carry it (`*` for the wildcard).
        channels: serde_json::Map<String, Value>,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        symbols: Vec<String>,
    },
    Subscriptions {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        symbols: Vec<String>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        ts: i64,
    },
    Feed(&'a FeedStatus),
    /// A batch of trades, in seq order per symbol.
    Trades {
        /// Present on a resume's backlog: whether it holds every trade after the client's `since`.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        trades: Vec<TradeOut<'a>>,
    },
    /// Trades of `symbol` with seqs `from_seq..=to_seq` that this client will not get.
    Gap {
        channel: &'static str,
        symbol: &'a str,
        from_seq: u64,
        to_seq: u64,
    },
    /// A batch of bars of one resolution: forming ones, and each final one once.
    Bars {
        resolution: Resolution,
        bars: Vec<BarOut<'a>>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
        /// How many messages a `rate_limited` error stands for (the first dropped one's `id`
        /// is echoed); absent on other errors, which each answer one message.
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
}

impl ServerMessage<'_> {
    /// The message's `type` (an SSE event's name, a Socket.IO event's).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Subscribed { .. } => "subscribed",
            ServerMessage::Unsubscribed { .. } => "unsubscribed",
            ServerMessage::Subscriptions { .. } => "subscriptions",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Feed(_) => "feed",
            ServerMessage::Trades { .. } => "trades",
            ServerMessage::Gap { .. } => "gap",
            ServerMessage::Bars { .. } => "bars",
            ServerMessage::Error { .. } => "error",
        }
    }

    pub(crate) fn to_json(&self) -> String {
        // Every variant is plain data: serialisation cannot fail.
        serde_json::to_string(self).expect("server message serialises")
    }

    /// The message's JSON without `type` and `id`, for a transport that carries those itself
    /// (a Socket.IO event's name, an ack's id). Not on the quotes path: replies only.
    pub(crate) fn fields_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("server message serialises");
        if let Value::Object(fields) = &mut value {
            fields.shift_remove("type");
            fields.shift_remove("id");
        }
        value.to_string()
    }

    /// The request id the message answers, if any.
    pub(crate) fn id(&self) -> Option<&RequestId> {
        match self {
            ServerMessage::Subscribed { id, .. }
            | ServerMessage::Unsubscribed { id, .. }
            | ServerMessage::Subscriptions { id, .. }
            | ServerMessage::Pong { id, .. }
            | ServerMessage::Error { id, .. } => id.as_ref(),
            ServerMessage::Welcome { .. } | ServerMessage::Feed(_) | ServerMessage::Trades { .. } | ServerMessage::Gap { .. } | ServerMessage::Bars { .. } => None,
        }
    }
}

/// A trade as a `trades` message carries it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TradeOut<'a> {
    pub symbol: &'a str,
    pub seq: u64,
    pub ts: i64,
    pub pt: i64,
    pub price: f64,
    pub size: u64,
}

impl<'a> TradeOut<'a> {
    pub(crate) fn new(symbol: &'a str, trade: &Trade) -> TradeOut<'a> {
        TradeOut { symbol, seq: trade.seq, ts: trade.ts, pt: trade.pt, price: trade.price, size: trade.size }
    }
}

/// A bar as a `bars` message carries it: `/api/history`'s fields, its symbol, and whether it
/// is closed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BarOut<'a> {
    pub symbol: &'a str,
    #[serde(flatten)]
    pub bar: crate::history::Bar,
    #[serde(rename = "final")]
    pub closed: bool,
}

/// A client message that could not be turned into a [`ClientOp`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseFailure {
    pub id: Option<RequestId>,
    pub code: ErrorCode,
    pub message: String,
}

/// A subscribe request's optional `throttle_ms`, `snapshot` and `align`, from its fields, for
/// every transport's form of it; an error names the field and what it takes (`what` names the
/// request: `op 'subscribe'`, `event 'subscribe'`).
pub(crate) fn subscribe_options(fields: &serde_json::Map<String, Value>, what: &str) -> Result<SubscribeOptions, String> {
    let throttle_ms = match fields.get("throttle_ms") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => return Err(format!("{what}: field 'throttle_ms' must be a non-negative integer (milliseconds)")),
    };
    let flag = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{what}: field '{name}' must be true or false")),
    };
    let channels = match fields.get("channels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let names = items.iter().map(|item| item.as_str().ok_or_else(|| format!("{what}: field 'channels' must be an array of strings")));
            Some(ChannelSet::parse(names.collect::<Result<Vec<_>, _>>()?).map_err(|e| format!("{what}: field 'channels': {e}"))?)
        }
        Some(Value::String(list)) => Some(ChannelSet::parse(list.split(',').map(str::trim)).map_err(|e| format!("{what}: field 'channels': {e}"))?),
        Some(_) => return Err(format!("{what}: field 'channels' must be an array of strings, e.g. [\"quotes\",\"trades\"]")),
    };
    let since = match fields.get("since") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(symbol, seq)| match seq.as_u64() {
                Some(seq) => Ok((symbol.clone(), seq)),
                None => Err(format!("{what}: field 'since': the seq of '{}' must be a non-negative integer", excerpt(symbol, 32))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{what}: field 'since' must be an object of symbol to seq, e.g. {{\"AAPL\":1042}}")),
    };
    Ok(SubscribeOptions { throttle_ms, snapshot: flag("snapshot")?, align: flag("align")?, channels, since })
}

/// Parses one client text frame. On failure, the error carries the request's `id` whenever the
/// frame was a JSON object with a usable one, whatever else was wrong with it.
pub(crate) fn parse_client_message(text: &str) -> Result<ClientOp, ParseFailure> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseFailure { id: None, code: ErrorCode::BadRequest, message: format!("malformed JSON: {e}") })?;
    let Value::Object(object) = &value else {
        return Err(ParseFailure { id: None, code: ErrorCode::BadRequest, message: "a message must be a JSON object".into() });
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(RequestId::Number(n.clone())),
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(RequestId::Text(s.clone())),
        Some(Value::String(_)) => {
            return Err(ParseFailure { id: None, code: ErrorCode::BadRequest, message: format!("field 'id': a string id has at most {MAX_ID_CHARS} characters") });
        }
        Some(_) => {
            return Err(ParseFailure { id: None, code: ErrorCode::BadRequest, message: "field 'id' must be a number or a string".into() });
        }
    };
    let fail = |code, message: String| ParseFailure { id: id.clone(), code, message };
    let op = match object.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return Err(fail(ErrorCode::BadRequest, "field 'op' must be a string".into())),
        None => return Err(fail(ErrorCode::BadRequest, "missing field 'op'".into())),
    };
    let Some(index) = OPS.iter().position(|(name, _)| *name == op) else {
        let names: Vec<&str> = OPS.iter().map(|(name, _)| *name).collect();
        return Err(fail(ErrorCode::UnknownOp, format!("unknown op '{}'; expected one of: {}", excerpt(op, 32), names.join(", "))));
    };
    // Fields are read by hand rather than through serde so that an error names the field and
    // what it should be, which is what a client developer needs to fix the request.
    let allowed = OPS[index].1;
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(fail(ErrorCode::BadRequest, format!("op '{op}': unknown field '{}'; allowed: {}", excerpt(unknown, 32), allowed.join(", "))));
    }
    let symbols = || -> Result<Vec<String>, ParseFailure> {
        match object.get("symbols") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(fail(ErrorCode::BadRequest, format!("op '{op}': field 'symbols' must be an array of strings"))),
                })
                .collect(),
            Some(_) => Err(fail(ErrorCode::BadRequest, format!("op '{op}': field 'symbols' must be an array of strings"))),
            None => Err(fail(ErrorCode::BadRequest, format!("op '{op}': missing field 'symbols'"))),
        }
    };
    match index {
        SUBSCRIBE => {
            let options = subscribe_options(object, "op 'subscribe'").map_err(|message| fail(ErrorCode::BadRequest, message))?;
            Ok(ClientOp::Subscribe { id: id.clone(), symbols: symbols()?, options })
        }
        UNSUBSCRIBE => Ok(ClientOp::Unsubscribe { id: id.clone(), symbols: symbols()? }),
        LIST => Ok(ClientOp::List { id: id.clone() }),
        _ => Ok(ClientOp::Ping { id: id.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_op() {
        assert_eq!(
            parse_client_message(r#"{"op":"subscribe","symbols":["AAPL","msft"],"throttle_ms":250,"snapshot":true,"align":true,"id":1}"#).unwrap(),
            ClientOp::Subscribe {
                id: Some(RequestId::Number(1.into())),
                symbols: vec!["AAPL".into(), "msft".into()],
                options: SubscribeOptions { throttle_ms: Some(250), snapshot: Some(true), align: Some(true), ..SubscribeOptions::default() }
            }
        );
        let err = parse_client_message(r#"{"op":"subscribe","symbols":["A"],"align":1}"#).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::BadRequest, "op 'subscribe': field 'align' must be true or false"));
        assert!(matches!(parse_client_message(r#"{"op":"unsubscribe","symbols":["*"]}"#), Ok(ClientOp::Unsubscribe { .. })));
        assert!(matches!(parse_client_message(r#"{"op":"list","id":"a"}"#), Ok(ClientOp::List { id: Some(RequestId::Text(_)) })));
        assert!(matches!(parse_client_message(r#"{"op":"ping"}"#), Ok(ClientOp::Ping { id: None })));
    }

    #[test]
    fn errors_echo_a_usable_id() {
        let err = parse_client_message(r#"{"op":"subscribe","symbols":"AAPL","id":7}"#).unwrap_err();
        assert_eq!((err.id, err.code), (Some(RequestId::Number(7.into())), ErrorCode::BadRequest));
        assert!(err.message.contains("symbols"), "{}", err.message);
        let err = parse_client_message(r#"{"op":"dance","id":"x"}"#).unwrap_err();
        assert_eq!((err.id, err.code), (Some(RequestId::Text("x".into())), ErrorCode::UnknownOp));
        let err = parse_client_message(r#"{"id":3}"#).unwrap_err();
        assert_eq!((err.id, err.code), (Some(RequestId::Number(3.into())), ErrorCode::BadRequest));
        let err = parse_client_message(r#"{"op":"ping","id":[1]}"#).unwrap_err();
        assert_eq!((err.id, err.code), (None, ErrorCode::BadRequest));
        let err = parse_client_message("{nope").unwrap_err();
        assert_eq!((err.id, err.code), (None, ErrorCode::BadRequest));
        let err = parse_client_message(r#"{"op":"subscribe","symbols":["A"],"throttle_ms":-5,"id":2}"#).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Number(2.into())));
        let long_id = "x".repeat(65);
        let err = parse_client_message(&format!(r#"{{"op":"ping","id":"{long_id}"}}"#)).unwrap_err();
        assert_eq!(err.id, None);
    }

    #[test]
    fn a_number_id_is_echoed_as_the_same_number() {
        // Found by the fuzz target: serde_json's default float parser may land one ULP off, so
        // the reply's id was a different number from the one the client sent.
        let text = r#"{"op":"ping","id":33333333333323333e-6}"#;
        let Ok(ClientOp::Ping { id: Some(id) }) = parse_client_message(text) else { panic!("a ping with an id") };
        let reply: Value = serde_json::from_str(&ServerMessage::Pong { id: Some(id), ts: 0 }.to_json()).unwrap();
        assert_eq!(reply["id"].as_f64(), Some(33333333333.323333));
    }

    #[test]
    fn messages_serialise_as_documented() {
        let msg = ServerMessage::Subscribed {
            id: Some(RequestId::Number(1.into())),
            throttle_ms: 250,
            align: false,
            symbols: vec!["AAPL".into()],
            rejected: vec![Rejected { symbol: "ZZZZ".into(), code: ErrorCode::UnknownSymbol }],
            channels: serde_json::from_str(r#"{"quotes":["AAPL"]}"#).unwrap(),
        };
        assert_eq!(
            msg.to_json(),
            r#"{"type":"subscribed","id":1,"throttle_ms":250,"align":false,"symbols":["AAPL"],"rejected":[{"symbol":"ZZZZ","code":"unknown_symbol"}],"channels":{"quotes":["AAPL"]}}"#
        );
        assert_eq!(
            msg.fields_json(),
            r#"{"throttle_ms":250,"align":false,"symbols":["AAPL"],"rejected":[{"symbol":"ZZZZ","code":"unknown_symbol"}],"channels":{"quotes":["AAPL"]}}"#
        );
        let trade = Trade { seq: 7, ts: 1000, pt: 1_000_123, price: 9.5, size: 100 };
        let msg = ServerMessage::Trades { recovered: Some(true), trades: vec![TradeOut::new("AAPL", &trade)] };
        assert_eq!(msg.to_json(), r#"{"type":"trades","recovered":true,"trades":[{"symbol":"AAPL","seq":7,"ts":1000,"pt":1000123,"price":9.5,"size":100}]}"#);
        let msg = ServerMessage::Gap { channel: "trades", symbol: "AAPL", from_seq: 3, to_seq: 6 };
        assert_eq!(msg.to_json(), r#"{"type":"gap","channel":"trades","symbol":"AAPL","from_seq":3,"to_seq":6}"#);
        let bar = crate::history::Bar { t: 2000, open: 1.0, high: 2.0, low: 0.5, close: 1.5, volume: 30, seq: 9 };
        let msg = ServerMessage::Bars { resolution: Resolution::Second, bars: vec![BarOut { symbol: "AAPL", bar, closed: true }] };
        assert_eq!(
            msg.to_json(),
            r#"{"type":"bars","resolution":"1s","bars":[{"symbol":"AAPL","t":2000,"open":1.0,"high":2.0,"low":0.5,"close":1.5,"volume":30,"seq":9,"final":true}]}"#
        );
        let msg = ServerMessage::Pong { id: None, ts: 5 };
        assert_eq!(msg.to_json(), r#"{"type":"pong","ts":5}"#);
        assert_eq!(msg.fields_json(), r#"{"ts":5}"#);
    }
}

/// The parser's invariants, checked on any text: by the property tests below and by the fuzz
/// target `protocol` (through `crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod properties {
    use super::*;

    /// The id a reply to `text` must echo: the object's `id` when it is usable (a number, or a
    /// string of at most [`MAX_ID_CHARS`] characters); `None` for no id, an unusable one, or a
    /// text that is not a JSON object. The second value says whether the message may be
    /// accepted at all (false: not an object, or an unusable id).
    fn expected_id(text: &str) -> (Option<RequestId>, bool) {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else { return (None, false) };
        match object.get("id") {
            None | Some(Value::Null) => (None, true),
            Some(Value::Number(n)) => (Some(RequestId::Number(n.clone())), true),
            Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => (Some(RequestId::Text(s.clone())), true),
            Some(_) => (None, false),
        }
    }

    fn id_of(op: &ClientOp) -> &Option<RequestId> {
        match op {
            ClientOp::Subscribe { id, .. } | ClientOp::Unsubscribe { id, .. } | ClientOp::List { id } | ClientOp::Ping { id } => id,
        }
    }

    /// Parses `text` and asserts what the module promises, whatever the text:
    /// - no panic; a refusal has a code and a message;
    /// - the id is echoed whenever it is usable, accepted or refused (a string id is at most
    ///   64 characters), and a reply carrying it serialises it back as the client wrote it;
    /// - an accepted message is an object whose `op` is one of [`OPS`], with no other field than
    ///   the op's, and the op's fields are those of the object.
    pub(crate) fn check_any_text(text: &str) {
        let (expected, may_accept) = expected_id(text);
        let (id, accepted) = match parse_client_message(text) {
            Ok(op) => {
                assert!(may_accept, "accepted {text:?} with an unusable id or not an object");
                let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else { unreachable!("checked by expected_id") };
                let name = op.name();
                assert_eq!(object.get("op").and_then(Value::as_str), Some(name), "{text:?}");
                let allowed = OPS.iter().find(|(n, _)| *n == name).expect("an op of OPS").1;
                assert!(object.keys().all(|k| allowed.contains(&k.as_str())), "{text:?} has a field {name} does not take");
                let strings =
                    |field: &str| -> Vec<String> { object[field].as_array().expect("symbols is an array").iter().map(|s| s.as_str().expect("of strings").to_string()).collect() };
                match &op {
                    ClientOp::Subscribe { symbols, options, .. } => {
                        assert_eq!(symbols, &strings("symbols"));
                        assert_eq!(options.throttle_ms, object.get("throttle_ms").and_then(Value::as_u64));
                        assert_eq!(options.snapshot, object.get("snapshot").and_then(Value::as_bool));
                        assert_eq!(options.align, object.get("align").and_then(Value::as_bool));
                    }
                    ClientOp::Unsubscribe { symbols, .. } => assert_eq!(symbols, &strings("symbols")),
                    ClientOp::List { .. } | ClientOp::Ping { .. } => {}
                }
                (id_of(&op).clone(), true)
            }
            Err(failure) => {
                assert!(!failure.message.is_empty(), "{text:?}: a refusal without a message");
                (failure.id, false)
            }
        };
        assert_eq!(id, expected, "{text:?} (accepted: {accepted}): the id echoed");
        if let Some(RequestId::Text(s)) = &id {
            assert!(s.chars().count() <= MAX_ID_CHARS);
        }
        // The reply echoes it as sent: its JSON holds the same id.
        if let Some(id) = id {
            let reply = ServerMessage::Error { id: Some(id.clone()), code: ErrorCode::BadRequest, message: String::new(), count: None }.to_json();
            let reply: Value = serde_json::from_str(&reply).expect("a reply is JSON");
            let original: Value = serde_json::from_str::<Value>(text).expect("an object")["id"].clone();
            assert_eq!(reply["id"], original, "{text:?}: the reply's id");
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;
        use serde_json::{Map, json};

        use super::*;
        use crate::test_support::proptest_config;

        /// A field's value, from the grammar: mostly the right type, sometimes not.
        fn json_leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<u64>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                (-1000i32..1000).prop_map(|n| json!(f64::from(n) / 8.0)),
                // Any double, written as ryu writes it: the id must come back the same number.
                (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL).prop_map(|f| json!(f)),
                "[ -~]{0,8}".prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ]
        }

        fn id() -> impl Strategy<Value = Option<Value>> {
            prop_oneof![
                2 => Just(None),
                2 => json_leaf().prop_map(Some),
                // Around the 64-character limit, counted in characters (é is two bytes).
                2 => (60usize..68, prop_oneof![Just('x'), Just('é'), Just('𝄞')]).prop_map(|(n, c)| Some(Value::from(c.to_string().repeat(n)))),
                1 => Just(Some(json!([1]))),
                1 => Just(Some(json!({"a": 1}))),
            ]
        }

        fn symbols() -> impl Strategy<Value = Option<Value>> {
            prop_oneof![
                4 => prop::collection::vec(prop_oneof!["[A-Za-z.^=*-]{0,6}", any::<String>()], 0..5).prop_map(|s| Some(json!(s))),
                1 => Just(None),
                1 => prop::collection::vec(json_leaf(), 0..3).prop_map(|s| Some(Value::Array(s))),
                1 => json_leaf().prop_map(Some),
            ]
        }

        /// A message as a client might write it: one of the ops (or not), each field present or
        /// absent, of the right type or not, sometimes a field the op does not take.
        fn message() -> impl Strategy<Value = String> {
            let op = prop_oneof![
                4 => prop::sample::select(OPS.iter().map(|(name, _)| Value::from(*name)).collect::<Vec<_>>()),
                1 => json_leaf(),
            ];
            let throttle = prop_oneof![2 => Just(None), 2 => (0u64..100_000).prop_map(|n| Some(json!(n))), 1 => json_leaf().prop_map(Some)];
            let flag = || prop_oneof![2 => Just(None), 2 => any::<bool>().prop_map(|b| Some(json!(b))), 1 => json_leaf().prop_map(Some)];
            let extra = prop_oneof![4 => Just(None), 1 => ("[a-z_]{1,10}", json_leaf()).prop_map(Some)];
            (prop::option::weighted(0.95, op), id(), symbols(), throttle, (flag(), flag()), extra, any::<u64>(), any::<bool>()).prop_map(
                |(op, id, symbols, throttle, (snapshot, align), extra, order, pretty)| {
                    let mut fields: Vec<(String, Value)> = Vec::new();
                    let named = [("op", op), ("id", id), ("symbols", symbols), ("throttle_ms", throttle), ("snapshot", snapshot), ("align", align)];
                    for (name, value) in named {
                        if let Some(value) = value {
                            fields.push((name.to_string(), value));
                        }
                    }
                    fields.extend(extra);
                    // Field order is free on the wire.
                    let len = fields.len().max(1);
                    fields.rotate_left(order as usize % len);
                    let object: Map<String, Value> = fields.into_iter().collect();
                    if pretty { serde_json::to_string_pretty(&object).unwrap() } else { serde_json::to_string(&object).unwrap() }
                },
            )
        }

        /// A message the parser must accept, and the op it must give.
        fn valid_op() -> impl Strategy<Value = ClientOp> {
            let id = prop_oneof![Just(None), any::<i64>().prop_map(|n| Some(RequestId::Number(n.into()))), "\\PC{0,64}".prop_map(|s| Some(RequestId::Text(s))),];
            let symbols = prop::collection::vec(any::<String>(), 0..6);
            prop_oneof![
                (id.clone(), symbols.clone(), prop::option::of(any::<u64>()), prop::option::of(any::<bool>()), prop::option::of(any::<bool>())).prop_map(
                    |(id, symbols, throttle_ms, snapshot, align)| ClientOp::Subscribe {
                        id,
                        symbols,
                        options: SubscribeOptions { throttle_ms, snapshot, align, ..SubscribeOptions::default() }
                    }
                ),
                (id.clone(), symbols).prop_map(|(id, symbols)| ClientOp::Unsubscribe { id, symbols }),
                id.clone().prop_map(|id| ClientOp::List { id }),
                id.prop_map(|id| ClientOp::Ping { id }),
            ]
        }

        /// The client side of the protocol: an op as JSON text (`null` for absent options).
        fn encode(op: &ClientOp) -> String {
            let mut object = Map::new();
            object.insert("op".into(), op.name().into());
            let id = id_of(op).clone();
            object.insert("id".into(), serde_json::to_value(id).unwrap());
            match op {
                ClientOp::Subscribe { symbols, options, .. } => {
                    object.insert("symbols".into(), json!(symbols));
                    object.insert("throttle_ms".into(), json!(options.throttle_ms));
                    object.insert("snapshot".into(), json!(options.snapshot));
                    object.insert("align".into(), json!(options.align));
                }
                ClientOp::Unsubscribe { symbols, .. } => {
                    object.insert("symbols".into(), json!(symbols));
                }
                ClientOp::List { .. } | ClientOp::Ping { .. } => {}
            }
            Value::Object(object).to_string()
        }

        proptest! {
            #![proptest_config(proptest_config(512, "target/proptest-regressions/session-protocol.txt"))]

            #[test]
            fn any_text_is_parsed_or_refused_and_a_usable_id_is_echoed(text in prop_oneof![any::<String>(), "[{}\\[\\]\":,a-z0-9 ]{0,40}"]) {
                check_any_text(&text);
            }

            #[test]
            fn near_valid_messages_keep_the_promises(text in message()) {
                check_any_text(&text);
            }

            #[test]
            fn cut_messages_keep_the_promises(text in message(), cut in any::<prop::sample::Index>()) {
                let end = cut.index(text.len() + 1);
                let end = (0..=end).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                check_any_text(&text[..end]);
            }

            #[test]
            fn what_a_client_encodes_decodes_back(op in valid_op()) {
                let text = encode(&op);
                prop_assert_eq!(parse_client_message(&text), Ok(op), "{}", text);
            }
        }
    }
}
