//! Access control against the real server: tokens on every transport and REST (checked before
//! the upgrade), entitlements on subscriptions, wildcards and REST answers, a session ending at
//! its token's expiry, the origin allow-list, the per-address connection cap, and the close of
//! a client that stays over the message rate.

mod common;

use std::time::{Duration, Instant};

use common::eio::{EioSocket, Polling, request as eio_request};
use common::raw::Raw;
use common::sse::SseClient;
use common::{Client, EVENT_TIMEOUT, http_full, http_raw, quote_symbols, start};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tickerfeed::access::{TokenRequest, sign_with_secret_file};
use tickerfeed::server::RunningServer;
use tokio_tungstenite::tungstenite::Message;

/// A server requiring HS256 tokens, and the secret file to sign them with.
struct Secured {
    server: RunningServer,
    secret: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn secured(extra: &[&str]) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "test-secret-of-more-than-32-bytes-0123456789\n").unwrap();
    let mut args = vec!["--auth-secret-file", secret.to_str().unwrap(), "--sim-rate", "3000"];
    args.extend_from_slice(extra);
    Secured { server: start(&args).await, secret, _dir: dir }
}

impl Secured {
    fn token(&self, symbols: &[&str], ttl_seconds: u64, admin: bool) -> String {
        let request = TokenRequest { sub: "alice".into(), symbols: symbols.iter().map(|s| s.to_string()).collect(), ttl_seconds, admin };
        sign_with_secret_file(&self.secret, &request).unwrap()
    }

    /// A token whose `exp` passed an hour ago, signed with the right key.
    fn expired_token(&self) -> String {
        let secret = std::fs::read_to_string(&self.secret).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = json!({"sub": "alice", "exp": now - 3600, "symbols": ["*"]});
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret.trim_end().as_bytes()).unwrap()).unwrap()
    }
}

/// Waits until `/metrics` has the line `expected` (a session's end is counted once its close is
/// over, after the client has seen the close frame).
async fn counted(server: &RunningServer, expected: &str) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !server.metrics.render(&server.bus, &server.feeds).lines().any(|line| line == expected) {
        assert!(Instant::now() < deadline, "no '{expected}' in the metrics");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn get(server: &RunningServer, path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{headers}\r\n", server.addr).into_bytes()
}

/// The status and JSON body of a refused WebSocket upgrade (never a 101).
async fn refused_upgrade(server: &RunningServer, path: &str, headers: &str) -> (u16, Value, common::Response) {
    let request = Raw::upgrade_request(server, path, &format!("Connection: close\r\n{headers}")).replace("Connection: Upgrade\r\n", "Connection: Upgrade, close\r\n");
    let response = http_raw(server, request.as_bytes()).await;
    assert_ne!(response.status, 101, "{path} {headers}: upgraded");
    let body = response.json(path);
    (response.status, body, response)
}

async fn upgrade_status(server: &RunningServer, path: &str, headers: &str) -> u16 {
    let (_raw, head) = Raw::handshake(server, &Raw::upgrade_request(server, path, headers)).await;
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[actix_web::test]
async fn every_transport_and_the_api_need_a_valid_token_before_anything_starts() {
    let s = secured(&[]).await;
    let valid = s.token(&["*"], 60, false);
    let mut tampered = valid.clone();
    let at = tampered.rfind('.').unwrap() + 1;
    tampered.replace_range(at..=at, if &valid[at..=at] == "A" { "B" } else { "A" });

    let (status, body, response) = refused_upgrade(&s.server, "/ws", "").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    assert_eq!(response.header("www-authenticate"), Some(r#"Bearer realm="tickerfeed""#));
    let (status, body, _) = refused_upgrade(&s.server, &format!("/ws?token={tampered}"), "").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("signature"), "{body}");
    let (status, body, response) = refused_upgrade(&s.server, "/ws", &format!("Authorization: Bearer {}\r\n", s.expired_token())).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")), "{body}");
    assert!(response.header("www-authenticate").unwrap().contains("invalid_token"));
    let (status, body, _) = refused_upgrade(&s.server, "/ws?token=not.a.jwt", "").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");

    for path in ["/sse?symbols=AAPL", "/api/symbols", "/api/quotes", "/api/quotes/AAPL", "/api/history/AAPL", "/api/feeds"] {
        let response = http_raw(&s.server, &get(&s.server, path, "")).await;
        assert_eq!((response.status, response.json(path)["error"].as_str()), (401, Some("unauthorized")), "{path}");
        let response = http_raw(&s.server, &get(&s.server, path, &format!("Authorization: Bearer {}\r\n", s.expired_token()))).await;
        assert_eq!((response.status, response.json(path)["error"].as_str()), (401, Some("token_expired")), "{path}");
    }
    // The probes and the dashboard's files are public.
    for path in ["/healthz", "/metrics", "/"] {
        assert_eq!(http_full(&s.server, "GET", path, None).await.status, 200, "{path}");
    }
    assert_eq!(s.server.connections.count(), 0, "no refused request opened a session");

    // A valid token in the query, or in the header.
    let mut client = Client::connect_path(&s.server, &format!("/ws?token={valid}&symbols=AAPL")).await;
    assert_eq!(client.recv_type("welcome").await["type"], "welcome");
    assert_eq!(client.recv_type("subscribed").await["symbols"], json!(["AAPL"]), "the token parameter is not reported as unknown");
    assert_eq!(upgrade_status(&s.server, "/ws", &format!("Authorization: Bearer {valid}\r\n")).await, 101);
    let mut sse = SseClient::connect(s.server.addr, &format!("/sse?symbols=AAPL&token={valid}")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.event("subscribed").await["symbols"], json!(["AAPL"]));
    let response = http_raw(&s.server, &get(&s.server, "/api/feeds", &format!("Authorization: bearer {valid}\r\n"))).await;
    assert_eq!(response.status, 200, "{}", response.body);
    s.server.shutdown().await;
}

#[actix_web::test]
async fn a_token_reads_only_its_symbols_on_sessions_wildcards_and_rest() {
    let s = secured(&["--throttle-ms", "0"]).await;
    let token = s.token(&["AAPL", "M*"], 60, false);
    let mut client = Client::connect_path(&s.server, &format!("/ws?token={token}")).await;
    client.recv_type("welcome").await;
    client.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","msft","GOOGL","NOPE9","../x"],"snapshot":false})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["symbols"], json!(["AAPL", "MSFT"]), "{subscribed}");
    let rejected: Vec<(String, String)> =
        subscribed["rejected"].as_array().unwrap().iter().map(|r| (r["symbol"].as_str().unwrap().into(), r["code"].as_str().unwrap().into())).collect();
    // Whether a symbol exists is not told to a token without it.
    assert!(rejected.contains(&("GOOGL".into(), "not_entitled".into())) && rejected.contains(&("NOPE9".into(), "not_entitled".into())), "{rejected:?}");
    assert!(rejected.iter().any(|(_, code)| code == "invalid_symbol"), "{rejected:?}");

    // `*` is every entitled symbol: AAPL and the M* ones, nothing else.
    client.send(json!({"op":"subscribe","id":2,"symbols":["*"],"snapshot":false})).await;
    client.recv_type("subscribed").await;
    let mut seen = std::collections::BTreeSet::<String>::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !(seen.contains("AAPL") && seen.iter().filter(|s| s.starts_with('M')).count() >= 3) {
        assert!(Instant::now() < deadline, "quotes of AAPL and M* symbols: {seen:?}");
        let frame = client.recv_type("quotes").await;
        for symbol in quote_symbols(&frame) {
            assert!(symbol == "AAPL" || symbol.starts_with('M'), "{symbol} is outside the token's symbols");
            seen.insert(symbol);
        }
    }

    let response = http_raw(&s.server, &get(&s.server, &format!("/api/symbols?token={token}"), "")).await;
    let symbols: Vec<String> = response.json("symbols").as_array().unwrap().iter().map(|e| e["symbol"].as_str().unwrap().to_string()).collect();
    assert!(symbols.contains(&"AAPL".to_string()) && symbols.contains(&"MSFT".to_string()));
    assert!(symbols.iter().all(|s| s == "AAPL" || s.starts_with('M')), "{symbols:?}");
    let response = http_raw(&s.server, &get(&s.server, &format!("/api/quotes?symbols=AAPL,GOOGL,NOPE9&token={token}"), "")).await;
    let body = response.json("quotes");
    assert_eq!(quote_symbols(&body), vec!["AAPL"]);
    assert_eq!((body["not_entitled"].clone(), body["unknown"].clone()), (json!(["GOOGL", "NOPE9"]), json!([])), "{body}");
    let all = http_raw(&s.server, &get(&s.server, &format!("/api/quotes?token={token}"), "")).await.json("all quotes");
    assert!(quote_symbols(&all).iter().all(|s| s == "AAPL" || s.starts_with('M')), "{all}");
    for path in ["/api/quotes/GOOGL", "/api/history/GOOGL"] {
        let response = http_raw(&s.server, &get(&s.server, &format!("{path}?token={token}"), "")).await;
        assert_eq!((response.status, response.json(path)["error"].as_str()), (403, Some("not_entitled")), "{path}");
    }
    assert_eq!(http_raw(&s.server, &get(&s.server, &format!("/api/quotes/AAPL?token={token}"), "")).await.status, 200);

    // Feed control needs the admin claim.
    let control = |token: String| {
        let body = r#"{"action":"pause"}"#;
        format!(
            "POST /api/feeds/sim/control HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let response = http_raw(&s.server, control(token).as_bytes()).await;
    assert_eq!((response.status, response.json("control")["error"].as_str()), (403, Some("forbidden")));
    let response = http_raw(&s.server, control(s.token(&["*"], 60, true)).as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    s.server.shutdown().await;
}

#[actix_web::test]
async fn a_session_ends_with_1008_when_its_token_expires() {
    let s = secured(&[]).await;
    // `exp` is in whole seconds: this token expires 1 to 2 s from now.
    let token = s.token(&["AAPL"], 2, false);
    let started = Instant::now();
    let mut client = Client::connect_path(&s.server, &format!("/ws?token={token}&symbols=AAPL")).await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "token_expired", "{error}");
    assert_eq!(client.recv_close().await, (1008, "token expired".to_string()));
    let elapsed = started.elapsed();
    assert!(elapsed > Duration::from_millis(900) && elapsed < Duration::from_secs(3), "{elapsed:?}");

    // Socket.IO on WebSocket: the transport is closed with that reason.
    let token = s.token(&["AAPL"], 2, false);
    let (mut socket, _) = EioSocket::open(s.server.addr, "").await;
    socket.send(&format!(r#"40{{"token":"{token}"}}"#)).await;
    assert!(socket.recv().await.starts_with("40{\"sid\":"));
    let error = socket.event("error").await;
    assert_eq!(error["code"], "token_expired", "{error}");
    let (code, reason, _) = socket.recv_close().await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    // An event stream: the error event, then the end of the stream.
    let token = s.token(&["AAPL"], 2, false);
    let mut sse = SseClient::connect(s.server.addr, &format!("/sse?symbols=AAPL&token={token}")).await;
    assert_eq!(sse.event("error").await["code"], "token_expired");
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while sse.next().await.is_some() {
        assert!(Instant::now() < deadline, "the stream ends");
    }
    counted(&s.server, "tickerfeed_disconnects_total{reason=\"token_expired\"} 3").await;
    s.server.shutdown().await;
}

#[actix_web::test]
async fn socket_io_checks_the_token_at_connect_and_refuses_with_connect_error() {
    let s = secured(&[]).await;
    let token = s.token(&["AAPL"], 60, false);
    // No token: CONNECT_ERROR with the reason; the client may CONNECT again with one.
    let (mut socket, _) = EioSocket::open(s.server.addr, "").await;
    socket.send("40").await;
    let refusal = socket.recv().await;
    let data: Value = serde_json::from_str(refusal.strip_prefix("44").unwrap_or_else(|| panic!("CONNECT_ERROR: {refusal}"))).unwrap();
    assert_eq!(data["data"]["code"], "unauthorized", "{data}");
    assert!(data["message"].as_str().unwrap().contains("token is required"), "{data}");
    socket.send(&format!(r#"40{{"token":"{}"}}"#, s.expired_token())).await;
    let refusal = socket.recv().await;
    assert!(refusal.starts_with("44") && refusal.contains("token_expired"), "{refusal}");
    socket.send(r#"40{"token":42}"#).await;
    assert!(socket.recv().await.contains("auth.token must be a string"));
    socket.send(&format!(r#"40{{"token":"{token}"}}"#)).await;
    assert!(socket.recv().await.starts_with("40{\"sid\":"));
    assert_eq!(socket.event("welcome").await["protocol"], 1);
    socket.send(r#"420["subscribe",{"symbols":["AAPL","MSFT"]}]"#).await;
    let ack = socket.ack(0).await;
    assert_eq!(ack["symbols"], json!(["AAPL"]), "{ack}");
    assert_eq!(ack["rejected"][0], json!({"symbol": "MSFT", "code": "not_entitled"}));

    // The handshake's token serves a CONNECT without auth.
    let (_socket, welcome) = EioSocket::connected(s.server.addr, &format!("&token={token}")).await;
    assert_eq!(welcome["protocol"], 1);
    // Polling: the same refusal, in a poll.
    let polling = Polling::open(&s.server).await;
    polling.post("40").await;
    let packets = polling.poll().await;
    assert!(packets[0].starts_with("44") && packets[0].contains("unauthorized"), "{packets:?}");
    s.server.shutdown().await;
}

#[actix_web::test]
async fn pages_on_origins_not_allowed_are_refused_before_the_upgrade_on_every_transport() {
    let server = start(&[]).await;
    let own = format!("http://{}", server.addr);
    let (status, body, _) = refused_upgrade(&server, "/ws", "Origin: https://evil.example\r\n").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("origin_not_allowed")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("https://evil.example"));
    for origin in ["http://localhost:5173", "http://127.0.0.1:1", own.as_str()] {
        assert_eq!(upgrade_status(&server, "/ws", &format!("Origin: {origin}\r\n")).await, 101, "{origin}");
    }
    assert_eq!(upgrade_status(&server, "/ws", "").await, 101, "no Origin: not a browser page");
    let response = http_raw(&server, &get(&server, "/sse?symbols=AAPL", "Origin: https://evil.example\r\n")).await;
    assert_eq!((response.status, response.json("sse")["error"].as_str()), (403, Some("origin_not_allowed")));
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAPL").await;
    assert_eq!(sse.header("access-control-allow-origin"), None);
    sse.event("welcome").await;
    // Socket.IO: every request, and no CORS header naming the refused page.
    let evil = |query: &str| format!("GET /socket.io/?{query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nOrigin: https://evil.example\r\n\r\n", server.addr).into_bytes();
    let response = http_raw(&server, &evil("EIO=4&transport=polling")).await;
    assert_eq!((response.status, response.header("access-control-allow-origin")), (403, None));
    let polling = Polling::open(&server).await;
    assert_eq!(http_raw(&server, &evil(&polling.query())).await.status, 403, "a poll from another page");
    let response = eio_request(&server, "GET", "EIO=4&transport=polling", None).await;
    assert_eq!(response.header("access-control-allow-origin"), Some("http://localhost:5173"));
    let (status, _, _) = refused_upgrade(&server, "/socket.io/?EIO=4&transport=websocket", "Origin: https://evil.example\r\n").await;
    assert_eq!(status, 403);
    // Feed control from another page (no tokens needed on this server: the origin is what stops it).
    let body = r#"{"action":"pause"}"#;
    let request = format!(
        "POST /api/feeds/sim/control HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http_raw(&server, request.as_bytes()).await.status, 403);
    server.shutdown().await;

    // A configured list replaces the default.
    let server = start(&["--allowed-origins", "https://app.example.com,http://dev.example.com:*"]).await;
    assert_eq!(upgrade_status(&server, "/ws", "Origin: https://app.example.com\r\n").await, 101);
    assert_eq!(upgrade_status(&server, "/ws", "Origin: http://dev.example.com:3000\r\n").await, 101);
    let (status, _, _) = refused_upgrade(&server, "/ws", "Origin: http://localhost:5173\r\n").await;
    assert_eq!(status, 403);
    server.shutdown().await;
    let error = common::try_config(&["--allowed-origins", "ftp://x"]).unwrap_err().to_string();
    assert!(error.starts_with("allowed_origins: 'ftp://x'"), "{error}");
}

#[actix_web::test]
async fn one_address_gets_at_most_its_connections_then_429() {
    let server = start(&["--max-connections-per-ip", "2"]).await;
    let first = Client::connect(&server).await;
    let _second = Client::connect(&server).await;
    let (status, body, response) = refused_upgrade(&server, "/ws", "").await;
    assert_eq!((status, body["error"].as_str()), (429, Some("too_many_connections_per_ip")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("127.0.0.1"), "{body}");
    assert_eq!(response.header("retry-after"), Some("5"));
    let response = http_raw(&server, &get(&server, "/sse?symbols=AAPL", "")).await;
    assert_eq!(response.status, 429, "every transport counts");
    assert_eq!(eio_request(&server, "GET", "EIO=4&transport=polling", None).await.status, 429);
    assert_eq!(http_full(&server, "GET", "/api/symbols", None).await.status, 200, "REST keeps answering");
    // A closed connection gives its place back.
    drop(first);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while server.connections.count() > 1 {
        assert!(Instant::now() < deadline, "the dropped connection's session ends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_third, _) = Client::connect_welcomed(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_client_still_over_the_rate_after_10_seconds_of_errors_is_closed_with_1008() {
    let server = start(&["--rate-limit", "5", "--rate-burst", "5"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    let started = Instant::now();
    let mut first_error = None;
    let close = loop {
        // Pings at about 50/s, ten times the rate, read as they are answered.
        client.ws.send(Message::Text(json!({"op":"ping"}).to_string().into())).await.unwrap();
        match client.next_message_within(Duration::from_millis(20)).await {
            Some(Message::Close(frame)) => break frame.expect("a close frame with a code"),
            Some(Message::Text(text)) if text.contains("rate_limited") => {
                first_error.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no close after 20 s of flooding");
    };
    let after = first_error.expect("rate_limited errors first").elapsed();
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, "over the message rate for 10 s"));
    assert!(after >= Duration::from_secs(10) && after < Duration::from_secs(12), "closed {after:?} after the first error");
    counted(&server, "tickerfeed_disconnects_total{reason=\"rate_limit_abuse\"} 1").await;
    server.shutdown().await;
}
