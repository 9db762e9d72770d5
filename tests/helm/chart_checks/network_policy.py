"""NetworkPolicies: each Ponder pod is selected by exactly one, and each admits exactly
the flows the values call for (ingress, and egress when on); only the orchestrator's
client ports (gRPC, and the HTTP gateway's) may admit any source.
"""

from __future__ import annotations

import json
import urllib.parse

from .base import RELEASE, ROLES, by_kind, check, matches


ANY = "<any>"


def release_selector(component: str) -> dict:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ponder", "app.kubernetes.io/instance": RELEASE,
                                            "app.kubernetes.io/component": component}}}


def atoms(rules: list[dict], peer_key: str) -> set[tuple]:
    """A policy's rules as (port, protocol, peer) triples; a rule without ports allows any
    port, one without peers any peer."""
    out = set()
    for r in rules or []:
        ports = [(p.get("port", ANY), p.get("protocol", "TCP")) for p in r.get("ports") or []] or [(ANY, ANY)]
        peers = [json.dumps(p, sort_keys=True) for p in r.get(peer_key) or []] or [ANY]
        out |= {(port, proto, peer) for port, proto in ports for peer in peers}
    return out


def everyone(peer: str) -> bool:
    """A peer that stands for all pods, all namespaces or all addresses."""
    if peer == ANY:
        return True
    p = json.loads(peer)
    if "ipBlock" in p:
        return p["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0")
    if "namespaceSelector" in p and not (p["namespaceSelector"].get("matchLabels") or p["namespaceSelector"].get("matchExpressions")):
        return True
    return set(p) == {"podSelector"} and not (p["podSelector"].get("matchLabels") or p["podSelector"].get("matchExpressions"))


def expected_flows(merged: dict) -> dict[str, tuple[set, set]]:
    """component -> (ingress atoms, egress atoms) the policies must admit, exactly."""
    npv, egress = merged["networkPolicy"], merged["networkPolicy"]["egress"]
    j = lambda peer: json.dumps(peer, sort_keys=True)  # noqa: E731
    metrics = [("metrics", "TCP", j(p)) for p in npv["metricsFrom"]] if merged["metrics"]["enabled"] else []
    dns = atoms([{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}], "to": egress["dnsTo"]}], "to")
    etcd = merged["etcd"]
    if etcd["enabled"]:
        to_etcd = {(etcd["clientPort"], "TCP", j(release_selector("etcd")))}
    else:
        ports = {urllib.parse.urlsplit(u).port or 2379 for u in etcd["externalEndpoints"]}
        to_etcd = {(p, "TCP", j(peer)) for p in ports for peer in egress["externalEtcdTo"]} or {(p, "TCP", ANY) for p in ports}
    # Trace export (tracing.otlpEndpoint): every role to the collector's port (the URL's,
    # default 4317), to otlpTo or any address.
    otlp = set()
    if merged["tracing"]["otlpEndpoint"]:
        port = urllib.parse.urlsplit(merged["tracing"]["otlpEndpoint"]).port or 4317
        otlp = {(port, "TCP", j(peer)) for peer in npv["otlpTo"]} or {(port, "TCP", ANY)}
    out: dict[str, tuple[set, set]] = {}
    enabled = [r for r in ROLES if merged[r]["enabled"]]
    for role in enabled:
        ing = set(metrics) | {("health", "TCP", j(p)) for p in npv["probesFrom"]} | atoms(npv["extraIngress"][role], "from")
        out_ = dns | to_etcd | otlp | atoms(egress["extra"], "to")
        if role == "orchestrator":
            peers = [j(p) for p in npv["orchestratorFrom"]] + [j(release_selector("test"))] if npv["orchestratorFrom"] else [ANY]
            client_ports = ["grpc"] + (["http"] if merged["orchestrator"]["gateway"]["enabled"] else [])
            ing |= {(port, "TCP", p) for port in client_ports for p in peers}
            out_ |= {(merged[w]["port"], "TCP", j(release_selector(w))) for w in ("generator", "verifier") if merged[w]["enabled"]}
        else:
            ing.add(("grpc", "TCP", j(release_selector("orchestrator"))))
            if merged["models"]["source"] == "init":
                out_ |= atoms(egress["modelFetch"], "to")
        out[role] = (ing, out_ if egress["enabled"] else set())
    if etcd["enabled"]:
        ing = {("client", "TCP", j(release_selector(r))) for r in enabled} | {("peer", "TCP", j(release_selector("etcd")))}
        ing |= {("metrics", "TCP", p) for _, _, p in metrics} | {("metrics", "TCP", j(p)) for p in npv["probesFrom"]}
        out["etcd"] = (ing, dns | {(etcd["peerPort"], "TCP", j(release_selector("etcd")))} if egress["enabled"] else set())
    if merged["tests"]["enabled"] and merged["orchestrator"]["enabled"]:
        out["test"] = (set(), dns | {(merged["orchestrator"]["port"], "TCP", j(release_selector("orchestrator")))} if egress["enabled"] else set())
    return out


def check_network_policy(scen: str, docs: list[dict], merged: dict) -> None:
    """On (the default): every Ponder pod (roles, etcd, the helm test pod) is selected by
    exactly one policy, and each policy admits exactly the expected flows, ingress and
    (with egress on) egress; only the orchestrator's client ports (gRPC and the gateway's)
    may admit any source;
    named ports exist on the pods they admit to; peers that name this release's pods
    select them."""
    nps = by_kind(docs, "NetworkPolicy")
    npv = merged["networkPolicy"]
    if not npv["enabled"]:
        check(scen, not nps, "NetworkPolicies rendered while disabled")
        return
    pods = {}  # kind/name of the workload -> (component, labels, named ports); each generator group apart
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Pod"):
            tmpl = d if d["kind"] == "Pod" else d["spec"]["template"]
            labels = tmpl["metadata"]["labels"]
            named = {p["name"] for c in tmpl["spec"]["containers"] for p in c.get("ports", []) if "name" in p}
            pods[f"{d['kind']}/{d['metadata']['name']}"] = (labels["app.kubernetes.io/component"], labels, named)
    want = expected_flows(merged)
    comps = {c for c, _, _ in pods.values()}
    check(scen, comps == set(want), f"policies expected for {sorted(want)}, Ponder pods are {sorted(comps)}")
    types = ["Ingress", "Egress"] if npv["egress"]["enabled"] else ["Ingress"]
    for ident, (comp, labels, named) in pods.items():
        selecting = [n for n, np in nps.items() if matches(np["spec"]["podSelector"].get("matchLabels", {}), labels)]
        if not check(scen, len(selecting) == 1, f"{ident} pods are selected by {selecting}, not exactly one NetworkPolicy"):
            continue
        spec = nps[selecting[0]]["spec"]
        check(scen, spec.get("policyTypes") == types, f"{selecting[0]}: policyTypes {spec.get('policyTypes')}, expected {types}")
        ing, eg = atoms(spec.get("ingress"), "from"), atoms(spec.get("egress"), "to")
        want_in, want_eg = want.get(comp, (set(), set()))
        check(scen, ing == want_in, f"{selecting[0]} ingress: admits {sorted(ing - want_in)} too, lacks {sorted(want_in - ing)}")
        check(scen, eg == want_eg, f"{selecting[0]} egress: allows {sorted(eg - want_eg)} too, lacks {sorted(want_eg - eg)}")
        for port, _, peer in ing:
            check(scen, not everyone(peer) or (comp == "orchestrator" and port in ("grpc", "http")),
                  f"{selecting[0]}: port {port} admits everyone ({peer}); only the orchestrator's client ports may")
            check(scen, not isinstance(port, str) or port in named or port == ANY, f"{selecting[0]}: named port {port} is not on the {comp} pods")
        for port, _, peer in ing | eg:
            if peer != ANY and set(json.loads(peer)) == {"podSelector"}:
                sel = json.loads(peer)["podSelector"].get("matchLabels", {})
                if sel.get("app.kubernetes.io/instance") == RELEASE:
                    check(scen, any(matches(sel, lab) for _, lab, _ in pods.values()), f"{selecting[0]}: peer {sel} selects no pod of the release")
                    # A peer naming a component names all its pods (every generator group).
                    for other, (ocomp, olab, _) in pods.items():
                        if ocomp == sel.get("app.kubernetes.io/component"):
                            check(scen, matches(sel, olab), f"{selecting[0]}: peer {sel} misses the pods of {other}")
    for name, np in nps.items():
        sel = np["spec"]["podSelector"].get("matchLabels", {})
        check(scen, any(matches(sel, lab) for _, lab, _ in pods.values()), f"NetworkPolicy {name} selects no Ponder pod")
