//! A client's malformed request is the client's mistake: the server answers it and logs it at
//! DEBUG, never at ERROR (actix-http logs these as "stream error" ERRORs of its own; see
//! `tickerfeed::logging`). This file installs the binary's subscriber globally, which a test
//! binary can do once, so it holds this one test.

mod common;

use common::{http_json, http_raw, start};
use tracing_subscriber::util::SubscriberInitExt;

#[actix_web::test]
async fn client_mistakes_are_not_logged_as_errors() {
    let capture = tickerfeed::logging::MemoryWriter::default();
    // The binary's setup at its default level, plus the demoted reports.
    let filter = tracing_subscriber::EnvFilter::new(format!("info,{}=debug", tickerfeed::logging::PEER_TARGET));
    tickerfeed::logging::subscriber(filter, capture.clone(), false).init();
    let server = start(&[]).await;

    // 100 headers: more than actix-http parses (96).
    let mut request = format!("GET /api/symbols HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", server.addr);
    for i in 0..100 {
        request.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    assert_eq!(http_raw(&server, request.as_bytes()).await.status, 431);
    // Not HTTP at all.
    assert_eq!(http_raw(&server, b"this is not http\r\n\r\n").await.status, 400);
    // A header that is not a header.
    assert_eq!(http_raw(&server, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").await.status, 400);

    // The server closes each connection after its log call, so the lines are all written by
    // now; and the server still serves.
    assert_eq!(http_json(&server, "GET", "/healthz", None).await.0, 200);
    let log = capture.text();
    assert!(!log.contains("ERROR"), "a client's mistake was logged as an ERROR:\n{log}");
    let demoted: Vec<&str> = log.lines().filter(|line| line.contains(" DEBUG ") && line.contains(tickerfeed::logging::PEER_TARGET)).collect();
    assert_eq!(demoted.len(), 3, "one DEBUG line per bad request:\n{log}");
    assert!(demoted[0].contains("message head is too large"), "{}", demoted[0]);
    server.shutdown().await;
}
