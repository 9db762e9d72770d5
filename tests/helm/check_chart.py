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
   to it, and each generator group (generator.groups) its own Deployment, HPA and PDB
   with its model, the role's Service and NetworkPolicy selecting every group's pods; probes are native gRPC health checks on the plaintext health-only port; no
   container runs as root (and all are hardened); the etcd endpoints the services get
   are the bundled etcd or the external one; every file a PONDER_* variable names
   (TLS, etcd TLS, API keys, format, policy) is mounted from the expected Secret key or
   ConfigMap; workers require client certificates and the orchestrator gets
   PONDER_TLS_SERVER_NAME with TLS; the generated certificate completes an mTLS
   handshake against the generated CA for every name clients and the orchestrator dial,
   and no pod mounts the CA key; the bundled etcd's auth container gets its passwords by
   secretKeyRef and gates the pod's readiness; each Ponder pod is selected by exactly
   one NetworkPolicy that admits exactly the expected flows (only the orchestrator's
   client ports, gRPC and the HTTP gateway's, may admit any source); the gateway
   (orchestrator.gateway) gets its address, body limit, container, Service and policy
   port, HTTPS exactly with TLS, or none of them when off; the load-adaptive budget
   settings (orchestrator.budget, maxQueriesPerClient) reach the orchestrator only,
   as the values say; trace export
   (tracing.otlpEndpoint) gives every role's pods (each generator group's too)
   PONDER_OTLP_ENDPOINT and, with egress policies, an egress rule to the collector's
   port towards networkPolicy.otlpTo (any address when empty), and the defaults
   neither; the Grafana dashboard
   ConfigMap (its sidecar label, JSON that parses, the expected panels), the
   PrometheusRule (each alert's expression, for, labels and annotations, per the roles
   and values) and the KEDA ScaledObjects (per generator group and the verifier:
   target, replicas, trigger, and no HPA beside them), with every ponder_* series they
   name checked against the registry in services/cluster/src/metrics.rs (and listed in
   docs/metrics.md); the chart renders only the Secrets it generates,
   secrets reach pods only through secretKeyRef or Secret volumes, and no generated
   password or key is a literal anywhere else; the helm test pod gets the CA, a client
   certificate only when needed, and the API key; the schema covers every value and
   rejects bad ones.
5. Run the etcd auth script against a real etcd (when etcd and curl are on PATH), and
   simulate upgrades (lookup fed with a first render's Secrets): generated certificates
   and passwords survive an upgrade and are re-issued only when they must be.

Run: .venv/helm/bin/python tests/helm/check_chart.py  (from the repository root; .ci/run does).
Exit status 0 when everything passes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import helm_python as helm
import kubernetes_validate

# The checks live in chart_checks/ next to this file. Running the file puts its directory
# on sys.path already; this keeps the import working under -P / PYTHONSAFEPATH too.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chart_checks.budget import check_budget  # noqa: E402
from chart_checks.base import CHART, EXAMPLES, FAILURES, KUBE_VERSIONS, deep_merge, fail, load_values_file  # noqa: E402
from chart_checks.etcd_auth import check_etcd_auth, run_auth_script  # noqa: E402
from chart_checks.gateway import check_gateway  # noqa: E402
from chart_checks.generator_groups import check_generator_groups  # noqa: E402
from chart_checks.lint import lint_all  # noqa: E402
from chart_checks.monitoring import check_monitoring, check_registry, exported, series_names  # noqa: E402
from chart_checks.literal_secrets import check_no_literal_secrets  # noqa: E402
from chart_checks.network_policy import check_network_policy  # noqa: E402
from chart_checks.pod_security import check_security  # noqa: E402
from chart_checks.render import check_notes, render  # noqa: E402
from chart_checks.scenarios import BAD_VALUES, LADDER, MON_ALL, scenarios  # noqa: E402
from chart_checks.schema import check_schema  # noqa: E402
from chart_checks.tls import check_generated_tls  # noqa: E402
from chart_checks.tracing import check_tracing  # noqa: E402
from chart_checks.upgrades import check_upgrades_keep_generated  # noqa: E402
from chart_checks.validate import check_crds, validate_docs  # noqa: E402
from chart_checks.wiring import check_security_wiring, check_test_pod_security  # noqa: E402
from chart_checks.workloads import check_etcd, check_labels, check_roles, check_test_hook  # noqa: E402


def main() -> int:
    t0 = time.time()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}")
    chart = helm.Chart.load(CHART)
    defaults = chart.values
    schema = chart.schema or {}

    # Schema: covers every value, strict objects, refuses bad values.
    refused = check_schema(chart, defaults, schema)

    # The metric families of services/cluster/src/metrics.rs, which the dashboard, the
    # alerts and the KEDA queries are checked against; docs/metrics.md lists them all.
    check_registry()

    # Lint: default values and each example file, every Kubernetes version.
    lint_files = {"default": {}}
    lint_files.update({f"examples/{p.name}": load_values_file(p) for p in sorted(EXAMPLES.glob("values-*.yaml"))})
    lint_files[LADDER] = scenarios()[LADDER]
    lint_files[MON_ALL] = scenarios()[MON_ALL]
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
        check_generator_groups(scen, docs, merged, notes)
        check_gateway(scen, docs, merged, notes)
        check_budget(scen, docs, merged)
        check_tracing(scen, docs, merged)
        check_monitoring(scen, docs, merged)
        if scen == "default":
            default_docs = docs
        check_crds(scen, docs, values)
        check_notes(scen, notes, merged)
        kinds: dict[str, int] = {}
        for d in docs:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        summary.append(f"  {scen}: {len(docs)} documents ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")

    auth_script = run_auth_script(default_docs) if default_docs else "skipped (the default values did not render)"
    upgrades = check_upgrades_keep_generated()
    print(f"lint: {lint_runs} runs (strict; {len(lint_files)} values sets x {len(KUBE_VERSIONS)} Kubernetes versions)")
    print(f"bad values refused: {refused}/{len(BAD_VALUES)}")
    print(f"metric families (services/cluster/src/metrics.rs): {len(exported())}, {len(series_names())} series names")
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
