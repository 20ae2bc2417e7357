//! A WebSocket client that speaks bytes: frames no library would send, floods written in one
//! go, upgrade requests no browser would make.

#![allow(dead_code)]

use serde_json::Value;
use tickerfeed::server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EVENT_TIMEOUT;

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame: `first` is the FIN/RSV/opcode byte as sent.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(length_field(payload.len() as u64));
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The second byte (mask bit set) and extended length of a frame header.
pub fn length_field(len: u64) -> Vec<u8> {
    match len {
        n if n < 126 => vec![0x80 | n as u8],
        n if n <= 0xFFFF => [&[0x80 | 126][..], &(n as u16).to_be_bytes()].concat(),
        n => [&[0x80 | 127][..], &n.to_be_bytes()].concat(),
    }
}

pub fn text(payload: &str) -> Vec<u8> {
    frame(0x81, payload.as_bytes())
}

/// A WebSocket client that speaks bytes.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn json(&self) -> Option<Value> {
        (self.opcode == 1).then(|| serde_json::from_slice(&self.payload).expect("text frames are JSON"))
    }
}

impl Raw {
    /// Sends `request` (the whole HTTP head) and returns the response head.
    pub async fn handshake(server: &RunningServer, request: &str) -> (Raw, String) {
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

    pub fn upgrade_request(server: &RunningServer, path: &str, extra_headers: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n",
            server.addr
        )
    }

    /// Upgrades and reads the welcome.
    pub async fn connect(server: &RunningServer) -> Raw {
        let (mut raw, head) = Raw::handshake(server, &Raw::upgrade_request(server, "/ws", "")).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let welcome = raw.next_frame().await.expect("welcome").json().expect("text");
        assert_eq!(welcome["type"], "welcome");
        raw
    }

    /// Reads more bytes; false at the end of the stream (or a reset).
    pub async fn fill(&mut self) -> bool {
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
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
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
    pub async fn recv_close(&mut self) -> (u16, Vec<u8>) {
        loop {
            let frame = self.next_frame().await.expect("a close frame before the connection ends");
            if frame.opcode == 8 {
                assert!(frame.payload.len() >= 2, "the server's close frame has a code");
                return (u16::from_be_bytes([frame.payload[0], frame.payload[1]]), frame.payload[2..].to_vec());
            }
        }
    }

    /// The next text message (control frames skipped); fails if the connection closes.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await.expect("a message, not the end");
            assert_ne!(frame.opcode, 8, "closed: {}", String::from_utf8_lossy(&frame.payload));
            if let Some(value) = frame.json() {
                return value;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }
}

/// Resident memory of this process, where the server under test runs.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

pub async fn disconnects(server: &RunningServer, reason: &str) -> f64 {
    let (_, body) = super::http(server, "GET", "/metrics", None).await;
    let series = format!("tickerfeed_disconnects_total{{reason=\"{reason}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.trim().parse().unwrap())
}
