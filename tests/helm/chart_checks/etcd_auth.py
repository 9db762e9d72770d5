"""Authentication on the bundled etcd: the rendered auth container (its passwords by
secretKeyRef, the /ponder/ prefix, gating the pod's readiness), and its script run
against a real etcd when etcd and curl are on PATH.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .base import CHART, FULLNAME, by_kind, check
from .security_values import etcd_auth_bundled, etcd_auth_secret
from .wiring import container_env, mounted_file


AUTH_SCRIPT = CHART / "files" / "etcd-auth.sh"


def check_etcd_auth(scen: str, docs: list[dict], merged: dict) -> None:
    """The bundled etcd with auth: its pods run the auth container (the chart's script,
    passwords from the Secret by secretKeyRef, the /ponder/ prefix), which gates the
    pod's readiness and so the client Service; without auth, no such container."""
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    if not sts:
        return
    ss = sts[0]
    spec = ss["spec"]["template"]["spec"]
    auth = next((c for c in spec["containers"] if c["name"] == "auth"), None)
    if not etcd_auth_bundled(merged):
        check(scen, auth is None, "etcd.auth off, but the etcd pods run the auth container")
        return
    if not check(scen, auth is not None, "etcd.auth on, but the etcd pods have no auth container"):
        return
    cms = by_kind(docs, "ConfigMap")
    env = container_env(auth, cms)
    secret = etcd_auth_secret(merged)
    for var, key in (("ETCD_ROOT_PASSWORD", "root-password"), ("PONDER_ETCD_USER", "username"), ("PONDER_ETCD_PASSWORD", "password")):
        check(scen, env.get(var, {}).get("secret") == (secret, key), f"etcd auth container: {var} is {env.get(var)}, not secretKeyRef ({secret}, {key})")
    val = lambda k: env.get(k, {}).get("value")  # noqa: E731
    check(scen, val("PREFIX_KEY") == base64.b64encode(b"/ponder/").decode() and val("PREFIX_RANGE_END") == base64.b64encode(b"/ponder0").decode(),
          f"etcd auth container: the ponder role's range is {val('PREFIX_KEY')}..{val('PREFIX_RANGE_END')}, not the /ponder/ prefix")
    loopback = "[::1]" if merged["cluster"]["ipFamily"] == "IPv6" else "127.0.0.1"
    check(scen, val("ETCD_ENDPOINT") == f"http://{loopback}:{merged['etcd']['clientPort']}", f"etcd auth container: ETCD_ENDPOINT {val('ETCD_ENDPOINT')}")
    probe = auth.get("readinessProbe") or {}
    check(scen, val("READY_FILE") is not None and val("READY_FILE") in " ".join(probe.get("exec", {}).get("command", [])),
          "etcd auth container: its readiness probe does not test READY_FILE (the pod would join the client Service before auth is on)")
    cmd = auth.get("command", [])
    path = cmd[-1] if cmd else ""
    got = mounted_file(auth, spec, cms, path)
    script = cms.get(got[1], {}).get("data", {}).get(got[2]) if got and got[0] == "configMap" else None
    check(scen, script is not None and script.strip() == AUTH_SCRIPT.read_text().strip(), f"etcd auth container runs {cmd}, not the mounted files/etcd-auth.sh")
    svcs = by_kind(docs, "Service")
    client = svcs.get(f"{FULLNAME}-etcd")
    check(scen, client is not None and not client["spec"].get("publishNotReadyAddresses"), "the etcd client Service publishes not-ready members (before auth is on)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_call(ep: str, path: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"{ep}/v3/{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def run_auth_script(docs: list[dict]) -> str:
    """Runs the rendered auth container's script (its environment, the generated
    passwords) against a real etcd when `etcd` and `curl` are on PATH: authentication
    turns on; the ponder user may write /ponder/ and nothing else; no credential, no
    access; a second run changes nothing; a wrong root password is refused."""
    scen = "etcd auth script"
    etcd_bin, curl = shutil.which("etcd"), shutil.which("curl")
    if not (etcd_bin and curl):
        return "skipped (needs etcd and curl on PATH)"
    secrets = by_kind(docs, "Secret")
    ss = next(d for d in docs if d["kind"] == "StatefulSet")
    auth = next(c for c in ss["spec"]["template"]["spec"]["containers"] if c["name"] == "auth")
    env = {"PATH": "/usr/bin:/bin", "ONCE": "1"}
    for e in auth["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
    version = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    with tempfile.TemporaryDirectory() as d:
        cport, pport = free_port(), free_port()
        ep = f"http://127.0.0.1:{cport}"
        env.update(ETCD_ENDPOINT=ep, READY_FILE=f"{d}/ready", TMPDIR=d)
        proc = subprocess.Popen(
            [etcd_bin, "--data-dir", f"{d}/data", "--listen-client-urls", ep, "--advertise-client-urls", ep,
             "--listen-peer-urls", f"http://127.0.0.1:{pport}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"default=http://127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            script = str(AUTH_SCRIPT)
            run = lambda extra=None: subprocess.run(["sh", script], env={**env, **(extra or {})}, capture_output=True, text=True, timeout=60)  # noqa: E731
            for _ in range(50):  # etcd starting
                r = run()
                if r.returncode == 0 or "waiting for etcd" not in r.stderr:
                    break
                time.sleep(0.2)
            check(scen, r.returncode == 0, f"first run failed: {r.stderr.strip()}")
            check(scen, Path(env["READY_FILE"]).exists(), "ready file missing after success")
            user, pw = env["PONDER_ETCD_USER"], env["PONDER_ETCD_PASSWORD"]
            logs = r.stderr
            for secret in (pw, env["ETCD_ROOT_PASSWORD"]):
                check(scen, secret not in logs, "the script logged a password")
            code, body = etcd_call(ep, "auth/authenticate", {"name": user, "password": pw})
            token = body.get("token")
            if check(scen, code == 200 and token, f"{user} cannot log in: {body}"):
                b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
                code, body = etcd_call(ep, "kv/put", {"key": b64("/ponder/v1/c/generator/x"), "value": b64("1")}, token)
                check(scen, code == 200, f"{user} cannot write /ponder/: {body}")
                code, body = etcd_call(ep, "kv/put", {"key": b64("/elsewhere"), "value": b64("1")}, token)
                check(scen, code != 200 and "permission denied" in str(body), f"{user} may write outside /ponder/: {code} {body}")
                code, body = etcd_call(ep, "lease/grant", {"TTL": 10}, token)
                check(scen, code == 200, f"{user} cannot grant a lease: {body}")
            code, body = etcd_call(ep, "kv/put", {"key": base64.b64encode(b"/ponder/x").decode(), "value": "MQ=="})
            check(scen, code != 200, f"etcd takes a write without credentials: {body}")
            r2 = run()
            check(scen, r2.returncode == 0, f"second run (authentication already on) failed: {r2.stderr.strip()}")
            r3 = run({"ETCD_ROOT_PASSWORD": "not-the-root-password"})
            check(scen, r3.returncode != 0 and "refuses the root password" in r3.stderr, f"a wrong root password was not reported: {r3.stderr.strip()}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return f"ran against {version}"
