#!/usr/bin/env python3
"""Offline: first-error F1 of the verifier on each generator's samples with (a) one
threshold (the report's rule), (b) a threshold per level, (c) per-step geometric-mean
scores, each threshold fitted on the validation samples only and measured on the
generators' own. The measuring and fitting are `verifier_combos.py`'s, as the report
computes them. Standard library only; reads the file `ponder-arith report --scores-out
FILE` writes.

    bench/verifier_thresholds.py scores.jsonl
"""
import sys

from verifier_combos import f1, fe_measure, fit, load


def geometric_mean(scores):
    """A running product read per step: its k-th root at step k."""
    return [s ** (1 / (i + 1)) if s > 0 else 0.0 for i, s in enumerate(scores)]


def main():
    recs = load(sys.argv[1])
    plain = [(r["scores"], r) for r in recs]
    geo = [(geometric_mean(r["scores"]), r) for r in recs]
    val = lambda samples: [s for s in samples if s[1]["set"] == "validation"]
    own = [s for s in plain if s[1]["set"] == "own"]
    levels = sorted({r["level"] for _, r in own})
    t_global, t_geo = fit(val(plain)), fit(val(geo))
    t_level = {}
    for level in levels:
        v = [s for s in val(plain) if s[1]["level"] == level]
        t_level[level] = fit(v) if any(not r["correct"] for _, r in v) else t_global
    print(f"thresholds: global {t_global:.4f}, geometric-mean {t_geo:.4f}, per level "
          + ", ".join(f"{level}: {t:.4f}" for level, t in t_level.items()))
    for g in sorted({r["generator"] for _, r in own}):
        print(g)
        totals = {name: [0, 0, 0, 0] for name in ("global", "level", "geo")}
        for level in levels:
            mine = lambda samples: [s for s in samples
                                    if s[1]["set"] == "own" and s[1]["generator"] == g
                                    and s[1]["level"] == level]
            rows = {
                "global": fe_measure(mine(plain), t_global),
                "level": fe_measure(mine(plain), t_level[level]),
                "geo": fe_measure(mine(geo), t_geo),
            }
            cells = []
            for name, m in rows.items():
                totals[name] = [a + b for a, b in zip(totals[name], m)]
                v = f1(*m)
                cells.append(f"{name} " + ("-" if v is None else f"{v:.3f} ({m[0]}/{m[1]}, {m[2]}/{m[3]})"))
            print(f"  level {level}: " + " | ".join(cells))
        for name, (loc, wrong, acc, right) in totals.items():
            print(f"  all, {name}: F1 {f1(loc, wrong, acc, right):.3f} "
                  f"(located {loc / wrong:.3f}, accepted {acc / right:.3f})")


if __name__ == "__main__":
    main()
