"""The README opens with the two commands, and documents every variable the code reads."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import gateway.settings
import worker.settings
from tandem_telemetry import ENV_VARS

README = (Path(__file__).parents[1] / "README.md").read_text()


def documented_variables() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README, re.MULTILINE))


def test_readme_opens_with_make_run_and_make_test() -> None:
    opening = "\n".join(README.splitlines()[:12])
    assert "make run" in opening and "make test" in opening


def test_every_variable_the_code_reads_is_in_the_readme_tables() -> None:
    read = set(ENV_VARS) | gateway.settings.ENV_VARS | worker.settings.ENV_VARS
    documented = documented_variables()
    assert read - documented == set(), "read by the code but not documented"
    assert documented - read == set(), "documented but read by nothing"


def test_readme_descriptions_of_telemetry_variables_match_the_code() -> None:
    for name, description in ENV_VARS.items():
        assert f"| `{name}` | {description} |" in README, (
            f"README's row for {name} differs from ENV_VARS"
        )


def test_every_module_in_the_request_path_diagram_exists() -> None:
    """The opening diagram names modules and functions; a rename must update it."""
    diagram = README.split("One request's path through the code", 1)[1].split("```", 2)[1]
    names = set(re.findall(r"\b((?:tandem_\w+|gateway|worker)(?:\.\w+)+)", diagram))
    assert len(names) >= 8, names
    for name in sorted(names):
        module_name, _, attribute = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            module = importlib.import_module(module_name)
            assert hasattr(module, attribute), f"README names {name}, which does not exist"
