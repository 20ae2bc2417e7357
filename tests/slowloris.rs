//! The deadlines and size limits of a request's head (slowloris and friends): a head trickled
//! one byte a second, a connection that never sends, a second request trickled on a kept-alive
//! connection, a request body trickled, too many headers, a head too large. Each is closed on
//! time or refused, and the server keeps serving everyone else meanwhile. Small timeouts (set with the flags) keep the
//! tests fast; the margins are actix-http's 500 ms clock early and up to 1 s late (a busy CI).

mod common;

use std::time::{Duration, Instant};

use common::{Client, EVENT_TIMEOUT, assert_others_unaffected, http, start};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server ends the connection (EOF or reset); what was read, and when it ended.
async fn read_until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&received).to_string(), Instant::now()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Writes `head` and then one byte a second, for as long as the server takes it.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, head: impl AsRef<[u8]> + Send + 'static) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        if writer.write_all(head.as_ref()).await.is_err() {
            return sent;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"a").await.is_err() {
                return sent;
            }
            sent += 1;
        }
    })
}

/// A client that subscribes over /ws and gets live quotes, and a REST answer: the server works
/// for others.
async fn others_are_served(server: &tickerfeed::server::RunningServer) {
    let (mut client, _) = Client::connect_welcomed(server).await;
    client.send(json!({"op":"subscribe","symbols":["AAPL"],"throttle_ms":0})).await;
    client.recv_type("subscribed").await;
    client.recv_type("quotes").await;
    client.recv_type("quotes").await;
    let (status, _) = http(server, "GET", "/api/quotes/AAPL", None).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_head_trickled_one_byte_a_second_is_closed_at_the_request_head_timeout_while_others_are_served() {
    let timeout = 2.0;
    let server = start(&["--request-head-timeout", "2", "--sim-rate", "5000"]).await;
    let started = Instant::now();
    let (mut slow_reader, slow_writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let writer = trickle(slow_writer, b"GET /api/quotes/AAPL HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    // A connection that sends nothing at all gets the same deadline.
    let (mut silent, _silent_writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let ((slow, slow_at), (quiet, quiet_at), ()) =
        tokio::time::timeout(EVENT_TIMEOUT, async { tokio::join!(read_until_closed(&mut slow_reader), read_until_closed(&mut silent), others_are_served(&server)) })
            .await
            .expect("the slow connections are closed");
    for (what, received, closed_at) in [("trickled head", slow, slow_at), ("silent connection", quiet, quiet_at)] {
        let after = closed_at - started;
        eprintln!("{what}: closed after {after:?} (request head timeout {timeout} s)");
        assert!(received.starts_with("HTTP/1.1 408"), "{what}: {received:?}");
        // actix-http takes the deadline from its clock, which ticks every 500 ms: up to 0.5 s early.
        assert!(after.as_secs_f64() >= timeout - 0.6 && after.as_secs_f64() < timeout + 1.0, "{what}: closed after {after:?}");
    }
    let trickled = writer.await.unwrap();
    assert!(trickled <= 3, "the server took {trickled} trickled bytes");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_second_request_trickled_on_a_kept_alive_connection_is_closed_too() {
    // actix-http's head deadline covers a connection's first request only: a kept-alive
    // connection is bounded by keep-alive + head timeout after its last answer (http::connection).
    let server = start(&["--request-head-timeout", "1", "--keep-alive-timeout", "1"]).await;
    let (mut reader, mut writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
    writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\"status\":\"ok\"}") {
        let n = tokio::time::timeout(EVENT_TIMEOUT, reader.read(&mut buffer)).await.expect("the first answer").unwrap();
        assert!(n > 0, "closed before the first answer: {answer:?}");
        answer.extend_from_slice(&buffer[..n]);
    }
    let answered = Instant::now();
    let trickler = trickle(writer, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    let (received, closed_at) = tokio::time::timeout(EVENT_TIMEOUT, async { tokio::join!(read_until_closed(&mut reader), others_are_served(&server)).0 })
        .await
        .expect("the trickled second request is closed");
    let after = closed_at - answered;
    eprintln!("second request trickled: closed {after:?} after the first answer (keep-alive 1 s + head 1 s)");
    assert!(!received.contains("HTTP/1.1 200"), "{received:?}");
    assert!(after >= Duration::from_millis(1900) && after < Duration::from_millis(3000), "closed after {after:?}");
    trickler.abort();
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

/// A request body trickled a byte a second after its head: 408 with the JSON error at
/// `--request-body-timeout`, the connection closed, the server serving others meanwhile. For
/// feed control and for a Socket.IO polling POST (the two routes that read a body).
#[actix_web::test]
async fn a_body_trickled_one_byte_a_second_gets_408_at_the_request_body_timeout() {
    let timeout = 2.0;
    let server = start(&["--request-body-timeout", "2"]).await;
    let polling = common::eio::Polling::connected(&server).await;
    let heads = [
        ("feed control", "POST /api/feeds/sim/control HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{".to_string()),
        (
            "Socket.IO polling POST",
            format!("POST /socket.io/?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n4", polling.sid),
        ),
    ];
    for (what, head) in heads {
        let started = Instant::now();
        let (mut reader, writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
        let trickler = trickle(writer, head);
        let read = async {
            // When the answer's first bytes arrive, then everything until the server closes.
            let mut first = [0u8; 1];
            let n = reader.read(&mut first).await.unwrap_or(0);
            let answered_at = Instant::now();
            let (rest, closed_at) = read_until_closed(&mut reader).await;
            (format!("{}{rest}", String::from_utf8_lossy(&first[..n])), answered_at, closed_at)
        };
        let ((received, answered_at, closed_at), ()) =
            tokio::time::timeout(EVENT_TIMEOUT, async { tokio::join!(read, others_are_served(&server)) }).await.expect("the trickled body is answered and closed");
        let (answered, closed) = ((answered_at - started).as_secs_f64(), (closed_at - started).as_secs_f64());
        eprintln!("{what}: body trickled, answered after {answered:.3} s, closed after {closed:.3} s (body timeout {timeout} s, disconnect timeout 1 s)");
        assert!(received.starts_with("HTTP/1.1 408"), "{what}: {received:?}");
        assert!(received.contains(r#""error":"request_timeout""#) && received.contains("--request-body-timeout"), "{what}: {received:?}");
        assert!(answered >= timeout - 0.1 && answered < timeout + 1.0, "{what}: answered after {answered} s");
        // actix-http closes a connection whose body was not read, after its disconnect timeout.
        assert!(closed < answered + 1.0 + 1.0, "{what}: closed {closed} s after the start");
        trickler.abort();
    }
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

/// Sends `head` (written whole, no trickle) and reads the answer until the server closes.
async fn send_head(server: &tickerfeed::server::RunningServer, head: Vec<u8>) -> String {
    let (mut reader, mut writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
    // Written from another task: the server may answer before it has read everything.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&head).await;
        writer
    });
    let (received, _) = tokio::time::timeout(EVENT_TIMEOUT, read_until_closed(&mut reader)).await.expect("the server answers and closes");
    drop(writing.await);
    received
}

fn head_with_headers(count: usize) -> Vec<u8> {
    // Host plus count - 1 others; `Connection: close` is one of them.
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for i in 0..count - 2 {
        head.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[actix_web::test]
async fn more_than_96_headers_get_431_and_the_connection_closes() {
    let server = start(&[]).await;
    let answer = send_head(&server, head_with_headers(96)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "96 headers: {answer:?}");
    let answer = send_head(&server, head_with_headers(97)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "97 headers: {answer:?}");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

#[actix_web::test]
async fn a_head_still_incomplete_at_128_kib_gets_431_and_the_connection_closes() {
    let server = start(&[]).await;
    // A complete head just under the limit is served.
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 120 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    let answer = send_head(&server, head).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "a 120 KiB head: {answer:.100}");
    // One that has not ended after 130 KiB is refused (and nothing of it is left unread).
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 130 * 1024));
    let answer = send_head(&server, head).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "a 130 KiB unfinished head: {answer:.100}");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}

/// Asks for an answer of about 9 bytes per symbol (`symbols` unknown symbols, listed back) and
/// never reads it, through a small receive buffer; returns how long after the request the
/// server dropped the connection (its side of it gone from the process's descriptors).
async fn never_read_the_answer(server: &tickerfeed::server::RunningServer, connection: &str, symbols: usize) -> Duration {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let symbols: Vec<String> = (0..symbols).map(|i| format!("Q{i:05}")).collect();
    let request = format!("GET /api/quotes?symbols={} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n", symbols.join(","));
    stream.write_all(request.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let client = stream.local_addr().unwrap();
    // First its accept (the connect returns before the server has taken it), then its end.
    while common::server_side_socket(server.addr, client).is_none() {
        assert!(sent.elapsed() < EVENT_TIMEOUT, "the server never accepted the connection");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while common::server_side_socket(server.addr, client).is_some() {
        assert!(sent.elapsed() < EVENT_TIMEOUT, "a client that never reads its answer ({connection}) was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent.elapsed()
}

#[actix_web::test]
async fn a_client_that_never_reads_its_answer_is_dropped_at_keep_alive_plus_head_timeout() {
    let server = start(&["--keep-alive-timeout", "1", "--request-head-timeout", "2", "--send-buffer-bytes", "4096"]).await;
    // actix-http has no deadline for writing an answer: it asks the body for its end only once
    // its write buffer drains, so neither its keep-alive nor its disconnect timer ever starts.
    // The connection watchdog counts the answer as handed over once its last byte is taken and
    // drops the connection keep-alive + request head (3 s) later, kept alive or not.
    for connection in ["keep-alive", "close"] {
        // About 80 KB: actix-http's write buffer stays over its 16 KiB threshold.
        let dropped = never_read_the_answer(&server, connection, 9000).await;
        eprintln!("a client never reading its answer ({connection}): dropped after {dropped:?}");
        assert!(dropped >= Duration::from_millis(2950) && dropped < Duration::from_millis(4000), "{connection}: {dropped:?}");
    }
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}
