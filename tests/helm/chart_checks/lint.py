"""helm lint through the Helm Go SDK: strict, once per Kubernetes version, for each
values set; any message of warning severity or above fails.
"""

from __future__ import annotations

import helm_python as helm

from .base import CHART, KUBE_VERSIONS, LINT_WARNING, check, fail


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
