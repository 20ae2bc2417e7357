//! Unit tests of the pieces, and end-to-end runs against a tiny mock tickerfeed server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Args;
use crate::client::{SubSpec, now_us, subscribe_text};
use crate::frame::{self, Event, Kind, ProbeEvent, SeqTracker};
use crate::net;
use crate::stats::{StatsRegistry, WorkerStats};
use crate::symbols::{Popularity, Rng, SymbolChooser};
use crate::sys;

// ---------------------------------------------------------------------------------------------
// Frame parsing and seq order

fn quote(sym: &str, seq: u64, pt: i64) -> Value {
    json!({"symbol": sym, "seq": seq, "ts": pt / 1000, "pt": pt, "last": 231.52, "bid": 231.5,
           "ask": 231.54, "size": 100, "volume": 1834200, "open": 229.1, "high": 232.0,
           "low": 228.75, "prev_close": 228.9, "change": 2.62, "change_pct": 1.14})
}

#[test]
fn live_quotes_are_counted_and_timed() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let now = 1_764_100_000_500_000i64;
    let text = json!({"type": "quotes", "quotes": [quote("AAPL", 5, now - 1500), quote("MSFT", 9, now - 2500)]}).to_string();
    assert_eq!(frame::process(&text, &mut seq, &mut st, now, true), Event::Quotes { snapshot: false });
    let c = st.counters;
    assert_eq!((c.frames, c.quote_frames, c.quotes_live, c.quotes_snapshot), (1, 1, 2, 0));
    assert_eq!(c.bytes, text.len() as u64);
    assert_eq!(st.latency.len(), 2);
    assert_eq!(st.latency.min(), 1500);
    assert!(st.latency.equivalent(st.latency.max(), 2500));
    // Outside the measured period: counted, not timed.
    let text = json!({"type": "quotes", "quotes": [quote("AAPL", 6, now)]}).to_string();
    frame::process(&text, &mut seq, &mut st, now, false);
    assert_eq!(st.counters.quotes_live, 3);
    assert_eq!(st.latency.len(), 2);
}

#[test]
fn snapshot_quotes_are_not_timed() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let text = json!({"type": "quotes", "snapshot": true, "quotes": [quote("AAPL", 5, 1)]}).to_string();
    assert_eq!(frame::process(&text, &mut seq, &mut st, 10_000_000, true), Event::Quotes { snapshot: true });
    assert_eq!((st.counters.quotes_snapshot, st.counters.snapshot_frames, st.counters.quotes_live), (1, 1, 0));
    assert!(st.latency.is_empty());
    // The snapshot seq counts for ordering: a live quote must come after it.
    let text = json!({"type": "quotes", "quotes": [quote("AAPL", 5, 2)]}).to_string();
    frame::process(&text, &mut seq, &mut st, 10_000_000, true);
    assert_eq!(st.counters.ordering_errors, 1);
}

#[test]
fn ordering_errors_are_per_symbol_and_counted_once() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let mut feed = |quotes: Vec<Value>| {
        let text = json!({"type": "quotes", "quotes": quotes}).to_string();
        frame::process(&text, &mut seq, &mut st, 0, false);
    };
    feed(vec![quote("A", 10, 0), quote("B", 3, 0)]);
    feed(vec![quote("A", 12, 0), quote("B", 4, 0)]); // gaps are fine
    feed(vec![quote("A", 12, 0)]); // duplicate → error
    feed(vec![quote("A", 11, 0)]); // going back → error
    feed(vec![quote("A", 13, 0), quote("B", 5, 0)]); // fine again: the max (12) was kept
    assert_eq!(st.counters.ordering_errors, 2);
    assert_eq!(st.counters.quotes_live, 8);

    let mut t = SeqTracker::default();
    assert!(t.observe("X", 1));
    assert!(t.observe("Y", 1));
    assert!(!t.observe("X", 1));
    assert!(t.observe("X", 100));
    assert_eq!(t.symbols_seen(), 2);
}

#[test]
fn other_message_types_are_counted_not_failed() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let mut p = |v: Value| frame::process(&v.to_string(), &mut seq, &mut st, 0, true);
    assert_eq!(p(json!({"type": "welcome", "protocol": 1})), Event::Welcome);
    // A feed status whose `quotes` is a number must not break the strict quotes parser.
    assert_eq!(p(json!({"type": "feed", "name": "sim", "quotes": 1234, "snapshot": "x"})), Event::Other);
    assert_eq!(p(json!({"type": "pong", "id": 3})), Event::Other);
    assert_eq!(p(json!({"type": "error", "code": "bad_request", "message": "nope"})), Event::Error);
    assert_eq!(p(json!({"type": "something_new"})), Event::Other);
    assert_eq!(
        p(json!({"type": "subscribed", "id": 1, "throttle_ms": 0, "symbols": ["A", "B"], "rejected": ["ZZZ"]})),
        Event::Subscribed { symbols: 2, rejected: 1, first_rejected: Some("ZZZ".into()), throttle_ms: Some(0) }
    );
    assert_eq!(frame::process("not json", &mut seq, &mut st, 0, true), Event::Unparseable);
    assert_eq!(frame::process(r#"{"type":"quotes","quotes":7}"#, &mut seq, &mut st, 0, true), Event::Unparseable);
    let c = st.counters;
    assert_eq!((c.feed_msgs, c.pong_msgs, c.error_msgs, c.other_msgs, c.subscribed_msgs, c.parse_errors), (1, 1, 1, 2, 1, 2));
    assert_eq!(c.frames, 8);
}

#[test]
fn rejected_symbols_as_objects_or_names() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    // tickerfeed and the peers send objects; the count of symbols must not suffer from them.
    let text = json!({"type": "subscribed", "id": 1, "throttle_ms": 250, "symbols": ["A"],
                      "rejected": [{"symbol": "ZZZ", "code": "unknown_symbol"}, {"symbol": "b@d", "code": "invalid_symbol"}]});
    assert_eq!(
        frame::process(&text.to_string(), &mut seq, &mut st, 0, true),
        Event::Subscribed { symbols: 1, rejected: 2, first_rejected: Some("ZZZ".into()), throttle_ms: Some(250) }
    );
}

/// Socket.IO: the event's name (or the request an ack answers) gives the kind; the payload is
/// the v1 object without `type`, counted exactly as the v1 frame would be.
#[test]
fn named_messages_are_counted_like_v1_frames() {
    let now = 1_764_100_000_500_000i64;
    let live = json!({"quotes": [quote("AAPL", 5, now - 1500), quote("MSFT", 9, now - 2500)]}).to_string();
    let v1_live = json!({"type": "quotes", "quotes": [quote("AAPL", 5, now - 1500), quote("MSFT", 9, now - 2500)]}).to_string();
    let (mut st, mut seq) = (WorkerStats::new(), SeqTracker::default());
    assert_eq!(frame::process_as(Some(Kind::Quotes), &live, &mut seq, &mut st, now, true), Event::Quotes { snapshot: false });
    let (mut st1, mut seq1) = (WorkerStats::new(), SeqTracker::default());
    frame::process_as(None, &v1_live, &mut seq1, &mut st1, now, true);
    let (a, b) = (st.counters, st1.counters);
    assert_eq!((a.frames, a.quote_frames, a.quotes_live, a.quotes_snapshot), (b.frames, b.quote_frames, b.quotes_live, b.quotes_snapshot));
    assert_eq!((a.frames, a.quotes_live), (1, 2));
    assert_eq!(st.latency.len(), 2);
    assert_eq!(st.latency.min(), 1500);

    // Snapshot batches: counted apart, not timed; their seq counts for the order.
    let snap = json!({"snapshot": true, "quotes": [quote("IBM", 7, 1)]}).to_string();
    assert_eq!(frame::process_as(Some(Kind::Quotes), &snap, &mut seq, &mut st, now, true), Event::Quotes { snapshot: true });
    assert_eq!((st.counters.snapshot_frames, st.counters.quotes_snapshot), (1, 1));
    assert_eq!(st.latency.len(), 2);
    let stale = json!({"quotes": [quote("IBM", 7, now)]}).to_string();
    frame::process_as(Some(Kind::Quotes), &stale, &mut seq, &mut st, now, true);
    assert_eq!(st.counters.ordering_errors, 1);
    // The serde fallback (an escaped symbol the scanner declines) counts the same way.
    let escaped = r#"{"quotes":[{"symbol":"I\u0042M","seq":8,"pt":1}]}"#;
    assert_eq!(frame::process_as(Some(Kind::Quotes), escaped, &mut seq, &mut st, now, false), Event::Quotes { snapshot: false });
    assert_eq!(st.counters.ordering_errors, 1, "IBM 8 after 7: in order");

    // Every other kind, the ack of `subscribe` included (no `type`, no `id`).
    let (mut st, mut seq) = (WorkerStats::new(), SeqTracker::default());
    let mut p = |k: Kind, v: &str| frame::process_as(Some(k), v, &mut seq, &mut st, 0, true);
    assert_eq!(
        p(Kind::Subscribed, r#"{"throttle_ms":0,"symbols":["A","B"],"rejected":[{"symbol":"ZZZ","code":"unknown_symbol"}]}"#),
        Event::Subscribed { symbols: 2, rejected: 1, first_rejected: Some("ZZZ".into()), throttle_ms: Some(0) }
    );
    assert_eq!(p(Kind::Welcome, r#"{"protocol":1}"#), Event::Welcome);
    assert_eq!(p(Kind::Feed, r#"{"name":"sim","quotes":1234,"snapshot":"x"}"#), Event::Other);
    assert_eq!(p(Kind::Pong, r#"{"ts":1}"#), Event::Other);
    assert_eq!(p(Kind::Error, r#"{"code":"bad_request","message":"nope"}"#), Event::Error);
    assert_eq!(p(Kind::Error, r#"{"error":{"code":"too_many_symbols","message":"no"}}"#), Event::Error);
    assert_eq!(p(Kind::Other, r#"{"symbols":[]}"#), Event::Other);
    // A quotes event that is not one: a parse error, never a panic.
    for bad in ["", "not json", r#"{"quotes":7}"#, r#"{"snapshot":true}"#, r#"{"type":"quotes"}"#, "[]", r#"{"quotes":[{"seq":1}]}"#] {
        assert_eq!(p(Kind::Quotes, bad), Event::Unparseable, "{bad}");
    }
    let c = st.counters;
    assert_eq!((c.subscribed_msgs, c.other_msgs, c.feed_msgs, c.pong_msgs, c.error_msgs, c.parse_errors), (1, 2, 1, 1, 2, 7));
    assert_eq!(c.frames, 14);
}

#[test]
fn named_welcome_and_probe_classification() {
    let w = frame::parse_welcome_as(Some(Kind::Welcome), r#"{"protocol":1,"server":"tickerfeed 0.1.0","instance":"abc","throttle_ms":250,"max_symbols":1000}"#).unwrap();
    assert_eq!((w.instance.as_deref(), w.max_symbols), (Some("abc"), Some(1000)));
    assert!(frame::parse_welcome_as(Some(Kind::Quotes), r#"{"quotes":[]}"#).unwrap_err().contains("expected welcome"));
    assert!(frame::parse_welcome_as(Some(Kind::Welcome), "garbage").is_err());
    assert!(frame::parse_welcome_as(None, r#"{"type":"welcome","protocol":1}"#).is_ok());

    use frame::probe_classify_as as c;
    assert_eq!(c(Some(Kind::Subscribed), r#"{"symbols":[]}"#), ProbeEvent::Subscribed);
    assert_eq!(c(Some(Kind::Quotes), r#"{"snapshot":true,"quotes":[{"symbol":"A"}]}"#), ProbeEvent::SnapshotQuotes);
    assert_eq!(c(Some(Kind::Quotes), r#"{"quotes":[]}"#), ProbeEvent::LiveQuotes);
    assert_eq!(c(Some(Kind::Quotes), r#"{"snapshot":true}"#), ProbeEvent::Other);
    assert_eq!(c(Some(Kind::Quotes), "garbage"), ProbeEvent::Other);
    assert_eq!(c(Some(Kind::Error), r#"{"error":{"code":"x"}}"#), ProbeEvent::Error);
    assert_eq!(c(Some(Kind::Feed), r#"{"snapshot":true,"quotes":[]}"#), ProbeEvent::Other);
    assert_eq!(c(None, r#"{"type":"subscribed","id":1}"#), ProbeEvent::Subscribed);
}

#[test]
fn negative_latency_is_clamped_and_counted() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let text = json!({"type": "quotes", "quotes": [quote("A", 1, 2_000)]}).to_string();
    frame::process(&text, &mut seq, &mut st, 1_000, true);
    assert_eq!(st.counters.negative_latency, 1);
    assert_eq!(st.latency.len(), 1);
    assert_eq!(st.latency.max(), 0);
}

#[test]
fn welcome_and_probe_classification() {
    let w = frame::parse_welcome(
        r#"{"type":"welcome","protocol":1,"server":"tickerfeed 0.1.0","instance":"abc","throttle_ms":250,"min_throttle_ms":0,"max_symbols":1000,"max_frame_bytes":16384,"future":true}"#,
    )
    .unwrap();
    assert_eq!(w.server.as_deref(), Some("tickerfeed 0.1.0"));
    assert_eq!((w.max_symbols, w.max_frame_bytes, w.throttle_ms), (Some(1000), Some(16384), Some(250)));
    assert!(frame::parse_welcome(r#"{"type":"quotes","quotes":[]}"#).is_err());
    assert!(frame::parse_welcome("garbage").is_err());

    assert_eq!(frame::probe_classify(r#"{"type":"subscribed","id":1}"#), ProbeEvent::Subscribed);
    assert_eq!(frame::probe_classify(r#"{"type":"quotes","snapshot":true,"quotes":[{"symbol":"A"}]}"#), ProbeEvent::SnapshotQuotes);
    assert_eq!(frame::probe_classify(r#"{"type":"quotes","quotes":[]}"#), ProbeEvent::LiveQuotes);
    assert_eq!(frame::probe_classify(r#"{"type":"error"}"#), ProbeEvent::Error);
    assert_eq!(frame::probe_classify(r#"{"type":"feed","snapshot":{}}"#), ProbeEvent::Other);
}

#[test]
fn subscribe_message_format() {
    let spec = SubSpec { symbols: vec!["AAPL".into(), "MSFT".into()], throttle_ms: Some(0), snapshot: true, align: false, channels: None, rcvbuf: None };
    let v: Value = serde_json::from_str(&subscribe_text(&spec, 1)).unwrap();
    assert_eq!(v, json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"], "throttle_ms": 0, "snapshot": true, "id": 1}));
    // Socket.IO: the event's argument carries no op, type or id.
    let v: Value = serde_json::from_str(&crate::client::subscribe_payload(&spec)).unwrap();
    assert_eq!(v, json!({"symbols": ["AAPL", "MSFT"], "throttle_ms": 0, "snapshot": true}));
    let aligned = SubSpec { align: true, ..spec.clone() };
    let v: Value = serde_json::from_str(&subscribe_text(&aligned, 2)).unwrap();
    assert_eq!(v["align"], true, "--align asks for it; without it the field is left out");
    let v: Value = serde_json::from_str(&crate::client::subscribe_payload(&aligned)).unwrap();
    assert_eq!(v["align"], true);
    let spec = SubSpec { symbols: vec!["*".into()], throttle_ms: None, snapshot: false, align: false, channels: None, rcvbuf: Some(4096) };
    let v: Value = serde_json::from_str(&subscribe_text(&spec, 7)).unwrap();
    assert_eq!(v, json!({"op": "subscribe", "symbols": ["*"], "snapshot": false, "id": 7}));
    // --channels: sent as given; without it the field is left out (above).
    let spec = SubSpec { channels: Some(vec!["quotes".into(), "trades".into()]), ..spec };
    let v: Value = serde_json::from_str(&subscribe_text(&spec, 8)).unwrap();
    assert_eq!(v, json!({"op": "subscribe", "symbols": ["*"], "snapshot": false, "channels": ["quotes", "trades"], "id": 8}));
    let v: Value = serde_json::from_str(&crate::client::subscribe_payload(&spec)).unwrap();
    assert_eq!(v, json!({"symbols": ["*"], "snapshot": false, "channels": ["quotes", "trades"]}));
}

fn trade(sym: &str, seq: u64) -> Value {
    json!({"symbol": sym, "seq": seq, "ts": 1_795_644_640_649i64, "pt": 1_795_644_640_649_312i64, "price": 271.52, "size": 100})
}

#[test]
fn trades_are_counted_and_checked_per_symbol() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let now = 1_795_644_640_700_000i64;
    let mut process = |v: Value, st: &mut WorkerStats| frame::process(&v.to_string(), &mut seq, st, now, true);
    // The first trade of a symbol may have any seq; then each one above the last.
    let text = json!({"type": "trades", "trades": [trade("AAPL", 1043), trade("AAPL", 1044), trade("MSFT", 7)]});
    assert_eq!(process(text, &mut st), Event::Trades);
    let c = st.counters;
    assert_eq!((c.frames, c.trade_frames, c.trades, c.trades_lost, c.trade_order_errors), (1, 1, 3, 0, 0));
    assert_eq!((c.quote_frames, c.quotes_live, c.other_msgs, c.parse_errors), (0, 0, 0, 0), "trades are not quotes");
    assert!(st.latency.is_empty(), "the quotes' latency is the quotes'");
    // A gap names what is lost; the trades go on after it.
    let gap = json!({"type": "gap", "channel": "trades", "symbol": "AAPL", "from_seq": 1045, "to_seq": 1310});
    assert_eq!(process(gap, &mut st), Event::Other);
    let text = json!({"type": "trades", "trades": [trade("AAPL", 1311), trade("MSFT", 8)]});
    assert_eq!(process(text, &mut st), Event::Trades);
    let c = st.counters;
    assert_eq!((c.trade_frames, c.trades, c.gap_msgs, c.trades_lost, c.trade_order_errors), (2, 5, 1, 266, 0));
    // A jump without a gap message, a repeat and a step back are one error each.
    let text = json!({"type": "trades", "trades": [trade("MSFT", 10), trade("MSFT", 10), trade("MSFT", 9), trade("MSFT", 11)]});
    process(text, &mut st);
    assert_eq!((st.counters.trades, st.counters.trade_order_errors), (9, 3));
    // A gap that does not follow on from the last trade is an error too (seqs 12..=13 unexplained).
    let gap = json!({"type": "gap", "channel": "trades", "symbol": "MSFT", "from_seq": 14, "to_seq": 20});
    process(gap, &mut st);
    assert_eq!((st.counters.trades_lost, st.counters.trade_order_errors), (273, 4));
    process(json!({"type": "trades", "trades": [trade("MSFT", 21)]}), &mut st);
    assert_eq!(st.counters.trade_order_errors, 4);
    // A gap before any trade of its symbol is in order; a resume's `recovered` frame counts alike.
    process(json!({"type": "gap", "channel": "trades", "symbol": "IBM", "from_seq": 1, "to_seq": 4}), &mut st);
    process(json!({"type": "trades", "recovered": true, "trades": [trade("IBM", 5)]}), &mut st);
    assert_eq!((st.counters.trades, st.counters.trades_lost, st.counters.trade_order_errors), (11, 277, 4));
    // Another channel's gap is counted, nothing lost; an empty frame is a frame.
    process(json!({"type": "gap", "channel": "bars:1s", "symbol": "IBM", "from_seq": 9, "to_seq": 99}), &mut st);
    process(json!({"type": "trades", "trades": []}), &mut st);
    let c = st.counters;
    assert_eq!((c.gap_msgs, c.trades_lost, c.trade_frames, c.trades, c.trade_order_errors), (4, 277, 6, 11, 4));
    assert_eq!((c.frames, c.parse_errors, c.other_msgs), (10, 0, 0));
}

#[test]
fn trades_and_gaps_the_scanner_declines_go_through_serde() {
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    // An escaped symbol: the scanner declines it, serde reads it the same.
    let text = r#"{"type":"trades","trades":[{"symbol":"A\u0042","seq":1,"pt":2},{"symbol":"AB","seq":2,"pt":3}]}"#;
    assert!(crate::scan::scan_trades(text).is_none());
    assert_eq!(frame::process(text, &mut seq, &mut st, 0, true), Event::Trades);
    let text = r#"{"type":"gap","channel":"trades","symbol":"A\u0042","from_seq":3,"to_seq":4,"note":1.5}"#;
    assert!(crate::scan::scan_gap(text, true).is_none());
    frame::process(text, &mut seq, &mut st, 0, true);
    frame::process(r#"{"type":"trades","trades":[{"symbol":"AB","seq":5}]}"#, &mut seq, &mut st, 0, true);
    let c = st.counters;
    assert_eq!((c.trade_frames, c.trades, c.gap_msgs, c.trades_lost, c.trade_order_errors, c.parse_errors), (2, 3, 1, 2, 0, 0));
    // Shaped wrong: unparseable, not counted as trades.
    assert_eq!(frame::process(r#"{"type":"trades","trades":7}"#, &mut seq, &mut st, 0, true), Event::Unparseable);
    assert_eq!(frame::process(r#"{"type":"gap","symbol":"AB"}"#, &mut seq, &mut st, 0, true), Event::Unparseable);
    assert_eq!((st.counters.trades, st.counters.gap_msgs, st.counters.parse_errors), (3, 1, 2));
    // Socket.IO: the event's name says what the payload is.
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    let trades = json!({"trades": [trade("AAPL", 1), trade("AAPL", 2)]}).to_string();
    assert_eq!(frame::process_as(Some(Kind::Trades), &trades, &mut seq, &mut st, 0, true), Event::Trades);
    let gap = json!({"channel": "trades", "symbol": "AAPL", "from_seq": 3, "to_seq": 5}).to_string();
    frame::process_as(Some(Kind::Gap), &gap, &mut seq, &mut st, 0, true);
    let trades = json!({"trades": [trade("AAPL", 6)]}).to_string();
    frame::process_as(Some(Kind::of_name("trades")), &trades, &mut seq, &mut st, 0, true);
    let c = st.counters;
    assert_eq!((c.trade_frames, c.trades, c.gap_msgs, c.trades_lost, c.trade_order_errors, c.other_msgs), (2, 3, 1, 3, 0, 0));
}

#[test]
fn stats_registry_merges_threads() {
    let reg = Arc::new(StatsRegistry::default());
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let reg = reg.clone();
            s.spawn(move || {
                for i in 0..100 {
                    reg.with(|w| {
                        w.counters.frames += 1;
                        w.latency.saturating_record(1000 * (t + 1) + i);
                    });
                }
            });
        }
    });
    reg.with(|w| w.counters.frames += 1);
    assert_eq!(reg.worker_count(), 4);
    assert_eq!(reg.totals().frames, 301);
    assert_eq!(reg.merged_latency().len(), 300);
    // A second registry on the same thread gets its own share.
    let other = StatsRegistry::default();
    other.with(|w| w.counters.frames += 5);
    assert_eq!(other.totals().frames, 5);
    assert_eq!(reg.totals().frames, 301);
}

// ---------------------------------------------------------------------------------------------
// Symbols, HTTP, system helpers, CLI

#[test]
fn chooser_picks_distinct_deterministic_symbols() {
    let universe: Vec<String> = (0..50).map(|i| format!("S{i}")).collect();
    for pop in [Popularity::Uniform, Popularity::Zipf(1.2)] {
        let ch = SymbolChooser::new(universe.clone(), pop.clone());
        for i in 0..200 {
            let a = ch.choose(&mut Rng::derive(7, i), 10);
            let b = ch.choose(&mut Rng::derive(7, i), 10);
            assert_eq!(a, b, "same seed, same symbols");
            let mut d = a.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 10, "distinct: {a:?}");
        }
        assert_eq!(ch.choose(&mut Rng::new(1), 80).len(), 50, "K is capped at the universe");
    }
    // Zipf favours the head of the list; uniform does not.
    let count_s0 = |pop| {
        let ch = SymbolChooser::new(universe.clone(), pop);
        (0..2000).filter(|&i| ch.choose(&mut Rng::derive(3, i), 5).contains(&"S0".to_string())).count()
    };
    let (uni, zipf) = (count_s0(Popularity::Uniform), count_s0(Popularity::Zipf(1.0)));
    assert!((100..300).contains(&uni), "uniform: S0 in {uni} of 2000 (expected ~200)");
    assert!(zipf > 1000, "zipf: S0 in {zipf} of 2000");
}

#[test]
fn http_response_parsing() {
    let body = br#"[{"symbol":"AAPL","name":"Apple"},{"symbol":"MSFT"}]"#;
    let head = format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    let plain = [head.as_bytes(), body, b"trailing junk"].concat();
    assert_eq!(net::parse_http_response(&plain).unwrap(), body);
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n[{\"sy\r\n2f;ext=1\r\nmbol\":\"AAPL\",\"name\":\"Apple\"},{\"symbol\":\"MSFT\"}]\r\n0\r\n\r\n";
    assert_eq!(net::parse_http_response(chunked).unwrap(), body);
    assert!(net::parse_http_response(b"HTTP/1.1 404 Not Found\r\n\r\nnope").is_err());
    assert!(net::parse_http_response(b"garbage").is_err());
    assert_eq!(net::parse_symbols(body).unwrap(), vec!["AAPL", "MSFT"]);
    assert_eq!(net::parse_symbols(br#"["A","B","A"]"#).unwrap(), vec!["A", "B"]);
    assert!(net::parse_symbols(br#"{"symbols":[]}"#).is_err());
}

#[test]
fn vm_rss_parsing() {
    let status = "Name:\ttickerfeed\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";
    assert_eq!(sys::parse_vm_rss(status), Some(20480 * 1024));
    assert_eq!(sys::parse_vm_rss("Name: x\n"), None);
    // Our own process certainly has an RSS.
    assert!(sys::vm_rss_bytes(std::process::id()).unwrap() > 0);
    let before = sys::cpu_times();
    let mut x = 0u64;
    for i in 0..5_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    assert!(sys::cpu_times().user >= before.user);
    assert!(sys::raise_nofile_limit().unwrap() >= 64);
}

#[test]
fn cli_parses_the_documented_flags() {
    let a = Args::try_parse_from([
        "loadgen",
        "--url",
        "ws://127.0.0.1:8080/ws",
        "--clients",
        "1000",
        "--symbols",
        "10",
        "--throttle-ms",
        "0",
        "--duration",
        "10",
        "--warmup",
        "2",
        "--connect-rate",
        "500",
        "--stall",
        "20",
        "--stall-wildcard",
        "--wildcard",
        "--server-pid",
        "42",
        "--seed",
        "1",
        "--json",
        "out.json",
        "--probe-interval-ms",
        "1000",
        "--zipf",
        "1.1",
        "--symbol-list",
        "AAPL,MSFT",
        "--threads",
        "2",
        "--allow-errors",
        "--churn",
        "500",
        "--settle",
        "10",
        "--idle",
    ])
    .unwrap();
    assert_eq!((a.churn, a.settle, a.idle), (500.0, 10.0, true));
    assert_eq!((a.clients, a.symbols, a.stall, a.threads), (1000, 10, 20, 2));
    assert_eq!(a.throttle_ms, Some(0));
    assert_eq!(a.symbol_list.as_deref(), Some(&["AAPL".to_string(), "MSFT".to_string()][..]));
    assert!(a.stall_wildcard && a.wildcard && a.allow_errors);
    a.validate().unwrap();
    let bad = Args::try_parse_from(["loadgen", "--duration", "0"]).unwrap();
    assert!(bad.validate().is_err());
    for (arg, flag) in [("--churn=-1", "--churn"), ("--settle=-2", "--settle"), ("--churn=NaN", "--churn")] {
        let a = Args::try_parse_from(["loadgen", arg]).unwrap();
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains(flag), "{e}");
    }
    let defaults = Args::try_parse_from(["loadgen"]).unwrap();
    assert_eq!(defaults.channels, None, "no --channels: none sent");
    let a = Args::try_parse_from(["loadgen", "--channels", "quotes,trades"]).unwrap();
    assert_eq!(a.channels, Some(vec!["quotes".to_string(), "trades".to_string()]));
    a.validate().unwrap();
    let e = Args::try_parse_from(["loadgen", "--channels", "quotes,"]).unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("--channels"), "{e}");
    assert_eq!(defaults.throttle_ms, None);
    assert_eq!(defaults.threads, 1);
}

// ---------------------------------------------------------------------------------------------
// Mock server

#[derive(Clone)]
struct MockOpts {
    symbols: Vec<String>,
    /// Live frame interval per connection.
    tick: Duration,
    /// Every Nth live frame repeats the previous seq of its first symbol.
    dup_every: Option<u64>,
    /// Close every connection after this many live frames.
    close_after: Option<u64>,
    /// Answer subscribe with an error instead of `subscribed`.
    refuse: bool,
}

impl Default for MockOpts {
    fn default() -> Self {
        MockOpts { symbols: (0..20).map(|i| format!("SYM{i}")).collect(), tick: Duration::from_millis(5), dup_every: None, close_after: None, refuse: false }
    }
}

struct Mock {
    addr: SocketAddr,
    /// `{"action":"resume"}` POSTs received at /api/feeds/replay/control.
    resumes: Arc<AtomicUsize>,
    /// Engine.IO pongs received (Socket.IO connections get a ping after `subscribed`).
    pongs: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    closes_received: Arc<AtomicUsize>,
}

/// Serves `/ws` (WebSocket), `GET /sse` (Server-Sent Events) and `GET /api/symbols` (chunked,
/// to exercise the decoder) on one port, like the real server.
async fn start_mock(opts: MockOpts) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let closes_received = Arc::new(AtomicUsize::new(0));
    let pongs = Arc::new(AtomicUsize::new(0));
    let resumes = Arc::new(AtomicUsize::new(0));
    let (conns, closes, pongs2) = (connections.clone(), closes_received.clone(), pongs.clone());
    let resumes2 = resumes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (opts, conns, closes, pongs) = (opts.clone(), conns.clone(), closes.clone(), pongs2.clone());
            let resumes = resumes2.clone();
            tokio::spawn(async move {
                let mut peek = [0u8; 32];
                let n = stream.peek(&mut peek).await.unwrap_or(0);
                if peek[..n].starts_with(b"POST ") {
                    serve_control(stream, resumes).await;
                } else if peek[..n].starts_with(b"GET /api/symbols") {
                    serve_symbols(stream, &opts.symbols).await;
                } else if peek[..n].starts_with(b"GET /sse") {
                    conns.fetch_add(1, Ordering::Relaxed);
                    let _ = serve_sse(stream, opts).await;
                } else {
                    conns.fetch_add(1, Ordering::Relaxed);
                    let sio = peek[..n].starts_with(b"GET /socket.io/");
                    let _ = serve_ws(stream, opts, closes, sio.then_some(pongs)).await;
                }
            });
        }
    });
    Mock { addr, resumes, pongs, connections, closes_received }
}

/// The feed control endpoint. Answers with a Content-Length and then keeps the connection
/// open (as some servers do despite `Connection: close`): the client must stop reading at the
/// end of the body, not wait for the close.
async fn serve_control(mut stream: tokio::net::TcpStream, resumes: Arc<AtomicUsize>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !net::response_complete(&[b"HTTP/1.1 200 OK\r\n".as_slice(), &req].concat()[..]) {
        // (A request parses like a response here: headers, then Content-Length bytes.)
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let ok = text.starts_with("POST /api/feeds/replay/control ") && text.contains(r#""resume""#);
    let (status, body) = if ok {
        resumes.fetch_add(1, Ordering::Relaxed);
        ("200 OK", r#"{"name":"replay","state":"running"}"#)
    } else {
        ("404 Not Found", r#"{"error":"unknown_feed"}"#)
    };
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let _ = stream.write_all(resp.as_bytes()).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
}

async fn serve_symbols(mut stream: tokio::net::TcpStream, symbols: &[String]) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::to_vec(&symbols.iter().map(|s| json!({"symbol": s, "name": "x"})).collect::<Vec<_>>()).unwrap();
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(17) {
        resp.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        resp.extend_from_slice(chunk);
        resp.extend_from_slice(b"\r\n");
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&resp).await;
    let _ = stream.shutdown().await;
}

async fn serve_ws(
    stream: tokio::net::TcpStream,
    opts: MockOpts,
    closes: Arc<AtomicUsize>,
    // Some = Socket.IO mode, counting Engine.IO pongs.
    sio_pongs: Option<Arc<AtomicUsize>>,
) -> anyhow::Result<()> {
    // Like the real server should: without TCP_NODELAY, `subscribed` + snapshot (two small
    // writes) meet Nagle + delayed ACK and the probe sees ~40 ms.
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    let sio = sio_pongs.is_some();
    // v1 object → wire text. In Socket.IO mode, tickerfeed's mapping: an event named after the
    // type, its one argument the object without `type` (and `id`).
    let wrap = |v: Value| -> Message {
        if sio {
            let mut v = v;
            let obj = v.as_object_mut().expect("an object");
            let kind = obj.remove("type").and_then(|t| t.as_str().map(String::from)).unwrap_or_default();
            obj.remove("id");
            Message::text(format!("42{}", json!([kind, v])))
        } else {
            Message::text(v.to_string())
        }
    };
    // The answer to the client's `subscribe`: in Socket.IO mode the ack of its id, the object
    // without `type` and `id` (an error as `{"error":{...}}`).
    let answer = |v: Value, ack: Option<u64>| -> Message {
        match ack {
            Some(n) => {
                let mut v = v;
                let obj = v.as_object_mut().expect("an object");
                let kind = obj.remove("type");
                obj.remove("id");
                let arg = if kind.as_ref().and_then(Value::as_str) == Some("error") { json!({ "error": v }) } else { v };
                Message::text(format!("43{n}{}", json!([arg])))
            }
            None => Message::text(v.to_string()),
        }
    };
    if sio {
        ws.send(Message::text(r#"0{"sid":"mock","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#)).await?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "40" => {}
            other => anyhow::bail!("expected 40, got {other:?}"),
        }
        ws.send(Message::text(r#"40{"sid":"mock-sio"}"#)).await?;
    }
    ws.send(wrap(json!({"type":"welcome","protocol":1,"server":"mock 0.0.0","instance":"mock-1","throttle_ms":250,
               "min_throttle_ms":0,"max_symbols":1000,"max_frame_bytes":16384})))
        .await?;
    let (sub, ack): (Value, Option<u64>) = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if sio => {
                // 42<ack id>["subscribe",{"symbols":[...],"throttle_ms":...,"snapshot":...}]
                let rest = t.strip_prefix("42").expect("an event");
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                let ack = rest[..digits].parse::<u64>().ok();
                assert!(ack.is_some(), "subscribe is sent with an ack id: {t}");
                let v: Value = serde_json::from_str(&rest[digits..])?;
                assert_eq!(v[0], "subscribe");
                let arg = v[1].clone();
                for field in ["op", "type", "id"] {
                    assert!(arg.get(field).is_none(), "the subscribe argument carries no {field}: {t}");
                }
                break (arg, ack);
            }
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)?;
                assert_eq!(v["op"], "subscribe");
                break (v, None);
            }
            Some(Ok(_)) => continue,
            _ => return Ok(()),
        }
    };
    if opts.refuse {
        ws.send(answer(json!({"type":"error","id":sub["id"],"code":"too_many_symbols","message":"no"}), ack)).await?;
        return Ok(());
    }
    let wanted: Vec<String> = serde_json::from_value(sub["symbols"].clone())?;
    let (symbols, rejected): (Vec<String>, Vec<String>) = if wanted == ["*"] { (opts.symbols.clone(), vec![]) } else { wanted.into_iter().partition(|s| opts.symbols.contains(s)) };
    let rejected: Vec<Value> = rejected.iter().map(|s| json!({"symbol": s, "code": "unknown_symbol"})).collect();
    ws.send(answer(json!({"type":"subscribed","id":sub["id"],"throttle_ms":sub["throttle_ms"],"symbols":symbols,"rejected":rejected}), ack)).await?;
    if sio {
        ws.send(Message::text("2")).await?; // Engine.IO ping: the client must answer 3
        // What the client must take in its stride: an Engine.IO noop, an ack of a request it
        // never made, an event it does not know.
        ws.send(Message::text("6")).await?;
        ws.send(Message::text(r#"4399[{"ts":1}]"#)).await?;
        ws.send(Message::text(r#"42["subscriptions",{"symbols":[]}]"#)).await?;
    }
    let mut seqs: HashMap<String, u64> = symbols.iter().map(|s| (s.clone(), 100)).collect();
    if sub["snapshot"] == true {
        let quotes: Vec<Value> = symbols.iter().map(|s| quote(s, seqs[s], now_us())).collect();
        ws.send(wrap(json!({"type":"quotes","snapshot":true,"quotes":quotes}))).await?;
    }
    ws.send(wrap(json!({"type":"feed","name":"sim","quotes":5,"state":"running"}))).await?;
    // `"channels"` with `trades`: after each quotes frame, two trades of the first symbol in seq
    // order; every fifth frame, a gap of three seqs before them.
    let trades_on = sub["channels"].as_array().is_some_and(|c| c.iter().any(|c| c == "trades"));
    let mut trade_seq = 500u64;
    let mut tick = tokio::time::interval(opts.tick);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                if opts.close_after.is_some_and(|c| n > c) {
                    ws.close(None).await?;
                    return Ok(());
                }
                let dup = opts.dup_every.is_some_and(|d| n % d == 0);
                let quotes: Vec<Value> = symbols.iter().take(3).enumerate().map(|(i, s)| {
                    let seq = seqs.get_mut(s).unwrap();
                    if !(dup && i == 0) {
                        *seq += 1 + n % 3; // gaps, as throttling produces
                    }
                    quote(s, *seq, now_us())
                }).collect();
                ws.send(wrap(json!({"type":"quotes","quotes":quotes}))).await?;
                if trades_on && let Some(first) = symbols.first() {
                    if n % 5 == 0 {
                        let gap = json!({"type":"gap","channel":"trades","symbol":first,"from_seq":trade_seq + 1,"to_seq":trade_seq + 3});
                        ws.send(wrap(gap)).await?;
                        trade_seq += 3;
                    }
                    let trades = [trade(first, trade_seq + 1), trade(first, trade_seq + 2)];
                    trade_seq += 2;
                    ws.send(wrap(json!({"type":"trades","trades":trades}))).await?;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(_))) => {
                    closes.fetch_add(1, Ordering::Relaxed);
                    // tungstenite queues the close reply; flush it.
                    let _ = ws.flush().await;
                    return Ok(());
                }
                Some(Ok(Message::Text(t))) if t.as_str() == "3" => {
                    if let Some(p) = &sio_pongs {
                        p.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
        }
    }
}

/// `GET /sse?symbols=…&throttle_ms=…` as tickerfeed answers it: the messages of [`serve_ws`] as
/// events of a chunked stream, with `retry:` first and a keep-alive comment now and then. The
/// chunks are cut without regard for the events (an event over several chunks, several events
/// in one), so the client's decoder is exercised end to end.
async fn serve_sse(mut stream: tokio::net::TcpStream, opts: MockOpts) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8(req)?;
    let target = request.split(' ').nth(1).unwrap_or_default();
    let (mut wanted, mut throttle) = (Vec::<String>::new(), Value::Null);
    for pair in target.split_once('?').map_or("", |(_, q)| q).split('&') {
        match pair.split_once('=') {
            Some(("symbols", v)) => wanted.extend(v.split(',').map(percent_decode)),
            Some(("throttle_ms", v)) => throttle = json!(v.parse::<u64>()?),
            _ => {}
        }
    }
    if opts.refuse {
        let body = r#"{"error":"too_many_connections","message":"the server is at its limit of 0 connections"}"#;
        let resp = format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        stream.write_all(resp.as_bytes()).await?;
        return Ok(());
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n").await?;
    let mut pending = b"retry: 1000\n\n".to_vec();
    let event = |pending: &mut Vec<u8>, v: Value| {
        pending.extend_from_slice(format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap_or("message")).as_bytes());
    };
    let (symbols, rejected): (Vec<String>, Vec<String>) = if wanted == ["*"] { (opts.symbols.clone(), vec![]) } else { wanted.into_iter().partition(|s| opts.symbols.contains(s)) };
    let rejected: Vec<Value> = rejected.iter().map(|s| json!({"symbol": s, "code": "unknown_symbol"})).collect();
    event(
        &mut pending,
        json!({"type":"welcome","protocol":1,"server":"mock 0.0.0","instance":"mock-1","throttle_ms":250,"min_throttle_ms":0,"max_symbols":1000,"max_frame_bytes":16384}),
    );
    event(&mut pending, json!({"type":"subscribed","throttle_ms":throttle,"symbols":symbols,"rejected":rejected}));
    let mut seqs: HashMap<String, u64> = symbols.iter().map(|s| (s.clone(), 100)).collect();
    let quotes: Vec<Value> = symbols.iter().map(|s| quote(s, seqs[s], now_us())).collect();
    event(&mut pending, json!({"type":"quotes","snapshot":true,"quotes":quotes}));
    event(&mut pending, json!({"type":"feed","name":"sim","quotes":5,"state":"running"}));
    let mut sizes = [7usize, 300, 1, 4096].into_iter().cycle();
    let mut tick = tokio::time::interval(opts.tick);
    let mut n = 0u64;
    loop {
        // Cut what is pending into chunks of varying sizes, across event boundaries.
        let mut wire = Vec::new();
        let mut rest = &pending[..];
        while !rest.is_empty() {
            let k = sizes.next().unwrap_or(1).min(rest.len());
            wire.extend_from_slice(format!("{k:x}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..k]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[k..];
        }
        pending.clear();
        if stream.write_all(&wire).await.is_err() {
            return Ok(()); // the client closed
        }
        tick.tick().await;
        n += 1;
        if opts.close_after.is_some_and(|c| n > c) {
            stream.write_all(b"0\r\n\r\n").await?;
            return Ok(());
        }
        if n % 10 == 0 {
            pending.extend_from_slice(b": keep-alive\n\n");
        }
        let dup = opts.dup_every.is_some_and(|d| n % d == 0);
        let quotes: Vec<Value> = symbols
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, s)| {
                let seq = seqs.get_mut(s).unwrap();
                if !(dup && i == 0) {
                    *seq += 1 + n % 3;
                }
                quote(s, *seq, now_us())
            })
            .collect();
        event(&mut pending, json!({"type":"quotes","quotes":quotes}));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn args_for(mock: &Mock, extra: &[&str]) -> Args {
    args_with_url(&format!("ws://{}/ws", mock.addr), extra)
}

fn args_with_url(url: &str, extra: &[&str]) -> Args {
    let mut v = vec!["loadgen", "--url", url, "--quiet"];
    // Test defaults, unless the test sets the option itself.
    for (flag, value) in [("--duration", "1"), ("--warmup", "0.2"), ("--connect-rate", "0")] {
        if !extra.contains(&flag) {
            v.extend_from_slice(&[flag, value]);
        }
    }
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// End-to-end runs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_against_mock() {
    let mock = start_mock(MockOpts::default()).await;
    let args = args_for(&mock, &["--clients", "8", "--symbols", "4", "--throttle-ms", "0", "--stall", "2", "--stall-rcvbuf-kib", "4", "--probe-interval-ms", "200"]);
    let r = crate::run::run(&args).await.unwrap();
    eprintln!("{}", r.table());
    assert!(r.ok, "failures: {:?}", r.failures);
    assert_eq!(r.symbols_available, 20, "symbols fetched over HTTP (chunked)");
    assert_eq!((r.clients.connections.connected, r.clients.connections.failed, r.clients.connections.disconnected), (8, 0, 0));
    assert_eq!((r.clients.connections.stall_connected, r.clients.connections.stall_failed), (2, 0));
    assert_eq!(r.clients.connections.subscribed_symbols, 32);
    // The JSON keeps the `clients` object flat (the bench and monitoring scripts read it so).
    let clients = &serde_json::to_value(&r).unwrap()["clients"];
    for key in [
        "requested",
        "connected",
        "failed",
        "disconnected",
        "stall_requested",
        "stall_connected",
        "stall_failed",
        "ramp_s",
        "subscribed_symbols",
        "rejected_symbols",
        "delivering",
        "connect_errors",
        "disconnect_reasons",
        "rejected_examples",
    ] {
        assert!(clients.get(key).is_some(), "clients.{key} missing: {clients}");
    }
    assert_eq!((clients["connected"].as_u64(), clients["stall_connected"].as_u64()), (Some(8), Some(2)));
    assert!(clients.get("connections").is_none());
    assert_eq!(r.messages.ordering_errors, 0);
    assert_eq!(r.messages.feed, 8, "one feed message per reading connection (stalled ones never read it)");
    assert!(r.measured.quotes_live > 500, "quotes: {:?}", r.measured);
    assert!((r.measured.quotes_per_frame - 3.0).abs() < 1e-9);
    assert!(r.latency_ms.samples > 0 && r.latency_ms.samples <= r.measured.quotes_live + 100);
    assert!(r.latency_ms.p50 >= 0.0 && r.latency_ms.max < 1000.0);
    assert!(r.probe.count >= 3, "probes: {:?}", r.probe);
    assert_eq!(r.probe.ok, r.probe.count, "probes: {:?}", r.probe);
    assert!(r.probe.snapshot_p50_ms.is_some() && r.probe.welcome_max_ms.is_some());
    assert_eq!(r.server.welcome.as_ref().unwrap().instance.as_deref(), Some("mock-1"));
    // Every reader and stalled client (and every probe) sent a close frame.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.connections.load(Ordering::Relaxed), 10 + r.probe.count);
    assert!(mock.closes_received.load(Ordering::Relaxed) >= 8, "closes: {}", mock.closes_received.load(Ordering::Relaxed));
    let json: Value = serde_json::to_value(&r).unwrap();
    for key in ["ok", "clients", "measured", "latency_ms", "probe", "messages", "loadgen", "server_rss_mib"] {
        assert!(json.get(key).is_some(), "JSON lacks {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_channel_end_to_end_against_mock() {
    let mock = start_mock(MockOpts::default()).await;
    let pid = std::process::id().to_string();
    let r = crate::run::run(&args_for(&mock, &["--clients", "4", "--symbols", "3", "--throttle-ms", "0", "--channels", "quotes,trades", "--server-pid", &pid])).await.unwrap();
    let table = r.table();
    eprintln!("{table}");
    assert!(r.ok, "failures: {:?}", r.failures);
    assert_eq!(r.config.channels.as_deref(), Some(&["quotes".to_string(), "trades".to_string()][..]));
    let m = &r.measured;
    assert!(m.trades > 100 && m.trade_frames > 50, "trades: {m:?}");
    assert!((m.trades_per_frame - 2.0).abs() < 1e-9, "{m:?}");
    assert!(m.trades_lost > 0 && m.gap_msgs > 0 && m.trades_lost <= 3 * m.gap_msgs + 3, "{m:?}");
    assert!(m.trades_per_s > 0.0 && m.trades_per_server_cpu_s.is_some_and(|t| t > 0.0), "{m:?}");
    assert_eq!((r.messages.trade_order_errors, r.messages.ordering_errors, r.messages.parse_errors), (0, 0, 0));
    assert!(m.quotes_live > 100, "quotes still flow beside the trades");
    for line in ["trades/s", "trades lost (gap messages)", "trades per server CPU-s", "trade order errors"] {
        assert!(table.contains(line), "{line} missing from the table");
    }
    let json = serde_json::to_value(&r).unwrap();
    for key in ["trades", "trades_per_s", "trade_frames", "trades_lost", "trades_lost_pct", "gap_msgs", "trades_per_server_cpu_s"] {
        assert!(json["measured"].get(key).is_some(), "measured.{key} missing");
    }
    assert!(json["messages"]["trade_order_errors"].is_u64());
    // Socket.IO: the same events, named.
    let r = crate::run::run(&args_for(&mock, &["--clients", "2", "--symbols", "3", "--throttle-ms", "0", "--channels", "quotes,trades", "--protocol", "socketio"])).await.unwrap();
    assert!(r.ok && r.measured.trades > 50 && r.measured.trades_lost > 0, "{:?} {:?}", r.failures, r.measured);
    assert_eq!(r.messages.trade_order_errors, 0);
    // Without --channels nothing changes: no trades asked, none counted, nothing in the table.
    let r = crate::run::run(&args_for(&mock, &["--clients", "2", "--symbols", "3", "--throttle-ms", "0"])).await.unwrap();
    assert!(r.ok);
    assert_eq!((r.measured.trades, r.measured.gap_msgs, r.measured.trades_per_server_cpu_s), (0, 0, None));
    assert!(!r.table().contains("trades"), "{}", r.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_with_rss_and_symbol_list() {
    let mock = start_mock(MockOpts::default()).await;
    let pid = std::process::id().to_string();
    let args = args_for(&mock, &["--clients", "3", "--wildcard", "--symbol-list", "SYM1,SYM2", "--server-pid", &pid, "--probe-interval-ms", "0"]);
    let r = crate::run::run(&args).await.unwrap();
    assert!(r.ok, "failures: {:?}", r.failures);
    assert_eq!(r.symbols_available, 2);
    assert_eq!(r.clients.connections.subscribed_symbols, 60, "wildcard: all 20 mock symbols each");
    let rss = r.server_rss_mib.unwrap();
    assert!(rss.start.unwrap() > 0.0 && rss.max.unwrap() >= rss.start.unwrap());
    assert_eq!(r.probe.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_errors_fail_the_run() {
    let mock = start_mock(MockOpts { dup_every: Some(10), ..Default::default() }).await;
    let args = args_for(&mock, &["--clients", "2", "--symbols", "3", "--probe-interval-ms", "0"]);
    let r = crate::run::run(&args).await.unwrap();
    assert!(!r.ok);
    assert!(r.messages.ordering_errors > 0);
    assert!(r.failures.iter().any(|f| f.contains("seq")), "{:?}", r.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connects_and_disconnects_fail_the_run() {
    // Nothing listens on this port: every connect fails fast.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", dead.local_addr().unwrap());
    drop(dead);
    let args = Args::try_parse_from([
        "loadgen",
        "--url",
        &url,
        "--quiet",
        "--clients",
        "3",
        "--symbol-list",
        "A,B",
        "--symbols",
        "1",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--probe-interval-ms",
        "100",
    ])
    .unwrap();
    let r = crate::run::run(&args).await.unwrap();
    assert_eq!((r.clients.connections.connected, r.clients.connections.failed), (0, 3));
    assert!(!r.ok && r.failures.iter().any(|f| f.contains("failed")), "{:?}", r.failures);
    assert_eq!(r.probe.count, 0, "no probes when nothing connected");

    // The server refuses the subscription.
    let mock = start_mock(MockOpts { refuse: true, ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--clients", "2", "--probe-interval-ms", "0", "--duration", "0.2"])).await.unwrap();
    assert_eq!(r.clients.connections.failed, 2);
    assert!(r.clients.connections.connect_errors[0].contains("error"), "{:?}", r.clients.connections.connect_errors);

    // The server drops everyone shortly after subscribing.
    let mock = start_mock(MockOpts { close_after: Some(20), ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--clients", "2", "--probe-interval-ms", "0"])).await.unwrap();
    assert_eq!(r.clients.connections.disconnected, 2);
    assert!(!r.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_are_errors() {
    let r = crate::run::run(&Args::try_parse_from(["loadgen", "--url", "wss://x/ws", "--quiet"]).unwrap()).await;
    assert!(format!("{:#}", r.unwrap_err()).contains("wss"));
    let r = crate::run::run(&Args::try_parse_from(["loadgen", "--url", "http://x/ws", "--quiet"]).unwrap()).await;
    assert!(r.is_err());
    let mock = start_mock(MockOpts::default()).await;
    let r = crate::run::run(&args_for(&mock, &["--symbols", "50"])).await;
    assert!(format!("{:#}", r.unwrap_err()).contains("exceeds"));
    let r = crate::run::run(&args_for(&mock, &["--clients", "100000000"])).await;
    assert!(r.is_err());
}

#[test]
fn throttled_latency_and_staleness_through_process() {
    use crate::timing::ObserverLog;
    // Observer saw A: 10 @1.000 s, 11 @1.100 s, 12 @1.250 s, 13 @1.400 s.
    let log = Arc::new(ObserverLog::default());
    log.record(false, [("A", 10, 1_000_000), ("A", 11, 1_100_000), ("A", 12, 1_250_000), ("A", 13, 1_400_000)].into_iter());
    let mut st = WorkerStats::new();
    let mut seq = SeqTracker::default();
    seq.throttle_us = 200_000;
    seq.observer = Some(log);
    let frame_of = |s: u64, pt: i64| json!({"type":"quotes","quotes":[quote("A", s, pt)]}).to_string();
    // 10 received at 1.001 s: first delivery → throttled = plain = 1 ms; no staleness sample.
    frame::process(&frame_of(10, 1_000_000), &mut seq, &mut st, 1_001_000, true);
    // 13 received at 1.402 s: due max(1.4, 1.001 + 0.2) = 1.4 → throttled 2 ms; staleness
    // = 1.402 − pt(11) = 302 ms; last skipped 12 at 1.25 s ≤ 1.001 + 0.2 + 0.05 → explained.
    frame::process(&frame_of(13, 1_400_000), &mut seq, &mut st, 1_402_000, true);
    assert_eq!(st.latency_throttled.len(), 2);
    assert!(st.latency_throttled.equivalent(st.latency_throttled.max(), 2_000));
    assert!(st.latency_throttled.equivalent(st.latency_throttled.min(), 1_000));
    assert_eq!(st.staleness.len(), 1);
    assert!(st.staleness.equivalent(st.staleness.max(), 302_000));
    assert_eq!(st.counters.unexplained_gaps, 0);
    // 14 (unknown to the observer) published at 1.5 s, received 1.7 s: consecutive, so
    // staleness = 1.7 − 1.5 = 200 ms; throttled: due max(1.5, 1.402 + 0.2 = 1.602) → 98 ms.
    frame::process(&frame_of(14, 1_500_000), &mut seq, &mut st, 1_700_000, true);
    assert!(st.staleness.equivalent(st.staleness.min(), 200_000));
    assert_eq!(st.staleness.len(), 2);
    assert!(st.latency_throttled.equivalent(st.latency_throttled.max(), 98_000));
    // 17: 15 unknown to the observer → missing staleness and an unjudged gap.
    frame::process(&frame_of(17, 1_900_000), &mut seq, &mut st, 1_950_000, true);
    assert_eq!((st.counters.staleness_missing, st.counters.gap_unknown), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_against_mock() {
    let mock = start_mock(MockOpts::default()).await;
    let args = args_for(
        &mock,
        &[
            "--protocol",
            "socketio",
            "--clients",
            "4",
            "--symbols",
            "3",
            "--throttle-ms",
            "20",
            "--stall",
            "2",
            "--stall-rcvbuf-kib",
            "4",
            "--probe-interval-ms",
            "300",
            "--churn",
            "20",
        ],
    );
    assert!(args.observer_on(), "throttle > 0 turns the observer on");
    let r = crate::run::run(&args).await.unwrap();
    eprintln!("{}", r.table());
    assert!(r.ok, "failures: {:?}", r.failures);
    let c = &r.clients.connections;
    assert_eq!((c.connected, c.failed, c.disconnected, c.delivering), (4, 0, 0, 4));
    assert_eq!((c.stall_connected, c.stall_failed), (2, 0));
    // The ack of `subscribe` stands for `subscribed`: its symbols are counted.
    assert_eq!(c.subscribed_symbols, 12);
    assert_eq!((r.messages.subscribed, r.messages.feed, r.messages.parse_errors, r.messages.ordering_errors), (6, 4, 0, 0));
    // Per reader: the unknown event; the ping, the noop and the stray ack are housekeeping;
    // all counted as other messages.
    assert!(r.messages.other >= 4 * 4, "{:?}", r.messages);
    assert!(r.measured.quotes_live > 100, "quotes: {:?}", r.measured);
    assert!((r.measured.quotes_per_frame - 3.0).abs() < 1e-9, "{:?}", r.measured);
    assert!(r.latency_ms.samples > 0 && r.latency_throttled_ms.samples > 0);
    assert!(r.probe.ok >= 1 && r.probe.failed == 0, "{:?}", r.probe);
    let o = r.observer.as_ref().expect("observer");
    assert!(o.quotes > 0 && o.error.is_none(), "{o:?}");
    let ch = r.churn.as_ref().expect("churn");
    assert!(ch.attempted > 0 && ch.ok == ch.attempted && ch.failed == 0 && ch.unclean_closes == 0, "{ch:?}");
    // Every reader, the observer and the probes answered the ping.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mock.pongs.load(Ordering::Relaxed) >= 5);
    assert_eq!(r.server.welcome.as_ref().unwrap().instance.as_deref(), Some("mock-1"));
    assert_eq!(serde_json::to_value(&r).unwrap()["config"]["protocol"], "socketio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_wildcard_ordering_refusal_and_close() {
    let mock = start_mock(MockOpts::default()).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "socketio", "--clients", "2", "--wildcard", "--probe-interval-ms", "0"])).await.unwrap();
    assert!(r.ok, "failures: {:?}", r.failures);
    assert_eq!(r.clients.connections.subscribed_symbols, 40, "*: all 20 mock symbols each");

    let mock = start_mock(MockOpts { dup_every: Some(10), ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "socketio", "--clients", "2", "--symbols", "3", "--probe-interval-ms", "0"])).await.unwrap();
    assert!(!r.ok && r.messages.ordering_errors > 0, "{:?}", r.failures);

    // An error ack answering `subscribe` fails the client's setup and counts as an error.
    let mock = start_mock(MockOpts { refuse: true, ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "socketio", "--clients", "2", "--probe-interval-ms", "0", "--duration", "0.2"])).await.unwrap();
    assert_eq!(r.clients.connections.failed, 2);
    let e = &r.clients.connections.connect_errors[0];
    assert!(e.contains("server error instead of subscribed") && e.contains("too_many_symbols"), "{e}");
    assert_eq!(r.messages.error, 2, "{:?}", r.messages);

    let mock = start_mock(MockOpts { close_after: Some(20), ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "socketio", "--clients", "2", "--probe-interval-ms", "0"])).await.unwrap();
    assert_eq!(r.clients.connections.disconnected, 2);
    assert!(!r.ok);
}

#[test]
fn histogram_pairs_round_trip_and_merge() {
    use crate::multi::{ProcResult, merge, share};
    use crate::stats::ConnectionCounts;
    use crate::stats::{add_pairs, histogram_to_pairs, new_latency_histogram};
    let mut a = new_latency_histogram();
    let mut b = new_latency_histogram();
    for v in [1u64, 5, 1000, 1001, 250_000, 3_000_000] {
        a.record(v).unwrap();
    }
    for v in [7u64, 1000, 999_999] {
        b.record_n(v, 3).unwrap();
    }
    // Round trip is exact (same buckets, same counts).
    let mut back = new_latency_histogram();
    add_pairs(&mut back, &histogram_to_pairs(&a));
    assert_eq!(back, a);
    // Merging via pairs = merging histograms.
    let ra = ProcResult {
        latency: histogram_to_pairs(&a),
        measured: crate::stats::Counters { frames: 10, ..Default::default() },
        connections: ConnectionCounts { connected: 3, connect_errors: vec!["a".into(); 4], ..Default::default() },
        cpu_user_s: 0.9,
        threads: 1,
        ..Default::default()
    };
    let rb = ProcResult {
        latency: histogram_to_pairs(&b),
        measured: crate::stats::Counters { frames: 5, ..Default::default() },
        connections: ConnectionCounts { connected: 2, stall_connected: 1, connect_errors: vec!["b".into(); 4], ..Default::default() },
        cpu_user_s: 0.2,
        threads: 1,
        ramp_s: 2.5,
        ..Default::default()
    };
    let m = merge(&[ra, rb], 1.0, 80.0);
    let mut direct = a.clone();
    direct.add(&b).unwrap();
    assert_eq!(m.latency, direct);
    assert_eq!(m.latency.len(), 15);
    assert_eq!(m.measured.frames, 15);
    assert_eq!((m.connections.connected, m.connections.stall_connected), (5, 1));
    assert_eq!(m.connections.connect_errors, ["a", "a", "a", "a", "b"], "examples: the first five, in process order");
    assert_eq!(m.ramp_s, 2.5);
    assert!((m.cpu_user_s - 1.1).abs() < 1e-9);
    assert!((m.cpu_pct_max_process - 90.0).abs() < 1e-9);
    assert!(m.client_bound, "one process at 90 % of its one thread");
    // Client shares add up and differ by at most one.
    for (total, n) in [(10, 3), (200, 2), (5, 5), (7, 4)] {
        let v: Vec<usize> = (0..n).map(|k| share(total, n, k)).collect();
        assert_eq!(v.iter().sum::<usize>(), total);
        assert!(v.iter().max().unwrap() - v.iter().min().unwrap() <= 1);
    }
}

#[test]
fn child_arguments_round_trip() {
    let a = Args::try_parse_from(["loadgen", "--clients", "10", "--processes", "2", "--protocol", "socketio", "--throttle-ms", "200", "--symbols", "3"]).unwrap();
    a.validate().unwrap();
    let text = serde_json::to_string(&a).unwrap();
    let b: Args = serde_json::from_str(&text).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(b.protocol, crate::cli::Protocol::Socketio);
    assert!(Args::try_parse_from(["loadgen", "--processes", "3", "--clients", "2"]).unwrap().validate().is_err());
}

// ---------------------------------------------------------------------------------------------
// Server CPU, RSS series, churn and per-client delivery (the benchmark driver's inputs)

#[test]
fn proc_stat_cpu_fields() {
    // A command name with spaces and a ')' must not shift the fields.
    let stat = "1234 (tokio rt) x)) S 1 1234 1234 0 -1 4194560 5000 0 0 0 \
                731 269 0 0 20 0 3 0 100 1000000 2000 18446744073709551615";
    assert_eq!(sys::parse_stat_cpu_ticks(stat), Some((731, 269)));
    assert_eq!(sys::parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    assert_eq!(sys::parse_stat_cpu_ticks("garbage"), None);
    // Our own process: readable, and it does not go backwards.
    let pid = std::process::id();
    let a = sys::process_cpu_s(pid).expect("own /proc/PID/stat");
    let mut x = 0u64;
    for i in 0..3_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    assert!(sys::process_cpu_s(pid).unwrap() >= a);
    assert_eq!(sys::process_cpu_s(u32::MAX), None);
}

#[test]
fn rss_summary_series_and_window() {
    use tokio::time::Instant;
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(10);
    let mib = |m: u64| m * 1024 * 1024;
    let samples = [
        (t1 + Duration::from_secs(2), mib(60)),      // during --settle: not in the window
        (t0 - Duration::from_millis(1500), mib(20)), // ramp-up
        (t0 + Duration::from_secs(4), mib(50)),
        (t0 + Duration::from_secs(2), mib(42)),
    ];
    let r = crate::run::rss_summary(&samples, t0, t1, [Some(10.0), Some(40.0), Some(45.0), Some(41.0)]);
    assert_eq!(r.series.len(), 4);
    assert_eq!(r.series[0], [-1.5, 20.0], "sorted by time, relative to t0");
    assert_eq!(r.series[3], [12.0, 60.0]);
    assert_eq!((r.measured_min, r.measured_max), (Some(40.0), Some(50.0)), "window: start, end and samples inside only");
    assert_eq!(r.max, Some(60.0), "max covers the whole run");
    assert_eq!((r.before, r.start, r.end, r.after_settle), (Some(10.0), Some(40.0), Some(45.0), Some(41.0)));
}

#[test]
fn churn_failures_are_classified_and_counted() {
    use crate::client::{ChurnSample, failure_kind};
    for (msg, kind) in [
        ("timed out after 10s", "timeout"),
        ("TCP connect to 127.0.0.1:9: Connection refused (os error 111)", "connect"),
        ("WebSocket handshake: HTTP error: 503 Service Unavailable", "handshake"),
        ("server error reply: {\"type\":\"error\",\"code\":\"x\"}", "error_reply"),
        ("server closed the connection: 1001", "closed"),
        ("connection ended", "closed"),
        ("still running at the end of the measured period", "unfinished"),
        ("something else", "other"),
    ] {
        assert_eq!(failure_kind(msg), kind, "{msg}");
    }
    let ok = |ms: u64, clean: bool| ChurnSample { setup: Some(Duration::from_millis(ms)), error: None, clean_close: clean };
    let bad = |e: &str| ChurnSample { setup: None, error: Some(e.into()), clean_close: false };
    let samples = [ok(3, true), ok(1, true), ok(2, false), bad("timed out after 1s"), bad("WebSocket handshake: HTTP error: 503"), bad("WebSocket handshake: HTTP error: 503")];
    let s = crate::background::churn_stats(100.0, 7, &samples, 2.0);
    assert_eq!((s.attempted, s.ok, s.failed), (7, 3, 3));
    assert_eq!(s.attempted_per_s, 3.5);
    assert_eq!(s.failure_kinds.get("handshake"), Some(&2));
    assert_eq!(s.failure_kinds.get("timeout"), Some(&1));
    assert_eq!(s.errors.len(), 3);
    assert_eq!(s.unclean_closes, 1, "failed ones do not count as unclean");
    assert_eq!((s.setup_p50_ms, s.setup_max_ms), (Some(2.0), Some(3.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_settle_server_cpu_and_delivery_against_mock() {
    let mock = start_mock(MockOpts::default()).await;
    // The mock runs in this process: its CPU and RSS are ours.
    let pid = std::process::id().to_string();
    let args = args_for(&mock, &["--clients", "5", "--symbols", "3", "--throttle-ms", "0", "--probe-interval-ms", "0", "--churn", "40", "--settle", "0.3", "--server-pid", &pid]);
    let r = crate::run::run(&args).await.unwrap();
    eprintln!("{}", r.table());
    assert!(r.ok, "failures: {:?}", r.failures);
    assert_eq!(r.clients.connections.delivering, 5, "every client got live quotes");
    let ch = r.churn.as_ref().expect("churn stats");
    // 40/s over a 1 s window, on a fixed schedule.
    assert!((35..=45).contains(&ch.attempted), "attempted {}", ch.attempted);
    assert_eq!((ch.ok, ch.failed), (ch.attempted, 0), "{ch:?}");
    assert_eq!(ch.unclean_closes, 0, "{ch:?}");
    assert!(ch.setup_p50_ms.is_some());
    // Churn connections are not clients: their traffic is not counted.
    assert_eq!(r.clients.connections.connected, 5);
    assert_eq!(r.messages.subscribed, 5);
    let cpu = r.server.cpu_s.expect("server CPU");
    assert!(cpu > 0.0 && cpu < 10.0, "cpu {cpu}");
    assert!(r.server.cpu_pct.unwrap() > 0.0);
    let q = r.measured.quotes_per_server_cpu_s.expect("headline figure");
    assert!((q - r.measured.quotes as f64 / cpu).abs() < 1e-6);
    let rss = r.server_rss_mib.as_ref().unwrap();
    assert!(rss.before.is_some() && rss.after_settle.is_some());
    assert!(rss.series.len() >= 2, "samples: {:?} (one per second plus the named ones)", rss.series);
    assert!(rss.measured_min.unwrap() <= rss.measured_max.unwrap());
    // The churn connections closed with a handshake the mock saw.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mock.closes_received.load(Ordering::Relaxed) as u64 >= ch.ok);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["server"]["cpu_s"].is_number());
    assert_eq!(json["server"]["instance"], "mock-1", "welcome fields stay at the top of `server`");
    assert!(json["measured"]["quotes_per_server_cpu_s"].is_number());
    assert!(json["server_rss_mib"]["series"].is_array());
    assert!(json["churn"]["failure_kinds"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_without_quotes_are_not_delivering() {
    // A mock whose live frames come far apart: nothing arrives in the 0.5 s window.
    let mock = start_mock(MockOpts { tick: Duration::from_secs(3600), ..Default::default() }).await;
    let base = ["--clients", "3", "--symbols", "2", "--probe-interval-ms", "0", "--duration", "0.5"];
    let r = crate::run::run(&args_for(&mock, &base)).await.unwrap();
    assert_eq!((r.clients.connections.connected, r.clients.connections.delivering), (3, 0));
    assert!(r.warnings.iter().any(|w| w.contains("no live quotes")), "{:?}", r.warnings);
    let mut idle = base.to_vec();
    idle.push("--idle");
    let r = crate::run::run(&args_for(&mock, &idle)).await.unwrap();
    assert!(r.ok && r.config.idle);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn http_response_completeness() {
    use crate::net::response_complete;
    assert!(!response_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"));
    assert!(!response_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"));
    assert!(response_complete(b"HTTP/1.1 200 OK\r\ncontent-length:5\r\n\r\nabcde"));
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    assert!(!response_complete(chunked));
    assert!(response_complete(&[&chunked[..], b"0\r\n\r\n"].concat()));
    // Neither: only the server's close ends the body.
    assert!(!response_complete(b"HTTP/1.0 200 OK\r\n\r\nbody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_feed_posts_once_after_every_client_is_subscribed() {
    let mock = start_mock(MockOpts::default()).await;
    let base = ["--clients", "4", "--symbols", "2", "--probe-interval-ms", "0"];
    let mut with = base.to_vec();
    with.extend(["--resume-feed", "/api/feeds/replay/control"]);
    let r = tokio::time::timeout(Duration::from_secs(20), crate::run::run(&args_for(&mock, &with))).await.expect("the POST must not wait for the server to close").unwrap();
    assert!(r.ok, "{:?}", r.failures);
    assert_eq!(mock.resumes.load(Ordering::Relaxed), 1);
    assert_eq!(r.config.resume_feed.as_deref(), Some("/api/feeds/replay/control"));
    // A server that does not know the path: the run cannot be measured.
    let mut bad = base.to_vec();
    bad.extend(["--resume-feed", "/api/feeds/nope/control"]);
    let e = crate::run::run(&args_for(&mock, &bad)).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("--resume-feed /api/feeds/nope/control") && msg.contains("404"), "{msg}");
    assert_eq!(mock.resumes.load(Ordering::Relaxed), 1);
    let e = Args::try_parse_from(["loadgen", "--resume-feed", "api/x"]).unwrap().validate().unwrap_err();
    assert!(e.to_string().contains("--resume-feed"), "{e}");
}

#[test]
fn children_leave_churn_resume_and_server_to_the_parent() {
    let a = Args::try_parse_from([
        "loadgen",
        "--clients",
        "5",
        "--processes",
        "2",
        "--resume-feed",
        "/api/feeds/replay/control",
        "--churn",
        "10",
        "--settle",
        "3",
        "--server-pid",
        "42",
        "--stall",
        "7",
        "--connect-rate",
        "1000",
    ])
    .unwrap();
    let c = crate::multi::child_share(&a, 1, 3, "/tmp/x.json".into());
    assert_eq!((c.clients, c.client_offset, c.clients_total), (2, 3, 5));
    assert_eq!((c.churn, c.stall, c.server_pid), (0.0, 0, None));
    assert_eq!(c.resume_feed, None, "one resume, by the parent");
    assert_eq!(c.settle, 3.0, "children stay connected while the parent settles");
    assert_eq!(c.connect_rate, 500.0);
    c.validate().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events (--protocol sse)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_against_mock() {
    let mock = start_mock(MockOpts::default()).await;
    let url = format!("http://{}/sse", mock.addr);
    let args = args_with_url(
        &url,
        &["--protocol", "sse", "--clients", "6", "--symbols", "3", "--throttle-ms", "20", "--stall", "2", "--stall-rcvbuf-kib", "4", "--probe-interval-ms", "300", "--churn", "20"],
    );
    assert!(args.observer_on(), "throttle > 0 turns the observer on");
    let r = crate::run::run(&args).await.unwrap();
    eprintln!("{}", r.table());
    assert!(r.ok, "failures: {:?}", r.failures);
    let c = &r.clients.connections;
    assert_eq!((c.connected, c.failed, c.disconnected, c.delivering), (6, 0, 0, 6));
    assert_eq!((c.stall_connected, c.stall_failed), (2, 0));
    assert_eq!(c.subscribed_symbols, 18, "the subscribed event confirms the request's symbols");
    // The same counting as /ws: one subscribed per reader and stalled client, one feed message
    // per reader, no parse errors, seq in order.
    assert_eq!((r.messages.feed, r.messages.subscribed, r.messages.parse_errors, r.messages.ordering_errors), (6, 8, 0, 0));
    // retry: and the keep-alive comments are housekeeping, counted as other messages.
    assert!(r.messages.other >= 6, "{:?}", r.messages);
    assert!(r.measured.quotes_live > 100, "quotes: {:?}", r.measured);
    assert!((r.measured.quotes_per_frame - 3.0).abs() < 1e-9, "{:?}", r.measured);
    // Bytes are the event blocks: more than the JSON alone.
    assert!(r.measured.bytes > r.measured.quote_frames * 200, "{:?}", r.measured);
    assert!(r.latency_ms.samples > 0 && r.latency_throttled_ms.samples > 0);
    assert!(r.probe.ok >= 1 && r.probe.failed == 0, "{:?}", r.probe);
    let o = r.observer.as_ref().expect("observer");
    assert!(o.quotes > 0 && o.error.is_none(), "{o:?}");
    let ch = r.churn.as_ref().expect("churn");
    assert!(ch.attempted > 0 && ch.ok == ch.attempted && ch.failed == 0 && ch.unclean_closes == 0, "{ch:?}");
    assert_eq!(r.server.welcome.as_ref().unwrap().instance.as_deref(), Some("mock-1"));
    assert_eq!(serde_json::to_value(&r).unwrap()["config"]["protocol"], "sse");
    assert_eq!(mock.connections.load(Ordering::Relaxed) as u64, 6 + 2 + 1 + r.probe.count as u64 + ch.attempted, "readers, stalled, observer, probes, churn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_wildcard_ordering_refusal_and_end_of_stream() {
    // A ws:// URL: the stream is at /sse on its host and port.
    let mock = start_mock(MockOpts::default()).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "sse", "--clients", "2", "--wildcard", "--probe-interval-ms", "0"])).await.unwrap();
    assert!(r.ok, "failures: {:?}", r.failures);
    assert_eq!(r.clients.connections.subscribed_symbols, 40, "symbols=*: all 20 mock symbols each");

    let mock = start_mock(MockOpts { dup_every: Some(10), ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "sse", "--clients", "2", "--symbols", "3", "--probe-interval-ms", "0"])).await.unwrap();
    assert!(!r.ok && r.messages.ordering_errors > 0, "{:?}", r.failures);

    let mock = start_mock(MockOpts { refuse: true, ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "sse", "--clients", "2", "--probe-interval-ms", "0", "--duration", "0.2"])).await.unwrap();
    assert_eq!(r.clients.connections.failed, 2);
    let e = &r.clients.connections.connect_errors[0];
    assert!(e.contains("SSE request refused: HTTP/1.1 503") && e.contains("too_many_connections"), "{e}");
    assert_eq!(crate::client::failure_kind(e), "handshake");

    let mock = start_mock(MockOpts { close_after: Some(20), ..Default::default() }).await;
    let r = crate::run::run(&args_for(&mock, &["--protocol", "sse", "--clients", "2", "--probe-interval-ms", "0"])).await.unwrap();
    assert_eq!(r.clients.connections.disconnected, 2);
    assert!(r.clients.connections.disconnect_reasons[0].contains("the server ended the event stream"), "{:?}", r.clients.connections.disconnect_reasons);
    assert!(!r.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_options_are_checked() {
    let e = Args::try_parse_from(["loadgen", "--protocol", "sse", "--no-snapshot"]).unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("--no-snapshot") && e.contains("sse"), "{e}");
    let run = |argv: &'static [&'static str]| async move { format!("{:#}", crate::run::run(&Args::try_parse_from(argv).unwrap()).await.unwrap_err()) };
    let e = run(&["loadgen", "--quiet", "--url", "http://127.0.0.1:1/ws"]).await;
    assert!(e.contains("--protocol sse"), "{e}");
    let e = run(&["loadgen", "--quiet", "--protocol", "sse", "--url", "http://127.0.0.1:1/sse?symbols=A"]).await;
    assert!(e.contains("query string is the subscription"), "{e}");
    let e = run(&["loadgen", "--quiet", "--protocol", "sse", "--url", "https://127.0.0.1:1/sse"]).await;
    assert!(e.contains("TLS"), "{e}");
    let t = net::Target::resolve("http://127.0.0.1:9/feeds/sse", 1024, crate::cli::Protocol::Sse).await.unwrap();
    assert_eq!((t.sse_path.as_str(), t.http_base().as_str()), ("/feeds/sse", "http://127.0.0.1:9"));
    let t = net::Target::resolve("ws://127.0.0.1:9/ws", 1024, crate::cli::Protocol::Sse).await.unwrap();
    assert_eq!(t.sse_path, "/sse");
}
