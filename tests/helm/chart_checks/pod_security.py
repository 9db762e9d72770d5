"""Pod and container hardening, for every pod the chart renders: no host namespaces, no
service account token or service links, non-root, no privilege escalation, a read-only
root filesystem with a writable /tmp, all capabilities dropped, RuntimeDefault seccomp.
"""

from __future__ import annotations

from .base import check, pod_specs


def check_security(scen: str, docs: list[dict]) -> None:
    for ident, spec, volumes in pod_specs(docs):
        psc = spec.get("securityContext", {})
        check(scen, spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, f"{ident}: host namespaces")
        check(scen, spec.get("automountServiceAccountToken") is False, f"{ident}: service account token mounted")
        check(scen, spec.get("enableServiceLinks") is False, f"{ident}: service links enabled (they inject PONDER_* variables)")
        for c in spec.get("initContainers", []) + spec["containers"]:
            csc = c.get("securityContext", {})
            where = f"{ident} container {c['name']}"

            def eff(key):
                return csc.get(key, psc.get(key))

            check(scen, eff("runAsNonRoot") is True, f"{where}: runAsNonRoot not true")
            check(scen, eff("runAsUser") not in (0, None), f"{where}: runAsUser {eff('runAsUser')}")
            check(scen, eff("runAsGroup") != 0, f"{where}: runAsGroup 0")
            check(scen, csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation")
            check(scen, csc.get("privileged") is not True, f"{where}: privileged")
            check(scen, csc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem writable")
            check(scen, csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped")
            check(scen, not csc.get("capabilities", {}).get("add"), f"{where}: capabilities added")
            check(scen, (eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccomp not RuntimeDefault")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            check(scen, "/tmp" in mounts, f"{where}: no writable /tmp (root filesystem is read-only)")
            for m in c.get("volumeMounts", []):
                check(scen, m["name"] in volumes, f"{where}: mount {m['name']} has no volume")
