"""The system under test: a local stack of real processes, or a live one named by env vars.

Set TANDEM_GATEWAY_URL, TANDEM_TEMPO_URL and TANDEM_METRICS_URL (or the
matching --gateway-url, --tempo-url and --metrics-url options) to run the
shared checks against a live deployment, and deselect the tests that stop
processes with `-m "not local_stack"`. Without them, the tests start the
collector, the worker and the gateway themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tandem_localstack import Collector, Pair, Stack, free_collector_ports
from tandem_tracecheck.scenarios import Target

LIVE_OPTIONS = ("gateway_url", "tempo_url", "metrics_url")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tandem", "Run the integration tests against a live Tandem")
    for name in LIVE_OPTIONS:
        group.addoption(
            f"--{name.replace('_', '-')}", default=os.environ.get(f"TANDEM_{name.upper()}")
        )


@pytest.fixture(scope="session")
def live_target(request: pytest.FixtureRequest) -> Target | None:
    given = {name: request.config.getoption(name) for name in LIVE_OPTIONS}
    if not any(given.values()):
        return None
    missing = [f"--{n.replace('_', '-')}" for n, v in given.items() if not v]
    if missing:
        raise pytest.UsageError(f"a live target needs all three URLs; missing {', '.join(missing)}")
    return Target(
        given["gateway_url"].rstrip("/"),
        given["tempo_url"].rstrip("/"),
        given["metrics_url"],
        trace_timeout=60,
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"))
    yield stack
    stack.stop_all()


@pytest.fixture(scope="session")
def collector(stack: Stack) -> Collector:
    return stack.start_collector(free_collector_ports())


@pytest.fixture(scope="session")
def pair(stack: Stack, collector: Collector) -> Pair:
    """The local worker and gateway (tests that use it need the local stack)."""
    return stack.start_pair(collector)


@pytest.fixture(scope="session")
def target(live_target: Target | None, request: pytest.FixtureRequest) -> Target:
    """The gateway, Tempo API and metrics endpoint under test."""
    if live_target is not None:
        return live_target
    collector: Collector = request.getfixturevalue("collector")
    pair: Pair = request.getfixturevalue("pair")
    return Target(
        pair.gateway_url,
        collector.tempo_url,
        collector.metrics_url,
        trace_timeout=20,
        # Every scenario's quota spans must then have arrived on the internal port.
        gateway_internal_port=pair.ports.gateway_internal,
    )
