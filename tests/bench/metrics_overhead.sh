#!/usr/bin/env bash
# Cost of the hot-path metrics: the firehose with the default build against a build with
# `--no-default-features` (metric updates compiled out), side by side, alternating, pinned:
# server on core 0, load generator on core 1. Prints per-run figures and the median ratio of
# delivered quotes per server CPU-second (robust to a noisy machine) and of delivered quotes/s.
# Usage: tests/bench/metrics_overhead.sh [runs=3] [seconds=8]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
seconds=${2:-8}
cargo build --release --workspace --bins -q
cargo build --release --bins -q --no-default-features --target-dir target/nometrics
out=$(mktemp -d)
port=18300
ticks=$(getconf CLK_TCK)

run_one() { # build-name binary
  port=$((port + 1))
  taskset -c 0 "$2" --bind "127.0.0.1:$port" --sim-rate 1000000 --max-connections-per-ip 2000 >"$out/server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
  local cpu0; cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  taskset -c 1 target/release/loadgen -q --url "ws://127.0.0.1:$port/ws" --clients 1000 --symbols 10 --throttle-ms 0 \
    --duration "$seconds" --warmup 2 --probe-interval-ms 100000 --json "$out/$1.json" >/dev/null
  local cpu1; cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$out/$1.json" "$1" "$(( cpu1 - cpu0 ))" "$ticks" >>"$out/results.tsv" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
m = report["measured"]
# Server CPU covers the whole load-generator run (ramp, warm-up, measurement); quotes are
# counted over the measured part, so scale by the run's length for a per-CPU-second figure.
cpu = int(sys.argv[3]) / int(sys.argv[4])
total = report["config"]["duration_s"] + report["config"]["warmup_s"] + report["clients"]["ramp_s"]
print(f'{sys.argv[2]}\t{m["quotes_per_s"]:.0f}\t{m["quotes_per_s"] * total / cpu:.0f}\t{cpu:.2f}')
PY
}

for i in $(seq 1 "$runs"); do
  run_one metrics target/release/tickerfeed
  run_one nometrics target/nometrics/release/tickerfeed
done
python3 - "$out/results.tsv" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().split("\n") if line]
print("build      quotes/s   quotes/server-CPU-s   server CPU s")
for r in rows:
    print(f"{r[0]:<10} {r[1]:>9} {r[2]:>20} {r[3]:>14}")
def median(build, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == build)
for col, name in ((1, "delivered quotes/s"), (2, "quotes per server CPU-second")):
    on, off = median("metrics", col), median("nometrics", col)
    print(f"median {name}: metrics {on:.0f}, no metrics {off:.0f}, ratio {on / off:.3f}")
PY
rm -rf "$out"
