#!/usr/bin/env bash
# Tests across containers (docker compose, no registry): compose up; bots load with a
# history; the leader cut off with `docker network disconnect` for 10 s and reconnected;
# a node `docker kill`ed and started again; then the history is linearizable,
# ./status.sh says CONSISTENT, every store.json has the same digest, and compose down
# leaves no container and no network behind.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/common.sh
BIN="${PAXOS_BIN_DIR:-$ROOT/target/release}"
WORK="$(mktemp -d /tmp/paxos-zmq-docker.XXXXXX)"
HISTORY="$WORK/history.jsonl"
export DATA_DIR="$ROOT/data"
fail() { echo "FAIL: $*" >&2; docker_compose logs --tail 30 >&2 || true; ./off.sh --docker >/dev/null 2>&1 || true; exit 1; }
trap './off.sh --docker >/dev/null 2>&1 || true' EXIT
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
container() { docker_compose ps -q "${1/node-/node}"; }

[[ -z "$(docker_compose ps -q 2>/dev/null)" ]] || fail "a compose deployment is already up; ./off.sh --docker first"
for name in $(known_processes); do
    # The compose file bind-mounts ./data/<node>: never wipe a running local cluster's state.
    pid_of "$name" >/dev/null && fail "a local cluster runs ($name); stop it with ./off.sh first"
done
rm -rf "$DATA_DIR"/node-* "$DATA_DIR"/reference

echo "--- ./on.sh --docker"
start=$SECONDS
./on.sh --docker --no-bots || fail "on.sh --docker failed"
echo "healthy in $((SECONDS - start)) s, image: $(docker image ls paxos-zmq:latest --format '{{.Size}}')"

leader="$(./status.sh --json | json_field '[n["node"] for n in d["nodes"] if n["role"]=="leader"][0]')"
echo "--- bots load 30 s with a history; $leader disconnected for 10 s; a node killed and restarted"
"$BIN/bots" load --broker tcp://127.0.0.1:5555 --clients 8 --duration 30s --keys 20 \
    --mix put=40,get=40,cas=20 --history "$HISTORY" --json > "$WORK/load.json" &
load=$!
sleep 3
docker network disconnect paxos-zmq "$(container "$leader")"
sleep 10
docker network connect paxos-zmq "$(container "$leader")"
victim=node-1; [[ "$leader" == node-1 ]] && victim=node-2
sleep 3
./off.sh --docker --kill "$victim"
sleep 3
./off.sh --docker --restart "$victim"
wait "$load" || fail "bots load failed"
cat "$WORK/load.json"

echo "--- bots check"
"$BIN/bots" check "$HISTORY" || fail "the history is not linearizable"

echo "--- waiting until every replica is at the same applied slot"
for _ in $(seq 1 120); do
    slots="$(./status.sh --json | json_field 'len({n["applied_slot"] for n in d["nodes"] if n["alive"]}) if all(n["alive"] for n in d["nodes"]) else 0' || true)"
    [[ "$slots" == 1 ]] && break
    sleep 0.5
done
./status.sh || fail "./status.sh is not CONSISTENT"

echo "--- graceful stop of the nodes (SIGTERM to PID 1 flushes store.json)"
docker_compose stop -t 20 node1 node2 node3
digests="$(python3 -c '
import json, glob
docs = [json.load(open(p)) for p in sorted(glob.glob("'"$DATA_DIR"'/node-*/store.json"))]
print(len(docs), len({d["digest"] for d in docs}), len({d["applied_slot"] for d in docs}))')"
[[ "$digests" == "3 1 1" ]] || fail "store.json files differ: (files, digests, slots) = $digests"

echo "--- ./off.sh --docker leaves nothing behind"
./off.sh --docker
[[ -z "$(docker ps -aq --filter label=com.docker.compose.project=$COMPOSE_PROJECT)" ]] || fail "containers left"
! docker network inspect paxos-zmq >/dev/null 2>&1 || fail "network paxos-zmq left"
docker-compose -f docker-stack.yml config -q || fail "docker-stack.yml is not valid"
rm -rf "$WORK"
echo "docker: 1 passed, 0 failed"
