#!/usr/bin/env python3
"""Checks of the monitoring setup, called by tests/monitoring/run.sh (Python 3 stdlib only).

  check.py static  --yaml-json FILE --repo DIR
      The docker-compose stack hangs together: every host path it builds from or mounts exists,
      the Dockerfile's COPY sources exist and are not excluded by .dockerignore, Grafana's
      provisioning matches the mounts and the dashboard's datasource uid, Prometheus scrapes the
      compose services, every query of a process_* family selects the tickerfeed job. FILE holds {"compose": <docker-compose config>, "<path>": <yaml>, ...},
      the YAML files converted to JSON by run.sh.

  check.py metrics --sim FILE --replay FILE
      The scraped /metrics of a sim-only server and of a sim + replay server have every expected
      metric family with the expected type and pre-initialised label values; every family has
      the tickerfeed_ prefix except the standard process_* ones, which have none.

  check.py ready --prom URL --sim URL --replay URL
      Waits until Prometheus has scraped both servers a few times (before the load starts, so
      that the rise of every counter, slow_consumer disconnects included, lands in rate()).

  check.py live --prom URL --sim URL --replay URL --dashboard FILE --alerts-json FILE --artifacts DIR
      Against a real Prometheus scraping both servers while load generators run: targets up, a
      REST pause/resume seen through the metrics, every dashboard and alert expression parses and
      returns data (alerts whose healthy state is empty are listed in HEALTHY_EMPTY), the rules
      evaluate without error and the slow-consumer alert goes pending.

Exit status 0 when every check passed, 1 otherwise; each failure is printed as "FAIL: ...".
"""

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

FAILURES = []


def fail(message):
    FAILURES.append(message)
    print(f"FAIL: {message}", flush=True)


def ok(message):
    print(f"ok: {message}", flush=True)


def finish():
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        sys.exit(1)
    sys.exit(0)


# --------------------------------------------------------------------------------------------
# static: compose, Dockerfile, Grafana provisioning, Prometheus configuration
# --------------------------------------------------------------------------------------------

def dockerignore_excludes(patterns, path):
    """True when .dockerignore excludes path. As Docker does, the last pattern that matches the
    path or one of its parent directories decides, and a '!' pattern re-includes (simplified:
    fnmatch globs, '**/' only as a prefix)."""
    import fnmatch

    parts = path.strip("/").split("/")
    excluded = False
    for pattern in patterns:
        p = pattern.strip().rstrip("/")
        if not p or p.startswith("#"):
            continue
        negate = p.startswith("!")
        p = p.lstrip("!").lstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, p) or (p.startswith("**/") and fnmatch.fnmatch(parts[i - 1], p[3:])):
                excluded = not negate
                break
    return excluded


def cmd_static(args):
    data = json.load(open(args.yaml_json))
    repo = os.path.abspath(args.repo)
    compose = data["compose"]
    services = compose.get("services", {})
    for name in ["tickerfeed", "tickerfeed-replay", "prometheus", "grafana"]:
        if name not in services:
            fail(f"compose: service {name} missing")
    mounts = {}  # container path -> host path, over every service
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = build["context"] if isinstance(build, dict) else build
            if not os.path.isdir(context):
                fail(f"compose: {name}: build context {context} does not exist")
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not os.path.isfile(dockerfile):
                fail(f"compose: {name}: {dockerfile} does not exist")
            else:
                ok(f"compose: {name} builds from {os.path.relpath(dockerfile, repo)}")
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, target, kind = volume.get("source"), volume.get("target"), volume.get("type")
            else:
                bits = volume.split(":")
                source, target = bits[0], bits[1] if len(bits) > 1 else bits[0]
                kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            if kind == "bind":
                if not os.path.exists(source):
                    fail(f"compose: {name}: mounted host path {source} does not exist")
                else:
                    ok(f"compose: {name} mounts {os.path.relpath(source, repo)} at {target}")
                mounts[(name, target)] = source
            elif source not in compose.get("volumes", {}):
                fail(f"compose: {name}: named volume {source} is not declared")
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}:{port.get('target')}"
            # Short syntax without an address reads "8080:8080"; long syntax without host_ip ":8080:8080".
            if not str(text).startswith("127.0.0.1:"):
                fail(f"compose: {name}: port {text} is not published on 127.0.0.1 only")
    expected_ports = {"tickerfeed": "8080", "tickerfeed-replay": "8081", "prometheus": "9090", "grafana": "3000"}
    for name, port in expected_ports.items():
        published = [str(p.get("published")) if isinstance(p, dict) else str(p).split(":")[-2]
                     for p in services.get(name, {}).get("ports", [])]
        if port not in published:
            fail(f"compose: {name} does not publish port {port} (has {published})")
    replay_cmd = services.get("tickerfeed-replay", {}).get("command") or []
    if isinstance(replay_cmd, str):
        replay_cmd = replay_cmd.split()
    if "--config" in replay_cmd:
        config = replay_cmd[replay_cmd.index("--config") + 1]
        if not config.startswith("/app/"):
            fail(f"compose: tickerfeed-replay --config {config} is not under /app (the image's feeds/)")
        elif not os.path.isfile(os.path.join(repo, config[len("/app/"):])):
            fail(f"compose: tickerfeed-replay --config {config}: {config[len('/app/'):]} not in the repository")
        else:
            ok(f"compose: tickerfeed-replay runs --config {config}")
    else:
        fail("compose: tickerfeed-replay has no --config (expected the demo replay)")

    # Dockerfile: COPY sources of the build context exist and survive .dockerignore.
    dockerfile = open(os.path.join(repo, "Dockerfile")).read()
    ignore = open(os.path.join(repo, ".dockerignore")).read().splitlines() if os.path.exists(os.path.join(repo, ".dockerignore")) else []
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.M):
        words = [w for w in line.split() if not w.startswith("--")]
        if re.search(r"--from=", line):
            continue
        for source in words[:-1]:
            if not os.path.exists(os.path.join(repo, source)):
                fail(f"Dockerfile: COPY source {source} does not exist")
            elif dockerignore_excludes(ignore, source):
                fail(f"Dockerfile: COPY source {source} is excluded by .dockerignore")
            else:
                ok(f"Dockerfile: COPY {source}")
    for needed in ["target", "node_modules", "tests/artifacts", ".git"]:
        if not dockerignore_excludes(ignore, needed):
            fail(f".dockerignore does not exclude {needed}")
    for needle in ['HEALTHCHECK', 'TICKERFEED_BIND=0.0.0.0:8080', 'EXPOSE 8080', 'USER ', 'debian:bookworm-slim']:
        if needle not in dockerfile:
            fail(f"Dockerfile: no {needle!r}")

    # Grafana: provisioning ⇄ mounts ⇄ dashboard.
    grafana = services.get("grafana", {})
    env = grafana.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    for key, value in {"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"}.items():
        if str(env.get(key)) != value:
            fail(f"compose: grafana {key}={env.get(key)!r}, expected {value!r}")
    grafana_mounts = {target: source for (svc, target), source in mounts.items() if svc == "grafana"}

    def host_path(container_path):
        """The host file behind a path inside the grafana container, via its bind mounts."""
        for target, source in sorted(grafana_mounts.items(), key=lambda kv: -len(kv[0])):
            if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
                return os.path.join(source, os.path.relpath(container_path, target)) if container_path != target else source
        return None

    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    dashboard_file = os.path.join(repo, "dashboards/grafana/tickerfeed.json")
    if home:
        source = host_path(home)
        if not source or os.path.realpath(source) != os.path.realpath(dashboard_file):
            fail(f"grafana: home dashboard {home} is not the mounted dashboards/grafana/tickerfeed.json (host: {source})")
        else:
            ok(f"grafana: home dashboard {home}")
    ds_files = [k for k in data if k.endswith("provisioning/datasources/prometheus.yml")]
    dash_files = [k for k in data if k.endswith("provisioning/dashboards/tickerfeed.yml")]
    if not ds_files or not dash_files:
        fail("grafana: provisioning files missing")
        return
    for prov_dir in ["/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"]:
        if host_path(prov_dir) is None:
            fail(f"grafana: {prov_dir} is not mounted")
    datasources = data[ds_files[0]]["datasources"]
    uids = {d.get("uid") for d in datasources}
    prom_ds = [d for d in datasources if d.get("type") == "prometheus"]
    if not prom_ds or prom_ds[0].get("url") != "http://prometheus:9090":
        fail(f"grafana: datasource url is not http://prometheus:9090: {prom_ds}")
    dashboard = json.load(open(dashboard_file))
    used = set()

    def walk(node):
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and ds.get("type") == "prometheus":
                used.add(ds.get("uid"))
            elif isinstance(ds, str):
                used.add(ds)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    if not used or not used <= uids:
        fail(f"grafana: dashboard datasource uids {sorted(map(str, used))} not all provisioned ({sorted(uids)})")
    else:
        ok(f"grafana: dashboard uses datasource uid(s) {sorted(used)}, provisioned")
    if "DS_PROMETHEUS" in json.dumps(dashboard):
        fail("grafana: dashboard references ${DS_PROMETHEUS} (an export placeholder that provisioning does not fill)")
    names = [v["name"] for v in dashboard.get("templating", {}).get("list", [])]
    if "instance" not in names:
        fail("grafana: dashboard has no instance variable")
    for provider in data[dash_files[0]]["providers"]:
        path = (provider.get("options", {}).get("path") or "").rstrip("/")
        source = host_path(path) if path else None
        # The JSON files Grafana finds there: a mounted directory's, or files mounted into it.
        found = []
        if source and os.path.isdir(source):
            found = [os.path.join(source, f) for f in os.listdir(source) if f.endswith(".json")]
        found += [s for t, s in grafana_mounts.items() if t.startswith(path + "/") and t.endswith(".json") and os.path.isfile(s)]
        if not path or not found:
            fail(f"grafana: dashboard provider path {path!r} holds no mounted dashboard")
        elif os.path.realpath(dashboard_file) not in {os.path.realpath(f) for f in found}:
            fail(f"grafana: dashboard provider path {path} does not hold dashboards/grafana/tickerfeed.json")
        else:
            ok(f"grafana: dashboard provider reads {path}: {', '.join(os.path.relpath(f, repo) for f in found)}")
    provider_paths = [p.get("options", {}).get("path", "") for p in data[dash_files[0]]["providers"]]
    if home and not any(home.startswith(p.rstrip("/") + "/") for p in provider_paths):
        fail(f"grafana: home dashboard {home} is outside the provisioned dashboard paths {provider_paths}")

    # Prometheus: scrapes the compose services; its rule file is mounted beside it.
    prom_files = [k for k in data if k.endswith("dashboards/prometheus/prometheus.yml")]
    prom = data[prom_files[0]]
    targets = {t for job in prom.get("scrape_configs", []) for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
    for want in ["tickerfeed:8080", "tickerfeed-replay:8080"]:
        if want not in targets:
            fail(f"prometheus.yml: does not scrape {want}")
    for job in prom.get("scrape_configs", []):
        if any(t.startswith("tickerfeed") for sc in job.get("static_configs", []) for t in sc.get("targets", [])):
            interval = job.get("scrape_interval", prom.get("global", {}).get("scrape_interval"))
            if interval != "5s":
                fail(f"prometheus.yml: job {job['job_name']} scrapes every {interval}, expected 5s")
    # The scale profile's Prometheus scrapes every tickerfeed node of the profile, as job
    # "tickerfeed" (so alerts.yml applies), with the same alerts mounted beside it.
    scale_files = [k for k in data if k.endswith("dashboards/prometheus/prometheus-scale.yml")]
    if scale_files:
        scale = data[scale_files[0]]
        scale_targets = {t for job in scale.get("scrape_configs", []) if job.get("job_name") == "tickerfeed"
                         for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
        nodes = {f"{name}:8080" for name, svc in services.items()
                 if "scale" in (svc.get("profiles") or []) and str(svc.get("image", "")).startswith("tickerfeed")}
        if not nodes:
            fail("compose: the scale profile has no tickerfeed node")
        elif scale_targets != nodes:
            fail(f"prometheus-scale.yml: job tickerfeed scrapes {sorted(scale_targets)}, the scale profile's nodes are {sorted(nodes)}")
        else:
            ok(f"prometheus-scale.yml scrapes the scale profile's {len(nodes)} nodes as job tickerfeed")
        scale_mounts = {target: source for (svc, target), source in mounts.items() if svc == "prometheus-scale"}
        for want in ("prometheus-scale.yml", "alerts.yml"):
            if not any(source.endswith(want) for source in scale_mounts.values()):
                fail(f"compose: prometheus-scale does not mount {want}")
    prom_mounts = {target: source for (svc, target), source in mounts.items() if svc == "prometheus"}
    config_target = next((t for t, s in prom_mounts.items() if s.endswith("prometheus.yml")), None)
    if not config_target:
        fail("compose: prometheus.yml is not mounted into the prometheus service")
    else:
        for rule_file in prom.get("rule_files", []):
            target = os.path.normpath(os.path.join(os.path.dirname(config_target), rule_file))
            if target not in prom_mounts:
                fail(f"compose: rule file {rule_file} (at {target} in the container) is not mounted")
            else:
                ok(f"prometheus: rule file {target} mounted from {os.path.relpath(prom_mounts[target], repo)}")
        command = services["prometheus"].get("command") or []
        if isinstance(command, str):
            command = command.split()
        if f"--config.file={config_target}" not in command and config_target != "/etc/prometheus/prometheus.yml":
            fail(f"compose: prometheus does not load {config_target}")

    # The process_* families have the standard unprefixed names, which every exporter uses, and
    # every target has an `up` (Prometheus's own self-scrape is among the compose stack's
    # targets): a query of them selects the tickerfeed job, or it mixes in other processes.
    alert_files = [k for k in data if k.endswith("dashboards/prometheus/alerts.yml")]
    rules = [r for g in (data[alert_files[0]] or {}).get("groups", []) for r in g.get("rules", [])] if alert_files else []
    queries = [(f"dashboard: {title}", expr) for title, _, expr in dashboard_targets(dashboard)]
    queries += [(f"alerts.yml: {r.get('alert') or r.get('record')}", str(r.get("expr", ""))) for r in rules]
    process_queries = 0
    for where, expr in queries:
        for selector in PROCESS_SELECTOR.finditer(expr):
            process_queries += 1
            if 'job="tickerfeed"' not in (selector.group(2) or ""):
                fail(f"{where}: {selector.group(0)} does not select job=\"tickerfeed\" (process_* and up are shared by every exporter)")
    if process_queries:
        ok(f"{process_queries} process_* and up selectors in the dashboard and alerts select the tickerfeed job")


# A selector of a process_* family (not tickerfeed_process_*), with its label matchers if any.
# process_* and up: names every scraped target has.
PROCESS_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(process_[A-Za-z0-9_]+|up)(\{[^}]*\})?(?![A-Za-z0-9_(])")


# --------------------------------------------------------------------------------------------
# metrics: families, types and pre-initialised labels in a real scrape
# --------------------------------------------------------------------------------------------

# The standard process families, under the unprefixed names every Prometheus client library
# exports (stock dashboards and alerts query them). Every other family has the tickerfeed_ prefix.
PROCESS_FAMILIES = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "process_threads": "gauge",
}
EXPECTED = {
    "tickerfeed_build_info": "gauge",
    "tickerfeed_connections": "gauge",
    "tickerfeed_connections_opened_total": "counter",
    "tickerfeed_client_map_entries": "gauge",
    "tickerfeed_disconnects_total": "counter",
    "tickerfeed_faults_injected_total": "counter",
    "tickerfeed_subscriptions": "gauge",
    "tickerfeed_subscribed_symbols": "gauge",
    "tickerfeed_bus_connected": "gauge",
    "tickerfeed_bus_reconnects_total": "counter",
    "tickerfeed_bus_seq_gaps_total": "counter",
    "tickerfeed_bus_conflated_total": "counter",
    "tickerfeed_bus_duplicate_publishers_total": "counter",
    "tickerfeed_bus_feed_restarts_total": "counter",
    "tickerfeed_quotes_published_total": "counter",
    "tickerfeed_quotes_delivered_total": "counter",
    "tickerfeed_quotes_conflated_total": "counter",
    "tickerfeed_frames_sent_total": "counter",
    "tickerfeed_sent_bytes_total": "counter",
    "tickerfeed_client_messages_total": "counter",
    "tickerfeed_client_errors_total": "counter",
    "tickerfeed_delivery_latency_seconds": "histogram",
    "tickerfeed_frame_quotes": "histogram",
    "tickerfeed_feed_state": "gauge",
    "tickerfeed_feed_rows_skipped_total": "counter",
    "tickerfeed_feed_lag_seconds": "gauge",
    "tickerfeed_feed_speed": "gauge",
    "tickerfeed_http_requests_total": "counter",
    "tickerfeed_http_request_duration_seconds": "histogram",
    **PROCESS_FAMILIES,
}
LABEL_SETS = {
    ("tickerfeed_disconnects_total", "reason"): {"client_close", "slow_consumer", "idle_timeout", "protocol_error", "limit", "shutdown", "refused", "token_expired", "rate_limit_abuse", "fault"},
    ("tickerfeed_faults_injected_total", "kind"): {"disconnect", "stall", "delay", "gap", "duplicate", "feed_stall", "reject_connect"},
    ("tickerfeed_client_messages_total", "op"): {"subscribe", "unsubscribe", "list", "ping", "invalid"},
    ("tickerfeed_client_errors_total", "code"): {"bad_request", "unknown_op", "too_many_symbols", "rate_limited", "unknown_symbol", "invalid_symbol", "not_entitled", "token_expired"},
    ("tickerfeed_feed_state", "state"): {"starting", "running", "paused", "finished"},
    ("tickerfeed_connections", "transport"): {"websocket", "sse"},
    ("tickerfeed_client_map_entries", "map"): {"connections", "client_addresses", "socketio_sids", "bus_registrations", "bus_after_dispatch",
                                               "topic_watchers", "feed_event_receivers", "shutdown_watchers"},
}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if not m:
                fail(f"unparsable sample line: {line!r}")
                continue
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return types, samples


def check_scrape(label, path, feeds, replay_feeds):
    types, samples = parse_exposition(open(path).read())
    for name, kind in EXPECTED.items():
        if name not in types:
            fail(f"{label}: metric family {name} missing")
        elif types[name] != kind:
            fail(f"{label}: {name} is a {types[name]}, expected a {kind}")
    for name in sorted(types):
        if name.startswith("tickerfeed_process_"):
            fail(f"{label}: {name}: the process families have their standard unprefixed names")
        elif not name.startswith("tickerfeed_") and name not in PROCESS_FAMILIES:
            fail(f"{label}: {name} lacks the tickerfeed_ prefix (only the standard process families are unprefixed)")
    extra = sorted(set(types) - set(EXPECTED))
    if extra:
        print(f"note: {label}: further families: {', '.join(extra)}")

    def values(name, key, **match):
        return {s[1].get(key) for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in match.items())}

    for (name, key), want in LABEL_SETS.items():
        have = values(name, key)
        if not want <= have:
            fail(f"{label}: {name}{{{key}}} lacks {sorted(want - have)} (has {sorted(map(str, have))})")
    for feed in feeds:
        for name in ["tickerfeed_quotes_published_total", "tickerfeed_feed_lag_seconds", "tickerfeed_feed_speed", "tickerfeed_feed_rows_skipped_total"]:
            if feed not in values(name, "feed"):
                fail(f"{label}: {name}{{feed=\"{feed}\"}} missing")
        states = {s[1]["state"]: s[2] for s in samples if s[0] == "tickerfeed_feed_state" and s[1].get("feed") == feed}
        if sum(states.values()) != 1:
            fail(f"{label}: feed {feed} is not in exactly one state: {states}")
    have_clock = values("tickerfeed_feed_replay_clock_seconds", "feed") - {None}
    if have_clock != set(replay_feeds):
        fail(f"{label}: tickerfeed_feed_replay_clock_seconds feeds {sorted(have_clock)}, expected {sorted(replay_feeds)}")
    build = [s for s in samples if s[0] == "tickerfeed_build_info"]
    if len(build) != 1 or build[0][2] != 1 or not {"version", "commit"} <= set(build[0][1]):
        fail(f"{label}: tickerfeed_build_info: {build}")
    if not FAILURES:
        ok(f"{label}: {len(types)} families, {len(samples)} samples, expected names, types and labels present")


def cmd_metrics(args):
    check_scrape("sim server /metrics", args.sim, ["sim"], [])
    check_scrape("replay server /metrics", args.replay, ["sim", "history"], ["history"])


# --------------------------------------------------------------------------------------------
# live: a real Prometheus scraping both servers
# --------------------------------------------------------------------------------------------

# Alerts whose result is empty while the system is healthy, with why, and a query of the data
# they are built on that must return a result (so an empty alert means "healthy", not "no data").
HEALTHY_EMPTY = {
    "TickerfeedDown": ("empty while every target is up (healthy)", 'up{job="tickerfeed"}'),
    "TickerfeedBusDisconnected": ("empty while every node reaches its bus (healthy; always 1 on the memory bus)",
                                  'tickerfeed_bus_connected'),
    "TickerfeedFeedStalled": ("empty while every running feed publishes (healthy)",
                              'sum by (instance, feed) (rate(tickerfeed_quotes_published_total[5m])) and on (instance, feed) (max by (instance, feed) (tickerfeed_feed_state{state="running"}) == 1)'),
    "TickerfeedDeliveryLatencyHigh": ("empty while p99 delivery latency is under 0.25 s (healthy on loopback)",
                                      'histogram_quantile(0.99, sum by (instance, le) (rate(tickerfeed_delivery_latency_seconds_bucket[5m])))'),
}
# Alerts the test provokes on purpose: stalled clients are disconnected as slow consumers.
PROVOKED = {"TickerfeedSlowConsumersRising"}


class Prom:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def get(self, path, **params):
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}: {body[:200]}"}

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)

    def vector(self, expr):
        answer = self.query(expr)
        if answer.get("status") != "success":
            raise RuntimeError(f"{expr}: {answer.get('error')}")
        return answer["data"]["result"]


def poll(what, deadline_s, probe, interval=0.25):
    """Calls probe() until it returns a true value or deadline_s pass; returns the last value."""
    deadline = time.monotonic() + deadline_s
    started = time.monotonic()
    value = None
    while True:
        try:
            value = probe()
        except Exception as e:  # noqa: BLE001 - reported at the deadline
            value = None
            last_error = e
        if value:
            ok(f"{what} (after {time.monotonic() - started:.1f} s)")
            return value
        if time.monotonic() >= deadline:
            extra = f": {last_error}" if "last_error" in locals() else ""
            fail(f"{what}: not within {deadline_s} s{extra}")
            return value
        time.sleep(interval)


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def substitute(expr, values):
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        unknown.append(name)
        return m.group(0)

    return VAR.sub(repl, expr), unknown


def dashboard_targets(dashboard):
    """(panel title, refId, expr) of every target of every panel, rows' nested panels too."""
    found = []

    def walk(panels, path=""):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", "?"), target.get("refId", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            found.append((f"variable ${variable['name']}", "-", text))
    return found


def finite_values(result):
    values = []
    for series in result:
        if "value" in series:
            values.append(float(series["value"][1]))
    return [v for v in values if math.isfinite(v)]


def cmd_ready(args):
    """Before any load: both targets up with a few samples, so every counter's rise is seen."""
    prom = Prom(args.prom)
    instances = {urllib.parse.urlparse(u).netloc for u in (args.sim, args.replay)}

    def scraped():
        result = prom.vector('count_over_time(tickerfeed_disconnects_total{job="tickerfeed",reason="slow_consumer"}[1m]) >= 3')
        return instances <= {s["metric"].get("instance") for s in result}

    poll("Prometheus has ≥ 3 scrapes of both servers before the load starts", 30, scraped)


def cmd_live(args):
    prom = Prom(args.prom)
    os.makedirs(args.artifacts, exist_ok=True)
    results = {}
    sim_instance = urllib.parse.urlparse(args.sim).netloc
    replay_instance = urllib.parse.urlparse(args.replay).netloc

    # 1. Both targets up.
    def targets_up():
        active = prom.get("/api/v1/targets")["data"]["activeTargets"]
        up = {t["labels"]["instance"] for t in active if t["health"] == "up" and t["labels"].get("job") == "tickerfeed"}
        return {sim_instance, replay_instance} <= up and active

    active = poll("both tickerfeed targets are up", 20, targets_up)
    results["targets"] = active

    # 2. Enough samples for every rate() window, with load running: per instance, delivered
    #    quotes rising over the rate interval and the stalled clients' slow_consumer disconnects.
    rate_interval = args.rate_interval
    both = lambda result: {s["metric"].get("instance") for s in result} >= {sim_instance, replay_instance}  # noqa: E731
    poll(f"≥ 4 scrapes in the last {rate_interval} of both servers",
         30, lambda: both(prom.vector(f'count_over_time(tickerfeed_quotes_delivered_total[{rate_interval}]) >= 4')))
    poll("quotes delivered (rate > 0) on both servers",
         30, lambda: both(prom.vector(f'rate(tickerfeed_quotes_delivered_total[{rate_interval}]) > 0')))
    poll("quotes published by the history replay feed",
         30, lambda: prom.vector(f'rate(tickerfeed_quotes_published_total{{feed="history"}}[{rate_interval}]) > 0'))
    poll("slow_consumer disconnects on both servers (stalled clients, --slow-consumer-timeout 1)",
         30, lambda: both(prom.vector('tickerfeed_disconnects_total{reason="slow_consumer"} > 0')))

    # 3. Pause and resume the replay feed over REST; Prometheus sees both states.
    control = f"{args.replay}/api/feeds/history/control"
    for action, state in [("pause", "paused"), ("resume", "running")]:
        status, body = post_json(control, {"action": action})
        if status != 200:
            fail(f"POST {control} {action}: HTTP {status}: {body}")
            continue
        ok(f"POST /api/feeds/history/control {{\"action\":\"{action}\"}} → 200")
        poll(f"Prometheus sees feed history {state}", 15,
             lambda state=state: prom.vector(f'tickerfeed_feed_state{{instance="{replay_instance}",feed="history",state="{state}"}} == 1'))
    seen = prom.vector(f'max_over_time(tickerfeed_feed_state{{instance="{replay_instance}",feed="history",state="paused"}}[1m])')
    if not seen or float(seen[0]["value"][1]) != 1:
        fail(f"the pause is not in the history of tickerfeed_feed_state: {seen}")

    # 4. The instance variable lists both servers.
    values = prom.get("/api/v1/label/instance/values", **{"match[]": "tickerfeed_build_info"})
    if not {sim_instance, replay_instance} <= set(values.get("data", [])):
        fail(f"label_values(tickerfeed_build_info, instance) = {values.get('data')}, expected both servers")
    else:
        ok(f"dashboard variable $instance: {values['data']}")

    # 5. Every dashboard expression parses and returns data.
    dashboard = json.load(open(args.dashboard))
    variables = {"instance": ".*", "__rate_interval": rate_interval, "__interval": "1s", "__range": "1m",
                 "__interval_ms": "1000", "__range_s": "60"}
    queries = []
    count = 0
    for title, ref, expr in dashboard_targets(dashboard):
        count += 1
        if title.startswith("variable "):
            m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", expr)
            if not m:
                fail(f"{title}: unsupported variable query {expr!r}")
            continue
        concrete, unknown = substitute(expr, variables)
        entry = {"source": "dashboard", "panel": title, "refId": ref, "expr": expr, "query": concrete}
        queries.append(entry)
        if unknown:
            fail(f"dashboard panel {title!r} {ref}: unknown template variable(s) {unknown}")
            continue
        answer = prom.query(concrete)
        entry["answer"] = answer
        if answer.get("status") != "success":
            fail(f"dashboard panel {title!r} {ref}: {answer.get('errorType')}: {answer.get('error')}\n    {concrete}")
            continue
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            result = [{"value": result}]
        finite = finite_values(result)
        if not result:
            fail(f"dashboard panel {title!r} {ref}: empty result\n    {concrete}")
        elif not finite:
            fail(f"dashboard panel {title!r} {ref}: no finite value in {len(result)} series (all NaN/Inf)\n    {concrete}")
        else:
            ok(f"dashboard {title!r} {ref}: {len(result)} series, e.g. {finite[0]:.6g}")
    if count < 10:
        fail(f"only {count} expressions found in the dashboard")

    # 6. Every alert (from the rules Prometheus loaded from alerts.yml) evaluates cleanly.
    def rules():
        answer = prom.get("/api/v1/rules")
        return [r for g in answer["data"]["groups"] for r in g["rules"]]

    loaded = rules()
    want_names = set(json.load(open(args.alerts_json))) if args.alerts_json else set()
    names = {r["name"] for r in loaded}
    if want_names and names != want_names:
        fail(f"Prometheus loaded rules {sorted(names)}, alerts.yml has {sorted(want_names)}")
    for name in sorted(set(HEALTHY_EMPTY) | PROVOKED):
        if name not in names:
            fail(f"alert {name} is listed in check.py but not in alerts.yml")
    for rule in loaded:
        name, expr = rule["name"], rule["query"]
        entry = {"source": "alerts.yml", "alert": name, "expr": expr, "query": expr}
        queries.append(entry)
        if rule.get("type") == "alerting":
            if not rule.get("duration"):
                fail(f"alert {name}: no 'for'")
            if not rule.get("labels", {}).get("severity"):
                fail(f"alert {name}: no severity label")
            if not {"summary", "description"} <= set(rule.get("annotations", {})):
                fail(f"alert {name}: needs summary and description annotations")
        answer = prom.query(expr)
        entry["answer"] = answer
        if answer.get("status") != "success":
            fail(f"alert {name}: {answer.get('errorType')}: {answer.get('error')}")
            continue
        result = answer["data"]["result"]
        if name in HEALTHY_EMPTY:
            reason, data_expr = HEALTHY_EMPTY[name]
            data = prom.vector(data_expr)
            entry["data_query"], entry["data_result"] = data_expr, data
            if result:
                fail(f"alert {name} would fire in a healthy test run: {result}")
            elif not finite_values(data):
                fail(f"alert {name}: the data it watches is missing: {data_expr} → {data}")
            else:
                ok(f"alert {name}: {reason}; its data query returns {len(data)} series")
        elif not result:
            fail(f"alert {name}: empty result\n    {expr}")
        else:
            ok(f"alert {name}: {len(result)} series ({', '.join(s['metric'].get('instance', '?') for s in result)})")

    # 7. Rule evaluation: healthy, and the provoked alert pending (or firing).
    for rule in rules():
        if rule.get("health") != "ok":
            fail(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    for name in sorted(PROVOKED):
        poll(f"alert {name} is pending or firing", 20,
             lambda name=name: any(r["name"] == name and r.get("state") in ("pending", "firing") for r in rules()))
    for rule in rules():
        if rule["name"] in HEALTHY_EMPTY and rule.get("state") != "inactive":
            fail(f"alert {rule['name']} is {rule.get('state')} in a healthy run")
    results["rules"] = rules()
    results["queries"] = queries
    with open(os.path.join(args.artifacts, "prometheus-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    ok(f"{len(queries)} expressions checked ({sum(1 for q in queries if q['source'] == 'dashboard')} dashboard, "
       f"{sum(1 for q in queries if q['source'] == 'alerts.yml')} alert)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("static")
    p.add_argument("--yaml-json", required=True)
    p.add_argument("--repo", default=".")
    p = sub.add_parser("metrics")
    p.add_argument("--sim", required=True)
    p.add_argument("--replay", required=True)
    p = sub.add_parser("ready")
    p.add_argument("--prom", required=True)
    p.add_argument("--sim", required=True)
    p.add_argument("--replay", required=True)
    p = sub.add_parser("live")
    p.add_argument("--prom", required=True)
    p.add_argument("--sim", required=True, help="base URL of the sim-only server")
    p.add_argument("--replay", required=True, help="base URL of the sim + replay server")
    p.add_argument("--dashboard", required=True)
    p.add_argument("--alerts-json", help="JSON list of the alert names in alerts.yml")
    p.add_argument("--artifacts", required=True)
    p.add_argument("--rate-interval", default="10s", help="value of $__rate_interval")
    args = parser.parse_args()
    {"static": cmd_static, "metrics": cmd_metrics, "ready": cmd_ready, "live": cmd_live}[args.command](args)
    finish()


if __name__ == "__main__":
    main()
