//! Connections: the target address, the client connection over any of the three wire
//! protocols ([`Conn`]: v1 and Socket.IO over WebSocket, v1 over Server-Sent Events), and the
//! minimal HTTP requests used for the symbol list and the feed control.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::cli::Protocol;
use crate::client::SubSpec;
use crate::eio::{self, Packet};
use crate::frame::{self, Kind, Welcome};
use crate::sse::{self, SseStream};

pub type Ws = WebSocketStream<TcpStream>;

/// The server, resolved once: thousands of connects must not each do a DNS lookup (tokio's
/// lookup runs on the blocking pool).
#[derive(Clone, Debug)]
pub struct Target {
    /// `host[:port]` as written in the URL, for the HTTP Host header.
    pub authority: String,
    pub addr: SocketAddr,
    pub ws_config: WebSocketConfig,
    /// Read buffer per connection, bytes (the WebSocket's is in `ws_config`).
    pub read_buffer: usize,
    pub protocol: Protocol,
    /// The URL actually connected to (the Socket.IO endpoint with `--protocol socketio`).
    pub ws_url: String,
    /// The path of the event stream with `--protocol sse` (its query is the subscription's).
    pub sse_path: String,
}

impl Target {
    /// Resolves `url` for `protocol`: ws:// for every protocol, http:// for SSE too.
    pub async fn resolve(url: &str, read_buffer: usize, protocol: Protocol) -> Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("invalid --url {url:?}"))?;
        match (uri.scheme_str(), protocol) {
            (Some("ws"), _) | (Some("http"), Protocol::Sse) => {}
            (Some("wss" | "https"), _) => {
                bail!("{}:// is not supported (the load generator has no TLS); use ws://", uri.scheme_str().unwrap_or_default())
            }
            (Some("http"), _) => bail!("--url http://… is for --protocol sse; a WebSocket needs ws://"),
            (other, _) => bail!("--url must start with ws:// (or http:// with --protocol sse; got scheme {other:?})"),
        }
        let host = uri.host().ok_or_else(|| anyhow!("--url {url:?} has no host"))?;
        // http::Uri keeps the brackets of an IPv6 literal; the resolver wants them off.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .with_context(|| format!("cannot resolve {bare}:{port}"))?
            .next()
            .ok_or_else(|| anyhow!("{bare}:{port} resolved to no address"))?;
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| format!("{host}:{port}"));
        if protocol == Protocol::Sse {
            // The query string is the subscription, built from --symbols, --wildcard and --throttle-ms.
            ensure!(uri.query().is_none(), "--url {url:?}: with --protocol sse the query string is the subscription (--symbols, --wildcard, --throttle-ms); leave it out");
        }
        let ws_url = match protocol {
            Protocol::Socketio => eio::socketio_url(url),
            Protocol::V1 | Protocol::Sse => url.to_string(),
        };
        // The stream is at /sse on the host and port of the URL, unless the URL names an SSE path.
        let sse_path = if uri.path().ends_with("/sse") { uri.path().to_string() } else { "/sse".to_string() };
        Ok(Target { authority, addr, ws_config: WebSocketConfig::default().read_buffer_size(read_buffer), read_buffer, protocol, ws_url, sse_path })
    }

    /// `http://host:port` for the REST API, on the host and port of --url.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// TCP connect (no Nagle: a request or the subscribe must not wait for an ACK). `rcvbuf` sets
/// SO_RCVBUF before connecting (it must precede the handshake to bound the TCP window), so a
/// stalled client's kernel buffer fills after kilobytes rather than megabytes.
async fn tcp_connect(target: &Target, rcvbuf: Option<u32>) -> Result<TcpStream> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).context("setting SO_RCVBUF")?;
    }
    let stream = socket.connect(target.addr).await.with_context(|| format!("TCP connect to {}", target.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// TCP connect and WebSocket handshake.
pub async fn connect(target: &Target, rcvbuf: Option<u32>) -> Result<Ws> {
    let stream = tcp_connect(target, rcvbuf).await?;
    let (ws, _response) = tokio_tungstenite::client_async_with_config(target.ws_url.as_str(), stream, Some(target.ws_config)).await.context("WebSocket handshake")?;
    Ok(ws)
}

/// A client connection speaking any of the wire protocols: v1 JSON frames, or Socket.IO events
/// named after what they carry (see [`crate::eio`]) over a WebSocket, or v1 as Server-Sent
/// Events (see [`crate::sse`]), whose subscription is made by the request itself.
pub struct Conn {
    pub protocol: Protocol,
    link: Link,
    /// Socket.IO: the last ack id used (ids start at 1).
    last_ack: u64,
    /// Socket.IO: the requests sent with an ack id and not answered yet, with the kind of
    /// message their answer stands for (`subscribe` → [`Kind::Subscribed`]).
    pending_acks: Vec<(u64, Kind)>,
}

enum Link {
    Ws(Ws),
    Sse(SseStream),
}

/// What [`Conn::next`] read.
pub enum Incoming {
    /// A message: `&frame[start..end]` is its JSON object; `wire` is its size on the wire (the
    /// WebSocket frame's payload, the Socket.IO packet, the SSE event block). `kind` is what
    /// the transport says it is — a Socket.IO event's name, or the request an ack answers
    /// (whose JSON then has no `type`) — or `None` for a v1 object, which says it itself.
    Text {
        frame: Utf8Bytes,
        start: usize,
        end: usize,
        wire: usize,
        kind: Option<Kind>,
    },
    /// Housekeeping (an Engine.IO ping, answered already, or pong; an ack nobody waits for; an
    /// SSE comment or `retry:`): its size on the wire.
    Control(usize),
    Binary(usize),
    /// The server closed (WebSocket close, Engine.IO close, Socket.IO disconnect, the end of
    /// the event stream).
    Closed(String),
}

impl Conn {
    /// Connects and completes the handshake up to and including `welcome`. Over SSE the
    /// request carries `spec`'s subscription; over a WebSocket, [`crate::client`] subscribes
    /// next. `spec.rcvbuf` sets the socket's receive buffer.
    pub async fn open(target: &Target, spec: &SubSpec) -> Result<(Conn, Welcome)> {
        let link = match target.protocol {
            Protocol::Sse => {
                let socket = tcp_connect(target, spec.rcvbuf).await?;
                let path = sse::request_path(&target.sse_path, &spec.symbols, spec.throttle_ms, spec.align, spec.channels.as_deref());
                Link::Sse(SseStream::open(socket, &target.authority, &path, target.read_buffer).await?)
            }
            Protocol::V1 | Protocol::Socketio => Link::Ws(connect(target, spec.rcvbuf).await?),
        };
        let mut conn = Conn { protocol: target.protocol, link, last_ack: 0, pending_acks: Vec::new() };
        if conn.protocol == Protocol::Socketio {
            conn.socketio_handshake().await?;
        }
        let welcome = loop {
            match conn.next().await {
                Some(Ok(Incoming::Text { frame, start, end, kind, .. })) => {
                    break frame::parse_welcome_as(kind, &frame[start..end]).map_err(|e| anyhow!(e))?;
                }
                Some(Ok(Incoming::Closed(why))) => {
                    bail!("server closed the connection before welcome: {why}")
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.context("reading welcome")),
                None => bail!("connection ended before welcome"),
            }
        };
        Ok((conn, welcome))
    }

    /// The WebSocket, for what only a WebSocket does.
    fn ws(&mut self) -> Result<&mut Ws> {
        match &mut self.link {
            Link::Ws(ws) => Ok(ws),
            Link::Sse(_) => bail!("an SSE stream sends nothing after its request (a loadgen bug: a WebSocket operation on it)"),
        }
    }

    /// `0{open}` from the server, `40` from us, `40{sid}` back.
    async fn socketio_handshake(&mut self) -> Result<()> {
        let open = self.raw_text().await.context("reading the Engine.IO open packet")?;
        match eio::decode(&open) {
            Packet::Open(_) => {}
            _ => bail!("expected the Engine.IO open packet, got {}", frame::truncate(&open, 200)),
        }
        self.ws()?.send(Message::text(eio::CONNECT)).await?;
        loop {
            let t = self.raw_text().await.context("reading the Socket.IO connect ack")?;
            match eio::decode(&t) {
                Packet::Connect(_) => return Ok(()),
                Packet::Ping(d) => {
                    let pong = format!("{}{d}", eio::PONG);
                    self.ws()?.send(Message::text(pong)).await?;
                }
                Packet::ConnectError(e) => bail!("Socket.IO connect refused: {e}"),
                _ => bail!("expected the Socket.IO connect ack, got {}", frame::truncate(&t, 200)),
            }
        }
    }

    async fn raw_text(&mut self) -> Result<Utf8Bytes> {
        let ws = self.ws()?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Close(f))) => bail!("server closed: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow!(e)),
                None => bail!("connection ended"),
            }
        }
    }

    /// Subscribes as `spec` says: over v1 `{"op":"subscribe",...,"id":1}`, answered by
    /// `subscribed`; over Socket.IO `42<n>["subscribe",{"symbols":...}]`, whose ack
    /// `43<n>[{...}]` [`Conn::next`] hands out as a [`Kind::Subscribed`] message. Nothing over
    /// SSE, whose request carried the subscription (the server answers it with `subscribed`
    /// all the same, so what follows is the same for every protocol).
    pub async fn subscribe(&mut self, spec: &SubSpec) -> Result<()> {
        let text = match self.protocol {
            Protocol::Sse => return Ok(()),
            Protocol::V1 => crate::client::subscribe_text(spec, 1),
            Protocol::Socketio => {
                self.last_ack += 1;
                let id = self.last_ack;
                self.pending_acks.push((id, Kind::Subscribed));
                eio::encode_event_with_ack("subscribe", Some(id), &crate::client::subscribe_payload(spec))
            }
        };
        self.ws()?.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next text message as (frame, start, end, kind), skipping everything else; a close
    /// or the end of the connection is an error naming `what` the connection was for.
    pub async fn next_text(&mut self, what: &str) -> Result<(Utf8Bytes, usize, usize, Option<Kind>)> {
        loop {
            match self.next().await {
                Some(Ok(Incoming::Text { frame, start, end, kind, .. })) => return Ok((frame, start, end, kind)),
                Some(Ok(Incoming::Closed(f))) => bail!("server closed the {what}: {f}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => bail!("{what} ended"),
            }
        }
    }

    /// The next message; Engine.IO pings are answered here.
    pub async fn next(&mut self) -> Option<Result<Incoming>> {
        let ws = match &mut self.link {
            Link::Ws(ws) => ws,
            Link::Sse(stream) => {
                return stream.next().await.map(|item| {
                    item.map(|item| match item {
                        sse::Item::Event { block, start, end, wire } => Incoming::Text { frame: block, start, end, wire, kind: None },
                        sse::Item::Control(n) => Incoming::Control(n),
                        sse::Item::End => Incoming::Closed("the server ended the event stream".into()),
                    })
                });
            }
        };
        loop {
            let msg = match ws.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(anyhow!(e))),
            };
            let frame = match msg {
                Message::Text(t) => t,
                Message::Binary(b) => return Some(Ok(Incoming::Binary(b.len()))),
                Message::Close(f) => return Some(Ok(Incoming::Closed(format!("{f:?}")))),
                _ => continue, // ping/pong: tungstenite answers pings itself
            };
            let wire = frame.len();
            if self.protocol == Protocol::V1 {
                return Some(Ok(Incoming::Text { frame, start: 0, end: wire, wire, kind: None }));
            }
            let (start, end, kind) = match eio::decode(&frame) {
                Packet::Event { name, payload } => {
                    let (start, end) = span_in(&frame, payload);
                    (start, end, Kind::of_name(name))
                }
                Packet::Ack { id, payload } => {
                    let Some(i) = self.pending_acks.iter().position(|&(p, _)| p == id) else {
                        return Some(Ok(Incoming::Control(wire))); // nobody asked
                    };
                    let (_, answer) = self.pending_acks.swap_remove(i);
                    let (start, end) = span_in(&frame, payload);
                    (start, end, if eio::is_error_ack(payload) { Kind::Error } else { answer })
                }
                Packet::Ping(d) => {
                    let pong = format!("{}{d}", eio::PONG);
                    if let Err(e) = ws.send(Message::text(pong)).await {
                        return Some(Err(anyhow!(e)));
                    }
                    return Some(Ok(Incoming::Control(wire)));
                }
                Packet::Close => return Some(Ok(Incoming::Closed("Engine.IO close".into()))),
                Packet::Disconnect => {
                    return Some(Ok(Incoming::Closed("Socket.IO disconnect".into())));
                }
                _ => return Some(Ok(Incoming::Control(wire))),
            };
            return Some(Ok(Incoming::Text { frame, start, end, wire, kind: Some(kind) }));
        }
    }

    /// Closes the connection by `deadline`. A WebSocket sends its close frame and, with
    /// `drain`, reads (and discards) until the server's, so the server sees a clean close
    /// rather than a reset. An SSE stream has no close of its own: it ends when the connection
    /// is dropped, as a browser's `EventSource.close()` ends it.
    pub async fn close(&mut self, deadline: Instant, drain: bool) {
        let Link::Ws(ws) = &mut self.link else {
            return;
        };
        if timeout_at(deadline, ws.close(None)).await.is_err() || !drain {
            return;
        }
        let _ = timeout_at(deadline, async {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends a close frame and reads until the server's; true if it arrived by `deadline`. An
    /// SSE stream has no handshake to complete (see [`Conn::close`]): true.
    pub async fn close_handshake(&mut self, deadline: Instant) -> bool {
        let Link::Ws(ws) = &mut self.link else {
            return true;
        };
        if timeout_at(deadline, ws.close(None)).await.is_err() {
            return false;
        }
        timeout_at(deadline, async {
            while let Some(m) = ws.next().await {
                match m {
                    Ok(m) if m.is_close() => return true,
                    Ok(_) => {}
                    // tungstenite reports the end of a completed close handshake this way.
                    Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => return true,
                    Err(_) => return false,
                }
            }
            // The stream ends once the server's close frame has been processed.
            true
        })
        .await
        .unwrap_or(false)
    }
}

/// Where `part` (a slice of `whole`, as the decoders return) lies in `whole`; an empty span at
/// the end if it is not a slice of it (which would be a decoder bug, not worth a panic).
fn span_in(whole: &str, part: &str) -> (usize, usize) {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= whole.len() => (start, end),
        _ => (whole.len(), whole.len()),
    }
}

/// GET /api/symbols and return the symbol names.
pub async fn fetch_symbols(target: &Target, timeout: Duration) -> Result<Vec<String>> {
    let body = tokio::time::timeout(timeout, http_get(target, "/api/symbols")).await.map_err(|_| anyhow!("GET {}/api/symbols timed out", target.http_base()))??;
    parse_symbols(&body).with_context(|| format!("parsing GET {}/api/symbols", target.http_base()))
}

/// Minimal HTTP GET. Sends HTTP/1.0 + `Connection: close`, so the server should answer
/// without chunking and close the connection; chunked bodies are decoded anyway in case it
/// answers 1.1-style.
pub async fn http_get(target: &Target, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(target.addr).await.with_context(|| format!("TCP connect to {}", target.addr))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: tickerfeed-loadgen\r\nConnection: close\r\n\r\n", target.authority);
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    parse_http_response(&buf).with_context(|| format!("GET {}{path}", target.http_base()))
}

/// Minimal HTTP POST of a JSON body (`--resume-feed`). Reads until the response is complete
/// (by Content-Length or the last chunk) rather than until the server closes, so a server that
/// keeps the connection open despite `Connection: close` cannot hang the run.
pub async fn http_post_json(target: &Target, path: &str, body: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(target.addr).await.with_context(|| format!("TCP connect to {}", target.addr))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: tickerfeed-loadgen\r\nConnection: close\r\n\r\n{body}",
        target.authority,
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !response_complete(&buf) {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_http_response(&buf).with_context(|| format!("POST {}{path}", target.http_base()))
}

/// Whether `buf` holds a whole HTTP response: the headers and then Content-Length bytes, or a
/// chunked body through its last chunk. Without either, only the server's close ends it.
pub fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let body = &buf[end + 4..];
    let head = String::from_utf8_lossy(&buf[..end]);
    for line in head.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            return v.parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            return body.ends_with(b"0\r\n\r\n") && decode_chunked(body).is_ok();
        }
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a complete HTTP response into status and body; non-2xx is an error.
pub fn parse_http_response(buf: &[u8]) -> Result<Vec<u8>> {
    let end = find(buf, b"\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response (no end of headers)"))?;
    let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 HTTP headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("malformed HTTP status line {status_line:?}"))?;
    let body = &buf[end + 4..];
    ensure!((200..300).contains(&code), "HTTP status {status_line:?}: {}", frame::truncate(&String::from_utf8_lossy(body), 200));
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
        }
    }
    if chunked {
        decode_chunked(body)
    } else if let Some(n) = length {
        ensure!(body.len() >= n, "HTTP body truncated ({} of {n} bytes)", body.len());
        Ok(body[..n].to_vec())
    } else {
        Ok(body.to_vec())
    }
}

/// Decodes a `Transfer-Encoding: chunked` body (extensions and trailers ignored).
pub fn decode_chunked(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let eol = find(b, b"\r\n").ok_or_else(|| anyhow!("chunked body: missing chunk size line"))?;
        let size_str = std::str::from_utf8(&b[..eol])?.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16).with_context(|| format!("chunked body: bad size {size_str:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(b.len() >= size + 2, "chunked body truncated");
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `[{"symbol":"AAPL",...}, ...]`; a plain `["AAPL", ...]` is accepted too.
pub fn parse_symbols(body: &[u8]) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Obj { symbol: String },
        Name(String),
    }
    let entries: Vec<Entry> = serde_json::from_slice(body)?;
    let mut out: Vec<String> = entries
        .into_iter()
        .map(|e| match e {
            Entry::Obj { symbol } | Entry::Name(symbol) => symbol,
        })
        .collect();
    // Duplicates would let a client "choose" the same symbol twice.
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    Ok(out)
}
