"""The results file and what reads it: one direction of flow, and the report again byte for
byte from the saved run. Nothing here measures."""

from __future__ import annotations

import ast
import json
import re
import struct
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import upgrade, with_reports
from benchmarks.harness import delivery_bounds, summarize
from benchmarks.render import render
from benchmarks.results import FORMAT, RESULTS, heading, load, table, text

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


def test_upgrade_makes_the_reports_of_a_format_2_file_and_refuses_format_1() -> None:
    """The saved reports are what the sections make of the saved figures (none edited by hand
    or left from older code), and --upgrade makes them for a file that has none."""
    saved = load(RESULTS)
    older = {
        "format": 2,
        "run": saved["run"],
        "sections": {
            name: {key: value for key, value in section.items() if key != "report"}
            for name, section in saved["sections"].items()
        },
    }
    assert upgrade(older) == saved
    with pytest.raises(SystemExit, match="format 1: render it with the revision"):
        upgrade({"size": {}, "trivial": []})


class Example:
    """A new section, as a contributor would add it: a module with SECTION, measure and report.
    Nothing else in the package changes for it to reach the document."""

    SECTION = "example"

    @staticmethod
    def report(figures: dict, results: dict) -> dict:
        rows = [[name, f"{value:.1f}"] for name, value in figures["values"].items()]
        chart = {
            "file": "example.png",
            "title": "Example",
            "size": [4, 3],
            "grid": [1, 1],
            "panels": [
                {
                    "title": "values",
                    "series": [{"kind": "bars", "x": [0, 1], "y": [1.0, 2.0], "annotate": "auto"}],
                }
            ],
        }
        return {
            "order": 8,
            "body": [heading("8. Example"), text("Two values."), table(["Name", "µs"], rows)],
            "charts": [chart],
        }


def test_a_new_section_reaches_the_document_and_its_chart_with_no_change_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "benchmarks.example", Example)
    results = load(RESULTS)
    results["sections"] = {"example": {"values": {"a": 1.25, "b": 2.0}}, **results["sections"]}
    render(with_reports(results), tmp_path)
    document = (tmp_path / "benchmarks.md").read_text()
    # After section 7, whatever the order of the file, and before the end every section shares.
    assert document.index("## 7. Overload") < document.index("## 8. Example")
    assert document.index("## 8. Example") < document.index("## How it was measured")
    assert "| Name | µs |\n|---|---|\n| a | 1.2 |\n| b | 2.0 |\n" in document
    assert "Charts: [benchmarks.png](benchmarks.png), [benchmarks-overload.png]" in document
    assert "[example.png](example.png)." in document
    assert _png_size(tmp_path / "example.png") == (440, 330)


def test_the_readme_quotes_the_published_run() -> None:
    """README's table of the latest run is copied by hand: its figures, in order, must be the
    saved run's, so that a new run cannot leave it stale."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("The latest run, 2 cores") :]
    rows = [line for line in section.split("\n\n")[1].splitlines() if line.startswith("| ")]
    quoted = [
        figure
        for row in rows[1:]
        for cell in row.split("|")[2:4]
        for figure in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", cell)
    ]
    harness = load(RESULTS)["sections"]["harness"]
    s = summarize(harness)
    full, trivial, hop = s["full"], s["trivial"], s["hop"]["worker"]

    def median(values: dict[str, float], fmt: str = "{:.2f}") -> str:
        return fmt.format(values["median"])

    low, high = delivery_bounds(harness["delivery"], harness["spans_per_request"])
    expected = [
        *(median(full[v]["rps"], "{:.0f}") for v in ("traced", "traced_public")),
        *(median(full[v]["ratio_to_contrib"]) for v in ("traced", "traced_public")),
        *(median(full[v]["ratio_to_disabled"]) for v in ("traced", "traced_public")),
        *(median(trivial[v]["ratio"]) for v in ("tandem", "tandem_public", "starlette")),
        median(trivial["contrib"]["ratio"]),
        *(median(hop[v]["ratio"]) for v in ("tandem", "tandem_untraced", "tandem_public")),
        f"{harness['delivery']['spans_received']:,.0f}",
        f"{low:,}",
        f"{high:,}",
    ]
    assert quoted == expected
