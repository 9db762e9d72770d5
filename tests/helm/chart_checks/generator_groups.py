"""Generator groups (generator.groups): one Deployment, HPA and PDB per group, each with
its model (PONDER_MODEL_NAME, the labels ponder.dev/group and ponder.dev/model, the
annotation ponder.dev/model-sha256) and its own selector; the role's Service,
NetworkPolicies and the orchestrator's egress still select every group's pods; the
orchestrator's PONDER_DEFAULT_MODEL; NOTES.txt names each group. The default values
render the single generator of before: <fullname>-generator, selected by the role alone.

check_roles (workloads.py) wires each group like any role; this module checks what is
particular to groups, against the chart-independent view of base.workloads and, where a
scenario has them, the expectations written out in scenarios.GROUP_EXPECT.
"""

from __future__ import annotations

from .base import FULLNAME, RELEASE, by_kind, check, matches, workloads
from .scenarios import GROUP_EXPECT

# The generator Deployment's selector before groups (chart 0.3): selectors are immutable,
# so the default group must keep it for `helm upgrade` to update the Deployment in place.
LEGACY_SELECTOR = {"app.kubernetes.io/name": "ponder", "app.kubernetes.io/instance": RELEASE,
                   "app.kubernetes.io/component": "generator"}


def _container(dep: dict) -> dict:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "generator")


def _env(dep: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in _container(dep).get("env", [])}


def check_generator_groups(scen: str, docs: list[dict], merged: dict, notes: str) -> None:
    deps, hpas, pdbs = by_kind(docs, "Deployment"), by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "PodDisruptionBudget")
    cms, svcs, nps = by_kind(docs, "ConfigMap"), by_kind(docs, "Service"), by_kind(docs, "NetworkPolicy")
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    gen_deps = {n for n, lab in pod_labels.items() if lab.get("app.kubernetes.io/component") == "generator"}
    groups = [w for w in workloads(merged) if w["role"] == "generator"]
    if not merged["generator"]["enabled"]:
        check(scen, not gen_deps, f"generator disabled, but generator Deployments {sorted(gen_deps)} are rendered")
        return
    check(scen, gen_deps == {w["name"] for w in groups},
          f"generator Deployments {sorted(gen_deps)}, expected one per group: {sorted(w['name'] for w in groups)}")
    if scen == "default":
        # The single generator of before, by name and selector.
        dep = deps.get(f"{FULLNAME}-generator")
        check(scen, gen_deps == {f"{FULLNAME}-generator"}, f"default values: generator Deployments {sorted(gen_deps)}, not the one {FULLNAME}-generator")
        check(scen, dep is not None and dep["spec"]["selector"] == {"matchLabels": LEGACY_SELECTOR},
              f"default values: the generator's selector changed (immutable; helm upgrade would fail): {dep and dep['spec']['selector']}")
        for kind, objs in (("HPA", hpas), ("PDB", pdbs)):
            check(scen, f"{FULLNAME}-generator" in objs, f"default values: no {kind} {FULLNAME}-generator")
    for w in groups:
        dep = deps.get(w["name"])
        if dep is None:
            continue
        v, where = w["values"], w["name"]
        sel = dep["spec"]["selector"]["matchLabels"]
        if w["legacy"]:
            check(scen, sel == LEGACY_SELECTOR, f"{where}: the group \"default\" must keep the generator's selector, has {sel}")
        else:
            check(scen, sel == {**LEGACY_SELECTOR, "ponder.dev/group": w["group"]}, f"{where}: selector {sel} is not the role's plus ponder.dev/group")
        # Labels of every object of the group and of its pods.
        objs = [("Deployment", dep), ("pod template", dep["spec"]["template"]), ("HPA", hpas.get(where)), ("PDB", pdbs.get(where))]
        for kind, obj in objs:
            if obj is None:
                continue
            labels = obj["metadata"]["labels"]
            check(scen, labels.get("ponder.dev/group") == w["group"], f"{where} {kind}: ponder.dev/group {labels.get('ponder.dev/group')!r}")
            check(scen, labels.get("ponder.dev/model") == (v["modelName"] or None), f"{where} {kind}: ponder.dev/model {labels.get('ponder.dev/model')!r}, model {v['modelName']!r}")
            check(scen, labels.get("app.kubernetes.io/component") == "generator", f"{where} {kind}: not labelled as a generator")
        env = _env(dep)
        check(scen, env.get("PONDER_MODEL_NAME") == (v["modelName"] or None), f"{where}: PONDER_MODEL_NAME {env.get('PONDER_MODEL_NAME')!r}")
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        check(scen, ann.get("ponder.dev/model-sha256") == (w["sha256"] or None), f"{where}: ponder.dev/model-sha256 {ann.get('ponder.dev/model-sha256')!r}")
        check(scen, _container(dep).get("resources") == v["resources"], f"{where}: resources {_container(dep).get('resources')} != {v['resources']}")
        # Its PDB counts its pods only (its HPA scales its Deployment, whose selector
        # check_roles keeps apart from the other groups').
        pdb = pdbs.get(where)
        for other in sorted(gen_deps - {where}) if pdb else []:
            check(scen, not matches(pdb["spec"]["selector"]["matchLabels"], pod_labels[other]), f"PDB {where} counts the pods of {other}")
        # The role's Service and NetworkPolicy, and the orchestrator's egress, reach it.
        svc = svcs.get(f"{FULLNAME}-generator")
        check(scen, svc is not None and matches(svc["spec"]["selector"], pod_labels[where]), f"Service {FULLNAME}-generator does not select the pods of {where}")
        if merged["networkPolicy"]["enabled"]:
            np = nps.get(f"{FULLNAME}-generator")
            check(scen, np is not None and matches(np["spec"]["podSelector"]["matchLabels"], pod_labels[where]),
                  f"NetworkPolicy {FULLNAME}-generator does not select the pods of {where}")
            orch = nps.get(f"{FULLNAME}-orchestrator")
            if merged["networkPolicy"]["egress"]["enabled"] and orch is not None:
                peers = [p["podSelector"]["matchLabels"] for r in orch["spec"].get("egress", []) for p in r.get("to", []) if "podSelector" in p]
                check(scen, any(matches(p, pod_labels[where]) for p in peers if p.get("app.kubernetes.io/component") == "generator"),
                      f"NetworkPolicy {FULLNAME}-orchestrator: egress does not reach the pods of {where}")
        check(scen, f"deployment/{where}" in notes, f"NOTES.txt: no rollout status for {where}")
    # The orchestrator's default model.
    orch_cm = cms.get(f"{FULLNAME}-orchestrator", {}).get("data", {})
    if merged["orchestrator"]["enabled"]:
        want = merged["orchestrator"]["defaultModel"] or next((w["values"]["modelName"] for w in groups if w["default"]), "") or None
        check(scen, orch_cm.get("PONDER_DEFAULT_MODEL") == want, f"orchestrator: PONDER_DEFAULT_MODEL {orch_cm.get('PONDER_DEFAULT_MODEL')!r}, expected {want!r}")
        # Every group's and the verifier's model, only when all are named.
        gen_names = [w["values"]["modelName"] for w in groups] if merged["generator"]["enabled"] else []
        ver_name = merged["verifier"]["modelName"] if merged["verifier"]["enabled"] else None
        named = all(gen_names) and (ver_name is None or bool(ver_name))
        ids = [f"generator={n}" for n in dict.fromkeys(gen_names)] + ([f"verifier={ver_name}"] if ver_name else [])
        want_expect = ",".join(ids) if named and ids else None
        check(scen, orch_cm.get("PONDER_EXPECT_MODEL") == want_expect,
              f"orchestrator: PONDER_EXPECT_MODEL {orch_cm.get('PONDER_EXPECT_MODEL')!r}, expected {want_expect!r}")
        if len(groups) > 1:
            check(scen, (want is None) == ("no default" in notes), "NOTES.txt: the several-models hint does not follow the default model")
    check_expectations(scen, deps, hpas, pdbs, orch_cm)


def check_expectations(scen: str, deps: dict, hpas: dict, pdbs: dict, orch_cm: dict) -> None:
    """What GROUP_EXPECT writes out for the scenario, object by object."""
    exp = GROUP_EXPECT.get(scen)
    if exp is None:
        return
    gen = {n for n, d in deps.items() if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "generator"}
    want_names = {f"{FULLNAME}-{s}" for s in exp["deployments"]}
    check(scen, gen == want_names, f"generator Deployments {sorted(gen)}, GROUP_EXPECT has {sorted(want_names)}")
    for suffix, e in exp["deployments"].items():
        name = f"{FULLNAME}-{suffix}"
        dep = deps.get(name)
        if dep is None:
            continue
        check(scen, _env(dep).get("PONDER_MODEL_NAME") == e["model"], f"{name}: PONDER_MODEL_NAME {_env(dep).get('PONDER_MODEL_NAME')!r}, expected {e['model']!r}")
        check(scen, dep["spec"].get("replicas") == e["replicas"], f"{name}: replicas {dep['spec'].get('replicas')}, expected {e['replicas']}")
        check(scen, _container(dep).get("resources") == e["resources"], f"{name}: resources {_container(dep).get('resources')}, expected {e['resources']}")
        ann = dep["spec"]["template"]["metadata"]["annotations"].get("ponder.dev/model-sha256")
        check(scen, ann == e["sha256"], f"{name}: ponder.dev/model-sha256 {ann!r}, expected {e['sha256']!r}")
        hpa = hpas.get(name)
        if e["hpa"] is None:
            check(scen, hpa is None, f"HPA {name} rendered, autoscaling is off for it")
        elif check(scen, hpa is not None, f"no HPA {name}"):
            lo, hi, cpu, mem = e["hpa"]
            targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
            got = (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"], targets.get("cpu"), targets.get("memory"))
            check(scen, got == e["hpa"], f"HPA {name}: (min, max, cpu, memory) {got}, expected {(lo, hi, cpu, mem)}")
        pdb = pdbs.get(name)
        if e["pdb"] is None:
            check(scen, pdb is None, f"PDB {name} rendered, its pdb is off")
        elif check(scen, pdb is not None, f"no PDB {name}"):
            got = {k: v for k, v in pdb["spec"].items() if k != "selector"}
            check(scen, got == e["pdb"], f"PDB {name}: {got}, expected {e['pdb']}")
    check(scen, orch_cm.get("PONDER_DEFAULT_MODEL") == exp["default_model"],
          f"orchestrator: PONDER_DEFAULT_MODEL {orch_cm.get('PONDER_DEFAULT_MODEL')!r}, expected {exp['default_model']!r}")
