#!/usr/bin/env bash
# Real clients against the release binary: curl -N and Python's httpx-sse on GET /sse.
# Installs what it needs (a venv in tests/clients/.venv from requirements.txt); part of
# tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
artifacts="$root/tests/artifacts/clients"
mkdir -p "$artifacts"
bin="${TICKERFEED_BIN:-$root/target/release/tickerfeed}"
[ -x "$bin" ] || { echo "no tickerfeed binary at $bin: run cargo build --release first"; exit 1; }

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import httpx_sse' 2>/dev/null; then
  echo "installing the Python clients (tests/clients/.venv)"
  python3 -m venv .venv || { echo "python3 -m venv failed: install python3-venv"; exit 1; }
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi

source ../lib.sh
trap 'kill ${server:-} 2>/dev/null || true' EXIT
start_tickerfeed "$bin" "$artifacts/server.log" --seed 7

# Both symbols have a price before a client connects, so its snapshot carries them.
for _ in $(seq 1 100); do
  [ "$(curl -sf "http://127.0.0.1:$port/api/quotes?symbols=AAPL,MSFT" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["quotes"]))' 2>/dev/null)" = 2 ] && break
  sleep 0.1
done

echo "-- curl -N /sse"
# curl exits 28 when --max-time ends the stream, which is how a stream read is bounded here.
status=0
curl -sN --max-time 3 "http://127.0.0.1:$port/sse?symbols=AAPL,MSFT&throttle_ms=250" >"$artifacts/curl-sse.txt" || status=$?
[ "$status" = 28 ] || { echo "curl -N ended with $status, expected the 3 s time limit (28)"; exit 1; }
python3 - "$artifacts/curl-sse.txt" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
blocks = [b for b in text.split("\n\n") if b.strip()]
assert blocks[0] == "retry: 1000", blocks[:2]
events = []
for block in blocks[1:]:
    lines = block.split("\n")
    if lines[0].startswith(":"):
        continue
    assert lines[0].startswith("event: ") and lines[1].startswith("data: ") and len(lines) == 2, block[:200]
    events.append((lines[0][7:], json.loads(lines[1][6:])))
names = [n for n, _ in events]
assert names[:3] == ["welcome", "subscribed", "quotes"], names[:5]
assert events[2][1]["snapshot"] is True
quotes = [e for n, e in events if n == "quotes"]
assert len(quotes) >= 6, f"{len(quotes)} quotes events in 3 s at 250 ms"
print(f"curl -N: {len(events)} events in 3 s, {len(quotes)} quote batches")
PY

echo "-- python httpx-sse"
.venv/bin/python sse_client.py "http://127.0.0.1:$port"

kill -TERM "$server"
wait "$server" || true
trap - EXIT
echo "CLIENT CHECKS PASSED"
