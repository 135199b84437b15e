#!/usr/bin/env bash
# The consistency report: a table of every node (rank, role, liveness, last heartbeat,
# applied slot, lag, digest, Lamport clock, clock offset, errors) and a verdict —
# CONSISTENT (exit 0), INCONSISTENT naming the nodes and the first differing key (exit 1),
# or nothing reachable (exit 2). Works with the cluster off, from data/node-*/store.json.
#   ./status.sh [--json] [--watch [1s]]   (target/release/status --help for every option)
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
if [[ ! -x "$BIN/status" ]]; then
    echo "building the status tool (cargo build --release -p status)..." >&2
    (cd "$ROOT" && cargo build --release -q -p status) >&2
fi
exec "$BIN/status" --data-dir "$DATA" "$@"
