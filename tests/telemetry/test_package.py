"""tandem_telemetry stands alone: a copy of its folder is all a service needs of Tandem's."""

from __future__ import annotations

import ast
from pathlib import Path

import tandem_telemetry

PACKAGE = Path(tandem_telemetry.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_package_imports_no_other_tandem_package() -> None:
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) > 5
    others = {
        f"{path.name}: {name}"
        for path in sources
        for name in imported_modules(path)
        if name.split(".")[0] != "tandem_telemetry"
        and name.split(".")[0].startswith(("tandem", "gateway", "worker"))
    }
    assert others == set()
