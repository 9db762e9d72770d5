"""The objects each part runs as and how they are wired together: per role a
Deployment, Service, HPA and PDB that select its pods, gRPC health probes on the
health-only port, the role's ConfigMap; the etcd endpoints (the bundled StatefulSet or
the external one); the common labels; the helm test pod's target.
"""

from __future__ import annotations

from .base import FULLNAME, GRPC_SERVICE, NAMESPACE, RELEASE, ROLES, by_kind, check, matches, workloads


def check_roles(scen: str, docs: list[dict], merged: dict) -> None:
    """Per workload (each role; each generator group): its Deployment, HPA and PDB wired
    to its pods, the role's Service and ConfigMap, probes, ports, environment."""
    deps, svcs = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    hpas, pdbs = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "PodDisruptionBudget")
    cms = by_kind(docs, "ConfigMap")
    works = workloads(merged)
    for w in works:
        role, v, name = w["role"], w["values"], w["name"]
        role_name = f"{FULLNAME}-{role}"  # the role's Service and ConfigMap, shared by its groups
        if not v["enabled"]:
            for kind, objs in (("Deployment", deps), ("HPA", hpas), ("PDB", pdbs)):
                check(scen, name not in objs, f"{role} disabled but its {kind} {name} is rendered")
            check(scen, role_name not in svcs, f"{role} disabled but its Service is rendered")
            continue
        dep, svc = deps.get(name), svcs.get(role_name)
        if not (check(scen, dep is not None, f"no Deployment {name}") and check(scen, svc is not None, f"no Service {role_name}")):
            continue
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        sel = dep["spec"]["selector"]["matchLabels"]
        check(scen, matches(sel, pod_labels), f"{name}: selector does not match its pod labels")
        check(scen, sel.get("app.kubernetes.io/component") == role, f"{name}: selector is not role-specific: {sel}")
        # The role's Service selects every Deployment of the role (all generator groups).
        check(scen, matches(svc["spec"]["selector"], pod_labels), f"Service {role_name} selects {svc['spec']['selector']}, not the pods of {name}")
        check(scen, svc["spec"]["selector"].get("app.kubernetes.io/component") == role and "ponder.dev/group" not in svc["spec"]["selector"],
              f"Service {role_name} does not select on the role alone: {svc['spec']['selector']}")
        # Workload selectors must not overlap (roles, and generator groups among themselves).
        for other in works:
            od = deps.get(other["name"])
            if other["name"] != name and od:
                check(scen, not matches(sel, od["spec"]["template"]["metadata"]["labels"]), f"{name} selector matches the pods of {other['name']}")
        container = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == role)
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        check(scen, grpc_port == v["port"], f"{name}: grpc port {grpc_port} != {v['port']}")
        check(scen, any(p["targetPort"] == "grpc" and p["port"] == v["port"] for p in svc["spec"]["ports"]), f"Service {role_name} does not expose grpc")
        check(scen, container["command"] == [f"ponder-{role}"], f"{name}: command {container['command']}")
        # HPA (with autoscaling.mode keda a KEDA ScaledObject instead: monitoring.py)
        keda = v["autoscaling"].get("mode", "cpu") == "keda"
        if v["autoscaling"]["enabled"] and keda:
            check(scen, name not in hpas, f"HPA {name} rendered, but its autoscaling.mode is keda")
            check(scen, "replicas" not in dep["spec"], f"{name}: replicas set although KEDA owns them")
        elif v["autoscaling"]["enabled"]:
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
        else:
            check(scen, name not in pdbs, f"PDB {name} rendered with pdb disabled")
        # Probes: native gRPC health checks for the role's service name on the plaintext
        # health-only port (PONDER_HEALTH_LISTEN), TLS or not: kubelet cannot do TLS.
        health_port = merged["health"]["port"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        check(scen, ports.get("health") == health_port, f"{name}: container port health {ports.get('health')} != {health_port}")
        check(scen, health_port not in (grpc_port, ports.get("metrics")), f"{name}: health port {health_port} shared")
        check(scen, all(p["name"] != "health" for p in svc["spec"]["ports"]), f"Service {name} exposes the health-only port")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if check(scen, probe is not None, f"{name}: no {kind}"):
                check(scen, set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{name}: {kind} is not gRPC: {probe}")
                g = probe.get("grpc", {})
                check(scen, g.get("port") == health_port, f"{name}: {kind} port {g.get('port')} is not the health port {health_port}")
                check(scen, g.get("service") == GRPC_SERVICE[role], f"{name}: {kind} service {g.get('service')!r}")
        # The environment comes from the role's ConfigMap.
        refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
        check(scen, role_name in refs, f"{name}: envFrom {refs} lacks ConfigMap {role_name}")
        cm = cms.get(role_name, {}).get("data", {})
        check(scen, cm.get("PONDER_LISTEN", "").endswith(f":{v['port']}"), f"{name}: PONDER_LISTEN {cm.get('PONDER_LISTEN')}")
        host = "[::]" if merged["cluster"]["ipFamily"] == "IPv6" else "0.0.0.0"
        check(scen, cm.get("PONDER_HEALTH_LISTEN") == f"{host}:{health_port}", f"{name}: PONDER_HEALTH_LISTEN {cm.get('PONDER_HEALTH_LISTEN')}")
        env = {e["name"]: e for e in container.get("env", [])}
        check(scen, env.get("PONDER_ADVERTISE", {}).get("value", "").endswith(f":{v['port']}") and "$(POD_IP)" in env["PONDER_ADVERTISE"]["value"], f"{name}: PONDER_ADVERTISE {env.get('PONDER_ADVERTISE')}")
        if role != "orchestrator":
            check(scen, cm.get("PONDER_MODEL") == v["model"], f"{name}: PONDER_MODEL {cm.get('PONDER_MODEL')}")
            # A model of the manifest by name, only when one is given: the verifier's in
            # its ConfigMap, a generator group's in its pods (the ConfigMap is shared).
            got = cm.get("PONDER_MODEL_NAME") if role == "verifier" else env.get("PONDER_MODEL_NAME", {}).get("value")
            check(scen, got == (v.get("modelName") or None), f"{name}: PONDER_MODEL_NAME {got}")
            if role == "generator":
                check(scen, "PONDER_MODEL_NAME" not in cm, f"{role_name}: PONDER_MODEL_NAME in the ConfigMap every group shares")
        # Every envFrom/volume ConfigMap and PVC referenced exists in the release (or is given).
        for vol in dep["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in vol:
                check(scen, vol["configMap"]["name"] in cms, f"{name}: volume ConfigMap {vol['configMap']['name']} not rendered")
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                given = merged["models"]["pvc"]["existingClaim"]
                check(scen, claim == given or claim in by_kind(docs, "PersistentVolumeClaim"), f"{name}: claim {claim} neither given nor rendered")


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
        # Objects for the monitoring stack may go to its namespace (serviceMonitor.namespace,
        # metrics.prometheusRule.namespace, metrics.dashboard.namespace; monitoring.py and
        # validate.py check those).
        own_ns = d["kind"] in ("ServiceMonitor", "PrometheusRule") or (d["kind"], d["metadata"]["name"]) == ("ConfigMap", f"{FULLNAME}-dashboard")
        check(scen, d["metadata"].get("namespace") == NAMESPACE or own_ns, f"{d['kind']}/{d['metadata']['name']}: namespace")


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
