#!/usr/bin/env bash
# One client flooding, another waiting (docs/security.md, "Bounded compute"): bob's
# latency (weighted best-of-N, budget 4, one at a time; VICTIM_REQUESTS measured, default
# 100; VICTIM_MIX for another mix) unloaded, then while alice keeps 4 DVTS searches of
# width 1 at budget 256 in flight. Bundled models on 127.0.0.1 ports 47100-47102. Extra
# arguments go to the orchestrator, e.g. --budget-mode fixed; GENERATOR_ARGS and
# VERIFIER_ARGS (space-separated) go to the workers.
#
#   cargo build --release -p ponder-cli -p ponder-load
#   OUT=/tmp/h2 deploy/local/h2-flood.sh [orchestrator flags...]
#
# PONDER_BIN picks another ponder binary (default target/release/ponder), for A/B runs.
#
# Prints bob's latency summary (seconds) for both phases, then alice's outcome: the
# flood runs for FLOOD_SECONDS (default 60) and its searches in flight then get the
# load driver's grace to finish. The ponder-load reports are in $OUT (default: a fresh
# temporary directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${PONDER_BIN:-target/release/ponder}; load=target/release/ponder-load
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
extra=("$@")
A=alice-key-0123456789abcdef; B=bob-key-0123456789abcdef0
printf 'alice:%s\nbob:%s\n' "$A" "$B" > "$out/keys"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
read -r -a gen_args <<< "${GENERATOR_ARGS:-}"
read -r -a ver_args <<< "${VERIFIER_ARGS:-}"
$bin node generator --model models --listen 127.0.0.1:47101 "${gen_args[@]}" > "$out/g.log" 2>&1 & pids+=($!)
$bin node verifier --model models --listen 127.0.0.1:47102 "${ver_args[@]}" > "$out/v.log" 2>&1 & pids+=($!)
sleep 4
PONDER_API_KEYS_FILE="$out/keys" $bin node orchestrator --listen 127.0.0.1:47100 \
  --generators 127.0.0.1:47101 --verifiers 127.0.0.1:47102 "${extra[@]}" > "$out/o.log" 2>&1 & pids+=($!)
sleep 4
victim() {
  $load run --addr 127.0.0.1:47100 --token "$B" --concurrency 1 \
    --requests "${VICTIM_REQUESTS:-100}" --warmup 2s \
    --mix "${VICTIM_MIX:-weighted_best_of_n:4}" --levels 1=1,2=1,3=1 --seed 3 --quiet --json "$out/$1.json" > /dev/null
  python3 -c "import json;r=json.load(open('$out/$1.json'));l=r['latency'] if 'latency' in r else r;print('$1', json.dumps(l)[:400])"
}
victim unloaded
$load run --addr 127.0.0.1:47100 --token "$A" --concurrency 4 --duration "${FLOOD_SECONDS:-60}s" --grace 130s \
  --mix dvts:1:256 --levels 4=1,5=1,6=1 --seed 5 --quiet --json "$out/flood.json" \
  > "$out/flood.log" 2>&1 & fpid=$!
sleep 5
victim flooded
wait $fpid || true
python3 -c "import json;r=json.load(open('$out/flood.json'));print('alice sent', r['sent'], \
  'ok', r['ok'], 'errors', r['errors'], 'mean generations', r['mean_generations'], \
  'latency', json.dumps(r['latency'])[:200])"
