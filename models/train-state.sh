#!/usr/bin/env bash
# Carries unfinished training across machines. A session's work directory
# (~/ponder-train) lives only as long as its machine, and a later session may get a new
# one; git is the only thing that survives. So at the end of a session the resumable
# state of every run is saved under models/train-state/ and committed, and the next
# session restores it before resuming (models/README.md, "Training across sessions").
#
#   models/train-state.sh save    [WORKDIR]   # WORKDIR -> models/train-state/
#   models/train-state.sh restore [WORKDIR]   # models/train-state/ -> WORKDIR (missing runs only)
#
# Per run (a ladder rung, a revision fine-tune, the PRM):
#   - finished (WORKDIR/<run>/done): the finished model's files and its log;
#   - unfinished: checkpoint/ (weights, optimizer moments, data position) and the log.
# Milestones and samples are not saved (samples are re-drawn: they are seeded). The
# directory is removed once the ladder, the PRM and the revision models have shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:?usage: models/train-state.sh save|restore [WORKDIR]}"
work="${2:-${PONDER_TRAIN_DIR:-$HOME/ponder-train}}"
store="models/train-state"
final_files=(config.json model.safetensors tokenizer.json train_state.json prm.json)

case "$action" in
save)
    mkdir -p "$store"
    for run_dir in "$work"/arith-*/; do
        run="$(basename "$run_dir")"
        [ -f "$run_dir/train.log" ] || continue
        rm -rf "$store/$run.new"
        mkdir -p "$store/$run.new"
        if [ -f "$run_dir/done" ]; then
            for f in "${final_files[@]}" done; do
                [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$store/$run.new/"
            done
        elif [ -d "$run_dir/checkpoint" ]; then
            cp -r "$run_dir/checkpoint" "$store/$run.new/checkpoint"
        else
            rm -rf "$store/$run.new"
            continue
        fi
        cp "$run_dir/train.log" "$store/$run.new/train.log"
        rm -rf "$store/$run"
        mv "$store/$run.new" "$store/$run"
        echo "saved $run ($(du -sh "$store/$run" | cut -f1))"
    done
    ;;
restore)
    [ -d "$store" ] || { echo "nothing saved in $store"; exit 0; }
    mkdir -p "$work"
    for saved in "$store"/*/; do
        run="$(basename "$saved")"
        if [ -e "$work/$run" ]; then
            echo "$run: already in $work, kept as it is"
            continue
        fi
        cp -r "$saved" "$work/$run"
        echo "restored $run"
    done
    ;;
*)
    echo "usage: models/train-state.sh save|restore [WORKDIR]" >&2
    exit 2
    ;;
esac
