"""Traces across hops (tracing.otlpEndpoint, docs/tracing.md): when set,
PONDER_OTLP_ENDPOINT in the environment of every role's pods (each generator group's
too), from the role's ConfigMap, and, with egress policies on, one egress rule per role
to the collector's port (the URL's, default 4317) towards networkPolicy.otlpTo (any
address when empty); when unset, neither, anywhere. The bundled etcd and the helm test
pod get neither.

Checked against the values of every scenario and, where a scenario has them, the
expectations written out in scenarios.TRACING_EXPECT.
"""

from __future__ import annotations

import json
import urllib.parse

from .base import FULLNAME, ROLES, by_kind, check
from .scenarios import TRACING_EXPECT
from .wiring import container_env

VAR = "PONDER_OTLP_ENDPOINT"


def expected(merged: dict) -> dict | None:
    """What the values call for: None (no export), or endpoint, port (None: no rule,
    egress policies off) and to (None: any address)."""
    endpoint = merged["tracing"]["otlpEndpoint"]
    if not endpoint:
        return None
    npv = merged["networkPolicy"]
    port = (urllib.parse.urlsplit(endpoint).port or 4317) if npv["enabled"] and npv["egress"]["enabled"] else None
    return {"endpoint": endpoint, "port": port, "to": npv["otlpTo"] or None}


def _otlp_rules(np: dict, merged: dict, ports: set[int]) -> list[dict]:
    """The egress rules of a policy that allow one of ports and are not egress.extra's."""
    extra = merged["networkPolicy"]["egress"]["extra"]
    return [r for r in np["spec"].get("egress") or []
            if r not in extra and any(p.get("port") in ports for p in r.get("ports") or [])]


def check_tracing(scen: str, docs: list[dict], merged: dict) -> None:
    want = expected(merged)
    if scen in TRACING_EXPECT:
        check(scen, want == TRACING_EXPECT[scen], f"tracing: the values call for {want}, TRACING_EXPECT has {TRACING_EXPECT[scen]}")
    cms, nps = by_kind(docs, "ConfigMap"), by_kind(docs, "NetworkPolicy")

    # The pods: every Deployment (each role, each generator group), the etcd StatefulSet
    # and the helm test pod, with the environment each container sees.
    role_pods = {r: [] for r in ROLES}
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet", "Pod"):
            continue
        tmpl = d if d["kind"] == "Pod" else d["spec"]["template"]
        comp = tmpl["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        ident = f"{d['kind']}/{d['metadata']['name']}"
        for c in tmpl["spec"].get("containers", []) + tmpl["spec"].get("initContainers", []):
            env = container_env(c, cms)
            is_role_container = d["kind"] == "Deployment" and comp in ROLES and c["name"] == comp
            if is_role_container:
                role_pods[comp].append(ident)
            if want is None or not is_role_container:
                check(scen, VAR not in env, f"{ident} container {c['name']}: {VAR} is {env.get(VAR)}, expected unset")
            else:
                check(scen, env.get(VAR) == {"value": want["endpoint"]},
                      f"{ident}: {VAR} is {env.get(VAR)}, expected {want['endpoint']!r}")
                # From the role's ConfigMap (shared by the generator groups), not per pod.
                check(scen, all(e["name"] != VAR for e in c.get("env", [])), f"{ident}: {VAR} in the pod spec, expected in the ConfigMap")

    # Every enabled role has pods that were checked (all generator groups are Deployments
    # of the component generator).
    for role in ROLES:
        if merged[role]["enabled"]:
            check(scen, bool(role_pods[role]), f"tracing: no {role} Deployment to check")
            data = cms.get(f"{FULLNAME}-{role}", {}).get("data", {})
            got = data.get(VAR)
            check(scen, got == (want["endpoint"] if want else None), f"ConfigMap {FULLNAME}-{role}: {VAR} {got!r}, expected {want and want['endpoint']!r}")
    # No other ConfigMap, Secret or object text names the variable when it is unset.
    if want is None:
        for d in docs:
            check(scen, VAR not in json.dumps(d), f"{d['kind']}/{d['metadata']['name']} mentions {VAR} with tracing.otlpEndpoint unset")

    # The egress rule: one per role's policy; none on etcd's or the test pod's.
    if not merged["networkPolicy"]["enabled"]:
        return
    ports = {4317, 4318}
    if want and want["port"]:
        ports.add(want["port"])
    for name, np in nps.items():
        comp = np["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        rules = _otlp_rules(np, merged, ports)
        if want is None or want["port"] is None or comp not in ROLES:
            check(scen, not rules, f"NetworkPolicy {name}: OTLP egress rules {rules}, expected none")
            continue
        expect = {"ports": [{"port": want["port"], "protocol": "TCP"}]}
        if want["to"] is not None:
            expect["to"] = want["to"]
        check(scen, rules == [expect], f"NetworkPolicy {name}: OTLP egress rules {rules}, expected [{expect}]")
    if want and want["port"]:
        for role in ROLES:
            if merged[role]["enabled"]:
                check(scen, f"{FULLNAME}-{role}" in nps, f"no NetworkPolicy {FULLNAME}-{role} for the OTLP egress rule")
