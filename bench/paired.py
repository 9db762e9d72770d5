#!/usr/bin/env python3
"""The search-thesis comparisons of docs/results.md, paired on the same questions, from the
records and draws `ponder eval` writes. Standard library only.

    bench/paired.py bench/results/eval-ladder [--resamples 10000]
    bench/paired.py --revisions report.json    # `ponder-arith report --out report.json`
    bench/paired.py bench/results/eval-ladder --with OTHER/runs.jsonl   # more strategies

Each comparison is a difference of accuracies between two (strategy, budget) cells over
the same questions, with a 95% bootstrap interval (questions resampled with replacement,
both cells together, seeded). "Beats" means the interval lies above 0. The hardest bin is
the top quintile of oracle difficulty: the default generator's pass rate over its 64 drawn
samples (draws.jsonl), as in Snell et al.; ties at the cut go to the harder side.

With --with, the runs.jsonl of another `ponder eval` on the same questions (same seed and
--per-level): each of its (strategy, budget) cells against weighted best-of-N, majority
and beam search at that budget, on all questions and on the hardest bin, and per level.

With --revisions, the revision figures of a `ponder-arith report`: per generator and
level, a guided revision of each wrong attempt against a fresh sample of its question,
paired on the attempts.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def load(out: Path):
    cells: dict[tuple[str, int], dict[int, bool]] = {}
    levels: dict[int, int] = {}
    for line in open(out / "records.jsonl"):
        r = json.loads(line)
        cells.setdefault((r["strategy"], r["budget"]), {})[r["index"]] = r["correct"]
        levels[r["index"]] = r["level"]
    pass_rate = {}
    for i, line in enumerate(open(out / "draws.jsonl")):
        d = json.loads(line)
        samples = d["samples"]
        pass_rate[i] = sum(s["answer"] == d["truth"] for s in samples) / max(1, len(samples))
    return cells, levels, pass_rate


def paired(a: dict[int, bool], b: dict[int, bool], questions: list[int], resamples: int, seed: int = 7):
    diffs = [int(a[q]) - int(b[q]) for q in questions]
    n = len(diffs)
    mean = sum(diffs) / n
    rng = random.Random(seed)
    boots = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo, hi = boots[int(0.025 * resamples)], boots[int(0.975 * resamples) - 1]
    return 100 * mean, 100 * lo, 100 * hi


def accuracy(cell: dict[int, bool], questions: list[int]) -> float:
    return 100 * sum(cell[q] for q in questions) / len(questions)


def revisions(report: Path, resamples: int) -> None:
    r = json.load(open(report))
    print("| generator | level | attempts | guided revision right | fresh sample right "
          "| paired difference, points [95% CI] | tokens per attempt: guided / fresh |")
    print("|---|---|---|---|---|---|---|")
    for g in r["generators"]:
        for f in g["revisions"]:
            pairs = f["guided_and_fresh"]
            n = len(pairs)
            if n == 0:
                continue
            guided = {i: p[0] for i, p in enumerate(pairs)}
            fresh = {i: p[1] for i, p in enumerate(pairs)}
            m, lo, hi = paired(guided, fresh, list(range(n)), resamples)
            print(f"| {g['name']} | {f['level']} | {n} | {accuracy(guided, list(range(n))):.1f}% "
                  f"| {accuracy(fresh, list(range(n))):.1f}% | {m:+.1f} [{lo:+.1f}, {hi:+.1f}] "
                  f"| {f['guided_tokens'] / n:.0f} / {f['fresh_tokens'] / n:.0f} |")


def compare_other(runs: Path, cells, levels, every, hardest, cut, resamples: int) -> None:
    other: dict[tuple[str, int], dict[int, bool]] = {}
    for line in open(runs):
        r = json.loads(line)
        other.setdefault((r["strategy"], r["budget"]), {})[r["index"]] = r["correct"]
    print(f"{len(every)} questions; hardest bin (64-sample pass rate <= {cut:.3f}): {len(hardest)}\n")
    print("| cell | against | questions | accuracy | paired difference, points [95% CI] | verdict |")
    print("|---|---|---|---|---|---|")
    for (spec, budget), mine in sorted(other.items()):
        assert set(mine) == set(every), f"{spec}@{budget}: not the same questions"
        for base in ["weighted_best_of_n", "self_consistency", "beam_search:4"]:
            theirs = cells.get((base, budget))
            if theirs is None:
                continue
            for name, qs in [("all", every), ("hardest bin", hardest)]:
                m, lo, hi = paired(mine, theirs, qs, resamples)
                verdict = "beats" if lo > 0 else ("loses" if hi < 0 else "within noise")
                print(f"| {spec}@{budget} | {base}@{budget} | {name} | {accuracy(mine, qs):.1f}% vs "
                      f"{accuracy(theirs, qs):.1f}% | {m:+.1f} [{lo:+.1f}, {hi:+.1f}] | {verdict} |")
    print()
    cols = sorted(other)
    print("| level | " + " | ".join(f"{s}@{b}" for s, b in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for level in sorted(set(levels.values())):
        qs = [q for q in every if levels[q] == level]
        print(f"| {level} | " + " | ".join(f"{accuracy(other[c], qs):.0f}%" for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--revisions", type=Path, metavar="REPORT_JSON")
    ap.add_argument("--with", dest="other", type=Path, metavar="RUNS_JSONL")
    a = ap.parse_args()
    if a.revisions:
        revisions(a.revisions, a.resamples)
        return
    if a.out is None:
        ap.error("give an eval output directory, or --revisions REPORT_JSON")
    cells, levels, pass_rate = load(a.out)
    every = sorted(levels)
    hard_levels = [q for q in every if levels[q] >= 4]
    by_difficulty = sorted(every, key=lambda q: pass_rate[q])
    hardest = by_difficulty[: len(every) // 5]
    cut = pass_rate[hardest[-1]]
    hardest = [q for q in every if pass_rate[q] <= cut]

    if a.other:
        compare_other(a.other, cells, levels, every, hardest, cut, a.resamples)
        return

    def row(what: str, x: tuple[str, int], y: tuple[str, int], questions: list[int]):
        m, lo, hi = paired(cells[x], cells[y], questions, a.resamples)
        verdict = "beats" if lo > 0 else ("loses" if hi < 0 else "within noise")
        print(f"| {what} | {x[0]}@{x[1]} {accuracy(cells[x], questions):.1f}% vs "
              f"{y[0]}@{y[1]} {accuracy(cells[y], questions):.1f}% | {m:+.1f} [{lo:+.1f}, {hi:+.1f}] "
              f"| {verdict} |")

    print(f"{len(every)} questions; levels 4-6: {len(hard_levels)}; hardest bin "
          f"(64-sample pass rate <= {cut:.3f}): {len(hardest)}\n")
    print("| comparison | cells | paired difference, points [95% CI] | verdict |")
    print("|---|---|---|---|")
    for n in [2, 4, 8, 16, 32, 64]:
        row(f"best-of-N does not fall (N={n} vs 1)", ("best_of_n", n), ("best_of_n", 1), every)
    row("best-of-N@64 vs majority@64", ("best_of_n", 64), ("self_consistency", 64), every)
    row("weighted BoN@16 vs majority@16, levels 4-6", ("weighted_best_of_n", 16),
        ("self_consistency", 16), hard_levels)
    for n in [4, 16]:
        row(f"beam vs weighted BoN, hardest bin, N={n}", ("beam_search:4", n),
            ("weighted_best_of_n", n), hardest)
        row(f"beam vs weighted BoN, all, N={n}", ("beam_search:4", n), ("weighted_best_of_n", n), every)
    row("weighted BoN gains from N=8 to 64", ("weighted_best_of_n", 64), ("weighted_best_of_n", 8), every)
    for b in [16, 32, 64]:
        row(f"compute-optimal (budget {b}) vs weighted BoN@64", ("compute_optimal@cv", b),
            ("weighted_best_of_n", 64), every)
    print()
    print("| level | greedy-like N=1 | majority@16 | weighted BoN@16 | best-of-N@64 | beam@16 | 64-sample pass |")
    print("|---|---|---|---|---|---|---|")
    for level in sorted(set(levels.values())):
        qs = [q for q in every if levels[q] == level]
        passed = 100 * sum(pass_rate[q] > 0 for q in qs) / len(qs)
        print(f"| {level} | {accuracy(cells[('best_of_n', 1)], qs):.0f}% | "
              f"{accuracy(cells[('self_consistency', 16)], qs):.0f}% | "
              f"{accuracy(cells[('weighted_best_of_n', 16)], qs):.0f}% | "
              f"{accuracy(cells[('best_of_n', 64)], qs):.0f}% | "
              f"{accuracy(cells[('beam_search:4', 16)], qs):.0f}% | {passed:.0f}% |")


if __name__ == "__main__":
    main()
