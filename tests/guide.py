"""docs/add-a-service.md, applied as written to a copy of the repository.

The guide's new files are the code blocks headed by their path alone
("`services/ledger/app.py`:"), its edits the ```diff blocks. The tests that
prove the guide true (tests/test_add_a_service.py, tests/containers and
tests/k8s) read them from here, so the page and what is tested cannot differ.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "add-a-service.md"
# The service the guide adds: its folder, package, chart key and image name part.
SERVICE = "ledger"

NEW_FILE = re.compile(r"^`(?P<path>[^`\s]+)`:\n```[a-z]*\n(?P<body>.*?)^```$", re.M | re.S)
PATCH = re.compile(r"^```diff\n(?P<body>.*?)^```$", re.M | re.S)
VALUES = "charts/tandem/values.yaml"


@dataclass(frozen=True)
class Guide:
    new_files: dict[str, str]  # path in the repository -> content
    patches: dict[str, str]  # path in the repository -> unified diff

    @classmethod
    def read(cls, text: str | None = None) -> Guide:
        text = GUIDE.read_text() if text is None else text
        new_files = {m["path"]: m["body"] for m in NEW_FILE.finditer(text)}
        patches = {}
        for match in PATCH.finditer(text):
            target = re.search(r"^\+\+\+ b/(\S+)$", match["body"], re.M)
            assert target, f"docs/add-a-service.md: a diff without '+++ b/<path>':\n{match['body']}"
            patches[target.group(1)] = match["body"]
        return cls(new_files, patches)

    def values(self) -> dict[str, Any]:
        """The chart values the guide adds: the lines its values.yaml patch adds, as YAML."""
        added = [
            line[1:]
            for line in self.patches[VALUES].splitlines()
            if line.startswith("+") and not line.startswith("+++")
        ]
        values = yaml.safe_load("\n".join(added))
        assert isinstance(values, dict) and SERVICE in values.get("extraServices", {}), added
        return values

    def helm_args(self) -> list[str]:
        """helm arguments that set the guide's values on the chart as it is."""
        return [
            arg
            for key, value in self.values().items()
            for arg in ("--set-json", f"{key}={json.dumps(value, separators=(',', ':'))}")
        ]


def copy_repository(destination: Path) -> Path:
    """The repository's tracked files, as they are in the work tree, copied to `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is left out
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def apply(destination: Path) -> Guide:
    """Copy the repository to `destination` and apply the guide there: its new files, then
    its patches (each must apply exactly as written, at any offset)."""
    guide = Guide.read()
    assert guide.new_files and guide.patches, "docs/add-a-service.md: no files or patches found"
    copy_repository(destination)
    for name, body in guide.new_files.items():
        path = destination / name
        assert not path.exists(), f"docs/add-a-service.md writes {name}, which exists"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    for name, patch in guide.patches.items():
        # git apply outside any repository (none is looked for above the copy): a patch(1)
        # that refuses fuzz, with paths relative to the copy.
        proc = subprocess.run(
            ["git", "apply", "--verbose", "-"],
            input=patch,
            cwd=destination,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": str(destination.parent)},
        )
        assert proc.returncode == 0, (
            f"docs/add-a-service.md's patch to {name} no longer applies to the repository:\n"
            f"{proc.stderr}"
        )
    return guide


def source_path(copy: Path) -> str:
    """PYTHONPATH that puts the copy's packages before the venv's (editable) installs."""
    return os.pathsep.join(str(src) for src in sorted((copy / "services").glob("*/src")))


def tree_module(copy: Path) -> ModuleType:
    """The copy's tandem_tracecheck.tree, with the guide's extended work_trace, loaded beside
    this repository's."""
    path = copy / "services" / "tandem_tracecheck" / "src" / "tandem_tracecheck" / "tree.py"
    spec = importlib.util.spec_from_file_location(f"guide_tree_{abs(hash(copy))}", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up while being defined.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
