//! Test harness: starts the real server on 127.0.0.1:0 inside the test's actix system and talks
//! to it with a real WebSocket client (tokio-tungstenite) and plain HTTP/1.1 over TCP.

#![allow(dead_code)]

pub mod eio;
pub mod raw;
pub mod sse;

use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickerfeed::config::{Cli, Config};
use tickerfeed::server::{self, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long any single expected event may take before a test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration from command-line style arguments (bind is always 127.0.0.1:0).
pub fn config(args: &[&str]) -> Config {
    try_config(args).expect("test config is valid")
}

/// Like [`config`], but returns the error of an invalid configuration.
pub fn try_config(args: &[&str]) -> Result<Config, tickerfeed::config::ConfigError> {
    let mut all = vec!["tickerfeed", "--bind", "127.0.0.1:0"];
    if !args.contains(&"--workers") {
        all.extend(["--workers", "1"]);
    }
    if !args.contains(&"--seed") {
        all.extend(["--seed", "7"]);
    }
    all.extend_from_slice(args);
    Config::load(Cli::try_parse_from(all).expect("test arguments parse"))
}

pub async fn start(args: &[&str]) -> RunningServer {
    server::start(config(args)).await.expect("server starts")
}

pub fn repo_path(relative: &str) -> String {
    format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking protocol v1.
pub struct Client {
    pub ws: Socket,
}

impl Client {
    pub async fn connect(server: &RunningServer) -> Client {
        Client::connect_path(server, "/ws").await
    }

    pub async fn connect_path(server: &RunningServer, path: &str) -> Client {
        Client::connect_at(server.addr, path).await
    }

    /// Connects to a server at `addr` (one this test did not start in-process).
    pub async fn connect_at(addr: std::net::SocketAddr, path: &str) -> Client {
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio::time::timeout(EVENT_TIMEOUT, connect_async(url)).await.expect("connect in time").expect("upgrade succeeds");
        Client { ws }
    }

    /// Connects with a client socket whose receive buffer is `receive_buffer` bytes, so that a
    /// client that stops reading stops the server's writes soon.
    pub async fn connect_small_buffer(server: &RunningServer, path: &str, receive_buffer: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(receive_buffer).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(EVENT_TIMEOUT, socket.connect(server.addr)).await.expect("connect in time").expect("connect");
        let url = format!("ws://{}{path}", server.addr);
        let (ws, _) =
            tokio::time::timeout(EVENT_TIMEOUT, tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))).await.expect("upgrade in time").expect("upgrade succeeds");
        Client { ws }
    }

    /// Connects and consumes the welcome message, returning it.
    pub async fn connect_welcomed(server: &RunningServer) -> (Client, Value) {
        let mut client = Client::connect(server).await;
        let welcome = client.recv_type("welcome").await;
        (client, welcome)
    }

    pub async fn send(&mut self, value: Value) {
        self.ws.send(Message::Text(value.to_string().into())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string().into())).await.expect("send");
    }

    /// The next message of any kind, within [`EVENT_TIMEOUT`].
    pub async fn next_message(&mut self) -> Message {
        self.next_message_within(EVENT_TIMEOUT).await.expect("a message in time")
    }

    pub async fn next_message_within(&mut self, timeout: Duration) -> Option<Message> {
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(e))) => panic!("websocket error: {e}"),
            Ok(None) => panic!("connection ended"),
            Err(_) => None,
        }
    }

    /// The next JSON text message (pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.next_message().await {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Skips messages until one of type `kind` arrives (quotes and feed messages may come in
    /// between replies).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let value = tokio::time::timeout_at(deadline, self.recv()).await.unwrap_or_else(|_| panic!("no '{kind}' message in time"));
            if value["type"] == kind {
                return value;
            }
        }
    }

    /// Reads until the connection closes; returns the close code and reason.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("expected a close frame, got error {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// A new client connects and gets an answer: what a misbehaving peer did went unnoticed.
pub async fn assert_others_unaffected(server: &RunningServer) {
    let (mut other, _) = Client::connect_welcomed(server).await;
    other.send(serde_json::json!({"op":"ping","id":1})).await;
    assert_eq!(other.recv_type("pong").await["id"], 1);
}

/// A plain HTTP/1.1 request; returns the status and the body.
pub async fn http(server: &RunningServer, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_at(server.addr, method, path, body).await
}

/// [`http`] to a server at `addr`.
pub async fn http_at(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, stream.read_to_end(&mut response)).await.expect("response in time").expect("read response");
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub async fn http_json(server: &RunningServer, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, body) = http(server, method, path, body).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body}")))
}

/// An HTTP answer with its headers, for tests that check more than status and body.
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics naming `what` and the body when it is not.
    pub fn json(&self, what: &str) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {} {:?}", self.status, self.body))
    }
}

/// Writes `request` (a whole HTTP/1.1 request, which should ask for `Connection: close`) and
/// reads the answer until the server closes the connection.
pub async fn http_raw(server: &RunningServer, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, stream.read_to_end(&mut response)).await.expect("response in time").expect("read response");
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|line| line.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {response:?}"));
    let headers = lines.filter_map(|line| line.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    Response { status, headers, body: body.to_string() }
}

/// A request with an optional JSON body; the whole answer.
pub async fn http_full(server: &RunningServer, method: &str, path: &str, body: Option<&str>) -> Response {
    let body = body.unwrap_or("");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", server.addr, body.len());
    http_raw(server, request.as_bytes()).await
}

/// The value of one series (name and labels, as written) in a scrape of /metrics.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("series {series} not in the scrape"))
}

/// Each of `bars` (streamed with `"final":true`) equals the bar `/api/history` serves for the
/// same symbol and `t`: the bars channels and the backfill join without gap or duplicate.
pub async fn assert_bars_match_history(server: &RunningServer, symbol: &str, bars: &[Value]) {
    let (status, history) = http_json(server, "GET", &format!("/api/history/{symbol}?resolution=1s"), None).await;
    assert_eq!(status, 200);
    for bar in bars {
        let served = history["bars"].as_array().unwrap().iter().find(|h| h["t"] == bar["t"]).unwrap_or_else(|| panic!("history has the bar {bar}"));
        for field in ["open", "high", "low", "close", "volume", "seq"] {
            assert_eq!(served[field], bar[field], "{field} of the bar at {}", bar["t"]);
        }
    }
}

/// Waits until `symbol`'s seq reaches `seq` (the feed publishes on its own schedule).
pub async fn published(server: &RunningServer, symbol: &str, seq: u64) {
    let topic = server.bus.topic(symbol).unwrap();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while topic.seq() < seq {
        assert!(tokio::time::Instant::now() < deadline, "{symbol} reaches seq {seq} in time (at {})", topic.seq());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Symbols of a quotes frame.
pub fn quote_symbols(frame: &Value) -> Vec<String> {
    frame["quotes"].as_array().expect("quotes array").iter().map(|q| q["symbol"].as_str().unwrap().to_string()).collect()
}

/// The server's end of the connection whose client end is `client`, found among this process's
/// descriptors (the server runs in the test's process) by its local and peer addresses; `None`
/// once the server has closed it.
pub fn server_side_socket(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<std::os::fd::RawFd> {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<std::os::fd::RawFd>() else { continue };
        // SAFETY: borrowed only for the two address queries; a descriptor closed meanwhile
        // makes them fail, which skips it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let (Ok(local), Ok(peer)) = (socket.local_addr(), socket.peer_addr()) else { continue };
        if local.as_socket() == Some(server) && peer.as_socket() == Some(client) {
            return Some(fd);
        }
    }
    None
}
