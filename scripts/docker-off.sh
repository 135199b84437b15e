#!/usr/bin/env bash
# ./off.sh --docker: fault drills through docker, or compose down.
# Arguments: ACTION (stop|kill|pause|resume|restart) TARGET CLEAN (from off.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ACTION="$1"; TARGET="${2:-}"; CLEAN="${3:-0}"
service="${TARGET/node-/node}"   # node-2 -> node2 (compose service names)
case "$ACTION" in
    kill) docker_compose kill -s KILL "$service"; say "$TARGET killed (docker kill). ./off.sh --docker --restart $TARGET brings it back." ;;
    pause) docker_compose pause "$service"; say "$TARGET paused (docker pause)." ;;
    resume) docker_compose unpause "$service"; say "$TARGET resumed (docker unpause)." ;;
    restart) docker_compose up -d --no-deps "$service" >/dev/null 2>&1 || true; docker_compose restart "$service"; say "$TARGET restarted." ;;
    stop)
        bold "docker compose down"
        docker_compose --profile client down --remove-orphans --timeout 20
        left="$(docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" -q)"
        [[ -z "$left" ]] || die "containers left behind: $left"
        if (( CLEAN )); then rm -rf "$DATA"; say "Deleted $DATA."; fi
        ;;
esac
