"""The results file and what reads it: one direction of flow, and the report again byte for
byte from the saved run. Nothing here measures."""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path

import pytest

from benchmarks.render import render
from benchmarks.results import FORMAT, RESULTS, load

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "benchmarks"
DOCS = REPO / "docs"


def _imports(module: Path) -> set[str]:
    """The benchmarks modules `module` imports, by name ("render" for benchmarks.render)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")}
    return found


def _is_section(module: Path) -> bool:
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "SECTION" for t in node.targets)
        for node in ast.parse(module.read_text()).body
    )


def test_no_module_imports_the_renderer_and_the_renderer_reaches_no_section() -> None:
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    imports = {name: _imports(path) for name, path in modules.items()}
    sections = {name for name, path in modules.items() if _is_section(path)}
    assert {"harness", "overload", "micro"} <= sections
    assert [name for name, found in imports.items() if "render" in found] == []
    assert not reached_from("render") & sections
    assert reached_from("render") == {"results"}


def reached_from(module: str) -> set[str]:
    """The benchmarks modules `module` imports, and those they import, and so on."""
    imports = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    reached, todo = set(), [module]
    while todo:
        for name in imports[todo.pop()] - reached:
            reached.add(name)
            todo.append(name)
    return reached


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_the_saved_run_renders_the_committed_report_byte_for_byte(tmp_path: Path) -> None:
    render(load(RESULTS), tmp_path)
    assert (tmp_path / "benchmarks.md").read_bytes() == (DOCS / "benchmarks.md").read_bytes()
    for chart in ("benchmarks.png", "benchmarks-overload.png"):
        assert _png_size(tmp_path / chart) == _png_size(DOCS / chart), chart


def test_an_older_results_file_is_refused_with_the_command_that_upgrades_it(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"size": {}, "trivial": []}))
    with pytest.raises(SystemExit, match=r"python -m benchmarks --upgrade"):
        load(old)
    assert load(RESULTS)["format"] == FORMAT
