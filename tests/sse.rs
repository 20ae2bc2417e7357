//! `GET /sse`: Server-Sent Events on the same session core as `/ws`, read by a client that
//! parses the stream as an `EventSource` would.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::sse::{Block, SseClient};
use common::{Client, EVENT_TIMEOUT, http_full, start};
use serde_json::json;

#[actix_web::test]
async fn streams_welcome_subscribed_then_throttled_quotes_snapshot_first() {
    let server = start(&["--sim-rate", "2000"]).await;
    // Both symbols have a price, so the snapshot has something to carry.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while ["AAPL", "MSFT"].iter().any(|s| server.bus.topic(s).unwrap().seq() == 0) {
        assert!(Instant::now() < deadline, "the simulation publishes AAPL and MSFT");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAPL,msft,ZZZZ,../x&throttle_ms=300").await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    assert_eq!(sse.header("access-control-allow-origin"), None, "no Origin, no CORS (tests/access.rs: an allowed page's origin is named)");
    assert_eq!(sse.next().await, Some(Block::Retry(1000)), "retry: comes first, so a reconnect is paced from the start");
    let welcome = match sse.next().await {
        Some(Block::Event { name, data }) if name == "welcome" => data,
        other => panic!("expected welcome, got {other:?}"),
    };
    assert_eq!((welcome["type"].as_str(), welcome["protocol"].as_u64(), welcome["instance"].as_str()), (Some("welcome"), Some(1), Some(server.instance.as_str())));
    let subscribed = sse.event("subscribed").await;
    assert_eq!(subscribed["symbols"], json!(["AAPL", "MSFT"]));
    assert_eq!(subscribed["throttle_ms"], 300);
    assert_eq!(subscribed["align"], false);
    assert_eq!(subscribed["rejected"], json!([{"symbol":"ZZZZ","code":"unknown_symbol"},{"symbol":"../x","code":"invalid_symbol"}]));
    let mut aligned = SseClient::connect(server.addr, "/sse?symbols=AAPL&throttle_ms=300&align=1").await;
    assert_eq!(aligned.event("subscribed").await["align"], true, "align=1 in the URL, as on /ws");

    let snapshot = sse.event("quotes").await;
    assert_eq!(snapshot["snapshot"], true, "the first quotes event is the snapshot");
    let mut last_seq: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut short_gaps = 0;
    let mut gaps = 0;
    for _ in 0..12 {
        let batch = sse.event("quotes").await;
        assert!(batch.get("snapshot").is_none(), "only the first batch is a snapshot");
        let now = Instant::now();
        for quote in batch["quotes"].as_array().unwrap() {
            let symbol = quote["symbol"].as_str().unwrap().to_string();
            assert!(symbol == "AAPL" || symbol == "MSFT", "only subscribed symbols: {symbol}");
            let seq = quote["seq"].as_u64().unwrap();
            if let Some((previous, at)) = last_seq.insert(symbol.clone(), (seq, now)) {
                assert!(seq > previous, "{symbol}: seq {seq} after {previous}");
                gaps += 1;
                // Receive-time gaps may be short when two batches arrive in one read.
                if now.duration_since(at) < Duration::from_millis(250) {
                    short_gaps += 1;
                }
            }
        }
    }
    assert!(gaps >= 8, "quotes kept flowing for both symbols ({gaps} gaps)");
    assert!(short_gaps * 4 <= gaps, "{short_gaps} of {gaps} gaps were under the 300 ms throttle");
    server.shutdown().await;
}

#[actix_web::test]
async fn keep_alive_comments_flow_and_a_silent_client_is_not_idle() {
    // The client of a stream never writes: a 0.5 s idle timeout must not end it.
    let server = start(&["--ping-interval", "0.2", "--idle-timeout", "0.5"]).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=ZZZZ").await;
    // Every symbol rejected: the stream still runs, and says why.
    let subscribed = sse.event("subscribed").await;
    assert_eq!((subscribed["symbols"].clone(), subscribed["rejected"][0]["code"].clone()), (json!([]), json!("unknown_symbol")));
    let started = Instant::now();
    let mut comments = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        match sse.next().await {
            Some(Block::Comment(text)) => {
                assert_eq!(text, "keep-alive");
                comments += 1;
            }
            Some(other) => panic!("nothing but keep-alives is due: {other:?}"),
            None => panic!("the stream ended after {:?} ({comments} keep-alives)", started.elapsed()),
        }
    }
    assert!(comments >= 4, "a keep-alive every 0.2 s: {comments} in 1.5 s");
    assert_eq!(server.connections.count(), 1);
    server.shutdown().await;
}

#[actix_web::test]
async fn no_symbols_is_answered_and_explained() {
    let server = start(&[]).await;
    let mut sse = SseClient::connect(server.addr, "/sse?throttle_ms=100&sybmols=AAPL").await;
    let subscribed = sse.event("subscribed").await;
    assert_eq!(subscribed["symbols"], json!([]));
    let first = sse.event("error").await;
    assert_eq!(first["code"], "bad_request");
    assert!(first["message"].as_str().unwrap().contains("unknown query parameter 'sybmols'; /sse takes: symbols, throttle_ms"), "{first}");
    let second = sse.event("error").await;
    assert!(second["message"].as_str().unwrap().starts_with("no symbols"), "{second}");
    server.shutdown().await;
}

#[actix_web::test]
async fn streams_count_against_the_one_connection_limit() {
    let server = start(&["--max-connections", "1"]).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAPL").await;
    sse.event("welcome").await;
    let refused = http_full(&server, "GET", "/sse?symbols=AAPL", None).await;
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("too_many_connections"), "{}", refused.body);
    let ws_refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await;
    assert!(ws_refused.is_err(), "a WebSocket upgrade is refused while a stream holds the only place");
    // Leaving frees the place: the response body is dropped with the connection.
    drop(sse);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while server.connections.count() > 0 {
        assert!(Instant::now() < deadline, "the stream's place was not released after the client left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_client, welcome) = Client::connect_welcomed(&server).await;
    assert_eq!(welcome["type"], "welcome");
    server.shutdown().await;
}

#[actix_web::test]
async fn shutdown_ends_the_stream() {
    let server = start(&[]).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAPL").await;
    sse.event("quotes").await;
    let stopping = actix_web::rt::spawn(server.shutdown());
    let ended = tokio::time::timeout(EVENT_TIMEOUT, async { while sse.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the stream did not end at shutdown");
    stopping.await.unwrap();
}

#[actix_web::test]
async fn a_stream_that_is_not_read_is_closed_as_a_slow_consumer() {
    let server = start(&["--sim-rate", "20000", "--slow-consumer-timeout", "1"]).await;
    // Connects, then never reads: the server's output stops at one write buffer.
    let stalled = SseClient::connect_small(server.addr, "/sse?symbols=*&throttle_ms=0").await;
    let started = Instant::now();
    while server.connections.count() > 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the unread stream was not closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = server.metrics.render(&server.bus, &server.feeds);
    assert!(metrics.lines().any(|l| l.starts_with("tickerfeed_disconnects_total{reason=\"slow_consumer\"} 1")), "counted as a slow consumer");
    drop(stalled);
    server.shutdown().await;
}
