#!/usr/bin/env bash
# Trains the PRM on the mistakes of the whole ladder, once models/train-ladder.sh has
# finished every rung (WORKDIR/<rung>/done). Two stages, each skipped when its output
# exists, so re-running it resumes:
#
#   1. `ponder-arith sample`: every rung, at temperatures 0.6, 1.0 and 1.3, 8 samples of
#      200 training-slice questions per level, each step labelled by the checker
#      (WORKDIR/prm-samples.jsonl; written to a .part file and renamed when complete).
#   2. `ponder-arith train-prm`: from the largest rung's weights, right and wrong samples
#      drawn equally often, checkpoints and milestones, until held-out accuracy stops
#      improving (WORKDIR/arith-prm/, resumable).
#
#   models/train-verifier.sh [WORKDIR]     # default: $PONDER_TRAIN_DIR or ~/ponder-train
#
# Hours of CPU: run it in the background (nohup ... &). It uses the trainer binary the
# ladder script copied to WORKDIR/bin. Ship WORKDIR/arith-prm's weights, config,
# tokenizer, prm.json and train.log into models/, never checkpoint/ or milestones/.
set -euo pipefail
work="${1:-${PONDER_TRAIN_DIR:-$HOME/ponder-train}}"
bin="$work/bin/ponder-arith"
rungs=(arith-gen-xs arith-gen-s arith-gen-m)
[ -x "$bin" ] || { echo "no $bin: run models/train-ladder.sh first" >&2; exit 1; }
for rung in "${rungs[@]}"; do
    [ -f "$work/$rung/done" ] || { echo "$rung has not finished training ($work/$rung/done)" >&2; exit 1; }
done

samples="$work/prm-samples.jsonl"
if [ ! -f "$samples" ]; then
    models=()
    for rung in "${rungs[@]}"; do models+=(--model "$work/$rung"); done
    echo "sampling the ladder into $samples"
    RAYON_NUM_THREADS=1 nice -n 19 "$bin" sample "${models[@]}" --out "$samples.part" \
        --temperature 0.6 --temperature 1.0 --temperature 1.3 -n 8 --per-level 200 --seed 21
    mv "$samples.part" "$samples"
fi

largest="${rungs[${#rungs[@]}-1]}"
if [ ! -f "$work/arith-prm/done" ]; then
    echo "training the PRM from $largest in $work/arith-prm (log: $work/arith-prm/train.log)"
    RAYON_NUM_THREADS=1 nice -n 19 "$bin" train-prm --out "$work/arith-prm" --resume \
        --init "$work/$largest" --samples "$samples" --balance \
        --checkpoint-every 100 --eval-every 200 --milestone-every 1000 \
        --patience 3 --min-gain 1.0 --min-steps 2000 --max-steps 40000 \
        >> "$work/arith-prm.out" 2>&1
    touch "$work/arith-prm/done"
fi
echo "PRM trained: $work/arith-prm"
