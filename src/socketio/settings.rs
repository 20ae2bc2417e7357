//! The Socket.IO endpoint's settings: what its handshake announces to clients (Engine.IO's
//! `pingInterval`, `pingTimeout` and `maxPayload`) and enforces. Declared here once each (see
//! [`crate::settings`]); the session limits (`max_symbols`, `rate_limit`, …) apply as on
//! `/ws`.

use std::time::Duration;

use crate::settings::settings;

settings! {
    /// Engine.IO's heartbeat and payload limit at `/socket.io/`.
    pub struct SocketIoSettings, args SocketIoArgs {
        /// Milliseconds between the server's Engine.IO pings (the handshake's pingInterval).
        socketio_ping_interval_ms: u64 = 25_000, env "TICKERFEED_SOCKETIO_PING_INTERVAL_MS", range(100, 3_600_000);
        /// Milliseconds a client has to answer a ping (pingTimeout); a client silent for
        /// pingInterval + pingTimeout is closed, as is one that has not sent its CONNECT by then.
        socketio_ping_timeout_ms: u64 = 20_000, env "TICKERFEED_SOCKETIO_PING_TIMEOUT_MS", range(100, 3_600_000);
        /// Largest polling request body and WebSocket message accepted, in bytes (maxPayload);
        /// a bigger POST gets 413, a bigger WebSocket message closes the connection with 1009.
        socketio_max_payload: usize = 1_000_000, env "TICKERFEED_SOCKETIO_MAX_PAYLOAD", range(1024, 64 * 1024 * 1024);
    }
}

impl SocketIoSettings {
    /// Between the server's pings.
    pub(crate) fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.socketio_ping_interval_ms)
    }

    /// The silence after which a client is gone: pingInterval + pingTimeout, as the clients
    /// themselves reckon it.
    pub(crate) fn silence_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio_ping_interval_ms + self.socketio_ping_timeout_ms)
    }
}
