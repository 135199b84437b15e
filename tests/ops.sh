#!/usr/bin/env bash
# The newcomer's story, end to end, through the real scripts (issue: operating the cluster):
#   ./on.sh; bots load for 10 s with --history while one node is killed (kill -9) and
#   restarted; then the history is linearizable, ./status.sh says CONSISTENT, every
#   store.json has the same digest, and after ./off.sh no process of the cluster is left.
# Also: every store.json appears within seconds of ./on.sh; editing one store.json while the cluster is off makes ./status.sh INCONSISTENT
# naming the node and the key.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export DATA_DIR="$(mktemp -d /tmp/paxos-zmq-ops.XXXXXX)"
export PAXOS_BIN_DIR="${PAXOS_BIN_DIR:-$ROOT/target/release}"
BIN="$PAXOS_BIN_DIR"
HISTORY="$DATA_DIR/history.jsonl"
fail() { echo "FAIL: $*" >&2; ./off.sh >/dev/null 2>&1 || true; exit 1; }
trap './off.sh >/dev/null 2>&1 || true' EXIT

json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "--- ./on.sh (data in $DATA_DIR)"
./on.sh || fail "on.sh failed"
# Captured first: `grep -q` stops reading at the first match, and ./on.sh's later lines
# would then die of SIGPIPE (a failure under pipefail).
again="$(./on.sh)" || fail "a second ./on.sh failed"
grep -q "already running" <<<"$again" || fail "a second ./on.sh did not say the cluster runs"
# store.json shows the state within seconds of the start, not after a long interval.
for _ in $(seq 1 20); do
    [[ -s "$DATA_DIR/node-1/store.json" && -s "$DATA_DIR/node-2/store.json" && -s "$DATA_DIR/node-3/store.json" ]] && break
    sleep 0.5
done
for n in 1 2 3; do
    [[ -s "$DATA_DIR/node-$n/store.json" ]] || fail "no store.json for node-$n 10 s after ./on.sh"
done
echo "store.json of every node present within seconds of ./on.sh"

leader="$(./status.sh --json | json_field '[n["node"] for n in d["nodes"] if n["role"]=="leader"][0]')"
victim=node-1; [[ "$leader" == node-1 ]] && victim=node-2
echo "--- bots load 10 s with a history; kill -9 $victim after 3 s, restart it after 6 s"
"$BIN/bots" load --clients 8 --duration 10s --keys 20 --mix put=40,get=40,cas=20 \
    --history "$HISTORY" --json > "$DATA_DIR/load.json" &
load=$!
sleep 3; ./off.sh --kill "$victim"
sleep 3; ./off.sh --restart "$victim"
wait "$load" || fail "bots load failed"
cat "$DATA_DIR/load.json"

echo "--- bots check"
"$BIN/bots" check "$HISTORY" || fail "the history is not linearizable"

echo "--- waiting until every replica is at the same applied slot"
./off.sh --stop bot-1 >/dev/null; ./off.sh --stop bot-2 >/dev/null
for _ in $(seq 1 60); do
    slots="$(./status.sh --json | json_field 'len({n["applied_slot"] for n in d["nodes"] if n["alive"]})' || true)"
    [[ "$slots" == 1 ]] && break
    sleep 0.5
done
./status.sh || fail "./status.sh is not CONSISTENT"

echo "--- ./off.sh"
./off.sh
digests="$(cat "$DATA_DIR"/node-*/store.json | python3 -c '
import json, sys
text = sys.stdin.read()
docs, i, dec = [], 0, json.JSONDecoder()
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    doc, i = dec.raw_decode(text, i); docs.append(doc)
print(len(docs), len({d["digest"] for d in docs}), len({d["applied_slot"] for d in docs}))')"
[[ "$digests" == "3 1 1" ]] || fail "store.json files differ: (files, digests, slots) = $digests"
if pgrep -f "^$BIN/(reference|proxy|broker|node|bots) " >/dev/null; then fail "processes left after ./off.sh"; fi
./status.sh >/dev/null || fail "./status.sh from the files alone is not CONSISTENT"

echo "--- an edited store.json is INCONSISTENT, named"
python3 - "$DATA_DIR/node-2/store.json" <<'PY'
import json, sys
path = sys.argv[1]
doc = json.load(open(path))
key = sorted(doc["keys"])[0] if doc["keys"] else None
doc["keys"][key or "edited-key"] = "edited by the test"
json.dump(doc, open(path, "w"), indent=2)
PY
set +e; out="$(./status.sh)"; code=$?; set -e
echo "$out" | tail -n 4
[[ $code == 1 ]] || fail "status.sh exit code $code, expected 1"
grep -q INCONSISTENT <<<"$out" && grep -q node-2 <<<"$out" && grep -q "keys/" <<<"$out" \
    || fail "status.sh did not name the node and the key"
rm -rf "$DATA_DIR"
echo "ops: 1 passed, 0 failed"
