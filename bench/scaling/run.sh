#!/usr/bin/env bash
# The scale harness (docs/scaling.md): record a real run once, then sweep clusters of N
# recorded generator nodes, ceil(N/4) recorded verifiers and K orchestrators, all
# separate processes on loopback with a real etcd (deploy/local/run-cluster.sh), and
# find each cluster's knee with ponder-load.
#
#   cargo build --release -p ponder-cli -p ponder-load
#   NS="1 2 4 8" KS="1" bench/scaling/run.sh
#
# Every run uses the mix and SLO of docs/load-testing.md in FIXED budget mode (the
# recorded nodes replay a fixed-budget recording; an adaptive budget replays only where
# it stays within it), ponder-arith levels 1-6, seed 1, the first $CYCLE requests of
# that sequence cycled (the recording holds exactly those).
#
# Environment: NS, KS (sizes), CYCLE (requests recorded, 300), STEP_S (seconds per sweep
# step, 60), GENERATORS_PER_VERIFIER (M = ceil(N / it), 4), RATES_PER_NODE (the sweep's
# rates per generator node, "0.6,0.8,1,1.2,1.4"), REC (the recording,
# data/scaling/recording), OUT (bench/results/scaling), REAL (1: first sweep the real
# engine at N=1 as the reference; 0: skip it), SLOWDOWN (D, 1: time dilation, below).
#
# Time dilation (SLOWDOWN=D): every modelled time of the recorded nodes is D times the
# fit (a what-if latency.json beside links to the recording), the SLO is D times 10 s,
# and the rates are divided by D. A cluster of N dilated nodes then needs the
# orchestrator, etcd and the driver to do only N/D nodes' worth of work per second, so
# a 2-core machine can run N = 64 (docs/scaling.md, "Time dilation"). What it does not
# dilate is the orchestrator's own time per query: its ceiling is measured apart
# (bench/scaling/probe.py cpu).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"

NS="${NS:-1 2 4 8 16 32 64}"
KS="${KS:-1 4}"
CYCLE="${CYCLE:-300}"
STEP_S="${STEP_S:-60}"
RATES_PER_NODE="${RATES_PER_NODE:-0.6,0.8,1,1.2,1.4}"
GENERATORS_PER_VERIFIER="${GENERATORS_PER_VERIFIER:-4}"
REC="${REC:-data/scaling/recording}"
OUT="${OUT:-bench/results/scaling}"
MIX="default:16/fixed"
SLOWDOWN="${SLOWDOWN:-1}"
case "$SLOWDOWN" in ''|*[!0-9]*|0) echo "SLOWDOWN must be a whole number >= 1" >&2; exit 1 ;; esac
SLO="$((10 * SLOWDOWN))s"
SEED=1
ponder=target/release/ponder
load=target/release/ponder-load
for b in "$ponder" "$load"; do
    [ -x "$b" ] || { echo "no $b; cargo build --release -p ponder-cli -p ponder-load" >&2; exit 1; }
done
mkdir -p "$OUT" "$REC"
work="$(mktemp -d "${TMPDIR:-/tmp}/ponder-scale.XXXXXX")"
cluster_pid=""
cleanup() {
    if [ -n "$cluster_pid" ]; then
        kill -TERM "$cluster_pid" 2>/dev/null || true
        wait "$cluster_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Orchestrators admit the whole sweep's load from one client (the driver), and route
# with the bundled compute-optimal policy, as `ponder up` (which recorded) does.
export PONDER_MAX_QUERIES=4096 PONDER_MAX_QUERIES_PER_CLIENT=0 PONDER_BUDGET_MODE=fixed
export PONDER_POLICY="$repo/models/arith-policy.json"

workload=(--mix "$MIX" --seed "$SEED" --cycle "$CYCLE" --slo "$SLO")

# 1. The recording: the real engine (`ponder up`, the default generator and the
#    verifier) answers the first $CYCLE requests once, every answer kept.
gen_rec="$(ls -d "$REC"/generator-* 2>/dev/null | head -n 1 || true)"
if [ -z "$gen_rec" ] || [ ! -f "$REC/recorded.json" ]; then
    echo "recording $CYCLE requests on the real engine into $REC"
    rm -rf "$REC" && mkdir -p "$REC"
    "$ponder" up --default-only --no-gateway --orchestrator-addr 127.0.0.1:50990 \
        --budget-mode fixed --record-calls "$REC" >"$work/up.log" 2>&1 &
    up_pid=$!
    until grep -q "orchestrator listening" "$work/up.log"; do
        kill -0 "$up_pid" 2>/dev/null || { tail -n 20 "$work/up.log" >&2; exit 1; }
        sleep 0.5
    done
    "$load" run --addr 127.0.0.1:50990 --concurrency 4 --requests "$CYCLE" --quiet \
        "${workload[@]}" --json "$REC/recorded.json"
    kill -TERM "$up_pid"; wait "$up_pid" || true
    gen_rec="$(ls -d "$REC"/generator-* | head -n 1)"
fi
ver_rec="$(ls -d "$REC"/verifier-* | head -n 1)"
# The latency fits of this machine (ponder fit-latency), beside each recording.
for d in "$gen_rec" "$ver_rec"; do
    cp "bench/results/scaling/latency/$(basename "$d")/latency.json" "$d/"
done
# Dilated: the same recordings (linked) with every cost of the fit times D.
if [ "$SLOWDOWN" != 1 ]; then
    for d in gen_rec ver_rec; do
        dst="$work/dilated/$(basename "${!d}")"
        python3 bench/scaling/dilate.py "${!d}" "$SLOWDOWN" "$dst"
        printf -v "$d" '%s' "$dst"
    done
fi

# 2. Each size: start the cluster, sweep, stop. `sweep real 1 1` is the real engine at
#    N=1 (the same processes with the models, pinned), the reference the recorded N=1
#    must match; bench/scaling/probe.py fidelity --fresh compares the two in one run.
sweep() {   # sweep recorded|real N K
    local kind="$1" n="$2" k="$3" m=$(( ($2 + GENERATORS_PER_VERIFIER - 1) / GENERATORS_PER_VERIFIER )) tag
    tag="n$2-k$3"
    [ "$GENERATORS_PER_VERIFIER" = 4 ] || tag="n$2-m$m-k$3"
    [ "$kind" = recorded ] || tag="real-n$2"
    [ "$SLOWDOWN" = 1 ] || tag="$tag-d$SLOWDOWN"
    local rates source
    rates="$(python3 -c "import sys; print(','.join(f'{float(r)*$n/$SLOWDOWN:g}' for r in sys.argv[1].split(',')))" "$RATES_PER_NODE")"
    if [ "$kind" = recorded ]; then
        source=(--recorded-generator "$gen_rec" --recorded-verifier "$ver_rec")
    else
        # Each model node on a core of its own, as the latency fit was measured
        # (docs/scaling.md, "N = 1, call by call").
        source=(--pin)
    fi
    deploy/local/run-cluster.sh --generators "$n" --verifiers "$m" --orchestrators "$k" \
        --port 51000 "${source[@]+"${source[@]}"}" \
        --cluster "scale-$tag" --work-dir "$work/$tag" --timeout 300 >"$work/$tag.log" 2>&1 &
    cluster_pid=$!
    until grep -q "(Ctrl-C stops the cluster)" "$work/$tag.log"; do
        kill -0 "$cluster_pid" 2>/dev/null || { tail -n 30 "$work/$tag.log" >&2; exit 1; }
        sleep 0.5
    done
    # shellcheck disable=SC1091
    addrs="$(grep '^PONDER_ADDR=' "$work/$tag/cluster.env" | cut -d= -f2)"
    echo "$kind N=$n M=$m K=$k at $addrs: rates $rates"
    "$load" sweep --addr "$addrs" --connections 2 --rates "$rates" \
        --duration "${STEP_S}s" --warmup "$((5 * SLOWDOWN))s" --grace "$((20 * SLOWDOWN))s" "${workload[@]}" --quiet \
        --json "$OUT/sweep-$tag.json" | tail -n 12
    kill -TERM "$cluster_pid"; wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=""
}

# (Dilated sizes are compared with the undilated recorded ones, not with the real engine.)
[ "${REAL:-1}" = 0 ] || [ "$SLOWDOWN" != 1 ] || sweep real 1 1
for k in $KS; do
    for n in $NS; do
        sweep recorded "$n" "$k"
    done
done
