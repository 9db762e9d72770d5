"""A process cluster for the scale probes (probe.py): deploy/local/run-cluster.sh on the
recorded backend, its nodes' /metrics, and nodes started or killed beside it.

Why a Python wrapper and not more shell: the probes poll several processes' metrics at
sub-second intervals while a load run goes on, and compute ratios from them.
"""

import glob
import json
import os
import re
import sys
import signal
import subprocess
import time
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# PONDER_BIN: another build of `ponder` for every process (an A/B of two builds).
PONDER = os.environ.get("PONDER_BIN") or os.path.join(REPO, "target", "release", "ponder")
# PONDER_LOAD_BIN: the ponder-load binary (default: beside the default ponder).
LOAD = os.environ.get("PONDER_LOAD_BIN") or os.path.join(REPO, "target", "release", "ponder-load")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def recordings(rec, how):
    """The generator and verifier recordings under `rec`, each with its latency fit
    beside it; exits saying `how` to record one when there are none."""
    gen = sorted(glob.glob(os.path.join(rec, "generator-*")))
    ver = sorted(glob.glob(os.path.join(rec, "verifier-*")))
    if not gen or not ver:
        sys.exit(f"no recording in {rec}: record one with {how}")
    for d in (gen[0], ver[0]):
        if not os.path.exists(os.path.join(d, "latency.json")):
            sys.exit(f"{d} has no latency.json (the recording scripts copy the fits beside it)")
    return gen[0], ver[0]


def dilated(src, work, factor):
    """`src` (a recording directory) with every modelled time times `factor`
    (dilate.py), under `work`."""
    from dilate import dilate

    dst = os.path.join(work, "dilated", os.path.basename(src))
    dilate(src, factor, dst)
    return dst


def env_pairs(pairs):
    """`--env K=V` arguments as a dict."""
    return dict(kv.split("=", 1) for kv in pairs or [])


def failed(report):
    """Measured requests that got no OK answer (error codes, and UNFINISHED ones)."""
    return sum(report["errors"].values())


def parse_metrics(text):
    """Prometheus text as [(name, {label: value}, float)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(3) or ""))
            try:
                out.append((m.group(1), labels, float(m.group(4))))
            except ValueError:
                pass
    return out


def total(samples, name, **labels):
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        v
        for n, l, v in samples
        if n == name and all(l.get(k) == want for k, want in labels.items())
    )


def scrape(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return parse_metrics(r.read().decode())


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """run-cluster.sh with N recorded generators, M verifiers and K orchestrators (the
    real engine, the bundled models, when `gen_rec` and `ver_rec` are None; recording
    every answer into `record_calls`/<role> when given)."""

    def __init__(self, work, n, m, k, gen_rec, ver_rec, port=51000, env=None, pin=False,
                 record_calls=None, keep=False):
        self.work, self.gen_rec, self.ver_rec = work, gen_rec, ver_rec
        self.n, self.m, self.k = n, m, k
        self.env = dict(os.environ, **(env or {}))
        os.makedirs(work, exist_ok=True)
        self.log_path = os.path.join(work, "run-cluster.log")
        self.cluster = f"probe-{os.getpid()}-{int(time.time())}"
        args = [
            os.path.join(REPO, "deploy", "local", "run-cluster.sh"),
            "--generators", str(n), "--verifiers", str(m), "--orchestrators", str(k),
            "--port", str(port), "--metrics",
            "--cluster", self.cluster, "--work-dir", os.path.join(work, "cluster"),
            "--timeout", "300", "--bin", PONDER,
        ]
        if gen_rec:
            args += ["--recorded-generator", gen_rec, "--recorded-verifier", ver_rec]
        if pin:
            args.append("--pin")
        if record_calls:
            args += ["--record-calls", record_calls]
        if keep:
            args.append("--keep")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        self.extra = {}  # name -> (Popen, metrics url) of nodes started by the probe
        deadline = time.time() + 300
        while "(Ctrl-C stops the cluster)" not in self.read_log():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"run-cluster.sh did not start:\n{self.read_log()[-3000:]}")
            time.sleep(0.5)
        text = self.read_log()
        self.metrics = dict(re.findall(r"^metrics: (\S+) (\S+)$", text, re.M))
        cenv = dict(
            line.split("=", 1)
            for line in open(os.path.join(work, "cluster", "cluster.env")).read().split()
        )
        self.addrs = cenv["PONDER_ADDR"]
        self.etcd = cenv["PONDER_ETCD"]
        self.pids = {
            k[4:].lower().replace("_", "-"): int(v) for k, v in cenv.items() if k.startswith("PID_")
        }

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def names(self, role):
        """The names of the nodes of `role` (run-cluster's and the probe's), in order."""
        base = [n for n in self.metrics if n.startswith(role)]
        extra = [n for n in self.extra if n.startswith(role)]
        return sorted(base, key=lambda s: int(s.rsplit("-", 1)[1])) + extra

    def orchestrators(self):
        return [n for n in self.metrics if n.startswith("orchestrator")]

    def url(self, name):
        return self.extra[name][1] if name in self.extra else self.metrics[name]

    def scrape(self, name):
        return scrape(self.url(name))

    def start_node(self, role, name):
        """Starts one more recorded node of `role` (as run-cluster.sh starts its own)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        rec = self.gen_rec if role == "generator" else self.ver_rec
        log = open(os.path.join(self.work, f"{name}.log"), "a")
        p = subprocess.Popen(
            [PONDER, "node", role, "--engine", f"recorded:{rec}", "--listen", "127.0.0.1:0",
             "--instance-id", name, "--metrics-addr", f"127.0.0.1:{port}",
             "--etcd", self.etcd, "--cluster", self.cluster],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )
        self.extra[name] = (p, url)
        return p

    def pid(self, name):
        return self.extra[name][0].pid if name in self.extra else self.pids[name]

    def kill(self, name, sig=signal.SIGKILL):
        os.kill(self.pid(name), sig)

    def stop(self):
        for p, _ in self.extra.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in self.extra.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def start_load(args, json_path, cpu=None):
    """ponder-load with `args` in the background (on core `cpu` if given); `.wait()`
    it, then read `json_path`."""
    cmd = [LOAD] + args + ["--quiet", "--json", json_path]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


def load(args, json_path, cpu=None):
    """Runs ponder-load with `args`; returns its JSON report."""
    code = start_load(args, json_path, cpu).wait()
    if code != 0:
        raise subprocess.CalledProcessError(code, [LOAD] + args)
    with open(json_path) as f:
        return json.load(f)


def emit(result, out=None, bulky=()):
    """Prints `result` as JSON and, with `out`, writes it there whole; the printed copy
    then leaves out the `bulky` keys (time series kept for the plots)."""
    text = json.dumps(result, indent=1)
    if out:
        print(json.dumps({k: v for k, v in result.items() if k not in bulky}, indent=1))
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
