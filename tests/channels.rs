//! The `trades` and `bars:*` channels and the resume of trades (`since`), end to end: a real
//! server (a two-symbol simulation, so its rate per symbol is known), real WebSocket clients.

mod common;

use common::{Client, EVENT_TIMEOUT, http, repo_path, start};
use serde_json::{Value, json};
use tickerfeed::server::RunningServer;
use tokio::time::Instant;

/// A two-symbol simulation at `rate` quotes per second (half each): every quote is a trade.
async fn server(rate: &str, extra: &[&str]) -> RunningServer {
    let universe = repo_path("tests/fixtures/channels/universe.csv");
    let mut args = vec!["--universe", &universe, "--sim-rate", rate];
    args.extend_from_slice(extra);
    start(&args).await
}

/// The seqs of a `trades` message's trades of `symbol`, checking each trade's fields.
fn trade_seqs(message: &Value, symbol: &str) -> Vec<u64> {
    let trades = message["trades"].as_array().expect("trades array");
    trades
        .iter()
        .filter(|t| t["symbol"] == symbol)
        .map(|t| {
            for field in ["seq", "ts", "pt", "price", "size"] {
                assert!(t[field].is_number(), "trade has {field}: {t}");
            }
            t["seq"].as_u64().unwrap()
        })
        .collect()
}

/// What a client of the trades channel was told about one symbol: trades and gaps, in order.
#[derive(Debug, Default)]
struct Tape {
    seqs: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    /// Every seq accounted for (received or told lost), in order: must be contiguous.
    accounted: Vec<u64>,
}

impl Tape {
    fn take(&mut self, message: &Value, symbol: &str) {
        match message["type"].as_str() {
            Some("trades") => {
                for seq in trade_seqs(message, symbol) {
                    self.seqs.push(seq);
                    self.accounted.push(seq);
                }
            }
            Some("gap") if message["symbol"] == symbol => {
                assert_eq!(message["channel"], "trades");
                let (from, to) = (message["from_seq"].as_u64().unwrap(), message["to_seq"].as_u64().unwrap());
                assert!(from <= to, "{message}");
                self.gaps.push((from, to));
                self.accounted.extend(from..=to);
            }
            Some("quotes") => panic!("a trades-only subscription gets no quotes: {message}"),
            _ => {}
        }
    }

    fn last(&self) -> u64 {
        self.accounted.last().copied().unwrap_or(0)
    }

    /// Every seq from the first on, once each, in order.
    fn assert_contiguous(&self) {
        let first = self.accounted[0];
        for (i, seq) in self.accounted.iter().enumerate() {
            assert_eq!(*seq, first + i as u64, "seq {} of the tape (gaps {:?})", i, self.gaps);
        }
    }

    async fn read_until(&mut self, client: &mut Client, symbol: &str, seq: u64) {
        while self.last() < seq {
            let message = client.recv().await;
            self.take(&message, symbol);
        }
    }
}

#[actix_web::test]
async fn a_client_that_keeps_up_gets_every_trade_in_seq_order() {
    let server = server("400", &[]).await;
    common::published(&server, "AAA", 1).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    let before = server.bus.topic("AAA").unwrap().seq();
    client.send(json!({"op":"subscribe","symbols":["aaa"],"channels":["trades"],"throttle_ms":50,"id":1})).await;
    let subscribed = client.recv_type("subscribed").await;
    let at_subscribe = server.bus.topic("AAA").unwrap().seq();
    assert_eq!(subscribed["channels"], json!({"trades": ["AAA"]}));
    assert_eq!(subscribed["symbols"], json!(["AAA"]));
    // Over a window of at least 200 trades, every one published arrives, once, in order.
    let target = at_subscribe + 200;
    common::published(&server, "AAA", target).await;
    let mut tape = Tape::default();
    tape.read_until(&mut client, "AAA", target).await;
    assert!(tape.gaps.is_empty(), "no loss for a client that keeps up: {:?}", tape.gaps);
    tape.assert_contiguous();
    let first = tape.seqs[0];
    assert!(first > before && first <= at_subscribe + 1, "trades start at the subscription: first {first}, seq was {before}..{at_subscribe}");
    assert!(tape.seqs.len() as u64 >= target - at_subscribe);
    let (_, metrics) = http(&server, "GET", "/metrics", None).await;
    assert!(common::metric(&metrics, "tickerfeed_trades_delivered_total") >= tape.seqs.len() as f64, "counted");
    server.shutdown().await;
}

#[actix_web::test]
async fn a_stalled_client_is_told_exactly_which_trades_it_lost() {
    // 4,000 trades a second per symbol: the ring (1,024) is overrun within a second.
    let server = server("8000", &[]).await;
    common::published(&server, "AAA", 1).await;
    let mut client = Client::connect_small_buffer(&server, "/ws?symbols=AAA&channels=trades&throttle_ms=0", 4096).await;
    client.recv_type("welcome").await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["channels"], json!({"trades": ["AAA"]}));
    // Not reading: the socket fills, the server stops writing, the ring moves on.
    let stalled_at = server.bus.topic("AAA").unwrap().seq();
    common::published(&server, "AAA", stalled_at + 6_000).await;
    let target = server.bus.topic("AAA").unwrap().seq();
    let mut tape = Tape::default();
    tape.read_until(&mut client, "AAA", target).await;
    assert!(!tape.gaps.is_empty(), "a client 6,000 trades behind lost some");
    tape.assert_contiguous();
    let lost: u64 = tape.gaps.iter().map(|(from, to)| to - from + 1).sum();
    assert!(lost >= 6_000 - 1024 - 2_000, "lost {lost}: about what the ring and the socket could not hold");
    // It goes on: live trades follow.
    let more = tape.last() + 50;
    tape.read_until(&mut client, "AAA", more).await;
    tape.assert_contiguous();
    let (_, metrics) = http(&server, "GET", "/metrics", None).await;
    assert!(common::metric(&metrics, "tickerfeed_trades_lost_total") >= lost as f64, "every lost trade counted: {lost}");
    server.shutdown().await;
}

#[actix_web::test]
async fn resume_recovers_from_the_ring_and_says_when_it_cannot() {
    let server = server("200", &[]).await;
    common::published(&server, "AAA", 1).await;
    let mut client = Client::connect_path(&server, "/ws?symbols=AAA&channels=trades&throttle_ms=0").await;
    let welcome = client.recv_type("welcome").await;
    assert!(welcome["session"].is_string(), "welcome carries the session id: {welcome}");
    let mut tape = Tape::default();
    let start = server.bus.topic("AAA").unwrap().seq();
    tape.read_until(&mut client, "AAA", start + 20).await;
    let last_seen = tape.last();
    drop(client);
    // Trades go on while the client is away.
    common::published(&server, "AAA", last_seen + 40).await;
    let mut client = Client::connect_path(&server, &format!("/ws?symbols=AAA&channels=trades&throttle_ms=0&since=AAA:{last_seen}")).await;
    let again = client.recv_type("welcome").await;
    assert_ne!(again["session"], welcome["session"], "a new session");
    assert_eq!(again["instance"], welcome["instance"], "the same run: seqs go on");
    client.recv_type("subscribed").await;
    let backlog = client.recv_type("trades").await;
    assert_eq!(backlog["recovered"], true, "the ring reaches back: {backlog}");
    let recovered = trade_seqs(&backlog, "AAA");
    assert_eq!(recovered[0], last_seen + 1, "the backlog starts right after since");
    assert!(recovered.len() >= 39, "everything published while away: {}", recovered.len());
    let mut resumed = Tape::default();
    resumed.take(&backlog, "AAA");
    let target = resumed.last() + 30;
    resumed.read_until(&mut client, "AAA", target).await;
    assert!(resumed.gaps.is_empty());
    resumed.assert_contiguous();
    server.shutdown().await;

    // Outside the ring: 1,024 trades kept, far more published since seq 1.
    let server = self::server("8000", &[]).await;
    common::published(&server, "AAA", 3_000).await;
    let mut client = Client::connect_path(&server, "/ws?symbols=AAA&channels=trades&since=AAA:1").await;
    client.recv_type("subscribed").await;
    let gap = client.recv().await;
    assert_eq!((gap["type"].as_str(), gap["from_seq"].as_u64()), (Some("gap"), Some(2)), "told what is gone first: {gap}");
    let backlog = client.recv_type("trades").await;
    assert_eq!(backlog["recovered"], false, "{backlog}");
    assert_eq!(trade_seqs(&backlog, "AAA")[0], gap["to_seq"].as_u64().unwrap() + 1, "the backlog starts where the gap ends");
    // A since beyond the newest seq belongs to another run of the server: nothing recovered,
    // and no gap invented.
    let mut client = Client::connect_path(&server, "/ws?symbols=AAA&channels=trades&since=AAA:999999999").await;
    client.recv_type("subscribed").await;
    let backlog = client.recv().await;
    assert_eq!((backlog["type"].as_str(), backlog["recovered"].as_bool()), (Some("trades"), Some(false)), "{backlog}");
    assert_eq!(backlog["trades"], json!([]));
    server.shutdown().await;
}

#[actix_web::test]
async fn bars_stream_the_same_bars_history_serves() {
    let server = server("400", &[]).await;
    common::published(&server, "AAA", 1).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAA"],"channels":["quotes","bars:1s"],"throttle_ms":100})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["channels"], json!({"quotes": ["AAA"], "bars:1s": ["AAA"]}));
    let mut finals: Vec<Value> = Vec::new();
    let mut forming_seen = 0;
    let mut quotes_seen = false;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while finals.len() < 2 {
        assert!(Instant::now() < deadline, "two bars close within 10 s");
        let message = client.recv().await;
        match message["type"].as_str() {
            Some("bars") => {
                assert_eq!(message["resolution"], "1s");
                for bar in message["bars"].as_array().unwrap() {
                    assert_eq!(bar["symbol"], "AAA");
                    if bar["final"] == true {
                        assert!(finals.iter().all(|f| f["t"] != bar["t"]), "a final bar is sent once: {bar}");
                        finals.push(bar.clone());
                    } else {
                        forming_seen += 1;
                    }
                }
            }
            Some("quotes") => quotes_seen = true,
            _ => {}
        }
    }
    assert!(forming_seen > 0 && quotes_seen, "forming bars and quotes both arrive");
    common::assert_bars_match_history(&server, "AAA", &finals).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn unknown_channels_and_bad_since_are_named() {
    let server = server("200", &[]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAA"],"channels":["trades","bogus"],"id":3})).await;
    let error = client.recv_type("error").await;
    assert_eq!((error["id"].as_u64(), error["code"].as_str()), (Some(3), Some("bad_request")));
    assert!(error["message"].as_str().unwrap().contains("unknown channel 'bogus'"), "{error}");
    client.send(json!({"op":"subscribe","symbols":["AAA"],"channels":["trades"],"since":{"AAA":-4},"id":4})).await;
    let error = client.recv_type("error").await;
    assert!(error["message"].as_str().unwrap().contains("'since'"), "{error}");
    let mut client = Client::connect_path(&server, "/ws?symbols=AAA&channels=trades,bogus").await;
    client.recv_type("subscribed").await;
    let error = client.recv_type("error").await;
    assert!(error["message"].as_str().unwrap().contains("'channels'"), "{error}");
    // Unsubscribing drops the channels with the symbol.
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["AAA","BBB"],"channels":["trades"]})).await;
    client.recv_type("subscribed").await;
    client.send(json!({"op":"unsubscribe","symbols":["AAA"]})).await;
    client.recv_type("unsubscribed").await;
    client.send(json!({"op":"subscribe","symbols":["BBB"],"channels":["quotes"],"id":9})).await;
    let subscribed = client.recv_type("subscribed").await;
    assert_eq!(subscribed["channels"], json!({"quotes": ["BBB"]}), "BBB's channels are those of the last request that named it");
    server.shutdown().await;
}
