#!/usr/bin/env bash
# The one full test command. Installs what it needs on a fresh Debian machine, then runs:
#   0. cargo fmt --check and cargo clippy --all-targets -D warnings, over the workspace (the
#      server and the load generator, tests/bench/loadgen);
#   1. cargo test (unit and integration tests against the real server, the Redis bus against a
#      real redis-server; the load generator's);
#   2. a smoke test of the release binary as a user runs it: start with no configuration,
#      serve REST and WebSocket (checked with the load generator), stop on SIGTERM in time;
#   3. the browser dashboard in a real headless Chromium (tests/e2e/run.sh);
#   4. the benchmark's peer servers (tests/bench/peers/smoke.mjs), and the side-by-side bench
#      driver: its unit tests and a smoke run of all six scenarios at tiny scale;
#   5. monitoring against a real Prometheus (tests/monitoring/run.sh);
#   6. Autobahn|Testsuite's fuzzingclient against /ws and the test-only echo route: every case
#      OK or INFORMATIONAL (tests/autobahn/run.sh, docs/CONFORMANCE.md);
#   7. TLS with openssl-made certificates and curl (tests/clients/tls.sh);
#   8. a bounded fuzzing run of the decoders (tests/fuzz/run.sh, docs/FUZZING.md);
#   9. a 2-minute soak: 2,000 clients with churn and slow readers, the server's RSS,
#      descriptors and client maps flat and back to baseline (tests/soak/run.sh; 30 minutes
#      by default when run alone).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
artifacts="$root/tests/artifacts"
mkdir -p "$artifacts"

step() { printf '\n== %s\n' "$*"; }

need() {
  # need COMMAND DEBIAN-PACKAGE: install the package when the command is missing.
  if ! command -v "$1" >/dev/null 2>&1; then
    step "installing $2"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; fi
  fi
}
need curl curl
# tests/redis.rs starts its own redis-server processes on free loopback ports.
need redis-server redis-server

step "style: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --version >/dev/null 2>&1 || { echo "rustfmt is missing: rustup component add rustfmt"; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "clippy is missing: rustup component add clippy"; exit 1; }
cargo fmt --all --check || { echo "the tree is not formatted: run cargo fmt (rustfmt.toml sets the width)"; exit 1; }
cargo clippy --workspace --all-targets -q -- -D warnings || { echo "clippy warnings are errors here"; exit 1; }

step "cargo test"
cargo test --workspace --all-targets 2>&1 | tee "$artifacts/cargo-test.log" | grep -E '^(test result|running|error|failures:|---- )' || true
if grep -qE '^test result: FAILED|^error(\[|:)' "$artifacts/cargo-test.log"; then
  echo "cargo test failed; see tests/artifacts/cargo-test.log"; exit 1
fi
grep -q '^test result: ok' "$artifacts/cargo-test.log" || { echo "cargo test ran no test"; exit 1; }

step "release build"
# --workspace: the server and the load generator (target/release/{tickerfeed,loadgen}).
cargo build --release --workspace --bins

step "smoke: the release binary with no configuration"
source tests/lib.sh
trap 'kill ${server:-} 2>/dev/null || true' EXIT
start_tickerfeed ./target/release/tickerfeed "$artifacts/smoke-server.log"
symbols=$(curl -sf "http://127.0.0.1:$port/api/symbols" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "symbols served: $symbols"
[ "$symbols" -ge 90 ] || { echo "expected the ~100-symbol default universe"; exit 1; }
./target/release/loadgen --url "ws://127.0.0.1:$port/ws" --clients 50 --symbols 10 --throttle-ms 0 --duration 3 --warmup 1 \
  --server-pid "$server" --json "$artifacts/smoke-loadgen.json" | tee "$artifacts/smoke-loadgen.txt"
python3 - "$artifacts/smoke-loadgen.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
clients, measured, messages = report["clients"], report["measured"], report["messages"]
print("smoke figures:", clients["connected"], "connected,", clients["failed"], "failed,",
      round(measured["quotes_per_s"]), "quotes/s,", messages["ordering_errors"], "ordering errors")
assert report["ok"], report["failures"]
assert clients["connected"] == 50 and clients["failed"] == 0, "every client connects"
assert messages["ordering_errors"] == 0, "ordering errors"
assert measured["quotes_per_s"] > 100, "quotes must flow"
assert report["probe"]["ok"] > 0 and report["probe"]["slow"] == 0, "new clients get snapshots fast"
PY
step "smoke: SIGTERM stops the server within 5 s"
kill -TERM "$server"
for _ in $(seq 1 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server" 2>/dev/null; then echo "server still running 5 s after SIGTERM"; exit 1; fi
status=0; wait "$server" || status=$?
[ "$status" = 0 ] || { echo "server exited with $status after SIGTERM"; cat "$artifacts/smoke-server.log"; exit 1; }
trap - EXIT

step "real clients: curl -N and httpx-sse on /sse; socket.io-client and python-socketio on /socket.io/"
bash tests/clients/run.sh

step "browser: dashboard end to end in headless Chromium"
bash tests/e2e/run.sh

step "bench peers: Node ws, uWebSockets.js and Socket.IO servers speak protocol v1"
(cd tests/bench/peers && npm ci --no-audit --no-fund --loglevel=error && timeout 300 node smoke.mjs)

step "bench: the side-by-side driver (unit tests, then all six scenarios × six servers at tiny scale)"
python3 tests/bench/test_bench.py
rm -rf "$artifacts/bench-smoke"
timeout 600 tests/bench/run.sh --smoke --out "$artifacts/bench-smoke"
# The Redis bus's variant (a redis-server, a feed node and a gateway), beside tickerfeed.
rm -rf "$artifacts/bench-smoke-redis"
timeout 300 tests/bench/run.sh --smoke --only firehose,ticker,light --servers tickerfeed,tickerfeed-redis --out "$artifacts/bench-smoke-redis"
# The trades channel's variant (tickerfeed's clients on quotes and trades), in the firehose only.
rm -rf "$artifacts/bench-smoke-trades"
timeout 300 tests/bench/run.sh --smoke --only firehose --servers tickerfeed,tickerfeed-trades --out "$artifacts/bench-smoke-trades"

step "monitoring: Prometheus config and alerts, Grafana dashboard, compose stack against a real Prometheus"
bash tests/monitoring/run.sh

step "Autobahn|Testsuite: fuzzingclient against /ws and /test/echo, every case OK or INFORMATIONAL"
timeout 900 bash tests/autobahn/run.sh

step "TLS: curl (OpenSSL) against --tls-cert/--tls-key with a test CA made by openssl"
timeout 60 bash tests/clients/tls.sh target/release/tickerfeed

step "fuzzing: the decoders' cargo-fuzz targets, stable toolchain, 60 s each (tests/fuzz/run.sh)"
timeout 900 bash tests/fuzz/run.sh

step "soak: 2,000 clients, churn and slow readers, 2 minutes"
# About 3 minutes: the run, the drain and the settle; the binaries are built already.
timeout 300 tests/soak/run.sh --duration 2m --clients 2000

echo
echo "ALL TESTS PASSED"
