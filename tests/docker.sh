#!/usr/bin/env bash
# Tests across containers (no registry):
#  1. docker compose: up (the fabric pair, the cluster key as a compose secret); bots load
#     with a history while the leader is cut off with `docker network disconnect` for 8 s,
#     broker-1 and proxy-1 are `docker kill`ed and started again, and a node too; then the
#     history is linearizable, ./status.sh says CONSISTENT, and every store.json has the
#     same digest.
#  2. A stranger without the key on every published fabric port (forged Paxos envelopes,
#     READY on the brokers' backends, a registration, a SUB on every topic): it gets
#     nowhere, nothing forged is applied.
#     Chat users: a login of one's own cannot post as, or read the inbox of, another.
#  3. compose down leaves no container and no network behind.
#  4. Docker Swarm for real: on a one-host swarm (made here when the engine is in none, and
#     left again), docker-stack.yml deployed with the cluster key as a Swarm secret and
#     its per-host placement lifted; healthy, load, ./status.sh; then removed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/common.sh
BIN="${PAXOS_BIN_DIR:-$ROOT/target/release}"
WORK="$(mktemp -d /tmp/paxos-zmq-docker.XXXXXX)"
HISTORY="$WORK/history.jsonl"
export DATA_DIR="$ROOT/data"
STACK=paxos-zmq-test
SECRET=paxos-zmq-cluster-key
CREATED_SWARM=0

swarm_cleanup() {
    if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$STACK"; then
        docker stack rm "$STACK" >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 60); do
        [[ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ]] && break
        sleep 1
    done
    for _ in $(seq 1 30); do
        docker network inspect "${STACK}_paxos" >/dev/null 2>&1 || break
        sleep 1
    done
    docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker volume rm >/dev/null 2>&1 || true
    docker secret rm "$SECRET" >/dev/null 2>&1 || true
    if (( CREATED_SWARM )); then
        docker swarm leave --force >/dev/null 2>&1 || true
        CREATED_SWARM=0
    fi
}
cleanup() { ./off.sh --docker >/dev/null 2>&1 || true; swarm_cleanup; }
fail() { echo "FAIL: $*" >&2; docker_compose logs --tail 30 >&2 || true; cleanup; exit 1; }
trap cleanup EXIT
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
[[ "$(stat -c %a "$DATA_DIR/cluster.key")" == 600 ]] || fail "the cluster key is not mode 0600"

leader="$(./status.sh --json | json_field '[n["node"] for n in d["nodes"] if n["role"]=="leader"][0]')"
victim=node-1; [[ "$leader" == node-1 ]] && victim=node-2
echo "--- bots load 36 s with a history: $leader cut off 8 s; broker-1, proxy-1 and $victim killed and started again"
"$BIN/bots" load --broker tcp://127.0.0.1:5555,tcp://127.0.0.1:5565 --clients 8 --duration 36s \
    --keys 20 --key-prefix dockerdata --mix put=40,get=40,cas=20 --history "$HISTORY" \
    --json > "$WORK/load.json" &
load=$!
sleep 3
docker network disconnect paxos-zmq "$(container "$leader")"
sleep 8
# Back under its service's name too (node3 for node-3): peers' consoles ask it there.
docker network connect --alias "node${leader#node-}" paxos-zmq "$(container "$leader")"
sleep 3
for name in broker-1 proxy-1 "$victim"; do
    ./off.sh --docker --kill "$name"
    sleep 3
    ./off.sh --docker --restart "$name"
    sleep 3
done
wait "$load" || fail "bots load failed"
cat "$WORK/load.json"; echo
errors="$(json_field 'd["errors"]' < "$WORK/load.json")"

echo "--- bots check"
"$BIN/bots" check "$HISTORY" || fail "the history is not linearizable"

echo "--- waiting until every replica is at the same applied slot"
for _ in $(seq 1 120); do
    slots="$(./status.sh --json | json_field 'len({n["applied_slot"] for n in d["nodes"] if n["alive"]}) if all(n["alive"] for n in d["nodes"]) else 0' || true)"
    [[ "$slots" == 1 ]] && break
    sleep 0.5
done
./status.sh || fail "./status.sh is not CONSISTENT"
fabric_up="$(./status.sh --json | json_field 'sum(1 for f in d["fabric"] if f["up"])')"
[[ "$fabric_up" == 5 ]] || fail "$fabric_up of 5 fabric processes answer (reference, 2 brokers, 2 proxies)"
echo "load errors: $errors (the leader cut off for 8 s costs some; the fabric kills must not fail the run)"

echo "--- a stranger without the key on every published fabric port"
victims="$(./status.sh --json | json_field '",".join("%s=%s@%s" % (n["node"], n["rank"], n["applied_slot"]) for n in d["nodes"])')"
"$BIN/bots" load --broker tcp://127.0.0.1:5555,tcp://127.0.0.1:5565 --clients 2 --duration 8s \
    --keys 20 --key-prefix dockersecret --mix put=100 --rate 200/s --quiet > /dev/null &
writers=$!
"$BIN/stranger" --proxy-frontend tcp://127.0.0.1:5557,tcp://127.0.0.1:5567 \
    --proxy-backend tcp://127.0.0.1:5558,tcp://127.0.0.1:5568 \
    --broker-backend tcp://127.0.0.1:5556,tcp://127.0.0.1:5566 \
    --reference tcp://127.0.0.1:5559 --victims "$victims" --seconds 5 --secret dockersecret \
    > "$WORK/stranger.json" || { cat "$WORK/stranger.json"; fail "the stranger got in"; }
wait "$writers" || fail "the writers failed while the stranger attacked"
cat "$WORK/stranger.json"; echo
refused="$(for port in 7001 7002 7003; do http_get 127.0.0.1 "$port" /metrics; done \
    | awk '/^paxos_auth_rejected_total\{from="peer"/ {sum += $2} END {print sum + 0}')"
echo "peer frames the nodes refused: $refused"
(( refused > 0 )) || fail "the nodes counted no refused frame"

echo "--- chat users: a stranger's login cannot speak or read for another user"
chat() { "$BIN/client" --broker tcp://127.0.0.1:5555,tcp://127.0.0.1:5565 "$@" < /dev/null; }
chat login docker-ana --password ana-pw > /dev/null || fail "ana cannot log in"
chat create docker-room > /dev/null || fail "cannot create a channel"
chat dm docker-ana docker-ana "ana's secret" --password ana-pw > /dev/null || fail "ana cannot write to herself"
eve="$(chat login docker-eve --password eve-pw -o json | json_field 'd["credential"]')"
status=0; chat publish docker-ana docker-room forged --credential "$eve" 2> /dev/null || status=$?
[[ "$status" == 4 ]] || fail "posting as ana with eve's credential: exit $status, not 4"
status=0; chat history @docker-ana --credential "$eve" 2> /dev/null || status=$?
[[ "$status" == 4 ]] || fail "reading ana's inbox with eve's credential: exit $status, not 4"
status=0; chat history @docker-ana --password guess 2> /dev/null || status=$?
[[ "$status" == 4 ]] || fail "a wrong password for ana: exit $status, not 4"
inbox="$(chat history @docker-ana --password ana-pw)" || fail "ana cannot read her own inbox"
grep -q "ana's secret" <<<"$inbox" || fail "ana's inbox lacks her message"
echo "chat users: eve's credential and a wrong password refused (exit 4); ana reads her inbox"

echo "--- the web console: node-1's page, and every node's /status asked inside the network"
page="$(http_get 127.0.0.1 7001 /)"
grep -q "paxos-zmq console" <<<"$page" || fail "node-1 serves no console at /"
http_get 127.0.0.1 7001 /cluster | python3 -c '
import json, sys
view = json.load(sys.stdin)
nodes = sorted([view["this"]["node"]] + [p["status"]["node"] for p in view["peers"] if p["status"]])
errors = [p["error"] for p in view["peers"] if p["error"]]
assert nodes == ["node-1", "node-2", "node-3"], f"the console sees {nodes}; errors: {errors}"
print("the console of node-1 sees", ", ".join(nodes))
' || fail "node-1's console does not see every node"

echo "--- graceful stop of the nodes (SIGTERM to PID 1 flushes store.json)"
docker_compose stop -t 20 node1 node2 node3
digests="$(python3 -c '
import json, glob
docs = [json.load(open(p)) for p in sorted(glob.glob("'"$DATA_DIR"'/node-*/store.json"))]
print(len(docs), len({d["digest"] for d in docs}), len({d["applied_slot"] for d in docs}))')"
[[ "$digests" == "3 1 1" ]] || fail "store.json files differ: (files, digests, slots) = $digests"
! grep -l "forged-by-a-stranger" "$DATA_DIR"/node-*/store.json || fail "a forgery was applied"
grep -q dockersecret "$DATA_DIR/node-1/store.json" || fail "the writers' data is not in store.json"

echo "--- ./off.sh --docker leaves nothing behind"
./off.sh --docker
[[ -z "$(docker ps -aq --filter label=com.docker.compose.project=$COMPOSE_PROJECT)" ]] || fail "containers left"
! docker network inspect paxos-zmq >/dev/null 2>&1 || fail "network paxos-zmq left"

echo "--- Docker Swarm: docker-stack.yml on a one-host swarm"
if [[ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]]; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || fail "docker swarm init failed"
    CREATED_SWARM=1
    echo "made a one-host swarm (left again at the end)"
fi
docker stack ls --format '{{.Name}}' | grep -qx "$STACK" && fail "stack $STACK already deployed"
docker secret rm "$SECRET" >/dev/null 2>&1 || true
docker secret create "$SECRET" "$DATA_DIR/cluster.key" >/dev/null || fail "docker secret create failed"
# The stack puts one replica node per host and the two of a fabric pair on different hosts
# (node labels); on one host, exactly those constraints become `node.role == manager`.
docker stack config -c docker-stack.yml \
    | sed -E 's/- node\.labels\.paxos-(node|fabric) == [0-9]+$/- node.role == manager/' > "$WORK/stack.yml"
grep -q "node.labels.paxos" "$WORK/stack.yml" && fail "a placement label is left in the one-host stack"
start=$SECONDS
docker stack deploy --resolve-image never -c "$WORK/stack.yml" "$STACK" >/dev/null || fail "docker stack deploy failed"
SWARM_DATA="$WORK/swarm-data"; mkdir -p "$SWARM_DATA"
swarm_status() { DATA_DIR="$SWARM_DATA" "$BIN/status" --data-dir "$SWARM_DATA" --nodes 3 --fabric 2 "$@"; }
for _ in $(seq 1 180); do
    ready="$(swarm_status --json 2>/dev/null | json_field 'int(all(n["alive"] for n in d["nodes"]) and any(n["role"]=="leader" for n in d["nodes"]) and all(f["up"] for f in d["fabric"]))' || echo 0)"
    [[ "$ready" == 1 ]] && break
    sleep 1
done
[[ "$ready" == 1 ]] || { docker stack ps "$STACK" --no-trunc >&2; fail "the stack did not become healthy in 180 s"; }
echo "stack healthy in $((SECONDS - start)) s:"
docker stack services "$STACK" --format '{{.Name}} {{.Replicas}}'
"$BIN/bots" load --broker tcp://127.0.0.1:5555,tcp://127.0.0.1:5565 --clients 8 --duration 10s \
    --mix put=50,get=50 --json > "$WORK/swarm-load.json" || fail "bots load against the stack failed"
cat "$WORK/swarm-load.json"; echo
[[ "$(json_field 'd["errors"]' < "$WORK/swarm-load.json")" == 0 ]] || fail "errors under load on the stack"
for _ in $(seq 1 60); do
    swarm_status >/dev/null 2>&1 && break
    sleep 0.5
done
swarm_status || fail "./status.sh is not CONSISTENT on the stack"
swarm_cleanup
[[ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ]] || fail "stack containers left"

docker-compose -f docker-stack.yml config -q || fail "docker-stack.yml is not valid"
rm -rf "$WORK"
echo "docker: 1 passed, 0 failed"
