"""Schema validation of every rendered document: kubernetes-validate in strict mode
against each Kubernetes version, and by hand for the custom resources it has no schema
for (the ServiceMonitor here; the PrometheusRule and the KEDA ScaledObjects in
monitoring.py).
"""

from __future__ import annotations

import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

from .base import CRD_KINDS, FULLNAME, KUBE_VERSIONS, NAMESPACE, ROLES, by_kind, check, fail


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
