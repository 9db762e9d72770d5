#!/usr/bin/env bash
# Teaches every ladder rung to revise its own mistakes: a short fine-tune of each
# finished rung (WORKDIR/<rung>/done) in which 30% of the batches are revisions of that
# rung's own wrong samples (WORKDIR/samples/<rung>.jsonl, written by
# models/train-verifier.sh) and the rest are the usual stream (fresh attempts, 20%
# revisions of synthetic slips). A revision example is the question, the wrong attempt
# and then the canonical solution, so the model learns to keep the attempt's right
# prefix and redo the step that went wrong.
#
#   models/train-revisions.sh [WORKDIR]     # default: $PONDER_TRAIN_DIR or ~/ponder-train
#
# Each rung's result is WORKDIR/<rung>-rev/ (resumable; WORKDIR/<rung>-rev/done when
# finished); that is the model to ship. The periodic greedy evaluation guards the fresh
# attempts: a fine-tune that costs them accuracy shows in its train.log. It waits
# (polling every 5 minutes) for rungs and samples that are not there yet.
set -euo pipefail
work="${1:-${PONDER_TRAIN_DIR:-$HOME/ponder-train}}"
bin="$work/bin/ponder-arith"
rungs=(arith-gen-xs arith-gen-s arith-gen-l)
[ -x "$bin" ] || { echo "no $bin: run models/train-ladder.sh first" >&2; exit 1; }

while :; do
    pending=0
    for rung in "${rungs[@]}"; do
        out="$work/$rung-rev"
        [ -f "$out/done" ] && continue
        samples="$work/samples/$rung.jsonl"
        if [ ! -f "$work/$rung/done" ] || [ ! -f "$samples" ]; then
            pending=1
            continue
        fi
        echo "$(date -u +%FT%TZ) revision fine-tune of $rung in $out (log: $out/train.log)"
        RAYON_NUM_THREADS=1 nice -n 19 "$bin" train-generator --out "$out" --resume \
            --init "$work/$rung" --own-attempts "$samples" --own-fraction 0.3 --contract-share 0 \
            --lr 5e-4 --warmup 20 --batch-tokens 4096 --seed 31 \
            --max-steps 500 --min-steps 400 --decay-steps 100 \
            --checkpoint-every 50 --eval-every 100 --milestone-every 1000 \
            --patience 3 --min-gain 1.0 --eval-per-level 50 \
            >> "$out.out" 2>&1
        touch "$out/done"
    done
    [ "$pending" = 0 ] && break
    sleep 300
done
echo "revision fine-tunes done: $work/<rung>-rev"
