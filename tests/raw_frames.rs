//! What an outside client can do with raw bytes: frames no library would send, floods written
//! in one go, and upgrade requests no browser would make. Each test here is a defect an outside
//! probe found (issue 11); the server must refuse or answer as RFC 6455 says, hold nothing it
//! does not need, and keep every other client unaware. (The huge-frame test, which measures
//! this process's memory, has a test binary of its own: `tests/huge_frame.rs`.)

mod common;

use std::time::Duration;

use common::raw::{MASK, Raw, disconnects, frame, length_field, text};
use common::{EVENT_TIMEOUT, assert_others_unaffected, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[actix_web::test]
async fn a_frame_over_the_limit_is_refused_before_its_payload_and_fragments_count_whole() {
    let server = start(&["--max-message-bytes", "1024"]).await;
    // A 1 MiB frame: only its header is sent, and 1009 must come anyway.
    let mut raw = Raw::connect(&server).await;
    let mut header = vec![0x81];
    header.extend(length_field(1 << 20));
    header.extend_from_slice(&MASK);
    raw.send(&header).await;
    assert_eq!(raw.recv_close().await.0, 1009);
    // A fragmented message whose second fragment would pass the limit: refused on that
    // fragment's header.
    let mut raw = Raw::connect(&server).await;
    raw.send(&frame(0x01, &[b' '; 1000])).await;
    let mut header = vec![0x80];
    header.extend(length_field(25));
    header.extend_from_slice(&MASK);
    raw.send(&header).await;
    assert_eq!(raw.recv_close().await.0, 1009);
    // Exactly at the limit is fine.
    let mut raw = Raw::connect(&server).await;
    let request = format!(r#"{{"op":"ping","id":1}}{}"#, " ".repeat(1024 - 20));
    assert_eq!(request.len(), 1024);
    raw.send(&frame(0x01, &request.as_bytes()[..500])).await;
    raw.send(&frame(0x80, &request.as_bytes()[500..])).await;
    assert_eq!(raw.next_json().await["type"], "pong");
    server.shutdown().await;
}

#[actix_web::test]
async fn reserved_bits_fail_the_connection_with_1002() {
    let server = start(&[]).await;
    for (what, first) in [("text frame with RSV1", 0x81 | 0x40), ("text frame with RSV3", 0x81 | 0x10), ("ping with RSV2", 0x89 | 0x20)] {
        let mut raw = Raw::connect(&server).await;
        raw.send(&frame(first, br#"{"op":"ping"}"#)).await;
        let (code, reason) = raw.recv_close().await;
        assert_eq!(code, 1002, "{what}: {}", String::from_utf8_lossy(&reason));
        assert!(String::from_utf8_lossy(&reason).contains("reserved bits"), "{what}: {}", String::from_utf8_lossy(&reason));
    }
    assert_eq!(disconnects(&server, "protocol_error").await, 3.0);
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn every_ping_gets_its_own_pong_in_order() {
    let server = start(&[]).await;
    let mut raw = Raw::connect(&server).await;
    let pings: Vec<u8> = (0..10u8).flat_map(|i| frame(0x89, format!("ping {i}").as_bytes())).collect();
    raw.send(&pings).await;
    for i in 0..10 {
        let frame = loop {
            let frame = raw.next_frame().await.expect("a pong");
            if frame.opcode == 0xA {
                break frame;
            }
        };
        assert_eq!(String::from_utf8_lossy(&frame.payload), format!("ping {i}"));
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn a_close_is_echoed_with_its_code_and_reason_and_a_non_utf8_reason_gets_1007() {
    let server = start(&[]).await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&frame(0x88, &[&4001u16.to_be_bytes()[..], b"done for today"].concat())).await;
    assert_eq!(raw.recv_close().await, (4001, b"done for today".to_vec()));
    assert!(raw.next_frame().await.is_none(), "the server ends the connection after the echo");
    // A client that goes on sending after the handshake is not read on (actix-http would drain
    // it for as long as it sends): its writes fail.
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    let keeps_sending = async {
        while raw.stream.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, keeps_sending).await.expect("the connection is gone");
    assert!(sent < 16 << 20, "{} KiB taken after the close handshake", sent >> 10);

    let mut raw = Raw::connect(&server).await;
    raw.send(&frame(0x88, &[0x03, 0xE8, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80])).await;
    let (code, reason) = raw.recv_close().await;
    assert_eq!(code, 1007, "{}", String::from_utf8_lossy(&reason));

    // A close code no endpoint may send is a protocol error.
    let mut raw = Raw::connect(&server).await;
    raw.send(&frame(0x88, &1005u16.to_be_bytes())).await;
    assert_eq!(raw.recv_close().await.0, 1002);
    server.shutdown().await;
}

#[actix_web::test]
async fn an_upgrade_with_a_chunked_body_is_refused_with_400() {
    let server = start(&[]).await;
    let request = Raw::upgrade_request(&server, "/ws", "Transfer-Encoding: chunked\r\n");
    let (mut raw, head) = Raw::handshake(&server, &request).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let length: usize = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())).expect("content-length");
    while raw.buf.len() < length {
        assert!(tokio::time::timeout(EVENT_TIMEOUT, raw.fill()).await.expect("body in time"), "body cut short");
    }
    let body = String::from_utf8_lossy(&raw.buf).to_string();
    assert!(body.contains("\"error\":\"bad_request\"") && body.contains("Transfer-Encoding"), "{body}");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_burst_of_requests_from_a_reading_client_is_answered_not_closed() {
    let server = start(&[]).await;
    let mut raw = Raw::connect(&server).await;
    // 400 pings in one write (about 11 KB): 100 go through on the burst allowance, the rest
    // are counted in at most a couple of rate_limited errors; the connection stays open.
    let burst: Vec<u8> = (0..400).flat_map(|i| text(&format!(r#"{{"op":"ping","id":{i}}}"#))).collect();
    assert!((10_000..16_000).contains(&burst.len()), "{} bytes", burst.len());
    raw.send(&burst).await;
    let (mut pongs, mut dropped, mut errors) = (0u64, 0u64, 0u64);
    while pongs + dropped < 400 {
        let message = raw.next_json().await;
        match message["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => {
                assert_eq!(message["code"], "rate_limited", "{message}");
                assert!(message["id"].is_number(), "the error echoes the first dropped id: {message}");
                dropped += message["count"].as_u64().expect("a count");
                errors += 1;
            }
            _ => {}
        }
    }
    assert_eq!(pongs + dropped, 400);
    assert!((100..=110).contains(&pongs), "{pongs} pongs");
    assert!(errors <= 3, "{errors} rate_limited errors for {dropped} dropped messages");
    raw.send(&text(r#"{"op":"list","id":"after"}"#)).await;
    // The session is still there (it may still be over the rate: either answer proves it).
    let reply = raw.next_json().await;
    assert!(reply["type"] == "subscriptions" || reply["code"] == "rate_limited", "{reply}");
    assert_eq!(disconnects(&server, "slow_consumer").await, 0.0);
    server.shutdown().await;
}

#[actix_web::test]
async fn ten_thousand_subscribes_as_fast_as_possible_are_answered_or_counted() {
    let server = start(&[]).await;
    let raw = Raw::connect(&server).await;
    let (reader, mut writer) = raw.stream.into_split();
    let total = 10_000u64;
    let writing = tokio::spawn(async move {
        let all: Vec<u8> = (0..total).flat_map(|i| text(&format!(r#"{{"op":"subscribe","symbols":["AAPL","MSFT"],"id":{i}}}"#))).collect();
        writer.write_all(&all).await.expect("the server keeps reading");
        writer
    });
    let mut raw = Raw { stream: reader.reunite(writing.await.unwrap()).unwrap(), buf: raw.buf };
    let (mut subscribed, mut dropped) = (0u64, 0u64);
    while subscribed + dropped < total {
        let message = raw.next_json().await;
        match message["type"].as_str().unwrap() {
            "subscribed" => subscribed += 1,
            "error" => {
                assert_eq!(message["code"], "rate_limited", "{message}");
                dropped += message["count"].as_u64().unwrap();
            }
            _ => {}
        }
    }
    assert_eq!(subscribed + dropped, total);
    assert!((100..=150).contains(&subscribed), "{subscribed} processed on a burst of 100 and 50/s");
    assert_eq!(disconnects(&server, "slow_consumer").await, 0.0);
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_flood_within_the_rate_is_read_as_fast_as_its_replies_drain() {
    // No rate limit to speak of: only backpressure stands between the flood and the server's
    // memory. 20,000 requests written as fast as possible, by a client that reads concurrently.
    let server = start(&["--rate-limit", "1000000", "--rate-burst", "1000000"]).await;
    let raw = Raw::connect(&server).await;
    let (mut reader, mut writer) = raw.stream.into_split();
    let total = 20_000;
    let writing = tokio::spawn(async move {
        let batch: Vec<u8> = (0..1000).flat_map(|_| text(r#"{"op":"ping","id":1}"#)).collect();
        for _ in 0..total / 1000 {
            writer.write_all(&batch).await.expect("the server keeps reading");
        }
        writer
    });
    // Replies are counted as they stream in; a pong is `"type":"pong"` in a text frame, so
    // the search only looks at bytes it has not seen (keeping a pattern's length of overlap).
    const PONG: &[u8] = br#""type":"pong""#;
    let mut pongs = 0;
    let mut window: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let counting = async {
        while pongs < total {
            let n = reader.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed a client that was reading ({pongs} pongs)");
            window.extend_from_slice(&chunk[..n]);
            assert!(!window.windows(13).any(|w| w == b"slow consumer"), "closed as a slow consumer after {pongs} pongs");
            pongs += window.windows(PONG.len()).filter(|w| *w == PONG).count();
            window.drain(..window.len().saturating_sub(PONG.len() - 1));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), counting).await.expect("every reply in time");
    drop(writing.await.unwrap());
    assert_eq!(disconnects(&server, "slow_consumer").await, 0.0);
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_flooding_client_that_never_reads_is_a_slow_consumer_and_the_server_holds_its_queue() {
    let server = start(&["--rate-limit", "1000000", "--rate-burst", "1000000", "--slow-consumer-timeout", "1"]).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut raw = Raw { stream, buf: Vec::new() };
    raw.send(Raw::upgrade_request(&server, "/ws", "").as_bytes()).await;
    // Write requests until the server stops taking them (it stops reading once their replies
    // pile up); never read.
    let batch: Vec<u8> = (0..1000).flat_map(|_| text(r#"{"op":"ping","id":1}"#)).collect();
    let mut written = 0usize;
    let stalled = loop {
        match tokio::time::timeout(Duration::from_secs(2), raw.stream.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            Ok(Err(_)) => break false,
            Err(_) => break true,
        }
        assert!(written < 256 << 20, "the server read {written} bytes of requests whose replies nobody read");
    };
    assert!(stalled || server.connections.count() == 0, "writes stalled, or the server already closed the client");
    // It is closed as a slow consumer: its socket took nothing for a second.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while server.connections.count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled flooder was not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(disconnects(&server, "slow_consumer").await, 1.0);
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn invalid_utf8_fails_the_connection_before_the_message_ends() {
    let server = start(&[]).await;
    // The first fragment of a text message holds a byte no UTF-8 has: 1007 comes without the
    // rest of the message (Autobahn|Testsuite 6.4.1: fail fast).
    let mut raw = Raw::connect(&server).await;
    raw.send(&frame(0x01, &[b'{', 0xf4, 0x90, 0x80, 0x80])).await;
    assert_eq!(raw.recv_close().await.0, 1007);
    // Within a frame: the header announces 64 bytes, 8 arrive with the bad one among them.
    let mut raw = Raw::connect(&server).await;
    let whole = frame(0x81, &[&br#"{"op""#[..], &[0xff], &[b' '; 58]].concat());
    raw.send(&whole[..2 + 4 + 8]).await;
    assert_eq!(raw.recv_close().await.0, 1007);
    assert_eq!(disconnects(&server, "protocol_error").await, 2.0);
    server.shutdown().await;
}

#[actix_web::test]
async fn what_a_client_sent_before_a_failing_frame_or_its_close_is_answered_first() {
    let server = start(&[]).await;
    // A request and a frame with a reserved bit in one write: the reply, then 1002
    // (Autobahn|Testsuite 3.2: the echo of the valid message precedes the failure).
    let mut raw = Raw::connect(&server).await;
    raw.send(&[text(r#"{"op":"ping","id":"before"}"#), frame(0x81 | 0x20, b"{}")].concat()).await;
    let reply = raw.next_frame().await.expect("the reply").json().expect("a text frame");
    assert_eq!((reply["type"].as_str(), reply["id"].as_str()), (Some("pong"), Some("before")));
    assert_eq!(raw.recv_close().await.0, 1002);
    // A request and a close in one write: the reply, then the close echoed.
    let mut raw = Raw::connect(&server).await;
    raw.send(&[text(r#"{"op":"list","id":2}"#), frame(0x88, &1000u16.to_be_bytes())].concat()).await;
    let reply = raw.next_frame().await.expect("the reply").json().expect("a text frame");
    assert_eq!((reply["type"].as_str(), reply["id"].as_i64()), (Some("subscriptions"), Some(2)));
    assert_eq!(raw.recv_close().await.0, 1000);
    server.shutdown().await;
}
