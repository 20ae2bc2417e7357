//! The Redis bus against a real `redis-server` (Debian's; `tests/run.sh` installs it), started
//! here on a free loopback port with no persistence: a feed node and gateways serve the same
//! (symbol, seq, last) stream, a gateway started late serves snapshots at once, and delivery
//! survives a Redis restart (the feed node rewrites the registry it lost).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, EVENT_TIMEOUT, http, http_at, http_json, start};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `redis-server` on loopback, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        RedisServer::start_on(port).await
    }

    async fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (tests/run.sh installs Debian's redis-server)");
        let server = RedisServer { child, port };
        server.answers().await;
        server
    }

    /// Waits until the server on `port` answers PING (a node started by someone else).
    async fn wait_for(port: u16) -> Probe {
        let probe = Probe { port };
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while probe.command("PING").await.as_deref() != Some("+PONG") {
            assert!(tokio::time::Instant::now() < deadline, "redis-server on port {port} does not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        probe
    }

    async fn answers(&self) {
        RedisServer::wait_for(self.port).await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn command(&self, command: &str) -> Option<String> {
        Probe { port: self.port }.command(command).await
    }

    async fn subscribers(&self, symbol: &str) -> u64 {
        Probe { port: self.port }.subscribers(symbol).await
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

/// Inline commands to a Redis on a port.
struct Probe {
    port: u16,
}

impl Probe {
    /// One inline command; the first line of the answer, or `None` when it cannot connect.
    async fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).await.ok()?;
        let mut answer = vec![0u8; 256];
        let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut answer)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string())
    }

    /// Subscribers of a symbol's quote channel (`PUBSUB NUMSUB`: `*2`, the channel, `:N`).
    async fn subscribers(&self, symbol: &str) -> u64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.expect("redis answers");
        stream.write_all(format!("PUBSUB NUMSUB tickerfeed:quotes:{{{symbol}}}\r\n").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 256];
        while !answer.ends_with(b"\r\n") || !String::from_utf8_lossy(&answer).lines().any(|l| l.starts_with(':')) {
            let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut buffer)).await.expect("an answer in time").unwrap();
            assert!(n > 0, "redis closed the connection");
            answer.extend_from_slice(&buffer[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        text.lines().find_map(|l| l.strip_prefix(':')).and_then(|n| n.parse().ok()).expect("NUMSUB's count")
    }
}

/// A three-node Redis Cluster on loopback (no replicas), made with `redis-cli --cluster create`.
struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .current_dir(dir.path())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server runs")
            })
            .collect();
        let cluster = RedisCluster { nodes, ports, _dir: dir };
        for port in &cluster.ports {
            RedisServer::wait_for(*port).await;
        }
        let addresses: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli").args(["--cluster", "create"]).args(&addresses).args(["--cluster-replicas", "0", "--cluster-yes"]).output().expect("redis-cli runs");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        for port in &cluster.ports {
            loop {
                let info = Command::new("redis-cli").args(["-p", &port.to_string(), "cluster", "info"]).output().unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "the cluster is not ok on port {port}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    fn url(&self) -> String {
        format!("redis+cluster://{}", self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node run as its own process (the test build of the binary), killed when dropped: its
/// RSS is its own.
struct Node {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Node {
    async fn start(args: &[&str]) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(env!("CARGO_BIN_EXE_tickerfeed"))
            .args(["--bind", &addr.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tickerfeed binary runs");
        let mut node = Node { child, addr };
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while TcpStream::connect(addr).await.is_err() {
            assert!(node.running(), "tickerfeed {args:?} exited");
            assert!(tokio::time::Instant::now() < deadline, "tickerfeed {args:?} does not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmRSS")
    }

    async fn wait_ready(&self, status: u16, within: Duration) {
        let since = tokio::time::Instant::now();
        while http_at(self.addr, "GET", "/readyz", None).await.0 != status {
            assert!(since.elapsed() < within, "/readyz on {} not {status} within {within:?}", self.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn counter(&self, name: &str) -> u64 {
        let text = http_at(self.addr, "GET", "/metrics", None).await.1;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("{name} in {text}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn metrics(server: &tickerfeed::server::RunningServer) -> String {
    http(server, "GET", "/metrics", None).await.1
}

async fn feed_node(redis: &RedisServer) -> tickerfeed::server::RunningServer {
    start(&["--bus", &redis.url(), "--role", "feed", "--sim-rate", "2000"]).await
}

async fn gateway(redis: &RedisServer) -> tickerfeed::server::RunningServer {
    start(&["--bus", &redis.url(), "--role", "gateway"]).await
}

/// A client subscribed to `symbols` at throttle 0; returns it and its snapshot (symbol → seq;
/// empty when the first quotes were live ones).
async fn subscriber(server: &tickerfeed::server::RunningServer, symbols: &[&str]) -> (Client, BTreeMap<String, u64>) {
    let (mut client, _) = Client::connect_welcomed(server).await;
    client.send(json!({"op":"subscribe","symbols":symbols,"throttle_ms":0,"snapshot":true})).await;
    client.recv_type("subscribed").await;
    // A symbol with no value yet has no snapshot: then the first message is a live one.
    let snapshot = client.recv_type("quotes").await;
    if snapshot["snapshot"] != true {
        return (client, BTreeMap::new());
    }
    let seqs = snapshot["quotes"].as_array().unwrap().iter().map(|q| (q["symbol"].as_str().unwrap().to_string(), q["seq"].as_u64().unwrap())).collect();
    (client, seqs)
}

/// Live quotes until `count` have arrived: (symbol, seq) → last, checking seq rises per symbol
/// (from a snapshot on: a resync's may repeat a seq, or start it again).
async fn collect(client: &mut Client, count: usize) -> BTreeMap<(String, u64), f64> {
    let mut seen = BTreeMap::new();
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    while seen.len() < count {
        let message: Value = client.recv_type("quotes").await;
        for quote in message["quotes"].as_array().unwrap() {
            let symbol = quote["symbol"].as_str().unwrap().to_string();
            let seq = quote["seq"].as_u64().unwrap();
            if message["snapshot"] == true {
                last_seq.insert(symbol, seq);
                continue;
            }
            let previous = last_seq.insert(symbol.clone(), seq).unwrap_or(0);
            assert!(seq > previous, "{symbol}: seq {seq} after {previous}");
            seen.insert((symbol, seq), quote["last"].as_f64().unwrap());
        }
    }
    seen
}

/// The next snapshot batch's first frame (symbol → seq), skipping live quotes.
async fn next_snapshot(client: &mut Client) -> BTreeMap<String, u64> {
    loop {
        let message = client.recv_type("quotes").await;
        if message["snapshot"] == true {
            return message["quotes"].as_array().unwrap().iter().map(|q| (q["symbol"].as_str().unwrap().to_string(), q["seq"].as_u64().unwrap())).collect();
        }
    }
}

/// 200 live quotes on each client; the (symbol, seq) pairs both saw (at least 100), each with
/// the same `last` on both.
async fn same_streams(first: &mut Client, second: &mut Client) -> Vec<(String, u64)> {
    // The feed publishes ~20 quotes/s per symbol: 200 take a few seconds unless the bus lags.
    let (a, b) =
        tokio::time::timeout(Duration::from_secs(15), async { tokio::join!(collect(first, 200), collect(second, 200)) }).await.expect("200 quotes on each gateway within 15 s");
    let common: Vec<(String, u64)> = a.keys().filter(|k| b.contains_key(*k)).cloned().collect();
    assert!(common.len() >= 100, "the two gateways' streams overlap in {} quotes only", common.len());
    for key in &common {
        assert_eq!(a[key], b[key], "{key:?}: the gateways disagree on last");
    }
    common
}

#[actix_web::test]
async fn gateways_serve_the_feed_nodes_stream_and_a_late_gateway_has_snapshots_at_once() {
    let redis = RedisServer::start().await;
    let feed = feed_node(&redis).await;
    let first = gateway(&redis).await;
    let (mut on_first, _) = subscriber(&first, &["AAPL", "MSFT"]).await;
    collect(&mut on_first, 20).await;

    // Started after the feed has published: its snapshot comes from Redis's last values.
    let second = gateway(&redis).await;
    let (mut on_second, snapshot) = subscriber(&second, &["AAPL", "MSFT"]).await;
    assert_eq!(snapshot.len(), 2, "both symbols in the late gateway's snapshot: {snapshot:?}");
    assert!(snapshot.values().all(|seq| *seq > 0), "{snapshot:?}");

    same_streams(&mut on_first, &mut on_second).await;
    // The feed node serves REST but not clients.
    let (status, _) = http(&feed, "GET", "/api/quotes/AAPL", None).await;
    assert_eq!(status, 200);
    let (status, _) = http(&feed, "GET", "/ws", None).await;
    assert_eq!(status, 404, "a feed node serves no client sessions");
    let (status, body) = http_json(&second, "GET", "/api/symbols", None).await;
    assert_eq!(status, 200);
    assert!(body.as_array().is_some_and(|s| s.len() > 50), "the gateway lists the feed's symbols");
    // The feed node's feeds, as it reports them, and their control stays with it.
    let (status, body) = http_json(&second, "GET", "/api/feeds", None).await;
    assert_eq!(status, 200);
    assert_eq!((body[0]["name"].as_str(), body[0]["state"].as_str()), (Some("sim"), Some("running")), "{body}");
    assert!(body[0]["quotes_published"].as_u64().is_some_and(|n| n > 0), "{body}");
    // Control through a gateway reaches the feed node, and its answer comes back.
    let (status, body) = http_json(&second, "POST", "/api/feeds/sim/control", Some(r#"{"action":"pause"}"#)).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("paused")), "{body}");
    let (_, on_feed) = http_json(&feed, "GET", "/api/feeds", None).await;
    assert_eq!(on_feed[0]["state"], "paused", "the feed node's own view");
    let (status, body) = http_json(&first, "POST", "/api/feeds/sim/control", Some(r#"{"action":"seek","to":"2020-01-01"}"#)).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("unsupported")), "the feed node's refusal, as it gave it: {body}");
    let (status, _) = http(&first, "POST", "/api/feeds/sim/control", Some(r#"{"action":"resume"}"#)).await;
    assert_eq!(status, 200);
    // Without a feed node, a gateway answers 504 after 2 s.
    feed.shutdown().await;
    let asked = tokio::time::Instant::now();
    let (status, body) = http_json(&first, "POST", "/api/feeds/sim/control", Some(r#"{"action":"pause"}"#)).await;
    assert_eq!((status, body["error"].as_str()), (504, Some("feed_timeout")), "{body}");
    assert!(asked.elapsed() >= Duration::from_millis(1900) && asked.elapsed() < Duration::from_secs(4), "answered after {:?}", asked.elapsed());
    control_requests_beyond_64_are_refused_at_once(&first).await;
    for server in [second, first] {
        server.shutdown().await;
    }
}

/// With no feed node answering, 70 control requests at once: 64 wait and time out, the rest
/// are refused at once — a gateway holds no more than 64.
async fn control_requests_beyond_64_are_refused_at_once(gateway: &tickerfeed::server::RunningServer) {
    let addr = gateway.addr;
    let asked = tokio::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..70 {
        requests.spawn(async move {
            let (status, body) = http_at(addr, "POST", "/api/feeds/sim/control", Some(r#"{"action":"pause"}"#)).await;
            (status, serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap_or_default().to_string(), asked.elapsed())
        });
    }
    let mut answers: BTreeMap<(u16, String), Vec<Duration>> = BTreeMap::new();
    while let Some(answer) = requests.join_next().await {
        let (status, error, after) = answer.unwrap();
        answers.entry((status, error)).or_default().push(after);
    }
    let busy = &answers[&(503, "feed_busy".to_string())];
    let timed_out = &answers[&(504, "feed_timeout".to_string())];
    assert_eq!((timed_out.len(), busy.len(), answers.len()), (64, 6, 2), "{answers:?}");
    assert!(busy.iter().all(|after| *after < Duration::from_millis(1500)), "refused at once: {busy:?}");
}

/// A gateway subscribes to a symbol's channel when its first client subscribes, and drops it
/// within 3 s of the last one leaving; meanwhile REST still answers for every symbol.
#[actix_web::test]
async fn a_gateways_channels_follow_its_clients() {
    let redis = RedisServer::start().await;
    let feed = feed_node(&redis).await;
    let node = gateway(&redis).await;
    assert_eq!(redis.subscribers("AAPL").await, 0, "no client: no channel");
    let (mut client, _) = subscriber(&node, &["AAPL"]).await;
    collect(&mut client, 3).await;
    assert_eq!(redis.subscribers("AAPL").await, 1, "one client: the gateway listens");
    assert_eq!(redis.subscribers("MSFT").await, 0, "only what clients want");
    // Its value is refreshed from Redis every second.
    let asked = tokio::time::Instant::now();
    while http(&node, "GET", "/api/quotes/MSFT", None).await.0 != 200 {
        assert!(asked.elapsed() < Duration::from_secs(3), "REST has no MSFT quote on the gateway");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    let left = tokio::time::Instant::now();
    while redis.subscribers("AAPL").await != 0 {
        assert!(left.elapsed() < Duration::from_secs(4), "the channel is still subscribed {:?} after the last client left", left.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("channel dropped {:?} after the last client left", left.elapsed());

    // A client of every symbol: one pattern subscription on one Redis, no channel per symbol.
    let (mut everything, _) = subscriber(&node, &["*"]).await;
    let quotes = collect(&mut everything, 200).await;
    let symbols: std::collections::BTreeSet<&str> = quotes.keys().map(|(symbol, _)| symbol.as_str()).collect();
    assert!(symbols.len() >= 20, "quotes of many symbols through the pattern: {symbols:?}");
    assert_eq!(redis.command("PUBSUB NUMPAT").await.as_deref(), Some(":1"), "one pattern for `*`");
    assert_eq!(redis.subscribers("AAPL").await, 0, "no channel per symbol beside the pattern");
    drop(everything);
    let left = tokio::time::Instant::now();
    while redis.command("PUBSUB NUMPAT").await.as_deref() != Some(":0") {
        assert!(left.elapsed() < Duration::from_secs(4), "the pattern is still subscribed {:?} after its client left", left.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
    feed.shutdown().await;
}

/// A feed node that restarts (a new epoch) begins its seq again: clients on a gateway get a
/// snapshot batch at the new seqs and follow on from there. Two feed nodes publishing one
/// symbol are an error: counted, and the gateway follows the newer.
#[actix_web::test]
async fn a_feed_node_restart_resyncs_clients_and_two_feed_nodes_are_an_error() {
    let redis = RedisServer::start().await;
    let first = start(&["--bus", &redis.url(), "--role", "feed", "--sim-rate", "20000"]).await;
    let node = gateway(&redis).await;
    let (mut client, _) = subscriber(&node, &["AAPL", "MSFT"]).await;
    // Until AAPL's seq is well above what a new feed node reaches in its first seconds.
    let mut before = 0;
    while before < 300 {
        before = collect(&mut client, 20).await.keys().filter(|(symbol, _)| symbol == "AAPL").map(|(_, seq)| *seq).max().unwrap_or(before);
    }
    first.shutdown().await;
    let second = start(&["--bus", &redis.url(), "--role", "feed", "--sim-rate", "200"]).await;
    let restarted = tokio::time::Instant::now();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), next_snapshot(&mut client)).await.expect("a snapshot batch after the feed node's restart");
    eprintln!("snapshot {:?} after the new feed node started: {snapshot:?}", restarted.elapsed());
    assert!(snapshot["AAPL"] < before, "AAPL's seq began again: {} after {before}", snapshot["AAPL"]);
    let after = collect(&mut client, 5).await;
    assert!(after.keys().all(|(_, seq)| *seq < before), "live quotes follow the new seqs: {after:?}");
    let text = metrics(&node).await;
    assert!(text.lines().any(|l| l.starts_with("tickerfeed_bus_feed_restarts_total ") && !l.ends_with(" 0")), "{text}");
    assert!(text.contains("tickerfeed_bus_duplicate_publishers_total 0"), "a restart is no duplicate");

    // A third feed node while the second still runs: both publish AAPL.
    let third = start(&["--bus", &redis.url(), "--role", "feed", "--sim-rate", "200"]).await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let text = metrics(&node).await;
        let duplicates = text.lines().find_map(|l| l.strip_prefix("tickerfeed_bus_duplicate_publishers_total ")).and_then(|n| n.parse::<u64>().ok());
        if duplicates.is_some_and(|n| n >= 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "two feed nodes on one symbol were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client follows one feed node's seq, never both interleaved.
    collect(&mut client, 6).await;
    for server in [third, second, node] {
        server.shutdown().await;
    }
}

#[actix_web::test]
async fn delivery_resumes_after_redis_restarts_empty() {
    let redis = RedisServer::start().await;
    let feed = feed_node(&redis).await;
    let gateway_node = gateway(&redis).await;
    let (mut client, _) = subscriber(&gateway_node, &["AAPL", "MSFT"]).await;
    let before = collect(&mut client, 5).await;
    let last_before = before.keys().filter(|(symbol, _)| symbol == "AAPL").map(|(_, seq)| *seq).max().unwrap_or(0);

    let ready = |server| async move { http(server, "GET", "/readyz", None).await.0 };
    assert_eq!((ready(&feed).await, ready(&gateway_node).await), (200, 200));
    let port = redis.stop();
    // Every node says so within 2 s; the client stays connected.
    let stopped = tokio::time::Instant::now();
    for (name, node) in [("gateway", &gateway_node), ("feed node", &feed)] {
        while ready(node).await != 503 {
            assert!(stopped.elapsed() < Duration::from_secs(2), "{name}: /readyz still 200 {:?} after Redis stopped", stopped.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("both nodes not ready {:?} after Redis stopped", stopped.elapsed());
    assert!(metrics(&gateway_node).await.contains("tickerfeed_bus_connected 0"));
    let redis = RedisServer::start_on(port).await;
    // The client stays connected, gets every symbol again as a snapshot batch, then newer
    // quotes, within 5 s of Redis's return.
    let started = tokio::time::Instant::now();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), next_snapshot(&mut client)).await.expect("a snapshot batch within 5 s of Redis's restart");
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["AAPL", "MSFT"], "every subscribed symbol");
    assert!(snapshot["AAPL"] >= last_before, "{snapshot:?} after seq {last_before}");
    eprintln!("snapshot batch {:?} after the restart", started.elapsed());
    let after = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let quotes = collect(&mut client, 1).await;
            if let Some(((_, seq), _)) = quotes.iter().find(|((symbol, seq), _)| symbol == "AAPL" && *seq > last_before + 1) {
                return *seq;
            }
        }
    })
    .await
    .expect("quotes again within 5 s of Redis's restart");
    eprintln!("delivery resumed {:?} after the restart (seq {after})", started.elapsed());
    for (name, node) in [("gateway", &gateway_node), ("feed node", &feed)] {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while ready(node).await != 200 {
            assert!(tokio::time::Instant::now() < deadline, "{name}: /readyz not back to 200");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = metrics(node).await;
        assert!(text.contains("tickerfeed_bus_connected 1") && text.contains("tickerfeed_bus_reconnects_total 1"), "{name}: {text}");
    }
    // The restarted Redis was empty: the feed node wrote its registry again.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let symbols = redis.command("HLEN tickerfeed:symbols").await.unwrap_or_default();
        if symbols.trim_start_matches(':').parse::<u64>().unwrap_or(0) > 50 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the registry was not rewritten: HLEN {symbols}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway_node.shutdown().await;
    feed.shutdown().await;
}

/// Four Redis outages of a second each, with the feed node publishing 5,000 quotes/s through
/// them and a gateway client of every symbol: no node exits, each outage ends in a snapshot
/// batch and live quotes, the feed node merged what Redis could not take, and neither node's
/// RSS grows from the second round to the last.
#[actix_web::test]
async fn nodes_stay_flat_across_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let feed = Node::start(&["--bus", &redis.url(), "--role", "feed", "--sim-rate", "5000"]).await;
    let gateway = Node::start(&["--bus", &redis.url(), "--role", "gateway"]).await;
    let mut client = Client::connect_at(gateway.addr, "/ws").await;
    client.recv_type("welcome").await;
    client.send(json!({"op":"subscribe","symbols":["*"],"throttle_ms":0})).await;
    client.recv_type("subscribed").await;
    collect(&mut client, 100).await;
    let mut rss = Vec::new();
    let (mut feed, mut gateway) = (feed, gateway);
    for round in 0..4 {
        let port = redis.stop();
        feed.wait_ready(503, Duration::from_secs(2)).await;
        gateway.wait_ready(503, Duration::from_secs(2)).await;
        // The outage itself: a second of publishing that Redis cannot take.
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis = RedisServer::start_on(port).await;
        tokio::time::timeout(Duration::from_secs(5), next_snapshot(&mut client)).await.unwrap_or_else(|_| panic!("round {round}: no snapshot within 5 s"));
        tokio::time::timeout(Duration::from_secs(5), collect(&mut client, 100)).await.unwrap_or_else(|_| panic!("round {round}: no live quotes within 5 s"));
        assert!(feed.running() && gateway.running(), "round {round}: a node exited");
        rss.push((feed.rss_kib(), gateway.rss_kib()));
    }
    eprintln!("RSS (feed node, gateway) after each outage, KiB: {rss:?}");
    for (name, first, last) in [("feed node", rss[1].0, rss[3].0), ("gateway", rss[1].1, rss[3].1)] {
        assert!(last < first + 4096, "{name}: RSS grew from {first} KiB to {last} KiB over two outages");
    }
    assert!(feed.counter("tickerfeed_bus_conflated_total").await > 0, "the feed node merged publishes while Redis was away");
    assert_eq!(gateway.counter("tickerfeed_bus_reconnects_total").await, 4);
}

/// The same identical-streams check on a three-node Redis Cluster: sharded pub/sub, each
/// symbol's channel and last value on its own shard.
#[actix_web::test]
async fn gateways_on_a_redis_cluster_serve_the_same_stream() {
    let began = tokio::time::Instant::now();
    let cluster = RedisCluster::start().await;
    eprintln!("cluster up after {:?}", began.elapsed());
    let feed = start(&["--bus", &cluster.url(), "--role", "feed", "--sim-rate", "2000"]).await;
    let first = start(&["--bus", &cluster.url(), "--role", "gateway"]).await;
    let second = start(&["--bus", &cluster.url(), "--role", "gateway"]).await;
    let symbols = ["AAPL", "MSFT", "NVDA", "JPM"];
    let (mut on_first, _) = subscriber(&first, &symbols).await;
    let (mut on_second, _) = subscriber(&second, &symbols).await;
    eprintln!("nodes up and subscribed after {:?}", began.elapsed());
    let common = same_streams(&mut on_first, &mut on_second).await;
    eprintln!("streams collected after {:?}", began.elapsed());
    let seen: std::collections::BTreeSet<&str> = common.iter().map(|(symbol, _)| symbol.as_str()).collect();
    assert_eq!(seen.len(), symbols.len(), "every symbol came through: {seen:?}");
    // `*` on a Cluster (no sharded pattern subscription): a shard channel per known symbol.
    let (mut everything, _) = subscriber(&first, &["*"]).await;
    let quotes = tokio::time::timeout(Duration::from_secs(15), collect(&mut everything, 300)).await.expect("300 quotes of `*` within 15 s");
    let seen: std::collections::BTreeSet<&str> = quotes.keys().map(|(symbol, _)| symbol.as_str()).collect();
    assert!(seen.len() >= 20, "quotes of many symbols through their shard channels: {seen:?}");
    for server in [second, first, feed] {
        server.shutdown().await;
    }
}
