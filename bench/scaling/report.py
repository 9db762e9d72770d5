#!/usr/bin/env python3
"""The scale harness's table: the knee (queries/s within the SLO at budget 16) of every
swept cluster, its efficiency against linear scaling from N=1, and accuracy at the knee.

    python3 bench/scaling/report.py bench/results/scaling

Reads sweep-n<N>-k<K>.json (M = ceil(N/4) verifiers), sweep-n<N>-m<M>-k<K>.json (other
verifier counts; ponder-load sweep --json), either with -d<D> (time-dilated D times:
rates and throughputs are multiplied back by D and latencies divided by it: the
undilated equivalent) and
sweep-real-n1.json (the real engine at N=1, when present); prints a markdown table.
Standard library only.
"""
import json
import re
import sys
from pathlib import Path


def knee(path):
    sweep = json.loads(path.read_text())
    met = [s for s in sweep["steps"] if s["met"]]
    best = max(met, key=lambda s: s["rate"]) if met else None
    failed = sum(s["report"]["completed"] - s["report"]["ok"] for s in sweep["steps"])
    peak = max(s["report"]["throughput"] for s in sweep["steps"])
    sent = sum(s["report"]["sent"] for s in sweep["steps"])
    if best is None:
        return {"knee": 0.0, "accuracy": None, "p99": None, "failed": failed, "sent": sent,
                "peak": peak}
    r = best["report"]
    return {
        "knee": best["rate"],
        "throughput": r["throughput"],
        "accuracy": r["accuracy"],
        "p99": r["slo_latency_s"],
        "failed": failed,
        "sent": sent,
        "top_rate": max(s["rate"] for s in sweep["steps"]),
        "peak": peak,
    }


def main(root):
    root = Path(root)
    rows = {}
    for path in sorted(root.glob("sweep-n*-k*.json")):
        m = re.match(r"sweep-n(\d+)(?:-m(\d+))?-k(\d+)(?:-d(\d+))?\.json", path.name)
        n = int(m[1])
        verifiers = int(m[2]) if m[2] else (n + 3) // 4
        rows[(n, verifiers, int(m[3]), int(m[4] or 1))] = knee(path)
    real = root / "sweep-real-n1.json"
    print("| cluster | knee (q/s) | efficiency vs linear | throughput at knee | accuracy at knee | p99 at knee (s) | peak throughput (q/s) | failed / sent |")
    print("|---|---|---|---|---|---|---|---|")
    if real.exists():
        r = knee(real)
        print(f"| real engine, N=1 K=1 | {r['knee']:g} | - | {r.get('throughput', 0):.2f} | "
              f"{r['accuracy'] or 0:.3f} | {r['p99'] or 0:.1f} | {r['peak']:.2f} | {r['failed']} / {r['sent']} |")
    base = rows.get((1, 1, 1, 1))
    # By orchestrators, then the default verifier ratio before others, then size.
    for n, m, k, d in sorted(rows, key=lambda key: (key[2], key[1] != (key[0] + 3) // 4, key[0])):
        r = rows[(n, m, k, d)]
        eff = r["knee"] * d / (n * base["knee"]) if base and base["knee"] else float("nan")
        capped = " (top rate met)" if r["knee"] and r["knee"] >= r.get("top_rate", 0) else ""
        acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
        p99 = f"{r['p99'] / d:.1f}" if r["p99"] is not None else "-"
        label = f"recorded, N={n} M={m} K={k}" + (f", dilated x{d}" if d > 1 else "")
        print(f"| {label} | {r['knee'] * d:g}{capped} | {eff:.2f} | "
              f"{r.get('throughput', 0) * d:.2f} | {acc} | {p99} | {r['peak'] * d:.2f} | {r['failed']} / {r['sent']} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/scaling")
