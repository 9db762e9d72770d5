#!/usr/bin/env bash
# PRM scoring through a verifier node, two builds on the same weights and the same
# requests: a fresh node per run and batch size (a node keeps what it scored), builds
# alternating. Prints one line per (run, build, batch); docs/benchmarks.md, "PRM scoring
# through a node".
#
#   OLD=/path/to/old/ponder NEW=target/release/ponder MODELS=/path/to/models \
#       bench/prm-node-ab.sh > results.txt
#
# NEW_ARGS adds node flags on the new build's side only (e.g. "--quantize bf16"), and
# OLD_ARGS on the old's. PER_LEVEL (default 2) sets the questions per level (6 levels),
# i.e. how long each run is.
#
# MODELS is a models directory whose default verifier and `arith-gen` generator both
# builds can serve (the candidates are sampled from MODELS/$GEN by this build's
# bundled-bench, outside the timing).
set -uo pipefail
: "${OLD:?the ponder binary of the old build}"
NEW=${NEW:-target/release/ponder}
BENCH=${BENCH:-target/release/bundled-bench}
M=${MODELS:?a models directory both builds serve}
GEN=${GEN:-arith-gen}
RUNS=${RUNS:-5}
PER_LEVEL=${PER_LEVEL:-2}
port=${PORT:-50400}
NEW_ARGS=${NEW_ARGS:-}
OLD_ARGS=${OLD_ARGS:-}
for run in $(seq 1 "$RUNS"); do
  for label in old new; do
    bin=$OLD; args=$OLD_ARGS
    [ "$label" = new ] && bin=$NEW && args=$NEW_ARGS
    for B in 8 16 64; do
      port=$((port + 1))
      # shellcheck disable=SC2086 # the extra flags split into words on purpose
      "$bin" node verifier --listen 127.0.0.1:$port --model "$M" $args > /dev/null 2>&1 &
      node=$!
      for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.2
      done
      out=$("$BENCH" --only score --generator "$M/$GEN" --prm "$M/arith-prm" \
              --candidates-from "$M/$GEN" --score-addr 127.0.0.1:$port \
              --batches $B --runs 1 --per-level "$PER_LEVEL" 2>&1 | grep "score batch")
      echo "$run $label $B $out"
      kill $node; wait $node 2>/dev/null
    done
  done
done
