#!/usr/bin/env bash
# Monitoring suite: the Prometheus configuration, alert rules, Grafana dashboard and
# docker-compose stack in dashboards/, Dockerfile and docker-compose.yml, checked against a REAL
# Prometheus scraping two real tickerfeed servers under load.
#
#   bash tests/monitoring/run.sh          (from anywhere; after cargo build --release --workspace --bins)
#
# Steps:
#   1. promtool check config / check rules on dashboards/prometheus/;
#   2. docker-compose config; every path the stack builds from or mounts exists, and the pieces
#      fit (Dockerfile COPY vs .dockerignore, Grafana provisioning vs mounts vs the dashboard's
#      datasource uid, Prometheus targets vs compose services) — no Docker engine needed;
#   3. two servers on free loopback ports (sim; sim + replay from feeds/demo-replay.toml), and a
#      Prometheus (temp dir, free port, 1 s scrapes) loading the same alerts.yml;
#   4. one scrape of each /metrics: `promtool check metrics` silent, expected families present;
#   5. load generators on both servers (stalled clients among them → slow_consumer), a REST
#      pause/resume of the replay feed; then over Prometheus's HTTP API every expression of the
#      dashboard and of alerts.yml must parse and return data (alerts that are empty when healthy
#      are listed in check.py with the reason).
# Artefacts: tests/artifacts/monitoring/. Binaries: $TICKERFEED_BIN and $LOADGEN_BIN, default
# target/release/{tickerfeed,loadgen} (built here when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here="$root/tests/monitoring"
artifacts="$root/tests/artifacts/monitoring"
rm -rf "$artifacts"
mkdir -p "$artifacts"
started=$(date +%s)

step() { printf '\n== monitoring: %s\n' "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

need() {
  # need COMMAND DEBIAN-PACKAGE: install the package when the command is missing.
  if ! command -v "$1" >/dev/null 2>&1; then
    step "installing $2"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2"; } \
      >>"$artifacts/apt.log" 2>&1 || { tail -n 20 "$artifacts/apt.log"; die "could not install $2"; }
    command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 not found"
  fi
}
need curl curl
need promtool prometheus
need prometheus prometheus
need docker-compose docker-compose
need python3 python3

tickerfeed_bin=${TICKERFEED_BIN:-$root/target/release/tickerfeed}
loadgen_bin=${LOADGEN_BIN:-$root/target/release/loadgen}
if [ -z "${TICKERFEED_BIN:-}${LOADGEN_BIN:-}" ] && { [ ! -x "$tickerfeed_bin" ] || [ ! -x "$loadgen_bin" ]; }; then
  step "release build"
  cargo build --release --workspace --bins
fi
[ -x "$tickerfeed_bin" ] || die "no server binary at $tickerfeed_bin"
[ -x "$loadgen_bin" ] || die "no load generator at $loadgen_bin"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tickerfeed-monitoring.XXXXXX")
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS LOG: poll until URL answers 2xx, or fail with the log's tail.
wait_http() {
  local deadline=$(( $(date +%s) + $2 ))
  until curl -sf -o /dev/null --max-time 2 "$1"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$3" >&2 || true
      die "$1 not ready within $2 s"
    fi
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
step "promtool check config / rules"
promtool check config dashboards/prometheus/prometheus.yml 2>&1 | tee "$artifacts/promtool-config.txt"
promtool check config dashboards/prometheus/prometheus-scale.yml 2>&1 | tee "$artifacts/promtool-config-scale.txt"
promtool check rules dashboards/prometheus/alerts.yml 2>&1 | tee "$artifacts/promtool-rules.txt"

# ---------------------------------------------------------------------------------------------
step "docker-compose config and the paths it uses"
docker-compose -f docker-compose.yml --profile scale config >"$artifacts/compose-config.yml" 2>"$artifacts/compose-config.err" \
  || { cat "$artifacts/compose-config.err"; die "docker-compose config rejected docker-compose.yml"; }
if [ -s "$artifacts/compose-config.err" ]; then cat "$artifacts/compose-config.err"; die "docker-compose config warned"; fi
echo "docker-compose config: ok ($(docker-compose version --short 2>/dev/null || echo '?'))"
# YAML → JSON with the interpreter docker-compose runs on: it has the YAML module compose
# itself needs (the checks are stdlib-only Python).
compose_py=$(head -n 1 "$(command -v docker-compose)" | sed -e 's/^#! *//' -e 's/ .*//')
"$compose_py" -c 'import yaml' 2>/dev/null || compose_py=/usr/bin/python3
"$compose_py" - "$artifacts/compose-config.yml" dashboards/prometheus/prometheus.yml dashboards/prometheus/prometheus-scale.yml dashboards/prometheus/alerts.yml \
  dashboards/grafana/provisioning/datasources/prometheus.yml dashboards/grafana/provisioning/dashboards/tickerfeed.yml \
  >"$tmp/yaml.json" <<'PY' || die "could not read the YAML files"
import json, sys, yaml
out = {}
for i, path in enumerate(sys.argv[1:]):
    with open(path) as f:
        out["compose" if i == 0 else path] = yaml.safe_load(f)
json.dump(out, sys.stdout)
PY
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps([r["alert"] for g in d["dashboards/prometheus/alerts.yml"]["groups"] for r in g["rules"] if "alert" in r]))' \
  "$tmp/yaml.json" >"$tmp/alert-names.json"
python3 "$here/check.py" static --yaml-json "$tmp/yaml.json" --repo "$root"

# ---------------------------------------------------------------------------------------------
step "two servers and a Prometheus on loopback"
sim_port=$(free_port)
replay_port=$(free_port)
prom_port=$(free_port)
"$tickerfeed_bin" --bind "127.0.0.1:$sim_port" --slow-consumer-timeout 1 >"$artifacts/server-sim.log" 2>&1 &
pids+=($!)
"$tickerfeed_bin" --bind "127.0.0.1:$replay_port" --config feeds/demo-replay.toml --slow-consumer-timeout 1 \
  >"$artifacts/server-replay.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$sim_port/readyz" 15 "$artifacts/server-sim.log"
wait_http "http://127.0.0.1:$replay_port/readyz" 15 "$artifacts/server-replay.log"
echo "sim server: 127.0.0.1:$sim_port, sim + replay server: 127.0.0.1:$replay_port"

mkdir -p "$tmp/prometheus/data"
cp dashboards/prometheus/alerts.yml "$tmp/prometheus/alerts.yml"
cat >"$tmp/prometheus/prometheus.yml" <<EOF
# Generated by tests/monitoring/run.sh: dashboards/prometheus/prometheus.yml with the targets of
# this run and 1 s intervals; the same alerts.yml.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: tickerfeed
    static_configs:
      - targets: ["127.0.0.1:$sim_port"]
        labels: {deployment: sim}
      - targets: ["127.0.0.1:$replay_port"]
        labels: {deployment: replay}
EOF
cp "$tmp/prometheus/prometheus.yml" "$artifacts/prometheus-test.yml"
promtool check config "$tmp/prometheus/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prometheus/prometheus.yml" --storage.tsdb.path="$tmp/prometheus/data" \
  --storage.tsdb.retention.time=1h --web.listen-address="127.0.0.1:$prom_port" \
  >"$artifacts/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$prom_port/-/ready" 30 "$artifacts/prometheus.log"
echo "prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}'): 127.0.0.1:$prom_port"

# ---------------------------------------------------------------------------------------------
step "one scrape of /metrics: promtool check metrics, expected families"
for name in sim replay; do
  port_var="${name}_port"
  curl -sS --max-time 5 -D "$artifacts/scrape-$name.headers" -o "$artifacts/scrape-$name.txt" \
    "http://127.0.0.1:${!port_var}/metrics"
  grep -qi '^content-type: text/plain; version=0.0.4' "$artifacts/scrape-$name.headers" \
    || die "$name /metrics content type: $(grep -i '^content-type' "$artifacts/scrape-$name.headers")"
  lint_status=0
  promtool check metrics <"$artifacts/scrape-$name.txt" >"$artifacts/promtool-metrics-$name.txt" 2>&1 || lint_status=$?
  if [ "$lint_status" != 0 ] || [ -s "$artifacts/promtool-metrics-$name.txt" ]; then
    cat "$artifacts/promtool-metrics-$name.txt"
    die "promtool check metrics complains about the $name server's /metrics (exit $lint_status)"
  fi
  echo "promtool check metrics ($name, $(grep -c '^# TYPE' "$artifacts/scrape-$name.txt") families): no complaint"
done
python3 "$here/check.py" metrics --sim "$artifacts/scrape-sim.txt" --replay "$artifacts/scrape-replay.txt"

# ---------------------------------------------------------------------------------------------
step "Prometheus scrapes both servers"
python3 "$here/check.py" ready --prom "http://127.0.0.1:$prom_port" \
  --sim "http://127.0.0.1:$sim_port" --replay "http://127.0.0.1:$replay_port"

# ---------------------------------------------------------------------------------------------
step "load on both servers; the dashboard and alert expressions against Prometheus"
# Reading clients, plus stalled wildcard clients with a tiny receive buffer: the server closes
# them as slow_consumer about 1 s after they stop reading. The replay server's clients use a
# 250 ms throttle, so quotes are conflated too. The load outlasts the checks below.
load_secs=25
loadgen_pids=()
for name in sim replay; do
  port_var="${name}_port"
  throttle=0
  [ "$name" = replay ] && throttle=250
  timeout $((load_secs + 30)) "$loadgen_bin" --url "ws://127.0.0.1:${!port_var}/ws" --clients 20 --symbols 10 \
    --throttle-ms "$throttle" --duration "$load_secs" --warmup 1 --stall 12 --stall-wildcard --stall-rcvbuf-kib 4 \
    --probe-interval-ms 0 -q --json "$artifacts/loadgen-$name.json" >"$artifacts/loadgen-$name.txt" 2>&1 &
  loadgen_pids+=($!)
  pids+=($!)
done
live_status=0
python3 "$here/check.py" live --prom "http://127.0.0.1:$prom_port" \
  --sim "http://127.0.0.1:$sim_port" --replay "http://127.0.0.1:$replay_port" \
  --dashboard dashboards/grafana/tickerfeed.json --alerts-json "$tmp/alert-names.json" \
  --artifacts "$artifacts" --rate-interval 10s | tee "$artifacts/live-checks.txt" || live_status=${PIPESTATUS[0]}

step "load generators"
loadgen_status=0
for i in "${!loadgen_pids[@]}"; do
  name=$([ "$i" = 0 ] && echo sim || echo replay)
  status=0
  wait "${loadgen_pids[$i]}" || status=$?
  python3 - "$artifacts/loadgen-$name.json" "$name" "$status" <<'PY' || loadgen_status=1
import json, sys
path, name, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    report = json.load(open(path))
except (OSError, ValueError) as e:
    sys.exit(f"FAIL: loadgen ({name}) exited {status} without a report: {e}")
c, m = report["clients"], report["messages"]
print(f"loadgen {name}: exit {status}, {c['connected']} connected (+{c['stall_connected']} stalled), "
      f"{c['failed']} failed, {c['disconnected']} disconnected, {round(report['measured']['quotes_per_s'])} quotes/s, "
      f"{m['ordering_errors']} ordering errors")
problems = []
if status != 0: problems.append(f"exit status {status}: {report.get('failures')}")
if c["connected"] != 20 or c["failed"]: problems.append("not every reading client connected")
if c["stall_connected"] != 12: problems.append("not every stalled client connected")
if m["ordering_errors"]: problems.append("ordering errors")
if report["measured"]["quotes_per_s"] <= 0: problems.append("no quotes")
if problems: sys.exit(f"FAIL: loadgen ({name}): " + "; ".join(problems))
PY
done

# A last scrape after the load, for the record.
for name in sim replay; do
  port_var="${name}_port"
  curl -sS --max-time 5 -o "$artifacts/scrape-$name-after.txt" "http://127.0.0.1:${!port_var}/metrics" || true
done

step "summary"
elapsed=$(( $(date +%s) - started ))
grep -c '^ok:' "$artifacts/live-checks.txt" | xargs -I{} echo "live checks passed: {}"
if [ "$live_status" != 0 ] || [ "$loadgen_status" != 0 ]; then
  grep '^FAIL' "$artifacts/live-checks.txt" || true
  die "monitoring checks failed after ${elapsed} s; artefacts in tests/artifacts/monitoring/"
fi
echo "MONITORING CHECKS PASSED in ${elapsed} s (artefacts in tests/artifacts/monitoring/)"
