#!/usr/bin/env python3
"""The side-by-side benchmark of issue 5: tickerfeed against Node `ws`, uWebSockets.js and
Socket.IO, six scenarios, one run, one machine; and tickerfeed over its other transports:
Server-Sent Events at /sse against its /ws (issue 13), and its Socket.IO endpoint at
/socket.io/ against the Node Socket.IO peer; and, in the firehose, tickerfeed with its clients
on the quotes and trades channels. Called by tests/bench/run.sh (which builds the
binaries, installs the peers and raises the open-file limit first); Python 3.11 stdlib only.

What it owns:
- the scenarios (full size and --smoke size) and the command line of each server and of the
  load generator (`target/release/loadgen`, which does the measuring: this script only starts
  processes, pins them, and reads the loadgen's JSON report);
- the life of every process it starts: each server in its own session, pinned to core 0, the
  load generator on core 1; all are killed on exit, whatever the exit;
- the figures derived across runs (medians, memory per connection, ratios between servers,
  the targets of issue 5 section 3, met or missed and by how much) and the outputs:
  results.md, results.json (every raw loadgen report plus the medians) and results.svg.

Why each server gets a fresh process per run: the memory figures (RSS per idle connection,
RSS drift after churn) are differences against the same process's RSS before the run, and a
crash must be pinned on one scenario. Why rounds alternate the servers: on a shared machine
noise comes in waves; interleaving spreads it over every server instead of one.

A failure of the bench (exit 1) is a server that crashed or would not start, or a load
generator that could not run. A missed performance target is a result, reported in
results.md, not a failure. With --smoke the bench also fails when a run's sanity checks fail
(no quotes flowed, clients failed to connect...): the smoke run exists so the bench cannot rot.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tests" / "bench"
PEERS = BENCH / "peers"
COMMITTED_RESULTS = BENCH / "results"
# BENCH_TICKERFEED: another tickerfeed binary for every tickerfeed variant (an A/B of one change:
# copy the release binary aside before the change, then run the bench with it and without).
TICKERFEED = Path(os.environ.get("BENCH_TICKERFEED") or ROOT / "target" / "release" / "tickerfeed")
LOADGEN = ROOT / "target" / "release" / "loadgen"

# tickerfeed-auth (issue 14: the cost of tokens), tickerfeed-redis (issue 15: the cost of the
# Redis bus) and tickerfeed-trades (the trades channel beside the quotes) are measured only when
# named in --servers.
ALL_SERVERS = ["tickerfeed", "tickerfeed-sse", "tickerfeed-socketio", "ws", "uws", "socketio", "tickerfeed-auth",
               "tickerfeed-redis", "tickerfeed-trades"]
DEFAULT_SERVERS = [s for s in ALL_SERVERS if s not in ("tickerfeed-auth", "tickerfeed-redis", "tickerfeed-trades")]
ALL_SCENARIOS = ["idle", "firehose", "ticker", "slow", "churn", "maxconn", "light", "aligned", "aligned-slow",
                 "knee"]
# Run only when named in --only: "light" (the ticker's load for a tenth of its clients: no
# server saturates, so latencies are the path's, not a queue's) and "aligned" (the ticker with
# aligned delivery, issue 16: tickerfeed and every peer take `align`), "aligned-slow" (that plus
# the slow scenario's stalled clients), "knee" (the immediate ticker's knee: a search over client
# counts, several runs per server).
DEFAULT_SCENARIOS = [s for s in ALL_SCENARIOS if s not in ("light", "aligned", "aligned-slow", "knee")]
# The knee (issue 16): the most clients of the immediate ticker at which p99 throttled latency
# stays within this, found by a search over client counts; tickerfeed's at least KNEE_VS_UWS ×
# uWebSockets.js's.
KNEE_P99_MS = 5.0
KNEE_VS_UWS = 2.0
SERVER_LABEL = {
    "tickerfeed": "tickerfeed",
    "tickerfeed-sse": "tickerfeed SSE",
    "tickerfeed-socketio": "tickerfeed Socket.IO*",
    "ws": "Node ws",
    "uws": "uWebSockets.js",
    "socketio": "Socket.IO*",
    "tickerfeed-auth": "tickerfeed, tokens on",
    "tickerfeed-redis": "tickerfeed via Redis",
    "tickerfeed-trades": "tickerfeed, quotes + trades",
}
# A variant is another way of reaching a server: the same process and command line, clients
# over another transport. tickerfeed-sse's clients read GET /sse (Server-Sent Events) instead of
# /ws, so the two compare the transports on the same server (issue 13); tickerfeed-socketio's
# speak Socket.IO at /socket.io/ (Engine.IO v4 over WebSocket), the same wire as the Node
# Socket.IO peer's (tests/bench/peers/README.md, "Socket.IO mapping").
# tickerfeed-trades' clients are tickerfeed's over /ws, subscribed to the trades channel beside
# the quotes (`channels: ["quotes","trades"]`): every published quote is also a trade, in seq
# order and never conflated, so the server writes what the quotes' conflation would have spared.
SERVER_PROCESS = {"tickerfeed-sse": "tickerfeed", "tickerfeed-socketio": "tickerfeed", "tickerfeed-trades": "tickerfeed"}
# Load generator options a variant adds to every scenario's.
LOADGEN_EXTRA = {"tickerfeed-trades": ["--channels", "quotes,trades"]}
# The servers whose clients take trades: a run of theirs without any is not a measurement.
TRADES_SERVERS = {"tickerfeed-trades"}
# A variant that runs in some scenarios only (every other server runs in all that are chosen):
# the trades channel is measured where throughput is, the firehose.
SERVER_SCENARIOS = {"tickerfeed-trades": {"firehose"}}


def runs_in(kind: str, scenario: str) -> bool:
    """Whether `kind` takes part in `scenario`."""
    return scenario in SERVER_SCENARIOS.get(kind, {scenario})
# tickerfeed-auth is a process of its own: tickerfeed with --auth-secret-file, every client
# with a token in its URL (checked once, at the upgrade) and feed control with an admin token.
# tickerfeed-redis is three processes on the server core: a redis-server (no persistence), a
# feed node replaying the file (--role feed) and the gateway the clients connect to (--role
# gateway); the server figures are the gateway's, the other two are measured beside them.
TICKERFEED_PROCESSES = {"tickerfeed", "tickerfeed-auth", "tickerfeed-redis"}
# The Redis bus's bar: quotes per gateway CPU-second at least this share of the in-process bus's.
REDIS_VS_MEMORY_TARGET = 0.8
AUTH_SECRET: Path | None = None


def auth_secret() -> Path:
    """tickerfeed-auth's HS256 secret file (made once per bench)."""
    global AUTH_SECRET
    if AUTH_SECRET is None:
        AUTH_SECRET = Path(tempfile.mkdtemp(prefix="tickerfeed-bench-auth-")) / "secret"
        AUTH_SECRET.write_text("bench-secret-of-at-least-thirty-two-bytes-0123\n")
    return AUTH_SECRET


def auth_token(admin: bool) -> str:
    """A token for tickerfeed-auth (all symbols, a day), from `tickerfeed token`."""
    cmd = [str(TICKERFEED), "token", "--secret-file", str(auth_secret()), "--sub", "bench",
           "--symbols", "*", "--ttl", "86400"] + (["--admin"] if admin else [])
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
# The load generator's --protocol for each server (v1 over WebSocket when not named).
LOADGEN_PROTOCOL = {"socketio": "socketio", "tickerfeed-socketio": "socketio", "tickerfeed-sse": "sse"}
# Issue 13: the firehose over SSE within 20% of /ws in delivered quotes per server CPU-second.
SSE_VS_WS_TARGET = 0.8
# The Socket.IO endpoint's bar: tickerfeed's /socket.io/ websocket at least 3× the Node
# Socket.IO peer in firehose quotes per server CPU-second.
SIO_VS_NODE_SIO_TARGET = 3.0
# Socket.IO speaks Engine.IO framing on top of WebSocket: its figures are not directly
# comparable with the v1 servers', so every table marks them (the asterisk in the labels).
# tickerfeed-socketio and socketio are the same transport as each other: compare them together.
DIFFERENT_TRANSPORT = {"socketio", "tickerfeed-socketio"}
SERVER_CORE, LOADGEN_CORE = "0", "1"
# tickerfeed refuses WebSocket upgrades beyond --max-connections (16,000 by default); the
# max-connections scenario needs ~19,000, so every tickerfeed run gets this (same config
# everywhere).
TICKERFEED_MAX_CONNECTIONS = 19500
STALE_MARGIN_MS = 10.0  # issue 5 §3: p99 staleness at most throttle + 10 ms
# tickerfeed's replay feed control; the peers answer the same path (tests/bench/peers/README.md).
CONTROL_PATH = "/api/feeds/replay/control"


class BenchError(Exception):
    """The bench itself failed (a server crashed, the load generator could not run...)."""


# ----------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Scenario:
    name: str
    title: str
    # Quotes per second the feed replays; 0 = paused.
    feed_rate: float
    # Load generator options (besides --url, --server-pid, --json, --symbol-list).
    loadgen: list[str]
    # What the loadgen run should take at most, beyond ramp + warm-up + duration + settle.
    duration: float
    warmup: float
    clients: int
    connect_rate: float
    settle: float = 0.0
    # Sample the server's socket send queues with `ss` (slow consumers).
    sample_sendq: bool = False
    stall: int = 0
    churn: float = 0.0
    processes: int = 1

    def expected_seconds(self) -> float:
        ramp = self.clients / self.connect_rate if self.connect_rate > 0 else 2.0
        return ramp + self.warmup + self.duration + self.settle


def scenarios(smoke: bool) -> dict[str, Scenario]:
    """The six scenarios of issue 5 §2; --smoke shrinks every number, not the shape."""
    if smoke:
        idle_n, fire_n, tick_n, stall_n, churn_r, max_n, light_n = 200, 50, 200, 20, 20.0, 400, 50
        dur, warm, slow_dur, slow_warm, churn_dur, settle, rate = 0.8, 0.2, 1.0, 0.3, 1.0, 0.3, 0.0
        fire_rate = 20_000.0
        knee_start, knee_cap, knee_step = 20, 160, 20
    else:
        idle_n, fire_n, tick_n, stall_n, churn_r, max_n, light_n = 10_000, 1_000, 5_000, 500, 500.0, 19_000, 500
        dur, warm, slow_dur, slow_warm, churn_dur, settle, rate = 20.0, 3.0, 60.0, 10.0, 30.0, 10.0, 2000.0
        fire_rate = 100_000.0
        knee_start, knee_cap, knee_step = 500, 19_000, 50
    ticker_rate = 5000.0
    common = ["--warmup", str(warm), "--connect-rate", str(rate)]
    ticker = ["--clients", str(tick_n), "--symbols", "10", "--zipf", "1", "--throttle-ms", "200"]
    s = [
        Scenario(
            "idle", "1. Idle connections", 0.0,
            ["--clients", str(idle_n), "--symbols", "10", "--throttle-ms", "200", "--idle",
             "--no-snapshot", "--no-observer", "--probe-interval-ms", "0", "--read-buffer-kib", "4",
             "--duration", str(min(dur, 5.0)), *common],
            duration=min(dur, 5.0), warmup=warm, clients=idle_n, connect_rate=rate),
        Scenario(
            "firehose", "2. Firehose", fire_rate,
            ["--clients", str(fire_n), "--symbols", "50", "--throttle-ms", "0",
             "--duration", str(dur), *common],
            duration=dur, warmup=warm, clients=fire_n, connect_rate=rate),
        Scenario(
            "ticker", "3. Ticker", ticker_rate,
            [*ticker, "--duration", str(dur), *common],
            duration=dur, warmup=warm, clients=tick_n, connect_rate=rate),
        Scenario(
            # A small receive buffer makes a stalled client's socket back up within seconds
            # (with kernel autotuning it would take minutes at 200 ms throttle); the longer
            # warm-up lets the bounded buffers fill before the window that judges "flat".
            "slow", "4. Slow consumers", ticker_rate,
            [*ticker, "--stall", str(stall_n), "--stall-rcvbuf-kib", "4",
             "--duration", str(slow_dur), "--warmup", str(slow_warm),
             "--connect-rate", str(rate)],
            duration=slow_dur, warmup=slow_warm, clients=tick_n + stall_n, connect_rate=rate,
            sample_sendq=True, stall=stall_n),
        Scenario(
            "churn", "5. Churn", ticker_rate,
            [*ticker, "--churn", str(churn_r), "--settle", str(settle),
             "--duration", str(churn_dur), *common],
            duration=churn_dur, warmup=warm, clients=tick_n, connect_rate=rate, settle=settle,
            churn=churn_r),
        Scenario(
            # A tenth of the ticker's feed: at 5,000 quotes/s, 19,000 clients would ask for
            # ~950,000 quotes/s, beyond one core for every server, and the scenario would measure
            # fan-out throughput again instead of how many connections a server holds and serves.
            "maxconn", "6. Max connections", ticker_rate / 10,
            ["--clients", str(max_n), "--symbols", "10", "--throttle-ms", "200", "--processes", "2",
             "--no-observer", "--probe-interval-ms", "0", "--read-buffer-kib", "8",
             "--duration", str(min(dur, 10.0)), *common],
            duration=min(dur, 10.0), warmup=warm, clients=max_n, connect_rate=rate, processes=2),
        Scenario(
            "aligned", "8. Ticker, aligned", ticker_rate,
            [*ticker, "--align", "--duration", str(dur), *common],
            duration=dur, warmup=warm, clients=tick_n, connect_rate=rate),
        Scenario(
            # The slow scenario on the aligned ticker: the others' core is no longer saturated,
            # so what the stalled clients cost them shows.
            "aligned-slow", "9. Slow consumers, aligned", ticker_rate,
            [*ticker, "--align", "--stall", str(stall_n), "--stall-rcvbuf-kib", "4",
             "--duration", str(slow_dur), "--warmup", str(slow_warm), "--connect-rate", str(rate)],
            duration=slow_dur, warmup=slow_warm, clients=tick_n + stall_n, connect_rate=rate,
            sample_sendq=True, stall=stall_n),
        Scenario(
            # The probe of the knee search: the ticker at `clients` (replaced by each probe,
            # see `knee_run`), a shorter window since a search takes several runs.
            "knee", "10. Ticker, the knee", ticker_rate,
            [*ticker, "--duration", str(min(dur, 10.0)), *common],
            duration=min(dur, 10.0), warmup=warm, clients=knee_start, connect_rate=rate),
        Scenario(
            "light", "7. Ticker, light", ticker_rate,
            ["--clients", str(light_n), *ticker[2:], "--duration", str(dur), *common],
            duration=dur, warmup=warm, clients=light_n, connect_rate=rate),
    ]
    KNEE_SEARCH.update(start=knee_start, cap=knee_cap, step=knee_step)
    return {x.name: x for x in s}


# Where the knee search starts, where it stops growing, and the client-count resolution it stops
# at (the larger of this and a tenth of the knee). Set by `scenarios` for full or smoke runs.
KNEE_SEARCH: dict[str, int] = {}


def with_clients(sc: Scenario, n: int) -> Scenario:
    """`sc` at `n` clients."""
    args = list(sc.loadgen)
    args[args.index("--clients") + 1] = str(n)
    return replace(sc, loadgen=args, clients=n)


def knee_search(passes, start: int, cap: int, step: int) -> int:
    """The most clients for which `passes(n)` holds, assuming it holds below some count and not
    above: doubles from `start` until a probe fails (or `cap` passes), then bisects until the
    bracket is within `step` or a tenth of the passing count. 0 if even `step` clients fail."""
    lo, hi, n = 0, None, start
    while hi is None:
        if passes(n):
            lo = n
            if n >= cap:
                return n
            n = min(cap, n * 2)
        else:
            hi = n
    while hi - lo > max(step, lo // 10):
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Settings:
    smoke: bool
    runs: int
    servers: list[str]
    only: list[str]
    out: Path
    work: Path
    pin: bool
    # Seconds a fresh server runs before a measurement (its RSS baseline is taken after).
    server_warmup: float
    # Feed-only CPU: seconds measured, after `server_warmup`.
    feed_only_s: float
    tick_quotes: int
    command: str
    # --render: the results.json to re-render instead of measuring.
    render: Path | None = None


# ----------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every process the bench starts, so that all of them die with it."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def start(self, cmd: list[str], log: Path, **kw) -> subprocess.Popen:
        with open(log, "wb") as f:
            # Own session: a signal to the group reaches node or the loadgen's children too.
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=ROOT, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, grace: float = 10.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; returns the exit code."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    # Tearing down a process with thousands of sockets and a large heap can
                    # take the kernel a while on a loaded machine.
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    print(f"  warning: pid {p.pid} ({' '.join(p.args[:4])}...) still alive 60 s "
                          "after SIGKILL", file=sys.stderr, flush=True)
                    return None
        with self.lock:
            if p in self.procs:
                self.procs.remove(p)
        return p.returncode

    def stop_all(self) -> None:
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            self.stop(p, grace=3.0)


PROCS = Processes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: str, cmd: list[str], settings: Settings) -> list[str]:
    return ["taskset", "-c", core, *cmd] if settings.pin else cmd


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/PID/stat (fields after the parenthesised name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + x for x in text[-lines:])


@dataclass
class Server:
    kind: str
    port: int
    proc: subprocess.Popen
    log: Path
    # tickerfeed-redis: the redis-server and the feed node, by name, beside the gateway (proc).
    companions: dict[str, subprocess.Popen] = field(default_factory=dict)
    feed_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self) -> str:
        protocol = LOADGEN_PROTOCOL.get(self.kind)
        if protocol == "sse":
            return f"http://127.0.0.1:{self.port}/sse"
        if protocol == "socketio":
            return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"
        if self.kind == "tickerfeed-auth":
            return f"ws://127.0.0.1:{self.port}/ws?token={auth_token(admin=False)}"
        return f"ws://127.0.0.1:{self.port}/ws"


def process_of(kind: str) -> str:
    """The server process behind `kind`: itself, or the server a variant reaches another way."""
    return SERVER_PROCESS.get(kind, kind)


def server_command(kind: str, port: int, rate: float, paused: bool, ticks: Path, bus: str | None = None) -> list[str]:
    """The server replaying `ticks` at `rate` quotes/s; `paused`: held until resumed over REST
    (tickerfeed has no start-paused flag: start_server pauses it as soon as it is ready).
    tickerfeed-redis: the gateway on `bus` (its feed node is `feed_node_command`)."""
    kind = process_of(kind)
    if kind == "tickerfeed-redis":
        return [str(TICKERFEED), "--bind", f"127.0.0.1:{port}", "--bus", bus, "--role", "gateway",
                "--max-connections", str(TICKERFEED_MAX_CONNECTIONS),
                "--max-connections-per-ip", str(TICKERFEED_MAX_CONNECTIONS)]
    if kind in TICKERFEED_PROCESSES:
        interval = 1000.0 / (rate if rate > 0 else 5000.0)
        auth = ["--auth-secret-file", str(auth_secret())] if kind == "tickerfeed-auth" else []
        return [str(TICKERFEED), "--bind", f"127.0.0.1:{port}", *auth, "--replay", str(ticks),
                "--interval-ms", f"{interval:.6g}", "--loop",
                "--max-connections", str(TICKERFEED_MAX_CONNECTIONS),
                # Every load-generator client comes from 127.0.0.1.
                "--max-connections-per-ip", str(TICKERFEED_MAX_CONNECTIONS)]
    script = PEERS / kind / "server.mjs"
    cmd = ["node", str(script), "--host", "127.0.0.1", "--port", str(port), "--file", str(ticks),
           "--rate", f"{rate:g}"]
    return cmd + (["--paused"] if paused or rate <= 0 else [])


def feed_node_command(port: int, rate: float, ticks: Path, bus: str) -> list[str]:
    """tickerfeed-redis's feed node: tickerfeed's own command line, publishing to `bus`."""
    return server_command("tickerfeed", port, rate, False, ticks) + ["--bus", bus, "--role", "feed"]


def start_redis_companions(rate: float, ticks: Path, settings: Settings, tag: str) -> tuple[dict, str, int]:
    """A redis-server and a feed node on the server core, both ready: (processes, bus URL, the
    feed node's port)."""
    logs = settings.work / "logs"
    redis_port, feed_port = free_port(), free_port()
    redis = PROCS.start(pinned(SERVER_CORE, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                             "--save", "", "--appendonly", "no"], settings),
                        logs / f"{tag}-redis-server.log")
    bus = f"redis://127.0.0.1:{redis_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", redis_port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if redis.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"redis-server did not start; log {logs / f'{tag}-redis-server.log'}")
        time.sleep(0.05)
    log = logs / f"{tag}-feed-node.log"
    feed = PROCS.start(pinned(SERVER_CORE, feed_node_command(feed_port, rate, ticks, bus), settings), log)
    node = Server("tickerfeed", feed_port, feed, log)
    deadline = time.monotonic() + 90
    while not ready(node):
        if feed.poll() is not None or time.monotonic() > deadline:
            PROCS.stop(feed)
            PROCS.stop(redis)
            raise BenchError(f"the feed node did not start; log {log}:\n{log_tail(log)}")
        time.sleep(0.05)
    return {"redis-server": redis, "feed node": feed}, bus, feed_port


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 5.0, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def start_server(kind: str, rate: float, ticks: Path, settings: Settings, tag: str,
                 paused: bool = False) -> Server:
    port = free_port()
    log = settings.work / "logs" / f"{tag}-{kind}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    paused = paused or rate <= 0
    companions, bus, feed_port = ({}, None, None)
    if process_of(kind) == "tickerfeed-redis":
        companions, bus, feed_port = start_redis_companions(rate, ticks, settings, tag)
    cmd = pinned(SERVER_CORE, server_command(kind, port, rate, paused, ticks, bus), settings)
    proc = PROCS.start(cmd, log)
    server = Server(kind, port, proc, log, companions, feed_port)
    deadline = time.monotonic() + 90  # loading a large tick file takes a few seconds
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{kind} exited with status {proc.returncode} while starting "
                             f"({' '.join(cmd)}); log {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            PROCS.stop(proc)
            raise BenchError(f"{kind} was not ready within 90 s; log {log}:\n{log_tail(log)}")
        if ready(server):
            break
        time.sleep(0.05)
    if companions:
        # The gateway follows the feed node's symbol registry every second: clients subscribe
        # once it has every symbol.
        want = len(symbols_of(ticks))
        while len(http_json("GET", f"http://127.0.0.1:{port}/api/symbols")[1]) < want:
            if time.monotonic() > deadline:
                raise BenchError(f"the gateway does not list the feed node's {want} symbols")
            time.sleep(0.05)
    if paused and process_of(kind) in TICKERFEED_PROCESSES:
        status, state = http_json("POST", f"http://127.0.0.1:{port}{CONTROL_PATH}",
                                  {"action": "pause"}, token=control_token(kind))
        if status != 200 or state.get("state") != "paused":
            raise BenchError(f"tickerfeed did not pause its feed: HTTP {status} {state}")
    return server


def control_token(kind: str) -> str | None:
    """The token feed control needs on `kind`'s server (none without tokens)."""
    return auth_token(admin=True) if process_of(kind) == "tickerfeed-auth" else None


def ready(server: Server) -> bool:
    if process_of(server.kind) in TICKERFEED_PROCESSES:
        try:
            status, _ = http_json("GET", f"http://127.0.0.1:{server.port}/readyz", timeout=1)
            return status == 200
        except (OSError, urllib.error.URLError, ValueError):
            return False
    # The peers print `listening <port>` once the listener is up (and the file loaded).
    try:
        return f"listening {server.port}" in server.log.read_text(errors="replace")
    except OSError:
        return False


def stop_server(server: Server, what: str) -> None:
    """Stops a server; one that had already died crashed during `what`."""
    if server.proc.poll() is not None:
        raise BenchError(f"{server.kind} crashed during {what} (exit status "
                         f"{server.proc.returncode}); log {server.log}:\n{log_tail(server.log)}")
    code = PROCS.stop(server.proc)
    if code not in (0, -signal.SIGTERM):
        print(f"  note: {server.kind} exited with status {code} on SIGTERM (log {server.log})",
              flush=True)
    for name, companion in server.companions.items():
        if companion.poll() is not None:
            raise BenchError(f"{server.kind}'s {name} crashed during {what} (exit status {companion.returncode})")
        PROCS.stop(companion)


def feed_node_counts(server: Server) -> tuple[float, float] | None:
    """The feed node's quotes published (every feed) and publishes merged in its outbox before
    reaching Redis (tickerfeed_bus_conflated_total)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.feed_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    lines = text.splitlines()
    published = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("tickerfeed_quotes_published_total{"))
    merged = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("tickerfeed_bus_conflated_total "))
    return published, merged


class CompanionMeter:
    """tickerfeed-redis: the CPU of the redis-server and the feed node over a stretch of time,
    and Redis's CPU per quote the feed node published in it."""

    def __init__(self, server: Server):
        self.server = server
        self.start = self.sample()

    def sample(self) -> dict:
        cpu = {name: cpu_seconds(p.pid) for name, p in self.server.companions.items()}
        return {"t": time.monotonic(), "cpu": cpu, "counts": feed_node_counts(self.server)}

    def figures(self) -> dict:
        end, start = self.sample(), self.start
        wall = end["t"] - start["t"]
        out = {"redis_cpu_pct": 100 * (end["cpu"]["redis-server"] - start["cpu"]["redis-server"]) / wall,
               "feed_node_cpu_pct": 100 * (end["cpu"]["feed node"] - start["cpu"]["feed node"]) / wall}
        if end["counts"] and start["counts"] and end["counts"][0] > start["counts"][0]:
            published = end["counts"][0] - start["counts"][0]
            merged = end["counts"][1] - start["counts"][1]
            redis_us = 1e6 * (end["cpu"]["redis-server"] - start["cpu"]["redis-server"])
            out["redis_us_per_quote"] = redis_us / published
            out["feed_merged_pct"] = 100 * merged / published
            # What Redis did per quote it was sent (a PUBLISH and a SET in a pipeline).
            if published > merged:
                out["redis_us_per_write"] = redis_us / (published - merged)
        return out


# ----------------------------------------------------------------------------------------------
# One measurement


def parse_ss_send_queues(text: str) -> list[int]:
    """Send-Q of each socket in `ss -tnH` output (columns Recv-Q Send-Q Local Peer...)."""
    queues = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
            queues.append(int(parts[1]))
    return queues


class SendQueueSampler(threading.Thread):
    """Samples the server's per-socket kernel send queues (`ss`) every few seconds during a
    run and keeps the sample where the `top_n` fullest sockets held the most: the stalled
    clients' queues, at their fullest."""

    def __init__(self, port: int, top_n: int, every: float):
        super().__init__(daemon=True)
        self.port, self.top_n, self.every = port, top_n, every
        self.stop_event = threading.Event()
        self.best: list[int] = []
        self.error: str | None = None

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            try:
                out = subprocess.run(
                    ["ss", "-tnH", "state", "established", f"( sport = :{self.port} )"],
                    capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired) as e:
                self.error = str(e)
                return
            top = sorted(parse_ss_send_queues(out), reverse=True)[: self.top_n]
            if sum(top) > sum(self.best):
                self.best = top

    def summary(self) -> dict:
        if not self.best:
            return {"sockets": 0, "max_kib": None, "mean_kib": None, "error": self.error}
        return {"sockets": len(self.best), "max_kib": max(self.best) / 1024,
                "mean_kib": statistics.fmean(self.best) / 1024, "error": self.error}


def run_loadgen(sc: Scenario, server: Server, symbols: list[str], settings: Settings,
                tag: str) -> tuple[dict, int]:
    report_path = settings.work / "reports" / f"{tag}-{server.kind}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)
    log = settings.work / "logs" / f"{tag}-{server.kind}-loadgen.log"
    cmd = [str(LOADGEN), "-q", "--url", server.url(), "--server-pid", str(server.pid),
           "--json", str(report_path), "--symbol-list", ",".join(symbols),
           *loadgen_args(sc, server.kind)]
    if sc.feed_rate > 0:
        # Every server starts paused and the loadgen resumes the feed once all its clients are
        # subscribed: connecting thousands of clients to a server already busy with a feed
        # starves the handshakes of a single-threaded one (Node) into timeouts, and the
        # scenarios would then compare servers carrying different numbers of clients.
        token = control_token(server.kind)
        cmd += ["--resume-feed", CONTROL_PATH + (f"?token={token}" if token else "")]
    proc = PROCS.start(pinned(LOADGEN_CORE, cmd, settings), log)
    limit = sc.expected_seconds() * 1.5 + 60
    try:
        code = proc.wait(limit)
    except subprocess.TimeoutExpired:
        PROCS.stop(proc, grace=3)
        raise BenchError(f"the load generator did not finish {tag} against {server.kind} within "
                         f"{limit:.0f} s; log {log}:\n{log_tail(log)}")
    PROCS.stop(proc)
    if code == 2 or not report_path.exists():
        raise BenchError(f"the load generator could not run {tag} against {server.kind} (exit "
                         f"status {code}); log {log}:\n{log_tail(log)}")
    return json.loads(report_path.read_text()), code


def loadgen_args(sc: Scenario, kind: str) -> list[str]:
    """The scenario's load generator options for `kind`'s clients. An SSE stream always starts
    with a snapshot (/sse has no snapshot parameter), so its idle clients get one; with the
    feed paused from the start it holds at most the few quotes published before the pause."""
    args = list(sc.loadgen)
    protocol = LOADGEN_PROTOCOL.get(kind)
    if protocol == "sse":
        args = [a for a in args if a != "--no-snapshot"]
    return args + LOADGEN_EXTRA.get(kind, []) + (["--protocol", protocol] if protocol else [])


def scenario_run(sc: Scenario, kind: str, ticks: Path, symbols: list[str], settings: Settings,
                 round_no: int) -> dict:
    tag = f"r{round_no}-{sc.name}"
    started = time.monotonic()
    server = start_server(kind, sc.feed_rate, ticks, settings, tag, paused=True)
    sampler = None
    try:
        time.sleep(settings.server_warmup)
        if sc.sample_sendq:
            sampler = SendQueueSampler(server.port, sc.stall, every=1.0 if settings.smoke else 5.0)
            sampler.start()
        meter = CompanionMeter(server) if server.companions else None
        report, code = run_loadgen(sc, server, symbols, settings, tag)
        companions = meter.figures() if meter else None
    except BaseException:
        PROCS.stop(server.proc, grace=3)
        raise
    finally:
        if sampler:
            sampler.stop_event.set()
            sampler.join(15)
    stop_server(server, f"{sc.name} (round {round_no})")
    run = {
        "scenario": sc.name,
        "server": kind,
        "round": round_no,
        "wall_s": round(time.monotonic() - started, 1),
        "loadgen_exit": code,
        "metrics": metrics_of(sc, report),
        "report": report,
    }
    if sampler:
        run["metrics"]["sendq"] = sampler.summary()
    if companions:
        run["companions"] = companions
        run["metrics"].update(companions)
    return run


def feed_only_run(kind: str, rate: float, ticks: Path, settings: Settings, round_no: int) -> dict:
    """The server with its feed at `rate` and no client: what the feed alone costs."""
    tag = f"r{round_no}-feed{rate:g}"
    server = start_server(kind, rate, ticks, settings, tag)
    time.sleep(settings.server_warmup)
    c0, t0 = cpu_seconds(server.pid), time.monotonic()
    meter = CompanionMeter(server) if server.companions else None
    time.sleep(settings.feed_only_s)
    c1, t1 = cpu_seconds(server.pid), time.monotonic()
    companions = meter.figures() if meter else {}
    rss = rss_mib(server.pid)
    stop_server(server, f"the feed-only run at {rate:g} quotes/s (round {round_no})")
    # tickerfeed-redis: the gateway's CPU with no client, the feed node's and Redis's beside it.
    return {"server": kind, "rate": rate, "round": round_no,
            "cpu_pct": 100 * (c1 - c0) / (t1 - t0), "rss_mib": rss, **companions}


def knee_run(sc: Scenario, kind: str, ticks: Path, symbols: list[str], settings: Settings,
             round_no: int) -> dict:
    """The knee of `kind` in the immediate ticker: a probe is one run at n clients, which passes
    when every client connected, p99 throttled latency ≤ KNEE_P99_MS, and the load generator was
    not the limit (a client-bound probe fails: its latency is the client's)."""
    probes: list[dict] = []

    def passes(n: int) -> bool:
        run = scenario_run(with_clients(sc, n), kind, ticks, symbols, settings, round_no)
        m = run["metrics"]
        p99 = m["throttled_p99_ms"]
        ok = (m["connected"] >= n and p99 is not None and p99 <= KNEE_P99_MS
              and not m["client_bound"])
        probes.append({"clients": n, "throttled_p99_ms": p99, "server_cpu_pct": m["server_cpu_pct"],
                       "loadgen_cpu_pct": m["loadgen_cpu_pct"], "client_bound": m["client_bound"],
                       "connected": m["connected"], "passed": ok})
        print(f"    knee probe {kind:<19} {n:>6} clients: p99thr {fmt_ms(p99)}, CPU "
              f"{fmt_pct(m['server_cpu_pct'])}{', client-bound' if m['client_bound'] else ''} -> "
              f"{'pass' if ok else 'fail'}", flush=True)
        return ok

    knee = knee_search(passes, KNEE_SEARCH["start"], KNEE_SEARCH["cap"], KNEE_SEARCH["step"])
    return {"server": kind, "round": round_no, "knee_clients": knee, "probes": probes,
            "capped": knee >= KNEE_SEARCH["cap"]}


def knee_medians(knee_runs: list[dict]) -> dict:
    """Per server: the median knee over the rounds, and the last round's probes."""
    out: dict = {}
    for k in knee_runs:
        out.setdefault(k["server"], []).append(k)
    return {s: {"knee_clients": median([k["knee_clients"] for k in ks]), "runs": len(ks),
                "knees": [k["knee_clients"] for k in ks], "capped": any(k["capped"] for k in ks),
                "probes": ks[-1]["probes"]}
            for s, ks in out.items()}


# ----------------------------------------------------------------------------------------------
# Figures


def metrics_of(sc: Scenario, r: dict) -> dict:
    """The figures of one loadgen report that the tables use."""
    m, c = r["measured"], r["clients"]
    rss = r.get("server_rss_mib") or {}
    lat, thr, st = r["latency_ms"], r["latency_throttled_ms"], r["staleness_ms"]
    out = {
        "ok": r["ok"],
        "failures": r["failures"],
        "warnings": r["warnings"],
        "connected": c["connected"],
        "failed": c["failed"],
        "disconnected": c["disconnected"],
        "delivering": c.get("delivering"),
        "stall_connected": c["stall_connected"],
        "quotes_per_s": m["quotes_per_s"],
        "frames_per_s": m["frames_per_s"],
        "quotes_per_frame": m["quotes_per_frame"],
        "mb_per_s": m["mb_per_s"],
        "quotes_per_server_cpu_s": m.get("quotes_per_server_cpu_s"),
        # The trades channel (tickerfeed-trades); absent from reports of older load generators.
        "trades_per_s": m.get("trades_per_s"),
        "trades_per_server_cpu_s": m.get("trades_per_server_cpu_s"),
        "trades_per_frame": m.get("trades_per_frame"),
        "trades_lost_pct": m.get("trades_lost_pct"),
        "trade_order_errors": r["messages"].get("trade_order_errors"),
        "server_cpu_pct": r["server"].get("cpu_pct"),
        "latency_p50_ms": lat["p50"] if lat["samples"] else None,
        "latency_p99_ms": lat["p99"] if lat["samples"] else None,
        "latency_p999_ms": lat["p999"] if lat["samples"] else None,
        "throttled_p99_ms": thr["p99"] if thr["samples"] else None,
        "staleness_p99_ms": st["p99"] if st["samples"] else None,
        "ordering_errors": r["messages"]["ordering_errors"],
        "loadgen_cpu_pct": r["loadgen"]["cpu_pct_max_process"],
        "client_bound": r["loadgen"]["client_bound"],
        "rss_before_mib": rss.get("before"),
        "rss_start_mib": rss.get("start"),
        "rss_end_mib": rss.get("end"),
        "rss_measured_max_mib": rss.get("measured_max"),
        "rss_after_settle_mib": rss.get("after_settle"),
    }
    # Per connection: idle with the feed paused; the ticker (and aligned) with the feed running,
    # measured at the end of the window: each connection's buffers as traffic leaves them.
    # A garbage-collected server (the Node peers) can end below its baseline: no figure then.
    if sc.name in ("idle", "ticker", "aligned") and rss.get("end") and rss.get("before") and c["connected"] \
            and rss["end"] >= rss["before"]:
        out["rss_per_conn_kib"] = (rss["end"] - rss["before"]) * 1024 / c["connected"]
    if rss.get("start") and rss.get("measured_max"):
        out["rss_growth_pct"] = 100 * (rss["measured_max"] - rss["start"]) / rss["start"]
    if rss.get("start") and rss.get("after_settle"):
        out["rss_drift_pct"] = 100 * (rss["after_settle"] - rss["start"]) / rss["start"]
    churn = r.get("churn")
    if churn:
        out.update({"churn_attempted": churn["attempted"], "churn_ok": churn["ok"],
                    "churn_failed": churn["failed"], "churn_failure_kinds": churn["failure_kinds"],
                    "churn_per_s": churn["attempted_per_s"]})
    return out


def sanity_problems(sc: Scenario, run: dict) -> list[str]:
    """What makes a run unusable as a measurement (checked strictly in --smoke)."""
    m = run["metrics"]
    problems = [f"loadgen: {f}" for f in m["failures"]]
    want = sc.clients - sc.stall
    if m["connected"] < want:
        problems.append(f"{m['connected']} of {want} clients connected")
    if sc.name != "idle" and not m["quotes_per_s"]:
        problems.append("no quotes were delivered")
    if sc.name != "idle" and (m["delivering"] or 0) < m["connected"]:
        what = "quotes or trades" if run.get("server") in TRADES_SERVERS else "quotes"
        problems.append(f"only {m['delivering']} of {m['connected']} clients received {what}")
    if m["quotes_per_server_cpu_s"] is None and sc.name != "idle":
        problems.append("no server CPU figure")
    if run.get("server") in TRADES_SERVERS and not m.get("trades_per_s"):
        problems.append("no trades were delivered")
    if sc.name == "idle" and m.get("rss_per_conn_kib") is None:
        problems.append("no RSS per connection")
    if sc.stall and m["stall_connected"] < sc.stall:
        problems.append(f"{m['stall_connected']} of {sc.stall} stalled clients connected")
    if sc.churn and not m.get("churn_ok"):
        problems.append("no churn connection succeeded")
    if sc.settle and m.get("rss_drift_pct") is None:
        problems.append("no RSS after settle")
    return problems


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def medians(runs: list[dict]) -> dict:
    """Per (scenario, server): the median of every numeric metric over the runs."""
    out: dict = {}
    for run in runs:
        out.setdefault(run["scenario"], {}).setdefault(run["server"], []).append(run["metrics"])
    result: dict = {}
    for scenario, per_server in out.items():
        result[scenario] = {}
        for server, ms in per_server.items():
            keys = [k for k, v in ms[0].items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
            med = {k: median([m.get(k) for m in ms]) for k in keys}
            med["runs"] = len(ms)
            med["client_bound_runs"] = sum(1 for m in ms if m.get("client_bound"))
            med["sendq_max_kib"] = median([(m.get("sendq") or {}).get("max_kib") for m in ms])
            med["sendq_mean_kib"] = median([(m.get("sendq") or {}).get("mean_kib") for m in ms])
            kinds: dict[str, int] = {}
            for m in ms:
                for kind, n in (m.get("churn_failure_kinds") or {}).items():
                    kinds[kind] = kinds.get(kind, 0) + n
            med["churn_failure_kinds_all_runs"] = kinds
            result[scenario][server] = med
    return result


def feed_medians(feed_runs: list[dict]) -> dict:
    out: dict = {}
    for f in feed_runs:
        out.setdefault(f["server"], {}).setdefault(f"{f['rate']:g}", []).append(f["cpu_pct"])
    return {s: {r: median(v) for r, v in rates.items()} for s, rates in out.items()}


def get(med: dict, scenario: str, server: str, key: str):
    return med.get(scenario, {}).get(server, {}).get(key)


def verdict_at_least(value, target) -> tuple[str, str]:
    """(verdict, by how much) for a "value ≥ target" target."""
    if value is None or target is None:
        return "not measured", ""
    if value >= target:
        return "met", f"{100 * (value / target - 1):+.0f}% margin"
    return "**missed**", f"{100 * (1 - value / target):.0f}% short"


def verdict_at_most(value, target, points: bool = False) -> tuple[str, str]:
    """(verdict, by how much) for a "value ≤ target" target. With `points` the value and the
    target are percentages and the distance is given in percentage points (a CPU share 10
    points over a 50% limit, rather than "20% over")."""
    if value is None or target is None:
        return "not measured", ""
    if points:
        gap = abs(value - target)
        return ("met", f"{gap:.1f} points below the limit") if value <= target else (
            "**missed**", f"{gap:.1f} points over")
    if value <= target:
        return "met", f"{100 * (1 - value / target):.0f}% below the limit" if target else ""
    over = f"{100 * (value / target - 1):.0f}% over" if target else f"{value:.3g} over"
    return "**missed**", over


def targets(med: dict, sc: dict[str, Scenario]) -> list[dict]:
    """Issue 5 §3, judged on tickerfeed's medians."""
    rows = []
    tf = "tickerfeed"

    def add(target, measured, verdict_by):
        v, by = verdict_by
        rows.append({"target": target, "measured": measured, "verdict": v, "by": by})

    fire_tf = get(med, "firehose", tf, "quotes_per_server_cpu_s")
    # Issue 16: at least 3× both Node peers (issue 5 asked 1.5× uWebSockets.js).
    for peer, need in (("ws", 3.0), ("uws", 3.0)):
        fire_peer = get(med, "firehose", peer, "quotes_per_server_cpu_s")
        ratio = fire_tf / fire_peer if fire_tf and fire_peer else None
        add(f"firehose: delivered quotes per server CPU-second ≥ {need:g}× {SERVER_LABEL[peer]}",
            f"{ratio:.2f}×" if ratio else "—", verdict_at_least(ratio, need))
    per_conn = get(med, "idle", tf, "rss_per_conn_kib")
    n_idle = sc["idle"].clients
    add(f"idle: RSS per subscribed connection ≤ 15 KiB ({n_idle:,} connections × 10 symbols)",
        f"{per_conn:.1f} KiB" if per_conn is not None else "—", verdict_at_most(per_conn, 15.0))
    if "ticker" in sc:
        traffic = get(med, "ticker", tf, "rss_per_conn_kib")
        add(f"ticker: RSS per connection with traffic ≤ 15 KiB ({sc['ticker'].clients:,} connections, feed running)",
            f"{traffic:.1f} KiB" if traffic is not None else "—", verdict_at_most(traffic, 15.0))
    if "slow" in sc:
        n_stall = sc["slow"].stall
        sendq = get(med, "slow", tf, "sendq_max_kib")
        add(f"stalled client: kernel send queue ≤ 64 KiB (`ss`, fullest of {n_stall} stalled sockets)",
            f"{sendq:.1f} KiB" if sendq is not None else "—", verdict_at_most(sendq, 64.0))
        rss_slow = get(med, "slow", tf, "rss_start_mib")
        rss_ticker = get(med, "ticker", tf, "rss_start_mib")
        per_stall = ((rss_slow - rss_ticker) * 1024 / n_stall
                     if rss_slow is not None and rss_ticker is not None and n_stall else None)
        add(f"stalled client: server RSS ≤ 64 KiB (slow − ticker RSS at window start, / {n_stall})",
            f"{per_stall:.1f} KiB" if per_stall is not None else "—",
            verdict_at_most(per_stall, 64.0))
    thr = get(med, "ticker", tf, "throttled_p99_ms")
    add("ticker: p99 throttled latency ≤ 5 ms", fmt_ms(thr), verdict_at_most(thr, 5.0))
    stale = get(med, "ticker", tf, "staleness_p99_ms")
    add(f"ticker: p99 staleness ≤ throttle + {STALE_MARGIN_MS:g} ms = 210 ms", fmt_ms(stale),
        verdict_at_most(stale, 200.0 + STALE_MARGIN_MS))
    cpu = get(med, "ticker", tf, "server_cpu_pct")
    add("ticker: server CPU ≤ 50% of its core", fmt_pct(cpu), verdict_at_most(cpu, 50.0, points=True))
    if "aligned" in sc:
        # Issue 16's aligned targets.
        cpu = get(med, "aligned", tf, "server_cpu_pct")
        add("aligned ticker: server CPU ≤ 35% of its core", fmt_pct(cpu), verdict_at_most(cpu, 35.0, points=True))
        tick = get(med, "aligned", tf, "throttled_p99_ms")
        add("aligned ticker: p99 (arrival − grid tick) ≤ 5 ms", fmt_ms(tick), verdict_at_most(tick, 5.0))
        stale = get(med, "aligned", tf, "staleness_p99_ms")
        add(f"aligned ticker: p99 staleness ≤ throttle + {STALE_MARGIN_MS:g} ms = 210 ms", fmt_ms(stale),
            verdict_at_most(stale, 200.0 + STALE_MARGIN_MS))
    if "knee" in sc:
        knee_tf, knee_uws = get(med, "knee", tf, "knee_clients"), get(med, "knee", "uws", "knee_clients")
        ratio = knee_tf / knee_uws if knee_tf and knee_uws else None
        add(f"immediate ticker: the knee (most clients with p99 throttled latency ≤ {KNEE_P99_MS:g} ms) "
            f"≥ {KNEE_VS_UWS:g}× {SERVER_LABEL['uws']}'s",
            f"{knee_tf:,.0f} vs {knee_uws:,.0f} clients: {ratio:.2f}×" if ratio else "—",
            verdict_at_least(ratio, KNEE_VS_UWS))
    if "aligned-slow" in sc:
        base = get(med, "aligned", tf, "staleness_p99_ms")
        slow = get(med, "aligned-slow", tf, "staleness_p99_ms")
        moved = 100 * abs(slow / base - 1) if slow is not None and base else None
        add("aligned slow consumers: the others' p99 staleness moves < 10% (vs aligned)",
            f"{base:.2f} → {slow:.2f} ms ({100 * (slow / base - 1):+.0f}%)" if moved is not None else "—",
            verdict_at_most(moved, 10.0, points=True))
    slow_thr = get(med, "slow", tf, "throttled_p99_ms")
    both = slow_thr is not None and bool(thr)
    moved = 100 * abs(slow_thr / thr - 1) if both else None
    add("slow consumers: the others' p99 throttled latency moves < 10% (vs ticker)",
        f"{thr:.2f} → {slow_thr:.2f} ms ({100 * (slow_thr / thr - 1):+.0f}%)" if both else "—",
        verdict_at_most(moved, 10.0, points=True))
    growth = get(med, "slow", tf, "rss_growth_pct")
    add("slow consumers: RSS flat (max over the window ≤ 5% above its start)",
        fmt_signed_pct(growth), verdict_at_most(growth, 5.0, points=True))
    failed = get(med, "churn", tf, "churn_failed")
    add("churn: zero failed connects", f"{failed:g}" if failed is not None else "—",
        ("met", "") if failed == 0 else (("**missed**", f"{failed:g} failed") if failed else ("not measured", "")))
    drift = get(med, "churn", tf, "rss_drift_pct")
    add("churn: RSS back within 5% after it stops (after settle vs window start)",
        fmt_signed_pct(drift),
        verdict_at_most(abs(drift) if drift is not None else None, 5.0, points=True))
    conn = get(med, "maxconn", tf, "connected")
    deliv = get(med, "maxconn", tf, "delivering")
    if "maxconn" in sc:
        want = sc["maxconn"].clients
        add(f"max connections: {want:,} subscribed clients connected, all still delivering",
            f"{conn:,.0f} connected, {deliv:,.0f} delivering" if conn is not None and deliv is not None else "—",
            verdict_at_least(min(conn, deliv) if conn is not None and deliv is not None else None, want))
    return rows


def fmt_ms(v) -> str:
    return "—" if v is None else f"{v:.2f} ms"


def fmt_pct(v) -> str:
    return "—" if v is None else f"{v:.0f}%"


def fmt_signed_pct(v) -> str:
    return "—" if v is None else f"{v:+.1f}%"


def fmt_num(v, digits=0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


# ----------------------------------------------------------------------------------------------
# Outputs


def markdown(data: dict) -> str:
    med, feed, meta, sc_list = data["medians"], data["feed_only_cpu_pct"], data["machine"], data["scenarios"]
    servers = data["servers"]
    lines = ["# tickerfeed benchmark results", ""]
    lines += [
        f"Produced by `{meta['command']}` on {meta['date']} (wall time {meta['wall_minutes']:.1f} min); "
        f"git commit `{meta['commit']}`{' (with uncommitted changes)' if meta['dirty'] else ''}.",
        "",
        f"Machine: {meta['cpu_model']}, {meta['cores']} cores, Linux {meta['kernel']}; {meta['rustc']}; "
        f"Node {meta['node']}. {meta['pinning']}",
        "",
        f"Every figure is the median of {data['runs']} run(s); servers alternate within each round, and "
        "each run starts a fresh server process with its feed paused, connects every client, then resumes "
        "the feed, warms up and measures. Raw reports: `results.json`. "
        "Socket.IO* speaks Engine.IO framing over WebSocket: a different transport, not directly comparable "
        "with the v1 servers. tickerfeed Socket.IO* is the same tickerfeed process and command line as "
        "tickerfeed, its clients on its /socket.io/ endpoint, the same wire as Socket.IO* (the Node peer "
        "speaks tickerfeed's mapping): those two compare with each other. "
        "tickerfeed SSE is the same tickerfeed process and command line as tickerfeed, its clients reading "
        "`GET /sse?symbols=…&throttle_ms=…` (Server-Sent Events) instead of /ws: the same scenarios, except "
        "that an event stream always starts with a snapshot (idle included) and a churn connection ends by "
        "closing its socket, there being no close handshake. "
        "⚠ = some clients failed to connect (see Run problems): that server carried a lighter load.",
        "",
    ]
    if data["smoke"]:
        lines += ["**Smoke run: tiny numbers, for checking the bench only, not a measurement.**", ""]
    # Targets
    lines += ["## Targets (issue 5 §3), tickerfeed", "", "| target | measured | verdict | by |",
              "|---|---|---|---|"]
    for t in data["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {t['verdict']} | {t['by']} |")
    lines.append("")
    # Feed only
    lines += ["## Feed alone (no client): server CPU, % of one core", "",
              "The same tick file replayed at each scenario's rate with no client connected: "
              "what each server spends on its feed. It is included in every server CPU figure below.",
              "", "| server | " + " | ".join(f"{float(r):,.0f} quotes/s" for r in data["feed_rates"]) + " |",
              "|---|" + "---|" * len(data["feed_rates"])]
    for s in dict.fromkeys(process_of(s) for s in servers):
        lines.append(f"| {SERVER_LABEL[s]} | " + " | ".join(
            fmt_pct((feed.get(s) or {}).get(f"{r:g}")) for r in data["feed_rates"]) + " |")
    lines.append("")
    bound = []
    for name in sc_list:
        sc = sc_list[name]
        lines += [f"## {sc['title']}", "", sc["description"], ""]
        table = SCENARIO_TABLES[name]
        if any(m.get("trades_per_server_cpu_s") for m in med.get(name, {}).values()):
            table = table[:2] + TRADES_COLUMNS + table[2:]
        lines.append("| server | " + " | ".join(h for h, _ in table) + " |")
        lines.append("|---|" + "---|" * len(table))
        for s in servers:
            m = med.get(name, {}).get(s)
            if not m:
                continue
            cells = [f(m, med, s) for _, f in table]
            lines.append(f"| {SERVER_LABEL[s]} | " + " | ".join(cells) + " |")
            if m.get("client_bound_runs"):
                bound.append(f"{name}/{s}: {m['client_bound_runs']} of {m['runs']}")
        lines.append("")
        if name == "firehose":
            tf = get(med, "firehose", "tickerfeed", "quotes_per_server_cpu_s")
            ratios = []
            for peer in ("ws", "uws", "socketio"):
                p = get(med, "firehose", peer, "quotes_per_server_cpu_s")
                if tf and p:
                    ratios.append(f"tickerfeed / {SERVER_LABEL[peer]} = **{tf / p:.2f}**")
            if ratios:
                lines += ["Delivered quotes per server CPU-second: " + "; ".join(ratios) + ".", ""]
            sse = get(med, "firehose", "tickerfeed-sse", "quotes_per_server_cpu_s")
            if tf and sse:
                verdict, by = verdict_at_least(sse / tf, SSE_VS_WS_TARGET)
                lines += [f"tickerfeed SSE / tickerfeed ws = **{sse / tf:.2f}** in delivered quotes per server "
                          f"CPU-second (issue 13: ≥ {SSE_VS_WS_TARGET:g}, {verdict}, {by}).", ""]
            trades = get(med, "firehose", "tickerfeed-trades", "trades_per_server_cpu_s")
            tq = get(med, "firehose", "tickerfeed-trades", "quotes_per_server_cpu_s")
            if trades and tq:
                alone = f", against {tf:,.0f} quotes with quotes alone ({tq / tf:.2f}×)" if tf else ""
                lost = get(med, "firehose", "tickerfeed-trades", "trades_lost_pct")
                lines += [f"{SERVER_LABEL['tickerfeed-trades']}: **{tq:,.0f}** quotes and **{trades:,.0f}** trades "
                          f"per server CPU-second{alone}; {fmt_num(lost, 1)}% of the trades published for the clients' "
                          "symbols were lost to them (declared in `gap` messages: a client further behind than the "
                          "server's ring of 1,024 trades per symbol).", ""]
            tf_sio = get(med, "firehose", "tickerfeed-socketio", "quotes_per_server_cpu_s")
            node_sio = get(med, "firehose", "socketio", "quotes_per_server_cpu_s")
            if tf_sio and node_sio:
                verdict, by = verdict_at_least(tf_sio / node_sio, SIO_VS_NODE_SIO_TARGET)
                lines += [f"tickerfeed Socket.IO / Node Socket.IO = **{tf_sio / node_sio:.2f}** in delivered quotes "
                          f"per server CPU-second, the same wire (target: ≥ {SIO_VS_NODE_SIO_TARGET:g}×, {verdict}, "
                          f"{by}).", ""]
    lines += redis_section(data)
    lines += ["## Client-bound runs", ""]
    lines += [("Runs where the load generator used ≥ 80% of its core (its figures may describe the "
               "client, not the server; quotes per server CPU-second stays valid): "
               + ", ".join(bound) + ". Where most of a server's runs were, its latencies are in "
               "parentheses marked *client-bound*: mostly the load generator's own receive queue, "
               "not the server's latency.") if bound else
              "None: in every run the load generator stayed below 80% of its core.", ""]
    problems = [p for p in data["problems"]]
    lines += ["## Run problems", ""]
    if problems:
        lines += [f"- {p}" for p in problems]
    else:
        lines.append("None: every run connected every client, and no ordering error was seen.")
    lines.append("")
    return "\n".join(lines)


def redis_capacity(c0: float | None, c1: float | None, rate: float, shards: int) -> tuple[float, float | None] | None:
    """Gateways one Redis (or `shards` shards, the symbols spread evenly) carries at `rate`
    quotes/s before a shard's core is full, from Redis's CPU per quote with no gateway
    listening (c0 µs: PUBLISH and SET) and with one (c1). Two bounds: each gateway costing all
    of c1 (as if nothing were shared), and each adding c1 - c0 (None when that difference is
    within a tenth of c1: the measurement cannot tell it from noise)."""
    if c0 is None or c1 is None or rate <= 0 or c1 <= 0:
        return None
    budget = shards * 1e6 / rate
    low = budget / c1
    high = max(budget - c0, 0.0) / (c1 - c0) if c1 - c0 > 0.1 * c1 else None
    return low, high


def redis_section(data: dict) -> list[str]:
    """The Redis bus against the in-process bus (issue 15), when tickerfeed-redis ran."""
    med = data["medians"]
    rows = [name for name in data["scenarios"] if get(med, name, "tickerfeed-redis", "quotes_per_s") is not None]
    if not rows:
        return []
    feed_runs = [f for f in data["feed_only_runs"] if f["server"] == "tickerfeed-redis"]
    lines = ["## The Redis bus (issue 15)", "",
             "tickerfeed via Redis is three processes on the server core: a redis-server (no persistence), "
             "a feed node replaying the file and publishing to Redis, and the gateway the clients connect to; "
             "server CPU is the gateway's. The latencies run from the feed node's publish to the client, "
             "across Redis. Quotes per gateway CPU-second against the in-process bus must stay within "
             f"{100 * (1 - REDIS_VS_MEMORY_TARGET):.0f}%.", "",
             "| scenario | in-process q/CPU-s | via Redis q/gateway CPU-s | ratio | p99 latency in-process → via Redis "
             "| p99 throttled | feed node CPU | merged before Redis | Redis CPU | Redis µs per write (1 gateway / none) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    capacity = []
    for name in rows:
        m = med[name]["tickerfeed-redis"]
        tf = med.get(name, {}).get("tickerfeed") or {}
        ratio = "—"
        if tf.get("quotes_per_server_cpu_s") and m.get("quotes_per_server_cpu_s"):
            r = m["quotes_per_server_cpu_s"] / tf["quotes_per_server_cpu_s"]
            verdict, _ = verdict_at_least(r, REDIS_VS_MEMORY_TARGET)
            ratio = f"**{r:.2f}** ({verdict})"
        rate = data["scenarios"][name]["feed_rate"]
        c0 = median([f.get("redis_us_per_write") for f in feed_runs if f["rate"] == rate])
        c1 = m.get("redis_us_per_write")
        lines.append(
            f"| {name} | {fmt_num(tf.get('quotes_per_server_cpu_s'))} | {fmt_num(m.get('quotes_per_server_cpu_s'))} | {ratio} "
            f"| {fmt_ms(tf.get('latency_p99_ms'))} → {fmt_ms(m.get('latency_p99_ms'))} "
            f"| {fmt_ms(tf.get('throttled_p99_ms'))} → {fmt_ms(m.get('throttled_p99_ms'))} "
            f"| {fmt_pct(m.get('feed_node_cpu_pct'))} | {fmt_pct(m.get('feed_merged_pct'))} | {fmt_pct(m.get('redis_cpu_pct'))} "
            f"| {fmt_num(c1, 2)} / {fmt_num(c0, 2)} |")
        bounds = [redis_capacity(c0, c1, rate, shards) for shards in (1, 3)]
        if bounds[0] is not None:
            said = [f"{low:,.0f}" + (f"–{high:,.0f}" if high is not None else "") for low, high in bounds]
            capacity.append(f"{name} ({rate:,.0f} quotes/s): {said[0]} gateways on one Redis, {said[1]} on a "
                            "3-shard cluster")
    lines.append("")
    if capacity:
        lines += ["On paper, from Redis's measured CPU per write (a PUBLISH and a SET), with every quote the feed "
                  "publishes written (none merged) until a shard's core is full (a cluster spreads the symbols "
                  "evenly over its shards); the low figure has each gateway cost all of a write's CPU with one "
                  "gateway, the high one only what one gateway added over none (given when that difference is "
                  "above the noise): " + "; ".join(capacity) + ".", ""]
    return lines


def _moved(m, base, key):
    """How far `key` moved from `base` (another scenario's median), signed %."""
    value = m.get(key)
    return fmt_signed_pct(100 * (value / base - 1)) if value is not None and base else "—"


def _k(key, digits=0, suffix=""):
    return lambda m, med, s: (fmt_num(m.get(key), digits) + suffix) if m.get(key) is not None else "—"


def client_bound(m) -> bool:
    """Whether most of the runs behind median `m` had the load generator at its core's limit."""
    return bool(m.get("runs")) and 2 * (m.get("client_bound_runs") or 0) > m["runs"]


def _latency(m, text: str) -> str:
    """A latency cell: when the load generator was the limit, the figure is mostly its own
    receive queue, so it is shown as the client's, not as the server's."""
    return f"({text}, client-bound)" if client_bound(m) and text != "—" else text


def _ms(key):
    return lambda m, med, s: _latency(m, fmt_ms(m.get(key)))


def _pct(key):
    return lambda m, med, s: fmt_pct(m.get(key))


def _connected(m, med, s):
    """Connected clients; flagged when some failed, since the other figures then describe a
    lighter load than the scenario's."""
    text = fmt_num(m.get("connected"))
    return text + " ⚠" if m.get("failed") else text


def _bound(m, med, s):
    return f"{m['client_bound_runs']}/{m['runs']}" if m.get("client_bound_runs") else "no"


def _vs_ticker(m, med, s):
    base = get(med, "ticker", s, "throttled_p99_ms")
    v = m.get("throttled_p99_ms")
    if base and v is not None:
        return f"{100 * (v / base - 1):+.0f}%"
    return "—"


def _sendq(m, med, s):
    if m.get("sendq_max_kib") is None:
        return "—"
    return f"{m['sendq_max_kib']:.0f} / {m['sendq_mean_kib']:.0f} KiB"


def _probes(m, med, s):
    marks = [f"{p['clients']:,}: {fmt_ms(p['throttled_p99_ms'])}{' (client-bound)' if p['client_bound'] else ''} "
             f"{'✓' if p['passed'] else '✗'}" for p in sorted(m["probes"], key=lambda p: p["clients"])]
    return "; ".join(marks)


# Shown after the firehose's "quotes per server CPU-s" when some server delivered trades.
TRADES_COLUMNS = [("trades per server CPU-s", _k("trades_per_server_cpu_s")),
                  ("trades/s", lambda m, med, s: _k("trades_per_s")(m, med, s) if m.get("trades_per_server_cpu_s") else "—"),
                  ("trades lost", lambda m, med, s: (fmt_num(m.get("trades_lost_pct"), 1) + "%")
                   if m.get("trades_per_server_cpu_s") else "—")]

SCENARIO_TABLES = {
    "idle": [("connected", _k("connected")), ("RSS before (MiB)", _k("rss_before_mib", 1)),
             ("RSS connected (MiB)", _k("rss_end_mib", 1)),
             ("RSS per connection", _k("rss_per_conn_kib", 1, " KiB"))],
    "firehose": [("connected", _connected), ("quotes per server CPU-s", _k("quotes_per_server_cpu_s")),
                 ("quotes/s", _k("quotes_per_s")), ("frames/s", _k("frames_per_s")),
                 ("quotes/frame", _k("quotes_per_frame", 1)),
                 ("latency p50 / p99 / p99.9", lambda m, med, s: _latency(m, " / ".join(
                     fmt_ms(m.get(k)) for k in ("latency_p50_ms", "latency_p99_ms", "latency_p999_ms")))),
                 ("server CPU", _pct("server_cpu_pct")), ("loadgen CPU", _pct("loadgen_cpu_pct")),
                 ("client-bound", _bound)],
    "ticker": [("connected", _connected), ("p99 throttled latency", _ms("throttled_p99_ms")),
               ("p99 staleness", _ms("staleness_p99_ms")),
               ("server CPU", _pct("server_cpu_pct")), ("quotes/s", _k("quotes_per_s")),
               ("quotes per server CPU-s", _k("quotes_per_server_cpu_s")),
               ("RSS (MiB)", _k("rss_end_mib", 1)), ("RSS per connection", _k("rss_per_conn_kib", 1, " KiB")),
               ("loadgen CPU", _pct("loadgen_cpu_pct")),
               ("client-bound", _bound)],
    "aligned": [("connected", _connected), ("p99 latency from the tick", _ms("throttled_p99_ms")),
                ("p99 staleness", _ms("staleness_p99_ms")), ("server CPU", _pct("server_cpu_pct")),
                ("quotes/s", _k("quotes_per_s")), ("frames/s", _k("frames_per_s")),
                ("quotes per server CPU-s", _k("quotes_per_server_cpu_s")), ("loadgen CPU", _pct("loadgen_cpu_pct")),
                ("client-bound", _bound)],
    "knee": [("knee (clients)", lambda m, med, s: f"{fmt_num(m['knee_clients'])}{' (the search cap)' if m['capped'] else ''}"),
             ("per round", lambda m, med, s: ", ".join(f"{k:,}" for k in m["knees"])),
             ("last round's probes (clients: p99 throttled)", _probes)],
    "aligned-slow": [("connected (+ stalled)", lambda m, med, s: f"{_connected(m, med, s)} (+{fmt_num(m.get('stall_connected'))})"),
                     ("others' p99 staleness", _ms("staleness_p99_ms")),
                     ("vs aligned", lambda m, med, s: _moved(m, get(med, "aligned", s, "staleness_p99_ms"), "staleness_p99_ms")),
                     ("p99 latency from the tick", _ms("throttled_p99_ms")), ("server CPU", _pct("server_cpu_pct")),
                     ("RSS growth", lambda m, med, s: fmt_signed_pct(m.get("rss_growth_pct"))),
                     ("kernel send queue, stalled sockets max / mean", _sendq)],
    "light": [("connected", _connected), ("p50 latency", _ms("latency_p50_ms")), ("p99 latency", _ms("latency_p99_ms")),
              ("p99 throttled latency", _ms("throttled_p99_ms")), ("p99 staleness", _ms("staleness_p99_ms")),
              ("server CPU", _pct("server_cpu_pct")), ("quotes/s", _k("quotes_per_s")),
              ("loadgen CPU", _pct("loadgen_cpu_pct"))],
    "slow": [("connected (+ stalled)", lambda m, med, s: f"{_connected(m, med, s)} (+{fmt_num(m.get('stall_connected'))})"),
             ("others' p99 throttled", _ms("throttled_p99_ms")), ("vs ticker", _vs_ticker),
             ("p99 staleness", _ms("staleness_p99_ms")), ("server CPU", _pct("server_cpu_pct")),
             ("RSS start → max (MiB)", lambda m, med, s: f"{fmt_num(m.get('rss_start_mib'), 1)} → "
              f"{fmt_num(m.get('rss_measured_max_mib'), 1)}"),
             ("RSS growth", lambda m, med, s: fmt_signed_pct(m.get("rss_growth_pct"))),
             ("kernel send queue, stalled sockets max / mean", _sendq),
             ("client-bound", _bound)],
    "churn": [("connected", _connected), ("churn connects/s", _k("churn_per_s")), ("attempted", _k("churn_attempted")),
              ("failed", _k("churn_failed")),
              ("failures by kind, all runs", lambda m, med, s: ", ".join(
                  f"{k} {n:,}" for k, n in sorted((m.get("churn_failure_kinds_all_runs") or {}).items()))
               or "—"),
              ("RSS start → after settle (MiB)", lambda m, med, s:
               f"{fmt_num(m.get('rss_start_mib'), 1)} → {fmt_num(m.get('rss_after_settle_mib'), 1)}"),
              ("RSS drift", lambda m, med, s: fmt_signed_pct(m.get("rss_drift_pct"))),
              ("others' p99 throttled", _ms("throttled_p99_ms")),
              ("server CPU", _pct("server_cpu_pct")), ("client-bound", _bound)],
    "maxconn": [("connected", _k("connected")), ("failed", _k("failed")),
                ("delivering", _k("delivering")), ("quotes/s", _k("quotes_per_s")),
                ("p99 throttled", _ms("throttled_p99_ms")), ("server CPU", _pct("server_cpu_pct")),
                ("RSS (MiB)", _k("rss_end_mib", 1)), ("RSS per connection", _k("rss_per_conn_kib", 1, " KiB")),
               ("loadgen CPU", _pct("loadgen_cpu_pct")),
                ("client-bound", _bound)],
}


def describe(sc: Scenario) -> str:
    n = sc.clients - sc.stall
    feed = "feed paused" if sc.feed_rate <= 0 else f"feed at {sc.feed_rate:,.0f} quotes/s"
    what = {
        "idle": f"{n:,} connections × 10 symbols, {feed}. RSS per connection = (RSS with every client "
                "connected and subscribed, at the end of the window − RSS before the first connection, "
                f"after the server's warm-up) / connections.",
        "firehose": f"{n:,} clients × 50 of 500 symbols, throttle 0, {feed} (more than any server fans out). "
                    "Headline: delivered quotes per server CPU-second over exactly the measured window.",
        "ticker": f"500 symbols, {feed}; {n:,} clients × 10 symbols with Zipf popularity (exponent 1), "
                  "throttle 200 ms; staleness against an unthrottled observer connection.",
        "slow": f"The ticker plus {sc.stall:,} clients that subscribe and never read (SO_RCVBUF 4 KiB). "
                f"Judged over {sc.duration:g} s after a {sc.warmup:g} s warm-up in which the stalled "
                "sockets back up. Kernel send queue: `ss` on the server's sockets, the fullest "
                f"{sc.stall:,}.",
        "churn": f"The ticker plus {sc.churn:g} connections per second that connect, subscribe, wait for "
                 f"their snapshot and close, for {sc.duration:g} s; RSS drift = RSS {sc.settle:g} s after the "
                 "churn stopped vs at the start of the window.",
        "maxconn": f"{n:,} clients × 10 symbols, throttle 200 ms, {feed}, from {sc.processes} load-generator "
                   "processes; delivering = clients that received at least one live quote in the window.",
        "aligned": f"The ticker ({n:,} clients × 10 of 500 symbols, Zipf, throttle 200 ms, {feed}) with aligned "
                   "delivery: each client's symbols go out together on a 200 ms grid from its subscribe. "
                   "Throttled latency is measured from the grid tick each quote was due at (the client's "
                   "grid, anchored when it sent its subscribe).",
        "aligned-slow": f"The aligned ticker plus {sc.stall:,} clients that subscribe (aligned) and never read "
                        f"(SO_RCVBUF 4 KiB), judged over {sc.duration:g} s after a {sc.warmup:g} s warm-up; "
                        "compared with the aligned ticker without them.",
        "knee": f"The immediate ticker (500 symbols, {feed}, 10 symbols each with Zipf popularity, "
                f"throttle 200 ms) at growing client counts: from {KNEE_SEARCH['start']:,}, doubling until p99 "
                f"throttled latency exceeds {KNEE_P99_MS:g} ms (or a client fails to connect, or the load "
                f"generator reaches its core's limit), then bisecting to {KNEE_SEARCH['step']:,} clients or a tenth "
                f"of the knee. The knee is the most clients that passed; its median over the rounds.",
        "light": f"The ticker's load for {n:,} clients (500 symbols, {feed}, 10 symbols each with Zipf "
                 "popularity, throttle 200 ms): no server saturates its core, so the latencies are the "
                 "path's rather than a queue's.",
    }[sc.name]
    return what + f" Window: {sc.duration:g} s."


def svg_chart(med: dict, servers: list[str], smoke: bool) -> str:
    """Three bar panels (hand-written SVG): firehose quotes per server CPU-second (higher is
    better), RSS per idle connection and ticker p99 throttled latency (lower is better)."""
    def of(scenario: str, key: str):
        return [(s, get(med, scenario, s, key)) for s in servers if runs_in(s, scenario)]

    panels = [
        ("Firehose: delivered quotes per server CPU-second", "higher is better",
         of("firehose", "quotes_per_server_cpu_s"), "{:,.0f}"),
        ("Idle: server RSS per subscribed connection (KiB)", "lower is better",
         of("idle", "rss_per_conn_kib"), "{:.1f}"),
        ("Ticker: p99 throttled latency (ms)", "lower is better",
         of("ticker", "throttled_p99_ms"), "{:.2f}"),
    ]
    colours = {"tickerfeed-redis": "#5c940d", "tickerfeed-trades": "#e8590c", "tickerfeed": "#d9480f", "tickerfeed-sse": "#f59f00", "tickerfeed-socketio": "#c2255c",
               "ws": "#1c7ed6", "uws": "#2f9e44", "socketio": "#868e96"}
    rows = max(len(v) for _, _, v, _ in panels)
    # Room for the longest label ("tickerfeed, quotes + trades").
    left = 170 if all(len(SERVER_LABEL[s]) <= 22 for s in servers) else 200
    width, panel_h, bar_h, gap, right = 760, 40 + 34 * rows + 20, 24, 10, 120
    height = 60 + panel_h * len(panels) + 44
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{width / 2}" y="28" text-anchor="middle" font-size="17" font-weight="bold">'
           f'tickerfeed vs Node ws, uWebSockets.js, Socket.IO{" (smoke run: not a measurement)" if smoke else ""}</text>']
    y = 50
    for title, note, values, fmt in panels:
        out.append(f'<text x="{left}" y="{y + 18}" font-size="14" font-weight="bold">{esc(title)}</text>')
        out.append(f'<text x="{width - 10}" y="{y + 18}" text-anchor="end" fill="#555">{esc(note)}</text>')
        top = max([v for _, v in values if v is not None] or [1.0]) or 1.0
        by = y + 32
        for server, v in values:
            label = SERVER_LABEL[server]
            out.append(f'<text x="{left - 8}" y="{by + bar_h * 0.7:.0f}" text-anchor="end">{esc(label)}</text>')
            if v is None:
                out.append(f'<text x="{left + 4}" y="{by + bar_h * 0.7:.0f}" fill="#888">not measured</text>')
            else:
                w = max(1.0, (width - left - right) * v / top)
                out.append(f'<rect x="{left}" y="{by}" width="{w:.1f}" height="{bar_h}" '
                           f'fill="{colours.get(server, "#495057")}"/>')
                out.append(f'<text x="{left + w + 6:.1f}" y="{by + bar_h * 0.7:.0f}">{esc(fmt.format(v))}</text>')
            by += bar_h + gap
        y += panel_h
    out.append(f'<text x="10" y="{height - 24}" fill="#555" font-size="11">* Socket.IO: Engine.IO framing '
               'over WebSocket, a different transport (compare the two Socket.IO* bars with each other). '
               'Medians; details in results.md.</text>')
    out.append(f'<text x="10" y="{height - 10}" fill="#555" font-size="11">tickerfeed SSE, tickerfeed '
               'Socket.IO*: the same tickerfeed server, its clients on /sse and /socket.io/.</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ----------------------------------------------------------------------------------------------
# Machine and input


def machine(settings: Settings) -> dict:
    def cmd(*c) -> str:
        try:
            return subprocess.run(c, capture_output=True, text=True, cwd=ROOT, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 1
    return {
        "cpu_model": model,
        "cores": cores,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": cmd("git", "rev-parse", "--short=12", "HEAD"),
        "dirty": bool(cmd("git", "status", "--porcelain", "--untracked-files=no")),
        "rustc": cmd("rustc", "-V"),
        "node": cmd("node", "--version"),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "pinning": ("Server pinned to core 0, load generator to core 1 (`taskset`)." if settings.pin else
                    f"**Only {cores} core(s): no pinning; server and load generator share the CPU, "
                    "so every figure is pessimistic.**"),
        "command": settings.command,
    }


def symbols_of(ticks: Path) -> list[str]:
    """The file's symbols in order of first appearance: one list for every server, so the
    Zipf ranks (position in the list) are the same everywhere."""
    seen: dict[str, None] = {}
    with open(ticks) as f:
        header = [h.strip().lower() for h in f.readline().split(",")]
        col = header.index("symbol")
        for line in f:
            parts = line.split(",")
            if len(parts) > col:
                seen.setdefault(parts[col].strip().upper(), None)
    return list(seen)


def generate_ticks(settings: Settings) -> Path:
    ticks = settings.work / f"ticks-seed42-{settings.tick_quotes}.csv"
    if not ticks.exists():
        tmp = ticks.with_suffix(".tmp")
        subprocess.run([str(TICKERFEED), "gen", "--seed", "42", "--symbols", "500", "--quotes",
                        str(settings.tick_quotes), "--out", str(tmp)], check=True, cwd=ROOT)
        tmp.rename(ticks)
    return ticks


# ----------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(prog="tests/bench/run.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny numbers, a few seconds per run, results in a temporary directory")
    p.add_argument("--only", default=",".join(DEFAULT_SCENARIOS),
                   help=f"scenarios, comma-separated (default: {','.join(DEFAULT_SCENARIOS)}; also: light, aligned)")
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                   help=f"servers, comma-separated (default: {','.join(DEFAULT_SERVERS)}; also: tickerfeed-auth, "
                        "tickerfeed-redis, tickerfeed-trades (the firehose only))")
    p.add_argument("--runs", type=int, default=None, help="rounds; medians over them (default 3, smoke 1)")
    p.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                   help="measure nothing: recompute the figures of an earlier run's results.json with "
                        "this driver and rewrite results.md/.json/.svg (next to it, or in --out)")
    p.add_argument("--out", type=Path, default=None,
                   help="where results.md/.json/.svg go (default tests/bench/results; smoke: a temp dir)")
    a = p.parse_args(argv)
    if a.render is not None:
        return Settings(smoke=False, runs=0, servers=[], only=[], work=Path("."),
                        out=a.out or a.render.parent, pin=False, server_warmup=0, feed_only_s=0,
                        tick_quotes=0, command="", render=a.render)
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    servers = [x.strip() for x in a.servers.split(",") if x.strip()]
    for x in only:
        if x not in ALL_SCENARIOS:
            p.error(f"--only: unknown scenario {x!r} (known: {', '.join(ALL_SCENARIOS)})")
    for x in servers:
        if x not in ALL_SERVERS:
            p.error(f"--servers: unknown server {x!r} (known: {', '.join(ALL_SERVERS)})")
    runs = a.runs if a.runs is not None else (1 if a.smoke else 3)
    if runs < 1:
        p.error("--runs must be >= 1")
    if a.smoke:
        out = a.out or Path(tempfile.mkdtemp(prefix="tickerfeed-bench-smoke-"))
        if out.resolve() == COMMITTED_RESULTS.resolve():
            p.error("--smoke never writes to tests/bench/results (the committed full-run results)")
        work = out / "work"
    else:
        out = a.out or COMMITTED_RESULTS
        work = ROOT / "target" / "bench"
    cores = os.cpu_count() or 1
    return Settings(
        smoke=a.smoke, runs=runs, servers=servers, only=only, out=out, work=work,
        pin=cores >= 2 and shutil.which("taskset") is not None,
        server_warmup=0.2 if a.smoke else 2.0,
        feed_only_s=0.5 if a.smoke else 10.0,
        tick_quotes=20_000 if a.smoke else 1_000_000,
        command="tests/bench/run.sh " + " ".join(argv) if argv else "tests/bench/run.sh",
    )


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    if settings.render is not None:
        try:
            data = json.loads(settings.render.read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"--render: cannot read {settings.render}: {e}")
        return write_outputs(derive(data), settings.out)
    started = time.monotonic()
    settings.out.mkdir(parents=True, exist_ok=True)
    settings.work.mkdir(parents=True, exist_ok=True)
    # Servers and load generators need ~20,000 descriptors each; run.sh raised the soft limit,
    # this covers a direct call.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    all_sc = scenarios(settings.smoke)
    chosen = {k: all_sc[k] for k in ALL_SCENARIOS if k in settings.only}
    ticks = generate_ticks(settings)
    symbols = symbols_of(ticks)
    meta = machine(settings)
    if not settings.pin:
        print(f"WARNING: {meta['cores']} core(s) (or no taskset): running unpinned; results "
              "will say so", flush=True)
    print(f"bench: {len(chosen)} scenario(s) × {len(settings.servers)} server(s) × {settings.runs} "
          f"round(s); {len(symbols)} symbols; results to {settings.out}", flush=True)
    feed_rates = sorted({sc.feed_rate for sc in chosen.values() if sc.feed_rate > 0})
    runs: list[dict] = []
    feed_runs: list[dict] = []
    knee_runs: list[dict] = []

    def collected() -> dict:
        return {
            "smoke": settings.smoke,
            "runs": settings.runs,
            "servers": settings.servers,
            "machine": {**meta, "wall_minutes": (time.monotonic() - started) / 60},
            "feed_rates": feed_rates,
            "scenarios": {k: {"title": sc.title, "description": describe(sc),
                              "feed_rate": sc.feed_rate, "loadgen_args": sc.loadgen}
                          for k, sc in chosen.items()},
            "feed_only_runs": feed_runs,
            "raw_runs": runs,
            "knee_runs": knee_runs,
        }

    try:
        for rnd in range(1, settings.runs + 1):
            # Rotate the order each round so no server always runs first (or last).
            k = (rnd - 1) % len(settings.servers)
            order = settings.servers[k:] + settings.servers[:k]
            # The feed alone costs a variant what it costs its server: measured once per process.
            for rate in feed_rates:
                for kind in dict.fromkeys(process_of(k) for k in order):
                    f = feed_only_run(kind, rate, ticks, settings, rnd)
                    feed_runs.append(f)
                    print(f"[round {rnd}] feed only {rate:>7g}/s  {kind:<19} CPU "
                          f"{f['cpu_pct']:5.1f}%", flush=True)
            for sc in chosen.values():
                for kind in order:
                    if not runs_in(kind, sc.name):
                        continue
                    if sc.name == "knee":
                        k = knee_run(sc, kind, ticks, symbols, settings, rnd)
                        knee_runs.append(k)
                        print(f"[round {rnd}] knee      {kind:<19} {k['knee_clients']:,} clients "
                              f"({len(k['probes'])} probes)", flush=True)
                        continue
                    run = scenario_run(sc, kind, ticks, symbols, settings, rnd)
                    runs.append(run)
                    for p in sanity_problems(sc, run):
                        print(f"  problem: {p}", flush=True)
                    print(f"[round {rnd}] {sc.name:<9} {kind:<19} "
                          f"{summary_line(sc, run['metrics'])} ({run['wall_s']:.0f} s)", flush=True)
    except BaseException:
        # An hour of measurements is worth keeping: the runs so far go to the work directory
        # (never over the committed results), ready for `--render`.
        if runs or feed_runs or knee_runs:
            partial = settings.work / "partial-results.json"
            partial.write_text(json.dumps(collected(), indent=1) + "\n")
            print(f"\nthe {len(runs)} finished run(s) are in {partial} "
                  f"(tests/bench/run.sh --render {partial} --out DIR)", file=sys.stderr)
        raise
    data = collected()
    derive(data)
    return write_outputs(data, settings.out)


def derive(data: dict) -> dict:
    """The figures computed from the raw runs (metrics, medians, targets, problems), so that
    `--render` can redo them with a newer driver without measuring again."""
    all_sc = scenarios(data["smoke"])
    for run in data["raw_runs"]:
        sendq = run["metrics"].get("sendq")
        run["metrics"] = metrics_of(all_sc[run["scenario"]], run["report"])
        if sendq is not None:
            run["metrics"]["sendq"] = sendq
        run["metrics"].update(run.get("companions") or {})
    med = medians(data["raw_runs"])
    if data.get("knee_runs"):
        med["knee"] = knee_medians(data["knee_runs"])
    data["feed_only_cpu_pct"] = feed_medians(data["feed_only_runs"])
    data["medians"] = med
    data["targets"] = targets(med, all_sc)
    data["problems"] = [f"{r['scenario']} / {r['server']} / round {r['round']}: {p}"
                        for r in data["raw_runs"] for p in sanity_problems(all_sc[r["scenario"]], r)]
    return data


def write_outputs(data: dict, out: Path) -> int:
    """Writes results.json, results.md and results.svg; prints the targets. Returns the exit
    status: 1 for a smoke run whose runs are not usable measurements."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "results.md").write_text(markdown(data))
    (out / "results.svg").write_text(svg_chart(data["medians"], data["servers"], data["smoke"]))
    print(f"\nwrote {out}/results.md, results.json, results.svg "
          f"({data['machine']['wall_minutes']:.1f} min)")
    for t in data["targets"]:
        print(f"  {t['verdict']:<13} {t['target']}: {t['measured']} {t['by']}")
    if data["problems"]:
        print("\nrun problems:\n  " + "\n  ".join(data["problems"]))
        if data["smoke"]:
            print("smoke run FAILED: the runs above are not usable measurements", file=sys.stderr)
            return 1
    return 0


def summary_line(sc: Scenario, m: dict) -> str:
    if sc.name == "idle":
        return f"connected {m['connected']}, RSS/conn {fmt_num(m.get('rss_per_conn_kib'), 1)} KiB"
    base = (f"{fmt_num(m['quotes_per_s'])} q/s, {fmt_num(m['quotes_per_server_cpu_s'])} q/CPU-s, "
            f"CPU {fmt_pct(m['server_cpu_pct'])}, p99thr {fmt_ms(m['throttled_p99_ms'])}")
    if sc.name == "churn":
        base += f", churn {m.get('churn_ok')}/{m.get('churn_attempted')} ok, drift {fmt_signed_pct(m.get('rss_drift_pct'))}"
    if sc.name == "slow":
        q = m.get("sendq") or {}
        base += (f", RSS growth {fmt_signed_pct(m.get('rss_growth_pct'))}, "
                 f"send queue max {fmt_num(q.get('max_kib'), 1)} KiB")
    if sc.name == "maxconn":
        base += f", connected {m['connected']}, delivering {m['delivering']}"
    if m.get("trades_per_server_cpu_s"):
        base += (f", {fmt_num(m['trades_per_s'])} trades/s, {fmt_num(m['trades_per_server_cpu_s'])} trades/CPU-s, "
                 f"{fmt_num(m.get('trades_lost_pct'), 1)}% lost")
    return base


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        code = main(sys.argv[1:])
    except BenchError as e:
        print(f"\nbench FAILED: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as e:
        print(f"\nbench interrupted ({e or 'SIGINT'})", file=sys.stderr)
        code = 130
    except Exception:  # a bug of the bench itself: say where, and still clean up
        import traceback
        traceback.print_exc()
        print("\nbench FAILED: internal error (above)", file=sys.stderr)
        code = 1
    finally:
        PROCS.stop_all()
    sys.exit(code)
