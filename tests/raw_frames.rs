//! What an outside client can do with raw bytes: frames no library would send, floods written
//! in one go, and upgrade requests no browser would make. Each test here is a defect an outside
//! probe found (issue 11); the server must refuse or answer as RFC 6455 says, hold nothing it
//! does not need, and keep every other client unaware.

mod common;

use std::time::Duration;

use common::{EVENT_TIMEOUT, assert_others_unaffected, start};
use serde_json::Value;
use tickerfeed::server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame: `first` is the FIN/RSV/opcode byte as sent.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(length_field(payload.len() as u64));
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The second byte (mask bit set) and extended length of a frame header.
fn length_field(len: u64) -> Vec<u8> {
    match len {
        n if n < 126 => vec![0x80 | n as u8],
        n if n <= 0xFFFF => [&[0x80 | 126][..], &(n as u16).to_be_bytes()].concat(),
        n => [&[0x80 | 127][..], &n.to_be_bytes()].concat(),
    }
}

fn text(payload: &str) -> Vec<u8> {
    frame(0x81, payload.as_bytes())
}

/// A WebSocket client that speaks bytes.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl ServerFrame {
    fn json(&self) -> Option<Value> {
        (self.opcode == 1).then(|| serde_json::from_slice(&self.payload).expect("text frames are JSON"))
    }
}

impl Raw {
    /// Sends `request` (the whole HTTP head) and returns the response head.
    async fn handshake(server: &RunningServer, request: &str) -> (Raw, String) {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write request");
        let mut raw = Raw { stream, buf: Vec::new() };
        let head = tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw.buf[..end]).to_string();
                    raw.buf.drain(..end + 4);
                    return head;
                }
                assert!(raw.fill().await, "connection closed before the response head");
            }
        })
        .await
        .expect("response head in time");
        (raw, head)
    }

    fn upgrade_request(server: &RunningServer, path: &str, extra_headers: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n",
            server.addr
        )
    }

    /// Upgrades and reads the welcome.
    async fn connect(server: &RunningServer) -> Raw {
        let (mut raw, head) = Raw::handshake(server, &Raw::upgrade_request(server, "/ws", "")).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let welcome = raw.next_frame().await.expect("welcome").json().expect("text");
        assert_eq!(welcome["type"], "welcome");
        raw
    }

    /// Reads more bytes; false at the end of the stream (or a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next server frame, or `None` when the connection ends first.
    async fn next_frame(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                if self.buf.len() >= 2 {
                    assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                    let (header, len) = match self.buf[1] & 0x7F {
                        126 if self.buf.len() >= 4 => (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize),
                        127 if self.buf.len() >= 10 => (10, u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize),
                        126 | 127 => (usize::MAX, 0),
                        n => (2, n as usize),
                    };
                    if header != usize::MAX && self.buf.len() >= header + len {
                        assert_eq!(self.buf[0] & 0x70, 0, "no reserved bits from the server");
                        let opcode = self.buf[0] & 0x0F;
                        let payload = self.buf[header..header + len].to_vec();
                        self.buf.drain(..header + len);
                        return Some(ServerFrame { opcode, payload });
                    }
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
        .expect("a frame or the end in time")
    }

    /// Reads until the close frame; returns its code and reason bytes.
    async fn recv_close(&mut self) -> (u16, Vec<u8>) {
        loop {
            let frame = self.next_frame().await.expect("a close frame before the connection ends");
            if frame.opcode == 8 {
                assert!(frame.payload.len() >= 2, "the server's close frame has a code");
                return (u16::from_be_bytes([frame.payload[0], frame.payload[1]]), frame.payload[2..].to_vec());
            }
        }
    }

    /// The next text message (control frames skipped); fails if the connection closes.
    async fn next_json(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await.expect("a message, not the end");
            assert_ne!(frame.opcode, 8, "closed: {}", String::from_utf8_lossy(&frame.payload));
            if let Some(value) = frame.json() {
                return value;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }
}

/// Resident memory of this process, where the server under test runs.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

async fn disconnects(server: &RunningServer, reason: &str) -> f64 {
    let (_, body) = common::http(server, "GET", "/metrics", None).await;
    let series = format!("tickerfeed_disconnects_total{{reason=\"{reason}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.trim().parse().unwrap())
}

#[actix_web::test]
async fn a_huge_frame_is_refused_on_its_header_and_its_stream_is_never_held() {
    let server = start(&[]).await;
    let mut raw = Raw::connect(&server).await;
    let before = rss_bytes();
    // A text frame announcing 2^62 bytes: the 1009 must come on the header alone.
    let mut header = vec![0x81];
    header.extend(length_field(1 << 62));
    header.extend_from_slice(&MASK);
    raw.send(&header).await;
    let (code, reason) = raw.recv_close().await;
    assert_eq!(code, 1009, "{}", String::from_utf8_lossy(&reason));
    assert_eq!(String::from_utf8_lossy(&reason), "message too big: the limit is 4096 bytes");
    // The peer keeps streaming what it announced: the server must drop the connection rather
    // than take 64 MiB (writes fail once it has reset the connection).
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0usize;
    let streaming = async {
        while sent < 64 << 20 {
            match raw.stream.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => return false,
            }
        }
        true
    };
    let wrote_everything = tokio::time::timeout(Duration::from_secs(30), streaming).await.expect("the server ends the connection in time");
    assert!(!wrote_everything, "the server read all of a 64 MiB frame it had refused");
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 8 << 20, "RSS grew by {} KiB after {} KiB were sent", grown >> 10, sent >> 10);
    assert_eq!(disconnects(&server, "limit").await, 1.0, "counted as a limit, not a protocol error");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

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
    let mut pongs = 0;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let counting = async {
        while pongs < total {
            let n = reader.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed a client that was reading ({pongs} pongs)");
            bytes.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("slow consumer"), "closed as a slow consumer after {pongs} pongs");
            pongs = text.matches(r#""type":"pong""#).count();
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
    assert!(stalled || server.state.connections.load(std::sync::atomic::Ordering::Acquire) == 0, "writes stalled, or the server already closed the client");
    // It is closed as a slow consumer: its socket took nothing for a second.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while server.state.connections.load(std::sync::atomic::Ordering::Acquire) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled flooder was not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(disconnects(&server, "slow_consumer").await, 1.0);
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}
