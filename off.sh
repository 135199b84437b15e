#!/usr/bin/env bash
# Stops the paxos-zmq cluster started by ./on.sh, or runs a fault drill on one node.
#
#   ./off.sh                    stop everything gracefully (SIGTERM, state flushed), report
#   ./off.sh --clean            ... and delete data/
#   ./off.sh --kill node-2      SIGKILL one process (kill -9: no flush, like a power cut)
#   ./off.sh --pause node-2     SIGSTOP it (frozen: a slow or partitioned process)
#   ./off.sh --resume node-2    SIGCONT it
#   ./off.sh --restart node-2   stop it (if it runs) and start it again with its old flags
#   ./off.sh --stop bot-1       stop one process gracefully (SIGTERM)
#   ./off.sh --docker [...]     the same against the docker compose deployment
# Any process name works: node-N, broker-1, broker-2, proxy-1, proxy-2, reference, bot-N.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

ACTION=stop
TARGET=""
CLEAN=0
DOCKER=0
while (( $# )); do
    case "$1" in
        --kill|--pause|--resume|--restart|--stop) ACTION="${1#--}"; TARGET="${2:?$1 needs a process name, e.g. node-2}"; shift 2 ;;
        --clean) CLEAN=1; shift ;;
        --docker) DOCKER=1; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see ./off.sh --help)" ;;
    esac
done

if (( DOCKER )); then
    exec "$ROOT/scripts/docker-off.sh" "$ACTION" "$TARGET" "$CLEAN"
fi

if [[ -n "$TARGET" && ! -f "$RUN/$TARGET.cmd" ]]; then
    die "unknown process '$TARGET' (known: $(known_processes | tr '\n' ' '))"
fi

case "$ACTION" in
    kill)
        pid="$(pid_of "$TARGET")" || die "$TARGET is not running"
        kill -KILL "$pid"
        say "$TARGET (pid $pid) killed with SIGKILL. ./off.sh --restart $TARGET brings it back."
        ;;
    pause)
        pid="$(pid_of "$TARGET")" || die "$TARGET is not running"
        kill -STOP "$pid"
        say "$TARGET (pid $pid) paused with SIGSTOP. ./off.sh --resume $TARGET continues it."
        ;;
    resume)
        pid="$(pid_of "$TARGET")" || die "$TARGET is not running"
        kill -CONT "$pid"
        say "$TARGET (pid $pid) resumed with SIGCONT."
        ;;
    restart)
        if pid_of "$TARGET" >/dev/null; then
            say "$TARGET: $(stop_process "$TARGET")"
        fi
        restart_process "$TARGET"
        say "$TARGET restarted (pid $(cat "$RUN/$TARGET.pid")), log ${LOGS#"$ROOT"/}/$TARGET.log"
        ;;
    stop)
        if [[ -n "$TARGET" ]]; then
            say "$TARGET: $(stop_process "$TARGET")"
            exit 0
        fi
        names="$(known_processes)"
        if [[ -z "$names" ]]; then
            say "Nothing is running."
        else
            bold "Stopping the cluster"
            printf '%-10s %s\n' PROCESS RESULT
            # Load first, then the replicas (each flushes its WAL and store.json), then
            # the fabric they talk through.
            order="$(grep '^prometheus' <<<"$names" || true)"
            order+=" $(grep '^bot-' <<<"$names" || true) $(grep '^node-' <<<"$names" || true)"
            order+=" $(grep '^broker-' <<<"$names" || true) $(grep '^proxy-' <<<"$names" || true) reference"
            for name in $order; do
                [[ -f "$RUN/$name.pid" ]] || continue
                printf '%-10s %s\n' "$name" "$(stop_process "$name" 15)"
            done
            leftover="$(pgrep -f "^$BIN/(reference|proxy|broker|node|bots) " || true)"
            if [[ -n "$leftover" ]]; then
                say "warning: processes of this cluster still run: $leftover" >&2
            fi
        fi
        if (( CLEAN )); then
            rm -rf "$DATA"
            say "Deleted $DATA."
        fi
        ;;
esac
