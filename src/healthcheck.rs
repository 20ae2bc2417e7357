//! `tickerfeed healthcheck`: asks a running server's `/healthz` and exits 0 when it answers
//! 200. Container images have no curl; the binary checks itself.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Runs the check against `url` (`http://host:port`). Prints why it failed.
pub fn run(url: &str) -> ExitCode {
    match check(url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("healthcheck {url}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(url: &str) -> Result<(), String> {
    let authority = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?.trim_end_matches('/');
    let addr = authority.to_socket_addrs().map_err(|e| format!("bad address: {e}"))?.next().ok_or("address resolves to nothing")?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET /healthz HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("read: {e}"))?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") { Ok(()) } else { Err(format!("answered '{status}'")) }
}
