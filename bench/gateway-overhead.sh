#!/usr/bin/env bash
# The HTTP gateway's overhead against a direct gRPC Solve (docs/benchmarks.md): the same
# seeded closed-loop workload (budget 4, every level) through `ponder-load --protocol
# grpc` and `--protocol openai` against one `ponder up`, alternating
# grpc, openai, openai, grpc so that drift on a shared host hits both alike; unary and
# streaming. Prints each run's p50 and p99 and the openai/grpc ratios.
#
#   bench/gateway-overhead.sh [REQUESTS]      # default 200 per run
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-200}"
cargo build --release -q -p ponder-cli -p ponder-load
out="$(mktemp -d)"
grpc_addr=127.0.0.1:50771
http_addr=127.0.0.1:18771
target/release/ponder up --default-only --orchestrator-addr "$grpc_addr" \
    --gateway-addr "$http_addr" > "$out/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    grep -q "gateway listening" "$out/up.log" && break
    sleep 0.5
done
grep -q "gateway listening" "$out/up.log" || { cat "$out/up.log"; exit 1; }

run() { # NAME PROTOCOL ADDR [--stream]
    local name=$1 protocol=$2 addr=$3
    shift 3
    target/release/ponder-load run --protocol "$protocol" --addr "$addr" \
        --concurrency 2 --requests "$requests" --warmup 2s --seed 1 \
        --mix weighted_best_of_n:4 --json "$out/$name.json" --quiet "$@" > /dev/null
}
# The first minute after start-up is slower (page cache, allocator, branch history): a
# discarded run of each protocol first.
run warm-grpc grpc "$grpc_addr"
run warm-openai openai "http://$http_addr"
for mode in unary stream; do
    flag=()
    [ "$mode" = stream ] && flag=(--stream)
    run "$mode-grpc-1" grpc "$grpc_addr" "${flag[@]}"
    run "$mode-openai-1" openai "http://$http_addr" "${flag[@]}"
    run "$mode-openai-2" openai "http://$http_addr" "${flag[@]}"
    run "$mode-grpc-2" grpc "$grpc_addr" "${flag[@]}"
done
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
def load(name):
    return json.load(open(f"{out}/{name}.json"))
print(f"{'run':<18}{'ok':>5}{'p50 ms':>9}{'p99 ms':>9}{'accuracy':>10}")
for mode in ["unary", "stream"]:
    runs = {p: [load(f"{mode}-{p}-{i}") for i in (1, 2)] for p in ["grpc", "openai"]}
    for p, rs in runs.items():
        for i, r in enumerate(rs, 1):
            lat = r["latency"]
            print(f"{mode + '-' + p + '-' + str(i):<18}{r['ok']:>5}{lat['p50']*1e3:>9.1f}{lat['p99']*1e3:>9.1f}{r['accuracy']:>10.3f}")
    for q in ["p50", "p99"]:
        g = sum(r["latency"][q] for r in runs["grpc"]) / 2
        o = sum(r["latency"][q] for r in runs["openai"]) / 2
        print(f"{mode} {q}: openai/grpc = {o / g:.3f} ({(o - g) * 1e3:+.1f} ms)")
EOF
