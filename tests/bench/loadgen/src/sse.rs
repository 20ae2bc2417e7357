//! Server-Sent Events over HTTP/1.1 for `--protocol sse`: the request that subscribes (`GET
//! /sse?symbols=…&throttle_ms=…`), [`Decoder`], which turns the response's bytes — as they
//! arrive, cut anywhere — into the blocks of its event stream (the head, then the chunked
//! transfer coding, then `text/event-stream` as the HTML standard parses it), and [`SseStream`],
//! one connection reading through it.
//!
//! Invariant: whatever the server sends, a decoder holds at most one response head
//! ([`MAX_HEAD`]) or one block of the event stream ([`MAX_EVENT`]) beyond the bytes of one read,
//! and a stream it cannot read is an error that names the layer and the fault, never a panic.
//! An event's `data` is handed on unchanged: it is the /ws JSON, so it goes through the same
//! accounting as a /ws text frame ([`crate::frame::process`]); a block without data (the
//! `: keep-alive` comment, `retry:`) is housekeeping, counted like Engine.IO's.
//!
//! Like a browser's `EventSource`, the client writes nothing after its request and ends a stream
//! by closing the connection: HTTP has no close handshake for a response, and tickerfeed (like
//! most servers) goes on streaming to a client that only half-closes.

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::frame::truncate;

/// A response head longer than this is refused (tickerfeed's is about 200 bytes).
pub const MAX_HEAD: usize = 16 * 1024;
/// A block of the event stream (an event with its `event:` and `data:` lines) longer than this
/// is refused. A quotes event is bounded by the server's `max_frame_bytes` (16 KiB by default);
/// the margin leaves room for a server configured larger.
pub const MAX_EVENT: usize = 1024 * 1024;
/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 1024;
/// The UTF-8 byte-order mark, which an event stream may start with (and which is not data).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One block of the event stream, or its end.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// An event with data: `block[start..end]` is its data (the /ws JSON); `wire` is the
    /// block's size in the stream (its `event:` and `data:` lines and the blank line).
    Event { block: Utf8Bytes, start: usize, end: usize, wire: usize },
    /// A block without data — a comment, `retry:`, an event with no `data:` line — and its size.
    Control(usize),
    /// The body ended as HTTP ends it: the last chunk, Content-Length bytes, or (a body without
    /// either) the server's close.
    End,
}

/// How the body's end is known.
#[derive(Debug)]
enum Framing {
    Chunked(Chunk),
    /// Content-Length: bytes still to come (never 0: that is `Ended`).
    Length(u64),
    /// Neither chunked nor a length: the body ends when the server closes.
    Close,
    Ended,
}

/// Where the chunked decoder is (RFC 9112 §7.1).
#[derive(Debug)]
enum Chunk {
    /// In a chunk-size line: the size so far, whether it has a digit, whether its extensions
    /// (`;name=value`) have begun, and the line's length so far.
    Size {
        size: u64,
        digit: bool,
        ext: bool,
        len: usize,
    },
    /// The size line's CR was read; its LF is next.
    SizeLf(u64),
    /// In a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line (`len` bytes so far), until an empty one.
    Trailer {
        len: usize,
    },
    /// A trailer line's CR was read; `empty`: the line was empty, so the body ends at the LF.
    TrailerLf {
        empty: bool,
    },
}

impl Chunk {
    fn size_line() -> Chunk {
        Chunk::Size { size: 0, digit: false, ext: false, len: 0 }
    }
}

/// The `data` of the block being read.
#[derive(Debug, Default)]
enum Data {
    #[default]
    None,
    /// One `data:` line: the range of its value in the block.
    One(usize, usize),
    /// Several: their values joined by `\n`, as the standard says.
    Many(Vec<u8>),
}

/// The response of `GET /sse`, decoded incrementally: [`Decoder::feed`] takes bytes as they are
/// read, [`Decoder::next`] hands out the blocks that are complete. Take every block before
/// feeding more: that is what bounds the buffer.
#[derive(Debug)]
pub struct Decoder {
    /// The response head while it is incomplete; `None` once it has been read.
    head: Option<Vec<u8>>,
    framing: Framing,
    /// Body bytes not yet handed out, from the first byte of the current block.
    text: BytesMut,
    /// The start of the first line of `text` not yet read.
    line: usize,
    /// How many bytes from `line` on are known to hold no line end.
    scanned: usize,
    data: Data,
    /// The body has begun: a leading byte-order mark is behind us.
    started: bool,
    end_reported: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { head: Some(Vec::new()), framing: Framing::Close, text: BytesMut::new(), line: 0, scanned: 0, data: Data::None, started: false, end_reported: false }
    }
}

impl Decoder {
    /// Takes the next bytes of the response. Fails on a response that is not a `200`
    /// `text/event-stream` (the message quotes the status and the start of the body) or on a
    /// body that breaks its transfer coding.
    pub fn feed(&mut self, raw: &[u8]) -> Result<()> {
        let Some(head) = &mut self.head else {
            return self.body(raw);
        };
        // The blank line may straddle two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(raw);
        let Some(at) = find(&head[from..], b"\r\n\r\n").map(|i| from + i) else {
            ensure!(head.len() <= MAX_HEAD, "SSE response: no end of the head within {MAX_HEAD} bytes");
            return Ok(());
        };
        ensure!(at <= MAX_HEAD, "SSE response: a head of more than {MAX_HEAD} bytes");
        let head = self.head.take().unwrap_or_default();
        let rest = &head[at + 4..];
        self.framing = parse_head(&head[..at], rest)?;
        self.body(rest)
    }

    /// The connection ended. Only a body delimited by the close ends well so; for the others
    /// the caller sees the stream stop without [`Item::End`].
    pub fn finish(&mut self) -> Result<()> {
        if let Some(head) = &self.head {
            bail!("SSE response: the connection ended after {} bytes, before the end of the head", head.len());
        }
        if matches!(self.framing, Framing::Close) {
            self.framing = Framing::Ended;
        }
        Ok(())
    }

    /// Removes the transfer coding from `raw` into `text`.
    fn body(&mut self, mut raw: &[u8]) -> Result<()> {
        while !raw.is_empty() {
            match &mut self.framing {
                Framing::Ended => bail!("SSE response: {} bytes after the end of the body", raw.len()),
                Framing::Close => {
                    self.text.extend_from_slice(raw);
                    raw = &[];
                }
                Framing::Length(left) => {
                    let n = (*left).min(raw.len() as u64) as usize;
                    self.text.extend_from_slice(&raw[..n]);
                    raw = &raw[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.framing = Framing::Ended;
                    }
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = (*left).min(raw.len() as u64) as usize;
                    self.text.extend_from_slice(&raw[..n]);
                    raw = &raw[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.framing = Framing::Chunked(Chunk::DataCr);
                    }
                }
                Framing::Chunked(chunk) => {
                    if chunk_step(chunk, raw[0])? {
                        self.framing = Framing::Ended;
                    }
                    raw = &raw[1..];
                }
            }
        }
        Ok(())
    }

    fn body_ended(&self) -> bool {
        self.head.is_none() && matches!(self.framing, Framing::Ended)
    }

    /// The next complete block, [`Item::End`] once after the body's end, or `None` until more
    /// bytes are fed. Fails on a block over [`MAX_EVENT`] or an event that is not UTF-8.
    pub fn next(&mut self) -> Result<Option<Item>> {
        if self.head.is_some() {
            return Ok(None);
        }
        if !self.started {
            if self.text.len() < BOM.len() && BOM.starts_with(&self.text[..]) && !self.body_ended() {
                return Ok(None); // perhaps a byte-order mark, perhaps not: wait
            }
            if self.text.starts_with(BOM) {
                let _ = self.text.split_to(BOM.len());
            }
            self.started = true;
        }
        loop {
            let from = self.line + self.scanned;
            let Some(i) = find_eol(&self.text[from..]) else {
                self.scanned = self.text.len() - self.line;
                break;
            };
            let eol = from + i;
            let next_line = if self.text[eol] == b'\r' {
                match self.text.get(eol + 1) {
                    Some(b'\n') => eol + 2,
                    Some(_) => eol + 1,
                    None if self.body_ended() => eol + 1,
                    None => {
                        // CR LF may be split between two reads.
                        self.scanned = eol - self.line;
                        break;
                    }
                }
            } else {
                eol + 1
            };
            let start = self.line;
            self.line = next_line;
            self.scanned = 0;
            if eol == start {
                return self.dispatch().map(Some);
            }
            self.field(start, eol);
        }
        ensure!(self.text.len() <= MAX_EVENT, "event stream: a block of more than {MAX_EVENT} bytes without its end");
        if self.body_ended() && !self.end_reported {
            // What is left of an unfinished block is dropped, as an EventSource drops it.
            self.end_reported = true;
            return Ok(Some(Item::End));
        }
        Ok(None)
    }

    /// Reads the field on `text[start..end]` (a non-empty line) into the current block.
    fn field(&mut self, start: usize, end: usize) {
        let line = &self.text[start..end];
        if line[0] == b':' {
            return; // a comment
        }
        let (is_data, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => (&line[..c] == b"data", start + c + 1 + usize::from(line.get(c + 1) == Some(&b' '))),
            None => (line == b"data", end),
        };
        // `event`, `id`, `retry` and unknown fields: nothing the counting needs, since the
        // JSON's `type` names the message as on /ws.
        if !is_data {
            return;
        }
        self.data = match std::mem::take(&mut self.data) {
            Data::None => Data::One(value, end),
            Data::One(a, b) => {
                let mut joined = Vec::with_capacity(b - a + 1 + end - value);
                joined.extend_from_slice(&self.text[a..b]);
                joined.push(b'\n');
                joined.extend_from_slice(&self.text[value..end]);
                Data::Many(joined)
            }
            Data::Many(mut joined) => {
                joined.push(b'\n');
                joined.extend_from_slice(&self.text[value..end]);
                Data::Many(joined)
            }
        };
    }

    /// Hands out the block that ends at `line` (its blank line read).
    fn dispatch(&mut self) -> Result<Item> {
        let block = self.text.split_to(self.line).freeze();
        self.line = 0;
        self.scanned = 0;
        let wire = block.len();
        let not_utf8 = || anyhow!("event stream: an event that is not UTF-8: {}", truncate(&String::from_utf8_lossy(&block), 200));
        Ok(match std::mem::take(&mut self.data) {
            Data::None => Item::Control(wire),
            // A clone of `Bytes` is a reference count: the event's bytes are not copied.
            Data::One(start, end) => Item::Event { block: Utf8Bytes::try_from(block.clone()).map_err(|_| not_utf8())?, start, end, wire },
            Data::Many(joined) => {
                let end = joined.len();
                Item::Event { block: Utf8Bytes::try_from(joined).map_err(|_| not_utf8())?, start: 0, end, wire }
            }
        })
    }
}

/// One byte of the chunked coding outside a chunk's data; true when it ends the body.
fn chunk_step(chunk: &mut Chunk, b: u8) -> Result<bool> {
    match chunk {
        Chunk::Size { size, digit, ext, len } => {
            *len += 1;
            ensure!(*len <= MAX_CHUNK_LINE, "chunked body: a chunk-size line of more than {MAX_CHUNK_LINE} bytes");
            if b == b'\r' {
                ensure!(*digit, "chunked body: a chunk-size line without a size");
                *chunk = Chunk::SizeLf(*size);
            } else if b == b'\n' {
                bail!("chunked body: a chunk-size line ended by LF without CR");
            } else if *ext {
                // Extensions are skipped unread.
            } else if let Some(v) = (b as char).to_digit(16) {
                *size = size.checked_mul(16).and_then(|s| s.checked_add(u64::from(v))).ok_or_else(|| anyhow!("chunked body: a chunk size over 2^64"))?;
                *digit = true;
            } else if *digit && matches!(b, b';' | b' ' | b'\t') {
                *ext = true;
            } else {
                bail!("chunked body: byte {} in a chunk-size line", show(b));
            }
        }
        Chunk::SizeLf(size) => {
            ensure!(b == b'\n', "chunked body: a chunk-size line's CR followed by {} instead of LF", show(b));
            *chunk = if *size == 0 { Chunk::Trailer { len: 0 } } else { Chunk::Data(*size) };
        }
        Chunk::Data(_) => bail!("chunked body: chunk data outside the data path (a decoder bug)"),
        Chunk::DataCr => {
            ensure!(b == b'\r', "chunked body: a chunk's data followed by {} instead of CRLF (the size was wrong)", show(b));
            *chunk = Chunk::DataLf;
        }
        Chunk::DataLf => {
            ensure!(b == b'\n', "chunked body: a chunk's data followed by CR and {} instead of LF", show(b));
            *chunk = Chunk::size_line();
        }
        Chunk::Trailer { len } => {
            if b == b'\r' {
                *chunk = Chunk::TrailerLf { empty: *len == 0 };
            } else {
                ensure!(b != b'\n', "chunked body: a trailer line ended by LF without CR");
                *len += 1;
                ensure!(*len <= MAX_HEAD, "chunked body: a trailer line of more than {MAX_HEAD} bytes");
            }
        }
        Chunk::TrailerLf { empty } => {
            ensure!(b == b'\n', "chunked body: a trailer line's CR followed by {} instead of LF", show(b));
            if *empty {
                return Ok(true);
            }
            *chunk = Chunk::Trailer { len: 0 };
        }
    }
    Ok(false)
}

/// Checks the status line and headers of the response (`rest`: what followed the head, quoted
/// when the request was refused); returns how the body is delimited.
fn parse_head(head: &[u8], rest: &[u8]) -> Result<Framing> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let Some(code) = code.filter(|_| version.starts_with("HTTP/1.")) else {
        bail!("SSE response: not an HTTP/1.x status line: {}", truncate(status_line, 200));
    };
    if code != 200 {
        bail!("SSE request refused: {}: {}", truncate(status_line, 100), truncate(&String::from_utf8_lossy(rest), 200));
    }
    let (mut content_type, mut chunked, mut length) = (None, false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("SSE response: a header line without a colon: {}", truncate(line, 200));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only chunked is understood; anything else (gzip…) would need decoding first.
            ensure!(value.eq_ignore_ascii_case("chunked"), "SSE response: unsupported Transfer-Encoding {value:?}");
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| anyhow!("SSE response: bad Content-Length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            ensure!(value.eq_ignore_ascii_case("identity"), "SSE response: unsupported Content-Encoding {value:?}");
        }
    }
    let media_type = content_type.as_deref().map(|t| t.split(';').next().unwrap_or_default().trim());
    ensure!(media_type.is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream")), "SSE response: Content-Type {:?}, not text/event-stream", content_type.unwrap_or_default());
    Ok(match (chunked, length) {
        (true, _) => Framing::Chunked(Chunk::size_line()),
        (false, Some(0)) => Framing::Ended,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    })
}

/// The first CR or LF in `hay`. Eight bytes at a time: a quotes event is one long line.
fn find_eol(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether a word has a zero byte (exact as a yes/no, whatever the borrows).
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut i = 0;
    while let Some(w) = hay.get(i..i + 8) {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        if zero_in(w ^ (ONES * u64::from(b'\n'))) || zero_in(w ^ (ONES * u64::from(b'\r'))) {
            break;
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == b'\n' || b == b'\r').map(|p| i + p)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A byte for an error message.
fn show(b: u8) -> String {
    if b.is_ascii_graphic() { format!("{:?}", b as char) } else { format!("0x{b:02x}") }
}

/// `base?symbols=A,B&throttle_ms=T[&align=1][&channels=quotes,trades]`: the subscription of an
/// SSE client, as /ws would get it in a subscribe. `throttle_ms` is left out when `None` (the
/// server's default applies), `channels` likewise.
pub fn request_path(base: &str, symbols: &[String], throttle_ms: Option<u64>, align: bool, channels: Option<&[String]>) -> String {
    let mut path = String::with_capacity(base.len() + 32 + symbols.iter().map(|s| s.len() + 1).sum::<usize>());
    path.push_str(base);
    path.push_str("?symbols=");
    for (i, symbol) in symbols.iter().enumerate() {
        if i > 0 {
            path.push(',');
        }
        for b in symbol.bytes() {
            // '*' is the wildcard; ',' within a name would split it, so it is escaped too.
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*') {
                path.push(b as char);
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if let Some(t) = throttle_ms {
        path.push_str(&format!("&throttle_ms={t}"));
    }
    if align {
        path.push_str("&align=1");
    }
    if let Some(channels) = channels {
        path.push_str("&channels=");
        for (i, channel) in channels.iter().enumerate() {
            if i > 0 {
                path.push(',');
            }
            // Channel names are `quotes`, `trades`, `bars:1s`…: ':' is fine in a query.
            for b in channel.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
                    path.push(b as char);
                } else {
                    path.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    path
}

/// One SSE connection: the request sent, the response read through a [`Decoder`].
pub struct SseStream {
    socket: TcpStream,
    decoder: Decoder,
    /// The read buffer (its size is --read-buffer-kib, like the WebSocket clients').
    buf: Box<[u8]>,
    state: State,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Open,
    /// The server closed: what the decoder still holds is handed out, then nothing.
    Closed,
    /// The stream could not be read on (the error was returned once).
    Failed,
}

impl SseStream {
    /// Sends `GET path` on `socket`, whose response is then read `read_buffer` bytes at a time.
    pub async fn open(mut socket: TcpStream, authority: &str, path: &str, read_buffer: usize) -> Result<SseStream> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: tickerfeed-loadgen\r\n\r\n");
        socket.write_all(request.as_bytes()).await.context("sending the SSE request")?;
        Ok(SseStream { socket, decoder: Decoder::default(), buf: vec![0; read_buffer.max(1)].into_boxed_slice(), state: State::Open })
    }

    /// The next block of the stream; `None` once the connection has ended (after
    /// [`Item::End`] when it ended as HTTP ends a body) or after an error. Cancel-safe: all
    /// progress is kept in `self`, and a socket read loses nothing when it is dropped.
    pub async fn next(&mut self) -> Option<Result<Item>> {
        loop {
            if self.state == State::Failed {
                return None;
            }
            match self.decoder.next() {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            if self.state == State::Closed {
                return None;
            }
            match self.socket.read(&mut self.buf).await {
                Ok(0) => {
                    self.state = State::Closed;
                    if let Err(e) = self.decoder.finish() {
                        return self.fail(e);
                    }
                }
                Ok(n) => {
                    if let Err(e) = self.decoder.feed(&self.buf[..n]) {
                        return self.fail(e);
                    }
                }
                Err(e) => return self.fail(anyhow::Error::new(e).context("reading the event stream")),
            }
        }
    }

    fn fail(&mut self, e: anyhow::Error) -> Option<Result<Item>> {
        self.state = State::Failed;
        Some(Err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::Rng;

    const HEAD: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
    const QUOTES: &str = r#"{"type":"quotes","snapshot":true,"quotes":[{"symbol":"AAPL","seq":1,"pt":5}]}"#;

    /// `body` as chunks of the given sizes (cycled), then the last chunk.
    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].min(rest.len());
            k += 1;
            // Odd chunks carry an extension, as RFC 9112 allows.
            let ext = if k % 2 == 1 { ";x=1" } else { "" };
            out.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        out
    }

    /// What a decoder makes of `response` fed in the given pieces: the items as text, or the
    /// first error.
    fn decode(response: &[u8], cuts: &[usize]) -> Result<Vec<String>> {
        let mut d = Decoder::default();
        let mut items = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&response.len())) {
            d.feed(&response[at..cut])?;
            at = cut;
            while let Some(item) = d.next()? {
                items.push(show_item(item));
            }
        }
        d.finish()?;
        while let Some(item) = d.next()? {
            items.push(show_item(item));
        }
        Ok(items)
    }

    fn show_item(item: Item) -> String {
        match item {
            Item::Event { block, start, end, wire } => format!("event {} ({wire})", &block[start..end]),
            Item::Control(n) => format!("control {n}"),
            Item::End => "end".to_string(),
        }
    }

    /// The stream tickerfeed sends, plus every line ending and field the standard allows: the
    /// body and what a client must make of it.
    fn stream() -> (String, Vec<String>) {
        let welcome = r#"{"type":"welcome","protocol":1}"#;
        let event = |block: &str, data: &str| (block.to_string(), Some(data.to_string()));
        let blocks = [
            ("retry: 1000\n\n".to_string(), None),
            event(&format!("event: welcome\ndata: {welcome}\n\n"), welcome),
            (": keep-alive\n\n".to_string(), None),
            event(&format!("event: quotes\r\ndata: {QUOTES}\r\n\r\n"), QUOTES),
            event(&format!("id: 7\revent: quotes\rdata:{QUOTES}\r\r"), QUOTES),
            // Two data lines are one value, joined by a newline; unknown fields are ignored.
            event("event: feed\ndata: {\"type\":\"feed\",\ndata: \"state\":\"running\"}\nunknown: x\n\n", "{\"type\":\"feed\",\n\"state\":\"running\"}"),
            // An event without data is not dispatched.
            ("event: nothing\n\n".to_string(), None),
        ];
        let body = blocks.iter().map(|(b, _)| b.as_str()).collect();
        let mut expected: Vec<String> = blocks
            .iter()
            .map(|(block, data)| match data {
                Some(d) => format!("event {d} ({})", block.len()),
                None => format!("control {}", block.len()),
            })
            .collect();
        expected.push("end".to_string());
        (body, expected)
    }

    #[test]
    fn decodes_every_block_whatever_the_cuts() {
        let (body, expected) = stream();
        for sizes in [&[1usize][..], &[7, 1, 300], &[4096]] {
            let response = [HEAD.as_bytes(), &chunked(body.as_bytes(), sizes)].concat();
            assert_eq!(decode(&response, &[]).unwrap(), expected, "chunks {sizes:?}");
            // Cut the bytes at every boundary, and also into single bytes.
            for cut in 0..=response.len() {
                assert_eq!(decode(&response, &[cut]).unwrap(), expected, "chunks {sizes:?}, cut at {cut}");
            }
            let every: Vec<usize> = (1..response.len()).collect();
            assert_eq!(decode(&response, &every).unwrap(), expected, "chunks {sizes:?}, byte by byte");
        }
    }

    #[test]
    fn events_in_many_chunks_and_chunks_of_many_events() {
        // A quotes event over five chunks, then three events in one chunk.
        let one = format!("event: quotes\ndata: {QUOTES}\n\n");
        let (a, rest) = one.split_at(10);
        let (b, rest) = rest.split_at(20);
        let (c, rest) = rest.split_at(1);
        let (d, e) = rest.split_at(rest.len() - 1);
        let mut body = Vec::new();
        for piece in [a, b, c, d, e] {
            body.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
        }
        let three = one.repeat(3);
        body.extend_from_slice(format!("{:x}\r\n{three}\r\n0\r\n\r\n", three.len()).as_bytes());
        let response = [HEAD.as_bytes(), &body].concat();
        let items = decode(&response, &[]).unwrap();
        assert_eq!(items.len(), 5, "{items:?}");
        assert!(items[..4].iter().all(|i| i == &format!("event {QUOTES} ({})", one.len())), "{items:?}");
        assert_eq!(items[4], "end");
    }

    #[test]
    fn a_byte_order_mark_and_bodies_without_chunks() {
        let body = format!("\u{FEFF}event: quotes\ndata: {QUOTES}\n\n");
        let expected = vec![format!("event {QUOTES} ({})", body.len() - 3), "end".to_string()];
        // Delimited by the close (HTTP/1.0 style) and by Content-Length.
        let close = format!("HTTP/1.0 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n{body}");
        let length = format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        for response in [close, length] {
            for cut in 0..=response.len() {
                assert_eq!(decode(response.as_bytes(), &[cut]).unwrap(), expected, "cut at {cut}: {response:?}");
            }
        }
        // The body ends with an unfinished block: dropped, as an EventSource drops it.
        let response = format!("HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: quotes\ndata: {QUOTES}\n");
        assert_eq!(decode(response.as_bytes(), &[]).unwrap(), ["end"]);
    }

    #[test]
    fn malformed_streams_are_errors_that_name_the_fault() {
        let ok_body = "5\r\n: x\n\n\r\n";
        let cases: Vec<(String, &str)> = vec![
            ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"error\":\"too_many_connections\"}".to_string(), "SSE request refused: HTTP/1.1 503"),
            ("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_string(), "not text/event-stream"),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string(), "not text/event-stream"),
            ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: gzip, chunked\r\n\r\n".to_string(), "Transfer-Encoding"),
            ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n\r\n".to_string(), "Content-Encoding"),
            ("SSH-2.0-OpenSSH\r\n\r\n".to_string(), "not an HTTP/1.x status line"),
            ("HTTP/1.1 200 OK\r\nno colon\r\n\r\n".to_string(), "without a colon"),
            (format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "y".repeat(MAX_HEAD)), "head"),
            (format!("{HEAD}zz\r\n"), "byte 'z' in a chunk-size line"),
            (format!("{HEAD}\r\n"), "without a size"),
            (format!("{HEAD}5\n"), "ended by LF without CR"),
            (format!("{HEAD}5\rx"), "instead of LF"),
            (format!("{HEAD}{}\r\n", "f".repeat(17)), "over 2^64"),
            (format!("{HEAD}1{}\r\n", ";".repeat(MAX_CHUNK_LINE)), "chunk-size line of more than"),
            (format!("{HEAD}2\r\n: x\n\n\r\n"), "instead of CRLF (the size was wrong)"),
            (format!("{HEAD}1\r\n:\rx"), "instead of LF"),
            (format!("{HEAD}{ok_body}0\r\n\r\nHTTP/1.1 200 OK"), "bytes after the end of the body"),
            (format!("{HEAD}0\r\ntrailer\n"), "trailer line ended by LF"),
            (format!("HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {}", "x".repeat(MAX_EVENT)), "a block of more than"),
            ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: -1\r\n\r\n".to_string(), "bad Content-Length"),
            ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream".to_string(), "before the end of the head"),
        ];
        let mut cases: Vec<(Vec<u8>, &str)> = cases.into_iter().map(|(r, f)| (r.into_bytes(), f)).collect();
        cases.push(([HEAD.as_bytes(), b"b\r\ndata: \xff\xfe\n\n\n\r\n0\r\n\r\n"].concat(), "not UTF-8"));
        for (bytes, fault) in cases {
            let e = decode(&bytes, &[]).expect_err(fault).to_string();
            assert!(e.contains(fault), "expected {fault:?} in {e:?}");
            // Cut anywhere, the same fault.
            for cut in (0..bytes.len()).step_by(bytes.len() / 50 + 1) {
                let e2 = decode(&bytes, &[cut]).expect_err(fault).to_string();
                assert!(e2.contains(fault), "cut at {cut}: expected {fault:?} in {e2:?}");
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng::new(13);
        let (body, _) = stream();
        let good = [HEAD.as_bytes(), &chunked(body.as_bytes(), &[5, 40])].concat();
        for round in 0..3000 {
            let mut bytes = good.clone();
            // Flip, drop or insert a few bytes, anywhere (the head included).
            for _ in 0..1 + round % 4 {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = rng.below(256) as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"\r\n:0;x"[rng.below(6)]),
                }
            }
            let cut = rng.below(bytes.len() + 1);
            let _ = decode(&bytes, &[cut]);
        }
    }

    #[test]
    fn line_ends_are_found_in_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for eol in [b'\n', b'\r'] {
                    let mut hay = vec![b'x'; len];
                    hay[at] = eol;
                    assert_eq!(find_eol(&hay), Some(at), "len {len}, at {at}");
                }
            }
            assert_eq!(find_eol(&vec![b'y'; len]), None);
        }
        // Bytes one away from CR and LF are not line ends.
        assert_eq!(find_eol(&[0x0b, 0x0c, 0x0e, 0x09, 0x8a, 0x8d, 0, 0xff, 0x0a]), Some(8));
    }

    #[test]
    fn the_request_carries_the_subscription() {
        let syms = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(request_path("/sse", &syms(&["AAPL", "BRK.B"]), Some(0), false, None), "/sse?symbols=AAPL,BRK.B&throttle_ms=0");
        assert_eq!(request_path("/sse", &syms(&["*"]), None, false, None), "/sse?symbols=*");
        assert_eq!(request_path("/feed/sse", &syms(&["A B", "C,D", "É"]), Some(250), false, None), "/feed/sse?symbols=A%20B,C%2CD,%C3%89&throttle_ms=250");
        assert_eq!(request_path("/sse", &syms(&["AAPL"]), Some(200), true, None), "/sse?symbols=AAPL&throttle_ms=200&align=1");
        let channels = syms(&["quotes", "trades", "bars:1s"]);
        assert_eq!(request_path("/sse", &syms(&["AAPL"]), Some(0), false, Some(&channels)), "/sse?symbols=AAPL&throttle_ms=0&channels=quotes,trades,bars:1s");
    }
}
