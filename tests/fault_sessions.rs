//! Injected faults that act on sessions (`disconnect`, `stall`, `delay`, `duplicate`), as a
//! real WebSocket client observes them: close codes and dropped connections, silences, late
//! quotes, repeated seqs; and which sessions a `fraction` hits, the same in every run of a seed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, EVENT_TIMEOUT, http_json, start};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tickerfeed::server::RunningServer;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// A client subscribed to AAPL at throttle 0, and its session id.
async fn subscribed(server: &RunningServer) -> (Client, u64) {
    let (mut client, welcome) = Client::connect_welcomed(server).await;
    assert_eq!(welcome["faults"], true, "welcome says faults are injected: {welcome}");
    client.send(json!({"op":"subscribe","symbols":["AAPL"],"throttle_ms":0})).await;
    client.recv_type("subscribed").await;
    client.recv_type("quotes").await;
    let session = welcome["session"].as_str().unwrap().parse().unwrap();
    (client, session)
}

async fn inject(server: &RunningServer, fault: Value) -> Value {
    let (status, body) = http_json(server, "POST", "/api/faults", Some(&fault.to_string())).await;
    assert_eq!(status, 201, "fault {fault} added: {body}");
    body
}

/// The seqs of AAPL in a quotes message, in order.
fn seqs(message: &Value) -> Vec<u64> {
    message["quotes"].as_array().map_or_else(Vec::new, |quotes| quotes.iter().filter(|q| q["symbol"] == "AAPL").map(|q| q["seq"].as_u64().unwrap()).collect())
}

/// Reads until the connection ends; whether a close frame came first (and its code).
async fn ending(client: &mut Client) -> Option<u16> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, client.ws.next()).await.expect("the connection ends in time") {
            Some(Ok(Message::Close(frame))) => return Some(frame.map_or(1005, |f| f.code.into())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[actix_web::test]
async fn disconnect_closes_with_the_code_or_drops_the_connection() {
    let server = start(&["--faults"]).await;
    let (mut closed, id) = subscribed(&server).await;
    let (mut dropped, other) = subscribed(&server).await;
    let (mut bystander, _) = subscribed(&server).await;
    inject(&server, json!({"kind":"disconnect","session":id,"code":4000})).await;
    assert_eq!(ending(&mut closed).await, Some(4000), "closed with the fault's code");
    inject(&server, json!({"kind":"disconnect","session":other})).await;
    assert_eq!(ending(&mut dropped).await, None, "dropped with no close frame");
    bystander.send(json!({"op":"ping","id":5})).await;
    assert_eq!(bystander.recv_type("pong").await["id"], 5, "a session the fault does not target goes on");
    let (_, metrics) = common::http(&server, "GET", "/metrics", None).await;
    assert_eq!(common::metric(&metrics, "tickerfeed_faults_injected_total{kind=\"disconnect\"}"), 2.0);
    // Counted when each session has finished closing (the code's waits for the client's answer).
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, metrics) = common::http(&server, "GET", "/metrics", None).await;
        if common::metric(&metrics, "tickerfeed_disconnects_total{reason=\"fault\"}") >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "both ends counted with reason fault");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn stall_is_silence_then_the_latest_state() {
    let server = start(&["--faults"]).await;
    let (mut client, id) = subscribed(&server).await;
    inject(&server, json!({"kind":"stall","session":id,"ms":1500})).await;
    let injected = Instant::now();
    let mut last = injected;
    let mut longest = Duration::ZERO;
    // Quotes of AAPL come about every 100 ms: a silence of 1.5 s is the stall.
    while last.duration_since(injected) < Duration::from_millis(2500) {
        let message = client.recv().await;
        let now = Instant::now();
        longest = longest.max(now.duration_since(last));
        last = now;
        if message["type"] == "quotes" {
            assert!(!seqs(&message).is_empty());
        }
    }
    assert!(longest >= Duration::from_millis(1300), "a silence of about 1.5 s, found {longest:?}");
    assert!(longest < Duration::from_millis(2400), "then output resumes, silence was {longest:?}");
    server.shutdown().await;
}

#[actix_web::test]
async fn delay_holds_every_delivery_for_its_duration() {
    let server = start(&["--faults"]).await;
    let (mut client, id) = subscribed(&server).await;
    inject(&server, json!({"kind":"delay","session":id,"ms":800,"for":"3s"})).await;
    // While it lasts, a quote arrives at least 800 ms after it was published (`pt`, µs).
    let injected = Instant::now();
    let mut late = 0;
    while injected.elapsed() < Duration::from_millis(2500) {
        let message = client.recv().await;
        if message["type"] != "quotes" || injected.elapsed() < Duration::from_millis(900) {
            continue;
        }
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        let age_ms = (now_us - message["quotes"][0]["pt"].as_i64().unwrap()) / 1000;
        assert!(age_ms >= 750, "a quote {age_ms} ms old while the delay lasts");
        late += 1;
    }
    assert!(late > 3, "quotes kept coming, late: {late}");
    // After `for`, and the held ones out, quotes are fresh again.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let message = client.recv_type("quotes").await;
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        if (now_us - message["quotes"][0]["pt"].as_i64().unwrap()) / 1000 < 200 {
            break;
        }
        assert!(Instant::now() < deadline, "quotes are fresh again after the delay");
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn duplicate_repeats_exactly_count_quotes() {
    let server = start(&["--faults"]).await;
    let (mut client, id) = subscribed(&server).await;
    inject(&server, json!({"kind":"duplicate","session":id,"symbol":"AAPL","count":3})).await;
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let message = client.recv().await;
        for seq in seqs(&message) {
            *seen.entry(seq).or_default() += 1;
        }
    }
    let twice: Vec<u64> = seen.iter().filter(|(_, n)| **n == 2).map(|(seq, _)| *seq).collect();
    assert_eq!(twice.len(), 3, "three quotes sent twice: {twice:?}");
    assert!(seen.values().all(|n| *n <= 2));
    server.shutdown().await;
}

/// Which of ten sessions a `fraction: 0.5` disconnect hits, in a fresh server with `seed`.
async fn hit_by_fraction(seed: &str) -> Vec<u64> {
    let server = start(&["--faults", "--seed", seed]).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(subscribed(&server).await);
    }
    inject(&server, json!({"kind":"disconnect","fraction":0.5,"code":4001})).await;
    // A hit session is closed at once; a missed one still answers.
    let mut hit = Vec::new();
    for (client, id) in &mut clients {
        client.send(json!({"op":"ping","id":1})).await;
        loop {
            match client.next_message().await {
                Message::Close(frame) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(4001));
                    hit.push(*id);
                    break;
                }
                Message::Text(text) if text.contains("\"pong\"") => break,
                _ => {}
            }
        }
    }
    server.shutdown().await;
    hit
}

#[actix_web::test]
async fn a_fraction_hits_the_same_sessions_in_every_run_of_a_seed() {
    let first = hit_by_fraction("11").await;
    assert!(!first.is_empty() && first.len() < 10, "about half of ten: {first:?}");
    assert_eq!(hit_by_fraction("11").await, first, "the same seed hits the same sessions");
}
