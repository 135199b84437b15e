#!/usr/bin/env python3
"""Where one client's write goes: a breakdown from the nodes' own instruments.

Run it against a cluster started by ./on.sh --no-bots (nothing else loading it):

    bench/one_client.py [--seconds 10] [--nodes 3]

It scrapes every node's /metrics, runs `bots load --clients 1 --mix put=100`, scrapes
again, and prints what each part of a write cost on average over that run, from the
differences of the histograms' sums and counts:

- the client's round trip (`bots load`'s mean; p50 too),
- at the node that received the request, from its arrival to its answer
  (`paxos_request_seconds`), split by whether that node led: a follower forwards the
  command to the leader and learns the decision from the votes,
- at the leader, phase 2: from its `Accept` broadcast to the decision applied
  (`paxos_phase2_seconds`),
- one WAL fsync (`paxos_wal_fsync_seconds`), which phase 2 waits for on a quorum.

What is left of the client's round trip once the node's own time is taken out is the
client library, the broker (both ways) and the loopback hops to it.
"""

import argparse
import json
import re
import subprocess
import sys
import urllib.request

LINE = re.compile(r'^(paxos_[a-z0-9_]+?)_(sum|count)\{?([^}]*)\}? ([0-9.eE+-]+)$')


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m and m.group(1) in ("paxos_request_seconds", "paxos_phase2_seconds",
                                "paxos_wal_fsync_seconds"):
            key = (m.group(1), m.group(2))
            values[key] = values.get(key, 0.0) + float(m.group(4))
    return values


def role(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.load(r).get("role", "?")


def mean_ms(before, after, name):
    count = after.get((name, "count"), 0) - before.get((name, "count"), 0)
    total = after.get((name, "sum"), 0) - before.get((name, "sum"), 0)
    return (total / count * 1000.0 if count else None), int(count)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--bots", default="target/release/bots")
    args = parser.parse_args()
    ports = [7000 + n for n in range(1, args.nodes + 1)]
    roles = {p: role(p) for p in ports}
    before = {p: scrape(p) for p in ports}
    out = subprocess.run(
        [args.bots, "load", "--clients", "1", "--mix", "put=100", "--duration",
         f"{args.seconds}s", "--json", "--quiet"],
        check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    after = {p: scrape(p) for p in ports}
    if any(role(p) != roles[p] for p in ports):
        print("the leader changed during the run: run it again", file=sys.stderr)
        sys.exit(1)

    client_mean = report["duration_s"] * 1000.0 / report["ops"] if report["ops"] else None
    print(f"one client, puts of 256 bytes, {report['ops']} writes in {report['duration_s']:.1f} s")
    print(f"client round trip: mean {client_mean:.3f} ms, p50 {report['p50_ms']:.3f} ms, "
          f"p99 {report['p99_ms']:.3f} ms\n")
    print("| node | role | requests answered | mean from arrival to answer ms | phase 2 mean ms | fsyncs | fsync mean ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    weighted, answered = 0.0, 0
    by_role = {}
    for p in ports:
        req, n = mean_ms(before[p], after[p], "paxos_request_seconds")
        ph2, _ = mean_ms(before[p], after[p], "paxos_phase2_seconds")
        fs, fsn = mean_ms(before[p], after[p], "paxos_wal_fsync_seconds")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        print(f"| node-{p - 7000} | {roles[p]} | {n} | {fmt(req)} | {fmt(ph2)} | {fsn} | {fmt(fs)} |")
        if req is not None:
            weighted += req * n
            answered += n
            agg = by_role.setdefault(roles[p], [0.0, 0])
            agg[0] += req * n
            agg[1] += n
    if answered and client_mean is not None:
        node_mean = weighted / answered
        print()
        for r, (total, n) in sorted(by_role.items()):
            print(f"at a {r}: {total / n:.3f} ms from arrival to answer ({n} requests)")
        print(f"client library + broker + loopback hops: {client_mean - node_mean:.3f} ms "
              f"(client mean {client_mean:.3f} - node mean {node_mean:.3f})")


if __name__ == "__main__":
    main()
