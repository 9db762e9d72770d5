#!/usr/bin/env python3
"""Two `ponder eval` draw files of the same questions and seeds (one line per question:
its samples' answers and verifier scores), compared as an engine change would change
them: how many samples end in another answer, how many are right on each side, and
majority and weighted best-of-N at N = 1, 4 and 16 on each side, paired by question with
a bootstrap 95% interval. Standard library only (docs/engine.md, "f16 KV cache").

    bench/paired_draws.py bench/results/eval-ladder/draws.jsonl NEW/draws.jsonl

The votes here break ties by the larger answer string, so their accuracies can differ
from `ponder eval`'s own tables by a few tenths; both sides are voted the same way, which
is what the pairing needs.
"""

import argparse
import json
import random
from collections import defaultdict


def vote(samples, weighted):
    totals = defaultdict(float)
    for s in samples:
        if s["answer"] is not None:
            totals[s["answer"]] += s["score"] if weighted else 1.0
    if not totals:
        return None
    return max(totals.items(), key=lambda kv: (kv[1], kv[0]))[0]


def interval(diffs, resamples, rng):
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--budgets", default="1,4,16")
    ap.add_argument("--resamples", type=int, default=10000)
    a = ap.parse_args()
    before = [json.loads(line) for line in open(a.before)]
    after = [json.loads(line) for line in open(a.after)]
    if [q["question"] for q in before] != [q["question"] for q in after]:
        raise SystemExit("the two files hold different questions")
    k = min(len(q["samples"]) for q in after)
    moved = right_before = right_after = 0
    for b, n in zip(before, after):
        for x, y in zip(b["samples"][:k], n["samples"][:k]):
            moved += x["answer"] != y["answer"]
            right_before += x["answer"] == b["truth"]
            right_after += y["answer"] == n["truth"]
    total = k * len(after)
    print(f"{total} samples ({k} per question): {moved} end in another answer; "
          f"right {right_before} before, {right_after} after")
    rng = random.Random(1)
    for name, weighted in (("majority", False), ("weighted best-of-N", True)):
        for n in (int(x) for x in a.budgets.split(",")):
            if n > k:
                continue
            x = [vote(q["samples"][:n], weighted) == q["truth"] for q in before]
            y = [vote(q["samples"][:n], weighted) == q["truth"] for q in after]
            diffs = [int(j) - int(i) for i, j in zip(x, y)]
            lo, hi = interval(diffs, a.resamples, rng)
            m = len(diffs)
            print(f"{name}@{n}: before {100 * sum(x) / m:.1f}%, after {100 * sum(y) / m:.1f}%, "
                  f"after - before {100 * sum(diffs) / m:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]")


if __name__ == "__main__":
    main()
