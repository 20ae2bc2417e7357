//! Engine.IO v4 / Socket.IO v5 framing over WebSocket, just enough for `--protocol socketio`.
//!
//! One WebSocket text frame = one Engine.IO packet: a type digit and data. `0` open (JSON with
//! `sid`, `pingInterval`, ...), `1` close, `2` ping (answered with `3` pong), `4` message. A
//! Socket.IO packet is the data of an Engine.IO message: `40` connect (default namespace; the
//! server answers `40{"sid":...}`), `41` disconnect, `42[event, payload]` event, `44{...}`
//! connect error, `43<id>[args...]` the answer to a client event sent with ack id `<id>`.
//!
//! tickerfeed's mapping (the Node peer speaks the same): the event name says what a message is,
//! and its one argument is the v1 object's fields without `type`, `op` or `id`. The client
//! sends `42<id>["subscribe",{"symbols":[...],"throttle_ms":0,"snapshot":true}]`; the server
//! answers `43<id>[{"throttle_ms":0,"symbols":[...],"rejected":[...]}]` (or
//! `43<id>[{"error":{"code":...,"message":...}}]`), then sends `42["quotes",{"quotes":[...]}]`
//! (`{"snapshot":true,"quotes":[...]}` for snapshot batches), `42["feed",{...}]` and
//! `42["error",{...}]`; `42["welcome",{...}]` follows the namespace connect.

/// One decoded Engine.IO packet; strings borrow from the frame.
#[derive(Debug, PartialEq)]
pub enum Packet<'a> {
    /// `0{...}`: handshake data (JSON).
    Open(&'a str),
    Close,
    /// `2` (with optional probe data): must be answered with `3` + the same data.
    Ping(&'a str),
    Pong(&'a str),
    /// `40...`: namespace connect acknowledged (data = JSON with `sid`).
    Connect(&'a str),
    /// `41`: server disconnected the namespace.
    Disconnect,
    /// `44...`: connect refused (data = JSON error).
    ConnectError(&'a str),
    /// `42[name,payload]` (payload = raw JSON text, "" if absent). An ack id, if any, is
    /// skipped: the server asks the client for no acknowledgement.
    Event {
        name: &'a str,
        payload: &'a str,
    },
    /// `43<id>[arg, ...]`: the answer to the client's event `id`; `payload` is the raw JSON
    /// text of the first argument ("" if there is none).
    Ack {
        id: u64,
        payload: &'a str,
    },
    /// Anything else (binary events, upgrade/noop, garbage).
    Other,
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Packet<'_> {
    // `get`: a frame starting with a multi-byte character has no boundary at 1.
    let (Some(kind), Some(rest)) = (text.as_bytes().first(), text.get(1..)) else {
        return Packet::Other;
    };
    match kind {
        b'0' => Packet::Open(rest),
        b'1' => Packet::Close,
        b'2' => Packet::Ping(rest),
        b'3' => Packet::Pong(rest),
        b'4' => decode_sio(rest),
        _ => Packet::Other,
    }
}

fn decode_sio(m: &str) -> Packet<'_> {
    let (Some(kind), Some(rest)) = (m.as_bytes().first(), m.get(1..)) else {
        return Packet::Other;
    };
    match kind {
        b'0' => Packet::Connect(rest),
        b'1' => Packet::Disconnect,
        b'4' => Packet::ConnectError(rest),
        b'2' => decode_event(rest).unwrap_or(Packet::Other),
        b'3' => decode_ack(rest).unwrap_or(Packet::Other),
        _ => Packet::Other,
    }
}

/// `[` `"name"` [`,` payload] `]`, after an optional ack id (digits). Only the default
/// namespace is used, so a `/nsp,` prefix is not expected (and declined).
fn decode_event(s: &str) -> Option<Packet<'_>> {
    let s = s.trim_start_matches(|c: char| c.is_ascii_digit());
    let s = s.strip_prefix('[')?.trim_start();
    let s = s.strip_prefix('"')?;
    let end = s.find('"')?;
    let name = &s[..end];
    if name.contains('\\') {
        return None;
    }
    let s = s[end + 1..].trim_start();
    let body = s.trim_end().strip_suffix(']')?;
    let payload = match body.strip_prefix(',') {
        Some(p) => p.trim(),
        None if body.trim().is_empty() => &body[..0], // a slice of the frame, like any payload
        None => return None,
    };
    Some(Packet::Event { name, payload })
}

/// `<id>` `[` [first argument [`,` more]] `]`. Acks are rare (one per request), so the end of
/// the first argument is found by parsing it; more arguments are ignored.
fn decode_ack(s: &str) -> Option<Packet<'_>> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let id = s[..digits].parse::<u64>().ok()?;
    let args = s[digits..].trim();
    let inner = args.strip_prefix('[')?.strip_suffix(']')?;
    let first = inner.trim_start();
    if first.is_empty() {
        return Some(Packet::Ack { id, payload: &first[..0] });
    }
    let mut values = serde_json::Deserializer::from_str(first).into_iter::<serde::de::IgnoredAny>();
    values.next()?.ok()?;
    let end = values.byte_offset();
    // After the first argument: nothing, or a comma and more arguments.
    let after = first[end..].trim_start();
    if !(after.is_empty() || after.starts_with(',')) {
        return None;
    }
    Some(Packet::Ack { id, payload: &first[..end] })
}

/// Whether an ack's payload is tickerfeed's error answer, `{"error":{"code":...,...}}`.
pub fn is_error_ack(payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
    }
    // (serde would also read a struct from an array: only an object is an answer.)
    payload.trim_start().starts_with('{') && matches!(serde_json::from_str::<Answer>(payload), Ok(Answer { error: Some(_) }))
}

/// `42["name",payload]`; `payload_json` must be one JSON value.
#[cfg(test)]
pub fn encode_event(name: &str, payload_json: &str) -> String {
    encode_event_with_ack(name, None, payload_json)
}

/// `42<ack>["name",payload]`: with `Some(id)` the server answers with `43<id>[...]`.
pub fn encode_event_with_ack(name: &str, ack: Option<u64>, payload_json: &str) -> String {
    let mut s = String::with_capacity(payload_json.len() + name.len() + 26);
    s.push_str("42");
    if let Some(id) = ack {
        s.push_str(&id.to_string());
    }
    s.push_str("[\"");
    s.push_str(name);
    s.push_str("\",");
    s.push_str(payload_json);
    s.push(']');
    s
}

/// Client → server namespace connect (default namespace, no auth).
pub const CONNECT: &str = "40";
/// Engine.IO pong for a ping without data.
pub const PONG: &str = "3";

/// `pingInterval` (ms) from the open packet's JSON, if present. (Pings are answered as soon
/// as they are read, so the client does not need it; kept for the tests of the framing.)
#[cfg(test)]
pub fn ping_interval_ms(open_json: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Open {
        #[serde(rename = "pingInterval")]
        ping_interval: Option<u64>,
    }
    serde_json::from_str::<Open>(open_json).ok()?.ping_interval
}

/// The Socket.IO endpoint for a `--url`: the same host and port, path `/socket.io/` with
/// `EIO=4&transport=websocket`, unless the URL already names a `socket.io` path.
pub fn socketio_url(url: &str) -> String {
    if url.contains("/socket.io") {
        return url.to_string();
    }
    // ws://host:port[/path...] → ws://host:port/socket.io/?EIO=4&transport=websocket
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[after_scheme..].find(['/', '?']).map_or(url.len(), |i| after_scheme + i);
    format!("{}/socket.io/?EIO=4&transport=websocket", &url[..host_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_engine_and_socketio_packets() {
        assert_eq!(decode(r#"0{"sid":"x","pingInterval":25000,"pingTimeout":20000}"#), Packet::Open(r#"{"sid":"x","pingInterval":25000,"pingTimeout":20000}"#));
        assert_eq!(decode("2"), Packet::Ping(""));
        assert_eq!(decode("3probe"), Packet::Pong("probe"));
        assert_eq!(decode("1"), Packet::Close);
        assert_eq!(decode(r#"40{"sid":"abc"}"#), Packet::Connect(r#"{"sid":"abc"}"#));
        assert_eq!(decode("41"), Packet::Disconnect);
        assert_eq!(decode(r#"44{"message":"nope"}"#), Packet::ConnectError(r#"{"message":"nope"}"#));
        let q = r#"{"type":"quotes","quotes":[{"symbol":"A","seq":1,"pt":2,"x":[1,"]"]}]}"#;
        assert_eq!(decode(&format!(r#"42["quotes",{q}]"#)), Packet::Event { name: "quotes", payload: q });
        // Whitespace, an ack id and a payload-less event.
        assert_eq!(decode(r#"4212[ "welcome" , {"type":"welcome"} ] "#), Packet::Event { name: "welcome", payload: r#"{"type":"welcome"}"# });
        assert_eq!(decode(r#"42["ping"]"#), Packet::Event { name: "ping", payload: "" });
        for bad in ["", "9", "4", "42", "42[", r#"42["a",1"#, r#"42[1,2]"#, r#"42["a" 1]"#] {
            assert_eq!(decode(bad), Packet::Other, "{bad:?}");
        }
    }

    #[test]
    fn decodes_acks() {
        let sub = r#"{"throttle_ms":0,"symbols":["AAPL","MSFT"],"rejected":[{"symbol":"ZZZ","code":"unknown_symbol"}]}"#;
        assert_eq!(decode(&format!("431[{sub}]")), Packet::Ack { id: 1, payload: sub });
        assert_eq!(decode(r#"4312 [ {"ts":1} , "more", [1] ] "#), Packet::Ack { id: 12, payload: r#"{"ts":1}"# });
        assert_eq!(decode("437[]"), Packet::Ack { id: 7, payload: "" });
        assert_eq!(decode(r#"437["]",1]"#), Packet::Ack { id: 7, payload: r#""]""# });
        let err = r#"{"error":{"code":"too_many_symbols","message":"no"}}"#;
        assert_eq!(decode(&format!("439[{err}]")), Packet::Ack { id: 9, payload: err });
        assert!(is_error_ack(err));
        assert!(!is_error_ack(sub) && !is_error_ack(r#"{"error":null}"#) && !is_error_ack("") && !is_error_ack("[1]"));
        for bad in ["43", "43[{}]", "431", "431{}", "431[{}", "431[{} {}]", "431[{]", "4318446744073709551616[{}]", "43x[{}]"] {
            assert_eq!(decode(bad), Packet::Other, "{bad:?}");
        }
    }

    /// Whatever arrives, decoding never panics and every payload is a slice of the frame (the
    /// connection hands it on by offsets).
    #[test]
    fn garbage_never_panics_and_payloads_lie_in_the_frame() {
        let valid = [
            r#"42["quotes",{"quotes":[{"symbol":"A","seq":1,"pt":2}]}]"#,
            r#"42["quotes",{"snapshot":true,"quotes":[]}]"#,
            r#"431[{"throttle_ms":0,"symbols":["A"],"rejected":[]}]"#,
            r#"432[{"error":{"code":"bad_request","message":"é "x""}}]"#,
            r#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            r#"40{"sid":"abc"}"#,
            "é2",
            "4é",
            r#"42["welcome",{"protocol":1,"server":"tickerfeed","instance":"i"}]"#,
            "2",
            "6",
        ];
        let check = |text: &str| {
            let payload = match decode(text) {
                Packet::Event { payload, .. } | Packet::Ack { payload, .. } => payload,
                _ => return,
            };
            let (base, p) = (text.as_ptr() as usize, payload.as_ptr() as usize);
            assert!(p >= base && p + payload.len() <= base + text.len(), "{text:?}");
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for v in valid {
            for cut in (0..=v.len()).filter(|&i| v.is_char_boundary(i)) {
                check(&v[..cut]);
                check(&v[cut..]);
            }
            for _ in 0..500 {
                let mut b = v.as_bytes().to_vec();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len() as u64) as usize;
                    const BYTES: &[u8] = br#"[]{}\",:0123 4a"#;
                    b[i] = BYTES[(next() % BYTES.len() as u64) as usize];
                }
                check(&String::from_utf8_lossy(&b));
            }
        }
    }

    #[test]
    fn encodes_events_and_round_trips() {
        let sub = r#"{"op":"subscribe","symbols":["A","B"],"throttle_ms":0,"snapshot":true}"#;
        let wire = encode_event("subscribe", sub);
        assert_eq!(wire, format!(r#"42["subscribe",{sub}]"#));
        let arg = r#"{"symbols":["A"],"throttle_ms":0,"snapshot":true}"#;
        assert_eq!(encode_event_with_ack("subscribe", Some(12), arg), format!(r#"4212["subscribe",{arg}]"#));
        assert_eq!(decode(&encode_event_with_ack("subscribe", Some(3), arg)), Packet::Event { name: "subscribe", payload: arg });
        assert_eq!(decode(&wire), Packet::Event { name: "subscribe", payload: sub });
        let v: serde_json::Value = serde_json::from_str(&wire[2..]).unwrap();
        assert_eq!(v[0], "subscribe");
        assert_eq!(v[1]["symbols"][1], "B");
    }

    #[test]
    fn open_packet_and_url() {
        assert_eq!(ping_interval_ms(r#"{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":5000}"#), Some(25000));
        assert_eq!(ping_interval_ms("{}"), None);
        assert_eq!(socketio_url("ws://127.0.0.1:8080/ws"), "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket");
        assert_eq!(socketio_url("ws://h:1"), "ws://h:1/socket.io/?EIO=4&transport=websocket");
        assert_eq!(socketio_url("ws://h:1/socket.io/?EIO=4&transport=websocket&x=1"), "ws://h:1/socket.io/?EIO=4&transport=websocket&x=1");
    }
}
