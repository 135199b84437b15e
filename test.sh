#!/usr/bin/env bash
# Runs every test of paxos-zmq, from a fresh clone, on one machine:
#   1. unit and property tests of every crate, the seeded Paxos fault simulator,
#      both ZeroMQ backends of the transport;
#   2. end-to-end tests over real processes on loopback (kill -9, SIGSTOP, crash points,
#      corrupt WALs, the on/off/status scripts), Prometheus scraping a live cluster, and
#      the nodes' web console in headless Chromium;
#   3. the docker-compose tests when a Docker engine answers (skipped, and said so, when not).
# Usage: ./test.sh [--quick]   (--quick: step 1 only)
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building the release binaries (the end-to-end tests run them)"
cargo build --release --bins

step "unit, property and simulator tests (all crates, both transport backends)"
cargo test --workspace --exclude e2e --all-features

if [[ "${1:-}" == "--quick" ]]; then
    exit 0
fi

step "end-to-end tests over real processes (one cluster at a time)"
export PAXOS_BIN_DIR="$PWD/target/release"
cargo test -p e2e --release -- --test-threads=1

step "the operator's story through ./on.sh, ./off.sh and ./status.sh"
tests/ops.sh

step "Prometheus for real: the shipped config and every dashboard expression"
tests/monitoring.sh

step "the web console in a real browser (headless Chromium)"
tests/console.sh

if [[ -x tests/docker.sh ]]; then
    step "docker-compose tests"
    if docker info >/dev/null 2>&1; then
        tests/docker.sh
    else
        echo "SKIPPED: no Docker engine answers here (docker info failed); the docker tests did not run."
    fi
fi
