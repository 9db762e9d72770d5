#!/usr/bin/env bash
# What exporting traces costs (docs/benchmarks.md): the same seeded closed-loop workload
# (budget 4, every level) against two multi-process clusters on this machine, one
# generator, one verifier and one orchestrator each: one with --otlp-endpoint pointing
# at otlp-sink (spans built, batched and sent over OTLP/gRPC, then dropped), one
# without. Alternates off, on, on, off so that drift hits both alike. Prints each run's
# p50 and p99 and the on/off ratios.
#
#   bench/tracing-overhead.sh [REQUESTS]      # default 200 per run
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-200}"
cargo build --release -q -p ponder-cli -p ponder-load -p ponder-bench --bin ponder --bin ponder-load --bin otlp-sink
out="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
# Starts a command in the background and waits for its "listening on ADDR" line;
# prints ADDR.
start() {
    local log="$out/$1.log"
    shift
    "$@" > "$log" 2> "$log.err" &
    pids+=($!)
    for _ in $(seq 120); do
        addr=$(sed -n 's/.*listening on \(.*\)/\1/p' "$log" | head -1)
        [ -n "$addr" ] && { echo "$addr"; return; }
        sleep 0.5
    done
    cat "$log" >&2
    exit 1
}
sink=$(start sink target/release/otlp-sink --listen 127.0.0.1:0)
cluster() { # NAME [--otlp-endpoint URL]
    local name=$1
    shift
    local g v
    g=$(start "$name-gen" target/release/ponder node generator --model models "$@")
    v=$(start "$name-prm" target/release/ponder node verifier --model models/arith-prm "$@")
    start "$name-orch" target/release/ponder node orchestrator --generators "$g" --verifiers "$v" "$@"
}
off=$(cluster off)
on=$(cluster on --otlp-endpoint "http://$sink")
run() { # NAME ADDR
    target/release/ponder-load run --addr "$2" --concurrency 2 --requests "$requests" \
        --warmup 2s --seed 1 --mix weighted_best_of_n:4 --json "$out/$1.json" --quiet > /dev/null
}
run warm-off "$off"
run warm-on "$on"
run off-1 "$off"
run on-1 "$on"
run on-2 "$on"
run off-2 "$off"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
runs = {n: json.load(open(f"{out}/{n}.json")) for n in ["off-1", "on-1", "on-2", "off-2"]}
print(f"{'run':<8}{'ok':>5}{'p50 ms':>9}{'p99 ms':>9}{'queries/s':>11}")
for n, r in runs.items():
    lat = r["latency"]
    print(f"{n:<8}{r['ok']:>5}{lat['p50']*1e3:>9.1f}{lat['p99']*1e3:>9.1f}{r['throughput']:>11.2f}")
for q in ["p50", "p99"]:
    off = (runs["off-1"]["latency"][q] + runs["off-2"]["latency"][q]) / 2
    on = (runs["on-1"]["latency"][q] + runs["on-2"]["latency"][q]) / 2
    print(f"{q}: export on/off = {on / off:.3f} ({(on - off) * 1e3:+.1f} ms)")
off = (runs["off-1"]["throughput"] + runs["off-2"]["throughput"]) / 2
on = (runs["on-1"]["throughput"] + runs["on-2"]["throughput"]) / 2
print(f"throughput: export on/off = {on / off:.3f}")
PY
tail -1 "$out/sink.log.err"
