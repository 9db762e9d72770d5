"""Secrets reach pods only by secretKeyRef or Secret volumes: the chart renders only the
Secrets it generates, and no secret value, secret variable or PEM text appears as a
literal anywhere else (ConfigMaps, env values, arguments, NOTES.txt).
"""

from __future__ import annotations

import base64
import json
import re

from .base import FULLNAME, SECRET_VARS, SECRETISH, by_kind, check, fail, pod_specs
from .security_values import etcd_auth_bundled, tls_generated


def expected_secrets(merged: dict) -> dict[str, set[str]]:
    """The Secrets the chart generates (name -> keys): the CA and certificate without a
    TLS Secret of the user's, the etcd passwords without an etcd.auth Secret of theirs."""
    out = {}
    if tls_generated(merged):
        t = merged["tls"]
        out[f"{FULLNAME}-ca"] = {"ca.crt", "ca.key"}
        out[f"{FULLNAME}-tls"] = {t["certKey"], t["keyKey"], t["caKey"]}
    if etcd_auth_bundled(merged) and not merged["etcd"]["auth"]["secretName"]:
        out[f"{FULLNAME}-etcd-auth"] = {"username", "password", "root-password"}
    return out


def check_no_literal_secrets(scen: str, docs: list[dict], merged: dict, notes: str) -> None:
    """Secrets reach pods only by secretKeyRef or Secret volumes: the chart renders only the
    Secrets it generates (none when the user gives their own), no ConfigMap holds a secret
    variable or PEM text, no container has a secret variable as a literal value, and no
    generated secret value (password, key, certificate) appears in any other manifest or
    in the notes."""
    want = expected_secrets(merged)
    secrets = by_kind(docs, "Secret")
    check(scen, set(secrets) == set(want), f"Secrets rendered {sorted(secrets)}, expected {sorted(want)} (the generated ones only)")
    values: list[str] = []
    for name, sec in secrets.items():
        data = sec.get("data") or {}
        check(scen, not sec.get("stringData"), f"Secret/{name}: stringData (plain text in the manifest)")
        check(scen, set(data) == want.get(name, set()), f"Secret/{name} keys {sorted(data)}, expected {sorted(want.get(name, set()))}")
        for k, b64 in data.items():
            try:
                val = base64.b64decode(b64, validate=True).decode()
            except ValueError:
                fail(scen, f"Secret/{name}: {k} is not base64 text")
                continue
            check(scen, bool(val.strip()), f"Secret/{name}: {k} is empty")
            values += [val, b64] + [line for line in val.splitlines() if len(line) >= 32 and "-----" not in line]
    others = json.dumps([d for d in docs if d["kind"] != "Secret"]) + notes
    for val in values:
        if len(val) >= 8 and val in others:
            fail(scen, "a generated secret value (password, key or certificate) is a literal outside its Secret")
            break
    for d in docs:
        ident = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ConfigMap":
            for k, val in (d.get("data") or {}).items():
                check(scen, k not in SECRET_VARS and not SECRETISH.search(k), f"{ident}: secret variable {k} in a ConfigMap")
                check(scen, "-----BEGIN" not in str(val), f"{ident}: {k} holds PEM text")
    for ident, spec, _ in pod_specs(docs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                secretish = e["name"] in SECRET_VARS or SECRETISH.search(e["name"])
                check(scen, not (secretish and "value" in e), f"{ident} container {c['name']}: {e['name']} is a literal value")
                check(scen, not secretish or "secretKeyRef" in e.get("valueFrom", {}), f"{ident} container {c['name']}: {e['name']} not from a secretKeyRef")
                check(scen, "-----BEGIN" not in str(e.get("value", "")), f"{ident} container {c['name']}: {e['name']} holds PEM text")
            for a in (c.get("args") or []) + (c.get("command") or []):
                check(scen, not re.match(r"--(etcd-password|api-keys|token)\b", str(a)), f"{ident} container {c['name']}: secret flag {a}")
