//! The accepted TCP socket under a WebSocket session: its send-buffer bound, and how much of
//! what the session handed to actix has reached the kernel.
//!
//! actix-ws gives a session no view of the socket: `Session::text` goes into a 32-message
//! channel, then actix-http's write buffer, then the kernel. A session that keeps producing
//! frames for a client that does not read would fill all three. So the session counts the bytes
//! it hands over and asks the kernel how many it has taken (one `TCP_INFO` call: bytes sent for
//! the first time plus bytes not sent yet); the difference is what sits in the server's own
//! buffers. It produces
//! a new frame only while that difference and the kernel's unsent bytes are small, and keeps
//! conflating otherwise.
//!
//! The file descriptor belongs to actix. It is recorded with the socket's inode when the
//! connection is accepted; the only destructive call made on it ([`SocketProbe::force_close`])
//! first checks the inode, so a descriptor number reused by a later connection is never touched.

use std::os::fd::{AsRawFd, RawFd};

/// What `on_connect` records about an accepted TCP connection.
#[derive(Debug, Clone, Copy)]
pub struct SocketProbe {
    fd: RawFd,
    inode: u64,
}

/// Bytes the kernel has taken from the application, and how many of them it has not sent yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelProgress {
    /// Total bytes written into the socket since it was opened (acked + still queued).
    pub written: u64,
    /// Bytes in the send queue not yet sent on the wire.
    pub unsent: u64,
    /// Bytes in the send queue, sent or not, not yet acknowledged.
    pub queued: u64,
}

impl SocketProbe {
    /// Sets up an accepted socket: bounded send buffer, no Nagle delay (quotes are latency
    /// sensitive and actix already coalesces frames into large writes). Returns the probe to
    /// store in the connection's extensions.
    pub fn on_accept(stream: &tokio::net::TcpStream, send_buffer_bytes: usize) -> Option<SocketProbe> {
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

    /// Reads the kernel's progress on this socket, `None` if the descriptor no longer is it.
    ///
    /// One system call: under a firehose this runs once per flush of every session, so a
    /// second one (`SIOCOUTQ`) cost several percent of the server's CPU. Everything written
    /// has either been sent once (`bytes_sent` counts retransmissions again) or is unsent.
    pub fn progress(&self) -> Option<KernelProgress> {
        // SAFETY: getsockopt only writes into the buffer passed, sized for it.
        let info = unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            if libc::getsockopt(self.fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len) != 0 {
                return None;
            }
            info
        };
        let unsent = info.tcpi_notsent_bytes as u64;
        let written = info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans) + unsent;
        Some(KernelProgress { written, unsent, queued: written.saturating_sub(info.tcpi_bytes_acked) })
    }

    /// Drops the connection without waiting for its queued data: the peer gets a reset and
    /// actix, finding the socket shut, releases the connection and its buffers.
    pub fn force_close(&self) -> bool {
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

/// Size on the wire of a server-to-client WebSocket frame (unmasked) with this payload.
pub fn frame_wire_bytes(payload: usize) -> u64 {
    let header = if payload < 126 {
        2
    } else if payload <= u16::MAX as usize {
        4
    } else {
        10
    };
    (header + payload) as u64
}

/// The session's ledger of bytes handed to actix versus bytes the kernel took.
#[derive(Debug, Clone)]
pub struct SendLedger {
    handed: u64,
    /// Kernel `written` when the session started (covers the HTTP upgrade response, as far as
    /// it was written by then).
    baseline: Option<u64>,
    confirmed_written: u64,
    last_unsent: u64,
}

impl Default for SendLedger {
    fn default() -> Self {
        SendLedger::new()
    }
}

impl SendLedger {
    pub fn new() -> SendLedger {
        SendLedger { handed: 0, baseline: None, confirmed_written: 0, last_unsent: 0 }
    }

    pub fn handed(&mut self, wire_bytes: u64) {
        self.handed += wire_bytes;
    }

    /// Bytes handed since the last time the kernel was asked: an upper bound on what is in the
    /// server's own buffers (actix channel and write buffer) without a system call, and exactly
    /// that right after [`SendLedger::observe`].
    pub fn unconfirmed(&self) -> u64 {
        self.handed.saturating_sub(self.confirmed_written)
    }

    /// Updates from a kernel reading. Returns whether the kernel took anything new.
    pub fn observe(&mut self, progress: KernelProgress) -> bool {
        let baseline = *self.baseline.get_or_insert(progress.written);
        let written = progress.written.saturating_sub(baseline).min(self.handed);
        let advanced = written > self.confirmed_written;
        self.confirmed_written = self.confirmed_written.max(written);
        self.last_unsent = progress.unsent;
        advanced
    }

    /// Kernel bytes not yet sent, as last observed.
    pub fn kernel_unsent(&self) -> u64 {
        self.last_unsent
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_sizes() {
        assert_eq!(frame_wire_bytes(0), 2);
        assert_eq!(frame_wire_bytes(125), 127);
        assert_eq!(frame_wire_bytes(126), 130);
        assert_eq!(frame_wire_bytes(70_000), 70_010);
    }

    #[test]
    fn ledger_tracks_what_the_kernel_took() {
        let mut ledger = SendLedger::new();
        ledger.observe(KernelProgress { written: 180, unsent: 0, queued: 0 });
        ledger.handed(1000);
        assert_eq!(ledger.unconfirmed(), 1000);
        assert!(ledger.observe(KernelProgress { written: 780, unsent: 100, queued: 300 }));
        assert_eq!(ledger.unconfirmed(), 400);
        assert!(!ledger.observe(KernelProgress { written: 780, unsent: 100, queued: 300 }));
        assert!(ledger.observe(KernelProgress { written: 1180, unsent: 0, queued: 0 }));
        assert_eq!(ledger.unconfirmed(), 0);
    }

    #[tokio::test]
    async fn probe_reads_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let probe = SocketProbe::on_accept(&server, 32 * 1024).unwrap();
        let before = probe.progress().unwrap();
        // The client never reads: write until the kernel refuses.
        let mut total = 0u64;
        let chunk = vec![0u8; 16 * 1024];
        loop {
            match server.try_write(&chunk) {
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let after = probe.progress().unwrap();
        assert_eq!(after.written - before.written, total);
        assert!(after.queued > 0);
        // With SO_SNDBUF bounded, the stalled socket holds at most about 2x the setting in
        // its send queue (the peer's receive buffer takes the rest of what was written).
        assert!(after.queued <= 64 * 1024 + 16 * 1024, "send queue {}", after.queued);
        assert!(probe.force_close());
        drop(client);
    }
}
