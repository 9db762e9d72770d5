#!/usr/bin/env bash
# Trains the PRM on the mistakes of the whole ladder (models/train-ladder.sh). Two
# stages, each skipped when its output exists, so re-running it resumes:
#
#   1. `ponder-arith sample`: each rung as soon as it has finished training
#      (WORKDIR/<rung>/done), at temperatures 0.6, 1.0 and 1.3, 8 samples of 100
#      training-slice questions per level, each step labelled by the checker
#      (WORKDIR/samples/<rung>.jsonl, written to a .part file and renamed when complete).
#      The script waits (polling every 5 minutes) for rungs still training. The same
#      files feed the revision stage (models/train-revisions.sh).
#   2. `ponder-arith train-prm`: from the largest rung's weights, on every rung's samples,
#      right and wrong samples drawn equally often, on local step labels (the engine
#      chains them into a running product: prm.json `chain`), checkpoints and
#      milestones, until held-out AUROC stops improving (WORKDIR/arith-prm/, resumable).
#      On-track labels at lr 2e-3 stayed at the constant-prediction loss for 400 steps
#      (2026-12-03). The shipped verifier is not trained here: it is arith-gen-l read by
#      the engine's likelihood readout, which measured better with no training
#      (models/README.md, "Verifier"); this script is kept for that comparison.
#
#   models/train-verifier.sh [WORKDIR]     # default: $PONDER_TRAIN_DIR or ~/ponder-train
#
# Hours of CPU: run it in the background (nohup ... &). It uses the trainer binary the
# ladder script copied to WORKDIR/bin. Ship WORKDIR/arith-prm's weights, config,
# tokenizer, prm.json and train.log into models/, never checkpoint/ or milestones/.
set -euo pipefail
work="${1:-${PONDER_TRAIN_DIR:-$HOME/ponder-train}}"
bin="$work/bin/ponder-arith"
rungs=(arith-gen-xs arith-gen-s arith-gen-l)
[ -x "$bin" ] || { echo "no $bin: run models/train-ladder.sh first" >&2; exit 1; }
mkdir -p "$work/samples"

while :; do
    pending=0
    for rung in "${rungs[@]}"; do
        out="$work/samples/$rung.jsonl"
        [ -f "$out" ] && continue
        if [ ! -f "$work/$rung/done" ]; then
            pending=1
            continue
        fi
        echo "$(date -u +%FT%TZ) sampling $rung into $out"
        RAYON_NUM_THREADS=1 nice -n 19 "$bin" sample --model "$work/$rung" --out "$out.part" \
            --temperature 0.6 --temperature 1.0 --temperature 1.3 -n 8 --per-level 100 --seed 21 \
            --contract-share 0
        mv "$out.part" "$out"
    done
    [ "$pending" = 0 ] && break
    sleep 300
done

samples="$work/prm-samples.jsonl"
if [ ! -f "$samples" ]; then
    for rung in "${rungs[@]}"; do cat "$work/samples/$rung.jsonl"; done > "$samples.part"
    mv "$samples.part" "$samples"
fi

largest="${rungs[${#rungs[@]}-1]}"
if [ ! -f "$work/arith-prm/done" ]; then
    echo "$(date -u +%FT%TZ) training the PRM from $largest in $work/arith-prm (log: $work/arith-prm/train.log)"
    RAYON_NUM_THREADS="${PONDER_TRAIN_THREADS:-1}" nice -n 19 "$bin" train-prm --out "$work/arith-prm" --resume \
        --init "$work/$largest" --samples "$samples" --balance --labels local --lr 1e-3 --contract-share 0 \
        --checkpoint-every 100 --eval-every 200 --milestone-every 1000 \
        --patience 3 --min-gain 1.0 --min-steps 2000 --max-steps 40000 \
        >> "$work/arith-prm.out" 2>&1
    touch "$work/arith-prm/done"
fi
echo "PRM trained: $work/arith-prm"
