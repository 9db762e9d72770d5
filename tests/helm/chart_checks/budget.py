"""The orchestrator's load-adaptive budget settings (orchestrator.budget,
orchestrator.maxQueriesPerClient): PONDER_BUDGET_MODE, PONDER_SLO, PONDER_CAPACITY,
PONDER_MAX_QUERIES_PER_CLIENT and, when keys are named, PONDER_PRIORITY_KEYS reach the
orchestrator exactly as the values say, and no worker gets any of them.

Checked against the values of every scenario and, where a scenario has them, the
environment written out in scenarios.BUDGET_EXPECT.
"""

from __future__ import annotations

from .base import by_kind, check
from .scenarios import BUDGET_EXPECT
from .wiring import container_env

ENV_VARS = ("PONDER_MAX_QUERIES_PER_CLIENT", "PONDER_BUDGET_MODE", "PONDER_SLO", "PONDER_CAPACITY",
            "PONDER_PRIORITY_KEYS")


def number(v) -> str:
    """A number as the chart renders it (`toString`): 10 -> "10", 7.5 -> "7.5"."""
    return str(int(v)) if float(v).is_integer() else str(v)


def expected(merged: dict) -> dict[str, str]:
    o = merged["orchestrator"]
    b = o["budget"]
    want = {
        "PONDER_MAX_QUERIES_PER_CLIENT": str(o["maxQueriesPerClient"]),
        "PONDER_BUDGET_MODE": b["mode"],
        "PONDER_SLO": number(b["slo"]),
        "PONDER_CAPACITY": number(b["capacity"]),
    }
    if b["priorityKeys"]:
        want["PONDER_PRIORITY_KEYS"] = ",".join(b["priorityKeys"])
    return want


def check_budget(scen: str, docs: list[dict], merged: dict) -> None:
    want = expected(merged)
    if scen in BUDGET_EXPECT:
        check(scen, want == BUDGET_EXPECT[scen], f"budget: the values call for {want}, BUDGET_EXPECT has {BUDGET_EXPECT[scen]}")
    cms = by_kind(docs, "ConfigMap")
    for name, d in by_kind(docs, "Deployment").items():
        role = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = container_env(c, cms)
            got = {k: env[k].get("value") for k in ENV_VARS if k in env}
            if role == "orchestrator" and c["name"] == "orchestrator":
                check(scen, got == want, f"{name}: budget settings {got}, the values call for {want}")
            else:
                check(scen, not got, f"{name}: budget settings on a {role} container: {got}")
