//! Engine.IO v4 / Socket.IO v5 framing over WebSocket, just enough for `--protocol socketio`.
//!
//! One WebSocket text frame = one Engine.IO packet: a type digit and data. `0` open (JSON with
//! `sid`, `pingInterval`, ...), `1` close, `2` ping (answered with `3` pong), `4` message. A
//! Socket.IO packet is the data of an Engine.IO message: `40` connect (default namespace; the
//! server answers `40{"sid":...}`), `41` disconnect, `42[event, payload]` event, `44{...}`
//! connect error. The tickerfeed mapping: the event name is the v1 `type` (server → client)
//! or `op` (client → server) and the payload is the v1 object itself, so the payload of a
//! `42["quotes",{...}]` goes to the ordinary frame accounting unchanged.

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
    /// `42[name,payload]` (payload = raw JSON text, "" if absent).
    Event {
        name: &'a str,
        payload: &'a str,
    },
    /// Anything else (acks, binary events, upgrade/noop, garbage).
    Other,
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Packet<'_> {
    let Some(kind) = text.as_bytes().first() else {
        return Packet::Other;
    };
    let rest = &text[1..];
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
    let Some(kind) = m.as_bytes().first() else {
        return Packet::Other;
    };
    let rest = &m[1..];
    match kind {
        b'0' => Packet::Connect(rest),
        b'1' => Packet::Disconnect,
        b'4' => Packet::ConnectError(rest),
        b'2' => decode_event(rest).unwrap_or(Packet::Other),
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
        None if body.trim().is_empty() => "",
        None => return None,
    };
    Some(Packet::Event { name, payload })
}

/// `42["name",payload]`; `payload_json` must be one JSON value.
pub fn encode_event(name: &str, payload_json: &str) -> String {
    let mut s = String::with_capacity(payload_json.len() + name.len() + 6);
    s.push_str("42[\"");
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
    fn encodes_events_and_round_trips() {
        let sub = r#"{"op":"subscribe","symbols":["A","B"],"throttle_ms":0,"snapshot":true}"#;
        let wire = encode_event("subscribe", sub);
        assert_eq!(wire, format!(r#"42["subscribe",{sub}]"#));
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
