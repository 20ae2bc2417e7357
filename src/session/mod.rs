//! The transport-neutral session core: what a client's session is, whatever wire protocol
//! carries it.
//!
//! - [`protocol`]: protocol v1's messages, one enum each way (every transport carries these).
//! - [`throttle`]: which subscribed symbols are due, per session (throttling and conflation).
//! - [`channels`]: what symbols carry besides quotes (trades, bars) and the resume of trades.
//! - [`limits`]: the sessions' settings.
//! - [`output`]: what a session sends, produced when its socket can take it, in its
//!   transport's encoding (the [`output::Encoder`] a transport supplies).
//! - [`alarm`]: the wake-ups at outputs' next deadlines, one timer per worker thread.
//! - [`socket`]: the accepted socket's send-buffer bound and the forced close.
//! - [`task`]: the session task (requests, replies, rate limits, heartbeat, timeouts) and the
//!   [`task::Transport`] a wire protocol implements.
//!
//! Owned here: [`SessionContext`], what every session shares (bus, feeds, metrics, limits,
//! access, connection count, shutdown), its one admission rule for every transport, and
//! [`Connections`], the connection limits (total and per client address) all transports count
//! against. Invariant: a connection's places in the limits are released however its session
//! ends (the [`ConnectionSlot`] is dropped with the session), and an address is in the
//! per-address map only while it has a connection open.

pub(crate) mod alarm;
pub(crate) mod channels;
pub(crate) mod handover;
pub(crate) mod limits;
pub(crate) mod output;
pub(crate) mod protocol;
pub(crate) mod socket;
pub(crate) mod task;
pub(crate) mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::HttpRequest;
use actix_web::http::header;

use self::limits::Limits;
use crate::access::{Access, Grant};
use crate::api_error::{ApiError, ApiErrorCode};
use crate::bus::Bus;
use crate::fault::Faults;
use crate::feed::Feeds;
use crate::metrics::{DisconnectReason, Metrics};

/// What every session shares, whatever its transport.
pub(crate) struct SessionContext {
    pub limits: Arc<Limits>,
    pub bus: Arc<Bus>,
    pub feeds: Arc<Feeds>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Connections>,
    /// Tokens and origins: checked before a session starts.
    pub access: Arc<Access>,
    /// Changes on every start, so clients can tell a restart (seq back to 1) from a gap.
    pub instance: String,
    /// Turns true when the server shuts down: every session closes with 1001.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Fault injection, with `--faults` only: `reject_connect` is checked by [`SessionContext::admit`],
    /// the others reach a session through `Faults::watch`.
    pub faults: Option<Arc<Faults>>,
}

/// When a transport's client shows its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenAt {
    /// With the request that opens the session (`/ws`, `/sse`): checked by [`SessionContext::admit`].
    Handshake,
    /// Later, in the protocol (Socket.IO's CONNECT): the transport checks it.
    Connect,
}

/// A new connection let in: its place in the limits, and what its client may read.
pub(crate) struct Admission {
    pub slot: ConnectionSlot,
    /// Unrestricted when no token is required; for [`TokenAt::Connect`] with tokens required,
    /// nothing until the transport checks the token.
    pub grant: Grant,
}

impl SessionContext {
    /// Lets a new connection of any transport in, or refuses it, in this order: a page whose
    /// `Origin` is not allowed (403), a missing or invalid token (401, unless the transport
    /// checks it later), an injected `reject_connect` fault (503 `fault_injected`, with
    /// `Retry-After`), an address at its connection limit (429), the server at its limit
    /// (503, with `Retry-After`) or shutting down (503).
    pub(crate) fn admit(&self, req: &HttpRequest, token_at: TokenAt) -> Result<Admission, ApiError> {
        self.access.check_origin(req).inspect_err(|_| self.metrics.disconnected(DisconnectReason::Refused))?;
        let grant = match (token_at, self.access.required()) {
            (_, None) => Grant::unrestricted(),
            (TokenAt::Handshake, Some(_)) => self.access.authenticate(req).inspect_err(|_| self.metrics.disconnected(DisconnectReason::Refused))?,
            (TokenAt::Connect, Some(_)) => Grant::nothing(),
        };
        if let Some(fault) = self.faults.as_ref().and_then(|faults| faults.reject_connect()) {
            self.metrics.disconnected(DisconnectReason::Fault);
            return Err(ApiError::new(ApiErrorCode::FaultInjected, format!("refused by injected fault {fault} (reject_connect; GET /api/faults lists it)"))
                .with_header(header::RETRY_AFTER, header::HeaderValue::from_static("1")));
        }
        let ip = req.peer_addr().map(|a| a.ip().to_canonical());
        let slot = self.connections.open(ip).map_err(|refusal| {
            self.metrics.disconnected(DisconnectReason::Limit);
            match refusal {
                Refusal::PerIp { max, ip } => {
                    ApiError::new(ApiErrorCode::TooManyConnectionsPerIp, format!("{ip} has {max} connections open, the limit per address (--max-connections-per-ip)"))
                        .with_header(header::RETRY_AFTER, header::HeaderValue::from_static("5"))
                }
                Refusal::Total { max } => {
                    ApiError::new(ApiErrorCode::TooManyConnections, format!("the server is at its limit of {max} connections (/ws, /sse and /socket.io/ together)"))
                        .with_header(header::RETRY_AFTER, header::HeaderValue::from_static("5"))
                }
            }
        })?;
        if *self.shutdown.borrow() {
            return Err(ApiError::new(ApiErrorCode::ShuttingDown, "the server is shutting down"));
        }
        Ok(Admission { slot, grant })
    }
}

/// Why [`Connections::open`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address has `max` open.
    PerIp { max: usize, ip: IpAddr },
    /// The server has `max` open.
    Total { max: usize },
}

/// Open sessions of every transport, against the limits (in total and per client address);
/// shutdown waits for them to end.
pub struct Connections {
    open: AtomicUsize,
    pub(crate) max: usize,
    max_per_ip: usize,
    /// Open connections per client address: an entry exists only while its address has one
    /// open, so the map holds at most `max` entries.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Told when the last connection ends.
    drained: tokio::sync::Notify,
    /// The id of the last connection opened (ids start at 1 and are never reused in a run).
    last_id: AtomicU64,
}

impl Connections {
    pub(crate) fn new(max: usize, max_per_ip: usize) -> Connections {
        Connections { open: AtomicUsize::new(0), max, max_per_ip, per_ip: Mutex::new(HashMap::new()), drained: tokio::sync::Notify::new(), last_id: AtomicU64::new(0) }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Client addresses with a connection open now (the per-address map's size).
    pub fn addresses(&self) -> usize {
        self.per_ip.lock().expect("per-ip lock").len()
    }

    /// A place within the limits, held for the connection's life.
    pub(crate) fn open(self: &Arc<Connections>, ip: Option<IpAddr>) -> Result<ConnectionSlot, Refusal> {
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().expect("per-ip lock");
            let open = per_ip.entry(ip).or_insert(0);
            if *open >= self.max_per_ip {
                return Err(Refusal::PerIp { max: self.max_per_ip, ip });
            }
            *open += 1;
        }
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        // Built before the check, so that a refusal gives both places back through its drop.
        let slot = ConnectionSlot { connections: self.clone(), ip, id: self.last_id.fetch_add(1, Ordering::Relaxed) + 1 };
        if previous < self.max { Ok(slot) } else { Err(Refusal::Total { max: self.max }) }
    }

    /// Returns once no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            // Created before the count is read: `notify_waiters` reaches a `Notified` from its
            // creation, so a last close in between still wakes this.
            let notified = self.drained.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Gives the connection's places back when the session ends, however it ends.
pub(crate) struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
    /// The session's id, told to its client in `welcome.session` (a fault can target it).
    id: u64,
}

impl ConnectionSlot {
    /// The session's id: unique in this run of the server.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self.connections.per_ip.lock().expect("per-ip lock");
            if let Some(open) = per_ip.get_mut(&ip) {
                *open -= 1;
                if *open == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        if self.connections.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_limits_release_their_places() {
        let connections = Arc::new(Connections::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = connections.open(Some(a)).unwrap();
        let _second = connections.open(Some(a)).unwrap();
        assert_eq!(connections.open(Some(a)).err(), Some(Refusal::PerIp { max: 2, ip: a }));
        let third = connections.open(Some(b)).unwrap();
        assert_eq!(connections.open(Some(b)).err(), Some(Refusal::Total { max: 3 }), "the total is reached first");
        assert_eq!((connections.count(), connections.addresses()), (3, 2), "refusals hold nothing");
        drop(first);
        assert!(connections.open(Some(a)).is_ok(), "a closed connection gives its address's place back");
        drop(third);
        assert_eq!(connections.addresses(), 1, "an address with nothing open leaves the map");
        assert!(connections.open(None).is_ok(), "no address: only the total applies");
    }
}
