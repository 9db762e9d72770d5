#!/usr/bin/env python3
"""Composes a verifier ensemble from models already in models/ and adds it to
models/manifest.json (other entries untouched). Standard library only.

    models/ensemble.py NAME --primary VERIFIER --member SUBDIR=MODEL ... \\
        [--combine product|min] [--chain product|min|none] [--describe TEXT] [--default]

The ensemble's directory gets the primary verifier's engine files and prm.json, and
each member's config.json and model.safetensors under SUBDIR/ (members read with the
primary's tokenizer). prm.json then names the members, how their readings of a step
combine and how the combined readings chain (docs/engine.md, "Verifier ensembles").
The entry hashes every file the engine loads, members included, and counts the
parameters and training FLOPs of all of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ship import ENGINE_FILES, MODELS, sha256

MEMBER_FILES = ["config.json", "model.safetensors"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--primary", required=True, help="a verifier of the manifest")
    ap.add_argument("--member", action="append", required=True, metavar="SUBDIR=MODEL")
    ap.add_argument("--combine", choices=["product", "min"], default="product")
    ap.add_argument("--chain", choices=["product", "min", "none"], default=None,
                    help="default: the primary's")
    ap.add_argument("--describe", default="")
    ap.add_argument("--default", action="store_true", help="make it the default verifier")
    a = ap.parse_args()

    manifest_path = MODELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    by_name = {m["name"]: m for m in manifest["models"]}
    primary = by_name.get(a.primary)
    if primary is None or primary["role"] != "verifier":
        sys.exit(f"{a.primary} is not a verifier of {manifest_path}")
    dst = MODELS / a.name
    if dst.resolve() == (MODELS / primary["dir"]).resolve():
        sys.exit("the ensemble needs a directory of its own")
    dst.mkdir(exist_ok=True)
    src = MODELS / primary["dir"]
    for f in ENGINE_FILES + ["prm.json"]:
        shutil.copyfile(src / f, dst / f)
    prm = json.loads((dst / "prm.json").read_text())
    files = ENGINE_FILES + ["prm.json"]
    parameters, training_flops = primary["parameters"], primary["training_flops"]
    members = []
    for spec in a.member:
        sub, model = spec.split("=", 1)
        m = by_name.get(model)
        if m is None or "/" in sub or sub in ("", ".", ".."):
            sys.exit(f"--member {spec}: SUBDIR must be a plain name and MODEL a model of the manifest")
        (dst / sub).mkdir(exist_ok=True)
        for f in MEMBER_FILES:
            shutil.copyfile(MODELS / m["dir"] / f, dst / sub / f)
            files.append(f"{sub}/{f}")
        members.append(sub)
        parameters += m["parameters"]
        training_flops += m["training_flops"]
    prm["members"] = members
    prm["combine"] = a.combine
    if a.chain is not None:
        prm["chain"] = a.chain
    (dst / "prm.json").write_text(json.dumps(prm, indent=2) + "\n")

    entry = {
        "name": a.name,
        "role": "verifier",
        "dir": a.name,
        "parameters": parameters,
        "training_flops": training_flops,
        "default": a.default,
        "description": a.describe or (
            f"verifier ensemble: {a.primary} and {', '.join(a.member)}, readings combined by {a.combine}"
        ),
        "sha256": {f: sha256(dst / f) for f in files},
    }
    if "kv_cache" in primary:  # served as the primary is (docs/engine.md, "f16 KV cache")
        entry["kv_cache"] = primary["kv_cache"]
    models = [m for m in manifest["models"] if m["name"] != a.name]
    if a.default:
        for m in models:
            if m["role"] == "verifier":
                m["default"] = False
    manifest["models"] = models + [entry]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{a.name}: {parameters:,} parameters, {len(files)} files hashed; wrote {manifest_path}")


if __name__ == "__main__":
    main()
