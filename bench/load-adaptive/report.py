#!/usr/bin/env python3
"""The table and plot of docs/load-adaptive.md, "Measured", from what run.sh wrote.

    bench/load-adaptive/report.py [OUT] [--slo 10] [--resamples 10000]

Per mode and offered load: accuracy goodput (answers that are correct and within the SLO,
per second of the arrival window: from the first to the last scheduled send, the same
for every mode at a load, so a mode's last slow answer does not stretch its own window
as it does ponder-load's `goodput`), accuracy (failures count as wrong), p50 and p99
latency of the answered queries, refusals (RESOURCE_EXHAUSTED) and the mean budget
granted. Every mode got the same seeded question sequence at a given load, so the
comparisons are paired: 95% bootstrap intervals over the questions (seeded), both modes
resampled together. Needs matplotlib for the plot (bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

MODES = ["fixed1", "fixed2", "fixed4", "fixed8", "fixed16", "switch", "adaptive", "capacity"]
# The modes that adapt, each compared with the others (capacity: run.sh with CAPACITY).
ADAPTIVE = ["adaptive", "capacity"]
FIXED = ["fixed1", "fixed2", "fixed4", "fixed8", "fixed16"]


def records_path(out: Path, mode: str, m: str):
    """A run's records: MODE-xM.jsonl, or gzipped (.jsonl.gz, as committed)."""
    plain = out / f"{mode}-x{m}.jsonl"
    return plain if plain.exists() else out / f"{mode}-x{m}.jsonl.gz"


def read(out: Path, mode: str, m: str):
    path = records_path(out, mode, m)
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
        recs = [json.loads(l) for l in f if l.strip()]
    recs = [r for r in recs if not r.get("warmup")]
    info = json.load(open(out / f"{mode}-x{m}.json"))
    return {r["index"]: r for r in recs}, info


def good(r, slo):
    return (
        r["code"] == "OK"
        and bool(r.get("correct"))
        and r.get("latency_s") is not None
        and r["latency_s"] <= slo
    )


def quantile(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def paired(a: dict, b: dict, stat, resamples: int, seed: int = 7):
    """stat(records_a, records_b) on the common questions, and its 95% interval."""
    keys = sorted(set(a) & set(b))
    point = stat([a[k] for k in keys], [b[k] for k in keys])
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        s = [keys[rng.randrange(len(keys))] for _ in keys]
        draws.append(stat([a[k] for k in s], [b[k] for k in s]))
    draws.sort()
    return point, draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="bench/results/load-adaptive")
    ap.add_argument("--slo", type=float, default=10.0)
    ap.add_argument("--resamples", type=int, default=10000)
    a = ap.parse_args()
    out = Path(a.out)
    # The loads any mode ran at (a run of a few modes, MODES=..., has no fixed16).
    mults = sorted(
        {p.name.split("-x")[1].split(".jsonl")[0] for p in out.glob("*-x*.jsonl*")}, key=float
    )
    rows, table = {}, []
    for m in mults:
        for mode in MODES:
            if not records_path(out, mode, m).exists():
                continue
            recs, info = read(out, mode, m)
            window = max(r["intended_s"] for r in recs.values()) - min(
                r["intended_s"] for r in recs.values()
            ) or 1.0
            ok = [r for r in recs.values() if r["code"] == "OK"]
            lat = [r["latency_s"] for r in ok if r.get("latency_s") is not None]
            granted = [r["budget_granted"] for r in ok if r.get("budget_granted")]
            row = {
                "mode": mode,
                "load": float(m),
                "rate": info.get("target_rate"),
                "queries": len(recs),
                "goodput": sum(good(r, a.slo) for r in recs.values()) / window,
                "accuracy": sum(bool(r.get("correct")) for r in recs.values()) / max(1, len(recs)),
                "p50": quantile(lat, 0.5),
                "p99": quantile(lat, 0.99),
                "refused": sum(r["code"] == "RESOURCE_EXHAUSTED" for r in recs.values()),
                "failed": sum(r["code"] != "OK" for r in recs.values()),
                "granted": sum(granted) / len(granted) if granted else None,
                "window": window,
            }
            rows[(mode, m)] = (row, recs)
            table.append(row)
    # Paired comparisons at each load.
    comps = []
    for m, mode in ((m, mode) for mode in ADAPTIVE for m in mults):
        if (mode, m) not in rows:
            continue
        ad_row, ad = rows[(mode, m)]
        w = ad_row["window"]
        best = max(
            (f for f in FIXED if (f, m) in rows), key=lambda f: rows[(f, m)][0]["goodput"]
        )
        for other in sorted({best, "fixed16", "switch"} | set(ADAPTIVE[: ADAPTIVE.index(mode)])):
            if (other, m) not in rows:
                continue
            ob = rows[(other, m)][1]
            gp = paired(
                ad, ob,
                lambda x, y: (sum(good(r, a.slo) for r in x) - sum(good(r, a.slo) for r in y)) / w,
                a.resamples,
            )
            acc = paired(
                ad, ob,
                lambda x, y: (sum(bool(r.get("correct")) for r in x) - sum(bool(r.get("correct")) for r in y)) / len(x),
                a.resamples,
            )
            comps.append({
                "mode": mode, "load": float(m), "versus": other, "best_fixed": other == best,
                "goodput_diff": gp, "accuracy_diff": acc,
                "goodput_ratio": ad_row["goodput"] / max(1e-9, rows[(other, m)][0]["goodput"]),
            })
    json.dump({"slo_s": a.slo, "rows": table, "comparisons": comps},
              open(out / "summary.json", "w"), indent=1)
    lines = ["| load (x knee) | mode | queries | goodput (correct in SLO /s) | accuracy | p50 s | p99 s | refused | failed | mean granted |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['load']:g} | {r['mode']} | {r['queries']} | {r['goodput']:.3f} | {100*r['accuracy']:.1f}% | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['refused']} | {r['failed']} | "
            + (f"{r['granted']:.1f}" if r["granted"] else "-") + " |")
    lines += ["", "| load | mode | versus | goodput diff /s [95% CI] | ratio | accuracy diff [95% CI] |", "|---|---|---|---|---|---|"]
    for c in comps:
        g, acc = c["goodput_diff"], c["accuracy_diff"]
        tag = " (best fixed)" if c["best_fixed"] else ""
        lines.append(
            f"| {c['load']:g} | {c['mode']} | {c['versus']}{tag} | {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}] | {c['goodput_ratio']:.2f}x | "
            f"{100*acc[0]:+.1f} [{100*acc[1]:+.1f}, {100*acc[2]:+.1f}] pts |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -r bench/requirements.txt)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in MODES:
        pts = [(r["load"], r["goodput"]) for r in table if r["mode"] == mode]
        if pts:
            style = "-" if mode in ADAPTIVE + ["switch"] else "--"
            width = 2.5 if mode in ADAPTIVE else 1.2
            ax.plot(*zip(*pts), style, marker="o", linewidth=width, label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("offered load (x the knee of fixed budget 16)")
    ax.set_ylabel(f"correct answers within {a.slo:g} s per second")
    ax.set_title("Accuracy goodput against offered load")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"goodput.{ext}", dpi=110)


if __name__ == "__main__":
    main()
