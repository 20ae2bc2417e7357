//! The `trades` and `bars:*` channels and the resume of trades (`since`) over `GET /sse`, read
//! by a client that parses the stream as an `EventSource` would: the query's `channels=` and
//! `since=` subscribe as `/ws`'s do (tests/channels.rs), each message an event named by its type.

mod common;

use common::sse::{Block, SseClient};
use common::{EVENT_TIMEOUT, repo_path, start};
use serde_json::{Value, json};
use tickerfeed::server::RunningServer;
use tokio::time::Instant;

/// A two-symbol simulation (AAA, BBB) at `rate` quotes per second (half each): every quote is
/// a trade.
async fn server(rate: &str) -> RunningServer {
    let universe = repo_path("tests/fixtures/channels/universe.csv");
    start(&["--universe", &universe, "--sim-rate", rate]).await
}

/// The next event, its name and data (the data's `type` checked against the name).
async fn next_event(sse: &mut SseClient) -> (String, Value) {
    loop {
        match sse.next().await {
            Some(Block::Event { name, data }) => {
                assert_eq!(data["type"], name.as_str(), "an event is named by its message's type: {data}");
                return (name, data);
            }
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
}

/// What a trades subscriber was told about one symbol: trades and gaps, in order.
#[derive(Debug, Default)]
struct Tape {
    seqs: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    /// Every seq accounted for (received or told lost), in order: must be contiguous.
    accounted: Vec<u64>,
}

impl Tape {
    fn take(&mut self, name: &str, message: &Value, symbol: &str) {
        match name {
            "trades" => {
                for trade in message["trades"].as_array().expect("trades array") {
                    assert_eq!(trade["symbol"], symbol, "only the subscribed symbol: {trade}");
                    for field in ["seq", "ts", "pt", "price", "size"] {
                        assert!(trade[field].is_number(), "trade has {field}: {trade}");
                    }
                    assert!(trade["price"].as_f64().unwrap() > 0.0 && trade["size"].as_f64().unwrap() > 0.0, "{trade}");
                    let seq = trade["seq"].as_u64().unwrap();
                    self.seqs.push(seq);
                    self.accounted.push(seq);
                }
            }
            "gap" if message["symbol"] == symbol => {
                assert_eq!(message["channel"], "trades");
                let (from, to) = (message["from_seq"].as_u64().unwrap(), message["to_seq"].as_u64().unwrap());
                assert!(from <= to, "{message}");
                self.gaps.push((from, to));
                self.accounted.extend(from..=to);
            }
            other => panic!("a trades subscription gets trades and gaps only, got '{other}': {message}"),
        }
    }

    fn last(&self) -> u64 {
        self.accounted.last().copied().unwrap_or(0)
    }

    fn assert_contiguous(&self) {
        assert!(!self.accounted.is_empty(), "some trades");
        let first = self.accounted[0];
        for (i, seq) in self.accounted.iter().enumerate() {
            assert_eq!(*seq, first + i as u64, "seq {i} of the tape (gaps {:?})", self.gaps);
        }
    }

    /// Reads until the tape accounts for `seq`.
    async fn read_until(&mut self, sse: &mut SseClient, symbol: &str, seq: u64) {
        while self.last() < seq {
            let (name, message) = next_event(sse).await;
            self.take(&name, &message, symbol);
        }
    }
}

#[actix_web::test]
async fn channels_trades_stream_every_trade_in_order_and_no_quotes() {
    let server = server("400").await;
    common::published(&server, "AAA", 1).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=aaa&channels=trades&throttle_ms=0").await;
    assert_eq!(sse.status, 200);
    let welcome = sse.event("welcome").await;
    assert!(welcome["session"].is_string(), "welcome carries the session id: {welcome}");
    let subscribed = sse.event("subscribed").await;
    let at_subscribe = server.bus.topic("AAA").unwrap().seq();
    assert_eq!(subscribed["symbols"], json!(["AAA"]));
    assert_eq!(subscribed["throttle_ms"], 0);
    assert_eq!(subscribed["channels"], json!({"trades": ["AAA"]}));
    // 200 trades and more: every one, once, in order, and nothing else (no quotes, no snapshot).
    let target = at_subscribe + 200;
    common::published(&server, "AAA", target).await;
    let mut tape = Tape::default();
    tape.read_until(&mut sse, "AAA", target).await;
    assert!(tape.gaps.is_empty(), "no loss for a client that keeps up: {:?}", tape.gaps);
    tape.assert_contiguous();
    assert!(tape.seqs[0] <= at_subscribe + 1, "trades start at the subscription: first {}, seq was {at_subscribe}", tape.seqs[0]);
    server.shutdown().await;
}

#[actix_web::test]
async fn channels_bars_stream_the_bars_history_serves() {
    let server = server("400").await;
    common::published(&server, "AAA", 1).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAA&channels=bars:1s&throttle_ms=100").await;
    let subscribed = sse.event("subscribed").await;
    assert_eq!(subscribed["channels"], json!({"bars:1s": ["AAA"]}));
    let mut finals: Vec<Value> = Vec::new();
    let mut forming = 0;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while finals.is_empty() {
        assert!(Instant::now() < deadline, "a bar closes within 10 s");
        let (name, message) = next_event(&mut sse).await;
        assert_eq!(name, "bars", "a bars:1s subscription gets bars only: {message}");
        assert_eq!(message["resolution"], "1s");
        for bar in message["bars"].as_array().unwrap() {
            assert_eq!(bar["symbol"], "AAA");
            assert_eq!(bar["t"].as_u64().unwrap() % 1000, 0, "a 1 s bar starts on a second: {bar}");
            if bar["final"] == true {
                finals.push(bar.clone());
            } else {
                assert_eq!(bar["final"], false, "{bar}");
                forming += 1;
            }
        }
    }
    assert!(forming > 0, "forming bars come before the final one");
    common::assert_bars_match_history(&server, "AAA", &finals).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn since_in_the_query_resumes_from_the_ring() {
    let server = server("200").await;
    common::published(&server, "AAA", 1).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAA&channels=trades&throttle_ms=0").await;
    let welcome = sse.event("welcome").await;
    sse.event("subscribed").await;
    let start = server.bus.topic("AAA").unwrap().seq();
    let mut tape = Tape::default();
    tape.read_until(&mut sse, "AAA", start + 20).await;
    tape.assert_contiguous();
    let last_seen = *tape.seqs.last().unwrap();
    drop(sse);
    // Trades go on while the client is away.
    common::published(&server, "AAA", last_seen + 40).await;
    let mut sse = SseClient::connect(server.addr, &format!("/sse?symbols=AAA&channels=trades&throttle_ms=0&since=AAA:{last_seen}")).await;
    let again = sse.event("welcome").await;
    assert_ne!(again["session"], welcome["session"], "a new session");
    assert_eq!(again["instance"], welcome["instance"], "the same run: seqs go on");
    let subscribed = sse.event("subscribed").await;
    assert_eq!(subscribed["channels"], json!({"trades": ["AAA"]}));
    let (name, backlog) = next_event(&mut sse).await;
    assert_eq!(name, "trades", "the backlog comes first: {backlog}");
    assert_eq!(backlog["recovered"], true, "the ring reaches back: {backlog}");
    let mut resumed = Tape::default();
    resumed.take(&name, &backlog, "AAA");
    assert_eq!(resumed.seqs.first(), Some(&(last_seen + 1)), "the backlog starts right after since: {backlog}");
    assert!(resumed.seqs.len() >= 39, "everything published while away: {}", resumed.seqs.len());
    // Then live trades, without a hole or a repeat.
    let target = resumed.last() + 30;
    resumed.read_until(&mut sse, "AAA", target).await;
    assert!(resumed.gaps.is_empty(), "{:?}", resumed.gaps);
    resumed.assert_contiguous();
    server.shutdown().await;
}

#[actix_web::test]
async fn since_beyond_the_ring_is_a_gap_and_a_bad_one_is_named() {
    // 4,000 trades a second per symbol: seq 1 left the ring (1,024) long ago.
    let server = server("8000").await;
    common::published(&server, "AAA", 3_000).await;
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAA&channels=trades&since=AAA:1").await;
    sse.event("subscribed").await;
    let (name, gap) = next_event(&mut sse).await;
    assert_eq!(
        (name.as_str(), gap["channel"].as_str(), gap["symbol"].as_str(), gap["from_seq"].as_u64()),
        ("gap", Some("trades"), Some("AAA"), Some(2)),
        "told what is gone first: {gap}"
    );
    let (name, backlog) = next_event(&mut sse).await;
    assert_eq!(name, "trades");
    assert_eq!(backlog["recovered"], false, "{backlog}");
    assert_eq!(backlog["trades"][0]["seq"].as_u64(), Some(gap["to_seq"].as_u64().unwrap() + 1), "the backlog starts where the gap ends: {backlog}");
    drop(sse);

    // A query that cannot be used: subscribed (quotes only, not resumed), then an error naming it.
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAA&channels=trades,nope").await;
    let subscribed = sse.event("subscribed").await;
    assert_eq!(subscribed["channels"], json!({"quotes": ["AAA"]}), "an unusable channels= falls back to quotes");
    let error = sse.event("error").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("'channels'") && message.contains("'nope'"), "{error}");
    let mut sse = SseClient::connect(server.addr, "/sse?symbols=AAA&channels=trades&since=AAA").await;
    sse.event("subscribed").await;
    let error = sse.event("error").await;
    assert!(error["message"].as_str().unwrap().contains("'since'"), "{error}");
    server.shutdown().await;
}
