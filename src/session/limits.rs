//! The WebSocket subsystem's settings: what a client may ask for, what it is sent at most, and
//! when an unresponsive one is closed. Declared here once each (see [`crate::settings`]); the
//! sessions read them through their [`super::SessionContext`].

use std::time::Duration;

use crate::settings::{Invalid, settings};

/// Longest throttle a client may ask for, in ms; `throttle_ms` and `min_throttle_ms` stay under it.
pub(crate) const MAX_THROTTLE_MS: u64 = 60_000;

settings! {
    /// Limits and timings of every WebSocket session.
    pub struct Limits, args LimitsArgs {
        /// Default throttle of a subscription, in ms.
        throttle_ms: u64 = 250, env "TICKERFEED_THROTTLE_MS";
        /// Lowest throttle a client may ask for, in ms (0: every change).
        min_throttle_ms: u64 = 0, env "TICKERFEED_MIN_THROTTLE_MS", range(0, MAX_THROTTLE_MS);
        /// Symbols per session ("*" counts as one).
        max_symbols: usize = 1000, env "TICKERFEED_MAX_SYMBOLS", range(1, 1_000_000);
        /// Concurrent connections, /ws, /sse and /socket.io/ together; more get 503.
        max_connections: usize = 16_000, env "TICKERFEED_MAX_CONNECTIONS", range(1, 10_000_000);
        /// Concurrent connections from one IP address (all transports); more get 429. Behind a
        /// reverse proxy every client shares the proxy's address: raise it there.
        max_connections_per_ip: usize = 100, env "TICKERFEED_MAX_CONNECTIONS_PER_IP", range(1, 10_000_000);
        /// Largest quote frame sent, in bytes; quote batches are split to stay under it.
        max_frame_bytes: usize = 16 * 1024, env "TICKERFEED_MAX_FRAME_BYTES", range(1024, 16 * 1024 * 1024);
        /// Largest client message accepted, in bytes; a bigger one closes the connection with 1009.
        max_message_bytes: usize = 4096, env "TICKERFEED_MAX_MESSAGE_BYTES", range(256, 1024 * 1024);
        /// Client messages per second per connection.
        rate_limit: f64 = 50.0, env "TICKERFEED_RATE_LIMIT", range(0.1, 1e6);
        /// Burst of client messages allowed above the rate.
        rate_burst: f64 = 100.0, env "TICKERFEED_RATE_BURST", range(1, 1e6);
        /// SO_SNDBUF of accepted sockets in bytes; 0 = the system's default. The kernel doubles
        /// it (and may overshoot that a little): 30720 gives 60 KiB, within the 64 KiB budget
        /// queued per client.
        send_buffer_bytes: usize = 30 * 1024, env "TICKERFEED_SEND_BUFFER_BYTES", range(0, 64 * 1024 * 1024);
        /// Close a client whose socket accepts no writes for this long, in seconds.
        slow_consumer_timeout: f64 = 30.0, env "TICKERFEED_SLOW_CONSUMER_TIMEOUT", range(0.1, 86_400);
        /// Seconds between server pings.
        ping_interval: f64 = 15.0, env "TICKERFEED_PING_INTERVAL", range(0.1, 86_400);
        /// Close a peer silent for this many seconds.
        idle_timeout: f64 = 45.0, env "TICKERFEED_IDLE_TIMEOUT", range(0.1, 86_400);
    }
    check = check_throttles;
}

/// The default throttle lies between the lowest a client may ask for and the longest.
fn check_throttles(limits: &Limits) -> Result<(), Invalid> {
    if limits.throttle_ms > MAX_THROTTLE_MS || limits.throttle_ms < limits.min_throttle_ms {
        return Err(Invalid::new("throttle_ms", format!("{} must be between min_throttle_ms ({}) and {MAX_THROTTLE_MS}", limits.throttle_ms, limits.min_throttle_ms)));
    }
    Ok(())
}

impl Limits {
    /// `slow_consumer_timeout` as a duration.
    pub fn slow_consumer_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.slow_consumer_timeout)
    }

    /// `ping_interval` as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_interval)
    }

    /// `idle_timeout` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_throttle_outside_the_allowed_ones_is_refused_by_name() {
        let args = LimitsArgs { throttle_ms: Some(100), min_throttle_ms: Some(200), ..LimitsArgs::default() };
        assert_eq!(args.resolve().unwrap_err().key, "throttle_ms");
        let args = LimitsArgs { min_throttle_ms: Some(MAX_THROTTLE_MS + 1), ..LimitsArgs::default() };
        assert_eq!(args.resolve().unwrap_err().key, "min_throttle_ms");
        assert_eq!(LimitsArgs::default().resolve().unwrap(), Limits::default());
    }
}
