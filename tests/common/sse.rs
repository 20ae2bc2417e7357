//! A Server-Sent Events client over plain TCP: sends `GET /sse?…`, reads the status and
//! headers, then decodes the chunked body into events (`event:`/`data:` lines, `retry:` and
//! `:` comments kept as their own entries), so tests see exactly what a client would.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EVENT_TIMEOUT;

/// One block of the stream, as a client parses it.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Event { name: String, data: Value },
    Retry(u64),
    Comment(String),
}

pub struct SseClient {
    pub socket: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Raw bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked text not yet parsed into blocks.
    text: String,
    /// The body's last chunk (or the connection's end) was seen.
    pub ended: bool,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> SseClient {
        SseClient::connect_with(TcpStream::connect(addr).await.expect("connect"), addr, path_and_query).await
    }

    /// Connects with a 4 KiB receive buffer, for a client that will stop reading: the server's
    /// output then stalls within a few KiB instead of the kernel's autotuned megabytes.
    pub async fn connect_small(addr: SocketAddr, path_and_query: &str) -> SseClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        SseClient::connect_with(socket.connect(addr).await.expect("connect"), addr, path_and_query).await
    }

    async fn connect_with(mut socket: TcpStream, addr: SocketAddr, path_and_query: &str) -> SseClient {
        let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("send request");
        let mut client = SseClient { socket, status: 0, headers: Vec::new(), raw: Vec::new(), text: String::new(), ended: false };
        tokio::time::timeout(EVENT_TIMEOUT, client.read_head()).await.expect("response head in time");
        client
    }

    async fn read_head(&mut self) {
        loop {
            if let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.raw[..end].to_vec()).expect("UTF-8 head");
                self.raw.drain(..end + 4);
                let mut lines = head.split("\r\n");
                self.status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
                self.headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
                return;
            }
            assert!(self.fill().await, "connection ended before the response head");
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Reads more bytes; false at the connection's end.
    async fn fill(&mut self) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        match self.socket.read(&mut buf).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves every complete chunk from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..line_end]).unwrap().trim(), 16).expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let chunk = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..line_end + 2 + size + 2);
            self.text.push_str(&String::from_utf8(chunk).expect("UTF-8 events"));
        }
    }

    /// The next block, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Block> {
        loop {
            self.dechunk();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse_block(block.trim_end_matches('\n')));
            }
            if self.ended {
                return None;
            }
            if !tokio::time::timeout(EVENT_TIMEOUT, self.fill()).await.expect("stream data in time") {
                self.ended = true;
            }
        }
    }

    /// The next event named `name` (skipping others), its data.
    pub async fn event(&mut self, name: &str) -> Value {
        loop {
            match self.next().await {
                Some(Block::Event { name: n, data }) if n == name => return data,
                Some(_) => {}
                None => panic!("the stream ended before a '{name}' event"),
            }
        }
    }
}

fn parse_block(block: &str) -> Block {
    if let Some(comment) = block.strip_prefix(':') {
        return Block::Comment(comment.trim().to_string());
    }
    if let Some(retry) = block.strip_prefix("retry: ") {
        return Block::Retry(retry.parse().expect("retry is a number"));
    }
    let mut name = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            assert!(data.is_none(), "one data line per event: {block}");
            data = Some(serde_json::from_str(d).unwrap_or_else(|e| panic!("data is JSON ({e}): {d}")));
        } else {
            panic!("unexpected line in an event: {line:?}");
        }
    }
    Block::Event { name: name.expect("every event is named"), data: data.expect("every event has data") }
}
