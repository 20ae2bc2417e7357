#!/usr/bin/env bash
# The soak: thousands of clients with churn and slow readers against the release server for a
# long time; its RSS, open descriptors and every map keyed by clients
# (tickerfeed_client_map_entries) must stay flat, and come back to their baseline once every
# client has left. What is judged and why: tests/soak/README.md.
#
#   tests/soak/run.sh [--duration 30m] [--clients 2000] [-- LOADGEN-SOAK-OPTIONS...]
#
# --duration takes 30m, 120s or plain seconds. Builds the release server and load generator,
# starts the server on a free loopback port (pinned to core 0, the load generator to core 1,
# when there are two), runs `loadgen soak` and exits with its verdict. Output in
# tests/artifacts/soak/: soak.json (every sample, figures, checks), summary.txt, server.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out="$root/tests/artifacts/soak"
duration=30m
clients=2000
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "tests/soak/run.sh: unknown option $1 (--duration 30m, --clients 2000, -- loadgen soak options)"; exit 2 ;;
  esac
done
case $duration in
  *m) seconds=$(( ${duration%m} * 60 )) ;;
  *s) seconds=${duration%s} ;;
  *) seconds=$duration ;;
esac
[[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "tests/soak/run.sh: --duration $duration is not a duration (30m, 120s, 120)"; exit 2; }

cargo build --release --workspace --bins -q
mkdir -p "$out"
rm -f "$out"/soak.json "$out"/summary.txt
# Each client is a descriptor in the load generator; the server's own limit is raised by itself.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((clients + 256)) ] || { echo "tests/soak/run.sh: open files limit $(ulimit -n) is below $clients clients + 256"; exit 2; }

source tests/lib.sh
# The per-IP connection cap (100 by default) would refuse the soak's loopback clients, which
# all come from 127.0.0.1: the soak measures resources, not that cap.
export TICKERFEED_MAX_CONNECTIONS_PER_IP=100000
trap 'kill ${server:-} 2>/dev/null || true' EXIT
start_tickerfeed ./target/release/tickerfeed "$out/server.log"
pin_loadgen=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  # Every thread of the server on core 0 (threads it starts later inherit it), the load
  # generator on core 1: neither steals the other's core, so a stall is the server's own.
  taskset -a -p -c 0 "$server" >/dev/null
  pin_loadgen=(taskset -c 1)
fi
echo "soak: $clients clients for ${seconds}s against tickerfeed pid $server on 127.0.0.1:$port"
status=0
timeout $((seconds + 300)) "${pin_loadgen[@]}" ./target/release/loadgen soak --url "ws://127.0.0.1:$port/ws" --server-pid "$server" \
  --clients "$clients" --duration "$seconds" --out "$out" "${extra[@]}" || status=$?
kill -0 "$server" 2>/dev/null || { echo "soak: the server died during the run; its log: $out/server.log"; tail -20 "$out/server.log"; exit 1; }
# ERROR lines are the server's own faults (a client's malformed request is logged at DEBUG).
errors=$(grep -c ' ERROR ' "$out/server.log" || true)
if [ "$errors" -gt 0 ]; then
  echo "soak: FAILED: the server logged $errors ERROR lines:"; grep ' ERROR ' "$out/server.log" | head -5; status=1
fi
exit "$status"
