#!/usr/bin/env bash
# Fine-tunes shipped ladder rungs on the training stream with the contract style in it
# (docs/arith.md: `--contract-share`), for the sampler gaps and the default generator's
# pass@64 on levels 4-6 (docs/results.md, "Issue 13's targets"). Each rung starts from its
# shipped weights (models/<rung>: the revision fine-tune) with a fresh optimizer and
# follows the trainer's schedule: warm-up, constant until the validation accuracy (the
# same mixed stream, validation slice) stops gaining, then a linear decay.
#
#   models/train-contract.sh [WORKDIR] [RUNG...]   # default: ~/ponder-train, xs and s
#
# Each rung trains in WORKDIR/<rung>-contract/ (resumable, milestones every 500 steps;
# WORKDIR/<rung>-contract/done when finished), one thread each at the lowest CPU
# priority, side by side. models/train-state.sh save carries unfinished runs across
# machines.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${PONDER_TRAIN_DIR:-$HOME/ponder-train}}"
shift || true
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(arith-gen-xs arith-gen-s)
share=0.5
mkdir -p "$work/bin"
models/train-state.sh restore "$work"
cargo build --release --bin ponder-arith
# A private copy: rebuilding the workspace while training runs does not touch it.
cp target/release/ponder-arith "$work/bin/ponder-arith.new"
mv "$work/bin/ponder-arith.new" "$work/bin/ponder-arith"

# The starting weights, copied out of the repository so that shipping a new models/<rung>
# never changes what a resumed run starts from.
declare -A args=(
    [arith-gen-xs]="--lr 1e-3 --warmup 50 --min-steps 1000 --max-steps 4000 --decay-steps 300"
    [arith-gen-s]="--lr 1e-3 --warmup 50 --min-steps 600 --max-steps 3000 --decay-steps 200"
    [arith-gen-l]="--lr 5e-4 --warmup 50 --min-steps 400 --max-steps 2000 --decay-steps 200"
    # A second round for the default rung, from the first (its decay started at step
    # 1,400 on a noisy evaluation, and levels 5-6 were still gaining).
    [arith-gen-xs-2]="--lr 1e-3 --warmup 50 --min-steps 2000 --max-steps 4000 --decay-steps 400"
)
for rung in "${wanted[@]}"; do
    [ -n "${args[$rung]:-}" ] || { echo "unknown rung $rung" >&2; exit 2; }
    init="$work/init/$rung-shipped"
    if [ "$rung" = arith-gen-xs-2 ]; then
        init="$work/arith-gen-xs-contract"
        [ -f "$init/done" ] || { echo "$rung needs a finished $init" >&2; exit 2; }
    elif [ ! -f "$init/model.safetensors" ]; then
        mkdir -p "$init.tmp"
        cp models/"$rung"/{config.json,model.safetensors,tokenizer.json} "$init.tmp/"
        mv "$init.tmp" "$init"
    fi
    out="$work/${rung%-2}-contract${rung#"${rung%-2}"}"
    if [ -f "$out/done" ]; then
        echo "$rung: finished"
        continue
    fi
    # shellcheck disable=SC2086
    (
        RAYON_NUM_THREADS=1 nice -n 19 "$work/bin/ponder-arith" train-generator \
            --out "$out" --resume --init "$init" --contract-share "$share" ${args[$rung]} \
            --batch-tokens 4096 --seed 41 \
            --checkpoint-every 100 --eval-every 200 --milestone-every 500 \
            --patience 3 --min-gain 1.0 --eval-per-level 50 \
            >> "$out.out" 2>&1 && touch "$out/done"
    ) &
    echo "$rung: training in $out (log: $out/train.log)"
done
wait
