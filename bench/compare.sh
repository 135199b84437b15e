#!/usr/bin/env bash
# The comparison benchmark: paxos-zmq against etcd, on this machine, with the same load,
# in turns.
#
#   bench/compare.sh                 3 rounds of 10 s per load (about 4 minutes)
#   BENCH_ROUNDS=5 BENCH_SECONDS=15 bench/compare.sh
#   BENCH_LOADS="1 put=100" bench/compare.sh      one load only
#
# paxos-zmq: ./on.sh --no-bots (3 nodes, brokers and proxies in pairs, on loopback),
# loaded with `bots load`, the tool users run. etcd: 3 members on loopback (ports
# 2379/22379/32379), loaded by bench/etcd-load — the same closed loop: N clients, each
# waiting for its answer, 256-byte values, 1,000 keys, linearizable gets. For each round
# and each load, ours runs, then etcd's: a busy moment of a shared machine hits both.
# Prints every run, then the medians and the ratios (paxos-zmq / etcd).
#
# Without `etcd` on the PATH (Debian: apt-get install etcd-server) it says so and runs
# ours alone. It refuses to run beside a cluster already started by ./on.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${BENCH_ROUNDS:-3}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
# "clients mix" per load; BENCH_LOADS picks some, e.g. BENCH_LOADS="1 put=100" (loads
# separated by commas).
LOADS=("1 put=100" "64 put=100" "64 get=100")
if [[ -n "${BENCH_LOADS:-}" ]]; then
    IFS=',' read -r -a LOADS <<<"$BENCH_LOADS"
fi
OUT=target/bench-compare
ETCD_DIR="$OUT/etcd"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

ETCD_BIN="$(command -v etcd || true)"
if [[ -z "$ETCD_BIN" ]]; then
    echo "etcd is not on the PATH (Debian: apt-get install etcd-server): running paxos-zmq alone."
fi

say "building the release binaries"
cargo build --release --bins
if [[ -n "$ETCD_BIN" ]]; then
    CARGO_TARGET_DIR="$PWD/target/etcd-load" cargo build --release \
        --manifest-path bench/etcd-load/Cargo.toml
    ETCD_LOAD="$PWD/target/etcd-load/release/etcd-load"
fi

ETCD_PIDS=()
STARTED_OURS=0
cleanup() {
    for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ "$STARTED_OURS" == 1 ]]; then ./off.sh --clean >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "starting paxos-zmq (./on.sh --no-bots)"
on_output="$(./on.sh --no-bots 2>&1)" || {
    echo "$on_output"
    exit 1
}
if [[ "$on_output" == *"already running"* ]]; then
    echo "a cluster started by ./on.sh is running: stop it (./off.sh) so both systems start alike."
    exit 1
fi
STARTED_OURS=1

if [[ -n "$ETCD_BIN" ]]; then
    say "starting etcd ($("$ETCD_BIN" --version | head -1)), 3 members"
    rm -rf "$ETCD_DIR"
    mkdir -p "$ETCD_DIR"
    cluster="e1=http://127.0.0.1:2380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
    for i in 1 2 3; do
        case $i in 1) c=2379 p=2380 ;; 2) c=22379 p=22380 ;; 3) c=32379 p=32380 ;; esac
        "$ETCD_BIN" --name "e$i" --data-dir "$ETCD_DIR/e$i" \
            --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token paxos-zmq-bench --logger zap --log-level error \
            >"$ETCD_DIR/e$i.log" 2>&1 &
        ETCD_PIDS+=($!)
    done
    for _ in $(seq 1 100); do
        if "$ETCD_LOAD" --clients 1 --seconds 0.2 --mix put=1 --json 2>/dev/null \
            | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["ops"]>0 and r["errors"]==0 else 1)' 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
fi

run_ours() { # clients mix
    target/release/bots load --clients "$1" --mix "$2" --duration "${SECONDS_PER_RUN}s" --json --quiet
}
run_etcd() { # clients mix
    "$ETCD_LOAD" --clients "$1" --mix "$2" --seconds "$SECONDS_PER_RUN" --json
}
record() { # system clients mix round json
    python3 - "$@" >>"$RESULTS" <<'EOF'
import json, sys
system, clients, mix, rnd, report = sys.argv[1:6]
r = json.loads(report)
print(json.dumps({"system": system, "clients": int(clients), "mix": mix, "round": int(rnd),
                  "ops_per_sec": r["ops_per_sec"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                  "errors": r["errors"]}))
print(f"  {system:9} {clients:>3} clients {mix:8} round {rnd}: {r['ops_per_sec']:>8.0f} ops/s"
      f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}", file=sys.stderr)
EOF
}

for round in $(seq 1 "$ROUNDS"); do
    say "round $round of $ROUNDS"
    for load in "${LOADS[@]}"; do
        read -r clients mix <<<"$load"
        record paxos-zmq "$clients" "$mix" "$round" "$(run_ours "$clients" "$mix")"
        if [[ -n "$ETCD_BIN" ]]; then
            record etcd "$clients" "$mix" "$round" "$(run_etcd "$clients" "$mix")"
        fi
    done
done

say "medians over $ROUNDS rounds of ${SECONDS_PER_RUN} s (ratio: paxos-zmq / etcd)"
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
loads = []
for r in rows:
    key = (r["clients"], r["mix"])
    if key not in loads:
        loads.append(key)
def median(system, key, field):
    values = [r[field] for r in rows if (r["clients"], r["mix"]) == key and r["system"] == system]
    return statistics.median(values) if values else None
def cell(v, fmt):
    return "-" if v is None else format(v, fmt)
def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"
name = {"put=100": "puts", "get=100": "linearizable gets"}
print("| load | paxos-zmq ops/s | etcd ops/s | ratio | paxos-zmq p50 ms | etcd p50 ms | ratio | paxos-zmq p99 ms | etcd p99 ms | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for key in loads:
    ours = {f: median("paxos-zmq", key, f) for f in ("ops_per_sec", "p50_ms", "p99_ms")}
    etcd = {f: median("etcd", key, f) for f in ("ops_per_sec", "p50_ms", "p99_ms")}
    label = f"{key[0]} client{'s' if key[0] > 1 else ''}, {name.get(key[1], key[1])}"
    print(f"| {label} | {cell(ours['ops_per_sec'], ',.0f')} | {cell(etcd['ops_per_sec'], ',.0f')} | {ratio(ours['ops_per_sec'], etcd['ops_per_sec'])} "
          f"| {cell(ours['p50_ms'], '.2f')} | {cell(etcd['p50_ms'], '.2f')} | {ratio(ours['p50_ms'], etcd['p50_ms'])} "
          f"| {cell(ours['p99_ms'], '.2f')} | {cell(etcd['p99_ms'], '.2f')} | {ratio(ours['p99_ms'], etcd['p99_ms'])} |")
errors = sum(r["errors"] for r in rows)
print(f"\n{len(rows)} runs, {errors} errors; every run in {sys.argv[1]}")
EOF
