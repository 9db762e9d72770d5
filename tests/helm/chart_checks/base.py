"""What every check shares: the chart's paths and the release it is rendered as, the
list of failures the checks append to, and small helpers over rendered documents.

Kept apart so that each check module imports one place for its constants and for
fail/check, and check_chart.py reads FAILURES from the same list.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import helm_python as helm


ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "ponder"
EXAMPLES = ROOT / "deploy" / "examples"
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
RELEASE, NAMESPACE = "prod", "ml"
FULLNAME = "prod-ponder"  # <release>-<chart>: the prefix of every object's name
ROLES = ["generator", "verifier", "orchestrator"]
GRPC_SERVICE = {
    "generator": "ponder.v1.Generator",
    "verifier": "ponder.v1.Verifier",
    "orchestrator": "ponder.v1.Orchestrator",
}
# Custom resources kubernetes-validate has no schema for; checked in check_crds.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # monitoring.py
    ("keda.sh/v1alpha1", "ScaledObject"),  # monitoring.py
}
LINT_WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error
# Variables that name a file the container must have: a mounted Secret or ConfigMap key.
FILE_VARS = [
    "PONDER_TLS_CERT", "PONDER_TLS_KEY", "PONDER_TLS_CA", "PONDER_TLS_CLIENT_CERT", "PONDER_TLS_CLIENT_KEY",
    "PONDER_ETCD_CA", "PONDER_ETCD_CERT", "PONDER_ETCD_KEY", "PONDER_API_KEYS_FILE",
]
# Variables that carry a secret themselves: only ever from a secretKeyRef.
SECRET_VARS = {"PONDER_API_KEYS", "PONDER_ETCD_USER", "PONDER_ETCD_PASSWORD", "PONDER_TOKEN"}
SECRETISH = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEYS)$")

FAILURES: list[str] = []


def fail(scenario: str, msg: str) -> None:
    FAILURES.append(f"[{scenario}] {msg}")


def check(scenario: str, cond: bool, msg: str) -> bool:
    if not cond:
        fail(scenario, msg)
    return cond


def load_values_file(path: Path) -> dict:
    # Helm's own YAML reader, as `helm -f` uses.
    return helm.values_from_yaml(path.read_text())


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict]) -> list[tuple[str, dict, set[str]]]:
    """(kind/name, pod spec, names of the volumes it has, claim templates included)."""
    out = []
    for d in docs:
        ident = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            spec = d["spec"]
        else:
            continue
        names = {v["name"] for v in spec.get("volumes", [])}
        names |= {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
        out.append((ident, spec, names))
    return out


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def workloads(merged: dict) -> list[dict]:
    """What should get a Deployment, as the chart's "ponder.workloads" (_groups.tpl) says,
    computed here on its own: one per role, the generator one per generator.groups entry.
    Each: role, name (the Deployment's, HPA's and PDB's), group ("" but for generator
    groups), legacy (the selector is the role's alone: verifier, orchestrator and the
    group "default"), values (a group's: the generator block with its overrides
    deep-merged and its modelName), sha256, default."""
    out = []
    for role in ROLES:
        v = merged[role]
        if role != "generator":
            out.append({"role": role, "name": f"{FULLNAME}-{role}", "group": "", "legacy": True, "values": v,
                        "sha256": "", "default": False})
            continue
        for g in v["groups"]:
            gv = copy.deepcopy({k: x for k, x in v.items() if k != "groups"})
            for k in ("replicas", "autoscaling", "resources", "pdb"):
                if k in g:
                    both = isinstance(g[k], dict) and isinstance(gv.get(k), dict)
                    gv[k] = deep_merge(gv[k], g[k]) if both else g[k]
            gv["modelName"] = g.get("modelName") or v.get("modelName") or ""
            legacy = g["name"] == "default"
            out.append({"role": role, "name": f"{FULLNAME}-generator" + ("" if legacy else f"-{g['name']}"),
                        "group": g["name"], "legacy": legacy, "values": gv,
                        "sha256": g.get("sha256") or "", "default": bool(g.get("default"))})
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
