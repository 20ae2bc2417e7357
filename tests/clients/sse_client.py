"""GET /sse with httpx-sse, as a Python program would consume it: connect, read welcome,
subscribed (with rejected) and quotes (snapshot first, seq rising per symbol). Then the trades
channel (docs/PROTOCOL.md, "Channels: trades and bars"): `channels=trades` streams `trades`
events with every seq in order (a `gap` accounting for any lost) and no quotes, and a second
stream with `since=AAPL:N` (N a recent seq) starts with a `recovered` backlog from N+1. Exit
status 0 when every check holds; a failed check names what it saw.

    python sse_client.py http://127.0.0.1:8080
"""

import json
import sys
import time

import httpx
from httpx_sse import connect_sse


def main(base: str) -> None:
    url = f"{base}/sse?symbols=AAPL,MSFT,NOPE&throttle_ms=200"
    events = []
    deadline = time.monotonic() + 15
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
        with connect_sse(client, "GET", url) as source:
            assert source.response.status_code == 200, source.response.status_code
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for sse in source.iter_sse():
                if not sse.data:
                    # httpx-sse hands on the `retry:` block as an event without data, which
                    # an EventSource would not dispatch.
                    continue
                events.append((sse.event, json.loads(sse.data)))
                if sum(1 for name, _ in events if name == "quotes") >= 8 or time.monotonic() > deadline:
                    break
    names = [name for name, _ in events]
    assert names[:2] == ["welcome", "subscribed"], names[:5]
    welcome, subscribed = events[0][1], events[1][1]
    assert welcome["protocol"] == 1, welcome
    assert subscribed["symbols"] == ["AAPL", "MSFT"], subscribed
    assert subscribed["rejected"] == [{"symbol": "NOPE", "code": "unknown_symbol"}], subscribed
    batches = [data for name, data in events if name == "quotes"]
    assert len(batches) >= 8, f"only {len(batches)} quotes events in 15 s"
    assert batches[0].get("snapshot") is True, batches[0]
    last = {}
    for batch in batches[1:]:
        assert "snapshot" not in batch, batch
        for quote in batch["quotes"]:
            symbol, seq = quote["symbol"], quote["seq"]
            assert symbol in ("AAPL", "MSFT"), symbol
            assert seq > last.get(symbol, 0), f"{symbol}: seq {seq} after {last.get(symbol)}"
            last[symbol] = seq
    print(f"python httpx-sse: {len(events)} events, {len(batches)} quote batches, last seqs {last}")


def read_events(url, enough, seconds=15):
    """The stream's events (name, data) until `enough(events)` holds; fails after `seconds`."""
    events = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
        with connect_sse(client, "GET", url) as source:
            assert source.response.status_code == 200, source.response.status_code
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                data = json.loads(sse.data)
                assert data["type"] == sse.event, f"an event is named by its type: {sse.event} {sse.data[:200]}"
                events.append((sse.event, data))
                if enough(events):
                    return events
                assert time.monotonic() < deadline, f"{url}: not enough within {seconds} s; got {[n for n, _ in events][-20:]}"
    raise AssertionError(f"{url}: the stream ended; got {[n for n, _ in events][-20:]}")


def tape(events, symbol):
    """The seqs of `symbol`'s trades and of its gaps, in order; checks every trade's fields."""
    accounted, trades = [], []
    for name, data in events:
        if name == "trades":
            for t in data["trades"]:
                assert sorted(t) == ["price", "pt", "seq", "size", "symbol", "ts"], t
                assert t["symbol"] == symbol and t["price"] > 0 and t["size"] > 0, t
                accounted.append(t["seq"])
                trades.append(t["seq"])
        elif name == "gap" and data["symbol"] == symbol:
            assert data["channel"] == "trades" and data["from_seq"] <= data["to_seq"], data
            accounted.extend(range(data["from_seq"], data["to_seq"] + 1))
    return accounted, trades


def assert_contiguous(accounted):
    assert accounted, "some trades"
    assert accounted == list(range(accounted[0], accounted[0] + len(accounted))), f"trade seqs run one after the other: {accounted}"


def channels(base: str) -> None:
    url = f"{base}/sse?symbols=AAPL&channels=trades&throttle_ms=0"
    events = read_events(url, lambda evs: len(tape(evs, "AAPL")[1]) >= 20)
    names = [name for name, _ in events]
    assert names[:2] == ["welcome", "subscribed"], names[:5]
    assert isinstance(events[0][1].get("session"), str), events[0][1]
    subscribed = events[1][1]
    assert subscribed["channels"] == {"trades": ["AAPL"]}, subscribed
    assert subscribed["symbols"] == ["AAPL"] and subscribed["throttle_ms"] == 0, subscribed
    assert set(names[2:]) <= {"trades", "gap"}, f"a trades-only stream gets trades (and gaps) only: {sorted(set(names[2:]))}"
    accounted, trades = tape(events[2:], "AAPL")
    assert_contiguous(accounted)
    for name, data in events[2:]:
        if name == "trades":
            assert "recovered" not in data, f"live trades carry no recovered flag: {str(data)[:200]}"

    # Resume: a recent seq, which the ring (1,024 trades) surely still holds.
    since = trades[-1] - 5
    url = f"{base}/sse?symbols=AAPL&channels=trades&throttle_ms=0&since=AAPL:{since}"
    resumed = read_events(url, lambda evs: sum(len(d["trades"]) for n, d in evs if n == "trades" and not d.get("recovered")) >= 5)
    backlog = [d for n, d in resumed if n == "trades"][0]
    assert backlog.get("recovered") is True, f"the first trades event is the recovered backlog: {str(backlog)[:200]}"
    assert backlog["trades"] and backlog["trades"][0]["seq"] == since + 1, f"the backlog starts at {since + 1}: {str(backlog)[:200]}"
    assert "gap" not in [n for n, _ in resumed], "nothing lost within the ring"
    resumed_seqs, _ = tape(resumed, "AAPL")
    assert_contiguous(resumed_seqs)
    assert resumed_seqs[0] == since + 1 and resumed_seqs[-1] >= trades[-1] + 5, resumed_seqs
    print(f"python httpx-sse channels=trades: {len(trades)} trades {trades[0]}..{trades[-1]}, no quotes; since=AAPL:{since} recovered from {since + 1}, then {resumed_seqs[-1] - trades[-1]} more")


if __name__ == "__main__":
    main(sys.argv[1])
    channels(sys.argv[1])
