"""`helm upgrade` keeps what the chart generated: a copy of the chart whose `lookup`
calls read a first render's Secrets shows which upgrades keep the CA, certificate and
etcd passwords and which re-issue them.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import tempfile
from pathlib import Path

import helm_python as helm
import yaml

from .base import CHART, FULLNAME, NAMESPACE, RELEASE, check
from .security_values import tls_server_name
from .tls import tls_handshake


def check_upgrades_keep_generated() -> str:
    """`helm upgrade` keeps what the chart generated. The SDK renders without a cluster,
    where `lookup` finds nothing, so this renders a copy of the chart whose `lookup` calls
    read the Secrets of a first render from a value instead: the same values keep the CA,
    the certificate, the pods' checksum and the etcd passwords; new DNS names, a
    certificate past its renew-after or a missing CA Secret re-issue the certificate
    (signed by the kept CA, or a new one)."""
    scen = "upgrade (lookup)"
    pattern = re.compile(r'lookup "v1" "Secret" \.Release\.Namespace (\([^()]*\)|\$\w+)')
    with tempfile.TemporaryDirectory() as d:
        copy_dir = Path(d) / "ponder"
        shutil.copytree(CHART, copy_dir)
        replaced = 0
        for path in (copy_dir / "templates").rglob("*"):
            if path.suffix in (".yaml", ".tpl"):
                text, n = pattern.subn(r"index (.Values.fakeLookup | default dict) \1", path.read_text())
                replaced += n
                path.write_text(text)
        check(scen, replaced == 3, f"{replaced} lookup calls replaced, expected 3 (the CA, certificate and etcd Secrets)")
        schema = json.loads((copy_dir / "values.schema.json").read_text())
        schema["properties"]["fakeLookup"] = {"type": "object"}
        (copy_dir / "values.schema.json").write_text(json.dumps(schema))
        chart = helm.Chart.load(copy_dir)

        def up(values: dict, existing: dict[str, dict]) -> dict[str, dict]:
            out = chart.render({**values, "fakeLookup": existing}, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
            docs = [doc for p, text in out.items() if not p.endswith("NOTES.txt") for doc in yaml.safe_load_all(text) if doc]
            objs = {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}
            return objs

        ca, tls, auth = f"Secret/{FULLNAME}-ca", f"Secret/{FULLNAME}-tls", f"Secret/{FULLNAME}-etcd-auth"
        dep = f"Deployment/{FULLNAME}-generator"
        first = up({}, {})
        kept = {k: first[k] for k in (ca, tls, auth)}
        lookup = {v["metadata"]["name"]: v for v in kept.values()}
        pem = lambda objs, s, k: base64.b64decode(objs[s]["data"][k]).decode()  # noqa: E731
        checksum = lambda objs: objs[dep]["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]  # noqa: E731
        # The same values: nothing changes.
        second = up({}, lookup)
        for k in (ca, tls, auth):
            check(scen, second[k]["data"] == kept[k]["data"], f"{k} changed on an upgrade with the same values")
        check(scen, checksum(second) == checksum(first), "checksum/tls changed on an upgrade with the same values (the pods would roll)")
        # New names: a new certificate, the same CA, the new name in it.
        renamed = up({"tls": {"generate": {"extraDnsNames": ["new.example.com"]}}}, lookup)
        check(scen, renamed[ca]["data"] == kept[ca]["data"], "new DNS names replaced the CA")
        check(scen, renamed[tls]["data"]["tls.crt"] != kept[tls]["data"]["tls.crt"], "new DNS names did not re-issue the certificate")
        check(scen, checksum(renamed) != checksum(first), "a re-issued certificate does not roll the pods (checksum/tls unchanged)")
        err = tls_handshake(pem(first, ca, "ca.crt"), pem(renamed, tls, "tls.crt"), pem(renamed, tls, "tls.key"), "new.example.com")
        check(scen, err is None, f"the re-issued certificate, against the kept CA, as new.example.com: {err}")
        # Past renew-after: re-issued by the same CA.
        old = copy.deepcopy(lookup)
        old[f"{FULLNAME}-tls"]["metadata"]["annotations"]["ponder/renew-after"] = "1"
        renewed = up({}, old)
        check(scen, renewed[ca]["data"] == kept[ca]["data"] and renewed[tls]["data"]["tls.crt"] != kept[tls]["data"]["tls.crt"],
              "a certificate past renew-after was not re-issued by the same CA")
        # The CA Secret gone: a new CA and a certificate it signed.
        no_ca = {k: v for k, v in lookup.items() if k != f"{FULLNAME}-ca"}
        fresh = up({}, no_ca)
        check(scen, fresh[ca]["data"]["ca.crt"] != kept[ca]["data"]["ca.crt"], "a missing CA Secret was not regenerated")
        err = tls_handshake(pem(fresh, ca, "ca.crt"), pem(fresh, tls, "tls.crt"), pem(fresh, tls, "tls.key"), tls_server_name(chart.values))
        check(scen, err is None, f"after a new CA, the certificate does not verify against it: {err}")
    return "same values keep the CA, certificate and etcd passwords; new names, renew-after and a lost CA re-issue"
