#!/usr/bin/env python3
"""Prints a latency.json whose every cost is D times the given one: the time-dilated
model of bench/scaling/run.sh (SLOWDOWN=D), or with D < 1 nodes D times as fast (what
bench/scaling/probe.py cpu uses to load one orchestrator with few nodes). The
measurements behind the fit are dropped (they were taken at the undilated speed) and
`machine` says what was done.

    bench/scaling/dilate.py REC/generator-arith-gen-xs/latency.json 8 > DIR/latency.json
"""

import json
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, factor = sys.argv[1], float(sys.argv[2])
    if not factor > 0:
        sys.exit("the factor must be positive")
    with open(path) as f:
        model = json.load(f)
    for role in ("generate", "score"):
        if model.get(role):
            model[role] = {k: v * factor for k, v in model[role].items()}
    model["machine"] = f"{model['machine']}, every cost x{factor:g} (time dilation)"
    for k in ("generate_measures", "score_measures", "concurrent"):
        model[k] = []
    json.dump(model, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
