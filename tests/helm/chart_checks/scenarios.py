"""The values the chart is rendered with: the scenarios (the defaults, the example
values files, and overrides that switch the optional parts on and the secure defaults
off), and the bad values its schema must refuse.

Data, not checks: kept apart so that adding a scenario does not mean reading the
assertions.
"""

from __future__ import annotations

from .base import EXAMPLES, NAMESPACE, load_values_file


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
    # client certificate and a password, a moved health port, IPv6. No HTTP gateway: it
    # asks for no client certificate, so the chart refuses it with mTLS.
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
            "gateway": {"enabled": False},
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
    # The HTTP gateway switched off under the secure defaults, and moved (port, body
    # limit) on a plaintext IPv6 release with policies and API keys; checked by
    # gateway.py against GATEWAY_EXPECT.
    out["gateway:off"] = {"orchestrator": {"gateway": {"enabled": False}}}
    out["gateway:custom-port+ipv6+plaintext"] = {
        "orchestrator": {"gateway": {"port": 8443, "maxBodyBytes": 1048576}, "apiKeys": {"secretName": "ponder-api-keys"}},
        "tests": {"apiKey": {"secretName": "ponder-test-token"}},
        "tls": {"enabled": False},
        "cluster": {"ipFamily": "IPv6"},
    }
    # Load-adaptive budgets configured (the capacity law, priority keys, a per-client
    # limit) on two orchestrator replicas; checked by budget.py.
    out[BUDGET_SET] = {
        "orchestrator": {
            "maxQueriesPerClient": 0,
            "budget": {"mode": "fixed", "slo": 7.5, "capacity": 69, "priorityKeys": ["batch", "ops-team"]},
            "apiKeys": {"secretName": "ponder-api-keys"},
        },
        "tests": {"apiKey": {"secretName": "ponder-test-token"}},
    }
    out.update(group_scenarios())
    out.update(monitoring_scenarios())
    out.update(tracing_scenarios())
    return out


BUDGET_SET = "budget:capacity+priority+no-per-client-limit"

# What budget.py expects in the orchestrator's environment, written out by hand.
BUDGET_EXPECT = {
    "default": {"PONDER_MAX_QUERIES_PER_CLIENT": "32", "PONDER_BUDGET_MODE": "adaptive", "PONDER_SLO": "0",
                "PONDER_CAPACITY": "0"},
    BUDGET_SET: {"PONDER_MAX_QUERIES_PER_CLIENT": "0", "PONDER_BUDGET_MODE": "fixed", "PONDER_SLO": "7.5",
                 "PONDER_CAPACITY": "69", "PONDER_PRIORITY_KEYS": "batch,ops-team"},
}


# What gateway.py expects per scenario, written out by hand: None (no gateway), or
# PONDER_GATEWAY_ADDR, PONDER_GATEWAY_MAX_BODY_BYTES, the port (container, Service,
# NetworkPolicy) and the scheme it serves (https: the orchestrator has TLS).
GATEWAY_EXPECT = {
    "default": {"addr": "0.0.0.0:8080", "max_body": "262144", "port": 8080, "scheme": "https"},
    "init-models+fixed-replicas+servicemonitor": {"addr": "[::]:8080", "max_body": "262144", "port": 8080, "scheme": "https"},
    "opt-out:tls+networkpolicy+etcd-auth-off": {"addr": "0.0.0.0:8080", "max_body": "262144", "port": 8080, "scheme": "http"},
    "mtls+api-keys+rate-limit+etcd-tls-auth": None,
    "gateway:off": None,
    "gateway:custom-port+ipv6+plaintext": {"addr": "[::]:8443", "max_body": "1048576", "port": 8443, "scheme": "http"},
}


# sha256 of model.safetensors as models/manifest.json lists them (any 64 hex digits do).
SHA_XS = "4b24763dd9265953eb149bae1c84908a0eb38165007152cf507164d1dc2cbc45"
SHA_L = "32f305f51b926b18cd0215eac97c228c49748366f1274030e8ebfac52edf3062"
LADDER = "generator-groups:model-ladder"


def group_scenarios() -> dict[str, dict]:
    """Several generator models (generator.groups), under the secure defaults and under
    every security option; checked by generator_groups.py against GROUP_EXPECT."""
    out: dict[str, dict] = {}
    # The model ladder: per group its replicas, autoscaling (one off, one on memory),
    # resources and PDB; the smallest marked default.
    out[LADDER] = {
        "generator": {
            "groups": [
                {"name": "arith-gen-xs", "modelName": "arith-gen-xs", "default": True, "sha256": SHA_XS,
                 "autoscaling": {"minReplicas": 3, "maxReplicas": 12}},
                {"name": "arith-gen-s", "modelName": "arith-gen-s", "replicas": 3, "autoscaling": {"enabled": False},
                 "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}, "pdb": {"minAvailable": 2}},
                {"name": "arith-gen-l", "modelName": "arith-gen-l", "sha256": SHA_L,
                 "resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "8Gi"}},
                 "autoscaling": {"targetCPUUtilizationPercentage": None, "targetMemoryUtilizationPercentage": 80, "maxReplicas": 4},
                 "pdb": {"enabled": False}},
            ],
        },
    }
    # Two groups with every security option on (own TLS Secret, mTLS on the public port,
    # API keys, an external etcd over TLS with a password), models fetched by an init
    # container, generator.modelName inherited by a group that names none, and the
    # default model given on the orchestrator.
    out["generator-groups:mtls+external-etcd+init-models"] = {
        "tls": {"enabled": True, "secretName": "ponder-tls", "serverName": "ponder-worker", "clientAuth": "required"},
        "orchestrator": {"apiKeys": {"secretName": "ponder-api-keys"}, "defaultModel": "arith-gen", "gateway": {"enabled": False}},
        "tests": {"apiKey": {"secretName": "ponder-test-token"}},
        "etcd": {
            "enabled": False,
            "externalEndpoints": ["https://etcd.infra:2379"],
            "externalTls": {"secretName": "etcd-client", "certKey": "tls.crt", "keyKey": "tls.key"},
            "externalAuth": {"secretName": "etcd-auth"},
        },
        "models": {"source": "init", "init": {"command": ["sh", "-c", "fetch-models \"$MODELS_DIR\""]}},
        "generator": {
            "modelName": "arith-gen",
            "groups": [{"name": "main"}, {"name": "big", "modelName": "arith-gen-l", "autoscaling": {"enabled": False}, "replicas": 1}],
        },
    }
    # One group with its own name (not the single generator's names), verifier= and
    # generator= expectations (allowed with one group), policies without egress.
    out["generator-groups:one-named-group+expect-model"] = {
        "generator": {"groups": [{"name": "gen-a", "modelName": "arith-gen", "pdb": {"maxUnavailable": "50%"}}]},
        "orchestrator": {"extraEnv": [{"name": "PONDER_EXPECT_MODEL", "value": "generator=arith-gen,verifier=arith-prm"}]},
        "networkPolicy": {"egress": {"enabled": False}},
    }
    return out


# What generator_groups.py expects per scenario, written out by hand: Deployment suffix
# (after <fullname>-) -> model (None: no PONDER_MODEL_NAME), replicas (None: the HPA's),
# HPA (min, max, cpu target, memory target) or None, PDB spec or None, resources, sha256;
# and PONDER_DEFAULT_MODEL (None: unset).
DEFAULT_RESOURCES = {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
GROUP_EXPECT = {
    "default": {
        "deployments": {"generator": {"model": None, "replicas": None, "hpa": (2, 8, 70, None), "pdb": {"maxUnavailable": 1},
                                      "resources": DEFAULT_RESOURCES, "sha256": None}},
        "default_model": None,
    },
    LADDER: {
        "deployments": {
            "generator-arith-gen-xs": {"model": "arith-gen-xs", "replicas": None, "hpa": (3, 12, 70, None), "pdb": {"maxUnavailable": 1},
                                       "resources": DEFAULT_RESOURCES, "sha256": SHA_XS},
            "generator-arith-gen-s": {"model": "arith-gen-s", "replicas": 3, "hpa": None, "pdb": {"minAvailable": 2},
                                      "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}, "sha256": None},
            "generator-arith-gen-l": {"model": "arith-gen-l", "replicas": None, "hpa": (2, 4, None, 80), "pdb": None,
                                      "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}, "sha256": SHA_L},
        },
        "default_model": "arith-gen-xs",
    },
    "generator-groups:mtls+external-etcd+init-models": {
        "deployments": {
            "generator-main": {"model": "arith-gen", "replicas": None, "hpa": (2, 8, 70, None), "pdb": {"maxUnavailable": 1},
                               "resources": DEFAULT_RESOURCES, "sha256": None},
            "generator-big": {"model": "arith-gen-l", "replicas": 1, "hpa": None, "pdb": {"maxUnavailable": 1},
                              "resources": DEFAULT_RESOURCES, "sha256": None},
        },
        "default_model": "arith-gen",
    },
    "generator-groups:one-named-group+expect-model": {
        "deployments": {"generator-gen-a": {"model": "arith-gen", "replicas": None, "hpa": (2, 8, 70, None), "pdb": {"maxUnavailable": "50%"},
                                            "resources": DEFAULT_RESOURCES, "sha256": None}},
        "default_model": None,
    },
}


PROM = "http://prometheus-operated.monitoring.svc:9090"
MON_ALL = "monitoring:dashboard+rules+keda"
MON_GROUPS = "monitoring:keda-groups+some-rules"
MON_DEFAULTS = "monitoring:dashboard+rules-defaults"


def monitoring_scenarios() -> dict[str, dict]:
    """The dashboard, the PrometheusRule and KEDA autoscaling (metrics.dashboard,
    metrics.prometheusRule, <role>.autoscaling.mode, keda); checked by monitoring.py
    against MONITORING_EXPECT."""
    out: dict[str, dict] = {}
    # Everything on, with non-default names and thresholds: the dashboard in Grafana's
    # namespace under another sidecar label, every alert with other thresholds and extra
    # labels, generators and verifiers on KEDA (the verifiers with their own query),
    # a TriggerAuthentication and a fallback.
    out[MON_ALL] = {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "metrics": {
            "dashboard": {"enabled": True, "namespace": "grafana", "label": "grafana.example.com/dashboard",
                          "labelValue": "ponder", "annotations": {"grafana_folder": "Ponder"}},
            "prometheusRule": {
                "enabled": True, "namespace": "monitoring", "labels": {"release": "prometheus"}, "ruleLabels": {"team": "ml"},
                "sloBurn": {"latencySeconds": "16.384", "objective": 0.995, "burnRate": 6, "for": "15m", "severity": "page"},
                "highRefusals": {"fraction": 0.2, "for": "5m"},
                "queueSaturated": {"fraction": 0.5},
            },
        },
        "keda": {"serverAddress": PROM, "pollingInterval": 30,
                 "authenticationRef": {"name": "prometheus-auth", "kind": "ClusterTriggerAuthentication"},
                 "fallback": {"failureThreshold": 3, "replicas": 4}},
        "generator": {"maxQueued": 128, "autoscaling": {"mode": "keda", "minReplicas": 3, "maxReplicas": 20,
                                                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}},
        "verifier": {"autoscaling": {"mode": "keda", "keda": {"threshold": 12.5,
                                                              "query": 'sum(ponder_sequences{namespace="ml",role="verifier",state=~"running|waiting"})'}}},
    }
    # Generator groups: one on KEDA with its own threshold, one that stays on CPU, one
    # with a fixed size; no verifier (no PonderNoVerifiers, a generators-only queue
    # alert); two alerts off.
    out[MON_GROUPS] = {
        "keda": {"serverAddress": PROM},
        "generator": {
            "autoscaling": {"mode": "keda"},
            "groups": [
                {"name": "small", "modelName": "arith-gen-xs", "default": True, "autoscaling": {"keda": {"threshold": 8}, "maxReplicas": 10}},
                {"name": "small-cpu", "modelName": "arith-gen-s", "autoscaling": {"mode": "cpu"}},
                {"name": "large", "modelName": "arith-gen-l", "autoscaling": {"enabled": False}, "replicas": 2},
            ],
        },
        "verifier": {"enabled": False},
        "metrics": {"prometheusRule": {"enabled": True, "sloBurn": {"enabled": False}, "etcdLost": {"enabled": False}}},
    }
    # The dashboard and the alerts with their defaults, CPU autoscaling.
    out[MON_DEFAULTS] = {"metrics": {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}}
    return out


# What monitoring.py expects per scenario, written out by hand: the alerts of the
# PrometheusRule (None: no PrometheusRule), the ScaledObjects (Deployment suffix -> min,
# max, threshold), the HPAs (Deployment suffixes) and the dashboard's (namespace, label,
# value) or None. Scenarios not listed: no PrometheusRule, no dashboard, no ScaledObject.
ALL_ALERTS = ["PonderSLOBurn", "PonderHighRefusals", "PonderNoGenerators", "PonderNoVerifiers", "PonderEtcdLost", "PonderWorkerQueueSaturated"]
MONITORING_EXPECT = {
    MON_ALL: {
        "alerts": ALL_ALERTS,
        "scaled": {"generator": (3, 20, 32), "verifier": (1, 4, 12.5)},
        "hpas": ["orchestrator"],
        "dashboard": ("grafana", "grafana.example.com/dashboard", "ponder"),
    },
    MON_GROUPS: {
        "alerts": ["PonderHighRefusals", "PonderNoGenerators", "PonderWorkerQueueSaturated"],
        "scaled": {"generator-small": (2, 10, 8)},
        "hpas": ["generator-small-cpu", "orchestrator"],
        "dashboard": None,
    },
    MON_DEFAULTS: {
        "alerts": ALL_ALERTS,
        "scaled": {},
        "hpas": ["generator", "verifier", "orchestrator"],
        "dashboard": (NAMESPACE, "grafana_dashboard", "1"),
    },
}


OTLP = "http://otel-collector.observability:4317"
# The collector's pods in the observability namespace, as a NetworkPolicyPeer.
OTLP_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "opentelemetry-collector"}}}
TRACE_ANY = "tracing:otlp+groups"
TRACE_PEERS = "tracing:otlp-to-peers"
TRACE_HTTPS = "tracing:https-4318"
TRACE_HTTPS_DEFAULT_PORT = "tracing:https-default-port+ipv6"
TRACE_NO_EGRESS = "tracing:otlp+ingress-only-policies"
TRACE_PEERS_ONLY = "tracing:otlpTo-without-endpoint"


def tracing_scenarios() -> dict[str, dict]:
    """Trace export (tracing.otlpEndpoint: PONDER_OTLP_ENDPOINT on every role) and its
    egress rule (networkPolicy.otlpTo); checked by tracing.py against TRACING_EXPECT."""
    out: dict[str, dict] = {}
    # The collector over http://, any address may receive (otlpTo empty), with two
    # generator groups (both must get the variable and the rule).
    out[TRACE_ANY] = {
        "tracing": {"otlpEndpoint": OTLP},
        "generator": {"groups": [{"name": "small", "modelName": "arith-gen-xs", "default": True},
                                 {"name": "large", "modelName": "arith-gen-l"}]},
    }
    # The same collector, egress only to its pods; the secure defaults otherwise.
    out[TRACE_PEERS] = {"tracing": {"otlpEndpoint": OTLP}, "networkPolicy": {"otlpTo": [OTLP_PEER]}}
    # https:// with an explicit port (not the default 4317), an external etcd, no verifier.
    out[TRACE_HTTPS] = {
        "tracing": {"otlpEndpoint": "https://otel.example.com:4318"},
        "networkPolicy": {"otlpTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, OTLP_PEER]},
        "verifier": {"enabled": False},
        "etcd": {"enabled": False, "externalEndpoints": ["http://etcd.infra:2379"]},
    }
    # https:// without a port: 4317, like http://; an IPv6 release.
    out[TRACE_HTTPS_DEFAULT_PORT] = {"tracing": {"otlpEndpoint": "https://otel.example.com"}, "cluster": {"ipFamily": "IPv6"}}
    # Export on, egress policies off: the variable, no egress rule at all.
    out[TRACE_NO_EGRESS] = {"tracing": {"otlpEndpoint": OTLP}, "networkPolicy": {"egress": {"enabled": False}}}
    # otlpTo given but no endpoint: neither the variable nor the rule.
    out[TRACE_PEERS_ONLY] = {"networkPolicy": {"otlpTo": [OTLP_PEER]}}
    return out


# What tracing.py expects per scenario, written out by hand: None (no export: no
# PONDER_OTLP_ENDPOINT, no OTLP egress rule), or the endpoint, the rule's port (None: no
# rule, egress policies off) and its peers (None: any address).
TRACING_EXPECT = {
    "default": None,
    TRACE_ANY: {"endpoint": OTLP, "port": 4317, "to": None},
    TRACE_PEERS: {"endpoint": OTLP, "port": 4317, "to": [OTLP_PEER]},
    TRACE_HTTPS: {"endpoint": "https://otel.example.com:4318", "port": 4318, "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, OTLP_PEER]},
    TRACE_HTTPS_DEFAULT_PORT: {"endpoint": "https://otel.example.com", "port": 4317, "to": None},
    TRACE_NO_EGRESS: {"endpoint": OTLP, "port": None, "to": None},
    TRACE_PEERS_ONLY: None,
}


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
    # Tracing (tracing.otlpEndpoint, networkPolicy.otlpTo).
    ({"tracing": {"otlpEndpoint": "otel:4317"}}, "/tracing/otlpEndpoint"),
    ({"tracing": {"otlpEndpoint": 4317}}, "/tracing/otlpEndpoint"),
    ({"tracing": {"otlpEndpoint": "grpc://otel:4317"}}, "/tracing/otlpEndpoint"),
    ({"tracing": {"otlpEndpoint": "http://otel collector:4317"}}, "/tracing/otlpEndpoint"),
    ({"tracing": {"otlpEndpoint": "http://otel:70000"}}, "not a TCP port"),
    ({"tracing": {"endpoint": "http://otel:4317"}}, "additional"),
    ({"networkPolicy": {"otlpTo": "observability"}}, "/networkPolicy/otlpTo"),
    ({"networkPolicy": {"otlpTo": ["observability"]}}, "/networkPolicy/otlpTo/0"),
    ({"networkPolicy": {"egress": {"otlpTo": []}}}, "additional"),
    # Load-adaptive budgets.
    ({"orchestrator": {"budget": {"mode": "dynamic"}}}, "/orchestrator/budget/mode"),
    ({"orchestrator": {"budget": {"slo": "10s"}}}, "/orchestrator/budget/slo"),
    ({"orchestrator": {"budget": {"capacity": -1}}}, "minimum"),
    ({"orchestrator": {"budget": {"priorityKeys": ["a,b"]}}}, "/orchestrator/budget/priorityKeys/0"),
    ({"orchestrator": {"budget": {"law": "switch"}}}, "additional"),
    ({"orchestrator": {"maxQueriesPerClient": -1}}, "minimum"),
    # The HTTP gateway.
    ({"orchestrator": {"gateway": {"port": 0}}}, "minimum"),
    ({"orchestrator": {"gateway": {"port": "8080"}}}, "/orchestrator/gateway/port"),
    ({"orchestrator": {"gateway": {"enabled": "yes"}}}, "/orchestrator/gateway/enabled"),
    ({"orchestrator": {"gateway": {"maxBodyBytes": 512}}}, "minimum"),
    ({"orchestrator": {"gateway": {"tls": True}}}, "additional"),
    ({"orchestrator": {"gateway": {"port": 50051}}}, "orchestrator.gateway.port 50051"),
    ({"orchestrator": {"gateway": {"port": 9090}}}, "orchestrator.gateway.port 9090"),
    ({"tls": {"clientAuth": "required"}}, "tls.clientAuth=required"),
    ({"networkPolicy": {"egress": {"to": []}}}, "additional"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["http://etcd:2379"], "externalTls": {"secretName": "e"}}}, "use https://"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["https://etcd:2379"]}}, "externalTls.secretName"),
    ({"etcd": {"enabled": False, "externalEndpoints": ["https://etcd:2379"],
               "externalTls": {"secretName": "e", "certKey": "tls.crt"}}}, "certKey and keyKey"),
    ({"models": {"source": "init"}}, "models.init.command"),
    ({"etcd": {"replicas": 3, "persistence": {"enabled": False}}}, "persistence"),
    ({"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}}, "metrics.enabled"),
    ({"generator": {"resources": {"requests": {"cpu": None}}}}, "requests.cpu"),
    # Generator groups.
    ({"generator": {"groups": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}}, 'the name "a" is given twice'),
    ({"generator": {"groups": [{"name": "a", "sha256": "4B24763DD9265953"}]}}, "/generator/groups/0/sha256"),
    ({"generator": {"groups": [{"name": "a", "sha256": SHA_XS + "0"}]}}, "/generator/groups/0/sha256"),
    ({"generator": {"groups": [{"name": "Arith_Gen"}]}}, "/generator/groups/0/name"),
    ({"generator": {"groups": [{"modelName": "arith-gen"}]}}, "missing property 'name'"),
    ({"generator": {"groups": []}}, "minItems"),
    ({"generator": {"groups": [{"name": "a", "nodeSelector": {}}]}}, "additional"),
    ({"generator": {"groups": [{"name": "a", "modelName": "arith gen"}]}}, "/generator/groups/0/modelName"),
    ({"generator": {"groups": [{"name": "default"}, {"name": "b"}]}}, "give each its own name"),
    ({"generator": {"groups": [{"name": "a", "modelName": "x", "default": True}, {"name": "b", "modelName": "y", "default": True}]}}, "mark one"),
    ({"generator": {"groups": [{"name": "a", "default": True}]}}, "default: true needs the group's modelName"),
    ({"generator": {"groups": [{"name": "a", "modelName": "x", "default": True}]}, "orchestrator": {"defaultModel": "y"}}, "differs from"),
    ({"generator": {"groups": [{"name": "a", "autoscaling": {"minReplicas": 9}}]}}, 'generator.groups "a".autoscaling.minReplicas'),
    # Monitoring: the dashboard, the PrometheusRule, KEDA.
    ({"generator": {"autoscaling": {"mode": "keda"}}}, '"default".autoscaling.mode=keda needs keda.serverAddress'),
    ({"generator": {"groups": [{"name": "a", "autoscaling": {"mode": "keda"}}]}}, 'generator.groups "a".autoscaling.mode=keda needs keda.serverAddress'),
    ({"keda": {"serverAddress": "http://p:9090"}, "metrics": {"enabled": False}, "verifier": {"autoscaling": {"mode": "keda"}}}, "mode=keda needs metrics.enabled"),
    ({"verifier": {"autoscaling": {"mode": "hpa"}}}, "/verifier/autoscaling/mode"),
    ({"orchestrator": {"autoscaling": {"mode": "keda"}}}, "additional"),
    ({"verifier": {"autoscaling": {"keda": {"threshold": 0}}}}, "/verifier/autoscaling/keda/threshold"),
    ({"generator": {"groups": [{"name": "a", "autoscaling": {"keda": {"treshold": 4}}}]}}, "additional"),
    ({"keda": {"serverAddress": "prometheus:9090"}}, "/keda/serverAddress"),
    ({"keda": {"serverAddress": PROM}, "generator": {"autoscaling": {"mode": "keda", "keda": {"query": "sum(ponder_queue_depth)"}},
                                                  "groups": [{"name": "a"}, {"name": "b"}]}}, "scale on the same autoscaling.keda.query"),
    ({"keda": {"fallback": {"replicas": 2}}}, "failureThreshold"),
    ({"keda": {"authenticationRef": {"kind": "TriggerAuthentication"}}}, "name"),
    ({"metrics": {"enabled": False, "prometheusRule": {"enabled": True}}}, "metrics.prometheusRule.enabled needs metrics.enabled"),
    ({"metrics": {"enabled": False, "dashboard": {"enabled": True}}}, "metrics.dashboard.enabled needs metrics.enabled"),
    ({"metrics": {"prometheusRule": {"sloBurn": {"latencySeconds": "10"}}}}, "/metrics/prometheusRule/sloBurn/latencySeconds"),
    ({"metrics": {"prometheusRule": {"sloBurn": {"latencySeconds": 8.192}}}}, "/metrics/prometheusRule/sloBurn/latencySeconds"),
    ({"metrics": {"prometheusRule": {"sloBurn": {"objective": 1}}}}, "/metrics/prometheusRule/sloBurn/objective"),
    ({"metrics": {"prometheusRule": {"highRefusals": {"fraction": 0}}}}, "/metrics/prometheusRule/highRefusals/fraction"),
    ({"metrics": {"prometheusRule": {"etcdLost": {"for": "one minute"}}}}, "/metrics/prometheusRule/etcdLost/for"),
    ({"metrics": {"prometheusRule": {"noGenerators": {"threshold": 1}}}}, "additional"),
    ({"metrics": {"dashboard": {"label": "grafana dashboard"}}}, "/metrics/dashboard/label"),
    ({"metrics": {"prometheusRule": {"enabled": True, **{k: {"enabled": False} for k in
      ("sloBurn", "highRefusals", "noGenerators", "noVerifiers", "etcdLost", "queueSaturated")}}}}, "no alert applies"),
]
