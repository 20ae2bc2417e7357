//! The Redis bus: feed nodes forward what they publish to Redis, gateway nodes apply what
//! arrives from Redis to their local topic table. Sessions only ever read the local [`Bus`], so
//! neither they nor the feeds know which backend runs.
//!
//! Names, under `--bus-prefix` (`P`); every per-symbol name carries the symbol as its hash tag,
//! so on a Cluster a symbol's channel and last value live on one shard and no single key is hot:
//! - `P:quotes:{SYM}`: the channel of a symbol's quotes (`SPUBLISH` on a Cluster). A message
//!   is `EPOCH NODE JSON`: the publishing feed node's epoch (Redis's clock at its start, in
//!   µs), its id, and the quote's JSON exactly as clients get it.
//! - `P:quote:{SYM}`: the symbol's last value, the same message (written with each publish).
//! - `P:symbols`: a hash, symbol → `{"name","sector","feed"}`, the registry gateways build their
//!   topic table from.
//!
//! Invariants:
//! - **A feed node never queues without bound.** Its outbox holds at most one entry per symbol
//!   (a dirty flag): a publish while the symbol is already waiting merges into it, counted as
//!   conflated, and the writer sends each symbol's latest value when it gets to it. While Redis
//!   is away the outbox keeps conflating and `seq` keeps advancing.
//! - **A gateway applies a symbol's quotes in `seq` order, from one feed node.** A quote whose
//!   seq is not above the topic's is dropped (a repeat after a resubscribe); `seq` and `pt` are
//!   the feed node's, so every gateway serves the same (symbol, seq, last) stream, and a gap
//!   shows in `seq`. A quote from a newer epoch is a restarted feed node: followed from its
//!   first seq, and every session resyncs (`Bus::resync`). One from an older epoch while the
//!   newer publishes is a second feed node on the symbol: an error, logged, counted, dropped.
//! - **Nothing is queued on the way in either.** Redis's push messages are applied to the
//!   topic table as they are read (the push sender is a function, not a channel).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncCommands, PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::settings::Backend;
use super::{Bus, BusError, Publisher, SymbolInfo, Topic, TopicId};
use crate::quote::{PublishedQuote, Quote, QuoteDraft};

/// Why the Redis bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("bus {url}: {source}")]
    Connect { url: String, source: ::redis::RedisError },
    #[error("bus {url}: reading the symbol registry {key}: {source}")]
    Registry { url: String, key: String, source: ::redis::RedisError },
}

/// The channel, key and registry names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Names {
        Names { prefix: prefix.to_string() }
    }

    /// `P:quotes:{SYM}`.
    pub(crate) fn channel(&self, symbol: &str) -> String {
        format!("{}:quotes:{{{symbol}}}", self.prefix)
    }

    /// `P:quote:{SYM}`.
    pub(crate) fn last_value(&self, symbol: &str) -> String {
        format!("{}:quote:{{{symbol}}}", self.prefix)
    }

    /// `P:symbols`.
    pub(crate) fn registry(&self) -> String {
        format!("{}:symbols", self.prefix)
    }

    /// `P:feeds`: feed name → its state's JSON.
    pub(crate) fn feeds(&self) -> String {
        format!("{}:feeds", self.prefix)
    }

    /// The pattern of every symbol's quote channel (one Redis only: a Cluster has no sharded
    /// pattern subscription). The prefix's own glob characters are escaped.
    pub(crate) fn every_channel(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 12);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern + ":quotes:{*}"
    }

    /// The symbol of a quote channel's name, if it is one of ours.
    fn symbol_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.prefix.as_str())?.strip_prefix(":quotes:{")?.strip_suffix('}')
    }
}

/// A symbol's entry in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RegistryEntry {
    name: String,
    sector: String,
    feed: String,
}

/// One connection, to a single Redis or to a Cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects with RESP3; push messages (subscriptions' messages, disconnections) go to
    /// `push`, a function called as each is read.
    async fn open(backend: &Backend, push: impl Fn(PushInfo) + Send + Sync + 'static) -> Result<Connection, RedisError> {
        let sender = move |info: PushInfo| {
            push(info);
            Ok::<(), ::redis::aio::SendError>(())
        };
        match backend {
            Backend::Memory => unreachable!("the memory bus has no Redis connection"),
            Backend::Redis(url) => {
                let connect = |source| RedisError::Connect { url: url.clone(), source };
                let info = ::redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(connect)?;
                let resp3 = info.redis_settings().clone().set_protocol(::redis::ProtocolVersion::RESP3);
                let info = info.set_redis_settings(resp3);
                let client = ::redis::Client::open(info).map_err(connect)?;
                let config = ::redis::aio::ConnectionManagerConfig::new()
                    .set_push_sender(sender)
                    .set_automatic_resubscription()
                    // Reconnect with exponential backoff capped at 2 s (the crate adds jitter).
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(2))
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                client.get_connection_manager_with_config(config).await.map(Connection::Single).map_err(connect)
            }
            Backend::Cluster(nodes) => {
                let url = nodes.join(",");
                let connect = |source| RedisError::Connect { url: url.clone(), source };
                let client = ::redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(::redis::ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(2))
                    .build()
                    .map_err(connect)?;
                client.get_async_connection().await.map(Connection::Cluster).map_err(connect)
            }
        }
    }

    async fn registry(&mut self, key: &str) -> ::redis::RedisResult<HashMap<String, String>> {
        match self {
            Connection::Single(c) => c.hgetall(key).await,
            Connection::Cluster(c) => c.hgetall(key).await,
        }
    }

    /// Sends pipelines: one after the other on one Redis, concurrently on a Cluster (each to
    /// its shard; every pipeline must stay within one slot there).
    async fn pipelines(&mut self, pipes: &[::redis::Pipeline]) -> ::redis::RedisResult<()> {
        match self {
            Connection::Single(c) => {
                for pipe in pipes.iter().filter(|pipe| !pipe.is_empty()) {
                    pipe.query_async::<()>(c).await?;
                }
                Ok(())
            }
            Connection::Cluster(c) => {
                let sends = pipes.iter().filter(|pipe| !pipe.is_empty()).map(|pipe| {
                    let mut c = c.clone();
                    async move { pipe.query_async::<()>(&mut c).await }
                });
                futures_util::future::try_join_all(sends).await.map(|_| ())
            }
        }
    }

    /// The values of `keys` (one pipeline on one Redis, concurrent GETs on a Cluster).
    async fn get_many(&mut self, keys: &[String]) -> ::redis::RedisResult<Vec<Option<String>>> {
        match self {
            Connection::Single(c) => {
                let mut pipe = ::redis::pipe();
                for key in keys {
                    pipe.get(key);
                }
                pipe.query_async(c).await
            }
            Connection::Cluster(c) => {
                let gets = keys.iter().map(|key| {
                    let mut c = c.clone();
                    async move { c.get::<_, Option<String>>(key).await }
                });
                futures_util::future::try_join_all(gets).await
            }
        }
    }

    async fn exists(&mut self, key: &str) -> ::redis::RedisResult<bool> {
        match self {
            Connection::Single(c) => c.exists(key).await,
            Connection::Cluster(c) => c.exists(key).await,
        }
    }

    /// Redis's clock, in µs since the Unix epoch: one clock for every node.
    async fn time(&mut self) -> ::redis::RedisResult<u64> {
        let (seconds, micros): (u64, u64) = match self {
            Connection::Single(c) => ::redis::cmd("TIME").query_async(c).await?,
            Connection::Cluster(c) => ::redis::cmd("TIME").query_async(c).await?,
        };
        Ok(seconds * 1_000_000 + micros)
    }

    async fn ping(&mut self) -> ::redis::RedisResult<()> {
        let ping = ::redis::cmd("PING");
        match self {
            Connection::Single(c) => ping.query_async(c).await,
            Connection::Cluster(c) => ping.query_async(c).await,
        }
    }

    /// Subscribes to symbols' channels: sharded on a Cluster, one at a time there (an
    /// SSUBSCRIBE takes channels of one slot only).
    async fn subscribe(&mut self, channels: &[String]) -> ::redis::RedisResult<()> {
        match self {
            Connection::Single(c) => c.subscribe(channels).await,
            Connection::Cluster(c) => {
                for channel in channels {
                    c.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> ::redis::RedisResult<()> {
        match self {
            Connection::Single(c) => c.unsubscribe(channels).await,
            Connection::Cluster(c) => {
                for channel in channels {
                    c.sunsubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    /// Subscribes to a pattern (one Redis only).
    async fn psubscribe(&mut self, pattern: &str) -> ::redis::RedisResult<()> {
        match self {
            Connection::Single(c) => c.psubscribe(pattern).await,
            Connection::Cluster(_) => unreachable!("a Cluster has no sharded pattern subscription"),
        }
    }

    async fn punsubscribe(&mut self, pattern: &str) -> ::redis::RedisResult<()> {
        match self {
            Connection::Single(c) => c.punsubscribe(pattern).await,
            Connection::Cluster(_) => unreachable!("a Cluster has no sharded pattern subscription"),
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

/// Where messages on channels other than quotes go (`Store::listen`): channel → a bounded
/// sender. A message that finds its listener's queue full is dropped (its sender times out).
type Inbox = Arc<Mutex<HashMap<String, tokio::sync::mpsc::Sender<String>>>>;

fn deliver(inbox: &Inbox, channel: &str, message: &str) -> bool {
    match inbox.lock().expect("inbox lock").get(channel) {
        Some(listener) => {
            let _ = listener.try_send(message.to_string());
            true
        }
        None => false,
    }
}

/// The (channel, message) of a pub/sub push, if it is one and both are text.
fn message_of(info: &PushInfo) -> Option<(&str, &str)> {
    let (Value::BulkString(channel), Value::BulkString(message)) = (match (&info.kind, info.data.as_slice()) {
        (PushKind::Message | PushKind::SMessage, [channel, message]) => (channel, message),
        (PushKind::PMessage, [_pattern, channel, message]) => (channel, message),
        _ => return None,
    }) else {
        return None;
    };
    Some((std::str::from_utf8(channel).ok()?, std::str::from_utf8(message).ok()?))
}

/// A handle on the bus's Redis for what other modules keep or exchange there (the feeds'
/// states and control, see `feed::remote`): a clone of the node's connection.
#[derive(Clone)]
pub(crate) struct Store {
    connection: Connection,
    names: Names,
    inbox: Inbox,
}

impl Store {
    /// Writes each feed's state (name → JSON) into `P:feeds`.
    pub(crate) async fn put_feed_states(&mut self, states: &[(String, String)]) -> ::redis::RedisResult<()> {
        let mut pipe = ::redis::pipe();
        for (name, state) in states {
            pipe.hset(self.names.feeds(), name, state).ignore();
        }
        self.connection.pipelines(std::slice::from_ref(&pipe)).await
    }

    /// Every feed's state in `P:feeds` (name → JSON).
    pub(crate) async fn feed_states(&mut self) -> ::redis::RedisResult<HashMap<String, String>> {
        self.connection.registry(&self.names.feeds()).await
    }

    /// `P:control`: feed control requests, to the feed node.
    pub(crate) fn control_channel(&self) -> String {
        format!("{}:control", self.names.prefix)
    }

    /// `P:control-reply:{node}`: the answers to one node's requests.
    pub(crate) fn reply_channel(&self, node: &str) -> String {
        format!("{}:control-reply:{{{node}}}", self.names.prefix)
    }

    /// Subscribes to `channel`; its messages arrive on the receiver, at most `capacity` waiting.
    pub(crate) async fn listen(&mut self, channel: &str, capacity: usize) -> ::redis::RedisResult<tokio::sync::mpsc::Receiver<String>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
        self.inbox.lock().expect("inbox lock").insert(channel.to_string(), sender);
        self.connection.subscribe(&[channel.to_string()]).await?;
        Ok(receiver)
    }

    /// Publishes `message` on `channel` (sharded on a Cluster).
    pub(crate) async fn publish(&mut self, channel: &str, message: &str) -> ::redis::RedisResult<()> {
        let mut pipe = ::redis::pipe();
        if self.connection.is_cluster() {
            pipe.cmd("SPUBLISH").arg(channel).arg(message).ignore();
        } else {
            pipe.publish(channel, message).ignore();
        }
        self.connection.pipelines(std::slice::from_ref(&pipe)).await
    }
}

/// A feed node's forwarder: a [`Publisher`] that publishes on the local bus (local sessions,
/// REST) and queues the symbol for Redis.
pub(crate) struct RedisPublisher {
    bus: Arc<Bus>,
    outbox: Arc<Outbox>,
}

/// The symbols waiting to be written to Redis: one flag per topic, and the order they came in.
#[derive(Default)]
struct Outbox {
    waiting: Mutex<Waiting>,
    wake: Notify,
    /// Symbols registered, to write to the registry.
    registry: Mutex<Vec<(String, RegistryEntry)>>,
    /// The connection dropped: Redis may have restarted empty, so the writer writes the whole
    /// registry and every last value again.
    rewrite: AtomicBool,
}

#[derive(Default)]
struct Waiting {
    queued: Vec<bool>,
    order: Vec<TopicId>,
}

impl Outbox {
    /// Queues `topic`; `true` when it was waiting already (the publish merged into it).
    fn put(&self, topic: TopicId) -> bool {
        let mut waiting = self.waiting.lock().expect("outbox lock");
        let index = topic as usize;
        if waiting.queued.len() <= index {
            waiting.queued.resize(index + 1, false);
        }
        if waiting.queued[index] {
            return true;
        }
        waiting.queued[index] = true;
        waiting.order.push(topic);
        drop(waiting);
        self.wake.notify_one();
        false
    }

    /// Takes every waiting symbol (their flags cleared: a publish from now on queues again).
    fn take(&self, into: &mut Vec<TopicId>) {
        let mut waiting = self.waiting.lock().expect("outbox lock");
        let Waiting { queued, order } = &mut *waiting;
        for &id in order.iter() {
            queued[id as usize] = false;
        }
        into.append(order);
    }
}

impl Publisher for RedisPublisher {
    fn register(&self, symbol: &str, info: SymbolInfo) -> Result<Arc<Topic>, BusError> {
        let entry = RegistryEntry { name: info.name.clone(), sector: info.sector.clone(), feed: info.feed.to_string() };
        let topic = self.bus.register(symbol, info)?;
        self.outbox.registry.lock().expect("registry lock").push((symbol.to_string(), entry));
        self.outbox.wake.notify_one();
        Ok(topic)
    }

    fn publish(&self, topic: &Topic, draft: &QuoteDraft) -> u64 {
        self.publish_skipping(topic, draft, 0)
    }

    fn publish_skipping(&self, topic: &Topic, draft: &QuoteDraft, skip: u64) -> u64 {
        let seq = self.bus.publish_skipping(topic, draft, skip);
        if self.outbox.put(topic.id) {
            self.bus.link.conflate();
        }
        seq
    }
}

/// How often an idle feed node checks that Redis still has its registry.
const REGISTRY_CHECK: Duration = Duration::from_secs(2);

/// Symbols written per pipeline: a burst is sent in pieces, so one round trip stays short.
const BATCH: usize = 512;

/// Connects a feed node to Redis: its publisher (for the feeds) and the writer task.
pub(crate) async fn feed_node(backend: &Backend, prefix: &str, bus: Arc<Bus>, node: String, shutdown: Shutdown) -> Result<(Arc<RedisPublisher>, Store), RedisError> {
    let outbox = Arc::new(Outbox::default());
    let inbox = Inbox::default();
    let dropped = {
        let (outbox, bus, inbox) = (outbox.clone(), bus.clone(), inbox.clone());
        move |info: PushInfo| {
            if let Some((channel, message)) = message_of(&info) {
                deliver(&inbox, channel, message);
            }
            if info.kind == PushKind::Disconnection {
                tracing::warn!("bus: the Redis connection dropped; reconnecting");
                bus.link.set_connected(false);
                outbox.rewrite.store(true, Ordering::Release);
                outbox.wake.notify_one();
            }
        }
    };
    let mut connection = Connection::open(backend, dropped).await?;
    let url = url_of(backend);
    let epoch = connection.time().await.map_err(|source| RedisError::Connect { url, source })?;
    let publisher = Arc::new(RedisPublisher { bus: bus.clone(), outbox: outbox.clone() });
    let store = Store { connection: connection.clone(), names: Names::new(prefix), inbox };
    tokio::spawn(until_shutdown(shutdown, write_loop(connection, Names::new(prefix), bus, outbox, format!("{epoch} {node}"))));
    Ok((publisher, store))
}

/// The feed node's writer: each waiting symbol's latest quote, published and stored in one
/// pipeline. On an error the batch's symbols go back into the outbox (where newer publishes
/// may already have merged) and the writer waits for the connection to come back; then it
/// writes the whole registry and every symbol's last value again, since the Redis it finds may
/// be a restarted one that lost them.
async fn write_loop(mut connection: Connection, names: Names, bus: Arc<Bus>, outbox: Arc<Outbox>, origin: String) {
    let mut batch = Vec::new();
    let mut registered: Vec<(String, RegistryEntry)> = Vec::new();
    // Every symbol this node registered: what a rewrite writes.
    let mut all_registered: Vec<(String, RegistryEntry)> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        {
            let mut pending = outbox.registry.lock().expect("registry lock");
            all_registered.extend(pending.iter().cloned());
            registered.append(&mut pending);
        }
        if outbox.rewrite.swap(false, Ordering::AcqRel) {
            registered.clone_from(&all_registered);
            for topic in bus.topics() {
                outbox.put(topic.id);
            }
        }
        outbox.take(&mut batch);
        if batch.is_empty() && registered.is_empty() {
            // Idle (a paused feed): look every REGISTRY_CHECK whether Redis still has the
            // registry, so a Redis that restarted or was flushed meanwhile is filled again.
            tokio::select! {
                () = outbox.wake.notified() => {}
                () = tokio::time::sleep(REGISTRY_CHECK) => {
                    if !all_registered.is_empty() && connection.exists(&names.registry()).await.is_ok_and(|exists| !exists) {
                        tracing::warn!("bus: Redis has lost the symbol registry; writing it again");
                        outbox.rewrite.store(true, Ordering::Release);
                    }
                }
            }
            continue;
        }
        let mut sent_ok = true;
        if !registered.is_empty() {
            let mut pipe = ::redis::pipe();
            for (symbol, entry) in &registered {
                pipe.hset(names.registry(), symbol, serde_json::to_string(entry).expect("registry entry serialises")).ignore();
            }
            sent_ok = connection.pipelines(std::slice::from_ref(&pipe)).await.inspect_err(|e| tracing::warn!("bus: writing the symbol registry: {e}")).is_ok();
            if sent_ok {
                registered.clear();
            }
        }
        for chunk in batch.chunks(BATCH) {
            if !sent_ok {
                break;
            }
            // One pipeline for the chunk on one Redis; on a Cluster one per symbol (a pipeline
            // may not cross slots; a symbol's channel and key share one), sent concurrently.
            let mut pipes = vec![::redis::pipe()];
            for &id in chunk {
                let Some(topic) = bus.topic_by_id(id) else { continue };
                let Some(quote) = topic.latest() else { continue };
                let message = format!("{origin} {}", quote.json());
                if connection.is_cluster() {
                    let mut pipe = ::redis::pipe();
                    pipe.cmd("SPUBLISH").arg(names.channel(&topic.symbol)).arg(&message).ignore();
                    pipe.set(names.last_value(&topic.symbol), &message).ignore();
                    pipes.push(pipe);
                } else {
                    let pipe = &mut pipes[0];
                    pipe.publish(names.channel(&topic.symbol), &message).ignore();
                    pipe.set(names.last_value(&topic.symbol), &message).ignore();
                }
            }
            if let Err(e) = connection.pipelines(&pipes).await {
                tracing::warn!("bus: publishing to Redis: {e}");
                sent_ok = false;
            }
        }
        if bus.link.set_connected(sent_ok) && sent_ok {
            tracing::info!("bus: Redis answers again");
        }
        if sent_ok {
            batch.clear();
            backoff = Duration::from_millis(50);
        } else {
            // Back into the outbox: every symbol once (its latest value read again when sent),
            // and the whole registry, for a Redis that comes back empty.
            batch.clear();
            for topic in bus.topics() {
                outbox.put(topic.id);
            }
            registered.clone_from(&all_registered);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Connects a gateway to Redis: builds the local topic table from the registry and applies
/// each symbol's last value (so REST and snapshots are served at once), then follows what
/// local clients subscribe to (see [`run_gateway`]).
pub(crate) async fn gateway_node(backend: &Backend, prefix: &str, bus: Arc<Bus>, shutdown: Shutdown) -> Result<Store, RedisError> {
    let names = Names::new(prefix);
    let url = url_of(backend);
    let inbox = Inbox::default();
    let origins = Arc::new(Origins::default());
    let push = {
        let (bus, names, inbox, origins) = (bus.clone(), names.clone(), inbox.clone(), origins.clone());
        move |info: PushInfo| on_push(&bus, &names, &inbox, &origins, info)
    };
    let mut connection = Connection::open(backend, push).await?;
    let symbols = follow_registry(&mut connection, &names, &bus).await.map_err(|source| RedisError::Registry { url: url.clone(), key: names.registry(), source })?;
    let gateway = Gateway { names: names.clone(), bus, origins };
    gateway.refresh_last_values(&mut connection, &gateway.bus.topics()).await;
    tracing::info!(symbols, "bus: gateway on {url}");
    let store = Store { connection: connection.clone(), names, inbox };
    tokio::spawn(until_shutdown(shutdown, run_gateway(connection, gateway)));
    Ok(store)
}

/// The server's shutdown signal: `true` once it stops.
type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Runs a node's Redis task until the server shuts down: a stopped feed node publishes nothing
/// more (another may take over its symbols), a stopped gateway listens to nothing.
async fn until_shutdown(mut shutdown: Shutdown, task: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = shutdown.wait_for(|stopping| *stopping) => {}
        () = task => {}
    }
}

/// A backend's address, for messages.
fn url_of(backend: &Backend) -> String {
    match backend {
        Backend::Redis(url) => url.clone(),
        Backend::Cluster(nodes) => nodes.join(","),
        Backend::Memory => "memory".to_string(),
    }
}

/// What a gateway's loop and its push handler share.
struct Gateway {
    names: Names,
    bus: Arc<Bus>,
    origins: Arc<Origins>,
}

/// Which feed node each symbol follows: the newest to publish it (the highest epoch). One
/// entry per topic, so bounded by the registry.
#[derive(Default)]
struct Origins {
    by_topic: Mutex<HashMap<TopicId, Origin>>,
    /// Set when a symbol moved to a newer feed node; the gateway's loop resyncs the sessions.
    restarted: AtomicBool,
    /// The newest epoch logged as a restart (one line per restart, not one per symbol).
    logged: std::sync::atomic::AtomicU64,
    /// The older epoch last logged as a second publisher (one line per such node, not one per
    /// symbol; each symbol is counted).
    logged_duplicate: std::sync::atomic::AtomicU64,
}

struct Origin {
    epoch: u64,
    node: Box<str>,
    /// An older epoch already reported publishing this symbol beside this one.
    reported: u64,
}

/// Whether a quote came live (pub/sub) or from a last value read back: only a live one from
/// an older feed node shows that node is still publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    Live,
    Read,
}

/// Registers the registry's symbols not known yet; returns how many the registry holds.
async fn follow_registry(connection: &mut Connection, names: &Names, bus: &Bus) -> ::redis::RedisResult<usize> {
    let registry = connection.registry(&names.registry()).await?;
    let mut symbols: Vec<(String, RegistryEntry)> = registry.iter().filter_map(|(symbol, entry)| serde_json::from_str(entry).ok().map(|entry| (symbol.clone(), entry))).collect();
    symbols.sort_by(|a, b| a.0.cmp(&b.0));
    for (symbol, entry) in symbols {
        if bus.topic(&symbol).is_none() && crate::quote::normalise_symbol(&symbol).is_ok_and(|s| s == symbol) {
            let info = SymbolInfo { name: entry.name, sector: entry.sector, feed: entry.feed.as_str().into() };
            let _ = bus.register(&symbol, info);
        }
    }
    Ok(registry.len())
}

impl Gateway {
    /// Reads the last values of `topics` and applies each that is newer than the local one.
    async fn refresh_last_values(&self, connection: &mut Connection, topics: &[Arc<Topic>]) {
        for chunk in topics.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|topic| self.names.last_value(&topic.symbol)).collect();
            let Ok(values) = connection.get_many(&keys).await else { return };
            for (topic, value) in chunk.iter().zip(values) {
                if let Some(message) = value {
                    apply_message(&self.bus, &self.origins, &topic.symbol, &message, Arrival::Read);
                }
            }
        }
    }
}

/// How often a gateway looks at its local subscribers (a new one waits at most this long for
/// live quotes; its snapshot is served at once from the local topic).
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// A symbol's channel is dropped this long after its last local subscriber left (so at most
/// this plus [`FOLLOW_INTERVAL`]); a client that comes back at once costs no resubscription.
const UNSUBSCRIBE_AFTER: Duration = Duration::from_secs(2);
/// How often a gateway checks its connection, and how long a PING may take: a Redis that stops
/// answering turns `/readyz` to 503 within their sum (one that closes the connection, at once).
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the symbols no local client subscribes to are refreshed from their last values
/// (for REST), and the registry followed for new symbols.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// What a gateway listens to on Redis, following its local subscribers.
#[derive(Default)]
struct Listening {
    /// Symbols' channels: `None` while a local client wants them, else since when none does.
    channels: HashMap<TopicId, Option<tokio::time::Instant>>,
    /// The pattern over every symbol's channel, on one Redis while local clients want every
    /// symbol (a `*` subscriber): one subscription for the lot, new symbols included. The
    /// same idle mark as a channel's.
    pattern: Option<Option<tokio::time::Instant>>,
}

impl Listening {
    /// Whether a symbol's quotes arrive live, for a local client that wants them.
    fn hears(&self, id: TopicId) -> bool {
        self.pattern.is_some() || self.channels.get(&id).is_some_and(Option::is_none)
    }

    async fn follow(&mut self, connection: &mut Connection, gateway: &Gateway, topics: &[Arc<Topic>], now: tokio::time::Instant) {
        let names = &gateway.names;
        let every_symbol = !connection.is_cluster() && !topics.is_empty() && topics.iter().all(|t| t.subscribers() > 0);
        let keep_pattern = match (every_symbol, &mut self.pattern) {
            (true, Some(idle)) => {
                *idle = None;
                true
            }
            (true, None) => match connection.psubscribe(&names.every_channel()).await {
                Ok(()) => {
                    self.pattern = Some(None);
                    gateway.refresh_last_values(connection, topics).await;
                    // The pattern carries every channel now; a message on both would be
                    // applied once (by its seq) but read twice.
                    let list: Vec<String> = self.channels.keys().filter_map(|&id| gateway.bus.topic_by_id(id)).map(|t| names.channel(&t.symbol)).collect();
                    if list.is_empty() || connection.unsubscribe(&list).await.is_ok() {
                        self.channels.clear();
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!("bus: subscribing to {}: {e}", names.every_channel());
                    false
                }
            },
            (false, Some(idle @ None)) => {
                *idle = Some(now);
                true
            }
            (false, Some(Some(since))) => now.duration_since(*since) < UNSUBSCRIBE_AFTER,
            (false, None) => false,
        };
        if keep_pattern {
            return;
        }
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        for topic in topics {
            let wanted = topic.subscribers() > 0;
            match (wanted, self.channels.get_mut(&topic.id)) {
                (true, None) => subscribe.push(topic.clone()),
                (true, Some(idle)) => *idle = None,
                (false, Some(idle @ None)) => *idle = Some(now),
                (false, Some(Some(since))) if now.duration_since(*since) >= UNSUBSCRIBE_AFTER => unsubscribe.push(topic.clone()),
                _ => {}
            }
        }
        let mut subscribed = true;
        if !subscribe.is_empty() {
            let list: Vec<String> = subscribe.iter().map(|t| names.channel(&t.symbol)).collect();
            match connection.subscribe(&list).await {
                Ok(()) => {
                    self.channels.extend(subscribe.iter().map(|t| (t.id, None)));
                    gateway.refresh_last_values(connection, &subscribe).await;
                }
                Err(e) => {
                    subscribed = false;
                    tracing::warn!("bus: subscribing to {} channels: {e}", list.len());
                }
            }
        }
        if !unsubscribe.is_empty() {
            let list: Vec<String> = unsubscribe.iter().map(|t| names.channel(&t.symbol)).collect();
            if connection.unsubscribe(&list).await.is_ok() {
                for topic in &unsubscribe {
                    self.channels.remove(&topic.id);
                }
            }
        }
        // Leaving the pattern: only once the wanted channels are subscribed, so nothing wanted
        // goes unheard in between.
        if self.pattern.is_some() && subscribed && connection.punsubscribe(&names.every_channel()).await.is_ok() {
            self.pattern = None;
        }
    }
}

/// The gateway's loop. It holds the connection (the subscriptions live on it) and:
/// - subscribes to a symbol's channel when a local client subscribes to it, reading its last
///   value right after (a quote published in between is in the value or arrives after it, and
///   an older one is dropped by its seq), and drops the channel [`UNSUBSCRIBE_AFTER`] the last
///   one left;
/// - PINGs every [`HEALTH_INTERVAL`]; when one answers after a failure, the connection came back
///   (and resubscribed), so every symbol's last value is read again and applied if newer:
///   nobody is left on a price published while the gateway was cut off;
/// - refreshes the other symbols' last values and follows the registry every
///   [`REFRESH_INTERVAL`].
async fn run_gateway(mut connection: Connection, gateway: Gateway) {
    let (names, bus) = (&gateway.names, &gateway.bus);
    let mut listening = Listening::default();
    let mut next_health = tokio::time::Instant::now() + HEALTH_INTERVAL;
    let mut next_refresh = tokio::time::Instant::now() + REFRESH_INTERVAL;
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let now = tokio::time::Instant::now();
        let topics = bus.topics();
        listening.follow(&mut connection, &gateway, &topics, now).await;
        if gateway.origins.restarted.swap(false, Ordering::AcqRel) {
            bus.resync();
        }
        if now >= next_health {
            next_health = now + HEALTH_INTERVAL;
            let up = tokio::time::timeout(PING_TIMEOUT, connection.ping()).await.is_ok_and(|answer| answer.is_ok());
            // A dropped connection is also reported by its push (`on_push`), which may come first.
            let was_up = bus.link.is_connected();
            bus.link.set_connected(up);
            if up && !was_up {
                tracing::info!("bus: the Redis connection is back; reading every symbol's last value and resending them to clients");
                gateway.refresh_last_values(&mut connection, &topics).await;
                // Whatever was published meanwhile is in the last values: every session gets
                // its symbols again as a snapshot, so none is left on a price from before.
                bus.resync();
            } else if !up && was_up {
                tracing::warn!("bus: Redis does not answer; reconnecting");
            }
        }
        if now >= next_refresh {
            next_refresh = now + REFRESH_INTERVAL;
            if follow_registry(&mut connection, names, bus).await.is_ok() {
                let idle: Vec<Arc<Topic>> = bus.topics().into_iter().filter(|t| !listening.hears(t.id)).collect();
                gateway.refresh_last_values(&mut connection, &idle).await;
            }
        }
    }
}

fn on_push(bus: &Bus, names: &Names, inbox: &Inbox, origins: &Origins, info: PushInfo) {
    if info.kind == PushKind::Disconnection {
        bus.link.set_connected(false);
        tracing::warn!("bus: the Redis connection dropped; reconnecting");
        return;
    }
    let Some((channel, message)) = message_of(&info) else { return };
    match names.symbol_of(channel) {
        Some(symbol) => apply_message(bus, origins, symbol, message, Arrival::Live),
        None => {
            if !deliver(inbox, channel, message) {
                tracing::debug!("bus: a message on {channel}, which nothing here listens to");
            }
        }
    }
}

/// Applies one message (`EPOCH NODE JSON`) of `symbol` to the local topic table: in seq order
/// from the symbol's feed node, from the first seq of a newer one (a restart).
fn apply_message(bus: &Bus, origins: &Origins, symbol: &str, message: &str, arrival: Arrival) {
    let unreadable = || tracing::debug!("bus: an unreadable message for {symbol}: {message}");
    let mut fields = message.splitn(3, ' ');
    let (Some(epoch), Some(node), Some(json)) = (fields.next(), fields.next(), fields.next()) else { return unreadable() };
    let Ok(epoch) = epoch.parse::<u64>() else { return unreadable() };
    let Some(topic) = bus.topic(symbol) else { return unreadable() };
    let Ok(quote) = serde_json::from_str::<Quote>(json) else { return unreadable() };
    if *quote.symbol != *symbol {
        return unreadable();
    }
    let restarted = {
        let mut by_topic = origins.by_topic.lock().expect("origins lock");
        let origin = by_topic.entry(topic.id).or_insert_with(|| Origin { epoch, node: node.into(), reported: 0 });
        if epoch > origin.epoch {
            if origins.logged.fetch_max(epoch, Ordering::AcqRel) < epoch {
                tracing::info!("bus: feed node {node} publishes in place of {} (a restart): its seq starts again; clients get snapshots", origin.node);
            }
            *origin = Origin { epoch, node: node.into(), reported: 0 };
            true
        } else if epoch < origin.epoch {
            if arrival == Arrival::Live && origin.reported != epoch {
                origin.reported = epoch;
                bus.link.duplicate_publisher();
                if origins.logged_duplicate.swap(epoch, Ordering::AcqRel) != epoch {
                    tracing::error!(
                        "bus: {symbol} is published by two feed nodes, {node} and {} (started later): one feed node per symbol; following {} (further symbols counted in tickerfeed_bus_duplicate_publishers_total)",
                        origin.node,
                        origin.node
                    );
                }
            }
            return;
        } else {
            false
        }
    };
    let last = topic.seq();
    if restarted {
        bus.link.feed_restart();
        origins.restarted.store(true, Ordering::Release);
    } else if quote.seq <= last {
        return; // a repeat (the last value read after a subscribe, or a resubscription)
    } else if last != 0 && quote.seq > last + 1 {
        bus.link.seq_gap();
    }
    bus.apply_published(&topic, PublishedQuote::with_json(quote, json));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_symbol_hash_tag_and_channels_map_back() {
        let names = Names::new("tf");
        assert_eq!(names.channel("AAPL"), "tf:quotes:{AAPL}");
        assert_eq!(names.last_value("AAPL"), "tf:quote:{AAPL}");
        assert_eq!(names.registry(), "tf:symbols");
        assert_eq!(names.symbol_of("tf:quotes:{BRK.B}"), Some("BRK.B"));
        assert_eq!(names.symbol_of("other:quotes:{AAPL}"), None);
        assert_eq!(names.symbol_of("tf:quote:{AAPL}"), None);
        assert_eq!(names.every_channel(), "tf:quotes:{*}");
        assert_eq!(Names::new("a*b[1]").every_channel(), r"a\*b\[1\]:quotes:{*}", "the prefix is matched literally");
    }

    #[test]
    fn the_outbox_holds_one_entry_per_symbol_and_counts_what_it_merged() {
        let outbox = Outbox::default();
        let mut merged = 0;
        for _ in 0..1000 {
            merged += usize::from(outbox.put(3)) + usize::from(outbox.put(1));
        }
        let mut taken = Vec::new();
        outbox.take(&mut taken);
        assert_eq!(taken, vec![3, 1]);
        assert_eq!(merged, 1998);
        outbox.put(3);
        outbox.take(&mut taken);
        assert_eq!(taken, vec![3, 1, 3], "taken symbols queue again");
    }
}
