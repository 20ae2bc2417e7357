//! The REST API.

mod common;

use common::{http, http_json, http_raw, start};

#[actix_web::test]
async fn symbols_quotes_health() {
    let server = start(&[]).await;
    let (status, symbols) = http_json(&server, "GET", "/api/symbols", None).await;
    assert_eq!(status, 200);
    let symbols = symbols.as_array().unwrap();
    assert!(symbols.len() >= 90, "the default universe has about 100 symbols");
    let aapl = symbols.iter().find(|s| s["symbol"] == "AAPL").expect("AAPL listed");
    assert_eq!((aapl["name"].as_str(), aapl["feed"].as_str()), (Some("Apple Inc."), Some("sim")));

    // Wait for a price, then read it back both ways.
    while server.bus.topic("AAPL").unwrap().seq() == 0 || server.bus.topic("MSFT").unwrap().seq() == 0 {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, body) = http(&server, "GET", "/api/quotes?symbols=aapl,MSFT,NOPE", None).await;
    assert_eq!(status, 200);
    // Quotes keep the documented field order (they are the same JSON the WebSocket sends).
    assert!(body.starts_with(r#"{"quotes":[{"symbol":"AAPL","seq":"#), "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["quotes"].as_array().unwrap().len(), 2);
    assert_eq!(value["unknown"], serde_json::json!(["NOPE"]));
    let (status, quote) = http_json(&server, "GET", "/api/quotes/aapl", None).await;
    assert_eq!((status, quote["symbol"].as_str()), (200, Some("AAPL")));
    let (status, error) = http_json(&server, "GET", "/api/quotes/ZZZZ", None).await;
    assert_eq!((status, error["error"].as_str()), (404, Some("unknown_symbol")));
    assert!(error["message"].as_str().unwrap().contains("ZZZZ"));

    assert_eq!(http(&server, "GET", "/healthz", None).await.0, 200);
    let (status, ready) = http_json(&server, "GET", "/readyz", None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, missing) = http_json(&server, "GET", "/nope", None).await;
    assert_eq!((status, missing["error"].as_str()), (404, Some("not_found")));
    server.shutdown().await;
}

#[actix_web::test]
async fn history_backfill_joins_the_live_stream() {
    let server = start(&["--sim-rate", "5000"]).await;
    let (mut client, _) = common::Client::connect_welcomed(&server).await;
    client.send(serde_json::json!({"op":"subscribe","symbols":["AAPL"],"throttle_ms":0,"snapshot":false})).await;
    client.recv_type("subscribed").await;
    // Let a few bars form.
    while server.bus.topic("AAPL").unwrap().history(tickerfeed::server::Resolution::Second, usize::MAX).len() < 2 {
        client.recv_type("quotes").await;
    }
    let (status, history) = http_json(&server, "GET", "/api/history/aapl?limit=50", None).await;
    assert_eq!(status, 200);
    assert_eq!((history["symbol"].as_str(), history["resolution"].as_str()), (Some("AAPL"), Some("1s")));
    let bars = history["bars"].as_array().unwrap();
    assert!(bars.len() >= 2 && bars.len() <= 50);
    for pair in bars.windows(2) {
        assert!(pair[0]["t"].as_i64() < pair[1]["t"].as_i64());
        assert!(pair[0]["seq"].as_u64() < pair[1]["seq"].as_u64());
    }
    for bar in bars {
        let (low, high) = (bar["low"].as_f64().unwrap(), bar["high"].as_f64().unwrap());
        for field in ["open", "close"] {
            let v = bar[field].as_f64().unwrap();
            assert!(low <= v && v <= high, "{bar}");
        }
    }
    let backfill_seq = history["seq"].as_u64().unwrap();
    assert_eq!(backfill_seq, bars.last().unwrap()["seq"].as_u64().unwrap());
    // Live quotes continue from there: the stream reaches backfill_seq + 1 or beyond, and the
    // quote that carries backfill_seq (if still in flight) is the only overlap to skip.
    loop {
        let frame = client.recv_type("quotes").await;
        let seq = frame["quotes"][0]["seq"].as_u64().unwrap();
        if seq > backfill_seq {
            break;
        }
    }
    let (status, _) = http_json(&server, "GET", "/api/history/AAPL?resolution=1m", None).await;
    assert_eq!(status, 200);
    assert_eq!(http_json(&server, "GET", "/api/history/AAPL?resolution=7m", None).await.0, 400);
    assert_eq!(http_json(&server, "GET", "/api/history/NOPE", None).await.0, 404);
    server.shutdown().await;
}

#[actix_web::test]
async fn the_dashboard_is_built_into_the_binary() {
    let server = start(&[]).await;
    let (status, page) = http(&server, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html") && page.contains("/app.js"), "the page links its module");
    for file in ["/app.js", "/style.css", "/favicon.svg", "/web/js/connection.js"] {
        assert_eq!(http(&server, "GET", file, None).await.0, 200, "{file} is served");
    }
    assert_eq!(http(&server, "GET", "/nothing.js", None).await.0, 404);
    server.shutdown().await;
}

/// Every request that asks for a WebSocket reaches the listener's upgrade service; one that is
/// not handed over to a session gets the app's whole answer, and then the connection ends
/// (the client asked for an upgrade, not for keep-alive: `http_raw` reads to the end).
#[actix_web::test]
async fn an_upgrade_request_that_is_not_taken_gets_its_answer_and_the_connection_ends() {
    let server = start(&[]).await;
    let upgrade = |path: &str, key: bool| {
        let key = if key { "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" } else { "" };
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{key}\r\n", server.addr)
    };
    // A REST route answers as it would without the upgrade headers, whole.
    let symbols = http_raw(&server, upgrade("/api/symbols", true).as_bytes()).await;
    assert_eq!(symbols.status, 200, "{}", symbols.body);
    assert_eq!(symbols.header("connection"), Some("close"));
    assert!(symbols.json("/api/symbols").as_array().is_some_and(|a| a.len() > 90), "the whole list: {}", symbols.body.len());
    // A route that streams cannot be answered on an upgrade: 400 naming why.
    let sse = http_raw(&server, upgrade("/sse?symbols=AAPL", true).as_bytes()).await;
    assert_eq!(sse.status, 400, "{}", sse.body);
    assert!(sse.json("/sse").to_string().contains("does not take a WebSocket upgrade"), "{}", sse.body);
    // A handshake /ws refuses (no Sec-WebSocket-Key), and an unknown path.
    let refused = http_raw(&server, upgrade("/ws", false).as_bytes()).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.header("connection"), Some("close"));
    let unknown = http_raw(&server, upgrade("/nowhere", true).as_bytes()).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(server.connections.count(), 0, "no session was opened");
    server.shutdown().await;
}
