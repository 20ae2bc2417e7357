//! Wiring: builds the bus and the feeds from a [`Config`], serves HTTP and WebSocket on one
//! port, and shuts everything down in order.
//!
//! Shutdown is designed, not bolted on: actix's own signal handling is disabled so that on
//! SIGINT/SIGTERM this module first turns `/readyz` to 503, then tells every session (a `watch`
//! that each session loop selects on) to close with 1001 "going away" — sessions never wait on a
//! stalled socket for more than a second — and then stops the HTTP server with a bounded
//! timeout, so the process exits within `shutdown_timeout`.

use std::any::Any;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, TlsAcceptorConfig};
use actix_service::{IntoServiceFactory, map_config};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::{AppConfig, Extensions};
use actix_web::http::KeepAlive;
use actix_web::rt::net::TcpStream;
use actix_web::{App, web};
use tokio::sync::watch;

use crate::bus::Publisher;
use crate::config::Config;
use crate::fault::{FaultKind, Faults};
use crate::feed;
use crate::http::upgrade::UpgradeFactory;
use crate::metrics::ClientLabels;
use crate::session::protocol;
use crate::session::socket::SocketProbe;
use crate::socketio::SocketIo;

// The parts a running server exposes, for tests and embedding: what each holds is documented
// on the type.
pub use crate::bus::{Bus, Topic};
pub use crate::feed::Feeds;
pub use crate::history::{Bar, Resolution};
pub use crate::http::Readiness;
pub use crate::metrics::Metrics;
pub use crate::session::Connections;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A feed cannot start: its file, line or symbol is named.
    #[error(transparent)]
    Feed(#[from] feed::StartError),
    /// The TLS certificate or key cannot be used: the file is named.
    #[error("TLS: {0}")]
    Tls(#[from] crate::http::listen::TlsError),
    /// The token key cannot be used: the file is named.
    #[error(transparent)]
    Access(#[from] crate::access::KeyError),
    /// The Redis bus cannot be reached or read: its URL is named.
    #[error(transparent)]
    Bus(#[from] crate::bus::redis::RedisError),
    /// A fault given at start (`--fault`, `[[faults]]`) names a symbol or feed that does not exist.
    #[error("fault '{spec}' (--fault or [[faults]]): {message}")]
    Fault {
        /// The fault, as `--fault` writes it.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// Any other I/O error of the listener.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started server: where it listens, its parts (for tests and embedding), and how to stop it.
pub struct RunningServer {
    /// The address it listens on (the bound port when the configuration said 0).
    pub addr: std::net::SocketAddr,
    /// The topics: each symbol's latest quote, seq and history.
    pub bus: Arc<Bus>,
    /// The running feeds.
    pub feeds: Arc<Feeds>,
    /// The Prometheus metrics (`render` gives what `/metrics` serves).
    pub metrics: Arc<Metrics>,
    /// The open connections of every transport (`count`).
    pub connections: Arc<Connections>,
    /// What `/readyz` answers (`is_ready`).
    pub readiness: Arc<Readiness>,
    /// Changes on every start, so clients can tell a restart (seq back to 1) from a gap.
    pub instance: String,
    server: actix_web::dev::ServerHandle,
    shutdown: Arc<watch::Sender<bool>>,
    join: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Graceful shutdown: not ready, sessions closed with 1001, server stopped. Returns when
    /// the server has stopped (at most `shutdown_timeout` plus a second).
    pub async fn shutdown(self) {
        self.readiness.set_not_ready();
        let _ = self.shutdown.send(true);
        // Sessions close their sockets (bounded by 1 s each, concurrently); give them that
        // second before stopping the server, whose own timeout then bounds the rest.
        let _ = tokio::time::timeout(Duration::from_millis(1100), self.connections.drained()).await;
        self.server.stop(true).await;
        let _ = self.join.await;
    }

    /// Waits until the server stops by itself.
    pub async fn wait(self) -> std::io::Result<()> {
        self.join.await.unwrap_or(Ok(()))
    }
}

/// TLS handshakes in progress per worker (see `start`).
const TLS_HANDSHAKES_PER_WORKER: usize = 256;

/// Builds the feeds, binds the listener and starts serving. Must be called inside an actix
/// system (`#[actix_web::main]` or `actix_web::rt::System`).
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let config = Arc::new(config);
    let access = Arc::new(crate::access::Access::new(&config.access)?);
    let error_codes: Vec<&'static str> = protocol::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let ops: Vec<&'static str> = protocol::OPS.iter().map(|(name, _)| *name).collect();
    let feed_labels: Vec<_> = config.feeds.iter().map(|f| (f.name.clone(), f.kind)).collect();
    let metrics = Arc::new(Metrics::new(&feed_labels, &ClientLabels { ops: &ops, error_codes: &error_codes, fault_kinds: &FaultKind::LABELS }));
    let bus = Arc::new(Bus::new());
    let instance = instance_id();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Only with --faults: without it nothing of fault injection exists (no wrapper, no timer).
    let faults = config.faults.enabled.then(|| Faults::new(config.seed, metrics.clone(), bus.clone(), config.feeds.iter().map(|f| f.name.clone()).collect()));
    let feeds = start_bus(&config, &bus, &instance, faults.as_ref(), shutdown_rx.clone()).await?;
    tokio::spawn(bus.clone().run_dispatcher());
    if let Some(faults) = &faults {
        tracing::warn!("fault injection is on (--faults): /api/faults adds faults; for tests only");
        for spec in &config.faults.faults {
            faults.add(spec.clone()).map_err(|e| StartError::Fault { spec: spec.to_string(), message: e.to_string() })?;
        }
        tokio::spawn(faults.clone().run());
    }

    let connections = Arc::new(Connections::new(config.limits.max_connections, config.limits.max_connections_per_ip));
    let readiness = Arc::new(Readiness::new(shutdown_rx.clone()));
    let ws = web::Data::new(crate::session::SessionContext {
        limits: Arc::new(config.limits.clone()),
        bus: bus.clone(),
        feeds: feeds.clone(),
        metrics: metrics.clone(),
        connections: connections.clone(),
        access: access.clone(),
        instance: instance.clone(),
        shutdown: shutdown_rx,
        faults: faults.clone(),
    });
    let socketio = Arc::new(crate::socketio::SocketIo::new(config.socketio.clone()));
    let shutdown_tx = Arc::new(shutdown_tx);
    watch_client_maps(&metrics, &connections, &socketio, &bus, &feeds, &shutdown_tx);
    let socketio = web::Data::from(socketio);
    // Each part is app data of its own: a handler's signature says which it reads.
    let (bus_data, feeds_data, metrics_data) = (web::Data::from(bus.clone()), web::Data::from(feeds.clone()), web::Data::from(metrics.clone()));
    let (connections_data, readiness_data) = (web::Data::from(connections.clone()), web::Data::from(readiness.clone()));
    if let Some(algorithm) = access.required() {
        tracing::info!(algorithm, "authentication on: /ws, /sse, /socket.io/ and /api need a token");
    }
    let access_data = web::Data::from(access);
    let faults_data = faults.map(web::Data::from);

    // The certificate and key are read before the port is bound: a bad file fails the start.
    let tls = config.listen.tls_config()?;
    let bind = config.listen.addr();
    let listener = TcpListener::bind(bind).map_err(|source| StartError::Bind { addr: bind, source })?;
    let addr = listener.local_addr()?;
    let send_buffer = config.limits.send_buffer_bytes;
    let listen = &config.listen;
    let between_requests = listen.keep_alive() + listen.request_head();
    let body_deadline = listen.request_body();
    let test_echo = config.listen.test_echo;
    let serves_clients = config.bus.role().serves_clients();
    if test_echo {
        tracing::warn!("test_echo is on: {} echoes WebSocket messages (for conformance tests only)", crate::ws::echo::PATH);
    }
    let app = move || {
        App::new()
            .app_data(bus_data.clone())
            .app_data(feeds_data.clone())
            .app_data(metrics_data.clone())
            .app_data(connections_data.clone())
            .app_data(readiness_data.clone())
            .app_data(access_data.clone())
            .app_data(ws.clone())
            .app_data(socketio.clone())
            .configure(|cfg| {
                if let Some(faults) = &faults_data {
                    cfg.app_data(faults.clone());
                }
            })
            .wrap(crate::http::json_errors())
            .wrap(crate::http::RequestMetrics)
            .wrap(crate::http::connection::TrackRequests::new(body_deadline))
            // Registered before the route table, whose default service answers 404 (and
            // then not at all: without the setting the path is unknown).
            .configure(|cfg| {
                if test_echo {
                    cfg.route(crate::ws::echo::PATH, web::get().to(crate::ws::echo::upgrade));
                }
            })
            .configure(|cfg| crate::http::routes(cfg, serves_clients))
    };
    let on_connect = move |connection: &dyn Any, extensions: &mut Extensions| {
        // A plain connection is the TcpStream itself; a TLS one (called once its handshake is
        // done) wraps it, and the bound applies to the TcpStream under the encryption.
        let tcp = connection.downcast_ref::<TcpStream>().or_else(|| connection.downcast_ref::<TlsStream<TcpStream>>().map(|tls| tls.get_ref().0));
        if let Some(probe) = tcp.and_then(|stream| SocketProbe::on_accept(stream, send_buffer)) {
            extensions.insert(probe);
            crate::http::connection::watch(extensions, probe, between_requests);
        }
    };
    let builder = actix_web::dev::Server::build()
        .workers(listen.workers)
        // Above the connection limit, so that excess upgrades get a 503, not a refused connect.
        .max_concurrent_connections(config.limits.max_connections + 1024)
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(listen.shutdown_timeout.ceil() as u64);
    let graceful = builder.graceful_shutdown_signal();
    let keep_alive = if listen.keep_alive().is_zero() { KeepAlive::Disabled } else { KeepAlive::Timeout(listen.keep_alive()) };
    let (head_deadline, disconnect) = (listen.request_head(), Duration::from_secs_f64(listen.disconnect_timeout));
    // One HTTP service per worker, over a plain or a TLS stream: the app, and the upgrade
    // service that takes over WebSocket connections from actix-http (`http::upgrade`), around a
    // second instance of the same app.
    macro_rules! http_service {
        ($secure:expr) => {{
            let graceful = graceful.clone();
            // The scheme, host and address the app sees, as actix-web's own `HttpServer` passes
            // them (a request's `connection_info` reads them). The constructor is doc-hidden
            // and exempt from semver: the lockfile pins actix-web, and `tests/tls.rs` and the
            // origin tests fail if the scheme stops reaching the app.
            let app_config = move || AppConfig::__priv_test_new($secure, addr.to_string(), addr);
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                // Every wait on the client has a deadline (see `http::listen`); actix-http's own
                // defaults are close, but a limit the operator reads in the README is set here.
                .client_request_timeout(head_deadline)
                .keep_alive(keep_alive)
                .client_disconnect_timeout(disconnect)
                // actix-http asks a response body for more only while the connection's write
                // buffer holds less than this (SSE and Socket.IO polling: `session::output`).
                .h1_write_buffer_size(crate::session::output::WRITE_BUFFER_BYTES)
                .on_connect_ext(move |io: &_, extensions: &mut Extensions| on_connect(io as &dyn Any, extensions))
                .upgrade(UpgradeFactory::new(app().into_factory(), app_config(), disconnect))
                .finish(map_config(app().into_factory(), move |_| app_config()))
        }};
    }
    let builder = match tls {
        Some(tls) => {
            // TLS handshakes in progress per worker (actix-tls's default, stated): beyond it the
            // worker accepts no connection until one ends or times out, so handshake CPU stays
            // bounded.
            actix_tls::accept::max_concurrent_tls_connect(TLS_HANDSHAKES_PER_WORKER);
            let handshake = Duration::from_secs_f64(listen.tls_handshake_timeout);
            builder.listen("tickerfeed", listener, move || http_service!(true).rustls_0_23_with_config(tls.clone(), TlsAcceptorConfig::default().handshake_timeout(handshake)))?
        }
        None => builder.listen("tickerfeed", listener, move || http_service!(false).tcp())?,
    };
    let server = builder.run();
    let handle = server.handle();
    let join = actix_web::rt::spawn(server);
    let reachable = reachable_addr(addr);
    let (http, ws) = if listen.tls() { ("https", "wss") } else { ("http", "ws") };
    tracing::info!(%addr, %instance, seed = config.seed, "tickerfeed listening: dashboard at {http}://{reachable}/, WebSocket at {ws}://{reachable}/ws");
    Ok(RunningServer { addr, bus, feeds, metrics, connections, readiness, instance, server: handle, shutdown: shutdown_tx, join })
}

/// The bus backend and the feeds this node runs: on the memory bus the feeds publish on `bus`;
/// on Redis a feed node's feeds publish through it to Redis as well, and a gateway runs no feed
/// and fills `bus` from Redis.
///
/// With `--faults` the feeds publish through the faults' wrapper (`gap`, `feed_stall`).
async fn start_bus(config: &Config, bus: &Arc<Bus>, instance: &str, faults: Option<&Arc<Faults>>, shutdown: watch::Receiver<bool>) -> Result<Arc<Feeds>, StartError> {
    let backend = config.bus.backend();
    let role = config.bus.role();
    let wrap = |publisher: Arc<dyn Publisher>| match faults {
        Some(faults) => faults.publisher(publisher),
        None => publisher,
    };
    if backend == crate::bus::settings::Backend::Memory {
        return Ok(Arc::new(Feeds::start(&config.feeds, wrap(bus.clone())).await?));
    }
    if !role.runs_feeds() {
        let store = crate::bus::redis::gateway_node(&backend, &config.bus.bus_prefix, bus.clone(), shutdown).await?;
        return Ok(Arc::new(crate::feed::remote::follow(store, instance).await));
    }
    let (publisher, store) = crate::bus::redis::feed_node(&backend, &config.bus.bus_prefix, bus.clone(), instance.to_string(), shutdown.clone()).await?;
    let feeds = Arc::new(Feeds::start(&config.feeds, wrap(publisher)).await?);
    crate::feed::remote::serve(feeds.clone(), store, shutdown).await;
    Ok(feeds)
}

/// Every collection that grows with clients, as `tickerfeed_client_map_entries{map}`: one line
/// per map (its owner and how many entries it holds), read at scrape time. The soak
/// (`tests/soak/run.sh`) asserts each flat under churn and back to its baseline after.
fn watch_client_maps(metrics: &Metrics, connections: &Arc<Connections>, socketio: &Arc<SocketIo>, bus: &Arc<Bus>, feeds: &Arc<Feeds>, shutdown: &Arc<watch::Sender<bool>>) {
    metrics.client_map("connections", connections, Connections::count);
    metrics.client_map("client_addresses", connections, Connections::addresses);
    metrics.client_map("socketio_sids", socketio, SocketIo::sessions);
    metrics.client_map("bus_registrations", bus, Bus::registrations);
    metrics.client_map("bus_after_dispatch", bus, Bus::after_dispatch_entries);
    metrics.client_map("topic_watchers", bus, Bus::topic_watchers);
    metrics.client_map("feed_event_receivers", feeds, Feeds::event_receivers);
    metrics.client_map("shutdown_watchers", shutdown, watch::Sender::receiver_count);
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run_until_signal(config: Config) -> Result<(), StartError> {
    let server = start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    server.shutdown().await;
    Ok(())
}

/// The address a person on this machine opens: a wildcard bind (`0.0.0.0`, `::`) is reached at
/// the loopback address of its family.
fn reachable_addr(bound: std::net::SocketAddr) -> std::net::SocketAddr {
    match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, bound.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port())),
        _ => bound,
    }
}

/// A new id per process start: time and pid, in hex.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}-{:x}", nanos as u64, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_bind_is_shown_as_loopback() {
        assert_eq!(reachable_addr("0.0.0.0:8080".parse().unwrap()).to_string(), "127.0.0.1:8080");
        assert_eq!(reachable_addr("[::]:8080".parse().unwrap()).to_string(), "[::1]:8080");
        assert_eq!(reachable_addr("192.0.2.7:9000".parse().unwrap()).to_string(), "192.0.2.7:9000");
    }
}
