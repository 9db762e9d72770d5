"""What the chart makes of the security values: the same defaults its templates apply
(the generated TLS Secret and server name, the bundled etcd's auth Secret, where the
roles' etcd credentials come from).

Several check modules need these answers; computing them once here keeps them from
drifting apart.
"""

from __future__ import annotations

from .base import FULLNAME


def tls_generated(merged: dict) -> bool:
    """TLS on with no Secret of the user's: the chart generates the CA and certificate."""
    return bool(merged["tls"]["enabled"] and not merged["tls"]["secretName"])


def tls_secret(merged: dict) -> str:
    return merged["tls"]["secretName"] or f"{FULLNAME}-tls"


def tls_server_name(merged: dict) -> str:
    return merged["tls"]["serverName"] or f"{FULLNAME}-worker"


def etcd_auth_bundled(merged: dict) -> bool:
    return bool(merged["etcd"]["enabled"] and merged["etcd"]["auth"]["enabled"])


def etcd_auth_secret(merged: dict) -> str:
    return merged["etcd"]["auth"]["secretName"] or f"{FULLNAME}-etcd-auth"


def etcd_creds(merged: dict) -> dict | None:
    """(secretName, userKey, passwordKey) the roles' PONDER_ETCD_USER/PASSWORD come from."""
    etcd = merged["etcd"]
    if etcd_auth_bundled(merged):
        return {"secretName": etcd_auth_secret(merged), "userKey": "username", "passwordKey": "password"}
    if not etcd["enabled"] and etcd["externalAuth"]["secretName"]:
        return etcd["externalAuth"]
    return None
