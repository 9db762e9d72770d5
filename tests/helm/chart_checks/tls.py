"""The generated CA and certificate: an in-memory mTLS handshake proves the certificate
serves (and authenticates as a client for) every name clients and the orchestrator
dial; no pod mounts the CA key; the pods' checksum/tls follows the certificate.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import tempfile
import time
from pathlib import Path

from .base import FULLNAME, NAMESPACE, ROLES, by_kind, check, pod_specs, workloads
from .security_values import tls_generated, tls_secret, tls_server_name


def tls_handshake(ca: str, crt: str, key: str, server_name: str) -> str | None:
    """A mutual TLS handshake in memory: the server presents crt and requires a client
    certificate the CA signed; the client presents crt, trusts only the CA and checks
    server_name. OpenSSL checks the extended key usages (serverAuth for the server,
    clientAuth for the client). None on success, else the error."""
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, text in (("ca", ca), ("crt", crt), ("key", key)):
            paths[name] = Path(d) / f"{name}.pem"
            paths[name].write_text(text)
        srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv.load_cert_chain(paths["crt"], paths["key"])
        srv.load_verify_locations(paths["ca"])
        srv.verify_mode = ssl.CERT_REQUIRED
        cli = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cli.load_verify_locations(paths["ca"])
        cli.load_cert_chain(paths["crt"], paths["key"])
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = srv.wrap_bio(bios[0], bios[1], server_side=True)
    client = cli.wrap_bio(bios[2], bios[3], server_hostname=server_name)
    done = {"client": False, "server": False}
    try:
        for _ in range(20):
            for name, side in (("client", client), ("server", server)):
                if not done[name]:
                    try:
                        side.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
            bios[0].write(bios[3].read())
            bios[2].write(bios[1].read())
            if all(done.values()):
                # TLS 1.3: the server checks the client's certificate last; a refusal
                # reaches the client as an alert on its first read.
                client.write(b"ping")
                bios[0].write(bios[3].read())
                got = server.read(4)
                return None if got == b"ping" and server.getpeercert() else "no client certificate seen"
        return "handshake did not finish"
    except ssl.SSLError as e:
        return str(e)


def check_generated_tls(scen: str, docs: list[dict], merged: dict) -> None:
    """Without a TLS Secret of the user's: a CA Secret (no pod mounts it) and a certificate
    Secret whose certificate the CA signed, with serverAuth and clientAuth, naming the
    server name and every role's Service DNS names (an mTLS handshake per name proves it);
    the pods' checksum/tls matches that certificate (the Secret and the rollout agree)."""
    if not tls_generated(merged):
        return
    secrets = by_kind(docs, "Secret")
    ca_sec, tls_sec = secrets.get(f"{FULLNAME}-ca"), secrets.get(tls_secret(merged))
    if not (check(scen, ca_sec is not None, "no generated CA Secret") and check(scen, tls_sec is not None, "no generated TLS Secret")):
        return
    t = merged["tls"]
    dec = lambda sec, k: base64.b64decode((sec.get("data") or {}).get(k, "")).decode()  # noqa: E731
    ca, ca_key = dec(ca_sec, "ca.crt"), dec(ca_sec, "ca.key")
    crt, key, ca_copy = dec(tls_sec, t["certKey"]), dec(tls_sec, t["keyKey"]), dec(tls_sec, t["caKey"])
    check(scen, ca.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY-----" in ca_key, "CA Secret: not a PEM certificate and key")
    check(scen, crt.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY-----" in key, "TLS Secret: not a PEM certificate and key")
    check(scen, ca_copy == ca, f"TLS Secret: {t['caKey']} is not the generated CA")
    check(scen, ca_key not in (crt, key), "the CA key is in the certificate Secret")
    ann = tls_sec["metadata"].get("annotations", {})
    renew = int(ann.get("ponder/renew-after", "0"))
    days = t["generate"]["certDays"]
    check(scen, time.time() + days * 86400 / 2 < renew < time.time() + days * 86400, f"TLS Secret: renew-after {renew} is not two thirds into {days} days")
    check(scen, bool(ann.get("ponder/dns-names-sha256")), "TLS Secret: no ponder/dns-names-sha256 annotation")
    names = [tls_server_name(merged)]
    for role in ROLES:
        svc = f"{FULLNAME}-{role}"
        names += [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.{merged['clusterDomain']}"]
    names += ([merged["tests"]["tlsServerName"]] if merged["tests"]["tlsServerName"] else []) + t["generate"]["extraDnsNames"]
    for name in names:
        err = tls_handshake(ca, crt, key, name)
        check(scen, err is None, f"generated certificate: mTLS handshake as {name!r} failed: {err}")
    check(scen, tls_handshake(ca, crt, key, "not-in-the-certificate.example") is not None, "generated certificate: a name it lacks was accepted")
    want_sum = hashlib.sha256(crt.encode()).hexdigest()
    for ident, spec, _ in pod_specs(docs):
        for vol in spec.get("volumes", []):
            sec = vol.get("secret") or {}
            check(scen, sec.get("secretName") != f"{FULLNAME}-ca", f"{ident}: mounts the CA Secret (its key mints certificates)")
            check(scen, not any(it["key"] == "ca.key" for it in sec.get("items") or []), f"{ident}: mounts ca.key")
    for w in workloads(merged):
        dep = by_kind(docs, "Deployment").get(w["name"])
        if dep:
            got = dep["spec"]["template"]["metadata"]["annotations"].get("checksum/tls")
            check(scen, got == want_sum, f"{w['name']}: checksum/tls {got} is not the generated certificate's")
