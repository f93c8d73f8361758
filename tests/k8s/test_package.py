"""The packaged chart stands alone: every file it needs is in the .tgz; it installs from anywhere.

Users get the chart as `helm package` makes it (or vendor the folder, which
test_configs.py holds free of symlinks). The package is what .helmignore
lets through; a pattern that drops a file a template reads would not show in
the chart folder, only here.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import CHART, NAMESPACE, RELEASE, helm_template, package_chart, run, tool

# `.Files.Get "files/x.yaml"` and the like: the files a template reads at render time.
FILES_READ = re.compile(r"\.Files\.(?:Get|Glob|Lines|AsConfig|AsSecrets)\s+\"([^\"]+)\"")


def packaged_files(package: Path) -> dict[str, bytes]:
    """Path inside the chart -> content, for each file in the .tgz."""
    files = {}
    with tarfile.open(package) as archive:
        for member in archive.getmembers():
            if member.isfile():
                chart_dir, _, path = member.name.partition("/")
                assert chart_dir == "tandem", f"{member.name}: not under the chart's folder"
                extracted = archive.extractfile(member)
                assert extracted is not None
                files[path] = extracted.read()
    return files


# The configurations the chart ships byte for byte (two-tier's agent and gateway tier too).
CONFIGS = (
    "files/otelcol-agent.yaml",
    "files/otelcol-config.yaml",
    "files/otelcol-gateway.yaml",
    "files/tempo.yaml",
)


def tracked_chart_files(chart: Path) -> set[str]:
    """The chart's files as git has them: what a clone, and so a package built in CI, holds."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "."], cwd=chart, capture_output=True, text=True, check=True
    )
    return {path for path in listing.stdout.split("\0") if path}


def missing_from(package: Path, chart: Path) -> list[str]:
    """Files the chart needs that the package lacks: each tracked file, and each file read by a
    template (so a template that reads a file nobody ships fails too)."""
    files = packaged_files(package)
    templates = [text.decode() for path, text in files.items() if path.startswith("templates/")]
    read = {name for text in templates for name in FILES_READ.findall(text)}
    tracked = tracked_chart_files(chart)
    # A glob (`.Files.Glob "files/rules/*.yaml"`) needs whatever tracked files it matches.
    globbed = {
        path for pattern in read if "*" in pattern for path in fnmatch.filter(tracked, pattern)
    }
    needed = tracked | {name for name in read if "*" not in name} | globbed
    return sorted(needed - set(files))


@pytest.mark.parametrize("helm_name", ["helm", "helm3"])
def test_the_package_holds_every_file_the_chart_needs(
    helm_name: str, helm_env: dict[str, str], tmp_path: Path
) -> None:
    package = package_chart(tool(helm_name), helm_env, tmp_path)
    assert missing_from(package, CHART) == []
    files = packaged_files(package)
    for config in CONFIGS:
        assert files[config] == (CHART / config).read_bytes(), f"{config} differs in the package"


def test_a_package_without_its_configs_is_caught(helm_env: dict[str, str], tmp_path: Path) -> None:
    """The check above can fail: a .helmignore that drops files/ leaves the configs out; this
    test sees it, and the templates refuse to render rather than ship an empty ConfigMap."""
    chart = tmp_path / "tandem"
    shutil.copytree(CHART, chart)
    with (chart / ".helmignore").open("a") as helmignore:
        helmignore.write("files/\n")
    package = package_chart(tool("helm"), helm_env, tmp_path / "package", chart)
    # The configs, and whatever else files/ holds (rule files, dashboards).
    missing = missing_from(package, CHART)
    assert set(CONFIGS) <= set(missing), missing
    assert all(path.startswith("files/") for path in missing), missing
    proc = helm_template(tool("helm"), helm_env, package, check=False)
    assert proc.returncode != 0
    assert re.search(r"files/(otelcol-config|tempo)\.yaml is missing from the chart", proc.stderr)


def manifest_of(install_output: str) -> list[dict]:
    """The objects a `helm install --dry-run` prints under MANIFEST:, before the NOTES."""
    _, found, rest = install_output.partition("\nMANIFEST:\n")
    assert found, f"no MANIFEST in:\n{install_output[:2000]}"
    manifest = rest.split("\nNOTES:\n", 1)[0]
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def assert_configs_shipped(docs: list[dict]) -> None:
    """The ConfigMaps carry the configs the chart folder holds, byte for byte."""
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    assert configmaps[f"{RELEASE}-collector"] == {
        "otelcol-config.yaml": (CHART / "files" / "otelcol-config.yaml").read_text()
    }
    assert configmaps[f"{RELEASE}-tempo"] == {
        "tempo.yaml": (CHART / "files" / "tempo.yaml").read_text()
    }


@pytest.fixture
def elsewhere(chart_package: Path, tmp_path: Path) -> Path:
    """The package, copied alone into an empty folder outside the repository."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return Path(shutil.copy2(chart_package, folder))


@pytest.mark.parametrize("helm_name", ["helm", "helm3"])
def test_the_package_lints_and_renders_from_another_folder(
    helm_name: str, helm_env: dict[str, str], elsewhere: Path
) -> None:
    helm = tool(helm_name)
    lint = run([helm, "lint", "--strict", elsewhere.name], env=helm_env, cwd=elsewhere.parent)
    assert "0 chart(s) failed" in lint.stdout
    rendered = helm_template(helm, helm_env, elsewhere)
    assert_configs_shipped([doc for doc in yaml.safe_load_all(rendered.stdout) if doc])


def test_the_package_installs_from_another_folder(
    helm_env: dict[str, str], elsewhere: Path
) -> None:
    """A client-side dry run of `helm install` (no cluster here; Helm 3 asks a cluster for its
    version even then, so this is Helm 4's): the release's manifest holds the configs."""
    helm, package = tool("helm"), elsewhere.name
    install = run(
        [helm, "install", RELEASE, package, "--dry-run=client", "--namespace", NAMESPACE],
        env=helm_env,
        cwd=elsewhere.parent,
    )
    assert "STATUS: pending-install" in install.stdout
    assert_configs_shipped(manifest_of(install.stdout))
