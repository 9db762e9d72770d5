"""Renders the chart as `helm install` would (Helm SDK, no cluster) into documents and
NOTES.txt, and checks what NOTES.txt tells the user.
"""

from __future__ import annotations

import helm_python as helm
import yaml

from .base import FULLNAME, NAMESPACE, RELEASE, check


def render(chart: helm.Chart, values: dict) -> tuple[list[dict], str]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs, notes


def check_notes(scen: str, notes: str, merged: dict) -> None:
    """NOTES.txt says how to call the orchestrator, with TLS flags exactly when TLS is on
    and the PONDER_TOKEN hint exactly when API keys are."""
    check(scen, f"{FULLNAME}-orchestrator" in notes and "port-forward" in notes, "NOTES.txt does not say how to call the orchestrator")
    if merged["tls"]["enabled"]:
        check(scen, "--tls-ca" in notes and "-plaintext" not in notes, "NOTES.txt: TLS on, but the commands are plaintext")
    else:
        check(scen, "--tls-ca" not in notes, "NOTES.txt: TLS flags with TLS off")
    check(scen, ("PONDER_TOKEN" in notes) == bool(merged["orchestrator"]["apiKeys"]["secretName"]), "NOTES.txt: PONDER_TOKEN hint does not follow orchestrator.apiKeys")
