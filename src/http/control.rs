//! The body of `POST /api/feeds/{name}/control`: read under a size limit, then checked field by
//! field into a [`ControlAction`].
//!
//! Each action takes a fixed set of fields: `action`, plus `to` for seek and `value` for speed.
//! serde's `deny_unknown_fields` cannot say that for an internally tagged enum whose variants
//! carry no data (`{"action":"pause","extra":1}` was accepted while the same stray field on
//! speed was refused), so the object is read as a list of entries and checked here, the same
//! way for every action. Every refusal names the field at fault and what the action takes.

use actix_web::web::{self, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::api_error::json_kind;
use crate::feed::ControlAction;
use crate::feed::replay::timestamp::{is_date_only, parse_timestamp};

/// The largest control body accepted. The four actions fit in under 100 bytes; anything near
/// this is not a control command.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much of an oversized body is read and thrown away before the 413 goes out. A client that
/// writes its whole body before reading (most do) gets the answer instead of a connection reset
/// by unread data; beyond this the connection is closed with the answer, read or not.
const DRAIN_BYTES: usize = 1024 * 1024;

/// Each action with the fields it takes besides `action`.
const ACTIONS: &[(&str, &[&str])] = &[("pause", &[]), ("resume", &[]), ("seek", &["to"]), ("speed", &["value"])];

const EXPECTED: &str = r#"expected {"action":"pause"}, {"action":"resume"}, {"action":"seek","to":"2008-09-15"} or {"action":"speed","value":3600}"#;

/// Why a control body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("control body: more than {MAX_BODY_BYTES} bytes; the limit is 64 KiB")]
    TooLarge,
    /// Not whole within the body deadline (`TimedOut`), or a broken stream.
    #[error("control body could not be read: {0}")]
    Read(#[from] actix_web::error::PayloadError),
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
pub(super) async fn read_body(mut payload: web::Payload) -> Result<Bytes, BodyError> {
    let mut body = BytesMut::new();
    let mut received = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // Already refused for its size: that is the more useful answer.
            Err(_) if received > MAX_BODY_BYTES => break,
            Err(e) => return Err(e.into()),
        };
        received += chunk.len();
        if received > DRAIN_BYTES {
            break;
        }
        if received <= MAX_BODY_BYTES {
            body.extend_from_slice(&chunk);
        }
    }
    if received > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    Ok(body.freeze())
}

/// Checks a control body and turns it into the feed's command; the error is the message for a
/// 400 answer.
pub(super) fn parse(body: &[u8]) -> Result<ControlAction, String> {
    let entries = match serde_json::from_slice::<Entries>(body) {
        Ok(Entries(entries)) => entries,
        Err(e) if e.is_data() => return Err(format!("control body must be a JSON object; {EXPECTED}")),
        Err(e) => return Err(format!("control body is not JSON: {e}; {EXPECTED}")),
    };
    for (i, (name, _)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(format!("control body: field '{}' appears more than once", clip(name)));
        }
    }
    let field = |wanted: &str| entries.iter().find(|(name, _)| name == wanted).map(|(_, value)| value);
    let action = match field("action") {
        None => return Err(format!("control body: missing field 'action'; {EXPECTED}")),
        Some(Value::String(action)) => action.as_str(),
        Some(other) => return Err(format!("control body: field 'action' must be a string (pause, resume, seek or speed), not {}", json_kind(other))),
    };
    let Some((action, takes)) = ACTIONS.iter().copied().find(|(name, _)| *name == action) else {
        return Err(format!("control body: unknown action '{}'; expected pause, resume, seek or speed", clip(action)));
    };
    let takes_text = match takes {
        [] => "only 'action'".to_string(),
        fields => format!("'action' and {}", fields.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(" and ")),
    };
    for (name, _) in &entries {
        if name == "action" || takes.contains(&name.as_str()) {
            continue;
        }
        return Err(match ACTIONS.iter().find(|(_, fields)| fields.contains(&name.as_str())) {
            Some((owner, _)) => format!("control body: field '{name}' belongs to action '{owner}'; action '{action}' takes {takes_text}"),
            None => format!("control body: unknown field '{}' for action '{action}', which takes {takes_text}", clip(name)),
        });
    }
    match action {
        "pause" => Ok(ControlAction::Pause),
        "resume" => Ok(ControlAction::Resume),
        "speed" => match field("value") {
            None => Err("control body: action 'speed' needs field 'value' (a number, e.g. 3600)".to_string()),
            Some(Value::Number(n)) => n.as_f64().map(ControlAction::Speed).ok_or_else(|| format!("control body: field 'value': {n} is not a number a speed can be")),
            Some(other) => Err(format!("control body: field 'value' must be a number, not {}", json_kind(other))),
        },
        "seek" => {
            let to = field("to").ok_or_else(|| "control body: action 'seek' needs field 'to' (a date, a datetime or a Unix timestamp, e.g. \"2008-09-15\")".to_string())?;
            let parsed = match to {
                Value::String(text) => parse_timestamp(text).map(|to| ControlAction::Seek { to, whole_day: is_date_only(text) }).map_err(|e| e.to_string()),
                Value::Number(n) => parse_timestamp(&n.to_string()).map(|to| ControlAction::Seek { to, whole_day: false }).map_err(|e| e.to_string()),
                other => Err(format!("must be a date, a datetime or a Unix timestamp, not {}", json_kind(other))),
            };
            parsed.map_err(|message| format!("control body: field 'to': {message}"))
        }
        // ACTIONS lists exactly the four names matched above.
        _ => unreachable!("action '{action}' is in ACTIONS but not handled"),
    }
}

/// Client-chosen names in messages are cut to a readable length.
fn clip(text: &str) -> String {
    crate::api_error::excerpt(text, 32)
}

/// A JSON object's entries in order, repeats kept (a map would silently keep the last).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Entries, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_with_exactly_its_fields_is_accepted() {
        assert_eq!(parse(br#"{"action":"pause"}"#), Ok(ControlAction::Pause));
        assert_eq!(parse(br#"{"action":"resume"}"#), Ok(ControlAction::Resume));
        assert_eq!(parse(br#"{"value":3600,"action":"speed"}"#), Ok(ControlAction::Speed(3600.0)));
        assert_eq!(parse(br#"{"action":"seek","to":"1970-01-01T00:00:01Z"}"#), Ok(ControlAction::Seek { to: 1000, whole_day: false }));
        assert_eq!(parse(br#"{"action":"seek","to":"1970-01-02"}"#), Ok(ControlAction::Seek { to: 86_400_000, whole_day: true }));
    }

    #[test]
    fn stray_fields_are_refused_the_same_way_for_every_action() {
        for action in ["pause", "resume", "seek", "speed"] {
            let body = format!(r#"{{"action":"{action}","to":"2008-09-15","value":1,"extra":1}}"#);
            let message = parse(body.as_bytes()).unwrap_err();
            assert!(message.contains("'extra'") || message.contains("belongs to action"), "{action}: {message}");
        }
        assert_eq!(parse(br#"{"action":"pause","extra":1}"#).unwrap_err(), "control body: unknown field 'extra' for action 'pause', which takes only 'action'");
        assert_eq!(parse(br#"{"action":"pause","value":2}"#).unwrap_err(), "control body: field 'value' belongs to action 'speed'; action 'pause' takes only 'action'");
        assert_eq!(parse(br#"{"action":"speed","value":2,"bogus":1}"#).unwrap_err(), "control body: unknown field 'bogus' for action 'speed', which takes 'action' and 'value'");
    }

    #[test]
    fn repeats_missing_fields_and_wrong_types_are_named() {
        assert_eq!(parse(br#"{"action":"speed","value":1,"value":2}"#).unwrap_err(), "control body: field 'value' appears more than once");
        assert!(parse(br#"{"action":"speed"}"#).unwrap_err().contains("needs field 'value'"));
        assert!(parse(br#"{"action":"speed","value":null}"#).unwrap_err().contains("must be a number, not null"));
        assert!(parse(br#"{"action":"seek","to":[1]}"#).unwrap_err().contains("field 'to'"));
        assert!(parse(br#"{"action":"seek","to":"nope"}"#).unwrap_err().starts_with("control body: field 'to': "));
        assert!(parse(b"42").unwrap_err().starts_with("control body must be a JSON object"));
        assert!(parse(b"{").unwrap_err().starts_with("control body is not JSON"));
        let long = format!(r#"{{"action":"{}"}}"#, "x".repeat(1000));
        assert!(parse(long.as_bytes()).unwrap_err().len() < 200, "client text is clipped");
    }
}
