"""skaffold.yaml is valid for skaffold/v4beta13, with every profile applied.

The schema is vendored in tests/k8s/data (see its README). jsonschema runs in
the tools venv (K8S_TOOLS_PYTHON), which keeps it out of the project's lock.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.k8s.conftest import DATA_DIR, run, skaffold_config, tool

SCHEMA = DATA_DIR / "skaffold-v4beta13.json"

VALIDATE = """
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
errors = []
for name, config in json.load(sys.stdin).items():
    for e in jsonschema.Draft7Validator(schema).iter_errors(config):
        errors.append(f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message[:300]}")
print(json.dumps(errors))
"""


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset of RFC 6902 skaffold profiles use here: add and replace."""
    config = copy.deepcopy(config)
    for patch in patches:
        op = patch.get("op", "replace")
        assert op in ("add", "replace"), f"unsupported patch op {op}"
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in patch["path"].split("/")[1:]
        ]
        node: Any = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            if last == "-":
                node.append(patch["value"])
            else:
                node.insert(int(last), patch["value"]) if op == "add" else node.__setitem__(
                    int(last), patch["value"]
                )
        else:
            assert op == "add" or last in node, f"replace of missing {patch['path']}"
            node[last] = patch["value"]
    return config


def profile_combinations() -> dict[str, dict[str, Any]]:
    """The base config, each profile alone, and dev+grafana in both orders."""
    base = skaffold_config()
    profiles = {p["name"]: p for p in base["profiles"]}
    configs = {"base": base}
    for name, profile in profiles.items():
        configs[name] = apply_patches(base, profile["patches"])
    configs["dev,grafana"] = apply_patches(configs["dev"], profiles["grafana"]["patches"])
    configs["grafana,dev"] = apply_patches(configs["grafana"], profiles["dev"]["patches"])
    return configs


def validate(configs: dict[str, Any]) -> list[str]:
    proc = run([tool("k8s-tools-python"), "-c", VALIDATE, str(SCHEMA)], input=json.dumps(configs))
    return json.loads(proc.stdout)


def test_skaffold_yaml_validates_against_v4beta13() -> None:
    configs = profile_combinations()
    assert configs["base"]["apiVersion"] == "skaffold/v4beta13"
    assert validate(configs) == []


def test_validation_catches_a_typo() -> None:
    bad = copy.deepcopy(skaffold_config())
    bad["deploy"]["helm"]["releases"][0]["chartpath"] = "charts/tandem"
    assert validate({"bad": bad})


@pytest.mark.parametrize("order", ["dev,grafana", "grafana,dev"])
def test_profiles_combine_in_any_order(order: str) -> None:
    release = profile_combinations()[order]["deploy"]["helm"]["releases"][0]
    assert release["setValueTemplates"]["grafana.enabled"] == "true"
    assert release["setValues"]["gateway.env.RELOAD"] == "true"
