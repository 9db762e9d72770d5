#!/usr/bin/env python3
"""Makes DST_DIR a time-dilated copy of the recording directory SRC_DIR: links to its
recording beside a latency.json whose every cost is D times SRC_DIR's. This is the
dilated model of bench/scaling/run.sh (SLOWDOWN=D), or with D < 1 nodes 1/D times as
fast (bench/scaling/probe.py cpu --speedup). The measurements behind the fit are
dropped (they were taken at the undilated speed) and `machine` says what was done.

    bench/scaling/dilate.py REC/generator-arith-gen-xs 8 DIR/generator-arith-gen-xs
"""

import json
import os
import sys


def dilate(src, factor, dst):
    if not factor > 0:
        sys.exit("the factor must be positive")
    with open(os.path.join(src, "latency.json")) as f:
        model = json.load(f)
    for role in ("generate", "score"):
        if model.get(role):
            model[role] = {k: v * factor for k, v in model[role].items()}
    model["machine"] = f"{model['machine']}, every cost x{factor:g} (time dilation)"
    for k in ("generate_measures", "score_measures", "concurrent"):
        model[k] = []
    os.makedirs(dst)
    for name in os.listdir(src):
        if name != "latency.json":
            os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(dst, name))
    with open(os.path.join(dst, "latency.json"), "w") as f:
        json.dump(model, f, indent=1)
        f.write("\n")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    dilate(sys.argv[1], float(sys.argv[2]), sys.argv[3])


if __name__ == "__main__":
    main()
