"""Socket.IO at /socket.io/ with python-socketio (the versions pinned in requirements.txt).

The sync socketio.Client over polling only, WebSocket only and the default (polling upgraded to
WebSocket), then the asyncio socketio.AsyncClient over polling and WebSocket: each connects,
gets the welcome, subscribes with call() (the ack: the whole set, an unknown symbol rejected),
receives the snapshot then live quotes (seq rising per symbol), lists, pings, gets an error ack
for a bad argument and an error event for an unknown event, gets events for requests sent
without an ack, and disconnects cleanly (the server counts a client close, no protocol error,
and the open-connections gauge of its transport goes back down). Then the channels, over WebSocket
and polling: an unknown channel is named in an error ack; a trades-only subscription's ack
names its channels, and its trades arrive with every seq in order (a `gap` accounting for any
lost), with no quotes.

    python socketio_client.py http://127.0.0.1:PORT

Exits non-zero with a message naming the check on any failure; every wait is bounded.
"""

import asyncio
import queue
import sys
import time
from importlib.metadata import version

import requests
import socketio

WAIT = 10.0
WELCOME_FIELDS = ["protocol", "server", "instance", "session", "throttle_ms", "min_throttle_ms", "max_symbols", "max_frame_bytes"]
EXPECTED_EVENTS = {"welcome", "quotes", "error", "subscribed", "unsubscribed", "subscriptions", "pong"}


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


def metrics(url):
    """The Socket.IO connection gauges and the disconnect reasons of /metrics."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        for name in ("tickerfeed_connections{", "tickerfeed_disconnects_total{"):
            if line.startswith(name):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
    return values


def gauge(transport):
    return f'tickerfeed_connections{{transport="socketio_{transport}"}}'


def wait_metric(url, key, expected, what):
    # A polling client's close reaches the server with its last POST: allow for a busy machine.
    deadline = time.monotonic() + 15
    while True:
        seen = metrics(url).get(key)
        if seen == expected:
            return
        if time.monotonic() > deadline:
            raise Failure(f"{what}: {key} is {seen}, expected {expected}")
        time.sleep(0.05)


class Events:
    """Every event the server sent, in order, from the client's catch-all handler."""

    def __init__(self):
        self.seen = []
        self.pending = queue.Queue()

    def put(self, name, data):
        self.pending.put((name, data, time.monotonic()))

    def next(self, name, match=lambda data: True, wait=WAIT):
        """The next event named `name` (matching); the ones before it are kept in `seen`."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.pending.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise Failure(f"no '{name}' event within {wait} s; received {[e[0] for e in self.seen[-20:]]}") from None
            self.seen.append(event)
            if event[0] == name and match(event[1]):
                return event[1]


def check_welcome(welcome):
    check(list(welcome) == WELCOME_FIELDS, f"welcome fields {list(welcome)}")
    check(welcome["protocol"] == 1 and welcome["server"].startswith("tickerfeed "), f"welcome {welcome}")
    check(welcome["throttle_ms"] == 250 and welcome["max_symbols"] == 1000, f"welcome {welcome}")


def check_quotes(batches, symbols):
    """The first batch is the snapshot of `symbols`; the rest live; seq rises per symbol."""
    check(batches[0].get("snapshot") is True, f"the first quotes event is the snapshot: {str(batches[0])[:200]}")
    check(sorted(q["symbol"] for q in batches[0]["quotes"]) == sorted(symbols), f"snapshot symbols {[q['symbol'] for q in batches[0]['quotes']]}")
    last = {}
    for batch in batches:
        if batch is not batches[0]:
            check(list(batch) == ["quotes"], f"a live quotes event is {{quotes}}: {list(batch)}")
        for q in batch["quotes"]:
            check(q["symbol"] in symbols, f"quote for {q['symbol']}, not subscribed")
            check(all(f in q for f in ("seq", "ts", "pt", "last", "bid", "ask")), f"quote fields {list(q)}")
            check(q["bid"] < q["ask"], f"bid < ask: {q}")
            check(q["seq"] > last.get(q["symbol"], 0), f"{q['symbol']}: seq {q['seq']} after {last.get(q['symbol'])}")
            last[q["symbol"]] = q["seq"]


def check_error_ack(ack, code, says):
    check(isinstance(ack, dict) and list(ack) == ["error"], f"an error ack is {{error:…}}: {ack}")
    check(ack["error"]["code"] == code and says in ack["error"]["message"], f"error ack {ack}")


def run_sync(url, name, transports, expect):
    before = metrics(url)
    events = Events()
    reasons = []
    sio = socketio.Client(reconnection=False, request_timeout=5)
    sio.on("*", lambda event, *args: events.put(event, args[0] if args else None))
    sio.on("disconnect", lambda *args: reasons.append(args))
    kwargs = {"transports": transports} if transports else {}
    sio.connect(url, wait_timeout=5, **kwargs)
    try:
        check_welcome(events.next("welcome"))
        check([e[0] for e in events.seen] == ["welcome"], "welcome comes first")
        check(sio.transport() == expect, f"transport {sio.transport()}, expected {expect}")
        wait_metric(url, gauge(expect), before.get(gauge(expect), 0) + 1, f"{name}: counted open under socketio_{expect}")

        ack = sio.call("subscribe", {"symbols": ["AAPL", "msft", "NOPE"], "throttle_ms": 100}, timeout=5)
        check(ack == {"throttle_ms": 100, "align": False, "symbols": ["AAPL", "MSFT"], "rejected": [{"symbol": "NOPE", "code": "unknown_symbol"}], "channels": {"quotes": ["AAPL", "MSFT"]}}, f"subscribe ack {ack}")
        batches = [events.next("quotes") for _ in range(6)]
        check_quotes(batches, ["AAPL", "MSFT"])

        check(sio.call("list", timeout=5) == {"symbols": ["AAPL", "MSFT"]}, "list ack")
        pong = sio.call("ping", timeout=5)
        check(isinstance(pong.get("ts"), int) and abs(pong["ts"] / 1000 - time.time()) < 5, f"ping ack {pong}")
        check_error_ack(sio.call("subscribe", 5, timeout=5), "bad_request", "not a number")
        check_error_ack(sio.call("unsubscribe", {"symbols": ["AAPL"], "throttle_ms": 5}, timeout=5), "bad_request", "unknown field 'throttle_ms'")
        check_error_ack(sio.call("dance", timeout=5), "unknown_op", "unknown event 'dance'")

        sio.emit("dance", {"steps": 3})
        error = events.next("error")
        check(error["code"] == "unknown_op" and "unknown event 'dance'" in error["message"], f"error event {error}")
        sio.emit("unsubscribe", "MSFT")
        check(events.next("unsubscribed") == {"symbols": ["AAPL"]}, "unsubscribed event")
        sio.emit("subscribe", ["MSFT"])
        subscribed = events.next("subscribed")
        check(subscribed == {"throttle_ms": 250, "align": False, "symbols": ["AAPL", "MSFT"], "rejected": [], "channels": {"quotes": ["AAPL", "MSFT"]}}, f"subscribed event {subscribed}")
        snapshot = events.next("quotes", lambda d: d.get("snapshot") is True)
        check([q["symbol"] for q in snapshot["quotes"]] == ["MSFT"], f"snapshot after re-subscribing: {snapshot}")
        check(sio.transport() == expect, f"still on {expect}")
        unexpected = {e[0] for e in events.seen} - EXPECTED_EVENTS
        check(not unexpected, f"unexpected events {unexpected}")
    finally:
        sio.disconnect()
    deadline = time.monotonic() + 5
    while not reasons and time.monotonic() < deadline:
        time.sleep(0.02)
    check(len(reasons) == 1, f"one disconnect: {reasons}")
    wait_metric(url, gauge(expect), before.get(gauge(expect), 0), f"{name}: the clean disconnect closed the session")
    after = metrics(url)
    client_close = 'tickerfeed_disconnects_total{reason="client_close"}'
    protocol_error = 'tickerfeed_disconnects_total{reason="protocol_error"}'
    check(after[client_close] == before[client_close] + 1, f"{name}: counted as a client close ({before[client_close]} → {after[client_close]})")
    check(after[protocol_error] == before[protocol_error], f"{name}: a protocol error was counted")
    print(f"python-socketio Client, {name}: welcome, acks, {len(batches)} quote batches, errors, events, clean disconnect on {expect}")


def run_query(url):
    """The URL query subscribes at connect (aligned): subscribed after welcome, then the snapshot."""
    events = Events()
    sio = socketio.Client(reconnection=False, request_timeout=5)
    sio.on("*", lambda event, *args: events.put(event, args[0] if args else None))
    sio.connect(f"{url}?symbols=AAPL,MSFT&throttle_ms=500&align=1", transports=["websocket"], wait_timeout=5)
    try:
        snapshot = events.next("quotes")
        check([e[0] for e in events.seen] == ["welcome", "subscribed", "quotes"], f"order {[e[0] for e in events.seen]}")
        check(events.seen[1][1] == {"throttle_ms": 500, "align": True, "symbols": ["AAPL", "MSFT"], "rejected": [], "channels": {"quotes": ["AAPL", "MSFT"]}}, f"subscribed {events.seen[1][1]}")
        check(snapshot.get("snapshot") is True, "snapshot")
    finally:
        sio.disconnect()
    print("python-socketio Client, URL query: welcome, subscribed, snapshot")


def run_channels(url, transports, expect):
    """Channels (docs/PROTOCOL.md): a trades-only subscription's ack names its channels; its
    trades come with every seq, one after the other (or told lost by a `gap`), and no quotes."""
    events = Events()
    sio = socketio.Client(reconnection=False, request_timeout=5)
    sio.on("*", lambda event, *args: events.put(event, args[0] if args else None))
    sio.connect(url, transports=transports, wait_timeout=5)
    try:
        check_welcome(events.next("welcome"))
        bad = sio.call("subscribe", {"symbols": ["AAPL"], "channels": ["quotes", "nope"]}, timeout=5)
        check_error_ack(bad, "bad_request", "'nope'")
        ack = sio.call("subscribe", {"symbols": ["AAPL"], "throttle_ms": 0, "channels": ["trades"]}, timeout=5)
        check(ack == {"throttle_ms": 0, "align": False, "symbols": ["AAPL"], "rejected": [], "channels": {"trades": ["AAPL"]}}, f"channels subscribe ack {ack}")
        start = len(events.seen)
        accounted = []
        trades = 0
        while trades < 20:
            # The next event of any name: trades and gap are all a trades subscription gets.
            try:
                name, data, at = events.pending.get(timeout=WAIT)
            except queue.Empty:
                raise Failure(f"no event within {WAIT} s after {trades} trades; received {[e[0] for e in events.seen[start:][-20:]]}") from None
            events.seen.append((name, data, at))
            if name == "trades":
                check(list(data) == ["trades"], f"a live trades event is {{trades}}: {str(data)[:200]}")
                for t in data["trades"]:
                    check(sorted(t) == ["price", "pt", "seq", "size", "symbol", "ts"], f"trade fields {t}")
                    check(t["symbol"] == "AAPL" and t["price"] > 0 and t["size"] > 0, f"trade {t}")
                    accounted.append(t["seq"])
                    trades += 1
            elif name == "gap":
                check(data["channel"] == "trades" and data["symbol"] == "AAPL" and data["from_seq"] <= data["to_seq"], f"gap {data}")
                accounted.extend(range(data["from_seq"], data["to_seq"] + 1))
            else:
                raise Failure(f"a trades-only subscription got a '{name}' event: {str(data)[:200]}")
        expected = list(range(accounted[0], accounted[0] + len(accounted)))
        check(accounted == expected, f"trade seqs run one after the other (gaps accounted): {accounted}")
        check(sio.transport() == expect, f"still on {expect}")
    finally:
        sio.disconnect()
    print(f"python-socketio Client, channels over {expect}: ack names trades, {trades} trades with seqs {accounted[0]}..{accounted[-1]}, no quotes, unknown channel named")


async def run_async(url, transport):
    pending = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False, request_timeout=5)

    @sio.on("*")
    async def any_event(event, *args):
        await pending.put((event, args[0] if args else None))

    async def next_event(name):
        while True:
            event, data = await asyncio.wait_for(pending.get(), WAIT)
            if event == name:
                return data

    await sio.connect(url, transports=[transport], wait_timeout=5)
    try:
        check_welcome(await next_event("welcome"))
        check(sio.transport() == transport, f"async transport {sio.transport()}")
        ack = await sio.call("subscribe", {"symbols": "AAPL,MSFT", "throttle_ms": 100}, timeout=5)
        check(ack == {"throttle_ms": 100, "align": False, "symbols": ["AAPL", "MSFT"], "rejected": [], "channels": {"quotes": ["AAPL", "MSFT"]}}, f"async subscribe ack {ack}")
        batches = [await next_event("quotes") for _ in range(4)]
        check_quotes(batches, ["AAPL", "MSFT"])
        check(await sio.call("list", timeout=5) == {"symbols": ["AAPL", "MSFT"]}, "async list ack")
        check_error_ack(await sio.call("subscribe", {"symbols": [1]}, timeout=5), "bad_request", "symbols must be strings")
    finally:
        await sio.disconnect()
    print(f"python-socketio AsyncClient, {transport}: welcome, acks, {len(batches)} quote batches, error ack, disconnect")


def run_auth(url, token):
    """Against a server that requires tokens: a CONNECT without one is refused with the reason,
    `auth={"token": …}` connects, and the token's symbols are all it may subscribe."""
    sio = socketio.Client(reconnection=False, request_timeout=5)
    refusals = []
    sio.on("connect_error", lambda data=None: refusals.append(data))
    try:
        sio.connect(url, transports=["websocket"], wait_timeout=5)
        check(False, "connected without a token")
    except socketio.exceptions.ConnectionError:
        pass
    check(len(refusals) == 1 and "token" in str(refusals[0]), f"connect_error names the token: {refusals}")
    events = Events()
    sio = socketio.Client(reconnection=False, request_timeout=5)
    sio.on("*", lambda event, *args: events.put(event, args[0] if args else None))
    sio.connect(url, transports=["websocket"], auth={"token": token}, wait_timeout=5)
    try:
        check_welcome(events.next("welcome"))
        ack = sio.call("subscribe", {"symbols": ["AAPL", "NVDA"]}, timeout=5)
        check(ack["symbols"] == ["AAPL"] and ack["rejected"] == [{"symbol": "NVDA", "code": "not_entitled"}], f"entitled subscribe ack {ack}")
    finally:
        sio.disconnect()
    print("python-socketio Client, tokens: refused without one (the reason given), auth token connects to its symbols")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--auth":
        try:
            run_auth(sys.argv[2].rstrip("/"), sys.argv[3])
        except (Failure, Exception) as error:
            print(f"FAILED: python-socketio with tokens against {sys.argv[2]}: {type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(1)
        return
    url = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    print(f"python-socketio {version('python-socketio')}, python-engineio {version('python-engineio')}")
    try:
        run_sync(url, "polling only", ["polling"], "polling")
        run_sync(url, "websocket only", ["websocket"], "websocket")
        run_sync(url, "default (polling upgraded to websocket)", None, "websocket")
        run_query(url)
        run_channels(url, ["websocket"], "websocket")
        run_channels(url, ["polling"], "polling")
        asyncio.run(run_async(url, "polling"))
        asyncio.run(run_async(url, "websocket"))
    except Failure as failure:
        print(f"FAILED: python-socketio against {url}/socket.io/: {failure}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:  # a client error (connection refused, timeout) is a failure too
        print(f"FAILED: python-socketio against {url}/socket.io/: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print("python-socketio: all checks passed")


if __name__ == "__main__":
    main()
