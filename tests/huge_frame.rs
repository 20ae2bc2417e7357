//! A frame header announcing 2^62 bytes, then a 64 MiB stream behind it: refused on the
//! header, and the server's memory does not follow the stream. Alone in its test binary because
//! it measures the resident memory of the process the server runs in, which other tests running
//! in parallel threads would disturb.

mod common;

use std::time::Duration;

use common::raw::{MASK, Raw, disconnects, length_field, rss_bytes};
use common::{assert_others_unaffected, start};
use tokio::io::AsyncWriteExt;

#[actix_web::test]
async fn a_huge_frame_is_refused_on_its_header_and_its_stream_is_never_held() {
    let server = start(&[]).await;
    let mut raw = Raw::connect(&server).await;
    let before = rss_bytes();
    // A text frame announcing 2^62 bytes: the 1009 must come on the header alone.
    let mut header = vec![0x81];
    header.extend(length_field(1 << 62));
    header.extend_from_slice(&MASK);
    raw.send(&header).await;
    let (code, reason) = raw.recv_close().await;
    assert_eq!(code, 1009, "{}", String::from_utf8_lossy(&reason));
    assert_eq!(String::from_utf8_lossy(&reason), "message too big: the limit is 4096 bytes");
    // The peer keeps streaming what it announced: the server must drop the connection rather
    // than take 64 MiB (writes fail once it has reset the connection).
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0usize;
    let streaming = async {
        while sent < 64 << 20 {
            match raw.stream.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => return false,
            }
        }
        true
    };
    let wrote_everything = tokio::time::timeout(Duration::from_secs(30), streaming).await.expect("the server ends the connection in time");
    assert!(!wrote_everything, "the server read all of a 64 MiB frame it had refused");
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 8 << 20, "RSS grew by {} KiB after {} KiB were sent", grown >> 10, sent >> 10);
    assert_eq!(disconnects(&server, "limit").await, 1.0, "counted as a limit, not a protocol error");
    assert_others_unaffected(&server).await;
    server.shutdown().await;
}
