//! Protocol v1 messages: one enum each way, so the whole wire format reads in one file.
//!
//! Client messages are parsed in two steps so that a malformed request still gets an error that
//! echoes its `id`: first as a loose JSON object (to find `id` and `op`), then into the typed
//! [`ClientOp`]. Quote batches are not built through serde: the quotes inside are already JSON
//! (rendered once per quote for every recipient), so `session::output` splices them into frames.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_error::excerpt;
use crate::feed::FeedStatus;

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

/// Client → server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientOp {
    /// `{"op":"subscribe","symbols":[..],"throttle_ms":250,"snapshot":true,"id":1}`
    Subscribe { id: Option<RequestId>, symbols: Vec<String>, throttle_ms: Option<u64>, snapshot: Option<bool> },
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
pub(crate) const OPS: [(&str, &[&str]); 4] =
    [("subscribe", &["op", "id", "symbols", "throttle_ms", "snapshot"]), ("unsubscribe", &["op", "id", "symbols"]), ("list", &["op", "id"]), ("ping", &["op", "id"])];
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
        throttle_ms: u64,
        min_throttle_ms: u64,
        max_symbols: usize,
        max_frame_bytes: usize,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        throttle_ms: u64,
        symbols: Vec<String>,
        rejected: Vec<Rejected>,
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
            ServerMessage::Welcome { .. } | ServerMessage::Feed(_) => None,
        }
    }
}

/// A client message that could not be turned into a [`ClientOp`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseFailure {
    pub id: Option<RequestId>,
    pub code: ErrorCode,
    pub message: String,
}

/// A subscribe request's optional `throttle_ms` and `snapshot`, from its fields, for every
/// transport's form of it; an error names the field and what it takes (`what` names the request:
/// `op 'subscribe'`, `event 'subscribe'`).
pub(crate) fn subscribe_options(fields: &serde_json::Map<String, Value>, what: &str) -> Result<(Option<u64>, Option<bool>), String> {
    let throttle_ms = match fields.get("throttle_ms") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => return Err(format!("{what}: field 'throttle_ms' must be a non-negative integer (milliseconds)")),
    };
    let snapshot = match fields.get("snapshot") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(format!("{what}: field 'snapshot' must be true or false")),
    };
    Ok((throttle_ms, snapshot))
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
            let (throttle_ms, snapshot) = subscribe_options(object, "op 'subscribe'").map_err(|message| fail(ErrorCode::BadRequest, message))?;
            Ok(ClientOp::Subscribe { id: id.clone(), symbols: symbols()?, throttle_ms, snapshot })
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
            parse_client_message(r#"{"op":"subscribe","symbols":["AAPL","msft"],"throttle_ms":250,"snapshot":true,"id":1}"#).unwrap(),
            ClientOp::Subscribe { id: Some(RequestId::Number(1.into())), symbols: vec!["AAPL".into(), "msft".into()], throttle_ms: Some(250), snapshot: Some(true) }
        );
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
    fn messages_serialise_as_documented() {
        let msg = ServerMessage::Subscribed {
            id: Some(RequestId::Number(1.into())),
            throttle_ms: 250,
            symbols: vec!["AAPL".into()],
            rejected: vec![Rejected { symbol: "ZZZZ".into(), code: ErrorCode::UnknownSymbol }],
        };
        assert_eq!(msg.to_json(), r#"{"type":"subscribed","id":1,"throttle_ms":250,"symbols":["AAPL"],"rejected":[{"symbol":"ZZZZ","code":"unknown_symbol"}]}"#);
        assert_eq!(msg.fields_json(), r#"{"throttle_ms":250,"symbols":["AAPL"],"rejected":[{"symbol":"ZZZZ","code":"unknown_symbol"}]}"#);
        let msg = ServerMessage::Pong { id: None, ts: 5 };
        assert_eq!(msg.to_json(), r#"{"type":"pong","ts":5}"#);
        assert_eq!(msg.fields_json(), r#"{"ts":5}"#);
    }
}
