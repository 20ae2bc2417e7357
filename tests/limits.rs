//! Limits and the fate of misbehaving peers: oversized messages, floods, too many symbols,
//! too many connections, stalled readers, silent peers, and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Client, EVENT_TIMEOUT, assert_others_unaffected, http, start};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

/// Microseconds since the epoch, the clock of a quote's `pt`.
fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

#[actix_web::test]
async fn oversized_message_closes_with_1009() {
    let server = start(&[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    let big = format!(r#"{{"op":"subscribe","symbols":["{}"]}}"#, "A".repeat(5000));
    client.send_text(&big).await;
    let (code, reason) = client.recv_close().await;
    assert_eq!(code, 1009, "{reason}");
    // Other clients never notice.
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

/// Replies to a flood of pings: pongs, and what the `rate_limited` errors say was dropped.
#[derive(Default, Debug)]
struct FloodReplies {
    pongs: u64,
    dropped: u64,
    errors: u64,
}

impl FloodReplies {
    fn add(&mut self, message: &Message) {
        let Message::Text(text) = message else { return };
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        match value["type"].as_str() {
            Some("pong") => self.pongs += 1,
            Some("error") => {
                assert_eq!(value["code"], "rate_limited", "{value}");
                self.dropped += value["count"].as_u64().expect("a rate_limited error carries a count");
                self.errors += 1;
            }
            _ => {}
        }
    }
}

#[actix_web::test]
async fn a_sustained_flood_gets_one_rate_limited_error_per_second_counting_what_it_dropped() {
    let server = start(&["--rate-limit", "20", "--rate-burst", "10"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    // About 2.5 s of pings at a few hundred per second, far over 20/s, read while they are sent.
    let mut replies = FloodReplies::default();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(2500) {
        for _ in 0..20 {
            client.ws.feed(Message::Text(json!({"op":"ping","id":sent}).to_string().into())).await.unwrap();
            sent += 1;
        }
        client.ws.flush().await.unwrap();
        while let Some(message) = client.next_message_within(Duration::from_millis(20)).await {
            replies.add(&message);
        }
    }
    // Every ping is accounted for, as a pong or in a count; the last report comes at most a
    // second after the last drop.
    while replies.pongs + replies.dropped < sent {
        replies.add(&client.next_message().await);
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(replies.pongs + replies.dropped, sent, "{replies:?}");
    // 10 on the burst, then 20 per second.
    assert!(replies.pongs as f64 <= 10.0 + 20.0 * seconds + 1.0, "{replies:?} in {seconds:.1} s");
    // One error at the first drop, then at most one per second.
    assert!(replies.errors >= 2 && replies.errors as f64 <= seconds.ceil() + 1.0, "{replies:?} in {seconds:.1} s");
    client.send(json!({"op":"list","id":"still open"})).await;
    let reply = client.recv().await;
    assert!(reply["type"] == "subscriptions" || reply["code"] == "rate_limited", "the connection is kept: {reply}");
    server.shutdown().await;
}

#[actix_web::test]
async fn too_many_symbols_is_rejected_whole() {
    let server = start(&["--max-symbols", "3"]).await;
    let (mut client, welcome) = Client::connect_welcomed(&server).await;
    assert_eq!(welcome["max_symbols"], 3);
    // Duplicates and rejected symbols do not count.
    client.send(json!({"op":"subscribe","symbols":["AAPL","aapl","MSFT","NOPE"],"snapshot":false})).await;
    assert_eq!(client.recv_type("subscribed").await["symbols"], json!(["AAPL", "MSFT"]));
    client.send(json!({"op":"subscribe","symbols":["NVDA","AMZN"],"id":7})).await;
    let error = client.recv_type("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_i64()), (Some("too_many_symbols"), Some(7)));
    client.send(json!({"op":"list"})).await;
    assert_eq!(client.recv_type("subscriptions").await["symbols"], json!(["AAPL", "MSFT"]), "a rejected request changes nothing");
    // "*" counts as one.
    client.send(json!({"op":"subscribe","symbols":["*"],"snapshot":false})).await;
    assert_eq!(client.recv_type("subscribed").await["symbols"], json!(["AAPL", "MSFT", "*"]));
    server.shutdown().await;
}

#[actix_web::test]
async fn connection_limit_answers_503_and_rest_keeps_working() {
    let server = start(&["--max-connections", "2"]).await;
    let (_a, _) = Client::connect_welcomed(&server).await;
    let (_b, _) = Client::connect_welcomed(&server).await;
    let url = format!("ws://{}/ws", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(http(&server, "GET", "/healthz", None).await.0, 200);
    assert_eq!(http(&server, "GET", "/api/symbols", None).await.0, 200);
    drop(_a);
    // The slot frees when the session ends.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let url = format!("ws://{}/ws", server.addr);
        if tokio_tungstenite::connect_async(url).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection frees its slot");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// A client socket with a tiny receive buffer that never reads after subscribing.
async fn stalled_client(addr: std::net::SocketAddr, request: serde_json::Value) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await.unwrap();
    ws.send(Message::Text(request.to_string().into())).await.unwrap();
    ws
}

#[actix_web::test]
async fn stalled_reader_is_closed_as_slow_consumer_and_others_keep_flowing() {
    let server = start(&["--sim-rate", "20000", "--slow-consumer-timeout", "1"]).await;
    let stalled = stalled_client(server.addr, json!({"op":"subscribe","symbols":["*"],"throttle_ms":0})).await;
    let (mut healthy, _) = Client::connect_welcomed(&server).await;
    healthy.send(json!({"op":"subscribe","symbols":["AAPL"],"throttle_ms":0,"snapshot":false})).await;
    healthy.recv_type("subscribed").await;

    // The stalled session must end as a slow consumer: its socket accepts nothing for 1 s, it
    // is closed, and if the close frame cannot be flushed the connection is dropped.
    let started = Instant::now();
    while server.connections.count() > 1 {
        assert!(started.elapsed() < Duration::from_secs(15), "the stalled client was not disconnected");
        // Meanwhile the healthy client keeps getting fresh quotes.
        let frame = healthy.recv_type("quotes").await;
        let pt = frame["quotes"][0]["pt"].as_i64().unwrap();
        let age_ms = (now_micros() - pt) / 1000;
        assert!(age_ms < 1000, "a healthy client got a {age_ms} ms old quote while another stalled");
    }
    // Reading the stalled socket now yields what was buffered and then the end: a 1008 close
    // frame or a reset, never more data forever.
    let mut raw = stalled.into_inner();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let read_all = async {
        loop {
            match raw.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, read_all).await.expect("the stalled connection ends");
    // What was in flight for it is bounded by the kernel buffers and the session budget, not
    // by the 6 MB/s the feed produced meanwhile.
    assert!(total < 512 * 1024, "{total} bytes were queued for a stalled client");
    server.shutdown().await;
}

#[actix_web::test]
async fn silent_peer_is_closed_and_a_reading_one_is_kept() {
    let server = start(&["--ping-interval", "0.2", "--idle-timeout", "1"]).await;
    let (mut silent, _) = Client::connect_welcomed(&server).await;
    let (mut reading, _) = Client::connect_welcomed(&server).await;
    // The reading client answers pings (tungstenite does so while it is read).
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1600) {
        if let Some(Message::Ping(_)) = reading.next_message_within(Duration::from_millis(100)).await {
            pings += 1;
        }
    }
    assert!(pings >= 3, "the server pings every 200 ms: {pings} pings");
    let (code, reason) = silent.recv_close().await;
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    reading.send(json!({"op":"ping","id":1})).await;
    assert_eq!(reading.recv_type("pong").await["id"], 1);
    server.shutdown().await;
}

#[actix_web::test]
async fn shutdown_closes_sessions_with_1001_without_waiting_on_stalled_ones() {
    let server = start(&["--sim-rate", "20000"]).await;
    let _stalled = stalled_client(server.addr, json!({"op":"subscribe","symbols":["*"],"throttle_ms":0})).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL"]})).await;
    client.recv_type("subscribed").await;
    let readiness = server.readiness.clone();
    let addr = server.addr;
    let started = Instant::now();
    let stopping = actix_web::rt::spawn(server.shutdown());
    let (code, reason) = client.recv_close().await;
    assert_eq!((code, reason.as_str()), (1001, "going away"));
    stopping.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert!(!readiness.is_ready());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
    let _ = client.ws.next().await;
}
