//! Connections: the target address, WebSocket connect + welcome, and the minimal HTTP GET
//! used to fetch the symbol list.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::frame::{self, Welcome};

pub type Ws = WebSocketStream<TcpStream>;

/// The server, resolved once: thousands of connects must not each do a DNS lookup (tokio's
/// lookup runs on the blocking pool).
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    /// `host[:port]` as written in the URL, for the HTTP Host header.
    pub authority: String,
    pub addr: SocketAddr,
    pub ws_config: WebSocketConfig,
}

impl Target {
    pub async fn resolve(url: &str, read_buffer: usize) -> Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid --url {url:?}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => {
                bail!("wss:// is not supported (the load generator has no TLS); use ws://")
            }
            other => bail!("--url must start with ws:// (got scheme {other:?})"),
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("--url {url:?} has no host"))?;
        // http::Uri keeps the brackets of an IPv6 literal; the resolver wants them off.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .with_context(|| format!("cannot resolve {bare}:{port}"))?
            .next()
            .ok_or_else(|| anyhow!("{bare}:{port} resolved to no address"))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| format!("{host}:{port}"));
        Ok(Target {
            url: url.to_string(),
            authority,
            addr,
            ws_config: WebSocketConfig::default().read_buffer_size(read_buffer),
        })
    }

    /// `http://host:port` for the REST API, derived from the WebSocket URL.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// TCP connect (no Nagle: the subscribe must not wait for an ACK) and WebSocket handshake.
/// `rcvbuf` sets SO_RCVBUF before connecting (it must precede the handshake to bound the TCP
/// window), so a stalled client's kernel buffer fills after kilobytes rather than megabytes.
pub async fn connect(target: &Target, rcvbuf: Option<u32>) -> Result<Ws> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = rcvbuf {
        socket
            .set_recv_buffer_size(size)
            .context("setting SO_RCVBUF")?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("TCP connect to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (ws, _response) = tokio_tungstenite::client_async_with_config(
        target.url.as_str(),
        stream,
        Some(target.ws_config),
    )
    .await
    .context("WebSocket handshake")?;
    Ok(ws)
}

/// Reads the first message, which must be `welcome`.
pub async fn read_welcome(ws: &mut Ws) -> Result<Welcome> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return frame::parse_welcome(&t).map_err(|e| anyhow!(e)),
            Some(Ok(Message::Close(f))) => {
                bail!("server closed the connection before welcome: {f:?}")
            }
            Some(Ok(_)) => continue, // ping/pong
            Some(Err(e)) => return Err(anyhow!(e).context("reading welcome")),
            None => bail!("connection ended before welcome"),
        }
    }
}

/// GET /api/symbols and return the symbol names.
pub async fn fetch_symbols(target: &Target, timeout: Duration) -> Result<Vec<String>> {
    let body = tokio::time::timeout(timeout, http_get(target, "/api/symbols"))
        .await
        .map_err(|_| anyhow!("GET {}/api/symbols timed out", target.http_base()))??;
    parse_symbols(&body).with_context(|| format!("parsing GET {}/api/symbols", target.http_base()))
}

/// Minimal HTTP GET. Sends HTTP/1.0 + `Connection: close`, so the server should answer
/// without chunking and close the connection; chunked bodies are decoded anyway in case it
/// answers 1.1-style.
pub async fn http_get(target: &Target, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("TCP connect to {}", target.addr))?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: tickerfeed-loadgen\r\nConnection: close\r\n\r\n",
        target.authority
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    parse_http_response(&buf).with_context(|| format!("GET {}{path}", target.http_base()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a complete HTTP response into status and body; non-2xx is an error.
pub fn parse_http_response(buf: &[u8]) -> Result<Vec<u8>> {
    let end = find(buf, b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response (no end of headers)"))?;
    let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 HTTP headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line {status_line:?}"))?;
    let body = &buf[end + 4..];
    ensure!(
        (200..300).contains(&code),
        "HTTP status {status_line:?}: {}",
        frame::truncate(&String::from_utf8_lossy(body), 200)
    );
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
        }
    }
    if chunked {
        decode_chunked(body)
    } else if let Some(n) = length {
        ensure!(
            body.len() >= n,
            "HTTP body truncated ({} of {n} bytes)",
            body.len()
        );
        Ok(body[..n].to_vec())
    } else {
        Ok(body.to_vec())
    }
}

/// Decodes a `Transfer-Encoding: chunked` body (extensions and trailers ignored).
pub fn decode_chunked(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let eol =
            find(b, b"\r\n").ok_or_else(|| anyhow!("chunked body: missing chunk size line"))?;
        let size_str = std::str::from_utf8(&b[..eol])?
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let size = usize::from_str_radix(size_str, 16)
            .with_context(|| format!("chunked body: bad size {size_str:?}"))?;
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
