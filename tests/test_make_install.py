"""The README's promise: `make install` on a machine with only python3 and make.

Each test runs make in a copy of the working tree (never in this checkout, whose .venv
and .tools other work uses), with a PATH that has no uv: what make installs is checked
from scratch. Debian's and Ubuntu's python3 have no pip, and without python3-venv no
ensurepip either; both are made here from the interpreter running the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support import make_own_lines

REPO = Path(__file__).resolve().parents[1]


def repo_copy(tmp: Path) -> Path:
    """The working tree's files (tracked, or new and not ignored), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    copy = tmp / "repo"
    for name in filter(None, listed.split(b"\0")):
        source = REPO / os.fsdecode(name)
        if source.is_file():  # else deleted in the working tree
            target = copy / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return copy


def path_without(tmp: Path, *commands: str) -> str:
    """A PATH of one folder: links to what this PATH finds, except `commands`."""
    folder = tmp / "path"
    folder.mkdir()
    for entry in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for found in os.scandir(entry):
            link = folder / found.name
            if found.name in commands or os.path.lexists(link):
                continue
            if found.is_file() and os.access(found.path, os.X_OK):
                link.symlink_to(found.path)
    return str(folder)


def make(repo: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MAKE", "MFLAGS", "PYTHON", "VIRTUAL_ENV"))
        and name not in {"UV", "UV_PROJECT_ENVIRONMENT"}
    }
    env.update(PATH=path, PYTHONNOUSERSITE="1")
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        check=False,
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def runs(*command: str | Path) -> bool:
    env = {"PYTHONNOUSERSITE": "1"}
    return subprocess.run(command, check=False, capture_output=True, env=env).returncode == 0


def base_python() -> Path:
    """The interpreter this one's venv was made from."""
    return Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def python_without_pip_or_ensurepip(tmp: Path) -> Path:
    """The base interpreter, copied beside a standard library with no ensurepip, and no pip.

    Python finds its standard library from where its executable is, so the copy runs
    on the links: like Debian's python3 without python3-venv, `-m pip` and
    `-m venv` (which runs ensurepip) fail, everything else works.
    """
    stdlib = Path(sysconfig.get_path("stdlib"))
    prefix = tmp / "bare-python"
    lib = prefix / "lib" / stdlib.name
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in {"ensurepip", "site-packages"}:
            (lib / entry.name).symlink_to(entry)
    (lib / "site-packages").mkdir()
    (prefix / "bin").mkdir()
    python = prefix / "bin" / "python3"
    shutil.copy2(base_python().resolve(), python)
    return python


def test_make_install_with_a_python3_without_pip_gets_uv_through_a_venv(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "nopip"], check=True)
    python = tmp_path / "nopip" / "bin" / "python"
    assert not runs(python, "-m", "pip", "--version"), "the venv has pip"

    result = make(repo, path_without(tmp_path, "uv"), "install", f"PYTHON={python}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "with pip from a venv" in result.stdout
    assert (repo / ".tools" / "uv" / "bin" / "uv").is_file()
    assert not (repo / ".tools" / "uv-venv").exists(), "the venv that carried pip is left"
    venv_python = repo / ".venv" / "bin" / "python"
    imported = subprocess.run(
        [venv_python, "-c", "import tandem_telemetry; print(tandem_telemetry.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(imported.strip()).is_relative_to(repo / "services")


def test_make_install_with_neither_pip_nor_ensurepip_names_python3_venv(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    python = python_without_pip_or_ensurepip(tmp_path)
    assert runs(python, "-c", "import venv, json, ssl")
    assert not runs(python, "-m", "pip", "--version"), "the copy has pip"
    assert not runs(python, "-c", "import ensurepip"), "the copy has ensurepip"

    result = make(repo, path_without(tmp_path, "uv"), "install", f"PYTHON={python}")

    assert result.returncode != 0
    lines = make_own_lines(result)
    assert len(lines) == 1, lines
    assert "apt-get install python3-venv" in lines[0]
    assert not (repo / ".tools" / "uv-venv").exists()
    assert not (repo / ".tools" / "uv" / "bin" / "uv").exists()


def test_make_install_with_python_3_10_says_so_in_one_line(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    # An interpreter that reports 3.10: the real one, with a sitecustomize that says so.
    old = tmp_path / "old-python"
    old.mkdir()
    (old / "sitecustomize.py").write_text("import sys\nsys.version_info = (3, 10, 13, 'final', 0)")
    python = old / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={old} exec {base_python()} "$@"\n')
    python.chmod(0o755)

    result = make(repo, path_without(tmp_path, "uv"), "install", f"PYTHON={python}")

    assert result.returncode != 0
    lines = make_own_lines(result)
    assert len(lines) == 1, lines
    assert "is Python 3.10.13" in lines[0] and "3.11 or later" in lines[0]
    assert not (repo / ".tools" / "uv").exists()


def test_make_k8s_tools_without_npm_says_how_to_get_it(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)

    result = make(repo, path_without(tmp_path, "npm", "uv"), "k8s-tools")

    assert result.returncode != 0
    lines = make_own_lines(result)
    assert len(lines) == 1, lines
    assert "npm" in lines[0] and "apt-get install npm" in lines[0]
