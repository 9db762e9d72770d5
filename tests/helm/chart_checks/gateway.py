"""The orchestrator's OpenAI-compatible HTTP gateway (orchestrator.gateway): when on,
PONDER_GATEWAY_ADDR (<listen host>:<port>) and PONDER_GATEWAY_MAX_BODY_BYTES in the
orchestrator's environment, the container port http, the Service port gateway, the
NetworkPolicy admitting it exactly like the gRPC port, HTTPS exactly when the
orchestrator has TLS, and NOTES.txt's curl example; when off, none of them.

Checked against the values of every scenario and, where a scenario has them, the
expectations written out in scenarios.GATEWAY_EXPECT.
"""

from __future__ import annotations

from .base import FULLNAME, by_kind, check
from .scenarios import GATEWAY_EXPECT
from .wiring import container_env

ENV_VARS = ("PONDER_GATEWAY_ADDR", "PONDER_GATEWAY_MAX_BODY_BYTES")


def expected(merged: dict) -> dict | None:
    """What the values call for: None (no gateway) or addr, max_body, port, scheme."""
    o = merged["orchestrator"]
    gw = o["gateway"]
    if not (o["enabled"] and gw["enabled"]):
        return None
    host = "[::]" if merged["cluster"]["ipFamily"] == "IPv6" else "0.0.0.0"
    return {"addr": f"{host}:{gw['port']}", "max_body": str(gw["maxBodyBytes"]), "port": gw["port"],
            "scheme": "https" if merged["tls"]["enabled"] else "http"}


def check_gateway(scen: str, docs: list[dict], merged: dict, notes: str) -> None:
    want = expected(merged)
    if scen in GATEWAY_EXPECT:
        check(scen, want == GATEWAY_EXPECT[scen], f"gateway: the values call for {want}, GATEWAY_EXPECT has {GATEWAY_EXPECT[scen]}")
    deps, svcs, cms = by_kind(docs, "Deployment"), by_kind(docs, "Service"), by_kind(docs, "ConfigMap")
    # No other role serves it (each generator group included).
    for name, d in deps.items():
        role = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        if role == "orchestrator":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = container_env(c, cms)
            check(scen, not set(ENV_VARS) & set(env), f"{name}: gateway variables {sorted(set(ENV_VARS) & set(env))}")
            check(scen, all(p["name"] != "http" for p in c.get("ports", [])), f"{name}: container port http")
    for name, s in svcs.items():
        if name != f"{FULLNAME}-orchestrator":
            check(scen, all(p.get("name") != "gateway" for p in s["spec"].get("ports", [])), f"Service {name}: port gateway")
    dep = deps.get(f"{FULLNAME}-orchestrator")
    if not merged["orchestrator"]["enabled"] or dep is None:
        check(scen, not merged["orchestrator"]["enabled"], "no orchestrator Deployment")
        return
    container = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "orchestrator")
    env = container_env(container, cms)
    ports = [p for p in container.get("ports", []) if p.get("name") == "http"]
    svc = svcs.get(f"{FULLNAME}-orchestrator", {})
    svc_ports = [p for p in svc.get("spec", {}).get("ports", []) if p.get("name") == "gateway" or p.get("targetPort") == "http"]
    np = by_kind(docs, "NetworkPolicy").get(f"{FULLNAME}-orchestrator")
    rules = (np or {}).get("spec", {}).get("ingress") or []
    np_rules = [r for r in rules if {"port": "http", "protocol": "TCP"} in (r.get("ports") or [])]
    if want is None:
        check(scen, not set(ENV_VARS) & set(env), f"orchestrator: gateway off, but {sorted(set(ENV_VARS) & set(env))} set")
        check(scen, not ports, f"orchestrator: gateway off, but container port {ports}")
        check(scen, not svc_ports, f"Service {FULLNAME}-orchestrator: gateway off, but ports {svc_ports}")
        check(scen, not np_rules, f"NetworkPolicy {FULLNAME}-orchestrator: gateway off, but it admits port http: {np_rules}")
        check(scen, "/v1/chat/completions" not in notes and "HTTP gateway" not in notes, "NOTES.txt: the gateway is off, but NOTES.txt shows it")
        return
    where = f"{FULLNAME}-orchestrator"
    # The environment: the orchestrator's ConfigMap (envFrom), as PONDER_LISTEN.
    cm = cms.get(where, {}).get("data", {})
    for var, key in zip(ENV_VARS, ("addr", "max_body")):
        check(scen, env.get(var) == {"value": want[key]}, f"{where}: {var} is {env.get(var)}, expected {want[key]!r}")
        check(scen, cm.get(var) == want[key], f"ConfigMap {where}: {var} {cm.get(var)!r}, expected {want[key]!r}")
    # HTTPS exactly when the orchestrator has a certificate (the gateway serves it).
    has_tls = "PONDER_TLS_CERT" in env and "PONDER_TLS_KEY" in env
    check(scen, has_tls == (want["scheme"] == "https"), f"{where}: gateway scheme {want['scheme']}, but PONDER_TLS_CERT/KEY set: {has_tls}")
    # The container port.
    check(scen, ports == [{"name": "http", "containerPort": want["port"], "protocol": "TCP"}],
          f"{where}: container port http is {ports}, expected containerPort {want['port']}")
    others = [p["containerPort"] for p in container["ports"] if p.get("name") != "http"]
    check(scen, want["port"] not in others, f"{where}: gateway port {want['port']} shared with {others}")
    # The Service port: named gateway, to the container port http, no appProtocol (the
    # chart sets it on no port; the gRPC port has none either).
    check(scen, svc_ports == [{"name": "gateway", "port": want["port"], "targetPort": "http", "protocol": "TCP"}],
          f"Service {where}: gateway port is {svc_ports}, expected port {want['port']} to targetPort http")
    grpc = next((p for p in svc.get("spec", {}).get("ports", []) if p.get("name") == "grpc"), {})
    check(scen, "appProtocol" not in grpc, f"Service {where}: the grpc port has appProtocol now; give the gateway port one too")
    # The NetworkPolicy: the gateway port in the same rule as the gRPC port (the same
    # peers: orchestratorFrom and the helm test pod, or any source).
    if merged["networkPolicy"]["enabled"]:
        grpc_rules = [r for r in rules if {"port": "grpc", "protocol": "TCP"} in (r.get("ports") or [])]
        check(scen, len(np_rules) == 1 and np_rules == grpc_rules,
              f"NetworkPolicy {where}: port http is in rules {np_rules}, expected the gRPC port's rule {grpc_rules}")
        if np_rules:
            check(scen, np_rules[0]["ports"] == [{"port": "grpc", "protocol": "TCP"}, {"port": "http", "protocol": "TCP"}],
                  f"NetworkPolicy {where}: client ports {np_rules[0]['ports']}")
            peers = np_rules[0].get("from")
            want_peers = merged["networkPolicy"]["orchestratorFrom"]
            check(scen, (peers is None) == (not want_peers) and (not peers or peers[:-1] == want_peers),
                  f"NetworkPolicy {where}: gateway admits {peers}, orchestratorFrom is {want_peers}")
    else:
        check(scen, np is None, f"NetworkPolicy {where} rendered while disabled")
    # NOTES.txt: the port-forward and a curl that speaks the gateway's scheme.
    port = want["port"]
    check(scen, f"{port}:{port}" in notes, f"NOTES.txt: the port-forward lacks the gateway port {port}")
    curl = next((line.strip() for line in notes.splitlines() if line.strip().startswith("curl ")), "")
    if want["scheme"] == "https":
        check(scen, curl.startswith("curl --cacert ca.crt --resolve ") and f":{port}/v1/chat/completions" in curl and "https://" in curl,
              f"NOTES.txt: gateway over HTTPS, but the curl is {curl!r}")
    else:
        check(scen, curl == f"curl http://127.0.0.1:{port}/v1/chat/completions \\", f"NOTES.txt: gateway over HTTP, but the curl is {curl!r}")
    bearer = 'authorization: Bearer $PONDER_TOKEN' in notes
    check(scen, bearer == bool(merged["orchestrator"]["apiKeys"]["secretName"]), "NOTES.txt: the curl's API key does not follow orchestrator.apiKeys")
