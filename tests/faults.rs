//! Fault injection against the real server (docs/FAULTS.md): `/api/faults` refused without
//! `--faults`, its answers with it, a bad `--fault` stopping the binary, and what a real client
//! observes of `gap`, `feed_stall` and `reject_connect`.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, EVENT_TIMEOUT, http_json, metric, start};
use serde_json::{Value, json};

/// POSTs a fault; the status and the answer.
async fn add(server: &tickerfeed::server::RunningServer, spec: Value) -> (u16, Value) {
    http_json(server, "POST", "/api/faults", Some(&spec.to_string())).await
}

#[actix_web::test]
async fn the_api_is_refused_without_faults() {
    let server = start(&[]).await;
    for (method, path) in [("GET", "/api/faults"), ("POST", "/api/faults"), ("DELETE", "/api/faults"), ("DELETE", "/api/faults/1")] {
        let (status, body) = http_json(&server, method, path, Some(r#"{"kind":"disconnect"}"#)).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("faults_disabled")), "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains("--faults"), "{body}");
    }
    // Without --faults no fault can refuse a connection either.
    Client::connect_welcomed(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn faults_are_added_listed_posted_back_and_deleted() {
    let server = start(&["--faults"]).await;
    let (status, empty) = http_json(&server, "GET", "/api/faults", None).await;
    assert_eq!((status, &empty["faults"], &empty["active"]), (200, &json!([]), &json!(false)));

    let (status, fault) = add(&server, json!({"kind":"stall","ms":100,"every":"1h","for":"2h"})).await;
    assert_eq!(status, 201, "{fault}");
    assert_eq!((fault["id"].as_u64(), fault["kind"].as_str(), fault["fired"].as_u64()), (Some(1), Some("stall"), Some(1)), "{fault}");
    assert!(fault["expires_at"].as_u64().is_some(), "{fault}");

    // What GET lists posts back as it is: the same spec, a new id.
    let (_, listed) = http_json(&server, "GET", "/api/faults", None).await;
    assert_eq!(listed["active"], true);
    let first = listed["faults"][0].clone();
    assert_eq!(listed["log"][0]["id"], 1, "{listed}");
    let (status, again) = add(&server, first.clone()).await;
    assert_eq!((status, again["id"].as_u64()), (201, Some(2)), "{again}");
    for key in ["kind", "ms", "every", "for"] {
        assert_eq!(again[key], first[key], "{key}");
    }

    let (status, deleted) = http_json(&server, "DELETE", "/api/faults/1", None).await;
    assert_eq!((status, deleted["id"].as_u64()), (200, Some(1)));
    let (status, body) = http_json(&server, "DELETE", "/api/faults/1", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_fault")), "{body}");
    let (status, body) = http_json(&server, "DELETE", "/api/faults/nope", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_fault")), "{body}");

    // A bad spec: 400 naming the field.
    for (spec, named) in [
        (json!({"kind":"gap","count":3}), "'symbol'"),
        (json!({"kind":"stall","ms":5,"symbol":"AAPL"}), "'symbol'"),
        (json!({"kind":"gap","symbol":"NOPE"}), "'NOPE'"),
        (json!({"kind":"explode"}), "'kind'"),
        (json!({"kind":"delay","ms":5,"for":"10"}), "'for'"),
    ] {
        let (status, body) = add(&server, spec.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{spec}: {body}");
        assert!(body["message"].as_str().unwrap().contains(named), "{spec}: {body}");
    }
    let (status, body) = http_json(&server, "POST", "/api/faults", Some("{")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");

    // At most 64 active: one more is 409.
    for _ in 0..63 {
        assert_eq!(add(&server, json!({"kind":"stall","ms":1,"every":"1h"})).await.0, 201);
    }
    let (status, body) = add(&server, json!({"kind":"stall","ms":1,"every":"1h"})).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("too_many_faults")), "{body}");
    let (status, body) = http_json(&server, "DELETE", "/api/faults", None).await;
    assert_eq!((status, body["deleted"].as_u64()), (200, Some(64)));
    let (_, listed) = http_json(&server, "GET", "/api/faults", None).await;
    assert_eq!((listed["faults"].as_array().map(Vec::len), &listed["active"]), (Some(0), &json!(false)));
    server.shutdown().await;
}

#[test]
fn a_bad_fault_flag_stops_the_binary_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickerfeed")).args(["--bind", "127.0.0.1:0", "--fault", "gap:count=3"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--fault: 'gap:count=3': symbol: gap needs 'symbol'"), "{stderr}");

    // Well formed, but no feed publishes the symbol: found at start, once the feeds run.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tickerfeed"))
        .args(["--bind", "127.0.0.1:0", "--fault", "gap:symbol=NOPE"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server started with a fault naming an unknown symbol");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("fault 'gap:symbol=NOPE'") && stderr.contains("no feed publishes 'NOPE'"), "{stderr}");
}

/// A replay of one symbol, `TST`, a row every 20 ms: its quotes come one by one, so a client at
/// throttle 0 sees every seq.
fn one_symbol_replay() -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    writeln!(file, "timestamp,symbol,price,size").unwrap();
    for i in 0..5000 {
        writeln!(file, "2024-01-02T{:02}:{:02}:{:02}Z,TST,{}.00,100", 10 + i / 3600, (i / 60) % 60, i % 60, 100 + i % 7).unwrap();
    }
    file
}

#[actix_web::test]
async fn a_gap_shows_as_a_seq_jump_of_count_plus_one() {
    let file = one_symbol_replay();
    let server = start(&["--faults", "--replay", file.path().to_str().unwrap(), "--interval-ms", "20"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["TST"],"throttle_ms":0})).await;
    client.recv_type("subscribed").await;
    let mut seqs: Vec<u64> = Vec::new();
    let mut added = false;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, client.recv()).await.expect("quotes in time");
        if frame["type"] != "quotes" || frame["snapshot"] == true {
            continue;
        }
        seqs.extend(frame["quotes"].as_array().unwrap().iter().map(|q| q["seq"].as_u64().unwrap()));
        if !added && seqs.len() >= 5 {
            let (status, fault) = add(&server, json!({"kind":"gap","symbol":"TST","count":3})).await;
            assert_eq!(status, 201, "{fault}");
            added = true;
        }
        if seqs.windows(2).any(|pair| pair[1] != pair[0] + 1) && seqs.len() >= 12 {
            break;
        }
    }
    let jumps: Vec<(u64, u64)> = seqs.windows(2).filter(|pair| pair[1] != pair[0] + 1).map(|pair| (pair[0], pair[1])).collect();
    assert_eq!(jumps.len(), 1, "one gap: {seqs:?}");
    assert_eq!(jumps[0].1 - jumps[0].0, 4, "3 quotes skipped: the seq jumps by 4: {seqs:?}");
    let (_, scrape) = common::http(&server, "GET", "/metrics", None).await;
    assert_eq!(metric(&scrape, "tickerfeed_faults_injected_total{kind=\"gap\"}"), 1.0);
    server.shutdown().await;
}

#[actix_web::test]
async fn a_feed_stall_is_silence_for_its_duration_with_no_feed_event() {
    let server = start(&["--faults", "--sim-rate", "1000"]).await;
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0})).await;
    client.recv_type("subscribed").await;
    client.recv_type("quotes").await;
    let (status, fault) = add(&server, json!({"kind":"feed_stall","feed":"sim","for":"1s"})).await;
    assert_eq!(status, 201, "{fault}");
    let added = Instant::now();
    // Quotes published before the firing may still be on their way; then nothing until the
    // stall ends.
    let resumed = loop {
        let frame = tokio::time::timeout(Duration::from_secs(3), client.recv()).await.expect("quotes again after the stall");
        assert_ne!(frame["type"], "feed", "a feed stall sends no feed event: {frame}");
        if frame["type"] == "quotes" && added.elapsed() > Duration::from_millis(200) {
            break added.elapsed();
        }
    };
    assert!(resumed >= Duration::from_millis(950) && resumed < Duration::from_millis(1800), "quotes resumed {resumed:?} after the stall began");
    let (_, feeds) = http_json(&server, "GET", "/api/feeds", None).await;
    assert_eq!(feeds[0]["state"], "running", "the feed never said it stopped");
    let (_, listed) = http_json(&server, "GET", "/api/faults", None).await;
    assert_eq!(listed["faults"], json!([]), "removed when 'for' elapsed");
    assert_eq!(listed["log"][0]["kind"], "feed_stall");
    server.shutdown().await;
}

#[actix_web::test]
async fn reject_connect_refuses_exactly_its_count_with_503() {
    let server = start(&["--faults"]).await;
    let (status, fault) = add(&server, json!({"kind":"reject_connect","count":2})).await;
    assert_eq!((status, fault["remaining"].as_u64()), (201, Some(2)), "{fault}");
    for _ in 0..2 {
        let request = common::raw::Raw::upgrade_request(&server, "/ws", "");
        let refused = common::http_raw(&server, request.as_bytes()).await;
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert_eq!(refused.header("retry-after"), Some("1"));
        let body = refused.json("refusal");
        assert_eq!(body["error"], "fault_injected");
        assert!(body["message"].as_str().unwrap().contains("fault 1"), "{body}");
    }
    Client::connect_welcomed(&server).await;
    let (_, scrape) = common::http(&server, "GET", "/metrics", None).await;
    assert_eq!(metric(&scrape, "tickerfeed_faults_injected_total{kind=\"reject_connect\"}"), 2.0);
    assert_eq!(metric(&scrape, "tickerfeed_disconnects_total{reason=\"fault\"}"), 2.0);
    assert_eq!(metric(&scrape, "tickerfeed_faults_injected_total{kind=\"disconnect\"}"), 0.0, "every kind's series exists");
    let (_, listed) = http_json(&server, "GET", "/api/faults", None).await;
    assert_eq!(listed["faults"], json!([]), "used up");
    server.shutdown().await;
}

#[actix_web::test]
async fn faults_given_at_start_are_active_at_once() {
    let server = start(&["--fault", "reject_connect:count=1,for=1h", "--fault", "stall:ms=10,every=1h"]).await;
    let (status, listed) = http_json(&server, "GET", "/api/faults", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = listed["faults"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reject_connect", "stall"]);
    server.shutdown().await;
}
