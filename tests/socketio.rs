//! Socket.IO at `/socket.io/`, by hand: the Engine.IO and Socket.IO rules the real client
//! libraries never break (their tests are in tests/clients/), checked against what the server
//! must do when a peer does break them.

mod common;

use std::time::{Duration, Instant};

use common::eio::{EioSocket, Polling, request};
use common::raw::disconnects;
use common::{assert_others_unaffected, http, start};
use serde_json::{Value, json};

#[actix_web::test]
async fn engine_io_requests_are_checked_before_any_session_opens() {
    let server = start(&[]).await;
    for (query, says) in [
        ("EIO=3&transport=polling", "unsupported protocol version EIO=3"),
        ("transport=polling", "missing query parameter EIO"),
        ("EIO=4&transport=flash", "unknown transport 'flash'"),
        ("EIO=4", "missing query parameter transport"),
        ("EIO=4&transport=polling&sid=nope", "unknown session id 'nope'"),
        ("EIO=4&transport=websocket&sid=nope", "unknown session id 'nope'"),
    ] {
        let response = request(&server, "GET", query, None).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        let message = response.json(query)["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{query}: {message}");
        // A page on another origin may read why it was refused.
        assert_eq!(response.header("access-control-allow-origin"), Some("http://localhost:5173"), "{query}");
    }
    let response = request(&server, "POST", "EIO=4&transport=polling", Some(b"40")).await;
    assert_eq!(response.status, 400, "a POST without sid");
    let response = request(&server, "PUT", "EIO=4&transport=polling", None).await;
    assert_eq!((response.status, response.header("allow")), (405, Some("GET, POST, OPTIONS")));
    assert_eq!(server.connections.count(), 0, "nothing was opened");
    server.shutdown().await;
}

#[actix_web::test]
async fn a_polling_session_opens_connects_subscribes_and_is_told_in_acks() {
    let server = start(&["--workers", "2"]).await;
    // AAPL has a price before the client subscribes, so that its snapshot carries it.
    while http(&server, "GET", "/api/quotes/AAPL", None).await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let polling = Polling::open(&server).await;
    let open = &polling.open;
    assert_eq!(
        (open["upgrades"].clone(), open["pingInterval"].clone(), open["pingTimeout"].clone(), open["maxPayload"].clone()),
        (json!(["websocket"]), json!(25000), json!(20000), json!(1000000))
    );
    // Nothing but the CONNECT and pongs counts before the CONNECT: the event is dropped.
    polling.post("42[\"list\"]\u{1e}40").await;
    let packets = polling.poll().await;
    assert!(packets[0].starts_with("40{\"sid\":\"") && packets[0].len() > 20, "{packets:?}");
    assert!(packets[1].starts_with("42[\"welcome\",{\"protocol\":1,"), "{packets:?}");
    assert!(!packets.iter().any(|p| p.starts_with("42[\"subscriptions\"")), "an event before CONNECT is not answered: {packets:?}");
    polling.post("421[\"subscribe\",{\"symbols\":[\"AAPL\",\"NOPE\"],\"throttle_ms\":100}]").await;
    // The ack, the snapshot and live quotes, in that order, in one poll or several.
    let mut packets = Vec::new();
    while !packets.iter().any(|p: &String| p.starts_with("42[\"quotes\",{\"quotes\":")) {
        packets.extend(polling.poll().await);
    }
    let ack: Value = serde_json::from_str(&packets[0][3..]).unwrap();
    assert_eq!(
        ack,
        json!([{"throttle_ms":100,"align":false,"symbols":["AAPL"],"rejected":[{"symbol":"NOPE","code":"unknown_symbol"}],"channels":{"quotes":["AAPL"]}}]),
        "{packets:?}"
    );
    assert!(packets[1].starts_with("42[\"quotes\",{\"snapshot\":true,\"quotes\":[{\"symbol\":\"AAPL\""), "{packets:?}");
    assert!(packets.last().unwrap().contains("\"symbol\":\"AAPL\""), "{packets:?}");
    // Cross-origin polling is allowed, credentials included.
    let response = polling.poll_raw().await;
    assert_eq!((response.header("access-control-allow-origin"), response.header("access-control-allow-credentials")), (Some("http://localhost:5173"), Some("true")));
    assert_eq!(response.header("content-type"), Some("text/plain; charset=UTF-8"));
    server.shutdown().await;
}

#[actix_web::test]
async fn a_second_concurrent_poll_is_refused_and_closes_the_session() {
    let server = start(&["--workers", "2"]).await;
    let polling = Polling::connected(&server).await;
    // Two polls at once (nothing is due: no subscription, the next ping 25 s away, so the first
    // to arrive waits): whichever comes second is refused, and the first gets the close.
    let (a, b) = futures_util::join!(polling.poll_raw(), polling.poll_raw());
    let (refused, closed) = if a.status == 400 { (a, b) } else { (b, a) };
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.json("second poll")["message"].as_str().unwrap().contains("a poll is already pending"), "{}", refused.body);
    assert_eq!((closed.status, closed.body.as_str()), (200, "1"), "the pending poll gets the close packet");
    assert_eq!(polling.poll_raw().await.status, 400, "the session is gone");
    wait_for_disconnects(&server, "protocol_error", 1.0).await;
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn post_bodies_over_max_payload_get_413_and_malformed_ones_close_the_session() {
    let server = start(&["--socketio-max-payload", "2048"]).await;
    let polling = Polling::connected(&server).await;
    let big = format!("42[\"list\",\"{}\"]", "x".repeat(2100));
    let response = polling.post_raw(big.as_bytes()).await;
    assert_eq!(response.status, 413, "{}", response.body);
    assert!(response.json("413")["message"].as_str().unwrap().contains("maxPayload (2048 bytes)"), "{}", response.body);
    // The session lives on.
    polling.post("427[\"list\"]").await;
    assert_eq!(polling.poll_for("437[").await, "437[{\"symbols\":[]}]");
    // An event over the 4 KiB message limit inside an allowed body: an error event.
    let server2 = start(&[]).await;
    let other = Polling::connected(&server2).await;
    other.post(&format!("42[\"subscribe\",\"{}\"]", "A,".repeat(2100))).await;
    let error = other.poll_for("42[\"error\"").await;
    assert!(error.contains("the limit is 4096"), "{error}");
    server2.shutdown().await;
    // A body that is not Engine.IO packets: 400 naming the fault, and the session is closed.
    let response = polling.post_raw(b"40\x1ex").await;
    assert_eq!(response.status, 400);
    assert!(response.json("malformed")["message"].as_str().unwrap().contains("record 2 of 2: engine.io packet: unknown type 'x'"), "{}", response.body);
    let last = polling.poll_raw().await;
    assert!(last.status == 400 || last.body == "1", "the session ends: {} {}", last.status, last.body);
    server.shutdown().await;
}

#[actix_web::test]
async fn a_client_that_stops_answering_pings_is_closed_after_ping_interval_plus_timeout() {
    let server = start(&["--socketio-ping-interval-ms", "300", "--socketio-ping-timeout-ms", "300"]).await;
    // One that answers every ping stays.
    let (mut good, _) = EioSocket::connected(server.addr, "").await;
    let good = actix_web::rt::spawn(async move {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            if let Ok(packet) = tokio::time::timeout(Duration::from_millis(100), good.recv()).await {
                if packet == "2" {
                    good.send("3").await;
                }
            }
        }
        good.send("421[\"list\"]").await;
        good.ack(1).await
    });
    let (mut silent, _) = EioSocket::open(server.addr, "").await;
    silent.send("40").await;
    let opened = Instant::now();
    let (code, reason, packets) = silent.recv_close().await;
    let after = opened.elapsed();
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    assert!(packets.iter().filter(|p| *p == "2").count() >= 1, "it was pinged: {packets:?}");
    assert!(after >= Duration::from_millis(550) && after < Duration::from_millis(2500), "closed after {after:?}, expected ~600 ms");
    assert!(!packets.iter().any(|p| p.starts_with("41")), "never a DISCONNECT: {packets:?}");
    // The good one answered every ping meanwhile and is still served.
    assert_eq!(good.await.unwrap(), json!({"symbols": []}));
    // No CONNECT within pingInterval + pingTimeout: closed too.
    let (mut mute, _) = EioSocket::open(server.addr, "").await;
    let (code, _, _) = mute.recv_close().await;
    assert_eq!(code, 1001);
    // Counted once the close handshake is over.
    wait_for_disconnects(&server, "idle_timeout", 2.0).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn bad_socket_io_packets_get_error_events_and_the_session_goes_on() {
    let server = start(&[]).await;
    let (mut socket, welcome) = EioSocket::connected(server.addr, "").await;
    assert_eq!(welcome["protocol"], 1);
    assert!(welcome.get("type").is_none(), "{welcome}");
    // Another namespace: CONNECT_ERROR, and its events are refused.
    socket.send("40/admin,").await;
    assert_eq!(socket.recv().await, "44/admin,{\"message\":\"Invalid namespace\"}");
    socket.send("42/admin,5[\"list\"]").await;
    let refused = socket.ack(5).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("namespace '/admin' is not connected"), "{refused}");
    // A binary event: an error (its ack), its attachment skipped without another.
    socket.send("451-6[\"subscribe\",{\"_placeholder\":true,\"num\":0}]").await;
    socket.send_binary(b"\x01\x02").await;
    let binary = socket.ack(6).await;
    assert_eq!(binary["error"]["code"], "bad_request");
    assert!(binary["error"]["message"].as_str().unwrap().contains("binary events are not supported"), "{binary}");
    // A binary message nobody announced: an error event.
    socket.send_binary(b"\x03").await;
    let error = socket.event("error").await;
    assert!(error["message"].as_str().unwrap().contains("binary messages are not supported"), "{error}");
    // Unparsable Socket.IO packets, events without ack: error events naming the fault.
    for (packet, says) in [("42[\"subscribe\"", "not JSON"), ("49", "unknown type '9'"), ("42{\"a\":1}", "must be an array"), ("43[1]", "ACK without an ack id")] {
        socket.send(packet).await;
        let error = socket.event("error").await;
        assert!(error["message"].as_str().unwrap().contains(says), "{packet}: {error}");
    }
    // Over the 4 KiB message limit (under maxPayload): refused unparsed, in its ack (read from
    // the packet's head), nothing subscribed; without an ack id, an error event.
    socket.send(&format!("427[\"subscribe\",\"{}\"]", "AAPL,".repeat(1000))).await;
    let refused = socket.ack(7).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("the limit is 4096"), "{refused}");
    socket.send(&format!("42[\"subscribe\",\"{}\"]", "AAPL,".repeat(1000))).await;
    let error = socket.event("error").await;
    assert!(error["message"].as_str().unwrap().contains("the limit is 4096"), "{error}");
    // And the session is as it was.
    socket.send("428[\"subscribe\",\"aapl, msft\"]").await;
    assert_eq!(socket.ack(8).await["symbols"], json!(["AAPL", "MSFT"]));
    assert_eq!(server.connections.count(), 1);
    // An Engine.IO packet a v4 client never sends fails the connection with 1002.
    socket.send("2").await;
    let (code, reason, _) = socket.recv_close().await;
    assert_eq!(code, 1002);
    assert!(reason.contains("the server pings"), "{reason}");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_polling_client_that_stops_polling_is_closed_as_a_slow_consumer() {
    let server = start(&["--slow-consumer-timeout", "0.5"]).await;
    let polling = Polling::connected(&server).await;
    polling.post("421[\"subscribe\",{\"symbols\":[\"*\"],\"throttle_ms\":0}]").await;
    polling.poll_for("431[").await;
    // Stops polling while quotes are due: closed after the timeout.
    wait_for_disconnects(&server, "slow_consumer", 1.0).await;
    let late = polling.poll_raw().await;
    assert!(late.status == 400 || late.body == "1", "{} {}", late.status, late.body);
    assert_eq!(server.connections.count(), 0);
    server.shutdown().await;
}

#[actix_web::test]
async fn a_polling_session_upgrades_with_a_probe_and_its_pending_poll_gets_a_noop() {
    let server = start(&["--workers", "2"]).await;
    let polling = Polling::connected(&server).await;
    polling.post("421[\"subscribe\",{\"symbols\":[\"AAPL\"],\"throttle_ms\":50}]").await;
    polling.poll_for("431[").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/socket.io/?EIO=4&transport=websocket&sid={}", server.addr, polling.sid)).await.expect("upgrade");
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text("2probe".into())).await.unwrap();
    let probe = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(probe, Message::Text("3probe".into()));
    // While probing, a poll ends at once with a noop (quotes are due, and wait for the upgrade).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let packets = polling.poll().await;
        if packets == ["6"] {
            break;
        }
        assert!(Instant::now() < deadline, "no noop: {packets:?}");
    }
    ws.send(Message::Text("5".into())).await.unwrap();
    let mut socket = EioSocket { ws };
    socket.send("422[\"list\"]").await;
    assert_eq!(socket.ack(2).await, json!({"symbols": ["AAPL"]}));
    let quotes = socket.event("quotes").await;
    assert_eq!(quotes["quotes"][0]["symbol"], "AAPL");
    // Counted as a WebSocket from now on; polling that session is refused.
    let (_, metrics) = http(&server, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("tickerfeed_connections{transport=\"socketio_websocket\"} 1"),
        "{}",
        metrics.lines().filter(|l| l.starts_with("tickerfeed_connections")).collect::<Vec<_>>().join("\n")
    );
    assert!(metrics.contains("tickerfeed_connections{transport=\"socketio_polling\"} 0"));
    let refused = polling.poll_raw().await;
    assert_eq!(refused.status, 400);
    assert!(refused.json("poll after upgrade")["message"].as_str().unwrap().contains("has upgraded to WebSocket"), "{}", refused.body);
    server.shutdown().await;
}

#[actix_web::test]
async fn shutdown_closes_the_transport_and_never_sends_a_disconnect() {
    let server = start(&[]).await;
    let (mut socket, _) = EioSocket::connected(server.addr, "&symbols=AAPL").await;
    assert_eq!(socket.event("subscribed").await["symbols"], json!(["AAPL"]));
    let query = Polling::connected(&server).await.query();
    let pending = {
        let addr = server.addr;
        actix_web::rt::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(format!("GET /socket.io/?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        })
    };
    let stopping = actix_web::rt::spawn(server.shutdown());
    let (code, reason, packets) = socket.recv_close().await;
    assert_eq!((code, reason.as_str()), (1001, "going away"));
    assert!(!packets.iter().any(|p| p.starts_with("41")), "{packets:?}");
    let response = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("the poll ends").unwrap();
    assert!(response.ends_with("\r\n\r\n1"), "the pending poll gets Engine.IO's close: {response:?}");
    stopping.await.unwrap();
}

/// Waits (polling /metrics, at most 10 s) until `reason` has counted `count` disconnects.
async fn wait_for_disconnects(server: &tickerfeed::server::RunningServer, reason: &str, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = disconnects(server, reason).await;
        if now >= count {
            assert_eq!(now, count, "more {reason} disconnects than expected");
            return;
        }
        assert!(Instant::now() < deadline, "{now} {reason} disconnects, expected {count}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_post_waits_until_its_requests_are_read_and_a_second_meanwhile_is_refused() {
    let server = start(&["--rate-limit", "1000000", "--rate-burst", "1000000"]).await;
    let polling = Polling::connected(&server).await;
    // 2000 pings whose acks (over 16 KiB) are not polled: the session stops reading them, so
    // the POST is not answered until the client polls.
    let body: Vec<String> = (1..=2000).map(|id| format!("42{id}[\"ping\"]")).collect();
    let body = body.join("\u{1e}");
    let first = polling.post_raw(body.as_bytes());
    let rest = async {
        // Until the first POST is in progress, a POST of one request goes through.
        let second = loop {
            let response = polling.post_raw(b"42[\"list\"]").await;
            if response.status == 400 {
                break response;
            }
        };
        let mut acks = 0;
        while acks < 2000 {
            acks += polling.poll().await.iter().filter(|p| p.starts_with("43")).count();
        }
        second
    };
    let (first, second) = futures_util::join!(first, rest);
    assert!(second.json("second POST")["message"].as_str().unwrap().contains("a POST is already in progress"), "{}", second.body);
    assert_eq!((first.status, first.body.as_str()), (200, "ok"), "the first POST is answered once its requests are read");
    server.shutdown().await;
}

#[actix_web::test]
async fn polling_sessions_count_against_the_one_connection_limit() {
    let server = start(&["--max-connections", "2"]).await;
    let _ws = common::Client::connect(&server).await;
    let _polling = Polling::connected(&server).await;
    let refused = request(&server, "GET", "EIO=4&transport=polling", None).await;
    assert_eq!((refused.status, refused.header("retry-after")), (503, Some("5")));
    assert!(refused.json("503")["message"].as_str().unwrap().contains("limit of 2 connections"), "{}", refused.body);
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let error = tokio_tungstenite::connect_async(url).await.expect_err("refused");
    assert!(error.to_string().contains("503"), "{error}");
    server.shutdown().await;
}

#[actix_web::test]
async fn a_session_that_closes_during_its_upgrade_probe_does_not_upgrade() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start(&["--workers", "2"]).await;
    let polling = Polling::connected(&server).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/socket.io/?EIO=4&transport=websocket&sid={}", server.addr, polling.sid)).await.expect("upgrade");
    ws.send(Message::Text("2probe".into())).await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap(), Message::Text("3probe".into()));
    // socket.io-client's disconnect() during the probe: DISCONNECT over polling, then `5`.
    polling.post("41").await;
    wait_for_disconnects(&server, "client_close", 1.0).await;
    ws.send(Message::Text("5".into())).await.unwrap();
    // The WebSocket is closed with a frame (never the polling close's raw bytes), and nothing
    // is counted as upgraded.
    let mut texts = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert!(texts.is_empty(), "{texts:?}");
    let close = close.expect("a close code");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1001, "the session is closed"));
    let (_, metrics) = http(&server, "GET", "/metrics", None).await;
    for transport in ["socketio_polling", "socketio_websocket"] {
        assert!(
            metrics.contains(&format!("tickerfeed_connections{{transport=\"{transport}\"}} 0")),
            "{transport}: {}",
            metrics.lines().filter(|l| l.starts_with("tickerfeed_connections")).collect::<Vec<_>>().join("\n")
        );
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn every_request_with_an_ack_is_acked_even_over_the_rate_limit() {
    let server = start(&["--rate-limit", "1", "--rate-burst", "5"]).await;
    let (mut socket, _) = EioSocket::connected(server.addr, "").await;
    // 30 requests at once: 5 within the burst, 25 dropped, each dropped one acked with an error
    // (socket.io-client would otherwise wait for them until its own timeout).
    for id in 1..=30 {
        socket.send(&format!("42{id}[\"ping\"]")).await;
    }
    let mut answered = 0;
    let mut limited = 0;
    for id in 1..=30 {
        let ack = socket.ack(id).await;
        if ack.get("ts").is_some() {
            answered += 1;
        } else {
            assert_eq!(ack["error"]["code"], "rate_limited", "{ack}");
            limited += 1;
        }
    }
    assert_eq!((answered, limited), (5, 25));
    // Requests without an ack still fold into one error per second.
    for _ in 0..10 {
        socket.send("42[\"ping\"]").await;
    }
    let error = socket.event("error").await;
    assert_eq!((error["code"].clone(), error["count"].clone()), (json!("rate_limited"), json!(1)));
    server.shutdown().await;
}

#[actix_web::test]
async fn of_two_upgrade_attempts_at_once_the_first_probe_wins_and_the_other_is_closed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start(&["--workers", "2"]).await;
    let polling = Polling::connected(&server).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket&sid={}", server.addr, polling.sid);
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.expect("upgrade");
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.expect("upgrade");
    first.send(Message::Text("2probe".into())).await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), first.next()).await.unwrap().unwrap().unwrap(), Message::Text("3probe".into()));
    // The second's probe and `5` do nothing but close it.
    second.send(Message::Text("2probe".into())).await.unwrap();
    second.send(Message::Text("5".into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), second.next()).await.expect("a close in time") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1002),
        other => panic!("expected a close frame, got {other:?}"),
    }
    first.send(Message::Text("5".into())).await.unwrap();
    let mut socket = EioSocket { ws: first };
    socket.send("421[\"list\"]").await;
    assert_eq!(socket.ack(1).await, json!({"symbols": []}));
    server.shutdown().await;
}
