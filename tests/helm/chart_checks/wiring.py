"""How the security settings reach the containers: every file a PONDER_* variable names
(TLS, etcd TLS, API keys, format, policy) is mounted read-only from the expected Secret
key or ConfigMap; TLS client-auth and server names, etcd credentials by secretKeyRef,
rate limits; and what the helm test pod gets as a client.

Also the helpers that resolve a container's environment and mounted files, which the
etcd auth checks use too.
"""

from __future__ import annotations

import json

from .base import FILE_VARS, by_kind, check, workloads
from .security_values import etcd_creds, tls_secret, tls_server_name


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
            out[var] = ("secret", tls_secret(merged), tls[key])
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
    etcd_auth = etcd_creds(merged)
    for w in workloads(merged):
        role = w["role"]
        dep = deps.get(w["name"])
        if not merged[role]["enabled"] or dep is None:
            continue
        spec = dep["spec"]["template"]["spec"]
        container = next(c for c in spec["containers"] if c["name"] == role)
        env = container_env(container, cms)
        check_files(scen, w["name"], container, spec, cms, env, expected_files(merged, role))
        val = lambda k: env.get(k, {}).get("value")  # noqa: E731
        # TLS: who is asked for a certificate, and the name the orchestrator expects.
        if tls["enabled"]:
            if role == "orchestrator":
                want_name = tls_server_name(merged)
                check(scen, val("PONDER_TLS_SERVER_NAME") == want_name,
                      f"orchestrator: PONDER_TLS_SERVER_NAME {val('PONDER_TLS_SERVER_NAME')!r}, expected {want_name!r}")
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
                check(scen, var not in env, f"{role}: {var} set without etcd.auth or etcd.externalAuth")
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
    secret = tls_secret(merged)
    if tls["enabled"]:
        want["PONDER_TLS_CA"] = ("secret", secret, tls["caKey"])
        if mtls:
            want["PONDER_TLS_CLIENT_CERT"] = ("secret", secret, tls["certKey"])
            want["PONDER_TLS_CLIENT_KEY"] = ("secret", secret, tls["keyKey"])
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
            if s and s.get("secretName") == secret:
                items = [it["key"] for it in s.get("items") or [{"key": "<the whole Secret>"}]]
                check(scen, items == [tls["caKey"]], f"test pod mounts {items} of {secret}, the CA only is needed")
    token = env.get("PONDER_TOKEN")
    if keys["secretName"]:
        ref = (merged["tests"]["apiKey"]["secretName"], merged["tests"]["apiKey"]["key"])
        check(scen, token is not None and token.get("secret") == ref, f"test pod: PONDER_TOKEN {token}, not secretKeyRef {ref}")
    else:
        check(scen, token is None, "test pod: PONDER_TOKEN set without orchestrator.apiKeys")
