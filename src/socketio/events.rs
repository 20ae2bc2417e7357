//! Socket.IO events from a client, read as protocol v1 requests: the event's name is the op, its
//! one argument what the op takes, its ack id the request's id (the reply is its ack).
//!
//! `subscribe` takes `{"symbols":[…],"throttle_ms":N,"snapshot":B,"align":B}` (`symbols` may be
//! a comma-separated string), an array of symbols, or a comma-separated string; `unsubscribe`
//! the same shapes without `throttle_ms`, `snapshot` and `align`; `list` and `ping` take nothing (an argument
//! is ignored, so that `emit("list", {})` works too). Anything else is a [`ParseFailure`] naming
//! the event and the argument at fault, answered like a bad `/ws` request.

use serde_json::{Map, Value};

use crate::api_error::{excerpt, json_kind};
#[cfg(test)]
use crate::session::protocol::SubscribeOptions;
use crate::session::protocol::{ClientOp, ErrorCode, OPS, ParseFailure, RequestId, SUBSCRIBE_OPTION_FIELDS, subscribe_options};

/// The request an event stands for.
pub(crate) fn client_op(name: &str, args: Vec<Value>, ack: Option<u64>) -> Result<ClientOp, ParseFailure> {
    let id = ack.map(|ack| RequestId::Number(ack.into()));
    let fail = |code, message: String| ParseFailure { id: id.clone(), code, message };
    let mut args = args.into_iter();
    let (argument, extra) = (args.next(), args.next());
    match name {
        "subscribe" | "unsubscribe" => {
            if extra.is_some() {
                return Err(fail(ErrorCode::BadRequest, format!("event '{name}' takes one argument (an object, an array of symbols or a comma-separated string)")));
            }
            let subscribe = name == "subscribe";
            let request = match argument {
                Some(Value::Object(fields)) => fields,
                Some(symbols @ (Value::Array(_) | Value::String(_))) => Map::from_iter([("symbols".to_string(), symbols)]),
                Some(other) => {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        format!("event '{name}': the argument must be an object, an array of symbols or a comma-separated string, not {}", json_kind(&other)),
                    ));
                }
                None => return Err(fail(ErrorCode::BadRequest, format!("event '{name}' needs an argument: {{\"symbols\":[\"AAPL\"]}}, [\"AAPL\"] or \"AAPL,MSFT\""))),
            };
            let allowed: Vec<&str> = if subscribe { std::iter::once("symbols").chain(SUBSCRIBE_OPTION_FIELDS).collect() } else { vec!["symbols"] };
            if let Some(unknown) = request.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(fail(ErrorCode::BadRequest, format!("event '{name}': unknown field '{}'; allowed: {}", excerpt(unknown, 32), allowed.join(", "))));
            }
            let symbols = match request.get("symbols") {
                Some(Value::String(list)) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(symbol) => Ok(symbol.clone()),
                        other => Err(fail(ErrorCode::BadRequest, format!("event '{name}': symbols must be strings, not {}", json_kind(other)))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(other) => {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        format!("event '{name}': field 'symbols' must be an array of strings or a comma-separated string, not {}", json_kind(other)),
                    ));
                }
                None => return Err(fail(ErrorCode::BadRequest, format!("event '{name}': missing field 'symbols'"))),
            };
            if !subscribe {
                return Ok(ClientOp::Unsubscribe { id, symbols });
            }
            let options = subscribe_options(&request, "event 'subscribe'").map_err(|message| fail(ErrorCode::BadRequest, message))?;
            Ok(ClientOp::Subscribe { id, symbols, options })
        }
        "list" => Ok(ClientOp::List { id }),
        "ping" => Ok(ClientOp::Ping { id }),
        other => {
            let names: Vec<&str> = OPS.iter().map(|(name, _)| *name).collect();
            Err(fail(ErrorCode::UnknownOp, format!("unknown event '{}'; expected one of: {}", excerpt(other, 32), names.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(name: &str, args: Value, ack: Option<u64>) -> Result<ClientOp, ParseFailure> {
        let Value::Array(args) = args else { panic!("args are an array") };
        client_op(name, args, ack)
    }

    #[test]
    fn subscribe_takes_an_object_an_array_or_a_string() {
        let expected = |throttle_ms, snapshot, align| ClientOp::Subscribe {
            id: Some(RequestId::Number(4.into())),
            symbols: vec!["AAPL".into(), "msft".into()],
            options: SubscribeOptions { throttle_ms, snapshot, align, ..SubscribeOptions::default() },
        };
        assert_eq!(
            op("subscribe", json!([{"symbols": ["AAPL", "msft"], "throttle_ms": 100, "snapshot": false, "align": true}]), Some(4)),
            Ok(expected(Some(100), Some(false), Some(true)))
        );
        assert_eq!(op("subscribe", json!([{"symbols": " AAPL, msft ,"}]), Some(4)), Ok(expected(None, None, None)));
        assert_eq!(op("subscribe", json!([["AAPL", "msft"]]), Some(4)), Ok(expected(None, None, None)));
        assert_eq!(op("subscribe", json!(["AAPL,msft"]), Some(4)), Ok(expected(None, None, None)));
        assert_eq!(op("unsubscribe", json!(["AAPL"]), None), Ok(ClientOp::Unsubscribe { id: None, symbols: vec!["AAPL".into()] }));
        assert_eq!(op("list", json!([]), Some(1)), Ok(ClientOp::List { id: Some(RequestId::Number(1.into())) }));
        assert_eq!(op("list", json!([{}]), None), Ok(ClientOp::List { id: None }));
        assert_eq!(op("ping", json!([]), None), Ok(ClientOp::Ping { id: None }));
    }

    #[test]
    fn bad_events_name_what_is_wrong_and_keep_their_ack() {
        for (name, args, code, says) in [
            ("subscribe", json!([]), ErrorCode::BadRequest, "needs an argument"),
            ("subscribe", json!([5]), ErrorCode::BadRequest, "not a number"),
            ("subscribe", json!([["A"], ["B"]]), ErrorCode::BadRequest, "one argument"),
            ("subscribe", json!([{"symbols": ["A"], "op": "subscribe"}]), ErrorCode::BadRequest, "unknown field 'op'"),
            ("subscribe", json!([{"symbols": [1]}]), ErrorCode::BadRequest, "symbols must be strings"),
            ("subscribe", json!([{"throttle_ms": 5}]), ErrorCode::BadRequest, "missing field 'symbols'"),
            ("subscribe", json!([{"symbols": "A", "throttle_ms": -1}]), ErrorCode::BadRequest, "throttle_ms"),
            ("subscribe", json!([{"symbols": "A", "snapshot": "yes"}]), ErrorCode::BadRequest, "snapshot"),
            ("subscribe", json!([{"symbols": "A", "align": "yes"}]), ErrorCode::BadRequest, "field 'align' must be true or false"),
            ("unsubscribe", json!([{"symbols": "A", "throttle_ms": 5}]), ErrorCode::BadRequest, "unknown field 'throttle_ms'"),
            ("dance", json!([]), ErrorCode::UnknownOp, "unknown event 'dance'; expected one of: subscribe, unsubscribe, list, ping"),
        ] {
            let failure = op(name, args.clone(), Some(9)).unwrap_err();
            assert_eq!((failure.code, failure.id), (code, Some(RequestId::Number(9.into()))), "{name} {args}");
            assert!(failure.message.contains(says), "{name} {args}: {}", failure.message);
        }
    }
}
