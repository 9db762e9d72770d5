#!/usr/bin/env python3
"""Validates helm/ponder without a cluster or a helm binary.

1. Lint with the Helm Go SDK (helm-python-sdk): strict, once per Kubernetes version
   (1.29 to 1.33), with the default values and each example values file. Any message of
   warning severity or above fails.
2. Render the chart (Helm SDK) for each scenario: the default values (secure by default:
   generated CA and mTLS, NetworkPolicies, etcd authentication),
   deploy/examples/values-*.yaml, and overrides that switch the optional parts on and
   the secure defaults off.
3. Validate every rendered document with kubernetes-validate in strict mode against
   each Kubernetes version; an unknown schema fails (only the ServiceMonitor CRD, which
   has no schema there, is checked by hand).
4. Assert what matters: each role has its own Deployment, Service, HPA and PDB wired
   to it; probes are native gRPC health checks on the plaintext health-only port; no
   container runs as root (and all are hardened); the etcd endpoints the services get
   are the bundled etcd or the external one; every file a PONDER_* variable names
   (TLS, etcd TLS, API keys, format, policy) is mounted from the expected Secret key or
   ConfigMap; workers require client certificates and the orchestrator gets
   PONDER_TLS_SERVER_NAME with TLS; the generated certificate completes an mTLS
   handshake against the generated CA for every name clients and the orchestrator dial,
   and no pod mounts the CA key; the bundled etcd's auth container gets its passwords by
   secretKeyRef and gates the pod's readiness; each Ponder pod is selected by exactly
   one NetworkPolicy that admits exactly the expected flows (only the orchestrator's
   client port may admit any source); the chart renders only the Secrets it generates,
   secrets reach pods only through secretKeyRef or Secret volumes, and no generated
   password or key is a literal anywhere else; the helm test pod gets the CA, a client
   certificate only when needed, and the API key; the schema covers every value and
   rejects bad ones.
5. Run the etcd auth script against a real etcd (when etcd and curl are on PATH), and
   simulate upgrades (lookup fed with a first render's Secrets): generated certificates
   and passwords survive an upgrade and are re-issued only when they must be.

Run: .venv/bin/python tests/helm/check_chart.py  (from the repository root; .ci/run does).
Exit status 0 when everything passes.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parents[2]
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
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
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


def scenarios() -> dict[str, dict]:
    """Scenario name -> values given to the chart (over its defaults)."""
    out: dict[str, dict] = {"default": {}}
    for path in sorted(EXAMPLES.glob("values-*.yaml")):
        out[f"examples/{path.name}"] = load_values_file(path)
    out["etcd-ha+networkpolicy+tls+pvc"] = {
        "etcd": {"replicas": 3},
        "networkPolicy": {"enabled": True},
        "tls": {"enabled": True, "secretName": "ponder-tls", "serverName": "ponder-worker"},
        "models": {"source": "pvc"},
        "orchestrator": {
            "format": {"step_delimiter": "\n", "answer_prefix": "Answer: "},
            "policy": {"probes": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8], "table": {"16": ["weighted_best_of_n"] * 3 + ["beam_search:4"] * 2}},
            "preStopSleepSeconds": 5,
        },
    }
    out["init-models+fixed-replicas+servicemonitor"] = {
        "models": {
            "source": "init",
            "init": {"command": ["sh", "-c", "curl -fsSL https://models.internal/ponder.tar | tar -x -C \"$MODELS_DIR\""]},
        },
        "generator": {"autoscaling": {"enabled": False}, "replicas": 3, "threads": 4, "modelName": "arith-gen"},
        "verifier": {"autoscaling": {"enabled": False}, "pdb": {"minAvailable": 1}},
        "orchestrator": {"autoscaling": {"enabled": False}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "cluster": {"ipFamily": "IPv6"},
    }
    # Every security option at once, with non-default names and paths: mTLS on the
    # orchestrator's port too, API keys, a rate limit, an external etcd over TLS with a
    # client certificate and a password, a moved health port, IPv6.
    out["mtls+api-keys+rate-limit+etcd-tls-auth"] = {
        "tls": {
            "enabled": True, "secretName": "ponder-cluster-tls", "mountPath": "/var/run/ponder/tls",
            "certKey": "node.pem", "keyKey": "node-key.pem", "caKey": "cluster-ca.pem",
            "serverName": "ponder-worker.ml.svc", "clientAuth": "required",
        },
        "health": {"port": 9191},
        "cluster": {"ipFamily": "IPv6"},
        "orchestrator": {
            "apiKeys": {"secretName": "ponder-api-keys", "key": "keys.txt", "mountPath": "/var/run/ponder/keys"},
            "rateLimit": {"perSecond": 2.5, "burst": 4},
        },
        "tests": {
            "apiKey": {"secretName": "ponder-test-token", "key": "bearer"},
            "tlsServerName": "ponder-orchestrator.example.com",
        },
        "etcd": {
            "enabled": False,
            "externalEndpoints": ["https://etcd-0.infra:2379", "https://etcd-1.infra:2379"],
            "externalTls": {"secretName": "etcd-client", "mountPath": "/var/run/ponder/etcd",
                            "caKey": "etcd-ca.pem", "certKey": "client.pem", "keyKey": "client-key.pem"},
            "externalAuth": {"secretName": "etcd-auth", "userKey": "user", "passwordKey": "pass"},
        },
        "networkPolicy": {"enabled": True},
    }
    # etcd over TLS without a client certificate, a password only; TLS with default
    # names; rate limit without keys (per client IP) and without a burst.
    out["tls+etcd-ca-only+rate-limit-by-ip"] = {
        "tls": {"enabled": True, "secretName": "ponder-tls", "serverName": "ponder-worker"},
        "orchestrator": {"rateLimit": {"perSecond": 10}},
        "etcd": {
            "enabled": False,
            "externalEndpoints": ["https://etcd.infra:2379"],
            "externalTls": {"secretName": "etcd-ca"},
            "externalAuth": {"secretName": "etcd-auth"},
        },
    }
    out["verifier-disabled+recreate+ingress-only-policies"] = {
        "verifier": {"enabled": False},
        "generator": {"strategy": {"type": "Recreate"}},
        "networkPolicy": {"egress": {"enabled": False}},
    }
    # The secure defaults switched off, one by one: plaintext, no policies, an open etcd.
    out["opt-out:tls+networkpolicy+etcd-auth-off"] = {
        "tls": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "etcd": {"auth": {"enabled": False}},
    }
    # Your own etcd password Secret, more names in the generated certificate, and every
    # NetworkPolicy hook: callers from a gateway namespace, no metrics scrape, probes from
    # the node CIDR, an extra orchestrator port, DNS to kube-dns only, an OTLP egress.
    out["own-etcd-secret+cert-names+policy-hooks"] = {
        "etcd": {"auth": {"secretName": "my-etcd-auth", "checkEverySeconds": 30}},
        "tls": {"generate": {"extraDnsNames": ["ponder.example.com"], "certDays": 90}},
        "tests": {"tlsServerName": "ponder.example.com"},
        "networkPolicy": {
            "orchestratorFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}],
            "metricsFrom": [],
            "probesFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
            "extraIngress": {"orchestrator": [{"ports": [{"port": 8080, "protocol": "TCP"}],
                                               "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}]}]},
            "egress": {
                "dnsTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "extra": [{"ports": [{"port": 4317, "protocol": "TCP"}],
                           "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]}],
            },
        },
    }
    return out


# Values that must be refused, with a piece of the expected message.
BAD_VALUES = [
    ({"unknownKey": 1}, "additional"),
    ({"generator": {"replicaz": 2}}, "additional"),
    ({"generator": {"port": 70000}}, "maximum"),
    ({"etcd": {"replicas": 2}}, "replicas"),
    ({"logging": {"format": "xml"}}, "format"),
    ({"etcd": {"enabled": False}}, "etcd"),
    ({"etcd": {"externalEndpoints": ["http://etcd:2379"]}}, "not both"),
    ({"tls": {"generate": {"certDays": 0}}}, "minimum"),
    ({"tls": {"enabled": True, "secretName": "t"}}, "tls.serverName"),
    ({"tls": {"clientAuth": "optional"}}, "clientAuth"),
    ({"health": {"port": 7001}}, "health.port"),
    ({"health": {"port": 9090}}, "health.port and metrics.port"),
    ({"orchestrator": {"rateLimit": {"perSecond": -1}}}, "minimum"),
    ({"orchestrator": {"rateLimit": {"burst": 5}}}, "perSecond > 0"),
    ({"orchestrator": {"apiKeys": {"secretName": "k", "extra": 1}}}, "additional"),
    ({"orchestrator": {"apiKeys": {"secretName": "k"}}}, "tests.apiKey.secretName"),
    ({"tls": {"enabled": True, "secretName": "t", "serverName": "w", "mountPath": "/etc/ponder/api-keys"},
      "orchestrator": {"apiKeys": {"secretName": "k"}}, "tests": {"enabled": False}}, "must differ"),
    ({"etcd": {"externalTls": {"secretName": "e"}}}, "external etcd"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["http://etcd:2379"], "auth": {"secretName": "a"}}}, "etcd.auth.secretName"),
    ({"etcd": {"auth": {"password": "literal"}}}, "additional"),
    ({"networkPolicy": {"gatewayFrom": []}}, "additional"),
    ({"networkPolicy": {"egress": {"to": []}}}, "additional"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["http://etcd:2379"], "externalTls": {"secretName": "e"}}}, "use https://"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["https://etcd:2379"]}}, "externalTls.secretName"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["https://etcd:2379"],
               "externalTls": {"secretName": "e", "certKey": "tls.crt"}}}, "certKey and keyKey"),
    ({"models": {"source": "init"}}, "models.init.command"),
    ({"etcd": {"replicas": 3, "persistence": {"enabled": False}}}, "persistence"),
    ({"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}}, "metrics.enabled"),
    ({"generator": {"resources": {"requests": {"cpu": None}}}}, "requests.cpu"),
]


# ---------------------------------------------------------------- lint


def lint_all(files: dict[str, dict]) -> int:
    runs = 0
    for name, values in files.items():
        for kv in KUBE_VERSIONS:
            report = helm.lint(CHART, values or None, strict=True, kube_version=f"v{kv}")
            runs += 1
            scen = f"lint {name} k8s {kv}"
            check(scen, report.get("total_charts_linted") == 1, f"linted {report.get('total_charts_linted')} charts")
            for err in report.get("errors") or []:
                fail(scen, f"error: {err}")
            for m in report.get("messages") or []:
                if m["severity"] >= LINT_WARNING:
                    fail(scen, f"severity {m['severity']} {m['path']}: {m['error']}")
    return runs


# ---------------------------------------------------------------- render


def render(chart: helm.Chart, values: dict) -> tuple[list[dict], str]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs, notes


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# ---------------------------------------------------------------- kubernetes-validate


def validate_docs(scen: str, docs: list[dict], counts: dict[str, int]) -> None:
    for kv in KUBE_VERSIONS:
        for doc in docs:
            ident = f"{doc['kind']}/{doc['metadata']['name']}"
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, kv, strict=True)
                counts[kv] = counts.get(kv, 0) + 1
            except SchemaNotFoundError as e:
                fail(scen, f"k8s {kv}: no schema for {ident}: {e.message}")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(scen, f"k8s {kv}: {ident} invalid at {path}: {e.message}")


def check_crds(scen: str, docs: list[dict], values: dict) -> None:
    sms = [d for d in docs if d["kind"] == "ServiceMonitor"]
    want = bool(values.get("serviceMonitor", {}).get("enabled"))
    check(scen, len(sms) == (1 if want else 0), f"{len(sms)} ServiceMonitors, expected {int(want)}")
    for sm in sms:
        spec = sm["spec"]
        check(scen, set(spec) <= {"namespaceSelector", "selector", "endpoints"}, f"ServiceMonitor spec keys {set(spec)}")
        check(scen, spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, "ServiceMonitor namespaceSelector")
        ports = [e["port"] for e in spec["endpoints"]]
        check(scen, ports == ["metrics"], f"ServiceMonitor endpoint ports {ports}")
        for e in spec["endpoints"]:
            check(scen, set(e) <= {"port", "path", "interval", "scrapeTimeout"}, f"ServiceMonitor endpoint keys {set(e)}")
        for k, v in values["serviceMonitor"].get("labels", {}).items():
            check(scen, sm["metadata"]["labels"].get(k) == v, f"ServiceMonitor label {k}")
        # It must select each role's Service.
        services = by_kind(docs, "Service")
        for role in ROLES:
            svc = services.get(f"{FULLNAME}-{role}")
            if svc:
                labels = svc["metadata"]["labels"]
                sel = spec["selector"]
                ok = all(labels.get(k) == v for k, v in sel["matchLabels"].items()) and all(
                    labels.get(x["key"]) in x["values"] for x in sel.get("matchExpressions", [])
                )
                check(scen, ok, f"ServiceMonitor does not select Service {svc['metadata']['name']}")
                check(scen, any(p["name"] == "metrics" for p in svc["spec"]["ports"]), f"Service {role} has no metrics port")


# ---------------------------------------------------------------- assertions


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


# What the chart makes of the security values (the same defaults the templates apply).
def tls_generated(merged: dict) -> bool:
    """TLS on with no Secret of the user's: the chart generates the CA and certificate."""
    return bool(merged["tls"]["enabled"] and not merged["tls"]["secretName"])


def tls_secret(merged: dict) -> str:
    return merged["tls"]["secretName"] or f"{FULLNAME}-tls"


def tls_server_name(merged: dict) -> str:
    return merged["tls"]["serverName"] or f"{FULLNAME}-worker"


def etcd_auth_bundled(merged: dict) -> bool:
    return bool(merged["etcd"]["enabled"] and merged["etcd"]["auth"]["enabled"])


def etcd_auth_secret(merged: dict) -> str:
    return merged["etcd"]["auth"]["secretName"] or f"{FULLNAME}-etcd-auth"


def etcd_creds(merged: dict) -> dict | None:
    """(secretName, userKey, passwordKey) the roles' PONDER_ETCD_USER/PASSWORD come from."""
    etcd = merged["etcd"]
    if etcd_auth_bundled(merged):
        return {"secretName": etcd_auth_secret(merged), "userKey": "username", "passwordKey": "password"}
    if not etcd["enabled"] and etcd["externalAuth"]["secretName"]:
        return etcd["externalAuth"]
    return None


def check_roles(scen: str, docs: list[dict], merged: dict) -> None:
    deps, svcs = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    hpas, pdbs = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "PodDisruptionBudget")
    cms = by_kind(docs, "ConfigMap")
    for role in ROLES:
        v = merged[role]
        name = f"{FULLNAME}-{role}"
        if not v["enabled"]:
            for kind, objs in (("Deployment", deps), ("Service", svcs), ("HPA", hpas), ("PDB", pdbs)):
                check(scen, name not in objs, f"{role} disabled but its {kind} is rendered")
            continue
        dep, svc = deps.get(name), svcs.get(name)
        if not (check(scen, dep is not None, f"no Deployment {name}") and check(scen, svc is not None, f"no Service {name}")):
            continue
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        sel = dep["spec"]["selector"]["matchLabels"]
        check(scen, matches(sel, pod_labels), f"{name}: selector does not match its pod labels")
        check(scen, sel.get("app.kubernetes.io/component") == role, f"{name}: selector is not role-specific: {sel}")
        check(scen, svc["spec"]["selector"] == sel, f"Service {name} selects {svc['spec']['selector']}, not the {role} pods")
        # Role selectors must not overlap.
        for other in ROLES:
            od = deps.get(f"{FULLNAME}-{other}")
            if other != role and od:
                check(scen, not matches(sel, od["spec"]["template"]["metadata"]["labels"]), f"{role} selector matches {other} pods")
        container = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == role)
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        check(scen, grpc_port == v["port"], f"{role}: grpc port {grpc_port} != {v['port']}")
        check(scen, any(p["targetPort"] == "grpc" and p["port"] == v["port"] for p in svc["spec"]["ports"]), f"Service {name} does not expose grpc")
        check(scen, container["command"] == [f"ponder-{role}"], f"{role}: command {container['command']}")
        # HPA
        if v["autoscaling"]["enabled"]:
            hpa = hpas.get(name)
            if check(scen, hpa is not None, f"no HPA {name}"):
                ref = hpa["spec"]["scaleTargetRef"]
                check(scen, ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, f"HPA {name} targets {ref}")
                check(scen, hpa["apiVersion"] == "autoscaling/v2", f"HPA {name} apiVersion {hpa['apiVersion']}")
                check(scen, hpa["spec"]["minReplicas"] == v["autoscaling"]["minReplicas"], f"HPA {name} minReplicas")
                check(scen, hpa["spec"]["maxReplicas"] == v["autoscaling"]["maxReplicas"], f"HPA {name} maxReplicas")
                check(scen, bool(hpa["spec"].get("metrics")), f"HPA {name} has no metrics")
            check(scen, "replicas" not in dep["spec"], f"{name}: replicas set although the HPA owns them")
        else:
            check(scen, name not in hpas, f"HPA {name} rendered with autoscaling disabled")
            check(scen, dep["spec"].get("replicas") == v["replicas"], f"{name}: replicas {dep['spec'].get('replicas')} != {v['replicas']}")
        # PDB
        if v["pdb"]["enabled"]:
            pdb = pdbs.get(name)
            if check(scen, pdb is not None, f"no PDB {name}"):
                check(scen, pdb["apiVersion"] == "policy/v1", f"PDB {name} apiVersion")
                check(scen, pdb["spec"]["selector"]["matchLabels"] == sel, f"PDB {name} selects {pdb['spec']['selector']}")
                check(scen, ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), f"PDB {name}: exactly one of minAvailable/maxUnavailable")
        # Probes: native gRPC health checks for the role's service name on the plaintext
        # health-only port (PONDER_HEALTH_LISTEN), TLS or not: kubelet cannot do TLS.
        health_port = merged["health"]["port"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        check(scen, ports.get("health") == health_port, f"{role}: container port health {ports.get('health')} != {health_port}")
        check(scen, health_port not in (grpc_port, ports.get("metrics")), f"{role}: health port {health_port} shared")
        check(scen, all(p["name"] != "health" for p in svc["spec"]["ports"]), f"Service {name} exposes the health-only port")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if check(scen, probe is not None, f"{role}: no {kind}"):
                check(scen, set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{role}: {kind} is not gRPC: {probe}")
                g = probe.get("grpc", {})
                check(scen, g.get("port") == health_port, f"{role}: {kind} port {g.get('port')} is not the health port {health_port}")
                check(scen, g.get("service") == GRPC_SERVICE[role], f"{role}: {kind} service {g.get('service')!r}")
        # The environment comes from the role's ConfigMap.
        refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
        check(scen, name in refs, f"{role}: envFrom {refs} lacks ConfigMap {name}")
        cm = cms.get(name, {}).get("data", {})
        check(scen, cm.get("PONDER_LISTEN", "").endswith(f":{v['port']}"), f"{role}: PONDER_LISTEN {cm.get('PONDER_LISTEN')}")
        host = "[::]" if merged["cluster"]["ipFamily"] == "IPv6" else "0.0.0.0"
        check(scen, cm.get("PONDER_HEALTH_LISTEN") == f"{host}:{health_port}", f"{role}: PONDER_HEALTH_LISTEN {cm.get('PONDER_HEALTH_LISTEN')}")
        env = {e["name"]: e for e in container.get("env", [])}
        check(scen, env.get("PONDER_ADVERTISE", {}).get("value", "").endswith(f":{v['port']}") and "$(POD_IP)" in env["PONDER_ADVERTISE"]["value"], f"{role}: PONDER_ADVERTISE {env.get('PONDER_ADVERTISE')}")
        if role != "orchestrator":
            check(scen, cm.get("PONDER_MODEL") == v["model"], f"{role}: PONDER_MODEL {cm.get('PONDER_MODEL')}")
            # A model of the manifest by name, only when one is given.
            check(scen, cm.get("PONDER_MODEL_NAME") == (v.get("modelName") or None), f"{role}: PONDER_MODEL_NAME {cm.get('PONDER_MODEL_NAME')}")
        # Every envFrom/volume ConfigMap and PVC referenced exists in the release (or is given).
        for vol in dep["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in vol:
                check(scen, vol["configMap"]["name"] in cms, f"{role}: volume ConfigMap {vol['configMap']['name']} not rendered")
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                given = merged["models"]["pvc"]["existingClaim"]
                check(scen, claim == given or claim in by_kind(docs, "PersistentVolumeClaim"), f"{role}: claim {claim} neither given nor rendered")


def check_security(scen: str, docs: list[dict]) -> None:
    for ident, spec, volumes in pod_specs(docs):
        psc = spec.get("securityContext", {})
        check(scen, spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, f"{ident}: host namespaces")
        check(scen, spec.get("automountServiceAccountToken") is False, f"{ident}: service account token mounted")
        check(scen, spec.get("enableServiceLinks") is False, f"{ident}: service links enabled (they inject PONDER_* variables)")
        for c in spec.get("initContainers", []) + spec["containers"]:
            csc = c.get("securityContext", {})
            where = f"{ident} container {c['name']}"

            def eff(key):
                return csc.get(key, psc.get(key))

            check(scen, eff("runAsNonRoot") is True, f"{where}: runAsNonRoot not true")
            check(scen, eff("runAsUser") not in (0, None), f"{where}: runAsUser {eff('runAsUser')}")
            check(scen, eff("runAsGroup") != 0, f"{where}: runAsGroup 0")
            check(scen, csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation")
            check(scen, csc.get("privileged") is not True, f"{where}: privileged")
            check(scen, csc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem writable")
            check(scen, csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped")
            check(scen, not csc.get("capabilities", {}).get("add"), f"{where}: capabilities added")
            check(scen, (eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccomp not RuntimeDefault")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            check(scen, "/tmp" in mounts, f"{where}: no writable /tmp (root filesystem is read-only)")
            for m in c.get("volumeMounts", []):
                check(scen, m["name"] in volumes, f"{where}: mount {m['name']} has no volume")


def check_etcd(scen: str, docs: list[dict], merged: dict) -> None:
    cms = by_kind(docs, "ConfigMap")
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    endpoints = {
        role: cms[f"{FULLNAME}-{role}"]["data"].get("PONDER_ETCD")
        for role in ROLES
        if merged[role]["enabled"]
    }
    etcd = merged["etcd"]
    if etcd["enabled"]:
        if not check(scen, len(sts) == 1, f"{len(sts)} StatefulSets, expected the bundled etcd"):
            return
        ss = sts[0]
        check(scen, ss["spec"]["replicas"] == etcd["replicas"], f"etcd replicas {ss['spec']['replicas']}")
        check(scen, ss["spec"]["podManagementPolicy"] == "Parallel", "etcd must start its members in parallel")
        pod_labels = ss["spec"]["template"]["metadata"]["labels"]
        svcs = by_kind(docs, "Service")
        c = ss["spec"]["template"]["spec"]["containers"][0]
        client_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "client")
        # The client Service the nodes dial: selects the etcd pods, exposes the client port.
        client_svcs = [
            s for s in svcs.values()
            if s["spec"].get("clusterIP") != "None" and matches(s["spec"]["selector"], pod_labels)
        ]
        if not check(scen, len(client_svcs) == 1, f"{len(client_svcs)} etcd client Services"):
            return
        cs = client_svcs[0]
        port = next(p["port"] for p in cs["spec"]["ports"] if p["targetPort"] in ("client", client_port))
        want = f"http://{cs['metadata']['name']}.{NAMESPACE}.svc.{merged['clusterDomain']}:{port}"
        for role, ep in endpoints.items():
            check(scen, ep == want, f"{role}: PONDER_ETCD {ep!r}, bundled etcd is {want!r}")
        # Members: --initial-cluster lists every pod at the headless Service's DNS name.
        args = dict(a.split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
        members = args["--initial-cluster"].split(",")
        check(scen, len(members) == etcd["replicas"], f"--initial-cluster {members}")
        headless = ss["spec"]["serviceName"]
        check(scen, headless in svcs and svcs[headless]["spec"].get("clusterIP") == "None", f"etcd serviceName {headless} is not a headless Service")
        check(scen, svcs.get(headless, {}).get("spec", {}).get("publishNotReadyAddresses") is True, "etcd headless Service must publish not-ready addresses")
        for i, m in enumerate(members):
            check(scen, m == f"{ss['metadata']['name']}-{i}=http://{ss['metadata']['name']}-{i}.{headless}.{NAMESPACE}.svc.{merged['clusterDomain']}:{etcd['peerPort']}", f"etcd member {m}")
        check(scen, bool(ss["spec"].get("volumeClaimTemplates")) == etcd["persistence"]["enabled"], "etcd persistence")
    else:
        check(scen, not sts, "etcd disabled but a StatefulSet is rendered")
        check(scen, not any("etcd" in n for n in by_kind(docs, "Service")), "etcd disabled but an etcd Service is rendered")
        want = ",".join(etcd["externalEndpoints"])
        for role, ep in endpoints.items():
            check(scen, ep == want, f"{role}: PONDER_ETCD {ep!r}, external etcd is {want!r}")


def check_labels(scen: str, docs: list[dict]) -> None:
    required = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
                "helm.sh/chart"]
    for d in docs:
        labels = d["metadata"].get("labels", {})
        missing = [k for k in required if k not in labels]
        check(scen, not missing, f"{d['kind']}/{d['metadata']['name']}: labels missing {missing}")
        check(scen, labels.get("app.kubernetes.io/instance") == RELEASE, f"{d['kind']}/{d['metadata']['name']}: instance label")
        check(scen, d["metadata"].get("namespace") == NAMESPACE or d["kind"] == "ServiceMonitor", f"{d['kind']}/{d['metadata']['name']}: namespace")


def check_test_hook(scen: str, docs: list[dict], merged: dict) -> None:
    pods = [d for d in docs if d["kind"] == "Pod"]
    if not check(scen, len(pods) == 1, f"{len(pods)} test pods"):
        return
    pod = pods[0]
    check(scen, pod["metadata"]["annotations"].get("helm.sh/hook") == "test", "test pod is not a helm test hook")
    cmd = pod["spec"]["containers"][0]["command"]
    check(scen, cmd[:2] == ["ponder", "solve"], f"test pod runs {cmd}")
    addr = cmd[cmd.index("--addr") + 1]
    orch = by_kind(docs, "Service").get(f"{FULLNAME}-orchestrator")
    want = f"{FULLNAME}-orchestrator.{NAMESPACE}.svc.{merged['clusterDomain']}:{merged['orchestrator']['port']}"
    check(scen, orch is not None and addr == want, f"test pod --addr {addr}, orchestrator Service is {want}")


# ---------------------------------------------------------------- security wiring


def container_env(container: dict, cms: dict[str, dict]) -> dict[str, dict]:
    """The environment a container sees: name -> {"value": s} (ConfigMap or literal),
    {"secret": (name, key)} (secretKeyRef) or {"other": valueFrom}."""
    env: dict[str, dict] = {}
    for ef in container.get("envFrom", []):
        if "configMapRef" in ef:
            for k, val in cms.get(ef["configMapRef"]["name"], {}).get("data", {}).items():
                env[k] = {"value": val}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = {"value": e["value"]}
        elif "secretKeyRef" in e.get("valueFrom", {}):
            r = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = {"secret": (r["name"], r["key"])}
        else:
            env[e["name"]] = {"other": e.get("valueFrom")}
    return env


def mounted_file(container: dict, pod_spec: dict, cms: dict[str, dict], path: str) -> tuple[str, str, str] | None:
    """("secret" or "configMap", its name, its key) of the file at path, when a mounted
    volume provides it (read-only), else None."""
    vols = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if not path.startswith(mp + "/") or "subPath" in m or m.get("readOnly") is not True:
            continue
        rel = path[len(mp) + 1:]
        vol = vols.get(m["name"], {})
        for kind, name_key in (("secret", "secretName"), ("configMap", "name")):
            src = vol.get(kind)
            if src is None:
                continue
            name = src.get(name_key)
            if src.get("items") is not None:
                return next(((kind, name, it["key"]) for it in src["items"] if it["path"] == rel), None)
            if kind == "configMap" and rel not in cms.get(name, {}).get("data", {}):
                return None
            return kind, name, rel
    return None


def expected_files(merged: dict, role: str) -> dict[str, tuple[str, str, str]]:
    """FILE_VARS a role must have, and the Secret key each must be."""
    out = {}
    tls = merged["tls"]
    if tls["enabled"]:
        for var, key in (("PONDER_TLS_CERT", "certKey"), ("PONDER_TLS_KEY", "keyKey"), ("PONDER_TLS_CA", "caKey")):
            out[var] = ("secret", tls_secret(merged), tls[key])
    etcd = merged["etcd"]
    et = etcd["externalTls"]
    if not etcd["enabled"] and et["secretName"]:
        out["PONDER_ETCD_CA"] = ("secret", et["secretName"], et["caKey"])
        if et["certKey"]:
            out["PONDER_ETCD_CERT"] = ("secret", et["secretName"], et["certKey"])
            out["PONDER_ETCD_KEY"] = ("secret", et["secretName"], et["keyKey"])
    keys = merged["orchestrator"]["apiKeys"]
    if role == "orchestrator" and keys["secretName"]:
        out["PONDER_API_KEYS_FILE"] = ("secret", keys["secretName"], keys["key"])
    return out


def check_files(scen: str, where: str, container: dict, spec: dict, cms: dict, env: dict, want: dict) -> None:
    for var in FILE_VARS:
        if var not in want:
            check(scen, var not in env, f"{where}: {var} set but not expected: {env.get(var)}")
            continue
        path = env.get(var, {}).get("value")
        if not check(scen, path is not None, f"{where}: {var} missing (or not a path): {env.get(var)}"):
            continue
        got = mounted_file(container, spec, cms, path)
        check(scen, got == want[var], f"{where}: {var}={path} is {got}, not the read-only mounted file {want[var]}")


def check_security_wiring(scen: str, docs: list[dict], merged: dict) -> None:
    """TLS, etcd credentials, API keys and rate limits reach each role as the values say."""
    cms = by_kind(docs, "ConfigMap")
    deps = by_kind(docs, "Deployment")
    tls, etcd, orch = merged["tls"], merged["etcd"], merged["orchestrator"]
    etcd_auth = etcd_creds(merged)
    for role in ROLES:
        dep = deps.get(f"{FULLNAME}-{role}")
        if not merged[role]["enabled"] or dep is None:
            continue
        spec = dep["spec"]["template"]["spec"]
        container = next(c for c in spec["containers"] if c["name"] == role)
        env = container_env(container, cms)
        check_files(scen, role, container, spec, cms, env, expected_files(merged, role))
        val = lambda k: env.get(k, {}).get("value")  # noqa: E731
        # TLS: who is asked for a certificate, and the name the orchestrator expects.
        if tls["enabled"]:
            if role == "orchestrator":
                want_name = tls_server_name(merged)
                check(scen, val("PONDER_TLS_SERVER_NAME") == want_name,
                      f"orchestrator: PONDER_TLS_SERVER_NAME {val('PONDER_TLS_SERVER_NAME')!r}, expected {want_name!r}")
                check(scen, val("PONDER_TLS_CLIENT_AUTH") == tls["clientAuth"], f"orchestrator: PONDER_TLS_CLIENT_AUTH {val('PONDER_TLS_CLIENT_AUTH')}")
            else:
                check(scen, val("PONDER_TLS_CLIENT_AUTH") == "required", f"{role}: workers must require mTLS, PONDER_TLS_CLIENT_AUTH {val('PONDER_TLS_CLIENT_AUTH')}")
                check(scen, "PONDER_TLS_SERVER_NAME" not in env, f"{role}: PONDER_TLS_SERVER_NAME on a worker")
        else:
            check(scen, not [k for k in env if k.startswith("PONDER_TLS")], f"{role}: PONDER_TLS_* set with TLS off")
        # etcd user and password: secretKeyRefs to the Secret given.
        for var, key in (("PONDER_ETCD_USER", "userKey"), ("PONDER_ETCD_PASSWORD", "passwordKey")):
            if etcd_auth:
                want = (etcd_auth["secretName"], etcd_auth[key])
                check(scen, env.get(var, {}).get("secret") == want, f"{role}: {var} is {env.get(var)}, not secretKeyRef {want}")
            else:
                check(scen, var not in env, f"{role}: {var} set without etcd.auth or etcd.externalAuth")
        # Rate limit: the orchestrator only.
        rate = orch["rateLimit"]
        if role == "orchestrator" and rate["perSecond"] > 0:
            check(scen, val("PONDER_RATE_LIMIT") is not None and float(val("PONDER_RATE_LIMIT")) == rate["perSecond"],
                  f"orchestrator: PONDER_RATE_LIMIT {val('PONDER_RATE_LIMIT')}, rateLimit.perSecond {rate['perSecond']}")
            want_burst = None if rate.get("burst") is None else str(rate["burst"])
            check(scen, val("PONDER_RATE_BURST") == want_burst, f"orchestrator: PONDER_RATE_BURST {val('PONDER_RATE_BURST')} != {want_burst}")
        else:
            check(scen, "PONDER_RATE_LIMIT" not in env and "PONDER_RATE_BURST" not in env, f"{role}: rate limit set: {val('PONDER_RATE_LIMIT')}")
        # The orchestrator's inline format and policy: ConfigMap files holding the JSON.
        for var, key in (("PONDER_FORMAT", "format"), ("PONDER_POLICY", "policy")):
            if role == "orchestrator" and orch[key]:
                path = val(var) or ""
                got = mounted_file(container, spec, cms, path)
                data = cms.get(got[1], {}).get("data", {}) if got and got[0] == "configMap" else {}
                check(scen, got is not None and json.loads(data.get(got[2], "null")) == orch[key], f"{role}: {var}={path} does not hold {key}")


def check_test_pod_security(scen: str, docs: list[dict], merged: dict) -> None:
    """The helm test pod reaches the orchestrator as a client: CA, server name, a client
    certificate only when the orchestrator requires one, the API key from a Secret."""
    pods = [d for d in docs if d["kind"] == "Pod"]
    if not pods:
        return
    spec = pods[0]["spec"]
    container = spec["containers"][0]
    cms = by_kind(docs, "ConfigMap")
    env = container_env(container, cms)
    tls, keys = merged["tls"], merged["orchestrator"]["apiKeys"]
    mtls = tls["enabled"] and tls["clientAuth"] == "required"
    want = {}
    secret = tls_secret(merged)
    if tls["enabled"]:
        want["PONDER_TLS_CA"] = ("secret", secret, tls["caKey"])
        if mtls:
            want["PONDER_TLS_CLIENT_CERT"] = ("secret", secret, tls["certKey"])
            want["PONDER_TLS_CLIENT_KEY"] = ("secret", secret, tls["keyKey"])
        cmd = container["command"]
        host = cmd[cmd.index("--addr") + 1].rsplit(":", 1)[0]
        name = env.get("PONDER_TLS_SERVER_NAME", {}).get("value")
        check(scen, name == (merged["tests"]["tlsServerName"] or host), f"test pod: PONDER_TLS_SERVER_NAME {name!r}, dials {host}")
    else:
        check(scen, not [k for k in env if k.startswith("PONDER_TLS")], "test pod: PONDER_TLS_* with TLS off")
    check_files(scen, "test pod", container, spec, cms, env, want)
    # Without mTLS on the orchestrator the test pod holds no private key.
    if tls["enabled"] and not mtls:
        for vol in spec.get("volumes", []):
            s = vol.get("secret")
            if s and s.get("secretName") == secret:
                items = [it["key"] for it in s.get("items") or [{"key": "<the whole Secret>"}]]
                check(scen, items == [tls["caKey"]], f"test pod mounts {items} of {secret}, the CA only is needed")
    token = env.get("PONDER_TOKEN")
    if keys["secretName"]:
        ref = (merged["tests"]["apiKey"]["secretName"], merged["tests"]["apiKey"]["key"])
        check(scen, token is not None and token.get("secret") == ref, f"test pod: PONDER_TOKEN {token}, not secretKeyRef {ref}")
    else:
        check(scen, token is None, "test pod: PONDER_TOKEN set without orchestrator.apiKeys")


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


# ---------------------------------------------------------------- generated TLS


def tls_handshake(ca: str, crt: str, key: str, server_name: str) -> str | None:
    """A mutual TLS handshake in memory: the server presents crt and requires a client
    certificate the CA signed; the client presents crt, trusts only the CA and checks
    server_name. OpenSSL checks the extended key usages (serverAuth for the server,
    clientAuth for the client). None on success, else the error."""
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, text in (("ca", ca), ("crt", crt), ("key", key)):
            paths[name] = Path(d) / f"{name}.pem"
            paths[name].write_text(text)
        srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv.load_cert_chain(paths["crt"], paths["key"])
        srv.load_verify_locations(paths["ca"])
        srv.verify_mode = ssl.CERT_REQUIRED
        cli = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cli.load_verify_locations(paths["ca"])
        cli.load_cert_chain(paths["crt"], paths["key"])
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = srv.wrap_bio(bios[0], bios[1], server_side=True)
    client = cli.wrap_bio(bios[2], bios[3], server_hostname=server_name)
    done = {"client": False, "server": False}
    try:
        for _ in range(20):
            for name, side in (("client", client), ("server", server)):
                if not done[name]:
                    try:
                        side.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
            bios[0].write(bios[3].read())
            bios[2].write(bios[1].read())
            if all(done.values()):
                # TLS 1.3: the server checks the client's certificate last; a refusal
                # reaches the client as an alert on its first read.
                client.write(b"ping")
                bios[0].write(bios[3].read())
                got = server.read(4)
                return None if got == b"ping" and server.getpeercert() else "no client certificate seen"
        return "handshake did not finish"
    except ssl.SSLError as e:
        return str(e)


def check_generated_tls(scen: str, docs: list[dict], merged: dict) -> None:
    """Without a TLS Secret of the user's: a CA Secret (no pod mounts it) and a certificate
    Secret whose certificate the CA signed, with serverAuth and clientAuth, naming the
    server name and every role's Service DNS names (an mTLS handshake per name proves it);
    the pods' checksum/tls matches that certificate (the Secret and the rollout agree)."""
    if not tls_generated(merged):
        return
    secrets = by_kind(docs, "Secret")
    ca_sec, tls_sec = secrets.get(f"{FULLNAME}-ca"), secrets.get(tls_secret(merged))
    if not (check(scen, ca_sec is not None, "no generated CA Secret") and check(scen, tls_sec is not None, "no generated TLS Secret")):
        return
    t = merged["tls"]
    dec = lambda sec, k: base64.b64decode((sec.get("data") or {}).get(k, "")).decode()  # noqa: E731
    ca, ca_key = dec(ca_sec, "ca.crt"), dec(ca_sec, "ca.key")
    crt, key, ca_copy = dec(tls_sec, t["certKey"]), dec(tls_sec, t["keyKey"]), dec(tls_sec, t["caKey"])
    check(scen, ca.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY-----" in ca_key, "CA Secret: not a PEM certificate and key")
    check(scen, crt.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY-----" in key, "TLS Secret: not a PEM certificate and key")
    check(scen, ca_copy == ca, f"TLS Secret: {t['caKey']} is not the generated CA")
    check(scen, ca_key not in (crt, key), "the CA key is in the certificate Secret")
    ann = tls_sec["metadata"].get("annotations", {})
    renew = int(ann.get("ponder/renew-after", "0"))
    days = t["generate"]["certDays"]
    check(scen, time.time() + days * 86400 / 2 < renew < time.time() + days * 86400, f"TLS Secret: renew-after {renew} is not two thirds into {days} days")
    check(scen, bool(ann.get("ponder/dns-names-sha256")), "TLS Secret: no ponder/dns-names-sha256 annotation")
    names = [tls_server_name(merged)]
    for role in ROLES:
        svc = f"{FULLNAME}-{role}"
        names += [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.{merged['clusterDomain']}"]
    names += ([merged["tests"]["tlsServerName"]] if merged["tests"]["tlsServerName"] else []) + t["generate"]["extraDnsNames"]
    for name in names:
        err = tls_handshake(ca, crt, key, name)
        check(scen, err is None, f"generated certificate: mTLS handshake as {name!r} failed: {err}")
    check(scen, tls_handshake(ca, crt, key, "not-in-the-certificate.example") is not None, "generated certificate: a name it lacks was accepted")
    want_sum = hashlib.sha256(crt.encode()).hexdigest()
    for ident, spec, _ in pod_specs(docs):
        for vol in spec.get("volumes", []):
            sec = vol.get("secret") or {}
            check(scen, sec.get("secretName") != f"{FULLNAME}-ca", f"{ident}: mounts the CA Secret (its key mints certificates)")
            check(scen, not any(it["key"] == "ca.key" for it in sec.get("items") or []), f"{ident}: mounts ca.key")
    for role in ROLES:
        dep = by_kind(docs, "Deployment").get(f"{FULLNAME}-{role}")
        if dep:
            got = dep["spec"]["template"]["metadata"]["annotations"].get("checksum/tls")
            check(scen, got == want_sum, f"{role}: checksum/tls {got} is not the generated certificate's")


def check_upgrades_keep_generated() -> str:
    """`helm upgrade` keeps what the chart generated. The SDK renders without a cluster,
    where `lookup` finds nothing, so this renders a copy of the chart whose `lookup` calls
    read the Secrets of a first render from a value instead: the same values keep the CA,
    the certificate, the pods' checksum and the etcd passwords; new DNS names, a
    certificate past its renew-after or a missing CA Secret re-issue the certificate
    (signed by the kept CA, or a new one)."""
    scen = "upgrade (lookup)"
    pattern = re.compile(r'lookup "v1" "Secret" \.Release\.Namespace (\([^()]*\)|\$\w+)')
    with tempfile.TemporaryDirectory() as d:
        copy_dir = Path(d) / "ponder"
        shutil.copytree(CHART, copy_dir)
        replaced = 0
        for path in (copy_dir / "templates").rglob("*"):
            if path.suffix in (".yaml", ".tpl"):
                text, n = pattern.subn(r"index (.Values.fakeLookup | default dict) \1", path.read_text())
                replaced += n
                path.write_text(text)
        check(scen, replaced == 3, f"{replaced} lookup calls replaced, expected 3 (the CA, certificate and etcd Secrets)")
        schema = json.loads((copy_dir / "values.schema.json").read_text())
        schema["properties"]["fakeLookup"] = {"type": "object"}
        (copy_dir / "values.schema.json").write_text(json.dumps(schema))
        chart = helm.Chart.load(copy_dir)

        def up(values: dict, existing: dict[str, dict]) -> dict[str, dict]:
            out = chart.render({**values, "fakeLookup": existing}, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
            docs = [doc for p, text in out.items() if not p.endswith("NOTES.txt") for doc in yaml.safe_load_all(text) if doc]
            objs = {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}
            return objs

        ca, tls, auth = f"Secret/{FULLNAME}-ca", f"Secret/{FULLNAME}-tls", f"Secret/{FULLNAME}-etcd-auth"
        dep = f"Deployment/{FULLNAME}-generator"
        first = up({}, {})
        kept = {k: first[k] for k in (ca, tls, auth)}
        lookup = {v["metadata"]["name"]: v for v in kept.values()}
        pem = lambda objs, s, k: base64.b64decode(objs[s]["data"][k]).decode()  # noqa: E731
        checksum = lambda objs: objs[dep]["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]  # noqa: E731
        # The same values: nothing changes.
        second = up({}, lookup)
        for k in (ca, tls, auth):
            check(scen, second[k]["data"] == kept[k]["data"], f"{k} changed on an upgrade with the same values")
        check(scen, checksum(second) == checksum(first), "checksum/tls changed on an upgrade with the same values (the pods would roll)")
        # New names: a new certificate, the same CA, the new name in it.
        renamed = up({"tls": {"generate": {"extraDnsNames": ["new.example.com"]}}}, lookup)
        check(scen, renamed[ca]["data"] == kept[ca]["data"], "new DNS names replaced the CA")
        check(scen, renamed[tls]["data"]["tls.crt"] != kept[tls]["data"]["tls.crt"], "new DNS names did not re-issue the certificate")
        check(scen, checksum(renamed) != checksum(first), "a re-issued certificate does not roll the pods (checksum/tls unchanged)")
        err = tls_handshake(pem(first, ca, "ca.crt"), pem(renamed, tls, "tls.crt"), pem(renamed, tls, "tls.key"), "new.example.com")
        check(scen, err is None, f"the re-issued certificate, against the kept CA, as new.example.com: {err}")
        # Past renew-after: re-issued by the same CA.
        old = copy.deepcopy(lookup)
        old[f"{FULLNAME}-tls"]["metadata"]["annotations"]["ponder/renew-after"] = "1"
        renewed = up({}, old)
        check(scen, renewed[ca]["data"] == kept[ca]["data"] and renewed[tls]["data"]["tls.crt"] != kept[tls]["data"]["tls.crt"],
              "a certificate past renew-after was not re-issued by the same CA")
        # The CA Secret gone: a new CA and a certificate it signed.
        no_ca = {k: v for k, v in lookup.items() if k != f"{FULLNAME}-ca"}
        fresh = up({}, no_ca)
        check(scen, fresh[ca]["data"]["ca.crt"] != kept[ca]["data"]["ca.crt"], "a missing CA Secret was not regenerated")
        err = tls_handshake(pem(fresh, ca, "ca.crt"), pem(fresh, tls, "tls.crt"), pem(fresh, tls, "tls.key"), tls_server_name(chart.values))
        check(scen, err is None, f"after a new CA, the certificate does not verify against it: {err}")
    return "same values keep the CA, certificate and etcd passwords; new names, renew-after and a lost CA re-issue"


# ---------------------------------------------------------------- bundled etcd authentication

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


# ---------------------------------------------------------------- NetworkPolicy

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
    out: dict[str, tuple[set, set]] = {}
    enabled = [r for r in ROLES if merged[r]["enabled"]]
    for role in enabled:
        ing = set(metrics) | {("health", "TCP", j(p)) for p in npv["probesFrom"]} | atoms(npv["extraIngress"][role], "from")
        out_ = dns | to_etcd | atoms(egress["extra"], "to")
        if role == "orchestrator":
            peers = [j(p) for p in npv["orchestratorFrom"]] + [j(release_selector("test"))] if npv["orchestratorFrom"] else [ANY]
            ing |= {("grpc", "TCP", p) for p in peers}
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
    (with egress on) egress; only the orchestrator's client port may admit any source;
    named ports exist on the pods they admit to; peers that name this release's pods
    select them."""
    nps = by_kind(docs, "NetworkPolicy")
    npv = merged["networkPolicy"]
    if not npv["enabled"]:
        check(scen, not nps, "NetworkPolicies rendered while disabled")
        return
    pods = {}  # component -> (labels, named ports)
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Pod"):
            tmpl = d if d["kind"] == "Pod" else d["spec"]["template"]
            labels = tmpl["metadata"]["labels"]
            named = {p["name"] for c in tmpl["spec"]["containers"] for p in c.get("ports", []) if "name" in p}
            pods[labels["app.kubernetes.io/component"]] = (labels, named)
    want = expected_flows(merged)
    check(scen, set(pods) == set(want), f"policies expected for {sorted(want)}, Ponder pods are {sorted(pods)}")
    types = ["Ingress", "Egress"] if npv["egress"]["enabled"] else ["Ingress"]
    for comp, (labels, named) in pods.items():
        selecting = [n for n, np in nps.items() if matches(np["spec"]["podSelector"].get("matchLabels", {}), labels)]
        if not check(scen, len(selecting) == 1, f"{comp} pods are selected by {selecting}, not exactly one NetworkPolicy"):
            continue
        spec = nps[selecting[0]]["spec"]
        check(scen, spec.get("policyTypes") == types, f"{selecting[0]}: policyTypes {spec.get('policyTypes')}, expected {types}")
        ing, eg = atoms(spec.get("ingress"), "from"), atoms(spec.get("egress"), "to")
        want_in, want_eg = want.get(comp, (set(), set()))
        check(scen, ing == want_in, f"{selecting[0]} ingress: admits {sorted(ing - want_in)} too, lacks {sorted(want_in - ing)}")
        check(scen, eg == want_eg, f"{selecting[0]} egress: allows {sorted(eg - want_eg)} too, lacks {sorted(want_eg - eg)}")
        for port, _, peer in ing:
            check(scen, not everyone(peer) or (comp == "orchestrator" and port == "grpc"),
                  f"{selecting[0]}: port {port} admits everyone ({peer}); only the orchestrator's client port may")
            check(scen, not isinstance(port, str) or port in named or port == ANY, f"{selecting[0]}: named port {port} is not on the {comp} pods")
        for port, _, peer in ing | eg:
            if peer != ANY and set(json.loads(peer)) == {"podSelector"}:
                sel = json.loads(peer)["podSelector"].get("matchLabels", {})
                if sel.get("app.kubernetes.io/instance") == RELEASE:
                    check(scen, any(matches(sel, lab) for lab, _ in pods.values()), f"{selecting[0]}: peer {sel} selects no pod of the release")
    for name, np in nps.items():
        sel = np["spec"]["podSelector"].get("matchLabels", {})
        check(scen, any(matches(sel, lab) for lab, _ in pods.values()), f"NetworkPolicy {name} selects no Ponder pod")


def schema_covers_values(values: dict, schema: dict) -> list[str]:
    """Every key of values.yaml is described by the schema (properties, via $ref)."""
    defs = schema.get("definitions", {})

    def resolve(node):
        while "$ref" in node or ("allOf" in node and len(node["allOf"]) == 1):
            node = defs[node["$ref"].split("/")[-1]] if "$ref" in node else node["allOf"][0]
        return node

    missing = []

    def walk(val, node, path):
        node = resolve(node)
        if not isinstance(val, dict):
            return
        props = node.get("properties")
        if props is None:
            return  # a free-form object (Kubernetes passthrough, labels)
        for k, sub in val.items():
            if k not in props:
                missing.append(f"{path}{k}")
            else:
                walk(sub, props[k], f"{path}{k}.")

    walk(values, schema, "")
    return missing


def check_schema_strictness(schema: dict) -> list[str]:
    """Objects with declared properties refuse unknown keys."""
    loose = []

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path or "<root>")
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    return loose


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def main() -> int:
    t0 = time.time()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}")
    chart = helm.Chart.load(CHART)
    defaults = chart.values
    schema = chart.schema or {}

    # Schema: covers every value, strict objects, refuses bad values.
    for key in schema_covers_values(defaults, schema):
        fail("schema", f"values.yaml key {key} is not in values.schema.json")
    for path in check_schema_strictness(schema):
        fail("schema", f"{path} allows unknown keys")
    try:
        chart.validate_schema(defaults)
    except helm.HelmError as e:
        fail("schema", f"the default values do not pass the schema: {e}")
    refused = 0
    for bad, needle in BAD_VALUES:
        try:
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)
            fail("bad values", f"{json.dumps(bad)} was accepted")
        except helm.HelmError as e:
            refused += 1
            check("bad values", needle in str(e), f"{json.dumps(bad)} refused, but the message lacks {needle!r}: {e}")

    # Lint: default values and each example file, every Kubernetes version.
    lint_files = {"default": {}}
    lint_files.update({f"examples/{p.name}": load_values_file(p) for p in sorted(EXAMPLES.glob("values-*.yaml"))})
    lint_runs = lint_all(lint_files)

    # Render, validate, assert.
    counts: dict[str, int] = {}
    summary = []
    default_docs: list[dict] = []
    for scen, values in scenarios().items():
        merged = deep_merge(defaults, values)
        try:
            docs, notes = render(chart, values)
        except helm.HelmError as e:
            fail(scen, f"render failed: {e}")
            continue
        validate_docs(scen, docs, counts)
        check_roles(scen, docs, merged)
        check_security(scen, docs)
        check_etcd(scen, docs, merged)
        check_labels(scen, docs)
        check_test_hook(scen, docs, merged)
        check_security_wiring(scen, docs, merged)
        check_test_pod_security(scen, docs, merged)
        check_no_literal_secrets(scen, docs, merged, notes)
        check_generated_tls(scen, docs, merged)
        check_etcd_auth(scen, docs, merged)
        check_network_policy(scen, docs, merged)
        if scen == "default":
            default_docs = docs
        check_crds(scen, docs, values)
        check(scen, f"{FULLNAME}-orchestrator" in notes and "port-forward" in notes, "NOTES.txt does not say how to call the orchestrator")
        if merged["tls"]["enabled"]:
            check(scen, "--tls-ca" in notes and "-plaintext" not in notes, "NOTES.txt: TLS on, but the commands are plaintext")
        else:
            check(scen, "--tls-ca" not in notes, "NOTES.txt: TLS flags with TLS off")
        check(scen, ("PONDER_TOKEN" in notes) == bool(merged["orchestrator"]["apiKeys"]["secretName"]), "NOTES.txt: PONDER_TOKEN hint does not follow orchestrator.apiKeys")
        kinds: dict[str, int] = {}
        for d in docs:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        summary.append(f"  {scen}: {len(docs)} documents ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")

    auth_script = run_auth_script(default_docs) if default_docs else "skipped (the default values did not render)"
    upgrades = check_upgrades_keep_generated()
    print(f"lint: {lint_runs} runs (strict; {len(lint_files)} values sets x {len(KUBE_VERSIONS)} Kubernetes versions)")
    print(f"bad values refused: {refused}/{len(BAD_VALUES)}")
    print("rendered:")
    print("\n".join(summary))
    print("kubernetes-validate (strict) documents validated per version: "
          + ", ".join(f"{kv[:-2]}: {counts.get(kv, 0)}" for kv in KUBE_VERSIONS))
    print(f"etcd auth script (default values): {auth_script}")
    print(f"upgrades (lookup replaced by the first render's Secrets): {upgrades}")
    print(f"{time.time() - t0:.1f} s")
    if FAILURES:
        print(f"\nFAILED: {len(FAILURES)} problems")
        for f in FAILURES:
            print("  " + f)
        return 1
    print("OK: helm/ponder lints clean, renders valid Kubernetes 1.29-1.33 objects, and passes the checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
