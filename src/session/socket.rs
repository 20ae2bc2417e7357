//! The accepted TCP socket under a WebSocket session: its send-buffer bound and the forced
//! close of a connection that cannot flush.
//!
//! By default Linux lets a socket's send buffer grow to 4 MB, so a client that stops reading
//! would pin that much kernel memory; `SO_SNDBUF` set at accept bounds it. Backpressure itself
//! needs no system call (see [`super::output`]).
//!
//! The file descriptor belongs to the connection (actix-http's, or after a WebSocket handover
//! the session's, `super::handover`). It is recorded with the socket's inode when the
//! connection is accepted; the only destructive call made on it ([`SocketProbe::force_close`])
//! first checks the inode, so a descriptor number reused by a later connection is never touched.

use std::os::fd::{AsRawFd, RawFd};

/// What `on_connect` records about an accepted TCP connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketProbe {
    fd: RawFd,
    inode: u64,
}

impl SocketProbe {
    /// Sets up an accepted socket: bounded send buffer, no Nagle delay (quotes are latency
    /// sensitive and actix already coalesces frames into large writes). Returns the probe to
    /// store in the connection's extensions.
    pub(crate) fn on_accept(stream: &tokio::net::TcpStream, send_buffer_bytes: usize) -> Option<SocketProbe> {
        let sock = socket2::SockRef::from(stream);
        if send_buffer_bytes > 0 {
            // The kernel doubles this value for bookkeeping; `send_buffer_bytes` is what the
            // README documents as the per-client kernel budget / 2.
            if let Err(e) = sock.set_send_buffer_size(send_buffer_bytes) {
                tracing::warn!("could not set SO_SNDBUF to {send_buffer_bytes}: {e}");
            }
        }
        let _ = sock.set_tcp_nodelay(true);
        let fd = stream.as_raw_fd();
        let inode = inode_of(fd)?;
        Some(SocketProbe { fd, inode })
    }

    /// Drops the connection without waiting for its queued data: the peer gets a reset and
    /// whoever serves the socket, finding it shut, releases the connection and its buffers.
    pub(crate) fn force_close(&self) -> bool {
        if inode_of(self.fd) != Some(self.inode) {
            return false;
        }
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: the inode check above makes sure the descriptor is still this connection's.
        unsafe {
            libc::setsockopt(self.fd, libc::SOL_SOCKET, libc::SO_LINGER, (&linger as *const libc::linger).cast(), std::mem::size_of::<libc::linger>() as libc::socklen_t);
            libc::shutdown(self.fd, libc::SHUT_RDWR) == 0
        }
    }

    /// Ends the connection after what is queued: the peer reads it and then the end of the
    /// stream, and whoever serves the socket, reading the end too, releases the connection. Used
    /// once a close handshake is over: the connection would otherwise stay open for as long as
    /// the peer sends (RFC 6455 §7.1.1: the server closes the TCP connection first).
    pub(crate) fn shutdown(&self) -> bool {
        if inode_of(self.fd) != Some(self.inode) {
            return false;
        }
        // SAFETY: the inode check above makes sure the descriptor is still this connection's.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) == 0 }
    }
}

fn inode_of(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed struct only.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut stat) != 0 {
            return None;
        }
        Some(stat.st_ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes in the socket's send queue (sent or not, not yet acknowledged).
    fn send_queue(fd: RawFd) -> u64 {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) }, 0);
        queued as u64
    }

    #[tokio::test]
    async fn stalled_socket_queue_is_bounded_and_force_close_resets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let probe = SocketProbe::on_accept(&server, 32 * 1024).unwrap();
        // The client never reads: write until the kernel refuses.
        let chunk = vec![0u8; 16 * 1024];
        let mut total = 0;
        loop {
            match server.try_write(&chunk) {
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        // With SO_SNDBUF bounded, the stalled socket holds at most about 2x the setting in
        // its send queue (the peer's receive buffer takes the rest of what was written);
        // unbounded, Linux would let it grow to megabytes.
        let queued = send_queue(server.as_raw_fd());
        assert!(queued > 0 && queued <= 64 * 1024 + 16 * 1024, "send queue {queued} after writing {total}");
        assert!(probe.force_close());
        // actix's next write fails, so it drops the connection; with SO_LINGER 0 the close
        // discards whatever is still queued instead of lingering with it.
        // SAFETY: a one-byte send from a live buffer on the test's own socket.
        let sent = unsafe { libc::send(server.as_raw_fd(), b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        assert_eq!((sent, std::io::Error::last_os_error().kind()), (-1, std::io::ErrorKind::BrokenPipe));
        drop(server);
        let mut buf = vec![0u8; 64 * 1024];
        let outcome = loop {
            client.readable().await.unwrap();
            match client.try_read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => break Err(e.kind()),
            }
        };
        // EOF or reset, depending on whether the FIN of the shutdown arrived first: either way
        // the connection is over for the peer.
        assert!(matches!(outcome, Ok(()) | Err(std::io::ErrorKind::ConnectionReset)), "{outcome:?}");
    }

    #[tokio::test]
    async fn force_close_leaves_a_reused_descriptor_alone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let probe = SocketProbe::on_accept(&server, 0).unwrap();
        // Same number, another file: what a reused descriptor looks like.
        let stale = SocketProbe { fd: probe.fd, inode: probe.inode + 1 };
        assert!(!stale.force_close());
    }
}
