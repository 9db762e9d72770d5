#!/usr/bin/env bash
# Load-adaptive budgets against fixed budgets and a queue-threshold switch
# (docs/load-adaptive.md, "Measured"). For every mode, the same seeded Poisson arrivals
# and question sequence at each offered load, on a fresh embedded cluster
# (`ponder up --default-only`, one generator and one verifier on this machine).
#
#   bench/load-adaptive/run.sh KNEE [MAIN_REQUESTS] [OUT]
#
# KNEE is fixed budget 16's knee in queries/s (`ponder-load sweep`). Offered loads are
# 0.25, 0.5, 1, 2, 3 and 4 x KNEE; the points at 1, 2 and 3 x send MAIN_REQUESTS queries
# (default 300), the others (indicative) fewer: max(16, min(MAIN/2, MAIN x load/3)). Modes: fixed 1, 2, 4, 8, 16; the switch
# (16 below load 1, 4 at or above); adaptive (the price law read off the load, maximum
# 16); capacity (the price law solved from arrivals against CAPACITY generations per
# second per generator node: --capacity, docs/load-adaptive.md "The capacity law"; only
# when CAPACITY is set). SLO 10 s, given to the server's controller too (--slo 10) in
# the modes that adapt; CONTROL adds flags (e.g. CONTROL="--queries-per-node 3").
# CLUSTER=processes runs the multi-process cluster instead (deploy/local/run-cluster.sh:
# etcd, one generator, one verifier and one orchestrator as separate processes, the
# same models and policy; the server's flags go in as PONDER_* variables).
# Then bench/load-adaptive/report.py writes the table and the plot.
set -euo pipefail
cd "$(dirname "$0")/../.."
knee=${1:?usage: run.sh KNEE [MAIN_REQUESTS] [OUT]}
main=${2:-300}
out=${3:-bench/results/load-adaptive}
mkdir -p "$out"
ponder=target/release/ponder
load=target/release/ponder-load
port=50161
multipliers="${MULTIPLIERS:-0.25 0.5 1 2 3 4}"
modes="${MODES:-fixed16 adaptive ${CAPACITY:+capacity} switch fixed4 fixed8 fixed2 fixed1}"
for mode in $modes; do
    server=()
    case $mode in
        fixed*) mix="default:${mode#fixed}/fixed" ;;
        switch) mix="default:16/adaptive"; server=(--slo 10 --budget-law switch --switch-budget 4 ${CONTROL:-}) ;;
        adaptive) mix="default:16/adaptive"; server=(--slo 10 ${CONTROL:-}) ;;
        capacity) mix="default:16/adaptive"
            server=(--slo 10 --capacity "${CAPACITY:?the capacity mode needs CAPACITY}" ${CONTROL:-}) ;;
    esac
    if [ "${CLUSTER:-embedded}" = processes ]; then
        # The same flags as the orchestrator's environment (clap reads PONDER_*).
        vars=(PONDER_POLICY="$PWD/models/arith-policy.json")
        set -- "${server[@]+"${server[@]}"}"
        while [ $# -gt 0 ]; do
            name="PONDER_$(echo "${1#--}" | tr 'a-z-' 'A-Z_')"
            vars+=("$name=$2"); shift 2
        done
        env "${vars[@]}" deploy/local/run-cluster.sh --generators 1 --verifiers 1 \
            --port "$port" --cluster "adaptive-$mode" --timeout 300 \
            >"$out/$mode.server.log" 2>&1 &
        pid=$!
        ready="(Ctrl-C stops the cluster)"
    else
        "$ponder" up --default-only --no-gateway --orchestrator-addr "127.0.0.1:$port" \
            "${server[@]+"${server[@]}"}" >"$out/$mode.server.log" 2>&1 &
        pid=$!
        ready="listening on"
    fi
    for _ in $(seq 300); do
        grep -qF "$ready" "$out/$mode.server.log" && break
        sleep 1
    done
    for m in $multipliers; do
        rate=$(python3 -c "print(round($knee * $m, 4))")
        n=$(python3 -c "print($main if $m in (1, 2, 3) else max(16, min($main // 2, int($main * $m / 3))))")
        echo "== $mode at ${m}x ($rate/s, $n queries) $(date +%T)"
        "$load" run --addr "127.0.0.1:$port" --rate "$rate" --requests "$n" --seed 7 \
            --mix "$mix" --slo 10s --grace 60s --quiet \
            --json "$out/$mode-x$m.json" --records "$out/$mode-x$m.jsonl" || true
        sleep 5
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    sleep 2
done
echo "done $(date +%T)"
