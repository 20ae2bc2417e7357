"""GET /sse with httpx-sse, as a Python program would consume it: connect, read welcome,
subscribed (with rejected) and quotes (snapshot first, seq rising per symbol). Exit status 0
when every check holds; a failed check names what it saw.

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


if __name__ == "__main__":
    main(sys.argv[1])
