#!/usr/bin/env bash
# The side-by-side benchmark (issue 5): tickerfeed against Node ws, uWebSockets.js and
# Socket.IO, tickerfeed's /ws against its /sse (issue 13), and tickerfeed's /socket.io/ against
# the Node Socket.IO peer, six scenarios, server pinned to core 0 and load generator to core 1.
#
#   tests/bench/run.sh                 full run (about an hour), results in tests/bench/results/
#   tests/bench/run.sh --smoke         tiny numbers, all six scenarios, all six servers, < 4 min,
#                                      results in a temporary directory (part of tests/run.sh)
#   tests/bench/run.sh --only firehose,idle --servers tickerfeed,uws --runs 5 --out DIR
#   tests/bench/run.sh --only firehose --servers tickerfeed,tickerfeed-sse
#                                      /ws against /sse (tickerfeed-sse: the same server, its
#                                      clients on Server-Sent Events)
#   tests/bench/run.sh --only firehose --servers tickerfeed-socketio,socketio
#                                      tickerfeed's Socket.IO endpoint against the Node peer, on
#                                      the same wire (tickerfeed-socketio: the same server, its
#                                      clients on /socket.io/)
#   tests/bench/run.sh --only firehose --servers tickerfeed,tickerfeed-trades --out DIR
#                                      the trades channel: the same server, its clients on quotes
#                                      and trades (tickerfeed-trades runs in the firehose only)
#   tests/bench/run.sh --render tests/bench/results/results.json
#                                      measure nothing: redo the tables, targets and chart of an
#                                      earlier run from its raw reports
#
# This file prepares the machine (release build, the peers' npm packages, the open-file limit)
# and makes sure nothing it started outlives it; tests/bench/bench.py runs the scenarios and
# writes results.md, results.json and results.svg. Exit status: 0 = the bench ran (missed
# performance targets are results, not failures); 1 = a server crashed or would not start, the
# load generator could not run, or (--smoke) a run was not a usable measurement.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Re-rendering measures nothing: no build, no servers.
for arg in "$@"; do
  if [ "$arg" = --render ]; then exec python3 tests/bench/bench.py "$@"; fi
done

for tool in cargo node npm python3 taskset ss curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: '$tool' is required but not installed" >&2; exit 1; }
done
case " $* " in
  *tickerfeed-redis*) command -v redis-server >/dev/null 2>&1 \
    || { echo "run.sh: tickerfeed-redis needs 'redis-server' (Debian: apt-get install redis-server)" >&2; exit 1; } ;;
esac
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "run.sh: Python 3.11 or newer is required ($(python3 -V))" >&2; exit 1; }

cores=$(nproc)
if [ "$cores" -lt 2 ]; then
  echo "run.sh: WARNING: $cores core(s): the server and the load generator cannot be pinned apart;" \
       "the run goes on unpinned and results.md says so" >&2
fi

# ~19,000 client sockets per server process (and per load-generator process): as many
# descriptors as the hard limit allows.
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 20000 ]; then
  echo "run.sh: WARNING: open-file limit $(ulimit -n) (< 20000): the max-connections scenario" \
       "will be limited by it" >&2
fi

echo "== release build"
cargo build --release --workspace --bins -q
if [ ! -d tests/bench/peers/node_modules ]; then
  echo "== npm ci (tests/bench/peers)"
  (cd tests/bench/peers && npm ci --no-audit --no-fund --loglevel=error)
fi

# bench.py kills every process it started on any exit; this trap covers bench.py itself being
# interrupted (a background job does not get the terminal's SIGINT).
bench=
cleanup() {
  if [ -n "$bench" ] && kill -0 "$bench" 2>/dev/null; then
    kill -TERM "$bench" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$bench" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$bench" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
python3 tests/bench/bench.py "$@" &
bench=$!
status=0
wait "$bench" || status=$?
bench=
exit "$status"
