"""Tandem's Collector distribution: built from collector/otelcol-builder.yaml, exactly the
components the chart's configurations use, at the release of the chart's collector image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.conftest import CHART, Rendered
from tests.otelcol.conftest import (
    BUILD_SCRIPT,
    MANIFEST,
    collector_configs,
    gateway_tier_configs,
)

# The sections of a Collector configuration that name components, and of `components`.
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")


def used_components(config_text: str) -> set[tuple[str, str]]:
    """(kind, type) of every component a configuration defines: `otlp_grpc/tempo` is of
    type otlp_grpc."""
    config = yaml.safe_load(config_text)
    return {
        (kind, component_id.split("/", 1)[0])
        for kind in KINDS
        for component_id in config.get(kind) or {}
    }


def test_the_distribution_holds_exactly_what_the_chart_configs_use(
    otelcol: Path, rendered: dict[str, Rendered]
) -> None:
    configs = collector_configs(rendered)
    assert "default" in configs and len(configs) >= 5, f"collector configs: {sorted(configs)}"
    # collector.topology=two-tier: the agents' above, the gateway tier's here.
    tiers = gateway_tier_configs(rendered)
    assert "two-tier" in tiers, f"gateway-tier configs: {sorted(tiers)}"
    texts = [*configs.values(), *tiers.values()]
    used = set().union(*(used_components(text) for text in texts))
    listing = yaml.safe_load(
        subprocess.run([otelcol, "components"], capture_output=True, text=True, check=True).stdout
    )
    built = {(kind, c["name"]) for kind in KINDS for c in listing.get(kind) or []}
    assert built == used, f"built but unused: {built - used}; used but not built: {used - built}"
    # ${env:...} and --config=<file>: the two providers the chart's pods need.
    assert {p["scheme"] for p in listing["providers"]} == {"env", "file"}


def test_every_component_is_at_the_release_of_the_chart_image(
    otelcol: Path, manifest: dict[str, Any]
) -> None:
    release = manifest["dist"]["version"]
    modules = [entry["gomod"] for kind in KINDS for entry in manifest.get(kind) or []]
    assert modules and {module.split()[1] for module in modules} == {f"v{release}"}
    # The confmap providers are stable modules (v1.x), versioned with that release.
    provider_versions = {entry["gomod"].split()[1] for entry in manifest["providers"]}
    assert len(provider_versions) == 1 and provider_versions.pop().startswith("v1.")
    image = yaml.safe_load((CHART / "values.yaml").read_text())["collector"]["image"]
    assert (image["repository"], image["tag"]) == ("otel/opentelemetry-collector-contrib", release)
    version = subprocess.run([otelcol, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1] == release


def test_a_second_build_does_nothing(otelcol: Path) -> None:
    before = otelcol.stat().st_mtime_ns
    out = subprocess.run([BUILD_SCRIPT, "build"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("make collector: up to date:"), out.stdout
    assert otelcol.stat().st_mtime_ns == before


def test_without_go_the_build_says_so_in_one_line(tmp_path: Path) -> None:
    """A manifest never built, without go on PATH or where go.dev installs it: one line
    naming what is missing."""
    (tmp_path / "mk").mkdir()
    (tmp_path / "collector").mkdir()
    shutil.copy(BUILD_SCRIPT, tmp_path / "mk")
    (tmp_path / "collector" / MANIFEST.name).write_text(MANIFEST.read_text() + "# unbuilt\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # What the script runs, but go.
    for tool in ("bash", "sha256sum", "cut", "sed", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    out = subprocess.run(
        [bin_dir / "bash", tmp_path / "mk" / "collector.sh", "build"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": str(bin_dir), "GO_INSTALL_DIR": str(tmp_path / "no-go")},
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "make collector: needs Go 1.25 or later on PATH (go is missing): "
        "install it from https://go.dev/dl, the module proxy gives the rest"
    ]
    assert not (tmp_path / ".tools").exists()
