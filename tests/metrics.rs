//! Every counter moves when its event happens, end to end.

mod common;

use std::time::{Duration, Instant};

use common::{Client, http, start};
use futures_util::SinkExt;
use serde_json::json;
use tickerfeed::server::RunningServer;
use tokio_tungstenite::tungstenite::Message;

/// The value of one series in a real scrape of /metrics.
async fn metric(server: &RunningServer, series: &str) -> f64 {
    let (status, text) = http(server, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    common::metric(&text, series)
}

/// Polls a series until it reaches `at_least` (the event is asynchronous to the test).
async fn wait_for(server: &RunningServer, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = metric(server, series).await;
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}, expected at least {at_least}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn session_counters_move_with_their_events() {
    let server = start(&["--sim-rate", "20000", "--slow-consumer-timeout", "1"]).await;
    let (_, content_type) = {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let header = response.lines().find(|l| l.to_ascii_lowercase().starts_with("content-type:")).unwrap_or_default().to_string();
        (response, header)
    };
    assert!(content_type.contains("text/plain; version=0.0.4"), "{content_type}");

    // Deliveries, frames, bytes, conflation, latency, messages by op.
    let (mut client, _) = Client::connect_welcomed(&server).await;
    assert_eq!(metric(&server, "tickerfeed_connections{transport=\"websocket\"}").await, 1.0);
    assert_eq!(metric(&server, "tickerfeed_connections_opened_total{transport=\"websocket\"}").await, 1.0);
    client.send(json!({"op":"subscribe","symbols":["AAPL","MSFT"],"throttle_ms":100})).await;
    client.recv_type("subscribed").await;
    for _ in 0..5 {
        client.recv_type("quotes").await;
    }
    assert_eq!(metric(&server, "tickerfeed_client_messages_total{op=\"subscribe\"}").await, 1.0);
    assert!(metric(&server, "tickerfeed_quotes_delivered_total").await >= 5.0);
    assert!(metric(&server, "tickerfeed_frames_sent_total").await >= 6.0);
    assert!(metric(&server, "tickerfeed_sent_bytes_total").await > 1000.0);
    assert!(metric(&server, "tickerfeed_quotes_conflated_total").await > 0.0, "a 100 ms throttle at 20,000 quotes/s merges updates");
    assert!(metric(&server, "tickerfeed_delivery_latency_seconds_count").await > 0.0);
    assert!(metric(&server, "tickerfeed_frame_quotes_count").await > 0.0);
    assert_eq!(metric(&server, "tickerfeed_subscriptions").await, 2.0);
    assert_eq!(metric(&server, "tickerfeed_subscribed_symbols").await, 2.0);

    // Errors by code.
    client.send_text("{nope").await;
    client.recv_type("error").await;
    client.send(json!({"op":"subscribe","symbols":["NOPE"]})).await;
    client.recv_type("subscribed").await;
    assert_eq!(metric(&server, "tickerfeed_client_messages_total{op=\"invalid\"}").await, 1.0);
    assert_eq!(metric(&server, "tickerfeed_client_errors_total{code=\"bad_request\"}").await, 1.0);
    assert_eq!(metric(&server, "tickerfeed_client_errors_total{code=\"unknown_symbol\"}").await, 1.0);

    // Disconnect reasons: client close, limit (oversized message), slow consumer.
    client.ws.send(Message::Close(None)).await.unwrap();
    wait_for(&server, "tickerfeed_disconnects_total{reason=\"client_close\"}", 1.0).await;
    let (mut big, _) = Client::connect_welcomed(&server).await;
    big.send_text(&"x".repeat(5000)).await;
    wait_for(&server, "tickerfeed_disconnects_total{reason=\"limit\"}", 1.0).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", server.addr), stream).await.unwrap();
    stalled.send(Message::Text(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0}).to_string().into())).await.unwrap();
    wait_for(&server, "tickerfeed_disconnects_total{reason=\"slow_consumer\"}", 1.0).await;
    drop(stalled);
    server.shutdown().await;

    // A silent peer.
    let server = start(&["--idle-timeout", "0.5", "--ping-interval", "0.2"]).await;
    let (_silent, _) = Client::connect_welcomed(&server).await;
    wait_for(&server, "tickerfeed_disconnects_total{reason=\"idle_timeout\"}", 1.0).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn http_and_feed_metrics() {
    let config_file = common::repo_path("feeds/demo-replay.toml");
    let server = start(&["--config", &config_file]).await;
    http(&server, "GET", "/api/quotes/AAPL", None).await;
    http(&server, "GET", "/api/quotes/ZZZZ", None).await;
    http(&server, "GET", "/no/such/path", None).await;
    http(&server, "POST", "/api/feeds/history/control", Some(r#"{"action":"pause"}"#)).await;
    let (_, text) = http(&server, "GET", "/metrics", None).await;
    // Route patterns, never raw paths.
    assert!(common::metric(&text, "tickerfeed_http_requests_total{method=\"GET\",route=\"/api/quotes/{symbol}\",status=\"404\"}") >= 1.0);
    assert_eq!(common::metric(&text, "tickerfeed_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"), 1.0);
    assert!(!text.contains("ZZZZ") && !text.contains("/no/such/path"));
    assert!(common::metric(&text, "tickerfeed_http_request_duration_seconds_count{method=\"GET\",route=\"/api/quotes/{symbol}\"}") >= 1.0);
    assert_eq!(common::metric(&text, "tickerfeed_feed_state{feed=\"history\",state=\"paused\"}"), 1.0);
    assert_eq!(common::metric(&text, "tickerfeed_feed_state{feed=\"history\",state=\"running\"}"), 0.0);
    assert_eq!(common::metric(&text, "tickerfeed_feed_state{feed=\"sim\",state=\"running\"}"), 1.0);
    assert!(common::metric(&text, "tickerfeed_feed_replay_clock_seconds{feed=\"history\"}") >= 946_684_800.0, "the clock is in history");
    assert_eq!(common::metric(&text, "tickerfeed_feed_speed{feed=\"history\"}"), 86400.0);
    assert_eq!(common::metric(&text, "tickerfeed_feed_rows_skipped_total{feed=\"history\"}"), 0.0);
    wait_for(&server, "tickerfeed_quotes_published_total{feed=\"sim\"}", 1.0).await;
    assert!(common::metric(&text, "process_open_fds") > 0.0, "the standard process families, unprefixed");
    assert!(!text.contains("tickerfeed_process_"));
    server.shutdown().await;
}

#[actix_web::test]
async fn refused_upgrades_count_as_limit_and_shutdown_as_shutdown() {
    let server = start(&["--max-connections", "1"]).await;
    let (_a, _) = Client::connect_welcomed(&server).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await;
    assert!(refused.is_err());
    assert_eq!(metric(&server, "tickerfeed_disconnects_total{reason=\"limit\"}").await, 1.0);
    let (metrics, bus, feeds) = (server.metrics.clone(), server.bus.clone(), server.feeds.clone());
    server.shutdown().await;
    assert_eq!(common::metric(&metrics.render(&bus, &feeds), "tickerfeed_disconnects_total{reason=\"shutdown\"}"), 1.0);
}

#[actix_web::test]
async fn connections_are_counted_by_transport() {
    let server = start(&[]).await;
    let (_ws, _) = Client::connect_welcomed(&server).await;
    let mut sse = common::sse::SseClient::connect(server.addr, "/sse?symbols=AAPL").await;
    sse.event("welcome").await;
    assert_eq!(metric(&server, "tickerfeed_connections{transport=\"websocket\"}").await, 1.0);
    assert_eq!(metric(&server, "tickerfeed_connections{transport=\"sse\"}").await, 1.0);
    assert_eq!(metric(&server, "tickerfeed_connections_opened_total{transport=\"sse\"}").await, 1.0);
    // The stream's end is counted when its session ends, which follows the client's leaving.
    drop(sse);
    let deadline = Instant::now() + common::EVENT_TIMEOUT;
    while metric(&server, "tickerfeed_connections{transport=\"sse\"}").await != 0.0 {
        assert!(Instant::now() < deadline, "the closed stream is still counted as open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&server, "tickerfeed_connections{transport=\"websocket\"}").await, 1.0);
    assert_eq!(metric(&server, "tickerfeed_disconnects_total{reason=\"client_close\"}").await, 1.0);
    server.shutdown().await;
}

/// Every map keyed by clients (`tickerfeed_client_map_entries`) holds one entry per session of
/// every transport while they are open, and is back where it started once they are gone: a
/// session that left an entry behind anywhere would show here before the soak.
#[actix_web::test]
async fn client_maps_hold_each_open_session_and_return_to_their_baseline() {
    // Every registered map: each must be back at its baseline once the clients are gone.
    const MAPS: [&str; 8] =
        ["connections", "client_addresses", "socketio_sids", "bus_registrations", "bus_after_dispatch", "topic_watchers", "feed_event_receivers", "shutdown_watchers"];
    let server = start(&["--sim-rate", "2000"]).await;
    let series = |map: &str| format!("tickerfeed_client_map_entries{{map=\"{map}\"}}");
    let mut baseline = Vec::new();
    for map in MAPS {
        baseline.push(metric(&server, &series(map)).await);
    }
    assert_eq!(&baseline[..3], &[0.0, 0.0, 0.0], "no connection, no address, no sid before any client");

    let (mut ws, _) = Client::connect_welcomed(&server).await;
    ws.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0})).await;
    ws.recv_type("subscribed").await;
    let mut sse = common::sse::SseClient::connect(server.addr, "/sse?symbols=AAPL&throttle_ms=1000").await;
    sse.event("welcome").await;
    let polling = common::eio::Polling::connected(&server).await;
    let (sio, _) = common::eio::EioSocket::connected(server.addr, "&symbols=MSFT").await;
    assert_eq!(metric(&server, &series("connections")).await, 4.0);
    assert_eq!(metric(&server, &series("client_addresses")).await, 1.0, "four sessions, one address (loopback)");
    assert_eq!(metric(&server, &series("socketio_sids")).await, 1.0, "the polling session, by sid");
    for map in ["topic_watchers", "feed_event_receivers", "shutdown_watchers"] {
        let at_start = baseline[MAPS.iter().position(|m| *m == map).unwrap()];
        assert_eq!(metric(&server, &series(map)).await, at_start + 4.0, "{map}: one entry per open session");
    }
    assert!(metric(&server, &series("bus_registrations")).await > 0.0, "the sessions wait for their symbols");

    ws.ws.close(None).await.unwrap();
    drop(ws);
    drop(sse);
    drop(sio);
    polling.post("1").await;
    let deadline = Instant::now() + common::EVENT_TIMEOUT;
    for (map, at_start) in MAPS.iter().zip(&baseline) {
        loop {
            // Dead bus registrations go when their topic next fires (the feed runs).
            let now = metric(&server, &series(map)).await;
            if now == *at_start {
                break;
            }
            assert!(Instant::now() < deadline, "{map} is at {now} after every client left, was {at_start} before");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    server.shutdown().await;
}
