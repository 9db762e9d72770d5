#!/usr/bin/env python3
"""Load-adaptive budgets on the recorded backend, where a node's loss removes capacity
(docs/load-adaptive.md, "Losing a generator" and "Four orchestrators").

    cargo build --release -p ponder-cli -p ponder-load
    bench/load-adaptive/record.sh                       # once: data/scaling/recording-adaptive
    bench/load-adaptive/scenario.py knee --n 3          # fixed budget 16's knee, this cluster
    bench/load-adaptive/scenario.py kill --n 3 --knee K # 1.5x K, adaptive; kill one, replace it
    bench/load-adaptive/scenario.py orchestrators --n 4 --k 4 --knee K
    bench/load-adaptive/scenario.py orchestrators --n 4 --k 1 --knee K   # the reference

Every process is separate (deploy/local/run-cluster.sh, a real etcd), the model nodes are
recorded (bench/load-adaptive/record.sh recorded the real engine at every budget the
controller grants), and the driver is ponder-load with the scale harness's sequence
(seed 1, its first 300 requests cycled). On two cores a killed real node frees no
capacity (the others take its core); a recorded node's time is modelled per node, so
three recorded generators are three generators' worth of capacity.

`--generator-time F` makes every modelled time of the recorded generators F times the
fit (`--verifier-time` the verifiers'; both labelled in the output). As fitted, a
recorded arith-gen-xs node serves about 40 queries/s of this mix, so three of them would
not bind before the 2-core host running every process does, and losing one would change
nothing measurable. F = 6 (the default) makes each generator about as slow as a model 6x
its cost, which puts three generators' knee where the host keeps up.

`kill`: at `--kill-at` seconds into the load, SIGKILL generator-1; `--replace-after`
seconds later start a replacement. The orchestrator's `/metrics` is polled every 0.25 s
(the controller's load and price, the grant histogram) and every query's grant comes from
ponder-load's records. Prints (and with --out writes) one JSON object; `--plot` draws the
grants over time.

`orchestrators`: a load step (0.5x, then `--high` x the knee, then 0.5x) spread over K
orchestrators; each one's controller is polled every 0.25 s. Says whether the
controllers move together (their signals' correlation) and whether the cluster's grant
oscillates (its spread over 1 s windows at steady load, against one orchestrator's).
"""

import argparse
import math
import json
import os
import statistics
import sys
import contextlib
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scaling"))
from cluster import (  # noqa: E402
    REPO, Cluster, dilated, emit, env_pairs, failed, load, recordings, start_load, total,
)

SEED_CYCLE = ["--seed", "1", "--cycle", "300", "--slo", "10s"]
ENV = {
    "PONDER_MAX_QUERIES": "4096",
    "PONDER_MAX_QUERIES_PER_CLIENT": "0",
    "PONDER_POLICY": os.path.join(REPO, "models", "arith-policy.json"),
    "PONDER_SLO": "10",
}


def cluster(a, work, n, k, mode):
    gen, ver = recordings(a.rec, "bench/load-adaptive/record.sh")
    if a.generator_time != 1.0:
        gen = dilated(gen, work, a.generator_time)
    if a.verifier_time != 1.0:
        ver = dilated(ver, work, a.verifier_time)
    env = dict(ENV, PONDER_BUDGET_MODE=mode, **env_pairs(a.env))
    return Cluster(work, n, a.verifiers or n, k, gen, ver, env=env, keep=bool(a.work))


def workdir(a):
    """`--work` (kept: node logs, the driver's records) or a temporary directory."""
    if a.work:
        os.makedirs(a.work, exist_ok=True)
        return contextlib.nullcontext(a.work)
    return tempfile.TemporaryDirectory()


class Poller(threading.Thread):
    """Every `period` s, each orchestrator's controller gauges and grant histogram:
    rows of (t, name, load, price, granted_sum, granted_count), and in `signals` the
    load's parts before smoothing: (t, name, {signal: value})."""

    def __init__(self, c, t0, period=0.25):
        super().__init__(daemon=True)
        self.c, self.t0, self.period = c, t0, period
        self.rows, self.signals, self.stop = [], [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            for name in self.c.orchestrators():
                try:
                    s = self.c.scrape(name)
                except OSError:
                    continue
                self.rows.append((
                    time.time() - self.t0, name,
                    total(s, "ponder_budget_load"), total(s, "ponder_budget_price"),
                    total(s, "ponder_budget_granted_generations_sum"),
                    total(s, "ponder_budget_granted_generations_count"),
                ))
                self.signals.append((self.rows[-1][0], name, {
                    sig: total(s, "ponder_budget_load_signal", signal=sig)
                    for sig in ("admission", "queries", "backlog", "latency")
                }))
            self.stop.wait(self.period)


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def failures(recs):
    """Failed queries: (outside the recording, any other). A recorded node refuses a call
    it has no answer for (docs/scaling.md, "What it answers"): an adaptive query's
    waves can take a path that no fixed run of the recording took. Those say nothing
    about the cluster; any other failure does."""
    bad = [r for r in recs if r.get("code") != "OK"]
    unrecorded = sum("not in the recording" in (r.get("message") or "") for r in bad)
    return unrecorded, len(bad) - unrecorded


def bootstrap_diff(x, y, resamples=10000, seed=1):
    """mean(x) - mean(y) with a 95% bootstrap interval (x and y resampled apart)."""
    import random

    rng = random.Random(seed)
    d = sorted(
        statistics.mean(rng.choices(x, k=len(x))) - statistics.mean(rng.choices(y, k=len(y)))
        for _ in range(resamples)
    )
    return [round(statistics.mean(x) - statistics.mean(y), 2),
            round(d[int(0.025 * resamples)], 2), round(d[int(0.975 * resamples)], 2)]


def windows(recs, width, key="sent_s"):
    """Mean grant of the queries sent in each `width`-s window: [(start, mean, n)]."""
    out = {}
    for r in recs:
        if r.get("budget_granted") is None or r.get(key) is None:
            continue
        out.setdefault(int(r[key] // width), []).append(r["budget_granted"])
    return [(i * width, statistics.mean(v), len(v)) for i, v in sorted(out.items())]


def knee(a):
    """Fixed budget 16's knee on this cluster (`ponder-load sweep`, FIXED budgets)."""
    with workdir(a) as work:
        c = cluster(a, work, a.n, 1, "fixed")
        try:
            r = load(["sweep", "--addr", c.addrs, "--connections", "2", "--rates", a.rates,
                      "--duration", f"{a.duration}s", "--warmup", "5s", "--grace", "20s",
                      "--mix", "default:16/fixed"] + SEED_CYCLE, os.path.join(work, "sweep.json"))
        finally:
            c.stop()
    return {"scenario": "knee", "n": a.n, "verifiers": a.verifiers or a.n,
            "generator_time": a.generator_time, "verifier_time": a.verifier_time, "sweep": r}


def kill(a):
    """1.5x the knee under adaptive budgets; generator-1 killed, then replaced."""
    rate = round(a.knee * a.load, 3)
    with workdir(a) as work:
        c = cluster(a, work, a.n, 1, "adaptive")
        orch = c.orchestrators()[0]
        try:
            s0 = c.scrape(orch)
            recs_path = os.path.join(work, "load.jsonl")
            t0 = time.time()
            run = start_load(["run", "--addr", c.addrs, "--connections", "2", "--rate", str(rate),
                              "--duration", f"{a.duration}s", "--grace", "30s",
                              "--mix", "default:16/adaptive", "--records", recs_path] + SEED_CYCLE,
                             os.path.join(work, "load.json"))
            poll = Poller(c, t0)
            poll.start()
            time.sleep(a.kill_at)
            killed = time.time() - t0
            c.kill("generator-1")
            time.sleep(a.replace_after)
            name = f"generator-{a.n + 1}"
            started = time.time() - t0
            c.start_node("generator", name)
            joined = None
            while joined is None and time.time() - t0 < a.duration:
                try:
                    if total(c.scrape(name), "ponder_requests_total", method="Generate") > 0:
                        joined = time.time() - t0
                except OSError:
                    pass
                time.sleep(0.05)
            run.wait()
            poll.stop.set()
            poll.join()
            s1 = c.scrape(orch)
            gen_refusals = sum(
                total(c.scrape(g), "ponder_refusals_total", what="call", reason="not_recorded")
                for g in c.names("generator") if g != "generator-1"
            )
            with open(os.path.join(work, "load.json")) as f:
                report = json.load(f)
            recs = records(recs_path)
        finally:
            c.stop()
    # The driver's clock starts at its first send, a moment after t0: place its records
    # on the probe's clock by the first record's send time (under 0.1 s off).
    measured = [r for r in recs if not r.get("warmup")]
    offset = min(r["sent_s"] for r in measured) if measured else 0.0
    for r in measured:
        r["t"] = r["sent_s"] - offset
    w = windows(measured, a.window, key="t")
    before = [r["budget_granted"] for r in measured
              if a.settle <= r["t"] < killed and r.get("budget_granted") is not None]
    m0 = statistics.mean(before)
    sd0 = statistics.pstdev(before)
    during = [r["budget_granted"] for r in measured
              if killed + 2 <= r["t"] < started and r.get("budget_granted") is not None]
    # Back: the queries sent in the 10 s after the replacement's first call, against
    # those sent before the kill. One controller's load cycles over about 12 s at this
    # load (docs/load-adaptive.md), so a window shorter than that measures the cycle's
    # phase, not the level. 95% bootstrap interval of the difference of the means.
    after = [] if joined is None else [
        r["budget_granted"] for r in measured
        if joined <= r["t"] < joined + 10 and r.get("budget_granted") is not None]
    diff = bootstrap_diff(after, before) if after else None

    def latency(a, b):
        v = sorted(r["latency_s"] for r in measured if a <= r["t"] < b and r["code"] == "OK")
        return {"p50": round(statistics.median(v), 2), "p99": round(v[int(0.99 * (len(v) - 1))], 2),
                "answers": len(v)} if v else None
    unrecorded, other = failures(measured)
    by_code = {}
    for r in measured:
        by_code[r["code"]] = by_code.get(r["code"], 0) + 1
    out = {
        "scenario": "kill", "n": a.n, "verifiers": a.verifiers or a.n, "env": a.env or [],
        "generator_time": a.generator_time, "verifier_time": a.verifier_time, "knee": a.knee, "rate": rate,
        "duration_s": a.duration, "killed_s": round(killed, 2), "replacement_started_s": round(started, 2),
        "replacement_first_call_s": None if joined is None else round(joined, 2),
        "grant_before": {"mean": round(m0, 2), "sd": round(sd0, 2), "queries": len(before)},
        "grant_while_down": {"mean": round(statistics.mean(during), 2) if during else None,
                             "queries": len(during)},
        "grant_10s_after_join": {"mean": round(statistics.mean(after), 2) if after else None,
                                 "queries": len(after)},
        "after_minus_before": diff,
        "down_minus_before": bootstrap_diff(during, before) if during else None,
        "latency": {"before": latency(a.settle, killed), "down": latency(killed + 2, started),
                    "after_join": latency(started, a.duration)},
        "window_s": a.window,
        "grant_windows": [[round(t, 1), round(m, 2), n] for t, m, n in w],
        "sent": report["sent"], "ok": report["ok"], "failed": failed(report),
        "codes": by_code, "not_recorded_calls": gen_refusals,
        "failed_outside_recording": unrecorded, "failed_otherwise": other,
        "retries": total(s1, "ponder_retries_total") - total(s0, "ponder_retries_total"),
        "controller": [[round(t, 2), round(l, 3), p] for t, _, l, p, _, _ in poll.rows],
        "signals": [[round(t, 2), {k: round(v, 3) for k, v in sig.items()}] for t, _, sig in poll.signals],
    }
    if a.plot:
        plot_kill(out, a.plot)
    return out


def two_panels():
    """A figure of two stacked panels sharing the time axis (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)


def save(fig, path):
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(f"{path}.{ext}", dpi=110)


def plot_kill(out, path):
    fig, ax = two_panels()
    w = out["grant_windows"]
    ax[0].step([t for t, _, _ in w], [m for _, m, _ in w], where="post",
               label=f"mean grant, queries sent per {out['window_s']:g} s")
    ax[0].axhline(out["grant_before"]["mean"], color="grey", ls=":", label="before the kill")
    ax[0].set_ylabel("generations granted")
    ctl = out["controller"]
    ax[1].plot([r[0] for r in ctl], [r[1] for r in ctl], label="controller load")
    ax[1].set_ylabel("load (1 = capacity)")
    ax[1].set_xlabel("seconds")
    for a in ax:
        a.axvline(out["killed_s"], color="red", ls="--", label="generator-1 killed")
        if out["replacement_first_call_s"] is not None:
            a.axvline(out["replacement_first_call_s"], color="green", ls="--",
                      label="replacement's first call")
        a.legend(fontsize=7, loc="lower left")
    ax[0].set_title(f"adaptive at {out['rate']:g} q/s (1.5x fixed 16's knee), "
                    f"{out['n']} recorded generators")
    save(fig, path)


def orchestrators(a):
    """A load step over K orchestrators; each controller polled."""
    low, high = round(a.knee * 0.5, 3), round(a.knee * a.high, 3)
    phases = [(low, a.phase), (high, a.phase * 2), (low, a.phase)]
    with workdir(a) as work:
        c = cluster(a, work, a.n, a.k, "adaptive")
        try:
            t0 = time.time()
            poll = Poller(c, t0)
            poll.start()
            reports, bounds = [], []
            for rate, secs in phases:
                start = time.time() - t0
                reports.append(load(["run", "--addr", c.addrs, "--connections", str(2 * a.k),
                                     "--rate", str(rate), "--duration", f"{secs}s",
                                     "--mix", "default:16/adaptive",
                                     "--records", os.path.join(work, f"load-{len(reports)}.jsonl")]
                                    + SEED_CYCLE,
                                    os.path.join(work, f"load-{len(reports)}.json")))
                bounds.append((start, time.time() - t0, rate))
            poll.stop.set()
            poll.join()
        finally:
            c.stop()
        fails = [failures(records(os.path.join(work, f"load-{i}.jsonl"))) for i in range(len(reports))]
    names = sorted({r[1] for r in poll.rows})
    series = {n: [r for r in poll.rows if r[1] == n] for n in names}
    hs, he, _ = bounds[1]
    steady = (hs + a.phase / 2, he)  # the high phase once the controllers have reacted
    # Grant histograms' increments between polls, summed per 1 s window: per
    # orchestrator, and for the whole cluster at steady load ({second: [generations
    # granted, queries]}).
    increments, cluster_s = {}, {}
    for n, rows in series.items():
        acc = increments[n] = {}
        for (_, _, _, _, s1, c1), (t2, _, _, _, s2, c2) in zip(rows, rows[1:]):
            bins = [acc.setdefault(int(t2), [0.0, 0.0])]
            if steady[0] <= t2 < steady[1]:
                bins.append(cluster_s.setdefault(int(t2), [0.0, 0.0]))
            for b in bins:
                b[0] += s2 - s1
                b[1] += c2 - c1
    per_s = {n: {t: s / cnt for t, (s, cnt) in acc.items() if cnt > 0}
             for n, acc in increments.items()}
    loads = {n: [r[2] for r in rows if steady[0] <= r[0] < steady[1]] for n, rows in series.items()}
    corr = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            x, y = loads[names[i]], loads[names[j]]
            m = min(len(x), len(y))
            if m > 2 and statistics.pstdev(x[:m]) > 0 and statistics.pstdev(y[:m]) > 0:
                corr.append(statistics.correlation(x[:m], y[:m]))
    grants = [s / cnt for s, cnt in cluster_s.values() if cnt > 0]
    # The controllers' mean load per 1 s at steady load, and its autocorrelation: a
    # cycle shows as a negative lobe at half its period and a positive one at the
    # period; noise (the question mix) decays to within 2/sqrt(n) of 0.
    mean_load = []
    for t in range(int(steady[0]), int(steady[1])):
        v = [r[2] for rows in series.values() for r in rows if t <= r[0] < t + 1]
        if v:
            mean_load.append(statistics.mean(v))
    out = {
        "scenario": "orchestrators", "n": a.n, "k": a.k, "verifiers": a.verifiers or a.n,
        "env": a.env or [],
        "generator_time": a.generator_time, "verifier_time": a.verifier_time, "knee": a.knee,
        "phases": [{"from_s": round(s, 1), "to_s": round(e, 1), "rate": r} for s, e, r in bounds],
        "steady_window_s": [round(steady[0], 1), round(steady[1], 1)],
        "load_signal_correlation": {
            "pairs": len(corr),
            "mean": round(statistics.mean(corr), 3) if corr else None,
            "min": round(min(corr), 3) if corr else None,
            "max": round(max(corr), 3) if corr else None,
        },
        "steady_load": {n: {"mean": round(statistics.mean(v), 3), "sd": round(statistics.pstdev(v), 3)}
                        for n, v in loads.items() if v},
        "load_autocorrelation": {
            "lags_s": list(range(1, 25)),
            "acf": [round(autocorrelation(mean_load, lag), 3) for lag in range(1, 25)],
            "noise_band": round(2 / math.sqrt(len(mean_load)), 3) if mean_load else None,
        },
        # Each controller's price (its decision) at steady load: the median, and the
        # share of polls within 2x of it (-1, the metric's infinity, counts as outside).
        "steady_price": {n: price_spread([r[3] for r in rows if steady[0] <= r[0] < steady[1]])
                         for n, rows in series.items()},
        "cluster_grant_per_s": {
            "mean": round(statistics.mean(grants), 2) if grants else None,
            "sd": round(statistics.pstdev(grants), 2) if grants else None,
            "windows": len(grants),
        },
        "loads": [{"rate": rate, "sent": r["sent"], "ok": r["ok"], "failed": failed(r),
                   "failed_outside_recording": f[0], "failed_otherwise": f[1]}
                  for r, f, (_, _, rate) in zip(reports, fails, bounds)],
        "grant_per_s": {n: [[t, round(g, 2)] for t, g in sorted(v.items())] for n, v in per_s.items()},
        "controller": {n: [[round(t, 2), round(l, 3), p] for t, _, l, p, _, _ in rows]
                       for n, rows in series.items()},
        "signals": {n: [[round(t, 2), {k: round(v, 3) for k, v in sig.items()}]
                        for t, nn, sig in poll.signals if nn == n] for n in names},
    }
    if a.plot:
        plot_orchestrators(out, a.plot)
    return out


def price_spread(prices):
    """The median price and the share of `prices` within 2x of it."""
    if not prices:
        return None
    finite = sorted(p if p >= 0 else math.inf for p in prices)
    median = finite[len(finite) // 2]
    near = sum(1 for p in finite if 0 < median < math.inf and median / 2 <= p <= median * 2)
    return {"median": median if median < math.inf else -1,
            "within_2x": round(near / len(finite), 3)}


def autocorrelation(x, lag):
    """The sample autocorrelation of `x` at `lag` (0 for a constant or short series)."""
    if len(x) <= lag + 1:
        return 0.0
    m = statistics.mean(x)
    var = sum((v - m) ** 2 for v in x)
    if var == 0:
        return 0.0
    return sum((x[i] - m) * (x[i + lag] - m) for i in range(len(x) - lag)) / var


def plot_orchestrators(out, path):
    fig, ax = two_panels()
    for n, rows in sorted(out["grant_per_s"].items()):
        ax[0].step([t for t, _ in rows], [g for _, g in rows], where="post", label=n, lw=1)
    for n, rows in sorted(out["controller"].items()):
        ax[1].plot([r[0] for r in rows], [r[1] for r in rows], label=n, lw=1)
    # The price each controller grants at (the decision; -1 in the metric: infinite).
    price = ax[1].twinx()
    for n, rows in sorted(out["controller"].items()):
        price.step([r[0] for r in rows], [r[2] if r[2] >= 0 else 1.0 for r in rows],
                   where="post", lw=0.8, ls=":", color="black", alpha=0.6)
    price.set_yscale("symlog", linthresh=1e-4)
    price.set_ylabel("price (dotted)")
    ax[0].set_ylabel("mean grant per 1 s")
    ax[1].set_ylabel("controller load")
    ax[1].set_xlabel("seconds")
    for p in out["phases"]:
        for a in ax:
            a.axvspan(p["from_s"], p["to_s"], alpha=0.06 if p["rate"] < out["knee"] else 0.15,
                      color="orange")
    ax[0].legend(fontsize=7, loc="lower left")
    ax[0].set_title(f"{out['k']} orchestrator(s), {out['n']} recorded generators: "
                    f"load step 0.5x -> {out['phases'][1]['rate'] / out['knee']:g}x -> 0.5x the knee")
    save(fig, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["knee", "kill", "orchestrators"])
    p.add_argument("--n", type=int, default=3, help="generator nodes")
    p.add_argument("--k", type=int, default=1, help="orchestrators")
    p.add_argument("--verifiers", type=int, default=0, help="verifier nodes (0: N)")
    p.add_argument("--generator-time", type=float, default=6.0,
                   help="recorded generators' modelled times, x the fit")
    p.add_argument("--verifier-time", type=float, default=1.0,
                   help="recorded verifiers' modelled times, x the fit")
    p.add_argument("--knee", type=float, default=0.0, help="fixed 16's knee, queries/s")
    p.add_argument("--rates", default="3,4,5,6,7,8", help="knee: the sweep's rates")
    p.add_argument("--load", type=float, default=1.5, help="kill: offered load, x the knee")
    p.add_argument("--high", type=float, default=2.0, help="orchestrators: the step, x the knee")
    p.add_argument("--duration", type=float, default=100.0, help="seconds of load (knee: per step)")
    p.add_argument("--phase", type=float, default=30.0, help="orchestrators: seconds of each low phase")
    p.add_argument("--kill-at", type=float, default=35.0)
    p.add_argument("--replace-after", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=10.0, help="kill: grants before this are warm-up")
    p.add_argument("--window", type=float, default=2.0, help="kill: seconds per grant window")
    p.add_argument("--rec", default=os.environ.get("REC", os.path.join(REPO, "data", "scaling", "recording-adaptive")))
    p.add_argument("--plot", help="kill, orchestrators: draw PATH.png and PATH.svg")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--work", help="keep the cluster's logs and the driver's records here")
    p.add_argument("--env", action="append", metavar="K=V",
                   help="set this in every process's environment (e.g. PONDER_LOAD_HIGH=4)")
    a = p.parse_args()
    if a.scenario != "knee" and a.knee <= 0:
        p.error("--knee: fixed 16's knee in queries/s (scenario.py knee)")
    emit(globals()[a.scenario](a), a.out, bulky=("controller", "signals", "grant_windows", "grant_per_s"))


if __name__ == "__main__":
    main()
