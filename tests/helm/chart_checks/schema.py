"""values.schema.json: it describes every key of values.yaml, its objects refuse
unknown keys, the defaults pass it, and it refuses each of the bad values (with the
expected message).
"""

from __future__ import annotations

import json

import helm_python as helm

from .base import NAMESPACE, RELEASE, check, fail
from .scenarios import BAD_VALUES


def schema_covers_values(values: dict, schema: dict) -> list[str]:
    """Every key of values.yaml is described by the schema (properties, via $ref)."""
    defs = schema.get("definitions", {})

    def resolve(node):
        while "$ref" in node or ("allOf" in node and len(node["allOf"]) == 1):
            node = defs[node["$ref"].split("/")[-1]] if "$ref" in node else node["allOf"][0]
        return node

    missing = []

    def walk(val, node, path):
        node = resolve(node)
        if not isinstance(val, dict):
            return
        props = node.get("properties")
        if props is None:
            return  # a free-form object (Kubernetes passthrough, labels)
        for k, sub in val.items():
            if k not in props:
                missing.append(f"{path}{k}")
            else:
                walk(sub, props[k], f"{path}{k}.")

    walk(values, schema, "")
    return missing


def check_schema_strictness(schema: dict) -> list[str]:
    """Objects with declared properties refuse unknown keys."""
    loose = []

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path or "<root>")
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    return loose


def check_schema(chart: helm.Chart, defaults: dict, schema: dict) -> int:
    """Runs the schema checks; returns how many of BAD_VALUES were refused."""
    for key in schema_covers_values(defaults, schema):
        fail("schema", f"values.yaml key {key} is not in values.schema.json")
    for path in check_schema_strictness(schema):
        fail("schema", f"{path} allows unknown keys")
    try:
        chart.validate_schema(defaults)
    except helm.HelmError as e:
        fail("schema", f"the default values do not pass the schema: {e}")
    refused = 0
    for bad, needle in BAD_VALUES:
        try:
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)
            fail("bad values", f"{json.dumps(bad)} was accepted")
        except helm.HelmError as e:
            refused += 1
            check("bad values", needle in str(e), f"{json.dumps(bad)} refused, but the message lacks {needle!r}: {e}")
    return refused
