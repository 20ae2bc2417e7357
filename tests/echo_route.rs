//! `GET /test/echo`, the test-only echo Autobahn|Testsuite runs its echo cases against
//! (tests/autobahn/, docs/CONFORMANCE.md): absent unless `--test-echo true`, and when on, an echo
//! on `/ws`'s decoder and framing that sends nothing of protocol v1.

mod common;

use common::raw::{Raw, frame, text};
use common::{http_full, start};

#[actix_web::test]
async fn without_the_setting_the_echo_route_is_404() {
    let server = start(&[]).await;
    let (_, head) = Raw::handshake(&server, &Raw::upgrade_request(&server, "/test/echo", "")).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let response = http_full(&server, "GET", "/test/echo", None).await;
    assert_eq!(response.status, 404);
    assert!(response.body.contains("no route for GET /test/echo"), "{}", response.body);
    server.shutdown().await;
}

#[actix_web::test]
async fn with_the_setting_messages_come_back_as_sent_on_the_ws_decoder() {
    let server = start(&["--test-echo", "true"]).await;
    let (mut raw, head) = Raw::handshake(&server, &Raw::upgrade_request(&server, "/test/echo", "")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // No welcome: the first frame is the echo of the first message, sent whole even when it
    // came in fragments with a ping between them.
    raw.send(&text("héllo")).await;
    raw.send(&[frame(0x01, b"frag"), frame(0x89, b"p"), frame(0x80, b"mented")].concat()).await;
    raw.send(&frame(0x82, &[0, 0xff, 1])).await;
    let mut frames = Vec::new();
    for _ in 0..4 {
        let frame = raw.next_frame().await.expect("an echo");
        frames.push((frame.opcode, frame.payload));
    }
    assert_eq!(frames, [(0x1, "héllo".as_bytes().to_vec()), (0xA, b"p".to_vec()), (0x1, b"fragmented".to_vec()), (0x2, vec![0, 0xff, 1])]);
    // /ws's rules: invalid UTF-8 is 1007.
    raw.send(&frame(0x81, &[0xff])).await;
    assert_eq!(raw.recv_close().await.0, 1007);
    server.shutdown().await;
}
