"""Monitoring and autoscaling objects: the Grafana dashboard ConfigMap
(metrics.dashboard), the PrometheusRule (metrics.prometheusRule) and the KEDA
ScaledObjects (<role>.autoscaling.mode keda, keda.*), field by field.

Every ponder_* series the dashboard, the alerts and the KEDA queries name must be one
the services export: the names are derived from the registry in
services/cluster/src/metrics.rs (its r.register calls; counters get _total, histograms
_bucket, _sum and _count), so a renamed metric fails here. docs/metrics.md must name
every family too. Expectations per scenario are written out in
scenarios.MONITORING_EXPECT; the rest is computed from the values.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from .base import FULLNAME, NAMESPACE, ROOT, by_kind, check, fail, workloads
from .scenarios import ALL_ALERTS, MONITORING_EXPECT

METRICS_RS = ROOT / "services" / "cluster" / "src" / "metrics.rs"
ACCESS_RS = ROOT / "services" / "orchestrator" / "src" / "access" / "mod.rs"
METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARD_FILE = ROOT / "helm" / "ponder" / "files" / "dashboards" / "ponder.json"
SERIES = re.compile(r"\bponder_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(ponder_[a-z0-9_]+)\{([^}]*)\}")
ORCHESTRATOR_ALERTS = {"PonderSLOBurn", "PonderHighRefusals", "PonderNoGenerators", "PonderNoVerifiers", "PonderEtcdLost"}
# The dashboard's panels (by title) and a series each must query.
PANELS = {
    "Query rate by method": "ponder_requests_total",
    "Latency p50 / p99 by method": "ponder_request_duration_seconds_bucket",
    "Errors by code": "ponder_requests_total",
    "Refusals by reason": "ponder_refusals_total",
    "Generations per query": "ponder_query_generations_bucket",
    "Partial answers": "ponder_partial_answers_total",
    "Queue depth per pod": "ponder_queue_depth",
    "Running / waiting sequences": "ponder_sequences",
    "Batch size per pod": "ponder_batch_size",
    "Tokens/s by kind": "ponder_tokens_total",
    "Prefix-cache hit ratio": "ponder_prefix_cache_lookups_total",
    "Members by role and state": "ponder_members",
    "Retries and ejections": "ponder_ejections_total",
    "etcd watch up": "ponder_etcd_watch_up",
}


@lru_cache(maxsize=1)
def exported() -> dict[str, dict]:
    """Family name (ponder_<registered name>) -> {"type", "series", "buckets"} from the
    registry in metrics.rs: each r.register("name", "help", var.clone()) and the type of
    var's `let var = ...;` (Counter, Gauge or Histogram, and the bucket constructor)."""
    text = METRICS_RS.read_text()
    lets = {m.group(1): m.group(2) for m in re.finditer(r"let\s+(\w+)\s*=\s*(.*?);", text, re.S)}
    buckets = {}
    for m in re.finditer(r"fn\s+(\w+)\(\)\s*->\s*Histogram\s*\{\s*Histogram::new\(exponential_buckets\(([^,]+),\s*([^,]+),\s*(\d+)\)\)", text):
        start, factor, n = float(m.group(2)), float(m.group(3)), int(m.group(4))
        buckets[m.group(1)] = [repr(start * factor ** k) for k in range(n)]
    out = {}
    for m in re.finditer(r'r\.register\(\s*"([a-z0-9_]+)",\s*"[^"]*",\s*(\w+)\.clone\(\)', text):
        name, var = f"ponder_{m.group(1)}", m.group(2)
        decl = lets.get(var, "")
        if "Histogram" in decl:
            ctor = next((b for f, b in buckets.items() if f in decl), [])
            out[name] = {"type": "histogram", "series": {f"{name}_bucket", f"{name}_sum", f"{name}_count"}, "buckets": ctor}
        elif "Counter" in decl:
            out[name] = {"type": "counter", "series": {f"{name}_total"}, "buckets": []}
        elif "Gauge" in decl:
            out[name] = {"type": "gauge", "series": {name}, "buckets": []}
        else:
            out[name] = {"type": "unknown", "series": set(), "buckets": []}
    return out


def series_names() -> set[str]:
    return {s for f in exported().values() for s in f["series"]}


def gate_reasons() -> set[str]:
    """The refusal reasons of the access gate (Gate::admit in access/mod.rs): refused
    before the handler runs, so absent from ponder_requests_total."""
    text = ACCESS_RS.read_text()
    m = re.search(r"fn admit\(.*?\n    }\n", text, re.S)
    return set(re.findall(r'refused\("([a-z_]+)"', m.group(0))) if m else set()


def check_registry() -> None:
    """Once per run: the registry parses, and docs/metrics.md names every family."""
    fams = exported()
    check("metrics", len(fams) >= 20, f"only {len(fams)} families parsed from {METRICS_RS}")
    for name, f in fams.items():
        check("metrics", f["type"] != "unknown", f"{name}: type not found in metrics.rs")
        if f["type"] == "histogram":
            check("metrics", bool(f["buckets"]), f"{name}: bucket constructor not found in metrics.rs")
    check("metrics", gate_reasons() == {"peer_rate_limited", "unauthenticated", "rate_limited"},
          f"Gate::admit refuses for {sorted(gate_reasons())}; update PonderHighRefusals' denominator (prometheusrule.yaml) and this check")
    doc = METRICS_DOC.read_text() if METRICS_DOC.exists() else ""
    check("metrics", bool(doc), "docs/metrics.md is missing")
    for name, f in fams.items():
        shown = name + ("_total" if f["type"] == "counter" else "")
        check("metrics", f"`{shown}`" in doc, f"docs/metrics.md does not list {shown}")
    dash = json.loads(DASHBOARD_FILE.read_text())
    check("metrics", dash.get("uid") and dash.get("title"), "files/dashboards/ponder.json: no uid or title")


def check_series(scen: str, where: str, text: str) -> None:
    """Every ponder_* name in text is a series the services export."""
    known = series_names()
    for name in sorted(set(SERIES.findall(text))):
        check(scen, name in known, f"{where}: {name} is not a series of services/cluster/src/metrics.rs")


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    close = {")": "(", "}": "{", "]": "["}
    quoted = False
    for c in expr:
        if c == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif c in depth:
            depth[c] += 1
        elif c in close:
            depth[close[c]] -= 1
            if depth[close[c]] < 0:
                return False
    return not quoted and all(v == 0 for v in depth.values())


def pod_regex(expr: str) -> str | None:
    m = re.search(r'pod=~"([^"]+)"', expr)
    return m.group(1) if m else None


def check_pod_regex(scen: str, where: str, regex: str | None, deployment: str, others: list[str]) -> None:
    """The regex matches the pods of Deployment `deployment` (<name>-<hash>-<suffix>) and
    none of the pods of the other Deployments (anchored, as PromQL anchors =~)."""
    if not check(scen, regex is not None, f"{where}: no pod=~ matcher"):
        return
    rx = re.compile(f"^(?:{regex})$")
    check(scen, bool(rx.match(f"{deployment}-7d4b9c8f5-x2k7q")), f"{where}: pod regex {regex!r} misses the pods of {deployment}")
    for o in others:
        check(scen, not rx.match(f"{o}-7d4b9c8f5-x2k7q"), f"{where}: pod regex {regex!r} matches the pods of {o}")


def check_monitoring(scen: str, docs: list[dict], merged: dict) -> None:
    check_dashboard(scen, docs, merged)
    check_prometheus_rule(scen, docs, merged)
    check_scaled_objects(scen, docs, merged)


def check_dashboard(scen: str, docs: list[dict], merged: dict) -> None:
    d = merged["metrics"]["dashboard"]
    name = f"{FULLNAME}-dashboard"
    cms = [x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == name]
    exp = MONITORING_EXPECT.get(scen, {}).get("dashboard")
    check(scen, bool(cms) == d["enabled"], f"dashboard ConfigMap rendered: {bool(cms)}, metrics.dashboard.enabled: {d['enabled']}")
    check(scen, (exp is not None) == d["enabled"], f"MONITORING_EXPECT dashboard {exp} disagrees with metrics.dashboard.enabled")
    if not cms:
        return
    cm = cms[0]
    meta = cm["metadata"]
    check(scen, meta["namespace"] == (d["namespace"] or NAMESPACE), f"dashboard namespace {meta['namespace']}")
    check(scen, meta["labels"].get(d["label"]) == d["labelValue"], f"dashboard label {d['label']}={meta['labels'].get(d['label'])!r}, expected {d['labelValue']!r}")
    if exp:
        check(scen, (meta["namespace"], d["label"], meta["labels"].get(d["label"])) == exp, f"dashboard (namespace, label, value) {(meta['namespace'], d['label'], meta['labels'].get(d['label']))}, expected {exp}")
    check(scen, meta["labels"].get("app.kubernetes.io/instance") and meta["labels"].get("app.kubernetes.io/component") == "metrics", f"dashboard labels {meta['labels']}")
    for k, v in d["annotations"].items():
        check(scen, meta["annotations"].get(k) == v, f"dashboard annotation {k}={meta['annotations'].get(k)!r}")
    check(scen, list(cm.get("data", {})) == ["ponder.json"], f"dashboard data keys {list(cm.get('data', {}))}")
    try:
        dash = json.loads(cm["data"]["ponder.json"])
    except (KeyError, json.JSONDecodeError) as e:
        fail(scen, f"dashboard ponder.json does not parse: {e}")
        return
    check(scen, dash == json.loads(DASHBOARD_FILE.read_text()), "dashboard ConfigMap differs from files/dashboards/ponder.json")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    check(scen, ds.get("type") == "datasource" and ds.get("query") == "prometheus", f"dashboard variable datasource: {ds}")
    nsv = variables.get("namespace", {})
    check(scen, nsv.get("type") == "query" and nsv.get("datasource", {}).get("uid") == "${datasource}", f"dashboard variable namespace: {nsv}")
    check_series(scen, "dashboard variable namespace", json.dumps(nsv.get("query", "")))
    panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
    ids = [p["id"] for p in dash.get("panels", [])]
    check(scen, len(ids) == len(set(ids)), f"dashboard panel ids repeat: {ids}")
    by_title = {p["title"]: p for p in panels}
    for title, series in PANELS.items():
        p = by_title.get(title)
        if check(scen, p is not None, f"dashboard: no panel {title!r}"):
            exprs = " ".join(t["expr"] for t in p.get("targets", []))
            check(scen, series in exprs, f"dashboard panel {title!r} does not query {series}: {exprs}")
    for p in panels:
        where = f"dashboard panel {p['title']!r}"
        check(scen, p.get("datasource", {}).get("uid") == "${datasource}", f"{where}: datasource {p.get('datasource')}")
        check(scen, bool(p.get("targets")), f"{where}: no queries")
        for t in p.get("targets", []):
            expr = t["expr"]
            check(scen, t.get("datasource", {}).get("uid") == "${datasource}", f"{where}: target datasource {t.get('datasource')}")
            check(scen, balanced(expr), f"{where}: unbalanced {expr}")
            check_series(scen, where, expr)
            for metric, sel in SELECTOR.findall(expr):
                check(scen, 'namespace="$namespace"' in sel, f"{where}: {metric}{{{sel}}} does not select namespace=\"$namespace\"")


def expected_alerts(merged: dict) -> list[str]:
    r = merged["metrics"]["prometheusRule"]
    orch = merged["orchestrator"]["enabled"]
    on = {
        "PonderSLOBurn": orch and r["sloBurn"]["enabled"],
        "PonderHighRefusals": orch and r["highRefusals"]["enabled"],
        "PonderNoGenerators": orch and merged["generator"]["enabled"] and r["noGenerators"]["enabled"],
        "PonderNoVerifiers": orch and merged["verifier"]["enabled"] and r["noVerifiers"]["enabled"],
        "PonderEtcdLost": orch and r["etcdLost"]["enabled"],
        "PonderWorkerQueueSaturated": r["queueSaturated"]["enabled"] and (merged["generator"]["enabled"] or merged["verifier"]["enabled"]),
    }
    return [a for a in ALL_ALERTS if on[a]]


RULE_KEY = {"PonderSLOBurn": "sloBurn", "PonderHighRefusals": "highRefusals", "PonderNoGenerators": "noGenerators",
            "PonderNoVerifiers": "noVerifiers", "PonderEtcdLost": "etcdLost", "PonderWorkerQueueSaturated": "queueSaturated"}


def check_prometheus_rule(scen: str, docs: list[dict], merged: dict) -> None:
    r = merged["metrics"]["prometheusRule"]
    rules_docs = [d for d in docs if d["kind"] == "PrometheusRule"]
    exp = MONITORING_EXPECT.get(scen, {}).get("alerts")
    check(scen, len(rules_docs) == (1 if r["enabled"] else 0), f"{len(rules_docs)} PrometheusRules, metrics.prometheusRule.enabled: {r['enabled']}")
    check(scen, (exp is not None) == r["enabled"], f"MONITORING_EXPECT alerts {exp} disagree with metrics.prometheusRule.enabled")
    if not rules_docs:
        return
    pr = rules_docs[0]
    meta = pr["metadata"]
    check(scen, pr["apiVersion"] == "monitoring.coreos.com/v1", f"PrometheusRule apiVersion {pr['apiVersion']}")
    check(scen, meta["name"] == FULLNAME and meta["namespace"] == (r["namespace"] or NAMESPACE), f"PrometheusRule {meta['namespace']}/{meta['name']}")
    for k, v in r["labels"].items():
        check(scen, meta["labels"].get(k) == v, f"PrometheusRule label {k}")
    check(scen, meta["labels"].get("app.kubernetes.io/component") == "metrics", f"PrometheusRule labels {meta['labels']}")
    check(scen, set(pr["spec"]) == {"groups"} and len(pr["spec"]["groups"]) == 1, f"PrometheusRule spec {list(pr['spec'])}")
    group = pr["spec"]["groups"][0]
    check(scen, set(group) == {"name", "rules"} and group["name"], f"PrometheusRule group keys {set(group)}")
    rules = group.get("rules") or []
    alerts = [x.get("alert") for x in rules]
    want = expected_alerts(merged)
    check(scen, alerts == want, f"PrometheusRule alerts {alerts}, expected from the values {want}")
    if exp is not None:
        check(scen, alerts == exp, f"PrometheusRule alerts {alerts}, MONITORING_EXPECT {exp}")
    for rule in rules:
        name = rule.get("alert")
        cfg = r.get(RULE_KEY.get(name, ""), {})
        where = f"PrometheusRule {name}"
        check(scen, set(rule) == {"alert", "expr", "for", "labels", "annotations"}, f"{where}: keys {set(rule)}")
        check(scen, rule.get("for") == cfg.get("for"), f"{where}: for {rule.get('for')!r}, expected {cfg.get('for')!r}")
        check(scen, rule.get("labels") == {"severity": cfg.get("severity"), **r["ruleLabels"]}, f"{where}: labels {rule.get('labels')}")
        ann = rule.get("annotations", {})
        check(scen, set(ann) == {"summary", "description"} and all(isinstance(v, str) and v.strip() for v in ann.values()), f"{where}: annotations {ann}")
        check_series(scen, f"{where} annotations", " ".join(ann.values()))
        expr = rule.get("expr", "")
        check(scen, balanced(expr), f"{where}: unbalanced expression {expr}")
        check_series(scen, where, expr)
        for metric, sel in SELECTOR.findall(expr):
            check(scen, f'namespace="{NAMESPACE}"' in sel, f"{where}: {metric}{{{sel}}} does not select namespace {NAMESPACE}")
        check_rule_expr(scen, where, name, expr, cfg, merged)


def check_rule_expr(scen: str, where: str, name: str, expr: str, cfg: dict, merged: dict) -> None:
    flat = " ".join(expr.split())
    if name == "PonderSLOBurn":
        le = cfg["latencySeconds"]
        check(scen, le in exported()["ponder_request_duration_seconds"]["buckets"], f"{where}: latencySeconds {le} is not a bucket bound of ponder_request_duration_seconds")
        for window in ("1h", "5m"):
            check(scen, flat.count(f'le="{le}"}}[{window}]') == 1 and flat.count(f'method="Solve"}}[{window}]') == 1,
                  f"{where}: no {window} window of bucket le={le} over the Solve count: {flat}")
        check(scen, 'role="orchestrator",method="Solve",le=' in flat, f"{where}: not the orchestrators' Solve bucket: {flat}")
        check(scen, flat.count(f"> ({cfg['burnRate']} * (1 - {cfg['objective']}))") == 2 and " and " in flat,
              f"{where}: both windows must compare with burnRate x (1 - objective): {flat}")
    elif name == "PonderHighRefusals":
        gate = "|".join(sorted(gate_reasons()))
        m = re.search(r'reason=~"([^"]+)"', flat)
        check(scen, m is not None and "|".join(sorted(m.group(1).split("|"))) == gate, f"{where}: the gate's reasons {gate} not in the denominator: {flat}")
        check(scen, 'ponder_requests_total{namespace="ml",role="orchestrator"}' in flat and flat.endswith(f"> {cfg['fraction']}"), f"{where}: {flat}")
    elif name in ("PonderNoGenerators", "PonderNoVerifiers"):
        role = "generator" if name == "PonderNoGenerators" else "verifier"
        sel = f'ponder_members{{namespace="{NAMESPACE}",role="{role}",state="ready"}}'
        check(scen, flat == f"sum by (namespace, pod) ({sel}) == 0 or absent({sel})", f"{where}: {flat}")
    elif name == "PonderEtcdLost":
        check(scen, flat.startswith("ponder_etcd_watch_up{") and flat.endswith("== 0"), f"{where}: {flat}")
        others = [w["name"] for w in workloads(merged) if w["role"] != "orchestrator"]
        check_pod_regex(scen, where, pod_regex(flat), f"{FULLNAME}-orchestrator", others)
    elif name == "PonderWorkerQueueSaturated":
        parts = [p.strip() for p in expr.split("\nor\n")]
        want = [f'ponder_queue_depth{{namespace="{NAMESPACE}",role="{role}"}} > ({cfg["fraction"]} * {merged[role]["maxQueued"]})'
                for role in ("generator", "verifier") if merged[role]["enabled"]]
        check(scen, parts == want, f"{where}: {parts}, expected {want}")


def check_scaled_objects(scen: str, docs: list[dict], merged: dict) -> None:
    sos, hpas, deps = by_kind(docs, "ScaledObject"), by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "Deployment")
    exp = MONITORING_EXPECT.get(scen)
    works = workloads(merged)
    keda = merged["keda"]
    want_so = {}
    for w in works:
        a = w["values"]["autoscaling"]
        if w["values"]["enabled"] and a["enabled"] and a.get("mode", "cpu") == "keda":
            want_so[w["name"]] = w
    check(scen, set(sos) == set(want_so), f"ScaledObjects {sorted(sos)}, expected {sorted(want_so)}")
    for name in sos:
        check(scen, name not in hpas, f"{name}: both a ScaledObject and an HPA")
    if exp is not None:
        check(scen, set(sos) == {f"{FULLNAME}-{s}" for s in exp["scaled"]}, f"ScaledObjects {sorted(sos)}, MONITORING_EXPECT {sorted(exp['scaled'])}")
        check(scen, set(hpas) == {f"{FULLNAME}-{s}" for s in exp["hpas"]}, f"HPAs {sorted(hpas)}, MONITORING_EXPECT {sorted(exp['hpas'])}")
    else:
        check(scen, not sos, f"ScaledObjects {sorted(sos)} in a scenario without KEDA")
    for name, so in sos.items():
        w = want_so.get(name)
        if w is None:
            continue
        a, where = w["values"]["autoscaling"], f"ScaledObject {name}"
        check(scen, so["apiVersion"] == "keda.sh/v1alpha1", f"{where}: apiVersion {so['apiVersion']}")
        check(scen, so["metadata"]["namespace"] == NAMESPACE, f"{where}: namespace {so['metadata']['namespace']}")
        dep = deps.get(name)
        if check(scen, dep is not None, f"{where}: no Deployment {name}"):
            check(scen, so["metadata"]["labels"] == dep["metadata"]["labels"], f"{where}: labels {so['metadata']['labels']} differ from the Deployment's")
            check(scen, "replicas" not in dep["spec"], f"{name}: replicas set although KEDA owns them")
        spec = so["spec"]
        check(scen, set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "fallback", "advanced", "triggers"},
              f"{where}: spec keys {set(spec)}")
        check(scen, spec.get("scaleTargetRef") == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, f"{where}: scaleTargetRef {spec.get('scaleTargetRef')}")
        check(scen, (spec.get("minReplicaCount"), spec.get("maxReplicaCount")) == (a["minReplicas"], a["maxReplicas"]),
              f"{where}: replicas {spec.get('minReplicaCount')}-{spec.get('maxReplicaCount')}, autoscaling {a['minReplicas']}-{a['maxReplicas']}")
        check(scen, spec.get("pollingInterval") == keda["pollingInterval"], f"{where}: pollingInterval {spec.get('pollingInterval')}")
        check(scen, spec.get("fallback") == (keda["fallback"] or None), f"{where}: fallback {spec.get('fallback')}")
        want_adv = {"horizontalPodAutoscalerConfig": {"behavior": a["behavior"]}} if a.get("behavior") else None
        check(scen, spec.get("advanced") == want_adv, f"{where}: advanced {spec.get('advanced')}, expected {want_adv}")
        triggers = spec.get("triggers") or []
        if not check(scen, len(triggers) == 1, f"{where}: {len(triggers)} triggers"):
            continue
        t = triggers[0]
        check(scen, t.get("type") == "prometheus" and t.get("metricType") == "AverageValue", f"{where}: trigger {t.get('type')}/{t.get('metricType')}")
        md = t.get("metadata", {})
        check(scen, set(md) == {"serverAddress", "query", "threshold"}, f"{where}: trigger metadata keys {set(md)}")
        check(scen, md.get("serverAddress") == keda["serverAddress"], f"{where}: serverAddress {md.get('serverAddress')}")
        thr = md.get("threshold")
        check(scen, isinstance(thr, str) and float(thr) == float(a["keda"]["threshold"]), f"{where}: threshold {thr!r}, expected {a['keda']['threshold']}")
        if exp is not None:
            lo, hi, th = exp["scaled"].get(name[len(FULLNAME) + 1:], (None, None, None))
            check(scen, (spec.get("minReplicaCount"), spec.get("maxReplicaCount"), float(thr or 0)) == (lo, hi, th),
                  f"{where}: (min, max, threshold) {(spec.get('minReplicaCount'), spec.get('maxReplicaCount'), thr)}, MONITORING_EXPECT {(lo, hi, th)}")
        query = md.get("query", "")
        check_series(scen, where, query)
        check(scen, balanced(query), f"{where}: unbalanced query {query}")
        if a["keda"].get("query"):
            check(scen, query == a["keda"]["query"], f"{where}: query {query!r}, expected the override {a['keda']['query']!r}")
        else:
            check(scen, re.fullmatch(r'sum\(ponder_queue_depth\{namespace="' + NAMESPACE + r'",role="' + w["role"] + r'",pod=~"[^"]+"\}\)', query) is not None,
                  f"{where}: default query {query!r}")
            others = [o["name"] for o in works if o["name"] != name]
            check_pod_regex(scen, where, pod_regex(query), name, others)
        ref = t.get("authenticationRef")
        want_ref = ({"name": keda["authenticationRef"]["name"], **({"kind": keda["authenticationRef"]["kind"]} if keda["authenticationRef"].get("kind") else {})}
                    if keda["authenticationRef"].get("name") else None)
        check(scen, ref == want_ref, f"{where}: authenticationRef {ref}, expected {want_ref}")
