# Shared by on.sh and off.sh: where things live and how a process is started and stopped.
# Every process runs in the background with its pid in data/run/<name>.pid, its command
# line in data/run/<name>.cmd (so off.sh --restart can start it again) and its log in
# data/logs/<name>.log.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA_DIR:-$ROOT/data}"
# The cluster key (made by ./on.sh when absent; docs/operations.md says how to rotate it).
KEY_FILE="${CLUSTER_KEY_FILE:-$DATA/cluster.key}"
RUN="$DATA/run"
LOGS="$DATA/logs"
BIN="${PAXOS_BIN_DIR:-$ROOT/target/release}"
COMPOSE_PROJECT="${COMPOSE_PROJECT_NAME:-paxos-zmq}"

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pid_of() { # name -> pid if the process is alive (a killed process not yet reaped, a
            # zombie, is not)
    local file="$RUN/$1.pid" pid
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    echo "$pid"
}

process_state() { # name -> running|paused|dead
    local pid state
    pid="$(pid_of "$1")" || { echo dead; return; }
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo "?")"
    [[ "$state" == "T" ]] && echo paused || echo running
}

known_processes() { # every name with a pid file, in start order
    local name
    [[ -f "$RUN/reference.pid" ]] && echo reference
    ls "$RUN" 2>/dev/null | sed -n 's/^\(\(broker\|proxy\)-[0-9]*\)\.pid$/\1/p' | sort -t- -k2 -n
    ls "$RUN" 2>/dev/null | sed -n 's/^\(node-[0-9]*\)\.pid$/\1/p' | sort -t- -k2 -n
    ls "$RUN" 2>/dev/null | sed -n 's/^\(bot-[0-9]*\)\.pid$/\1/p' | sort -t- -k2 -n
    [[ -f "$RUN/prometheus.pid" ]] && echo prometheus
    return 0
}

start_process() { # name command... : start in the background, record pid and command
    local name="$1"; shift
    mkdir -p "$RUN" "$LOGS"
    printf '%q ' "$@" > "$RUN/$name.cmd"
    # The process outlives this shell: its own process group (job control on for this
    # start), so a Ctrl-C typed here does not reach it, and nohup, so a closed terminal
    # does not either. Not its own session (setsid): Linux's autogroup scheduler gives
    # each session one fair share of the CPU, so a session per process let an idle proxy
    # claim as much as the busy leader: on two cores 12k writes/s with p99 23 ms, against
    # 18-19k and 6 ms with the cluster in one session (docs/operations.md, "CPU").
    local job_control=0
    [[ $- == *m* ]] && job_control=1
    set -m
    nohup "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
    (( job_control )) || set +m
}

restart_process() { # name: start again with the recorded command line
    local name="$1" cmd
    [[ -f "$RUN/$name.cmd" ]] || die "no recorded command line for $name (was it started by ./on.sh?)"
    cmd="$(cat "$RUN/$name.cmd")"
    eval "start_process $name $cmd"
}

stop_process() { # name [timeout_s]: SIGTERM, wait, SIGKILL; prints how it ended
    local name="$1" timeout="${2:-15}" pid waited=0
    pid="$(pid_of "$name")" || { echo "not running"; rm -f "$RUN/$name.pid"; return 0; }
    kill -CONT "$pid" 2>/dev/null || true   # a paused process cannot handle SIGTERM
    kill -TERM "$pid" 2>/dev/null || true
    # An exited process that nobody reaped yet (a zombie, whose parent here is PID 1) is
    # gone too: its state is Z.
    alive() { kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
    while alive "$pid" && (( waited < timeout * 10 )); do
        sleep 0.1; waited=$((waited + 1))
    done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        echo "killed (did not stop within ${timeout}s)"
    else
        echo "stopped gracefully ($(awk "BEGIN{printf \"%.1f\", $waited/10}")s)"
    fi
    rm -f "$RUN/$name.pid"
}

# The local fabric's ports: broker-1 5555 (clients) / 5556 (nodes), broker-2 5565 / 5566,
# proxy-1 5557 (publishers) / 5558 (subscribers), proxy-2 5567 / 5568; HTTP status ports
# reference 7090, broker-1 7091, broker-2 7092, proxy-1 7093, proxy-2 7094.
fabric_port() { # name frontend|backend|status -> port
    local name="$1" which="$2" i=0
    [[ "$name" == *-* ]] && i="$(( ${name##*-} - 1 ))"
    case "$name:$which" in
        reference:status) echo 7090 ;;
        broker-*:frontend) echo $((5555 + 10 * i)) ;;
        broker-*:backend) echo $((5556 + 10 * i)) ;;
        broker-*:status) echo $((7091 + i)) ;;
        proxy-*:frontend) echo $((5557 + 10 * i)) ;;
        proxy-*:backend) echo $((5558 + 10 * i)) ;;
        proxy-*:status) echo $((7093 + i)) ;;
        *) die "no port for $name $which" ;;
    esac
}

fabric_endpoint() { # name frontend|backend -> tcp://127.0.0.1:port
    echo "tcp://127.0.0.1:$(fabric_port "$1" "$2")"
}

fabric_list() { # size broker_frontend|broker_backend|proxy_frontend|proxy_backend -> a,b
    local size="$1" kind="${2%%_*}" which="${2#*_}" i list=""
    for i in $(seq 1 "$size"); do list+="${list:+,}$(fabric_endpoint "$kind-$i" "$which")"; done
    echo "$list"
}

status_port() { # node-N -> status port
    echo $((7000 + ${1#node-}))
}

docker_compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$COMPOSE_PROJECT" -f "$ROOT/docker-compose.yml" "$@"
    else
        docker-compose -p "$COMPOSE_PROJECT" -f "$ROOT/docker-compose.yml" "$@"
    fi
}

http_get() { # host port path -> body on stdout (no curl needed; 1 s timeout)
    timeout 1 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$3" "$1" >&3
        sed "1,/^\r\{0,1\}$/d" <&3
    ' _ "$1" "$2" "$3" 2>/dev/null
}
