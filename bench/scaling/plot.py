#!/usr/bin/env python3
"""The plots of docs/scaling.md, from the sweeps and probes in bench/results/scaling:
knee.png (knee and throughput against N, with linear scaling from N=1), cpu.png (the
orchestrator's CPU per sub-call against load, and its ceiling per core at saturation) and balance.png (calls per generator
under each routing).

    pip install matplotlib==3.9.2   # in a virtual environment of your choice
    python bench/scaling/plot.py bench/results/scaling
"""

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from report import knee  # noqa: E402


def knee_plot(root):
    rows = []
    for path in root.glob("sweep-n*-m*-k1*.json"):
        m = re.match(r"sweep-n(\d+)-m(\d+)-k1(?:-d(\d+))?\.json", path.name)
        n, verifiers, d = int(m[1]), int(m[2]), int(m[3] or 1)
        if verifiers != n:
            continue
        r = knee(path)
        rows.append((n, r["knee"] * d, r.get("throughput", 0) * d, d))
    base = knee(root / "sweep-n1-k1.json")
    rows.append((1, base["knee"], base["throughput"], 1))
    rows.sort()
    ns = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [n * base["knee"] for n in ns], "k--", label="linear from N=1 (3 q/s per pair)")
    ax.plot(ns, [r[1] for r in rows], "o-", label="knee (p99 within the SLO)")
    ax.plot(ns, [r[2] for r in rows], "s-", label="throughput at the knee")
    for n, k, _, d in rows:
        if d > 1:
            ax.annotate(f"x{d}", (n, k), textcoords="offset points", xytext=(-18, 6), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("generator nodes N (as many verifiers)")
    ax.set_ylabel("queries/s (budget 16)")
    ax.set_title("Scale-out on the recorded backend (xD: time-dilated)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(root / "knee.png", dpi=110)


def finish_axes(ax, target, target_label, xlabel, ylabel, title):
    """A dashed target line, labels from 0 up, a legend and a light grid."""
    ax.axhline(target, color="k", linestyle="--", label=target_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, None)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def cpu_plot(root):
    """Left: CPU per sub-call against load below saturation. Right: the ceiling per core
    at saturation (CFS quota), against queries in flight. Old and new builds, paired."""
    probes = root / "probes"
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, label in [("cpu-open-before.json", "before, 1 runtime thread"),
                        ("cpu-open-after.json", "after, 1 runtime thread"),
                        ("cpu-open-after-2threads.json", "after, 2 runtime threads")]:
        path = probes / name
        if path.exists():
            rows = json.loads(path.read_text())["rows"]
            left.plot([r["rate"] for r in rows], [r["us_per_subcall"] for r in rows], "o-",
                      label=label)
    finish_axes(left, 100, "target: 10,000 sub-calls/s per core",
                "load (queries/s, 10.9 sub-calls each)", "orchestrator CPU per sub-call (µs)",
                "Below saturation")
    for build, style in [("before", "s--"), ("after", "o-")]:
        for path in sorted(probes.glob(f"cpu-sat-{build}-*.json")):
            run = json.loads(path.read_text())
            rows = run["rows"]
            right.plot([r["concurrency"] for r in rows],
                       [r["subcalls_per_s"] / run["quota"] for r in rows], style,
                       label=f"{build}, {path.stem.rsplit('-', 1)[1]}")
    right.set_xscale("log", base=2)
    right.set_xticks([32, 64, 128], ["32", "64", "128"])
    finish_axes(right, 10000, "target", "queries in flight (closed loop)",
                "sub-calls/s per core (completed / quota)", "Saturated: capped at 0.1 core")
    fig.tight_layout()
    fig.savefig(root / "cpu.png", dpi=110)


def balance_plot(root):
    runs = [("balance-n8-k1-true-before.json", "rendezvous + slack 2 (before)"),
            ("balance-n8-k1-true.json", "bounded loads (now)"),
            ("balance-n8-k1-false.json", "affinity off"),
            ("balance-n8-k4-true.json", "bounded loads, 4 orchestrators")]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.2
    for i, (name, label) in enumerate(runs):
        path = root / "probes" / name
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        calls = [g["calls"] for g in d["per_generator"].values()]
        mean = sum(calls) / len(calls)
        xs = [j + (i - 1.5) * width for j in range(len(calls))]
        ax.bar(xs, [c / mean for c in calls], width,
               label=f"{label}: max/mean {d['calls_max_over_mean']:.2f}")
    ax.axhline(1.2, color="k", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(8), [f"g{j + 1}" for j in range(8)])
    ax.set_ylabel("calls served / mean")
    ax.set_title("Generate calls per generator, N=8 at 20 q/s for 60 s")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(root / "balance.png", dpi=110)


def main(root):
    root = Path(root)
    knee_plot(root)
    cpu_plot(root)
    balance_plot(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/scaling")
