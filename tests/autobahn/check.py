#!/usr/bin/env python3
"""Reads Autobahn|Testsuite's report (index.json) and fails naming every case not passed.

A case passes when its behavior and its behaviorClose are OK or INFORMATIONAL; UNIMPLEMENTED
is accepted only for the compression cases 12.* and 13.* (permessage-deflate, which the server
does not offer). --expect AGENT=N also fails when an agent ran another number of cases than N
(a spec that stopped selecting cases, or a run cut short, is not a pass).

An agent named with --protocol-v1 is /ws itself, which greets every client with protocol v1's
`welcome` and answers text with JSON replies, where Autobahn expects silence or an echo: its
cases are those whose every expected outcome holds no message (pings, pongs, the close and the
failures), and each is judged as Autobahn judges it (its events against each expected outcome,
in order) after the server's own protocol-v1 messages (text messages that are JSON objects with
a "type") are taken out of what it received. A case there that expects a message is an error in
the spec (it belongs on the echo route).

Usage: check.py index.json [--expect AGENT=N ...] [--protocol-v1 AGENT]
"""
import argparse
import collections
import json
import os
import sys

PASSING = {"OK", "INFORMATIONAL"}
COMPRESSION = ("12.", "13.")


def case_key(case_id):
    """Sorts 1.10 after 1.9."""
    return [int(part) if part.isdigit() else part for part in case_id.split(".")]


def allowed(case_id):
    return PASSING | {"UNIMPLEMENTED"} if case_id.startswith(COMPRESSION) else PASSING


def is_protocol_v1(event):
    """A text message from /ws's protocol v1 (Autobahn keeps the first bytes of long ones)."""
    return event[0] == "message" and not event[2] and event[1].startswith('{"type":')


def judge_protocol_v1(case_id, case):
    """Autobahn's verdict on a /ws case, without the server's protocol-v1 messages."""
    if any(event[0] == "message" for outcome in case["expected"].values() for event in outcome):
        raise SystemExit(f"case {case_id} expects a message: it needs the echo route, not /ws (fix fuzzingclient.json)")
    if case["behavior"] in ("INFORMATIONAL", "UNIMPLEMENTED"):
        return case["behavior"]
    received = [event for event in case["received"] if not is_protocol_v1(event)]
    for behavior, outcome in case["expected"].items():
        if received == outcome:
            return behavior
    return "FAILED"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index")
    parser.add_argument("--expect", action="append", default=[], metavar="AGENT=N")
    parser.add_argument("--protocol-v1", action="append", default=[], metavar="AGENT")
    args = parser.parse_args()
    with open(args.index) as f:
        report = json.load(f)
    outdir = os.path.dirname(os.path.abspath(args.index))
    failures = []
    for agent in sorted(report):
        cases = report[agent]
        verdicts = {}
        for case_id, result in cases.items():
            behavior = result["behavior"]
            if agent in args.protocol_v1:
                with open(os.path.join(outdir, result["reportfile"])) as f:
                    behavior = judge_protocol_v1(case_id, json.load(f))
            verdicts[case_id] = behavior
        counts = collections.Counter(verdicts.values())
        closes = collections.Counter(result["behaviorClose"] for result in cases.values())
        judged = " (protocol-v1 messages set aside)" if agent in args.protocol_v1 else ""
        print(f"{agent}: {len(cases)} cases; behavior{judged}: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
              + "; behaviorClose: " + ", ".join(f"{n} {b}" for b, n in sorted(closes.items())))
        for case_id in sorted(cases, key=case_key):
            result = cases[case_id]
            ok = allowed(case_id)
            if verdicts[case_id] not in ok or result["behaviorClose"] not in ok:
                failures.append(f"{agent} case {case_id}: behavior {verdicts[case_id]}, behaviorClose {result['behaviorClose']}, "
                                f"close code {result['remoteCloseCode']} (see {result['reportfile']})")
    for expectation in args.expect:
        agent, _, count = expectation.partition("=")
        ran = len(report.get(agent, {}))
        if ran != int(count):
            failures.append(f"{agent}: {ran} cases ran, the spec selects {count}")
    if failures:
        print(f"Autobahn|Testsuite: {len(failures)} failure(s):")
        for failure in failures:
            print("  " + failure)
        return 1
    print("Autobahn|Testsuite: every case OK or INFORMATIONAL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
