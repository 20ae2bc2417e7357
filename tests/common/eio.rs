//! Engine.IO by hand, for the tests that check what no well-behaved client library sends: a
//! polling session over plain HTTP requests, and a WebSocket speaking raw Engine.IO packets.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickerfeed::server::RunningServer;
use tokio_tungstenite::tungstenite::Message;

use super::{EVENT_TIMEOUT, Response, Socket, http_raw};

/// A request to `/socket.io/` with this query, and an optional text body (a POST).
pub async fn request(server: &RunningServer, method: &str, query: &str, body: Option<&[u8]>) -> Response {
    let body = body.unwrap_or(b"");
    let mut request = format!(
        "{method} /socket.io/?{query} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nOrigin: http://localhost:5173\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_raw(server, &request).await
}

/// A polling session opened by its handshake.
pub struct Polling<'a> {
    pub server: &'a RunningServer,
    pub sid: String,
    pub open: Value,
}

impl<'a> Polling<'a> {
    /// GET without sid: the `open` packet.
    pub async fn open(server: &'a RunningServer) -> Polling<'a> {
        let response = request(server, "GET", "EIO=4&transport=polling", None).await;
        assert_eq!(response.status, 200, "handshake: {}", response.body);
        let open: Value = serde_json::from_str(response.body.strip_prefix('0').unwrap_or_else(|| panic!("an open packet: {}", response.body))).expect("open JSON");
        Polling { server, sid: open["sid"].as_str().expect("sid").to_string(), open }
    }

    /// Opens and connects to `/` (the CONNECT reply and the welcome read).
    pub async fn connected(server: &'a RunningServer) -> Polling<'a> {
        let polling = Polling::open(server).await;
        polling.post("40").await;
        let mut packets = Vec::new();
        while !packets.iter().any(|p: &String| p.starts_with("42[\"welcome\"")) {
            packets.extend(polling.poll().await);
        }
        assert!(packets[0].starts_with("40{\"sid\":"), "{packets:?}");
        polling
    }

    pub fn query(&self) -> String {
        format!("EIO=4&transport=polling&sid={}", self.sid)
    }

    /// POSTs `body`; asserts `ok`.
    pub async fn post(&self, body: &str) {
        let response = self.post_raw(body.as_bytes()).await;
        assert_eq!((response.status, response.body.as_str()), (200, "ok"), "POST {body:?}");
    }

    pub async fn post_raw(&self, body: &[u8]) -> Response {
        request(self.server, "POST", &self.query(), Some(body)).await
    }

    /// GET: the packets of one poll.
    pub async fn poll(&self) -> Vec<String> {
        let response = self.poll_raw().await;
        assert_eq!(response.status, 200, "poll: {}", response.body);
        response.body.split('\u{1e}').map(str::to_string).collect()
    }

    pub async fn poll_raw(&self) -> Response {
        request(self.server, "GET", &self.query(), None).await
    }

    /// Polls until a packet starting with `prefix` arrives; returns it.
    pub async fn poll_for(&self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let packets = tokio::time::timeout_at(deadline, self.poll()).await.unwrap_or_else(|_| panic!("no {prefix:?} in time"));
            if let Some(found) = packets.into_iter().find(|p| p.starts_with(prefix)) {
                return found;
            }
        }
    }
}

/// A WebSocket speaking Engine.IO packets.
pub struct EioSocket {
    pub ws: Socket,
}

impl EioSocket {
    /// Opens `/socket.io/?EIO=4&transport=websocket…` (`extra` is appended to the query).
    pub async fn open(addr: SocketAddr, extra: &str) -> (EioSocket, Value) {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{extra}");
        let (ws, _) = tokio::time::timeout(EVENT_TIMEOUT, tokio_tungstenite::connect_async(url)).await.expect("connect in time").expect("upgrade");
        let mut socket = EioSocket { ws };
        let open = socket.recv().await;
        let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap_or_else(|| panic!("an open packet: {open}"))).expect("open JSON");
        (socket, open)
    }

    /// Opens and connects to `/`; returns the welcome's fields.
    pub async fn connected(addr: SocketAddr, extra: &str) -> (EioSocket, Value) {
        let (mut socket, _) = EioSocket::open(addr, extra).await;
        socket.send("40").await;
        let reply = socket.recv().await;
        assert!(reply.starts_with("40{\"sid\":"), "{reply}");
        let welcome = socket.event("welcome").await;
        (socket, welcome)
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string().into())).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::Binary(bytes.to_vec().into())).await.expect("send");
    }

    /// The next text packet (WebSocket pings skipped).
    pub async fn recv(&mut self) -> String {
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await.expect("a packet in time") {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text packet, got {other:?}"),
            }
        }
    }

    /// Skips packets until the event `name`; returns its argument. Engine.IO pings are answered.
    pub async fn event(&mut self, name: &str) -> Value {
        let prefix = format!("42[\"{name}\",");
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let packet = tokio::time::timeout_at(deadline, self.recv()).await.unwrap_or_else(|_| panic!("no '{name}' event in time"));
            if packet == "2" {
                self.send("3").await;
            } else if let Some(rest) = packet.strip_prefix(&prefix) {
                return serde_json::from_str(rest.strip_suffix(']').expect("an event array")).expect("event JSON");
            }
        }
    }

    /// Skips packets until the ack `id`; returns its one argument.
    pub async fn ack(&mut self, id: u64) -> Value {
        let prefix = format!("43{id}[");
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let packet = tokio::time::timeout_at(deadline, self.recv()).await.unwrap_or_else(|_| panic!("no ack {id} in time"));
            if packet == "2" {
                self.send("3").await;
            } else if let Some(rest) = packet.strip_prefix(&prefix) {
                let args: Value = serde_json::from_str(&format!("[{rest}")).expect("ack JSON");
                return args[0].clone();
            }
        }
    }

    /// Reads until the close frame; returns its code and reason, and every text packet before it.
    pub async fn recv_close(&mut self) -> (u16, String, Vec<String>) {
        let mut packets = Vec::new();
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string(), packets),
                Some(Ok(Message::Close(None))) => return (1005, String::new(), packets),
                Some(Ok(Message::Text(text))) => packets.push(text.to_string()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("expected a close frame, got error {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}
