"""The real OpenTelemetry Collector: Tandem's distribution (`make collector`), running the
chart's configuration as Helm renders it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem_localstack import Collector, OtelcolPorts, Pair, Stack, free_collector_ports
from tests import prometheus as prometheus_harness
from tests.k8s import conftest as k8s
from tests.k8s.conftest import RELEASE, REPO, Rendered

# The chart, rendered for every value set tests/k8s uses: its fixtures, shared.
helm_env = k8s.helm_env
chart_package = k8s.chart_package
rendered = k8s.rendered
# /usr/bin/prometheus, or a failure saying how to install it (tests/prometheus.py).
prometheus_bin = prometheus_harness.prometheus_bin

BUILD_SCRIPT = REPO / "mk" / "collector.sh"
MANIFEST = REPO / "collector" / "otelcol-builder.yaml"
COLLECTOR_CONFIGMAP = f"{RELEASE}-collector"
CONFIG_KEY = "otelcol-config.yaml"


def distribution_path() -> Path:
    """Where `make collector` puts the binary of the manifest as it is now."""
    out = subprocess.run([BUILD_SCRIPT, "path"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="session")
def otelcol() -> Path:
    binary = distribution_path()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: `make collector` builds it (`make test` does first)")
    return binary


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return loaded


GATEWAY_TIER_CONFIGMAP = f"{RELEASE}-collector-gateway"
GATEWAY_TIER_CONFIG_KEY = "otelcol-gateway.yaml"


def collector_configs(rendered: dict[str, Rendered]) -> dict[str, str]:
    """Each value set's collector configuration, as its ConfigMap carries it (value sets
    whose collector is outside the release have none). With collector.topology=two-tier,
    the agents' (its one key is otelcol-agent.yaml); gateway_tier_configs has the other."""
    configs = {}
    for name, r in rendered.items():
        maps = [m for m in r.of_kind("ConfigMap") if m["metadata"]["name"] == COLLECTOR_CONFIGMAP]
        if maps:
            (configs[name],) = maps[0]["data"].values()
    return configs


def gateway_tier_configs(rendered: dict[str, Rendered]) -> dict[str, str]:
    """The gateway tier's configuration of each two-tier value set."""
    configs = {}
    for name, r in rendered.items():
        maps = [
            m for m in r.of_kind("ConfigMap") if m["metadata"]["name"] == GATEWAY_TIER_CONFIGMAP
        ]
        if maps:
            configs[name] = maps[0]["data"][GATEWAY_TIER_CONFIG_KEY]
    return configs


def collector_env(r: Rendered, component: str = "collector") -> dict[str, str]:
    """The environment the chart gives the collector's container (or the gateway tier's)."""
    container = r.container(component)
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.fixture(scope="session")
def chart_config(rendered: dict[str, Rendered], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default value set's collector configuration, written as the pod mounts it."""
    path = tmp_path_factory.mktemp("otelcol") / CONFIG_KEY
    path.write_text(collector_configs(rendered)["default"])
    return path


# --- One module's stack: the trace store, the real Collector between it and the services,
# and Prometheus scraping the Collector. A module overrides what it builds otherwise.


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def store(stack: Stack) -> Collector:
    """The local stand-in, here only as the trace store behind the Collector (Tempo's API)."""
    return stack.start_collector(free_collector_ports(), name="store")


@pytest.fixture(scope="module")
def otelcol_ports() -> OtelcolPorts:
    return OtelcolPorts.free()


@pytest.fixture(scope="module")
def collector(
    stack: Stack, store: Collector, otelcol: Path, chart_config: Path, otelcol_ports: OtelcolPorts
) -> Collector:
    return stack.start_otelcol(otelcol, chart_config, store, otelcol_ports)


@pytest.fixture(scope="module")
def pair(stack: Stack, collector: Collector) -> Pair:
    return stack.start_pair(collector)


@pytest.fixture(scope="module")
def prom(
    stack: Stack,
    prometheus_bin: Path,
    collector: Collector,
    otelcol_ports: OtelcolPorts,
    tmp_path_factory: pytest.TempPathFactory,
) -> prometheus_harness.Prometheus:
    """Real Prometheus with the chart's two Collector jobs, every target up."""
    server = prometheus_harness.start_prometheus(
        stack,
        tmp_path_factory.mktemp("prometheus"),
        prometheus_harness.collector_scrape_configs(otelcol_ports),
        binary=prometheus_bin,
    )
    server.wait_for_targets()
    return server
