#!/usr/bin/env python3
"""The scale probes of docs/scaling.md beyond the knee sweep (run.sh): balance and prefix
affinity, orchestrator CPU per query and per sub-call, membership churn, a join/leave
storm, and what etcd sees. Each probe starts its own process cluster on the recorded
backend (cluster.py), drives it with ponder-load, and prints one JSON object (kept in
bench/results/scaling/probes/, quoted by docs/scaling.md; plot.py draws some).

    cargo build --release -p ponder-cli -p ponder-load
    bench/scaling/probe.py balance --n 8 --rate 20 --affinity true
    bench/scaling/probe.py cpu --n 8 --speedup 8 --rates 15,30,60,90,120
    bench/scaling/probe.py cpu --n 8 --speedup 8 --quota 0.1 --concurrency 8,16,32,64
    bench/scaling/probe.py churn --n 8 --rate 12
    bench/scaling/probe.py storm --n 16 --rate 12 --duration 60 [--kill]
    bench/scaling/probe.py etcd --n 64 --verifiers 16
    bench/scaling/probe.py limits --n 4 --k 4 --rate 8 --rate-limit 2
    bench/scaling/probe.py fidelity --rates 1,1.5,2,2.5,3 --duration 30 --calibrate
    bench/scaling/probe.py fidelity --pin --fresh --concurrency 6 --duration 30

The recording is run.sh's (REC, default data/scaling/recording, with the latency fits
copied beside it): record it with `NS=" " KS=" " REAL=0 bench/scaling/run.sh` first.
"""

import argparse
import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import (  # noqa: E402
    PONDER, REPO, Cluster, cpu_seconds, dilated, emit, env_pairs, failed, load, recordings, scrape,
    start_load, total,
)

WORKLOAD = ["--mix", "default:16/fixed", "--seed", "1", "--cycle", "300", "--slo", "10s"]
RECORD = '`NS=" " KS=" " REAL=0 bench/scaling/run.sh`'
ENV = {
    "PONDER_MAX_QUERIES": "4096",
    "PONDER_MAX_QUERIES_PER_CLIENT": "0",
    "PONDER_BUDGET_MODE": "fixed",
    "PONDER_POLICY": os.path.join(REPO, "models", "arith-policy.json"),
}


def cluster(a, work, n, k=1, env=None, factor=1.0):
    gen, ver = recordings(a.rec, RECORD)
    env = dict(env_pairs(getattr(a, "env", [])), **(env or {}))
    if factor != 1.0:
        gen, ver = dilated(gen, work, factor), dilated(ver, work, factor)
    m = a.verifiers or n
    return Cluster(work, n, m, k, gen, ver, env=dict(ENV, **(env or {})))


def worker_counts(c, role):
    """Per node of `role`: calls answered, tokens, prefix-cache hits and lookups."""
    method = "Generate" if role == "generator" else "Score"
    out = {}
    for name in c.names(role):
        s = c.scrape(name)
        out[name] = {
            "calls": total(s, "ponder_requests_total", method=method, code="OK"),
            "tokens": total(s, "ponder_tokens_total"),
            "prompt_tokens": total(s, "ponder_tokens_total", kind="prompt"),
            "saved_tokens": total(s, "ponder_prefix_cache_saved_tokens_total"),
        }
    return out


def delta(after, before):
    return {
        name: {k: v - before.get(name, {}).get(k, 0) for k, v in row.items()}
        for name, row in after.items()
    }


def max_over_mean(values):
    values = list(values)
    mean = statistics.mean(values)
    return max(values) / mean if mean else float("nan")


def balance(a):
    """Calls and tokens per generator over a fixed-rate run, and the prefix hit rate."""
    with tempfile.TemporaryDirectory() as work:
        c = cluster(a, work, a.n, a.k, {"PONDER_AFFINITY": a.affinity})
        try:
            before = worker_counts(c, "generator")
            o0 = [c.scrape(o) for o in c.orchestrators()]
            r = load(["run", "--addr", c.addrs, "--connections", "2", "--rate", str(a.rate),
                      "--duration", f"{a.duration}s", "--warmup", "5s"] + WORKLOAD,
                     os.path.join(work, "load.json"))
            d = delta(worker_counts(c, "generator"), before)
            o1 = [c.scrape(o) for o in c.orchestrators()]
        finally:
            c.stop()
    routes = {
        res: sum(total(b, "ponder_affinity_routes_total", role="generator", result=res)
                 - total(a, "ponder_affinity_routes_total", role="generator", result=res)
                 for a, b in zip(o0, o1))
        for res in ("preferred", "other")
    }
    saved = sum(x["saved_tokens"] for x in d.values())
    prompt = sum(x["prompt_tokens"] for x in d.values())
    return {
        "probe": "balance", "n": a.n, "k": a.k, "rate": a.rate, "affinity": a.affinity,
        "duration_s": a.duration, "sent": r["sent"], "ok": r["ok"], "failed": failed(r),
        "throughput": r["throughput"], "p99_s": (r.get("latency") or {}).get("p99"),
        "calls_max_over_mean": max_over_mean(x["calls"] for x in d.values()),
        "tokens_max_over_mean": max_over_mean(x["tokens"] for x in d.values()),
        # Generate calls that went to their query's first-ranked generator.
        "affinity_hit_rate": routes["preferred"] / max(1, sum(routes.values())),
        # Prompt tokens the generators' prefix caches served (inflated by the cycled
        # load: a node may have seen the same prompt a cycle earlier).
        "prefix_saved_fraction": saved / prompt if prompt else None,
        "per_generator": d,
    }


CGROUP_CPU = "/sys/fs/cgroup/cpu"
QUOTA_PERIOD_US = 10_000


def cpu_quota(pid, fraction):
    """Caps process `pid` (all its threads) at `fraction` of one core with a cgroup v1
    CFS quota (period 10 ms); returns the cgroup's directory."""
    group = os.path.join(CGROUP_CPU, f"ponder-probe-{os.getpid()}")
    if not os.path.isdir(CGROUP_CPU):
        sys.exit(f"--quota needs the cgroup v1 cpu controller at {CGROUP_CPU}")
    os.makedirs(group, exist_ok=True)
    for name, value in (("cpu.cfs_period_us", QUOTA_PERIOD_US),
                        ("cpu.cfs_quota_us", int(fraction * QUOTA_PERIOD_US)),
                        ("cgroup.procs", pid)):
        with open(os.path.join(group, name), "w") as f:
            f.write(str(value))
    return group


def throttled(group):
    """Periods so far in which the cgroup ran out of quota, and all periods."""
    with open(os.path.join(group, "cpu.stat")) as f:
        stat = dict(line.split() for line in f)
    return int(stat["nr_throttled"]), int(stat["nr_periods"])


def cpu(a):
    """Orchestrator CPU per query and per sub-call: the orchestrator alone on core 1,
    every other process (nodes, etcd, the driver) on core 0. `--speedup F`: the nodes
    answer F times as fast as the fit, so that few nodes load the orchestrator (its own
    work per call does not depend on how long a node takes). `--quota Q`: the
    orchestrator may use only Q of its core (a CFS quota), so that the loads core 0 can
    offer saturate it: the sub-calls it then completes per second, over Q, are its
    ceiling per core, measured rather than extrapolated."""
    with tempfile.TemporaryDirectory() as work:
        c = cluster(a, work, a.n, 1, factor=1.0 / a.speedup)
        rows = []
        group = None
        try:
            orch = c.orchestrators()[0]
            for name, pid in c.pids.items():
                core = "1" if name.startswith("orchestrator") else "0"
                subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True,
                               stdout=subprocess.DEVNULL)
            pid = c.pid(orch)
            if a.quota:
                group = cpu_quota(pid, a.quota)
            loads = ([("concurrency", int(x)) for x in a.concurrency.split(",")] if a.concurrency
                     else [("rate", float(x)) for x in a.rates.split(",")])
            for kind, level in loads:
                def counts():
                    s = c.scrape(orch)
                    calls = sum(
                        sum(v["calls"] for v in worker_counts(c, role).values())
                        for role in ("generator", "verifier"))
                    return cpu_seconds(pid), total(s, "ponder_requests_total", method="Solve"), calls
                t0, (cpu0, q0, s0) = time.time(), counts()
                th0 = throttled(group) if group else (0, 0)
                r = load(["run", "--addr", c.addrs, "--connections", "2", f"--{kind}", str(level),
                          "--duration", f"{a.duration}s", "--warmup", "2s"] + WORKLOAD,
                         os.path.join(work, f"load-{kind}-{level}.json"), cpu=0)
                cpu1, q1, s1 = counts()
                wall = time.time() - t0
                used, queries, subcalls = cpu1 - cpu0, q1 - q0, s1 - s0
                th1 = throttled(group) if group else (0, 0)
                rows.append({
                    kind: level, "wall_s": wall, "cpu_s": used, "queries": queries,
                    "subcalls": subcalls, "failed": failed(r),
                    "answered_per_s": r.get("throughput"),
                    "subcalls_per_s": subcalls / wall,
                    "core_busy": used / wall,
                    "throttled_periods": (th1[0] - th0[0]) / max(1, th1[1] - th0[1]),
                    "us_per_query": 1e6 * used / queries if queries else None,
                    "us_per_subcall": 1e6 * used / subcalls if subcalls else None,
                    "subcalls_per_query": subcalls / queries if queries else None,
                })
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            c.stop()
            if group:
                os.rmdir(group)
    per_call = [r["us_per_subcall"] for r in rows if r["us_per_subcall"]]
    return {
        "probe": "cpu", "n": a.n, "speedup": a.speedup, "env": a.env or [], "quota": a.quota,
        "rows": rows,
        "subcalls_per_core_s": [1e6 / x for x in per_call],
    }


def watch_members(orch, until, done):
    """Polls `ponder status` on `orch` every 0.1 s until `done(ids)` holds: (time,
    {generator instance id: health}) rows."""
    out = []
    while time.time() < until:
        p = subprocess.run([PONDER, "status", "--addr", orch, "--json"], capture_output=True,
                           text=True)
        if p.returncode == 0:
            members = json.loads(p.stdout).get("members", [])
            ids = {m["instance_id"]: m["health"] for m in members if m["role"] == "generator"}
            out.append((time.time(), ids))
            if done(ids):
                break
        time.sleep(0.1)
    return out


def churn(a):
    """Join to first call, and SIGKILL to leaving routing, under load."""
    with tempfile.TemporaryDirectory() as work:
        c = cluster(a, work, a.n, 1)
        try:
            orch = c.addrs.split(",")[0]
            s0 = c.scrape(c.orchestrators()[0])
            run = start_load(["run", "--addr", c.addrs, "--connections", "2", "--rate",
                              str(a.rate), "--duration", "60s"] + WORKLOAD,
                             os.path.join(work, "load.json"))
            time.sleep(10)
            # Join: a new generator; its first answered Generate call.
            name = f"generator-{a.n + 1}"
            started = time.time()
            c.start_node("generator", name)
            log = os.path.join(work, f"{name}.log")
            listening = first_call = None
            while time.time() - started < 30 and first_call is None:
                if listening is None and "generator listening on" in open(log).read():
                    listening = time.time()
                if listening is not None:
                    try:
                        if total(c.scrape(name), "ponder_requests_total", method="Generate") > 0:
                            first_call = time.time()
                    except OSError:
                        pass
                time.sleep(0.02)
            time.sleep(5)
            healths = [watch_members(orch, time.time() + 5, lambda ids: True)[-1][1]["generator-1"]]
            # Leave: SIGKILL generator-1; when ClusterStatus stops listing it.
            victim = "generator-1"
            killed = time.time()
            c.kill(victim)
            rows = watch_members(orch, killed + 30, lambda ids: victim not in ids)
            left = next((t for t, ids in rows if victim not in ids), None)
            ejected = next((t for t, ids in rows if ids.get(victim, "") != healths[0]), None)
            run.wait()
            s1 = c.scrape(c.orchestrators()[0])
            with open(os.path.join(work, "load.json")) as f:
                r = json.load(f)
            lease_ttl = float(os.environ.get("PONDER_LEASE_TTL", "10"))
        finally:
            c.stop()
    return {
        "probe": "churn", "n": a.n, "rate": a.rate,
        "join_start_to_listening_s": listening - started if listening else None,
        "join_listening_to_first_call_s": first_call - listening if first_call else None,
        "kill_to_leave_s": left - killed if left else None,
        "kill_to_not_serving_s": ejected - killed if ejected else None,
        "healthy_state": healths[0],
        "lease_ttl_s": lease_ttl,
        "sent": r["sent"], "ok": r["ok"], "failed": failed(r), "errors": r["errors"],
        "retries": total(s1, "ponder_retries_total") - total(s0, "ponder_retries_total"),
        "ejections": total(s1, "ponder_ejections_total") - total(s0, "ponder_ejections_total"),
    }


def etcd_counts(c):
    s = scrape(c.etcd + "/metrics")
    msgs = {}
    for name, labels, v in s:
        if name in ("grpc_server_msg_received_total", "grpc_server_msg_sent_total"):
            key = f'{labels.get("grpc_method")}.{name.split("_")[3]}'
            msgs[key] = msgs.get(key, 0) + v
    return {
        "revision": total(s, "etcd_debugging_mvcc_current_revision"),
        "compact_revision": total(s, "etcd_debugging_mvcc_compact_revision"),
        "db_bytes": total(s, "etcd_mvcc_db_total_size_in_bytes"),
        "db_in_use_bytes": total(s, "etcd_mvcc_db_total_size_in_use_in_bytes"),
        "keys": total(s, "etcd_debugging_mvcc_keys_total"),
        "puts": total(s, "etcd_mvcc_put_total"),
        "deletes": total(s, "etcd_mvcc_delete_total"),
        "watchers": total(s, "etcd_debugging_mvcc_watcher_total"),
        "leases_granted": total(s, "etcd_debugging_lease_granted_total"),
        "leases_revoked": total(s, "etcd_debugging_lease_revoked_total"),
        "leases_renewed": total(s, "etcd_debugging_lease_renewed_total"),
        "msgs": msgs,
    }


def storm(a):
    """Every generator restarted within `--within` seconds under load: SIGTERM (a
    rolling restart, as Kubernetes does it) or SIGKILL (`--kill`), each replaced at
    once under the same instance id."""
    with tempfile.TemporaryDirectory() as work:
        c = cluster(a, work, a.n, 1)
        try:
            e0 = etcd_counts(c)
            s0 = c.scrape(c.orchestrators()[0])
            run = start_load(["run", "--addr", c.addrs, "--connections", "2", "--rate",
                              str(a.rate), "--duration", f"{a.duration}s"] + WORKLOAD,
                             os.path.join(work, "load.json"))
            time.sleep(15)
            names = c.names("generator")
            gap = a.within / len(names)
            sig = signal.SIGKILL if a.kill else signal.SIGTERM
            t0 = time.time()
            for name in names:
                c.kill(name, sig)
                c.start_node("generator", name + "-r")
                time.sleep(gap)
            spread = time.time() - t0
            run.wait()
            e1 = etcd_counts(c)
            s1 = c.scrape(c.orchestrators()[0])
            with open(os.path.join(work, "load.json")) as f:
                r = json.load(f)
        finally:
            c.stop()
    return {
        "probe": "storm", "n": a.n, "rate": a.rate, "signal": "KILL" if a.kill else "TERM",
        "restarted": len(names), "within_s": spread,
        "sent": r["sent"], "ok": r["ok"], "failed": failed(r), "errors": r["errors"],
        "retries": total(s1, "ponder_retries_total") - total(s0, "ponder_retries_total"),
        "etcd_before": e0, "etcd_after": e1,
    }


def etcd(a):
    """What etcd serves for leases and watches with N generators (and N/4 verifiers)
    registered and one orchestrator watching, at rest and under load."""
    with tempfile.TemporaryDirectory() as work:
        c = cluster(a, work, a.n, 1)
        try:
            e0, t0 = etcd_counts(c), time.time()
            time.sleep(a.duration)
            e1, t1 = etcd_counts(c), time.time()
        finally:
            c.stop()
    rates = {k: (v - e0["msgs"].get(k, 0)) / (t1 - t0) for k, v in e1["msgs"].items()}
    return {
        "probe": "etcd", "n": a.n, "nodes": a.n + (a.verifiers or a.n) + 1, "window_s": t1 - t0,
        "msgs_per_s": {k: round(v, 2) for k, v in sorted(rates.items()) if v > 0},
        "etcd": e1,
    }


def limits(a):
    """A per-client rate limit under K orchestrators: one client (the driver, one
    address) sends `--rate` queries/s spread over every orchestrator, each of which
    enforces `--rate-limit` on its own."""
    with tempfile.TemporaryDirectory() as work:
        c = cluster(a, work, a.n, a.k, {"PONDER_RATE_LIMIT": str(a.rate_limit),
                                         "PONDER_RATE_BURST": str(max(1, round(a.rate_limit)))})
        try:
            r = load(["run", "--addr", c.addrs, "--connections", "2", "--rate", str(a.rate),
                      "--arrivals", "constant", "--duration", f"{a.duration}s"] + WORKLOAD,
                     os.path.join(work, "load.json"))
        finally:
            c.stop()
    return {
        "probe": "limits", "n": a.n, "k": a.k, "rate": a.rate, "rate_limit": a.rate_limit,
        "sent": r["sent"], "ok": r["ok"], "errors": r["errors"],
        "admitted_per_s": r["ok"] / r["window_s"],
    }


def fidelity(a):
    """The recorded backend against the real engine at N = 1, call by call: the same
    loads on a real cluster (the bundled models) and on a recorded one, with each node's
    mean time per call (`ponder_request_duration_seconds`, from its arrival at the node
    to its answer) and the queries' latency and accuracy. Says where a gap between the
    two comes from: the nodes' service times, or what lies around them.

    `--pin`: each model node on a core of its own, as the fit was measured
    (run-cluster.sh --pin; `ponder fit-latency` under taskset).
    `--fresh`: fit the latency model and record the workload in this run, not from REC:
    the fit first (pinned to core 0), then the real cluster records the first `--cycle`
    requests once (a warm-up that every later step replays), then the measured steps;
    the recorded cluster serves that recording with that fit. What tests/fidelity.rs
    runs.
    `--concurrency C1,C2`: closed loops of that many queries in flight, instead of
    `--rates`.
    `--calibrate`: a third cluster, recorded with each role's modelled times scaled by
    real / recorded mean time per call at the first load of this run (dilate.py), is
    then compared with the real one at the other loads (held out)."""
    loads = loads_of(a)
    out = {"probe": "fidelity", "loads": [f"{k}={v}" for k, v in loads], "pin": a.pin,
           "fresh": a.fresh, "runs": [], "factors": None}
    workload = WORKLOAD if not a.fresh else cycled(WORKLOAD, a.cycle)
    kinds = ["real", "recorded"] + (["calibrated"] if a.calibrate else [])
    with tempfile.TemporaryDirectory() as keep:
        if a.fresh:
            rec_root = os.path.join(keep, "rec")
            fit_root = os.path.join(keep, "fit")
            out["fit"] = fresh_fit(fit_root)
        else:
            gen, ver = recordings(a.rec, RECORD)
        for kind in kinds:
            with tempfile.TemporaryDirectory() as work:
                record = None
                if kind == "real":
                    rec = (None, None)
                    record = rec_root if a.fresh else None
                elif a.fresh and kind == "recorded":
                    gen, ver = fitted_recording(rec_root, fit_root)
                    rec = (gen, ver)
                elif kind == "recorded":
                    rec = (gen, ver)
                else:
                    first = {r["kind"]: r for r in out["runs"] if r["load"] == out["loads"][0]}
                    f_gen = first["real"]["Generate_mean_ms"] / first["recorded"]["Generate_mean_ms"]
                    f_ver = first["real"]["Score_mean_ms"] / first["recorded"]["Score_mean_ms"]
                    out["factors"] = {"generator": f_gen, "verifier": f_ver}
                    rec = (dilated(gen, work, f_gen), dilated(ver, work, f_ver))
                env = dict(dict(kv.split("=", 1) for kv in a.env or []), **ENV)
                c = Cluster(work, 1, 1, 1, *rec, env=env, pin=a.pin, record_calls=record)
                try:
                    if a.fresh:
                        # Every request of the cycle once: the real cluster records them,
                        # the recorded one warms its prefix cache as the real one did.
                        load(["run", "--addr", c.addrs, "--concurrency", "4",
                              "--requests", str(a.cycle)] + workload,
                             os.path.join(work, "warm-up.json"))
                    for flag, value in loads:
                        row = fidelity_step(c, kind, flag, value, a.duration, work, workload)
                        out["runs"].append(row)
                        print(json.dumps(row), file=sys.stderr)
                finally:
                    c.stop()
    return out


def loads_of(a):
    """The probe's loads as (ponder-load flag, value): closed loops or rates."""
    if a.concurrency:
        return [("concurrency", int(x)) for x in a.concurrency.split(",")]
    return [("rate", float(x)) for x in a.rates.split(",")]


def cycled(workload, cycle):
    """`workload` cycling over its first `cycle` requests."""
    w = list(workload)
    w[w.index("--cycle") + 1] = str(cycle)
    return w


def fresh_fit(root):
    """`ponder fit-latency` of the default pair into `root`, on core 0 alone (the
    workload's calls at 2 questions per level, the sweep once); its printed table."""
    cmd = ["taskset", "-c", "0", PONDER, "fit-latency", "--default-only", "--repeats", "1",
           "--workload", "2", "--out", root]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def fitted_recording(rec_root, fit_root):
    """The real cluster's recording (run-cluster.sh --record-calls: ROOT/<role>) with
    the fresh fit of each role's model beside it."""
    dirs = []
    for role in ("generator", "verifier"):
        rec = os.path.join(rec_root, role)
        with open(os.path.join(rec, "info.json")) as f:
            model_id = json.load(f)["model_id"]
        fits = glob.glob(os.path.join(fit_root, f"{role}-*", "latency.json"))
        fit = [p for p in fits if json.load(open(p))["model_id"] == model_id]
        if not fit:
            sys.exit(f"no fit of {role} {model_id} in {fit_root}")
        with open(fit[0]) as src, open(os.path.join(rec, "latency.json"), "w") as dst:
            dst.write(src.read())
        dirs.append(rec)
    return tuple(dirs)


def fidelity_step(c, kind, flag, value, duration, work, workload):
    """One load on cluster `c`: the driver's figures and each node's mean time per call."""
    def node_times():
        row = {}
        for role, method, kind in (("generator", "Generate", "prompt"),
                                   ("verifier", "Score", "scored")):
            s = c.scrape(c.names(role)[0])
            row[method] = (total(s, "ponder_request_duration_seconds_sum", method=method),
                           total(s, "ponder_request_duration_seconds_count", method=method),
                           total(s, "ponder_tokens_total", kind=kind))
        return row
    before = node_times()
    r = load(["run", "--addr", c.addrs, "--connections", "2", f"--{flag}", str(value),
              "--duration", f"{duration}s", "--warmup", "5s"] + workload,
             os.path.join(work, f"load-{flag}-{value}.json"))
    after = node_times()
    row = {"kind": kind, "load": f"{flag}={value}", flag: value, "failed": failed(r),
           "sent": r["sent"], "throughput": r["throughput"], "accuracy": r["accuracy"],
           "p50_s": r["latency"]["p50"], "p99_s": r["latency"]["p99"]}
    for method in after:
        secs = after[method][0] - before[method][0]
        calls = after[method][1] - before[method][1]
        tokens = after[method][2] - before[method][2]
        row[f"{method}_calls"] = calls
        row[f"{method}_mean_ms"] = 1e3 * secs / calls if calls else None
        # Prompt tokens per Generate call, scored (uncached) tokens per Score call.
        row[f"{method}_tokens_per_call"] = tokens / calls if calls else None
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=["balance", "cpu", "churn", "storm", "etcd", "limits", "fidelity"])
    p.add_argument("--n", type=int, default=8, help="generator nodes")
    p.add_argument("--k", type=int, default=1, help="orchestrators (balance)")
    p.add_argument("--verifiers", type=int, default=0, help="verifier nodes (0: N, one per generator: docs/scaling.md)")
    p.add_argument("--rate", type=float, default=12.0, help="queries/s")
    p.add_argument("--rates", default="4,8,12,16", help="cpu: the loads, queries/s")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--affinity", default="true", choices=["true", "false"])
    p.add_argument("--speedup", type=float, default=1.0,
                   help="cpu: nodes this many times as fast as the fit")
    p.add_argument("--concurrency", default="",
                   help="cpu, fidelity: closed loops with these queries in flight, instead of --rates")
    p.add_argument("--calibrate", action="store_true",
                   help="fidelity: also a recorded cluster scaled to the real one at the first rate")
    p.add_argument("--pin", action="store_true",
                   help="fidelity: each model node on a core of its own (run-cluster.sh --pin)")
    p.add_argument("--fresh", action="store_true",
                   help="fidelity: fit and record in this run instead of using REC")
    p.add_argument("--cycle", type=int, default=40,
                   help="fidelity --fresh: the requests recorded and cycled")
    p.add_argument("--quota", type=float, default=0.0,
                   help="cpu: cap the orchestrator at this fraction of a core (cgroup v1 CFS quota)")
    p.add_argument("--rate-limit", type=float, default=2.0,
                   help="limits: each orchestrator's --rate-limit (queries/s per client)")
    p.add_argument("--within", type=float, default=10.0, help="storm: seconds to restart all")
    p.add_argument("--kill", action="store_true", help="storm: SIGKILL instead of SIGTERM")
    p.add_argument("--rec", default=os.environ.get("REC", os.path.join(REPO, "data", "scaling", "recording")))
    p.add_argument("--env", action="append", metavar="K=V",
                   help="set this in every process's environment (e.g. TOKIO_WORKER_THREADS=1)")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    emit(globals()[a.probe](a), a.out)


if __name__ == "__main__":
    main()
