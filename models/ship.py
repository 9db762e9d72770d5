#!/usr/bin/env python3
"""Ships trained models from a training work directory into models/ and rewrites
models/manifest.json: each model's files, parameter count (from the safetensors
header), training FLOPs (6 x parameters x every training token on its way, following
`init_from` back through the runs it started from) and the sha256 of every file the
engine reads. Standard library only.

    models/ship.py WORKDIR --generator NAME=RUN[:default] ... --verifier NAME=RUN ... \\
        [--policy VERIFIER=FILE ...] [--ladder-policy VERIFIER=FILE ...]

RUN is a directory under WORKDIR holding a finished run (config.json,
model.safetensors, tokenizer.json, train_state.json, train.log; a verifier also
prm.json). NAME is the directory it gets under models/. Exactly one generator must be
marked :default; the first verifier is the default one. A policy is fitted on one
verifier's scores, so it goes on that verifier's entry (`ponder eval --fit --verifier
NAME` writes policy.json, `--flops` ladder-policy.json); without --policy the default
verifier gets arith-policy.json and arith-ladder-policy.json. Models already in models/ that are not named are left on disk but
dropped from the manifest; delete them by hand. Descriptions come from --describe
NAME=TEXT, else from the run's shape and tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parent
ENGINE_FILES = ["config.json", "model.safetensors", "tokenizer.json"]
RECORD_FILES = ["train.log", "train_state.json"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parameters(weights: Path) -> int:
    with open(weights, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for d in t["shape"]:
            n *= d
        total += n
    return total


def tokens_on_the_way(run: Path) -> int:
    """Training tokens of `run` and of every run it was initialised from."""
    total, seen = 0, set()
    while run is not None and run.resolve() not in seen:
        seen.add(run.resolve())
        state_file = run / "train_state.json"
        if not state_file.is_file():
            print(f"warning: no train_state.json in {run}; its tokens are not counted", file=sys.stderr)
            break
        state = json.loads(state_file.read_text())
        total += int(state["tokens"])
        init = state.get("config", {}).get("init_from")
        run = Path(init) if init else None
    return total


def ship(work: Path, name: str, run: str, role: str, default: bool, describe: dict, kv_cache: str) -> dict:
    src = work / run
    files = ENGINE_FILES + (["prm.json"] if role == "verifier" else [])
    for f in files + RECORD_FILES:
        if not (src / f).is_file():
            sys.exit(f"{src} has no {f}: is the run finished?")
    dst = MODELS / name
    dst.mkdir(exist_ok=True)
    for f in files + RECORD_FILES:
        shutil.copyfile(src / f, dst / f)
    params = parameters(dst / "model.safetensors")
    tokens = tokens_on_the_way(src)
    cfg = json.loads((dst / "config.json").read_text())
    description = describe.get(name) or (
        f"Llama {cfg.get('hidden_size')}x{cfg.get('num_hidden_layers')}, character tokenizer; "
        f"{tokens / 1e6:.1f}M training tokens"
    )
    return {
        "name": name,
        "role": role,
        "dir": name,
        "parameters": params,
        "training_flops": 6.0 * params * tokens,
        "default": default,
        "description": description,
        "sha256": {f: sha256(dst / f) for f in files},
        "kv_cache": kv_cache,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--generator", action="append", default=[], metavar="NAME=RUN[:default]")
    ap.add_argument("--verifier", action="append", default=[], metavar="NAME=RUN")
    ap.add_argument("--describe", action="append", default=[], metavar="NAME=TEXT")
    ap.add_argument("--kv-cache", choices=["f32", "f16"], default="f16",
                    help="how nodes store every shipped model's KV cache (docs/engine.md, 'f16 KV cache')")
    ap.add_argument("--policy", action="append", default=[], metavar="VERIFIER=FILE")
    ap.add_argument("--ladder-policy", action="append", default=[], metavar="VERIFIER=FILE")
    a = ap.parse_args()
    describe = dict(d.split("=", 1) for d in a.describe)
    entries = []
    for spec in a.generator:
        name, run = spec.split("=", 1)
        default = run.endswith(":default")
        entries.append(ship(a.work, name, run.removesuffix(":default"), "generator", default, describe, a.kv_cache))
    for i, spec in enumerate(a.verifier):
        name, run = spec.split("=", 1)
        entries.append(ship(a.work, name, run, "verifier", i == 0, describe, a.kv_cache))
    if sum(e["default"] for e in entries if e["role"] == "generator") != 1:
        sys.exit("mark exactly one generator :default")
    verifiers = [e["name"] for e in entries if e["role"] == "verifier"]
    policies = {"policy": dict(p.split("=", 1) for p in a.policy),
                "ladder_policy": dict(p.split("=", 1) for p in a.ladder_policy)}
    if verifiers and not a.policy and not a.ladder_policy:
        policies = {"policy": {verifiers[0]: "arith-policy.json"},
                    "ladder_policy": {verifiers[0]: "arith-ladder-policy.json"}}
    for field, chosen in policies.items():
        for name, file in chosen.items():
            if name not in verifiers:
                sys.exit(f"--{field.replace('_', '-')} {name}={file}: {name} is not a shipped verifier ({', '.join(verifiers)})")
            next(e for e in entries if e["name"] == name)[field] = file
    # Policies are checked like weights before a node uses them.
    named = sorted({f for chosen in policies.values() for f in chosen.values()})
    missing = [f for f in named if not (MODELS / f).is_file()]
    if missing:
        sys.exit(f"policy file(s) not in {MODELS}: {', '.join(missing)}")
    manifest = {"format": 1, "models": entries, "sha256": {f: sha256(MODELS / f) for f in named}}
    (MODELS / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for e in entries:
        print(f"{e['name']:<16} {e['role']:<9} {e['parameters']:>10,} params  "
              f"{e['training_flops']:.3g} FLOPs{'  default' if e['default'] else ''}")
    print("wrote", MODELS / "manifest.json", "- check it with `ponder models`")


if __name__ == "__main__":
    main()
