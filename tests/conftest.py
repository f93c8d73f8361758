"""Fixtures shared by every test package; the helpers themselves are in tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tandem_telemetry
from tests.support import Pipeline, make_pipeline


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    yield make_pipeline()
    tandem_telemetry.shutdown()
