//! `--seed N`: the same seed and configuration give the same sequence of (symbol, seq, last).

mod common;

use std::collections::BTreeMap;

use common::{Client, start};
use serde_json::json;

/// The first `per_symbol` (seq, last) pairs of every symbol, as a client that keeps up sees them.
async fn sequence(seed: &str, per_symbol: u64) -> BTreeMap<String, Vec<(u64, f64)>> {
    // 300 quotes/s over ~100 symbols: a reading client receives every quote, none merged.
    let server = start(&["--seed", seed, "--sim-rate", "300", "--sim"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0,"snapshot":true})).await;
    client.recv_type("subscribed").await;
    let mut seen: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    let wanted = ["AAPL", "MSFT", "JPM", "XOM"];
    while wanted.iter().any(|s| seen.get(*s).map_or(0, |v| v.len() as u64) < per_symbol) {
        let frame = client.recv_type("quotes").await;
        for quote in frame["quotes"].as_array().unwrap() {
            let symbol = quote["symbol"].as_str().unwrap().to_string();
            seen.entry(symbol).or_default().push((quote["seq"].as_u64().unwrap(), quote["last"].as_f64().unwrap()));
        }
    }
    server.shutdown().await;
    // The snapshot may have started a symbol mid-way: compare from seq 1 on, which a client
    // subscribed from the start gets in full.
    seen.into_iter()
        .filter(|(s, _)| wanted.contains(&s.as_str()))
        .map(|(s, v)| {
            let from_start: Vec<(u64, f64)> = v.into_iter().filter(|(seq, _)| *seq <= per_symbol).collect();
            (s, from_start)
        })
        .collect()
}

#[actix_web::test]
async fn same_seed_same_sequence() {
    let first = sequence("1234", 5).await;
    let second = sequence("1234", 5).await;
    let other = sequence("99", 5).await;
    for (symbol, quotes) in &first {
        // A symbol's seqs 1..=5 all arrive in order, none merged away.
        let seqs: Vec<u64> = quotes.iter().map(|q| q.0).collect();
        assert_eq!(seqs, (1..=5).collect::<Vec<_>>(), "{symbol}: {quotes:?}");
    }
    assert_eq!(first, second, "the same seed gives the same (symbol, seq, last) sequence");
    assert_ne!(first, other, "another seed gives another sequence");
}
