//! Protocol v1 end to end: a real server, a real WebSocket client.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Client, assert_others_unaffected, http_json, quote_symbols, start};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Entries a `subscribed` message lists in `rejected` at most (docs/PROTOCOL.md).
const MAX_REJECTED_LISTED: usize = 100;

#[actix_web::test]
async fn welcome_subscribe_and_snapshot() {
    let server = start(&[]).await;
    let (mut client, welcome) = Client::connect_welcomed(&server).await;
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["throttle_ms"], 250);
    assert_eq!(welcome["min_throttle_ms"], 0);
    assert_eq!(welcome["max_symbols"], 1000);
    assert_eq!(welcome["max_frame_bytes"], 16384);
    assert!(welcome["server"].as_str().unwrap().starts_with("tickerfeed "));
    assert_eq!(welcome["instance"].as_str().unwrap(), server.instance);

    // Wait until AAPL has a price, so that a snapshot exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.bus.topic("AAPL").unwrap().seq() == 0 {
        assert!(Instant::now() < deadline, "the sim feed publishes AAPL");
        tokio::task::yield_now().await;
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    client.send(json!({"op":"subscribe","symbols":["aapl"," MSFT "],"throttle_ms":100,"id":1})).await;
    let subscribed = client.recv().await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["id"], 1);
    assert_eq!(subscribed["throttle_ms"], 100);
    assert_eq!(subscribed["symbols"], json!(["AAPL", "MSFT"]));
    assert_eq!(subscribed["rejected"], json!([]));
    // Right after `subscribed`: the snapshot, flagged, holding nothing but the new symbols.
    let snapshot = client.recv().await;
    assert_eq!(snapshot["type"], "quotes");
    assert_eq!(snapshot["snapshot"], true);
    let symbols = quote_symbols(&snapshot);
    assert!(symbols.contains(&"AAPL".to_string()), "{symbols:?}");
    assert!(symbols.iter().all(|s| s == "AAPL" || s == "MSFT"));
    let quote = &snapshot["quotes"][0];
    for field in ["symbol", "seq", "ts", "pt", "last", "bid", "ask", "size", "volume", "open", "high", "low", "prev_close", "change", "change_pct"] {
        assert!(!quote[field].is_null(), "quote has {field}: {quote}");
    }
    assert!(quote["bid"].as_f64() < quote["ask"].as_f64());
    assert!(quote["low"].as_f64() <= quote["last"].as_f64() && quote["last"].as_f64() <= quote["high"].as_f64());
    server.shutdown().await;
}

#[actix_web::test]
async fn query_string_subscribes_at_connect() {
    let server = start(&[]).await;
    let mut client = Client::connect_path(&server, "/ws?symbols=AAPL,zzzz,../etc&throttle_ms=500").await;
    assert_eq!(client.recv().await["type"], "welcome");
    let subscribed = client.recv().await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["throttle_ms"], 500);
    assert_eq!(subscribed["symbols"], json!(["AAPL"]));
    assert_eq!(subscribed["rejected"], json!([{"symbol":"ZZZZ","code":"unknown_symbol"},{"symbol":"../etc","code":"invalid_symbol"}]));
    server.shutdown().await;
}

#[actix_web::test]
async fn every_subscription_query_is_answered_and_what_is_unusable_is_reported() {
    let server = start(&[]).await;
    // Repeated `symbols` lists are joined.
    let mut client = Client::connect_path(&server, "/ws?symbols=AAPL&symbols=MSFT").await;
    assert_eq!(client.recv().await["type"], "welcome");
    let subscribed = client.recv().await;
    assert_eq!((subscribed["type"].as_str(), &subscribed["symbols"]), (Some("subscribed"), &json!(["AAPL", "MSFT"])));
    // An empty list is still a subscription request: it is answered.
    let mut client = Client::connect_path(&server, "/ws?symbols=").await;
    assert_eq!(client.recv().await["type"], "welcome");
    let subscribed = client.recv().await;
    assert_eq!((subscribed["type"].as_str(), &subscribed["symbols"]), (Some("subscribed"), &json!([])));
    // An unusable throttle leaves the default, says so, and names the field; so does a
    // parameter /ws does not take.
    for (query, field) in [("symbols=AAPL&throttle_ms=abc", "'throttle_ms'"), ("symbols=AAPL&throttle_ms=-1", "'throttle_ms'"), ("symbols=AAPL&symbol=MSFT", "'symbol'")] {
        let mut client = Client::connect_path(&server, &format!("/ws?{query}")).await;
        let welcome = client.recv().await;
        let subscribed = client.recv().await;
        assert_eq!(subscribed["type"], "subscribed", "{query}");
        assert_eq!(subscribed["throttle_ms"], welcome["throttle_ms"], "{query}: the default applies");
        assert_eq!(subscribed["symbols"], json!(["AAPL"]), "{query}");
        let error = client.recv_type("error").await;
        assert_eq!(error["code"], "bad_request", "{query}");
        assert!(error["message"].as_str().unwrap().contains(field), "{query}: {error}");
    }
    server.shutdown().await;
}

/// `align=1`: the symbols go out together on a 300 ms grid — live frames come at multiples of
/// 300 ms from each other, carry several symbols, and there are at most as many as ticks;
/// a non-boolean `align` is refused by name.
#[actix_web::test]
async fn aligned_subscriptions_arrive_together_on_their_grid() {
    // About 3 changes a second per symbol: unaligned, most changes find their symbol quiet and
    // go out at once, each in a frame of its own.
    let server = start(&["--sim-rate", "300"]).await;
    let symbols = "AAPL,MSFT,NVDA,AMZN,GOOGL,META,JPM,XOM";
    let mut client = Client::connect_path(&server, &format!("/ws?symbols={symbols}&throttle_ms=300&align=1")).await;
    client.recv_type("welcome").await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!((subscribed["align"].as_bool(), subscribed["throttle_ms"].as_u64()), (Some(true), Some(300)), "{subscribed}");
    let (mut arrivals, mut quotes) = (Vec::new(), 0);
    let end = Instant::now() + Duration::from_millis(3000);
    while let Some(message) = client.next_message_within(end.saturating_duration_since(Instant::now())).await {
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] == "quotes" && value["snapshot"] != true {
            arrivals.push(Instant::now());
            quotes += value["quotes"].as_array().unwrap().len();
        }
    }
    assert!((8..=11).contains(&arrivals.len()), "{} live frames in 3 s on a 300 ms grid", arrivals.len());
    assert!(quotes >= 2 * arrivals.len(), "{quotes} quotes in {} frames: the changes of a tick go out together", arrivals.len());
    for pair in arrivals.windows(2) {
        let gap = (pair[1] - pair[0]).as_millis() as u64;
        let off = gap % 300;
        assert!(off <= 40 || off >= 260, "frames {gap} ms apart: not a multiple of 300 ms (±40)");
    }
    // The same without align: the first change after each delivery goes out as it comes, so
    // the same symbols arrive in many more frames.
    let mut unaligned = Client::connect_path(&server, &format!("/ws?symbols={symbols}&throttle_ms=300")).await;
    unaligned.recv_type("subscribed").await;
    let mut frames = 0;
    let end = Instant::now() + Duration::from_millis(3000);
    while let Some(message) = unaligned.next_message_within(end.saturating_duration_since(Instant::now())).await {
        let Message::Text(text) = message else { continue };
        frames += usize::from(text.contains(r#""type":"quotes""#));
    }
    eprintln!("3 s: aligned {} frames carrying {quotes} quotes; unaligned {frames} frames", arrivals.len());
    assert!(frames > 2 * arrivals.len(), "{frames} frames unaligned against {} aligned", arrivals.len());
    let mut client = Client::connect_path(&server, "/ws?symbols=AAPL&align=yes").await;
    client.recv_type("subscribed").await;
    let error = client.recv_type("error").await;
    assert!(error["message"].as_str().unwrap().contains("'align'"), "{error}");
    client.send(json!({"op":"subscribe","symbols":["MSFT"],"align":"yes","id":3})).await;
    let error = client.recv_type("error").await;
    assert_eq!((error["id"].as_u64(), error["code"].as_str()), (Some(3), Some("bad_request")), "{error}");
    server.shutdown().await;
}

/// Receive times of each symbol's deliveries over `window`, plus every quote seen.
async fn collect(client: &mut Client, window: Duration) -> (HashMap<String, Vec<Instant>>, Vec<Value>) {
    let mut times: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut quotes = Vec::new();
    let end = Instant::now() + window;
    while let Some(message) = client.next_message_within(end.saturating_duration_since(Instant::now())).await {
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] != "quotes" {
            continue;
        }
        let now = Instant::now();
        for quote in value["quotes"].as_array().unwrap() {
            times.entry(quote["symbol"].as_str().unwrap().to_string()).or_default().push(now);
            quotes.push(quote.clone());
        }
    }
    (times, quotes)
}

/// Asserts that each symbol's seq strictly increases; returns the updates merged (seq gaps).
fn merged_updates(quotes: &[Value]) -> u64 {
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut merged = 0;
    for quote in quotes {
        let symbol = quote["symbol"].as_str().unwrap();
        let seq = quote["seq"].as_u64().unwrap();
        if let Some(previous) = last_seq.insert(symbol, seq) {
            assert!(seq > previous, "{symbol}: seq {seq} after {previous}");
            merged += seq - previous - 1;
        }
    }
    merged
}

#[actix_web::test]
async fn throttle_limits_each_symbol_and_seq_increases() {
    let server = start(&["--sim-rate", "20000"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL","MSFT"],"throttle_ms":200,"snapshot":false})).await;
    client.recv_type("subscribed").await;
    let window = Duration::from_millis(1500);
    let (times, quotes) = collect(&mut client, window).await;
    for (symbol, deliveries) in &times {
        // At most one per interval: 1.5 s at 200 ms is at most 8 deliveries (first at once).
        assert!(deliveries.len() <= 9, "{symbol}: {} deliveries in {window:?}", deliveries.len());
        assert!(deliveries.len() >= 5, "{symbol}: only {} deliveries: updates must keep flowing", deliveries.len());
        for pair in deliveries.windows(2) {
            // Receive times carry scheduling jitter; sending is throttled exactly.
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(170), "{symbol}: two deliveries {gap:?} apart with a 200 ms throttle");
        }
    }
    let merged = merged_updates(&quotes);
    assert!(merged > 0, "at 20,000 quotes/s a 200 ms throttle must merge updates");
    server.shutdown().await;
}

#[actix_web::test]
async fn throttle_zero_sends_every_change_in_order_batched() {
    let server = start(&["--sim-rate", "2000"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["symbols"], json!(["*"]));
    let (_, quotes) = collect(&mut client, Duration::from_millis(1000)).await;
    let gaps = merged_updates(&quotes);
    assert!(quotes.len() > 500, "a reading client gets the feed: {} quotes", quotes.len());
    // A client that keeps up with 2,000 quotes/s loses (almost) nothing to conflation.
    assert!(gaps * 20 < quotes.len() as u64, "{gaps} merged of {}", quotes.len());
    server.shutdown().await;
}

#[actix_web::test]
async fn throttle_zero_symbols_that_go_quiet_still_deliver_their_next_change() {
    // Delivered throttle-0 symbols are not armed on the bus at once: the session asks to be
    // woken by the next publish of any topic, looks again, and only then arms what has not
    // changed. Here AAPL and MSFT go quiet while only IBM (not subscribed) ticks, so AAPL's
    // next quote arrives only if that wake-up and the arming both happen.
    use std::io::Write;
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    writeln!(file, "timestamp,symbol,price,size").unwrap();
    writeln!(file, "2024-01-02T14:30:00Z,AAPL,10.00,100").unwrap();
    writeln!(file, "2024-01-02T14:30:00Z,MSFT,20.00,100").unwrap();
    for i in 0..20 {
        writeln!(file, "2024-01-02T14:30:{:02}Z,IBM,{}.00,100", i + 1, 30 + i).unwrap();
    }
    writeln!(file, "2024-01-02T14:30:30Z,AAPL,11.00,100").unwrap();
    // The feed's end is announced to every session, which would also make it look again:
    // keep the feed running well past AAPL's second quote.
    for i in 0..50 {
        writeln!(file, "2024-01-02T14:31:{:02}Z,IBM,{}.00,100", i, 50 + i).unwrap();
    }
    let path = file.path().to_str().unwrap().to_string();
    let server = start(&["--replay", &path, "--interval-ms", "20"]).await;
    let (status, _) = http_json(&server, "POST", "/api/feeds/replay/control", Some(r#"{"action":"pause"}"#)).await;
    assert_eq!(status, 200);
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL","MSFT"],"throttle_ms":0})).await;
    client.recv_type("subscribed").await;
    let (status, _) = http_json(&server, "POST", "/api/feeds/replay/control", Some(r#"{"action":"resume"}"#)).await;
    assert_eq!(status, 200);
    let mut aapl = Vec::new();
    while aapl.last() != Some(&2) {
        let frame = client.recv().await;
        assert_ne!(frame["state"], "finished", "AAPL's second quote must come while the feed runs, got {aapl:?} by the end");
        if frame["type"] != "quotes" {
            continue;
        }
        for quote in frame["quotes"].as_array().unwrap() {
            assert_ne!(quote["symbol"], "IBM", "IBM was not subscribed");
            if quote["symbol"] == "AAPL" {
                aapl.push(quote["seq"].as_u64().unwrap());
            }
        }
    }
    // AAPL's first quote came live or as the snapshot (the feed may have run before the pause).
    assert!(aapl == vec![1, 2] || aapl == vec![2], "AAPL seqs {aapl:?}");
    server.shutdown().await;
}

#[actix_web::test]
async fn latest_value_always_arrives_when_the_feed_goes_quiet() {
    let server = start(&["--sim-rate", "5000"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL"],"throttle_ms":1000})).await;
    client.recv_type("subscribed").await;
    let first = client.recv_type("quotes").await;
    let mut received = first["quotes"][0]["seq"].as_u64().unwrap();
    // Let the feed move past what the client has, inside the client's throttle interval.
    loop {
        let (_, latest) = http_json(&server, "GET", "/api/quotes/AAPL", None).await;
        if latest["seq"].as_u64().unwrap() > received {
            break;
        }
    }
    let (status, paused) = http_json(&server, "POST", "/api/feeds/sim/control", Some(r#"{"action":"pause"}"#)).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    let (_, latest) = http_json(&server, "GET", "/api/quotes/AAPL", None).await;
    let final_seq = latest["seq"].as_u64().unwrap();
    // The feed is silent now: the last published AAPL quote must still be delivered.
    assert!(final_seq > received, "the feed moved on while the client was throttled");
    while received < final_seq {
        let frame = client.recv().await;
        if frame["type"] == "quotes" {
            received = frame["quotes"][0]["seq"].as_u64().unwrap();
        }
    }
    assert_eq!(received, final_seq);
    server.shutdown().await;
}

#[actix_web::test]
async fn unsubscribe_list_and_wildcard() {
    let server = start(&["--sim-rate", "5000"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL","MSFT"],"throttle_ms":0,"snapshot":false})).await;
    client.recv_type("subscribed").await;
    client.send(json!({"op":"unsubscribe","symbols":["aapl"],"id":"u1"})).await;
    let unsubscribed = client.recv_type("unsubscribed").await;
    assert_eq!(unsubscribed["id"], "u1");
    assert_eq!(unsubscribed["symbols"], json!(["MSFT"]));
    // Everything after the reply is MSFT only.
    let (times, _) = collect(&mut client, Duration::from_millis(500)).await;
    assert!(!times.contains_key("AAPL"), "no AAPL after unsubscribing");
    assert!(times.contains_key("MSFT"));

    client.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0,"snapshot":false})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["symbols"], json!(["MSFT", "*"]));
    let (times, _) = collect(&mut client, Duration::from_millis(500)).await;
    assert!(times.len() > 2, "the wildcard delivers every symbol: {:?}", times.keys());
    client.send(json!({"op":"unsubscribe","symbols":["*"]})).await;
    assert_eq!(client.recv_type("unsubscribed").await["symbols"], json!(["MSFT"]));
    client.send(json!({"op":"list","id":9})).await;
    let list = client.recv_type("subscriptions").await;
    assert_eq!((list["id"].clone(), list["symbols"].clone()), (json!(9), json!(["MSFT"])));
    client.send(json!({"op":"ping","id":10})).await;
    let pong = client.recv_type("pong").await;
    assert_eq!(pong["id"], 10);
    assert!(pong["ts"].as_i64().unwrap() > 1_700_000_000_000);
    server.shutdown().await;
}

#[actix_web::test]
async fn bad_input_gets_errors_and_changes_nothing() {
    let server = start(&[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL"],"snapshot":false})).await;
    client.recv_type("subscribed").await;

    let cases: Vec<(String, Value, &str)> = vec![
        ("{not json".into(), Value::Null, "bad_request"),
        ("[1,2]".into(), Value::Null, "bad_request"),
        (r#"{"op":"subscribe","symbols":"AAPL","id":1}"#.into(), json!(1), "bad_request"),
        (r#"{"op":"subscribe","symbols":["MSFT"],"throttle_ms":"fast","id":"t"}"#.into(), json!("t"), "bad_request"),
        (r#"{"op":"fly","id":2}"#.into(), json!(2), "unknown_op"),
        (r#"{"symbols":["AAPL"],"id":3}"#.into(), json!(3), "bad_request"),
        (r#"{"op":"list","extra":true,"id":4}"#.into(), json!(4), "bad_request"),
    ];
    for (text, id, code) in cases {
        client.send_text(&text).await;
        let error = client.recv_type("error").await;
        assert_eq!(error["code"], code, "{text} -> {error}");
        assert_eq!(error["id"], id, "{text} -> {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    client.ws.send_binary(vec![1u8, 2, 3]).await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "bad_request");
    assert!(error["message"].as_str().unwrap().contains("binary"));

    client.send(json!({"op":"subscribe","symbols":["NOPE","bad/sym","MSFT"],"id":5})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["symbols"], json!(["AAPL", "MSFT"]), "valid symbols subscribe despite rejected ones");
    assert_eq!(subscribed["rejected"], json!([{"symbol":"NOPE","code":"unknown_symbol"},{"symbol":"bad/sym","code":"invalid_symbol"}]));

    client.send(json!({"op":"list"})).await;
    assert_eq!(client.recv_type("subscriptions").await["symbols"], json!(["AAPL", "MSFT"]));
    server.shutdown().await;
}

trait SendBinary {
    async fn send_binary(&mut self, data: Vec<u8>);
}

impl SendBinary for common::Socket {
    async fn send_binary(&mut self, data: Vec<u8>) {
        use futures_util::SinkExt;
        self.send(Message::Binary(data.into())).await.unwrap();
    }
}

#[actix_web::test]
async fn websocket_ping_gets_its_payload_back() {
    let server = start(&[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    use futures_util::SinkExt;
    client.ws.send(Message::Ping(b"hello".to_vec().into())).await.unwrap();
    loop {
        match client.next_message().await {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"hello");
                break;
            }
            Message::Close(_) => panic!("closed"),
            _ => {}
        }
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn rejected_list_is_bounded() {
    let server = start(&[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    let mut symbols: Vec<String> = (0..300).map(|i| format!("Z{i}")).collect();
    symbols.push("AAPL".into());
    client.send(json!({"op":"subscribe","symbols":symbols,"snapshot":false})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["symbols"], json!(["AAPL"]));
    assert_eq!(subscribed["rejected"].as_array().unwrap().len(), MAX_REJECTED_LISTED);
    client.send(json!({"op":"ping","id":1})).await;
    assert_eq!(client.recv_type("pong").await["id"], 1);
    server.shutdown().await;
}

#[actix_web::test]
async fn snapshot_of_every_symbol_is_split_at_the_frame_limit() {
    let server = start(&["--max-frame-bytes", "1024", "--sim-rate", "20000"]).await;
    // Wait until every topic has a price, so the snapshot holds one quote per symbol.
    let topics = server.bus.topics();
    let deadline = Instant::now() + Duration::from_secs(10);
    while topics.iter().any(|t| t.seq() == 0) {
        assert!(Instant::now() < deadline, "the sim feed publishes every symbol");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut client, welcome) = Client::connect_welcomed(&server).await;
    assert_eq!(welcome["max_frame_bytes"], 1024);
    client.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":60000})).await;
    assert_eq!(client.recv_type("subscribed").await["type"], "subscribed");
    let mut seen = std::collections::HashSet::new();
    let mut frames = 0;
    while seen.len() < topics.len() {
        let Message::Text(text) = client.next_message().await else { continue };
        assert!(text.len() <= 1024, "a frame of {} bytes", text.len());
        let frame: Value = serde_json::from_str(&text).expect("every frame is one JSON document");
        assert_eq!(frame["type"], "quotes");
        assert_eq!(frame["snapshot"], true, "only snapshot frames are due in the first minute");
        for symbol in quote_symbols(&frame) {
            assert!(seen.insert(symbol.clone()), "{symbol} twice in the snapshot");
        }
        frames += 1;
    }
    assert!(frames >= 10, "{} symbols in {frames} frames of at most 1 KiB", topics.len());
    server.shutdown().await;
}

/// Raw frames, as a client may legally (or not) send them.
mod frames {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    pub fn text(data: &[u8], last: bool) -> Message {
        Message::Frame(Frame::message(data.to_vec(), OpCode::Data(Data::Text), last))
    }

    pub fn continuation(data: &[u8], last: bool) -> Message {
        Message::Frame(Frame::message(data.to_vec(), OpCode::Data(Data::Continue), last))
    }
}

#[actix_web::test]
async fn fragmented_message_is_joined_and_a_ping_between_its_fragments_is_answered() {
    use futures_util::SinkExt;
    let server = start(&[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    let request = br#"{"op":"ping","id":"joined"}"#;
    client.ws.send(frames::text(&request[..5], false)).await.unwrap();
    client.ws.send(Message::Ping(b"between".to_vec().into())).await.unwrap();
    client.ws.send(frames::continuation(&request[5..12], false)).await.unwrap();
    client.ws.send(frames::continuation(&request[12..], true)).await.unwrap();
    let (mut pong_frame, mut pong_reply) = (false, false);
    while !(pong_frame && pong_reply) {
        match client.next_message().await {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"between");
                assert!(!pong_reply, "the control frame is answered before the message it interrupts completes");
                pong_frame = true;
            }
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "pong" {
                    assert_eq!(value["id"], "joined");
                    pong_reply = true;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn fragments_out_of_order_or_not_utf8_close_the_connection_with_the_rfc_code() {
    use futures_util::SinkExt;
    let server = start(&[]).await;
    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        ("a continuation with no message started", vec![frames::continuation(b"{}", true)], 1002),
        ("a new message before the last one ended", vec![frames::text(b"{\"op\"", false), frames::text(b"{}", true)], 1002),
        ("invalid UTF-8 in a text message", vec![frames::text(&[0x7b, 0xff, 0xfe, 0x7d], true)], 1007),
        ("invalid UTF-8 split over fragments", vec![frames::text(&[0x22, 0xe2, 0x82], false), frames::continuation(&[0x22], true)], 1007),
        // The default message limit is 4 KiB: each fragment is small, the message is not.
        (
            "a fragmented message over the message limit",
            (0..10).map(|i| if i == 0 { frames::text(&[b' '; 1000], false) } else { frames::continuation(&[b' '; 1000], i == 9) }).collect(),
            1009,
        ),
    ];
    for (what, messages, code) in cases {
        let (mut client, _) = Client::connect_welcomed(&server).await;
        for message in messages {
            // The server may close before the last fragment is written.
            if client.ws.send(message).await.is_err() {
                break;
            }
        }
        let (got, reason) = client.recv_close().await;
        assert_eq!(got, code, "{what}: closed with {got} ({reason})");
    }
    // Other clients never notice.
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_client_close_is_answered_with_its_code() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let server = start(&[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Library(4001), reason: "done".into() }))).await.unwrap();
    let (code, _) = client.recv_close().await;
    assert_eq!(code, 4001);
    server.shutdown().await;
}
