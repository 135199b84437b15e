#!/usr/bin/env bash
# Prometheus for real (Debian's package) against a live cluster:
#   1. `promtool check config` accepts monitoring/prometheus.yml and its compose twin;
#   2. `./on.sh --monitoring` starts the cluster, its load and a local Prometheus;
#   3. every PromQL expression of the shipped Grafana dashboards returns data.
# Skipped, and said so, when the prometheus binaries are absent (.ci/run installs them).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "SKIPPED: prometheus/promtool are not installed (apt-get install prometheus); the monitoring test did not run."
    exit 0
fi
export DATA_DIR="$(mktemp -d /tmp/paxos-zmq-monitoring.XXXXXX)"
export PAXOS_BIN_DIR="${PAXOS_BIN_DIR:-$ROOT/target/release}"
export PROMETHEUS_ADDR="127.0.0.1:19090"
fail() { echo "FAIL: $*" >&2; ./off.sh >/dev/null 2>&1 || true; exit 1; }
trap './off.sh >/dev/null 2>&1 || true' EXIT

echo "--- promtool check config"
promtool check config monitoring/prometheus.yml || fail "promtool refuses monitoring/prometheus.yml"
promtool check config monitoring/prometheus-compose.yml || fail "promtool refuses monitoring/prometheus-compose.yml"

echo "--- ./on.sh --monitoring (data in $DATA_DIR, Prometheus on $PROMETHEUS_ADDR)"
./on.sh --monitoring > "$DATA_DIR/on.log" || { cat "$DATA_DIR/on.log"; fail "on.sh --monitoring failed"; }
grep -q "^prometheus " "$DATA_DIR/on.log" || { cat "$DATA_DIR/on.log"; fail "on.sh did not list Prometheus"; }

echo "--- every expression of the dashboards returns data (the bots keep the cluster busy)"
python3 - "$PROMETHEUS_ADDR" monitoring/grafana/dashboards/*.json <<'PY' || fail "some dashboard expressions return no data"
import json, sys, time, urllib.parse, urllib.request

addr, files = sys.argv[1], sys.argv[2:]
exprs = []
for path in files:
    dashboard = json.load(open(path))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append((path.rsplit("/", 1)[-1], panel["title"], target["expr"]))
assert exprs, "no expression found in the dashboards"

def query(expr):
    url = f"http://{addr}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            doc = json.load(reply)
    except Exception as error:  # Prometheus not up yet, or an HTTP error: retried
        return f"error: {error}"
    if doc.get("status") != "success":
        return f"error: {doc.get('error')}"
    return len(doc["data"]["result"])

def scalar(expr):
    url = f"http://{addr}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            result = json.load(reply)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0
    except Exception:
        return 0.0

# Every target of the config answers: 3 nodes, 2 brokers, 2 proxies, the reference.
deadline = time.time() + 90
while scalar("count(up == 1)") < 8 and time.time() < deadline:
    time.sleep(1)
up = scalar("count(up == 1)")
print(f"targets up: {up:.0f} of 8")
assert up == 8, "Prometheus does not scrape every process"

# rate()[1m] needs two scrapes (5 s apart) of every target; give it up to 90 s.
deadline = time.time() + 90
found = {}
while len(found) < len(exprs) and time.time() < deadline:
    for e in exprs:
        if e not in found:
            result = query(e[2])
            if isinstance(result, int) and result > 0:
                found[e] = result
    if len(found) < len(exprs):
        time.sleep(3)
missing = [e for e in exprs if e not in found]
for e in exprs:
    name, _, expr = e
    state = f"{found[e]} series" if e in found else f"NO DATA ({query(expr)})"
    print(f"{name:30} {state:12} {expr}")
print(f"{len(exprs) - len(missing)} of {len(exprs)} expressions return data")
sys.exit(1 if missing else 0)
PY

echo "--- ./off.sh stops Prometheus with the cluster"
./off.sh > /dev/null
if pgrep -f "prometheus --config.file=$DATA_DIR" > /dev/null; then fail "Prometheus still runs after ./off.sh"; fi
rm -rf "$DATA_DIR"
echo "monitoring: OK"
