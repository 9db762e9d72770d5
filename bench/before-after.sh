#!/usr/bin/env bash
# Before/after comparison of two builds of the benchmark binaries on fixed workloads:
# wall-clock medians of alternating runs, and (with --callgrind) instruction counts,
# which are stable on a noisy host. A command, not a test (docs/benchmarks.md).
#
#   bench/before-after.sh [--callgrind] [--runs 5] [--workloads a,b] BEFORE_DIR AFTER_DIR
#
# Workloads: decode-n1, decode-n16, cluster-query (the default set), and decode-stop
# (one greedy 2,000-token sequence with a stop string that never matches: what checking
# stop strings costs per token; wall clock only, too long for callgrind).
#
# Each *_DIR holds engine-bench and cluster-bench (copied from target/release) and a
# models/ directory for cluster-bench. PONDER_SMOLLM2_GGUF names the GGUF for
# engine-bench (.ci/run installs it). Under callgrind the engine runs on one thread
# (RAYON_NUM_THREADS=1) so that no spinning pool thread adds instructions; the before
# and after runs of one workload go side by side, one core each.
set -euo pipefail

callgrind=0
runs=5
workloads=(decode-n1 decode-n16 cluster-query)
while [ $# -gt 2 ]; do
    case "$1" in
        --callgrind) callgrind=1; shift ;;
        --runs) runs="$2"; shift 2 ;;
        --workloads) IFS=, read -r -a workloads <<< "$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 2 ] || { echo "usage: $0 [--callgrind] [--runs N] BEFORE_DIR AFTER_DIR" >&2; exit 2; }
: "${PONDER_SMOLLM2_GGUF:?set PONDER_SMOLLM2_GGUF to the SmolLM2 GGUF}"
dirs=("$1" "$2")
names=(before after)

# name -> command line (relative to a build dir)
workload() {
    case "$1" in
        decode-n1) echo "engine-bench --model $PONDER_SMOLLM2_GGUF --decode-only 1 --tokens 64" ;;
        decode-n16) echo "engine-bench --model $PONDER_SMOLLM2_GGUF --decode-only 16 --tokens 32" ;;
        cluster-query) echo "cluster-bench --models MODELS --budgets 16 --per-level 1 --only-question 3" ;;
        decode-stop) echo "engine-bench --model $PONDER_SMOLLM2_GGUF --decode-only 1 --tokens 2000 --stop <never>" ;;
        *) echo "unknown workload $1" >&2; exit 2 ;;
    esac
}

run_one() { # dir workload -> prints seconds
    local dir="$1" cmd
    cmd="$(workload "$2")"
    cmd="${cmd/MODELS/$dir/models}"
    local t0 t1
    t0=$(date +%s.%N)
    "$dir"/$cmd > /dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for w in "${workloads[@]}"; do
    declare -a t_before=() t_after=()
    for ((i = 0; i < runs; i++)); do
        t_before+=("$(run_one "${dirs[0]}" "$w")")
        t_after+=("$(run_one "${dirs[1]}" "$w")")
    done
    med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    mb=$(med "${t_before[@]}")
    ma=$(med "${t_after[@]}")
    printf '%-14s wall median of %d: before %.3f s, after %.3f s (after/before %.3f)\n' \
        "$w" "$runs" "$mb" "$ma" "$(echo "$ma / $mb" | bc -l)"
done

if [ "$callgrind" = 1 ]; then
    out=$(mktemp -d)
    for w in "${workloads[@]}"; do
        [ "$w" = decode-stop ] && continue
        declare -a ir=()
        for k in 0 1; do
            cmd="$(workload "$w")"
            cmd="${cmd/MODELS/${dirs[$k]}/models}"
            RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/$w.${names[$k]}" \
                "${dirs[$k]}"/$cmd > /dev/null 2> "$out/$w.${names[$k]}.log" &
        done
        wait
        for k in 0 1; do
            ir+=("$(grep -m1 '^summary:' "$out/$w.${names[$k]}" | awk '{print $2}')")
        done
        printf '%-14s instructions: before %s, after %s (after/before %.4f)\n' \
            "$w" "${ir[0]}" "${ir[1]}" "$(echo "${ir[1]} / ${ir[0]}" | bc -l)"
    done
    echo "callgrind files: $out"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
