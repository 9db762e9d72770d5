#!/usr/bin/env bash
# The short fuzz run CI makes (.ci/run, "fuzz"): each target for SECONDS (default 30)
# from the committed corpus, with the checks of src/lib.rs. New inputs go to a scratch
# folder, so the corpus stays as committed; a crash fails the run and leaves its input
# under artifacts/<target>/. The 10-minute runs and their results: README.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzzing needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in solve_request worker_requests; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzzing $target failed (a crash, a failed check or a build error; above)" >&2
        exit 1
    fi
    grep -E "^(INFO: (Loaded|seed)|#[0-9]+ +(INITED|DONE)|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))" "$log" || true
done
