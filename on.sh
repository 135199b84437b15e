#!/usr/bin/env bash
# Starts a paxos-zmq cluster with load: reference, two brokers, two proxies, N nodes and
# 2 bots, as background processes (pids, logs and state under data/), then waits for a
# leader.
#
#   ./on.sh                 3 nodes and 2 bots, brokers and proxies in pairs
#   ./on.sh --nodes 5       5 (or 7) nodes
#   ./on.sh --fabric 1      one broker and one proxy (the seeds' fabric)
#   ./on.sh --no-bots       no load
#   ./on.sh --monitoring    also a local Prometheus on :9090 scraping every process
#                           (needs the `prometheus` binary: apt-get install prometheus)
#   ./on.sh --docker        the same cluster with docker compose (see docker-compose.yml)
#
# Running it again while the cluster runs says so and changes nothing. Stop with ./off.sh.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

NODES=3
FABRIC=2
BOTS=1
DOCKER=0
MONITORING=0
PROMETHEUS_ADDR="${PROMETHEUS_ADDR:-127.0.0.1:9090}"
LEADER_TIMEOUT_S="${LEADER_TIMEOUT_S:-30}"
while (( $# )); do
    case "$1" in
        --nodes) NODES="${2:?--nodes needs a number}"; shift 2 ;;
        --nodes=*) NODES="${1#*=}"; shift ;;
        --fabric) FABRIC="${2:?--fabric needs 1 or 2}"; shift 2 ;;
        --fabric=*) FABRIC="${1#*=}"; shift ;;
        --no-bots) BOTS=0; shift ;;
        --docker) DOCKER=1; shift ;;
        --monitoring) MONITORING=1; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see ./on.sh --help)" ;;
    esac
done
[[ "$NODES" =~ ^[0-9]+$ ]] && (( NODES >= 1 && NODES <= 9 )) || die "--nodes must be 1..9 (3, 5 or 7 make sense)"
[[ "$FABRIC" == 1 || "$FABRIC" == 2 ]] || die "--fabric must be 1 or 2"

if (( DOCKER )); then
    exec "$ROOT/scripts/docker-on.sh" "$NODES" "$BOTS"
fi

cd "$ROOT"

running=()
for name in $(known_processes); do
    pid_of "$name" >/dev/null && running+=("$name")
done
if (( ${#running[@]} )); then
    bold "The cluster is already running (${running[*]}): nothing changed."
    say "  ./status.sh      consistency report"
    say "  ./off.sh         stop it"
    exit 0
fi

if [[ -z "${PAXOS_BIN_DIR:-}" ]]; then
    bold "==> Building the release binaries (cargo build --release)"
    cargo build --release --bins
else
    bold "==> Using the binaries in $BIN"
fi
for binary in reference proxy broker node bots client status; do
    [[ -x "$BIN/$binary" ]] || die "missing $BIN/$binary after the build"
done

mkdir -p "$RUN" "$LOGS"
# The fault drills of off.sh and ./status.sh need to know what runs.
echo "$NODES" > "$RUN/cluster-size"
echo "$FABRIC" > "$RUN/fabric-size"

FABRIC_NAMES=()
for i in $(seq 1 "$FABRIC"); do FABRIC_NAMES+=("broker-$i" "proxy-$i"); done
BROKER_FRONTENDS="$(fabric_list "$FABRIC" broker_frontend)"
BROKER_BACKENDS="$(fabric_list "$FABRIC" broker_backend)"
PROXY_FRONTENDS="$(fabric_list "$FABRIC" proxy_frontend)"
PROXY_BACKENDS="$(fabric_list "$FABRIC" proxy_backend)"
# The bots, the client and ./status.sh find the fabric through these.
export BROKER="$BROKER_FRONTENDS" PROXY_BACKEND="$PROXY_BACKENDS"

# The cluster key seals all traffic between cluster processes; made once, kept across
# restarts (a new key would lock the existing nodes out of each other).
if [[ ! -f "$KEY_FILE" ]]; then
    mkdir -p "$(dirname "$KEY_FILE")"
    "$BIN/node" keygen "$KEY_FILE" >/dev/null || die "cannot create the cluster key $KEY_FILE"
    say "created the cluster key $KEY_FILE (mode 0600)"
fi

bold "==> Starting the reference, ${FABRIC_NAMES[*]} and $NODES nodes"
start_process reference "$BIN/reference" --data-dir "$DATA/reference" --key-file "$KEY_FILE" \
    --proxy "$PROXY_FRONTENDS" --status-addr "127.0.0.1:$(fabric_port reference status)"
for i in $(seq 1 "$FABRIC"); do
    start_process "proxy-$i" "$BIN/proxy" --name "proxy-$i" \
        --frontend "$(fabric_endpoint "proxy-$i" frontend)" \
        --backend "$(fabric_endpoint "proxy-$i" backend)" \
        --status-addr "127.0.0.1:$(fabric_port "proxy-$i" status)"
    start_process "broker-$i" "$BIN/broker" --name "broker-$i" --key-file "$KEY_FILE" \
        --frontend "$(fabric_endpoint "broker-$i" frontend)" \
        --backend "$(fabric_endpoint "broker-$i" backend)" \
        --status-addr "127.0.0.1:$(fabric_port "broker-$i" status)"
done
for n in $(seq 1 "$NODES"); do
    start_process "node-$n" "$BIN/node" --id "$n" --cluster-size "$NODES" --data-dir "$DATA" \
        --key-file "$KEY_FILE" \
        --broker "$BROKER_BACKENDS" --proxy-frontend "$PROXY_FRONTENDS" \
        --proxy-backend "$PROXY_BACKENDS"
done

failed() { # name: report a process that died, with the tail of its log
    local name="$1"
    printf '\nerror: %s exited. Last lines of %s:\n' "$name" "$LOGS/$name.log" >&2
    tail -n 20 "$LOGS/$name.log" >&2 || true
    say "Stop what is left with ./off.sh" >&2
    exit 1
}

printf 'Waiting for a leader (up to %ss) ' "$LEADER_TIMEOUT_S"
deadline=$((SECONDS + LEADER_TIMEOUT_S))
leader=""
while [[ -z "$leader" ]]; do
    for name in reference "${FABRIC_NAMES[@]}" $(seq -f 'node-%g' 1 "$NODES"); do
        pid_of "$name" >/dev/null || failed "$name"
    done
    for n in $(seq 1 "$NODES"); do
        body="$(http_get 127.0.0.1 $((7000 + n)) /status || true)"
        if [[ "$body" == *'"role":"leader"'* ]]; then leader="node-$n"; fi
    done
    if [[ -z "$leader" ]]; then
        (( SECONDS < deadline )) || {
            printf '\nerror: no leader after %ss. Last lines of the node logs:\n' "$LEADER_TIMEOUT_S" >&2
            for n in $(seq 1 "$NODES"); do say "--- node-$n" >&2; tail -n 8 "$LOGS/node-$n.log" >&2 || true; done
            exit 1
        }
        printf '.'; sleep 0.3
    fi
done
printf ' %s leads\n' "$leader"

if (( BOTS )); then
    bold "==> Starting 2 bots (steady mixed load and chat)"
    start_process bot-1 "$BIN/bots" --broker "$BROKER_FRONTENDS" --proxy "$PROXY_BACKENDS" \
        load --clients 4 --rate 100/s --mix put=40,get=40,cas=10,publish=10 --keys 100 \
        --value-size 64 --quiet
    start_process bot-2 "$BIN/bots" --broker "$BROKER_FRONTENDS" --proxy "$PROXY_BACKENDS" \
        chat --bots 2 --rate 1/s
fi

if (( MONITORING )); then
    if command -v prometheus >/dev/null 2>&1; then
        bold "==> Starting Prometheus on $PROMETHEUS_ADDR (monitoring/prometheus.yml, $NODES nodes)"
        # The shipped config lists 3 nodes; this run's copy lists the nodes it started.
        targets="$(for n in $(seq 1 "$NODES"); do printf '"127.0.0.1:%s", ' $((7000 + n)); done)"
        sed "s|- targets: \[\"127.0.0.1:7001\".*|- targets: [${targets%, }]|" \
            "$ROOT/monitoring/prometheus.yml" > "$RUN/prometheus.yml"
        start_process prometheus prometheus --config.file="$RUN/prometheus.yml" \
            --storage.tsdb.path="$DATA/prometheus" --web.listen-address="$PROMETHEUS_ADDR"
    else
        say "--monitoring: no prometheus binary on the PATH (apt-get install prometheus); not started."
    fi
fi

printf '\n%-10s %-8s %-52s %s\n' PROCESS PID ADDRESS LOG
LOG_DIR="${LOGS#"$ROOT"/}"
row() { printf '%-10s %-8s %-52s %s\n' "$1" "$(pid_of "$1" || echo -)" "$2" "$LOG_DIR/$1.log"; }
row reference "tcp://127.0.0.1:5559, http://127.0.0.1:$(fabric_port reference status)"
for i in $(seq 1 "$FABRIC"); do
    row "broker-$i" "$(fabric_endpoint "broker-$i" frontend) (clients) / :$(fabric_port "broker-$i" backend)"
    row "proxy-$i" "$(fabric_endpoint "proxy-$i" frontend) (pub) / :$(fabric_port "proxy-$i" backend) (sub)"
done
for n in $(seq 1 "$NODES"); do row "node-$n" "http://127.0.0.1:$((7000 + n))/ (console; /status, /metrics)"; done
if (( BOTS )); then row bot-1 "load: 100 ops/s, 4 clients"; row bot-2 "chat: 2 bots"; fi
if [[ -f "$RUN/prometheus.pid" ]]; then row prometheus "http://$PROMETHEUS_ADDR (dashboards: monitoring/grafana)"; fi

cat <<TXT

Leader: $leader. Try:
  open http://127.0.0.1:7001/       the web console of node-1 (every node serves one)
  ./status.sh                       consistency report (add --watch to follow it)
  cat data/node-1/store.json        a replica's state (written within seconds of the start, then every 5 s while it changes)
  target/release/client put greeting hello && target/release/client get greeting
  target/release/client             the interactive chat client
  ./off.sh --kill $leader           kill -9 the leader, then ./status.sh
  ./off.sh --pause node-2           SIGSTOP a node (--resume to continue)
$(if (( FABRIC == 2 )); then echo "  ./off.sh --kill broker-1          any broker or proxy too: the cluster keeps serving"; fi)
  ./off.sh                          stop everything (--clean also deletes data/)
TXT
