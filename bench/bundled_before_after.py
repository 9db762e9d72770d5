"""Before/after medians for `bundled-bench`: runs two builds alternately on the same
models and prints, per figure, the median rate of each and the ratio. A command, not a
test (docs/benchmarks.md, "Engine on the bundled models").

    python3 bench/bundled_before_after.py BEFORE_DIR AFTER_DIR [--runs 5] [--before-args ARGS] [--after-args ARGS] [-- bundled-bench args]

Each *_DIR holds a `bundled-bench` binary. The rates come from the lines it prints
("samples n = 8: 4827 generated tok/s ..."), one run per invocation (`--runs 1`), so
the alternation, not the binary, takes the median.
"""

import argparse
import re
import statistics
import subprocess

LINE = re.compile(r"^\s*(.+?):\s+([0-9.]+) (generated|scored) tok/s")
# "generator arith-gen-xs (46624 parameters, ...)": figures below it are that model's.
MODEL = re.compile(r"^(?:generator|verifier) (\S+) \(")


def figures(binary, extra):
    out = subprocess.run([binary, "--runs", "1", *extra], check=True, capture_output=True, text=True).stdout
    rates = {}
    model = ""
    for line in out.splitlines():
        g = MODEL.match(line)
        if g:
            model = g.group(1) + ": "
        m = LINE.match(line)
        if m:
            rates[model + m.group(1)] = float(m.group(2))
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--after-args", default="", help="more arguments for the after side only, e.g. '--kv-cache-dtype f16' (BEFORE_DIR and AFTER_DIR may then be one build)")
    ap.add_argument("--before-args", default="", help="more arguments for the before side only, e.g. '--share-twins false'")
    ap.add_argument("extra", nargs="*", help="arguments for bundled-bench (after --)")
    args, unknown = ap.parse_known_args()
    extra = [a for a in args.extra + unknown if a != "--"] or ["--only", "samples,steps,score"]
    after_extra = extra + args.after_args.split()
    before_extra = extra + args.before_args.split()
    runs = {"before": [], "after": []}
    for _ in range(args.runs):
        for side, d, more in (("before", args.before, before_extra), ("after", args.after, after_extra)):
            runs[side].append(figures(f"{d}/bundled-bench", more))
    print(f"medians of {args.runs} alternating runs; before side: bundled-bench {' '.join(before_extra)}; after side: {' '.join(after_extra)}")
    for name in runs["before"][0]:
        b = statistics.median(r[name] for r in runs["before"])
        a = statistics.median(r[name] for r in runs["after"])
        print(f"{name:<84} before {b:>8.0f} tok/s  after {a:>8.0f} tok/s  ({a / b:.2f}x)")


if __name__ == "__main__":
    main()
