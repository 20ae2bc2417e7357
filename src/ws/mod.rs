//! WebSocket protocol v1.
