#!/usr/bin/env python3
"""Unit tests of the benchmark driver's own logic (tests/bench/bench.py): parsing of `ss` and
/proc, the figures derived from loadgen reports, medians, target verdicts and the outputs.
No server, no network: `python3 tests/bench/test_bench.py` runs in a fraction of a second and
is part of tests/run.sh, next to the bench smoke run that exercises the processes."""

import contextlib
import io
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def report(**over):
    """A minimal loadgen JSON report (the fields bench.metrics_of reads)."""
    r = {
        "ok": True, "failures": [], "warnings": [],
        "measured": {"quotes_per_s": 1000.0, "frames_per_s": 100.0, "quotes_per_frame": 10.0,
                     "mb_per_s": 1.0, "quotes_per_server_cpu_s": 5000.0},
        "clients": {"connected": 100, "failed": 0, "disconnected": 0, "delivering": 100,
                    "stall_connected": 0},
        "server_rss_mib": {"before": 10.0, "start": 20.0, "end": 20.0, "measured_max": 21.0,
                           "after_settle": 20.5},
        "latency_ms": {"samples": 5, "p50": 1.0, "p99": 2.0, "p999": 3.0},
        "latency_throttled_ms": {"samples": 5, "p50": 1.0, "p99": 4.0, "p999": 5.0},
        "staleness_ms": {"samples": 5, "p50": 100.0, "p99": 205.0, "p999": 209.0},
        "server": {"cpu_pct": 30.0},
        "messages": {"ordering_errors": 0},
        "loadgen": {"cpu_pct_max_process": 40.0, "client_bound": False},
        "churn": None,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(r.get(k), dict):
            r[k] = {**r[k], **v}
        else:
            r[k] = v
    return r


def run_of(scenario, server, metrics, rnd=1):
    return {"scenario": scenario, "server": server, "round": rnd, "metrics": metrics}


class Parsing(unittest.TestCase):
    def test_ss_send_queues(self):
        out = ("0      65536  127.0.0.1:9001  127.0.0.1:40000\n"
               "0      0      127.0.0.1:9001  127.0.0.1:40002 \n"
               "garbage line\n"
               "12     800    [::1]:9001      [::1]:4\n")
        self.assertEqual(bench.parse_ss_send_queues(out), [65536, 0, 800])
        self.assertEqual(bench.parse_ss_send_queues(""), [])

    def test_cpu_seconds_of_this_process(self):
        a = bench.cpu_seconds(os.getpid())
        sum(i * i for i in range(300_000))
        self.assertGreaterEqual(bench.cpu_seconds(os.getpid()), a)
        self.assertGreater(bench.rss_mib(os.getpid()), 1.0)
        self.assertIsNone(bench.rss_mib(2**22 + 12345))

    def test_symbols_in_order_of_first_appearance(self):
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "t.csv"
            f.write_text("timestamp,symbol,price\n1,msft,1\n2,AAPL,2\n3,MSFT,3\n4,S0102,4\n")
            self.assertEqual(bench.symbols_of(f), ["MSFT", "AAPL", "S0102"])


class Figures(unittest.TestCase):
    def setUp(self):
        self.sc = bench.scenarios(smoke=False)

    def test_idle_rss_per_connection(self):
        m = bench.metrics_of(self.sc["idle"], report(
            clients={"connected": 10_000}, server_rss_mib={"before": 30.0, "end": 170.0}))
        self.assertAlmostEqual(m["rss_per_conn_kib"], 140 * 1024 / 10_000)
        # With traffic: the ticker's connections, from before they connected to the window's end.
        m = bench.metrics_of(self.sc["ticker"], report(
            clients={"connected": 5_000}, server_rss_mib={"before": 30.0, "end": 110.0}))
        self.assertAlmostEqual(m["rss_per_conn_kib"], 80 * 1024 / 5_000)

    def test_drift_and_growth(self):
        m = bench.metrics_of(self.sc["churn"], report(
            server_rss_mib={"start": 100.0, "measured_max": 110.0, "after_settle": 103.0},
            churn={"attempted": 10, "ok": 9, "failed": 1, "failure_kinds": {"timeout": 1},
                   "attempted_per_s": 500.0}))
        self.assertAlmostEqual(m["rss_growth_pct"], 10.0)
        self.assertAlmostEqual(m["rss_drift_pct"], 3.0)
        self.assertEqual((m["churn_ok"], m["churn_failed"]), (9, 1))

    def test_sanity_catches_unusable_runs(self):
        sc = self.sc["firehose"]
        good = run_of("firehose", "ws", bench.metrics_of(sc, report(
            clients={"connected": sc.clients, "delivering": sc.clients})))
        self.assertEqual(bench.sanity_problems(sc, good), [])
        dead = run_of("firehose", "ws", bench.metrics_of(sc, report(
            measured={"quotes_per_s": 0.0}, clients={"connected": 10, "delivering": 0},
            failures=["3 of 13 client connections failed"])))
        problems = bench.sanity_problems(sc, dead)
        self.assertTrue(any("no quotes" in p for p in problems), problems)
        self.assertTrue(any("clients connected" in p for p in problems), problems)
        self.assertTrue(any(p.startswith("loadgen:") for p in problems), problems)

    def test_medians_per_scenario_and_server(self):
        runs = [run_of("firehose", "ws", {"quotes_per_server_cpu_s": v, "client_bound": b})
                for v, b in ((1.0, False), (5.0, True), (3.0, False))]
        runs.append(run_of("firehose", "ws", {"quotes_per_server_cpu_s": None, "client_bound": False}))
        med = bench.medians(runs)["firehose"]["ws"]
        self.assertEqual(med["quotes_per_server_cpu_s"], 3.0)
        self.assertEqual((med["runs"], med["client_bound_runs"]), (4, 1))

    def test_verdicts(self):
        self.assertEqual(bench.verdict_at_least(3.3, 3.0), ("met", "+10% margin"))
        self.assertEqual(bench.verdict_at_least(1.5, 3.0), ("**missed**", "50% short"))
        self.assertEqual(bench.verdict_at_most(18.0, 15.0), ("**missed**", "20% over"))
        self.assertEqual(bench.verdict_at_most(60.0, 50.0, points=True),
                         ("**missed**", "10.0 points over"))
        self.assertEqual(bench.verdict_at_most(None, 5.0)[0], "not measured")

    def test_targets_from_medians(self):
        def m(**kw):
            return kw
        med = {
            "firehose": {"tickerfeed": m(quotes_per_server_cpu_s=900.0),
                         "ws": m(quotes_per_server_cpu_s=300.0),
                         "uws": m(quotes_per_server_cpu_s=700.0)},
            "idle": {"tickerfeed": m(rss_per_conn_kib=14.0)},
            "ticker": {"tickerfeed": m(throttled_p99_ms=4.0, staleness_p99_ms=215.0,
                                       server_cpu_pct=40.0, rss_start_mib=100.0, rss_per_conn_kib=16.0)},
            "slow": {"tickerfeed": m(throttled_p99_ms=4.2, rss_growth_pct=1.0, sendq_max_kib=70.0,
                                     rss_start_mib=110.0)},
            "churn": {"tickerfeed": m(churn_failed=0, rss_drift_pct=-2.0)},
            "maxconn": {"tickerfeed": m(connected=19_000, delivering=18_000)},
        }
        verdicts = [(r["target"], r["verdict"]) for r in bench.targets(med, self.sc)]

        def by_prefix(prefix):
            return [v for t, v in verdicts if t.startswith(prefix)]

        self.assertEqual(by_prefix("firehose"), ["met", "**missed**"])  # 3.0× ws, 1.29× uws
        self.assertEqual(by_prefix("idle"), ["met"])
        # 16 KiB per connection with traffic > 15; staleness 215 > 210
        self.assertEqual(by_prefix("ticker"), ["**missed**", "met", "**missed**", "met"])
        self.assertIn("**missed**", by_prefix("stalled client: kernel"))
        self.assertEqual(by_prefix("stalled client: server RSS"), ["met"])  # 10 MiB / 500 = 20 KiB
        self.assertEqual(by_prefix("slow consumers"), ["met", "met"])  # +5% moved, +1% growth
        self.assertEqual(by_prefix("churn"), ["met", "met"])
        self.assertEqual(by_prefix("max connections"), ["**missed**"])  # 1,000 not delivering

    def test_targets_with_missing_scenarios_are_not_measured(self):
        rows = bench.targets({"firehose": {"tickerfeed": {"quotes_per_server_cpu_s": 1.0}}}, self.sc)
        self.assertTrue(all(r["verdict"] == "not measured" for r in rows), rows)
        self.assertTrue(any("10,000 connections" in r["target"] for r in rows), rows)

    def test_servers_start_paused_and_loadgen_resumes(self):
        cmd = bench.server_command("ws", 9000, 5000.0, True, Path("t.csv"))
        self.assertEqual(cmd[-3:], ["--rate", "5000", "--paused"])
        self.assertNotIn("--paused", bench.server_command("uws", 9000, 5000.0, False, Path("t.csv")))
        tf = bench.server_command("tickerfeed", 9000, 100_000.0, True, Path("t.csv"))
        self.assertEqual(tf[tf.index("--interval-ms") + 1], "0.01")
        self.assertIn(str(bench.TICKERFEED_MAX_CONNECTIONS), tf)
        # The SSE variant is the same server with the same command line.
        self.assertEqual(bench.server_command("tickerfeed-sse", 9000, 100_000.0, True, Path("t.csv")), tf)
        self.assertEqual(bench.process_of("tickerfeed-sse"), "tickerfeed")
        self.assertEqual(bench.process_of("uws"), "uws")
        # So is the Socket.IO variant.
        self.assertEqual(bench.server_command("tickerfeed-socketio", 9000, 100_000.0, True, Path("t.csv")), tf)
        self.assertEqual(bench.process_of("tickerfeed-socketio"), "tickerfeed")
        self.assertEqual(bench.server_command("socketio", 9000, 5000.0, True, Path("t.csv"))[1],
                         str(bench.PEERS / "socketio" / "server.mjs"))


class Variants(unittest.TestCase):
    def test_each_server_gets_its_protocol_and_url(self):
        sc = bench.scenarios(smoke=True)
        for name, s in sc.items():
            sse = bench.loadgen_args(s, "tickerfeed-sse")
            self.assertEqual(sse[-2:], ["--protocol", "sse"], name)
            # An event stream always starts with a snapshot: the loadgen refuses --no-snapshot.
            self.assertNotIn("--no-snapshot", sse, name)
            self.assertEqual([a for a in bench.loadgen_args(s, "tickerfeed") if a != "--no-snapshot"],
                             sse[:-2], f"{name}: otherwise the same load")
            self.assertEqual(bench.loadgen_args(s, "tickerfeed"), s.loadgen, name)
            self.assertEqual(bench.loadgen_args(s, "socketio")[-2:], ["--protocol", "socketio"], name)
            # tickerfeed over Socket.IO: exactly tickerfeed's load (--no-snapshot included), the
            # Node Socket.IO peer's protocol.
            self.assertEqual(bench.loadgen_args(s, "tickerfeed-socketio"), s.loadgen + ["--protocol", "socketio"], name)
            self.assertEqual(bench.loadgen_args(s, "tickerfeed-socketio"), bench.loadgen_args(s, "socketio"), name)
        self.assertIn("--no-snapshot", bench.loadgen_args(sc["idle"], "ws"))
        server = bench.Server("tickerfeed-sse", 9001, None, Path("x.log"))
        self.assertEqual(server.url(), "http://127.0.0.1:9001/sse")
        self.assertEqual(bench.Server("tickerfeed", 9001, None, Path("x.log")).url(), "ws://127.0.0.1:9001/ws")
        sio = "ws://127.0.0.1:9001/socket.io/?EIO=4&transport=websocket"
        self.assertEqual(bench.Server("tickerfeed-socketio", 9001, None, Path("x.log")).url(), sio)
        self.assertEqual(bench.Server("socketio", 9001, None, Path("x.log")).url(), sio)

    def test_the_variant_is_selectable(self):
        s = bench.parse_args(["--smoke", "--servers", "tickerfeed,tickerfeed-sse", "--only", "firehose"])
        self.assertEqual(s.servers, ["tickerfeed", "tickerfeed-sse"])
        s.out.rmdir()
        self.assertIn("tickerfeed-sse", bench.ALL_SERVERS)
        self.assertEqual(bench.SERVER_LABEL["tickerfeed-sse"], "tickerfeed SSE")
        s = bench.parse_args(["--smoke", "--servers", "tickerfeed-socketio,socketio", "--only", "firehose"])
        self.assertEqual(s.servers, ["tickerfeed-socketio", "socketio"])
        s.out.rmdir()
        self.assertIn("tickerfeed-socketio", bench.ALL_SERVERS)
        self.assertEqual(bench.SERVER_LABEL["tickerfeed-socketio"], "tickerfeed Socket.IO*")
        # Both speak Engine.IO: marked apart from the v1 servers, comparable with each other.
        self.assertEqual(bench.DIFFERENT_TRANSPORT, {"socketio", "tickerfeed-socketio"})
        for kind in bench.ALL_SERVERS:
            self.assertEqual(kind in bench.DIFFERENT_TRANSPORT, bench.SERVER_LABEL[kind].endswith("*"), kind)


class RedisVariant(unittest.TestCase):
    def test_the_gateway_and_the_feed_node_split_tickerfeeds_command_line(self):
        bus = "redis://127.0.0.1:6390"
        gateway = bench.server_command("tickerfeed-redis", 9000, 5000.0, True, Path("t.csv"), bus)
        self.assertEqual(gateway[gateway.index("--role") + 1], "gateway")
        self.assertEqual(gateway[gateway.index("--bus") + 1], bus)
        self.assertNotIn("--replay", gateway, "a gateway runs no feed")
        self.assertIn(str(bench.TICKERFEED_MAX_CONNECTIONS), gateway)
        feed = bench.feed_node_command(9001, 5000.0, Path("t.csv"), bus)
        tf = bench.server_command("tickerfeed", 9001, 5000.0, False, Path("t.csv"))
        self.assertEqual(feed, tf + ["--bus", bus, "--role", "feed"], "the feed node replays as tickerfeed does")
        self.assertNotIn("tickerfeed-redis", bench.DEFAULT_SERVERS)
        self.assertEqual(bench.process_of("tickerfeed-redis"), "tickerfeed-redis")

    def test_the_light_scenario_is_opt_in_and_the_tickers_load_for_fewer_clients(self):
        s = bench.parse_args(["--smoke"])
        s.out.rmdir()
        self.assertEqual(s.only, bench.DEFAULT_SCENARIOS)
        self.assertNotIn("light", s.only)
        self.assertNotIn("aligned", s.only)
        self.assertNotIn("aligned-slow", s.only)
        aligned = bench.scenarios(smoke=False)["aligned"].loadgen
        self.assertEqual([a for a in aligned if a != "--align"], bench.scenarios(smoke=False)["ticker"].loadgen,
                         "the ticker's load, aligned")
        sc = bench.scenarios(smoke=False)
        light, ticker = sc["light"].loadgen, sc["ticker"].loadgen
        self.assertEqual(light[light.index("--clients") + 1], "500")
        self.assertEqual(sc["light"].feed_rate, sc["ticker"].feed_rate)
        self.assertEqual(light[2:], ticker[2:], "otherwise the ticker's options")

    def test_capacity_on_paper(self):
        # 1 µs per quote with no gateway, 3 with one: at 100,000 quotes/s one Redis core has
        # 10 µs per quote, so 3.3 gateways if each costs all 3 µs, 4.5 if each adds 2.
        low, high = bench.redis_capacity(1.0, 3.0, 100_000.0, 1)
        self.assertAlmostEqual(low, 10 / 3)
        self.assertAlmostEqual(high, 4.5)
        low3, high3 = bench.redis_capacity(1.0, 3.0, 100_000.0, 3)
        self.assertAlmostEqual(low3, 10.0)
        self.assertAlmostEqual(high3, 14.5)
        # A difference within a tenth of the cost is noise: no high bound.
        self.assertIsNone(bench.redis_capacity(2.0, 2.1, 5000.0, 1)[1])
        self.assertIsNone(bench.redis_capacity(None, 2.0, 5000.0, 1))

    def test_the_section_compares_with_the_in_process_bus(self):
        data = {
            "scenarios": {"firehose": {"feed_rate": 100_000.0}},
            "feed_only_runs": [{"server": "tickerfeed-redis", "rate": 100_000.0, "redis_us_per_write": 1.0}],
            "medians": {"firehose": {
                "tickerfeed": {"quotes_per_server_cpu_s": 2_000_000.0, "latency_p99_ms": 3.0},
                "tickerfeed-redis": {"quotes_per_s": 90_000.0, "quotes_per_server_cpu_s": 1_500_000.0,
                                     "latency_p99_ms": 4.5, "redis_us_per_write": 3.0, "feed_merged_pct": 5.0,
                                     "redis_cpu_pct": 30.0, "feed_node_cpu_pct": 20.0}}},
        }
        text = "\n".join(bench.redis_section(data))
        self.assertIn("**0.75** (**missed**)", text)
        self.assertIn("3.00 ms → 4.50 ms", text)
        self.assertIn("3.00 / 1.00", text)
        self.assertIn("3–4 gateways on one Redis, 10–14 on a 3-shard cluster", text)
        self.assertEqual(bench.redis_section({**data, "medians": {"firehose": data["medians"]["firehose"] | {"tickerfeed-redis": {}}}}), [])


class ClientBound(unittest.TestCase):
    def test_latency_of_a_client_bound_median_is_not_the_servers(self):
        bound = {"runs": 3, "client_bound_runs": 2, "latency_p99_ms": 936.0, "throttled_p99_ms": 80.0}
        free = {"runs": 3, "client_bound_runs": 1, "latency_p99_ms": 12.0, "throttled_p99_ms": 2.5}
        ms = bench._ms("throttled_p99_ms")
        self.assertEqual(ms(bound, {}, "tickerfeed"), "(80.00 ms, client-bound)")
        self.assertEqual(ms(free, {}, "tickerfeed"), "2.50 ms")
        firehose = dict(bench.SCENARIO_TABLES["firehose"])["latency p50 / p99 / p99.9"]
        self.assertIn("client-bound)", firehose(bound, {}, "tickerfeed"))
        self.assertNotIn("client-bound", firehose(free, {}, "tickerfeed"))
        self.assertEqual(ms({"runs": 1, "client_bound_runs": 1}, {}, "x"), "—", "no figure stays no figure")


class Knee(unittest.TestCase):
    def search(self, true_knee, start=500, cap=19_000, step=50):
        probed = []

        def passes(n):
            probed.append(n)
            return n <= true_knee
        return bench.knee_search(passes, start, cap, step), probed

    def test_doubles_then_bisects_to_a_tenth(self):
        knee, probed = self.search(2_730)
        self.assertEqual(probed[:4], [500, 1_000, 2_000, 4_000])
        self.assertLessEqual(knee, 2_730)
        self.assertGreaterEqual(knee, 2_730 - max(50, knee // 10))
        self.assertLessEqual(len(probed), 9)

    def test_below_the_start_and_at_the_cap(self):
        knee, probed = self.search(120)
        self.assertEqual(probed[0], 500)
        self.assertTrue(70 <= knee <= 120, knee)
        self.assertEqual(self.search(0)[0], 0)
        knee, probed = self.search(50_000)
        self.assertEqual((knee, probed[-1]), (19_000, 19_000))

    def test_probe_scenario_takes_the_client_count(self):
        sc = bench.scenarios(smoke=False)
        probe = bench.with_clients(sc["knee"], 1_500)
        self.assertEqual(probe.loadgen[probe.loadgen.index("--clients") + 1], "1500")
        self.assertEqual(probe.clients, 1_500)
        self.assertNotIn("--align", probe.loadgen)
        self.assertEqual(sc["knee"].loadgen[sc["knee"].loadgen.index("--clients") + 1], "5000",
                         "the template is the ticker's, untouched")
        self.assertNotIn("knee", bench.DEFAULT_SCENARIOS)

    def test_target_and_table(self):
        sc = bench.scenarios(smoke=False)
        runs = [{"server": "tickerfeed", "round": r, "knee_clients": k, "capped": False,
                 "probes": [{"clients": k, "throttled_p99_ms": 4.0, "client_bound": False, "passed": True}]}
                for r, k in ((1, 3_000), (2, 3_400), (3, 3_200))]
        runs += [{"server": "uws", "round": 1, "knee_clients": 1_500, "capped": False, "probes": []}]
        med = {"knee": bench.knee_medians(runs)}
        self.assertEqual(med["knee"]["tickerfeed"]["knee_clients"], 3_200)
        rows = [r for r in bench.targets(med, sc) if r["target"].startswith("immediate ticker: the knee")]
        self.assertEqual((rows[0]["measured"], rows[0]["verdict"]), ("3,200 vs 1,500 clients: 2.13×", "met"))


class TradesVariant(unittest.TestCase):
    """tickerfeed-trades: tickerfeed's firehose with the clients on quotes and trades."""

    def test_the_same_server_and_load_plus_the_channels_in_the_firehose_only(self):
        sc = bench.scenarios(smoke=True)
        fire = sc["firehose"]
        self.assertEqual(bench.loadgen_args(fire, "tickerfeed-trades"),
                         bench.loadgen_args(fire, "tickerfeed") + ["--channels", "quotes,trades"])
        self.assertNotIn("--channels", bench.loadgen_args(fire, "tickerfeed"), "other runs unchanged")
        self.assertEqual(bench.process_of("tickerfeed-trades"), "tickerfeed")
        self.assertEqual(bench.server_command("tickerfeed-trades", 9000, 5000.0, True, Path("t.csv")),
                         bench.server_command("tickerfeed", 9000, 5000.0, True, Path("t.csv")))
        self.assertEqual(bench.Server("tickerfeed-trades", 9001, None, Path("x.log")).url(), "ws://127.0.0.1:9001/ws")
        self.assertEqual([n for n in bench.ALL_SCENARIOS if bench.runs_in("tickerfeed-trades", n)], ["firehose"])
        self.assertTrue(all(bench.runs_in("tickerfeed", n) for n in bench.ALL_SCENARIOS))
        self.assertNotIn("tickerfeed-trades", bench.DEFAULT_SERVERS)
        s = bench.parse_args(["--smoke", "--servers", "tickerfeed,tickerfeed-trades", "--only", "firehose"])
        self.assertEqual(s.servers, ["tickerfeed", "tickerfeed-trades"])
        s.out.rmdir()

    def metrics(self, trades: bool):
        fire = bench.scenarios(smoke=True)["firehose"]
        extra = {"trades_per_s": 9000.0, "trades_per_server_cpu_s": 12000.0, "trades_per_frame": 30.0,
                 "trades_lost_pct": 25.0} if trades else {"trades_per_s": 0.0, "trades_per_server_cpu_s": None}
        return bench.metrics_of(fire, report(
            measured={"quotes_per_server_cpu_s": 4000.0 if trades else 5000.0, **extra},
            clients={"connected": fire.clients, "delivering": fire.clients},
            messages={"ordering_errors": 0, "trade_order_errors": 0}))

    def test_figures_sanity_and_an_older_report(self):
        m = self.metrics(True)
        self.assertEqual((m["trades_per_server_cpu_s"], m["trades_lost_pct"], m["trade_order_errors"]), (12000.0, 25.0, 0))
        fire = bench.scenarios(smoke=True)["firehose"]
        self.assertEqual(bench.sanity_problems(fire, run_of("firehose", "tickerfeed-trades", m)), [])
        none = self.metrics(False)
        self.assertIn("no trades were delivered",
                      bench.sanity_problems(fire, run_of("firehose", "tickerfeed-trades", none)))
        self.assertEqual(bench.sanity_problems(fire, run_of("firehose", "tickerfeed", none)), [])
        # A report of a load generator without trades (the committed results): no figure, no error.
        old = bench.metrics_of(fire, report())
        self.assertEqual((old["trades_per_server_cpu_s"], old["trade_order_errors"]), (None, None))
        self.assertIn("trades", bench.summary_line(fire, m))
        self.assertNotIn("trades", bench.summary_line(fire, none))

    def test_the_firehose_table_shows_trades_beside_quotes(self):
        sc = bench.scenarios(smoke=True)
        runs = [run_of("firehose", "tickerfeed", self.metrics(False)),
                run_of("firehose", "tickerfeed-trades", self.metrics(True))]
        med = bench.medians(runs)
        data = Outputs().data()
        data.update(servers=["tickerfeed", "tickerfeed-trades"], medians=med, targets=bench.targets(med, sc),
                    scenarios={"firehose": data["scenarios"]["firehose"]})
        text = bench.markdown(data)
        fire = text.split("## 2. Firehose")[1].split("## ")[0]
        self.assertIn("| quotes per server CPU-s | trades per server CPU-s | trades/s | trades lost |", fire)
        self.assertIn("| tickerfeed, quotes + trades | 50 | 4,000 | 12,000 | 9,000 | 25.0% |", fire)
        self.assertIn("| tickerfeed | 50 | 5,000 | — | — | — |", fire)
        self.assertIn("tickerfeed, quotes + trades: **4,000** quotes and **12,000** trades per server CPU-second, "
                      "against 5,000 quotes with quotes alone (0.80×); 25.0% of the trades", fire)
        feed_table = text.split("## Feed alone")[1].split("## ")[0]
        self.assertEqual(feed_table.count("| tickerfeed"), 1, "tickerfeed's process, measured once")
        # Without trades anywhere, the table is as it was.
        plain = bench.medians(runs[:1])
        data.update(medians=plain, targets=bench.targets(plain, sc))
        self.assertNotIn("trades", bench.markdown(data))
        svg = bench.svg_chart(med, ["tickerfeed", "tickerfeed-trades"], smoke=False)
        root = ET.fromstring(svg)
        self.assertEqual(svg.count("tickerfeed, quotes + trades"), 1, "in the firehose panel only")
        self.assertEqual(len([e for e in root.iter() if e.tag.endswith("rect")]), 1 + 2)


class Outputs(unittest.TestCase):
    def data(self):
        sc = bench.scenarios(smoke=True)
        runs = []
        for name, s in sc.items():
            if name == "knee":  # a search of several runs, kept apart (knee_runs)
                continue
            for server in ("tickerfeed", "tickerfeed-sse", "tickerfeed-socketio", "ws", "socketio"):
                rep = report(clients={"connected": s.clients - s.stall,
                                      "delivering": s.clients - s.stall,
                                      "stall_connected": s.stall})
                runs.append(run_of(name, server, bench.metrics_of(s, rep)))
        med = bench.medians(runs)
        med["knee"] = bench.knee_medians([{"server": "tickerfeed", "round": 1, "knee_clients": 40, "capped": False,
                                           "probes": [{"clients": 40, "throttled_p99_ms": 1.0,
                                                       "client_bound": False, "passed": True}]}])
        return {
            "smoke": True, "runs": 1,
            "servers": ["tickerfeed", "tickerfeed-sse", "tickerfeed-socketio", "ws", "uws", "socketio"],
            "machine": {"command": "tests/bench/run.sh --smoke", "date": "today", "wall_minutes": 1.0,
                        "commit": "abc", "dirty": False, "cpu_model": "CPU", "cores": 2,
                        "kernel": "6", "rustc": "rustc", "node": "v20", "pinning": "pinned."},
            "feed_rates": [5000.0, 20000.0],
            "scenarios": {k: {"title": s.title, "description": bench.describe(s)} for k, s in sc.items()},
            "feed_only_cpu_pct": {"tickerfeed": {"5000": 5.0}},
            "medians": med, "targets": bench.targets(med, sc), "problems": ["x / y / round 1: z"],
        }

    def test_markdown_has_every_scenario_target_and_marks_socketio(self):
        text = bench.markdown(self.data())
        for title in ("1. Idle connections", "2. Firehose", "3. Ticker", "4. Slow consumers",
                      "5. Churn", "6. Max connections", "7. Ticker, light", "8. Ticker, aligned",
                      "10. Ticker, the knee", "Targets (issue 5 §3)", "Feed alone"):
            self.assertIn(f"## {title}", text)
        self.assertIn("| tickerfeed | 40 | 40 | 40: 1.00 ms ✓ |", text)
        self.assertIn("Socket.IO*", text)
        self.assertIn("tickerfeed / Node ws = **", text)
        self.assertIn("- x / y / round 1: z", text)
        # The SSE variant: a row in every scenario's table, its own ratio line, no feed-only row
        # of its own (it is tickerfeed's process).
        scenarios = len(bench.ALL_SCENARIOS) - 1  # the knee's table has tickerfeed's row only here
        self.assertEqual(text.count("| tickerfeed SSE |"), scenarios)
        self.assertIn("tickerfeed SSE / tickerfeed ws = **1.00**", text)
        self.assertIn("(issue 13: ≥ 0.8, met,", text)
        # The Socket.IO variant likewise, its ratio against the Node Socket.IO peer.
        self.assertEqual(text.count("| tickerfeed Socket.IO* |"), scenarios)
        self.assertEqual(text.count("| Socket.IO* |"), scenarios + 1)  # and the peer's feed-only row
        self.assertIn("tickerfeed Socket.IO / Node Socket.IO = **1.00**", text)
        self.assertIn("(target: ≥ 3×, **missed**, 67% short)", text)
        feed_table = text.split("## Feed alone")[1].split("## ")[0]
        self.assertIn("| tickerfeed |", feed_table)
        self.assertNotIn("SSE", feed_table)
        self.assertEqual(feed_table.count("| tickerfeed"), 1, "one feed-only row per server process")
        self.assertEqual(feed_table.count("| Socket.IO* |"), 1)
        for line in text.splitlines():  # missing values print as —, never as Python's None
            if line.startswith("|"):
                self.assertNotIn("None", line)
        self.assertIn("Smoke run", text)

    def test_sse_ratio_line(self):
        data = self.data()
        data["medians"]["firehose"]["tickerfeed-sse"]["quotes_per_server_cpu_s"] = 3500.0
        text = bench.markdown(data)
        self.assertIn("tickerfeed SSE / tickerfeed ws = **0.70**", text)
        self.assertIn("**missed**, 13% short", text)
        del data["medians"]["firehose"]["tickerfeed-sse"]
        self.assertNotIn("tickerfeed SSE / tickerfeed ws", bench.markdown(data))

    def test_socketio_ratio_line(self):
        data = self.data()
        data["medians"]["firehose"]["tickerfeed-socketio"]["quotes_per_server_cpu_s"] = 16000.0
        text = bench.markdown(data)
        self.assertIn("tickerfeed Socket.IO / Node Socket.IO = **3.20**", text)
        self.assertIn("(target: ≥ 3×, met, +7% margin)", text)
        del data["medians"]["firehose"]["socketio"]
        self.assertNotIn("tickerfeed Socket.IO / Node Socket.IO", bench.markdown(data))

    def test_svg_is_well_formed_with_missing_values(self):
        med = {"firehose": {"tickerfeed": {"quotes_per_server_cpu_s": 2.0e5},
                            "ws": {"quotes_per_server_cpu_s": 1.0e5}},
               "idle": {}, "ticker": {"uws": {"throttled_p99_ms": 3.0}}}
        svg = bench.svg_chart(med, ["tickerfeed", "ws", "uws", "socketio"], smoke=False)
        root = ET.fromstring(svg)
        self.assertTrue(root.tag.endswith("svg"))
        rects = [e for e in root.iter() if e.tag.endswith("rect")]
        self.assertEqual(len(rects), 1 + 3)  # background + three measured bars
        # The firehose panel comes first: tickerfeed's bar is twice Node ws's (200k vs 100k).
        tf_bar, ws_bar = (float(r.get("width")) for r in rects[1:3])
        self.assertAlmostEqual(tf_bar / ws_bar, 2.0, places=2)
        self.assertIn("not measured", svg)

    def test_render_recomputes_from_raw_reports(self):
        sc = bench.scenarios(smoke=True)
        raw = []
        for rnd, quotes in ((1, 1000.0), (2, 3000.0), (3, 2000.0)):
            rep = report(measured={"quotes_per_server_cpu_s": quotes},
                         clients={"connected": sc["firehose"].clients,
                                  "delivering": sc["firehose"].clients})
            # Stale metrics, as an older driver may have stored: derive must not trust them.
            raw.append({"scenario": "firehose", "server": "tickerfeed", "round": rnd,
                        "metrics": {"quotes_per_server_cpu_s": -1}, "report": rep})
        raw.append({"scenario": "firehose", "server": "ws", "round": 1, "metrics": {},
                    "report": report(measured={"quotes_per_s": 0.0})})
        data = self.data()
        data.update(raw_runs=raw, feed_only_runs=[{"server": "ws", "rate": 5000.0, "round": 1,
                                                   "cpu_pct": 7.0}])
        bench.derive(data)
        self.assertEqual(data["medians"]["firehose"]["tickerfeed"]["quotes_per_server_cpu_s"], 2000.0)
        self.assertEqual(data["feed_only_cpu_pct"], {"ws": {"5000": 7.0}})
        self.assertTrue(any("ws / round 1: no quotes" in p for p in data["problems"]), data["problems"])
        with tempfile.TemporaryDirectory() as d:
            out = Path(d)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                self.assertEqual(bench.write_outputs(data, out), 1)  # smoke + problems = failure
                first = (out / "results.md").read_text()
                again = bench.parse_args(["--render", str(out / "results.json")])
                self.assertEqual(again.out, out)
                self.assertEqual(bench.main(["--render", str(out / "results.json")]), 1)
            self.assertEqual((out / "results.md").read_text(), first)
            ET.fromstring((out / "results.svg").read_text())

    def test_smoke_never_writes_committed_results(self):
        usage = io.StringIO()
        with contextlib.redirect_stderr(usage), self.assertRaises(SystemExit):
            bench.parse_args(["--smoke", "--out", str(bench.COMMITTED_RESULTS)])
        self.assertIn("never writes", usage.getvalue())
        s = bench.parse_args(["--smoke"])
        self.assertNotEqual(s.out.resolve(), bench.COMMITTED_RESULTS.resolve())
        s.out.rmdir()
        with contextlib.redirect_stderr(usage), self.assertRaises(SystemExit):
            bench.parse_args(["--only", "bogus"])
        self.assertIn("unknown scenario 'bogus'", usage.getvalue())


if __name__ == "__main__":
    unittest.main(verbosity=1)
