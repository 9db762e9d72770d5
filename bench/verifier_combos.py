#!/usr/bin/env python3
"""Which verifier ensemble: two verifiers' unchained step readings of the same samples,
combined offline every way `prm.json` allows, with the figures `ponder-arith report`
prints (threshold fitted on the validation samples, step and final AUROC and first-error
F1 per generator). Standard library only.

    # each verifier's readings with prm.json "chain" removed (a models copy), same questions
    ponder-arith report --models COPY --verifier A --per-level 24 --pass-per-level 24 -k 64 \
        --revisions-per-question 0 --scores-out a.jsonl
    ponder-arith report --models COPY --verifier B ... --scores-out b.jsonl
    bench/verifier_combos.py a.jsonl b.jsonl

Rows: each verifier alone (a, b), their product, geometric mean and minimum, each chained
by running product and by running minimum (docs/results.md, "The verifier ensemble").
"""
import json
import math
import sys

def load(p):
    return [json.loads(l) for l in open(p)]

def auroc(scores, labels):
    """Mann-Whitney U with ties counted half, as the report computes it."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    P = sum(1 for _, y in pairs if y); N = len(pairs) - P
    if P == 0 or N == 0: return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]: j += 1
        rank_sum += sum(1 for _, y in pairs[i:j] if y) * (i + 1 + j) / 2.0
        i = j
    return (rank_sum - P * (P + 1) / 2) / (P * N)

def chain(r, how):
    out = []; run = 1.0
    for x in r:
        run = run * x if how == 'product' else min(run, x)
        out.append(run)
    return out

def first_error(rec):
    if rec['correct']: return None
    for i, ok in enumerate(rec['on_track']):
        if not ok: return i
    return None

def fe_measure(samples, t):
    loc = wrong = acc = right = 0
    for scores, rec in samples:
        flagged = next((i for i, s in enumerate(scores) if s < t), None)
        if rec['correct']:
            right += 1; acc += flagged is None
        else:
            f = first_error(rec)
            if f is not None:
                wrong += 1; loc += flagged == f
    return loc, wrong, acc, right

def f1(loc, wrong, acc, right):
    if wrong == 0 or right == 0: return None
    a, b = loc / wrong, acc / right
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)

def fit(samples):
    allsc = sorted(set(s for sc, _ in samples for s in sc))
    cands = [0.5]; step = max(len(allsc) // 256, 1)
    for k in range(0, len(allsc) - 1, step):
        cands.append((allsc[k] + allsc[k + 1]) / 2)
    best = (-1, 0.5)
    for t in cands:
        v = f1(*fe_measure(samples, t)) or 0.0
        if v > best[0] or (v == best[0] and t < best[1]): best = (v, t)
    return best[1]

def combine(a, b, how):
    if how == 'a': return a
    if how == 'b': return b
    if how == 'prod': return [x * y for x, y in zip(a, b)]
    if how == 'geo': return [math.sqrt(x * y) for x, y in zip(a, b)]
    if how == 'min': return [min(x, y) for x, y in zip(a, b)]
    raise ValueError(how)

def main():
    A = load(sys.argv[1]); B = load(sys.argv[2])
    assert len(A) == len(B)
    for x, y in zip(A, B):
        assert x['question'] == y['question'] and x['on_track'] == y['on_track'] and len(x['scores']) == len(y['scores'])
    gens = sorted(set(r['generator'] for r in A if r['set'] == 'own'), key=lambda g: ['arith-gen-xs','arith-gen-s','arith-gen-l'].index(g))
    for how in ['a', 'b', 'prod', 'geo', 'min']:
        for ch in ['product', 'min']:
            scored = [(chain(combine(x['scores'], y['scores'], how), ch), x) for x, y in zip(A, B)]
            val = [s for s in scored if s[1]['set'] == 'validation']
            t = fit(val)
            line = f"{how:5s} chain {ch:8s} t={t:.3f} |"
            for g in gens:
                own = [s for s in scored if s[1]['set'] == 'own' and s[1]['generator'] == g]
                st = auroc([v for sc, r in own for v in sc], [o for sc, r in own for o in r['on_track']])
                fa = auroc([sc[-1] for sc, r in own], [r['correct'] for sc, r in own])
                m = fe_measure(own, t)
                line += f" {g[10:]}: step {st:.3f} final {fa:.3f} F1 {f1(*m):.3f} ({m[0]}/{m[1]}, {m[2]}/{m[3]}) |"
            print(line, flush=True)


if __name__ == '__main__':
    main()
