"""The values the chart is rendered with: the scenarios (the defaults, the example
values files, and overrides that switch the optional parts on and the secure defaults
off), and the bad values its schema must refuse.

Data, not checks: kept apart so that adding a scenario does not mean reading the
assertions.
"""

from __future__ import annotations

from .base import EXAMPLES, load_values_file


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
    out.update(group_scenarios())
    return out


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
    ({"generator": {"groups": [{"name": "a"}, {"name": "b"}]},
      "orchestrator": {"extraEnv": [{"name": "PONDER_EXPECT_MODEL", "value": "verifier=arith-prm,generator=a"}]}}, "PONDER_EXPECT_MODEL"),
]
