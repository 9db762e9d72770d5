#!/usr/bin/env python3
"""Validates helm/ponder without a cluster or a helm binary.

1. Lint with the Helm Go SDK (helm-python-sdk): strict, once per Kubernetes version
   (1.29 to 1.33), with the default values and each example values file. Any message of
   warning severity or above fails.
2. Render the chart (Helm SDK) for each scenario: the default values,
   deploy/examples/values-*.yaml, and a few overrides that switch on the optional parts.
3. Validate every rendered document with kubernetes-validate in strict mode against
   each Kubernetes version; an unknown schema fails (only the ServiceMonitor CRD, which
   has no schema there, is checked by hand).
4. Assert what matters: each role has its own Deployment, Service, HPA and PDB wired
   to it; probes are native gRPC health checks on the plaintext health-only port; no
   container runs as root (and all are hardened); the etcd endpoints the services get
   are the bundled etcd or the external one; every file a PONDER_* variable names
   (TLS, etcd TLS, API keys, format, policy) is mounted from the expected Secret key or
   ConfigMap; the orchestrator gets PONDER_TLS_SERVER_NAME with TLS; secrets reach pods
   only through secretKeyRef or Secret volumes (never a ConfigMap or a literal value);
   the helm test pod gets the CA, a client certificate only when needed, and the API
   key; the schema covers every value and rejects bad ones.

Run: .venv/bin/python tests/helm/check_chart.py  (from the repository root; .ci/run does).
Exit status 0 when everything passes.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
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
    out["verifier-disabled+recreate"] = {
        "verifier": {"enabled": False},
        "generator": {"strategy": {"type": "Recreate"}},
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
    ({"tls": {"enabled": True}}, "secretName"),
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
            out[var] = ("secret", tls["secretName"], tls[key])
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
    etcd_auth = etcd["externalAuth"] if not etcd["enabled"] and etcd["externalAuth"]["secretName"] else None
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
                check(scen, bool(tls["serverName"]) and val("PONDER_TLS_SERVER_NAME") == tls["serverName"],
                      f"orchestrator: PONDER_TLS_SERVER_NAME {val('PONDER_TLS_SERVER_NAME')!r}, tls.serverName is {tls['serverName']!r}")
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
                check(scen, var not in env, f"{role}: {var} set without etcd.externalAuth")
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
    if tls["enabled"]:
        want["PONDER_TLS_CA"] = ("secret", tls["secretName"], tls["caKey"])
        if mtls:
            want["PONDER_TLS_CLIENT_CERT"] = ("secret", tls["secretName"], tls["certKey"])
            want["PONDER_TLS_CLIENT_KEY"] = ("secret", tls["secretName"], tls["keyKey"])
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
            if s and s.get("secretName") == tls["secretName"]:
                items = [it["key"] for it in s.get("items") or [{"key": "<the whole Secret>"}]]
                check(scen, items == [tls["caKey"]], f"test pod mounts {items} of {tls['secretName']}, the CA only is needed")
    token = env.get("PONDER_TOKEN")
    if keys["secretName"]:
        ref = (merged["tests"]["apiKey"]["secretName"], merged["tests"]["apiKey"]["key"])
        check(scen, token is not None and token.get("secret") == ref, f"test pod: PONDER_TOKEN {token}, not secretKeyRef {ref}")
    else:
        check(scen, token is None, "test pod: PONDER_TOKEN set without orchestrator.apiKeys")


def check_no_literal_secrets(scen: str, docs: list[dict]) -> None:
    """Secrets reach pods only by secretKeyRef or Secret volumes: the chart renders no
    Secret, no ConfigMap holds a secret variable or PEM text, and no container has a
    secret variable as a literal value."""
    for d in docs:
        ident = f"{d['kind']}/{d['metadata']['name']}"
        check(scen, d["kind"] != "Secret", f"{ident}: the chart must not render Secrets (it never holds secret values)")
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


def check_network_policy(scen: str, docs: list[dict], merged: dict) -> None:
    nps = by_kind(docs, "NetworkPolicy")
    if not merged["networkPolicy"]["enabled"]:
        check(scen, not nps, "NetworkPolicies rendered while disabled")
        return
    deps = by_kind(docs, "Deployment")
    orch_labels = deps[f"{FULLNAME}-orchestrator"]["spec"]["template"]["metadata"]["labels"]
    for role in ("generator", "verifier"):
        if not merged[role]["enabled"]:
            continue
        np = nps.get(f"{FULLNAME}-{role}")
        if not check(scen, np is not None, f"no NetworkPolicy for {role}"):
            continue
        grpc_rules = [r for r in np["spec"]["ingress"] if any(p["port"] == "grpc" for p in r["ports"])]
        if not check(scen, len(grpc_rules) == 1, f"{role}: {len(grpc_rules)} ingress rules for gRPC"):
            continue
        peers = grpc_rules[0].get("from", [])
        check(scen, bool(peers), f"{role}: gRPC open to everyone")
        for peer in peers:
            only_pods = set(peer) == {"podSelector"}  # same namespace, pods only
            check(scen, only_pods and matches(peer["podSelector"]["matchLabels"], orch_labels),
                  f"{role}: gRPC allowed from {peer}, not only this release's orchestrators")
    if merged["etcd"]["enabled"]:
        check(scen, f"{FULLNAME}-etcd" in nps, "no NetworkPolicy for etcd")


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
        check_no_literal_secrets(scen, docs)
        check_network_policy(scen, docs, merged)
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

    print(f"lint: {lint_runs} runs (strict; {len(lint_files)} values sets x {len(KUBE_VERSIONS)} Kubernetes versions)")
    print(f"bad values refused: {refused}/{len(BAD_VALUES)}")
    print("rendered:")
    print("\n".join(summary))
    print("kubernetes-validate (strict) documents validated per version: "
          + ", ".join(f"{kv[:-2]}: {counts.get(kv, 0)}" for kv in KUBE_VERSIONS))
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
