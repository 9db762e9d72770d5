#!/usr/bin/env bash
# A recording for the load-adaptive scenarios on the recorded backend
# (bench/load-adaptive/scenario.py; docs/load-adaptive.md, "Losing a generator" and
# "Four orchestrators").
#
#   cargo build --release -p ponder-cli -p ponder-load
#   bench/load-adaptive/record.sh [REC]
#
# An adaptive query asks for what a fixed query of its grant asks: compute-optimal's
# probes, then the policy's choice for the granted budget, in waves whose seeds do not
# depend on the budget (docs/scaling.md, "What it answers"). So the real engine (`ponder
# up --default-only`, FIXED budgets) answers the first $CYCLE requests of the scale
# harness's sequence (seed 1) once at each budget the controller grants on the shipped
# curves (1, 2, 4, 8, 16), every answer appended to REC, and a recorded cluster can then
# replay adaptive runs over the same cycle. A call outside it fails loudly ("not in the
# recording"), and the scenario counts those.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
REC="${1:-data/scaling/recording-adaptive}"
CYCLE="${CYCLE:-300}"
BUDGETS="${BUDGETS:-16 8 4 2 1}"
ponder=target/release/ponder
load=target/release/ponder-load
for b in "$ponder" "$load"; do
    [ -x "$b" ] || { echo "no $b; cargo build --release -p ponder-cli -p ponder-load" >&2; exit 1; }
done
rm -rf "$REC" && mkdir -p "$REC"
log="$REC/up.log"
PONDER_POLICY="$repo/models/arith-policy.json" "$ponder" up --default-only --no-gateway \
    --orchestrator-addr 127.0.0.1:50991 --budget-mode fixed --record-calls "$REC" >"$log" 2>&1 &
up_pid=$!
trap 'kill -TERM "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true' EXIT
until grep -q "orchestrator listening" "$log"; do
    kill -0 "$up_pid" 2>/dev/null || { tail -n 20 "$log" >&2; exit 1; }
    sleep 0.5
done
for b in $BUDGETS; do
    echo "recording $CYCLE requests at fixed budget $b $(date +%T)"
    "$load" run --addr 127.0.0.1:50991 --concurrency 4 --requests "$CYCLE" --quiet \
        --mix "default:$b/fixed" --seed 1 --cycle "$CYCLE" --slo 10s \
        --json "$REC/recorded-b$b.json"
done
# The latency fits of this machine (ponder fit-latency), beside each recording.
for d in "$REC"/generator-* "$REC"/verifier-*; do
    cp "bench/results/scaling/latency/$(basename "$d")/latency.json" "$d/"
done
echo "recorded into $REC $(date +%T)"
