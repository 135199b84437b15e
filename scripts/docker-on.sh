#!/usr/bin/env bash
# ./on.sh --docker: build the image (no registry) and start the compose deployment, then
# wait until every service is healthy. Arguments: NODES BOTS (from on.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
NODES="${1:-3}"
BOTS="${2:-1}"
(( NODES == 3 )) || die "the compose file defines 3 nodes (node1..node3); --nodes $NODES is for local runs"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

if [[ -n "$(docker_compose ps -q 2>/dev/null)" ]]; then
    bold "The docker deployment is already up: nothing changed."
    docker_compose ps
    exit 0
fi

start=$SECONDS
"$ROOT/scripts/docker-build.sh"
mkdir -p "$DATA/reference" "$DATA/node-1" "$DATA/node-2" "$DATA/node-3"
if [[ ! -f "$KEY_FILE" ]]; then
    # The compose secret `cluster_key` is this file (mode 0600, never overwritten).
    "$ROOT/target/docker/bin/node" keygen "$KEY_FILE" >/dev/null
    say "Made the cluster key $KEY_FILE (the compose secret cluster_key)."
fi
# ./status.sh shows the cluster that runs: three nodes and the fabric pair.
mkdir -p "$RUN"
echo 3 > "$RUN/cluster-size"
echo 2 > "$RUN/fabric-size"
services=(reference proxy-1 proxy-2 broker-1 broker-2 node1 node2 node3)
(( BOTS )) && services+=(bot1 bot2)
bold "==> docker compose up (${services[*]})"
docker_compose up -d "${services[@]}"

printf 'Waiting for every service to be healthy '
deadline=$((SECONDS + 180))
while true; do
    unhealthy=0
    for service in "${services[@]}"; do
        id="$(docker_compose ps -q "$service")"
        health="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo missing)"
        [[ "$health" == healthy ]] || unhealthy=1
    done
    (( unhealthy )) || break
    if (( SECONDS > deadline )); then
        printf '\nerror: services not healthy after 180 s:\n' >&2
        docker_compose ps >&2
        docker_compose logs --tail 20 >&2
        exit 1
    fi
    printf '.'; sleep 1
done
printf ' healthy after %ss (build included)\n\n' "$((SECONDS - start))"
docker_compose ps
cat <<TXT

Try:
  ./status.sh                                   consistency report (status ports 7001-7003)
  cat data/node-1/store.json                    a replica's state (bind-mounted)
  docker-compose -p $COMPOSE_PROJECT run --rm client       the interactive chat client
  docker-compose -p $COMPOSE_PROJECT run --rm client put k v   one-shot commands
  ./off.sh --docker --kill node-2               docker kill (also --pause/--resume/--restart)
  ./off.sh --docker --kill broker-1             the fabric is a pair: brokers and proxies too
  ./off.sh --docker                             remove every container and network
TXT
