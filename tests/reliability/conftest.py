"""Fault-injection suite: shared fixtures, and the report written at the end of a full run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandem_localstack import Collector, Stack, free_collector_ports
from tests.reliability import report

# One row each in the report (see report.py); it is written only when all of them ran.
SCENARIOS = (
    "collector down from the start",
    "collector down under load, then back",
    "collector slow (2 s per export)",
    "worker down",
    "worker slow",
    "worker returns 500",
    "SIGTERM to the gateway during load",
    "SIGTERM to the worker during load",
    "malformed input: fixed corpus",
    "malformed input: hypothesis",
    "untrusted edge",
    "nothing sensitive recorded",
    "OTLP over TLS",
)


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    """Processes for one test; each fault scenario gets fresh ones."""
    stack = Stack(tmp_path)
    yield stack
    stack.stop_all()


@pytest.fixture
def collector(stack: Stack) -> Collector:
    return stack.start_collector(free_collector_ports())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    unknown = set(report._rows) - set(SCENARIOS)
    if unknown:
        raise RuntimeError(f"report rows for unknown scenarios {unknown}: add them to SCENARIOS")
    if exitstatus == 0:
        report.write(len(SCENARIOS))
