//! Socket.IO v5 over Engine.IO v4, served by tickerfeed itself: `socketioxide` is a tower
//! service and cannot be mounted in actix-web, and the protocol's server side is small.
//!
//! - [`packet`]: the wire codec — Engine.IO packets and polling payloads, Socket.IO packets;
//!   what a client sends parsed and judged, what the server sends encoded. Pure: no I/O, no
//!   session state.
//!
//! The transport (the polling and WebSocket routes, the heartbeat, the upgrade, namespaces and
//! their sessions) is issue 13's next step and is not here yet.

pub(crate) mod packet;
