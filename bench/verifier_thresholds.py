#!/usr/bin/env python3
"""Offline: first-error F1 of the verifier on s's and l's samples with (a) one threshold
(the report's rule), (b) a threshold per level, (c) per-step geometric-mean scores, each
threshold fitted on the validation samples only and measured on the generators' own.
Standard library only; reads the file `ponder-arith report --scores-out FILE` writes.

    bench/verifier_thresholds.py scores.jsonl
"""
import collections
import json
import sys
recs = [json.loads(l) for l in open(sys.argv[1])]
val = [r for r in recs if r["set"] == "validation"]
own = [r for r in recs if r["set"] == "own"]

def first_error(r):
    if r["correct"]:
        return None
    for i, ok in enumerate(r["on_track"]):
        if not ok:
            return i
    return -1  # wrong, every line on track: left out

def flagged(scores, t):
    for i, s in enumerate(scores):
        if s < t:
            return i
    return None

def f1(rs, t, tr=lambda r: r["scores"]):
    loc = wrong = acc = right = 0
    for r in rs:
        sc = tr(r)
        if r["correct"]:
            right += 1; acc += flagged(sc, t) is None
        else:
            fe = first_error(r)
            if fe is None or fe < 0:
                continue
            wrong += 1; loc += flagged(sc, t) == fe
    if not wrong or not right:
        return None, loc, wrong, acc, right
    a, b = loc / wrong, acc / right
    return (2 * a * b / (a + b) if a + b else 0.0), loc, wrong, acc, right

def fit(rs, tr=lambda r: r["scores"]):
    cands = sorted({round(s, 4) for r in rs for s in tr(r)})
    cands = cands[:: max(1, len(cands) // 400)]
    best = max(cands, key=lambda t: (f1(rs, t, tr)[0] or 0))
    return best

geo = lambda r: [s ** (1 / (i + 1)) if s > 0 else 0.0 for i, s in enumerate(r["scores"])]
t_global = fit(val)
t_geo = fit(val, geo)
levels = sorted({r["level"] for r in own})
t_level = {}
for L in levels:
    v = [r for r in val if r["level"] == L]
    t_level[L] = fit(v) if any(not r["correct"] for r in v) else t_global
print(f"thresholds: global {t_global}, geometric-mean {t_geo}, per level {t_level}")
for g in sorted({r["generator"] for r in own}):
    rs = [r for r in own if r["generator"] == g]
    print(g)
    tot = collections.Counter()
    for L in levels:
        rl = [r for r in rs if r["level"] == L]
        a = f1(rl, t_global); b = f1(rl, t_level[L]); c = f1(rl, t_geo, geo)
        fmt = lambda x: "-" if x[0] is None else f"{x[0]:.3f} ({x[1]}/{x[2]}, {x[3]}/{x[4]})"
        print(f"  level {L}: global {fmt(a)} | per level {fmt(b)} | geo-mean {fmt(c)}")
        for name, x in (("global", a), ("level", b), ("geo", c)):
            for k, v in zip(("loc", "wrong", "acc", "right"), x[1:]):
                tot[(name, k)] += v
    for name in ("global", "level", "geo"):
        a = tot[(name, "loc")] / tot[(name, "wrong")]; b = tot[(name, "acc")] / tot[(name, "right")]
        print(f"  all, {name}: F1 {2*a*b/(a+b):.3f} (located {a:.3f}, accepted {b:.3f})")
