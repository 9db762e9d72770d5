#!/usr/bin/env bash
# Trains the generator ladder: three sizes of one family (same tokenizer, same solution
# format), each on the trainer's question stream until its held-out
# (validation-slice) greedy accuracy stops improving, then a short decay. Re-running it
# resumes every unfinished model from its last checkpoint (weights, optimizer state and
# data position), so it can span sessions. Hours of CPU: run it in the background.
#
#   models/train-ladder.sh [WORKDIR]        # default: $PONDER_TRAIN_DIR or ~/ponder-train
#
# Each model trains in WORKDIR/<name>/ (checkpoint/, milestones/step-NNNNNN/, train.log;
# stdout in WORKDIR/<name>.out). The models run side by side, one thread each, at the
# lowest CPU priority so that builds and tests keep the machine. A finished model is
# WORKDIR/<name>/ itself (weights, config, tokenizer, train_state.json, train.log): ship
# those files into models/<name>/, never checkpoint/ or milestones/.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${PONDER_TRAIN_DIR:-$HOME/ponder-train}}"
mkdir -p "$work/bin"
# A new machine starts from what the last session committed (models/train-state.sh).
models/train-state.sh restore "$work"
cargo build --release --bin ponder-arith
# A private copy: rebuilding the workspace while training runs does not touch it.
cp target/release/ponder-arith "$work/bin/ponder-arith.new"
mv "$work/bin/ponder-arith.new" "$work/bin/ponder-arith"

# The top rung starts from the first shipped generator (1.31M parameters, 10.8M tokens of
# the first training stream), kept outside the repository so that shipping a new
# models/arith-gen never changes what a resumed run starts from.
init="$work/init/arith-gen-v1"
if [ ! -f "$init/model.safetensors" ]; then
    mkdir -p "$work/init"
    mkdir -p "$init.tmp"
    for f in config.json model.safetensors tokenizer.json; do
        git show "a220ad0:models/arith-gen/$f" > "$init.tmp/$f"
    done
    mv "$init.tmp" "$init"
fi

# name, then the shape and rate of each rung (parameters: ~0.05M, ~0.23M, 1.31M: 28x).
# A from-scratch 0.88M rung (128 hidden, 4 layers, lr 2e-3) was dropped on 2026-12-02: it
# needs more than one session of CPU, and a session's work directory does not survive a
# new machine (models/README.md, "Training across sessions").
rungs=(
    "arith-gen-xs --hidden 32 --layers 3 --heads 4 --lr 3e-3 --warmup 100 --min-steps 2000"
    "arith-gen-s --hidden 64 --layers 4 --heads 4 --lr 3e-3 --warmup 100 --min-steps 2000"
    "arith-gen-l --init $init --lr 1e-3 --warmup 50 --min-steps 600"
)
for rung in "${rungs[@]}"; do
    read -r name args <<< "$rung"
    if [ -f "$work/$name/model.safetensors" ] && [ -f "$work/$name/done" ]; then
        echo "$name: finished"
        continue
    fi
    # shellcheck disable=SC2086
    (
        RAYON_NUM_THREADS=1 nice -n 19 "$work/bin/ponder-arith" train-generator \
            --out "$work/$name" --resume $args --contract-share 0 \
            --batch-tokens 4096 --seed 11 \
            --max-steps 40000 --decay-steps 400 \
            --checkpoint-every 100 --eval-every 200 --milestone-every 1000 \
            --patience 3 --min-gain 1.0 --eval-per-level 50 \
            >> "$work/$name.out" 2>&1 && touch "$work/$name/done"
    ) &
    echo "$name: training in $work/$name (log: $work/$name/train.log)"
done
wait
